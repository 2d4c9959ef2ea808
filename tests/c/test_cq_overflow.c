/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_cq_overflow.c - a queue with far more pieces in flight than its
 * completion ring has entries, driven the way an event loop drives it
 * (poll the queue's eventfd, then bdev_queue_run(q, 0)): every request
 * completes, with the right bytes. On Linux 6.1 (Debian 12) completions
 * that find the ring full wait on an overflow list that only an
 * io_uring_enter with GETEVENTS drains, with no new eventfd signal; a
 * queue that only peeked stalled after 16 of 64 reads at depth 4.
 * tests/test_engine_debian_kernel.py runs this on that kernel.
 */
#include <limits.h>
#include <poll.h>

#include "testutil.h"

#define IMG_SIZE (16u << 20)
#define NREQ 4000u
#define BLK 4096u

static uint8_t bufs[NREQ][BLK];

static void count_cb(void *opaque, int ret)
{
	unsigned *done = opaque;

	CHECK_EQ(ret, 0);
	(*done)++;
}

/* Runs q until done reaches n, waiting only on its eventfd; fails when
   nothing completes for 10 s. */
static void run_until(struct bdev_queue *q, const unsigned *done, unsigned n,
		      const char *what)
{
	struct pollfd pfd = { .fd = bdev_queue_fd(q), .events = POLLIN };
	uint64_t cnt;

	while (*done < n) {
		int r = poll(&pfd, 1, 10000);

		if (r == 0) {
			fprintf(stderr, "%s: stalled: %u of %u requests done, "
				"%u in flight, no eventfd signal for 10 s\n",
				what, *done, n, bdev_queue_inflight(q));
			exit(1);
		}
		CHECK_EQ(r, 1);
		CHECK_EQ(read(pfd.fd, &cnt, sizeof(cnt)), (ssize_t)sizeof(cnt));
		CHECK(bdev_queue_run(q, 0) >= 0);
	}
}

int main(void)
{
	char path[PATH_MAX];
	struct bdev_open_opts o = { .flags = BDEV_O_RDWR };
	struct bdev_queue *q;
	struct bdev *b;
	struct iovec v[NREQ];
	unsigned done = 0;

	make_pattern_file(path, sizeof(path), IMG_SIZE, 0);
	CHECK_EQ(bdev_open(path, &o, &b), 0);
	CHECK_EQ(bdev_queue_new(4, &q), 0); /* 16 completion entries */

	/* NREQ reads at once, each its own piece */
	for (unsigned i = 0; i < NREQ; i++) {
		v[i] = (struct iovec){ bufs[i], BLK };
		CHECK_EQ(bdev_aio_readv(q, b, (uint64_t)i * BLK, &v[i], 1,
					count_cb, &done), 0);
	}
	run_until(q, &done, NREQ, "reads");
	for (unsigned i = 0; i < NREQ; i++)
		CHECK_EQ(pattern_mismatch(bufs[i], BLK, (uint64_t)i * BLK), -1);

	/* and as many writes of the next block's pattern, read back after */
	done = 0;
	for (unsigned i = 0; i < NREQ; i++) {
		pattern_fill(bufs[i], BLK, (uint64_t)(i + 1) * BLK);
		CHECK_EQ(bdev_aio_writev(q, b, (uint64_t)i * BLK, &v[i], 1,
					 count_cb, &done), 0);
	}
	run_until(q, &done, NREQ, "writes");
	for (unsigned i = 0; i < NREQ; i++) {
		uint8_t back[BLK];

		CHECK_EQ(bdev_pread(b, back, BLK, (uint64_t)i * BLK), 0);
		CHECK_EQ(pattern_mismatch(back, BLK, (uint64_t)(i + 1) * BLK), -1);
	}
	bdev_queue_free(q);
	CHECK_EQ(bdev_close(b), 0);
	unlink(path);
	printf("ok: %u reads and %u writes through 16 completion entries\n",
	       NREQ, NREQ);
	return 0;
}
