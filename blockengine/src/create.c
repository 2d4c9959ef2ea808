/* SPDX-License-Identifier: Apache-2.0 */
/*
 * create.c - bdev_create and the image writer's public entry points:
 * option checks shared by all formats, and the raw format's writer.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "create.h"

/* Create path with O_EXCL so an existing file is never overwritten. */
int create_excl(const char *path, int *fd)
{
	int f = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (f < 0) {
		int e = errno;
		if (e == EEXIST)
			return bdev_err(-EEXIST, "%s: file exists; refusing to "
					"overwrite it", path);
		return bdev_err(-e, "%s: cannot create: %s", path, strerror(e));
	}
	*fd = f;
	return 0;
}

/* pwrite(2) until all of buf is written. */
int write_all_at(int fd, const char *name, const void *buf, size_t len,
		 uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			return bdev_err(-e, "%s: write of %zu bytes at offset %" PRIu64
					" failed: %s", name, len, off, strerror(e));
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* ---- raw ------------------------------------------------------------------ */

struct raw_writer {
	struct bdev_writer w;
	char *path;
	int fd;
};

static int raw_write(struct bdev_writer *w, uint64_t off, const void *buf,
		     size_t len)
{
	struct raw_writer *r = (struct raw_writer *)w;

	return write_all_at(r->fd, r->path, buf, len, off);
}

static void raw_free(struct raw_writer *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r->path);
	free(r);
}

static int raw_finish(struct bdev_writer *w, uint64_t *length)
{
	struct raw_writer *r = (struct raw_writer *)w;
	int ret = 0;

	*length = w->size;
	if (fdatasync(r->fd) < 0)
		ret = bdev_err(-errno, "%s: fdatasync failed: %s", r->path,
			       strerror(errno));
	if (close(r->fd) < 0 && !ret)
		ret = bdev_err(-errno, "%s: close failed: %s", r->path,
			       strerror(errno));
	r->fd = -1;
	if (ret < 0)
		unlink(r->path);
	raw_free(r);
	return ret;
}

static void raw_abort(struct bdev_writer *w)
{
	struct raw_writer *r = (struct raw_writer *)w;

	unlink(r->path);
	raw_free(r);
}

static int raw_writer_new(const char *path, const struct bdev_create_opts *o,
			  struct bdev_writer **out)
{
	struct raw_writer *r = calloc(1, sizeof(*r));
	int ret;

	if (!r || !(r->path = strdup(path))) {
		free(r);
		return bdev_err(-ENOMEM, "%s: out of memory", path);
	}
	ret = create_excl(path, &r->fd);
	if (ret < 0) {
		free(r->path);
		free(r);
		return ret;
	}
	if (ftruncate(r->fd, (off_t)o->size) < 0) {
		ret = bdev_err(-errno, "%s: cannot size to %" PRIu64 " bytes: %s",
			       path, o->size, strerror(errno));
		raw_abort(&r->w);
		return ret;
	}
	r->w.size = o->size;
	r->w.grain = 4096;
	r->w.write = raw_write;
	r->w.finish = raw_finish;
	r->w.abort = raw_abort;
	*out = &r->w;
	return 0;
}

/* ---- public ---------------------------------------------------------------- */

/* Check what holds for every format; fill defaults into *d. */
/* A format images are created in, by the name users give it. */
struct create_kind {
	const char *name;
	/* a writer of the whole image at path */
	int (*writer_new)(const char *path, const struct bdev_create_opts *o,
			  struct bdev_writer **out);
	bool layout;        /* takes a subformat, backing file, grain... */
	/* Check (and default) *d for an image written into a region of a
	   file, with an observer when observe; NULL: the format cannot be. */
	int (*region_opts)(const char *name, struct bdev_create_opts *d,
			   bool observe);
};

static int vmdk_writer_new_path(const char *path,
				const struct bdev_create_opts *o,
				struct bdev_writer **out)
{
	return vmdk_writer_new(path, o, NULL, out);
}

static const struct create_kind create_kinds[] = {
	{ "vmdk", vmdk_writer_new_path, true, vmdk_region_opts },
	{ "raw", raw_writer_new, false, NULL },
};

/* The kind named name, or NULL. */
static const struct create_kind *create_kind(const char *name)
{
	for (size_t i = 0; i < sizeof(create_kinds) / sizeof(create_kinds[0]);
	     i++)
		if (!strcmp(create_kinds[i].name, name))
			return &create_kinds[i];
	return NULL;
}

static int check_opts(const char *path, const struct bdev_create_opts *o,
		      struct bdev_create_opts *d)
{
	int ret;

	if (!path || !*path)
		return bdev_err(-EINVAL, "bdev_create: no path");
	ret = bdev_copy_opts(d, sizeof(*d),
			     offsetof(struct bdev_create_opts, struct_size), o,
			     o ? o->struct_size : 0, path);
	if (ret < 0)
		return ret;
	d->struct_size = sizeof(*d);
	if (!d->format)
		d->format = "vmdk";
	if (!create_kind(d->format))
		return bdev_err(-EINVAL, "%s: unknown format \"%s\", expected "
				"\"vmdk\" or \"raw\"", path, d->format);
	if (d->size % BDEV_SECTOR)
		return bdev_err(-EINVAL, "%s: size %" PRIu64 " is not a multiple "
				"of 512 bytes", path, d->size);
	if (!create_kind(d->format)->layout) {
		if (d->subformat || d->backing || d->zeroed_grain ||
		    d->adapter_type || d->hwversion || d->grain_size)
			return bdev_err(-EINVAL, "%s: the raw format takes only a "
					"size (no subformat, backing file, adapter "
					"type, hardware version or grain options)", path);
		if (!d->size)
			return bdev_err(-EINVAL, "%s: a raw image needs a size", path);
	}
	return 0;
}

int bdev_writer_new(const char *path, const struct bdev_create_opts *o,
		    struct bdev_writer **out)
{
	struct bdev_create_opts d;
	int ret;

	bdev_err_clear();
	if (!out)
		return bdev_err(-EINVAL, "bdev_writer_new: no result pointer");
	ret = check_opts(path, o, &d);
	if (ret < 0)
		return ret;
	if (bsrc_is_rbd_name(path)) {
		if (strcmp(d.format, "raw"))
			return bdev_err(-EINVAL, "%s: an RBD image holds raw "
					"contents; write it with format raw", path);
		return rbd_writer_new(path, d.size, out);
	}
	return create_kind(d.format)->writer_new(path, &d, out);
}

int bdev_writer_new_fd(int fd, uint64_t offset, const char *name,
		       const struct bdev_create_opts *o,
		       bdev_write_observer observe, void *opaque,
		       struct bdev_writer **out)
{
	struct writer_target t = { .fd = fd, .offset = offset,
				   .observe = observe, .opaque = opaque };
	struct bdev_create_opts d;
	int fl, ret;

	bdev_err_clear();
	if (!out)
		return bdev_err(-EINVAL, "bdev_writer_new_fd: no result pointer");
	if (!name || !*name)
		name = "image";
	ret = check_opts(name, o, &d);
	if (ret < 0)
		return ret;
	if (!create_kind(d.format)->region_opts)
		return bdev_err(-EINVAL, "%s: only a VMDK is written into a file "
				"region (a raw image is its own bytes: pwrite them)",
				name);
	ret = create_kind(d.format)->region_opts(name, &d, observe != NULL);
	if (ret < 0)
		return ret;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return bdev_err(-errno, "%s: fd %d: %s", name, fd, strerror(errno));
	if ((fl & O_ACCMODE) == O_RDONLY || (fl & O_APPEND))
		return bdev_err(-EINVAL, "%s: fd %d is %s", name, fd,
				(fl & O_APPEND) ? "O_APPEND (pwrite would ignore "
				"offsets)" : "read-only");
	if (offset > (uint64_t)INT64_MAX)
		return bdev_err(-EINVAL, "%s: offset %" PRIu64 " is past what a "
				"file holds", name, offset);
	return vmdk_writer_new(name, &d, &t, out);
}

uint64_t bdev_writer_grain(const struct bdev_writer *w)
{
	return w->grain;
}

int bdev_writer_write(struct bdev_writer *w, uint64_t off, const void *buf,
		      size_t len)
{
	bdev_err_clear();
	if (off % w->grain || off > w->size || len > w->size - off ||
	    (len % w->grain && off + len != w->size))
		return bdev_err(-EINVAL, "image writer: write of %zu bytes at "
				"offset %" PRIu64 " is not whole %" PRIu64
				"-byte grains inside the %" PRIu64 "-byte disk",
				len, off, w->grain, w->size);
	if (!len)
		return 0;
	return w->write(w, off, buf, len);
}

int bdev_writer_close(struct bdev_writer *w)
{
	uint64_t length;

	bdev_err_clear();
	return w->finish(w, &length);
}

int bdev_writer_finish(struct bdev_writer *w, uint64_t *length)
{
	uint64_t dummy;

	bdev_err_clear();
	return w->finish(w, length ? length : &dummy);
}

void bdev_writer_abort(struct bdev_writer *w)
{
	if (w)
		w->abort(w);
}

/* path's folder, for an unnamed file in it ("." when path has none). */
static char *folder_of(const char *path)
{
	const char *s = strrchr(path, '/');

	if (!s)
		return strdup(".");
	if (s == path)
		return strdup("/");
	return strndup(path, (size_t)(s - path));
}

int create_whole(const char *path, const struct bdev_create_opts *o)
{
	struct writer_target t = { .fd = -1 };
	struct bdev_create_opts d, probe;
	const struct create_kind *k;
	struct bdev_writer *w;
	char proc[64], *dir;
	uint64_t length;
	int ret;

	bdev_err_clear();
	ret = check_opts(path, o, &d);
	if (ret < 0)
		return ret;
	/* only a single-file image can be made whole before it has a name:
	   ask the format whether this one is (its region rules, the parent
	   aside, which is named relative to path all the same) */
	k = create_kind(d.format);
	probe = d;
	probe.backing = NULL;
	if (bsrc_is_rbd_name(path) || !k->region_opts ||
	    k->region_opts(path, &probe, false) < 0) {
		bdev_err_clear();
		return bdev_create(path, o);
	}
	d.subformat = probe.subformat;
	dir = folder_of(path);
	if (!dir)
		return bdev_err(-ENOMEM, "%s: out of memory", path);
	t.fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
	if (t.fd < 0) {
		int e = errno;

		if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL) {
			free(dir);
			return bdev_create(path, o); /* no unnamed files here */
		}
		ret = bdev_err(-e, "%s: cannot make a new file in %s: %s",
			       path, dir, strerror(e));
		free(dir);
		return ret;
	}
	free(dir);
	ret = vmdk_writer_new(path, &d, &t, &w);
	if (ret == 0)
		ret = w->finish(w, &length);
	if (ret == 0 && fsync(t.fd) < 0)
		ret = bdev_err(-errno, "%s: fsync of the new image failed: %s",
			       path, strerror(errno));
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", t.fd);
	if (ret == 0 &&
	    linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) < 0)
		ret = errno == EEXIST
			? bdev_err(-EEXIST, "%s: file exists; refusing to "
				   "overwrite it", path)
			: bdev_err(-errno, "%s: cannot put the new image in "
				   "place: %s", path, strerror(errno));
	close(t.fd);
	return ret;
}

int bdev_create(const char *path, const struct bdev_create_opts *o)
{
	struct bdev_writer *w;
	int ret = bdev_writer_new(path, o, &w);

	if (ret < 0)
		return ret;
	return bdev_writer_close(w);
}
