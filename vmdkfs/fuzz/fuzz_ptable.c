/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_ptable.c - libFuzzer harness for the MBR/GPT parser: the input is
 * the disk (reads past its end fail), its size the input's size rounded up
 * to a sector, so headers, EBR chains and entry arrays all come from it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ptable.h"

struct disk {
	const uint8_t *data;
	size_t len;
};

static int disk_read(void *opaque, void *buf, size_t len, uint64_t off)
{
	const struct disk *d = opaque;

	if (off > d->len || len > d->len - off) {
		/* Beyond the input reads as zeros, like an unwritten disk. */
		memset(buf, 0, len);
		if (off < d->len)
			memcpy(buf, d->data + off, d->len - off);
		return 0;
	}
	memcpy(buf, d->data + off, len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ptable pt;
	struct disk d = { data, size };
	uint64_t disk_size;
	unsigned i;

	/* The first 8 bytes pick the disk size (so GPT backup headers at the
	 * last LBA are reachable); the rest is the disk. */
	if (size < 8)
		return 0;
	memcpy(&disk_size, data, 8);
	disk_size %= (UINT64_C(1) << 40);
	d.data = data + 8;
	d.len = size - 8;
	if (ptable_read(disk_read, &d, disk_size, &pt, NULL) == 0) {
		for (i = 0; i < pt.count; i++) {
			const struct ptable_part *p = &pt.parts[i];

			if (p->offset + p->size > disk_size || !p->size ||
			    !memchr(p->name, 0, sizeof(p->name)))
				__builtin_trap();
		}
	}
	return 0;
}
