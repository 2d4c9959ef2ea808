/* SPDX-License-Identifier: Apache-2.0 */
/*
 * offload.c - work a connection's thread must not wait for: engine calls
 * that may read metadata synchronously (block status walks grain tables
 * and may miss the cache), run by a few worker threads the server shares.
 * A job's run() happens on a worker; its done() on the connection's own
 * thread, which alone touches the transport, once the connection's
 * eventfd says jobs have finished.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "nbd_i.h"

static void *worker(void *arg)
{
	struct nbd_server *s = arg;

	pthread_mutex_lock(&s->jobs_lock);
	for (;;) {
		struct nbd_job *j = s->jobs_head;
		struct nbd_conn *c;
		uint64_t one = 1;

		if (!j) {
			if (s->jobs_stop)
				break;
			pthread_cond_wait(&s->jobs_cond, &s->jobs_lock);
			continue;
		}
		s->jobs_head = j->next;
		if (!s->jobs_head)
			s->jobs_tail = &s->jobs_head;
		pthread_mutex_unlock(&s->jobs_lock);

		j->run(j);
		c = j->c;
		pthread_mutex_lock(&c->done_lock);
		j->next = c->done_head;
		c->done_head = j;
		pthread_mutex_unlock(&c->done_lock);
		if (write(c->done_fd, &one, sizeof(one)) < 0)
			pvblk_log("nbd: %s: cannot signal a finished job: %s",
				  c->peer, strerror(errno));

		pthread_mutex_lock(&s->jobs_lock);
	}
	pthread_mutex_unlock(&s->jobs_lock);
	return NULL;
}

void nbd_offload_init(struct nbd_server *s)
{
	pthread_mutex_init(&s->jobs_lock, NULL);
	pthread_cond_init(&s->jobs_cond, NULL);
	s->jobs_head = NULL;
	s->jobs_tail = &s->jobs_head;
	s->nworkers = 0;
	s->jobs_stop = false;
}

void nbd_offload_stop(struct nbd_server *s)
{
	pthread_mutex_lock(&s->jobs_lock);
	s->jobs_stop = true;
	pthread_cond_broadcast(&s->jobs_cond);
	pthread_mutex_unlock(&s->jobs_lock);
	for (unsigned i = 0; i < s->nworkers; i++)
		pthread_join(s->workers[i], NULL);
	s->nworkers = 0;
	pthread_cond_destroy(&s->jobs_cond);
	pthread_mutex_destroy(&s->jobs_lock);
}

int nbd_offload_conn_init(struct nbd_conn *c)
{
	c->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->done_fd < 0)
		return -errno;
	pthread_mutex_init(&c->done_lock, NULL);
	c->done_head = NULL;
	c->jobs = 0;
	return 0;
}

void nbd_offload_conn_fini(struct nbd_conn *c)
{
	if (c->done_fd < 0)
		return;
	pthread_mutex_destroy(&c->done_lock);
	close(c->done_fd);
	c->done_fd = -1;
}

void nbd_offload(struct nbd_conn *c, struct nbd_job *j)
{
	struct nbd_server *s = c->srv;
	bool queued = false;

	j->c = c;
	j->next = NULL;
	c->jobs++;
	pthread_mutex_lock(&s->jobs_lock);
	/* workers start with the first job: most clients never send one */
	while (s->nworkers < NBD_WORKERS && !s->jobs_stop) {
		pthread_attr_t a;
		int ret;

		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 512u << 10);
		ret = pthread_create(&s->workers[s->nworkers], &a, worker, s);
		pthread_attr_destroy(&a);
		if (ret)
			break;
		s->nworkers++;
	}
	if (s->nworkers) {
		*s->jobs_tail = j;
		s->jobs_tail = &j->next;
		pthread_cond_signal(&s->jobs_cond);
		queued = true;
	}
	pthread_mutex_unlock(&s->jobs_lock);
	if (!queued) {
		uint64_t one = 1;

		/* no worker could start: run it here, finish it as usual */
		j->run(j);
		pthread_mutex_lock(&c->done_lock);
		j->next = c->done_head;
		c->done_head = j;
		pthread_mutex_unlock(&c->done_lock);
		if (write(c->done_fd, &one, sizeof(one)) < 0)
			pvblk_log("nbd: %s: cannot signal a finished job: %s",
				  c->peer, strerror(errno));
	}
}

void nbd_offload_reap(struct nbd_conn *c)
{
	struct nbd_job *list, *rev = NULL;
	uint64_t cnt;

	/* reset first: a job finishing after this read signals again */
	if (read(c->done_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		pvblk_log("nbd: %s: job eventfd: %s", c->peer, strerror(errno));
	pthread_mutex_lock(&c->done_lock);
	list = c->done_head;
	c->done_head = NULL;
	pthread_mutex_unlock(&c->done_lock);
	/* oldest first */
	while (list) {
		struct nbd_job *n = list->next;

		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev) {
		struct nbd_job *n = rev->next;

		c->jobs--;
		rev->done(rev);
		rev = n;
	}
}
