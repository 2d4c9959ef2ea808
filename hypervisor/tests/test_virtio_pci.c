/* SPDX-License-Identifier: Apache-2.0 */
/* The virtio-pci transport and MSI-X, driven the way a guest driver does
 * (config cycles through ports 0xcf8/0xcfc, MMIO in the PCI window), with
 * a small device and host ops table recording what the transport asks. */
#include "check.h"
#include "devices/bus.h"
#include "devices/virtio_pci.h"
#include "pci/pci.h"

#include <string.h>
#include <unistd.h>

static struct pci_bus bus;

static uint32_t cfg_read(unsigned slot, unsigned reg, unsigned len)
{
	pci_bus_port_write(&bus, 0, 4, 0x80000000u | slot << 11 | (reg & 0xfc));
	return pci_bus_port_read(&bus, 4 + (reg & 3), len);
}

static void cfg_write(unsigned slot, unsigned reg, unsigned len, uint32_t v)
{
	pci_bus_port_write(&bus, 0, 4, 0x80000000u | slot << 11 | (reg & 0xfc));
	pci_bus_port_write(&bus, 4 + (reg & 3), len, v);
}

static uint64_t bar;

static uint64_t mmio_read(uint64_t off, unsigned len)
{
	uint64_t v = 0;
	pci_mmio_ops.read(&bus, bar + off - PCI_MMIO_BASE, (uint8_t *)&v, len);
	return v;
}

static void mmio_write(uint64_t off, unsigned len, uint64_t v)
{
	pci_mmio_ops.write(&bus, bar + off - PCI_MMIO_BASE, (uint8_t *)&v, len);
}

/* What the ops saw. */
static unsigned started, stopped, delivered[8], ioevents;
static uint64_t ioevent_addr, route_addr;
static uint32_t route_data;
static struct virtio_queue_cfg last_cfg;
static uint64_t last_features;
static uint8_t devcfg[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };

static uint64_t d_features(void *o) { return 1ull << 9; }
static void d_cfg_read(void *o, uint32_t off, uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		data[i] = off + i < sizeof(devcfg) ? devcfg[off + i] : 0;
}
static int d_start(void *o, unsigned q, const struct virtio_queue_cfg *c,
		   uint64_t features, int kick_fd)
{
	started++;
	last_cfg = *c;
	last_features = features;
	return c->desc == 0xbad000 ? -14 : 0;
}
static void d_stop(void *o, unsigned q) { stopped++; }

static const struct virtio_dev_ops dops = {
	.features = d_features, .config_read = d_cfg_read,
	.queue_start = d_start, .queue_stop = d_stop,
};

static int h_ioeventfd(void *o, uint64_t gpa, int fd, bool assign)
{
	ioevents += assign ? 1 : 0;
	ioevent_addr = assign ? gpa : 0;
	return -38; /* no KVM: the transport handles notify writes itself */
}
static void h_vector(void *o, unsigned vec, uint64_t addr, uint32_t data,
		     bool usable)
{
	if (usable) {
		route_addr = addr;
		route_data = data;
	}
}
static void h_deliver(void *o, unsigned vec) { delivered[vec]++; }

static const struct virtio_host_ops hops = {
	.ioeventfd = h_ioeventfd, .vector_changed = h_vector,
	.deliver = h_deliver,
};

int main(void)
{
	static struct virtio_pci vp;
	struct pci_dev bridge;
	unsigned slot, cap, types = 0, msix_cap = 0;
	uint64_t n;

	pci_bus_init(&bus);
	pci_host_bridge_init(&bridge);
	CHECK_EQ(pci_bus_add(&bus, &bridge, 0), 0);
	CHECK_EQ(virtio_pci_init(&vp, "vp", 2, 0x0180, 2, 256, &dops, NULL,
				 &hops, NULL), 0);
	slot = pci_bus_add(&bus, &vp.pci, -1);
	CHECK_EQ(slot, 1);
	CHECK_EQ(pci_bus_alloc_mmio(&bus, &vp.pci, 0), 0);

	/* Identity and the capability list a driver walks. */
	CHECK_EQ(cfg_read(slot, PCI_VENDOR_ID, 2), 0x1af4);
	CHECK_EQ(cfg_read(slot, PCI_DEVICE_ID, 2), 0x1042);
	CHECK(cfg_read(slot, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	for (cap = cfg_read(slot, PCI_CAPABILITY_LIST, 1); cap;
	     cap = cfg_read(slot, cap + 1, 1)) {
		if (cfg_read(slot, cap, 1) == PCI_CAP_ID_VNDR)
			types |= 1u << cfg_read(slot, cap + 3, 1);
		if (cfg_read(slot, cap, 1) == PCI_CAP_ID_MSIX)
			msix_cap = cap;
	}
	CHECK_EQ(types, 0x1e); /* common, notify, ISR, device */
	CHECK(msix_cap);
	CHECK_EQ(cfg_read(slot, msix_cap + 2, 2) & 0x7ff, 2); /* 3 vectors */

	/* The BAR decodes once memory is enabled; the notify ioeventfds are
	 * asked for at its address. */
	bar = pci_dev_bar_addr(&vp.pci, 0);
	CHECK_EQ(bar, PCI_MMIO_BASE);
	CHECK_EQ(mmio_read(0, 4), 0xffffffffu); /* not decoding yet */
	cfg_write(slot, PCI_COMMAND, 2, 0x6);
	CHECK_EQ(ioevents, 2);
	CHECK_EQ(ioevent_addr, bar + VIRTIO_PCI_NOTIFY_OFF + 4);

	/* Features: VERSION_1 (bit 32) and the device's bit 9. */
	mmio_write(0, 4, 0);
	CHECK_EQ(mmio_read(4, 4), 1u << 9);
	mmio_write(0, 4, 1);
	CHECK_EQ(mmio_read(4, 4), 1);
	CHECK_EQ(mmio_read(18, 2), 2); /* num_queues */
	CHECK_EQ(mmio_read(VIRTIO_PCI_DEVCFG_OFF + 2, 2), 0x0403);

	/* A driver that accepts a feature not offered gets no FEATURES_OK. */
	mmio_write(20, 1, 1 | 2);
	mmio_write(8, 4, 0);
	mmio_write(12, 4, 1u << 10);
	mmio_write(8, 4, 1);
	mmio_write(12, 4, 1);
	mmio_write(20, 1, 1 | 2 | 8);
	CHECK_EQ(mmio_read(20, 1) & 8, 0);
	mmio_write(20, 1, 0); /* reset */
	CHECK_EQ(mmio_read(20, 1), 0);

	/* Proper negotiation; queue 0 set up; junk writes are ignored. */
	mmio_write(20, 1, 1 | 2);
	mmio_write(8, 4, 0);
	mmio_write(12, 4, 1u << 9);
	mmio_write(8, 4, 1);
	mmio_write(12, 4, 1);
	mmio_write(20, 1, 1 | 2 | 8);
	CHECK_EQ(mmio_read(20, 1), 1 | 2 | 8);
	mmio_write(22, 2, 0);
	CHECK_EQ(mmio_read(24, 2), 256);
	mmio_write(24, 2, 300); /* not a power of two: ignored */
	CHECK_EQ(mmio_read(24, 2), 256);
	mmio_write(24, 2, 128);
	mmio_write(26, 2, 1);
	mmio_write(26 + 0, 2, 1);
	CHECK_EQ(mmio_read(26, 2), 1);
	mmio_write(32, 4, 0x10000);
	mmio_write(36, 4, 0);
	mmio_write(40, 8, 0x11000);
	mmio_write(48, 8, 0x12000);
	mmio_write(28, 2, 1);
	mmio_write(0x7ff0, 4, 0xdead); /* unknown offset: dropped */
	mmio_write(18, 2, 7);          /* read-only: dropped */
	CHECK_EQ(mmio_read(18, 2), 2);
	mmio_write(22, 2, 9);          /* no queue 9 */
	CHECK_EQ(mmio_read(24, 2), 0);
	mmio_write(24, 2, 64);
	CHECK_EQ(started, 0);
	mmio_write(20, 1, 1 | 2 | 8 | 4); /* DRIVER_OK */
	CHECK_EQ(started, 1);
	CHECK_EQ(last_cfg.size, 128);
	CHECK_EQ(last_cfg.desc, 0x10000);
	CHECK_EQ(last_cfg.avail, 0x11000);
	CHECK_EQ(last_cfg.used, 0x12000);
	CHECK_EQ(last_features, (1ull << 32) | (1u << 9));
	CHECK(vp.guest_errors >= 4);

	/* Notify write (no ioeventfd here): the queue's kick fd fires. */
	mmio_write(VIRTIO_PCI_NOTIFY_OFF, 2, 0);
	CHECK_EQ(read(vp.kick_fd[0], &n, 8), 8);

	/* MSI-X: disabled, queue interrupts go to the ISR (INTx). */
	virtio_pci_notify_queue(&vp, 0);
	CHECK_EQ(mmio_read(VIRTIO_PCI_ISR_OFF, 1), 1);
	CHECK_EQ(mmio_read(VIRTIO_PCI_ISR_OFF, 1), 0); /* read clears */
	/* Enabled, vector 1 programmed but masked: pending, then delivered
	 * on unmask. */
	cfg_write(slot, msix_cap + 2, 2, 0x8000);
	mmio_write(VIRTIO_PCI_MSIX_TABLE_OFF + 16, 4, 0xfee00000);
	mmio_write(VIRTIO_PCI_MSIX_TABLE_OFF + 20, 4, 0);
	mmio_write(VIRTIO_PCI_MSIX_TABLE_OFF + 24, 4, 0x4041);
	virtio_pci_notify_queue(&vp, 0);
	CHECK_EQ(delivered[1], 0);
	CHECK_EQ(mmio_read(VIRTIO_PCI_MSIX_PBA_OFF, 8), 2);
	mmio_write(VIRTIO_PCI_MSIX_TABLE_OFF + 28, 4, 0); /* unmask */
	CHECK_EQ(delivered[1], 1);
	CHECK_EQ(route_addr, 0xfee00000);
	CHECK_EQ(route_data, 0x4041);
	CHECK_EQ(mmio_read(VIRTIO_PCI_MSIX_PBA_OFF, 8), 0);
	virtio_pci_notify_queue(&vp, 0);
	CHECK_EQ(delivered[1], 2);
	/* Function mask holds it back again. */
	cfg_write(slot, msix_cap + 2, 2, 0xc000);
	virtio_pci_notify_queue(&vp, 0);
	CHECK_EQ(delivered[1], 2);
	cfg_write(slot, msix_cap + 2, 2, 0x8000);
	CHECK_EQ(delivered[1], 3);
	/* A configuration change (a disk grew): the generation moves and the
	 * config vector fires; without MSI-X, ISR bit 1 is set. */
	mmio_write(16, 2, 1); /* msix_config */
	CHECK_EQ(mmio_read(16, 2), 1);
	n = mmio_read(21, 1);
	virtio_pci_config_changed(&vp);
	CHECK_EQ(delivered[1], 4);
	CHECK_EQ(mmio_read(21, 1), (n + 1) & 0xff);
	cfg_write(slot, msix_cap + 2, 2, 0);
	virtio_pci_config_changed(&vp);
	CHECK_EQ(delivered[1], 4);
	CHECK_EQ(mmio_read(VIRTIO_PCI_ISR_OFF, 1), 2);
	CHECK_EQ(mmio_read(21, 1), (n + 2) & 0xff);
	cfg_write(slot, msix_cap + 2, 2, 0x8000);
	/* Table writes past the end and PBA writes are contained. */
	mmio_write(VIRTIO_PCI_MSIX_TABLE_OFF + 3 * 16, 4, 1);
	mmio_write(VIRTIO_PCI_MSIX_PBA_OFF, 8, ~0ull);
	CHECK_EQ(mmio_read(VIRTIO_PCI_MSIX_PBA_OFF, 8), 0);
	virtio_pci_notify_queue(&vp, 77); /* no such queue */

	/* Reset stops the running queue. */
	mmio_write(20, 1, 0);
	CHECK_EQ(stopped, 1);
	/* A ring the device refuses: NEEDS_RESET, nothing running. */
	mmio_write(20, 1, 1 | 2);
	mmio_write(8, 4, 1);
	mmio_write(12, 4, 1);
	mmio_write(20, 1, 1 | 2 | 8);
	mmio_write(32, 8, 0xbad000);
	mmio_write(28, 2, 1);
	mmio_write(20, 1, 1 | 2 | 8 | 4);
	CHECK(mmio_read(20, 1) & VIRTIO_STATUS_NEEDS_RESET);
	CHECK(!vp.running[0]);

	/* Moving the BAR away stops decoding. */
	cfg_write(slot, PCI_COMMAND, 2, 0);
	CHECK_EQ(mmio_read(20, 1), 0xff);
	virtio_pci_destroy(&vp);
	pci_bus_destroy(&bus);
	printf("virtio-pci ok\n");
	return 0;
}
