/* SPDX-License-Identifier: Apache-2.0 */
/*
 * control.c - pvblk's control socket: status, checkpoints, what changed
 * since one, and views (a frozen point-in-time parent of the running disk,
 * optionally exported read-only over NBD) released by a live commit.
 * One thread polls the socket and its clients and runs each request to
 * completion; the engine calls it makes are safe against the I/O threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"

/* Changed extents per reply of "changed"; "next" says where to go on. */
#define CHANGED_MAX_EXTENTS 8192

struct ctl_client {
	int fd;
	size_t len;
	char buf[PVBLK_CTL_MAX_LINE + 1];
};

struct ctl_view {
	char *frozen;  /* the frozen layer: the point-in-time view */
	char *child;   /* where the running disk's writes go meanwhile */
	char *checkpoint; /* started with the view, or NULL */
	struct pvblk_export export; /* open only while exported over NBD */
	struct pvblk_listen listen;
	bool exported; /* listen is serving export */
};

struct pvblk_ctl {
	char *path;
	int listen_fd;
	int stop_pipe[2];
	pthread_t thread;
	struct pvblk_export *e;
	struct pvblk_listen *listen;
	unsigned nlisten;
	char *top;           /* the file the running disk writes to */
	struct ctl_view *view;
	struct ctl_client clients[PVBLK_CTL_MAX_CLIENTS];
};

static const char *engine_msg(int ret)
{
	const char *msg = bdev_errmsg();

	return *msg ? msg : strerror(-ret);
}

static json_t *error_reply(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static json_t *error_reply(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return json_pack("{s:s}", "error", buf);
}

static json_t *ok(json_t *ret)
{
	return json_pack("{s:o}", "return", ret ? ret : json_object());
}

static json_t *checkpoints(struct bdev *b)
{
	json_t *a = json_array();
	const char *name;

	for (unsigned i = 0; bdev_checkpoint_get(b, i, &name) == 0; i++)
		json_array_append_new(a, json_string(name));
	return a;
}

static json_t *view_json(const struct ctl_view *v)
{
	json_t *o = json_pack("{s:s,s:s}", "path", v->frozen, "child",
			      v->child);

	json_object_set_new(o, "checkpoint", v->checkpoint ?
			    json_string(v->checkpoint) : json_null());
	if (v->exported) {
		char uri[256];

		snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s",
			 v->listen.address + 5);
		json_object_set_new(o, "nbd", json_string(uri));
	} else {
		json_object_set_new(o, "nbd", json_null());
	}
	return o;
}

/* The listener's "io" counters and, for a protocol with queues, its
   "vrings" (index, requests, why it broke or null). */
static void io_json(struct pvblk_listen *l, json_t *x)
{
	struct pvblk_io_stats *st = calloc(1, sizeof(*st));

	if (!st)
		return;
	l->proto->stats(l, st);
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

static json_t *do_status(struct pvblk_ctl *c)
{
	json_t *chain = json_array(), *exports = json_array(), *st;
	struct bdev_info in;

	for (struct bdev *b = c->e->bdev; b; b = bdev_backing(b)) {
		if (bdev_get_info(b, &in) < 0)
			break;
		json_array_append_new(chain, json_pack(
			"{s:s,s:s,s:s?}", "file", in.filename, "format",
			in.format, "subformat", in.subformat));
	}
	for (unsigned i = 0; i < c->nlisten; i++) {
		struct pvblk_listen *l = &c->listen[i];
		json_t *x = json_pack("{s:s,s:s,s:s?,s:i}", "protocol",
				      l->proto->name, "address", l->address,
				      "name", l->export_name, "queues",
				      (int)l->num_queues);

		if (l->proto->connections)
			json_object_set_new(x, "connections", json_integer(
				l->proto->connections(l)));
		if (l->proto->stats)
			io_json(l, x);
		json_array_append_new(exports, x);
	}
	st = json_pack("{s:s,s:s,s:I,s:b,s:o,s:o,s:o}", "image", c->e->image,
		       "top", c->top, "size", (json_int_t)c->e->size,
		       "read_only", c->e->read_only, "chain", chain,
		       "exports", exports, "checkpoints",
		       checkpoints(c->e->bdev));
	json_object_set_new(st, "view", c->view ? view_json(c->view)
					       : json_null());
	{
		struct bdev_stats bs;

		bdev_get_stats(c->e->bdev, &bs);
		json_object_set_new(st, "engine", json_pack(
			"{s:I,s:I,s:I,s:I,s:I,s:I}",
			"gt_cache_hits", (json_int_t)bs.gt_cache_hits,
			"gt_cache_misses", (json_int_t)bs.gt_cache_misses,
			"grain_cache_hits", (json_int_t)bs.grain_cache_hits,
			"grain_cache_misses", (json_int_t)bs.grain_cache_misses,
			"grains_inflated", (json_int_t)bs.grains_inflated,
			"readahead_grains", (json_int_t)bs.readahead_grains));
	}
	return ok(st);
}

static json_t *do_changed(struct pvblk_ctl *c, const struct pvblk_ctl_req *r)
{
	uint64_t end = r->length ? r->offset + r->length : c->e->size;
	uint64_t off = r->offset, run_off = 0, run_len = 0;
	json_t *ext = json_array();
	size_t n = 0;

	if (r->offset > c->e->size || end > c->e->size || end < r->offset) {
		json_decref(ext);
		return error_reply("range %llu+%llu is past the disk's end "
				   "(%llu bytes)",
				   (unsigned long long)r->offset,
				   (unsigned long long)r->length,
				   (unsigned long long)c->e->size);
	}
	while (off < end) {
		uint64_t pnum;
		int ch = bdev_changed_status(c->e->bdev, r->name, off,
					     end - off, &pnum);

		if (ch < 0) {
			json_decref(ext);
			return error_reply("changed since %s: %s", r->name,
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
			if (n == CHANGED_MAX_EXTENTS) {
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
	return ok(json_pack("{s:o,s:o,s:I}", "extents", ext, "next",
			    off < end ? json_integer((json_int_t)off)
				      : json_null(),
			    "size", (json_int_t)c->e->size));
}

static void view_free(struct ctl_view *v)
{
	if (!v)
		return;
	free(v->frozen);
	free(v->child);
	free(v->checkpoint);
	free((char *)v->listen.address);
	free(v);
}

/* BASE-live-N.vmdk beside the top layer (BASE: the top's name without
   .vmdk and without a -live-N of its own), a name not in use. */
static int make_child(struct pvblk_ctl *c, struct ctl_view *v)
{
	size_t n = strlen(c->top);
	int ret = -EEXIST;

	if (n > 5 && !strcmp(c->top + n - 5, ".vmdk"))
		n -= 5;
	/* a child of a child (no live commit in between) is numbered on
	   from the same base name, not named X-live-1-live-1 */
	{
		size_t k = n;

		while (k && c->top[k - 1] >= '0' && c->top[k - 1] <= '9')
			k--;
		if (k < n && k >= 6 && !strncmp(c->top + k - 6, "-live-", 6))
			n = k - 6;
	}
	for (unsigned i = 1; i < 1000 && ret == -EEXIST; i++) {
		free(v->child);
		if (asprintf(&v->child, "%.*s-live-%u.vmdk", (int)n, c->top,
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

static json_t *do_view_create(struct pvblk_ctl *c,
			      const struct pvblk_ctl_req *r)
{
	struct ctl_view *v;
	char err[512];
	int ret;

	if (c->view)
		return error_reply("a view of %s is open already: release it "
				   "(view-release) first", c->view->frozen);
	if (c->e->read_only)
		return error_reply("%s is served read-only: it does not change, "
				   "open it directly instead of a view",
				   c->top);
	v = calloc(1, sizeof(*v));
	if (!v || !(v->frozen = strdup(c->top)) || make_child(c, v) < 0) {
		view_free(v);
		return error_reply("out of memory or no free child name "
				   "beside %s", c->top);
	}
	if (r->name) {
		ret = bdev_checkpoint_create(c->e->bdev, r->name);
		if (ret < 0) {
			view_free(v);
			return error_reply("checkpoint %s: %s", r->name,
					   engine_msg(ret));
		}
		v->checkpoint = strdup(r->name);
	}
	ret = bdev_snapshot(c->e->bdev, v->child);
	if (ret == 0)
		ret = bdev_snapshot_wait(c->e->bdev);
	if (ret < 0) {
		json_t *rep = error_reply("snapshot of %s into %s: %s",
					  c->top, v->child, engine_msg(ret));

		if (r->name)
			bdev_checkpoint_delete(c->e->bdev, r->name);
		view_free(v);
		return rep;
	}
	free(c->top);
	c->top = strdup(v->child);
	c->view = v;
	pvblk_log("view: %s is frozen; writes go to %s", v->frozen,
		  v->child);
	if (r->nbd) {
		ret = pvblk_export_open(&v->export, v->frozen, "ro", NULL,
					NULL);
		if (ret < 0)
			return error_reply("the view %s is made but cannot be "
					   "opened for NBD: %s", v->frozen,
					   strerror(-ret));
		v->listen.proto = pvblk_protocol_nbd;
		v->listen.address = strdup(r->nbd);
		v->listen.num_queues = 1;
		v->listen.export = &v->export;
		err[0] = '\0';
		ret = pvblk_protocol_nbd->start(&v->listen, err, sizeof(err));
		if (ret < 0) {
			pvblk_export_close(&v->export, false);
			return error_reply("the view %s is made but its NBD "
					   "export at %s failed: %s", v->frozen,
					   r->nbd, err[0] ? err : "cannot "
					   "start");
		}
		v->exported = true;
		pvblk_log("view: %s exported read-only at %s", v->frozen,
			  r->nbd);
	}
	return ok(view_json(v));
}

/* Close the view's own NBD export, if any. */
static void view_unexport(struct ctl_view *v)
{
	if (!v->exported)
		return;
	v->listen.proto->stop(&v->listen);
	pvblk_export_close(&v->export, false);
	v->exported = false;
}

static json_t *do_view_release(struct pvblk_ctl *c)
{
	struct ctl_view *v = c->view;
	json_t *rep;
	int ret;

	if (!v)
		return error_reply("no view is open");
	view_unexport(v);
	/* the child goes back into the frozen layer while the disk runs */
	ret = bdev_commit_live(c->e->bdev);
	if (ret < 0)
		return error_reply("live commit of %s into %s: %s%s", v->child,
				   v->frozen, engine_msg(ret),
				   ret == -EBUSY ? " (busy: unmount or close "
				   "what reads the view, then release again)"
				   : "");
	free(c->top);
	c->top = strdup(v->frozen);
	pvblk_log("view released: %s committed into %s", v->child,
		  v->frozen);
	rep = ok(json_pack("{s:s,s:b}", "top", c->top, "committed", 1));
	c->view = NULL;
	view_free(v);
	return rep;
}

static json_t *do_grow(struct pvblk_ctl *c, const struct pvblk_ctl_req *r)
{
	int ret, told = 0;

	if (r->size < c->e->size)
		return error_reply("grow to %llu bytes: the disk has %llu "
				   "already; it never shrinks",
				   (unsigned long long)r->size,
				   (unsigned long long)c->e->size);
	ret = bdev_grow(c->e->bdev, r->size);
	if (ret < 0)
		return error_reply("grow %s to %llu bytes: %s", c->top,
				   (unsigned long long)r->size,
				   engine_msg(ret));
	c->e->size = r->size;
	/* vhost-user front ends hear of it at once and interrupt their
	   guest; NBD clients see it when they connect again */
	for (unsigned i = 0; i < c->nlisten; i++) {
		struct pvblk_listen *l = &c->listen[i];

		if (l->proto->resized && l->proto->resized(l) > 0)
			told++;
	}
	return ok(json_pack("{s:I,s:i}", "size", (json_int_t)r->size,
			    "clients_told", told));
}

static json_t *run(struct pvblk_ctl *c, const struct pvblk_ctl_req *r)
{
	int ret;

	switch (r->cmd) {
	case CTL_STATUS:
		return do_status(c);
	case CTL_CHECKPOINT_CREATE:
		ret = bdev_checkpoint_create(c->e->bdev, r->name);
		if (ret < 0)
			return error_reply("checkpoint-create %s: %s", r->name,
					   engine_msg(ret));
		return ok(json_pack("{s:s}", "name", r->name));
	case CTL_CHECKPOINT_DELETE:
		ret = bdev_checkpoint_delete(c->e->bdev, r->name);
		if (ret < 0)
			return error_reply("checkpoint-delete %s: %s", r->name,
					   engine_msg(ret));
		return ok(NULL);
	case CTL_CHECKPOINT_LIST:
		return ok(json_pack("{s:o}", "checkpoints",
				    checkpoints(c->e->bdev)));
	case CTL_CHANGED:
		return do_changed(c, r);
	case CTL_VIEW_CREATE:
		return do_view_create(c, r);
	case CTL_VIEW_RELEASE:
		return do_view_release(c);
	case CTL_GROW:
		return do_grow(c, r);
	}
	return error_reply("unhandled command");
}

static void drop(struct ctl_client *cl)
{
	close(cl->fd);
	cl->fd = -1;
	cl->len = 0;
}

/* Send one reply line; a client that does not take it within the send
   timeout is dropped. */
static void send_reply(struct ctl_client *cl, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t len, off = 0;

	json_decref(msg);
	if (!text) {
		drop(cl);
		return;
	}
	len = strlen(text);
	text[len++] = '\n'; /* replaces the NUL: json_dumps' buffer has it */
	while (off < len) {
		ssize_t w = send(cl->fd, text + off, len - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			drop(cl);
			break;
		}
		off += (size_t)w;
	}
	free(text);
}

static void handle_line(struct pvblk_ctl *c, struct ctl_client *cl,
			const char *line, size_t len)
{
	struct pvblk_ctl_req r;
	char err[512];
	void *owner;

	if (pvblk_ctl_parse(line, len, &r, &owner, err, sizeof(err)) < 0) {
		send_reply(cl, error_reply("%s", err));
		return;
	}
	send_reply(cl, run(c, &r));
	pvblk_ctl_free(owner);
}

static void client_input(struct pvblk_ctl *c, struct ctl_client *cl)
{
	ssize_t r = recv(cl->fd, cl->buf + cl->len,
			 sizeof(cl->buf) - 1 - cl->len, 0);
	char *nl;

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) {
		drop(cl);
		return;
	}
	cl->len += (size_t)r;
	while (cl->fd >= 0 && (nl = memchr(cl->buf, '\n', cl->len))) {
		size_t used = (size_t)(nl - cl->buf) + 1;

		if (nl > cl->buf)
			handle_line(c, cl, cl->buf, (size_t)(nl - cl->buf));
		if (cl->fd < 0)
			return;
		memmove(cl->buf, cl->buf + used, cl->len - used);
		cl->len -= used;
	}
	if (cl->fd >= 0 && cl->len == sizeof(cl->buf) - 1) {
		send_reply(cl, error_reply("request line longer than %d bytes",
					   PVBLK_CTL_MAX_LINE));
		if (cl->fd >= 0)
			drop(cl);
	}
}

static void accept_client(struct pvblk_ctl *c)
{
	struct timeval tv = { .tv_sec = 5 };
	int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < PVBLK_CTL_MAX_CLIENTS; i++)
		if (c->clients[i].fd < 0) {
			/* a client that stops reading its replies cannot
			   hold the control thread for long */
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv,
				   sizeof(tv));
			c->clients[i].fd = fd;
			c->clients[i].len = 0;
			return;
		}
	close(fd); /* too many clients */
}

static void *ctl_thread(void *arg)
{
	struct pvblk_ctl *c = arg;
	struct pollfd pfd[PVBLK_CTL_MAX_CLIENTS + 2];
	int who[PVBLK_CTL_MAX_CLIENTS + 2];

	for (;;) {
		int n = 0;

		pfd[n++] = (struct pollfd){ .fd = c->stop_pipe[0],
					    .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = c->listen_fd,
					    .events = POLLIN };
		for (int i = 0; i < PVBLK_CTL_MAX_CLIENTS; i++)
			if (c->clients[i].fd >= 0) {
				who[n] = i;
				pfd[n++] = (struct pollfd){
					.fd = c->clients[i].fd,
					.events = POLLIN };
			}
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			pvblk_log("--api-socket %s: poll: %s", c->path,
				  strerror(errno));
			return NULL;
		}
		if (pfd[0].revents)
			return NULL;
		/* clients first: those that hung up free their slots before
		   a new connection is counted against the limit */
		for (int i = 2; i < n; i++)
			if (pfd[i].revents)
				client_input(c, &c->clients[who[i]]);
		if (pfd[1].revents)
			accept_client(c);
	}
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		pvblk_log("--api-socket %s: path longer than %zu bytes", path,
			  sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	/* a socket left by a daemon that was killed is replaced; any other
	   file is not touched */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, 0600) < 0 ||
	    listen(fd, PVBLK_CTL_MAX_CLIENTS) < 0) {
		err = -errno;
		pvblk_log("--api-socket %s: %s", path, strerror(errno));
		close(fd);
		return err;
	}
	return fd;
}

int pvblk_ctl_start(const char *path, struct pvblk_export *e,
		    struct pvblk_listen *listen, unsigned nlisten,
		    struct pvblk_ctl **out)
{
	struct pvblk_ctl *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	c->e = e;
	c->listen = listen;
	c->nlisten = nlisten;
	c->path = strdup(path);
	/* absolute, so that the view paths it answers mean the same file
	   to a client in another folder */
	c->top = realpath(e->snapshot_child ? e->snapshot_child : e->image,
			  NULL);
	if (!c->top) {
		ret = -errno;
		free(c->path);
		free(c);
		return ret;
	}
	for (int i = 0; i < PVBLK_CTL_MAX_CLIENTS; i++)
		c->clients[i].fd = -1;
	if (pipe2(c->stop_pipe, O_CLOEXEC) < 0) {
		ret = -errno;
		goto err_free;
	}
	ret = c->listen_fd = listen_unix(path);
	if (ret < 0)
		goto err_pipe;
	ret = -pthread_create(&c->thread, NULL, ctl_thread, c);
	if (ret < 0) {
		pvblk_log("--api-socket %s: no thread: %s", path,
			  strerror(-ret));
		goto err_listen;
	}
	*out = c;
	return 0;

err_listen:
	close(c->listen_fd);
	unlink(path);
err_pipe:
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
err_free:
	free(c->top);
	free(c->path);
	free(c);
	return ret;
}

void pvblk_ctl_stop(struct pvblk_ctl *c)
{
	if (!c)
		return;
	if (write(c->stop_pipe[1], "", 1) < 0)
		pvblk_log("--api-socket %s: cannot wake its thread", c->path);
	pthread_join(c->thread, NULL);
	for (int i = 0; i < PVBLK_CTL_MAX_CLIENTS; i++)
		if (c->clients[i].fd >= 0)
			close(c->clients[i].fd);
	close(c->listen_fd);
	unlink(c->path);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	if (c->view) {
		view_unexport(c->view);
		pvblk_log("stopping with a view open: %s stays a delta above "
			  "%s", c->view->child, c->view->frozen);
		view_free(c->view);
	}
	free(c->top);
	free(c->path);
	free(c);
}
