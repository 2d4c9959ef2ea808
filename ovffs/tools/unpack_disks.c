/* SPDX-License-Identifier: Apache-2.0 */
/* unpack_disks.c - `ovf unpack --disks-to rbd:POOL/PREFIX`: each disk of
 * the package goes straight into an RBD image PREFIX-DISKID as raw
 * contents, read through the block engine (any VMDK kind, gzip'd or
 * chunked files, checked against the descriptor first) and written by
 * the engine's RBD writer, zeros skipped; no copy of the disk lands on
 * local storage. The writers stay open until every disk is written, so
 * a failure aborts them all and leaves no image behind. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockengine.h"
#include "unpack_disks.h"

/* Where the image name of an rbd: name ends: at its first unescaped ':'
   (options follow) or at its end. */
static const char *image_end(const char *to)
{
	const char *c = to + 4;

	while (*c && !(*c == ':' && c[-1] != '\\'))
		c++;
	return c;
}

bool unpack_disks_target_ok(const char *to)
{
	const char *end, *slash;

	if (strncmp(to, "rbd:", 4)) {
		fprintf(stderr, "ovf unpack: --disks-to takes "
			"rbd:POOL/PREFIX[:conf=PATH][:id=NAME], not \"%s\"\n",
			to);
		return false;
	}
	end = image_end(to);
	slash = memchr(to + 4, '/', (size_t)(end - to - 4));
	if (!slash || slash == to + 4 || slash + 1 == end ||
	    memchr(to + 4, '@', (size_t)(end - to - 4))) {
		fprintf(stderr, "ovf unpack: --disks-to \"%s\": expected "
			"rbd:POOL/PREFIX (no @SNAP: new images are made)\n", to);
		return false;
	}
	return true;
}

/* The image for disk id: to with "-ID" after the image name. */
static char *disk_name(const char *to, const char *id)
{
	const char *end = image_end(to);
	char *out;

	if (asprintf(&out, "%.*s-%s%s", (int)(end - to), to, id, end) < 0)
		return NULL;
	return out;
}

struct disk_out {
	const char *id;
	char *name;
	struct bdev_writer *w;
};

/* Opens disk d of p checked against its descriptor and copies it into
   a new writer for o->name. */
static int write_disk(struct ovf_pkg *p, const struct ovf_disk *d,
		      struct disk_out *o)
{
	const struct ovf_envelope *env = ovf_pkg_envelope(p);
	const struct ovf_file *f = ovf_find_file(env, d->file_ref);
	struct bdev_create_opts co = { .format = "raw" };
	struct ovf_finding_list fl = { 0 };
	struct ovf_stream *s = NULL;
	struct bdev_info info;
	struct bdev *b = NULL;
	int r;

	if (!f) {
		fprintf(stderr, "ovf unpack: disk %s: its File \"%s\" is not in "
			"References\n", o->id, d->file_ref);
		return -EINVAL;
	}
	r = ovf_file_open(p, f, &s);
	if (r < 0) {
		fprintf(stderr, "ovf unpack: disk %s: %s\n", o->id,
			ovf_errmsg());
		return r;
	}
	r = ovf_disk_open_checked(p, d, s, NULL, &b, &fl);
	if (r < 0) {
		if (!fl.n)
			fprintf(stderr, "ovf unpack: disk %s: %s\n", o->id,
				ovf_errmsg());
		for (size_t i = 0; i < fl.n; i++)
			fprintf(stderr, "ovf unpack: disk %s: %s: %s\n", o->id,
				fl.v[i].where, fl.v[i].what);
		goto out;
	}
	bdev_get_info(b, &info);
	co.size = info.size;
	r = bdev_writer_new(o->name, &co, &o->w);
	if (r < 0) {
		fprintf(stderr, "ovf unpack: %s\n", bdev_errmsg());
		goto out;
	}
	r = bdev_copy(b, o->w, NULL, NULL);
	if (r < 0) {
		fprintf(stderr, "ovf unpack: disk %s into %s: %s\n", o->id,
			o->name, bdev_errmsg());
		bdev_writer_abort(o->w);
		o->w = NULL;
	}
out:
	bdev_close(b);
	ovf_stream_close(s);
	ovf_findings_free(&fl);
	return r;
}

int unpack_disks(struct ovf_pkg *p, const char *to)
{
	const struct ovf_envelope *env = ovf_pkg_envelope(p);
	struct disk_out *out;
	size_t n = env->ndisks;
	int r = 0;

	out = calloc(n ? n : 1, sizeof(*out));
	if (!out) {
		fprintf(stderr, "ovf unpack: out of memory\n");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		const struct ovf_disk *d = &env->disks[i];

		out[i].id = d->disk_id ? d->disk_id : "";
		if (!out[i].id[0] || strpbrk(out[i].id, "/@:\\")) {
			fprintf(stderr, "ovf unpack: Disk %zu: diskId \"%s\" "
				"cannot name an RBD image\n", i + 1, out[i].id);
			r = -EINVAL;
		} else if (d->parent_ref) {
			fprintf(stderr, "ovf unpack: disk %s is a delta of "
				"disk %s; --disks-to writes whole disks only\n",
				out[i].id, d->parent_ref);
			r = -ENOTSUP;
		} else if (!d->file_ref) {
			fprintf(stderr, "ovf unpack: disk %s has no file (an "
				"empty disk made at deploy); --disks-to writes "
				"disks the package holds\n", out[i].id);
			r = -ENOTSUP;
		} else if (!(out[i].name = disk_name(to, out[i].id))) {
			fprintf(stderr, "ovf unpack: out of memory\n");
			r = -ENOMEM;
		} else {
			r = write_disk(p, d, &out[i]);
		}
	}
	/* all written: keep them; else none */
	for (size_t i = 0; i < n; i++) {
		if (out[i].w && r == 0) {
			r = bdev_writer_close(out[i].w);
			if (r < 0)
				fprintf(stderr, "ovf unpack: %s\n",
					bdev_errmsg());
		} else if (out[i].w) {
			bdev_writer_abort(out[i].w);
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (r == 0)
			printf("%s %s\n", out[i].id, out[i].name);
		free(out[i].name);
	}
	free(out);
	return r;
}
