/* SPDX-License-Identifier: Apache-2.0 */
/*
 * queue.c - per-thread io_uring queues: the rings, submitting and reaping
 * operations (retrying short transfers), the pool of requests and the done
 * list whose callbacks bdev_queue_run() runs, moving DATA runs, and the
 * checks every public I/O call makes once. See request.h for the parts.
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "request.h"
#include "ring_tsan.h"

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

const uint8_t bdev_zeros[BDEV_ZERO_CHUNK];

#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
char ring_tsan_sync; /* see ring_tsan.h */
#endif

/* ---- iovec cursor ---------------------------------------------------------- */

/* Describes the next len bytes as an iovec array (see request.h). */
int iovcur_slice(struct iovcur *cur, uint64_t len, struct iovec *inl,
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
void queue_poke(struct bdev_queue *q)
{
	uint64_t one = 1;

	if (q->fd_wanted && !q->poked && !q->in_run) {
		q->poked = true;
		if (write(q->efd, &one, sizeof(one)) < 0) {
			/* the counter is saturated: it is readable anyway */
		}
	}
}

struct breq *breq_get(struct bdev_queue *q, bdev_cb cb, void *opaque)
{
	struct breq *r = q->free_reqs;

	if (r)
		q->free_reqs = r->next;
	else if (!(r = malloc(sizeof(*r))))
		return NULL;
	*r = (struct breq){ .q = q, .cb = cb, .opaque = opaque, .pending = 1 };
	q->inflight++;
	return r;
}

/* Records the first failure of r with this thread's current message. */
void breq_fail(struct breq *r, int err)
{
	if (r->ret)
		return;
	r->ret = err;
	r->errmsg = strdup(bdev_errmsg());
}

/* Ends one piece of r; the last one puts r on the done list. */
void breq_put(struct breq *r)
{
	struct bdev_queue *q = r->q;

	if (--r->pending)
		return;
	if (r->wt && !r->ret && atomic_load(&r->wt->top->commit))
		commit_note(r->wt->top, r->wt, r->off, r->len);
	while (r->wt && !r->ret && atomic_load(&r->wt->sealed)) {
		/* a snapshot switched while it was in flight */
		r->pending = 1;
		breq_reapply(r);
		if (--r->pending)
			return;
	}
	if (r->wt && (r->flags & BDEV_REQ_FUA) && !r->fua_done && !r->ret) {
		/* the data is written: now the flush, ordered after it */
		r->fua_done = true;
		r->pending = 1;
		breq_fua_flush(r);
		if (--r->pending)
			return;
	}
	if (r->wt)
		wtrack_done(r->wt);
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
		int ret;

		/* a checkpoint created before this callback runs sees the
		   write as changed since it too */
		if (r->ctk_gen && ctk_note_done(r->top, r->ctk_gen, r->off,
						r->len) < 0)
			breq_fail(r, -EIO);
		ret = r->ret;

		q->done_head = r->next;
		if (!q->done_head)
			q->done_tail = &q->done_head;
		if (ret < 0)
			bdev_err(ret, "%s", r->errmsg ? r->errmsg : "");
		free(r->errmsg);
		free(r->iov_alloc);
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

struct bsub *bsub_get(struct bdev_queue *q)
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

void bsub_release(struct bdev_queue *q, struct bsub *s)
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
	struct io_uring_sqe *sqe;
	int fd = s->src->fd;

	if (fd < 0) /* a source with its own async path (run_data) */
		return s->src->ops->aio(s->src, s, q->ring.ring_fd);
	sqe = queue_sqe(q);
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
	case BSUB_INFLATE:
	case BSUB_OFFLOAD:
		io_uring_prep_nop(sqe); /* never issued (see request.h) */
		break;
	}
	io_uring_sqe_set_data(sqe, s);
	q->unsubmitted++;
	return 0;
}

/* Starts s for r: counts it as a piece of r while in flight. */
void bsub_start(struct bdev_queue *q, struct breq *r, struct bsub *s)
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

/* Handles one CQE: retries short transfers, finishes pieces. */
static void queue_complete(struct bdev_queue *q, struct bsub *s, int res)
{
	struct breq *r = s->req;
	int err = 0;

	q->subs--;
	if (s->kind == BSUB_INFLATE) {
		gread_inflated(q, s);
		return;
	}
	if (s->kind == BSUB_OFFLOAD) {
		struct boff *o = s->bo;

		opool_job_reaped(&o->job);
		bsub_release(q, s);
		o->done(q, o);
		return;
	}
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
			if (r && (r->flags & BDEV_REQ_FAST_ZERO)) {
				err = bdev_err(-ENOTSUP, "%s: the file system "
					       "cannot zero at offset %" PRIu64
					       " without writing zero bytes "
					       "(FAST_ZERO asked)", s->src->name,
					       s->off);
				goto done;
			}
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
		atomic_fetch_add_explicit(&s->src->write_gen, 1,
					  memory_order_release);
		s->off += (uint64_t)res;
		s->left -= (uint64_t)res;
		if (s->left)
			goto retry;
		goto done;
	case BSUB_ZERO_RANGE:
	case BSUB_DISCARD:
		atomic_fetch_add_explicit(&s->src->write_gen, 1,
					  memory_order_release);
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
		gread_complete(q, s, err);
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
	bool flushed = false;

	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		io_uring_for_each_cqe(&q->ring, head, cqe) {
			queue_complete(q, io_uring_cqe_get_data(cqe), cqe->res);
			n++;
		}
		io_uring_cq_advance(&q->ring, n);
		/* More requests can be in flight than the CQ has entries
		   (a request is many pieces). Completions that found it full
		   wait on the kernel's overflow list, and Linux 6.1 (Debian
		   12) moves them into the ring only on an io_uring_enter
		   with GETEVENTS, with no new eventfd signal: a poller that
		   only peeks would wait forever (16 of 64 reads completed on
		   a queue of depth 4, then nothing). */
		if (!io_uring_cq_has_overflow(&q->ring) ||
		    (flushed && n == 0) || io_uring_get_events(&q->ring) < 0)
			break;
		flushed = true;
	}
}

/* ---- steps in the offload pool ----------------------------------------- */

/* A boff for r over the next len bytes of cur (see request.h). */
struct boff *boff_new(struct breq *r, struct iovcur *cur, uint64_t off,
		      uint64_t len)
{
	struct boff *o = calloc(1, sizeof(*o));
	int cnt = 0;

	if (o && cur && len)
		cnt = iovcur_slice(cur, len, o->iov_inline, BSUB_INLINE_IOV,
				   &o->iov);
	if (!o || cnt < 0) {
		free(o);
		bdev_err(-ENOMEM, "out of memory for a step of a request");
		return NULL;
	}
	if (!o->iov)
		o->iov = o->iov_inline;
	o->cur = (struct iovcur){ .iov = o->iov, .cnt = cnt };
	o->req = r;
	o->off = off;
	o->len = len;
	return o;
}

void boff_free(struct boff *o)
{
	if (!o)
		return;
	if (o->iov != o->iov_inline)
		free(o->iov);
	free(o->errmsg);
	free(o);
}

/* Records o's failure in its request (see request.h). */
void boff_fail_req(struct boff *o)
{
	if (!o->err)
		return;
	bdev_err(o->err, "%s", o->errmsg ? o->errmsg : "");
	breq_fail(o->req, o->err);
}

/* The worker's part: o's work, published to the queue by the CQE that
   follows. */
static void boff_job(struct opool_job *j)
{
	struct boff *o = (struct boff *)((char *)j -
					 offsetof(struct boff, job));

	bdev_err_clear();
	o->work(o);
	if (o->lane_counted)
		atomic_fetch_sub(&o->b->lane_writes, 1);
}

/* Hands o to the pool as a piece of r (see request.h). */
void boff_start(struct bdev_queue *q, struct breq *r, struct boff *o,
		struct bdev *b)
{
	struct bsub *s = bsub_get(q);
	/* the pool's size as the image's options ask for inflating; one
	   worker where they ask for none (these steps must leave the
	   queue's thread all the same) */
	uint32_t workers = o->b->opts.inflate_threads;
	bool queued;

	if (workers == UINT32_MAX || workers == 0)
		workers = 1;
	o->req = r;
	r->pending++;
	if (s) {
		s->kind = BSUB_OFFLOAD;
		s->bo = o;
		s->req = r;
		s->src = NULL;
		o->job.run = boff_job;
		o->job.ring_fd = q->ring.ring_fd;
		o->job.user_data = (uint64_t)(uintptr_t)s;
		queued = b ? opool_submit_lane(&b->lane, &o->job, workers) :
			     opool_submit(&o->job, workers);
		if (queued) {
			q->subs++;
			return;
		}
		bsub_release(q, s);
	}
	/* no pool (or no memory for the operation): here, as before */
	boff_job(&o->job);
	o->done(q, o);
}

/* ---- moving runs -------------------------------------------------------- */

/*
 * Writes a DATA run of a file source at once with pwritev on the calling
 * thread: the next len bytes of cur at src_off. Returns 0 or -errno with a
 * message; cur moves over the run either way.
 */
int write_sync(struct bsrc *src, uint64_t src_off, uint64_t len,
			struct iovcur *cur)
{
	struct iovec inl[BSUB_INLINE_IOV], *v, *p;
	uint64_t off = src_off, left = len;
	int cnt, ret = 0;

	cnt = iovcur_slice(cur, len, inl, BSUB_INLINE_IOV, &v);
	if (cnt < 0) {
		iovcur_skip(cur, len);
		return bdev_err(-ENOMEM, "%s: out of memory", src->name);
	}
	p = v;
	while (left > 0) {
		ssize_t n = pwritev(src->fd, p, cnt, (off_t)(src->base + off));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;
			ret = bdev_err(-err, "%s: write at offset %" PRIu64
				       " failed: %s", src->name, off,
				       strerror(err));
			break;
		}
		off += (uint64_t)n;
		left -= (uint64_t)n;
		/* a short write: drop what went */
		while (cnt && (size_t)n >= p->iov_len) {
			n -= (ssize_t)p->iov_len;
			p++;
			cnt--;
		}
		if (cnt) {
			p->iov_base = (uint8_t *)p->iov_base + n;
			p->iov_len -= (size_t)n;
		}
	}
	if (off != src_off)
		atomic_fetch_add_explicit(&src->write_gen, 1,
					  memory_order_release);
	if (v != inl)
		free(v);
	return ret;
}

/* Moves a DATA run between src (at src_off) and the next len bytes of the
   caller's buffers: io_uring for file sources, the ops for the others. */
void run_data(struct bdev_queue *q, struct breq *r, bool write,
		     struct bsrc *src, uint64_t src_off, uint64_t len,
		     struct iovcur *cur)
{
	struct bsub *s;
	int cnt;

	if (src->fd < 0 && (!src->ops->aio || !q)) {
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
	if (!q) {
		/* on a pool worker (a blocking step of a write): here */
		int ret = write ? write_sync(src, src_off, len, cur) :
			  bdev_err(-EINVAL, "%s: no queue for a read",
				   src->name);
		if (ret < 0)
			breq_fail(r, ret);
		return;
	}
	if (write && !q->subs && len <= BDEV_INLINE_WRITE_MAX &&
	    src->fd >= 0) {
		/* Nothing else of q in flight: write now, on this thread.
		   io_uring hands a buffered write on ext4 to a kernel worker
		   thread; a lone write would pay that hop and a wake-up
		   instead of one syscall. Order is kept: no earlier write of
		   q can still be in flight. r still ends in bdev_queue_run. */
		int ret = write_sync(src, src_off, len, cur);
		if (ret < 0)
			breq_fail(r, ret);
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
	if (!write && !q->subs && len <= BDEV_INLINE_WRITE_MAX) {
		/* Nothing else of q in flight: what the page cache holds is
		   copied now, without the io_uring round trip (submit, its
		   eventfd signal, reap); what it does not hold (EAGAIN, or a
		   short read) goes to io_uring as before. */
		ssize_t n = preadv2(src->fd, s->iov, s->iovcnt,
				    (off_t)(src->base + src_off), RWF_NOWAIT);

		if (n > 0 && (uint64_t)n >= len) {
			bsub_release(q, s);
			return;
		}
		if (n > 0)
			bsub_advance(s, (uint64_t)n);
	}
	bsub_start(q, r, s);
}

/* ---- checks every public I/O call makes --------------------------------- */

/* Sums an iovec array; -EINVAL on a bad count or overflow. */
int iov_total(const char *name, const struct iovec *iov, int iovcnt,
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
int io_check(struct bdev_queue *q, struct bdev *b, const char *what,
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
	ring_mapped();
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
	ring_unmapping();
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

void bdev_queue_hold(struct bdev_queue *q)
{
	q->in_run++;
}

void bdev_queue_release(struct bdev_queue *q)
{
	if (--q->in_run == 0 && (q->done_head || q->unsubmitted))
		queue_poke(q);
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
	ring_unmapping();
	io_uring_queue_exit(&q->ring);
	close(q->efd);
	free(q);
}
