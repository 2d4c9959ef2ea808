/* SPDX-License-Identifier: Apache-2.0 */
#include "vm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MISC_ENABLE_FAST_STRING (1ull << 0)

#define X86_CR0_PE (1ull << 0)
#define X86_CR0_ET (1ull << 4)
#define X86_CR0_PG (1ull << 31)
#define X86_CR4_PAE (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

static int set_msrs(struct vcpu *vcpu)
{
	/* struct kvm_msrs ends in a flexible array: lay it out by hand. */
	struct {
		uint32_t nmsrs, pad;
		struct kvm_msr_entry e[1];
	} msrs;
	_Static_assert(__builtin_offsetof(struct kvm_msrs, entries) == 8,
		       "struct kvm_msrs layout");

	memset(&msrs, 0, sizeof(msrs));
	msrs.nmsrs = 1;
	msrs.e[0].index = MSR_IA32_MISC_ENABLE;
	msrs.e[0].data = MISC_ENABLE_FAST_STRING;
	if (ioctl(vcpu->fd, KVM_SET_MSRS, &msrs) != 1)
		return -EIO;
	return 0;
}

static void flat_segment(struct kvm_segment *s, uint16_t sel, uint8_t type,
			 bool code64)
{
	*s = (struct kvm_segment){
		.base = 0,
		.limit = 0xffffffff,
		.selector = sel,
		.type = type,
		.present = 1,
		.dpl = 0,
		.db = code64 ? 0 : 1,
		.s = 1,
		.l = code64,
		.g = 1,
	};
}

/* The BSP's state for the 64-bit boot protocol entry. */
static int set_boot_state(struct vcpu *vcpu, const struct boot_entry *entry)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	flat_segment(&sregs.cs, BOOT_CS, 0xb, true);
	flat_segment(&sregs.ds, BOOT_DS, 0x3, false);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.gdt.base = entry->gdt_base;
	sregs.gdt.limit = entry->gdt_limit;
	sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
	sregs.cr3 = entry->cr3;
	sregs.cr4 = X86_CR4_PAE;
	sregs.efer = EFER_LME | EFER_LMA;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;

	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2; /* bit 1 is always set; interrupts off */
	regs.rip = entry->rip;
	regs.rsi = entry->rsi;
	regs.rsp = entry->rsp;
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}

int vcpu_create(struct vm *vm, unsigned index, const struct boot_entry *entry)
{
	struct vcpu *vcpu = &vm->vcpus[index];
	static struct cpuid_table cpuid; /* large; vCPUs are made one by one */
	int rc, mmap_size;

	vcpu->vm = vm;
	vcpu->index = index;
	vcpu->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (vcpu->fd < 0) {
		rc = -errno;
		fprintf(stderr, "ovkvm: KVM_CREATE_VCPU %u: %s\n", index, strerror(errno));
		return rc;
	}
	mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size <= 0) {
		fprintf(stderr, "ovkvm: KVM_GET_VCPU_MMAP_SIZE failed\n");
		return -EIO;
	}
	vcpu->run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			 vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		rc = -errno;
		fprintf(stderr, "ovkvm: mapping vCPU %u's run area: %s\n", index,
			strerror(errno));
		return rc;
	}
	vcpu->run_size = mmap_size;

	struct cpuid_options opt = {
		.index = index,
		.ncpus = vm->ncpus,
		.tsc_deadline = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION,
				      KVM_CAP_TSC_DEADLINE_TIMER) > 0,
	};
	rc = cpuid_build(&vm->supported_cpuid, &opt, &cpuid);
	if (rc == 0 && ioctl(vcpu->fd, KVM_SET_CPUID2, &cpuid) < 0)
		rc = -errno;
	if (rc) {
		fprintf(stderr, "ovkvm: KVM_SET_CPUID2 on vCPU %u: %s\n", index,
			strerror(-rc));
		return rc;
	}
	rc = set_msrs(vcpu);
	if (rc) {
		fprintf(stderr, "ovkvm: KVM_SET_MSRS on vCPU %u failed\n", index);
		return rc;
	}
	/* Only the BSP is set up; the in-kernel LAPIC holds the APs in
	 * wait-for-SIPI until the guest starts them. */
	if (index == 0) {
		rc = set_boot_state(vcpu, entry);
		if (rc) {
			fprintf(stderr, "ovkvm: setting the boot CPU state: %s\n",
				strerror(-rc));
			return rc;
		}
	}
	return 0;
}

void vcpu_destroy(struct vcpu *vcpu)
{
	if (vcpu->run)
		munmap(vcpu->run, vcpu->run_size);
	vcpu->run = NULL;
	if (vcpu->fd >= 0)
		close(vcpu->fd);
	vcpu->fd = -1;
}

void vcpu_kick(struct vcpu *vcpu)
{
	/* immediate_exit covers a kick that lands just before KVM_RUN; the
	 * signal covers one already inside it. */
	__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	pthread_kill(vcpu->thread, SIGUSR1);
}

static void crash_report(struct vcpu *vcpu, const char *what)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) == 0 &&
	    ioctl(vcpu->fd, KVM_GET_SREGS, &s) == 0)
		vm_request_stop(vcpu->vm, VM_STOP_CRASH,
				"vCPU %u: %s (rip %#llx rsp %#llx cr0 %#llx cr3 %#llx "
				"cr4 %#llx efer %#llx)",
				vcpu->index, what, (unsigned long long)r.rip,
				(unsigned long long)r.rsp, (unsigned long long)s.cr0,
				(unsigned long long)s.cr3, (unsigned long long)s.cr4,
				(unsigned long long)s.efer);
	else
		vm_request_stop(vcpu->vm, VM_STOP_CRASH, "vCPU %u: %s", vcpu->index,
				what);
}

/* Wait outside KVM_RUN while the VM is paused. */
static void vcpu_park(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;

	pthread_mutex_lock(&vm->pause_lock);
	vm->paused++;
	pthread_cond_broadcast(&vm->pause_cond);
	while (vm->pause_requested &&
	       !__atomic_load_n(&vm->stop_reason, __ATOMIC_SEQ_CST))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	vm->paused--;
	/* The kick that parked us must not bounce the next KVM_RUN. */
	__atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->pause_lock);
}

static void handle_io(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;

	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
		bus_access(&vcpu->vm->pio, run->io.port, data, run->io.size,
			   run->io.direction == KVM_EXIT_IO_OUT);
}

void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;
	sigset_t unblock;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%u", vcpu->index);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&unblock);
	sigaddset(&unblock, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);

	while (!__atomic_load_n(&vm->stop_reason, __ATOMIC_SEQ_CST)) {
		if (__atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST)) {
			vcpu_park(vcpu);
			continue;
		}
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			vm_request_stop(vm, VM_STOP_ERROR, "vCPU %u: KVM_RUN: %s",
					vcpu->index, strerror(errno));
			break;
		}
		__atomic_fetch_add(&vcpu->exits, 1, __ATOMIC_RELAXED);
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			__atomic_fetch_add(&vcpu->io_exits, 1, __ATOMIC_RELAXED);
			handle_io(vcpu);
			break;
		case KVM_EXIT_MMIO:
			__atomic_fetch_add(&vcpu->mmio_exits, 1, __ATOMIC_RELAXED);
			bus_access(&vm->mmio, run->mmio.phys_addr, run->mmio.data,
				   run->mmio.len, run->mmio.is_write);
			break;
		case KVM_EXIT_INTR:
		case KVM_EXIT_HLT:
			break;
		case KVM_EXIT_SHUTDOWN:
			crash_report(vcpu, "triple fault: the guest shut the CPU down");
			break;
		case KVM_EXIT_SYSTEM_EVENT:
			if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN)
				vm_request_stop(vm, VM_STOP_POWEROFF, NULL);
			else if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
				vm_request_stop(vm, VM_STOP_REBOOT, NULL);
			else
				crash_report(vcpu, "system event: guest crash");
			break;
		case KVM_EXIT_INTERNAL_ERROR: {
			char what[64];
			snprintf(what, sizeof(what), "KVM internal error, suberror %u",
				 run->internal.suberror);
			crash_report(vcpu, what);
			break;
		}
		case KVM_EXIT_FAIL_ENTRY: {
			char what[80];
			snprintf(what, sizeof(what), "VM entry failed, reason %#llx",
				 (unsigned long long)run->fail_entry
					 .hardware_entry_failure_reason);
			crash_report(vcpu, what);
			break;
		}
		default: {
			char what[48];
			snprintf(what, sizeof(what), "unhandled exit reason %u",
				 run->exit_reason);
			vm_request_stop(vm, VM_STOP_ERROR, "vCPU %u: %s", vcpu->index, what);
			break;
		}
		}
	}
	if (getenv("OVKVM_DEBUG")) {
		struct kvm_regs r;
		if (ioctl(vcpu->fd, KVM_GET_REGS, &r) == 0)
			fprintf(stderr, "ovkvm: vCPU %u stopped at rip %#llx\n",
				vcpu->index, (unsigned long long)r.rip);
	}
	return NULL;
}
