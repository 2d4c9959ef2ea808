/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ptable.h - read MBR (primary, extended, logical) and GPT partition tables
 * from untrusted disk bytes.
 *
 * The parser never trusts a field: every offset and size is checked against
 * the disk size, EBR chains are bounded and loop-checked, GPT headers and
 * entry arrays must pass their CRC32 (the backup header is used when the
 * primary fails).
 */
#ifndef OVK_VMDKFS_PTABLE_H
#define OVK_VMDKFS_PTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PTABLE_SECTOR 512u
#define PTABLE_MAX_PARTS 256u /* more entries than any real disk uses */
#define PTABLE_MAX_LOGICAL 128u

enum ptable_kind { PTABLE_NONE, PTABLE_MBR, PTABLE_GPT };

struct ptable_part {
	unsigned number;  /* 1-4 primary, 5+ logical (MBR); entry+1 (GPT) */
	uint64_t offset;  /* bytes from the start of the disk */
	uint64_t size;    /* bytes */
	uint8_t mbr_type; /* MBR type byte, 0 for GPT */
	bool extended;    /* MBR extended container */
	bool logical;     /* MBR logical partition */
	char type[32];    /* short type name: "linux", "efi-system", ... */
	char label[108];  /* GPT name as UTF-8 (may be empty) */
	char name[160];   /* file name: "p1-linux-rootfs" */
};

struct ptable {
	enum ptable_kind kind;
	bool gpt_used_backup; /* primary GPT header was bad */
	unsigned count;
	struct ptable_part parts[PTABLE_MAX_PARTS];
};

/* Reads len bytes at off of the disk into buf; returns 0 or -errno. */
typedef int (*ptable_read_fn)(void *opaque, void *buf, size_t len,
			      uint64_t off);

/*
 * Fill *pt with the partitions of a disk of disk_size bytes. A disk without
 * a recognised table gives kind PTABLE_NONE and count 0, not an error.
 * Returns 0, or -errno when a read fails. warn (may be NULL) receives a
 * sentence about each damaged structure skipped.
 */
int ptable_read(ptable_read_fn read, void *opaque, uint64_t disk_size,
		struct ptable *pt, void (*warn)(const char *msg));

const char *ptable_kind_name(enum ptable_kind k);

#endif
