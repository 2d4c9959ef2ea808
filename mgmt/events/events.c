/* SPDX-License-Identifier: Apache-2.0 */
/* events.c - the ring of Redfish events and its readers (events.h). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events.h"
#include "util.h"

static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ev_cond = PTHREAD_COND_INITIALIZER;
static char *ev_ring[EVENTS_RING]; /* the data: line of event id N at
				      N % EVENTS_RING */
static uint64_t ev_last;
static bool ev_stopped;

void events_publish(const char *msgid, const char *severity,
		    const char *origin, json_t *args, json_t *oem,
		    const char *fmt, ...)
{
	char msg[1024], id[32], when[32];
	time_t now = time(NULL);
	struct tm tm;
	json_t *rec, *ev;
	va_list ap;
	char *text;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	mgmt_json_safe(msg);
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pthread_mutex_lock(&ev_lock);
	snprintf(id, sizeof(id), "%llu", (unsigned long long)ev_last + 1);
	rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:{s:s}}", "EventId",
			id, "EventTimestamp", when, "MessageSeverity",
			severity, "MessageId", msgid, "Message", msg,
			"MessageArgs", args ? args : json_array(),
			"OriginOfCondition", "@odata.id", origin);
	if (rec && oem)
		json_object_set_new(rec, "Oem", json_pack("{s:o}", "Ovk",
							  oem));
	else
		json_decref(oem);
	ev = json_pack("{s:s, s:s, s:s, s:s, s:[o]}", "@odata.type",
		       "#Event.v1_7_0.Event", "Id", id, "Name", "ovkd event",
		       "Context", "ovkd", "Events", rec);
	text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
	json_decref(ev);
	if (text) {
		ev_last++;
		free(ev_ring[ev_last % EVENTS_RING]);
		ev_ring[ev_last % EVENTS_RING] = text;
		pthread_cond_broadcast(&ev_cond);
	}
	pthread_mutex_unlock(&ev_lock);
}

uint64_t events_last(void)
{
	uint64_t n;

	pthread_mutex_lock(&ev_lock);
	n = ev_last;
	pthread_mutex_unlock(&ev_lock);
	return n;
}

char *events_next(uint64_t *seq, int ms)
{
	struct timespec until;
	char *out = NULL;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&ev_lock);
	while (!ev_stopped && *seq >= ev_last)
		if (pthread_cond_timedwait(&ev_cond, &ev_lock, &until) ==
		    ETIMEDOUT)
			break;
	if (!ev_stopped && *seq < ev_last) {
		uint64_t n = *seq + 1;

		if (ev_last - n >= EVENTS_RING)
			n = ev_last - EVENTS_RING + 1;
		if (asprintf(&out, "id: %llu\ndata: %s\n\n",
			     (unsigned long long)n, ev_ring[n % EVENTS_RING]) < 0)
			out = NULL;
		*seq = n;
	}
	pthread_mutex_unlock(&ev_lock);
	return out;
}

void events_stop(void)
{
	pthread_mutex_lock(&ev_lock);
	ev_stopped = true;
	pthread_cond_broadcast(&ev_cond);
	pthread_mutex_unlock(&ev_lock);
}

bool events_stopped(void)
{
	bool s;

	pthread_mutex_lock(&ev_lock);
	s = ev_stopped;
	pthread_mutex_unlock(&ev_lock);
	return s;
}
