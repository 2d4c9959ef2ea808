/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blockengine.h - the ovk block engine: open a disk image, ask what it holds,
 * and do I/O on it.
 *
 * The only public header of libblockengine. Every front end (vmdkfs, ovffs,
 * pvblk, the hypervisor, mgmt, the vmdk tool) uses the engine through this
 * file and nothing else.
 *
 * Conventions
 *  - Functions return 0 (or a non-negative count) on success and -errno on
 *    failure; they never set errno. When a call fails, bdev_errmsg() on the
 *    same thread returns a sentence naming the file, the field or offset and
 *    what was expected.
 *  - Offsets and lengths are in bytes. I/O need not be sector aligned.
 *  - A struct bdev is thread-safe: any number of threads may do I/O on one
 *    open image at once. A struct bdev_queue belongs to one thread.
 */
#ifndef OVK_BLOCKENGINE_H
#define OVK_BLOCKENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct bdev;       /* an open image: the top of a chain of layers */
struct bdev_queue; /* one thread's io_uring and its completions */

/* ---- Opening ------------------------------------------------------------ */

enum bdev_open_flag {
	BDEV_O_RDWR = 1u << 0,         /* open for writing; takes write locks */
	BDEV_O_SHARE = 1u << 1,        /* read-only without locks (qemu-img -U) */
	BDEV_O_ALLOW_ESCAPE = 1u << 2, /* extent/parent names may leave the
					  descriptor's folder */
	BDEV_O_FORCE_CID = 1u << 3,    /* open a delta whose parentCID does not
					  match its parent's CID */
	BDEV_O_NO_BACKING = 1u << 4,   /* top layer only; unallocated reads zero */
	BDEV_O_STREAM_READAHEAD = 1u << 5, /* one sequential reader whose
					  requests arrive on many queues (a
					  FUSE mount): compressed grains are
					  read ahead image-wide, on the inflate
					  pool, into the inflated-grain cache */
};

struct bdev_open_opts {
	uint32_t flags;             /* enum bdev_open_flag */
	const char *format;         /* NULL probes; "raw" or "vmdk" forces */
	uint64_t gt_cache_bytes;    /* grain-table cache bound; 0 = default */
	uint64_t grain_cache_bytes; /* inflated-grain cache bound; 0 = default */
	uint32_t readahead_grains;  /* grains inflated ahead of a sequential
				       reader of a compressed image; 0 = default,
				       UINT32_MAX = off */
	uint32_t inflate_threads;   /* threads that inflate compressed grains
				       while a queue keeps submitting I/O, when
				       it has several grains to inflate (one
				       pool shared by all images, grown to the
				       largest number asked for, at most 64);
				       0 = one per online CPU (none on a single
				       CPU), UINT32_MAX = none: each queue
				       inflates on its own thread. The same
				       pool (at least one thread) runs the
				       steps that would block a queue's thread
				       on the disk (see "Which calls may
				       block") */
	uint32_t struct_size;       /* sizeof(struct bdev_open_opts) as the
				       caller's header had it, or 0 for the
				       fields above; later fields are read only
				       when struct_size covers them (see
				       docs/ABI.md) */
};

/* Open the image at path. opts may be NULL (read-only, probed format). */
int bdev_open(const char *path, const struct bdev_open_opts *opts,
	      struct bdev **out);

/*
 * Open an image whose bytes are [offset, offset + length) of fd, e.g. a disk
 * stored as a member of an OVA tar. name is used in messages and to resolve
 * nothing: such an image may not reference other files. fd is duplicated.
 */
int bdev_open_region(int fd, uint64_t offset, uint64_t length,
		     const char *name, const struct bdev_open_opts *opts,
		     struct bdev **out);

/*
 * Bytes supplied by the caller, e.g. a gzip'd or chunked disk file inside an
 * OVF package. pread reads up to len bytes at off and returns the count
 * (short only at the end) or -errno; it is called from any thread doing I/O
 * on the image, possibly from several at once, so it must be thread-safe.
 * close (may be NULL) runs once when the image is closed.
 */
struct bdev_byte_source {
	ssize_t (*pread)(void *opaque, void *buf, size_t len, uint64_t off);
	void (*close)(void *opaque);
};

/*
 * Open a read-only image whose length bytes are read through ops (copied)
 * with opaque. name is used in messages; such an image may not reference
 * other files. From this call on opaque belongs to the engine: ops->close
 * runs when the image is closed, or before this call returns an error.
 * The engine reads such a source synchronously in the reading thread.
 */
int bdev_open_callbacks(const struct bdev_byte_source *ops, void *opaque,
			uint64_t length, const char *name,
			const struct bdev_open_opts *opts, struct bdev **out);

/* Flush (when writable), mark the image cleanly closed, release locks. */
int bdev_close(struct bdev *b);

/* The message for the last failing call on this thread ("" if none). */
const char *bdev_errmsg(void);

/* ---- What the image is -------------------------------------------------- */

enum bdev_access { BDEV_ACCESS_RW, BDEV_ACCESS_RDONLY, BDEV_ACCESS_NOACCESS };

struct bdev_info {
	const char *filename;  /* path given to bdev_open */
	const char *format;    /* "raw" or "vmdk" */
	const char *subformat; /* VMDK createType, or NULL */
	uint64_t size;         /* virtual size in bytes */
	uint32_t sector_size;  /* 512 */
	uint64_t cluster_size; /* grain size of the first sparse extent, else 0 */
	bool read_only;
	bool has_cid;
	uint32_t cid;
	uint32_t parent_cid; /* 0xffffffff when the image has no parent */
	bool unclean;        /* some sparse extent has uncleanShutdown set */
	bool compressed;     /* some extent holds compressed grains */
	unsigned extent_count;
	const char *parent_hint; /* parentFileNameHint, or NULL */
};

int bdev_get_info(const struct bdev *b, struct bdev_info *info);

struct bdev_extent_info {
	enum bdev_access access;
	const char *type;     /* "FLAT", "SPARSE", "ZERO", "VMFS", ... */
	const char *filename; /* resolved path, NULL for ZERO */
	uint64_t offset;      /* first virtual byte this extent holds */
	uint64_t size;        /* bytes of virtual disk it holds */
	uint64_t file_offset; /* FLAT/VMFS: where its data starts in the file */
	uint64_t grain_size;  /* sparse kinds: bytes per grain, else 0 */
	uint32_t version;     /* sparse header version, else 0 */
	bool compressed;
	bool unclean;
};

int bdev_get_extent(const struct bdev *b, unsigned index,
		    struct bdev_extent_info *out);

/*
 * The index-th entry of a VMDK descriptor's disk database, in descriptor
 * order (adapterType, geometry.cylinders, virtualHWVersion, uuid, ...):
 * *key without its "ddb." prefix, *value as written, unquoted. Both stay
 * valid while b is open. -ENOENT past the last entry, and for a layer
 * without a disk database (raw).
 */
int bdev_get_ddb(const struct bdev *b, unsigned index, const char **key,
		 const char **value);

/* The next layer down a delta chain (the parent disk), or NULL. */
struct bdev *bdev_backing(const struct bdev *b);

enum bdev_status {
	BDEV_STATUS_UNALLOCATED = 0, /* not in this layer: the parent's bytes,
					or zeros at the bottom */
	BDEV_STATUS_DATA = 1,        /* stored in this layer */
	BDEV_STATUS_ZERO = 2,        /* reads as zeros in this layer (zeroed
					grain, ZERO extent) */
};

/*
 * How [offset, offset + length) of this layer is stored. Returns an enum
 * bdev_status for the first run of the range and sets *pnum to its length
 * (at least 1 byte, at most length).
 */
int bdev_block_status(struct bdev *b, uint64_t offset, uint64_t length,
		      uint64_t *pnum);

/* ---- What a caller may ask of the image ---------------------------------
 *
 * A consumer (an NBD or vhost-user-blk server) asks once, after open, what
 * it may do instead of finding out by failure. The struct grows at its
 * end: the caller sets struct_size = sizeof(struct bdev_limits) and the
 * engine fills what it knows up to that size (and sets struct_size to the
 * bytes it filled), so a caller built against an older header keeps
 * working.
 */
struct bdev_limits {
	uint32_t struct_size;       /* in: sizeof; out: bytes filled */
	uint32_t align;             /* offsets and lengths must be multiples:
				       1 (the engine takes any byte range) */
	uint32_t preferred_size;    /* a write smaller than this, or not aligned
				       to it, costs a read-modify-write of this
				       much (a sparse VMDK's grain, filled from
				       the parent) or more: the file system
				       block for raw */
	uint32_t optimal_size;      /* requests of this size and alignment move
				       data best (1 MiB, at least a grain) */
	uint64_t max_request;       /* the longest request the engine takes in
				       one call (its iovecs at most IOV_MAX) */
	uint32_t discard_granularity; /* what a discard acts on: whole units of
				       this, aligned to it (a sparse VMDK's
				       grain: its table entry is dropped or
				       zeroed, host storage is not reclaimed
				       while open; a raw file: its block, a
				       hole is punched); 0: cannot discard */
	uint32_t zero_granularity;  /* write-zeroes without writing data needs
				       whole units of this (FAST_ZERO fails
				       on less) */
	bool can_write;             /* open read-write */
	bool can_flush;             /* bdev_aio_flush makes writes durable */
	bool can_fua;               /* BDEV_REQ_FUA is honoured */
	bool can_discard;           /* bdev_aio_discard frees what it can */
	bool can_write_zeroes;      /* bdev_aio_write_zeroes works (NO_HOLE
				       too) */
	bool can_fast_zero;         /* BDEV_REQ_FAST_ZERO is honoured: zeroing
				       that would write zeros fails -ENOTSUP */
	bool can_snapshot;          /* bdev_snapshot works on this image */
	bool can_track_changes;     /* bdev_checkpoint_* work on this image */
};

/* Fills *out (see struct bdev_limits). Never blocks. */
int bdev_get_limits(struct bdev *b, struct bdev_limits *out);

/*
 * How the first run of [offset, offset + length) of the whole chain reads
 * (what NBD's qemu:allocation-depth answers): returns BDEV_STATUS_DATA or
 * _ZERO with *depth the layer that holds the run (1 = b's top layer, 2 =
 * its parent, ...), or BDEV_STATUS_UNALLOCATED with *depth 0 when no
 * layer holds it (it reads as zeros). *pnum is the run's length, within
 * which both answers hold. Safe against a concurrent bdev_snapshot.
 */
int bdev_block_status_depth(struct bdev *b, uint64_t offset, uint64_t length,
			    uint64_t *pnum, unsigned *depth);

/* ---- Where the bytes live on the host ------------------------------------ */

enum bdev_host_kind {
	BDEV_HOST_OTHER = 0, /* not stored as is in a file (a compressed
				grain, memory or callback bytes, a NOACCESS
				extent): read it with the I/O calls */
	BDEV_HOST_FILE = 1,  /* stored as is: run->fd at run->file_offset */
	BDEV_HOST_ZERO = 2,  /* reads as zeros (a zeroed grain, a ZERO extent,
				a hole of a sparse file, unallocated down to
				the bottom of the chain) */
};

struct bdev_host_run {
	uint64_t length;      /* bytes from the asked offset with this answer,
				 1 to the asked length */
	int fd;               /* FILE: a descriptor to read them from; else -1 */
	uint64_t file_offset; /* FILE: where the asked offset lives in fd */
};

/*
 * Where the first run of [offset, offset + length) of the image lives on
 * the host, looked up through the whole chain (unallocated ranges in the
 * parents), so that a caller can move uncompressed data between files with
 * copy_file_range(2) or splice(2) instead of through memory. Returns an
 * enum bdev_host_kind and fills *run, or -errno.
 *
 * What the caller may assume for a FILE answer:
 *  - fd belongs to the image: only read it at explicit offsets (pread,
 *    copy_file_range, splice with an offset, a read-only mapping); never
 *    close it, seek it or write to it. It stays open until bdev_close(b),
 *    also after bdev_snapshot(b) moved new writes to a child.
 *  - Until a write, discard or write-zeroes of an overlapping range is
 *    queued on b, the run->length bytes at run->file_offset of fd are the
 *    image's bytes. After one, they may be the old bytes, as for a read
 *    that raced it, but never another range's: storage the engine gave a
 *    grain is not reused while the image is open. A caller that must see
 *    every write asks again after its writes complete.
 *  - fd may end early (a flat extent file shorter than its extent): read
 *    what is missing with bdev_pread, which says what is wrong.
 * Any number of threads may call this at once, also while others write.
 */
int bdev_map_host(struct bdev *b, uint64_t offset, uint64_t length,
		  struct bdev_host_run *run);

/* ---- I/O ----------------------------------------------------------------
 *
 * Asynchronous calls queue a request on q and return at once (0 or -errno).
 * The request's cb runs later inside bdev_queue_run() on the queue's thread,
 * never inside the call that queued it, with ret 0 or -errno. Data moves
 * straight between the image files and the caller's iovecs where the format
 * stores it uncompressed. The iovecs must stay valid until cb runs.
 */
typedef void (*bdev_cb)(void *opaque, int ret);

/* depth: submission ring entries (rounded up to a power of two). */
int bdev_queue_new(unsigned depth, struct bdev_queue **out);
/* Waits for the queue's requests to finish, then frees it. */
void bdev_queue_free(struct bdev_queue *q);
/* An eventfd that becomes readable when bdev_queue_run() has work. */
int bdev_queue_fd(struct bdev_queue *q);
/* Requests queued and not yet completed. */
unsigned bdev_queue_inflight(const struct bdev_queue *q);
/*
 * Submit what is queued, wait until at least min_complete requests have
 * completed (0 = do not wait), run their callbacks. Returns the number of
 * callbacks run, or -errno.
 */
int bdev_queue_run(struct bdev_queue *q, unsigned min_complete);
/*
 * Between bdev_queue_hold and bdev_queue_release (on q's thread), queuing
 * requests and requests that finish without I/O do not signal q's
 * eventfd: for a caller that queues a batch and then runs the queue
 * itself, where the signal would only cost a write and a read of the
 * eventfd per batch. Release signals once if work is left for a run.
 * Completions of I/O signal as always.
 */
void bdev_queue_hold(struct bdev_queue *q);
void bdev_queue_release(struct bdev_queue *q);

int bdev_aio_readv(struct bdev_queue *q, struct bdev *b, uint64_t offset,
		   const struct iovec *iov, int iovcnt, bdev_cb cb,
		   void *opaque);
int bdev_aio_writev(struct bdev_queue *q, struct bdev *b, uint64_t offset,
		    const struct iovec *iov, int iovcnt, bdev_cb cb,
		    void *opaque);
int bdev_aio_flush(struct bdev_queue *q, struct bdev *b, bdev_cb cb,
		   void *opaque);
int bdev_aio_discard(struct bdev_queue *q, struct bdev *b, uint64_t offset,
		     uint64_t length, bdev_cb cb, void *opaque);
int bdev_aio_write_zeroes(struct bdev_queue *q, struct bdev *b,
			  uint64_t offset, uint64_t length, bdev_cb cb,
			  void *opaque);

/*
 * Per-request flags for the _flags variants below; a flag an operation
 * does not take fails with -EINVAL before anything is queued.
 */
enum bdev_req_flag {
	BDEV_REQ_FUA = 1u << 0,       /* write, discard, write-zeroes: durable
					 when cb runs (the engine flushes the
					 layer written after the data, in
					 order). On a raw file an io_uring
					 fdatasync; on VMDK the driver's flush,
					 in the engine's offload thread */
	BDEV_REQ_NO_HOLE = 1u << 1,   /* write-zeroes: leave the range
					 allocated (reads as zeros, later writes
					 need no allocation) */
	BDEV_REQ_FAST_ZERO = 1u << 2, /* write-zeroes: fail with -ENOTSUP
					 instead of writing zero bytes; on that
					 failure part of the range may already
					 read as zeros */
};

int bdev_aio_writev_flags(struct bdev_queue *q, struct bdev *b,
			  uint64_t offset, const struct iovec *iov, int iovcnt,
			  unsigned flags, bdev_cb cb, void *opaque);
int bdev_aio_discard_flags(struct bdev_queue *q, struct bdev *b,
			   uint64_t offset, uint64_t length, unsigned flags,
			   bdev_cb cb, void *opaque);
int bdev_aio_write_zeroes_flags(struct bdev_queue *q, struct bdev *b,
				uint64_t offset, uint64_t length,
				unsigned flags, bdev_cb cb, void *opaque);

/*
 * Which calls may block the calling thread:
 *  - never on disk I/O of the image's metadata: every bdev_aio_* call and
 *    bdev_queue_run(q, 0), bdev_get_limits, bdev_changed_status. A VMDK's
 *    grain table that is not in memory (on a read or a write), a write
 *    that allocates a grain (its data, a new table, the parent's bytes
 *    around it), discard and write-zeroes that change tables, the driver's
 *    flush (bdev_aio_flush, BDEV_REQ_FUA) and the first write after open
 *    or after a snapshot (begin_write: uncleanShutdown, a new CID) run in
 *    an engine-owned offload thread; its completion is posted to the
 *    queue's ring and the callback runs in bdev_queue_run on the queue's
 *    thread. Such steps of one disk run one at a time, in the order they
 *    were queued, and a write queued while an earlier write of the disk
 *    waits there queues behind it, so writes never overtake each other
 *    and a flush covers every write completed before it was queued;
 *  - inside the kernel, as any syscall may: the data of reads and writes
 *    to stored runs goes through io_uring, except that a write of at most
 *    1 MiB while nothing else of the queue is in flight is a buffered
 *    pwritev on the calling thread (which the kernel may throttle when
 *    much is dirty), and a read of at most 1 MiB is first tried with
 *    preadv2(RWF_NOWAIT); with change tracking on, marking the change map
 *    (a shared mapping of its file) may fault a page of it in;
 *  - briefly, on a lock held only across a short critical section (a
 *    snapshot's switch of the top layer, a grain-table cache lookup, the
 *    offload pool's job list): every bdev_aio_* call, and bdev_get_info
 *    and bdev_get_extent (which read what a snapshot or a grow rewrites
 *    under the top lock);
 *  - on purpose or by construction: the blocking helpers below,
 *    bdev_queue_run(q, n > 0), bdev_open/close, bdev_snapshot (creates and
 *    opens the child; it never waits for other threads' requests),
 *    bdev_checkpoint_create/delete; byte sources without a file (the
 *    callbacks of bdev_open_callbacks, memory) are read and written on the
 *    calling thread; and where the offload thread cannot run (a kernel
 *    without IORING_OP_MSG_RING, no thread could start) the steps above run
 *    on the calling thread as the synchronous steps they are.
 */

/* Blocking helpers: one request on this thread's own queue, waited for. */
int bdev_preadv(struct bdev *b, uint64_t offset, const struct iovec *iov,
		int iovcnt);
int bdev_pread(struct bdev *b, void *buf, size_t len, uint64_t offset);
int bdev_pwritev(struct bdev *b, uint64_t offset, const struct iovec *iov,
		 int iovcnt);
int bdev_pwrite(struct bdev *b, const void *buf, size_t len, uint64_t offset);
int bdev_flush(struct bdev *b);
int bdev_discard(struct bdev *b, uint64_t offset, uint64_t length);
int bdev_write_zeroes(struct bdev *b, uint64_t offset, uint64_t length);

/* ---- Creating images, snapshots, commit -------------------------------- */

struct bdev_create_opts {
	const char *format;       /* "vmdk" (default) or "raw" */
	const char *subformat;    /* VMDK createType: monolithicSparse (default),
				     monolithicFlat, twoGbMaxExtentSparse,
				     twoGbMaxExtentFlat, streamOptimized, vmfs,
				     vmfsSparse */
	uint64_t size;            /* virtual bytes; 0 with backing = parent's */
	const char *backing;      /* parent image of a delta disk, or NULL */
	const char *adapter_type; /* lsilogic (default), ide, buslogic,
				     legacyESX, pvscsi */
	unsigned hwversion;       /* ddb.virtualHWVersion; 0 = 4 */
	bool zeroed_grain;        /* sparse: zeroed-grain entries (header v2+) */
	uint64_t grain_size;      /* sparse grain bytes; 0 = 64 KiB */
	uint32_t struct_size;     /* sizeof(struct bdev_create_opts) as the
				     caller's header had it, or 0 for the
				     fields above (see docs/ABI.md) */
};

/* Create a new, empty image at path (refuses to overwrite a file). */
int bdev_create(const char *path, const struct bdev_create_opts *o);

/*
 * Fill a new image front to back (what `vmdk convert` uses): bdev_writer_new
 * creates path as bdev_create does and returns a writer for its contents.
 * bdev_writer_write stores [off, off + len): off a multiple of
 * bdev_writer_grain(), len a multiple of it or reaching the end of the disk.
 * It may be called from several threads at once (compression runs in the
 * calling thread); ranges never written read as zeros (or the parent's
 * bytes), so callers skip all-zero grains. A streamOptimized grain can be
 * written only once. bdev_writer_close writes the tables (and a stream's
 * footer), syncs and frees w; bdev_writer_abort deletes what was created.
 */
struct bdev_writer;
int bdev_writer_new(const char *path, const struct bdev_create_opts *o,
		    struct bdev_writer **out);
uint64_t bdev_writer_grain(const struct bdev_writer *w);
int bdev_writer_write(struct bdev_writer *w, uint64_t off, const void *buf,
		      size_t len);
int bdev_writer_close(struct bdev_writer *w);
void bdev_writer_abort(struct bdev_writer *w);

/*
 * Sees the bytes a writer puts into its file, as they are written: off
 * counts from the image's first byte. Each byte of the image is passed
 * once, final, in increasing off without gaps (a stream's header is final
 * when first written; its tables and footer come last), one call at a
 * time, from the thread in bdev_writer_write or bdev_writer_close. So a
 * digest over the calls is the image's digest once close returns 0. A
 * negative return (-errno) fails the write that made the call.
 */
typedef int (*bdev_write_observer)(void *opaque, uint64_t off,
				   const void *buf, size_t len);

/*
 * Like bdev_writer_new, but the new single-file image (format "vmdk",
 * subformat streamOptimized or monolithicSparse, no backing file) is
 * written into fd from offset on, e.g. straight into an OVA member: only
 * [offset, offset + length) is written, a stream front to back, a sparse
 * image's tables in place at close. fd (writable, not O_APPEND) is
 * duplicated; it is never truncated, synced or closed: the caller owns
 * the file, and bdev_writer_abort leaves what was written. name is used in
 * messages and as the extent's file name in the embedded descriptor.
 * observe (may be NULL) takes a streamOptimized image only.
 */
int bdev_writer_new_fd(int fd, uint64_t offset, const char *name,
		       const struct bdev_create_opts *o,
		       bdev_write_observer observe, void *opaque,
		       struct bdev_writer **out);

/* bdev_writer_close that also sets *length to the bytes the image (its
   first file, for images of several) occupies from its first byte. */
int bdev_writer_finish(struct bdev_writer *w, uint64_t *length);

/* Options of bdev_copy; all zero (or a NULL pointer) for the defaults. */
struct bdev_copy_opts {
	unsigned threads;   /* worker threads, the caller's included; 0 = 2;
			       1 for a source that takes one reader at a time */
	uint64_t chunk;     /* bytes a worker takes at a time; 0 = 4 MiB;
			       rounded up to whole grains of the writer */
	/* Called after each finished chunk with the bytes of the disk done
	   so far and the disk's size, one call at a time, from any worker;
	   a non-zero return (-errno) stops the copy. NULL: none. */
	int (*progress)(void *opaque, uint64_t done, uint64_t total);
	void *opaque;
	uint32_t struct_size; /* sizeof(struct bdev_copy_opts) as the caller's
				 header had it, or 0 (see docs/ABI.md) */
};

/*
 * Copy src's whole disk, read through its chain, into the writer w (its
 * disk may be larger: the rest reads as zeros), skipping what reads as
 * zeros: runs bdev_block_status calls zero or unallocated at the bottom of
 * the chain, and all-zero grains. Workers take chunks in turn and write
 * from their own threads (the writer compresses there). w is not closed;
 * on failure the caller aborts it. *written (may be NULL) gets the bytes
 * handed to the writer. The message of a failure names the offset.
 */
int bdev_copy(struct bdev *src, struct bdev_writer *w,
	      const struct bdev_copy_opts *o, uint64_t *written);

/* True when the len bytes at buf are all zero. */
bool bdev_all_zero(const void *buf, size_t len);

/*
 * Freeze b's current top layer: create child_path as a delta disk on it
 * and send every later write to the child. The switch never waits for
 * requests of any queue: writes completed before the call are in the
 * frozen layer, writes queued after it returns go to the child, and writes
 * in flight during the switch complete into the frozen layer. Other
 * threads' submissions wait at most for the switch itself (a pointer swap
 * under a lock, no I/O). The frozen layer is finalized (flushed, marked
 * clean, its locks made shared so that readers may open it read-only) when
 * its last in-flight write completes, on whichever thread completes it
 * (by a helper thread, so no queue thread does that I/O); with none in
 * flight, before this call returns. Its failure, if any, is reported by
 * bdev_snapshot_wait or bdev_close. bdev_flush(b) also flushes frozen
 * layers not finalized yet. The change map (bdev_checkpoint_*) moves to
 * the child: it follows the disk. One bdev_snapshot of an image at a time:
 * while a bdev_snapshot, bdev_commit_live or bdev_grow of b runs, it fails
 * with -EBUSY and a message saying which ("a live commit of X is
 * running"); call it again once that has returned.
 */
int bdev_snapshot(struct bdev *b, const char *child_path);

/*
 * Waits until every layer that snapshots of b froze is finalized. Call it
 * from a thread that does not own a queue with writes to b in flight (they
 * are what it waits for). Returns the first finalizing failure.
 */
int bdev_snapshot_wait(struct bdev *b);

/*
 * Merge b's top layer (a delta created by bdev_snapshot, whose parent is
 * the layer that snapshot froze) back into its parent while b stays open
 * and every queue keeps submitting reads and writes; then b's top is the
 * parent again, the child file is deleted, and the change map follows the
 * top back. Refused with -EBUSY (error text naming the file) while anyone
 * else holds the parent open (a read-only view must be closed first), and
 * with -EINVAL when the top has no parent. Blocks the calling thread only:
 * call it from a thread that owns no queue with writes to b in flight.
 * Crash-safe: after a crash at any point, opening the top (or the parent
 * if the child is already gone) gives the disk's current contents.
 *
 * The child's data is copied in passes while writes go on (each pass
 * copies again what completed writes changed meanwhile); other threads'
 * submissions wait only for the last, small pass, the parent's flush and
 * the delete, done while the top is switched. The parent's CID is kept
 * until the first write after the commit (the chain shows the same data
 * throughout). A child grown past its parent (bdev_grow) grows the parent
 * first. A parent that this handle did not freeze with bdev_snapshot
 * is refused with -ENOTSUP. While a bdev_snapshot, bdev_grow or another
 * bdev_commit_live of b runs it fails with -EBUSY and a message saying
 * which ("a snapshot of X is being taken"), and they fail likewise while
 * it runs.
 */
int bdev_commit_live(struct bdev *b);

/* Grow b's virtual size to new_size bytes while it is open and other
 * threads keep submitting to it. Shrinking is refused with -EINVAL.
 * Requests see the old size or the new one, never tables half changed;
 * those submitted after the call returns see the new one. Durable and
 * crash-safe when it returns (a crash before leaves the old size, or the
 * new one with leaked sectors at most). What grows:
 *  - raw: a whole regular file (extended);
 *  - VMDK monolithicSparse (and twoGbMaxExtentSparse within its last
 *    extent's 2047 MiB): as far as its grain directory has room for grain
 *    tables (the slots left in the directory's last sector: up to the
 *    next multiple of 4 GiB with 64 KiB grains); past that, or past the
 *    last extent, -ENOSPC with a message giving the largest size
 *    (bdev_resize, closed, moves the directory and adds extents);
 *  - VMDK monolithicFlat and vmfs (and twoGbMaxExtentFlat within its last
 *    extent): the extent file is extended, the descriptor replaced.
 * A delta (a snapshot's child) grows the same way and is then larger
 * than its parent: as in QEMU, past the parent's end it reads as zeros,
 * and bdev_commit_live / bdev_commit grow the parent first.
 * -ENOTSUP with the reason for streamOptimized, COWD and seSparse, a
 * region or device, and while checkpoints exist (the change map is sized
 * for the disk). -EBUSY while a bdev_snapshot or bdev_commit_live of b
 * runs. Blocks other threads' submissions for the
 * few synced writes it makes. */
int bdev_grow(struct bdev *b, uint64_t new_size);

/*
 * Merge the delta disk at child_path into its parent and delete it. A
 * child larger than its parent (grown) grows the parent first (bdev_grow).
 * Crash-safe: an interrupted commit can be run again to completion.
 */
int bdev_commit(const char *child_path);

/* ---- Changed-block tracking ----------------------------------------------
 *
 * Named checkpoints of a disk and what changed since each, for incremental
 * backup and NBD's qemu:dirty-bitmap:NAME context. Tracking starts when
 * the first checkpoint exists; the map lives in a file next to the top
 * layer (IMAGE-ctk.ovk; moved to a snapshot's child: it follows the disk)
 * at a granularity of 64 KiB. It works on raw and every writable VMDK, and
 * survives close and reopen. It may over-report, never under-report: a
 * write's bits are in the file (a shared mapping of it) before the write
 * is queued; after a crash
 * of the machine (the file is found in use from another boot) every
 * checkpoint reports everything changed. Writes made by other programs
 * are not seen. At most 30 checkpoints, names of 1 to 103 bytes.
 *
 * On a Ceph RBD image (rbd:POOL/IMAGE) RBD keeps them instead: checkpoint
 * NAME is the image's snapshot "ovk-ckpt-NAME" and changed status comes
 * from RBD's diff (byte-exact runs; an object created since the
 * checkpoint counts from its start; other clients' writes count too).
 * There, names holding '/', '@' or ':' are refused (-EINVAL), the number
 * is RBD's limit, and bdev_changed_status may ask the cluster.
 */

/* Starts checkpoint name now: changes from here on count since it. Durable
   when it returns. -EEXIST for a name in use, -ENOSPC past 30. Blocks
   (writes to the map file, fdatasync). */
int bdev_checkpoint_create(struct bdev *b, const char *name);
/* Deletes a checkpoint; what changed since it counts for the one before.
   -ENOENT when there is none of that name. Blocks (fdatasync). */
int bdev_checkpoint_delete(struct bdev *b, const char *name);
/* The index-th checkpoint, oldest first: *name stays valid until that
   checkpoint is deleted or b is closed. -ENOENT past the last. */
int bdev_checkpoint_get(struct bdev *b, unsigned index, const char **name);
/*
 * Whether the first run of [offset, offset + length) changed since
 * checkpoint since: returns 1 (changed) or 0 (not), and sets *pnum to the
 * run's length, ending on a granularity boundary or at offset + length.
 * -ENOENT for an unknown checkpoint. Never blocks on I/O.
 */
int bdev_changed_status(struct bdev *b, const char *since, uint64_t offset,
			uint64_t length, uint64_t *pnum);
/*
 * The name under which checkpoint name opens (read-only, with bdev_open)
 * as the disk was when the checkpoint was made, written to buf (len
 * bytes): where the store keeps such a copy, an RBD image's snapshot
 * (rbd:POOL/IMAGE@ovk-ckpt-NAME with the disk's options). -ENOTSUP when
 * it keeps only what changed (the sidecar change map), -ENOENT for an
 * unknown checkpoint, -ENOSPC when buf is too small.
 */
int bdev_checkpoint_view(struct bdev *b, const char *name, char *buf,
			 size_t len);

enum bdev_resize_flag {
	BDEV_RESIZE_SHRINK = 1u << 0, /* allow a smaller size (flat kinds drop
					 the bytes past the new end) */
};

/*
 * Change the virtual size of the image at path (not open elsewhere: takes
 * exclusive locks). Grows monolithicFlat, vmfs, twoGbMaxExtentFlat (adding
 * extent files) and monolithicSparse (while its grain directory has room);
 * shrinking needs BDEV_RESIZE_SHRINK and never drops sparse grains. A raw
 * file grows or (with BDEV_RESIZE_SHRINK) is truncated. Other kinds fail
 * with -ENOTSUP and a message saying why.
 */
int bdev_resize(const char *path, uint64_t new_size, unsigned flags);

/* ---- Checking ------------------------------------------------------------ */

enum bdev_check_repair {
	BDEV_CHECK_REPAIR_LEAKS = 1u << 0, /* cut trailing leaked grains off */
	BDEV_CHECK_REPAIR_ALL = 1u << 1,   /* also rewrite redundant tables that
					      differ from sane primary ones */
};

struct bdev_check_result {
	uint64_t corruptions, corruptions_fixed;
	uint64_t leaks, leaks_fixed;          /* grains */
	uint64_t allocated_clusters, total_clusters;
	unsigned checked_extents;             /* hosted sparse extents checked */
	bool unclean;
};

/*
 * Check the sparse extents of the VMDK at path (like qemu-img check) and
 * repair what repair (enum bdev_check_repair) allows; a repair opens the
 * files read-write with exclusive locks. report (may be NULL) gets one line
 * per finding, naming the file and the entry. A raw image has no metadata:
 * its check finds nothing and reports one line saying so. Returns 0 when
 * the check ran (see r for what it found) or -errno when it could not run.
 */
int bdev_check(const char *path, unsigned repair, struct bdev_check_result *r,
	       void (*report)(void *opaque, const char *line), void *opaque);

/* ---- Statistics: cache behaviour, for tests and profiling ---------------- */

struct bdev_stats {
	uint64_t gt_cache_hits, gt_cache_misses;
	uint64_t grain_cache_hits, grain_cache_misses;
	uint64_t grains_inflated, readahead_grains;
};

void bdev_get_stats(const struct bdev *b, struct bdev_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* OVK_BLOCKENGINE_H */
