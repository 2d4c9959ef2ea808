/* SPDX-License-Identifier: Apache-2.0 */
#include "boot.h"
#include "acpi.h"

#include <asm/bootparam.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(struct boot_params) == 4096, "the zero page is one page");
_Static_assert(offsetof(struct boot_params, acpi_rsdp_addr) == 0x070, "acpi_rsdp_addr");
_Static_assert(offsetof(struct boot_params, e820_entries) == 0x1e8, "e820_entries");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "e820_table");
_Static_assert(sizeof(struct boot_e820_entry) == 20, "e820 entries are 20 bytes");

#define E820_RAM 1
#define E820_RESERVED 2

#define PTE_PRESENT 0x1ull
#define PTE_RW 0x2ull
#define PTE_PS 0x80ull

/* Flat segments: 64-bit code and read/write data, base 0, limit 4 GiB. */
#define GDT_CODE64 0x00af9b000000ffffull
#define GDT_DATA 0x00cf93000000ffffull

static void add_e820(struct boot_e820_entry *t, unsigned *n, unsigned max,
		     uint64_t addr, uint64_t size, uint32_t type)
{
	if (*n < max && size)
		t[(*n)++] = (struct boot_e820_entry){ addr, size, type };
}

unsigned boot_e820(const struct guest_memory *mem, void *table, unsigned max)
{
	struct boot_e820_entry *t = table;
	unsigned n = 0;
	uint64_t high = mem->ram_size - mem->low_size;

	add_e820(t, &n, max, 0, BOOT_EBDA_GPA, E820_RAM);
	/* EBDA, VGA hole, BIOS area (where the ACPI tables live). */
	add_e820(t, &n, max, BOOT_EBDA_GPA, BOOT_HIGH_MEM_GPA - BOOT_EBDA_GPA,
		 E820_RESERVED);
	add_e820(t, &n, max, BOOT_HIGH_MEM_GPA, mem->low_size - BOOT_HIGH_MEM_GPA,
		 E820_RAM);
	add_e820(t, &n, max, GUEST_HIGH_RAM_START, high, E820_RAM);
	return n;
}

static int failf(char *err, size_t errlen, int rc, const char *msg)
{
	snprintf(err, errlen, "%s", msg);
	return rc;
}

int boot_setup(const struct guest_memory *mem, const struct boot_config *cfg,
	       struct boot_entry *entry, char *err, size_t errlen)
{
	struct bzimage_info info;
	struct boot_params *zp;
	uint64_t *pml4, *pdpt, *pd, *gdt, kernel_end, initrd_gpa = 0;
	size_t cmdlen = strlen(cfg->cmdline);
	uint8_t *acpi;
	int rc, hdr_len;

	rc = bzimage_parse(cfg->kernel, cfg->kernel_len, &info, err, errlen);
	if (rc)
		return rc;
	if (mem->low_size < 16ull << 20)
		return failf(err, errlen, -ENOMEM, "guest memory below 16 MiB");
	/* pref_address is the image's to choose: check without overflow. */
	if (info.load_addr > mem->low_size ||
	    info.init_size > mem->low_size - info.load_addr) {
		kernel_end = info.load_addr + info.init_size;
		snprintf(err, errlen,
			 "the kernel needs memory up to %#llx; give the guest more",
			 (unsigned long long)kernel_end);
		return -ENOMEM;
	}
	kernel_end = info.load_addr + info.init_size;
	if (cmdlen >= BOOT_CMDLINE_MAX ||
	    (info.cmdline_size && cmdlen > info.cmdline_size)) {
		snprintf(err, errlen, "command line is %zu bytes; the kernel takes at most %u",
			 cmdlen, info.cmdline_size);
		return -E2BIG;
	}

	memcpy(guest_ptr(mem, info.load_addr, info.kernel_size),
	       cfg->kernel + info.setup_size, info.kernel_size);
	memcpy(guest_ptr(mem, BOOT_CMDLINE_GPA, cmdlen + 1), cfg->cmdline,
	       cmdlen + 1);

	if (cfg->initrd) {
		/* Highest page-aligned spot below both the kernel's limit and the
		 * end of low RAM, but above the kernel's working area. */
		uint64_t top = mem->low_size;
		if (info.initrd_addr_max && (uint64_t)info.initrd_addr_max + 1 < top)
			top = (uint64_t)info.initrd_addr_max + 1;
		if (cfg->initrd_len > top)
			return failf(err, errlen, -ENOMEM, "initrd larger than guest memory");
		initrd_gpa = (top - cfg->initrd_len) & ~0xfffull;
		if (initrd_gpa < kernel_end)
			return failf(err, errlen, -ENOMEM,
				     "kernel and initrd do not fit in guest memory");
		memcpy(guest_ptr(mem, initrd_gpa, cfg->initrd_len), cfg->initrd,
		       cfg->initrd_len);
	}

	acpi = guest_ptr(mem, ACPI_TABLES_GPA, ACPI_TABLES_SIZE);
	entry->rsdp_gpa = acpi_build(acpi, ACPI_TABLES_GPA, ACPI_TABLES_SIZE,
				     cfg->ncpus);
	if (!entry->rsdp_gpa)
		return failf(err, errlen, -E2BIG, "too many vCPUs for the ACPI tables");

	/* The zero page starts as a copy of the image's setup header; its
	 * length is given by the jump at 0x200 (byte 0x201). */
	zp = guest_ptr(mem, BOOT_ZERO_PAGE_GPA, sizeof(*zp));
	memset(zp, 0, sizeof(*zp));
	hdr_len = 0x202 + cfg->kernel[0x201] - 0x1f1;
	if (hdr_len > (int)sizeof(zp->hdr))
		hdr_len = sizeof(zp->hdr);
	memcpy(&zp->hdr, cfg->kernel + 0x1f1, hdr_len);
	zp->hdr.type_of_loader = 0xff; /* undefined boot loader */
	zp->hdr.loadflags |= CAN_USE_HEAP;
	zp->hdr.loadflags &= ~KEEP_SEGMENTS;
	zp->hdr.heap_end_ptr = 0xfe00;
	zp->hdr.vid_mode = 0xffff; /* "normal" */
	zp->hdr.code32_start = info.load_addr;
	zp->hdr.cmd_line_ptr = BOOT_CMDLINE_GPA;
	zp->ext_cmd_line_ptr = 0;
	zp->hdr.ramdisk_image = initrd_gpa;
	zp->hdr.ramdisk_size = cfg->initrd ? cfg->initrd_len : 0;
	zp->acpi_rsdp_addr = entry->rsdp_gpa;
	zp->e820_entries = boot_e820(mem, zp->e820_table, E820_MAX_ENTRIES_ZEROPAGE);

	/* Identity map of the first 4 GiB with 2 MiB pages: covers the kernel,
	 * zero page, command line and initrd, as the 64-bit entry requires. */
	pml4 = guest_ptr(mem, BOOT_PML4_GPA, 4096);
	pdpt = guest_ptr(mem, BOOT_PDPT_GPA, 4096);
	pd = guest_ptr(mem, BOOT_PD_GPA, 4 * 4096);
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = BOOT_PDPT_GPA | PTE_PRESENT | PTE_RW;
	for (unsigned i = 0; i < 4; i++)
		pdpt[i] = (BOOT_PD_GPA + i * 4096ull) | PTE_PRESENT | PTE_RW;
	for (unsigned i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | PTE_PRESENT | PTE_RW | PTE_PS;

	gdt = guest_ptr(mem, BOOT_GDT_GPA, 4 * 8);
	gdt[0] = 0;
	gdt[1] = 0;
	gdt[BOOT_CS / 8] = GDT_CODE64;
	gdt[BOOT_DS / 8] = GDT_DATA;

	entry->rip = info.load_addr + 0x200; /* the 64-bit entry point */
	entry->rsi = BOOT_ZERO_PAGE_GPA;
	entry->rsp = BOOT_STACK_GPA;
	entry->cr3 = BOOT_PML4_GPA;
	entry->gdt_base = BOOT_GDT_GPA;
	entry->gdt_limit = 4 * 8 - 1;
	entry->initrd_gpa = initrd_gpa;
	return 0;
}
