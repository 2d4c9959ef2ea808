/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_vmdk_writer_fd.c - bdev_writer_new_fd: a streamOptimized or
 * monolithicSparse image written into the middle of a bigger file, read
 * back with bdev_open_region, checked by qemu-img on an extracted copy;
 * the observer sees exactly the image's bytes, in order; what the call
 * refuses.
 */
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "../testutil.h"

#define FILE_SIZE (6u << 20)
#define IMG_OFF 12345u            /* not even sector aligned */
#define DISK_SIZE (8u * 65536u + 3u * 512u) /* a short last grain */
#define GRAIN 65536u

static char dir[] = "/tmp/ovk-writer-fd-XXXXXX";
static bool have_qemu;

/* What the virtual disk holds: grain g is pattern data when g % 3 != 1,
   zeros (never written) otherwise. */
static void expected(uint8_t *disk)
{
	memset(disk, 0, DISK_SIZE);
	for (uint64_t off = 0; off < DISK_SIZE; off += GRAIN) {
		size_t n = DISK_SIZE - off < GRAIN ? DISK_SIZE - off : GRAIN;
		if ((off / GRAIN) % 3 != 1)
			pattern_fill(disk + off, n, off * 7);
	}
}

/* What the observer saw: a copy of the image as it went by. */
struct seen {
	uint8_t *buf;
	size_t cap, len;
	unsigned calls;
	uint64_t fail_at; /* fail the call covering this offset; 0 = never */
};

static int observe(void *opaque, uint64_t off, const void *buf, size_t len)
{
	struct seen *s = opaque;

	CHECK_EQ(off, s->len); /* in order, no gaps, no repeats */
	if (s->fail_at && off + len > s->fail_at)
		return -ENOSPC;
	CHECK(s->len + len <= s->cap);
	memcpy(s->buf + s->len, buf, len);
	s->len += len;
	s->calls++;
	return 0;
}

struct job {
	struct bdev_writer *w;
	const uint8_t *disk;
	unsigned parity;
};

/* Two threads write alternate grains at once: the file must still be
   written front to back. */
static void *writer_thread(void *arg)
{
	struct job *j = arg;

	for (uint64_t off = 0; off < DISK_SIZE; off += GRAIN) {
		size_t n = DISK_SIZE - off < GRAIN ? DISK_SIZE - off : GRAIN;
		if ((off / GRAIN) % 2 != j->parity || (off / GRAIN) % 3 == 1)
			continue;
		CHECK_EQ(bdev_writer_write(j->w, off, j->disk + off, n), 0);
	}
	return NULL;
}

/* The bytes around the image are the file's pattern, untouched. */
static void check_outside(int fd, uint64_t length)
{
	uint8_t *buf = malloc(FILE_SIZE);

	CHECK_EQ(pread(fd, buf, FILE_SIZE, 0), FILE_SIZE);
	CHECK_EQ(pattern_mismatch(buf, IMG_OFF, 0), -1);
	CHECK_EQ(pattern_mismatch(buf + IMG_OFF + length,
				  FILE_SIZE - IMG_OFF - length, IMG_OFF + length), -1);
	free(buf);
}

/* Open the region as an image, compare with the disk, and have qemu-img
   check a copy of its bytes and compare it with the raw disk. */
static void check_region(int fd, uint64_t length, const char *subformat,
			 const uint8_t *disk)
{
	struct bdev_info info;
	struct bdev *b;
	uint8_t *buf = malloc(DISK_SIZE);
	char copy[512], raw[512];
	int cfd;

	CHECK_EQ(bdev_open_region(fd, IMG_OFF, length, "pkg.ova:disk.vmdk", NULL, &b), 0);
	CHECK_EQ(bdev_get_info(b, &info), 0);
	CHECK_EQ(info.size, DISK_SIZE);
	CHECK(info.subformat && !strcmp(info.subformat, subformat));
	CHECK(!info.unclean);
	CHECK_EQ(bdev_pread(b, buf, DISK_SIZE, 0), 0);
	CHECK(memcmp(buf, disk, DISK_SIZE) == 0);
	CHECK_EQ(bdev_close(b), 0);

	if (!have_qemu)
		goto out;
	snprintf(copy, sizeof(copy), "%s/%s.vmdk", dir, subformat);
	snprintf(raw, sizeof(raw), "%s/disk.raw", dir);
	cfd = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(cfd >= 0);
	for (uint64_t o = 0; o < length; o += DISK_SIZE) {
		size_t n = length - o < DISK_SIZE ? (size_t)(length - o) : DISK_SIZE;
		CHECK_EQ(pread(fd, buf, n, (off_t)(IMG_OFF + o)), (ssize_t)n);
		CHECK_EQ(write(cfd, buf, n), (ssize_t)n);
	}
	close(cfd);
	cfd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK_EQ(write(cfd, disk, DISK_SIZE), DISK_SIZE);
	close(cfd);
	test_run("qemu-img check -q '%s'", copy);
	test_run("qemu-img compare -q -f vmdk -F raw '%s' '%s'", copy, raw);
out:
	free(buf);
}

static int big_file(char *path, size_t len)
{
	int fd;

	make_pattern_file(path, len, FILE_SIZE, 0);
	fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	return fd;
}

static void test_stream(const uint8_t *disk)
{
	struct bdev_create_opts co = { .subformat = "streamOptimized",
				       .size = DISK_SIZE };
	struct seen s = { .cap = FILE_SIZE, .buf = malloc(FILE_SIZE) };
	struct bdev_writer *w;
	struct job j[2];
	pthread_t th[2];
	uint64_t length = 0;
	char path[4096];
	uint8_t *file = malloc(FILE_SIZE);
	int fd = big_file(path, sizeof(path));

	CHECK_EQ(bdev_writer_new_fd(fd, IMG_OFF, "disk.vmdk", &co, observe, &s, &w), 0);
	CHECK(s.len > 0); /* header and descriptor go first */
	for (int i = 0; i < 2; i++) {
		j[i] = (struct job){ .w = w, .disk = disk, .parity = (unsigned)i };
		CHECK(pthread_create(&th[i], NULL, writer_thread, &j[i]) == 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK_EQ(bdev_writer_finish(w, &length), 0);
	CHECK(length > 64 * 1024 && length < FILE_SIZE - IMG_OFF);
	CHECK_EQ(length % 512, 0);

	/* the observer saw the image exactly */
	CHECK_EQ(s.len, length);
	CHECK_EQ(pread(fd, file, length, IMG_OFF), (ssize_t)length);
	CHECK(memcmp(file, s.buf, length) == 0);
	/* the embedded descriptor names the member, not the archive */
	CHECK(memmem(file, 4096, "\"disk.vmdk\"", 11));
	check_outside(fd, length);
	check_region(fd, length, "streamOptimized", disk);
	close(fd);
	unlink(path);
	free(file);
	free(s.buf);
}

static void test_sparse(const uint8_t *disk)
{
	struct bdev_create_opts co = { .subformat = "monolithicSparse",
				       .size = DISK_SIZE };
	struct bdev_writer *w;
	uint64_t length = 0;
	char path[4096];
	int fd = big_file(path, sizeof(path));

	CHECK_EQ(bdev_writer_new_fd(fd, IMG_OFF, "disk.vmdk", &co, NULL, NULL, &w), 0);
	/* backwards, to show grains go where the tables say */
	for (uint64_t g = DISK_SIZE / GRAIN + 1; g-- > 0;) {
		uint64_t off = g * GRAIN;
		size_t n = DISK_SIZE - off < GRAIN ? DISK_SIZE - off : GRAIN;
		if (g % 3 != 1)
			CHECK_EQ(bdev_writer_write(w, off, disk + off, n), 0);
	}
	CHECK_EQ(bdev_writer_finish(w, &length), 0);
	CHECK(length < FILE_SIZE - IMG_OFF);
	check_outside(fd, length);
	check_region(fd, length, "monolithicSparse", disk);
	close(fd);
	unlink(path);
}

/* An observer's error fails the write; abort leaves the caller's file. */
static void test_observer_error(const uint8_t *disk)
{
	struct bdev_create_opts co = { .subformat = "streamOptimized",
				       .size = DISK_SIZE };
	struct seen s = { .cap = FILE_SIZE, .buf = malloc(FILE_SIZE),
			  .fail_at = 70000 };
	struct bdev_writer *w;
	char path[4096];
	struct stat st;
	int fd = big_file(path, sizeof(path));

	CHECK_EQ(bdev_writer_new_fd(fd, IMG_OFF, "disk.vmdk", &co, observe, &s, &w), 0);
	CHECK_EQ(bdev_writer_write(w, 0, disk, GRAIN), -ENOSPC);
	CHECK(strstr(bdev_errmsg(), "disk.vmdk"));
	bdev_writer_abort(w);
	CHECK_EQ(fstat(fd, &st), 0);
	CHECK_EQ(st.st_size, FILE_SIZE);
	close(fd);
	unlink(path);
	free(s.buf);
}

static void test_refused(void)
{
	struct bdev_create_opts co = { .subformat = "streamOptimized",
				       .size = DISK_SIZE };
	struct seen s = { 0 };
	struct bdev_writer *w;
	char path[4096];
	int fd = big_file(path, sizeof(path)), rfd, afd;

	co.subformat = "monolithicSparse";
	CHECK_EQ(bdev_writer_new_fd(fd, 0, "d.vmdk", &co, observe, &s, &w), -EINVAL);
	CHECK(strstr(bdev_errmsg(), "observer"));
	co.subformat = "twoGbMaxExtentSparse";
	CHECK_EQ(bdev_writer_new_fd(fd, 0, "d.vmdk", &co, NULL, NULL, &w), -EINVAL);
	co.subformat = "monolithicFlat";
	CHECK_EQ(bdev_writer_new_fd(fd, 0, "d.vmdk", &co, NULL, NULL, &w), -EINVAL);
	co.subformat = NULL;
	co.format = "raw";
	CHECK_EQ(bdev_writer_new_fd(fd, 0, "d.raw", &co, NULL, NULL, &w), -EINVAL);
	co.format = NULL;
	co.backing = path;
	CHECK_EQ(bdev_writer_new_fd(fd, 0, "d.vmdk", &co, NULL, NULL, &w), -EINVAL);
	co.backing = NULL;
	rfd = open(path, O_RDONLY);
	afd = open(path, O_WRONLY | O_APPEND);
	CHECK_EQ(bdev_writer_new_fd(rfd, 0, "d.vmdk", &co, NULL, NULL, &w), -EINVAL);
	CHECK(strstr(bdev_errmsg(), "read-only"));
	CHECK_EQ(bdev_writer_new_fd(afd, 0, "d.vmdk", &co, NULL, NULL, &w), -EINVAL);
	CHECK(strstr(bdev_errmsg(), "O_APPEND"));
	CHECK_EQ(bdev_writer_new_fd(-1, 0, "d.vmdk", &co, NULL, NULL, &w), -EBADF);
	close(rfd);
	close(afd);
	close(fd);
	unlink(path);
}

int main(void)
{
	uint8_t *disk = malloc(DISK_SIZE);

	have_qemu = system("qemu-img --version >/dev/null 2>&1") == 0;
	if (!have_qemu)
		printf("qemu-img not installed: its checks are skipped\n");
	CHECK(mkdtemp(dir));
	expected(disk);
	test_stream(disk);
	test_sparse(disk);
	test_observer_error(disk);
	test_refused();
	test_run("rm -rf '%s'", dir);
	free(disk);
	printf("ok\n");
	return 0;
}
