/* SPDX-License-Identifier: Apache-2.0 */
/* control.c - ovkvm's --api-socket (see control.h): the VM's own commands
 * here, the socket in common/ctlsock, checkpoints and views of a disk in
 * common/liveops. */
#include "control.h"
#include "ctlsock.h"
#include "../devices/vmblk.h"
#include "../kvm/vm.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(VM_CONTROL_MAX_DISKS >= VM_MAX_DISKS,
	       "a liveops slot per disk");

/* disk if there is such a disk, or -1 with *err set. */
static int disk_checked(struct vm *vm, unsigned long long disk, json_t **err)
{
	if (disk >= vm->ndisks || !vm->disks[disk]) {
		*err = ctlsock_error("disk %llu: there %s %u", disk,
				     vm->ndisks == 1 ? "is" : "are",
				     vm->ndisks);
		return -1;
	}
	return (int)disk;
}

/* The disk index of req ("disk", default 0), or -1 with *err set. */
static int disk_index(struct vm *vm, json_t *req, json_t **err)
{
	json_t *v = json_object_get(req, "disk");
	json_int_t disk = 0;

	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			*err = ctlsock_error("\"disk\" must be a disk index "
					     "(0 for the first --disk)");
			return -1;
		}
		disk = json_integer_value(v);
	}
	return disk_checked(vm, (unsigned long long)disk, err);
}

static struct liveops *live_of(struct control *c, int disk, json_t **err)
{
	struct vmblk *d = c->vm->disks[disk];

	if (!c->live_ready[disk]) {
		int rc = liveops_init(&c->live[disk], vmblk_bdev(d),
				      vmblk_top(d), vmblk_read_only(d));

		if (rc < 0) {
			*err = ctlsock_error("disk %d (%s): %s", disk,
					     vmblk_top(d), strerror(-rc));
			return NULL;
		}
		c->live_ready[disk] = true;
	}
	return &c->live[disk];
}

/* The size of disk's image now (it grows with disk-grow). */
static uint64_t disk_size(struct vmblk *d)
{
	struct bdev_info in;

	return bdev_get_info(vmblk_bdev(d), &in) < 0 ? 0 : in.size;
}

/* A disk's status: vmblk's counters plus what pvblk's status says of its
   export (image, top, size, checkpoints, view), so that ovkdisk finds the
   same members on either socket. */
static json_t *disk_status(struct control *c, unsigned i)
{
	struct vmblk *d = c->vm->disks[i];
	json_t *st = vmblk_status(d);
	struct liveops *lo = c->live_ready[i] ? &c->live[i] : NULL;

	json_object_set_new(st, "image", json_string(vmblk_path(d)));
	json_object_set_new(st, "top", json_string(lo ? lo->top
							: vmblk_top(d)));
	json_object_set_new(st, "size", json_integer((json_int_t)disk_size(d)));
	json_object_set_new(st, "checkpoints",
			    liveops_checkpoints(vmblk_bdev(d)));
	json_object_set_new(st, "view", lo && lo->view ?
			    liveops_view_json(lo->view) : json_null());
	return st;
}

static json_t *do_status(struct control *c, json_t *req)
{
	struct vm *vm = c->vm;
	json_t *vcpus, *disks, *err = NULL;
	int disk;

	if (json_object_get(req, "disk")) {
		disk = disk_index(vm, req, &err);
		return disk < 0 ? err : ctlsock_ok(disk_status(c, disk));
	}
	vcpus = json_array();
	disks = json_array();
	for (unsigned i = 0; i < vm->ncpus; i++) {
		const struct vcpu *v = &vm->vcpus[i];
		json_array_append_new(vcpus, json_pack(
			"{s:i,s:I,s:I,s:I}", "index", (int)i,
			"exits", (json_int_t)__atomic_load_n(&v->exits, __ATOMIC_RELAXED),
			"io_exits", (json_int_t)__atomic_load_n(&v->io_exits, __ATOMIC_RELAXED),
			"mmio_exits", (json_int_t)__atomic_load_n(&v->mmio_exits, __ATOMIC_RELAXED)));
	}
	for (unsigned i = 0; i < vm->ndisks; i++)
		if (vm->disks[i])
			json_array_append_new(disks, disk_status(c, i));
	return json_pack("{s:{s:s,s:i,s:I,s:o,s:o}}", "return", "state",
			 vm_is_paused(vm) ? "paused" : "running", "cpus",
			 (int)vm->ncpus, "memory", (json_int_t)vm->mem.ram_size,
			 "vcpus", vcpus, "disks", disks);
}

static json_t *do_disk_grow(struct vm *vm, json_t *req)
{
	json_int_t disk = -1, size = -1;
	char err[512];

	if (json_unpack(req, "{s:I,s:I}", "disk", &disk, "size", &size) != 0 ||
	    disk < 0 || size <= 0)
		return ctlsock_error("disk-grow takes {\"disk\": INDEX (0 for "
				     "the first --disk), \"size\": BYTES}");
	if ((unsigned long long)disk >= vm->ndisks || !vm->disks[disk])
		return ctlsock_error("disk %lld: there %s %u", (long long)disk,
				     vm->ndisks == 1 ? "is" : "are",
				     vm->ndisks);
	if (vmblk_grow(vm->disks[disk], (uint64_t)size, err, sizeof(err)) < 0)
		return ctlsock_error("%s", err);
	return json_pack("{s:{s:I}}", "return", "size", size);
}

static json_t *do_live(struct control *c, const struct liveops_req *r)
{
	struct liveops *lo;
	json_t *err = NULL;
	int disk = disk_checked(c->vm, r->disk, &err);

	if (disk < 0)
		return err;
	/* the image under a ,snapshot disk never changes: it needs no view,
	   and the temporary child must stay the top */
	if (r->cmd == LIVEOPS_VIEW_CREATE &&
	    vmblk_is_snapshot(c->vm->disks[disk]))
		return ctlsock_error("disk %d is a ,snapshot disk: %s does not "
				     "change while ovkvm runs; open it "
				     "directly instead of a view", disk,
				     vmblk_path(c->vm->disks[disk]));
	lo = live_of(c, disk, &err);
	if (!lo)
		return err;
	return liveops_run(lo, r, disk_size(c->vm->disks[disk]));
}

static json_t *handle(void *opaque, json_t *req)
{
	struct control *c = opaque;
	struct vm *vm = c->vm;
	const char *cmd = NULL;
	struct liveops_req r;
	char err[512];
	int rc;

	if (json_unpack(req, "{s:s}", "command", &cmd) != 0)
		return ctlsock_error("a request is {\"command\": NAME}");
	if (strcmp(cmd, "status") == 0)
		return do_status(c, req);
	if (strcmp(cmd, "pause") == 0) {
		vm_pause(vm);
		return ctlsock_ok(NULL);
	}
	if (strcmp(cmd, "resume") == 0) {
		vm_resume(vm);
		return ctlsock_ok(NULL);
	}
	if (strcmp(cmd, "disk-grow") == 0)
		return do_disk_grow(vm, req);
	if (strcmp(cmd, "shutdown") == 0) {
		vm_request_stop(vm, VM_STOP_HOST,
				"shutdown requested on the API socket");
		return ctlsock_ok(NULL);
	}
	rc = liveops_parse(req, &r, err, sizeof(err));
	if (rc < 0)
		return ctlsock_error("%s", err);
	if (rc > 0)
		return do_live(c, &r);
	return ctlsock_error("unknown command '%.64s' (status, pause, resume, "
			     "disk-grow, shutdown, checkpoint-create, "
			     "checkpoint-delete, checkpoint-list, changed, "
			     "view-create, view-release)", cmd);
}

static const struct ctlsock_ops control_ops = { .handle = handle };

int control_open(struct control *c, const char *path, struct vm *vm)
{
	memset(c, 0, sizeof(*c));
	c->vm = vm;
	return ctlsock_start(path, "ovkvm: --api-socket", &control_ops, c,
			     &c->sock);
}

void control_close(struct control *c)
{
	ctlsock_stop(c->sock);
	c->sock = NULL;
	for (int i = 0; i < VM_CONTROL_MAX_DISKS; i++)
		if (c->live_ready[i]) {
			if (c->live[i].view)
				fprintf(stderr, "ovkvm: stopping with a view "
					"open: %s stays a delta above %s\n",
					c->live[i].view->child,
					c->live[i].view->frozen);
			liveops_fini(&c->live[i]);
			c->live_ready[i] = false;
		}
}
