/* SPDX-License-Identifier: Apache-2.0 */
/* log.c - vmdkfs_log: the one logger of main.c, fsops.c, browse.c and
 * kernel.c, in a file of its own so that none of them depends on main.c. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <syslog.h>

#include "vmdkfs.h"

static bool to_syslog;

void vmdkfs_log_to_syslog(void)
{
	openlog("vmdkfs", LOG_PID, LOG_DAEMON);
	to_syslog = true;
}

void vmdkfs_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (to_syslog) {
		vsyslog(LOG_NOTICE, fmt, ap);
	} else {
		fputs("vmdkfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}
