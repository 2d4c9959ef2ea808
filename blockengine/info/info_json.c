/* SPDX-License-Identifier: Apache-2.0 */
/*
 * info_json.c - what `vmdk info` reports about an image: the allocation
 * summary and the stable JSON document. Shared by the vmdk tool and by
 * vmdkfs, whose info.json must be the same document.
 */
#include <inttypes.h>
#include <string.h>

#include "info_json.h"

/* Write s as a JSON string literal (null for NULL). */
void json_str(FILE *f, const char *s)
{
	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		switch (c) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (c < 0x20)
				fprintf(f, "\\u%04x", c);
			else
				fputc(c, f);
		}
	}
	fputc('"', f);
}

/* Bytes of the top layer that hold data, zeroed grains or nothing. */
int info_alloc_sum(struct bdev *b, uint64_t size, struct alloc_sum *s)
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

/* "RW", "RDONLY" or "NOACCESS". */
const char *info_access_name(enum bdev_access a)
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

/* The `vmdk info --output=json` document (keys documented in cmd_info.c). */
void info_print_json(FILE *f, struct bdev *b, const struct bdev_info *in,
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
			i ? "," : "", i, info_access_name(e.access));
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
	fputs("\n  ],\n  \"ddb\": {", f);
	for (i = 0, d = 0;; i++) {
		const char *k, *v, *pk, *pv;
		unsigned j;

		if (bdev_get_ddb(b, i, &k, &v) < 0)
			break;
		/* a repeated key keeps its first value, as the engine reads it */
		for (j = 0; j < i; j++)
			if (bdev_get_ddb(b, j, &pk, &pv) == 0 && !strcmp(pk, k))
				break;
		if (j < i)
			continue;
		fputs(d++ ? ",\n    " : "\n    ", f);
		json_str(f, k);
		fputs(": ", f);
		json_str(f, v);
	}
	fprintf(f, "%s},\n  \"allocation\": {\"data\": %" PRIu64
		", \"zero\": %" PRIu64 ", \"unallocated\": %" PRIu64 "}\n}\n",
		d ? "\n  " : "", s->data, s->zero, s->unalloc);
}
