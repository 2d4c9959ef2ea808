/* SPDX-License-Identifier: Apache-2.0 */
/* The PC platform devices wired into a VM: COM1 on the in-kernel irqchip's
 * IRQ 4 with the console behind it, and the power/reset ports. */
#include "device.h"
#include "../boot/acpi.h"
#include "../kvm/vm.h"

#include <stdio.h>
#include <string.h>

static void com1_set_irq(void *opaque, bool level)
{
	vm_set_irq_line(opaque, SERIAL_COM1_IRQ, level);
}

static void com1_tx(void *opaque, uint8_t c)
{
	struct vm *vm = opaque;
	console_output(vm->console, c);
}

static void com1_rx_ready(void *opaque)
{
	struct vm *vm = opaque;
	console_rx_ready(vm->console);
}

static const struct serial_ops com1_ops = {
	.set_irq = com1_set_irq,
	.tx = com1_tx,
	.rx_ready = com1_rx_ready,
};

static int com1_init(struct vm *vm)
{
	int rc;

	serial_init(&vm->serial, &com1_ops, vm);
	rc = bus_register(&vm->pio, SERIAL_COM1_BASE, SERIAL_NPORTS,
			  &serial_bus_ops, &vm->serial, "com1");
	if (rc) {
		fprintf(stderr, "ovkvm: registering COM1: %s\n", strerror(-rc));
		serial_destroy(&vm->serial);
	}
	return rc;
}

static void com1_exit(struct vm *vm)
{
	serial_destroy(&vm->serial);
}

VM_DEVICE(com1, DEV_ORDER_PLATFORM, com1_init, com1_exit)

static void power_event(void *opaque, enum power_event ev)
{
	vm_request_stop(opaque, ev == POWER_OFF ? VM_STOP_POWEROFF : VM_STOP_REBOOT,
			NULL);
}

static int power_dev_init(struct vm *vm)
{
	int rc;

	power_init(&vm->power, power_event, vm);
	rc = bus_register(&vm->pio, ACPI_PM1_EVT_PORT, ACPI_PM_PORTS_LEN,
			  &power_acpi_ops, &vm->power, "acpi-pm");
	if (!rc)
		rc = bus_register(&vm->pio, I8042_DATA_PORT, I8042_PORTS_LEN,
				  &power_i8042_ops, &vm->power, "i8042");
	if (rc) {
		fprintf(stderr, "ovkvm: registering the power ports: %s\n", strerror(-rc));
		power_destroy(&vm->power);
	}
	return rc;
}

static void power_dev_exit(struct vm *vm)
{
	power_destroy(&vm->power);
}

VM_DEVICE(power, DEV_ORDER_PLATFORM, power_dev_init, power_dev_exit)
