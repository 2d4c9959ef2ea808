/* SPDX-License-Identifier: Apache-2.0 */
/*
 * backup-hash.c - what a backup agent does first: find the ranges of a
 * disk that hold data (through the whole delta chain) and hash each one,
 * so that only those are copied and a later run can tell what changed.
 *
 *   cc backup-hash.c $(pkg-config --cflags --libs blockengine libcrypto)
 *   ./backup-hash disk.vmdk
 *
 * Prints one line per allocated run: OFFSET LENGTH SHA256 (runs longer
 * than 1 MiB are split). Ranges not listed read as zeros.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <blockengine.h>
#include <openssl/evp.h>

#define PIECE (1u << 20)

/* Hash [off, off + len) of the disk into hex (65 bytes). */
static int hash_range(struct bdev *disk, unsigned char *buf, uint64_t off,
		      uint64_t len, char *hex)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ret = 0;

	if (!ctx)
		return -1;
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	ret = bdev_pread(disk, buf, (size_t)len, off);
	if (ret == 0)
		EVP_DigestUpdate(ctx, buf, (size_t)len);
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return ret;
}

int main(int argc, char **argv)
{
	struct bdev_open_opts opts;
	struct bdev_info info;
	struct bdev *disk;
	unsigned char *buf;
	uint64_t off = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	int ret = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s IMAGE\n", argv[0]);
		return 2;
	}
	memset(&opts, 0, sizeof(opts)); /* every option at its default */
	opts.flags = BDEV_O_SHARE; /* the disk may be in use: read anyway */
	if (bdev_open(argv[1], &opts, &disk) < 0) {
		fprintf(stderr, "backup-hash: %s\n", bdev_errmsg());
		return 1;
	}
	bdev_get_info(disk, &info);
	buf = (unsigned char *)malloc(PIECE);
	while (buf && off < info.size) {
		uint64_t n;
		unsigned depth;
		int st = bdev_block_status_depth(disk, off, info.size - off,
						 &n, &depth);

		if (st < 0) {
			fprintf(stderr, "backup-hash: %s\n", bdev_errmsg());
			ret = 1;
			break;
		}
		if (st == BDEV_STATUS_DATA) {
			/* stored somewhere in the chain: back it up */
			for (uint64_t o = off; o < off + n; o += PIECE) {
				uint64_t len = off + n - o < PIECE ? off + n - o
								   : PIECE;

				if (hash_range(disk, buf, o, len, hex) < 0) {
					fprintf(stderr, "backup-hash: %s\n",
						bdev_errmsg());
					ret = 1;
					break;
				}
				printf("%llu %llu %s\n", (unsigned long long)o,
				       (unsigned long long)len, hex);
			}
		}
		off += n; /* zeros and holes need no backup */
	}
	free(buf);
	bdev_close(disk);
	return buf ? ret : 1;
}
