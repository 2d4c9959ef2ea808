/* SPDX-License-Identifier: Apache-2.0 */
/* CPUID building: hypervisor bit, APIC IDs, KVM PV leaves. */
#include "check.h"
#include "kvm/cpuid.h"

#include <string.h>

static struct cpuid_table supported, out;

static void add(uint32_t fn, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx)
{
	struct kvm_cpuid_entry2 *e = &supported.entries[supported.head.nent++];
	memset(e, 0, sizeof(*e));
	e->function = fn;
	e->eax = eax;
	e->ebx = ebx;
	e->ecx = ecx;
	e->edx = edx;
}

int main(void)
{
	struct cpuid_options opt = { .index = 3, .ncpus = 4, .tsc_deadline = true };
	struct kvm_cpuid_entry2 *e;

	add(0, 0xd, 0x68747541, 0x444d4163, 0x69746e65);
	add(1, 0x800f12, 0xff0a0800, 0x00000001, 0x0);
	add(0xb, 1, 1, 0x100, 0);
	add(0x40000001, 0x01007afb, 0, 0, 0); /* features; no signature leaf */

	CHECK_EQ(cpuid_build(&supported, &opt, &out), 0);
	e = cpuid_find(&out, 1, 0);
	CHECK(e);
	CHECK(e->ecx & (1u << 31)); /* hypervisor */
	CHECK(e->ecx & (1u << 24)); /* TSC deadline */
	CHECK(e->ecx & 1);          /* the rest kept */
	CHECK_EQ(e->ebx >> 24, 3);  /* APIC ID */
	CHECK_EQ((e->ebx >> 16) & 0xff, 4);
	CHECK_EQ(e->ebx & 0xffff, 0x0800);
	CHECK_EQ(cpuid_find(&out, 0xb, 0)->edx, 3);

	e = cpuid_find(&out, 0x40000000, 0);
	CHECK(e);
	CHECK(memcmp(&e->ebx, "KVMK", 4) == 0);
	CHECK(memcmp(&e->ecx, "VMKV", 4) == 0);
	CHECK(memcmp(&e->edx, "M\0\0\0", 4) == 0);
	CHECK(e->eax >= 0x40000001);
	/* The PV feature bits are KVM's, untouched. */
	CHECK_EQ(cpuid_find(&out, 0x40000001, 0)->eax, 0x01007afb);
	/* The input is not modified. */
	CHECK_EQ(supported.entries[1].ebx, 0xff0a0800);
	CHECK(cpuid_find(&supported, 0x40000000, 0) == NULL);

	opt = (struct cpuid_options){ .index = 0, .ncpus = 1 };
	CHECK_EQ(cpuid_build(&supported, &opt, &out), 0);
	e = cpuid_find(&out, 1, 0);
	CHECK(!(e->ecx & (1u << 24)));
	CHECK_EQ(e->ebx >> 24, 0);
	CHECK(cpuid_find(&out, 0x40000000, 0));
	return 0;
}
