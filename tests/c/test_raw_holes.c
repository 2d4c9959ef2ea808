/* SPDX-License-Identifier: Apache-2.0 */
/* test_raw_holes.c - the holes of a sparse raw file are ZERO runs for block
   status and reads, and writes into them land (also after the same thread
   asked about the hole). */
#include <limits.h>
#include <pthread.h>

#include "testutil.h"

#define MiB (1ull << 20)
#define IMG_SIZE (8 * MiB)
#define DATA_OFF (2 * MiB)
#define DATA_LEN (256u << 10)

/* A file of IMG_SIZE bytes, all hole but pattern at [DATA_OFF, +DATA_LEN).
   Returns false when the file system does not report holes. */
static bool make_sparse_file(char *path, size_t pathlen)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	static uint8_t buf[DATA_LEN];
	off_t d;
	int fd;

	snprintf(path, pathlen, "%s/ovk-holes-XXXXXX", dir);
	fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK_EQ(ftruncate(fd, IMG_SIZE), 0);
	pattern_fill(buf, sizeof(buf), DATA_OFF);
	CHECK_EQ(pwrite(fd, buf, sizeof(buf), DATA_OFF), (ssize_t)sizeof(buf));
	CHECK_EQ(fsync(fd), 0);
	d = lseek(fd, 0, SEEK_DATA);
	close(fd);
	return d == (off_t)DATA_OFF;
}

/* Block status walks hole, data, hole. */
static void test_status(struct bdev *b)
{
	uint64_t pnum = 0;

	CHECK_EQ(bdev_block_status(b, 0, IMG_SIZE, &pnum), BDEV_STATUS_ZERO);
	CHECK_EQ(pnum, DATA_OFF);
	CHECK_EQ(bdev_block_status(b, 4096, MiB, &pnum), BDEV_STATUS_ZERO);
	CHECK_EQ(pnum, MiB);
	CHECK_EQ(bdev_block_status(b, DATA_OFF, IMG_SIZE - DATA_OFF, &pnum),
		 BDEV_STATUS_DATA);
	CHECK_EQ(pnum, DATA_LEN);
	CHECK_EQ(bdev_block_status(b, DATA_OFF + 512, 4096, &pnum),
		 BDEV_STATUS_DATA);
	CHECK_EQ(pnum, 4096);
	CHECK_EQ(bdev_block_status(b, DATA_OFF + DATA_LEN,
				   IMG_SIZE - DATA_OFF - DATA_LEN, &pnum),
		 BDEV_STATUS_ZERO);
	CHECK_EQ(pnum, IMG_SIZE - DATA_OFF - DATA_LEN);
}

/* A read across hole and data sees zeros and the pattern. */
static void test_read_across(struct bdev *b)
{
	uint64_t off = DATA_OFF - 5000, len = DATA_LEN + 10000;
	uint8_t *buf = malloc(len);

	CHECK(buf);
	memset(buf, 0xaa, len);
	CHECK_EQ(bdev_pread(b, buf, len, off), 0);
	for (uint64_t i = 0; i < 5000; i++)
		CHECK_EQ(buf[i], 0);
	CHECK_EQ(pattern_mismatch(buf + 5000, DATA_LEN, DATA_OFF), -1);
	for (uint64_t i = 5000 + DATA_LEN; i < len; i++)
		CHECK_EQ(buf[i], 0);
	free(buf);
}

struct reader {
	struct bdev *b;
	uint64_t off;
	uint8_t buf[4096];
};

static void *read_in_thread(void *opaque)
{
	struct reader *r = opaque;

	CHECK_EQ(bdev_pread(r->b, r->buf, sizeof(r->buf), r->off), 0);
	return NULL;
}

/* A hole this thread and another read as zeros, then written, reads back
   what was written in both threads; discard of a hole stays zeros. */
static void test_write_into_hole(const char *path)
{
	struct bdev_open_opts o = { .flags = BDEV_O_RDWR };
	struct reader rd = { .off = 5 * MiB };
	uint8_t buf[4096], want[4096];
	uint64_t pnum;
	pthread_t t;
	struct bdev *b;

	CHECK_EQ(bdev_open(path, &o, &b), 0);
	rd.b = b;
	CHECK_EQ(bdev_pread(b, buf, sizeof(buf), 5 * MiB), 0);
	CHECK(pthread_create(&t, NULL, read_in_thread, &rd) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		CHECK_EQ(buf[i] | rd.buf[i], 0);
	CHECK_EQ(bdev_block_status(b, 5 * MiB, 4096, &pnum), BDEV_STATUS_ZERO);

	pattern_fill(want, sizeof(want), 5 * MiB);
	CHECK_EQ(bdev_pwrite(b, want, sizeof(want), 5 * MiB), 0);
	CHECK_EQ(bdev_pread(b, buf, sizeof(buf), 5 * MiB), 0);
	CHECK_EQ(pattern_mismatch(buf, sizeof(buf), 5 * MiB), -1);
	CHECK_EQ(bdev_block_status(b, 5 * MiB, 4096, &pnum), BDEV_STATUS_DATA);
	CHECK(pthread_create(&t, NULL, read_in_thread, &rd) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK_EQ(pattern_mismatch(rd.buf, sizeof(rd.buf), 5 * MiB), -1);

	CHECK_EQ(bdev_discard(b, 6 * MiB, MiB), 0);
	CHECK_EQ(bdev_write_zeroes(b, 7 * MiB, 4096), 0);
	CHECK_EQ(bdev_pread(b, buf, sizeof(buf), 6 * MiB), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		CHECK_EQ(buf[i], 0);
	CHECK_EQ(bdev_close(b), 0);
}

/* A 2 TiB file with nothing in it is one ZERO run, answered at once. */
static void test_huge_hole(void)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	uint64_t size = 2ull << 40, pnum = 0;
	char path[PATH_MAX];
	struct bdev *b;
	int fd;

	snprintf(path, sizeof(path), "%s/ovk-holes-XXXXXX", dir);
	fd = mkstemp(path);
	CHECK(fd >= 0);
	if (ftruncate(fd, (off_t)size) != 0) {
		fprintf(stderr, "skip 2 TiB hole: ftruncate: %s\n",
			strerror(errno));
		close(fd);
		unlink(path);
		return;
	}
	close(fd);
	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	CHECK_EQ(bdev_block_status(b, 0, size, &pnum), BDEV_STATUS_ZERO);
	CHECK_EQ(pnum, size);
	CHECK_EQ(bdev_block_status(b, size - 512, 512, &pnum),
		 BDEV_STATUS_ZERO);
	CHECK_EQ(pnum, 512);
	CHECK_EQ(bdev_close(b), 0);
	unlink(path);
}

int main(void)
{
	char path[PATH_MAX];
	struct bdev *b;

	if (!make_sparse_file(path, sizeof(path))) {
		fprintf(stderr, "SKIP: %s does not report holes\n", path);
		unlink(path);
		return 77;
	}
	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	test_status(b);
	test_read_across(b);
	test_status(b); /* answers remembered by this thread still hold */
	CHECK_EQ(bdev_close(b), 0);
	test_write_into_hole(path);
	unlink(path);
	test_huge_hole();
	return 0;
}
