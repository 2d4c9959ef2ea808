/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream.c - streamOptimized grains: inflating a grain record, deflating
 * one (stored as is when it would not shrink), and rebuilding a lost grain
 * map by walking the records and markers.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

#define RECORD_HEAD 12u /* u64 lba, u32 size */

static pthread_key_t inflater_key;
static pthread_once_t inflater_once = PTHREAD_ONCE_INIT;

static void inflater_free(void *d)
{
	libdeflate_free_decompressor(d);
}

static void inflater_key_make(void)
{
	(void)pthread_key_create(&inflater_key, inflater_free);
}

/* This thread's decompressor (made on first use, freed at thread exit). */
static struct libdeflate_decompressor *inflater(void)
{
	struct libdeflate_decompressor *d;

	pthread_once(&inflater_once, inflater_key_make);
	d = pthread_getspecific(inflater_key);
	if (!d) {
		d = libdeflate_alloc_decompressor();
		if (d && pthread_setspecific(inflater_key, d) != 0) {
			libdeflate_free_decompressor(d);
			d = NULL;
		}
	}
	return d;
}

/* Worst-case bytes of one grain's record: header plus deflate's bound for
   incompressible data (stored blocks), rounded up to a sector. */
uint64_t vmdk_stream_record_bound(uint64_t grain_bytes)
{
	uint64_t zb = grain_bytes + grain_bytes / 8 + 64;

	return (RECORD_HEAD + zb + 511) & ~UINT64_C(511);
}

/* Does in look like a grain record for grain_lba (rather than bare zlib)? */
static bool is_record(const struct vmdk_extent *e, uint64_t grain_lba,
		      const uint8_t *in, size_t inlen)
{
	struct vmdk_marker mk;

	if (e->markers)
		return true;
	if (inlen < 16)
		return false;
	vmdk_marker_decode(in, &mk);
	return mk.val == grain_lba && mk.size != 0;
}

/* Inflate the grain whose record starts at rec_off (in, inlen bytes of it)
   into out (out_size bytes). At least need bytes must come out; the rest of
   out is zeroed (the short last grain of a disk). */
int vmdk_stream_decode(const struct vmdk_extent *e, uint64_t rec_off,
		       uint64_t grain_lba, const uint8_t *in, size_t inlen,
		       uint8_t *out, size_t out_size, size_t need)
{
	struct libdeflate_decompressor *d = inflater();
	const uint8_t *z = in;
	size_t zlen = inlen, got = 0;
	enum libdeflate_result r;

	if (!d)
		return -ENOMEM;
	if (is_record(e, grain_lba, in, inlen)) {
		struct vmdk_marker mk;
		if (inlen < RECORD_HEAD)
			return bdev_err(-EIO, "%s: grain record at offset %" PRIu64
					" is cut off by the end of the file", e->path, rec_off);
		/* only the 12-byte record head: a marker's type field may lie
		   past the bytes read */
		memcpy(&mk.val, in, 8);
		memcpy(&mk.size, in + 8, 4);
		mk.val = le64toh(mk.val);
		mk.size = le32toh(mk.size);
		if (mk.val != grain_lba)
			return bdev_err(-EIO, "%s: grain record at offset %" PRIu64 " has lba %"
					PRIu64 ", expected %" PRIu64 " (the grain table points "
					"at the wrong record)", e->path, rec_off, mk.val, grain_lba);
		if (mk.size == 0 || mk.size > inlen - RECORD_HEAD)
			return bdev_err(-EIO, "%s: grain record at offset %" PRIu64 " has size %"
					PRIu32 ", expected 1..%zu (what the file holds there)",
					e->path, rec_off + 8, mk.size, inlen - RECORD_HEAD);
		z = in + RECORD_HEAD;
		zlen = mk.size;
	}
	r = libdeflate_zlib_decompress(d, z, zlen, out, out_size, &got);
	if (r != LIBDEFLATE_SUCCESS)
		return bdev_err(-EIO, "%s: compressed grain at offset %" PRIu64
				" (lba %" PRIu64 ") does not inflate: %s", e->path, rec_off,
				grain_lba,
				r == LIBDEFLATE_INSUFFICIENT_SPACE ?
				"it holds more than one grain" : "the zlib data is damaged");
	if (got < need)
		return bdev_err(-EIO, "%s: compressed grain at offset %" PRIu64
				" inflates to %zu bytes, expected %zu", e->path, rec_off,
				got, need);
	if (got < out_size)
		memset(out + got, 0, out_size - got);
	return 0;
}

/* Remember the record at rec_sector (kept little-endian, like a GT on disk)
   as where the grain at lba lives. */
static int note_grain(struct vmdk_extent *e, uint64_t lba, uint64_t rec_sector)
{
	uint64_t grain = lba / (e->grain_bytes / 512);
	uint64_t gdi = grain / e->gt_entries;

	if (gdi >= e->gd_entries || rec_sector > UINT32_MAX)
		return 0;
	if (!e->mem_gts[gdi]) {
		e->mem_gts[gdi] = calloc(e->gt_entries, 4);
		if (!e->mem_gts[gdi])
			return -ENOMEM;
	}
	e->mem_gts[gdi][grain % e->gt_entries] = htole32((uint32_t)rec_sector);
	return 0;
}

/* Rebuild e's grain map from the stream itself; see vmdk.h. */
int vmdk_stream_rebuild(struct vmdk_extent *e, const char *name,
			uint64_t overhead_sectors)
{
	uint64_t len = e->src->length, pos, cap_sectors;
	uint64_t max_rec = vmdk_stream_record_bound(e->grain_bytes);
	uint64_t grains = 0;
	uint8_t sec[512];

	if (e->gd_entries == 0)
		return 0;
	e->mem_gts = calloc(e->gd_entries, sizeof(*e->mem_gts));
	if (!e->mem_gts)
		return -ENOMEM;
	cap_sectors = (uint64_t)e->gd_entries * e->gt_entries * (e->grain_bytes / 512);
	pos = overhead_sectors ? overhead_sectors * 512 : 512;
	while (pos < len && len - pos >= 512) {
		struct vmdk_marker mk;
		int ret = bsrc_read_full(e->src, sec, sizeof(sec), pos);
		if (ret < 0)
			return ret;
		vmdk_marker_decode(sec, &mk);
		if (mk.size != 0) {
			/* A grain record: lba must be grain aligned and inside. */
			if (mk.size > max_rec || mk.val >= cap_sectors ||
			    mk.val % (e->grain_bytes / 512))
				break;
			ret = note_grain(e, mk.val, pos / 512);
			if (ret < 0)
				return ret;
			grains++;
			pos += (RECORD_HEAD + (uint64_t)mk.size + 511) & ~UINT64_C(511);
			continue;
		}
		if (mk.type == VMDK_MARKER_EOS)
			break;
		/* GT, GD, FOOTER and unknown markers: skip their payload. */
		if (mk.val > (len - pos) / 512)
			break;
		pos += 512 + mk.val * 512;
	}
	(void)name;
	(void)grains;
	return 0;
}

/* This thread's compressor and the level it was made for. */
struct vmdk_deflater {
	struct libdeflate_compressor *c;
	int level;
};

static pthread_key_t deflater_key;
static pthread_once_t deflater_once = PTHREAD_ONCE_INIT;

static void deflater_free(void *p)
{
	struct vmdk_deflater *d = p;

	libdeflate_free_compressor(d->c);
	free(d);
}

static void deflater_key_make(void)
{
	(void)pthread_key_create(&deflater_key, deflater_free);
}

struct libdeflate_compressor *vmdk_deflater(int level)
{
	struct vmdk_deflater *d;

	pthread_once(&deflater_once, deflater_key_make);
	d = pthread_getspecific(deflater_key);
	if (d && d->level == level)
		return d->c;
	if (!d) {
		d = calloc(1, sizeof(*d));
		if (!d)
			return NULL;
		if (pthread_setspecific(deflater_key, d) != 0) {
			free(d);
			return NULL;
		}
	}
	libdeflate_free_compressor(d->c);
	d->c = libdeflate_alloc_compressor(level);
	d->level = d->c ? level : 0;
	return d->c;
}

/*
 * Does this grain look like it will not shrink (already compressed or
 * encrypted bytes)? Deflate gains only from an uneven byte histogram
 * (Huffman) or from repeats (matches). A near-flat histogram is measured
 * with the sum of squared byte counts (the collision entropy of uniform
 * bytes is 8 bits: sum = n^2 / 256); repeats by deflating the first 8 KiB.
 * Wrong answers cost only size, never correctness.
 */
static bool looks_incompressible(struct libdeflate_compressor *c,
				 const uint8_t *in, size_t len)
{
	enum { SAMPLE = 8192 };
	uint32_t h[4][256] = { { 0 } };
	uint8_t out[SAMPLE + 64];
	uint64_t sq = 0;
	size_t i, z;

	if (len < 4 * SAMPLE)
		return false;
	for (i = 0; i + 4 <= len; i += 4) {
		h[0][in[i]]++;
		h[1][in[i + 1]]++;
		h[2][in[i + 2]]++;
		h[3][in[i + 3]]++;
	}
	for (unsigned b = 0; b < 256; b++) {
		uint64_t n = (uint64_t)h[0][b] + h[1][b] + h[2][b] + h[3][b];
		sq += n * n;
	}
	/* collision entropy below 8 - log2(1.1) = 7.86 bits per byte */
	if (sq * 256 * 10 > (uint64_t)i * i * 11)
		return false;
	z = libdeflate_zlib_compress(c, in, SAMPLE, out, sizeof(out));
	return z == 0 || z > SAMPLE - SAMPLE / 64;
}

/* in[0..len) as a zlib stream of stored blocks; bytes written or 0. */
static size_t zlib_store(const uint8_t *in, size_t len, uint8_t *out,
			 size_t cap)
{
	size_t blocks = len ? (len + 65534) / 65535 : 1, pos = 0, o = 2;
	uint32_t adler;

	if (cap < 2 + blocks * 5 + len + 4)
		return 0;
	out[0] = 0x78;	/* deflate, 32 KiB window */
	out[1] = 0x01;	/* no dictionary, fastest; (0x7801 % 31 == 0) */
	do {
		size_t n = len - pos < 65535 ? len - pos : 65535;

		out[o++] = pos + n == len;	/* BFINAL, BTYPE 00 */
		out[o++] = (uint8_t)n;
		out[o++] = (uint8_t)(n >> 8);
		out[o++] = (uint8_t)~n;
		out[o++] = (uint8_t)(~n >> 8);
		memcpy(out + o, in + pos, n);
		o += n;
		pos += n;
	} while (pos < len);
	adler = libdeflate_adler32(1, in, len);
	out[o++] = (uint8_t)(adler >> 24);
	out[o++] = (uint8_t)(adler >> 16);
	out[o++] = (uint8_t)(adler >> 8);
	out[o++] = (uint8_t)adler;
	return o;
}

size_t vmdk_grain_deflate(int level, const void *in, size_t len, void *out,
			  size_t cap)
{
	struct libdeflate_compressor *c = vmdk_deflater(level);

	if (!c)
		return 0;
	if (looks_incompressible(c, in, len))
		return zlib_store(in, len, out, cap);
	return libdeflate_zlib_compress(c, in, len, out, cap);
}
