/* SPDX-License-Identifier: Apache-2.0 */
/* The JSON control socket (--api-socket PATH): a Unix stream socket where
 * each request is one JSON object on one line, {"command": NAME}, and each
 * reply one line, {"return": {...}} or {"error": MESSAGE}.  Commands:
 * status, pause, resume, disk-grow, shutdown (a hard stop: ovkvm exits 0),
 * and per disk ("disk": INDEX, default 0) the live-disk operations pvblk
 * answers too: checkpoint-create/delete/list, changed, view-create,
 * view-release (common/liveops).  Served by common/ctlsock on a thread of
 * its own; parsing is jansson's. */
#ifndef OVKVM_CONTROL_H
#define OVKVM_CONTROL_H

#include <pthread.h>
#include <stdbool.h>

#include "liveops.h"

#define VM_CONTROL_MAX_DISKS 8

struct vm;
struct ctlsock;

struct control {
	struct ctlsock *sock;
	struct vm *vm;
	/* per disk, set up at its first live-disk operation */
	struct liveops live[VM_CONTROL_MAX_DISKS];
	bool live_ready[VM_CONTROL_MAX_DISKS];
};

/* Listen on `path` (a stale socket there is replaced) and serve vm, whose
 * disks must be made already; -errno with a message on stderr. */
int control_open(struct control *c, const char *path, struct vm *vm);
/* Stop serving (before the disks go) and remove the socket. */
void control_close(struct control *c);

#endif
