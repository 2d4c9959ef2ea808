/* SPDX-License-Identifier: Apache-2.0 */
/* manifest.c - check a package's manifest digests (SHA1/256/512) and the
 * certificate's signature over the manifest with OpenSSL. Trust in the
 * certificate is the user's call: we report subject, issuer and validity. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ovf_i.h"

#define OVF_MANIFEST_MAX (4u << 20)
#define OVF_CERT_MAX (1u << 20)

/* Parses a digest name ("sha256", "SHA-256"). */
int ovf_digest_algo_parse(const char *name, enum ovf_digest_algo *out)
{
	if (!strcasecmp(name, "sha1") || !strcasecmp(name, "sha-1"))
		*out = OVF_SHA1;
	else if (!strcasecmp(name, "sha256") || !strcasecmp(name, "sha-256"))
		*out = OVF_SHA256;
	else if (!strcasecmp(name, "sha512") || !strcasecmp(name, "sha-512"))
		*out = OVF_SHA512;
	else
		return ovf_err(-EINVAL, "digest \"%s\" not supported (expected sha1, sha256 or sha512)",
			       name);
	return 0;
}

/* The OpenSSL digest for a manifest algorithm name, or NULL. */
static const EVP_MD *md_for(const char *algo)
{
	if (!strcasecmp(algo, "SHA1"))
		return EVP_sha1();
	if (!strcasecmp(algo, "SHA256"))
		return EVP_sha256();
	if (!strcasecmp(algo, "SHA512"))
		return EVP_sha512();
	return NULL;
}

/* Hex digest of everything in s, in a malloc'd lower-case string. */
static int digest_stream(struct ovf_stream *s, const EVP_MD *md, char **hex)
{
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	size_t bufsz = 1u << 20;
	unsigned char *buf = malloc(bufsz);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint64_t off = 0;
	int r = 0;

	if (!buf || !ctx || !EVP_DigestInit_ex(ctx, md, NULL)) {
		r = ovf_err(-ENOMEM, "%s: cannot start digest", s->name);
		goto out_free;
	}
	for (;;) {
		ssize_t n = ovf_stream_pread(s, buf, bufsz, off);

		if (n < 0) {
			r = (int)n;
			goto out_free;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += (uint64_t)n;
	}
	EVP_DigestFinal_ex(ctx, dig, &dlen);
	*hex = malloc(dlen * 2 + 1);
	if (!*hex) {
		r = ovf_err(-ENOMEM, "out of memory");
		goto out_free;
	}
	for (unsigned i = 0; i < dlen; i++)
		sprintf(*hex + 2 * i, "%02x", dig[i]);
out_free:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

/* Splits "ALGO(name)= hex" or "ALGO (name) = hex" into its parts, in
   place. False if the line has another shape. */
static bool split_line(char *line, char **algo, char **name, char **hex)
{
	char *eq = strrchr(line, '='), *open, *close, *e;

	if (!eq)
		return false;
	*hex = eq + 1;
	while (isspace((unsigned char)**hex))
		(*hex)++;
	e = *hex + strlen(*hex);
	while (e > *hex && isspace((unsigned char)e[-1]))
		*--e = '\0';
	e = eq;
	while (e > line && isspace((unsigned char)e[-1]))
		e--;
	if (e == line || e[-1] != ')')
		return false;
	close = e - 1;
	open = strchr(line, '(');
	if (!open || open > close)
		return false;
	*close = '\0';
	*name = open + 1;
	e = open;
	while (e > line && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	*algo = line;
	if (!**algo || !**name || !**hex)
		return false;
	for (char *c = *hex; *c; c++) {
		if (!isxdigit((unsigned char)*c))
			return false;
		*c = (char)tolower((unsigned char)*c);
	}
	return true;
}

/* Adds a digest entry. */
static struct ovf_digest_entry *add_entry(struct ovf_verify *v)
{
	struct ovf_digest_entry *e = realloc(v->entries,
					     (v->nentries + 1) * sizeof(*e));

	if (!e)
		return NULL;
	v->entries = e;
	e = &v->entries[v->nentries++];
	memset(e, 0, sizeof(*e));
	return e;
}

/* True when name is covered by an entry of v. */
static bool listed(const struct ovf_verify *v, const char *name)
{
	for (size_t i = 0; i < v->nentries; i++)
		if (v->entries[i].name && !strcmp(v->entries[i].name, name))
			return true;
	return false;
}

/* Checks each manifest line against the file it names. */
static int check_manifest(struct ovf_pkg *p, struct ovf_verify *v,
			  char *mf, size_t len)
{
	char *save = NULL;

	(void)len;
	for (char *line = strtok_r(mf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *algo, *name, *hex;
		struct ovf_digest_entry *e;
		struct ovf_stream *s = NULL;
		const EVP_MD *md;
		size_t l = strlen(line);

		if (l && line[l - 1] == '\r')
			line[--l] = '\0';
		if (!l)
			continue;
		e = add_entry(v);
		if (!e)
			return ovf_err(-ENOMEM, "out of memory");
		if (!split_line(line, &algo, &name, &hex)) {
			e->name = strdup(line);
			e->status = OVF_DIGEST_UNREADABLE;
			e->actual = strdup("manifest line is not ALGO(name)= hex");
			continue;
		}
		e->name = strdup(name);
		e->algo = strdup(algo);
		e->expected = strdup(hex);
		md = md_for(algo);
		if (!md) {
			e->status = OVF_DIGEST_UNREADABLE;
			e->actual = ovf_asprintf("digest %s not supported", algo);
			continue;
		}
		if (!ovf_pkg_find_member(p, name)) {
			e->status = OVF_DIGEST_MISSING;
			continue;
		}
		if (ovf_member_open(p, name, &s) < 0 ||
		    digest_stream(s, md, &e->actual) < 0) {
			if (s)
				ovf_stream_close(s);
			e->status = OVF_DIGEST_UNREADABLE;
			e->actual = strdup(ovf_errmsg());
			continue;
		}
		ovf_stream_close(s);
		s = NULL;
		e->status = strcmp(e->actual, hex) ? OVF_DIGEST_MISMATCH
						   : OVF_DIGEST_OK;
	}
	/* the descriptor and every referenced file must be listed */
	if (!listed(v, p->descriptor)) {
		struct ovf_digest_entry *e = add_entry(v);

		if (!e)
			return ovf_err(-ENOMEM, "out of memory");
		e->name = strdup(p->descriptor);
		e->status = OVF_DIGEST_UNLISTED;
	}
	for (size_t f = 0; f < p->env->nfiles; f++) {
		char **parts;
		size_t np;

		if (ovf_pkg_file_parts(p, &p->env->files[f], &parts, &np) < 0)
			continue;
		for (size_t j = 0; j < np; j++) {
			struct ovf_digest_entry *e;

			if (listed(v, parts[j]) || !ovf_pkg_find_member(p, parts[j]))
				continue;
			e = add_entry(v);
			if (!e) {
				ovf_strv_free(parts, np);
				return ovf_err(-ENOMEM, "out of memory");
			}
			e->name = strdup(parts[j]);
			e->status = OVF_DIGEST_UNLISTED;
		}
		ovf_strv_free(parts, np);
	}
	return 0;
}

/* Prints an X509 name or time into a malloc'd string. */
static char *bio_take(BIO *b)
{
	char *data, *s;
	long n = BIO_get_mem_data(b, &data);

	s = malloc((size_t)n + 1);
	if (s) {
		memcpy(s, data, (size_t)n);
		s[n] = '\0';
	}
	BIO_free(b);
	return s;
}

/* Decodes hex into bytes; -1 if malformed. */
static long unhex(const char *hex, unsigned char *out, size_t max)
{
	size_t n = strlen(hex);

	if (n % 2 || n / 2 > max)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;

		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return (long)(n / 2);
}

/* Verifies the certificate file's signature over the manifest bytes. */
static void check_cert(struct ovf_pkg *p, struct ovf_verify *v,
		       const char *mf, size_t mflen)
{
	struct ovf_stream *s;
	char *buf = NULL, *nl, *algo, *name, *hex;
	size_t len;
	unsigned char sig[2048];
	long siglen;
	BIO *bio = NULL;
	X509 *x = NULL;
	EVP_PKEY *key = NULL;
	EVP_MD_CTX *ctx = NULL;
	const EVP_MD *md;

	v->sig = OVF_SIG_ERROR;
	if (ovf_member_open(p, p->cert, &s) < 0) {
		v->sig_message = strdup(ovf_errmsg());
		return;
	}
	if (ovf_stream_load(s, OVF_CERT_MAX, &buf, &len) < 0) {
		v->sig_message = strdup(ovf_errmsg());
		ovf_stream_close(s);
		return;
	}
	ovf_stream_close(s);
	nl = strchr(buf, '\n');
	if (nl) {
		*nl = '\0';
		if (nl > buf && nl[-1] == '\r')
			nl[-1] = '\0';
	}
	if (!split_line(buf, &algo, &name, &hex) || !(md = md_for(algo))) {
		v->sig_message = ovf_asprintf("%s: first line is not \"SHA256(%s)= <hex signature>\"",
					      p->cert, p->manifest ? p->manifest : "package.mf");
		goto out_free;
	}
	if (!p->manifest || strcmp(name, p->manifest)) {
		v->sig_message = ovf_asprintf("%s: signs \"%s\", but the manifest is \"%s\"",
					      p->cert, name,
					      p->manifest ? p->manifest : "(none)");
		v->sig = OVF_SIG_BAD;
		goto out_free;
	}
	siglen = unhex(hex, sig, sizeof(sig));
	if (siglen <= 0) {
		v->sig_message = ovf_asprintf("%s: signature is not hex of at most %zu bytes",
					      p->cert, sizeof(sig));
		goto out_free;
	}
	bio = nl ? BIO_new_mem_buf(nl + 1, (int)(len - (size_t)(nl + 1 - buf))) : NULL;
	x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	if (!x) {
		v->sig_message = ovf_asprintf("%s: no PEM X.509 certificate after the signature line",
					      p->cert);
		goto out_free;
	}
	{
		BIO *b1 = BIO_new(BIO_s_mem()), *b2 = BIO_new(BIO_s_mem());
		BIO *b3 = BIO_new(BIO_s_mem()), *b4 = BIO_new(BIO_s_mem());

		if (b1 && b2 && b3 && b4) {
			X509_NAME_print_ex(b1, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
			X509_NAME_print_ex(b2, X509_get_issuer_name(x), 0, XN_FLAG_RFC2253);
			ASN1_TIME_print(b3, X509_get0_notBefore(x));
			ASN1_TIME_print(b4, X509_get0_notAfter(x));
			v->cert_subject = bio_take(b1);
			v->cert_issuer = bio_take(b2);
			v->cert_not_before = bio_take(b3);
			v->cert_not_after = bio_take(b4);
		} else {
			BIO_free(b1); BIO_free(b2); BIO_free(b3); BIO_free(b4);
		}
		v->cert_time_valid = X509_cmp_current_time(X509_get0_notBefore(x)) <= 0 &&
				     X509_cmp_current_time(X509_get0_notAfter(x)) >= 0;
		v->cert_self_signed = X509_check_issued(x, x) == X509_V_OK;
	}
	key = X509_get_pubkey(x);
	ctx = EVP_MD_CTX_new();
	if (!key || !ctx || EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) != 1) {
		v->sig_message = ovf_asprintf("%s: cannot use the certificate's public key",
					      p->cert);
		goto out_free;
	}
	if (EVP_DigestVerify(ctx, sig, (size_t)siglen, (const unsigned char *)mf,
			     mflen) == 1) {
		v->sig = OVF_SIG_OK;
		v->sig_message = ovf_asprintf("%s signature over %s verified with the certificate's key",
					      algo, p->manifest);
	} else {
		v->sig = OVF_SIG_BAD;
		v->sig_message = ovf_asprintf("%s: the %s signature does not match %s (manifest changed or wrong key)",
					      p->cert, algo, p->manifest);
	}
out_free:
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(key);
	X509_free(x);
	BIO_free(bio);
	free(buf);
}

/* Checks digests and signature; fills out (free with ovf_verify_free). */
int ovf_verify(struct ovf_pkg *p, struct ovf_verify *out)
{
	struct ovf_stream *s;
	char *mf = NULL, *copy;
	size_t len;
	int r;

	ovf_err_clear();
	memset(out, 0, sizeof(*out));
	if (p->manifest) {
		out->has_manifest = true;
		r = ovf_member_open(p, p->manifest, &s);
		if (r < 0)
			return r;
		r = ovf_stream_load(s, OVF_MANIFEST_MAX, &mf, &len);
		ovf_stream_close(s);
		if (r < 0)
			return r;
		copy = malloc(len + 1);
		if (!copy) {
			free(mf);
			return ovf_err(-ENOMEM, "out of memory");
		}
		memcpy(copy, mf, len + 1);
		r = check_manifest(p, out, copy, len);
		free(copy);
		if (r < 0) {
			free(mf);
			ovf_verify_free(out);
			return r;
		}
		out->digests_ok = true;
		for (size_t i = 0; i < out->nentries; i++)
			if (out->entries[i].status != OVF_DIGEST_OK)
				out->digests_ok = false;
	}
	if (p->cert) {
		if (mf)
			check_cert(p, out, mf, len);
		else {
			out->sig = OVF_SIG_ERROR;
			out->sig_message = ovf_asprintf("%s: a certificate without a manifest to sign",
							p->cert);
		}
	}
	free(mf);
	return 0;
}

/* Frees what ovf_verify filled in. */
void ovf_verify_free(struct ovf_verify *v)
{
	for (size_t i = 0; i < v->nentries; i++) {
		free(v->entries[i].name);
		free(v->entries[i].algo);
		free(v->entries[i].expected);
		free(v->entries[i].actual);
	}
	free(v->entries);
	free(v->sig_message);
	free(v->cert_subject);
	free(v->cert_issuer);
	free(v->cert_not_before);
	free(v->cert_not_after);
	memset(v, 0, sizeof(*v));
}
