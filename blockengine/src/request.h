/* SPDX-License-Identifier: Apache-2.0 */
/*
 * request.h - what the parts of the request path share: requests (struct
 * breq), io_uring operations (struct bsub), compressed-grain reads in flight,
 * the queue itself, and the cursor over a caller's iovecs.
 *
 * queue.c owns rings, submission, completion and the request pool; read.c
 * splits reads down the chain; write.c routes writes, discards and zeroing;
 * sync.c holds the blocking helpers.
 *
 * A request counts its pieces still in flight; each io_uring operation is a
 * struct bsub. A request whose last piece ends goes on the queue's done
 * list; callbacks run only from bdev_queue_run().
 */
#ifndef OVK_BLOCKENGINE_REQUEST_H
#define OVK_BLOCKENGINE_REQUEST_H

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

#include "offload_pool.h"
#include "internal.h"

#define BSUB_INLINE_IOV 4
#define BDEV_ZERO_CHUNK 65536u
/* The longest DATA run of a write that run_data moves with pwritev on the
   calling thread when nothing else of the queue is in flight. */
#define BDEV_INLINE_WRITE_MAX (1u << 20)

/* BDEV_ZERO_CHUNK zero bytes to write from. */
extern const uint8_t bdev_zeros[BDEV_ZERO_CHUNK];

struct breq {
	struct bdev_queue *q;
	bdev_cb cb;
	void *opaque;
	int ret;          /* first error, 0 if none */
	char *errmsg;     /* its message, restored before cb */
	unsigned pending; /* pieces in flight (+1 while being split) */
	struct bdev_wtrack *wt; /* a write: counted in wt->inflight; freed
				   by a live commit once that count is 0,
				   so r->wt is not used after wtrack_done */
	struct bdev *top; /* a write: the handle it was queued on (outlives
			     r, unlike wt) */
	unsigned flags;   /* enum bdev_req_flag */
	bool fua_done;    /* the FUA flush has been started */
	uint64_t ctk_gen; /* change map generation at submission (0: none) */
	uint64_t off, len; /* a write's range (change map, re-applying) */
	const struct iovec *iov; /* a copy of a write's iovecs (their
				    buffers stay valid until cb runs), for
				    re-applying */
	int iovcnt;
	struct iovec *iov_alloc; /* heap copy behind iov, freed with r */
	struct iovec iov_inline[BSUB_INLINE_IOV];
	int op;           /* a write's kind (write.c's enum wop) */
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
	BSUB_INFLATE,      /* then its gread inflating in the pool: never
			      issued; a pool worker posts its CQE */
	BSUB_OFFLOAD,      /* a blocking step of a request (struct boff)
			      running in the pool: never issued either */
};

/* One io_uring operation of a request (or of a read-ahead). */
struct bsub {
	enum bsub_kind kind;
	struct breq *req;
	struct gread *gr;   /* BSUB_GRAIN */
	struct boff *bo;    /* BSUB_OFFLOAD */
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

/*
 * A compressed record being read, then inflated, for this queue. Requests
 * that want part of the grain join its waiters until it is served; while
 * it inflates in the pool (inflating), the worker owns direct, out, entry,
 * err and errmsg, and reads only what does not change (m, buf, got).
 */
struct gread {
	struct bdev *layer;
	struct grain_cache *gc; /* referenced: may outlive layer (read-ahead) */
	struct bdev_map m;
	uint8_t *buf;
	uint64_t got;
	bool readahead;
	bool inflating;
	unsigned pool_workers;  /* the layer's inflate pool (0: none) */
	struct gwait *waiters;
	struct gwait *direct;   /* the waiter inflated straight into, or NULL */
	uint8_t *out;           /* direct's buffer or entry's bytes */
	struct gcache_entry *entry;
	int err;                /* how the read and inflate went */
	char *errmsg;           /* its message */
	struct opool_job job;
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
static inline void iovcur_settle(struct iovcur *cur)
{
	while (cur->idx < cur->cnt && cur->iov[cur->idx].iov_len == cur->off) {
		cur->idx++;
		cur->off = 0;
	}
}

/* Zero-fills the next len bytes. */
static inline void iovcur_zero(struct iovcur *cur, uint64_t len)
{
	iovcur_settle(cur);
	IOVCUR_WALK(cur, len, p, n, memset(p, 0, n));
}

/* Copies the next len bytes in from buf. */
static inline void iovcur_copy_in(struct iovcur *cur,
				  const uint8_t *buf, uint64_t len)
{
	iovcur_settle(cur);
	IOVCUR_WALK(cur, len, p, n, (memcpy(p, buf, n), buf += n));
}

/*
 * Describes the next len bytes as an iovec array (inline if it fits) and
 * steps over them. Returns the count, or -ENOMEM.
 */
int iovcur_slice(struct iovcur *cur, uint64_t len, struct iovec *inl,
		 int ninl, struct iovec **out);

/* Skips the next len bytes of the caller's buffers. */
static inline void iovcur_skip(struct iovcur *cur, uint64_t len)
{
	iovcur_settle(cur);
	IOVCUR_WALK(cur, len, p, n, ((void)p, (void)n));
}

/*
 * A step of request req that would block its queue's thread on the disk,
 * handed to the offload pool: work runs on a worker (which may block),
 * then done runs on the queue's thread when the worker's CQE arrives, and
 * ends the piece of req the step holds (breq_put) or starts what follows.
 * While work runs the worker owns the boff; it reports a failure in err
 * and errmsg, never in req (whose other pieces end on the queue's thread).
 * The fields below work are the callers' (write.c, read.c).
 */
struct boff {
	struct opool_job job;
	void (*work)(struct boff *o);
	void (*done)(struct bdev_queue *q, struct boff *o);
	struct breq *req;
	int err;
	char *errmsg;
	struct bdev *b;      /* the handle the request was made on */
	struct bdev *layer;  /* the layer the step is about */
	struct bdev_wtrack *wt; /* a write's tracker (its layer is written) */
	uint64_t off, len;   /* what is left of the request */
	uint64_t seq;        /* a read: sequential length (read.c) */
	struct iovcur cur;   /* over iov: the caller's buffers from off on */
	struct iovec *iov;   /* iov_inline or malloc'd */
	struct iovec iov_inline[BSUB_INLINE_IOV];
	int op;              /* write.c's enum wop */
	unsigned flags;      /* the request's flags */
	bool begin;          /* run fmt->begin_write first */
	bool lane_counted;   /* counted in b->lane_writes */
};

/* ---- requests and io_uring operations (queue.c) --------------------------- */

/* Signals the eventfd once per batch, if anyone polls it. */
void queue_poke(struct bdev_queue *q);
/* A write whose pieces ended after a snapshot sealed the layer it wrote:
   writes it again to the top, so that a grain the child copied from the
   frozen layer before the write landed there still gets it (write.c). */
void breq_reapply(struct breq *r);
/* A write whose pieces all ended: starts its FUA flush (pending counts
   it) or records the flush's failure (write.c). */
void breq_fua_flush(struct breq *r);
/* A request for cb from q's pool, holding one piece (the splitting). */
struct breq *breq_get(struct bdev_queue *q, bdev_cb cb, void *opaque);
/* Records the first failure of r with this thread's current message. */
void breq_fail(struct breq *r, int err);
/* Ends one piece of r; the last one puts r on the done list. */
void breq_put(struct breq *r);
struct bsub *bsub_get(struct bdev_queue *q);
void bsub_release(struct bdev_queue *q, struct bsub *s);
/* Starts s for r (NULL: a read-ahead): counts it as a piece while in
   flight. */
void bsub_start(struct bdev_queue *q, struct breq *r, struct bsub *s);
/* Moves a DATA run between src (at src_off) and the next len bytes of the
   caller's buffers: io_uring for file sources (a write of at most
   BDEV_INLINE_WRITE_MAX bytes while nothing else of q is in flight: pwritev
   at once), the ops for the others. q NULL (a write on a pool worker):
   synchronously. */
void run_data(struct bdev_queue *q, struct breq *r, bool write,
	      struct bsrc *src, uint64_t src_off, uint64_t len,
	      struct iovcur *cur);
/* Writes the next len bytes of cur at src_off of a file source with
   pwritev, here and now. Returns 0 or -errno with a message; cur moves over
   the run either way. */
int write_sync(struct bsrc *src, uint64_t src_off, uint64_t len,
	       struct iovcur *cur);
/* Sums an iovec array; -EINVAL on a bad count or overflow. */
int iov_total(const char *name, const struct iovec *iov, int iovcnt,
	      uint64_t *total);
/* The checks every I/O call makes once, before any driver runs. */
int io_check(struct bdev_queue *q, struct bdev *b, const char *what,
	     bool write, uint64_t offset, uint64_t len);

/* A boff for r with the next len bytes of cur (copied: the caller's iovec
   array may not outlive the call) from off on; NULL (message set) when
   memory is short. Freed with boff_free. */
struct boff *boff_new(struct breq *r, struct iovcur *cur, uint64_t off,
		      uint64_t len);
void boff_free(struct boff *o);
/* Hands o (work, done and the caller's fields set, o->b among them) to
   the offload pool as a piece of r: on b's lane when b is not NULL (after
   b's earlier steps), else in any order. The pool has as many workers as
   o->b's inflate_threads, at least one. Where the pool cannot take it,
   runs work and done here and now. */
void boff_start(struct bdev_queue *q, struct breq *r, struct boff *o,
		struct bdev *b);
/* Records o's failure (if any) in its request, on the queue's thread. */
void boff_fail_req(struct boff *o);

/* ---- compressed grains (read.c) ------------------------------------------- */

/* Called when the io_uring read s of a record ends (err 0: read in full):
   hands the inflate to the pool, or inflates it here, caches it and serves
   its waiters. Takes s. */
void gread_complete(struct bdev_queue *q, struct bsub *s, int err);
/* Called when the pool's CQE for s (BSUB_INFLATE) arrives: serves the
   waiters of the grain the pool inflated. Takes s. */
void gread_inflated(struct bdev_queue *q, struct bsub *s);

#endif /* OVK_BLOCKENGINE_REQUEST_H */
