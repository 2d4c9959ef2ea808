/* SPDX-License-Identifier: Apache-2.0 */
/* cmd_info.c - `vmdk info`: what an image is, as text or stable JSON. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char info_help[] =
"Usage: vmdk info [--output=human|json] [-U] [-f FMT] IMAGE\n"
"\n"
"Show what IMAGE is: format, createType, virtual size, grain (cluster) size,\n"
"CID and parentCID, the delta chain down to the base disk, every extent of\n"
"the top layer, its disk database (the descriptor's ddb.* entries: adapter\n"
"type, geometry, virtual hardware version, UUID, ...), and how much of the\n"
"top layer holds data, zeroed grains or nothing.\n"
"\n"
"Options:\n"
"  --output=FMT  'human' (default) or 'json'\n"
"  -U, --force-share  open without taking locks (the image may be in use)\n"
"  -f FMT        force the format: 'vmdk' or 'raw' (default: probe)\n"
"  -h, --help    show this help\n"
"\n"
"JSON output (one object; keys are stable, new keys may be added):\n"
"  filename        string   the path as given\n"
"  format          string   \"vmdk\" or \"raw\"\n"
"  create-type     string   VMDK createType, or null\n"
"  virtual-size    number   bytes\n"
"  cluster-size    number   grain size in bytes of the first sparse extent,\n"
"                           0 when there is none\n"
"  cid, parent-cid string   8 hex digits, or null for images without CIDs;\n"
"                           parent-cid \"ffffffff\" means no parent\n"
"  parent-hint     string   parentFileNameHint, or null\n"
"  read-only, compressed, unclean   booleans\n"
"  chain           array    one object per layer, top first: depth,\n"
"                           filename, format, create-type, virtual-size,\n"
"                           cid, parent-cid\n"
"  extents         array    one object per extent of the top layer: index,\n"
"                           access (\"RW\"|\"RDONLY\"|\"NOACCESS\"), type,\n"
"                           filename (null for ZERO), offset, size (virtual\n"
"                           bytes), file-offset, grain-size, version,\n"
"                           compressed, unclean\n"
"  ddb             object   the top layer's ddb.* entries without the\n"
"                           prefix, string values as written (\"adapterType\":\n"
"                           \"lsilogic\"); a key repeated in the descriptor\n"
"                           keeps its first value; {} for raw images\n"
"  allocation      object   bytes of the top layer: data, zero, unallocated\n"
"\n"
"Examples:\n"
"  vmdk info disk.vmdk\n"
"  vmdk info --output=json child.vmdk | python3 -m json.tool\n"
"\n"
"Exit status: 0 on success, 1 on error ('vmdk: MESSAGE' on stderr).\n";

static void print_human(FILE *f, struct bdev *b, const struct bdev_info *in,
			const struct alloc_sum *s)
{
	char h[32];
	struct bdev *l;
	unsigned i, d;

	fprintf(f, "image: %s\n", in->filename);
	fprintf(f, "file format: %s\n", in->format);
	if (in->subformat)
		fprintf(f, "create type: %s\n", in->subformat);
	fprintf(f, "virtual size: %s (%" PRIu64 " bytes)\n",
		human_size(in->size, h, sizeof(h)), in->size);
	if (in->cluster_size)
		fprintf(f, "cluster_size: %" PRIu64 "\n", in->cluster_size);
	if (in->has_cid) {
		fprintf(f, "cid: %08" PRIx32 "\n", in->cid);
		fprintf(f, "parent cid: %08" PRIx32 "%s\n", in->parent_cid,
			in->parent_cid == 0xffffffffu ? " (no parent)" : "");
	}
	if (in->parent_hint)
		fprintf(f, "backing file: %s\n", in->parent_hint);
	fprintf(f, "compressed: %s\n", in->compressed ? "yes" : "no");
	fprintf(f, "unclean shutdown: %s\n", in->unclean ? "yes" : "no");
	if (bdev_backing(b)) {
		fputs("chain:\n", f);
		for (l = b, d = 0; l; l = bdev_backing(l), d++) {
			struct bdev_info li;

			if (bdev_get_info(l, &li) < 0)
				break;
			fprintf(f, "    [%u] %s", d, li.filename);
			if (li.has_cid)
				fprintf(f, "  CID %08" PRIx32 " parentCID %08" PRIx32,
					li.cid, li.parent_cid);
			fputc('\n', f);
		}
	}
	if (in->extent_count)
		fputs("extents:\n", f);
	for (i = 0; i < in->extent_count; i++) {
		struct bdev_extent_info e;

		if (bdev_get_extent(b, i, &e) < 0)
			break;
		fprintf(f, "    [%u] %s %s %s\n", i, info_access_name(e.access),
			e.type ? e.type : "?", e.filename ? e.filename : "-");
		fprintf(f, "        virtual offset %" PRIu64 ", size %" PRIu64,
			e.offset, e.size);
		if (e.file_offset)
			fprintf(f, ", file offset %" PRIu64, e.file_offset);
		if (e.grain_size)
			fprintf(f, ", grain %" PRIu64 ", version %" PRIu32,
				e.grain_size, e.version);
		if (e.compressed)
			fputs(", compressed", f);
		if (e.unclean)
			fputs(", unclean", f);
		fputc('\n', f);
	}
	for (i = 0;; i++) {
		const char *k, *v;

		if (bdev_get_ddb(b, i, &k, &v) < 0)
			break;
		if (i == 0)
			fputs("disk database:\n", f);
		fprintf(f, "    %s = %s\n", k, v);
	}
	fputs("allocation (top layer):\n", f);
	fprintf(f, "    data: %s (%" PRIu64 " bytes)\n",
		human_size(s->data, h, sizeof(h)), s->data);
	fprintf(f, "    zero: %s (%" PRIu64 " bytes)\n",
		human_size(s->zero, h, sizeof(h)), s->zero);
	fprintf(f, "    unallocated: %s (%" PRIu64 " bytes)\n",
		human_size(s->unalloc, h, sizeof(h)), s->unalloc);
}

int cmd_info(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "output", required_argument, NULL, 'O' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "format", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false, share = false;
	const char *format = NULL;
	struct bdev_info in;
	struct alloc_sum s;
	struct bdev *b;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+hUf:", lopts, NULL)) != -1) {
		switch (c) {
		case 'O':
			if (tool_parse_output("info", optarg, &json) < 0)
				return 1;
			break;
		case 'U': share = true; break;
		case 'f': format = optarg; break;
		case 'h': fputs(info_help, stdout); return 0;
		default: tool_usage_err("info", "bad option"); return 1;
		}
	}
	if (optind != argc - 1) {
		tool_usage_err("info", "expected exactly one IMAGE");
		return 1;
	}
	if (tool_open(argv[optind], format, share, false, &b) < 0)
		return 1;
	ret = bdev_get_info(b, &in);
	if (ret < 0) {
		tool_bdev_err(ret, argv[optind]);
		bdev_close(b);
		return 1;
	}
	ret = info_alloc_sum(b, in.size, &s);
	if (ret < 0) {
		tool_bdev_err(ret, argv[optind]);
		bdev_close(b);
		return 1;
	}
	if (json)
		info_print_json(stdout, b, &in, &s);
	else
		print_human(stdout, b, &in, &s);
	bdev_close(b);
	return fflush(stdout) ? 1 : 0;
}
