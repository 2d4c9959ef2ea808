/* SPDX-License-Identifier: Apache-2.0 */
/* test_lock.c - image locks: one writer, shared readers, -U bypasses. */
#include <limits.h>
#include <sys/wait.h>

#include "testutil.h"

/* Runs fn in a child process and returns its exit status. */
static int in_child(void (*fn)(const char *), const char *path)
{
	pid_t pid = fork();
	int status;

	CHECK(pid >= 0);
	if (pid == 0) {
		fn(path);
		_exit(0);
	}
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* While the parent writes: a writer and a reader are refused, -U reads. */
static void child_against_writer(const char *path)
{
	struct bdev_open_opts rw = { .flags = BDEV_O_RDWR };
	struct bdev_open_opts share = { .flags = BDEV_O_SHARE };
	struct bdev *b;
	uint8_t buf[8];

	CHECK_EQ(bdev_open(path, &rw, &b), -EBUSY);
	CHECK(strstr(bdev_errmsg(), path));
	CHECK(strstr(bdev_errmsg(), "in use by another process"));
	CHECK_EQ(bdev_open(path, NULL, &b), -EBUSY);
	CHECK(strstr(bdev_errmsg(), path));
	CHECK(strstr(bdev_errmsg(), "locked for writing"));
	CHECK(strstr(bdev_errmsg(), "-U"));
	CHECK_EQ(bdev_open(path, &share, &b), 0);
	CHECK_EQ(bdev_pread(b, buf, sizeof(buf), 100), 0);
	CHECK_EQ(pattern_mismatch(buf, sizeof(buf), 100), -1);
	CHECK_EQ(bdev_close(b), 0);
}

/* While the parent reads: another reader shares, a writer is refused. */
static void child_against_reader(const char *path)
{
	struct bdev_open_opts rw = { .flags = BDEV_O_RDWR };
	struct bdev *b;

	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	CHECK_EQ(bdev_close(b), 0);
	CHECK_EQ(bdev_open(path, &rw, &b), -EBUSY);
	CHECK(strstr(bdev_errmsg(), path));
	CHECK(strstr(bdev_errmsg(), "open for reading"));
}

/* With nobody holding it, a writer gets in. */
static void child_alone(const char *path)
{
	struct bdev_open_opts rw = { .flags = BDEV_O_RDWR };
	struct bdev *b;

	CHECK_EQ(bdev_open(path, &rw, &b), 0);
	CHECK_EQ(bdev_close(b), 0);
}

int main(void)
{
	struct bdev_open_opts rw = { .flags = BDEV_O_RDWR };
	struct bdev_open_opts bad = { .flags = BDEV_O_RDWR | BDEV_O_SHARE };
	char path[PATH_MAX];
	struct bdev *b, *b2;

	make_pattern_file(path, sizeof(path), 65536, 0);

	CHECK_EQ(bdev_open(path, &rw, &b), 0);
	CHECK_EQ(in_child(child_against_writer, path), 0);
	/* the lock belongs to the open file, so it conflicts in-process too */
	CHECK_EQ(bdev_open(path, &rw, &b2), -EBUSY);
	CHECK_EQ(bdev_close(b), 0);

	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	CHECK_EQ(bdev_open(path, NULL, &b2), 0);
	CHECK_EQ(in_child(child_against_reader, path), 0);
	CHECK_EQ(bdev_close(b2), 0);
	CHECK_EQ(bdev_close(b), 0);

	CHECK_EQ(in_child(child_alone, path), 0);

	CHECK_EQ(bdev_open(path, &bad, &b), -EINVAL);
	CHECK(strstr(bdev_errmsg(), path));
	unlink(path);
	return 0;
}
