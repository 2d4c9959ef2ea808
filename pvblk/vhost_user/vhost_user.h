/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost_user.h - pvblk's vhost-user-blk backend (private): the protocol's
 * wire layout (QEMU's docs/interop/vhost-user.rst), one device's state, and
 * the entry points of its parts:
 *   dev.c    one message at a time, each checked and applied (no sockets:
 *            the fuzz harness drives it straight)
 *   queue.c  a thread per virtqueue around the virtio-blk core
 *   server.c the unix socket, SCM_RIGHTS, one front end at a time
 */
#ifndef OVK_VHOST_USER_H
#define OVK_VHOST_USER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "virtio_blk.h"

enum vu_request {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_SET_BACKEND_REQ_FD = 21,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_GET_INFLIGHT_FD = 31,
	VU_SET_INFLIGHT_FD = 32,
	VU_GET_MAX_MEM_SLOTS = 36,
	VU_ADD_MEM_REG = 37,
	VU_REM_MEM_REG = 38,
};

#define VU_VERSION 0x1u
#define VU_FLAG_VERSION_MASK 0x3u
#define VU_FLAG_REPLY (1u << 2)
#define VU_FLAG_NEED_REPLY (1u << 3)

#define VU_F_PROTOCOL_FEATURES 30

#define VU_PROTOCOL_F_MQ 0
#define VU_PROTOCOL_F_REPLY_ACK 3
#define VU_PROTOCOL_F_BACKEND_REQ 5
#define VU_PROTOCOL_F_CONFIG 9
#define VU_PROTOCOL_F_INFLIGHT_SHMFD 12
#define VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15

/* What the back end may send the front end on the backend channel. */
#define VU_BACKEND_CONFIG_CHANGE_MSG 2

#define VU_VRING_IDX_MASK 0xffu
#define VU_VRING_NOFD_MASK (1u << 8)

#define VU_MAX_FDS 8        /* fds one message may carry */
#define VU_MEM_REGIONS 8    /* regions in one SET_MEM_TABLE */
#define VU_MAX_MEM_SLOTS 32 /* VBLK_MAX_REGIONS */
#define VU_CONFIG_MAX 256
#define VU_MAX_QUEUES 64

struct vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size; /* payload bytes after the header */
} __attribute__((packed));
_Static_assert(sizeof(struct vu_hdr) == 12, "vhost-user header");

struct vu_vring_state {
	uint32_t index;
	uint32_t num;
};

struct vu_vring_addr {
	uint32_t index;
	uint32_t flags;
	uint64_t desc_user_addr;
	uint64_t used_user_addr;
	uint64_t avail_user_addr;
	uint64_t log_guest_addr;
};
_Static_assert(sizeof(struct vu_vring_addr) == 40, "vring address");

struct vu_mem_region {
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t mmap_offset;
};
_Static_assert(sizeof(struct vu_mem_region) == 32, "memory region");

struct vu_memory {
	uint32_t nregions;
	uint32_t padding;
	struct vu_mem_region regions[VU_MEM_REGIONS];
};

struct vu_single_region {
	uint64_t padding;
	struct vu_mem_region region;
};

struct vu_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
	uint8_t payload[VU_CONFIG_MAX];
};

struct vu_inflight {
	uint64_t mmap_size;
	uint64_t mmap_offset;
	uint16_t num_queues;
	uint16_t queue_size;
};

union vu_payload {
	struct vu_inflight inflight;
	uint64_t u64;
	struct vu_vring_state state;
	struct vu_vring_addr addr;
	struct vu_memory memory;
	struct vu_single_region mem_reg;
	struct vu_config config;
};

/* A message as held in memory: on the wire the payload follows the
   12-byte header directly, here it is aligned. */
struct vu_msg {
	struct vu_hdr hdr;
	union vu_payload p;
};

/* One mapped region of the front end's memory. */
struct vu_region {
	uint64_t gpa, size, uva, mmap_offset;
	void *map;       /* the mmap, from its start */
	size_t map_size;
	uint8_t *hva;    /* map + mmap_offset: the region's first byte */
};

struct vu_dev;

/* One virtqueue: its settings from the front end and its thread. */
struct vu_vring {
	struct vu_dev *dev;
	unsigned index;
	unsigned num;
	uint64_t desc_uva, avail_uva, used_uva;
	bool addr_set;
	uint16_t last_avail;
	int kick_fd, call_fd, err_fd;
	bool enabled;
	bool inflight_ok; /* the inflight record has a region for this ring */
	/* the thread, while running */
	bool running;
	pthread_t thread;
	int stop_fd; /* eventfd: the thread stops when it is readable */
	struct vblk_ring ring; /* host pointers for the thread */
	/* why the running ring broke, "" while it serves; under dev->lock */
	char broken[128];
	/* under dev->lock: the thread's queue while it serves, and what the
	   queues this ring had before answered (kept across front ends) */
	struct vblk_queue *live;
	struct vblk_stats done;
};

struct vu_dev {
	struct vblk_dev *blk;
	const char *label;   /* names the device in log lines, or NULL */
	pthread_mutex_t lock; /* guards each vring's broken[] */
	/* SIGBUS faults contained in this device's mappings (guard.c): a
	   count that only grows (the core fails requests in flight while it
	   moves: struct vblk_mem's faults), its value when the memory table
	   was last replaced, and the first fault's offset into its mapping
	   since then (UINT64_MAX: none) */
	atomic_uint mem_faults;
	atomic_uint mem_faults_base;
	_Atomic uint64_t mem_fault_off;
	unsigned num_queues;
	uint64_t poll_ns; /* each vring thread's vblk_poll max_ns */
	uint64_t features, protocol_features;
	bool owner;
	unsigned nregions;
	struct vu_region regions[VU_MAX_MEM_SLOTS];
	struct vblk_mem mem; /* the same table as the core sees it */
	struct vu_vring vrings[VU_MAX_QUEUES];
	bool no_threads; /* the fuzz harness: never start queue threads */
	/* INFLIGHT_SHMFD: the record of requests in flight, shared with the
	   front end so that it outlives this process */
	void *inflight_map;
	size_t inflight_size;
	unsigned inflight_queue_size;
	int reply_fd; /* an fd to send with the reply, or -1 */
	/* BACKEND_REQ: our end of the channel on which we tell the front
	   end things (a new capacity), or -1; replaced under lock */
	int backend_fd;
};

void vu_dev_init(struct vu_dev *d, struct vblk_dev *blk, unsigned nq);
/* Forget the front end: stop the rings, unmap memory, close fds. */
void vu_dev_reset(struct vu_dev *d);
/* The device's configuration changed (the disk grew; vblk_dev_resize
   first): tell the front end on the backend channel so that it reads the
   configuration again and interrupts the guest. 1 when told, 0 when the
   front end gave no channel (it sees the change at its next GET_CONFIG),
   -errno when the message could not be sent. Any thread. */
int vu_dev_config_changed(struct vu_dev *d);

/*
 * Apply one message whose payload (hdr.size bytes, already checked to be
 * at most sizeof(union vu_payload)) is in msg, with the nfds fds that came
 * along (each taken over: used or closed). When a reply is due, fills
 * reply and returns 1; 0 when none is; -errno when the front end broke the
 * protocol and the connection should be closed.
 */
int vu_dev_handle(struct vu_dev *d, const struct vu_msg *msg, int *fds,
		  unsigned nfds, struct vu_msg *reply);

/* guard.c: guest memory the front end may shrink. vu_guard_seal adds
   F_SEAL_SHRINK to fd where it can; true when fd is now sealed against
   shrinking. vu_guard_add registers a mapping of fd (call before any
   thread touches it): a SIGBUS inside it is contained and counted in
   d->mem_faults. vu_guard_remove before munmap. */
bool vu_guard_seal(int fd);
int vu_guard_add(struct vu_dev *d, void *map, size_t len, int fd);
void vu_guard_remove(void *map);

/* queue.c: (re)start the ring's thread if it has what it needs (memory,
   addresses, kick fd, enabled); stop it and keep its avail index. */
int vu_vring_maybe_start(struct vu_vring *v);
void vu_vring_stop(struct vu_vring *v);
/* Why ring i stopped serving (copied into why), 1; 0 while it serves or
   is not running; -ENOENT past the device's queues. Any thread. */
int vu_vring_broken(struct vu_dev *d, unsigned i, char *why, size_t len);
/* What ring i has answered since the device was made (every queue it had,
   the serving one included). -ENOENT past the device's queues. Any
   thread. */
int vu_vring_stats(struct vu_dev *d, unsigned i, struct vblk_stats *out);

#endif
