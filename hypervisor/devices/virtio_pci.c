/* SPDX-License-Identifier: Apache-2.0 */
#include "virtio_pci.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* virtio_pci_cap.cfg_type */
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4

#define VIRTIO_F_VERSION_1_BIT 32

/* Common configuration layout (virtio 1.x, 4.1.4.3). */
enum {
	CC_DFSELECT = 0, CC_DF = 4, CC_GFSELECT = 8, CC_GF = 12,
	CC_MSIX = 16, CC_NUMQ = 18, CC_STATUS = 20, CC_CFGGEN = 21,
	CC_Q_SELECT = 22, CC_Q_SIZE = 24, CC_Q_MSIX = 26, CC_Q_ENABLE = 28,
	CC_Q_NOFF = 30, CC_Q_DESC = 32, CC_Q_AVAIL = 40, CC_Q_USED = 48,
};

static void put_le(uint8_t *p, unsigned len, uint64_t v)
{
	for (unsigned i = 0; i < len; i++)
		p[i] = v >> (8 * i);
}

static uint64_t get_le(const uint8_t *p, unsigned len)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < len; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void guest_error(struct virtio_pci *vp, const char *what, uint64_t v)
{
	/* A misbehaving driver could flood the log: the first 16 are said. */
	if (vp->guest_errors++ < 16)
		fprintf(stderr, "ovkvm: %s: guest driver error: %s (%#llx)\n",
			vp->name, what, (unsigned long long)v);
}

static int add_vcap(struct pci_dev *dev, uint8_t type, uint32_t off,
		    uint32_t len, unsigned cap_len)
{
	int c = pci_dev_add_cap(dev, PCI_CAP_ID_VNDR, cap_len);
	if (c < 0)
		return c;
	dev->cfg[c + 2] = cap_len;
	dev->cfg[c + 3] = type;
	dev->cfg[c + 4] = 0; /* BAR 0 */
	put_le(dev->cfg + c + 8, 4, off);
	put_le(dev->cfg + c + 12, 4, len);
	return c;
}

static void queue_defaults(struct virtio_pci *vp, unsigned q)
{
	vp->queues[q] = (struct virtio_queue_cfg){
		.size = vp->max_queue_size, .msix_vector = MSIX_NO_VECTOR,
	};
}

static void stop_queue(struct virtio_pci *vp, unsigned q)
{
	if (!vp->running[q])
		return;
	vp->dev_ops->queue_stop(vp->dev_opaque, q);
	vp->running[q] = false;
}

void virtio_pci_reset(struct virtio_pci *vp)
{
	for (unsigned q = 0; q < vp->nqueues; q++) {
		stop_queue(vp, q);
		queue_defaults(vp, q);
	}
	vp->status = 0;
	vp->driver_features = 0;
	vp->dfselect = vp->gfselect = 0;
	vp->queue_select = 0;
	vp->config_vector = MSIX_NO_VECTOR;
	if (__atomic_exchange_n(&vp->isr, 0, __ATOMIC_SEQ_CST) &&
	    vp->host_ops && vp->host_ops->set_intx)
		vp->host_ops->set_intx(vp->host_opaque, false);
}

static void start_queue(struct virtio_pci *vp, unsigned q)
{
	struct virtio_queue_cfg *c = &vp->queues[q];
	int rc;

	if (vp->running[q] || !c->enabled)
		return;
	rc = vp->dev_ops->queue_start(vp->dev_opaque, q, c, vp->driver_features,
				      vp->kick_fd[q]);
	if (rc < 0) {
		guest_error(vp, "queue cannot start (bad ring?), device needs reset", q);
		vp->status |= VIRTIO_STATUS_NEEDS_RESET;
		return;
	}
	vp->running[q] = true;
}

static void set_status(struct virtio_pci *vp, uint8_t v)
{
	uint8_t old = vp->status;

	if (v == 0) {
		virtio_pci_reset(vp);
		return;
	}
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		if ((vp->driver_features & ~vp->features) ||
		    !(vp->driver_features & (1ull << VIRTIO_F_VERSION_1_BIT))) {
			guest_error(vp, "driver accepted features not offered "
				    "(or not VERSION_1)", vp->driver_features);
			v &= ~VIRTIO_STATUS_FEATURES_OK;
		}
	}
	vp->status = v | (old & VIRTIO_STATUS_NEEDS_RESET);
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK)) {
		if (!(vp->status & VIRTIO_STATUS_FEATURES_OK)) {
			guest_error(vp, "DRIVER_OK without FEATURES_OK", v);
			return;
		}
		for (unsigned q = 0; q < vp->nqueues; q++)
			start_queue(vp, q);
	}
}

static void common_read(struct virtio_pci *vp, unsigned off, uint8_t *data,
			unsigned len)
{
	uint8_t img[VIRTIO_PCI_COMMON_LEN] = { 0 };
	unsigned qs = vp->queue_select;
	const struct virtio_queue_cfg *c = qs < vp->nqueues ? &vp->queues[qs] : NULL;

	put_le(img + CC_DFSELECT, 4, vp->dfselect);
	put_le(img + CC_DF, 4, vp->dfselect < 2 ? vp->features >> (32 * vp->dfselect) : 0);
	put_le(img + CC_GFSELECT, 4, vp->gfselect);
	put_le(img + CC_GF, 4, vp->gfselect < 2 ? vp->driver_features >> (32 * vp->gfselect) : 0);
	put_le(img + CC_MSIX, 2, vp->config_vector);
	put_le(img + CC_NUMQ, 2, vp->nqueues);
	img[CC_STATUS] = vp->status;
	img[CC_CFGGEN] = __atomic_load_n(&vp->config_generation,
					 __ATOMIC_ACQUIRE);
	put_le(img + CC_Q_SELECT, 2, qs);
	if (c) {
		put_le(img + CC_Q_SIZE, 2, c->size);
		put_le(img + CC_Q_MSIX, 2, c->msix_vector);
		put_le(img + CC_Q_ENABLE, 2, c->enabled);
		put_le(img + CC_Q_NOFF, 2, qs);
		put_le(img + CC_Q_DESC, 8, c->desc);
		put_le(img + CC_Q_AVAIL, 8, c->avail);
		put_le(img + CC_Q_USED, 8, c->used);
	}
	memcpy(data, img + off, len);
}

static void set_addr(uint64_t *a, unsigned rel, unsigned len, uint64_t v)
{
	if (len == 8)
		*a = v;
	else if (rel == 0)
		*a = (*a & ~0xffffffffull) | (uint32_t)v;
	else
		*a = (*a & 0xffffffffull) | v << 32;
}

static void common_write(struct virtio_pci *vp, unsigned off,
			 const uint8_t *data, unsigned len)
{
	uint64_t v = get_le(data, len);
	unsigned qs = vp->queue_select;
	struct virtio_queue_cfg *c = qs < vp->nqueues ? &vp->queues[qs] : NULL;
	bool qfield = off >= CC_Q_SIZE && off != CC_Q_NOFF;

	if (qfield && (!c || (c->enabled && off != CC_Q_MSIX &&
			      off != CC_Q_ENABLE))) {
		guest_error(vp, "queue register write for an absent or "
			    "enabled queue", off);
		return;
	}
	switch (off) {
	case CC_DFSELECT: if (len == 4) vp->dfselect = v; return;
	case CC_GFSELECT: if (len == 4) vp->gfselect = v; return;
	case CC_GF:
		if (len != 4 || vp->gfselect > 1)
			break;
		if (vp->status & VIRTIO_STATUS_FEATURES_OK) {
			guest_error(vp, "feature write after FEATURES_OK", v);
			return;
		}
		vp->driver_features &= ~(0xffffffffull << (32 * vp->gfselect));
		vp->driver_features |= v << (32 * vp->gfselect);
		return;
	case CC_MSIX:
		if (len != 2)
			break;
		vp->config_vector = v < vp->msix.nvec ? v : MSIX_NO_VECTOR;
		return;
	case CC_STATUS: if (len == 1) { set_status(vp, v); return; } break;
	case CC_Q_SELECT: if (len == 2) { vp->queue_select = v; return; } break;
	case CC_Q_SIZE:
		if (len != 2)
			break;
		if (!v || v > vp->max_queue_size || (v & (v - 1))) {
			guest_error(vp, "queue size not a power of two up to the maximum", v);
			return;
		}
		c->size = v;
		return;
	case CC_Q_MSIX:
		if (len != 2)
			break;
		__atomic_store_n(&c->msix_vector,
				 v < vp->msix.nvec ? v : MSIX_NO_VECTOR,
				 __ATOMIC_RELAXED);
		return;
	case CC_Q_ENABLE:
		if (len != 2)
			break;
		if (v != 1) {
			guest_error(vp, "queue_enable written with other than 1", v);
			return;
		}
		c->enabled = true;
		if (vp->status & VIRTIO_STATUS_DRIVER_OK)
			start_queue(vp, qs);
		return;
	case CC_Q_DESC: case CC_Q_DESC + 4:
		if (len == 8 || len == 4) { set_addr(&c->desc, off - CC_Q_DESC, len, v); return; }
		break;
	case CC_Q_AVAIL: case CC_Q_AVAIL + 4:
		if (len == 8 || len == 4) { set_addr(&c->avail, off - CC_Q_AVAIL, len, v); return; }
		break;
	case CC_Q_USED: case CC_Q_USED + 4:
		if (len == 8 || len == 4) { set_addr(&c->used, off - CC_Q_USED, len, v); return; }
		break;
	}
	guest_error(vp, "write to a read-only or misaligned common config field", off);
}

static void kick(int fd)
{
	uint64_t one = 1;
	if (write(fd, &one, sizeof(one)) < 0)
		perror("ovkvm: virtio kick eventfd");
}

static void vp_bar_read(struct pci_dev *dev, unsigned bar, uint64_t off,
			uint8_t *data, unsigned len)
{
	struct virtio_pci *vp = dev->opaque;

	memset(data, 0, len);
	if (bar != 0)
		return;
	if (off + len <= VIRTIO_PCI_COMMON_LEN) {
		common_read(vp, off, data, len);
	} else if (off == VIRTIO_PCI_ISR_OFF) {
		data[0] = __atomic_exchange_n(&vp->isr, 0, __ATOMIC_SEQ_CST);
		if (data[0] && vp->host_ops && vp->host_ops->set_intx)
			vp->host_ops->set_intx(vp->host_opaque, false);
	} else if (off >= VIRTIO_PCI_DEVCFG_OFF &&
		   off + len <= VIRTIO_PCI_DEVCFG_OFF + VIRTIO_PCI_DEVCFG_LEN) {
		vp->dev_ops->config_read(vp->dev_opaque, off - VIRTIO_PCI_DEVCFG_OFF,
					 data, len);
	} else if (!msix_bar_read(&vp->msix, off, data, len)) {
		if (!(off >= VIRTIO_PCI_NOTIFY_OFF &&
		      off < VIRTIO_PCI_NOTIFY_OFF + 4 * vp->nqueues))
			guest_error(vp, "read of an unknown BAR 0 offset", off);
	}
}

static void vp_bar_write(struct pci_dev *dev, unsigned bar, uint64_t off,
			 const uint8_t *data, unsigned len)
{
	struct virtio_pci *vp = dev->opaque;

	if (bar != 0)
		return;
	if (off + len <= VIRTIO_PCI_COMMON_LEN) {
		common_write(vp, off, data, len);
	} else if (off >= VIRTIO_PCI_NOTIFY_OFF &&
		   off < VIRTIO_PCI_NOTIFY_OFF + 4 * vp->nqueues) {
		unsigned q = (off - VIRTIO_PCI_NOTIFY_OFF) / VIRTIO_PCI_NOTIFY_MULT;
		if (vp->running[q])
			kick(vp->kick_fd[q]);
	} else if (off >= VIRTIO_PCI_DEVCFG_OFF &&
		   off + len <= VIRTIO_PCI_DEVCFG_OFF + VIRTIO_PCI_DEVCFG_LEN) {
		if (vp->dev_ops->config_write)
			vp->dev_ops->config_write(vp->dev_opaque,
						  off - VIRTIO_PCI_DEVCFG_OFF, data, len);
	} else if (!msix_bar_write(&vp->msix, off, data, len)) {
		guest_error(vp, "write to an unknown BAR 0 offset", off);
	}
}

static void vp_bar_moved(struct pci_dev *dev, unsigned bar, uint64_t from,
			 uint64_t to)
{
	struct virtio_pci *vp = dev->opaque;

	(void)from;
	if (bar != 0)
		return;
	for (unsigned q = 0; q < vp->nqueues && vp->host_ops &&
			     vp->host_ops->ioeventfd; q++) {
		uint64_t n = VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * q;
		if (vp->ioeventfd_on[q])
			vp->host_ops->ioeventfd(vp->host_opaque, vp->bar_addr + n,
						vp->kick_fd[q], false);
		vp->ioeventfd_on[q] = to && vp->host_ops->ioeventfd(
				vp->host_opaque, to + n, vp->kick_fd[q], true) == 0;
	}
	vp->bar_addr = to;
}

static void vp_config_written(struct pci_dev *dev, unsigned off, unsigned len)
{
	struct virtio_pci *vp = dev->opaque;
	msix_config_written(&vp->msix, off, len);
}

static const struct pci_dev_ops vp_pci_ops = {
	.config_written = vp_config_written,
	.bar_moved = vp_bar_moved,
	.bar_read = vp_bar_read,
	.bar_write = vp_bar_write,
};

static void vp_vector_changed(void *opaque, unsigned vec, uint64_t addr,
			      uint32_t data, bool usable)
{
	struct virtio_pci *vp = opaque;
	if (vp->host_ops && vp->host_ops->vector_changed)
		vp->host_ops->vector_changed(vp->host_opaque, vec, addr, data, usable);
}

static void vp_deliver(void *opaque, unsigned vec)
{
	struct virtio_pci *vp = opaque;
	if (vp->host_ops && vp->host_ops->deliver)
		vp->host_ops->deliver(vp->host_opaque, vec);
}

static const struct msix_ops vp_msix_ops = {
	.vector_changed = vp_vector_changed,
	.deliver = vp_deliver,
};

int virtio_pci_init(struct virtio_pci *vp, const char *name,
		    uint16_t device_id, uint16_t pci_class, unsigned nqueues,
		    uint16_t max_queue_size, const struct virtio_dev_ops *dops,
		    void *dopaque, const struct virtio_host_ops *hops,
		    void *hopaque)
{
	struct pci_dev *d = &vp->pci;
	int rc, c;

	if (!nqueues || nqueues > VIRTIO_PCI_MAX_QUEUES || !max_queue_size ||
	    (max_queue_size & (max_queue_size - 1)))
		return -EINVAL;
	memset(vp, 0, sizeof(*vp));
	vp->name = name;
	vp->dev_ops = dops;
	vp->dev_opaque = dopaque;
	vp->host_ops = hops;
	vp->host_opaque = hopaque;
	vp->nqueues = nqueues;
	vp->max_queue_size = max_queue_size;
	vp->features = dops->features(dopaque) | 1ull << VIRTIO_F_VERSION_1_BIT;
	for (unsigned q = 0; q < VIRTIO_PCI_MAX_QUEUES; q++)
		vp->kick_fd[q] = -1;

	pci_dev_init(d, name, VIRTIO_PCI_VENDOR, VIRTIO_PCI_DEVICE_BASE + device_id,
		     (uint32_t)pci_class << 8, 1, &vp_pci_ops, vp);
	put_le(d->cfg + PCI_SUBSYSTEM_VENDOR_ID, 2, VIRTIO_PCI_VENDOR);
	put_le(d->cfg + PCI_SUBSYSTEM_ID, 2, 0x40);
	d->cfg[PCI_INTERRUPT_PIN] = 1; /* INTA# */
	rc = pci_dev_add_bar(d, 0, VIRTIO_PCI_BAR_SIZE, 0);
	if (rc < 0)
		return rc;
	if ((rc = add_vcap(d, CAP_COMMON, VIRTIO_PCI_COMMON_OFF, VIRTIO_PCI_COMMON_LEN, 16)) < 0 ||
	    (rc = add_vcap(d, CAP_ISR, VIRTIO_PCI_ISR_OFF, 4, 16)) < 0 ||
	    (rc = add_vcap(d, CAP_DEVICE, VIRTIO_PCI_DEVCFG_OFF, VIRTIO_PCI_DEVCFG_LEN, 16)) < 0 ||
	    (c = rc = add_vcap(d, CAP_NOTIFY, VIRTIO_PCI_NOTIFY_OFF,
			       VIRTIO_PCI_NOTIFY_MULT * nqueues, 20)) < 0)
		return rc;
	put_le(d->cfg + c + 16, 4, VIRTIO_PCI_NOTIFY_MULT);
	rc = msix_init(&vp->msix, d, nqueues + 1, 0, VIRTIO_PCI_MSIX_TABLE_OFF,
		       VIRTIO_PCI_MSIX_PBA_OFF, &vp_msix_ops, vp);
	if (rc < 0)
		return rc;
	for (unsigned q = 0; q < nqueues; q++) {
		queue_defaults(vp, q);
		vp->kick_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vp->kick_fd[q] < 0) {
			rc = -errno;
			virtio_pci_destroy(vp);
			return rc;
		}
	}
	vp->config_vector = MSIX_NO_VECTOR;
	return 0;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	for (unsigned q = 0; q < vp->nqueues; q++) {
		stop_queue(vp, q);
		if (vp->ioeventfd_on[q] && vp->host_ops && vp->host_ops->ioeventfd)
			vp->host_ops->ioeventfd(vp->host_opaque,
						vp->bar_addr + VIRTIO_PCI_NOTIFY_OFF +
						VIRTIO_PCI_NOTIFY_MULT * q,
						vp->kick_fd[q], false);
		vp->ioeventfd_on[q] = false;
		if (vp->kick_fd[q] >= 0)
			close(vp->kick_fd[q]);
		vp->kick_fd[q] = -1;
	}
}

void virtio_pci_config_changed(struct virtio_pci *vp)
{
	/* a driver reading the config space twice around the generation
	   sees the change between its reads */
	__atomic_add_fetch(&vp->config_generation, 1, __ATOMIC_RELEASE);
	if (msix_on(&vp->msix)) {
		msix_fire(&vp->msix, __atomic_load_n(&vp->config_vector,
						     __ATOMIC_RELAXED));
		return;
	}
	__atomic_or_fetch(&vp->isr, 2, __ATOMIC_SEQ_CST);
	if (vp->host_ops && vp->host_ops->set_intx)
		vp->host_ops->set_intx(vp->host_opaque, true);
}

void virtio_pci_notify_queue(struct virtio_pci *vp, unsigned q)
{
	if (q >= vp->nqueues)
		return;
	if (msix_on(&vp->msix)) {
		msix_fire(&vp->msix, __atomic_load_n(&vp->queues[q].msix_vector,
						     __ATOMIC_RELAXED));
		return;
	}
	__atomic_or_fetch(&vp->isr, 1, __ATOMIC_SEQ_CST);
	if (vp->host_ops && vp->host_ops->set_intx)
		vp->host_ops->set_intx(vp->host_opaque, true);
}
