/* SPDX-License-Identifier: Apache-2.0 */
/* ptable.c - MBR and GPT partition tables from untrusted bytes. */
#include "ptable.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---- On-disk layouts ---------------------------------------------------- */

struct mbr_entry {
	uint8_t status;
	uint8_t chs_first[3];
	uint8_t type;
	uint8_t chs_last[3];
	uint32_t lba_first; /* le */
	uint32_t sectors;   /* le */
} __attribute__((packed));

_Static_assert(sizeof(struct mbr_entry) == 16, "MBR entry is 16 bytes");
_Static_assert(offsetof(struct mbr_entry, type) == 4, "MBR type at 4");
_Static_assert(offsetof(struct mbr_entry, lba_first) == 8, "MBR LBA at 8");

#define MBR_ENTRIES_OFF 446
#define MBR_SIG_OFF 510

struct gpt_header {
	char signature[8]; /* "EFI PART" */
	uint32_t revision;
	uint32_t header_size;
	uint32_t header_crc32;
	uint32_t reserved;
	uint64_t my_lba;
	uint64_t alternate_lba;
	uint64_t first_usable_lba;
	uint64_t last_usable_lba;
	uint8_t disk_guid[16];
	uint64_t entries_lba;
	uint32_t entry_count;
	uint32_t entry_size;
	uint32_t entries_crc32;
} __attribute__((packed));

_Static_assert(sizeof(struct gpt_header) == 92, "GPT header is 92 bytes");
_Static_assert(offsetof(struct gpt_header, header_crc32) == 16, "hdr crc");
_Static_assert(offsetof(struct gpt_header, my_lba) == 24, "my_lba at 24");
_Static_assert(offsetof(struct gpt_header, entries_lba) == 72, "entries");
_Static_assert(offsetof(struct gpt_header, entries_crc32) == 88, "ent crc");

struct gpt_entry {
	uint8_t type_guid[16];
	uint8_t unique_guid[16];
	uint64_t first_lba;
	uint64_t last_lba;
	uint64_t attributes;
	uint16_t name[36]; /* UTF-16LE */
} __attribute__((packed));

_Static_assert(sizeof(struct gpt_entry) == 128, "GPT entry is 128 bytes");
_Static_assert(offsetof(struct gpt_entry, first_lba) == 32, "first_lba");
_Static_assert(offsetof(struct gpt_entry, name) == 56, "name at 56");

#define GPT_MAX_ENTRY_BYTES (1u << 20) /* far above the usual 16 KiB */

/* ---- Helpers ------------------------------------------------------------ */

static void say(void (*warn)(const char *), const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void say(void (*warn)(const char *), const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (!warn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	warn(msg);
}

/* Copies s into a file-name-safe slug: letters, digits, '.', '_', '-'. */
static void slug(char *out, size_t outsz, const char *s)
{
	size_t n = 0;

	for (; *s && n + 1 < outsz; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')
			out[n++] = (char)c;
		else if (c >= 0x80)
			out[n++] = (char)c; /* keep UTF-8 labels readable */
		else
			out[n++] = '_';
	}
	out[n] = '\0';
	if (n == 1 && out[0] == '.')
		out[0] = '_';
}

static void name_part(struct ptable_part *p)
{
	char lab[sizeof(p->label)];

	slug(lab, sizeof(lab), p->label);
	if (lab[0])
		snprintf(p->name, sizeof(p->name), "p%u-%s-%s", p->number,
			 p->type, lab);
	else
		snprintf(p->name, sizeof(p->name), "p%u-%s", p->number,
			 p->type);
}

const char *ptable_kind_name(enum ptable_kind k)
{
	switch (k) {
	case PTABLE_MBR: return "mbr";
	case PTABLE_GPT: return "gpt";
	case PTABLE_NONE: break;
	}
	return "none";
}

static bool mbr_is_extended(uint8_t t)
{
	return t == 0x05 || t == 0x0f || t == 0x85;
}

static const char *mbr_type_name(uint8_t t)
{
	switch (t) {
	case 0x01: return "fat12";
	case 0x04: case 0x06: return "fat16";
	case 0x0e: return "fat16-lba";
	case 0x0b: return "fat32";
	case 0x0c: return "fat32-lba";
	case 0x05: case 0x0f: case 0x85: return "extended";
	case 0x07: return "ntfs";
	case 0x27: return "windows-recovery";
	case 0x42: return "windows-dynamic";
	case 0x82: return "linux-swap";
	case 0x83: return "linux";
	case 0x8e: return "linux-lvm";
	case 0xa5: return "freebsd";
	case 0xa6: return "openbsd";
	case 0xa9: return "netbsd";
	case 0xee: return "gpt-protective";
	case 0xef: return "efi-system";
	case 0xfd: return "linux-raid";
	}
	return NULL;
}

static void mbr_type_str(uint8_t t, char *out, size_t outsz)
{
	const char *n = mbr_type_name(t);

	if (n)
		snprintf(out, outsz, "%s", n);
	else
		snprintf(out, outsz, "type-%02x", t);
}

static int add_part(struct ptable *pt, const struct ptable_part *p)
{
	if (pt->count >= PTABLE_MAX_PARTS)
		return -ENOSPC;
	pt->parts[pt->count++] = *p;
	return 0;
}

/* True when [lba, lba + n) sectors is a non-empty range inside the disk. */
static bool range_ok(uint64_t lba, uint64_t n, uint64_t disk_sectors)
{
	return n > 0 && lba < disk_sectors && n <= disk_sectors - lba;
}

/* ---- MBR ---------------------------------------------------------------- */

static bool looks_like_boot_sector(const uint8_t *s)
{
	return !memcmp(s + 3, "NTFS    ", 8) || !memcmp(s + 54, "FAT1", 4) ||
	       !memcmp(s + 82, "FAT32   ", 8) || !memcmp(s + 3, "EXFAT   ", 8);
}

/* Walks the EBR chain of the extended partition at [ext_lba, +ext_n). */
static int mbr_read_logicals(ptable_read_fn rd, void *opaque,
			     uint64_t ext_lba, uint64_t ext_n,
			     uint64_t disk_sectors, struct ptable *pt,
			     void (*warn)(const char *))
{
	uint64_t visited[PTABLE_MAX_LOGICAL];
	uint64_t ebr = ext_lba;
	unsigned nvisited = 0, number = 5;
	uint8_t s[PTABLE_SECTOR];

	for (;;) {
		struct mbr_entry e[2];
		struct ptable_part p;
		uint64_t first, n, next;
		unsigned i;
		int ret;

		for (i = 0; i < nvisited; i++) {
			if (visited[i] == ebr) {
				say(warn, "MBR: EBR chain loops back to sector %llu; "
				    "stopping", (unsigned long long)ebr);
				return 0;
			}
		}
		if (nvisited == PTABLE_MAX_LOGICAL) {
			say(warn, "MBR: more than %u logical partitions; "
			    "stopping", PTABLE_MAX_LOGICAL);
			return 0;
		}
		visited[nvisited++] = ebr;

		ret = rd(opaque, s, sizeof(s), ebr * PTABLE_SECTOR);
		if (ret < 0)
			return ret;
		if (s[MBR_SIG_OFF] != 0x55 || s[MBR_SIG_OFF + 1] != 0xaa) {
			say(warn, "MBR: EBR at sector %llu lacks the 55aa "
			    "signature; stopping", (unsigned long long)ebr);
			return 0;
		}
		memcpy(e, s + MBR_ENTRIES_OFF, sizeof(e));

		n = le32toh(e[0].sectors);
		first = ebr + le32toh(e[0].lba_first);
		if (e[0].type && n) {
			if (first >= ext_lba && range_ok(first, n, disk_sectors) &&
			    first + n <= ext_lba + ext_n) {
				memset(&p, 0, sizeof(p));
				p.number = number++;
				p.offset = first * PTABLE_SECTOR;
				p.size = n * PTABLE_SECTOR;
				p.mbr_type = e[0].type;
				p.logical = true;
				mbr_type_str(e[0].type, p.type, sizeof(p.type));
				name_part(&p);
				if (add_part(pt, &p) < 0)
					return 0;
			} else {
				say(warn, "MBR: logical partition in EBR at sector "
				    "%llu lies outside its extended partition; "
				    "skipped", (unsigned long long)ebr);
			}
		}

		if (!mbr_is_extended(e[1].type) || !le32toh(e[1].sectors))
			return 0;
		next = ext_lba + le32toh(e[1].lba_first);
		if (next <= ext_lba && le32toh(e[1].lba_first) == 0) {
			say(warn, "MBR: EBR link points at the extended "
			    "partition's start; stopping");
			return 0;
		}
		if (next < ext_lba || next >= ext_lba + ext_n ||
		    next >= disk_sectors) {
			say(warn, "MBR: EBR link to sector %llu leaves the "
			    "extended partition; stopping",
			    (unsigned long long)next);
			return 0;
		}
		ebr = next;
	}
}

static int mbr_read(ptable_read_fn rd, void *opaque, const uint8_t *s,
		    uint64_t disk_sectors, struct ptable *pt,
		    void (*warn)(const char *))
{
	struct mbr_entry e[4];
	bool any = false;
	unsigned i;
	int ret;

	memcpy(e, s + MBR_ENTRIES_OFF, sizeof(e));
	for (i = 0; i < 4; i++) {
		if (e[i].status != 0 && e[i].status != 0x80)
			return 0; /* boot code, not a table */
		if (e[i].type && le32toh(e[i].sectors))
			any = true;
	}
	if (!any)
		return 0;
	/* A FAT/NTFS volume's boot sector also ends in 55aa: if any entry is
	 * implausible, it is a filesystem, not a partition table. */
	for (i = 0; i < 4; i++) {
		uint64_t lba = le32toh(e[i].lba_first), n = le32toh(e[i].sectors);

		if (e[i].type && n && (lba == 0 || lba >= disk_sectors) &&
		    looks_like_boot_sector(s))
			return 0;
	}

	pt->kind = PTABLE_MBR;
	for (i = 0; i < 4; i++) {
		uint64_t lba = le32toh(e[i].lba_first), n = le32toh(e[i].sectors);
		struct ptable_part p;

		if (!e[i].type || !n)
			continue;
		if (!range_ok(lba, n, disk_sectors) || lba == 0) {
			say(warn, "MBR: partition %u (sectors %llu+%llu) lies "
			    "outside the disk; skipped", i + 1,
			    (unsigned long long)lba, (unsigned long long)n);
			continue;
		}
		memset(&p, 0, sizeof(p));
		p.number = i + 1;
		p.offset = lba * PTABLE_SECTOR;
		p.size = n * PTABLE_SECTOR;
		p.mbr_type = e[i].type;
		p.extended = mbr_is_extended(e[i].type);
		mbr_type_str(e[i].type, p.type, sizeof(p.type));
		name_part(&p);
		ret = add_part(pt, &p);
		if (ret < 0)
			return 0;
	}
	for (i = 0; i < 4; i++) {
		uint64_t lba = le32toh(e[i].lba_first), n = le32toh(e[i].sectors);

		if (!mbr_is_extended(e[i].type) || !range_ok(lba, n, disk_sectors)
		    || lba == 0)
			continue;
		ret = mbr_read_logicals(rd, opaque, lba, n, disk_sectors, pt,
					warn);
		if (ret < 0)
			return ret;
		break; /* one extended partition per MBR */
	}
	return 0;
}

/* ---- GPT ---------------------------------------------------------------- */

struct gpt_type {
	const char *guid; /* canonical text form */
	const char *name;
};

static const struct gpt_type gpt_types[] = {
	{ "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "efi-system" },
	{ "21686148-6449-6E6F-744E-656564454649", "bios-boot" },
	{ "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "linux" },
	{ "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "linux-root-x86-64" },
	{ "933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "linux-home" },
	{ "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "linux-swap" },
	{ "E6D6D379-F507-44C2-A23C-238F2A3DF928", "linux-lvm" },
	{ "A19D880F-05FC-4D3B-A006-743F0F84911E", "linux-raid" },
	{ "BC13C2FF-59E6-4262-A352-B275FD6F7172", "linux-boot" },
	{ "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "basic-data" },
	{ "E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "ms-reserved" },
	{ "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "windows-recovery" },
	{ "516E7CB4-6ECF-11D6-8FF8-00022D09712B", "freebsd" },
	{ "48465300-0000-11AA-AA11-00306543ECAC", "apple-hfs" },
	{ "7C3457EF-0000-11AA-AA11-00306543ECAC", "apple-apfs" },
};

/* GUIDs are stored with their first three fields little-endian. */
static void guid_str(const uint8_t *g, char out[37])
{
	snprintf(out, 37,
		 "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-"
		 "%02X%02X%02X%02X%02X%02X",
		 g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9],
		 g[10], g[11], g[12], g[13], g[14], g[15]);
}

static void gpt_type_str(const uint8_t *g, char *out, size_t outsz)
{
	char s[37];
	size_t i;

	guid_str(g, s);
	for (i = 0; i < sizeof(gpt_types) / sizeof(gpt_types[0]); i++) {
		if (!strcmp(s, gpt_types[i].guid)) {
			snprintf(out, outsz, "%s", gpt_types[i].name);
			return;
		}
	}
	snprintf(out, outsz, "type-%.8s", s);
}

/* UTF-16LE (up to 36 units, NUL-terminated or not) to UTF-8. */
static void utf16_to_utf8(const uint16_t *in, size_t n, char *out,
			  size_t outsz)
{
	size_t o = 0, i;

	for (i = 0; i < n; i++) {
		uint32_t c = le16toh(in[i]);

		if (c == 0)
			break;
		if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
			uint32_t lo = le16toh(in[i + 1]);

			if (lo >= 0xdc00 && lo <= 0xdfff) {
				c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
				i++;
			} else {
				c = '?';
			}
		} else if (c >= 0xd800 && c <= 0xdfff) {
			c = '?';
		}
		if (c < 0x80) {
			if (o + 1 >= outsz)
				break;
			out[o++] = (char)c;
		} else if (c < 0x800) {
			if (o + 2 >= outsz)
				break;
			out[o++] = (char)(0xc0 | (c >> 6));
			out[o++] = (char)(0x80 | (c & 0x3f));
		} else if (c < 0x10000) {
			if (o + 3 >= outsz)
				break;
			out[o++] = (char)(0xe0 | (c >> 12));
			out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
			out[o++] = (char)(0x80 | (c & 0x3f));
		} else {
			if (o + 4 >= outsz)
				break;
			out[o++] = (char)(0xf0 | (c >> 18));
			out[o++] = (char)(0x80 | ((c >> 12) & 0x3f));
			out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
			out[o++] = (char)(0x80 | (c & 0x3f));
		}
	}
	out[o] = '\0';
}

/*
 * Reads and checks the GPT header at lba: signature, size, CRC, my_lba, and
 * the CRC of its entry array, which is returned in *entries (malloc'd).
 */
static int gpt_load(ptable_read_fn rd, void *opaque, uint64_t lba,
		    uint64_t disk_sectors, struct gpt_header *h,
		    uint8_t **entries, void (*warn)(const char *))
{
	uint8_t s[PTABLE_SECTOR];
	uint32_t hsize, crc, count, esize;
	uint64_t bytes, elba;
	uint8_t *buf;
	int ret;

	*entries = NULL;
	ret = rd(opaque, s, sizeof(s), lba * PTABLE_SECTOR);
	if (ret < 0)
		return ret;
	memcpy(h, s, sizeof(*h));
	if (memcmp(h->signature, "EFI PART", 8))
		return 1;
	hsize = le32toh(h->header_size);
	if (hsize < sizeof(*h) || hsize > PTABLE_SECTOR) {
		say(warn, "GPT header at LBA %llu: header size %u out of range",
		    (unsigned long long)lba, hsize);
		return 1;
	}
	memset(s + offsetof(struct gpt_header, header_crc32), 0, 4);
	crc = (uint32_t)crc32(0, s, hsize);
	if (crc != le32toh(h->header_crc32)) {
		say(warn, "GPT header at LBA %llu: CRC %08x, expected %08x",
		    (unsigned long long)lba, crc, le32toh(h->header_crc32));
		return 1;
	}
	if (le64toh(h->my_lba) != lba) {
		say(warn, "GPT header at LBA %llu says it is at LBA %llu",
		    (unsigned long long)lba,
		    (unsigned long long)le64toh(h->my_lba));
		return 1;
	}
	count = le32toh(h->entry_count);
	esize = le32toh(h->entry_size);
	elba = le64toh(h->entries_lba);
	bytes = (uint64_t)count * esize;
	if (esize < sizeof(struct gpt_entry) || esize % 8 || count == 0 ||
	    bytes > GPT_MAX_ENTRY_BYTES) {
		say(warn, "GPT header at LBA %llu: %u entries of %u bytes is "
		    "not a plausible entry array", (unsigned long long)lba,
		    count, esize);
		return 1;
	}
	if (!range_ok(elba, (bytes + PTABLE_SECTOR - 1) / PTABLE_SECTOR,
		      disk_sectors)) {
		say(warn, "GPT header at LBA %llu: entry array at LBA %llu "
		    "lies outside the disk", (unsigned long long)lba,
		    (unsigned long long)elba);
		return 1;
	}
	buf = malloc(bytes);
	if (!buf)
		return -ENOMEM;
	ret = rd(opaque, buf, bytes, elba * PTABLE_SECTOR);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	crc = (uint32_t)crc32(0, buf, (uInt)bytes);
	if (crc != le32toh(h->entries_crc32)) {
		say(warn, "GPT entry array at LBA %llu: CRC %08x, expected "
		    "%08x", (unsigned long long)elba, crc,
		    le32toh(h->entries_crc32));
		free(buf);
		return 1;
	}
	*entries = buf;
	return 0;
}

static int gpt_read(ptable_read_fn rd, void *opaque, uint64_t disk_sectors,
		    struct ptable *pt, void (*warn)(const char *))
{
	static const uint8_t zero_guid[16];
	struct gpt_header h;
	uint8_t *ent = NULL;
	uint32_t i, count, esize;
	int ret;

	ret = gpt_load(rd, opaque, 1, disk_sectors, &h, &ent, warn);
	if (ret < 0)
		return ret;
	if (ret > 0) {
		struct gpt_header primary = h;
		uint64_t alt = disk_sectors - 1;
		bool had_sig = !memcmp(primary.signature, "EFI PART", 8);

		ret = gpt_load(rd, opaque, alt, disk_sectors, &h, &ent, warn);
		if (ret < 0)
			return ret;
		if (ret > 0) {
			if (had_sig)
				say(warn, "GPT: neither the primary nor the "
				    "backup header is valid");
			return 1;
		}
		say(warn, "GPT: primary header is damaged; using the backup");
		pt->gpt_used_backup = true;
	}

	pt->kind = PTABLE_GPT;
	count = le32toh(h.entry_count);
	esize = le32toh(h.entry_size);
	for (i = 0; i < count; i++) {
		struct gpt_entry e;
		struct ptable_part p;
		uint16_t name16[36];
		uint64_t first, last;

		memcpy(&e, ent + (size_t)i * esize, sizeof(e));
		if (!memcmp(e.type_guid, zero_guid, 16))
			continue;
		first = le64toh(e.first_lba);
		last = le64toh(e.last_lba);
		if (last < first || !range_ok(first, last - first + 1,
					      disk_sectors) || first < 2) {
			say(warn, "GPT entry %u (LBA %llu-%llu) lies outside "
			    "the disk; skipped", i + 1,
			    (unsigned long long)first,
			    (unsigned long long)last);
			continue;
		}
		memset(&p, 0, sizeof(p));
		p.number = i + 1;
		p.offset = first * PTABLE_SECTOR;
		p.size = (last - first + 1) * PTABLE_SECTOR;
		gpt_type_str(e.type_guid, p.type, sizeof(p.type));
		memcpy(name16, e.name, sizeof(name16));
		utf16_to_utf8(name16, 36, p.label, sizeof(p.label));
		name_part(&p);
		if (add_part(pt, &p) < 0)
			break;
	}
	free(ent);
	return 0;
}

int ptable_read(ptable_read_fn rd, void *opaque, uint64_t disk_size,
		struct ptable *pt, void (*warn)(const char *))
{
	uint64_t disk_sectors = disk_size / PTABLE_SECTOR;
	uint8_t s[PTABLE_SECTOR];
	bool protective = false;
	unsigned i;
	int ret;

	memset(pt, 0, sizeof(*pt));
	if (disk_sectors < 2)
		return 0;
	ret = rd(opaque, s, sizeof(s), 0);
	if (ret < 0)
		return ret;
	if (s[MBR_SIG_OFF] == 0x55 && s[MBR_SIG_OFF + 1] == 0xaa) {
		for (i = 0; i < 4; i++)
			if (s[MBR_ENTRIES_OFF + 16 * i + 4] == 0xee)
				protective = true;
	}
	/* GPT first: a protective MBR, or a GPT header without one. */
	if (disk_sectors >= 3) {
		ret = gpt_read(rd, opaque, disk_sectors, pt, warn);
		if (ret <= 0)
			return ret;
		memset(pt, 0, sizeof(*pt));
	}
	if (protective)
		return 0; /* a GPT disk whose GPT is unreadable: no guessing */
	if (s[MBR_SIG_OFF] != 0x55 || s[MBR_SIG_OFF + 1] != 0xaa)
		return 0;
	return mbr_read(rd, opaque, s, disk_sectors, pt, warn);
}
