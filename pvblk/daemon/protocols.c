/* SPDX-License-Identifier: Apache-2.0 */
/* protocols.c - the protocol servers built into this pvblk. Each protocol's
   folder defines its table; a protocol not built yet is NULL here. */
#include "pvblk.h"

extern const struct pvblk_protocol pvblk_nbd;            /* nbd/server.c */
extern const struct pvblk_protocol pvblk_vhost_user_blk; /* vhost_user/ */

const struct pvblk_protocol *const pvblk_protocol_nbd = &pvblk_nbd;
const struct pvblk_protocol *const pvblk_protocol_vhost_user_blk =
	&pvblk_vhost_user_blk;
