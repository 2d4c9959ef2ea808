/* SPDX-License-Identifier: Apache-2.0 */
/*
 * internal.h - what the engine's parts share below the public API:
 * byte sources, format drivers, the map a driver answers, struct bdev.
 *
 * Data flow of a read: the core (read.c) asks the top layer's format driver
 * to map the request's first run (format->map), then moves the bytes:
 * DATA runs with io_uring straight into the caller's iovecs, ZERO runs with
 * memset, UNALLOCATED runs by recursing into b->backing (zeros at the bottom),
 * COMPRESSED runs through the inflated-grain cache (grain_cache.c), which
 * reads the record and asks format->decode to inflate it.
 */
#ifndef OVK_BLOCKENGINE_INTERNAL_H
#define OVK_BLOCKENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "blockengine.h"
#include "offload_pool.h"

#define BDEV_SECTOR 512u

/* ---- Errors ------------------------------------------------------------
 * Record the human message where an error is detected; the public call's
 * caller reads it with bdev_errmsg(). Returns err so a driver can write
 *   return bdev_err(-EINVAL, "%s: grainSize %" PRIu64 " at offset 20 ...", ...);
 */
int bdev_err(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * Add context to this thread's message, after what is already there: the
 * innermost cause (recorded first, where the error was detected) stays at
 * the front however deep the call chain, and only the outermost context is
 * cut off if the message grows past its bound. Returns err.
 */
int bdev_err_append(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Forget this thread's message (each public entry point starts with it). */
void bdev_err_clear(void);

/* ---- Byte sources --------------------------------------------------------
 * A byte source is something addressable by offset: a region of a file (the
 * whole file, or a member inside an OVA tar), or memory (tests, fuzzing).
 * A source with fd >= 0 is read and written by the core with io_uring at
 * base + offset on that fd; others go through the ops synchronously.
 */
struct bsrc;

struct bsub;

/*
 * Change tracking that a source's store keeps itself (RBD: a snapshot per
 * checkpoint, rbd_diff_iterate2 for what changed since one). A raw disk
 * on such a source keeps its checkpoints there instead of in a sidecar
 * file: ctk.c checks the public calls' arguments once and dispatches
 * here. The contracts are those of bdev_checkpoint_* and
 * bdev_changed_status in blockengine.h, except that the source may name
 * names it cannot hold (-EINVAL with the reason) and that its runs need
 * not end on a granularity boundary.
 */
struct bsrc_track_ops {
	int (*create)(struct bsrc *s, const char *name);
	int (*remove)(struct bsrc *s, const char *name);
	/* The index-th checkpoint, oldest first; -ENOENT past the last. */
	int (*get)(struct bsrc *s, unsigned index, const char **name);
	/* 1 (changed) or 0 for the first run of [off, off + len) since
	   checkpoint since, its length in *pnum (1 to len bytes). */
	int (*changed)(struct bsrc *s, const char *since, uint64_t off,
		       uint64_t len, uint64_t *pnum);
	/* The name that opens checkpoint name as the disk was then
	   (bdev_checkpoint_view); NULL: the store keeps no such copy. */
	int (*view_name)(struct bsrc *s, const char *name, char *buf,
			 size_t len);
};

struct bsrc_ops {
	const char *kind; /* "file", "region", "mem" */
	/* Read len bytes at off. Returns bytes read (short only at the end of
	   the source) or -errno. */
	ssize_t (*pread)(struct bsrc *s, void *buf, size_t len, uint64_t off);
	/* Write len bytes at off: all of them or -errno. NULL if read-only. */
	ssize_t (*pwrite)(struct bsrc *s, const void *buf, size_t len,
			  uint64_t off);
	int (*flush)(struct bsrc *s);                 /* NULL: nothing to do */
	int (*truncate)(struct bsrc *s, uint64_t len); /* NULL: cannot grow */
	/* For a source without an fd that knows its holes: 1 when off is
	   data, 0 in a hole, with *end where that run ends; -1 when it
	   cannot tell. NULL: everything is data. */
	int (*seek)(const struct bsrc *s, uint64_t off, uint64_t *end);
	/* For a source without an fd that moves bytes asynchronously: start
	   sub's read or write (sub->off, sub->left, sub->iov) and post its
	   completion, bytes moved or -errno, as a CQE with user_data sub
	   into the ring whose fd is ring_fd (IORING_OP_MSG_RING). 0 or
	   -errno. NULL: the core uses pread/pwrite on the calling thread. */
	int (*aio)(struct bsrc *s, struct bsub *sub, int ring_fd);
	void (*close)(struct bsrc *s);
	/* Checkpoints kept by the source's store; NULL: a sidecar file. */
	const struct bsrc_track_ops *track;
};

struct bsrc {
	const struct bsrc_ops *ops;
	char *name;      /* path or "archive.ova:disk1.vmdk", for messages */
	uint64_t length; /* bytes addressable (file size for a whole file) */
	bool writable;
	bool whole_file; /* may grow: length tracks the file's size */
	int fd;          /* -1 when not backed by a file descriptor */
	uint64_t base;   /* offset of byte 0 of the source within fd */
	void *priv;
	/* Bumped whenever a change to the source's bytes or size ends (an
	   io_uring write, zeroing or discard, a synchronous pwrite or
	   truncate): answers about holes cached before it may be stale
	   (format_raw.c), and a flush has something to make durable. */
	atomic_uint_fast64_t write_gen;
	/* write_gen as of the start of the last flush that succeeded: a flush
	   finding write_gen still there has nothing to sync (fdatasync of a
	   clean file still costs a disk cache flush on ext4). */
	atomic_uint_fast64_t synced_gen;
};

/* s's length now. Once a source is shared, writers that append (grains
   allocated at the end of a file) or grow it (a live resize) change it
   with a release store on their thread; this acquire load pairs with it,
   so the bytes written below a length read here are visible. Code that
   runs while the source is in use reads the length only through this. */
static inline uint64_t bsrc_length(const struct bsrc *s)
{
	return __atomic_load_n(&s->length, __ATOMIC_ACQUIRE);
}

/* Sets s's length (see bsrc_length) once the bytes below it are written. */
static inline void bsrc_set_length(struct bsrc *s, uint64_t length)
{
	__atomic_store_n(&s->length, length, __ATOMIC_RELEASE);
}

/*
 * open(2) path with flags for I/O, refusing (without blocking) what is not
 * a regular file or a block device: a FIFO, socket or character device
 * would hang the open or never end. Returns the fd or -errno.
 */
int bsrc_open_image_fd(const char *path, int flags);
/*
 * Open path as a whole-file source. writable opens O_RDWR and takes an
 * exclusive OFD lock; otherwise O_RDONLY with a shared OFD lock unless
 * nolock. A conflicting lock fails with -EBUSY and a message saying the
 * image is in use.
 */
int bsrc_open_file(const char *path, bool writable, bool nolock,
		   struct bsrc **out);
/* A read-only region of fd (duplicated). name is for messages. */
int bsrc_open_region(int fd, uint64_t offset, uint64_t length,
		     const char *name, struct bsrc **out);
/* A read-only source over caller-owned memory (not copied). */
int bsrc_open_mem(const void *buf, size_t len, const char *name,
		  struct bsrc **out);
void bsrc_close(struct bsrc *s);

/* Ceph RBD (bsrc_rbd.c, built with the rbd option): whether path is an
   rbd:POOL/IMAGE[@SNAP][:conf=PATH][:id=NAME] name, and a source over
   that image; writable takes RBD's exclusive lock (-EBUSY if held). */
static inline bool bsrc_is_rbd_name(const char *path)
{
	return path && path[0] == 'r' && path[1] == 'b' && path[2] == 'd' &&
	       path[3] == ':';
}
int bsrc_open_rbd(const char *path, bool writable, struct bsrc **out);

/* Downgrade a writable file source's lock to shared; no writes after. */
int bsrc_make_read_only(struct bsrc *s);
/* Undoes bsrc_make_read_only; -EBUSY while another opener shares it. */
int bsrc_make_writable(struct bsrc *s);

/* Full read: -EIO with a message naming the source and offset when the
   source ends before off + len. */
int bsrc_read_full(struct bsrc *s, void *buf, size_t len, uint64_t off);

/* ---- Format drivers ------------------------------------------------------ */

enum bdev_map_kind {
	BDEV_MAP_DATA,       /* stored as is at src/src_off */
	BDEV_MAP_ZERO,       /* reads as zeros in this layer */
	BDEV_MAP_UNALLOC,    /* not in this layer: ask b->backing */
	BDEV_MAP_COMPRESSED, /* inside a compressed grain record */
	BDEV_MAP_NOACCESS,   /* NOACCESS extent: reads fail with EIO */
};

/* What a driver says about the first run of a range (see format->map). */
struct bdev_map {
	enum bdev_map_kind kind;
	uint64_t len;      /* bytes from the asked offset this run covers, > 0 */
	struct bsrc *src;  /* DATA, COMPRESSED */
	uint64_t src_off;  /* DATA: where the asked offset lives in src;
			      COMPRESSED: where the grain record starts */
	uint32_t src_len;  /* COMPRESSED: bytes to read at src_off, enough for
			      the whole record (clamped to the source) */
	uint64_t grain_off;  /* COMPRESSED: virtual offset of the grain start */
	uint32_t grain_size; /* COMPRESSED: bytes of the inflated grain */
	bool read_only;      /* RDONLY extent (or read-only image) */
	bool hole;           /* ZERO: a hole of src at src_off; a write may
				fill it in place like DATA */
	unsigned extent;     /* extent index, for messages */
};

struct bdev_format {
	const char *name;
	/* Confidence 0..100 that head (the first bytes of the file, up to
	   4 KiB) is this format. */
	int (*probe)(const uint8_t *head, size_t len);
	/*
	 * Fill b->info and b->priv from src (owned by the driver from now on,
	 * also on failure). path is the file the user named (NULL for a region
	 * or memory source); drivers that reference other files resolve them
	 * against its folder. A driver that opens parents sets b->backing.
	 */
	int (*open)(struct bdev *b, struct bsrc *src, const char *path);
	void (*close)(struct bdev *b);
	/*
	 * Describe the first run of [off, off + len) of this layer, where
	 * off + len <= b->info.size. Called from many threads at once; must not
	 * hold a lock across I/O. May read metadata synchronously (cached),
	 * except while bdev_map_nowait() is true: then it maps what precedes
	 * metadata not in memory, or fails with -EWOULDBLOCK (no message)
	 * when that is the first byte.
	 */
	int (*map)(struct bdev *b, uint64_t off, uint64_t len,
		   struct bdev_map *m);
	/* Inflate a COMPRESSED record (in, inlen bytes read at m->src_off) into
	   out (m->grain_size bytes). */
	int (*decode)(struct bdev *b, const struct bdev_map *m,
		      const uint8_t *in, size_t inlen, uint8_t *out);
	int (*get_extent)(const struct bdev *b, unsigned index,
			  struct bdev_extent_info *out);
	/* The index-th ddb.* entry of the descriptor (see bdev_get_ddb);
	   -ENOENT past the last. NULL: the format has no disk database. */
	int (*get_ddb)(const struct bdev *b, unsigned index, const char **key,
		       const char **value);
	/* Make all completed writes durable (data before metadata). */
	int (*flush)(struct bdev *b);

	/* ---- Write path; NULL where the format cannot do it. ---- */
	/*
	 * Write a run that map() says cannot be written in place (UNALLOC,
	 * ZERO or COMPRESSED in a writable layer): [off, off + len) from iov
	 * (already sliced to the run). Allocates as the format needs (a fresh
	 * grain filled from the backing layer around the written bytes, an
	 * appended compressed grain...) and publishes the new mapping only
	 * once the data is written. Returns bytes handled (> 0, <= len) or
	 * -errno. Runs synchronously in the submitting thread; must not hold
	 * an image-wide lock across I/O. NULL: -ENOTSUP.
	 */
	ssize_t (*write_alloc)(struct bdev *b, uint64_t off, uint64_t len,
			       const struct iovec *iov, int iovcnt);
	/*
	 * Make whole grains of [off, off + len) read as zeros without writing
	 * data (zeroed-grain entries; discard may also drop the grain).
	 * Returns bytes handled from off (0 = let the core write zeros).
	 */
	ssize_t (*zero)(struct bdev *b, uint64_t off, uint64_t len,
			bool discard);
	/* Once, before the first write after open: set uncleanShutdown,
	   give the image a new CID; durable before it returns. */
	int (*begin_write)(struct bdev *b);
	/* On close of a writable image, after the last flush: finish
	   metadata (stream footer...), clear uncleanShutdown. */
	int (*finish)(struct bdev *b);

	/* ---- Layers of a live chain; NULL where the format has none. ---- */
	/* After a snapshot's switch, once no write to b is in flight: flush,
	   finish and make b's files shareable read-only. Its presence (with a
	   CID to name the parent by) is what lets bdev_snapshot freeze b. */
	int (*freeze)(struct bdev *b);
	/* Undo freeze for a commit into b: -EBUSY while another opener shares
	   its files; keeps the CID. */
	int (*thaw)(struct bdev *b);
	/* Grow the open image to new_size bytes (> info.size, a multiple of
	   512) and set info.size; called with top_lock held exclusively (no
	   request maps, allocates or flushes meanwhile). Durable and
	   crash-safe when it returns. NULL: the format cannot grow open. */
	int (*grow)(struct bdev *b, uint64_t new_size);

	/* ---- Whole-image calls (bdev_resize, bdev_check); NULL: -ENOTSUP. -- */
	/*
	 * bdev_resize of b, opened read-write with exclusive locks and without
	 * its parents; new_size is a positive multiple of 512 (the core
	 * checked). Smaller than info.size only with BDEV_RESIZE_SHRINK in
	 * flags; the driver refuses otherwise. b is closed by the core.
	 */
	int (*resize)(struct bdev *b, uint64_t new_size, unsigned flags);
	/*
	 * bdev_check of the image at path, whose first bytes probed as this
	 * format. The driver opens what it needs itself (it may check files
	 * the engine refuses to open, to say why); r is zeroed.
	 */
	int (*check)(const char *path, unsigned repair,
		     struct bdev_check_result *r,
		     void (*report)(void *opaque, const char *line),
		     void *opaque);
};

/*
 * b->fmt->map, checked once for every caller: a driver that maps 0 bytes
 * or more than len fails with -EIO and a message naming b and off.
 */
int bdev_layer_map(struct bdev *b, uint64_t off, uint64_t len,
		   struct bdev_map *m);
/* Like bdev_layer_map, but -EWOULDBLOCK (no message) instead of reading
   metadata from the disk: for a queue's thread. */
int bdev_layer_map_nowait(struct bdev *b, uint64_t off, uint64_t len,
			  struct bdev_map *m);
/* True inside bdev_layer_map_nowait: a driver's map must not read. */
bool bdev_map_nowait(void);
/* Between these (nested), requests of this thread run their blocking
   steps here instead of in the offload pool: the blocking helpers. */
void bdev_blocking_enter(void);
void bdev_blocking_leave(void);
/* Whether this thread hands blocking steps to the offload pool: not on a
   pool worker, not inside a blocking helper. */
bool bdev_can_offload(void);

extern const struct bdev_format bdev_format_raw;
/* The source of a layer opened with bdev_format_raw. */
struct bsrc *raw_source(const struct bdev *b);
extern const struct bdev_format bdev_format_vmdk;

/* ---- The image handle ---------------------------------------------------- */

struct grain_cache;
struct ctk;

/*
 * The writes in flight to one layer while it is, or was, the top of a
 * handle. Each write request holds one count from submission until its
 * callback is queued. bdev_snapshot seals the tracker of the layer it
 * freezes and gives the handle a fresh one: writes queued after the switch
 * count there, and the frozen layer is finalized (flushed, made read-only)
 * once its own count reaches zero, whichever thread completes the last
 * write (snapshot.c). No thread waits for another thread's requests.
 */
struct bdev_wtrack {
	atomic_uint inflight;
	atomic_bool sealed;          /* the layer is frozen: no new writes */
	struct bdev *top;            /* the handle the writes were queued on */
	struct bdev *layer;          /* the layer they write (top until a
					snapshot moves it; changed only under
					top->top_lock exclusive) */
	pthread_mutex_t mu;          /* with cv: the last write's signal */
	pthread_cond_t cv;
	pthread_mutex_t freeze_mu;   /* finalizing vs flushing the layer */
	bool finalizer_started;
	pthread_t finalizer;         /* waits for inflight 0, then freezes */
	atomic_bool finalized;
	int final_ret;               /* how finalizing went */
	char *final_msg;             /* its message */
	struct bdev_wtrack *next;    /* older (sealed) trackers of the handle */
};

struct bdev {
	const struct bdev_format *fmt;
	void *priv;                 /* the driver's */
	char *filename;             /* as given; info.filename points here */
	struct bdev_info info;      /* filled by fmt->open; strings owned by
				       the driver (or b) */
	struct bdev_open_opts opts; /* defaults filled in by the core */
	struct bdev *backing;       /* parent layer, closed by the core */
	struct grain_cache *gcache; /* created by the core when info.compressed */
	/* Write path (core): writers and readers hold top_lock shared while
	   they map and queue; bdev_snapshot holds it exclusive only to swap
	   the top layer (no I/O, no waiting on requests). wtrack counts the
	   writes in flight to the top layer; its next the frozen layers'. */
	pthread_rwlock_t top_lock;
	pthread_mutex_t begin_lock;
	/* Covers the fields of info that change while the handle is in use
	   and top_lock is not held exclusively (unclean and cid, set by the
	   first write on an offload thread; read_only and unclean, by a
	   freeze or a thaw): they are stored, and bdev_get_info copies info,
	   under it. Held for no more than that. */
	pthread_mutex_t info_lock;
	atomic_bool write_begun;    /* fmt->begin_write has run */
	struct bdev_wtrack *wtrack; /* NULL in a layer a snapshot froze */
	atomic_int chain_op;        /* enum chain_op: the bdev_snapshot,
				       bdev_commit_live or bdev_grow running
				       on the handle, which the others wait
				       out with -EBUSY (snapshot.c) */
	struct live_commit *_Atomic commit; /* a bdev_commit_live running
				       on the handle (snapshot.c), or NULL */
	struct bdev *retired;       /* layers a live commit took out of the
				       chain: reads may still be in flight on
				       them, so bdev_close closes them */
	struct ctk *ctk;            /* change tracking of the handle (ctk.c),
				       or NULL: follows the handle, not the
				       layer */
	/* The handle's blocking write steps and flushes, run in order in
	   the offload pool (write.c); lane_writes counts the writes queued
	   there: while any is, later writes queue behind them. */
	struct opool_lane lane;
	atomic_uint lane_writes;
	struct {
		atomic_uint_fast64_t gt_hits, gt_misses;
		atomic_uint_fast64_t grain_hits, grain_misses;
		atomic_uint_fast64_t inflated, readahead;
	} stats;
};

/*
 * Open path (or src when path is NULL) as a layer of a chain, with the
 * caller's options; used by bdev_open and by drivers that open parents.
 */
/*
 * Copy a caller's options struct into dst (known bytes: this library's
 * sizeof). struct_size is what the caller says its struct holds; 0 means
 * the first release's layout, base bytes (everything before struct_size).
 * A larger struct is accepted while the bytes this library does not know
 * are all zero (-E2BIG otherwise). src may be NULL: all defaults.
 */
int bdev_copy_opts(void *dst, size_t known, size_t base, const void *src,
		   uint32_t struct_size, const char *what);

int bdev_open_layer(const char *path, struct bsrc *src,
		    const struct bdev_open_opts *opts, struct bdev **out);

/* Operations on a handle's chain that exclude each other. */
enum chain_op {
	CHAIN_NONE,
	CHAIN_SNAPSHOT,
	CHAIN_COMMIT,
	CHAIN_GROW,
};
/* Claims b for op (what, e.g. "snapshot", names it in messages): -EBUSY
   with a message naming the operation that runs when another one does.
   chain_op_end gives it back. Never blocks but for the top lock's
   shared hold while the message reads the top's name. */
int chain_op_begin(struct bdev *b, enum chain_op op, const char *what);
void chain_op_end(struct bdev *b);

/* A new tracker of writes to b's top layer (snapshot.c). */
struct bdev_wtrack *wtrack_new(struct bdev *top);
/* One write of t ended: the last one of a sealed tracker wakes its
   finalizer. */
void wtrack_done(struct bdev_wtrack *t);
/* Waits for the finalizers of b's frozen layers, frees the trackers. */
int wtrack_close_all(struct bdev *b);
/* A write of [off, off + len) to top completed into its top layer: a
   live commit running on top copies that range again (snapshot.c). Takes
   top_lock shared; only called while top->commit is set. */
void commit_note(struct bdev *top, struct bdev_wtrack *wt, uint64_t off,
		 uint64_t len);
/* Flushes the frozen layers of b not finalized yet (their last writes may
   have completed after the switch). */
int wtrack_flush_frozen(struct bdev *b);

/* ---- Change tracking (ctk.c) ----
 * Loads IMAGE-ctk.ovk next to b's top layer when it exists (nothing for
 * a disk whose source tracks changes itself: bsrc_ops.track). */
int ctk_open(struct bdev *b);
/* Syncs the maps, marks the file clean (writable) and frees it. */
int ctk_close(struct bdev *b);
/* [off, off + len) of b is about to change: sets its bits in the active
   map (a shared mapping of the file: safe from a process crash) first.
   Returns the map generation (> 0) for ctk_note_done, 0 when nothing is
   tracked, or -errno. */
int64_t ctk_note_write(struct bdev *b, uint64_t off, uint64_t len);
/* The callback of a write noted at generation gen is about to run: when
   a checkpoint was created meanwhile, its range counts as changed since
   that one too. */
int ctk_note_done(struct bdev *b, uint64_t gen, uint64_t off, uint64_t len);
/* The top layer is now image_path (a snapshot): move the file next to it. */
int ctk_follow(struct bdev *b, const char *image_path);

/* The source that keeps b's checkpoints itself (a raw disk on a source
   with track ops), or NULL. */
struct bsrc *ctk_track_source(const struct bdev *b);

/* A commit merged child_path into parent_path: the child's change map,
   if any, becomes the parent's (the parent now holds the disk). */
void ctk_commit_follow(const char *child_path, const char *parent_path);

/* Runs fmt->begin_write once per writing session (write.c). */
int bdev_begin_write_once(struct bdev *b);
/* VMDK: flush and finish a layer a snapshot froze, then make its files
   read-only with shared locks (vmdk/write_sparse.c). */
int vmdk_freeze_layer(struct bdev *b);
/* Undoes vmdk_freeze_layer for a live commit into b: exclusive locks back
   (-EBUSY while a view shares them), writes allowed, uncleanShutdown on;
   the CID stays (what the chain shows does not change). */
int vmdk_thaw_layer(struct bdev *b);

/* Defaults for opts fields left 0. */
#define BDEV_DEFAULT_GT_CACHE (4u << 20)
#define BDEV_DEFAULT_GRAIN_CACHE (8u << 20)
#define BDEV_DEFAULT_READAHEAD 8u
/* The longest request bdev_get_limits promises (not a hard cap). */
#define BDEV_MAX_REQUEST (1ull << 30)

#endif /* OVK_BLOCKENGINE_INTERNAL_H */
