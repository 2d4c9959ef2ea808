/* SPDX-License-Identifier: Apache-2.0 */
/* virtqueue.h - a split virtqueue as the device sees it (private to the
   virtio core): walk descriptor chains into iovecs, fill the used ring,
   decide when the driver wants a kick or an interrupt. */
#ifndef OVK_VIRTQUEUE_H
#define OVK_VIRTQUEUE_H

#include "virtio_blk.h"

struct vq {
	const struct vblk_mem *mem;
	unsigned num;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t last_avail; /* next avail entry the device reads */
	uint16_t used_idx;   /* next used entry the device writes */
	uint16_t published;  /* used_idx the driver was last shown */
	uint16_t signalled_used; /* used_idx at the last interrupt */
	bool signalled_valid;
	bool event_idx, indirect;
	bool broken;         /* set (release) after why is written */
	char why[128];       /* what broke it, once broken */
	const char *label;   /* who the queue is, for the log line */
	struct vblk_inflight *inflight; /* or NULL */
	uint64_t counter;
};

/* One descriptor chain: readable buffers (out) then writable ones (in). */
struct vq_chain {
	uint16_t head;
	unsigned nout, nin; /* iov[0..nout) readable, then nin writable */
	uint64_t out_bytes, in_bytes;
	struct iovec iov[VBLK_MAX_IOV];
};

void vq_init(struct vq *vq, const struct vblk_mem *mem,
	     const struct vblk_ring *ring);
/* Take the next chain off the avail ring: 1 when c holds one, 0 when the
   ring is empty, -EIO when the ring cannot be walked (vq->broken set, the
   reason logged). */
int vq_pop(struct vq *vq, struct vq_chain *c);
/* Walk the chain at head (one the device already owns) into c: 1, or
   -EIO with the queue broken. */
int vq_walk(struct vq *vq, uint16_t head, struct vq_chain *c);
/* Bring the inflight record up to date with the used ring, then list the
   heads it holds in the order they were taken: returns how many (at most
   max), -EINVAL when the record does not fit this ring (then unused). */
int vq_inflight_recover(struct vq *vq, uint16_t *heads, unsigned max);
/* Mark the queue broken, logging why (once) as "LABEL: virtqueue broken:
   WHY (A)"; the reason stays in vq->why. */
void vq_fail(struct vq *vq, const char *why, unsigned a);
/* The same with a reason that carries no number. */
void vq_fail_reason(struct vq *vq, const char *why);
/* Put a finished chain in the used ring (not yet visible to the driver). */
void vq_push(struct vq *vq, uint16_t head, uint32_t len);
/* Make pushed entries visible; true when the driver wants an interrupt. */
bool vq_publish(struct vq *vq);
/* Ask for a kick when more arrives; true when something already has. */
bool vq_enable_kick(struct vq *vq);
/* True when the driver has made requests available that vq_pop has not
   taken yet (a read of avail->idx: no kick asked for or needed). */
bool vq_has_avail(const struct vq *vq);

/* Between blk.c and poll.c: while a thread polls the avail ring, the
   driver need not kick (EVENT_IDX's avail_event stops advancing);
   blk_kicks_on asks for kicks again and is true when requests arrived
   meanwhile that the queue can take (the thread must not sleep then). */
struct vblk_queue;
void blk_kicks_off(struct vblk_queue *q);
bool blk_kicks_on(struct vblk_queue *q);

#endif
