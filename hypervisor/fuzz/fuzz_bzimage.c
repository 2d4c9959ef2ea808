/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: bzImage setup headers are untrusted bytes.  Parse one
 * and, when it passes the checks, lay it out in a 32 MiB guest. */
#include "boot/boot.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t ram[32u << 20];
	struct guest_memory mem;
	struct bzimage_info info;
	struct boot_entry entry;
	struct boot_config cfg = {
		.kernel = data, .kernel_len = size,
		.cmdline = "console=ttyS0", .ncpus = 2,
	};
	char err[200];

	if (bzimage_parse(data, size, &info, err, sizeof(err)))
		return 0;
	guest_memory_layout(&mem, ram, sizeof(ram));
	boot_setup(&mem, &cfg, &entry, err, sizeof(err));
	return 0;
}
