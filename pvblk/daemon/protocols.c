/* SPDX-License-Identifier: Apache-2.0 */
/* protocols.c - the protocol servers built into this pvblk. Each protocol's
   folder defines its table; a protocol not built yet is NULL here. */
#include "pvblk.h"

const struct pvblk_protocol *const pvblk_protocol_nbd = NULL;
const struct pvblk_protocol *const pvblk_protocol_vhost_user_blk = NULL;
