/* SPDX-License-Identifier: Apache-2.0 */
/*
 * read.c - reads: splitting a request into the runs each layer maps and
 * sending them down the chain: DATA with io_uring straight into the caller's
 * iovecs, ZERO as memset, UNALLOC to the parent layer, COMPRESSED through
 * the inflated-grain cache (reading and inflating records on a miss, with
 * read-ahead for sequential readers). A grain table not in memory is read
 * by the offload pool; the request goes on from there when it is cached.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "grain_cache.h"
#include "request.h"

/* Finds the read of (gc, src, off) in flight on q. */
static struct gread *gread_find(struct bdev_queue *q, struct grain_cache *gc,
				const struct bsrc *src, uint64_t off)
{
	struct gread *gr;

	for (gr = q->greads; gr; gr = gr->next)
		if (gr->gc == gc && gr->m.src == src && gr->m.src_off == off)
			return gr;
	return NULL;
}

/* A waiter that wants the whole grain in one contiguous buffer: the
   record can be inflated straight into it. */
static struct gwait *gread_direct_waiter(const struct gread *gr)
{
	for (struct gwait *w = gr->waiters; w; w = w->next)
		if (w->goff == 0 && w->len == gr->m.grain_size &&
		    w->iovcnt == 1 && w->iov[0].iov_len == w->len)
			return w;
	return NULL;
}

/*
 * Picks where gr's grain inflates. When one waiter wants the whole grain
 * in one buffer, straight into it (no cache entry, no copy: a sequential
 * reader of whole grains does not churn the cache); otherwise into a new
 * cache entry that each waiter copies its part out of. out stays NULL when
 * memory is short (gread_inflate says so).
 */
static void gread_prepare(struct gread *gr)
{
	if (gr->out)
		return;
	gr->direct = gread_direct_waiter(gr);
	if (gr->direct) {
		gr->out = gr->direct->iov[0].iov_base;
		return;
	}
	gr->entry = gcache_entry_new(gr->m.grain_size);
	gr->out = gr->entry ? gr->entry->data : NULL;
}

/* Records how gr failed, with this thread's message (the waiters are
   served on the queue's thread). */
static void gread_fail(struct gread *gr, int err)
{
	gr->err = err;
	if (err != -ECANCELED)
		gr->errmsg = strdup(bdev_errmsg());
}

/*
 * Inflates gr's record into gr->out and caches the grain when it went to
 * a cache entry. Runs on the queue's thread or on a pool worker, so it
 * touches the layer only between gcache_decode_begin() and _end(): a
 * read-ahead may outlive its layer's close.
 */
static void gread_inflate(struct gread *gr)
{
	struct bdev *b = gr->layer;
	int err;

	if (!gcache_decode_begin(gr->gc)) {
		/* the layer closed under a read-ahead */
		gread_fail(gr, -ECANCELED);
		return;
	}
	if (!gr->out)
		err = bdev_err(-ENOMEM, "%s: out of memory inflating a grain",
			       b->filename);
	else
		err = b->fmt->decode(b, &gr->m, gr->buf, (size_t)gr->got,
				     gr->out);
	if (!err) {
		atomic_fetch_add(&b->stats.inflated, 1);
		if (gr->readahead)
			atomic_fetch_add(&b->stats.readahead, 1);
		if (gr->entry)
			gcache_insert(gr->gc, gr->m.src, gr->m.src_off,
				      gr->entry);
	}
	gcache_decode_end(gr->gc);
	if (err)
		gread_fail(gr, err);
}

/*
 * Serves the waiters of a grain read and inflated (or failed), on the
 * queue's thread, and frees gr. Waiters that joined while it inflated in
 * the pool are served here too. A grain inflated straight into one
 * waiter's buffer is cached (copied) when other waiters wanted parts of it.
 */
static void gread_serve(struct bdev_queue *q, struct gread *gr)
{
	const uint8_t *grain = gr->err ? NULL : gr->out;
	struct gwait *w;

	*gr->pprev = gr->next;
	if (gr->next)
		gr->next->pprev = gr->pprev;
	if (grain && gr->direct &&
	    (gr->waiters != gr->direct || gr->direct->next)) {
		struct gcache_entry *e = gcache_entry_new(gr->m.grain_size);

		if (e) {
			memcpy(e->data, grain, gr->m.grain_size);
			gcache_insert(gr->gc, gr->m.src, gr->m.src_off, e);
			gcache_put(e);
		}
	}
	if (gr->err)
		bdev_err(gr->err, "%s", gr->errmsg ? gr->errmsg :
			 "a grain read was dropped: its image was closed");
	while ((w = gr->waiters)) {
		gr->waiters = w->next;
		if (gr->err) {
			breq_fail(w->req, gr->err);
		} else if (w != gr->direct) {
			struct iovcur c = { .iov = w->iov, .cnt = w->iovcnt };
			iovcur_copy_in(&c, grain + w->goff, w->len);
		}
		breq_put(w->req);
		if (w->iov != w->iov_inline)
			free(w->iov);
		free(w);
	}
	gcache_put(gr->entry);
	gcache_unref(gr->gc);
	free(gr->errmsg);
	free(gr->buf);
	free(gr);
}

/* Inflates (err 0) and serves gr on this thread. */
static void gread_finish(struct bdev_queue *q, struct gread *gr, int err)
{
	if (err) {
		gread_fail(gr, err);
	} else {
		gread_prepare(gr);
		gread_inflate(gr);
	}
	gread_serve(q, gr);
}

/* A pool worker's part: the inflate. */
static void gread_job(struct opool_job *j)
{
	struct gread *gr = (struct gread *)((char *)j -
					    offsetof(struct gread, job));

	gread_inflate(gr);
}

/*
 * Hands gr's inflate to the pool, keeping s (now BSUB_INFLATE) counted in
 * flight until the worker's CQE comes back. Only when this thread has
 * something else to do meanwhile: other grains to read or inflate, or a
 * reader to serve while a grain nobody waits for yet (read-ahead) inflates.
 * A lone grain that a request waits for inflates here, where a hand-off
 * would only add a thread hop (a single small read at depth 1 stays as
 * fast as before).
 */
static bool gread_offload(struct bdev_queue *q, struct bsub *s)
{
	struct gread *gr = s->gr;

	if (!gr->pool_workers ||
	    (gr->waiters && q->greads == gr && !gr->next))
		return false;
	gread_prepare(gr);
	if (!gr->out)
		return false; /* inflating here reports it */
	gr->job.run = gread_job;
	gr->job.ring_fd = q->ring.ring_fd;
	gr->job.user_data = (uint64_t)(uintptr_t)s;
	gr->inflating = true;
	s->kind = BSUB_INFLATE;
	if (!opool_submit(&gr->job, gr->pool_workers)) {
		s->kind = BSUB_GRAIN;
		gr->inflating = false;
		return false;
	}
	q->subs++;
	return true;
}

/* The io_uring read s of a record ended (see request.h). */
void gread_complete(struct bdev_queue *q, struct bsub *s, int err)
{
	struct gread *gr = s->gr;

	if (!err && gread_offload(q, s))
		return;
	bsub_release(q, s);
	gread_finish(q, gr, err);
}

/* The pool's CQE for s arrived (see request.h). */
void gread_inflated(struct bdev_queue *q, struct bsub *s)
{
	struct gread *gr = s->gr;

	opool_job_reaped(&gr->job);
	bsub_release(q, s);
	gr->inflating = false;
	gread_serve(q, gr);
}

/* Starts reading the record m maps (no waiters yet). NULL on failure, with
   the message set. */
static struct gread *gread_start(struct bdev_queue *q, struct bdev *layer,
				 const struct bdev_map *m, bool readahead)
{
	struct gread *gr = calloc(1, sizeof(*gr));
	struct bsub *s = NULL;

	if (!gr || !(gr->buf = malloc(m->src_len ? m->src_len : 1)) ||
	    (m->src->fd >= 0 && !(s = bsub_get(q)))) {
		if (gr)
			free(gr->buf);
		free(gr);
		bdev_err(-ENOMEM, "%s: out of memory reading a grain",
			 layer->filename);
		return NULL;
	}
	gr->layer = layer;
	gr->gc = layer->gcache;
	gcache_ref(gr->gc);
	gr->m = *m;
	gr->readahead = readahead;
	gr->pool_workers = layer->opts.inflate_threads == UINT32_MAX ? 0 :
			   layer->opts.inflate_threads;
	gr->next = q->greads;
	gr->pprev = &q->greads;
	if (gr->next)
		gr->next->pprev = &gr->next;
	q->greads = gr;
	if (!s)
		return gr; /* memory source: the caller reads synchronously */
	s->kind = BSUB_GRAIN;
	s->gr = gr;
	s->src = m->src;
	s->off = m->src_off;
	s->left = m->src_len;
	s->iov = s->iov_inline;
	s->iov[0] = (struct iovec){ gr->buf, m->src_len };
	s->iovcnt = 1;
	bsub_start(q, NULL, s);
	return gr;
}

/* For a memory source, reads and completes gr at once. */
static void gread_sync(struct bdev_queue *q, struct gread *gr)
{
	ssize_t n;

	if (gr->m.src->fd >= 0)
		return;
	n = gr->m.src->ops->pread(gr->m.src, gr->buf, gr->m.src_len,
				  gr->m.src_off);
	if (n > 0)
		gr->got = (uint64_t)n;
	gread_finish(q, gr, n < 0 ? (int)n : 0);
}

/* Maps a run to read ahead: without reading tables on a thread that hands
   blocking steps to the pool (read-ahead is not worth a hop). */
static int map_for_readahead(struct bdev *layer, uint64_t off, uint64_t len,
			     struct bdev_map *m)
{
	return bdev_can_offload() ? bdev_layer_map_nowait(layer, off, len, m)
				  : bdev_layer_map(layer, off, len, m);
}

/*
 * Reads ahead the compressed grains that follow the one at grain_off, for a
 * sequential reader whose request is req_len bytes. A request at least as
 * long as the read-ahead window brings its own grains in parallel; reading
 * ahead past it would only inflate grains that a reader on another queue
 * (vmdk convert's second worker) inflates again on its own.
 */
static void grain_readahead(struct bdev_queue *q, struct bdev *layer,
			    const struct bdev_map *m, uint64_t req_len)
{
	uint32_t n = layer->opts.readahead_grains;
	uint64_t gs = m->grain_size, off, end;
	bool issued = false;

	if (n == UINT32_MAX || !gs || req_len >= gs * n)
		return;
	end = m->grain_off + gs * (n + 1);
	off = m->grain_off + gs;
	if (q->ra_layer == layer && q->ra_upto > off)
		off = q->ra_upto;
	if (end > layer->info.size)
		end = layer->info.size;
	for (; off < end; off += gs) {
		struct bdev_map ra;
		uint64_t len = gs < layer->info.size - off ?
			       gs : layer->info.size - off;
		struct gread *gr;

		if (map_for_readahead(layer, off, len, &ra) < 0)
			break; /* a table not in memory: no read-ahead */
		if (ra.kind != BDEV_MAP_COMPRESSED || ra.grain_off != off)
			continue;
		if (gcache_contains(layer->gcache, ra.src, ra.src_off) ||
		    gread_find(q, layer->gcache, ra.src, ra.src_off))
			continue;
		gr = gread_start(q, layer, &ra, true);
		if (!gr)
			break;
		issued = true;
		gread_sync(q, gr);
	}
	q->ra_layer = layer;
	q->ra_upto = off > end ? off : end;
	/* Submit now: the layer may close before the next bdev_queue_run(),
	   and a read still unsubmitted would name a closed descriptor. */
	if (issued && q->unsubmitted && io_uring_submit(&q->ring) >= 0)
		q->unsubmitted = 0;
}

/* A grain read ahead image-wide (BDEV_O_STREAM_READAHEAD), wholly on a
   pool worker: it holds a reference to the cache, not to any queue. */
struct stream_ra {
	struct opool_job job;
	struct bdev *layer;
	struct grain_cache *gc;
	struct bdev_map m;
};

/* The worker reads the record with pread, inflates it into a new cache
   entry and lists it, unless a reader took the grain back first or the
   layer closed. */
static void stream_ra_job(struct opool_job *j)
{
	struct stream_ra *ra = (struct stream_ra *)((char *)j -
					offsetof(struct stream_ra, job));
	struct grain_cache *gc = ra->gc;
	const struct bdev_map *m = &ra->m;
	struct gcache_entry *e = NULL;
	uint8_t *buf = NULL;

	if (!gcache_claim_start(gc, m->src, m->src_off))
		goto out_free;
	if (!gcache_decode_begin(gc))
		goto out_end;
	buf = malloc(m->src_len ? m->src_len : 1);
	e = gcache_entry_new(m->grain_size);
	if (buf && e) {
		struct bdev *b = ra->layer;
		ssize_t n = m->src->ops->pread(m->src, buf, m->src_len,
					       m->src_off);

		if (n > 0 && !b->fmt->decode(b, m, buf, (size_t)n, e->data)) {
			atomic_fetch_add(&b->stats.inflated, 1);
			atomic_fetch_add(&b->stats.readahead, 1);
		} else {
			gcache_put(e);
			e = NULL;
		}
	}
	gcache_decode_end(gc);
out_end:
	gcache_claim_end(gc, m->src, m->src_off, e);
	gcache_put(e);
	free(buf);
out_free:
	gcache_unref(gc);
	free(ra);
}

/*
 * Image-wide read-ahead for a stream whose requests arrive on any queue:
 * the grains of [from, to) not cached or claimed yet are claimed and
 * queued to the pool, which reads and inflates them into the cache while
 * the threads serve requests. The window is twice the request, at most a
 * quarter of the cache, so the grains read ahead are not evicted before
 * the stream reaches them.
 */
static void stream_readahead(struct bdev *layer, uint64_t off, uint64_t len)
{
	uint64_t window = 2 * len, from, to;

	if (window < 512u << 10)
		window = 512u << 10;
	if (window > layer->opts.grain_cache_bytes / 4)
		window = layer->opts.grain_cache_bytes / 4;
	if (!gcache_stream_note(layer->gcache, off, len, window, &from, &to))
		return;
	if (to > layer->info.size)
		to = layer->info.size;
	while (from < to) {
		struct bdev_map m;
		struct stream_ra *ra;

		if (map_for_readahead(layer, from, to - from, &m) < 0)
			return;
		from += m.len;
		if (m.kind != BDEV_MAP_COMPRESSED ||
		    m.grain_off != from - m.len ||
		    !gcache_claim(layer->gcache, m.src, m.src_off))
			continue;
		ra = calloc(1, sizeof(*ra));
		if (!ra) {
			gcache_claim_end(layer->gcache, m.src, m.src_off,
					 NULL);
			return;
		}
		ra->layer = layer;
		ra->gc = layer->gcache;
		ra->m = m;
		ra->job.run = stream_ra_job;
		ra->job.ring_fd = -1;
		gcache_ref(ra->gc);
		if (!opool_submit(&ra->job, layer->opts.inflate_threads)) {
			gcache_claim_end(ra->gc, m.src, m.src_off, NULL);
			gcache_unref(ra->gc);
			free(ra);
			return;
		}
	}
}

/* Serves a COMPRESSED run from the grain cache, reading and inflating the
   record on a miss; seq is the request's length if it is sequential. */
static void run_compressed(struct bdev_queue *q, struct breq *r,
			   struct bdev *layer, const struct bdev_map *m,
			   uint64_t off, struct iovcur *cur, uint64_t seq)
{
	uint64_t goff = off - m->grain_off;
	struct gcache_entry *e;
	struct gwait *w;
	struct gread *gr;
	bool fresh = false;
	int cnt;

	if (!layer->gcache || off < m->grain_off ||
	    goff + m->len > m->grain_size) {
		breq_fail(r, bdev_err(-EIO, "%s: compressed run at offset %"
				      PRIu64 " (%" PRIu64 " bytes) does not fit "
				      "its grain at %" PRIu64 " (%u bytes)",
				      layer->filename, off, m->len,
				      m->grain_off, m->grain_size));
		return;
	}
	e = gcache_lookup_join(layer->gcache, m->src, m->src_off);
	if (e) {
		atomic_fetch_add(&layer->stats.grain_hits, 1);
		iovcur_copy_in(cur, e->data + goff, m->len);
		gcache_put(e);
		if (seq)
			grain_readahead(q, layer, m, seq);
		return;
	}
	atomic_fetch_add(&layer->stats.grain_misses, 1);
	w = malloc(sizeof(*w));
	if (!w) {
		breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory",
				      layer->filename));
		return;
	}
	cnt = iovcur_slice(cur, m->len, w->iov_inline, BSUB_INLINE_IOV,
			   &w->iov);
	if (cnt < 0) {
		free(w);
		breq_fail(r, bdev_err(-ENOMEM, "%s: out of memory",
				      layer->filename));
		return;
	}
	w->iovcnt = cnt;
	w->req = r;
	w->goff = (uint32_t)goff;
	w->len = (uint32_t)m->len;
	gr = gread_find(q, layer->gcache, m->src, m->src_off);
	if (!gr) {
		gr = gread_start(q, layer, m, false);
		fresh = true;
	}
	if (!gr) {
		breq_fail(r, -ENOMEM);
		if (w->iov != w->iov_inline)
			free(w->iov);
		free(w);
		return;
	}
	if (!gr->inflating) /* else the worker reads it */
		gr->readahead = false;
	r->pending++;
	w->next = gr->waiters;
	gr->waiters = w;
	if (seq)
		grain_readahead(q, layer, m, seq);
	if (fresh)
		gread_sync(q, gr);
}

/*
 * Reads [off, off + len) of layer into the next len bytes of the caller's
 * buffers, recursing into the parent for unallocated runs. On a queue's
 * thread it stops where a layer's grain table is not in memory: returns
 * true with that layer in *stop and off there in *stop_off (cur has moved
 * over exactly the bytes before it).
 */
static bool split_read(struct bdev_queue *q, struct breq *r,
		       struct bdev *layer, uint64_t off, uint64_t len,
		       struct iovcur *cur, uint64_t seq, struct bdev **stop,
		       uint64_t *stop_off)
{
	bool nowait = bdev_can_offload();

	while (len > 0 && !r->ret) {
		struct bdev_map m;
		uint64_t lim;
		int ret;

		if (!layer || off >= layer->info.size) {
			iovcur_zero(cur, len);
			return false;
		}
		lim = layer->info.size - off < len ? layer->info.size - off : len;
		ret = nowait ? bdev_layer_map_nowait(layer, off, lim, &m) :
			       bdev_layer_map(layer, off, lim, &m);
		if (ret == -EWOULDBLOCK) {
			*stop = layer;
			*stop_off = off;
			return true;
		}
		if (ret < 0) {
			breq_fail(r, ret);
			return false;
		}
		switch (m.kind) {
		case BDEV_MAP_DATA:
			run_data(q, r, false, m.src, m.src_off, m.len, cur);
			break;
		case BDEV_MAP_ZERO:
			iovcur_zero(cur, m.len);
			break;
		case BDEV_MAP_UNALLOC:
			if (split_read(q, r, layer->backing, off, m.len, cur,
				       seq, stop, stop_off))
				return true;
			break;
		case BDEV_MAP_COMPRESSED:
			run_compressed(q, r, layer, &m, off, cur, seq);
			break;
		case BDEV_MAP_NOACCESS:
		default:
			breq_fail(r, bdev_err(-EIO, "%s: offset %" PRIu64
					      " lies in extent %u, which is "
					      "NOACCESS", layer->filename, off,
					      m.extent));
			return false;
		}
		off += m.len;
		len -= m.len;
	}
	return false;
}

static void read_run(struct bdev_queue *q, struct breq *r, struct bdev *b,
		     uint64_t off, uint64_t len, struct iovcur *cur,
		     uint64_t seq);

/* The worker's part of a read stopped at a grain table: maps the run there
   the blocking way, which brings the table into the layer's cache. Under
   the handle's top lock: the layer may be the handle, which a snapshot
   turns into another layer. */
static void read_warm_work(struct boff *o)
{
	struct bdev *l = o->layer;
	struct bdev_map m;
	uint64_t n;
	int ret = 0;

	pthread_rwlock_rdlock(&o->b->top_lock);
	if (o->off < l->info.size) {
		n = l->info.size - o->off < o->len ? l->info.size - o->off :
						       o->len;
		ret = bdev_layer_map(l, o->off, n, &m);
	}
	pthread_rwlock_unlock(&o->b->top_lock);
	if (ret < 0) {
		o->err = ret;
		o->errmsg = strdup(bdev_errmsg());
	}
}

/* Back on the queue's thread: the rest of the read, from where it
   stopped (it may stop again at another table). */
static void read_resume(struct bdev_queue *q, struct boff *o)
{
	struct breq *r = o->req;
	struct bdev *b = o->b;

	if (o->err) {
		boff_fail_req(o);
	} else {
		pthread_rwlock_rdlock(&b->top_lock);
		read_run(q, r, b, o->off, o->len, &o->cur, o->seq);
		pthread_rwlock_unlock(&b->top_lock);
	}
	boff_free(o);
	breq_put(r);
	if (q->unsubmitted)
		queue_poke(q);
}

/*
 * Reads [off, off + len) of b (the handle; its top lock held) into cur: at
 * once, or up to a grain table not in memory, whose read goes to the
 * offload pool; the rest of the read follows when it is done.
 */
static void read_run(struct bdev_queue *q, struct breq *r, struct bdev *b,
		     uint64_t off, uint64_t len, struct iovcur *cur,
		     uint64_t seq)
{
	struct bdev *stop = NULL;
	uint64_t at = 0;
	struct boff *o;

	if (!split_read(q, r, b, off, len, cur, seq, &stop, &at))
		return;
	o = boff_new(r, cur, at, off + len - at);
	if (!o) {
		breq_fail(r, -ENOMEM);
		return;
	}
	o->b = b;
	o->layer = stop;
	o->seq = seq;
	o->work = read_warm_work;
	o->done = read_resume;
	boff_start(q, r, o, NULL);
}

/* Queues a read of the image's bytes at offset into iov. */
int bdev_aio_readv(struct bdev_queue *q, struct bdev *b, uint64_t offset,
		   const struct iovec *iov, int iovcnt, bdev_cb cb,
		   void *opaque)
{
	struct iovcur cur = { .iov = iov, .cnt = iovcnt };
	uint64_t len;
	struct breq *r;
	uint64_t seq;
	int ret;

	bdev_err_clear();
	if (!q || !b)
		return bdev_err(-EINVAL, "read: no queue or image");
	/* the checks read the top's name and size: a snapshot swaps them */
	pthread_rwlock_rdlock(&b->top_lock);
	ret = iov_total(b->filename, iov, iovcnt, &len);
	if (ret == 0)
		ret = io_check(q, b, "read", false, offset, len);
	r = ret < 0 ? NULL : breq_get(q, cb, opaque);
	if (!r) {
		if (ret == 0)
			ret = bdev_err(-ENOMEM, "%s: out of memory", b->filename);
		pthread_rwlock_unlock(&b->top_lock);
		return ret;
	}
	/* a sequential reader: the length of its request (0: not one) */
	seq = q->ra_b == b && q->ra_end == offset ? len : 0;
	q->ra_b = b;
	q->ra_end = offset + len;
	if (b->gcache && (b->opts.flags & BDEV_O_STREAM_READAHEAD) &&
	    b->opts.readahead_grains != UINT32_MAX &&
	    b->opts.inflate_threads != UINT32_MAX) {
		/* image-wide instead of this queue's */
		seq = 0;
		stream_readahead(b, offset, len);
	}
	read_run(q, r, b, offset, len, &cur, seq);
	pthread_rwlock_unlock(&b->top_lock);
	breq_put(r);
	if (q->unsubmitted)
		queue_poke(q); /* an fd poller must call bdev_queue_run() */
	return 0;
}
