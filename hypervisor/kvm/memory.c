/* SPDX-License-Identifier: Apache-2.0 */
#include "memory.h"

#include <errno.h>
#include <sys/mman.h>

void guest_memory_layout(struct guest_memory *mem, uint8_t *host,
			 uint64_t ram_size)
{
	mem->host = host;
	mem->ram_size = ram_size;
	mem->low_size = ram_size < GUEST_MMIO_HOLE_START ? ram_size
							 : GUEST_MMIO_HOLE_START;
}

int guest_memory_alloc(struct guest_memory *mem, uint64_t ram_size)
{
	void *p = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	/* Guest RAM is never worth a core dump or a fork's copy. */
	madvise(p, ram_size, MADV_DONTDUMP);
	madvise(p, ram_size, MADV_DONTFORK);
	guest_memory_layout(mem, p, ram_size);
	return 0;
}

void guest_memory_free(struct guest_memory *mem)
{
	if (mem->host)
		munmap(mem->host, mem->ram_size);
	mem->host = NULL;
}

void *guest_ptr(const struct guest_memory *mem, uint64_t gpa, uint64_t len)
{
	uint64_t high = mem->ram_size - mem->low_size;

	if (gpa + len < gpa)
		return NULL;
	if (gpa + len <= mem->low_size)
		return mem->host + gpa;
	if (gpa >= GUEST_HIGH_RAM_START && gpa - GUEST_HIGH_RAM_START <= high &&
	    len <= high - (gpa - GUEST_HIGH_RAM_START))
		return mem->host + mem->low_size + (gpa - GUEST_HIGH_RAM_START);
	return NULL;
}
