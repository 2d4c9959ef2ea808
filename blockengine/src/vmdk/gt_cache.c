/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gt_cache.c - the grain-table cache shared by all threads of one image:
 * a hash of (extent, directory index) -> raw table bytes, bounded in bytes,
 * least recently used out first. The lock covers only lookups and list
 * edits; tables are read from the file with no lock held.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

struct vmdk_gt_entry {
	struct vmdk_gt_entry *hnext;
	struct vmdk_gt_entry *prev, *next; /* LRU list */
	const struct vmdk_extent *ext;
	uint32_t gd_index;
	unsigned pins;
	bool dirty; /* changed in memory, not written yet (holds a pin) */
	uint64_t bytes;
	uint8_t data[];
};

/* Set up an empty cache holding at most limit_bytes of tables. */
int vmdk_gt_cache_init(struct vmdk_gt_cache *c, uint64_t limit_bytes)
{
	memset(c, 0, sizeof(*c));
	c->limit = limit_bytes;
	c->nbuckets = 1024;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (!c->buckets)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	return 0;
}

/* Free every table; no entry may be pinned. */
void vmdk_gt_cache_destroy(struct vmdk_gt_cache *c)
{
	struct vmdk_gt_entry *e = c->lru_head;

	if (!c->buckets)
		return;
	while (e) {
		struct vmdk_gt_entry *n = e->next;
		free(e);
		e = n;
	}
	free(c->buckets);
	pthread_mutex_destroy(&c->lock);
	memset(c, 0, sizeof(*c));
}

static unsigned bucket_of(const struct vmdk_gt_cache *c,
			  const struct vmdk_extent *ext, uint32_t gd_index)
{
	uint64_t h = ((uint64_t)ext->index << 32 | gd_index) * UINT64_C(0x9e3779b97f4a7c15);

	return (unsigned)(h >> 40) & (c->nbuckets - 1);
}

static void lru_unlink(struct vmdk_gt_cache *c, struct vmdk_gt_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push_front(struct vmdk_gt_cache *c, struct vmdk_gt_entry *e)
{
	e->prev = NULL;
	e->next = c->lru_head;
	if (c->lru_head)
		c->lru_head->prev = e;
	c->lru_head = e;
	if (!c->lru_tail)
		c->lru_tail = e;
}

static struct vmdk_gt_entry *lookup(struct vmdk_gt_cache *c,
				    const struct vmdk_extent *ext, uint32_t gd_index)
{
	struct vmdk_gt_entry *e = c->buckets[bucket_of(c, ext, gd_index)];

	while (e && !(e->ext == ext && e->gd_index == gd_index))
		e = e->hnext;
	return e;
}

/* Drop unpinned tables from the cold end until the cache fits its bound. */
static void evict(struct vmdk_gt_cache *c)
{
	struct vmdk_gt_entry *e = c->lru_tail;

	while (c->used > c->limit && e) {
		struct vmdk_gt_entry *prev = e->prev;
		if (e->pins == 0) {
			struct vmdk_gt_entry **pp =
				&c->buckets[bucket_of(c, e->ext, e->gd_index)];
			while (*pp != e)
				pp = &(*pp)->hnext;
			*pp = e->hnext;
			lru_unlink(c, e);
			c->used -= e->bytes;
			free(e);
		}
		e = prev;
	}
}

/* Check every DATA entry of a GT lies inside e->src. */
int vmdk_gt_check(const struct vmdk_extent *e, const uint8_t *gt)
{
	for (uint32_t i = 0; i < e->gt_entries; i++) {
		uint64_t off;
		int st = vmdk_gte_decode(e, gt, i, &off);
		if (st < 0)
			return st;
		if (st == VMDK_GRAIN_DATA && off >= bsrc_length(e->src))
			return -EINVAL;
	}
	return 0;
}

/* Read table gd_index from the file: the primary one, or the redundant
   copy when the primary is missing or points outside the file. */
static int read_table(struct vmdk_extent *e, uint32_t gd_index, uint8_t *out)
{
	uint64_t off = vmdk_gd_load(e->gd, gd_index);
	uint64_t roff = e->rgd ? vmdk_gd_load(e->rgd, gd_index) : 0;
	int ret = bsrc_read_full(e->src, out, e->gt_bytes, off);

	if (ret == 0 && vmdk_gt_check(e, out) == 0)
		return 0;
	if (roff && roff != off) {
		int r2 = bsrc_read_full(e->src, out, e->gt_bytes, roff);
		if (r2 == 0 && vmdk_gt_check(e, out) == 0) {
			__atomic_store_n(&e->used_rgd, true, __ATOMIC_RELAXED);
			bdev_err_clear();
			return 0;
		}
		/* Both copies bad: reread the primary so the entry-level checks
		   in map() name the offending entry. */
		ret = bsrc_read_full(e->src, out, e->gt_bytes, off);
	}
	if (ret < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		return bdev_err(ret, "%s: grain table %" PRIu32 " at offset %" PRIu64
				" (%" PRIu64 " bytes) could not be read: %s", e->path,
				gd_index, off, e->gt_bytes, why);
	}
	return 0;
}

/* Pin the grain table gd_index of e; see vmdk.h. */
int vmdk_gt_cache_get(struct vmdk_gt_cache *c, struct bdev *b,
		      struct vmdk_extent *e, uint32_t gd_index,
		      const uint8_t **gt, struct vmdk_gt_entry **ref)
{
	struct vmdk_gt_entry *ent, *other;
	int ret;

	pthread_mutex_lock(&c->lock);
	ent = lookup(c, e, gd_index);
	if (ent) {
		ent->pins++;
		if (c->lru_head != ent) {
			lru_unlink(c, ent);
			lru_push_front(c, ent);
		}
		pthread_mutex_unlock(&c->lock);
		atomic_fetch_add_explicit(&b->stats.gt_hits, 1, memory_order_relaxed);
		*gt = ent->data;
		*ref = ent;
		return 0;
	}
	pthread_mutex_unlock(&c->lock);
	if (bdev_map_nowait())
		return -EWOULDBLOCK; /* the caller reads it off its thread */
	atomic_fetch_add_explicit(&b->stats.gt_misses, 1, memory_order_relaxed);

	ent = malloc(sizeof(*ent) + e->gt_bytes);
	if (!ent)
		return -ENOMEM;
	memset(ent, 0, sizeof(*ent));
	ent->ext = e;
	ent->gd_index = gd_index;
	ent->bytes = sizeof(*ent) + e->gt_bytes;
	ret = read_table(e, gd_index, ent->data);
	if (ret < 0) {
		free(ent);
		return ret;
	}

	pthread_mutex_lock(&c->lock);
	other = lookup(c, e, gd_index);
	if (other) {
		/* Another thread read it meanwhile: use theirs. */
		free(ent);
		ent = other;
		lru_unlink(c, ent);
	} else {
		unsigned bk = bucket_of(c, e, gd_index);
		ent->hnext = c->buckets[bk];
		c->buckets[bk] = ent;
		c->used += ent->bytes;
	}
	ent->pins++;
	lru_push_front(c, ent);
	evict(c);
	pthread_mutex_unlock(&c->lock);
	*gt = ent->data;
	*ref = ent;
	return 0;
}

/* Unpin a table obtained from vmdk_gt_cache_get. */
void vmdk_gt_cache_put(struct vmdk_gt_cache *c, struct vmdk_gt_entry *ref)
{
	pthread_mutex_lock(&c->lock);
	ref->pins--;
	if (ref->pins == 0 && c->used > c->limit)
		evict(c);
	pthread_mutex_unlock(&c->lock);
}

/* Mark a pinned table dirty; being dirty holds one more pin, so the table
   stays cached until vmdk_gt_cache_take_dirty hands it to a flush. */
void vmdk_gt_cache_mark_dirty(struct vmdk_gt_cache *c, struct vmdk_gt_entry *ref)
{
	pthread_mutex_lock(&c->lock);
	if (!ref->dirty) {
		ref->dirty = true;
		ref->pins++;
	}
	pthread_mutex_unlock(&c->lock);
}

/* Copies bytes of a table that writers may be changing, entry by entry:
   each an acquire load paired with the writer's release store of that
   entry, so every grain the copy points at was written before the copy. */
static void gt_copy(uint8_t *dst, const uint8_t *src, uint64_t bytes)
{
	for (uint64_t i = 0; i + 4 <= bytes; i += 4) {
		uint32_t v = __atomic_load_n((const uint32_t *)(const void *)
					     (src + i), __ATOMIC_ACQUIRE);

		memcpy(dst + i, &v, 4);
	}
}

/* Snapshot the dirty tables; see vmdk.h. Each returned ref keeps the pin
   its dirtiness held until the caller puts it. */
int vmdk_gt_cache_take_dirty(struct vmdk_gt_cache *c, struct vmdk_dirty_gt **out,
			     size_t *n)
{
	struct vmdk_dirty_gt *v = NULL;
	size_t cnt = 0, cap = 0;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	for (struct vmdk_gt_entry *e = c->lru_head; e; e = e->next) {
		if (!e->dirty)
			continue;
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct vmdk_dirty_gt *nv = realloc(v, nc * sizeof(*v));
			if (!nv) {
				ret = -ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		v[cnt].copy = malloc(e->bytes);
		if (!v[cnt].copy) {
			ret = -ENOMEM;
			break;
		}
		gt_copy(v[cnt].copy, e->data, e->ext->gt_bytes);
		/* the writer only ever names its extent through this entry */
		v[cnt].ext = (struct vmdk_extent *)e->ext;
		v[cnt].gd_index = e->gd_index;
		v[cnt].ref = e;
		e->dirty = false;
		cnt++;
	}
	pthread_mutex_unlock(&c->lock);
	*out = v;
	*n = cnt;
	return ret;
}
