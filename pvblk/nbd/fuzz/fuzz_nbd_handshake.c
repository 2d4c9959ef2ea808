/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_nbd_handshake.c - the option negotiation, then the request headers
 * that follow it: input byte 0 configures the server (TLS required,
 * read-only), the rest is everything a client sends. Requests are parsed
 * and checked, not run (there is no image), and a checked request must lie
 * inside the export. Extended headers (NBD_OPT_EXTENDED_HEADERS) switch
 * the parser to 32-byte headers with 64-bit lengths.
 */
#include <stdlib.h>

#include "fuzz_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct nbd_server s;
	static struct nbd_conn c;
	struct fuzz_in in;

	if (size < 1)
		return 0;
	fuzz_server(&s, data[0]);
	in = (struct fuzz_in){ data + 1, size - 1, 0 };
	memset(&c, 0, sizeof(c));
	c.srv = &s;
	c.fd = -1;
	c.io = &fuzz_io;
	c.io_opaque = &in;
	snprintf(c.peer, sizeof(c.peer), "fuzz");
	if (nbd_negotiate(&c) != 1)
		return 0;
	for (;;) {
		uint8_t h[NBD_EXTENDED_REQUEST_SIZE];
		struct nbd_request r;
		uint32_t err;

		if (nbd_read_full(&c, h, nbd_request_size(&c)) < 0 ||
		    nbd_parse_request(&c, h, &r) < 0)
			break;
		err = nbd_check_request(&c, &r);
		if (!err && (r.offset + r.length < r.offset ||
			     r.offset + r.length > s.size))
			abort(); /* a checked request outside the export */
		if (!err && c.extended && !c.structured)
			abort(); /* extended headers imply chunked replies */
		if (!err && c.extended &&
		    (r.type == NBD_CMD_WRITE) !=
			    !!(r.flags & NBD_CMD_FLAG_PAYLOAD_LEN))
			abort(); /* a WRITE without its payload length */
		if (nbd_request_has_payload(&c, &r) &&
		    (r.length > s.max_block || nbd_skip(&c, r.length) < 0))
			break;
	}
	return 0;
}
