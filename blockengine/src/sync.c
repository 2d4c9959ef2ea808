/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sync.c - the blocking helpers (bdev_pread...): each runs one request on a
 * queue the calling thread creates on first use and frees when it exits.
 * They block anyway, so the request's blocking steps run on the calling
 * thread too, not in the offload pool: a caller that holds a disk's top
 * lock exclusive (bdev_commit_live) must not wait for pool workers that
 * may themselves wait for that lock.
 */
#include <pthread.h>
#include <string.h>

#include "request.h"

#define BDEV_THREAD_QUEUE_DEPTH 64

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
		bdev_blocking_enter();                                      \
		ret_ = bdev_wait(q_, &w_, call);                            \
		bdev_blocking_leave();                                      \
		return ret_;                                                \
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
