/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_copy.c - bdev_copy and bdev_all_zero: a raw disk with data grains,
 * zero grains and a partial last sector copied into a monolithicSparse
 * writer by several workers reads back the same (padded with zeros), only
 * the non-zero grains are written, progress sees every byte once, a
 * progress callback can stop the copy, and bad options are refused.
 */
#include <limits.h>
#include <stdatomic.h>

#include "testutil.h"

#define GRAIN 65536u
#define DISK_SIZE (9u * GRAIN + 100u) /* not a whole sector */
#define PADDED ((DISK_SIZE + 511u) & ~511u)

static char dir[] = "/tmp/ovk-copy-XXXXXX";

/* Grain g holds pattern data when g % 3 != 1, zeros otherwise. */
static void make_source(const char *path, uint8_t *disk)
{
	int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);

	memset(disk, 0, PADDED);
	for (uint64_t off = 0; off < DISK_SIZE; off += GRAIN) {
		size_t n = DISK_SIZE - off < GRAIN ? DISK_SIZE - off : GRAIN;
		if ((off / GRAIN) % 3 != 1)
			pattern_fill(disk + off, n, off);
	}
	CHECK(fd >= 0);
	CHECK(pwrite(fd, disk, DISK_SIZE, 0) == (ssize_t)DISK_SIZE);
	close(fd);
}

struct progress {
	uint64_t last, total;
	unsigned calls;
	uint64_t stop_after; /* 0 = never */
};

static int on_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct progress *p = opaque;

	CHECK(done > p->last); /* one call at a time, growing */
	p->last = done;
	p->total = total;
	p->calls++;
	return p->stop_after && done >= p->stop_after ? -EINTR : 0;
}

static void test_copy_reads_back(const char *src_path, const uint8_t *disk)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "monolithicSparse",
				       .size = PADDED };
	struct progress pr = { 0 };
	struct bdev_copy_opts cp = { .threads = 3, .chunk = 2 * GRAIN,
				     .progress = on_progress, .opaque = &pr,
				     .struct_size = sizeof(cp) };
	char dst[PATH_MAX];
	struct bdev *src, *out;
	struct bdev_writer *w;
	uint64_t written = 0;
	uint8_t *back = malloc(PADDED);

	CHECK(back);
	snprintf(dst, sizeof(dst), "%s/copy.vmdk", dir);
	CHECK_EQ(bdev_open(src_path, NULL, &src), 0);
	CHECK_EQ(bdev_writer_new(dst, &co, &w), 0);
	CHECK_EQ(bdev_copy(src, w, &cp, &written), 0);
	CHECK_EQ(bdev_writer_close(w), 0);
	/* grains 0, 2, 3, 5, 6, 8 and the padded partial grain 9 */
	CHECK_EQ(written, 6u * GRAIN + (PADDED - 9u * GRAIN));
	CHECK_EQ(pr.last, PADDED);
	CHECK_EQ(pr.total, PADDED);
	CHECK_EQ(pr.calls, 5); /* five chunks of two grains */
	CHECK_EQ(bdev_open(dst, NULL, &out), 0);
	CHECK_EQ(bdev_pread(out, back, PADDED, 0), 0);
	CHECK(memcmp(back, disk, PADDED) == 0);
	bdev_close(out);
	bdev_close(src);
	free(back);
}

static void test_copy_stops(const char *src_path)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "streamOptimized",
				       .size = PADDED };
	struct progress pr = { .stop_after = 1 };
	struct bdev_copy_opts cp = { .threads = 1, .progress = on_progress,
				     .opaque = &pr, .chunk = GRAIN,
				     .struct_size = sizeof(cp) };
	char dst[PATH_MAX];
	struct bdev *src;
	struct bdev_writer *w;

	snprintf(dst, sizeof(dst), "%s/stopped.vmdk", dir);
	CHECK_EQ(bdev_open(src_path, NULL, &src), 0);
	CHECK_EQ(bdev_writer_new(dst, &co, &w), 0);
	CHECK_EQ(bdev_copy(src, w, &cp, NULL), -EINTR);
	CHECK(strstr(bdev_errmsg(), "progress callback"));
	CHECK_EQ(pr.calls, 1);
	cp.threads = 1000;
	CHECK_EQ(bdev_copy(src, w, &cp, NULL), -EINVAL);
	bdev_writer_abort(w);
	bdev_close(src);
}

static void test_all_zero(void)
{
	uint8_t buf[100] = { 0 };

	CHECK(bdev_all_zero(buf, 0));
	CHECK(bdev_all_zero(buf, sizeof(buf)));
	CHECK(bdev_all_zero(buf, 7));
	buf[99] = 1;
	CHECK(!bdev_all_zero(buf, sizeof(buf)));
	CHECK(bdev_all_zero(buf, 99));
	buf[3] = 1;
	CHECK(!bdev_all_zero(buf, 7));
}

int main(void)
{
	char src[PATH_MAX];
	uint8_t *disk = malloc(PADDED);

	CHECK(disk);
	CHECK(mkdtemp(dir));
	snprintf(src, sizeof(src), "%s/src.raw", dir);
	make_source(src, disk);
	test_all_zero();
	test_copy_reads_back(src, disk);
	test_copy_stops(src);
	test_run("rm -rf %s", dir);
	free(disk);
	return 0;
}
