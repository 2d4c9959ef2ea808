/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inflate_pool.h - a small pool of threads, shared by every open image and
 * queue, that inflates compressed grains off the reading thread.
 *
 * A queue hands a job to the pool and keeps submitting I/O. A worker runs
 * the job, then posts one completion to the owning queue's ring with
 * IORING_OP_MSG_RING (user_data as the job says), so the queue learns of it
 * in bdev_queue_run() on its own thread, like any other completion, and
 * bdev_queue_free() waits for it like any other operation in flight.
 *
 * The pool starts on first use with as many workers as asked for and grows
 * (up to IPOOL_MAX_WORKERS) when a later image asks for more. Its lock is
 * held only to queue and take jobs, never across I/O or a job. Workers
 * finish the jobs queued and exit when the library unloads.
 */
#ifndef OVK_BLOCKENGINE_INFLATE_POOL_H
#define OVK_BLOCKENGINE_INFLATE_POOL_H

#include <stdbool.h>
#include <stdint.h>

#define IPOOL_MAX_WORKERS 64u

struct ipool_job {
	void (*run)(struct ipool_job *j); /* on a worker thread */
	int ring_fd;        /* the owning queue's ring: gets a CQE after run;
			       -1: none (a job that frees itself in run) */
	uint64_t user_data; /* that CQE's user_data (its res is 0) */
	struct ipool_job *next;
};

/*
 * Queues j for a pool of at least workers threads (started or grown as
 * needed). False when the pool cannot take it (this kernel has no
 * IORING_OP_MSG_RING, no worker could start, the library is unloading):
 * the caller runs the work itself.
 */
bool ipool_submit(struct ipool_job *j, unsigned workers);

#endif /* OVK_BLOCKENGINE_INFLATE_POOL_H */
