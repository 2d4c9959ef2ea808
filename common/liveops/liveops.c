/* SPDX-License-Identifier: Apache-2.0 */
/*
 * liveops.c - checkpoints, changed extents and views of a running disk,
 * answered as control-socket replies (see liveops.h).
 */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
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
	/* an RBD image (rbd:POOL/IMAGE...) is no path: kept as named */
	lo->top = strncmp(top, "rbd:", 4) ? realpath(top, NULL) : strdup(top);
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

/* The length of top's name without ".vmdk" and without a "-live-N" of its
   own: the base its view children are named from (make_child). */
static size_t child_base_len(const char *top)
{
	size_t n = strlen(top), k;

	if (n > 5 && !strcmp(top + n - 5, ".vmdk"))
		n -= 5;
	k = n;
	while (k && top[k - 1] >= '0' && top[k - 1] <= '9')
		k--;
	if (k < n && k >= 6 && !strncmp(top + k - 6, "-live-", 6))
		n = k - 6;
	return n;
}

/* BASE-live-N.vmdk beside the top layer (BASE: the top's name without
   .vmdk and without a -live-N of its own), a name not in use. */
static int make_child(const char *top, struct liveops_view *v)
{
	int n = (int)child_base_len(top), ret = -EEXIST;

	for (unsigned i = 1; i < 1000 && ret == -EEXIST; i++) {
		free(v->child);
		if (asprintf(&v->child, "%.*s-live-%u.vmdk", n, top,
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
		char kept[4096];

		ret = bdev_checkpoint_create(lo->bdev, checkpoint);
		if (ret < 0) {
			free(top);
			view_free(v);
			return ctlsock_error("checkpoint %s: %s", checkpoint,
					     engine_msg(ret));
		}
		v->checkpoint = strdup(checkpoint);
		/* the store keeps the checkpoint as a copy: that is the
		   view, and writes go on to the disk */
		if (bdev_checkpoint_view(lo->bdev, checkpoint, kept,
					 sizeof(kept)) == 0) {
			free(top);
			free(v->frozen);
			free(v->child);
			v->frozen = strdup(kept);
			v->child = strdup(lo->top);
			v->in_store = true;
			if (!v->frozen || !v->child || !v->checkpoint) {
				bdev_checkpoint_delete(lo->bdev, checkpoint);
				view_free(v);
				return ctlsock_error("out of memory");
			}
			lo->view = v;
			return ctlsock_ok(liveops_view_json(v));
		}
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
	if (v->in_store) {
		/* nothing was split off: the checkpoint stays, the view goes */
		lo->view = NULL;
		view_free(v);
		return ctlsock_ok(json_pack("{s:s,s:b}", "top", lo->top,
					    "committed", 1));
	}
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

/* A file of a dead view: its path and its parent's (both absolute). */
struct leftover {
	char *path;
	char *parent;
};

/* The parent that child's parentFileNameHint names, made absolute against
   the child's folder; NULL when there is none or it does not exist. */
static char *parent_of(const char *child, char *err, size_t errlen,
		       int *ret)
{
	struct bdev_open_opts oo = { .flags = BDEV_O_NO_BACKING |
					      BDEV_O_SHARE };
	struct bdev_info in;
	struct bdev *b;
	char *dir = NULL, *rel = NULL, *out = NULL;

	*ret = bdev_open(child, &oo, &b);
	if (*ret < 0) {
		snprintf(err, errlen, "%s is named like a view's delta child "
			 "but cannot be opened (%s): if it is one, merge it "
			 "with `vmdk commit %s`, else move it away", child,
			 engine_msg(*ret), child);
		return NULL;
	}
	if (bdev_get_info(b, &in) == 0 && in.parent_hint) {
		dir = strdup(child);
		if (dir && (in.parent_hint[0] == '/' ?
			    asprintf(&rel, "%s", in.parent_hint) :
			    asprintf(&rel, "%s/%s", dirname(dir),
				     in.parent_hint)) < 0)
			rel = NULL;
		if (rel)
			out = realpath(rel, NULL);
	}
	bdev_close(b);
	free(dir);
	free(rel);
	return out;
}

/* Every BASE-live-N.vmdk beside image (BASE from child_base_len) with the
   parent it names; -errno with err set. */
static int find_leftovers(const char *image, struct leftover **out,
			  size_t *n, char *err, size_t errlen)
{
	char *dirbuf = strdup(image), *dir;
	const char *name = strrchr(image, '/') + 1;
	size_t blen = child_base_len(name);
	struct leftover *v = NULL;
	struct dirent *de;
	DIR *d;
	int ret = 0;

	*out = NULL;
	*n = 0;
	if (!dirbuf)
		return -ENOMEM;
	dir = dirname(dirbuf);
	d = opendir(dir);
	if (!d) {
		ret = -errno;
		snprintf(err, errlen, "%s: cannot list it for leftover views: "
			 "%s", dir, strerror(errno));
		free(dirbuf);
		return ret;
	}
	while ((de = readdir(d))) {
		const char *f = de->d_name, *p;
		size_t fl = strlen(f);
		struct leftover *nv;
		char *path;

		if (fl <= blen + 6 + 5 || strncmp(f, name, blen) ||
		    strncmp(f + blen, "-live-", 6) ||
		    strcmp(f + fl - 5, ".vmdk"))
			continue;
		p = f + blen + 6;
		while (*p >= '0' && *p <= '9')
			p++;
		if (p != f + fl - 5 || p == f + blen + 6)
			continue;
		if (asprintf(&path, "%s/%s", dir, f) < 0) {
			ret = -ENOMEM;
			break;
		}
		nv = realloc(v, (*n + 1) * sizeof(*v));
		if (!nv) {
			free(path);
			ret = -ENOMEM;
			break;
		}
		v = nv;
		v[*n].path = path;
		v[*n].parent = parent_of(path, err, errlen, &ret);
		(*n)++;
		if (ret < 0)
			break;
	}
	closedir(d);
	free(dirbuf);
	*out = v;
	return ret;
}

/* The change map's file beside an image (blockengine.h: IMAGE-ctk.ovk). */
#define CTK_SUFFIX "-ctk.ovk"

/* A live commit killed after it deleted the child but before the change
   map followed the disk back leaves BASE-live-N.vmdk-ctk.ovk with no
   BASE-live-N.vmdk: the map of the disk, with its checkpoints. When img
   has no map of its own and exactly one such orphan is there, it is moved
   back beside img; its name is appended to done. */
static void adopt_orphan_map(const char *img, char *done, size_t donelen)
{
	char *dirbuf = strdup(img), *dir, *mine = NULL, *orphan = NULL;
	const char *name = strrchr(img, '/') + 1;
	size_t blen = child_base_len(name), sl = strlen(CTK_SUFFIX);
	unsigned found = 0;
	struct dirent *de;
	DIR *d;

	if (!dirbuf || asprintf(&mine, "%s%s", img, CTK_SUFFIX) < 0) {
		free(dirbuf);
		return;
	}
	dir = dirname(dirbuf);
	if (access(mine, F_OK) == 0 || !(d = opendir(dir)))
		goto out;
	while ((de = readdir(d))) {
		const char *f = de->d_name;
		size_t fl = strlen(f);
		char *vmdk;

		if (fl <= blen + 6 + sl || strncmp(f, name, blen) ||
		    strncmp(f + blen, "-live-", 6) ||
		    strcmp(f + fl - sl, CTK_SUFFIX))
			continue;
		if (asprintf(&vmdk, "%s/%.*s", dir, (int)(fl - sl), f) < 0)
			continue;
		if (access(vmdk, F_OK) < 0 && errno == ENOENT) {
			found++;
			free(orphan);
			if (asprintf(&orphan, "%s/%s", dir, f) < 0)
				orphan = NULL;
		}
		free(vmdk);
	}
	closedir(d);
	if (found == 1 && orphan && rename(orphan, mine) == 0)
		snprintf(done + strlen(done), donelen - strlen(done),
			 "%smoved the change map %s of a live commit that died "
			 "back to %s", *done ? "; " : "", orphan, mine);
out:
	free(orphan);
	free(mine);
	free(dirbuf);
}

int liveops_recover(const char *image, bool merge, unsigned *merged,
		    char *err, size_t errlen)
{
	char *img = realpath(image, NULL), list[2048] = "";
	struct leftover *v = NULL;
	const char **chain = NULL;
	size_t n = 0, len = 0;
	int ret;

	*merged = 0;
	if (errlen)
		err[0] = '\0';
	if (!img)
		return 0; /* the open that follows says what is wrong */
	ret = find_leftovers(img, &v, &n, err, errlen);
	if (ret < 0)
		goto out;
	chain = calloc(n + 1, sizeof(*chain));
	if (!chain) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	/* image <- chain[0] <- chain[1] ...: each the only child of the one
	   below */
	for (const char *cur = img; cur;) {
		const char *next = NULL;

		for (size_t i = 0; i < n; i++) {
			if (!v[i].parent || strcmp(v[i].parent, cur))
				continue;
			if (next) {
				ret = -EINVAL;
				snprintf(err, errlen, "%s has two leftover view "
					 "children, %s and %s: the disk's "
					 "latest state is one of them; merge "
					 "the right one with `vmdk commit` and "
					 "move the other away", cur, next,
					 v[i].path);
				goto out;
			}
			next = v[i].path;
		}
		if (next && len == n) /* a loop of parent hints */
			break;
		if (next)
			chain[len++] = next;
		cur = next;
	}
	for (size_t i = 0; i < len; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list),
			 "%s%s", i ? ", " : "", chain[i]);
	if (len && !merge) {
		ret = -EEXIST;
		snprintf(err, errlen, "%s is stale: a view left by a program "
			 "that died holds the disk's latest writes in %s; "
			 "serve it read-write to merge them, or merge them "
			 "with `vmdk commit` (top first)", img, list);
		goto out;
	}
	for (size_t i = len; i-- > 0;) {
		ret = bdev_commit(chain[i]);
		if (ret < 0) {
			snprintf(err, errlen, "merging the leftover view child "
				 "%s into its parent: %s", chain[i],
				 engine_msg(ret));
			goto out;
		}
		(*merged)++;
	}
	err[0] = '\0';
	if (len)
		snprintf(err, errlen, "merged %zu leftover view child(ren) "
			 "of a program that died into %s: %s", len, img, list);
	if (merge)
		adopt_orphan_map(img, err, errlen);
out:
	for (size_t i = 0; i < n; i++) {
		free(v[i].path);
		free(v[i].parent);
	}
	free(v);
	free(chain);
	free(img);
	return ret;
}

static const struct {
	const char *name;
	enum liveops_cmd cmd;
	const char *keys; /* its members besides "command" and "disk" */
} commands[] = {
	{ "checkpoint-create", LIVEOPS_CHECKPOINT_CREATE, "name" },
	{ "checkpoint-delete", LIVEOPS_CHECKPOINT_DELETE, "name" },
	{ "checkpoint-list", LIVEOPS_CHECKPOINT_LIST, "" },
	{ "changed", LIVEOPS_CHANGED, "since offset length" },
	{ "view-create", LIVEOPS_VIEW_CREATE, "checkpoint" },
	{ "view-release", LIVEOPS_VIEW_RELEASE, "" },
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Whether key is one of the space-separated words of keys. */
static bool key_allowed(const char *keys, const char *key)
{
	size_t n = strlen(key);

	for (const char *p = keys; *p;) {
		const char *e = strchr(p, ' ');
		size_t wl = e ? (size_t)(e - p) : strlen(p);

		if (wl == n && !memcmp(p, key, n))
			return true;
		p += wl + (e ? 1 : 0);
	}
	return false;
}

/* A checkpoint name member that may be absent. */
static int get_name(json_t *req, const char *key, const char **out,
		    char *err, size_t errlen)
{
	json_t *v = json_object_get(req, key);
	const char *s;
	size_t n;

	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return fail(err, errlen, "\"%s\" must be a string", key);
	s = json_string_value(v);
	n = json_string_length(v);
	if (strlen(s) != n)
		return fail(err, errlen, "\"%s\" holds a NUL byte", key);
	if (n < 1 || n > 103)
		return fail(err, errlen, "\"%s\" must be 1 to 103 bytes, not "
			    "%zu", key, n);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || s[i] == 0x7f || s[i] == '/')
			return fail(err, errlen, "\"%s\" may hold no spaces, "
				    "control characters or '/' (byte %zu)",
				    key, i);
	*out = s;
	return 0;
}

static int get_u64(json_t *req, const char *key, uint64_t *out, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(req, key);

	*out = 0;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return fail(err, errlen, "\"%s\" must be a non-negative "
			    "integer (bytes)", key);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int liveops_parse(json_t *req, struct liveops_req *out, char *err,
		  size_t errlen)
{
	const char *cmd, *keys = NULL, *key;
	json_t *v;

	memset(out, 0, sizeof(*out));
	cmd = json_string_value(json_object_get(req, "command"));
	if (!cmd)
		return 0;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(cmd, commands[i].name)) {
			out->cmd = commands[i].cmd;
			keys = commands[i].keys;
		}
	if (!keys)
		return 0;
	json_object_foreach(req, key, v)
		if (strcmp(key, "command") && strcmp(key, "disk") &&
		    !key_allowed(keys, key))
			return fail(err, errlen, "%s takes no member "
				    "\"%.64s\"; it takes: disk%s%s", cmd, key,
				    *keys ? " " : "", keys);
	v = json_object_get(req, "disk");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > 255)
			return fail(err, errlen, "\"disk\" must be a disk "
				    "index (0 for the first disk)");
		out->disk = (unsigned)json_integer_value(v);
	}
	switch (out->cmd) {
	case LIVEOPS_CHECKPOINT_CREATE:
	case LIVEOPS_CHECKPOINT_DELETE:
		if (get_name(req, "name", &out->name, err, errlen) < 0)
			return -EINVAL;
		if (!out->name)
			return fail(err, errlen, "%s needs \"name\"", cmd);
		break;
	case LIVEOPS_CHANGED:
		if (get_name(req, "since", &out->name, err, errlen) < 0 ||
		    get_u64(req, "offset", &out->offset, err, errlen) < 0 ||
		    get_u64(req, "length", &out->length, err, errlen) < 0)
			return -EINVAL;
		if (!out->name)
			return fail(err, errlen, "changed needs \"since\": a "
				    "checkpoint name");
		break;
	case LIVEOPS_VIEW_CREATE:
		if (get_name(req, "checkpoint", &out->name, err, errlen) < 0)
			return -EINVAL;
		break;
	default:
		break;
	}
	return 1;
}

json_t *liveops_run(struct liveops *lo, const struct liveops_req *r,
		    uint64_t size)
{
	switch (r->cmd) {
	case LIVEOPS_CHECKPOINT_CREATE:
		return liveops_checkpoint_create(lo, r->name);
	case LIVEOPS_CHECKPOINT_DELETE:
		return liveops_checkpoint_delete(lo, r->name);
	case LIVEOPS_CHECKPOINT_LIST:
		return liveops_checkpoint_list(lo);
	case LIVEOPS_CHANGED:
		return liveops_changed(lo, r->name, r->offset, r->length,
				       size);
	case LIVEOPS_VIEW_CREATE:
		return liveops_view_create(lo, r->name);
	case LIVEOPS_VIEW_RELEASE:
		return liveops_view_release(lo);
	}
	return ctlsock_error("unhandled command");
}
