/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_liveops_req.c - liveops_parse, the check of a live-disk request:
 * the input is one request line as a client of ovkvm's --api-socket may
 * send it (ctlsock has parsed it as JSON). A checked request carries only
 * names the parser checked and a disk index below 256.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "liveops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct liveops_req r;
	char err[512];
	json_t *j = json_loadb((const char *)data, size,
			       JSON_REJECT_DUPLICATES, NULL);
	int rc;

	if (!j)
		return 0;
	rc = liveops_parse(j, &r, err, sizeof(err));
	if (rc < 0 && !memchr(err, '\0', sizeof(err)))
		abort();
	if (rc > 0) {
		if (r.disk > 255)
			abort();
		if (r.name && (strlen(r.name) < 1 || strlen(r.name) > 103 ||
			       strchr(r.name, '/') || strchr(r.name, ' ')))
			abort();
		if ((r.cmd == LIVEOPS_CHECKPOINT_CREATE ||
		     r.cmd == LIVEOPS_CHECKPOINT_DELETE ||
		     r.cmd == LIVEOPS_CHANGED) && !r.name)
			abort();
	}
	json_decref(j);
	return 0;
}
