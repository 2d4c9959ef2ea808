/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_vmdk_descriptor.c - the descriptor parser and probe on any text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk/vmdk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vmdk_desc d;
	/* A copy of exactly size bytes, so reads past the end are caught. */
	char *text = malloc(size ? size : 1);

	memcpy(text, data, size);
	(void)vmdk_desc_probe((const uint8_t *)text, size);
	if (vmdk_desc_parse(text, size, "fuzz.vmdk", &d) == 0) {
		for (unsigned i = 0; i < d.n_extents; i++)
			if (d.extents[i].name)
				(void)strlen(d.extents[i].name);
		(void)vmdk_desc_ddb(&d, "adapterType");
		vmdk_desc_free(&d);
	}
	free(text);
	return 0;
}
