/* SPDX-License-Identifier: Apache-2.0 */
/* create_convert.c - `ovf create`: convert a disk image (raw or any VMDK,
 * read through its chain) into a streamOptimized VMDK with the engine's
 * writer, straight into the package file at a given offset and hashed as
 * the engine writes it; two workers take 4 MiB chunks, skip what
 * bdev_block_status says is zero or unallocated, and hand non-zero grains
 * to bdev_writer_write. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "blockengine.h"
#include "create_i.h"

#define CHUNK (4u << 20)   /* bytes a worker takes at a time */
#define WORKERS 2

/* What the workers converting one disk share. */
struct conv {
	struct bdev *b;
	struct bdev_writer *w;
	uint64_t size, grain;
	atomic_uint_fast64_t next;      /* next chunk offset to take */
	atomic_uint_fast64_t populated;
	atomic_int err;                 /* first -errno */
	pthread_mutex_t msg_lock;
	char msg[512];
};

/* Records the first failure of a conversion with its message. */
static void conv_fail(struct conv *c, int err, const char *what)
{
	int zero = 0;

	if (atomic_compare_exchange_strong(&c->err, &zero, err)) {
		pthread_mutex_lock(&c->msg_lock);
		snprintf(c->msg, sizeof(c->msg), "%s", what);
		pthread_mutex_unlock(&c->msg_lock);
	}
}

static bool all_zero(const char *p, size_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* True when [off, off+len) of b reads as zeros without reading it: a zero
   run, or a hole at the bottom of the chain. */
static int skippable(struct bdev *b, uint64_t off, uint64_t len,
		     uint64_t *pnum)
{
	int st = bdev_block_status(b, off, len, pnum);

	if (st < 0)
		return st;
	if (st == BDEV_STATUS_ZERO)
		return 1;
	if (st == BDEV_STATUS_UNALLOCATED && !bdev_backing(b))
		return 1;
	return 0;
}

/* Converts one chunk: reads the grains that may hold data and hands the
   non-zero ones to the writer. */
static int conv_chunk(struct conv *c, char *buf, uint64_t start, uint64_t end)
{
	uint64_t at = start;

	while (at < end) {
		uint64_t pnum, run_end, g0, g1;
		int s = skippable(c->b, at, end - at, &pnum);

		if (s < 0)
			return s;
		run_end = at + pnum;
		if (s) {
			at = run_end;
			continue;
		}
		/* whole grains around the data run (the writer takes grains) */
		g0 = at / c->grain * c->grain;
		g1 = (run_end + c->grain - 1) / c->grain * c->grain;
		if (g1 > end)
			g1 = end;
		if (g0 < start)
			g0 = start;
		{
			size_t len = (size_t)(g1 - g0);
			int r = bdev_pread(c->b, buf, len, g0);

			if (r < 0)
				return r;
			for (size_t o = 0; o < len; o += c->grain) {
				size_t n = len - o < c->grain ? len - o : c->grain;

				if (all_zero(buf + o, n))
					continue;
				r = bdev_writer_write(c->w, g0 + o, buf + o, n);
				if (r < 0)
					return r;
				atomic_fetch_add(&c->populated, n);
			}
		}
		at = g1;
	}
	return 0;
}

static void *conv_worker(void *arg)
{
	struct conv *c = arg;
	char *buf = malloc(CHUNK);

	if (!buf) {
		conv_fail(c, -ENOMEM, "out of memory");
		return NULL;
	}
	while (!atomic_load(&c->err)) {
		uint64_t start = atomic_fetch_add(&c->next, CHUNK), end;
		int r;

		if (start >= c->size)
			break;
		end = c->size - start < CHUNK ? c->size : start + CHUNK;
		r = conv_chunk(c, buf, start, end);
		if (r < 0)
			conv_fail(c, r, bdev_errmsg());
	}
	free(buf);
	return NULL;
}

/* The engine's write observer: the VMDK's bytes, in order, into the
   digest. */
static int digest_written(void *opaque, uint64_t off, const void *buf,
			  size_t len)
{
	(void)off;
	return EVP_DigestUpdate(opaque, buf, len) == 1 ? 0 : -EIO;
}

/* Converts job->src into a streamOptimized VMDK at off of fd, two workers. */
int create_convert_disk(struct disk_job *job, int fd, uint64_t off)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "streamOptimized",
				       .adapter_type = job->adapter };
	const char *dst = job->href;
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	struct bdev_info info;
	struct conv c = { 0 };
	pthread_t th[WORKERS];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int nth = 0, r;

	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		fprintf(stderr, "ovf create: out of memory\n");
		EVP_MD_CTX_free(md);
		return -ENOMEM;
	}

	r = bdev_open(job->src, NULL, &c.b);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s\n", bdev_errmsg());
		goto err_free_md;
	}
	r = bdev_get_info(c.b, &info);
	if (r < 0)
		goto err_close_src;
	c.size = job->capacity = info.size;
	co.size = info.size;
	r = bdev_writer_new_fd(fd, off, dst, &co, digest_written, md, &c.w);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", dst, bdev_errmsg());
		goto err_close_src;
	}
	c.grain = bdev_writer_grain(c.w);
	if (!c.grain || CHUNK % c.grain) {
		fprintf(stderr, "ovf create: %s: grain of %llu bytes does not divide %u\n",
			dst, (unsigned long long)c.grain, CHUNK);
		r = -EINVAL;
		goto err_abort;
	}
	pthread_mutex_init(&c.msg_lock, NULL);
	for (; nth < WORKERS; nth++)
		if (pthread_create(&th[nth], NULL, conv_worker, &c) != 0)
			break;
	if (!nth)
		conv_worker(&c);
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&c.msg_lock);
	r = atomic_load(&c.err);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", job->src, c.msg);
		goto err_abort;
	}
	r = bdev_writer_finish(c.w, &job->file_size);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", dst, bdev_errmsg());
		goto err_close_src;
	}
	bdev_close(c.b);
	EVP_DigestFinal_ex(md, dig, &dlen);
	EVP_MD_CTX_free(md);
	for (unsigned i = 0; i < dlen; i++)
		sprintf(job->sha256 + 2 * i, "%02x", dig[i]);
	job->populated = atomic_load(&c.populated);
	return 0;

err_abort:
	bdev_writer_abort(c.w);
err_close_src:
	bdev_close(c.b);
err_free_md:
	EVP_MD_CTX_free(md);
	return r;
}
