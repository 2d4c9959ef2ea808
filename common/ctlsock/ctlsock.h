/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ctlsock.h - a JSON-lines control socket: a Unix stream socket where each
 * request is one JSON value on one line and each reply one JSON object on
 * one line ({"return": {...}} or {"error": "a sentence"}).  pvblk's and
 * ovkvm's --api-socket are both served by it.
 *
 * One thread polls the listening socket and its clients and hands each
 * parsed request to the caller's handler, one at a time, so a handler
 * never runs twice at once.  Lines longer than CTLSOCK_MAX_LINE bytes get
 * an error and a hang-up; more than CTLSOCK_MAX_CLIENTS clients at once
 * are closed as they come; a line that is not JSON gets an error without
 * reaching the handler.
 */
#ifndef OVK_CTLSOCK_H
#define OVK_CTLSOCK_H

#include <jansson.h>

/* The longest request line; a longer one gets an error and a hang-up. */
#define CTLSOCK_MAX_LINE 4096
/* Clients connected at once; one more is refused (closed at once). */
#define CTLSOCK_MAX_CLIENTS 8

struct ctlsock_ops {
	/* Answer one request (any JSON value: check that it is an object).
	   Returns the reply object, which the socket sends and drops; NULL
	   hangs up on the client. Runs on the socket's thread. */
	json_t *(*handle)(void *opaque, json_t *req);
};

struct ctlsock;

/*
 * Listen on path (a socket left there by a program that is gone is
 * replaced; one that still answers is not: -EADDRINUSE) and serve it on a
 * thread of its own.  what names the socket in messages on stderr
 * ("pvblk: --api-socket"). 0, or -errno with a message on stderr.
 */
int ctlsock_start(const char *path, const char *what,
		  const struct ctlsock_ops *ops, void *opaque,
		  struct ctlsock **out);
/* Stop the thread, close every client and remove the socket. NULL is a
   no-op. */
void ctlsock_stop(struct ctlsock *s);

/* {"error": MESSAGE} with MESSAGE formatted as printf does. */
json_t *ctlsock_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
/* {"return": ret}; ret (its reference is taken) NULL means {}. */
json_t *ctlsock_ok(json_t *ret);

#endif /* OVK_CTLSOCK_H */
