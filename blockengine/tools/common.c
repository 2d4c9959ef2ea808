/* SPDX-License-Identifier: Apache-2.0 */
/* common.c - helpers shared by the `vmdk` tool's commands. */
#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void tool_err(const char *fmt, ...)
{
	va_list ap;

	fputs(TOOL_NAME ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void tool_bdev_err(int ret, const char *what)
{
	const char *msg = bdev_errmsg();

	if (msg && *msg)
		tool_err("%s", msg);
	else
		tool_err("%s: %s", what, strerror(ret < 0 ? -ret : ret));
}

void tool_usage_err(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs(TOOL_NAME ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" TOOL_NAME " %s --help' for more information.\n",
		cmd ? cmd : "");
}

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0': break;
	case 'b': case 'B': shift = 0; end++; break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || end == s)
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int tool_open(const char *path, const char *format, bool share,
	      bool writable, struct bdev **out)
{
	struct bdev_open_opts o = { 0 };
	int ret;

	o.format = format;
	if (writable)
		o.flags |= BDEV_O_RDWR;
	else if (share)
		o.flags |= BDEV_O_SHARE;
	ret = bdev_open(path, &o, out);
	if (ret < 0)
		tool_bdev_err(ret, path);
	return ret;
}

int chain_status(struct bdev *top, uint64_t off, uint64_t len,
		 uint64_t *pnum, unsigned *depth, bool *present)
{
	unsigned d = 0;
	int st = bdev_block_status_depth(top, off, len, pnum, &d);

	if (st < 0)
		return st;
	if (*pnum == 0 || *pnum > len)
		*pnum = len;	/* defensive: the engine promises 1..len */
	*present = d > 0;
	if (d > 0) {
		*depth = d - 1;
		return st == BDEV_STATUS_DATA ? CHAIN_DATA : CHAIN_ZERO;
	}
	/* in no layer: qemu-img map names the bottom one */
	for (struct bdev *l = bdev_backing(top); l; l = bdev_backing(l))
		d++;
	*depth = d;
	return CHAIN_ZERO;
}


double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int tool_parse_output(const char *cmd, const char *arg, bool *json)
{
	if (!strcmp(arg, "json"))
		*json = true;
	else if (!strcmp(arg, "human"))
		*json = false;
	else {
		tool_usage_err(cmd, "--output must be 'human' or 'json', not '%s'", arg);
		return -1;
	}
	return 0;
}
