/* SPDX-License-Identifier: Apache-2.0 */
/*
 * meta.c - the meta contexts a client may select for NBD_CMD_BLOCK_STATUS:
 * a small table of fixed contexts, then one qemu:dirty-bitmap:NAME per
 * checkpoint of the engine's change tracking, so that pull-backup clients
 * read changed blocks with no ovk code on their side.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd_i.h"

/* The chain-wide status of the first run, from the engine in one call
   under its top lock, so a live snapshot cannot split the answer. */
static int chain_status(struct bdev *b, uint64_t off, uint64_t len,
			uint64_t *pnum, unsigned *depth)
{
	int st = bdev_block_status_depth(b, off, len, pnum, depth);

	if (st >= 0 && (*pnum == 0 || *pnum > len))
		return -EIO;
	return st;
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

#define DIRTY_BITMAP "qemu:dirty-bitmap:"

unsigned nbd_meta_total(struct bdev *b)
{
	const char *name;
	unsigned n = nbd_meta_count;

	while (b && n < NBD_META_MAX &&
	       bdev_checkpoint_get(b, n - nbd_meta_count, &name) == 0)
		n++;
	return n;
}

int nbd_meta_name(struct bdev *b, unsigned i, char *buf, size_t len)
{
	const char *name;

	if (i < nbd_meta_count) {
		snprintf(buf, len, "%s", nbd_meta_contexts[i].name);
		return 0;
	}
	if (!b || i >= NBD_META_MAX ||
	    bdev_checkpoint_get(b, i - nbd_meta_count, &name) < 0)
		return -ENOENT;
	snprintf(buf, len, DIRTY_BITMAP "%s", name);
	return 0;
}

void nbd_meta_clear(struct nbd_conn *c)
{
	for (unsigned i = 0; i < NBD_META_MAX; i++) {
		free(c->meta_bitmap[i]);
		c->meta_bitmap[i] = NULL;
	}
	c->meta_selected = 0;
}

int nbd_meta_select(struct nbd_conn *c, struct bdev *b, uint32_t mask)
{
	char name[256];

	nbd_meta_clear(c);
	for (unsigned i = nbd_meta_count; i < NBD_META_MAX; i++) {
		if (!(mask & (1u << i)))
			continue;
		if (nbd_meta_name(b, i, name, sizeof(name)) < 0) {
			mask &= ~(1u << i); /* deleted meanwhile */
			continue;
		}
		c->meta_bitmap[i] = strdup(name + strlen(DIRTY_BITMAP));
		if (!c->meta_bitmap[i]) {
			nbd_meta_clear(c);
			return -ENOMEM;
		}
	}
	c->meta_selected = mask;
	return 0;
}

int nbd_meta_extent(struct nbd_conn *c, struct bdev *b, unsigned i,
		    uint64_t off, uint64_t len, uint64_t *pnum,
		    uint32_t *flags)
{
	int ret;

	if (i < nbd_meta_count)
		return nbd_meta_contexts[i].extent(b, off, len, pnum, flags);
	if (i >= NBD_META_MAX || !c->meta_bitmap[i])
		return -EINVAL;
	/* changed since the checkpoint: dirty, as QEMU's bitmaps say it */
	ret = bdev_changed_status(b, c->meta_bitmap[i], off, len, pnum);
	if (ret < 0)
		return ret;
	if (*pnum == 0 || *pnum > len)
		return -EIO;
	*flags = ret ? NBD_STATE_DIRTY : 0;
	return 0;
}
