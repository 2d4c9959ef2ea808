/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_ovf_descriptor - the OVF descriptor parser and model on any bytes,
 * then the renderers over whatever model came out. */
#include <stdlib.h>

#include "ovf_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses, renders and frees one input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ovf_envelope *env;

	if (ovf_parse_descriptor(data, size, "fuzz.ovf", &env) < 0)
		return 0;
	if (env->content) {
		free(ovf_system_hardware_json(env, env->content));
		free(ovf_system_product_json(env->content));
		free(ovf_system_summary(env, env->content));
	}
	ovf_envelope_free(env);
	return 0;
}
