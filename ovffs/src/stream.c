/* SPDX-License-Identifier: Apache-2.0 */
/* stream.c - random-access byte sources: a region of a file, a slice of
 * another stream, and several streams end to end (chunked files). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ovf_i.h"

/* Allocates a stream with one reference. */
static struct ovf_stream *stream_new(const struct ovf_stream_ops *ops,
				     const char *name)
{
	struct ovf_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->name = strdup(name ? name : "stream");
	if (!s->name) {
		free(s);
		return NULL;
	}
	s->ops = ops;
	s->refs = 1;
	s->fd = -1;
	return s;
}

/* Takes one more reference to s. */
struct ovf_stream *ovf_stream_ref(struct ovf_stream *s)
{
	__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

/* Drops a reference; the last one frees the stream. */
void ovf_stream_close(struct ovf_stream *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	if (s->ops->close)
		s->ops->close(s);
	if (s->fd >= 0)
		close(s->fd);
	free(s->name);
	free(s);
}

/* Reads up to len bytes at off; short only at the end of the stream. */
ssize_t ovf_stream_pread(struct ovf_stream *s, void *buf, size_t len,
			 uint64_t off)
{
	if (len > (size_t)1 << 30)
		len = (size_t)1 << 30;
	return s->ops->pread(s, buf, len, off);
}

/* The stream's length (may decode gzip data once to learn it). */
int ovf_stream_size(struct ovf_stream *s, uint64_t *size)
{
	if (!s->size_known) {
		int r = s->ops->size ? s->ops->size(s, &s->size) : -ENOTSUP;

		if (r < 0)
			return r;
		s->size_known = true;
	}
	*size = s->size;
	return 0;
}

/* The fd and base of a plain stream, for bdev_open_region. */
int ovf_stream_region(const struct ovf_stream *s, int *fd, uint64_t *base)
{
	if (s->fd < 0)
		return -ENOTSUP;
	*fd = s->fd;
	*base = s->base;
	return 0;
}

/* Exactly len bytes at off, or -EIO naming the stream and offset. */
int ovf_stream_read_full(struct ovf_stream *s, void *buf, size_t len,
			 uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = ovf_stream_pread(s, (char *)buf + done, len - done,
					     off + done);

		if (r < 0)
			return (int)r;
		if (r == 0)
			return ovf_err(-EIO, "%s: truncated: wanted %zu bytes at offset %llu, the data ends at %llu",
				       s->name, len,
				       (unsigned long long)off,
				       (unsigned long long)(off + done));
		done += (size_t)r;
	}
	return 0;
}

/* Loads at most max bytes of the whole stream into a NUL-terminated buffer. */
int ovf_stream_load(struct ovf_stream *s, size_t max, char **buf, size_t *len)
{
	uint64_t size;
	char *p;
	int r = ovf_stream_size(s, &size);

	if (r < 0)
		return r;
	if (size > max)
		return ovf_err(-EFBIG, "%s: %llu bytes, more than the %zu allowed",
			       s->name, (unsigned long long)size, max);
	p = malloc((size_t)size + 1);
	if (!p)
		return ovf_err(-ENOMEM, "%s: out of memory", s->name);
	r = ovf_stream_read_full(s, p, (size_t)size, 0);
	if (r < 0) {
		free(p);
		return r;
	}
	p[size] = '\0';
	*buf = p;
	*len = (size_t)size;
	return 0;
}

/* ---- A region of a file -------------------------------------------------- */

/* pread(2) clipped to the region. */
static ssize_t fd_pread(struct ovf_stream *s, void *buf, size_t len,
			uint64_t off)
{
	size_t done = 0;

	if (off >= s->size)
		return 0;
	if (len > s->size - off)
		len = (size_t)(s->size - off);
	while (done < len) {
		ssize_t r = pread(s->fd, (char *)buf + done, len - done,
				  (off_t)(s->base + off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return ovf_err(-errno, "%s: read at offset %llu: %s",
				       s->name,
				       (unsigned long long)(off + done),
				       strerror(errno));
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static const struct ovf_stream_ops fd_ops = { .pread = fd_pread };

/* A read-only view of [off, off+len) of a duplicate of fd. */
int ovf_stream_fd(int fd, uint64_t off, uint64_t len, const char *name,
		  struct ovf_stream **out)
{
	struct ovf_stream *s = stream_new(&fd_ops, name);

	if (!s)
		return ovf_err(-ENOMEM, "%s: out of memory", name);
	s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (s->fd < 0) {
		int e = errno;

		ovf_stream_close(s);
		return ovf_err(-e, "%s: dup: %s", name, strerror(e));
	}
	s->base = off;
	s->size = len;
	s->size_known = true;
	*out = s;
	return 0;
}

/* ---- A slice of another stream -------------------------------------------- */

/* Reads the parent at base + off, clipped to the slice. */
static ssize_t sub_pread(struct ovf_stream *s, void *buf, size_t len,
			 uint64_t off)
{
	struct ovf_stream *parent = s->priv;
	size_t done = 0;

	if (off >= s->size)
		return 0;
	if (len > s->size - off)
		len = (size_t)(s->size - off);
	while (done < len) {
		ssize_t r = ovf_stream_pread(parent, (char *)buf + done,
					     len - done, s->base + off + done);

		if (r < 0)
			return r;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

/* Drops the reference to the parent. */
static void sub_close(struct ovf_stream *s)
{
	ovf_stream_close(s->priv);
}

static const struct ovf_stream_ops sub_ops = {
	.pread = sub_pread,
	.close = sub_close,
};

/* [off, off+len) of parent; a plain parent gives a plain slice. */
int ovf_stream_sub(struct ovf_stream *parent, uint64_t off, uint64_t len,
		   const char *name, struct ovf_stream **out)
{
	struct ovf_stream *s;

	if (parent->fd >= 0)
		return ovf_stream_fd(parent->fd, parent->base + off, len, name,
				     out);
	s = stream_new(&sub_ops, name);
	if (!s)
		return ovf_err(-ENOMEM, "%s: out of memory", name);
	s->priv = ovf_stream_ref(parent);
	s->base = off;
	s->size = len;
	s->size_known = true;
	*out = s;
	return 0;
}

/* ---- Streams end to end ----------------------------------------------------- */

struct concat {
	size_t n;
	struct ovf_stream **parts;
	uint64_t *start; /* n + 1 entries: where each part begins */
};

/* Finds the part holding off and reads from it (and the next ones). */
static ssize_t concat_pread(struct ovf_stream *s, void *buf, size_t len,
			    uint64_t off)
{
	struct concat *c = s->priv;
	size_t lo = 0, hi = c->n, done = 0;

	if (off >= s->size)
		return 0;
	if (len > s->size - off)
		len = (size_t)(s->size - off);
	while (hi - lo > 1) { /* last part with start <= off */
		size_t mid = (lo + hi) / 2;

		if (c->start[mid] <= off)
			lo = mid;
		else
			hi = mid;
	}
	for (size_t i = lo; i < c->n && done < len; i++) {
		uint64_t in = off + done - c->start[i];
		uint64_t avail = c->start[i + 1] - c->start[i] - in;
		size_t want = len - done < avail ? len - done : (size_t)avail;
		int r = ovf_stream_read_full(c->parts[i], (char *)buf + done,
					     want, in);

		if (r < 0)
			return r;
		done += want;
	}
	return (ssize_t)done;
}

/* Drops the parts. */
static void concat_close(struct ovf_stream *s)
{
	struct concat *c = s->priv;

	for (size_t i = 0; i < c->n; i++)
		ovf_stream_close(c->parts[i]);
	free(c->parts);
	free(c->start);
	free(c);
}

static const struct ovf_stream_ops concat_ops = {
	.pread = concat_pread,
	.close = concat_close,
};

/* The parts one after the other; each part's size must be known. */
int ovf_stream_concat(struct ovf_stream **parts, size_t n, const char *name,
		      struct ovf_stream **out)
{
	struct ovf_stream *s;
	struct concat *c;
	int r;

	if (n == 1) {
		*out = ovf_stream_ref(parts[0]);
		return 0;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return ovf_err(-ENOMEM, "%s: out of memory", name);
	c->parts = calloc(n ? n : 1, sizeof(*c->parts));
	c->start = calloc(n + 1, sizeof(*c->start));
	if (!c->parts || !c->start) {
		r = ovf_err(-ENOMEM, "%s: out of memory", name);
		goto err_free_concat;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t sz;

		r = ovf_stream_size(parts[i], &sz);
		if (r < 0)
			goto err_free_concat;
		c->start[i + 1] = c->start[i] + sz;
	}
	s = stream_new(&concat_ops, name);
	if (!s) {
		r = ovf_err(-ENOMEM, "%s: out of memory", name);
		goto err_free_concat;
	}
	for (size_t i = 0; i < n; i++)
		c->parts[i] = ovf_stream_ref(parts[i]);
	c->n = n;
	s->priv = c;
	s->size = c->start[n];
	s->size_known = true;
	*out = s;
	return 0;

err_free_concat:
	free(c->parts);
	free(c->start);
	free(c);
	return r;
}
