/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_limits_flags.c - bdev_get_limits (a growable struct) and the
 * per-request flags: FUA makes a VMDK write's grain tables reach the file
 * before the callback (a copy of the file taken then reads the data back
 * with qemu-img), NO_HOLE leaves zeroed ranges allocated, FAST_ZERO fails
 * with -ENOTSUP where zeroing would write zero bytes, and flags an
 * operation does not take are refused before anything is queued.
 */
#include <stddef.h>
#include <sys/stat.h>

#include "testutil.h"

static char dir[256];

struct done {
	bool done;
	int ret;
};

static void done_cb(void *opaque, int ret)
{
	struct done *d = opaque;

	d->done = true;
	d->ret = ret;
}

/* Runs q until d is done; returns the request's result. */
static int wait_done(struct bdev_queue *q, struct done *d, int queued)
{
	if (queued < 0)
		return queued;
	while (!d->done)
		CHECK(bdev_queue_run(q, 1) >= 0);
	return d->ret;
}

static int zeroes(struct bdev_queue *q, struct bdev *b, uint64_t off,
		  uint64_t len, unsigned flags)
{
	struct done d = { 0 };

	return wait_done(q, &d, bdev_aio_write_zeroes_flags(q, b, off, len,
							   flags, done_cb, &d));
}

static int writev_flags(struct bdev_queue *q, struct bdev *b, uint64_t off,
			void *buf, size_t len, unsigned flags)
{
	struct iovec v = { buf, len };
	struct done d = { 0 };

	return wait_done(q, &d, bdev_aio_writev_flags(q, b, off, &v, 1, flags,
						      done_cb, &d));
}

static struct bdev *open_rw(const char *path)
{
	struct bdev_open_opts o = { .flags = BDEV_O_RDWR };
	struct bdev *b;

	CHECK_EQ(bdev_open(path, &o, &b), 0);
	return b;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void test_limits(void)
{
	char raw[300], vmdk[300];
	struct bdev_limits l;
	struct bdev *b;

	snprintf(raw, sizeof(raw), "%s/l.raw", dir);
	snprintf(vmdk, sizeof(vmdk), "%s/l.vmdk", dir);
	test_run("qemu-img create -q -f raw %s 8M", raw);
	{
		struct bdev_create_opts co = { .size = 8 << 20,
					       .grain_size = 131072 };
		CHECK_EQ(bdev_create(vmdk, &co), 0);
	}

	b = open_rw(raw);
	memset(&l, 0xaa, sizeof(l));
	l.struct_size = sizeof(l);
	CHECK_EQ(bdev_get_limits(b, &l), 0);
	CHECK_EQ(l.struct_size, sizeof(l));
	CHECK(l.can_write && l.can_flush && l.can_fua && l.can_discard &&
	      l.can_write_zeroes && l.can_fast_zero && l.can_track_changes);
	CHECK(!l.can_snapshot); /* raw has no CID to chain a delta to */
	CHECK_EQ(l.align, 1);
	CHECK(l.preferred_size >= 512 && !(l.preferred_size & (l.preferred_size - 1)));
	CHECK_EQ(l.discard_granularity, l.preferred_size);
	CHECK(l.max_request >= (1u << 20));
	/* an older caller's smaller struct: only its bytes are touched */
	{
		struct bdev_limits small;
		size_t n = offsetof(struct bdev_limits, max_request);
		memset(&small, 0x55, sizeof(small));
		small.struct_size = (uint32_t)n;
		CHECK_EQ(bdev_get_limits(b, &small), 0);
		CHECK_EQ(small.struct_size, n);
		CHECK_EQ(small.align, 1);
		CHECK_EQ(small.max_request, 0x5555555555555555ull);
		small.struct_size = 0;
		CHECK_EQ(bdev_get_limits(b, &small), -EINVAL);
	}
	CHECK_EQ(bdev_close(b), 0);

	b = open_rw(vmdk);
	l.struct_size = sizeof(l);
	CHECK_EQ(bdev_get_limits(b, &l), 0);
	CHECK_EQ(l.preferred_size, 131072);
	CHECK_EQ(l.discard_granularity, 131072);
	CHECK_EQ(l.zero_granularity, 131072);
	CHECK(l.can_snapshot && l.can_fua);
	CHECK_EQ(bdev_close(b), 0);

	CHECK_EQ(bdev_open(vmdk, NULL, &b), 0);
	l.struct_size = sizeof(l);
	CHECK_EQ(bdev_get_limits(b, &l), 0);
	CHECK(!l.can_write && !l.can_fua && !l.can_discard &&
	      !l.can_write_zeroes && !l.can_snapshot);
	CHECK_EQ(l.discard_granularity, 0);
	CHECK_EQ(bdev_close(b), 0);
	printf("ok limits\n");
}

static void test_bad_flags(struct bdev_queue *q)
{
	char raw[300];
	uint8_t buf[512] = { 1 };
	struct iovec v = { buf, sizeof(buf) };
	struct bdev *b;

	snprintf(raw, sizeof(raw), "%s/f.raw", dir);
	test_run("qemu-img create -q -f raw %s 1M", raw);
	b = open_rw(raw);
	CHECK_EQ(bdev_aio_writev_flags(q, b, 0, &v, 1, BDEV_REQ_NO_HOLE,
				       done_cb, NULL), -EINVAL);
	CHECK_EQ(bdev_aio_writev_flags(q, b, 0, &v, 1, BDEV_REQ_FAST_ZERO,
				       done_cb, NULL), -EINVAL);
	CHECK_EQ(bdev_aio_discard_flags(q, b, 0, 512, BDEV_REQ_NO_HOLE,
					done_cb, NULL), -EINVAL);
	CHECK_EQ(bdev_aio_write_zeroes_flags(q, b, 0, 512, 1u << 7, done_cb,
					     NULL), -EINVAL);
	CHECK_EQ(bdev_queue_inflight(q), 0);
	CHECK_EQ(bdev_close(b), 0);
	printf("ok bad flags\n");
}

/* FUA on a sparse VMDK: when the callback runs, the new grain and its
   table are in the file, so a copy taken right then (no flush, no close)
   reads back the data with qemu-img. Without FUA the table is only in
   memory until a flush, so the copy reads zeros: the test can tell. */
static void test_fua_vmdk(struct bdev_queue *q)
{
	char img[300], copy[300], out[300], ref[300];
	uint8_t *buf = malloc(65536);
	struct bdev *b;

	snprintf(img, sizeof(img), "%s/fua.vmdk", dir);
	snprintf(copy, sizeof(copy), "%s/fua-copy.vmdk", dir);
	snprintf(out, sizeof(out), "%s/fua-copy.raw", dir);
	snprintf(ref, sizeof(ref), "%s/fua-ref.raw", dir);
	test_run("qemu-img create -q -f vmdk %s 4M", img);
	b = open_rw(img);
	pattern_fill(buf, 65536, 1 << 20);
	CHECK_EQ(writev_flags(q, b, 1 << 20, buf, 65536, 0), 0);
	test_run("cp %s %s", img, copy);
	test_run("qemu-img convert -U -f vmdk -O raw %s %s", copy, out);
	{
		/* without FUA: the grain table is not in the file yet */
		uint8_t *got = malloc(65536);
		int fd = open(out, O_RDONLY);
		CHECK(fd >= 0);
		CHECK_EQ(pread(fd, got, 65536, 1 << 20), 65536);
		CHECK(all_zero(got, 65536));
		close(fd);
		free(got);
	}
	pattern_fill(buf, 65536, 2 << 20);
	CHECK_EQ(writev_flags(q, b, 2 << 20, buf, 65536, BDEV_REQ_FUA), 0);
	test_run("cp %s %s", img, copy);
	test_run("rm -f %s && qemu-img convert -U -f vmdk -O raw %s %s", out,
		 copy, out);
	{
		uint8_t *got = malloc(65536);
		int fd = open(out, O_RDONLY);
		CHECK(fd >= 0);
		CHECK_EQ(pread(fd, got, 65536, 2 << 20), 65536);
		CHECK_EQ(pattern_mismatch(got, 65536, 2 << 20), -1);
		close(fd);
		free(got);
	}
	CHECK_EQ(bdev_close(b), 0);
	test_run("qemu-img check -q %s", img);
	free(buf);
	printf("ok fua vmdk\n");
}

/* FUA on raw: the data and its result, through an io_uring fdatasync. */
static void test_fua_raw(struct bdev_queue *q)
{
	char img[300];
	uint8_t *buf = malloc(131072), *got = malloc(131072);
	struct bdev *b;

	snprintf(img, sizeof(img), "%s/fua.raw", dir);
	test_run("qemu-img create -q -f raw %s 4M", img);
	b = open_rw(img);
	pattern_fill(buf, 131072, 4096);
	CHECK_EQ(writev_flags(q, b, 4096, buf, 131072, BDEV_REQ_FUA), 0);
	{
		struct done d = { 0 };
		CHECK_EQ(wait_done(q, &d, bdev_aio_discard_flags(q, b, 8192, 4096,
					BDEV_REQ_FUA, done_cb, &d)), 0);
	}
	CHECK_EQ(bdev_pread(b, got, 131072, 4096), 0);
	CHECK_EQ(pattern_mismatch(got, 4096, 4096), -1);
	CHECK(all_zero(got + 4096, 4096));
	CHECK_EQ(pattern_mismatch(got + 8192, 131072 - 8192, 12288), -1);
	CHECK_EQ(bdev_close(b), 0);
	free(buf);
	free(got);
	printf("ok fua raw\n");
}

static uint64_t blocks_of(const char *path)
{
	struct stat st;

	CHECK_EQ(stat(path, &st), 0);
	return (uint64_t)st.st_blocks;
}

/* NO_HOLE on a hole of a raw file allocates it; without, it stays a hole. */
static void test_no_hole_raw(struct bdev_queue *q)
{
	char img[300];
	uint8_t *got = malloc(1 << 20);
	struct bdev *b;
	uint64_t before;
	int ret;

	snprintf(img, sizeof(img), "%s/nh.raw", dir);
	test_run("qemu-img create -q -f raw %s 8M", img);
	b = open_rw(img);
	before = blocks_of(img);
	CHECK_EQ(zeroes(q, b, 0, 1 << 20, 0), 0);
	CHECK_EQ(blocks_of(img), before);
	ret = zeroes(q, b, 1 << 20, 1 << 20, BDEV_REQ_NO_HOLE);
	if (ret == -ENOTSUP || ret == -EOPNOTSUPP) {
		printf("skip no-hole raw: the file system cannot zero a range\n");
		bdev_close(b);
		free(got);
		return;
	}
	CHECK_EQ(ret, 0);
	CHECK(blocks_of(img) >= before + (1 << 20) / 512);
	CHECK_EQ(bdev_pread(b, got, 1 << 20, 1 << 20), 0);
	CHECK(all_zero(got, 1 << 20));
	/* FAST_ZERO over data: done without writing bytes where the file
	   system can zero a range, else refused at once, saying so (tmpfs
	   on Linux 6.1 has no FALLOC_FL_ZERO_RANGE; NO_HOLE above wrote
	   zero bytes there) */
	ret = zeroes(q, b, 1 << 20, 65536, BDEV_REQ_FAST_ZERO);
	if (ret == -EOPNOTSUPP || ret == -ENOTSUP)
		CHECK(strstr(bdev_errmsg(), "without writing zero bytes"));
	else
		CHECK_EQ(ret, 0);
	CHECK_EQ(bdev_close(b), 0);
	free(got);
	printf("ok no-hole raw\n");
}

/* The status of the first run at off, and its length. */
static int status(struct bdev *b, uint64_t off, uint64_t len, uint64_t *pnum)
{
	int st = bdev_block_status(b, off, len, pnum);

	CHECK(st >= 0);
	return st;
}

/* Whether the file system under dir zeroes a range without writing
   (FALLOC_FL_ZERO_RANGE; tmpfs on Linux 6.1 cannot). */
static bool fs_can_zero_range(void)
{
	char p[300];
	bool can;
	int fd;

	snprintf(p, sizeof(p), "%s/zr-probe", dir);
	fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK_EQ(ftruncate(fd, 65536), 0);
	can = fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 65536) == 0;
	close(fd);
	unlink(p);
	return can;
}

/* NO_HOLE and FAST_ZERO on sparse VMDKs (64 KiB grains). */
static void test_zero_vmdk(struct bdev_queue *q)
{
	char img[300], base[300], delta[300];
	uint8_t *buf = malloc(1 << 20);
	struct bdev *b;
	uint64_t pnum;

	snprintf(img, sizeof(img), "%s/z.vmdk", dir);
	test_run("qemu-img create -q -f vmdk -o zeroed_grain=on %s 8M", img);
	b = open_rw(img);
	pattern_fill(buf, 1 << 20, 0);
	CHECK_EQ(bdev_pwrite(b, buf, 1 << 20, 0), 0);
	/* allocated grains are zeroed in place (fallocate), fast; where the
	   file system cannot, FAST_ZERO is refused at once, saying so, and
	   the plain zeroing writes the bytes */
	if (fs_can_zero_range()) {
		CHECK_EQ(zeroes(q, b, 0, 262144, BDEV_REQ_FAST_ZERO), 0);
	} else {
		CHECK_EQ(zeroes(q, b, 0, 262144, BDEV_REQ_FAST_ZERO),
			 -EOPNOTSUPP);
		CHECK(strstr(bdev_errmsg(), "without writing zero bytes"));
		CHECK_EQ(zeroes(q, b, 0, 262144, 0), 0);
	}
	CHECK_EQ(status(b, 0, 262144, &pnum), BDEV_STATUS_DATA);
	/* unallocated whole grains become zeroed-grain entries: fast, not
	   allocated; with NO_HOLE they are written and allocated */
	CHECK_EQ(zeroes(q, b, 2 << 20, 262144, BDEV_REQ_FAST_ZERO), 0);
	CHECK_EQ(status(b, 2 << 20, 262144, &pnum), BDEV_STATUS_ZERO);
	CHECK_EQ(pnum, 262144);
	/* NO_HOLE on unallocated grains: written, allocated, zeros */
	CHECK_EQ(status(b, 4 << 20, 131072, &pnum), BDEV_STATUS_UNALLOCATED);
	CHECK_EQ(zeroes(q, b, 4 << 20, 131072, BDEV_REQ_NO_HOLE), 0);
	CHECK_EQ(status(b, 4 << 20, 131072, &pnum), BDEV_STATUS_DATA);
	CHECK_EQ(pnum, 131072);
	/* NO_HOLE over zeroed grains too; FAST_ZERO refuses to write them */
	CHECK_EQ(zeroes(q, b, 6 << 20, 65536,
			BDEV_REQ_NO_HOLE | BDEV_REQ_FAST_ZERO), -ENOTSUP);
	CHECK_EQ(status(b, 6 << 20, 65536, &pnum), BDEV_STATUS_UNALLOCATED);
	CHECK_EQ(bdev_pread(b, buf, 1 << 20, 0), 0);
	CHECK(all_zero(buf, 262144));
	CHECK_EQ(pattern_mismatch(buf + 262144, (1 << 20) - 262144, 262144), -1);
	CHECK_EQ(bdev_pread(b, buf, 131072, 4 << 20), 0);
	CHECK(all_zero(buf, 131072));
	CHECK_EQ(bdev_close(b), 0);
	test_run("qemu-img check -q %s", img);

	/* a delta without zeroed-grain entries over a parent with data:
	   zeroing its grains needs zero bytes written */
	snprintf(base, sizeof(base), "%s/zb.vmdk", dir);
	snprintf(delta, sizeof(delta), "%s/zd.vmdk", dir);
	test_run("qemu-img create -q -f vmdk %s 8M && qemu-io -f vmdk -c "
		 "'write -P 0x5a 0 2M' %s >/dev/null && cd %s && qemu-img create -q "
		 "-f vmdk -b zb.vmdk -F vmdk %s", base, base, dir, delta);
	b = open_rw(delta);
	CHECK_EQ(zeroes(q, b, 0, 131072, BDEV_REQ_FAST_ZERO), -ENOTSUP);
	CHECK_EQ(zeroes(q, b, 0, 100000, 0), 0);
	CHECK_EQ(bdev_pread(b, buf, 131072, 0), 0);
	CHECK(all_zero(buf, 100000));
	for (int i = 100000; i < 131072; i++)
		CHECK_EQ(buf[i], 0x5a);
	CHECK_EQ(bdev_close(b), 0);
	test_run("qemu-img check -q %s", delta);
	free(buf);
	printf("ok zero vmdk\n");
}

int main(void)
{
	struct bdev_queue *q;

	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img is not installed\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/ovk-flags-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir));
	CHECK_EQ(bdev_queue_new(16, &q), 0);
	test_limits();
	test_bad_flags(q);
	test_fua_vmdk(q);
	test_fua_raw(q);
	test_no_hole_raw(q);
	test_zero_vmdk(q);
	bdev_queue_free(q);
	test_run("rm -rf %s", dir);
	return 0;
}
