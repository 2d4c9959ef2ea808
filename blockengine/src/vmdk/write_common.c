/* SPDX-License-Identifier: Apache-2.0 */
/*
 * write_common.c - pieces every VMDK write path uses (write_sparse.c for
 * hosted sparse and COWD, write_stream.c for streamOptimized), and the one
 * extent lookup the read and write paths share: neither write file
 * imports from the other.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "vmdk.h"

/* The extent that holds virtual byte off. */
struct vmdk_extent *vmdk_find_extent(struct vmdk_image *img, uint64_t off)
{
	unsigned lo = 0, hi = img->n_extents;

	while (hi - lo > 1) {
		unsigned mid = lo + (hi - lo) / 2;
		if (img->extents[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	if (off < img->extents[lo].start ||
	    off - img->extents[lo].start >= img->extents[lo].size)
		return NULL;
	return &img->extents[lo];
}

/* Copies the first len bytes of iov into dst. */
void vmdk_iov_copy_out(uint8_t *dst, const struct iovec *iov, int iovcnt,
			 uint64_t len)
{
	for (int i = 0; i < iovcnt && len; i++) {
		size_t n = iov[i].iov_len < len ? iov[i].iov_len : (size_t)len;
		memcpy(dst, iov[i].iov_base, n);
		dst += n;
		len -= n;
	}
}

/* Fills buf (one grain at virtual offset vstart) with what the layers
   below this one hold there. */
int vmdk_fill_from_backing(struct bdev *b, uint64_t vstart, uint8_t *buf,
			     uint64_t gb)
{
	struct bdev *p = b->backing;
	uint64_t n = 0;

	if (p && vstart < p->info.size)
		n = p->info.size - vstart < gb ? p->info.size - vstart : gb;
	if (n) {
		int ret = bdev_pread(p, buf, (size_t)n, vstart);
		if (ret < 0) {
			char why[256];
			snprintf(why, sizeof(why), "%s", bdev_errmsg());
			return bdev_err(ret, "%s: cannot read the parent's bytes "
					"around a new grain at offset %" PRIu64 ": %s",
					b->filename, vstart, why);
		}
	}
	memset(buf + n, 0, gb - n);
	return 0;
}
