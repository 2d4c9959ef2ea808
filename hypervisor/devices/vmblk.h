/* SPDX-License-Identifier: Apache-2.0 */
/* ovkvm's virtio-blk disks (devices/virtio_blk.c): one per --disk option,
 * registered as a VM device that reads vm->disk_args. */
#ifndef OVKVM_VMBLK_H
#define OVKVM_VMBLK_H

struct vm;
struct json_t;

/* Check a --disk argument "PATH[,ro|snapshot][,queues=N]" (message on
 * stderr); 0 or -EINVAL. */
int vmblk_check_arg(const char *arg);

#endif
