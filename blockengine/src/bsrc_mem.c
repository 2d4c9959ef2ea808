/* SPDX-License-Identifier: Apache-2.0 */
/* bsrc_mem.c - a read-only byte source over caller-owned memory. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Copies what exists of [off, off + len) of the buffer. */
static ssize_t bsrc_mem_pread(struct bsrc *s, void *buf, size_t len,
			      uint64_t off)
{
	if (off >= s->length)
		return 0;
	if (len > s->length - off)
		len = (size_t)(s->length - off);
	memcpy(buf, (const uint8_t *)s->priv + off, len);
	return (ssize_t)len;
}

/* Frees the source, not the memory it views. */
static void bsrc_mem_close(struct bsrc *s)
{
	free(s->name);
	free(s);
}

static const struct bsrc_ops bsrc_mem_ops = {
	.kind = "mem",
	.pread = bsrc_mem_pread,
	.close = bsrc_mem_close,
};

/* Wraps buf (not copied; must outlive the source) as a read-only source. */
int bsrc_open_mem(const void *buf, size_t len, const char *name,
		  struct bsrc **out)
{
	struct bsrc *s = calloc(1, sizeof(*s));

	if (!s)
		return bdev_err(-ENOMEM, "%s: out of memory", name);
	s->name = strdup(name ? name : "memory");
	if (!s->name) {
		free(s);
		return bdev_err(-ENOMEM, "%s: out of memory", name);
	}
	s->ops = &bsrc_mem_ops;
	s->priv = (void *)buf;
	s->length = len;
	s->fd = -1;
	*out = s;
	return 0;
}
