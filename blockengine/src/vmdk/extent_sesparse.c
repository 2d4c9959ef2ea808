/* SPDX-License-Identifier: Apache-2.0 */
/*
 * extent_sesparse.c - ESXi seSparse extents: a constant header, a volatile
 * header, a directory of u64 entries naming grain tables by index, grain
 * tables of 4096 u64 entries whose top four bits give the grain's state.
 * The format is not published; the checks follow what QEMU accepts.
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

	e->kind = VMDK_SPARSE_SE;
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
