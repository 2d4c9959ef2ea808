/* SPDX-License-Identifier: Apache-2.0 */
/* disk.c - a Disk's file opened through the block engine and checked
 * against what the descriptor declares (ovf:format and ovf:capacity), for
 * `ovf validate` and ovffs alike: a disk is never served or passed as
 * valid as something it is not. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blockengine.h"
#include "ovf_i.h"

/* What an ovf:format URI asks for: the VMDK createTypes that fit (NULL:
   any) and whether bare raw bytes fit (a monolithicFlat disk's flat
   extent, as some producers store it). False when the URI is not a VMDK
   one and so cannot be checked. */
static bool declared_format(const char *uri, const char *const **subs,
			    bool *raw_ok)
{
	static const char *const stream[] = { "streamOptimized", NULL };
	static const char *const sparse[] = { "monolithicSparse", "streamOptimized", NULL };
	static const char *const mono[] = { "monolithicSparse", NULL };
	static const char *const flat[] = { "monolithicFlat", NULL };
	const char *frag;

	*subs = NULL;
	*raw_ok = false;
	if (!uri || !strstr(uri, "vmdk.html"))
		return false;
	frag = strchr(uri, '#');
	if (!frag)
		return true;
	frag++;
	if (!strcasecmp(frag, "streamOptimized") || !strcasecmp(frag, "compressed"))
		*subs = stream;
	else if (!strcasecmp(frag, "sparse"))
		*subs = sparse; /* OVF 0.9 and old ovftool: either sparse kind */
	else if (!strcasecmp(frag, "monolithicSparse"))
		*subs = mono;
	else if (!strcasecmp(frag, "monolithicFlat") || !strcasecmp(frag, "flat")) {
		*subs = flat;
		*raw_ok = true;
	}
	return true;
}

/* A byte source reading the package stream (gzip'd or chunked files). */
static ssize_t source_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	return ovf_stream_pread(opaque, buf, len, off);
}

static const struct bdev_byte_source stream_source = {
	.pread = source_pread,
	.close = NULL, /* the caller owns the stream */
};

/* Compares the open image b with Disk d; appends findings, returns the
   number of errors. */
static int compare(const struct ovf_disk *d, struct bdev *b, const char *name,
		   const char *where, struct ovf_finding_list *out)
{
	const char *const *subs;
	struct bdev_info info;
	bool fits = false, raw_ok;
	int errors = 0;

	if (bdev_get_info(b, &info) < 0) {
		ovf_finding_add(out, OVF_SEV_ERROR, where, "%s: %s", name,
				bdev_errmsg());
		return 1;
	}
	if (!declared_format(d->format, &subs, &raw_ok)) {
		ovf_finding_add(out, OVF_SEV_WARN, where,
				"ovf:format \"%s\" is not a VMDK format; %s is not checked against it",
				d->format ? d->format : "", name);
		return 0;
	}
	if (!strcmp(info.format, "raw")) {
		fits = raw_ok;
	} else if (!strcmp(info.format, "vmdk")) {
		fits = !subs;
		for (size_t i = 0; subs && subs[i] && !fits; i++)
			fits = info.subformat && !strcasecmp(info.subformat, subs[i]);
	}
	if (!fits) {
		if (strcmp(info.format, "vmdk"))
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"ovf:format says %s but %s is not a VMDK (it reads as %s)",
					d->format, name, info.format);
		else
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"ovf:format says %s but %s is a VMDK of createType %s",
					d->format, name,
					info.subformat ? info.subformat : "(none)");
		errors++;
	}
	if (d->has_capacity && d->capacity != info.size) {
		ovf_finding_add(out, OVF_SEV_ERROR, where,
				"ovf:capacity=\"%s\"%s%s%s is %llu bytes but %s holds a disk of %llu bytes",
				d->capacity_text ? d->capacity_text : "",
				d->capacity_units ? " ovf:capacityAllocationUnits=\"" : "",
				d->capacity_units ? d->capacity_units : "",
				d->capacity_units ? "\"" : "",
				(unsigned long long)d->capacity, name,
				(unsigned long long)info.size);
		errors++;
	}
	return errors;
}

int ovf_disk_open_checked(struct ovf_pkg *p, const struct ovf_disk *d,
			  struct ovf_stream *s, const struct bdev_open_opts *opts,
			  struct bdev **out, struct ovf_finding_list *findings)
{
	const struct ovf_file *f = ovf_find_file(p->env, d->file_ref);
	const char *const *subs;
	char where[300], *name;
	bool raw_ok;
	struct bdev *b = NULL;
	uint64_t size, base;
	int fd, r, errors;

	*out = NULL;
	snprintf(where, sizeof(where), "DiskSection/Disk[@diskId=%s]",
		 d->disk_id ? d->disk_id : "?");
	if (!f || !f->href)
		return ovf_err(-ENOENT, "%s: %s: ovf:fileRef names no File",
			       p->path, where);
	r = ovf_stream_size(s, &size);
	if (r < 0)
		return r;
	name = ovf_asprintf("%s%s%s", p->path, p->ova ? ":" : "/", f->href);
	if (!name)
		return ovf_err(-ENOMEM, "out of memory");
	if (ovf_stream_region(s, &fd, &base) == 0)
		r = bdev_open_region(fd, base, size, f->href, opts, &b);
	else
		r = bdev_open_callbacks(&stream_source, s, size, f->href, opts, &b);
	if (r < 0) {
		bool vmdk = declared_format(d->format, &subs, &raw_ok);

		ovf_finding_add(findings, vmdk ? OVF_SEV_ERROR : OVF_SEV_WARN, where,
				"ovf:format says %s but %s cannot be opened as a disk: %s",
				d->format ? d->format : "(none)", name, bdev_errmsg());
		r = ovf_err(vmdk ? -EINVAL : r, "%s: %s: %s cannot be opened as a disk: %s",
			    p->path, where, name, bdev_errmsg());
		free(name);
		return r;
	}
	errors = compare(d, b, name, where, findings);
	if (errors) {
		bdev_close(b);
		r = ovf_err(-EINVAL, "%s: %s: %s is not the disk the descriptor declares",
			    p->path, where, name);
		free(name);
		return r;
	}
	free(name);
	*out = b;
	return 0;
}

/* Every Disk with a file, opened and compared (for ovf_validate). */
void ovf_check_disk_contents(struct ovf_pkg *p, struct ovf_finding_list *out)
{
	const struct bdev_open_opts oo = {
		.flags = BDEV_O_SHARE | BDEV_O_NO_BACKING,
		.readahead_grains = UINT32_MAX,
		.inflate_threads = UINT32_MAX,
	};

	for (size_t i = 0; i < p->env->ndisks; i++) {
		const struct ovf_disk *d = &p->env->disks[i];
		const struct ovf_file *f = ovf_find_file(p->env, d->file_ref);
		struct ovf_stream *s;
		struct bdev *b;

		/* a missing or unsafe file is reported by the file checks */
		if (!f || !f->href || !d->format || ovf_file_open(p, f, &s) < 0)
			continue;
		if (ovf_disk_open_checked(p, d, s, &oo, &b, out) == 0)
			bdev_close(b);
		ovf_stream_close(s);
	}
}
