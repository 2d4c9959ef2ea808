/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grain_cache.h - a bounded cache of inflated grains of one layer, shared by
 * every thread doing I/O on it. Entries are keyed by (source, record offset)
 * and refcounted, so a reader copies out of an entry without holding the
 * cache's lock; the lock is held only to look up and insert.
 *
 * The cache itself is refcounted too: a read-ahead still in flight on some
 * thread's queue keeps it alive after the layer is closed, and finds it dead
 * (gcache_decode_begin() fails) instead of touching the closed layer.
 */
#ifndef OVK_BLOCKENGINE_GRAIN_CACHE_H
#define OVK_BLOCKENGINE_GRAIN_CACHE_H

#include <stdbool.h>
#include <stdint.h>

struct bsrc;
struct grain_cache;

struct gcache_entry {
	uint32_t size;  /* bytes in data */
	uint8_t *data;  /* the inflated grain */
};

/* A cache holding at most cap_bytes of inflated grains (NULL on ENOMEM). */
struct grain_cache *gcache_new(uint64_t cap_bytes);
/* Called when the layer closes: marks the cache dead, waits for decodes in
   progress to end, drops the layer's reference. */
void gcache_kill(struct grain_cache *gc);
/* References held by grain reads in flight. */
void gcache_ref(struct grain_cache *gc);
void gcache_unref(struct grain_cache *gc);

/* A referenced entry for the grain record at (src, off), or NULL. */
struct gcache_entry *gcache_lookup(struct grain_cache *gc,
				   const struct bsrc *src, uint64_t off);
/* Whether the record is cached, without taking a reference. */
bool gcache_contains(struct grain_cache *gc, const struct bsrc *src,
		     uint64_t off);
/* A new, unlisted entry of size bytes to decode into (NULL on ENOMEM). */
struct gcache_entry *gcache_entry_new(uint32_t size);
/* Lists e under (src, off) unless that key is cached already; the caller
   keeps its own reference either way. */
void gcache_insert(struct grain_cache *gc, const struct bsrc *src,
		   uint64_t off, struct gcache_entry *e);
/* Drops a reference taken by lookup or entry_new. */
void gcache_put(struct gcache_entry *e);

/*
 * Image-wide read-ahead (BDEV_O_STREAM_READAHEAD). gcache_stream_note()
 * follows one sequential stream whose requests arrive on any thread, and
 * says which range [*from, *to) to read ahead now (false: none). Each
 * grain read ahead is claimed (gcache_claim) before its job is queued to
 * the pool; the job starts it (gcache_claim_start: false when a reader
 * took the grain back meanwhile) and ends it (gcache_claim_end), listing
 * the inflated entry and waking readers that waited for it.
 */
bool gcache_stream_note(struct grain_cache *gc, uint64_t off, uint64_t len,
			uint64_t window, uint64_t *from, uint64_t *to);
/* Claims (src, off) for a read-ahead job: false when it is cached or
   claimed already, or too many are. */
bool gcache_claim(struct grain_cache *gc, const struct bsrc *src,
		  uint64_t off);
bool gcache_claim_start(struct grain_cache *gc, const struct bsrc *src,
			uint64_t off);
void gcache_claim_end(struct grain_cache *gc, const struct bsrc *src,
		      uint64_t off, struct gcache_entry *e);
/*
 * gcache_lookup() for a reader that would otherwise read the record
 * itself: when a read-ahead job is inflating it now, waits for that job
 * (it never waits on anything) and returns its entry; when the job has
 * not started, takes the grain back (the job skips it) and returns NULL.
 */
struct gcache_entry *gcache_lookup_join(struct grain_cache *gc,
					const struct bsrc *src, uint64_t off);

/* Brackets a decode that uses the layer: false when the layer is closed. */
bool gcache_decode_begin(struct grain_cache *gc);
void gcache_decode_end(struct grain_cache *gc);

#endif /* OVK_BLOCKENGINE_GRAIN_CACHE_H */
