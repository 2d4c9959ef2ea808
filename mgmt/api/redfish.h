/* SPDX-License-Identifier: Apache-2.0 */
/*
 * redfish.h - ovkd's Redfish resources. The HTTP layer (ovkd/http.c) hands
 * each request here as method, path and body; this file answers with a
 * status and a JSON document, under the daemon's one lock.
 *
 * Resources (DMTF Redfish; a VM is a ComputerSystem with SystemType
 * "Virtual"):
 *   GET    /redfish                       {"v1": "/redfish/v1/"}
 *   GET    /redfish/v1/                   ServiceRoot (no credentials)
 *   GET    /redfish/v1/Systems            the VMs
 *   POST   /redfish/v1/Systems            deploy an OVF/OVA: {"Name"?,
 *          "Oem": {"Ovk": {"Package": PATH, "Start"?: bool,
 *          "AllowUnverified"?: bool, "Kernel"?, "Initrd"?, "Cmdline"?}}}
 *   GET    /redfish/v1/Systems/ID         ComputerSystem
 *   PATCH  /redfish/v1/Systems/ID         {"Name": ...}
 *   DELETE /redfish/v1/Systems/ID         remove a VM that is off (and the
 *                                         disks deploy imported)
 *   POST   /redfish/v1/Systems/ID/Actions/ComputerSystem.Reset
 *          {"ResetType": On|ForceOff|GracefulShutdown|ForceRestart|
 *           Pause|Resume}
 *   POST   /redfish/v1/Systems/ID/Actions/Oem/OvkComputerSystem.Export
 *          {"Path": OUT.ova or OUT_DIR}: write the VM (off) as a package
 *   GET    /redfish/v1/Systems/ID/SimpleStorage[/1]   the VM's disks; a
 *          running disk's server counters as Devices[i].Oem.Ovk.IO
 *          {"requests","read_bytes","written_bytes","errors"} when its
 *          server reports them (status on pvblk's or ovkvm's control
 *          socket)
 *   POST   /redfish/v1/Systems/ID/Actions/Oem/OvkComputerSystem.Backup
 *          {"TargetDirectory": ABS_DIR, "BackupType"?: Auto|Full|
 *           Incremental}: a Task backing up every disk of the running VM
 *          into ABS_DIR/diskN with ovkdisk (202 Accepted, Location: the
 *          task)
 *   POST   /redfish/v1/Systems/ID/Actions/Oem/OvkComputerSystem.Checkpoint
 *          {"Name"?: NAME}: a Task making checkpoint NAME on every disk
 *   GET    /redfish/v1/TaskService[/Tasks[/N]]   the tasks (tasks.h)
 *   GET    /redfish/v1/EventService              server-sent events at
 *          /redfish/v1/EventService/SSE (streamed by ovkd/main.c)
 * POST /redfish/v1/Systems answers 202 with a task too when asked so
 * (RF_ASYNC: "Prefer: respond-async", or Oem.Ovk.Async true).
 */
#ifndef OVK_MGMT_REDFISH_H
#define OVK_MGMT_REDFISH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "inventory.h"
#include "provider.h"

struct mgmt {
	struct inventory *inv;
	struct provider_env env;
	/* the provider that starts a VM (mgmt_provider) */
	const struct provider_ops *provider;
	bool provider_auto; /* chosen by --provider auto */
	const char *storage_dir;
	const char *ovf_tool; /* the ovf program, for exports */
	const char *ovkdisk_tool; /* the ovkdisk program, for backups */
	pthread_mutex_t *lock;   /* the daemon's one lock: rf_handle runs
				    under it, tasks take it when they touch
				    the inventory */
	char uuid[37];
};

struct rf_reply {
	unsigned status;   /* HTTP status */
	char *body;        /* malloc'd JSON, or NULL (204) */
	char location[512];/* Location header for 201, or "" */
	char allow[64];    /* Allow header for 405, or "" */
};

/* The provider that runs vm, or would start it: the one recorded in it
   while it is on, else m->provider; under --provider auto, a VM without
   a kernel to boot starts on QEMU (ovkvm has no firmware). */
const struct provider_ops *mgmt_provider(const struct mgmt *m,
					 const struct vm *vm);

/* rf_handle's flags */
#define RF_ASYNC 1u /* the client prefers 202 and a task (Prefer:
		       respond-async) */

/* Answer one request; body may be NULL. Called with m->lock held, unless
   rf_lock_free(path). */
void rf_handle(struct mgmt *m, const char *method, const char *path,
	       const char *body, size_t body_len, unsigned flags,
	       struct rf_reply *out);

/* An event (ResourceEvent.1.0.ResourceChanged) for each VM whose power
   state differs from the one its last event told, whoever changed it: an
   action (called as the action ends, so an Off and On in quick succession
   are two events each) or the monitor (a guest that powered off, a VMM
   that crashed). Called with m->lock held. */
void rf_power_events(struct mgmt *m);

/* Whether path is answered without the inventory (TaskService,
   EventService): then rf_handle is called without m->lock, so a task is
   watched while a job holds the lock. */
bool rf_lock_free(const char *path);

#endif /* OVK_MGMT_REDFISH_H */
