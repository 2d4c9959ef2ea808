/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_vmdk_check.c - bdev_check over one hostile extent file (hosted
 * sparse, COWD or seSparse by its magic; also the fallback for files the
 * engine refuses to open). bdev_check takes a path, so each input is
 * written to one temporary file first. Never repairs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[] = "/tmp/fuzz_vmdk_check.XXXXXX";

static void remove_file(void)
{
	unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	struct bdev_check_result r;

	if (fd < 0) {
		fd = mkstemp(path);
		if (fd < 0)
			abort();
		atexit(remove_file);
	}
	if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		return 0;
	(void)bdev_check(path, 0, &r, NULL, NULL);
	return 0;
}
