/* SPDX-License-Identifier: Apache-2.0 */
/*
 * write_sparse.c - the VMDK driver's write path for hosted sparse ("KDMV",
 * uncompressed) and COWD extents: allocating grains at the end of the
 * extent file, zeroed-grain entries, and the ordered, batched metadata
 * flush that keeps the image consistent across a crash; plus the
 * uncleanShutdown flag and the CID change around a writing session.
 *
 * Crash-safety rules:
 *  - a grain's data is written before its GT entry changes in memory, and a
 *    flush makes the data durable before it writes any GT that points at it;
 *  - a new GT is zeroed on disk before the GD points at it, and GDs are
 *    written only after the GTs of the same flush are durable;
 *  - no allocating write flushes by itself: durability comes in batches at
 *    bdev_flush (a crash may leak grains, never expose stale data).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "vmdk.h"

#define HOSTED_UNCLEAN_OFF 72
#define COWD_FREE_SECTOR_OFF 28
#define COWD_UNCLEAN_OFF 1648

/* Can the write path allocate in e? */
static bool extent_allocates(const struct vmdk_extent *e)
{
	return e->write_init;
}

/* May the write path be set up for e (its files open for writing)? */
static bool extent_can_allocate(const struct vmdk_extent *e)
{
	return e->src && e->src->writable && e->access == BDEV_ACCESS_RW &&
	       !e->rebuilt && !e->used_rgd && !e->mem_gts && e->gd;
}

/* Prepare the write state of an image opened read-write. */
int vmdk_write_setup(struct bdev *b, struct vmdk_image *img)
{
	(void)b;
	pthread_mutex_init(&img->alloc_mu, NULL);
	pthread_cond_init(&img->alloc_cv, NULL);
	pthread_mutex_init(&img->flush_mu, NULL);
	img->write_init = true;
	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		uint8_t hb[512];
		struct vmdk_sparse_hdr h;
		int ret;

		if (!extent_can_allocate(e))
			continue;
		if (e->ops == &vmdk_hosted_ops && e->compressed) {
			ret = vmdk_stream_write_setup(e);
			if (ret < 0)
				return ret;
			continue;
		}
		if (e->ops == &vmdk_hosted_ops && !e->compressed) {
			ret = bsrc_read_full(e->src, hb, sizeof(hb), 0);
			if (ret < 0)
				return ret;
			ret = vmdk_sparse_header_parse(hb, 0, bsrc_length(e->src),
						       e->path, &h);
			if (ret < 0)
				return ret;
			e->gd_off = h.gd_offset * 512;
			e->rgd_off = e->rgd ? h.rgd_offset * 512 : 0;
		} else if (e->ops == &vmdk_cowd_ops) {
			uint32_t v;
			ret = bsrc_read_full(e->src, &v, 4, 20);
			if (ret < 0)
				return ret;
			e->gd_off = (uint64_t)le32toh(v) * 512;
			e->rgd_off = 0;
		} else {
			continue;
		}
		/* QEMU's rule: fresh grains start at the file's end rounded
		   up to a whole grain. */
		atomic_store(&e->next_free, (bsrc_length(e->src) + e->grain_bytes - 1) &
			     ~(e->grain_bytes - 1));
		pthread_mutex_init(&e->gt_alloc_mu, NULL);
		e->write_init = true;
	}
	return 0;
}

/* Release what vmdk_write_setup made. */
void vmdk_write_teardown(struct vmdk_image *img)
{
	if (!img->write_init)
		return;
	for (unsigned i = 0; i < img->n_extents; i++) {
		if (img->extents[i].write_init)
			pthread_mutex_destroy(&img->extents[i].gt_alloc_mu);
		vmdk_stream_write_teardown(&img->extents[i]);
	}
	pthread_mutex_destroy(&img->alloc_mu);
	pthread_cond_destroy(&img->alloc_cv);
	pthread_mutex_destroy(&img->flush_mu);
	img->write_init = false;
}

/* Reserves bytes at the end of e's file; returns their offset. */
static uint64_t reserve(struct vmdk_extent *e, uint64_t bytes)
{
	return atomic_fetch_add(&e->next_free, bytes);
}

/* Makes sure grain table gdi of e exists: a zeroed table (and redundant
   table) written at the end of the file, then published in the directory
   in memory; the directory reaches the disk at the next flush. */
static int ensure_gt(struct vmdk_extent *e, uint32_t gdi)
{
	uint64_t bytes, at;
	uint8_t *zero;
	int ret = 0;

	if (__atomic_load_n(&e->gd[gdi], __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&e->gt_alloc_mu);
	if (__atomic_load_n(&e->gd[gdi], __ATOMIC_ACQUIRE))
		goto out_unlock;
	/* whole grains, so later grains stay grain-aligned in the file */
	bytes = e->gt_bytes * (e->rgd ? 2 : 1);
	bytes = (bytes + e->grain_bytes - 1) & ~(e->grain_bytes - 1);
	at = reserve(e, bytes);
	if (at / 512 > UINT32_MAX - bytes / 512) {
		ret = bdev_err(-EFBIG, "%s: no room for a grain table at offset %"
			       PRIu64 ": sector numbers are 32 bits", e->path, at);
		goto out_unlock;
	}
	zero = calloc(1, bytes);
	if (!zero) {
		ret = -ENOMEM;
		goto out_unlock;
	}
	ret = (int)e->src->ops->pwrite(e->src, zero, bytes, at);
	free(zero);
	if (ret < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		ret = bdev_err(ret, "%s: cannot allocate grain table %" PRIu32
			       ": %s", e->path, gdi, why);
		goto out_unlock;
	}
	ret = 0;
	if (e->rgd)
		__atomic_store_n(&e->rgd[gdi], at + e->gt_bytes, __ATOMIC_RELEASE);
	__atomic_store_n(&e->gd[gdi], at, __ATOMIC_RELEASE);
	__atomic_store_n(&e->gd_dirty, true, __ATOMIC_RELEASE);
out_unlock:
	pthread_mutex_unlock(&e->gt_alloc_mu);
	return ret;
}

static struct vmdk_alloc *alloc_find(struct vmdk_image *img,
				     const struct vmdk_extent *e, uint64_t grain)
{
	for (struct vmdk_alloc *a = img->allocs; a; a = a->next)
		if (a->e == e && a->grain == grain)
			return a;
	return NULL;
}

static void alloc_remove(struct vmdk_image *img, struct vmdk_alloc *a)
{
	pthread_mutex_lock(&img->alloc_mu);
	for (struct vmdk_alloc **pp = &img->allocs; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	pthread_cond_broadcast(&img->alloc_cv);
	pthread_mutex_unlock(&img->alloc_mu);
}

static uint32_t gte_load(const uint8_t *gt, uint32_t gti)
{
	return le32toh(__atomic_load_n((const uint32_t *)(const void *)(gt + (size_t)gti * 4),
				       __ATOMIC_ACQUIRE));
}

static void gte_store(const uint8_t *gt, uint32_t gti, uint32_t v)
{
	/* the cache hands tables out const for readers; the writer owns them */
	__atomic_store_n((uint32_t *)(void *)(uintptr_t)(gt + (size_t)gti * 4),
			 htole32(v), __ATOMIC_RELEASE);
}

/* Writes len bytes of iov at foff of e's file (a grain already allocated). */
static int write_in_place(struct vmdk_extent *e, uint64_t foff,
			  const struct iovec *iov, int iovcnt, uint64_t len)
{
	for (int i = 0; i < iovcnt && len; i++) {
		size_t n = iov[i].iov_len < len ? iov[i].iov_len : (size_t)len;
		ssize_t r = e->src->ops->pwrite(e->src, iov[i].iov_base, n, foff);
		if (r < 0)
			return (int)r;
		foff += n;
		len -= n;
	}
	return 0;
}

/* Allocate (or, if someone else just did, write in place) the grain
   holding off; see struct bdev_format.write_alloc. */
ssize_t vmdk_write_alloc(struct bdev *b, uint64_t off, uint64_t len,
			 const struct iovec *iov, int iovcnt)
{
	struct vmdk_image *img = b->priv;
	struct vmdk_extent *e = vmdk_find_extent(img, off);
	struct vmdk_alloc me;
	struct vmdk_gt_entry *ref;
	const uint8_t *gt;
	uint64_t rel, gb, grain, in, n, foff;
	uint32_t gdi, gti, v;
	uint8_t *buf = NULL;
	int ret;

	if (!e)
		return bdev_err(-EIO, "%s: offset %" PRIu64 " is outside every "
				"extent", b->filename, off);
	if (img->write_init && e->compressed)
		return vmdk_stream_write_alloc(b, e, off, len, iov, iovcnt);
	if (!img->write_init || !extent_allocates(e))
		return bdev_err(-ENOTSUP, "%s: extent %u (%s%s) cannot allocate "
				"grains: %s", b->filename, e->index,
				vmdk_ext_type_name(e->type),
				e->compressed ? ", compressed" : "",
				e->compressed ? "appending to streamOptimized "
				"extents is not supported here" :
				e->used_rgd ? "its primary grain directory is "
				"damaged (repair it with qemu-img check -r all)" :
				"this extent kind is read-only in ovk");
	rel = off - e->start;
	gb = e->grain_bytes;
	grain = rel >> e->grain_shift;
	in = rel & (gb - 1);
	n = gb - in < len ? gb - in : len;
	if (grain / e->gt_entries >= e->gd_entries)
		return bdev_err(-EIO, "%s: offset %" PRIu64 " lies past the "
				"capacity in the header of %s", b->filename, off,
				e->path);
	gdi = (uint32_t)(grain / e->gt_entries);
	gti = (uint32_t)(grain % e->gt_entries);

	ret = ensure_gt(e, gdi);
	if (ret < 0)
		return ret;
	ret = vmdk_gt_cache_get(&img->gtc, b, e, gdi, &gt, &ref);
	if (ret < 0)
		return ret;

	pthread_mutex_lock(&img->alloc_mu);
	while (alloc_find(img, e, grain))
		pthread_cond_wait(&img->alloc_cv, &img->alloc_mu);
	v = gte_load(gt, gti);
	if (v > 1 || (v == 1 && !e->zero_gte)) {
		/* allocated meanwhile: an ordinary overwrite */
		pthread_mutex_unlock(&img->alloc_mu);
		ret = write_in_place(e, (uint64_t)v * 512 + in, iov, iovcnt, n);
		vmdk_gt_cache_put(&img->gtc, ref);
		return ret < 0 ? ret : (ssize_t)n;
	}
	me = (struct vmdk_alloc){ .e = e, .grain = grain, .next = img->allocs };
	img->allocs = &me;
	pthread_mutex_unlock(&img->alloc_mu);

	foff = reserve(e, gb);
	if (foff / 512 > UINT32_MAX - gb / 512) {
		ret = bdev_err(-EFBIG, "%s: no room for grain %" PRIu64 " at offset %"
			       PRIu64 ": sector numbers are 32 bits", e->path,
			       grain, foff);
		goto out;
	}
	if (n == gb && iovcnt >= 1 && iov[0].iov_len >= gb) {
		ret = (int)e->src->ops->pwrite(e->src, iov[0].iov_base, gb, foff);
	} else {
		buf = malloc(gb);
		if (!buf) {
			ret = bdev_err(-ENOMEM, "%s: out of memory", e->path);
			goto out;
		}
		if (n == gb || v == 1) {
			memset(buf, 0, gb);
			ret = 0;
		} else {
			ret = vmdk_fill_from_backing(b, off - in, buf, gb);
		}
		if (ret == 0) {
			vmdk_iov_copy_out(buf + in, iov, iovcnt, n);
			ret = (int)e->src->ops->pwrite(e->src, buf, gb, foff);
		}
	}
	if (ret < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		ret = bdev_err(ret, "%s: cannot allocate a grain for offset %" PRIu64
			       " (grain %" PRIu64 " at file offset %" PRIu64 "): %s",
			       e->path, off, grain, foff, why);
		goto out;
	}
	/* the data is written: now readers may see it */
	gte_store(gt, gti, (uint32_t)(foff / 512));
	vmdk_gt_cache_mark_dirty(&img->gtc, ref);
	ret = (int)0;
out:
	free(buf);
	alloc_remove(img, &me);
	vmdk_gt_cache_put(&img->gtc, ref);
	return ret < 0 ? ret : (ssize_t)n;
}

/* Make whole grains of [off, off + len) read as zeros by table entries;
   see struct bdev_format.zero. */
ssize_t vmdk_zero(struct bdev *b, uint64_t off, uint64_t len, bool discard)
{
	struct vmdk_image *img = b->priv;
	struct vmdk_extent *e = vmdk_find_extent(img, off);
	struct vmdk_gt_entry *ref;
	const uint8_t *gt;
	uint64_t rel, gb, grain, done = 0;
	uint32_t gdi, newval;
	int ret;

	(void)discard;
	if (!e || !img->write_init || !extent_allocates(e))
		return 0;
	rel = off - e->start;
	gb = e->grain_bytes;
	if (rel & (gb - 1))
		return 0;
	if (len > e->size - rel)
		len = e->size - rel;
	/* a last, partial grain of the extent counts as whole */
	if (len < gb && rel + len != e->size)
		return 0;
	if (e->zero_gte)
		newval = 1;
	else if (!b->backing)
		newval = 0; /* unallocated reads as zeros at the bottom */
	else
		return 0;   /* the core writes zeros */
	grain = rel >> e->grain_shift;
	if (grain / e->gt_entries >= e->gd_entries)
		return 0;
	gdi = (uint32_t)(grain / e->gt_entries);
	if (newval == 0 && !__atomic_load_n(&e->gd[gdi], __ATOMIC_ACQUIRE)) {
		/* no table: the whole span is unallocated already */
		uint64_t span_end = ((uint64_t)gdi + 1) * e->gt_entries * gb;
		return (ssize_t)((span_end < rel + len ? span_end : rel + len) - rel);
	}
	ret = ensure_gt(e, gdi);
	if (ret < 0)
		return ret;
	ret = vmdk_gt_cache_get(&img->gtc, b, e, gdi, &gt, &ref);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&img->alloc_mu);
	while (done < len && grain / e->gt_entries == gdi) {
		uint64_t step = gb < len - done ? gb : len - done;
		if (step < gb && rel + done + step != e->size)
			break;
		while (alloc_find(img, e, grain))
			pthread_cond_wait(&img->alloc_cv, &img->alloc_mu);
		gte_store(gt, (uint32_t)(grain % e->gt_entries), newval);
		done += step;
		grain++;
	}
	pthread_mutex_unlock(&img->alloc_mu);
	vmdk_gt_cache_mark_dirty(&img->gtc, ref);
	vmdk_gt_cache_put(&img->gtc, ref);
	return (ssize_t)done;
}

/* fdatasync the writable source of every extent that owns one. */
static int sync_all(struct vmdk_image *img)
{
	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		if (e->owns_src && e->src->writable && e->src->ops->flush) {
			int ret = e->src->ops->flush(e->src);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* Writes the directory gd (n byte offsets) as u32 sectors at at. */
static int write_gd(struct vmdk_extent *e, const uint64_t *gd, uint64_t at)
{
	uint32_t *raw = malloc((size_t)e->gd_entries * 4 + 1);
	ssize_t r;

	if (!raw)
		return -ENOMEM;
	for (uint32_t i = 0; i < e->gd_entries; i++)
		raw[i] = htole32((uint32_t)(gd[i] / 512));
	r = e->src->ops->pwrite(e->src, raw, (size_t)e->gd_entries * 4, at);
	free(raw);
	return r < 0 ? (int)r : 0;
}

/* Make completed writes durable, in the order that keeps the image
   consistent: data, then grain tables, then directories. */
int vmdk_flush(struct bdev *b)
{
	struct vmdk_image *img = b->priv;
	struct vmdk_dirty_gt *dv = NULL;
	uint64_t **gds = NULL;
	size_t nd = 0;
	bool any_gd = false;
	int ret;

	if (!img->write_init)
		return sync_all(img);
	pthread_mutex_lock(&img->flush_mu);
	/* What this flush publishes: tables and directories as they are now;
	   everything they point at was written before this moment. */
	ret = vmdk_gt_cache_take_dirty(&img->gtc, &dv, &nd);
	gds = calloc(img->n_extents, sizeof(*gds));
	if (!gds && !ret)
		ret = -ENOMEM;
	for (unsigned i = 0; gds && i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		if (!e->write_init ||
		    !__atomic_exchange_n(&e->gd_dirty, false, __ATOMIC_ACQ_REL))
			continue;
		/* the directory, then the redundant one */
		gds[i] = malloc((size_t)e->gd_entries * 16 + 1);
		if (!gds[i]) {
			e->gd_dirty = true;
			ret = -ENOMEM;
			continue;
		}
		for (uint32_t j = 0; j < e->gd_entries; j++) {
			gds[i][e->gd_entries + j] = e->rgd ?
				__atomic_load_n(&e->rgd[j], __ATOMIC_ACQUIRE) : 0;
			gds[i][j] = __atomic_load_n(&e->gd[j], __ATOMIC_ACQUIRE);
		}
		any_gd = true;
	}

	int r = sync_all(img);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < nd; i++) {
		struct vmdk_extent *e = dv[i].ext;
		uint64_t at = __atomic_load_n(&e->gd[dv[i].gd_index], __ATOMIC_ACQUIRE);
		ssize_t w = e->src->ops->pwrite(e->src, dv[i].copy, e->gt_bytes, at);
		uint64_t rat = e->rgd ? vmdk_gd_load(e->rgd, dv[i].gd_index) : 0;
		if (w >= 0 && rat)
			w = e->src->ops->pwrite(e->src, dv[i].copy, e->gt_bytes,
						rat);
		if (w < 0) {
			r = (int)w;
			goto fail;
		}
	}
	if (nd) {
		r = sync_all(img);
		if (r < 0)
			goto fail;
	}
	if (any_gd) {
		for (unsigned i = 0; i < img->n_extents; i++) {
			struct vmdk_extent *e = &img->extents[i];
			if (!gds[i])
				continue;
			r = write_gd(e, gds[i], e->gd_off);
			if (r == 0 && e->rgd_off && e->rgd)
				r = write_gd(e, gds[i] + e->gd_entries, e->rgd_off);
			if (r < 0)
				goto fail;
		}
	}
	/* COWD keeps its next free sector in the header */
	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		if (e->write_init && e->ops == &vmdk_cowd_ops && (nd || any_gd)) {
			uint32_t fs = htole32((uint32_t)(atomic_load(&e->next_free) / 512));
			ssize_t w = e->src->ops->pwrite(e->src, &fs, 4, COWD_FREE_SECTOR_OFF);
			if (w < 0) {
				r = (int)w;
				goto fail;
			}
		}
	}
	if (any_gd)
		r = sync_all(img);
	if (r < 0)
		goto fail;
	for (unsigned i = 0; i < img->n_extents; i++) {
		r = vmdk_stream_flush(&img->extents[i]);
		if (r < 0) {
			ret = r;
			break;
		}
	}
	goto out;

fail:
	/* publish again at the next flush */
	for (size_t i = 0; i < nd; i++)
		vmdk_gt_cache_mark_dirty(&img->gtc, dv[i].ref);
	for (unsigned i = 0; gds && i < img->n_extents; i++)
		if (gds[i])
			img->extents[i].gd_dirty = true;
	ret = r;
out:
	for (size_t i = 0; i < nd; i++) {
		vmdk_gt_cache_put(&img->gtc, dv[i].ref);
		free(dv[i].copy);
	}
	free(dv);
	for (unsigned i = 0; gds && i < img->n_extents; i++)
		free(gds[i]);
	free(gds);
	pthread_mutex_unlock(&img->flush_mu);
	return ret;
}

/* Sets or clears uncleanShutdown in the header of every allocating extent,
   durably. */
static int set_unclean(struct vmdk_image *img, bool on)
{
	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		ssize_t w;

		if (!e->write_init && !e->stream_w)
			continue;
		if (e->ops == &vmdk_cowd_ops) {
			uint32_t v = htole32(on ? 1 : 0);
			w = e->src->ops->pwrite(e->src, &v, 4, COWD_UNCLEAN_OFF);
		} else {
			uint8_t v = on ? 1 : 0;
			w = e->src->ops->pwrite(e->src, &v, 1, HOSTED_UNCLEAN_OFF);
		}
		if (w < 0)
			return (int)w;
		/* bdev_get_extent reads it on any thread */
		__atomic_store_n(&e->unclean, on, __ATOMIC_RELAXED);
	}
	return sync_all(img);
}

/*
 * text (len bytes, maybe NUL padded) with the value of its "CID=" line
 * replaced by cid: a malloc'd string in *out. -ENOENT if there is none.
 */
static int desc_set_cid(const char *text, size_t len, uint32_t cid, char **out)
{
	size_t tl = strnlen(text, len), pos = 0;

	while (pos < tl) {
		size_t eol = pos;
		size_t p = pos;
		while (eol < tl && text[eol] != '\n')
			eol++;
		while (p < eol && (text[p] == ' ' || text[p] == '\t'))
			p++;
		if (eol - p >= 4 && strncmp(text + p, "CID", 3) == 0) {
			size_t q = p + 3;
			while (q < eol && (text[q] == ' ' || text[q] == '\t'))
				q++;
			if (q < eol && text[q] == '=') {
				size_t vend = q + 1;
				char val[16];
				char *s;
				while (vend < eol && text[vend] != '\r' &&
				       text[vend] != '#')
					vend++;
				snprintf(val, sizeof(val), "%08" PRIx32, cid);
				s = malloc(tl + 16);
				if (!s)
					return -ENOMEM;
				memcpy(s, text, q + 1);
				memcpy(s + q + 1, val, 8);
				memcpy(s + q + 9, text + vend, tl - vend);
				s[q + 9 + tl - vend] = '\0';
				*out = s;
				return 0;
			}
		}
		pos = eol + 1;
	}
	return -ENOENT;
}

/* A fresh random CID, never the "no CID" values nor old. */
static uint32_t new_cid(uint32_t old)
{
	uint32_t c;

	do {
		if (getrandom(&c, sizeof(c), 0) != sizeof(c))
			c = (uint32_t)rand() ^ (uint32_t)getpid();
	} while (c == 0xffffffffu || c == 0xfffffffeu || c == old);
	return c;
}

/* Rewrites the descriptor embedded in e's file in place. */
static int write_embedded_cid(struct bdev *b, struct vmdk_extent *e, uint32_t cid)
{
	uint8_t hb[512];
	struct vmdk_sparse_hdr h;
	uint64_t size;
	char *text = NULL, *nt = NULL;
	int ret;

	ret = bsrc_read_full(e->src, hb, sizeof(hb), 0);
	if (ret < 0)
		return ret;
	ret = vmdk_sparse_header_parse(hb, 0, bsrc_length(e->src), e->path, &h);
	if (ret < 0)
		return ret;
	if (!h.desc_offset || !h.desc_size)
		return 0;
	size = h.desc_size * 512;
	text = calloc(1, size + 1);
	if (!text)
		return -ENOMEM;
	ret = bsrc_read_full(e->src, text, size, h.desc_offset * 512);
	if (ret == 0)
		ret = desc_set_cid(text, size, cid, &nt);
	if (ret == -ENOENT) {
		ret = 0; /* no CID line: nothing to change */
		goto out;
	}
	if (ret < 0)
		goto out;
	if (strlen(nt) > size) {
		ret = bdev_err(-ENOSPC, "%s: the new CID does not fit in the "
			       "embedded descriptor (%" PRIu64 " bytes)",
			       b->filename, size);
		goto out;
	}
	memset(text, 0, size);
	memcpy(text, nt, strlen(nt));
	ret = (int)e->src->ops->pwrite(e->src, text, size, h.desc_offset * 512);
	if (ret > 0)
		ret = 0;
out:
	free(text);
	free(nt);
	return ret;
}

/* Rewrites the descriptor file path with a new CID (crash-safely, see
   vmdk_replace_file). */
static int write_desc_file_cid(const char *path, uint32_t cid)
{
	char *text = NULL, *nt = NULL;
	size_t len = 0;
	int ret;

	ret = vmdk_desc_read_file(path, &text, &len);
	if (ret < 0)
		return ret;
	ret = desc_set_cid(text, len, cid, &nt);
	if (ret == -ENOENT)
		ret = 0;
	else if (ret == 0)
		ret = vmdk_replace_file(path, nt);
	free(text);
	free(nt);
	return ret;
}

/* Before the first write: uncleanShutdown on, then a new CID; both durable.
   See struct bdev_format.begin_write. */
int vmdk_begin_write(struct bdev *b)
{
	struct vmdk_image *img = b->priv;
	uint32_t cid;
	int ret;

	if (!img->write_init)
		return 0;
	ret = set_unclean(img, true);
	if (ret < 0)
		return ret;
	/* on an offload thread, while others may copy b->info */
	pthread_mutex_lock(&b->info_lock);
	b->info.unclean = true;
	pthread_mutex_unlock(&b->info_lock);
	if (!img->desc_parsed || !img->desc.has_cid)
		return 0;
	cid = new_cid(img->desc.cid);
	if (img->n_extents == 1 && img->extents[0].ops == &vmdk_hosted_ops &&
	    b->filename && img->extents[0].path &&
	    strcmp(img->extents[0].path, b->filename) == 0)
		ret = write_embedded_cid(b, &img->extents[0], cid);
	else
		ret = write_desc_file_cid(b->filename, cid);
	if (ret == 0)
		ret = sync_all(img);
	if (ret < 0)
		return ret;
	img->desc.cid = cid;
	pthread_mutex_lock(&b->info_lock);
	b->info.cid = cid;
	pthread_mutex_unlock(&b->info_lock);
	return 0;
}

/* After the last flush of a writing session: uncleanShutdown off. */
int vmdk_finish(struct bdev *b)
{
	struct vmdk_image *img = b->priv;
	int ret;

	if (!img->write_init)
		return 0;
	ret = set_unclean(img, false);
	if (ret == 0) {
		pthread_mutex_lock(&b->info_lock);
		b->info.unclean = false;
		pthread_mutex_unlock(&b->info_lock);
	}
	return ret;
}

/* Flush and finish b (the old top a snapshot froze), then turn its files
   read-only so other processes may open it with shared locks. */
int vmdk_freeze_layer(struct bdev *b)
{
	struct vmdk_image *img = b->priv;
	int ret = vmdk_flush(b);

	if (ret == 0 && atomic_load(&b->write_begun))
		ret = vmdk_finish(b);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&b->info_lock);
	b->info.read_only = true;
	pthread_mutex_unlock(&b->info_lock);
	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		if (e->owns_src && e->src->writable) {
			ret = bsrc_make_read_only(e->src);
			if (ret < 0)
				return ret;
		}
		e->write_init = false;
	}
	return 0;
}

/* See internal.h. Only a layer that was set up for writing and frozen by
   a snapshot of this process comes back (its allocation state is kept). */
int vmdk_thaw_layer(struct bdev *b)
{
	struct vmdk_image *img = b->priv;
	int ret;

	if (!img->write_init)
		return bdev_err(-ENOTSUP, "%s: was not opened for writing; "
				"commit into it with vmdk commit", b->filename);
	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		if (e->compressed || e->stream_w)
			return bdev_err(-ENOTSUP, "%s: a stream-optimized extent "
					"%s cannot take a commit", b->filename,
					e->path ? e->path : "");
		if (e->owns_src && e->src && !e->src->writable) {
			ret = bsrc_make_writable(e->src);
			if (ret < 0)
				return ret;
		}
	}
	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		if (extent_can_allocate(e) && (e->ops == &vmdk_hosted_ops ||
					       e->ops == &vmdk_cowd_ops))
			e->write_init = true;
	}
	ret = set_unclean(img, true);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&b->info_lock);
	b->info.unclean = true;
	b->info.read_only = false;
	pthread_mutex_unlock(&b->info_lock);
	return 0;
}
