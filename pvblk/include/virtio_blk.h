/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio_blk.h - ovk's virtio-blk device core: guest memory, split
 * virtqueues and virtio-blk requests served from an engine image.
 *
 * The core knows no transport. A transport (pvblk's vhost-user-blk backend,
 * later the ovk hypervisor's virtio-pci) maps guest memory, describes it as a
 * table of regions, tells each queue where its rings live, and calls
 * vblk_queue_kick() when the driver kicks and vblk_queue_complete() when the
 * queue's engine eventfd is readable. Each vblk_queue belongs to one thread
 * and has its own engine queue (io_uring); data moves between the image and
 * guest memory with no copy.
 *
 * Everything the guest wrote is untrusted: every address and length is
 * bounds-checked against the region table before use. A request the device
 * can answer but not serve gets VIRTIO_BLK_S_IOERR or _UNSUPP; a ring the
 * device cannot safely walk any more (a descriptor loop, an index out of
 * range, a buffer outside guest memory, no writable status byte) marks the
 * queue broken: it serves nothing more until it is set up again.
 *
 * Functions return 0 or -errno and never set errno.
 */
#ifndef OVK_VIRTIO_BLK_H
#define OVK_VIRTIO_BLK_H

#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct bdev;

/* ---- Guest memory ----------------------------------------------------- */

#define VBLK_MAX_REGIONS 32

struct vblk_mem_region {
	uint64_t gpa;  /* first guest-physical address */
	uint64_t size; /* bytes */
	uint8_t *hva;  /* where the region is mapped in this process */
};

struct vblk_mem {
	unsigned nregions;
	struct vblk_mem_region regions[VBLK_MAX_REGIONS];
	/* Optional: a count the transport raises when this memory faulted
	   under the device (a front end shrank the file behind it and the
	   transport put zeros there; vhost_user/guard.c). A request in flight
	   while it moves fails with IOERR, so no zeros that stood in for the
	   guest's bytes are reported as its data; breaking the queue is the
	   transport's part (vblk_queue_break, with what it knows). */
	const atomic_uint *faults;
};

/*
 * The host address of [gpa, gpa + len) when it lies inside one region,
 * else NULL (also when gpa + len overflows). len may be 0.
 */
void *vblk_mem_ptr(const struct vblk_mem *m, uint64_t gpa, uint64_t len);

/*
 * Append iovecs covering [gpa, gpa + len) (possibly spanning adjacent
 * regions) to iov[*n..max). Returns 0, -EFAULT when a byte lies outside
 * guest memory or the range overflows, -E2BIG when iov is full.
 */
int vblk_mem_iov(const struct vblk_mem *m, uint64_t gpa, uint64_t len,
		 struct iovec *iov, unsigned *n, unsigned max);

/* ---- Feature bits and the wire layout (virtio 1.x, little endian) ------- */

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1u
#define VIRTIO_BLK_ID_BYTES 20

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
#define VRING_USED_F_NO_NOTIFY 1
#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct vring_desc) == 16, "virtq_desc is 16 bytes");

struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[]; /* num entries, then used_event */
};

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};
_Static_assert(sizeof(struct vring_used_elem) == 8, "virtq_used_elem");

struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[]; /* num entries, then avail_event */
};

/* Bytes each ring of a queue of num entries takes (with the event field). */
static inline uint64_t vring_desc_bytes(unsigned num) { return 16ull * num; }
static inline uint64_t vring_avail_bytes(unsigned num) { return 6ull + 2ull * num; }
static inline uint64_t vring_used_bytes(unsigned num) { return 6ull + 8ull * num; }

struct virtio_blk_config {
	uint64_t capacity; /* 512-byte sectors */
	uint32_t size_max;
	uint32_t seg_max;
	struct {
		uint16_t cylinders;
		uint8_t heads;
		uint8_t sectors;
	} geometry;
	uint32_t blk_size;
	uint8_t physical_block_exp;
	uint8_t alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t wce;
	uint8_t unused;
	uint16_t num_queues;
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_blk_config) == 60, "virtio_blk_config");
_Static_assert(offsetof(struct virtio_blk_config, num_queues) == 34,
	       "num_queues at 34");
_Static_assert(offsetof(struct virtio_blk_config, max_discard_sectors) == 36,
	       "max_discard_sectors at 36");

/* ---- The device ------------------------------------------------------- */

/* Most descriptors one request may have (direct plus indirect), and the
   seg_max the device offers. */
#define VBLK_MAX_DESC 1024
#define VBLK_MAX_IOV 512
#define VBLK_SEG_MAX 254
#define VBLK_MAX_QUEUE_SIZE 1024

struct vblk_dev_opts {
	struct bdev *bdev;   /* the image: stays open while the device lives */
	bool read_only;      /* offer VIRTIO_BLK_F_RO, refuse writes */
	const char *serial;  /* GET_ID's answer (first 20 bytes), or NULL */
	unsigned num_queues; /* 1 to 64 */
};

struct vblk_dev;

int vblk_dev_new(const struct vblk_dev_opts *o, struct vblk_dev **out);
void vblk_dev_free(struct vblk_dev *d);
/* The image changed size under the device (bdev_grow): read it again.
   Requests taken from then on are checked against the new size, and the
   config space says it; telling the driver is the transport's part (a
   configuration-change notice). Any thread. 0 or -errno. */
int vblk_dev_resize(struct vblk_dev *d);
/* The feature bits the device offers. */
uint64_t vblk_dev_features(const struct vblk_dev *d);
/* The config space as the driver reads it (little endian). */
void vblk_dev_config(const struct vblk_dev *d, struct virtio_blk_config *c);
/* The driver wrote config bytes [off, off + len): only wce is writable.
   Returns 0, or -EINVAL for a write outside it. */
int vblk_dev_set_config(struct vblk_dev *d, uint32_t off, const void *buf,
			uint32_t len);

/* ---- A queue: one thread's share of the device ------------------------ */

struct vblk_queue;

/* Called (on the queue's thread) when the driver should be interrupted. */
typedef void (*vblk_notify_fn)(void *opaque);

/* A new, stopped queue with its own engine queue. */
int vblk_queue_new(struct vblk_dev *d, vblk_notify_fn notify, void *opaque,
		   struct vblk_queue **out);
/* Waits for the requests in flight, then frees q. */
void vblk_queue_free(struct vblk_queue *q);
/* The engine's eventfd: readable when vblk_queue_complete() has work. */
int vblk_queue_fd(struct vblk_queue *q);

/*
 * A record of the requests a queue has taken and not yet returned, kept in
 * memory that outlives the device process (vhost-user's INFLIGHT_SHMFD,
 * split rings), so that a restarted device serves them again. Only the
 * device reads it; the layout is QEMU's documented one.
 */
struct vblk_inflight_desc {
	uint8_t inflight; /* 1 while the chain at this head is the device's */
	uint8_t padding[5];
	uint16_t next;
	uint64_t counter; /* order in which heads were taken */
};
_Static_assert(sizeof(struct vblk_inflight_desc) == 16, "DescStateSplit");

struct vblk_inflight {
	uint64_t features;
	uint16_t version;  /* 1 once initialised */
	uint16_t desc_num; /* ring entries */
	uint16_t last_batch_head;
	uint16_t used_idx; /* used->idx the record is up to date with */
	struct vblk_inflight_desc desc[];
};
_Static_assert(sizeof(struct vblk_inflight) == 16, "QueueRegionSplit");

/* Bytes of inflight record a queue of num entries needs (64-aligned). */
static inline uint64_t vblk_inflight_bytes(unsigned num)
{
	return (16ull + 16ull * num + 63) & ~63ull;
}

struct vblk_ring {
	unsigned num;              /* entries, a power of two up to 32768 */
	struct vring_desc *desc;   /* host addresses of the three rings, */
	struct vring_avail *avail; /* already checked by the transport to */
	struct vring_used *used;   /* lie in guest memory for num entries */
	uint16_t last_avail_idx;   /* where the device starts reading avail */
	uint64_t features;         /* negotiated (EVENT_IDX, INDIRECT_DESC) */
	/* optional, vblk_inflight_bytes(num) bytes: when it holds requests
	   from an earlier device, vblk_queue_start serves them again first
	   and resumes reading avail after them (last_avail_idx is ignored) */
	struct vblk_inflight *inflight;
};

/*
 * Start serving ring with guest memory mem (copied; the mappings must stay
 * valid until vblk_queue_stop returns). Returns -EINVAL for a bad ring
 * (size, alignment).
 */
int vblk_queue_start(struct vblk_queue *q, const struct vblk_mem *mem,
		     const struct vblk_ring *ring);
/*
 * Stop reading the avail ring, wait for the requests in flight and put
 * them in the used ring. Returns the next avail index the device would
 * have read (what GET_VRING_BASE answers).
 */
uint16_t vblk_queue_stop(struct vblk_queue *q);

/* The driver kicked: read the avail ring, submit what it holds. */
void vblk_queue_kick(struct vblk_queue *q);
/* The engine eventfd was readable (drained by the caller or not): run the
   completions, fill the used ring, notify, and read more of the avail
   ring if requests were held back for lack of slots. */
void vblk_queue_complete(struct vblk_queue *q);
/*
 * Waiting for work on a queue's thread: busy-polling, then sleeping.
 *
 * A thread that sleeps in poll() after every request pays a wake-up on
 * the next one, which at queue depth 1 is most of the request's time. So
 * before it sleeps, vblk_queue_wait() looks at the avail ring and the
 * engine's completions in a loop (no system call) for a window of time,
 * and serves what it finds. While it polls, a driver that negotiated
 * EVENT_IDX is told it need not kick. The window adapts, as QEMU's
 * IOThreads' does: it doubles (from 4 us, up to max_ns) when the thread
 * slept less than max_ns, meaning a longer poll would have caught the
 * request, and halves (to 0 under 1 us) when the thread slept longer,
 * meaning the queue is idle and polling only burns CPU. An idle queue
 * therefore costs no CPU, and a busy one no wake-ups.
 */
struct vblk_poll {
	uint64_t max_ns;    /* 0: never poll (sleep at once, as before) */
	uint64_t window_ns; /* current window; starts at 0 */
	uint64_t polls, hits; /* windows polled, and those that found work */
	uint64_t fds_seen;  /* internal: when the fds were last looked at */
};

/*
 * Waits for work on q: polls as above, then poll(2)s pfd[0..n) with no
 * timeout. Returns what poll(2) returns (> 0 with revents set, or -1 with
 * errno), or 0 when polling served requests and the fds were not looked
 * at (every revents is 0: call again). While work keeps coming, the fds
 * are still looked at (without sleeping) every millisecond, so a stop
 * request is never starved. The caller lists q's kick and engine fds in
 * pfd and acts on their revents as without polling.
 */
int vblk_queue_wait(struct vblk_queue *q, struct vblk_poll *p,
		    struct pollfd *pfd, unsigned n);

/*
 * One look, without a system call, for work that would otherwise wake the
 * thread: requests in the avail ring (taken and submitted) and engine
 * completions already in its ring (run, and the used ring notified).
 * True when it found either. A thread that busy-polls calls this in its
 * loop before it sleeps on the kick and engine fds.
 */
bool vblk_queue_poll(struct vblk_queue *q);
/* True once the queue met a ring it cannot walk (see top of file). */
bool vblk_queue_broken(const struct vblk_queue *q);
/* Why the queue is broken ("buffer outside guest memory (3)", ...), or
   NULL while it is not. May be called from any thread while q lives; the
   string stays valid until the queue is started again or freed. */
const char *vblk_queue_broken_reason(const struct vblk_queue *q);
/* Names the queue in its log line ("LABEL: virtqueue broken: WHY; ..."),
   e.g. the export and queue index; "virtio-blk" when never set. Takes
   effect at the next vblk_queue_start. */
void vblk_queue_set_label(struct vblk_queue *q, const char *label);
/* The transport found the queue unusable (its guest memory went away):
   mark it broken with why, logged once, as for a bad ring. Call on the
   queue's thread, between kick/complete calls. */
void vblk_queue_break(struct vblk_queue *q, const char *why);
/* What a queue has answered since it was made: requests put in the used
   ring, data bytes of successful reads and writes, and requests answered
   with other than VIRTIO_BLK_S_OK. Safe to call from any thread while the
   queue's own thread runs (each counter is read atomically). */
struct vblk_stats {
	uint64_t requests;
	uint64_t read_bytes;
	uint64_t written_bytes;
	uint64_t errors;
};
void vblk_queue_stats(const struct vblk_queue *q, struct vblk_stats *out);

/* Requests submitted and not yet in the used ring (any thread may ask). */
unsigned vblk_queue_inflight(const struct vblk_queue *q);

#endif /* OVK_VIRTIO_BLK_H */
