/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_compare.c - `vmdk compare A B`: do two disks read the same? Ranges
 * that read as zeros in both are skipped without I/O; the rest is read in
 * large chunks, hashed with XXH3 per 64 KiB block, and where hashes differ
 * the first differing byte is located.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common.h"

static const char compare_help[] =
"Usage: vmdk compare [-U] [-f FMT] [-F FMT] [-q] A B\n"
"\n"
"Compare the contents of two disk images (VMDK or raw, any chain) as a guest\n"
"would read them. When the sizes differ, the part beyond the smaller disk\n"
"must read as zeros for the disks to count as equal (like qemu-img compare).\n"
"\n"
"Options:\n"
"  -f FMT        force A's format ('vmdk' or 'raw')\n"
"  -F FMT        force B's format\n"
"  -U, --force-share  open both without taking locks\n"
"  -q, --quiet   print nothing on success or mismatch\n"
"  -h, --help    show this help\n"
"\n"
"Output and exit status:\n"
"  0  \"Images are identical.\"\n"
"  1  \"Content mismatch at offset N!\" (N = first differing byte)\n"
"  2  an error ('vmdk: MESSAGE' on stderr)\n"
"\n"
"Examples:\n"
"  vmdk compare disk.vmdk disk.raw\n"
"  vmdk compare -U running-vm.vmdk backup.vmdk || echo changed\n";

#define CMP_CHUNK (1u << 20)
#define CMP_BLOCK (64u << 10)
#define CMP_DEPTH 4

struct cmp;

struct cslot {
	struct cmp *c;
	uint64_t off;
	size_t len;
	void *buf[2];
	struct iovec iov[2];
	unsigned pending;
	bool busy;
};

struct cmp {
	struct bdev *b[2];
	uint64_t size[2], total, common;
	uint64_t next;
	uint64_t mismatch;	/* UINT64_MAX = none found */
	int error;
	char errmsg[1024];
};

static void cmp_fail(struct cmp *c, int err)
{
	if (!c->error) {
		const char *m = bdev_errmsg();

		c->error = err;
		snprintf(c->errmsg, sizeof(c->errmsg), "%s",
			 m && *m ? m : strerror(-err));
	}
}

static uint64_t first_diff(const char *a, const char *b, size_t len)
{
	size_t pos;

	for (pos = 0; pos < len; pos += CMP_BLOCK) {
		size_t n = len - pos < CMP_BLOCK ? len - pos : CMP_BLOCK;
		size_t i;

		if (XXH3_64bits(a + pos, n) == XXH3_64bits(b + pos, n) &&
		    !memcmp(a + pos, b + pos, n))
			continue;
		for (i = 0; i < n; i++)
			if (a[pos + i] != b[pos + i])
				return pos + i;
	}
	return UINT64_MAX;
}

static void slot_check(struct cslot *s)
{
	struct cmp *c = s->c;
	uint64_t d = first_diff(s->buf[0], s->buf[1], s->len);

	s->busy = false;
	if (d != UINT64_MAX && s->off + d < c->mismatch)
		c->mismatch = s->off + d;
}

static void read_done(void *opaque, int ret)
{
	struct cslot *s = opaque;

	if (ret < 0)
		cmp_fail(s->c, ret);
	if (--s->pending == 0) {
		if (s->c->error)
			s->busy = false;
		else
			slot_check(s);
	}
}

/* How side i reads at off: CHAIN_DATA or CHAIN_ZERO for *n bytes. */
static int side_status(struct cmp *c, int i, uint64_t off, uint64_t len,
		       uint64_t *n)
{
	unsigned d;
	bool p;

	if (off >= c->size[i]) {
		*n = len;
		return CHAIN_ZERO;
	}
	if (len > c->size[i] - off)
		len = c->size[i] - off;
	return chain_status(c->b[i], off, len, n, &d, &p);
}

/* The next range that is not zero on both sides, or false at the end. */
static bool cmp_next(struct cmp *c, uint64_t *off, size_t *len)
{
	while (c->next < c->total) {
		uint64_t lim = c->total - c->next, n0, n1, n;
		int k0, k1;

		if (c->next < c->common && lim > c->common - c->next)
			lim = c->common - c->next;
		k0 = side_status(c, 0, c->next, lim, &n0);
		if (k0 < 0) {
			cmp_fail(c, k0);
			return false;
		}
		k1 = side_status(c, 1, c->next, lim, &n1);
		if (k1 < 0) {
			cmp_fail(c, k1);
			return false;
		}
		n = n0 < n1 ? n0 : n1;
		if (k0 == CHAIN_ZERO && k1 == CHAIN_ZERO) {
			c->next += n;
			continue;
		}
		if (n > CMP_CHUNK - c->next % CMP_CHUNK)
			n = CMP_CHUNK - c->next % CMP_CHUNK;
		*off = c->next;
		*len = (size_t)n;
		c->next += n;
		return true;
	}
	return false;
}

static int issue(struct cmp *c, struct bdev_queue *q, struct cslot *s)
{
	int i, ret;

	s->busy = true;
	s->pending = 1;	/* held until both sides are queued */
	for (i = 0; i < 2; i++) {
		if (s->off >= c->size[i]) {
			memset(s->buf[i], 0, s->len);
			continue;
		}
		s->iov[i].iov_base = s->buf[i];
		s->iov[i].iov_len = s->len;
		s->pending++;
		ret = bdev_aio_readv(q, c->b[i], s->off, &s->iov[i], 1,
				     read_done, s);
		if (ret < 0) {
			s->pending--;
			cmp_fail(c, ret);
			break;
		}
	}
	if (--s->pending == 0) {
		if (c->error)
			s->busy = false;
		else
			slot_check(s);
	}
	return c->error;
}

static int run_compare(struct cmp *c)
{
	struct cslot slots[CMP_DEPTH];
	struct bdev_queue *q;
	bool more = true;
	unsigned i, busy;
	int ret;

	memset(slots, 0, sizeof(slots));
	ret = bdev_queue_new(CMP_DEPTH * 2, &q);
	if (ret < 0) {
		cmp_fail(c, ret);
		return ret;
	}
	for (i = 0; i < CMP_DEPTH; i++) {
		slots[i].c = c;
		if (posix_memalign(&slots[i].buf[0], 4096, CMP_CHUNK) ||
		    posix_memalign(&slots[i].buf[1], 4096, CMP_CHUNK)) {
			c->error = -ENOMEM;
			snprintf(c->errmsg, sizeof(c->errmsg), "out of memory");
			goto out;
		}
	}
	for (;;) {
		for (i = 0; more && i < CMP_DEPTH; i++) {
			if (slots[i].busy)
				continue;
			if (c->error || c->mismatch != UINT64_MAX ||
			    !cmp_next(c, &slots[i].off, &slots[i].len)) {
				more = false;
				break;
			}
			if (issue(c, q, &slots[i]))
				more = false;
		}
		for (busy = 0, i = 0; i < CMP_DEPTH; i++)
			busy += slots[i].busy;
		if (!busy)
			break;
		ret = bdev_queue_run(q, 1);
		if (ret < 0) {
			cmp_fail(c, ret);
			break;
		}
	}
out:
	bdev_queue_free(q);
	for (i = 0; i < CMP_DEPTH; i++) {
		free(slots[i].buf[0]);
		free(slots[i].buf[1]);
	}
	return c->error;
}

int cmd_compare(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "force-share", no_argument, NULL, 'U' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt[2] = { NULL, NULL };
	bool share = false, quiet = false;
	struct cmp c;
	int ch, i, ret, rc = 2;

	while ((ch = getopt_long(argc, argv, "+hUqf:F:", lopts, NULL)) != -1) {
		switch (ch) {
		case 'U': share = true; break;
		case 'q': quiet = true; break;
		case 'f': fmt[0] = optarg; break;
		case 'F': fmt[1] = optarg; break;
		case 'h': fputs(compare_help, stdout); return 0;
		default: tool_usage_err("compare", "bad option"); return 2;
		}
	}
	if (optind != argc - 2) {
		tool_usage_err("compare", "expected two images A and B");
		return 2;
	}
	memset(&c, 0, sizeof(c));
	c.mismatch = UINT64_MAX;
	for (i = 0; i < 2; i++) {
		struct bdev_info in;

		if (tool_open(argv[optind + i], fmt[i], share, false, &c.b[i]) < 0)
			goto out;
		ret = bdev_get_info(c.b[i], &in);
		if (ret < 0) {
			tool_bdev_err(ret, argv[optind + i]);
			goto out;
		}
		c.size[i] = in.size;
	}
	c.common = c.size[0] < c.size[1] ? c.size[0] : c.size[1];
	c.total = c.size[0] > c.size[1] ? c.size[0] : c.size[1];
	if (c.size[0] != c.size[1] && !quiet)
		printf("Warning: Image size mismatch!\n");
	if (run_compare(&c)) {
		tool_err("%s", c.errmsg);
		goto out;
	}
	if (c.mismatch != UINT64_MAX) {
		if (!quiet)
			printf("Content mismatch at offset %" PRIu64 "!\n",
			       c.mismatch);
		rc = 1;
	} else {
		if (!quiet)
			printf("Images are identical.\n");
		rc = 0;
	}
out:
	for (i = 0; i < 2; i++)
		if (c.b[i])
			bdev_close(c.b[i]);
	fflush(stdout);
	return rc;
}
