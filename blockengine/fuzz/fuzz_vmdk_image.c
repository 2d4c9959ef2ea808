/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_vmdk_image.c - a whole image from memory: probe, open through the
 * engine as a region would be, then block status and reads spread across
 * the disk (compressed grains are inflated through the grain cache).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[65536];
	struct bdev_open_opts o = { .gt_cache_bytes = 64 << 10,
				    .grain_cache_bytes = 1 << 20 };
	uint8_t *copy = malloc(size ? size : 1);
	struct bsrc *src;
	struct bdev *b;
	struct bdev_info info;

	memcpy(copy, data, size);
	o.format = "vmdk";
	if (bsrc_open_mem(copy, size, "fuzz.vmdk", &src) < 0)
		goto out;
	if (bdev_open_layer(NULL, src, &o, &b) < 0)
		goto out;
	bdev_get_info(b, &info);
	for (unsigned i = 0; i < info.extent_count; i++) {
		struct bdev_extent_info ei;
		(void)bdev_get_extent(b, i, &ei);
	}
	if (info.size) {
		/* 48 probes: the start, the end and spread in between. */
		for (unsigned i = 0; i < 48; i++) {
			uint64_t off = i == 47 ? info.size - 1 : info.size / 47 * i;
			uint64_t len = info.size - off < sizeof(buf) ? info.size - off : sizeof(buf);
			uint64_t pnum;
			off &= ~UINT64_C(511);
			len = info.size - off < len ? info.size - off : len;
			(void)bdev_block_status(b, off, len, &pnum);
			(void)bdev_pread(b, buf, (size_t)len, off);
		}
	}
	bdev_close(b);
out:
	free(copy);
	return 0;
}
