/* SPDX-License-Identifier: Apache-2.0 */
/* One KVM virtual machine: RAM, the in-kernel irqchip and PIT, the buses,
 * the devices, and one thread per vCPU.  vCPU threads only run KVM_RUN and
 * dispatch exits; the main thread waits on file descriptors (stop eventfd,
 * signals, console) until the VM stops. */
#ifndef OVKVM_VM_H
#define OVKVM_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <linux/kvm.h>

#include "cpuid.h"
#include "memory.h"
#include "../boot/boot.h"
#include "../devices/bus.h"
#include "../devices/console.h"
#include "../devices/power.h"
#include "../devices/serial.h"
#include "../control/control.h"
#include "../pci/pci.h"

#define VM_MAX_CPUS 64
#define VM_MAX_MSI 256     /* MSI routes (irqfds) */
#define VM_FIRST_MSI_GSI 24 /* after the IOAPIC's pins */
#define VM_MAX_DISKS 8

struct vmblk;

/* Why the VM stopped (the first reason wins). */
enum vm_stop {
	VM_RUNNING = 0,
	VM_STOP_POWEROFF, /* the guest powered off */
	VM_STOP_REBOOT,   /* the guest asked for a reset: we end too */
	VM_STOP_HOST,     /* SIGTERM/SIGINT or the console's quit key */
	VM_STOP_CRASH,    /* triple fault, emulation failure, failed entry */
	VM_STOP_ERROR,    /* a VMM error */
};

struct vm;

struct vcpu {
	struct vm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	/* KVM_RUN returns, and those for port I/O and MMIO (relaxed atomics;
	 * the control socket reads them). */
	uint64_t exits, io_exits, mmio_exits;
};

struct vm {
	int kvm_fd, fd;
	struct guest_memory mem;
	unsigned ncpus;
	struct vcpu vcpus[VM_MAX_CPUS];
	struct cpuid_table supported_cpuid;

	struct bus pio, mmio;
	struct pci_bus pci;
	struct pci_dev host_bridge;
	struct serial serial;
	struct power power;
	struct console *console;

	struct control *control; /* NULL without --api-socket */

	/* --disk options and the virtio-blk devices made from them. */
	const char *disk_args[VM_MAX_DISKS];
	unsigned ndisks;
	struct vmblk *disks[VM_MAX_DISKS];

	/* MSI routes, one per irqfd; the table is rebuilt on each change. */
	pthread_mutex_t msi_lock;
	unsigned nmsi;
	struct {
		bool valid;
		uint64_t addr;
		uint32_t data;
	} msi[VM_MAX_MSI];

	/* Pausing: the vCPU threads park on pause_cond while pause_requested;
	 * paused counts the parked ones. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	bool pause_requested;
	unsigned paused, running_threads;

	int stop_efd;          /* written when stop_reason is set */
	int stop_reason;       /* enum vm_stop, set once (atomic) */
	char stop_msg[256];
};

/* Open /dev/kvm, create the VM with its irqchip, PIT and `ram_size` bytes
 * of RAM; -errno with a message on stderr on failure. */
int vm_create(struct vm *vm, uint64_t ram_size, unsigned ncpus);
void vm_destroy(struct vm *vm);

/* Create the vCPUs; the BSP starts at `entry`, the APs wait for SIPI. */
int vm_create_vcpus(struct vm *vm, const struct boot_entry *entry);

/* Start the vCPU threads, wait until the VM stops, join the threads.
 * Returns the stop reason. */
enum vm_stop vm_run(struct vm *vm);

/* Ask the VM to stop (from any thread); only the first call counts. */
void vm_request_stop(struct vm *vm, enum vm_stop reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Park every vCPU outside KVM_RUN and return once they all are; resume
 * lets them go on.  Main thread only. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
bool vm_is_paused(struct vm *vm);

/* pthread_create() with a VM_THREAD_STACK stack: for ovkvm's vCPU and I/O
 * threads, whose deepest stacks measured are under 40 KiB.  Returns 0 or
 * an errno value, as pthread_create() does. */
#define VM_THREAD_STACK (1u << 20)
int vm_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);

/* Drive an interrupt line of the in-kernel PIC/IOAPIC. */
void vm_set_irq_line(struct vm *vm, unsigned irq, bool level);

/* A GSI for MSI delivered by eventfd `irqfd` (KVM_IRQFD); the route
 * (vm_msi_route) says where it goes.  Returns the GSI or -errno. */
int vm_msi_alloc(struct vm *vm, int irqfd);
int vm_msi_route(struct vm *vm, unsigned gsi, uint64_t addr, uint32_t data);
/* Make guest writes of `len` bytes at `gpa` signal eventfd `fd` in the
 * kernel (no exit), or stop it. */
int vm_ioeventfd(struct vm *vm, uint64_t gpa, unsigned len, int fd, bool assign);

/* vcpu.c */
int vcpu_create(struct vm *vm, unsigned index, const struct boot_entry *entry);
void vcpu_destroy(struct vcpu *vcpu);
void *vcpu_thread(void *arg);
/* Make a vCPU leave KVM_RUN (its thread then sees the stop reason). */
void vcpu_kick(struct vcpu *vcpu);

#endif
