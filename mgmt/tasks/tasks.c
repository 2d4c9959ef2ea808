/* SPDX-License-Identifier: Apache-2.0 */
/* tasks.c - the table of Redfish Tasks and their threads (tasks.h). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events.h"
#include "tasks.h"
#include "util.h"

enum task_state { TASK_NEW, TASK_RUNNING, TASK_COMPLETED, TASK_EXCEPTION };

static const char *const state_names[] = { "New", "Running", "Completed",
					   "Exception" };

struct task {
	unsigned id;
	char name[160];
	char vm_id[128];       /* "" when about no system */
	enum task_state state;
	unsigned percent;
	time_t start, end;
	json_t *messages;      /* Message objects */
	json_t *result;        /* Oem.Ovk.Result, or NULL */
	bool worst_warning;    /* a Warning message came: TaskStatus */
	void (*fn)(struct task *t, void *arg);
	void *arg;
};

static pthread_mutex_t t_lock = PTHREAD_MUTEX_INITIALIZER;
static struct task *t_table[TASKS_KEPT];
static unsigned t_next_id = 1;

static bool finished(const struct task *t)
{
	return t->state == TASK_COMPLETED || t->state == TASK_EXCEPTION;
}

static void task_free(struct task *t)
{
	json_decref(t->messages);
	json_decref(t->result);
	free(t);
}

struct task *task_new(const char *name, const char *vm_id)
{
	struct task *t = calloc(1, sizeof(*t));
	int slot = -1;

	if (!t)
		return NULL;
	pthread_mutex_lock(&t_lock);
	/* a free slot, else the oldest finished task's */
	for (int i = 0; i < TASKS_KEPT; i++) {
		if (!t_table[i]) {
			slot = i;
			break;
		}
		if (finished(t_table[i]) &&
		    (slot < 0 || t_table[i]->id < t_table[slot]->id))
			slot = i;
	}
	if (slot < 0) {
		pthread_mutex_unlock(&t_lock);
		free(t);
		return NULL;
	}
	if (t_table[slot])
		task_free(t_table[slot]);
	t->id = t_next_id++;
	snprintf(t->name, sizeof(t->name), "%s", name);
	mgmt_json_safe(t->name);
	snprintf(t->vm_id, sizeof(t->vm_id), "%s", vm_id ? vm_id : "");
	t->start = time(NULL);
	t->messages = json_array();
	t_table[slot] = t;
	pthread_mutex_unlock(&t_lock);
	return t;
}

unsigned task_id(const struct task *t)
{
	return t->id;
}

static void *task_thread(void *p)
{
	struct task *t = p;

	t->fn(t, t->arg);
	return NULL;
}

int task_run(struct task *t, void (*fn)(struct task *t, void *arg),
	     void *arg)
{
	pthread_attr_t a;
	pthread_t th;
	int ret;

	pthread_mutex_lock(&t_lock);
	t->fn = fn;
	t->arg = arg;
	t->state = TASK_RUNNING;
	pthread_mutex_unlock(&t_lock);
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	ret = pthread_create(&th, &a, task_thread, t);
	pthread_attr_destroy(&a);
	if (ret) {
		task_message(t, "Critical", "Base.1.8.GeneralError",
			     "no thread for the task: %s", strerror(ret));
		task_done(t, false, NULL);
		return -ret;
	}
	return 0;
}

void task_percent(struct task *t, unsigned percent)
{
	pthread_mutex_lock(&t_lock);
	t->percent = percent > 100 ? 100 : percent;
	pthread_mutex_unlock(&t_lock);
}

void task_message(struct task *t, const char *severity, const char *msgid,
		  const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	mgmt_json_safe(msg); /* ovkdisk's stderr, a path */
	pthread_mutex_lock(&t_lock);
	json_array_append_new(t->messages, json_pack(
		"{s:s, s:s, s:s, s:s}", "@odata.type",
		"#Message.v1_1_1.Message", "MessageId", msgid, "Message", msg,
		"MessageSeverity", severity));
	if (!strcmp(severity, "Warning"))
		t->worst_warning = true;
	pthread_mutex_unlock(&t_lock);
}

void task_done(struct task *t, bool ok, json_t *result)
{
	char origin[64], id[16], vm[128], name[160];
	const char *msgid;

	snprintf(origin, sizeof(origin), TASKS_URI "/%u", t->id);
	snprintf(id, sizeof(id), "%u", t->id);
	msgid = !ok ? "TaskEvent.1.0.TaskAborted"
	      : t->worst_warning ? "TaskEvent.1.0.TaskCompletedWarning"
				 : "TaskEvent.1.0.TaskCompletedOK";
	task_message(t, ok ? (t->worst_warning ? "Warning" : "OK")
			   : "Critical", msgid, "The task with Id '%s' %s.",
		     id, ok ? "has completed" : "has been aborted");
	pthread_mutex_lock(&t_lock);
	t->state = ok ? TASK_COMPLETED : TASK_EXCEPTION;
	if (ok)
		t->percent = 100;
	t->end = time(NULL);
	t->result = result;
	snprintf(vm, sizeof(vm), "%s", t->vm_id);
	snprintf(name, sizeof(name), "%s", t->name);
	pthread_mutex_unlock(&t_lock);
	/* t may be reused from here on */
	events_publish(msgid, ok ? "OK" : "Critical", origin,
		       json_pack("[s]", id), vm[0] ? json_pack(
		       "{s:s, s:s}", "Task", name, "System", vm) :
		       json_pack("{s:s}", "Task", name),
		       "The task with Id '%s' %s.", id,
		       ok ? "has completed" : "has been aborted");
}

bool tasks_busy(const char *vm_id, char *what, size_t len)
{
	bool busy = false;

	pthread_mutex_lock(&t_lock);
	for (int i = 0; i < TASKS_KEPT && !busy; i++) {
		struct task *t = t_table[i];

		if (t && !finished(t) && !strcmp(t->vm_id, vm_id)) {
			snprintf(what, len, "%s (task %u)", t->name, t->id);
			busy = true;
		}
	}
	pthread_mutex_unlock(&t_lock);
	return busy;
}

static void iso_time(time_t when, char *out, size_t len)
{
	struct tm tm;

	gmtime_r(&when, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Called with t_lock held. */
static json_t *task_json(const struct task *t)
{
	char uri[64], id[16], when[32];
	json_t *o;

	snprintf(uri, sizeof(uri), TASKS_URI "/%u", t->id);
	snprintf(id, sizeof(id), "%u", t->id);
	iso_time(t->start, when, sizeof(when));
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:O}",
		      "@odata.type", "#Task.v1_7_0.Task", "@odata.id", uri,
		      "Id", id, "Name", t->name, "TaskState",
		      state_names[t->state], "TaskStatus",
		      t->state == TASK_EXCEPTION ? "Critical"
		      : t->worst_warning	 ? "Warning"
						 : "OK",
		      "PercentComplete", (int)t->percent, "StartTime", when,
		      "Messages", t->messages);
	if (finished(t)) {
		iso_time(t->end, when, sizeof(when));
		json_object_set_new(o, "EndTime", json_string(when));
	}
	if (t->vm_id[0] || t->result) {
		json_t *ovk = json_pack("{s:s}", "@odata.type",
					"#OvkTask.v1_0_0.OvkTask");

		if (t->vm_id[0]) {
			char sys[200];

			snprintf(sys, sizeof(sys), "/redfish/v1/Systems/%s",
				 t->vm_id);
			json_object_set_new(ovk, "System", json_pack(
				"{s:s}", "@odata.id", sys));
		}
		if (t->result)
			json_object_set(ovk, "Result", t->result);
		json_object_set_new(o, "Oem", json_pack("{s:o}", "Ovk", ovk));
	}
	return o;
}

json_t *tasks_task_json(const char *id)
{
	json_t *o = NULL;
	char *end;
	unsigned long n = strtoul(id, &end, 10);

	/* digits only: strtoul would also take "+1" and " 1" */
	if (!*id || *end || id[0] == '0' || n > 0xffffffffUL ||
	    strspn(id, "0123456789") != strlen(id))
		return NULL;
	pthread_mutex_lock(&t_lock);
	for (int i = 0; i < TASKS_KEPT; i++)
		if (t_table[i] && t_table[i]->id == n)
			o = task_json(t_table[i]);
	pthread_mutex_unlock(&t_lock);
	return o;
}

static int by_id(const void *a, const void *b)
{
	const struct task *x = *(struct task *const *)a;
	const struct task *y = *(struct task *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

json_t *tasks_collection_json(void)
{
	struct task *sorted[TASKS_KEPT];
	json_t *members = json_array();
	unsigned n = 0;

	pthread_mutex_lock(&t_lock);
	for (int i = 0; i < TASKS_KEPT; i++)
		if (t_table[i])
			sorted[n++] = t_table[i];
	qsort(sorted, n, sizeof(*sorted), by_id);
	for (unsigned i = 0; i < n; i++) {
		char uri[64];

		snprintf(uri, sizeof(uri), TASKS_URI "/%u", sorted[i]->id);
		json_array_append_new(members, json_pack("{s:s}", "@odata.id",
							 uri));
	}
	pthread_mutex_unlock(&t_lock);
	return json_pack("{s:s, s:s, s:s, s:i, s:o}", "@odata.type",
			 "#TaskCollection.TaskCollection", "@odata.id",
			 TASKS_URI, "Name", "Tasks", "Members@odata.count",
			 (int)json_array_size(members), "Members", members);
}

json_t *tasks_service_json(void)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:b, s:{s:s}}",
			 "@odata.type", "#TaskService.v1_2_0.TaskService",
			 "@odata.id", "/redfish/v1/TaskService", "Id",
			 "TaskService", "Name", "Task service",
			 "ServiceEnabled", 1, "CompletedTaskOverWritePolicy",
			 "Oldest", "LifeCycleEventOnTaskStateChange", 1,
			 "Tasks", "@odata.id", TASKS_URI);
}
