/* SPDX-License-Identifier: Apache-2.0 */
/* errors.c - the thread-local message behind bdev_errmsg(). */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

#define BDEV_ERRMSG_MAX 512

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
