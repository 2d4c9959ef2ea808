/* SPDX-License-Identifier: Apache-2.0 */
/* provider.c - the providers ovkd knows, by name (provider.h). */
#include <string.h>

#include "provider.h"

const struct provider_ops *provider_by_name(const char *name)
{
	if (!name)
		return NULL;
	if (!strcmp(name, provider_qemu.name))
		return &provider_qemu;
	if (!strcmp(name, provider_ovkvm.name))
		return &provider_ovkvm;
	return NULL;
}
