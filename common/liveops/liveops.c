/* SPDX-License-Identifier: Apache-2.0 */
/*
 * liveops.c - checkpoints, changed extents and views of a running disk,
 * answered as control-socket replies (see liveops.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctlsock.h"
#include "liveops.h"

static const char *engine_msg(int ret)
{
	const char *msg = bdev_errmsg();

	return *msg ? msg : strerror(-ret);
}

int liveops_init(struct liveops *lo, struct bdev *bdev, const char *top,
		 bool read_only)
{
	memset(lo, 0, sizeof(*lo));
	lo->bdev = bdev;
	lo->read_only = read_only;
	lo->top = realpath(top, NULL);
	return lo->top ? 0 : -errno;
}

static void view_free(struct liveops_view *v)
{
	if (!v)
		return;
	free(v->frozen);
	free(v->child);
	free(v->checkpoint);
	free(v);
}

void liveops_fini(struct liveops *lo)
{
	view_free(lo->view);
	lo->view = NULL;
	free(lo->top);
	lo->top = NULL;
}

json_t *liveops_checkpoints(struct bdev *bdev)
{
	json_t *a = json_array();
	const char *name;

	for (unsigned i = 0; bdev_checkpoint_get(bdev, i, &name) == 0; i++)
		json_array_append_new(a, json_string(name));
	return a;
}

json_t *liveops_checkpoint_create(struct liveops *lo, const char *name)
{
	int ret = bdev_checkpoint_create(lo->bdev, name);

	if (ret < 0)
		return ctlsock_error("checkpoint-create %s: %s", name,
				     engine_msg(ret));
	return ctlsock_ok(json_pack("{s:s}", "name", name));
}

json_t *liveops_checkpoint_delete(struct liveops *lo, const char *name)
{
	int ret = bdev_checkpoint_delete(lo->bdev, name);

	if (ret < 0)
		return ctlsock_error("checkpoint-delete %s: %s", name,
				     engine_msg(ret));
	return ctlsock_ok(NULL);
}

json_t *liveops_checkpoint_list(struct liveops *lo)
{
	return ctlsock_ok(json_pack("{s:o}", "checkpoints",
				    liveops_checkpoints(lo->bdev)));
}

json_t *liveops_changed(struct liveops *lo, const char *since,
			uint64_t offset, uint64_t length, uint64_t size)
{
	uint64_t end = length ? offset + length : size;
	uint64_t off = offset, run_off = 0, run_len = 0;
	json_t *ext;
	size_t n = 0;

	if (offset > size || end > size || end < offset)
		return ctlsock_error("range %llu+%llu is past the disk's end "
				     "(%llu bytes)",
				     (unsigned long long)offset,
				     (unsigned long long)length,
				     (unsigned long long)size);
	ext = json_array();
	while (off < end) {
		uint64_t pnum;
		int ch = bdev_changed_status(lo->bdev, since, off, end - off,
					     &pnum);

		if (ch < 0) {
			json_decref(ext);
			return ctlsock_error("changed since %s: %s", since,
					     engine_msg(ch));
		}
		if (ch && run_len && run_off + run_len == off) {
			run_len += pnum;
		} else if (ch) {
			if (run_len) {
				json_array_append_new(ext, json_pack(
					"[I,I]", (json_int_t)run_off,
					(json_int_t)run_len));
				n++;
			}
			if (n == LIVEOPS_CHANGED_MAX_EXTENTS) {
				run_len = 0;
				break;
			}
			run_off = off;
			run_len = pnum;
		}
		off += pnum;
	}
	if (run_len)
		json_array_append_new(ext, json_pack("[I,I]",
						     (json_int_t)run_off,
						     (json_int_t)run_len));
	return ctlsock_ok(json_pack("{s:o,s:o,s:I}", "extents", ext, "next",
				    off < end ? json_integer((json_int_t)off)
					      : json_null(),
				    "size", (json_int_t)size));
}

json_t *liveops_view_json(const struct liveops_view *v)
{
	json_t *o = json_pack("{s:s,s:s}", "path", v->frozen, "child",
			      v->child);

	json_object_set_new(o, "checkpoint", v->checkpoint ?
			    json_string(v->checkpoint) : json_null());
	return o;
}

/* BASE-live-N.vmdk beside the top layer (BASE: the top's name without
   .vmdk and without a -live-N of its own), a name not in use. */
static int make_child(const char *top, struct liveops_view *v)
{
	size_t n = strlen(top);
	int ret = -EEXIST;

	if (n > 5 && !strcmp(top + n - 5, ".vmdk"))
		n -= 5;
	/* a child of a child (no live commit in between) is numbered on
	   from the same base name, not named X-live-1-live-1 */
	{
		size_t k = n;

		while (k && top[k - 1] >= '0' && top[k - 1] <= '9')
			k--;
		if (k < n && k >= 6 && !strncmp(top + k - 6, "-live-", 6))
			n = k - 6;
	}
	for (unsigned i = 1; i < 1000 && ret == -EEXIST; i++) {
		free(v->child);
		if (asprintf(&v->child, "%.*s-live-%u.vmdk", (int)n, top,
			     i) < 0) {
			v->child = NULL;
			return -ENOMEM;
		}
		if (access(v->child, F_OK) == 0)
			continue;
		ret = 0;
	}
	return ret;
}

json_t *liveops_view_create(struct liveops *lo, const char *checkpoint)
{
	struct liveops_view *v;
	char *top;
	int ret;

	if (lo->view)
		return ctlsock_error("a view of %s is open already: release "
				     "it (view-release) first",
				     lo->view->frozen);
	if (lo->read_only)
		return ctlsock_error("%s is served read-only: it does not "
				     "change, open it directly instead of a "
				     "view", lo->top);
	v = calloc(1, sizeof(*v));
	if (!v || !(v->frozen = strdup(lo->top)) ||
	    make_child(lo->top, v) < 0 || !(top = strdup(v->child))) {
		view_free(v);
		return ctlsock_error("out of memory or no free child name "
				     "beside %s", lo->top);
	}
	if (checkpoint) {
		ret = bdev_checkpoint_create(lo->bdev, checkpoint);
		if (ret < 0) {
			free(top);
			view_free(v);
			return ctlsock_error("checkpoint %s: %s", checkpoint,
					     engine_msg(ret));
		}
		v->checkpoint = strdup(checkpoint);
	}
	ret = bdev_snapshot(lo->bdev, v->child);
	if (ret == 0)
		ret = bdev_snapshot_wait(lo->bdev);
	if (ret < 0) {
		json_t *rep = ctlsock_error("snapshot of %s into %s: %s",
					    lo->top, v->child,
					    engine_msg(ret));

		if (checkpoint)
			bdev_checkpoint_delete(lo->bdev, checkpoint);
		free(top);
		view_free(v);
		return rep;
	}
	free(lo->top);
	lo->top = top;
	lo->view = v;
	return ctlsock_ok(liveops_view_json(v));
}

json_t *liveops_view_release(struct liveops *lo)
{
	struct liveops_view *v = lo->view;
	char *top;
	json_t *rep;
	int ret;

	if (!v)
		return ctlsock_error("no view is open");
	/* the child goes back into the frozen layer while the disk runs */
	ret = bdev_commit_live(lo->bdev);
	if (ret < 0)
		return ctlsock_error("live commit of %s into %s: %s%s",
				     v->child, v->frozen, engine_msg(ret),
				     ret == -EBUSY ? " (busy: unmount or "
				     "close what reads the view, then release "
				     "again)" : "");
	top = strdup(v->frozen);
	if (top) {
		free(lo->top);
		lo->top = top;
	}
	rep = ctlsock_ok(json_pack("{s:s,s:b}", "top", lo->top, "committed",
				   1));
	lo->view = NULL;
	view_free(v);
	return rep;
}
