/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jobs.h - what ovkd's tasks do: back up a running VM's disks (ovkdisk
 * backup on each disk's live-disk control socket), take a named
 * checkpoint of them, deploy a package. Each starter is called with the
 * inventory lock held, checks what it can at once (a running VM, no other
 * task on it), copies what the job needs and starts a task (tasks.h);
 * the job takes the lock again only for the moments it touches the
 * inventory.
 */
#ifndef OVK_MGMT_JOBS_H
#define OVK_MGMT_JOBS_H

#include <jansson.h>
#include <stddef.h>

#include "deploy.h"
#include "redfish.h"

enum backup_kind { BACKUP_AUTO, BACKUP_FULL, BACKUP_INCREMENTAL };

/* Back up every disk of vm into DIR/diskN (made when missing; dir is an
   absolute, checked path) with ovkdisk. -ENOENT: vm is off; -EBUSY:
   another task runs on vm; -EAGAIN: too many tasks. */
int job_backup(struct mgmt *m, struct vm *vm, const char *dir,
	       enum backup_kind kind, unsigned *task, char *err,
	       size_t errlen);

/* Create checkpoint name (checked: letters, digits, . _ -) on every disk
   of vm. Errors as job_backup's. */
int job_checkpoint(struct mgmt *m, struct vm *vm, const char *name,
		   unsigned *task, char *err, size_t errlen);

/* Deploy (deploy.h) on a task: o's strings stay valid as long as req
   (the request's body, a reference taken here) does. start: power it on
   after. */
int job_deploy(struct mgmt *m, json_t *req, const struct deploy_opts *o,
	       bool start, unsigned *task, char *err, size_t errlen);

#endif /* OVK_MGMT_JOBS_H */
