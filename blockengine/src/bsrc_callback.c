/* SPDX-License-Identifier: Apache-2.0 */
/* bsrc_callback.c - a read-only byte source whose bytes come from the
 * caller's read callback (a gzip'd or chunked file inside an OVF package),
 * and bdev_open_callbacks, which opens an image over one. The source has no
 * fd, so the core reads it through the ops, synchronously, in the thread
 * that needs the bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct bsrc_cb {
	struct bdev_byte_source ops;
	void *opaque;
};

/* Reads what exists of [off, off + len) through the caller's pread,
   looping over short reads until the end of the source. */
static ssize_t bsrc_cb_pread(struct bsrc *s, void *buf, size_t len,
			     uint64_t off)
{
	struct bsrc_cb *c = s->priv;
	size_t done = 0;

	if (off >= s->length)
		return 0;
	if (len > s->length - off)
		len = (size_t)(s->length - off);
	while (done < len) {
		ssize_t n = c->ops.pread(c->opaque, (char *)buf + done,
					 len - done, off + done);

		if (n < 0)
			return bdev_err(n < -4095 ? -EIO : (int)n,
					"%s: read of %zu bytes at offset %llu failed: %s",
					s->name, len - done,
					(unsigned long long)(off + done),
					strerror(n < -4095 ? EIO : (int)-n));
		if (n == 0)
			break; /* the caller's source is shorter than it said */
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Gives the caller's opaque back through its close, frees the source. */
static void bsrc_cb_close(struct bsrc *s)
{
	struct bsrc_cb *c = s->priv;

	if (c->ops.close)
		c->ops.close(c->opaque);
	free(c);
	free(s->name);
	free(s);
}

static const struct bsrc_ops bsrc_cb_ops = {
	.kind = "callback",
	.pread = bsrc_cb_pread,
	.close = bsrc_cb_close,
};

/* Opens an image over the caller's read callback; read-only. */
int bdev_open_callbacks(const struct bdev_byte_source *ops, void *opaque,
			uint64_t length, const char *name,
			const struct bdev_open_opts *opts, struct bdev **out)
{
	struct bsrc_cb *c;
	struct bsrc *s;
	int ret;

	bdev_err_clear();
	if (!name)
		name = "callbacks";
	if (!out || !ops || !ops->pread) {
		ret = bdev_err(-EINVAL, "%s: no %s", name,
			       !out ? "result pointer" : "pread callback");
		goto err_give_back;
	}
	if (opts && (opts->flags & BDEV_O_RDWR)) {
		ret = bdev_err(-EROFS, "%s: an image read through callbacks "
			       "can only be opened read-only", name);
		goto err_give_back;
	}
	s = calloc(1, sizeof(*s));
	c = calloc(1, sizeof(*c));
	if (!s || !c || !(s->name = strdup(name))) {
		free(s);
		free(c);
		ret = bdev_err(-ENOMEM, "%s: out of memory", name);
		goto err_give_back;
	}
	c->ops = *ops;
	c->opaque = opaque;
	s->ops = &bsrc_cb_ops;
	s->priv = c;
	s->length = length;
	s->fd = -1;
	/* from here the source (and the caller's close) belongs to the layer,
	   also when opening fails */
	return bdev_open_layer(NULL, s, opts, out);

err_give_back:
	if (ops && ops->close)
		ops->close(opaque);
	return ret;
}
