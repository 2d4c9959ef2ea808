/* SPDX-License-Identifier: Apache-2.0 */
/* The boot protocol setup: zero page fields at the offsets boot.rst gives,
 * e820 map, placement of kernel/initrd/command line, page tables, GDT and
 * the ACPI tables (checksums, MADT CPU list). */
#include "check.h"
#include "boot/acpi.h"
#include "boot/boot.h"

#include <errno.h>
#include <string.h>

#define MiB (1ull << 20)

static uint8_t image[256 * 1024];

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* A fake bzImage: a setup header (offsets from boot.rst) and a payload. */
static void make_image(uint16_t version, uint8_t xloadflags)
{
	memset(image, 0, sizeof(image));
	image[0x1f1] = 4;                 /* setup_sects */
	put16(image + 0x1fe, 0xaa55);     /* boot_flag */
	image[0x200] = 0xeb;              /* jump over the header */
	image[0x201] = 0x66;              /* header ends at 0x268 */
	memcpy(image + 0x202, "HdrS", 4);
	put16(image + 0x206, version);
	image[0x211] = 0x01;              /* loadflags: LOADED_HIGH */
	put32(image + 0x22c, 0x7fffffff); /* initrd_addr_max */
	put32(image + 0x230, 0x200000);   /* kernel_alignment */
	image[0x234] = 1;                 /* relocatable_kernel */
	image[0x236] = xloadflags;
	put32(image + 0x238, 2047);       /* cmdline_size */
	put32(image + 0x258, 0x1000000);  /* pref_address (low half) */
	put32(image + 0x260, 0x800000);   /* init_size */
	/* Payload: recognisable bytes right after the 5 setup sectors. */
	memcpy(image + 5 * 512, "KERNEL64", 8);
}

static void check_acpi(const struct guest_memory *mem, uint64_t rsdp_gpa,
		       unsigned ncpus)
{
	const uint8_t *rsdp = guest_ptr(mem, rsdp_gpa, 36), *xsdt, *t;
	unsigned lapics = 0;

	CHECK(memcmp(rsdp, "RSD PTR ", 8) == 0);
	CHECK_EQ(acpi_checksum(rsdp, 20), 0);
	CHECK_EQ(acpi_checksum(rsdp, 36), 0);
	CHECK_EQ(rsdp[15], 2);
	xsdt = guest_ptr(mem, get64(rsdp + 24), 36);
	CHECK(memcmp(xsdt, "XSDT", 4) == 0);
	CHECK_EQ(acpi_checksum(xsdt, get32(xsdt + 4)), 0);
	CHECK_EQ(get32(xsdt + 4), 36 + 16);
	for (unsigned i = 0; i < 2; i++) {
		t = guest_ptr(mem, get64(xsdt + 36 + 8 * i), 36);
		CHECK_EQ(acpi_checksum(t, get32(t + 4)), 0);
		if (memcmp(t, "FACP", 4) == 0) {
			const uint8_t *dsdt = guest_ptr(mem, get64(t + 140), 36);
			CHECK_EQ(get32(t + 4), 276);
			CHECK(memcmp(dsdt, "DSDT", 4) == 0);
			CHECK_EQ(acpi_checksum(dsdt, get32(dsdt + 4)), 0);
			CHECK(memmem(dsdt + 36, get32(dsdt + 4) - 36, "_S5_", 4));
			CHECK(memmem(dsdt + 36, get32(dsdt + 4) - 36, "PCI0", 4));
			CHECK_EQ(get32(t + 64), ACPI_PM1_CNT_PORT);
			CHECK_EQ(t[89], 2);                 /* PM1_CNT_LEN */
			CHECK_EQ(get64(t + 116 + 4), ACPI_RESET_PORT);
			CHECK_EQ(t[128], ACPI_RESET_VALUE);
			CHECK(get32(t + 112) & (1u << 10)); /* RESET_REG_SUP */
			CHECK(memcmp(guest_ptr(mem, get32(t + 36), 4), "FACS", 4) == 0);
		} else {
			CHECK(memcmp(t, "APIC", 4) == 0);
			for (uint32_t off = 44; off < get32(t + 4); off += t[off + 1]) {
				CHECK(t[off + 1] >= 2);
				if (t[off] == 0) {
					CHECK_EQ(t[off + 3], lapics); /* APIC ID */
					lapics++;
				}
			}
		}
	}
	CHECK_EQ(lapics, ncpus);
}

static void test_boot_setup(void)
{
	static uint8_t ram[64 * MiB];
	static uint8_t initrd[300000];
	struct guest_memory mem;
	struct boot_entry e;
	struct boot_config cfg = {
		.kernel = image, .kernel_len = sizeof(image),
		.initrd = initrd, .initrd_len = sizeof(initrd),
		.cmdline = "console=ttyS0 quiet", .ncpus = 3,
	};
	char err[200];
	const uint8_t *zp;
	uint32_t rd;

	make_image(0x020f, 0x01);
	memset(initrd, 0x5a, sizeof(initrd));
	guest_memory_layout(&mem, ram, sizeof(ram));
	CHECK_EQ(boot_setup(&mem, &cfg, &e, err, sizeof(err)), 0);

	zp = guest_ptr(&mem, BOOT_ZERO_PAGE_GPA, 4096);
	CHECK_EQ(get16(zp + 0x1fe), 0xaa55);
	CHECK_EQ(get32(zp + 0x202), 0x53726448); /* header copied */
	CHECK_EQ(zp[0x210], 0xff);               /* type_of_loader */
	CHECK(zp[0x211] & 0x80);                 /* CAN_USE_HEAP */
	CHECK_EQ(get32(zp + 0x228), BOOT_CMDLINE_GPA);
	CHECK(strcmp((const char *)guest_ptr(&mem, BOOT_CMDLINE_GPA, 20),
		     "console=ttyS0 quiet") == 0);
	CHECK_EQ(get64(zp + 0x070), 0xe0000);    /* acpi_rsdp_addr */
	rd = get32(zp + 0x218);
	CHECK_EQ(get32(zp + 0x21c), sizeof(initrd));
	CHECK_EQ(rd % 4096, 0);
	CHECK(rd >= 0x1000000 + 0x800000);       /* above the kernel's area */
	CHECK(rd + sizeof(initrd) <= sizeof(ram));
	CHECK(sizeof(ram) - (rd + sizeof(initrd)) < 4096); /* as high as fits */
	CHECK(memcmp(guest_ptr(&mem, rd, sizeof(initrd)), initrd, sizeof(initrd)) == 0);
	/* Protected-mode code at pref_address, entry 0x200 into it. */
	CHECK(memcmp(guest_ptr(&mem, 0x1000000, 8), "KERNEL64", 8) == 0);
	CHECK_EQ(e.rip, 0x1000200);
	CHECK_EQ(e.rsi, BOOT_ZERO_PAGE_GPA);

	/* e820: low RAM, the reserved BIOS area, RAM from 1 MiB up. */
	CHECK_EQ(zp[0x1e8], 3);
	CHECK_EQ(get64(zp + 0x2d0), 0);
	CHECK_EQ(get64(zp + 0x2d0 + 8), 0x9fc00);
	CHECK_EQ(get32(zp + 0x2d0 + 16), 1);
	CHECK_EQ(get64(zp + 0x2d0 + 20), 0x9fc00);
	CHECK_EQ(get32(zp + 0x2d0 + 36), 2);
	CHECK_EQ(get64(zp + 0x2d0 + 40), 0x100000);
	CHECK_EQ(get64(zp + 0x2d0 + 48), sizeof(ram) - 0x100000);

	/* Identity map: PML4 -> PDPT -> 2 MiB pages; 3 GiB maps to itself. */
	{
		const uint64_t *pml4 = guest_ptr(&mem, e.cr3, 4096);
		const uint64_t *pdpt = guest_ptr(&mem, pml4[0] & ~0xfffull, 4096);
		const uint64_t *pd3 = guest_ptr(&mem, pdpt[3] & ~0xfffull, 4096);
		CHECK_EQ(pml4[0] & 1, 1);
		CHECK_EQ(pd3[5] & ~0xfffull, 3ull * 1024 * MiB + 5 * 2 * MiB);
		CHECK_EQ(pd3[5] & 0x83, 0x83);
	}
	/* GDT: 64-bit code at 0x10, data at 0x18. */
	{
		const uint64_t *gdt = guest_ptr(&mem, e.gdt_base, 32);
		CHECK((gdt[2] >> 53) & 1);   /* L */
		CHECK_EQ((gdt[2] >> 40) & 0x9f, 0x9b);
		CHECK_EQ((gdt[3] >> 40) & 0x9f, 0x93);
	}
	check_acpi(&mem, e.rsdp_gpa, 3);
}

static void test_rejections(void)
{
	static uint8_t ram[64 * MiB];
	static char longline[3000];
	struct guest_memory mem;
	struct boot_entry e;
	struct bzimage_info info;
	struct boot_config cfg = {
		.kernel = image, .kernel_len = sizeof(image), .cmdline = "", .ncpus = 1,
	};
	char err[200];

	make_image(0x020b, 0x01);
	CHECK_EQ(bzimage_parse(image, sizeof(image), &info, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "2.12"));
	make_image(0x020f, 0x00);
	CHECK_EQ(bzimage_parse(image, sizeof(image), &info, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "64-bit"));
	make_image(0x020f, 0x01);
	memcpy(image + 0x202, "HdrX", 4);
	CHECK_EQ(bzimage_parse(image, sizeof(image), &info, err, sizeof(err)), -EINVAL);
	CHECK_EQ(bzimage_parse(image, 100, &info, err, sizeof(err)), -EINVAL);

	make_image(0x020f, 0x01);
	guest_memory_layout(&mem, ram, sizeof(ram));
	memset(longline, 'a', sizeof(longline) - 1);
	cfg.cmdline = longline;
	CHECK_EQ(boot_setup(&mem, &cfg, &e, err, sizeof(err)), -E2BIG);
	cfg.cmdline = "";
	cfg.initrd = ram; /* any bytes; too many of them */
	cfg.initrd_len = 50 * MiB;
	CHECK_EQ(boot_setup(&mem, &cfg, &e, err, sizeof(err)), -ENOMEM);
}

static void test_e820_above_4g(void)
{
	struct guest_memory mem;
	struct { uint64_t addr, size; uint32_t type; } __attribute__((packed)) t[8];

	guest_memory_layout(&mem, NULL, 5ull << 30);
	CHECK_EQ(mem.low_size, 3ull << 30);
	CHECK_EQ(boot_e820(&mem, t, 8), 4);
	CHECK_EQ(t[2].addr + t[2].size, 3ull << 30);
	CHECK_EQ(t[3].addr, 4ull << 30);
	CHECK_EQ(t[3].size, 2ull << 30);
	CHECK_EQ(t[3].type, 1);
	/* guest_ptr refuses the hole and ranges that straddle an edge. */
	CHECK(guest_ptr(&mem, (3ull << 30) - 8, 16) == NULL);
	CHECK(guest_ptr(&mem, 0xfee00000, 4) == NULL);
	CHECK(guest_ptr(&mem, (6ull << 30) - 8, 16) == NULL);
	CHECK(guest_ptr(&mem, (4ull << 30), 16) == (void *)(uintptr_t)(3ull << 30));
}

int main(void)
{
	test_boot_setup();
	test_rejections();
	test_e820_above_4g();
	return 0;
}
