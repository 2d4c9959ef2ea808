/* SPDX-License-Identifier: Apache-2.0 */
/* util.h - small helpers the parts of ovkd share. */
#ifndef OVK_MGMT_UTIL_H
#define OVK_MGMT_UTIL_H

#include <stddef.h>

/* Write the sentence fmt into err (errlen bytes) and return ret: for the
   "fill err, return -errno" convention of deploy and the providers. */
int mgmt_fail(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Make s a string JSON takes: when it is not valid UTF-8 (a URL's bytes,
   a child's output), every byte outside printable ASCII becomes '?'. */
void mgmt_json_safe(char *s);

/* strdup(s), or NULL for NULL. */
char *mgmt_strdup_or_null(const char *s);

#endif /* OVK_MGMT_UTIL_H */
