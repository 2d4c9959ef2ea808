/* SPDX-License-Identifier: Apache-2.0 */
/* format_raw.c - a raw image: the source's bytes are the disk, one FLAT
   extent covering all of it; holes of a sparse file read as ZERO runs. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

/* A raw layer: its source, and a number no other layer of this process has,
   naming it in the per-thread answers below. */
struct raw {
	struct bsrc *src;
	uint64_t serial;
	atomic_bool no_seek; /* SEEK_DATA failed: report everything as DATA */
};

/* The last hole/data answer per layer, a few layers per thread, so a
   reader asks the kernel once per hole or data extent, not per request. */
#define RAW_SEEN 4
struct raw_seen {
	uint64_t serial;    /* 0: empty */
	uint64_t gen;       /* src->write_gen when asked */
	uint64_t start, end; /* offsets in the source */
	bool data;
};

static _Thread_local struct raw_seen raw_seen[RAW_SEEN];
static _Thread_local unsigned raw_seen_next;
static atomic_uint_fast64_t raw_serials;

/* Anything can be raw, so raw only wins when nothing else claims the file. */
static int raw_probe(const uint8_t *head, size_t len)
{
	return 1;
}

/* Takes src as the whole disk. */
static int raw_open(struct bdev *b, struct bsrc *src, const char *path)
{
	struct raw *r = calloc(1, sizeof(*r));

	if (!r) {
		bsrc_close(src);
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	}
	r->src = src;
	r->serial = atomic_fetch_add(&raw_serials, 1) + 1;
	b->priv = r;
	b->info.format = "raw";
	b->info.size = src->length;
	b->info.sector_size = BDEV_SECTOR;
	b->info.read_only = !src->writable;
	b->info.parent_cid = 0xffffffffu;
	b->info.extent_count = 1;
	return 0;
}

static void raw_close(struct bdev *b)
{
	struct raw *r = b->priv;

	bsrc_close(r->src);
	free(r);
	b->priv = NULL;
}

/*
 * Asks the kernel whether off of src lies in data or in a hole, and where
 * that extent ends (clamped to the source's length). Returns 1 for data,
 * 0 for a hole, -1 when the file system cannot tell.
 */
static int raw_seek(const struct bsrc *src, uint64_t off, uint64_t *end)
{
	off_t pos = (off_t)(src->base + off), d, h;
	uint64_t length = bsrc_length(src);

	if (src->fd < 0)
		return src->ops->seek ? src->ops->seek(src, off, end) : -1;
	d = lseek(src->fd, pos, SEEK_DATA);
	if (d < 0) {
		if (errno != ENXIO)
			return -1;
		/* No data after off: a hole up to the end of the file. Past
		   the end, DATA, so reads fail as for a truncated source. */
		d = lseek(src->fd, 0, SEEK_END);
		if (d < 0)
			return -1;
		*end = length;
		if (d <= pos)
			return 1;
		if ((uint64_t)d - src->base < *end)
			*end = (uint64_t)d - src->base;
		return 0;
	}
	if (d > pos) {
		*end = (uint64_t)d - src->base;
		if (*end > length)
			*end = length;
		return 0;
	}
	h = lseek(src->fd, pos, SEEK_HOLE);
	if (h < 0)
		return -1;
	*end = (uint64_t)h - src->base;
	if (*end > length || *end <= off)
		*end = length;
	return 1;
}

/* Whether off of r's source is data or a hole, and where that run ends:
   this thread's last answer when still good, the kernel's otherwise. */
static bool raw_lookup(struct raw *r, uint64_t off, uint64_t *end)
{
	struct bsrc *src = r->src;
	uint64_t gen = atomic_load_explicit(&src->write_gen,
					    memory_order_acquire);
	struct raw_seen *e;
	int kind;

	for (unsigned i = 0; i < RAW_SEEN; i++) {
		e = &raw_seen[i];
		if (e->serial == r->serial && e->gen == gen &&
		    off >= e->start && off < e->end) {
			*end = e->end;
			return e->data;
		}
	}
	kind = raw_seek(src, off, end);
	if (kind < 0) {
		atomic_store(&r->no_seek, true);
		*end = src->length;
		return true;
	}
	e = &raw_seen[raw_seen_next++ % RAW_SEEN];
	*e = (struct raw_seen){ .serial = r->serial, .gen = gen, .start = off,
				.end = *end, .data = kind == 1 };
	return e->data;
}

/* Every byte is stored as is at the same offset of the source; a hole of
   a sparse file is a ZERO run that writes may fill in place. */
static int raw_map(struct bdev *b, uint64_t off, uint64_t len,
		   struct bdev_map *m)
{
	struct raw *r = b->priv;
	struct bsrc *src = r->src;
	uint64_t end = off + len;
	bool data = true;

	if ((src->fd >= 0 || src->ops->seek) &&
	    !atomic_load_explicit(&r->no_seek,
						  memory_order_relaxed)) {
		data = raw_lookup(r, off, &end);
		if (end <= off || end - off > len)
			end = off + len;
	}
	*m = (struct bdev_map){
		.kind = data ? BDEV_MAP_DATA : BDEV_MAP_ZERO,
		.hole = !data,
		.len = end - off,
		.src = src,
		.src_off = off,
		.read_only = !src->writable,
	};
	return 0;
}

/* The single FLAT extent. */
static int raw_get_extent(const struct bdev *b, unsigned index,
			  struct bdev_extent_info *out)
{
	const struct raw *r = b->priv;
	const struct bsrc *src = r->src;

	if (index != 0)
		return bdev_err(-ENOENT, "%s: raw image has 1 extent, asked for "
				"extent %u", b->filename, index);
	*out = (struct bdev_extent_info){
		.access = src->writable ? BDEV_ACCESS_RW : BDEV_ACCESS_RDONLY,
		.type = "FLAT",
		.filename = src->name,
		.offset = 0,
		.size = b->info.size,
		.file_offset = src->base,
	};
	return 0;
}

static int raw_flush(struct bdev *b)
{
	struct bsrc *src = ((struct raw *)b->priv)->src;

	return src->ops->flush ? src->ops->flush(src) : 0;
}

struct bsrc *raw_source(const struct bdev *b)
{
	return ((const struct raw *)b->priv)->src;
}

/* Grows the open file to new_size (the core holds top_lock exclusively
   and checked new_size > info.size). */
static int raw_grow(struct bdev *b, uint64_t new_size)
{
	struct bsrc *s = raw_source(b);
	int ret;

	if (!s || !s->whole_file || !s->ops->truncate)
		return bdev_err(-ENOTSUP, "%s: not a whole regular file (a region "
				"or a device): it cannot grow", b->filename);
	ret = s->ops->truncate(s, new_size);
	if (ret == 0)
		b->info.size = new_size;
	return ret;
}

/* bdev_resize of a raw file, as qemu-img resize does it: grows (the new
   bytes read as zeros), and shrinks (the bytes past the new end are
   dropped) only when flags has BDEV_RESIZE_SHRINK. */
static int raw_resize(struct bdev *b, uint64_t new_size, unsigned flags)
{
	struct bsrc *s = raw_source(b);

	if (new_size >= b->info.size)
		return bdev_grow(b, new_size);
	if (!(flags & BDEV_RESIZE_SHRINK))
		return bdev_err(-EINVAL, "%s: %" PRIu64 " bytes is smaller than the "
				"disk (%" PRIu64 " bytes); shrinking needs --shrink",
				b->filename, new_size, b->info.size);
	if (!s->ops->truncate)
		return bdev_err(-ENOTSUP, "%s: cannot be truncated", b->filename);
	return s->ops->truncate(s, new_size);
}

/* A raw image has no metadata: nothing to check, and the report says so. */
static int raw_check(const char *path, unsigned repair,
		     struct bdev_check_result *r,
		     void (*report)(void *opaque, const char *line), void *opaque)
{
	char line[512];

	(void)repair;
	(void)r;
	snprintf(line, sizeof(line), "%s: a raw image has no metadata; there "
		 "is nothing to check", path);
	if (report)
		report(opaque, line);
	return 0;
}

const struct bdev_format bdev_format_raw = {
	.name = "raw",
	.probe = raw_probe,
	.open = raw_open,
	.close = raw_close,
	.map = raw_map,
	.get_extent = raw_get_extent,
	.flush = raw_flush,
	.grow = raw_grow,
	.resize = raw_resize,
	.check = raw_check,
};
