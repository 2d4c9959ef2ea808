/* SPDX-License-Identifier: Apache-2.0 */
/* client.c - ovkctl's HTTP client for ovkd (see client.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include "client.h"

#define MAX_REPLY (16u << 20)

struct buf {
	char *data;
	size_t len;
	bool too_big;
};

static size_t on_data(char *ptr, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;
	size_t add = size * n;
	char *p;

	if (b->len + add > MAX_REPLY) {
		b->too_big = true;
		return 0;
	}
	p = realloc(b->data, b->len + add + 1);
	if (!p)
		return 0;
	memcpy(p + b->len, ptr, add);
	b->data = p;
	b->len += add;
	b->data[b->len] = '\0';
	return add;
}

const char *ctl_url(const struct ctl_client *c, const char *path)
{
	static char url[4096];

	if (c->url)
		snprintf(url, sizeof(url), "%s%s", c->url, path);
	else
		snprintf(url, sizeof(url), "http://localhost%s", path);
	return url;
}

/* The URL as a person should read it in a message: with the socket. */
static void where(const struct ctl_client *c, const char *path, char *out,
		  size_t len)
{
	if (c->url)
		snprintf(out, len, "%s", ctl_url(c, path));
	else
		snprintf(out, len, "%s (socket %s)", path, c->socket);
}

int ctl_open(struct ctl_client *c)
{
	CURL *h;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "ovkctl: libcurl did not initialise\n");
		return -EIO;
	}
	h = curl_easy_init();
	if (!h) {
		fprintf(stderr, "ovkctl: libcurl did not initialise\n");
		curl_global_cleanup();
		return -ENOMEM;
	}
	if (!c->url)
		curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket);
	if (c->cacert)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
	curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(h, CURLOPT_USERNAME, c->user);
	curl_easy_setopt(h, CURLOPT_PASSWORD, c->pass);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	c->curl = h;
	return 0;
}

void ctl_close(struct ctl_client *c)
{
	if (c->curl) {
		curl_easy_cleanup(c->curl);
		curl_global_cleanup();
		c->curl = NULL;
	}
}

int ctl_request(struct ctl_client *c, const char *method, const char *path,
		json_t *body, long *status, json_t **reply)
{
	CURL *h = c->curl;
	struct curl_slist *hdr = NULL;
	struct buf b = { 0 };
	char *text = NULL, place[4400];
	CURLcode rc;
	int ret = 0;

	*reply = NULL;
	where(c, path, place, sizeof(place));
	curl_easy_setopt(h, CURLOPT_URL, ctl_url(c, path));
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_HTTPGET, 1L); /* forget the last body */
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text)
			return -ENOMEM;
		hdr = curl_slist_append(hdr, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
	}
	hdr = curl_slist_append(hdr, "Accept: application/json");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	rc = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	curl_slist_free_all(hdr);
	free(text);
	if (rc != CURLE_OK) {
		fprintf(stderr, "ovkctl: %s %s: %s%s\n", method, place,
			b.too_big ? "the reply is over 16 MiB"
				  : curl_easy_strerror(rc),
			rc == CURLE_COULDNT_CONNECT && !c->url
				? " (is ovkd running? --socket or --state "
				  "says where)" : "");
		ret = -EIO;
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	if (b.len) {
		json_error_t je;

		*reply = json_loadb(b.data, b.len, 0, &je);
		if (!*reply) {
			fprintf(stderr, "ovkctl: %s %s: HTTP %ld with a reply "
				"that is not JSON (line %d: %s)\n", method,
				place, *status, je.line, je.text);
			ret = -EIO;
		}
	}
out:
	free(b.data);
	return ret;
}

int ctl_expect(struct ctl_client *c, const char *method, const char *path,
	       json_t *body, long want, json_t **reply)
{
	char place[4400];
	const char *msg;
	long status = 0;
	int ret = ctl_request(c, method, path, body, &status, reply);

	if (ret < 0)
		return ret;
	if (status == want)
		return 0;
	where(c, path, place, sizeof(place));
	msg = json_string_value(json_object_get(
		json_object_get(*reply, "error"), "message"));
	fprintf(stderr, "ovkctl: %s %s: HTTP %ld: %s", method, place, status,
		msg ? msg : "(no Redfish error message)");
	if (status == 401)
		fprintf(stderr, " (user %s, credentials from %s)", c->user,
			c->cred_from);
	fputc('\n', stderr);
	json_decref(*reply);
	*reply = NULL;
	return -EIO;
}
