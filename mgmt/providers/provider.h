/* SPDX-License-Identifier: Apache-2.0 */
/*
 * provider.h - what runs a VM. A provider is an ops table; ovkd picks one
 * per VM and never looks inside. There are two: QEMU (KVM when /dev/kvm
 * is usable, else TCG) with every disk served by its own pvblk over
 * vhost-user-blk (qemu.c), and ovk's own hypervisor ovkvm, which boots
 * the VM's kernel on KVM and serves the disks itself (ovkvm.c). A VM that
 * runs records the provider that started it (struct vm.provider) and is
 * managed by that one until it is off, whatever ovkd's default is.
 *
 * Every call is made with the inventory lock held, returns 0 or -errno,
 * and on failure writes a sentence into err naming the VM and the cause.
 * Calls update vm's runtime fields (power, processes); the caller saves
 * the record.
 */
#ifndef OVK_MGMT_PROVIDER_H
#define OVK_MGMT_PROVIDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "inventory.h"

struct provider_env {
	const char *run_dir; /* per-VM sockets and logs: RUN/ID/ */
	const char *pvblk;   /* the pvblk program */
	const char *qemu;    /* qemu-system-x86_64 */
	const char *accel;   /* "kvm", "tcg", or NULL to choose */
	const char *ovkvm;   /* the ovkvm program, or NULL when none */
};

struct vm_stats {
	double cpu_seconds;      /* user + system time of the VMM */
	uint64_t rss_bytes;      /* resident memory of the VMM */
	unsigned running_disks;  /* disk servers alive */
};

/* A disk server's I/O counters since it started. */
struct disk_io {
	uint64_t requests;
	uint64_t read_bytes;
	uint64_t written_bytes;
	uint64_t errors;
};

struct provider_ops {
	const char *name;
	/* Power on: start the disk servers, then the VMM. */
	int (*start)(const struct provider_env *env, struct vm *vm,
		     char *err, size_t errlen);
	/* Power off now (the guest is not asked), then stop the disk
	   servers, which flush and close the images. */
	int (*force_off)(const struct provider_env *env, struct vm *vm,
			 char *err, size_t errlen);
	/* Ask the guest to power off (ACPI power button); returns at once.
	   -ENOTSUP when the provider has no way to ask. */
	int (*shutdown)(const struct provider_env *env, struct vm *vm,
			char *err, size_t errlen);
	int (*reset)(const struct provider_env *env, struct vm *vm,
		     char *err, size_t errlen);
	int (*pause)(const struct provider_env *env, struct vm *vm,
		     char *err, size_t errlen);
	int (*resume)(const struct provider_env *env, struct vm *vm,
		      char *err, size_t errlen);
	/* Look at the VM's processes; when the VMM has gone (the guest
	   powered off, or it crashed), stop the disk servers and set the
	   power Off. Returns true when vm changed. */
	bool (*poll)(const struct provider_env *env, struct vm *vm);
	void (*stats)(const struct provider_env *env, const struct vm *vm,
		      struct vm_stats *out);
	/* Disk i's I/O counters, asked of its running server: 0, or
	   -ENOENT when it is not running or does not count (NULL: the
	   provider never knows). */
	int (*disk_io)(const struct provider_env *env, const struct vm *vm,
		       unsigned i, struct disk_io *out);
	/* The live-disk control socket serving disk i of a running VM (the
	   requests of pvblk's --api-socket: checkpoint-*, changed, view-*,
	   status), for ovkdisk: its path in path, and in *disk the index
	   to name in each request ("disk": N, ovkdisk --disk N), or -1 when
	   the socket serves that disk alone. -ENOENT when not running. */
	int (*disk_socket)(const struct provider_env *env,
			   const struct vm *vm, unsigned i, char *path,
			   size_t len, int *disk);
	/* One request req on disk i's control socket; 0 with the reply's
	   "return" object in *reply (a new reference), else -errno with
	   the daemon's error in err. */
	int (*disk_command)(const struct provider_env *env,
			    const struct vm *vm, unsigned i, json_t *req,
			    json_t **reply, char *err, size_t errlen);
};

extern const struct provider_ops provider_qemu;
extern const struct provider_ops provider_ovkvm;

/* The provider called name ("qemu", "ovkvm"), or NULL. */
const struct provider_ops *provider_by_name(const char *name);

#endif /* OVK_MGMT_PROVIDER_H */
