/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nbd-changed.c - the backup agent's view of a disk served by pvblk, with
 * libnbd and no ovk code on the client side: the extents a meta context
 * reports, e.g. what changed since a checkpoint (qemu:dirty-bitmap:NAME)
 * or what holds data (base:allocation).
 *
 *   cc nbd-changed.c $(pkg-config --cflags --libs libnbd)
 *   pvblk -o rw --nbd unix:/run/disk.nbd disk.vmdk &
 *   ./nbd-changed 'nbd+unix:///?socket=/run/disk.nbd' qemu:dirty-bitmap:monday
 *
 * Prints OFFSET LENGTH FLAGS for each extent (for a dirty bitmap, FLAGS 1
 * is changed; for base:allocation, 1 is a hole and 2 reads as zeros).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

struct walk {
	const char *context;
	uint64_t next; /* where the reply ended */
};

static int on_extents(void *user_data, const char *metacontext,
		      uint64_t offset, uint32_t *entries, size_t nr_entries,
		      int *error)
{
	struct walk *w = (struct walk *)user_data;

	(void)error; /* a failed reply shows in nbd_block_status() */

	if (strcmp(metacontext, w->context) != 0)
		return 0; /* another context's answer */
	for (size_t i = 0; i + 1 < nr_entries; i += 2) {
		printf("%" PRIu64 " %" PRIu32 " %" PRIu32 "\n", offset,
		       entries[i], entries[i + 1]);
		offset += entries[i];
	}
	w->next = offset;
	return 0;
}

int main(int argc, char **argv)
{
	struct walk w;
	nbd_extent_callback cb;
	struct nbd_handle *nbd;
	int64_t size;

	if (argc != 3) {
		fprintf(stderr, "usage: %s NBD-URI CONTEXT\n", argv[0]);
		return 2;
	}
	memset(&cb, 0, sizeof(cb));
	cb.callback = on_extents;
	cb.user_data = &w;
	w.context = argv[2];
	w.next = 0;
	nbd = nbd_create();
	if (!nbd || nbd_add_meta_context(nbd, w.context) < 0 ||
	    nbd_connect_uri(nbd, argv[1]) < 0) {
		fprintf(stderr, "nbd-changed: %s\n", nbd_get_error());
		return 1;
	}
	if (nbd_can_meta_context(nbd, w.context) != 1) {
		fprintf(stderr, "nbd-changed: the server does not offer %s\n",
			w.context);
		nbd_close(nbd);
		return 1;
	}
	size = nbd_get_size(nbd);
	while (size > 0 && w.next < (uint64_t)size) {
		uint64_t from = w.next;
		uint64_t len = (uint64_t)size - from;

		if (len > (1u << 30))
			len = 1u << 30;
		if (nbd_block_status(nbd, len, from, cb, 0) < 0) {
			fprintf(stderr, "nbd-changed: %s\n", nbd_get_error());
			nbd_close(nbd);
			return 1;
		}
		if (w.next <= from)
			break; /* no progress: a broken reply */
	}
	nbd_shutdown(nbd, 0);
	nbd_close(nbd);
	return 0;
}
