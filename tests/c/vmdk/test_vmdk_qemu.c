/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_vmdk_qemu.c - images made by qemu-img/qemu-io (every subformat
 * QEMU writes, chains, zeroed grains, 2 TiB sparse) and hand-written
 * descriptors, read through the engine and compared byte for byte with
 * `qemu-img convert -O raw` or with what the descriptor says.
 */
#include <stdarg.h>
#include <sys/stat.h>

#include "../testutil.h"
#include "internal.h"

static char dir[] = "/tmp/ovk-vmdk-test-XXXXXX";

static char *at(const char *name)
{
	static char buf[4][1024];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	return buf[i];
}

/* Compare [off, off + len) of img (opened with flags) with the same bytes
   of the raw file, reading chunk bytes at a time. */
static void compare_range(struct bdev *b, int rawfd, uint64_t off, uint64_t len,
			  size_t chunk)
{
	uint8_t *x = malloc(chunk), *y = malloc(chunk);

	for (uint64_t o = off; o < off + len; o += chunk) {
		size_t n = off + len - o < chunk ? off + len - o : chunk;
		CHECK_EQ(bdev_pread(b, x, n, o), 0);
		CHECK_EQ(pread(rawfd, y, n, (off_t)o), (ssize_t)n);
		if (memcmp(x, y, n) != 0) {
			for (size_t i = 0; i < n; i++)
				if (x[i] != y[i]) {
					fprintf(stderr, "byte %" PRIu64 ": %02x, qemu %02x\n",
						o + i, x[i], y[i]);
					break;
				}
			exit(1);
		}
	}
	free(x);
	free(y);
}

/* Read image in full and compare with qemu-img's raw conversion of it. */
static void compare_with_qemu(const char *image, uint32_t flags, size_t chunk)
{
	struct bdev_open_opts o = { .flags = flags };
	struct bdev *b;
	struct bdev_info info;
	struct stat st;

	test_run("qemu-img convert -U -O raw '%s' '%s'", image, at("qemu.raw"));
	int fd = open(at("qemu.raw"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(bdev_open(image, &o, &b), 0);
	CHECK_EQ(bdev_get_info(b, &info), 0);
	CHECK_EQ(fstat(fd, &st), 0);
	CHECK_EQ(info.size, (uint64_t)st.st_size);
	compare_range(b, fd, 0, info.size, chunk);
	bdev_close(b);
	close(fd);
	unlink(at("qemu.raw"));
}

static void make_source(void)
{
	test_run("qemu-img create -q -f raw '%s' 24M", at("src.raw"));
	test_run("qemu-io -f raw -c 'write -P 0x5a 0 3M' -c 'write -P 0xa5 5M 64k' "
	    "-c 'write -P 0x11 7340000 333333' -c 'write -P 0x77 20M 4M' '%s' >/dev/null",
	    at("src.raw"));
}

static void test_subformats(void)
{
	static const char *const types[] = {
		"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
		"twoGbMaxExtentFlat", "streamOptimized",
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		char name[64];
		snprintf(name, sizeof(name), "%s.vmdk", types[i]);
		test_run("qemu-img convert -f raw -O vmdk -o subformat=%s '%s' '%s'", types[i],
		    at("src.raw"), at(name));
		compare_with_qemu(at(name), 0, 1 << 20);
		compare_with_qemu(at(name), 0, 4096);
		compare_with_qemu(at(name), 0, 3001);

		struct bdev *b;
		struct bdev_info info;
		CHECK_EQ(bdev_open(at(name), NULL, &b), 0);
		bdev_get_info(b, &info);
		CHECK(strcmp(info.subformat, types[i]) == 0);
		CHECK(info.has_cid);
		CHECK_EQ(info.parent_cid, 0xffffffffu);
		bdev_close(b);
	}
	/* A size that is no multiple of a grain or a sector of a GT. */
	test_run("qemu-img create -q -f raw '%s' 1000448", at("odd.raw"));
	test_run("qemu-io -f raw -c 'write -P 0x42 900000 100448' '%s' >/dev/null", at("odd.raw"));
	test_run("qemu-img convert -O vmdk -o subformat=streamOptimized '%s' '%s'",
	    at("odd.raw"), at("odd-stream.vmdk"));
	compare_with_qemu(at("odd-stream.vmdk"), 0, 7777);
}

static void test_chain(void)
{
	struct bdev_open_opts o = { 0 };
	struct bdev *b;
	struct bdev_info info;

	test_run("qemu-img create -q -f vmdk '%s' 16M", at("base.vmdk"));
	test_run("qemu-io -c 'write -P 0x11 0 6M' -c 'write -P 0x22 10M 1M' '%s' >/dev/null",
	    at("base.vmdk"));
	test_run("qemu-img create -q -f vmdk -b base.vmdk -F vmdk '%s'", at("child.vmdk"));
	test_run("qemu-io -c 'write -P 0x33 1M 2M' -c 'write -P 0x44 10M 64k' '%s' >/dev/null",
	    at("child.vmdk"));
	compare_with_qemu(at("child.vmdk"), 0, 65536);
	CHECK_EQ(bdev_open(at("child.vmdk"), NULL, &b), 0);
	bdev_get_info(b, &info);
	CHECK(strcmp(info.parent_hint, "base.vmdk") == 0);
	CHECK(bdev_backing(b) != NULL);
	bdev_close(b);

	/* The parent changes after the child was made: refuse, name both. */
	test_run("qemu-img create -q -f vmdk -o subformat=monolithicFlat '%s' 16M", at("fb.vmdk"));
	test_run("qemu-img create -q -f vmdk -b fb.vmdk -F vmdk '%s'", at("fc.vmdk"));
	test_run("sed -i 's/^CID=.*/CID=0badf00d/' '%s'", at("fb.vmdk"));
	CHECK(bdev_open(at("fc.vmdk"), NULL, &b) == -EINVAL);
	CHECK(strstr(bdev_errmsg(), "fc.vmdk") && strstr(bdev_errmsg(), "fb.vmdk") &&
	      strstr(bdev_errmsg(), "0badf00d"));
	o.flags = BDEV_O_FORCE_CID;
	CHECK_EQ(bdev_open(at("fc.vmdk"), &o, &b), 0);
	bdev_close(b);
	o.flags = BDEV_O_NO_BACKING;
	CHECK_EQ(bdev_open(at("fc.vmdk"), &o, &b), 0);
	CHECK(bdev_backing(b) == NULL);
	bdev_close(b);
}

static void test_zeroed_grain(void)
{
	test_run("qemu-img create -q -f vmdk -o zeroed_grain=on '%s' 8M", at("zg.vmdk"));
	test_run("qemu-io -c 'write -P 0x66 0 4M' -c 'write -z 1M 1M' '%s' >/dev/null",
	    at("zg.vmdk"));
	compare_with_qemu(at("zg.vmdk"), 0, 65536);
}

/* A descriptor with every access mode, ZERO, a FLAT offset and a file
   name with spaces and UTF-8. */
static void test_handwritten(void)
{
	FILE *f;
	struct bdev *b;
	struct bdev_map m;
	uint8_t buf[4096], want[4096];
	uint64_t pnum;

	test_run("head -c 1048576 /dev/urandom > '%s/d\xc3\xa4ta one.bin'", dir);
	f = fopen(at("hand.vmdk"), "w");
	fprintf(f, "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=abcdef01\n"
		   "parentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n"
		   "RW 1024 FLAT \"d\xc3\xa4ta one.bin\" 1024\n"
		   "RDONLY 512 FLAT \"d\xc3\xa4ta one.bin\" 0\n"
		   "NOACCESS 256 FLAT \"d\xc3\xa4ta one.bin\" 0\n"
		   "RW 2048 ZERO\n"
		   "ddb.adapterType = \"lsilogic\"\n");
	fclose(f);
	int fd = open(at("d\xc3\xa4ta one.bin"), O_RDONLY);
	CHECK_EQ(bdev_open(at("hand.vmdk"), NULL, &b), 0);
	struct bdev_info info;
	bdev_get_info(b, &info);
	CHECK_EQ(info.size, (1024 + 512 + 256 + 2048) * 512);
	CHECK_EQ(info.extent_count, 4);
	CHECK_EQ(bdev_pread(b, buf, 4096, 1020 * 512), 0); /* crosses extents */
	CHECK_EQ(pread(fd, want, 4 * 512, 1024 * 512 + 1020 * 512), 4 * 512);
	CHECK_EQ(pread(fd, want + 4 * 512, 4 * 512, 0), 4 * 512);
	CHECK(memcmp(buf, want, 4096) == 0);
	CHECK_EQ(b->fmt->map(b, 1100 * 512, 4096, &m), 0);
	CHECK(m.read_only && m.kind == BDEV_MAP_DATA);
	CHECK(bdev_pread(b, buf, 512, 1600 * 512) < 0);
	CHECK(strstr(bdev_errmsg(), "NOACCESS"));
	CHECK_EQ(bdev_block_status(b, 1800 * 512, 4096, &pnum), BDEV_STATUS_ZERO);
	CHECK_EQ(bdev_pread(b, buf, 4096, 1800 * 512), 0);
	CHECK(buf[0] == 0 && !memcmp(buf, buf + 1, 4095));
	struct bdev_extent_info ei;
	CHECK_EQ(bdev_get_extent(b, 0, &ei), 0);
	CHECK(strstr(ei.filename, "d\xc3\xa4ta one.bin") && ei.file_offset == 1024 * 512);
	bdev_close(b);
	close(fd);

	/* Names that leave the descriptor's folder need allow-escape. */
	f = fopen(at("esc.vmdk"), "w");
	fprintf(f, "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
		   "RW 8 FLAT \"../%s/d\xc3\xa4ta one.bin\" 0\n", strrchr(dir, '/') + 1);
	fclose(f);
	CHECK_EQ(bdev_open(at("esc.vmdk"), NULL, &b), -EPERM);
	CHECK(strstr(bdev_errmsg(), "line 5") && strstr(bdev_errmsg(), "outside"));
	struct bdev_open_opts o = { .flags = BDEV_O_ALLOW_ESCAPE };
	CHECK_EQ(bdev_open(at("esc.vmdk"), &o, &b), 0);
	bdev_close(b);

	/* A missing extent file: the descriptor, the line and the name. */
	f = fopen(at("miss.vmdk"), "w");
	fprintf(f, "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
		   "RW 8 FLAT \"nothere.bin\" 0\n");
	fclose(f);
	CHECK(bdev_open(at("miss.vmdk"), NULL, &b) < 0);
	CHECK(strstr(bdev_errmsg(), "miss.vmdk") && strstr(bdev_errmsg(), "nothere.bin"));
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

/* A 2 TiB sparse disk: open and read across it within 32 MiB RSS. */
static void test_huge(void)
{
	struct bdev *b;
	struct bdev_stats st;
	uint8_t *buf = malloc(65536);
	long before = rss_kib();

	test_run("qemu-img create -q -f vmdk '%s' 2T", at("huge.vmdk"));
	test_run("qemu-io -c 'write -P 0x99 1T 1M' -c 'write -P 0x98 2047G 64k' '%s' >/dev/null",
	    at("huge.vmdk"));
	CHECK_EQ(bdev_open(at("huge.vmdk"), NULL, &b), 0);
	for (uint64_t off = 0; off < (UINT64_C(2) << 40); off += UINT64_C(256) << 20)
		CHECK_EQ(bdev_pread(b, buf, 65536, off), 0);
	CHECK_EQ(bdev_pread(b, buf, 65536, UINT64_C(1) << 40), 0);
	CHECK(buf[0] == 0x99 && buf[65535] == 0x99);
	CHECK_EQ(bdev_pread(b, buf, 65536, UINT64_C(2047) << 30), 0);
	CHECK(buf[0] == 0x98);
	bdev_get_stats(b, &st);
	long after = rss_kib();
	fprintf(stderr, "2 TiB image: RSS %ld -> %ld KiB, GT cache %" PRIu64 " hits %"
		PRIu64 " misses\n", before, after, st.gt_cache_hits, st.gt_cache_misses);
#if !defined(__SANITIZE_ADDRESS__)
	CHECK(after - before < 32 * 1024);
#endif
	bdev_close(b);
	free(buf);
	unlink(at("huge.vmdk"));
}

/* A split image bigger than one 2 GiB extent, read across the boundaries. */
static void test_split_boundaries(void)
{
	struct bdev *b;
	struct bdev_map m;

	test_run("qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse '%s' 5G",
	    at("split.vmdk"));
	test_run("qemu-io -c 'write -P 0x31 2147418112 131072' -c 'write -P 0x32 4294901760 1M' "
	    "'%s' >/dev/null", at("split.vmdk"));
	test_run("qemu-img convert -O raw '%s' '%s'", at("split.vmdk"), at("split.raw"));
	int fd = open(at("split.raw"), O_RDONLY);
	CHECK_EQ(bdev_open(at("split.vmdk"), NULL, &b), 0);
	compare_range(b, fd, (UINT64_C(2) << 30) - (1 << 20), 2 << 20, 12345);
	compare_range(b, fd, (UINT64_C(4) << 30) - (1 << 20), 3 << 20, 1 << 20);
	/* Runs never cross an extent boundary; data grains merge. */
	CHECK_EQ(b->fmt->map(b, 2147418112, 1 << 20, &m), 0);
	CHECK_EQ(m.kind, BDEV_MAP_DATA);
	CHECK_EQ(m.len, 65536);
	CHECK_EQ(b->fmt->map(b, 4294901760, 1 << 20, &m), 0);
	CHECK(m.len >= 65536);
	bdev_close(b);
	close(fd);
	unlink(at("split.raw"));
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		printf("SKIP: qemu-img/qemu-io not installed\n");
		return 77;
	}
	CHECK(mkdtemp(dir));
	make_source();
	test_subformats();
	test_chain();
	test_zeroed_grain();
	test_handwritten();
	test_split_boundaries();
	test_huge();
	test_run("rm -rf '%s'", dir);
	printf("ok\n");
	return 0;
}
