/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vu_client.c - a small vhost-user-blk front end for benchmarks: maps a
 * memfd as guest memory, sets up one virtqueue on a backend (pvblk,
 * qemu-storage-daemon), keeps DEPTH requests in flight for SECONDS, and
 * prints requests per second and the backend's CPU time per request
 * (utime + stime of PID from /proc). rw alternates reads and writes.
 * With LATFILE, each completed request also adds a line "T L" there: T the
 * CLOCK_MONOTONIC second it completed at, L its latency in microseconds
 * (from its kick to the completion seen), for latency percentiles by time.
 *
 *   vu_client SOCKET PID read|write|rw rand|seq BLOCK DEPTH SECONDS [LATFILE]
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "virtio_blk.h"

#define NUM 256
#define MEM_SIZE (80u << 20)
#define DATA_OFF (1u << 20)

struct hdr {
	uint32_t request, flags, size;
} __attribute__((packed));

static int sock;
static uint8_t *mem;

static __attribute__((noreturn)) void die(const char *what)
{
	fprintf(stderr, "vu_client: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void send_msg(uint32_t req, const void *p, uint32_t len, int fd)
{
	char buf[512], cbuf[CMSG_SPACE(sizeof(int))];
	struct hdr h = { req, 1, len };
	struct iovec iov = { buf, sizeof(h) + len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memcpy(buf, &h, sizeof(h));
	if (len) /* p may be NULL for a message without a body */
		memcpy(buf + sizeof(h), p, len);
	if (fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	if (sendmsg(sock, &mh, 0) < 0)
		die("sendmsg");
}

static void recv_reply(void *p, uint32_t len)
{
	struct hdr h;

	if (read(sock, &h, sizeof(h)) != sizeof(h) || h.size > len ||
	    read(sock, p, h.size) != (ssize_t)h.size) {
		fprintf(stderr, "vu_client: bad reply\n");
		exit(1);
	}
}

static uint64_t get_u64(uint32_t req)
{
	uint64_t v = 0;

	send_msg(req, NULL, 0, -1);
	recv_reply(&v, sizeof(v));
	return v;
}

static double cpu_seconds(int pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f))
		die(path);
	fclose(f);
	p = strrchr(buf, ')');
	/* fields after ')': state(3) ... utime(14) stime(15) */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
			 "%lu %lu", &ut, &st) != 2)
		die("parse stat");
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng = 88172645463325252ull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint64_t features, capacity, pos = 0, done = 0;
	uint32_t block, depth, seconds;
	uint16_t last_used = 0, avail_idx = 0;
	int pid, memfd, kick, call;
	bool write_req, rand_req, mixed;
	double submitted[64];
	FILE *lat = NULL;
	double t0, c0, t1, c1;
	struct {
		uint32_t offset, size, flags;
		uint8_t cfg[60];
	} cfg = { 0, 60, 0, { 0 } };

	if (argc != 8 && argc != 9) {
		fprintf(stderr, "usage: vu_client SOCKET PID read|write|rw "
			"rand|seq BLOCK DEPTH SECONDS [LATFILE]\n");
		return 2;
	}
	pid = atoi(argv[2]);
	mixed = !strcmp(argv[3], "rw");
	write_req = !strcmp(argv[3], "write") || mixed;
	if (argc == 9 && !(lat = fopen(argv[8], "w")))
		die(argv[8]);
	rand_req = !strcmp(argv[4], "rand");
	block = (uint32_t)atoi(argv[5]);
	depth = (uint32_t)atoi(argv[6]);
	seconds = (uint32_t)atoi(argv[7]);
	if (!block || block % 512 || block > (1u << 20) || !depth ||
	    depth > 64)
		return 2;

	sock = socket(AF_UNIX, SOCK_STREAM, 0);
	strncpy(sa.sun_path, argv[1], sizeof(sa.sun_path) - 1);
	if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die(argv[1]);
	memfd = memfd_create("guest", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, MEM_SIZE) < 0)
		die("memfd");
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd,
		   0);
	if (mem == MAP_FAILED)
		die("mmap");
	desc = (void *)mem;
	avail = (void *)(mem + 0x1000);
	used = (void *)(mem + 0x2000);

	send_msg(3, NULL, 0, -1); /* SET_OWNER */
	features = get_u64(1);
	features &= 1ull << VIRTIO_F_VERSION_1 | 1ull << 30;
	send_msg(2, &features, 8, -1);
	if (features & (1ull << 30)) {
		uint64_t pf = get_u64(15) & (1ull << 9); /* CONFIG */

		send_msg(16, &pf, 8, -1);
		if (pf) {
			send_msg(24, &cfg, sizeof(cfg), -1);
			recv_reply(&cfg, sizeof(cfg));
		}
	}
	memcpy(&capacity, cfg.cfg, 8);
	if (!capacity) {
		fprintf(stderr, "vu_client: backend reported no capacity\n");
		return 1;
	}
	{
		struct {
			uint32_t n, pad;
			uint64_t gpa, size, uva, off;
		} mt = { 1, 0, 0, MEM_SIZE, (uintptr_t)mem, 0 };
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} addr = { 0, 0, (uintptr_t)desc, (uintptr_t)used,
			   (uintptr_t)avail, 0 };
		uint32_t st[2] = { 0, NUM };
		uint64_t idx0 = 0;

		send_msg(5, &mt, sizeof(mt), memfd);
		send_msg(8, st, 8, -1);
		st[1] = 0;
		send_msg(10, st, 8, -1);
		send_msg(9, &addr, sizeof(addr), -1);
		kick = eventfd(0, EFD_CLOEXEC);
		call = eventfd(0, EFD_CLOEXEC);
		send_msg(13, &idx0, 8, call);
		send_msg(12, &idx0, 8, kick);
		st[1] = 1;
		send_msg(18, st, 8, -1); /* enable */
	}

	/* slot i: descriptors 3i..3i+2, header and status at 0x4000 + 32i,
	   data at DATA_OFF + i * 1 MiB */
	for (uint32_t i = 0; i < depth; i++) {
		uint64_t h = 0x4000 + 32 * i;

		desc[3 * i] = (struct vring_desc){ h, 16, VRING_DESC_F_NEXT,
						   (uint16_t)(3 * i + 1) };
		desc[3 * i + 1] = (struct vring_desc){
			DATA_OFF + (uint64_t)i * (1u << 20), block,
			(uint16_t)(VRING_DESC_F_NEXT |
				   (write_req ? 0 : VRING_DESC_F_WRITE)),
			(uint16_t)(3 * i + 2) };
		desc[3 * i + 2] = (struct vring_desc){ h + 16, 1,
						       VRING_DESC_F_WRITE, 0 };
		memset(mem + DATA_OFF + (uint64_t)i * (1u << 20), 0x5a, block);
	}
	uint64_t blocks = capacity * 512 / block;

#define QUEUE(slot)                                                       \
	do {                                                              \
		uint32_t *h = (uint32_t *)(mem + 0x4000 + 32 * (slot));   \
		uint64_t b = rand_req ? next_rand() % blocks : pos++ % blocks; \
		uint64_t sector = b * (block / 512);                      \
		bool w = mixed ? (avail_idx & 1) : write_req;             \
		desc[3 * (slot) + 1].flags = (uint16_t)(VRING_DESC_F_NEXT | \
			(w ? 0 : VRING_DESC_F_WRITE));                    \
		h[0] = w ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;           \
		submitted[slot] = now();                                  \
		h[1] = 0;                                                 \
		memcpy(&h[2], &sector, 8);                                \
		avail->ring[avail_idx % NUM] = (uint16_t)(3 * (slot));    \
		avail_idx++;                                              \
	} while (0)

	t0 = now();
	c0 = cpu_seconds(pid);
	for (uint32_t i = 0; i < depth; i++)
		QUEUE(i);
	__atomic_store_n(&avail->idx, avail_idx, __ATOMIC_RELEASE);
	{
		uint64_t one = 1;

		if (write(kick, &one, 8) != 8)
			die("kick");
	}
	for (;;) {
		struct pollfd pfd = { call, POLLIN, 0 };
		uint64_t n, one = 1;
		uint16_t u;
		unsigned got = 0;

		if (poll(&pfd, 1, 10000) != 1) {
			fprintf(stderr, "vu_client: no completion in 10 s\n");
			return 1;
		}
		if (read(call, &n, 8) != 8)
			die("call");
		u = __atomic_load_n(&used->idx, __ATOMIC_ACQUIRE);
		bool more = now() - t0 < seconds;
		while (last_used != u) {
			struct vring_used_elem e = used->ring[last_used % NUM];
			uint8_t status = mem[0x4000 + 32 * (e.id / 3) + 16];

			if (status != VIRTIO_BLK_S_OK) {
				fprintf(stderr, "vu_client: request failed "
					"(status %u)\n", status);
				return 1;
			}
			last_used++;
			done++;
			got++;
			if (lat) {
				double t = now();

				fprintf(lat, "%.6f %.1f\n", t,
					(t - submitted[e.id / 3]) * 1e6);
			}
			if (more)
				QUEUE(e.id / 3);
		}
		if (more && got) {
			__atomic_store_n(&avail->idx, avail_idx,
					 __ATOMIC_RELEASE);
			if (write(kick, &one, 8) != 8)
				die("kick");
		}
		if (!more && last_used == avail_idx)
			break;
	}
	t1 = now();
	c1 = cpu_seconds(pid);
	if (lat && fclose(lat) != 0)
		die(argv[8]);
	printf("iops %.0f mib_s %.1f cpu_us_per_req %.2f requests %llu\n",
	       (double)done / (t1 - t0),
	       (double)done * block / (1 << 20) / (t1 - t0),
	       (c1 - c0) * 1e6 / (double)done, (unsigned long long)done);
	{
		uint32_t st[2] = { 0, 0 };

		send_msg(11, st, 8, -1); /* GET_VRING_BASE: stop the ring */
		recv_reply(st, sizeof(st));
	}
	close(sock);
	return 0;
}
