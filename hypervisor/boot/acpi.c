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

/* The DSDT's AML, hand-encoded:
 *   Name (_S5, Package (4) { 5, 5, 0, 0 })
 *   Scope (\_SB) { Device (PCI0) { Name (_HID, EisaId ("PNP0A03"))
 *     Name (_ADR, 0)  Name (_BBN, 0)  Name (_UID, 0)  Name (_CRS, ...) } }
 * PCI0 is the host bridge: Linux scans PCI bus 0 only behind an ACPI root
 * bridge once it routes IRQs through ACPI.  Its _CRS gives bus numbers
 * 0-255, the config ports, the rest of the I/O space, and the MMIO window
 * the BARs live in (PCI_MMIO_BASE..PCI_MMIO_END in pci/pci.h). */
static const uint8_t aml_s5[] = {
	0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04,
	0x0a, ACPI_S5_SLP_TYP, 0x0a, ACPI_S5_SLP_TYP, 0x00, 0x00,
};

static const uint8_t aml_pci0_names[] = {
	0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03,
	0x08, '_', 'A', 'D', 'R', 0x00,
	0x08, '_', 'B', 'B', 'N', 0x00,
	0x08, '_', 'U', 'I', 'D', 0x00,
};

static const uint8_t pci0_crs[] = {
	/* WordBusNumber: producer, min/max fixed, 0-255 */
	0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00,
	0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x01,
	/* IO: decode16, 0xcf8-0xcff */
	0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08,
	/* WordIO 0x0000-0x0cf7 and 0x0d00-0xffff, entire range */
	0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03,
	0x00, 0x00, 0x00, 0x00, 0xf7, 0x0c, 0x00, 0x00, 0xf8, 0x0c,
	0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03,
	0x00, 0x00, 0x00, 0x0d, 0xff, 0xff, 0x00, 0x00, 0x00, 0xf3,
	/* DWordMemory, read-write, 0xe0000000-0xfebfffff */
	0x87, 0x17, 0x00, 0x00, 0x0c, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0,
	0xff, 0xff, 0xbf, 0xfe, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0xc0, 0x1e,
	/* End tag */
	0x79, 0x00,
};

/* Write a PkgLength for `content` bytes that follow it; returns its size. */
static size_t aml_pkglen(uint8_t *out, size_t content)
{
	if (content + 1 <= 0x3f) {
		out[0] = content + 1;
		return 1;
	}
	content += 2; /* up to 4095 bytes: two-byte encoding */
	out[0] = 0x40 | (content & 0x0f);
	out[1] = content >> 4;
	return 2;
}

/* The AML into out (NULL: only measure); returns its length. */
static size_t dsdt_aml(uint8_t *out)
{
	uint8_t crs[16 + sizeof(pci0_crs)], dev[16 + sizeof(aml_pci0_names) + sizeof(crs)];
	uint8_t buf[512];
	size_t n = 0, c = 0, d = 0;

	/* Name (_CRS, Buffer (len) {...}) */
	crs[c++] = 0x08;
	memcpy(crs + c, "_CRS", 4), c += 4;
	crs[c++] = 0x11;
	{
		uint8_t body[3 + sizeof(pci0_crs)];
		size_t b = 0;
		body[b++] = 0x0a;
		body[b++] = sizeof(pci0_crs);
		memcpy(body + b, pci0_crs, sizeof(pci0_crs)), b += sizeof(pci0_crs);
		c += aml_pkglen(crs + c, b);
		memcpy(crs + c, body, b), c += b;
	}
	/* Device (PCI0) { names, _CRS } */
	{
		size_t inner = 4 + sizeof(aml_pci0_names) + c;
		dev[d++] = 0x5b;
		dev[d++] = 0x82;
		d += aml_pkglen(dev + d, inner);
		memcpy(dev + d, "PCI0", 4), d += 4;
		memcpy(dev + d, aml_pci0_names, sizeof(aml_pci0_names));
		d += sizeof(aml_pci0_names);
		memcpy(dev + d, crs, c), d += c;
	}
	memcpy(buf, aml_s5, sizeof(aml_s5)), n += sizeof(aml_s5);
	/* Scope (\_SB) { device } */
	buf[n++] = 0x10;
	n += aml_pkglen(buf + n, 5 + d);
	memcpy(buf + n, "\\_SB_", 5), n += 5;
	memcpy(buf + n, dev, d), n += d;
	if (out)
		memcpy(out, buf, n);
	return n;
}

uint64_t acpi_build(uint8_t *area, uint64_t gpa, size_t size, unsigned ncpus)
{
	/* Layout inside the area; the FACS needs 64-byte alignment. */
	const size_t rsdp_off = 0, facs_off = 64, xsdt_off = 128;
	const size_t xsdt_len = 36 + 2 * 8;
	const size_t fadt_off = xsdt_off + xsdt_len;
	const size_t dsdt_off = fadt_off + FADT_LEN;
	const size_t dsdt_len = 36 + dsdt_aml(NULL);
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
	dsdt_aml(p + 36);
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
