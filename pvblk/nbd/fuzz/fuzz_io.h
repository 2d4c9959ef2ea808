/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_io.h - a connection whose client is a byte buffer: what it sends is
   the fuzzer's input, what the server sends is read (so the sanitizers
   check it) and dropped. */
#ifndef OVK_NBD_FUZZ_IO_H
#define OVK_NBD_FUZZ_IO_H

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "nbd_i.h"

struct fuzz_in {
	const uint8_t *p;
	size_t left;
	uint8_t sum;
};

static ssize_t fuzz_recv(struct nbd_conn *c, void *buf, size_t len)
{
	struct fuzz_in *in = c->io_opaque;

	if (len > in->left)
		len = in->left;
	memcpy(buf, in->p, len);
	in->p += len;
	in->left -= len;
	return (ssize_t)len; /* 0 at the end: the client hung up */
}

static ssize_t fuzz_sendv(struct nbd_conn *c, const struct iovec *iov,
			  int iovcnt)
{
	struct fuzz_in *in = c->io_opaque;
	size_t n = 0;

	for (int i = 0; i < iovcnt; i++) {
		const uint8_t *p = iov[i].iov_base;

		for (size_t j = 0; j < iov[i].iov_len; j++)
			in->sum += p[j];
		n += iov[i].iov_len;
	}
	return (ssize_t)n;
}

static int fuzz_wait(struct nbd_conn *c, bool for_write)
{
	return -ESHUTDOWN;
}

static int fuzz_starttls(struct nbd_conn *c)
{
	return -EPROTO; /* no TLS peer in a buffer */
}

static size_t fuzz_pending(struct nbd_conn *c)
{
	return 0;
}

static const struct nbd_io_ops fuzz_io = {
	.recv = fuzz_recv,
	.sendv = fuzz_sendv,
	.wait = fuzz_wait,
	.starttls = fuzz_starttls,
	.pending = fuzz_pending,
};

/* A server for a 1 GiB export named "disk"; cfg bit 0: TLS required,
   bit 1: read-only. */
static void fuzz_server(struct nbd_server *s, uint8_t cfg)
{
	static int dummy_creds;

	memset(s, 0, sizeof(*s));
	s->export_name = "disk";
	s->description = "fuzz.vmdk";
	s->size = UINT64_C(1) << 30;
	s->min_block = 1;
	s->pref_block = 65536;
	s->max_block = NBD_MAX_BLOCK;
	s->tx_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
		      NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_DF |
		      NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;
	s->tx_flags |= cfg & 2 ? NBD_FLAG_READ_ONLY :
				 NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
	s->tls_creds = cfg & 1 ? &dummy_creds : NULL;
	s->listen_fd = s->stop_fd = -1;
}

#endif /* OVK_NBD_FUZZ_IO_H */
