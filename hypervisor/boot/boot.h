/* SPDX-License-Identifier: Apache-2.0 */
/* Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/boot.rst):
 * parse a bzImage, place kernel, initrd and command line in guest RAM, fill
 * the zero page (setup header, e820 map, RSDP address), build the ACPI
 * tables, identity page tables and a GDT, and say where to start the BSP. */
#ifndef OVKVM_BOOT_H
#define OVKVM_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../kvm/memory.h"

/* Guest-physical layout of the low megabyte. */
#define BOOT_GDT_GPA 0x500
#define BOOT_ZERO_PAGE_GPA 0x7000
#define BOOT_STACK_GPA 0x8ff0
#define BOOT_PML4_GPA 0x9000
#define BOOT_PDPT_GPA 0xa000
#define BOOT_PD_GPA 0xb000 /* four page directories: identity map of 4 GiB */
#define BOOT_CMDLINE_GPA 0x20000
#define BOOT_CMDLINE_MAX 0x10000
#define BOOT_EBDA_GPA 0x9fc00 /* RAM below here; reserved up to 1 MiB */
#define BOOT_HIGH_MEM_GPA 0x100000
#define BOOT_MIN_PROTOCOL 0x020c /* 2.12: xloadflags, 64-bit entry */

/* Segment selectors the boot protocol asks for. */
#define BOOT_CS 0x10
#define BOOT_DS 0x18

struct bzimage_info {
	uint16_t version;      /* boot protocol */
	uint32_t setup_size;   /* bytes of real-mode setup, incl. boot sector */
	uint32_t kernel_size;  /* protected-mode part, after the setup */
	uint64_t load_addr;    /* where the protected-mode part goes */
	uint32_t init_size;    /* memory the kernel needs from load_addr */
	uint32_t initrd_addr_max;
	uint32_t cmdline_size; /* longest command line, without the NUL */
	uint8_t xloadflags;
};

/* Check a bzImage of `len` bytes; fills `info`.  On failure returns -EINVAL
 * and writes why into `err`. */
int bzimage_parse(const uint8_t *img, size_t len, struct bzimage_info *info,
		  char *err, size_t errlen);

struct boot_config {
	const uint8_t *kernel;
	size_t kernel_len;
	const uint8_t *initrd; /* NULL for none */
	size_t initrd_len;
	const char *cmdline;
	unsigned ncpus;
};

/* Where and how the BSP starts (64-bit mode, paging on). */
struct boot_entry {
	uint64_t rip, rsi, rsp, cr3;
	uint64_t gdt_base;
	uint16_t gdt_limit;
	uint64_t initrd_gpa;
	uint64_t rsdp_gpa;
};

/* Lay out everything in `mem`; -errno with a message in `err` on failure. */
int boot_setup(const struct guest_memory *mem, const struct boot_config *cfg,
	       struct boot_entry *entry, char *err, size_t errlen);

/* Write the e820 map for `mem` into `table` (room for `max` entries);
 * returns the number of entries. */
unsigned boot_e820(const struct guest_memory *mem, void *table, unsigned max);

#endif
