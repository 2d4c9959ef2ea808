/*
 * queue.c - requests: the checked public I/O calls, splitting a request into
 * the runs the format maps, moving DATA runs with io_uring straight between
 * the sources and the caller's iovecs, compressed runs through the grain
 * cache, and the per-thread queue behind the blocking helpers.
 *
 * A request (struct breq) counts its pieces still in flight; each io_uring
 * operation is a struct bsub. A request whose last piece ends goes on the
 * queue's done list; callbacks run only from bdev_queue_run().
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "grain_cache.h"
#include "internal.h"

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

#define BSUB_INLINE_IOV 4
#define BDEV_THREAD_QUEUE_DEPTH 64
#define BDEV_ZERO_CHUNK 65536u

static const uint8_t bdev_zeros[BDEV_ZERO_CHUNK];

struct breq {
	struct bdev_queue *q;
	bdev_cb cb;
	void *opaque;
	int ret;          /* first error, 0 if none */
	char *errmsg;     /* its message, restored before cb */
	unsigned pending; /* pieces in flight (+1 while being split) */
	struct bdev *wb;  /* a write to this image: counted in writes_inflight */
	struct breq *next;
};

enum bsub_kind {
	BSUB_READ,
	BSUB_WRITE,
	BSUB_WRITE_ZEROES, /* fallback: writes bdev_zeros chunk by chunk */
	BSUB_FSYNC,
	BSUB_DISCARD,      /* fallocate PUNCH_HOLE */
	BSUB_ZERO_RANGE,   /* fallocate ZERO_RANGE */
	BSUB_GRAIN,        /* reads a compressed record into a gread */
};

/* One io_uring operation of a request (or of a read-ahead). */
struct bsub {
	enum bsub_kind kind;
	struct breq *req;
	struct gread *gr;   /* BSUB_GRAIN */
	struct bsrc *src;
	uint64_t off;       /* offset in src of the next byte to move */
	uint64_t left;      /* bytes still to move */
	struct iovec *iov;  /* the part not moved yet */
	int iovcnt;
	struct iovec *iov_alloc; /* heap array behind iov, if any */
	struct iovec iov_inline[BSUB_INLINE_IOV];
	struct bsub *next;  /* free list */
};

/* A request waiting for part of a grain being read and inflated. */
struct gwait {
	struct breq *req;
	uint32_t goff, len; /* the part of the grain it wants */
	struct iovec *iov;
	int iovcnt;
	struct iovec iov_inline[BSUB_INLINE_IOV];
	struct gwait *next;
};

/* A compressed record being read on this queue. */
struct gread {
	struct bdev *layer;
	struct grain_cache *gc; /* referenced: may outlive layer (read-ahead) */
	struct bdev_map m;
	uint8_t *buf;
	uint64_t got;
	bool readahead;
	struct gwait *waiters;
	struct gread *next, **pprev; /* the queue's list of reads in flight */
};

struct bdev_queue {
	struct io_uring ring;
	int efd;
	bool fd_wanted;   /* someone polls efd: poke it for done requests */
	bool poked;
	unsigned in_run;
	unsigned inflight;    /* requests queued, callbacks not yet run */
	unsigned subs;        /* io_uring operations in flight */
	unsigned unsubmitted; /* prepared SQEs not yet submitted */
	struct breq *done_head, **done_tail;
	struct breq *free_reqs;
	struct bsub *free_subs;
	struct gread *greads;
	/* read-ahead state: where the last read ended, how far we read ahead */
	const struct bdev *ra_b;
	uint64_t ra_end;
	const struct bdev *ra_layer;
	uint64_t ra_upto;
};

/* ---- iovec cursor ---------------------------------------------------------- */

struct iovcur {
	const struct iovec *iov;
	int cnt, idx;
	size_t off; /* into iov[idx] */
};

/* Steps over len bytes of the caller's buffers, calling fn on each piece. */
#define IOVCUR_WALK(cur, len, base, n, body)                                  \
	do {                                                                  \
		uint64_t left_ = (len);                                       \
		while (left_ > 0) {                                           \
			const struct iovec *v_ = &(cur)->iov[(cur)->idx];     \
			size_t n = v_->iov_len - (cur)->off;                  \
			uint8_t *base = (uint8_t *)v_->iov_base + (cur)->off; \
			if (n > left_)                                        \
				n = (size_t)left_;                            \
			body;                                                 \
			left_ -= n;                                           \
			(cur)->off += n;                                      \
			if ((cur)->off == v_->iov_len) {                      \
				(cur)->idx++;                                 \
				(cur)->off = 0;                               \
			}                                                     \
		}                                                             \
	} while (0)

/* Skips iovecs of length 0 so idx names the next byte. */
static void iovcur_settle(struct iovcur *cur)
{
	while (cur->idx < cur->cnt && cur->iov[cur->idx].iov_len == cur->off) {
		cur->idx++;
		cur->off = 0;
	}
}

/* Zero-fills the next len bytes. */
static void iovcur_zero(struct iovcur *cur, uint64_t len)
{
	iovcur_settle(cur);
	IOVCUR_WALK(cur, len, p, n, memset(p, 0, n));
}

/* Copies the next len bytes in from buf. */
static void iovcur_copy_in(struct iovcur *cur, const uint8_t *buf,
			   uint64_t len)
{
	iovcur_settle(cur);
	IOVCUR_WALK(cur, len, p, n, (memcpy(p, buf, n), buf += n));
}

/*
 * Describes the next len bytes as an iovec array (inline if it fits) and
 * steps over them. Returns the count, or -ENOMEM.
 */
static int iovcur_slice(struct iovcur *cur, uint64_t len, struct iovec *inl,
			int ninl, struct iovec **out)
{
	struct iovcur probe;
	struct iovec *v;
	int cnt = 0;

	iovcur_settle(cur);
	probe = *cur;
	IOVCUR_WALK(&probe, len, p, n, ((void)p, cnt++));
	v = cnt <= ninl ? inl : malloc(sizeof(*v) * (size_t)cnt);
	if (!v)
		return -ENOMEM;
	cnt = 0;
	IOVCUR_WALK(cur, len, p, n,
		    (v[cnt].iov_base = p, v[cnt].iov_len = n, cnt++));
	*out = v;
	return cnt;
}

/* ---- requests -------------------------------------------------------------- */

/* Signals the eventfd once per batch, if anyone polls it. */
static void queue_poke(struct bdev_queue *q)
{
	uint64_t one = 1;

	if (q->fd_wanted && !q->poked && !q->in_run) {
		q->poked = true;
		if (write(q->efd, &one, sizeof(one)) < 0) {
			/* the counter is saturated: it is readable anyway */
		}
	}
}

static struct breq *breq_get(struct bdev_queue *q, bdev_cb cb, void *opaque)
{
	struct breq *r = q->free_reqs;

	if (r)
		q->free_reqs = r->next;
	else if (!(r = malloc(sizeof(*r))))
		return NULL;
	*r = (struct breq){ .q = q, .cb = cb, .opaque = opaque, .pending = 1,
			    .wb = NULL };
	q->inflight++;
	return r;
}

/* Records the first failure of r with this thread's current message. */
static void breq_fail(struct breq *r, int err)
{
	if (r->ret)
		return;
	r->ret = err;
	r->errmsg = strdup(bdev_errmsg());
}

/* Ends one piece of r; the last one puts r on the done list. */
static void breq_put(struct breq *r)
{
	struct bdev_queue *q = r->q;

	if (--r->pending)
		return;
	if (r->wb)
		atomic_fetch_sub(&r->wb->writes_inflight, 1);
	r->next = NULL;
	*q->done_tail = r;
	q->done_tail = &r->next;
	queue_poke(q);
}

/* Runs the callbacks of finished requests; returns how many ran. */
static int queue_run_done(struct bdev_queue *q)
{
	int ran = 0;

	while (q->done_head) {
		struct breq *r = q->done_head;
		bdev_cb cb = r->cb;
		void *opaque = r->opaque;
		int ret = r->ret;

		q->done_head = r->next;
		if (!q->done_head)
			q->done_tail = &q->done_head;
		if (ret < 0)
			bdev_err(ret, "%s", r->errmsg ? r->errmsg : "");
		free(r->errmsg);
		r->next = q->free_reqs;
		q->free_reqs = r;
		q->inflight--;
		if (cb)
			cb(opaque, ret);
		ran++;
	}
	return ran;
}

/* ---- io_uring operations --------------------------------------------------- */

static struct bsub *bsub_get(struct bdev_queue *q)
{
	struct bsub *s = q->free_subs;

	if (s)
		q->free_subs = s->next;
	else if (!(s = malloc(sizeof(*s))))
		return NULL;
	s->iov = s->iov_alloc = NULL;
	s->iovcnt = 0;
	s->gr = NULL;
	s->req = NULL;
	return s;
}

static void bsub_release(struct bdev_queue *q, struct bsub *s)
{
	free(s->iov_alloc);
	s->next = q->free_subs;
	q->free_subs = s;
}

/* A free SQE, submitting what is prepared when the ring is full. Never
   reaps completions, so no request finishes inside this call. */
static struct io_uring_sqe *queue_sqe(struct bdev_queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	if (!sqe) {
		int ret = io_uring_submit(&q->ring);
		if (ret < 0)
			return NULL;
		q->unsubmitted = 0;
		sqe = io_uring_get_sqe(&q->ring);
	}
	return sqe;
}

/* Prepares the SQE for s's next step (from s->off, s->left bytes). */
static int bsub_issue(struct bdev_queue *q, struct bsub *s)
{
	struct io_uring_sqe *sqe = queue_sqe(q);
	int fd = s->src->fd;
	uint64_t pos = s->src->base + s->off;

	if (!sqe)
		return bdev_err(-EAGAIN, "%s: io_uring submission failed",
				s->src->name);
	switch (s->kind) {
	case BSUB_READ:
	case BSUB_GRAIN:
		if (s->iovcnt == 1)
			io_uring_prep_read(sqe, fd, s->iov[0].iov_base,
					   (unsigned)s->iov[0].iov_len, pos);
		else
			io_uring_prep_readv(sqe, fd, s->iov, (unsigned)s->iovcnt,
					    pos);
		break;
	case BSUB_WRITE:
		if (s->iovcnt == 1)
			io_uring_prep_write(sqe, fd, s->iov[0].iov_base,
					    (unsigned)s->iov[0].iov_len, pos);
		else
			io_uring_prep_writev(sqe, fd, s->iov,
					     (unsigned)s->iovcnt, pos);
		break;
	case BSUB_WRITE_ZEROES:
		io_uring_prep_write(sqe, fd, bdev_zeros,
				    (unsigned)(s->left < BDEV_ZERO_CHUNK ?
					       s->left : BDEV_ZERO_CHUNK), pos);
		break;
	case BSUB_FSYNC:
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		break;
	case BSUB_DISCARD:
		io_uring_prep_fallocate(sqe, fd,
					FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					pos, s->left);
		break;
	case BSUB_ZERO_RANGE:
		io_uring_prep_fallocate(sqe, fd, FALLOC_FL_ZERO_RANGE, pos,
					s->left);
		break;
	}
	io_uring_sqe_set_data(sqe, s);
	q->unsubmitted++;
	return 0;
}

/* Starts s for r: counts it as a piece of r while in flight. */
static void bsub_start(struct bdev_queue *q, struct breq *r, struct bsub *s)
{
	int ret;

	s->req = r;
	if (r)
		r->pending++;
	ret = bsub_issue(q, s);
	if (ret < 0) {
		if (r) {
			breq_fail(r, ret);
			r->pending--;
		}
		bsub_release(q, s);
		return;
	}
	q->subs++;
}

/* Tells valgrind that the kernel filled the first n bytes of s's iovecs
   (it cannot see io_uring's writes); free otherwise. */
static void bsub_mark_read(const struct bsub *s, uint64_t n)
{
	for (int i = 0; i < s->iovcnt && n; i++) {
		size_t k = s->iov[i].iov_len < n ? s->iov[i].iov_len : (size_t)n;
		VALGRIND_MAKE_MEM_DEFINED(s->iov[i].iov_base, k);
		n -= k;
	}
}

/* Drops the first n bytes of s's iovecs after a short transfer. */
static void bsub_advance(struct bsub *s, uint64_t n)
{
	s->off += n;
	s->left -= n;
	while (s->iovcnt && n >= s->iov[0].iov_len) {
		n -= s->iov[0].iov_len;
		s->iov++;
		s->iovcnt--;
	}
	if (s->iovcnt) {
		s->iov[0].iov_base = (uint8_t *)s->iov[0].iov_base + n;
		s->iov[0].iov_len -= n;
	}
}

static void gread_complete(struct bdev_queue *q, struct gread *gr, int err);

/* Handles one CQE: retries short transfers, finishes pieces. */
static void queue_complete(struct bdev_queue *q, struct bsub *s, int res)
{
	struct breq *r = s->req;
	int err = 0;

	q->subs--;
	if (res == -EINTR || res == -EAGAIN)
		goto retry;
	if (res < 0) {
		if (s->kind == BSUB_DISCARD && (res == -EOPNOTSUPP ||
						res == -EINVAL)) {
			/* reads after a discard must still see zeros */
			s->kind = BSUB_ZERO_RANGE;
			goto retry;
		}
		if (s->kind == BSUB_ZERO_RANGE && (res == -EOPNOTSUPP ||
						   res == -EINVAL)) {
			s->kind = BSUB_WRITE_ZEROES;
			goto retry;
		}
		err = bdev_err(res, "%s: %s at offset %" PRIu64 " failed: %s",
			       s->src->name,
			       s->kind == BSUB_READ || s->kind == BSUB_GRAIN ?
			       "read" : s->kind == BSUB_FSYNC ? "flush" : "write",
			       s->off, strerror(-res));
		goto done;
	}
	switch (s->kind) {
	case BSUB_READ:
	case BSUB_WRITE:
	case BSUB_GRAIN:
		if (s->kind != BSUB_WRITE)
			bsub_mark_read(s, (uint64_t)res);
		else
			atomic_fetch_add_explicit(&s->src->write_gen, 1,
						  memory_order_release);
		if ((uint64_t)res >= s->left) {
			if (s->gr)
				s->gr->got += (uint64_t)res;
			goto done;
		}
		if (res == 0) {
			if (s->kind == BSUB_GRAIN)
				goto done; /* the driver clamped; decode judges */
			err = bdev_err(-EIO, "%s: source ends at offset %" PRIu64
				       ", but the image maps %" PRIu64
				       " more bytes there", s->src->name,
				       s->off, s->left);
			goto done;
		}
		bsub_advance(s, (uint64_t)res);
		if (s->gr)
			s->gr->got += (uint64_t)res;
		goto retry;
	case BSUB_WRITE_ZEROES:
		s->off += (uint64_t)res;
		s->left -= (uint64_t)res;
		if (s->left)
			goto retry;
		goto done;
	default:
		goto done;
	}

retry:
	err = bsub_issue(q, s);
	if (!err) {
		q->subs++;
		return;
	}
done:
	if (s->kind == BSUB_GRAIN) {
		struct gread *gr = s->gr;
		bsub_release(q, s);
		gread_complete(q, gr, err);
		return;
	}
	if (err && r)
		breq_fail(r, err);
	bsub_release(q, s);
	if (r)
		breq_put(r);
}

/* Handles every CQE that is ready, without running callbacks. */
static void queue_reap(struct bdev_queue *q)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&q->ring, head, cqe) {
		queue_complete(q, io_uring_cqe_get_data(cqe), cqe->res);
		n++;
	}
	io_uring_cq_advance(&q->ring, n);
}

/* ---- moving runs -------------------------------------------------------- */

/* Moves a DATA run between src (at src_off) and the next len bytes of the
   caller's buffers: io_uring for file sources, the ops for the others. */
static void run_data(struct bdev_queue *q, struct breq *r, bool write,
		     struct bsrc *src, uint64_t src_off, uint64_t len,
		     struct iovcur *cur)
{
	struct bsub *s;
	int cnt;

	if (src->fd < 0) {
		uint64_t off = src_off;
		int ret = 0;

		iovcur_settle(cur);
		IOVCUR_WALK(cur, len, p, n, {
			if (!ret) {
				ret = write ? (int)(src->ops->pwrite ?
					src->ops->pwrite(src, p, n, off) : -EROFS)
					: bsrc_read_full(src, p, n, off);
				if (ret > 0)
					ret = 0;
				off += n;
			}
		});
		if (ret < 0)
			breq_fail(r, ret == -EROFS ? bdev_err(ret,
				  "%s: source is read-only", src->name) : ret);
		return;
	}
	s = bsub_get(q);
	if (!s) {
		breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory", src->name));
		return;
	}
	cnt = iovcur_slice(cur, len, s->iov_inline, BSUB_INLINE_IOV, &s->iov);
	if (cnt < 0) {
		bsub_release(q, s);
		breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory", src->name));
		return;
	}
	s->iovcnt = cnt;
	if (s->iov != s->iov_inline)
		s->iov_alloc = s->iov;
	s->kind = write ? BSUB_WRITE : BSUB_READ;
	s->src = src;
	s->off = src_off;
	s->left = len;
	bsub_start(q, r, s);
}

/* Finds the read of (gc, src, off) in flight on q. */
static struct gread *gread_find(struct bdev_queue *q, struct grain_cache *gc,
				const struct bsrc *src, uint64_t off)
{
	struct gread *gr;

	for (gr = q->greads; gr; gr = gr->next)
		if (gr->gc == gc && gr->m.src == src && gr->m.src_off == off)
			return gr;
	return NULL;
}

/* Inflates a record read in full, caches it and serves its waiters. */
static void gread_complete(struct bdev_queue *q, struct gread *gr, int err)
{
	struct gcache_entry *e = NULL;
	struct gwait *w;

	*gr->pprev = gr->next;
	if (gr->next)
		gr->next->pprev = gr->pprev;
	if (!err && !gcache_decode_begin(gr->gc))
		err = -ECANCELED; /* the layer closed under a read-ahead */
	else if (!err) {
		struct bdev *b = gr->layer;

		e = gcache_entry_new(gr->m.grain_size);
		if (!e)
			err = bdev_err(-ENOMEM, "%s: out of memory inflating a "
				       "grain", b->filename);
		else
			err = b->fmt->decode(b, &gr->m, gr->buf,
					     (size_t)gr->got, e->data);
		if (!err) {
			atomic_fetch_add(&b->stats.inflated, 1);
			if (gr->readahead)
				atomic_fetch_add(&b->stats.readahead, 1);
			gcache_insert(gr->gc, gr->m.src, gr->m.src_off, e);
		}
		gcache_decode_end(gr->gc);
	}
	while ((w = gr->waiters)) {
		gr->waiters = w->next;
		if (err) {
			breq_fail(w->req, err);
		} else {
			struct iovcur c = { .iov = w->iov, .cnt = w->iovcnt };
			iovcur_copy_in(&c, e->data + w->goff, w->len);
		}
		breq_put(w->req);
		if (w->iov != w->iov_inline)
			free(w->iov);
		free(w);
	}
	gcache_put(e);
	gcache_unref(gr->gc);
	free(gr->buf);
	free(gr);
}

/* Starts reading the record m maps (no waiters yet). NULL on failure, with
   the message set. */
static struct gread *gread_start(struct bdev_queue *q, struct bdev *layer,
				 const struct bdev_map *m, bool readahead)
{
	struct gread *gr = calloc(1, sizeof(*gr));
	struct bsub *s = NULL;

	if (!gr || !(gr->buf = malloc(m->src_len ? m->src_len : 1)) ||
	    (m->src->fd >= 0 && !(s = bsub_get(q)))) {
		if (gr)
			free(gr->buf);
		free(gr);
		bdev_err(-ENOMEM, "%s: out of memory reading a grain",
			 layer->filename);
		return NULL;
	}
	gr->layer = layer;
	gr->gc = layer->gcache;
	gcache_ref(gr->gc);
	gr->m = *m;
	gr->readahead = readahead;
	gr->next = q->greads;
	gr->pprev = &q->greads;
	if (gr->next)
		gr->next->pprev = &gr->next;
	q->greads = gr;
	if (!s)
		return gr; /* memory source: the caller reads synchronously */
	s->kind = BSUB_GRAIN;
	s->gr = gr;
	s->src = m->src;
	s->off = m->src_off;
	s->left = m->src_len;
	s->iov = s->iov_inline;
	s->iov[0] = (struct iovec){ gr->buf, m->src_len };
	s->iovcnt = 1;
	bsub_start(q, NULL, s);
	return gr;
}

/* For a memory source, reads and completes gr at once. */
static void gread_sync(struct bdev_queue *q, struct gread *gr)
{
	ssize_t n;

	if (gr->m.src->fd >= 0)
		return;
	n = gr->m.src->ops->pread(gr->m.src, gr->buf, gr->m.src_len,
				  gr->m.src_off);
	if (n > 0)
		gr->got = (uint64_t)n;
	gread_complete(q, gr, n < 0 ? (int)n : 0);
}

/* Reads ahead the compressed grains that follow the one at grain_off. */
static void grain_readahead(struct bdev_queue *q, struct bdev *layer,
			    const struct bdev_map *m)
{
	uint32_t n = layer->opts.readahead_grains;
	uint64_t gs = m->grain_size, off, end;
	bool issued = false;

	if (n == UINT32_MAX || !gs)
		return;
	end = m->grain_off + gs * (n + 1);
	off = m->grain_off + gs;
	if (q->ra_layer == layer && q->ra_upto > off)
		off = q->ra_upto;
	if (end > layer->info.size)
		end = layer->info.size;
	for (; off < end; off += gs) {
		struct bdev_map ra;
		uint64_t len = gs < layer->info.size - off ?
			       gs : layer->info.size - off;
		struct gread *gr;

		if (layer->fmt->map(layer, off, len, &ra) < 0)
			break;
		if (ra.kind != BDEV_MAP_COMPRESSED || ra.grain_off != off)
			continue;
		if (gcache_contains(layer->gcache, ra.src, ra.src_off) ||
		    gread_find(q, layer->gcache, ra.src, ra.src_off))
			continue;
		gr = gread_start(q, layer, &ra, true);
		if (!gr)
			break;
		issued = true;
		gread_sync(q, gr);
	}
	q->ra_layer = layer;
	q->ra_upto = off > end ? off : end;
	/* Submit now: the layer may close before the next bdev_queue_run(),
	   and a read still unsubmitted would name a closed descriptor. */
	if (issued && q->unsubmitted && io_uring_submit(&q->ring) >= 0)
		q->unsubmitted = 0;
}

/* Serves a COMPRESSED run from the grain cache, reading and inflating the
   record on a miss. */
static void run_compressed(struct bdev_queue *q, struct breq *r,
			   struct bdev *layer, const struct bdev_map *m,
			   uint64_t off, struct iovcur *cur, bool seq)
{
	uint64_t goff = off - m->grain_off;
	struct gcache_entry *e;
	struct gwait *w;
	struct gread *gr;
	bool fresh = false;
	int cnt;

	if (!layer->gcache || off < m->grain_off ||
	    goff + m->len > m->grain_size) {
		breq_fail(r, bdev_err(-EIO, "%s: compressed run at offset %"
				      PRIu64 " (%" PRIu64 " bytes) does not fit "
				      "its grain at %" PRIu64 " (%u bytes)",
				      layer->filename, off, m->len,
				      m->grain_off, m->grain_size));
		return;
	}
	e = gcache_lookup(layer->gcache, m->src, m->src_off);
	if (e) {
		atomic_fetch_add(&layer->stats.grain_hits, 1);
		iovcur_copy_in(cur, e->data + goff, m->len);
		gcache_put(e);
		if (seq)
			grain_readahead(q, layer, m);
		return;
	}
	atomic_fetch_add(&layer->stats.grain_misses, 1);
	w = malloc(sizeof(*w));
	if (!w) {
		breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory",
				      layer->filename));
		return;
	}
	cnt = iovcur_slice(cur, m->len, w->iov_inline, BSUB_INLINE_IOV,
			   &w->iov);
	if (cnt < 0) {
		free(w);
		breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory",
				      layer->filename));
		return;
	}
	w->iovcnt = cnt;
	w->req = r;
	w->goff = (uint32_t)goff;
	w->len = (uint32_t)m->len;
	gr = gread_find(q, layer->gcache, m->src, m->src_off);
	if (!gr) {
		gr = gread_start(q, layer, m, false);
		fresh = true;
	}
	if (!gr) {
		breq_fail(r, -ENOMEM);
		if (w->iov != w->iov_inline)
			free(w->iov);
		free(w);
		return;
	}
	gr->readahead = false;
	r->pending++;
	w->next = gr->waiters;
	gr->waiters = w;
	if (seq)
		grain_readahead(q, layer, m);
	if (fresh)
		gread_sync(q, gr);
}

/* Reads [off, off + len) of layer into the next len bytes of the caller's
   buffers, recursing into the parent for unallocated runs. */
static void split_read(struct bdev_queue *q, struct breq *r,
		       struct bdev *layer, uint64_t off, uint64_t len,
		       struct iovcur *cur, bool seq)
{
	while (len > 0 && !r->ret) {
		struct bdev_map m;
		uint64_t lim;
		int ret;

		if (!layer || off >= layer->info.size) {
			iovcur_zero(cur, len);
			return;
		}
		lim = layer->info.size - off < len ? layer->info.size - off : len;
		ret = layer->fmt->map(layer, off, lim, &m);
		if (ret < 0) {
			breq_fail(r, ret);
			return;
		}
		if (m.len == 0 || m.len > lim) {
			breq_fail(r, bdev_err(-EIO, "%s: format driver mapped %"
					      PRIu64 " bytes at offset %" PRIu64
					      ", expected 1 to %" PRIu64,
					      layer->filename, m.len, off, lim));
			return;
		}
		switch (m.kind) {
		case BDEV_MAP_DATA:
			run_data(q, r, false, m.src, m.src_off, m.len, cur);
			break;
		case BDEV_MAP_ZERO:
			iovcur_zero(cur, m.len);
			break;
		case BDEV_MAP_UNALLOC:
			split_read(q, r, layer->backing, off, m.len, cur, seq);
			break;
		case BDEV_MAP_COMPRESSED:
			run_compressed(q, r, layer, &m, off, cur, seq);
			break;
		case BDEV_MAP_NOACCESS:
		default:
			breq_fail(r, bdev_err(-EIO, "%s: offset %" PRIu64
					      " lies in extent %u, which is "
					      "NOACCESS", layer->filename, off,
					      m.extent));
			return;
		}
		off += m.len;
		len -= m.len;
	}
}

enum wop { WOP_WRITE, WOP_DISCARD, WOP_ZEROES };

/* Starts a discard or zeroing fallocate on a DATA run of a file source. */
static void run_falloc(struct bdev_queue *q, struct breq *r, enum wop op,
		       struct bsrc *src, uint64_t src_off, uint64_t len)
{
	struct bsub *s;

	if (src->fd < 0) {
		breq_fail(r, bdev_err(-EROFS, "%s: source is read-only",
				      src->name));
		return;
	}
	s = bsub_get(q);
	if (!s) {
		breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory", src->name));
		return;
	}
	s->kind = op == WOP_DISCARD ? BSUB_DISCARD : BSUB_ZERO_RANGE;
	s->src = src;
	s->off = src_off;
	s->left = len;
	bsub_start(q, r, s);
}

/* Skips the next len bytes of the caller's buffers. */
static void iovcur_skip(struct iovcur *cur, uint64_t len)
{
	iovcur_settle(cur);
	IOVCUR_WALK(cur, len, p, n, ((void)p, (void)n));
}

/*
 * Writes len bytes from cur through the driver's allocating path (runs the
 * driver maps UNALLOC, ZERO or COMPRESSED), synchronously. Returns bytes
 * done (> 0) or -errno; cur moves over exactly what was done.
 */
static ssize_t run_alloc(struct bdev *b, uint64_t off, uint64_t len,
			 struct iovcur *cur)
{
	struct iovec inl[BSUB_INLINE_IOV], *v;
	struct iovcur save = *cur;
	ssize_t n;
	int cnt;

	if (!b->fmt->write_alloc)
		return bdev_err(-ENOTSUP, "%s: format %s cannot allocate storage "
				"for a write at offset %" PRIu64, b->filename,
				b->fmt->name, off);
	cnt = iovcur_slice(cur, len, inl, BSUB_INLINE_IOV, &v);
	if (cnt < 0)
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	n = b->fmt->write_alloc(b, off, len, v, cnt);
	if (v != inl)
		free(v);
	if (n == 0 || n > (ssize_t)len)
		n = bdev_err(-EIO, "%s: format driver wrote %zd bytes at offset %"
			     PRIu64 ", expected 1 to %" PRIu64, b->filename, n,
			     off, len);
	if (n > 0 && (uint64_t)n < len) {
		*cur = save;
		iovcur_skip(cur, (uint64_t)n);
	}
	return n;
}

/* Writes len zero bytes at off through the allocating path. */
static ssize_t run_alloc_zeros(struct bdev *b, uint64_t off, uint64_t len)
{
	uint64_t done = 0;

	while (done < len) {
		uint64_t k = len - done < BDEV_ZERO_CHUNK ? len - done :
			     BDEV_ZERO_CHUNK;
		struct iovec v = { (void *)bdev_zeros, (size_t)k };
		struct iovcur c = { .iov = &v, .cnt = 1 };
		ssize_t n = run_alloc(b, off + done, k, &c);
		if (n < 0)
			return n;
		done += (uint64_t)n;
	}
	return (ssize_t)done;
}

/*
 * Writes, discards or zeroes [off, off + len) of the top layer: DATA runs
 * in place with io_uring; other runs through the driver (write_alloc, or
 * zero for whole grains). Discard and write-zeroes both leave the range
 * reading as zeros.
 */
static void split_write(struct bdev_queue *q, struct breq *r, struct bdev *b,
			enum wop op, uint64_t off, uint64_t len,
			struct iovcur *cur)
{
	while (len > 0 && !r->ret) {
		struct bdev_map m;
		ssize_t n;
		int ret = b->fmt->map(b, off, len, &m);

		if (ret < 0) {
			breq_fail(r, ret);
			return;
		}
		if (m.len == 0 || m.len > len) {
			breq_fail(r, bdev_err(-EIO, "%s: format driver mapped %"
					      PRIu64 " bytes at offset %" PRIu64
					      ", expected 1 to %" PRIu64,
					      b->filename, m.len, off, len));
			return;
		}
		if (m.hole && op == WOP_WRITE)
			m.kind = BDEV_MAP_DATA; /* a hole of a file: fill it */
		if (m.read_only || (m.kind == BDEV_MAP_DATA && !m.src->writable)) {
			breq_fail(r, bdev_err(-EROFS, "%s: offset %" PRIu64
					      " lies in extent %u, which is "
					      "read-only", b->filename, off,
					      m.extent));
			return;
		}
		if (m.kind == BDEV_MAP_NOACCESS) {
			breq_fail(r, bdev_err(-EIO, "%s: offset %" PRIu64
					      " lies in extent %u, which is "
					      "NOACCESS", b->filename, off,
					      m.extent));
			return;
		}
		if (op == WOP_WRITE) {
			if (m.kind == BDEV_MAP_DATA) {
				run_data(q, r, true, m.src, m.src_off, m.len, cur);
				n = (ssize_t)m.len;
			} else {
				n = run_alloc(b, off, m.len, cur);
			}
		} else {
			n = 0;
			if (b->fmt->zero && m.kind != BDEV_MAP_DATA) {
				n = b->fmt->zero(b, off, m.len, op == WOP_DISCARD);
				if (n > (ssize_t)m.len)
					n = bdev_err(-EIO, "%s: format driver zeroed "
						     "%zd bytes at offset %" PRIu64
						     ", expected at most %" PRIu64,
						     b->filename, n, off, m.len);
			} else if (b->fmt->zero && op == WOP_DISCARD) {
				/* whole grains dropped from the tables */
				n = b->fmt->zero(b, off, m.len, true);
			}
			if (n == 0) {
				/* this piece by hand, up to the next grain */
				uint64_t cs = b->info.cluster_size, piece = m.len;
				if (cs && cs - off % cs < piece)
					piece = cs - off % cs;
				if (m.kind == BDEV_MAP_DATA)
					run_falloc(q, r, op, m.src, m.src_off, piece);
				else if (m.kind == BDEV_MAP_ZERO ||
					 (m.kind == BDEV_MAP_UNALLOC && !b->backing))
					; /* reads as zeros already */
				else if ((n = run_alloc_zeros(b, off, piece)) < 0)
					piece = 0;
				if (n >= 0)
					n = (ssize_t)piece;
			}
		}
		if (n < 0) {
			breq_fail(r, (int)n);
			return;
		}
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
}

/* Runs fmt->begin_write the first time b is written in this session. */
int bdev_begin_write_once(struct bdev *b)
{
	int ret = 0;

	if (atomic_load_explicit(&b->write_begun, memory_order_acquire))
		return 0;
	pthread_mutex_lock(&b->begin_lock);
	if (!atomic_load(&b->write_begun)) {
		if (b->fmt->begin_write)
			ret = b->fmt->begin_write(b);
		if (ret == 0)
			atomic_store_explicit(&b->write_begun, true,
					      memory_order_release);
	}
	pthread_mutex_unlock(&b->begin_lock);
	return ret;
}

/* ---- the checked public calls ------------------------------------------- */

/* Sums an iovec array; -EINVAL on a bad count or overflow. */
static int iov_total(const char *name, const struct iovec *iov, int iovcnt,
		     uint64_t *total)
{
	uint64_t sum = 0;

	if (iovcnt < 0 || iovcnt > IOV_MAX || (iovcnt && !iov))
		return bdev_err(-EINVAL, "%s: iovec count %d, expected 0 to %d",
				name, iovcnt, IOV_MAX);
	for (int i = 0; i < iovcnt; i++) {
		if (sum + iov[i].iov_len < sum)
			return bdev_err(-EINVAL, "%s: iovec lengths overflow",
					name);
		sum += iov[i].iov_len;
	}
	*total = sum;
	return 0;
}

/* The checks every I/O call makes once, before any driver runs. */
static int io_check(struct bdev_queue *q, struct bdev *b, const char *what,
		    bool write, uint64_t offset, uint64_t len)
{
	bdev_err_clear();
	if (!q || !b)
		return bdev_err(-EINVAL, "%s: no queue or image", what);
	if (write && b->info.read_only)
		return bdev_err(-EROFS, "%s: image is open read-only; %s needs "
				"it open for writing", b->filename, what);
	if (offset + len < offset || offset + len > b->info.size)
		return bdev_err(-EINVAL, "%s: %s of %" PRIu64 " bytes at offset %"
				PRIu64 " goes past the end of the image (%"
				PRIu64 " bytes)", b->filename, what, len,
				offset, b->info.size);
	return 0;
}

/* Queues a read of the image's bytes at offset into iov. */
int bdev_aio_readv(struct bdev_queue *q, struct bdev *b, uint64_t offset,
		   const struct iovec *iov, int iovcnt, bdev_cb cb,
		   void *opaque)
{
	struct iovcur cur = { .iov = iov, .cnt = iovcnt };
	uint64_t len;
	struct breq *r;
	bool seq;
	int ret;

	ret = iov_total(b ? b->filename : "read", iov, iovcnt, &len);
	if (ret < 0)
		return ret;
	ret = io_check(q, b, "read", false, offset, len);
	if (ret < 0)
		return ret;
	r = breq_get(q, cb, opaque);
	if (!r)
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	seq = q->ra_b == b && q->ra_end == offset;
	q->ra_b = b;
	q->ra_end = offset + len;
	pthread_rwlock_rdlock(&b->top_lock);
	split_read(q, r, b, offset, len, &cur, seq);
	pthread_rwlock_unlock(&b->top_lock);
	breq_put(r);
	if (q->unsubmitted)
		queue_poke(q); /* an fd poller must call bdev_queue_run() */
	return 0;
}

/* Queues a write, discard or zeroing of the top layer. */
static int aio_write_op(struct bdev_queue *q, struct bdev *b, enum wop op,
			uint64_t offset, uint64_t len, const struct iovec *iov,
			int iovcnt, bdev_cb cb, void *opaque)
{
	static const char *const names[] = { "write", "discard",
					     "write-zeroes" };
	struct iovcur cur = { .iov = iov, .cnt = iovcnt };
	struct breq *r;
	int ret;

	ret = io_check(q, b, names[op], true, offset, len);
	if (ret < 0)
		return ret;
	pthread_rwlock_rdlock(&b->top_lock);
	ret = bdev_begin_write_once(b);
	if (ret < 0) {
		pthread_rwlock_unlock(&b->top_lock);
		return ret;
	}
	r = breq_get(q, cb, opaque);
	if (!r) {
		pthread_rwlock_unlock(&b->top_lock);
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	}
	r->wb = b;
	atomic_fetch_add(&b->writes_inflight, 1);
	split_write(q, r, b, op, offset, len, &cur);
	pthread_rwlock_unlock(&b->top_lock);
	breq_put(r);
	if (q->unsubmitted)
		queue_poke(q); /* an fd poller must call bdev_queue_run() */
	return 0;
}

int bdev_aio_writev(struct bdev_queue *q, struct bdev *b, uint64_t offset,
		    const struct iovec *iov, int iovcnt, bdev_cb cb,
		    void *opaque)
{
	uint64_t len;
	int ret = iov_total(b ? b->filename : "write", iov, iovcnt, &len);

	if (ret < 0)
		return ret;
	return aio_write_op(q, b, WOP_WRITE, offset, len, iov, iovcnt, cb,
			    opaque);
}

int bdev_aio_discard(struct bdev_queue *q, struct bdev *b, uint64_t offset,
		     uint64_t length, bdev_cb cb, void *opaque)
{
	return aio_write_op(q, b, WOP_DISCARD, offset, length, NULL, 0, cb,
			    opaque);
}

int bdev_aio_write_zeroes(struct bdev_queue *q, struct bdev *b,
			  uint64_t offset, uint64_t length, bdev_cb cb,
			  void *opaque)
{
	return aio_write_op(q, b, WOP_ZEROES, offset, length, NULL, 0, cb,
			    opaque);
}

/* Queues making completed writes durable: an io_uring fdatasync for a raw
   file, the driver's flush (synchronous) for other formats. */
int bdev_aio_flush(struct bdev_queue *q, struct bdev *b, bdev_cb cb,
		   void *opaque)
{
	struct breq *r;

	bdev_err_clear();
	if (!q || !b)
		return bdev_err(-EINVAL, "flush: no queue or image");
	r = breq_get(q, cb, opaque);
	if (!r)
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	if (b->info.read_only) {
		/* nothing was written */
	} else if (b->fmt == &bdev_format_raw && raw_source(b)->fd >= 0) {
		struct bsub *s = bsub_get(q);
		if (!s) {
			breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory",
					      b->filename));
		} else {
			s->kind = BSUB_FSYNC;
			s->src = raw_source(b);
			s->off = 0;
			s->left = 0;
			bsub_start(q, r, s);
		}
	} else if (b->fmt->flush) {
		int ret;
		pthread_rwlock_rdlock(&b->top_lock);
		ret = b->fmt->flush(b);
		pthread_rwlock_unlock(&b->top_lock);
		if (ret < 0)
			breq_fail(r, ret);
	}
	breq_put(r);
	if (q->unsubmitted)
		queue_poke(q); /* an fd poller must call bdev_queue_run() */
	return 0;
}

/* ---- queues --------------------------------------------------------------- */

/* A queue with a ring of depth entries (rounded up to a power of two). */
int bdev_queue_new(unsigned depth, struct bdev_queue **out)
{
	struct io_uring_params p = { 0 };
	struct bdev_queue *q;
	unsigned entries = 1;
	int ret;

	bdev_err_clear();
	if (!out)
		return bdev_err(-EINVAL, "bdev_queue_new: no result pointer");
	if (depth == 0 || depth > 4096)
		return bdev_err(-EINVAL, "queue depth %u, expected 1 to 4096",
				depth);
	while (entries < depth)
		entries <<= 1;
	q = calloc(1, sizeof(*q));
	if (!q)
		return bdev_err(-ENOMEM, "out of memory for an I/O queue");
	/* room for completions of retries and read-aheads beyond the SQ */
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 4;
	ret = io_uring_queue_init_params(entries, &q->ring, &p);
	if (ret < 0) {
		ret = bdev_err(ret, "cannot set up an io_uring of %u entries: %s",
			       entries, strerror(-ret));
		goto err_free_queue;
	}
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->efd < 0) {
		ret = bdev_err(-errno, "cannot create an eventfd: %s",
			       strerror(errno));
		goto err_exit_ring;
	}
	ret = io_uring_register_eventfd(&q->ring, q->efd);
	if (ret < 0) {
		ret = bdev_err(ret, "cannot register an eventfd with io_uring: "
			       "%s", strerror(-ret));
		goto err_close_efd;
	}
	q->done_tail = &q->done_head;
	*out = q;
	return 0;

err_close_efd:
	close(q->efd);
err_exit_ring:
	io_uring_queue_exit(&q->ring);
err_free_queue:
	free(q);
	return ret;
}

/*
 * The eventfd that io_uring signals for completions, and that the queue
 * signals itself (once per batch) when requests finished without I/O or
 * wait to be submitted. A poller reads it, then calls bdev_queue_run(q, 0).
 */
int bdev_queue_fd(struct bdev_queue *q)
{
	q->fd_wanted = true;
	if (q->done_head || q->unsubmitted) {
		q->poked = false;
		queue_poke(q);
	}
	return q->efd;
}

unsigned bdev_queue_inflight(const struct bdev_queue *q)
{
	return q->inflight;
}

/* Submits, reaps, runs callbacks until min_complete have run (or nothing
   is left to wait for). */
int bdev_queue_run(struct bdev_queue *q, unsigned min_complete)
{
	int ran = 0, ret = 0;

	if (!q)
		return -EINVAL;
	q->in_run++;
	q->poked = false;
	for (;;) {
		if (q->unsubmitted) {
			ret = io_uring_submit(&q->ring);
			if (ret < 0 && ret != -EBUSY && ret != -EAGAIN)
				break;
			if (ret >= 0)
				q->unsubmitted = 0;
			ret = 0;
		}
		queue_reap(q);
		ran += queue_run_done(q);
		if ((unsigned)ran >= min_complete || !q->subs)
			break;
		ret = io_uring_submit_and_wait(&q->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EBUSY &&
		    ret != -EAGAIN && ret != -ETIME)
			break;
		if (ret >= 0)
			q->unsubmitted = 0;
		ret = 0;
	}
	if (!ret && q->unsubmitted && io_uring_submit(&q->ring) >= 0)
		q->unsubmitted = 0;
	q->in_run--;
	if (q->done_head || q->unsubmitted)
		queue_poke(q);
	return ret < 0 ? ret : ran;
}

/* Finishes every request and read-ahead, then frees the queue. */
void bdev_queue_free(struct bdev_queue *q)
{
	if (!q)
		return;
	while (q->inflight || q->subs) {
		if (bdev_queue_run(q, q->inflight ? q->inflight : 1) < 0 &&
		    !q->done_head)
			break;
		if (!q->subs && !q->done_head && q->inflight)
			break; /* cannot happen: nothing left to finish them */
	}
	while (q->free_reqs) {
		struct breq *r = q->free_reqs;
		q->free_reqs = r->next;
		free(r);
	}
	while (q->free_subs) {
		struct bsub *s = q->free_subs;
		q->free_subs = s->next;
		free(s);
	}
	io_uring_queue_exit(&q->ring);
	close(q->efd);
	free(q);
}

/* ---- blocking helpers ---------------------------------------------------- */

static pthread_key_t bdev_thread_key;
static pthread_once_t bdev_thread_once = PTHREAD_ONCE_INIT;

static void bdev_thread_queue_free(void *q)
{
	bdev_queue_free(q);
}

static void bdev_thread_key_init(void)
{
	pthread_key_create(&bdev_thread_key, bdev_thread_queue_free);
}

/* Frees the queue of the thread that unloads the library (usually main,
   whose key destructors never run). */
__attribute__((destructor)) static void bdev_thread_queue_exit(void)
{
	struct bdev_queue *q;

	if (pthread_once(&bdev_thread_once, bdev_thread_key_init) != 0)
		return;
	q = pthread_getspecific(bdev_thread_key);
	if (q) {
		pthread_setspecific(bdev_thread_key, NULL);
		bdev_queue_free(q);
	}
}

/* This thread's own queue, created on first use. */
static int bdev_thread_queue(struct bdev_queue **out)
{
	struct bdev_queue *q;
	int ret;

	pthread_once(&bdev_thread_once, bdev_thread_key_init);
	q = pthread_getspecific(bdev_thread_key);
	if (!q) {
		ret = bdev_queue_new(BDEV_THREAD_QUEUE_DEPTH, &q);
		if (ret < 0)
			return ret;
		pthread_setspecific(bdev_thread_key, q);
	}
	*out = q;
	return 0;
}

struct bdev_wait {
	bool done;
	int ret;
};

static void bdev_wait_cb(void *opaque, int ret)
{
	struct bdev_wait *w = opaque;

	w->done = true;
	w->ret = ret;
}

/* Runs q until w's request has finished; returns its result. */
static int bdev_wait(struct bdev_queue *q, struct bdev_wait *w, int queued)
{
	if (queued < 0)
		return queued;
	while (!w->done) {
		int ret = bdev_queue_run(q, 1);
		if (ret < 0)
			return bdev_err(ret, "waiting for I/O failed: %s",
					strerror(-ret));
	}
	return w->ret;
}

#define BDEV_BLOCKING(call)                                                 \
	do {                                                                \
		struct bdev_wait w_ = { 0 };                                \
		struct bdev_queue *q_;                                      \
		int ret_ = bdev_thread_queue(&q_);                          \
		if (ret_ < 0)                                               \
			return ret_;                                        \
		return bdev_wait(q_, &w_, call);                            \
	} while (0)

int bdev_preadv(struct bdev *b, uint64_t offset, const struct iovec *iov,
		int iovcnt)
{
	BDEV_BLOCKING(bdev_aio_readv(q_, b, offset, iov, iovcnt, bdev_wait_cb,
				     &w_));
}

int bdev_pread(struct bdev *b, void *buf, size_t len, uint64_t offset)
{
	struct iovec v = { buf, len };

	return bdev_preadv(b, offset, &v, 1);
}

int bdev_pwritev(struct bdev *b, uint64_t offset, const struct iovec *iov,
		 int iovcnt)
{
	BDEV_BLOCKING(bdev_aio_writev(q_, b, offset, iov, iovcnt, bdev_wait_cb,
				      &w_));
}

int bdev_pwrite(struct bdev *b, const void *buf, size_t len, uint64_t offset)
{
	struct iovec v = { (void *)buf, len };

	return bdev_pwritev(b, offset, &v, 1);
}

int bdev_flush(struct bdev *b)
{
	BDEV_BLOCKING(bdev_aio_flush(q_, b, bdev_wait_cb, &w_));
}

int bdev_discard(struct bdev *b, uint64_t offset, uint64_t length)
{
	BDEV_BLOCKING(bdev_aio_discard(q_, b, offset, length, bdev_wait_cb,
				       &w_));
}

int bdev_write_zeroes(struct bdev *b, uint64_t offset, uint64_t length)
{
	BDEV_BLOCKING(bdev_aio_write_zeroes(q_, b, offset, length,
					    bdev_wait_cb, &w_));
}
