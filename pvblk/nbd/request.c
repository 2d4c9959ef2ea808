/* SPDX-License-Identifier: Apache-2.0 */
/* request.c - the transmission request header: decode it, and decide
   before any payload is read whether the server will run it. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "nbd_i.h"

size_t nbd_request_size(const struct nbd_conn *c)
{
	return c->extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
}

int nbd_parse_request(const struct nbd_conn *c, const uint8_t *buf,
		      struct nbd_request *r)
{
	uint32_t magic, len32;
	uint16_t flags, type;
	uint64_t cookie, off, len64;

	/* both layouts share the first 24 bytes; only the length differs */
	memcpy(&magic, buf, 4);
	memcpy(&flags, buf + 4, 2);
	memcpy(&type, buf + 6, 2);
	memcpy(&cookie, buf + 8, 8);
	memcpy(&off, buf + 16, 8);
	if (be32toh(magic) != (c->extended ? NBD_EXTENDED_REQUEST_MAGIC :
					     NBD_REQUEST_MAGIC))
		return -EPROTO;
	r->flags = be16toh(flags);
	r->type = be16toh(type);
	r->cookie = cookie; /* echoed back as the client sent it */
	r->offset = be64toh(off);
	if (c->extended) {
		memcpy(&len64, buf + 24, 8);
		r->length = be64toh(len64);
	} else {
		memcpy(&len32, buf + 24, 4);
		r->length = be32toh(len32);
	}
	return 0;
}

bool nbd_request_has_payload(const struct nbd_conn *c,
			     const struct nbd_request *r)
{
	if (c->extended)
		return r->flags & NBD_CMD_FLAG_PAYLOAD_LEN;
	return r->type == NBD_CMD_WRITE;
}

/* The flags each command accepts. */
static uint16_t allowed_flags(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return NBD_CMD_FLAG_DF;
	case NBD_CMD_WRITE:
	case NBD_CMD_TRIM:
		return NBD_CMD_FLAG_FUA;
	case NBD_CMD_WRITE_ZEROES:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE |
		       NBD_CMD_FLAG_FAST_ZERO;
	case NBD_CMD_BLOCK_STATUS:
		return NBD_CMD_FLAG_REQ_ONE;
	default:
		return 0;
	}
}

uint32_t nbd_check_request(const struct nbd_conn *c,
			   const struct nbd_request *r)
{
	const struct nbd_server *s = c->srv;
	bool ro = s->tx_flags & NBD_FLAG_READ_ONLY;
	uint64_t end = r->offset + r->length;

	switch (r->type) {
	case NBD_CMD_READ:
	case NBD_CMD_WRITE:
	case NBD_CMD_DISC:
	case NBD_CMD_FLUSH:
	case NBD_CMD_TRIM:
	case NBD_CMD_CACHE:
	case NBD_CMD_WRITE_ZEROES:
	case NBD_CMD_BLOCK_STATUS:
		break;
	default:
		return NBD_EINVAL;
	}
	if (r->flags & ~(allowed_flags(r->type) |
			 (c->extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0)))
		return NBD_EINVAL;
	/* with extended headers a WRITE says its payload length, and no
	   other command takes a payload here (its bytes were skipped) */
	if (c->extended && (r->type == NBD_CMD_WRITE) !=
				   !!(r->flags & NBD_CMD_FLAG_PAYLOAD_LEN))
		return NBD_EINVAL;
	if ((r->flags & NBD_CMD_FLAG_DF) && !c->structured)
		return NBD_EINVAL;
	if (r->type == NBD_CMD_DISC || r->type == NBD_CMD_FLUSH)
		return r->offset || r->length ? NBD_EINVAL : 0;
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
	    r->length > s->max_block)
		return r->type == NBD_CMD_WRITE ? NBD_EOVERFLOW : NBD_EINVAL;
	if (r->type == NBD_CMD_BLOCK_STATUS) {
		if (!c->structured || !c->meta_selected)
			return NBD_EINVAL;
		if (!r->length)
			return NBD_EINVAL;
	}
	if (end < r->offset || end > __atomic_load_n(&s->size, __ATOMIC_ACQUIRE))
		return r->type == NBD_CMD_WRITE ||
		       r->type == NBD_CMD_WRITE_ZEROES ?
			       NBD_ENOSPC :
			       NBD_EINVAL;
	if (ro && (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
		   r->type == NBD_CMD_WRITE_ZEROES))
		return NBD_EPERM;
	return 0;
}
