/* SPDX-License-Identifier: Apache-2.0 */
/* test_raw_io.c - reads and writes of a raw image through the async and
   blocking calls, with scatter-gather and unaligned offsets. */
#include <limits.h>
#include <poll.h>

#include "testutil.h"

#define IMG_SIZE (1u << 20)

static void count_cb(void *opaque, int ret)
{
	int *done = opaque;

	CHECK_EQ(ret, 0);
	(*done)++;
}

/* Async readv into three odd-sized buffers at an unaligned offset. */
static void test_async_scatter_read(struct bdev *b)
{
	struct bdev_queue *q;
	uint8_t a[3], c[5000], d[77];
	struct iovec iov[4] = { { a, sizeof(a) }, { NULL, 0 }, { c, sizeof(c) },
				{ d, sizeof(d) } };
	int done = 0;

	CHECK_EQ(bdev_queue_new(8, &q), 0);
	CHECK_EQ(bdev_aio_readv(q, b, 12345, iov, 4, count_cb, &done), 0);
	CHECK_EQ(done, 0); /* callbacks never run inside the queuing call */
	CHECK_EQ(bdev_queue_inflight(q), 1);
	while (done < 1)
		CHECK(bdev_queue_run(q, 1) >= 0);
	CHECK_EQ(bdev_queue_inflight(q), 0);
	CHECK_EQ(pattern_mismatch(a, sizeof(a), 12345), -1);
	CHECK_EQ(pattern_mismatch(c, sizeof(c), 12345 + 3), -1);
	CHECK_EQ(pattern_mismatch(d, sizeof(d), 12345 + 3 + 5000), -1);
	bdev_queue_free(q);
}

/* The queue's eventfd becomes readable for queued work, and running the
   queue then finishes it without blocking. */
static void test_eventfd(struct bdev *b)
{
	struct bdev_queue *q;
	struct pollfd pfd;
	uint8_t buf[512];
	struct iovec v = { buf, sizeof(buf) };
	uint64_t cnt;
	int done = 0;

	CHECK_EQ(bdev_queue_new(4, &q), 0);
	pfd = (struct pollfd){ .fd = bdev_queue_fd(q), .events = POLLIN };
	CHECK_EQ(poll(&pfd, 1, 0), 0);
	CHECK_EQ(bdev_aio_readv(q, b, 4096, &v, 1, count_cb, &done), 0);
	while (!done) {
		CHECK_EQ(poll(&pfd, 1, 5000), 1);
		CHECK_EQ(read(pfd.fd, &cnt, sizeof(cnt)), (ssize_t)sizeof(cnt));
		CHECK(bdev_queue_run(q, 0) >= 0);
	}
	CHECK_EQ(pattern_mismatch(buf, sizeof(buf), 4096), -1);
	bdev_queue_free(q);
}

/* The blocking helpers read what the file holds, up to the last byte. */
static void test_blocking_read(struct bdev *b)
{
	uint8_t buf[4099];

	CHECK_EQ(bdev_pread(b, buf, sizeof(buf), 1), 0);
	CHECK_EQ(pattern_mismatch(buf, sizeof(buf), 1), -1);
	CHECK_EQ(bdev_pread(b, buf, 10, IMG_SIZE - 10), 0);
	CHECK_EQ(pattern_mismatch(buf, 10, IMG_SIZE - 10), -1);
	CHECK_EQ(bdev_pread(b, buf, 0, IMG_SIZE), 0);
}

/* Out-of-range I/O fails before any driver runs, with a message naming the
   file, the offset and the size. */
static void test_out_of_range(struct bdev *b, const char *path)
{
	uint8_t buf[16];
	char want[64];

	CHECK_EQ(bdev_pread(b, buf, sizeof(buf), IMG_SIZE - 8), -EINVAL);
	CHECK(strstr(bdev_errmsg(), path));
	snprintf(want, sizeof(want), "offset %u", IMG_SIZE - 8);
	CHECK(strstr(bdev_errmsg(), want));
	CHECK(strstr(bdev_errmsg(), "1048576 bytes"));
	CHECK_EQ(bdev_pread(b, buf, 1, UINT64_MAX), -EINVAL);
	CHECK_EQ(bdev_pwrite(b, buf, 1, 0), -EROFS);
	CHECK(strstr(bdev_errmsg(), "read-only"));
	CHECK(strstr(bdev_errmsg(), path));
}

/* Writes through async writev and pwrite land in the file. */
static void test_write(const char *path)
{
	struct bdev_open_opts opts = { .flags = BDEV_O_RDWR };
	struct bdev_queue *q;
	struct bdev *b;
	uint8_t w1[100], w2[3000], r[3100], file[8192];
	struct iovec iov[2] = { { w1, sizeof(w1) }, { w2, sizeof(w2) } };
	int done = 0, fd;

	CHECK_EQ(bdev_open(path, &opts, &b), 0);
	memset(w1, 0xa5, sizeof(w1));
	memset(w2, 0x5a, sizeof(w2));
	CHECK_EQ(bdev_queue_new(4, &q), 0);
	CHECK_EQ(bdev_aio_writev(q, b, 7777, iov, 2, count_cb, &done), 0);
	CHECK_EQ(bdev_aio_flush(q, b, count_cb, &done), 0);
	while (done < 2)
		CHECK(bdev_queue_run(q, 1) >= 0);
	bdev_queue_free(q);
	CHECK_EQ(bdev_pread(b, r, sizeof(r), 7777), 0);
	CHECK(memcmp(r, w1, sizeof(w1)) == 0);
	CHECK(memcmp(r + sizeof(w1), w2, sizeof(w2)) == 0);

	CHECK_EQ(bdev_pwrite(b, "hello", 5, IMG_SIZE - 5), 0);
	CHECK_EQ(bdev_write_zeroes(b, 100000, 5000), 0);
	CHECK_EQ(bdev_discard(b, 200000, 8192), 0);
	CHECK_EQ(bdev_flush(b), 0);
	CHECK_EQ(bdev_close(b), 0);

	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(pread(fd, file, sizeof(file), 7777), (ssize_t)sizeof(file));
	CHECK(memcmp(file, r, sizeof(r)) == 0);
	CHECK_EQ(pread(fd, file, 5, IMG_SIZE - 5), 5);
	CHECK(memcmp(file, "hello", 5) == 0);
	CHECK_EQ(pread(fd, file, 5002, 99999), 5002);
	CHECK_EQ(file[0], pattern_byte(99999));
	for (int i = 1; i <= 5000; i++)
		CHECK_EQ(file[i], 0);
	CHECK_EQ(file[5001], pattern_byte(105000));
	CHECK_EQ(pread(fd, file, 8192, 200000), 8192);
	for (int i = 0; i < 8192; i++)
		CHECK_EQ(file[i], 0);
	close(fd);
}

/* Info and the single extent of a raw image. */
static void test_info(struct bdev *b, const char *path)
{
	struct bdev_info info;
	struct bdev_extent_info ext;
	uint64_t pnum = 0;

	CHECK_EQ(bdev_get_info(b, &info), 0);
	CHECK(strcmp(info.format, "raw") == 0);
	CHECK(strcmp(info.filename, path) == 0);
	CHECK_EQ(info.size, IMG_SIZE);
	CHECK_EQ(info.sector_size, 512);
	CHECK(info.read_only);
	CHECK_EQ(info.extent_count, 1);
	CHECK_EQ(bdev_get_extent(b, 0, &ext), 0);
	CHECK(strcmp(ext.type, "FLAT") == 0);
	CHECK_EQ(ext.size, IMG_SIZE);
	CHECK_EQ(bdev_get_extent(b, 1, &ext), -ENOENT);
	CHECK_EQ(bdev_block_status(b, 4096, IMG_SIZE, &pnum),
		 BDEV_STATUS_DATA);
	CHECK_EQ(pnum, IMG_SIZE - 4096);
	CHECK(bdev_backing(b) == NULL);
}

int main(void)
{
	char path[PATH_MAX];
	struct bdev *b;

	make_pattern_file(path, sizeof(path), IMG_SIZE, 0);
	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	test_info(b, path);
	test_async_scatter_read(b);
	test_blocking_read(b);
	test_eventfd(b);
	test_out_of_range(b, path);
	CHECK_EQ(bdev_close(b), 0);
	test_write(path);
	unlink(path);
	return 0;
}
