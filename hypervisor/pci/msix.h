/* SPDX-License-Identifier: Apache-2.0 */
/* MSI-X for an emulated PCI device: the capability in config space, the
 * vector table and the pending-bit array in a memory BAR.
 *
 * The owner forwards config writes (msix_config_written) and BAR accesses
 * in the table/PBA ranges (msix_bar_read/write), all under its lock (the
 * PCI bus lock).  Whenever a vector's address, data or usability changes,
 * ops->vector_changed runs so the VM glue can reprogram its KVM route.
 * msix_fire() may run on any thread: it delivers through ops->deliver when
 * the vector is usable and otherwise sets the vector's pending bit, which
 * is delivered when the guest unmasks it. */
#ifndef OVKVM_MSIX_H
#define OVKVM_MSIX_H

#include <stdbool.h>
#include <stdint.h>

#include "pci.h"

#define MSIX_MAX_VECTORS 65
#define MSIX_ENTRY_SIZE 16
#define MSIX_NO_VECTOR 0xffff

struct msix_ops {
	/* The entry of `vec` changed; usable is false when it is masked or
	 * MSI-X is disabled. */
	void (*vector_changed)(void *opaque, unsigned vec, uint64_t addr,
			       uint32_t data, bool usable);
	/* Send the interrupt of `vec` (an irqfd write in ovkvm). */
	void (*deliver)(void *opaque, unsigned vec);
};

struct msix {
	struct pci_dev *dev;
	unsigned cap;      /* config-space offset of the capability */
	unsigned nvec;
	unsigned bar;
	uint64_t table_off, pba_off; /* in the BAR */
	const struct msix_ops *ops;
	void *opaque;
	uint8_t table[MSIX_MAX_VECTORS * MSIX_ENTRY_SIZE];
	bool usable[MSIX_MAX_VECTORS];   /* read by msix_fire (atomics) */
	bool pending[MSIX_MAX_VECTORS];  /* the PBA */
};

/* Add the capability; table and PBA live in `bar` at the given offsets
 * (8-byte aligned).  Vectors start masked, MSI-X disabled. */
int msix_init(struct msix *m, struct pci_dev *dev, unsigned nvec,
	      unsigned bar, uint64_t table_off, uint64_t pba_off,
	      const struct msix_ops *ops, void *opaque);

/* MSI-X enable bit set (the function may still be masked). */
bool msix_on(const struct msix *m);
/* Enabled and not function-masked: vectors can be delivered. */
bool msix_enabled(const struct msix *m);
/* After a config write at [off, off+len). */
void msix_config_written(struct msix *m, unsigned off, unsigned len);
/* True when [off, off+len) of the BAR is the table or the PBA (handled). */
bool msix_bar_read(struct msix *m, uint64_t off, uint8_t *data, unsigned len);
bool msix_bar_write(struct msix *m, uint64_t off, const uint8_t *data,
		    unsigned len);
/* Signal vector `vec` (MSIX_NO_VECTOR or out of range: nothing). */
void msix_fire(struct msix *m, unsigned vec);

#endif
