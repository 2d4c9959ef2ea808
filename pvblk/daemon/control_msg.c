/* SPDX-License-Identifier: Apache-2.0 */
/* control_msg.c - check one control-socket request line (untrusted bytes
   from whoever can reach the socket) and turn it into a pvblk_ctl_req. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "control.h"

static const struct {
	const char *name;
	enum pvblk_ctl_cmd cmd;
	const char *keys; /* the other members it takes, space-separated */
} commands[] = {
	{ "status", CTL_STATUS, "" },
	{ "checkpoint-create", CTL_CHECKPOINT_CREATE, "name" },
	{ "checkpoint-delete", CTL_CHECKPOINT_DELETE, "name" },
	{ "checkpoint-list", CTL_CHECKPOINT_LIST, "" },
	{ "changed", CTL_CHANGED, "since offset length" },
	{ "view-create", CTL_VIEW_CREATE, "checkpoint nbd" },
	{ "view-release", CTL_VIEW_RELEASE, "" },
	{ "grow", CTL_GROW, "size" },
	{ "export-list", CTL_EXPORT_LIST, "" },
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Whether key is one of the space-separated words of keys. */
static bool key_allowed(const char *keys, const char *key)
{
	size_t n = strlen(key);

	for (const char *p = keys; *p;) {
		const char *e = strchr(p, ' ');
		size_t wl = e ? (size_t)(e - p) : strlen(p);

		if (wl == n && !memcmp(p, key, n))
			return true;
		p += wl + (e ? 1 : 0);
	}
	return false;
}

/* A checkpoint name: 1 to 103 printable bytes, no '/' (the engine's
   limit; names end up in NBD context names and file names). */
static int check_name(const char *what, const char *s, char *err,
		      size_t errlen)
{
	size_t n = strlen(s);

	if (n < 1 || n > 103)
		return fail(err, errlen, "\"%s\" must be 1 to 103 bytes, not "
			    "%zu", what, n);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || s[i] == 0x7f || s[i] == '/')
			return fail(err, errlen, "\"%s\" may hold no spaces, "
				    "control characters or '/' (byte %zu)",
				    what, i);
	return 0;
}

static int get_string(json_t *req, const char *key, const char **out,
		      char *err, size_t errlen)
{
	json_t *v = json_object_get(req, key);

	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return fail(err, errlen, "\"%s\" must be a string", key);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return fail(err, errlen, "\"%s\" holds a NUL byte", key);
	*out = json_string_value(v);
	return 0;
}

static int get_u64(json_t *req, const char *key, uint64_t *out, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(req, key);

	*out = 0;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return fail(err, errlen, "\"%s\" must be a non-negative "
			    "integer (bytes)", key);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int pvblk_ctl_parse(const char *line, size_t len, struct pvblk_ctl_req *req,
		    void **owner, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j;

	memset(req, 0, sizeof(*req));
	*owner = NULL;
	if (len > PVBLK_CTL_MAX_LINE)
		return fail(err, errlen, "request of %zu bytes: at most %d",
			    len, PVBLK_CTL_MAX_LINE);
	j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return fail(err, errlen, "not JSON at byte %d: %s",
			    jerr.position, jerr.text);
	if (pvblk_ctl_parse_json(j, req, err, errlen) < 0) {
		json_decref(j);
		return -EINVAL;
	}
	*owner = j;
	return 0;
}

int pvblk_ctl_parse_json(json_t *j, struct pvblk_ctl_req *req, char *err,
			 size_t errlen)
{
	json_t *v;
	const char *cmd, *key, *keys = NULL;

	memset(req, 0, sizeof(*req));
	if (!json_is_object(j))
		return fail(err, errlen, "a request is a JSON object "
			    "{\"command\": NAME, ...}");
	v = json_object_get(j, "command");
	if (!json_is_string(v))
		return fail(err, errlen, "a request needs \"command\": a "
			    "string");
	cmd = json_string_value(v);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(cmd, commands[i].name)) {
			req->cmd = commands[i].cmd;
			keys = commands[i].keys;
		}
	if (!keys)
		return fail(err, errlen, "unknown command (status, "
			    "checkpoint-create, checkpoint-delete, "
			    "checkpoint-list, changed, view-create, "
			    "view-release, grow, export-list)");
	json_object_foreach(j, key, v) {
		/* "export" (which export of the daemon) goes with any */
		if (strcmp(key, "command") && strcmp(key, "export") &&
		    !key_allowed(keys, key))
			return fail(err, errlen, "%s takes no member "
				    "\"%.64s\"%s%s%s", cmd, key,
				    "; it takes: export", *keys ? " " : "",
				    keys);
	}
	if (get_string(j, "export", &req->export, err, errlen) < 0)
		return -EINVAL;
	if (req->export && strlen(req->export) > 255)
		return fail(err, errlen, "\"export\" names an export: at "
			    "most 255 bytes");
	switch (req->cmd) {
	case CTL_CHECKPOINT_CREATE:
	case CTL_CHECKPOINT_DELETE:
		if (get_string(j, "name", &req->name, err, errlen) < 0)
			return -EINVAL;
		if (!req->name)
			return fail(err, errlen, "%s needs \"name\"", cmd);
		if (check_name("name", req->name, err, errlen) < 0)
			return -EINVAL;
		break;
	case CTL_CHANGED:
		if (get_string(j, "since", &req->name, err, errlen) < 0 ||
		    get_u64(j, "offset", &req->offset, err, errlen) < 0 ||
		    get_u64(j, "length", &req->length, err, errlen) < 0)
			return -EINVAL;
		if (!req->name)
			return fail(err, errlen, "changed needs \"since\": "
				    "a checkpoint name");
		if (check_name("since", req->name, err, errlen) < 0)
			return -EINVAL;
		break;
	case CTL_VIEW_CREATE:
		if (get_string(j, "checkpoint", &req->name, err, errlen) < 0 ||
		    get_string(j, "nbd", &req->nbd, err, errlen) < 0)
			return -EINVAL;
		if (req->name &&
		    check_name("checkpoint", req->name, err, errlen) < 0)
			return -EINVAL;
		if (req->nbd && (strncmp(req->nbd, "unix:", 5) ||
				 strlen(req->nbd) < 6 ||
				 strlen(req->nbd) > 5 + 107))
			return fail(err, errlen, "\"nbd\" must be unix:PATH "
				    "(a path of 1 to 107 bytes)");
		break;
	case CTL_GROW:
		if (get_u64(j, "size", &req->size, err, errlen) < 0)
			return -EINVAL;
		if (!req->size)
			return fail(err, errlen, "grow needs \"size\": the "
				    "new size in bytes");
		break;
	default:
		break;
	}
	return 0;
}

void pvblk_ctl_free(void *owner)
{
	json_decref(owner);
}
