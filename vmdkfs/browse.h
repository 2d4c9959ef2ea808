/* SPDX-License-Identifier: Apache-2.0 */
/*
 * browse.h - mount each guest filesystem read-only in a staging folder and
 * say, for the user's fs/ tree, where each one lives.
 */
#ifndef OVK_VMDKFS_BROWSE_H
#define OVK_VMDKFS_BROWSE_H

#include <stdbool.h>
#include <stdint.h>

#include "vmdkfs.h"

struct browse_target {
	char name[160];       /* entry name under fs/ */
	char source[512];     /* raw file in the staging view */
	char dir[512];        /* where the filesystem is mounted */
	char fstype[16];      /* "ext4", "vfat", "ntfs", or "" */
	char driver[32];      /* "kernel", "fuse2fs", ... once mounted */
	char reason[512];     /* why it is not mounted */
	bool mounted;
};

struct browse {
	enum vmdkfs_browse_mode mode;
	char staging[200]; /* private folder: dev/ and fs/ inside */
	char devdir[220];   /* mountpoint of the staging view */
	unsigned count;
	struct browse_target *targets;
	char *status;       /* fs/status.txt */
	size_t status_len;
};

/* Create the staging folder (dev/ and fs/) under a private runtime dir. */
int browse_new(enum vmdkfs_browse_mode mode, struct browse **out);

/*
 * Probe every window of fs (the whole disk when it has no partition table)
 * and mount what can be mounted; the staging view must be serving. Never
 * fails as a whole: a filesystem that does not mount gets a reason.
 */
void browse_mount_all(struct browse *br, struct vmdkfs *fs);

/* Unmount every guest filesystem (lazily as a last resort). */
void browse_unmount_all(struct browse *br);

/* Remove the staging folders and free br. The staging view must be gone. */
void browse_free(struct browse *br);

/* The target named name, or NULL. */
const struct browse_target *browse_find(const struct browse *br,
					const char *name, size_t len);

/* What the bytes at the start of a volume hold: "ext4", "vfat", "ntfs",
 * "swap", or NULL. sb must hold at least 4096 bytes. */
const char *browse_probe_fstype(const uint8_t *sb, size_t len);

#endif
