/* SPDX-License-Identifier: Apache-2.0 */
/*
 * live_snapshot.c - live snapshots under load, as a test and as a bench.
 *
 *   live_snapshot test   [DIR]  the checks below (meson test)
 *   live_snapshot bench  [DIR]  completion latency with and without
 *                               snapshots switching (bench/)
 *
 * "stall": one queue has a 2 MiB write queued and not yet reaped (its
 * thread is busy elsewhere) while another thread snapshots. The snapshot
 * must not wait for that write, nor may the queue's next submission wait
 * for the snapshot; the in-flight write lands in the frozen layer and the
 * next one in the child (read back from both). Before the fix the
 * snapshot spun 30 s in the exclusive lock and failed with EBUSY, and the
 * submission waited those 30 s: the test allows 5 s for each, far above
 * what a loaded 2-core CI machine under ASan needs (milliseconds).
 *
 * "load": 4 queue threads each keep 32 reads and writes in flight on
 * their own quarter of one disk, every read checked against a model,
 * while another thread snapshots in a loop (8 times; 40 with OVK_LONG=1)
 * and a third asks for the disk's info, extent, limits and block status.
 * Afterwards the model is written to a raw file and qemu-img compares the
 * chain with it and checks every layer.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>

#include "../testutil.h"

#define DISK (64ull << 20)
#define THREADS 4
#define DEPTH 32
#define MAXLEN (256u << 10)
#define REGION (DISK / THREADS)

static char dir[256];
static uint8_t *model;
static struct bdev *disk;
static atomic_bool stop;
/* bdev_snapshot calls started and ended: a request was in flight during
   one when starts at its completion exceed ends at its submission */
static atomic_uint snap_starts, snap_ends;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* ---- the stall ---------------------------------------------------------- */

struct flag {
	bool done;
	int ret;
};

static void flag_cb(void *opaque, int ret)
{
	struct flag *f = opaque;

	f->done = true;
	f->ret = ret;
}

static void *snap_thread(void *arg)
{
	const char *child = arg;
	uint64_t t0 = now_ns();
	int ret = bdev_snapshot(disk, child);

	if (ret < 0)
		fprintf(stderr, "snapshot: %s\n", bdev_errmsg());
	return (void *)(intptr_t)(ret < 0 ? -1 : (intptr_t)((now_ns() - t0) / 1000000));
}

static void test_stall(void)
{
	char base[300], child[300];
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	struct bdev_create_opts co = { .size = 16 << 20 };
	uint8_t *buf = malloc(2 << 20), *small = malloc(4096), *got = malloc(2 << 20);
	struct iovec v = { buf, 2 << 20 }, sv = { small, 4096 };
	struct flag f1 = { 0 }, f2 = { 0 };
	struct bdev_queue *q;
	struct bdev *frozen;
	pthread_t t;
	void *res;
	uint64_t t0, ms;

	snprintf(base, sizeof(base), "%s/stall.vmdk", dir);
	snprintf(child, sizeof(child), "%s/stall-snap.vmdk", dir);
	CHECK_EQ(bdev_create(base, &co), 0);
	CHECK_EQ(bdev_open(base, &oo, &disk), 0);
	/* allocated first, so the 2 MiB overwrite goes through the ring */
	memset(buf, 0x11, 2 << 20);
	CHECK_EQ(bdev_pwrite(disk, buf, 2 << 20, 0), 0);
	CHECK_EQ(bdev_pwrite(disk, buf, 4096, 8 << 20), 0);
	CHECK_EQ(bdev_queue_new(DEPTH, &q), 0);
	pattern_fill(buf, 2 << 20, 0);
	CHECK_EQ(bdev_aio_writev(q, disk, 0, &v, 1, flag_cb, &f1), 0);
	/* this thread does not reap; another one snapshots */
	CHECK_EQ(pthread_create(&t, NULL, snap_thread, child), 0);
	CHECK_EQ(pthread_join(t, &res), 0);
	CHECK((intptr_t)res >= 0);
	printf("stall: the snapshot took %ld ms with a write unreaped\n",
	       (long)(intptr_t)res);
	CHECK((intptr_t)res < 5000);
	pattern_fill(small, 4096, 8 << 20);
	t0 = now_ns();
	CHECK_EQ(bdev_aio_writev(q, disk, 8 << 20, &sv, 1, flag_cb, &f2), 0);
	ms = (now_ns() - t0) / 1000000;
	printf("stall: the next submission took %" PRIu64 " ms\n", ms);
	CHECK(ms < 5000);
	while (!f1.done || !f2.done)
		CHECK(bdev_queue_run(q, 1) >= 0);
	CHECK_EQ(f1.ret, 0);
	CHECK_EQ(f2.ret, 0);
	CHECK_EQ(bdev_snapshot_wait(disk), 0);
	/* the frozen layer is shared now: a reader opens it while the disk
	   stays open for writing; it has the write that was in flight and not
	   the one queued after the switch */
	CHECK_EQ(bdev_open(base, NULL, &frozen), 0);
	CHECK_EQ(bdev_pread(frozen, got, 2 << 20, 0), 0);
	CHECK_EQ(pattern_mismatch(got, 2 << 20, 0), -1);
	CHECK_EQ(bdev_pread(frozen, got, 4096, 8 << 20), 0);
	for (int i = 0; i < 4096; i++)
		CHECK_EQ(got[i], 0x11);
	CHECK_EQ(bdev_close(frozen), 0);
	CHECK_EQ(bdev_pread(disk, got, 4096, 8 << 20), 0);
	CHECK_EQ(pattern_mismatch(got, 4096, 8 << 20), -1);
	bdev_queue_free(q);
	CHECK_EQ(bdev_close(disk), 0);
	test_run("qemu-img check -q %s && qemu-img check -q %s", base, child);
	free(buf);
	free(small);
	free(got);
	printf("ok stall\n");
}

/* ---- the load ----------------------------------------------------------- */

struct req {
	struct worker *w;
	bool busy, write;
	uint64_t off, len, t0;
	unsigned ends0; /* snap_ends at submission */
	uint8_t *buf;
};

struct worker {
	unsigned id;
	struct bdev_queue *q;
	struct req reqs[DEPTH];
	uint64_t seed, done, bad;
	/* completion latencies in microseconds, of requests in flight while
	   no snapshot call ran [0] and while one ran [1]; the time the
	   bdev_aio_readv calls took, likewise */
	uint64_t *lat[2], *sub[2];
	size_t nlat[2], caplat[2], nsub[2], capsub[2];
	int err;
};

static void push(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 4096;
		*v = realloc(*v, *cap * sizeof(uint64_t));
		CHECK(*v);
	}
	(*v)[(*n)++] = x;
}

static void req_cb(void *opaque, int ret)
{
	struct req *r = opaque;
	struct worker *w = r->w;

	int d = atomic_load(&snap_starts) > r->ends0;

	push(&w->lat[d], &w->nlat[d], &w->caplat[d], (now_ns() - r->t0) / 1000);
	r->busy = false;
	w->done++;
	if (ret < 0) {
		fprintf(stderr, "thread %u: %s at %" PRIu64 " failed: %s\n", w->id,
			r->write ? "write" : "read", r->off, bdev_errmsg());
		w->err = ret;
		return;
	}
	if (r->write) {
		memcpy(model + r->off, r->buf, r->len);
	} else if (memcmp(model + r->off, r->buf, r->len) != 0) {
		w->bad++;
		fprintf(stderr, "thread %u: read of %" PRIu64 " bytes at %" PRIu64
			" differs from the model\n", w->id, r->len, r->off);
	}
}

/* Queues one request on a free slot, on a range no other request of
   this worker has in flight (other workers own other quarters). */
static void submit_one(struct worker *w, struct req *r)
{
	uint64_t base = w->id * REGION;
	int ret;

	for (;;) {
		bool overlap = false;
		r->len = 1 + xorshift(&w->seed) % MAXLEN;
		if (xorshift(&w->seed) % 2)
			r->len = (r->len + 4095) / 4096 * 4096;
		r->off = base + xorshift(&w->seed) % (REGION - r->len);
		if (xorshift(&w->seed) % 2)
			r->off &= ~4095ull;
		for (unsigned k = 0; k < DEPTH; k++) {
			struct req *o = &w->reqs[k];
			if (o->busy && o->off < r->off + r->len &&
			    r->off < o->off + o->len)
				overlap = true;
		}
		if (!overlap)
			break;
	}
	r->write = xorshift(&w->seed) % 2;
	if (r->write)
		for (uint64_t i = 0; i < r->len; i += 8) {
			uint64_t x = xorshift(&w->seed);
			memcpy(r->buf + i, &x, r->len - i < 8 ? r->len - i : 8);
		}
	r->busy = true;
	r->ends0 = atomic_load(&snap_ends);
	r->t0 = now_ns();
	{
		struct iovec v = { r->buf, r->len };
		uint64_t t1;
		int d;
		ret = r->write ? bdev_aio_writev(w->q, disk, r->off, &v, 1, req_cb, r)
			       : bdev_aio_readv(w->q, disk, r->off, &v, 1, req_cb, r);
		t1 = now_ns();
		d = atomic_load(&snap_starts) > r->ends0;
		/* a read's submission does no I/O on an allocated disk: what
		   it waits for is the top lock */
		if (!r->write)
			push(&w->sub[d], &w->nsub[d], &w->capsub[d],
			     (t1 - r->t0) / 1000);
	}
	if (ret < 0) {
		fprintf(stderr, "thread %u: submit: %s\n", w->id, bdev_errmsg());
		w->err = ret;
		r->busy = false;
	}
}

/* One queue's event loop: keep DEPTH requests in flight, wait only on
   the ring. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;

	CHECK_EQ(bdev_queue_new(DEPTH * 2, &w->q), 0);
	for (unsigned k = 0; k < DEPTH; k++) {
		w->reqs[k].w = w;
		w->reqs[k].buf = malloc(MAXLEN + 8);
		CHECK(w->reqs[k].buf);
	}
	while (!atomic_load(&stop) && !w->err) {
		for (unsigned k = 0; k < DEPTH && !w->err; k++)
			if (!w->reqs[k].busy)
				submit_one(w, &w->reqs[k]);
		if (bdev_queue_run(w->q, 1) < 0)
			w->err = -EIO;
	}
	while (bdev_queue_inflight(w->q))
		CHECK(bdev_queue_run(w->q, 1) >= 0);
	bdev_queue_free(w->q);
	for (unsigned k = 0; k < DEPTH; k++)
		free(w->reqs[k].buf);
	return NULL;
}

/* What a management thread asks of a disk in use while the queues write
   and snapshots switch its top: the queries that take no queue. Their
   answers must stay those of this disk (under ThreadSanitizer, their reads
   must not race with the first write's or the switch's stores). */
static void *observer_main(void *arg)
{
	uint64_t *calls = arg;

	while (!atomic_load(&stop)) {
		struct bdev_info info;
		struct bdev_extent_info ext;
		struct bdev_limits lim = { .struct_size = sizeof(lim) };
		uint64_t pnum;
		unsigned depth;

		CHECK_EQ(bdev_get_info(disk, &info), 0);
		CHECK_EQ(info.size, DISK);
		CHECK(!info.read_only);
		CHECK_EQ(bdev_get_extent(disk, 0, &ext), 0);
		CHECK_EQ(ext.size, DISK);
		CHECK_EQ(bdev_get_limits(disk, &lim), 0);
		CHECK(bdev_block_status(disk, 0, DISK, &pnum) >= 0);
		CHECK(pnum >= 1 && pnum <= DISK);
		CHECK(bdev_block_status_depth(disk, DISK / 2, DISK / 2, &pnum,
					      &depth) >= 0);
		CHECK(pnum >= 1 && pnum <= DISK / 2);
		(*calls)++;
		usleep(1000);
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts and prints one latency population; returns its maximum. */
static uint64_t lat_report(const char *what, uint64_t *v, size_t n)
{
	if (!n) {
		printf("%-28s no completions\n", what);
		return 0;
	}
	qsort(v, n, sizeof(*v), cmp_u64);
	printf("%-28s n=%zu p50=%.2f ms p99=%.2f ms p99.9=%.2f ms max=%.2f ms\n",
	       what, n, v[n / 2] / 1000.0, v[n * 99 / 100] / 1000.0,
	       v[n * 999 / 1000] / 1000.0, v[n - 1] / 1000.0);
	return v[n - 1];
}

static void run_load(unsigned snapshots, unsigned gap_ms, bool bench)
{
	char top[300], path[300];
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	struct bdev_create_opts co = { .size = DISK };
	struct worker w[THREADS];
	pthread_t t[THREADS], obs;
	uint64_t obs_calls = 0;
	uint64_t *snap_ms = calloc(snapshots + 1, sizeof(uint64_t)), bad = 0, ops = 0;
	uint64_t *all[2] = { NULL, NULL }, *subs[2] = { NULL, NULL };
	size_t nall[2] = { 0, 0 }, nsubs[2] = { 0, 0 };

	model = calloc(1, DISK);
	CHECK(model && snap_ms);
	snprintf(top, sizeof(top), "%s/load.vmdk", dir);
	CHECK_EQ(bdev_create(top, &co), 0);
	CHECK_EQ(bdev_open(top, &oo, &disk), 0);
	if (bench) {
		/* a disk in use: its grains allocated, writes go in place */
		uint64_t seed = 42;
		for (uint64_t i = 0; i < DISK; i += 8) {
			uint64_t x = xorshift(&seed);
			memcpy(model + i, &x, 8);
		}
		CHECK_EQ(bdev_pwrite(disk, model, DISK, 0), 0);
		CHECK_EQ(bdev_flush(disk), 0);
	}
	atomic_store(&stop, false);
	memset(w, 0, sizeof(w));
	for (unsigned i = 0; i < THREADS; i++) {
		w[i].id = i;
		w[i].seed = 0x9e3779b97f4a7c15ull * (i + 1);
		CHECK_EQ(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	if (!bench)
		CHECK_EQ(pthread_create(&obs, NULL, observer_main, &obs_calls),
			 0);
	usleep(gap_ms * 1000);
	for (unsigned s = 0; s < snapshots; s++) {
		uint64_t t0;
		snprintf(path, sizeof(path), "%s/load-%u.vmdk", dir, s);
		atomic_fetch_add(&snap_starts, 1);
		t0 = now_ns();
		CHECK_EQ(bdev_snapshot(disk, path), 0);
		snap_ms[s] = (now_ns() - t0) / 1000;
		atomic_fetch_add(&snap_ends, 1);
		usleep(gap_ms * 1000);
	}
	if (!snapshots)
		usleep(gap_ms * 1000);
	atomic_store(&stop, true);
	if (!bench) {
		CHECK_EQ(pthread_join(obs, NULL), 0);
		printf("load: %" PRIu64 " rounds of queries alongside\n",
		       obs_calls);
		CHECK(obs_calls > 0);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		CHECK_EQ(pthread_join(t[i], NULL), 0);
		CHECK_EQ(w[i].err, 0);
		bad += w[i].bad;
		ops += w[i].done;
		for (int d = 0; d < 2; d++) {
			all[d] = realloc(all[d], (nall[d] + w[i].nlat[d] + 1) *
					 sizeof(uint64_t));
			if (w[i].nlat[d])
				memcpy(all[d] + nall[d], w[i].lat[d],
				       w[i].nlat[d] * sizeof(uint64_t));
			nall[d] += w[i].nlat[d];
			free(w[i].lat[d]);
			subs[d] = realloc(subs[d], (nsubs[d] + w[i].nsub[d] + 1) *
					  sizeof(uint64_t));
			if (w[i].nsub[d])
				memcpy(subs[d] + nsubs[d], w[i].sub[d],
				       w[i].nsub[d] * sizeof(uint64_t));
			nsubs[d] += w[i].nsub[d];
			free(w[i].sub[d]);
		}
	}
	CHECK_EQ(bdev_snapshot_wait(disk), 0);
	CHECK_EQ(bdev_close(disk), 0);
	printf("load: %u snapshots, %" PRIu64 " requests, %" PRIu64
	       " reads differing from the model\n", snapshots, ops, bad);
	CHECK_EQ(bad, 0);
	if (snapshots) {
		qsort(snap_ms, snapshots, sizeof(uint64_t), cmp_u64);
		printf("snapshot call: median %.2f ms, max %.2f ms\n",
		       snap_ms[snapshots / 2] / 1000.0,
		       snap_ms[snapshots - 1] / 1000.0);
	}
	lat_report("completion, no snapshot:", all[0], nall[0]);
	lat_report("completion, in a snapshot:", all[1], nall[1]);
	lat_report("read submit, no snapshot:", subs[0], nsubs[0]);
	lat_report("read submit, in a snapshot:", subs[1], nsubs[1]);
	if (!bench) {
		/* the chain reads back as the model, every layer checks */
		int fd;
		snprintf(path, sizeof(path), "%s/model.raw", dir);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		CHECK(fd >= 0);
		CHECK(pwrite(fd, model, DISK, 0) == (ssize_t)DISK);
		close(fd);
		snprintf(top, sizeof(top), "%s/load-%u.vmdk", dir, snapshots - 1);
		test_run("qemu-img compare -q -f vmdk -F raw %s %s", top, path);
		test_run("qemu-img check -q %s/load.vmdk", dir);
		for (unsigned s = 0; s < snapshots; s++)
			test_run("qemu-img check -q %s/load-%u.vmdk", dir, s);
	}
	test_run("rm -f %s/load*.vmdk %s/model.raw", dir, dir);
	free(all[0]);
	free(all[1]);
	free(subs[0]);
	free(subs[1]);
	free(snap_ms);
	free(model);
}

int main(int argc, char **argv)
{
	bool bench = argc > 1 && !strcmp(argv[1], "bench");
	bool lng = getenv("OVK_LONG") && !strcmp(getenv("OVK_LONG"), "1");

	if (!bench && system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img is not installed\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/ovk-live-XXXXXX", argc > 2 ? argv[2] :
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir));
	if (bench) {
		printf("== without snapshots\n");
		run_load(0, 3000, true);
		printf("== one snapshot every 250 ms\n");
		run_load(12, 250, true);
	} else {
		test_stall();
		run_load(lng ? 40 : 8, 50, false);
	}
	test_run("rm -rf %s", dir);
	return 0;
}
