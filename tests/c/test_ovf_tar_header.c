/* SPDX-License-Identifier: Apache-2.0 */
/* test_ovf_tar_header.c - the tar headers libovf writes: ovf_tar_header
 * adds a pax record for a size over 11 octal digits, ovf_tar_header_fixed
 * keeps one block (GNU base-256 size) so its length never depends on the
 * size; both parse back with the package's own tar reader's rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ovf.h"

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n",        \
				__FILE__, __LINE__, #c);                    \
			exit(1);                                            \
		}                                                           \
	} while (0)

/* The size a ustar block's size field holds (octal or base-256). */
static unsigned long long size_field(const unsigned char *blk)
{
	unsigned long long v = 0;

	if (blk[124] & 0x80) {
		for (int i = 1; i < 12; i++)
			v = v << 8 | blk[124 + i];
		return v;
	}
	return strtoull((const char *)blk + 124, NULL, 8);
}

static unsigned checksum_ok(const unsigned char *blk)
{
	unsigned sum = 0;

	for (int i = 0; i < 512; i++)
		sum += (i >= 148 && i < 156) ? ' ' : blk[i];
	return sum == strtoul((const char *)blk + 148, NULL, 8);
}

int main(void)
{
	static unsigned char h[OVF_TAR_HEADER_MAX];
	const unsigned long long big = (9ull << 30) + 512, small = 077777777777ull;
	char longname[160];
	ssize_t n;

	/* fits in octal: one block either way */
	CHECK(ovf_tar_header(h, sizeof(h), "d.vmdk", small, 0) == 512);
	CHECK(size_field(h) == small && checksum_ok(h));
	CHECK(ovf_tar_header_fixed(h, sizeof(h), "d.vmdk", small, 0) == 512);
	CHECK(size_field(h) == small && checksum_ok(h));

	/* over 8 GiB: pax record + block, or one block with base-256 */
	n = ovf_tar_header(h, sizeof(h), "d.vmdk", big, 0);
	CHECK(n == 1536 && h[156] == 'x');
	CHECK(memmem(h + 512, 512, " size=9663676928\n", 17));
	CHECK(size_field(h + 1024) == big && checksum_ok(h + 1024));
	n = ovf_tar_header_fixed(h, sizeof(h), "d.vmdk", big, 0);
	CHECK(n == 512 && h[156] == '0');
	CHECK(size_field(h) == big && checksum_ok(h));
	CHECK(!memcmp(h + 257, "ustar", 6));

	/* a long name: the pax header carries the path only, so the fixed
	   header's length is the same for every size */
	memset(longname, 'n', 150);
	strcpy(longname + 150, ".vmdk");
	n = ovf_tar_header_fixed(h, sizeof(h), longname, 0, 0);
	CHECK(n == 1536);
	CHECK(ovf_tar_header_fixed(h, sizeof(h), longname, big, 0) == n);
	CHECK(!memmem(h + 512, 512, "size=", 5));
	CHECK(size_field(h + 1024) == big);
	printf("ok\n");
	return 0;
}
