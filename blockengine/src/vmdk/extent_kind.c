/* SPDX-License-Identifier: Apache-2.0 */
/*
 * extent_kind.c - the list of sparse extent kinds, and the one place that
 * tells them apart by magic (image probe and open, extent open, check).
 * Adding a kind: its file defines a struct vmdk_extent_ops, and one line
 * here lists it.
 */
#include <errno.h>

#include "vmdk.h"

static const struct vmdk_extent_ops *const kinds[] = {
	&vmdk_hosted_ops,
	&vmdk_cowd_ops,
	&vmdk_sesparse_ops,
};

/* The kind whose magic head starts with, or NULL; see vmdk.h. */
const struct vmdk_extent_ops *vmdk_extent_ops_probe(const uint8_t *head,
						    size_t len)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i]->probe(head, len))
			return kinds[i];
	return NULL;
}

/* Open e->src by the kind its magic names; see vmdk.h. */
int vmdk_extent_open_sparse(struct vmdk_extent *e, const char *name)
{
	uint8_t magic[8] = { 0 };
	size_t n = e->src->length < 8 ? (size_t)e->src->length : 8;
	const struct vmdk_extent_ops *ops;
	int ret;

	if (n) {
		ret = bsrc_read_full(e->src, magic, n, 0);
		if (ret < 0)
			return ret;
	}
	ops = vmdk_extent_ops_probe(magic, n);
	if (ops)
		return ops->open(e, name);
	return bdev_err(-EINVAL, "%s: magic at offset 0 is %02x %02x %02x %02x, expected "
			"\"KDMV\", \"COWD\" or a seSparse header for a %s extent", name,
			magic[0], magic[1], magic[2], magic[3], vmdk_ext_type_name(e->type));
}
