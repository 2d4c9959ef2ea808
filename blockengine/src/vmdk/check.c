/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check.c - the VMDK driver's check op (bdev_check): finds the sparse extents of a VMDK (through the
 * open image, or from the descriptor when the engine refuses to open it)
 * and hands each file to its kind's check (the `check` op of struct
 * vmdk_extent_ops: extent_sparse.c for hosted sparse and streams,
 * extent_cowd.c, extent_sesparse.c), which reports findings through
 * vmdk_check_finding and makes only safe repairs.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

/* Report one finding to the caller's callback; see vmdk.h. */
void vmdk_check_finding(struct vmdk_check_ctx *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (c->report)
		c->report(c->opaque, buf);
}

/* n little-endian u32s at off of s, host-endian, in a malloc'd array. */
int vmdk_check_read_u32s(struct bsrc *s, uint64_t off, uint32_t n, uint32_t **out)
{
	uint32_t *v = malloc((size_t)n * 4 + 4);
	int ret;

	if (!v)
		return -ENOMEM;
	ret = bsrc_read_full(s, v, (size_t)n * 4, off);
	if (ret < 0) {
		free(v);
		return ret;
	}
	for (uint32_t i = 0; i < n; i++)
		v[i] = le32toh(v[i]);
	*out = v;
	return 0;
}

/* Check one sparse extent file by its kind's check (found by magic). */
static int check_extent(struct vmdk_check_ctx *c, const char *path, uint64_t desc_bytes,
			unsigned repair, bool *checked)
{
	uint8_t magic[8] = { 0 };
	const struct vmdk_extent_ops *ops;
	struct bsrc *s;
	int ret = bsrc_open_file(path, false, true, &s);

	*checked = false;
	if (ret < 0)
		return ret;
	if (s->length >= 8)
		ret = bsrc_read_full(s, magic, 8, 0);
	bsrc_close(s);
	if (ret < 0)
		return ret;
	ops = vmdk_extent_ops_probe(magic, sizeof(magic));
	if (!ops)
		return 0;
	*checked = true;
	return ops->check(c, path, desc_bytes, repair);
}

/*
 * The sparse extents named by the descriptor at path, read without opening
 * the image: for a check of an image the engine refuses to open (a table
 * entry out of range makes the open fail). Names leaving the folder are
 * skipped. A file that is itself a sparse extent is its own list.
 */
static int extents_unopened(const char *path, char **paths, uint64_t *sizes,
			    unsigned cap, unsigned *n)
{
	struct vmdk_desc d;
	char *text = NULL;
	const char *slash = strrchr(path, '/');
	size_t len = 0, dl = slash ? (size_t)(slash - path) + 1 : 0;
	int ret;

	*n = 0;
	ret = vmdk_desc_read_file(path, &text, &len);
	if (ret < 0)
		return ret;
	if (len >= 8 && vmdk_extent_ops_probe((const uint8_t *)text, len)) {
		free(text);
		paths[0] = strdup(path);
		sizes[0] = 0;
		*n = paths[0] ? 1 : 0;
		return paths[0] ? 0 : -ENOMEM;
	}
	if (vmdk_desc_probe((const uint8_t *)text, len) < 50 ||
	    vmdk_desc_parse(text, len, path, &d) < 0) {
		free(text);
		return -EINVAL;
	}
	free(text);
	for (unsigned i = 0; i < d.n_extents && *n < cap; i++) {
		const struct vmdk_desc_extent *x = &d.extents[i];
		const char *nm = x->name;
		char *p;

		if (!nm || (x->type != VMDK_EXT_SPARSE && x->type != VMDK_EXT_VMFSSPARSE &&
			    x->type != VMDK_EXT_SESPARSE) ||
		    nm[0] == '/' || strstr(nm, ".."))
			continue;
		p = malloc(dl + strlen(nm) + 1);
		if (!p) {
			ret = -ENOMEM;
			break;
		}
		memcpy(p, path, dl);
		strcpy(p + dl, nm);
		paths[*n] = p;
		sizes[(*n)++] = x->sectors * 512;
	}
	vmdk_desc_free(&d);
	return ret;
}

/*
 * The engine refused to open path (its message is in open_err's text):
 * check the sparse extents anyway, so that what made the open fail is
 * reported as a finding with the rest. Returns 0 when the check found
 * corruption to report, else open_err. Nothing is repaired.
 */
static int check_unopened(struct vmdk_check_ctx *c, const char *path, unsigned repair,
			  int open_err)
{
	enum { MAX_EXT = 256 };
	char why[4096], **paths = calloc(MAX_EXT, sizeof(char *));
	uint64_t *sizes = calloc(MAX_EXT, sizeof(uint64_t));
	unsigned n = 0;
	int ret;

	(void)repair;
	snprintf(why, sizeof(why), "%s", bdev_errmsg());
	if (!paths || !sizes) {
		free(paths);
		free(sizes);
		return open_err;
	}
	ret = extents_unopened(path, paths, sizes, MAX_EXT, &n);
	for (unsigned i = 0; ret == 0 && i < n; i++) {
		bool checked;
		ret = check_extent(c, paths[i], sizes[i], 0, &checked);
		c->r->checked_extents += checked;
	}
	for (unsigned i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(sizes);
	if (ret < 0 || !c->r->corruptions) {
		bdev_err(open_err, "%s", why);
		return open_err;
	}
	vmdk_check_finding(c, "ERROR %s: the image cannot be opened: %s", path, why);
	c->r->corruptions++;
	return 0;
}

/* The check op of the VMDK driver (bdev_check of a file that probed as a
   VMDK); see vmdk.h. */
int vmdk_check(const char *path, unsigned repair, struct bdev_check_result *r,
	       void (*report)(void *opaque, const char *line), void *opaque)
{
	struct bdev_open_opts o = { .flags = BDEV_O_SHARE | BDEV_O_NO_BACKING,
				    .format = "vmdk" };
	struct vmdk_check_ctx c = { r, report, opaque };
	struct bdev *b;
	struct bdev_info in;
	char **paths = NULL;
	uint64_t *sizes = NULL;
	unsigned n = 0;
	int ret;

	bdev_err_clear();
	memset(r, 0, sizeof(*r));
	ret = bdev_open(path, &o, &b);
	if (ret < 0)
		return check_unopened(&c, path, repair, ret);
	ret = bdev_get_info(b, &in);
	if (ret == 0) {
		paths = calloc(in.extent_count + 1, sizeof(*paths));
		sizes = calloc(in.extent_count + 1, sizeof(*sizes));
		if (!paths || !sizes)
			ret = -ENOMEM;
	}
	for (unsigned i = 0; ret == 0 && i < in.extent_count; i++) {
		struct bdev_extent_info e;
		ret = bdev_get_extent(b, i, &e);
		if (ret == 0 && (!strcmp(e.type, "SPARSE") ||
				 !strcmp(e.type, "VMFSSPARSE") ||
				 !strcmp(e.type, "SESPARSE")) && e.filename) {
			paths[n] = strdup(e.filename);
			sizes[n++] = e.size;
		}
	}
	bdev_close(b);
	for (unsigned i = 0; ret == 0 && i < n; i++) {
		/* a monolithic file's descriptor and header say the same */
		bool checked;
		ret = check_extent(&c, paths[i], sizes[i], repair, &checked);
		r->checked_extents += checked;
	}
	for (unsigned i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(sizes);
	return ret;
}

