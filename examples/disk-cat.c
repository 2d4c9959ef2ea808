/* SPDX-License-Identifier: Apache-2.0 */
/*
 * disk-cat.c - an example of a program built on libblockengine alone:
 * write the virtual disk of IMAGE (VMDK of any kind, a delta chain, or raw)
 * to standard output, as a backup or antivirus tool would read it.
 *
 *   cc disk-cat.c $(pkg-config --cflags --libs blockengine) -o disk-cat
 *   ./disk-cat disk.vmdk > disk.raw
 *
 * The image is opened read-only and shared (like qemu-img -U), so a disk in
 * use elsewhere can be read. Where stdout is a regular file, ranges that
 * read as zeros are skipped with lseek, so the copy stays sparse.
 */
#define _POSIX_C_SOURCE 200809L /* fstat, lseek, ftruncate, read */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <blockengine.h>

#define CHUNK (1u << 20)

/* Write all of buf, or fail. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct bdev_open_opts opts;
	struct bdev_info info;
	struct bdev *disk;
	struct stat st;
	char *buf;
	uint64_t off;
	int ret, sparse;

	if (argc != 2) {
		fprintf(stderr, "usage: %s IMAGE > disk.raw\n", argv[0]);
		return 2;
	}
	memset(&opts, 0, sizeof(opts)); /* every option at its default, */
	opts.flags = BDEV_O_SHARE;       /* and read a disk in use too */
	ret = bdev_open(argv[1], &opts, &disk);
	if (ret < 0) {
		fprintf(stderr, "disk-cat: %s\n", bdev_errmsg());
		return 1;
	}
	bdev_get_info(disk, &info);
	sparse = fstat(1, &st) == 0 && S_ISREG(st.st_mode);
	buf = (char *)malloc(CHUNK);
	if (!buf) {
		bdev_close(disk);
		return 1;
	}
	for (off = 0; off < info.size; off += CHUNK) {
		size_t len = info.size - off < CHUNK ? info.size - off : CHUNK;

		ret = bdev_pread(disk, buf, len, off);
		if (ret < 0) {
			fprintf(stderr, "disk-cat: %s\n", bdev_errmsg());
			break;
		}
		if (sparse && bdev_all_zero(buf, len)) {
			ret = lseek(1, (off_t)len, SEEK_CUR) < 0 ? -errno : 0;
		} else {
			ret = write_all(1, buf, len);
		}
		if (ret < 0) {
			fprintf(stderr, "disk-cat: stdout: %s\n", strerror(-ret));
			break;
		}
	}
	if (ret == 0 && sparse && ftruncate(1, (off_t)info.size) < 0)
		ret = -errno;
	free(buf);
	bdev_close(disk);
	return ret < 0 ? 1 : 0;
}
