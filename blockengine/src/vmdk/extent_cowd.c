/* SPDX-License-Identifier: Apache-2.0 */
/*
 * extent_cowd.c - "COWD" sparse extents (ESX vmfsSparse deltas, and the
 * VMware 2/3 era sparse disks): a 2 KiB header, a directory of u32 sector
 * offsets, grain tables of 4096 u32 sector offsets.
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

	e->kind = VMDK_SPARSE_COWD;
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
