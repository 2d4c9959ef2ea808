/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_bench.c - `vmdk bench`: time COUNT requests of SIZE bytes with DEPTH
 * in flight, with the semantics and output of `qemu-img bench`, so the two
 * can be compared side by side.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char bench_help[] =
"Usage: vmdk bench [-c COUNT] [-d DEPTH] [-s SIZE] [-S STEP] [-o OFFSET]\n"
"                  [-w] [--pattern=BYTE] [--no-flush] [-U] [-f FMT] IMAGE\n"
"\n"
"Run a simple I/O benchmark on IMAGE with the semantics of 'qemu-img bench':\n"
"COUNT requests of SIZE bytes are sent with at most DEPTH in flight on one\n"
"io_uring queue. The first request is at OFFSET; each next one is STEP bytes\n"
"further, wrapping back into the disk (modulo virtual size - SIZE) when it\n"
"would run past the end. The time from the first submission to the last\n"
"completion is printed; with -w the image is flushed after that, outside\n"
"the timed run, as qemu-img does when it closes the image.\n"
"\n"
"Options:\n"
"  -c, --count=COUNT   number of requests (default 75000)\n"
"  -d, --depth=DEPTH   requests in flight (default 64)\n"
"  -s, --size=SIZE     bytes per request (default 4096; k, M suffixes)\n"
"  -S, --step=STEP     bytes between request offsets (default SIZE)\n"
"  -o, --offset=OFF    offset of the first request (default 0)\n"
"  -w, --write         write instead of read (opens the image read-write;\n"
"                      fails with the engine's message where the format\n"
"                      does not support writing)\n"
"  --pattern=BYTE      byte written by -w (default 0)\n"
"  --no-flush          with -w, do not flush at the end\n"
"  -U, --force-share   open without taking locks (reads only)\n"
"  -f FMT              force the format: 'vmdk' or 'raw'\n"
"  -h, --help          show this help\n"
"\n"
"Output (as qemu-img):\n"
"  Sending N read requests, S bytes each, D in parallel (starting at offset\n"
"  O, step size T)\n"
"  Run completed in X seconds.\n"
"\n"
"Examples:\n"
"  vmdk bench -c 200000 -d 32 -s 4k disk.vmdk\n"
"  qemu-img bench -f vmdk -c 200000 -d 32 -s 4k disk.vmdk   # the peer\n"
"  vmdk bench -w -c 1000 -s 64k scratch.vmdk\n";

struct bench {
	struct bdev *b;
	struct bdev_queue *q;
	uint64_t image_size, size, step, offset;
	uint64_t count;		/* requests not completed yet */
	uint64_t in_flight;
	uint64_t depth;
	bool write;
	int error;
	char errmsg[1024];
};

struct breq {
	struct bench *bn;
	struct iovec iov;
	bool busy;
};

static void bench_done(void *opaque, int ret)
{
	struct breq *r = opaque;
	struct bench *bn = r->bn;

	r->busy = false;
	bn->in_flight--;
	bn->count--;
	if (ret < 0 && !bn->error) {
		const char *m = bdev_errmsg();

		bn->error = ret;
		snprintf(bn->errmsg, sizeof(bn->errmsg), "Failed request: %s",
			 m && *m ? m : strerror(-ret));
	}
}

/* Next request offset after cur, wrapped like qemu-img's bench. */
static uint64_t bench_advance(const struct bench *bn, uint64_t cur)
{
	cur += bn->step;
	if (bn->image_size <= bn->size)
		return 0;
	return cur % (bn->image_size - bn->size);
}

static int bench_run(struct bench *bn, struct breq *reqs)
{
	uint64_t i;
	int ret;

	while (bn->count && !bn->error) {
		for (i = 0; i < bn->depth && bn->count > bn->in_flight &&
			    bn->in_flight < bn->depth; i++) {
			struct breq *r = &reqs[i];
			uint64_t off = bn->offset;

			if (r->busy)
				continue;
			bn->offset = bench_advance(bn, bn->offset);
			r->busy = true;
			bn->in_flight++;
			if (bn->write)
				ret = bdev_aio_writev(bn->q, bn->b, off, &r->iov,
						      1, bench_done, r);
			else
				ret = bdev_aio_readv(bn->q, bn->b, off, &r->iov,
						     1, bench_done, r);
			if (ret < 0) {
				tool_bdev_err(ret, "queueing a request");
				return ret;
			}
		}
		ret = bdev_queue_run(bn->q, 1);
		if (ret < 0) {
			tool_bdev_err(ret, "running the I/O queue");
			return ret;
		}
	}
	if (bn->error) {
		/* let what is in flight finish before the buffers go */
		while (bn->in_flight && bdev_queue_run(bn->q, 1) >= 0)
			;
		tool_err("%s", bn->errmsg);
		return bn->error;
	}
	return 0;
}

int cmd_bench(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "count", required_argument, NULL, 'c' },
		{ "depth", required_argument, NULL, 'd' },
		{ "size", required_argument, NULL, 's' },
		{ "step", required_argument, NULL, 'S' },
		{ "offset", required_argument, NULL, 'o' },
		{ "write", no_argument, NULL, 'w' },
		{ "pattern", required_argument, NULL, 'P' },
		{ "no-flush", no_argument, NULL, 'N' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench bn = { .count = 75000, .depth = 64, .size = 4096 };
	const char *format = NULL;
	bool share = false, step_set = false, flush = true;
	uint64_t pattern = 0, count, i;
	struct bdev_info in;
	struct breq *reqs = NULL;
	char *buf = NULL;
	double t0, t1;
	int c, ret, rc = 1;

	while ((c = getopt_long(argc, argv, "+hc:d:s:S:o:wUf:", lopts,
				NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_uint(optarg, 1, INT32_MAX, &bn.count)) {
				tool_usage_err("bench", "Invalid request count specified: '%s'", optarg);
				return 1;
			}
			break;
		case 'd':
			if (parse_uint(optarg, 1, 4096, &bn.depth)) {
				tool_usage_err("bench", "Invalid queue depth specified: '%s' (1..4096)", optarg);
				return 1;
			}
			break;
		case 's':
			if (parse_size(optarg, &bn.size) || bn.size == 0 ||
			    bn.size > (256u << 20)) {
				tool_usage_err("bench", "Invalid buffer size specified: '%s'", optarg);
				return 1;
			}
			break;
		case 'S':
			if (parse_size(optarg, &bn.step) || bn.step > INT32_MAX) {
				tool_usage_err("bench", "Invalid step size specified: '%s'", optarg);
				return 1;
			}
			step_set = true;
			break;
		case 'o':
			if (parse_size(optarg, &bn.offset)) {
				tool_usage_err("bench", "Invalid offset specified: '%s'", optarg);
				return 1;
			}
			break;
		case 'w': bn.write = true; break;
		case 'P':
			if (parse_uint(optarg, 0, 255, &pattern)) {
				tool_usage_err("bench", "Invalid pattern byte specified: '%s'", optarg);
				return 1;
			}
			break;
		case 'N': flush = false; break;
		case 'U': share = true; break;
		case 'f': format = optarg; break;
		case 'h': fputs(bench_help, stdout); return 0;
		default: tool_usage_err("bench", "bad option"); return 1;
		}
	}
	if (optind != argc - 1) {
		tool_usage_err("bench", "expected exactly one IMAGE");
		return 1;
	}
	if (!step_set)
		bn.step = bn.size;
	if (bn.write && share) {
		tool_usage_err("bench", "-U cannot be used with -w");
		return 1;
	}
	if (tool_open(argv[optind], format, share, bn.write, &bn.b) < 0)
		return 1;
	ret = bdev_get_info(bn.b, &in);
	if (ret < 0) {
		tool_bdev_err(ret, argv[optind]);
		goto out;
	}
	bn.image_size = in.size;
	if (bn.offset + bn.size > in.size) {
		tool_err("offset %" PRIu64 " + size %" PRIu64
			 " is beyond the end of '%s' (%" PRIu64 " bytes)",
			 bn.offset, bn.size, argv[optind], in.size);
		goto out;
	}
	reqs = calloc(bn.depth, sizeof(*reqs));
	if (!reqs || posix_memalign((void **)&buf, 4096, bn.size * bn.depth)) {
		tool_err("out of memory for %" PRIu64 " buffers of %" PRIu64
			 " bytes", bn.depth, bn.size);
		goto out;
	}
	memset(buf, (int)pattern, bn.size * bn.depth);
	for (i = 0; i < bn.depth; i++) {
		reqs[i].bn = &bn;
		reqs[i].iov.iov_base = buf + i * bn.size;
		reqs[i].iov.iov_len = bn.size;
	}
	ret = bdev_queue_new((unsigned)bn.depth, &bn.q);
	if (ret < 0) {
		tool_bdev_err(ret, "creating an I/O queue");
		goto out;
	}
	count = bn.count;
	printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %" PRIu64
	       " in parallel (starting at offset %" PRIu64 ", step size %" PRIu64
	       ")\n", count, bn.write ? "write" : "read", bn.size, bn.depth,
	       bn.offset, bn.step);
	fflush(stdout);
	t0 = now_sec();
	ret = bench_run(&bn, reqs);
	/* Like qemu-img bench, time the requests only: its flush happens
	   when it closes the image, after the report. */
	t1 = now_sec();
	if (ret == 0 && bn.write && flush) {
		ret = bdev_flush(bn.b);
		if (ret < 0)
			tool_bdev_err(ret, "flush");
	}
	if (ret == 0) {
		printf("Run completed in %3.3f seconds.\n", t1 - t0);
		rc = 0;
	}
	bdev_queue_free(bn.q);
out:
	free(buf);
	free(reqs);
	if (bn.b) {
		ret = bdev_close(bn.b);
		if (ret < 0 && rc == 0) {
			tool_bdev_err(ret, "close");
			rc = 1;
		}
	}
	fflush(stdout);
	return rc;
}
