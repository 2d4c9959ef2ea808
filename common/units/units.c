/* SPDX-License-Identifier: Apache-2.0 */
/* units.c - sizes for people; see units.h. */
#include <inttypes.h>
#include <stdio.h>

#include "units.h"

static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB",
				     "EiB" };

/* bytes in the largest unit that keeps it >= 1 (*u its index). */
static double scaled(uint64_t bytes, unsigned *u)
{
	double v = (double)bytes;

	*u = 0;
	while (v >= 1024.0 && *u < sizeof(units) / sizeof(units[0]) - 1) {
		v /= 1024.0;
		(*u)++;
	}
	return v;
}

const char *human_size(uint64_t bytes, char *buf, size_t len)
{
	unsigned u;
	double v = scaled(bytes, &u);

	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else if (v == (double)(uint64_t)v)
		snprintf(buf, len, "%.0f %s", v, units[u]);
	else
		snprintf(buf, len, "%.3g %s", v, units[u]);
	return buf;
}

const char *human_size_1dp(uint64_t bytes, char *buf, size_t len)
{
	unsigned u;
	double v = scaled(bytes, &u);

	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}
