/* SPDX-License-Identifier: Apache-2.0 */
/*
 * procs.c - the process handling both providers share (procs.h): start in
 * a session of its own, record by pid and start time, stop, wait for a
 * socket, log tails, one request on a JSON-lines control socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvmprobe.h"
#include "procs.h"
#include "util.h"

/* a control socket's reply is taken up to this size */
#define CTL_REPLY_MAX (1u << 20)

bool prov_hw_kvm(void)
{
	return access("/dev/kvm", R_OK | W_OK) == 0 && kvmprobe_cpu_virt() == 1;
}

void prov_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

void prov_vm_path(char *buf, size_t len, const struct provider_env *env,
		  const struct vm *vm, const char *leaf)
{
	snprintf(buf, len, "%s/%s/%s", env->run_dir, vm->id, leaf);
}

int prov_vm_dir(const struct provider_env *env, const struct vm *vm,
		char *err, size_t errlen)
{
	char dir[4096];

	snprintf(dir, sizeof(dir), "%s/%s", env->run_dir, vm->id);
	if (mkdir(env->run_dir, 0700) < 0 && errno != EEXIST)
		return mgmt_fail(err, errlen, -errno, "%s: %s", env->run_dir,
				 strerror(errno));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return mgmt_fail(err, errlen, -errno, "%s: %s", dir,
				 strerror(errno));
	return 0;
}

int prov_spawn(char *const argv[], const char *log, struct vm_proc *p)
{
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
			      0600);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setsid();
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (null >= 0)
			dup2(null, 0);
		execvp(argv[0], argv);
		_exit(127);
	}
	p->pid = pid;
	/* the start time is read once the child is a process of its own */
	for (int i = 0; i < 100 && !(p->start = proc_start_time(pid)); i++)
		prov_sleep_ms(1);
	return pid;
}

void prov_stop(struct vm_proc *p, int sig, unsigned ms)
{
	if (!vm_proc_alive(p)) {
		p->pid = 0;
		p->start = 0;
		return;
	}
	if (sig)
		kill(p->pid, sig);
	for (unsigned t = 0; t < ms; t += 20) {
		waitpid(p->pid, NULL, WNOHANG); /* our child: reap it */
		if (!vm_proc_alive(p))
			break;
		prov_sleep_ms(20);
	}
	if (vm_proc_alive(p)) {
		kill(p->pid, SIGKILL);
		for (int i = 0; i < 100 && vm_proc_alive(p); i++) {
			waitpid(p->pid, NULL, WNOHANG);
			prov_sleep_ms(10);
		}
	}
	waitpid(p->pid, NULL, WNOHANG);
	p->pid = 0;
	p->start = 0;
}

int prov_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	strcpy(a.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

int prov_wait_socket(const char *path, const struct vm_proc *p, unsigned ms)
{
	for (unsigned t = 0; t < ms; t += 50) {
		int fd = prov_connect(path);

		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (!vm_proc_alive(p))
			return -ECHILD;
		prov_sleep_ms(50);
	}
	return -ETIMEDOUT;
}

void prov_log_tail(const char *log, char *out, size_t len)
{
	char buf[2048];
	ssize_t n;
	int fd = open(log, O_RDONLY | O_CLOEXEC);

	out[0] = '\0';
	if (fd < 0)
		return;
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1
						   : 0;
	n = pread(fd, buf, sizeof(buf) - 1, from);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	const char *last = strrchr(buf, '\n');
	size_t n2;

	last = last ? last + 1 : buf;
	n2 = strlen(last) < len - 1 ? strlen(last) : len - 1;
	memcpy(out, last, n2);
	out[n2] = '\0';
}

json_t *prov_json_line(int fd, char *buf, size_t cap, size_t *have, int ms)
{
	for (;;) {
		char *nl = memchr(buf, '\n', *have);

		if (nl) {
			size_t line = (size_t)(nl - buf) + 1;
			json_t *o = json_loadb(buf, line, 0, NULL);

			memmove(buf, buf + line, *have - line);
			*have -= line;
			if (o)
				return o;
			continue;
		}
		if (*have == cap)
			return NULL; /* a line longer than we take */
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		if (poll(&pfd, 1, ms) != 1)
			return NULL;
		ssize_t n = read(fd, buf + *have, cap - *have);

		if (n <= 0)
			return NULL;
		*have += (size_t)n;
	}
}

json_t *prov_ctl_call(const char *path, json_t *req, int ms, const char *who,
		      const char *what, char *err, size_t errlen)
{
	size_t have = 0, len;
	json_t *o = NULL, *ret = NULL;
	char *buf = NULL, *text = NULL;
	int fd;

	fd = prov_connect(path);
	if (fd < 0) {
		mgmt_fail(err, errlen, fd, "%s: control socket %s: %s", what,
			  path, strerror(-fd));
		return NULL;
	}
	text = json_dumps(req, JSON_COMPACT);
	buf = malloc(CTL_REPLY_MAX);
	if (!text || !buf) {
		mgmt_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	len = strlen(text);
	text[len++] = '\n'; /* json_dumps leaves room: we replace the NUL */
	if (write(fd, text, len) != (ssize_t)len) {
		mgmt_fail(err, errlen, -EIO, "%s: writing to %s: %s", what,
			  path, strerror(errno));
		goto out;
	}
	o = prov_json_line(fd, buf, CTL_REPLY_MAX, &have, ms);
	ret = json_object_get(o, "return");
	if (json_is_object(ret)) {
		json_incref(ret);
	} else {
		const char *e = json_string_value(json_object_get(
			json_object_get(o, "error"), "desc"));

		if (!e)
			e = json_string_value(json_object_get(o, "error"));
		if (e)
			mgmt_fail(err, errlen, -EIO, "%s: %s", what, e);
		else
			mgmt_fail(err, errlen, -EIO, "%s: %s", what, o
				  ? "the reply has no \"return\"" : "no answer "
				  "in time");
		if (!e)
			snprintf(err + strlen(err), errlen - strlen(err),
				 " (%s, %s)", who, path);
		ret = NULL;
	}
out:
	json_decref(o);
	free(text);
	free(buf);
	close(fd);
	return ret;
}

void prov_vmm_stats(const struct vm *vm, struct vm_stats *out)
{
	char path[64], buf[4096];
	unsigned long ut = 0, st = 0, rss = 0;
	FILE *f;

	memset(out, 0, sizeof(*out));
	if (!vm_proc_alive(&vm->vmm))
		return;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)vm->vmm.pid);
	f = fopen(path, "re");
	if (f && fgets(buf, sizeof(buf), f)) {
		char *p = strrchr(buf, ')');

		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u "
				"%*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u "
				"%*u %lu", &ut, &st, &rss) == 3) {
			out->cpu_seconds = (double)(ut + st) /
					   (double)sysconf(_SC_CLK_TCK);
			out->rss_bytes = (uint64_t)rss *
					 (uint64_t)sysconf(_SC_PAGESIZE);
		}
	}
	if (f)
		fclose(f);
}

void prov_stop_disks(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ndisks; i++)
		prov_stop(&vm->blk[i], SIGTERM, 15000);
}

bool prov_poll(const struct provider_env *env, struct vm *vm)
{
	if (vm->vmm.pid > 0)
		waitpid(vm->vmm.pid, NULL, WNOHANG);
	if (vm->power == VM_OFF || vm_proc_alive(&vm->vmm))
		return false;
	vm->vmm.pid = 0;
	vm->vmm.start = 0;
	prov_stop_disks(vm);
	vm->power = VM_OFF;
	return true;
}

int prov_need_power(const struct vm *vm, enum vm_power need, char *err,
		    size_t errlen)
{
	if (vm->power == VM_OFF)
		return mgmt_fail(err, errlen, -EINVAL, "%s is off", vm->id);
	if (need != VM_OFF && vm->power != need)
		return mgmt_fail(err, errlen, -EINVAL, "%s is %s", vm->id,
				 vm->power == VM_PAUSED ? "paused" : "running");
	return 0;
}

void prov_record(struct vm *vm, const char *name)
{
	char *n = strdup(name);

	if (!n)
		return; /* the old name stays: ovkd guesses again after */
	free(vm->provider);
	vm->provider = n;
}
