/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuse_uring_abi.h - the few FUSE-over-io_uring definitions vmdkfs needs,
 * as Linux 6.14+ defines them in include/uapi/linux/fuse.h (protocol 7.42,
 * checked against 6.18) and Documentation/filesystems/fuse/fuse-io-uring.rst.
 * Debian 12's <linux/fuse.h> (7.38) predates them.
 */
#ifndef OVK_VMDKFS_FUSE_URING_ABI_H
#define OVK_VMDKFS_FUSE_URING_ABI_H

#include <stddef.h>
#include <stdint.h>

/* INIT flag (bit 41: bit 9 of flags2, valid with FUSE_INIT_EXT). */
#define VMDKFS_FUSE_OVER_IO_URING_FLAGS2 (1u << 9)
#define VMDKFS_FUSE_INIT_EXT (1u << 30)

#define VMDKFS_FUSE_URING_IN_OUT_HEADER_SZ 128
#define VMDKFS_FUSE_URING_OP_IN_OUT_SZ 128

/* IORING_OP_URING_CMD cmd_op values on /dev/fuse. */
enum {
	VMDKFS_FUSE_IO_URING_CMD_REGISTER = 1,
	VMDKFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

struct vmdkfs_fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;  /* the request's unique; echo it on commit */
	uint32_t payload_sz; /* bytes in the payload buffer, both ways */
	uint32_t padding;
	uint64_t reserved;
};

/* iov[0] of a REGISTER: fuse_in_header (request) or fuse_out_header
 * (reply), the opcode's first argument, and the entry's in/out. */
struct vmdkfs_fuse_uring_req_header {
	char in_out[VMDKFS_FUSE_URING_IN_OUT_HEADER_SZ];
	char op_in[VMDKFS_FUSE_URING_OP_IN_OUT_SZ];
	struct vmdkfs_fuse_uring_ent_in_out ring_ent_in_out;
};

/* The command area of a 128-byte SQE. */
struct vmdkfs_fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

_Static_assert(sizeof(struct vmdkfs_fuse_uring_ent_in_out) == 32,
	       "fuse_uring_ent_in_out is 32 bytes");
_Static_assert(offsetof(struct vmdkfs_fuse_uring_ent_in_out, payload_sz) == 16,
	       "payload_sz at 16");
_Static_assert(sizeof(struct vmdkfs_fuse_uring_req_header) == 288,
	       "fuse_uring_req_header is 288 bytes");
_Static_assert(offsetof(struct vmdkfs_fuse_uring_req_header, ring_ent_in_out) ==
	       256, "ring_ent_in_out at 256");
_Static_assert(sizeof(struct vmdkfs_fuse_uring_cmd_req) == 24,
	       "fuse_uring_cmd_req is 24 bytes");
_Static_assert(offsetof(struct vmdkfs_fuse_uring_cmd_req, qid) == 16,
	       "qid at 16");

#endif
