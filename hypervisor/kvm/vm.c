/* SPDX-License-Identifier: Apache-2.0 */
#include "vm.h"
#include "kvmprobe.h"
#include "../devices/device.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* Three pages just below the BIOS ROM alias at 4 GiB - 256 KiB that Intel
 * VMX needs for real-mode emulation (unused on AMD, harmless there). */
#define KVM_IDENTITY_MAP_GPA 0xfeffc000ull
#define KVM_TSS_GPA 0xfeffd000ull

#define KVM_API_VERSION_WANTED 12

static int need_cap(int kvm_fd, int cap, const char *name)
{
	if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, cap) <= 0) {
		fprintf(stderr, "ovkvm: the host KVM lacks %s\n", name);
		return -ENOTSUP;
	}
	return 0;
}

/* Wire the ISA interrupt lines (GSIs 0-15) to the in-kernel 8259 pair and
 * GSIs 0-23 to the IOAPIC pins, with the PC's one twist that the MADT also
 * announces: ISA IRQ 0 (the PIT) arrives on IOAPIC pin 2, and GSI 2 (the
 * 8259 cascade) is not a device line. */
static int set_irq_routing(struct vm *vm)
{
	/* struct kvm_irq_routing ends in a flexible array. */
	struct {
		uint32_t nr, flags;
		struct kvm_irq_routing_entry e[16 + 24 + VM_MAX_MSI];
	} r;
	_Static_assert(__builtin_offsetof(struct kvm_irq_routing, entries) == 8,
		       "struct kvm_irq_routing layout");
	unsigned n = 0;

	memset(&r, 0, sizeof(r));
	for (unsigned gsi = 0; gsi < 16; gsi++) {
		if (gsi == 2)
			continue;
		r.e[n].gsi = gsi;
		r.e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
		r.e[n].u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER
						   : KVM_IRQCHIP_PIC_SLAVE;
		r.e[n].u.irqchip.pin = gsi % 8;
		n++;
	}
	for (unsigned gsi = 0; gsi < 24; gsi++) {
		if (gsi == 2)
			continue;
		r.e[n].gsi = gsi;
		r.e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
		r.e[n].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		r.e[n].u.irqchip.pin = gsi == 0 ? 2 : gsi;
		n++;
	}
	/* MSI routes: GSI 24 + i for the i-th vector handed out. */
	for (unsigned i = 0; i < vm->nmsi; i++) {
		if (!vm->msi[i].valid)
			continue;
		r.e[n].gsi = VM_FIRST_MSI_GSI + i;
		r.e[n].type = KVM_IRQ_ROUTING_MSI;
		r.e[n].u.msi.address_lo = (uint32_t)vm->msi[i].addr;
		r.e[n].u.msi.address_hi = vm->msi[i].addr >> 32;
		r.e[n].u.msi.data = vm->msi[i].data;
		n++;
	}
	r.nr = n;
	if (ioctl(vm->fd, KVM_SET_GSI_ROUTING, &r) < 0)
		return -errno;
	return 0;
}

int vm_msi_alloc(struct vm *vm, int irqfd)
{
	struct kvm_irqfd f = { .fd = irqfd };
	int i;

	pthread_mutex_lock(&vm->msi_lock);
	if (vm->nmsi == VM_MAX_MSI) {
		pthread_mutex_unlock(&vm->msi_lock);
		return -ENOSPC;
	}
	i = vm->nmsi++;
	pthread_mutex_unlock(&vm->msi_lock);
	f.gsi = VM_FIRST_MSI_GSI + i;
	if (ioctl(vm->fd, KVM_IRQFD, &f) < 0)
		return -errno;
	return f.gsi;
}

int vm_msi_route(struct vm *vm, unsigned gsi, uint64_t addr, uint32_t data)
{
	unsigned i = gsi - VM_FIRST_MSI_GSI;
	int rc;

	if (gsi < VM_FIRST_MSI_GSI || i >= VM_MAX_MSI)
		return -EINVAL;
	pthread_mutex_lock(&vm->msi_lock);
	if (vm->msi[i].valid && vm->msi[i].addr == addr && vm->msi[i].data == data) {
		pthread_mutex_unlock(&vm->msi_lock);
		return 0;
	}
	vm->msi[i].valid = true;
	vm->msi[i].addr = addr;
	vm->msi[i].data = data;
	rc = set_irq_routing(vm);
	pthread_mutex_unlock(&vm->msi_lock);
	return rc;
}

int vm_ioeventfd(struct vm *vm, uint64_t gpa, unsigned len, int fd, bool assign)
{
	struct kvm_ioeventfd e = {
		.addr = gpa, .len = len, .fd = fd,
		.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};

	if (ioctl(vm->fd, KVM_IOEVENTFD, &e) < 0)
		return -errno;
	return 0;
}

static int set_memory(struct vm *vm)
{
	struct kvm_userspace_memory_region r = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = vm->mem.low_size,
		.userspace_addr = (uintptr_t)vm->mem.host,
	};

	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return -errno;
	if (vm->mem.ram_size == vm->mem.low_size)
		return 0;
	r.slot = 1;
	r.guest_phys_addr = GUEST_HIGH_RAM_START;
	r.memory_size = vm->mem.ram_size - vm->mem.low_size;
	r.userspace_addr = (uintptr_t)(vm->mem.host + vm->mem.low_size);
	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return -errno;
	return 0;
}

int vm_create(struct vm *vm, uint64_t ram_size, unsigned ncpus)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	int rc, max_cpus;

	memset(vm, 0, sizeof(*vm));
	vm->fd = vm->stop_efd = -1;
	vm->ncpus = ncpus;
	for (unsigned i = 0; i < VM_MAX_CPUS; i++)
		vm->vcpus[i].fd = -1;

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		rc = -errno;
		fprintf(stderr, "ovkvm: /dev/kvm: %s\n", strerror(errno));
		return rc;
	}
	if (kvmprobe_cpu_virt() == 0)
		fprintf(stderr, "ovkvm: warning: this CPU shows neither svm nor "
			"vmx in /proc/cpuinfo, so /dev/kvm is likely a "
			"paravirtual KVM (PVM) that runs only kernels built "
			"for it; an unmodified kernel may never start\n");
	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION_WANTED) {
		fprintf(stderr, "ovkvm: unexpected KVM API version\n");
		rc = -ENOTSUP;
		goto err_close_kvm;
	}
	if ((rc = need_cap(vm->kvm_fd, KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP")) ||
	    (rc = need_cap(vm->kvm_fd, KVM_CAP_PIT2, "KVM_CAP_PIT2")) ||
	    (rc = need_cap(vm->kvm_fd, KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING")) ||
	    (rc = need_cap(vm->kvm_fd, KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR")) ||
	    (rc = need_cap(vm->kvm_fd, KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID")) ||
	    (rc = need_cap(vm->kvm_fd, KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")) ||
	    (rc = need_cap(vm->kvm_fd, KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY")) ||
	    (rc = need_cap(vm->kvm_fd, KVM_CAP_IRQFD, "KVM_CAP_IRQFD")) ||
	    (rc = need_cap(vm->kvm_fd, KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD")))
		goto err_close_kvm;
	max_cpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (max_cpus <= 0)
		max_cpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (max_cpus > 0 && ncpus > (unsigned)max_cpus) {
		fprintf(stderr, "ovkvm: the host KVM allows at most %d vCPUs\n", max_cpus);
		rc = -EINVAL;
		goto err_close_kvm;
	}

	vm->supported_cpuid.head.nent = CPUID_MAX_ENTRIES;
	if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, &vm->supported_cpuid) < 0) {
		rc = -errno;
		fprintf(stderr, "ovkvm: KVM_GET_SUPPORTED_CPUID: %s\n", strerror(errno));
		goto err_close_kvm;
	}

	vm->fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0) {
		rc = -errno;
		fprintf(stderr, "ovkvm: KVM_CREATE_VM: %s\n", strerror(errno));
		goto err_close_kvm;
	}
	uint64_t idmap = KVM_IDENTITY_MAP_GPA;
	if (ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0 ||
	    ioctl(vm->fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_GPA) < 0 ||
	    ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0 ||
	    ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0 || set_irq_routing(vm) < 0) {
		rc = -errno;
		fprintf(stderr, "ovkvm: setting up the VM's irqchip and PIT: %s\n",
			strerror(errno));
		goto err_close_vm;
	}

	rc = guest_memory_alloc(&vm->mem, ram_size);
	if (rc) {
		fprintf(stderr, "ovkvm: cannot map %llu bytes of guest memory: %s\n",
			(unsigned long long)ram_size, strerror(-rc));
		goto err_close_vm;
	}
	rc = set_memory(vm);
	if (rc) {
		fprintf(stderr, "ovkvm: KVM_SET_USER_MEMORY_REGION: %s\n", strerror(-rc));
		goto err_free_mem;
	}

	vm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->stop_efd < 0) {
		rc = -errno;
		goto err_free_mem;
	}
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_mutex_init(&vm->msi_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	vm->pio.name = "pio";
	vm->mmio.name = "mmio";
	vm->pio.trace = vm->mmio.trace = getenv("OVKVM_DEBUG") != NULL;
	return 0;

err_free_mem:
	guest_memory_free(&vm->mem);
err_close_vm:
	close(vm->fd);
err_close_kvm:
	close(vm->kvm_fd);
	return rc;
}

void vm_destroy(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
	close(vm->stop_efd);
	pthread_cond_destroy(&vm->pause_cond);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_mutex_destroy(&vm->msi_lock);
	guest_memory_free(&vm->mem);
	close(vm->fd);
	close(vm->kvm_fd);
}

int vm_create_vcpus(struct vm *vm, const struct boot_entry *entry)
{
	for (unsigned i = 0; i < vm->ncpus; i++) {
		int rc = vcpu_create(vm, i, entry);
		if (rc)
			return rc;
	}
	return 0;
}

void vm_request_stop(struct vm *vm, enum vm_stop reason, const char *fmt, ...)
{
	int expected = VM_RUNNING;
	uint64_t one = 1;
	va_list ap;

	if (!__atomic_compare_exchange_n(&vm->stop_reason, &expected, reason, false,
					 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		return;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(vm->stop_msg, sizeof(vm->stop_msg), fmt, ap);
		va_end(ap);
	}
	if (write(vm->stop_efd, &one, sizeof(one)) < 0)
		perror("ovkvm: stop eventfd");
	/* Parked vCPUs and a waiting vm_pause() must see the stop. */
	pthread_mutex_lock(&vm->pause_lock);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

void vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	if (vm->pause_requested) {
		pthread_mutex_unlock(&vm->pause_lock);
		return;
	}
	__atomic_store_n(&vm->pause_requested, true, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->pause_lock);
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].thread_started)
			vcpu_kick(&vm->vcpus[i]);
	pthread_mutex_lock(&vm->pause_lock);
	while (vm->paused < vm->running_threads &&
	       !__atomic_load_n(&vm->stop_reason, __ATOMIC_SEQ_CST))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	pthread_mutex_unlock(&vm->pause_lock);
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	__atomic_store_n(&vm->pause_requested, false, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

bool vm_is_paused(struct vm *vm)
{
	return __atomic_load_n(&vm->pause_requested, __ATOMIC_SEQ_CST);
}

void vm_set_irq_line(struct vm *vm, unsigned irq, bool level)
{
	struct kvm_irq_level l = { .irq = irq, .level = level };

	if (ioctl(vm->fd, KVM_IRQ_LINE, &l) < 0)
		vm_request_stop(vm, VM_STOP_ERROR, "KVM_IRQ_LINE %u: %s", irq,
				strerror(errno));
}

/* A 1 MiB stack, not glibc's 8 MiB (RLIMIT_STACK): only touched stack
 * pages are resident, but with transparent huge pages "always" (Debian's
 * default) a stack mapping of 2 MiB or more can take a whole 2 MiB page
 * at its first touch when it happens to be aligned; a mapping under 2 MiB
 * holds no aligned 2 MiB range, so never.  The margin: --breakdown of
 * bench/ovkvm_memory.py measures these stacks at 20-40 KiB touched, and
 * the largest fixed frame in ovkvm is 16 KiB (objdump); an overflow hits
 * the guard page below the stack and faults. */
int vm_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	pthread_attr_t a;
	int rc = pthread_attr_init(&a);

	if (rc)
		return rc;
	rc = pthread_attr_setstacksize(&a, VM_THREAD_STACK);
	if (rc == 0)
		rc = pthread_create(t, &a, fn, arg);
	pthread_attr_destroy(&a);
	return rc;
}

static void kick_handler(int sig)
{
	(void)sig;
}

static void console_quit(void *opaque)
{
	vm_request_stop(opaque, VM_STOP_HOST, "quit key pressed on the console");
}

static size_t console_receive(void *opaque, const uint8_t *buf, size_t len)
{
	struct vm *vm = opaque;
	return serial_receive(&vm->serial, buf, len);
}

enum vm_stop vm_run(struct vm *vm)
{
	struct pollfd pfd[2 + CONSOLE_MAX_POLLFDS];
	struct sigaction sa = { .sa_handler = kick_handler };
	sigset_t mask;
	int sfd, rc;
	unsigned started = 0;

	/* SIGUSR1 only interrupts KVM_RUN; termination signals are read from a
	 * signalfd on this thread and stay blocked everywhere else. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		vm_request_stop(vm, VM_STOP_ERROR, "signalfd: %s", strerror(errno));
		return vm->stop_reason;
	}
	vm->console->sink = (struct console_sink){
		.receive = console_receive, .quit = console_quit, .opaque = vm,
	};

	vm->running_threads = vm->ncpus;
	for (unsigned i = 0; i < vm->ncpus; i++) {
		rc = vm_thread_create(&vm->vcpus[i].thread, vcpu_thread, &vm->vcpus[i]);
		if (rc) {
			vm_request_stop(vm, VM_STOP_ERROR, "starting vCPU %u: %s", i,
					strerror(rc));
			break;
		}
		vm->vcpus[i].thread_started = true;
		started++;
	}
	vm->running_threads = started;

	while (!__atomic_load_n(&vm->stop_reason, __ATOMIC_SEQ_CST)) {
		int n = 0, ncon;
		pfd[n++] = (struct pollfd){ .fd = vm->stop_efd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		ncon = console_pollfds(vm->console, pfd + n);
		if (poll(pfd, n + ncon, -1) < 0) {
			if (errno == EINTR)
				continue;
			vm_request_stop(vm, VM_STOP_ERROR, "poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si))
				vm_request_stop(vm, VM_STOP_HOST, "stopped by signal %s",
						strsignal(si.ssi_signo));
		}
		console_handle(vm->console, pfd + n, ncon);
	}

	for (unsigned i = 0; i < started; i++)
		vcpu_kick(&vm->vcpus[i]);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(vm->vcpus[i].thread, NULL);
		vm->vcpus[i].thread_started = false;
	}
	close(sfd);
	return vm->stop_reason;
}
