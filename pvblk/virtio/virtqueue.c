/* SPDX-License-Identifier: Apache-2.0 */
/* virtqueue.c - the device side of a split virtqueue (virtio 1.x, 2.7).
   Guest memory may change under us at any time: each field is read once
   into a local before it is checked and used. */
#include <errno.h>
#include <endian.h>
#include <stdio.h>
#include <string.h>

#include "virtqueue.h"

static uint16_t rd16(const volatile uint16_t *p)
{
	return le16toh(__atomic_load_n(p, __ATOMIC_RELAXED));
}

void vq_fail_reason(struct vq *vq, const char *why)
{
	if (vq->broken)
		return;
	snprintf(vq->why, sizeof(vq->why), "%s", why);
	fprintf(stderr, "%s: virtqueue broken: %s; nothing more is read from "
		"it until the driver sets it up again\n",
		vq->label ? vq->label : "virtio-blk", vq->why);
	/* vblk_queue_broken_reason may read why from another thread */
	__atomic_store_n(&vq->broken, true, __ATOMIC_RELEASE);
}

void vq_fail(struct vq *vq, const char *why, unsigned a)
{
	char buf[sizeof(vq->why)];

	snprintf(buf, sizeof(buf), "%s (%u)", why, a);
	vq_fail_reason(vq, buf);
}

void vq_init(struct vq *vq, const struct vblk_mem *mem,
	     const struct vblk_ring *ring)
{
	memset(vq, 0, sizeof(*vq));
	vq->mem = mem;
	vq->num = ring->num;
	vq->desc = ring->desc;
	vq->avail = ring->avail;
	vq->used = ring->used;
	vq->last_avail = ring->last_avail_idx;
	/* the used ring the driver sees is where we continue */
	vq->used_idx = rd16(&ring->used->idx);
	vq->published = vq->used_idx;
	vq->inflight = ring->inflight;
	vq->event_idx = ring->features & (1ull << VIRTIO_RING_F_EVENT_IDX);
	vq->indirect = ring->features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
}

static void read_desc(const struct vring_desc *table, unsigned i,
		      struct vring_desc *d)
{
	memcpy(d, (const void *)&table[i], sizeof(*d));
	__atomic_signal_fence(__ATOMIC_SEQ_CST); /* one read, then locals */
	d->addr = le64toh(d->addr);
	d->len = le32toh(d->len);
	d->flags = le16toh(d->flags);
	d->next = le16toh(d->next);
}

/* Walk the chain at head into c; false (queue broken) when it cannot. */
static bool walk_chain(struct vq *vq, uint16_t head, struct vq_chain *c)
{
	const struct vring_desc *table = vq->desc;
	unsigned size = vq->num, seen = 0, i = head, n = 0;
	bool in_indirect = false;
	struct vring_desc d;

	c->head = head;
	c->nout = c->nin = 0;
	c->out_bytes = c->in_bytes = 0;
	if (i >= size) {
		vq_fail(vq, "head index past the ring", i);
		return false;
	}
	for (;;) {
		int ret;

		if (++seen > size) {
			vq_fail(vq, "descriptor chain longer than its table "
				"(a loop?)", seen);
			return false;
		}
		read_desc(table, i, &d);
		if (d.flags & VRING_DESC_F_INDIRECT) {
			if (!vq->indirect) {
				vq_fail(vq, "indirect descriptor not "
					"negotiated", i);
				return false;
			}
			if (in_indirect) {
				vq_fail(vq, "indirect table inside an "
					"indirect table", i);
				return false;
			}
			if (d.flags & VRING_DESC_F_NEXT) {
				vq_fail(vq, "indirect descriptor with NEXT",
					i);
				return false;
			}
			if (!d.len || d.len % sizeof(struct vring_desc) ||
			    d.len / sizeof(struct vring_desc) >
				    VBLK_MAX_DESC) {
				vq_fail(vq, "bad indirect table length",
					d.len);
				return false;
			}
			table = vblk_mem_ptr(vq->mem, d.addr, d.len);
			if (!table) {
				vq_fail(vq, "indirect table outside guest "
					"memory", i);
				return false;
			}
			size = d.len / sizeof(struct vring_desc);
			in_indirect = true;
			seen = 0;
			i = 0;
			continue;
		}
		if (d.flags & VRING_DESC_F_WRITE) {
			c->in_bytes += d.len;
			ret = vblk_mem_iov(vq->mem, d.addr, d.len, c->iov, &n,
					   VBLK_MAX_IOV);
			c->nin = n - c->nout;
		} else {
			if (c->nin || c->in_bytes) {
				vq_fail(vq, "readable descriptor after a "
					"writable one", i);
				return false;
			}
			c->out_bytes += d.len;
			ret = vblk_mem_iov(vq->mem, d.addr, d.len, c->iov, &n,
					   VBLK_MAX_IOV);
			c->nout = n;
		}
		if (ret == -E2BIG) {
			vq_fail(vq, "too many buffers in one request", n);
			return false;
		}
		if (ret < 0) {
			vq_fail(vq, "buffer outside guest memory", i);
			return false;
		}
		if (!(d.flags & VRING_DESC_F_NEXT))
			return true;
		i = d.next;
		if (i >= size) {
			vq_fail(vq, "next index past the table", i);
			return false;
		}
	}
}

int vq_pop(struct vq *vq, struct vq_chain *c)
{
	uint16_t avail_idx, head;

	if (vq->broken)
		return -EIO;
	avail_idx = le16toh(__atomic_load_n(&vq->avail->idx,
					    __ATOMIC_ACQUIRE));
	if (avail_idx == vq->last_avail)
		return 0;
	if ((uint16_t)(avail_idx - vq->last_avail) > vq->num) {
		vq_fail(vq, "avail index moved more than the ring size",
			(uint16_t)(avail_idx - vq->last_avail));
		return -EIO;
	}
	head = rd16(&vq->avail->ring[vq->last_avail % vq->num]);
	vq->last_avail++;
	if (vq->inflight && head < vq->num) {
		vq->inflight->desc[head].counter = ++vq->counter;
		__atomic_store_n(&vq->inflight->desc[head].inflight, 1,
				 __ATOMIC_RELEASE);
	}
	if (!walk_chain(vq, head, c))
		return -EIO;
	return 1;
}

int vq_walk(struct vq *vq, uint16_t head, struct vq_chain *c)
{
	return walk_chain(vq, head, c) ? 1 : -EIO;
}

/* Clear the record's marks of the chains in used[from, to). */
static void inflight_clear(struct vq *vq, uint16_t from, uint16_t to)
{
	for (uint16_t i = from; i != to; i++) {
		uint32_t id = le32toh(vq->used->ring[i % vq->num].id);

		if (id < vq->num)
			__atomic_store_n(&vq->inflight->desc[id].inflight, 0,
					 __ATOMIC_RELEASE);
	}
	__atomic_store_n(&vq->inflight->used_idx, to, __ATOMIC_RELEASE);
}

int vq_inflight_recover(struct vq *vq, uint16_t *heads, unsigned max)
{
	struct vblk_inflight *r = vq->inflight;
	unsigned n = 0;

	if (!r)
		return 0;
	if (r->version != 1 || r->desc_num != vq->num) {
		/* a fresh record: nothing to replay */
		memset(r, 0, vblk_inflight_bytes(vq->num));
		r->version = 1;
		r->desc_num = (uint16_t)vq->num;
		r->used_idx = vq->used_idx;
		return 0;
	}
	/* completions the old device published but had not cleared */
	if (r->used_idx != vq->used_idx &&
	    (uint16_t)(vq->used_idx - r->used_idx) <= vq->num)
		inflight_clear(vq, r->used_idx, vq->used_idx);
	r->used_idx = vq->used_idx;
	vq->counter = 0;
	for (unsigned h = 0; h < vq->num; h++) {
		if (!r->desc[h].inflight)
			continue;
		if (r->desc[h].counter > vq->counter)
			vq->counter = r->desc[h].counter;
		if (n < max)
			heads[n++] = (uint16_t)h;
	}
	/* oldest first (insertion sort: n is at most the ring size) */
	for (unsigned i = 1; i < n; i++) {
		uint16_t h = heads[i];
		unsigned j = i;

		for (; j && r->desc[heads[j - 1]].counter > r->desc[h].counter;
		     j--)
			heads[j] = heads[j - 1];
		heads[j] = h;
	}
	return (int)n;
}

void vq_push(struct vq *vq, uint16_t head, uint32_t len)
{
	struct vring_used_elem *e = &vq->used->ring[vq->used_idx % vq->num];

	e->id = htole32(head);
	e->len = htole32(len);
	vq->used_idx++;
}

/* virtio's vring_need_event: did new pass event since old? */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool vq_publish(struct vq *vq)
{
	uint16_t old = vq->signalled_used;
	bool valid = vq->signalled_valid;

	uint16_t from = vq->published;

	if (vq->published == vq->used_idx)
		return false;
	vq->published = vq->used_idx;
	if (vq->inflight)
		vq->inflight->last_batch_head = (uint16_t)le32toh(
			vq->used->ring[(uint16_t)(vq->used_idx - 1) % vq->num].id);
	__atomic_store_n(&vq->used->idx, htole16(vq->used_idx),
			 __ATOMIC_RELEASE);
	if (vq->inflight)
		inflight_clear(vq, from, vq->used_idx);
	/* the store above before the read of the driver's event/flags */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx)
		return !(rd16(&vq->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
	vq->signalled_used = vq->used_idx;
	vq->signalled_valid = true;
	if (!valid)
		return true;
	return need_event(rd16(&vq->avail->ring[vq->num]), vq->used_idx,
			  old);
}

bool vq_enable_kick(struct vq *vq)
{
	if (vq->event_idx) {
		uint16_t *avail_event = (uint16_t *)&vq->used->ring[vq->num];

		__atomic_store_n(avail_event, htole16(vq->last_avail),
				 __ATOMIC_RELAXED);
	}
	/* publish avail_event before looking at avail->idx again */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return le16toh(__atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE)) !=
	       vq->last_avail;
}

bool vq_has_avail(const struct vq *vq)
{
	if (vq->broken)
		return false;
	return le16toh(__atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE)) !=
	       vq->last_avail;
}
