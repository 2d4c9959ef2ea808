/* SPDX-License-Identifier: Apache-2.0 */
/* test_callbacks.c - images read through caller-supplied callbacks
 * (bdev_open_callbacks): raw and streamOptimized VMDK, from several threads,
 * short reads, errors, read-only, and the caller's close. */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

#define RAW_LEN 1000003u
#define DISK_SIZE (8u << 20)

/* The caller's source: memory, answered in pieces of at most max bytes so
   the engine must loop over short reads. */
struct memsrc {
	uint8_t *buf;
	size_t len, max;
	atomic_int reads, closes;
	int fail_at; /* -1, or the read that fails with -EIO */
};

static ssize_t mem_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	struct memsrc *m = opaque;
	int n = atomic_fetch_add(&m->reads, 1);

	if (m->fail_at >= 0 && n >= m->fail_at)
		return -EIO;
	if (off >= m->len)
		return 0;
	if (len > m->len - off)
		len = (size_t)(m->len - off);
	if (m->max && len > m->max)
		len = m->max;
	memcpy(buf, m->buf + off, len);
	return (ssize_t)len;
}

static void mem_close(void *opaque)
{
	struct memsrc *m = opaque;

	atomic_fetch_add(&m->closes, 1);
}

static const struct bdev_byte_source mem_ops = { mem_pread, mem_close };

struct reader {
	struct bdev *b;
	unsigned seed;
	int bad;
};

/* Random reads of the pattern image from one thread. */
static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(70000);

	for (int i = 0; i < 300 && buf; i++) {
		uint64_t off = (uint64_t)rand_r(&r->seed) % (RAW_LEN - 70000);
		size_t len = 1 + (size_t)rand_r(&r->seed) % 70000;

		if (bdev_pread(r->b, buf, len, off) < 0 ||
		    pattern_mismatch(buf, len, off) != -1)
			r->bad++;
	}
	free(buf);
	return NULL;
}

static void test_raw(void)
{
	struct memsrc m = { .len = RAW_LEN, .max = 4096, .fail_at = -1 };
	struct bdev_open_opts rw = { .flags = BDEV_O_RDWR };
	struct bdev_info info;
	struct reader rd[4];
	pthread_t th[4];
	uint8_t buf[8192];
	struct bdev *b;

	m.buf = malloc(RAW_LEN);
	CHECK(m.buf);
	pattern_fill(m.buf, RAW_LEN, 0);

	/* writable opens are refused, and the opaque is given back */
	CHECK_EQ(bdev_open_callbacks(&mem_ops, &m, RAW_LEN, "cb.raw", &rw, &b),
		 -EROFS);
	CHECK(strstr(bdev_errmsg(), "cb.raw"));
	CHECK_EQ(atomic_load(&m.closes), 1);

	CHECK_EQ(bdev_open_callbacks(&mem_ops, &m, RAW_LEN, "cb.raw", NULL, &b), 0);
	CHECK_EQ(bdev_get_info(b, &info), 0);
	CHECK_EQ(info.size, RAW_LEN);
	CHECK(strcmp(info.format, "raw") == 0);
	CHECK(info.read_only);
	CHECK_EQ(bdev_pread(b, buf, sizeof(buf), RAW_LEN - sizeof(buf)), 0);
	CHECK_EQ(pattern_mismatch(buf, sizeof(buf), RAW_LEN - sizeof(buf)), -1);
	CHECK_EQ(bdev_pwrite(b, buf, 1, 0), -EROFS);
	for (int i = 0; i < 4; i++) {
		rd[i] = (struct reader){ .b = b, .seed = 7u + (unsigned)i };
		CHECK_EQ(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ(rd[i].bad, 0);
	}
	CHECK_EQ(atomic_load(&m.closes), 1);
	CHECK_EQ(bdev_close(b), 0);
	CHECK_EQ(atomic_load(&m.closes), 2);

	/* a source that says it is longer than it is: EIO naming offset */
	m.len = RAW_LEN - 100;
	CHECK_EQ(bdev_open_callbacks(&mem_ops, &m, RAW_LEN, "short.raw", NULL, &b), 0);
	CHECK_EQ(bdev_pread(b, buf, 100, RAW_LEN - 200), 0);
	CHECK_EQ(bdev_pread(b, buf, 200, RAW_LEN - 200), -EIO);
	CHECK(strstr(bdev_errmsg(), "short.raw"));
	CHECK_EQ(bdev_close(b), 0);

	/* the caller's error comes back with a message */
	m.len = RAW_LEN;
	m.fail_at = atomic_load(&m.reads) + 1;
	CHECK_EQ(bdev_open_callbacks(&mem_ops, &m, RAW_LEN, "failing.raw", NULL, &b), 0);
	CHECK_EQ(bdev_pread(b, buf, 100, 500000), -EIO);
	CHECK(strstr(bdev_errmsg(), "failing.raw"));
	CHECK_EQ(bdev_close(b), 0);
	CHECK_EQ(atomic_load(&m.closes), 4);

	CHECK_EQ(bdev_open_callbacks(NULL, NULL, 1, "none", NULL, &b), -EINVAL);
	free(m.buf);
}

/* A streamOptimized VMDK written by the engine, read back from memory. */
static void test_stream_vmdk(void)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "streamOptimized",
				       .size = DISK_SIZE };
	struct memsrc m = { .fail_at = -1 };
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char path[PATH_MAX];
	struct bdev_writer *w;
	struct bdev_info info;
	uint8_t *data, *buf;
	struct bdev *b;
	uint64_t grain;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/ovk-cb-%d.vmdk", dir, (int)getpid());
	unlink(path);
	CHECK_EQ(bdev_writer_new(path, &co, &w), 0);
	grain = bdev_writer_grain(w);
	data = malloc(DISK_SIZE);
	buf = malloc(DISK_SIZE);
	CHECK(data && buf);
	memset(data, 0, DISK_SIZE);
	/* grains 0-15 and 64-79 hold the pattern; the rest stay zero */
	pattern_fill(data, 16 * grain, 0);
	pattern_fill(data + 64 * grain, 16 * grain, 64 * grain);
	CHECK_EQ(bdev_writer_write(w, 0, data, 16 * grain), 0);
	CHECK_EQ(bdev_writer_write(w, 64 * grain, data + 64 * grain, 16 * grain), 0);
	CHECK_EQ(bdev_writer_close(w), 0);

	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	m.len = (size_t)lseek(fd, 0, SEEK_END);
	m.buf = malloc(m.len);
	m.max = 10000;
	CHECK(m.buf);
	n = pread(fd, m.buf, m.len, 0);
	CHECK_EQ(n, (ssize_t)m.len);
	close(fd);
	unlink(path);

	CHECK_EQ(bdev_open_callbacks(&mem_ops, &m, m.len, "pkg.ova:disk1.vmdk",
				     NULL, &b), 0);
	CHECK_EQ(bdev_get_info(b, &info), 0);
	CHECK(strcmp(info.format, "vmdk") == 0);
	CHECK(info.compressed);
	CHECK_EQ(info.size, DISK_SIZE);
	CHECK_EQ(bdev_pread(b, buf, DISK_SIZE, 0), 0);
	CHECK(memcmp(buf, data, DISK_SIZE) == 0);
	CHECK_EQ(bdev_pread(b, buf, 1000, 64 * grain + 12345), 0);
	CHECK(memcmp(buf, data + 64 * grain + 12345, 1000) == 0);
	CHECK_EQ(bdev_close(b), 0);
	CHECK_EQ(atomic_load(&m.closes), 1);
	free(m.buf);
	free(data);
	free(buf);
}

int main(void)
{
	test_raw();
	test_stream_vmdk();
	return 0;
}
