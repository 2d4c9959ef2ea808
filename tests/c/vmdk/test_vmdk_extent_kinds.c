/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_vmdk_extent_kinds.c - the extent-kind table: each magic finds its
 * kind's ops (with every op filled), other bytes and short buffers find
 * none; vmdk_find_extent finds the extent holding an offset, or none.
 */
#include <string.h>

#include "../testutil.h"
#include "vmdk/vmdk.h"

static void test_probe(void)
{
	uint8_t se[8] = { 0xbe, 0xba, 0xfe, 0xca, 0, 0, 0, 0 };
	uint8_t none[8] = "# Disk D";
	const struct vmdk_extent_ops *kinds[] = { &vmdk_hosted_ops,
		&vmdk_cowd_ops, &vmdk_sesparse_ops };

	CHECK(vmdk_extent_ops_probe((const uint8_t *)"KDMV\1\0\0\0", 8) ==
	      &vmdk_hosted_ops);
	CHECK(vmdk_extent_ops_probe((const uint8_t *)"COWD\1\0\0\0", 8) ==
	      &vmdk_cowd_ops);
	CHECK(vmdk_extent_ops_probe(se, sizeof(se)) == &vmdk_sesparse_ops);
	CHECK(vmdk_extent_ops_probe(none, sizeof(none)) == NULL);
	CHECK(vmdk_extent_ops_probe((const uint8_t *)"KDM", 3) == NULL);
	CHECK(vmdk_extent_ops_probe(se, 7) == NULL);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		const struct vmdk_extent_ops *k = kinds[i];
		CHECK(k->name && k->create_type && k->probe && k->open &&
		      k->decode && k->check);
	}
}

static void test_find_extent(void)
{
	struct vmdk_extent ext[3] = {
		{ .start = 0, .size = 1024 },
		{ .start = 1024, .size = 512 },
		{ .start = 1536, .size = 4096 },
	};
	struct vmdk_image img = { .extents = ext, .n_extents = 3 };

	CHECK(vmdk_find_extent(&img, 0) == &ext[0]);
	CHECK(vmdk_find_extent(&img, 1023) == &ext[0]);
	CHECK(vmdk_find_extent(&img, 1024) == &ext[1]);
	CHECK(vmdk_find_extent(&img, 1535) == &ext[1]);
	CHECK(vmdk_find_extent(&img, 5631) == &ext[2]);
	CHECK(vmdk_find_extent(&img, 5632) == NULL);
}

int main(void)
{
	test_probe();
	test_find_extent();
	return 0;
}
