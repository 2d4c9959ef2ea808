/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snapshot.c - live snapshots (freeze the top layer of an open image under
 * a new delta child) and commit (merge a delta child into its parent).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define SNAPSHOT_DRAIN_SECONDS 30
#define COMMIT_CHUNK (1u << 20)

/* Waits (holding top_lock exclusive) until no write to b is in flight. */
static int drain_writes(struct bdev *b)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	while (atomic_load(&b->writes_inflight)) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > SNAPSHOT_DRAIN_SECONDS)
			return bdev_err(-EBUSY, "%s: writes still in flight after "
					"%d seconds; a snapshot waits for them (run "
					"the queues that issued them)", b->filename,
					SNAPSHOT_DRAIN_SECONDS);
		sched_yield();
	}
	return 0;
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

/* Freeze b's top layer under a new delta child at child_path; see
   blockengine.h. */
int bdev_snapshot(struct bdev *b, const char *child_path)
{
	struct bdev_create_opts co = { 0 };
	struct bdev_open_opts oo;
	struct bdev *c, *old;
	int ret;

	bdev_err_clear();
	if (!b || !child_path)
		return bdev_err(-EINVAL, "bdev_snapshot: no image or child path");
	if (b->info.read_only)
		return bdev_err(-EROFS, "%s: image is open read-only; a snapshot "
				"needs it open for writing", b->filename);
	if (strcmp(b->fmt->name, "vmdk") != 0 || !b->info.has_cid)
		return bdev_err(-ENOTSUP, "%s: live snapshots need a VMDK with a "
				"descriptor CID on top (format %s)", b->filename,
				b->fmt->name);
	/* The top's CID is left alone: a frozen layer's content does not
	   change, and VMware changes a CID only when content does. Rewriting
	   it would break every delta already made on this layer. */
	co.format = "vmdk";
	co.subformat = "monolithicSparse";
	co.size = b->info.size;
	co.backing = b->filename;
	ret = bdev_create(child_path, &co);
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
	old = calloc(1, sizeof(*old));
	if (!old) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", child_path);
		goto err_close_child;
	}

	pthread_rwlock_wrlock(&b->top_lock);
	ret = drain_writes(b);
	if (ret == 0 && c->info.parent_cid != b->info.cid)
		/* a first write changed the top's CID after the child read it */
		ret = bdev_err(-EAGAIN, "%s: the image's CID changed to %08"
			       PRIx32 " while the snapshot %s was made with "
			       "parentCID %08" PRIx32 "; try again", b->filename,
			       b->info.cid, child_path, c->info.parent_cid);
	if (ret < 0) {
		pthread_rwlock_unlock(&b->top_lock);
		free(old);
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
	atomic_store(&old->write_begun, atomic_load(&b->write_begun));
	atomic_store(&old->stats.gt_hits, atomic_load(&b->stats.gt_hits));
	atomic_store(&old->stats.gt_misses, atomic_load(&b->stats.gt_misses));
	atomic_store(&old->stats.grain_hits, atomic_load(&b->stats.grain_hits));
	atomic_store(&old->stats.grain_misses, atomic_load(&b->stats.grain_misses));
	atomic_store(&old->stats.inflated, atomic_load(&b->stats.inflated));
	atomic_store(&old->stats.readahead, atomic_load(&b->stats.readahead));

	b->fmt = c->fmt;
	b->priv = c->priv;
	b->filename = c->filename;
	b->info = c->info;
	b->opts = c->opts;
	b->opts.flags &= ~(uint32_t)BDEV_O_NO_BACKING;
	b->backing = old;
	b->gcache = c->gcache;
	atomic_store(&b->write_begun, false);
	atomic_store(&b->stats.gt_hits, 0);
	atomic_store(&b->stats.gt_misses, 0);
	atomic_store(&b->stats.grain_hits, 0);
	atomic_store(&b->stats.grain_misses, 0);
	atomic_store(&b->stats.inflated, 0);
	atomic_store(&b->stats.readahead, 0);
	pthread_rwlock_unlock(&b->top_lock);

	pthread_rwlock_destroy(&c->top_lock);
	pthread_mutex_destroy(&c->begin_lock);
	free(c);
	/* no write reaches old any more: make it durable, clean and shared */
	ret = vmdk_freeze_layer(old);
	if (ret < 0) {
		char why[512];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		return bdev_err(ret, "%s: the snapshot %s is in place, but "
				"finishing the frozen layer failed: %s",
				old->filename, child_path, why);
	}
	return 0;

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
		ret = bdev_err(-EINVAL, "%s: %" PRIu64 " bytes, larger than its "
			       "parent %s (%" PRIu64 " bytes)", child_path,
			       c->info.size, ppath, p->info.size);
		goto out_close_parent;
	}
	ret = merge_into(c, p);
	if (ret == 0)
		ret = bdev_flush(p);
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
	if (ret == 0) {
		/* the parent is durable: the child may go (descriptor first,
		   so an interrupted delete never leaves a half image) */
		if (unlink(child_path) < 0)
			ret = bdev_err(-errno, "%s: merged into %s, but cannot be "
				       "deleted: %s", child_path, ppath,
				       strerror(errno));
		for (unsigned i = 0; i < nfiles; i++)
			unlink(files[i]);
	}
	for (unsigned i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	free(ppath);
	return ret;
}
