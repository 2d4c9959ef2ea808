/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-blk disks for ovkvm: each --disk is an engine image (bdev_open)
 * served by pvblk's shared virtio-blk core (virtio_blk.h) behind the
 * virtio-pci transport.  Each virtqueue has one I/O thread with its own
 * engine queue; it polls the queue's ioeventfd (the guest's notify write,
 * caught by KVM), the engine's eventfd and a stop eventfd, and interrupts
 * the guest by writing the vector's irqfd. */
#include "device.h"
#include "vmblk.h"
#include "virtio_pci.h"
#include "../kvm/vm.h"

#include <blockengine.h>
#include <liveops.h>
#include <virtio_blk.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define VIRTIO_ID_BLOCK 2
#define PCI_CLASS_STORAGE_OTHER 0x0180
#define VMBLK_QUEUE_SIZE 256

struct vmblk_queue {
	struct vmblk *d;
	unsigned index;
	pthread_t thread;
	int stop_fd, kick_fd;
	struct vblk_ring ring;
	sem_t started;
	int start_rc;
	/* Statistics: the running engine queue's plus those of queues that
	 * ended (a device reset), under the disk's stats_lock. */
	struct vblk_queue *live;
	struct vblk_stats ended;
};

struct vmblk {
	struct vm *vm;
	char name[32];
	unsigned index; /* the disk's place among the --disk options */
	char *path, *child;
	bool read_only, snapshot;
	unsigned nqueues;
	struct bdev *bdev;
	struct vblk_dev *blk;
	struct vblk_mem mem;
	struct virtio_pci vp;
	int irqfd[VIRTIO_PCI_MAX_QUEUES + 1];
	int gsi[VIRTIO_PCI_MAX_QUEUES + 1];
	struct vmblk_queue q[VIRTIO_PCI_MAX_QUEUES];
	pthread_mutex_t stats_lock;
	unsigned intx_gsi; /* IOAPIC pin for INTx (no _PRT yet: unused by Linux) */
};

/* "PATH[,ro|snapshot][,queues=N]" */
static int parse(struct vmblk *d, const char *arg)
{
	char *s = strdup(arg), *save = NULL, *tok;

	if (!s)
		return -ENOMEM;
	d->nqueues = 1;
	tok = strtok_r(s, ",", &save);
	if (!tok) {
		free(s);
		fprintf(stderr, "ovkvm: --disk: no image path in '%s'\n", arg);
		return -EINVAL;
	}
	d->path = strdup(tok);
	while ((tok = strtok_r(NULL, ",", &save))) {
		char *end;
		if (!strcmp(tok, "ro")) {
			d->read_only = true;
		} else if (!strcmp(tok, "snapshot")) {
			d->snapshot = true;
		} else if (!strncmp(tok, "queues=", 7)) {
			unsigned long n = strtoul(tok + 7, &end, 10);
			if (*end || n < 1 || n > VIRTIO_PCI_MAX_QUEUES) {
				fprintf(stderr, "ovkvm: --disk %s: queues= takes 1 to %d\n",
					arg, VIRTIO_PCI_MAX_QUEUES);
				free(s);
				return -EINVAL;
			}
			d->nqueues = n;
		} else {
			fprintf(stderr, "ovkvm: --disk %s: unknown option '%s' (ro, "
				"snapshot, queues=N)\n", arg, tok);
			free(s);
			return -EINVAL;
		}
	}
	free(s);
	if (d->read_only && d->snapshot) {
		fprintf(stderr, "ovkvm: --disk %s: ro and snapshot exclude each other\n", arg);
		return -EINVAL;
	}
	return d->path ? 0 : -ENOMEM;
}

int vmblk_check_arg(const char *arg)
{
	struct vmblk d;
	int rc;

	memset(&d, 0, sizeof(d));
	rc = parse(&d, arg);
	free(d.path);
	return rc;
}

static int open_image(struct vmblk *d)
{
	struct bdev_open_opts oo = { 0 };
	struct bdev_info info;
	int rc;

	if (d->snapshot) {
		struct bdev_create_opts co = { .format = "vmdk",
			.subformat = "monolithicSparse", .backing = d->path };
		size_t n = strlen(d->path);
		if (n > 5 && !strcmp(d->path + n - 5, ".vmdk"))
			n -= 5;
		if (asprintf(&d->child, "%.*s-ovkvm-snapshot-%ld.vmdk", (int)n,
			     d->path, (long)getpid()) < 0) {
			d->child = NULL;
			return -ENOMEM;
		}
		rc = bdev_create(d->child, &co);
		if (rc < 0) {
			fprintf(stderr, "ovkvm: --disk %s: cannot create the snapshot "
				"child %s: %s\n", d->path, d->child, bdev_errmsg());
			free(d->child);
			d->child = NULL;
			return rc;
		}
		oo.flags |= BDEV_O_RDWR;
		rc = bdev_open(d->child, &oo, &d->bdev);
		if (rc < 0) {
			fprintf(stderr, "ovkvm: --disk %s: cannot open the snapshot "
				"child %s: %s\n", d->path, d->child, bdev_errmsg());
			unlink(d->child);
			free(d->child);
			d->child = NULL;
			return rc;
		}
	} else {
		char err[2048];
		unsigned merged;

		/* a view's delta left by an ovkvm or pvblk that died holds
		   the disk's latest writes: merge it back (read-only: say
		   the image is stale) */
		rc = liveops_recover(d->path, !d->read_only, &merged, err,
				     sizeof(err));
		if (rc == -EEXIST && d->read_only) {
			fprintf(stderr, "ovkvm: warning: --disk %s: %s\n",
				d->path, err);
		} else if (rc < 0) {
			fprintf(stderr, "ovkvm: --disk %s: %s; not starting\n",
				d->path, err);
			return rc;
		} else if (rc == 0 && err[0]) {
			fprintf(stderr, "ovkvm: --disk %s: %s\n", d->path,
				err);
		}
		if (!d->read_only)
			oo.flags |= BDEV_O_RDWR;
		rc = bdev_open(d->path, &oo, &d->bdev);
		if (rc < 0) {
			fprintf(stderr, "ovkvm: --disk %s: %s%s\n", d->path,
				bdev_errmsg(), rc == -EBUSY || rc == -EAGAIN ?
				" (another program holds it for writing)" : "");
			return rc;
		}
	}
	if (bdev_get_info(d->bdev, &info) < 0)
		return 0;
	if (info.read_only)
		d->read_only = true;
	/* A compressed image (a stream) holds one compressed record per
	   grain: a guest that rewrites a block gets an I/O error. Say so
	   before it happens. */
	if (!d->read_only && !d->snapshot && info.compressed)
		fprintf(stderr, "ovkvm: warning: --disk %s is %s: "
			"each grain can be written once, so a guest that "
			"rewrites a block gets an I/O error; add ,snapshot "
			"(writes go to a delta child) or ,ro, or convert it "
			"to monolithicSparse\n", d->path,
			info.subformat ? info.subformat : "compressed");
	return 0;
}

/* ---- virtio device ops -------------------------------------------------- */

static uint64_t blk_features(void *opaque)
{
	struct vmblk *d = opaque;
	return vblk_dev_features(d->blk);
}

static void blk_config_read(void *opaque, uint32_t off, uint8_t *data,
			    unsigned len)
{
	struct vmblk *d = opaque;
	struct virtio_blk_config c;

	vblk_dev_config(d->blk, &c);
	memset(data, 0, len);
	if (off < sizeof(c))
		memcpy(data, (uint8_t *)&c + off,
		       len < sizeof(c) - off ? len : sizeof(c) - off);
}

static void blk_config_write(void *opaque, uint32_t off, const uint8_t *data,
			     unsigned len)
{
	struct vmblk *d = opaque;
	if (vblk_dev_set_config(d->blk, off, data, len) < 0)
		fprintf(stderr, "ovkvm: %s: guest wrote read-only config bytes at %u\n",
			d->name, off);
}

static void queue_notify(void *opaque)
{
	struct vmblk_queue *q = opaque;
	virtio_pci_notify_queue(&q->d->vp, q->index);
}

static void drain(int fd)
{
	uint64_t n;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		perror("ovkvm: virtio-blk eventfd read");
}

static void *queue_thread(void *arg)
{
	struct vmblk_queue *q = arg;
	struct vmblk *d = q->d;
	struct vblk_queue *vq;
	struct pollfd pfd[3];
	bool broken = false;
	char tname[16];
	int rc;

	/* "blkD-qQ" in ps and /proc/PID/task/TID/comm */
	snprintf(tname, sizeof(tname), "blk%u-q%u", d->index, q->index);
	pthread_setname_np(pthread_self(), tname);
	rc = vblk_queue_new(d->blk, queue_notify, q, &vq);
	if (rc == 0) {
		rc = vblk_queue_start(vq, &d->mem, &q->ring);
		if (rc < 0)
			vblk_queue_free(vq);
	}
	q->start_rc = rc;
	if (rc == 0) {
		pthread_mutex_lock(&d->stats_lock);
		q->live = vq;
		pthread_mutex_unlock(&d->stats_lock);
	}
	sem_post(&q->started);
	if (rc < 0)
		return NULL;
	pfd[0] = (struct pollfd){ .fd = q->stop_fd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = q->kick_fd, .events = POLLIN };
	pfd[2] = (struct pollfd){ .fd = vblk_queue_fd(vq), .events = POLLIN };
	for (;;) {
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("ovkvm: virtio-blk poll");
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[2].revents & POLLIN) {
			drain(pfd[2].fd);
			vblk_queue_complete(vq);
		}
		if (pfd[1].revents & POLLIN) {
			drain(pfd[1].fd);
			vblk_queue_kick(vq);
		}
		if (!broken && vblk_queue_broken(vq)) {
			broken = true;
			fprintf(stderr, "ovkvm: %s: queue %u: the guest's ring "
				"cannot be walked; the queue serves nothing more "
				"until the driver resets the device\n", d->name,
				q->index);
		}
	}
	vblk_queue_stop(vq);
	pthread_mutex_lock(&d->stats_lock);
	{
		struct vblk_stats st;
		vblk_queue_stats(vq, &st);
		q->ended.requests += st.requests;
		q->ended.read_bytes += st.read_bytes;
		q->ended.written_bytes += st.written_bytes;
		q->ended.errors += st.errors;
	}
	q->live = NULL;
	pthread_mutex_unlock(&d->stats_lock);
	vblk_queue_free(vq);
	return NULL;
}

static int blk_queue_start(void *opaque, unsigned qi,
			   const struct virtio_queue_cfg *cfg, uint64_t features,
			   int kick_fd)
{
	struct vmblk *d = opaque;
	struct vmblk_queue *q = &d->q[qi];
	const struct guest_memory *m = &d->vm->mem;
	int rc;

	q->ring = (struct vblk_ring){
		.num = cfg->size,
		.desc = guest_ptr(m, cfg->desc, vring_desc_bytes(cfg->size)),
		.avail = guest_ptr(m, cfg->avail, vring_avail_bytes(cfg->size)),
		.used = guest_ptr(m, cfg->used, vring_used_bytes(cfg->size)),
		.features = features,
	};
	if (!q->ring.desc || !q->ring.avail || !q->ring.used) {
		fprintf(stderr, "ovkvm: %s: queue %u: ring addresses outside guest "
			"RAM (desc %#llx avail %#llx used %#llx)\n", d->name, qi,
			(unsigned long long)cfg->desc, (unsigned long long)cfg->avail,
			(unsigned long long)cfg->used);
		return -EFAULT;
	}
	q->d = d;
	q->index = qi;
	q->kick_fd = kick_fd;
	q->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->stop_fd < 0)
		return -errno;
	sem_init(&q->started, 0, 0);
	rc = vm_thread_create(&q->thread, queue_thread, q);
	if (rc) {
		close(q->stop_fd);
		sem_destroy(&q->started);
		return -rc;
	}
	while (sem_wait(&q->started) < 0 && errno == EINTR)
		;
	sem_destroy(&q->started);
	if (q->start_rc < 0) {
		pthread_join(q->thread, NULL);
		close(q->stop_fd);
		fprintf(stderr, "ovkvm: %s: queue %u cannot start: %s\n", d->name,
			qi, strerror(-q->start_rc));
		return q->start_rc;
	}
	/* Requests may be waiting already. */
	{
		uint64_t one = 1;
		if (write(kick_fd, &one, sizeof(one)) < 0)
			perror("ovkvm: virtio-blk kick");
	}
	return 0;
}

static void blk_queue_stop(void *opaque, unsigned qi)
{
	struct vmblk *d = opaque;
	struct vmblk_queue *q = &d->q[qi];
	uint64_t one = 1;

	if (write(q->stop_fd, &one, sizeof(one)) < 0)
		perror("ovkvm: virtio-blk stop");
	pthread_join(q->thread, NULL);
	close(q->stop_fd);
	q->stop_fd = -1;
}

static const struct virtio_dev_ops blk_dev_ops = {
	.features = blk_features,
	.config_read = blk_config_read,
	.config_write = blk_config_write,
	.queue_start = blk_queue_start,
	.queue_stop = blk_queue_stop,
};

/* ---- VM side: ioeventfd, irqfd, INTx ------------------------------------ */

static int host_ioeventfd(void *opaque, uint64_t gpa, int fd, bool assign)
{
	struct vmblk *d = opaque;
	int rc = vm_ioeventfd(d->vm, gpa, 2, fd, assign);
	if (rc < 0)
		fprintf(stderr, "ovkvm: %s: KVM_IOEVENTFD at %#llx: %s\n", d->name,
			(unsigned long long)gpa, strerror(-rc));
	return rc;
}

static void host_vector_changed(void *opaque, unsigned vec, uint64_t addr,
				uint32_t data, bool usable)
{
	struct vmblk *d = opaque;
	int rc;

	if (!usable || vec > d->nqueues)
		return;
	rc = vm_msi_route(d->vm, d->gsi[vec], addr, data);
	if (rc < 0)
		fprintf(stderr, "ovkvm: %s: MSI-X vector %u: KVM_SET_GSI_ROUTING: %s\n",
			d->name, vec, strerror(-rc));
}

static void host_deliver(void *opaque, unsigned vec)
{
	struct vmblk *d = opaque;
	uint64_t one = 1;

	if (vec <= d->nqueues && write(d->irqfd[vec], &one, sizeof(one)) < 0)
		perror("ovkvm: virtio-blk irqfd");
}

static void host_set_intx(void *opaque, bool level)
{
	struct vmblk *d = opaque;
	/* The pin chosen at setup, not the guest-writable line register. */
	vm_set_irq_line(d->vm, d->intx_gsi, level);
}

static const struct virtio_host_ops blk_host_ops = {
	.ioeventfd = host_ioeventfd,
	.vector_changed = host_vector_changed,
	.deliver = host_deliver,
	.set_intx = host_set_intx,
};

/* ---- lifetime ----------------------------------------------------------- */

static void vmblk_free(struct vmblk *d)
{
	int rc;

	if (!d)
		return;
	if (d->vp.pci.ops)
		virtio_pci_destroy(&d->vp);
	if (d->blk)
		vblk_dev_free(d->blk);
	if (d->bdev) {
		rc = bdev_close(d->bdev);
		if (rc < 0)
			fprintf(stderr, "ovkvm: %s: closing %s: %s\n", d->name,
				d->child ? d->child : d->path, bdev_errmsg());
	}
	if (d->child)
		unlink(d->child);
	for (unsigned v = 0; v <= d->nqueues; v++)
		if (d->irqfd[v] > 0)
			close(d->irqfd[v]);
	free(d->child);
	free(d->path);
	pthread_mutex_destroy(&d->stats_lock);
	free(d);
}

int vmblk_grow(struct vmblk *d, uint64_t size, char *err, size_t errlen)
{
	int rc;

	if (d->read_only) {
		snprintf(err, errlen, "%s (%s) is read-only", d->name, d->path);
		return -EROFS;
	}
	rc = bdev_grow(d->bdev, size);
	if (rc < 0) {
		snprintf(err, errlen, "%s (%s): cannot grow to %llu bytes: %s",
			 d->name, d->child ? d->child : d->path,
			 (unsigned long long)size, bdev_errmsg());
		return rc;
	}
	rc = vblk_dev_resize(d->blk);
	if (rc < 0) {
		snprintf(err, errlen, "%s: the image grew but its new size "
			 "cannot be read: %s", d->name, strerror(-rc));
		return rc;
	}
	virtio_pci_config_changed(&d->vp);
	return 0;
}

struct bdev *vmblk_bdev(struct vmblk *d)
{
	return d->bdev;
}

const char *vmblk_top(const struct vmblk *d)
{
	return d->child ? d->child : d->path;
}

const char *vmblk_path(const struct vmblk *d)
{
	return d->path;
}

bool vmblk_read_only(const struct vmblk *d)
{
	return d->read_only;
}

bool vmblk_is_snapshot(const struct vmblk *d)
{
	return d->snapshot;
}

json_t *vmblk_status(const struct vmblk *dc)
{
	struct vmblk *d = (struct vmblk *)dc;
	struct vblk_stats sum = { 0 };
	unsigned inflight = 0;

	pthread_mutex_lock(&d->stats_lock);
	for (unsigned i = 0; i < d->nqueues; i++) {
		struct vblk_stats st = d->q[i].ended;
		if (d->q[i].live) {
			struct vblk_stats l;
			vblk_queue_stats(d->q[i].live, &l);
			st.requests += l.requests;
			st.read_bytes += l.read_bytes;
			st.written_bytes += l.written_bytes;
			st.errors += l.errors;
			inflight += vblk_queue_inflight(d->q[i].live);
		}
		sum.requests += st.requests;
		sum.read_bytes += st.read_bytes;
		sum.written_bytes += st.written_bytes;
		sum.errors += st.errors;
	}
	pthread_mutex_unlock(&d->stats_lock);
	return json_pack("{s:s,s:s,s:b,s:b,s:i,s:I,s:I,s:I,s:I,s:i}",
			 "name", d->name, "path", d->path,
			 "read_only", d->read_only, "snapshot", d->snapshot,
			 "queues", (int)d->nqueues,
			 "requests", (json_int_t)sum.requests,
			 "read_bytes", (json_int_t)sum.read_bytes,
			 "written_bytes", (json_int_t)sum.written_bytes,
			 "errors", (json_int_t)sum.errors,
			 "inflight", (int)inflight);
}

static int vmblk_new(struct vm *vm, unsigned index, const char *arg,
		     struct vmblk **out)
{
	struct vmblk *d = calloc(1, sizeof(*d));
	struct vblk_dev_opts o = { 0 };
	int rc;

	if (!d)
		return -ENOMEM;
	pthread_mutex_init(&d->stats_lock, NULL);
	d->vm = vm;
	d->index = index;
	snprintf(d->name, sizeof(d->name), "virtio-blk%u", index);
	if ((rc = parse(d, arg)) < 0 || (rc = open_image(d)) < 0)
		goto fail;
	o.bdev = d->bdev;
	o.read_only = d->read_only;
	o.serial = d->name;
	o.num_queues = d->nqueues;
	rc = vblk_dev_new(&o, &d->blk);
	if (rc < 0) {
		fprintf(stderr, "ovkvm: %s: %s: %s\n", d->name, d->path, strerror(-rc));
		goto fail;
	}
	d->mem.nregions = 1;
	d->mem.regions[0] = (struct vblk_mem_region){
		.gpa = 0, .size = vm->mem.low_size, .hva = vm->mem.host };
	if (vm->mem.ram_size > vm->mem.low_size) {
		d->mem.nregions = 2;
		d->mem.regions[1] = (struct vblk_mem_region){
			.gpa = GUEST_HIGH_RAM_START,
			.size = vm->mem.ram_size - vm->mem.low_size,
			.hva = vm->mem.host + vm->mem.low_size };
	}
	for (unsigned v = 0; v <= d->nqueues; v++) {
		d->irqfd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (d->irqfd[v] < 0) {
			rc = -errno;
			goto fail;
		}
		rc = d->gsi[v] = vm_msi_alloc(vm, d->irqfd[v]);
		if (rc < 0) {
			fprintf(stderr, "ovkvm: %s: KVM_IRQFD: %s\n", d->name,
				strerror(-rc));
			goto fail;
		}
	}
	rc = virtio_pci_init(&d->vp, d->name, VIRTIO_ID_BLOCK,
			     PCI_CLASS_STORAGE_OTHER, d->nqueues, VMBLK_QUEUE_SIZE,
			     &blk_dev_ops, d, &blk_host_ops, d);
	if (rc < 0) {
		fprintf(stderr, "ovkvm: %s: virtio-pci: %s\n", d->name, strerror(-rc));
		goto fail;
	}
	*out = d;
	return 0;
fail:
	vmblk_free(d);
	return rc;
}

static void disks_exit(struct vm *vm);

static int disks_init(struct vm *vm)
{
	int rc;

	for (unsigned i = 0; i < vm->ndisks; i++) {
		struct vmblk *d = NULL;
		rc = vmblk_new(vm, i, vm->disk_args[i], &d);
		if (rc < 0)
			goto fail;
		vm->disks[i] = d;
		pthread_mutex_lock(&vm->pci.lock);
		rc = pci_bus_add(&vm->pci, &d->vp.pci, -1);
		if (rc >= 0) {
			d->intx_gsi = 10 + (rc & 1);
			d->vp.pci.cfg[PCI_INTERRUPT_LINE] = d->intx_gsi;
			rc = pci_bus_alloc_mmio(&vm->pci, &d->vp.pci, 0);
		}
		pthread_mutex_unlock(&vm->pci.lock);
		if (rc < 0) {
			fprintf(stderr, "ovkvm: %s: no room on PCI bus 0: %s\n",
				d->name, strerror(-rc));
			goto fail;
		}
		fprintf(stderr, "ovkvm: %s: %s%s%s, %u queue(s), PCI 00:%02x.0\n",
			d->name, d->path, d->read_only ? " (read-only)" : "",
			d->child ? " (snapshot: writes go to a temporary child)" : "",
			d->nqueues, d->vp.pci.slot);
	}
	return 0;
fail:
	disks_exit(vm);
	return rc;
}

static void disks_exit(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ndisks; i++) {
		struct vmblk *d = vm->disks[i];
		if (!d)
			continue;
		/* The vCPUs are gone: stop the queues, flush and close. */
		pthread_mutex_lock(&vm->pci.lock);
		virtio_pci_reset(&d->vp);
		if (vm->pci.slots[d->vp.pci.slot] == &d->vp.pci)
			vm->pci.slots[d->vp.pci.slot] = NULL;
		pthread_mutex_unlock(&vm->pci.lock);
		vmblk_free(d);
		vm->disks[i] = NULL;
	}
}

VM_DEVICE(virtio_blk, DEV_ORDER_PCI_DEV, disks_init, disks_exit)
