/* SPDX-License-Identifier: Apache-2.0 */
/* PCI bus 0 behind a host bridge, reached through configuration mechanism #1
 * (address latch at 0xcf8, data window at 0xcfc-0xcff).
 *
 * A device is a 256-byte configuration space plus an ops table.  The core
 * keeps the space, applies the per-byte write mask and sizes BARs the way
 * firmware expects (write all ones, read back the size mask); a device's ops
 * hear about config writes and BAR moves so a transport such as virtio-pci
 * can map its registers on the MMIO bus. */
#ifndef OVKVM_PCI_H
#define OVKVM_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define PCI_CONFIG_ADDR 0xcf8
#define PCI_CONFIG_DATA 0xcfc
#define PCI_MAX_DEVICES 32 /* one function per slot on bus 0 */
#define PCI_NUM_BARS 6

/* Standard header offsets. */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_CLASS_DEVICE 0x0a
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d

#define PCI_BAR_IO 0x1
#define PCI_BAR_MEM64 0x4

#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

/* Memory BARs that the VM glue decodes through pci_mmio_ops live in
 * [PCI_MMIO_BASE, PCI_MMIO_END); pci_bus_alloc_mmio() hands out the
 * addresses ovkvm assigns before the guest runs (it plays the firmware). */
#define PCI_MMIO_BASE 0xe0000000ull
#define PCI_MMIO_END 0xfec00000ull

struct pci_dev;

struct pci_dev_ops {
	/* Optional: after the core stored a guest write of `len` bytes at
	 * `off` (capabilities such as MSI-X and virtio's live here). */
	void (*config_written)(struct pci_dev *dev, unsigned off, unsigned len);
	/* Optional: the guest moved BAR `bar` to `addr` (0 when it is
	 * disabled by the command register or being sized). */
	void (*bar_moved)(struct pci_dev *dev, unsigned bar, uint64_t old_addr,
			  uint64_t new_addr);
	/* Optional: a guest access to a memory BAR, `off` bytes into it.
	 * Called with the bus lock held, like the two above. */
	void (*bar_read)(struct pci_dev *dev, unsigned bar, uint64_t off,
			 uint8_t *data, unsigned len);
	void (*bar_write)(struct pci_dev *dev, unsigned bar, uint64_t off,
			  const uint8_t *data, unsigned len);
};

struct pci_dev {
	const char *name;
	const struct pci_dev_ops *ops;
	void *opaque;
	uint8_t slot;
	uint8_t cfg[256];
	uint8_t wmask[256]; /* bits the guest may change */
	uint64_t bar_size[PCI_NUM_BARS]; /* 0: unused BAR */
	unsigned cap_end; /* where the next capability goes (0: 0x40) */
};

struct pci_bus {
	pthread_mutex_t lock;
	uint32_t config_addr;
	struct pci_dev *slots[PCI_MAX_DEVICES];
	uint64_t mmio_next; /* pci_bus_alloc_mmio's next free address */
	unsigned long bad_mmio; /* accesses to the window no BAR decodes */
};

void pci_bus_init(struct pci_bus *bus);
void pci_bus_destroy(struct pci_bus *bus);

/* Fill a device's identity and a type 0 header with the common write mask. */
void pci_dev_init(struct pci_dev *dev, const char *name, uint16_t vendor,
		  uint16_t device, uint32_t class_code, uint8_t revision,
		  const struct pci_dev_ops *ops, void *opaque);

/* Declare BAR `bar` of `size` bytes (a power of two); flags are PCI_BAR_IO
 * or PCI_BAR_MEM64 (which also takes bar+1) or 0 for 32-bit memory. */
int pci_dev_add_bar(struct pci_dev *dev, unsigned bar, uint64_t size,
		    uint32_t flags);

/* Append a capability of `len` bytes (header included) with ID `id` to the
 * capability list; returns its config-space offset, or -ENOSPC. */
int pci_dev_add_cap(struct pci_dev *dev, uint8_t id, unsigned len);

/* Give BAR `bar` (declared, 32-bit memory) an address in the MMIO window,
 * as firmware would; decoding starts when the guest sets the command
 * register's memory bit. Returns 0 or -ENOSPC. */
int pci_bus_alloc_mmio(struct pci_bus *bus, struct pci_dev *dev, unsigned bar);

/* Current address of a BAR (0 if unassigned). */
uint64_t pci_dev_bar_addr(const struct pci_dev *dev, unsigned bar);

/* Put a device in `slot` (or the first free one when slot < 0); returns the
 * slot or -EBUSY / -ENOSPC. */
int pci_bus_add(struct pci_bus *bus, struct pci_dev *dev, int slot);

/* Configuration mechanism #1 port accesses (offsets from 0xcf8). */
uint32_t pci_bus_port_read(struct pci_bus *bus, unsigned port_off, unsigned len);
void pci_bus_port_write(struct pci_bus *bus, unsigned port_off, unsigned len,
			uint32_t val);

/* The host bridge at 00:00.0. */
void pci_host_bridge_init(struct pci_dev *dev);

extern const struct bus_dev_ops pci_bus_ops;
/* The MMIO window [PCI_MMIO_BASE, PCI_MMIO_END) (opaque: the pci_bus):
 * accesses go to the device whose memory BAR decodes the address; others
 * read all ones, are dropped and counted in bad_mmio. */
extern const struct bus_dev_ops pci_mmio_ops;

#endif
