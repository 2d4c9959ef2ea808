/* SPDX-License-Identifier: Apache-2.0 */
#include "pci.h"
#include "../devices/bus.h"

#include <errno.h>
#include <string.h>

#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define CONFIG_ENABLE 0x80000000u

static uint32_t le_get(const uint8_t *space, unsigned off, unsigned len)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < len; i++)
		v |= (uint32_t)space[off + i] << (8 * i);
	return v;
}

static void le_set(uint8_t *space, unsigned off, unsigned len, uint32_t v)
{
	for (unsigned i = 0; i < len; i++)
		space[off + i] = v >> (8 * i);
}

void pci_bus_init(struct pci_bus *bus)
{
	memset(bus, 0, sizeof(*bus));
	pthread_mutex_init(&bus->lock, NULL);
}

void pci_bus_destroy(struct pci_bus *bus)
{
	pthread_mutex_destroy(&bus->lock);
}

void pci_dev_init(struct pci_dev *dev, const char *name, uint16_t vendor,
		  uint16_t device, uint32_t class_code, uint8_t revision,
		  const struct pci_dev_ops *ops, void *opaque)
{
	memset(dev, 0, sizeof(*dev));
	dev->name = name;
	dev->ops = ops;
	dev->opaque = opaque;
	le_set(dev->cfg, PCI_VENDOR_ID, 2, vendor);
	le_set(dev->cfg, PCI_DEVICE_ID, 2, device);
	dev->cfg[PCI_REVISION_ID] = revision;
	le_set(dev->cfg, PCI_CLASS_PROG, 3, class_code);
	/* I/O, memory, bus master, INTx disable. */
	le_set(dev->wmask, PCI_COMMAND, 2, 0x0407);
	dev->wmask[PCI_INTERRUPT_LINE] = 0xff;
}

int pci_dev_add_bar(struct pci_dev *dev, unsigned bar, uint64_t size,
		    uint32_t flags)
{
	unsigned off = PCI_BAR0 + 4 * bar;
	uint64_t mask;

	if (bar >= PCI_NUM_BARS || size == 0 || (size & (size - 1)))
		return -EINVAL;
	if ((flags & PCI_BAR_MEM64) && bar + 1 >= PCI_NUM_BARS)
		return -EINVAL;
	if ((flags & PCI_BAR_IO) ? size < 4 : size < 16)
		return -EINVAL;
	dev->bar_size[bar] = size;
	mask = ~(size - 1);
	le_set(dev->cfg, off, 4, flags);
	le_set(dev->wmask, off, 4, (uint32_t)mask);
	if (flags & PCI_BAR_MEM64)
		le_set(dev->wmask, off + 4, 4, (uint32_t)(mask >> 32));
	return 0;
}

uint64_t pci_dev_bar_addr(const struct pci_dev *dev, unsigned bar)
{
	uint32_t lo = le_get(dev->cfg, PCI_BAR0 + 4 * bar, 4);
	uint64_t addr;

	if (bar >= PCI_NUM_BARS || !dev->bar_size[bar])
		return 0;
	if (lo & PCI_BAR_IO)
		return lo & ~3u;
	addr = lo & ~15u;
	if (lo & PCI_BAR_MEM64)
		addr |= (uint64_t)le_get(dev->cfg, PCI_BAR0 + 4 * bar + 4, 4) << 32;
	return addr;
}

/* Where a BAR decodes now: its address if its space is enabled in the
 * command register and it is not in the middle of being sized. */
static uint64_t bar_decoding(const struct pci_dev *dev, unsigned bar)
{
	uint16_t cmd = le_get(dev->cfg, PCI_COMMAND, 2);
	uint64_t addr = pci_dev_bar_addr(dev, bar);
	uint8_t flags = dev->cfg[PCI_BAR0 + 4 * bar];
	bool io = flags & PCI_BAR_IO;
	uint64_t sizing = ~(dev->bar_size[bar] - 1);

	if (!(cmd & (io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)))
		return 0;
	if (io || !(flags & PCI_BAR_MEM64))
		sizing &= 0xffffffffull;
	if (addr == sizing)
		return 0; /* all ones written: the BAR is being sized */
	return addr;
}

int pci_dev_add_cap(struct pci_dev *dev, uint8_t id, unsigned len)
{
	unsigned off = 0x40, p;

	/* Capabilities are packed from 0x40 upwards, 4-byte aligned. */
	off = dev->cap_end ? dev->cap_end : 0x40;
	if (len < 2 || off + len > 256)
		return -ENOSPC;
	dev->cfg[off] = id;
	dev->cfg[off + 1] = 0;
	if (!dev->cfg[PCI_CAPABILITY_LIST]) {
		dev->cfg[PCI_CAPABILITY_LIST] = off;
	} else {
		for (p = dev->cfg[PCI_CAPABILITY_LIST]; dev->cfg[p + 1];
		     p = dev->cfg[p + 1])
			;
		dev->cfg[p + 1] = off;
	}
	dev->cfg[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
	dev->cap_end = (off + len + 3) & ~3u;
	return off;
}

int pci_bus_alloc_mmio(struct pci_bus *bus, struct pci_dev *dev, unsigned bar)
{
	uint64_t size, addr;

	if (bar >= PCI_NUM_BARS || !(size = dev->bar_size[bar]) ||
	    (dev->cfg[PCI_BAR0 + 4 * bar] & (PCI_BAR_IO | PCI_BAR_MEM64)))
		return -EINVAL;
	if (!bus->mmio_next)
		bus->mmio_next = PCI_MMIO_BASE;
	addr = (bus->mmio_next + size - 1) & ~(size - 1);
	if (addr + size > PCI_MMIO_END)
		return -ENOSPC;
	bus->mmio_next = addr + size;
	le_set(dev->cfg, PCI_BAR0 + 4 * bar, 4, (uint32_t)addr);
	return 0;
}

int pci_bus_add(struct pci_bus *bus, struct pci_dev *dev, int slot)
{
	if (slot < 0) {
		for (slot = 0; slot < PCI_MAX_DEVICES && bus->slots[slot]; slot++)
			;
		if (slot == PCI_MAX_DEVICES)
			return -ENOSPC;
	}
	if (slot >= PCI_MAX_DEVICES)
		return -EINVAL;
	if (bus->slots[slot])
		return -EBUSY;
	dev->slot = slot;
	bus->slots[slot] = dev;
	return slot;
}

/* The device the latched address selects, or NULL (bus != 0, function != 0,
 * empty slot, or the enable bit clear). */
static struct pci_dev *selected(struct pci_bus *bus)
{
	uint32_t a = bus->config_addr;

	if (!(a & CONFIG_ENABLE) || ((a >> 16) & 0xff) || ((a >> 8) & 7))
		return NULL;
	return bus->slots[(a >> 11) & 0x1f];
}

static void config_write(struct pci_dev *dev, unsigned off, unsigned len,
			 uint32_t val)
{
	uint64_t before[PCI_NUM_BARS];
	unsigned bar;

	for (bar = 0; bar < PCI_NUM_BARS; bar++)
		before[bar] = dev->bar_size[bar] ? bar_decoding(dev, bar) : 0;
	for (unsigned i = 0; i < len; i++) {
		uint8_t m = dev->wmask[off + i], b = val >> (8 * i);
		dev->cfg[off + i] = (dev->cfg[off + i] & ~m) | (b & m);
	}
	if (dev->ops && dev->ops->config_written)
		dev->ops->config_written(dev, off, len);
	if (!dev->ops || !dev->ops->bar_moved)
		return;
	for (bar = 0; bar < PCI_NUM_BARS; bar++) {
		uint64_t now;
		if (!dev->bar_size[bar])
			continue;
		now = bar_decoding(dev, bar);
		if (now != before[bar])
			dev->ops->bar_moved(dev, bar, before[bar], now);
	}
}

uint32_t pci_bus_port_read(struct pci_bus *bus, unsigned port_off, unsigned len)
{
	uint32_t v = 0xffffffffu;
	struct pci_dev *dev;

	pthread_mutex_lock(&bus->lock);
	if (port_off == 0 && len == 4) {
		v = bus->config_addr;
	} else if (port_off >= 4 && port_off + len <= 8) {
		dev = selected(bus);
		if (dev) {
			unsigned reg = (bus->config_addr & 0xfc) + port_off - 4;
			v = le_get(dev->cfg, reg, len);
		}
	}
	pthread_mutex_unlock(&bus->lock);
	if (len < 4)
		v &= (1u << (8 * len)) - 1;
	return v;
}

void pci_bus_port_write(struct pci_bus *bus, unsigned port_off, unsigned len,
			uint32_t val)
{
	struct pci_dev *dev;

	pthread_mutex_lock(&bus->lock);
	if (port_off == 0 && len == 4) {
		/* Bits 1:0 and 30:24 are reserved and read as zero. */
		bus->config_addr = val & 0x80fffffcu;
	} else if (port_off >= 4 && port_off + len <= 8) {
		dev = selected(bus);
		if (dev)
			config_write(dev, (bus->config_addr & 0xfc) + port_off - 4,
				     len, val);
	}
	pthread_mutex_unlock(&bus->lock);
}

static void pci_io_read(void *opaque, uint64_t off, uint8_t *data, unsigned len)
{
	uint32_t v = pci_bus_port_read(opaque, off, len);
	memcpy(data, &v, len > 4 ? 4 : len);
}

static void pci_io_write(void *opaque, uint64_t off, const uint8_t *data,
			 unsigned len)
{
	uint32_t v = 0;
	memcpy(&v, data, len > 4 ? 4 : len);
	pci_bus_port_write(opaque, off, len, v);
}

/* The device and memory BAR decoding [addr, addr + len), or NULL. */
static struct pci_dev *mmio_find(struct pci_bus *bus, uint64_t addr,
				 unsigned len, unsigned *bar, uint64_t *off)
{
	for (unsigned s = 0; s < PCI_MAX_DEVICES; s++) {
		struct pci_dev *dev = bus->slots[s];
		if (!dev || !dev->ops || !dev->ops->bar_read)
			continue;
		for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
			uint64_t base;
			if (!dev->bar_size[b] ||
			    (dev->cfg[PCI_BAR0 + 4 * b] & PCI_BAR_IO))
				continue;
			base = bar_decoding(dev, b);
			if (base && addr >= base &&
			    addr + len <= base + dev->bar_size[b]) {
				*bar = b;
				*off = addr - base;
				return dev;
			}
		}
	}
	return NULL;
}

static void pci_mmio_read(void *opaque, uint64_t off, uint8_t *data,
			  unsigned len)
{
	struct pci_bus *bus = opaque;
	struct pci_dev *dev;
	unsigned bar;
	uint64_t boff;

	pthread_mutex_lock(&bus->lock);
	dev = mmio_find(bus, PCI_MMIO_BASE + off, len, &bar, &boff);
	if (dev) {
		dev->ops->bar_read(dev, bar, boff, data, len);
	} else {
		memset(data, 0xff, len);
		bus->bad_mmio++;
	}
	pthread_mutex_unlock(&bus->lock);
}

static void pci_mmio_write(void *opaque, uint64_t off, const uint8_t *data,
			   unsigned len)
{
	struct pci_bus *bus = opaque;
	struct pci_dev *dev;
	unsigned bar;
	uint64_t boff;

	pthread_mutex_lock(&bus->lock);
	dev = mmio_find(bus, PCI_MMIO_BASE + off, len, &bar, &boff);
	if (dev && dev->ops->bar_write)
		dev->ops->bar_write(dev, bar, boff, data, len);
	else
		bus->bad_mmio++;
	pthread_mutex_unlock(&bus->lock);
}

const struct bus_dev_ops pci_mmio_ops = {
	.read = pci_mmio_read,
	.write = pci_mmio_write,
};

const struct bus_dev_ops pci_bus_ops = {
	.read = pci_io_read,
	.write = pci_io_write,
};

void pci_host_bridge_init(struct pci_dev *dev)
{
	/* 1b36:0008 is the generic "PCIe host bridge" ID QEMU also uses; Linux
	 * has no quirks keyed to it, which is what a plain bridge wants. */
	pci_dev_init(dev, "host-bridge", 0x1b36, 0x0008, 0x060000, 0, NULL, NULL);
}
