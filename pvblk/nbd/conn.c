/* SPDX-License-Identifier: Apache-2.0 */
/* conn.c - whole reads and writes over a connection's transport, and the
   plain (non-TLS) socket transport. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd_i.h"

static ssize_t plain_recv(struct nbd_conn *c, void *buf, size_t len)
{
	ssize_t n = recv(c->fd, buf, len, MSG_DONTWAIT);

	return n < 0 ? -errno : n;
}

static ssize_t plain_sendv(struct nbd_conn *c, const struct iovec *iov,
			   int iovcnt)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov,
			    .msg_iovlen = (size_t)iovcnt };
	ssize_t n = sendmsg(c->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);

	return n < 0 ? -errno : n;
}

int nbd_wait_fd(struct nbd_conn *c, bool for_write)
{
	struct pollfd p[2] = {
		{ .fd = c->fd, .events = for_write ? POLLOUT : POLLIN },
		{ .fd = c->srv->stop_fd, .events = POLLIN },
	};

	for (;;) {
		int n = poll(p, c->srv->stop_fd >= 0 ? 2 : 1, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (p[1].revents)
			return -ESHUTDOWN;
		return 0;
	}
}

static size_t plain_pending(struct nbd_conn *c)
{
	return 0;
}

const struct nbd_io_ops nbd_plain_io = {
	.recv = plain_recv,
	.sendv = plain_sendv,
	.wait = nbd_wait_fd,
	.starttls = nbd_tls_start,
	.pending = plain_pending,
};

size_t nbd_buffered(struct nbd_conn *c)
{
	return c->rend - c->rpos + c->io->pending(c);
}

int nbd_fill(struct nbd_conn *c)
{
	ssize_t n;

	if (c->rpos == c->rend)
		c->rpos = c->rend = 0;
	if (c->rend == sizeof(c->rbuf))
		return 0;
	n = c->io->recv(c, c->rbuf + c->rend, sizeof(c->rbuf) - c->rend);
	if (n == -EAGAIN || n == -EINTR)
		return 0;
	if (n < 0)
		return (int)n;
	if (n == 0)
		return -ECONNRESET;
	c->rend += (size_t)n;
	return 0;
}

int nbd_read_full(struct nbd_conn *c, void *buf, size_t len)
{
	uint8_t *p = buf;

	/* what the read-ahead buffer holds first */
	if (c->rend > c->rpos) {
		size_t k = c->rend - c->rpos < len ? c->rend - c->rpos : len;

		memcpy(p, c->rbuf + c->rpos, k);
		c->rpos += k;
		p += k;
		len -= k;
	}
	while (len > 0) {
		ssize_t n;

		/* small reads go through the buffer to batch the syscalls */
		if (len < sizeof(c->rbuf) / 2) {
			int ret = nbd_fill(c);

			if (ret < 0)
				return ret;
			if (c->rend > c->rpos)
				return nbd_read_full(c, p, len);
			n = -EAGAIN;
		} else {
			n = c->io->recv(c, p, len);
		}
		if (n == -EAGAIN || n == -EINTR) {
			int ret = c->io->wait(c, false);

			if (ret < 0)
				return ret;
			continue;
		}
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int nbd_skip(struct nbd_conn *c, uint64_t len)
{
	uint8_t junk[4096];

	while (len > 0) {
		size_t k = len < sizeof(junk) ? (size_t)len : sizeof(junk);
		int ret = nbd_read_full(c, junk, k);

		if (ret < 0)
			return ret;
		len -= k;
	}
	return 0;
}

int nbd_write_full(struct nbd_conn *c, const struct iovec *iov, int iovcnt)
{
	struct iovec v[NBD_MAX_IOV];
	int n = 0;

	if (iovcnt > NBD_MAX_IOV)
		return -EINVAL;
	for (int i = 0; i < iovcnt; i++)
		if (iov[i].iov_len)
			v[n++] = iov[i];
	for (int i = 0; i < n;) {
		ssize_t k = c->io->sendv(c, v + i, n - i);

		if (k == -EAGAIN || k == -EINTR) {
			int ret = c->io->wait(c, true);

			if (ret < 0)
				return ret;
			continue;
		}
		if (k < 0)
			return (int)k;
		while (k > 0) {
			if ((size_t)k >= v[i].iov_len) {
				k -= (ssize_t)v[i].iov_len;
				i++;
			} else {
				v[i].iov_base = (uint8_t *)v[i].iov_base + k;
				v[i].iov_len -= (size_t)k;
				k = 0;
			}
		}
	}
	return 0;
}
