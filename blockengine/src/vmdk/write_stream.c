/* SPDX-License-Identifier: Apache-2.0 */
/*
 * write_stream.c - writing streamOptimized extents opened read-write
 * through the engine (vmdkfs -o rw, `vmdk bench -w`).
 *
 * What QEMU allows, and more: a grain not written yet may be written once,
 * in any order; QEMU takes whole grains only, we also take part of a grain
 * and fill the rest from the parent layer (or zeros). A grain already
 * written is refused with -ENOTSUP: the format has one record per grain.
 *
 * Layout kept: grain records are appended after the last record; every
 * table lives in memory (mem_gts). A flush writes, after the last grain,
 * the tail a stream ends with: GD at the end (VMware's and our writer's
 * shape) gets GT markers + every used GT, a GD marker + GD, a footer
 * marker, the footer and EOS; GD in front (QEMU's shape) gets its tables
 * rewritten in place and just footer marker, footer, EOS at the end.
 *
 * Crash safety: before the first grain after a tail goes to disk, the tail
 * is cut off the file durably, so no footer ever points at tables that a
 * grain has overwritten. A crash between flushes leaves a stream without a
 * footer: our reader rebuilds its map from the grain records (holes read as
 * EOS), qemu refuses it; uncleanShutdown stays set.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

#define REC_HEAD 12u
#define STREAM_DEFLATE_LEVEL 6

static uint32_t gte_get(const uint32_t *gt, uint32_t i)
{
	return le32toh(__atomic_load_n(&gt[i], __ATOMIC_ACQUIRE));
}

/* The table gdi of e in memory, or NULL when it has none. */
static uint32_t *table(struct vmdk_extent *e, uint32_t gdi)
{
	return __atomic_load_n(&e->mem_gts[gdi], __ATOMIC_ACQUIRE);
}

/* Where e's grain records end: after the record the highest entry points
   at, or at overhead when there is none. */
int vmdk_stream_records_end(struct vmdk_extent *e, uint64_t overhead,
			    uint64_t *end)
{
	uint64_t vmax = 0;
	uint8_t sec[512];
	struct vmdk_marker mk;
	int ret;

	for (uint32_t t = 0; t < e->gd_entries; t++) {
		const uint32_t *gt = e->mem_gts[t];
		for (uint32_t i = 0; gt && i < e->gt_entries; i++) {
			uint32_t v = le32toh(gt[i]);
			if (v > 1 && v > vmax)
				vmax = v;
		}
	}
	*end = overhead * 512;
	if (!vmax)
		return 0;
	ret = bsrc_read_full(e->src, sec, sizeof(sec), vmax * 512);
	if (ret < 0)
		return ret;
	vmdk_marker_decode(sec, &mk);
	if (mk.size == 0 || mk.size > vmdk_stream_record_bound(e->grain_bytes))
		return bdev_err(-EINVAL, "%s: the last grain record (sector %" PRIu64
				") has size %" PRIu32 ", expected 1..%" PRIu64
				"; cannot append to this stream", e->path, vmax,
				mk.size, vmdk_stream_record_bound(e->grain_bytes));
	if (vmax * 512 + 512 > *end)
		*end = vmax * 512 + ((REC_HEAD + (uint64_t)mk.size + 511) & ~UINT64_C(511));
	return 0;
}

/* Load every table into memory and find where new grains go. */
int vmdk_stream_write_setup(struct vmdk_extent *e)
{
	struct vmdk_sparse_hdr h;
	uint64_t end;
	int ret;

	if (!e->markers)
		return 0; /* refused at the first write, with the reason */
	ret = bsrc_read_full(e->src, e->stream_hdr, 512, 0);
	if (ret < 0)
		return ret;
	ret = vmdk_sparse_header_parse(e->stream_hdr, 0, bsrc_length(e->src), e->path, &h);
	if (ret < 0)
		return ret;
	e->stream_gd_at_end = h.gd_offset == VMDK4_GD_AT_END;
	e->mem_gts = calloc(e->gd_entries ? e->gd_entries : 1, sizeof(*e->mem_gts));
	e->stream_gt_dirty = calloc(e->gd_entries ? e->gd_entries : 1, 1);
	if (!e->mem_gts || !e->stream_gt_dirty)
		return -ENOMEM;
	for (uint32_t t = 0; t < e->gd_entries; t++) {
		if (!e->gd[t])
			continue;
		e->mem_gts[t] = malloc(e->gt_bytes);
		if (!e->mem_gts[t])
			return -ENOMEM;
		ret = bsrc_read_full(e->src, e->mem_gts[t], e->gt_bytes, e->gd[t]);
		if (ret < 0)
			return ret;
	}
	ret = vmdk_stream_records_end(e, h.overhead, &end);
	if (ret < 0)
		return ret;
	if (!e->stream_gd_at_end) {
		/* the tables in front stay where they are */
		uint64_t gdb = (uint64_t)e->gd_entries * 4;
		if (h.gd_offset * 512 + gdb > end)
			end = h.gd_offset * 512 + gdb;
		if (e->rgd && h.rgd_offset * 512 + gdb > end)
			end = h.rgd_offset * 512 + gdb;
		for (uint32_t t = 0; t < e->gd_entries; t++) {
			if (e->gd[t] + e->gt_bytes > end)
				end = e->gd[t] + e->gt_bytes;
			if (e->rgd && e->rgd[t] && e->rgd[t] + e->gt_bytes > end)
				end = e->rgd[t] + e->gt_bytes;
		}
		e->gd_off = h.gd_offset * 512;
		e->rgd_off = e->rgd ? h.rgd_offset * 512 : 0;
	}
	end = (end + 511) & ~UINT64_C(511);
	atomic_store(&e->next_free, end);
	e->stream_tail_present = bsrc_length(e->src) > end;
	e->stream_need_tail = false;
	pthread_mutex_init(&e->stream_mu, NULL);
	e->stream_w = true;
	return 0;
}

void vmdk_stream_write_teardown(struct vmdk_extent *e)
{
	if (!e->stream_w)
		return;
	pthread_mutex_destroy(&e->stream_mu);
	free(e->stream_gt_dirty);
	e->stream_gt_dirty = NULL;
	e->stream_w = false;
}

/*
 * Reserves total bytes for a record after the last one (cutting the tail
 * off durably first if it is still there); returns their offset in *at.
 */
static int reserve_record(struct vmdk_extent *e, uint64_t total, uint64_t *at)
{
	int ret = 0;

	pthread_mutex_lock(&e->stream_mu);
	if (e->stream_tail_present) {
		uint64_t cut = atomic_load(&e->next_free);
		ret = e->src->ops->truncate(e->src, cut);
		if (ret == 0 && e->src->ops->flush)
			ret = e->src->ops->flush(e->src);
		if (ret < 0)
			goto out;
		e->stream_tail_present = false;
		e->stream_need_tail = true;
	}
	*at = atomic_fetch_add(&e->next_free, total);
	if ((*at + total) / 512 > UINT32_MAX) {
		ret = bdev_err(-EFBIG, "%s: no room for a grain record at offset %"
			       PRIu64 ": sector numbers are 32 bits", e->path, *at);
		atomic_fetch_sub(&e->next_free, total);
	}
out:
	pthread_mutex_unlock(&e->stream_mu);
	return ret;
}

/* Points GTE grain of e at sector (making its table), under stream_mu. */
static int publish(struct vmdk_extent *e, uint64_t grain, uint32_t sector)
{
	uint32_t gdi = (uint32_t)(grain / e->gt_entries);
	uint32_t *gt;

	pthread_mutex_lock(&e->stream_mu);
	gt = table(e, gdi);
	if (!gt) {
		gt = calloc(e->gt_entries, 4);
		if (!gt) {
			pthread_mutex_unlock(&e->stream_mu);
			return -ENOMEM;
		}
		__atomic_store_n(&e->mem_gts[gdi], gt, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&gt[grain % e->gt_entries], htole32(sector), __ATOMIC_RELEASE);
	e->stream_gt_dirty[gdi] = 1;
	e->stream_need_tail = true;
	pthread_mutex_unlock(&e->stream_mu);
	return 0;
}

static bool in_flight(struct vmdk_image *img, const struct vmdk_extent *e,
		      uint64_t grain)
{
	for (struct vmdk_alloc *a = img->allocs; a; a = a->next)
		if (a->e == e && a->grain == grain)
			return true;
	return false;
}

/* Write the grain holding off as a new compressed record; see
   struct bdev_format.write_alloc. */
ssize_t vmdk_stream_write_alloc(struct bdev *b, struct vmdk_extent *e,
				uint64_t off, uint64_t len,
				const struct iovec *iov, int iovcnt)
{
	struct vmdk_image *img = b->priv;
	struct vmdk_alloc me;
	const uint64_t gb = e->grain_bytes;
	uint64_t rel = off - e->start, grain = rel >> e->grain_shift;
	uint64_t in = rel & (gb - 1), n = gb - in < len ? gb - in : len;
	uint64_t gstart = rel - in, vbytes = e->size - gstart, at = 0, total;
	size_t cap = (size_t)vmdk_stream_record_bound(gb), z;
	uint32_t gdi = (uint32_t)(grain / e->gt_entries), v = 0;
	uint8_t *buf = NULL, *rec = NULL;
	const uint32_t *gt;
	int ret;

	if (!e->stream_w)
		return bdev_err(-ENOTSUP, "%s: streamOptimized extent %s cannot be "
				"written: %s", b->filename, e->path,
				e->rebuilt ? "it has no footer (its map was rebuilt by "
				"scanning the grains); convert it to a new image" :
				e->used_rgd ? "its grain directory is damaged" :
				!e->markers ? "it has no grain markers" :
				"it is not open for writing");
	if (vbytes > gb)
		vbytes = gb;
	if (gdi >= e->gd_entries)
		return bdev_err(-EIO, "%s: offset %" PRIu64 " lies past the capacity "
				"in the header of %s", b->filename, off, e->path);
	/* n is cut at the end of the extent's virtual bytes */
	if (in + n > vbytes)
		n = vbytes - in;

	pthread_mutex_lock(&img->alloc_mu);
	while (in_flight(img, e, grain))
		pthread_cond_wait(&img->alloc_cv, &img->alloc_mu);
	gt = table(e, gdi);
	if (gt)
		v = gte_get(gt, (uint32_t)(grain % e->gt_entries));
	if (v > 1 || (v == 1 && !e->zero_gte)) {
		pthread_mutex_unlock(&img->alloc_mu);
		return bdev_err(-ENOTSUP, "%s: grain %" PRIu64 " (offset %" PRIu64
				") of streamOptimized extent %s is already written; "
				"a stream holds one compressed record per grain, so "
				"only grains never written can be written (convert to "
				"monolithicSparse to modify it)", b->filename, grain,
				e->start + gstart, e->path);
	}
	me = (struct vmdk_alloc){ .e = e, .grain = grain, .next = img->allocs };
	img->allocs = &me;
	pthread_mutex_unlock(&img->alloc_mu);

	buf = malloc(gb);
	rec = malloc(cap);
	if (!buf || !rec) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", e->path);
		goto out;
	}
	if (n == vbytes || v == 1) {
		memset(buf, 0, gb);
	} else {
		ret = vmdk_fill_from_backing(b, e->start + gstart, buf, gb);
		if (ret < 0)
			goto out;
		if (vbytes < gb)
			memset(buf + vbytes, 0, gb - vbytes);
	}
	vmdk_iov_copy_out(buf + in, iov, iovcnt, n);
	z = vmdk_grain_deflate(STREAM_DEFLATE_LEVEL, buf, gb, rec + REC_HEAD,
			       cap - REC_HEAD);
	if (!z) {
		ret = bdev_err(-ENOMEM, "%s: grain %" PRIu64 " could not be "
			       "compressed (out of memory)", e->path, grain);
		goto out;
	}
	vmdk_put64(rec, gstart / 512);
	vmdk_put32(rec + 8, (uint32_t)z);
	total = (REC_HEAD + z + 511) & ~(size_t)511;
	memset(rec + REC_HEAD + z, 0, total - REC_HEAD - z);
	ret = reserve_record(e, total, &at);
	if (ret == 0) {
		ssize_t w = e->src->ops->pwrite(e->src, rec, total, at);
		ret = w < 0 ? (int)w : 0;
	}
	if (ret < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		ret = bdev_err(ret, "%s: cannot append grain %" PRIu64 " to %s: %s",
			       b->filename, grain, e->path, why);
		goto out;
	}
	/* the record is written: now readers may see it */
	ret = publish(e, grain, (uint32_t)(at / 512));
out:
	free(buf);
	free(rec);
	pthread_mutex_lock(&img->alloc_mu);
	for (struct vmdk_alloc **pp = &img->allocs; *pp; pp = &(*pp)->next)
		if (*pp == &me) {
			*pp = me.next;
			break;
		}
	pthread_cond_broadcast(&img->alloc_cv);
	pthread_mutex_unlock(&img->alloc_mu);
	return ret < 0 ? ret : (ssize_t)n;
}

static int sync_src(struct vmdk_extent *e)
{
	return e->src->ops->flush ? e->src->ops->flush(e->src) : 0;
}

static int pwrite_all(struct vmdk_extent *e, const void *buf, size_t len,
		      uint64_t at)
{
	ssize_t w = e->src->ops->pwrite(e->src, buf, len, at);

	return w < 0 ? (int)w : 0;
}

/* GD in front: dirty tables in place (new ones appended after the grains
   with a GT marker), the directories in place; data first. */
static int flush_front_tables(struct vmdk_extent *e, uint64_t *pos)
{
	uint64_t gt_sec = e->gt_bytes / 512;
	uint32_t n = e->gd_entries;
	uint8_t *buf = malloc(512 + e->gt_bytes);
	uint32_t *raw = malloc((size_t)n * 4 + 4);
	bool new_gt = false;
	int ret = 0;

	if (!buf || !raw) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t t = 0; ret == 0 && t < n; t++) {
		if (!e->stream_gt_dirty[t])
			continue;
		e->stream_gt_dirty[t] = 0;
		vmdk_marker_encode(buf, gt_sec, VMDK_MARKER_GT);
		memcpy(buf + 512, e->mem_gts[t], e->gt_bytes);
		if (!e->gd[t]) {
			/* a table the directory has no place for yet */
			ret = pwrite_all(e, buf, 512 + e->gt_bytes, *pos);
			e->gd[t] = *pos + 512;
			*pos += 512 + e->gt_bytes;
			if (ret == 0 && e->rgd) {
				ret = pwrite_all(e, buf, 512 + e->gt_bytes, *pos);
				e->rgd[t] = *pos + 512;
				*pos += 512 + e->gt_bytes;
			}
			new_gt = true;
			continue;
		}
		ret = pwrite_all(e, buf + 512, e->gt_bytes, e->gd[t]);
		if (ret == 0 && e->rgd && e->rgd[t])
			ret = pwrite_all(e, buf + 512, e->gt_bytes, e->rgd[t]);
	}
	if (ret == 0 && new_gt) {
		ret = sync_src(e);
		for (uint32_t t = 0; t < n; t++)
			raw[t] = htole32((uint32_t)(e->gd[t] / 512));
		if (ret == 0)
			ret = pwrite_all(e, raw, (size_t)n * 4, e->gd_off);
		for (uint32_t t = 0; e->rgd && t < n; t++)
			raw[t] = htole32((uint32_t)(e->rgd[t] / 512));
		if (ret == 0 && e->rgd && e->rgd_off)
			ret = pwrite_all(e, raw, (size_t)n * 4, e->rgd_off);
	}
out:
	free(buf);
	free(raw);
	return ret;
}

/*
 * Make e's completed grain writes durable and write the tail that makes
 * the file a complete stream again (see the top of this file). Called
 * under the image's flush lock.
 */
int vmdk_stream_flush(struct vmdk_extent *e)
{
	uint64_t gt_sec = e->gt_bytes / 512;
	uint64_t gd_sec = ((uint64_t)e->gd_entries * 4 + 511) / 512;
	uint64_t used = 0, total, pos, gd_sector = 0;
	uint8_t *buf = NULL, *p;
	int ret;

	if (!e->stream_w)
		return 0;
	pthread_mutex_lock(&e->stream_mu);
	if (!e->stream_need_tail) {
		pthread_mutex_unlock(&e->stream_mu);
		return 0;
	}
	if (e->stream_tail_present) {
		/* a grain reserved before the last tail was published after
		   it: cut that tail off first, as an append would */
		ret = e->src->ops->truncate(e->src, atomic_load(&e->next_free));
		if (ret < 0)
			goto out;
		e->stream_tail_present = false;
	}
	/* every entry published so far points at a completed record */
	ret = sync_src(e);
	if (ret < 0)
		goto out;
	pos = atomic_load(&e->next_free);
	if (!e->stream_gd_at_end) {
		ret = flush_front_tables(e, &pos);
		if (ret < 0)
			goto out;
		atomic_store(&e->next_free, pos);
	}
	for (uint32_t t = 0; e->stream_gd_at_end && t < e->gd_entries; t++)
		used += e->mem_gts[t] != NULL;
	total = e->stream_gd_at_end ? (used * (1 + gt_sec) + 1 + gd_sec + 3) * 512 :
		3 * 512;
	buf = calloc(1, total);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	p = buf;
	if (e->stream_gd_at_end) {
		uint8_t *gd = buf + used * (1 + gt_sec) * 512 + 512;
		gd_sector = pos / 512 + used * (1 + gt_sec) + 1;
		for (uint32_t t = 0; t < e->gd_entries; t++) {
			if (!e->mem_gts[t])
				continue;
			vmdk_marker_encode(p, gt_sec, VMDK_MARKER_GT);
			memcpy(p + 512, e->mem_gts[t], e->gt_bytes);
			vmdk_put32(gd + t * 4, (uint32_t)((pos + (uint64_t)(p - buf)) / 512 + 1));
			p += (1 + gt_sec) * 512;
		}
		vmdk_marker_encode(p, gd_sec, VMDK_MARKER_GD);
		p += (1 + gd_sec) * 512;
	} else {
		gd_sector = e->gd_off / 512;
	}
	vmdk_marker_encode(p, 1, VMDK_MARKER_FOOTER);
	memcpy(p + 512, e->stream_hdr, 512);
	vmdk_put64(p + 512 + 56, gd_sector);
	p[512 + 72] = 0; /* the footer describes a clean stream */
	vmdk_marker_encode(p + 1024, 0, VMDK_MARKER_EOS);
	ret = pwrite_all(e, buf, total, pos);
	if (ret == 0)
		ret = sync_src(e);
	if (ret < 0)
		goto out;
	e->stream_tail_present = true;
	e->stream_need_tail = false;
out:
	pthread_mutex_unlock(&e->stream_mu);
	free(buf);
	return ret;
}
