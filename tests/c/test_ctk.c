/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_ctk.c - changed-block tracking: checkpoints and bdev_changed_status
 * answered against a model (the set of 64 KiB chunks each write, discard
 * or write-zeroes touched since each checkpoint), on raw and on every
 * writable VMDK subformat; across close and reopen, checkpoint deletion,
 * a checkpoint created while writes are in flight, a snapshot (the map
 * follows the disk), and a machine crash (the file found in use from
 * another boot: everything counts as changed).
 *
 *   test_ctk         all of the above
 *   test_ctk cost    what marking the map costs a write (not a test)
 *   test_ctk crash   kill -9 a writer at random points, then check that
 *                    every acknowledged write is in the map and nothing
 *                    outside the submitted writes is: 4 runs, 200 with
 *                    OVK_LONG=1
 */
#include <libdeflate.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "internal.h"
#include "testutil.h"

#define GRAN (64u << 10)
#define DISK (16ull << 20)
#define CHUNKS (DISK / GRAN)
#define MAXCP 8

static char dir[256];

/* The model: for each checkpoint, which chunks changed since it. */
struct model {
	const char *names[MAXCP];
	bool changed[MAXCP][CHUNKS];
	unsigned n;
};

static void model_touch(struct model *m, uint64_t off, uint64_t len)
{
	for (uint64_t k = off / GRAN; k <= (off + len - 1) / GRAN; k++)
		for (unsigned i = 0; i < m->n; i++)
			m->changed[i][k] = true;
}

static void model_create(struct model *m, const char *name)
{
	m->names[m->n] = name;
	memset(m->changed[m->n], 0, sizeof(m->changed[0]));
	m->n++;
}

static void model_delete(struct model *m, unsigned i)
{
	memmove(&m->names[i], &m->names[i + 1], (m->n - i - 1) * sizeof(m->names[0]));
	memmove(&m->changed[i], &m->changed[i + 1],
		(m->n - i - 1) * sizeof(m->changed[0]));
	m->n--;
}

/* Every checkpoint's answers over the whole disk equal the model's,
   walked run by run with a few odd starting offsets too. */
static void check_model(struct bdev *b, const struct model *m)
{
	const char *name;

	for (unsigned i = 0; i < m->n; i++) {
		CHECK_EQ(bdev_checkpoint_get(b, i, &name), 0);
		CHECK(!strcmp(name, m->names[i]));
	}
	CHECK_EQ(bdev_checkpoint_get(b, m->n, &name), -ENOENT);
	for (unsigned i = 0; i < m->n; i++) {
		uint64_t off = 0, pnum;
		while (off < DISK) {
			int st = bdev_changed_status(b, m->names[i], off,
						     DISK - off, &pnum);
			CHECK(st == 0 || st == 1);
			CHECK(pnum > 0 && off + pnum <= DISK);
			CHECK((off + pnum) % GRAN == 0);
			for (uint64_t k = off / GRAN; k < (off + pnum) / GRAN; k++)
				if (m->changed[i][k] != st) {
					fprintf(stderr, "checkpoint %s chunk %" PRIu64
						": engine says %d, model %d\n",
						m->names[i], k, st, m->changed[i][k]);
					exit(1);
				}
			/* a run ends where the answer changes */
			if (off + pnum < DISK)
				CHECK(m->changed[i][(off + pnum) / GRAN] != st);
			off += pnum;
		}
		/* an unaligned start and a short length */
		{
			int st = bdev_changed_status(b, m->names[i], 3 * GRAN + 100,
						     50, &pnum);
			CHECK_EQ(st, m->changed[i][3]);
			CHECK_EQ(pnum, 50);
		}
	}
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A streamOptimized image takes each grain once: writes of whole, fresh
   grains only (set by test_image). */
static bool once_only;
static bool once_used[CHUNKS];

/* A few writes, discards and zeroings at random places. */
static void random_changes(struct bdev *b, struct model *m, uint64_t *seed,
			   unsigned count)
{
	static uint8_t buf[300000];

	for (unsigned i = 0; once_only && i < count; i++) {
		uint64_t k = rnd(seed) % CHUNKS;
		while (once_used[k])
			k = (k + 1) % CHUNKS;
		once_used[k] = true;
		pattern_fill(buf, GRAN, k * GRAN);
		CHECK_EQ(bdev_pwrite(b, buf, GRAN, k * GRAN), 0);
		model_touch(m, k * GRAN, GRAN);
	}
	for (unsigned i = 0; !once_only && i < count; i++) {
		uint64_t len = 1 + rnd(seed) % sizeof(buf);
		uint64_t off = rnd(seed) % (DISK - len);
		unsigned kind = (unsigned)(rnd(seed) % 8);

		if (kind == 0) {
			CHECK_EQ(bdev_discard(b, off, len), 0);
		} else if (kind == 1) {
			CHECK_EQ(bdev_write_zeroes(b, off, len), 0);
		} else {
			pattern_fill(buf, len, off + i);
			CHECK_EQ(bdev_pwrite(b, buf, len, off), 0);
		}
		model_touch(m, off, len);
	}
}

static struct bdev *open_rw(const char *path)
{
	struct bdev_open_opts o = { .flags = BDEV_O_RDWR };
	struct bdev *b;

	CHECK_EQ(bdev_open(path, &o, &b), 0);
	return b;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Checkpoints on one image: create, change, query, reopen, delete. */
static void test_image(const char *path)
{
	static struct model m;
	char side[400];
	uint64_t seed = 0x1234567 ^ strlen(path), pnum;
	struct bdev *b;

	memset(&m, 0, sizeof(m));
	snprintf(side, sizeof(side), "%s-ctk.ovk", path);
	b = open_rw(path);
	CHECK_EQ(bdev_changed_status(b, "c1", 0, DISK, &pnum), -ENOENT);
	/* no checkpoint: nothing tracked, no file */
	random_changes(b, &m, &seed, 5);
	CHECK(!exists(side));
	CHECK_EQ(bdev_checkpoint_create(b, "c1"), 0);
	CHECK(exists(side));
	model_create(&m, "c1");
	CHECK_EQ(bdev_checkpoint_create(b, "c1"), -EEXIST);
	CHECK_EQ(bdev_checkpoint_create(b, ""), -EINVAL);
	check_model(b, &m); /* nothing changed yet */
	random_changes(b, &m, &seed, 20);
	check_model(b, &m);
	CHECK_EQ(bdev_checkpoint_create(b, "c2"), 0);
	model_create(&m, "c2");
	random_changes(b, &m, &seed, 10);
	check_model(b, &m);
	CHECK_EQ(bdev_close(b), 0);

	/* close and reopen, read-only and read-write */
	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	check_model(b, &m);
	CHECK_EQ(bdev_checkpoint_create(b, "c3"), -EROFS);
	CHECK_EQ(bdev_close(b), 0);
	b = open_rw(path);
	check_model(b, &m);
	CHECK_EQ(bdev_checkpoint_create(b, "c3"), 0);
	model_create(&m, "c3");
	random_changes(b, &m, &seed, 10);
	check_model(b, &m);
	/* deleting the middle one: its changes count for c1 still */
	CHECK_EQ(bdev_checkpoint_delete(b, "c2"), 0);
	model_delete(&m, 1);
	CHECK_EQ(bdev_checkpoint_delete(b, "c2"), -ENOENT);
	check_model(b, &m);
	/* deleting the newest: c1 becomes the active one */
	CHECK_EQ(bdev_checkpoint_delete(b, "c3"), 0);
	model_delete(&m, 1);
	random_changes(b, &m, &seed, 5);
	check_model(b, &m);
	CHECK_EQ(bdev_close(b), 0);
	b = open_rw(path);
	check_model(b, &m);
	CHECK_EQ(bdev_close(b), 0);
}

static void test_formats(void)
{
	static const char *const subformats[] = {
		"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
		"twoGbMaxExtentFlat", "streamOptimized", "vmfs", "vmfsSparse",
	};
	char path[300];

	snprintf(path, sizeof(path), "%s/d.raw", dir);
	test_run("qemu-img create -q -f raw %s %llu", path,
		 (unsigned long long)DISK);
	test_image(path);
	printf("ok raw\n");
	for (size_t i = 0; i < sizeof(subformats) / sizeof(*subformats); i++) {
		struct bdev_create_opts co = { .size = DISK,
					       .subformat = subformats[i] };
		snprintf(path, sizeof(path), "%s/d-%s.vmdk", dir, subformats[i]);
		CHECK_EQ(bdev_create(path, &co), 0);
		once_only = !strcmp(subformats[i], "streamOptimized");
		memset(once_used, 0, sizeof(once_used));
		test_image(path);
		once_only = false;
		if (i != 4) /* a stream is checked by qemu-img only as a whole */
			test_run("qemu-img check -q %s", path);
		printf("ok %s\n", subformats[i]);
	}
}

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

/* A checkpoint created while writes are queued: those count as changed
   since it as well (they may land after it). */
static void test_inflight(void)
{
	char path[300];
	static uint8_t buf[4][GRAN];
	static struct model m;
	struct iovec v[4];
	struct flag f[4] = { 0 };
	struct bdev_queue *q;
	struct bdev *b;

	memset(&m, 0, sizeof(m));
	snprintf(path, sizeof(path), "%s/inflight.raw", dir);
	test_run("qemu-img create -q -f raw %s %llu", path,
		 (unsigned long long)DISK);
	b = open_rw(path);
	CHECK_EQ(bdev_checkpoint_create(b, "before"), 0);
	model_create(&m, "before");
	CHECK_EQ(bdev_queue_new(16, &q), 0);
	for (int i = 0; i < 4; i++) {
		v[i].iov_base = buf[i];
		v[i].iov_len = GRAN;
		CHECK_EQ(bdev_aio_writev(q, b, (uint64_t)(10 + 3 * i) * GRAN,
					 &v[i], 1, flag_cb, &f[i]), 0);
	}
	CHECK_EQ(bdev_checkpoint_create(b, "during"), 0);
	model_create(&m, "during");
	while (bdev_queue_inflight(q))
		CHECK(bdev_queue_run(q, 1) >= 0);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(f[i].ret, 0);
		model_touch(&m, (uint64_t)(10 + 3 * i) * GRAN, GRAN);
	}
	check_model(b, &m);
	bdev_queue_free(q);
	CHECK_EQ(bdev_close(b), 0);
	printf("ok in flight\n");
}

/* The map follows the disk through a snapshot: it moves next to the
   child, and changes before and after the switch are both in it. */
static void test_snapshot(void)
{
	char base[300], child[300], side[400];
	struct bdev_create_opts co = { .size = DISK };
	static struct model m;
	uint64_t seed = 99;
	struct bdev *b;

	memset(&m, 0, sizeof(m));
	snprintf(base, sizeof(base), "%s/s.vmdk", dir);
	snprintf(child, sizeof(child), "%s/s-1.vmdk", dir);
	CHECK_EQ(bdev_create(base, &co), 0);
	b = open_rw(base);
	CHECK_EQ(bdev_checkpoint_create(b, "full"), 0);
	model_create(&m, "full");
	random_changes(b, &m, &seed, 10);
	CHECK_EQ(bdev_snapshot(b, child), 0);
	snprintf(side, sizeof(side), "%s-ctk.ovk", child);
	CHECK(exists(side));
	snprintf(side, sizeof(side), "%s-ctk.ovk", base);
	CHECK(!exists(side));
	random_changes(b, &m, &seed, 10);
	CHECK_EQ(bdev_checkpoint_create(b, "after"), 0);
	model_create(&m, "after");
	random_changes(b, &m, &seed, 5);
	check_model(b, &m);
	CHECK_EQ(bdev_close(b), 0);
	b = open_rw(child);
	check_model(b, &m);
	CHECK_EQ(bdev_close(b), 0);
	test_run("qemu-img check -q %s", child);
	/* a commit folds the disk back into the parent: the map goes along */
	CHECK_EQ(bdev_commit(child), 0);
	snprintf(side, sizeof(side), "%s-ctk.ovk", base);
	CHECK(exists(side));
	b = open_rw(base);
	check_model(b, &m);
	CHECK_EQ(bdev_close(b), 0);
	printf("ok snapshot\n");
}

/* A machine crash: the file says in use, from another boot. Every
   checkpoint then reports everything changed. */
static void test_other_boot(void)
{
	char path[300], side[400];
	uint8_t hdr[2][4096];
	uint64_t pnum, seed = 5;
	static struct model m;
	struct bdev *b;
	int fd;

	memset(&m, 0, sizeof(m));
	snprintf(path, sizeof(path), "%s/boot.raw", dir);
	snprintf(side, sizeof(side), "%s-ctk.ovk", path);
	test_run("qemu-img create -q -f raw %s %llu", path,
		 (unsigned long long)DISK);
	b = open_rw(path);
	CHECK_EQ(bdev_checkpoint_create(b, "a"), 0);
	CHECK_EQ(bdev_checkpoint_create(b, "b"), 0);
	model_create(&m, "a");
	model_create(&m, "b");
	random_changes(b, &m, &seed, 3);
	/* as if the machine went down now: copy the file while in use */
	test_run("cp %s %s.saved", side, side);
	CHECK_EQ(bdev_close(b), 0);
	test_run("mv %s.saved %s", side, side);
	/* still this boot: the maps are trusted as they are */
	b = open_rw(path);
	check_model(b, &m);
	CHECK_EQ(bdev_close(b), 0);
	b = open_rw(path);
	test_run("cp %s %s.saved", side, side);
	CHECK_EQ(bdev_close(b), 0);
	test_run("mv %s.saved %s", side, side);
	/* now from another boot: change the boot id in both copies (and
	   their CRCs), the state stays "in use" */
	fd = open(side, O_RDWR);
	CHECK(fd >= 0);
	for (int i = 0; i < 2; i++) {
		uint32_t crc = 0;
		CHECK_EQ(pread(fd, hdr[i], 4096, i * 4096), 4096);
		hdr[i][40] ^= 0xff;
		memcpy(hdr[i] + 4092, &crc, 4);
		crc = htole32(libdeflate_crc32(0, hdr[i], 4096));
		memcpy(hdr[i] + 4092, &crc, 4);
		CHECK_EQ(pwrite(fd, hdr[i], 4096, i * 4096), 4096);
	}
	close(fd);
	b = open_rw(path);
	for (unsigned i = 0; i < m.n; i++) {
		CHECK_EQ(bdev_changed_status(b, m.names[i], 0, DISK, &pnum), 1);
		CHECK_EQ(pnum, DISK);
	}
	CHECK_EQ(bdev_close(b), 0);
	printf("ok other boot\n");
}

/* Map sizes at the edges: a disk of exactly 2 GiB fills its 64 KiB-chunk
   map to a whole 4 KiB page; a disk of 1 byte over has a partial chunk. */
static void test_sizes(void)
{
	static const uint64_t sizes[] = { 2ull << 30, (2ull << 30) + 512,
					  512, 65536 * 3 + 512 };
	char path[300];
	uint64_t pnum;
	struct bdev *b;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		uint64_t last = sizes[i] - 1;
		snprintf(path, sizeof(path), "%s/size-%zu.raw", dir, i);
		test_run("qemu-img create -q -f raw %s %llu", path,
			 (unsigned long long)sizes[i]);
		b = open_rw(path);
		CHECK_EQ(bdev_checkpoint_create(b, "s"), 0);
		CHECK_EQ(bdev_pwrite(b, "x", 1, last), 0);
		CHECK_EQ(bdev_close(b), 0);
		b = open_rw(path);
		CHECK_EQ(bdev_changed_status(b, "s", last, 1, &pnum), 1);
		CHECK_EQ(pnum, 1);
		if (last >= GRAN) {
			CHECK_EQ(bdev_changed_status(b, "s", 0, last, &pnum), 0);
			CHECK_EQ(pnum, last / GRAN * GRAN);
		}
		CHECK_EQ(bdev_close(b), 0);
	}
	printf("ok sizes\n");
}

/* ---- crash: kill -9 a writer -------------------------------------------- */

struct cw {
	int log;
	uint64_t off, len;
	bool busy;
	struct cw_all *all;
};

static void log_line(int fd, char kind, uint64_t off, uint64_t len)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "%c %" PRIu64 " %" PRIu64 "\n",
			 kind, off, len);

	CHECK(write(fd, line, (size_t)n) == n);
}

static void crash_cb(void *opaque, int ret)
{
	struct cw *c = opaque;

	CHECK_EQ(ret, 0);
	log_line(c->log, 'A', c->off, c->len); /* acknowledged */
	c->busy = false;
}

/* The writer: 16 requests in flight until killed; logs each write before
   it is queued (S) and when acknowledged (A). */
static void crash_writer(const char *path, const char *logpath, uint64_t seed)
{
	static uint8_t buf[16][131072];
	struct cw c[16];
	struct bdev_queue *q;
	struct bdev *b = open_rw(path);
	int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);

	CHECK(log >= 0);
	CHECK_EQ(bdev_queue_new(32, &q), 0);
	for (int i = 0; i < 16; i++)
		c[i] = (struct cw){ .log = log };
	for (;;) {
		for (int i = 0; i < 16; i++) {
			struct iovec v;
			if (c[i].busy)
				continue;
			c[i].len = 1 + rnd(&seed) % sizeof(buf[0]);
			c[i].off = rnd(&seed) % (DISK - c[i].len);
			memset(buf[i], (int)(seed & 0xff), c[i].len);
			v.iov_base = buf[i];
			v.iov_len = c[i].len;
			log_line(log, 'S', c[i].off, c[i].len);
			c[i].busy = true;
			CHECK_EQ(bdev_aio_writev(q, b, c[i].off, &v, 1, crash_cb,
						 &c[i]), 0);
		}
		CHECK(bdev_queue_run(q, 1) >= 0);
	}
}

/* Opens path read-write, waiting while a killed writer's io_uring still
   holds its locks. */
static struct bdev *open_after_kill(const char *path)
{
	struct bdev_open_opts o = { .flags = BDEV_O_RDWR };
	struct bdev *b;
	int ret;

	for (int i = 0; i < 400; i++) {
		ret = bdev_open(path, &o, &b);
		if (ret != -EBUSY)
			break;
		usleep(25000);
	}
	CHECK_EQ(ret, 0);
	return b;
}

static void test_crash(unsigned runs)
{
	char path[300], logpath[300];
	static bool acked[CHUNKS], started[CHUNKS];
	uint64_t seed = (uint64_t)time(NULL) * 2654435761u + 1;
	unsigned missed = 0, over = 0, nacked = 0;
	struct bdev *b;

	snprintf(path, sizeof(path), "%s/crash.vmdk", dir);
	snprintf(logpath, sizeof(logpath), "%s/crash.log", dir);
	printf("crash: seed %" PRIu64 "\n", seed);
	for (unsigned run = 0; run < runs; run++) {
		struct bdev_create_opts co = { .size = DISK };
		uint64_t pnum;
		char kind;
		unsigned long long off, len;
		FILE *f;
		pid_t pid;

		test_run("rm -f %s %s-ctk.ovk %s", path, path, logpath);
		if (run % 2) {
			co.format = "raw";
		}
		CHECK_EQ(bdev_create(path, &co), 0);
		b = open_rw(path);
		CHECK_EQ(bdev_checkpoint_create(b, "backup"), 0);
		CHECK_EQ(bdev_close(b), 0);
		/* empty if the writer dies before its first write */
		CHECK_EQ(close(open(logpath, O_WRONLY | O_CREAT, 0644)), 0);
		pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			crash_writer(path, logpath, seed + run);
			_exit(0);
		}
		usleep((useconds_t)(20000 + rnd(&seed) % 300000));
		CHECK_EQ(kill(pid, SIGKILL), 0);
		CHECK_EQ(waitpid(pid, NULL, 0), pid);

		memset(acked, 0, sizeof(acked));
		memset(started, 0, sizeof(started));
		f = fopen(logpath, "r");
		CHECK(f);
		while (fscanf(f, " %c %llu %llu", &kind, &off, &len) == 3) {
			nacked += kind == 'A';
			for (uint64_t k = off / GRAN; k <= (off + len - 1) / GRAN; k++) {
				if (kind == 'A')
					acked[k] = true;
				started[k] = true;
			}
		}
		fclose(f);
		b = open_after_kill(path);
		for (uint64_t k = 0; k < CHUNKS; k++) {
			int st = bdev_changed_status(b, "backup", k * GRAN, GRAN,
						     &pnum);
			CHECK(st == 0 || st == 1);
			if (acked[k] && !st)
				missed++;
			if (!started[k] && st)
				over++;
		}
		CHECK_EQ(bdev_close(b), 0);
	}
	printf("crash: %u runs, %u writes acknowledged before the kill, %u "
	       "acknowledged chunks missing from the map, %u chunks marked "
	       "that no write touched\n", runs, nacked, missed, over);
	CHECK_EQ(missed, 0);
	CHECK_EQ(over, 0);
	printf("ok crash\n");
}

/* What marking the map costs a write, apart from the disk (not a test):
   ctk_note_write on a fresh map (every call sets a new chunk) and on a
   map whose chunks are set (a mutex and a bit test), in nanoseconds per
   call. bench/bench_ctk.sh prints it. */
static void cost(void)
{
	char path[300];
	const unsigned n = 200000;
	struct timespec t0, t1;
	struct bdev *b;
	double ns[2];

	snprintf(path, sizeof(path), "%s/cost.raw", dir);
	test_run("qemu-img create -q -f raw %s 64G", path);
	b = open_rw(path);
	CHECK_EQ(bdev_checkpoint_create(b, "c"), 0);
	for (int pass = 0; pass < 2; pass++) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (unsigned i = 0; i < n; i++)
			CHECK(ctk_note_write(b, (uint64_t)i * 5 * GRAN, 4096) > 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ns[pass] = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 +
			    (double)(t1.tv_nsec - t0.tv_nsec)) / n;
	}
	printf("ctk_note_write: %.0f ns when it sets a new chunk, %.0f ns "
	       "when the chunk is set already\n", ns[0], ns[1]);
	CHECK_EQ(bdev_close(b), 0);
}

int main(int argc, char **argv)
{
	bool lng = getenv("OVK_LONG") && !strcmp(getenv("OVK_LONG"), "1");

	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img is not installed\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/ovk-ctk-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir));
	if (argc > 1 && !strcmp(argv[1], "cost")) {
		cost();
	} else if (argc > 1 && !strcmp(argv[1], "crash")) {
		test_crash(lng ? 200 : 4);
	} else {
		test_formats();
		test_inflight();
		test_snapshot();
		test_other_boot();
		test_sizes();
	}
	test_run("rm -rf %s", dir);
	return 0;
}
