/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream-to-vmdk.c - write a VMDK from a stream: the raw disk arrives on
 * standard input (a pipe, a socket, a decompressor) front to back, and
 * becomes a streamOptimized VMDK (or another subformat) without a
 * temporary file. All-zero grains are left out.
 *
 *   cc stream-to-vmdk.c $(pkg-config --cflags --libs blockengine)
 *   zcat disk.raw.gz | ./stream-to-vmdk 10G disk.vmdk
 *   ./stream-to-vmdk 10G disk.vmdk monolithicSparse < disk.raw
 */
#define _POSIX_C_SOURCE 200809L /* fstat, lseek, ftruncate, read */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <blockengine.h>

/* Read exactly len bytes unless the stream ends; returns the count. */
static size_t read_full(int fd, unsigned char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

/* "10G", "512M", "4096" -> bytes; 0 when it is not a size. */
static uint64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30
		    : *end == 'T' ? 40 : 0;

	if (end == s || (*end && (!shift || end[1])))
		return 0;
	return (uint64_t)v << shift;
}

int main(int argc, char **argv)
{
	struct bdev_create_opts co;
	struct bdev_writer *w;
	unsigned char *buf;
	uint64_t off, grain;
	int ret = 0;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: %s SIZE OUT.vmdk [SUBFORMAT] < disk.raw\n",
			argv[0]);
		return 2;
	}
	memset(&co, 0, sizeof(co)); /* every option at its default */
	co.format = "vmdk";
	co.subformat = argc == 4 ? argv[3] : "streamOptimized";
	co.size = parse_size(argv[1]);
	if (!co.size || co.size % 512) {
		fprintf(stderr, "stream-to-vmdk: %s: expected a size in whole "
			"sectors (e.g. 10G)\n", argv[1]);
		return 2;
	}
	if (bdev_writer_new(argv[2], &co, &w) < 0) {
		fprintf(stderr, "stream-to-vmdk: %s\n", bdev_errmsg());
		return 1;
	}
	grain = bdev_writer_grain(w);
	buf = (unsigned char *)malloc(grain);
	for (off = 0; buf && off < co.size; off += grain) {
		size_t want = co.size - off < grain ? co.size - off : grain;
		size_t got = read_full(0, buf, want);

		if (got < want) /* the stream ended early: the rest is zeros */
			memset(buf + got, 0, want - got);
		if (!bdev_all_zero(buf, want) &&
		    bdev_writer_write(w, off, buf, want) < 0) {
			fprintf(stderr, "stream-to-vmdk: %s\n", bdev_errmsg());
			ret = 1;
			break;
		}
	}
	free(buf);
	if (ret || !buf) {
		bdev_writer_abort(w); /* leaves no half-written image */
		return 1;
	}
	if (bdev_writer_close(w) < 0) {
		fprintf(stderr, "stream-to-vmdk: %s\n", bdev_errmsg());
		return 1;
	}
	return 0;
}
