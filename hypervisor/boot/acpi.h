/* SPDX-License-Identifier: Apache-2.0 */
/* Minimal ACPI tables for a PC-like guest: RSDP -> XSDT -> FADT (+FACS,
 * DSDT) and MADT.  The MADT lists the vCPUs' local APICs so the guest brings
 * up its APs; the FADT's PM1 control block and reset register are the ports
 * through which the guest powers off and reboots (devices/power.c). */
#ifndef OVKVM_ACPI_H
#define OVKVM_ACPI_H

#include <stddef.h>
#include <stdint.h>

#define ACPI_TABLES_GPA 0xe0000ull /* the BIOS area where RSDP is searched */
#define ACPI_TABLES_SIZE 0x10000

/* The fixed-hardware ports the FADT announces. */
#define ACPI_PM1_EVT_PORT 0x600 /* 4 bytes: status, enable */
#define ACPI_PM1_CNT_PORT 0x604 /* 2 bytes */
#define ACPI_RESET_PORT 0x608   /* 1 byte */
#define ACPI_PM_PORTS_LEN 0x10
#define ACPI_RESET_VALUE 0x01
#define ACPI_S5_SLP_TYP 5 /* what \_S5 tells the guest to write */
#define ACPI_SCI_IRQ 9

#define IOAPIC_GPA 0xfec00000u
#define LAPIC_GPA 0xfee00000u

struct acpi_table_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_table_header) == 36, "ACPI header is 36 bytes");

struct acpi_rsdp {
	char signature[8];
	uint8_t checksum; /* over the first 20 bytes */
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum;
	uint8_t reserved[3];
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP 2.0 is 36 bytes");

/* Build the tables into `area` (host memory of `size` bytes that the guest
 * sees at `gpa`) for `ncpus` CPUs with APIC IDs 0..ncpus-1.  Returns the
 * guest address of the RSDP, or 0 if the tables do not fit. */
uint64_t acpi_build(uint8_t *area, uint64_t gpa, size_t size, unsigned ncpus);

/* Sum of `len` bytes (a valid table sums to 0). */
uint8_t acpi_checksum(const void *p, size_t len);

#endif
