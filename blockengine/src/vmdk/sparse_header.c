/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sparse_header.c - the 512-byte hosted sparse extent header ("KDMV") and
 * stream markers: decoded with explicit little-endian loads and checked
 * field by field before anything trusts them.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>

#include "vmdk.h"

/* The on-disk layout (packed: several fields are unaligned). */
struct vmdk4_disk_header {
	uint8_t magic[4];
	uint32_t version;
	uint32_t flags;
	uint64_t capacity;
	uint64_t grain_size;
	uint64_t desc_offset;
	uint64_t desc_size;
	uint32_t num_gtes_per_gt;
	uint64_t rgd_offset;
	uint64_t gd_offset;
	uint64_t overhead;
	uint8_t unclean_shutdown;
	uint8_t nl_check[4];
	uint16_t compress_algorithm;
	uint8_t pad[433];
} __attribute__((packed));

_Static_assert(sizeof(struct vmdk4_disk_header) == 512, "header is one sector");
_Static_assert(offsetof(struct vmdk4_disk_header, version) == 4, "version");
_Static_assert(offsetof(struct vmdk4_disk_header, flags) == 8, "flags");
_Static_assert(offsetof(struct vmdk4_disk_header, capacity) == 12, "capacity");
_Static_assert(offsetof(struct vmdk4_disk_header, grain_size) == 20, "grainSize");
_Static_assert(offsetof(struct vmdk4_disk_header, desc_offset) == 28, "descriptorOffset");
_Static_assert(offsetof(struct vmdk4_disk_header, desc_size) == 36, "descriptorSize");
_Static_assert(offsetof(struct vmdk4_disk_header, num_gtes_per_gt) == 44, "numGTEsPerGT");
_Static_assert(offsetof(struct vmdk4_disk_header, rgd_offset) == 48, "rgdOffset");
_Static_assert(offsetof(struct vmdk4_disk_header, gd_offset) == 56, "gdOffset");
_Static_assert(offsetof(struct vmdk4_disk_header, overhead) == 64, "overHead");
_Static_assert(offsetof(struct vmdk4_disk_header, unclean_shutdown) == 72, "uncleanShutdown");
_Static_assert(offsetof(struct vmdk4_disk_header, nl_check) == 73, "newline check bytes");
_Static_assert(offsetof(struct vmdk4_disk_header, compress_algorithm) == 77, "compressAlgorithm");

/* A marker / grain record header: u64 val, u32 size, u32 type. */
struct vmdk_disk_marker {
	uint64_t val;
	uint32_t size;
	uint32_t type;
} __attribute__((packed));

_Static_assert(sizeof(struct vmdk_disk_marker) == 16, "marker head");
_Static_assert(offsetof(struct vmdk_disk_marker, size) == 8, "marker size");
_Static_assert(offsetof(struct vmdk_disk_marker, type) == 12, "marker type");

#define KNOWN_FLAGS (VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_RGD | VMDK4_FLAG_ZERO_GRAIN | \
		     VMDK4_FLAG_COMPRESSED | VMDK4_FLAG_MARKERS)
#define INCOMPAT_MASK 0xffff0000u

/* True if buf starts with "KDMV". */
bool vmdk_is_sparse_magic(const uint8_t *buf, size_t len)
{
	return len >= 4 && memcmp(buf, VMDK4_MAGIC, 4) == 0;
}

/* Decode a marker or grain record header from its first 16 bytes. */
void vmdk_marker_decode(const uint8_t *buf, struct vmdk_marker *m)
{
	struct vmdk_disk_marker d;

	memcpy(&d, buf, sizeof(d));
	m->val = le64toh(d.val);
	m->size = le32toh(d.size);
	m->type = le32toh(d.type);
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* Does [off_sectors, off_sectors + bytes) lie inside a file of file_len? */
static bool inside(uint64_t off_sectors, uint64_t bytes, uint64_t file_len)
{
	if (off_sectors == 0 || off_sectors > file_len / 512)
		return false;
	return bytes <= file_len - off_sectors * 512;
}

/* Decode and check a hosted sparse header; see vmdk.h. */
int vmdk_sparse_header_parse(const uint8_t *buf, uint64_t hdr_off,
			     uint64_t file_len, const char *name,
			     struct vmdk_sparse_hdr *h)
{
	struct vmdk4_disk_header d;
	uint64_t gt_span, unknown;

	memcpy(&d, buf, sizeof(d));
	memset(h, 0, sizeof(*h));
	if (memcmp(d.magic, VMDK4_MAGIC, 4) != 0)
		return bdev_err(-EINVAL,
				"%s: magic at offset %" PRIu64 " is %02x %02x %02x %02x, expected \"KDMV\"",
				name, hdr_off, d.magic[0], d.magic[1], d.magic[2], d.magic[3]);
	h->version = le32toh(d.version);
	h->flags = le32toh(d.flags);
	h->capacity = le64toh(d.capacity);
	h->grain_sectors = le64toh(d.grain_size);
	h->desc_offset = le64toh(d.desc_offset);
	h->desc_size = le64toh(d.desc_size);
	h->gtes_per_gt = le32toh(d.num_gtes_per_gt);
	h->rgd_offset = le64toh(d.rgd_offset);
	h->gd_offset = le64toh(d.gd_offset);
	h->overhead = le64toh(d.overhead);
	h->unclean = d.unclean_shutdown != 0;
	h->compress_algorithm = le16toh(d.compress_algorithm);

	if (h->version < 1 || h->version > 3)
		return bdev_err(-ENOTSUP, "%s: version at offset %" PRIu64 " is %" PRIu32
				", expected 1, 2 or 3", name, hdr_off + 4, h->version);
	unknown = h->flags & ~KNOWN_FLAGS & INCOMPAT_MASK;
	if (unknown)
		return bdev_err(-ENOTSUP, "%s: flags at offset %" PRIu64 " are 0x%08" PRIx32
				", expected no unknown incompatible bits (0x%08" PRIx64 " set)",
				name, hdr_off + 8, h->flags, unknown);
	if ((h->flags & VMDK4_FLAG_NL_DETECT) &&
	    memcmp(d.nl_check, "\n \r\n", 4) != 0)
		return bdev_err(-EINVAL,
				"%s: newline check bytes at offset %" PRIu64
				" are %02x %02x %02x %02x, expected 0a 20 0d 0a: the file was "
				"damaged by a text-mode (ASCII) transfer",
				name, hdr_off + 73, d.nl_check[0], d.nl_check[1],
				d.nl_check[2], d.nl_check[3]);
	if (h->compress_algorithm > 1)
		return bdev_err(-ENOTSUP, "%s: compressAlgorithm at offset %" PRIu64
				" is %u, expected 0 (none) or 1 (deflate)",
				name, hdr_off + 77, h->compress_algorithm);
	h->compressed = h->compress_algorithm == 1 ||
			(h->flags & VMDK4_FLAG_COMPRESSED);
	if (!is_pow2(h->grain_sectors) || h->grain_sectors > VMDK4_MAX_GRAIN_SECTORS)
		return bdev_err(-EINVAL, "%s: grainSize at offset %" PRIu64 " is %" PRIu64
				", expected a power of two from 1 to %u sectors",
				name, hdr_off + 20, h->grain_sectors, VMDK4_MAX_GRAIN_SECTORS);
	if (h->compressed && h->grain_sectors > VMDK4_MAX_COMPRESSED_GRAIN_SECTORS)
		return bdev_err(-ENOTSUP, "%s: grainSize at offset %" PRIu64 " is %" PRIu64
				", expected at most %u sectors for compressed grains",
				name, hdr_off + 20, h->grain_sectors,
				VMDK4_MAX_COMPRESSED_GRAIN_SECTORS);
	if (h->gtes_per_gt == 0 || h->gtes_per_gt > VMDK4_MAX_GTES_PER_GT)
		return bdev_err(-EINVAL, "%s: numGTEsPerGT at offset %" PRIu64 " is %" PRIu32
				", expected 1 to %u", name, hdr_off + 44,
				h->gtes_per_gt, VMDK4_MAX_GTES_PER_GT);
	if (h->capacity > VMDK_MAX_CAPACITY_SECTORS)
		return bdev_err(-EFBIG, "%s: capacity at offset %" PRIu64 " is %" PRIu64
				" sectors, expected at most %" PRIu64, name, hdr_off + 12,
				h->capacity, (uint64_t)VMDK_MAX_CAPACITY_SECTORS);
	gt_span = (uint64_t)h->gtes_per_gt * h->grain_sectors;
	uint64_t gd_entries = (h->capacity + gt_span - 1) / gt_span;
	if (gd_entries > VMDK_MAX_GD_ENTRIES)
		return bdev_err(-EFBIG, "%s: capacity %" PRIu64 " with grainSize %" PRIu64
				" and numGTEsPerGT %" PRIu32 " needs %" PRIu64
				" grain directory entries, expected at most %u",
				name, h->capacity, h->grain_sectors, h->gtes_per_gt,
				gd_entries, VMDK_MAX_GD_ENTRIES);
	h->gd_entries = (uint32_t)gd_entries;

	if (h->desc_offset || h->desc_size) {
		if (h->desc_size > VMDK_MAX_DESC_SECTORS)
			return bdev_err(-EINVAL, "%s: descriptorSize at offset %" PRIu64 " is %" PRIu64
					" sectors, expected at most %u", name, hdr_off + 36,
					h->desc_size, VMDK_MAX_DESC_SECTORS);
		if (!inside(h->desc_offset, h->desc_size * 512, file_len))
			return bdev_err(-EINVAL, "%s: descriptorOffset at offset %" PRIu64 " is %" PRIu64
					" (+%" PRIu64 " sectors), expected a range inside the file (%"
					PRIu64 " bytes)", name, hdr_off + 28, h->desc_offset,
					h->desc_size, file_len);
	}
	if (h->gd_offset != VMDK4_GD_AT_END)
		h->gd_ok = inside(h->gd_offset, (uint64_t)h->gd_entries * 4, file_len);
	if (h->flags & VMDK4_FLAG_RGD)
		h->rgd_ok = inside(h->rgd_offset, (uint64_t)h->gd_entries * 4, file_len);
	if (h->overhead > file_len / 512 && !h->compressed)
		return bdev_err(-EIO, "%s: overHead at offset %" PRIu64 " is %" PRIu64
				" sectors, expected at most the file size (%" PRIu64
				" bytes): the file is truncated", name, hdr_off + 64,
				h->overhead, file_len);
	return 0;
}
