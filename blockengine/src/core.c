/* SPDX-License-Identifier: Apache-2.0 */
/*
 * core.c - opening and closing images (format probing, layer chains), and
 * the public calls that describe an open image.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

#include "grain_cache.h"
#include "internal.h"
#include "testing.h"

#define BDEV_PROBE_BYTES 4096

static const struct bdev_format *const bdev_formats[] = {
	&bdev_format_vmdk,
	&bdev_format_raw,
};

/* The driver named name, or NULL. */
static const struct bdev_format *bdev_format_by_name(const char *name)
{
	for (size_t i = 0; i < sizeof(bdev_formats) / sizeof(bdev_formats[0]);
	     i++)
		if (strcmp(bdev_formats[i]->name, name) == 0)
			return bdev_formats[i];
	return NULL;
}

/* The driver most confident about src's first bytes (raw at worst). */
static int bdev_probe(struct bsrc *src, const struct bdev_format **out)
{
	uint8_t head[BDEV_PROBE_BYTES];
	ssize_t n = src->ops->pread(src, head, sizeof(head), 0);
	int best = -1;

	if (n < 0)
		return (int)n;
	for (size_t i = 0; i < sizeof(bdev_formats) / sizeof(bdev_formats[0]);
	     i++) {
		int score = bdev_formats[i]->probe(head, (size_t)n);
		if (score > best) {
			best = score;
			*out = bdev_formats[i];
		}
	}
	return 0;
}

/* The caller's opts (read by its struct_size) with every 0 field replaced
   by its default. */
static int bdev_opts_defaults(const char *name, const struct bdev_open_opts *o,
			      struct bdev_open_opts *opts)
{
	int ret = bdev_copy_opts(opts, sizeof(*opts),
				 offsetof(struct bdev_open_opts, struct_size),
				 o, o ? o->struct_size : 0, name);

	if (ret < 0)
		return ret;
	opts->struct_size = sizeof(*opts);
	if (!opts->gt_cache_bytes)
		opts->gt_cache_bytes = BDEV_DEFAULT_GT_CACHE;
	if (!opts->grain_cache_bytes)
		opts->grain_cache_bytes = BDEV_DEFAULT_GRAIN_CACHE;
	if (!opts->readahead_grains)
		opts->readahead_grains = BDEV_DEFAULT_READAHEAD;
	if (!opts->inflate_threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		/* on one CPU a hand-off only adds thread hops */
		opts->inflate_threads = n > 1 ? (uint32_t)n : UINT32_MAX;
	}
	return 0;
}

/* Rejects flag combinations that mean nothing. */
static int bdev_check_flags(const char *name, const struct bdev_open_opts *o)
{
	if (!o)
		return 0;
	if ((o->flags & BDEV_O_RDWR) && (o->flags & BDEV_O_SHARE))
		return bdev_err(-EINVAL, "%s: BDEV_O_SHARE (-U) opens read-only "
				"and cannot be combined with BDEV_O_RDWR", name);
	return 0;
}

/* Sets up a layer over src (owned from here on) with driver fmt. */
static int bdev_open_with(const struct bdev_format *fmt, const char *path,
			  struct bsrc *src, const struct bdev_open_opts *o,
			  struct bdev **out)
{
	struct bdev *b = calloc(1, sizeof(*b));
	int ret;

	if (!b) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", src->name);
		goto err_close_src;
	}
	b->filename = strdup(path ? path : src->name);
	if (!b->filename) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", src->name);
		goto err_free_bdev;
	}
	pthread_rwlock_init(&b->top_lock, NULL);
	pthread_mutex_init(&b->begin_lock, NULL);
	pthread_mutex_init(&b->info_lock, NULL);
	b->wtrack = wtrack_new(b);
	if (!b->wtrack) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", src->name);
		free(b->filename);
		free(b);
		goto err_close_src;
	}
	b->fmt = fmt;
	b->opts = *o;
	b->opts.format = NULL; /* the caller's string need not outlive us */
	ret = fmt->open(b, src, path);
	if (ret < 0)
		goto err_close_backing;
	if (!b->info.filename)
		b->info.filename = b->filename;
	if (!b->info.format)
		b->info.format = fmt->name;
	if (!b->info.sector_size)
		b->info.sector_size = BDEV_SECTOR;
	if (b->info.compressed) {
		b->gcache = gcache_new(o->grain_cache_bytes);
		if (!b->gcache) {
			ret = bdev_err(-ENOMEM, "%s: out of memory for the grain "
				       "cache", b->filename);
			goto err_close_format;
		}
	}
	*out = b;
	return 0;

err_close_format:
	fmt->close(b);
err_close_backing:
	if (b->backing)
		bdev_close(b->backing);
	wtrack_close_all(b);
	free(b->filename);
err_free_bdev:
	free(b);
	return ret;
err_close_src:
	bsrc_close(src);
	return ret;
}

/* Opens one layer from path or src (owned from here on), probing or
   forcing its format. */
int bdev_open_layer(const char *path, struct bsrc *src,
		    const struct bdev_open_opts *opts, struct bdev **out)
{
	const struct bdev_format *fmt = NULL;
	struct bdev_open_opts o;
	int ret;

	ret = bdev_opts_defaults(path ? path : src->name, opts, &o);
	if (ret < 0) {
		if (src)
			bsrc_close(src);
		return ret;
	}
	if (!src && bsrc_is_rbd_name(path)) {
		/* an RBD image holds raw contents: never probed, so a guest's
		   disk that starts like a VMDK stays a raw disk */
		ret = bsrc_open_rbd(path, o.flags & BDEV_O_RDWR, &src);
		if (ret < 0)
			return ret;
		if (!o.format)
			o.format = "raw";
	}
	if (!src) {
		ret = bsrc_open_file(path, o.flags & BDEV_O_RDWR,
				     o.flags & BDEV_O_SHARE, &src);
		if (ret < 0)
			return ret;
	}
	if (o.format) {
		fmt = bdev_format_by_name(o.format);
		if (!fmt) {
			ret = bdev_err(-EINVAL, "%s: unknown format \"%s\", "
				       "expected \"raw\" or \"vmdk\"", src->name,
				       o.format);
			bsrc_close(src);
			return ret;
		}
	} else {
		ret = bdev_probe(src, &fmt);
		if (ret < 0) {
			bsrc_close(src);
			return ret;
		}
	}
	return bdev_open_with(fmt, path, src, &o, out);
}

/* Opens src with a driver the engine does not list (tests, fuzzers). */
int bdev_open_format(const struct bdev_format *fmt, struct bsrc *src,
		     const struct bdev_open_opts *opts, struct bdev **out)
{
	struct bdev_open_opts o;
	int ret;

	bdev_err_clear();
	ret = bdev_opts_defaults(src->name, opts, &o);
	if (ret < 0) {
		bsrc_close(src);
		return ret;
	}
	return bdev_open_with(fmt, NULL, src, &o, out);
}

/* Opens the image at path. */
int bdev_open(const char *path, const struct bdev_open_opts *opts,
	      struct bdev **out)
{
	int ret;

	bdev_err_clear();
	if (!path || !out)
		return bdev_err(-EINVAL, "bdev_open: no path or result pointer");
	ret = bdev_check_flags(path, opts);
	if (ret < 0)
		return ret;
	ret = bdev_open_layer(path, NULL, opts, out);
	if (ret < 0)
		return ret;
	/* the change map of the disk, if it has checkpoints */
	ret = ctk_open(*out);
	if (ret < 0) {
		char why[512];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		bdev_close(*out);
		*out = NULL;
		return bdev_err(ret, "%s", why);
	}
	return 0;
}

/* Opens [offset, offset + length) of fd as a read-only image. */
int bdev_open_region(int fd, uint64_t offset, uint64_t length,
		     const char *name, const struct bdev_open_opts *opts,
		     struct bdev **out)
{
	struct bsrc *src;
	int ret;

	bdev_err_clear();
	if (!name)
		name = "region";
	if (!out)
		return bdev_err(-EINVAL, "%s: no result pointer", name);
	ret = bdev_check_flags(name, opts);
	if (ret < 0)
		return ret;
	if (opts && (opts->flags & BDEV_O_RDWR))
		return bdev_err(-EROFS, "%s: an image inside a region of a file "
				"can only be opened read-only", name);
	ret = bsrc_open_region(fd, offset, length, name, &src);
	if (ret < 0)
		return ret;
	return bdev_open_layer(NULL, src, opts, out);
}

/* Flushes a writable image, marks it cleanly closed when it was written,
   closes the driver, its parents and sources. Returns the first error. */
int bdev_close(struct bdev *b)
{
	int ret = 0;

	if (!b)
		return 0;
	bdev_err_clear();
	/* layers a snapshot froze are finalized before anything closes */
	if (b->wtrack)
		ret = wtrack_close_all(b);
	if (!b->info.read_only && b->fmt->flush) {
		int r = b->fmt->flush(b);
		if (!ret)
			ret = r;
	}
	if (b->ctk) {
		int r = ctk_close(b);
		if (!ret)
			ret = r;
	}
	if (!ret && !b->info.read_only && atomic_load(&b->write_begun) &&
	    b->fmt->finish)
		ret = b->fmt->finish(b);
	gcache_kill(b->gcache);
	b->fmt->close(b);
	while (b->retired) {
		struct bdev *l = b->retired;
		b->retired = l->retired;
		l->retired = NULL;
		if (l->fmt) {
			bdev_close(l);
		} else {
			/* a shell whose layer the handle took over */
			pthread_rwlock_destroy(&l->top_lock);
			pthread_mutex_destroy(&l->begin_lock);
			pthread_mutex_destroy(&l->info_lock);
			free(l);
		}
	}
	if (b->backing) {
		int r = bdev_close(b->backing);
		if (!ret)
			ret = r;
	}
	free(b->filename);
	pthread_rwlock_destroy(&b->top_lock);
	pthread_mutex_destroy(&b->begin_lock);
	pthread_mutex_destroy(&b->info_lock);
	free(b);
	return ret;
}

/* What a caller may ask of b; see struct bdev_limits. */
int bdev_get_limits(struct bdev *b, struct bdev_limits *out)
{
	struct bdev_limits l = { .struct_size = sizeof(l) };
	uint32_t block = 4096, grain;
	size_t n;

	bdev_err_clear();
	if (!b || !out || out->struct_size < sizeof(uint32_t))
		return bdev_err(-EINVAL, "bdev_get_limits: no image, or "
				"struct_size not set");
	pthread_rwlock_rdlock(&b->top_lock);
	if (b->fmt == &bdev_format_raw && raw_source(b)->fd >= 0) {
		struct stat st;
		if (fstat(raw_source(b)->fd, &st) == 0 && st.st_blksize > 0 &&
		    st.st_blksize <= (1 << 20))
			block = (uint32_t)st.st_blksize;
	}
	grain = b->info.cluster_size && b->info.cluster_size <= (1u << 30) ?
		(uint32_t)b->info.cluster_size : block;
	l.align = 1;
	l.preferred_size = grain;
	l.optimal_size = grain > (1u << 20) ? grain : (1u << 20);
	l.max_request = BDEV_MAX_REQUEST;
	l.can_write = !b->info.read_only;
	l.can_flush = l.can_write;
	l.can_fua = l.can_write;
	l.can_discard = l.can_write;
	l.can_write_zeroes = l.can_write;
	l.can_fast_zero = l.can_write;
	l.discard_granularity = l.can_discard ? grain : 0;
	l.zero_granularity = grain;
	l.can_snapshot = l.can_write && b->fmt->freeze && b->info.has_cid;
	l.can_track_changes = l.can_write || b->ctk || ctk_track_source(b);
	pthread_rwlock_unlock(&b->top_lock);
	n = out->struct_size < sizeof(l) ? out->struct_size : sizeof(l);
	memcpy(out, &l, n);
	out->struct_size = (uint32_t)n;
	return 0;
}

/* A copy of what the driver said about the image. */
int bdev_get_info(const struct bdev *b, struct bdev_info *info)
{
	/* taking its locks changes nothing a caller sees in b */
	struct bdev *mb = (struct bdev *)b;

	bdev_err_clear();
	if (!b || !info)
		return bdev_err(-EINVAL, "bdev_get_info: no image or result");
	/* a snapshot or a grow rewrites info holding top_lock exclusively;
	   a first write or a freeze, under info_lock */
	pthread_rwlock_rdlock(&mb->top_lock);
	pthread_mutex_lock(&mb->info_lock);
	*info = b->info;
	pthread_mutex_unlock(&mb->info_lock);
	pthread_rwlock_unlock(&mb->top_lock);
	return 0;
}

/* The driver's description of extent index. */
int bdev_get_extent(const struct bdev *b, unsigned index,
		    struct bdev_extent_info *out)
{
	struct bdev *mb = (struct bdev *)b; /* as in bdev_get_info */
	int ret;

	bdev_err_clear();
	if (!b || !out)
		return bdev_err(-EINVAL, "bdev_get_extent: no image or result");
	/* a snapshot swaps the layer, a grow the last extent's size */
	pthread_rwlock_rdlock(&mb->top_lock);
	if (index >= b->info.extent_count)
		ret = bdev_err(-ENOENT, "%s: no extent %u, the image has %u",
			       b->filename, index, b->info.extent_count);
	else if (!b->fmt->get_extent)
		ret = bdev_err(-ENOTSUP, "%s: format %s cannot describe its "
			       "extents", b->filename, b->fmt->name);
	else
		ret = b->fmt->get_extent(b, index, out);
	pthread_rwlock_unlock(&mb->top_lock);
	return ret;
}

/* The driver's disk database entry index. */
int bdev_get_ddb(const struct bdev *b, unsigned index, const char **key,
		 const char **value)
{
	bdev_err_clear();
	if (!b || !key || !value)
		return bdev_err(-EINVAL, "bdev_get_ddb: no image or result");
	if (!b->fmt->get_ddb)
		return bdev_err(-ENOENT, "%s: format %s has no disk database",
				b->filename, b->fmt->name);
	return b->fmt->get_ddb(b, index, key, value);
}

struct bdev *bdev_backing(const struct bdev *b)
{
	return b ? b->backing : NULL;
}

/* Checks that a query (what) of *length bytes at offset starts inside the
   image, and trims *length to its end (top_lock held shared). */
static int clamp_query(const struct bdev *b, const char *what,
		       uint64_t offset, uint64_t *length)
{
	if (*length == 0 || offset >= b->info.size)
		return bdev_err(-EINVAL, "%s: %s of %" PRIu64 " bytes at offset %"
				PRIu64 " is outside the image (%" PRIu64
				" bytes)", b->filename, what, *length, offset,
				b->info.size);
	if (*length > b->info.size - offset)
		*length = b->info.size - offset;
	return 0;
}

static _Thread_local bool map_nowait;
static _Thread_local unsigned blocking_depth;

/* See internal.h. */
void bdev_blocking_enter(void)
{
	blocking_depth++;
}

void bdev_blocking_leave(void)
{
	blocking_depth--;
}

bool bdev_can_offload(void)
{
	return !blocking_depth && !opool_on_worker();
}

/* True inside bdev_layer_map_nowait (see internal.h). */
bool bdev_map_nowait(void)
{
	return map_nowait;
}

/* bdev_layer_map without reading metadata (see internal.h). */
int bdev_layer_map_nowait(struct bdev *b, uint64_t off, uint64_t len,
			  struct bdev_map *m)
{
	int ret;

	map_nowait = true;
	ret = bdev_layer_map(b, off, len, m);
	map_nowait = false;
	return ret;
}

static int layer_status(struct bdev *b, uint64_t offset, uint64_t length,
			uint64_t *pnum);

/* How the first run of [offset, offset + length) is stored in this layer. */
int bdev_block_status(struct bdev *b, uint64_t offset, uint64_t length,
		      uint64_t *pnum)
{
	int ret;

	bdev_err_clear();
	if (!b || !pnum)
		return bdev_err(-EINVAL, "bdev_block_status: no image or result");
	/* a snapshot may swap a live top's layer meanwhile, a grow its size */
	pthread_rwlock_rdlock(&b->top_lock);
	ret = clamp_query(b, "block status", offset, &length);
	if (ret == 0)
		ret = layer_status(b, offset, length, pnum);
	pthread_rwlock_unlock(&b->top_lock);
	return ret;
}

/* The first run of a layer as bdev_block_status answers it, without the
   checks. */
int bdev_layer_map(struct bdev *b, uint64_t off, uint64_t len,
		   struct bdev_map *m)
{
	int ret = b->fmt->map(b, off, len, m);

	if (ret < 0)
		return ret;
	if (m->len == 0 || m->len > len)
		return bdev_err(-EIO, "%s: format driver mapped %" PRIu64
				" bytes at offset %" PRIu64 ", expected 1 to %"
				PRIu64, b->filename, m->len, off, len);
	return 0;
}

static int layer_status(struct bdev *b, uint64_t offset, uint64_t length,
			uint64_t *pnum)
{
	struct bdev_map m;
	int ret = bdev_layer_map(b, offset, length, &m);

	if (ret < 0)
		return ret;
	*pnum = m.len;
	return m.kind == BDEV_MAP_ZERO ? BDEV_STATUS_ZERO :
	       m.kind == BDEV_MAP_UNALLOC ? BDEV_STATUS_UNALLOCATED :
	       BDEV_STATUS_DATA;
}

/* The first run of the whole chain and the depth of the layer that holds
   it; see blockengine.h. */
int bdev_block_status_depth(struct bdev *b, uint64_t offset, uint64_t length,
			    uint64_t *pnum, unsigned *depth)
{
	struct bdev *layer;
	unsigned d = 1;
	int ret;

	bdev_err_clear();
	if (!b || !pnum || !depth)
		return bdev_err(-EINVAL, "bdev_block_status_depth: no image or "
				"result");
	pthread_rwlock_rdlock(&b->top_lock);
	ret = clamp_query(b, "block status", offset, &length);
	if (ret < 0) {
		pthread_rwlock_unlock(&b->top_lock);
		return ret;
	}
	for (layer = b;; layer = layer->backing, d++) {
		if (!layer || offset >= layer->info.size) {
			/* below the chain: zeros nobody stores */
			*pnum = length;
			*depth = 0;
			ret = BDEV_STATUS_UNALLOCATED;
			break;
		}
		if (length > layer->info.size - offset)
			length = layer->info.size - offset;
		ret = layer_status(layer, offset, length, pnum);
		if (ret != BDEV_STATUS_UNALLOCATED) {
			*depth = d;
			break;
		}
		length = *pnum; /* the parent answers for this part only */
	}
	pthread_rwlock_unlock(&b->top_lock);
	return ret;
}

/* Where the first run of [off, off + len) of layer and its parents lives
   on the host; the caller holds the top's top_lock shared. */
static int host_run(struct bdev *layer, uint64_t off, uint64_t len,
		    struct bdev_host_run *run)
{
	for (;;) {
		struct bdev_map m;
		uint64_t lim;
		int ret;

		if (!layer || off >= layer->info.size) {
			run->length = len; /* zeros below the chain */
			return BDEV_HOST_ZERO;
		}
		lim = layer->info.size - off < len ? layer->info.size - off : len;
		ret = bdev_layer_map(layer, off, lim, &m);
		if (ret < 0)
			return ret;
		run->length = m.len;
		switch (m.kind) {
		case BDEV_MAP_DATA:
			if (m.src->fd < 0)
				return BDEV_HOST_OTHER;
			run->fd = m.src->fd;
			run->file_offset = m.src->base + m.src_off;
			return BDEV_HOST_FILE;
		case BDEV_MAP_ZERO:
			return BDEV_HOST_ZERO;
		case BDEV_MAP_UNALLOC:
			layer = layer->backing;
			len = m.len;
			break;
		case BDEV_MAP_COMPRESSED:
		case BDEV_MAP_NOACCESS:
		default:
			return BDEV_HOST_OTHER;
		}
	}
}

/* Where the first run of [offset, offset + length) lives on the host; see
   blockengine.h. The top lock keeps bdev_snapshot from swapping the top
   layer while its driver answers. */
int bdev_map_host(struct bdev *b, uint64_t offset, uint64_t length,
		  struct bdev_host_run *run)
{
	int ret;

	bdev_err_clear();
	if (!b || !run)
		return bdev_err(-EINVAL, "bdev_map_host: no image or result");
	*run = (struct bdev_host_run){ .fd = -1 };
	pthread_rwlock_rdlock(&b->top_lock);
	ret = clamp_query(b, "host mapping", offset, &length);
	if (ret == 0)
		ret = host_run(b, offset, length, run);
	pthread_rwlock_unlock(&b->top_lock);
	return ret;
}

/* Counters of the image's caches, summed over its chain of layers. */
void bdev_get_stats(const struct bdev *b, struct bdev_stats *out)
{
	*out = (struct bdev_stats){ 0 };
	for (; b; b = b->backing) {
		out->gt_cache_hits += atomic_load(&b->stats.gt_hits);
		out->gt_cache_misses += atomic_load(&b->stats.gt_misses);
		out->grain_cache_hits += atomic_load(&b->stats.grain_hits);
		out->grain_cache_misses += atomic_load(&b->stats.grain_misses);
		out->grains_inflated += atomic_load(&b->stats.inflated);
		out->readahead_grains += atomic_load(&b->stats.readahead);
	}
}

/* Grows b while it is open; see blockengine.h. The new size is set under
   top_lock exclusive: submissions that check against it see the old size
   or the new one, and the files are already long enough for either (a
   VMDK's tables too: its driver's grow runs under the same hold). */
static int grow_locked(struct bdev *b, uint64_t new_size)
{
	if (new_size < b->info.size)
		return bdev_err(-EINVAL, "%s: %" PRIu64 " bytes is smaller than "
				"the disk (%" PRIu64 " bytes); shrinking is not "
				"done on an open disk", b->filename, new_size,
				b->info.size);
	if (new_size == b->info.size)
		return 0;
	if (b->ctk)
		return bdev_err(-ENOTSUP, "%s: has checkpoints sized for %" PRIu64
				" bytes; delete them before growing it",
				b->filename, b->info.size);
	if (!b->fmt->grow)
		return bdev_err(-ENOTSUP, "%s: growing an open %s %s disk is not "
				"supported", b->filename, b->info.format,
				b->info.subformat ? b->info.subformat : "");
	return b->fmt->grow(b, new_size);
}

int bdev_grow(struct bdev *b, uint64_t new_size)
{
	int ret;

	bdev_err_clear();
	if (!b)
		return bdev_err(-EINVAL, "bdev_grow: no image");
	if (b->info.read_only)
		return bdev_err(-EROFS, "%s: image is open read-only; growing it "
				"needs it open for writing", b->filename);
	if (new_size % BDEV_SECTOR)
		return bdev_err(-EINVAL, "%s: new size %" PRIu64 " is not a "
				"multiple of %u bytes", b->filename, new_size,
				BDEV_SECTOR);
	if (chain_op_begin(b, CHAIN_GROW, "grow") < 0)
		return -EBUSY;
	pthread_rwlock_wrlock(&b->top_lock);
	ret = grow_locked(b, new_size);
	pthread_rwlock_unlock(&b->top_lock);
	chain_op_end(b);
	return ret;
}

/* ---- Whole-image calls, dispatched to the format's op --------------------- */

/* Change the virtual size of the image at path; see blockengine.h. */
int bdev_resize(const char *path, uint64_t new_size, unsigned flags)
{
	struct bdev_open_opts o = { .flags = BDEV_O_RDWR | BDEV_O_NO_BACKING };
	struct bdev *b;
	int ret;

	bdev_err_clear();
	if (!path)
		return bdev_err(-EINVAL, "bdev_resize: no path");
	if (!new_size || new_size % BDEV_SECTOR)
		return bdev_err(-EINVAL, "%s: new size %" PRIu64 " is not a positive "
				"multiple of %u bytes", path, new_size, BDEV_SECTOR);
	/* the exclusive locks keep every other writer and reader out */
	ret = bdev_open(path, &o, &b);
	if (ret < 0)
		return ret;
	if (!b->fmt->resize)
		ret = bdev_err(-ENOTSUP, "%s: images of format %s cannot be "
			       "resized", path, b->fmt->name);
	else
		ret = b->fmt->resize(b, new_size, flags);
	if (ret < 0) {
		char why[1024];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		bdev_close(b);
		return bdev_err(ret, "%s", why);
	}
	return bdev_close(b);
}

/* The driver whose probe claims the file at path (an RBD image: raw), as
   bdev_open would choose it; without opening the image. */
static int bdev_probe_path(const char *path, const struct bdev_format **out)
{
	struct bsrc *src;
	int ret;

	if (bsrc_is_rbd_name(path)) {
		*out = &bdev_format_raw;
		return 0;
	}
	ret = bsrc_open_file(path, false, true, &src);
	if (ret < 0)
		return ret;
	ret = bdev_probe(src, out);
	bsrc_close(src);
	return ret;
}

/* Check the image at path with its format's check; see blockengine.h. */
int bdev_check(const char *path, unsigned repair, struct bdev_check_result *r,
	       void (*report)(void *opaque, const char *line), void *opaque)
{
	const struct bdev_format *fmt = NULL;
	int ret;

	bdev_err_clear();
	if (!path || !r)
		return bdev_err(-EINVAL, "bdev_check: no path or result");
	memset(r, 0, sizeof(*r));
	ret = bdev_probe_path(path, &fmt);
	if (ret < 0)
		return ret;
	if (!fmt->check)
		return bdev_err(-ENOTSUP, "%s: images of format %s cannot be "
				"checked", path, fmt->name);
	return fmt->check(path, repair, r, report, opaque);
}
