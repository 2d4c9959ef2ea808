/* SPDX-License-Identifier: Apache-2.0 */
/*
 * events.h - ovkd's Redfish events: power state changes of the VMs and the
 * end of each task, kept in a small ring that the EventService's
 * server-sent event streams (/redfish/v1/EventService/SSE) read. Any
 * thread may publish; each reader keeps its own place (the event id).
 */
#ifndef OVK_MGMT_EVENTS_H
#define OVK_MGMT_EVENTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* How many events a slow reader may fall behind before it skips. */
#define EVENTS_RING 256

/*
 * Publish one event: a Redfish Event with one EventRecord of registry
 * message msgid (e.g. "TaskEvent.1.0.TaskCompletedOK"), its message text,
 * the args of the message, the resource it is about (origin, an
 * @odata.id) and an optional Oem.Ovk object (oem, stolen; may be NULL).
 * Wakes every reader.
 */
void events_publish(const char *msgid, const char *severity,
		    const char *origin, json_t *args, json_t *oem,
		    const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The id of the newest event (0 before the first): a new reader starts
   after it. */
uint64_t events_last(void);

/*
 * The first event after *seq as one server-sent event record
 * ("id: N\ndata: {Event}\n\n", malloc'd), advancing *seq; waits up to ms
 * for one. NULL when none came (or events_stop was called). A reader more
 * than EVENTS_RING events behind continues with the oldest kept.
 */
char *events_next(uint64_t *seq, int ms);

/* Wake every reader for good: ovkd is stopping. */
void events_stop(void);
bool events_stopped(void);

#endif /* OVK_MGMT_EVENTS_H */
