/* SPDX-License-Identifier: Apache-2.0 */
/* The JSON control socket (--api-socket PATH): a Unix stream socket where
 * each request is one JSON object on one line, {"command": NAME}, and each
 * reply one line, {"return": {...}} or {"error": MESSAGE}.  Commands:
 * status, pause, resume, shutdown (a hard stop: ovkvm exits 0).  Served by
 * the main thread's poll loop; parsing is jansson's. */
#ifndef OVKVM_CONTROL_H
#define OVKVM_CONTROL_H

#include <poll.h>
#include <stddef.h>

#define CONTROL_MAX_CLIENTS 4
#define CONTROL_LINE_MAX 4096

struct vm;

struct control_client {
	int fd;
	size_t len;
	char buf[CONTROL_LINE_MAX];
};

struct control {
	int listen_fd;
	char *path;
	struct control_client clients[CONTROL_MAX_CLIENTS];
};

#define CONTROL_MAX_POLLFDS (1 + CONTROL_MAX_CLIENTS)

/* Listen on `path` (a stale socket there is replaced); -errno with a
 * message on stderr on failure. */
int control_open(struct control *c, const char *path);
void control_close(struct control *c);

int control_pollfds(struct control *c, struct pollfd *pfd);
void control_handle(struct control *c, struct vm *vm, const struct pollfd *pfd,
		    int n);

#endif
