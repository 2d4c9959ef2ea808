/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_vmdk_header.c - sparse headers and the tables they point to: the
 * input is one extent file, opened as hosted sparse (header or footer,
 * GD/RGD, stream rebuild), COWD and seSparse in turn.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk/vmdk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef int (*open_fn)(struct vmdk_extent *e, const char *name);

static void try_open(const uint8_t *data, size_t size, open_fn fn)
{
	struct vmdk_extent e;
	struct bsrc *src;

	if (bsrc_open_mem(data, size, "fuzz.vmdk", &src) < 0)
		return;
	memset(&e, 0, sizeof(e));
	e.src = src;
	e.path = "fuzz.vmdk";
	e.size = UINT64_C(1) << 30;
	if (fn(&e, "fuzz.vmdk") == 0 && e.gt_entries) {
		/* Decode every entry of the first table the directory names. */
		uint8_t *gt = malloc(e.gt_bytes);
		for (uint32_t i = 0; gt && i < e.gd_entries && i < 4; i++) {
			uint64_t off;
			if (e.mem_gts) {
				if (!e.mem_gts[i])
					continue;
				memcpy(gt, e.mem_gts[i], e.gt_bytes);
			} else if (!e.gd[i] ||
				   bsrc_read_full(src, gt, e.gt_bytes, e.gd[i]) < 0) {
				continue;
			}
			(void)vmdk_gt_check(&e, gt);
			for (uint32_t j = 0; j < e.gt_entries; j++)
				(void)vmdk_gte_decode(&e, gt, j, &off);
		}
		free(gt);
	}
	vmdk_sparse_tables_free(&e);
	bsrc_close(src);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vmdk_sparse_hdr h;
	uint8_t *copy = malloc(size ? size : 1);

	memcpy(copy, data, size);
	if (size >= 512)
		(void)vmdk_sparse_header_parse(copy, 0, size, "fuzz.vmdk", &h);
	try_open(copy, size, vmdk_sparse_open);
	try_open(copy, size, vmdk_cowd_open);
	try_open(copy, size, vmdk_sesparse_open);
	free(copy);
	return 0;
}
