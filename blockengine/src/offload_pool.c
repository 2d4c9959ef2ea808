/* SPDX-License-Identifier: Apache-2.0 */
/*
 * offload_pool.c - the shared pool of threads that run work off the
 * queues' threads (see offload_pool.h): one FIFO of jobs and lanes under
 * one mutex, workers that each own a tiny io_uring to post completions to
 * the queues' rings with IORING_OP_MSG_RING.
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "offload_pool.h"
#include "ring_tsan.h"

struct opool_worker {
	pthread_t tid;
	struct io_uring ring; /* only for MSG_RING: two entries */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct opool_job *head, **tail;
	unsigned nworkers; /* running */
	unsigned idle;     /* waiting on work */
	bool usable;       /* probed: the kernel has IORING_OP_MSG_RING */
	bool broken;       /* no MSG_RING, or a worker failed to start */
	bool stop;         /* the library is unloading */
	bool held;         /* a test holds the workers (opool_hold) */
	struct opool_worker workers[OPOOL_MAX_WORKERS];
} pool = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.work = PTHREAD_COND_INITIALIZER,
	.tail = &pool.head,
};

static pthread_once_t pool_atfork_once = PTHREAD_ONCE_INIT;
static _Thread_local bool on_worker;

/* True on a pool worker (see offload_pool.h). */
bool opool_on_worker(void)
{
	return on_worker;
}

/* Puts j at the tail of the pool's FIFO and wakes a worker (lock held). */
static void opool_enqueue(struct opool_job *j)
{
	j->next = NULL;
	*pool.tail = j;
	pool.tail = &j->next;
	if (pool.idle)
		pthread_cond_signal(&pool.work);
}

/* Posts the CQE that tells the owning queue j's work is done. Retries
   while the target's completion queue has no room. */
static void opool_post(struct io_uring *ring, int ring_fd, uint64_t user_data)
{
	for (;;) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
		struct io_uring_cqe *cqe;
		int res, ret;

		if (!sqe) { /* cannot happen: one SQE in flight at a time */
			sched_yield();
			continue;
		}
		io_uring_prep_msg_ring(sqe, ring_fd, 0, user_data, 0);
		io_uring_sqe_set_data64(sqe, 0);
		ret = io_uring_submit_and_wait(ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			return; /* cannot happen with a valid ring */
		if (io_uring_wait_cqe(ring, &cqe) < 0)
			continue;
		res = cqe->res;
		io_uring_cqe_seen(ring, cqe);
		if (res >= 0)
			return;
		/* the target's CQ (and overflow list) is full: it drains as
		   its thread runs; other errors mean the queue is gone, which
		   a queue with work in the pool never is */
		if (res != -EOVERFLOW && res != -EAGAIN && res != -EBUSY &&
		    res != -EINTR)
			return;
		sched_yield();
	}
}

/* A worker: takes jobs in order until the library unloads and no job is
   left. */
static void *opool_worker_main(void *arg)
{
	struct opool_worker *w = arg;

	on_worker = true;
	/* top -H and tests tell the pool's threads by this name */
	pthread_setname_np(pthread_self(), OPOOL_THREAD_NAME);
	pthread_mutex_lock(&pool.lock);
	for (;;) {
		struct opool_job *j;
		uint64_t user_data;
		int ring_fd;

		while ((!pool.head || pool.held) && !pool.stop) {
			pool.idle++;
			pthread_cond_wait(&pool.work, &pool.lock);
			pool.idle--;
		}
		j = pool.head;
		if (!j)
			break;
		pool.head = j->next;
		if (!pool.head)
			pool.tail = &pool.head;
		if (j->lane) {
			/* a lane's turn: its next job, then the lane goes to
			   the back of the FIFO if it has more (other work
			   gets its turn meanwhile) */
			struct opool_lane *l = j->lane;

			j = l->head;
			l->head = j->next;
			pthread_mutex_unlock(&pool.lock);
			ring_fd = j->ring_fd;
			user_data = j->user_data;
			j->run(j);
			pthread_mutex_lock(&pool.lock);
			if (l->head)
				opool_enqueue(&l->runner);
			else
				l->active = false;
			pthread_mutex_unlock(&pool.lock);
			/* neither j nor l is touched after this: their
			   owner may go once it reaps the CQE */
			atomic_store_explicit(&j->posted, true,
					      memory_order_release);
			opool_post(&w->ring, ring_fd, user_data);
			pthread_mutex_lock(&pool.lock);
			continue;
		}
		pthread_mutex_unlock(&pool.lock);
		/* j belongs to its queue again once the CQE is posted */
		ring_fd = j->ring_fd;
		user_data = j->user_data;
		j->run(j);
		if (ring_fd >= 0) {
			atomic_store_explicit(&j->posted, true,
					      memory_order_release);
			opool_post(&w->ring, ring_fd, user_data);
		}
		pthread_mutex_lock(&pool.lock);
	}
	pthread_mutex_unlock(&pool.lock);
	return NULL;
}

/* In a child after fork: the workers did not come along; start afresh
   (jobs queued belong to the parent's queues). */
static void opool_atfork_child(void)
{
	for (unsigned i = 0; i < pool.nworkers; i++) {
		ring_unmapping();
		io_uring_queue_exit(&pool.workers[i].ring);
	}
	pthread_mutex_init(&pool.lock, NULL);
	pthread_cond_init(&pool.work, NULL);
	pool.head = NULL;
	pool.tail = &pool.head;
	pool.nworkers = pool.idle = 0;
}

static void opool_atfork_register(void)
{
	pthread_atfork(NULL, NULL, opool_atfork_child);
}

/* Whether the kernel can post to another ring (lock held). */
static bool opool_probe(struct io_uring *ring)
{
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	bool ok = p && io_uring_opcode_supported(p, IORING_OP_MSG_RING);

	io_uring_free_probe(p);
	return ok;
}

/* A worker's stack: 1 MiB, not glibc's 8 MiB (RLIMIT_STACK). Only
   touched pages are resident, but under transparent huge pages "always"
   (Debian's default) a stack mapping of 2 MiB or more that happens to be
   aligned takes a whole 2 MiB page at its first touch (ovkvm measured one
   worker at 2048 KiB for 20 KiB used); one under 2 MiB never does. Jobs
   are engine code (inflate, grain tables, allocating writes, a byte
   source's flush, which for rbd waits on librbd's own threads); the
   largest fixed frame in libblockengine is 12 KiB (objdump), a worker
   was measured at 20 KiB; an overflow hits the guard page and faults. */
#define OPOOL_STACK (1u << 20)

/* Starts one more worker (lock held). */
static int opool_spawn(void)
{
	struct opool_worker *w = &pool.workers[pool.nworkers];
	pthread_attr_t a;
	int ret;

	ret = io_uring_queue_init(2, &w->ring, 0);
	if (ret < 0)
		return ret;
	ring_mapped();
	if (!pool.usable) {
		if (!opool_probe(&w->ring)) {
			ret = -EOPNOTSUPP;
			goto err_exit_ring;
		}
		pool.usable = true;
		pthread_once(&pool_atfork_once, opool_atfork_register);
	}
	ret = -pthread_attr_init(&a);
	if (ret < 0)
		goto err_exit_ring;
	ret = -pthread_attr_setstacksize(&a, OPOOL_STACK);
	if (ret == 0)
		ret = -pthread_create(&w->tid, &a, opool_worker_main, w);
	pthread_attr_destroy(&a);
	if (ret < 0)
		goto err_exit_ring;
	pool.nworkers++;
	return 0;

err_exit_ring:
	ring_unmapping();
	io_uring_queue_exit(&w->ring);
	return ret;
}

/* Queues j for a pool of at least workers threads (see offload_pool.h). */
bool opool_submit(struct opool_job *j, unsigned workers)
{
	if (workers > OPOOL_MAX_WORKERS)
		workers = OPOOL_MAX_WORKERS;
	if (!workers)
		return false;
	pthread_mutex_lock(&pool.lock);
	while (!pool.broken && !pool.stop && pool.nworkers < workers)
		if (opool_spawn() < 0)
			pool.broken = true; /* run with what started */
	if (pool.stop || !pool.nworkers) {
		pthread_mutex_unlock(&pool.lock);
		return false;
	}
	j->lane = NULL;
	atomic_store_explicit(&j->posted, false, memory_order_relaxed);
	opool_enqueue(j);
	pthread_mutex_unlock(&pool.lock);
	return true;
}

/* Queues j on lane l (see offload_pool.h). */
bool opool_submit_lane(struct opool_lane *l, struct opool_job *j,
		       unsigned workers)
{
	if (workers > OPOOL_MAX_WORKERS)
		workers = OPOOL_MAX_WORKERS;
	if (!workers)
		workers = 1;
	pthread_mutex_lock(&pool.lock);
	while (!pool.broken && !pool.stop && pool.nworkers < workers)
		if (opool_spawn() < 0)
			pool.broken = true;
	if (pool.stop || !pool.nworkers) {
		pthread_mutex_unlock(&pool.lock);
		return false;
	}
	j->lane = NULL;
	j->next = NULL;
	atomic_store_explicit(&j->posted, false, memory_order_relaxed);
	if (l->head)
		l->last->next = j;
	else
		l->head = j;
	l->last = j;
	if (!l->active) {
		l->active = true;
		l->runner.lane = l;
		opool_enqueue(&l->runner);
	}
	pthread_mutex_unlock(&pool.lock);
	return true;
}

/* Holds the workers before their next job, or lets them go (tests). */
void opool_hold(bool hold)
{
	pthread_mutex_lock(&pool.lock);
	pool.held = hold;
	if (!hold)
		pthread_cond_broadcast(&pool.work);
	pthread_mutex_unlock(&pool.lock);
}

/* When the library unloads (or the program exits): workers finish what is
   queued and exit, so nothing they hold is left behind. */
__attribute__((destructor)) static void opool_exit(void)
{
	unsigned n;

	pthread_mutex_lock(&pool.lock);
	pool.stop = true;
	n = pool.nworkers;
	pthread_cond_broadcast(&pool.work);
	pthread_mutex_unlock(&pool.lock);
	for (unsigned i = 0; i < n; i++) {
		pthread_join(pool.workers[i].tid, NULL);
		ring_unmapping();
		io_uring_queue_exit(&pool.workers[i].ring);
	}
	pool.nworkers = 0;
}
