/* SPDX-License-Identifier: Apache-2.0 */
/*
 * control.h - pvblk's JSON control socket (--api-socket PATH).
 *
 * One request per line, one reply per line, as ovkvm's socket does:
 *   {"command": "checkpoint-create", "name": "b1"}
 *   {"return": {...}}   or   {"error": "a sentence saying what is wrong"}
 * control_msg.c turns a request (untrusted bytes) into a checked struct
 * pvblk_ctl_req; control.c runs it on the export: the socket itself is
 * common/ctlsock's, checkpoints, changed and views common/liveops'.
 */
#ifndef OVK_PVBLK_CONTROL_H
#define OVK_PVBLK_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ctlsock.h"
#include "pvblk.h"

/* The longest request line; a longer one gets an error and a hang-up. */
#define PVBLK_CTL_MAX_LINE CTLSOCK_MAX_LINE

enum pvblk_ctl_cmd {
	CTL_STATUS,
	CTL_CHECKPOINT_CREATE,
	CTL_CHECKPOINT_DELETE,
	CTL_CHECKPOINT_LIST,
	CTL_CHANGED,
	CTL_VIEW_CREATE,
	CTL_VIEW_RELEASE,
	CTL_GROW,
	CTL_EXPORT_LIST,
};

/* A checked request: strings point into the parsed JSON (see
   pvblk_ctl_parse) and hold no control characters. */
struct pvblk_ctl_req {
	enum pvblk_ctl_cmd cmd;
	const char *export; /* any command: the export it is about (its
			       name), or NULL for the daemon's first */
	const char *name;   /* checkpoint-create/delete; changed: "since";
			       view-create: the checkpoint to start, or NULL */
	const char *nbd;    /* view-create: unix:PATH to export the view on */
	uint64_t offset, length; /* changed: the range (length 0 = to end) */
	uint64_t size;      /* grow */
};

/*
 * Parse one request line (len bytes, need not be NUL-terminated). On
 * success returns 0, fills *req and sets *owner to the JSON object the
 * strings point into (json_decref it when done). On failure returns
 * -EINVAL and writes a sentence into err.
 */
int pvblk_ctl_parse(const char *line, size_t len, struct pvblk_ctl_req *req,
		    void **owner, char *err, size_t errlen);
/* The same for a request already parsed as JSON (any value); the strings
   in *req point into j. */
int pvblk_ctl_parse_json(json_t *j, struct pvblk_ctl_req *req, char *err,
			 size_t errlen);
/* Drop what pvblk_ctl_parse returned in *owner. */
void pvblk_ctl_free(void *owner);

/* The running control socket. */
struct pvblk_ctl;

/*
 * Listen on path and serve requests on a thread of its own against the
 * exports e[0..ne) (a request's "export" picks one by name; e[0] when it
 * names none), whose NBD/vhost-user listeners are listen[0..nlisten).
 * -errno with a message on stderr when the socket cannot be made.
 */
int pvblk_ctl_start(const char *path, struct pvblk_export *e, unsigned ne,
		    struct pvblk_listen *listen, unsigned nlisten,
		    struct pvblk_ctl **out);
/* Stop the thread, close every client, remove the socket, close a view
   still open (its child stays in the chain). */
void pvblk_ctl_stop(struct pvblk_ctl *c);

#endif /* OVK_PVBLK_CONTROL_H */
