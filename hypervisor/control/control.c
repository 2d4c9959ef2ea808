/* SPDX-License-Identifier: Apache-2.0 */
#include "control.h"
#include "../devices/vmblk.h"
#include "../devices/console.h"
#include "../kvm/vm.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int control_open(struct control *c, const char *path)
{
	int fd;

	memset(c, 0, sizeof(*c));
	c->listen_fd = -1;
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		c->clients[i].fd = -1;
	fd = unix_listen(path, CONTROL_MAX_CLIENTS, "--api-socket");
	if (fd < 0)
		return fd;
	c->listen_fd = fd;
	c->path = strdup(path);
	return 0;
}

void control_close(struct control *c)
{
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (c->clients[i].fd >= 0)
			close(c->clients[i].fd);
	if (c->listen_fd >= 0) {
		close(c->listen_fd);
		unlink(c->path);
	}
	free(c->path);
	c->listen_fd = -1;
	c->path = NULL;
}

int control_pollfds(struct control *c, struct pollfd *pfd)
{
	int n = 0;

	if (c->listen_fd < 0)
		return 0;
	pfd[n++] = (struct pollfd){ .fd = c->listen_fd, .events = POLLIN };
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (c->clients[i].fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = c->clients[i].fd, .events = POLLIN };
	return n;
}

static void drop(struct control_client *cl)
{
	close(cl->fd);
	cl->fd = -1;
	cl->len = 0;
}

/* Send one reply line; a client that cannot take it is dropped. */
static void reply(struct control_client *cl, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t len, off = 0;

	json_decref(msg);
	if (!text) {
		drop(cl);
		return;
	}
	len = strlen(text);
	text[len++] = '\n'; /* json_dumps leaves room: replace the NUL */
	while (off < len) {
		ssize_t w = send(cl->fd, text + off, len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			drop(cl);
			break;
		}
		off += w;
	}
	free(text);
}

static json_t *error_msg(const char *fmt, const char *arg)
{
	char buf[1024];

	snprintf(buf, sizeof(buf), fmt, arg);
	return json_pack("{s:s}", "error", buf);
}

static json_t *run_command(struct vm *vm, const char *line)
{
	json_error_t jerr;
	json_t *req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr), *ret;
	const char *cmd = NULL;

	if (!req)
		return error_msg("not JSON: %s", jerr.text);
	if (json_unpack(req, "{s:s}", "command", &cmd) != 0) {
		json_decref(req);
		return error_msg("%s", "a request is {\"command\": NAME}");
	}
	if (strcmp(cmd, "status") == 0) {
		json_t *vcpus = json_array(), *disks = json_array();
		for (unsigned i = 0; i < vm->ncpus; i++) {
			const struct vcpu *c = &vm->vcpus[i];
			json_array_append_new(vcpus, json_pack(
				"{s:i,s:I,s:I,s:I}", "index", (int)i,
				"exits", (json_int_t)__atomic_load_n(&c->exits, __ATOMIC_RELAXED),
				"io_exits", (json_int_t)__atomic_load_n(&c->io_exits, __ATOMIC_RELAXED),
				"mmio_exits", (json_int_t)__atomic_load_n(&c->mmio_exits, __ATOMIC_RELAXED)));
		}
		for (unsigned i = 0; i < vm->ndisks; i++)
			if (vm->disks[i])
				json_array_append_new(disks, vmblk_status(vm->disks[i]));
		ret = json_pack("{s:{s:s,s:i,s:I,s:o,s:o}}", "return", "state",
				vm_is_paused(vm) ? "paused" : "running", "cpus",
				(int)vm->ncpus, "memory", (json_int_t)vm->mem.ram_size,
				"vcpus", vcpus, "disks", disks);
	} else if (strcmp(cmd, "pause") == 0) {
		vm_pause(vm);
		ret = json_pack("{s:{}}", "return");
	} else if (strcmp(cmd, "resume") == 0) {
		vm_resume(vm);
		ret = json_pack("{s:{}}", "return");
	} else if (strcmp(cmd, "disk-grow") == 0) {
		json_int_t disk = -1, size = -1;
		char err[512];

		if (json_unpack(req, "{s:I,s:I}", "disk", &disk, "size",
				&size) != 0 || disk < 0 || size <= 0) {
			ret = error_msg("%s", "disk-grow takes {\"disk\": INDEX "
					"(0 for the first --disk), \"size\": BYTES}");
		} else if ((unsigned long long)disk >= vm->ndisks ||
			   !vm->disks[disk]) {
			snprintf(err, sizeof(err), "disk %lld: there %s %u",
				 (long long)disk, vm->ndisks == 1 ? "is" : "are",
				 vm->ndisks);
			ret = error_msg("%s", err);
		} else if (vmblk_grow(vm->disks[disk], (uint64_t)size, err,
				      sizeof(err)) < 0) {
			ret = error_msg("%s", err);
		} else {
			ret = json_pack("{s:{s:I}}", "return", "size", size);
		}
	} else if (strcmp(cmd, "shutdown") == 0) {
		vm_request_stop(vm, VM_STOP_HOST, "shutdown requested on the API socket");
		ret = json_pack("{s:{}}", "return");
	} else {
		ret = error_msg("unknown command '%s' (status, pause, resume, "
				"disk-grow, shutdown)", cmd);
	}
	json_decref(req);
	return ret;
}

static void client_input(struct control_client *cl, struct vm *vm)
{
	ssize_t r = recv(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - 1 - cl->len, 0);
	char *nl;

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) {
		drop(cl);
		return;
	}
	cl->len += r;
	cl->buf[cl->len] = '\0';
	while (cl->fd >= 0 && (nl = memchr(cl->buf, '\n', cl->len))) {
		size_t used = nl - cl->buf + 1;
		*nl = '\0';
		if (nl > cl->buf)
			reply(cl, run_command(vm, cl->buf));
		memmove(cl->buf, cl->buf + used, cl->len - used);
		cl->len -= used;
		cl->buf[cl->len] = '\0';
	}
	if (cl->fd >= 0 && cl->len == sizeof(cl->buf) - 1) {
		reply(cl, error_msg("%s", "request line too long"));
		if (cl->fd >= 0)
			drop(cl);
	}
}

void control_handle(struct control *c, struct vm *vm, const struct pollfd *pfd,
		    int n)
{
	for (int i = 0; i < n; i++) {
		if (!pfd[i].revents)
			continue;
		if (pfd[i].fd == c->listen_fd) {
			int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			int slot;
			if (fd < 0)
				continue;
			for (slot = 0; slot < CONTROL_MAX_CLIENTS; slot++)
				if (c->clients[slot].fd < 0)
					break;
			if (slot == CONTROL_MAX_CLIENTS) {
				close(fd); /* too many clients */
				continue;
			}
			c->clients[slot].fd = fd;
			c->clients[slot].len = 0;
			continue;
		}
		for (int k = 0; k < CONTROL_MAX_CLIENTS; k++)
			if (c->clients[k].fd == pfd[i].fd) {
				client_input(&c->clients[k], vm);
				break;
			}
	}
}
