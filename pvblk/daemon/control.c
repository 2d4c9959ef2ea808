/* SPDX-License-Identifier: Apache-2.0 */
/*
 * control.c - pvblk's control socket: status, checkpoints, what changed
 * since one, and views (a frozen point-in-time parent of the running disk,
 * optionally exported read-only over NBD) released by a live commit.
 * The socket is common/ctlsock's (one thread, each request run to
 * completion); checkpoints, changed and views are common/liveops', to
 * which this file adds the view's NBD export, status and grow.  The engine
 * calls they make are safe against the I/O threads.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "liveops.h"

/* The view's NBD export, open only while exported. */
struct ctl_view_nbd {
	struct pvblk_export export;
	struct pvblk_listen listen;
	bool exported; /* listen is serving export */
};

/* One export of the daemon and its live-disk state. */
struct ctl_export {
	struct pvblk_export *e;
	struct liveops live; /* live.top: the file the running disk writes to */
	struct ctl_view_nbd nbd;
};

struct pvblk_ctl {
	struct ctlsock *sock;
	struct ctl_export *x; /* one per export, in command-line order */
	unsigned nx;
	struct pvblk_listen *listen;
	unsigned nlisten;
};

static const char *engine_msg(int ret)
{
	const char *msg = bdev_errmsg();

	return *msg ? msg : strerror(-ret);
}

/* The view as status and view-create show it: liveops' members and "nbd"
   (its NBD URI, or null). */
static json_t *view_json(struct ctl_export *c)
{
	json_t *o = liveops_view_json(c->live.view);

	if (c->nbd.exported) {
		char uri[256];

		snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s",
			 c->nbd.listen.address + 5);
		json_object_set_new(o, "nbd", json_string(uri));
	} else {
		json_object_set_new(o, "nbd", json_null());
	}
	return o;
}

/* The listener's "io" counters and, for a protocol with queues, its
   "vrings" (index, requests, why it broke or null); the counters are
   added to sum. */
static void io_json(struct pvblk_listen *l, json_t *x,
		    struct pvblk_io_stats *sum)
{
	struct pvblk_io_stats *st = calloc(1, sizeof(*st));

	if (!st)
		return;
	l->proto->stats(l, st);
	sum->requests += st->requests;
	sum->read_bytes += st->read_bytes;
	sum->written_bytes += st->written_bytes;
	sum->errors += st->errors;
	json_object_set_new(x, "io", json_pack(
		"{s:I,s:I,s:I,s:I}", "requests", (json_int_t)st->requests,
		"read_bytes", (json_int_t)st->read_bytes, "written_bytes",
		(json_int_t)st->written_bytes, "errors",
		(json_int_t)st->errors));
	if (st->nqueues) {
		json_t *a = json_array();

		for (unsigned i = 0; i < st->nqueues; i++) {
			const struct pvblk_queue_stats *q = &st->queues[i];

			json_array_append_new(a, json_pack(
				"{s:i,s:I,s:o}", "index", (int)q->index,
				"requests", (json_int_t)q->requests, "broken",
				q->broken ? json_string(q->reason)
					  : json_null()));
		}
		json_object_set_new(x, "vrings", a);
	}
	free(st);
}

/* The mode e was opened in, as --export and -o name it. */
static const char *mode_of(const struct pvblk_export *e)
{
	return e->snapshot_child ? "snapshot" : e->read_only ? "ro" : "rw";
}

/* One export as status and export-list show it: name, image, mode, size,
   the protocols serving it; with detail also each listener ("listeners":
   protocol, address, queues, connections, io, vrings), the summed "io"
   and "connections", and, for clients of the one-image form, the first
   listener's protocol, address, queues and vrings at the top. */
static json_t *export_json(struct pvblk_ctl *c, struct ctl_export *x,
			   bool detail)
{
	struct pvblk_export *e = x->e;
	json_t *protos = json_array(), *listeners = json_array(), *o;
	struct pvblk_io_stats sum = { 0 };
	bool have_io = false, first = true;
	int conns = 0;

	o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:b}", "name", e->name, "image",
		      e->image, "top", x->live.top, "mode", mode_of(e),
		      "size", (json_int_t)e->size, "read_only", e->read_only);
	for (unsigned i = 0; i < c->nlisten; i++) {
		struct pvblk_listen *l = &c->listen[i];
		json_t *lj;
		bool seen = false;
		size_t k;
		json_t *v;

		if (l->export != e)
			continue;
		json_array_foreach(protos, k, v)
			seen |= !strcmp(json_string_value(v), l->proto->name);
		if (!seen)
			json_array_append_new(protos,
					      json_string(l->proto->name));
		if (!detail)
			continue;
		lj = json_pack("{s:s,s:s,s:s?,s:i}", "protocol",
			       l->proto->name, "address", l->address, "name",
			       l->export_name, "queues", (int)l->num_queues);
		if (l->proto->connections) {
			int n = l->proto->connections(l);

			json_object_set_new(lj, "connections",
					    json_integer(n));
			conns += n;
		}
		if (l->proto->stats) {
			io_json(l, lj, &sum);
			have_io = true;
		}
		if (first) {
			json_object_set_new(o, "protocol",
					    json_string(l->proto->name));
			json_object_set_new(o, "address",
					    json_string(l->address));
			json_object_set_new(o, "queues",
					    json_integer(l->num_queues));
			if (json_object_get(lj, "vrings"))
				json_object_set(o, "vrings",
						json_object_get(lj, "vrings"));
			first = false;
		}
		json_array_append_new(listeners, lj);
	}
	json_object_set_new(o, "protocols", protos);
	if (!detail) {
		json_decref(listeners);
		return o;
	}
	json_object_set_new(o, "listeners", listeners);
	json_object_set_new(o, "connections", json_integer(conns));
	if (have_io)
		json_object_set_new(o, "io", json_pack(
			"{s:I,s:I,s:I,s:I}", "requests",
			(json_int_t)sum.requests, "read_bytes",
			(json_int_t)sum.read_bytes, "written_bytes",
			(json_int_t)sum.written_bytes, "errors",
			(json_int_t)sum.errors));
	return o;
}

/* export-list: every export, in command-line order, without counters. */
static json_t *do_export_list(struct pvblk_ctl *c)
{
	json_t *a = json_array();

	for (unsigned i = 0; i < c->nx; i++)
		json_array_append_new(a, export_json(c, &c->x[i], false));
	return ctlsock_ok(json_pack("{s:o}", "exports", a));
}

/* The export x in detail (image, chain, checkpoints, view, engine), and
   every export of the daemon in "exports". */
static json_t *do_status(struct pvblk_ctl *c, struct ctl_export *x)
{
	json_t *chain = json_array(), *exports = json_array(), *st;
	struct bdev_info in;

	for (struct bdev *b = x->e->bdev; b; b = bdev_backing(b)) {
		if (bdev_get_info(b, &in) < 0)
			break;
		json_array_append_new(chain, json_pack(
			"{s:s,s:s,s:s?}", "file", in.filename, "format",
			in.format, "subformat", in.subformat));
	}
	for (unsigned i = 0; i < c->nx; i++)
		json_array_append_new(exports, export_json(c, &c->x[i], true));
	st = json_pack("{s:s,s:s,s:s,s:s,s:I,s:b,s:o,s:o,s:o}", "export",
		       x->e->name, "image", x->e->image, "mode",
		       mode_of(x->e), "top", x->live.top, "size",
		       (json_int_t)x->e->size, "read_only", x->e->read_only,
		       "chain", chain, "exports", exports, "checkpoints",
		       liveops_checkpoints(x->e->bdev));
	json_object_set_new(st, "view", x->live.view ? view_json(x)
						    : json_null());
	{
		struct bdev_stats bs;

		bdev_get_stats(x->e->bdev, &bs);
		json_object_set_new(st, "engine", json_pack(
			"{s:I,s:I,s:I,s:I,s:I,s:I}",
			"gt_cache_hits", (json_int_t)bs.gt_cache_hits,
			"gt_cache_misses", (json_int_t)bs.gt_cache_misses,
			"grain_cache_hits", (json_int_t)bs.grain_cache_hits,
			"grain_cache_misses", (json_int_t)bs.grain_cache_misses,
			"grains_inflated", (json_int_t)bs.grains_inflated,
			"readahead_grains", (json_int_t)bs.readahead_grains));
	}
	return ctlsock_ok(st);
}

static json_t *do_view_create(struct ctl_export *c,
			      const struct pvblk_ctl_req *r)
{
	struct ctl_view_nbd *n = &c->nbd;
	char err[512];
	json_t *rep;
	int ret;

	rep = liveops_view_create(&c->live, r->name);
	if (!c->live.view || !json_object_get(rep, "return"))
		return rep;
	json_decref(rep);
	pvblk_log("view: %s is frozen; writes go to %s",
		  c->live.view->frozen, c->live.view->child);
	if (r->nbd) {
		const char *frozen = c->live.view->frozen;

		ret = pvblk_export_open(&n->export, frozen, "ro", NULL, NULL);
		n->export.name = c->e->name;
		if (ret < 0)
			return ctlsock_error("the view %s is made but cannot "
					     "be opened for NBD: %s", frozen,
					     strerror(-ret));
		n->listen = (struct pvblk_listen){
			.proto = pvblk_protocol_nbd,
			.address = strdup(r->nbd),
			.num_queues = 1,
			.export = &n->export,
		};
		err[0] = '\0';
		ret = pvblk_protocol_nbd->start(&n->listen, err, sizeof(err));
		if (ret < 0) {
			pvblk_export_close(&n->export, false);
			return ctlsock_error("the view %s is made but its "
					     "NBD export at %s failed: %s",
					     frozen, r->nbd, err[0] ? err :
					     "cannot start");
		}
		n->exported = true;
		pvblk_log("view: %s exported read-only at %s", frozen, r->nbd);
	}
	return ctlsock_ok(view_json(c));
}

/* Close the view's own NBD export, if any. */
static void view_unexport(struct ctl_view_nbd *n)
{
	if (n->exported) {
		n->listen.proto->stop(&n->listen);
		pvblk_export_close(&n->export, false);
		n->exported = false;
	}
	free((char *)n->listen.address);
	n->listen.address = NULL;
}

static json_t *do_view_release(struct ctl_export *c)
{
	char *child, *frozen;
	bool in_store;
	json_t *rep;

	if (!c->live.view)
		return liveops_view_release(&c->live);
	view_unexport(&c->nbd);
	child = strdup(c->live.view->child);
	frozen = strdup(c->live.view->frozen);
	in_store = c->live.view->in_store;
	rep = liveops_view_release(&c->live);
	if (!c->live.view && in_store)
		pvblk_log("view released: %s (kept with its checkpoint)",
			  frozen ? frozen : "?");
	else if (!c->live.view)
		pvblk_log("view released: %s committed into %s",
			  child ? child : "?", frozen ? frozen : "?");
	free(child);
	free(frozen);
	return rep;
}

static json_t *do_grow(struct pvblk_ctl *c, struct ctl_export *x,
		       const struct pvblk_ctl_req *r)
{
	int ret, told = 0;

	if (r->size < x->e->size)
		return ctlsock_error("grow to %llu bytes: the disk has %llu "
				     "already; it never shrinks",
				     (unsigned long long)r->size,
				     (unsigned long long)x->e->size);
	ret = bdev_grow(x->e->bdev, r->size);
	if (ret < 0)
		return ctlsock_error("grow %s to %llu bytes: %s", x->live.top,
				     (unsigned long long)r->size,
				     engine_msg(ret));
	x->e->size = r->size;
	/* vhost-user front ends hear of it at once and interrupt their
	   guest; NBD clients see it when they connect again */
	for (unsigned i = 0; i < c->nlisten; i++) {
		struct pvblk_listen *l = &c->listen[i];

		if (l->export == x->e && l->proto->resized &&
		    l->proto->resized(l) > 0)
			told++;
	}
	return ctlsock_ok(json_pack("{s:I,s:i}", "size",
				    (json_int_t)r->size, "clients_told",
				    told));
}

/* The export a request names ("export"), or the first; NULL when there
   is no export of that name. */
static struct ctl_export *pick(struct pvblk_ctl *c, const char *name)
{
	if (!name)
		return &c->x[0];
	for (unsigned i = 0; i < c->nx; i++)
		if (!strcmp(c->x[i].e->name, name))
			return &c->x[i];
	return NULL;
}

static json_t *run(struct pvblk_ctl *c, const struct pvblk_ctl_req *r)
{
	struct ctl_export *x = pick(c, r->export);

	if (!x) {
		char names[1024] = "";
		size_t n = 0;

		for (unsigned i = 0; i < c->nx && n < sizeof(names); i++)
			n += (size_t)snprintf(names + n, sizeof(names) - n,
					      "%s'%s'", i ? ", " : "",
					      c->x[i].e->name);
		return ctlsock_error("no export named '%s' (this pvblk serves "
				     "%s)", r->export, names);
	}
	switch (r->cmd) {
	case CTL_STATUS:
		return do_status(c, x);
	case CTL_EXPORT_LIST:
		return do_export_list(c);
	case CTL_CHECKPOINT_CREATE:
		return liveops_checkpoint_create(&x->live, r->name);
	case CTL_CHECKPOINT_DELETE:
		return liveops_checkpoint_delete(&x->live, r->name);
	case CTL_CHECKPOINT_LIST:
		return liveops_checkpoint_list(&x->live);
	case CTL_CHANGED:
		return liveops_changed(&x->live, r->name, r->offset, r->length,
				       x->e->size);
	case CTL_VIEW_CREATE:
		return do_view_create(x, r);
	case CTL_VIEW_RELEASE:
		return do_view_release(x);
	case CTL_GROW:
		return do_grow(c, x, r);
	}
	return ctlsock_error("unhandled command");
}

static json_t *handle(void *opaque, json_t *req)
{
	struct pvblk_ctl_req r;
	char err[512];

	if (pvblk_ctl_parse_json(req, &r, err, sizeof(err)) < 0)
		return ctlsock_error("%s", err);
	return run(opaque, &r);
}

static const struct ctlsock_ops pvblk_ctl_ops = { .handle = handle };

int pvblk_ctl_start(const char *path, struct pvblk_export *e, unsigned ne,
		    struct pvblk_listen *listen, unsigned nlisten,
		    struct pvblk_ctl **out)
{
	struct pvblk_ctl *c = calloc(1, sizeof(*c));
	int ret = -ENOMEM;

	if (!c)
		return -ENOMEM;
	c->x = calloc(ne, sizeof(*c->x));
	if (!c->x)
		goto err_free;
	c->listen = listen;
	c->nlisten = nlisten;
	for (; c->nx < ne; c->nx++) {
		struct ctl_export *x = &c->x[c->nx];

		x->e = &e[c->nx];
		ret = liveops_init(&x->live, x->e->bdev,
				   x->e->snapshot_child ? x->e->snapshot_child
							: x->e->image,
				   x->e->read_only);
		if (ret < 0)
			goto err_fini;
	}
	ret = ctlsock_start(path, "pvblk: --api-socket", &pvblk_ctl_ops, c,
			    &c->sock);
	if (ret < 0)
		goto err_fini;
	*out = c;
	return 0;

err_fini:
	while (c->nx)
		liveops_fini(&c->x[--c->nx].live);
err_free:
	free(c->x);
	free(c);
	return ret;
}

void pvblk_ctl_stop(struct pvblk_ctl *c)
{
	if (!c)
		return;
	ctlsock_stop(c->sock);
	for (unsigned i = 0; i < c->nx; i++) {
		struct ctl_export *x = &c->x[i];

		if (x->live.view) {
			view_unexport(&x->nbd);
			pvblk_log("stopping with a view open: %s stays a delta "
				  "above %s", x->live.view->child,
				  x->live.view->frozen);
		}
		liveops_fini(&x->live);
	}
	free(c->x);
	free(c);
}
