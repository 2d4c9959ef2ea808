/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_map_host.c - bdev_map_host: which runs of an image are stored as is
 * in a host file (and where), which read as zeros, which must go through
 * the engine; through delta chains, regions, and while the image is
 * written and snapshotted. Every FILE answer is checked by reading the
 * descriptor it names and comparing with what bdev_pread returns.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>

#include "vmdk_build.h"
#include "vmdk/vmdk.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)

/* Walks [off, off + len) of b run by run: FILE runs read from their
   descriptor as bdev_pread reads them, ZERO runs read as zeros. Counts
   the bytes of each kind into got[kind]. */
static void check_runs(struct bdev *b, uint64_t off, uint64_t len,
		       uint64_t got[3])
{
	uint8_t *via_fd = malloc(len), *via_engine = malloc(len);

	CHECK(via_fd && via_engine);
	CHECK_EQ(bdev_pread(b, via_engine, len, off), 0);
	for (uint64_t pos = 0; pos < len;) {
		struct bdev_host_run run;
		int kind = bdev_map_host(b, off + pos, len - pos, &run);

		CHECK(kind >= 0);
		CHECK(run.length >= 1 && run.length <= len - pos);
		if (kind == BDEV_HOST_FILE) {
			CHECK(run.fd >= 0);
			CHECK_EQ(pread(run.fd, via_fd + pos, run.length,
				       (off_t)run.file_offset),
				 (ssize_t)run.length);
			CHECK(memcmp(via_fd + pos, via_engine + pos,
				     run.length) == 0);
		} else {
			CHECK_EQ(run.fd, -1);
		}
		if (kind == BDEV_HOST_ZERO)
			for (uint64_t i = 0; i < run.length; i++)
				CHECK_EQ(via_engine[pos + i], 0);
		got[kind] += run.length;
		pos += run.length;
	}
	free(via_fd);
	free(via_engine);
}

/* A fresh temporary folder for one test's files. */
static void make_dir(char *dir, size_t len)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	snprintf(dir, len, "%s/ovk-maphost-XXXXXX", tmp);
	CHECK(mkdtemp(dir));
}

/* dir/name into out (len bytes). */
static void path_in(char *out, size_t len, const char *dir, const char *name)
{
	CHECK((size_t)snprintf(out, len, "%s/%s", dir, name) < len);
}

static void write_file(const char *path, const void *p, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	CHECK(fd >= 0);
	CHECK_EQ(write(fd, p, len), (ssize_t)len);
	CHECK_EQ(close(fd), 0);
}

/* Hosted sparse: data grains map to the file, adjacent grains in one run;
   zeroed and unallocated grains are ZERO. From memory: OTHER. */
static void test_sparse(const char *dir)
{
	struct vb_sparse_opts o = {
		.capacity = 4096, .grain = 16, .gtes = 64, .version = 1,
		.flags = VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_RGD |
			 VMDK4_FLAG_ZERO_GRAIN,
		.grain_fn = vb_mixed,
	};
	struct vb img = vb_build_sparse(&o, NULL, NULL);
	uint64_t size = 4096 * 512, got[3] = { 0 }, data = 0;
	struct bdev_host_run run;
	char path[PATH_MAX];
	struct bsrc *src;
	struct bdev *b;

	for (uint64_t g = 0; g < size / 8192; g++)
		data += vb_mixed(g) == 2 ? 8192 : 0;
	path_in(path, sizeof(path), dir, "sparse.vmdk");
	write_file(path, img.p, img.len);
	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	/* grains 0 and 1 hold data and lie next to each other in the file */
	CHECK_EQ(bdev_map_host(b, 100, size - 100, &run), BDEV_HOST_FILE);
	CHECK_EQ(run.length, 2 * 8192 - 100);
	CHECK_EQ(bdev_map_host(b, 2 * 8192, size, &run), BDEV_HOST_ZERO);
	CHECK_EQ(run.length, 2 * 8192); /* grains 2 and 3 */
	check_runs(b, 0, size, got);
	CHECK_EQ(got[BDEV_HOST_FILE], data);
	CHECK_EQ(got[BDEV_HOST_ZERO], size - data);
	CHECK_EQ(got[BDEV_HOST_OTHER], 0);
	/* the asked length is clamped to the image; outside it is an error */
	CHECK_EQ(bdev_map_host(b, size - 512, 1 << 20, &run),
		 vb_mixed(size / 8192 - 1) == 2 ? BDEV_HOST_FILE : BDEV_HOST_ZERO);
	CHECK_EQ(run.length, 512);
	CHECK_EQ(bdev_map_host(b, size, 1, &run), -EINVAL);
	CHECK(strstr(bdev_errmsg(), "sparse.vmdk"));
	CHECK_EQ(bdev_map_host(b, 0, 0, &run), -EINVAL);
	CHECK_EQ(bdev_close(b), 0);

	/* the same bytes in memory have no descriptor to hand out */
	CHECK_EQ(bsrc_open_mem(img.p, img.len, "mem.vmdk", &src), 0);
	CHECK_EQ(bdev_open_layer(NULL, src, NULL, &b), 0);
	memset(got, 0, sizeof(got));
	check_runs(b, 0, size, got);
	CHECK_EQ(got[BDEV_HOST_OTHER], data);
	CHECK_EQ(got[BDEV_HOST_FILE], 0);
	CHECK_EQ(bdev_close(b), 0);
	unlink(path);
	free(img.p);
}

/* streamOptimized: compressed grains are OTHER, one grain per run. */
static void test_stream(const char *dir)
{
	struct vb_sparse_opts o = {
		.capacity = 3001, .grain = 128, .gtes = 512, .version = 3,
		.flags = VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_COMPRESSED |
			 VMDK4_FLAG_MARKERS,
		.stream = true, .grain_fn = vb_every_other,
	};
	struct vb img = vb_build_stream(&o);
	uint64_t got[3] = { 0 };
	struct bdev_host_run run;
	char path[PATH_MAX];
	struct bdev *b;

	path_in(path, sizeof(path), dir, "stream.vmdk");
	write_file(path, img.p, img.len);
	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	CHECK_EQ(bdev_map_host(b, 4 * 65536 + 10, 3 * 65536, &run),
		 BDEV_HOST_OTHER);
	CHECK_EQ(run.length, 65536 - 10);
	check_runs(b, 0, 3001 * 512, got);
	CHECK_EQ(got[BDEV_HOST_FILE], 0);
	CHECK(got[BDEV_HOST_OTHER] > 0 && got[BDEV_HOST_ZERO] > 0);
	CHECK_EQ(bdev_close(b), 0);
	unlink(path);
	free(img.p);
}

/* A raw image inside a region of a file: offsets shift by the region's. */
static void test_region(void)
{
	char path[PATH_MAX];
	uint64_t got[3] = { 0 };
	struct bdev_host_run run;
	struct bdev *b;
	int fd;

	make_pattern_file(path, sizeof(path), 300000, 0);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(bdev_open_region(fd, 4103, 100000, "pkg.ova:d.img", NULL, &b),
		 0);
	close(fd);
	CHECK_EQ(bdev_map_host(b, 10, 100000, &run), BDEV_HOST_FILE);
	CHECK_EQ(run.file_offset, 4103 + 10);
	CHECK_EQ(run.length, 100000 - 10);
	check_runs(b, 0, 100000, got);
	CHECK_EQ(got[BDEV_HOST_FILE], 100000);
	CHECK_EQ(bdev_close(b), 0);
	unlink(path);
}

/* Bytes supplied by callbacks are never in a file. */
static ssize_t zero_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	(void)opaque;
	(void)off;
	memset(buf, 0x5a, len);
	return (ssize_t)len;
}

static void test_callbacks(void)
{
	struct bdev_byte_source ops = { .pread = zero_pread };
	struct bdev_host_run run;
	struct bdev *b;

	CHECK_EQ(bdev_open_callbacks(&ops, NULL, 65536, "cb.img", NULL, &b), 0);
	CHECK_EQ(bdev_map_host(b, 0, 65536, &run), BDEV_HOST_OTHER);
	CHECK_EQ(run.length, 65536);
	CHECK_EQ(run.fd, -1);
	CHECK_EQ(bdev_close(b), 0);
}

/* Descriptor extents: FLAT at an offset of its file, NOACCESS, ZERO. */
static void test_flat_extents(const char *dir)
{
	static const char desc[] =
		"# Disk DescriptorFile\nversion=1\nCID=fffffffe\n"
		"parentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
		"RW 16 FLAT \"f.bin\" 8\n"
		"NOACCESS 16 FLAT \"f.bin\" 0\n"
		"RW 16 ZERO\n";
	char path[PATH_MAX], flat[PATH_MAX];
	uint8_t buf[24 * 512];
	struct bdev_host_run run;
	struct bdev *b;

	pattern_fill(buf, sizeof(buf), 0);
	path_in(flat, sizeof(flat), dir, "f.bin");
	write_file(flat, buf, sizeof(buf));
	path_in(path, sizeof(path), dir, "flat.vmdk");
	write_file(path, desc, sizeof(desc) - 1);
	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	CHECK_EQ(bdev_map_host(b, 1000, 48 * 512, &run), BDEV_HOST_FILE);
	CHECK_EQ(run.file_offset, 8 * 512 + 1000);
	CHECK_EQ(run.length, 16 * 512 - 1000);
	CHECK_EQ(pread(run.fd, buf, 100, (off_t)run.file_offset), 100);
	CHECK_EQ(pattern_mismatch(buf, 100, 8 * 512 + 1000), -1);
	CHECK_EQ(bdev_map_host(b, 16 * 512 + 7, 32 * 512 - 7, &run),
		 BDEV_HOST_OTHER);
	CHECK_EQ(run.length, 16 * 512 - 7);
	CHECK_EQ(bdev_map_host(b, 32 * 512, 16 * 512, &run), BDEV_HOST_ZERO);
	CHECK_EQ(run.length, 16 * 512);
	CHECK_EQ(bdev_close(b), 0);
	unlink(path);
	unlink(flat);
}

/* The fd of the layer a FILE answer names, by the file's inode. */
static bool same_file(int fd, const char *path)
{
	struct stat a, b;

	CHECK_EQ(fstat(fd, &a), 0);
	CHECK_EQ(stat(path, &b), 0);
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/*
 * A delta chain written while mapped: runs resolve to the layer that holds
 * them; an in-place write shows through the old answer; a discarded
 * grain's storage is not handed to a later write; after a snapshot the
 * old answer's descriptor still reads the frozen layer.
 */
static void test_chain_and_writes(const char *dir)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "monolithicSparse",
				       .size = 4 * MiB };
	struct bdev_open_opts rw = { .flags = BDEV_O_RDWR };
	char base[PATH_MAX], child[PATH_MAX], snap[PATH_MAX];
	uint8_t *buf = malloc(MiB), old[4096], now[4096];
	uint64_t got[3] = { 0 }, x;
	struct bdev_host_run run;
	struct bdev *b;
	int cfd;

	CHECK(buf);
	path_in(base, sizeof(base), dir, "base.vmdk");
	path_in(child, sizeof(child), dir, "child.vmdk");
	path_in(snap, sizeof(snap), dir, "snap.vmdk");
	CHECK_EQ(bdev_create(base, &co), 0);
	CHECK_EQ(bdev_open(base, &rw, &b), 0);
	pattern_fill(buf, MiB, 0);
	CHECK_EQ(bdev_pwrite(b, buf, MiB, 0), 0);
	CHECK_EQ(bdev_close(b), 0);
	co.backing = base;
	co.size = 0;
	co.zeroed_grain = true; /* a discard drops grains, not zero-fills */
	CHECK_EQ(bdev_create(child, &co), 0);
	CHECK_EQ(bdev_open(child, &rw, &b), 0);
	memset(buf, 0xc3, 64 * KiB);
	CHECK_EQ(bdev_pwrite(b, buf, 64 * KiB, 512 * KiB), 0);

	CHECK_EQ(bdev_map_host(b, 0, 4 * MiB, &run), BDEV_HOST_FILE);
	CHECK_EQ(run.length, 512 * KiB);
	CHECK(same_file(run.fd, base));
	CHECK_EQ(bdev_map_host(b, 512 * KiB, 4 * MiB - 512 * KiB, &run),
		 BDEV_HOST_FILE);
	CHECK_EQ(run.length, 64 * KiB);
	CHECK(same_file(run.fd, child));
	cfd = run.fd;
	x = run.file_offset;
	CHECK_EQ(bdev_map_host(b, 576 * KiB, 4 * MiB - 576 * KiB, &run),
		 BDEV_HOST_FILE);
	CHECK_EQ(run.length, 1 * MiB - 576 * KiB);
	CHECK(same_file(run.fd, base));
	CHECK_EQ(bdev_map_host(b, MiB, 3 * MiB, &run), BDEV_HOST_ZERO);
	CHECK_EQ(run.length, 3 * MiB);
	check_runs(b, 0, 4 * MiB, got);
	CHECK_EQ(got[BDEV_HOST_FILE], MiB);
	CHECK_EQ(got[BDEV_HOST_ZERO], 3 * MiB);

	/* a write in place changes the bytes where the answer points */
	memset(buf, 0x3c, 4096);
	CHECK_EQ(bdev_pwrite(b, buf, 4096, 512 * KiB), 0);
	CHECK_EQ(pread(cfd, now, 4096, (off_t)x), 4096);
	CHECK(memcmp(now, buf, 4096) == 0);
	memcpy(old, now, sizeof(old));

	/* discard the grain, then write elsewhere: the new grain does not
	   take the discarded one's storage, which still holds its old bytes */
	CHECK_EQ(bdev_discard(b, 512 * KiB, 64 * KiB), 0);
	CHECK_EQ(bdev_map_host(b, 512 * KiB, 64 * KiB, &run), BDEV_HOST_ZERO);
	memset(buf, 0x77, 64 * KiB);
	CHECK_EQ(bdev_pwrite(b, buf, 64 * KiB, 2 * MiB), 0);
	CHECK_EQ(bdev_map_host(b, 2 * MiB, 64 * KiB, &run), BDEV_HOST_FILE);
	CHECK(same_file(run.fd, child));
	CHECK(run.file_offset + 64 * KiB <= x || run.file_offset >= x + 64 * KiB);
	CHECK_EQ(pread(cfd, now, 4096, (off_t)x), 4096);
	CHECK(memcmp(now, old, 4096) == 0);
	memset(got, 0, sizeof(got));
	check_runs(b, 0, 4 * MiB, got);

	/* a snapshot moves new writes to a fresh child; the frozen layer's
	   descriptor stays open and answers still point into it */
	CHECK_EQ(bdev_map_host(b, 2 * MiB, 64 * KiB, &run), BDEV_HOST_FILE);
	x = run.file_offset;
	CHECK_EQ(bdev_snapshot(b, snap), 0);
	memset(buf, 0x11, 4096);
	CHECK_EQ(bdev_pwrite(b, buf, 4096, 2 * MiB), 0);
	CHECK_EQ(pread(cfd, now, 4096, (off_t)x), 4096);
	CHECK_EQ(now[0], 0x77);
	CHECK_EQ(now[4095], 0x77);
	CHECK_EQ(bdev_map_host(b, 2 * MiB, 64 * KiB, &run), BDEV_HOST_FILE);
	CHECK(same_file(run.fd, snap));
	CHECK_EQ(run.length, 64 * KiB); /* a whole grain, filled from below */
	memset(got, 0, sizeof(got));
	check_runs(b, 0, 4 * MiB, got);
	CHECK_EQ(bdev_close(b), 0);
	unlink(snap);
	unlink(child);
	unlink(base);
	free(buf);
}

/*
 * Threads map and read while another writes whole grains (each grain
 * always with its own byte) and discards them: every FILE answer reads
 * its grain's byte, never another grain's, however the calls interleave.
 */
#define CC_GRAINS 64u
#define CC_GRAIN (64 * KiB)

struct cc {
	struct bdev *b;
	atomic_bool stop;
	atomic_uint checked;
};

static uint8_t cc_byte(uint64_t grain)
{
	return (uint8_t)(grain % 251 + 1);
}

static void *cc_reader(void *opaque)
{
	struct cc *c = opaque;
	uint8_t *buf = malloc(CC_GRAIN);
	unsigned seed = 7;

	CHECK(buf);
	while (!atomic_load(&c->stop)) {
		uint64_t off = (uint64_t)(rand_r(&seed) % (CC_GRAINS * 16)) * 4096;
		struct bdev_host_run run;
		int kind = bdev_map_host(c->b, off, CC_GRAINS * CC_GRAIN - off,
					 &run);
		uint64_t n;

		CHECK(kind >= 0);
		if (kind != BDEV_HOST_FILE)
			continue;
		n = run.length < CC_GRAIN ? run.length : CC_GRAIN;
		CHECK_EQ(pread(run.fd, buf, n, (off_t)run.file_offset),
			 (ssize_t)n);
		for (uint64_t i = 0; i < n; i++)
			CHECK_EQ(buf[i], cc_byte((off + i) / CC_GRAIN));
		atomic_fetch_add(&c->checked, 1);
	}
	free(buf);
	return NULL;
}

static void test_concurrent_writer(const char *dir)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "monolithicSparse",
				       .size = CC_GRAINS * CC_GRAIN,
				       .zeroed_grain = true };
	struct bdev_open_opts rw = { .flags = BDEV_O_RDWR };
	uint8_t *buf = malloc(CC_GRAIN);
	struct cc c = { 0 };
	char path[PATH_MAX];
	pthread_t t[2];
	unsigned seed = 3;

	CHECK(buf);
	path_in(path, sizeof(path), dir, "cc.vmdk");
	CHECK_EQ(bdev_create(path, &co), 0);
	CHECK_EQ(bdev_open(path, &rw, &c.b), 0);
	for (int i = 0; i < 2; i++)
		CHECK_EQ(pthread_create(&t[i], NULL, cc_reader, &c), 0);
	for (int i = 0; i < 3000 || atomic_load(&c.checked) < 100; i++) {
		uint64_t g = (uint64_t)rand_r(&seed) % CC_GRAINS;

		CHECK(i < 1000000);
		if (rand_r(&seed) % 4 == 0) {
			CHECK_EQ(bdev_discard(c.b, g * CC_GRAIN, CC_GRAIN), 0);
		} else {
			memset(buf, cc_byte(g), CC_GRAIN);
			CHECK_EQ(bdev_pwrite(c.b, buf, CC_GRAIN, g * CC_GRAIN), 0);
		}
	}
	atomic_store(&c.stop, true);
	for (int i = 0; i < 2; i++)
		CHECK_EQ(pthread_join(t[i], NULL), 0);
	CHECK_EQ(bdev_close(c.b), 0);
	unlink(path);
	free(buf);
}

int main(void)
{
	char dir[PATH_MAX];

	make_dir(dir, sizeof(dir));
	test_sparse(dir);
	test_stream(dir);
	test_region();
	test_callbacks();
	test_flat_extents(dir);
	test_chain_and_writes(dir);
	test_concurrent_writer(dir);
	CHECK_EQ(rmdir(dir), 0);
	return 0;
}
