/* SPDX-License-Identifier: Apache-2.0 */
/* The VMM's two buses (port I/O and MMIO): devices claim address ranges with
 * an ops table; vCPU exits are dispatched here.  Ranges are registered before
 * the vCPUs start and never change afterwards, so lookups take no lock; each
 * device serialises its own state. */
#ifndef OVKVM_BUS_H
#define OVKVM_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct bus_dev_ops {
	/* Read `len` (1, 2, 4 or 8) bytes at `off` from the start of the range
	 * into `data` (little-endian). */
	void (*read)(void *opaque, uint64_t off, uint8_t *data, unsigned len);
	void (*write)(void *opaque, uint64_t off, const uint8_t *data, unsigned len);
};

struct bus_range {
	uint64_t base, len;
	const struct bus_dev_ops *ops;
	void *opaque;
	const char *name;
};

#define BUS_MAX_RANGES 64

struct bus {
	const char *name;
	struct bus_range ranges[BUS_MAX_RANGES];
	unsigned n;
	/* Accesses nobody claimed: reads return all ones, writes are dropped. */
	unsigned long unclaimed;
	int trace; /* log unclaimed accesses (OVKVM_DEBUG) */
};

/* Claim [base, base+len) for a device; -EEXIST if it overlaps a range already
 * claimed, -ENOSPC if the bus is full. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len,
		 const struct bus_dev_ops *ops, void *opaque, const char *name);

/* Dispatch one access; returns false (and fills reads with 0xff) when no
 * device claims `addr`. */
bool bus_access(struct bus *bus, uint64_t addr, uint8_t *data, unsigned len,
		bool is_write);

#endif
