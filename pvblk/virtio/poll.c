/* SPDX-License-Identifier: Apache-2.0 */
/* poll.c - waiting for work on a queue's thread: an adaptive busy-poll of
   the rings before the poll(2) sleep (see struct vblk_poll). */
#include <errno.h>
#include <time.h>

#include "virtio_blk.h"
#include "virtqueue.h"

#define WINDOW_START_NS 4000ull
#define WINDOW_MIN_NS 1000ull
/* how long a busy queue may go without looking at its fds */
#define FD_LOOK_NS 1000000ull

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Polls for up to the window; true when it served something. */
static bool spin(struct vblk_queue *q, struct vblk_poll *p)
{
	uint64_t t = now_ns(), end = t + p->window_ns;
	bool found = false;

	blk_kicks_off(q);
	do {
		if (vblk_queue_poll(q)) {
			found = true;
			break;
		}
		t = now_ns();
	} while (t < end);
	p->polls++;
	if (found)
		p->hits++;
	return found;
}

int vblk_queue_wait(struct vblk_queue *q, struct vblk_poll *p,
		    struct pollfd *pfd, unsigned n)
{
	uint64_t t0, slept;
	int ret;

	if (!p->max_ns)
		return poll(pfd, n, -1);
	for (unsigned i = 0; i < n; i++)
		pfd[i].revents = 0;
	if (p->window_ns && spin(q, p)) {
		t0 = now_ns();
		if (t0 - p->fds_seen < FD_LOOK_NS)
			return 0;
		/* busy for a while: a look at the fds, without sleeping */
		p->fds_seen = t0;
		return poll(pfd, n, 0);
	}
	/* asleep from here on: have the driver kick again, and look once
	   more, since requests may have come in between */
	if (blk_kicks_on(q)) {
		vblk_queue_kick(q);
		return 0;
	}
	t0 = now_ns();
	ret = poll(pfd, n, -1);
	p->fds_seen = now_ns();
	if (ret < 0)
		return ret;
	slept = p->fds_seen - t0;
	if (slept > p->max_ns) {
		/* idle: polling would have burnt CPU for nothing */
		p->window_ns /= 2;
		if (p->window_ns < WINDOW_MIN_NS)
			p->window_ns = 0;
	} else if (p->window_ns < p->max_ns) {
		/* a longer window would have caught this one */
		p->window_ns = p->window_ns ? p->window_ns * 2
					    : WINDOW_START_NS;
		if (p->window_ns > p->max_ns)
			p->window_ns = p->max_ns;
	}
	return ret;
}
