/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vmdk_workload.c - applies a seeded random workload of writes, zeroes,
 * discards and flushes to an image through the engine's public API, and
 * the same operations to a raw shadow file; or checks an image against the
 * workload after a crash. Used by tests/test_vmdk_write.py.
 *
 *   vmdk_workload run IMAGE [options]     apply ops 0..N-1
 *   vmdk_workload verify IMAGE [options]  after a kill -9: check every byte
 *       not touched by ops after --done equals the state after op --done
 *
 * Options: --seed S  --ops N  --max-len BYTES  --depth D (queued ops,
 * never overlapping)  --flush-every N  --shadow FILE  --progress (print
 * "start N" before op N and "flushed N" after a flush that followed ops
 * 0..N-1)  --snapshot-at N:CHILD  --threads T (T threads write
 * interleaved 4 KiB blocks of the same grains at once)  --done K
 * --started M (verify: ops K..M-1 may or may not have landed).
 *
 * Discard and write-zeroes are both expected to read back as zeros.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockengine.h"

enum op_kind { OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH };

struct op {
	enum op_kind kind;
	uint64_t off, len;
};

struct cfg {
	uint64_t seed, ops, max_len, size;
	unsigned depth, flush_every, threads;
	const char *shadow;
	bool progress;
	long snap_at;
	const char *snap_child;
	long done, started;
};

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* Op i of the workload (independent of the others). */
static struct op gen_op(const struct cfg *c, uint64_t i)
{
	uint64_t s = (c->seed + 1) * 0x9e3779b97f4a7c15ull ^ (i + 1) * 0xbf58476d1ce4e5b9ull;
	struct op o;
	uint64_t k, r;

	rng_next(&s);
	k = rng_next(&s) % 100;
	o.kind = k < 72 ? OP_WRITE : k < 84 ? OP_ZERO : k < 94 ? OP_DISCARD : OP_FLUSH;
	r = rng_next(&s) % 4;
	if (r == 0) {
		/* whole grains, so zeroed-grain entries get used */
		uint64_t g = 65536, n = c->size / g;
		o.off = rng_next(&s) % n * g;
		o.len = (1 + rng_next(&s) % 4) * g;
	} else if (r == 1) {
		o.off = rng_next(&s) % c->size;
		o.len = 1 + rng_next(&s) % c->max_len;
	} else {
		o.off = rng_next(&s) % (c->size / 512) * 512;
		o.len = (1 + rng_next(&s) % (c->max_len / 512)) * 512;
	}
	if (o.off >= c->size)
		o.off = c->size - 1;
	if (o.len > c->size - o.off)
		o.len = c->size - o.off;
	return o;
}

/* The bytes write op i puts down. */
static void gen_data(const struct cfg *c, uint64_t i, uint8_t *buf, uint64_t len)
{
	uint64_t s = (c->seed + 7) * 0xd6e8feb86659fd93ull ^ (i + 3);

	rng_next(&s);
	for (uint64_t j = 0; j < len; j += 8) {
		uint64_t v = rng_next(&s);
		memcpy(buf + j, &v, len - j < 8 ? len - j : 8);
	}
}

static void die(const char *what, int ret)
{
	fprintf(stderr, "vmdk_workload: %s: %s (%s)\n", what, strerror(-ret),
		bdev_errmsg());
	exit(1);
}

struct slot {
	bool busy;
	uint64_t off, len;
	uint8_t *buf;
	int *errp;
};

static void slot_done(void *opaque, int ret)
{
	struct slot *sl = opaque;

	sl->busy = false;
	if (ret < 0 && !*sl->errp)
		*sl->errp = ret;
}

/* Applies ops to b (and the shadow fd, if any). */
static void run(const struct cfg *c, struct bdev *b, int sfd)
{
	struct bdev_queue *q;
	struct slot *slots = calloc(c->depth, sizeof(*slots));
	int err = 0, ret;

	ret = bdev_queue_new(c->depth * 2, &q);
	if (ret < 0)
		die("queue", ret);
	for (unsigned k = 0; k < c->depth; k++) {
		slots[k].buf = malloc(c->max_len > 4 * 65536 ? c->max_len : 4 * 65536);
		slots[k].errp = &err;
	}
	for (uint64_t i = 0; i < c->ops; i++) {
		struct op o = gen_op(c, i);
		struct slot *sl = NULL;
		bool flush = o.kind == OP_FLUSH ||
			     (c->flush_every && i % c->flush_every == c->flush_every - 1);

		if (c->snap_child && (long)i == c->snap_at) {
			while (bdev_queue_inflight(q))
				bdev_queue_run(q, 1);
			ret = bdev_snapshot(b, c->snap_child);
			if (ret < 0)
				die("snapshot", ret);
		}
		if (c->progress) {
			printf("start %" PRIu64 "\n", i);
			fflush(stdout);
		}
		/* wait for a free slot that overlaps nothing in flight */
		for (;;) {
			bool overlap = false;
			sl = NULL;
			for (unsigned k = 0; k < c->depth; k++) {
				if (!slots[k].busy) {
					if (!sl)
						sl = &slots[k];
				} else if (o.kind != OP_FLUSH &&
					   slots[k].off < o.off + o.len &&
					   o.off < slots[k].off + slots[k].len) {
					overlap = true;
				}
			}
			if (sl && !overlap && (o.kind != OP_FLUSH || !bdev_queue_inflight(q)))
				break;
			ret = bdev_queue_run(q, 1);
			if (ret < 0)
				die("run", ret);
		}
		if (err)
			die("I/O", err);
		sl->busy = true;
		sl->off = o.off;
		sl->len = o.len;
		switch (o.kind) {
		case OP_WRITE: {
			struct iovec v[2];
			uint64_t h = o.len / 3;
			gen_data(c, i, sl->buf, o.len);
			v[0] = (struct iovec){ sl->buf, h };
			v[1] = (struct iovec){ sl->buf + h, o.len - h };
			ret = bdev_aio_writev(q, b, o.off, v, 2, slot_done, sl);
			if (sfd >= 0 && pwrite(sfd, sl->buf, o.len, (off_t)o.off) != (ssize_t)o.len)
				die("shadow write", -errno);
			break;
		}
		case OP_ZERO:
		case OP_DISCARD:
			if (o.kind == OP_ZERO)
				ret = bdev_aio_write_zeroes(q, b, o.off, o.len, slot_done, sl);
			else
				ret = bdev_aio_discard(q, b, o.off, o.len, slot_done, sl);
			if (sfd >= 0 && fallocate(sfd, FALLOC_FL_ZERO_RANGE, (off_t)o.off,
						  (off_t)o.len) < 0)
				die("shadow zero", -errno);
			break;
		case OP_FLUSH:
			sl->len = 0;
			ret = bdev_aio_flush(q, b, slot_done, sl);
			break;
		}
		if (ret < 0)
			die("queue op", ret);
		if (flush) {
			while (bdev_queue_inflight(q))
				bdev_queue_run(q, 1);
			if (err)
				die("I/O", err);
			ret = bdev_flush(b);
			if (ret < 0)
				die("flush", ret);
			if (c->progress) {
				printf("flushed %" PRIu64 "\n", i + 1);
				fflush(stdout);
			}
		}
	}
	while (bdev_queue_inflight(q))
		bdev_queue_run(q, 1);
	if (err)
		die("I/O", err);
	bdev_queue_free(q);
	for (unsigned k = 0; k < c->depth; k++)
		free(slots[k].buf);
	free(slots);
}

/* Checks b against ops 0..done-1, ignoring bytes ops done..started-1 touch. */
static int verify(const struct cfg *c, struct bdev *b)
{
	uint8_t *exp = calloc(1, c->size), *mask = calloc(1, c->size), *got;
	uint8_t *tmp = malloc(c->max_len > 4 * 65536 ? c->max_len : 4 * 65536);
	uint64_t bad = 0;
	int ret;

	for (long i = 0; i < c->done; i++) {
		struct op o = gen_op(c, (uint64_t)i);
		if (o.kind == OP_WRITE) {
			gen_data(c, (uint64_t)i, tmp, o.len);
			memcpy(exp + o.off, tmp, o.len);
		} else if (o.kind != OP_FLUSH) {
			memset(exp + o.off, 0, o.len);
		}
	}
	for (long i = c->done; i < c->started; i++) {
		struct op o = gen_op(c, (uint64_t)i);
		if (o.kind != OP_FLUSH)
			memset(mask + o.off, 1, o.len);
	}
	got = malloc(c->size);
	ret = bdev_pread(b, got, c->size, 0);
	if (ret < 0)
		die("read", ret);
	for (uint64_t j = 0; j < c->size; j++)
		if (!mask[j] && got[j] != exp[j]) {
			if (bad < 5)
				fprintf(stderr, "byte %" PRIu64 " is %02x, expected %02x\n",
					j, got[j], exp[j]);
			bad++;
		}
	printf("verified %" PRIu64 " bytes, %" PRIu64 " wrong\n", c->size, bad);
	free(exp);
	free(mask);
	free(got);
	free(tmp);
	return bad ? 1 : 0;
}

struct thr {
	struct bdev *b;
	const struct cfg *c;
	unsigned t;
	int sfd;
};

/* Thread t writes 4 KiB blocks t, t+T, t+2T... of every grain in a seeded
   order, so several threads allocate the same grain at once. */
static void *thread_main(void *opaque)
{
	struct thr *th = opaque;
	uint64_t nblk = th->c->size / 4096;
	uint8_t buf[4096];

	for (uint64_t k = th->t; k < nblk; k += th->c->threads) {
		int ret;
		gen_data(th->c, k, buf, sizeof(buf));
		ret = bdev_pwrite(th->b, buf, sizeof(buf), k * 4096);
		if (ret < 0)
			die("thread write", ret);
		if (th->sfd >= 0 && pwrite(th->sfd, buf, sizeof(buf), (off_t)(k * 4096)) != 4096)
			die("shadow write", -errno);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct cfg c = { .seed = 1, .ops = 1000, .max_len = 150000, .depth = 1,
			 .snap_at = -1, .done = 0, .started = 0 };
	struct bdev_open_opts oo = { 0 };
	struct bdev_info info;
	struct bdev *b;
	bool do_verify;
	int sfd = -1, ret;

	if (argc < 3 || (strcmp(argv[1], "run") && strcmp(argv[1], "verify"))) {
		fprintf(stderr, "usage: vmdk_workload run|verify IMAGE [options]\n");
		return 2;
	}
	do_verify = strcmp(argv[1], "verify") == 0;
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
		if (!strcmp(a, "--progress")) {
			c.progress = true;
			continue;
		}
		i++;
		if (!strcmp(a, "--seed")) c.seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--ops")) c.ops = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--max-len")) c.max_len = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--depth")) c.depth = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--flush-every")) c.flush_every = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--threads")) c.threads = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--shadow")) c.shadow = v;
		else if (!strcmp(a, "--done")) c.done = strtol(v, NULL, 0);
		else if (!strcmp(a, "--started")) c.started = strtol(v, NULL, 0);
		else if (!strcmp(a, "--snapshot-at")) {
			char *colon;
			c.snap_at = strtol(v, &colon, 0);
			c.snap_child = *colon == ':' ? colon + 1 : NULL;
		} else {
			fprintf(stderr, "vmdk_workload: unknown option %s\n", a);
			return 2;
		}
	}
	if (c.max_len < 512 || c.depth == 0)
		return 2;
	oo.flags = do_verify ? 0 : BDEV_O_RDWR;
	ret = bdev_open(argv[2], &oo, &b);
	if (ret < 0)
		die("open", ret);
	bdev_get_info(b, &info);
	c.size = info.size;
	if (do_verify) {
		int bad = verify(&c, b);
		bdev_close(b);
		return bad;
	}
	if (c.shadow) {
		sfd = open(c.shadow, O_RDWR);
		if (sfd < 0)
			die("shadow open", -errno);
	}
	if (c.threads) {
		pthread_t *tid = calloc(c.threads, sizeof(*tid));
		struct thr *th = calloc(c.threads, sizeof(*th));
		for (unsigned t = 0; t < c.threads; t++) {
			th[t] = (struct thr){ b, &c, t, sfd };
			pthread_create(&tid[t], NULL, thread_main, &th[t]);
		}
		for (unsigned t = 0; t < c.threads; t++)
			pthread_join(tid[t], NULL);
		free(tid);
		free(th);
	} else {
		run(&c, b, sfd);
	}
	ret = bdev_close(b);
	if (ret < 0)
		die("close", ret);
	if (sfd >= 0)
		close(sfd);
	printf("done %" PRIu64 "\n", c.ops);
	return 0;
}
