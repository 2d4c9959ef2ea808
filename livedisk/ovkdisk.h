/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ovkdisk.h - what the parts of ovkdisk share: talking to a pvblk control
 * socket, the backup folder's manifest, block digests and progress.
 */
#ifndef OVK_OVKDISK_H
#define OVK_OVKDISK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockengine.h"

/* Backups are read, written and digested in blocks of this size: the
   engine's change-tracking granularity. */
#define OVKDISK_BLOCK 65536u
#define OVKDISK_MANIFEST "manifest.json"
/* The checkpoint of a backup under way, removed once the manifest names
   it: what the next backup deletes from the disk when one died. */
#define OVKDISK_PENDING ".pending"

struct ovkdisk_opts {
	bool json;        /* --output=json */
	bool progress;    /* a progress bar on stderr (a terminal) */
	bool progress_json; /* --progress=json: JSON lines on stderr */
	const char *quiesce; /* --quiesce CMD, or NULL */
	int kind;         /* backup: 0 = as the folder allows, 1 full, 2 incr */
	const char *format; /* backup --format: vmdk-stream, vmdk-sparse, raw */
	const char *at;   /* restore --at CHECKPOINT */
	const char *copies[64]; /* patch --copy SRC:DEST */
	unsigned ncopies;
	const char *partition;  /* patch --partition NAME */
	int patch_action;       /* patch: 'c' --commit, 'd' --discard */
};

/* ctl.c: one request on the control socket at path (connects, sends, reads
   the reply line). Returns the "return" object (new reference) or NULL
   with the daemon's error (or what went wrong) in err. */
json_t *ctl_call(const char *path, json_t *req, char *err, size_t errlen);
/* ctl_call of {"command": cmd} alone; a failure is printed ("ovkdisk:
   CMD: why") and gives NULL. */
json_t *ctl_command(const char *path, const char *cmd);
/* Name disk (an ovkvm socket's disk index) in every request from now on:
   ctl_call adds "disk": disk to req. */
void ctl_set_disk(int disk);
/* Name export (of a pvblk serving several, pvblk --export) in every
   request from now on: ctl_call adds "export": name to req. */
void ctl_set_export(const char *name);

/* The engine format ("raw" or "vmdk") of the file of a manifest entry: its
   "format" (vmdk-stream, vmdk-sparse or raw; absent: a VMDK). */
const char *entry_engine_format(json_t *entry);

/* Run a --quiesce command through /bin/sh; 0 when it exited 0. */
int run_quiesce(const char *cmd);

/* A progress bar on stderr: what, done of total bytes. done == total ends
   the line. With o->progress_json instead one line
   {"progress":WHAT,"done":N,"total":N,"percent":P} each time the whole
   percentage grows (for programs such as ovkd). Does nothing unless one
   of them is set. */
void progress(const struct ovkdisk_opts *o, const char *what, uint64_t done,
	      uint64_t total);

/* SHA-256 of len bytes into out (32 bytes). */
void sha256(const void *buf, size_t len, uint8_t out[32]);
/* SHA-256 of a file as 64 hex digits into hex; -errno on a read error. */
int sha256_file(const char *path, char hex[65]);
void to_hex(const uint8_t *md, size_t n, char *hex);

/* Write data to dir/name atomically: a temporary file, fsync, rename,
   fsync of the folder. */
int write_atomic(const char *dir, const char *name, const void *data,
		 size_t len);

/* For crash tests: when $OVKDISK_STOP_AT names phase, the process stops
   itself (SIGSTOP) there, so that a test can kill -9 it at that point. */
void stop_point(const char *phase);

/* backup.c */
int cmd_backup(const struct ovkdisk_opts *o, const char *sock,
	       const char *dir);
/* patch.c: vmdkfs is the program to run */
int cmd_patch(const struct ovkdisk_opts *o, const char *vmdkfs,
	      const char *image);
/* restore.c */
int cmd_restore(const struct ovkdisk_opts *o, const char *dir,
		const char *output);
int cmd_verify(const struct ovkdisk_opts *o, const char *dir);
/* Read the disk of image path (of engine format format) block by block, compute the digest of its
   block digests (the manifest's disk_sha256); with out_fd >= 0 also write
   the disk there (sparse: all-zero blocks are skipped). */
int digest_image(const struct ovkdisk_opts *o, const char *path,
		 const char *format, int out_fd, char hex[65], uint64_t *size);

#endif /* OVK_OVKDISK_H */
