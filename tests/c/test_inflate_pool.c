/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_inflate_pool.c - compressed grains inflated by the shared pool of
 * workers: a streamOptimized image written by the engine's own writer is
 * read by many threads, each with its own queue and many requests in
 * flight; images are closed while the pool still inflates their
 * read-aheads; a damaged grain fails only its own request, with the
 * driver's message; inflate_threads sizes the pool (or turns it off).
 */
#include <dirent.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "testutil.h"

#define GRAIN 65536u
#define NGRAINS 160u
#define IMG ((uint64_t)NGRAINS * GRAIN)
#define NTHREADS 8
#define DEPTH 16
#define PER_THREAD 400

static char dir[PATH_MAX], path[PATH_MAX + 16];

/* Grains 7, 17, 27... are never written: they read as zeros. */
static bool grain_is_hole(uint64_t g)
{
	return g % 10 == 7;
}

static uint8_t expect_byte(uint64_t off)
{
	return grain_is_hole(off / GRAIN) ? 0 : pattern_byte(off);
}

static long expect_mismatch(const uint8_t *buf, size_t len, uint64_t off)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != expect_byte(off + i))
			return (long)i;
	return -1;
}

/* A streamOptimized image at path holding the pattern (and holes). */
static void make_stream_image(const char *p)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "streamOptimized",
				       .size = IMG };
	struct bdev_writer *w;
	uint8_t *buf = malloc(GRAIN);

	CHECK(buf);
	CHECK_EQ(bdev_writer_new(p, &co, &w), 0);
	CHECK_EQ(bdev_writer_grain(w), GRAIN);
	for (uint64_t g = 0; g < NGRAINS; g++) {
		if (grain_is_hole(g))
			continue;
		pattern_fill(buf, GRAIN, g * GRAIN);
		CHECK_EQ(bdev_writer_write(w, g * GRAIN, buf, GRAIN), 0);
	}
	CHECK_EQ(bdev_writer_close(w), 0);
	free(buf);
}

static struct bdev *open_image(const char *p, uint64_t cache, uint32_t ra,
			       uint32_t threads)
{
	struct bdev_open_opts o = { .flags = BDEV_O_SHARE,
				    .grain_cache_bytes = cache,
				    .readahead_grains = ra,
				    .inflate_threads = threads };
	struct bdev *b;

	CHECK_EQ(bdev_open(p, &o, &b), 0);
	return b;
}

/* The offload pool's threads in this process, told by their name (a
   sanitizer's runtime may start threads of its own). */
static long thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	long n = 0;

	CHECK(d);
	while ((de = readdir(d))) {
		char p[288], comm[64] = "";
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/proc/self/task/%s/comm", de->d_name);
		f = fopen(p, "r");
		if (!f)
			continue; /* the thread exited meanwhile */
		if (fgets(comm, sizeof(comm), f) &&
		    strcmp(comm, OPOOL_THREAD_NAME "\n") == 0)
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

struct slot {
	uint8_t *buf;
	uint64_t off;
	size_t len;
	int ret;
	bool busy;
};

static void slot_cb(void *opaque, int ret)
{
	struct slot *s = opaque;

	s->ret = ret;
	s->busy = false;
}

static uint64_t rng_next(uint64_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 7;
	*st ^= *st << 17;
	return *st;
}

static struct bdev *shared;

/*
 * One thread's queue: DEPTH requests in flight, of four shapes: whole
 * grains into one buffer (inflated straight into it), runs of several
 * grains, small unaligned pieces, and ranges split over two iovecs; every
 * fourth request continues where the last ended, so read-ahead joins in.
 */
static void *reader(void *arg)
{
	uint64_t rng = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1), next = 0;
	struct slot slots[DEPTH];
	struct bdev_queue *q;
	unsigned started = 0, finished = 0;

	CHECK_EQ(bdev_queue_new(DEPTH, &q), 0);
	for (int i = 0; i < DEPTH; i++) {
		slots[i] = (struct slot){ .buf = malloc(4 * GRAIN) };
		CHECK(slots[i].buf);
	}
	while (finished < PER_THREAD) {
		for (int i = 0; i < DEPTH && started < PER_THREAD; i++) {
			struct slot *s = &slots[i];
			struct iovec iov[2];
			uint64_t r = rng_next(&rng);
			size_t cut;

			if (s->busy)
				continue;
			switch (r % 4) {
			case 0:
				s->len = GRAIN;
				s->off = (r >> 8) % NGRAINS * GRAIN;
				break;
			case 1:
				s->len = (1 + (r >> 8) % 4) * GRAIN;
				s->off = (r >> 16) % (NGRAINS - 3) * GRAIN;
				break;
			case 2:
				s->len = 1 + (r >> 8) % 5000;
				s->off = (r >> 24) % (IMG - s->len);
				break;
			default:
				s->len = 4096;
				s->off = next;
				break;
			}
			if (s->off + s->len > IMG)
				s->off = IMG - s->len;
			next = s->off + s->len;
			memset(s->buf, 0xa5, s->len);
			cut = r % 2 ? (r >> 32) % (s->len + 1) : s->len;
			iov[0] = (struct iovec){ s->buf, cut };
			iov[1] = (struct iovec){ s->buf + cut, s->len - cut };
			s->busy = true;
			CHECK_EQ(bdev_aio_readv(q, shared, s->off, iov,
						cut < s->len ? 2 : 1, slot_cb, s),
				 0);
			started++;
		}
		CHECK(bdev_queue_run(q, 1) >= 0);
		for (int i = 0; i < DEPTH; i++) {
			struct slot *s = &slots[i];

			if (s->busy || !s->len)
				continue;
			CHECK_EQ(s->ret, 0);
			CHECK_EQ(expect_mismatch(s->buf, s->len, s->off), -1);
			s->len = 0;
			finished++;
		}
	}
	bdev_queue_free(q);
	for (int i = 0; i < DEPTH; i++)
		free(slots[i].buf);
	return NULL;
}

/* Many threads, each with its own queue, read one image through a small
   cache (entries evicted while others copy out of them). */
static void test_many_queues(uint64_t cache)
{
	pthread_t th[NTHREADS];
	struct bdev_stats st;

	shared = open_image(path, cache, 8, 0);
	for (uintptr_t i = 0; i < NTHREADS; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, reader, (void *)i), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	bdev_get_stats(shared, &st);
	CHECK(st.grains_inflated > 0);
	CHECK_EQ(bdev_close(shared), 0);
}

static void ok_cb(void *opaque, int ret)
{
	CHECK_EQ(ret, 0);
	(*(int *)opaque)++;
}

/*
 * Images closed while the pool inflates their read-aheads: each round
 * reads a few small pieces in sequence with a long read-ahead window, and
 * closes the image as soon as those requests are done, while the grains
 * read ahead are still being read or inflated; the queue is freed after
 * the close. Another thread keeps the pool busy with a second image.
 */
static atomic_bool stop_busy;

static void *busy_reader(void *arg)
{
	struct bdev *b = open_image(path, 0, 8, 0);
	uint8_t *buf = malloc(8 * GRAIN);
	uint64_t off = 0;

	(void)arg;
	CHECK(buf);
	while (!atomic_load(&stop_busy)) {
		CHECK_EQ(bdev_pread(b, buf, 8 * GRAIN, off), 0);
		CHECK_EQ(expect_mismatch(buf, 8 * GRAIN, off), -1);
		off = (off + 8 * GRAIN) % (IMG - 8 * GRAIN);
	}
	free(buf);
	CHECK_EQ(bdev_close(b), 0);
	return NULL;
}

static void test_close_busy(void)
{
	pthread_t th;
	uint8_t buf[4][512];

	atomic_store(&stop_busy, false);
	CHECK_EQ(pthread_create(&th, NULL, busy_reader, NULL), 0);
	for (int round = 0; round < 40; round++) {
		struct bdev *b = open_image(path, 0, 64, 0);
		uint64_t base = (uint64_t)(round % 8) * 8 * GRAIN;
		struct bdev_queue *q;
		int done = 0;

		CHECK_EQ(bdev_queue_new(8, &q), 0);
		for (int i = 0; i < 4; i++) {
			struct iovec v = { buf[i], sizeof(buf[i]) };

			CHECK_EQ(bdev_aio_readv(q, b, base + (uint64_t)i * 512,
						&v, 1, ok_cb, &done), 0);
		}
		while (done < 4)
			CHECK(bdev_queue_run(q, 1) >= 0);
		for (int i = 0; i < 4; i++)
			CHECK_EQ(expect_mismatch(buf[i], 512,
						 base + (uint64_t)i * 512), -1);
		CHECK_EQ(bdev_close(b), 0);
		/* read-aheads still on q finish without their layer */
		bdev_queue_free(q);
	}
	atomic_store(&stop_busy, true);
	pthread_join(th, NULL);
}

/*
 * BDEV_O_STREAM_READAHEAD: one sequential stream of 512 KiB requests
 * served alternately by two threads (each with its own queue, as FUSE
 * workers are) reads right while the pool reads grains ahead into the
 * cache, and readers wait for or take back grains being read ahead; a
 * random reader alongside is not taken for the stream. Then images are
 * closed right after a stream started, with its read-ahead in the pool.
 */
#define CHUNK (8 * GRAIN)

static struct bdev *stream_b;
static atomic_uint_fast64_t stream_next;

static void *stream_reader(void *arg)
{
	uint8_t *buf = malloc(CHUNK);
	uint64_t off;

	(void)arg;
	CHECK(buf);
	while ((off = atomic_fetch_add(&stream_next, CHUNK)) + CHUNK <= IMG) {
		CHECK_EQ(bdev_pread(stream_b, buf, CHUNK, off), 0);
		CHECK_EQ(expect_mismatch(buf, CHUNK, off), -1);
	}
	free(buf);
	return NULL;
}

static void test_stream_readahead(uint64_t cache)
{
	struct bdev_open_opts o = { .flags = BDEV_O_SHARE |
					     BDEV_O_STREAM_READAHEAD,
				    .grain_cache_bytes = cache };
	pthread_t th[2];
	struct bdev_stats st;
	uint8_t small[4096];
	uint64_t rng = 12345;

	for (int pass = 0; pass < 3; pass++) {
		CHECK_EQ(bdev_open(path, &o, &stream_b), 0);
		atomic_store(&stream_next, 0);
		for (uintptr_t i = 0; i < 2; i++)
			CHECK_EQ(pthread_create(&th[i], NULL, stream_reader,
						(void *)i), 0);
		for (int i = 0; i < 50; i++) {
			uint64_t off = rng_next(&rng) % (IMG - sizeof(small));

			CHECK_EQ(bdev_pread(stream_b, small, sizeof(small),
					    off), 0);
			CHECK_EQ(expect_mismatch(small, sizeof(small), off),
				 -1);
		}
		for (int i = 0; i < 2; i++)
			pthread_join(th[i], NULL);
		bdev_get_stats(stream_b, &st);
		if (sysconf(_SC_NPROCESSORS_ONLN) > 1 && pass == 2)
			CHECK(st.readahead_grains > 0);
		CHECK_EQ(bdev_close(stream_b), 0);
	}
	for (int round = 0; round < 40; round++) {
		uint8_t *buf = malloc(CHUNK);

		CHECK(buf);
		CHECK_EQ(bdev_open(path, &o, &stream_b), 0);
		CHECK_EQ(bdev_pread(stream_b, buf, CHUNK, 0), 0);
		CHECK_EQ(bdev_pread(stream_b, buf, GRAIN, CHUNK), 0);
		CHECK_EQ(expect_mismatch(buf, GRAIN, CHUNK), -1);
		/* the grains read ahead are still in the pool */
		CHECK_EQ(bdev_close(stream_b), 0);
		free(buf);
	}
}

/* A damaged grain fails its own request with the driver's message, naming
   the file; the requests around it, inflated by the pool, succeed. */
static void test_damaged_grain(void)
{
	char bad[PATH_MAX + 16];
	struct bdev *b;
	struct bdev_map m;
	struct bdev_queue *q;
	struct slot slots[8];
	uint8_t junk[64];
	int fd, finished = 0;

	snprintf(bad, sizeof(bad), "%s/bad.vmdk", dir);
	make_stream_image(bad);
	b = open_image(bad, 0, UINT32_MAX, 0);
	CHECK_EQ(b->fmt->map(b, 3 * GRAIN, GRAIN, &m), 0);
	CHECK_EQ(m.kind, BDEV_MAP_COMPRESSED);
	CHECK_EQ(bdev_close(b), 0);
	/* overwrite the middle of grain 3's deflate stream */
	memset(junk, 0xff, sizeof(junk));
	fd = open(bad, O_WRONLY);
	CHECK(fd >= 0);
	CHECK_EQ(pwrite(fd, junk, sizeof(junk),
			(off_t)(m.src_off + 12 + m.src_len / 4)),
		 (ssize_t)sizeof(junk));
	close(fd);

	b = open_image(bad, 0, UINT32_MAX, 0);
	CHECK_EQ(bdev_queue_new(8, &q), 0);
	for (int i = 0; i < 8; i++) {
		struct iovec v;

		slots[i] = (struct slot){ .buf = malloc(GRAIN), .len = GRAIN,
					  .off = (uint64_t)i * GRAIN,
					  .busy = true };
		CHECK(slots[i].buf);
		v = (struct iovec){ slots[i].buf, GRAIN };
		CHECK_EQ(bdev_aio_readv(q, b, slots[i].off, &v, 1, slot_cb,
					&slots[i]), 0);
	}
	while (finished < 8) {
		CHECK(bdev_queue_run(q, 1) >= 0);
		for (int i = 0; i < 8; i++) {
			if (slots[i].busy || !slots[i].len)
				continue;
			if (i == 3) {
				CHECK_EQ(slots[i].ret, -EIO);
				CHECK(strstr(bdev_errmsg(), "bad.vmdk"));
				CHECK(strstr(bdev_errmsg(), "does not inflate"));
			} else {
				CHECK_EQ(slots[i].ret, 0);
				CHECK_EQ(expect_mismatch(slots[i].buf, GRAIN,
							 slots[i].off), -1);
			}
			slots[i].len = 0;
			free(slots[i].buf);
			finished++;
		}
	}
	bdev_queue_free(q);
	CHECK_EQ(bdev_close(b), 0);
	unlink(bad);
}

/* Reads 32 grains at depth 32 and checks them. */
static void read_at_depth(struct bdev *b)
{
	uint8_t *buf = malloc(32 * GRAIN);
	struct bdev_queue *q;
	int done = 0;

	CHECK(buf);
	CHECK_EQ(bdev_queue_new(32, &q), 0);
	for (int i = 0; i < 32; i++) {
		struct iovec v = { buf + (size_t)i * GRAIN, GRAIN };

		CHECK_EQ(bdev_aio_readv(q, b, (uint64_t)(i * 3 % NGRAINS) * GRAIN,
					&v, 1, ok_cb, &done), 0);
	}
	while (done < 32)
		CHECK(bdev_queue_run(q, 1) >= 0);
	for (int i = 0; i < 32; i++)
		CHECK_EQ(expect_mismatch(buf + (size_t)i * GRAIN, GRAIN,
					 (uint64_t)(i * 3 % NGRAINS) * GRAIN), -1);
	bdev_queue_free(q);
	free(buf);
}

/* A caller that polls the queue's eventfd instead of blocking in
   bdev_queue_run() is woken by the pool's completions too. */
static void test_poll_fd(void)
{
	struct bdev *b = open_image(path, 0, UINT32_MAX, 0);
	uint8_t *buf = malloc(16 * GRAIN);
	struct bdev_queue *q;
	struct pollfd pfd;
	int done = 0;

	CHECK(buf);
	CHECK_EQ(bdev_queue_new(16, &q), 0);
	pfd = (struct pollfd){ .fd = bdev_queue_fd(q), .events = POLLIN };
	for (int i = 0; i < 16; i++) {
		struct iovec v = { buf + (size_t)i * GRAIN, GRAIN };

		CHECK_EQ(bdev_aio_readv(q, b, (uint64_t)(20 + i) * GRAIN, &v, 1,
					ok_cb, &done), 0);
	}
	while (done < 16) {
		uint64_t n;

		CHECK_EQ(poll(&pfd, 1, 10000), 1);
		CHECK(read(pfd.fd, &n, sizeof(n)) == sizeof(n) ||
		      errno == EAGAIN);
		CHECK(bdev_queue_run(q, 0) >= 0);
	}
	CHECK_EQ(expect_mismatch(buf, 16 * GRAIN, 20 * GRAIN), -1);
	bdev_queue_free(q);
	free(buf);
	CHECK_EQ(bdev_close(b), 0);
}

/* inflate_threads = UINT32_MAX inflates on the queue's thread: the pool
   starts only the one worker that reads the cold grain tables off that
   thread; 3 grows it to three workers, and an image asking for fewer
   shares it. Must run first. */
static void test_pool_size(void)
{
	long before = thread_count();
	struct bdev *b;

	b = open_image(path, 0, UINT32_MAX, UINT32_MAX);
	read_at_depth(b);
	CHECK_EQ(bdev_close(b), 0);
	CHECK_EQ(thread_count(), before + 1);

	b = open_image(path, 0, UINT32_MAX, 3);
	read_at_depth(b);
	CHECK_EQ(bdev_close(b), 0);
	CHECK_EQ(thread_count(), before + 3);

	b = open_image(path, 0, UINT32_MAX, 1);
	read_at_depth(b);
	CHECK_EQ(bdev_close(b), 0);
	CHECK_EQ(thread_count(), before + 3);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "%s/ovk-ipool-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/stream.vmdk", dir);
	make_stream_image(path);

	test_pool_size();
	test_many_queues(0);
	test_many_queues(4 * GRAIN);
	test_poll_fd();
	test_close_busy();
	test_stream_readahead(0);
	test_stream_readahead(4 * GRAIN);
	test_damaged_grain();

	unlink(path);
	rmdir(dir);
	return 0;
}
