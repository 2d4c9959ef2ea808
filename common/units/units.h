/* SPDX-License-Identifier: Apache-2.0 */
/*
 * units.h - sizes for people, in the two styles the programs print:
 * qemu-img's ("10 MiB", "1.5 KiB") and one decimal ("4.0 GiB").
 */
#ifndef OVK_UNITS_H
#define OVK_UNITS_H

#include <stddef.h>
#include <stdint.h>

/* "10 MiB", "6 GiB", "1.5 KiB", "512 B" (three significant digits, as
   qemu-img info): into buf of at least 32 bytes; returns buf. */
const char *human_size(uint64_t bytes, char *buf, size_t len);

/* "4.0 GiB", "1.5 KiB", "512 B" (one decimal past whole bytes): into buf
   of at least 32 bytes; returns buf. */
const char *human_size_1dp(uint64_t bytes, char *buf, size_t len);

#endif
