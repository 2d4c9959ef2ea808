/* SPDX-License-Identifier: Apache-2.0 */
/* ovkvm's virtio-blk disks (devices/virtio_blk.c): one per --disk option,
 * registered as a VM device that reads vm->disk_args. */
#ifndef OVKVM_VMBLK_H
#define OVKVM_VMBLK_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct vmblk;

/* Check a --disk argument "PATH[,ro|snapshot][,queues=N]" (message on
 * stderr); 0 or -EINVAL. */
int vmblk_check_arg(const char *arg);

/* {"name", "path", "read_only", "snapshot", "queues", "requests",
 *  "read_bytes", "written_bytes", "errors"} for the control socket's
 * status (any thread). */
json_t *vmblk_status(const struct vmblk *d);

/* Grow the disk to size bytes while the guest runs (the control socket's
 * disk-grow): the engine grows the image (bdev_grow), the device serves
 * the new capacity and interrupts the driver with a configuration change.
 * 0, or -errno with a sentence in err. Any thread. */
int vmblk_grow(struct vmblk *d, uint64_t size, char *err, size_t errlen);

#endif
