/* SPDX-License-Identifier: Apache-2.0 */
/* pack.c - write an OVA from a folder (descriptor first, manifest next,
 * then files in References order) and extract one into a folder. Holes in
 * sparse files stay holes both ways. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "blockengine.h"
#include "ovf_i.h"

#define COPY_BUF (1u << 20)
#define USTAR_MAX_SIZE 077777777777ull /* 11 octal digits */

/* Writes all of buf at the current position of fd. */
static int write_all(int fd, const void *buf, size_t len, const char *name)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = write(fd, (const char *)buf + done, len - done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return ovf_err(-errno, "%s: write: %s", name, strerror(errno));
		done += (size_t)r;
	}
	return 0;
}

/* Writes an octal field of n bytes (n-1 digits and a NUL). */
static void octal(char *f, size_t n, uint64_t v)
{
	snprintf(f, n, "%0*llo", (int)(n - 1), (unsigned long long)v);
}

/* Builds one 512-byte ustar header block. */
static void header(unsigned char *blk, const char *name, uint64_t size,
		   char type, time_t mtime)
{
	unsigned sum = 0;

	memset(blk, 0, 512);
	strncpy((char *)blk, name, 100);
	octal((char *)blk + 100, 8, 0644);
	octal((char *)blk + 108, 8, 0);
	octal((char *)blk + 116, 8, 0);
	if (size <= USTAR_MAX_SIZE) {
		octal((char *)blk + 124, 12, size);
	} else { /* GNU base-256: big-endian with the top bit set */
		blk[124] = 0x80;
		for (int i = 11; i >= 4; i--) {
			blk[124 + i] = (unsigned char)size;
			size >>= 8;
		}
	}
	octal((char *)blk + 136, 12, (uint64_t)mtime);
	memset(blk + 148, ' ', 8);
	blk[156] = (unsigned char)type;
	memcpy(blk + 257, "ustar", 6);
	memcpy(blk + 263, "00", 2);
	for (int i = 0; i < 512; i++)
		sum += blk[i];
	snprintf((char *)blk + 148, 8, "%06o", sum);
	blk[155] = ' ';
}

/* One pax record "LEN key=value\n" appended to b. */
static void pax_record(struct ovf_buf *b, const char *key, const char *val)
{
	size_t body = strlen(key) + strlen(val) + 3, len = body + 1;
	char tmp[32];

	/* LEN counts its own digits */
	while ((size_t)snprintf(tmp, sizeof(tmp), "%zu", len) + body != len)
		len = (size_t)snprintf(tmp, sizeof(tmp), "%zu", len) + body;
	ovf_buf_printf(b, "%zu %s=%s\n", len, key, val);
}

/* Builds the header block(s) of a member into buf: a pax header first when
   the name is long or (pax_size) the size needs more than 11 octal digits. */
static ssize_t tar_header(void *buf, size_t cap, const char *name,
			  uint64_t size, int64_t mtime, bool pax_size)
{
	unsigned char *out = buf;
	size_t used = 0;

	pax_size = pax_size && size > USTAR_MAX_SIZE;
	if (strlen(name) > 100 || pax_size) {
		struct ovf_buf b = { 0 };
		char num[32];
		char *rec;
		size_t len, padded;

		if (strlen(name) > 100)
			pax_record(&b, "path", name);
		if (pax_size) {
			snprintf(num, sizeof(num), "%llu", (unsigned long long)size);
			pax_record(&b, "size", num);
		}
		len = b.len;
		rec = ovf_buf_take(&b);
		if (!rec)
			return ovf_err(-ENOMEM, "out of memory");
		padded = (len + 511) / 512 * 512;
		if (cap < 512 + padded + 512) {
			free(rec);
			return ovf_err(-ENOSPC, "%s: tar header needs %zu bytes, %zu given",
				       name, 512 + padded + 512, cap);
		}
		header(out, "PaxHeaders/member", len, 'x', (time_t)mtime);
		memcpy(out + 512, rec, len);
		memset(out + 512 + len, 0, padded - len);
		free(rec);
		used = 512 + padded;
	}
	if (cap < used + 512)
		return ovf_err(-ENOSPC, "%s: tar header needs %zu bytes, %zu given",
			       name, used + 512, cap);
	header(out + used, name, size, '0', (time_t)mtime);
	return (ssize_t)(used + 512);
}

ssize_t ovf_tar_header(void *buf, size_t cap, const char *name, uint64_t size,
		       int64_t mtime)
{
	return tar_header(buf, cap, name, size, mtime, true);
}

ssize_t ovf_tar_header_fixed(void *buf, size_t cap, const char *name,
			     uint64_t size, int64_t mtime)
{
	return tar_header(buf, cap, name, size, mtime, false);
}

/* Writes the header(s) for a member at the current position of fd. */
static int write_header(int fd, const char *out, const char *name,
			uint64_t size, time_t mtime)
{
	unsigned char blk[OVF_TAR_HEADER_MAX];
	ssize_t n = ovf_tar_header(blk, sizeof(blk), name, size, mtime);

	if (n < 0)
		return (int)n;
	return write_all(fd, blk, (size_t)n, out);
}

/* Feeds n zero bytes (a hole) to the digest. */
static void digest_zeros(EVP_MD_CTX *ctx, uint64_t n)
{
	static const unsigned char zeros[65536];

	while (n) {
		size_t k = n < sizeof(zeros) ? (size_t)n : sizeof(zeros);

		EVP_DigestUpdate(ctx, zeros, k);
		n -= k;
	}
}

/* Copies size bytes of in (from 0) to out's current position, leaving
   holes where in has them, and feeds every byte (holes as zeros) to ctx;
   pads to the 512 block. */
static int copy_member(int in, int out, uint64_t size, const char *inname,
		       const char *outname, EVP_MD_CTX *ctx)
{
	char *buf = malloc(COPY_BUF);
	off_t start = lseek(out, 0, SEEK_CUR);
	uint64_t pos = 0;
	int r = 0;

	if (!buf)
		return ovf_err(-ENOMEM, "out of memory");
	while (pos < size) {
		off_t data = lseek(in, (off_t)pos, SEEK_DATA);
		off_t hole;

		if (data < 0 && errno == ENXIO)
			break; /* only a hole is left */
		if (data < 0)
			data = (off_t)pos;
		if ((uint64_t)data > size)
			data = (off_t)size;
		digest_zeros(ctx, (uint64_t)data - pos);
		hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > size)
			hole = (off_t)size;
		for (uint64_t at = (uint64_t)data; at < (uint64_t)hole;) {
			size_t want = (uint64_t)hole - at < COPY_BUF ?
				      (size_t)((uint64_t)hole - at) : COPY_BUF;
			ssize_t n = pread(in, buf, want, (off_t)at);

			if (n <= 0) {
				r = ovf_err(n < 0 ? -errno : -EIO, "%s: read at %llu: %s",
					    inname, (unsigned long long)at,
					    n < 0 ? strerror(errno) : "file shrank");
				goto out_free;
			}
			EVP_DigestUpdate(ctx, buf, (size_t)n);
			if (pwrite(out, buf, (size_t)n, start + (off_t)at) != n) {
				r = ovf_err(-errno, "%s: write: %s", outname,
					    strerror(errno));
				goto out_free;
			}
			at += (uint64_t)n;
		}
		pos = (uint64_t)hole;
	}
	if (pos < size)
		digest_zeros(ctx, size - pos);
	{
		uint64_t padded = (size + 511) / 512 * 512;
		off_t end = start + (off_t)padded;

		/* extend over a trailing hole and padding */
		if (ftruncate(out, end) < 0 && errno != EINVAL) {
			r = ovf_err(-errno, "%s: %s", outname, strerror(errno));
			goto out_free;
		}
		if (lseek(out, end, SEEK_SET) < 0)
			r = ovf_err(-errno, "%s: %s", outname, strerror(errno));
	}
out_free:
	free(buf);
	return r;
}

/* Packs a folder package (or the folder of a .ovf) into an OVA. */
/* Creates a new file beside path named path.tmp-XXXXXX (mode 0644 less
   the umask, as open makes it) and returns its fd and name in *tmp. */
static int create_temp_beside(const char *path, char **tmp)
{
	for (int tries = 0; tries < 100; tries++) {
		unsigned char rnd[4];
		int fd;

		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			memcpy(rnd, &tries, sizeof(rnd));
		*tmp = ovf_asprintf("%s.tmp-%02x%02x%02x%02x", path, rnd[0], rnd[1],
				    rnd[2], rnd[3]);
		if (!*tmp)
			return ovf_err(-ENOMEM, "out of memory");
		fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0)
			return fd;
		fd = -errno;
		if (fd != -EEXIST) {
			ovf_err(fd, "%s: %s", *tmp, strerror(-fd));
			free(*tmp);
			*tmp = NULL;
			return fd;
		}
		free(*tmp);
		*tmp = NULL;
	}
	return ovf_err(-EEXIST, "%s: no free temporary name beside it", path);
}

int ovf_rename_noreplace(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (link(from, to) < 0) /* file systems without RENAME_NOREPLACE */
		return -errno;
	unlink(from);
	return 0;
}

/* The OVA is built at a temporary name beside out_path, synced and renamed
   to it only when complete, never over an existing file: a failure leaves
   nothing, and a reader never sees half an archive. */
/* The members of pack's OVA in order into a calloc'd *order (*norder of
   them): the descriptor, then the files of References (each file's parts)
   in order, once each. The manifest's place after the descriptor is kept
   by the caller. */
static int pack_order(struct ovf_pkg *p, const char *src, char ***order,
		      size_t *norder)
{
	int r;

	*order = calloc(p->nmembers + 2, sizeof(**order));
	if (!*order || !((*order)[(*norder)++] = strdup(p->descriptor)))
		return ovf_err(-ENOMEM, "out of memory");
	for (size_t f = 0; f < p->env->nfiles; f++) {
		char **parts;
		size_t np;

		const char *fid = p->env->files[f].id ? p->env->files[f].id : "?";

		/* the same rule as validate: an href inside the package that
		   names regular files in its folder, never through symlinks */
		r = ovf_pkg_file_parts(p, &p->env->files[f], &parts, &np);
		if (r < 0) {
			char why[512];

			snprintf(why, sizeof(why), "%s", ovf_errmsg());
			return ovf_err(r, "%s: References/File[@id=%s]: %s; nothing packed",
				       src, fid, why);
		}
		if (!np) {
			ovf_strv_free(parts, np);
			return ovf_err(-ENOENT, "%s: References/File[@id=%s]: file %s is not in the package (a package's files are regular files in its folder %s, never reached through symlinks); nothing packed",
				       src, fid, p->env->files[f].href, p->dir);
		}
		for (size_t j = 0; j < np; j++) {
			bool dup = false;

			for (size_t k = 0; k < *norder; k++)
				dup = dup || !strcmp((*order)[k], parts[j]);
			if (dup || *norder >= p->nmembers + 1) {
				free(parts[j]);
				continue;
			}
			(*order)[(*norder)++] = parts[j];
		}
		free(parts);
	}
	return 0;
}

/* Appends member name of p to the tar at out (header, then its bytes),
   digesting it with md in ctx while it is copied; its digest goes, in
   hex, to hex. */
static int pack_member(struct ovf_pkg *p, const char *name, int out,
		       const char *out_path, time_t now, const EVP_MD *md,
		       EVP_MD_CTX *ctx, char *hex)
{
	static const char hx[] = "0123456789abcdef";
	char *path = ovf_asprintf("%s/%s", p->dir, name);
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	struct stat st;
	int in, r;

	if (!path)
		return ovf_err(-ENOMEM, "out of memory");
	in = ovf_pkg_open_fd(p, name);
	if (in < 0 || fstat(in, &st) < 0) {
		r = in < 0 ? in : ovf_err(-errno, "%s: %s", path, strerror(errno));
		if (in >= 0)
			close(in);
		free(path);
		return r;
	}
	r = write_header(out, out_path, name, (uint64_t)st.st_size, now);
	EVP_DigestInit_ex(ctx, md, NULL);
	if (r >= 0)
		r = copy_member(in, out, (uint64_t)st.st_size, path, out_path, ctx);
	close(in);
	free(path);
	if (r < 0)
		return r;
	EVP_DigestFinal_ex(ctx, dig, &dlen);
	for (unsigned k = 0; k < dlen; k++) {
		hex[2 * k] = hx[dig[k] >> 4];
		hex[2 * k + 1] = hx[dig[k] & 15];
	}
	return 0;
}

int ovf_pack(const char *src, const char *out_path, enum ovf_digest_algo algo,
	     struct ovf_finding_list *warnings)
{
	static const char *const algo_name[] = { "SHA1", "SHA256", "SHA512" };
	const EVP_MD *md = algo == OVF_SHA1 ? EVP_sha1() :
			   algo == OVF_SHA512 ? EVP_sha512() : EVP_sha256();
	struct ovf_pkg *p;
	char **order = NULL, *mfname = NULL, *mftext = NULL, *tmp = NULL;
	struct stat ost;
	size_t norder = 0;
	struct ovf_buf mf = { 0 };
	time_t now = time(NULL);
	unsigned char zero[1024] = { 0 };
	int out = -1, r;
	size_t hexlen, *hexat = NULL;
	EVP_MD_CTX *ctx = NULL;
	off_t mf_off = 0;

	if (lstat(out_path, &ost) == 0)
		return ovf_err(-EEXIST, "%s already exists; refusing to overwrite it",
			       out_path);
	r = ovf_open(src, &p);
	if (r < 0)
		return r;
	if (p->ova) {
		r = ovf_err(-EINVAL, "%s: already an OVA; pack takes a folder or a .ovf file", src);
		goto err_close_pkg;
	}
	/* the order: descriptor, manifest, then References order */
	r = pack_order(p, src, &order, &norder);
	if (r < 0)
		goto err_free_order;
	if (warnings && (p->manifest || p->cert))
		ovf_finding_add(warnings, OVF_SEV_WARN, p->dir,
				"existing %s%s%s not copied: a fresh %s manifest is written",
				p->manifest ? p->manifest : "",
				p->manifest && p->cert ? " and " : "",
				p->cert ? p->cert : "", algo_name[algo]);
	/* the manifest's length does not depend on the digests: it is written
	   with zeros for them right after the descriptor and filled in at the
	   end, so every file is read once, digested while it is copied */
	hexlen = (size_t)EVP_MD_size(md) * 2;
	hexat = calloc(norder, sizeof(*hexat));
	ctx = EVP_MD_CTX_new();
	if (!hexat || !ctx) {
		r = ovf_err(-ENOMEM, "out of memory");
		goto err_free_order;
	}
	for (size_t i = 0; i < norder; i++) {
		ovf_buf_printf(&mf, "%s(%s)= ", algo_name[algo], order[i]);
		hexat[i] = mf.len;
		ovf_buf_printf(&mf, "%0*d\n", (int)hexlen, 0);
	}
	mftext = ovf_buf_take(&mf);
	mfname = ovf_strdup(p->descriptor);
	if (!mftext || !mfname) {
		r = ovf_err(-ENOMEM, "out of memory");
		goto err_free_order;
	}
	strcpy(mfname + strlen(mfname) - 4, ".mf");
	out = create_temp_beside(out_path, &tmp);
	if (out < 0) {
		r = out;
		goto err_free_order;
	}
	for (size_t i = 0; i < norder; i++) {
		r = pack_member(p, order[i], out, out_path, now, md, ctx,
				mftext + hexat[i]);
		if (r < 0)
			goto err_close_out;
		if (i == 0) { /* the manifest right after the descriptor */
			size_t len = strlen(mftext);

			r = write_header(out, out_path, mfname, len, now);
			mf_off = lseek(out, 0, SEEK_CUR);
			if (r >= 0)
				r = write_all(out, mftext, len, out_path);
			if (r >= 0 && len % 512)
				r = write_all(out, zero, 512 - len % 512, out_path);
			if (r < 0)
				goto err_close_out;
		}
	}
	r = write_all(out, zero, sizeof(zero), out_path);
	if (r < 0)
		goto err_close_out;
	if (pwrite(out, mftext, strlen(mftext), mf_off) != (ssize_t)strlen(mftext)) {
		r = ovf_err(-EIO, "%s: cannot write the manifest", out_path);
		goto err_close_out;
	}
	if (fdatasync(out) < 0 || close(out) < 0) {
		r = ovf_err(-errno, "%s: %s", tmp, strerror(errno));
		out = -1;
		goto err_close_out;
	}
	out = -1;
	r = ovf_rename_noreplace(tmp, out_path);
	if (r < 0) {
		r = ovf_err(r, "%s: %s", out_path, r == -EEXIST ?
			    "appeared while packing; refusing to overwrite it" :
			    strerror(-r));
		goto err_close_out;
	}
	free(tmp);
	ovf_strv_free(order, norder);
	free(mfname);
	free(mftext);
	free(hexat);
	EVP_MD_CTX_free(ctx);
	ovf_close(p);
	return 0;

err_close_out:
	if (out >= 0)
		close(out);
	unlink(tmp);
	free(tmp);
err_free_order:
	ovf_strv_free(order, norder);
	free(mfname);
	free(mftext);
	free(hexat);
	EVP_MD_CTX_free(ctx);
	free(ovf_buf_take(&mf));
err_close_pkg:
	ovf_close(p);
	return r;
}

/* Creates member name below dfd for writing: every folder on the way
   made and opened with no symlink at any level, the file itself new. With
   overwrite, a file (or symlink) already there is unlinked first, so
   nothing is ever written through a symlink or into a hard-linked file. */
static int create_member(int dfd, const char *dir, const char *name,
			 bool overwrite)
{
	const char *leaf;
	int pfd = ovf_openat_parent(dfd, name, true, &leaf), fd;
	struct stat st;

	if (pfd < 0)
		return ovf_err(pfd, "%s/%s: %s", dir, name, ovf_beneath_strerror(pfd));
	fd = openat(pfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0644);
	if (fd < 0 && errno == EEXIST && overwrite &&
	    fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    !S_ISDIR(st.st_mode) && unlinkat(pfd, leaf, 0) == 0)
		fd = openat(pfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
			    O_CLOEXEC, 0644);
	if (fd < 0) {
		int e = errno;

		fd = e == EEXIST && !overwrite ?
		     ovf_err(-e, "%s/%s: already exists; refusing to replace it", dir, name) :
		     ovf_err(-e, "%s/%s: %s", dir, name, strerror(e));
	}
	close(pfd);
	return fd;
}

/* The first offset at or after at that may hold data: holes of a plain
   member in a sparse OVA are skipped without reading them. */
static uint64_t next_data(struct ovf_stream *s, uint64_t at, uint64_t size)
{
	uint64_t base, rel;
	off_t d;
	int fd;

	if (ovf_stream_region(s, &fd, &base) < 0)
		return at;
	d = lseek(fd, (off_t)(base + at), SEEK_DATA);
	if (d < 0)
		return errno == ENXIO ? size : at;
	if ((uint64_t)d - base >= size)
		return size;
	rel = ((uint64_t)d - base) & ~(uint64_t)511;
	return rel > at ? rel : at;
}

/* Extracts every member into dir; all-zero blocks become holes. */
/* Whether member name stores (a part of) the File of a Disk of p. */
static bool is_disk_part(const struct ovf_pkg *p, const char *name)
{
	const struct ovf_envelope *env = p->env;
	bool found = false;

	for (size_t i = 0; env && i < env->ndisks && !found; i++) {
		const struct ovf_file *f = env->disks[i].file_ref ?
			ovf_find_file(env, env->disks[i].file_ref) : NULL;
		char **names;
		size_t n;

		if (!f || ovf_pkg_file_parts(p, f, &names, &n) < 0)
			continue;
		for (size_t k = 0; k < n && !found; k++)
			found = !strcmp(names[k], name);
		ovf_strv_free(names, n);
	}
	return found;
}

int ovf_unpack(struct ovf_pkg *p, const char *dir, unsigned flags)
{
	bool overwrite = flags & OVF_UNPACK_OVERWRITE;
	char *buf;
	int dfd, r = 0;

	ovf_err_clear();
	if (mkdir(dir, 0755) < 0 && (errno != EEXIST || !overwrite))
		return errno == EEXIST ?
		       ovf_err(-EEXIST, "%s already exists; unpack makes a new folder (--overwrite unpacks into an existing one)", dir) :
		       ovf_err(-errno, "%s: %s", dir, strerror(errno));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ovf_err(-errno, "%s: %s", dir, strerror(errno));
	buf = malloc(COPY_BUF);
	if (!buf) {
		close(dfd);
		return ovf_err(-ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < p->nmembers && r >= 0; i++) {
		const struct ovf_member *m = &p->members[i];
		struct ovf_stream *s = NULL;
		int fd;

		if (!ovf_name_is_safe(m->name)) {
			r = ovf_err(-EPERM, "%s: member \"%s\" refused: unsafe name",
				    p->path, m->name);
			break;
		}
		if ((flags & OVF_UNPACK_NO_DISKS) && is_disk_part(p, m->name))
			continue;
		fd = create_member(dfd, dir, m->name, overwrite);
		if (fd < 0) {
			r = fd;
			break;
		}
		r = ovf_member_open(p, m->name, &s);
		for (uint64_t at = 0; r >= 0 && at < m->size;) {
			size_t want;

			at = next_data(s, at, m->size);
			if (at >= m->size)
				break;
			want = m->size - at < COPY_BUF ? (size_t)(m->size - at)
						       : COPY_BUF;
			r = ovf_stream_read_full(s, buf, want, at);
			if (r >= 0 && !bdev_all_zero(buf, want) &&
			    pwrite(fd, buf, want, (off_t)at) != (ssize_t)want)
				r = ovf_err(-errno, "%s/%s: write: %s", dir,
					    m->name, strerror(errno));
			at += want;
		}
		if (r >= 0 && ftruncate(fd, (off_t)m->size) < 0)
			r = ovf_err(-errno, "%s/%s: %s", dir, m->name, strerror(errno));
		ovf_stream_close(s);
		close(fd);
	}
	free(buf);
	close(dfd);
	return r;
}
