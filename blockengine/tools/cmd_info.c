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
"the top layer, and how much of the top layer holds data, zeroed grains or\n"
"nothing.\n"
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
"  allocation      object   bytes of the top layer: data, zero, unallocated\n"
"\n"
"Examples:\n"
"  vmdk info disk.vmdk\n"
"  vmdk info --output=json child.vmdk | python3 -m json.tool\n"
"\n"
"Exit status: 0 on success, 1 on error ('vmdk: MESSAGE' on stderr).\n";

struct alloc_sum {
	uint64_t data, zero, unalloc;
};

static int sum_allocation(struct bdev *b, uint64_t size, struct alloc_sum *s)
{
	uint64_t off = 0;

	memset(s, 0, sizeof(*s));
	while (off < size) {
		uint64_t n = 0;
		int st = bdev_block_status(b, off, size - off, &n);

		if (st < 0)
			return st;
		if (n == 0 || n > size - off)
			n = size - off;
		if (st == BDEV_STATUS_DATA)
			s->data += n;
		else if (st == BDEV_STATUS_ZERO)
			s->zero += n;
		else
			s->unalloc += n;
		off += n;
	}
	return 0;
}

static const char *access_name(enum bdev_access a)
{
	switch (a) {
	case BDEV_ACCESS_RW: return "RW";
	case BDEV_ACCESS_RDONLY: return "RDONLY";
	case BDEV_ACCESS_NOACCESS: return "NOACCESS";
	}
	return "?";
}

static void json_cid(FILE *f, bool has, uint32_t v)
{
	if (has)
		fprintf(f, "\"%08" PRIx32 "\"", v);
	else
		fputs("null", f);
}

static void print_json(FILE *f, struct bdev *b, const struct bdev_info *in,
		       const struct alloc_sum *s)
{
	struct bdev *l;
	unsigned i, d;

	fputs("{\n  \"filename\": ", f);
	json_str(f, in->filename);
	fputs(",\n  \"format\": ", f);
	json_str(f, in->format);
	fputs(",\n  \"create-type\": ", f);
	json_str(f, in->subformat);
	fprintf(f, ",\n  \"virtual-size\": %" PRIu64, in->size);
	fprintf(f, ",\n  \"cluster-size\": %" PRIu64, in->cluster_size);
	fputs(",\n  \"cid\": ", f);
	json_cid(f, in->has_cid, in->cid);
	fputs(",\n  \"parent-cid\": ", f);
	json_cid(f, in->has_cid, in->parent_cid);
	fputs(",\n  \"parent-hint\": ", f);
	json_str(f, in->parent_hint);
	fprintf(f, ",\n  \"read-only\": %s", in->read_only ? "true" : "false");
	fprintf(f, ",\n  \"compressed\": %s", in->compressed ? "true" : "false");
	fprintf(f, ",\n  \"unclean\": %s", in->unclean ? "true" : "false");

	fputs(",\n  \"chain\": [", f);
	for (l = b, d = 0; l; l = bdev_backing(l), d++) {
		struct bdev_info li;

		if (bdev_get_info(l, &li) < 0)
			break;
		fprintf(f, "%s\n    {\"depth\": %u, \"filename\": ", d ? "," : "",
			d);
		json_str(f, li.filename);
		fputs(", \"format\": ", f);
		json_str(f, li.format);
		fputs(", \"create-type\": ", f);
		json_str(f, li.subformat);
		fprintf(f, ", \"virtual-size\": %" PRIu64 ", \"cid\": ", li.size);
		json_cid(f, li.has_cid, li.cid);
		fputs(", \"parent-cid\": ", f);
		json_cid(f, li.has_cid, li.parent_cid);
		fputc('}', f);
	}
	fputs("\n  ],\n  \"extents\": [", f);
	for (i = 0; i < in->extent_count; i++) {
		struct bdev_extent_info e;

		if (bdev_get_extent(b, i, &e) < 0)
			break;
		fprintf(f, "%s\n    {\"index\": %u, \"access\": \"%s\", \"type\": ",
			i ? "," : "", i, access_name(e.access));
		json_str(f, e.type);
		fputs(", \"filename\": ", f);
		json_str(f, e.filename);
		fprintf(f, ", \"offset\": %" PRIu64 ", \"size\": %" PRIu64
			", \"file-offset\": %" PRIu64 ", \"grain-size\": %" PRIu64
			", \"version\": %" PRIu32 ", \"compressed\": %s"
			", \"unclean\": %s}",
			e.offset, e.size, e.file_offset, e.grain_size, e.version,
			e.compressed ? "true" : "false",
			e.unclean ? "true" : "false");
	}
	fprintf(f, "\n  ],\n  \"allocation\": {\"data\": %" PRIu64
		", \"zero\": %" PRIu64 ", \"unallocated\": %" PRIu64 "}\n}\n",
		s->data, s->zero, s->unalloc);
}

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
		fprintf(f, "    [%u] %s %s %s\n", i, access_name(e.access),
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
			if (!strcmp(optarg, "json"))
				json = true;
			else if (!strcmp(optarg, "human"))
				json = false;
			else {
				tool_usage_err("info", "--output must be 'human' or 'json', not '%s'", optarg);
				return 1;
			}
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
	ret = sum_allocation(b, in.size, &s);
	if (ret < 0) {
		tool_bdev_err(ret, argv[optind]);
		bdev_close(b);
		return 1;
	}
	if (json)
		print_json(stdout, b, &in, &s);
	else
		print_human(stdout, b, &in, &s);
	bdev_close(b);
	return fflush(stdout) ? 1 : 0;
}
