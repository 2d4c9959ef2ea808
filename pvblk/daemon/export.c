/* SPDX-License-Identifier: Apache-2.0 */
/* export.c - open the image a pvblk daemon serves: read-only, read-write,
   or read-write into a fresh delta child (-o snapshot). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "liveops.h"
#include "pvblk.h"

void pvblk_log(const char *fmt, ...)
{
	va_list ap;
	char line[2048];

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "pvblk: %s\n", line);
}

static const char *engine_msg(int ret)
{
	const char *msg = bdev_errmsg();

	return *msg ? msg : strerror(-ret);
}

/* IMAGE-snapshot-YYYYmmdd-HHMMSS.vmdk beside IMAGE (".vmdk" dropped). */
static char *default_child(const char *image)
{
	char stamp[32], *out;
	time_t now = time(NULL);
	struct tm tm;
	size_t n = strlen(image);

	localtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
	if (n > 5 && !strcmp(image + n - 5, ".vmdk"))
		n -= 5;
	if (asprintf(&out, "%.*s-snapshot-%s.vmdk", (int)n, image, stamp) < 0)
		return NULL;
	return out;
}

/* -o snapshot: make a delta child on image and open it read-write. The
   child is created exclusively, so an existing file is never reused, and
   removed again when it cannot be opened. */
static int open_snapshot(struct pvblk_export *e, const char *child,
			 struct bdev_open_opts *oo)
{
	struct bdev_create_opts co = { 0 };
	int ret;

	e->snapshot_child = child ? strdup(child) : default_child(e->image);
	if (!e->snapshot_child)
		return -ENOMEM;
	co.format = "vmdk";
	co.subformat = "monolithicSparse";
	co.backing = e->image;
	ret = bdev_create(e->snapshot_child, &co);
	if (ret < 0) {
		pvblk_log("cannot create the snapshot child %s: %s",
			  e->snapshot_child, engine_msg(ret));
		goto err_free;
	}
	oo->flags |= BDEV_O_RDWR;
	ret = bdev_open(e->snapshot_child, oo, &e->bdev);
	if (ret < 0) {
		pvblk_log("cannot open the snapshot child %s: %s",
			  e->snapshot_child, engine_msg(ret));
		unlink(e->snapshot_child);
		goto err_free;
	}
	pvblk_log("writes go to the snapshot child %s; %s stays untouched",
		  e->snapshot_child, e->image);
	return 0;

err_free:
	free(e->snapshot_child);
	e->snapshot_child = NULL;
	return ret;
}

/* A view left by a pvblk (or ovkvm) that died holds the disk's latest
   writes in IMAGE-live-N.vmdk: served writable, the image gets them back
   first (an offline commit, crash-safe); served read-only, the image is
   stale and the log says so. -errno when a leftover cannot be merged: then
   serving the image would silently drop the guest's writes. */
int pvblk_recover_views(const char *image, bool merge)
{
	char err[2048];
	unsigned merged;
	int ret = liveops_recover(image, merge, &merged, err, sizeof(err));

	if (ret == -EEXIST && !merge) {
		pvblk_log("warning: %s", err);
		return 0;
	}
	if (ret < 0) {
		pvblk_log("%s: %s; not serving it", image, err);
		return ret;
	}
	if (err[0])
		pvblk_log("%s", err);
	(void)merged;
	return 0;
}

int pvblk_export_open(struct pvblk_export *e, const char *image,
		      const char *mode, const char *child, const char *format)
{
	struct bdev_open_opts oo = { 0 };
	struct bdev_info in;
	int ret;

	memset(e, 0, sizeof(*e));
	e->image = image;
	oo.format = format;
	if (!strcmp(mode, "snapshot")) {
		ret = open_snapshot(e, child, &oo);
		if (ret < 0)
			return ret;
	} else {
		if (!strcmp(mode, "rw"))
			oo.flags |= BDEV_O_RDWR;
		else
			e->read_only = true;
		ret = bdev_open(image, &oo, &e->bdev);
		if (ret < 0) {
			if (ret == -EBUSY || ret == -EAGAIN)
				pvblk_log("image in use: %s (another program "
					  "holds it for writing)",
					  engine_msg(ret));
			else
				pvblk_log("cannot open %s: %s", image,
					  engine_msg(ret));
			return ret;
		}
	}
	ret = bdev_get_info(e->bdev, &in);
	if (ret < 0) {
		pvblk_log("%s: %s", image, engine_msg(ret));
		pvblk_export_close(e, true);
		return ret;
	}
	e->size = in.size;
	if (in.read_only)
		e->read_only = true;
	/* A compressed image (a stream) holds one compressed record per
	   grain: a guest that rewrites a block gets an I/O error. Say so
	   before it happens. */
	if (!e->read_only && !e->snapshot_child && in.compressed)
		pvblk_log("warning: %s is %s: each grain can be "
			  "written once, so a guest that rewrites a block gets "
			  "an I/O error; serve it with -o snapshot (writes go "
			  "to a delta child) or convert it to monolithicSparse",
			  image, in.subformat ? in.subformat : "compressed");
	return 0;
}

int pvblk_export_close(struct pvblk_export *e, bool discard)
{
	int ret = 0;

	if (e->bdev) {
		ret = bdev_close(e->bdev);
		if (ret < 0)
			pvblk_log("closing %s: %s",
				  e->snapshot_child ? e->snapshot_child
						    : e->image,
				  engine_msg(ret));
		e->bdev = NULL;
	}
	if (discard && e->snapshot_child)
		unlink(e->snapshot_child);
	free(e->snapshot_child);
	e->snapshot_child = NULL;
	return ret;
}
