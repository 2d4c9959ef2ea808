/* SPDX-License-Identifier: Apache-2.0 */
#include "cpuid.h"

#include <errno.h>
#include <string.h>

#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)
#define CPUID_1_EDX_HTT (1u << 28)

struct kvm_cpuid_entry2 *cpuid_find(struct cpuid_table *t, uint32_t function,
				    uint32_t index)
{
	for (uint32_t i = 0; i < t->head.nent; i++) {
		struct kvm_cpuid_entry2 *e = &t->entries[i];
		if (e->function != function)
			continue;
		if ((e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e->index != index)
			continue;
		return e;
	}
	return NULL;
}

static struct kvm_cpuid_entry2 *cpuid_add(struct cpuid_table *t,
					  uint32_t function)
{
	struct kvm_cpuid_entry2 *e;

	if (t->head.nent == CPUID_MAX_ENTRIES)
		return NULL;
	e = &t->entries[t->head.nent++];
	memset(e, 0, sizeof(*e));
	e->function = function;
	return e;
}

int cpuid_build(const struct cpuid_table *supported,
		const struct cpuid_options *opt, struct cpuid_table *out)
{
	unsigned index = opt->index, ncpus = opt->ncpus;
	struct kvm_cpuid_entry2 *e;

	if (supported->head.nent > CPUID_MAX_ENTRIES)
		return -E2BIG;
	memset(&out->head, 0, sizeof(out->head));
	out->head.nent = supported->head.nent;
	memcpy(out->entries, supported->entries,
	       supported->head.nent * sizeof(out->entries[0]));

	for (uint32_t i = 0; i < out->head.nent; i++) {
		e = &out->entries[i];
		switch (e->function) {
		case 1:
			e->ecx |= CPUID_1_ECX_HYPERVISOR;
			if (opt->tsc_deadline)
				e->ecx |= CPUID_1_ECX_TSC_DEADLINE;
			/* EBX: initial APIC ID in 31:24, logical processors
			 * per package in 23:16. */
			e->ebx = (e->ebx & 0x0000ffffu) | (index << 24) |
				 ((ncpus > 255 ? 255 : ncpus) << 16);
			if (ncpus > 1)
				e->edx |= CPUID_1_EDX_HTT;
			else
				e->edx &= ~CPUID_1_EDX_HTT;
			break;
		case 0xb:
		case 0x1f:
			/* Extended topology: x2APIC ID of this vCPU in EDX. */
			e->edx = index;
			break;
		case 0x8000001e:
			/* AMD: extended APIC ID. */
			e->eax = index;
			break;
		}
	}

	/* KVM reports its PV leaves; make sure the signature is there and that
	 * its EAX names the highest PV leaf we pass through. */
	e = cpuid_find(out, KVM_CPUID_SIGNATURE_LEAF, 0);
	if (!e && !(e = cpuid_add(out, KVM_CPUID_SIGNATURE_LEAF)))
		return -E2BIG;
	memcpy(&e->ebx, "KVMK", 4);
	memcpy(&e->ecx, "VMKV", 4);
	memcpy(&e->edx, "M\0\0\0", 4);
	if (e->eax < KVM_CPUID_FEATURES_LEAF)
		e->eax = KVM_CPUID_FEATURES_LEAF;
	if (!cpuid_find(out, KVM_CPUID_FEATURES_LEAF, 0) &&
	    !cpuid_add(out, KVM_CPUID_FEATURES_LEAF))
		return -E2BIG;
	return 0;
}
