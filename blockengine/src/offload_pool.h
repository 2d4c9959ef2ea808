/* SPDX-License-Identifier: Apache-2.0 */
/*
 * offload_pool.h - a small pool of threads, shared by every open image and
 * queue, that runs work a queue's thread must not wait for: inflating
 * compressed grains, and the steps of a request that would block on the
 * disk (grain tables read on a cache miss, allocating writes, a driver's
 * flush, the first write of a session; see request.h, struct boff).
 *
 * A queue hands a job to the pool and keeps submitting I/O. A worker runs
 * the job, then posts one completion to the owning queue's ring with
 * IORING_OP_MSG_RING (user_data as the job says), so the queue learns of it
 * in bdev_queue_run() on its own thread, like any other completion, and
 * bdev_queue_free() waits for it like any other operation in flight.
 *
 * The pool starts on first use with as many workers as asked for and grows
 * (up to OPOOL_MAX_WORKERS) when a later image asks for more. Its lock is
 * held only to queue and take jobs, never across I/O or a job. Workers
 * finish the jobs queued and exit when the library unloads.
 */
#ifndef OVK_BLOCKENGINE_OFFLOAD_POOL_H
#define OVK_BLOCKENGINE_OFFLOAD_POOL_H

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define OPOOL_MAX_WORKERS 64u
#define OPOOL_THREAD_NAME "ovk-offload" /* each worker's name (comm) */

struct opool_lane;

struct opool_job {
	void (*run)(struct opool_job *j); /* on a worker thread */
	int ring_fd;        /* the owning queue's ring: gets a CQE after run;
			       -1: none (a job that frees itself in run) */
	uint64_t user_data; /* that CQE's user_data (its res is 0) */
	struct opool_job *next;
	struct opool_lane *lane; /* set by the pool: the lane this runner
				    stands for, else NULL */
	atomic_bool posted; /* set by the pool: stored (release) by the
			       worker after run, just before its CQE */
};

/*
 * A lane: jobs that must run one at a time, in the order they were queued
 * (the blocking steps of one disk's writes and flushes). Zeroed memory is
 * an empty lane; it must outlive its jobs, and the pool touches it no more
 * once the last job's CQE is posted.
 */
struct opool_lane {
	struct opool_job *head, *last;
	bool active;             /* its runner is queued or running */
	struct opool_job runner; /* stands for the lane in the pool's FIFO */
};

/*
 * Queues j for a pool of at least workers threads (started or grown as
 * needed). False when the pool cannot take it (this kernel has no
 * IORING_OP_MSG_RING, no worker could start, the library is unloading):
 * the caller runs the work itself.
 */
bool opool_submit(struct opool_job *j, unsigned workers);

/* Like opool_submit, but j runs after every job queued on l before it has
   run (and never alongside one). j->ring_fd must be a ring. */
bool opool_submit_lane(struct opool_lane *l, struct opool_job *j,
		       unsigned workers);

/*
 * On the owning queue's thread, once j's CQE is reaped: everything the
 * worker wrote running j (and the pool's last touches of j and its lane)
 * happens before what this thread does next. The kernel's CQ ring already
 * orders the CQE after the worker's stores; this acquire, paired with the
 * worker's release of j->posted, says so in the language's memory model,
 * which is what ThreadSanitizer checks (it cannot see MSG_RING).
 */
static inline void opool_job_reaped(struct opool_job *j)
{
	bool posted = atomic_load_explicit(&j->posted, memory_order_acquire);

	assert(posted); /* a CQE arrives only after the store */
	(void)posted;
}

/* True on a pool worker: code there may block, and must not hand work to
   the pool and wait for it (the pool might have no other worker). */
bool opool_on_worker(void);

/* For tests: true holds every worker before its next job (jobs queue up),
   false lets them go on. */
void opool_hold(bool hold);

#endif /* OVK_BLOCKENGINE_OFFLOAD_POOL_H */
