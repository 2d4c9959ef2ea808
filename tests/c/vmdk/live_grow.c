/* SPDX-License-Identifier: Apache-2.0 */
/*
 * live_grow.c - bdev_grow of an open VMDK while another thread writes it.
 *
 * "sparse" and "flat": a monolithicSparse (monolithicFlat, and the
 * twoGbMaxExtent kinds within their one extent) image made by qemu-img
 * grows while a second thread keeps writing the pattern over
 * its first MiB on its own queue; afterwards bdev_get_info gives the new
 * size, the old data and writes past the old end read back, and qemu-img
 * (the independent reader) sees the new virtual size, checks the image
 * clean and compares it equal to a raw model.
 * "nospc": growing a monolithicSparse past what its grain directory has
 * room for is ENOSPC naming the largest size, and the file is unchanged.
 * "crash": a child process opens the image, writes, and dies (exit 86) at
 * each durable step of bdev_grow in turn (OVK_TEST_GROW_CRASH=N): the
 * image opens at the old size or the new one, qemu-img and the engine
 * find no corruption (warnings: the killed writer's uncleanShutdown, a
 * descriptor behind the header, tables leaked by a crash before the
 * directory named them), the data reads back, and bdev_resize to the new
 * size finishes it.
 * "delta": a live snapshot's child grows past its parent (reads zeros
 * there, as in QEMU); bdev_commit_live and bdev_commit grow the parent.
 * "refused": streamOptimized is ENOTSUP with a message saying why.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "../testutil.h"

#define MiB ((uint64_t)1 << 20)

static char dir[256];
static struct bdev *disk;
static atomic_bool stop;
static atomic_uint writes;
static uint64_t size_from, size_to; /* of the grow under way */

/* A queue rewriting the pattern over the first MiB until told to stop
   (and at least 4 times); between writes it asks for the disk's size and
   block status, as a holder of the disk would while it grows. */
static void *writer(void *arg)
{
	struct bdev_queue *q;
	uint8_t *buf = malloc(MiB);
	struct iovec v = { buf, MiB };

	(void)arg;
	CHECK(buf);
	pattern_fill(buf, MiB, 0);
	CHECK_EQ(bdev_queue_new(8, &q), 0);
	while (!atomic_load(&stop) || atomic_load(&writes) < 4) {
		struct bdev_info bi;
		uint64_t pnum;

		CHECK_EQ(bdev_aio_writev(q, disk, 0, &v, 1, NULL, NULL), 0);
		while (bdev_queue_inflight(q))
			CHECK(bdev_queue_run(q, 1) >= 0);
		atomic_fetch_add(&writes, 1);
		CHECK_EQ(bdev_get_info(disk, &bi), 0);
		CHECK(bi.size == size_from || bi.size == size_to);
		CHECK_EQ(bdev_block_status(disk, 0, MiB, &pnum),
			 BDEV_STATUS_DATA);
	}
	bdev_queue_free(q);
	free(buf);
	return NULL;
}

/* Writes the pattern's len bytes at off through disk, and into the raw
   model at the same offset. */
static void put_pattern(int model_fd, uint64_t off, size_t len)
{
	uint8_t *buf = malloc(len);

	CHECK(buf);
	pattern_fill(buf, len, off);
	CHECK_EQ(bdev_pwrite(disk, buf, len, off), 0);
	CHECK(pwrite(model_fd, buf, len, (off_t)off) == (ssize_t)len);
	free(buf);
}

static void count_finding(void *opaque, const char *line)
{
	fprintf(stderr, "check: %s\n", line);
	++*(unsigned *)opaque;
}

static void expect_pattern(uint64_t off, size_t len)
{
	uint8_t *buf = malloc(len);

	CHECK(buf);
	CHECK_EQ(bdev_pread(disk, buf, len, off), 0);
	CHECK_EQ(pattern_mismatch(buf, len, off), -1);
	free(buf);
}

/* Grows a qemu-img-made image of subformat sf from 64 MiB to new_size
   under a writer, then checks it as the header comment says. */
static void grow_under_writer(const char *sf, uint64_t new_size)
{
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	char path[300], model[300];
	struct bdev_info bi;
	pthread_t t;
	int fd;

	snprintf(path, sizeof(path), "%s/%s.vmdk", dir, sf);
	snprintf(model, sizeof(model), "%s/%s-model.raw", dir, sf);
	test_run("qemu-img create -q -f vmdk -o subformat=%s %s 64M", sf, path);
	fd = open(model, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, (off_t)new_size) == 0);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	put_pattern(fd, 0, MiB);          /* what the writer keeps writing */
	put_pattern(fd, 40 * MiB, MiB);   /* old data, not rewritten */
	put_pattern(fd, 63 * MiB, MiB);   /* up to the old end */

	atomic_store(&stop, false);
	atomic_store(&writes, 0);
	size_from = 64 * MiB;
	size_to = new_size;
	CHECK_EQ(pthread_create(&t, NULL, writer, NULL), 0);
	while (atomic_load(&writes) < 2)
		usleep(1000);
	CHECK_EQ(bdev_grow(disk, 32 * MiB), -EINVAL);      /* no shrinking */
	CHECK_EQ(bdev_grow(disk, new_size), 0);
	CHECK_EQ(bdev_get_info(disk, &bi), 0);
	CHECK_EQ(bi.size, new_size);
	/* past the old end: in its last table's span and in new tables */
	put_pattern(fd, 64 * MiB, 64 << 10);
	put_pattern(fd, new_size - 3 * MiB, MiB);
	put_pattern(fd, new_size - MiB, MiB);
	atomic_store(&stop, true);
	CHECK_EQ(pthread_join(t, NULL), 0);
	expect_pattern(0, MiB);
	expect_pattern(40 * MiB, MiB);
	expect_pattern(63 * MiB, MiB);
	expect_pattern(64 * MiB, 64 << 10);
	expect_pattern(new_size - 3 * MiB, MiB);
	expect_pattern(new_size - MiB, MiB);
	CHECK_EQ(bdev_close(disk), 0);
	close(fd);

	{
		/* the engine's own check: no finding at all (the descriptor
		   and the header agree, no leaked sectors) */
		struct bdev_check_result r;
		unsigned findings = 0;
		CHECK_EQ(bdev_check(path, 0, &r, count_finding, &findings), 0);
		CHECK_EQ(findings, 0);
	}
	test_run("grep -qa 'RW %" PRIu64 " ' %s", new_size / 512, path);
	test_run("qemu-img check -q %s", path);
	test_run("qemu-img info --output=json %s | grep -q "
		 "'\"virtual-size\": %" PRIu64 ",'", path, new_size);
	test_run("qemu-img compare -q -f vmdk -F raw %s %s", path, model);
	/* qemu writes into the grown part too (its tables exist) */
	test_run("qemu-io -f vmdk -c 'write -P 7 %" PRIu64 " 64k' %s "
		 ">/dev/null", new_size - 2 * MiB, path);
	test_run("qemu-img check -q %s", path);
	printf("ok %s: grew to %" PRIu64 " bytes under %u writes\n", sf,
	       new_size, atomic_load(&writes));
}

static void test_nospc(void)
{
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	char path[300], copy[300];

	snprintf(path, sizeof(path), "%s/full.vmdk", dir);
	snprintf(copy, sizeof(copy), "%s/full-copy.vmdk", dir);
	test_run("qemu-img create -q -f vmdk %s 64M", path);
	test_run("qemu-io -f vmdk -c 'write -P 3 1M 1M' %s >/dev/null", path);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	test_run("cp %s %s", path, copy);
	/* 64 MiB uses 2 directory entries of 32 MiB each; the directory's
	   one sector holds 128: 4 GiB at most */
	CHECK_EQ(bdev_grow(disk, 8ull << 30), -ENOSPC);
	printf("nospc: %s\n", bdev_errmsg());
	CHECK(strstr(bdev_errmsg(), path));
	CHECK(strstr(bdev_errmsg(), "at most 4294967296 bytes"));
	test_run("cmp %s %s", path, copy);
	{
		struct bdev_info bi;
		CHECK_EQ(bdev_get_info(disk, &bi), 0);
		CHECK_EQ(bi.size, 64 * MiB);
	}
	/* exactly as far as the room goes works */
	CHECK_EQ(bdev_grow(disk, 4ull << 30), 0);
	CHECK_EQ(bdev_close(disk), 0);
	test_run("qemu-img check -q %s", path);
	test_run("qemu-img info --output=json %s | grep -q "
		 "'\"virtual-size\": 4294967296,'", path);
	test_run("qemu-io -f vmdk -c 'read -P 3 1M 1M' %s >/dev/null", path);
	/* within the last grain table's span: only the capacity changes */
	snprintf(path, sizeof(path), "%s/part.vmdk", dir);
	test_run("qemu-img create -q -f vmdk %s 50M", path);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	CHECK_EQ(bdev_grow(disk, 60 * MiB), 0);
	{
		uint8_t *buf = malloc(MiB);
		CHECK(buf);
		memset(buf, 9, MiB);
		CHECK_EQ(bdev_pwrite(disk, buf, MiB, 59 * MiB), 0);
		free(buf);
	}
	CHECK_EQ(bdev_close(disk), 0);
	test_run("qemu-img check -q %s", path);
	test_run("qemu-img info --output=json %s | grep -q "
		 "'\"virtual-size\": 62914560,'", path);
	test_run("qemu-io -f vmdk -c 'read -P 9 59M 1M' -c 'read -P 0 49M 10M' "
		 "%s >/dev/null", path);
	/* a split kind grows open only within its last extent file */
	snprintf(path, sizeof(path), "%s/split.vmdk", dir);
	test_run("qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse "
		 "%s 64M", path);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	CHECK_EQ(bdev_grow(disk, 3ull << 30), -ENOSPC);
	CHECK(strstr(bdev_errmsg(), "2047 MiB"));
	CHECK_EQ(bdev_close(disk), 0);
	test_run("qemu-img info --output=json %s | grep -q "
		 "'\"virtual-size\": 67108864,'", path);
	printf("ok nospc\n");
}

static void test_refused(void)
{
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	char path[300];

	snprintf(path, sizeof(path), "%s/stream.vmdk", dir);
	test_run("qemu-img create -q -f vmdk -o subformat=streamOptimized "
		 "%s 8M", path);
	CHECK_EQ(bdev_open(path, &oo, &disk), 0);
	CHECK_EQ(bdev_grow(disk, 16 * MiB), -ENOTSUP);
	CHECK(strstr(bdev_errmsg(), "streamOptimized"));
	CHECK_EQ(bdev_close(disk), 0);

	printf("ok refused\n");
}

/* A delta (a live snapshot's child) grows past its parent under a writer;
   a live commit grows the parent to take it. Then the same closed: the
   grown child read by qemu-img (zeros past the parent's end), and
   bdev_commit growing the parent. */
static void test_delta(void)
{
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	char base[300], child[300], model[300];
	struct bdev_info bi;
	pthread_t t;
	int fd;

	snprintf(base, sizeof(base), "%s/base.vmdk", dir);
	snprintf(child, sizeof(child), "%s/base-snap.vmdk", dir);
	snprintf(model, sizeof(model), "%s/base-model.raw", dir);
	test_run("qemu-img create -q -f vmdk %s 64M", base);
	fd = open(model, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, (off_t)(128 * MiB)) == 0);
	CHECK_EQ(bdev_open(base, &oo, &disk), 0);
	put_pattern(fd, 0, MiB);
	put_pattern(fd, 60 * MiB, MiB);
	CHECK_EQ(bdev_snapshot(disk, child), 0);
	atomic_store(&stop, false);
	atomic_store(&writes, 0);
	size_from = 64 * MiB;
	size_to = 128 * MiB;
	CHECK_EQ(pthread_create(&t, NULL, writer, NULL), 0);
	CHECK_EQ(bdev_grow(disk, 128 * MiB), 0);
	CHECK_EQ(bdev_get_info(disk, &bi), 0);
	CHECK_EQ(bi.size, 128 * MiB);
	CHECK(strcmp(bi.filename, child) == 0);
	put_pattern(fd, 100 * MiB, MiB);
	/* a grain across the parent's end: filled from it, then zeros */
	put_pattern(fd, 64 * MiB - 4096, 8192);
	expect_pattern(60 * MiB, MiB);
	expect_pattern(100 * MiB, MiB);
	expect_pattern(64 * MiB - 4096, 8192);
	atomic_store(&stop, true);
	CHECK_EQ(pthread_join(t, NULL), 0);
	CHECK_EQ(bdev_flush(disk), 0);
	/* qemu-img reads the grown delta the same way */
	test_run("qemu-img info -U --output=json %s | grep -q "
		 "'\"virtual-size\": 134217728,'", child);
	test_run("qemu-img compare -U -q -f vmdk -F raw %s %s", child, model);
	/* the live commit grows the parent first */
	atomic_store(&stop, false);
	size_from = size_to;
	CHECK_EQ(pthread_create(&t, NULL, writer, NULL), 0);
	CHECK_EQ(bdev_commit_live(disk), 0);
	atomic_store(&stop, true);
	CHECK_EQ(pthread_join(t, NULL), 0);
	CHECK_EQ(bdev_close(disk), 0);
	test_run("qemu-img check -q %s", base);
	test_run("qemu-img info --output=json %s | grep -q "
		 "'\"virtual-size\": 134217728,'", base);
	test_run("qemu-img compare -q -f vmdk -F raw %s %s", base, model);

	/* closed: a grown child is a valid delta, bdev_commit grows the
	   parent */
	CHECK_EQ(bdev_open(base, &oo, &disk), 0);
	CHECK_EQ(bdev_snapshot(disk, child), 0);
	CHECK(ftruncate(fd, (off_t)(160 * MiB)) == 0);
	CHECK_EQ(bdev_grow(disk, 160 * MiB), 0);
	put_pattern(fd, 150 * MiB, MiB);
	CHECK_EQ(bdev_close(disk), 0);
	test_run("qemu-img check -q %s", child);
	test_run("qemu-img info --output=json %s | grep -q "
		 "'\"virtual-size\": 167772160,'", child);
	test_run("qemu-img compare -q -f vmdk -F raw %s %s", child, model);
	CHECK_EQ(bdev_commit(child), 0);
	test_run("qemu-img check -q %s", base);
	test_run("qemu-img info --output=json %s | grep -q "
		 "'\"virtual-size\": 167772160,'", base);
	test_run("qemu-img compare -q -f vmdk -F raw %s %s", base, model);
	close(fd);
	printf("ok delta\n");
}

/* The crash test's child: open, write, flush, grow (dying inside). */
static int crash_child(const char *path, uint64_t new_size, unsigned step)
{
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	char n[16];
	uint8_t *buf = malloc(MiB);

	if (!buf || bdev_open(path, &oo, &disk) < 0)
		return 1;
	pattern_fill(buf, MiB, 5 * MiB);
	if (bdev_pwrite(disk, buf, MiB, 5 * MiB) < 0 || bdev_flush(disk) < 0)
		return 2;
	snprintf(n, sizeof(n), "%u", step);
	setenv("OVK_TEST_GROW_CRASH", n, 1);
	if (bdev_grow(disk, new_size) < 0) {
		fprintf(stderr, "grow: %s\n", bdev_errmsg());
		return 3;
	}
	unsetenv("OVK_TEST_GROW_CRASH");
	return bdev_close(disk) < 0 ? 4 : 0;
}

static void crash_one(const char *sf, uint64_t new_size)
{
	char path[300];
	unsigned step;

	snprintf(path, sizeof(path), "%s/crash-%s.vmdk", dir, sf);
	for (step = 1;; step++) {
		struct bdev_open_opts ro = { 0 };
		struct bdev_check_result r;
		struct bdev_info bi;
		unsigned findings = 0;
		int status;
		pid_t pid;

		test_run("rm -f %s/crash-*; qemu-img create -q -f vmdk -o "
			 "subformat=%s %s 64M", dir, sf, path);
		fflush(NULL);
		pid = fork();
		CHECK(pid >= 0);
		if (pid == 0)
			_exit(crash_child(path, new_size, step));
		CHECK_EQ(waitpid(pid, &status, 0), pid);
		CHECK(WIFEXITED(status));
		if (WEXITSTATUS(status) == 0)
			break;
		CHECK_EQ(WEXITSTATUS(status), 86);
		CHECK_EQ(bdev_open(path, &ro, &disk), 0);
		CHECK_EQ(bdev_get_info(disk, &bi), 0);
		CHECK(bi.size == 64 * MiB || bi.size == new_size);
		expect_pattern(5 * MiB, MiB);
		CHECK_EQ(bdev_close(disk), 0);
		if (!strcmp(sf, "monolithicSparse")) {
			CHECK_EQ(bdev_check(path, 0, &r, count_finding,
					    &findings), 0);
			CHECK_EQ(r.corruptions, 0);
			test_run("qemu-img check -q %s", path);
		}
		test_run("qemu-img info --output=json %s | grep -q "
			 "'\"virtual-size\": %" PRIu64 ",'", path, bi.size);
		/* a rerun, closed, finishes */
		CHECK_EQ(bdev_resize(path, new_size, 0), 0);
		test_run("qemu-img info --output=json %s | grep -q "
			 "'\"virtual-size\": %" PRIu64 ",'", path, new_size);
		if (!strcmp(sf, "monolithicSparse")) {
			/* the tables a crash before the directory left
			   behind stay leaked (a warning, like the unclean
			   flag of the killed writer) */
			CHECK_EQ(bdev_check(path, 0, &r, count_finding,
					    &findings), 0);
			CHECK_EQ(r.corruptions, 0);
			test_run("qemu-img check -q %s", path);
		}
		/* the descriptor says the new size too */
		test_run("grep -qa 'RW %" PRIu64 " ' %s", new_size / 512, path);
		test_run("qemu-io -f vmdk -c 'read -P 0 0 1M' %s >/dev/null",
			 path);
	}
	CHECK(step > 2);
	test_run("grep -qa 'RW %" PRIu64 " ' %s", new_size / 512, path);
	printf("ok crash %s: %u durable steps\n", sf, step - 1);
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0 ||
	    system("qemu-io --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img or qemu-io is not installed\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/ovk-grow-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir));
	grow_under_writer("monolithicSparse", 200 * MiB);
	grow_under_writer("monolithicFlat", 100 * MiB);
	grow_under_writer("twoGbMaxExtentSparse", 200 * MiB);
	grow_under_writer("twoGbMaxExtentFlat", 100 * MiB);
	test_nospc();
	crash_one("monolithicSparse", 200 * MiB);
	crash_one("monolithicFlat", 100 * MiB);
	test_delta();
	test_refused();
	test_run("rm -rf %s", dir);
	return 0;
}
