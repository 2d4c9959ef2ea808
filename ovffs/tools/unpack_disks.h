/* SPDX-License-Identifier: Apache-2.0 */
/* unpack_disks.h - `ovf unpack --disks-to` (unpack_disks.c), called from
 * ovf.c. */
#ifndef OVK_OVF_UNPACK_DISKS_H
#define OVK_OVF_UNPACK_DISKS_H

#include "ovf.h"

/* Whether to is a target --disks-to takes (rbd:POOL/PREFIX[:KEY=VALUE...]
   without a snapshot); prints why not to stderr. */
bool unpack_disks_target_ok(const char *to);

/* Writes each Disk of p into the image named by to with "-DISKID" after
   the image name, as raw contents read through the engine (any VMDK
   kind, gzip'd or chunked files), printing "DISKID NAME" lines. All or
   none: the images are only kept when every disk was written. 0 or
   -errno (the message printed). */
int unpack_disks(struct ovf_pkg *p, const char *to);

#endif /* OVK_OVF_UNPACK_DISKS_H */
