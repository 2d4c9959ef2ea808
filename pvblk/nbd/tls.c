/* SPDX-License-Identifier: Apache-2.0 */
/* tls.c - NBD over TLS (NBD_OPT_STARTTLS) with GnuTLS: X.509 files laid
   out as QEMU's tls-creds-x509 directory (ca-cert.pem, server-cert.pem,
   server-key.pem), or a pre-shared key file as QEMU's tls-creds-psk and
   libnbd's tls-psk-file read it (USERNAME:HEXKEY lines, from psktool).
   The session runs on the non-blocking socket; the connection's transport
   becomes the TLS record layer. */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nbd_i.h"

/* PSK key exchanges are not in GnuTLS's default priority: appended to it
   (the system's policy otherwise holds, as for X.509), the same three
   QEMU and libnbd add on their side. */
#define PSK_PRIORITY "+ECDHE-PSK:+DHE-PSK:+PSK"

/* The server's credentials: X.509 or a pre-shared key file. */
struct nbd_tls {
	gnutls_certificate_credentials_t x509; /* or NULL */
	gnutls_psk_server_credentials_t psk;   /* or NULL */
	gnutls_priority_t priority;            /* PSK's, or NULL: default */
};

static int load_x509(struct nbd_tls *t, const char *dir, char *err,
		     size_t errlen)
{
	char cert[4096], key[4096], ca[4096];
	int ret;

	snprintf(cert, sizeof(cert), "%s/server-cert.pem", dir);
	snprintf(key, sizeof(key), "%s/server-key.pem", dir);
	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	if (gnutls_certificate_allocate_credentials(&t->x509) < 0) {
		t->x509 = NULL;
		snprintf(err, errlen, "GnuTLS: out of memory");
		return -ENOMEM;
	}
	ret = gnutls_certificate_set_x509_key_file(t->x509, cert, key,
						   GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		snprintf(err, errlen, "--tls-creds %s: cannot load %s with %s: %s",
			 dir, cert, key, gnutls_strerror(ret));
		return -EINVAL;
	}
	if (access(ca, R_OK) == 0) {
		ret = gnutls_certificate_set_x509_trust_file(
			t->x509, ca, GNUTLS_X509_FMT_PEM);
		if (ret < 0) {
			snprintf(err, errlen, "--tls-creds %s: cannot load %s: %s",
				 dir, ca, gnutls_strerror(ret));
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * Checks that file holds psktool's USERNAME:HEXKEY lines, so that a typo
 * shows at start rather than as failed handshakes. The keys themselves
 * are looked up by GnuTLS, which reads the file at each handshake (a key
 * changed in the file applies to the next client).
 */
static int check_psk_file(const char *file, char *err, size_t errlen)
{
	FILE *f = fopen(file, "re");
	char *line = NULL;
	size_t cap = 0;
	unsigned n = 0, keys = 0;
	ssize_t len;
	int ret = 0;

	if (!f) {
		ret = -errno;
		snprintf(err, errlen, "--tls-psk %s: %s", file, strerror(-ret));
		return ret;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		char *colon;
		gnutls_datum_t hex, bin;

		n++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (!len)
			continue;
		colon = strchr(line, ':');
		if (!colon || colon == line || !colon[1]) {
			snprintf(err, errlen, "--tls-psk %s: line %u: expected "
				 "USERNAME:HEXKEY (as psktool -u NAME -p FILE "
				 "writes)", file, n);
			ret = -EINVAL;
			break;
		}
		hex.data = (unsigned char *)colon + 1;
		hex.size = (unsigned)strlen(colon + 1);
		if (gnutls_hex_decode2(&hex, &bin) < 0) {
			snprintf(err, errlen, "--tls-psk %s: line %u: the key "
				 "after '%.*s:' is not an even number of hex "
				 "digits", file, n, (int)(colon - line), line);
			ret = -EINVAL;
			break;
		}
		explicit_bzero(bin.data, bin.size);
		gnutls_free(bin.data);
		keys++;
	}
	if (!ret && !keys) {
		snprintf(err, errlen, "--tls-psk %s: no USERNAME:HEXKEY line",
			 file);
		ret = -EINVAL;
	}
	explicit_bzero(line, cap);
	free(line);
	fclose(f);
	return ret;
}

static int load_psk(struct nbd_tls *t, const char *file, char *err,
		    size_t errlen)
{
	const char *where;
	int ret = check_psk_file(file, err, errlen);

	if (ret < 0)
		return ret;
	if (gnutls_psk_allocate_server_credentials(&t->psk) < 0) {
		t->psk = NULL;
		snprintf(err, errlen, "GnuTLS: out of memory");
		return -ENOMEM;
	}
	ret = gnutls_psk_set_server_credentials_file(t->psk, file);
	if (ret == 0)
		ret = gnutls_psk_set_server_known_dh_params(
			t->psk, GNUTLS_SEC_PARAM_MEDIUM);
	if (ret == 0)
		ret = gnutls_priority_init2(&t->priority, PSK_PRIORITY, &where,
					    GNUTLS_PRIORITY_INIT_DEF_APPEND);
	if (ret < 0) {
		t->priority = NULL;
		snprintf(err, errlen, "--tls-psk %s: GnuTLS: %s", file,
			 gnutls_strerror(ret));
		return -EINVAL;
	}
	return 0;
}

void nbd_tls_free(void *creds)
{
	struct nbd_tls *t = creds;

	if (!t)
		return;
	if (t->x509)
		gnutls_certificate_free_credentials(t->x509);
	if (t->psk)
		gnutls_psk_free_server_credentials(t->psk);
	if (t->priority)
		gnutls_priority_deinit(t->priority);
	free(t);
	gnutls_global_deinit();
}

int nbd_tls_load(const char *x509_dir, const char *psk_file, void **creds,
		 char *err, size_t errlen)
{
	struct nbd_tls *t;
	int ret;

	if (x509_dir && psk_file) {
		snprintf(err, errlen, "give --tls-creds or --tls-psk, not both");
		return -EINVAL;
	}
	ret = gnutls_global_init();
	if (ret < 0) {
		snprintf(err, errlen, "GnuTLS: %s", gnutls_strerror(ret));
		return -EIO;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		gnutls_global_deinit();
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ret = x509_dir ? load_x509(t, x509_dir, err, errlen)
		       : load_psk(t, psk_file, err, errlen);
	if (ret < 0) {
		nbd_tls_free(t);
		return ret;
	}
	*creds = t;
	return 0;
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

/* Logs why the handshake on s failed, tells the client with an alert
   (best effort: the socket does not block) and ends s. */
static void handshake_failed(struct nbd_conn *c, gnutls_session_t s, int ret)
{
	const struct nbd_tls *t = c->srv->tls_creds;

	pvblk_log("nbd: %s: TLS handshake failed: %s%s", c->peer,
		  gnutls_strerror(ret), t->psk ? " (with --tls-psk: a user "
		  "the file does not name, or the wrong key?)"
		  : "");
	gnutls_alert_send_appropriate(s, ret);
	gnutls_deinit(s);
}

int nbd_tls_start(struct nbd_conn *c)
{
	const struct nbd_tls *t;
	gnutls_session_t s;
	int ret;

	if (!c->srv->tls_creds || c->rend != c->rpos)
		return -EPROTO; /* bytes sent ahead of the TLS handshake */
	if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0)
		return -ENOMEM;
	t = c->srv->tls_creds;
	if ((t->priority ? gnutls_priority_set(s, t->priority)
			 : gnutls_set_default_priority(s)) < 0 ||
	    (t->psk ? gnutls_credentials_set(s, GNUTLS_CRD_PSK, t->psk)
		    : gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE,
					     t->x509)) < 0) {
		gnutls_deinit(s);
		return -EIO;
	}
	if (t->x509)
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
			handshake_failed(c, s, ret);
			return -ECONNABORTED;
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
