/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grow.c - the VMDK driver's grow op: a larger virtual size for an image
 * that is open and in use (bdev_grow). The core calls it holding the top
 * lock exclusively, so no request maps, allocates or flushes meanwhile:
 * the tables in memory change in one step and every request sees the old
 * size or the new one.
 *
 * What grows (the last extent; vmdk/resize.c does the same closed, with
 * more room):
 *  - hosted sparse (monolithicSparse, twoGbMaxExtentSparse up to 2047 MiB
 *    in the last extent): only while the grain directory's sectors have
 *    spare slots for the new tables (-ENOSPC saying how far otherwise).
 *    Zeroed grain tables (and redundant ones) are appended and synced,
 *    their entries written into the spare slots (read by no one while the
 *    header's capacity does not reach them) and synced, then the header's
 *    capacity (one sector: the step that makes the growth take effect for
 *    this engine and for QEMU), then the descriptor's extent line;
 *  - FLAT and VMFS (monolithicFlat, vmfs, twoGbMaxExtentFlat up to 2047
 *    MiB in the last extent): the extent file is extended and synced, then
 *    the descriptor file replaced (vmdk_replace_file).
 * A crash leaves the old size, or the new one with a descriptor that still
 * says the old one (a warning of bdev_check, taken by a rerun), and at
 * worst leaked sectors at the end of the file.
 *
 * A delta grows like any other sparse image and then is larger than its
 * parent: as with QEMU, what lies past the parent's end reads as zeros
 * (the core's reads, fills of new grains and block status stop at each
 * layer's size), and a commit grows the parent first.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmdk.h"

#define TWOGB_EXTENT_BYTES (UINT64_C(4192256) * 512)

/*
 * Tests only: with OVK_TEST_GROW_CRASH=N in the environment the process
 * dies (exit status 86, no cleanup) after the Nth durable step, as a crash
 * there would leave the files.
 */
static void crash_point(void)
{
	static unsigned count;
	const char *v = getenv("OVK_TEST_GROW_CRASH");

	if (v && strtoul(v, NULL, 10) == ++count)
		_exit(86);
}

/* Writes the embedded descriptor of e's file with its extent line saying
   sectors: only the sectors whose bytes change (one, for a descriptor
   under 512 bytes as qemu-img and ovk write them), then synced. When
   check_only, only says whether the new text fits. */
static int embedded_desc_resize(struct vmdk_extent *e, uint64_t sectors,
				bool check_only)
{
	uint8_t hb[512];
	struct vmdk_sparse_hdr h;
	char *text = NULL, *nt = NULL, *out = NULL;
	size_t size;
	int ret;

	ret = bsrc_read_full(e->src, hb, sizeof(hb), 0);
	if (ret == 0)
		ret = vmdk_sparse_header_parse(hb, 0, bsrc_length(e->src), e->path, &h);
	if (ret < 0 || !h.desc_offset || !h.desc_size)
		return ret;
	size = (size_t)h.desc_size * 512;
	text = calloc(1, size + 1);
	out = calloc(1, size + 1);
	if (!text || !out) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", e->path);
		goto out;
	}
	ret = bsrc_read_full(e->src, text, size, h.desc_offset * 512);
	if (ret < 0)
		goto out;
	ret = vmdk_desc_resize(text, size, sectors, NULL, &nt);
	if (ret == -ENOENT) {
		ret = 0; /* no extent line: nothing names the size */
		goto out;
	}
	if (ret < 0) {
		ret = bdev_err(ret, "%s: out of memory", e->path);
		goto out;
	}
	if (strlen(nt) >= size) {
		ret = bdev_err(-ENOSPC, "%s: the embedded descriptor with the new "
			       "extent size does not fit in its %zu bytes at sector %"
			       PRIu64, e->path, size, h.desc_offset);
		goto out;
	}
	if (check_only)
		goto out;
	memcpy(out, nt, strlen(nt));
	for (size_t s = 0; s < size && ret == 0; s += 512) {
		ssize_t w;

		if (!memcmp(out + s, text + s, 512))
			continue;
		w = e->src->ops->pwrite(e->src, out + s, 512,
					h.desc_offset * 512 + s);
		ret = w < 0 ? (int)w : 0;
	}
	if (ret == 0 && e->src->ops->flush)
		ret = e->src->ops->flush(e->src);
	if (ret == 0)
		crash_point();
out:
	free(text);
	free(out);
	free(nt);
	return ret;
}

/* Replaces the descriptor file path by one whose last extent line says
   sectors (crash-safely, see vmdk_replace_file). When check_only, only
   reads and edits it. */
static int desc_file_resize(const char *path, uint64_t sectors, bool check_only)
{
	char *text = NULL, *nt = NULL;
	size_t len = 0;
	int ret;

	ret = vmdk_desc_read_file(path, &text, &len);
	if (ret < 0)
		return ret;
	ret = vmdk_desc_resize(text, len, sectors, NULL, &nt);
	if (ret == -ENOENT)
		ret = bdev_err(-EINVAL, "%s: no extent line found to resize", path);
	else if (ret < 0)
		ret = bdev_err(ret, "%s: out of memory", path);
	else if (!check_only)
		ret = vmdk_replace_file(path, nt);
	if (ret == 0 && !check_only)
		crash_point();
	free(text);
	free(nt);
	return ret;
}

/* The descriptor of b, embedded in e's file or b's own file, rewritten
   (or, when check_only, checked) with e's extent line at sectors. */
static int desc_resize_any(struct bdev *b, struct vmdk_extent *e,
			   uint64_t sectors, bool check_only)
{
	if (e->ops == &vmdk_hosted_ops && e->path && b->filename &&
	    !strcmp(e->path, b->filename))
		return embedded_desc_resize(e, sectors, check_only);
	return desc_file_resize(b->filename, sectors, check_only);
}

/* Grows the last extent e (hosted sparse) to new_sec sectors. */
static int grow_sparse(struct bdev *b, struct vmdk_extent *e, uint64_t new_sec)
{
	uint64_t span = (uint64_t)e->gt_entries * e->grain_bytes;
	uint32_t old_n = e->gd_entries;
	uint64_t room = ((uint64_t)old_n * 4 + 511) / 512 * 512 / 4;
	uint64_t new_n = (new_sec * 512 + span - 1) / span, add, copies, bytes;
	uint64_t at = 0, *gd = NULL, *rgd = NULL;
	uint8_t hb[512], *buf = NULL;
	int ret;

	if (!e->write_init || !e->gd)
		return bdev_err(-ENOTSUP, "%s: extent %u cannot be written (a "
				"damaged or rebuilt directory): it cannot grow",
				b->filename, e->index);
	if (new_n > room)
		return bdev_err(-ENOSPC, "%s: the grain directory of %s has room "
				"for %" PRIu64 " grain tables, so the open disk can "
				"grow to at most %" PRIu64 " bytes (asked: %" PRIu64
				"); close it and use bdev_resize (vmdk resize), "
				"which moves the directory", b->filename, e->path,
				room, e->start + room * span,
				e->start + new_sec * 512);
	ret = desc_resize_any(b, e, new_sec, true);
	if (ret < 0)
		return ret;
	add = new_n > old_n ? new_n - old_n : 0;
	copies = e->rgd ? 2 : 1;
	gd = calloc(new_n + 1, sizeof(*gd));
	rgd = e->rgd ? calloc(new_n + 1, sizeof(*rgd)) : NULL;
	bytes = (add * copies * e->gt_bytes + e->grain_bytes - 1) &
		~(e->grain_bytes - 1);
	buf = calloc(1, bytes > 512 ? bytes : 512);
	if (!gd || (e->rgd && !rgd) || !buf) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", b->filename);
		goto out;
	}
	memcpy(gd, e->gd, old_n * sizeof(*gd));
	if (rgd)
		memcpy(rgd, e->rgd, old_n * sizeof(*rgd));
	if (add) {
		/* zeroed tables at the end, where grains are allocated:
		   GTs, then RGTs, whole grains */
		at = atomic_fetch_add(&e->next_free, bytes);
		if ((at + bytes) / 512 > UINT32_MAX) {
			ret = bdev_err(-EFBIG, "%s: new grain tables at offset %"
				       PRIu64 " would lie past sector 2^32, the "
				       "limit of a sparse extent", e->path, at);
			goto out;
		}
		ssize_t w = e->src->ops->pwrite(e->src, buf, bytes, at);
		ret = w < 0 ? (int)w : 0;
		if (ret == 0)
			ret = e->src->ops->flush(e->src);
		if (ret < 0)
			goto out;
		crash_point();
		/* their entries, into the directories' spare slots */
		for (uint64_t c = 0; c < copies; c++) {
			uint64_t *dir = c ? rgd : gd;
			uint64_t dir_off = c ? e->rgd_off : e->gd_off;

			for (uint64_t i = 0; i < add; i++) {
				dir[old_n + i] = at + (c * add + i) * e->gt_bytes;
				vmdk_put32(buf + i * 4,
					   (uint32_t)(dir[old_n + i] / 512));
			}
			w = e->src->ops->pwrite(e->src, buf, add * 4,
						dir_off + (uint64_t)old_n * 4);
			ret = w < 0 ? (int)w : 0;
			if (ret < 0)
				goto out;
		}
		ret = e->src->ops->flush(e->src);
		if (ret < 0)
			goto out;
		crash_point();
	}
	/* the header's capacity: the growth takes effect */
	ret = bsrc_read_full(e->src, hb, sizeof(hb), 0);
	if (ret == 0) {
		ssize_t w;

		vmdk_put64(hb + 12, new_sec);
		w = e->src->ops->pwrite(e->src, hb, sizeof(hb), 0);
		ret = w < 0 ? (int)w : e->src->ops->flush(e->src);
	}
	if (ret < 0)
		goto out;
	crash_point();
	/* from here the tables in memory must follow what is on disk */
	free(e->gd);
	free(e->rgd);
	e->gd = gd;
	e->rgd = rgd;
	gd = rgd = NULL;
	e->gd_entries = (uint32_t)new_n;
	e->capacity = new_sec;
	e->size = new_sec * 512;
	ret = desc_resize_any(b, e, new_sec, false);
	if (ret < 0) {
		char why[512];

		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		ret = bdev_err(ret, "%s: grew to %" PRIu64 " bytes, but its "
			       "descriptor still says the old size: %s",
			       b->filename, e->start + e->size, why);
	}
out:
	free(gd);
	free(rgd);
	free(buf);
	return ret;
}

/* Grows the last extent e (FLAT or VMFS) to new_sec sectors. */
static int grow_flat(struct bdev *b, struct vmdk_extent *e, uint64_t new_sec)
{
	struct bsrc *s = e->src;
	uint64_t end = e->flat_off + new_sec * 512;
	int ret;

	if (!s || !s->writable || !s->whole_file || !s->ops->truncate)
		return bdev_err(-ENOTSUP, "%s: extent file %s is not a writable "
				"regular file; it cannot grow", b->filename,
				e->path ? e->path : "(none)");
	ret = desc_resize_any(b, e, new_sec, true);
	if (ret < 0)
		return ret;
	if (bsrc_length(s) < end) {
		ret = s->ops->truncate(s, end);
		if (ret == 0 && s->ops->flush)
			ret = s->ops->flush(s);
		if (ret < 0)
			return ret;
		crash_point();
	}
	ret = desc_resize_any(b, e, new_sec, false);
	if (ret == 0)
		e->size = new_sec * 512;
	return ret;
}

/* Grows b (open, in use) to new_size bytes; see struct bdev_format.grow.
   Called with b's top lock held exclusively. */
int vmdk_grow(struct bdev *b, uint64_t new_size)
{
	struct vmdk_image *img = b->priv;
	struct vmdk_extent *e;
	const char *sf = b->info.subformat ? b->info.subformat : "";
	uint64_t keep;
	int ret;

	if (!img->n_extents || !img->write_init || new_size / 512 >
	    VMDK_MAX_CAPACITY_SECTORS)
		return bdev_err(-ENOTSUP, "%s: %s cannot grow to %" PRIu64
				" bytes while open", b->filename, sf, new_size);
	e = &img->extents[img->n_extents - 1];
	if (e->compressed || !strcmp(sf, "streamOptimized"))
		return bdev_err(-ENOTSUP, "%s: a streamOptimized disk cannot grow: "
				"its stream is append-only with tables written "
				"once; convert it to monolithicSparse first",
				b->filename);
	if (e->access != BDEV_ACCESS_RW || new_size <= e->start)
		return bdev_err(-ENOTSUP, "%s: its last extent (%u) is not "
				"writable; it cannot grow", b->filename, e->index);
	keep = new_size - e->start;
	if (!strncmp(sf, "twoGbMaxExtent", 14) && keep > TWOGB_EXTENT_BYTES)
		return bdev_err(-ENOSPC, "%s: a %s disk grows while open only "
				"within its last extent file (2047 MiB): at most "
				"%" PRIu64 " bytes; close it and use bdev_resize "
				"(vmdk resize), which adds extent files",
				b->filename, sf, e->start + TWOGB_EXTENT_BYTES);
	if (e->ops == &vmdk_hosted_ops)
		ret = grow_sparse(b, e, keep / 512);
	else if (!e->ops && (e->type == VMDK_EXT_FLAT || e->type == VMDK_EXT_VMFS))
		ret = grow_flat(b, e, keep / 512);
	else
		return bdev_err(-ENOTSUP, "%s: growing an open %s disk (last "
				"extent %s) is not supported", b->filename, sf,
				vmdk_ext_type_name(e->type));
	if (ret < 0 && e->start + e->size != new_size)
		return ret;
	if (img->desc_parsed && img->desc.n_extents == img->n_extents)
		img->desc.extents[img->n_extents - 1].sectors = e->size / 512;
	b->info.size = e->start + e->size;
	return ret;
}
