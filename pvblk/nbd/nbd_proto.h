/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nbd_proto.h - the NBD protocol's numbers (fixed newstyle negotiation,
 * simple and structured replies, extended headers), as the NBD protocol
 * document defines them. All fields travel big-endian.
 */
#ifndef OVK_NBD_PROTO_H
#define OVK_NBD_PROTO_H

#include <stdint.h>

#define NBD_MAGIC 0x4e42444d41474943ULL /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454f5054ULL /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x0003e889045565a9ULL

/* handshake flags (server) and client flags */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* options */
enum {
	NBD_OPT_EXPORT_NAME = 1,
	NBD_OPT_ABORT = 2,
	NBD_OPT_LIST = 3,
	NBD_OPT_STARTTLS = 5,
	NBD_OPT_INFO = 6,
	NBD_OPT_GO = 7,
	NBD_OPT_STRUCTURED_REPLY = 8,
	NBD_OPT_LIST_META_CONTEXT = 9,
	NBD_OPT_SET_META_CONTEXT = 10,
	NBD_OPT_EXTENDED_HEADERS = 11,
};

/* option replies */
#define NBD_REP_ERR_BIT (1u << 31)
enum {
	NBD_REP_ACK = 1,
	NBD_REP_SERVER = 2,
	NBD_REP_INFO = 3,
	NBD_REP_META_CONTEXT = 4,
};
#define NBD_REP_ERR_UNSUP (NBD_REP_ERR_BIT | 1)
#define NBD_REP_ERR_POLICY (NBD_REP_ERR_BIT | 2)
#define NBD_REP_ERR_INVALID (NBD_REP_ERR_BIT | 3)
#define NBD_REP_ERR_PLATFORM (NBD_REP_ERR_BIT | 4)
#define NBD_REP_ERR_TLS_REQD (NBD_REP_ERR_BIT | 5)
#define NBD_REP_ERR_UNKNOWN (NBD_REP_ERR_BIT | 6)
#define NBD_REP_ERR_SHUTDOWN (NBD_REP_ERR_BIT | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_ERR_BIT | 8)
#define NBD_REP_ERR_TOO_BIG (NBD_REP_ERR_BIT | 9)
#define NBD_REP_ERR_EXT_HEADER_REQD (NBD_REP_ERR_BIT | 10)

/* NBD_REP_INFO types */
enum {
	NBD_INFO_EXPORT = 0,
	NBD_INFO_NAME = 1,
	NBD_INFO_DESCRIPTION = 2,
	NBD_INFO_BLOCK_SIZE = 3,
};

/* transmission flags */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_ROTATIONAL (1u << 4)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_FLAG_SEND_CACHE (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO (1u << 11)

/* requests */
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_REQUEST_SIZE 28
/* after NBD_OPT_EXTENDED_HEADERS: the same fields, a 64-bit length */
#define NBD_EXTENDED_REQUEST_MAGIC 0x21e41c71u
#define NBD_EXTENDED_REQUEST_SIZE 32
enum {
	NBD_CMD_READ = 0,
	NBD_CMD_WRITE = 1,
	NBD_CMD_DISC = 2,
	NBD_CMD_FLUSH = 3,
	NBD_CMD_TRIM = 4,
	NBD_CMD_CACHE = 5,
	NBD_CMD_WRITE_ZEROES = 6,
	NBD_CMD_BLOCK_STATUS = 7,
};
#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN (1u << 5) /* extended: length = payload */

/* replies */
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu
#define NBD_SIMPLE_REPLY_SIZE 16
#define NBD_STRUCTURED_REPLY_SIZE 20
/* after NBD_OPT_EXTENDED_HEADERS every reply is a chunk with this header:
   magic, flags, type, cookie, the request's offset, a 64-bit length */
#define NBD_EXTENDED_REPLY_MAGIC 0x6e8a278cu
#define NBD_EXTENDED_REPLY_SIZE 32
#define NBD_REPLY_FLAG_DONE (1u << 0)
enum {
	NBD_REPLY_TYPE_NONE = 0,
	NBD_REPLY_TYPE_OFFSET_DATA = 1,
	NBD_REPLY_TYPE_OFFSET_HOLE = 2,
	NBD_REPLY_TYPE_BLOCK_STATUS = 5,
	NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6, /* extended headers only */
	NBD_REPLY_TYPE_ERROR = (1 << 15) + 1,
	NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2,
};

/* base:allocation descriptor flags */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)
/* qemu:dirty-bitmap:NAME descriptor flags */
#define NBD_STATE_DIRTY (1u << 0)

/* errors on the wire */
enum {
	NBD_EPERM = 1,
	NBD_EIO = 5,
	NBD_ENOMEM = 12,
	NBD_EINVAL = 22,
	NBD_ENOSPC = 28,
	NBD_EOVERFLOW = 75,
	NBD_ENOTSUP = 95,
	NBD_ESHUTDOWN = 108,
};

#endif /* OVK_NBD_PROTO_H */
