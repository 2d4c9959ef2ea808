/* SPDX-License-Identifier: Apache-2.0 */
/* Tiny test helpers for the hypervisor's unit tests (no KVM needed). */
#ifndef OVKVM_TEST_CHECK_H
#define OVKVM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define CHECK_EQ(a, b)                                                         \
	do {                                                                   \
		unsigned long long a_ = (a), b_ = (b);                         \
		if (a_ != b_) {                                                \
			fprintf(stderr, "%s:%d: %s == %#llx, expected %s == %#llx\n", \
				__FILE__, __LINE__, #a, a_, #b, b_);           \
			exit(1);                                               \
		}                                                              \
	} while (0)

#endif
