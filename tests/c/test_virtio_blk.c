/* SPDX-License-Identifier: Apache-2.0 */
/* test_virtio_blk.c - the virtio-blk core over fake guest memory: requests
   that must work, and what a hostile or buggy driver may put in the rings
   (each case: no crash, no access outside guest memory, IOERR/UNSUPP or a
   broken queue). Built with ASan in CI, which catches stray accesses. */
#include <poll.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "testutil.h"
#include "virtio_blk.h"

#define GPA0 0x100000ull        /* guest memory starts here */
#define MEM (1u << 20)          /* 1 MiB of it */
#define NUM 16                  /* ring entries */
#define DESC_GPA (GPA0)
#define AVAIL_GPA (GPA0 + 0x1000)
#define USED_GPA (GPA0 + 0x2000)
#define HDR_GPA (GPA0 + 0x3000) /* request headers, 16 bytes apart */
#define IND_GPA (GPA0 + 0x4000) /* indirect tables */
#define STATUS_GPA (GPA0 + 0x5000)
#define DATA_GPA (GPA0 + 0x10000)
#define IMG_SIZE (1u << 20)

static uint8_t *guest; /* MEM bytes, with an inaccessible page each side */
static struct vblk_mem mem;
static struct vring_desc *desc;
static struct vring_avail *avail;
static struct vring_used *used;
static unsigned notified;
static struct bdev *bdev;

static void *gp(uint64_t gpa)
{
	return guest + (gpa - GPA0);
}

static void on_notify(void *opaque)
{
	(void)opaque;
	notified++;
}

static void setup_memory(void)
{
	/* guard pages around guest memory: a stray access faults */
	uint8_t *p = mmap(NULL, MEM + 2 * 4096, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED);
	CHECK(mprotect(p + 4096, MEM, PROT_READ | PROT_WRITE) == 0);
	guest = p + 4096;
	mem.nregions = 1;
	mem.regions[0] = (struct vblk_mem_region){ GPA0, MEM, guest };
	desc = gp(DESC_GPA);
	avail = gp(AVAIL_GPA);
	used = gp(USED_GPA);
}

struct rig {
	struct vblk_dev *dev;
	struct vblk_queue *q;
	uint16_t next_avail;
	unsigned next_desc;
};

static void rig_start(struct rig *r, bool read_only, uint64_t features)
{
	struct vblk_dev_opts o = { .bdev = bdev, .read_only = read_only,
				   .serial = "test-serial-01234567",
				   .num_queues = 1 };
	struct vblk_ring ring = { .num = NUM, .desc = desc, .avail = avail,
				  .used = used, .features = features };

	memset(guest, 0, 0x10000);
	memset(r, 0, sizeof(*r));
	notified = 0;
	CHECK_EQ(vblk_dev_new(&o, &r->dev), 0);
	CHECK_EQ(vblk_queue_new(r->dev, on_notify, NULL, &r->q), 0);
	CHECK_EQ(vblk_queue_start(r->q, &mem, &ring), 0);
}

static void rig_stop(struct rig *r)
{
	vblk_queue_free(r->q);
	vblk_dev_free(r->dev);
}

static unsigned add_desc(struct rig *r, uint64_t addr, uint32_t len,
			 uint16_t flags, int next)
{
	unsigned i = r->next_desc++;

	desc[i] = (struct vring_desc){ addr, len,
				       (uint16_t)(flags | (next >= 0 ?
						  VRING_DESC_F_NEXT : 0)),
				       (uint16_t)(next >= 0 ? next : 0) };
	return i;
}

static void put_hdr(unsigned slot, uint32_t type, uint64_t sector)
{
	uint32_t *h = gp(HDR_GPA + 16 * slot);

	h[0] = type;
	h[1] = 0;
	memcpy(&h[2], &sector, 8);
}

/* Offer head, kick, and run completions until nothing is in flight. */
static void submit(struct rig *r, uint16_t head)
{
	avail->ring[r->next_avail % NUM] = head;
	r->next_avail++;
	__atomic_store_n(&avail->idx, r->next_avail, __ATOMIC_RELEASE);
	vblk_queue_kick(r->q);
	while (vblk_queue_inflight(r->q)) {
		struct pollfd pfd = { vblk_queue_fd(r->q), POLLIN, 0 };

		CHECK_EQ(poll(&pfd, 1, 5000), 1);
		vblk_queue_complete(r->q);
	}
}

/* A 3-descriptor request: header, data, status. */
static uint16_t simple_req(struct rig *r, unsigned slot, uint32_t type,
			   uint64_t sector, uint64_t data, uint32_t len,
			   bool data_writable)
{
	unsigned h;

	if (r->next_desc + 3 > NUM) /* earlier requests have completed */
		r->next_desc = 0;
	h = r->next_desc;
	put_hdr(slot, type, sector);
	add_desc(r, HDR_GPA + 16 * slot, 16, 0, (int)h + 1);
	add_desc(r, data, len, data_writable ? VRING_DESC_F_WRITE : 0,
		 (int)h + 2);
	add_desc(r, STATUS_GPA + slot, 1, VRING_DESC_F_WRITE, -1);
	*(uint8_t *)gp(STATUS_GPA + slot) = 0xee;
	return (uint16_t)h;
}

static uint8_t status_of(unsigned slot)
{
	return *(uint8_t *)gp(STATUS_GPA + slot);
}

static void test_mem_translation(void)
{
	struct vblk_mem m = { 2, { { 0x1000, 0x1000, guest },
				   { 0x2000, 0x1000, guest + 0x3000 } },
			      NULL };
	struct iovec iov[4];
	unsigned n = 0;

	CHECK(vblk_mem_ptr(&m, 0x1000, 0x1000) == guest);
	CHECK(vblk_mem_ptr(&m, 0x1800, 0x801) == NULL); /* crosses regions */
	CHECK(vblk_mem_ptr(&m, 0xfff, 1) == NULL);
	CHECK(vblk_mem_ptr(&m, 0x2fff, 1) == guest + 0x3fff);
	CHECK(vblk_mem_ptr(&m, 0x3000, 0) == NULL);
	CHECK(vblk_mem_ptr(&m, UINT64_MAX - 4, 16) == NULL); /* overflows */
	CHECK_EQ(vblk_mem_iov(&m, 0x1800, 0x1000, iov, &n, 4), 0);
	CHECK_EQ(n, 2);
	CHECK(iov[0].iov_base == guest + 0x800 && iov[0].iov_len == 0x800);
	CHECK(iov[1].iov_base == guest + 0x3000 && iov[1].iov_len == 0x800);
	n = 0;
	CHECK_EQ(vblk_mem_iov(&m, 0x1800, 0x1801, iov, &n, 4), -EFAULT);
	n = 0;
	CHECK_EQ(vblk_mem_iov(&m, UINT64_MAX - 10, 100, iov, &n, 4), -EFAULT);
	n = 0;
	CHECK_EQ(vblk_mem_iov(&m, 0x1800, 0x1000, iov, &n, 1), -E2BIG);
}

static void test_write_read_roundtrip(void)
{
	struct rig r;
	uint8_t *data = gp(DATA_GPA), *back = gp(DATA_GPA + 0x4000);
	struct vring_desc *ind = gp(IND_GPA);

	rig_start(&r, false, 1ull << VIRTIO_RING_F_INDIRECT_DESC);
	for (unsigned i = 0; i < 8192; i++)
		data[i] = (uint8_t)(i * 7 + 3);
	submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_OUT, 8, DATA_GPA, 8192,
			      false));
	CHECK_EQ(status_of(0), VIRTIO_BLK_S_OK);
	CHECK_EQ(used->idx, 1);
	CHECK_EQ(used->ring[0].len, 1);
	{
		/* write-through (wce = 0): the write is flushed before it
		   completes, and still lands */
		uint8_t zero = 0, one = 1;
		const uint32_t wce = offsetof(struct virtio_blk_config, wce);

		CHECK_EQ(vblk_dev_set_config(r.dev, wce, &zero, 1), 0);
		submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_OUT, 8, DATA_GPA,
				      8192, false));
		CHECK_EQ(status_of(0), VIRTIO_BLK_S_OK);
		CHECK_EQ(used->idx, 2);
		CHECK_EQ(vblk_dev_set_config(r.dev, wce, &one, 1), 0);
	}
	/* read it back through an indirect table, data split in two */
	put_hdr(1, VIRTIO_BLK_T_IN, 8);
	ind[0] = (struct vring_desc){ HDR_GPA + 16, 16, VRING_DESC_F_NEXT, 1 };
	ind[1] = (struct vring_desc){ DATA_GPA + 0x4000, 4096,
				      VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
				      2 };
	ind[2] = (struct vring_desc){ DATA_GPA + 0x5000, 4096,
				      VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
				      3 };
	ind[3] = (struct vring_desc){ STATUS_GPA + 1, 1, VRING_DESC_F_WRITE,
				      0 };
	submit(&r, (uint16_t)add_desc(&r, IND_GPA, 64, VRING_DESC_F_INDIRECT,
				      -1));
	CHECK_EQ(status_of(1), VIRTIO_BLK_S_OK);
	CHECK_EQ(used->idx, 3);
	CHECK_EQ(used->ring[2].len, 8193);
	CHECK(memcmp(data, back, 8192) == 0);
	CHECK(notified >= 1);
	/* flush, GET_ID, and a request type nobody knows */
	r.next_desc = 0;
	put_hdr(2, VIRTIO_BLK_T_FLUSH, 0);
	add_desc(&r, HDR_GPA + 32, 16, 0, 1);
	add_desc(&r, STATUS_GPA + 2, 1, VRING_DESC_F_WRITE, -1);
	submit(&r, 0);
	CHECK_EQ(status_of(2), VIRTIO_BLK_S_OK);
	submit(&r, simple_req(&r, 3, VIRTIO_BLK_T_GET_ID, 0, DATA_GPA, 20,
			      true));
	CHECK_EQ(status_of(3), VIRTIO_BLK_S_OK);
	CHECK(memcmp(data, "test-serial-01234567", 20) == 0);
	submit(&r, simple_req(&r, 4, 99, 0, DATA_GPA, 512, true));
	CHECK_EQ(status_of(4), VIRTIO_BLK_S_UNSUPP);
	CHECK(!vblk_queue_broken(r.q));
	CHECK_EQ(vblk_queue_stop(r.q), 6);
	rig_stop(&r);
}

static void put_seg(uint64_t gpa, uint64_t sector, uint32_t n, uint32_t f)
{
	uint8_t *p = gp(gpa);

	memcpy(p, &sector, 8);
	memcpy(p + 8, &n, 4);
	memcpy(p + 12, &f, 4);
}

static void test_discard_write_zeroes(void)
{
	struct rig r;
	uint8_t *data = gp(DATA_GPA);

	rig_start(&r, false, 0);
	memset(data, 0xab, 4096);
	submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_OUT, 16, DATA_GPA, 4096,
			      false));
	CHECK_EQ(status_of(0), VIRTIO_BLK_S_OK);
	put_seg(DATA_GPA + 0x8000, 16, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
	submit(&r, simple_req(&r, 1, VIRTIO_BLK_T_WRITE_ZEROES, 0,
			      DATA_GPA + 0x8000, 16, false));
	CHECK_EQ(status_of(1), VIRTIO_BLK_S_OK);
	submit(&r, simple_req(&r, 2, VIRTIO_BLK_T_IN, 16, DATA_GPA, 4096,
			      true));
	CHECK_EQ(status_of(2), VIRTIO_BLK_S_OK);
	for (unsigned i = 0; i < 4096; i++)
		CHECK_EQ(data[i], 0);
	/* discard takes no flags; a range past the end is an error */
	put_seg(DATA_GPA + 0x8000, 0, 8, 1);
	submit(&r, simple_req(&r, 3, VIRTIO_BLK_T_DISCARD, 0,
			      DATA_GPA + 0x8000, 16, false));
	CHECK_EQ(status_of(3), VIRTIO_BLK_S_UNSUPP);
	put_seg(DATA_GPA + 0x8000, IMG_SIZE / 512 - 4, 8, 0);
	submit(&r, simple_req(&r, 4, VIRTIO_BLK_T_DISCARD, 0,
			      DATA_GPA + 0x8000, 16, false));
	CHECK_EQ(status_of(4), VIRTIO_BLK_S_IOERR);
	put_seg(DATA_GPA + 0x8000, 0, 8, 0);
	submit(&r, simple_req(&r, 5, VIRTIO_BLK_T_DISCARD, 0,
			      DATA_GPA + 0x8000, 16, false));
	CHECK_EQ(status_of(5), VIRTIO_BLK_S_OK);
	CHECK(!vblk_queue_broken(r.q));
	rig_stop(&r);
}

/* Requests the device answers with IOERR and keeps going. */
static void test_bad_requests_get_ioerr(void)
{
	struct rig r;

	rig_start(&r, false, 0);
	/* past the end, and a sector number whose byte offset overflows */
	submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_IN, IMG_SIZE / 512 - 1,
			      DATA_GPA, 1024, true));
	CHECK_EQ(status_of(0), VIRTIO_BLK_S_IOERR);
	submit(&r, simple_req(&r, 1, VIRTIO_BLK_T_OUT, UINT64_MAX / 256,
			      DATA_GPA, 512, false));
	CHECK_EQ(status_of(1), VIRTIO_BLK_S_IOERR);
	/* not a whole number of sectors */
	submit(&r, simple_req(&r, 2, VIRTIO_BLK_T_IN, 0, DATA_GPA, 100, true));
	CHECK_EQ(status_of(2), VIRTIO_BLK_S_IOERR);
	/* header too short */
	r.next_desc = 0;
	add_desc(&r, HDR_GPA, 8, 0, 1);
	add_desc(&r, STATUS_GPA + 3, 1, VRING_DESC_F_WRITE, -1);
	*(uint8_t *)gp(STATUS_GPA + 3) = 0xee;
	submit(&r, 0);
	CHECK_EQ(status_of(3), VIRTIO_BLK_S_IOERR);
	CHECK(!vblk_queue_broken(r.q));
	rig_stop(&r);

	/* writes to a read-only device */
	rig_start(&r, true, 0);
	CHECK(vblk_dev_features(r.dev) & (1ull << VIRTIO_BLK_F_RO));
	submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_OUT, 0, DATA_GPA, 512,
			      false));
	CHECK_EQ(status_of(0), VIRTIO_BLK_S_IOERR);
	put_seg(DATA_GPA + 0x8000, 0, 8, 0);
	submit(&r, simple_req(&r, 1, VIRTIO_BLK_T_WRITE_ZEROES, 0,
			      DATA_GPA + 0x8000, 16, false));
	CHECK_EQ(status_of(1), VIRTIO_BLK_S_IOERR);
	rig_stop(&r);
}

/* vblk_queue_stats counts answered requests, data bytes of successful
   reads and writes, and errors (ovkvm's control socket shows them). */
static void test_stats(void)
{
	struct vblk_stats st;
	struct rig r;

	rig_start(&r, false, 0);
	vblk_queue_stats(r.q, &st);
	CHECK_EQ(st.requests, 0);
	submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_OUT, 8, DATA_GPA, 8192,
			      false));
	submit(&r, simple_req(&r, 1, VIRTIO_BLK_T_IN, 8, DATA_GPA, 4096, true));
	submit(&r, simple_req(&r, 2, VIRTIO_BLK_T_IN, IMG_SIZE / 512 - 1,
			      DATA_GPA, 1024, true));
	CHECK_EQ(status_of(2), VIRTIO_BLK_S_IOERR);
	vblk_queue_stats(r.q, &st);
	CHECK_EQ(st.requests, 3);
	CHECK_EQ(st.written_bytes, 8192);
	CHECK_EQ(st.read_bytes, 4096);
	CHECK_EQ(st.errors, 1);
	rig_stop(&r);
}

/* Each of these must leave the queue broken, the used ring untouched,
   and the status byte unwritten. */
enum hostile {
	H_LOOP, H_HEAD_PAST_RING, H_NEXT_PAST_RING, H_OUTSIDE_RAM,
	H_LEN_OVERFLOW, H_STATUS_READ_ONLY, H_NESTED_INDIRECT,
	H_INDIRECT_BAD_LEN, H_INDIRECT_OUTSIDE, H_INDIRECT_NOT_NEGOTIATED,
	H_INDIRECT_LOOP, H_AVAIL_JUMP, H_READ_AFTER_WRITE, H_END
};

static void test_hostile(enum hostile h)
{
	struct rig r;
	struct vring_desc *ind = gp(IND_GPA);
	uint16_t head = 0;

	rig_start(&r, false, h == H_INDIRECT_NOT_NEGOTIATED ? 0 :
			     1ull << VIRTIO_RING_F_INDIRECT_DESC);
	put_hdr(0, VIRTIO_BLK_T_IN, 0);
	*(uint8_t *)gp(STATUS_GPA) = 0xee;
	switch (h) {
	case H_LOOP: /* 0 -> 1 -> 0 ... */
		add_desc(&r, HDR_GPA, 16, 0, 1);
		add_desc(&r, DATA_GPA, 512, 0, 0);
		break;
	case H_HEAD_PAST_RING:
		head = NUM + 3;
		break;
	case H_NEXT_PAST_RING:
		add_desc(&r, HDR_GPA, 16, 0, NUM);
		break;
	case H_OUTSIDE_RAM:
		simple_req(&r, 0, VIRTIO_BLK_T_IN, 0, GPA0 + MEM - 256, 512,
			   true);
		break;
	case H_LEN_OVERFLOW:
		simple_req(&r, 0, VIRTIO_BLK_T_IN, 0, UINT64_MAX - 255,
			   0x1000, true);
		break;
	case H_STATUS_READ_ONLY:
		add_desc(&r, HDR_GPA, 16, 0, 1);
		add_desc(&r, STATUS_GPA, 1, 0, -1);
		break;
	case H_NESTED_INDIRECT:
		ind[0] = (struct vring_desc){ HDR_GPA, 16, VRING_DESC_F_NEXT,
					      1 };
		ind[1] = (struct vring_desc){ IND_GPA, 32,
					      VRING_DESC_F_INDIRECT, 0 };
		add_desc(&r, IND_GPA, 32, VRING_DESC_F_INDIRECT, -1);
		break;
	case H_INDIRECT_BAD_LEN:
		add_desc(&r, IND_GPA, 24, VRING_DESC_F_INDIRECT, -1);
		break;
	case H_INDIRECT_OUTSIDE:
		add_desc(&r, GPA0 + MEM - 16, 32, VRING_DESC_F_INDIRECT, -1);
		break;
	case H_INDIRECT_NOT_NEGOTIATED:
		ind[0] = (struct vring_desc){ STATUS_GPA, 1,
					      VRING_DESC_F_WRITE, 0 };
		add_desc(&r, IND_GPA, 16, VRING_DESC_F_INDIRECT, -1);
		break;
	case H_INDIRECT_LOOP: /* a table whose entries point at each other */
		ind[0] = (struct vring_desc){ HDR_GPA, 16, VRING_DESC_F_NEXT,
					      1 };
		ind[1] = (struct vring_desc){ DATA_GPA, 512,
					      VRING_DESC_F_NEXT, 0 };
		add_desc(&r, IND_GPA, 32, VRING_DESC_F_INDIRECT, -1);
		break;
	case H_AVAIL_JUMP:
		simple_req(&r, 0, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, true);
		r.next_avail = NUM + 4; /* idx moves by more than the ring */
		break;
	case H_READ_AFTER_WRITE:
		add_desc(&r, HDR_GPA, 16, 0, 1);
		add_desc(&r, DATA_GPA, 512, VRING_DESC_F_WRITE, 2);
		add_desc(&r, DATA_GPA + 512, 512, 0, 3);
		add_desc(&r, STATUS_GPA, 1, VRING_DESC_F_WRITE, -1);
		break;
	case H_END:
		break;
	}
	CHECK(vblk_queue_broken_reason(r.q) == NULL);
	submit(&r, head);
	CHECK(vblk_queue_broken(r.q));
	/* the reason stays readable, for a status report */
	CHECK(vblk_queue_broken_reason(r.q) != NULL &&
	      vblk_queue_broken_reason(r.q)[0] != '\0');
	CHECK_EQ(used->idx, 0);
	CHECK_EQ(*(uint8_t *)gp(STATUS_GPA), 0xee);
	/* a broken queue reads nothing more, even a good request */
	r.next_desc = 8;
	submit(&r, simple_req(&r, 1, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512,
			      true));
	CHECK_EQ(status_of(1), 0xee);
	CHECK_EQ(used->idx, 0);
	rig_stop(&r);
}

/* The transport breaks a queue (its guest memory went away): the reason
   is what it gave, and nothing more is served. */
static void test_transport_break(void)
{
	struct rig r;

	rig_start(&r, false, 0);
	vblk_queue_break(r.q, "guest memory shrank");
	CHECK(vblk_queue_broken(r.q));
	CHECK(!strcmp(vblk_queue_broken_reason(r.q), "guest memory shrank"));
	*(uint8_t *)gp(STATUS_GPA) = 0xee;
	submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512,
			      true));
	CHECK_EQ(status_of(0), 0xee);
	CHECK_EQ(used->idx, 0);
	rig_stop(&r);
}

/* Guest memory that faults under the engine's copy (a vhost-user front end
   shrank its memfd; guard.c maps zeros there and counts the fault): the
   request in flight fails with IOERR instead of reporting the zeros as
   data (the transport then breaks the queue). The source's pread stands in for the SIGBUS
   handler, which runs on the thread that touches the memory. */
static atomic_uint faults;
static bool fault_in_read;

static ssize_t faulting_pread(void *opaque, void *buf, size_t len,
			      uint64_t off)
{
	memset(buf, 0x5a, len);
	if (fault_in_read)
		atomic_fetch_add(&faults, 1);
	return (ssize_t)len;
}

static void test_fault_in_flight(void)
{
	static const struct bdev_byte_source src = { faulting_pread, NULL };
	struct bdev *saved = bdev, *cb;
	struct rig r;

	CHECK_EQ(bdev_open_callbacks(&src, NULL, IMG_SIZE, "faulting", NULL,
				     &cb), 0);
	bdev = cb;
	mem.faults = &faults;
	rig_start(&r, true, 0);
	/* no fault: served */
	submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512,
			      true));
	CHECK_EQ(status_of(0), VIRTIO_BLK_S_OK);
	CHECK_EQ(*(uint8_t *)gp(DATA_GPA), 0x5a);
	/* the memory faults while the data moves */
	fault_in_read = true;
	submit(&r, simple_req(&r, 1, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512,
			      true));
	CHECK_EQ(status_of(1), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(used->idx, 2);
	CHECK_EQ(used->ring[1].len, 1); /* no data claimed */
	rig_stop(&r);
	fault_in_read = false;
	mem.faults = NULL;
	bdev = saved;
	CHECK_EQ(bdev_close(cb), 0);
}

/* EVENT_IDX: the device interrupts only when the driver's used_event
   says so, and asks for kicks by writing avail_event. */
static void test_event_idx(void)
{
	struct rig r;
	uint16_t *used_event = &avail->ring[NUM];
	uint16_t *avail_event = (uint16_t *)&used->ring[NUM];

	rig_start(&r, false, 1ull << VIRTIO_RING_F_EVENT_IDX);
	submit(&r, simple_req(&r, 0, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512,
			      true));
	CHECK_EQ(notified, 1); /* the first one always */
	CHECK_EQ(*avail_event, 1);
	*used_event = 5; /* interrupt me when used idx passes 5 */
	r.next_desc = 0;
	for (unsigned i = 1; i < 5; i++) {
		submit(&r, simple_req(&r, i, VIRTIO_BLK_T_IN, 0, DATA_GPA,
				      512, true));
		r.next_desc = 0;
	}
	CHECK_EQ(used->idx, 5);
	CHECK_EQ(notified, 1);
	submit(&r, simple_req(&r, 5, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512,
			      true));
	CHECK_EQ(notified, 2);
	CHECK_EQ(*avail_event, 6);
	rig_stop(&r);
}

/* A record of requests in flight left by an earlier device: the new
   queue serves them again, oldest first, and reads avail after them. */
static void test_inflight_replay(void)
{
	static uint8_t rec[4096] __attribute__((aligned(64)));
	struct vblk_inflight *inf = (struct vblk_inflight *)rec;
	struct vblk_dev_opts o = { .bdev = bdev, .num_queues = 1 };
	struct vblk_ring ring = { .num = NUM, .desc = desc, .avail = avail,
				  .used = used, .inflight = inf };
	struct rig r;
	uint16_t a, b;

	CHECK(vblk_inflight_bytes(NUM) <= sizeof(rec));
	memset(guest, 0, 0x10000);
	memset(rec, 0, sizeof(rec));
	memset(&r, 0, sizeof(r));
	/* the old device took two requests (avail 0 and 1), returned none */
	a = simple_req(&r, 0, VIRTIO_BLK_T_GET_ID, 0, DATA_GPA, 20, true);
	b = simple_req(&r, 1, VIRTIO_BLK_T_IN, 0, DATA_GPA + 512, 512, true);
	avail->ring[0] = a;
	avail->ring[1] = b;
	avail->idx = 2;
	inf->version = 1;
	inf->desc_num = NUM;
	inf->desc[a] = (struct vblk_inflight_desc){ .inflight = 1,
						    .counter = 7 };
	inf->desc[b] = (struct vblk_inflight_desc){ .inflight = 1,
						    .counter = 8 };
	CHECK_EQ(vblk_dev_new(&o, &r.dev), 0);
	CHECK_EQ(vblk_queue_new(r.dev, on_notify, NULL, &r.q), 0);
	ring.last_avail_idx = 0; /* what a front end says after a crash */
	CHECK_EQ(vblk_queue_start(r.q, &mem, &ring), 0);
	r.next_avail = 2;
	vblk_queue_kick(r.q);
	while (vblk_queue_inflight(r.q)) {
		struct pollfd pfd = { vblk_queue_fd(r.q), POLLIN, 0 };

		CHECK_EQ(poll(&pfd, 1, 5000), 1);
		vblk_queue_complete(r.q);
	}
	/* both served once, the GET_ID first; nothing taken twice */
	CHECK_EQ(used->idx, 2);
	CHECK_EQ(used->ring[0].id, a);
	CHECK_EQ(used->ring[1].id, b);
	CHECK_EQ(status_of(0), VIRTIO_BLK_S_OK);
	CHECK_EQ(status_of(1), VIRTIO_BLK_S_OK);
	CHECK_EQ(inf->desc[a].inflight, 0);
	CHECK_EQ(inf->desc[b].inflight, 0);
	CHECK_EQ(inf->used_idx, 2);
	/* a new request is marked while out, and cleared when returned */
	submit(&r, simple_req(&r, 2, VIRTIO_BLK_T_FLUSH, 0, DATA_GPA, 0,
			      false));
	CHECK_EQ(used->idx, 3);
	CHECK(inf->desc[used->ring[2].id].counter > 8);
	CHECK_EQ(inf->desc[used->ring[2].id].inflight, 0);
	CHECK_EQ(vblk_queue_stop(r.q), 3);
	rig_stop(&r);
}

/* Every slot in use at once, twice, with a restart between: the slots
   join as they are first needed (one per request in flight), and a
   restart starts them afresh, so no two requests ever share one. */
static void test_all_slots_in_flight(void)
{
	struct vring_desc *ind = gp(IND_GPA);
	struct vblk_ring ring = { .num = NUM, .desc = desc, .avail = avail,
				  .used = used,
				  .features = 1ull << VIRTIO_RING_F_INDIRECT_DESC };
	struct rig r;

	rig_start(&r, false, ring.features);
	for (unsigned round = 0; round < 2; round++) {
		bool seen[NUM] = { false };

		/* NUM flushes, each an indirect table (header, status) */
		for (unsigned i = 0; i < NUM; i++) {
			ind[2 * i] = (struct vring_desc){ HDR_GPA + 16 * i, 16,
							  VRING_DESC_F_NEXT,
							  1 };
			put_hdr(i, VIRTIO_BLK_T_FLUSH, 0);
			ind[2 * i + 1] = (struct vring_desc){
				STATUS_GPA + i, 1, VRING_DESC_F_WRITE, 0 };
			*(uint8_t *)gp(STATUS_GPA + i) = 0xee;
			desc[i] = (struct vring_desc){
				IND_GPA + 32 * i, 32, VRING_DESC_F_INDIRECT, 0 };
			avail->ring[(r.next_avail + i) % NUM] = (uint16_t)i;
		}
		r.next_avail += NUM;
		__atomic_store_n(&avail->idx, r.next_avail, __ATOMIC_RELEASE);
		vblk_queue_kick(r.q);
		while (vblk_queue_inflight(r.q)) {
			struct pollfd pfd = { vblk_queue_fd(r.q), POLLIN, 0 };

			CHECK_EQ(poll(&pfd, 1, 5000), 1);
			vblk_queue_complete(r.q);
		}
		CHECK_EQ(used->idx, (uint16_t)(NUM * (round + 1)));
		for (unsigned i = 0; i < NUM; i++) {
			unsigned id = used->ring[i].id;

			CHECK(id < NUM && !seen[id]);
			seen[id] = true;
			CHECK_EQ(status_of(i), VIRTIO_BLK_S_OK);
		}
		/* as a reset and a new DRIVER_OK do */
		CHECK_EQ(vblk_queue_stop(r.q), r.next_avail);
		ring.last_avail_idx = r.next_avail;
		CHECK_EQ(vblk_queue_start(r.q, &mem, &ring), 0);
	}
	rig_stop(&r);
}

static void test_config(void)
{
	struct vblk_dev_opts o = { .bdev = bdev, .num_queues = 4 };
	struct virtio_blk_config c;
	struct vblk_dev *d;
	uint8_t zero = 0;

	CHECK_EQ(vblk_dev_new(&o, &d), 0);
	vblk_dev_config(d, &c);
	CHECK_EQ(c.capacity, IMG_SIZE / 512);
	CHECK_EQ(c.num_queues, 4);
	CHECK_EQ(c.blk_size, 512);
	CHECK_EQ(c.seg_max, VBLK_SEG_MAX);
	CHECK_EQ(c.max_discard_seg, 1);
	CHECK_EQ(c.wce, 1);
	CHECK_EQ(vblk_dev_set_config(d, offsetof(struct virtio_blk_config,
						 wce), &zero, 1), 0);
	vblk_dev_config(d, &c);
	CHECK_EQ(c.wce, 0);
	CHECK_EQ(vblk_dev_set_config(d, 0, &zero, 1), -EINVAL);
	CHECK_EQ(vblk_dev_set_config(d, offsetof(struct virtio_blk_config,
						 wce), &zero, 2), -EINVAL);
	CHECK(!(vblk_dev_features(d) & (1ull << VIRTIO_BLK_F_RO)));
	vblk_dev_free(d);
}

int main(void)
{
	char path[] = "/tmp/test_virtio_blk_XXXXXX";
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR, .format = "raw" };
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	CHECK(ftruncate(fd, IMG_SIZE) == 0);
	close(fd);
	CHECK_EQ(bdev_open(path, &oo, &bdev), 0);
	setup_memory();
	test_mem_translation();
	test_config();
	test_write_read_roundtrip();
	test_discard_write_zeroes();
	test_bad_requests_get_ioerr();
	test_stats();
	for (int h = 0; h < H_END; h++)
		test_hostile((enum hostile)h);
	test_transport_break();
	test_fault_in_flight();
	test_event_idx();
	test_inflight_replay();
	test_all_slots_in_flight();
	CHECK_EQ(bdev_close(bdev), 0);
	unlink(path);
	printf("test_virtio_blk: ok\n");
	return 0;
}
