/* SPDX-License-Identifier: Apache-2.0 */
/* test_opts.c - options structs are read by the size the caller gives, so
   they can grow: the first release's layout (struct_size 0), this one's,
   and a newer caller's larger struct whose unknown bytes are 0 all work; a
   newer option this library cannot honour is refused, not ignored. */
#include <limits.h>
#include <string.h>

#include "testutil.h"

/* A caller built against a newer header: one more field after ours. */
struct open_opts_v_next {
	struct bdev_open_opts known;
	uint64_t newer_option;
};

struct create_opts_v_next {
	struct bdev_create_opts known;
	uint64_t newer_option;
};

static void test_open_sizes(const char *path)
{
	struct open_opts_v_next o;
	struct bdev *b;
	uint8_t buf[512];

	memset(&o, 0, sizeof(o));
	CHECK_EQ(bdev_open(path, &o.known, &b), 0); /* struct_size 0 */
	CHECK_EQ(bdev_pread(b, buf, sizeof(buf), 0), 0);
	CHECK_EQ(pattern_mismatch(buf, sizeof(buf), 0), -1);
	CHECK_EQ(bdev_close(b), 0);

	o.known.struct_size = sizeof(o.known);
	CHECK_EQ(bdev_open(path, &o.known, &b), 0);
	CHECK_EQ(bdev_close(b), 0);

	o.known.struct_size = sizeof(o); /* newer, unknown option unset */
	CHECK_EQ(bdev_open(path, &o.known, &b), 0);
	CHECK_EQ(bdev_close(b), 0);

	o.newer_option = 1; /* newer, and the unknown option asked for */
	CHECK_EQ(bdev_open(path, &o.known, &b), -E2BIG);
	CHECK(strstr(bdev_errmsg(), path) != NULL);
	CHECK(strstr(bdev_errmsg(), "newer option") != NULL);

	o.newer_option = 0;
	o.known.struct_size = 8; /* smaller than any release's layout */
	CHECK_EQ(bdev_open(path, &o.known, &b), -EINVAL);
	CHECK(strstr(bdev_errmsg(), "struct_size 8") != NULL);
}

static void test_create_sizes(const char *dir)
{
	struct create_opts_v_next o;
	char path[PATH_MAX + 16];
	struct bdev *b;
	struct bdev_info in;

	memset(&o, 0, sizeof(o));
	o.known.format = "raw";
	o.known.size = 1 << 20;
	o.known.struct_size = sizeof(o);
	o.newer_option = 7;
	snprintf(path, sizeof(path), "%s.a.raw", dir);
	CHECK_EQ(bdev_create(path, &o.known), -E2BIG);
	CHECK_EQ(access(path, F_OK), -1); /* refused before anything exists */

	o.newer_option = 0;
	CHECK_EQ(bdev_create(path, &o.known), 0);
	CHECK_EQ(bdev_open(path, NULL, &b), 0);
	CHECK_EQ(bdev_get_info(b, &in), 0);
	CHECK_EQ(in.size, 1u << 20);
	CHECK_EQ(bdev_close(b), 0);
	unlink(path);
}

int main(void)
{
	char path[PATH_MAX];

	make_pattern_file(path, sizeof(path), 1 << 20, 0);
	test_open_sizes(path);
	test_create_sizes(path);
	unlink(path);
	return 0;
}
