/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pvblk.h - what the pvblk daemon's parts share: an export (one open image)
 * and the protocol servers that serve it.
 *
 * A protocol server (NBD, vhost-user-blk) is an ops table. main.c opens
 * each image once (export.c: the one IMAGE, or one per --export), then
 * starts every listener the command line named on its export; each server
 * runs its own threads (one io_uring queue of the engine per thread) and
 * returns from start() once its socket accepts. Several exports may share
 * one NBD socket (pvblk_listen.share): clients pick one by name. On SIGTERM
 * or SIGINT main.c calls stop() on each listener in reverse order, then
 * closes every export (flush, mark clean, unlock).
 */
#ifndef OVK_PVBLK_H
#define OVK_PVBLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockengine.h"

/* One open image, shared by every listener that serves it: the daemon's
   one IMAGE, or one per --export. */
struct pvblk_export {
	const char *name;      /* --export name=, or the one IMAGE's
				  --export-name ("" when not given) */
	const char *image;     /* the path given on the command line */
	char *snapshot_child;  /* -o snapshot: the delta child written to */
	struct bdev *bdev;     /* the open image (the child for -o snapshot) */
	bool read_only;        /* -o ro: servers refuse writes */
	uint64_t size;         /* virtual size in bytes */
};

/* --poll-us when not given: QEMU's IOThread poll-max-ns is 32768 */
#define PVBLK_POLL_US_DEFAULT 32u

/* One --nbd or --vhost-user-blk on the command line. */
struct pvblk_listen {
	const struct pvblk_protocol *proto;
	const char *address;     /* as given: a socket path, or unix:/tcp: */
	const char *export_name; /* --export-name (NBD), or NULL */
	const char *tls_creds;   /* --tls-creds DIR (NBD), or NULL */
	const char *tls_psk;     /* --tls-psk FILE (NBD), or NULL */
	unsigned num_queues;     /* --num-queues (vhost-user-blk), >= 1 */
	unsigned poll_us;        /* --poll-us (vhost-user-blk): the most a
				    queue thread busy-polls before it sleeps
				    (struct vblk_poll), 0: never */
	struct pvblk_export *export;
	/* NBD: serve export as one more export (named export_name) on the
	   socket of share, a listener of the same protocol started before
	   and stopped after this one; address is share's. NULL: a socket of
	   its own. */
	struct pvblk_listen *share;
	void *state;             /* the server's own, set by start() */
};

/* One queue of a listener (a vhost-user-blk virtqueue), for status. */
#define PVBLK_STATS_MAX_QUEUES 64
#define PVBLK_STATS_REASON 128
struct pvblk_queue_stats {
	unsigned index;
	uint64_t requests;                /* answered since the daemon began */
	bool broken;                      /* serves nothing until set up again */
	char reason[PVBLK_STATS_REASON];  /* why, when broken */
};

/*
 * What a listener has answered since it started: requests (every reply,
 * success or error), data bytes of successful reads and writes, and
 * requests answered with an error. The counters never go backwards: the
 * work of clients that have gone is kept. nqueues is 0 for a protocol
 * without queues to report.
 */
struct pvblk_io_stats {
	uint64_t requests;
	uint64_t read_bytes;
	uint64_t written_bytes;
	uint64_t errors;
	unsigned nqueues;
	struct pvblk_queue_stats queues[PVBLK_STATS_MAX_QUEUES];
};

struct pvblk_protocol {
	const char *name; /* "nbd", "vhost-user-blk" */
	/*
	 * Start serving l->export at l->address. Returns 0 once the socket
	 * exists and accepts; on failure -errno with a sentence in err that
	 * names the address and what went wrong. Never blocks after that:
	 * the server's threads do the work.
	 */
	int (*start)(struct pvblk_listen *l, char *err, size_t errlen);
	/*
	 * Stop accepting, finish (or fail) requests in flight, join every
	 * thread, remove the socket. The export stays open: main.c closes it.
	 */
	void (*stop)(struct pvblk_listen *l);
	/*
	 * Clients connected now (NBD connections), for the control socket's
	 * status; may be NULL when the protocol does not count them. Any
	 * thread may call it while the listener runs.
	 */
	int (*connections)(struct pvblk_listen *l);
	/*
	 * l's image grew (bdev_grow, from the control socket): serve the new
	 * size and tell the clients that can be told. Returns how many were
	 * told (0 or 1 for vhost-user's one front end), or -errno. NBD
	 * cannot tell a connected client: new connections get the new size.
	 */
	int (*resized)(struct pvblk_listen *l);
	/*
	 * Fill out with what the listener has served (see struct
	 * pvblk_io_stats), for the control socket's status; may be NULL.
	 * Any thread may call it while the listener runs.
	 */
	void (*stats)(struct pvblk_listen *l, struct pvblk_io_stats *out);
};

/* The protocols this daemon knows (each in its own folder). NULL where
   that protocol is not built yet. */
extern const struct pvblk_protocol *const pvblk_protocol_nbd;
extern const struct pvblk_protocol *const pvblk_protocol_vhost_user_blk;

/* export.c: before the image is opened, find the delta children of a view
   that a pvblk which died left beside it (liveops_recover): merge them into
   it when merge (the image is served writable), else log that it is stale.
   -errno (logged) when leftovers cannot be merged. */
int pvblk_recover_views(const char *image, bool merge);
/* export.c: open the image for mode "ro", "rw" or "snapshot" (child may be
   NULL: IMAGE-snapshot-DATE.vmdk beside the image). A failed open leaves no
   child behind. Messages go to stderr naming the image. */
int pvblk_export_open(struct pvblk_export *e, const char *image,
		      const char *mode, const char *child, const char *format);
/* Flush, close, release locks. With discard (the daemon failed to start)
   the snapshot child this export created is removed too, so a failed
   command leaves nothing behind. Returns 0 or -errno (message on stderr). */
int pvblk_export_close(struct pvblk_export *e, bool discard);

/* Log a line to stderr as "pvblk: ...". */
void pvblk_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Sends state ("READY=1", "STOPPING=1", ...) to the service manager at
   $NOTIFY_SOCKET (sd_notify's protocol), if set; 0 or -errno, logged. */
int pvblk_service_notify(const char *state);

#endif /* OVK_PVBLK_H */
