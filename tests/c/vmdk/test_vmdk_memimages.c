/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_vmdk_memimages.c - images built byte by byte in memory (hosted
 * sparse with damaged directories, VMware-style GD_AT_END streams, COWD,
 * seSparse), opened through a memory source and read back in full.
 */
#include <string.h>

#include "vmdk_build.h"
#include "vmdk/vmdk.h"

static struct bdev *open_mem(const struct vb *img, const char *name)
{
	struct bsrc *src;
	struct bdev *b = NULL;

	bdev_err_clear();
	CHECK_EQ(bsrc_open_mem(img->p, img->len, name, &src), 0);
	if (bdev_open_layer(NULL, src, NULL, &b) < 0)
		return NULL;
	return b;
}

/* Read all of b in chunks of chunk bytes and compare with fn's pattern. */
static void check_all(struct bdev *b, vb_grain_fn fn, uint64_t gb, size_t chunk,
		      uint64_t size)
{
	struct bdev_info info;
	uint8_t *buf = malloc(chunk);

	CHECK_EQ(bdev_get_info(b, &info), 0);
	CHECK_EQ(info.size, size);
	for (uint64_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		CHECK_EQ(bdev_pread(b, buf, n, off), 0);
		for (size_t i = 0; i < n; i++) {
			if (buf[i] != vb_expect(fn, gb, off + i)) {
				fprintf(stderr, "byte %" PRIu64 " is %02x, expected %02x\n",
					off + i, buf[i], vb_expect(fn, gb, off + i));
				exit(1);
			}
		}
	}
	free(buf);
}

static const char desc_ms[] =
	"# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
	"createType=\"monolithicSparse\"\nRW 4096 SPARSE \"x.vmdk\"\n"
	"ddb.adapterType = \"ide\"\n";

static struct vb_sparse_opts sparse_opts(vb_grain_fn fn)
{
	return (struct vb_sparse_opts){
		.capacity = 4096, .grain = 16, .gtes = 64, .version = 1,
		.flags = VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_RGD | VMDK4_FLAG_ZERO_GRAIN,
		.desc = desc_ms, .grain_fn = fn,
	};
}

static void test_sparse(void)
{
	struct vb_sparse_opts o = sparse_opts(vb_mixed);
	struct vb img = vb_build_sparse(&o, NULL, NULL);
	struct bdev *b = open_mem(&img, "mem.vmdk");
	struct bdev_info info;
	struct bdev_stats st;
	struct bdev_map m;
	uint64_t pnum;

	CHECK(b);
	CHECK_EQ(bdev_get_info(b, &info), 0);
	CHECK(strcmp(info.format, "vmdk") == 0);
	CHECK(strcmp(info.subformat, "monolithicSparse") == 0);
	CHECK(info.has_cid && info.cid == 0x12345678);
	CHECK_EQ(info.cluster_size, 8192);
	CHECK_EQ(info.extent_count, 1);
	check_all(b, vb_mixed, 8192, 4096, 4096 * 512);
	check_all(b, vb_mixed, 8192, 3001, 4096 * 512);
	check_all(b, vb_mixed, 8192, 1 << 20, 4096 * 512);

	/* Grains 0 and 1 are data and adjacent in the file: one run. */
	CHECK_EQ(b->fmt->map(b, 100, 4096 * 512 - 100, &m), 0);
	CHECK_EQ(m.kind, BDEV_MAP_DATA);
	CHECK_EQ(m.len, 2 * 8192 - 100);
	CHECK_EQ(bdev_block_status(b, 3 * 8192, 8192, &pnum), BDEV_STATUS_UNALLOCATED);
	CHECK_EQ(bdev_block_status(b, 5 * 8192 + 1, 100000, &pnum), BDEV_STATUS_ZERO);
	CHECK_EQ(pnum, 8192 - 1);
	bdev_get_stats(b, &st);
	CHECK(st.gt_cache_hits > 0 && st.gt_cache_misses > 0);
	bdev_close(b);
	free(img.p);
}

static void test_damaged_gd(void)
{
	struct vb_sparse_opts o = sparse_opts(vb_mixed);
	size_t gd, rgd;
	struct vb img = vb_build_sparse(&o, &gd, &rgd);
	struct bdev *b;

	/* The primary directory points far outside the file: the redundant
	   one must serve. */
	put32(img.p + gd + 4, 0x7fffffff);
	b = open_mem(&img, "gd.vmdk");
	CHECK(b);
	check_all(b, vb_mixed, 8192, 65536, 4096 * 512);
	bdev_close(b);

	/* Restore the directory, damage one primary grain table instead. */
	free(img.p);
	img = vb_build_sparse(&o, &gd, &rgd);
	uint32_t gt1;
	memcpy(&gt1, img.p + gd + 4, 4);
	put32(img.p + (size_t)le32toh(gt1) * 512 + 8, 0x7ffffff0);
	b = open_mem(&img, "gt.vmdk");
	CHECK(b);
	check_all(b, vb_mixed, 8192, 65536, 4096 * 512);
	bdev_close(b);

	/* Both directories gone: a clear error, no crash. */
	put32(img.p + gd + 4, 0x7fffffff);
	put32(img.p + rgd + 4, 0x7fffffff);
	CHECK(open_mem(&img, "both.vmdk") == NULL);
	CHECK(strstr(bdev_errmsg(), "both.vmdk") && strstr(bdev_errmsg(), "gdOffset"));
	free(img.p);
}

/* Open must fail and name the file and the field. */
static void expect_open_fail(struct vb *img, const char *n1, const char *n2)
{
	CHECK(open_mem(img, "bad.vmdk") == NULL);
	if (!strstr(bdev_errmsg(), "bad.vmdk") || !strstr(bdev_errmsg(), n1) ||
	    (n2 && !strstr(bdev_errmsg(), n2))) {
		fprintf(stderr, "message \"%s\" lacks \"%s\"\n", bdev_errmsg(), n1);
		exit(1);
	}
}

static void test_bad_headers(void)
{
	struct vb_sparse_opts o = sparse_opts(vb_mixed);
	struct vb img = vb_build_sparse(&o, NULL, NULL);
	uint8_t save[512];

	memcpy(save, img.p, 512);
	put32(img.p + 4, 9);
	expect_open_fail(&img, "version at offset 4 is 9", NULL);
	memcpy(img.p, save, 512);
	put64(img.p + 20, 12);
	expect_open_fail(&img, "grainSize at offset 20 is 12", "power of two");
	memcpy(img.p, save, 512);
	put64(img.p + 20, 1u << 22);
	expect_open_fail(&img, "grainSize at offset 20", NULL);
	memcpy(img.p, save, 512);
	put32(img.p + 8, 0x00800003);
	expect_open_fail(&img, "flags at offset 8", "incompatible");
	memcpy(img.p, save, 512);
	img.p[75] = '\n'; /* "\r\n" turned into "\n\n" by a text transfer */
	expect_open_fail(&img, "newline check bytes at offset 73", "text-mode");
	memcpy(img.p, save, 512);
	put32(img.p + 44, 0);
	expect_open_fail(&img, "numGTEsPerGT at offset 44 is 0", NULL);
	memcpy(img.p, save, 512);
	put64(img.p + 28, 1000000);
	expect_open_fail(&img, "descriptorOffset at offset 28", NULL);
	memcpy(img.p, save, 512);
	put64(img.p + 36, 100000);
	expect_open_fail(&img, "descriptorSize at offset 36", NULL);
	memcpy(img.p, save, 512);
	img.p[77] = 5;
	expect_open_fail(&img, "compressAlgorithm at offset 77 is 5", NULL);
	memcpy(img.p, save, 512);
	put64(img.p + 12, UINT64_C(1) << 50);
	expect_open_fail(&img, "capacity at offset 12", NULL);
	memcpy(img.p, save, 512);
	memset(img.p + 512, 0, sizeof(desc_ms));
	memcpy(img.p + 512, "createType=\"whatever\"\n", 22);
	expect_open_fail(&img, "whatever", NULL);
	free(img.p);
}

/* Every prefix of an image (in steps) opens and reads without crashing. */
static void test_truncated(const struct vb *full, size_t step)
{
	uint8_t *buf = malloc(65536);

	if (step < full->len / 48)
		step = full->len / 48 | 1; /* keep the test quick */
	for (size_t len = 0; len < full->len; len += step) {
		struct vb cut = { .p = malloc(len + 1), .len = len };
		memcpy(cut.p, full->p, len);
		struct bdev *b = open_mem(&cut, "cut.vmdk");
		if (b) {
			struct bdev_info info;
			bdev_get_info(b, &info);
			for (uint64_t off = 0; off < info.size; off += 65536) {
				size_t n = info.size - off < 65536 ? info.size - off : 65536;
				(void)bdev_pread(b, buf, n, off);
			}
			bdev_close(b);
		} else {
			CHECK(strstr(bdev_errmsg(), "cut.vmdk"));
		}
		free(cut.p);
	}
	free(buf);
}

static const char desc_so[] =
	"# Disk DescriptorFile\nversion=1\nCID=0badcafe\nparentCID=ffffffff\n"
	"createType=\"streamOptimized\"\nRW 3001 SPARSE \"s.vmdk\"\n";

static void test_stream_gd_at_end(void)
{
	struct vb_sparse_opts o = {
		.capacity = 3001, .grain = 128, .gtes = 512, .version = 3,
		.flags = VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_COMPRESSED | VMDK4_FLAG_MARKERS,
		.stream = true, .desc = desc_so, .grain_fn = vb_every_other,
	};
	struct vb img = vb_build_stream(&o);
	struct bdev *b = open_mem(&img, "stream.vmdk");
	struct bdev_info info;
	struct bdev_map m;

	CHECK(b);
	bdev_get_info(b, &info);
	CHECK(info.compressed);
	CHECK(strcmp(info.subformat, "streamOptimized") == 0);
	CHECK_EQ(info.cid, 0x0badcafe);
	check_all(b, vb_every_other, 65536, 4096, 3001 * 512);
	check_all(b, vb_every_other, 65536, 100000, 3001 * 512);
	CHECK_EQ(b->fmt->map(b, 4 * 65536 + 10, 100, &m), 0);
	CHECK_EQ(m.kind, BDEV_MAP_COMPRESSED);
	CHECK_EQ(m.grain_off, 4 * 65536);
	CHECK_EQ(m.grain_size, 65536);
	bdev_close(b);
	test_truncated(&img, 509);

	/* The footer is lost (a cut download): the map is rebuilt by walking
	   the grain records, skipping the unknown marker. */
	memset(img.p + img.len - 1024, 0, 512);
	b = open_mem(&img, "nofooter.vmdk");
	CHECK(b);
	check_all(b, vb_every_other, 65536, 65536, 3001 * 512);
	bdev_close(b);

	/* A damaged record: a read error naming the file, not a crash. */
	free(img.p);
	img = vb_build_stream(&o);
	uint8_t *rec = img.p + 512 * 2;  /* first grain record, after desc */
	CHECK_EQ(rec[0], 4 * 128 % 256);
	rec[20] ^= 0xff;
	rec[21] ^= 0xff;
	b = open_mem(&img, "dmg.vmdk");
	CHECK(b);
	uint8_t buf[512];
	CHECK(bdev_pread(b, buf, 512, 4 * 65536) < 0);
	CHECK(strstr(bdev_errmsg(), "dmg.vmdk"));
	bdev_close(b);
	free(img.p);
}

static void test_cowd(void)
{
	struct vb img = vb_build_cowd(20000, 4, vb_mixed);
	struct bdev *b = open_mem(&img, "cowd.vmdk");
	struct bdev_info info;

	CHECK(b);
	bdev_get_info(b, &info);
	CHECK(strcmp(info.subformat, "vmfsSparse") == 0);
	check_all(b, vb_mixed, 2048, 65536, 20000 * 512);
	check_all(b, vb_mixed, 2048, 1000, 20000 * 512);
	bdev_close(b);
	test_truncated(&img, 1531);
	put32(img.p + 24, 0);
	expect_open_fail(&img, "numGDEntries at offset 24 is 0", NULL);
	free(img.p);
}

static void test_sesparse(void)
{
	struct vb img = vb_build_sesparse(70000, vb_mixed);
	struct bdev *b = open_mem(&img, "se.vmdk");
	struct bdev_info info;
	uint64_t pnum;

	CHECK(b);
	bdev_get_info(b, &info);
	CHECK(strcmp(info.subformat, "seSparse") == 0);
	check_all(b, vb_mixed, 4096, 65536, 70000 * 512);
	CHECK_EQ(bdev_block_status(b, 5 * 4096, 4096, &pnum), BDEV_STATUS_ZERO);
	bdev_close(b);
	test_truncated(&img, 4099);
	put64(img.p + 8, 1);
	expect_open_fail(&img, "version at offset 8", NULL);
	free(img.p);
}

static void test_descriptor_from_memory(void)
{
	static char d1[] = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
			   "createType=\"monolithicFlat\"\nRW 100 FLAT \"disk-flat.vmdk\" 0\n";
	static char d2[] = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
			   "createType=\"monolithicFlat\"\nRW 100 ZERO\nNOACCESS 20 ZERO\n"
			   "RDONLY 8 ZERO\n";
	struct vb v1 = { .p = (uint8_t *)d1, .len = sizeof(d1) - 1 };
	struct vb v2 = { .p = (uint8_t *)d2, .len = sizeof(d2) - 1 };
	struct bdev *b;
	uint8_t buf[1024];
	struct bdev_extent_info ei;

	CHECK(open_mem(&v1, "desc.vmdk") == NULL);
	CHECK(strstr(bdev_errmsg(), "line 6") && strstr(bdev_errmsg(), "single file"));
	b = open_mem(&v2, "zero.vmdk");
	CHECK(b);
	CHECK_EQ(bdev_pread(b, buf, 1024, 0), 0);
	CHECK(bdev_pread(b, buf, 512, 100 * 512) < 0);
	CHECK(strstr(bdev_errmsg(), "NOACCESS"));
	CHECK_EQ(bdev_get_extent(b, 2, &ei), 0);
	CHECK_EQ(ei.access, BDEV_ACCESS_RDONLY);
	CHECK_EQ(ei.offset, 120 * 512);
	CHECK(strcmp(ei.type, "ZERO") == 0);
	bdev_close(b);
}

int main(void)
{
	test_sparse();
	test_damaged_gd();
	test_bad_headers();
	test_stream_gd_at_end();
	test_cowd();
	test_sesparse();
	test_descriptor_from_memory();
	{
		struct vb_sparse_opts o = sparse_opts(vb_every_other);
		struct vb img = vb_build_sparse(&o, NULL, NULL);
		test_truncated(&img, 777);
		free(img.p);
	}
	printf("ok\n");
	return 0;
}
