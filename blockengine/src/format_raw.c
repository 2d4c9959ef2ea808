/* format_raw.c - a raw image: the source's bytes are the disk, one FLAT
   extent covering all of it. */
#include <errno.h>

#include "internal.h"

/* Anything can be raw, so raw only wins when nothing else claims the file. */
static int raw_probe(const uint8_t *head, size_t len)
{
	return 1;
}

/* Takes src as the whole disk. */
static int raw_open(struct bdev *b, struct bsrc *src, const char *path)
{
	b->priv = src;
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
	bsrc_close(b->priv);
	b->priv = NULL;
}

/* Every byte is stored as is at the same offset of the source. */
static int raw_map(struct bdev *b, uint64_t off, uint64_t len,
		   struct bdev_map *m)
{
	struct bsrc *src = b->priv;

	*m = (struct bdev_map){
		.kind = BDEV_MAP_DATA,
		.len = len,
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
	const struct bsrc *src = b->priv;

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
	struct bsrc *src = b->priv;

	return src->ops->flush ? src->ops->flush(src) : 0;
}

const struct bdev_format bdev_format_raw = {
	.name = "raw",
	.probe = raw_probe,
	.open = raw_open,
	.close = raw_close,
	.map = raw_map,
	.get_extent = raw_get_extent,
	.flush = raw_flush,
};
