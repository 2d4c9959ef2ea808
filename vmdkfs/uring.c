/* SPDX-License-Identifier: Apache-2.0 */
/*
 * uring.c - FUSE over io_uring (-o io_uring) for the user's session.
 *
 * Over /dev/fuse each request costs the daemon a read() and a write(),
 * and the thread that wakes for it runs on whichever CPU the scheduler
 * picks. Over io_uring the kernel queues a request on the queue of the
 * CPU the caller runs on; here one thread per queue, pinned to that CPU,
 * owns an io_uring and a few ring entries (header + payload buffers).
 * It commits a reply and fetches the next request in one command.
 *
 * libfuse 3.14 knows nothing of this. Its custom io hooks carry the
 * /dev/fuse traffic unchanged (INIT, interrupts, and every request until
 * the ring is ready still go there, served by loop.c), and let us
 *  - see the kernel's INIT request (does it offer FUSE_OVER_IO_URING?),
 *  - add FUSE_OVER_IO_URING to libfuse's INIT reply, and
 *  - catch the reply of a request that came on a ring entry: the ring
 *    thread rebuilds the /dev/fuse layout of the request in front of the
 *    entry's payload buffer, has libfuse process it, and the reply that
 *    libfuse writes (or splices through its pipe) on that thread is
 *    copied into the entry and committed.
 * The hooks are process-wide (libfuse passes them the session's user
 * data, which the high-level API owns), so one session per process uses
 * the ring.
 */
#include "vmdkfs.h"
#include "fuse_uring_abi.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <unistd.h>

/* Ring entries per CPU queue. One thread serves a queue, one request at a
 * time; a second entry lets the kernel hand over the next request while
 * the first is served. */
#define URING_DEPTH 2

/* Room in front of an entry's payload for fuse_in_header + op header. */
#define URING_HEADROOM (sizeof(struct fuse_in_header) + \
			VMDKFS_FUSE_URING_OP_IN_OUT_SZ)

#define URING_STOP_TAG 1ull /* user_data of the stop eventfd's poll */

enum uring_state { URING_PENDING, URING_GO, URING_ABANDON };

struct uring_ent {
	struct uring_queue *q;
	struct vmdkfs_fuse_uring_req_header hdr;
	uint8_t *buf;     /* URING_HEADROOM + payload */
	uint8_t *payload;
	struct iovec iov[2];
	bool live;        /* a command of it is with the kernel */
	bool replied;
};

struct uring_queue {
	struct vmdkfs_uring *u;
	unsigned qid;
	pthread_t thread;
	bool started;
	struct io_uring ring;
	bool ring_ok;
	int stop_fd;
	uint64_t stop_buf;
	int setup_err;
	struct uring_ent ent[URING_DEPTH];
};

struct vmdkfs_uring {
	struct fuse_session *se;
	int fd;
	enum vmdkfs_uring_mode mode;
	unsigned nq;
	size_t payload_sz;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum uring_state state;
	unsigned setups_done;
	atomic_uint ready;        /* queues with their entries registered */
	atomic_bool reg_failed;
	uint64_t init_unique;     /* of the kernel's INIT request, 0 = none */
	bool kernel_offers;
	struct uring_queue q[];
};

/* The session using the ring (see the top of the file). */
static struct vmdkfs_uring *active;
/* The ring entry whose request this thread is serving. */
static _Thread_local struct uring_ent *cur_ent;

/* Size of the first argument the kernel puts in op_in for each opcode
 * (its in_args[0]; names and data go to the payload), at the protocol
 * libfuse 3.14 speaks (7.38). */
static size_t op_in_size(uint32_t opcode)
{
	switch (opcode) {
	case FUSE_GETATTR:     return sizeof(struct fuse_getattr_in);
	case FUSE_SETATTR:     return sizeof(struct fuse_setattr_in);
	case FUSE_MKNOD:       return sizeof(struct fuse_mknod_in);
	case FUSE_MKDIR:       return sizeof(struct fuse_mkdir_in);
	case FUSE_RENAME:      return sizeof(struct fuse_rename_in);
	case FUSE_RENAME2:     return sizeof(struct fuse_rename2_in);
	case FUSE_LINK:        return sizeof(struct fuse_link_in);
	case FUSE_OPEN:
	case FUSE_OPENDIR:     return sizeof(struct fuse_open_in);
	case FUSE_READ:
	case FUSE_READDIR:
	case FUSE_READDIRPLUS: return sizeof(struct fuse_read_in);
	case FUSE_WRITE:       return sizeof(struct fuse_write_in);
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:  return sizeof(struct fuse_release_in);
	case FUSE_FSYNC:
	case FUSE_FSYNCDIR:    return sizeof(struct fuse_fsync_in);
	case FUSE_SETXATTR:    return sizeof(struct fuse_setxattr_in) - 8;
	case FUSE_GETXATTR:
	case FUSE_LISTXATTR:   return sizeof(struct fuse_getxattr_in);
	case FUSE_FLUSH:       return sizeof(struct fuse_flush_in);
	case FUSE_GETLK:
	case FUSE_SETLK:
	case FUSE_SETLKW:      return sizeof(struct fuse_lk_in);
	case FUSE_ACCESS:      return sizeof(struct fuse_access_in);
	case FUSE_CREATE:      return sizeof(struct fuse_create_in);
	case FUSE_BMAP:        return sizeof(struct fuse_bmap_in);
	case FUSE_IOCTL:       return sizeof(struct fuse_ioctl_in);
	case FUSE_POLL:        return sizeof(struct fuse_poll_in);
	case FUSE_FALLOCATE:   return sizeof(struct fuse_fallocate_in);
	case FUSE_LSEEK:       return sizeof(struct fuse_lseek_in);
	case FUSE_COPY_FILE_RANGE: return sizeof(struct fuse_copy_file_range_in);
	default:               return 0; /* LOOKUP, UNLINK, STATFS, ... */
	}
}
_Static_assert(sizeof(struct fuse_setxattr_in) == 16,
	       "fuse_setxattr_in with the 7.33 extension (8 without it)");

/* Queue ids are CPU numbers: the kernel makes one queue per possible CPU. */
static unsigned possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
	unsigned lo = 0, hi = 0;
	int n = 0;

	if (f) {
		n = fscanf(f, "%u-%u", &lo, &hi);
		fclose(f);
	}
	if (n == 2)
		return hi + 1;
	if (n == 1)
		return lo + 1;
	n = get_nprocs_conf();
	return n > 0 ? (unsigned)n : 1;
}

/* Copies the reply in iov into the current ring entry: the out header to
 * in_out, the rest to the payload. */
static ssize_t capture_reply(struct uring_ent *e, const struct iovec *iov,
			     int count)
{
	struct fuse_out_header *oh = (struct fuse_out_header *)e->hdr.in_out;
	size_t total = 0, at = 0, cap = e->q->u->payload_sz;
	int i;

	for (i = 0; i < count; i++)
		total += iov[i].iov_len;
	if (total < sizeof(*oh))
		return -1;
	for (i = 0; i < count; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t n = iov[i].iov_len;

		while (n > 0 && at < sizeof(*oh)) {
			size_t k = sizeof(*oh) - at < n ? sizeof(*oh) - at : n;

			memcpy(e->hdr.in_out + at, p, k);
			at += k, p += k, n -= k;
		}
		if (n > 0) {
			if (at - sizeof(*oh) + n > cap)
				break;
			memcpy(e->payload + at - sizeof(*oh), p, n);
			at += n;
		}
	}
	if (at != total) {
		vmdkfs_log("FUSE over io_uring: a reply of %zu bytes does not "
			   "fit the ring entry's %zu", total, cap);
		oh->error = -EIO;
		at = sizeof(*oh);
	}
	oh->len = (uint32_t)at;
	e->hdr.ring_ent_in_out.payload_sz = (uint32_t)(at - sizeof(*oh));
	e->replied = true;
	return (ssize_t)total;
}

/* libfuse's read of /dev/fuse; notes what the kernel's INIT offers. */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct vmdkfs_uring *u = active;
	ssize_t n = read(fd, buf, len);
	const struct fuse_in_header *in = buf;

	(void)userdata;
	if (u && n >= (ssize_t)(sizeof(*in) + sizeof(struct fuse_init_in)) &&
	    in->opcode == FUSE_INIT) {
		const struct fuse_init_in *arg = (const void *)(in + 1);

		u->init_unique = in->unique;
		u->kernel_offers = (arg->flags & VMDKFS_FUSE_INIT_EXT) &&
				   (arg->flags2 & VMDKFS_FUSE_OVER_IO_URING_FLAGS2);
	}
	return n;
}

static void set_state(struct vmdkfs_uring *u, enum uring_state s)
{
	pthread_mutex_lock(&u->lock);
	u->state = s;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);
}

/* libfuse's INIT reply: asks for FUSE_OVER_IO_URING when the kernel
 * offers it, and starts the ring threads once the kernel has it. */
static ssize_t send_init_reply(struct vmdkfs_uring *u, int fd,
			       struct iovec *iov, int count)
{
	struct fuse_init_out out;
	struct iovec v[2];
	ssize_t n;
	size_t max;

	if (!u->kernel_offers || count != 2 || iov[1].iov_len > sizeof(out) ||
	    iov[1].iov_len < offsetof(struct fuse_init_out, unused)) {
		if (u->mode == VMDKFS_URING_ON)
			vmdkfs_log("FUSE over io_uring: the kernel does not "
				   "offer it (is /sys/module/fuse/parameters/"
				   "enable_uring N, or the kernel older than "
				   "6.14?); serving requests through /dev/fuse");
		set_state(u, URING_ABANDON);
		return writev(fd, iov, count);
	}
	memset(&out, 0, sizeof(out));
	memcpy(&out, iov[1].iov_base, iov[1].iov_len);
	out.flags |= VMDKFS_FUSE_INIT_EXT;
	out.flags2 |= VMDKFS_FUSE_OVER_IO_URING_FLAGS2;
	/* the kernel's largest payload: max(8 KiB, max_write, max_pages) */
	max = out.max_write;
	if ((size_t)out.max_pages * 4096 > max)
		max = (size_t)out.max_pages * 4096;
	if (max < 8192)
		max = 8192;
	u->payload_sz = max;
	v[0] = iov[0];
	v[1].iov_base = &out;
	v[1].iov_len = iov[1].iov_len;
	n = writev(fd, v, 2);
	set_state(u, n < 0 ? URING_ABANDON : URING_GO);
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct vmdkfs_uring *u = active;
	const struct fuse_out_header *oh = iov[0].iov_base;

	(void)userdata;
	if (cur_ent)
		return capture_reply(cur_ent, iov, count);
	if (u && u->init_unique && count > 0 &&
	    iov[0].iov_len >= sizeof(*oh) && oh->unique == u->init_unique &&
	    u->state == URING_PENDING) {
		u->init_unique = 0;
		return send_init_reply(u, fd, iov, count);
	}
	return writev(fd, iov, count);
}

/* Reads len bytes of a reply libfuse put in its pipe into cur_ent. */
static ssize_t capture_pipe(struct uring_ent *e, int pipe_fd, size_t len)
{
	struct fuse_out_header *oh = (struct fuse_out_header *)e->hdr.in_out;
	size_t got = 0;
	ssize_t n;

	if (len < sizeof(*oh) || len - sizeof(*oh) > e->q->u->payload_sz) {
		errno = EINVAL;
		return -1;
	}
	while (got < len) {
		if (got < sizeof(*oh))
			n = read(pipe_fd, e->hdr.in_out + got, sizeof(*oh) - got);
		else
			n = read(pipe_fd, e->payload + got - sizeof(*oh),
				 len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		got += (size_t)n;
	}
	oh->len = (uint32_t)len;
	e->hdr.ring_ent_in_out.payload_sz = (uint32_t)(len - sizeof(*oh));
	e->replied = true;
	return (ssize_t)len;
}

static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout,
			      size_t len, unsigned int flags, void *userdata)
{
	(void)userdata;
	if (cur_ent)
		return capture_pipe(cur_ent, fdin, len);
	return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t io_splice_receive(int fdin, off_t *offin, int fdout,
				 off_t *offout, size_t len, unsigned int flags,
				 void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static const struct fuse_custom_io uring_io = {
	.writev = io_writev,
	.read = io_read,
	.splice_receive = io_splice_receive,
	.splice_send = io_splice_send,
};

/* Queues a REGISTER or COMMIT_AND_FETCH of e. */
static int queue_cmd(struct uring_ent *e, uint32_t op, uint64_t commit_id)
{
	struct uring_queue *q = e->q;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
	struct vmdkfs_fuse_uring_cmd_req *req;

	if (!sqe)
		return -EBUSY;
	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->u->fd;
	sqe->cmd_op = op;
	sqe->addr = (uint64_t)(uintptr_t)e->iov;
	sqe->len = 2;
	io_uring_sqe_set_data(sqe, e);
	req = (struct vmdkfs_fuse_uring_cmd_req *)sqe->cmd;
	req->commit_id = commit_id;
	req->qid = (uint16_t)q->qid;
	e->live = true;
	return 0;
}

static void queue_stop_poll(struct uring_queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	if (!sqe)
		return;
	memset(sqe, 0, 128);
	io_uring_prep_poll_add(sqe, q->stop_fd, POLLIN);
	sqe->user_data = URING_STOP_TAG;
}

/* Serves the request the kernel put in e and queues its commit. */
static void serve(struct uring_ent *e)
{
	struct vmdkfs_uring *u = e->q->u;
	struct fuse_in_header *ih = (struct fuse_in_header *)e->hdr.in_out;
	struct fuse_out_header *oh = (struct fuse_out_header *)e->hdr.in_out;
	uint64_t commit_id = e->hdr.ring_ent_in_out.commit_id;
	uint64_t unique = ih->unique;
	size_t op = op_in_size(ih->opcode);
	size_t payload = e->hdr.ring_ent_in_out.payload_sz;
	struct fuse_in_header *in;
	struct fuse_buf fb = { 0 };

	e->replied = false;
	if (payload <= u->payload_sz) {
		/* the /dev/fuse layout, ending where the payload starts */
		in = (struct fuse_in_header *)(e->payload - op - sizeof(*in));
		memcpy(in, ih, sizeof(*in));
		memcpy(in + 1, e->hdr.op_in, op);
		in->len = (uint32_t)(sizeof(*in) + op + payload);
		fb.mem = in;
		fb.size = in->len;
		cur_ent = e;
		fuse_session_process_buf(u->se, &fb);
		cur_ent = NULL;
	}
	if (!e->replied) {
		/* libfuse replies to everything the ring carries (forgets
		   stay on /dev/fuse); an oversized request lands here */
		memset(oh, 0, sizeof(*oh));
		oh->unique = unique;
		oh->error = -EIO;
		oh->len = sizeof(*oh);
		e->hdr.ring_ent_in_out.payload_sz = 0;
	}
	queue_cmd(e, VMDKFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH, commit_id);
}

static int ents_alloc(struct uring_queue *q)
{
	unsigned i;

	for (i = 0; i < URING_DEPTH; i++) {
		struct uring_ent *e = &q->ent[i];

		e->q = q;
		e->buf = malloc(URING_HEADROOM + q->u->payload_sz);
		if (!e->buf)
			return -ENOMEM;
		e->payload = e->buf + URING_HEADROOM;
		e->iov[0].iov_base = &e->hdr;
		e->iov[0].iov_len = sizeof(e->hdr);
		e->iov[1].iov_base = e->payload;
		e->iov[1].iov_len = q->u->payload_sz;
	}
	return 0;
}

/* Counts q as ready if the kernel took all its REGISTERs: a refused one
 * completes at once, a taken one only when a request arrives. */
static void note_registered(struct uring_queue *q)
{
	struct vmdkfs_uring *u = q->u;

	if (io_uring_cq_ready(&q->ring) == 0 &&
	    atomic_fetch_add(&u->ready, 1) + 1 == u->nq &&
	    u->mode == VMDKFS_URING_ON)
		vmdkfs_log("FUSE over io_uring: serving requests on %u CPU "
			   "queues", u->nq);
}

/* Runs the queue's ring until stopped or the connection ends. */
static void queue_run(struct uring_queue *q)
{
	struct vmdkfs_uring *u = q->u;
	unsigned i, live = 0;
	bool stop = false;
	int ret;

	for (i = 0; i < URING_DEPTH; i++)
		if (queue_cmd(&q->ent[i], VMDKFS_FUSE_IO_URING_CMD_REGISTER, 0) == 0)
			live++;
	queue_stop_poll(q);
	ret = io_uring_submit(&q->ring);
	if (ret < 0) {
		vmdkfs_log("FUSE over io_uring: queue %u: submitting its "
			   "ring entries: %s", q->qid, strerror(-ret));
		return;
	}
	note_registered(q);
	while (!stop && live > 0) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;

		ret = io_uring_submit_and_wait(&q->ring, 1);
		if (ret < 0 && ret != -EINTR) {
			vmdkfs_log("FUSE over io_uring: queue %u: waiting: %s",
				   q->qid, strerror(-ret));
			break;
		}
		io_uring_for_each_cqe(&q->ring, head, cqe) {
			struct uring_ent *e;

			seen++;
			if (cqe->user_data == URING_STOP_TAG) {
				stop = true;
				continue;
			}
			e = io_uring_cqe_get_data(cqe);
			e->live = false;
			if (cqe->res < 0) {
				live--;
				if (cqe->res != -ENOTCONN &&
				    cqe->res != -ECANCELED &&
				    cqe->res != -ENODEV &&
				    !atomic_exchange(&u->reg_failed, true))
					vmdkfs_log("FUSE over io_uring: queue "
						   "%u: the kernel refused a "
						   "ring entry: %s; serving "
						   "requests through /dev/fuse",
						   q->qid, strerror(-cqe->res));
				continue;
			}
			if (!stop)
				serve(e);
		}
		io_uring_cq_advance(&q->ring, seen);
	}
}

static void *queue_main(void *arg)
{
	struct uring_queue *q = arg;
	struct vmdkfs_uring *u = q->u;
	struct io_uring_params p;
	cpu_set_t set;
	int ret;

	pthread_setname_np(pthread_self(), "vmdkfs-uring");
	CPU_ZERO(&set);
	CPU_SET(q->qid, &set);
	/* a possible but offline CPU: its queue is served from anywhere */
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER |
		  IORING_SETUP_DEFER_TASKRUN;
	ret = io_uring_queue_init_params(4 * URING_DEPTH, &q->ring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_SQE128;
		ret = io_uring_queue_init_params(4 * URING_DEPTH, &q->ring, &p);
	}
	q->ring_ok = ret == 0;
	q->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (ret == 0 && q->stop_fd < 0)
		ret = -errno;
	pthread_mutex_lock(&u->lock);
	q->setup_err = ret;
	u->setups_done++;
	pthread_cond_broadcast(&u->cond);
	while (u->state == URING_PENDING)
		pthread_cond_wait(&u->cond, &u->lock);
	pthread_mutex_unlock(&u->lock);
	if (ret < 0 || u->state != URING_GO)
		return NULL;
	if (ents_alloc(q) < 0) {
		vmdkfs_log("FUSE over io_uring: queue %u: no memory for its "
			   "ring entries", q->qid);
		return NULL;
	}
	queue_run(q);
	/* the owner exits its ring: that cancels the commands still queued,
	   so the kernel lets go of the entries before they are freed */
	io_uring_queue_exit(&q->ring);
	q->ring_ok = false;
	return NULL;
}

/* Starts queue threads; lock held. Exit signals stay with the main
 * thread, as in loop.c. */
static int queues_start(struct vmdkfs_uring *u)
{
	sigset_t block, old;
	unsigned i;
	int ret = 0;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGQUIT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (i = 0; i < u->nq && ret == 0; i++) {
		u->q[i].u = u;
		u->q[i].qid = i;
		u->q[i].stop_fd = -1;
		ret = -pthread_create(&u->q[i].thread, NULL, queue_main,
				      &u->q[i]);
		u->q[i].started = ret == 0;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ret;
}

int vmdkfs_uring_start(struct fuse_session *se, enum vmdkfs_uring_mode mode,
		       struct vmdkfs_uring **out)
{
	struct vmdkfs_uring *u;
	unsigned nq = possible_cpus(), i, started = 0;
	int ret;

	*out = NULL;
	if (mode == VMDKFS_URING_OFF)
		return 0;
	if (active) {
		vmdkfs_log("FUSE over io_uring: already used by another "
			   "session; serving this one through /dev/fuse");
		return 0;
	}
	u = calloc(1, sizeof(*u) + nq * sizeof(u->q[0]));
	if (!u)
		return -ENOMEM;
	u->se = se;
	u->fd = fuse_session_fd(se);
	u->mode = mode;
	u->nq = nq;
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	atomic_init(&u->ready, 0);
	atomic_init(&u->reg_failed, false);

	pthread_mutex_lock(&u->lock);
	ret = queues_start(u);
	for (i = 0; i < nq; i++)
		started += u->q[i].started;
	while (u->setups_done < started)
		pthread_cond_wait(&u->cond, &u->lock);
	pthread_mutex_unlock(&u->lock);
	for (i = 0; i < nq && ret == 0; i++)
		ret = u->q[i].setup_err;
	if (ret < 0) {
		vmdkfs_log("FUSE over io_uring: cannot set up an io_uring "
			   "with 128-byte entries: %s; serving requests "
			   "through /dev/fuse", strerror(-ret));
		goto err_stop;
	}
	active = u;
	ret = fuse_session_custom_io(se, &uring_io, u->fd);
	if (ret < 0) {
		active = NULL;
		vmdkfs_log("FUSE over io_uring: libfuse refused custom I/O: "
			   "%s; serving requests through /dev/fuse",
			   strerror(-ret));
		goto err_stop;
	}
	*out = u;
	return 0;

err_stop:
	vmdkfs_uring_stop(u);
	return 0;
}

void vmdkfs_uring_stop(struct vmdkfs_uring *u)
{
	unsigned i, j;

	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	if (u->state == URING_PENDING)
		u->state = URING_ABANDON;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);
	for (i = 0; i < u->nq; i++) {
		struct uring_queue *q = &u->q[i];
		uint64_t one = 1;

		if (!q->started)
			continue;
		if (q->stop_fd >= 0 &&
		    write(q->stop_fd, &one, sizeof(one)) != sizeof(one))
			vmdkfs_log("FUSE over io_uring: cannot stop queue %u: "
				   "%s", i, strerror(errno));
		pthread_join(q->thread, NULL);
		if (q->ring_ok)
			io_uring_queue_exit(&q->ring);
		if (q->stop_fd >= 0)
			close(q->stop_fd);
		for (j = 0; j < URING_DEPTH; j++)
			free(q->ent[j].buf);
	}
	if (active == u)
		active = NULL;
	pthread_cond_destroy(&u->cond);
	pthread_mutex_destroy(&u->lock);
	free(u);
}
