/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tasks.h - ovkd's long jobs as Redfish Tasks
 * (/redfish/v1/TaskService/Tasks/N): each runs on a thread of its own and
 * reports its percentage and messages here; GET on the task reads them
 * under the tasks' own lock, never the inventory's, so a task is watched
 * while it works. Tasks live in memory: the last TASKS_KEPT are kept, a
 * restarted ovkd starts with none. Ending a task publishes a TaskEvent.
 */
#ifndef OVK_MGMT_TASKS_H
#define OVK_MGMT_TASKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define TASKS_URI "/redfish/v1/TaskService/Tasks"
#define TASKS_KEPT 64

struct task;

/* A new task (TaskState New) named name, about system vm_id (may be
   NULL): NULL when TASKS_KEPT tasks are still running. */
struct task *task_new(const char *name, const char *vm_id);
/* Run fn(t, arg) on a thread of its own (TaskState Running); fn ends with
   task_done. -errno (and the task ends as an Exception) when no thread
   could be made. */
int task_run(struct task *t, void (*fn)(struct task *t, void *arg),
	     void *arg);
unsigned task_id(const struct task *t);
void task_percent(struct task *t, unsigned percent);
/* Add a Message (severity OK, Warning or Critical; msgid a registry id). */
void task_message(struct task *t, const char *severity, const char *msgid,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The end: Completed (ok) or Exception, with result (stolen, may be NULL)
   as Oem.Ovk.Result. t must not be used after. */
void task_done(struct task *t, bool ok, json_t *result);

/* Whether a task about vm_id is running; its name in what. */
bool tasks_busy(const char *vm_id, char *what, size_t len);

/* The Redfish documents: a Task (NULL when no task has that id), the
   collection and the TaskService. */
json_t *tasks_task_json(const char *id);
json_t *tasks_collection_json(void);
json_t *tasks_service_json(void);

#endif /* OVK_MGMT_TASKS_H */
