/* SPDX-License-Identifier: Apache-2.0 */
/* PCI configuration mechanism #1 and the config-space core. */
#include "check.h"
#include "devices/bus.h"
#include "pci/pci.h"

static uint32_t cfg_read(struct pci_bus *bus, unsigned slot, unsigned reg,
			 unsigned len)
{
	pci_bus_port_write(bus, 0, 4, 0x80000000u | slot << 11 | (reg & 0xfc));
	return pci_bus_port_read(bus, 4 + (reg & 3), len);
}

static void cfg_write(struct pci_bus *bus, unsigned slot, unsigned reg,
		      unsigned len, uint32_t v)
{
	pci_bus_port_write(bus, 0, 4, 0x80000000u | slot << 11 | (reg & 0xfc));
	pci_bus_port_write(bus, 4 + (reg & 3), len, v);
}

static unsigned moves;
static uint64_t moved_to;

static void bar_moved(struct pci_dev *d, unsigned bar, uint64_t from, uint64_t to)
{
	moves++;
	moved_to = to;
}

static const struct pci_dev_ops dev_ops = { .bar_moved = bar_moved };

int main(void)
{
	struct pci_bus bus;
	struct pci_dev bridge, dev;

	pci_bus_init(&bus);
	pci_host_bridge_init(&bridge);
	CHECK_EQ(pci_bus_add(&bus, &bridge, 0), 0);
	CHECK_EQ(pci_bus_add(&bus, &bridge, 0), (unsigned long long)-16); /* -EBUSY */

	/* The address latch reads back without its reserved bits. */
	pci_bus_port_write(&bus, 0, 4, 0x80000003u);
	CHECK_EQ(pci_bus_port_read(&bus, 0, 4), 0x80000000u);

	CHECK_EQ(cfg_read(&bus, 0, 0, 4), 0x00081b36u);
	CHECK_EQ(cfg_read(&bus, 0, 0x0a, 2), 0x0600); /* host bridge class */
	CHECK_EQ(cfg_read(&bus, 0, 0x02, 2), 0x0008); /* word at offset 2 */
	CHECK_EQ(cfg_read(&bus, 0, 0x0b, 1), 0x06);
	/* Empty slots, other functions, other buses and a clear enable bit
	 * all read as all ones. */
	CHECK_EQ(cfg_read(&bus, 5, 0, 4), 0xffffffffu);
	pci_bus_port_write(&bus, 0, 4, 0x80000100u);
	CHECK_EQ(pci_bus_port_read(&bus, 4, 4), 0xffffffffu);
	pci_bus_port_write(&bus, 0, 4, 0x80010000u);
	CHECK_EQ(pci_bus_port_read(&bus, 4, 2), 0xffff);
	pci_bus_port_write(&bus, 0, 4, 0x00000000u);
	CHECK_EQ(pci_bus_port_read(&bus, 4, 4), 0xffffffffu);

	/* Read-only fields stay put; the command register takes writes. */
	cfg_write(&bus, 0, 0, 4, 0x12345678u);
	CHECK_EQ(cfg_read(&bus, 0, 0, 4), 0x00081b36u);
	cfg_write(&bus, 0, PCI_COMMAND, 2, 0xffff);
	CHECK_EQ(cfg_read(&bus, 0, PCI_COMMAND, 2), 0x0407);

	/* A device with a 64-bit memory BAR: sizing and placement. */
	pci_dev_init(&dev, "test", 0x1af4, 0x1042, 0x018000, 1, &dev_ops, NULL);
	CHECK_EQ(pci_dev_add_bar(&dev, 0, 0x4000, PCI_BAR_MEM64), 0);
	CHECK(pci_dev_add_bar(&dev, 2, 3000, 0) != 0); /* not a power of two */
	CHECK_EQ(pci_bus_add(&bus, &dev, -1), 1);
	cfg_write(&bus, 1, PCI_BAR0, 4, 0xffffffffu);
	cfg_write(&bus, 1, PCI_BAR0 + 4, 4, 0xffffffffu);
	CHECK_EQ(cfg_read(&bus, 1, PCI_BAR0, 4), 0xffffc004u);
	CHECK_EQ(cfg_read(&bus, 1, PCI_BAR0 + 4, 4), 0xffffffffu);
	CHECK_EQ(moves, 0); /* decoding is off */
	cfg_write(&bus, 1, PCI_BAR0, 4, 0xc0000000u);
	cfg_write(&bus, 1, PCI_BAR0 + 4, 4, 0);
	CHECK_EQ(pci_dev_bar_addr(&dev, 0), 0xc0000000u);
	cfg_write(&bus, 1, PCI_COMMAND, 2, 0x0002); /* memory decode on */
	CHECK_EQ(moves, 1);
	CHECK_EQ(moved_to, 0xc0000000u);
	cfg_write(&bus, 1, PCI_COMMAND, 2, 0x0000);
	CHECK_EQ(moves, 2);
	CHECK_EQ(moved_to, 0);

	/* Through the I/O bus, as a vCPU exit arrives. */
	{
		struct bus io = { .name = "pio" };
		uint8_t d[4] = { 0x00, 0x00, 0x00, 0x80 };
		CHECK_EQ(bus_register(&io, PCI_CONFIG_ADDR, 8, &pci_bus_ops, &bus, "pci"), 0);
		CHECK(bus_register(&io, 0xcfc, 1, &pci_bus_ops, &bus, "dup") < 0);
		CHECK(bus_access(&io, 0xcf8, d, 4, true));
		CHECK(bus_access(&io, 0xcfc, d, 2, false));
		CHECK_EQ(d[0] | d[1] << 8, 0x1b36);
		CHECK(!bus_access(&io, 0x3f8, d, 1, false));
		CHECK_EQ(d[0], 0xff);
	}
	pci_bus_destroy(&bus);
	return 0;
}
