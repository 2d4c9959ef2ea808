/* SPDX-License-Identifier: Apache-2.0 */
#include "acpi.h"

#include <string.h>

#define FADT_REVISION 6 /* ACPI 6.0 layout, 276 bytes */
#define FADT_LEN 276
#define FACS_LEN 64

/* FADT field offsets (ACPI 6.x, table 5-33). */
#define FADT_FIRMWARE_CTRL 36
#define FADT_DSDT 40
#define FADT_SCI_INT 46
#define FADT_PM1A_EVT_BLK 56
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM1_EVT_LEN 88
#define FADT_PM1_CNT_LEN 89
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS 112
#define FADT_RESET_REG 116
#define FADT_RESET_VALUE 128
#define FADT_MINOR_VERSION 131
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT 140
#define FADT_X_PM1A_EVT_BLK 148
#define FADT_X_PM1A_CNT_BLK 172

#define FADT_F_WBINVD (1u << 0)
#define FADT_F_PROC_C1 (1u << 2)
#define FADT_F_PWR_BUTTON (1u << 4) /* no fixed-feature power button */
#define FADT_F_SLP_BUTTON (1u << 5) /* no fixed-feature sleep button */
#define FADT_F_RESET_REG_SUP (1u << 10)
#define BOOT_ARCH_NO_VGA (1u << 2)
#define BOOT_ARCH_NO_CMOS_RTC (1u << 5)

#define GAS_SYSTEM_IO 1

#define MADT_PCAT_COMPAT 1u
#define MADT_LAPIC 0
#define MADT_IOAPIC 1
#define MADT_ISO 2
#define MPS_INTI_ACTIVE_HIGH 0x1
#define MPS_INTI_LEVEL 0xc

uint8_t acpi_checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return sum;
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* A Generic Address Structure for an I/O port register. */
static void put_gas_io(uint8_t *p, uint16_t port, uint8_t bits)
{
	p[0] = GAS_SYSTEM_IO;
	p[1] = bits;
	p[2] = 0;
	p[3] = bits == 8 ? 1 : bits == 16 ? 2 : 3; /* access size */
	put64(p + 4, port);
}

static void header(uint8_t *p, const char *sig, uint32_t len, uint8_t rev)
{
	struct acpi_table_header h;

	memset(&h, 0, sizeof(h));
	memcpy(h.signature, sig, 4);
	h.length = len;
	h.revision = rev;
	memcpy(h.oem_id, "OVK   ", 6);
	memcpy(h.oem_table_id, "OVKVM   ", 8);
	h.oem_revision = 1;
	memcpy(h.creator_id, "OVK ", 4);
	h.creator_revision = 1;
	memcpy(p, &h, sizeof(h));
}

static void finish(uint8_t *p, uint32_t len)
{
	p[9] = 0;
	p[9] = -acpi_checksum(p, len);
}

/* The DSDT's AML: Name (_S5, Package (4) { 5, 5, 0, 0 }), hand-encoded:
 * NameOp, NameSeg, PackageOp, PkgLength, NumElements, BytePrefix 5 twice,
 * ZeroOp twice. */
static const uint8_t dsdt_aml[] = {
	0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04,
	0x0a, ACPI_S5_SLP_TYP, 0x0a, ACPI_S5_SLP_TYP, 0x00, 0x00,
};

uint64_t acpi_build(uint8_t *area, uint64_t gpa, size_t size, unsigned ncpus)
{
	/* Layout inside the area; the FACS needs 64-byte alignment. */
	const size_t rsdp_off = 0, facs_off = 64, xsdt_off = 128;
	const size_t xsdt_len = 36 + 2 * 8;
	const size_t fadt_off = xsdt_off + xsdt_len;
	const size_t dsdt_off = fadt_off + FADT_LEN;
	const size_t dsdt_len = 36 + sizeof(dsdt_aml);
	const size_t madt_off = dsdt_off + dsdt_len;
	const size_t madt_len = 44 + 8 * (size_t)ncpus + 12 + 2 * 10;
	struct acpi_rsdp rsdp;
	uint8_t *p;

	if (ncpus == 0 || ncpus > 255 || madt_off + madt_len > size)
		return 0;
	memset(area, 0, madt_off + madt_len);

	/* FACS: no checksum, only signature and length. */
	memcpy(area + facs_off, "FACS", 4);
	put32(area + facs_off + 4, FACS_LEN);

	p = area + dsdt_off;
	header(p, "DSDT", dsdt_len, 2);
	memcpy(p + 36, dsdt_aml, sizeof(dsdt_aml));
	finish(p, dsdt_len);

	p = area + fadt_off;
	header(p, "FACP", FADT_LEN, FADT_REVISION);
	put32(p + FADT_FIRMWARE_CTRL, gpa + facs_off);
	put32(p + FADT_DSDT, gpa + dsdt_off);
	put16(p + FADT_SCI_INT, ACPI_SCI_IRQ);
	/* No SMI command port: the platform is in ACPI mode from the start. */
	put32(p + FADT_PM1A_EVT_BLK, ACPI_PM1_EVT_PORT);
	put32(p + FADT_PM1A_CNT_BLK, ACPI_PM1_CNT_PORT);
	p[FADT_PM1_EVT_LEN] = 4;
	p[FADT_PM1_CNT_LEN] = 2;
	put16(p + FADT_IAPC_BOOT_ARCH, BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_CMOS_RTC);
	put32(p + FADT_FLAGS, FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_PWR_BUTTON |
				      FADT_F_SLP_BUTTON | FADT_F_RESET_REG_SUP);
	put_gas_io(p + FADT_RESET_REG, ACPI_RESET_PORT, 8);
	p[FADT_RESET_VALUE] = ACPI_RESET_VALUE;
	p[FADT_MINOR_VERSION] = 0;
	put64(p + FADT_X_FIRMWARE_CTRL, gpa + facs_off);
	put64(p + FADT_X_DSDT, gpa + dsdt_off);
	put_gas_io(p + FADT_X_PM1A_EVT_BLK, ACPI_PM1_EVT_PORT, 32);
	put_gas_io(p + FADT_X_PM1A_CNT_BLK, ACPI_PM1_CNT_PORT, 16);
	finish(p, FADT_LEN);

	p = area + madt_off;
	header(p, "APIC", madt_len, 4);
	put32(p + 36, LAPIC_GPA);
	put32(p + 40, MADT_PCAT_COMPAT);
	p += 44;
	for (unsigned i = 0; i < ncpus; i++, p += 8) {
		p[0] = MADT_LAPIC;
		p[1] = 8;
		p[2] = i; /* ACPI processor UID */
		p[3] = i; /* APIC ID */
		put32(p + 4, 1); /* enabled */
	}
	p[0] = MADT_IOAPIC;
	p[1] = 12;
	p[2] = 0; /* IOAPIC ID */
	put32(p + 4, IOAPIC_GPA);
	put32(p + 8, 0); /* GSI base */
	p += 12;
	/* ISA IRQ 0 (the PIT) arrives on IOAPIC pin 2, as on every PC. */
	p[0] = MADT_ISO;
	p[1] = 10;
	p[2] = 0;
	p[3] = 0;
	put32(p + 4, 2);
	put16(p + 8, 0);
	p += 10;
	/* The SCI is level-triggered, active high. */
	p[0] = MADT_ISO;
	p[1] = 10;
	p[2] = 0;
	p[3] = ACPI_SCI_IRQ;
	put32(p + 4, ACPI_SCI_IRQ);
	put16(p + 8, MPS_INTI_ACTIVE_HIGH | MPS_INTI_LEVEL);
	finish(area + madt_off, madt_len);

	p = area + xsdt_off;
	header(p, "XSDT", xsdt_len, 1);
	put64(p + 36, gpa + fadt_off);
	put64(p + 44, gpa + madt_off);
	finish(p, xsdt_len);

	memset(&rsdp, 0, sizeof(rsdp));
	memcpy(rsdp.signature, "RSD PTR ", 8);
	memcpy(rsdp.oem_id, "OVK   ", 6);
	rsdp.revision = 2;
	rsdp.length = sizeof(rsdp);
	rsdp.xsdt_address = gpa + xsdt_off;
	rsdp.checksum = -acpi_checksum(&rsdp, 20);
	rsdp.extended_checksum = -acpi_checksum(&rsdp, sizeof(rsdp));
	memcpy(area + rsdp_off, &rsdp, sizeof(rsdp));
	return gpa + rsdp_off;
}
