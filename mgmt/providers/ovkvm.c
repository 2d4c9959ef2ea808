/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ovkvm.c - the ovkvm provider: ovk's own hypervisor (hypervisor/) boots
 * the VM's Linux kernel directly on KVM and serves every disk through the
 * engine in its own process (no pvblk). Power and live-disk requests go
 * to its JSON control socket (--api-socket RUN/ID/api.sock), the serial
 * console to RUN/ID/console.sock. Like QEMU it runs in a session of its
 * own, so it outlives ovkd and a restarted ovkd finds it by pid and start
 * time (procs.h).
 *
 * What ovkvm does not have, this provider says instead of pretending: no
 * firmware (a VM needs a kernel to boot), no ACPI power button (no
 * GracefulShutdown), no reset in place (ForceRestart stops the process
 * and starts a new one).
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "procs.h"
#include "provider.h"
#include "util.h"

/* the control socket's answers to status, pause, resume, shutdown */
#define CTL_MS 5000
/* a live-disk request (a checkpoint) may wait on the engine */
#define DISK_COMMAND_MS 30000
/* ovkvm flushes and closes its disks before it exits */
#define STOP_MS 15000

/* One request {"command": cmd} (with more members from extra) on vm's
   control socket; its "return" object, or NULL with the reason in err. */
static json_t *ctl(const struct provider_env *env, const struct vm *vm,
		   const char *cmd, json_t *extra, int ms, char *err,
		   size_t errlen)
{
	char path[4096], what[160];
	json_t *req = extra ? json_deep_copy(extra) : json_object(), *r;

	if (!req) {
		mgmt_fail(err, errlen, -ENOMEM, "out of memory");
		return NULL;
	}
	json_object_set_new(req, "command", json_string(cmd));
	prov_vm_path(path, sizeof(path), env, vm, "api.sock");
	snprintf(what, sizeof(what), "%s: ovkvm %s", vm->id, cmd);
	r = prov_ctl_call(path, req, ms, "ovkvm", what, err, errlen);
	json_decref(req);
	return r;
}

/* ctl without a reply to keep: 0 or -EIO. */
static int ctl_simple(const struct provider_env *env, const struct vm *vm,
		      const char *cmd, char *err, size_t errlen)
{
	json_t *r = ctl(env, vm, cmd, NULL, CTL_MS, err, errlen);

	json_decref(r);
	return r ? 0 : -EIO;
}

/* ovkvm takes --disk PATH[,OPT]: a comma in a path would be read as an
   option. */
static int check_disks(const struct vm *vm, char *err, size_t errlen)
{
	for (unsigned i = 0; i < vm->ndisks; i++)
		if (strchr(vm->disks[i].path, ','))
			return mgmt_fail(err, errlen, -EINVAL, "%s: disk %u: "
					 "ovkvm cannot open %s (a comma in an "
					 "image path is read as an option of "
					 "--disk)", vm->id, i,
					 vm->disks[i].path);
	return 0;
}

static int k_start(const struct provider_env *env, struct vm *vm, char *err,
		   size_t errlen)
{
	char api[4096], console[4200], log[4096], tail[512], mem[32], cpus[16];
	char *argv[32 + 2 * VM_MAX_DISKS], *disks[VM_MAX_DISKS] = { 0 };
	unsigned queues = vm->cpus > 4 ? 4 : vm->cpus ? vm->cpus : 1;
	int argc = 0, ret;

	if (vm->power != VM_OFF)
		return mgmt_fail(err, errlen, -EALREADY, "%s is already on",
				 vm->id);
	if (!vm->kernel)
		return mgmt_fail(err, errlen, -ENOTSUP, "%s has no kernel to "
				 "boot: ovkvm has no firmware and boots a "
				 "Linux bzImage directly; deploy the VM with "
				 "Oem.Ovk.Kernel (and Initrd, Cmdline), or run "
				 "ovkd --provider qemu, which boots its disk",
				 vm->id);
	if (!env->ovkvm)
		return mgmt_fail(err, errlen, -ENOTSUP, "%s: no ovkvm program "
				 "(give ovkd --ovkvm PATH)", vm->id);
	if (!prov_hw_kvm())
		return mgmt_fail(err, errlen, -ENOTSUP, "%s: ovkvm needs a "
				 "usable /dev/kvm on a CPU with svm or vmx, "
				 "and this host has none", vm->id);
	ret = check_disks(vm, err, errlen);
	if (ret < 0)
		return ret;
	ret = prov_vm_dir(env, vm, err, errlen);
	if (ret < 0)
		return ret;

	prov_vm_path(api, sizeof(api), env, vm, "api.sock");
	prov_vm_path(log, sizeof(log), env, vm, "console.sock");
	snprintf(console, sizeof(console), "socket:%s", log);
	unlink(api);
	unlink(log);
	snprintf(mem, sizeof(mem), "%lluM",
		 (unsigned long long)(vm->memory >> 20));
	snprintf(cpus, sizeof(cpus), "%u", vm->cpus ? vm->cpus : 1);
	argv[argc++] = (char *)env->ovkvm;
	argv[argc++] = "--kernel";
	argv[argc++] = vm->kernel;
	if (vm->initrd) {
		argv[argc++] = "--initrd";
		argv[argc++] = vm->initrd;
	}
	if (vm->cmdline) {
		argv[argc++] = "--cmdline";
		argv[argc++] = vm->cmdline;
	}
	argv[argc++] = "--memory";
	argv[argc++] = mem;
	argv[argc++] = "--cpus";
	argv[argc++] = cpus;
	argv[argc++] = "--console";
	argv[argc++] = console;
	argv[argc++] = "--api-socket";
	argv[argc++] = api;
	for (unsigned i = 0; i < vm->ndisks; i++) {
		/* a queue (an I/O thread in ovkvm) per vCPU, up to 4 */
		if (asprintf(&disks[i], "%s,queues=%u", vm->disks[i].path,
			     queues) < 0) {
			disks[i] = NULL;
			ret = mgmt_fail(err, errlen, -ENOMEM, "out of memory");
			goto out;
		}
		argv[argc++] = "--disk";
		argv[argc++] = disks[i];
	}
	argv[argc] = NULL;
	prov_vm_path(log, sizeof(log), env, vm, "ovkvm.log");
	ret = prov_spawn(argv, log, &vm->vmm);
	if (ret >= 0)
		ret = prov_wait_socket(api, &vm->vmm, 30000);
	/* the socket is made before the vCPUs run: up once it answers */
	if (ret >= 0)
		ret = ctl_simple(env, vm, "status", tail, sizeof(tail));
	if (ret < 0) {
		prov_log_tail(log, tail, sizeof(tail));
		mgmt_fail(err, errlen, ret, "%s: ovkvm did not start: %s",
			  vm->id, tail[0] ? tail : strerror(-ret));
		prov_stop(&vm->vmm, SIGKILL, 1000);
		goto out;
	}
	vm->power = VM_ON;
	prov_record(vm, "ovkvm");
	ret = 0;
out:
	for (unsigned i = 0; i < vm->ndisks; i++)
		free(disks[i]);
	return ret;
}

static int k_force_off(const struct provider_env *env, struct vm *vm,
		       char *err, size_t errlen)
{
	char e2[256];

	if (vm->power == VM_OFF)
		return 0;
	/* a hard stop on the control socket (ovkvm flushes and closes the
	   disks, exit 0), else by signal, which does the same */
	if (vm_proc_alive(&vm->vmm) &&
	    ctl_simple(env, vm, "shutdown", e2, sizeof(e2)) == 0)
		prov_stop(&vm->vmm, 0, STOP_MS);
	prov_stop(&vm->vmm, SIGTERM, STOP_MS);
	vm->power = VM_OFF;
	return 0;
}

static int k_shutdown(const struct provider_env *env, struct vm *vm,
		      char *err, size_t errlen)
{
	int ret = prov_need_power(vm, VM_OFF, err, errlen);

	if (ret < 0)
		return ret;
	return mgmt_fail(err, errlen, -ENOTSUP, "%s runs on ovkvm, which has "
			 "no ACPI power button: GracefulShutdown cannot ask "
			 "the guest to power off; power it off from inside, "
			 "or use ForceOff (the disks are flushed and closed "
			 "either way)", vm->id);
}

/* ovkvm cannot reset a guest in place (a guest's own reboot ends it too):
   a new ovkvm process boots the VM again. */
static int k_reset(const struct provider_env *env, struct vm *vm, char *err,
		   size_t errlen)
{
	int ret = prov_need_power(vm, VM_OFF, err, errlen);

	if (ret < 0)
		return ret;
	k_force_off(env, vm, err, errlen);
	return k_start(env, vm, err, errlen);
}

static int k_pause_resume(const struct provider_env *env, struct vm *vm,
			  const char *cmd, enum vm_power need,
			  enum vm_power then, char *err, size_t errlen)
{
	int ret;

	ret = prov_need_power(vm, need, err, errlen);
	if (ret < 0)
		return ret;
	ret = ctl_simple(env, vm, cmd, err, errlen);
	if (ret == 0)
		vm->power = then;
	return ret;
}

static int k_pause(const struct provider_env *env, struct vm *vm, char *err,
		   size_t errlen)
{
	return k_pause_resume(env, vm, "pause", VM_ON, VM_PAUSED, err, errlen);
}

static int k_resume(const struct provider_env *env, struct vm *vm, char *err,
		    size_t errlen)
{
	return k_pause_resume(env, vm, "resume", VM_PAUSED, VM_ON, err, errlen);
}

/* The disks are served inside ovkvm: running while it runs. */
static void k_stats(const struct provider_env *env, const struct vm *vm,
		    struct vm_stats *out)
{
	prov_vmm_stats(vm, out);
	if (vm_proc_alive(&vm->vmm))
		out->running_disks = vm->ndisks;
}

static int k_disk_socket(const struct provider_env *env, const struct vm *vm,
			 unsigned i, char *path, size_t len, int *disk)
{
	if (i >= vm->ndisks || vm->power == VM_OFF ||
	    !vm_proc_alive(&vm->vmm))
		return -ENOENT;
	prov_vm_path(path, len, env, vm, "api.sock");
	*disk = (int)i; /* one socket for all disks: name it */
	return 0;
}

/* Disk i's counters: ovkvm's status for that disk. */
static int k_disk_io(const struct provider_env *env, const struct vm *vm,
		     unsigned i, struct disk_io *out)
{
	json_t *extra, *r;
	char err[256];

	memset(out, 0, sizeof(*out));
	if (i >= vm->ndisks || !vm_proc_alive(&vm->vmm))
		return -ENOENT;
	extra = json_pack("{s:i}", "disk", (int)i);
	r = ctl(env, vm, "status", extra, 1000, err, sizeof(err));
	json_decref(extra);
	if (!r)
		return -ENOENT;
	out->requests = (uint64_t)json_integer_value(
		json_object_get(r, "requests"));
	out->read_bytes = (uint64_t)json_integer_value(
		json_object_get(r, "read_bytes"));
	out->written_bytes = (uint64_t)json_integer_value(
		json_object_get(r, "written_bytes"));
	out->errors = (uint64_t)json_integer_value(
		json_object_get(r, "errors"));
	json_decref(r);
	return 0;
}

static int k_disk_command(const struct provider_env *env,
			  const struct vm *vm, unsigned i, json_t *req,
			  json_t **reply, char *err, size_t errlen)
{
	const char *cmd = json_string_value(json_object_get(req, "command"));
	json_t *extra;

	*reply = NULL;
	if (i >= vm->ndisks || vm->power == VM_OFF ||
	    !vm_proc_alive(&vm->vmm))
		return mgmt_fail(err, errlen, -ENOENT, "%s: disk %u is not "
				 "being served (is the VM on?)", vm->id, i);
	if (!cmd)
		return mgmt_fail(err, errlen, -EINVAL, "%s: a disk request "
				 "needs a \"command\"", vm->id);
	extra = json_deep_copy(req);
	if (!extra)
		return mgmt_fail(err, errlen, -ENOMEM, "out of memory");
	json_object_set_new(extra, "disk", json_integer(i));
	*reply = ctl(env, vm, cmd, extra, DISK_COMMAND_MS, err, errlen);
	json_decref(extra);
	return *reply ? 0 : -EIO;
}

const struct provider_ops provider_ovkvm = {
	.name = "ovkvm",
	.start = k_start,
	.force_off = k_force_off,
	.shutdown = k_shutdown,
	.reset = k_reset,
	.pause = k_pause,
	.resume = k_resume,
	.poll = prov_poll,
	.stats = k_stats,
	.disk_io = k_disk_io,
	.disk_socket = k_disk_socket,
	.disk_command = k_disk_command,
};
