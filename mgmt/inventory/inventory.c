/* SPDX-License-Identifier: Apache-2.0 */
/* inventory.c - VM records as JSON files, one per VM, written crash-safely. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inventory.h"
#include "util.h"

struct inventory {
	char *state_dir;
	char *vms_dir;
	struct vm **v;
	unsigned n, cap;
};

void vm_free(struct vm *vm)
{
	if (!vm)
		return;
	free(vm->id);
	free(vm->name);
	free(vm->package);
	free(vm->os);
	for (unsigned i = 0; i < vm->ndisks; i++) {
		free(vm->disks[i].path);
		free(vm->disks[i].source);
	}
	free(vm->kernel);
	free(vm->initrd);
	free(vm->cmdline);
	free(vm->provider);
	free(vm->last_event);
	free(vm);
}

unsigned long long proc_start_time(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	ssize_t n;
	int fd;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* the command name may hold spaces and parentheses: fields count
	   from the last ')' */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return 0;
	/* state is field 3; starttime is field 22 */
	if (p[2] == 'Z' || p[2] == 'X')
		return 0; /* a zombie is not running */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u "
			  "%*d %*d %*d %*d %*d %*d %llu", &start) != 1)
		return 0;
	return start;
}

bool vm_proc_alive(const struct vm_proc *p)
{
	return p->pid > 0 && p->start && proc_start_time(p->pid) == p->start;
}

const char *vm_power_name(enum vm_power p)
{
	return p == VM_ON ? "On" : p == VM_PAUSED ? "Paused" : "Off";
}

static json_t *proc_json(const struct vm_proc *p)
{
	return json_pack("{s:i, s:I}", "pid", (int)p->pid, "start",
			 (json_int_t)p->start);
}

static json_t *vm_to_json(const struct vm *vm)
{
	json_t *o = json_object(), *disks = json_array(), *blk = json_array();

	json_object_set_new(o, "id", json_string(vm->id));
	json_object_set_new(o, "name", json_string(vm->name));
	if (vm->package)
		json_object_set_new(o, "package", json_string(vm->package));
	if (vm->os)
		json_object_set_new(o, "os", json_string(vm->os));
	json_object_set_new(o, "cpus", json_integer(vm->cpus));
	json_object_set_new(o, "memory", json_integer((json_int_t)vm->memory));
	for (unsigned i = 0; i < vm->ndisks; i++) {
		json_t *d = json_pack("{s:s}", "path", vm->disks[i].path);

		if (vm->disks[i].source)
			json_object_set_new(d, "source",
					    json_string(vm->disks[i].source));
		json_array_append_new(disks, d);
		json_array_append_new(blk, proc_json(&vm->blk[i]));
	}
	json_object_set_new(o, "disks", disks);
	if (vm->kernel)
		json_object_set_new(o, "kernel", json_string(vm->kernel));
	if (vm->initrd)
		json_object_set_new(o, "initrd", json_string(vm->initrd));
	if (vm->cmdline)
		json_object_set_new(o, "cmdline", json_string(vm->cmdline));
	if (vm->provider)
		json_object_set_new(o, "provider", json_string(vm->provider));
	json_object_set_new(o, "power", json_string(vm_power_name(vm->power)));
	json_object_set_new(o, "vmm", proc_json(&vm->vmm));
	json_object_set_new(o, "blk", blk);
	if (vm->last_event)
		json_object_set_new(o, "last_event",
				    json_string(vm->last_event));
	return o;
}

static char *json_str_dup(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return mgmt_strdup_or_null(s);
}

static void proc_from_json(json_t *o, struct vm_proc *p)
{
	p->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
	p->start = (unsigned long long)json_integer_value(
		json_object_get(o, "start"));
}

/* A record as read from disk; NULL (with a message) when it is not one. */
static struct vm *vm_from_json(json_t *o, const char *file)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	json_t *disks = json_object_get(o, "disks");
	json_t *blk = json_object_get(o, "blk");
	const char *power = json_string_value(json_object_get(o, "power"));
	size_t i;

	if (!vm)
		return NULL;
	vm->id = json_str_dup(o, "id");
	vm->name = json_str_dup(o, "name");
	if (!vm->id || !vm->name || !json_is_array(disks) ||
	    json_array_size(disks) > VM_MAX_DISKS) {
		fprintf(stderr, "ovkd: %s: not a VM record (id, name and at most "
			"%d disks expected); left as it is\n", file,
			VM_MAX_DISKS);
		vm_free(vm);
		return NULL;
	}
	vm->package = json_str_dup(o, "package");
	vm->os = json_str_dup(o, "os");
	vm->cpus = (unsigned)json_integer_value(json_object_get(o, "cpus"));
	vm->memory = (uint64_t)json_integer_value(json_object_get(o, "memory"));
	for (i = 0; i < json_array_size(disks); i++) {
		json_t *d = json_array_get(disks, i);

		vm->disks[i].path = json_str_dup(d, "path");
		vm->disks[i].source = json_str_dup(d, "source");
		if (json_is_array(blk) && i < json_array_size(blk))
			proc_from_json(json_array_get(blk, i), &vm->blk[i]);
		vm->ndisks++;
		if (!vm->disks[i].path) {
			fprintf(stderr, "ovkd: %s: disk %zu has no path; record "
				"left as it is\n", file, i);
			vm_free(vm);
			return NULL;
		}
	}
	vm->kernel = json_str_dup(o, "kernel");
	vm->initrd = json_str_dup(o, "initrd");
	vm->cmdline = json_str_dup(o, "cmdline");
	/* records from before there were two providers: QEMU ran them */
	vm->provider = json_str_dup(o, "provider");
	if (!vm->provider && power && strcmp(power, "Off"))
		vm->provider = strdup("qemu");
	vm->power = power && !strcmp(power, "On")       ? VM_ON
		    : power && !strcmp(power, "Paused") ? VM_PAUSED
							: VM_OFF;
	proc_from_json(json_object_get(o, "vmm"), &vm->vmm);
	vm->last_event = json_str_dup(o, "last_event");
	return vm;
}

static int push(struct inventory *inv, struct vm *vm)
{
	if (inv->n == inv->cap) {
		unsigned cap = inv->cap ? inv->cap * 2 : 16;
		struct vm **v = realloc(inv->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		inv->v = v;
		inv->cap = cap;
	}
	inv->v[inv->n++] = vm;
	return 0;
}

int inv_open(const char *state_dir, struct inventory **out)
{
	struct inventory *inv = calloc(1, sizeof(*inv));
	struct dirent *de;
	DIR *d;

	if (!inv)
		return -ENOMEM;
	inv->state_dir = strdup(state_dir);
	if (!inv->state_dir ||
	    asprintf(&inv->vms_dir, "%s/vms", state_dir) < 0) {
		inv->vms_dir = NULL;
		inv_close(inv);
		return -ENOMEM;
	}
	if ((mkdir(state_dir, 0700) < 0 && errno != EEXIST) ||
	    (mkdir(inv->vms_dir, 0700) < 0 && errno != EEXIST)) {
		int err = -errno;

		fprintf(stderr, "ovkd: state folder %s: %s\n", inv->vms_dir,
			strerror(errno));
		inv_close(inv);
		return err;
	}
	d = opendir(inv->vms_dir);
	if (!d) {
		int err = -errno;

		inv_close(inv);
		return err;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char path[4096];
		json_error_t jerr;
		json_t *o;
		struct vm *vm;

		if (len < 6 || strcmp(de->d_name + len - 5, ".json"))
			continue; /* also skips .tmp files of a crashed save */
		snprintf(path, sizeof(path), "%s/%s", inv->vms_dir, de->d_name);
		o = json_load_file(path, 0, &jerr);
		if (!o) {
			fprintf(stderr, "ovkd: %s: line %d: %s; record left as "
				"it is\n", path, jerr.line, jerr.text);
			continue;
		}
		vm = vm_from_json(o, path);
		json_decref(o);
		if (vm && push(inv, vm) < 0)
			vm_free(vm);
	}
	closedir(d);
	*out = inv;
	return 0;
}

void inv_close(struct inventory *inv)
{
	if (!inv)
		return;
	for (unsigned i = 0; i < inv->n; i++)
		vm_free(inv->v[i]);
	free(inv->v);
	free(inv->state_dir);
	free(inv->vms_dir);
	free(inv);
}

const char *inv_state_dir(const struct inventory *inv)
{
	return inv->state_dir;
}

unsigned inv_count(const struct inventory *inv)
{
	return inv->n;
}

struct vm *inv_at(struct inventory *inv, unsigned i)
{
	return i < inv->n ? inv->v[i] : NULL;
}

struct vm *inv_find(struct inventory *inv, const char *id)
{
	for (unsigned i = 0; i < inv->n; i++)
		if (!strcmp(inv->v[i]->id, id))
			return inv->v[i];
	return NULL;
}

int inv_save(struct inventory *inv, const struct vm *vm)
{
	char path[4096], tmp[4200];
	json_t *o = vm_to_json(vm);
	char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
	size_t len;
	int fd, dfd, ret = 0;

	json_decref(o);
	if (!text)
		return -ENOMEM;
	len = strlen(text);
	snprintf(path, sizeof(path), "%s/%s.json", inv->vms_dir, vm->id);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1 ||
	    fsync(fd) < 0)
		ret = errno ? -errno : -EIO;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret) {
		unlink(tmp);
		goto out;
	}
	dfd = open(inv->vms_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
out:
	if (ret)
		fprintf(stderr, "ovkd: saving %s: %s\n", path, strerror(-ret));
	free(text);
	return ret;
}

/* Letters, digits, '-' and '_' of name kept, the rest '-', made unique
   with a number. */
char *inv_new_id(struct inventory *inv, const char *name)
{
	char base[48], *id;
	size_t n = 0;

	for (const char *p = name; *p && n < sizeof(base) - 1; p++)
		base[n++] = (strchr("-_", *p) || (*p >= '0' && *p <= '9') ||
			     (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
				    ? *p
				    : '-';
	base[n] = '\0';
	if (!n)
		strcpy(base, "vm");
	for (unsigned k = 1;; k++) {
		if (k == 1 ? asprintf(&id, "%s", base) < 0
			   : asprintf(&id, "%s-%u", base, k) < 0)
			return NULL;
		if (!inv_find(inv, id))
			return id;
		free(id);
	}
}

int inv_add(struct inventory *inv, struct vm *vm)
{
	int ret;

	if (!vm->id) {
		vm->id = inv_new_id(inv, vm->name);
		if (!vm->id)
			return -ENOMEM;
	} else if (inv_find(inv, vm->id)) {
		return -EEXIST;
	}
	ret = inv_save(inv, vm);
	if (ret < 0)
		return ret;
	ret = push(inv, vm);
	if (ret < 0) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/%s.json", inv->vms_dir, vm->id);
		unlink(path);
	}
	return ret;
}

int inv_remove(struct inventory *inv, struct vm *vm)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s.json", inv->vms_dir, vm->id);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	for (unsigned i = 0; i < inv->n; i++) {
		if (inv->v[i] == vm) {
			inv->v[i] = inv->v[--inv->n];
			break;
		}
	}
	vm_free(vm);
	return 0;
}
