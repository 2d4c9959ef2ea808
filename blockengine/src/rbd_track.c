/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rbd_track.c - checkpoints of a disk on an RBD image, kept by RBD
 * itself instead of a sidecar file: checkpoint NAME is the image's
 * snapshot ovk-ckpt-NAME (so `rbd snap ls` shows what ovk made, and
 * rbd:POOL/IMAGE@ovk-ckpt-NAME opens the disk as it was), and what changed
 * since it is what rbd_diff_iterate2 reports between that snapshot and
 * the image's head (or the snapshot the source opened).
 *
 * What changed is asked for a window of up to 1 GiB at a time and kept
 * until the source's write_gen moves (a write through this handle ended)
 * or another window or checkpoint is asked about, so a client walking
 * the disk run by run costs one diff per window. When the image has a
 * valid fast-diff object map, a whole-object diff (the object maps only,
 * no object is read) first finds the objects that changed, and only those
 * are asked for their exact extents (whole_object=false, from each
 * object's snapshot overlap); without fast-diff the exact diff asks every
 * object of the window. RBD reports every byte written since the
 * snapshot, by anyone (an object created since counts from its start),
 * so nothing is missed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbd_i.h"

#define RBD_DIFF_WINDOW (1ull << 30)

/* The snapshot's name for checkpoint name (malloc'd), or NULL. */
static char *snap_name(const char *name)
{
	size_t n = strlen(name);
	char *p = malloc(sizeof(RBD_CKPT_PREFIX) + n);

	if (p) {
		memcpy(p, RBD_CKPT_PREFIX, sizeof(RBD_CKPT_PREFIX) - 1);
		memcpy(p + sizeof(RBD_CKPT_PREFIX) - 1, name, n + 1);
	}
	return p;
}

static int snap_cmp(const void *a, const void *b)
{
	const rbd_snap_info_t *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static int names_push(struct rbd_src *r, const char *name)
{
	char *dup;

	if (r->n == r->cap) {
		unsigned cap = r->cap ? 2 * r->cap : 8;
		char **v = realloc(r->names, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		r->names = v;
		r->cap = cap;
	}
	dup = strdup(name);
	if (!dup)
		return -ENOMEM;
	r->names[r->n++] = dup;
	return 0;
}

/* Reads the image's checkpoint snapshots, oldest first, once. Caller
   holds r->mu. */
static int track_list(struct bsrc *s, struct rbd_src *r)
{
	rbd_snap_info_t *snaps;
	int max = 16, ret;

	if (r->listed)
		return 0;
	for (;;) {
		snaps = calloc((size_t)max, sizeof(*snaps));
		if (!snaps)
			return bdev_err(-ENOMEM, "%s: out of memory", s->name);
		ret = p_rbd_snap_list(r->c.img, snaps, &max);
		if (ret != -ERANGE)
			break;
		free(snaps);
	}
	if (ret < 0) {
		free(snaps);
		return bdev_err(ret, "%s: cannot list the image's snapshots: %s",
				s->name, strerror(-ret));
	}
	qsort(snaps, (size_t)ret, sizeof(*snaps), snap_cmp);
	for (int i = 0; i < ret; i++) {
		const char *n = snaps[i].name;

		if (!n || strncmp(n, RBD_CKPT_PREFIX,
				  sizeof(RBD_CKPT_PREFIX) - 1) ||
		    !n[sizeof(RBD_CKPT_PREFIX) - 1])
			continue;
		if (names_push(r, n + sizeof(RBD_CKPT_PREFIX) - 1) < 0) {
			p_rbd_snap_list_end(snaps);
			free(snaps);
			rbd_track_free(r);
			return bdev_err(-ENOMEM, "%s: out of memory", s->name);
		}
	}
	p_rbd_snap_list_end(snaps);
	free(snaps);
	r->listed = true;
	return 0;
}

static int find(const struct rbd_src *r, const char *name)
{
	for (unsigned i = 0; i < r->n; i++)
		if (!strcmp(r->names[i], name))
			return (int)i;
	return -1;
}

static void window_clear(struct rbd_diff_window *w)
{
	free(w->since);
	free(w->ext);
	memset(w, 0, sizeof(*w));
}

void rbd_track_free(struct rbd_src *r)
{
	for (unsigned i = 0; i < r->n; i++)
		free(r->names[i]);
	free(r->names);
	r->names = NULL;
	r->n = r->cap = 0;
	r->listed = false;
	window_clear(&r->win);
}

static int track_create(struct bsrc *s, const char *name)
{
	struct rbd_src *r = s->priv;
	char *sn;
	int ret;

	if (strpbrk(name, "/@:"))
		return bdev_err(-EINVAL, "%s: checkpoint name \"%s\" holds '/', "
				"'@' or ':'; on an RBD image it becomes snapshot "
				RBD_CKPT_PREFIX "NAME, and rbd: names use those",
				s->name, name);
	sn = snap_name(name);
	if (!sn)
		return bdev_err(-ENOMEM, "%s: out of memory", s->name);
	pthread_mutex_lock(&r->mu);
	ret = track_list(s, r);
	if (ret == 0 && find(r, name) >= 0)
		ret = bdev_err(-EEXIST, "%s: checkpoint %s exists already "
			       "(snapshot %s)", s->name, name, sn);
	pthread_mutex_unlock(&r->mu);
	if (ret < 0)
		goto out;
	/* librbd flushes the image's writes first: what completed before
	   is in the snapshot, what completes after is changed since it */
	ret = p_rbd_snap_create(r->c.img, sn);
	if (ret < 0) {
		ret = bdev_err(ret, "%s: cannot create snapshot %s for "
			       "checkpoint %s: %s", s->name, sn, name,
			       strerror(-ret));
		goto out;
	}
	pthread_mutex_lock(&r->mu);
	if (find(r, name) < 0 && names_push(r, name) < 0)
		ret = bdev_err(-ENOMEM, "%s: out of memory", s->name);
	pthread_mutex_unlock(&r->mu);
out:
	free(sn);
	return ret;
}

static int track_remove(struct bsrc *s, const char *name)
{
	struct rbd_src *r = s->priv;
	char *sn = snap_name(name);
	int i, ret;

	if (!sn)
		return bdev_err(-ENOMEM, "%s: out of memory", s->name);
	pthread_mutex_lock(&r->mu);
	ret = track_list(s, r);
	if (ret == 0 && find(r, name) < 0)
		ret = bdev_err(-ENOENT, "%s: no checkpoint %s (no snapshot %s)",
			       s->name, name, sn);
	pthread_mutex_unlock(&r->mu);
	if (ret < 0)
		goto out;
	ret = p_rbd_snap_remove(r->c.img, sn);
	if (ret < 0 && ret != -ENOENT) {
		ret = bdev_err(ret, "%s: cannot remove snapshot %s of checkpoint "
			       "%s: %s%s", s->name, sn, name, strerror(-ret),
			       ret == -EBUSY ? " (protected, or cloned from: "
			       "unprotect it or flatten its clones)" : "");
		goto out;
	}
	ret = 0;
	pthread_mutex_lock(&r->mu);
	i = find(r, name);
	if (i >= 0) {
		free(r->names[i]);
		memmove(&r->names[i], &r->names[i + 1],
			(r->n - (unsigned)i - 1) * sizeof(r->names[0]));
		r->n--;
	}
	if (r->win.since && !strcmp(r->win.since, name))
		window_clear(&r->win);
	pthread_mutex_unlock(&r->mu);
out:
	free(sn);
	return ret;
}

static int track_get(struct bsrc *s, unsigned index, const char **name)
{
	struct rbd_src *r = s->priv;
	int ret;

	pthread_mutex_lock(&r->mu);
	ret = track_list(s, r);
	if (ret == 0) {
		if (index < r->n)
			*name = r->names[index];
		else
			ret = -ENOENT;
	}
	pthread_mutex_unlock(&r->mu);
	return ret;
}

/* ---- what changed --------------------------------------------------------- */

struct collect {
	struct rbd_diff_window *w;
	int err;
};

/* rbd_diff_iterate2's callback: an extent that differs (written, or
   discarded: exists 0) goes into the window's list, clipped to it. */
static int collect_cb(uint64_t ofs, size_t len, int exists, void *arg)
{
	struct collect *c = arg;
	struct rbd_diff_window *w = c->w;
	uint64_t end = ofs + len;

	(void)exists;
	if (ofs < w->start)
		ofs = w->start;
	if (end > w->end)
		end = w->end;
	if (end <= ofs)
		return 0;
	if (w->n && w->ext[w->n - 1][0] + w->ext[w->n - 1][1] == ofs) {
		w->ext[w->n - 1][1] += end - ofs;
		return 0;
	}
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		uint64_t (*v)[2] = realloc(w->ext, cap * sizeof(*v));

		if (!v) {
			c->err = -ENOMEM;
			return -ENOMEM;
		}
		w->ext = v;
		w->cap = cap;
	}
	w->ext[w->n][0] = ofs;
	w->ext[w->n][1] = end - ofs;
	w->n++;
	return 0;
}

static int ext_cmp(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorts the window's extents and joins those that touch or overlap. */
static void window_normalize(struct rbd_diff_window *w)
{
	size_t k = 0;

	if (!w->n)
		return;
	qsort(w->ext, w->n, sizeof(w->ext[0]), ext_cmp);
	for (size_t i = 1; i < w->n; i++) {
		uint64_t kend = w->ext[k][0] + w->ext[k][1];
		uint64_t iend = w->ext[i][0] + w->ext[i][1];

		if (w->ext[i][0] <= kend) {
			if (iend > kend)
				w->ext[k][1] = iend - w->ext[k][0];
		} else {
			k++;
			w->ext[k][0] = w->ext[i][0];
			w->ext[k][1] = w->ext[i][1];
		}
	}
	w->n = k + 1;
}

/* Whether the image's fast-diff object map can answer a whole-object
   diff (the feature on, and its map not flagged invalid). */
static bool fast_diff_usable(struct rbd_src *r)
{
	uint64_t features = 0, flags = 0;

	if (p_rbd_get_features(r->c.img, &features) < 0 ||
	    !(features & RBD_FEATURE_FAST_DIFF))
		return false;
	if (p_rbd_get_flags(r->c.img, &flags) < 0)
		return false;
	return !(flags & RBD_FLAG_FAST_DIFF_INVALID);
}

static int diff_failed(struct bsrc *s, const char *since, uint64_t off,
		       uint64_t len, int ret)
{
	return bdev_err(ret, "%s: what changed since checkpoint %s (snapshot "
			RBD_CKPT_PREFIX "%s) in %" PRIu64 " bytes at offset %"
			PRIu64 ": rbd_diff_iterate2 failed: %s", s->name, since,
			since, len, off, strerror(-ret));
}

/* Fills w (start, end set) with what changed since checkpoint since. */
static int window_compute(struct bsrc *s, const char *since,
			  struct rbd_diff_window *w)
{
	struct rbd_src *r = s->priv;
	struct rbd_diff_window objs = { .start = w->start, .end = w->end };
	struct collect c = { .w = w };
	char *sn = snap_name(since);
	int ret;

	if (!sn)
		return bdev_err(-ENOMEM, "%s: out of memory", s->name);
	if (fast_diff_usable(r)) {
		/* the objects that changed, from the object maps alone */
		struct collect co = { .w = &objs };

		ret = p_rbd_diff_iterate2(r->c.img, sn, w->start,
					  w->end - w->start, 1, 1, collect_cb,
					  &co);
		if (co.err)
			ret = co.err;
		if (ret < 0) {
			ret = diff_failed(s, since, w->start, w->end - w->start,
					  ret);
			goto out;
		}
		window_normalize(&objs);
		/* then the exact extents within each */
		for (size_t i = 0; i < objs.n && ret >= 0; i++) {
			ret = p_rbd_diff_iterate2(r->c.img, sn, objs.ext[i][0],
						  objs.ext[i][1], 1, 0,
						  collect_cb, &c);
			if (c.err)
				ret = c.err;
			if (ret < 0)
				ret = diff_failed(s, since, objs.ext[i][0],
						  objs.ext[i][1], ret);
		}
	} else {
		ret = p_rbd_diff_iterate2(r->c.img, sn, w->start,
					  w->end - w->start, 1, 0, collect_cb,
					  &c);
		if (c.err)
			ret = c.err;
		if (ret < 0)
			ret = diff_failed(s, since, w->start, w->end - w->start,
					  ret);
	}
	if (ret >= 0) {
		window_normalize(w);
		ret = 0;
	}
out:
	free(objs.ext);
	free(sn);
	return ret;
}

/* The first run of [off, off + len) from w, which holds off. */
static int window_answer(const struct rbd_diff_window *w, uint64_t off,
			 uint64_t len, uint64_t *pnum)
{
	uint64_t end = off + len < w->end ? off + len : w->end;
	size_t lo = 0, hi = w->n;

	/* the first extent ending after off */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (w->ext[mid][0] + w->ext[mid][1] <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == w->n || w->ext[lo][0] >= end) {
		*pnum = end - off;
		return 0;
	}
	if (w->ext[lo][0] > off) {
		*pnum = w->ext[lo][0] - off;
		return 0;
	}
	*pnum = (w->ext[lo][0] + w->ext[lo][1] < end ?
		 w->ext[lo][0] + w->ext[lo][1] : end) - off;
	return 1;
}

static int track_changed(struct bsrc *s, const char *since, uint64_t off,
			 uint64_t len, uint64_t *pnum)
{
	struct rbd_src *r = s->priv;
	struct rbd_diff_window w = { 0 };
	uint64_t gen;
	int ret;

	pthread_mutex_lock(&r->mu);
	ret = track_list(s, r);
	if (ret == 0 && find(r, since) < 0)
		ret = bdev_err(-ENOENT, "%s: no checkpoint %s (no snapshot "
			       RBD_CKPT_PREFIX "%s)", s->name, since, since);
	/* read before the diff: a write ending during it moves it on, and
	   the next question asks RBD again */
	gen = atomic_load_explicit(&s->write_gen, memory_order_acquire);
	if (ret == 0 && r->win.since && !strcmp(r->win.since, since) &&
	    r->win.gen == gen && r->win.start <= off && off < r->win.end) {
		ret = window_answer(&r->win, off, len, pnum);
		pthread_mutex_unlock(&r->mu);
		return ret;
	}
	pthread_mutex_unlock(&r->mu);
	if (ret < 0)
		return ret;
	w.start = off;
	w.end = off + (len < RBD_DIFF_WINDOW ? len : RBD_DIFF_WINDOW);
	w.gen = gen;
	w.since = strdup(since);
	if (!w.since)
		return bdev_err(-ENOMEM, "%s: out of memory", s->name);
	ret = window_compute(s, since, &w);
	if (ret < 0) {
		window_clear(&w);
		return ret;
	}
	ret = window_answer(&w, off, len, pnum);
	pthread_mutex_lock(&r->mu);
	window_clear(&r->win);
	r->win = w;
	pthread_mutex_unlock(&r->mu);
	return ret;
}

/* s's name with "@" RBD_CKPT_PREFIX name as its snapshot (replacing the
   one it names, if any), its options kept. */
static int track_view_name(struct bsrc *s, const char *name, char *buf,
			   size_t len)
{
	struct rbd_src *r = s->priv;
	const char *end = s->name + 4, *at;
	int ret, n;

	pthread_mutex_lock(&r->mu);
	ret = track_list(s, r);
	if (ret == 0 && find(r, name) < 0)
		ret = bdev_err(-ENOENT, "%s: no checkpoint %s", s->name, name);
	pthread_mutex_unlock(&r->mu);
	if (ret < 0)
		return ret;
	/* the image part ends at the first unescaped ':' */
	while (*end && !(*end == ':' && end[-1] != '\\'))
		end++;
	at = memchr(s->name, '@', (size_t)(end - s->name));
	n = snprintf(buf, len, "%.*s@" RBD_CKPT_PREFIX "%s%s",
		     (int)((at ? at : end) - s->name), s->name, name, end);
	if (n < 0 || (size_t)n >= len)
		return bdev_err(-ENOSPC, "%s: the name of checkpoint %s needs "
				"%d bytes, %zu given", s->name, name, n + 1, len);
	return 0;
}

const struct bsrc_track_ops rbd_track_ops = {
	.view_name = track_view_name,
	.create = track_create,
	.remove = track_remove,
	.get = track_get,
	.changed = track_changed,
};
