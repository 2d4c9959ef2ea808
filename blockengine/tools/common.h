/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common.h - helpers shared by the `vmdk` tool's commands: option parsing,
 * opening images, error reporting, allocation walks over a chain, JSON.
 */
#ifndef OVK_VMDK_TOOL_COMMON_H
#define OVK_VMDK_TOOL_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "blockengine.h"
#include "info_json.h"
#include "units.h"

#define TOOL_NAME "vmdk"

/* Each command: argc/argv start at the command name. Returns the exit code. */
int cmd_info(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_checkpoint(int argc, char **argv);
int cmd_resize(int argc, char **argv);

/* Parse qemu-img style -o "key=value,..." (modifies list) into o; prints
   a usage error for cmd and returns -1 on a bad item. */
int parse_create_opts(const char *cmd, char *list, struct bdev_create_opts *o);

/* Print "vmdk: <fmt>" and a newline on stderr. */
void tool_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print the engine's message for a failed call (ret = -errno). */
void tool_bdev_err(int ret, const char *what);
/* Print a usage error and the hint to run `vmdk CMD --help`. */
/* Parse --output=human|json for cmd into *json; 0, or -1 after a usage
   message. */
int tool_parse_output(const char *cmd, const char *arg, bool *json);
void tool_usage_err(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Parse "4096", "64k", "1M", "6G", "2T" (binary units). */
int parse_size(const char *s, uint64_t *out);
/* Parse an unsigned decimal count within [min, max]. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Open path read-only (share = no locks); prints the error on failure. */
int tool_open(const char *path, const char *format, bool share,
	      bool writable, struct bdev **out);


enum chain_kind { CHAIN_DATA, CHAIN_ZERO };

/*
 * How [off, off + len) reads through the whole chain: data stored in some
 * layer, or zeros (a zeroed grain, a ZERO extent, or unallocated down to
 * the bottom). *pnum gets the run length, *depth the layer answering
 * (0 = top; the bottom's for zeros no layer holds, with *present false).
 * One bdev_block_status_depth call: the engine answers under its top
 * lock, and a layer shorter than its child reads as unallocated there.
 * Returns the kind or -errno.
 */
int chain_status(struct bdev *top, uint64_t off, uint64_t len,
		 uint64_t *pnum, unsigned *depth, bool *present);


/* Monotonic seconds. */
double now_sec(void);

#endif
