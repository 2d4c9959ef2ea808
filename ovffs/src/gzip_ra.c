/* SPDX-License-Identifier: Apache-2.0 */
/* gzip_ra.c - random access into gzip data without extracting it.
 *
 * Decoding goes forward from the start or from a restart point. While it
 * goes, a restart point is kept every GZ_SPAN output bytes at a deflate
 * block boundary: the compressed offset, the bits of the last byte still
 * unused, and the 32 KiB of output before it (the dictionary). A read then
 * restarts from the nearest point at or before its offset. Several gzip
 * members one after the other (pigz, concatenated files) are one stream.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ovf_i.h"

#define GZ_WIN 32768u
#define GZ_SPAN (4u << 20)
#define GZ_IN 65536u

struct gz_point {
	uint64_t out, in; /* output offset; compressed offset of next byte */
	int bits;         /* unused bits of the byte before in */
	unsigned char *window;
};

enum gz_mode { GZ_HEADER, GZ_RAW };

struct gz {
	struct ovf_stream *src;
	uint64_t src_size;
	pthread_mutex_t lock;
	struct gz_point *pts;
	size_t npts, cap;
	uint64_t next_point; /* output offset past which the next point goes */
	bool ended;          /* decoding has reached the end once */
	uint64_t total;      /* valid when ended */

	/* The decoder. */
	z_stream zs;
	bool zs_live;
	enum gz_mode mode;
	unsigned skip;        /* trailer bytes to skip before the next member */
	uint64_t cur_out;     /* output offset of the next byte produced */
	uint64_t in_pos;      /* compressed offset of inbuf[0] */
	unsigned char inbuf[GZ_IN];
	unsigned char win[GZ_WIN];
	unsigned wpos;        /* next write position in win (a ring) */
};

/* Refills the input buffer at the next unconsumed compressed byte. */
static int gz_fill(struct gz *g, struct ovf_stream *s)
{
	uint64_t at = g->in_pos + (uint64_t)(g->zs.next_in - g->inbuf);
	ssize_t r;

	g->in_pos = at;
	r = ovf_stream_pread(g->src, g->inbuf, GZ_IN, at);
	if (r < 0)
		return (int)r;
	g->zs.next_in = g->inbuf;
	g->zs.avail_in = (uInt)r;
	(void)s;
	return 0;
}

/* Ends the decoder if live. */
static void gz_reset_decoder(struct gz *g)
{
	if (g->zs_live)
		inflateEnd(&g->zs);
	g->zs_live = false;
}

/* Starts decoding at the beginning of the data. */
static int gz_start(struct gz *g, struct ovf_stream *s)
{
	gz_reset_decoder(g);
	memset(&g->zs, 0, sizeof(g->zs));
	if (inflateInit2(&g->zs, 15 + 16) != Z_OK)
		return ovf_err(-ENOMEM, "%s: cannot start zlib", s->name);
	g->zs_live = true;
	g->mode = GZ_HEADER;
	g->skip = 0;
	g->cur_out = 0;
	g->in_pos = 0;
	g->zs.next_in = g->inbuf;
	g->zs.avail_in = 0;
	g->wpos = 0;
	memset(g->win, 0, sizeof(g->win));
	return 0;
}

/* Resumes decoding at restart point p. */
static int gz_resume(struct gz *g, struct ovf_stream *s,
		     const struct gz_point *p)
{
	int r;

	gz_reset_decoder(g);
	memset(&g->zs, 0, sizeof(g->zs));
	if (inflateInit2(&g->zs, -15) != Z_OK)
		return ovf_err(-ENOMEM, "%s: cannot start zlib", s->name);
	g->zs_live = true;
	g->mode = GZ_RAW;
	g->skip = 0;
	g->in_pos = p->in - (p->bits ? 1 : 0);
	g->zs.next_in = g->inbuf;
	g->zs.avail_in = 0;
	r = gz_fill(g, s);
	if (r < 0)
		return r;
	if (p->bits) {
		if (!g->zs.avail_in)
			return ovf_err(-EIO, "%s: gzip data shrank under a restart point at %llu",
				       s->name, (unsigned long long)p->in);
		inflatePrime(&g->zs, p->bits,
			     g->zs.next_in[0] >> (8 - p->bits));
		g->zs.next_in++;
		g->zs.avail_in--;
	}
	inflateSetDictionary(&g->zs, p->window, GZ_WIN);
	memcpy(g->win, p->window, GZ_WIN);
	g->wpos = 0;
	g->cur_out = p->out;
	return 0;
}

/* Remembers a restart point at the decoder's current block boundary. */
static void gz_add_point(struct gz *g)
{
	struct gz_point *p;

	if (g->npts == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 64;
		struct gz_point *v = realloc(g->pts, cap * sizeof(*v));

		if (!v)
			return; /* fewer points: slower, still right */
		g->pts = v;
		g->cap = cap;
	}
	p = &g->pts[g->npts];
	p->window = malloc(GZ_WIN);
	if (!p->window)
		return;
	p->out = g->cur_out;
	p->in = g->in_pos + (uint64_t)(g->zs.next_in - g->inbuf);
	p->bits = g->zs.data_type & 7;
	memcpy(p->window, g->win + g->wpos, GZ_WIN - g->wpos);
	memcpy(p->window + (GZ_WIN - g->wpos), g->win, g->wpos);
	g->npts++;
	g->next_point = g->cur_out + GZ_SPAN;
}

/* True when every byte from the next unconsumed one to the end is zero
   (tar padding after the last gzip member). */
static int gz_rest_is_zero(struct gz *g, struct ovf_stream *s, bool *zero)
{
	for (;;) {
		for (uInt i = 0; i < g->zs.avail_in; i++) {
			if (g->zs.next_in[i]) {
				*zero = false;
				return 0;
			}
		}
		g->zs.next_in += g->zs.avail_in;
		g->zs.avail_in = 0;
		int r = gz_fill(g, s);

		if (r < 0)
			return r;
		if (!g->zs.avail_in) {
			*zero = true;
			return 0;
		}
	}
}

/*
 * Decodes one step into the window ring. Points *data at the bytes made
 * and sets *n (possibly none). Returns 1 at the end of the data, else 0
 * or -errno.
 */
static int gz_step(struct gz *g, struct ovf_stream *s, unsigned char **data,
		   size_t *n)
{
	int r, zr;

	*n = 0;
	if (!g->zs.avail_in) {
		r = gz_fill(g, s);
		if (r < 0)
			return r;
	}
	while (g->skip && g->zs.avail_in) {
		g->zs.next_in++;
		g->zs.avail_in--;
		g->skip--;
	}
	if (g->skip)
		return ovf_err(-EIO, "%s: gzip member trailer cut short at compressed offset %llu",
			       s->name, (unsigned long long)g->in_pos);
	if (g->mode == GZ_HEADER && g->cur_out > 0 &&
	    g->zs.total_in == 0 && g->zs.avail_in == 0) {
		/* between members and nothing follows: the end */
		g->ended = true;
		g->total = g->cur_out;
		return 1;
	}
	if (g->wpos == GZ_WIN)
		g->wpos = 0;
	g->zs.next_out = g->win + g->wpos;
	g->zs.avail_out = GZ_WIN - g->wpos;
	zr = inflate(&g->zs, Z_BLOCK);
	*data = g->win + g->wpos;
	*n = (GZ_WIN - g->wpos) - g->zs.avail_out;
	g->wpos += (unsigned)*n;
	g->cur_out += *n;
	if (zr == Z_NEED_DICT || zr == Z_DATA_ERROR || zr == Z_MEM_ERROR ||
	    zr == Z_STREAM_ERROR)
		return ovf_err(-EIO, "%s: bad gzip data near compressed offset %llu: %s",
			       s->name,
			       (unsigned long long)(g->in_pos +
				(uint64_t)(g->zs.next_in - g->inbuf)),
			       g->zs.msg ? g->zs.msg : "inflate failed");
	if (zr == Z_BUF_ERROR || (zr == Z_OK && !*n && !g->zs.avail_in)) {
		if (!g->zs.avail_in) {
			r = gz_fill(g, s);
			if (r < 0)
				return r;
			if (!g->zs.avail_in)
				return ovf_err(-EIO, "%s: gzip data ends early at compressed offset %llu (uncompressed %llu)",
					       s->name,
					       (unsigned long long)g->in_pos,
					       (unsigned long long)g->cur_out);
		}
		return 0;
	}
	if (zr == Z_STREAM_END) {
		bool zero;

		if (g->mode == GZ_RAW)
			g->skip = 8; /* CRC32 and ISIZE of this member */
		while (g->skip && g->zs.avail_in) {
			g->zs.next_in++;
			g->zs.avail_in--;
			g->skip--;
		}
		if (!g->skip) {
			r = gz_rest_is_zero(g, s, &zero);
			if (r < 0)
				return r;
			if (zero) {
				g->ended = true;
				g->total = g->cur_out;
				return 1;
			}
		}
		inflateReset2(&g->zs, 15 + 16);
		g->mode = GZ_HEADER;
		return 0;
	}
	if ((g->zs.data_type & 0xc0) == 0x80 && g->cur_out >= g->next_point)
		gz_add_point(g);
	return 0;
}

/* Puts the decoder at or before target using the best restart point. */
static int gz_position(struct gz *g, struct ovf_stream *s, uint64_t target)
{
	const struct gz_point *best = NULL;
	size_t lo = 0, hi = g->npts;

	while (lo < hi) { /* first point with out > target */
		size_t mid = (lo + hi) / 2;

		if (g->pts[mid].out <= target)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0)
		best = &g->pts[lo - 1];
	if (g->zs_live && g->cur_out <= target &&
	    (!best || best->out <= g->cur_out))
		return 0; /* going on from here is as good as any point */
	return best ? gz_resume(g, s, best) : gz_start(g, s);
}

/* Reads decoded bytes [off, off+len). */
static ssize_t gz_pread(struct ovf_stream *s, void *buf, size_t len,
			uint64_t off)
{
	struct gz *g = s->priv;
	size_t done = 0;
	int r = 0;

	pthread_mutex_lock(&g->lock);
	if (g->ended && off >= g->total)
		goto out_unlock;
	r = gz_position(g, s, off);
	while (r >= 0 && done < len) {
		unsigned char *data;
		size_t n;
		uint64_t start;

		r = gz_step(g, s, &data, &n);
		if (r < 0)
			break;
		if (r == 1) {
			r = 0;
			break;
		}
		start = g->cur_out - n;
		if (n && g->cur_out > off + done) {
			uint64_t from = off + done - start;
			size_t take = (size_t)(n - from);

			if (take > len - done)
				take = len - done;
			memcpy((char *)buf + done, data + from, take);
			done += take;
		}
	}
	if (r < 0) {
		gz_reset_decoder(g); /* force a clean restart next time */
		pthread_mutex_unlock(&g->lock);
		return r;
	}
out_unlock:
	pthread_mutex_unlock(&g->lock);
	return (ssize_t)done;
}

/* Decodes to the end once (building the index) to learn the length. */
static int gz_size(struct ovf_stream *s, uint64_t *size)
{
	struct gz *g = s->priv;
	int r = 0;

	pthread_mutex_lock(&g->lock);
	if (!g->ended) {
		uint64_t from = g->npts ? g->pts[g->npts - 1].out : 0;

		r = gz_position(g, s, g->zs_live && g->cur_out > from ?
					      g->cur_out : from);
		while (r == 0) {
			unsigned char *data;
			size_t n;

			r = gz_step(g, s, &data, &n);
		}
		if (r < 0)
			gz_reset_decoder(g);
	}
	if (r >= 0)
		*size = g->total;
	pthread_mutex_unlock(&g->lock);
	return r;
}

/* Frees the index and the decoder, drops the source. */
static void gz_close(struct ovf_stream *s)
{
	struct gz *g = s->priv;

	gz_reset_decoder(g);
	for (size_t i = 0; i < g->npts; i++)
		free(g->pts[i].window);
	free(g->pts);
	ovf_stream_close(g->src);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

static const struct ovf_stream_ops gz_ops = {
	.pread = gz_pread,
	.size = gz_size,
	.close = gz_close,
};

/* The decompressed content of the gzip data in src. */
int ovf_stream_gzip(struct ovf_stream *src, const char *name,
		    struct ovf_stream **out)
{
	unsigned char magic[2];
	struct ovf_stream *s;
	struct gz *g;
	int r = ovf_stream_read_full(src, magic, 2, 0);

	if (r < 0)
		return r;
	if (magic[0] != 0x1f || magic[1] != 0x8b)
		return ovf_err(-EINVAL, "%s: not gzip data (expected bytes 1f 8b at offset 0, found %02x %02x)",
			       name, magic[0], magic[1]);
	g = calloc(1, sizeof(*g));
	if (!g)
		return ovf_err(-ENOMEM, "%s: out of memory", name);
	s = calloc(1, sizeof(*s));
	if (!s || !(s->name = strdup(name))) {
		free(s);
		free(g);
		return ovf_err(-ENOMEM, "%s: out of memory", name);
	}
	pthread_mutex_init(&g->lock, NULL);
	g->src = ovf_stream_ref(src);
	g->next_point = GZ_SPAN;
	s->ops = &gz_ops;
	s->refs = 1;
	s->fd = -1;
	s->priv = g;
	*out = s;
	return 0;
}
