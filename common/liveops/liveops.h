/* SPDX-License-Identifier: Apache-2.0 */
/*
 * liveops.h - the live-disk operations of a control socket that need only
 * the running disk's struct bdev: checkpoints, what changed since one, and
 * a view (the top layer frozen as a point-in-time image while writes go to
 * a new child, later merged back by a live commit).  pvblk and ovkvm both
 * answer them through this file, with the same reply shapes:
 *
 *   checkpoint-create  {"name": N}         checkpoint-delete  {}
 *   checkpoint-list    {"checkpoints": [N, ...]}
 *   changed            {"extents": [[OFF, LEN], ...], "next": OFF|null,
 *                       "size": BYTES}
 *   view-create        {"path": FROZEN, "child": CHILD,
 *                       "checkpoint": N|null}
 *   view-release       {"top": PATH, "committed": true}
 *
 * Each returns a whole reply, {"return": ...} or {"error": "sentence"}
 * (ctlsock.h).  Calls on one struct liveops must not overlap; the engine
 * calls they make are safe against the disk's I/O threads.
 */
#ifndef OVK_LIVEOPS_H
#define OVK_LIVEOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "blockengine.h"

/* Changed extents per reply of "changed"; "next" says where to go on. */
#define LIVEOPS_CHANGED_MAX_EXTENTS 8192

enum liveops_cmd {
	LIVEOPS_CHECKPOINT_CREATE,
	LIVEOPS_CHECKPOINT_DELETE,
	LIVEOPS_CHECKPOINT_LIST,
	LIVEOPS_CHANGED,
	LIVEOPS_VIEW_CREATE,
	LIVEOPS_VIEW_RELEASE,
};

/* A checked request for one of the operations on one disk of a program
   that serves several (ovkvm): strings point into the request's JSON. */
struct liveops_req {
	enum liveops_cmd cmd;
	unsigned disk;     /* "disk", default 0 (not checked against a count) */
	const char *name;  /* checkpoint-create/delete: "name"; changed:
			      "since"; view-create: "checkpoint" or NULL */
	uint64_t offset, length; /* changed: the range (length 0 = to end) */
};

struct liveops_view {
	char *frozen;     /* the frozen layer: the point-in-time view */
	char *child;      /* where the running disk's writes go meanwhile */
	char *checkpoint; /* started with the view, or NULL */
	bool in_store;    /* frozen is the checkpoint's copy that the disk's
			     store keeps (an RBD snapshot,
			     bdev_checkpoint_view) and child the disk
			     itself: nothing to merge back on release */
};

struct liveops {
	struct bdev *bdev; /* the running disk (top of its chain) */
	char *top;         /* absolute path of the file it writes to */
	bool read_only;
	struct liveops_view *view; /* open view, or NULL */
};

/* Set lo up for bdev, whose top layer is the file top (made absolute, so
   that paths in replies mean the same file to a client elsewhere). 0 or
   -errno. */
int liveops_init(struct liveops *lo, struct bdev *bdev, const char *top,
		 bool read_only);
/* Free what liveops_init and the ops allocated. A view still open is left
   as it is: its child stays a delta above the frozen layer. */
void liveops_fini(struct liveops *lo);

/* The disk's checkpoint names, a new JSON array. */
json_t *liveops_checkpoints(struct bdev *bdev);

json_t *liveops_checkpoint_create(struct liveops *lo, const char *name);
json_t *liveops_checkpoint_delete(struct liveops *lo, const char *name);
json_t *liveops_checkpoint_list(struct liveops *lo);
/* Changed extents since checkpoint since within offset+length (length 0:
   to the end) of a disk of size bytes. */
json_t *liveops_changed(struct liveops *lo, const char *since,
			uint64_t offset, uint64_t length, uint64_t size);
/* Freeze the top layer as lo->view; checkpoint (or NULL) is created first
   so that "changed" can later tell what was written since the view. On a
   disk whose store keeps checkpoints as copies (RBD) the view is that
   copy (checkpoint needed) and writes go on to the disk itself. */
json_t *liveops_view_create(struct liveops *lo, const char *checkpoint);
/* Merge the view's child back into the frozen layer and close the view;
   "busy" in the error while another program holds the frozen file. */
json_t *liveops_view_release(struct liveops *lo);

/*
 * Check req (a parsed request line: untrusted) for one of the operations
 * above: 1 with *out filled when its "command" names one and every member
 * is known and well-formed ("disk" an index below 256, names of 1 to 103
 * bytes without spaces, control bytes or '/'), 0 when "command" names no
 * live-disk operation (or req has none), -EINVAL with a sentence in err.
 */
int liveops_parse(json_t *req, struct liveops_req *out, char *err,
		  size_t errlen);
/* Run a checked request on lo, a disk of size bytes. */
json_t *liveops_run(struct liveops *lo, const struct liveops_req *r,
		    uint64_t size);

/*
 * Find what a view of image left when the program serving it died (kill -9,
 * a crash): delta children named IMAGE-live-N.vmdk beside image (IMAGE:
 * image's name without .vmdk) whose parentFileNameHint is image, and their
 * own -live- children. They hold the disk's latest writes, so image alone
 * is stale. With merge, each is merged into its parent offline, top first
 * (bdev_commit: crash-safe, the change map follows back to image), and
 * *merged counts them; without merge nothing is changed. 0 when none is
 * left (or all were merged), -EEXIST with a sentence in err naming the
 * files when some are left and merge is false, another -errno when a
 * leftover cannot be read or merged (two children of one parent, a file
 * held by another program).
 */
int liveops_recover(const char *image, bool merge, unsigned *merged,
		    char *err, size_t errlen);

/* The view as status and view-create show it (a new object). */
json_t *liveops_view_json(const struct liveops_view *v);

#endif /* OVK_LIVEOPS_H */
