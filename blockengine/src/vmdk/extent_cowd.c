/* SPDX-License-Identifier: Apache-2.0 */
/*
 * extent_cowd.c - "COWD" sparse extents (ESX vmfsSparse deltas, and the
 * VMware 2/3 era sparse disks): a 2 KiB header, a directory of u32 sector
 * offsets, grain tables of 4096 u32 sector offsets. Their check: tables
 * inside the file, no sector used twice, freeSector past everything in
 * use, leaks. The kind's table, vmdk_cowd_ops, ends the file.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

#define COWD_GT_ENTRIES 4096u

struct cowd_disk_header {
	uint8_t magic[4]; /* "COWD" */
	uint32_t version;
	uint32_t flags;
	uint32_t num_sectors;
	uint32_t grain_size;    /* sectors */
	uint32_t gd_offset;     /* sectors */
	uint32_t num_gd_entries;
	uint32_t free_sector;
	union {
		struct {
			uint32_t cylinders, heads, sectors;
		} root;
		struct {
			char parent_file_name[1024];
			uint32_t parent_generation;
		} child;
	} u;
	uint32_t generation;
	char name[60];
	char description[512];
	uint32_t saved_generation;
	char reserved[8];
	uint32_t unclean_shutdown;
	char padding[396];
} __attribute__((packed));

_Static_assert(sizeof(struct cowd_disk_header) == 2048, "COWD header is 4 sectors");
_Static_assert(offsetof(struct cowd_disk_header, version) == 4, "version");
_Static_assert(offsetof(struct cowd_disk_header, flags) == 8, "flags");
_Static_assert(offsetof(struct cowd_disk_header, num_sectors) == 12, "numSectors");
_Static_assert(offsetof(struct cowd_disk_header, grain_size) == 16, "grainSize");
_Static_assert(offsetof(struct cowd_disk_header, gd_offset) == 20, "gdOffset");
_Static_assert(offsetof(struct cowd_disk_header, num_gd_entries) == 24, "numGDEntries");
_Static_assert(offsetof(struct cowd_disk_header, free_sector) == 28, "freeSector");
_Static_assert(offsetof(struct cowd_disk_header, u) == 32, "root/child union");
_Static_assert(offsetof(struct cowd_disk_header, generation) == 1060, "generation");
_Static_assert(offsetof(struct cowd_disk_header, saved_generation) == 1636, "savedGeneration");
_Static_assert(offsetof(struct cowd_disk_header, unclean_shutdown) == 1648, "uncleanShutdown");

/* True if buf starts with "COWD". */
bool vmdk_is_cowd_magic(const uint8_t *buf, size_t len)
{
	return len >= 4 && memcmp(buf, "COWD", 4) == 0;
}

/* Open a COWD extent whose source is e->src: check the header, load the
   directory. */
int vmdk_cowd_open(struct vmdk_extent *e, const char *name)
{
	struct cowd_disk_header h;
	uint32_t version, grain, nsec, gd_off, n_gd, *raw;
	uint64_t need, len = e->src->length;
	int ret;

	if (len < sizeof(h))
		return bdev_err(-EINVAL, "%s: file is %" PRIu64 " bytes, expected at least a "
				"2048-byte COWD header", name, len);
	ret = bsrc_read_full(e->src, &h, sizeof(h), 0);
	if (ret < 0)
		return ret;
	if (!vmdk_is_cowd_magic(h.magic, 4))
		return bdev_err(-EINVAL, "%s: magic at offset 0 is %02x %02x %02x %02x, "
				"expected \"COWD\"", name, h.magic[0], h.magic[1],
				h.magic[2], h.magic[3]);
	version = le32toh(h.version);
	nsec = le32toh(h.num_sectors);
	grain = le32toh(h.grain_size);
	gd_off = le32toh(h.gd_offset);
	n_gd = le32toh(h.num_gd_entries);
	if (version != 1)
		return bdev_err(-ENOTSUP, "%s: version at offset 4 is %" PRIu32 ", expected 1",
				name, version);
	if (grain == 0 || (grain & (grain - 1)) || grain > VMDK4_MAX_GRAIN_SECTORS)
		return bdev_err(-EINVAL, "%s: grainSize at offset 16 is %" PRIu32
				", expected a power of two from 1 to %u sectors",
				name, grain, VMDK4_MAX_GRAIN_SECTORS);
	need = ((uint64_t)nsec + (uint64_t)grain * COWD_GT_ENTRIES - 1) /
	       ((uint64_t)grain * COWD_GT_ENTRIES);
	if (n_gd < need || n_gd > VMDK_MAX_GD_ENTRIES)
		return bdev_err(-EINVAL, "%s: numGDEntries at offset 24 is %" PRIu32
				", expected %" PRIu64 " for numSectors %" PRIu32
				" and grainSize %" PRIu32, name, n_gd, need, nsec, grain);
	if (gd_off == 0 || (uint64_t)gd_off * 512 > len ||
	    (uint64_t)n_gd * 4 > len - (uint64_t)gd_off * 512)
		return bdev_err(-EINVAL, "%s: gdOffset at offset 20 is %" PRIu32
				" (%" PRIu32 " entries), expected a directory inside the file (%"
				PRIu64 " bytes)", name, gd_off, n_gd, len);

	e->ops = &vmdk_cowd_ops;
	e->version = version;
	e->capacity = nsec;
	e->unclean = le32toh(h.unclean_shutdown) != 0;
	e->grain_bytes = (uint64_t)grain * 512;
	e->grain_shift = (unsigned)__builtin_ctzll(e->grain_bytes);
	e->gt_entries = COWD_GT_ENTRIES;
	e->gte_size = 4;
	e->gt_bytes = COWD_GT_ENTRIES * 4;
	e->gd_entries = (uint32_t)need;

	raw = malloc((size_t)need * 4 + 1);
	e->gd = malloc((size_t)need * 8 + 1);
	if (!raw || !e->gd) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = bsrc_read_full(e->src, raw, (size_t)need * 4, (uint64_t)gd_off * 512);
	if (ret < 0)
		goto err_free;
	for (uint32_t i = 0; i < need; i++) {
		uint64_t s = le32toh(raw[i]);
		if (s && (s > len / 512 || e->gt_bytes > len - s * 512)) {
			ret = bdev_err(-EINVAL, "%s: grain directory entry %" PRIu32 " at offset %"
				       PRIu64 " is sector %" PRIu64 ", expected a grain table "
				       "inside the file (%" PRIu64 " bytes)", name, i,
				       (uint64_t)gd_off * 512 + i * 4, s, len);
			goto err_free;
		}
		e->gd[i] = s * 512;
	}
	free(raw);
	return 0;

err_free:
	free(raw);
	free(e->gd);
	e->gd = NULL;
	return ret;
}

/* ---- Check (the check op) ----------------------------------------------- */

#define COWD_HDR_BYTES 2048u

/* Marks sectors [s, s + n) used in the bitmap; false if any already was. */
static bool claim(uint8_t *bits, uint64_t s, uint64_t n)
{
	bool fresh = true;

	for (uint64_t i = s; i < s + n; i++) {
		if (bits[i / 8] & (1u << (i % 8)))
			fresh = false;
		bits[i / 8] |= (uint8_t)(1u << (i % 8));
	}
	return fresh;
}

/* Check one COWD (vmfsSparse) extent file: directory and tables inside the
   file and past the directory, no sector used twice, freeSector past
   everything used, leaked grains after the last used sector. */
static int cowd_check(struct vmdk_check_ctx *c, const char *path, uint64_t desc_bytes,
		      unsigned repair)
{
	struct bdev_check_result *r = c->r;
	uint8_t hb[COWD_HDR_BYTES];
	uint32_t nsec, grain, gd_off, n_gd, free_sec, *gd = NULL, *gt = NULL;
	uint64_t len, lsec, meta_end, used_end, need;
	uint8_t *bits = NULL;
	struct bsrc *s;
	int ret;

	ret = bsrc_open_file(path, repair != 0, false, &s);
	if (ret < 0)
		return ret;
	len = s->length;
	lsec = len / 512;
	ret = bsrc_read_full(s, hb, sizeof(hb), 0);
	if (ret < 0)
		goto out;
	memcpy(&nsec, hb + 12, 4);
	memcpy(&grain, hb + 16, 4);
	memcpy(&gd_off, hb + 20, 4);
	memcpy(&n_gd, hb + 24, 4);
	memcpy(&free_sec, hb + 28, 4);
	nsec = le32toh(nsec);
	grain = le32toh(grain);
	gd_off = le32toh(gd_off);
	n_gd = le32toh(n_gd);
	free_sec = le32toh(free_sec);
	if (hb[1648] || hb[1649] || hb[1650] || hb[1651]) {
		r->unclean = true;
		vmdk_check_finding(c, "WARNING %s: uncleanShutdown is set: the image was not "
			"closed cleanly", path);
	}
	if (desc_bytes && desc_bytes != (uint64_t)nsec * 512) {
		r->corruptions++;
		vmdk_check_finding(c, "ERROR %s: the descriptor gives the extent %" PRIu64
			" sectors, its header numSectors is %" PRIu32, path,
			desc_bytes / 512, nsec);
	}
	need = grain ? ((uint64_t)nsec + (uint64_t)grain * COWD_GT_ENTRIES - 1) /
	       ((uint64_t)grain * COWD_GT_ENTRIES) : 0;
	if (!grain || n_gd < need || gd_off < COWD_HDR_BYTES / 512 ||
	    (uint64_t)gd_off + ((uint64_t)n_gd * 4 + 511) / 512 > lsec) {
		r->corruptions++;
		vmdk_check_finding(c, "ERROR %s: grain directory at sector %" PRIu32 " (%" PRIu32
			" entries, grain %" PRIu32 " sectors) does not fit the file",
			path, gd_off, n_gd, grain);
		goto out;
	}
	meta_end = gd_off + ((uint64_t)n_gd * 4 + 511) / 512;
	bits = calloc(lsec / 8 + 1, 1);
	gt = malloc(COWD_GT_ENTRIES * 4);
	if (!bits || !gt) {
		ret = -ENOMEM;
		goto out;
	}
	claim(bits, 0, meta_end);
	used_end = meta_end;
	ret = vmdk_check_read_u32s(s, (uint64_t)gd_off * 512, n_gd, &gd);
	if (ret < 0)
		goto out;
	for (uint32_t t = 0; t < need; t++) {
		uint64_t gts = gd[t], gt_sec = COWD_GT_ENTRIES * 4 / 512;
		if (!gts)
			continue;
		if (gts < meta_end || gts + gt_sec > lsec) {
			r->corruptions++;
			vmdk_check_finding(c, "ERROR %s: grain directory entry %" PRIu32 " is sector %"
				PRIu64 ", outside the file or inside the metadata", path,
				t, gts);
			continue;
		}
		if (!claim(bits, gts, gt_sec)) {
			r->corruptions++;
			vmdk_check_finding(c, "ERROR %s: grain table %" PRIu32 " at sector %" PRIu64
				" overlaps another table or grain", path, t, gts);
		}
		if (gts + gt_sec > used_end)
			used_end = gts + gt_sec;
		free(gt);
		gt = NULL;
		ret = vmdk_check_read_u32s(s, gts * 512, COWD_GT_ENTRIES, &gt);
		if (ret < 0)
			goto out;
		for (uint32_t i = 0; i < COWD_GT_ENTRIES; i++) {
			uint64_t v = gt[i];
			uint64_t g = (uint64_t)t * COWD_GT_ENTRIES + i;
			if (!v)
				continue;
			if (g * grain >= nsec || v < meta_end || v + grain > lsec) {
				r->corruptions++;
				vmdk_check_finding(c, "ERROR %s: grain table %" PRIu32 " entry %" PRIu32
					" (grain %" PRIu64 ") is sector %" PRIu64 ", outside "
					"the grain area [%" PRIu64 ", %" PRIu64 ")", path, t, i,
					g, v, meta_end, lsec);
				continue;
			}
			r->allocated_clusters++;
			if (!claim(bits, v, grain)) {
				r->corruptions++;
				vmdk_check_finding(c, "ERROR %s: grain table %" PRIu32 " entry %" PRIu32
					" points at sector %" PRIu64 ", which another entry "
					"or table already uses", path, t, i, v);
			}
			if (v + grain > used_end)
				used_end = v + grain;
		}
	}
	r->total_clusters += ((uint64_t)nsec + grain - 1) / grain;
	if (free_sec < used_end) {
		r->corruptions++;
		vmdk_check_finding(c, "ERROR %s: freeSector is %" PRIu32 ", but sectors up to %"
			PRIu64 " are in use: the next grain would overwrite one", path,
			free_sec, used_end);
	}
	{
		uint64_t leaked = 0, trailing = 0, end = lsec > free_sec ? lsec : free_sec;
		for (uint64_t i = meta_end; i < end && i < lsec; i += grain) {
			bool any = false;
			for (uint64_t k = i; k < i + grain && k < lsec; k++)
				any |= (bits[k / 8] >> (k % 8)) & 1;
			if (any)
				continue;
			leaked++;
			if (i >= used_end)
				trailing++;
		}
		if (leaked > trailing)
			vmdk_check_finding(c, "Leaked grains: %" PRIu64 " inside %s that no table "
				"references", leaked - trailing, path);
		if (trailing)
			vmdk_check_finding(c, "Leaked grains: %" PRIu64 " at the end of %s (from "
				"sector %" PRIu64 ")", trailing, path, used_end);
		r->leaks += leaked;
		if (trailing && (repair & BDEV_CHECK_REPAIR_LEAKS) &&
		    free_sec >= used_end) {
			uint32_t fs = htole32((uint32_t)used_end);
			ssize_t w = s->ops->pwrite(s, &fs, 4, 28);
			ret = w < 0 ? (int)w : s->ops->truncate(s, used_end * 512);
			if (ret < 0)
				goto out;
			r->leaks_fixed += trailing;
			vmdk_check_finding(c, "Repaired: cut %" PRIu64 " leaked grains off %s",
				trailing, path);
		}
	}
	if (repair && s->ops->flush)
		ret = s->ops->flush(s);
	if (ret > 0)
		ret = 0;
out:
	free(gd);
	free(gt);
	free(bits);
	bsrc_close(s);
	return ret;
}

const struct vmdk_extent_ops vmdk_cowd_ops = {
	.name = "COWD",
	.type = VMDK_EXT_VMFSSPARSE,
	.create_type = "vmfsSparse",
	.probe = vmdk_is_cowd_magic,
	.open = vmdk_cowd_open,
	.decode = vmdk_gte_decode32,
	.check = cowd_check,
};
