/* SPDX-License-Identifier: Apache-2.0 */
/* The virtio 1.x PCI transport (modern, non-transitional): a PCI function
 * with vendor 0x1af4, device 0x1040 + virtio device ID, whose BAR 0 holds
 * the common configuration, notify, ISR and device-specific regions (found
 * through vendor-specific capabilities) and the MSI-X table and PBA.
 *
 * Two ops tables meet here.  A virtio device (blk now; rng or console
 * later) supplies virtio_dev_ops: its features, its config space and what
 * to do when the driver starts or stops a queue.  The VM glue supplies
 * virtio_host_ops: where queue notifications land (KVM ioeventfds) and how
 * MSI-X vectors reach the guest (irqfds routed with KVM_SET_GSI_ROUTING).
 * Without host ops (the unit tests) notify writes are handled in the BAR
 * handler and vectors are delivered through msix_ops only.
 *
 * Everything the guest writes is checked; a driver that breaks the rules
 * gets its request ignored and a line on stderr, never a crash. */
#ifndef OVKVM_VIRTIO_PCI_H
#define OVKVM_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "../pci/msix.h"
#include "../pci/pci.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040
#define VIRTIO_PCI_MAX_QUEUES 64

/* BAR 0 layout. */
#define VIRTIO_PCI_BAR_SIZE 0x8000
#define VIRTIO_PCI_COMMON_OFF 0x0000
#define VIRTIO_PCI_COMMON_LEN 0x38
#define VIRTIO_PCI_ISR_OFF 0x1000
#define VIRTIO_PCI_DEVCFG_OFF 0x2000
#define VIRTIO_PCI_DEVCFG_LEN 0x1000
#define VIRTIO_PCI_NOTIFY_OFF 0x3000
#define VIRTIO_PCI_NOTIFY_MULT 4
#define VIRTIO_PCI_MSIX_TABLE_OFF 0x4000
#define VIRTIO_PCI_MSIX_PBA_OFF 0x6000

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

/* One queue as the driver configured it. */
struct virtio_queue_cfg {
	uint16_t size;
	uint16_t msix_vector;
	bool enabled;
	uint64_t desc, avail, used; /* guest-physical */
};

struct virtio_pci;

struct virtio_dev_ops {
	uint64_t (*features)(void *opaque);
	void (*config_read)(void *opaque, uint32_t off, uint8_t *data,
			    unsigned len);
	void (*config_write)(void *opaque, uint32_t off, const uint8_t *data,
			     unsigned len);
	/* The driver set DRIVER_OK (or enabled a queue after it): serve queue
	 * q; kick_fd becomes readable when the driver notifies it.  Returns 0
	 * or -errno (the device then sets NEEDS_RESET). */
	int (*queue_start)(void *opaque, unsigned q,
			   const struct virtio_queue_cfg *cfg,
			   uint64_t features, int kick_fd);
	/* Stop serving q (device reset); returns when nothing touches the
	 * queue's memory any more. */
	void (*queue_stop)(void *opaque, unsigned q);
};

struct virtio_host_ops {
	/* Attach (assign) or detach eventfd fd to writes at guest address
	 * gpa (2 bytes).  Returns 0 or -errno (then the transport handles
	 * the notify writes itself). */
	int (*ioeventfd)(void *opaque, uint64_t gpa, int fd, bool assign);
	/* MSI-X vector vec changed (route it to the guest), see msix.h. */
	void (*vector_changed)(void *opaque, unsigned vec, uint64_t addr,
			       uint32_t data, bool usable);
	/* Deliver vector vec. */
	void (*deliver)(void *opaque, unsigned vec);
	/* Drive the INTx line (optional). */
	void (*set_intx)(void *opaque, bool level);
};

struct virtio_pci {
	struct pci_dev pci;
	struct msix msix;
	const struct virtio_dev_ops *dev_ops;
	void *dev_opaque;
	const struct virtio_host_ops *host_ops;
	void *host_opaque;
	const char *name;

	unsigned nqueues;
	uint16_t max_queue_size;
	uint64_t features;        /* offered */
	uint64_t driver_features; /* accepted by the driver */
	uint32_t dfselect, gfselect;
	uint16_t queue_select;
	uint16_t config_vector;
	uint8_t status;
	uint8_t config_generation;
	uint8_t isr; /* read-to-clear, bit 0 queue, bit 1 config */
	struct virtio_queue_cfg queues[VIRTIO_PCI_MAX_QUEUES];
	bool running[VIRTIO_PCI_MAX_QUEUES];
	int kick_fd[VIRTIO_PCI_MAX_QUEUES];
	bool ioeventfd_on[VIRTIO_PCI_MAX_QUEUES];
	uint64_t bar_addr; /* where BAR 0 decodes, 0 while it does not */
	unsigned long guest_errors;
};

/* Set up the PCI function (not yet on a bus) for virtio device `device_id`
 * with nqueues queues of up to max_queue_size entries. */
int virtio_pci_init(struct virtio_pci *vp, const char *name,
		    uint16_t device_id, uint16_t pci_class, unsigned nqueues,
		    uint16_t max_queue_size, const struct virtio_dev_ops *dops,
		    void *dopaque, const struct virtio_host_ops *hops,
		    void *hopaque);
/* Stop the queues, close the eventfds. */
void virtio_pci_destroy(struct virtio_pci *vp);
/* Interrupt the driver for queue q (any thread). */
void virtio_pci_notify_queue(struct virtio_pci *vp, unsigned q);
/* The device's configuration changed (a disk grew): bump the generation
 * and interrupt the driver on its config vector, or INTx with ISR bit 1
 * (any thread). */
void virtio_pci_config_changed(struct virtio_pci *vp);
/* The device reset itself (e.g. before the VM ends): stop all queues.
 * Call with the PCI bus lock held, or when no vCPU runs. */
void virtio_pci_reset(struct virtio_pci *vp);

#endif
