/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: a guest driving the virtio-pci transport and MSI-X
 * with arbitrary config cycles and MMIO accesses.  Each 12-byte record is
 * one access: kind (config read/write, MMIO read/write, notify a queue),
 * length selector, 16-bit offset, 64-bit value. */
#include "devices/bus.h"
#include "devices/virtio_pci.h"
#include "pci/pci.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t f_features(void *o) { return 1ull << 9 | 1ull << 12; }
static void f_cfg_read(void *o, uint32_t off, uint8_t *d, unsigned len)
{
	memset(d, (int)off, len);
}
static int f_start(void *o, unsigned q, const struct virtio_queue_cfg *c,
		   uint64_t features, int kick_fd)
{
	return c->desc & 1 ? -22 : 0;
}
static void f_stop(void *o, unsigned q) {}

static const struct virtio_dev_ops dops = {
	.features = f_features, .config_read = f_cfg_read,
	.queue_start = f_start, .queue_stop = f_stop,
};

static int h_ioeventfd(void *o, uint64_t gpa, int fd, bool assign) { return 0; }
static void h_vector(void *o, unsigned v, uint64_t a, uint32_t d, bool u) {}
static void h_deliver(void *o, unsigned v) {}
static void h_intx(void *o, bool level) {}

static const struct virtio_host_ops hops = {
	.ioeventfd = h_ioeventfd, .vector_changed = h_vector,
	.deliver = h_deliver, .set_intx = h_intx,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned lens[4] = { 1, 2, 4, 8 };
	static struct virtio_pci vp;
	struct pci_bus bus;
	int slot;

	pci_bus_init(&bus);
	if (virtio_pci_init(&vp, "fuzz", 2, 0x0180, 3, 256, &dops, NULL, &hops,
			    NULL) < 0)
		return 0;
	slot = pci_bus_add(&bus, &vp.pci, -1);
	pci_bus_alloc_mmio(&bus, &vp.pci, 0);
	for (size_t i = 0; i + 12 <= size; i += 12) {
		const uint8_t *r = data + i;
		unsigned kind = r[0] % 5, len = lens[r[1] & 3];
		unsigned off = r[2] | r[3] << 8;
		uint64_t v, out = 0;
		memcpy(&v, r + 4, 8);
		switch (kind) {
		case 0:
		case 1:
			if (len == 8)
				len = 4;
			pci_bus_port_write(&bus, 0, 4, 0x80000000u | slot << 11 |
					   (off & 0xfc));
			if (kind == 0)
				(void)pci_bus_port_read(&bus, 4 + (off & 3), len);
			else
				pci_bus_port_write(&bus, 4 + (off & 3), len, (uint32_t)v);
			break;
		case 2:
			pci_mmio_ops.read(&bus, off + (r[1] >> 2) * 0x1000ull,
					  (uint8_t *)&out, len);
			break;
		case 3:
			pci_mmio_ops.write(&bus, off + (r[1] >> 2) * 0x1000ull,
					   (const uint8_t *)&v, len);
			break;
		case 4:
			virtio_pci_notify_queue(&vp, r[1]);
			break;
		}
	}
	virtio_pci_destroy(&vp);
	pci_bus_destroy(&bus);
	return 0;
}
