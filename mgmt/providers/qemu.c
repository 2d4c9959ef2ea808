/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qemu.c - the QEMU provider: each disk served by its own pvblk process
 * over vhost-user-blk (so any VMDK the engine opens is a VM disk, locked
 * like everywhere else), QEMU started with shared guest memory, driven
 * through QMP. Processes run in their own sessions: a restarted ovkd finds
 * them by pid and start time (inventory.h) and they outlive it.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procs.h"
#include "provider.h"
#include "util.h"

#define QMP_TIMEOUT_MS 5000
/* pvblk's status reply: taken within 1 s */
#define DISK_STATUS_MS 1000
/* other live-disk requests (a checkpoint) may wait on the engine */
#define DISK_COMMAND_MS 30000

/* Run one QMP command on vm's monitor; 0 when it returned, else -errno
   with QMP's own error in err. */
static int qmp(const struct provider_env *env, struct vm *vm,
	       const char *cmd, char *err, size_t errlen)
{
	static char buf[65536];
	char path[4096], line[256];
	size_t have = 0;
	json_t *o;
	int fd, ret = -EIO;

	prov_vm_path(path, sizeof(path), env, vm, "qmp.sock");
	fd = prov_connect(path);
	if (fd < 0)
		return mgmt_fail(err, errlen, fd, "%s: QEMU's monitor %s: %s",
			    vm->id, path, strerror(-fd));
	o = prov_json_line(fd, buf, sizeof(buf), &have,
			   QMP_TIMEOUT_MS); /* greeting */
	json_decref(o);
	for (int step = 0; step < 2; step++) {
		snprintf(line, sizeof(line), "{\"execute\":\"%s\"}\n",
			 step ? cmd : "qmp_capabilities");
		if (write(fd, line, strlen(line)) != (ssize_t)strlen(line))
			break;
		while ((o = prov_json_line(fd, buf, sizeof(buf), &have,
					   QMP_TIMEOUT_MS))) {
			json_t *e = json_object_get(o, "error");

			if (json_object_get(o, "return")) {
				ret = 0;
			} else if (e) {
				const char *d = json_string_value(
					json_object_get(e, "desc"));

				ret = mgmt_fail(err, errlen, -EIO, "%s: QEMU "
					   "refused %s: %s", vm->id, cmd,
					   d ? d : "(no reason given)");
			} else {
				json_decref(o); /* an event */
				continue;
			}
			json_decref(o);
			break;
		}
		if (!o) {
			ret = mgmt_fail(err, errlen, -ETIMEDOUT, "%s: no answer "
				   "from QEMU's monitor to %s", vm->id,
				   step ? cmd : "qmp_capabilities");
			break;
		}
		if (ret < 0)
			break;
		if (!step)
			ret = -EIO;
	}
	close(fd);
	return ret;
}

static int q_start(const struct provider_env *env, struct vm *vm, char *err,
		   size_t errlen)
{
	char sock[4096], api[4096], log[4096], tail[512];
	char mem[64], smp[16], backend[160], machine[96], chardev[4300];
	char qmpopt[4200], console[8400], qmp_sock[4096];
	const char *accel = env->accel;
	char *argv[64 + 4 * VM_MAX_DISKS];
	char *devs[VM_MAX_DISKS], *chars[VM_MAX_DISKS];
	char queues[16];
	int argc = 0, ret;

	if (vm->power != VM_OFF)
		return mgmt_fail(err, errlen, -EALREADY, "%s is already on", vm->id);
	if (!vm->ndisks && !vm->kernel)
		return mgmt_fail(err, errlen, -EINVAL, "%s has no disk and no kernel "
			    "to boot", vm->id);
	ret = prov_vm_dir(env, vm, err, errlen);
	if (ret < 0)
		return ret;

	/* a virtqueue (thread and io_uring in pvblk) per vCPU, up to 4 */
	snprintf(queues, sizeof(queues), "%u",
		 vm->cpus > 4 ? 4 : vm->cpus ? vm->cpus : 1);
	/* the disks first: QEMU connects to each socket as it starts */
	for (unsigned i = 0; i < vm->ndisks; i++) {
		char name[32];
		char *pv[] = { (char *)env->pvblk, "-o", "rw",
			       "--vhost-user-blk", sock, "--num-queues", queues,
			       "--api-socket", api, vm->disks[i].path, NULL };

		snprintf(name, sizeof(name), "disk%u.sock", i);
		prov_vm_path(sock, sizeof(sock), env, vm, name);
		snprintf(name, sizeof(name), "disk%u.api", i);
		prov_vm_path(api, sizeof(api), env, vm, name);
		snprintf(name, sizeof(name), "disk%u.log", i);
		prov_vm_path(log, sizeof(log), env, vm, name);
		unlink(sock);
		unlink(api);
		ret = prov_spawn(pv, log, &vm->blk[i]);
		if (ret >= 0)
			ret = prov_wait_socket(sock, &vm->blk[i], 15000);
		if (ret < 0) {
			prov_log_tail(log, tail, sizeof(tail));
			mgmt_fail(err, errlen, ret, "%s: disk %u (%s) could not be "
			     "served: %s", vm->id, i, vm->disks[i].path,
			     tail[0] ? tail : strerror(-ret));
			goto err_disks;
		}
	}

	if (!accel)
		accel = prov_hw_kvm() ? "kvm" : "tcg";
	snprintf(mem, sizeof(mem), "%lluM",
		 (unsigned long long)(vm->memory >> 20));
	snprintf(smp, sizeof(smp), "%u", vm->cpus ? vm->cpus : 1);
	snprintf(backend, sizeof(backend),
		 "memory-backend-memfd,id=mem,size=%s,share=on", mem);
	snprintf(machine, sizeof(machine), "pc,memory-backend=mem,accel=%s",
		 accel);
	prov_vm_path(qmp_sock, sizeof(qmp_sock), env, vm, "qmp.sock");
	unlink(qmp_sock);
	snprintf(qmpopt, sizeof(qmpopt), "unix:%s,server=on,wait=off",
		 qmp_sock);
	prov_vm_path(sock, sizeof(sock), env, vm, "console.sock");
	prov_vm_path(log, sizeof(log), env, vm, "console.log");
	unlink(sock);
	snprintf(console, sizeof(console),
		 "socket,id=con,path=%s,server=on,wait=off,logfile=%s", sock,
		 log);

	argv[argc++] = (char *)env->qemu;
	argv[argc++] = "-name";
	argv[argc++] = vm->id;
	argv[argc++] = "-nodefaults";
	argv[argc++] = "-no-user-config";
	argv[argc++] = "-display";
	argv[argc++] = "none";
	argv[argc++] = "-machine";
	argv[argc++] = machine;
	argv[argc++] = "-m";
	argv[argc++] = mem;
	argv[argc++] = "-smp";
	argv[argc++] = smp;
	argv[argc++] = "-object";
	argv[argc++] = backend;
	argv[argc++] = "-qmp";
	argv[argc++] = qmpopt;
	argv[argc++] = "-chardev";
	argv[argc++] = console;
	argv[argc++] = "-serial";
	argv[argc++] = "chardev:con";
	for (unsigned i = 0; i < vm->ndisks; i++) {
		char name[32];

		snprintf(name, sizeof(name), "disk%u.sock", i);
		prov_vm_path(chardev, sizeof(chardev), env, vm, name);
		if (asprintf(&chars[i], "socket,id=vu%u,path=%s", i,
			     chardev) < 0)
			chars[i] = NULL;
		if (asprintf(&devs[i], "vhost-user-blk-pci,chardev=vu%u,"
			     "num-queues=%s,bootindex=%u", i, queues,
			     i + 1) < 0)
			devs[i] = NULL;
		argv[argc++] = "-chardev";
		argv[argc++] = chars[i];
		argv[argc++] = "-device";
		argv[argc++] = devs[i];
	}
	if (vm->kernel) {
		argv[argc++] = "-kernel";
		argv[argc++] = vm->kernel;
		if (vm->initrd) {
			argv[argc++] = "-initrd";
			argv[argc++] = vm->initrd;
		}
		if (vm->cmdline) {
			argv[argc++] = "-append";
			argv[argc++] = vm->cmdline;
		}
	}
	argv[argc] = NULL;
	prov_vm_path(log, sizeof(log), env, vm, "qemu.log");
	ret = prov_spawn(argv, log, &vm->vmm);
	for (unsigned i = 0; i < vm->ndisks; i++) {
		free(chars[i]);
		free(devs[i]);
	}
	if (ret >= 0)
		ret = prov_wait_socket(qmp_sock, &vm->vmm, 30000);
	/* the monitor listens before the devices are made: QEMU is up only
	   once it answers a command */
	for (int t = 0; ret >= 0 && t < 300; t++) {
		char e2[256];

		if (qmp(env, vm, "query-status", e2, sizeof(e2)) == 0)
			break;
		if (!vm_proc_alive(&vm->vmm))
			ret = -ECHILD;
		else
			prov_sleep_ms(100);
	}
	if (ret < 0) {
		prov_log_tail(log, tail, sizeof(tail));
		mgmt_fail(err, errlen, ret, "%s: QEMU did not start: %s", vm->id,
		     tail[0] ? tail : strerror(-ret));
		prov_stop(&vm->vmm, SIGKILL, 1000);
		goto err_disks;
	}
	vm->power = VM_ON;
	prov_record(vm, "qemu");
	return 0;

err_disks:
	prov_stop_disks(vm);
	return ret;
}

static int q_force_off(const struct provider_env *env, struct vm *vm,
		       char *err, size_t errlen)
{
	char e2[256];

	if (vm->power == VM_OFF)
		return 0;
	/* quit through the monitor (QEMU closes its side cleanly), else
	   by signal */
	if (vm_proc_alive(&vm->vmm) && qmp(env, vm, "quit", e2, sizeof(e2)) == 0)
		prov_stop(&vm->vmm, 0, 5000);
	prov_stop(&vm->vmm, SIGTERM, 5000);
	prov_stop_disks(vm);
	vm->power = VM_OFF;
	return 0;
}

static int q_simple(const struct provider_env *env, struct vm *vm,
		    const char *cmd, enum vm_power need, enum vm_power then,
		    char *err, size_t errlen)
{
	int ret;

	ret = prov_need_power(vm, need, err, errlen);
	if (ret < 0)
		return ret;
	ret = qmp(env, vm, cmd, err, errlen);
	if (ret == 0 && then != VM_OFF)
		vm->power = then;
	return ret;
}

static int q_shutdown(const struct provider_env *env, struct vm *vm,
		      char *err, size_t errlen)
{
	return q_simple(env, vm, "system_powerdown", VM_ON, VM_OFF, err, errlen);
}

static int q_reset(const struct provider_env *env, struct vm *vm, char *err,
		   size_t errlen)
{
	return q_simple(env, vm, "system_reset", VM_OFF, VM_OFF, err, errlen);
}

static int q_pause(const struct provider_env *env, struct vm *vm, char *err,
		   size_t errlen)
{
	return q_simple(env, vm, "stop", VM_ON, VM_PAUSED, err, errlen);
}

static int q_resume(const struct provider_env *env, struct vm *vm, char *err,
		    size_t errlen)
{
	return q_simple(env, vm, "cont", VM_PAUSED, VM_ON, err, errlen);
}

static void q_stats(const struct provider_env *env, const struct vm *vm,
		    struct vm_stats *out)
{
	prov_vmm_stats(vm, out);
	for (unsigned i = 0; i < vm->ndisks; i++)
		out->running_disks += vm_proc_alive(&vm->blk[i]);
}

static int q_disk_socket(const struct provider_env *env, const struct vm *vm,
			 unsigned i, char *path, size_t len, int *disk)
{
	char name[32];

	if (i >= vm->ndisks || vm->power == VM_OFF ||
	    !vm_proc_alive(&vm->blk[i]))
		return -ENOENT;
	snprintf(name, sizeof(name), "disk%u.api", i);
	prov_vm_path(path, len, env, vm, name);
	*disk = -1; /* one pvblk per disk: its socket serves only that */
	return 0;
}

/* One request on disk i's pvblk control socket, its reply within ms:
   the "return" object (a new reference), or NULL with the reason (the
   daemon's own error when it answered one) in err. */
static json_t *disk_call(const struct provider_env *env, const struct vm *vm,
			 unsigned i, json_t *req, int ms, char *err,
			 size_t errlen)
{
	char path[4096], what[160];
	int disk;

	if (q_disk_socket(env, vm, i, path, sizeof(path), &disk) < 0) {
		mgmt_fail(err, errlen, -ENOENT, "%s: disk %u is not being "
			  "served (is the VM on?)", vm->id, i);
		return NULL;
	}
	snprintf(what, sizeof(what), "%s: disk %u", vm->id, i);
	return prov_ctl_call(path, req, ms, "pvblk", what, err, errlen);
}

/* Disk i's counters from its pvblk's control socket ("status": each
   export's "io"), summed over the exports. */
static int q_disk_io(const struct provider_env *env, const struct vm *vm,
		     unsigned i, struct disk_io *out)
{
	json_t *req = json_pack("{s:s}", "command", "status"), *r, *x, *io;
	char err[256];
	size_t k;
	int ret = -ENOENT;

	memset(out, 0, sizeof(*out));
	r = disk_call(env, vm, i, req, DISK_STATUS_MS, err, sizeof(err));
	json_decref(req);
	json_array_foreach(json_object_get(r, "exports"), k, x) {
		io = json_object_get(x, "io");
		if (!json_is_object(io))
			continue;
		out->requests += (uint64_t)json_integer_value(
			json_object_get(io, "requests"));
		out->read_bytes += (uint64_t)json_integer_value(
			json_object_get(io, "read_bytes"));
		out->written_bytes += (uint64_t)json_integer_value(
			json_object_get(io, "written_bytes"));
		out->errors += (uint64_t)json_integer_value(
			json_object_get(io, "errors"));
		ret = 0;
	}
	json_decref(r);
	return ret;
}

static int q_disk_command(const struct provider_env *env,
			  const struct vm *vm, unsigned i, json_t *req,
			  json_t **reply, char *err, size_t errlen)
{
	*reply = disk_call(env, vm, i, req, DISK_COMMAND_MS, err, errlen);
	return *reply ? 0 : -EIO;
}

const struct provider_ops provider_qemu = {
	.name = "qemu",
	.start = q_start,
	.force_off = q_force_off,
	.shutdown = q_shutdown,
	.reset = q_reset,
	.pause = q_pause,
	.resume = q_resume,
	.poll = prov_poll,
	.stats = q_stats,
	.disk_io = q_disk_io,
	.disk_socket = q_disk_socket,
	.disk_command = q_disk_command,
};
