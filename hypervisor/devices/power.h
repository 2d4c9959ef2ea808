/* SPDX-License-Identifier: Apache-2.0 */
/* How the guest ends the VM: the ACPI fixed-hardware PM1 event/control
 * blocks and reset register that the FADT (boot/acpi.c) announces, plus the
 * PC keyboard controller's reset command (0xfe to port 0x64) for kernels run
 * with acpi=off or reboot=k.  Debian's kernel powers off by writing SLP_TYP
 * (from \_S5) with SLP_EN to PM1a_CNT and reboots through the FADT reset
 * register first, then the keyboard controller. */
#ifndef OVKVM_POWER_H
#define OVKVM_POWER_H

#include <pthread.h>
#include <stdint.h>

#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT 0x64
#define I8042_CMD_RESET 0xfe

enum power_event { POWER_OFF = 1, POWER_RESET = 2 };

struct power {
	pthread_mutex_t lock;
	void (*event)(void *opaque, enum power_event ev);
	void *opaque;
	uint16_t pm1_sts, pm1_en, pm1_cnt;
};

void power_init(struct power *p, void (*event)(void *, enum power_event),
		void *opaque);
void power_destroy(struct power *p);

/* Bus ops: the ACPI block at ACPI_PM1_EVT_PORT (ACPI_PM_PORTS_LEN ports)
 * and the i8042 at I8042_DATA_PORT (I8042_PORTS_LEN ports, up to 0x64). */
#define I8042_PORTS_LEN 5
extern const struct bus_dev_ops power_acpi_ops;
extern const struct bus_dev_ops power_i8042_ops;

#endif
