/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine_bench.c - 4 KiB reads of an image at a given queue depth,
 * for side-by-side runs against `qemu-img bench` (not a test: timings never
 * decide pass or fail).
 *   engine_bench IMAGE COUNT DEPTH [BUFSIZE [MODE]]
 * Offsets follow qemu-img bench's default pattern (each request BUFSIZE
 * after the previous, wrapping at the image's end) so both read the same.
 * MODE "w": writes at random BUFSIZE-aligned offsets instead (the image
 * opened read-write); "wc": the same with changed-block tracking on (a
 * checkpoint created before the timed run and deleted after), to measure
 * what tracking costs (bench/bench_ctk.sh).
 */
#include <time.h>

#include "testutil.h"

struct slot {
	uint8_t *buf;
	bool done;
	int ret;
};

static void slot_cb(void *opaque, int ret)
{
	struct slot *s = opaque;

	s->done = true;
	s->ret = ret;
}

/* A random bs-aligned offset of a request that fits in the image. */
static uint64_t next_off(uint64_t *seed, uint64_t size, size_t bs)
{
	*seed ^= *seed << 13;
	*seed ^= *seed >> 7;
	*seed ^= *seed << 17;
	return *seed % (size / bs) * bs;
}

int main(int argc, char **argv)
{
	uint64_t seed = 88172645463325252ull;
	bool write, track;
	struct bdev_open_opts opts = { .flags = BDEV_O_SHARE };
	struct bdev_queue *q;
	struct bdev_info info;
	struct slot *slots;
	struct timespec t0, t1;
	struct bdev *b;
	unsigned count, depth, started = 0, finished = 0;
	size_t bs;
	uint64_t off = 0;
	double secs;

	if (argc < 4) {
		fprintf(stderr, "usage: %s IMAGE COUNT DEPTH [BUFSIZE [w|wc]]\n", argv[0]);
		return 2;
	}
	count = (unsigned)strtoul(argv[2], NULL, 0);
	depth = (unsigned)strtoul(argv[3], NULL, 0);
	bs = argc > 4 ? strtoul(argv[4], NULL, 0) : 4096;
	write = argc > 5 && argv[5][0] == 'w';
	track = argc > 5 && !strcmp(argv[5], "wc");
	if (write)
		opts.flags = BDEV_O_RDWR;
	if (bdev_open(argv[1], &opts, &b) < 0 || bdev_get_info(b, &info) < 0 ||
	    bdev_queue_new(depth, &q) < 0 ||
	    (track && bdev_checkpoint_create(b, "engine_bench") < 0)) {
		fprintf(stderr, "%s\n", bdev_errmsg());
		return 1;
	}
	if (write)
		off = next_off(&seed, info.size, bs);
	slots = calloc(depth, sizeof(*slots));
	for (unsigned i = 0; i < depth; i++)
		slots[i].buf = aligned_alloc(4096, bs);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < depth && started < count; i++, started++) {
		struct iovec v = { slots[i].buf, bs };
		memset(slots[i].buf, 0x5a, bs);
		CHECK_EQ(write ? bdev_aio_writev(q, b, off, &v, 1, slot_cb, &slots[i])
			       : bdev_aio_readv(q, b, off, &v, 1, slot_cb, &slots[i]), 0);
		off = write ? next_off(&seed, info.size, bs) :
		      off + bs + bs > info.size ? 0 : off + bs;
	}
	while (finished < count) {
		CHECK(bdev_queue_run(q, 1) >= 0);
		for (unsigned i = 0; i < depth; i++) {
			struct iovec v = { slots[i].buf, bs };

			if (!slots[i].done)
				continue;
			CHECK_EQ(slots[i].ret, 0);
			slots[i].done = false;
			finished++;
			if (started < count) {
				CHECK_EQ(write ? bdev_aio_writev(q, b, off, &v, 1,
								 slot_cb, &slots[i])
					       : bdev_aio_readv(q, b, off, &v, 1,
								slot_cb, &slots[i]), 0);
				off = write ? next_off(&seed, info.size, bs) :
				      off + bs + bs > info.size ? 0 : off + bs;
				started++;
			}
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) +
	       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%u %s of %zu bytes at depth %u%s: %.3f s, %.0f IOPS\n",
	       count, write ? "random writes" : "requests", bs, depth,
	       track ? ", tracking changes" : "", secs, count / secs);
	if (track)
		CHECK_EQ(bdev_checkpoint_delete(b, "engine_bench"), 0);
	for (unsigned i = 0; i < depth; i++)
		free(slots[i].buf);
	free(slots);
	bdev_queue_free(q);
	bdev_close(b);
	return 0;
}
