/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scan-signature.c - what an antivirus scanner does with a raw disk: read
 * all of it as fast as the storage allows and look for a byte signature.
 * It shows the engine's asynchronous queue: several reads in flight on one
 * thread, each completion handled in bdev_queue_run(), nothing else that
 * blocks, the pattern an event loop follows.
 *
 *   cc scan-signature.c $(pkg-config --cflags --libs blockengine)
 *   ./scan-signature disk.vmdk 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE'
 *
 * Prints the byte offset of every match, one per line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <blockengine.h>

#define CHUNK (1u << 20)
#define DEPTH 8

struct slot {
	unsigned char *buf;
	uint64_t off;  /* disk offset of buf[0] */
	size_t len;
	int done, ret;
	struct iovec iov;
};

static void on_read(void *opaque, int ret)
{
	struct slot *s = (struct slot *)opaque;

	s->done = 1;
	s->ret = ret;
}

/* Report matches starting inside [s->off, s->off + step). */
static void search(const struct slot *s, const char *sig, size_t siglen,
		   size_t step)
{
	for (size_t i = 0; i + siglen <= s->len && i < step; i++)
		if (s->buf[i] == (unsigned char)sig[0] &&
		    !memcmp(s->buf + i, sig, siglen))
			printf("%llu\n", (unsigned long long)(s->off + i));
}

int main(int argc, char **argv)
{
	struct bdev_open_opts opts;
	struct slot slots[DEPTH];
	struct bdev_queue *q;
	struct bdev_info info;
	struct bdev *disk;
	uint64_t next = 0;
	size_t siglen, step;
	unsigned busy = 0;
	int ret = 0;

	if (argc != 3 || !argv[2][0] || strlen(argv[2]) > CHUNK / 2) {
		fprintf(stderr, "usage: %s IMAGE SIGNATURE\n", argv[0]);
		return 2;
	}
	siglen = strlen(argv[2]);
	step = CHUNK - (siglen - 1); /* chunks overlap: no match is cut */
	memset(&opts, 0, sizeof(opts));
	opts.flags = BDEV_O_SHARE;
	if (bdev_open(argv[1], &opts, &disk) < 0 ||
	    bdev_queue_new(DEPTH, &q) < 0) {
		fprintf(stderr, "scan-signature: %s\n", bdev_errmsg());
		return 1;
	}
	bdev_get_info(disk, &info);
	for (unsigned i = 0; i < DEPTH; i++) {
		slots[i].buf = (unsigned char *)malloc(CHUNK);
		slots[i].done = 1; /* free */
		slots[i].len = 0;
		if (!slots[i].buf)
			return 1;
	}
	for (;;) {
		/* keep DEPTH reads in flight */
		for (unsigned i = 0; i < DEPTH && next < info.size; i++) {
			struct slot *s = &slots[i];

			if (!s->done || s->len)
				continue;
			s->off = next;
			s->len = info.size - next < CHUNK ? info.size - next
							   : CHUNK;
			s->iov.iov_base = s->buf;
			s->iov.iov_len = s->len;
			s->done = 0;
			if (bdev_aio_readv(q, disk, s->off, &s->iov, 1, on_read,
					   s) < 0) {
				fprintf(stderr, "scan-signature: %s\n",
					bdev_errmsg());
				return 1;
			}
			busy++;
			next += step;
		}
		if (!busy)
			break;
		/* wait for at least one; the callbacks run in here */
		if (bdev_queue_run(q, 1) < 0) {
			fprintf(stderr, "scan-signature: %s\n", bdev_errmsg());
			return 1;
		}
		for (unsigned i = 0; i < DEPTH; i++) {
			struct slot *s = &slots[i];

			if (!s->done || !s->len)
				continue;
			if (s->ret < 0) {
				fprintf(stderr, "scan-signature: read at %llu "
					"failed: %s\n",
					(unsigned long long)s->off,
					strerror(-s->ret));
				ret = 1;
			} else {
				search(s, argv[2], siglen, step);
			}
			s->len = 0; /* free again */
			busy--;
		}
	}
	for (unsigned i = 0; i < DEPTH; i++)
		free(slots[i].buf);
	bdev_queue_free(q);
	bdev_close(disk);
	return ret;
}
