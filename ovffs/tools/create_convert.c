/* SPDX-License-Identifier: Apache-2.0 */
/* create_convert.c - `ovf create`: convert a disk image (raw or any VMDK,
 * read through its chain) into a streamOptimized VMDK with the engine's
 * writer, straight into the package file at a given offset and hashed as
 * the engine writes it; bdev_copy does the copy (two workers, zeros
 * skipped). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "blockengine.h"
#include "create_i.h"

/* The engine's write observer: the VMDK's bytes, in order, into the
   digest. */
static int digest_written(void *opaque, uint64_t off, const void *buf,
			  size_t len)
{
	(void)off;
	return EVP_DigestUpdate(opaque, buf, len) == 1 ? 0 : -EIO;
}

/* Converts job->src into a streamOptimized VMDK at off of fd. */
int create_convert_disk(struct disk_job *job, int fd, uint64_t off)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "streamOptimized",
				       .adapter_type = job->adapter };
	const char *dst = job->href;
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	struct bdev_info info;
	struct bdev *b;
	struct bdev_writer *w;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r;

	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		fprintf(stderr, "ovf create: out of memory\n");
		EVP_MD_CTX_free(md);
		return -ENOMEM;
	}

	r = bdev_open(job->src, NULL, &b);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s\n", bdev_errmsg());
		goto err_free_md;
	}
	r = bdev_get_info(b, &info);
	if (r < 0)
		goto err_close_src;
	job->capacity = info.size;
	co.size = info.size;
	r = bdev_writer_new_fd(fd, off, dst, &co, digest_written, md, &w);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", dst, bdev_errmsg());
		goto err_close_src;
	}
	r = bdev_copy(b, w, NULL, &job->populated);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", job->src, bdev_errmsg());
		goto err_abort;
	}
	r = bdev_writer_finish(w, &job->file_size);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", dst, bdev_errmsg());
		goto err_close_src;
	}
	bdev_close(b);
	EVP_DigestFinal_ex(md, dig, &dlen);
	EVP_MD_CTX_free(md);
	for (unsigned i = 0; i < dlen; i++)
		sprintf(job->sha256 + 2 * i, "%02x", dig[i]);
	return 0;

err_abort:
	bdev_writer_abort(w);
err_close_src:
	bdev_close(b);
err_free_md:
	EVP_MD_CTX_free(md);
	return r;
}
