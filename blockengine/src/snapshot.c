/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snapshot.c - live snapshots (freeze the top layer of an open image under
 * a new delta child) and commit (merge a delta child into its parent).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "create.h"
#include "internal.h"

#define COMMIT_CHUNK (1u << 20)

/* ---- trackers of writes in flight, and finalizing frozen layers --------- */

/* A new tracker of writes to top's top layer. */
struct bdev_wtrack *wtrack_new(struct bdev *top)
{
	struct bdev_wtrack *t = calloc(1, sizeof(*t));
	pthread_condattr_t ca;

	if (!t)
		return NULL;
	t->top = top;
	t->layer = top;
	pthread_mutex_init(&t->mu, NULL);
	pthread_mutex_init(&t->freeze_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	return t;
}

/* One write of t ended; see internal.h. Never waits long: others hold the
   mutex only to check the count or to signal.

   Once t is sealed, whoever waits for it idle (a live commit, a snapshot's
   finalizer) may free it as soon as it sees the count at 0 under t->mu; a
   write that dropped the count first and locked t->mu after would lock a
   freed mutex (ThreadSanitizer caught live_grow's commit doing that). So a
   write that finds t sealed drops the count and signals under t->mu. One
   that found it unsealed drops the count and touches t no more: if the seal
   came in between, the waiter sees the count at its next check (its timed
   wait), not by a signal. */
void wtrack_done(struct bdev_wtrack *t)
{
	if (!atomic_load(&t->sealed)) {
		atomic_fetch_sub(&t->inflight, 1);
		return;
	}
	pthread_mutex_lock(&t->mu);
	if (atomic_fetch_sub(&t->inflight, 1) == 1)
		pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

/* Flushes, finishes and shares the frozen layer of t (once), then wakes
   whoever waits for that. */
static void wtrack_finalize(struct bdev_wtrack *t)
{
	pthread_mutex_lock(&t->freeze_mu);
	if (!atomic_load(&t->finalized)) {
		t->final_ret = t->layer->fmt->freeze(t->layer);
		if (t->final_ret < 0)
			t->final_msg = strdup(bdev_errmsg());
		atomic_store(&t->finalized, true);
	}
	pthread_mutex_unlock(&t->freeze_mu);
	pthread_mutex_lock(&t->mu);
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

/* Waits (on t's condition, signalled by the completion of its last write
   on whichever thread) until no write to t's layer is in flight. */
static void wtrack_wait_idle(struct bdev_wtrack *t)
{
	pthread_mutex_lock(&t->mu);
	while (atomic_load(&t->inflight)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		/* the signal is what wakes us, but a write whose count dropped
		   as t was sealed sends none (see wtrack_done): look again
		   every 20 ms */
		ts.tv_nsec += 20000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	}
	pthread_mutex_unlock(&t->mu);
}

/* The thread a snapshot leaves behind when writes to the frozen layer
   were in flight: it finalizes the layer after the last one ends. */
static void *wtrack_finalizer(void *arg)
{
	struct bdev_wtrack *t = arg;

	wtrack_wait_idle(t);
	wtrack_finalize(t);
	return NULL;
}

/* Flushes b's frozen layers not finalized yet; see internal.h. */
int wtrack_flush_frozen(struct bdev *b)
{
	int ret = 0;

	pthread_rwlock_rdlock(&b->top_lock);
	for (struct bdev_wtrack *t = b->wtrack ? b->wtrack->next : NULL;
	     t && !ret; t = t->next) {
		if (atomic_load(&t->finalized))
			continue;
		pthread_mutex_lock(&t->freeze_mu);
		if (!atomic_load(&t->finalized) && t->layer->fmt->flush)
			ret = t->layer->fmt->flush(t->layer);
		pthread_mutex_unlock(&t->freeze_mu);
	}
	pthread_rwlock_unlock(&b->top_lock);
	return ret;
}

/* Waits until every layer a snapshot of b froze is finalized; see
   blockengine.h. */
int bdev_snapshot_wait(struct bdev *b)
{
	int ret = 0;

	bdev_err_clear();
	if (!b || !b->wtrack)
		return bdev_err(-EINVAL, "bdev_snapshot_wait: no image");
	pthread_rwlock_rdlock(&b->top_lock);
	for (struct bdev_wtrack *t = b->wtrack->next; t; t = t->next) {
		pthread_mutex_lock(&t->mu);
		while (!atomic_load(&t->finalized))
			pthread_cond_wait(&t->cv, &t->mu);
		pthread_mutex_unlock(&t->mu);
		if (t->final_ret < 0 && !ret)
			ret = bdev_err(t->final_ret, "%s", t->final_msg ?
				       t->final_msg : "");
	}
	pthread_rwlock_unlock(&b->top_lock);
	return ret;
}

/* Waits for the finalizers of b's frozen layers and frees the trackers;
   returns the first finalizing failure. */
int wtrack_close_all(struct bdev *b)
{
	struct bdev_wtrack *t = b->wtrack;
	int ret = 0;

	b->wtrack = NULL;
	while (t) {
		struct bdev_wtrack *next = t->next;
		if (t->finalizer_started)
			pthread_join(t->finalizer, NULL);
		else if (atomic_load(&t->sealed) && !atomic_load(&t->finalized))
			wtrack_finalize(t);
		if (t->final_ret < 0 && !ret)
			ret = bdev_err(t->final_ret, "%s", t->final_msg ?
				       t->final_msg : "");
		free(t->final_msg);
		pthread_mutex_destroy(&t->mu);
		pthread_mutex_destroy(&t->freeze_mu);
		pthread_cond_destroy(&t->cv);
		free(t);
		t = next;
	}
	return ret;
}

/* Claims b for one chain operation; see internal.h. */
int chain_op_begin(struct bdev *b, enum chain_op op, const char *what)
{
	static const char *const running[] = {
		[CHAIN_SNAPSHOT] = "a snapshot of %s is being taken",
		[CHAIN_COMMIT] = "a live commit of %s is running",
		[CHAIN_GROW] = "%s is being grown",
	};
	int cur = CHAIN_NONE;
	char why[600];

	if (atomic_compare_exchange_strong(&b->chain_op, &cur, (int)op))
		return 0;
	pthread_rwlock_rdlock(&b->top_lock);
	snprintf(why, sizeof(why), running[cur], b->filename);
	pthread_rwlock_unlock(&b->top_lock);
	return bdev_err(-EBUSY, "cannot %s: %s; try again once it has returned",
			what, why);
}

void chain_op_end(struct bdev *b)
{
	atomic_store(&b->chain_op, CHAIN_NONE);
}

/* fsync(2) the folder holding path, so that its new entry is durable. */
static int sync_parent_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) :
			    strdup(".");
	int fd, ret = 0;

	if (!dir)
		return bdev_err(-ENOMEM, "%s: out of memory", path);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		ret = bdev_err(-errno, "%s: cannot sync its folder %s: %s", path,
			       dir, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(dir);
	return ret;
}

/* b's top becomes layer l's driver state, with backing below it: the one
   switch both bdev_snapshot (to the new child) and bdev_commit_live (back
   to the parent) make while holding the top lock exclusively. */
static void become_layer(struct bdev *b, const struct bdev *l,
			 struct bdev *backing)
{
	b->fmt = l->fmt;
	b->priv = l->priv;
	b->filename = l->filename;
	b->info = l->info;
	b->opts = l->opts;
	b->opts.flags &= ~(uint32_t)BDEV_O_NO_BACKING;
	b->backing = backing;
	b->gcache = l->gcache;
}

/* One attempt at bdev_snapshot: -EAGAIN (the child removed again) when a
   first write gave the top a new CID while the child was being made. */
static int snapshot_try(struct bdev *b, const char *child_path)
{
	struct bdev_create_opts co = { 0 };
	struct bdev_open_opts oo;
	struct bdev *c, *old;
	struct bdev_wtrack *nt, *ot;
	int ret;

	bdev_err_clear();
	if (!b || !child_path)
		return bdev_err(-EINVAL, "bdev_snapshot: no image or child path");
	if (b->info.read_only)
		return bdev_err(-EROFS, "%s: image is open read-only; a snapshot "
				"needs it open for writing", b->filename);
	if (!b->fmt->freeze || !b->info.has_cid)
		return bdev_err(-ENOTSUP, "%s: live snapshots need a layer that "
				"can be frozen and has a CID for its child to "
				"name (a VMDK with a descriptor CID; format %s)",
				b->filename, b->fmt->name);
	/* The top's CID is left alone: a frozen layer's content does not
	   change, and VMware changes a CID only when content does. Rewriting
	   it would break every delta already made on this layer. */
	co.format = "vmdk";
	co.subformat = "monolithicSparse";
	co.size = b->info.size;
	co.backing = b->filename;
	/* whole or not at all: a kill while it is made leaves no child */
	ret = create_whole(child_path, &co);
	if (ret < 0)
		return ret;
	ret = sync_parent_dir(child_path);
	if (ret < 0)
		goto err_unlink;
	oo = b->opts;
	oo.flags = (oo.flags | BDEV_O_RDWR | BDEV_O_NO_BACKING) &
		   ~(uint32_t)BDEV_O_SHARE;
	ret = bdev_open_layer(child_path, NULL, &oo, &c);
	if (ret < 0)
		goto err_unlink;
	/* finalizers of earlier snapshots that are done: join them now, so a
	   disk snapshotted for months does not keep their threads */
	for (struct bdev_wtrack *t = b->wtrack->next; t; t = t->next)
		if (t->finalizer_started && atomic_load(&t->finalized)) {
			pthread_join(t->finalizer, NULL);
			t->finalizer_started = false;
		}
	old = calloc(1, sizeof(*old));
	nt = wtrack_new(b);
	if (!old || !nt) {
		free(old);
		free(nt);
		ret = bdev_err(-ENOMEM, "%s: out of memory", child_path);
		goto err_close_child;
	}

	/* The switch: no I/O and no waiting for requests while the lock is
	   held, only for submissions already mapping (short). Writes in
	   flight to the old top complete into it, counted by its tracker;
	   writes queued from now on go to the child. */
	pthread_rwlock_wrlock(&b->top_lock);
	if (c->info.parent_cid != b->info.cid) {
		/* a first write changed the top's CID after the child read it */
		ret = bdev_err(-EAGAIN, "%s: the image's CID changed to %08"
			       PRIx32 " while the snapshot %s was made with "
			       "parentCID %08" PRIx32 "; try again", b->filename,
			       b->info.cid, child_path, c->info.parent_cid);
		pthread_rwlock_unlock(&b->top_lock);
		free(old);
		free(nt);
		goto err_close_child;
	}
	/* old takes over b's layer; b becomes the child, same handle */
	old->fmt = b->fmt;
	old->priv = b->priv;
	old->filename = b->filename;
	old->info = b->info;
	old->opts = b->opts;
	old->backing = b->backing;
	old->gcache = b->gcache;
	pthread_rwlock_init(&old->top_lock, NULL);
	pthread_mutex_init(&old->begin_lock, NULL);
	pthread_mutex_init(&old->info_lock, NULL);
	atomic_store(&old->write_begun, atomic_load(&b->write_begun));
	atomic_store(&old->stats.gt_hits, atomic_load(&b->stats.gt_hits));
	atomic_store(&old->stats.gt_misses, atomic_load(&b->stats.gt_misses));
	atomic_store(&old->stats.grain_hits, atomic_load(&b->stats.grain_hits));
	atomic_store(&old->stats.grain_misses, atomic_load(&b->stats.grain_misses));
	atomic_store(&old->stats.inflated, atomic_load(&b->stats.inflated));
	atomic_store(&old->stats.readahead, atomic_load(&b->stats.readahead));
	ot = b->wtrack;
	ot->layer = old;
	atomic_store(&ot->sealed, true);
	nt->next = ot;

	become_layer(b, c, old);
	b->wtrack = nt;
	atomic_store(&b->write_begun, false);
	atomic_store(&b->stats.gt_hits, 0);
	atomic_store(&b->stats.gt_misses, 0);
	atomic_store(&b->stats.grain_hits, 0);
	atomic_store(&b->stats.grain_misses, 0);
	atomic_store(&b->stats.inflated, 0);
	atomic_store(&b->stats.readahead, 0);
	pthread_rwlock_unlock(&b->top_lock);

	wtrack_close_all(c); /* the child's own, never used */
	pthread_rwlock_destroy(&c->top_lock);
	pthread_mutex_destroy(&c->begin_lock);
	pthread_mutex_destroy(&c->info_lock);
	free(c);
	if (atomic_load(&ot->inflight) == 0) {
		/* nothing in flight: make the frozen layer durable, clean
		   and shared before returning */
		wtrack_finalize(ot);
	} else if (pthread_create(&ot->finalizer, NULL, wtrack_finalizer,
				  ot) == 0) {
		/* the last write to complete, on whichever queue, wakes it */
		ot->finalizer_started = true;
	} else {
		wtrack_wait_idle(ot);
		wtrack_finalize(ot);
	}
	/* the change map follows the disk: it moves next to the new top */
	ret = b->ctk ? ctk_follow(b, b->filename) : 0;
	if (ret == 0 && atomic_load(&ot->finalized) && ot->final_ret < 0)
		ret = bdev_err(ot->final_ret, "%s: the snapshot %s is in "
			       "place, but finishing the frozen layer failed: "
			       "%s", old->filename, child_path,
			       ot->final_msg ? ot->final_msg : "");
	return ret;

err_close_child: {
		char why[512];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		bdev_close(c);
		bdev_err(ret, "%s", why);
	}
err_unlink:
	unlink(child_path);
	return ret;
}

/* Freeze b's top layer under a new delta child at child_path; see
   blockengine.h. Excludes bdev_commit_live and bdev_grow on b. */
int bdev_snapshot(struct bdev *b, const char *child_path)
{
	int ret = -EAGAIN;

	bdev_err_clear();
	if (!b || !child_path)
		return bdev_err(-EINVAL, "bdev_snapshot: no image or child path");
	if (chain_op_begin(b, CHAIN_SNAPSHOT, "snapshot") < 0)
		return -EBUSY;
	/* A top's CID changes once per session, at its first write; if that
	   write lands while the child is made, the child's parentCID is
	   stale and the child is dropped. The next attempt reads the CID
	   that now stays, so one retry is enough; three bound it anyway. */
	for (int tries = 0; tries < 3 && ret == -EAGAIN; tries++)
		ret = snapshot_try(b, child_path);
	chain_op_end(b);
	return ret;
}

/* The parent named by child's parentFileNameHint, resolved against the
   child's folder (malloc'd). */
static char *parent_path_of(const char *child, const char *hint)
{
	const char *slash = strrchr(child, '/');
	size_t dl = slash && hint[0] != '/' ? (size_t)(slash - child) + 1 : 0;
	char *p = malloc(dl + strlen(hint) + 1);

	if (!p)
		return NULL;
	memcpy(p, child, dl);
	strcpy(p + dl, hint);
	return p;
}

/* Copies every grain child holds (data or zeros) into p. */
static int merge_into(struct bdev *c, struct bdev *p)
{
	uint64_t off = 0, size = c->info.size;
	uint8_t *buf = malloc(COMMIT_CHUNK);
	int ret = 0;

	if (!buf)
		return bdev_err(-ENOMEM, "%s: out of memory", c->filename);
	while (off < size && ret == 0) {
		uint64_t pnum;
		int st = bdev_block_status(c, off, size - off, &pnum);

		if (st < 0) {
			ret = st;
			break;
		}
		if (st == BDEV_STATUS_ZERO) {
			ret = bdev_write_zeroes(p, off, pnum);
		} else if (st == BDEV_STATUS_DATA) {
			for (uint64_t d = 0; d < pnum && ret == 0;) {
				size_t n = pnum - d < COMMIT_CHUNK ?
					   (size_t)(pnum - d) : COMMIT_CHUNK;
				ret = bdev_pread(c, buf, n, off + d);
				if (ret == 0)
					ret = bdev_pwrite(p, buf, n, off + d);
				d += n;
			}
		}
		off += pnum;
	}
	free(buf);
	return ret;
}

/* Merge the delta at child_path into its parent, then delete it; see
   blockengine.h. */
int bdev_commit(const char *child_path)
{
	struct bdev_open_opts co = { .flags = BDEV_O_NO_BACKING };
	struct bdev_open_opts po = { .flags = BDEV_O_RDWR };
	struct bdev *c, *p = NULL;
	char *ppath = NULL, **files = NULL;
	unsigned nfiles = 0;
	bool deleted = false, kept_cid = false;
	int ret;

	bdev_err_clear();
	if (!child_path)
		return bdev_err(-EINVAL, "bdev_commit: no child path");
	ret = bdev_open(child_path, &co, &c);
	if (ret < 0)
		return ret;
	if (!c->info.parent_hint) {
		ret = bdev_err(-EINVAL, "%s: not a delta disk (no "
			       "parentFileNameHint): there is nothing to commit "
			       "it into", child_path);
		goto out_close_child;
	}
	ppath = parent_path_of(child_path, c->info.parent_hint);
	files = calloc(c->info.extent_count + 1, sizeof(*files));
	if (!ppath || !files) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", child_path);
		goto out_close_child;
	}
	for (unsigned i = 0; i < c->info.extent_count; i++) {
		struct bdev_extent_info ei;
		if (bdev_get_extent(c, i, &ei) == 0 && ei.filename &&
		    strcmp(ei.filename, child_path) != 0)
			files[nfiles++] = strdup(ei.filename);
	}
	ret = bdev_open(ppath, &po, &p);
	if (ret < 0) {
		char why[512];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		ret = bdev_err(ret, "%s: cannot open its parent %s for writing: %s",
			       child_path, ppath, why);
		goto out_close_child;
	}
	if (p->info.size < c->info.size) {
		/* a delta grown past its parent: the parent grows first (the
		   chain reads the same: the new part is zeros either way) */
		ret = bdev_grow(p, c->info.size);
		if (ret < 0) {
			char why[512];
			snprintf(why, sizeof(why), "%s", bdev_errmsg());
			ret = bdev_err(ret, "%s: %" PRIu64 " bytes, larger than "
				       "its parent %s (%" PRIu64 " bytes), which "
				       "cannot grow to take it: %s", child_path,
				       c->info.size, ppath, p->info.size, why);
			goto out_close_parent;
		}
	}
	if (p->fmt->thaw) {
		/* the parent keeps its CID while the child is there: a commit
		   cut short leaves a chain that still opens (the child covers
		   every grain the commit changed); it gets a new one once the
		   child is gone */
		ret = p->fmt->thaw(p);
		if (ret == 0) {
			atomic_store(&p->write_begun, true);
			kept_cid = true;
		} else if (ret == -ENOTSUP) {
			/* a stream-optimized parent: the CID changes at the
			   first write, as before */
			bdev_err_clear();
			ret = 0;
		} else {
			goto out_close_parent;
		}
	}
	ret = merge_into(c, p);
	if (ret == 0)
		ret = bdev_flush(p);
	if (ret == 0) {
		/* the parent is durable: the child may go (descriptor first,
		   so an interrupted delete never leaves a half image) */
		if (unlink(child_path) < 0)
			ret = bdev_err(-errno, "%s: merged into %s, but cannot be "
				       "deleted: %s", child_path, ppath,
				       strerror(errno));
		for (unsigned i = 0; ret == 0 && i < nfiles; i++)
			unlink(files[i]);
		if (ret == 0)
			ret = sync_parent_dir(child_path);
		deleted = ret == 0;
	}
	if (ret == 0 && kept_cid) {
		atomic_store(&p->write_begun, false);
		ret = bdev_begin_write_once(p);
	}
out_close_parent: {
		int r = bdev_close(p);
		if (ret == 0)
			ret = r;
	}
out_close_child:
	if (ret < 0) {
		char why[512];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		bdev_close(c);
		bdev_err(ret, "%s", why);
	} else {
		bdev_close(c);
	}
	if (deleted)
		ctk_commit_follow(child_path, ppath);
	for (unsigned i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	free(ppath);
	return ret;
}

/* ---- live commit --------------------------------------------------------
 *
 * bdev_commit_live copies the child's data into its parent while queues
 * keep writing the child. Every write that completes into the child from
 * the start on sets its chunks in a bitmap (commit_note, on the thread that
 * completes it, under top_lock shared). The first pass copies whatever the
 * child holds; later passes take the bits (a word at a time, atomically)
 * and copy those chunks again, until a pass finds little. Then, holding
 * top_lock exclusive (no new submissions, no completion can note a chunk),
 * the last chunks are copied, the parent flushed, the child's files
 * deleted, and the handle's top switched to the parent. Writes still in
 * flight to the child are written again into the parent when they end
 * (the sealed-tracker path a snapshot uses). A crash before the delete
 * leaves the child on top and the parent's CID unchanged (the chain shows
 * the same data): commit again. After it the parent alone is the disk.
 */

#define COMMIT_CHUNK_SHIFT 16           /* 64 KiB chunks in the bitmap */
#define COMMIT_SMALL (1u << 20)         /* a pass this small ends the copy */
#define COMMIT_MAX_PASSES 32

struct live_commit {
	uint64_t nbits;
	atomic_ullong *bits;
};

void commit_note(struct bdev *top, struct bdev_wtrack *wt, uint64_t off,
		 uint64_t len)
{
	struct live_commit *lc;

	if (!len)
		return;
	pthread_rwlock_rdlock(&top->top_lock);
	lc = atomic_load(&top->commit);
	if (lc && wt == top->wtrack) {
		uint64_t first = off >> COMMIT_CHUNK_SHIFT;
		uint64_t last = (off + len - 1) >> COMMIT_CHUNK_SHIFT;
		for (uint64_t i = first; i <= last && i < lc->nbits; i++)
			atomic_fetch_or(&lc->bits[i / 64], 1ull << (i % 64));
	}
	pthread_rwlock_unlock(&top->top_lock);
}

/* Copies [off, off + len) from src (reading through its chain) into dst. */
static int copy_range(struct bdev *src, struct bdev *dst, uint8_t *buf,
		      uint64_t off, uint64_t len)
{
	int ret = 0;

	for (uint64_t d = 0; d < len && ret == 0;) {
		size_t n = len - d < COMMIT_CHUNK ? (size_t)(len - d) :
			   COMMIT_CHUNK;
		ret = bdev_pread(src, buf, n, off + d);
		if (ret == 0)
			ret = bdev_pwrite(dst, buf, n, off + d);
		d += n;
	}
	return ret;
}

/* Copies the chunks whose bits are set (clearing them) from src to dst;
   *copied gets the bytes. */
static int copy_dirty(struct live_commit *lc, struct bdev *src,
		      struct bdev *dst, uint8_t *buf, uint64_t size,
		      uint64_t *copied)
{
	*copied = 0;
	for (uint64_t w = 0; w < (lc->nbits + 63) / 64; w++) {
		uint64_t bits = atomic_exchange(&lc->bits[w], 0);

		while (bits) {
			unsigned i = (unsigned)__builtin_ctzll(bits);
			uint64_t off = (w * 64 + i) << COMMIT_CHUNK_SHIFT;
			uint64_t len = 1ull << COMMIT_CHUNK_SHIFT;
			int ret;

			bits &= bits - 1;
			if (off >= size)
				continue;
			if (len > size - off)
				len = size - off;
			ret = copy_range(src, dst, buf, off, len);
			if (ret < 0) {
				/* copy it again next time */
				atomic_fetch_or(&lc->bits[w], 1ull << i);
				return ret;
			}
			*copied += len;
		}
	}
	return 0;
}

/* The first pass: everything b's top layer (the child) holds. */
static int copy_child(struct bdev *b, struct bdev *p, uint8_t *buf,
		      uint64_t size)
{
	uint64_t off = 0;
	int ret = 0;

	while (off < size && ret == 0) {
		uint64_t pnum;
		unsigned depth;
		int st = bdev_block_status_depth(b, off, size - off, &pnum,
						 &depth);

		if (st < 0)
			return st;
		if (depth == 1 && st == BDEV_STATUS_ZERO)
			ret = bdev_write_zeroes(p, off, pnum);
		else if (depth == 1 && st == BDEV_STATUS_DATA)
			ret = copy_range(b, p, buf, off, pnum);
		off += pnum;
	}
	return ret;
}

/* Frees a tracker nobody uses any more. */
static void wtrack_free(struct bdev_wtrack *t)
{
	if (t->finalizer_started)
		pthread_join(t->finalizer, NULL);
	free(t->final_msg);
	pthread_mutex_destroy(&t->mu);
	pthread_mutex_destroy(&t->freeze_mu);
	pthread_cond_destroy(&t->cv);
	free(t);
}

static int commit_live(struct bdev *b)
{
	struct bdev *p, *c = NULL;
	struct bdev_wtrack *ot = NULL, **otp = NULL, *ct, *nt = NULL;
	struct live_commit lc = { 0 };
	char **files = NULL;
	unsigned nfiles = 0;
	uint8_t *buf = NULL;
	uint64_t size, copied;
	int ret;

	if (b->info.read_only)
		return bdev_err(-EROFS, "%s: image is open read-only; a commit "
				"needs it open for writing", b->filename);
	p = b->backing;
	if (!p)
		return bdev_err(-EINVAL, "%s: has no parent to commit into",
				b->filename);
	/* the parent must be the layer a snapshot of this handle froze */
	for (otp = &b->wtrack->next; *otp; otp = &(*otp)->next)
		if ((*otp)->layer == p) {
			ot = *otp;
			break;
		}
	if (!ot || !p->fmt->thaw)
		return bdev_err(-ENOTSUP, "%s: its parent %s was not frozen by "
				"bdev_snapshot on this handle; commit it closed "
				"with bdev_commit", b->filename, p->filename);
	ret = bdev_snapshot_wait(b);
	if (ret < 0)
		return ret;
	size = b->info.size;
	if (p->info.size < size && !p->fmt->grow)
		return bdev_err(-ENOTSUP, "%s: %" PRIu64 " bytes, larger than its "
				"parent %s (%" PRIu64 " bytes), which cannot grow "
				"to take it (format %s)", b->filename, size,
				p->filename, p->info.size, p->fmt->name);
	files = calloc(b->info.extent_count + 1, sizeof(*files));
	lc.nbits = (size + (1ull << COMMIT_CHUNK_SHIFT) - 1) >>
		   COMMIT_CHUNK_SHIFT;
	lc.bits = calloc((size_t)((lc.nbits + 63) / 64) + 1, sizeof(*lc.bits));
	buf = malloc(COMMIT_CHUNK);
	c = calloc(1, sizeof(*c));
	nt = wtrack_new(b);
	if (!files || !lc.bits || !buf || !c || !nt) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", b->filename);
		goto out;
	}
	files[nfiles++] = strdup(b->filename);
	for (unsigned i = 0; i < b->info.extent_count; i++) {
		struct bdev_extent_info ei;
		if (bdev_get_extent(b, i, &ei) == 0 && ei.filename &&
		    strcmp(ei.filename, b->filename) != 0)
			files[nfiles++] = strdup(ei.filename);
	}
	for (unsigned i = 0; i < nfiles; i++)
		if (!files[i]) {
			ret = bdev_err(-ENOMEM, "%s: out of memory", b->filename);
			goto out;
		}
	ret = p->fmt->thaw(p);
	if (ret < 0)
		goto out;
	if (p->info.size < size) {
		/* a child grown past its parent (bdev_grow): the parent grows
		   first, holding the handle's top lock too, since readers of
		   the chain map the parent under that one. The chain reads the
		   same (the new part is zeros either way), so a crash after
		   this leaves a valid chain. */
		pthread_rwlock_wrlock(&b->top_lock);
		pthread_rwlock_wrlock(&p->top_lock);
		ret = p->fmt->grow(p, size);
		pthread_rwlock_unlock(&p->top_lock);
		pthread_rwlock_unlock(&b->top_lock);
		if (ret < 0)
			goto out;
	}
	if (!p->wtrack) {
		p->wtrack = wtrack_new(p);
		if (!p->wtrack) {
			ret = bdev_err(-ENOMEM, "%s: out of memory", p->filename);
			goto out;
		}
	}

	/* background passes: the child stays on top, writes keep going */
	atomic_store(&b->commit, &lc);
	ret = copy_child(b, p, buf, size);
	for (int pass = 0; ret == 0 && pass < COMMIT_MAX_PASSES; pass++) {
		ret = copy_dirty(&lc, b, p, buf, size, &copied);
		if (copied <= COMMIT_SMALL)
			break;
	}
	if (ret < 0)
		goto out_stop;

	/* the switch */
	pthread_rwlock_wrlock(&b->top_lock);
	c->fmt = b->fmt;
	c->priv = b->priv;
	c->filename = b->filename;
	c->info = b->info;
	c->opts = b->opts;
	c->backing = p;
	c->gcache = b->gcache;
	pthread_rwlock_init(&c->top_lock, NULL);
	pthread_mutex_init(&c->begin_lock, NULL);
	pthread_mutex_init(&c->info_lock, NULL);
	atomic_store(&c->write_begun, atomic_load(&b->write_begun));
	ret = copy_dirty(&lc, c, p, buf, size, &copied);
	if (ret == 0)
		ret = bdev_flush(p);
	/* the parent holds everything durably: the child may go, its
	   descriptor first (an interrupted delete leaves no half image) */
	for (unsigned i = 0; ret == 0 && i < nfiles; i++)
		if (unlink(files[i]) < 0 && (i == 0 || errno != ENOENT))
			ret = bdev_err(-errno, "%s: merged into %s, but cannot "
				       "be deleted: %s", files[i], p->filename,
				       strerror(errno));
	if (ret == 0)
		ret = sync_parent_dir(files[0]);
	if (ret < 0) {
		atomic_store(&b->commit, NULL);
		pthread_rwlock_unlock(&b->top_lock);
		pthread_rwlock_destroy(&c->top_lock);
		pthread_mutex_destroy(&c->begin_lock);
		pthread_mutex_destroy(&c->info_lock);
		free(c);
		c = NULL;
		goto out;
	}
	ct = b->wtrack;
	ct->layer = c;
	atomic_store(&ct->sealed, true);
	*otp = ot->next;          /* the parent is no longer frozen */
	nt->next = ct->next;
	ct->next = NULL;
	become_layer(b, p, p->backing);
	b->wtrack = nt;
	nt = NULL;
	/* the next write gives the parent a new CID: its content changed */
	atomic_store(&b->write_begun, false);
	atomic_store(&b->stats.gt_hits, 0);
	atomic_store(&b->stats.gt_misses, 0);
	atomic_store(&b->stats.grain_hits, 0);
	atomic_store(&b->stats.grain_misses, 0);
	atomic_store(&b->stats.inflated, 0);
	atomic_store(&b->stats.readahead, 0);
	atomic_store(&b->commit, NULL);
	pthread_rwlock_unlock(&b->top_lock);

	/* writes that were in flight to the child are written again into the
	   parent as they end; then the child layer is done with */
	wtrack_wait_idle(ct);
	wtrack_free(ct);
	wtrack_free(ot);
	c->backing = NULL;
	c->retired = b->retired;
	b->retired = c;
	c = NULL;
	/* p's fields belong to b now: keep only its shell, which reads in
	   flight may still name, until close */
	wtrack_close_all(p);
	p->fmt = NULL;
	p->priv = NULL;
	p->filename = NULL;
	p->backing = NULL;
	p->gcache = NULL;
	p->retired = b->retired;
	b->retired = p;
	ret = b->ctk ? ctk_follow(b, b->filename) : 0;
	goto out;

out_stop:
	atomic_store(&b->commit, NULL);
	/* wait for completions that may still be noting into lc */
	pthread_rwlock_wrlock(&b->top_lock);
	pthread_rwlock_unlock(&b->top_lock);
out:
	if (c)
		free(c);
	if (nt)
		wtrack_free(nt);
	for (unsigned i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	free(buf);
	free(lc.bits);
	return ret;
}

/* Merges b's top into its parent while b stays in use; see blockengine.h.
   Excludes bdev_snapshot and bdev_grow on b while it runs. */
int bdev_commit_live(struct bdev *b)
{
	int ret;

	bdev_err_clear();
	if (!b || !b->wtrack)
		return bdev_err(-EINVAL, "bdev_commit_live: no image");
	if (chain_op_begin(b, CHAIN_COMMIT, "commit") < 0)
		return -EBUSY;
	ret = commit_live(b);
	chain_op_end(b);
	return ret;
}
