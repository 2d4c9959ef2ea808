/* SPDX-License-Identifier: Apache-2.0 */
#include "device.h"

#include <stddef.h>

static struct vm_device *devices; /* sorted by order */

void vm_device_register(struct vm_device *dev)
{
	struct vm_device **p = &devices;

	while (*p && (*p)->order <= dev->order)
		p = &(*p)->next;
	dev->next = *p;
	*p = dev;
}

int vm_devices_init(struct vm *vm)
{
	for (struct vm_device *d = devices; d; d = d->next) {
		int rc = d->init ? d->init(vm) : 0;
		if (rc) {
			vm_devices_exit(vm);
			return rc;
		}
		d->initialised = 1;
	}
	return 0;
}

/* Reverse order, by recursion on the (short) list. */
static void exit_from(struct vm_device *d, struct vm *vm)
{
	if (!d)
		return;
	exit_from(d->next, vm);
	if (d->initialised && d->exit)
		d->exit(vm);
	d->initialised = 0;
}

void vm_devices_exit(struct vm *vm)
{
	exit_from(devices, vm);
}
