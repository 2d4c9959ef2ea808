/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_nbd_request.c - the request header parser and checker on their own:
 * each 33 bytes of input are one state byte (structured replies, meta
 * contexts selected, read-only, extended headers) and one header: the
 * first 28 bytes of it when compact, all 32 when extended. Whatever the
 * checker accepts must be runnable: inside the export, within the block
 * size limit, with flags its command takes, no write on a read-only one.
 */
#include <stdlib.h>

#include "fuzz_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct nbd_server s;
	static struct nbd_conn c;

	for (; size >= 1 + NBD_EXTENDED_REQUEST_SIZE;
	     data += 1 + NBD_EXTENDED_REQUEST_SIZE,
	     size -= 1 + NBD_EXTENDED_REQUEST_SIZE) {
		struct nbd_request r;
		bool ro = data[0] & 4;
		uint32_t err;

		fuzz_server(&s, ro ? 2 : 0);
		memset(&c, 0, sizeof(c));
		c.srv = &s;
		c.structured = data[0] & 1;
		c.meta_selected = data[0] & 2 ? 1 : 0;
		c.extended = data[0] & 8;
		if (c.extended)
			c.structured = true;
		if (nbd_parse_request(&c, data + 1, &r) < 0)
			continue;
		err = nbd_check_request(&c, &r);
		if (err)
			continue;
		if (r.offset + r.length < r.offset ||
		    r.offset + r.length > s.size)
			abort();
		if ((r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) &&
		    r.length > s.max_block)
			abort();
		if (ro && (r.type == NBD_CMD_WRITE || r.type == NBD_CMD_TRIM ||
			   r.type == NBD_CMD_WRITE_ZEROES))
			abort();
		if (r.type > NBD_CMD_BLOCK_STATUS)
			abort();
		if (!c.extended && r.length > UINT32_MAX)
			abort();
		if ((r.flags & NBD_CMD_FLAG_PAYLOAD_LEN) &&
		    (!c.extended || r.type != NBD_CMD_WRITE))
			abort();
		if (r.type == NBD_CMD_BLOCK_STATUS &&
		    (!c.structured || !c.meta_selected))
			abort();
	}
	return 0;
}
