/* SPDX-License-Identifier: Apache-2.0 */
/*
 * copy.c - bdev_copy: an image's whole disk, read through its chain, into a
 * front-to-back writer. Workers take chunks in turn, skip what
 * bdev_block_status says reads as zeros without reading it, read the
 * grains around each data run and hand the writer the grains that are not
 * all zeros. `ovf create` and ovkd's deploy use it. Also bdev_all_zero,
 * the one all-zero test of the tree.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "create.h"
#include "internal.h"

#define COPY_CHUNK_DEFAULT (4u << 20)
#define COPY_THREADS_DEFAULT 2u
#define COPY_THREADS_MAX 64u

/* What the workers of one copy share. */
struct copy {
	struct bdev *src;
	struct bdev_writer *w;
	struct bdev_copy_opts o;
	uint64_t src_size;   /* bytes to read */
	uint64_t chunk;      /* a multiple of the writer's grain */
	atomic_uint_fast64_t next;    /* next chunk offset to take */
	atomic_uint_fast64_t written; /* bytes handed to the writer */
	uint64_t done;                /* bytes of the disk finished (mu) */
	atomic_int err;               /* first -errno */
	pthread_mutex_t mu;           /* msg, progress calls */
	char msg[512];
};

bool bdev_all_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t i;

	/* 16 bytes one by one, then the buffer against itself shifted */
	for (i = 0; i < len && i < 16; i++)
		if (p[i])
			return false;
	if (len <= 16)
		return true;
	return memcmp(p, p + 16, len - 16) == 0;
}

/* 1 when [off, off + len) of b reads as zeros without reading it (a zero
   run, or a hole at the bottom of the chain), 0 when it may hold data,
   or -errno; *pnum gets the run's length. */
static int reads_as_zero(struct bdev *b, uint64_t off, uint64_t len,
			 uint64_t *pnum)
{
	int st = bdev_block_status(b, off, len, pnum);

	if (st < 0)
		return st;
	return st == BDEV_STATUS_ZERO ||
	       (st == BDEV_STATUS_UNALLOCATED && !bdev_backing(b));
}

/* Records the first failure with this thread's message: messages are
   per thread, and the caller's thread reports it. */
static void copy_fail(struct copy *c, int err)
{
	int zero = 0;

	if (atomic_compare_exchange_strong(&c->err, &zero, err)) {
		pthread_mutex_lock(&c->mu);
		snprintf(c->msg, sizeof(c->msg), "%s", bdev_errmsg());
		pthread_mutex_unlock(&c->mu);
	}
}

/* Writes the non-zero grains of buf (len bytes of the disk at off); the
   part of the last grain past the source is zeros already. */
static int copy_grains(struct copy *c, const char *buf, uint64_t off,
		       uint64_t len)
{
	uint64_t g = c->w->grain;

	for (uint64_t o = 0; o < len; o += g) {
		size_t n = (size_t)(len - o < g ? len - o : g);
		int r;

		if (bdev_all_zero(buf + o, n))
			continue;
		r = bdev_writer_write(c->w, off + o, buf + o, n);
		if (r < 0)
			return r;
		atomic_fetch_add(&c->written, n);
	}
	return 0;
}

/* Copies [start, end) of the writer's disk: reads the whole grains around
   each run that may hold data. */
static int copy_chunk(struct copy *c, char *buf, uint64_t start, uint64_t end)
{
	uint64_t g = c->w->grain, at = start;

	while (at < end && at < c->src_size) {
		uint64_t pnum, run_end, g0, g1, rd;
		int s = reads_as_zero(c->src, at, (end < c->src_size ? end :
				      c->src_size) - at, &pnum);
		int r;

		if (s < 0)
			return s;
		run_end = at + pnum;
		if (s) {
			at = run_end;
			continue;
		}
		g0 = at / g * g;
		g1 = (run_end + g - 1) / g * g;
		if (g0 < start)
			g0 = start;
		if (g1 > end)
			g1 = end;
		rd = (g1 < c->src_size ? g1 : c->src_size) - g0;
		r = bdev_pread(c->src, buf, (size_t)rd, g0);
		if (r < 0)
			return bdev_err(r, "reading %" PRIu64 " bytes of %s at offset %"
					PRIu64 ": %s", rd, c->src->filename ?
					c->src->filename : "the source", g0,
					bdev_errmsg());
		memset(buf + rd, 0, (size_t)(g1 - g0 - rd));
		r = copy_grains(c, buf, g0, g1 - g0);
		if (r < 0)
			return r;
		at = g1;
	}
	return 0;
}

/* Reports a finished chunk to the caller's progress callback. */
static int copy_progress(struct copy *c, uint64_t bytes)
{
	uint64_t done;
	int r;

	if (!c->o.progress)
		return 0;
	/* counted under the lock, so that the calls see done grow */
	pthread_mutex_lock(&c->mu);
	done = c->done += bytes;
	r = c->o.progress(c->o.opaque, done, c->w->size);
	pthread_mutex_unlock(&c->mu);
	if (r)
		return bdev_err(r < 0 ? r : -ECANCELED, "copy stopped by its "
				"progress callback at %" PRIu64 " of %" PRIu64 " bytes",
				done, c->w->size);
	return 0;
}

static void *copy_worker(void *arg)
{
	struct copy *c = arg;
	char *buf = malloc(c->chunk);

	if (!buf) {
		copy_fail(c, bdev_err(-ENOMEM, "out of memory for a %" PRIu64
				      "-byte copy buffer", c->chunk));
		return NULL;
	}
	while (!atomic_load(&c->err)) {
		uint64_t start = atomic_fetch_add(&c->next, c->chunk), end;
		int r;

		if (start >= c->w->size)
			break;
		end = c->w->size - start < c->chunk ? c->w->size : start + c->chunk;
		r = copy_chunk(c, buf, start, end);
		if (r == 0)
			r = copy_progress(c, end - start);
		if (r < 0)
			copy_fail(c, r);
	}
	free(buf);
	return NULL;
}

/* Runs the workers: the caller's thread is one of them. */
static void copy_run(struct copy *c)
{
	pthread_t th[COPY_THREADS_MAX];
	unsigned n = 0;

	for (; n + 1 < c->o.threads; n++)
		if (pthread_create(&th[n], NULL, copy_worker, c) != 0)
			break;
	copy_worker(c);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
}

int bdev_copy(struct bdev *src, struct bdev_writer *w,
	      const struct bdev_copy_opts *o, uint64_t *written)
{
	struct copy c = { .src = src, .w = w };
	int ret;

	bdev_err_clear();
	ret = bdev_copy_opts(&c.o, sizeof(c.o), sizeof(c.o), o,
			     o ? o->struct_size : 0, "bdev_copy options");
	if (ret < 0)
		return ret;
	if (!c.o.threads)
		c.o.threads = COPY_THREADS_DEFAULT;
	if (c.o.threads > COPY_THREADS_MAX)
		return bdev_err(-EINVAL, "bdev_copy: %u threads, expected at most %u",
				c.o.threads, COPY_THREADS_MAX);
	c.chunk = c.o.chunk ? c.o.chunk : COPY_CHUNK_DEFAULT;
	c.chunk = (c.chunk + w->grain - 1) / w->grain * w->grain;
	c.src_size = src->info.size < w->size ? src->info.size : w->size;
	pthread_mutex_init(&c.mu, NULL);
	copy_run(&c);
	pthread_mutex_destroy(&c.mu);
	ret = atomic_load(&c.err);
	if (ret < 0)
		return bdev_err(ret, "%s", c.msg);
	if (written)
		*written = atomic_load(&c.written);
	return 0;
}
