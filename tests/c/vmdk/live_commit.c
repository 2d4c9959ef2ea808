/* SPDX-License-Identifier: Apache-2.0 */
/*
 * live_commit.c - bdev_commit_live under load.
 *
 *   live_commit test   [DIR]  the checks below (meson test)
 *   live_commit bench  [DIR]  the same load, printing the longest time a
 *                             submission took during each commit (bench/)
 *
 * "load": 4 queue threads keep 32 reads and writes each in flight on
 * their own quarter of a 64 MiB disk, every read checked against a model
 * of what was written. Meanwhile another thread, 3 times (12 with
 * OVK_LONG=1): bdev_snapshot, a pause with writes going to the child,
 * bdev_commit_live, a pause with writes going to the parent again. At the
 * end the disk is closed, the children are gone, qemu-img compares the
 * base with the model and checks it.
 *
 * "busy": a read-only view of the frozen parent makes the commit fail
 * with EBUSY naming the parent; closed, the commit goes through.
 * "refused": no parent (a fresh VMDK, a raw disk) is EINVAL.
 *
 * "exclusive": while a live commit of a 16 MiB child runs (a writer queue
 * busy meanwhile), bdev_snapshot and bdev_grow are EBUSY saying a live
 * commit of the child runs; while a snapshot is being taken,
 * bdev_commit_live is EBUSY saying so. After each returns, the other one
 * works. (The test holds the top lock shared to keep the running one
 * before its switch, so the overlap is certain, not a matter of timing.)
 *
 * "grow": bdev_grow of an open raw disk while a queue keeps writing it;
 * the grown part is written and read back, qemu-img sees the new size and
 * the data. Shrinking is EINVAL; an open streamOptimized VMDK is ENOTSUP
 * naming its subformat (live_grow.c: the VMDK kinds that grow).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>

#include "../testutil.h"
#include "internal.h" /* the top lock, to hold a switch back; chain_op */

#define DISK (64ull << 20)
#define THREADS 4
#define DEPTH 32
#define MAXLEN (256u << 10)
#define REGION (DISK / THREADS)

static char dir[256];
static uint8_t *model;
static struct bdev *disk;
static atomic_bool stop;
static atomic_bool in_commit;
static _Atomic uint64_t max_sub_commit_us, max_sub_other_us;

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

static void atomic_max(_Atomic uint64_t *m, uint64_t v)
{
	uint64_t cur = atomic_load(m);

	while (v > cur && !atomic_compare_exchange_weak(m, &cur, v))
		;
}

struct req {
	struct worker *w;
	bool busy, write;
	uint64_t off, len;
	uint8_t *buf;
};

struct worker {
	unsigned id;
	struct bdev_queue *q;
	struct req reqs[DEPTH];
	uint64_t seed, done, bad;
	int err;
};

static void req_cb(void *opaque, int ret)
{
	struct req *r = opaque;
	struct worker *w = r->w;

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

/* Queues one request on a range no other request of this worker has in
   flight (other workers own other quarters). */
static void submit_one(struct worker *w, struct req *r)
{
	uint64_t base = w->id * REGION, t0, us;
	struct iovec v;
	bool during;
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
	v.iov_base = r->buf;
	v.iov_len = r->len;
	during = atomic_load(&in_commit);
	t0 = now_ns();
	ret = r->write ? bdev_aio_writev(w->q, disk, r->off, &v, 1, req_cb, r)
		       : bdev_aio_readv(w->q, disk, r->off, &v, 1, req_cb, r);
	us = (now_ns() - t0) / 1000;
	atomic_max(during || atomic_load(&in_commit) ? &max_sub_commit_us :
		   &max_sub_other_us, us);
	if (ret < 0) {
		fprintf(stderr, "thread %u: submit: %s\n", w->id, bdev_errmsg());
		w->err = ret;
		r->busy = false;
	}
}

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

static void run_load(unsigned rounds, unsigned gap_ms, bool bench)
{
	char base[300], path[300];
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	struct bdev_create_opts co = { .size = DISK };
	struct worker w[THREADS];
	pthread_t t[THREADS];
	uint64_t bad = 0, ops = 0, seed = 7;
	struct stat st;

	model = calloc(1, DISK);
	CHECK(model);
	snprintf(base, sizeof(base), "%s/load.vmdk", dir);
	CHECK_EQ(bdev_create(base, &co), 0);
	CHECK_EQ(bdev_open(base, &oo, &disk), 0);
	/* half the disk written before: the parent has data to overwrite */
	for (uint64_t i = 0; i < DISK / 2; i += 8) {
		uint64_t x = xorshift(&seed);
		memcpy(model + i, &x, 8);
	}
	CHECK_EQ(bdev_pwrite(disk, model, DISK / 2, 0), 0);
	atomic_store(&stop, false);
	memset(w, 0, sizeof(w));
	for (unsigned i = 0; i < THREADS; i++) {
		w[i].id = i;
		w[i].seed = 0x9e3779b97f4a7c15ull * (i + 1);
		CHECK_EQ(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (unsigned s = 0; s < rounds; s++) {
		uint64_t t0, us;
		snprintf(path, sizeof(path), "%s/load-snap.vmdk", dir);
		usleep(gap_ms * 1000);
		CHECK_EQ(bdev_snapshot(disk, path), 0);
		usleep(gap_ms * 1000);
		atomic_store(&max_sub_commit_us, 0);
		atomic_store(&in_commit, true);
		t0 = now_ns();
		if (bdev_commit_live(disk) < 0) {
			fprintf(stderr, "commit: %s\n", bdev_errmsg());
			CHECK(0);
		}
		us = (now_ns() - t0) / 1000;
		atomic_store(&in_commit, false);
		CHECK(stat(path, &st) < 0 && errno == ENOENT);
		printf("round %u: commit took %.1f ms, longest submission "
		       "during it %.2f ms\n", s, us / 1000.0,
		       atomic_load(&max_sub_commit_us) / 1000.0);
	}
	usleep(gap_ms * 1000);
	atomic_store(&stop, true);
	for (unsigned i = 0; i < THREADS; i++) {
		CHECK_EQ(pthread_join(t[i], NULL), 0);
		CHECK_EQ(w[i].err, 0);
		bad += w[i].bad;
		ops += w[i].done;
	}
	CHECK_EQ(bdev_close(disk), 0);
	printf("load: %u snapshot+commit rounds, %" PRIu64 " requests, %" PRIu64
	       " reads differing from the model; longest submission outside "
	       "commits %.2f ms\n", rounds, ops, bad,
	       atomic_load(&max_sub_other_us) / 1000.0);
	CHECK_EQ(bad, 0);
	if (!bench) {
		int fd;
		snprintf(path, sizeof(path), "%s/model.raw", dir);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		CHECK(fd >= 0);
		CHECK(pwrite(fd, model, DISK, 0) == (ssize_t)DISK);
		close(fd);
		test_run("qemu-img compare -q -f vmdk -F raw %s %s", base, path);
		test_run("qemu-img check -q %s", base);
	}
	test_run("rm -f %s/load*.vmdk %s/model.raw", dir, dir);
	free(model);
}

static void test_busy(void)
{
	char base[300], child[300];
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	struct bdev_create_opts co = { .size = 8 << 20 };
	uint8_t *buf = malloc(1 << 20);
	struct bdev *view;
	struct stat st;

	CHECK(buf);
	snprintf(base, sizeof(base), "%s/busy.vmdk", dir);
	snprintf(child, sizeof(child), "%s/busy-snap.vmdk", dir);
	CHECK_EQ(bdev_create(base, &co), 0);
	CHECK_EQ(bdev_open(base, &oo, &disk), 0);
	pattern_fill(buf, 1 << 20, 0);
	CHECK_EQ(bdev_pwrite(disk, buf, 1 << 20, 0), 0);
	CHECK_EQ(bdev_snapshot(disk, child), 0);
	CHECK_EQ(bdev_snapshot_wait(disk), 0);
	pattern_fill(buf, 1 << 20, 3 << 20);
	CHECK_EQ(bdev_pwrite(disk, buf, 1 << 20, 3 << 20), 0);
	CHECK_EQ(bdev_open(base, NULL, &view), 0);
	CHECK_EQ(bdev_commit_live(disk), -EBUSY);
	CHECK(strstr(bdev_errmsg(), base));
	printf("busy: %s\n", bdev_errmsg());
	/* still the child on top, still writable */
	CHECK_EQ(bdev_pwrite(disk, buf, 4096, 5 << 20), 0);
	CHECK_EQ(bdev_close(view), 0);
	CHECK_EQ(bdev_commit_live(disk), 0);
	CHECK(stat(child, &st) < 0 && errno == ENOENT);
	{
		struct bdev_info bi;
		CHECK_EQ(bdev_get_info(disk, &bi), 0);
		CHECK(strcmp(bi.filename, base) == 0);
	}
	/* writes after the commit go to the parent, now the top */
	pattern_fill(buf, 1 << 20, 6 << 20);
	CHECK_EQ(bdev_pwrite(disk, buf, 1 << 20, 6 << 20), 0);
	CHECK_EQ(bdev_close(disk), 0);
	CHECK_EQ(bdev_open(base, NULL, &view), 0);
	CHECK_EQ(bdev_pread(view, buf, 1 << 20, 0), 0);
	CHECK_EQ(pattern_mismatch(buf, 1 << 20, 0), -1);
	CHECK_EQ(bdev_pread(view, buf, 1 << 20, 3 << 20), 0);
	CHECK_EQ(pattern_mismatch(buf, 1 << 20, 3 << 20), -1);
	CHECK_EQ(bdev_pread(view, buf, 1 << 20, 6 << 20), 0);
	CHECK_EQ(pattern_mismatch(buf, 1 << 20, 6 << 20), -1);
	CHECK_EQ(bdev_close(view), 0);
	test_run("qemu-img check -q %s", base);
	free(buf);
	printf("ok busy\n");
}

static void test_refused(void)
{
	char path[300];
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	struct bdev_create_opts co = { .size = 1 << 20 };
	struct bdev_create_opts ro = { .format = "raw", .size = 1 << 20 };

	snprintf(path, sizeof(path), "%s/alone.vmdk", dir);
	CHECK_EQ(bdev_create(path, &co), 0);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	CHECK_EQ(bdev_commit_live(disk), -EINVAL);
	CHECK(strstr(bdev_errmsg(), path));
	CHECK_EQ(bdev_close(disk), 0);
	/* a raw disk has no CID for a child to name: no snapshot, no parent */
	snprintf(path, sizeof(path), "%s/alone.raw", dir);
	CHECK_EQ(bdev_create(path, &ro), 0);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	snprintf(path, sizeof(path), "%s/alone-snap.vmdk", dir);
	CHECK_EQ(bdev_snapshot(disk, path), -ENOTSUP);
	CHECK_EQ(bdev_commit_live(disk), -EINVAL);
	CHECK_EQ(bdev_close(disk), 0);
	printf("ok refused\n");
}

static void *grow_writer(void *arg);

/* A bdev_commit_live (child NULL) or bdev_snapshot run on its own thread. */
struct chain_call {
	const char *child;
	pthread_t t;
	int ret;
	char msg[600];
};

static void *chain_main(void *arg)
{
	struct chain_call *c = arg;

	c->ret = c->child ? bdev_snapshot(disk, c->child) :
		 bdev_commit_live(disk);
	snprintf(c->msg, sizeof(c->msg), "%s", bdev_errmsg());
	return NULL;
}

/* Starts c while this thread holds the top lock shared (the switch waits
   for it), and returns once c is running. The calls this thread makes
   meanwhile take the lock shared again to word their EBUSY message:
   glibc's rwlocks prefer readers, so that does not wait for the switch. */
static void chain_start(struct chain_call *c, enum chain_op op)
{
	pthread_rwlock_rdlock(&disk->top_lock);
	CHECK_EQ(pthread_create(&c->t, NULL, chain_main, c), 0);
	while (atomic_load(&disk->chain_op) != (int)op)
		usleep(100);
}

/* Lets c finish; it must have succeeded. */
static void chain_finish(struct chain_call *c)
{
	pthread_rwlock_unlock(&disk->top_lock);
	CHECK_EQ(pthread_join(c->t, NULL), 0);
	if (c->ret < 0)
		fprintf(stderr, "%s\n", c->msg);
	CHECK_EQ(c->ret, 0);
}

static void test_exclusive(void)
{
	char base[300], child[300], child2[300], child3[300];
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	struct bdev_create_opts co = { .size = 32 << 20 };
	struct chain_call c = { 0 };
	uint8_t *buf = malloc(16 << 20);
	struct stat st;
	pthread_t w;

	CHECK(buf);
	snprintf(base, sizeof(base), "%s/excl.vmdk", dir);
	snprintf(child, sizeof(child), "%s/excl-s1.vmdk", dir);
	snprintf(child2, sizeof(child2), "%s/excl-s2.vmdk", dir);
	snprintf(child3, sizeof(child3), "%s/excl-s3.vmdk", dir);
	CHECK_EQ(bdev_create(base, &co), 0);
	CHECK_EQ(bdev_open(base, &oo, &disk), 0);
	CHECK_EQ(bdev_snapshot(disk, child), 0);
	/* a child worth copying: 16 MiB of data */
	pattern_fill(buf, 16 << 20, 8 << 20);
	CHECK_EQ(bdev_pwrite(disk, buf, 16 << 20, 8 << 20), 0);
	atomic_store(&stop, false);
	CHECK_EQ(pthread_create(&w, NULL, grow_writer, NULL), 0);

	/* a live commit runs: no snapshot, no grow */
	chain_start(&c, CHAIN_COMMIT);
	CHECK_EQ(bdev_snapshot(disk, child2), -EBUSY);
	printf("exclusive: %s\n", bdev_errmsg());
	CHECK(strstr(bdev_errmsg(), "a live commit of"));
	CHECK(strstr(bdev_errmsg(), child));
	CHECK(stat(child2, &st) < 0 && errno == ENOENT);
	CHECK_EQ(bdev_grow(disk, 64 << 20), -EBUSY);
	CHECK(strstr(bdev_errmsg(), "a live commit of"));
	chain_finish(&c);
	CHECK(stat(child, &st) < 0 && errno == ENOENT);
	/* it returned: the snapshot works */
	CHECK_EQ(bdev_snapshot(disk, child2), 0);

	/* a snapshot is being taken: no commit */
	c.child = child3;
	chain_start(&c, CHAIN_SNAPSHOT);
	CHECK_EQ(bdev_commit_live(disk), -EBUSY);
	printf("exclusive: %s\n", bdev_errmsg());
	CHECK(strstr(bdev_errmsg(), "a snapshot of"));
	CHECK(strstr(bdev_errmsg(), child2));
	chain_finish(&c);
	CHECK_EQ(bdev_snapshot_wait(disk), 0);
	/* it returned: the commit works (the third child into the second,
	   then the second into the base) */
	CHECK_EQ(bdev_commit_live(disk), 0);
	CHECK_EQ(bdev_commit_live(disk), 0);
	atomic_store(&stop, true);
	CHECK_EQ(pthread_join(w, NULL), 0);
	CHECK(stat(child2, &st) < 0 && errno == ENOENT);
	CHECK(stat(child3, &st) < 0 && errno == ENOENT);
	CHECK_EQ(bdev_close(disk), 0);
	/* the base holds everything: the writer's MiB and the 16 MiB */
	CHECK_EQ(bdev_open(base, NULL, &disk), 0);
	CHECK_EQ(bdev_pread(disk, buf, 16 << 20, 8 << 20), 0);
	CHECK_EQ(pattern_mismatch(buf, 16 << 20, 8 << 20), -1);
	CHECK_EQ(bdev_pread(disk, buf, 1 << 20, 0), 0);
	CHECK_EQ(pattern_mismatch(buf, 1 << 20, 0), -1);
	CHECK_EQ(bdev_close(disk), 0);
	test_run("qemu-img check -q %s", base);
	free(buf);
	printf("ok exclusive\n");
}

/* the grow test's writer: a queue rewriting the first MiB until told */
static void *grow_writer(void *arg)
{
	struct bdev_queue *q;
	uint8_t *buf = malloc(1 << 20);
	struct iovec v = { buf, 1 << 20 };
	unsigned rounds = 0;

	(void)arg;
	CHECK(buf);
	pattern_fill(buf, 1 << 20, 0);
	CHECK_EQ(bdev_queue_new(8, &q), 0);
	while (!atomic_load(&stop) || rounds < 4) {
		CHECK_EQ(bdev_aio_writev(q, disk, 0, &v, 1, NULL, NULL), 0);
		while (bdev_queue_inflight(q))
			CHECK(bdev_queue_run(q, 1) >= 0);
		rounds++;
	}
	bdev_queue_free(q);
	free(buf);
	return NULL;
}

static void test_grow(void)
{
	char path[300], model_path[300];
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	struct bdev_create_opts ro = { .format = "raw", .size = 4 << 20 };
	struct bdev_create_opts vo = { .size = 4 << 20,
				       .subformat = "streamOptimized" };
	uint8_t *buf = malloc(1 << 20);
	struct bdev_info bi;
	pthread_t t;
	int fd;

	CHECK(buf);
	snprintf(path, sizeof(path), "%s/grow.raw", dir);
	CHECK_EQ(bdev_create(path, &ro), 0);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	atomic_store(&stop, false);
	CHECK_EQ(pthread_create(&t, NULL, grow_writer, NULL), 0);
	CHECK_EQ(bdev_grow(disk, 2 << 20), -EINVAL);
	CHECK_EQ(bdev_grow(disk, 12 << 20), 0);
	CHECK_EQ(bdev_get_info(disk, &bi), 0);
	CHECK_EQ(bi.size, 12ull << 20);
	pattern_fill(buf, 1 << 20, 11 << 20);
	CHECK_EQ(bdev_pwrite(disk, buf, 1 << 20, 11 << 20), 0);
	atomic_store(&stop, true);
	CHECK_EQ(pthread_join(t, NULL), 0);
	CHECK_EQ(bdev_pread(disk, buf, 1 << 20, 11 << 20), 0);
	CHECK_EQ(pattern_mismatch(buf, 1 << 20, 11 << 20), -1);
	CHECK_EQ(bdev_close(disk), 0);
	/* what qemu-img sees: 12 MiB, the pattern at 0 and at 11 MiB */
	snprintf(model_path, sizeof(model_path), "%s/grow-model.raw", dir);
	fd = open(model_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, 12 << 20) == 0);
	pattern_fill(buf, 1 << 20, 0);
	CHECK(pwrite(fd, buf, 1 << 20, 0) == 1 << 20);
	pattern_fill(buf, 1 << 20, 11 << 20);
	CHECK(pwrite(fd, buf, 1 << 20, 11 << 20) == 1 << 20);
	close(fd);
	test_run("qemu-img info -f raw --output=json %s | grep -q "
		 "'\"virtual-size\": 12582912'", path);
	test_run("qemu-img compare -q -f raw -F raw %s %s", path, model_path);
	/* closed, bdev_resize grows a raw file and shrinks it when asked */
	CHECK_EQ(bdev_resize(path, 16 << 20, 0), 0);
	CHECK_EQ(bdev_resize(path, 14 << 20, 0), -EINVAL);
	CHECK_EQ(bdev_resize(path, 14 << 20, BDEV_RESIZE_SHRINK), 0);
	test_run("qemu-img info -f raw --output=json %s | grep -q "
		 "'\"virtual-size\": 14680064'", path);
	test_run("qemu-img compare -q -f raw -F raw %s %s", path, model_path);
	/* an open streamOptimized VMDK does not grow (live_grow.c tests the
	   kinds that do) */
	snprintf(path, sizeof(path), "%s/grow.vmdk", dir);
	CHECK_EQ(bdev_create(path, &vo), 0);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	CHECK_EQ(bdev_grow(disk, 8 << 20), -ENOTSUP);
	CHECK(strstr(bdev_errmsg(), "streamOptimized"));
	CHECK_EQ(bdev_close(disk), 0);
	free(buf);
	printf("ok grow\n");
}

int main(int argc, char **argv)
{
	bool bench = argc > 1 && !strcmp(argv[1], "bench");
	bool lng = getenv("OVK_LONG") && !strcmp(getenv("OVK_LONG"), "1");

	if (!bench && system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img is not installed\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/ovk-commit-XXXXXX", argc > 2 ? argv[2] :
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir));
	if (!bench) {
		test_refused();
		test_busy();
		test_exclusive();
		test_grow();
	}
	run_load(bench ? 8 : lng ? 12 : 3, bench ? 500 : 100, bench);
	test_run("rm -rf %s", dir);
	return 0;
}
