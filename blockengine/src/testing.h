/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testing.h - hooks for the engine's own unit tests and fuzzers (not part
 * of the shared library's exports).
 */
#ifndef OVK_BLOCKENGINE_TESTING_H
#define OVK_BLOCKENGINE_TESTING_H

#include "internal.h"

/* Opens src (owned from here on) with the given driver, as bdev_open would
   after probing: defaults, info fill-in, grain cache. */
int bdev_open_format(const struct bdev_format *fmt, struct bsrc *src,
		     const struct bdev_open_opts *opts, struct bdev **out);

#endif /* OVK_BLOCKENGINE_TESTING_H */
