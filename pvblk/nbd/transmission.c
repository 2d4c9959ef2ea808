/* SPDX-License-Identifier: Apache-2.0 */
/*
 * transmission.c - the transmission phase of one connection: an event loop
 * on the connection's thread that waits on the socket, its engine queue's
 * eventfd and the server's stop eventfd; requests are checked once
 * (request.c), queued on the engine without waiting, and answered from the
 * engine's callbacks (simple replies, or structured ones with hole chunks
 * for zero runs of a READ once negotiated; after NBD_OPT_EXTENDED_HEADERS
 * every reply is a chunk with the 32-byte extended header).
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nbd_i.h"

#define READ_SEGS 16       /* data/hole chunks of one structured READ */
#define HOLE_MIN (64u << 10) /* smallest READ answered with hole chunks */

struct seg {
	uint64_t off;
	uint32_t len;
	bool hole;
};

/* One request in flight. */
struct req {
	struct nbd_conn *c;
	struct nbd_request r;
	uint8_t *buf;             /* READ/WRITE data */
	int pending;              /* engine requests not yet completed */
	int err;                  /* first engine error, -errno */
	unsigned nseg;
	struct seg seg[READ_SEGS];
};

uint32_t nbd_errno(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
	case EACCES:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EFBIG:
	case EDQUOT:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

/* Counts one reply to a request of type with length bytes for the status
   counters (relaxed atomics: the control thread reads them meanwhile). */
static void count_reply(struct nbd_conn *c, uint16_t type, uint64_t length,
			bool failed)
{
	__atomic_fetch_add(&c->st.requests, 1, __ATOMIC_RELAXED);
	if (failed)
		__atomic_fetch_add(&c->st.errors, 1, __ATOMIC_RELAXED);
	else if (type == NBD_CMD_READ)
		__atomic_fetch_add(&c->st.read_bytes, length, __ATOMIC_RELAXED);
	else if (type == NBD_CMD_WRITE)
		__atomic_fetch_add(&c->st.written_bytes, length,
				   __ATOMIC_RELAXED);
}

/* Sends iov, or marks the connection dead when that fails. */
static void send_or_die(struct nbd_conn *c, const struct iovec *iov, int n)
{
	if (!c->dead && nbd_write_full(c, iov, n) < 0)
		c->dead = true;
}

/* A compact simple reply (no extended headers): the 16-byte header, and
   data after it when there is no error. */
static void simple_reply(struct nbd_conn *c, uint64_t cookie, uint32_t err,
			 const void *data, size_t len)
{
	struct __attribute__((packed)) {
		uint32_t magic, err;
		uint64_t cookie;
	} h = { htobe32(NBD_SIMPLE_REPLY_MAGIC), htobe32(err), cookie };
	struct iovec v[2] = { { &h, sizeof(h) }, { (void *)data, len } };

	_Static_assert(sizeof(h) == NBD_SIMPLE_REPLY_SIZE, "simple reply");
	send_or_die(c, v, err ? 1 : 2);
}

/*
 * Writes at h the header of one reply chunk to r with a payload of len
 * bytes: the 20-byte structured header, or once extended headers are on
 * the 32-byte extended one (which also echoes the request's offset).
 * Returns the header's size.
 */
static size_t chunk_hdr(const struct nbd_conn *c, uint8_t *h, uint16_t flags,
			uint16_t type, const struct nbd_request *r,
			uint64_t len)
{
	uint16_t f = htobe16(flags), t = htobe16(type);
	uint32_t magic = htobe32(c->extended ? NBD_EXTENDED_REPLY_MAGIC :
					       NBD_STRUCTURED_REPLY_MAGIC);

	memcpy(h, &magic, 4);
	memcpy(h + 4, &f, 2);
	memcpy(h + 6, &t, 2);
	memcpy(h + 8, &r->cookie, 8); /* as the client sent it */
	if (c->extended) {
		uint64_t off = htobe64(r->offset), l = htobe64(len);

		memcpy(h + 16, &off, 8);
		memcpy(h + 24, &l, 8);
		return NBD_EXTENDED_REPLY_SIZE;
	}
	{
		uint32_t l = htobe32((uint32_t)len);

		memcpy(h + 16, &l, 4);
		return NBD_STRUCTURED_REPLY_SIZE;
	}
}

/* Room for the largest chunk header. */
#define HDR_MAX NBD_EXTENDED_REPLY_SIZE

/* Writes at out a final NBD_REPLY_TYPE_ERROR chunk (no message) for r;
   returns its size (at most HDR_MAX + 6). */
static size_t error_chunk_at(const struct nbd_conn *c, uint8_t *out,
			     const struct nbd_request *r, uint32_t err)
{
	size_t hl = chunk_hdr(c, out, NBD_REPLY_FLAG_DONE,
			      NBD_REPLY_TYPE_ERROR, r, 6);
	uint32_t e = htobe32(err);

	memcpy(out + hl, &e, 4);
	memset(out + hl + 4, 0, 2); /* message length */
	return hl + 6;
}

/* NBD_REPLY_TYPE_ERROR with the DONE flag: the whole reply. */
static void error_chunk(struct nbd_conn *c, const struct nbd_request *r,
			uint32_t err)
{
	uint8_t b[HDR_MAX + 6];
	struct iovec v = { b, error_chunk_at(c, b, r, err) };

	send_or_die(c, &v, 1);
}

/* An error for r: a structured error chunk where the client expects
   chunks (READ, BLOCK_STATUS, or anything once extended headers are on:
   they have no simple reply), a simple reply otherwise. */
static void reply_error(struct nbd_conn *c, const struct nbd_request *r,
			uint32_t err)
{
	if (c->extended ||
	    (c->structured && (r->type == NBD_CMD_READ ||
			       r->type == NBD_CMD_BLOCK_STATUS)))
		error_chunk(c, r, err);
	else
		simple_reply(c, r->cookie, err, NULL, 0);
}

/* Success with no data (everything but READ and BLOCK_STATUS): a simple
   reply, or a final NBD_REPLY_TYPE_NONE chunk with extended headers. */
static void reply_ok(struct nbd_conn *c, const struct nbd_request *r)
{
	uint8_t h[HDR_MAX];
	struct iovec v = { h, 0 };

	if (!c->extended) {
		simple_reply(c, r->cookie, 0, NULL, 0);
		return;
	}
	v.iov_len = chunk_hdr(c, h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
			      r, 0);
	send_or_die(c, &v, 1);
}

/* The size class of a buffer of len bytes (1 to NBD_MAX_BLOCK). */
static unsigned buf_class(uint32_t len)
{
	unsigned k = 0;

	while ((4096u << k) < len)
		k++;
	return k;
}

static void *buf_get(struct nbd_conn *c, uint32_t len)
{
	unsigned k = buf_class(len);
	void *p;

	if (c->npool[k]) {
		c->pool_bytes -= (uint64_t)4096 << k;
		return c->pool[k][--c->npool[k]];
	}
	if (posix_memalign(&p, 4096, (size_t)4096 << k))
		return NULL;
	return p;
}

static void buf_put(struct nbd_conn *c, void *p, uint32_t len)
{
	unsigned k = buf_class(len);

	if (c->npool[k] < NBD_POOL_PER_CLASS &&
	    c->pool_bytes + ((uint64_t)4096 << k) <= NBD_MAX_INFLIGHT_BYTES) {
		c->pool[k][c->npool[k]++] = p;
		c->pool_bytes += (uint64_t)4096 << k;
	} else {
		free(p);
	}
}

void nbd_pool_free(struct nbd_conn *c)
{
	for (unsigned k = 0; k < 14; k++)
		while (c->npool[k])
			free(c->pool[k][--c->npool[k]]);
	c->pool_bytes = 0;
}

static void req_free(struct req *q)
{
	if (q->buf)
		buf_put(q->c, q->buf, (uint32_t)q->r.length);
	free(q);
}

/* The chunked reply of a READ: one chunk per segment, the last DONE. */
static void read_reply_structured(struct req *q)
{
	uint8_t h[READ_SEGS][HDR_MAX];
	struct __attribute__((packed)) {
		uint64_t off;
		uint32_t len;
	} meta[READ_SEGS];
	struct iovec v[3 * READ_SEGS];
	int n = 0;

	if (q->nseg == 0) { /* a zero-length READ: one empty final chunk */
		v[0] = (struct iovec){
			h[0], chunk_hdr(q->c, h[0], NBD_REPLY_FLAG_DONE,
					NBD_REPLY_TYPE_NONE, &q->r, 0) };
		send_or_die(q->c, v, 1);
		return;
	}

	for (unsigned i = 0; i < q->nseg; i++) {
		const struct seg *s = &q->seg[i];
		uint16_t fl = i + 1 == q->nseg ? NBD_REPLY_FLAG_DONE : 0;

		meta[i].off = htobe64(s->off);
		meta[i].len = htobe32(s->len);
		if (s->hole) {
			v[n++] = (struct iovec){
				h[i], chunk_hdr(q->c, h[i], fl,
						NBD_REPLY_TYPE_OFFSET_HOLE,
						&q->r, 12) };
			v[n++] = (struct iovec){ &meta[i], 12 };
		} else {
			v[n++] = (struct iovec){
				h[i], chunk_hdr(q->c, h[i], fl,
						NBD_REPLY_TYPE_OFFSET_DATA,
						&q->r, 8 + (uint64_t)s->len) };
			v[n++] = (struct iovec){ &meta[i], 8 };
			v[n++] = (struct iovec){
				q->buf + (s->off - q->r.offset), s->len };
		}
	}
	send_or_die(q->c, v, n);
}

/* A request's engine work is over: reply and free it. */
static void req_done(struct req *q)
{
	struct nbd_conn *c = q->c;
	uint32_t err = nbd_errno(q->err);

	/* a refused FAST_ZERO is an answer the client asked for */
	bool refused = q->err == -ENOTSUP &&
		       (q->r.flags & NBD_CMD_FLAG_FAST_ZERO);

	if (err && !refused) {
		const char *msg = bdev_errmsg();

		pvblk_log("nbd: %s: command %u at %" PRIu64 " (+%" PRIu64
			  "): %s", c->peer, q->r.type, q->r.offset,
			  q->r.length, *msg ? msg : strerror(-q->err));
	}
	count_reply(c, q->r.type, q->r.length, err != 0);
	if (err)
		reply_error(c, &q->r, err);
	else if (q->r.type == NBD_CMD_READ && c->structured)
		read_reply_structured(q);
	else if (q->r.type == NBD_CMD_READ)
		simple_reply(c, q->r.cookie, 0, q->buf, q->r.length);
	else
		reply_ok(c, &q->r);
	c->inflight--;
	if (q->buf)
		c->inflight_bytes -= q->r.length;
	req_free(q);
}

static void req_cb(void *opaque, int ret);

/* Queues a flush for q, or ends q when that fails. */
static void req_flush(struct req *q)
{
	int ret;

	q->pending = 1;
	ret = bdev_aio_flush(q->c->q, q->c->srv->export->bdev, req_cb, q);
	if (ret < 0) {
		q->err = ret;
		req_done(q);
	}
}

static void req_cb(void *opaque, int ret)
{
	struct req *q = opaque;

	if (ret < 0 && !q->err)
		q->err = ret;
	if (--q->pending > 0)
		return;
	req_done(q);
}

/* Account an engine call's synchronous failure as its completion. */
static void queued(struct req *q, int ret)
{
	if (ret < 0)
		req_cb(q, ret);
}

/*
 * The segments of a structured READ: runs that read as zeros through the
 * whole chain become hole chunks, the rest data chunks; more than
 * READ_SEGS runs end in one data segment.
 */
static int read_segments(struct req *q, struct bdev *b)
{
	uint64_t off = q->r.offset, end = q->r.offset + q->r.length;

	q->nseg = 0;
	while (off < end) {
		struct bdev_host_run run;
		int kind = BDEV_HOST_OTHER;
		uint64_t n = end - off;
		struct seg *last = q->nseg ? &q->seg[q->nseg - 1] : NULL;
		bool hole;

		if (q->nseg < READ_SEGS - 1) {
			kind = bdev_map_host(b, off, end - off, &run);
			if (kind < 0)
				return kind;
			n = run.length;
		}
		hole = kind == BDEV_HOST_ZERO;
		if (last && last->hole == hole) {
			last->len += (uint32_t)n;
		} else {
			q->seg[q->nseg++] = (struct seg){ off, (uint32_t)n,
							  hole };
		}
		off += n;
	}
	return 0;
}

static void cmd_read(struct req *q, struct bdev *b)
{
	struct nbd_conn *c = q->c;
	int ret;

	/* small reads skip the lookup: it costs more than it saves */
	if (c->structured && !(q->r.flags & NBD_CMD_FLAG_DF) &&
	    q->r.length >= HOLE_MIN) {
		ret = read_segments(q, b);
		if (ret < 0) {
			q->err = ret;
			req_done(q);
			return;
		}
	} else {
		q->nseg = 1;
		q->seg[0] = (struct seg){ q->r.offset, q->r.length, false };
	}
	q->pending = 1; /* held until every segment is queued */
	for (unsigned i = 0; i < q->nseg && !q->err; i++) {
		struct seg *s = &q->seg[i];
		struct iovec v;

		if (s->hole)
			continue;
		v.iov_base = q->buf + (s->off - q->r.offset);
		v.iov_len = s->len;
		q->pending++;
		queued(q, bdev_aio_readv(c->q, b, s->off, &v, 1, req_cb, q));
	}
	req_cb(q, 0);
}

/* The engine's request flags for the NBD command flags of r. */
static unsigned engine_flags(const struct nbd_request *r)
{
	return (r->flags & NBD_CMD_FLAG_FUA ? BDEV_REQ_FUA : 0) |
	       (r->flags & NBD_CMD_FLAG_NO_HOLE ? BDEV_REQ_NO_HOLE : 0) |
	       (r->flags & NBD_CMD_FLAG_FAST_ZERO ? BDEV_REQ_FAST_ZERO : 0);
}

/* Runs a checked request with its payload (if any) in q->buf. */
static void dispatch(struct req *q)
{
	struct nbd_conn *c = q->c;
	struct bdev *b = c->srv->export->bdev;
	struct iovec v = { q->buf, q->r.length };
	unsigned fl = engine_flags(&q->r);

	if (q->r.length == 0 && q->r.type != NBD_CMD_FLUSH) {
		req_done(q); /* nothing to do */
		return;
	}
	switch (q->r.type) {
	case NBD_CMD_READ:
		cmd_read(q, b);
		return;
	case NBD_CMD_WRITE:
		q->pending = 1;
		queued(q, bdev_aio_writev_flags(c->q, b, q->r.offset, &v, 1,
						fl, req_cb, q));
		return;
	case NBD_CMD_FLUSH:
		req_flush(q);
		return;
	case NBD_CMD_TRIM:
		q->pending = 1;
		queued(q, bdev_aio_discard_flags(c->q, b, q->r.offset,
						 q->r.length, fl, req_cb, q));
		return;
	case NBD_CMD_WRITE_ZEROES:
		/* the engine keeps NO_HOLE ranges allocated and fails
		   FAST_ZERO with -ENOTSUP where it would write zero bytes */
		q->pending = 1;
		queued(q, bdev_aio_write_zeroes_flags(c->q, b, q->r.offset,
						      q->r.length, fl, req_cb,
						      q));
		return;
	case NBD_CMD_CACHE:
		/* advisory: the engine has no prefetch to ask for */
		req_done(q);
		return;
	default:
		q->err = -EINVAL;
		req_done(q);
		return;
	}
}

/*
 * NBD_CMD_BLOCK_STATUS: one chunk per selected context, each at most
 * BS_MAX descriptors (one with REQ_ONE), the last chunk DONE; with
 * extended headers NBD_REPLY_TYPE_BLOCK_STATUS_EXT chunks with 64-bit
 * extent lengths. A chunk also ends after BS_LOOKUPS engine lookups, so
 * a request for a huge range of finely fragmented status (64-bit lengths
 * make that cheap to ask) costs a bounded amount of work per reply: the
 * client asks again from where the reply stopped. The engine may read
 * grain tables to answer, so the reply is built on a worker (offload.c)
 * and sent from the connection's thread when it is done.
 */
#define BS_MAX 256
#define BS_LOOKUPS 16384
/* the largest chunk: extended header, context id and count, descriptors
   of 16 bytes (an error chunk is smaller) */
#define BS_CHUNK_MAX (HDR_MAX + 8 + 16 * BS_MAX)

struct bs_job {
	struct nbd_job j;
	struct nbd_request r;
	size_t len;            /* bytes of reply built in buf */
	bool failed;           /* the reply ends in an error chunk */
	uint8_t buf[];         /* room for a chunk per selected context */
};

/* Appends the chunk of context i to the reply; -errno when the engine
   could not say. */
static int bs_context(struct bs_job *bj, unsigned i, bool last)
{
	struct nbd_conn *c = bj->j.c;
	const struct nbd_request *r = &bj->r;
	struct bdev *b = c->srv->export->bdev;
	struct {
		uint64_t len;
		uint32_t fl;
	} d[BS_MAX];
	unsigned nd = 0, maxd = r->flags & NBD_CMD_FLAG_REQ_ONE ? 1 : BS_MAX;
	unsigned lookups = 0;
	/* compact descriptors hold 32-bit lengths */
	uint64_t dmax = c->extended ? UINT64_MAX : UINT32_MAX;
	uint64_t off = r->offset, end = r->offset + r->length;
	uint8_t *p = bj->buf + bj->len;
	size_t hl, plen;
	uint32_t id = htobe32(i + 1), cnt;

	while (off < end && lookups < BS_LOOKUPS) {
		uint64_t n;
		uint32_t fl;
		int ret = nbd_meta_extent(c, b, i, off, end - off, &n, &fl);

		if (ret < 0)
			return ret;
		lookups++;
		if (nd && d[nd - 1].fl == fl && n <= dmax - d[nd - 1].len) {
			d[nd - 1].len += n;
		} else {
			if (nd == maxd)
				break;
			d[nd].len = n;
			d[nd].fl = fl;
			nd++;
		}
		off += n;
	}
	plen = c->extended ? 8 + 16 * (size_t)nd : 4 + 8 * (size_t)nd;
	hl = chunk_hdr(c, p, last ? NBD_REPLY_FLAG_DONE : 0,
		       c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT :
				     NBD_REPLY_TYPE_BLOCK_STATUS,
		       r, plen);
	p += hl;
	memcpy(p, &id, 4);
	p += 4;
	if (c->extended) {
		cnt = htobe32(nd);
		memcpy(p, &cnt, 4);
		p += 4;
	}
	for (unsigned k = 0; k < nd; k++) {
		uint32_t fl = htobe32(d[k].fl);

		if (c->extended) {
			uint64_t l = htobe64(d[k].len);

			memcpy(p, &l, 8);
			memset(p + 8, 0, 4); /* padding */
			memcpy(p + 12, &fl, 4);
			p += 16;
		} else {
			uint32_t l = htobe32((uint32_t)d[k].len);

			memcpy(p, &l, 4);
			memcpy(p + 4, &fl, 4);
			p += 8;
		}
	}
	bj->len += hl + plen;
	return 0;
}

/* On a worker: the whole reply, or the chunks so far and an error. */
static void bs_run(struct nbd_job *j)
{
	struct bs_job *bj = (struct bs_job *)j;
	uint32_t sel = j->c->meta_selected;

	for (unsigned i = 0; i < NBD_META_MAX; i++) {
		int ret;

		if (!(sel & (1u << i)))
			continue;
		sel &= ~(1u << i);
		ret = bs_context(bj, i, sel == 0);
		if (ret < 0) {
			bj->len += error_chunk_at(j->c, bj->buf + bj->len,
						  &bj->r, nbd_errno(ret));
			bj->failed = true;
			return;
		}
	}
}

/* On the connection's thread: send the reply built by bs_run. */
static void bs_done(struct nbd_job *j)
{
	struct bs_job *bj = (struct bs_job *)j;
	struct nbd_conn *c = j->c;
	struct iovec v = { bj->buf, bj->len };

	count_reply(c, NBD_CMD_BLOCK_STATUS, bj->r.length, bj->failed);
	send_or_die(c, &v, 1);
	c->inflight--;
	free(bj);
}

static int cmd_block_status(struct nbd_conn *c, const struct nbd_request *r)
{
	unsigned nsel = (unsigned)__builtin_popcount(c->meta_selected);
	struct bs_job *bj;

	/* the error chunk fits where a context's chunk would have gone */
	bj = malloc(sizeof(*bj) + (size_t)nsel * BS_CHUNK_MAX);
	if (!bj)
		return -ENOMEM;
	bj->j.run = bs_run;
	bj->j.done = bs_done;
	bj->r = *r;
	bj->len = 0;
	bj->failed = false;
	c->inflight++;
	nbd_offload(c, &bj->j);
	return 0;
}

/* Reads one request (and its payload) and starts it. */
static int handle_request(struct nbd_conn *c)
{
	uint8_t hdr[NBD_EXTENDED_REQUEST_SIZE];
	struct nbd_request r;
	struct req *q;
	uint32_t err;
	int ret;

	ret = nbd_read_full(c, hdr, nbd_request_size(c));
	if (ret < 0)
		return ret;
	ret = nbd_parse_request(c, hdr, &r);
	if (ret < 0)
		return ret;
	err = nbd_check_request(c, &r);
	if (nbd_request_has_payload(c, &r)) {
		if (r.length > c->srv->max_block)
			return -E2BIG; /* cannot resync: drop */
		if (err) {
			ret = nbd_skip(c, r.length);
			if (ret < 0)
				return ret;
		}
	}
	if (err) {
		count_reply(c, r.type, r.length, true);
		reply_error(c, &r, err);
		return 0;
	}
	if (r.type == NBD_CMD_DISC) {
		c->disc = true;
		return 0;
	}
	if (r.type == NBD_CMD_BLOCK_STATUS)
		return cmd_block_status(c, &r);
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->c = c;
	q->r = r;
	if ((r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) && r.length) {
		q->buf = buf_get(c, (uint32_t)r.length);
		if (!q->buf) {
			if (r.type == NBD_CMD_WRITE) {
				ret = nbd_skip(c, r.length);
				if (ret < 0) {
					free(q);
					return ret;
				}
			}
			count_reply(c, r.type, r.length, true);
			reply_error(c, &r, NBD_ENOMEM);
			free(q);
			return 0;
		}
	}
	if (r.type == NBD_CMD_WRITE && r.length) {
		ret = nbd_read_full(c, q->buf, r.length);
		if (ret < 0) {
			req_free(q);
			return ret;
		}
	}
	if (q->buf)
		c->inflight_bytes += r.length;
	c->inflight++;
	dispatch(q);
	return 0;
}

int nbd_transmission(struct nbd_conn *c)
{
	struct pollfd p[4];
	int qfd = bdev_queue_fd(c->q);
	int ret = nbd_offload_conn_init(c);

	if (ret < 0)
		return ret;
	while (!c->dead && !c->disc) {
		bool more = c->inflight < NBD_MAX_INFLIGHT &&
			    c->inflight_bytes < NBD_MAX_INFLIGHT_BYTES;
		int n;

		p[0] = (struct pollfd){ .fd = more ? c->fd : -1,
					.events = POLLIN };
		p[1] = (struct pollfd){ .fd = qfd, .events = POLLIN };
		p[2] = (struct pollfd){ .fd = c->srv->stop_fd,
					.events = POLLIN };
		p[3] = (struct pollfd){ .fd = c->done_fd, .events = POLLIN };
		n = poll(p, 4, more && nbd_buffered(c) ? 0 : -1);
		if (n < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		if (n < 0)
			continue;
		if (p[2].revents)
			break;
		if (p[3].revents)
			nbd_offload_reap(c);
		if (p[1].revents) {
			uint64_t cnt;

			/* reset the eventfd before running: a completion
			   after this read makes it readable again */
			if (read(qfd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN) {
				ret = -errno;
				break;
			}
			ret = bdev_queue_run(c->q, 0);
			if (ret < 0)
				break;
		}
		if (!more)
			continue;
		if (p[0].revents || nbd_buffered(c)) {
			/* take every request already here before submitting;
			   the queue is run right after, so requests the engine
			   finishes at once (a read from the page cache) need
			   not signal its eventfd: no write and read of it */
			bdev_queue_hold(c->q);
			do {
				ret = handle_request(c);
			} while (!ret && !c->dead && !c->disc &&
				 c->inflight < NBD_MAX_INFLIGHT &&
				 c->inflight_bytes < NBD_MAX_INFLIGHT_BYTES &&
				 nbd_buffered(c));
			if (ret >= 0)
				ret = bdev_queue_run(c->q, 0);
			bdev_queue_release(c->q);
			if (ret < 0)
				break;
		}
	}
	/* let what is in flight finish; its replies go out while they can */
	while (c->inflight) {
		uint64_t cnt;
		int r;

		if (c->jobs) {
			/* a worker's job ends on its own: wait for either */
			p[0] = (struct pollfd){ .fd = qfd, .events = POLLIN };
			p[1] = (struct pollfd){ .fd = c->done_fd,
						.events = POLLIN };
			if (poll(p, 2, -1) < 0 && errno != EINTR)
				break;
			if (p[1].revents)
				nbd_offload_reap(c);
			if (!p[0].revents)
				continue;
			if (read(qfd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
				break;
			r = bdev_queue_run(c->q, 0);
		} else {
			r = bdev_queue_run(c->q, 1);
		}
		if (r < 0)
			break;
	}
	nbd_offload_conn_fini(c);
	nbd_pool_free(c);
	return ret < 0 ? ret : 0;
}
