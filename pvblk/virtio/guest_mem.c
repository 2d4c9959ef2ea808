/* SPDX-License-Identifier: Apache-2.0 */
/* guest_mem.c - guest-physical addresses to host pointers, every range
   checked against the region table before it is used. */
#include <errno.h>

#include "virtio_blk.h"

/* The region holding gpa, or NULL. */
static const struct vblk_mem_region *find_region(const struct vblk_mem *m,
						 uint64_t gpa)
{
	for (unsigned i = 0; i < m->nregions && i < VBLK_MAX_REGIONS; i++) {
		const struct vblk_mem_region *r = &m->regions[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return r;
	}
	return NULL;
}

void *vblk_mem_ptr(const struct vblk_mem *m, uint64_t gpa, uint64_t len)
{
	const struct vblk_mem_region *r;

	if (gpa + len < gpa)
		return NULL;
	if (len == 0) {
		/* an empty range still has to name guest memory */
		r = find_region(m, gpa);
		return r ? r->hva + (gpa - r->gpa) : NULL;
	}
	r = find_region(m, gpa);
	if (!r || len > r->size - (gpa - r->gpa))
		return NULL;
	return r->hva + (gpa - r->gpa);
}

int vblk_mem_iov(const struct vblk_mem *m, uint64_t gpa, uint64_t len,
		 struct iovec *iov, unsigned *n, unsigned max)
{
	if (gpa + len < gpa)
		return -EFAULT;
	while (len) {
		const struct vblk_mem_region *r = find_region(m, gpa);
		uint64_t off, chunk;

		if (!r)
			return -EFAULT;
		if (*n >= max)
			return -E2BIG;
		off = gpa - r->gpa;
		chunk = r->size - off;
		if (chunk > len)
			chunk = len;
		iov[*n].iov_base = r->hva + off;
		iov[*n].iov_len = chunk;
		(*n)++;
		gpa += chunk;
		len -= chunk;
	}
	return 0;
}
