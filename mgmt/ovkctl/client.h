/* SPDX-License-Identifier: Apache-2.0 */
/*
 * client.h - ovkctl's way to ovkd: HTTP (libcurl) over ovkd's unix socket
 * or HTTPS to --url, Basic credentials, JSON bodies (jansson).
 */
#ifndef OVK_CTL_CLIENT_H
#define OVK_CTL_CLIENT_H

#include <stdbool.h>
#include <jansson.h>

struct ctl_client {
	const char *socket; /* ovkd's unix socket, or NULL with url */
	const char *url;    /* https://HOST:PORT, or NULL for the socket */
	const char *cacert; /* CA file for url */
	char user[128];
	char pass[256];
	const char *cred_from; /* where the credentials came from */
	void *curl;            /* CURL * */
};

/* Set up libcurl for c (socket or url already filled in). */
int ctl_open(struct ctl_client *c);
void ctl_close(struct ctl_client *c);

/* One request: METHOD path (under the base URL) with body (may be NULL;
   not consumed). On an HTTP answer returns 0 with *status and *reply (the
   JSON document, or NULL for an empty body); a failure of the transport
   is reported on stderr, naming the URL, and returns -EIO. */
int ctl_request(struct ctl_client *c, const char *method, const char *path,
		json_t *body, long *status, json_t **reply);

/* Like ctl_request, but any status other than want is reported on stderr
   with the URL, the status and the Redfish error message, and returns
   -EIO. */
int ctl_expect(struct ctl_client *c, const char *method, const char *path,
	       json_t *body, long want, json_t **reply);

/* The full URL of path, for messages. */
const char *ctl_url(const struct ctl_client *c, const char *path);

#endif /* OVK_CTL_CLIENT_H */
