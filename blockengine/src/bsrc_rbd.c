/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bsrc_rbd.c - a byte source over a Ceph RBD image (librbd's C API), named
 * rbd:POOL/IMAGE[@SNAP][:KEY=VALUE...] as qemu-img names it: conf=PATH
 * reads a ceph.conf, id=NAME picks the client (client.NAME), any other
 * key is handed to the cluster's configuration (rados_conf_set). A
 * snapshot opens read-only. A writable open takes RBD's exclusive lock
 * and keeps it (a second writer is refused, naming the image). The source
 * has no fd: the core moves its bytes through the ops, synchronously.
 * Block status comes from rbd_diff_iterate2 (allocated extents).
 * Checkpoints of the disk are RBD snapshots (rbd_track.c).
 *
 * Asynchronous I/O: a queue's read or write of the image becomes one
 * rbd_aio_readv/rbd_aio_writev; librbd's callback thread posts the result
 * into the queue's own io_uring as a CQE (IORING_OP_MSG_RING, through a
 * small ring of that thread), so the queue's loop and its eventfd learn of
 * it like of any file I/O and nothing blocks. Without MSG_RING (kernels
 * before 5.18) the core falls back to rbd_read/rbd_write in its thread.
 *
 * Also the raw image writer for rbd: names (vmdk convert ... rbd:POOL/IMG):
 * it creates the image and writes only the grains it is handed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <liburing.h>

#include <dlfcn.h>

#include "create.h"
#include "rbd_i.h"
#include "request.h"
#include "ring_tsan.h"

#define RBD_DEF(lib, f) __typeof__(f) *p_##f;
RBD_FUNCS(RBD_DEF)

static pthread_once_t rbd_load_once = PTHREAD_ONCE_INIT;
static char rbd_load_err[512];

static void rbd_load(void)
{
	void *rados = dlopen("librados.so.2", RTLD_NOW | RTLD_LOCAL);
	void *rbd = rados ? dlopen("librbd.so.1", RTLD_NOW | RTLD_LOCAL) : NULL;

	if (!rados || !rbd) {
		snprintf(rbd_load_err, sizeof(rbd_load_err), "cannot load %s "
			 "(Debian package %s): %s", rados ? "librbd.so.1" :
			 "librados.so.2", rados ? "librbd1" : "librados2",
			 dlerror());
		return;
	}
#define RBD_SYM(lib, f)                                                       \
	p_##f = (__typeof__(f) *)dlsym(lib, #f);                              \
	if (!p_##f) {                                                         \
		snprintf(rbd_load_err, sizeof(rbd_load_err),                  \
			 "symbol %s missing from lib%s", #f, #lib);            \
		return;                                                       \
	}
	RBD_FUNCS(RBD_SYM)
}

/* 0 once librbd is loaded, or -ENOTSUP with a message naming name. */
int rbd_loaded(const char *name)
{
	pthread_once(&rbd_load_once, rbd_load);
	if (rbd_load_err[0])
		return bdev_err(-ENOTSUP, "%s: Ceph RBD support is unavailable: "
				"%s", name, rbd_load_err);
	return 0;
}


struct rbd_spec {
	char *buf;        /* the writable copy the pointers below point into */
	const char *pool;
	const char *image;
	const char *snap; /* NULL: the image's head */
	const char *conf; /* NULL: librados' default search */
	const char *id;   /* NULL: client.admin */
	/* other KEY=VALUE pairs, in order, for rados_conf_set */
	const char *keys[16];
	const char *vals[16];
	unsigned nkv;
};

/* Splits name (rbd:POOL/IMAGE[@SNAP][:K=V]...) into sp. A ':' inside a
   value may be written as "\:". */
static int rbd_parse(const char *name, struct rbd_spec *sp)
{
	char *p, *field, *slash, *at;

	memset(sp, 0, sizeof(*sp));
	sp->buf = strdup(name + 4);
	if (!sp->buf)
		return bdev_err(-ENOMEM, "%s: out of memory", name);
	/* split on unescaped ':' in place */
	p = sp->buf;
	field = p;
	for (char *r = p, *w = p;; r++) {
		if (*r == '\\' && r[1] == ':') {
			*w++ = ':';
			r++;
			continue;
		}
		if (*r == ':' || *r == '\0') {
			bool last = *r == '\0';
			char *eq;

			*w = '\0';
			if (field != sp->buf) {
				eq = strchr(field, '=');
				if (!eq || eq == field)
					goto bad_kv;
				*eq = '\0';
				if (!strcmp(field, "conf"))
					sp->conf = eq + 1;
				else if (!strcmp(field, "id"))
					sp->id = eq + 1;
				else if (sp->nkv < 16) {
					sp->keys[sp->nkv] = field;
					sp->vals[sp->nkv++] = eq + 1;
				} else {
					free(sp->buf);
					return bdev_err(-EINVAL, "%s: more than 16 "
							"options", name);
				}
			}
			if (last)
				break;
			field = ++w;
			continue;
		}
		*w++ = *r;
	}
	slash = strchr(sp->buf, '/');
	if (!slash || slash == sp->buf || !slash[1]) {
		free(sp->buf);
		return bdev_err(-EINVAL, "%s: expected rbd:POOL/IMAGE[@SNAP]"
				"[:conf=PATH][:id=NAME]", name);
	}
	*slash = '\0';
	sp->pool = sp->buf;
	sp->image = slash + 1;
	at = strchr(slash + 1, '@');
	if (at) {
		*at = '\0';
		sp->snap = at + 1;
		if (!*sp->snap || !*sp->image) {
			free(sp->buf);
			return bdev_err(-EINVAL, "%s: expected a snapshot name "
					"after '@'", name);
		}
	}
	return 0;

bad_kv:
	free(sp->buf);
	return bdev_err(-EINVAL, "%s: option \"%s\" is not KEY=VALUE", name,
			field);
}

static void rbd_disconnect(struct rbd_conn *c)
{
	if (c->have_img)
		p_rbd_close(c->img);
	if (c->have_io)
		p_rados_ioctx_destroy(c->io);
	if (c->have_cluster)
		p_rados_shutdown(c->cluster);
	c->have_img = c->have_io = c->have_cluster = false;
}

/* Connects to the cluster and opens the pool named by sp. */
static int rbd_connect(const char *name, const struct rbd_spec *sp,
		       struct rbd_conn *c)
{
	int r;

	memset(c, 0, sizeof(*c));
	r = p_rados_create(&c->cluster, sp->id);
	if (r < 0)
		return bdev_err(r, "%s: cannot set up a cluster handle: %s",
				name, strerror(-r));
	c->have_cluster = true;
	r = p_rados_conf_read_file(c->cluster, sp->conf);
	if (r < 0) {
		bdev_err(r, "%s: cannot read the Ceph configuration %s: %s",
			 name, sp->conf ? sp->conf : "(default search path)",
			 strerror(-r));
		goto fail;
	}
	/* A client that cannot reach the cluster fails instead of waiting
	   forever; the caller's own keys below may change these. */
	p_rados_conf_set(c->cluster, "client_mount_timeout", "30");
	p_rados_conf_set(c->cluster, "rados_osd_op_timeout", "60");
	p_rados_conf_set(c->cluster, "rados_mon_op_timeout", "30");
	for (unsigned i = 0; i < sp->nkv; i++) {
		r = p_rados_conf_set(c->cluster, sp->keys[i], sp->vals[i]);
		if (r < 0) {
			bdev_err(r, "%s: Ceph option %s=%s refused: %s", name,
				 sp->keys[i], sp->vals[i], strerror(-r));
			goto fail;
		}
	}
	r = p_rados_connect(c->cluster);
	if (r < 0) {
		bdev_err(r, "%s: cannot connect to the Ceph cluster%s%s: %s",
			 name, sp->conf ? " of " : "", sp->conf ? sp->conf : "",
			 strerror(-r));
		goto fail;
	}
	r = p_rados_ioctx_create(c->cluster, sp->pool, &c->io);
	if (r < 0) {
		bdev_err(r, "%s: cannot open pool \"%s\": %s", name, sp->pool,
			 strerror(-r));
		goto fail;
	}
	c->have_io = true;
	return 0;
fail:
	rbd_disconnect(c);
	return r;
}

/* ---- the byte source ------------------------------------------------------ */

static ssize_t rbd_src_pread(struct bsrc *s, void *buf, size_t len,
			     uint64_t off)
{
	struct rbd_src *r = s->priv;
	size_t done = 0;

	if (off >= s->length)
		return 0;
	if (len > s->length - off)
		len = (size_t)(s->length - off);
	while (done < len) {
		ssize_t n = p_rbd_read(r->c.img, off + done, len - done,
				     (char *)buf + done);

		if (n < 0)
			return bdev_err((int)n, "%s: read of %zu bytes at offset "
					"%" PRIu64 " failed: %s", s->name,
					len - done, off + done,
					strerror((int)-n));
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static ssize_t rbd_src_pwrite(struct bsrc *s, const void *buf, size_t len,
			      uint64_t off)
{
	struct rbd_src *r = s->priv;
	size_t done = 0;

	if (off > s->length || len > s->length - off)
		return bdev_err(-ENOSPC, "%s: write of %zu bytes at offset %"
				PRIu64 " is past the image's end (%" PRIu64
				" bytes)", s->name, len, off, s->length);
	while (done < len) {
		ssize_t n = p_rbd_write(r->c.img, off + done, len - done,
				      (const char *)buf + done);

		if (n <= 0) {
			int e = n < 0 ? (int)-n : EIO;

			return bdev_err(-e, "%s: write of %zu bytes at offset %"
					PRIu64 " failed: %s", s->name, len - done,
					off + done, strerror(e));
		}
		done += (size_t)n;
	}
	atomic_fetch_add_explicit(&s->write_gen, 1, memory_order_release);
	return (ssize_t)len;
}

static int rbd_src_flush(struct bsrc *s)
{
	struct rbd_src *r = s->priv;
	int ret;

	if (!s->writable)
		return 0;
	ret = p_rbd_flush(r->c.img);
	if (ret < 0)
		return bdev_err(ret, "%s: flush failed: %s", s->name,
				strerror(-ret));
	return 0;
}

struct diff_first {
	uint64_t off;   /* asked about */
	bool found;
	uint64_t start; /* first allocated extent ending after off */
	uint64_t end;
};

static int diff_cb(uint64_t ofs, size_t len, int exists, void *arg)
{
	struct diff_first *d = arg;

	if (!exists || ofs + len <= d->off)
		return 0;
	if (!d->found) {
		d->found = true;
		d->start = ofs;
		d->end = ofs + len;
		return 0;
	}
	if (ofs == d->end) { /* adjacent: one run */
		d->end += len;
		return 0;
	}
	return -EEXIST; /* stop: the first run is known */
}

/* Data or hole at off, from the image's allocated extents. */
static int rbd_src_seek(const struct bsrc *s, uint64_t off, uint64_t *end)
{
	struct rbd_src *r = s->priv;
	struct diff_first d = { .off = off };
	uint64_t span = s->length - off;
	int ret;

	/* look at most 1 GiB ahead: the answer is a run, not the whole map */
	if (span > (1ull << 30))
		span = 1ull << 30;
	ret = p_rbd_diff_iterate2(r->c.img, NULL, off, span, 1, 1, diff_cb, &d);
	if (ret < 0 && ret != -EEXIST)
		return -1;
	if (!d.found) {
		*end = off + span;
		return 0;
	}
	if (d.start > off) {
		*end = d.start;
		return 0;
	}
	*end = d.end < s->length ? d.end : s->length;
	return 1;
}

/* The calling (librbd) thread's ring for MSG_RING, made on first use and
   freed when the thread ends. */
static pthread_key_t post_key;
static pthread_once_t post_once = PTHREAD_ONCE_INIT;

static void post_ring_free(void *p)
{
	ring_unmapping();
	io_uring_queue_exit(p);
	free(p);
}

static void post_key_make(void)
{
	if (pthread_key_create(&post_key, post_ring_free))
		abort(); /* only when the process is out of keys */
}

/* Posts res as a CQE with user_data into the ring ring_fd. */
static int post_cqe(int ring_fd, void *user_data, int res)
{
	struct io_uring *ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int ret;

	pthread_once(&post_once, post_key_make);
	ring = pthread_getspecific(post_key);
	if (!ring) {
		ring = calloc(1, sizeof(*ring));
		if (!ring || io_uring_queue_init(2, ring, 0) < 0) {
			free(ring);
			return -ENOMEM;
		}
		ring_mapped();
		pthread_setspecific(post_key, ring);
	}
	sqe = io_uring_get_sqe(ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_msg_ring(sqe, ring_fd, (unsigned)res,
			       (uint64_t)(uintptr_t)user_data, 0);
	ret = io_uring_submit_and_wait(ring, 1);
	if (ret < 0)
		return ret;
	ret = io_uring_wait_cqe(ring, &cqe);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return ret < 0 ? ret : 0;
}

struct rbd_aio {
	struct bsub *sub;
	int ring_fd;
	bool write;
	uint64_t len;
};

static void rbd_aio_done(rbd_completion_t c, void *arg)
{
	struct rbd_aio *a = arg;
	ssize_t ret = p_rbd_aio_get_return_value(c);
	int res;

	/* a write's return value is 0 for all of it, a read's the bytes */
	if (a->write && ret == 0)
		ret = (ssize_t)a->len;
	res = ret < 0 ? (int)ret : ret > INT32_MAX ? -EIO : (int)ret;

	p_rbd_aio_release(c);
	/* the posting can only fail for lack of memory or a ring that is
	   gone; the queue would then wait for ever, so keep trying */
	while (post_cqe(a->ring_fd, a->sub, res) < 0)
		usleep(1000);
	free(a);
}

static int rbd_src_aio(struct bsrc *s, struct bsub *sub, int ring_fd)
{
	struct rbd_src *r = s->priv;
	bool write = sub->kind == BSUB_WRITE;
	rbd_completion_t c;
	struct rbd_aio *a;
	int ret;

	if (sub->kind != BSUB_READ && sub->kind != BSUB_WRITE)
		return bdev_err(-EOPNOTSUPP, "%s: no asynchronous operation "
				"%d", s->name, (int)sub->kind);
	if (write && !s->writable)
		return bdev_err(-EROFS, "%s: source is read-only", s->name);
	a = malloc(sizeof(*a));
	if (!a)
		return bdev_err(-ENOMEM, "%s: out of memory", s->name);
	a->sub = sub;
	a->ring_fd = ring_fd;
	a->write = write;
	a->len = sub->left;
	ret = p_rbd_aio_create_completion(a, rbd_aio_done, &c);
	if (ret < 0) {
		free(a);
		return bdev_err(ret, "%s: cannot start I/O: %s", s->name,
				strerror(-ret));
	}
	ret = write ? p_rbd_aio_writev(r->c.img, sub->iov, sub->iovcnt,
				     sub->off, c)
		    : p_rbd_aio_readv(r->c.img, sub->iov, sub->iovcnt,
				    sub->off, c);
	if (ret < 0) {
		p_rbd_aio_release(c);
		free(a);
		return bdev_err(ret, "%s: %s of %" PRIu64 " bytes at offset %"
				PRIu64 " failed to start: %s", s->name,
				write ? "write" : "read", sub->left, sub->off,
				strerror(-ret));
	}
	return 0;
}

/* Whether this kernel can post into another ring (IORING_OP_MSG_RING). */
static bool msg_ring_usable(void)
{
	static int usable = -1;
	int u = __atomic_load_n(&usable, __ATOMIC_RELAXED);

	if (u < 0) {
		struct io_uring_probe *p = io_uring_get_probe();

		u = p && io_uring_opcode_supported(p, IORING_OP_MSG_RING);
		if (p)
			io_uring_free_probe(p);
		__atomic_store_n(&usable, u, __ATOMIC_RELAXED);
	}
	return u;
}

static void rbd_src_close(struct bsrc *s)
{
	struct rbd_src *r = s->priv;

	if (r) {
		rbd_track_free(r);
		rbd_disconnect(&r->c);
		pthread_mutex_destroy(&r->mu);
		free(r);
	}
	free(s->name);
	free(s);
}

static const struct bsrc_ops bsrc_rbd_ops = {
	.kind = "rbd",
	.pread = rbd_src_pread,
	.pwrite = rbd_src_pwrite,
	.flush = rbd_src_flush,
	.seek = rbd_src_seek,
	.close = rbd_src_close,
	.track = &rbd_track_ops,
};

static const struct bsrc_ops bsrc_rbd_ro_ops = {
	.kind = "rbd",
	.pread = rbd_src_pread,
	.seek = rbd_src_seek,
	.close = rbd_src_close,
	.track = &rbd_track_ops,
};

/* The same with asynchronous I/O through the queues' rings. */
static const struct bsrc_ops bsrc_rbd_aio_ops = {
	.kind = "rbd",
	.pread = rbd_src_pread,
	.pwrite = rbd_src_pwrite,
	.flush = rbd_src_flush,
	.seek = rbd_src_seek,
	.aio = rbd_src_aio,
	.close = rbd_src_close,
	.track = &rbd_track_ops,
};

static const struct bsrc_ops bsrc_rbd_ro_aio_ops = {
	.kind = "rbd",
	.pread = rbd_src_pread,
	.seek = rbd_src_seek,
	.aio = rbd_src_aio,
	.close = rbd_src_close,
	.track = &rbd_track_ops,
};

int bsrc_open_rbd(const char *path, bool writable, struct bsrc **out)
{
	struct rbd_spec sp;
	struct rbd_src *r;
	struct bsrc *s;
	uint64_t size;
	int ret;

	ret = rbd_loaded(path);
	if (ret < 0)
		return ret;
	ret = rbd_parse(path, &sp);
	if (ret < 0)
		return ret;
	if (writable && sp.snap) {
		ret = bdev_err(-EROFS, "%s: snapshot \"%s\" is read-only; open "
			       "it without writing, or open the image's head",
			       path, sp.snap);
		goto out_spec;
	}
	s = calloc(1, sizeof(*s));
	r = calloc(1, sizeof(*r));
	if (!s || !r || !(s->name = strdup(path))) {
		free(s);
		free(r);
		ret = bdev_err(-ENOMEM, "%s: out of memory", path);
		goto out_spec;
	}
	pthread_mutex_init(&r->mu, NULL);
	s->fd = -1;
	s->priv = r;
	if (msg_ring_usable() && !getenv("OVK_RBD_SYNC"))
		s->ops = writable ? &bsrc_rbd_aio_ops : &bsrc_rbd_ro_aio_ops;
	else
		s->ops = writable ? &bsrc_rbd_ops : &bsrc_rbd_ro_ops;
	s->writable = writable;
	ret = rbd_connect(path, &sp, &r->c);
	if (ret < 0)
		goto out_src;
	ret = writable ? p_rbd_open(r->c.io, sp.image, &r->c.img, NULL)
		       : p_rbd_open_read_only(r->c.io, sp.image, &r->c.img,
					    sp.snap);
	if (ret < 0) {
		bdev_err(ret, "%s: cannot open image \"%s\"%s%s in pool \"%s\": %s",
			 path, sp.image, sp.snap ? " at snapshot " : "",
			 sp.snap ? sp.snap : "", sp.pool, strerror(-ret));
		goto out_src;
	}
	r->c.have_img = true;
	if (writable) {
		/* one writer: the lock is kept until close (a peer asking
		   for it is refused) */
		uint64_t features = 0;

		if (p_rbd_get_features(r->c.img, &features) == 0 &&
		    !(features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
			ret = bdev_err(-ENOTSUP, "%s: image \"%s/%s\" has no "
				       "exclusive-lock feature, which keeps it "
				       "to one writer; enable it (rbd feature "
				       "enable %s/%s exclusive-lock) or open it "
				       "read-only", path, sp.pool, sp.image,
				       sp.pool, sp.image);
			goto out_src;
		}
		ret = p_rbd_lock_acquire(r->c.img, RBD_LOCK_MODE_EXCLUSIVE);
		if (ret < 0) {
			bdev_err(-EBUSY, "%s: image \"%s/%s\" is in use: another "
				 "client holds its exclusive lock (%s)", path,
				 sp.pool, sp.image, strerror(-ret));
			ret = -EBUSY;
			goto out_src;
		}
	}
	ret = p_rbd_get_size(r->c.img, &size);
	if (ret < 0) {
		bdev_err(ret, "%s: cannot read the image's size: %s", path,
			 strerror(-ret));
		goto out_src;
	}
	s->length = size;
	free(sp.buf);
	*out = s;
	return 0;

out_src:
	rbd_src_close(s);
out_spec:
	free(sp.buf);
	return ret;
}

/* ---- the raw writer ------------------------------------------------------- */

struct rbd_writer {
	struct bdev_writer w;
	char *name;
	struct rbd_spec sp;
	struct rbd_conn c;
	/* writes in flight (rbd_aio_write of a copy), completed in order */
	rbd_completion_t comp[8];
	void *bufs[8];
	uint64_t offs[8];
	size_t lens[8];
	unsigned head, count;
	int error;
	/* the ring above: bdev_copy's workers write from several threads */
	pthread_mutex_t mu;
};

/* Waits for the oldest write in flight; remembers its error. */
static int rbdw_reap(struct rbd_writer *r)
{
	unsigned i = r->head;
	ssize_t ret;

	p_rbd_aio_wait_for_complete(r->comp[i]);
	ret = p_rbd_aio_get_return_value(r->comp[i]);
	p_rbd_aio_release(r->comp[i]);
	free(r->bufs[i]);
	r->bufs[i] = NULL;
	r->head = (r->head + 1) % 8;
	r->count--;
	if (ret < 0 && !r->error)
		r->error = bdev_err((int)ret, "%s: write of %zu bytes at offset "
				    "%" PRIu64 " failed: %s", r->name, r->lens[i],
				    r->offs[i], strerror((int)-ret));
	return r->error;
}

static int rbdw_write(struct bdev_writer *w, uint64_t off, const void *buf,
		      size_t len)
{
	struct rbd_writer *r = (struct rbd_writer *)w;
	void *copy = malloc(len);
	unsigned i;
	int ret;

	if (!copy)
		return bdev_err(-ENOMEM, "%s: out of memory", r->name);
	memcpy(copy, buf, len);
	pthread_mutex_lock(&r->mu);
	if (r->count == 8)
		rbdw_reap(r);
	ret = r->error;
	if (ret < 0)
		goto out;
	i = (r->head + r->count) % 8;
	ret = p_rbd_aio_create_completion(NULL, NULL, &r->comp[i]);
	if (ret == 0) {
		ret = p_rbd_aio_write(r->c.img, off, len, copy, r->comp[i]);
		if (ret < 0)
			p_rbd_aio_release(r->comp[i]);
	}
	if (ret < 0) {
		ret = bdev_err(ret, "%s: write of %zu bytes at offset %" PRIu64
			       " failed: %s", r->name, len, off, strerror(-ret));
		goto out;
	}
	r->bufs[i] = copy;
	copy = NULL;
	r->offs[i] = off;
	r->lens[i] = len;
	r->count++;
out:
	pthread_mutex_unlock(&r->mu);
	free(copy);
	return ret;
}

static void rbdw_free(struct rbd_writer *r, bool remove)
{
	while (r->count)
		rbdw_reap(r);
	if (r->c.have_img) {
		p_rbd_close(r->c.img);
		r->c.have_img = false;
	}
	if (remove && r->c.have_io)
		p_rbd_remove(r->c.io, r->sp.image);
	rbd_disconnect(&r->c);
	pthread_mutex_destroy(&r->mu);
	free(r->sp.buf);
	free(r->name);
	free(r);
}

static int rbdw_finish(struct bdev_writer *w, uint64_t *length)
{
	struct rbd_writer *r = (struct rbd_writer *)w;
	int ret;

	*length = w->size;
	while (r->count)
		rbdw_reap(r);
	ret = r->error;
	if (!ret) {
		ret = p_rbd_flush(r->c.img);
		if (ret < 0)
			ret = bdev_err(ret, "%s: flush failed: %s", r->name,
				       strerror(-ret));
	}
	rbdw_free(r, ret < 0);
	return ret;
}

static void rbdw_abort(struct bdev_writer *w)
{
	rbdw_free((struct rbd_writer *)w, true);
}

int rbd_writer_new(const char *path, uint64_t size, struct bdev_writer **out)
{
	struct rbd_writer *r = calloc(1, sizeof(*r));
	int order = 0, ret;

	if (!r || !(r->name = strdup(path))) {
		free(r);
		return bdev_err(-ENOMEM, "%s: out of memory", path);
	}
	ret = rbd_loaded(path);
	if (ret < 0) {
		free(r->name);
		free(r);
		return ret;
	}
	ret = rbd_parse(path, &r->sp);
	if (ret < 0) {
		free(r->name);
		free(r);
		return ret;
	}
	if (r->sp.snap) {
		ret = bdev_err(-EINVAL, "%s: a new image cannot be a snapshot "
			       "(drop \"@%s\")", path, r->sp.snap);
		goto fail;
	}
	ret = rbd_connect(path, &r->sp, &r->c);
	if (ret < 0)
		goto fail;
	ret = p_rbd_create(r->c.io, r->sp.image, size, &order);
	if (ret < 0) {
		if (ret == -EEXIST)
			ret = bdev_err(ret, "%s: image \"%s\" exists in pool "
				       "\"%s\"; refusing to overwrite it", path,
				       r->sp.image, r->sp.pool);
		else
			ret = bdev_err(ret, "%s: cannot create image \"%s\" in "
				       "pool \"%s\": %s", path, r->sp.image,
				       r->sp.pool, strerror(-ret));
		goto fail;
	}
	ret = p_rbd_open(r->c.io, r->sp.image, &r->c.img, NULL);
	if (ret < 0) {
		p_rbd_remove(r->c.io, r->sp.image);
		ret = bdev_err(ret, "%s: cannot open the new image: %s", path,
			       strerror(-ret));
		goto fail;
	}
	r->c.have_img = true;
	pthread_mutex_init(&r->mu, NULL);
	r->w.size = size;
	r->w.grain = 4096;
	r->w.write = rbdw_write;
	r->w.finish = rbdw_finish;
	r->w.abort = rbdw_abort;
	*out = &r->w;
	return 0;
fail:
	rbd_disconnect(&r->c);
	free(r->sp.buf);
	free(r->name);
	free(r);
	return ret;
}
