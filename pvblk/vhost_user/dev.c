/* SPDX-License-Identifier: Apache-2.0 */
/* dev.c - the vhost-user-blk protocol, one message at a time: each
   request's payload size is checked before a byte of it is used. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhost_user.h"

#define SUPPORTED_PROTOCOL_FEATURES                                    \
	(1ull << VU_PROTOCOL_F_MQ | 1ull << VU_PROTOCOL_F_REPLY_ACK |  \
	 1ull << VU_PROTOCOL_F_CONFIG | 1ull << VU_PROTOCOL_F_BACKEND_REQ | \
	 1ull << VU_PROTOCOL_F_INFLIGHT_SHMFD |                        \
	 1ull << VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS)

static void close_fds(int *fds, unsigned nfds)
{
	for (unsigned i = 0; i < nfds; i++)
		if (fds[i] >= 0) {
			close(fds[i]);
			fds[i] = -1;
		}
}

void vu_dev_init(struct vu_dev *d, struct vblk_dev *blk, unsigned nq)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	atomic_init(&d->mem_faults, 0);
	atomic_init(&d->mem_faults_base, 0);
	atomic_init(&d->mem_fault_off, UINT64_MAX);
	d->blk = blk;
	d->num_queues = nq;
	d->reply_fd = -1;
	d->backend_fd = -1;
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++) {
		struct vu_vring *v = &d->vrings[i];

		v->dev = d;
		v->index = i;
		v->kick_fd = v->call_fd = v->err_fd = v->stop_fd = -1;
	}
}

static void stop_all(struct vu_dev *d)
{
	for (unsigned i = 0; i < d->num_queues; i++)
		vu_vring_stop(&d->vrings[i]);
}

static void start_all(struct vu_dev *d)
{
	for (unsigned i = 0; i < d->num_queues; i++)
		vu_vring_maybe_start(&d->vrings[i]);
}

static void unmap_region(struct vu_region *r)
{
	if (r->map) {
		vu_guard_remove(r->map);
		munmap(r->map, r->map_size);
	}
	memset(r, 0, sizeof(*r));
}

/* Rebuild the core's view of guest memory from the mapped regions. */
static void sync_mem(struct vu_dev *d)
{
	d->mem.nregions = d->nregions;
	d->mem.faults = &d->mem_faults;
	for (unsigned i = 0; i < d->nregions; i++) {
		d->mem.regions[i].gpa = d->regions[i].gpa;
		d->mem.regions[i].size = d->regions[i].size;
		d->mem.regions[i].hva = d->regions[i].hva;
	}
}

static void unmap_all(struct vu_dev *d)
{
	for (unsigned i = 0; i < d->nregions; i++)
		unmap_region(&d->regions[i]);
	d->nregions = 0;
	sync_mem(d);
	/* faults in the old table are no reason to break the new one */
	atomic_store(&d->mem_faults_base, atomic_load(&d->mem_faults));
	atomic_store(&d->mem_fault_off, UINT64_MAX);
}

/* Replace the backend channel (fd taken over; -1 closes it). */
static void set_backend_fd(struct vu_dev *d, int fd)
{
	int old;

	pthread_mutex_lock(&d->lock);
	old = d->backend_fd;
	d->backend_fd = fd;
	pthread_mutex_unlock(&d->lock);
	if (old >= 0)
		close(old);
}

int vu_dev_config_changed(struct vu_dev *d)
{
	struct vu_hdr h = { .request = VU_BACKEND_CONFIG_CHANGE_MSG,
			    .flags = VU_VERSION, .size = 0 };
	ssize_t n = 0;
	int ret = 0;

	pthread_mutex_lock(&d->lock);
	if (d->backend_fd >= 0) {
		/* 12 bytes on a socket nobody else writes: never blocks
		   unless the front end stopped reading it for good */
		do {
			n = send(d->backend_fd, &h, sizeof(h),
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		} while (n < 0 && errno == EINTR);
		ret = n == (ssize_t)sizeof(h) ? 1 : n < 0 ? -errno : -EIO;
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

void vu_dev_reset(struct vu_dev *d)
{
	stop_all(d);
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++) {
		struct vu_vring *v = &d->vrings[i];
		int *fds[] = { &v->kick_fd, &v->call_fd, &v->err_fd };

		for (unsigned k = 0; k < 3; k++)
			if (*fds[k] >= 0) {
				close(*fds[k]);
				*fds[k] = -1;
			}
		v->num = 0;
		v->addr_set = false;
		v->last_avail = 0;
		v->enabled = false;
	}
	unmap_all(d);
	if (d->inflight_map) {
		vu_guard_remove(d->inflight_map);
		munmap(d->inflight_map, d->inflight_size);
	}
	d->inflight_map = NULL;
	d->inflight_size = 0;
	d->inflight_queue_size = 0;
	if (d->reply_fd >= 0)
		close(d->reply_fd);
	d->reply_fd = -1;
	set_backend_fd(d, -1);
	d->features = d->protocol_features = 0;
	d->owner = false;
}

/* Map one region from fd (taken over), sealed against shrinking where
   the file allows it and guarded (guard.c) where it does not. 0, or
   -errno with a message. */
static int map_region(struct vu_dev *d, struct vu_region *r,
		      const struct vu_mem_region *m, int fd)
{
	struct stat st;
	uint64_t end;
	void *p;

	memset(r, 0, sizeof(*r));
	if (!m->memory_size ||
	    __builtin_add_overflow(m->mmap_offset, m->memory_size, &end) ||
	    m->guest_phys_addr + m->memory_size < m->guest_phys_addr ||
	    m->userspace_addr + m->memory_size < m->userspace_addr ||
	    end > SIZE_MAX || fd < 0) {
		if (fd >= 0)
			close(fd);
		fprintf(stderr, "pvblk: vhost-user: bad memory region\n");
		return -EINVAL;
	}
	/* sealed first, so the size checked next is the size it keeps */
	vu_guard_seal(fd);
	/* a file shorter than the region would fault (SIGBUS) when the
	   guest's buffers point past its end */
	if (fstat(fd, &st) < 0 || (S_ISREG(st.st_mode) &&
				   (uint64_t)st.st_size < end)) {
		close(fd);
		fprintf(stderr, "pvblk: vhost-user: memory region of %llu "
			"bytes in a file that holds fewer\n",
			(unsigned long long)end);
		return -EINVAL;
	}
	p = mmap(NULL, (size_t)end, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 0);
	if (p == MAP_FAILED) {
		int err = errno;

		close(fd);
		fprintf(stderr, "pvblk: vhost-user: cannot map %llu bytes of "
			"guest memory: %s\n", (unsigned long long)end,
			strerror(err));
		return -err;
	}
	if (vu_guard_add(d, p, (size_t)end, fd) < 0) {
		close(fd);
		munmap(p, (size_t)end);
		fprintf(stderr, "pvblk: vhost-user: too many guest memory "
			"mappings in this process to guard another\n");
		return -ENOSPC;
	}
	close(fd);
	r->gpa = m->guest_phys_addr;
	r->size = m->memory_size;
	r->uva = m->userspace_addr;
	r->mmap_offset = m->mmap_offset;
	r->map = p;
	r->map_size = (size_t)end;
	r->hva = (uint8_t *)p + m->mmap_offset;
	return 0;
}

static int set_mem_table(struct vu_dev *d, const struct vu_memory *mt,
			 int *fds, unsigned nfds)
{
	struct vu_region nr[VU_MEM_REGIONS];
	unsigned i;
	int ret = 0;

	if (mt->nregions > VU_MEM_REGIONS || mt->nregions != nfds) {
		close_fds(fds, nfds);
		return -EINVAL;
	}
	for (i = 0; i < mt->nregions; i++) {
		ret = map_region(d, &nr[i], &mt->regions[i], fds[i]);
		fds[i] = -1;
		if (ret < 0)
			break;
	}
	if (ret < 0) {
		while (i--)
			unmap_region(&nr[i]);
		close_fds(fds, nfds);
		return ret;
	}
	/* the rings may be running on the old table: stop, swap, restart */
	stop_all(d);
	unmap_all(d);
	memcpy(d->regions, nr, sizeof(nr[0]) * mt->nregions);
	d->nregions = mt->nregions;
	sync_mem(d);
	start_all(d);
	return 0;
}

static int add_mem_reg(struct vu_dev *d, const struct vu_mem_region *m,
		       int *fds, unsigned nfds)
{
	struct vu_region r;
	int ret;

	if (nfds != 1 || d->nregions == VU_MAX_MEM_SLOTS) {
		close_fds(fds, nfds);
		return -EINVAL;
	}
	ret = map_region(d, &r, m, fds[0]);
	fds[0] = -1;
	if (ret < 0)
		return ret;
	stop_all(d);
	d->regions[d->nregions++] = r;
	sync_mem(d);
	start_all(d);
	return 0;
}

static int rem_mem_reg(struct vu_dev *d, const struct vu_mem_region *m,
		       int *fds, unsigned nfds)
{
	close_fds(fds, nfds);
	for (unsigned i = 0; i < d->nregions; i++) {
		struct vu_region *r = &d->regions[i];

		if (r->gpa != m->guest_phys_addr ||
		    r->size != m->memory_size ||
		    r->uva != m->userspace_addr)
			continue;
		stop_all(d);
		unmap_region(r);
		d->regions[i] = d->regions[--d->nregions];
		sync_mem(d);
		start_all(d);
		return 0;
	}
	return -ENOENT;
}

/* The ring a message names, or NULL when past the device's queues. */
static struct vu_vring *vring_of(struct vu_dev *d, uint32_t index)
{
	return index < d->num_queues ? &d->vrings[index] : NULL;
}

static int set_vring_fd(struct vu_dev *d, uint32_t req, uint64_t u,
			int *fds, unsigned nfds)
{
	struct vu_vring *v = vring_of(d, (uint32_t)(u & VU_VRING_IDX_MASK));
	bool nofd = u & VU_VRING_NOFD_MASK;
	int fd = -1, *slot;

	if (!v || (nofd ? nfds != 0 : nfds != 1)) {
		close_fds(fds, nfds);
		return -EINVAL;
	}
	if (!nofd) {
		fd = fds[0];
		fds[0] = -1;
	}
	slot = req == VU_SET_VRING_KICK ? &v->kick_fd :
	       req == VU_SET_VRING_CALL ? &v->call_fd : &v->err_fd;
	vu_vring_stop(v);
	if (*slot >= 0)
		close(*slot);
	*slot = fd;
	/* without PROTOCOL_FEATURES a ring is enabled once it has a kick */
	if (req == VU_SET_VRING_KICK &&
	    !(d->features & (1ull << VU_F_PROTOCOL_FEATURES)))
		v->enabled = true;
	vu_vring_maybe_start(v);
	return 0;
}

/* GET_INFLIGHT_FD: a fresh, zeroed record for every queue (the first
   start initialises each); the reply carries its memfd. */
static int get_inflight(struct vu_dev *d, const struct vu_inflight *in,
			struct vu_msg *r)
{
	uint64_t size;
	int fd;

	if (!in->num_queues || in->num_queues > d->num_queues ||
	    !in->queue_size || in->queue_size > 32768)
		return -EINVAL;
	size = vblk_inflight_bytes(in->queue_size) * in->num_queues;
	fd = memfd_create("pvblk-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int err = errno;

		close(fd);
		return -err;
	}
	/* the front end keeps it and hands it back: it may not shrink */
	vu_guard_seal(fd);
	r->hdr.request = VU_GET_INFLIGHT_FD;
	r->hdr.flags = VU_VERSION | VU_FLAG_REPLY;
	r->hdr.size = sizeof(r->p.inflight);
	r->p.inflight = *in;
	r->p.inflight.mmap_size = size;
	r->p.inflight.mmap_offset = 0;
	if (d->reply_fd >= 0)
		close(d->reply_fd);
	d->reply_fd = fd;
	return 1;
}

/* SET_INFLIGHT_FD: map the record the front end kept (ours from an
   earlier run, or fresh); the rings' next start replays what it holds. */
static int set_inflight(struct vu_dev *d, const struct vu_inflight *in,
			int *fds, unsigned nfds)
{
	uint64_t need, end;
	struct stat st;
	void *p;

	if (nfds != 1 || !in->queue_size || in->queue_size > 32768 ||
	    in->num_queues > VU_MAX_QUEUES) {
		close_fds(fds, nfds);
		return -EINVAL;
	}
	need = vblk_inflight_bytes(in->queue_size) * in->num_queues;
	vu_guard_seal(fds[0]);
	if (in->mmap_size < need ||
	    __builtin_add_overflow(in->mmap_offset, in->mmap_size, &end) ||
	    fstat(fds[0], &st) < 0 ||
	    (S_ISREG(st.st_mode) && (uint64_t)st.st_size < end) ||
	    in->mmap_offset % 4096 || in->mmap_size > SIZE_MAX) {
		close_fds(fds, nfds);
		return -EINVAL;
	}
	p = mmap(NULL, (size_t)in->mmap_size, PROT_READ | PROT_WRITE,
		 MAP_SHARED, fds[0], (off_t)in->mmap_offset);
	if (p == MAP_FAILED) {
		int err = errno;

		close_fds(fds, nfds);
		return -err;
	}
	if (vu_guard_add(d, p, (size_t)in->mmap_size, fds[0]) < 0) {
		close_fds(fds, nfds);
		munmap(p, (size_t)in->mmap_size);
		return -ENOSPC;
	}
	close_fds(fds, nfds);
	stop_all(d);
	if (d->inflight_map) {
		vu_guard_remove(d->inflight_map);
		munmap(d->inflight_map, d->inflight_size);
	}
	d->inflight_map = p;
	d->inflight_size = (size_t)in->mmap_size;
	d->inflight_queue_size = in->queue_size;
	fprintf(stderr, "pvblk: vhost-user: the front end keeps the record of "
		"requests in flight (%u queue%s of %u)\n", in->num_queues,
		in->num_queues == 1 ? "" : "s", in->queue_size);
	for (unsigned i = 0; i < d->num_queues; i++)
		d->vrings[i].inflight_ok = i < in->num_queues;
	start_all(d);
	return 0;
}

/* The payload size each request must have (-1: any, checked later). */
static long expected_size(uint32_t req)
{
	switch (req) {
	case VU_GET_FEATURES:
	case VU_GET_PROTOCOL_FEATURES:
	case VU_GET_QUEUE_NUM:
	case VU_SET_OWNER:
	case VU_RESET_OWNER:
	case VU_GET_MAX_MEM_SLOTS:
		return 0;
	case VU_SET_FEATURES:
	case VU_SET_PROTOCOL_FEATURES:
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
		return sizeof(uint64_t);
	case VU_SET_BACKEND_REQ_FD:
		return 0;
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_BASE:
	case VU_GET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
		return sizeof(struct vu_vring_state);
	case VU_SET_VRING_ADDR:
		return sizeof(struct vu_vring_addr);
	case VU_ADD_MEM_REG:
	case VU_REM_MEM_REG:
		return sizeof(struct vu_single_region);
	case VU_GET_INFLIGHT_FD:
	case VU_SET_INFLIGHT_FD:
		return sizeof(struct vu_inflight);
	default:
		return -1;
	}
}

static int reply_u64(const struct vu_msg *m, struct vu_msg *r, uint64_t v)
{
	r->hdr.request = m->hdr.request;
	r->hdr.flags = VU_VERSION | VU_FLAG_REPLY;
	r->hdr.size = sizeof(uint64_t);
	r->p.u64 = v;
	return 1;
}

/* Apply m; 1 with a reply in r, 0 without, -EPROTO or -ENOTSUP for a
   message that breaks the protocol (the connection ends), another -errno
   when a well-formed request failed (answered through REPLY_ACK). */
static int apply(struct vu_dev *d, const struct vu_msg *m, int *fds,
		 unsigned nfds, struct vu_msg *r)
{
	const union vu_payload *p = &m->p;
	struct vu_vring *v;
	long want = expected_size(m->hdr.request);

	if (want >= 0 && m->hdr.size != (uint32_t)want) {
		close_fds(fds, nfds);
		return -EPROTO;
	}
	switch (m->hdr.request) {
	case VU_GET_FEATURES:
		return reply_u64(m, r, vblk_dev_features(d->blk) |
				       1ull << VU_F_PROTOCOL_FEATURES);
	case VU_SET_FEATURES:
		if (p->u64 & ~(vblk_dev_features(d->blk) |
			       1ull << VU_F_PROTOCOL_FEATURES))
			return -EINVAL;
		d->features = p->u64;
		return 0;
	case VU_GET_PROTOCOL_FEATURES:
		return reply_u64(m, r, SUPPORTED_PROTOCOL_FEATURES);
	case VU_SET_PROTOCOL_FEATURES:
		d->protocol_features = p->u64 & SUPPORTED_PROTOCOL_FEATURES;
		return 0;
	case VU_GET_QUEUE_NUM:
		return reply_u64(m, r, d->num_queues);
	case VU_GET_MAX_MEM_SLOTS:
		return reply_u64(m, r, VU_MAX_MEM_SLOTS);
	case VU_SET_OWNER:
		d->owner = true;
		return 0;
	case VU_RESET_OWNER:
		vu_dev_reset(d);
		return 0;
	case VU_SET_MEM_TABLE:
		if (m->hdr.size < 8 ||
		    m->hdr.size != 8 + (uint64_t)p->memory.nregions *
						sizeof(struct vu_mem_region)) {
			close_fds(fds, nfds);
			return -EPROTO;
		}
		return set_mem_table(d, &p->memory, fds, nfds);
	case VU_ADD_MEM_REG:
		return add_mem_reg(d, &p->mem_reg.region, fds, nfds);
	case VU_REM_MEM_REG:
		return rem_mem_reg(d, &p->mem_reg.region, fds, nfds);
	case VU_SET_VRING_NUM:
		v = vring_of(d, p->state.index);
		if (!v || !p->state.num || p->state.num > 32768 ||
		    (p->state.num & (p->state.num - 1)))
			return -EINVAL;
		vu_vring_stop(v);
		v->num = p->state.num;
		vu_vring_maybe_start(v);
		return 0;
	case VU_SET_VRING_ADDR:
		v = vring_of(d, p->addr.index);
		if (!v)
			return -EINVAL;
		vu_vring_stop(v);
		v->desc_uva = p->addr.desc_user_addr;
		v->avail_uva = p->addr.avail_user_addr;
		v->used_uva = p->addr.used_user_addr;
		v->addr_set = true;
		vu_vring_maybe_start(v);
		return 0;
	case VU_SET_VRING_BASE:
		v = vring_of(d, p->state.index);
		if (!v || p->state.num > UINT16_MAX)
			return -EINVAL;
		vu_vring_stop(v);
		v->last_avail = (uint16_t)p->state.num;
		vu_vring_maybe_start(v);
		return 0;
	case VU_GET_VRING_BASE:
		v = vring_of(d, p->state.index);
		if (!v)
			return -EINVAL;
		/* stops the ring until its next SET_VRING_KICK */
		vu_vring_stop(v);
		if (v->kick_fd >= 0) {
			close(v->kick_fd);
			v->kick_fd = -1;
		}
		r->hdr.request = m->hdr.request;
		r->hdr.flags = VU_VERSION | VU_FLAG_REPLY;
		r->hdr.size = sizeof(struct vu_vring_state);
		r->p.state.index = p->state.index;
		r->p.state.num = v->last_avail;
		return 1;
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
		return set_vring_fd(d, m->hdr.request, p->u64, fds, nfds);
	case VU_SET_VRING_ENABLE:
		v = vring_of(d, p->state.index);
		if (!v || p->state.num > 1)
			return -EINVAL;
		vu_vring_stop(v);
		v->enabled = p->state.num;
		vu_vring_maybe_start(v);
		return 0;
	case VU_GET_INFLIGHT_FD:
		return get_inflight(d, &p->inflight, r);
	case VU_SET_INFLIGHT_FD:
		return set_inflight(d, &p->inflight, fds, nfds);
	case VU_GET_CONFIG: {
		struct virtio_blk_config cfg;
		uint32_t off = p->config.offset, len = p->config.size;

		if (m->hdr.size < 12 || m->hdr.size > sizeof(p->config) ||
		    len > VU_CONFIG_MAX)
			return -EPROTO;
		vblk_dev_config(d->blk, &cfg);
		r->hdr.request = m->hdr.request;
		r->hdr.flags = VU_VERSION | VU_FLAG_REPLY;
		r->p.config.offset = off;
		r->p.config.flags = 0;
		memset(r->p.config.payload, 0, sizeof(r->p.config.payload));
		if (off > VU_CONFIG_MAX || len > VU_CONFIG_MAX - off) {
			/* an empty answer says the read failed */
			r->p.config.size = 0;
			r->hdr.size = 12;
			return 1;
		}
		/* fields past ours (a newer front end's larger struct) read
		   as zero, as for a device without those features */
		if (off < sizeof(cfg))
			memcpy(r->p.config.payload, (uint8_t *)&cfg + off,
			       len < sizeof(cfg) - off ? len :
							 sizeof(cfg) - off);
		r->p.config.size = len;
		r->hdr.size = 12 + len;
		return 1;
	}
	case VU_SET_BACKEND_REQ_FD:
		if (nfds != 1 || !(d->protocol_features &
				   (1ull << VU_PROTOCOL_F_BACKEND_REQ)))
			return -EPROTO;
		set_backend_fd(d, fds[0]);
		fds[0] = -1;
		return 0;
	case VU_SET_CONFIG:
		if (m->hdr.size < 12 || m->hdr.size > sizeof(p->config) ||
		    p->config.size > m->hdr.size - 12)
			return -EPROTO;
		return vblk_dev_set_config(d->blk, p->config.offset,
					   p->config.payload, p->config.size);
	default:
		/* not offered: the front end should not send it */
		close_fds(fds, nfds);
		fprintf(stderr, "pvblk: vhost-user: request %u not "
			"supported\n", m->hdr.request);
		return -ENOTSUP;
	}
}

int vu_dev_handle(struct vu_dev *d, const struct vu_msg *msg, int *fds,
		  unsigned nfds, struct vu_msg *reply)
{
	bool ack = (msg->hdr.flags & VU_FLAG_NEED_REPLY) &&
		   (d->protocol_features & (1ull << VU_PROTOCOL_F_REPLY_ACK));
	int ret;

	if ((msg->hdr.flags & VU_FLAG_VERSION_MASK) != VU_VERSION ||
	    msg->hdr.size > sizeof(union vu_payload)) {
		close_fds(fds, nfds);
		return -EPROTO;
	}
	memset(&reply->hdr, 0, sizeof(reply->hdr));
	ret = apply(d, msg, fds, nfds, reply);
	close_fds(fds, nfds); /* whatever the request did not take */
	if (ret == 1)
		return 1;
	if (ack)
		/* the reply says 0 for success, non-zero for failure */
		return reply_u64(msg, reply, ret < 0 ? 1 : 0);
	/* a malformed message ends the connection; a well-formed one that
	   failed without REPLY_ACK is only logged */
	if (ret == -EPROTO || ret == -ENOTSUP)
		return ret;
	if (ret < 0)
		fprintf(stderr, "pvblk: vhost-user: request %u failed: %s\n",
			msg->hdr.request, strerror(-ret));
	return 0;
}
