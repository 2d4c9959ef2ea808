/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vmdk_build.h - build small VMDK images in memory for the driver's tests:
 * hosted sparse (with RGD), streamOptimized with the GD at the end (as
 * VMware writes it), COWD and seSparse. Data grains hold pattern_byte()
 * of their virtual offset, so a reader can check every byte.
 */
#ifndef OVK_VMDK_BUILD_H
#define OVK_VMDK_BUILD_H

#include <endian.h>
#include <libdeflate.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../testutil.h"

struct vb {
	uint8_t *p;
	size_t len, cap;
};

/* What grain g of an image holds: 0 unallocated, 1 zeroed, 2 data. */
typedef int (*vb_grain_fn)(uint64_t g);

static inline void vb_reserve(struct vb *b, size_t n)
{
	if (b->len + n > b->cap) {
		size_t c = b->cap ? b->cap : 4096;
		while (c < b->len + n)
			c *= 2;
		b->p = realloc(b->p, c);
		memset(b->p + b->cap, 0, c - b->cap);
		b->cap = c;
	}
}

/* Append n zero bytes, return their offset. */
static inline size_t vb_zeros(struct vb *b, size_t n)
{
	size_t at = b->len;

	vb_reserve(b, n);
	memset(b->p + at, 0, n);
	b->len += n;
	return at;
}

static inline void vb_pad(struct vb *b)
{
	if (b->len % 512)
		vb_zeros(b, 512 - b->len % 512);
}

static inline void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static inline void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

struct vb_sparse_opts {
	uint64_t capacity;      /* sectors */
	uint64_t grain;         /* sectors */
	uint32_t gtes;          /* per GT */
	uint32_t version;
	uint32_t flags;
	bool stream;            /* compressed grains + markers, GD at end */
	const char *desc;       /* embedded descriptor, or NULL */
	vb_grain_fn grain_fn;
};

/* Fill a KDMV header at p. */
static inline void vb_header(uint8_t *p, const struct vb_sparse_opts *o,
			     uint64_t desc_off, uint64_t desc_sz,
			     uint64_t rgd, uint64_t gd, uint64_t overhead)
{
	memcpy(p, "KDMV", 4);
	put32(p + 4, o->version);
	put32(p + 8, o->flags);
	put64(p + 12, o->capacity);
	put64(p + 20, o->grain);
	put64(p + 28, desc_off);
	put64(p + 36, desc_sz);
	put32(p + 44, o->gtes);
	put64(p + 48, rgd);
	put64(p + 56, gd);
	put64(p + 64, overhead);
	memcpy(p + 73, "\n \r\n", 4);
	if (o->stream) {
		p[77] = 1;
		p[78] = 0;
	}
}

static inline uint32_t vb_gd_entries(const struct vb_sparse_opts *o)
{
	uint64_t span = (uint64_t)o->gtes * o->grain;

	return (uint32_t)((o->capacity + span - 1) / span);
}

/*
 * A monolithic hosted sparse image: header, descriptor, RGD + its GTs,
 * GD + its GTs, grains. *gd_at / *rgd_at get the directories' offsets so
 * tests can damage them.
 */
static inline struct vb vb_build_sparse(const struct vb_sparse_opts *o,
					size_t *gd_at, size_t *rgd_at)
{
	struct vb b = { 0 };
	uint32_t ngd = vb_gd_entries(o);
	uint64_t gb = o->grain * 512, ngr = (o->capacity + o->grain - 1) / o->grain;
	size_t dsz = o->desc ? (strlen(o->desc) + 511) / 512 : 0;
	size_t gd_bytes = ((size_t)ngd * 4 + 511) & ~(size_t)511;
	size_t gt_bytes = ((size_t)o->gtes * 4 + 511) & ~(size_t)511;
	size_t hdr = vb_zeros(&b, 512), rgd, gd;

	if (o->desc)
		memcpy(b.p + vb_zeros(&b, dsz * 512), o->desc, strlen(o->desc));
	rgd = vb_zeros(&b, gd_bytes);
	size_t rgts = vb_zeros(&b, gt_bytes * ngd);
	gd = vb_zeros(&b, gd_bytes);
	size_t gts = vb_zeros(&b, gt_bytes * ngd);
	for (uint32_t i = 0; i < ngd; i++) {
		put32(b.p + rgd + 4 * i, (uint32_t)((rgts + gt_bytes * i) / 512));
		put32(b.p + gd + 4 * i, (uint32_t)((gts + gt_bytes * i) / 512));
	}
	uint64_t overhead = b.len / 512;
	for (uint64_t g = 0; g < ngr; g++) {
		int kind = o->grain_fn(g);
		uint32_t v = 0;
		if (kind == 1) {
			v = 1;
		} else if (kind == 2) {
			size_t at = vb_zeros(&b, gb);
			pattern_fill(b.p + at, gb, g * gb);
			v = (uint32_t)(at / 512);
		}
		size_t gi = g / o->gtes, ti = g % o->gtes;
		put32(b.p + rgts + gt_bytes * gi + 4 * ti, v);
		put32(b.p + gts + gt_bytes * gi + 4 * ti, v);
	}
	vb_header(b.p + hdr, o, o->desc ? 1 : 0, dsz, rgd / 512, gd / 512, overhead);
	if (gd_at)
		*gd_at = gd;
	if (rgd_at)
		*rgd_at = rgd;
	return b;
}

static inline void vb_marker(struct vb *b, uint64_t sectors, uint32_t type)
{
	size_t at = vb_zeros(b, 512);

	put64(b->p + at, sectors);
	put32(b->p + at + 12, type);
}

/*
 * A streamOptimized image as VMware writes it: header with gdOffset
 * GD_AT_END, descriptor, grain records, GT markers + GTs, GD marker + GD,
 * an unknown marker, footer marker + footer, EOS. The last grain holds only
 * the sectors inside the capacity.
 */
static inline struct vb vb_build_stream(const struct vb_sparse_opts *o)
{
	struct vb b = { 0 };
	struct libdeflate_compressor *c = libdeflate_alloc_compressor(6);
	uint32_t ngd = vb_gd_entries(o);
	uint64_t gb = o->grain * 512, ngr = (o->capacity + o->grain - 1) / o->grain;
	size_t dsz = o->desc ? (strlen(o->desc) + 511) / 512 : 0;
	uint32_t *gte = calloc((size_t)ngd * o->gtes, 4);
	uint8_t *raw = malloc(gb), *z = malloc(gb * 2 + 64);
	size_t hdr = vb_zeros(&b, 512);

	if (o->desc)
		memcpy(b.p + vb_zeros(&b, dsz * 512), o->desc, strlen(o->desc));
	uint64_t overhead = b.len / 512;
	for (uint64_t g = 0; g < ngr; g++) {
		int kind = o->grain_fn(g);
		if (kind != 2)
			continue;
		uint64_t n = gb;
		if ((g + 1) * gb > o->capacity * 512)
			n = o->capacity * 512 - g * gb;
		pattern_fill(raw, n, g * gb);
		size_t zl = libdeflate_zlib_compress(c, raw, n, z, gb * 2 + 64);
		size_t at = vb_zeros(&b, 12 + zl);
		put64(b.p + at, g * o->grain);
		put32(b.p + at + 8, (uint32_t)zl);
		memcpy(b.p + at + 12, z, zl);
		vb_pad(&b);
		gte[g] = (uint32_t)(at / 512);
	}
	size_t gt_sec = ((size_t)o->gtes * 4 + 511) / 512;
	uint32_t *gdv = calloc(ngd, 4);
	for (uint32_t i = 0; i < ngd; i++) {
		vb_marker(&b, gt_sec, 1);
		size_t at = vb_zeros(&b, gt_sec * 512);
		for (uint32_t j = 0; j < o->gtes; j++)
			put32(b.p + at + 4 * j, gte[(size_t)i * o->gtes + j]);
		gdv[i] = (uint32_t)(at / 512);
	}
	size_t gd_sec = ((size_t)ngd * 4 + 511) / 512;
	vb_marker(&b, gd_sec, 2);
	size_t gd = vb_zeros(&b, gd_sec * 512);
	for (uint32_t i = 0; i < ngd; i++)
		put32(b.p + gd + 4 * i, gdv[i]);
	vb_marker(&b, 1, 77); /* a marker type readers must skip */
	vb_zeros(&b, 512);
	vb_marker(&b, 1, 3);
	size_t foot = vb_zeros(&b, 512);
	vb_header(b.p + foot, o, o->desc ? 1 : 0, dsz, 0, gd / 512, overhead);
	vb_marker(&b, 0, 0);
	vb_header(b.p + hdr, o, o->desc ? 1 : 0, dsz, 0, UINT64_MAX, overhead);
	free(gte);
	free(gdv);
	free(raw);
	free(z);
	libdeflate_free_compressor(c);
	return b;
}

/* A COWD extent: 4-sector header, GD at sector 4, 4096-entry GTs, grains. */
static inline struct vb vb_build_cowd(uint32_t sectors, uint32_t grain,
				      vb_grain_fn fn)
{
	struct vb b = { 0 };
	uint64_t span = (uint64_t)grain * 4096, gb = (uint64_t)grain * 512;
	uint32_t ngd = (uint32_t)((sectors + span - 1) / span);
	uint64_t ngr = (sectors + grain - 1) / grain;
	size_t hdr = vb_zeros(&b, 2048);
	size_t gd = vb_zeros(&b, ((size_t)ngd * 4 + 511) & ~(size_t)511);
	size_t gts = vb_zeros(&b, (size_t)ngd * 4096 * 4);

	memcpy(b.p + hdr, "COWD", 4);
	put32(b.p + hdr + 4, 1);
	put32(b.p + hdr + 8, 3);
	put32(b.p + hdr + 12, sectors);
	put32(b.p + hdr + 16, grain);
	put32(b.p + hdr + 20, (uint32_t)(gd / 512));
	put32(b.p + hdr + 24, ngd);
	for (uint32_t i = 0; i < ngd; i++)
		put32(b.p + gd + 4 * i, (uint32_t)((gts + (size_t)i * 16384) / 512));
	for (uint64_t g = 0; g < ngr; g++) {
		if (fn(g) != 2)
			continue;
		size_t at = vb_zeros(&b, gb);
		pattern_fill(b.p + at, gb, g * gb);
		put32(b.p + gts + 4 * g, (uint32_t)(at / 512));
	}
	put32(b.p + hdr + 28, (uint32_t)(b.len / 512));
	return b;
}

/* A seSparse extent: const header, volatile header, GD, GTs, grains (4 KiB
   grains, 4096-entry GTs of u64 with the state in the top nibble). */
static inline struct vb vb_build_sesparse(uint64_t sectors, vb_grain_fn fn)
{
	struct vb b = { 0 };
	uint64_t ngr = (sectors + 7) / 8, ngd = (ngr + 4095) / 4096;
	size_t ch = vb_zeros(&b, 512), vh = vb_zeros(&b, 512);
	size_t gd = vb_zeros(&b, (ngd * 8 + 511) & ~(uint64_t)511);
	size_t gts = vb_zeros(&b, ngd * 32768);
	size_t grains = b.len;
	uint64_t next = 0;

	put64(b.p + ch, 0xcafebabe);
	put64(b.p + ch + 8, 0x0000000200000001ull);
	put64(b.p + ch + 16, sectors);
	put64(b.p + ch + 24, 8);
	put64(b.p + ch + 32, 64);
	put64(b.p + ch + 80, vh / 512);
	put64(b.p + ch + 88, 1);
	put64(b.p + ch + 128, gd / 512);
	put64(b.p + ch + 136, (ngd * 8 + 511) / 512);
	put64(b.p + ch + 144, gts / 512);
	put64(b.p + ch + 152, ngd * 64);
	put64(b.p + ch + 192, grains / 512);
	put64(b.p + vh, 0xcafecafe);
	for (uint64_t i = 0; i < ngd; i++)
		put64(b.p + gd + 8 * i, 0x1000000000000000ull | i);
	for (uint64_t g = 0; g < ngr; g++) {
		int k = fn(g);
		uint64_t v = 0;
		if (k == 1) {
			v = 0x2000000000000000ull;
		} else if (k == 2) {
			size_t at = vb_zeros(&b, 4096);
			pattern_fill(b.p + at, 4096, g * 4096);
			uint64_t cl = next++;
			v = 0x3000000000000000ull | ((cl & 0xfff) << 48) | (cl >> 12);
			(void)at;
		}
		put64(b.p + gts + 8 * g, v);
	}
	put64(b.p + ch + 200, (b.len - grains) / 512);
	return b;
}

/* The byte an image built with fn reads as at off (grain of gb bytes). */
static inline uint8_t vb_expect(vb_grain_fn fn, uint64_t gb, uint64_t off)
{
	return fn(off / gb) == 2 ? pattern_byte(off) : 0;
}

/* Grain patterns for vb_grain_fn (0 hole, 1 zeroed grain, 2 data): a mix
   of data runs, zeroed grains and holes... */
static inline int vb_mixed(uint64_t g)
{
	if (g % 7 == 3)
		return 0;
	if (g % 11 == 5)
		return 1;
	return g % 3 == 2 ? 0 : 2;
}

/* ...and alternating runs of four data grains and four holes or zeroed
   grains. */
static inline int vb_every_other(uint64_t g)
{
	return (g / 4) % 2 ? 2 : (g % 5 == 0 ? 1 : 0);
}

#endif /* OVK_VMDK_BUILD_H */
