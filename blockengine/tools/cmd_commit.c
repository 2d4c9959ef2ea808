/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_commit.c - `vmdk commit CHILD`: merge a delta disk into its parent
 * and delete it.
 */
#include <getopt.h>

#include "common.h"

static const char commit_help[] =
"Usage: vmdk commit CHILD\n"
"\n"
"Copy every grain CHILD holds (data and zeroed grains) into its parent\n"
"(parentFileNameHint, relative to CHILD's folder), make the parent durable,\n"
"then delete CHILD. Crash-safe: if it is interrupted, run it again; the\n"
"copy is idempotent and CHILD is deleted only once the parent is synced.\n"
"The parent gets a new CID; other deltas on the same parent no longer\n"
"match it.\n"
"\n"
"Options:\n"
"  -h, --help    show this help\n"
"\n"
"Examples:\n"
"  vmdk snapshot create disk.vmdk snap.vmdk\n"
"  vmdk commit snap.vmdk\n"
"\n"
"Exit status: 0 on success, 1 on error.\n";

int cmd_commit(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, ret;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(commit_help, stdout);
			return 0;
		default:
			tool_usage_err("commit", "unknown option");
			return 1;
		}
	}
	if (argc - optind != 1) {
		tool_usage_err("commit", "expected one CHILD image");
		return 1;
	}
	ret = bdev_commit(argv[optind]);
	if (ret < 0) {
		tool_bdev_err(ret, "commit");
		return 1;
	}
	return 0;
}
