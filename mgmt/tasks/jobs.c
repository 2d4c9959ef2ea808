/* SPDX-License-Identifier: Apache-2.0 */
/* jobs.c - backup, checkpoint and deploy as tasks (jobs.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "events.h"
#include "jobs.h"
#include "tasks.h"
#include "util.h"

#define SYSTEMS "/redfish/v1/Systems"

struct backup_job {
	struct mgmt *m;
	char vm_id[128];
	char dir[4096];
	enum backup_kind kind;
	unsigned ndisks;
	char sock[VM_MAX_DISKS][4200];
	int disk_index[VM_MAX_DISKS]; /* ovkdisk --disk N, or -1 */
};

/* Note in vm's record (when it is still there) what a job did. */
static void set_last_event(struct mgmt *m, const char *vm_id,
			   const char *what)
{
	struct vm *vm;

	pthread_mutex_lock(m->lock);
	vm = inv_find(m->inv, vm_id);
	if (vm) {
		free(vm->last_event);
		vm->last_event = strdup(what);
		inv_save(m->inv, vm);
	}
	pthread_mutex_unlock(m->lock);
}

/* Whether vm may get a task now: on (when need_on) and free. */
static int check_vm(struct mgmt *m, struct vm *vm, bool need_on,
		    const char *what, char *err, size_t errlen)
{
	char busy[256];

	if (need_on && (vm->power == VM_OFF || !mgmt_provider(m, vm)->disk_socket))
		return mgmt_fail(err, errlen, -ENOENT, "%s is Off: a %s "
				 "needs the VM running (its disks served); "
				 "power it on first", vm->id, what);
	if (tasks_busy(vm->id, busy, sizeof(busy)))
		return mgmt_fail(err, errlen, -EBUSY, "%s is busy with %s: "
				 "wait for it to finish", vm->id, busy);
	return 0;
}

/* One line ovkdisk wrote on stderr: a progress record moves the task's
   percentage (disk i of n), anything else becomes a message. */
static void backup_stderr_line(struct task *t, char *line, unsigned i,
			       unsigned n, json_t *lines)
{
	json_t *p = json_loads(line, 0, NULL);

	if (json_is_object(p) && json_object_get(p, "percent")) {
		unsigned pct = (unsigned)json_integer_value(
			json_object_get(p, "percent"));

		task_percent(t, (i * 100 + pct) / n);
	} else if (*line) {
		json_array_append_new(lines, json_string(line));
	}
	json_decref(p);
}

/* Run ovkdisk backup for disk i; its JSON result in *out. */
static int backup_disk(struct backup_job *j, struct task *t, unsigned i,
		       const char *target, json_t **out)
{
	char disk[16], buf[8192];
	char *argv[16];
	int argc = 0, outp[2], errp[2], st = 0;
	size_t olen = 0, elen = 0;
	char *obuf = NULL;
	json_t *lines = json_array(), *v;
	pid_t pid, w;
	size_t k;
	int ret;

	argv[argc++] = (char *)j->m->ovkdisk_tool;
	argv[argc++] = "backup";
	argv[argc++] = j->sock[i];
	argv[argc++] = (char *)target;
	argv[argc++] = "--output=json";
	argv[argc++] = "--progress=json";
	if (j->kind == BACKUP_FULL)
		argv[argc++] = "--full";
	else if (j->kind == BACKUP_INCREMENTAL)
		argv[argc++] = "--incremental";
	if (j->disk_index[i] >= 0) {
		snprintf(disk, sizeof(disk), "%d", j->disk_index[i]);
		argv[argc++] = "--disk";
		argv[argc++] = disk;
	}
	argv[argc] = NULL;
	if (pipe2(outp, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(errp, O_CLOEXEC) < 0) {
		ret = -errno;
		close(outp[0]);
		close(outp[1]);
		return ret;
	}
	pid = fork();
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(outp[1], 1);
		dup2(errp[1], 2);
		execvp(argv[0], argv);
		dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(outp[1]);
	close(errp[1]);
	if (pid < 0) {
		close(outp[0]);
		close(errp[0]);
		json_decref(lines);
		return -errno;
	}
	struct pollfd pf[2] = { { .fd = outp[0], .events = POLLIN },
				{ .fd = errp[0], .events = POLLIN } };

	while (pf[0].fd >= 0 || pf[1].fd >= 0) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[0].revents) {
			char tmp[4096];
			ssize_t r = read(outp[0], tmp, sizeof(tmp));
			char *nb;

			if (r <= 0) {
				pf[0].fd = -1;
			} else if ((nb = realloc(obuf, olen + (size_t)r + 1))) {
				obuf = nb;
				memcpy(obuf + olen, tmp, (size_t)r);
				olen += (size_t)r;
				obuf[olen] = '\0';
			}
		}
		if (pf[1].revents) {
			ssize_t r = read(errp[0], buf + elen,
					 sizeof(buf) - 1 - elen);
			char *nl;

			if (r <= 0) {
				pf[1].fd = -1;
				if (elen) { /* a last line without \n */
					buf[elen] = '\0';
					backup_stderr_line(t, buf, i,
							   j->ndisks, lines);
					elen = 0;
				}
				continue;
			}
			elen += (size_t)r;
			buf[elen] = '\0';
			while ((nl = strchr(buf, '\n'))) {
				*nl = '\0';
				backup_stderr_line(t, buf, i, j->ndisks,
						   lines);
				elen -= (size_t)(nl + 1 - buf);
				memmove(buf, nl + 1, elen + 1);
			}
			if (elen == sizeof(buf) - 1) { /* an endless line */
				backup_stderr_line(t, buf, i, j->ndisks,
						   lines);
				elen = 0;
			}
		}
	}
	close(outp[0]);
	close(errp[0]);
	do
		w = waitpid(pid, &st, 0);
	while (w < 0 && errno == EINTR);
	ret = w == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
	json_array_foreach(lines, k, v) {
		const char *l = json_string_value(v);

		task_message(t, ret < 0 ? "Critical" : strstr(l, "warning")
			     ? "Warning" : "OK", ret < 0 ?
			     "Base.1.8.GeneralError" : "Base.1.8.Success",
			     "disk %u: %s", i, l);
	}
	json_decref(lines);
	*out = ret == 0 && obuf ? json_loads(obuf, 0, NULL) : NULL;
	free(obuf);
	if (ret == 0 && !json_is_object(*out)) {
		task_message(t, "Critical", "Base.1.8.GeneralError",
			     "disk %u: %s printed no JSON result", i,
			     j->m->ovkdisk_tool);
		json_decref(*out);
		*out = NULL;
		ret = -EIO;
	}
	return ret;
}

static void backup_run(struct task *t, void *arg)
{
	struct backup_job *j = arg;
	json_t *results = json_array();
	char target[4200], what[4400];
	bool ok = true;

	if (mkdir(j->dir, 0755) < 0 && errno != EEXIST) {
		task_message(t, "Critical", "Base.1.8.GeneralError",
			     "cannot make the backup folder %s: %s", j->dir,
			     strerror(errno));
		ok = false;
	}
	for (unsigned i = 0; ok && i < j->ndisks; i++) {
		json_t *r = NULL;

		snprintf(target, sizeof(target), "%s/disk%u", j->dir, i);
		if (backup_disk(j, t, i, target, &r) < 0) {
			task_message(t, "Critical", "Base.1.8.GeneralError",
				     "disk %u: the backup into %s failed",
				     i, target);
			ok = false;
			break;
		}
		json_object_set_new(r, "disk", json_integer(i));
		json_object_set_new(r, "directory", json_string(target));
		task_message(t, "OK", "Base.1.8.Success",
			     "disk %u: %s backup %s in %s", i,
			     json_string_value(json_object_get(r, "kind")),
			     json_string_value(json_object_get(r,
							       "checkpoint")),
			     target);
		json_array_append_new(results, r);
		task_percent(t, (i + 1) * 100 / j->ndisks);
	}
	snprintf(what, sizeof(what), "backup into %s %s", j->dir,
		 ok ? "done" : "failed");
	set_last_event(j->m, j->vm_id, what);
	task_done(t, ok, json_pack("{s:s, s:o}", "Directory", j->dir,
				   "Backups", results));
	free(j);
}

int job_backup(struct mgmt *m, struct vm *vm, const char *dir,
	       enum backup_kind kind, unsigned *id, char *err,
	       size_t errlen)
{
	struct backup_job *j;
	struct task *t;
	char name[200];
	int ret = check_vm(m, vm, true, "backup", err, errlen);

	if (ret < 0)
		return ret;
	j = calloc(1, sizeof(*j));
	if (!j)
		return mgmt_fail(err, errlen, -ENOMEM, "out of memory");
	j->m = m;
	j->kind = kind;
	j->ndisks = vm->ndisks;
	snprintf(j->vm_id, sizeof(j->vm_id), "%s", vm->id);
	snprintf(j->dir, sizeof(j->dir), "%s", dir);
	for (unsigned i = 0; i < vm->ndisks; i++) {
		ret = mgmt_provider(m, vm)->disk_socket(
			&m->env, vm, i, j->sock[i], sizeof(j->sock[i]),
			&j->disk_index[i]);
		if (ret < 0) {
			free(j);
			return mgmt_fail(err, errlen, -ENOENT, "%s: disk %u "
					 "is not being served (its disk "
					 "server stopped?)", vm->id, i);
		}
	}
	snprintf(name, sizeof(name), "Backup of %s", vm->id);
	t = task_new(name, vm->id);
	if (!t) {
		free(j);
		return mgmt_fail(err, errlen, -EAGAIN, "%u tasks are running "
				 "already: try again later", TASKS_KEPT);
	}
	*id = task_id(t);
	if (task_run(t, backup_run, j) < 0) {
		free(j);
		return mgmt_fail(err, errlen, -EAGAIN, "no thread for the "
				 "task: try again later");
	}
	return 0;
}

struct checkpoint_job {
	struct mgmt *m;
	char vm_id[128];
	char name[128];
};

static void checkpoint_run(struct task *t, void *arg)
{
	struct checkpoint_job *j = arg;
	json_t *disks = json_array();
	char err[1024], what[300];
	const struct provider_ops *prov;
	bool ok = true;
	struct vm *vm;

	/* a checkpoint is a moment's work for each disk's server */
	pthread_mutex_lock(j->m->lock);
	vm = inv_find(j->m->inv, j->vm_id);
	prov = vm ? mgmt_provider(j->m, vm) : NULL;
	for (unsigned i = 0; vm && ok && i < vm->ndisks; i++) {
		json_t *req = json_pack("{s:s, s:s}", "command",
					"checkpoint-create", "name", j->name);
		json_t *r = NULL, *list = NULL;

		if (prov->disk_command(&j->m->env, vm, i, req, &r, err,
				       sizeof(err)) < 0) {
			task_message(t, "Critical", "Base.1.8.GeneralError",
				     "%s", err);
			ok = false;
		} else {
			json_t *lreq = json_pack("{s:s}", "command",
						 "checkpoint-list");

			if (prov->disk_command(&j->m->env, vm, i, lreq,
					       &list, err, sizeof(err)) < 0)
				list = NULL;
			json_decref(lreq);
			json_array_append_new(disks, json_pack(
				"{s:i, s:s, s:O*}", "disk", (int)i,
				"image", vm->disks[i].path, "checkpoints",
				json_object_get(list, "checkpoints")));
			task_message(t, "OK", "Base.1.8.Success",
				     "disk %u: checkpoint %s created", i,
				     j->name);
		}
		json_decref(req);
		json_decref(r);
		json_decref(list);
		task_percent(t, (i + 1) * 100 / vm->ndisks);
	}
	if (!vm) {
		task_message(t, "Critical", "Base.1.8.ResourceMissingAtURI",
			     "%s was removed before its checkpoint", j->vm_id);
		ok = false;
	} else {
		free(vm->last_event);
		snprintf(what, sizeof(what), "checkpoint %s %s", j->name,
			 ok ? "created" : "failed");
		vm->last_event = strdup(what);
		inv_save(j->m->inv, vm);
	}
	pthread_mutex_unlock(j->m->lock);
	task_done(t, ok, json_pack("{s:s, s:o}", "Checkpoint", j->name,
				   "Disks", disks));
	free(j);
}

int job_checkpoint(struct mgmt *m, struct vm *vm, const char *name,
		   unsigned *id, char *err, size_t errlen)
{
	struct checkpoint_job *j;
	struct task *t;
	char tname[200];
	int ret = check_vm(m, vm, true, "checkpoint", err, errlen);

	if (ret < 0)
		return ret;
	if (!mgmt_provider(m, vm)->disk_command)
		return mgmt_fail(err, errlen, -ENOTSUP, "provider %s has no "
				 "live-disk control",
				 mgmt_provider(m, vm)->name);
	j = calloc(1, sizeof(*j));
	if (!j)
		return mgmt_fail(err, errlen, -ENOMEM, "out of memory");
	j->m = m;
	snprintf(j->vm_id, sizeof(j->vm_id), "%s", vm->id);
	snprintf(j->name, sizeof(j->name), "%s", name);
	snprintf(tname, sizeof(tname), "Checkpoint %s of %s", name, vm->id);
	t = task_new(tname, vm->id);
	if (!t) {
		free(j);
		return mgmt_fail(err, errlen, -EAGAIN, "%u tasks are running "
				 "already: try again later", TASKS_KEPT);
	}
	*id = task_id(t);
	if (task_run(t, checkpoint_run, j) < 0) {
		free(j);
		return mgmt_fail(err, errlen, -EAGAIN, "no thread for the "
				 "task: try again later");
	}
	return 0;
}

struct deploy_job {
	struct mgmt *m;
	json_t *req;
	struct deploy_opts o;
	bool start;
};

/* A disk's import moves the task up to 90 % (the rest is the start). */
static void deploy_progress(void *opaque, unsigned disk, uint64_t done,
			    uint64_t total)
{
	if (total)
		task_percent(opaque, (unsigned)(done * 90 / total));
}

static void deploy_run(struct task *t, void *arg)
{
	struct deploy_job *j = arg;
	char err[1024] = "", uri[300];
	struct vm *vm = NULL;
	json_t *result = NULL;
	int ret;

	/* the inventory is held for the import, as a synchronous deploy
	   holds it; the task itself is read without it */
	j->o.progress = deploy_progress;
	j->o.opaque = t;
	pthread_mutex_lock(j->m->lock);
	ret = deploy_package(j->m->inv, j->m->storage_dir, &j->o, &vm, err,
			     sizeof(err));
	if (ret < 0) {
		task_message(t, "Critical", "Base.1.8.GeneralError", "%s",
			     err);
	} else {
		snprintf(uri, sizeof(uri), SYSTEMS "/%s", vm->id);
		task_percent(t, 90);
		task_message(t, "OK", "Base.1.8.ResourceCreated",
			     "deployed %s as %s", j->o.package, vm->id);
		if (j->start) {
			ret = mgmt_provider(j->m, vm)->start(
				&j->m->env, vm, err, sizeof(err));
			free(vm->last_event);
			if (asprintf(&vm->last_event, ret < 0 ? "start "
				     "failed: %s" : "On%s", err) < 0)
				vm->last_event = NULL;
			inv_save(j->m->inv, vm);
			rf_power_events(j->m);
			if (ret < 0)
				task_message(t, "Warning",
					     "Base.1.8.GeneralError",
					     "%s was deployed but did not "
					     "start: %s", vm->id, err);
			ret = 0;
		}
		result = json_pack("{s:s, s:{s:s}}", "Id", vm->id, "System",
				   "@odata.id", uri);
	}
	pthread_mutex_unlock(j->m->lock);
	task_done(t, ret == 0, result);
	json_decref(j->req);
	free(j);
}

int job_deploy(struct mgmt *m, json_t *req, const struct deploy_opts *o,
	       bool start, unsigned *id, char *err, size_t errlen)
{
	struct deploy_job *j = calloc(1, sizeof(*j));
	struct task *t;
	char tname[200];

	if (!j)
		return mgmt_fail(err, errlen, -ENOMEM, "out of memory");
	j->m = m;
	j->req = json_incref(req);
	j->o = *o;
	j->start = start;
	snprintf(tname, sizeof(tname), "Deploy of %.150s", o->package);
	t = task_new(tname, NULL);
	if (!t) {
		json_decref(j->req);
		free(j);
		return mgmt_fail(err, errlen, -EAGAIN, "%u tasks are running "
				 "already: try again later", TASKS_KEPT);
	}
	*id = task_id(t);
	if (task_run(t, deploy_run, j) < 0) {
		json_decref(j->req);
		free(j);
		return mgmt_fail(err, errlen, -EAGAIN, "no thread for the "
				 "task: try again later");
	}
	return 0;
}
