/* SPDX-License-Identifier: Apache-2.0 */
/*
 * write.c - writes, discards and write-zeroes of the top layer: DATA runs in
 * place with io_uring, other runs through the driver's allocating path or
 * zeroing hook; flush; the first-write hook of a writing session.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

enum wop { WOP_WRITE, WOP_DISCARD, WOP_ZEROES };

/* Starts a discard or zeroing fallocate on a DATA run of a file source. */
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
	bool no_hole = op == WOP_ZEROES && (r->flags & BDEV_REQ_NO_HOLE);
	bool fast = op == WOP_ZEROES && (r->flags & BDEV_REQ_FAST_ZERO);

	while (len > 0 && !r->ret) {
		struct bdev_map m;
		ssize_t n;
		int ret = bdev_layer_map(b, off, len, &m);

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
	int ret;

	pthread_rwlock_rdlock(&top->top_lock);
	r->wt = top->wtrack;
	atomic_fetch_add(&r->wt->inflight, 1);
	ret = bdev_begin_write_once(top);
	if (ret < 0)
		breq_fail(r, ret);
	else
		split_write(r->q, r, top, (enum wop)r->op, r->off, r->len, &cur);
	pthread_rwlock_unlock(&top->top_lock);
	wtrack_done(sealed);
	if (r->q->unsubmitted)
		queue_poke(r->q);
}

/* Flushes the layer r wrote, after its data: an io_uring fdatasync for a
   raw file (a piece of r), else the driver's flush, here. */
void breq_fua_flush(struct breq *r)
{
	struct bdev *top = r->wt->top, *layer;
	int ret = 0;

	pthread_rwlock_rdlock(&top->top_lock);
	layer = r->wt->layer;
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
	if (ret == 0)
		ret = bdev_begin_write_once(b);
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
		if (ret == 0)
			ret = wtrack_flush_frozen(b);
		if (ret < 0)
			breq_fail(r, ret);
	}
	breq_put(r);
	if (q->unsubmitted)
		queue_poke(q); /* an fd poller must call bdev_queue_run() */
	return 0;
}
