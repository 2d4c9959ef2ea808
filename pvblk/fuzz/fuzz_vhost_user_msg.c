/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_vhost_user_msg.c - pvblk's vhost-user message handling: the input
 * is a stream of messages as a front end would send them (12-byte header,
 * then its payload); SET_MEM_TABLE, ADD_MEM_REG and SET_INFLIGHT_FD get
 * small memfds as their fds. Queue threads are not started (no kick fds arrive).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blockengine.h"
#include "vhost_user.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct bdev *bdev;
static struct vblk_dev *blk;
static struct vu_dev dev;

static void setup(void)
{
	char path[] = "/tmp/fuzz_vhost_user_XXXXXX";
	struct vblk_dev_opts o = { .serial = "fuzz", .num_queues = 2 };
	int fd = mkstemp(path);

	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		abort();
	close(fd);
	if (bdev_open(path, NULL, &bdev) < 0)
		abort();
	unlink(path);
	o.bdev = bdev;
	if (vblk_dev_new(&o, &blk) < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vu_msg m, reply;

	if (!bdev)
		setup();
	vu_dev_init(&dev, blk, 2);
	dev.no_threads = true;
	while (size >= sizeof(m.hdr)) {
		int fds[VU_MAX_FDS];
		unsigned nfds = 0;

		memcpy(&m.hdr, data, sizeof(m.hdr));
		data += sizeof(m.hdr);
		size -= sizeof(m.hdr);
		if (m.hdr.size > sizeof(m.p) || m.hdr.size > size)
			break; /* the server closes the connection here */
		memcpy(&m.p, data, m.hdr.size);
		data += m.hdr.size;
		size -= m.hdr.size;
		if (m.hdr.request == VU_SET_MEM_TABLE ||
		    m.hdr.request == VU_ADD_MEM_REG ||
		    m.hdr.request == VU_SET_INFLIGHT_FD) {
			unsigned want = m.hdr.request != VU_SET_MEM_TABLE ? 1 :
					m.p.memory.nregions % (VU_MAX_FDS + 1);

			for (; nfds < want; nfds++) {
				fds[nfds] = memfd_create("fuzz", MFD_CLOEXEC);
				if (fds[nfds] < 0 ||
				    ftruncate(fds[nfds], 65536) < 0)
					abort();
			}
		}
		if (vu_dev_handle(&dev, &m, fds, nfds, &reply) < 0)
			break;
	}
	vu_dev_reset(&dev);
	return 0;
}
