/* SPDX-License-Identifier: Apache-2.0 */
/* main.c - `vmdk`: inspect, read, compare and benchmark VMDK images. */
#include <stdio.h>
#include <string.h>

#include "common.h"

#ifndef OVK_VERSION
#define OVK_VERSION "unknown"
#endif

static const char usage_text[] =
"Usage: vmdk COMMAND [OPTIONS] ARGS...\n"
"       vmdk --help | --version\n"
"\n"
"Inspect, read, compare and benchmark VMDK (and raw) disk images with the\n"
"ovk block engine. Options mirror qemu-img's where the operation is the same.\n"
"\n"
"Commands:\n"
"  create   [-f FMT] [-o subformat=...,adapter_type=...,hwversion=N,zeroed_grain=on]\n"
"           [-b PARENT] IMAGE [SIZE]\n"
"           make a new image of any VMDK subformat, or a delta disk\n"
"  check    [--output=human|json] [-r leaks|all] IMAGE\n"
"           check (and repair) grain tables; exit 0/2/3 like qemu-img\n"
"  info     [--output=human|json] [-U] IMAGE\n"
"           what the image is: format, createType, size, CIDs, delta chain,\n"
"           extents, allocation of the top layer\n"
"  convert  [-p] [-U] [-m N] [--threads N] -O raw SRC DST\n"
"           flatten the whole chain into a raw file (holes stay sparse)\n"
"  map      [--output=human|json] [-U] IMAGE\n"
"           which ranges hold data, zeros, or nothing, and in which layer\n"
"  compare  [-U] A B\n"
"           exit 0 if the two disks read the same, 1 if not, 2 on error\n"
"  snapshot create IMAGE CHILD\n"
"           freeze IMAGE under a new delta disk CHILD\n"
"  commit   CHILD\n"
"           merge the delta disk CHILD into its parent, then delete it\n"
"  checkpoint create|delete|list|changed IMAGE [NAME]\n"
"           changed-block tracking: named checkpoints and what changed\n"
"           since each (for incremental backup)\n"
"  resize   [--shrink] IMAGE [+|-]SIZE\n"
"           change the virtual size in place (flat kinds, monolithicSparse)\n"
"  bench    [-c COUNT] [-d DEPTH] [-s SIZE] [-S STEP] [-o OFFSET] [-w] [-U] IMAGE\n"
"           time COUNT requests, like qemu-img bench\n"
"\n"
"Run 'vmdk COMMAND --help' for a command's options and examples.\n"
"\n"
"Examples:\n"
"  vmdk info disk.vmdk\n"
"  vmdk convert -p -O raw disk.vmdk disk.raw\n"
"  vmdk compare disk.vmdk disk.raw && echo same\n"
"\n"
"Errors are printed as 'vmdk: MESSAGE' on stderr, naming the file and the\n"
"field at fault; the exit status is then non-zero.\n";

int main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		fputs(usage_text, stderr);
		return 1;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") ||
	    !strcmp(cmd, "help")) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
		printf("vmdk (ovk) %s\n", OVK_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "info"))
		return cmd_info(argc - 1, argv + 1);
	if (!strcmp(cmd, "convert"))
		return cmd_convert(argc - 1, argv + 1);
	if (!strcmp(cmd, "map"))
		return cmd_map(argc - 1, argv + 1);
	if (!strcmp(cmd, "compare"))
		return cmd_compare(argc - 1, argv + 1);
	if (!strcmp(cmd, "check"))
		return cmd_check(argc - 1, argv + 1);
	if (!strcmp(cmd, "create"))
		return cmd_create(argc - 1, argv + 1);
	if (!strcmp(cmd, "snapshot"))
		return cmd_snapshot(argc - 1, argv + 1);
	if (!strcmp(cmd, "commit"))
		return cmd_commit(argc - 1, argv + 1);
	if (!strcmp(cmd, "checkpoint"))
		return cmd_checkpoint(argc - 1, argv + 1);
	if (!strcmp(cmd, "resize"))
		return cmd_resize(argc - 1, argv + 1);
	if (!strcmp(cmd, "bench"))
		return cmd_bench(argc - 1, argv + 1);
	tool_err("unknown command '%s'", cmd);
	fputs("Try 'vmdk --help' for the list of commands.\n", stderr);
	return 1;
}
