/* SPDX-License-Identifier: Apache-2.0 */
/* queue.c - one thread per virtqueue: it waits on the kick eventfd, the
   engine queue's eventfd and a stop eventfd, and nothing else. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vhost_user.h"

/* The host address of [uva, uva + len) of the front end's memory. */
static void *uva_to_hva(const struct vu_dev *d, uint64_t uva, uint64_t len)
{
	for (unsigned i = 0; i < d->nregions; i++) {
		const struct vu_region *r = &d->regions[i];

		if (uva >= r->uva && uva - r->uva < r->size &&
		    len <= r->size - (uva - r->uva))
			return r->hva + (uva - r->uva);
	}
	return NULL;
}

static void notify(void *opaque)
{
	struct vu_vring *v = opaque;
	uint64_t one = 1;

	if (v->call_fd >= 0 && write(v->call_fd, &one, sizeof(one)) < 0 &&
	    errno != EAGAIN)
		fprintf(stderr, "pvblk: vhost-user: queue %u: cannot signal "
			"the call fd: %s\n", v->index, strerror(errno));
}

static void drain(int fd)
{
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		fprintf(stderr, "pvblk: vhost-user: eventfd read: %s\n",
			strerror(errno));
}

/* Break q when its guest memory faulted (guard.c), then publish why q
   broke for vu_vring_broken, once. */
static void note_broken(struct vu_vring *v, struct vblk_queue *q)
{
	struct vu_dev *d = v->dev;
	const char *why;

	if (atomic_load(&d->mem_faults) != atomic_load(&d->mem_faults_base) &&
	    !vblk_queue_broken(q)) {
		char buf[128];

		snprintf(buf, sizeof(buf), "the front end shrank the file "
			 "behind guest memory (SIGBUS at byte %llu of a "
			 "mapping; it reads as zeros now)",
			 (unsigned long long)atomic_load(&d->mem_fault_off));
		vblk_queue_break(q, buf);
	}
	why = vblk_queue_broken_reason(q);
	if (!why || v->broken[0])
		return;
	pthread_mutex_lock(&v->dev->lock);
	snprintf(v->broken, sizeof(v->broken), "%s", why);
	pthread_mutex_unlock(&v->dev->lock);
}

int vu_vring_broken(struct vu_dev *d, unsigned i, char *why, size_t len)
{
	int ret;

	if (i >= d->num_queues)
		return -ENOENT;
	pthread_mutex_lock(&d->lock);
	ret = d->vrings[i].broken[0] != '\0';
	if (ret && len)
		snprintf(why, len, "%s", d->vrings[i].broken);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

static void stats_add(struct vblk_stats *sum, const struct vblk_stats *s)
{
	sum->requests += s->requests;
	sum->read_bytes += s->read_bytes;
	sum->written_bytes += s->written_bytes;
	sum->errors += s->errors;
}

int vu_vring_stats(struct vu_dev *d, unsigned i, struct vblk_stats *out)
{
	struct vu_vring *v;

	if (i >= d->num_queues)
		return -ENOENT;
	v = &d->vrings[i];
	pthread_mutex_lock(&d->lock);
	*out = v->done;
	if (v->live) {
		struct vblk_stats now;

		vblk_queue_stats(v->live, &now);
		stats_add(out, &now);
	}
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static void *vring_thread(void *arg)
{
	struct vu_vring *v = arg;
	struct vu_dev *d = v->dev;
	struct vblk_queue *q;
	struct pollfd pfd[3];
	struct vblk_poll poll_state = { .max_ns = d->poll_ns };
	char label[512];
	int ret;

	ret = vblk_queue_new(d->blk, notify, v, &q);
	if (ret < 0) {
		fprintf(stderr, "pvblk: vhost-user: queue %u: no engine queue: "
			"%s\n", v->index, strerror(-ret));
		return NULL;
	}
	snprintf(label, sizeof(label), "pvblk: %s, queue %u",
		 d->label ? d->label : "vhost-user-blk", v->index);
	vblk_queue_set_label(q, label);
	ret = vblk_queue_start(q, &d->mem, &v->ring);
	if (ret < 0) {
		fprintf(stderr, "pvblk: vhost-user: queue %u: bad ring\n",
			v->index);
		vblk_queue_free(q);
		return NULL;
	}
	pthread_mutex_lock(&d->lock);
	v->live = q;
	pthread_mutex_unlock(&d->lock);
	pfd[0] = (struct pollfd){ .fd = v->stop_fd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = v->kick_fd, .events = POLLIN };
	pfd[2] = (struct pollfd){ .fd = vblk_queue_fd(q), .events = POLLIN };
	/* requests may be waiting from before the ring (re)started */
	vblk_queue_kick(q);
	note_broken(v, q);
	for (;;) {
		if (vblk_queue_wait(q, &poll_state, pfd, 3) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[2].revents & POLLIN) {
			drain(pfd[2].fd);
			vblk_queue_complete(q);
		}
		if (pfd[1].revents & POLLIN) {
			drain(pfd[1].fd);
			vblk_queue_kick(q);
		}
		if (pfd[1].revents & (POLLERR | POLLNVAL))
			pfd[1].fd = -1;
		note_broken(v, q);
	}
	v->last_avail = vblk_queue_stop(q);
	{
		struct vblk_stats st;

		vblk_queue_stats(q, &st); /* final: nothing is in flight */
		pthread_mutex_lock(&d->lock);
		stats_add(&v->done, &st);
		v->live = NULL;
		pthread_mutex_unlock(&d->lock);
	}
	vblk_queue_free(q);
	return NULL;
}

int vu_vring_maybe_start(struct vu_vring *v)
{
	struct vu_dev *d = v->dev;
	struct vblk_ring *ring = &v->ring;
	int ret;

	if (v->running || d->no_threads || !v->enabled || !v->addr_set ||
	    !v->num || v->kick_fd < 0 || !d->nregions)
		return 0;
	ring->num = v->num;
	ring->desc = uva_to_hva(d, v->desc_uva, vring_desc_bytes(v->num));
	ring->avail = uva_to_hva(d, v->avail_uva, vring_avail_bytes(v->num));
	ring->used = uva_to_hva(d, v->used_uva, vring_used_bytes(v->num));
	ring->last_avail_idx = v->last_avail;
	ring->features = d->features;
	ring->inflight = NULL;
	if (d->inflight_map && v->inflight_ok &&
	    d->inflight_queue_size == v->num)
		ring->inflight = (struct vblk_inflight *)(
			(uint8_t *)d->inflight_map +
			vblk_inflight_bytes(v->num) * v->index);
	if (!ring->desc || !ring->avail || !ring->used) {
		fprintf(stderr, "pvblk: vhost-user: queue %u: rings outside "
			"guest memory\n", v->index);
		return -EFAULT;
	}
	v->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->stop_fd < 0)
		return -errno;
	/* a ring set up again starts unbroken */
	pthread_mutex_lock(&d->lock);
	v->broken[0] = '\0';
	pthread_mutex_unlock(&d->lock);
	ret = pthread_create(&v->thread, NULL, vring_thread, v);
	if (ret) {
		close(v->stop_fd);
		v->stop_fd = -1;
		return -ret;
	}
	v->running = true;
	return 0;
}

void vu_vring_stop(struct vu_vring *v)
{
	uint64_t one = 1;

	if (!v->running)
		return;
	if (write(v->stop_fd, &one, sizeof(one)) < 0)
		fprintf(stderr, "pvblk: vhost-user: cannot stop queue %u: %s\n",
			v->index, strerror(errno));
	pthread_join(v->thread, NULL);
	close(v->stop_fd);
	v->stop_fd = -1;
	v->running = false;
}
