/* SPDX-License-Identifier: Apache-2.0 */
/* tar.c - list the members of a tar archive in place: ustar, GNU (base-256
 * sizes, ././@LongLink names) and pax (path, size) headers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ovf_i.h"

#define TAR_BLOCK 512
#define TAR_MAX_LONGNAME (64u << 10)
#define TAR_MAX_PAX (1u << 20)
#define TAR_MAX_MEMBERS 100000

/* The ustar header (POSIX.1-1988 plus the GNU and ustar extensions). */
struct tar_header {
	char name[100];
	char mode[8];
	char uid[8];
	char gid[8];
	char size[12];
	char mtime[12];
	char chksum[8];
	char typeflag;
	char linkname[100];
	char magic[6];
	char version[2];
	char uname[32];
	char gname[32];
	char devmajor[8];
	char devminor[8];
	char prefix[155];
	char pad[12];
};

_Static_assert(sizeof(struct tar_header) == TAR_BLOCK, "tar header is 512 bytes");
_Static_assert(__builtin_offsetof(struct tar_header, size) == 124, "size at 124");
_Static_assert(__builtin_offsetof(struct tar_header, chksum) == 148, "chksum at 148");
_Static_assert(__builtin_offsetof(struct tar_header, typeflag) == 156, "typeflag at 156");
_Static_assert(__builtin_offsetof(struct tar_header, magic) == 257, "magic at 257");
_Static_assert(__builtin_offsetof(struct tar_header, prefix) == 345, "prefix at 345");

/* Parses an octal field (NUL/space padded) or a GNU base-256 number. */
static bool tar_number(const char *f, size_t n, uint64_t *out)
{
	const unsigned char *u = (const unsigned char *)f;
	uint64_t v = 0;
	size_t i = 0;

	if (u[0] & 0x80) { /* base-256, big-endian, first byte's top bit set */
		if (u[0] & 0x40)
			return false; /* negative */
		v = u[0] & 0x3f;
		for (i = 1; i < n; i++) {
			if (v >> 56)
				return false;
			v = (v << 8) | u[i];
		}
		*out = v;
		return true;
	}
	while (i < n && (f[i] == ' ' || f[i] == '\0'))
		i++;
	if (i == n) {
		*out = 0;
		return true;
	}
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 61)
			return false;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	for (; i < n; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return false;
	*out = v;
	return true;
}

/* True when the block is all zeros (end-of-archive marker). */
static bool tar_zero_block(const unsigned char *b)
{
	for (size_t i = 0; i < TAR_BLOCK; i++)
		if (b[i])
			return false;
	return true;
}

/* Checks the header checksum (unsigned sum, or the historic signed one). */
static bool tar_checksum_ok(const unsigned char *b, uint64_t want)
{
	uint64_t us = 0;
	int64_t ss = 0;

	for (size_t i = 0; i < TAR_BLOCK; i++) {
		unsigned char c = (i >= 148 && i < 156) ? ' ' : b[i];

		us += c;
		ss += (signed char)c;
	}
	return us == want || (uint64_t)ss == want;
}

/* Copies a fixed field up to its first NUL. */
static char *tar_field(const char *f, size_t n)
{
	size_t len = strnlen(f, n);
	char *s = malloc(len + 1);

	if (s) {
		memcpy(s, f, len);
		s[len] = '\0';
	}
	return s;
}

/* Reads the data of a name/pax record member into memory. */
static int tar_read_small(struct ovf_stream *src, const char *arch,
			  uint64_t hoff, uint64_t size, size_t max, char **out)
{
	char *p;
	int r;

	if (size > max)
		return ovf_err(-EINVAL, "%s: extended header at offset %llu is %llu bytes, more than the %zu allowed",
			       arch, (unsigned long long)hoff,
			       (unsigned long long)size, max);
	p = malloc((size_t)size + 1);
	if (!p)
		return ovf_err(-ENOMEM, "%s: out of memory", arch);
	r = ovf_stream_read_full(src, p, (size_t)size, hoff + TAR_BLOCK);
	if (r < 0) {
		free(p);
		return ovf_err(r, "%s: truncated tar: extended header at offset %llu needs %llu bytes",
			       arch, (unsigned long long)hoff,
			       (unsigned long long)size);
	}
	p[size] = '\0';
	*out = p;
	return 0;
}

/*
 * Applies pax records ("LEN key=value\n") to *path and *size. Unknown keys
 * are ignored, as POSIX allows.
 */
static int tar_pax(const char *arch, uint64_t hoff, char *rec, size_t len,
		   char **path, bool *has_size, uint64_t *size)
{
	size_t pos = 0;

	while (pos < len) {
		uint64_t n = 0;
		size_t i = pos;
		char *key, *eq, *val;

		while (i < len && rec[i] >= '0' && rec[i] <= '9' && n < len)
			n = n * 10 + (uint64_t)(rec[i++] - '0');
		if (i >= len || rec[i] != ' ' || n == 0 || n > len - pos ||
		    rec[pos + n - 1] != '\n')
			return ovf_err(-EINVAL, "%s: malformed pax record at header offset %llu (byte %zu): expected \"LENGTH key=value\\n\"",
				       arch, (unsigned long long)hoff, pos);
		key = rec + i + 1;
		rec[pos + n - 1] = '\0';
		eq = strchr(key, '=');
		if (!eq)
			return ovf_err(-EINVAL, "%s: pax record without '=' at header offset %llu",
				       arch, (unsigned long long)hoff);
		*eq = '\0';
		val = eq + 1;
		if (!strcmp(key, "path")) {
			free(*path);
			*path = strdup(val);
			if (!*path)
				return ovf_err(-ENOMEM, "%s: out of memory", arch);
		} else if (!strcmp(key, "size")) {
			if (!ovf_parse_u64(val, size))
				return ovf_err(-EINVAL, "%s: pax size \"%s\" at header offset %llu is not a number",
					       arch, val,
					       (unsigned long long)hoff);
			*has_size = true;
		}
		pos += (size_t)n;
	}
	return 0;
}

/* Removes leading "./" and trailing "/" from a member name in place. */
static void tar_clean_name(char *name)
{
	size_t n;

	while (name[0] == '.' && name[1] == '/')
		memmove(name, name + 2, strlen(name + 2) + 1);
	n = strlen(name);
	while (n > 1 && name[n - 1] == '/')
		name[--n] = '\0';
}

/* Adds a member to the list. */
static int tar_push(struct ovf_tar_member **v, size_t *n, size_t *cap,
		    char *name, uint64_t size, uint64_t off, const char *arch)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		struct ovf_tar_member *nv = realloc(*v, c * sizeof(*nv));

		if (!nv)
			return ovf_err(-ENOMEM, "%s: out of memory", arch);
		*v = nv;
		*cap = c;
	}
	(*v)[*n].name = name;
	(*v)[*n].size = size;
	(*v)[*n].offset = off;
	(*n)++;
	return 0;
}

/* Lists the regular files of the tar in src. */
/* What ovf_tar_list carries from one header to the next: the members so
   far, and what a GNU long name or pax header said of the next one. */
struct tar_walk {
	struct ovf_tar_member *v;
	size_t n, cap;
	char *longname, *paxpath;
	bool pax_has_size;
	uint64_t pax_size;
};

/* A regular file's header h at off (its bytes: size at data) into w's
   list, under the name a GNU long name or pax path before it gave. */
static int tar_regular(struct tar_walk *w, const struct tar_header *h,
		       const char *arch, uint64_t off, uint64_t size,
		       uint64_t data)
{
	char *name;
	int r;

	if (w->paxpath) {
		name = w->paxpath;
		w->paxpath = NULL;
	} else if (w->longname) {
		name = w->longname;
		w->longname = NULL;
	} else if (!memcmp(h->magic, "ustar", 5) && h->prefix[0]) {
		char *pre = tar_field(h->prefix, sizeof(h->prefix));
		char *nm = tar_field(h->name, sizeof(h->name));

		name = pre && nm ? ovf_asprintf("%s/%s", pre, nm) : NULL;
		free(pre);
		free(nm);
	} else {
		name = tar_field(h->name, sizeof(h->name));
	}
	if (!name)
		return ovf_err(-ENOMEM, "%s: out of memory", arch);
	tar_clean_name(name);
	if (!ovf_name_is_safe(name)) {
		r = ovf_err(-EPERM, "%s: member \"%s\" at offset %llu refused: names must be relative and must not contain \"..\"",
			    arch, name, (unsigned long long)off);
		free(name);
		return r;
	}
	if (w->n >= TAR_MAX_MEMBERS) {
		free(name);
		r = ovf_err(-E2BIG, "%s: more than %d members", arch,
			    TAR_MAX_MEMBERS);
		return r;
	}
	r = tar_push(&w->v, &w->n, &w->cap, name, size, data, arch);
	if (r < 0) {
		free(name);
		return r;
	}
	w->pax_has_size = false;
	return 0;
}

/* Any other entry (directory, link, device) at off: not a package file;
   refused when its name leaves the package, else skipped (with a warning
   but for a directory). Forgets the long name and pax path it took. */
static int tar_other(struct tar_walk *w, const struct tar_header *h,
		     const char *arch, uint64_t off,
		     struct ovf_finding_list *warn)
{
	char *nm = w->paxpath ? strdup(w->paxpath) : w->longname ? strdup(w->longname) :
		   tar_field(h->name, sizeof(h->name));

	if (nm && !ovf_name_is_safe(nm) && strcmp(nm, "/") != 0) {
		int r = ovf_err(-EPERM, "%s: entry \"%s\" at offset %llu refused: names must be relative and must not contain \"..\"",
			    arch, nm, (unsigned long long)off);
		free(nm);
		return r;
	}
	if (warn && h->typeflag != '5')
		ovf_finding_add(warn, OVF_SEV_WARN, arch,
				"entry \"%s\" at offset %llu of type '%c' skipped: only regular files are package files",
				nm ? nm : "?",
				(unsigned long long)off,
				h->typeflag);
	free(nm);
	free(w->paxpath);
	free(w->longname);
	w->paxpath = w->longname = NULL;
	w->pax_has_size = false;
	return 0;
}

int ovf_tar_list(struct ovf_stream *src, const char *arch,
		 struct ovf_tar_member **out, size_t *nout,
		 struct ovf_finding_list *warn)
{
	struct tar_walk w = { 0 };
	uint64_t off = 0, src_size = UINT64_MAX;
	bool ended = false;
	int r = 0;

	if (src->size_known)
		src_size = src->size;
	for (;;) {
		unsigned char blk[TAR_BLOCK];
		const struct tar_header *h = (const void *)blk;
		uint64_t size, sum, data;
		ssize_t got = ovf_stream_pread(src, blk, TAR_BLOCK, off);

		if (got < 0) {
			r = (int)got;
			goto err_free_list;
		}
		if (got == 0 && w.n > 0) {
			if (warn)
				ovf_finding_add(warn, OVF_SEV_WARN, arch,
						"no end-of-archive marker (two zero blocks) at offset %llu",
						(unsigned long long)off);
			break;
		}
		if (got < TAR_BLOCK) {
			r = ovf_err(-EIO, "%s: truncated tar: header at offset %llu has %zd of 512 bytes",
				    arch, (unsigned long long)off, got);
			goto err_free_list;
		}
		if (tar_zero_block(blk)) {
			ended = true;
			break;
		}
		if (!tar_number(h->chksum, sizeof(h->chksum), &sum) ||
		    !tar_checksum_ok(blk, sum)) {
			r = ovf_err(-EINVAL, "%s: bad tar header at offset %llu: checksum does not match (not a tar archive, or corrupt)",
				    arch, (unsigned long long)off);
			goto err_free_list;
		}
		if (!tar_number(h->size, sizeof(h->size), &size)) {
			r = ovf_err(-EINVAL, "%s: tar header at offset %llu: size field is neither octal nor base-256",
				    arch, (unsigned long long)off);
			goto err_free_list;
		}
		if (w.pax_has_size && h->typeflag != 'x' && h->typeflag != 'g')
			size = w.pax_size;
		data = off + TAR_BLOCK;
		if (size > UINT64_MAX - data - TAR_BLOCK ||
		    (src_size != UINT64_MAX && data + size > src_size)) {
			r = ovf_err(-EIO, "%s: truncated tar: member at offset %llu declares %llu bytes but the archive ends at %llu",
				    arch, (unsigned long long)off,
				    (unsigned long long)size,
				    (unsigned long long)src_size);
			goto err_free_list;
		}
		switch (h->typeflag) {
		case 'L': /* GNU long name for the next member */
			free(w.longname);
			w.longname = NULL;
			r = tar_read_small(src, arch, off, size,
					   TAR_MAX_LONGNAME, &w.longname);
			if (r < 0)
				goto err_free_list;
			break;
		case 'x': { /* pax extended header for the next member */
			char *rec;

			r = tar_read_small(src, arch, off, size, TAR_MAX_PAX,
					   &rec);
			if (r < 0)
				goto err_free_list;
			r = tar_pax(arch, off, rec, (size_t)size, &w.paxpath,
				    &w.pax_has_size, &w.pax_size);
			free(rec);
			if (r < 0)
				goto err_free_list;
			break;
		}
		case 'g': /* pax global header: nothing we use */
		case 'K': /* GNU long link name */
			break;
		case '0':
		case '\0':
		case '7':
			r = tar_regular(&w, h, arch, off, size, data);
			if (r < 0)
				goto err_free_list;
			break;
		default:
			r = tar_other(&w, h, arch, off, warn);
			if (r < 0)
				goto err_free_list;
			break;
		}
		off = data + ((size + TAR_BLOCK - 1) / TAR_BLOCK) * TAR_BLOCK;
	}
	if (!ended && w.n == 0) {
		r = ovf_err(-EINVAL, "%s: empty or truncated tar archive", arch);
		goto err_free_list;
	}
	free(w.longname);
	free(w.paxpath);
	*out = w.v;
	*nout = w.n;
	return 0;

err_free_list:
	free(w.longname);
	free(w.paxpath);
	for (size_t i = 0; i < w.n; i++)
		free(w.v[i].name);
	free(w.v);
	return r;
}
