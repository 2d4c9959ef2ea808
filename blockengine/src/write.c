/* SPDX-License-Identifier: Apache-2.0 */
/*
 * write.c - writes, discards and write-zeroes of the top layer: DATA runs in
 * place with io_uring, other runs through the driver's allocating path or
 * zeroing hook; flush; the first-write hook of a writing session. What
 * would block a queue's thread on the disk (the driver's paths, grain
 * tables not in memory, the driver's flush) runs in the handle's lane of
 * the offload pool, in the order it was queued.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

enum wop { WOP_WRITE, WOP_DISCARD, WOP_ZEROES };

/*
 * A discard or zeroing of a DATA run of a file source, here and now (on a
 * pool worker): PUNCH_HOLE, else ZERO_RANGE, else zero bytes written, as
 * queue_complete falls back for io_uring.
 */
static int falloc_sync(struct breq *r, enum wop op, struct bsrc *src,
		       uint64_t src_off, uint64_t len)
{
	off_t pos = (off_t)(src->base + src_off);
	int ret = -EOPNOTSUPP;

	if (op == WOP_DISCARD && fallocate(src->fd, FALLOC_FL_PUNCH_HOLE |
					   FALLOC_FL_KEEP_SIZE, pos,
					   (off_t)len) == 0)
		ret = 0;
	else if (fallocate(src->fd, FALLOC_FL_ZERO_RANGE, pos,
			   (off_t)len) == 0)
		ret = 0;
	else if (errno != EOPNOTSUPP && errno != EINVAL)
		return bdev_err(-errno, "%s: zeroing %" PRIu64 " bytes at "
				"offset %" PRIu64 " failed: %s", src->name, len,
				src_off, strerror(errno));
	else if (r->flags & BDEV_REQ_FAST_ZERO)
		return bdev_err(-ENOTSUP, "%s: the file system cannot zero at "
				"offset %" PRIu64 " without writing zero bytes "
				"(FAST_ZERO asked)", src->name, src_off);
	if (ret == 0) {
		atomic_fetch_add_explicit(&src->write_gen, 1,
					  memory_order_release);
		return 0;
	}
	while (len) {
		uint64_t k = len < BDEV_ZERO_CHUNK ? len : BDEV_ZERO_CHUNK;
		struct iovec v = { (void *)bdev_zeros, (size_t)k };
		struct iovcur c = { .iov = &v, .cnt = 1 };

		ret = write_sync(src, src_off, k, &c);
		if (ret < 0)
			return ret;
		src_off += k;
		len -= k;
	}
	return 0;
}

/* Starts a discard or zeroing fallocate on a DATA run of a file source
   (q NULL: on a pool worker, here and now). */
static void run_falloc(struct bdev_queue *q, struct breq *r, enum wop op,
		       struct bsrc *src, uint64_t src_off, uint64_t len)
{
	struct bsub *s;

	if (src->fd < 0 && src->ops->pwrite) {
		/* a source without an fd that can be written (RBD): zeros
		   are written, so reads after a discard see zeros too */
		while (len) {
			size_t n = len < BDEV_ZERO_CHUNK ? (size_t)len
							 : BDEV_ZERO_CHUNK;
			ssize_t ret = src->ops->pwrite(src, bdev_zeros, n,
						       src_off);

			if (ret < 0) {
				breq_fail(r, (int)ret);
				return;
			}
			src_off += n;
			len -= n;
		}
		return;
	}
	if (src->fd < 0) {
		breq_fail(r, bdev_err(-EROFS, "%s: source is read-only",
				      src->name));
		return;
	}
	if (!q) {
		int ret = falloc_sync(r, op, src, src_off, len);
		if (ret < 0)
			breq_fail(r, ret);
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

static void write_defer(struct bdev_queue *q, struct breq *r, enum wop op,
			uint64_t off, uint64_t len, struct iovcur *cur,
			bool begin);

/*
 * Writes, discards or zeroes [off, off + len) of the top layer: DATA runs
 * in place with io_uring; other runs through the driver (write_alloc, or
 * zero for whole grains). Discard and write-zeroes both leave the range
 * reading as zeros. On a queue's thread, the rest of the range from the
 * first run that would block (a grain table not in memory, a run the
 * driver handles) goes to the offload pool; q NULL (on a pool worker):
 * everything here, synchronously.
 */
static void split_write(struct bdev_queue *q, struct breq *r, struct bdev *b,
			enum wop op, uint64_t off, uint64_t len,
			struct iovcur *cur)
{
	bool no_hole = op == WOP_ZEROES && (r->flags & BDEV_REQ_NO_HOLE);
	bool fast = op == WOP_ZEROES && (r->flags & BDEV_REQ_FAST_ZERO);
	bool nowait = q && bdev_can_offload();
	bool driver = b->fmt->write_alloc || b->fmt->zero;

	while (len > 0 && !r->ret) {
		struct bdev_map m;
		ssize_t n;
		int ret = nowait ? bdev_layer_map_nowait(b, off, len, &m) :
			  bdev_layer_map(b, off, len, &m);

		if (ret == -EWOULDBLOCK ||
		    (ret == 0 && nowait && driver &&
		     ((m.kind != BDEV_MAP_DATA && !m.hole) ||
		      (op == WOP_DISCARD && b->fmt->zero)))) {
			/* its tables are on the disk, or the driver would
			   allocate, fill or zero: not on this thread */
			write_defer(q, r, op, off, len, cur, false);
			return;
		}
		if (ret < 0) {
			breq_fail(r, ret);
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
		} else if (no_hole && m.kind == BDEV_MAP_ZERO && m.hole &&
			   m.src->writable) {
			/* a hole of a file: allocate it, reading as zeros */
			run_falloc(q, r, WOP_ZEROES, m.src, m.src_off, m.len);
			n = (ssize_t)m.len;
		} else if (no_hole && m.kind != BDEV_MAP_DATA) {
			/* table entries would leave it unallocated: write
			   zero bytes into fresh storage */
			if (fast)
				n = bdev_err(-ENOTSUP, "%s: write-zeroes at offset "
					     "%" PRIu64 " with NO_HOLE would write "
					     "zero bytes (FAST_ZERO asked)",
					     b->filename, off);
			else
				n = run_alloc_zeros(b, off, m.len);
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
				else if (fast)
					n = bdev_err(-ENOTSUP, "%s: zeroing %" PRIu64
						     " bytes at offset %" PRIu64
						     " would write zero bytes "
						     "(FAST_ZERO asked)",
						     b->filename, piece, off);
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

/*
 * The worker's part of a deferred write: under the handle's top lock, as
 * on the queue's thread, into the top the request was queued for. When a
 * snapshot (or a live commit) has switched the top since, nothing is
 * written here: the frozen layer keeps its content and its CID (a child
 * names it), and the request, ending sealed, is written again whole to
 * the new top (breq_put).
 */
static void write_work(struct boff *o)
{
	struct breq shadow = { .flags = o->flags };
	struct bdev *top = o->b, *layer;
	int ret = 0;

	pthread_rwlock_rdlock(&top->top_lock);
	layer = o->wt->layer;
	if (atomic_load(&o->wt->sealed)) {
		pthread_rwlock_unlock(&top->top_lock);
		return;
	}
	if (o->begin)
		ret = bdev_begin_write_once(layer);
	if (ret < 0)
		breq_fail(&shadow, ret);
	else
		split_write(NULL, &shadow, layer, (enum wop)o->op, o->off,
			    o->len, &o->cur);
	pthread_rwlock_unlock(&top->top_lock);
	o->err = shadow.ret;
	o->errmsg = shadow.errmsg;
}

/* A step of a request ended in the pool: its failure, then its piece. */
static void boff_done_put(struct bdev_queue *q, struct boff *o)
{
	struct breq *r = o->req;

	(void)q;
	boff_fail_req(o);
	boff_free(o);
	breq_put(r);
}

/*
 * Hands the rest of r's write, [off, off + len) from cur on, to the handle's
 * lane of the offload pool (begin: fmt->begin_write first). It counts in
 * lane_writes until the worker is done with it, so that later writes of the
 * handle queue behind it instead of overtaking it.
 */
static void write_defer(struct bdev_queue *q, struct breq *r, enum wop op,
			uint64_t off, uint64_t len, struct iovcur *cur,
			bool begin)
{
	struct bdev *top = r->wt->top;
	struct boff *o = boff_new(r, op == WOP_WRITE ? cur : NULL, off, len);

	if (!o) {
		breq_fail(r, -ENOMEM);
		return;
	}
	o->b = top;
	o->wt = r->wt;
	o->op = op;
	o->flags = r->flags;
	o->begin = begin;
	o->work = write_work;
	o->done = boff_done_put;
	o->lane_counted = true;
	atomic_fetch_add(&top->lane_writes, 1);
	boff_start(q, r, o, top);
}

/*
 * Starts r's write of [off, off + len) into b, the top (the caller holds
 * its top lock): at once on the queue's thread when nothing blocks, or all
 * of it in the offload pool when the session's first write has not run
 * fmt->begin_write yet, or when earlier writes of b wait in the pool.
 */
static void write_start(struct bdev_queue *q, struct breq *r, struct bdev *b,
			enum wop op, uint64_t off, uint64_t len,
			struct iovcur *cur)
{
	bool begin = b->fmt->begin_write &&
		     !atomic_load_explicit(&b->write_begun,
					   memory_order_acquire);
	int ret;

	if (bdev_can_offload() &&
	    (begin || atomic_load_explicit(&b->lane_writes,
					   memory_order_acquire))) {
		write_defer(q, r, op, off, len, cur, begin);
		return;
	}
	ret = bdev_begin_write_once(b);
	if (ret < 0) {
		breq_fail(r, ret);
		return;
	}
	split_write(q, r, b, op, off, len, cur);
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

/* Writes r's range again to the current top (see request.h); moves r's
   count from the sealed tracker to the top's, which may let the frozen
   layer be finalized. */
void breq_reapply(struct breq *r)
{
	struct bdev_wtrack *sealed = r->wt;
	struct bdev *top = sealed->top;
	struct iovcur cur = { .iov = r->iov, .cnt = r->iovcnt };

	pthread_rwlock_rdlock(&top->top_lock);
	r->wt = top->wtrack;
	atomic_fetch_add(&r->wt->inflight, 1);
	write_start(r->q, r, top, (enum wop)r->op, r->off, r->len, &cur);
	pthread_rwlock_unlock(&top->top_lock);
	wtrack_done(sealed);
	if (r->q->unsubmitted)
		queue_poke(r->q);
}

/* The worker's part of a FUA write's flush: the driver's flush of the
   layer the write went to. */
static void fua_work(struct boff *o)
{
	struct bdev *top = o->b, *layer;
	int ret;

	pthread_rwlock_rdlock(&top->top_lock);
	layer = o->wt->layer;
	ret = layer->fmt->flush(layer);
	pthread_rwlock_unlock(&top->top_lock);
	if (ret < 0) {
		o->err = ret;
		o->errmsg = strdup(bdev_errmsg());
	}
}

/* Flushes the layer r wrote, after its data: an io_uring fdatasync for a
   raw file (a piece of r), else the driver's flush in the handle's lane of
   the offload pool (after the blocking steps of writes queued before). */
void breq_fua_flush(struct breq *r)
{
	struct bdev *top = r->wt->top, *layer;
	int ret = 0;

	pthread_rwlock_rdlock(&top->top_lock);
	layer = r->wt->layer;
	if (layer->fmt->flush && bdev_can_offload() &&
	    !(layer->fmt == &bdev_format_raw && raw_source(layer)->fd >= 0)) {
		struct boff *o = boff_new(r, NULL, 0, 0);

		pthread_rwlock_unlock(&top->top_lock);
		if (!o) {
			breq_fail(r, -ENOMEM);
			return;
		}
		o->b = top;
		o->wt = r->wt;
		o->work = fua_work;
		o->done = boff_done_put;
		boff_start(r->q, r, o, top);
		return;
	}
	if (layer->fmt == &bdev_format_raw && raw_source(layer)->fd >= 0) {
		struct bsub *s = bsub_get(r->q);
		if (!s) {
			ret = bdev_err(-ENOMEM, "%s: out of memory",
				       layer->filename);
		} else {
			s->kind = BSUB_FSYNC;
			s->src = raw_source(layer);
			s->off = 0;
			s->left = 0;
			bsub_start(r->q, r, s);
			queue_poke(r->q);
		}
	} else if (layer->fmt->flush) {
		ret = layer->fmt->flush(layer);
	}
	pthread_rwlock_unlock(&top->top_lock);
	if (ret < 0)
		breq_fail(r, ret);
}

/* The flags each operation takes. */
static const unsigned wop_flags[] = {
	[WOP_WRITE] = BDEV_REQ_FUA,
	[WOP_DISCARD] = BDEV_REQ_FUA,
	[WOP_ZEROES] = BDEV_REQ_FUA | BDEV_REQ_NO_HOLE | BDEV_REQ_FAST_ZERO,
};

/* Queues a write, discard or zeroing of the top layer. */
static int aio_write_op(struct bdev_queue *q, struct bdev *b, enum wop op,
			uint64_t offset, uint64_t len, const struct iovec *iov,
			int iovcnt, unsigned flags, bdev_cb cb, void *opaque)
{
	static const char *const names[] = { "write", "discard",
					     "write-zeroes" };
	struct iovcur cur = { .iov = iov, .cnt = iovcnt };
	struct breq *r;
	int64_t gen;
	int ret;

	bdev_err_clear();
	if (!q || !b)
		return bdev_err(-EINVAL, "%s: no queue or image", names[op]);
	/* the checks read the top's name and size: a snapshot swaps them */
	pthread_rwlock_rdlock(&b->top_lock);
	ret = io_check(q, b, names[op], true, offset, len);
	if (ret == 0 && (flags & ~wop_flags[op]))
		ret = bdev_err(-EINVAL, "%s: %s does not take request flags "
			       "0x%x", b->filename, names[op],
			       flags & ~wop_flags[op]);
	if (ret < 0) {
		pthread_rwlock_unlock(&b->top_lock);
		return ret;
	}
	/* the change map knows before the bytes change */
	gen = b->ctk ? ctk_note_write(b, offset, len) : 0;
	if (gen < 0) {
		pthread_rwlock_unlock(&b->top_lock);
		return (int)gen;
	}
	r = breq_get(q, cb, opaque);
	if (!r) {
		pthread_rwlock_unlock(&b->top_lock);
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	}
	r->wt = b->wtrack;
	r->top = b;
	r->flags = flags;
	r->ctk_gen = (uint64_t)gen;
	r->off = offset;
	r->len = len;
	if (iovcnt <= BSUB_INLINE_IOV) {
		if (iovcnt)
			memcpy(r->iov_inline, iov,
			       sizeof(*iov) * (size_t)iovcnt);
		r->iov = r->iov_inline;
	} else {
		r->iov = r->iov_alloc = malloc(sizeof(*iov) * (size_t)iovcnt);
		if (r->iov_alloc)
			memcpy(r->iov_alloc, iov, sizeof(*iov) * (size_t)iovcnt);
		else
			breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory",
					      b->filename));
	}
	r->iovcnt = iovcnt;
	r->op = op;
	atomic_fetch_add(&r->wt->inflight, 1);
	write_start(q, r, b, op, offset, len, &cur);
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
	int ret = iov_total("write", iov, iovcnt, &len);

	if (ret < 0)
		return ret;
	return aio_write_op(q, b, WOP_WRITE, offset, len, iov, iovcnt, 0, cb,
			    opaque);
}

int bdev_aio_writev_flags(struct bdev_queue *q, struct bdev *b,
			  uint64_t offset, const struct iovec *iov, int iovcnt,
			  unsigned flags, bdev_cb cb, void *opaque)
{
	uint64_t len;
	int ret = iov_total("write", iov, iovcnt, &len);

	if (ret < 0)
		return ret;
	return aio_write_op(q, b, WOP_WRITE, offset, len, iov, iovcnt, flags,
			    cb, opaque);
}

int bdev_aio_discard(struct bdev_queue *q, struct bdev *b, uint64_t offset,
		     uint64_t length, bdev_cb cb, void *opaque)
{
	return aio_write_op(q, b, WOP_DISCARD, offset, length, NULL, 0, 0, cb,
			    opaque);
}

int bdev_aio_discard_flags(struct bdev_queue *q, struct bdev *b,
			   uint64_t offset, uint64_t length, unsigned flags,
			   bdev_cb cb, void *opaque)
{
	return aio_write_op(q, b, WOP_DISCARD, offset, length, NULL, 0, flags,
			    cb, opaque);
}

int bdev_aio_write_zeroes(struct bdev_queue *q, struct bdev *b,
			  uint64_t offset, uint64_t length, bdev_cb cb,
			  void *opaque)
{
	return aio_write_op(q, b, WOP_ZEROES, offset, length, NULL, 0, 0, cb,
			    opaque);
}

int bdev_aio_write_zeroes_flags(struct bdev_queue *q, struct bdev *b,
				uint64_t offset, uint64_t length,
				unsigned flags, bdev_cb cb, void *opaque)
{
	return aio_write_op(q, b, WOP_ZEROES, offset, length, NULL, 0, flags,
			    cb, opaque);
}

/* The driver's flush of b's top and of the layers snapshots froze but did
   not finalize yet (on a pool worker). */
static void flush_work(struct boff *o)
{
	struct bdev *b = o->b;
	int ret;

	pthread_rwlock_rdlock(&b->top_lock);
	ret = b->fmt->flush(b);
	pthread_rwlock_unlock(&b->top_lock);
	if (ret == 0)
		ret = wtrack_flush_frozen(b);
	if (ret < 0) {
		o->err = ret;
		o->errmsg = strdup(bdev_errmsg());
	}
}

/* Queues making completed writes durable: an io_uring fdatasync for a raw
   file; for other formats the driver's flush, in b's lane of the offload
   pool, so after the blocking steps of the writes queued before it. */
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
	} else if (b->fmt->flush && bdev_can_offload()) {
		struct boff *o = boff_new(r, NULL, 0, 0);

		if (!o) {
			breq_fail(r, -ENOMEM);
		} else {
			o->b = b;
			o->work = flush_work;
			o->done = boff_done_put;
			boff_start(q, r, o, b);
		}
	} else if (b->fmt->flush) {
		struct boff o = { .b = b };

		flush_work(&o);
		if (o.err) {
			bdev_err(o.err, "%s", o.errmsg ? o.errmsg : "");
			breq_fail(r, o.err);
		}
		free(o.errmsg);
	}
	breq_put(r);
	if (q->unsubmitted)
		queue_poke(q); /* an fd poller must call bdev_queue_run() */
	return 0;
}
