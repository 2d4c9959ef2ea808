/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_grain_cache.c - compressed runs through the grain cache, without the
 * VMDK driver: a tiny format defined here stores each grain as a record
 * [magic "XORZ"][grain index] + the grain's bytes XORed with 0x5c, and
 * mixes in zeroed, unallocated and plain (DATA) grains.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "grain_cache.h"
#include "testing.h"
#include "testutil.h"

#define GS 4096u
#define NGRAINS 32u
#define REC (GS + 8u)
#define IMG (NGRAINS * GS)
#define MAGIC 0x5a524f58u /* "XORZ" */

enum { K_COMPRESSED, K_ZERO, K_UNALLOC, K_DATA };

static atomic_uint decodes;

static int grain_kind(uint64_t i)
{
	switch (i % 8) {
	case 3:
		return K_ZERO;
	case 5:
		return K_UNALLOC;
	case 6:
		return K_DATA;
	default:
		return K_COMPRESSED;
	}
}

/* What the virtual disk holds at off. */
static uint8_t expect_byte(uint64_t off)
{
	int k = grain_kind(off / GS);

	return k == K_ZERO || k == K_UNALLOC ? 0 : pattern_byte(off);
}

static long expect_mismatch(const uint8_t *buf, size_t len, uint64_t off)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != expect_byte(off + i))
			return (long)i;
	return -1;
}

/* The image's bytes: one record per grain. */
static uint8_t *build_image(void)
{
	uint8_t *img = calloc(NGRAINS, REC);

	CHECK(img);
	for (uint32_t i = 0; i < NGRAINS; i++) {
		uint8_t *r = img + (size_t)i * REC;
		uint32_t magic = MAGIC;

		memcpy(r, &magic, 4);
		memcpy(r + 4, &i, 4);
		pattern_fill(r + 8, GS, (uint64_t)i * GS);
		if (grain_kind(i) == K_COMPRESSED)
			for (uint32_t j = 0; j < GS; j++)
				r[8 + j] ^= 0x5c;
	}
	return img;
}

static int xorz_probe(const uint8_t *head, size_t len)
{
	return 0;
}

static int xorz_open(struct bdev *b, struct bsrc *src, const char *path)
{
	b->priv = src;
	b->info.format = "xorz";
	b->info.size = IMG;
	b->info.compressed = true;
	b->info.read_only = true;
	b->info.cluster_size = GS;
	b->info.extent_count = 1;
	return 0;
}

static void xorz_close(struct bdev *b)
{
	bsrc_close(b->priv);
}

/* One run per grain. */
static int xorz_map(struct bdev *b, uint64_t off, uint64_t len,
		    struct bdev_map *m)
{
	uint64_t i = off / GS, in = off % GS;
	struct bsrc *src = b->priv;

	*m = (struct bdev_map){ .len = GS - in < len ? GS - in : len,
				.src = src, .read_only = true };
	switch (grain_kind(i)) {
	case K_ZERO:
		m->kind = BDEV_MAP_ZERO;
		break;
	case K_UNALLOC:
		m->kind = BDEV_MAP_UNALLOC;
		break;
	case K_DATA:
		m->kind = BDEV_MAP_DATA;
		m->src_off = i * REC + 8 + in;
		break;
	default:
		m->kind = BDEV_MAP_COMPRESSED;
		m->src_off = i * REC;
		m->src_len = REC;
		m->grain_off = i * GS;
		m->grain_size = GS;
	}
	return 0;
}

static int xorz_decode(struct bdev *b, const struct bdev_map *m,
		       const uint8_t *in, size_t inlen, uint8_t *out)
{
	uint32_t magic, idx;

	atomic_fetch_add(&decodes, 1);
	if (inlen < REC)
		return bdev_err(-EIO, "%s: grain record at offset %" PRIu64
				" is %zu bytes, expected %u", b->filename,
				m->src_off, inlen, REC);
	memcpy(&magic, in, 4);
	memcpy(&idx, in + 4, 4);
	if (magic != MAGIC || idx != m->grain_off / GS)
		return bdev_err(-EIO, "%s: grain record at offset %" PRIu64
				": bad magic or index", b->filename, m->src_off);
	for (uint32_t j = 0; j < GS; j++)
		out[j] = in[8 + j] ^ 0x5c;
	return 0;
}

static const struct bdev_format xorz_format = {
	.name = "xorz",
	.probe = xorz_probe,
	.open = xorz_open,
	.close = xorz_close,
	.map = xorz_map,
	.decode = xorz_decode,
};

static uint8_t *image;
static char path[PATH_MAX];

/* Opens the image from memory or from the file (io_uring path). */
static struct bdev *open_xorz(bool from_file, uint64_t cache_bytes,
			      uint32_t readahead)
{
	struct bdev_open_opts opts = { .grain_cache_bytes = cache_bytes,
				       .readahead_grains = readahead };
	struct bsrc *src;
	struct bdev *b;

	if (from_file)
		CHECK_EQ(bsrc_open_file(path, false, true, &src), 0);
	else
		CHECK_EQ(bsrc_open_mem(image, (size_t)NGRAINS * REC, "mem.xorz",
				       &src), 0);
	CHECK_EQ(bdev_open_format(&xorz_format, src, &opts, &b), 0);
	return b;
}

static void ok_cb(void *opaque, int ret)
{
	CHECK_EQ(ret, 0);
	(*(int *)opaque)++;
}

/* Reads the whole disk sequentially in unaligned 1000-byte pieces, four at
   a time; every compressed grain is inflated once. */
static void test_sequential(bool from_file)
{
	struct bdev *b = open_xorz(from_file, 0, 0);
	static uint8_t buf[IMG];
	struct bdev_queue *q;
	struct bdev_stats st;
	unsigned compressed = 0;
	int done = 0, queued = 0;

	CHECK_EQ(bdev_queue_new(4, &q), 0);
	for (uint64_t off = 0; off < IMG; off += 1000) {
		struct iovec v = { buf + off, IMG - off < 1000 ? IMG - off
							       : 1000 };
		CHECK_EQ(bdev_aio_readv(q, b, off, &v, 1, ok_cb, &done), 0);
		queued++;
		if (bdev_queue_inflight(q) >= 4)
			CHECK(bdev_queue_run(q, 1) >= 0);
	}
	while (done < queued)
		CHECK(bdev_queue_run(q, 1) >= 0);
	bdev_queue_free(q);
	CHECK_EQ(expect_mismatch(buf, IMG, 0), -1);
	for (unsigned i = 0; i < NGRAINS; i++)
		compressed += grain_kind(i) == K_COMPRESSED;
	bdev_get_stats(b, &st);
	CHECK_EQ(st.grains_inflated, compressed);
	CHECK(st.readahead_grains > 0);
	CHECK(st.grain_cache_hits > 0);
	CHECK_EQ(bdev_close(b), 0);
}

/* Sixteen reads of one grain queued together inflate it once. */
static void test_inflight_shared(void)
{
	struct bdev *b = open_xorz(true, 0, UINT32_MAX);
	uint8_t buf[16][256];
	struct bdev_queue *q;
	struct bdev_stats st;
	int done = 0;

	CHECK_EQ(bdev_queue_new(16, &q), 0);
	for (int i = 0; i < 16; i++) {
		struct iovec v = { buf[i], sizeof(buf[i]) };
		CHECK_EQ(bdev_aio_readv(q, b, GS * 9 + (uint64_t)i * 256, &v, 1,
					ok_cb, &done), 0);
	}
	while (done < 16)
		CHECK(bdev_queue_run(q, 1) >= 0);
	bdev_queue_free(q);
	for (int i = 0; i < 16; i++)
		CHECK_EQ(expect_mismatch(buf[i], 256,
					 GS * 9 + (uint64_t)i * 256), -1);
	bdev_get_stats(b, &st);
	CHECK_EQ(st.grains_inflated, 1);
	CHECK_EQ(st.grain_cache_misses, 16);
	CHECK_EQ(bdev_close(b), 0);
}

/* Reads one byte of grain g with the blocking helper and checks it. */
static void read_grain(struct bdev *b, unsigned g)
{
	uint8_t c;

	CHECK_EQ(bdev_pread(b, &c, 1, (uint64_t)g * GS + 17), 0);
	CHECK_EQ(c, expect_byte((uint64_t)g * GS + 17));
}

static uint64_t inflated(struct bdev *b)
{
	struct bdev_stats st;

	bdev_get_stats(b, &st);
	return st.grains_inflated;
}

/* A read of a whole grain into one buffer is inflated straight into it
   and not cached; one that shares the grain with a partial read, or is
   split over two buffers, goes through the cache. */
static void test_whole_grain_direct(void)
{
	struct bdev *b = open_xorz(true, 0, UINT32_MAX);
	static uint8_t whole[GS], part[256], split[GS];
	struct iovec v[4] = { { whole, GS }, { part, sizeof(part) },
			      { split, 1000 }, { split + 1000, GS - 1000 } };
	struct bdev_queue *q;
	struct bdev_stats st;
	int done = 0;

	CHECK_EQ(bdev_queue_new(8, &q), 0);
	/* grain 1 whole, grain 1 in part, grain 2 whole but split */
	CHECK_EQ(bdev_aio_readv(q, b, GS * 1, &v[0], 1, ok_cb, &done), 0);
	CHECK_EQ(bdev_aio_readv(q, b, GS * 1 + 100, &v[1], 1, ok_cb, &done),
		 0);
	CHECK_EQ(bdev_aio_readv(q, b, GS * 2, &v[2], 2, ok_cb, &done), 0);
	while (done < 3)
		CHECK(bdev_queue_run(q, 1) >= 0);
	CHECK_EQ(expect_mismatch(whole, GS, GS * 1), -1);
	CHECK_EQ(expect_mismatch(part, sizeof(part), GS * 1 + 100), -1);
	CHECK_EQ(expect_mismatch(split, GS, GS * 2), -1);
	CHECK_EQ(inflated(b), 2);
	/* both grains were cached (a partial waiter, a split buffer) */
	memset(whole, 0, GS);
	CHECK_EQ(bdev_pread(b, whole, GS, GS * 1), 0);
	CHECK_EQ(bdev_pread(b, split, GS, GS * 2), 0);
	CHECK_EQ(expect_mismatch(whole, GS, GS * 1), -1);
	CHECK_EQ(expect_mismatch(split, GS, GS * 2), -1);
	CHECK_EQ(inflated(b), 2);
	/* grain 4 read whole twice: inflated into the buffer each time */
	for (int i = 0; i < 2; i++) {
		memset(whole, 0, GS);
		CHECK_EQ(bdev_pread(b, whole, GS, GS * 4), 0);
		CHECK_EQ(expect_mismatch(whole, GS, GS * 4), -1);
	}
	CHECK_EQ(inflated(b), 4);
	bdev_get_stats(b, &st);
	CHECK_EQ(st.grain_cache_hits, 2);
	bdev_queue_free(q);
	CHECK_EQ(bdev_close(b), 0);
}

/* A cache of three grains evicts the least recently used. */
static void test_eviction(void)
{
	struct bdev *b = open_xorz(false, 3 * GS, UINT32_MAX);

	read_grain(b, 0);
	read_grain(b, 1);
	read_grain(b, 2);
	CHECK_EQ(inflated(b), 3);
	read_grain(b, 0); /* hit; 1 is now the oldest */
	CHECK_EQ(inflated(b), 3);
	read_grain(b, 4); /* evicts 1 */
	CHECK_EQ(inflated(b), 4);
	read_grain(b, 1); /* evicts 2 */
	CHECK_EQ(inflated(b), 5);
	read_grain(b, 0);
	read_grain(b, 4);
	CHECK_EQ(inflated(b), 5);
	read_grain(b, 2);
	CHECK_EQ(inflated(b), 6);
	CHECK_EQ(bdev_close(b), 0);
}

/* A sequential reader gets the next grains inflated ahead of it. */
static void test_readahead(bool from_file)
{
	struct bdev *b = open_xorz(from_file, 0, 4);
	struct bdev_stats st;
	uint8_t buf[100];

	CHECK_EQ(bdev_pread(b, buf, 100, 0), 0);
	bdev_get_stats(b, &st);
	CHECK_EQ(st.readahead_grains, 0); /* one read is not a sequence */
	CHECK_EQ(bdev_pread(b, buf, 100, 100), 0);
	CHECK_EQ(expect_mismatch(buf, 100, 100), -1);
	bdev_get_stats(b, &st);
	/* grains 1, 2 and 4 follow (3 is zeroed); from a file they may still
	   be in flight, and a reader that asks meanwhile joins them */
	if (!from_file) {
		CHECK_EQ(st.readahead_grains, 3);
		CHECK_EQ(st.grains_inflated, 4);
	}
	read_grain(b, 1);
	read_grain(b, 2);
	read_grain(b, 4);
	bdev_get_stats(b, &st);
	CHECK_EQ(st.grains_inflated, 4);
	CHECK_EQ(bdev_close(b), 0);
}

/* A layer closed with read-aheads still on a queue: they are dropped. */
static void test_close_under_readahead(void)
{
	struct bdev *b = open_xorz(true, 0, 8);
	struct bdev_queue *q;
	uint8_t buf[64];
	struct iovec v = { buf, sizeof(buf) };
	int done = 0;

	CHECK_EQ(bdev_queue_new(4, &q), 0);
	CHECK_EQ(bdev_aio_readv(q, b, 0, &v, 1, ok_cb, &done), 0);
	CHECK_EQ(bdev_aio_readv(q, b, 64, &v, 1, ok_cb, &done), 0);
	CHECK_EQ(bdev_queue_inflight(q), 2);
	/* run only until both requests are done; the read-aheads may not be */
	while (done < 2)
		CHECK(bdev_queue_run(q, 1) >= 0);
	CHECK_EQ(bdev_close(b), 0);
	bdev_queue_free(q);
}

/* A corrupt record fails the read with the driver's message. */
static void test_decode_error(void)
{
	struct bdev *b;
	uint8_t buf[10];

	image[9 * REC] ^= 0xff;
	b = open_xorz(false, 0, UINT32_MAX);
	CHECK_EQ(bdev_pread(b, buf, 10, 9 * GS + 5), -EIO);
	CHECK(strstr(bdev_errmsg(), "mem.xorz"));
	CHECK(strstr(bdev_errmsg(), "bad magic"));
	CHECK_EQ(bdev_close(b), 0);
	image[9 * REC] ^= 0xff;
}

static struct bdev *shared;

/* Random reads through a cache far smaller than the disk. */
static void *reader(void *arg)
{
	uint64_t rng = 0x9e3779b9u * ((uintptr_t)arg + 1);
	uint8_t buf[3 * GS];

	for (int n = 0; n < 300; n++) {
		uint64_t len, off;

		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		len = 1 + rng % sizeof(buf);
		off = (rng >> 20) % (IMG - len + 1);
		CHECK_EQ(bdev_pread(shared, buf, len, off), 0);
		CHECK_EQ(expect_mismatch(buf, len, off), -1);
	}
	return NULL;
}

static void test_threads(void)
{
	pthread_t th[4];

	shared = open_xorz(true, 2 * GS, 2);
	for (uintptr_t i = 0; i < 4; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, reader, (void *)i), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	CHECK_EQ(bdev_close(shared), 0);
}

int main(void)
{
	int fd;

	image = build_image();
	snprintf(path, sizeof(path), "%s/ovk-xorz-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, image, (size_t)NGRAINS * REC),
		 (ssize_t)(NGRAINS * REC));
	close(fd);

	test_sequential(false);
	test_sequential(true);
	test_inflight_shared();
	test_whole_grain_direct();
	test_eviction();
	test_readahead(false);
	test_readahead(true);
	test_close_under_readahead();
	test_decode_error();
	test_threads();
	unlink(path);
	free(image);
	return 0;
}
