/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vmdk.h - private to the VMDK format driver: the parsed descriptor, sparse
 * headers, extents and the grain-table cache. Nothing outside
 * blockengine/src/vmdk (and its unit tests and fuzzers) includes this.
 */
#ifndef OVK_VMDK_H
#define OVK_VMDK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <endian.h>
#include <string.h>

#include "internal.h"

/* Little-endian stores into on-disk buffers. */
static inline void vmdk_put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static inline void vmdk_put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

/* ---- Descriptor (descriptor.c) ----------------------------------------- */

#define VMDK_DESC_MAX_BYTES (1u << 20)  /* larger descriptors are refused */
#define VMDK_DESC_MAX_EXTENTS 65536u
#define VMDK_NO_PARENT_CID 0xffffffffu
/* ddb.adapterType of a new image when none is asked for: what VMware's
   writers put there */
#define VMDK_DEFAULT_ADAPTER "lsilogic"

enum vmdk_ext_type {
	VMDK_EXT_FLAT,
	VMDK_EXT_VMFS,
	VMDK_EXT_VMFSRDM,
	VMDK_EXT_VMFSRAW,
	VMDK_EXT_ZERO,
	VMDK_EXT_SPARSE,
	VMDK_EXT_VMFSSPARSE,
	VMDK_EXT_SESPARSE,
};

struct vmdk_desc_extent {
	enum bdev_access access;
	enum vmdk_ext_type type;
	uint64_t sectors;
	uint64_t offset; /* sectors into the file (FLAT kinds), else 0 */
	char *name;      /* as written (unquoted), NULL for ZERO */
	unsigned line;   /* 1-based line in the descriptor, for messages */
};

struct vmdk_ddb {
	char *key; /* without the "ddb." prefix */
	char *value;
};

struct vmdk_desc {
	unsigned version;
	char *encoding;
	bool has_cid;
	uint32_t cid;
	uint32_t parent_cid; /* VMDK_NO_PARENT_CID when absent */
	bool has_parent_cid;
	char *create_type;
	char *parent_hint;   /* parentFileNameHint, or NULL */
	struct vmdk_desc_extent *extents;
	unsigned n_extents;
	struct vmdk_ddb *ddb;
	unsigned n_ddb;
};

/* Confidence 0..100 that head is a text descriptor. */
int vmdk_desc_probe(const uint8_t *head, size_t len);
/*
 * Parse descriptor text (len bytes; stops at the first NUL, as embedded
 * descriptors are NUL padded). name is used in messages. On failure the
 * message names name, the line and what was expected, and *d is empty.
 */
int vmdk_desc_parse(const char *text, size_t len, const char *name,
		    struct vmdk_desc *d);
void vmdk_desc_free(struct vmdk_desc *d);
/* The value of ddb.<key>, or NULL. */
const char *vmdk_desc_ddb(const struct vmdk_desc *d, const char *key);
const char *vmdk_ext_type_name(enum vmdk_ext_type t);
/* Read the descriptor file path whole (at most VMDK_DESC_MAX_BYTES) into a
   malloc'd NUL-ended string; *len gets its length. */
int vmdk_desc_read_file(const char *path, char **out, size_t *len);
/* Replace the file path with text, crash-safely: a temporary file in the
   same folder, synced, renamed over path, then the folder synced. A crash
   leaves the old file or the new one, never a mix. */
int vmdk_replace_file(const char *path, const char *text);
/* Descriptor text (len bytes) with the sector count of its last extent
   line set to sectors and extra (may be NULL) inserted after that line,
   into *out (malloc'd). -ENOENT when there is no extent line, -ENOMEM
   (no message). */
int vmdk_desc_resize(const char *text, size_t len, uint64_t sectors,
		     const char *extra, char **out);

/* ---- Hosted sparse header (sparse_header.c) ----------------------------- */

#define VMDK4_MAGIC "KDMV"
#define VMDK4_FLAG_NL_DETECT (1u << 0)
#define VMDK4_FLAG_RGD (1u << 1)
#define VMDK4_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK4_FLAG_COMPRESSED (1u << 16)
#define VMDK4_FLAG_MARKERS (1u << 17)
#define VMDK4_GD_AT_END UINT64_C(0xffffffffffffffff)
#define VMDK4_MAX_GRAIN_SECTORS (1u << 21) /* QEMU's bound: 1 GiB */
#define VMDK4_MAX_COMPRESSED_GRAIN_SECTORS (1u << 14) /* 8 MiB */
#define VMDK4_MAX_GTES_PER_GT 512u
#define VMDK_MAX_GD_ENTRIES (1u << 22)
#define VMDK_MAX_CAPACITY_SECTORS (UINT64_C(1) << 40) /* 512 TiB */
#define VMDK_MAX_DESC_SECTORS (VMDK_DESC_MAX_BYTES / 512)

enum vmdk_marker_type {
	VMDK_MARKER_EOS = 0,
	VMDK_MARKER_GT = 1,
	VMDK_MARKER_GD = 2,
	VMDK_MARKER_FOOTER = 3,
};

struct vmdk_sparse_hdr {
	uint32_t version;
	uint32_t flags;
	uint64_t capacity;      /* sectors */
	uint64_t grain_sectors;
	uint64_t desc_offset;   /* sectors, 0 = none */
	uint64_t desc_size;     /* sectors */
	uint32_t gtes_per_gt;
	uint64_t rgd_offset;    /* sectors */
	uint64_t gd_offset;     /* sectors, or VMDK4_GD_AT_END */
	uint64_t overhead;      /* sectors */
	bool unclean;
	uint16_t compress_algorithm;
	uint32_t gd_entries;    /* derived from capacity */
	bool compressed;        /* deflate grains */
	bool gd_ok, rgd_ok;     /* the directory lies inside the file */
};

/*
 * Decode and check the 512-byte header at hdr_off (0, or the footer's
 * offset) of a file of file_len bytes. Fields that would make later reads
 * unsafe fail with "<name>: <field> at offset N is X, expected Y"; a GD or
 * RGD outside the file only clears gd_ok/rgd_ok (the caller picks one).
 */
int vmdk_sparse_header_parse(const uint8_t *buf, uint64_t hdr_off,
			     uint64_t file_len, const char *name,
			     struct vmdk_sparse_hdr *h);
/* True if buf (>= 4 bytes) starts with a hosted sparse magic. */
bool vmdk_is_sparse_magic(const uint8_t *buf, size_t len);

/* A stream marker or grain record header (first 16 bytes of a sector). */
struct vmdk_marker {
	uint64_t val;   /* lba for grain records, numSectors for markers */
	uint32_t size;  /* compressed bytes for grains, 0 for markers */
	uint32_t type;  /* markers only */
};
void vmdk_marker_decode(const uint8_t *buf, struct vmdk_marker *m);
/* A 512-byte stream marker: payload sectors and type. */
static inline void vmdk_marker_encode(uint8_t *p, uint64_t sectors, uint32_t type)
{
	memset(p, 0, 512);
	vmdk_put64(p, sectors);
	vmdk_put32(p + 12, type);
}

/* ---- Extents ------------------------------------------------------------ */

struct vmdk_extent_ops;

struct vmdk_extent {
	enum vmdk_ext_type type;
	enum bdev_access access;
	/* The sparse kind's table (set by its open), NULL for FLAT, VMFS,
	   RDM and ZERO extents. */
	const struct vmdk_extent_ops *ops;
	uint64_t start;      /* first virtual byte */
	uint64_t size;       /* virtual bytes */
	struct bsrc *src;    /* NULL for ZERO */
	bool owns_src;       /* close src when the extent goes */
	char *path;          /* resolved file name (owned), NULL for ZERO */
	uint64_t flat_off;   /* bytes into src where FLAT data starts */
	unsigned index;

	/* Sparse kinds. */
	uint32_t version;
	bool compressed, markers, zero_gte, unclean;
	bool used_rgd;        /* the primary directory was damaged */
	bool rebuilt;         /* map rebuilt by scanning the stream */
	uint64_t capacity;    /* sectors, from the extent's own header */
	uint64_t grain_bytes;
	unsigned grain_shift; /* log2(grain_bytes) */
	uint32_t gt_entries;  /* entries per grain table */
	unsigned gte_size;    /* 4 or 8 bytes */
	uint64_t gt_bytes;    /* gt_entries * gte_size */
	uint32_t gd_entries;
	uint64_t *gd;         /* byte offset of each GT in src, 0 = none */
	uint64_t *rgd;        /* redundant directory, or NULL */
	uint32_t **mem_gts;   /* rebuilt stream map (host-endian u32 GTEs) */
	uint64_t se_grains_off; /* seSparse: byte offset of grain 0 */

	/* Write path (write_sparse.c); only for writable hosted/COWD. */
	uint64_t gd_off, rgd_off;   /* bytes; 0 = none */
	_Atomic uint64_t next_free; /* byte offset of the next fresh grain */
	bool gd_dirty;              /* some gd/rgd entry not on disk yet */
	pthread_mutex_t gt_alloc_mu; /* held while a new GT is zeroed on disk */
	bool write_init;

	/* streamOptimized write path (write_stream.c): whole compressed
	   grains appended, tables kept in mem_gts, a fresh tail (GTs, GD,
	   footer, EOS) written at each flush after the last grain. */
	bool stream_w;              /* writable stream extent */
	bool stream_gd_at_end;      /* header 0 says GD_AT_END */
	bool stream_tail_present;   /* bytes past next_free to cut first */
	bool stream_need_tail;      /* tables changed since the last tail */
	uint8_t *stream_gt_dirty;   /* per table (GD in front only) */
	uint8_t stream_hdr[512];    /* header 0, the footer's template */
	pthread_mutex_t stream_mu;  /* tail cut, reservations, new tables */
};

/* What one grain of a sparse extent holds. */
enum vmdk_grain_state {
	VMDK_GRAIN_UNALLOC,
	VMDK_GRAIN_ZERO,
	VMDK_GRAIN_DATA,
};

/* ---- Extent kinds (extent_kind.c) -------------------------------------- */

/*
 * One table per sparse extent kind, defined at the end of the kind's own
 * file (extent_sparse.c: hosted sparse and streamOptimized, "KDMV";
 * extent_cowd.c: vmfsSparse, "COWD"; extent_sesparse.c: seSparse) and
 * listed in extent_kind.c, which is the one place that tells kinds apart
 * by magic. FLAT, VMFS, RDM and ZERO extents have no table.
 */
struct vmdk_check_ctx;
struct vmdk_extent_ops {
	const char *name;        /* in messages: "hosted sparse", "COWD" */
	enum vmdk_ext_type type; /* of an image that is this one file */
	const char *create_type; /* createType of such an image */
	/* True if head (len bytes) starts with this kind's magic. */
	bool (*probe)(const uint8_t *head, size_t len);
	/* Check the header of e->src, load its directory, set e->ops. */
	int (*open)(struct vmdk_extent *e, const char *name);
	/* Decode grain-table entry idx; see vmdk_gte_decode. */
	int (*decode)(const struct vmdk_extent *e, const uint8_t *gt,
		      uint32_t idx, uint64_t *file_off);
	/* bdev_check of the extent file path, without opening the image:
	   findings go to c, repairs as far as repair allows (BDEV_CHECK_*).
	   desc_bytes is the size the descriptor gives it, 0 when none. */
	int (*check)(struct vmdk_check_ctx *c, const char *path,
		     uint64_t desc_bytes, unsigned repair);
};

extern const struct vmdk_extent_ops vmdk_hosted_ops;
extern const struct vmdk_extent_ops vmdk_cowd_ops;
extern const struct vmdk_extent_ops vmdk_sesparse_ops;

/* The kind whose magic head starts with, or NULL. */
const struct vmdk_extent_ops *vmdk_extent_ops_probe(const uint8_t *head,
						    size_t len);
/* Open the sparse extent e->src by the kind its magic names; an unknown
   magic fails with a message naming name and e's descriptor type. */
int vmdk_extent_open_sparse(struct vmdk_extent *e, const char *name);

/* Each kind's open, also called directly by the header fuzzer. */
int vmdk_sparse_open(struct vmdk_extent *e, const char *name);
int vmdk_cowd_open(struct vmdk_extent *e, const char *name);
int vmdk_sesparse_open(struct vmdk_extent *e, const char *name);
bool vmdk_is_cowd_magic(const uint8_t *buf, size_t len);
bool vmdk_is_sesparse_magic(const uint8_t *buf, size_t len);
/* Free the tables a sparse open allocated. */
void vmdk_sparse_tables_free(struct vmdk_extent *e);
/* Directory entry i of dir (e->gd or e->rgd): its table's byte offset,
   0 for none. Writers publish new tables there (release) on other
   threads once the table's bytes are written, so this loads with acquire. */
static inline uint64_t vmdk_gd_load(const uint64_t *dir, uint64_t i)
{
	return __atomic_load_n(&dir[i], __ATOMIC_ACQUIRE);
}

/* The decode of kinds with u32 sector entries (hosted sparse, COWD). */
int vmdk_gte_decode32(const struct vmdk_extent *e, const uint8_t *gt,
		      uint32_t idx, uint64_t *file_off);

/*
 * Decode GTE idx of a grain table (raw little-endian bytes, aligned to its
 * entries' size) of e. Returns the state, and for DATA the byte offset of
 * the grain (or its compressed record) in e->src. -EINVAL (with a message)
 * for an entry that cannot be. A writer on another thread may publish the
 * entry meanwhile (after writing its grain): kinds that allocate read it
 * with an acquire load paired with the writer's release store.
 */
static inline int vmdk_gte_decode(const struct vmdk_extent *e, const uint8_t *gt,
				  uint32_t idx, uint64_t *file_off)
{
	return e->ops->decode(e, gt, idx, file_off);
}

/* ---- Check helpers (check.c), for the kinds' check ops ------------------- */

struct vmdk_check_ctx {
	struct bdev_check_result *r;
	void (*report)(void *, const char *);
	void *opaque;
};
/* Report one finding (a line of text) to the caller's callback. */
void vmdk_check_finding(struct vmdk_check_ctx *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* n little-endian u32s at off of s, host-endian, in a malloc'd array. */
int vmdk_check_read_u32s(struct bsrc *s, uint64_t off, uint32_t n,
			 uint32_t **out);

/* ---- Grain-table cache (gt_cache.c) ------------------------------------- */

struct vmdk_gt_entry;

struct vmdk_gt_cache {
	pthread_mutex_t lock;
	uint64_t limit;  /* bytes */
	uint64_t used;
	unsigned nbuckets;
	struct vmdk_gt_entry **buckets;
	struct vmdk_gt_entry *lru_head, *lru_tail; /* head = most recent */
};

int vmdk_gt_cache_init(struct vmdk_gt_cache *c, uint64_t limit_bytes);
void vmdk_gt_cache_destroy(struct vmdk_gt_cache *c);
/*
 * The grain table gd_index of extent e, pinned until vmdk_gt_cache_put.
 * Reads it (outside the lock) on a miss and counts hits and misses in b.
 * Falls back to the redundant table if the primary one is damaged.
 * Inside bdev_layer_map_nowait a miss fails with -EWOULDBLOCK instead.
 */
int vmdk_gt_cache_get(struct vmdk_gt_cache *c, struct bdev *b,
		      struct vmdk_extent *e, uint32_t gd_index,
		      const uint8_t **gt, struct vmdk_gt_entry **ref);
void vmdk_gt_cache_put(struct vmdk_gt_cache *c, struct vmdk_gt_entry *ref);
/* Check every DATA entry of a GT lies inside e->src (0, or -EINVAL). */
int vmdk_gt_check(const struct vmdk_extent *e, const uint8_t *gt);

/* ---- The open image (format_vmdk.c) -------------------------------------- */

struct vmdk_image {
	struct vmdk_desc desc;
	const char *desc_label; /* the descriptor's file name, for messages */
	bool desc_parsed;
	char *create_type;  /* info.subformat */
	char *parent_path;  /* resolved parent file, or NULL */
	struct vmdk_extent *extents;
	unsigned n_extents;
	struct vmdk_gt_cache gtc;

	/* Write path (write_sparse.c). */
	pthread_mutex_t alloc_mu;      /* short holds: in-flight grain list */
	pthread_cond_t alloc_cv;       /* an in-flight grain finished */
	struct vmdk_alloc *allocs;     /* grains being allocated now */
	pthread_mutex_t flush_mu;      /* one metadata flush at a time */
	bool write_init;
};

/* A grain some thread is allocating now; others wait for it. */
struct vmdk_alloc {
	const struct vmdk_extent *e;
	uint64_t grain;
	struct vmdk_alloc *next;
};

/* write_sparse.c: the write-path hooks of the VMDK driver. */
int vmdk_write_setup(struct bdev *b, struct vmdk_image *img);
void vmdk_write_teardown(struct vmdk_image *img);
ssize_t vmdk_write_alloc(struct bdev *b, uint64_t off, uint64_t len,
			 const struct iovec *iov, int iovcnt);
ssize_t vmdk_zero(struct bdev *b, uint64_t off, uint64_t len, bool discard);
int vmdk_begin_write(struct bdev *b);
int vmdk_finish(struct bdev *b);
int vmdk_flush(struct bdev *b);
/* grow.c: the grow op (struct bdev_format.grow). */
int vmdk_grow(struct bdev *b, uint64_t new_size);
/* resize.c: the resize op (struct bdev_format.resize, bdev_resize). */
int vmdk_resize(struct bdev *b, uint64_t new_size, unsigned flags);
/* check.c: the check op (struct bdev_format.check, bdev_check). */
int vmdk_check(const char *path, unsigned repair, struct bdev_check_result *r,
	       void (*report)(void *opaque, const char *line), void *opaque);

/* write_common.c: shared by both write paths; the lookup also by the map. */
/* The extent holding virtual byte off, or NULL. */
struct vmdk_extent *vmdk_find_extent(struct vmdk_image *img, uint64_t off);
/* Copies the first len bytes of iov into dst. */
void vmdk_iov_copy_out(uint8_t *dst, const struct iovec *iov, int iovcnt,
		       uint64_t len);
/* Fills buf (gb bytes at virtual offset vstart) from the layers below b. */
int vmdk_fill_from_backing(struct bdev *b, uint64_t vstart, uint8_t *buf,
			   uint64_t gb);

/* write_stream.c: writing streamOptimized extents. */
int vmdk_stream_write_setup(struct vmdk_extent *e);
void vmdk_stream_write_teardown(struct vmdk_extent *e);
ssize_t vmdk_stream_write_alloc(struct bdev *b, struct vmdk_extent *e,
				uint64_t off, uint64_t len,
				const struct iovec *iov, int iovcnt);
int vmdk_stream_flush(struct vmdk_extent *e);
/* Where e's grain records end (from its tables in mem_gts). */
int vmdk_stream_records_end(struct vmdk_extent *e, uint64_t overhead,
			    uint64_t *end);

/* gt_cache.c, write side: tables changed in memory and not yet on disk are
   pinned until written. */
/* Mark a pinned table dirty (pins it until vmdk_gt_cache_take_dirty). */
void vmdk_gt_cache_mark_dirty(struct vmdk_gt_cache *c, struct vmdk_gt_entry *ref);
struct vmdk_dirty_gt {
	struct vmdk_extent *ext;
	uint32_t gd_index;
	struct vmdk_gt_entry *ref; /* pinned until vmdk_gt_cache_put */
	uint8_t *copy;             /* snapshot of the table (malloc'd) */
};
/* Snapshot every dirty table of the cache and mark them clean; the caller
   writes each copy, then puts each ref and frees the copies. */
int vmdk_gt_cache_take_dirty(struct vmdk_gt_cache *c, struct vmdk_dirty_gt **out,
			     size_t *n);


/* Inflate a stream grain record (stream.c). */
int vmdk_stream_decode(const struct vmdk_extent *e, uint64_t rec_off,
		       uint64_t grain_lba, const uint8_t *in, size_t inlen,
		       uint8_t *out, size_t out_size, size_t need);
/* This thread's libdeflate compressor for level (made on first use, remade
   when another level is asked for, freed at thread exit); NULL on ENOMEM. */
struct libdeflate_compressor *vmdk_deflater(int level);
/* Deflate one grain as a zlib stream with this thread's compressor for
   level, or store it (no compression) when it looks incompressible: as
   small as deflating it, at a fraction of the CPU. Returns the bytes
   written to out, 0 when cap is too small or out of memory. */
size_t vmdk_grain_deflate(int level, const void *in, size_t len, void *out,
			  size_t cap);
/* Worst-case record size of one compressed grain. */
uint64_t vmdk_stream_record_bound(uint64_t grain_bytes);
/* Rebuild e's map by walking grain records and markers from overhead. */
int vmdk_stream_rebuild(struct vmdk_extent *e, const char *name,
			uint64_t overhead_sectors);

#endif /* OVK_VMDK_H */
