/* SPDX-License-Identifier: Apache-2.0 */
/* Devices register themselves in an ordered init list (lower order first);
 * vm_devices_exit() tears them down in reverse. */
#ifndef OVKVM_DEVICE_H
#define OVKVM_DEVICE_H

struct vm;

struct vm_device {
	const char *name;
	int order;
	int (*init)(struct vm *vm); /* 0 or -errno (message on stderr) */
	void (*exit)(struct vm *vm);
	struct vm_device *next;
	int initialised;
};

void vm_device_register(struct vm_device *dev);

/* Orders: platform devices first, then the PCI host bridge, then PCI
 * devices (which need the bridge). */
#define DEV_ORDER_PLATFORM 10
#define DEV_ORDER_PCI_BUS 20
#define DEV_ORDER_PCI_DEV 30

#define VM_DEVICE(id, ord, initfn, exitfn)                                    \
	static struct vm_device vm_device_##id = {                            \
		.name = #id, .order = (ord), .init = (initfn), .exit = (exitfn), \
	};                                                                    \
	__attribute__((constructor)) static void vm_device_register_##id(void) \
	{                                                                     \
		vm_device_register(&vm_device_##id);                          \
	}

int vm_devices_init(struct vm *vm);
void vm_devices_exit(struct vm *vm);

#endif
