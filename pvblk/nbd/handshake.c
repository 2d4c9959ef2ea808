/* SPDX-License-Identifier: Apache-2.0 */
/*
 * handshake.c - fixed newstyle negotiation as an explicit state machine:
 * the greeting, the client's flags, then one option at a time, each handled
 * by a function named after the option, until the client enters
 * transmission (NBD_OPT_EXPORT_NAME, NBD_OPT_GO) or leaves. Option data is
 * read whole (at most NBD_MAX_OPTION bytes) and parsed through a cursor
 * that checks every length before it reads.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nbd_i.h"

enum nbd_hs_state {
	HS_GREETING,
	HS_CLIENT_FLAGS,
	HS_OPTION,
	HS_TRANSMISSION,
	HS_DONE,
};

/* A cursor over option data. */
struct cur {
	const uint8_t *p;
	size_t left;
};

static bool cur_u16(struct cur *k, uint16_t *v)
{
	if (k->left < 2)
		return false;
	memcpy(v, k->p, 2);
	*v = be16toh(*v);
	k->p += 2;
	k->left -= 2;
	return true;
}

static bool cur_u32(struct cur *k, uint32_t *v)
{
	if (k->left < 4)
		return false;
	memcpy(v, k->p, 4);
	*v = be32toh(*v);
	k->p += 4;
	k->left -= 4;
	return true;
}

/* n bytes at *out; false when fewer are left. */
static bool cur_bytes(struct cur *k, size_t n, const uint8_t **out)
{
	if (k->left < n)
		return false;
	*out = k->p;
	k->p += n;
	k->left -= n;
	return true;
}

/* A name: u32 length (at most NBD_MAX_NAME) then its bytes. */
static bool cur_name(struct cur *k, const uint8_t **name, uint32_t *len)
{
	return cur_u32(k, len) && *len <= NBD_MAX_NAME &&
	       cur_bytes(k, *len, name);
}

/* One option reply: the 20-byte header, then up to two pieces of data. */
static int send_rep(struct nbd_conn *c, uint32_t opt, uint32_t type,
		    const void *a, size_t alen, const void *b, size_t blen)
{
	struct __attribute__((packed)) {
		uint64_t magic;
		uint32_t opt, type, len;
	} h = {
		htobe64(NBD_REP_MAGIC), htobe32(opt), htobe32(type),
		htobe32((uint32_t)(alen + blen)),
	};
	struct iovec v[3] = {
		{ &h, sizeof(h) },
		{ (void *)a, alen },
		{ (void *)b, blen },
	};

	_Static_assert(sizeof(h) == 20, "option reply header is 20 bytes");
	return nbd_write_full(c, v, 3);
}

static int send_ack(struct nbd_conn *c, uint32_t opt)
{
	return send_rep(c, opt, NBD_REP_ACK, NULL, 0, NULL, 0);
}

/* An error reply with a message for the client's log; stays in options. */
static int send_err(struct nbd_conn *c, uint32_t opt, uint32_t err,
		    const char *msg)
{
	int ret = send_rep(c, opt, err, msg, strlen(msg), NULL, 0);

	return ret < 0 ? ret : HS_OPTION;
}

/* Whether name (len bytes) is s's export name. */
static bool name_is(const struct nbd_server *s, const uint8_t *name,
		    uint32_t len)
{
	return strlen(s->export_name) == len &&
	       !memcmp(s->export_name, name, len);
}

struct nbd_server *nbd_export_find(struct nbd_conn *c, const uint8_t *name,
				   uint32_t len)
{
	struct nbd_server *g = c->srv->group, *s, *found = NULL;

	if (!g) /* one export (and the fuzzers): "" is the default, ours */
		return len == 0 || name_is(c->srv, name, len) ? c->srv : NULL;
	pthread_mutex_lock(&g->lock);
	for (s = g; s && !found; s = s->group_next)
		if (!s->gone && name_is(s, name, len))
			found = s;
	/* "" names the first export still served when none is called "" */
	for (s = g; s && !found && len == 0; s = s->group_next)
		if (!s->gone)
			found = s;
	pthread_mutex_unlock(&g->lock);
	return found;
}

static uint16_t tx_flags(const struct nbd_conn *c, const struct nbd_server *s)
{
	uint16_t f = s->tx_flags;

	/* DF only means something with structured replies */
	if (!c->structured)
		f &= (uint16_t)~NBD_FLAG_SEND_DF;
	return f;
}

static int hs_greeting(struct nbd_conn *c)
{
	struct __attribute__((packed)) {
		uint64_t magic, opt;
		uint16_t flags;
	} g = {
		htobe64(NBD_MAGIC), htobe64(NBD_IHAVEOPT),
		htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
	};
	struct iovec v = { &g, sizeof(g) };
	int ret = nbd_write_full(c, &v, 1);

	_Static_assert(sizeof(g) == 18, "newstyle greeting is 18 bytes");
	return ret < 0 ? ret : HS_CLIENT_FLAGS;
}

static int hs_client_flags(struct nbd_conn *c)
{
	uint32_t f;
	int ret = nbd_read_full(c, &f, 4);

	if (ret < 0)
		return ret;
	f = be32toh(f);
	/* oldstyle-compatible newstyle is not served, nor unknown flags */
	if (!(f & NBD_FLAG_C_FIXED_NEWSTYLE) ||
	    (f & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)))
		return -EPROTO;
	c->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
	return HS_OPTION;
}

/* NBD_OPT_EXPORT_NAME: no way to report an error but closing. */
static int opt_export_name(struct nbd_conn *c, const uint8_t *d, uint32_t len)
{
	struct nbd_server *s = len > NBD_MAX_NAME ? NULL :
			       nbd_export_find(c, d, len);
	struct __attribute__((packed)) {
		uint64_t size;
		uint16_t flags;
		uint8_t zeroes[124];
	} r = { 0 };
	struct iovec v = { &r, c->no_zeroes ? 10 : sizeof(r) };
	int ret;

	if (!s)
		return -ENOENT;
	/* a client with extended headers must use NBD_OPT_GO */
	if (c->extended)
		return -EPROTO;
	r.size = htobe64(__atomic_load_n(&s->size, __ATOMIC_ACQUIRE));
	r.flags = htobe16(tx_flags(c, s));
	c->chosen = s;
	ret = nbd_write_full(c, &v, 1);
	return ret < 0 ? ret : HS_TRANSMISSION;
}

/* NBD_OPT_ABORT: acknowledge (best effort) and end. */
static int opt_abort(struct nbd_conn *c)
{
	send_ack(c, NBD_OPT_ABORT);
	return HS_DONE;
}

/* NBD_OPT_LIST: one NBD_REP_SERVER for s: its name and description. */
static int list_one(struct nbd_conn *c, const struct nbd_server *s)
{
	const char *desc = s->description ? s->description : "";
	size_t nl = strlen(s->export_name);
	uint32_t nlen = htobe32((uint32_t)nl);
	uint8_t buf[4 + NBD_MAX_NAME];

	if (nl > NBD_MAX_NAME)
		return -EINVAL;
	memcpy(buf, &nlen, 4);
	memcpy(buf + 4, s->export_name, nl);
	return send_rep(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, 4 + nl, desc,
			strlen(desc));
}

/* NBD_OPT_LIST: every export of the listener, with its description. */
static int opt_list(struct nbd_conn *c, uint32_t len)
{
	struct nbd_server *g = c->srv->group;
	int ret = 0;

	if (len)
		return send_err(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				"NBD_OPT_LIST carries no data");
	if (!g) {
		ret = list_one(c, c->srv);
	} else {
		/* the exports stay allocated until the listener stops, and
		   their names and descriptions never change: the lock is
		   held for the walk, not for the sends */
		for (struct nbd_server *s = g; s && ret >= 0;) {
			struct nbd_server *next;
			bool gone;

			pthread_mutex_lock(&g->lock);
			next = s->group_next;
			gone = s->gone;
			pthread_mutex_unlock(&g->lock);
			if (!gone)
				ret = list_one(c, s);
			s = next;
		}
	}
	if (ret < 0)
		return ret;
	ret = send_ack(c, NBD_OPT_LIST);
	return ret < 0 ? ret : HS_OPTION;
}

/* NBD_OPT_STARTTLS: acknowledge, then the TLS handshake on the socket. */
static int opt_starttls(struct nbd_conn *c, uint32_t len)
{
	int ret;

	if (len)
		return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
				"NBD_OPT_STARTTLS carries no data");
	if (!c->srv->tls_creds)
		return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY,
				"this server has no TLS credentials");
	if (c->tls)
		return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
				"TLS is already on");
	ret = send_ack(c, NBD_OPT_STARTTLS);
	if (ret < 0)
		return ret;
	ret = c->io->starttls(c);
	if (ret < 0)
		return ret;
	/* nothing negotiated in the clear survives */
	c->tls = true;
	c->structured = false;
	c->extended = false;
	nbd_meta_clear(c);
	return HS_OPTION;
}

static int send_info(struct nbd_conn *c, uint32_t opt, uint16_t type,
		     const void *data, size_t len)
{
	uint16_t t = htobe16(type);

	return send_rep(c, opt, NBD_REP_INFO, &t, 2, data, len);
}

/* NBD_OPT_INFO and NBD_OPT_GO: the export's size, flags, block sizes and
   (when asked) name and description; GO then enters transmission. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *d,
		       uint32_t len)
{
	struct cur k = { d, len };
	const uint8_t *name, *reqs;
	uint32_t nlen;
	uint16_t nreq;
	bool want_name = false, want_desc = false;
	struct nbd_server *s;
	int ret;

	if (!cur_name(&k, &name, &nlen) || !cur_u16(&k, &nreq) ||
	    !cur_bytes(&k, (size_t)nreq * 2, &reqs) || k.left)
		return send_err(c, opt, NBD_REP_ERR_INVALID,
				"malformed NBD_OPT_INFO/NBD_OPT_GO data");
	s = nbd_export_find(c, name, nlen);
	if (!s)
		return send_err(c, opt, NBD_REP_ERR_UNKNOWN,
				"no export of that name");
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t t;

		memcpy(&t, reqs + 2 * i, 2);
		t = be16toh(t);
		want_name |= t == NBD_INFO_NAME;
		want_desc |= t == NBD_INFO_DESCRIPTION;
	}
	{
		struct __attribute__((packed)) {
			uint64_t size;
			uint16_t flags;
		} e = { htobe64(__atomic_load_n(&s->size, __ATOMIC_ACQUIRE)),
			htobe16(tx_flags(c, s)) };

		ret = send_info(c, opt, NBD_INFO_EXPORT, &e, sizeof(e));
		if (ret < 0)
			return ret;
	}
	if (want_name) {
		ret = send_info(c, opt, NBD_INFO_NAME, s->export_name,
				strlen(s->export_name));
		if (ret < 0)
			return ret;
	}
	if (want_desc && s->description) {
		ret = send_info(c, opt, NBD_INFO_DESCRIPTION, s->description,
				strlen(s->description));
		if (ret < 0)
			return ret;
	}
	{
		uint32_t bs[3] = { htobe32(s->min_block), htobe32(s->pref_block),
				   htobe32(s->max_block) };

		ret = send_info(c, opt, NBD_INFO_BLOCK_SIZE, bs, sizeof(bs));
		if (ret < 0)
			return ret;
	}
	ret = send_ack(c, opt);
	if (ret < 0)
		return ret;
	if (opt != NBD_OPT_GO)
		return HS_OPTION;
	/* contexts selected for another export are not selected here */
	if (c->meta_export != s)
		nbd_meta_clear(c);
	c->chosen = s;
	return HS_TRANSMISSION;
}

/* NBD_OPT_STRUCTURED_REPLY */
static int opt_structured_reply(struct nbd_conn *c, uint32_t len)
{
	int ret;

	if (len)
		return send_err(c, NBD_OPT_STRUCTURED_REPLY,
				NBD_REP_ERR_INVALID,
				"NBD_OPT_STRUCTURED_REPLY carries no data");
	/* no way back from extended headers to 20-byte chunk headers */
	if (c->extended)
		return send_err(c, NBD_OPT_STRUCTURED_REPLY,
				NBD_REP_ERR_EXT_HEADER_REQD,
				"extended headers are already on");
	ret = send_ack(c, NBD_OPT_STRUCTURED_REPLY);
	if (ret < 0)
		return ret;
	c->structured = true;
	return HS_OPTION;
}

/* NBD_OPT_EXTENDED_HEADERS: 32-byte request and reply headers with 64-bit
   lengths from transmission on; they imply chunked (structured-style)
   replies. Asking again just acknowledges again. */
static int opt_extended_headers(struct nbd_conn *c, uint32_t len)
{
	int ret;

	if (len)
		return send_err(c, NBD_OPT_EXTENDED_HEADERS,
				NBD_REP_ERR_INVALID,
				"NBD_OPT_EXTENDED_HEADERS carries no data");
	ret = send_ack(c, NBD_OPT_EXTENDED_HEADERS);
	if (ret < 0)
		return ret;
	c->extended = true;
	c->structured = true;
	return HS_OPTION;
}

/*
 * The contexts a query names: an exact name, or (for LIST only) a
 * namespace ("base:", "qemu:", "qemu:dirty-bitmap:") for all of its
 * contexts. Bit i = context i (meta.c).
 */
static uint32_t meta_match(struct bdev *b, const uint8_t *q, uint32_t qlen,
			   bool list)
{
	unsigned total = nbd_meta_total(b);
	char n[256];
	uint32_t m = 0;

	for (unsigned i = 0; i < total; i++) {
		size_t nl;

		if (nbd_meta_name(b, i, n, sizeof(n)) < 0)
			break;
		nl = strlen(n);
		if (qlen == nl && !memcmp(n, q, nl))
			m |= 1u << i;
		else if (list && qlen > 0 && qlen < nl && q[qlen - 1] == ':' &&
			 !memcmp(n, q, qlen))
			m |= 1u << i;
	}
	return m;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: the data is
   checked whole before any reply is sent. */
static int opt_meta_context(struct nbd_conn *c, uint32_t opt,
			    const uint8_t *d, uint32_t len)
{
	bool list = opt == NBD_OPT_LIST_META_CONTEXT;
	struct nbd_server *s;
	struct bdev *b;
	struct cur k = { d, len };
	unsigned total;
	const uint8_t *name, *q;
	uint32_t nlen, nq, qlen, match = 0;

	if (!list && !c->structured)
		return send_err(c, opt, NBD_REP_ERR_INVALID,
				"NBD_OPT_SET_META_CONTEXT needs structured "
				"replies or extended headers first");
	if (!cur_name(&k, &name, &nlen) || !cur_u32(&k, &nq))
		return send_err(c, opt, NBD_REP_ERR_INVALID,
				"malformed meta context request");
	/* the contexts are those of the export named; an unknown name is
	   answered below, once the data is known to be well-formed */
	s = nbd_export_find(c, name, nlen);
	/* no export: the fuzz harness negotiates with no image */
	b = s && s->export ? s->export->bdev : NULL;
	total = nbd_meta_total(b);
	for (uint32_t i = 0; i < nq; i++) {
		if (!cur_name(&k, &q, &qlen))
			return send_err(c, opt, NBD_REP_ERR_INVALID,
					"malformed meta context query");
		match |= meta_match(b, q, qlen, list);
	}
	if (k.left)
		return send_err(c, opt, NBD_REP_ERR_INVALID,
				"trailing bytes after the queries");
	if (!s)
		return send_err(c, opt, NBD_REP_ERR_UNKNOWN,
				"no export of that name");
	if (list && nq == 0)
		match = total >= 32 ? UINT32_MAX : (1u << total) - 1;
	if (!list) {
		/* SET replaces what was set */
		int ret = nbd_meta_select(c, b, match);

		if (ret < 0)
			return ret;
		c->meta_export = s;
		match = c->meta_selected;
	}
	for (unsigned i = 0; i < total; i++) {
		uint32_t id = htobe32(i + 1);
		char n[256];
		int ret;

		if (!(match & (1u << i)) ||
		    nbd_meta_name(b, i, n, sizeof(n)) < 0)
			continue;
		ret = send_rep(c, opt, NBD_REP_META_CONTEXT, &id, 4, n,
			       strlen(n));
		if (ret < 0)
			return ret;
	}
	{
		int ret = send_ack(c, opt);

		return ret < 0 ? ret : HS_OPTION;
	}
}

/* One option: its header, its data, then the function named after it. */
static int hs_option(struct nbd_conn *c)
{
	struct __attribute__((packed)) {
		uint64_t magic;
		uint32_t opt, len;
	} h;
	uint8_t *d = NULL;
	uint32_t opt, len;
	int ret;

	_Static_assert(sizeof(h) == 16, "option header is 16 bytes");
	ret = nbd_read_full(c, &h, sizeof(h));
	if (ret < 0)
		return ret;
	if (be64toh(h.magic) != NBD_IHAVEOPT)
		return -EPROTO;
	opt = be32toh(h.opt);
	len = be32toh(h.len);
	if (len > NBD_MAX_OPTION) {
		/* too big to be one of ours: skip it if that is cheap */
		if (opt == NBD_OPT_EXPORT_NAME || len > 16 * NBD_MAX_OPTION)
			return -E2BIG;
		ret = nbd_skip(c, len);
		if (ret < 0)
			return ret;
		return send_err(c, opt, NBD_REP_ERR_TOO_BIG,
				"option data too large");
	}
	if (len) {
		d = malloc(len);
		if (!d)
			return -ENOMEM;
		ret = nbd_read_full(c, d, len);
		if (ret < 0)
			goto out;
	}
	if (c->srv->tls_creds && !c->tls && opt != NBD_OPT_STARTTLS &&
	    opt != NBD_OPT_ABORT) {
		/* TLS is required: nothing else until it is on */
		ret = opt == NBD_OPT_EXPORT_NAME ?
			-EACCES :
			send_err(c, opt, NBD_REP_ERR_TLS_REQD,
				 "this server requires TLS: NBD_OPT_STARTTLS");
		goto out;
	}
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		ret = opt_export_name(c, d, len);
		break;
	case NBD_OPT_ABORT:
		ret = opt_abort(c);
		break;
	case NBD_OPT_LIST:
		ret = opt_list(c, len);
		break;
	case NBD_OPT_STARTTLS:
		ret = opt_starttls(c, len);
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		ret = opt_info_go(c, opt, d, len);
		break;
	case NBD_OPT_STRUCTURED_REPLY:
		ret = opt_structured_reply(c, len);
		break;
	case NBD_OPT_EXTENDED_HEADERS:
		ret = opt_extended_headers(c, len);
		break;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		ret = opt_meta_context(c, opt, d, len);
		break;
	default:
		ret = send_err(c, opt, NBD_REP_ERR_UNSUP, "unknown option");
		break;
	}
out:
	free(d);
	return ret;
}

int nbd_negotiate(struct nbd_conn *c)
{
	int state = HS_GREETING;

	for (;;) {
		switch (state) {
		case HS_GREETING:
			state = hs_greeting(c);
			break;
		case HS_CLIENT_FLAGS:
			state = hs_client_flags(c);
			break;
		case HS_OPTION:
			state = hs_option(c);
			break;
		case HS_TRANSMISSION:
			return 1;
		case HS_DONE:
			return 0;
		default:
			return state; /* -errno: drop the connection */
		}
	}
}
