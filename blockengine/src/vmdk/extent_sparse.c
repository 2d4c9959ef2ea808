/* SPDX-License-Identifier: Apache-2.0 */
/*
 * extent_sparse.c - hosted sparse extents ("KDMV"), including
 * streamOptimized ones: header or footer, grain directory (primary or
 * redundant), and the grain-table entry decoding shared by all sparse kinds.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

/* Free the directories and rebuilt tables of a sparse extent. */
void vmdk_sparse_tables_free(struct vmdk_extent *e)
{
	if (e->mem_gts) {
		for (uint32_t i = 0; i < e->gd_entries; i++)
			free(e->mem_gts[i]);
		free(e->mem_gts);
		e->mem_gts = NULL;
	}
	free(e->gd);
	free(e->rgd);
	e->gd = e->rgd = NULL;
}

/* Decode GTE idx of gt for e's kind; see vmdk.h. */
int vmdk_gte_decode(const struct vmdk_extent *e, const uint8_t *gt,
		    uint32_t idx, uint64_t *file_off)
{
	if (e->gte_size == 4) {
		uint32_t v;
		memcpy(&v, gt + (size_t)idx * 4, 4);
		v = le32toh(v);
		if (v == 0)
			return VMDK_GRAIN_UNALLOC;
		/* QEMU's rule: 1 means "zeroed" only when the header says
		   zeroed-grain GTEs are in use; otherwise it is sector 1. */
		if (v == 1 && e->zero_gte)
			return VMDK_GRAIN_ZERO;
		*file_off = (uint64_t)v * 512;
		return VMDK_GRAIN_DATA;
	}

	uint64_t v;
	memcpy(&v, gt + (size_t)idx * 8, 8);
	v = le64toh(v);
	switch (v >> 60) {
	case 0:
		if (v == 0)
			return VMDK_GRAIN_UNALLOC;
		break;
	case 1: /* unmapped by the guest (SCSI UNMAP) */
	case 2: /* zeroed */
		return VMDK_GRAIN_ZERO;
	case 3: {
		uint64_t cluster = ((v & UINT64_C(0x0fff000000000000)) >> 48) |
				   ((v & UINT64_C(0x0000ffffffffffff)) << 12);
		if (cluster > (UINT64_MAX - e->se_grains_off) / e->grain_bytes)
			break;
		*file_off = e->se_grains_off + cluster * e->grain_bytes;
		return VMDK_GRAIN_DATA;
	}
	}
	return bdev_err(-EINVAL, "%s: grain table entry %" PRIu32 " is 0x%016" PRIx64
			", expected 0 or a type of 1, 2 or 3 in the top 4 bits",
			e->path, idx, v);
}

/* Load a directory of n u32 sector offsets at off_sectors; false if any
   entry puts its table outside the file. */
static int load_gd32(struct vmdk_extent *e, uint64_t off_sectors, uint64_t **out,
		     bool *ok)
{
	uint32_t n = e->gd_entries;
	uint32_t *raw = malloc((size_t)n * 4 + 1);
	uint64_t *gd = malloc((size_t)n * 8 + 1);
	int ret;

	*ok = true;
	if (!raw || !gd) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = bsrc_read_full(e->src, raw, (size_t)n * 4, off_sectors * 512);
	if (ret < 0)
		goto err_free;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t s = le32toh(raw[i]);
		gd[i] = s * 512;
		if (s && (s > e->src->length / 512 ||
			  e->gt_bytes > e->src->length - s * 512))
			*ok = false;
	}
	free(raw);
	*out = gd;
	return 0;

err_free:
	free(raw);
	free(gd);
	return ret;
}

/* Read the footer of a GD_AT_END stream (EOF-1536: FOOTER marker, EOF-1024:
   header, EOF-512: EOS) into h. */
static int read_footer(struct vmdk_extent *e, const char *name,
		       struct vmdk_sparse_hdr *h)
{
	uint8_t buf[1536];
	struct vmdk_marker fm, eos;
	uint64_t len = e->src->length, at;
	int ret;

	if (len < 512 + sizeof(buf))
		return bdev_err(-EINVAL, "%s: gdOffset at offset 56 says the grain directory is "
				"at the end, but the file (%" PRIu64 " bytes) has no room for a footer",
				name, len);
	at = (len & ~UINT64_C(511)) - sizeof(buf);
	ret = bsrc_read_full(e->src, buf, sizeof(buf), at);
	if (ret < 0)
		return ret;
	vmdk_marker_decode(buf, &fm);
	vmdk_marker_decode(buf + 1024, &eos);
	if (fm.size != 0 || fm.type != VMDK_MARKER_FOOTER)
		return bdev_err(-EINVAL, "%s: marker at offset %" PRIu64 " has size %" PRIu32
				" type %" PRIu32 ", expected a footer marker (size 0, type 3)",
				name, at, fm.size, fm.type);
	if (eos.val != 0 || eos.size != 0 || eos.type != VMDK_MARKER_EOS)
		return bdev_err(-EINVAL, "%s: marker at offset %" PRIu64 " is not an "
				"end-of-stream marker (expected 0, 0, type 0)", name, at + 1024);
	ret = vmdk_sparse_header_parse(buf + 512, at + 512, len, name, h);
	if (ret < 0)
		return ret;
	if (h->gd_offset == VMDK4_GD_AT_END)
		return bdev_err(-EINVAL, "%s: gdOffset of the footer at offset %" PRIu64
				" is also GD_AT_END, expected the directory's sector",
				name, at + 512 + 56);
	return 0;
}

/* Open a hosted sparse extent whose source is e->src; see vmdk.h. */
int vmdk_sparse_open(struct vmdk_extent *e, const char *name)
{
	uint8_t buf[512];
	struct vmdk_sparse_hdr h, hf;
	bool gd_ok = false, rgd_ok = false;
	int ret;

	if (e->src->length < 512)
		return bdev_err(-EINVAL, "%s: file is %" PRIu64 " bytes, expected at least "
				"a 512-byte sparse header", name, e->src->length);
	ret = bsrc_read_full(e->src, buf, sizeof(buf), 0);
	if (ret < 0)
		return ret;
	ret = vmdk_sparse_header_parse(buf, 0, e->src->length, name, &h);
	if (ret < 0)
		return ret;
	if (h.gd_offset == VMDK4_GD_AT_END) {
		ret = read_footer(e, name, &hf);
		if (ret < 0 && !h.compressed)
			return ret;
		if (ret < 0) {
			/* A stream cut short (an interrupted download): the
			   grains before the cut can still be found. */
			h.gd_ok = h.rgd_ok = false;
		} else {
			hf.unclean = h.unclean;
			h = hf;
		}
	}

	e->kind = VMDK_SPARSE_HOSTED;
	e->version = h.version;
	e->capacity = h.capacity;
	e->compressed = h.compressed;
	e->markers = h.flags & VMDK4_FLAG_MARKERS;
	e->zero_gte = h.flags & VMDK4_FLAG_ZERO_GRAIN;
	e->unclean = h.unclean;
	e->grain_bytes = h.grain_sectors * 512;
	e->grain_shift = (unsigned)__builtin_ctzll(e->grain_bytes);
	e->gt_entries = h.gtes_per_gt;
	e->gte_size = 4;
	e->gt_bytes = (uint64_t)h.gtes_per_gt * 4;
	e->gd_entries = h.gd_entries;
	/* A descriptor may give the extent more sectors than the header's
	   capacity: grains past the directory read as unallocated. */

	if (h.gd_ok) {
		ret = load_gd32(e, h.gd_offset, &e->gd, &gd_ok);
		if (ret < 0)
			return ret;
	}
	if (h.rgd_ok && h.rgd_offset != h.gd_offset) {
		ret = load_gd32(e, h.rgd_offset, &e->rgd, &rgd_ok);
		if (ret < 0)
			goto err_free;
	}
	if (!gd_ok && rgd_ok) {
		/* The primary directory is damaged: the redundant one serves. */
		free(e->gd);
		e->gd = e->rgd;
		e->rgd = NULL;
		e->used_rgd = true;
		return 0;
	}
	if (gd_ok)
		return 0;

	vmdk_sparse_tables_free(e);
	if (e->compressed) {
		ret = vmdk_stream_rebuild(e, name, h.overhead);
		if (ret < 0)
			return ret;
		e->rebuilt = true;
		return 0;
	}
	return bdev_err(-EINVAL, "%s: gdOffset at offset 56 is %" PRIu64 " and rgdOffset at "
			"offset 48 is %" PRIu64 ", expected a grain directory of %" PRIu32
			" entries whose tables lie inside the file (%" PRIu64 " bytes)",
			name, h.gd_offset, h.rgd_offset, h.gd_entries, e->src->length);

err_free:
	vmdk_sparse_tables_free(e);
	return ret;
}
