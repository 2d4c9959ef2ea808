/* SPDX-License-Identifier: Apache-2.0 */
/* testutil.h - small helpers shared by the engine's C tests. */
#ifndef OVK_TESTUTIL_H
#define OVK_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockengine.h"

#define CHECK(cond)                                                         \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "%s:%d: check failed: %s (last "    \
				"engine message: \"%s\")\n", __FILE__,      \
				__LINE__, #cond, bdev_errmsg());            \
			exit(1);                                            \
		}                                                           \
	} while (0)

#define CHECK_EQ(a, b)                                                      \
	do {                                                                \
		long long a_ = (long long)(a), b_ = (long long)(b);         \
		if (a_ != b_) {                                             \
			fprintf(stderr, "%s:%d: %s == %lld, expected %s == "  \
				"%lld (last engine message: \"%s\")\n",     \
				__FILE__, __LINE__, #a, a_, #b, b_,         \
				bdev_errmsg());                             \
			exit(1);                                            \
		}                                                           \
	} while (0)

/* Runs a shell command made from fmt (qemu-img as the reference, rm -rf
   of a test's folder); exits the test when it fails. */
__attribute__((format(printf, 1, 2), unused))
static void test_run(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0) {
		fprintf(stderr, "command failed: %s\n", cmd);
		exit(1);
	}
}

/* The byte a pattern file holds at off: depends on all of off's low bytes
   so misplaced reads show. */
static inline uint8_t pattern_byte(uint64_t off)
{
	uint64_t x = off * 0x9e3779b97f4a7c15ull;

	return (uint8_t)(x >> 56 ^ off);
}

static inline void pattern_fill(uint8_t *buf, size_t len, uint64_t off)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pattern_byte(off + i);
}

/* Index of the first byte of buf that is not the pattern at off, or -1. */
static inline long pattern_mismatch(const uint8_t *buf, size_t len,
				    uint64_t off)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != pattern_byte(off + i))
			return (long)i;
	return -1;
}

/* A fresh temporary file of len pattern bytes, starting with pattern at
   pattern_off; path receives its name (PATH_MAX). */
static inline void make_pattern_file(char *path, size_t pathlen,
				     uint64_t len, uint64_t pattern_off)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	uint8_t buf[65536];
	int fd;

	snprintf(path, pathlen, "%s/ovk-test-XXXXXX", dir);
	fd = mkstemp(path);
	CHECK(fd >= 0);
	for (uint64_t off = 0; off < len; off += sizeof(buf)) {
		size_t n = len - off < sizeof(buf) ? (size_t)(len - off)
						   : sizeof(buf);
		pattern_fill(buf, n, pattern_off + off);
		CHECK(pwrite(fd, buf, n, (off_t)off) == (ssize_t)n);
	}
	close(fd);
}

#endif /* OVK_TESTUTIL_H */
