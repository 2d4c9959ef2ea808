/* SPDX-License-Identifier: Apache-2.0 */
/*
 * extent_sesparse.c - ESXi seSparse extents: a constant header, a volatile
 * header, a directory of u64 entries naming grain tables by index, grain
 * tables of 4096 u64 entries whose top four bits give the grain's state.
 * The format is not published; the checks follow what QEMU accepts.
 * Their check: regions, directory and table entries in range, no table or
 * grain used twice, leaks (checked, never repaired). The kind's table,
 * vmdk_sesparse_ops, ends the file.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

#define SE_CONST_MAGIC UINT64_C(0x00000000cafebabe)
#define SE_VOLATILE_MAGIC UINT64_C(0x00000000cafecafe)
#define SE_VERSION UINT64_C(0x0000000200000001)
#define SE_GD_ALLOCATED UINT64_C(0x1000000000000000)

struct se_const_header {
	uint64_t magic, version, capacity, grain_size, grain_table_size, flags;
	uint64_t reserved1, reserved2, reserved3, reserved4;
	uint64_t volatile_header_offset, volatile_header_size;
	uint64_t journal_header_offset, journal_header_size;
	uint64_t journal_offset, journal_size;
	uint64_t grain_dir_offset, grain_dir_size;
	uint64_t grain_tables_offset, grain_tables_size;
	uint64_t free_bitmap_offset, free_bitmap_size;
	uint64_t backmap_offset, backmap_size;
	uint64_t grains_offset, grains_size;
	uint8_t pad[304];
} __attribute__((packed));

struct se_volatile_header {
	uint64_t magic, free_gt_number, next_txn_seq_number, replay_journal;
	uint8_t pad[480];
} __attribute__((packed));

_Static_assert(sizeof(struct se_const_header) == 512, "const header is a sector");
_Static_assert(sizeof(struct se_volatile_header) == 512, "volatile header is a sector");
_Static_assert(offsetof(struct se_const_header, capacity) == 16, "capacity");
_Static_assert(offsetof(struct se_const_header, grain_size) == 24, "grain_size");
_Static_assert(offsetof(struct se_const_header, grain_table_size) == 32, "grain_table_size");
_Static_assert(offsetof(struct se_const_header, flags) == 40, "flags");
_Static_assert(offsetof(struct se_const_header, volatile_header_offset) == 80, "volatile");
_Static_assert(offsetof(struct se_const_header, grain_dir_offset) == 128, "grain_dir_offset");
_Static_assert(offsetof(struct se_const_header, grain_dir_size) == 136, "grain_dir_size");
_Static_assert(offsetof(struct se_const_header, grain_tables_offset) == 144, "grain_tables_offset");
_Static_assert(offsetof(struct se_const_header, grains_offset) == 192, "grains_offset");
_Static_assert(offsetof(struct se_volatile_header, replay_journal) == 24, "replay_journal");

/* True if buf starts with the seSparse constant-header magic. */
bool vmdk_is_sesparse_magic(const uint8_t *buf, size_t len)
{
	uint64_t m;

	if (len < 8)
		return false;
	memcpy(&m, buf, 8);
	return le64toh(m) == SE_CONST_MAGIC;
}

static bool range_ok(uint64_t off_sectors, uint64_t bytes, uint64_t len)
{
	return off_sectors <= len / 512 && bytes <= len - off_sectors * 512;
}

/* Open a seSparse extent whose source is e->src: check both headers, load
   the directory, resolve each allocated entry to its table's offset. */
int vmdk_sesparse_open(struct vmdk_extent *e, const char *name)
{
	struct se_const_header h;
	struct se_volatile_header v;
	uint64_t len = e->src->length, cap, gd_off, gd_n, gt_off, grains_off, need;
	uint64_t *raw = NULL;
	int ret;

	if (len < 512)
		return bdev_err(-EINVAL, "%s: file is %" PRIu64 " bytes, expected at least a "
				"512-byte seSparse header", name, len);
	ret = bsrc_read_full(e->src, &h, sizeof(h), 0);
	if (ret < 0)
		return ret;
	if (le64toh(h.magic) != SE_CONST_MAGIC)
		return bdev_err(-EINVAL, "%s: magic at offset 0 is 0x%016" PRIx64
				", expected 0x%016" PRIx64, name, le64toh(h.magic), SE_CONST_MAGIC);
	if (le64toh(h.version) != SE_VERSION)
		return bdev_err(-ENOTSUP, "%s: version at offset 8 is 0x%016" PRIx64
				", expected 0x%016" PRIx64, name, le64toh(h.version), SE_VERSION);
	if (le64toh(h.grain_size) != 8)
		return bdev_err(-ENOTSUP, "%s: grain_size at offset 24 is %" PRIu64
				", expected 8 sectors", name, le64toh(h.grain_size));
	if (le64toh(h.grain_table_size) != 64)
		return bdev_err(-ENOTSUP, "%s: grain_table_size at offset 32 is %" PRIu64
				", expected 64 sectors", name, le64toh(h.grain_table_size));
	if (h.flags != 0)
		return bdev_err(-ENOTSUP, "%s: flags at offset 40 are 0x%016" PRIx64
				", expected 0", name, le64toh(h.flags));
	if (h.reserved1 || h.reserved2 || h.reserved3 || h.reserved4)
		return bdev_err(-ENOTSUP, "%s: reserved fields at offsets 48..79 are not zero",
				name);
	cap = le64toh(h.capacity);
	if (cap > VMDK_MAX_CAPACITY_SECTORS)
		return bdev_err(-EFBIG, "%s: capacity at offset 16 is %" PRIu64
				" sectors, expected at most %" PRIu64, name, cap,
				(uint64_t)VMDK_MAX_CAPACITY_SECTORS);

	uint64_t voff = le64toh(h.volatile_header_offset);
	if (!range_ok(voff, 512, len))
		return bdev_err(-EINVAL, "%s: volatile_header_offset at offset 80 is %" PRIu64
				", expected a sector inside the file (%" PRIu64 " bytes)",
				name, voff, len);
	ret = bsrc_read_full(e->src, &v, sizeof(v), voff * 512);
	if (ret < 0)
		return ret;
	if (le64toh(v.magic) != SE_VOLATILE_MAGIC)
		return bdev_err(-EINVAL, "%s: volatile header magic at offset %" PRIu64
				" is 0x%016" PRIx64 ", expected 0x%016" PRIx64, name, voff * 512,
				le64toh(v.magic), SE_VOLATILE_MAGIC);
	if (v.replay_journal)
		return bdev_err(-ENOTSUP, "%s: replay_journal at offset %" PRIu64
				" is set: the journal must be replayed by ESXi before the "
				"disk can be read consistently", name, voff * 512 + 24);

	gd_off = le64toh(h.grain_dir_offset);
	gd_n = le64toh(h.grain_dir_size) * 512 / 8;
	gt_off = le64toh(h.grain_tables_offset);
	grains_off = le64toh(h.grains_offset);
	need = (cap + 8 * 4096 - 1) / (8 * 4096);
	if (le64toh(h.grain_dir_size) > (uint64_t)VMDK_MAX_GD_ENTRIES * 8 / 512 ||
	    gd_n < need)
		return bdev_err(-EINVAL, "%s: grain_dir_size at offset 136 is %" PRIu64
				" sectors, expected room for %" PRIu64 " entries",
				name, le64toh(h.grain_dir_size), need);
	if (!range_ok(gd_off, need * 8, len))
		return bdev_err(-EINVAL, "%s: grain_dir_offset at offset 128 is %" PRIu64
				", expected a directory inside the file (%" PRIu64 " bytes)",
				name, gd_off, len);
	if (gt_off > len / 512 || grains_off > len / 512)
		return bdev_err(-EINVAL, "%s: grain_tables_offset (%" PRIu64 ") or grains_offset (%"
				PRIu64 ") at offsets 144/192 lie beyond the file (%" PRIu64 " bytes)",
				name, gt_off, grains_off, len);

	e->ops = &vmdk_sesparse_ops;
	e->version = 2;
	e->capacity = cap;
	e->grain_bytes = 8 * 512;
	e->grain_shift = 12;
	e->gt_entries = 4096;
	e->gte_size = 8;
	e->gt_bytes = 4096 * 8;
	e->gd_entries = (uint32_t)need;
	e->se_grains_off = grains_off * 512;

	raw = malloc((size_t)need * 8 + 1);
	e->gd = malloc((size_t)need * 8 + 1);
	if (!raw || !e->gd) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = bsrc_read_full(e->src, raw, (size_t)need * 8, gd_off * 512);
	if (ret < 0)
		goto err_free;
	for (uint64_t i = 0; i < need; i++) {
		uint64_t x = le64toh(raw[i]), at;
		if (x == 0) {
			e->gd[i] = 0;
			continue;
		}
		if ((x & UINT64_C(0xffffffff00000000)) != SE_GD_ALLOCATED)
			goto bad_entry;
		at = gt_off * 512 + (x & 0xffffffffu) * e->gt_bytes;
		if (at > len || e->gt_bytes > len - at)
			goto bad_entry;
		e->gd[i] = at;
		continue;
bad_entry:
		ret = bdev_err(-EINVAL, "%s: grain directory entry %" PRIu64 " at offset %" PRIu64
			       " is 0x%016" PRIx64 ", expected 0 or 0x10000000 with the index "
			       "of a grain table inside the file", name, i, gd_off * 512 + i * 8, x);
		goto err_free;
	}
	free(raw);
	return 0;

err_free:
	free(raw);
	free(e->gd);
	e->gd = NULL;
	return ret;
}

/* Decode u64 GTE idx of gt; see vmdk.h. */
static int se_decode(const struct vmdk_extent *e, const uint8_t *gt,
		     uint32_t idx, uint64_t *file_off)
{
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

/* ---- Check (the check op) ----------------------------------------------- */

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
static int sesparse_check(struct vmdk_check_ctx *c, const char *path, uint64_t desc_bytes,
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
		vmdk_check_finding(c, "ERROR %s: constant header: version 0x%016" PRIx64 ", grain %"
			PRIu64 " sectors, table %" PRIu64 " sectors, capacity %" PRIu64
			"; expected version 0x0000000200000001, 8, 64 and at most %"
			PRIu64 " sectors", path, get64(h + 8), get64(h + 24), get64(h + 32),
			cap, (uint64_t)VMDK_MAX_CAPACITY_SECTORS);
		goto out;
	}
	if (desc_bytes && desc_bytes != cap * 512) {
		r->corruptions++;
		vmdk_check_finding(c, "ERROR %s: the descriptor gives the extent %" PRIu64
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
			vmdk_check_finding(c, "ERROR %s: the %s (sector %" PRIu64 ", %" PRIu64
				" sectors, header offset %u) lies outside the file (%"
				PRIu64 " bytes)", path, rname[i], a, n, roff[i], len);
			continue;
		}
		for (unsigned j = 0; j < i; j++) {
			uint64_t b = reg[j][0], m = reg[j][1];

			if (m && a < b + m && b < a + n) {
				r->corruptions++;
				bad = true;
				vmdk_check_finding(c, "ERROR %s: the %s (sectors %" PRIu64 "..%"
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
		vmdk_check_finding(c, "ERROR %s: the grain directory holds %" PRIu64 " entries, "
			"the capacity needs %" PRIu64, path, reg[4][1] * 512 / 8, need);
	}
	if (bad)
		goto out;
	ret = bsrc_read_full(s, v, 512, reg[1][0] * 512);
	if (ret < 0)
		goto out;
	if (get64(v) != UINT64_C(0xcafecafe)) {
		r->corruptions++;
		vmdk_check_finding(c, "ERROR %s: volatile header magic at sector %" PRIu64 " is 0x%"
			PRIx64 ", expected 0xcafecafe", path, reg[1][0], get64(v));
	} else if (get64(v + 24)) {
		r->unclean = true;
		vmdk_check_finding(c, "WARNING %s: replay_journal is set: ESXi must replay the "
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
			vmdk_check_finding(c, "ERROR %s: grain directory entry %" PRIu64 " is 0x%016"
				PRIx64 ", expected 0 or 0x10000000 with a table index below %"
				PRIu64, path, t, x, n_tables);
			continue;
		}
		if (!claim_bit(tbits, idx)) {
			r->corruptions++;
			vmdk_check_finding(c, "ERROR %s: grain directory entry %" PRIu64 " names grain "
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
				vmdk_check_finding(c, "ERROR %s: grain table %" PRIu64 " entry %" PRIu32
					" is 0x%016" PRIx64 ", expected 0 or a type of 1, 2 "
					"or 3 in the top 4 bits", path, idx, i, e);
				continue;
			}
			cl = ((e & UINT64_C(0x0fff000000000000)) >> 48) |
			     ((e & UINT64_C(0x0000ffffffffffff)) << 12);
			if (g >= grains || cl >= reg[8][1] / 8 || cl >= in_file) {
				r->corruptions++;
				vmdk_check_finding(c, "ERROR %s: grain table %" PRIu64 " entry %" PRIu32
					" (grain %" PRIu64 " of %" PRIu64 ") names grain %"
					PRIu64 " of the grain region, which holds %" PRIu64
					" (%" PRIu64 " inside the file)", path, idx, i, g,
					grains, cl, reg[8][1] / 8, in_file);
				continue;
			}
			r->allocated_clusters++;
			if (!claim_bit(gbits, cl)) {
				r->corruptions++;
				vmdk_check_finding(c, "ERROR %s: grain table %" PRIu64 " entry %" PRIu32
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
		vmdk_check_finding(c, "Leaked grains: %" PRIu64 " in the grain region of %s that "
			"no table references", leaked, path);
	}
	if (repair && (r->leaks || r->corruptions))
		vmdk_check_finding(c, "Not repaired: %s is a seSparse extent, which ovk does not "
			"write", path);
out:
	free(gd);
	free(gt);
	free(tbits);
	free(gbits);
	bsrc_close(s);
	return ret;
}

const struct vmdk_extent_ops vmdk_sesparse_ops = {
	.name = "seSparse",
	.type = VMDK_EXT_SESPARSE,
	.create_type = "seSparse",
	.probe = vmdk_is_sesparse_magic,
	.open = vmdk_sesparse_open,
	.decode = se_decode,
	.check = sesparse_check,
};
