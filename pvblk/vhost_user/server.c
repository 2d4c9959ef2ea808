/* SPDX-License-Identifier: Apache-2.0 */
/* server.c - pvblk's vhost-user-blk listener: a unix socket served by one
   thread, one front end at a time; when it goes away the device is reset
   and the next one may connect. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "pvblk.h"
#include "unixsock.h"
#include "vhost_user.h"

struct vu_server {
	struct pvblk_listen *l;
	int listen_fd, stop_fd;
	pthread_t thread;
	struct vblk_dev *blk;
	struct vu_dev dev;
	char label[512]; /* "vhost-user-blk SOCK (IMAGE)" */
};

/* Read exactly len bytes; 0 at a clean end of stream before any byte. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return got ? -EPROTO : 0;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* One message: the header with its fds, then the payload after its size
   was checked. 1 with a message, 0 at end of stream, -errno. */
static int recv_msg(int fd, struct vu_msg *m, int *fds, unsigned *nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
	struct iovec iov = { &m->hdr, sizeof(m->hdr) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	ssize_t n;

	*nfds = 0;
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
			if (*nfds < VU_MAX_FDS)
				fds[(*nfds)++] = f;
			else
				close(f);
		}
	}
	if (n == 0)
		goto err_eof;
	if (mh.msg_flags & MSG_CTRUNC) {
		n = -EPROTO;
		goto err_close;
	}
	if (n < (ssize_t)sizeof(m->hdr)) {
		ssize_t more = read_full(fd, (char *)&m->hdr + n,
					 sizeof(m->hdr) - (size_t)n);
		if (more <= 0) {
			n = more ? more : -EPROTO;
			goto err_close;
		}
	}
	if (m->hdr.size > sizeof(m->p)) {
		pvblk_log("vhost-user: message %u of %u bytes is too long",
			  m->hdr.request, m->hdr.size);
		n = -EPROTO;
		goto err_close;
	}
	if (m->hdr.size) {
		n = read_full(fd, &m->p, m->hdr.size);
		if (n <= 0) {
			n = n ? n : -EPROTO;
			goto err_close;
		}
	}
	return 1;
err_eof:
	n = 0;
err_close:
	for (unsigned i = 0; i < *nfds; i++)
		close(fds[i]);
	*nfds = 0;
	return (int)n;
}

/* Send r, with send_fd (when >= 0) attached to its first byte. */
static int send_reply(int fd, const struct vu_msg *r, int send_fd)
{
	char buf[sizeof(r->hdr) + sizeof(r->p)];
	char cbuf[CMSG_SPACE(sizeof(int))];
	size_t len = sizeof(r->hdr) + r->hdr.size, off = 0;

	memcpy(buf, &r->hdr, sizeof(r->hdr));
	memcpy(buf + sizeof(r->hdr), &r->p, r->hdr.size);
	while (off < len) {
		struct iovec iov = { buf + off, len - off };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (send_fd >= 0 && off == 0) {
			struct cmsghdr *c;

			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &send_fd, sizeof(int));
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		off += (size_t)n;
	}
	return 0;
}

/* Serve one front end until it goes away or we are told to stop. */
static void serve_client(struct vu_server *s, int cfd)
{
	static struct vu_msg m, r; /* one client at a time, this thread */
	struct pollfd pfd[2] = {
		{ .fd = s->stop_fd, .events = POLLIN },
		{ .fd = cfd, .events = POLLIN },
	};

	for (;;) {
		int fds[VU_MAX_FDS];
		unsigned nfds;
		int ret;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		ret = recv_msg(cfd, &m, fds, &nfds);
		if (ret <= 0) {
			if (ret < 0)
				pvblk_log("vhost-user %s: %s", s->l->address,
					  strerror(-ret));
			break;
		}
		ret = vu_dev_handle(&s->dev, &m, fds, nfds, &r);
		if (ret < 0) {
			pvblk_log("vhost-user %s: front end broke the protocol "
				  "(request %u): %s", s->l->address,
				  m.hdr.request, strerror(-ret));
			break;
		}
		if (ret == 1) {
			ret = send_reply(cfd, &r, s->dev.reply_fd);
			if (s->dev.reply_fd >= 0) {
				close(s->dev.reply_fd);
				s->dev.reply_fd = -1;
			}
			if (ret < 0)
				break;
		}
	}
	vu_dev_reset(&s->dev);
}

static void *server_thread(void *arg)
{
	struct vu_server *s = arg;
	struct pollfd pfd[2] = {
		{ .fd = s->stop_fd, .events = POLLIN },
		{ .fd = s->listen_fd, .events = POLLIN },
	};

	for (;;) {
		int cfd;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		cfd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		pvblk_log("vhost-user %s: front end connected", s->l->address);
		serve_client(s, cfd);
		close(cfd);
		pvblk_log("vhost-user %s: front end gone", s->l->address);
	}
	return NULL;
}

/* GET_ID's answer: stable for an image, from its disk database's uuid
   when it has one, else from its path: "ovk-" and 16 hex digits. Under
   -o snapshot it is the served image's, not the fresh child's. */
static void make_serial(const struct pvblk_export *e, char *out, size_t n)
{
	const char *key, *val, *src = NULL;
	char *real = realpath(e->image, NULL);
	uint64_t h = 0xcbf29ce484222325ull;
	struct bdev *b = e->snapshot_child && bdev_backing(e->bdev) ?
			 bdev_backing(e->bdev) : e->bdev;

	for (unsigned i = 0; bdev_get_ddb(b, i, &key, &val) == 0; i++)
		if (!strcmp(key, "uuid") || !strcmp(key, "uuid.image")) {
			src = val;
			break;
		}
	if (!src)
		src = real ? real : e->image;
	for (const char *p = src; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	snprintf(out, n, "ovk-%016llx", (unsigned long long)h);
	free(real);
}

static int vu_start(struct pvblk_listen *l, char *err, size_t errlen)
{
	struct vblk_dev_opts o = { 0 };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vu_server *s;
	char serial[32];
	int ret;

	if (strlen(l->address) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path too long");
		return -ENAMETOOLONG;
	}
	if (l->num_queues > VU_MAX_QUEUES) {
		snprintf(err, errlen, "at most %d queues", VU_MAX_QUEUES);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->l = l;
	make_serial(l->export, serial, sizeof(serial));
	o.bdev = l->export->bdev;
	o.read_only = l->export->read_only;
	o.serial = serial;
	o.num_queues = l->num_queues;
	ret = vblk_dev_new(&o, &s->blk);
	if (ret < 0) {
		snprintf(err, errlen, "cannot make the device: %s",
			 strerror(-ret));
		goto err_free;
	}
	vu_dev_init(&s->dev, s->blk, l->num_queues);
	snprintf(s->label, sizeof(s->label), "vhost-user-blk %s (%s)",
		 l->address, l->export->image);
	s->dev.label = s->label;
	s->dev.poll_ns = (uint64_t)l->poll_us * 1000u;
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto err_dev;
	}
	/* ready once the path exists; a socket file left by an earlier
	   run is replaced, a live one is not, nor is anything else */
	s->listen_fd = unixsock_listen(l->address, 0, 1, 0, err, errlen);
	if (s->listen_fd < 0) {
		ret = s->listen_fd;
		goto err_stop_fd;
	}
	ret = -pthread_create(&s->thread, NULL, server_thread, s);
	if (ret) {
		snprintf(err, errlen, "cannot start a thread: %s",
			 strerror(-ret));
		unlink(l->address);
		goto err_sock;
	}
	l->state = s;
	return 0;
err_sock:
	close(s->listen_fd);
err_stop_fd:
	close(s->stop_fd);
err_dev:
	vblk_dev_free(s->blk);
err_free:
	free(s);
	return ret;
}

static void vu_stop(struct pvblk_listen *l)
{
	struct vu_server *s = l->state;
	uint64_t one = 1;

	if (!s)
		return;
	if (write(s->stop_fd, &one, sizeof(one)) < 0)
		pvblk_log("vhost-user %s: cannot stop: %s", l->address,
			  strerror(errno));
	pthread_join(s->thread, NULL);
	vu_dev_reset(&s->dev);
	unlink(l->address);
	close(s->listen_fd);
	close(s->stop_fd);
	vblk_dev_free(s->blk);
	free(s);
	l->state = NULL;
}

/* Totals over the device's queues, and each queue's count and state. */
static void vu_stats(struct pvblk_listen *l, struct pvblk_io_stats *out)
{
	struct vu_server *s = l->state;

	out->requests = out->read_bytes = out->written_bytes = 0;
	out->errors = 0;
	out->nqueues = 0;
	if (!s)
		return;
	for (unsigned i = 0; i < s->dev.num_queues &&
			     i < PVBLK_STATS_MAX_QUEUES; i++) {
		struct pvblk_queue_stats *qs = &out->queues[i];
		struct vblk_stats st;

		if (vu_vring_stats(&s->dev, i, &st) < 0)
			break;
		out->requests += st.requests;
		out->read_bytes += st.read_bytes;
		out->written_bytes += st.written_bytes;
		out->errors += st.errors;
		qs->index = i;
		qs->requests = st.requests;
		qs->broken = vu_vring_broken(&s->dev, i, qs->reason,
					     sizeof(qs->reason)) == 1;
		if (!qs->broken)
			qs->reason[0] = '\0';
		out->nqueues = i + 1;
	}
}

static int vu_resized(struct pvblk_listen *l)
{
	struct vu_server *s = l->state;
	int ret;

	if (!s)
		return -ENOENT;
	ret = vblk_dev_resize(s->blk);
	if (ret < 0)
		return ret;
	ret = vu_dev_config_changed(&s->dev);
	if (ret < 0)
		pvblk_log("vhost-user %s: cannot tell the front end that the "
			  "disk grew: %s", l->address, strerror(-ret));
	return ret;
}

const struct pvblk_protocol pvblk_vhost_user_blk = {
	.name = "vhost-user-blk",
	.start = vu_start,
	.stop = vu_stop,
	.resized = vu_resized,
	.stats = vu_stats,
};
