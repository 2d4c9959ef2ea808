/* SPDX-License-Identifier: Apache-2.0 */
/*
 * server.c - the NBD protocol server of pvblk: the listening socket (unix,
 * or TCP with TLS unless bound to loopback), an accept thread, and one
 * thread per connection that negotiates (handshake.c) and then serves
 * requests on its own engine queue (transmission.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbd_i.h"
#include "unixsock.h"

#define QUEUE_DEPTH 128

/* Takes c off the server's list of live connections; under s->lock. */
static void unlink_conn(struct nbd_server *s, struct nbd_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
}

/*
 * Moves c, negotiated on its listener, to the export `to` of the same
 * listener: c counts, and waits for stop, there from now on. -ENOENT when
 * `to` has stopped meanwhile, -EMFILE when it serves its most connections.
 */
static int conn_switch(struct nbd_conn *c, struct nbd_server *to)
{
	struct nbd_server *g = c->srv;
	int ret = 0;

	if (to == g)
		return 0;
	/* lock order: the listener's, then an export's */
	pthread_mutex_lock(&g->lock);
	if (to->gone) {
		ret = -ENOENT;
	} else {
		pthread_mutex_lock(&to->lock);
		if (to->nconns >= NBD_MAX_CONNS) {
			ret = -EMFILE;
		} else {
			/* off the listener's list first: that uses c's links */
			unlink_conn(g, c);
			g->nconns--;
			pthread_cond_signal(&g->conn_gone);
			to->nconns++;
			c->next = to->conns;
			c->prev = NULL;
			if (c->next)
				c->next->prev = c;
			to->conns = c;
			c->srv = to;
		}
		pthread_mutex_unlock(&to->lock);
	}
	pthread_mutex_unlock(&g->lock);
	return ret;
}

/* Runs one connection to its end, then frees it. */
static void *conn_thread(void *arg)
{
	struct nbd_conn *c = arg;
	struct nbd_server *s;
	int ret = nbd_negotiate(c);

	if (ret == 1 && c->chosen) {
		int sw = conn_switch(c, c->chosen);

		if (sw < 0) {
			pvblk_log("nbd: %s: dropped (export '%s' %s)", c->peer,
				  c->chosen->export_name, sw == -ENOENT ?
				  "stopped" : "has too many connections");
			ret = sw;
		}
	}
	s = c->srv;
	if (ret == 1) {
		ret = bdev_queue_new(QUEUE_DEPTH, &c->q);
		if (ret == 0) {
			ret = nbd_transmission(c);
			bdev_queue_free(c->q);
		} else {
			pvblk_log("nbd: %s: cannot make an engine queue: %s",
				  c->peer, strerror(-ret));
		}
	}
	if (ret == -EPROTO || ret == -E2BIG || ret == -ENOENT ||
	    ret == -EACCES)
		pvblk_log("nbd: %s: dropped (%s)", c->peer,
			  ret == -EPROTO   ? "protocol violation" :
			  ret == -E2BIG    ? "request too large" :
			  ret == -ENOENT   ? "no export of that name" :
					     "TLS required");
	nbd_tls_end(c);
	nbd_meta_clear(c);
	close(c->fd);
	pthread_mutex_lock(&s->lock);
	/* what it answered stays in the server's sums: status never sees a
	   counter go back when a client leaves */
	s->ended.requests += c->st.requests;
	s->ended.read_bytes += c->st.read_bytes;
	s->ended.written_bytes += c->st.written_bytes;
	s->ended.errors += c->st.errors;
	unlink_conn(s, c);
	s->nconns--;
	pthread_cond_signal(&s->conn_gone);
	pthread_mutex_unlock(&s->lock);
	free(c);
	return NULL;
}

static void start_conn(struct nbd_server *s, int fd, const char *peer)
{
	struct nbd_conn *c;
	pthread_attr_t a;
	pthread_t t;

	pthread_mutex_lock(&s->lock);
	if (s->nconns >= NBD_MAX_CONNS) {
		pthread_mutex_unlock(&s->lock);
		pvblk_log("nbd: %s refused: %u connections already",
			  peer, NBD_MAX_CONNS);
		close(fd);
		return;
	}
	s->nconns++;
	pthread_mutex_unlock(&s->lock);
	c = calloc(1, sizeof(*c));
	if (!c)
		goto err;
	c->srv = s;
	c->fd = fd;
	c->done_fd = -1;
	c->io = &nbd_plain_io;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	{
		/* whole 1 MiB replies per sendmsg, fewer wakeups */
		int sz = 4 << 20;

		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	pthread_mutex_lock(&s->lock);
	c->next = s->conns;
	if (c->next)
		c->next->prev = c;
	s->conns = c;
	pthread_mutex_unlock(&s->lock);
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&a, 1u << 20);
	if (pthread_create(&t, &a, conn_thread, c)) {
		pthread_attr_destroy(&a);
		pthread_mutex_lock(&s->lock);
		unlink_conn(s, c);
		pthread_mutex_unlock(&s->lock);
		free(c);
		goto err;
	}
	pthread_attr_destroy(&a);
	return;
err:
	pvblk_log("nbd: %s refused: out of resources", peer);
	close(fd);
	pthread_mutex_lock(&s->lock);
	s->nconns--;
	pthread_cond_signal(&s->conn_gone);
	pthread_mutex_unlock(&s->lock);
}

static void *accept_thread(void *arg)
{
	struct nbd_server *s = arg;
	struct pollfd p[2] = {
		{ .fd = s->listen_fd, .events = POLLIN },
		{ .fd = s->stop_fd, .events = POLLIN },
	};

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char peer[64] = "unix client";
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &sl,
			     SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			/* out of descriptors: give connections time to end
			   instead of spinning on the pending one */
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM)
				poll(&p[1], 1, 100);
			continue; /* EAGAIN, ECONNABORTED: go on */
		}
		if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
			char host[NI_MAXHOST], serv[NI_MAXSERV];
			int one = 1;

			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				   sizeof(one));
			if (!getnameinfo((struct sockaddr *)&ss, sl, host,
					 sizeof(host), serv, sizeof(serv),
					 NI_NUMERICHOST | NI_NUMERICSERV))
				snprintf(peer, sizeof(peer), "%.46s:%.8s",
					 host, serv);
		}
		start_conn(s, fd, peer);
	}
	return NULL;
}

/* A unix socket at path (see unixsock.h: ready once the path exists; a
   stale socket file nobody listens on is replaced, anything else is left
   alone). */
static int listen_unix(struct nbd_server *s, const char *path, char *err,
		       size_t errlen)
{
	int fd = unixsock_listen(path, SOCK_NONBLOCK, 128, 0, err, errlen);

	if (fd < 0)
		return fd;
	s->unix_path = strdup(path);
	s->listen_fd = fd;
	return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >>
			24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(
			&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

/* tcp:HOST:PORT (HOST may be [v6]); TLS unless HOST is a loopback
   address given explicitly. */
static int listen_tcp(struct nbd_server *s, const char *hostport, char *err,
		      size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res;
	const char *colon = strrchr(hostport, ':');
	char host[256];
	size_t hl;
	int fd, ret, one = 1;

	if (!colon || !colon[1]) {
		snprintf(err, errlen, "expected tcp:HOST:PORT");
		return -EINVAL;
	}
	hl = (size_t)(colon - hostport);
	if (hl >= sizeof(host)) {
		snprintf(err, errlen, "host name too long");
		return -EINVAL;
	}
	memcpy(host, hostport, hl);
	host[hl] = '\0';
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	ret = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
	if (ret) {
		snprintf(err, errlen, "%s: %s", hostport, gai_strerror(ret));
		return -EINVAL;
	}
	if (!s->tls_creds && (!host[0] || !is_loopback(res->ai_addr))) {
		snprintf(err, errlen,
			 "NBD over TCP needs TLS: give --tls-creds DIR (with "
			 "ca-cert.pem, server-cert.pem, server-key.pem) or "
			 "--tls-psk FILE (USERNAME:HEXKEY lines), or "
			 "bind loopback explicitly (tcp:127.0.0.1:%s or "
			 "tcp:[::1]:%s) for clients on this machine only",
			 colon + 1, colon + 1);
		freeaddrinfo(res);
		return -EPERM;
	}
	fd = socket(res->ai_family,
		    SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", hostport, strerror(-ret));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return ret;
	}
	freeaddrinfo(res);
	s->listen_fd = fd;
	return 0;
}

/* The export's flags and block sizes, from what the engine says the open
   image can do. */
static int describe_export(struct nbd_server *s, struct pvblk_export *e,
			   char *err, size_t errlen)
{
	struct bdev_limits lim = { .struct_size = sizeof(lim) };
	struct bdev_info in;
	int ret = bdev_get_info(e->bdev, &in);

	if (ret == 0)
		ret = bdev_get_limits(e->bdev, &lim);
	if (ret < 0) {
		snprintf(err, errlen, "%s", bdev_errmsg());
		return ret;
	}
	s->size = e->size;
	s->min_block = 1;
	s->max_block = NBD_MAX_BLOCK;
	s->pref_block = 4096;
	if (in.cluster_size >= 4096 && in.cluster_size <= NBD_MAX_BLOCK)
		s->pref_block = (uint32_t)in.cluster_size;
	/*
	 * CAN_MULTI_CONN: every connection does I/O on the same struct bdev,
	 * so a completed write is visible to all, and a flush on any
	 * connection flushes the image's files for all of them.
	 */
	s->tx_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
		      NBD_FLAG_SEND_DF | NBD_FLAG_CAN_MULTI_CONN |
		      NBD_FLAG_SEND_CACHE;
	if (e->read_only || !lim.can_write) {
		s->tx_flags |= NBD_FLAG_READ_ONLY;
		return 0;
	}
	/* FUA, NO_HOLE and FAST_ZERO go to the engine as request flags */
	if (lim.can_fua)
		s->tx_flags |= NBD_FLAG_SEND_FUA;
	if (lim.can_discard)
		s->tx_flags |= NBD_FLAG_SEND_TRIM;
	if (lim.can_write_zeroes)
		s->tx_flags |= NBD_FLAG_SEND_WRITE_ZEROES;
	if (lim.can_write_zeroes && lim.can_fast_zero)
		s->tx_flags |= NBD_FLAG_SEND_FAST_ZERO;
	return 0;
}

/* One more export on the socket of the listener g (--export ...,nbd):
   a server without a socket of its own, found by name at negotiation. */
static int join_group(struct nbd_server *s, struct nbd_server *g, char *err,
		      size_t errlen)
{
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		return -errno;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->conn_gone, NULL);
	nbd_offload_init(s);
	s->tls_creds = g->tls_creds; /* the listener's, freed with it */
	s->group = g;
	pthread_mutex_lock(&g->lock);
	{
		struct nbd_server **p = &g->group_next;

		while (*p)
			p = &(*p)->group_next;
		*p = s; /* NBD_OPT_LIST answers in command-line order */
	}
	pthread_mutex_unlock(&g->lock);
	return 0;
}

static int nbd_start(struct pvblk_listen *l, char *err, size_t errlen)
{
	struct nbd_server *s = calloc(1, sizeof(*s));
	const char *a = l->address;
	int ret;

	if (!s)
		return -ENOMEM;
	s->export = l->export;
	s->export_name = l->export_name ? l->export_name : "";
	s->description = l->export->image;
	s->listen_fd = s->stop_fd = -1;
	if (strlen(s->export_name) > NBD_MAX_NAME) {
		snprintf(err, errlen, "--export-name longer than %d bytes",
			 NBD_MAX_NAME);
		ret = -EINVAL;
		goto err_free;
	}
	{
		/* each connection is a socket and an io_uring (plus its
		   eventfd): the default 1024 descriptors would cap us near
		   330 connections */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		    rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	ret = describe_export(s, l->export, err, errlen);
	if (ret < 0)
		goto err_free;
	if (l->share) {
		struct nbd_server *g = l->share->state;

		if (!g || l->share->proto != l->proto) {
			snprintf(err, errlen, "no NBD listener to join");
			ret = -EINVAL;
			goto err_free;
		}
		ret = join_group(s, g, err, errlen);
		if (ret < 0)
			goto err_free;
		l->state = s;
		return 0;
	}
	s->group = s;
	if (l->tls_creds || l->tls_psk) {
		ret = nbd_tls_load(l->tls_creds, l->tls_psk, &s->tls_creds,
				   err, errlen);
		if (ret < 0)
			goto err_free;
	}
	if (!strncmp(a, "tcp:", 4))
		ret = listen_tcp(s, a + 4, err, errlen);
	else
		ret = listen_unix(s, !strncmp(a, "unix:", 5) ? a + 5 : a, err,
				  errlen);
	if (ret < 0)
		goto err_tls;
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto err_listen;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->conn_gone, NULL);
	nbd_offload_init(s);
	ret = -pthread_create(&s->accept_thread, NULL, accept_thread, s);
	if (ret < 0) {
		snprintf(err, errlen, "cannot start a thread: %s",
			 strerror(-ret));
		goto err_stopfd;
	}
	l->state = s;
	return 0;

err_stopfd:
	nbd_offload_stop(s);
	pthread_cond_destroy(&s->conn_gone);
	pthread_mutex_destroy(&s->lock);
	close(s->stop_fd);
err_listen:
	close(s->listen_fd);
	if (s->unix_path)
		unlink(s->unix_path);
	free(s->unix_path);
err_tls:
	nbd_tls_free(s->tls_creds);
err_free:
	free(s);
	return ret;
}

/* Waits until every connection of s has ended, then stops its workers. */
static void drain(struct nbd_server *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->nconns)
		pthread_cond_wait(&s->conn_gone, &s->lock);
	pthread_mutex_unlock(&s->lock);
	nbd_offload_stop(s); /* no connection is left to give it a job */
}

/* An export sharing another's socket stops: no new connection picks it,
   its own end, and the listener frees it when it stops (a negotiation
   there may still be reading its name). */
static void leave_group(struct nbd_server *s)
{
	struct nbd_server *g = s->group;
	uint64_t one = 1;

	pthread_mutex_lock(&g->lock);
	s->gone = true;
	pthread_mutex_unlock(&g->lock);
	if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one))
		pvblk_log("nbd: cannot signal the connections to stop");
	drain(s);
}

static void nbd_stop(struct pvblk_listen *l)
{
	struct nbd_server *s = l->state;
	uint64_t one = 1;

	if (!s)
		return;
	l->state = NULL;
	if (s->group != s) {
		leave_group(s);
		return;
	}
	/* every thread polls stop_fd; it stays readable from now on */
	if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one))
		pvblk_log("nbd: cannot signal the connections to stop");
	pthread_join(s->accept_thread, NULL);
	close(s->listen_fd);
	if (s->unix_path)
		unlink(s->unix_path);
	drain(s);
	/* the exports that joined stopped before (they start after it) */
	while (s->group_next) {
		struct nbd_server *m = s->group_next;

		if (!m->gone) /* a caller bug: stop them first */
			leave_group(m);
		s->group_next = m->group_next;
		pthread_cond_destroy(&m->conn_gone);
		pthread_mutex_destroy(&m->lock);
		close(m->stop_fd);
		free(m);
	}
	pthread_cond_destroy(&s->conn_gone);
	pthread_mutex_destroy(&s->lock);
	close(s->stop_fd);
	nbd_tls_free(s->tls_creds);
	free(s->unix_path);
	free(s);
}

/* Connections open now (for the control socket's status). */
static int nbd_connections(struct pvblk_listen *l)
{
	struct nbd_server *s = l->state;
	unsigned n;

	if (!s)
		return 0;
	pthread_mutex_lock(&s->lock);
	n = s->nconns;
	pthread_mutex_unlock(&s->lock);
	return (int)n;
}

/* The counters of the connections that ended plus those of the live
   ones, read under the lock that keeps them from ending meanwhile. */
static void nbd_stats(struct pvblk_listen *l, struct pvblk_io_stats *out)
{
	struct nbd_server *s = l->state;
	struct nbd_counters sum = { 0 };

	if (s) {
		pthread_mutex_lock(&s->lock);
		sum = s->ended;
		for (struct nbd_conn *c = s->conns; c; c = c->next) {
			sum.requests += __atomic_load_n(&c->st.requests,
							__ATOMIC_RELAXED);
			sum.read_bytes += __atomic_load_n(&c->st.read_bytes,
							  __ATOMIC_RELAXED);
			sum.written_bytes += __atomic_load_n(
				&c->st.written_bytes, __ATOMIC_RELAXED);
			sum.errors += __atomic_load_n(&c->st.errors,
						      __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&s->lock);
	}
	out->requests = sum.requests;
	out->read_bytes = sum.read_bytes;
	out->written_bytes = sum.written_bytes;
	out->errors = sum.errors;
	out->nqueues = 0;
}

/* The image grew: connections made from now on are offered the new size
   (NBD has no way to tell a connected client; it keeps the size it was
   given, and requests up to the new end are served). */
static int nbd_resized(struct pvblk_listen *l)
{
	struct nbd_server *s = l->state;

	if (!s)
		return -ENOENT;
	__atomic_store_n(&s->size, l->export->size, __ATOMIC_RELEASE);
	return 0;
}

const struct pvblk_protocol pvblk_nbd = {
	.name = "nbd",
	.start = nbd_start,
	.stop = nbd_stop,
	.connections = nbd_connections,
	.resized = nbd_resized,
	.stats = nbd_stats,
};
