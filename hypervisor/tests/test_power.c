/* SPDX-License-Identifier: Apache-2.0 */
/* The power ports: ACPI S5 through PM1a_CNT, the FADT reset register and
 * the i8042 reset command end the VM; nothing else does. */
#include "check.h"
#include "boot/acpi.h"
#include "devices/bus.h"
#include "devices/power.h"

static int offs, resets;

static void event(void *opaque, enum power_event ev)
{
	if (ev == POWER_OFF)
		offs++;
	else
		resets++;
}

static void out8(struct bus *b, uint16_t port, uint8_t v)
{
	CHECK(bus_access(b, port, &v, 1, true));
}

static void out16(struct bus *b, uint16_t port, uint16_t v)
{
	uint8_t d[2] = { v & 0xff, v >> 8 };
	CHECK(bus_access(b, port, d, 2, true));
}

static uint16_t in16(struct bus *b, uint16_t port)
{
	uint8_t d[2];
	CHECK(bus_access(b, port, d, 2, false));
	return d[0] | d[1] << 8;
}

int main(void)
{
	struct bus io = { .name = "pio" };
	struct power p;
	uint8_t v;

	power_init(&p, event, NULL);
	CHECK_EQ(bus_register(&io, ACPI_PM1_EVT_PORT, ACPI_PM_PORTS_LEN,
			      &power_acpi_ops, &p, "acpi"), 0);
	CHECK_EQ(bus_register(&io, I8042_DATA_PORT, I8042_PORTS_LEN,
			      &power_i8042_ops, &p, "i8042"), 0);

	/* ACPI mode from the start: SCI_EN reads as set. */
	CHECK_EQ(in16(&io, ACPI_PM1_CNT_PORT) & 1, 1);
	/* Enable bits stick; status bits are write-one-to-clear. */
	out16(&io, ACPI_PM1_EVT_PORT + 2, 0x0100);
	CHECK_EQ(in16(&io, ACPI_PM1_EVT_PORT + 2), 0x0100);

	/* Setting SLP_TYP alone, or SLP_EN with another type, does nothing
	 * (Linux writes the type first, then adds SLP_EN). */
	out16(&io, ACPI_PM1_CNT_PORT, ACPI_S5_SLP_TYP << 10);
	out16(&io, ACPI_PM1_CNT_PORT, 1 << 10 | 1 << 13);
	CHECK_EQ(offs, 0);
	CHECK_EQ(in16(&io, ACPI_PM1_CNT_PORT) & (1 << 13), 0); /* SLP_EN write-only */
	out16(&io, ACPI_PM1_CNT_PORT, ACPI_S5_SLP_TYP << 10 | 1 << 13);
	CHECK_EQ(offs, 1);
	CHECK_EQ(resets, 0);

	out8(&io, ACPI_RESET_PORT, 0x00);
	CHECK_EQ(resets, 0);
	out8(&io, ACPI_RESET_PORT, ACPI_RESET_VALUE);
	CHECK_EQ(resets, 1);

	/* The keyboard controller is idle, and 0xfe on its command port
	 * pulses the reset line; the same byte on the data port does not. */
	CHECK(bus_access(&io, I8042_CMD_PORT, &v, 1, false));
	CHECK_EQ(v & 0x02, 0);
	out8(&io, I8042_DATA_PORT, I8042_CMD_RESET);
	CHECK_EQ(resets, 1);
	out8(&io, I8042_CMD_PORT, 0xd1);
	CHECK_EQ(resets, 1);
	out8(&io, I8042_CMD_PORT, I8042_CMD_RESET);
	CHECK_EQ(resets, 2);
	CHECK_EQ(offs, 1);
	power_destroy(&p);
	return 0;
}
