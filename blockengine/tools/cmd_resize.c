/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_resize.c - `vmdk resize [--shrink] IMAGE [+|-]SIZE`: change a VMDK's
 * or raw image's virtual size in place, like qemu-img resize.
 */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "common.h"

static const char resize_help[] =
"Usage: vmdk resize [--shrink] IMAGE [+|-]SIZE\n"
"\n"
"Set IMAGE's virtual size to SIZE, or grow (+) or shrink (-) it by SIZE\n"
"(k, M, G, T suffixes; a multiple of 512 bytes).\n"
"\n"
"Supported: monolithicFlat, vmfs, twoGbMaxExtentFlat (new NAME-fNNN.vmdk\n"
"extent files are added past 2047 MiB), monolithicSparse (new grain tables\n"
"are appended; a full grain directory moves to the end of the file) and\n"
"twoGbMaxExtentSparse (the last extent grows to 2047 MiB, then new\n"
"NAME-sNNN.vmdk extents are added). Refused with the reason:\n"
"streamOptimized (append-only), vmfsSparse and seSparse (delta disks),\n"
"delta disks of any kind. A raw image grows (the new bytes read as zeros)\n"
"or, with --shrink, is truncated.\n"
"\n"
"Crash-safe: new tables and files are written and synced before the header\n"
"or descriptor that names them, so an interrupted resize leaves the old\n"
"image valid (at worst with leaked sectors at the end of a file) and\n"
"running it again finishes the job.\n"
"\n"
"Options:\n"
"  --shrink      allow a smaller size; flat extents lose the bytes past the\n"
"                new end, sparse images shrink only over unallocated space,\n"
"                a raw file is truncated\n"
"  -h, --help    show this help\n"
"\n"
"Examples:\n"
"  vmdk resize disk.vmdk +10G\n"
"  vmdk resize --shrink flat.vmdk 1G\n"
"\n"
"Exit status: 0 on success, 1 on error.\n";

int cmd_resize(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "shrink", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned flags = 0;
	const char *path, *arg;
	struct bdev *b;
	struct bdev_info in;
	uint64_t n, size;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+h", lopts, NULL)) != -1) {
		switch (c) {
		case 's': flags |= BDEV_RESIZE_SHRINK; break;
		case 'h': fputs(resize_help, stdout); return 0;
		default: tool_usage_err("resize", "bad option"); return 1;
		}
	}
	if (argc - optind != 2) {
		tool_usage_err("resize", "expected IMAGE and SIZE");
		return 1;
	}
	path = argv[optind];
	arg = argv[optind + 1];
	if (parse_size(arg[0] == '+' || arg[0] == '-' ? arg + 1 : arg, &n)) {
		tool_usage_err("resize", "bad size '%s' (a number with an optional "
			       "k, M, G or T suffix, maybe after + or -)", arg);
		return 1;
	}
	size = n;
	if (arg[0] == '+' || arg[0] == '-') {
		if (tool_open(path, NULL, true, false, &b) < 0)
			return 1;
		ret = bdev_get_info(b, &in);
		bdev_close(b);
		if (ret < 0) {
			tool_bdev_err(ret, path);
			return 1;
		}
		if (arg[0] == '-' && n >= in.size) {
			tool_err("%s: cannot shrink a %" PRIu64 "-byte disk by %" PRIu64
				 " bytes", path, in.size, n);
			return 1;
		}
		size = arg[0] == '+' ? in.size + n : in.size - n;
	}
	ret = bdev_resize(path, size, flags);
	if (ret < 0) {
		tool_bdev_err(ret, path);
		return 1;
	}
	printf("Image resized.\n");
	return 0;
}
