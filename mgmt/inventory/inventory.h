/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inventory.h - the VMs ovkd manages: one JSON file per VM under
 * STATE/vms/, written crash-safely (temporary file, fsync, rename, fsync of
 * the folder), so a crash leaves either the old record or the new one.
 *
 * The record holds what the VM is (name, CPUs, memory, disks, boot
 * settings, where it was deployed from) and what runs it now (the
 * provider's process ids with their start times, so a restarted ovkd finds
 * its running VMs again and never mistakes a recycled pid for one).
 */
#ifndef OVK_MGMT_INVENTORY_H
#define OVK_MGMT_INVENTORY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define VM_MAX_DISKS 8

enum vm_power { VM_OFF, VM_ON, VM_PAUSED };

/* "On", "Off" or "Paused": Redfish's PowerState names. */
const char *vm_power_name(enum vm_power p);

struct vm_disk {
	char *path;    /* the image the VM writes (absolute) */
	char *source;  /* where it came from (package member), or NULL */
};

/* A process the provider started, known by pid and kernel start time. */
struct vm_proc {
	pid_t pid;
	unsigned long long start; /* /proc/PID/stat field 22; 0 = none */
};

struct vm {
	char *id;        /* stable, [A-Za-z0-9_-], the Redfish Id */
	char *name;
	char *package;   /* the OVF/OVA it was deployed from, or NULL */
	char *os;        /* OperatingSystemSection description, or NULL */
	unsigned cpus;
	uint64_t memory; /* bytes */
	struct vm_disk disks[VM_MAX_DISKS];
	unsigned ndisks;
	char *kernel, *initrd, *cmdline; /* direct Linux boot, or NULL */
	/* runtime */
	char *provider;  /* the provider that started it last ("qemu",
			    "ovkvm"), or NULL when never started */
	enum vm_power power;
	struct vm_proc vmm;                     /* QEMU or ovkvm */
	struct vm_proc blk[VM_MAX_DISKS];       /* one pvblk per disk (QEMU) */
	char *last_event;                       /* last state change, why */
	enum vm_power power_told;   /* the power the last event told of */
};

struct inventory;

/* Open (creating) STATE/vms and load every record. Records that cannot be
   read are named on stderr and skipped, never deleted. */
int inv_open(const char *state_dir, struct inventory **out);
void inv_close(struct inventory *inv);
const char *inv_state_dir(const struct inventory *inv);

unsigned inv_count(const struct inventory *inv);
struct vm *inv_at(struct inventory *inv, unsigned i);
struct vm *inv_find(struct inventory *inv, const char *id);

/* A free id made from name (letters, digits, '-', '_'); malloc'd. */
char *inv_new_id(struct inventory *inv, const char *name);
/* Take ownership of vm (id chosen from its name when NULL) and save it. */
int inv_add(struct inventory *inv, struct vm *vm);
/* Write vm's record again (after a change). */
int inv_save(struct inventory *inv, const struct vm *vm);
/* Remove vm's record and free it (its disks are left to the caller). */
int inv_remove(struct inventory *inv, struct vm *vm);

void vm_free(struct vm *vm);

/* The process's kernel start time, or 0 when pid is not running. */
unsigned long long proc_start_time(pid_t pid);
/* True when p names a process that is still the one we started. */
bool vm_proc_alive(const struct vm_proc *p);

#endif /* OVK_MGMT_INVENTORY_H */
