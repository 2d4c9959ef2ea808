/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_ovkd_actions.c - what a client may send to ovkd's Backup and
 * Checkpoint actions, and as a task id, through rf_handle. The first byte
 * picks the request (0: POST Backup, 1: POST Checkpoint, 2: GET
 * TaskService/Tasks/REST), the rest is its body (or the id). The inventory
 * holds one VM, powered off, and no task runs: every answer must be a
 * Redfish error document (400, 404 or 409), never a task and never a 5xx.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "redfish.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mgmt m;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char state[64], run_dir[128], record[128], vms[128];

static void cleanup(void)
{
	inv_close(m.inv);
	unlink(record);
	rmdir(vms);
	rmdir(state);
}

static void setup(void)
{
	static const char vm[] = "{\"id\": \"web-1\", \"name\": \"web-1\", "
				 "\"disks\": [{\"path\": \"/nonexistent/"
				 "d.vmdk\"}], \"power\": \"Off\"}\n";
	FILE *f;

	snprintf(state, sizeof(state), "/tmp/fuzz_ovkd.XXXXXX");
	if (!mkdtemp(state))
		abort();
	snprintf(vms, sizeof(vms), "%s/vms", state);
	snprintf(record, sizeof(record), "%s/web-1.json", vms);
	snprintf(run_dir, sizeof(run_dir), "%s/run", state);
	if (mkdir(vms, 0700) < 0 || !(f = fopen(record, "w")))
		abort();
	fputs(vm, f);
	fclose(f);
	if (inv_open(state, &m.inv) < 0 || !inv_find(m.inv, "web-1"))
		abort();
	m.provider = &provider_qemu;
	m.env.run_dir = run_dir;
	m.env.pvblk = "/nonexistent/pvblk";
	m.env.qemu = "/nonexistent/qemu";
	m.storage_dir = state;
	m.ovkdisk_tool = "/nonexistent/ovkdisk";
	m.lock = &lock;
	atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const paths[] = {
		"/redfish/v1/Systems/web-1/Actions/Oem/OvkComputerSystem.Backup",
		"/redfish/v1/Systems/web-1/Actions/Oem/"
		"OvkComputerSystem.Checkpoint",
	};
	struct rf_reply r;
	char path[600];
	json_t *doc;

	if (!m.inv)
		setup();
	if (size < 1 || data[0] > 2)
		return 0;
	if (data[0] == 2) {
		size_t n = strnlen((const char *)data + 1, size - 1);

		if (!n || (n == 1 && data[1] == '/'))
			return 0; /* the collection itself: a 200 */

		snprintf(path, sizeof(path), "/redfish/v1/TaskService/Tasks/"
			 "%.*s", (int)(n > 500 ? 500 : n), data + 1);
		rf_handle(&m, "GET", path, NULL, 0, 0, &r);
	} else {
		rf_handle(&m, "POST", paths[data[0]], (const char *)data + 1,
			  size - 1, 0, &r);
	}
	if (r.status != 400 && r.status != 404 && r.status != 409)
		abort();
	doc = r.body ? json_loads(r.body, 0, NULL) : NULL;
	if (!json_string_value(json_object_get(json_object_get(doc, "error"),
					       "message")))
		abort();
	json_decref(doc);
	free(r.body);
	return 0;
}
