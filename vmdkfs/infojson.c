/*
 * infojson.c - info.json: the same document as `vmdk info --output=json`
 * (keys and layout of blockengine/tools/cmd_info.c), built in-process.
 */
#include "vmdkfs.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void json_str(FILE *f, const char *s)
{
	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_cid(FILE *f, bool has, uint32_t v)
{
	if (has)
		fprintf(f, "\"%08" PRIx32 "\"", v);
	else
		fputs("null", f);
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

static const char *yes(bool b)
{
	return b ? "true" : "false";
}

static int sum_allocation(struct bdev *b, uint64_t size, uint64_t *data,
			  uint64_t *zero, uint64_t *unalloc)
{
	uint64_t off = 0;

	*data = *zero = *unalloc = 0;
	while (off < size) {
		uint64_t n = 0;
		int st = bdev_block_status(b, off, size - off, &n);

		if (st < 0)
			return st;
		if (n == 0 || n > size - off)
			n = size - off;
		if (st == BDEV_STATUS_DATA)
			*data += n;
		else if (st == BDEV_STATUS_ZERO)
			*zero += n;
		else
			*unalloc += n;
		off += n;
	}
	return 0;
}

int vmdkfs_info_json(struct vmdkfs *fs, char **out, size_t *len)
{
	uint64_t data, zero, unalloc;
	struct bdev_info in;
	struct bdev *l;
	unsigned i, d;
	FILE *f;
	int ret;

	ret = bdev_get_info(fs->bdev, &in);
	if (ret < 0)
		return ret;
	ret = sum_allocation(fs->bdev, in.size, &data, &zero, &unalloc);
	if (ret < 0)
		return ret;
	f = open_memstream(out, len);
	if (!f)
		return -ENOMEM;

	fputs("{\n  \"filename\": ", f);
	json_str(f, in.filename);
	fputs(",\n  \"format\": ", f);
	json_str(f, in.format);
	fputs(",\n  \"create-type\": ", f);
	json_str(f, in.subformat);
	fprintf(f, ",\n  \"virtual-size\": %" PRIu64, in.size);
	fprintf(f, ",\n  \"cluster-size\": %" PRIu64, in.cluster_size);
	fputs(",\n  \"cid\": ", f);
	json_cid(f, in.has_cid, in.cid);
	fputs(",\n  \"parent-cid\": ", f);
	json_cid(f, in.has_cid, in.parent_cid);
	fputs(",\n  \"parent-hint\": ", f);
	json_str(f, in.parent_hint);
	fprintf(f, ",\n  \"read-only\": %s", yes(in.read_only));
	fprintf(f, ",\n  \"compressed\": %s", yes(in.compressed));
	fprintf(f, ",\n  \"unclean\": %s", yes(in.unclean));

	fputs(",\n  \"chain\": [", f);
	for (l = fs->bdev, d = 0; l; l = bdev_backing(l), d++) {
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
	for (i = 0; i < in.extent_count; i++) {
		struct bdev_extent_info e;

		if (bdev_get_extent(fs->bdev, i, &e) < 0)
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
			yes(e.compressed), yes(e.unclean));
	}
	fprintf(f, "\n  ],\n  \"allocation\": {\"data\": %" PRIu64
		", \"zero\": %" PRIu64 ", \"unallocated\": %" PRIu64 "}\n}\n",
		data, zero, unalloc);
	if (fclose(f) != 0) {
		free(*out);
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}
