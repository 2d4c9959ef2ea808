/* SPDX-License-Identifier: Apache-2.0 */
/*
 * meta.c - the meta contexts a client may select for NBD_CMD_BLOCK_STATUS:
 * a small table, one entry per context, so that another one (such as
 * qemu:dirty-bitmap:NAME from the engine's change tracking) is one more
 * line. Both contexts here walk the delta chain layer by layer.
 */
#include <errno.h>

#include "nbd_i.h"

/*
 * How the first run of [off, off + len) is stored along the chain: the
 * enum bdev_status of the topmost layer that holds it (UNALLOCATED when no
 * layer does), that layer's depth in *depth (1 = top, 0 = none) and the
 * run's length in *pnum.
 */
static int chain_status(struct bdev *b, uint64_t off, uint64_t len,
			uint64_t *pnum, unsigned *depth)
{
	unsigned d = 1;

	for (; b; b = bdev_backing(b), d++) {
		uint64_t n = 0;
		int st = bdev_block_status(b, off, len, &n);

		if (st < 0)
			return st;
		if (n == 0 || n > len)
			return -EIO;
		len = n; /* a run may not outlast any layer's run */
		if (st != BDEV_STATUS_UNALLOCATED) {
			*pnum = len;
			*depth = d;
			return st;
		}
	}
	*pnum = len;
	*depth = 0;
	return BDEV_STATUS_UNALLOCATED;
}

/* base:allocation: HOLE where no layer stores the bytes (or a zeroed
   grain stands for them), ZERO where they read as zeros. */
static int base_allocation(struct bdev *b, uint64_t off, uint64_t len,
			   uint64_t *pnum, uint32_t *flags)
{
	unsigned depth;
	int st = chain_status(b, off, len, pnum, &depth);

	if (st < 0)
		return st;
	*flags = st == BDEV_STATUS_DATA ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO;
	return 0;
}

/* qemu:allocation-depth: 0 where no layer holds the bytes, else the
   depth of the layer that does (1 = the top). */
static int allocation_depth(struct bdev *b, uint64_t off, uint64_t len,
			    uint64_t *pnum, uint32_t *flags)
{
	unsigned depth;
	int st = chain_status(b, off, len, pnum, &depth);

	if (st < 0)
		return st;
	*flags = depth;
	return 0;
}

const struct nbd_meta_context nbd_meta_contexts[] = {
	{ "base:allocation", base_allocation },
	{ "qemu:allocation-depth", allocation_depth },
};
const unsigned nbd_meta_count =
	sizeof(nbd_meta_contexts) / sizeof(nbd_meta_contexts[0]);

_Static_assert(sizeof(nbd_meta_contexts) / sizeof(nbd_meta_contexts[0]) <=
		       NBD_META_MAX,
	       "meta contexts fit the selection mask");
