/* SPDX-License-Identifier: Apache-2.0 */
/* The CPUID a vCPU sees: what KVM supports (KVM_GET_SUPPORTED_CPUID), with
 * the hypervisor bit, the vCPU's APIC ID and topology, and the KVM
 * paravirtual leaves (0x40000000 "KVMKVMKVM", 0x40000001 features), so the
 * guest finds kvm-clock and the other PV features on its own. */
#ifndef OVKVM_CPUID_H
#define OVKVM_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#define CPUID_MAX_ENTRIES 256

#define KVM_CPUID_SIGNATURE_LEAF 0x40000000u
#define KVM_CPUID_FEATURES_LEAF 0x40000001u

/* struct kvm_cpuid2 with room for its entries (it ends in a flexible
 * array, so it cannot be embedded); pass &table as a struct kvm_cpuid2 *. */
struct cpuid_table {
	struct {
		uint32_t nent;
		uint32_t padding;
	} head;
	struct kvm_cpuid_entry2 entries[CPUID_MAX_ENTRIES];
};
_Static_assert(__builtin_offsetof(struct cpuid_table, entries) ==
		       __builtin_offsetof(struct kvm_cpuid2, entries),
	       "cpuid_table matches struct kvm_cpuid2");

struct cpuid_options {
	unsigned index, ncpus;  /* this vCPU (its APIC ID) and how many */
	/* KVM emulates the TSC-deadline LAPIC timer with an in-kernel
	 * irqchip (KVM_CAP_TSC_DEADLINE_TIMER) but leaves it out of
	 * KVM_GET_SUPPORTED_CPUID; say so here to offer it. */
	bool tsc_deadline;
};

/* Copy `supported` into `out` adjusted for one vCPU; 0 or -E2BIG. */
int cpuid_build(const struct cpuid_table *supported,
		const struct cpuid_options *opt, struct cpuid_table *out);

/* Find an entry (NULL if absent). */
struct kvm_cpuid_entry2 *cpuid_find(struct cpuid_table *t, uint32_t function,
				    uint32_t index);

#endif
