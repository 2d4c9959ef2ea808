/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_snapshot.c - `vmdk snapshot create IMAGE CHILD`: freeze IMAGE under a
 * new delta disk CHILD (monolithicSparse) that later writes go to.
 */
#include <getopt.h>
#include <string.h>

#include "common.h"

static const char snapshot_help[] =
"Usage: vmdk snapshot create IMAGE CHILD\n"
"\n"
"Create CHILD, a monolithicSparse delta disk on IMAGE: parentCID is IMAGE's\n"
"CID, parentFileNameHint is IMAGE relative to CHILD's folder. IMAGE is left\n"
"as it is, CID included, so deltas already made on it stay valid (it is\n"
"read-only from now on, as far as the chain is concerned). CHILD must not\n"
"exist; a failed command changes nothing. Use\n"
"CHILD for the disk from here on and 'vmdk commit CHILD' to fold it back.\n"
"The engine does the same live (bdev_snapshot) under a running writer.\n"
"\n"
"Options:\n"
"  -h, --help    show this help\n"
"\n"
"Examples:\n"
"  vmdk snapshot create disk.vmdk disk-snap1.vmdk\n"
"  vmdk commit disk-snap1.vmdk\n"
"\n"
"Exit status: 0 on success, 1 on error.\n";

int cmd_snapshot(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bdev *b;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(snapshot_help, stdout);
			return 0;
		default:
			tool_usage_err("snapshot", "unknown option");
			return 1;
		}
	}
	if (optind >= argc || strcmp(argv[optind], "create") != 0) {
		tool_usage_err("snapshot", "expected 'create IMAGE CHILD'");
		return 1;
	}
	if (argc - optind != 3) {
		tool_usage_err("snapshot", "'create' takes IMAGE and CHILD");
		return 1;
	}
	if (tool_open(argv[optind + 1], NULL, false, true, &b) < 0)
		return 1;
	ret = bdev_snapshot(b, argv[optind + 2]);
	if (ret < 0) {
		tool_bdev_err(ret, "snapshot");
		bdev_close(b);
		return 1;
	}
	ret = bdev_close(b);
	if (ret < 0) {
		tool_bdev_err(ret, "close");
		return 1;
	}
	return 0;
}
