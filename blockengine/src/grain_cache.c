/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grain_cache.c - the inflated-grain cache: a hash table of refcounted
 * entries with LRU eviction under one mutex, held only for list and table
 * updates (never across I/O, inflate or copies).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "grain_cache.h"

struct gc_ent {
	struct gcache_entry pub; /* first: gcache_entry * converts back */
	atomic_uint refs;
	const struct bsrc *src;
	uint64_t off;
	bool listed;
	struct gc_ent *hnext;      /* hash chain */
	struct gc_ent *prev, *next; /* LRU list, most recent first */
	uint8_t data[];
};

/* A grain claimed by a read-ahead job: queued, inflating, or taken back
   by a reader before the job started. */
enum gc_claim_state { GC_CLAIM_QUEUED, GC_CLAIM_RUNNING, GC_CLAIM_TAKEN };

#define GC_MAX_CLAIMS 64u

struct gc_claim {
	const struct bsrc *src;
	uint64_t off;
	enum gc_claim_state state;
};

struct grain_cache {
	pthread_mutex_t lock;
	pthread_cond_t decoded;
	pthread_cond_t claimed; /* a claim ended */
	unsigned nclaims;
	struct gc_claim claims[GC_MAX_CLAIMS];
	uint64_t stream_end; /* end of the sequential stream's furthest read */
	uint64_t ra_upto;    /* read ahead (claimed or skipped) up to here */
	uint64_t last_end;   /* end of the last request noted */
	atomic_uint refs;
	bool dead;
	unsigned decoding;
	uint64_t cap, bytes;
	unsigned nbuckets; /* power of two */
	struct gc_ent **buckets;
	struct gc_ent *head, *tail;
};

/* Spreads (src, off) over the buckets. */
static unsigned gc_hash(const struct grain_cache *gc, const struct bsrc *src,
			uint64_t off)
{
	uint64_t h = ((uint64_t)(uintptr_t)src >> 4) ^ off;

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 29;
	return (unsigned)h & (gc->nbuckets - 1);
}

/* A cache bounded by cap_bytes; NULL when out of memory. */
struct grain_cache *gcache_new(uint64_t cap_bytes)
{
	struct grain_cache *gc = calloc(1, sizeof(*gc));
	unsigned n = 64;

	if (!gc)
		return NULL;
	while (n < (1u << 16) && (uint64_t)n * 16384 < cap_bytes)
		n <<= 1;
	gc->buckets = calloc(n, sizeof(*gc->buckets));
	if (!gc->buckets) {
		free(gc);
		return NULL;
	}
	gc->nbuckets = n;
	gc->cap = cap_bytes;
	atomic_init(&gc->refs, 1);
	pthread_mutex_init(&gc->lock, NULL);
	pthread_cond_init(&gc->decoded, NULL);
	pthread_cond_init(&gc->claimed, NULL);
	return gc;
}

/* Drops one reference to an entry, freeing it with the last. */
void gcache_put(struct gcache_entry *e)
{
	struct gc_ent *ent = (struct gc_ent *)e;

	if (e && atomic_fetch_sub(&ent->refs, 1) == 1)
		free(ent);
}

/* A fresh entry with one reference, for the caller to decode into. */
struct gcache_entry *gcache_entry_new(uint32_t size)
{
	struct gc_ent *ent = malloc(sizeof(*ent) + size);

	if (!ent)
		return NULL;
	ent->pub.size = size;
	ent->pub.data = ent->data;
	atomic_init(&ent->refs, 1);
	ent->listed = false;
	ent->hnext = ent->prev = ent->next = NULL;
	return &ent->pub;
}

/* Takes ent off the LRU list (lock held). */
static void gc_lru_unlink(struct grain_cache *gc, struct gc_ent *ent)
{
	if (ent->prev)
		ent->prev->next = ent->next;
	else
		gc->head = ent->next;
	if (ent->next)
		ent->next->prev = ent->prev;
	else
		gc->tail = ent->prev;
	ent->prev = ent->next = NULL;
}

/* Puts ent at the most-recent end of the LRU list (lock held). */
static void gc_lru_push(struct grain_cache *gc, struct gc_ent *ent)
{
	ent->prev = NULL;
	ent->next = gc->head;
	if (gc->head)
		gc->head->prev = ent;
	gc->head = ent;
	if (!gc->tail)
		gc->tail = ent;
}

/* Finds the listed entry for (src, off) (lock held). */
static struct gc_ent *gc_find(struct grain_cache *gc, const struct bsrc *src,
			      uint64_t off)
{
	struct gc_ent *ent = gc->buckets[gc_hash(gc, src, off)];

	while (ent && !(ent->src == src && ent->off == off))
		ent = ent->hnext;
	return ent;
}

/* Removes ent from table and list and drops the cache's reference (lock
   held); readers holding references keep the bytes until they put them. */
static void gc_evict(struct grain_cache *gc, struct gc_ent *ent)
{
	struct gc_ent **pp = &gc->buckets[gc_hash(gc, ent->src, ent->off)];

	while (*pp != ent)
		pp = &(*pp)->hnext;
	*pp = ent->hnext;
	gc_lru_unlink(gc, ent);
	ent->listed = false;
	gc->bytes -= ent->pub.size;
	gcache_put(&ent->pub);
}

/* The entry for (src, off), referenced and freshened in the LRU, or NULL
   (lock held). */
static struct gc_ent *gc_get(struct grain_cache *gc, const struct bsrc *src,
			     uint64_t off)
{
	struct gc_ent *ent = gc_find(gc, src, off);

	if (ent) {
		atomic_fetch_add(&ent->refs, 1);
		if (gc->head != ent) {
			gc_lru_unlink(gc, ent);
			gc_lru_push(gc, ent);
		}
	}
	return ent;
}

/* A referenced entry for (src, off), freshened in the LRU, or NULL. */
struct gcache_entry *gcache_lookup(struct grain_cache *gc,
				   const struct bsrc *src, uint64_t off)
{
	struct gc_ent *ent;

	pthread_mutex_lock(&gc->lock);
	ent = gc_get(gc, src, off);
	pthread_mutex_unlock(&gc->lock);
	return ent ? &ent->pub : NULL;
}

/* The claim on (src, off), or NULL (lock held). */
static struct gc_claim *gc_claim_find(struct grain_cache *gc,
				      const struct bsrc *src, uint64_t off)
{
	for (unsigned i = 0; i < gc->nclaims; i++)
		if (gc->claims[i].src == src && gc->claims[i].off == off)
			return &gc->claims[i];
	return NULL;
}

/* Drops claim c and wakes readers waiting for one (lock held). */
static void gc_claim_drop(struct grain_cache *gc, struct gc_claim *c)
{
	*c = gc->claims[--gc->nclaims];
	pthread_cond_broadcast(&gc->claimed);
}

/* Whether (src, off) is cached right now, or claimed by a read-ahead. */
bool gcache_contains(struct grain_cache *gc, const struct bsrc *src,
		     uint64_t off)
{
	bool found;

	pthread_mutex_lock(&gc->lock);
	found = gc_find(gc, src, off) != NULL ||
		(gc->nclaims && gc_claim_find(gc, src, off));
	pthread_mutex_unlock(&gc->lock);
	return found;
}

/* Lists e under (src, off), evicting least recently used entries to stay
   within the bound; a duplicate or oversized entry is simply not listed. */
void gcache_insert(struct grain_cache *gc, const struct bsrc *src,
		   uint64_t off, struct gcache_entry *e)
{
	struct gc_ent *ent = (struct gc_ent *)e;
	unsigned b;

	pthread_mutex_lock(&gc->lock);
	if (gc->dead || ent->listed || e->size > gc->cap ||
	    gc_find(gc, src, off))
		goto out_unlock;
	while (gc->tail && gc->bytes + e->size > gc->cap)
		gc_evict(gc, gc->tail);
	ent->src = src;
	ent->off = off;
	ent->listed = true;
	atomic_fetch_add(&ent->refs, 1);
	b = gc_hash(gc, src, off);
	ent->hnext = gc->buckets[b];
	gc->buckets[b] = ent;
	gc_lru_push(gc, ent);
	gc->bytes += e->size;
out_unlock:
	pthread_mutex_unlock(&gc->lock);
}

/* Takes a reference for a grain read in flight. */
void gcache_ref(struct grain_cache *gc)
{
	atomic_fetch_add(&gc->refs, 1);
}

/* Drops a reference; the last one frees every entry and the cache. */
void gcache_unref(struct grain_cache *gc)
{
	if (!gc || atomic_fetch_sub(&gc->refs, 1) != 1)
		return;
	while (gc->tail)
		gc_evict(gc, gc->tail);
	pthread_cond_destroy(&gc->decoded);
	pthread_cond_destroy(&gc->claimed);
	pthread_mutex_destroy(&gc->lock);
	free(gc->buckets);
	free(gc);
}

/* Marks the cache dead (its layer is closing), waits out running decodes,
   empties it and drops the layer's reference. */
void gcache_kill(struct grain_cache *gc)
{
	if (!gc)
		return;
	pthread_mutex_lock(&gc->lock);
	gc->dead = true;
	while (gc->decoding)
		pthread_cond_wait(&gc->decoded, &gc->lock);
	while (gc->tail)
		gc_evict(gc, gc->tail);
	pthread_mutex_unlock(&gc->lock);
	gcache_unref(gc);
}

/* Reserves the layer for one decode; false once the layer is closing. */
bool gcache_decode_begin(struct grain_cache *gc)
{
	bool live;

	pthread_mutex_lock(&gc->lock);
	live = !gc->dead;
	if (live)
		gc->decoding++;
	pthread_mutex_unlock(&gc->lock);
	return live;
}

/* Ends a decode begun with gcache_decode_begin(). */
void gcache_decode_end(struct grain_cache *gc)
{
	pthread_mutex_lock(&gc->lock);
	if (--gc->decoding == 0)
		pthread_cond_broadcast(&gc->decoded);
	pthread_mutex_unlock(&gc->lock);
}

/*
 * Follows the sequential stream: a request that starts near its end (up to
 * four request lengths behind, for the requests of one stream served out
 * of order by several threads, or one length ahead) continues it, and the
 * stream should then be read ahead up to window bytes past the request.
 * Anything else is a random read and leaves the stream alone.
 */
bool gcache_stream_note(struct grain_cache *gc, uint64_t off, uint64_t len,
			uint64_t window, uint64_t *from, uint64_t *to)
{
	uint64_t end = off + len, lo, want;
	bool ra = false;

	pthread_mutex_lock(&gc->lock);
	lo = gc->stream_end > 4 * len ? gc->stream_end - 4 * len : 0;
	if (off >= lo && off <= gc->stream_end + len) {
		if (end > gc->stream_end)
			gc->stream_end = end;
		want = end + window;
		*from = gc->ra_upto > end ? gc->ra_upto : end;
		if (gc->ra_upto > want + window)
			*from = end; /* the stream restarted behind */
		if (*from < want) {
			*to = want;
			gc->ra_upto = want;
			ra = true;
		}
	} else if (off == 0 || off == gc->last_end) {
		gc->stream_end = end; /* a new stream starts here */
		gc->ra_upto = end;
	}
	gc->last_end = end;
	pthread_mutex_unlock(&gc->lock);
	return ra;
}

/* Claims (src, off) for a read-ahead job (see grain_cache.h). */
bool gcache_claim(struct grain_cache *gc, const struct bsrc *src,
		  uint64_t off)
{
	bool ok;

	pthread_mutex_lock(&gc->lock);
	ok = !gc->dead && gc->nclaims < GC_MAX_CLAIMS &&
	     !gc_find(gc, src, off) && !gc_claim_find(gc, src, off);
	if (ok)
		gc->claims[gc->nclaims++] = (struct gc_claim){
			.src = src, .off = off, .state = GC_CLAIM_QUEUED };
	pthread_mutex_unlock(&gc->lock);
	return ok;
}

/* A job starts its claimed grain: false (claim dropped) when a reader took
   it back. */
bool gcache_claim_start(struct grain_cache *gc, const struct bsrc *src,
			uint64_t off)
{
	struct gc_claim *c;
	bool run = false;

	pthread_mutex_lock(&gc->lock);
	c = gc_claim_find(gc, src, off);
	if (c && c->state == GC_CLAIM_QUEUED) {
		c->state = GC_CLAIM_RUNNING;
		run = true;
	} else if (c) {
		gc_claim_drop(gc, c);
	}
	pthread_mutex_unlock(&gc->lock);
	return run;
}

/* A job ends its grain: lists e (NULL: it failed) and drops the claim. */
void gcache_claim_end(struct grain_cache *gc, const struct bsrc *src,
		      uint64_t off, struct gcache_entry *e)
{
	struct gc_claim *c;

	if (e)
		gcache_insert(gc, src, off, e);
	pthread_mutex_lock(&gc->lock);
	c = gc_claim_find(gc, src, off);
	if (c)
		gc_claim_drop(gc, c);
	pthread_mutex_unlock(&gc->lock);
}

/* gcache_lookup() that joins a read-ahead in progress (see grain_cache.h):
   one lock round trip when nothing is read ahead. */
struct gcache_entry *gcache_lookup_join(struct grain_cache *gc,
					const struct bsrc *src, uint64_t off)
{
	struct gc_ent *ent;
	struct gc_claim *c;

	pthread_mutex_lock(&gc->lock);
	for (;;) {
		ent = gc_get(gc, src, off);
		c = ent || !gc->nclaims ? NULL : gc_claim_find(gc, src, off);
		if (!c || c->state != GC_CLAIM_RUNNING)
			break;
		pthread_cond_wait(&gc->claimed, &gc->lock);
	}
	if (c && c->state == GC_CLAIM_QUEUED)
		c->state = GC_CLAIM_TAKEN;
	pthread_mutex_unlock(&gc->lock);
	return ent ? &ent->pub : NULL;
}
