/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vmdkfs.h - what the parts of vmdkfs share: the mounted image, its
 * partitions, the browse manager and the two FUSE views.
 *
 * Two FUSE sessions serve one image. The user's mount shows disk,
 * partitions/, info.json and (with browse) fs/. A private mount in a staging
 * folder shows disk and partitions/ only: guest filesystems are mounted from
 * there, so nothing holds files open on the user's mount and a plain
 * `fusermount3 -u MOUNTPOINT` succeeds. fs/NAME in the user's mount passes
 * through to the guest filesystem mounted in the staging folder.
 */
#ifndef OVK_VMDKFS_H
#define OVK_VMDKFS_H

#define FUSE_USE_VERSION 312

#include <fuse.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "blockengine.h"
#include "ptable.h"

struct browse;
struct handle;

/*
 * Largest read request of a read-only mount. Such mounts answer reads of
 * `disk` and partitions by having libfuse splice the image's files to the
 * kernel, and libfuse splices a reply only when it fits its pipe; without
 * CAP_SYS_RESOURCE a pipe holds at most /proc/sys/fs/pipe-max-size bytes
 * (1 MiB by default), which a 1 MiB reply and its header overflow.
 */
#define VMDKFS_RO_READ_MAX (512u << 10)

enum vmdkfs_browse_mode {
	VMDKFS_BROWSE_OFF,
	VMDKFS_BROWSE_AUTO,   /* kernel when root, else userspace drivers */
	VMDKFS_BROWSE_KERNEL, /* loop device + mount(8) */
	VMDKFS_BROWSE_FUSE,   /* fuse2fs, ntfs-3g, fusefat */
};

/* Read-ahead of a mount (its BDI's read_ahead_kb and max_readahead in
 * INIT): a buffered sequential reader keeps this much in flight, split
 * into max_read requests. See vmdkfs_raise_readahead. */
#define VMDKFS_READAHEAD (4u << 20)

/* The largest read or write one FUSE request carries (max_write, and the
 * kernel's max_pages follow it). */
#define VMDKFS_IO_MAX (1u << 20)

/* A raw window onto the disk: the disk itself or one partition. */
struct vmdkfs_window {
	const char *name; /* file name under partitions/, or "disk" */
	uint64_t offset;
	uint64_t size;
};

struct vmdkfs {
	struct bdev *bdev;
	bool splice_reads; /* replies may splice host-file runs (see op_init) */
	const char *image;
	uint64_t size;
	struct timespec mtime; /* of the image file, shown on every node */
	bool writable;
	const char *snapshot_child; /* -o snapshot: the delta child */
	bool snapshot_created;      /* this run created it: a failed start
				       removes it again */
	bool debug;
	struct ptable *pt;
	struct vmdkfs_window disk;
	struct vmdkfs_window *parts; /* pt->count windows */

	pthread_mutex_t info_lock;
	char *info_json; /* built on first use */
	size_t info_len;

	struct browse *browse; /* NULL without --browse */

	/* Files open under fs/: they pin the guest filesystems, so they are
	 * closed before those are unmounted (releases may never come once
	 * the user's mount is gone). */
	pthread_mutex_t guest_lock;
	struct handle *guest_files;
};

/* Per-session private data: which tree the session shows. */
struct vmdkfs_view {
	struct vmdkfs *fs;
	bool staging; /* the private view: disk and partitions/ only */
	bool splice_write; /* its kernel session takes spliced replies */
};

/* fsops.c: the FUSE operations shared by both views. */
extern const struct fuse_operations vmdkfs_ops;

/* fsops.c: close every file still open under fs/ (the user's session
 * has stopped serving). */
void vmdkfs_close_guest_files(struct vmdkfs *fs);
/* Free the guest-file handles whose release never came; call once the FUSE
 * sessions have stopped. */
void vmdkfs_free_guest_handles(struct vmdkfs *fs);

/* infojson.c: the `vmdk info --output=json` document for the image. */
int vmdkfs_info_json(struct vmdkfs *fs, char **out, size_t *len);

/* -o io_uring: whether requests may come over io_uring (uring.c). */
enum vmdkfs_uring_mode {
	VMDKFS_URING_OFF,
	VMDKFS_URING_AUTO, /* when the kernel offers it, quietly */
	VMDKFS_URING_ON,   /* when the kernel offers it; says why not */
};

/* loop.c: serve f's requests with up to max_workers threads until its
 * session exits, and over io_uring as uring says; *finish is posted (by
 * a worker or a signal handler) when it may have. Returns 0 or -errno. */
int vmdkfs_loop(struct fuse *f, unsigned max_workers,
		enum vmdkfs_uring_mode uring, sem_t *finish);

/* uring.c: before the session's INIT, prepare one pinned thread and
 * io_uring per CPU queue and hook libfuse's I/O, so that the INIT reply
 * asks for FUSE over io_uring if the kernel offers it. *out stays NULL
 * (after one log line, unless AUTO) when it cannot be used: /dev/fuse
 * serves everything then. Returns 0 or -errno. */
struct vmdkfs_uring;
int vmdkfs_uring_start(struct fuse_session *se, enum vmdkfs_uring_mode mode,
		       struct vmdkfs_uring **out);
/* Stops the queue threads and frees u (NULL is fine). */
void vmdkfs_uring_stop(struct vmdkfs_uring *u);

/* log.c: log a line to stderr, or to syslog after vmdkfs_log_to_syslog
 * (called once daemonised, before other threads start). */
void vmdkfs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vmdkfs_log_to_syslog(void);
/* Raises the read-ahead of the vmdkfs mount at mp (kernel.c); call after
   fuse_mount and before the loop answers INIT. */
void vmdkfs_raise_readahead(const char *mp);

#endif
