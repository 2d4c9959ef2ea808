/* SPDX-License-Identifier: Apache-2.0 */
/* util.c - small helpers the parts of ovkd share (util.h). */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int mgmt_fail(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ret;
}

char *mgmt_strdup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

void mgmt_json_safe(char *s)
{
	json_t *j = json_string(s); /* NULL when s is not valid UTF-8 */

	if (j) {
		json_decref(j);
		return;
	}
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
}
