/* SPDX-License-Identifier: Apache-2.0 */
/* blk.c - the virtio-blk device (virtio 1.x, 5.2): feature bits, config
   space, and requests turned into engine I/O on guest memory. */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockengine.h"
#include "virtqueue.h"

#define SECTOR 512u
/* largest discard / write-zeroes request offered, in sectors (1 GiB) */
#define MAX_ZERO_SECTORS (1u << 21)

struct vblk_dev {
	struct bdev *bdev;
	bool read_only;
	uint8_t wce;
	unsigned num_queues;
	uint64_t size;
	uint64_t grain; /* bytes; discard alignment and optimal I/O */
	char serial[VIRTIO_BLK_ID_BYTES];
};

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};
_Static_assert(sizeof(struct blk_hdr) == 16, "virtio_blk_outhdr");

struct blk_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};
_Static_assert(sizeof(struct blk_seg) == 16, "discard/write-zeroes segment");

struct vblk_req {
	struct vblk_queue *q;
	struct vblk_req *next_free;
	uint8_t *status;
	uint32_t used_len;
	bool flush_after; /* a write under a write-through cache (wce = 0) */
	uint32_t type;      /* VIRTIO_BLK_T_*, for the statistics */
	uint64_t bytes;     /* data bytes of a read or write */
	unsigned faults0;   /* *q->mem.faults when the request was taken */
	struct iovec *data; /* into chain.iov */
	unsigned ndata;
	struct vq_chain chain;
};

struct vblk_queue {
	struct vblk_dev *dev;
	struct bdev_queue *bq;
	vblk_notify_fn notify;
	void *opaque;
	struct vblk_mem mem;
	struct vq vq;
	bool started, stopping;
	bool starved; /* avail entries left unread: no free request slot */
	bool requeued; /* a completion queued a follow-up request */
	bool kicks_off; /* a thread polls: avail_event is left behind */
	struct vblk_req *reqs, *free_list;
	unsigned nreqs, inflight;
	unsigned fresh; /* reqs[fresh..nreqs) never used since the start */
	char label[512]; /* names the queue in the log (vblk_queue_set_label) */
	struct vblk_stats stats; /* written by the queue's thread only */
};

int vblk_dev_new(const struct vblk_dev_opts *o, struct vblk_dev **out)
{
	struct bdev_info info;
	struct vblk_dev *d;
	int ret;

	if (!o->bdev || o->num_queues < 1 || o->num_queues > 64)
		return -EINVAL;
	ret = bdev_get_info(o->bdev, &info);
	if (ret < 0)
		return ret;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->bdev = o->bdev;
	d->read_only = o->read_only || info.read_only;
	d->wce = 1;
	d->num_queues = o->num_queues;
	d->size = info.size;
	d->grain = info.cluster_size >= SECTOR ? info.cluster_size : 4096;
	if (o->serial) {
		size_t n = strlen(o->serial);

		/* not NUL-terminated when it fills all 20 bytes */
		memcpy(d->serial, o->serial,
		       n < sizeof(d->serial) ? n : sizeof(d->serial));
	}
	*out = d;
	return 0;
}

int vblk_dev_resize(struct vblk_dev *d)
{
	struct bdev_info info;
	int ret = bdev_get_info(d->bdev, &info);

	if (ret < 0)
		return ret;
	/* queue threads read it (in_range) while this runs */
	__atomic_store_n(&d->size, info.size, __ATOMIC_RELEASE);
	return 0;
}

void vblk_dev_free(struct vblk_dev *d)
{
	free(d);
}

uint64_t vblk_dev_features(const struct vblk_dev *d)
{
	uint64_t f = 1ull << VIRTIO_F_VERSION_1 |
		     1ull << VIRTIO_RING_F_INDIRECT_DESC |
		     1ull << VIRTIO_RING_F_EVENT_IDX |
		     1ull << VIRTIO_BLK_F_SEG_MAX |
		     1ull << VIRTIO_BLK_F_BLK_SIZE |
		     1ull << VIRTIO_BLK_F_FLUSH |
		     1ull << VIRTIO_BLK_F_TOPOLOGY |
		     1ull << VIRTIO_BLK_F_CONFIG_WCE |
		     1ull << VIRTIO_BLK_F_MQ;

	if (d->read_only)
		f |= 1ull << VIRTIO_BLK_F_RO;
	else
		f |= 1ull << VIRTIO_BLK_F_DISCARD |
		     1ull << VIRTIO_BLK_F_WRITE_ZEROES;
	return f;
}

void vblk_dev_config(const struct vblk_dev *d, struct virtio_blk_config *c)
{
	uint32_t grain_sectors = (uint32_t)(d->grain / SECTOR);

	memset(c, 0, sizeof(*c));
	c->capacity = htole64(__atomic_load_n(&d->size, __ATOMIC_ACQUIRE) /
			      SECTOR);
	c->seg_max = htole32(VBLK_SEG_MAX);
	c->blk_size = htole32(SECTOR);
	c->physical_block_exp = 0;
	c->min_io_size = htole16(1);
	c->opt_io_size = htole32(grain_sectors);
	c->wce = d->wce;
	c->num_queues = htole16((uint16_t)d->num_queues);
	if (!d->read_only) {
		c->max_discard_sectors = htole32(MAX_ZERO_SECTORS);
		c->max_discard_seg = htole32(1);
		c->discard_sector_alignment = htole32(grain_sectors);
		c->max_write_zeroes_sectors = htole32(MAX_ZERO_SECTORS);
		c->max_write_zeroes_seg = htole32(1);
		c->write_zeroes_may_unmap = 1;
	}
}

int vblk_dev_set_config(struct vblk_dev *d, uint32_t off, const void *buf,
			uint32_t len)
{
	const uint32_t wce = offsetof(struct virtio_blk_config, wce);

	/* the writeback flag is the only writable field: with it clear,
	   each write completes only after a flush */
	if (off != wce || len != 1)
		return -EINVAL;
	d->wce = *(const uint8_t *)buf ? 1 : 0;
	return 0;
}

/* ---- Queues ------------------------------------------------------------ */

int vblk_queue_new(struct vblk_dev *d, vblk_notify_fn notify, void *opaque,
		   struct vblk_queue **out)
{
	struct vblk_queue *q = calloc(1, sizeof(*q));
	int ret;

	if (!q)
		return -ENOMEM;
	ret = bdev_queue_new(256, &q->bq);
	if (ret < 0) {
		free(q);
		return ret;
	}
	q->dev = d;
	q->notify = notify;
	q->opaque = opaque;
	*out = q;
	return 0;
}

void vblk_queue_free(struct vblk_queue *q)
{
	if (!q)
		return;
	if (q->started)
		vblk_queue_stop(q);
	bdev_queue_free(q->bq);
	free(q->reqs);
	free(q);
}

int vblk_queue_fd(struct vblk_queue *q)
{
	return bdev_queue_fd(q->bq);
}

bool vblk_queue_broken(const struct vblk_queue *q)
{
	return q->vq.broken;
}

const char *vblk_queue_broken_reason(const struct vblk_queue *q)
{
	return __atomic_load_n(&q->vq.broken, __ATOMIC_ACQUIRE) ? q->vq.why :
								  NULL;
}

void vblk_queue_set_label(struct vblk_queue *q, const char *label)
{
	snprintf(q->label, sizeof(q->label), "%s", label);
}

void vblk_queue_break(struct vblk_queue *q, const char *why)
{
	vq_fail_reason(&q->vq, why);
}

/* Only q's thread changes q->inflight; vblk_queue_inflight may read it
   from another (ovkvm's status), so the stores are atomic. */
static void inflight_add(struct vblk_queue *q, int d)
{
	__atomic_store_n(&q->inflight, q->inflight + (unsigned)d,
			 __ATOMIC_RELAXED);
}

unsigned vblk_queue_inflight(const struct vblk_queue *q)
{
	return __atomic_load_n(&q->inflight, __ATOMIC_RELAXED);
}

static void req_start(struct vblk_queue *q, struct vblk_req *r);

/* How often q's guest memory has faulted (struct vblk_mem's faults). */
static unsigned mem_faults(const struct vblk_queue *q)
{
	return q->mem.faults ? atomic_load_explicit(q->mem.faults,
						    memory_order_acquire) : 0;
}

/* The request slot the next chain goes into, or NULL when all are in
   flight: a returned one first, else one never used since the start.
   A slot is 8 KiB (the iovec array) and pages are touched only as slots
   are used, so a queue holds as much memory as it has had requests in
   flight at once, not 8 KiB per ring entry from the start. */
static struct vblk_req *req_peek(struct vblk_queue *q)
{
	if (q->free_list)
		return q->free_list;
	return q->fresh < q->nreqs ? &q->reqs[q->fresh] : NULL;
}

/* Take r, the slot req_peek() gave, out of the free ones. */
static void req_take(struct vblk_queue *q, struct vblk_req *r)
{
	if (r == q->free_list) {
		q->free_list = r->next_free;
	} else {
		q->fresh++;
		r->q = q;
	}
}

/* Serve again what an earlier device had taken from this ring and not
   returned (ring->inflight), oldest first; avail is read after them. */
static int replay(struct vblk_queue *q)
{
	uint16_t *heads = calloc(q->vq.num, sizeof(*heads));
	int n;

	if (!heads)
		return -ENOMEM;
	n = vq_inflight_recover(&q->vq, heads, q->vq.num);
	/* taken = returned (used idx) + still out */
	q->vq.last_avail = (uint16_t)(q->vq.used_idx + (n > 0 ? n : 0));
	for (int i = 0; i < n && !q->vq.broken; i++) {
		struct vblk_req *r = req_peek(q);

		if (!r)
			break; /* more than the ring holds: cannot be */
		r->faults0 = mem_faults(q); /* before any guest byte is read */
		if (vq_walk(&q->vq, heads[i], &r->chain) < 0)
			break;
		req_take(q, r);
		inflight_add(q, 1);
		req_start(q, r);
	}
	free(heads);
	if (n > 0)
		fprintf(stderr, "virtio-blk: serving again %d request%s an "
			"earlier device had taken\n", n, n == 1 ? "" : "s");
	return q->vq.broken ? -EIO : 0;
}

int vblk_queue_start(struct vblk_queue *q, const struct vblk_mem *mem,
		     const struct vblk_ring *ring)
{
	unsigned n = ring->num;

	if (q->started)
		return -EBUSY;
	if (!n || n > 32768 || (n & (n - 1)) || !ring->desc || !ring->avail ||
	    !ring->used || (uintptr_t)ring->desc % 16 ||
	    (uintptr_t)ring->avail % 2 || (uintptr_t)ring->used % 4 ||
	    mem->nregions > VBLK_MAX_REGIONS)
		return -EINVAL;
	/* one request slot per ring entry, at most VBLK_MAX_QUEUE_SIZE */
	if (q->nreqs != (n < VBLK_MAX_QUEUE_SIZE ? n : VBLK_MAX_QUEUE_SIZE)) {
		free(q->reqs);
		q->nreqs = n < VBLK_MAX_QUEUE_SIZE ? n : VBLK_MAX_QUEUE_SIZE;
		q->reqs = calloc(q->nreqs, sizeof(*q->reqs));
		if (!q->reqs) {
			q->nreqs = 0;
			return -ENOMEM;
		}
	}
	/* slots join as they are first needed (req_peek) */
	q->free_list = NULL;
	q->fresh = 0;
	q->mem = *mem;
	vq_init(&q->vq, &q->mem, ring);
	q->vq.label = q->label[0] ? q->label : NULL;
	__atomic_store_n(&q->inflight, 0, __ATOMIC_RELAXED);
	q->starved = false;
	q->stopping = false;
	q->started = true;
	/* a record that cannot be replayed leaves the queue broken, as a
	   ring that cannot be walked does */
	if (ring->inflight && replay(q) == -ENOMEM) {
		q->started = false;
		return -ENOMEM;
	}
	return 0;
}

static void flush_used(struct vblk_queue *q)
{
	if (vq_publish(&q->vq) && q->notify)
		q->notify(q->opaque);
}

static void req_done(struct vblk_req *r, uint8_t status)
{
	struct vblk_queue *q = r->q;

	if (mem_faults(q) != r->faults0) {
		/* the guest's buffers turned to zeros under this request:
		   what it moved was not the guest's data. The transport,
		   which knows what happened, breaks the queue. */
		status = VIRTIO_BLK_S_IOERR;
		r->used_len = 1;
	}
	*r->status = status;
	/* relaxed atomics: another thread may read them (vblk_queue_stats) */
	__atomic_fetch_add(&q->stats.requests, 1, __ATOMIC_RELAXED);
	if (status != VIRTIO_BLK_S_OK)
		__atomic_fetch_add(&q->stats.errors, 1, __ATOMIC_RELAXED);
	else if (r->type == VIRTIO_BLK_T_IN)
		__atomic_fetch_add(&q->stats.read_bytes, r->bytes, __ATOMIC_RELAXED);
	else if (r->type == VIRTIO_BLK_T_OUT)
		__atomic_fetch_add(&q->stats.written_bytes, r->bytes,
				   __ATOMIC_RELAXED);
	vq_push(&q->vq, r->chain.head, r->used_len);
	r->next_free = q->free_list;
	q->free_list = r;
	inflight_add(q, -1);
}

static void io_done(void *opaque, int ret)
{
	struct vblk_req *r = opaque;

	if (ret == 0 && r->flush_after) {
		/* write-through: the write is complete once it is stable */
		r->flush_after = false;
		ret = bdev_aio_flush(r->q->bq, r->q->dev->bdev, io_done, r);
		if (ret == 0) {
			r->q->requeued = true;
			return;
		}
	}
	if (ret < 0)
		r->used_len = 1;
	req_done(r, ret < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
}

/* Copy len bytes from the start of iov[0..n) into buf; false if short. */
static bool iov_peek(const struct iovec *iov, unsigned n, void *buf,
		     size_t len)
{
	uint8_t *p = buf;

	for (unsigned i = 0; i < n && len; i++) {
		size_t c = iov[i].iov_len < len ? iov[i].iov_len : len;

		memcpy(p, iov[i].iov_base, c);
		p += c;
		len -= c;
	}
	return len == 0;
}

/* Drop len bytes off the front of iov[*start..end): advance *start. */
static void iov_skip(struct iovec *iov, unsigned *start, unsigned end,
		     size_t len)
{
	while (len && *start < end) {
		if (iov[*start].iov_len > len) {
			iov[*start].iov_base = (uint8_t *)iov[*start].iov_base +
					       len;
			iov[*start].iov_len -= len;
			return;
		}
		len -= iov[*start].iov_len;
		(*start)++;
	}
}

/* True when [sector, +bytes) lies inside the disk (overflow-safe). */
static bool in_range(const struct vblk_dev *d, uint64_t sector,
		     uint64_t bytes)
{
	uint64_t off, size;

	if (sector > UINT64_MAX / SECTOR)
		return false;
	off = sector * SECTOR;
	size = __atomic_load_n(&d->size, __ATOMIC_ACQUIRE);
	return off <= size && bytes <= size - off;
}

/* Start the request the chain in r describes; answers at once (through
   req_done) what needs no I/O or cannot be served. */
static void req_start(struct vblk_queue *q, struct vblk_req *r)
{
	struct vblk_dev *d = q->dev;
	struct vq_chain *c = &r->chain;
	struct iovec *st;
	struct blk_hdr h;
	struct blk_seg seg;
	unsigned out_start = 0, in_start, in_end;
	uint64_t data_bytes = 0;
	int ret = 0;

	/* the status byte is the last writable byte */
	in_start = c->nout;
	in_end = c->nout + c->nin;
	while (in_end > in_start && c->iov[in_end - 1].iov_len == 0)
		in_end--;
	if (in_end == in_start) {
		/* no place to answer: the driver broke the protocol */
		vq_fail(&q->vq, "request without a writable status byte",
			c->head);
		r->next_free = q->free_list;
		q->free_list = r;
		inflight_add(q, -1);
		return;
	}
	st = &c->iov[in_end - 1];
	r->status = (uint8_t *)st->iov_base + st->iov_len - 1;
	if (!--st->iov_len)
		in_end--;
	r->used_len = 1;
	r->flush_after = false;
	r->type = UINT32_MAX;
	r->bytes = 0;

	if (!iov_peek(c->iov, c->nout, &h, sizeof(h))) {
		req_done(r, VIRTIO_BLK_S_IOERR);
		return;
	}
	h.type = le32toh(h.type);
	h.sector = le64toh(h.sector);
	iov_skip(c->iov, &out_start, c->nout, sizeof(h));
	r->type = h.type;

	switch (h.type) {
	case VIRTIO_BLK_T_IN:
		data_bytes = c->in_bytes - 1;
		if (data_bytes % SECTOR || !in_range(d, h.sector, data_bytes))
			break;
		if (!data_bytes) {
			req_done(r, VIRTIO_BLK_S_OK);
			return;
		}
		r->used_len = (uint32_t)(data_bytes + 1);
		r->bytes = data_bytes;
		ret = bdev_aio_readv(q->bq, d->bdev, h.sector * SECTOR,
				     c->iov + in_start,
				     (int)(in_end - in_start), io_done, r);
		if (ret < 0)
			break;
		return;
	case VIRTIO_BLK_T_OUT:
		data_bytes = c->out_bytes - sizeof(h);
		if (d->read_only || data_bytes % SECTOR ||
		    !in_range(d, h.sector, data_bytes))
			break;
		if (!data_bytes) {
			req_done(r, VIRTIO_BLK_S_OK);
			return;
		}
		r->flush_after = !d->wce;
		r->bytes = data_bytes;
		ret = bdev_aio_writev(q->bq, d->bdev, h.sector * SECTOR,
				      c->iov + out_start,
				      (int)(c->nout - out_start), io_done, r);
		if (ret < 0)
			break;
		return;
	case VIRTIO_BLK_T_FLUSH:
		if (d->read_only) {
			req_done(r, VIRTIO_BLK_S_OK);
			return;
		}
		if (bdev_aio_flush(q->bq, d->bdev, io_done, r) < 0)
			break;
		return;
	case VIRTIO_BLK_T_GET_ID: {
		size_t n = c->in_bytes - 1, done = 0;

		if (n > VIRTIO_BLK_ID_BYTES)
			n = VIRTIO_BLK_ID_BYTES;
		for (unsigned i = in_start; i < in_end && done < n; i++) {
			size_t k = c->iov[i].iov_len < n - done ?
					   c->iov[i].iov_len : n - done;

			memcpy(c->iov[i].iov_base, d->serial + done, k);
			done += k;
		}
		r->used_len = (uint32_t)(n + 1);
		req_done(r, VIRTIO_BLK_S_OK);
		return;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		uint32_t allowed = h.type == VIRTIO_BLK_T_DISCARD ?
			0 : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
		uint64_t len;

		if (d->read_only)
			break;
		/* exactly one segment (max_*_seg is 1) */
		if (c->out_bytes - sizeof(h) != sizeof(seg) ||
		    !iov_peek(c->iov + out_start, c->nout - out_start, &seg,
			      sizeof(seg)))
			break;
		seg.sector = le64toh(seg.sector);
		seg.num_sectors = le32toh(seg.num_sectors);
		seg.flags = le32toh(seg.flags);
		if (seg.flags & ~allowed) {
			req_done(r, VIRTIO_BLK_S_UNSUPP);
			return;
		}
		len = (uint64_t)seg.num_sectors * SECTOR;
		if (seg.num_sectors > MAX_ZERO_SECTORS ||
		    !in_range(d, seg.sector, len))
			break;
		if (!len) {
			req_done(r, VIRTIO_BLK_S_OK);
			return;
		}
		if (h.type == VIRTIO_BLK_T_DISCARD)
			ret = bdev_aio_discard(q->bq, d->bdev,
					       seg.sector * SECTOR, len,
					       io_done, r);
		else
			ret = bdev_aio_write_zeroes(q->bq, d->bdev,
						    seg.sector * SECTOR, len,
						    io_done, r);
		if (ret < 0)
			break;
		return;
	}
	default:
		req_done(r, VIRTIO_BLK_S_UNSUPP);
		return;
	}
	r->used_len = 1;
	req_done(r, VIRTIO_BLK_S_IOERR);
}

/* Read the avail ring while there are request slots; submit. */
static void process(struct vblk_queue *q)
{
	if (!q->started || q->stopping)
		return;
	/* the queue is run right below: requests the engine finishes at
	   once (a read from the page cache, an inline write) need not signal
	   its eventfd, which would cost a write and a read of it each */
	bdev_queue_hold(q->bq);
	for (;;) {
		while (!q->vq.broken) {
			struct vblk_req *r = req_peek(q);
			int ret;

			if (!r) {
				q->starved = true;
				break;
			}
			r->faults0 = mem_faults(q); /* before any guest byte */
			ret = vq_pop(&q->vq, &r->chain);
			if (ret <= 0)
				break;
			req_take(q, r);
			inflight_add(q, 1);
			req_start(q, r);
		}
		if (q->vq.broken || q->starved)
			break;
		if (q->kicks_off ? !vq_has_avail(&q->vq)
				 : !vq_enable_kick(&q->vq))
			break;
	}
	bdev_queue_run(q->bq, 0);
	bdev_queue_release(q->bq);
	flush_used(q);
}

void vblk_queue_kick(struct vblk_queue *q)
{
	process(q);
}

bool vblk_queue_poll(struct vblk_queue *q)
{
	bool work = false;

	if (!q->started || q->stopping)
		return false;
	if (q->inflight) {
		uint64_t before = q->stats.requests;

		vblk_queue_complete(q);
		work = q->stats.requests != before;
	}
	if (vq_has_avail(&q->vq) && req_peek(q)) {
		process(q);
		work = true;
	}
	return work;
}

void blk_kicks_off(struct vblk_queue *q)
{
	q->kicks_off = true;
}

bool blk_kicks_on(struct vblk_queue *q)
{
	q->kicks_off = false;
	/* a broken ring or one waiting for free slots has nothing to take
	   now, whatever avail->idx says: the thread sleeps */
	return q->started && !q->stopping && !q->vq.broken && !q->starved &&
	       vq_enable_kick(&q->vq);
}

void vblk_queue_stats(const struct vblk_queue *q, struct vblk_stats *out)
{
	out->requests = __atomic_load_n(&q->stats.requests, __ATOMIC_RELAXED);
	out->read_bytes = __atomic_load_n(&q->stats.read_bytes, __ATOMIC_RELAXED);
	out->written_bytes = __atomic_load_n(&q->stats.written_bytes,
					     __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&q->stats.errors, __ATOMIC_RELAXED);
}

void vblk_queue_complete(struct vblk_queue *q)
{
	if (!q->started)
		return;
	do {
		q->requeued = false;
		bdev_queue_run(q->bq, 0);
	} while (q->requeued);
	flush_used(q);
	if (q->starved && req_peek(q)) {
		q->starved = false;
		process(q);
	}
}

uint16_t vblk_queue_stop(struct vblk_queue *q)
{
	if (!q->started)
		return q->vq.last_avail;
	q->stopping = true;
	while (q->inflight) {
		if (bdev_queue_run(q->bq, 1) < 0)
			break;
	}
	flush_used(q);
	q->started = false;
	return q->vq.last_avail;
}
