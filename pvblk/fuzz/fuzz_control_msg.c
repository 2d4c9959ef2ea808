/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_control_msg.c - the control socket's request parser: the input is
 * one request line as a client of --api-socket may send it. A parsed
 * request must carry only strings the parser checked.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pvblk_ctl_req r;
	char err[512];
	void *owner;

	if (pvblk_ctl_parse((const char *)data, size, &r, &owner, err,
			    sizeof(err)) < 0) {
		if (!memchr(err, '\0', sizeof(err)))
			abort();
		return 0;
	}
	if (r.name && (strlen(r.name) < 1 || strlen(r.name) > 103 ||
		       strchr(r.name, '/')))
		abort();
	if (r.nbd && strncmp(r.nbd, "unix:", 5))
		abort();
	pvblk_ctl_free(owner);
	return 0;
}
