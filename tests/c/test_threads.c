/* SPDX-License-Identifier: Apache-2.0 */
/* test_threads.c - many threads, each with its own queue, read random
   ranges of one image at once; a queue holds more requests than its ring. */
#include <limits.h>
#include <pthread.h>

#include "testutil.h"

#define IMG_SIZE (4u << 20)
#define NTHREADS 8
#define PER_THREAD 300
#define DEPTH 8

struct slot {
	uint8_t *buf;
	uint64_t off;
	size_t len;
	int ret;
	bool done;
};

static struct bdev *img;

static void slot_cb(void *opaque, int ret)
{
	struct slot *s = opaque;

	s->ret = ret;
	s->done = true;
}

static uint64_t rng_next(uint64_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 7;
	*st ^= *st << 17;
	return *st;
}

/* Checks a finished slot against the pattern. */
static void slot_verify(struct slot *s)
{
	CHECK_EQ(s->ret, 0);
	CHECK_EQ(pattern_mismatch(s->buf, s->len, s->off), -1);
}

/* Starts a read of a random range split over two iovecs. */
static void slot_start(struct bdev_queue *q, struct slot *s, uint64_t *rng)
{
	struct iovec iov[2];
	size_t cut;

	s->len = 1 + rng_next(rng) % 65536;
	s->off = rng_next(rng) % (IMG_SIZE - s->len + 1);
	s->done = false;
	memset(s->buf, 0, s->len);
	cut = rng_next(rng) % (s->len + 1);
	iov[0] = (struct iovec){ s->buf, cut };
	iov[1] = (struct iovec){ s->buf + cut, s->len - cut };
	CHECK_EQ(bdev_aio_readv(q, img, s->off, iov, 2, slot_cb, s), 0);
}

static void *reader(void *arg)
{
	uint64_t rng = 0x1234567ull * ((uintptr_t)arg + 1);
	struct slot slots[DEPTH];
	struct bdev_queue *q;
	int started = 0, finished = 0;
	uint8_t small[777];

	CHECK_EQ(bdev_queue_new(DEPTH, &q), 0);
	for (int i = 0; i < DEPTH; i++) {
		slots[i].buf = malloc(65536);
		CHECK(slots[i].buf);
		slot_start(q, &slots[i], &rng);
		started++;
	}
	while (finished < started) {
		CHECK(bdev_queue_run(q, 1) >= 0);
		for (int i = 0; i < DEPTH; i++) {
			if (!slots[i].done)
				continue;
			slot_verify(&slots[i]);
			finished++;
			if (started < PER_THREAD) {
				slot_start(q, &slots[i], &rng);
				started++;
			} else {
				slots[i].done = false;
				slots[i].len = 0;
			}
		}
	}
	/* the blocking helpers use a per-thread queue freed at thread exit */
	CHECK_EQ(bdev_pread(img, small, sizeof(small), 4093), 0);
	CHECK_EQ(pattern_mismatch(small, sizeof(small), 4093), -1);
	for (int i = 0; i < DEPTH; i++)
		free(slots[i].buf);
	bdev_queue_free(q);
	return NULL;
}

static void count_cb(void *opaque, int ret)
{
	CHECK_EQ(ret, 0);
	(*(int *)opaque)++;
}

/* 200 requests queued on a ring of 4 before anything runs. */
static void test_more_than_ring(void)
{
	enum { N = 200 };
	static uint8_t bufs[N][512];
	struct bdev_queue *q;
	int done = 0;

	CHECK_EQ(bdev_queue_new(4, &q), 0);
	for (int i = 0; i < N; i++) {
		struct iovec v = { bufs[i], sizeof(bufs[i]) };
		CHECK_EQ(bdev_aio_readv(q, img, (uint64_t)i * 9999, &v, 1,
					count_cb, &done), 0);
	}
	CHECK_EQ(done, 0);
	CHECK_EQ(bdev_queue_inflight(q), N);
	while (bdev_queue_inflight(q))
		CHECK(bdev_queue_run(q, 1) >= 0);
	CHECK_EQ(done, N);
	for (int i = 0; i < N; i++)
		CHECK_EQ(pattern_mismatch(bufs[i], 512, (uint64_t)i * 9999), -1);
	/* freeing a queue with requests in flight finishes them first */
	for (int i = 0; i < 10; i++) {
		struct iovec v = { bufs[i], sizeof(bufs[i]) };
		CHECK_EQ(bdev_aio_readv(q, img, 0, &v, 1, count_cb, &done), 0);
	}
	bdev_queue_free(q);
	CHECK_EQ(done, N + 10);
}

/* A callback that queues the next read from inside bdev_queue_run(). */
struct chain {
	struct bdev_queue *q;
	uint8_t buf[100];
	int left;
};

static void chain_cb(void *opaque, int ret)
{
	struct chain *c = opaque;
	struct iovec v = { c->buf, sizeof(c->buf) };

	CHECK_EQ(ret, 0);
	CHECK_EQ(pattern_mismatch(c->buf, sizeof(c->buf),
				  (uint64_t)c->left * 1000), -1);
	if (--c->left > 0)
		CHECK_EQ(bdev_aio_readv(c->q, img, (uint64_t)c->left * 1000, &v,
					1, chain_cb, c), 0);
}

static void test_requeue_from_callback(void)
{
	struct chain c = { .left = 50 };
	struct iovec v = { c.buf, sizeof(c.buf) };

	CHECK_EQ(bdev_queue_new(2, &c.q), 0);
	CHECK_EQ(bdev_aio_readv(c.q, img, 50000, &v, 1, chain_cb, &c), 0);
	while (c.left > 0)
		CHECK(bdev_queue_run(c.q, 1) >= 0);
	bdev_queue_free(c.q);
}

int main(void)
{
	pthread_t th[NTHREADS];
	char path[PATH_MAX];

	make_pattern_file(path, sizeof(path), IMG_SIZE, 0);
	CHECK_EQ(bdev_open(path, NULL, &img), 0);
	for (uintptr_t i = 0; i < NTHREADS; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, reader, (void *)i), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	test_more_than_ring();
	test_requeue_from_callback();
	CHECK_EQ(bdev_close(img), 0);
	unlink(path);
	return 0;
}
