/* SPDX-License-Identifier: Apache-2.0 */
/*
 * procs.h - what every provider does with the processes it starts: start
 * one in its own session (so it outlives ovkd) and record it by pid and
 * kernel start time, stop it, wait for the socket it serves, quote the
 * last line of its log, make one JSON request on a control socket, and
 * read its CPU time and resident memory. qemu.c and ovkvm.c use these;
 * neither looks inside the other.
 */
#ifndef OVK_MGMT_PROCS_H
#define OVK_MGMT_PROCS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "provider.h"

/* Whether a VMM can use KVM here: /dev/kvm is usable and the CPU offers
   hardware virtualization, svm or vmx (kvmprobe.h: a paravirtual KVM
   cannot run an unmodified guest, so it counts as none). */
bool prov_hw_kvm(void);

void prov_sleep_ms(unsigned ms);

/* RUN/ID/leaf, the place of a VM's runtime file. */
void prov_vm_path(char *buf, size_t len, const struct provider_env *env,
		  const struct vm *vm, const char *leaf);

/* Make RUN/ID/ (and RUN); 0 or -errno with the folder named in err. */
int prov_vm_dir(const struct provider_env *env, const struct vm *vm,
		char *err, size_t errlen);

/* Start argv in its own session with stdout and stderr appended to log;
   fills *p (pid and start time) and returns the pid, or -errno. */
int prov_spawn(char *const argv[], const char *log, struct vm_proc *p);

/* Signal p (sig 0: only wait) and wait up to ms for it to go, then
   SIGKILL it; p is cleared either way. */
void prov_stop(struct vm_proc *p, int sig, unsigned ms);

/* A connected stream socket to path, or -errno. */
int prov_connect(const char *path);

/* Wait until path accepts a connection while p runs (at most ms): 0,
   -ECHILD when p ended first, -ETIMEDOUT. */
int prov_wait_socket(const char *path, const struct vm_proc *p,
		     unsigned ms);

/* The last line of log (empty when there is none), for messages. */
void prov_log_tail(const char *log, char *out, size_t len);

/* One JSON object per line from fd, into buf (cap bytes, *have used),
   waiting at most ms for each read; NULL on timeout, EOF or overlong. */
json_t *prov_json_line(int fd, char *buf, size_t cap, size_t *have, int ms);

/* One request on the control socket path (one JSON object per line, the
   reply {"return": {...}} or {"error": ...}), its reply within ms: the
   "return" object (a new reference), or NULL with the reason in err,
   which starts with what (e.g. "web: disk 0") and names who answered. */
json_t *prov_ctl_call(const char *path, json_t *req, int ms, const char *who,
		      const char *what, char *err, size_t errlen);

/* The VMM's CPU seconds and resident bytes into out (0 when it is not
   running); the caller fills running_disks. */
void prov_vmm_stats(const struct vm *vm, struct vm_stats *out);

/* Stop the disk servers of vm (none for a VMM that serves its disks
   itself): SIGTERM, which flushes and closes the images. */
void prov_stop_disks(struct vm *vm);

/* provider_ops.poll for both: when vm's VMM has gone while vm is on,
   stop its disk servers and set it Off; true when vm changed. */
bool prov_poll(const struct provider_env *env, struct vm *vm);

/* 0 when vm is on and, unless need is VM_OFF (any), in power need; else
   -EINVAL with the VM's state in err. */
int prov_need_power(const struct vm *vm, enum vm_power need, char *err,
		    size_t errlen);

/* Record that provider name runs vm now (struct vm.provider). */
void prov_record(struct vm *vm, const char *name);

#endif /* OVK_MGMT_PROCS_H */
