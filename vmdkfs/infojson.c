/* SPDX-License-Identifier: Apache-2.0 */
/*
 * infojson.c - info.json: the document `vmdk info --output=json` prints,
 * rendered in-process by the same code (blockengine/info/info_json.c).
 */
#include "vmdkfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "info_json.h"

int vmdkfs_info_json(struct vmdkfs *fs, char **out, size_t *len)
{
	struct alloc_sum sum;
	struct bdev_info in;
	FILE *f;
	int ret;

	ret = bdev_get_info(fs->bdev, &in);
	if (ret < 0)
		return ret;
	ret = info_alloc_sum(fs->bdev, in.size, &sum);
	if (ret < 0)
		return ret;
	f = open_memstream(out, len);
	if (!f)
		return -ENOMEM;
	info_print_json(f, fs->bdev, &in, &sum);
	if (fclose(f) != 0) {
		free(*out);
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}
