/* format_vmdk.c - the VMDK format driver (being written; see issue 2). */
#include <errno.h>
#include "internal.h"

static int vmdk_probe(const uint8_t *head, size_t len)
{
	return 0;
}

static int vmdk_open(struct bdev *b, struct bsrc *src, const char *path)
{
	bsrc_close(src);
	return bdev_err(-ENOTSUP, "%s: VMDK driver not built yet", path ? path : "image");
}

const struct bdev_format bdev_format_vmdk = {
	.name = "vmdk",
	.probe = vmdk_probe,
	.open = vmdk_open,
};
