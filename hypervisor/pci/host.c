/* SPDX-License-Identifier: Apache-2.0 */
/* PCI bus 0 in a VM: the configuration ports and the host bridge at
 * 00:00.0.  PCI devices (e.g. a virtio-pci transport) register after this
 * with DEV_ORDER_PCI_DEV and add themselves with pci_bus_add(). */
#include "../devices/device.h"
#include "../kvm/vm.h"

#include <stdio.h>
#include <string.h>

static int pci_root_init(struct vm *vm)
{
	int rc;

	pci_bus_init(&vm->pci);
	pci_host_bridge_init(&vm->host_bridge);
	rc = pci_bus_add(&vm->pci, &vm->host_bridge, 0);
	if (rc >= 0)
		rc = bus_register(&vm->pio, PCI_CONFIG_ADDR, 8, &pci_bus_ops, &vm->pci,
				  "pci-config");
	if (rc >= 0)
		rc = bus_register(&vm->mmio, PCI_MMIO_BASE,
				  PCI_MMIO_END - PCI_MMIO_BASE, &pci_mmio_ops,
				  &vm->pci, "pci-mmio");
	if (rc < 0) {
		fprintf(stderr, "ovkvm: setting up PCI: %s\n", strerror(-rc));
		pci_bus_destroy(&vm->pci);
		return rc;
	}
	return 0;
}

static void pci_root_exit(struct vm *vm)
{
	pci_bus_destroy(&vm->pci);
}

VM_DEVICE(pci_root, DEV_ORDER_PCI_BUS, pci_root_init, pci_root_exit)
