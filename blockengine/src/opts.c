/* SPDX-License-Identifier: Apache-2.0 */
/* opts.c - reading the caller's options structs by the size the caller
   says they have, so that they can grow without breaking older callers. */
#include <errno.h>
#include <string.h>

#include "internal.h"

int bdev_copy_opts(void *dst, size_t known, size_t base, const void *src,
		   uint32_t struct_size, const char *what)
{
	const unsigned char *p = src;
	size_t n = struct_size ? struct_size : base;

	memset(dst, 0, known);
	if (!src)
		return 0;
	if (n < base)
		return bdev_err(-EINVAL, "%s: struct_size %u is smaller than the "
				"first release's layout (%zu bytes)", what,
				struct_size, base);
	/* a newer caller's fields that this library does not know must be
	   unset: ignoring an option someone asked for would be a lie */
	for (size_t i = known; i < n; i++)
		if (p[i])
			return bdev_err(-E2BIG, "%s: byte %zu of %u is set, but "
					"this libblockengine knows only %zu bytes "
					"of it (a newer option?)", what, i,
					struct_size, known);
	memcpy(dst, src, n < known ? n : known);
	return 0;
}
