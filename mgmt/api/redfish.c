/* SPDX-License-Identifier: Apache-2.0 */
/* redfish.c - the Redfish resources of ovkd (see redfish.h), with jansson. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "blockengine.h"
#include "deploy.h"
#include "events.h"
#include "jobs.h"
#include "redfish.h"
#include "tasks.h"
#include "util.h"

#define SYSTEMS "/redfish/v1/Systems"

static const char *const reset_types[] = {
	"On", "ForceOff", "GracefulShutdown", "ForceRestart", "Pause",
	"Resume",
};

static void reply_json(struct rf_reply *r, unsigned status, json_t *o)
{
	r->status = status;
	r->body = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
}

/* A Redfish error document: Base message registry ids for the code. */
static void reply_error(struct rf_reply *r, unsigned status,
			const char *msgid, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reply_error(struct rf_reply *r, unsigned status,
			const char *msgid, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	mgmt_json_safe(msg); /* it may quote a client's bytes */
	reply_json(r, status, json_pack(
		"{s:{s:s, s:s, s:[{s:s, s:s, s:s, s:s}]}}", "error", "code",
		msgid, "message", msg, "@Message.ExtendedInfo", "@odata.type",
		"#Message.v1_1_1.Message", "MessageId", msgid, "Message", msg,
		"Severity", status >= 500 ? "Critical" : "Warning"));
}

static json_t *odata(const char *type, const char *id_fmt, ...)
	__attribute__((format(printf, 2, 3)));

static json_t *odata(const char *type, const char *id_fmt, ...)
{
	char id[512];
	va_list ap;

	va_start(ap, id_fmt);
	vsnprintf(id, sizeof(id), id_fmt, ap);
	va_end(ap);
	return json_pack("{s:s, s:s}", "@odata.type", type, "@odata.id", id);
}

static json_t *link(const char *fmt, const char *id)
{
	char buf[512];

	snprintf(buf, sizeof(buf), fmt, id);
	return json_pack("{s:s}", "@odata.id", buf);
}

static void service_root(struct mgmt *m, struct rf_reply *r)
{
	json_t *o = odata("#ServiceRoot.v1_11_0.ServiceRoot", "/redfish/v1/");

	json_object_set_new(o, "Id", json_string("RootService"));
	json_object_set_new(o, "Name", json_string("ovk management service"));
	json_object_set_new(o, "RedfishVersion", json_string("1.15.0"));
	json_object_set_new(o, "UUID", json_string(m->uuid));
	json_object_set_new(o, "Product", json_string("ovkd (ovk)"));
	json_object_set_new(o, "Systems", json_pack("{s:s}", "@odata.id",
						    SYSTEMS));
	json_object_set_new(o, "Tasks", json_pack("{s:s}", "@odata.id",
						  "/redfish/v1/TaskService"));
	json_object_set_new(o, "EventService", json_pack(
		"{s:s}", "@odata.id", "/redfish/v1/EventService"));
	json_object_set_new(o, "Links", json_object());
	reply_json(r, 200, o);
}

static void systems(struct mgmt *m, struct rf_reply *r)
{
	json_t *o = odata("#ComputerSystemCollection.ComputerSystemCollection",
			  SYSTEMS);
	json_t *members = json_array();

	json_object_set_new(o, "Name", json_string("Virtual machines"));
	for (unsigned i = 0; i < inv_count(m->inv); i++)
		json_array_append_new(members, link(SYSTEMS "/%s",
						    inv_at(m->inv, i)->id));
	json_object_set_new(o, "Members@odata.count",
			    json_integer((json_int_t)json_array_size(members)));
	json_object_set_new(o, "Members", members);
	reply_json(r, 200, o);
}

static const char *power_state(const struct vm *vm)
{
	return vm->power == VM_ON ? "On" : vm->power == VM_PAUSED ? "Paused"
								   : "Off";
}

static bool method_is(const char *m, const char *want, struct rf_reply *r,
		      const char *allow);

/* {"target": PREFIX NAME} */
static json_t *oem_action(const char *prefix, const char *name)
{
	char t[600];

	snprintf(t, sizeof(t), "%s%s", prefix, name);
	return json_pack("{s:s}", "target", t);
}

static json_t *system_json(struct mgmt *m, const struct vm *vm)
{
	json_t *o = odata("#ComputerSystem.v1_13_0.ComputerSystem",
			  SYSTEMS "/%s", vm->id);
	json_t *actions = json_object(), *reset, *types = json_array();
	json_t *disks = json_array(), *oem;
	struct vm_stats st;
	char target[512];

	mgmt_provider(m, vm)->stats(&m->env, vm, &st);
	json_object_set_new(o, "Id", json_string(vm->id));
	json_object_set_new(o, "Name", json_string(vm->name));
	json_object_set_new(o, "SystemType", json_string("Virtual"));
	json_object_set_new(o, "PowerState", json_string(power_state(vm)));
	json_object_set_new(o, "Status", json_pack("{s:s, s:s}", "State",
		vm->power == VM_OFF ? "StandbyOffline" : "Enabled", "Health",
		vm->power != VM_OFF && st.running_disks < vm->ndisks
			? "Critical" : "OK"));
	json_object_set_new(o, "ProcessorSummary",
			    json_pack("{s:i}", "Count", (int)vm->cpus));
	json_object_set_new(o, "MemorySummary",
			    json_pack("{s:f}", "TotalSystemMemoryGiB",
				      (double)vm->memory / (1 << 30)));
	/* boots from its first disk (or the kernel it was given); no
	   override is offered yet */
	json_object_set_new(o, "Boot", json_pack(
		"{s:s, s:s, s:[s]}", "BootSourceOverrideEnabled", "Disabled",
		"BootSourceOverrideTarget", "None",
		"BootSourceOverrideTarget@Redfish.AllowableValues", "None"));
	json_object_set_new(o, "SimpleStorage",
			    link(SYSTEMS "/%s/SimpleStorage", vm->id));
	snprintf(target, sizeof(target),
		 SYSTEMS "/%s/Actions/ComputerSystem.Reset", vm->id);
	for (size_t i = 0; i < sizeof(reset_types) / sizeof(*reset_types); i++)
		json_array_append_new(types, json_string(reset_types[i]));
	reset = json_pack("{s:s, s:o}", "target", target,
			  "ResetType@Redfish.AllowableValues", types);
	json_object_set_new(actions, "#ComputerSystem.Reset", reset);
	snprintf(target, sizeof(target),
		 SYSTEMS "/%s/Actions/Oem/OvkComputerSystem.", vm->id);
	oem = json_object();
	json_object_set_new(oem, "#OvkComputerSystem.Export", oem_action(
		target, "Export"));
	json_object_set_new(oem, "#OvkComputerSystem.Backup", oem_action(
		target, "Backup"));
	json_object_set_new(json_object_get(oem, "#OvkComputerSystem.Backup"),
			    "BackupType@Redfish.AllowableValues",
			    json_pack("[s,s,s]", "Auto", "Full",
				      "Incremental"));
	json_object_set_new(oem, "#OvkComputerSystem.Checkpoint", oem_action(
		target, "Checkpoint"));
	json_object_set_new(actions, "Oem", oem);
	json_object_set_new(o, "Actions", actions);
	for (unsigned i = 0; i < vm->ndisks; i++)
		json_array_append_new(disks, json_string(vm->disks[i].path));
	oem = json_pack("{s:s, s:o, s:f, s:I, s:i, s:s}", "Provider",
			mgmt_provider(m, vm)->name, "Disks", disks, "CPUSeconds",
			st.cpu_seconds, "VMMResidentBytes",
			(json_int_t)st.rss_bytes, "DiskServersRunning",
			(int)st.running_disks, "LastEvent",
			vm->last_event ? vm->last_event : "");
	if (vm->package)
		json_object_set_new(oem, "Package", json_string(vm->package));
	if (vm->os)
		json_object_set_new(oem, "OperatingSystem", json_string(vm->os));
	if (vm->power != VM_OFF) {
		char sock[4200];

		snprintf(sock, sizeof(sock), "%s/%s/console.sock",
			 m->env.run_dir, vm->id);
		json_object_set_new(oem, "ConsoleSocket", json_string(sock));
	}
	json_object_set_new(o, "Oem", json_pack("{s:{s:s, s:o}}", "Ovk",
		"@odata.type", "#OvkComputerSystem.v1_0_0.OvkComputerSystem",
		"Details", oem));
	return o;
}

/* Disk i's I/O counters as Oem.Ovk.IO of its device d, when its server
   runs and reports them. */
static void disk_io_json(struct mgmt *m, const struct vm *vm, unsigned i,
			 json_t *d)
{
	const struct provider_ops *p = mgmt_provider(m, vm);
	struct disk_io io;

	if (vm->power == VM_OFF || !p->disk_io ||
	    p->disk_io(&m->env, vm, i, &io) < 0)
		return;
	json_object_set_new(d, "Oem", json_pack(
		"{s:{s:s, s:{s:I, s:I, s:I, s:I}}}", "Ovk", "@odata.type",
		"#OvkDrive.v1_0_0.OvkDrive", "IO", "requests",
		(json_int_t)io.requests, "read_bytes",
		(json_int_t)io.read_bytes, "written_bytes",
		(json_int_t)io.written_bytes, "errors", (json_int_t)io.errors));
}

static void simple_storage(struct mgmt *m, struct vm *vm, bool member,
			   struct rf_reply *r)
{
	json_t *o, *devs;

	if (!member) {
		o = odata("#SimpleStorageCollection.SimpleStorageCollection",
			  SYSTEMS "/%s/SimpleStorage", vm->id);
		json_object_set_new(o, "Name", json_string("Disks"));
		json_object_set_new(o, "Members@odata.count", json_integer(1));
		json_object_set_new(o, "Members", json_pack("[o]",
			link(SYSTEMS "/%s/SimpleStorage/1", vm->id)));
		reply_json(r, 200, o);
		return;
	}
	devs = json_array();
	for (unsigned i = 0; i < vm->ndisks; i++) {
		struct bdev_open_opts oo = { .flags = BDEV_O_SHARE };
		struct bdev_info in = { 0 };
		struct bdev *b;
		json_t *d = json_pack("{s:s, s:s}", "Name", vm->disks[i].path,
				      "Model", "virtio-blk (vhost-user)");

		if (bdev_open(vm->disks[i].path, &oo, &b) == 0) {
			bdev_get_info(b, &in);
			json_object_set_new(d, "CapacityBytes",
					    json_integer((json_int_t)in.size));
			json_object_set_new(d, "Status", json_pack(
				"{s:s, s:s}", "State", "Enabled", "Health", "OK"));
			bdev_close(b);
		} else {
			json_object_set_new(d, "Status", json_pack(
				"{s:s, s:s}", "State", "Absent", "Health",
				"Critical"));
		}
		disk_io_json(m, vm, i, d);
		json_array_append_new(devs, d);
	}
	o = odata("#SimpleStorage.v1_3_0.SimpleStorage",
		  SYSTEMS "/%s/SimpleStorage/1", vm->id);
	json_object_set_new(o, "Id", json_string("1"));
	json_object_set_new(o, "Name", json_string("virtio-blk disks"));
	json_object_set_new(o, "Devices", devs);
	reply_json(r, 200, o);
}

static json_t *parse_body(const char *body, size_t len, struct rf_reply *r)
{
	json_error_t e;
	json_t *o;

	if (!body || !len) {
		reply_error(r, 400, "Base.1.8.MalformedJSON",
			    "the request has no JSON body");
		return NULL;
	}
	o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
	if (!o || !json_is_object(o)) {
		reply_error(r, 400, "Base.1.8.MalformedJSON",
			    "the body is not a JSON object: %s at line %d "
			    "column %d", o ? "not an object" : e.text, e.line,
			    e.column);
		json_decref(o);
		return NULL;
	}
	return o;
}

static int status_of(int ret)
{
	return ret == -EINVAL || ret == -EALREADY ? 409
	       : ret == -ENOENT		       ? 404
	       : ret == -EBADMSG || ret == -ENOTSUP ? 400
						       : 500;
}

const struct provider_ops *mgmt_provider(const struct mgmt *m,
					 const struct vm *vm)
{
	const struct provider_ops *p = provider_by_name(vm->provider);

	/* a VM that runs stays with the provider that started it */
	if (vm->power != VM_OFF && p)
		return p;
	if (m->provider_auto && m->provider == &provider_ovkvm && !vm->kernel)
		return &provider_qemu;
	return m->provider;
}

void rf_power_events(struct mgmt *m)
{
	for (unsigned i = 0; i < inv_count(m->inv); i++) {
		struct vm *vm = inv_at(m->inv, i);
		char uri[300];

		if (vm->power == vm->power_told)
			continue;
		vm->power_told = vm->power;
		snprintf(uri, sizeof(uri), SYSTEMS "/%s", vm->id);
		events_publish("ResourceEvent.1.0.ResourceChanged", "OK", uri,
			       json_pack("[]"), json_pack(
			       "{s:s, s:s, s:s}", "System", vm->id,
			       "PowerState", vm_power_name(vm->power),
			       "Reason", vm->last_event ? vm->last_event : ""),
			       "The power state of %s is now %s.", vm->id,
			       vm_power_name(vm->power));
	}
}

static void reset(struct mgmt *m, struct vm *vm, const char *body,
		  size_t len, struct rf_reply *r)
{
	json_t *o = parse_body(body, len, r);
	const struct provider_ops *p = mgmt_provider(m, vm);
	const char *t;
	char err[1024] = "";
	int ret;

	if (!o)
		return;
	t = json_string_value(json_object_get(o, "ResetType"));
	if (!t) {
		json_decref(o);
		reply_error(r, 400, "Base.1.8.PropertyMissing",
			    "ResetType is missing: one of On, ForceOff, "
			    "GracefulShutdown, ForceRestart, Pause, Resume");
		return;
	}
	if (!strcmp(t, "On"))
		ret = p->start(&m->env, vm, err, sizeof(err));
	else if (!strcmp(t, "ForceOff"))
		ret = p->force_off(&m->env, vm, err, sizeof(err));
	else if (!strcmp(t, "GracefulShutdown"))
		ret = p->shutdown(&m->env, vm, err, sizeof(err));
	else if (!strcmp(t, "ForceRestart"))
		ret = p->reset(&m->env, vm, err, sizeof(err));
	else if (!strcmp(t, "Pause"))
		ret = p->pause(&m->env, vm, err, sizeof(err));
	else if (!strcmp(t, "Resume"))
		ret = p->resume(&m->env, vm, err, sizeof(err));
	else {
		reply_error(r, 400, "Base.1.8.ActionParameterValueNotInList",
			    "ResetType %s is not one of On, ForceOff, "
			    "GracefulShutdown, ForceRestart, Pause, Resume", t);
		json_decref(o);
		return;
	}
	free(vm->last_event);
	if (ret < 0) {
		if (asprintf(&vm->last_event, "%s failed: %s", t, err) < 0)
			vm->last_event = NULL;
		reply_error(r, status_of(ret), "Base.1.8.GeneralError", "%s",
			    err);
	} else {
		if (asprintf(&vm->last_event, "%s", t) < 0)
			vm->last_event = NULL;
		r->status = 204;
	}
	/* a refused action changed nothing worth two fsyncs under the lock
	   (the failure is still told in LastEvent until the next save) */
	if (ret == 0 || vm->power != vm->power_told)
		inv_save(m->inv, vm);
	rf_power_events(m);
	json_decref(o);
}

/* 202 Accepted with the task as body and Location. */
static void reply_task(struct rf_reply *r, unsigned id)
{
	char sid[16];

	snprintf(sid, sizeof(sid), "%u", id);
	snprintf(r->location, sizeof(r->location), TASKS_URI "/%u", id);
	reply_json(r, 202, tasks_task_json(sid));
}

/* A job that could not start: the VM off or busy, too many tasks. */
static void reply_job_error(struct rf_reply *r, int ret, const char *err)
{
	if (ret == -EBUSY)
		reply_error(r, 409, "Base.1.8.ResourceInUse", "%s", err);
	else if (ret == -ENOENT)
		reply_error(r, 409, "Base.1.8.ActionNotSupported", "%s", err);
	else if (ret == -EAGAIN)
		reply_error(r, 503, "Base.1.8.ServiceTemporarilyUnavailable",
			    "%s", err);
	else
		reply_error(r, status_of(ret), "Base.1.8.GeneralError", "%s",
			    err);
}

static void deploy(struct mgmt *m, const char *body, size_t len,
		   unsigned flags, struct rf_reply *r)
{
	json_t *o = parse_body(body, len, r), *ovk;
	struct deploy_opts d = { 0 };
	char err[1024] = "";
	struct vm *vm;
	int ret;

	if (!o)
		return;
	ovk = json_object_get(json_object_get(o, "Oem"), "Ovk");
	d.package = json_string_value(json_object_get(ovk, "Package"));
	if (!d.package) {
		json_decref(o);
		reply_error(r, 400, "Base.1.8.PropertyMissing",
			    "Oem.Ovk.Package is missing: the path of the OVA "
			    "file, .ovf file or folder to deploy");
		return;
	}
	d.name = json_string_value(json_object_get(o, "Name"));
	d.allow_unverified = json_is_true(json_object_get(ovk,
							  "AllowUnverified"));
	d.kernel = json_string_value(json_object_get(ovk, "Kernel"));
	d.initrd = json_string_value(json_object_get(ovk, "Initrd"));
	d.cmdline = json_string_value(json_object_get(ovk, "Cmdline"));
	/* refused before anything is made: the VM could never start here */
	if (json_is_true(json_object_get(ovk, "Start")) && !d.kernel &&
	    m->provider == &provider_ovkvm && !m->provider_auto) {
		json_decref(o);
		reply_error(r, 400, "Base.1.8.ActionNotSupported",
			    "ovkd runs VMs on ovkvm (--provider ovkvm), which "
			    "has no firmware and boots a Linux bzImage "
			    "directly: give Oem.Ovk.Kernel (and Initrd, "
			    "Cmdline) to deploy and start this package");
		return;
	}
	if ((flags & RF_ASYNC) || json_is_true(json_object_get(ovk, "Async"))) {
		unsigned id;

		ret = job_deploy(m, o, &d, json_is_true(json_object_get(
					 ovk, "Start")), &id, err,
				 sizeof(err));
		if (ret < 0)
			reply_job_error(r, ret, err);
		else
			reply_task(r, id);
		json_decref(o);
		return;
	}
	ret = deploy_package(m->inv, m->storage_dir, &d, &vm, err,
			     sizeof(err));
	if (ret < 0) {
		reply_error(r, status_of(ret), "Base.1.8.GeneralError", "%s",
			    err);
		json_decref(o);
		return;
	}
	if (json_is_true(json_object_get(ovk, "Start"))) {
		ret = mgmt_provider(m, vm)->start(&m->env, vm, err,
						  sizeof(err));
		free(vm->last_event);
		if (asprintf(&vm->last_event, ret < 0 ? "start failed: %s"
						      : "On%s", err) < 0)
			vm->last_event = NULL;
		inv_save(m->inv, vm);
		rf_power_events(m);
	}
	snprintf(r->location, sizeof(r->location), SYSTEMS "/%s", vm->id);
	reply_json(r, 201, system_json(m, vm));
	json_decref(o);
}

static void export(struct mgmt *m, struct vm *vm, const char *body,
		   size_t len, struct rf_reply *r)
{
	json_t *o = parse_body(body, len, r);
	const char *out;
	char err[1024] = "";
	int ret;

	if (!o)
		return;
	out = json_string_value(json_object_get(o, "Path"));
	if (!out || out[0] != '/') {
		reply_error(r, 400, "Base.1.8.PropertyMissing",
			    "Path is missing: the absolute path of the OVA "
			    "file or folder to write");
	} else {
		ret = export_vm(m->ovf_tool, vm, out, err, sizeof(err));
		if (ret < 0)
			reply_error(r, ret == -EBUSY ? 409 : 500,
				    "Base.1.8.GeneralError", "%s", err);
		else
			r->status = 204;
	}
	json_decref(o);
}

/* Whether o holds only the keys in allowed (NULL-terminated); else a 400
   naming the first other one. */
static bool only_keys(json_t *o, const char *const *allowed, const char *act,
		      struct rf_reply *r)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v) {
		bool ok = false;

		for (const char *const *a = allowed; *a; a++)
			ok |= !strcmp(k, *a);
		if (!ok) {
			reply_error(r, 400, "Base.1.8.ActionParameterUnknown",
				    "%s has no parameter %s", act, k);
			return false;
		}
	}
	return true;
}

/* A backup folder: absolute, no "." or ".." component, under a folder
   that exists, itself a folder when it exists. NULL when good, else why
   not. */
static const char *check_target_dir(const char *dir)
{
	char parent[4096];
	const char *p;
	struct stat st;
	size_t n = strlen(dir);

	if (dir[0] != '/')
		return "it is not an absolute path";
	if (n >= 3000)
		return "it is longer than 3000 bytes";
	for (p = dir; *p; p++)
		if ((unsigned char)*p < 0x20)
			return "it holds a control character";
	for (p = dir; p; p = strchr(p + 1, '/')) {
		size_t c = strcspn(p + 1, "/");

		if ((c == 1 && p[1] == '.') ||
		    (c == 2 && p[1] == '.' && p[2] == '.'))
			return "it has a . or .. component";
	}
	snprintf(parent, sizeof(parent), "%s", dir);
	while (n > 1 && parent[n - 1] == '/')
		parent[--n] = '\0';
	if (n == 1)
		return "it is the root folder";
	*strrchr(parent, '/') = '\0';
	if (stat(parent[0] ? parent : "/", &st) < 0 || !S_ISDIR(st.st_mode))
		return "the folder it is in does not exist";
	if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
		return "it exists and is not a folder";
	return NULL;
}

static void backup(struct mgmt *m, struct vm *vm, const char *body,
		   size_t len, struct rf_reply *r)
{
	static const char *const keys[] = { "TargetDirectory", "BackupType",
					    NULL };
	json_t *o = parse_body(body, len, r);
	const char *dir, *type, *why;
	enum backup_kind kind = BACKUP_AUTO;
	char err[1024] = "";
	unsigned id;
	int ret;

	if (!o)
		return;
	if (!only_keys(o, keys, "OvkComputerSystem.Backup", r))
		goto out;
	dir = json_string_value(json_object_get(o, "TargetDirectory"));
	type = json_string_value(json_object_get(o, "BackupType"));
	if (json_object_get(o, "BackupType") && !type) {
		reply_error(r, 400, "Base.1.8.ActionParameterValueTypeError",
			    "BackupType must be a string: Auto, Full or "
			    "Incremental");
		goto out;
	}
	if (!dir) {
		reply_error(r, 400, "Base.1.8.ActionParameterMissing",
			    "TargetDirectory is missing: the absolute path of "
			    "the folder on ovkd's host that keeps this VM's "
			    "backups (one subfolder diskN per disk)");
		goto out;
	}
	why = check_target_dir(dir);
	if (why) {
		reply_error(r, 400, "Base.1.8.ActionParameterValueFormatError",
			    "TargetDirectory %s cannot hold backups: %s", dir,
			    why);
		goto out;
	}
	if (!type || !strcmp(type, "Auto"))
		kind = BACKUP_AUTO;
	else if (!strcmp(type, "Full"))
		kind = BACKUP_FULL;
	else if (!strcmp(type, "Incremental"))
		kind = BACKUP_INCREMENTAL;
	else {
		reply_error(r, 400, "Base.1.8.ActionParameterValueNotInList",
			    "BackupType %s is not one of Auto, Full, "
			    "Incremental", type);
		goto out;
	}
	ret = job_backup(m, vm, dir, kind, &id, err, sizeof(err));
	if (ret < 0)
		reply_job_error(r, ret, err);
	else
		reply_task(r, id);
out:
	json_decref(o);
}

/* A checkpoint name: 1 to 64 of [A-Za-z0-9._-], starting with a letter
   or digit; "ovkdisk-" names are the backups'. */
static bool checkpoint_name_ok(const char *n)
{
	size_t len = strlen(n);

	if (!len || len > 64 || !strncmp(n, "ovkdisk-", 8) ||
	    !((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= 'A' && n[0] <= 'Z') ||
	      (n[0] >= '0' && n[0] <= '9')))
		return false;
	return strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "0123456789._-") == len;
}

static void checkpoint(struct mgmt *m, struct vm *vm, const char *body,
		       size_t len, struct rf_reply *r)
{
	static const char *const keys[] = { "Name", NULL };
	json_t *o = len ? parse_body(body, len, r) : json_object();
	const char *name;
	char err[1024] = "", def[64];
	unsigned id;
	int ret;

	if (!o)
		return;
	if (!only_keys(o, keys, "OvkComputerSystem.Checkpoint", r))
		goto out;
	name = json_string_value(json_object_get(o, "Name"));
	if (!name) {
		time_t now = time(NULL);
		struct tm tm;

		if (json_object_get(o, "Name")) {
			reply_error(r, 400,
				    "Base.1.8.ActionParameterValueTypeError",
				    "Name must be a string");
			goto out;
		}
		gmtime_r(&now, &tm);
		strftime(def, sizeof(def), "snap-%Y%m%dT%H%M%SZ", &tm);
		name = def;
	}
	if (!checkpoint_name_ok(name)) {
		reply_error(r, 400, "Base.1.8.ActionParameterValueFormatError",
			    "checkpoint name '%s': expected 1 to 64 letters, "
			    "digits, '.', '_' or '-', starting with a letter "
			    "or digit, and not ovkdisk-... (the backups' "
			    "names)", name);
		goto out;
	}
	ret = job_checkpoint(m, vm, name, &id, err, sizeof(err));
	if (ret < 0)
		reply_job_error(r, ret, err);
	else
		reply_task(r, id);
out:
	json_decref(o);
}

static void event_service(struct rf_reply *r)
{
	reply_json(r, 200, json_pack(
		"{s:s, s:s, s:s, s:s, s:b, s:s, s:[s,s], s:{s:s, s:s}}",
		"@odata.type", "#EventService.v1_7_0.EventService",
		"@odata.id", "/redfish/v1/EventService", "Id", "EventService",
		"Name", "Event service", "ServiceEnabled", 1,
		"ServerSentEventUri", "/redfish/v1/EventService/SSE",
		"RegistryPrefixes", "ResourceEvent", "TaskEvent", "Status",
		"State", "Enabled", "Health", "OK"));
}

/* TaskService and EventService: no inventory needed. */
static void lock_free(const char *method, const char *path,
		      struct rf_reply *r)
{
	const char *tasks = TASKS_URI "/";

	if (!method_is(method, "GET", r, "GET"))
		return;
	if (!strcmp(path, "/redfish/v1/TaskService")) {
		reply_json(r, 200, tasks_service_json());
	} else if (!strcmp(path, TASKS_URI)) {
		reply_json(r, 200, tasks_collection_json());
	} else if (!strncmp(path, tasks, strlen(tasks))) {
		json_t *t = tasks_task_json(path + strlen(tasks));

		if (t)
			reply_json(r, 200, t);
		else
			reply_error(r, 404, "Base.1.8.ResourceMissingAtURI",
				    "no task %s (ovkd keeps the last %d, and "
				    "none from before it started)",
				    path + strlen(tasks), TASKS_KEPT);
	} else if (!strcmp(path, "/redfish/v1/EventService")) {
		event_service(r);
	} else {
		reply_error(r, 404, "Base.1.8.ResourceMissingAtURI",
			    "%s: no such resource", path);
	}
}

bool rf_lock_free(const char *path)
{
	return !strncmp(path, "/redfish/v1/TaskService", 23) ||
	       !strncmp(path, "/redfish/v1/EventService", 24);
}

static void patch_system(struct mgmt *m, struct vm *vm, const char *body,
			 size_t len, struct rf_reply *r)
{
	json_t *o = parse_body(body, len, r);
	const char *name;

	if (!o)
		return;
	name = json_string_value(json_object_get(o, "Name"));
	if (!name || json_object_size(o) != 1) {
		reply_error(r, 400, "Base.1.8.PropertyNotWritable",
			    "only Name can be changed");
	} else {
		char *n = strdup(name);

		if (n) {
			free(vm->name);
			vm->name = n;
		}
		inv_save(m->inv, vm);
		reply_json(r, 200, system_json(m, vm));
	}
	json_decref(o);
}

static void delete_system(struct mgmt *m, struct vm *vm, struct rf_reply *r)
{
	if (vm->power != VM_OFF) {
		reply_error(r, 409, "Base.1.8.ResourceInUse",
			    "%s is %s: power it off first", vm->id,
			    power_state(vm));
		return;
	}
	deploy_remove_disks(m->storage_dir, vm);
	inv_remove(m->inv, vm);
	r->status = 204;
}

/* Split "/redfish/v1/Systems/ID/rest" into ID and rest. */
static bool system_path(const char *path, char *id, size_t idlen,
			const char **rest)
{
	const char *p = path + strlen(SYSTEMS "/");
	size_t n = strcspn(p, "/");

	if (!n || n >= idlen)
		return false;
	memcpy(id, p, n);
	id[n] = '\0';
	*rest = p + n;
	return true;
}

static bool method_is(const char *m, const char *want, struct rf_reply *r,
		      const char *allow)
{
	if (!strcmp(m, want))
		return true;
	if (!r->allow[0])
		snprintf(r->allow, sizeof(r->allow), "%s", allow);
	return false;
}

void rf_handle(struct mgmt *m, const char *method, const char *path,
	       const char *body, size_t body_len, unsigned flags,
	       struct rf_reply *r)
{
	char id[128], clean[1024];
	const char *rest;
	struct vm *vm;
	size_t n;

	memset(r, 0, sizeof(*r));
	/* one trailing slash is the same resource */
	snprintf(clean, sizeof(clean), "%s", path);
	n = strlen(clean);
	if (n > 1 && clean[n - 1] == '/')
		clean[n - 1] = '\0';
	path = clean;

	if (rf_lock_free(path)) {
		lock_free(method, path, r);
	} else if (!strcmp(path, "/redfish")) {
		if (method_is(method, "GET", r, "GET"))
			reply_json(r, 200, json_pack("{s:s}", "v1",
						     "/redfish/v1/"));
	} else if (!strcmp(path, "/redfish/v1")) {
		if (method_is(method, "GET", r, "GET"))
			service_root(m, r);
	} else if (!strcmp(path, SYSTEMS)) {
		if (!strcmp(method, "GET"))
			systems(m, r);
		else if (method_is(method, "POST", r, "GET, POST"))
			deploy(m, body, body_len, flags, r);
	} else if (!strncmp(path, SYSTEMS "/", strlen(SYSTEMS "/")) &&
		   system_path(path, id, sizeof(id), &rest)) {
		vm = inv_find(m->inv, id);
		if (!vm) {
			reply_error(r, 404, "Base.1.8.ResourceMissingAtURI",
				    "no virtual machine %s", id);
		} else if (!*rest) {
			if (!strcmp(method, "GET"))
				reply_json(r, 200, system_json(m, vm));
			else if (!strcmp(method, "PATCH"))
				patch_system(m, vm, body, body_len, r);
			else if (method_is(method, "DELETE", r,
					   "GET, PATCH, DELETE"))
				delete_system(m, vm, r);
		} else if (!strcmp(rest, "/Actions/ComputerSystem.Reset")) {
			if (method_is(method, "POST", r, "POST"))
				reset(m, vm, body, body_len, r);
		} else if (!strcmp(rest, "/Actions/Oem/"
				   "OvkComputerSystem.Export")) {
			if (method_is(method, "POST", r, "POST"))
				export(m, vm, body, body_len, r);
		} else if (!strcmp(rest, "/Actions/Oem/"
				   "OvkComputerSystem.Backup")) {
			if (method_is(method, "POST", r, "POST"))
				backup(m, vm, body, body_len, r);
		} else if (!strcmp(rest, "/Actions/Oem/"
				   "OvkComputerSystem.Checkpoint")) {
			if (method_is(method, "POST", r, "POST"))
				checkpoint(m, vm, body, body_len, r);
		} else if (!strcmp(rest, "/SimpleStorage") ||
			   !strcmp(rest, "/SimpleStorage/1")) {
			if (method_is(method, "GET", r, "GET"))
				simple_storage(m, vm, rest[14] == '/', r);
		} else {
			reply_error(r, 404, "Base.1.8.ResourceMissingAtURI",
				    "%s: no such resource", path);
		}
	} else {
		reply_error(r, 404, "Base.1.8.ResourceMissingAtURI",
			    "%s: no such resource", path);
	}
	if (!r->status && r->allow[0])
		reply_error(r, 405, "Base.1.8.OperationNotAllowed",
			    "%s is not allowed on %s (allowed: %s)", method,
			    path, r->allow);
}
