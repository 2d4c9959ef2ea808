/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_block_depth.c - bdev_block_status_depth against qemu-img map
 * (--output=json, whose "depth" counts from 0 at the top and whose
 * "present" false means no layer holds the run) on a three-layer chain
 * made by qemu-img and qemu-io; then across a live bdev_snapshot, every
 * depth moves down by one and new writes are at depth 1.
 */
#include "../testutil.h"

#define DISK (8u << 20)
#define CHUNK 65536u
#define CHUNKS (DISK / CHUNK)

static char dir[256];

struct want {
	int status;
	unsigned depth;
};

/* The expected answer per chunk, from qemu-img map. */
static void qemu_map(const char *img, struct want *w)
{
	char cmd[600], line[512];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "qemu-img map --output=json %s", img);
	f = popen(cmd, "r");
	CHECK(f);
	for (unsigned i = 0; i < CHUNKS; i++)
		w[i].status = -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long start, len;
		unsigned depth;
		char present[8], zero[8], data[8];
		const char *p = strchr(line, '{');
		if (!p || sscanf(p, "{ \"start\": %llu, \"length\": %llu, \"depth\": %u, "
				 "\"present\": %7[a-z], \"zero\": %7[a-z], "
				 "\"data\": %7[a-z]", &start, &len, &depth,
				 present, zero, data) != 6)
			continue;
		CHECK(start % CHUNK == 0 && len % CHUNK == 0);
		for (unsigned long long k = start / CHUNK; k < (start + len) / CHUNK; k++) {
			if (strcmp(present, "true") != 0) {
				w[k].status = BDEV_STATUS_UNALLOCATED;
				w[k].depth = 0;
			} else {
				w[k].status = !strcmp(data, "true") ?
					      BDEV_STATUS_DATA : BDEV_STATUS_ZERO;
				w[k].depth = depth + 1;
			}
		}
	}
	CHECK_EQ(pclose(f), 0);
	for (unsigned i = 0; i < CHUNKS; i++)
		CHECK(w[i].status >= 0);
}

/* Walks b run by run (from start) and compares every chunk. */
static void check(struct bdev *b, const struct want *w, uint64_t start)
{
	uint64_t off = start;

	while (off < DISK) {
		uint64_t pnum;
		unsigned depth = 99;
		int st = bdev_block_status_depth(b, off, DISK - off, &pnum, &depth);

		CHECK(st >= 0);
		CHECK(pnum > 0 && off + pnum <= DISK);
		for (uint64_t k = off / CHUNK; k * CHUNK < off + pnum; k++) {
			if (w[k].status != st || w[k].depth != depth) {
				fprintf(stderr, "offset %" PRIu64 ": engine %d at depth "
					"%u, qemu-img %d at depth %u\n", k * CHUNK,
					st, depth, w[k].status, w[k].depth);
				exit(1);
			}
		}
		off += pnum;
	}
}

int main(void)
{
	static struct want w[CHUNKS], w2[CHUNKS];
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	char top[300], top2[300];
	uint8_t buf[4096];
	struct bdev *b;
	uint64_t pnum;
	unsigned depth;

	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img is not installed\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/ovk-depth-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir));
	test_run("cd %s && qemu-img create -q -f vmdk -o zeroed_grain=on base.vmdk 8M"
		 " && qemu-io -f vmdk -c 'write -P 1 0 1M' -c 'write -z 5M 128k'"
		 " base.vmdk >/dev/null"
		 " && qemu-img create -q -f vmdk -o zeroed_grain=on -b base.vmdk"
		 " -F vmdk mid.vmdk && qemu-io -f vmdk -c 'write -P 2 1M 1M'"
		 " -c 'write -P 2 512k 64k' mid.vmdk >/dev/null"
		 " && qemu-img create -q -f vmdk -o zeroed_grain=on -b mid.vmdk"
		 " -F vmdk top.vmdk && qemu-io -f vmdk -c 'write -P 3 2M 1M'"
		 " -c 'write -z 3M 64k' top.vmdk >/dev/null", dir);
	snprintf(top, sizeof(top), "%s/top.vmdk", dir);
	qemu_map(top, w);
	CHECK_EQ(bdev_open(top, NULL, &b), 0);
	check(b, w, 0);
	check(b, w, 524288 + 4096); /* a start inside a run */
	CHECK_EQ(bdev_block_status_depth(b, DISK, 1, &pnum, &depth), -EINVAL);
	CHECK_EQ(bdev_close(b), 0);
	printf("ok chain\n");

	/* live: the snapshot pushes every layer down one */
	snprintf(top2, sizeof(top2), "%s/top2.vmdk", dir);
	CHECK_EQ(bdev_open(top, &oo, &b), 0);
	CHECK_EQ(bdev_snapshot(b, top2), 0);
	memset(buf, 4, sizeof(buf));
	CHECK_EQ(bdev_pwrite(b, buf, sizeof(buf), 6u << 20), 0);
	CHECK_EQ(bdev_flush(b), 0);
	/* expected: every depth one further down, the new write on top */
	for (unsigned k = 0; k < CHUNKS; k++) {
		w2[k].status = w[k].status;
		w2[k].depth = w[k].depth ? w[k].depth + 1 : 0;
	}
	w2[(6u << 20) / CHUNK].status = BDEV_STATUS_DATA;
	w2[(6u << 20) / CHUNK].depth = 1;
	check(b, w2, 0);
	CHECK_EQ(bdev_close(b), 0);
	/* and qemu-img agrees (after close: it respects our locks) */
	{
		static struct want q[CHUNKS];
		qemu_map(top2, q);
		for (unsigned k = 0; k < CHUNKS; k++) {
			CHECK_EQ(q[k].status, w2[k].status);
			CHECK_EQ(q[k].depth, w2[k].depth);
		}
	}
	printf("ok live snapshot\n");
	test_run("rm -rf %s", dir);
	return 0;
}
