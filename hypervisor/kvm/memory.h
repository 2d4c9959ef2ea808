/* SPDX-License-Identifier: Apache-2.0 */
/* Guest physical memory: one anonymous host mapping cut in two at the
 * 32-bit PCI hole.  RAM [0, low) sits at guest address 0 and the rest, if
 * any, at 4 GiB, leaving [low, 4 GiB) for MMIO (PCI BARs, IOAPIC, LAPIC). */
#ifndef OVKVM_MEMORY_H
#define OVKVM_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#define GUEST_MMIO_HOLE_START 0xc0000000ull /* 3 GiB */
#define GUEST_HIGH_RAM_START 0x100000000ull /* 4 GiB */

struct guest_memory {
	uint8_t *host;     /* ram_size bytes */
	uint64_t ram_size;
	uint64_t low_size; /* bytes mapped at guest address 0 */
};

/* Split `ram_size` bytes around the hole (no allocation). */
void guest_memory_layout(struct guest_memory *mem, uint8_t *host,
			 uint64_t ram_size);

/* Map `ram_size` bytes of anonymous memory; -errno on failure. */
int guest_memory_alloc(struct guest_memory *mem, uint64_t ram_size);
void guest_memory_free(struct guest_memory *mem);

/* Host pointer for guest range [gpa, gpa+len), or NULL unless the whole
 * range is RAM within one of the two pieces. */
void *guest_ptr(const struct guest_memory *mem, uint64_t gpa, uint64_t len);

#endif
