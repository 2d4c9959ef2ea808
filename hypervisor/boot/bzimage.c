/* SPDX-License-Identifier: Apache-2.0 */
#include "boot.h"

#include <asm/bootparam.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The setup header starts at 0x1f1 in the image, as in the zero page. */
#define HDR_OFF offsetof(struct boot_params, hdr)
_Static_assert(offsetof(struct boot_params, hdr) == 0x1f1, "setup header at 0x1f1");
_Static_assert(offsetof(struct setup_header, header) == 0x202 - 0x1f1,
	       "HdrS magic at 0x202");
_Static_assert(offsetof(struct setup_header, xloadflags) == 0x236 - 0x1f1,
	       "xloadflags at 0x236");
_Static_assert(offsetof(struct setup_header, init_size) == 0x260 - 0x1f1,
	       "init_size at 0x260");

#define HDRS_MAGIC 0x53726448u /* "HdrS" */

static int fail(char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "%s", msg);
	return -EINVAL;
}

int bzimage_parse(const uint8_t *img, size_t len, struct bzimage_info *info,
		  char *err, size_t errlen)
{
	struct setup_header h;
	uint32_t setup_sects;

	if (len < 0x1000)
		return fail(err, errlen, "too small to be a bzImage");
	memcpy(&h, img + HDR_OFF, sizeof(h));
	if (h.boot_flag != 0xaa55 || h.header != HDRS_MAGIC)
		return fail(err, errlen, "not a Linux bzImage (no HdrS setup header)");
	if (h.version < BOOT_MIN_PROTOCOL) {
		snprintf(err, errlen,
			 "boot protocol %u.%02u is too old: 2.12 or later is needed "
			 "for the 64-bit entry point",
			 h.version >> 8, h.version & 0xff);
		return -EINVAL;
	}
	if (!(h.loadflags & LOADED_HIGH))
		return fail(err, errlen, "a zImage (not loaded high) is not supported");
	if (!(h.xloadflags & XLF_KERNEL_64))
		return fail(err, errlen, "the kernel has no 64-bit entry point (XLF_KERNEL_64)");
	setup_sects = h.setup_sects ? h.setup_sects : 4;
	info->setup_size = (setup_sects + 1) * 512;
	if (info->setup_size >= len)
		return fail(err, errlen, "setup is larger than the file");
	info->version = h.version;
	info->kernel_size = len - info->setup_size;
	info->init_size = h.init_size;
	info->initrd_addr_max = h.initrd_addr_max;
	info->cmdline_size = h.cmdline_size;
	info->xloadflags = h.xloadflags;
	/* A relocatable kernel is best loaded where it prefers to run (no copy
	 * before decompression); otherwise at 1 MiB. */
	if (h.relocatable_kernel && h.pref_address >= BOOT_HIGH_MEM_GPA &&
	    h.kernel_alignment && !(h.pref_address % h.kernel_alignment))
		info->load_addr = h.pref_address;
	else
		info->load_addr = BOOT_HIGH_MEM_GPA;
	if (info->init_size < info->kernel_size)
		info->init_size = info->kernel_size;
	return 0;
}
