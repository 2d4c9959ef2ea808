/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_create.c - `vmdk create`: a new, empty VMDK (any subformat) or raw
 * image, or a delta disk on a parent; and the `-o` option list parser that
 * `vmdk convert -O vmdk` shares.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char create_help[] =
"Usage: vmdk create [-f FMT] [-o OPTIONS] [-b PARENT] IMAGE [SIZE]\n"
"\n"
"Create IMAGE (never overwriting a file). SIZE takes k, M, G, T suffixes\n"
"(binary units) and must be a multiple of 512 bytes; with -b it may be\n"
"left out and the delta disk gets its parent's size.\n"
"\n"
"Options:\n"
"  -f FMT        vmdk (default) or raw\n"
"  -o OPTIONS    comma-separated, like qemu-img:\n"
"                  subformat=monolithicSparse (default) | monolithicFlat |\n"
"                    twoGbMaxExtentSparse | twoGbMaxExtentFlat |\n"
"                    streamOptimized | vmfs | vmfsSparse\n"
"                  adapter_type=lsilogic (default, as VMware writes; it\n"
"                    used to be ide) | ide | buslogic | legacyESX |\n"
"                    pvscsi: ddb.adapterType, and the geometry (255\n"
"                    heads; 16 for ide)\n"
"                  hwversion=N      ddb.virtualHWVersion (default 4)\n"
"                  zeroed_grain=on  zeroed-grain entries (sparse, header v2)\n"
"                  grain_size=SIZE  sparse grain (default 64k)\n"
"  -b PARENT     make a delta disk on PARENT (a VMDK): parentCID is the\n"
"                parent's CID, parentFileNameHint is relative to IMAGE's folder\n"
"  -h, --help    show this help\n"
"\n"
"Files made: monolithic kinds one file; monolithicFlat/vmfs IMAGE plus\n"
"NAME-flat.vmdk; twoGbMaxExtent* NAME-s001.vmdk / NAME-f001.vmdk... of at\n"
"most 2047 MiB each; vmfsSparse NAME-delta.vmdk (a COWD extent).\n"
"\n"
"Examples:\n"
"  vmdk create disk.vmdk 20G\n"
"  vmdk create -o subformat=streamOptimized,adapter_type=lsilogic s.vmdk 1G\n"
"  vmdk create -b base.vmdk child.vmdk\n"
"\n"
"Exit status: 0 on success, 1 on error.\n";

/* Parse qemu-img style "key=value,key=value" into o. */
int parse_create_opts(const char *cmd, char *list, struct bdev_create_opts *o)
{
	char *save = NULL;

	for (char *kv = strtok_r(list, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *v = strchr(kv, '=');
		uint64_t n;

		if (!v) {
			tool_usage_err(cmd, "option '%s' needs a value (key=value)", kv);
			return -1;
		}
		*v++ = '\0';
		if (!strcmp(kv, "subformat")) {
			o->subformat = v;
		} else if (!strcmp(kv, "adapter_type")) {
			o->adapter_type = v;
		} else if (!strcmp(kv, "hwversion")) {
			if (parse_uint(v, 1, 1000, &n)) {
				tool_usage_err(cmd, "hwversion must be a number, not '%s'", v);
				return -1;
			}
			o->hwversion = (unsigned)n;
		} else if (!strcmp(kv, "zeroed_grain")) {
			if (!strcmp(v, "on") || !strcmp(v, "true"))
				o->zeroed_grain = true;
			else if (!strcmp(v, "off") || !strcmp(v, "false"))
				o->zeroed_grain = false;
			else {
				tool_usage_err(cmd, "zeroed_grain must be on or off, not '%s'", v);
				return -1;
			}
		} else if (!strcmp(kv, "grain_size")) {
			if (parse_size(v, &o->grain_size)) {
				tool_usage_err(cmd, "bad grain_size '%s'", v);
				return -1;
			}
		} else {
			tool_usage_err(cmd, "unknown option '%s' (expected subformat, "
				       "adapter_type, hwversion, zeroed_grain, grain_size)", kv);
			return -1;
		}
	}
	return 0;
}

int cmd_create(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bdev_create_opts o = { 0 };
	const char *path;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+hf:o:b:F:", lopts, NULL)) != -1) {
		switch (c) {
		case 'f': o.format = optarg; break;
		case 'o':
			if (parse_create_opts("create", optarg, &o))
				return 1;
			break;
		case 'b': o.backing = optarg; break;
		case 'F':
			if (strcmp(optarg, "vmdk")) {
				tool_usage_err("create", "a backing file must be vmdk, not '%s'",
					       optarg);
				return 1;
			}
			break;
		case 'h': fputs(create_help, stdout); return 0;
		default: tool_usage_err("create", "bad option"); return 1;
		}
	}
	if (optind >= argc || argc - optind > 2) {
		tool_usage_err("create", "expected IMAGE [SIZE]");
		return 1;
	}
	path = argv[optind];
	if (optind + 1 < argc && parse_size(argv[optind + 1], &o.size)) {
		tool_usage_err("create", "bad size '%s' (a number with an optional "
			       "k, M, G or T suffix)", argv[optind + 1]);
		return 1;
	}
	if (optind + 1 >= argc && !o.backing) {
		tool_usage_err("create", "a SIZE is needed without -b");
		return 1;
	}
	ret = bdev_create(path, &o);
	if (ret < 0) {
		tool_bdev_err(ret, path);
		return 1;
	}
	return 0;
}
