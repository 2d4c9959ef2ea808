/* SPDX-License-Identifier: Apache-2.0 */
/*
 * live_crash.c - kill -9 of a process writing through the engine while it
 * snapshots (bdev_snapshot) and commits (bdev_commit_live) its disk.
 *
 * Each run forks a writer that opens the disk (finishing with bdev_commit
 * a commit an earlier kill interrupted: the child is still there), starts
 * a queue thread rewriting the disk's second half without pause, and then
 * loops: write generation g's 256 KiB block at slot g % 64 of the first
 * half, bdev_flush, tell the parent "g is durable" through a pipe, and
 * every few generations bdev_snapshot or bdev_commit_live. The parent
 * kills it with SIGKILL after a random 20-400 ms, then: the top (the
 * child when its file is there, else the base) opens with its chain;
 * qemu-img check finds no corruption in any file (leaked grains of an
 * interrupted allocation are allowed, as qemu-img allows them: exit 3);
 * bdev_check likewise; and the blocks of the last 63 durable generations
 * read back. 6 runs; 60 with OVK_LONG=1.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "../testutil.h"

#define DISK (32ull << 20)
#define BLOCK (256u << 10)
#define SLOTS 64

static char dir[256], base[300], snap[300];
static atomic_bool stop;

static void gen_fill(uint8_t *buf, uint64_t gen)
{
	for (size_t i = 0; i < BLOCK; i += 8) {
		uint64_t x = gen * 0x9e3779b97f4a7c15ull + i;
		memcpy(buf + i, &x, 8);
	}
}

static bool exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0;
}

static void *churn(void *arg)
{
	struct bdev *d = arg;
	struct bdev_queue *q;
	uint8_t *buf = malloc(1 << 20);
	uint64_t seed = (uint64_t)getpid(), n = 0;

	if (!buf || bdev_queue_new(8, &q) < 0)
		_exit(2);
	memset(buf, 0x5a, 1 << 20);
	while (!atomic_load(&stop)) {
		struct iovec v = { buf, 1 << 20 };
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t off = DISK / 2 + ((seed >> 33) % 16) * (1 << 20);
		buf[0] = (uint8_t)n++;
		if (bdev_aio_writev(q, d, off, &v, 1, NULL, NULL) < 0)
			_exit(3);
		while (bdev_queue_inflight(q))
			if (bdev_queue_run(q, 1) < 0)
				_exit(4);
	}
	bdev_queue_free(q);
	free(buf);
	return NULL;
}

/* The writer process; never returns. */
static void writer(int fd, uint64_t gen)
{
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	uint8_t *buf = malloc(BLOCK);
	struct bdev *d;
	pthread_t t;

	if (exists(snap) && bdev_commit(snap) < 0) {
		fprintf(stderr, "writer: commit %s: %s\n", snap, bdev_errmsg());
		_exit(5);
	}
	if (!buf || bdev_open(base, &oo, &d) < 0) {
		fprintf(stderr, "writer: open: %s\n", bdev_errmsg());
		_exit(6);
	}
	pthread_create(&t, NULL, churn, d);
	for (;; gen++) {
		gen_fill(buf, gen);
		if (bdev_pwrite(d, buf, BLOCK, (gen % SLOTS) * BLOCK) < 0 ||
		    bdev_flush(d) < 0) {
			fprintf(stderr, "writer: %s\n", bdev_errmsg());
			_exit(7);
		}
		if (write(fd, &gen, sizeof(gen)) != sizeof(gen))
			_exit(8);
		if (gen % 4 == 0) {
			int ret = exists(snap) ? bdev_commit_live(d) :
						 bdev_snapshot(d, snap);
			if (ret < 0) {
				fprintf(stderr, "writer: %s\n", bdev_errmsg());
				_exit(9);
			}
		}
	}
}

static void check_file(const char *p)
{
	struct bdev_check_result r;
	char cmd[700];
	int st;

	snprintf(cmd, sizeof(cmd), "qemu-img check -q %s", p);
	st = system(cmd);
	CHECK(WIFEXITED(st));
	if (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 3) {
		fprintf(stderr, "qemu-img check %s: exit %d\n", p, WEXITSTATUS(st));
		CHECK(0);
	}
	CHECK_EQ(bdev_check(p, 0, &r, NULL, NULL), 0);
	CHECK_EQ(r.corruptions, 0);
}

/* After a kill: the top opens, every file checks, the last durable
   generations read back. */
static void verify(uint64_t durable)
{
	uint8_t *buf = malloc(BLOCK), *want = malloc(BLOCK);
	struct bdev *d;

	CHECK(buf && want);
	if (exists(snap))
		check_file(snap);
	check_file(base);
	CHECK_EQ(bdev_open(exists(snap) ? snap : base, NULL, &d), 0);
	for (uint64_t k = durable > SLOTS - 1 ? durable - (SLOTS - 2) : 1;
	     k <= durable; k++) {
		gen_fill(want, k);
		CHECK_EQ(bdev_pread(d, buf, BLOCK, (k % SLOTS) * BLOCK), 0);
		if (memcmp(buf, want, BLOCK) != 0) {
		fprintf(stderr, "generation %" PRIu64 " (durable "
			"%" PRIu64 ") is not on the disk\n", k,
			durable);
		CHECK(0);
		}
	}
	CHECK_EQ(bdev_close(d), 0);
	free(buf);
	free(want);
}

int main(int argc, char **argv)
{
	bool lng = getenv("OVK_LONG") && !strcmp(getenv("OVK_LONG"), "1");
	unsigned runs = lng ? 60 : 6;
	struct bdev_create_opts co = { .size = DISK };
	uint64_t durable = 0, seed = (uint64_t)time(NULL);

	(void)argc;
	(void)argv;
	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img is not installed\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/ovk-crash-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir));
	snprintf(base, sizeof(base), "%s/disk.vmdk", dir);
	snprintf(snap, sizeof(snap), "%s/disk-snap.vmdk", dir);
	CHECK_EQ(bdev_create(base, &co), 0);
	printf("seed %" PRIu64 "\n", seed);
	for (unsigned run = 0; run < runs; run++) {
		int p[2], st;
		pid_t pid;
		unsigned ms;
		uint64_t g;

		CHECK(pipe(p) == 0);
		pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			writer(p[1], durable + 1);
		}
		close(p[1]);
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		ms = 20 + (unsigned)((seed >> 33) % 380);
		usleep(ms * 1000);
		kill(pid, SIGKILL);
		CHECK(waitpid(pid, &st, 0) == pid);
		if (!WIFSIGNALED(st)) {
			fprintf(stderr, "writer exited by itself (status %d)\n",
				WEXITSTATUS(st));
			CHECK(0);
		}
		while (read(p[0], &g, sizeof(g)) == sizeof(g))
			durable = g;
		close(p[0]);
		printf("run %u: killed after %u ms, generation %" PRIu64
		       " durable, %s on top\n", run, ms, durable,
		       exists(snap) ? "the child" : "the base");
		/* checked in a process of its own: a ring this process made
		   would be shared with the next writer it forks */
		pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			verify(durable);
			_exit(0);
		}
		CHECK(waitpid(pid, &st, 0) == pid);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	test_run("rm -rf %s", dir);
	printf("ok\n");
	return 0;
}
