/* SPDX-License-Identifier: Apache-2.0 */
/*
 * extent_sparse.c - hosted sparse extents ("KDMV"), including
 * streamOptimized ones: header or footer, grain directory (primary or
 * redundant), the u32 grain-table entry decoding (COWD shares it), and
 * their check (like qemu-img check): directory and table entries in range,
 * primary and redundant tables equal, no grain referenced twice or
 * overlapping the metadata, leaked grains, uncleanShutdown, descriptor vs
 * header capacity. Safe repairs only: trailing leaked grains are cut off
 * (-r leaks), a redundant table that differs from a sane primary one is
 * rewritten from it (-r all). Streams (compressed) are checked for entries
 * in range and double references only; a stream that lost its footer (a
 * writer killed between flushes) gets its tables and footer rebuilt from
 * the grain records by -r all. The kind's table, vmdk_hosted_ops, ends it.
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

/* Decode u32 GTE idx of gt (hosted sparse, COWD); see vmdk.h. */
int vmdk_gte_decode32(const struct vmdk_extent *e, const uint8_t *gt,
		    uint32_t idx, uint64_t *file_off)
{
	/* acquire: a writer stores the entry (release) after its grain's
	   bytes, which a reader of the offset must see */
	uint32_t v = le32toh(__atomic_load_n((const uint32_t *)(const void *)
					     (gt + (size_t)idx * 4),
					     __ATOMIC_ACQUIRE));

	if (v == 0)
		return VMDK_GRAIN_UNALLOC;
	/* QEMU's rule: 1 means "zeroed" only when the header says
	   zeroed-grain GTEs are in use; otherwise it is sector 1. */
	if (v == 1 && e->zero_gte)
		return VMDK_GRAIN_ZERO;
	*file_off = (uint64_t)v * 512;
	return VMDK_GRAIN_DATA;
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

	e->ops = &vmdk_hosted_ops;
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

/* ---- Check (the check op) ----------------------------------------------- */

/* Marks grain slots [a, b] as holding a table (1 = a grain was there). */
static void claim_table(uint8_t *owner, uint64_t slots, uint64_t a, uint64_t b,
			bool *clash, uint64_t *last_used)
{
	for (uint64_t i = a; i <= b && i < slots; i++) {
		if (owner[i] == 1)
			*clash = true;
		owner[i] = 2;
		if (i + 1 > *last_used)
			*last_used = i + 1;
	}
}

/*
 * A stream whose footer is gone (a writer killed between flushes): find
 * its grains by walking the records, cut what follows the last one and
 * write the tail (GTs, GD, footer, EOS) that describes them.
 */
static int repair_stream_tail(struct vmdk_check_ctx *c, struct bsrc *s, const char *path,
			      const struct vmdk_sparse_hdr *h)
{
	struct vmdk_extent e;
	uint64_t end;
	uint8_t v = 0;
	int ret;

	memset(&e, 0, sizeof(e));
	e.ops = &vmdk_hosted_ops;
	e.type = VMDK_EXT_SPARSE;
	e.src = s;
	e.path = (char *)(uintptr_t)path;
	e.compressed = e.markers = true;
	e.grain_bytes = h->grain_sectors * 512;
	e.grain_shift = (unsigned)__builtin_ctzll(e.grain_bytes);
	e.gt_entries = h->gtes_per_gt;
	e.gte_size = 4;
	e.gt_bytes = (uint64_t)h->gtes_per_gt * 4;
	e.gd_entries = h->gd_entries;
	e.capacity = h->capacity;
	e.size = h->capacity * 512;
	ret = vmdk_stream_rebuild(&e, path, h->overhead);
	if (ret == 0)
		ret = vmdk_stream_records_end(&e, h->overhead, &end);
	if (ret < 0)
		goto out;
	ret = bsrc_read_full(s, e.stream_hdr, 512, 0);
	if (ret < 0)
		goto out;
	e.stream_hdr[72] = 0;
	e.stream_gd_at_end = true;
	e.stream_gt_dirty = calloc(e.gd_entries + 1, 1);
	if (!e.stream_gt_dirty) {
		ret = -ENOMEM;
		goto out;
	}
	atomic_store(&e.next_free, end);
	e.stream_tail_present = s->length > end;
	e.stream_need_tail = true;
	pthread_mutex_init(&e.stream_mu, NULL);
	e.stream_w = true;
	ret = vmdk_stream_flush(&e);
	vmdk_stream_write_teardown(&e);
	if (ret == 0) {
		ssize_t w = s->ops->pwrite(s, &v, 1, 72);
		ret = w < 0 ? (int)w : 0;
	}
	if (ret == 0)
		vmdk_check_finding(c, "Repaired: %s: grain tables, directory and footer rebuilt "
			"from the grain records (the stream now ends at %" PRIu64
			" bytes)", path, s->length);
out:
	free(e.stream_gt_dirty);
	vmdk_sparse_tables_free(&e);
	return ret;
}

/* True when grain table entry v may stand in an extent laid out as h whose
   file is len bytes: unallocated, a zeroed grain, or a grain's sector. */
static bool gte_valid(const struct vmdk_sparse_hdr *h, uint64_t len, uint64_t v)
{
	if (v == 0 || (v == 1 && (h->flags & VMDK4_FLAG_ZERO_GRAIN)))
		return true;
	return v >= h->overhead && v * 512 < len &&
	       (h->compressed || (v - h->overhead) % h->grain_sectors == 0);
}

/*
 * True when two copies of a grain table differ only in entries that are each
 * valid on their own: the state a kill between writing a table and its
 * redundant copy leaves behind. The copy is then one flush behind the
 * primary, and since the last flush an entry may have gone from a grain to
 * unallocated or zeroed (discard, write-zeroes), from zeroed to a grain, or
 * from one grain to a new one (discarded, then written again). Writes since
 * the last completed flush were never acknowledged as durable, so either copy
 * is a consistent image; an entry outside the grain area is corruption.
 */
static bool differ_only_as_flush_behind(const struct vmdk_sparse_hdr *h, uint64_t len,
					const uint32_t *a, const uint32_t *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (a[i] != b[i] && (!gte_valid(h, len, a[i]) || !gte_valid(h, len, b[i])))
			return false;
	return true;
}

/* The hosted check's header part: a stream's footer (a lost one is
   rebuilt by -r all), uncleanShutdown, the descriptor's size against the
   header's capacity. 0 to go on with the tables in *h, 1 when the check
   is over (the footer was lost), or -errno. */
static int hosted_check_header(struct vmdk_check_ctx *c, struct bsrc *s,
			       const char *path, uint64_t desc_bytes,
			       unsigned repair, struct vmdk_sparse_hdr *hp)
{
	struct bdev_check_result *r = c->r;
	struct vmdk_sparse_hdr h = *hp;
	uint64_t len = s->length;
	int ret;

	if (h.gd_offset == VMDK4_GD_AT_END) {
		uint8_t fb[512];
		struct vmdk_sparse_hdr h0 = h;
		ret = len >= 1536 ? bsrc_read_full(s, fb, 512, (len & ~511ull) - 1024) : -EINVAL;
		if (ret == 0)
			ret = vmdk_sparse_header_parse(fb, len - 1024, len, path, &h);
		if (ret < 0) {
			vmdk_check_finding(c, "ERROR %s: no readable footer at the end of the stream", path);
			r->corruptions++;
			ret = 1;
			if ((repair & BDEV_CHECK_REPAIR_ALL) && h0.compressed &&
			    (h0.flags & VMDK4_FLAG_MARKERS)) {
				ret = repair_stream_tail(c, s, path, &h0);
				if (ret == 0) {
					r->corruptions_fixed++;
					ret = 1;
				}
			}
			return ret;
		}
	}
	if (h.unclean) {
		r->unclean = true;
		vmdk_check_finding(c, "WARNING %s: uncleanShutdown is set: the image was not "
			"closed cleanly", path);
	}
	if (desc_bytes && desc_bytes < h.capacity * 512 && !h.compressed) {
		/* the tables cover more than the disk uses: what a resize
		   that grew the extent leaves until it rewrites the descriptor */
		vmdk_check_finding(c, "WARNING %s: the descriptor gives the extent %" PRIu64
			" sectors, its header capacity is %" PRIu64 " (an interrupted "
			"resize? run it again)", path, desc_bytes / 512, h.capacity);
	} else if (desc_bytes && desc_bytes != h.capacity * 512) {
		r->corruptions++;
		vmdk_check_finding(c, "ERROR %s: the descriptor gives the extent %" PRIu64
			" sectors, its header capacity is %" PRIu64, path,
			desc_bytes / 512, h.capacity);
	}
	*hp = h;
	return 0;
}

/* The hosted check's walk over the entries of grain table t: each in
   the grain area, no grain referenced twice (marked in owner). */
static void hosted_check_entries(struct vmdk_check_ctx *c, const char *path,
				 const struct vmdk_sparse_hdr *h, uint64_t len,
				 uint32_t t, const uint32_t *gt, uint8_t *owner,
				 bool *gd_sane, uint64_t *last_used)
{
	struct bdev_check_result *r = c->r;

	for (uint32_t i = 0; i < h->gtes_per_gt; i++) {
		uint64_t v = gt[i], slot;
		if (v == 0 || (v == 1 && (h->flags & VMDK4_FLAG_ZERO_GRAIN)))
			continue;
		if (!gte_valid(h, len, v)) {
			r->corruptions++;
			*gd_sane = false;
			vmdk_check_finding(c, "ERROR %s: grain table %" PRIu32 " entry %" PRIu32
				" (grain %" PRIu64 ") is sector %" PRIu64 ", outside "
				"the grain area [%" PRIu64 ", %" PRIu64 ")", path, t, i,
				(uint64_t)t * h->gtes_per_gt + i, v, h->overhead, len / 512);
			continue;
		}
		r->allocated_clusters++;
		if (h->compressed)
			continue; /* records vary in size */
		slot = (v - h->overhead) / h->grain_sectors;
		if (owner[slot]) {
			r->corruptions++;
			*gd_sane = false;
			vmdk_check_finding(c, "ERROR %s: grain table %" PRIu32 " entry %" PRIu32
				" points at sector %" PRIu64 ", which another entry "
				"already references", path, t, i, v);
		}
		owner[slot] = 1;
		if (slot + 1 > *last_used)
			*last_used = slot + 1;
	}
}

/* -r all: rewrite each redundant grain table from its primary one, when
   the redundant directory names a table inside the file for every entry. */
static int hosted_rewrite_rgd(struct vmdk_check_ctx *c, struct bsrc *s,
			      const char *path, const struct vmdk_sparse_hdr *h,
			      const uint32_t *gd, const uint32_t *rgd,
			      uint64_t rgd_corrupt)
{
	struct bdev_check_result *r = c->r;
	uint64_t gtb = (uint64_t)h->gtes_per_gt * 4;
	uint8_t *raw = malloc(gtb);
	bool rgd_dir_ok = true;
	uint32_t fixed = 0;
	int ret;

	if (!raw)
		return -ENOMEM;
	for (uint32_t t = 0; t < h->gd_entries; t++)
		if (!rgd[t] || (uint64_t)rgd[t] * 512 + gtb > s->length)
			rgd_dir_ok = false;
	for (uint32_t t = 0; rgd_dir_ok && t < h->gd_entries; t++) {
		if (!gd[t])
			continue;
		ret = bsrc_read_full(s, raw, gtb, (uint64_t)gd[t] * 512);
		if (ret == 0)
			ret = (int)s->ops->pwrite(s, raw, gtb, (uint64_t)rgd[t] * 512);
		if (ret < 0) {
			free(raw);
			return ret;
		}
		fixed++;
	}
	free(raw);
	if (rgd_dir_ok) {
		r->corruptions_fixed += rgd_corrupt;
		vmdk_check_finding(c, "Repaired: redundant grain tables of %s rewritten from the "
			"primary ones (%" PRIu32 " tables)", path, fixed);
	}
	return 0;
}

/* Check one hosted sparse extent file. */
static int hosted_check(struct vmdk_check_ctx *c, const char *path, uint64_t desc_bytes,
			unsigned repair)
{
	struct bdev_check_result *r = c->r;
	struct vmdk_sparse_hdr h;
	struct bsrc *s;
	uint8_t hb[512];
	uint32_t *gd = NULL, *rgd = NULL, *gt = NULL, *rgt = NULL;
	uint8_t *owner = NULL; /* per grain slot: referenced? */
	uint64_t len, slots, first_slot, last_used = 0;
	bool gd_sane = true, rgd_differs = false;
	uint64_t rgd_corrupt = 0; /* redundant-table findings counted as corruption */
	int ret;

	ret = bsrc_open_file(path, repair != 0, false, &s);
	if (ret < 0)
		return ret;
	len = s->length;
	ret = bsrc_read_full(s, hb, 512, 0);
	if (ret == 0)
		ret = vmdk_sparse_header_parse(hb, 0, len, path, &h);
	if (ret < 0)
		goto out;
	ret = hosted_check_header(c, s, path, desc_bytes, repair, &h);
	if (ret != 0) {
		if (ret > 0)
			ret = 0;
		goto out;
	}
	if (!h.gd_ok) {
		r->corruptions++;
		vmdk_check_finding(c, "ERROR %s: grain directory at sector %" PRIu64 " lies outside "
			"the file", path, h.gd_offset);
		goto out;
	}
	ret = vmdk_check_read_u32s(s, h.gd_offset * 512, h.gd_entries, &gd);
	if (ret == 0 && h.rgd_ok && (h.flags & VMDK4_FLAG_RGD))
		ret = vmdk_check_read_u32s(s, h.rgd_offset * 512, h.gd_entries, &rgd);
	if (ret < 0)
		goto out;
	/* grain slots from overHead to the end of the file */
	first_slot = h.overhead;
	slots = len / 512 > first_slot ? (len / 512 - first_slot + h.grain_sectors - 1) /
		h.grain_sectors : 0;
	owner = calloc(slots + 1, 1);
	gt = malloc((size_t)h.gtes_per_gt * 4);
	if (!owner || !gt) {
		ret = -ENOMEM;
		goto out;
	}
	if (!h.compressed) {
		/* a directory moved after the grains (by a resize that grew
		   past its room): its grain slots are taken */
		uint64_t dir_sec = ((uint64_t)h.gd_entries * 4 + 511) / 512;
		bool clash = false;

		if (h.gd_offset >= h.overhead)
			claim_table(owner, slots, (h.gd_offset - h.overhead) / h.grain_sectors,
				    (h.gd_offset + dir_sec - 1 - h.overhead) / h.grain_sectors,
				    &clash, &last_used);
		if (rgd && h.rgd_offset >= h.overhead)
			claim_table(owner, slots, (h.rgd_offset - h.overhead) / h.grain_sectors,
				    (h.rgd_offset + dir_sec - 1 - h.overhead) / h.grain_sectors,
				    &clash, &last_used);
	}
	for (uint32_t t = 0; t < h.gd_entries; t++) {
		uint64_t gts = gd[t], gt_end = gts + (uint64_t)h.gtes_per_gt * 4 / 512;
		if (!gts)
			continue;
		if (gts * 512 >= len || gt_end * 512 > len || gts < 1 ||
		    (!h.compressed && gts < h.overhead && gt_end > h.overhead)) {
			r->corruptions++;
			gd_sane = false;
			vmdk_check_finding(c, "ERROR %s: grain directory entry %" PRIu32 " is sector %"
				PRIu64 ", outside the file or the metadata area", path, t, gts);
			continue;
		}
		if (!h.compressed && gts >= h.overhead) {
			/* a table appended after the grains (by a resize, or
			   allocated on demand): its grain slots are taken */
			bool clash = false;
			claim_table(owner, slots, (gts - h.overhead) / h.grain_sectors,
				    (gt_end - 1 - h.overhead) / h.grain_sectors, &clash,
				    &last_used);
			if (rgd && rgd[t] >= h.overhead)
				claim_table(owner, slots, (rgd[t] - h.overhead) / h.grain_sectors,
					    (rgd[t] + h.gtes_per_gt * 4 / 512 - 1 - h.overhead) /
					    h.grain_sectors, &clash, &last_used);
			if (clash) {
				r->corruptions++;
				gd_sane = false;
				vmdk_check_finding(c, "ERROR %s: grain table %" PRIu32 " at sector %" PRIu64
					" overlaps a grain", path, t, gts);
			}
		}
		free(gt);
		gt = NULL;
		ret = vmdk_check_read_u32s(s, gts * 512, h.gtes_per_gt, &gt);
		if (ret < 0)
			goto out;
		if (rgd && rgd[t] && rgd[t] * 512 + (uint64_t)h.gtes_per_gt * 4 <= len) {
			ret = vmdk_check_read_u32s(s, (uint64_t)rgd[t] * 512, h.gtes_per_gt, &rgt);
			if (ret < 0)
				goto out;
			if (memcmp(gt, rgt, (size_t)h.gtes_per_gt * 4)) {
				rgd_differs = true;
				if (h.unclean && differ_only_as_flush_behind(&h, len, gt, rgt,
								       h.gtes_per_gt)) {
					vmdk_check_finding(c, "WARNING %s: grain table %" PRIu32 " and its "
						"redundant copy (RGD) differ only in entries the "
						"copy has not caught up with: a flush was "
						"interrupted; the primary table is used, -r all "
						"rewrites the copy",
						path, t);
				} else {
					r->corruptions++;
					rgd_corrupt++;
					vmdk_check_finding(c, "ERROR %s: grain table %" PRIu32 " and its "
						"redundant copy (RGD) differ", path, t);
				}
			}
			free(rgt);
			rgt = NULL;
		} else if (rgd) {
			r->corruptions++;
			rgd_corrupt++;
			rgd_differs = true;
			vmdk_check_finding(c, "ERROR %s: redundant grain directory entry %" PRIu32
				" is sector %" PRIu32 ", expected a table inside the file",
				path, t, rgd[t]);
		}
		hosted_check_entries(c, path, &h, len, t, gt, owner, &gd_sane,
				     &last_used);
	}
	r->total_clusters += (h.capacity + h.grain_sectors - 1) / h.grain_sectors;
	if (!h.compressed) {
		uint64_t leaked = 0, trailing = 0;
		for (uint64_t i = 0; i < slots; i++)
			if (!owner[i]) {
				leaked++;
				if (i >= last_used)
					trailing++;
				else
					vmdk_check_finding(c, "Leaked grain at sector %" PRIu64 " of %s: "
						"no table references it", h.overhead +
						i * h.grain_sectors, path);
			}
		if (trailing)
			vmdk_check_finding(c, "Leaked grains: %" PRIu64 " at the end of %s (from "
				"sector %" PRIu64 ")", trailing, path,
				h.overhead + last_used * h.grain_sectors);
		r->leaks += leaked;
		if (trailing && (repair & BDEV_CHECK_REPAIR_LEAKS)) {
			ret = s->ops->truncate(s, (h.overhead + last_used * h.grain_sectors) * 512);
			if (ret < 0)
				goto out;
			r->leaks_fixed += trailing;
			vmdk_check_finding(c, "Repaired: cut %" PRIu64 " leaked grains off %s",
				trailing, path);
		}
	}
	if (rgd_differs && gd_sane && (repair & BDEV_CHECK_REPAIR_ALL) && rgd) {
		ret = hosted_rewrite_rgd(c, s, path, &h, gd, rgd, rgd_corrupt);
		if (ret < 0)
			goto out;
	}
	if (repair && s->ops->flush)
		ret = s->ops->flush(s);
	if (ret > 0)
		ret = 0;
out:
	free(gd);
	free(rgd);
	free(gt);
	free(rgt);
	free(owner);
	bsrc_close(s);
	return ret;
}

const struct vmdk_extent_ops vmdk_hosted_ops = {
	.name = "hosted sparse",
	.type = VMDK_EXT_SPARSE,
	.create_type = "monolithicSparse",
	.probe = vmdk_is_sparse_magic,
	.open = vmdk_sparse_open,
	.decode = vmdk_gte_decode32,
	.check = hosted_check,
};
