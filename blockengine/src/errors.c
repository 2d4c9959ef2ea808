/* SPDX-License-Identifier: Apache-2.0 */
/* errors.c - the thread-local message behind bdev_errmsg(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* room for the innermost cause and the context of a deep delta chain */
#define BDEV_ERRMSG_MAX 8192

static _Thread_local char bdev_errbuf[BDEV_ERRMSG_MAX];

/* Records the message for this thread and hands err back unchanged. */
int bdev_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(bdev_errbuf, sizeof(bdev_errbuf), fmt, ap);
	va_end(ap);
	return err;
}

/* Appends to this thread's message, keeping what is there first. */
int bdev_err_append(int err, const char *fmt, ...)
{
	size_t used = strnlen(bdev_errbuf, sizeof(bdev_errbuf) - 1);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(bdev_errbuf + used, sizeof(bdev_errbuf) - used, fmt, ap);
	va_end(ap);
	return err;
}

/* Forgets this thread's message. */
void bdev_err_clear(void)
{
	bdev_errbuf[0] = '\0';
}

/* The message of the last failing call on this thread, "" if none. */
const char *bdev_errmsg(void)
{
	return bdev_errbuf;
}
