/* SPDX-License-Identifier: Apache-2.0 */
/*
 * listen.h - where ovkd listens: a unix socket (the default, for local
 * tools such as ovkctl) and optionally TCP (HTTPS, or plain HTTP on
 * loopback only). Each returns 0 or -errno and writes a sentence naming
 * the address and the cause into err.
 */
#ifndef OVK_MGMT_LISTEN_H
#define OVK_MGMT_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>

/* Bind and listen on a unix socket at path, mode 0660. A socket file left
   by an ovkd that is gone is replaced; one that answers is refused, and so
   is a path that is not a socket. Returns the listening fd or -errno. */
int listen_unix(const char *path, char *err, size_t errlen);

/* Parse IPV4:PORT. */
int listen_parse_tcp(const char *s, struct sockaddr_in *a);

/* True for 127.0.0.0/8. */
bool listen_is_loopback(const struct sockaddr_in *a);

/* The whole of a small file (a PEM certificate or key) as a string, in
   *out (malloc'd). */
int listen_read_pem(const char *path, char **out, char *err, size_t errlen);

#endif /* OVK_MGMT_LISTEN_H */
