/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_virtqueue.c - the virtio-blk core's view of a guest that writes
 * anything: the input is guest memory (rings, indirect tables, headers,
 * data) for a 16-entry queue; its first byte picks the negotiated ring
 * features, whether a record of requests in flight (copied from guest
 * offset 0x6000) is replayed, and where avail reading starts. The image is a small raw
 * file. ASan catches any access outside the guest memory buffer.
 */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockengine.h"
#include "virtio_blk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GPA0 0x10000ull
#define MEM 0x8000u
#define NUM 16

static struct bdev *bdev;
static struct vblk_dev *dev;
static struct vblk_queue *queue;
static uint8_t *guest;

static void setup(void)
{
	char path[] = "/tmp/fuzz_virtqueue_XXXXXX";
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR, .format = "raw" };
	struct vblk_dev_opts o = { .serial = "fuzz", .num_queues = 1 };
	int fd = mkstemp(path);

	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		abort();
	close(fd);
	if (bdev_open(path, &oo, &bdev) < 0)
		abort();
	unlink(path);
	o.bdev = bdev;
	if (vblk_dev_new(&o, &dev) < 0 ||
	    vblk_queue_new(dev, NULL, NULL, &queue) < 0)
		abort();
	/* exactly MEM bytes, so ASan sees a byte past the end */
	guest = malloc(MEM);
	if (!guest)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vblk_mem mem = { 1, { { GPA0, MEM, NULL } }, NULL };
	struct vblk_ring ring = { .num = NUM };
	uint8_t ctl;

	if (!bdev)
		setup();
	if (size < 1)
		return 0;
	ctl = data[0];
	memset(guest, 0, MEM);
	memcpy(guest, data + 1, size - 1 < MEM ? size - 1 : MEM);
	mem.regions[0].hva = guest;
	ring.desc = (struct vring_desc *)guest;                 /* 0x000 */
	ring.avail = (struct vring_avail *)(guest + 0x100);     /* 0x100 */
	ring.used = (struct vring_used *)(guest + 0x200);       /* 0x200 */
	ring.features = (ctl & 1 ? 1ull << VIRTIO_RING_F_INDIRECT_DESC : 0) |
			(ctl & 2 ? 1ull << VIRTIO_RING_F_EVENT_IDX : 0);
	ring.last_avail_idx = (uint16_t)(ctl >> 3);
	if (ctl & 4) {
		static uint8_t rec[512] __attribute__((aligned(64)));

		_Static_assert(sizeof(rec) >= 16 + 16 * NUM, "record size");
		memcpy(rec, guest + 0x6000, vblk_inflight_bytes(NUM));
		ring.inflight = (struct vblk_inflight *)rec;
	}
	if (vblk_queue_start(queue, &mem, &ring) < 0)
		abort();
	vblk_queue_kick(queue);
	while (vblk_queue_inflight(queue)) {
		struct pollfd pfd = { vblk_queue_fd(queue), POLLIN, 0 };

		if (poll(&pfd, 1, 10000) != 1)
			abort(); /* a request that never completes: a hang */
		vblk_queue_complete(queue);
	}
	vblk_queue_stop(queue);
	return 0;
}
