/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loop.c - vmdkfs's own request loop over a FUSE session, in place of
 * libfuse's fuse_loop_mt.
 *
 * libfuse's loop keeps every idle worker blocked in read() on /dev/fuse,
 * and the kernel wakes such readers first-in first-out: at depth 1 each
 * request landed on the coldest of 16 threads (its stack, its engine
 * io_uring, its caches). Here at most LOOP_READERS workers read at a time;
 * a worker done with its request reads again if fewer do or a request is
 * already waiting, else it waits on its own semaphore on a stack of
 * followers, most recently idle on top. A worker that takes a request
 * while no one else reads promotes the top follower (or starts a worker,
 * up to the bound) when its request may block - anything but a small
 * read or write: fsync, lookups, guest files - or another request already
 * waits. So at depth 1 the same hot thread(s) serve everything, as with
 * -s, while at depth 32 the pool grows and its workers loop without
 * sleeping, and a slow request never leaves the device unread.
 */
#include "vmdkfs.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Workers in read() at once, unless requests are waiting: two take turns
 * at depth 1 (one would do; two also start both halves of a 1 MiB read of
 * a read-only mount at once, with no hand-over in between). */
#ifndef LOOP_READERS
#define LOOP_READERS 2
#endif

/* Interrupts a reader's read() at exit (pthread_cancel would unwind
 * through our frames, which AddressSanitizer cannot follow). */
#define LOOP_KICK_SIGNAL SIGUSR1

/* Reads and writes up to this size are served without waking a follower
 * when nothing else is waiting. */
#define LOOP_FAST_IO_MAX (128u << 10)

struct worker {
	struct loop *lp;
	pthread_t thread;
	bool reading;          /* in (or about to enter) read() */
	bool done;             /* returned */
	sem_t wake;            /* posted when promoted to reader, or at exit */
	struct worker *next;   /* on lp->idle */
	struct fuse_buf fbuf;  /* libfuse's receive buffer, kept per thread */
};

struct loop {
	struct fuse_session *se;
	int fd;
	pthread_mutex_t lock;
	unsigned readers;      /* workers in read(), or told to read */
	unsigned max_readers;  /* beyond these, only while requests wait */
	struct worker *idle;   /* followers, most recently idle first */
	unsigned nworkers, max_workers;
	atomic_bool exit;
	int error;
	sem_t *finish;
	struct worker w[];
};

/* Whether the request in w->fbuf is a small read or write. */
static bool request_is_fast(const struct worker *w)
{
	const struct fuse_in_header *in = w->fbuf.mem;
	const void *arg = in + 1;

	if ((w->fbuf.flags & FUSE_BUF_IS_FD) || w->fbuf.size < sizeof(*in))
		return false;
	switch (in->opcode) {
	case FUSE_READ:
		return w->fbuf.size >= sizeof(*in) + sizeof(struct fuse_read_in) &&
		       ((const struct fuse_read_in *)arg)->size <=
		       LOOP_FAST_IO_MAX;
	case FUSE_WRITE:
		return w->fbuf.size >= sizeof(*in) + sizeof(struct fuse_write_in) &&
		       ((const struct fuse_write_in *)arg)->size <=
		       LOOP_FAST_IO_MAX;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
		return true;
	default:
		return false;
	}
}

static bool request_pending(struct loop *lp)
{
	struct pollfd p = { .fd = lp->fd, .events = POLLIN };

	return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static void *worker_main(void *arg);

/* Starts worker slot i as a new reader; lp->lock held. Workers block the
 * exit signals, as libfuse's do, so they reach the main thread. */
static int worker_start(struct loop *lp, unsigned i)
{
	struct worker *w = &lp->w[i];
	sigset_t block, old;
	int ret;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGQUIT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	ret = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret != 0)
		return -ret;
	lp->nworkers++;
	return 0;
}

/* Hands the read to the most recently idle follower, or to a new worker;
 * lp->lock held. With neither, the next worker to finish reads. */
static void promote(struct loop *lp)
{
	struct worker *f = lp->idle;

	if (f) {
		lp->idle = f->next;
		lp->readers++;
		sem_post(&f->wake);
	} else if (lp->nworkers < lp->max_workers &&
		   worker_start(lp, lp->nworkers) == 0) {
		lp->readers++;
	}
}

/* Whether a worker done with its request should read the next one (else
 * it waits as a follower); lp->lock held, dropped around the poll. */
static bool should_read(struct loop *lp)
{
	bool pending;

	if (lp->readers < lp->max_readers)
		return true;
	pthread_mutex_unlock(&lp->lock);
	pending = request_pending(lp);
	pthread_mutex_lock(&lp->lock);
	return pending || lp->readers < lp->max_readers;
}

/* Whether a worker that took a request should promote a follower to read
 * while it serves it; lp->lock held, dropped around the poll. */
static bool should_promote(struct loop *lp, bool fast)
{
	bool pending;

	if (lp->readers > 0 || lp->exit)
		return false;
	if (!fast)
		return true;
	pthread_mutex_unlock(&lp->lock);
	pending = request_pending(lp);
	pthread_mutex_lock(&lp->lock);
	return pending && lp->readers == 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct loop *lp = w->lp;
	bool promoted = true; /* a new worker starts as a reader */
	bool fast;
	int res;

	pthread_setname_np(pthread_self(), "vmdkfs-worker");
	pthread_mutex_lock(&lp->lock);
	for (;;) {
		if (atomic_load(&lp->exit))
			break;
		if (promoted) {
			/* promote() counted us among the readers */
		} else if (should_read(lp)) {
			lp->readers++;
		} else if (atomic_load(&lp->exit)) {
			/* should_read dropped the lock: stop_workers may have
			 * emptied the idle stack meanwhile and would never
			 * wake a follower pushed after it */
			break;
		} else {
			w->next = lp->idle;
			lp->idle = w;
			pthread_mutex_unlock(&lp->lock);
			while (sem_wait(&w->wake) < 0 && errno == EINTR)
				;
			pthread_mutex_lock(&lp->lock);
			if (atomic_load(&lp->exit))
				break;
		}
		promoted = false;
		w->reading = true;
		pthread_mutex_unlock(&lp->lock);
		/* Unmounting ends the read (ENODEV); at exit, LOOP_KICK_SIGNAL
		 * interrupts it and libfuse returns 0 for an exited session. */
		res = fuse_session_receive_buf(lp->se, &w->fbuf);
		fast = res > 0 && request_is_fast(w);
		pthread_mutex_lock(&lp->lock);
		w->reading = false;
		lp->readers--;
		if (atomic_load(&lp->exit))
			break;
		if (res == -EINTR)
			continue;
		if (res <= 0) {
			if (res < 0) {
				lp->error = res;
				fuse_session_exit(lp->se);
			}
			sem_post(lp->finish);
			break;
		}
		if (should_promote(lp, fast))
			promote(lp);
		pthread_mutex_unlock(&lp->lock);
		fuse_session_process_buf(lp->se, &w->fbuf);
		pthread_mutex_lock(&lp->lock);
	}
	w->done = true;
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}

static void on_kick(int sig)
{
	(void)sig; /* only there to interrupt read() */
}

/* Ends every worker: wakes the followers, interrupts the readers (again
 * until they are out: a signal that lands just before read() is lost)
 * and lets busy ones finish their request. */
static void stop_workers(struct loop *lp)
{
	unsigned i;
	bool all_done;

	pthread_mutex_lock(&lp->lock);
	atomic_store(&lp->exit, true);
	while (lp->idle) {
		struct worker *w = lp->idle;

		lp->idle = w->next;
		sem_post(&w->wake);
	}
	for (;;) {
		all_done = true;
		for (i = 0; i < lp->nworkers; i++) {
			if (lp->w[i].done)
				continue;
			all_done = false;
			if (lp->w[i].reading)
				pthread_kill(lp->w[i].thread, LOOP_KICK_SIGNAL);
		}
		pthread_mutex_unlock(&lp->lock);
		if (all_done)
			break;
		usleep(2000);
		pthread_mutex_lock(&lp->lock);
	}
	for (i = 0; i < lp->nworkers; i++)
		pthread_join(lp->w[i].thread, NULL);
}

int vmdkfs_loop(struct fuse *f, unsigned max_workers,
		enum vmdkfs_uring_mode uring, sem_t *finish)
{
	struct fuse_session *se = fuse_get_session(f);
	struct vmdkfs_uring *ur = NULL;
	struct sigaction sa;
	struct loop *lp;
	unsigned i;
	int ret;

	if (max_workers < 1)
		max_workers = 1;
	lp = calloc(1, sizeof(*lp) + max_workers * sizeof(lp->w[0]));
	if (!lp)
		return -ENOMEM;
	lp->se = se;
	lp->fd = fuse_session_fd(se);
	lp->max_workers = max_workers;
	lp->finish = finish;
	lp->max_readers = LOOP_READERS;
	atomic_init(&lp->exit, false);
	pthread_mutex_init(&lp->lock, NULL);
	for (i = 0; i < max_workers; i++) {
		lp->w[i].lp = lp;
		sem_init(&lp->w[i].wake, 0, 0);
	}
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_kick; /* no SA_RESTART: read() fails with EINTR */
	sigaction(LOOP_KICK_SIGNAL, &sa, NULL);
	/* -o remember: libfuse's loops run this thread too */
	ret = fuse_start_cleanup_thread(f);
	if (ret != 0) {
		ret = -ENOMEM;
		goto err_free_loop;
	}
	/* before the first read: INIT decides whether the ring is used */
	ret = vmdkfs_uring_start(se, uring, &ur);
	if (ret < 0)
		goto err_stop_cleanup;
	pthread_mutex_lock(&lp->lock);
	lp->readers = 1;
	ret = worker_start(lp, 0);
	pthread_mutex_unlock(&lp->lock);
	if (ret < 0)
		goto err_stop_cleanup;

	/* sem_wait returns early on a signal; the handler posts it too. */
	while (!fuse_session_exited(se))
		sem_wait(finish);

	stop_workers(lp);
	ret = lp->error;
err_stop_cleanup:
	vmdkfs_uring_stop(ur);
	fuse_stop_cleanup_thread(f);
err_free_loop:
	for (i = 0; i < max_workers; i++) {
		free(lp->w[i].fbuf.mem);
		sem_destroy(&lp->w[i].wake);
	}
	pthread_mutex_destroy(&lp->lock);
	free(lp);
	fuse_session_reset(se);
	return ret;
}
