/* SPDX-License-Identifier: Apache-2.0 */
/* test_vmdk_descriptor.c - the descriptor parser on text in memory. */
#include <string.h>

#include "../testutil.h"
#include "vmdk/vmdk.h"

static const char good[] =
	"# Disk DescriptorFile\n"
	"version=1\n"
	"encoding=\"UTF-8\"\r\n"
	"CID=1a2b3c4d\n"
	"parentCID=ffffffff\n"
	"createType=\"twoGbMaxExtentSparse\"\n"
	"\n"
	"# Extent description\n"
	"RW 4192256 SPARSE \"my disk-s001.vmdk\"\n"
	"RDONLY 2048 FLAT \"d\xc3\xa4ta \xe2\x82\xac.bin\" 128\n"
	"NOACCESS 1024 ZERO\n"
	"  RW 8 VMFS \"raw.bin\"\n"
	"\n"
	"ddb.virtualHWVersion = \"4\"\n"
	"ddb.geometry.cylinders = \"16383\"\n"
	"ddb.adapterType = \"lsilogic\"\n"
	"ddb.uuid = \"60 00 C2 9b\"\n"
	"isNativeSnapshot = \"no\"\n";

static void test_good(void)
{
	struct vmdk_desc d;

	CHECK_EQ(vmdk_desc_parse(good, sizeof(good) - 1, "good.vmdk", &d), 0);
	CHECK_EQ(d.version, 1);
	CHECK(strcmp(d.encoding, "UTF-8") == 0);
	CHECK(d.has_cid);
	CHECK_EQ(d.cid, 0x1a2b3c4d);
	CHECK_EQ(d.parent_cid, 0xffffffffu);
	CHECK(strcmp(d.create_type, "twoGbMaxExtentSparse") == 0);
	CHECK(d.parent_hint == NULL);
	CHECK_EQ(d.n_extents, 4);
	CHECK_EQ(d.extents[0].access, BDEV_ACCESS_RW);
	CHECK_EQ(d.extents[0].type, VMDK_EXT_SPARSE);
	CHECK_EQ(d.extents[0].sectors, 4192256);
	CHECK(strcmp(d.extents[0].name, "my disk-s001.vmdk") == 0);
	CHECK_EQ(d.extents[1].access, BDEV_ACCESS_RDONLY);
	CHECK_EQ(d.extents[1].type, VMDK_EXT_FLAT);
	CHECK_EQ(d.extents[1].offset, 128);
	CHECK(strcmp(d.extents[1].name, "d\xc3\xa4ta \xe2\x82\xac.bin") == 0);
	CHECK_EQ(d.extents[2].access, BDEV_ACCESS_NOACCESS);
	CHECK_EQ(d.extents[2].type, VMDK_EXT_ZERO);
	CHECK(d.extents[2].name == NULL);
	CHECK_EQ(d.extents[3].type, VMDK_EXT_VMFS);
	CHECK_EQ(d.extents[3].line, 12);
	CHECK(strcmp(vmdk_desc_ddb(&d, "adapterType"), "lsilogic") == 0);
	CHECK(strcmp(vmdk_desc_ddb(&d, "geometry.cylinders"), "16383") == 0);
	CHECK(strcmp(vmdk_desc_ddb(&d, "uuid"), "60 00 C2 9b") == 0);
	CHECK(vmdk_desc_ddb(&d, "nope") == NULL);
	vmdk_desc_free(&d);
}

/* Parsing text must fail and the message must contain every needle. */
static void expect_fail(const char *text, const char *n1, const char *n2)
{
	struct vmdk_desc d;
	int ret = vmdk_desc_parse(text, strlen(text), "bad.vmdk", &d);

	if (ret == 0) {
		fprintf(stderr, "parsed but should not:\n%s\n", text);
		exit(1);
	}
	if (!strstr(bdev_errmsg(), "bad.vmdk") || (n1 && !strstr(bdev_errmsg(), n1)) ||
	    (n2 && !strstr(bdev_errmsg(), n2))) {
		fprintf(stderr, "message \"%s\" lacks \"%s\"/\"%s\"\n", bdev_errmsg(),
			n1, n2 ? n2 : "");
		exit(1);
	}
	CHECK(d.extents == NULL && d.create_type == NULL);
}

#define HDR "version=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"

static void test_bad(void)
{
	expect_fail(HDR "RW 100 FLAT \"a.bin\" 0\nthis is junk\n", "line 6", "key=value");
	expect_fail(HDR "RW abc FLAT \"a.bin\"\n", "line 5", "size in sectors");
	expect_fail(HDR "RW 0 FLAT \"a.bin\"\n", "line 5", "expected 1..");
	expect_fail(HDR "RW 99999999999999999999999 FLAT \"a.bin\"\n", "line 5", NULL);
	expect_fail(HDR "RW 100 FLOPPY \"a.bin\"\n", "line 5", "FLOPPY");
	expect_fail(HDR "RW 100 FLAT \"a.bin\n", "line 5", "closing quote");
	expect_fail(HDR "RW 100 FLAT\n", "line 5", "file name");
	expect_fail(HDR "RW 100 SPARSE \"a.vmdk\" 7\n", "line 5", "no offset");
	expect_fail(HDR "RW 100 ZERO \"a.bin\"\n", "line 5", "ZERO");
	expect_fail(HDR "RW 100 FLAT \"a.bin\" x12\n", "line 5", "offset");
	expect_fail("version=7\ncreateType=\"monolithicFlat\"\n", "line 1", "version");
	expect_fail("CID=xyz\ncreateType=\"monolithicFlat\"\n", "line 1", "CID");
	expect_fail("parentCID=123456789\ncreateType=\"vmfs\"\n", "line 1", "parentCID");
	expect_fail("version=1\nRW 100 FLAT \"a\" 0\n", "createType", NULL);
	expect_fail("createType=\"strangeType\"\n", "strangeType", "unknown");
	expect_fail(HDR "=value\n", "line 5", "key");
}

static void test_bounds(void)
{
	size_t n = VMDK_DESC_MAX_BYTES + 100;
	char *big = malloc(n + 1);
	struct vmdk_desc d;

	memset(big, '#', n);
	big[n] = 0;
	CHECK(vmdk_desc_parse(big, n, "big.vmdk", &d) == -EFBIG);
	CHECK(strstr(bdev_errmsg(), "at most"));
	free(big);

	/* NUL padding (embedded descriptors) ends the text. */
	char emb[512] = HDR "RW 8 FLAT \"x\" 0\n";
	CHECK_EQ(vmdk_desc_parse(emb, sizeof(emb), "emb", &d), 0);
	CHECK_EQ(d.n_extents, 1);
	vmdk_desc_free(&d);

	/* No version line: treated as version 1. */
	const char *nov = "createType=\"vmfs\"\nRW 8 VMFS \"x\"\n";
	CHECK_EQ(vmdk_desc_parse(nov, strlen(nov), "nov", &d), 0);
	CHECK_EQ(d.version, 1);
	vmdk_desc_free(&d);

	const char *hint = HDR "parentFileNameHint=\"base disk.vmdk\"\nRW 8 VMFS \"x\"\n";
	CHECK_EQ(vmdk_desc_parse(hint, strlen(hint), "hint", &d), 0);
	CHECK(strcmp(d.parent_hint, "base disk.vmdk") == 0);
	vmdk_desc_free(&d);
}

static void test_probe(void)
{
	const char *a = "# Disk DescriptorFile\nversion=1\n";
	const char *b = "\n  \n# comment\nversion=1\r\ncreateType=\"vmfs\"\n";
	const char *c = "hello world\nversion=1\n";
	const char *e = "";

	CHECK_EQ(vmdk_desc_probe((const uint8_t *)a, strlen(a)), 100);
	CHECK_EQ(vmdk_desc_probe((const uint8_t *)b, strlen(b)), 100);
	CHECK_EQ(vmdk_desc_probe((const uint8_t *)c, strlen(c)), 0);
	CHECK_EQ(vmdk_desc_probe((const uint8_t *)e, 0), 0);
}

int main(void)
{
	test_good();
	test_bad();
	test_bounds();
	test_probe();
	printf("ok\n");
	return 0;
}
