/* SPDX-License-Identifier: Apache-2.0 */
/*
 * descriptor.c - the VMDK text descriptor: header keys, extent lines and
 * ddb.* entries, parsed strictly with line-numbered messages.
 */
#include <ctype.h>
#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmdk.h"

static const struct {
	const char *name;
	enum vmdk_ext_type type;
} ext_types[] = {
	{ "FLAT", VMDK_EXT_FLAT },
	{ "VMFS", VMDK_EXT_VMFS },
	{ "VMFSRDM", VMDK_EXT_VMFSRDM },
	{ "VMFSRAW", VMDK_EXT_VMFSRAW },
	{ "ZERO", VMDK_EXT_ZERO },
	{ "SPARSE", VMDK_EXT_SPARSE },
	{ "VMFSSPARSE", VMDK_EXT_VMFSSPARSE },
	{ "SESPARSE", VMDK_EXT_SESPARSE },
};

static const char *const create_types[] = {
	"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
	"twoGbMaxExtentFlat", "streamOptimized", "vmfs", "vmfsSparse",
	"vmfsThin", "seSparse", "fullDevice", "partitionedDevice", "vmfsRaw",
	"vmfsRDM", "vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap",
	"vmfsPreallocated", "vmfsEagerZeroedThick", "custom",
};

/* The descriptor keyword for an extent type. */
const char *vmdk_ext_type_name(enum vmdk_ext_type t)
{
	for (size_t i = 0; i < sizeof(ext_types) / sizeof(ext_types[0]); i++)
		if (ext_types[i].type == t)
			return ext_types[i].name;
	return "?";
}

/* Confidence that head is descriptor text: a "# Disk DescriptorFile" line,
   or a version= line preceded only by comments and blank lines. */
int vmdk_desc_probe(const uint8_t *head, size_t len)
{
	const char *p = (const char *)head, *end = p + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		const char *q = p;

		while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
			q++;
		if (q == le) {
			/* blank line */
		} else if (*q == '#') {
			static const char magic[] = "# Disk DescriptorFile";
			if ((size_t)(le - q) >= sizeof(magic) - 1 &&
			    memcmp(q, magic, sizeof(magic) - 1) == 0)
				return 100;
		} else if ((size_t)(le - q) >= 9 &&
			   memcmp(q, "version=", 8) == 0 && q[8] >= '1' &&
			   q[8] <= '3') {
			return 100;
		} else {
			return 0;
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	return 0;
}

/* Free everything d owns and leave it empty. */
void vmdk_desc_free(struct vmdk_desc *d)
{
	for (unsigned i = 0; i < d->n_extents; i++)
		free(d->extents[i].name);
	for (unsigned i = 0; i < d->n_ddb; i++) {
		free(d->ddb[i].key);
		free(d->ddb[i].value);
	}
	free(d->extents);
	free(d->ddb);
	free(d->encoding);
	free(d->create_type);
	free(d->parent_hint);
	memset(d, 0, sizeof(*d));
	d->parent_cid = VMDK_NO_PARENT_CID;
}

/* The value of ddb.<key> (case-sensitive), or NULL. */
const char *vmdk_desc_ddb(const struct vmdk_desc *d, const char *key)
{
	for (unsigned i = 0; i < d->n_ddb; i++)
		if (strcmp(d->ddb[i].key, key) == 0)
			return d->ddb[i].value;
	return NULL;
}

struct line {
	const char *p; /* trimmed */
	size_t len;
	unsigned no;
	const char *name;
};

/* Report a malformed line, quoting (a bounded prefix of) it. */
static int line_err(const struct line *l, const char *expected)
{
	int shown = l->len > 80 ? 80 : (int)l->len;

	return bdev_err(-EINVAL, "%s: line %u: expected %s, got \"%.*s%s\"",
			l->name, l->no, expected, shown, l->p,
			l->len > 80 ? "..." : "");
}

static char *dup_range(const char *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* Parse a decimal u64 at *pp (advancing it); false if none or overflow. */
static bool parse_u64(const char **pp, const char *end, uint64_t *out)
{
	const char *p = *pp;
	uint64_t v = 0;

	if (p >= end || !isdigit((unsigned char)*p))
		return false;
	while (p < end && isdigit((unsigned char)*p)) {
		unsigned dgt = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - dgt) / 10)
			return false;
		v = v * 10 + dgt;
		p++;
	}
	*pp = p;
	*out = v;
	return true;
}

static const char *skip_space(const char *p, const char *end)
{
	while (p < end && is_space(*p))
		p++;
	return p;
}

/* Parse one extent line "ACCESS SECTORS TYPE ["NAME" [OFFSET]]". */
static int parse_extent(const struct line *l, struct vmdk_desc *d)
{
	static const char expect[] =
		"an extent line: RW|RDONLY|NOACCESS SECTORS TYPE \"FILE\" [OFFSET]";
	const char *p = l->p, *end = l->p + l->len, *tok;
	struct vmdk_desc_extent x = { .line = l->no };
	size_t n;
	bool found = false;

	tok = p;
	while (p < end && !is_space(*p))
		p++;
	n = (size_t)(p - tok);
	if (n == 2 && memcmp(tok, "RW", 2) == 0)
		x.access = BDEV_ACCESS_RW;
	else if (n == 6 && memcmp(tok, "RDONLY", 6) == 0)
		x.access = BDEV_ACCESS_RDONLY;
	else if (n == 8 && memcmp(tok, "NOACCESS", 8) == 0)
		x.access = BDEV_ACCESS_NOACCESS;
	else
		return line_err(l, expect);

	p = skip_space(p, end);
	if (!parse_u64(&p, end, &x.sectors) || (p < end && !is_space(*p)))
		return line_err(l, "an extent size in sectors (decimal) after the access mode");
	if (x.sectors == 0 || x.sectors > VMDK_MAX_CAPACITY_SECTORS)
		return bdev_err(-EINVAL,
				"%s: line %u: extent size %" PRIu64
				" sectors, expected 1..%" PRIu64,
				l->name, l->no, x.sectors,
				(uint64_t)VMDK_MAX_CAPACITY_SECTORS);

	p = skip_space(p, end);
	tok = p;
	while (p < end && !is_space(*p))
		p++;
	n = (size_t)(p - tok);
	for (size_t i = 0; i < sizeof(ext_types) / sizeof(ext_types[0]); i++) {
		if (strlen(ext_types[i].name) == n &&
		    memcmp(ext_types[i].name, tok, n) == 0) {
			x.type = ext_types[i].type;
			found = true;
		}
	}
	if (!found)
		return bdev_err(-EINVAL,
				"%s: line %u: extent type \"%.*s\", expected one of FLAT, "
				"SPARSE, ZERO, VMFS, VMFSSPARSE, VMFSRDM, VMFSRAW, SESPARSE",
				l->name, l->no, (int)(n > 40 ? 40 : n), tok);

	p = skip_space(p, end);
	if (x.type == VMDK_EXT_ZERO) {
		if (p != end)
			return line_err(l, "nothing after a ZERO extent's type");
		goto add;
	}
	if (p == end)
		return line_err(l, "a quoted file name after the extent type");
	if (*p == '"') {
		tok = ++p;
		while (p < end && *p != '"')
			p++;
		if (p == end)
			return line_err(l, "a closing quote after the file name");
		n = (size_t)(p - tok);
		p++;
	} else {
		tok = p;
		while (p < end && !is_space(*p))
			p++;
		n = (size_t)(p - tok);
	}
	if (n == 0 || memchr(tok, '\0', n))
		return line_err(l, "a non-empty file name");

	p = skip_space(p, end);
	if (p < end) {
		bool flat_kind = x.type == VMDK_EXT_FLAT || x.type == VMDK_EXT_VMFS ||
				 x.type == VMDK_EXT_VMFSRDM ||
				 x.type == VMDK_EXT_VMFSRAW;
		if (!flat_kind)
			return line_err(l, "no offset after a sparse extent's file name");
		if (!parse_u64(&p, end, &x.offset) || p != end ||
		    x.offset > VMDK_MAX_CAPACITY_SECTORS)
			return line_err(l, "an offset in sectors (decimal) after the file name");
	}
	x.name = dup_range(tok, n);
	if (!x.name)
		return -ENOMEM;
add:
	if (d->n_extents >= VMDK_DESC_MAX_EXTENTS) {
		free(x.name);
		return bdev_err(-EINVAL, "%s: line %u: more than %u extents",
				l->name, l->no, VMDK_DESC_MAX_EXTENTS);
	}
	if ((d->n_extents & (d->n_extents - 1)) == 0) {
		unsigned cap = d->n_extents ? d->n_extents * 2 : 4;
		void *ne = realloc(d->extents, cap * sizeof(*d->extents));
		if (!ne) {
			free(x.name);
			return -ENOMEM;
		}
		d->extents = ne;
	}
	d->extents[d->n_extents++] = x;
	return 0;
}

/* Strip one pair of surrounding double quotes. */
static void unquote(const char **v, size_t *n)
{
	if (*n >= 2 && (*v)[0] == '"' && (*v)[*n - 1] == '"') {
		(*v)++;
		*n -= 2;
	}
}

static bool key_is(const char *k, size_t kn, const char *want)
{
	return strlen(want) == kn && memcmp(k, want, kn) == 0;
}

static int parse_hex32(const struct line *l, const char *key, const char *v,
		       size_t n, uint32_t *out)
{
	uint32_t x = 0;

	if (n == 0 || n > 8)
		goto bad;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)v[i];
		if (!isxdigit(c))
			goto bad;
		x = x * 16 + (uint32_t)(isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
	}
	*out = x;
	return 0;
bad:
	return bdev_err(-EINVAL, "%s: line %u: %s is \"%.*s\", expected 1 to 8 hex digits",
			l->name, l->no, key, (int)(n > 40 ? 40 : n), v);
}

/* Parse one "key = value" line. */
static int parse_keyval(const struct line *l, const char *eq, struct vmdk_desc *d)
{
	const char *k = l->p, *v = eq + 1, *end = l->p + l->len;
	size_t kn = (size_t)(eq - k), vn;
	char **slot = NULL;

	while (kn && is_space(k[kn - 1]))
		kn--;
	v = skip_space(v, end);
	vn = (size_t)(end - v);
	if (kn == 0)
		return line_err(l, "a key before '='");
	for (size_t i = 0; i < kn; i++) {
		char c = k[i];
		if (!isalnum((unsigned char)c) && c != '.' && c != '_' && c != '-')
			return line_err(l, "a key made of letters, digits, '.', '_' or '-'");
	}
	unquote(&v, &vn);
	if (memchr(v, '\0', vn))
		return line_err(l, "a value without NUL bytes");
	if ((key_is(k, kn, "version") && d->version) ||
	    (key_is(k, kn, "CID") && d->has_cid) ||
	    (key_is(k, kn, "parentCID") && d->has_parent_cid) ||
	    (key_is(k, kn, "createType") && d->create_type) ||
	    (key_is(k, kn, "encoding") && d->encoding) ||
	    (key_is(k, kn, "parentFileNameHint") && d->parent_hint))
		/* readers that take the first (QEMU) and the last would
		   disagree about the disk: refuse rather than pick one */
		return bdev_err(-EINVAL, "%s: line %u: %.*s is given a second "
				"time, expected it once", l->name, l->no,
				(int)kn, k);

	if (key_is(k, kn, "version")) {
		const char *q = v;
		uint64_t ver;
		if (!parse_u64(&q, v + vn, &ver) || q != v + vn || ver < 1 || ver > 3)
			return bdev_err(-EINVAL, "%s: line %u: version is \"%.*s\", expected 1, 2 or 3",
					l->name, l->no, (int)(vn > 40 ? 40 : vn), v);
		d->version = (unsigned)ver;
		return 0;
	}
	if (key_is(k, kn, "CID")) {
		d->has_cid = true;
		return parse_hex32(l, "CID", v, vn, &d->cid);
	}
	if (key_is(k, kn, "parentCID")) {
		d->has_parent_cid = true;
		return parse_hex32(l, "parentCID", v, vn, &d->parent_cid);
	}
	if (key_is(k, kn, "createType"))
		slot = &d->create_type;
	else if (key_is(k, kn, "encoding"))
		slot = &d->encoding;
	else if (key_is(k, kn, "parentFileNameHint"))
		slot = &d->parent_hint;
	if (slot) {
		free(*slot);
		*slot = dup_range(v, vn);
		return *slot ? 0 : -ENOMEM;
	}
	if (kn > 4 && memcmp(k, "ddb.", 4) == 0) {
		if ((d->n_ddb & (d->n_ddb - 1)) == 0) {
			unsigned cap = d->n_ddb ? d->n_ddb * 2 : 8;
			void *nd = realloc(d->ddb, cap * sizeof(*d->ddb));
			if (!nd)
				return -ENOMEM;
			d->ddb = nd;
		}
		struct vmdk_ddb *e = &d->ddb[d->n_ddb];
		e->key = dup_range(k + 4, kn - 4);
		e->value = dup_range(v, vn);
		if (!e->key || !e->value) {
			free(e->key);
			free(e->value);
			return -ENOMEM;
		}
		d->n_ddb++;
		return 0;
	}
	/* Other keys (isNativeSnapshot, changeTrackPath, ...) are kept by
	   VMware for its own use; they do not change how the disk reads. */
	return 0;
}

static bool known_create_type(const char *ct)
{
	for (size_t i = 0; i < sizeof(create_types) / sizeof(create_types[0]); i++)
		if (strcmp(create_types[i], ct) == 0)
			return true;
	return false;
}

/* Parse descriptor text; see vmdk.h. */
int vmdk_desc_parse(const char *text, size_t len, const char *name,
		    struct vmdk_desc *d)
{
	const char *p = text, *end;
	const char *nul = memchr(text, '\0', len);
	unsigned no = 0;
	int ret;

	memset(d, 0, sizeof(*d));
	d->parent_cid = VMDK_NO_PARENT_CID;
	if (nul)
		len = (size_t)(nul - text);
	if (len > VMDK_DESC_MAX_BYTES)
		return bdev_err(-EFBIG, "%s: descriptor is %zu bytes, expected at most %u",
				name, len, VMDK_DESC_MAX_BYTES);
	end = text + len;
	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3; /* UTF-8 byte order mark */

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		struct line l = { .no = ++no, .name = name };

		while (p < le && (is_space(*p) || *p == '\r'))
			p++;
		while (le > p && (is_space(le[-1]) || le[-1] == '\r'))
			le--;
		l.p = p;
		l.len = (size_t)(le - p);
		p = nl ? nl + 1 : end;
		if (l.len == 0 || l.p[0] == '#')
			continue;

		const char *eq = memchr(l.p, '=', l.len);
		const char *sp = l.p;
		while (sp < l.p + l.len && !is_space(*sp) && *sp != '=')
			sp++;
		/* An extent line starts with an access word and has no '=' before
		   its file name; key lines have '=' right after the key. */
		size_t wl = (size_t)(sp - l.p);
		bool access_word = (wl == 2 && memcmp(l.p, "RW", 2) == 0) ||
				   (wl == 6 && memcmp(l.p, "RDONLY", 6) == 0) ||
				   (wl == 8 && memcmp(l.p, "NOACCESS", 8) == 0);
		if (access_word && sp < l.p + l.len && is_space(*sp))
			ret = parse_extent(&l, d);
		else if (eq)
			ret = parse_keyval(&l, eq, d);
		else
			ret = line_err(&l, "\"key=value\", an extent line or a # comment");
		if (ret < 0)
			goto err_free;
	}

	if (!d->create_type) {
		ret = bdev_err(-EINVAL, "%s: no createType line, expected e.g. createType=\"monolithicSparse\"",
			       name);
		goto err_free;
	}
	if (!known_create_type(d->create_type)) {
		ret = bdev_err(-ENOTSUP,
			       "%s: createType \"%.60s\" is unknown, expected one of monolithicSparse, "
			       "monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, "
			       "streamOptimized, vmfs, vmfsSparse, vmfsThin, seSparse, ...",
			       name, d->create_type);
		goto err_free;
	}
	if (d->version == 0)
		d->version = 1; /* some writers omit it; 1 is what they mean */
	if (d->parent_hint && d->parent_hint[0] == '\0') {
		free(d->parent_hint);
		d->parent_hint = NULL;
	}
	return 0;

err_free:
	vmdk_desc_free(d);
	return ret;
}

int vmdk_desc_read_file(const char *path, char **out, size_t *len)
{
	int fd = bsrc_open_image_fd(path, O_RDONLY);
	char *t;
	ssize_t n;
	size_t l = 0;

	if (fd < 0)
		return fd;
	t = malloc(VMDK_DESC_MAX_BYTES + 1);
	if (!t) {
		close(fd);
		return -ENOMEM;
	}
	while ((n = read(fd, t + l, VMDK_DESC_MAX_BYTES - l)) > 0)
		l += (size_t)n;
	close(fd);
	if (n < 0) {
		free(t);
		return bdev_err(-errno, "%s: cannot read: %s", path, strerror(errno));
	}
	t[l] = '\0';
	*out = t;
	*len = l;
	return 0;
}

int vmdk_replace_file(const char *path, const char *text)
{
	size_t len = strlen(text), done = 0, pl = strlen(path);
	char *tmp = malloc(pl + 16), *slash;
	int fd, dfd, ret = 0;

	if (!tmp)
		return bdev_err(-ENOMEM, "%s: out of memory", path);
	snprintf(tmp, pl + 16, "%s.ovk-tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = bdev_err(-errno, "%s: cannot create %s: %s", path, tmp,
			       strerror(errno));
		goto out_free;
	}
	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = bdev_err(-errno, "%s: cannot write %s: %s", path, tmp,
				       strerror(errno));
			close(fd);
			goto out_unlink;
		}
		done += (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		ret = bdev_err(-errno, "%s: cannot sync %s: %s", path, tmp,
			       strerror(errno));
		goto out_unlink;
	}
	if (rename(tmp, path) < 0) {
		ret = bdev_err(-errno, "%s: cannot replace the descriptor: %s", path,
			       strerror(errno));
		goto out_unlink;
	}
	/* the rename is durable once the folder is */
	slash = strrchr(tmp, '/');
	if (slash)
		slash[slash == tmp ? 1 : 0] = '\0';
	dfd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	goto out_free;

out_unlink:
	unlink(tmp);
out_free:
	free(tmp);
	return ret;
}
