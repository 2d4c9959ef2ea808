/* SPDX-License-Identifier: Apache-2.0 */
/* cmd_map.c - `vmdk map`: the allocation map across a delta chain. */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "common.h"

static const char map_help[] =
"Usage: vmdk map [--output=human|json] [-U] [-f FMT] IMAGE\n"
"\n"
"Print how every byte of IMAGE reads, walking the delta chain like\n"
"'qemu-img map': runs of data stored in some layer, of zeros (zeroed grains,\n"
"ZERO extents) and of nothing allocated anywhere (reads as zeros). Adjacent\n"
"runs with the same attributes are merged.\n"
"\n"
"Options:\n"
"  --output=FMT  'human' (default) or 'json'\n"
"  -U, --force-share  open without taking locks\n"
"  -f FMT        force the format: 'vmdk' or 'raw'\n"
"  -h, --help    show this help\n"
"\n"
"JSON output: an array of objects, in offset order, covering the disk:\n"
"  {\"start\": N, \"length\": N, \"depth\": D, \"present\": B, \"zero\": B,\n"
"   \"data\": B}\n"
"  depth is the layer that answers (0 = IMAGE itself, 1 = its parent...);\n"
"  present is false where no layer holds the range; data is true where\n"
"  bytes are stored; zero is true where the range reads as zeros.\n"
"\n"
"Human output: one line per run: start and length in hex, depth, and\n"
"'data', 'zero' or 'hole'.\n"
"\n"
"Examples:\n"
"  vmdk map disk.vmdk\n"
"  vmdk map --output=json child.vmdk\n";

struct run {
	uint64_t start, length;
	unsigned depth;
	bool present, zero, data;
};

static void emit(const struct run *r, bool json, bool *first)
{
	if (json) {
		printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
		       ", \"depth\": %u, \"present\": %s, \"zero\": %s"
		       ", \"data\": %s}",
		       *first ? "[" : ",\n", r->start, r->length, r->depth,
		       r->present ? "true" : "false",
		       r->zero ? "true" : "false", r->data ? "true" : "false");
	} else {
		if (*first)
			printf("%-19s %-19s %-6s %s\n", "Offset", "Length",
			       "Depth", "Type");
		printf("0x%-17" PRIx64 " 0x%-17" PRIx64 " %-6u %s\n", r->start,
		       r->length, r->depth,
		       r->data ? "data" : (r->present ? "zero" : "hole"));
	}
	*first = false;
}

int cmd_map(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "output", required_argument, NULL, 'O' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "format", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false, share = false, first = true, have = false;
	const char *format = NULL;
	struct bdev_info in;
	struct bdev *b;
	struct run cur = { 0 };
	uint64_t off = 0;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+hUf:", lopts, NULL)) != -1) {
		switch (c) {
		case 'O':
			if (tool_parse_output("map", optarg, &json) < 0)
				return 1;
			break;
		case 'U': share = true; break;
		case 'f': format = optarg; break;
		case 'h': fputs(map_help, stdout); return 0;
		default: tool_usage_err("map", "bad option"); return 1;
		}
	}
	if (optind != argc - 1) {
		tool_usage_err("map", "expected exactly one IMAGE");
		return 1;
	}
	if (tool_open(argv[optind], format, share, false, &b) < 0)
		return 1;
	ret = bdev_get_info(b, &in);
	while (ret >= 0 && off < in.size) {
		struct run r = { .start = off };
		uint64_t n = 0;
		int k = chain_status(b, off, in.size - off, &n, &r.depth,
				     &r.present);

		if (k < 0) {
			ret = k;
			break;
		}
		r.length = n;
		r.data = k == CHAIN_DATA;
		r.zero = !r.data;
		if (have && cur.depth == r.depth && cur.present == r.present &&
		    cur.data == r.data) {
			cur.length += n;
		} else {
			if (have)
				emit(&cur, json, &first);
			cur = r;
			have = true;
		}
		off += n;
	}
	if (ret < 0) {
		tool_bdev_err(ret, argv[optind]);
		bdev_close(b);
		return 1;
	}
	if (have)
		emit(&cur, json, &first);
	if (json)
		fputs(first ? "[]\n" : "]\n", stdout);
	bdev_close(b);
	return fflush(stdout) ? 1 : 0;
}
