/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ctlsock.c - the JSON-lines control socket (see ctlsock.h): the listening
 * socket, per-client line buffers and limits, one polling thread, stopped
 * through an eventfd.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctlsock.h"
#include "unixsock.h"

struct ctlsock_client {
	int fd;
	size_t len;
	char buf[CTLSOCK_MAX_LINE + 1];
};

struct ctlsock {
	char *path;
	char *what;
	int listen_fd;
	int stop_fd; /* eventfd: written once to stop the thread */
	pthread_t thread;
	const struct ctlsock_ops *ops;
	void *opaque;
	struct ctlsock_client clients[CTLSOCK_MAX_CLIENTS];
};

json_t *ctlsock_error(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return json_pack("{s:s}", "error", buf);
}

json_t *ctlsock_ok(json_t *ret)
{
	return json_pack("{s:o}", "return", ret ? ret : json_object());
}

static void drop(struct ctlsock_client *cl)
{
	close(cl->fd);
	cl->fd = -1;
	cl->len = 0;
}

/* Send one reply line; a client that does not take it within the send
   timeout (or a NULL reply) is dropped. */
static void send_reply(struct ctlsock_client *cl, json_t *msg)
{
	char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
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

static void handle_line(struct ctlsock *s, struct ctlsock_client *cl,
			const char *line, size_t len)
{
	json_error_t jerr;
	json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);

	if (!req) {
		send_reply(cl, ctlsock_error("not JSON at byte %d: %s",
					     jerr.position, jerr.text));
		return;
	}
	send_reply(cl, s->ops->handle(s->opaque, req));
	json_decref(req);
}

static void client_input(struct ctlsock *s, struct ctlsock_client *cl)
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
			handle_line(s, cl, cl->buf, (size_t)(nl - cl->buf));
		if (cl->fd < 0)
			return;
		memmove(cl->buf, cl->buf + used, cl->len - used);
		cl->len -= used;
	}
	if (cl->fd >= 0 && cl->len == sizeof(cl->buf) - 1) {
		send_reply(cl, ctlsock_error("request line longer than %d "
					     "bytes", CTLSOCK_MAX_LINE));
		if (cl->fd >= 0)
			drop(cl);
	}
}

static void accept_client(struct ctlsock *s)
{
	struct timeval tv = { .tv_sec = 5 };
	int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < CTLSOCK_MAX_CLIENTS; i++)
		if (s->clients[i].fd < 0) {
			/* a client that stops reading its replies cannot
			   hold the thread for long */
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv,
				   sizeof(tv));
			s->clients[i].fd = fd;
			s->clients[i].len = 0;
			return;
		}
	close(fd); /* too many clients */
}

static void *ctlsock_thread(void *arg)
{
	struct ctlsock *s = arg;
	struct pollfd pfd[CTLSOCK_MAX_CLIENTS + 2];
	int who[CTLSOCK_MAX_CLIENTS + 2];

	for (;;) {
		int n = 0;

		pfd[n++] = (struct pollfd){ .fd = s->stop_fd,
					    .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = s->listen_fd,
					    .events = POLLIN };
		for (int i = 0; i < CTLSOCK_MAX_CLIENTS; i++)
			if (s->clients[i].fd >= 0) {
				who[n] = i;
				pfd[n++] = (struct pollfd){
					.fd = s->clients[i].fd,
					.events = POLLIN };
			}
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "%s %s: poll: %s\n", s->what, s->path,
				strerror(errno));
			return NULL;
		}
		if (pfd[0].revents)
			return NULL;
		/* clients first: those that hung up free their slots before
		   a new connection is counted against the limit */
		for (int i = 2; i < n; i++)
			if (pfd[i].revents)
				client_input(s, &s->clients[who[i]]);
		if (pfd[1].revents)
			accept_client(s);
	}
}

/* The listening socket at path (see unixsock.h), mode 0600: the control
   socket is its owner's alone. */
static int listen_unix(const char *path, const char *what)
{
	char err[400];
	int fd = unixsock_listen(path, 0, CTLSOCK_MAX_CLIENTS, 0600, err,
				 sizeof(err));

	if (fd < 0)
		fprintf(stderr, "%s: %s\n", what, err);
	return fd;
}

int ctlsock_start(const char *path, const char *what,
		  const struct ctlsock_ops *ops, void *opaque,
		  struct ctlsock **out)
{
	struct ctlsock *s = calloc(1, sizeof(*s));
	int ret = -ENOMEM;

	if (!s)
		return -ENOMEM;
	s->ops = ops;
	s->opaque = opaque;
	s->path = strdup(path);
	s->what = strdup(what);
	if (!s->path || !s->what)
		goto err_free;
	for (int i = 0; i < CTLSOCK_MAX_CLIENTS; i++)
		s->clients[i].fd = -1;
	s->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (s->stop_fd < 0) {
		ret = -errno;
		goto err_free;
	}
	ret = s->listen_fd = listen_unix(path, what);
	if (ret < 0)
		goto err_close_stop;
	ret = -pthread_create(&s->thread, NULL, ctlsock_thread, s);
	if (ret < 0) {
		fprintf(stderr, "%s %s: no thread: %s\n", what, path,
			strerror(-ret));
		goto err_close_listen;
	}
	*out = s;
	return 0;

err_close_listen:
	close(s->listen_fd);
	unlink(path);
err_close_stop:
	close(s->stop_fd);
err_free:
	free(s->what);
	free(s->path);
	free(s);
	return ret;
}

void ctlsock_stop(struct ctlsock *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one))
		fprintf(stderr, "%s %s: cannot wake its thread\n", s->what,
			s->path);
	pthread_join(s->thread, NULL);
	for (int i = 0; i < CTLSOCK_MAX_CLIENTS; i++)
		if (s->clients[i].fd >= 0)
			close(s->clients[i].fd);
	close(s->listen_fd);
	unlink(s->path);
	close(s->stop_fd);
	free(s->what);
	free(s->path);
	free(s);
}
