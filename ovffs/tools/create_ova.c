/* create_ova.c - `ovf create OUT.ova`: the archive assembled around the
 * engine's output, disk 1 written in place (how: the comment below). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/falloc.h>

#include <openssl/evp.h>

#include "create_i.h"
#include "ovf.h"

#define COPY_BUF (1u << 20)

/* Writes all of buf at off of fd. */
int create_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
		      const char *name)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			fprintf(stderr, "ovf create: %s: %s\n", name, strerror(e));
			return -e;
		}
		buf = (const char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* ---- OVA output -------------------------------------------------------------
 *
 * Every disk's bytes are written by the engine, and disk 1's only by it. The
 * engine's writer makes a file of its own, so disk 1 is converted straight
 * into the archive file (its VMDK at offset 0). Disks 2.. are converted
 * beside it and appended as members, hashed in the same pass as that copy
 * (their one extra write: the engine cannot write into a region of another
 * file, and ext4 cannot move blocks between files). When every size is
 * known the front -- the descriptor, the manifest and disk 1's tar header --
 * is put before disk 1 with FALLOC_FL_INSERT_RANGE, which moves no data on
 * ext4 and XFS; the descriptor gets trailing whitespace (XML allows it after
 * the root element) so that the front is whole 4 KiB blocks, as INSERT_RANGE
 * needs. Where the file system cannot insert, the archive is copied once
 * behind the front. All of it happens in a temporary folder beside OUT and is
 * renamed to OUT (never over an existing file) only when complete, so a
 * failure (ENOSPC, a bad disk) leaves no OVA behind.
 */
#define FRONT_ALIGN 4096u
#define HEX_MAX (EVP_MAX_MD_SIZE * 2 + 1)

static uint64_t pad512(uint64_t n)
{
	return (n + 511) / 512 * 512;
}

/* SHA256 of [0, len) of in into hex; with out >= 0 the bytes are also
   written at out_off of out in the same pass. */
static int hash_copy(int in, const char *inname, uint64_t len, int out,
		     uint64_t out_off, const char *outname, char *hex)
{
	unsigned char dig[EVP_MAX_MD_SIZE], *buf = malloc(COPY_BUF);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned dlen;
	uint64_t pos = 0;
	int r = 0;

	if (!buf || !ctx) {
		fprintf(stderr, "ovf create: out of memory\n");
		r = -ENOMEM;
		goto out_free;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	while (pos < len) {
		size_t want = len - pos < COPY_BUF ? (size_t)(len - pos) : COPY_BUF;
		ssize_t n = pread(in, buf, want, (off_t)pos);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			fprintf(stderr, "ovf create: %s: read at %llu: %s\n", inname,
				(unsigned long long)pos, n < 0 ? strerror(errno) : "file shrank");
			goto out_free;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		if (out >= 0) {
			r = create_pwrite_all(out, buf, (size_t)n, out_off + pos, outname);
			if (r < 0)
				goto out_free;
		}
		pos += (uint64_t)n;
	}
	EVP_DigestFinal_ex(ctx, dig, &dlen);
	for (unsigned i = 0; i < dlen; i++)
		sprintf(hex + 2 * i, "%02x", dig[i]);
out_free:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

/* Hex SHA256 of a buffer. */
static void hash_buf(const void *p, size_t len, char *hex)
{
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;

	EVP_Digest(p, len, dig, &dlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < dlen; i++)
		sprintf(hex + 2 * i, "%02x", dig[i]);
}

/* Puts front (len bytes, a multiple of FRONT_ALIGN) before the contents of
   *fd (the file arch): inserted in place where the file system can, else a
   copy at arch.new renamed over arch. */
static int put_front(int *fd, const char *arch, const void *front, size_t len,
		     uint64_t body)
{
	char *tmp, hex[HEX_MAX];
	int nfd, r;

	if (fallocate(*fd, FALLOC_FL_INSERT_RANGE, 0, (off_t)len) == 0)
		return create_pwrite_all(*fd, front, len, 0, arch);
	if (errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		return r;
	}
	tmp = malloc(strlen(arch) + 8);
	if (!tmp)
		return -ENOMEM;
	sprintf(tmp, "%s.new", arch);
	nfd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (nfd < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", tmp, strerror(errno));
		free(tmp);
		return r;
	}
	r = create_pwrite_all(nfd, front, len, 0, tmp);
	if (r >= 0)
		r = hash_copy(*fd, arch, body, nfd, len, tmp, hex);
	if (r >= 0 && rename(tmp, arch) < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
	}
	if (r < 0) {
		close(nfd);
		unlink(tmp);
	} else {
		close(*fd);
		*fd = nfd;
	}
	free(tmp);
	return r;
}

/* Renames from to to, failing rather than replacing an existing to. */
static int rename_noreplace(const char *from, const char *to)
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

/* Converts the disks into work/archive, puts the front before them and
   renames the archive to out. Leaves nothing in work. */
int create_build_ova(const char *work, const char *out, const struct vm_spec *vm,
		     struct disk_job *jobs, int nd)
{
	char (*hex)[HEX_MAX] = calloc((size_t)nd + 1, HEX_MAX);
	char *arch = malloc(strlen(work) + 16), *tmp = NULL;
	char *desc = NULL, *ovfname = NULL, *mfname = NULL, *front = NULL;
	struct { char *p; size_t len; } mf = { 0 };
	unsigned char hd[OVF_TAR_HEADER_MAX], hm[OVF_TAR_HEADER_MAX], h1[OVF_TAR_HEADER_MAX];
	ssize_t nhd, nhm, nh1;
	size_t dlen, dfull, flen, at;
	uint64_t end, front0;
	time_t now = time(NULL);
	int fd = -1, r = -ENOMEM;
	FILE *m;

	if (!hex || !arch)
		goto err_free;
	sprintf(arch, "%s/archive", work);
	r = create_convert_disk(&jobs[0], arch);
	if (r < 0)
		goto err_free; /* the engine removed what it made */
	fd = open(arch, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_unlink;
	}
	r = hash_copy(fd, arch, jobs[0].file_size, -1, 0, NULL, hex[0]);
	if (r < 0)
		goto err_unlink;
	end = pad512(jobs[0].file_size);
	tmp = malloc(strlen(work) + strlen(vm->name) + 32);
	if (!tmp) {
		r = -ENOMEM;
		goto err_unlink;
	}
	for (int i = 1; i < nd; i++) {
		unsigned char h[OVF_TAR_HEADER_MAX];
		ssize_t nh;
		int in;

		sprintf(tmp, "%s/%s", work, jobs[i].href);
		r = create_convert_disk(&jobs[i], tmp);
		if (r < 0)
			goto err_unlink;
		in = open(tmp, O_RDONLY | O_CLOEXEC);
		if (in < 0) {
			r = -errno;
			fprintf(stderr, "ovf create: %s: %s\n", tmp, strerror(errno));
			unlink(tmp);
			goto err_unlink;
		}
		nh = ovf_tar_header(h, sizeof(h), jobs[i].href, jobs[i].file_size, now);
		r = nh < 0 ? (int)nh : create_pwrite_all(fd, h, (size_t)nh, end, arch);
		if (nh < 0)
			fprintf(stderr, "ovf create: %s\n", ovf_errmsg());
		if (r >= 0)
			r = hash_copy(in, tmp, jobs[i].file_size, fd, end + (uint64_t)nh,
				      arch, hex[i]);
		close(in);
		unlink(tmp);
		if (r < 0)
			goto err_unlink;
		end += (uint64_t)nh + pad512(jobs[i].file_size);
	}
	/* the padding of the last member and the two zero blocks that end a tar */
	if (ftruncate(fd, (off_t)(end + 1024)) < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_unlink;
	}

	/* the front: its length decides the descriptor's padding, the padded
	   descriptor its digest; the manifest's length does not depend on it */
	r = -ENOMEM;
	desc = create_descriptor_text(vm, jobs, nd, &dlen);
	ovfname = malloc(strlen(vm->name) + 8);
	mfname = malloc(strlen(vm->name) + 8);
	if (!desc || !ovfname || !mfname)
		goto err_unlink;
	sprintf(ovfname, "%s.ovf", vm->name);
	sprintf(mfname, "%s.mf", vm->name);
	memset(hex[nd], '0', 64);
	m = open_memstream(&mf.p, &mf.len);
	if (!m)
		goto err_unlink;
	fprintf(m, "SHA256(%s)= %s\n", ovfname, hex[nd]);
	for (int i = 0; i < nd; i++)
		fprintf(m, "SHA256(%s)= %s\n", jobs[i].href, hex[i]);
	if (ferror(m) | fclose(m))
		goto err_unlink;
	nhd = ovf_tar_header(hd, sizeof(hd), ovfname, dlen, now);
	nhm = ovf_tar_header(hm, sizeof(hm), mfname, mf.len, now);
	nh1 = ovf_tar_header(h1, sizeof(h1), jobs[0].href, jobs[0].file_size, now);
	if (nhd < 0 || nhm < 0 || nh1 < 0) {
		fprintf(stderr, "ovf create: %s\n", ovf_errmsg());
		goto err_unlink;
	}
	front0 = (uint64_t)nhd + pad512(dlen) + (uint64_t)nhm + pad512(mf.len) +
		 (uint64_t)nh1;
	flen = (size_t)((front0 + FRONT_ALIGN - 1) / FRONT_ALIGN * FRONT_ALIGN);
	dfull = (size_t)pad512(dlen) + (flen - (size_t)front0);
	{
		char *d2 = realloc(desc, dfull);

		if (!d2)
			goto err_unlink;
		desc = d2;
	}
	if (dfull > dlen) {
		memset(desc + dlen, ' ', dfull - dlen);
		desc[dfull - 1] = '\n';
	}
	hash_buf(desc, dfull, hex[nd]);
	/* the descriptor's digest is the first line's last 64 characters */
	memcpy(mf.p + strlen("SHA256()= ") + strlen(ovfname), hex[nd], 64);
	/* the descriptor's header with its padded size (same length: a pax
	   header here carries only a long name) */
	if (ovf_tar_header(hd, sizeof(hd), ovfname, dfull, now) != nhd) {
		r = -EINVAL;
		fprintf(stderr, "ovf create: descriptor header changed length\n");
		goto err_unlink;
	}
	front = calloc(1, flen);
	if (!front)
		goto err_unlink;
	at = 0;
	memcpy(front + at, hd, (size_t)nhd);
	at += (size_t)nhd;
	memcpy(front + at, desc, dfull);
	at += dfull;
	memcpy(front + at, hm, (size_t)nhm);
	at += (size_t)nhm;
	memcpy(front + at, mf.p, mf.len);
	at += (size_t)pad512(mf.len);
	memcpy(front + at, h1, (size_t)nh1);
	at += (size_t)nh1;
	if (at != flen) {
		r = -EINVAL;
		fprintf(stderr, "ovf create: front is %zu bytes, %zu planned\n", at, flen);
		goto err_unlink;
	}
	r = put_front(&fd, arch, front, flen, end + 1024);
	if (r < 0)
		goto err_unlink;
	if (fdatasync(fd) < 0 || close(fd) < 0) {
		r = -errno;
		fd = -1;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_unlink;
	}
	fd = -1;
	r = rename_noreplace(arch, out);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", out, strerror(-r));
		goto err_unlink;
	}
	goto out_free;

err_unlink:
	if (fd >= 0)
		close(fd);
	unlink(arch);
err_free:
	if (r == -ENOMEM)
		fprintf(stderr, "ovf create: out of memory\n");
out_free:
	free(front);
	free(mf.p);
	free(desc);
	free(ovfname);
	free(mfname);
	free(tmp);
	free(arch);
	free(hex);
	return r;
}
