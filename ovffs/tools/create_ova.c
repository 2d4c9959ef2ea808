/* SPDX-License-Identifier: Apache-2.0 */
/* create_ova.c - `ovf create OUT.ova`: the archive laid out before the
 * disks are converted, each disk written by the engine into its place
 * (how: the comment below). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "create_i.h"
#include "ovf.h"

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
 * Every byte of the archive is written once, and no disk is copied or read
 * back. The front -- the descriptor's header and text, the manifest's
 * header and text, disk 1's header -- holds sizes and digests known only
 * after conversion, but its length is known before: the descriptor is
 * printed once with every size at 20 digits (the most a uint64 takes) and
 * room for that is kept; the manifest's length does not depend on the
 * digests; a disk's tar header is one block whatever its size (a size over
 * 8 GiB goes into the GNU base-256 field, ovf_tar_header_fixed). So the
 * engine writes disk 1 straight after the kept front, and each later disk
 * after its kept header, with bdev_writer_new_fd, the digest taken by its
 * write observer. When all are done, the headers and the front are written
 * into their places; the real descriptor is padded with trailing
 * whitespace (XML allows it after the root element) to fill its room,
 * which also makes the front whole 4 KiB blocks so disk 1's data starts
 * on a block. It all happens in a temporary folder beside OUT; the archive
 * is synced once and renamed to OUT (never over an existing file) only when
 * complete, so a failure (ENOSPC, a bad disk) leaves no OVA behind.
 */
#define FRONT_ALIGN 4096u
#define HEX_MAX (EVP_MAX_MD_SIZE * 2 + 1)
#define SIZE_MAX_DIGITS UINT64_MAX /* 20 digits: a size's widest */

static uint64_t pad512(uint64_t n)
{
	return (n + 511) / 512 * 512;
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

/* The manifest: the descriptor's digest desc_hex, then each disk's. */
static char *manifest_text(const char *ovfname, const char *desc_hex,
			   const struct disk_job *jobs, int nd, size_t *len)
{
	char *p = NULL;
	FILE *m = open_memstream(&p, len);

	if (!m)
		return NULL;
	fprintf(m, "SHA256(%s)= %s\n", ovfname, desc_hex);
	for (int i = 0; i < nd; i++)
		fprintf(m, "SHA256(%s)= %s\n", jobs[i].href, jobs[i].sha256);
	if (ferror(m) | fclose(m)) {
		free(p);
		return NULL;
	}
	return p;
}

/* The length of the descriptor's room: the descriptor printed with every
   size at its widest. */
static int descriptor_room(const struct vm_spec *vm, const struct disk_job *jobs,
			   int nd, size_t *len)
{
	struct disk_job widest[MAX_DISKS];
	char *text;

	for (int i = 0; i < nd; i++) {
		widest[i] = jobs[i];
		widest[i].capacity = SIZE_MAX_DIGITS;
		widest[i].populated = SIZE_MAX_DIGITS;
		widest[i].file_size = SIZE_MAX_DIGITS;
	}
	text = create_descriptor_text(vm, widest, nd, len);
	if (!text)
		return -ENOMEM;
	free(text);
	return 0;
}

/* Converts the disks into work/archive behind the room kept for the front,
   fills the front and the disks' headers in, and renames the archive to
   out. Leaves nothing in work. */
int create_build_ova(const char *work, const char *out, const struct vm_spec *vm,
		     struct disk_job *jobs, int nd)
{
	char *arch = malloc(strlen(work) + 16), desc_hex[HEX_MAX];
	char *desc = NULL, *ovfname = NULL, *mfname = NULL, *front = NULL, *mf = NULL;
	unsigned char hd[OVF_TAR_HEADER_MAX], hm[OVF_TAR_HEADER_MAX], h[OVF_TAR_HEADER_MAX];
	uint64_t hdr_at[MAX_DISKS], hdr_len[MAX_DISKS], pos;
	size_t room, dlen, mflen, mflen2, flen, at;
	ssize_t nhd, nhm;
	time_t now = time(NULL);
	int fd = -1, r = -ENOMEM;

	ovfname = malloc(strlen(vm->name) + 8);
	mfname = malloc(strlen(vm->name) + 8);
	if (!arch || !ovfname || !mfname)
		goto err_free;
	sprintf(arch, "%s/archive", work);
	sprintf(ovfname, "%s.ovf", vm->name);
	sprintf(mfname, "%s.mf", vm->name);

	/* the front's length, from the descriptor's room and a manifest with
	   digests of the right length */
	r = descriptor_room(vm, jobs, nd, &room);
	if (r < 0)
		goto err_free;
	memset(desc_hex, '0', 64);
	desc_hex[64] = '\0';
	for (int i = 0; i < nd; i++)
		memcpy(jobs[i].sha256, desc_hex, sizeof(jobs[i].sha256));
	r = -ENOMEM;
	mf = manifest_text(ovfname, desc_hex, jobs, nd, &mflen);
	if (!mf)
		goto err_free;
	free(mf);
	mf = NULL;
	nhd = ovf_tar_header(hd, sizeof(hd), ovfname, room, now);
	nhm = ovf_tar_header(hm, sizeof(hm), mfname, mflen, now);
	for (int i = 0; i < nd; i++) {
		ssize_t n = ovf_tar_header_fixed(h, sizeof(h), jobs[i].href, 0, now);

		if (n < 0) {
			nhd = n;
			break;
		}
		hdr_len[i] = (uint64_t)n;
	}
	if (nhd < 0 || nhm < 0) {
		r = nhd < 0 ? (int)nhd : (int)nhm;
		fprintf(stderr, "ovf create: %s\n", ovf_errmsg());
		goto err_free;
	}
	pos = (uint64_t)nhd + pad512(room) + (uint64_t)nhm + pad512(mflen) + hdr_len[0];
	flen = (size_t)((pos + FRONT_ALIGN - 1) / FRONT_ALIGN * FRONT_ALIGN);
	room = (size_t)pad512(room) + (flen - (size_t)pos);
	pos = flen;

	fd = open(arch, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_free;
	}
	/* the disks, each behind the room kept for its header */
	for (int i = 0; i < nd; i++) {
		if (i) {
			hdr_at[i] = pos;
			pos += hdr_len[i];
		}
		r = create_convert_disk(&jobs[i], fd, pos);
		if (r < 0)
			goto err_unlink;
		pos += pad512(jobs[i].file_size);
	}
	/* the padding of the last member and the two zero blocks that end a tar */
	if (ftruncate(fd, (off_t)(pos + 1024)) < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_unlink;
	}
	for (int i = 1; i < nd; i++) {
		ssize_t n = ovf_tar_header_fixed(h, sizeof(h), jobs[i].href,
						 jobs[i].file_size, now);

		if (n != (ssize_t)hdr_len[i]) {
			r = -EINVAL;
			fprintf(stderr, "ovf create: %s: tar header changed length\n",
				jobs[i].href);
			goto err_unlink;
		}
		r = create_pwrite_all(fd, h, (size_t)n, hdr_at[i], arch);
		if (r < 0)
			goto err_unlink;
	}

	/* the front: the real descriptor padded to fill its room, its digest
	   into the manifest */
	r = -ENOMEM;
	desc = create_descriptor_text(vm, jobs, nd, &dlen);
	if (!desc)
		goto err_unlink;
	if (dlen > room) {
		r = -EINVAL;
		fprintf(stderr, "ovf create: descriptor of %zu bytes exceeds its room "
			"of %zu\n", dlen, room);
		goto err_unlink;
	}
	front = calloc(1, flen);
	if (!front)
		goto err_unlink;
	at = (size_t)nhd;
	memcpy(front + at, desc, dlen);
	memset(front + at + dlen, ' ', room - dlen);
	front[at + room - 1] = '\n';
	hash_buf(front + at, room, desc_hex);
	at += room;
	mf = manifest_text(ovfname, desc_hex, jobs, nd, &mflen2);
	if (!mf)
		goto err_unlink;
	if (ovf_tar_header(hd, sizeof(hd), ovfname, room, now) != nhd ||
	    mflen2 != mflen ||
	    ovf_tar_header_fixed(h, sizeof(h), jobs[0].href, jobs[0].file_size,
				 now) != (ssize_t)hdr_len[0]) {
		r = -EINVAL;
		fprintf(stderr, "ovf create: the front changed length\n");
		goto err_unlink;
	}
	memcpy(front, hd, (size_t)nhd);
	memcpy(front + at, hm, (size_t)nhm);
	at += (size_t)nhm;
	memcpy(front + at, mf, mflen);
	at += (size_t)pad512(mflen);
	memcpy(front + at, h, (size_t)hdr_len[0]);
	at += (size_t)hdr_len[0];
	if (at != flen) {
		r = -EINVAL;
		fprintf(stderr, "ovf create: front is %zu bytes, %zu planned\n", at, flen);
		goto err_unlink;
	}
	r = create_pwrite_all(fd, front, flen, 0, arch);
	if (r < 0)
		goto err_unlink;
	if (fdatasync(fd) < 0 || close(fd) < 0) {
		r = -errno;
		fd = -1;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_unlink;
	}
	fd = -1;
	r = ovf_rename_noreplace(arch, out);
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
	free(mf);
	free(desc);
	free(ovfname);
	free(mfname);
	free(arch);
	return r;
}
