/* SPDX-License-Identifier: Apache-2.0 */
/* test_region.c - an image that is a region of a file (an OVA member). */
#include <limits.h>

#include "testutil.h"

#define FILE_SIZE 300000u
#define REG_OFF 4103u
#define REG_LEN 100000u

int main(void)
{
	struct bdev_open_opts rw = { .flags = BDEV_O_RDWR };
	char path[PATH_MAX];
	struct bdev_info info;
	struct bdev_extent_info ext;
	struct bdev *b;
	uint8_t buf[REG_LEN];
	int fd;

	make_pattern_file(path, sizeof(path), FILE_SIZE, 0);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(bdev_open_region(fd, REG_OFF, REG_LEN, "pkg.ova:disk1.img",
				  &rw, &b), -EROFS);
	CHECK(strstr(bdev_errmsg(), "pkg.ova:disk1.img"));
	CHECK_EQ(bdev_open_region(fd, REG_OFF, REG_LEN, "pkg.ova:disk1.img",
				  NULL, &b), 0);
	close(fd); /* the region holds its own descriptor */

	CHECK_EQ(bdev_get_info(b, &info), 0);
	CHECK_EQ(info.size, REG_LEN);
	CHECK(strcmp(info.format, "raw") == 0);
	CHECK(info.read_only);
	CHECK_EQ(bdev_get_extent(b, 0, &ext), 0);
	CHECK_EQ(ext.file_offset, REG_OFF);

	CHECK_EQ(bdev_pread(b, buf, REG_LEN, 0), 0);
	CHECK_EQ(pattern_mismatch(buf, REG_LEN, REG_OFF), -1);
	CHECK_EQ(bdev_pread(b, buf, 10, REG_LEN - 10), 0);
	CHECK_EQ(pattern_mismatch(buf, 10, REG_OFF + REG_LEN - 10), -1);
	CHECK_EQ(bdev_pread(b, buf, 11, REG_LEN - 10), -EINVAL);
	CHECK(strstr(bdev_errmsg(), "pkg.ova:disk1.img"));
	CHECK_EQ(bdev_pwrite(b, buf, 1, 0), -EROFS);
	CHECK_EQ(bdev_close(b), 0);

	/* a region that claims more than the file holds: reads past the
	   file's end fail with a message naming the source and offset */
	fd = open(path, O_RDONLY);
	CHECK_EQ(bdev_open_region(fd, FILE_SIZE - 1000, 5000, "short.img",
				  NULL, &b), 0);
	close(fd);
	CHECK_EQ(bdev_pread(b, buf, 1000, 0), 0);
	CHECK_EQ(pattern_mismatch(buf, 1000, FILE_SIZE - 1000), -1);
	CHECK_EQ(bdev_pread(b, buf, 2000, 0), -EIO);
	CHECK(strstr(bdev_errmsg(), "short.img"));
	CHECK(strstr(bdev_errmsg(), "offset 1000"));
	CHECK_EQ(bdev_close(b), 0);
	unlink(path);
	return 0;
}
