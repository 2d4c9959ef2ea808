/* SPDX-License-Identifier: Apache-2.0 */
/* package.c - open an OVF package (OVA file, .ovf file or folder) and read
 * its files in place: members of the tar, or files beside the descriptor. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ovf_i.h"

#define OVF_FOLDER_DEPTH 3

/* True when name ends with suffix (case-insensitive). */
static bool ends_with(const char *name, const char *suffix)
{
	size_t n = strlen(name), s = strlen(suffix);

	return n >= s && !strcasecmp(name + n - s, suffix);
}

/* Adds a member record. */
static int add_member(struct ovf_pkg *p, const char *name, uint64_t size,
		      uint64_t off)
{
	struct ovf_member *v = realloc(p->members,
				       (p->nmembers + 1) * sizeof(*v));

	if (!v)
		return ovf_err(-ENOMEM, "%s: out of memory", p->path);
	p->members = v;
	v[p->nmembers].name = strdup(name);
	if (!v[p->nmembers].name)
		return ovf_err(-ENOMEM, "%s: out of memory", p->path);
	v[p->nmembers].size = size;
	v[p->nmembers].offset = off;
	p->nmembers++;
	return 0;
}

/* Lists regular files under dir/rel (a few levels deep). */
static int scan_folder(struct ovf_pkg *p, const char *rel, int depth)
{
	char *path = *rel ? ovf_asprintf("%s/%s", p->dir, rel) : strdup(p->dir);
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (!path)
		return ovf_err(-ENOMEM, "%s: out of memory", p->path);
	d = opendir(path);
	if (!d) {
		r = ovf_err(-errno, "%s: cannot list folder: %s", path,
			    strerror(errno));
		free(path);
		return r;
	}
	while (r >= 0 && (de = readdir(d))) {
		char *name;
		struct stat st;

		if (de->d_name[0] == '.' && (!de->d_name[1] ||
		    (de->d_name[1] == '.' && !de->d_name[2])))
			continue;
		name = *rel ? ovf_asprintf("%s/%s", rel, de->d_name)
			    : strdup(de->d_name);
		if (!name) {
			r = ovf_err(-ENOMEM, "%s: out of memory", p->path);
			break;
		}
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			if (S_ISREG(st.st_mode))
				r = add_member(p, name, (uint64_t)st.st_size, 0);
			else if (S_ISDIR(st.st_mode) && depth < OVF_FOLDER_DEPTH)
				r = scan_folder(p, name, depth + 1);
		}
		free(name);
	}
	closedir(d);
	free(path);
	return r;
}

/* Picks the descriptor, manifest and certificate among the members. */
static int pick_special(struct ovf_pkg *p, const char *want_desc)
{
	char *base;

	for (size_t i = 0; i < p->nmembers && !want_desc; i++) {
		if (!ends_with(p->members[i].name, ".ovf") ||
		    strchr(p->members[i].name, '/'))
			continue;
		if (p->descriptor) {
			ovf_finding_add(&p->warnings, OVF_SEV_WARN, p->members[i].name,
					"a second descriptor; using %s", p->descriptor);
			continue;
		}
		p->descriptor = strdup(p->members[i].name);
		if (!p->descriptor)
			return ovf_err(-ENOMEM, "%s: out of memory", p->path);
	}
	if (want_desc && !(p->descriptor = strdup(want_desc)))
		return ovf_err(-ENOMEM, "%s: out of memory", p->path);
	if (!p->descriptor)
		return ovf_err(-ENOENT, "%s: no OVF descriptor (*.ovf) in the package",
			       p->path);
	base = strdup(p->descriptor);
	if (!base)
		return ovf_err(-ENOMEM, "%s: out of memory", p->path);
	base[strlen(base) - 4] = '\0';
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < p->nmembers; i++) {
			const char *m = p->members[i].name;
			size_t bl = strlen(base);
			bool same = !strncmp(m, base, bl) && m[bl] == '.';

			if (pass == 0 && !same)
				continue; /* prefer the descriptor's own name */
			if (!p->manifest && ends_with(m, ".mf") && !strchr(m, '/'))
				p->manifest = strdup(m);
			if (!p->cert && ends_with(m, ".cert") && !strchr(m, '/'))
				p->cert = strdup(m);
		}
	}
	free(base);
	return 0;
}

/* Index of a member by name, or -1. */
static long member_index(const struct ovf_pkg *p, const char *name)
{
	for (size_t i = 0; name && i < p->nmembers; i++)
		if (!strcmp(p->members[i].name, name))
			return (long)i;
	return -1;
}

/* Warns when an OVA's members are not in the order DSP0243 asks for. */
static void check_order(struct ovf_pkg *p)
{
	long desc = member_index(p, p->descriptor);
	long last = -1;
	size_t n = p->nmembers;

	if (desc != 0)
		ovf_finding_add(&p->warnings, OVF_SEV_WARN, p->descriptor,
				"the descriptor is member %ld of the OVA; it must be the first",
				desc + 1);
	for (int k = 0; k < 2; k++) {
		const char *name = k ? p->cert : p->manifest;
		long i = member_index(p, name);
		bool after_desc = i == desc + 1 ||
				  (k && i == desc + 2 &&
				   member_index(p, p->manifest) == desc + 1);
		bool at_end = i == (long)n - 1 ||
			      (!k && i == (long)n - 2 &&
			       member_index(p, p->cert) == (long)n - 1);

		if (i >= 0 && !after_desc && !at_end)
			ovf_finding_add(&p->warnings, OVF_SEV_WARN, name,
					"member %ld of the OVA: %s must follow the descriptor or end the archive",
					i + 1, k ? "the certificate" : "the manifest");
	}
	for (size_t f = 0; p->env && f < p->env->nfiles; f++) {
		char **parts;
		size_t np;

		if (ovf_pkg_file_parts(p, &p->env->files[f], &parts, &np) < 0)
			continue;
		for (size_t j = 0; j < np; j++) {
			long i = member_index(p, parts[j]);

			if (i >= 0 && i < last)
				ovf_finding_add(&p->warnings, OVF_SEV_WARN, parts[j],
						"member %ld of the OVA is out of References order",
						i + 1);
			if (i > last)
				last = i;
		}
		ovf_strv_free(parts, np);
	}
}

/* Opens the OVA at path (plain or gzip'd tar) and lists its members. */
static int open_ova(struct ovf_pkg *p, int fd, uint64_t size)
{
	struct ovf_stream *raw;
	struct ovf_tar_member *m = NULL;
	unsigned char magic[2] = { 0, 0 };
	size_t n = 0;
	int r;

	r = ovf_stream_fd(fd, 0, size, p->path, &raw);
	if (r < 0)
		return r;
	p->ova = true;
	if (size >= 2)
		(void)ovf_stream_pread(raw, magic, 2, 0);
	if (magic[0] == 0x1f && magic[1] == 0x8b) {
		uint64_t usize;

		p->gzipped = true;
		r = ovf_stream_gzip(raw, p->path, &p->archive);
		ovf_stream_close(raw);
		if (r < 0)
			return r;
		r = ovf_stream_size(p->archive, &usize); /* builds the index */
		if (r < 0)
			return r;
		ovf_finding_add(&p->warnings, OVF_SEV_WARN, p->path,
				"the OVA is gzip-compressed; DSP0243 wants a plain tar");
	} else {
		p->archive = raw;
	}
	r = ovf_tar_list(p->archive, p->path, &m, &n, &p->warnings);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		if (r >= 0 && member_index(p, m[i].name) >= 0)
			ovf_finding_add(&p->warnings, OVF_SEV_WARN, m[i].name,
					"appears twice in the OVA; the last copy is ignored");
		else if (r >= 0)
			r = add_member(p, m[i].name, m[i].size, m[i].offset);
		free(m[i].name);
	}
	free(m);
	return r;
}

/* Opens a package: an OVA file, a .ovf file, or a folder holding one. */
int ovf_open(const char *path, struct ovf_pkg **out)
{
	struct ovf_pkg *p;
	struct ovf_stream *ds = NULL;
	struct stat st;
	char *desc_buf;
	size_t desc_len;
	char *want = NULL;
	int fd = -1, r;

	ovf_err_clear();
	p = calloc(1, sizeof(*p));
	if (!p || !(p->path = strdup(path))) {
		free(p);
		return ovf_err(-ENOMEM, "%s: out of memory", path);
	}
	if (stat(path, &st) < 0) {
		r = ovf_err(-errno, "%s: %s", path, strerror(errno));
		goto err_close_pkg;
	}
	if (S_ISDIR(st.st_mode)) {
		p->dir = strdup(path);
		r = p->dir ? scan_folder(p, "", 0) : -ENOMEM;
	} else if (ends_with(path, ".ovf")) {
		char *tmp = strdup(path), *tmp2 = strdup(path);

		if (tmp && tmp2) {
			p->dir = strdup(dirname(tmp));
			want = strdup(basename(tmp2));
		}
		free(tmp);
		free(tmp2);
		r = p->dir && want ? scan_folder(p, "", 0)
				   : ovf_err(-ENOMEM, "%s: out of memory", path);
	} else {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			r = ovf_err(-errno, "%s: %s", path, strerror(errno));
			goto err_close_pkg;
		}
		r = open_ova(p, fd, (uint64_t)st.st_size);
		close(fd);
	}
	if (r < 0)
		goto err_free_want;
	r = pick_special(p, want);
	if (r < 0)
		goto err_free_want;
	r = ovf_member_open(p, p->descriptor, &ds);
	if (r < 0)
		goto err_free_want;
	r = ovf_stream_load(ds, 32u << 20, &desc_buf, &desc_len);
	ovf_stream_close(ds);
	if (r < 0)
		goto err_free_want;
	{
		char *name = p->ova ? ovf_asprintf("%s:%s", path, p->descriptor)
				    : ovf_asprintf("%s/%s", p->dir, p->descriptor);

		r = ovf_parse_descriptor(desc_buf, desc_len, name ? name : path,
					 &p->env);
		free(name);
	}
	free(desc_buf);
	if (r < 0)
		goto err_free_want;
	if (p->ova)
		check_order(p);
	free(want);
	*out = p;
	return 0;

err_free_want:
	free(want);
err_close_pkg:
	ovf_close(p);
	return r;
}

/* Frees the package and everything it owns. */
void ovf_close(struct ovf_pkg *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nmembers; i++)
		free(p->members[i].name);
	free(p->members);
	ovf_stream_close(p->archive);
	ovf_envelope_free(p->env);
	ovf_findings_free(&p->warnings);
	free(p->descriptor);
	free(p->manifest);
	free(p->cert);
	free(p->dir);
	free(p->path);
	free(p);
}

const struct ovf_envelope *ovf_pkg_envelope(const struct ovf_pkg *p) { return p->env; }
const char *ovf_pkg_path(const struct ovf_pkg *p) { return p->path; }
bool ovf_pkg_is_ova(const struct ovf_pkg *p) { return p->ova; }
bool ovf_pkg_is_gzipped(const struct ovf_pkg *p) { return p->gzipped; }
const char *ovf_pkg_descriptor_name(const struct ovf_pkg *p) { return p->descriptor; }
const char *ovf_pkg_manifest_name(const struct ovf_pkg *p) { return p->manifest; }
const char *ovf_pkg_cert_name(const struct ovf_pkg *p) { return p->cert; }
size_t ovf_pkg_member_count(const struct ovf_pkg *p) { return p->nmembers; }
const struct ovf_finding_list *ovf_pkg_warnings(const struct ovf_pkg *p) { return &p->warnings; }

/* The i-th member, or NULL past the end. */
const struct ovf_member *ovf_pkg_member(const struct ovf_pkg *p, size_t i)
{
	return i < p->nmembers ? &p->members[i] : NULL;
}

/* The member with this name, or NULL. */
const struct ovf_member *ovf_pkg_find_member(const struct ovf_pkg *p,
					     const char *name)
{
	long i = member_index(p, name);

	return i < 0 ? NULL : &p->members[i];
}

/* Opens a member's stored bytes. */
int ovf_member_open(struct ovf_pkg *p, const char *name,
		    struct ovf_stream **out)
{
	const struct ovf_member *m = ovf_pkg_find_member(p, name);
	char *label;
	int fd, r;

	if (!m || !ovf_name_is_safe(name))
		return ovf_err(-ENOENT, "%s: no file \"%s\" in the package",
			       p->path, name ? name : "(null)");
	label = ovf_asprintf("%s%s%s", p->path, p->ova ? ":" : "/", name);
	if (!label)
		return ovf_err(-ENOMEM, "%s: out of memory", p->path);
	if (p->ova) {
		r = ovf_stream_sub(p->archive, m->offset, m->size, label, out);
		free(label);
		return r;
	}
	fd = ovf_pkg_open_fd(p, name);
	if (fd < 0) {
		r = fd;
	} else {
		struct stat st;

		r = fstat(fd, &st) < 0 ? ovf_err(-errno, "%s: %s", label, strerror(errno))
				       : ovf_stream_fd(fd, 0, (uint64_t)st.st_size,
						       label, out);
		close(fd);
	}
	free(label);
	return r;
}

/* Opens a file of a folder package below its folder, with no symlink at
   any level (a file swapped for a symlink after the listing is refused
   too), and only when it is a regular file. */
int ovf_pkg_open_fd(const struct ovf_pkg *p, const char *name)
{
	int dfd, fd, r;
	struct stat st;

	if (!ovf_pkg_find_member(p, name) || !ovf_name_is_safe(name))
		return ovf_err(-ENOENT, "%s: no file \"%s\" in the package",
			       p->path, name ? name : "(null)");
	dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ovf_err(-errno, "%s: %s", p->dir, strerror(errno));
	fd = ovf_openat_beneath(dfd, name, O_RDONLY | O_NONBLOCK, 0);
	close(dfd);
	if (fd < 0)
		return ovf_err(fd, "%s/%s: %s", p->dir, name,
			       ovf_beneath_strerror(fd));
	if (fstat(fd, &st) < 0)
		r = ovf_err(-errno, "%s/%s: %s", p->dir, name, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		r = ovf_err(-EINVAL, "%s/%s: not a regular file", p->dir, name);
	else
		return fd;
	close(fd);
	return r;
}

/* The stored files of File f: its href, or href.000000000, ... */
int ovf_pkg_file_parts(const struct ovf_pkg *p, const struct ovf_file *f,
		       char ***names, size_t *n)
{
	char **v = NULL;
	size_t k = 0;

	if (!f->href)
		return ovf_err(-EINVAL, "File %s has no ovf:href", f->id ? f->id : "?");
	if (ovf_href_check(f->href) < 0)
		return -EINVAL;
	if (member_index(p, f->href) >= 0) {
		v = calloc(1, sizeof(*v));
		if (!v || !(v[0] = strdup(f->href))) {
			free(v);
			return ovf_err(-ENOMEM, "out of memory");
		}
		*names = v;
		*n = 1;
		return 0;
	}
	for (; f->chunk_size; k++) {
		char *name = ovf_asprintf("%s.%09zu", f->href, k);
		char **nv;

		if (!name) {
			ovf_strv_free(v, k);
			return ovf_err(-ENOMEM, "out of memory");
		}
		if (member_index(p, name) < 0) {
			free(name);
			break;
		}
		nv = realloc(v, (k + 1) * sizeof(*nv));
		if (!nv) {
			free(name);
			ovf_strv_free(v, k);
			return ovf_err(-ENOMEM, "out of memory");
		}
		v = nv;
		v[k] = name;
	}
	*names = v;
	*n = k;
	return 0;
}

/* Opens File f as its whole decompressed content. */
int ovf_file_open(struct ovf_pkg *p, const struct ovf_file *f,
		  struct ovf_stream **out)
{
	struct ovf_stream **parts, *joined;
	char **names, *label;
	size_t n;
	int r = ovf_pkg_file_parts(p, f, &names, &n);

	if (r < 0)
		return r;
	if (!n) {
		ovf_strv_free(names, n);
		return ovf_err(-ENOENT, "%s: File %s: neither %s nor its chunks %s.000000000... are in the package",
			       p->path, f->id ? f->id : "?", f->href,
			       f->href);
	}
	parts = calloc(n, sizeof(*parts));
	if (!parts) {
		ovf_strv_free(names, n);
		return ovf_err(-ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n && r >= 0; i++)
		r = ovf_member_open(p, names[i], &parts[i]);
	label = ovf_asprintf("%s%s%s", p->path, p->ova ? ":" : "/", f->href);
	if (r >= 0 && !label)
		r = ovf_err(-ENOMEM, "out of memory");
	if (r >= 0)
		r = ovf_stream_concat(parts, n, label, &joined);
	for (size_t i = 0; i < n; i++)
		ovf_stream_close(parts[i]);
	free(parts);
	ovf_strv_free(names, n);
	if (r >= 0 && f->compression && !strcmp(f->compression, "gzip")) {
		r = ovf_stream_gzip(joined, label, out);
		ovf_stream_close(joined);
	} else if (r >= 0) {
		*out = joined;
	}
	free(label);
	return r;
}
