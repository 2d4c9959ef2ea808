/* SPDX-License-Identifier: Apache-2.0 */
/*
 * readback.c - test helper: print the bytes an image reads as (through
 * bdev_pread, in chunks of the given size) to stdout, so scripts can
 * compare it with `qemu-img convert -O raw`.
 *   readback [-c CHUNK] [-f allow-escape|force-cid|no-backing]... IMAGE
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockengine.h"

int main(int argc, char **argv)
{
	struct bdev_open_opts o = { 0 };
	struct bdev_info info;
	struct bdev *b;
	size_t chunk = 1 << 20;
	int opt, ret;

	while ((opt = getopt(argc, argv, "c:f:")) != -1) {
		if (opt == 'c')
			chunk = strtoull(optarg, NULL, 0);
		else if (strcmp(optarg, "allow-escape") == 0)
			o.flags |= BDEV_O_ALLOW_ESCAPE;
		else if (strcmp(optarg, "force-cid") == 0)
			o.flags |= BDEV_O_FORCE_CID;
		else if (strcmp(optarg, "no-backing") == 0)
			o.flags |= BDEV_O_NO_BACKING;
		else
			return 2;
	}
	if (optind != argc - 1 || chunk == 0)
		return 2;
	ret = bdev_open(argv[optind], &o, &b);
	if (ret < 0) {
		fprintf(stderr, "%s\n", bdev_errmsg());
		return 1;
	}
	bdev_get_info(b, &info);
	uint8_t *buf = malloc(chunk);
	for (uint64_t off = 0; off < info.size; off += chunk) {
		size_t n = info.size - off < chunk ? info.size - off : chunk;
		ret = bdev_pread(b, buf, n, off);
		if (ret < 0) {
			fprintf(stderr, "read at %" PRIu64 ": %s\n", off, bdev_errmsg());
			return 1;
		}
		fwrite(buf, 1, n, stdout);
	}
	free(buf);
	bdev_close(b);
	return 0;
}
