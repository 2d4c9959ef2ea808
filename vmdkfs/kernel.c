/* SPDX-License-Identifier: Apache-2.0 */
/* kernel.c - settings of the mount that live on the kernel side of FUSE
 * and are not negotiated in INIT: the mount's read-ahead. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdkfs.h"

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/*
 * The kernel gives a FUSE mount the default 128 KiB of read-ahead (it
 * offers that in INIT and keeps the smaller of it and our answer), so a
 * buffered sequential reader (cat, tar, rsync, a scanner) has at most
 * 128 KiB in flight: one small request at a time, one worker busy. Raise
 * the mount's BDI read-ahead to VMDKFS_READAHEAD before the INIT reply,
 * which then answers the same (op_init): each window becomes several
 * max_read requests served in parallel. The mount is found through
 * /proc/self/mountinfo (a stat of the mount point would wait on ourselves
 * before the loop runs). Needs root; best effort otherwise.
 */
void vmdkfs_raise_readahead(const char *mp)
{
	char *real = realpath(mp, NULL), line[4096], where[4096], path[128];
	FILE *f = real ? fopen("/proc/self/mountinfo", "re") : NULL;
	unsigned maj = 0, min = 0, fmaj = 0, fmin = 0;
	bool found = false;

	while (f && fgets(line, sizeof(line), f)) {
		/* id parent maj:min root mountpoint ... (the last one wins) */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, where) != 3 ||
		    !strstr(line, " fuse.vmdkfs "))
			continue;
		unescape(where);
		if (!strcmp(where, real)) {
			found = true;
			fmaj = maj;
			fmin = min;
		}
	}
	if (f)
		fclose(f);
	free(real);
	if (!found)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", fmaj, fmin);
	f = fopen(path, "we");
	if (!f)
		return;
	fprintf(f, "%u\n", VMDKFS_READAHEAD >> 10);
	if (fclose(f) != 0)
		vmdkfs_log("%s: %s (read-ahead stays at the kernel's default)",
			   path, strerror(errno));
}
