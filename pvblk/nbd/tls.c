/* SPDX-License-Identifier: Apache-2.0 */
/* tls.c - NBD over TLS (NBD_OPT_STARTTLS) with GnuTLS and X.509 files laid
   out as QEMU's tls-creds-x509 directory: ca-cert.pem, server-cert.pem,
   server-key.pem. The session runs on the non-blocking socket; the
   connection's transport becomes the TLS record layer. */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nbd_i.h"

int nbd_tls_load(const char *dir, void **creds, char *err, size_t errlen)
{
	gnutls_certificate_credentials_t x;
	char cert[4096], key[4096], ca[4096];
	int ret;

	ret = gnutls_global_init();
	if (ret < 0) {
		snprintf(err, errlen, "GnuTLS: %s", gnutls_strerror(ret));
		return -EIO;
	}
	snprintf(cert, sizeof(cert), "%s/server-cert.pem", dir);
	snprintf(key, sizeof(key), "%s/server-key.pem", dir);
	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	if (gnutls_certificate_allocate_credentials(&x) < 0) {
		gnutls_global_deinit();
		snprintf(err, errlen, "GnuTLS: out of memory");
		return -ENOMEM;
	}
	ret = gnutls_certificate_set_x509_key_file(x, cert, key,
						   GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		snprintf(err, errlen, "--tls-creds %s: cannot load %s with %s: %s",
			 dir, cert, key, gnutls_strerror(ret));
		goto err_free;
	}
	if (access(ca, R_OK) == 0) {
		ret = gnutls_certificate_set_x509_trust_file(
			x, ca, GNUTLS_X509_FMT_PEM);
		if (ret < 0) {
			snprintf(err, errlen, "--tls-creds %s: cannot load %s: %s",
				 dir, ca, gnutls_strerror(ret));
			goto err_free;
		}
	}
	*creds = x;
	return 0;

err_free:
	gnutls_certificate_free_credentials(x);
	gnutls_global_deinit();
	return -EINVAL;
}

void nbd_tls_free(void *creds)
{
	if (!creds)
		return;
	gnutls_certificate_free_credentials(creds);
	gnutls_global_deinit();
}

static ssize_t tls_errno(ssize_t n)
{
	if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
		return -EAGAIN;
	if (n == GNUTLS_E_PREMATURE_TERMINATION)
		return -ECONNRESET;
	return -EIO;
}

static ssize_t tls_recv(struct nbd_conn *c, void *buf, size_t len)
{
	ssize_t n = gnutls_record_recv(c->io_opaque, buf, len);

	return n < 0 ? tls_errno(n) : n;
}

/* One record at a time; after -EAGAIN the caller retries with the same
   bytes, as GnuTLS requires. */
static ssize_t tls_sendv(struct nbd_conn *c, const struct iovec *iov,
			 int iovcnt)
{
	size_t len = iov[0].iov_len < 65536 ? iov[0].iov_len : 65536;
	ssize_t n = gnutls_record_send(c->io_opaque, iov[0].iov_base, len);

	return n < 0 ? tls_errno(n) : n;
}

/* GnuTLS knows which way its last call was blocked. */
static int tls_wait(struct nbd_conn *c, bool for_write)
{
	return nbd_wait_fd(c, gnutls_record_get_direction(c->io_opaque) == 1);
}

static size_t tls_pending(struct nbd_conn *c)
{
	return gnutls_record_check_pending(c->io_opaque);
}

static int tls_again(struct nbd_conn *c)
{
	return -EPROTO; /* STARTTLS twice never reaches here */
}

static const struct nbd_io_ops tls_io = {
	.recv = tls_recv,
	.sendv = tls_sendv,
	.wait = tls_wait,
	.starttls = tls_again,
	.pending = tls_pending,
};

int nbd_tls_start(struct nbd_conn *c)
{
	gnutls_session_t s;
	int ret;

	if (!c->srv->tls_creds || c->rend != c->rpos)
		return -EPROTO; /* bytes sent ahead of the TLS handshake */
	if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0)
		return -ENOMEM;
	if (gnutls_set_default_priority(s) < 0 ||
	    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE,
				   c->srv->tls_creds) < 0) {
		gnutls_deinit(s);
		return -EIO;
	}
	gnutls_certificate_server_set_request(s, GNUTLS_CERT_IGNORE);
	gnutls_transport_set_int(s, c->fd);
	do {
		ret = gnutls_handshake(s);
		if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED) {
			int w = nbd_wait_fd(
				c, gnutls_record_get_direction(s) == 1);

			if (w < 0) {
				gnutls_deinit(s);
				return w;
			}
		} else if (ret < 0 && gnutls_error_is_fatal(ret)) {
			pvblk_log("nbd: %s: TLS handshake failed: %s", c->peer,
				  gnutls_strerror(ret));
			gnutls_deinit(s);
			return -EPROTO;
		}
	} while (ret < 0);
	c->io = &tls_io;
	c->io_opaque = s;
	return 0;
}

void nbd_tls_end(struct nbd_conn *c)
{
	if (c->io != &tls_io)
		return;
	gnutls_bye(c->io_opaque, GNUTLS_SHUT_WR); /* non-blocking: best effort */
	gnutls_deinit(c->io_opaque);
	c->io = &nbd_plain_io;
	c->io_opaque = NULL;
}
