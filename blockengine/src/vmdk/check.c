/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check.c - bdev_check: consistency of the hosted sparse extents of a VMDK
 * (like qemu-img check): directory and table entries in range, primary and
 * redundant tables equal, no grain referenced twice or overlapping the
 * metadata, leaked grains, uncleanShutdown, descriptor vs header capacity.
 * COWD (vmfsSparse) extents: tables inside the file, no sector used twice,
 * freeSector past everything in use, leaks. seSparse extents: regions,
 * directory and table entries in range, no table or grain used twice,
 * leaks (checked, never repaired).
 * Safe repairs only: trailing leaked grains are cut off (-r leaks), a
 * redundant table that differs from a sane primary one is rewritten from it
 * (-r all). Streams (compressed) are checked for entries in range and
 * double references only; a stream that lost its footer (a writer killed
 * between flushes) gets its tables and footer rebuilt from the grain
 * records by -r all.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

struct ck {
	struct bdev_check_result *r;
	void (*report)(void *, const char *);
	void *opaque;
};

static void __attribute__((format(printf, 2, 3)))
finding(struct ck *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (c->report)
		c->report(c->opaque, buf);
}

static int read_u32s(struct bsrc *s, uint64_t off, uint32_t n, uint32_t **out)
{
	uint32_t *v = malloc((size_t)n * 4 + 4);
	int ret;

	if (!v)
		return -ENOMEM;
	ret = bsrc_read_full(s, v, (size_t)n * 4, off);
	if (ret < 0) {
		free(v);
		return ret;
	}
	for (uint32_t i = 0; i < n; i++)
		v[i] = le32toh(v[i]);
	*out = v;
	return 0;
}

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
static int repair_stream_tail(struct ck *c, struct bsrc *s, const char *path,
			      const struct vmdk_sparse_hdr *h)
{
	struct vmdk_extent e;
	uint64_t end;
	uint8_t v = 0;
	int ret;

	memset(&e, 0, sizeof(e));
	e.kind = VMDK_SPARSE_HOSTED;
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
		finding(c, "Repaired: %s: grain tables, directory and footer rebuilt "
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

/* Check one hosted sparse extent file. */
static int check_hosted(struct ck *c, const char *path, uint64_t desc_bytes,
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
	if (h.gd_offset == VMDK4_GD_AT_END) {
		uint8_t fb[512];
		struct vmdk_sparse_hdr h0 = h;
		ret = len >= 1536 ? bsrc_read_full(s, fb, 512, (len & ~511ull) - 1024) : -EINVAL;
		if (ret == 0)
			ret = vmdk_sparse_header_parse(fb, len - 1024, len, path, &h);
		if (ret < 0) {
			finding(c, "ERROR %s: no readable footer at the end of the stream", path);
			r->corruptions++;
			ret = 0;
			if ((repair & BDEV_CHECK_REPAIR_ALL) && h0.compressed &&
			    (h0.flags & VMDK4_FLAG_MARKERS)) {
				ret = repair_stream_tail(c, s, path, &h0);
				if (ret == 0)
					r->corruptions_fixed++;
			}
			goto out;
		}
	}
	if (h.unclean) {
		r->unclean = true;
		finding(c, "WARNING %s: uncleanShutdown is set: the image was not "
			"closed cleanly", path);
	}
	if (desc_bytes && desc_bytes < h.capacity * 512 && !h.compressed) {
		/* the tables cover more than the disk uses: what a resize
		   that grew the extent leaves until it rewrites the descriptor */
		finding(c, "WARNING %s: the descriptor gives the extent %" PRIu64
			" sectors, its header capacity is %" PRIu64 " (an interrupted "
			"resize? run it again)", path, desc_bytes / 512, h.capacity);
	} else if (desc_bytes && desc_bytes != h.capacity * 512) {
		r->corruptions++;
		finding(c, "ERROR %s: the descriptor gives the extent %" PRIu64
			" sectors, its header capacity is %" PRIu64, path,
			desc_bytes / 512, h.capacity);
	}
	if (!h.gd_ok) {
		r->corruptions++;
		finding(c, "ERROR %s: grain directory at sector %" PRIu64 " lies outside "
			"the file", path, h.gd_offset);
		goto out;
	}
	ret = read_u32s(s, h.gd_offset * 512, h.gd_entries, &gd);
	if (ret == 0 && h.rgd_ok && (h.flags & VMDK4_FLAG_RGD))
		ret = read_u32s(s, h.rgd_offset * 512, h.gd_entries, &rgd);
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
			finding(c, "ERROR %s: grain directory entry %" PRIu32 " is sector %"
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
				finding(c, "ERROR %s: grain table %" PRIu32 " at sector %" PRIu64
					" overlaps a grain", path, t, gts);
			}
		}
		free(gt);
		gt = NULL;
		ret = read_u32s(s, gts * 512, h.gtes_per_gt, &gt);
		if (ret < 0)
			goto out;
		if (rgd && rgd[t] && rgd[t] * 512 + (uint64_t)h.gtes_per_gt * 4 <= len) {
			ret = read_u32s(s, (uint64_t)rgd[t] * 512, h.gtes_per_gt, &rgt);
			if (ret < 0)
				goto out;
			if (memcmp(gt, rgt, (size_t)h.gtes_per_gt * 4)) {
				rgd_differs = true;
				if (h.unclean && differ_only_as_flush_behind(&h, len, gt, rgt,
								       h.gtes_per_gt)) {
					finding(c, "WARNING %s: grain table %" PRIu32 " and its "
						"redundant copy (RGD) differ only in entries the "
						"copy has not caught up with: a flush was "
						"interrupted; the primary table is used, -r all "
						"rewrites the copy",
						path, t);
				} else {
					r->corruptions++;
					rgd_corrupt++;
					finding(c, "ERROR %s: grain table %" PRIu32 " and its "
						"redundant copy (RGD) differ", path, t);
				}
			}
			free(rgt);
			rgt = NULL;
		} else if (rgd) {
			r->corruptions++;
			rgd_corrupt++;
			rgd_differs = true;
			finding(c, "ERROR %s: redundant grain directory entry %" PRIu32
				" is sector %" PRIu32 ", expected a table inside the file",
				path, t, rgd[t]);
		}
		for (uint32_t i = 0; i < h.gtes_per_gt; i++) {
			uint64_t v = gt[i], slot;
			if (v == 0 || (v == 1 && (h.flags & VMDK4_FLAG_ZERO_GRAIN)))
				continue;
			if (!gte_valid(&h, len, v)) {
				r->corruptions++;
				gd_sane = false;
				finding(c, "ERROR %s: grain table %" PRIu32 " entry %" PRIu32
					" (grain %" PRIu64 ") is sector %" PRIu64 ", outside "
					"the grain area [%" PRIu64 ", %" PRIu64 ")", path, t, i,
					(uint64_t)t * h.gtes_per_gt + i, v, h.overhead, len / 512);
				continue;
			}
			r->allocated_clusters++;
			if (h.compressed)
				continue; /* records vary in size */
			slot = (v - h.overhead) / h.grain_sectors;
			if (owner[slot]) {
				r->corruptions++;
				gd_sane = false;
				finding(c, "ERROR %s: grain table %" PRIu32 " entry %" PRIu32
					" points at sector %" PRIu64 ", which another entry "
					"already references", path, t, i, v);
			}
			owner[slot] = 1;
			if (slot + 1 > last_used)
				last_used = slot + 1;
		}
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
					finding(c, "Leaked grain at sector %" PRIu64 " of %s: "
						"no table references it", h.overhead +
						i * h.grain_sectors, path);
			}
		if (trailing)
			finding(c, "Leaked grains: %" PRIu64 " at the end of %s (from "
				"sector %" PRIu64 ")", trailing, path,
				h.overhead + last_used * h.grain_sectors);
		r->leaks += leaked;
		if (trailing && (repair & BDEV_CHECK_REPAIR_LEAKS)) {
			ret = s->ops->truncate(s, (h.overhead + last_used * h.grain_sectors) * 512);
			if (ret < 0)
				goto out;
			r->leaks_fixed += trailing;
			finding(c, "Repaired: cut %" PRIu64 " leaked grains off %s",
				trailing, path);
		}
	}
	if (rgd_differs && gd_sane && (repair & BDEV_CHECK_REPAIR_ALL) && rgd) {
		/* rewrite each redundant table from its primary */
		uint64_t gtb = (uint64_t)h.gtes_per_gt * 4;
		uint8_t *raw = malloc(gtb);
		bool rgd_dir_ok = true;
		uint32_t fixed = 0;
		if (!raw) {
			ret = -ENOMEM;
			goto out;
		}
		for (uint32_t t = 0; t < h.gd_entries; t++)
			if (!rgd[t] || (uint64_t)rgd[t] * 512 + gtb > len)
				rgd_dir_ok = false;
		for (uint32_t t = 0; rgd_dir_ok && t < h.gd_entries; t++) {
			if (!gd[t])
				continue;
			ret = bsrc_read_full(s, raw, gtb, (uint64_t)gd[t] * 512);
			if (ret == 0)
				ret = (int)s->ops->pwrite(s, raw, gtb, (uint64_t)rgd[t] * 512);
			if (ret < 0) {
				free(raw);
				goto out;
			}
			fixed++;
		}
		free(raw);
		if (rgd_dir_ok) {
			r->corruptions_fixed += rgd_corrupt;
			finding(c, "Repaired: redundant grain tables of %s rewritten from the "
				"primary ones (%" PRIu32 " tables)", path, fixed);
		}
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

#define COWD_HDR_BYTES 2048u
#define COWD_GT_ENTRIES 4096u

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
static int check_cowd(struct ck *c, const char *path, uint64_t desc_bytes,
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
		finding(c, "WARNING %s: uncleanShutdown is set: the image was not "
			"closed cleanly", path);
	}
	if (desc_bytes && desc_bytes != (uint64_t)nsec * 512) {
		r->corruptions++;
		finding(c, "ERROR %s: the descriptor gives the extent %" PRIu64
			" sectors, its header numSectors is %" PRIu32, path,
			desc_bytes / 512, nsec);
	}
	need = grain ? ((uint64_t)nsec + (uint64_t)grain * COWD_GT_ENTRIES - 1) /
	       ((uint64_t)grain * COWD_GT_ENTRIES) : 0;
	if (!grain || n_gd < need || gd_off < COWD_HDR_BYTES / 512 ||
	    (uint64_t)gd_off + ((uint64_t)n_gd * 4 + 511) / 512 > lsec) {
		r->corruptions++;
		finding(c, "ERROR %s: grain directory at sector %" PRIu32 " (%" PRIu32
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
	ret = read_u32s(s, (uint64_t)gd_off * 512, n_gd, &gd);
	if (ret < 0)
		goto out;
	for (uint32_t t = 0; t < need; t++) {
		uint64_t gts = gd[t], gt_sec = COWD_GT_ENTRIES * 4 / 512;
		if (!gts)
			continue;
		if (gts < meta_end || gts + gt_sec > lsec) {
			r->corruptions++;
			finding(c, "ERROR %s: grain directory entry %" PRIu32 " is sector %"
				PRIu64 ", outside the file or inside the metadata", path,
				t, gts);
			continue;
		}
		if (!claim(bits, gts, gt_sec)) {
			r->corruptions++;
			finding(c, "ERROR %s: grain table %" PRIu32 " at sector %" PRIu64
				" overlaps another table or grain", path, t, gts);
		}
		if (gts + gt_sec > used_end)
			used_end = gts + gt_sec;
		free(gt);
		gt = NULL;
		ret = read_u32s(s, gts * 512, COWD_GT_ENTRIES, &gt);
		if (ret < 0)
			goto out;
		for (uint32_t i = 0; i < COWD_GT_ENTRIES; i++) {
			uint64_t v = gt[i];
			uint64_t g = (uint64_t)t * COWD_GT_ENTRIES + i;
			if (!v)
				continue;
			if (g * grain >= nsec || v < meta_end || v + grain > lsec) {
				r->corruptions++;
				finding(c, "ERROR %s: grain table %" PRIu32 " entry %" PRIu32
					" (grain %" PRIu64 ") is sector %" PRIu64 ", outside "
					"the grain area [%" PRIu64 ", %" PRIu64 ")", path, t, i,
					g, v, meta_end, lsec);
				continue;
			}
			r->allocated_clusters++;
			if (!claim(bits, v, grain)) {
				r->corruptions++;
				finding(c, "ERROR %s: grain table %" PRIu32 " entry %" PRIu32
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
		finding(c, "ERROR %s: freeSector is %" PRIu32 ", but sectors up to %"
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
			finding(c, "Leaked grains: %" PRIu64 " inside %s that no table "
				"references", leaked - trailing, path);
		if (trailing)
			finding(c, "Leaked grains: %" PRIu64 " at the end of %s (from "
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
			finding(c, "Repaired: cut %" PRIu64 " leaked grains off %s",
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

#define SE_GT_ENTRIES 4096u
#define SE_GT_SECTORS 64u
#define SE_GRAIN_BYTES 4096u

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* Sets bit i of bits; false if it already was set. */
static bool claim_bit(uint8_t *bits, uint64_t i)
{
	bool fresh = !(bits[i / 8] & (1u << (i % 8)));

	bits[i / 8] |= (uint8_t)(1u << (i % 8));
	return fresh;
}

/*
 * Check one seSparse extent file (the layout QEMU reads: constant header,
 * volatile header, then regions named by sector offset and size; the
 * directory's u64 entries are 0 or 0x10000000 << 32 | the index of a table
 * in the table region; a table's u64 entries have the grain's state in the
 * top four bits, 3 = allocated with the grain's index in the grain region).
 * Found: regions outside the file or overlapping, entries of unknown type,
 * tables or grains outside their region or the file, a table or grain
 * referenced twice, grains of the region no table references (leaks; ESXi
 * may track such grains in its free bitmap, which is not read here). No
 * repairs: ovk does not write seSparse extents.
 */
static int check_sesparse(struct ck *c, const char *path, uint64_t desc_bytes,
			  unsigned repair)
{
	static const char *const rname[] = { "constant header", "volatile header",
		"journal header", "journal", "grain directory", "grain tables",
		"free bitmap", "backmap", "grains" };
	static const unsigned roff[] = { 0, 80, 96, 112, 128, 144, 160, 176, 192 };
	struct bdev_check_result *r = c->r;
	uint8_t h[512], v[512], *gt = NULL, *gd = NULL, *tbits = NULL, *gbits = NULL;
	uint64_t len, cap, grains, need, gd_off, gt_off, n_tables, gr_off, n_cl;
	uint64_t in_file, leaked = 0, reg[9][2];
	bool bad = false;
	struct bsrc *s;
	int ret;

	ret = bsrc_open_file(path, false, true, &s);
	if (ret < 0)
		return ret;
	len = s->length;
	ret = len < 512 ? bdev_err(-EINVAL, "%s: shorter than a seSparse header", path)
			: bsrc_read_full(s, h, 512, 0);
	if (ret < 0)
		goto out;
	cap = get64(h + 16);
	if (get64(h + 8) != UINT64_C(0x0000000200000001) || get64(h + 24) != 8 ||
	    get64(h + 32) != SE_GT_SECTORS || cap > VMDK_MAX_CAPACITY_SECTORS) {
		r->corruptions++;
		finding(c, "ERROR %s: constant header: version 0x%016" PRIx64 ", grain %"
			PRIu64 " sectors, table %" PRIu64 " sectors, capacity %" PRIu64
			"; expected version 0x0000000200000001, 8, 64 and at most %"
			PRIu64 " sectors", path, get64(h + 8), get64(h + 24), get64(h + 32),
			cap, (uint64_t)VMDK_MAX_CAPACITY_SECTORS);
		goto out;
	}
	if (desc_bytes && desc_bytes != cap * 512) {
		r->corruptions++;
		finding(c, "ERROR %s: the descriptor gives the extent %" PRIu64
			" sectors, its header capacity is %" PRIu64, path,
			desc_bytes / 512, cap);
	}
	/* regions: inside the file (the grain region may run past its end:
	   grains are added at the end) and not overlapping each other */
	reg[0][0] = 0;
	reg[0][1] = 1;
	reg[1][0] = get64(h + 80);
	reg[1][1] = 1;
	for (unsigned i = 2; i < 9; i++) {
		reg[i][0] = get64(h + roff[i]);
		reg[i][1] = get64(h + roff[i] + 8);
	}
	for (unsigned i = 0; i < 9; i++) {
		uint64_t a = reg[i][0], n = reg[i][1];

		if (!n)
			continue;
		if (a > len / 512 || (i != 8 && n > len / 512 - a)) {
			r->corruptions++;
			bad = true;
			finding(c, "ERROR %s: the %s (sector %" PRIu64 ", %" PRIu64
				" sectors, header offset %u) lies outside the file (%"
				PRIu64 " bytes)", path, rname[i], a, n, roff[i], len);
			continue;
		}
		for (unsigned j = 0; j < i; j++) {
			uint64_t b = reg[j][0], m = reg[j][1];

			if (m && a < b + m && b < a + n) {
				r->corruptions++;
				bad = true;
				finding(c, "ERROR %s: the %s (sectors %" PRIu64 "..%"
					PRIu64 ") overlaps the %s (sectors %" PRIu64 "..%"
					PRIu64 ")", path, rname[i], a, a + n - 1,
					rname[j], b, b + m - 1);
			}
		}
	}
	grains = (cap + 7) / 8;
	need = (grains + SE_GT_ENTRIES - 1) / SE_GT_ENTRIES;
	gd_off = reg[4][0];
	gt_off = reg[5][0];
	n_tables = reg[5][1] / SE_GT_SECTORS;
	gr_off = reg[8][0];
	if (!bad && need > reg[4][1] * 512 / 8) {
		r->corruptions++;
		bad = true;
		finding(c, "ERROR %s: the grain directory holds %" PRIu64 " entries, "
			"the capacity needs %" PRIu64, path, reg[4][1] * 512 / 8, need);
	}
	if (bad)
		goto out;
	ret = bsrc_read_full(s, v, 512, reg[1][0] * 512);
	if (ret < 0)
		goto out;
	if (get64(v) != UINT64_C(0xcafecafe)) {
		r->corruptions++;
		finding(c, "ERROR %s: volatile header magic at sector %" PRIu64 " is 0x%"
			PRIx64 ", expected 0xcafecafe", path, reg[1][0], get64(v));
	} else if (get64(v + 24)) {
		r->unclean = true;
		finding(c, "WARNING %s: replay_journal is set: ESXi must replay the "
			"journal before the disk reads consistently", path);
	}
	/* grains the region holds inside the file; the bitmap stays bounded by
	   the file however large the header says the region is */
	in_file = gr_off * 512 < len ? (len - gr_off * 512) / SE_GRAIN_BYTES : 0;
	n_cl = reg[8][1] / 8 < in_file ? reg[8][1] / 8 : in_file;
	gd = malloc((size_t)need * 8 + 8);
	gt = malloc(SE_GT_ENTRIES * 8);
	tbits = calloc(n_tables / 8 + 1, 1);
	gbits = calloc(n_cl / 8 + 1, 1);
	if (!gd || !gt || !tbits || !gbits) {
		ret = -ENOMEM;
		goto out;
	}
	ret = bsrc_read_full(s, gd, (size_t)need * 8, gd_off * 512);
	if (ret < 0)
		goto out;
	for (uint64_t t = 0; t < need; t++) {
		uint64_t x = get64(gd + t * 8), idx = x & 0xffffffffu;

		if (!x)
			continue;
		if (x >> 32 != 0x10000000u || idx >= n_tables) {
			r->corruptions++;
			finding(c, "ERROR %s: grain directory entry %" PRIu64 " is 0x%016"
				PRIx64 ", expected 0 or 0x10000000 with a table index below %"
				PRIu64, path, t, x, n_tables);
			continue;
		}
		if (!claim_bit(tbits, idx)) {
			r->corruptions++;
			finding(c, "ERROR %s: grain directory entry %" PRIu64 " names grain "
				"table %" PRIu64 ", which another entry already uses", path,
				t, idx);
			continue;
		}
		ret = bsrc_read_full(s, gt, SE_GT_ENTRIES * 8,
				     gt_off * 512 + idx * SE_GT_SECTORS * 512);
		if (ret < 0)
			goto out;
		for (uint32_t i = 0; i < SE_GT_ENTRIES; i++) {
			uint64_t e = get64(gt + (size_t)i * 8), g = t * SE_GT_ENTRIES + i, cl;
			unsigned type = (unsigned)(e >> 60);

			if (!e || type == 1 || type == 2)
				continue;	/* unallocated, unmapped, zeroed */
			if (type != 3) {
				r->corruptions++;
				finding(c, "ERROR %s: grain table %" PRIu64 " entry %" PRIu32
					" is 0x%016" PRIx64 ", expected 0 or a type of 1, 2 "
					"or 3 in the top 4 bits", path, idx, i, e);
				continue;
			}
			cl = ((e & UINT64_C(0x0fff000000000000)) >> 48) |
			     ((e & UINT64_C(0x0000ffffffffffff)) << 12);
			if (g >= grains || cl >= reg[8][1] / 8 || cl >= in_file) {
				r->corruptions++;
				finding(c, "ERROR %s: grain table %" PRIu64 " entry %" PRIu32
					" (grain %" PRIu64 " of %" PRIu64 ") names grain %"
					PRIu64 " of the grain region, which holds %" PRIu64
					" (%" PRIu64 " inside the file)", path, idx, i, g,
					grains, cl, reg[8][1] / 8, in_file);
				continue;
			}
			r->allocated_clusters++;
			if (!claim_bit(gbits, cl)) {
				r->corruptions++;
				finding(c, "ERROR %s: grain table %" PRIu64 " entry %" PRIu32
					" names grain %" PRIu64 " of the grain region, which "
					"another entry already uses", path, idx, i, cl);
			}
		}
	}
	r->total_clusters += grains;
	for (uint64_t i = 0; i < n_cl; i++)
		leaked += !(gbits[i / 8] & (1u << (i % 8)));
	if (leaked) {
		r->leaks += leaked;
		finding(c, "Leaked grains: %" PRIu64 " in the grain region of %s that "
			"no table references", leaked, path);
	}
	if (repair && (r->leaks || r->corruptions))
		finding(c, "Not repaired: %s is a seSparse extent, which ovk does not "
			"write", path);
out:
	free(gd);
	free(gt);
	free(tbits);
	free(gbits);
	bsrc_close(s);
	return ret;
}

/* Check one sparse extent file by its magic. */
static int check_extent(struct ck *c, const char *path, uint64_t desc_bytes,
			unsigned repair, bool *checked)
{
	uint8_t magic[8] = { 0 };
	struct bsrc *s;
	int ret = bsrc_open_file(path, false, true, &s);

	*checked = false;
	if (ret < 0)
		return ret;
	if (s->length >= 8)
		ret = bsrc_read_full(s, magic, 8, 0);
	bsrc_close(s);
	if (ret < 0)
		return ret;
	*checked = true;
	if (!memcmp(magic, "COWD", 4))
		return check_cowd(c, path, desc_bytes, repair);
	if (!memcmp(magic, VMDK4_MAGIC, 4))
		return check_hosted(c, path, desc_bytes, repair);
	if (vmdk_is_sesparse_magic(magic, sizeof(magic)))
		return check_sesparse(c, path, desc_bytes, repair);
	*checked = false;
	return 0;
}

/*
 * The sparse extents named by the descriptor at path, read without opening
 * the image: for a check of an image the engine refuses to open (a table
 * entry out of range makes the open fail). Names leaving the folder are
 * skipped. A file that is itself a sparse extent is its own list.
 */
static int extents_unopened(const char *path, char **paths, uint64_t *sizes,
			    unsigned cap, unsigned *n)
{
	struct vmdk_desc d;
	char *text = NULL;
	const char *slash = strrchr(path, '/');
	size_t len = 0, dl = slash ? (size_t)(slash - path) + 1 : 0;
	int ret;

	*n = 0;
	ret = vmdk_desc_read_file(path, &text, &len);
	if (ret < 0)
		return ret;
	if (len >= 8 && (!memcmp(text, VMDK4_MAGIC, 4) || !memcmp(text, "COWD", 4) ||
			 vmdk_is_sesparse_magic((const uint8_t *)text, len))) {
		free(text);
		paths[0] = strdup(path);
		sizes[0] = 0;
		*n = paths[0] ? 1 : 0;
		return paths[0] ? 0 : -ENOMEM;
	}
	if (vmdk_desc_probe((const uint8_t *)text, len) < 50 ||
	    vmdk_desc_parse(text, len, path, &d) < 0) {
		free(text);
		return -EINVAL;
	}
	free(text);
	for (unsigned i = 0; i < d.n_extents && *n < cap; i++) {
		const struct vmdk_desc_extent *x = &d.extents[i];
		const char *nm = x->name;
		char *p;

		if (!nm || (x->type != VMDK_EXT_SPARSE && x->type != VMDK_EXT_VMFSSPARSE &&
			    x->type != VMDK_EXT_SESPARSE) ||
		    nm[0] == '/' || strstr(nm, ".."))
			continue;
		p = malloc(dl + strlen(nm) + 1);
		if (!p) {
			ret = -ENOMEM;
			break;
		}
		memcpy(p, path, dl);
		strcpy(p + dl, nm);
		paths[*n] = p;
		sizes[(*n)++] = x->sectors * 512;
	}
	vmdk_desc_free(&d);
	return ret;
}

/*
 * The engine refused to open path (its message is in open_err's text):
 * check the sparse extents anyway, so that what made the open fail is
 * reported as a finding with the rest. Returns 0 when the check found
 * corruption to report, else open_err. Nothing is repaired.
 */
static int check_unopened(struct ck *c, const char *path, unsigned repair,
			  int open_err)
{
	enum { MAX_EXT = 256 };
	char why[4096], **paths = calloc(MAX_EXT, sizeof(char *));
	uint64_t *sizes = calloc(MAX_EXT, sizeof(uint64_t));
	unsigned n = 0;
	int ret;

	(void)repair;
	snprintf(why, sizeof(why), "%s", bdev_errmsg());
	if (!paths || !sizes) {
		free(paths);
		free(sizes);
		return open_err;
	}
	ret = extents_unopened(path, paths, sizes, MAX_EXT, &n);
	for (unsigned i = 0; ret == 0 && i < n; i++) {
		bool checked;
		ret = check_extent(c, paths[i], sizes[i], 0, &checked);
		c->r->checked_extents += checked;
	}
	for (unsigned i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(sizes);
	if (ret < 0 || !c->r->corruptions) {
		bdev_err(open_err, "%s", why);
		return open_err;
	}
	finding(c, "ERROR %s: the image cannot be opened: %s", path, why);
	c->r->corruptions++;
	return 0;
}

int bdev_check(const char *path, unsigned repair, struct bdev_check_result *r,
	       void (*report)(void *opaque, const char *line), void *opaque)
{
	struct bdev_open_opts o = { .flags = BDEV_O_SHARE | BDEV_O_NO_BACKING };
	struct ck c = { r, report, opaque };
	struct bdev *b;
	struct bdev_info in;
	char **paths = NULL;
	uint64_t *sizes = NULL;
	unsigned n = 0;
	int ret;

	bdev_err_clear();
	memset(r, 0, sizeof(*r));
	ret = bdev_open(path, &o, &b);
	if (ret < 0)
		return check_unopened(&c, path, repair, ret);
	ret = bdev_get_info(b, &in);
	if (ret == 0 && strcmp(in.format, "vmdk"))
		ret = bdev_err(-ENOTSUP, "%s: only VMDK images can be checked", path);
	if (ret == 0) {
		paths = calloc(in.extent_count + 1, sizeof(*paths));
		sizes = calloc(in.extent_count + 1, sizeof(*sizes));
		if (!paths || !sizes)
			ret = -ENOMEM;
	}
	for (unsigned i = 0; ret == 0 && i < in.extent_count; i++) {
		struct bdev_extent_info e;
		ret = bdev_get_extent(b, i, &e);
		if (ret == 0 && (!strcmp(e.type, "SPARSE") ||
				 !strcmp(e.type, "VMFSSPARSE") ||
				 !strcmp(e.type, "SESPARSE")) && e.filename) {
			paths[n] = strdup(e.filename);
			sizes[n++] = e.size;
		}
	}
	bdev_close(b);
	for (unsigned i = 0; ret == 0 && i < n; i++) {
		/* a monolithic file's descriptor and header say the same */
		bool checked;
		ret = check_extent(&c, paths[i], sizes[i], repair, &checked);
		r->checked_extents += checked;
	}
	for (unsigned i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(sizes);
	return ret;
}
