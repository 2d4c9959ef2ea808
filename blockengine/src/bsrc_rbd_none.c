/* SPDX-License-Identifier: Apache-2.0 */
/* bsrc_rbd_none.c - rbd: names in a build without librbd (meson -Drbd=
 * disabled, or librbd-dev missing): a clear error instead of "no such
 * file". */
#include <errno.h>

#include "create.h"
#include "internal.h"

int bsrc_open_rbd(const char *path, bool writable, struct bsrc **out)
{
	(void)writable;
	(void)out;
	return bdev_err(-ENOTSUP, "%s: this build of ovk has no Ceph RBD "
			"support (build with librbd-dev installed)", path);
}

int rbd_writer_new(const char *path, uint64_t size, struct bdev_writer **out)
{
	(void)size;
	(void)out;
	return bsrc_open_rbd(path, true, NULL);
}
