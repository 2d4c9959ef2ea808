/* SPDX-License-Identifier: Apache-2.0 */
/*
 * info_json.h - what `vmdk info` reports about an image, shared by the vmdk
 * tool (cmd_info.c) and vmdkfs (info.json): one document, one renderer.
 */
#ifndef OVK_INFO_JSON_H
#define OVK_INFO_JSON_H

#include <stdint.h>
#include <stdio.h>

#include "blockengine.h"

struct alloc_sum {
	uint64_t data, zero, unalloc;
};

/* Sum bdev_block_status over [0, size) of b's top layer (0 or -errno). */
int info_alloc_sum(struct bdev *b, uint64_t size, struct alloc_sum *s);
/* "RW", "RDONLY" or "NOACCESS". */
const char *info_access_name(enum bdev_access a);
/* Write s as a JSON string literal, or null when s is NULL. */
void json_str(FILE *f, const char *s);
/* Write the `vmdk info --output=json` document of b (in = its info). */
void info_print_json(FILE *f, struct bdev *b, const struct bdev_info *in,
		     const struct alloc_sum *s);

#endif /* OVK_INFO_JSON_H */
