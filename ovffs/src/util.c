/* SPDX-License-Identifier: Apache-2.0 */
/* util.c - libovf's error message, findings lists and text helpers. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ovf_i.h"

static _Thread_local char ovf_errbuf[512];

/* Records the message for this thread and hands err back unchanged. */
int ovf_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ovf_errbuf, sizeof(ovf_errbuf), fmt, ap);
	va_end(ap);
	return err;
}

/* Forgets this thread's message. */
void ovf_err_clear(void)
{
	ovf_errbuf[0] = '\0';
}

/* The message of the last failing call on this thread, "" if none. */
const char *ovf_errmsg(void)
{
	return ovf_errbuf;
}

/* Appends one finding (where and a formatted message) to l. */
void ovf_finding_add(struct ovf_finding_list *l, enum ovf_severity sev,
		     const char *where, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct ovf_finding *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return;
		l->v = v;
		l->cap = cap;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	l->v[l->n].sev = sev;
	l->v[l->n].where = strdup(where ? where : "");
	l->v[l->n].what = strdup(msg);
	if (!l->v[l->n].where || !l->v[l->n].what) {
		free(l->v[l->n].where);
		free(l->v[l->n].what);
		return;
	}
	l->n++;
}

/* How many findings of l are errors. */
size_t ovf_findings_errors(const struct ovf_finding_list *l)
{
	size_t n = 0;

	for (size_t i = 0; i < l->n; i++)
		n += l->v[i].sev == OVF_SEV_ERROR;
	return n;
}

/* Frees the findings (not l itself) and leaves l empty. */
void ovf_findings_free(struct ovf_finding_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].where);
		free(l->v[i].what);
	}
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* strdup that passes NULL through. */
char *ovf_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* A malloc'd formatted string, NULL on out of memory. */
char *ovf_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : s;
}

/* Appends n bytes of s, keeping the buffer NUL-terminated. */
void ovf_buf_add(struct ovf_buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* Appends formatted text. */
void ovf_buf_printf(struct ovf_buf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0) {
		b->oom = true;
		return;
	}
	ovf_buf_add(b, s, (size_t)r);
	free(s);
}

/* Appends s as a JSON string literal, or null when s is NULL. */
void ovf_buf_json_str(struct ovf_buf *b, const char *s)
{
	if (!s) {
		ovf_buf_add(b, "null", 4);
		return;
	}
	ovf_buf_add(b, "\"", 1);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		char esc[8];

		if (*c == '"' || *c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*c;
			ovf_buf_add(b, esc, 2);
		} else if (*c == '\n') {
			ovf_buf_add(b, "\\n", 2);
		} else if (*c == '\t') {
			ovf_buf_add(b, "\\t", 2);
		} else if (*c < 0x20 || *c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", *c);
			ovf_buf_add(b, esc, 6);
		} else {
			ovf_buf_add(b, (const char *)c, 1);
		}
	}
	ovf_buf_add(b, "\"", 1);
}

/* Hands over the text (or NULL after an allocation failure). */
char *ovf_buf_take(struct ovf_buf *b)
{
	char *p = b->p;

	if (b->oom) {
		free(p);
		p = NULL;
	} else if (!p) {
		p = strdup("");
	}
	b->p = NULL;
	b->len = b->cap = 0;
	return p;
}

/* Parses a whole decimal uint64 (surrounding spaces allowed). */
bool ovf_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	bool any = false;

	if (!s)
		return false;
	while (isspace((unsigned char)*s))
		s++;
	if (*s == '+')
		s++;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
		any = true;
	}
	while (isspace((unsigned char)*s))
		s++;
	if (!any || *s)
		return false;
	*out = v;
	return true;
}

/* True when name is relative, non-empty, without "..", NUL-free. */
bool ovf_name_is_safe(const char *name)
{
	const char *c = name;

	if (!name || !*name || name[0] == '/')
		return false;
	while (*c) {
		const char *e = strchr(c, '/');
		size_t n = e ? (size_t)(e - c) : strlen(c);

		if (n == 2 && c[0] == '.' && c[1] == '.')
			return false;
		if (!e)
			break;
		c = e + 1;
	}
	return true;
}

/* Frees a vector of n strings. */
void ovf_strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n && v; i++)
		free(v[i]);
	free(v);
}
