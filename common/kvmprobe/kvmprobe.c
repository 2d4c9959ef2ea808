/* SPDX-License-Identifier: Apache-2.0 */
/* kvmprobe.c - hardware virtualization in /proc/cpuinfo (see kvmprobe.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kvmprobe.h"

int kvmprobe_cpu_virt(void)
{
	char line[4096];
	int ret = -ENOENT;
	FILE *f = fopen("/proc/cpuinfo", "r");

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		/* each flag follows a space or the tab of "flags\t\t: " */
		ret = strstr(line, " svm") || strstr(line, " vmx");
		break;
	}
	fclose(f);
	return ret;
}
