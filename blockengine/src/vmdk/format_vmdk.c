/* SPDX-License-Identifier: Apache-2.0 */
/*
 * format_vmdk.c - the VMDK format driver: probe, open (descriptor or
 * single sparse file, extents, parent chain), map, decode, extent info.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vmdk.h"

/* Confidence that head is a VMDK: a sparse magic or a descriptor. */
static int vmdk_probe(const uint8_t *head, size_t len)
{
	if (vmdk_extent_ops_probe(head, len))
		return 100;
	return vmdk_desc_probe(head, len);
}

/* The name messages use: the core's copy of the path or source name,
   which (unlike src->name) outlives the descriptor's source. */
static const char *name_of(const struct bdev *b, const char *path,
			   const struct bsrc *src)
{
	if (b->filename)
		return b->filename;
	return path ? path : src->name;
}

/* Release everything img holds (extents, sources, tables, cache). */
static void image_free(struct vmdk_image *img)
{
	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		vmdk_sparse_tables_free(e);
		if (e->owns_src)
			bsrc_close(e->src);
		free(e->path);
	}
	vmdk_write_teardown(img);
	free(img->extents);
	vmdk_desc_free(&img->desc);
	free(img->create_type);
	free(img->parent_path);
	vmdk_gt_cache_destroy(&img->gtc);
	free(img);
}

/* Does a file name leave the folder it is relative to? */
static bool name_escapes(const char *n)
{
	const char *p = n;

	if (n[0] == '/' || n[0] == '\\' || (n[0] && n[1] == ':'))
		return true;
	while (*p) {
		size_t l = strcspn(p, "/\\");
		if (l == 2 && p[0] == '.' && p[1] == '.')
			return true;
		p += l;
		if (*p)
			p++;
	}
	return false;
}

/* name resolved against the folder of base (malloc'd), or an error naming
   what and where when it escapes that folder without ALLOW_ESCAPE. */
static int resolve(const struct bdev *b, const char *base, const char *name,
		   const char *what, unsigned line, char **out)
{
	const char *slash = strrchr(base, '/');
	size_t dl = slash ? (size_t)(slash - base) + 1 : 0;
	char *p;

	if (name_escapes(name) && !(b->opts.flags & BDEV_O_ALLOW_ESCAPE)) {
		if (line)
			return bdev_err(-EPERM, "%s: line %u: %s \"%s\" lies outside the "
					"descriptor's folder; open with allow-escape to follow it",
					base, line, what, name);
		return bdev_err(-EPERM, "%s: %s \"%s\" lies outside the descriptor's "
				"folder; open with allow-escape to follow it", base, what, name);
	}
	if (name[0] == '/')
		dl = 0;
	p = malloc(dl + strlen(name) + 1);
	if (!p)
		return -ENOMEM;
	memcpy(p, base, dl);
	strcpy(p + dl, name);
	*out = p;
	return 0;
}

/* Read and parse the descriptor embedded in a hosted sparse file. */
static int read_embedded_desc(struct vmdk_image *img, struct bsrc *src,
			      const char *name)
{
	uint8_t hb[512];
	struct vmdk_sparse_hdr h;
	char *text;
	int ret;

	ret = bsrc_read_full(src, hb, sizeof(hb), 0);
	if (ret < 0)
		return ret;
	ret = vmdk_sparse_header_parse(hb, 0, src->length, name, &h);
	if (ret < 0 || h.desc_offset == 0 || h.desc_size == 0)
		return ret;
	text = malloc(h.desc_size * 512);
	if (!text)
		return -ENOMEM;
	ret = bsrc_read_full(src, text, h.desc_size * 512, h.desc_offset * 512);
	if (ret == 0) {
		char where[64];
		snprintf(where, sizeof(where), " (descriptor at offset %" PRIu64 ")",
			 h.desc_offset * 512);
		size_t nl = strlen(name) + strlen(where) + 1;
		char *label = malloc(nl);
		if (!label) {
			free(text);
			return -ENOMEM;
		}
		snprintf(label, nl, "%s%s", name, where);
		ret = vmdk_desc_parse(text, h.desc_size * 512, label, &img->desc);
		img->desc_parsed = ret == 0;
		free(label);
	}
	free(text);
	return ret;
}

/* The image is one sparse file (monolithicSparse, streamOptimized, a lone
   COWD or seSparse extent): src is its only extent. */
static int open_single(struct bdev *b, struct vmdk_image *img, struct bsrc *src,
		       const struct vmdk_extent_ops *ops, const char *name)
{
	struct vmdk_extent *e;
	const char *ct;
	int ret;

	img->extents = calloc(1, sizeof(*img->extents));
	if (!img->extents) {
		bsrc_close(src);
		return -ENOMEM;
	}
	img->n_extents = 1;
	e = &img->extents[0];
	e->src = src;
	e->owns_src = true;
	e->access = BDEV_ACCESS_RW;
	e->path = strdup(name);
	if (!e->path)
		return -ENOMEM;

	e->type = ops->type;
	ret = ops->open(e, name);
	ct = ops->create_type;
	if (ret == 0 && ops == &vmdk_hosted_ops) {
		ret = read_embedded_desc(img, src, name);
		if (e->compressed)
			ct = "streamOptimized";
	}
	if (ret < 0)
		return ret;
	e->size = e->capacity * 512;
	if (img->desc_parsed && img->desc.create_type)
		ct = img->desc.create_type;
	img->create_type = strdup(ct);
	return img->create_type ? 0 : -ENOMEM;
}

/* The descriptor names the extents: open each (sharing a source between
   extents of one file). */
static int open_described(struct bdev *b, struct vmdk_image *img,
			  const char *path)
{
	const struct vmdk_desc *d = &img->desc;
	bool rdwr = b->opts.flags & BDEV_O_RDWR;
	int ret;

	img->extents = calloc(d->n_extents ? d->n_extents : 1, sizeof(*img->extents));
	if (!img->extents)
		return -ENOMEM;
	for (unsigned i = 0; i < d->n_extents; i++) {
		const struct vmdk_desc_extent *x = &d->extents[i];
		struct vmdk_extent *e = &img->extents[i];

		img->n_extents = i + 1;
		e->type = x->type;
		e->access = x->access;
		e->size = x->sectors * 512;
		e->index = i;
		if (x->type == VMDK_EXT_ZERO)
			continue;
		if (!path)
			return bdev_err(-EINVAL, "%s: line %u: extent file \"%s\" cannot be "
					"found: an image opened from a region or memory must be a "
					"single file (monolithicSparse or streamOptimized)",
					img->desc_label, x->line, x->name);
		ret = resolve(b, path, x->name, "extent file", x->line, &e->path);
		if (ret < 0)
			return ret;
		for (unsigned j = 0; j < i; j++) {
			struct vmdk_extent *o = &img->extents[j];
			if (o->path && strcmp(o->path, e->path) == 0) {
				e->src = o->src;
				break;
			}
		}
		if (!e->src) {
			bool writable = false;
			for (unsigned j = i; j < d->n_extents; j++)
				if (d->extents[j].access == BDEV_ACCESS_RW &&
				    d->extents[j].name &&
				    strcmp(d->extents[j].name, x->name) == 0)
					writable = rdwr;
			ret = bsrc_open_file(e->path, writable,
					     b->opts.flags & BDEV_O_SHARE, &e->src);
			if (ret < 0)
				return bdev_err_append(ret, "; it is the extent file "
						       "\"%s\" of %s, line %u", x->name,
						       path, x->line);
			e->owns_src = true;
		}
		switch (x->type) {
		case VMDK_EXT_FLAT:
		case VMDK_EXT_VMFS:
		case VMDK_EXT_VMFSRDM:
		case VMDK_EXT_VMFSRAW:
			e->flat_off = x->offset * 512;
			break;
		case VMDK_EXT_SPARSE:
		case VMDK_EXT_VMFSSPARSE:
		case VMDK_EXT_SESPARSE:
			ret = vmdk_extent_open_sparse(e, e->path);
			if (ret < 0)
				return ret;
			break;
		case VMDK_EXT_ZERO:
			break;
		}
	}
	img->create_type = strdup(d->create_type);
	return img->create_type ? 0 : -ENOMEM;
}

/*
 * The files of the delta chain being opened on this thread, child first:
 * a parent already among them makes a loop. Parents are opened by
 * recursion on the opening thread, so a thread-local stack sees the whole
 * chain without changing the layers' interface.
 */
#define VMDK_CHAIN_MAX 128

static _Thread_local struct chain_file {
	dev_t dev;
	ino_t ino;
} chain_files[VMDK_CHAIN_MAX + 1];
static _Thread_local unsigned chain_len;
/* chain_len + 1 where a failure was first placed in the chain (0: none) */
static _Thread_local unsigned chain_fail_at;

/* Records child (the first time: the chain's top) before its parent is
   opened; refuses a parent already in the chain and a chain too deep. */
static int chain_push(const char *child, const char *parent)
{
	struct stat cs, ps;

	if (chain_len == 0)
		chain_fail_at = 0; /* a new chain */
	if (stat(child, &cs) < 0)
		return bdev_err(-errno, "%s: cannot stat: %s", child, strerror(errno));
	if (chain_len >= VMDK_CHAIN_MAX)
		return bdev_err(-ELOOP, "%s: delta chain deeper than %u layers at "
				"parent \"%s\"; expected a shorter chain (or a "
				"loop of parentFileNameHint)", child, VMDK_CHAIN_MAX,
				parent);
	chain_files[chain_len].dev = cs.st_dev;
	chain_files[chain_len].ino = cs.st_ino;
	chain_len++;
	if (stat(parent, &ps) < 0)
		return 0; /* opening it will say why */
	for (unsigned i = 0; i < chain_len; i++) {
		if (chain_files[i].dev == ps.st_dev && chain_files[i].ino == ps.st_ino) {
			bool self = i + 1 == chain_len;

			chain_len--;
			return bdev_err(-ELOOP, "%s: parentFileNameHint \"%s\" names "
					"%s; a delta chain must end in a base disk, "
					"not loop", child, parent, self ?
					"this file itself" :
					"a file already in this delta chain");
		}
	}
	return 0;
}

static void chain_pop(void)
{
	chain_len--;
}

#define CHAIN_NOTE_ENDS 3 /* links named at each end of a failed chain */

/* Says where a failure to open parent sits in the chain, after the
   innermost cause (called as the failure unwinds, chain_len links above
   parent): the links next to the failure and next to the top are named,
   a deep chain's middle is counted, so the sentence stays readable. */
static int chain_note(int ret, const char *parent, const char *child)
{
	unsigned from_fail;

	if (!chain_fail_at)
		chain_fail_at = chain_len + 1;
	from_fail = chain_fail_at - 1 - chain_len;
	if (from_fail < CHAIN_NOTE_ENDS || chain_len < CHAIN_NOTE_ENDS)
		return bdev_err_append(ret, "; %s is the parent of %s", parent,
				       child);
	if (chain_len == CHAIN_NOTE_ENDS)
		return bdev_err_append(ret, "; ... %u more links ...",
				       chain_fail_at - 2 * CHAIN_NOTE_ENDS);
	return ret;
}

/* Open the parent named by parentFileNameHint and check its CID. */
static int open_parent(struct bdev *b, struct vmdk_image *img, const char *path)
{
	struct bdev_open_opts po = b->opts;
	const char *hint = img->desc.parent_hint;
	int ret;

	if (!path)
		return bdev_err(-EINVAL, "%s: parentFileNameHint \"%s\" cannot be followed: an "
				"image opened from a region or memory may not reference other "
				"files", b->filename, hint);
	ret = resolve(b, path, hint, "parentFileNameHint", 0, &img->parent_path);
	if (ret < 0)
		return ret;
	po.flags &= ~(uint32_t)BDEV_O_RDWR;
	po.format = NULL;
	ret = chain_push(path, img->parent_path);
	if (ret < 0)
		return ret;
	ret = bdev_open_layer(img->parent_path, NULL, &po, &b->backing);
	chain_pop();
	if (ret < 0) {
		/* the innermost cause first, then where it sits in the chain */
		b->backing = NULL;
		return chain_note(ret, img->parent_path, path);
	}
	if (b->opts.flags & BDEV_O_FORCE_CID)
		return 0;
	if (!b->backing->info.has_cid)
		bdev_err(-EINVAL, "%s: parent %s has no CID (format %s), expected a VMDK "
			 "whose CID is %08" PRIx32 "; open with force-cid to use it anyway",
			 path, img->parent_path, b->backing->info.format,
			 img->desc.parent_cid);
	else if (b->backing->info.cid != img->desc.parent_cid)
		bdev_err(-EINVAL, "%s: parentCID is %08" PRIx32 " but its parent %s has "
			 "CID %08" PRIx32 ": the parent changed after this delta was "
			 "made; open with force-cid to use it anyway",
			 path, img->desc.parent_cid, img->parent_path,
			 b->backing->info.cid);
	else
		return 0;
	/* Close the parent here: closing clears this thread's message. */
	char msg[1024];
	snprintf(msg, sizeof(msg), "%s", bdev_errmsg());
	bdev_close(b->backing);
	b->backing = NULL;
	return bdev_err(-EINVAL, "%s", msg);
	return 0;
}

/*
 * A descriptor file may end in NUL padding, but text after a NUL byte is
 * read by some readers (qemu-img counts the extents there) and not by
 * others: refuse it rather than guess which disk was meant.
 */
static int check_desc_file_nul(const char *text, size_t len, const char *name)
{
	const char *nul = memchr(text, '\0', len);

	if (!nul)
		return 0;
	for (const char *p = nul; p < text + len; p++)
		if (*p && *p != '\n' && *p != '\r' && *p != ' ' && *p != '\t')
			return bdev_err(-EINVAL, "%s: NUL byte at offset %zu and "
					"descriptor text after it (at offset %zu), "
					"expected only text, or only NUL padding at "
					"the end", name, (size_t)(nul - text),
					(size_t)(p - text));
	return 0;
}

/* Open a VMDK from src; see struct bdev_format. */
static int vmdk_open(struct bdev *b, struct bsrc *src, const char *path)
{
	const char *name = name_of(b, path, src);
	struct vmdk_image *img = calloc(1, sizeof(*img));
	uint8_t head[8] = { 0 };
	size_t hl = src->length < 8 ? (size_t)src->length : 8;
	const struct vmdk_extent_ops *kind;
	uint64_t pos = 0;
	int ret;

	if (!img) {
		bsrc_close(src);
		return -ENOMEM;
	}
	img->desc.parent_cid = VMDK_NO_PARENT_CID;
	img->desc_label = name;
	ret = vmdk_gt_cache_init(&img->gtc, b->opts.gt_cache_bytes ?
				 b->opts.gt_cache_bytes : BDEV_DEFAULT_GT_CACHE);
	if (ret < 0) {
		bsrc_close(src);
		goto err_free_image;
	}
	if (hl < 4) {
		ret = bdev_err(-EINVAL, "%s: file is %" PRIu64 " bytes, too small to be a VMDK",
			       name, src->length);
		bsrc_close(src);
		goto err_free_image;
	}
	ret = bsrc_read_full(src, head, hl, 0);
	if (ret < 0) {
		bsrc_close(src);
		goto err_free_image;
	}

	if ((kind = vmdk_extent_ops_probe(head, hl))) {
		ret = open_single(b, img, src, kind, name);
		if (ret < 0)
			goto err_free_image;
	} else {
		char *text;
		if (src->length > VMDK_DESC_MAX_BYTES) {
			ret = bdev_err(-EFBIG, "%s: not a sparse extent (magic %02x %02x %02x %02x) "
				       "and %" PRIu64 " bytes, expected a descriptor of at most %u "
				       "bytes", name, head[0], head[1], head[2], head[3],
				       src->length, VMDK_DESC_MAX_BYTES);
			bsrc_close(src);
			goto err_free_image;
		}
		text = malloc(src->length + 1);
		if (!text) {
			bsrc_close(src);
			ret = -ENOMEM;
			goto err_free_image;
		}
		ret = bsrc_read_full(src, text, src->length, 0);
		if (ret == 0)
			ret = check_desc_file_nul(text, src->length, name);
		if (ret == 0)
			ret = vmdk_desc_parse(text, src->length, name, &img->desc);
		free(text);
		bsrc_close(src);
		if (ret < 0)
			goto err_free_image;
		img->desc_parsed = true;
		if (img->desc.n_extents == 0) {
			ret = bdev_err(-EINVAL, "%s: no extent lines, expected at least one "
				       "(e.g. RW 2048 SPARSE \"disk.vmdk\")", name);
			goto err_free_image;
		}
		ret = open_described(b, img, path);
		if (ret < 0)
			goto err_free_image;
	}

	for (unsigned i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];
		e->index = i;
		e->start = pos;
		if (e->size > UINT64_MAX / 2 - pos) {
			ret = bdev_err(-EFBIG, "%s: extents add up to more than 2^63 bytes", name);
			goto err_free_image;
		}
		pos += e->size;
		if (e->compressed)
			b->info.compressed = true;
		if (e->unclean)
			b->info.unclean = true;
		if (e->ops && !b->info.cluster_size)
			b->info.cluster_size = e->grain_bytes;
	}

	b->priv = img;
	b->info.format = "vmdk";
	b->info.subformat = img->create_type;
	b->info.size = pos;
	b->info.sector_size = BDEV_SECTOR;
	b->info.read_only = !(b->opts.flags & BDEV_O_RDWR);
	b->info.has_cid = img->desc_parsed && img->desc.has_cid;
	b->info.cid = img->desc.cid;
	b->info.parent_cid = img->desc_parsed ? img->desc.parent_cid : VMDK_NO_PARENT_CID;
	b->info.extent_count = img->n_extents;
	b->info.parent_hint = img->desc.parent_hint;

	if (b->opts.flags & BDEV_O_RDWR) {
		ret = vmdk_write_setup(b, img);
		if (ret < 0)
			goto err_clear_priv;
	}
	if (img->desc.parent_hint && !(b->opts.flags & BDEV_O_NO_BACKING)) {
		ret = open_parent(b, img, path);
		if (ret < 0)
			goto err_clear_priv; /* the core closes b->backing */
	}
	return 0;

err_clear_priv:
	b->priv = NULL;
	memset(&b->info, 0, sizeof(b->info));
err_free_image:
	image_free(img);
	return ret;
}

/* Close what vmdk_open opened (the core closes the parent). */
static void vmdk_close(struct bdev *b)
{
	if (b->priv)
		image_free(b->priv);
	b->priv = NULL;
}

/* Map a run inside a sparse extent: merge grains of one state (and, for
   DATA, contiguous in the file); a compressed grain is a run of its own. */
static int map_sparse(struct bdev *b, struct vmdk_image *img,
		      struct vmdk_extent *e, uint64_t rel, uint64_t len,
		      struct bdev_map *m)
{
	const uint64_t gb = e->grain_bytes;
	uint64_t done = 0, expect = 0;
	int first = -1;

	while (done < len) {
		uint64_t pos = rel + done;
		uint64_t grain = pos >> e->grain_shift;
		uint64_t gdi = grain / e->gt_entries;
		uint32_t gti = (uint32_t)(grain % e->gt_entries);
		const uint8_t *gt = NULL;
		struct vmdk_gt_entry *ref = NULL;
		bool stop = false;

		if (gdi < e->gd_entries) {
			if (e->mem_gts) {
				/* a stream writer adds tables (release) */
				gt = (const uint8_t *)__atomic_load_n(
					&e->mem_gts[gdi], __ATOMIC_ACQUIRE);
			} else if (vmdk_gd_load(e->gd, gdi)) {
				int ret = vmdk_gt_cache_get(&img->gtc, b, e, (uint32_t)gdi,
							    &gt, &ref);
				if (ret == -EWOULDBLOCK && done)
					break; /* serve what precedes it */
				if (ret < 0)
					return ret;
			}
		}
		if (!gt) {
			/* No table: the whole table's span is unallocated. */
			uint64_t span_end = gdi < e->gd_entries ?
				(gdi + 1) * e->gt_entries * gb : e->size;
			uint64_t n = span_end > pos ? span_end - pos : len - done;
			if (n > len - done)
				n = len - done;
			if (first < 0)
				first = VMDK_GRAIN_UNALLOC;
			else if (first != VMDK_GRAIN_UNALLOC)
				break;
			done += n;
			continue;
		}
		for (; gti < e->gt_entries && done < len; gti++) {
			uint64_t foff = 0, in = (rel + done) & (gb - 1);
			uint64_t n = gb - in;
			int st = vmdk_gte_decode(e, gt, gti, &foff);

			if (n > len - done)
				n = len - done;
			if (st < 0) {
				if (ref)
					vmdk_gt_cache_put(&img->gtc, ref);
				return st;
			}
			if (first < 0) {
				first = st;
				if (st == VMDK_GRAIN_DATA && e->compressed) {
					uint64_t flen = bsrc_length(e->src);
					uint64_t avail = foff < flen ? flen - foff : 0;
					uint64_t bound = vmdk_stream_record_bound(gb);
					if (ref)
						vmdk_gt_cache_put(&img->gtc, ref);
					if (avail == 0)
						return bdev_err(-EIO, "%s: grain %" PRIu64 " at offset %"
								PRIu64 " lies beyond the end of the file (%"
								PRIu64 " bytes)", e->path, grain, foff,
								flen);
					m->kind = BDEV_MAP_COMPRESSED;
					m->len = n;
					m->src = e->src;
					m->src_off = foff;
					m->src_len = (uint32_t)(bound < avail ? bound : avail);
					m->grain_off = e->start + ((rel + done) & ~(gb - 1));
					m->grain_size = (uint32_t)gb;
					return 0;
				}
				if (st == VMDK_GRAIN_DATA)
					m->src_off = foff + in;
			} else if (st != first || (st == VMDK_GRAIN_DATA &&
						   (e->compressed || foff != expect))) {
				stop = true;
				break;
			}
			if (st == VMDK_GRAIN_DATA) {
				/* writers appending grains grow it meanwhile */
				if (foff + in + n >
				    bsrc_length(e->src)) {
					if (done) {
						stop = true; /* serve what precedes it first */
						break;
					}
					if (ref)
						vmdk_gt_cache_put(&img->gtc, ref);
					return bdev_err(-EIO, "%s: grain %" PRIu64 " at offset %" PRIu64
							" lies beyond the end of the file (%" PRIu64
							" bytes)", e->path,
							(rel + done) >> e->grain_shift, foff,
							bsrc_length(e->src));
				}
				expect = foff + gb;
			}
			done += n;
		}
		if (ref)
			vmdk_gt_cache_put(&img->gtc, ref);
		if (stop)
			break;
	}
	m->len = done;
	m->kind = first == VMDK_GRAIN_DATA ? BDEV_MAP_DATA :
		  first == VMDK_GRAIN_ZERO ? BDEV_MAP_ZERO : BDEV_MAP_UNALLOC;
	if (m->kind == BDEV_MAP_DATA)
		m->src = e->src;
	return 0;
}

/* Describe the first run of [off, off + len); see struct bdev_format. */
static int vmdk_map(struct bdev *b, uint64_t off, uint64_t len, struct bdev_map *m)
{
	struct vmdk_image *img = b->priv;
	struct vmdk_extent *e = vmdk_find_extent(img, off);
	uint64_t rel;

	if (!e)
		return bdev_err(-EIO, "%s: offset %" PRIu64 " is outside every extent",
				b->filename, off);
	rel = off - e->start;
	if (len > e->size - rel)
		len = e->size - rel;
	memset(m, 0, sizeof(*m));
	m->extent = (unsigned)(e - img->extents);
	m->read_only = e->access == BDEV_ACCESS_RDONLY;

	switch (e->type) {
	case VMDK_EXT_ZERO:
		m->kind = e->access == BDEV_ACCESS_NOACCESS ? BDEV_MAP_NOACCESS : BDEV_MAP_ZERO;
		m->len = len;
		return 0;
	case VMDK_EXT_FLAT:
	case VMDK_EXT_VMFS:
	case VMDK_EXT_VMFSRDM:
	case VMDK_EXT_VMFSRAW:
		if (e->access == BDEV_ACCESS_NOACCESS) {
			m->kind = BDEV_MAP_NOACCESS;
			m->len = len;
			return 0;
		}
		m->src_off = e->flat_off + rel;
		m->len = len;
		if (!e->src->writable && m->src_off >= bsrc_length(e->src)) {
			/* A flat file shorter than its extent reads as zeros
			   past its end, as a sparse host file would. */
			m->kind = BDEV_MAP_ZERO;
			return 0;
		}
		if (!e->src->writable &&
		    len > bsrc_length(e->src) - m->src_off)
			m->len = bsrc_length(e->src) - m->src_off;
		m->kind = BDEV_MAP_DATA;
		m->src = e->src;
		return 0;
	default:
		if (e->access == BDEV_ACCESS_NOACCESS) {
			m->kind = BDEV_MAP_NOACCESS;
			m->len = len;
			return 0;
		}
		return map_sparse(b, img, e, rel, len, m);
	}
}

/* Inflate a compressed grain; see struct bdev_format. */
static int vmdk_decode(struct bdev *b, const struct bdev_map *m,
		       const uint8_t *in, size_t inlen, uint8_t *out)
{
	struct vmdk_image *img = b->priv;
	const struct vmdk_extent *e;
	uint64_t rel, need;

	if (m->extent >= img->n_extents)
		return bdev_err(-EINVAL, "%s: decode of extent %u, the image has %u",
				b->filename, m->extent, img->n_extents);
	e = &img->extents[m->extent];
	rel = m->grain_off - e->start;
	need = e->size - rel < m->grain_size ? e->size - rel : m->grain_size;
	return vmdk_stream_decode(e, m->src_off, rel / 512, in, inlen, out,
				  m->grain_size, need);
}

/* Describe extent index; see struct bdev_format. */
static int vmdk_get_extent(const struct bdev *b, unsigned index,
			   struct bdev_extent_info *out)
{
	const struct vmdk_image *img = b->priv;
	const struct vmdk_extent *e;

	if (index >= img->n_extents)
		return bdev_err(-ENOENT, "%s: no extent %u, the image has %u",
				b->filename, index, img->n_extents);
	e = &img->extents[index];
	memset(out, 0, sizeof(*out));
	out->access = e->access;
	out->type = vmdk_ext_type_name(e->type);
	out->filename = e->path;
	out->offset = e->start;
	out->size = e->size;
	out->file_offset = e->flat_off;
	if (e->ops) {
		out->grain_size = e->grain_bytes;
		out->version = e->version;
	}
	out->compressed = e->compressed;
	/* the first write sets it on an offload thread */
	out->unclean = __atomic_load_n(&e->unclean, __ATOMIC_RELAXED);
	return 0;
}

/* Disk database entry index; see struct bdev_format. */
static int vmdk_get_ddb(const struct bdev *b, unsigned index, const char **key,
			const char **value)
{
	const struct vmdk_image *img = b->priv;
	unsigned n = img->desc_parsed ? img->desc.n_ddb : 0;

	if (index >= n)
		return bdev_err(-ENOENT, "%s: no ddb entry %u, the descriptor has %u",
				b->filename, index, n);
	*key = img->desc.ddb[index].key;
	*value = img->desc.ddb[index].value;
	return 0;
}

const struct bdev_format bdev_format_vmdk = {
	.name = "vmdk",
	.probe = vmdk_probe,
	.open = vmdk_open,
	.close = vmdk_close,
	.map = vmdk_map,
	.decode = vmdk_decode,
	.get_extent = vmdk_get_extent,
	.get_ddb = vmdk_get_ddb,
	.flush = vmdk_flush,
	.write_alloc = vmdk_write_alloc,
	.zero = vmdk_zero,
	.begin_write = vmdk_begin_write,
	.freeze = vmdk_freeze_layer,
	.thaw = vmdk_thaw_layer,
	.grow = vmdk_grow,
	.finish = vmdk_finish,
	.resize = vmdk_resize,
	.check = vmdk_check,
};
