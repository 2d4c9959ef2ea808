/* SPDX-License-Identifier: Apache-2.0 */
/* deploy.c - OVF/OVA package -> VM record with imported disks. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blockengine.h"
#include "deploy.h"
#include "util.h"
#include "ovf.h"

#define DEFAULT_MEMORY (512ull << 20)

/* The package refuses to deploy when its digests or signature are wrong
   (unless asked), or when validation finds an error. */
static int check_package(struct ovf_pkg *pkg, const struct deploy_opts *o,
			 char *err, size_t errlen)
{
	struct ovf_finding_list findings = { 0 };
	struct ovf_verify v;
	int ret = ovf_verify(pkg, &v);

	if (ret < 0)
		return mgmt_fail(err, errlen, ret, "%s: cannot verify: %s",
			    o->package, ovf_errmsg());
	if (!o->allow_unverified) {
		for (size_t i = 0; i < v.nentries; i++)
			if (v.entries[i].status != OVF_DIGEST_OK) {
				ret = mgmt_fail(err, errlen, -EBADMSG,
					   "%s: manifest check failed for %s "
					   "(expected %s, got %s)", o->package,
					   v.entries[i].name,
					   v.entries[i].expected
						   ? v.entries[i].expected : "-",
					   v.entries[i].actual
						   ? v.entries[i].actual : "-");
				break;
			}
		if (!ret && (v.sig == OVF_SIG_BAD || v.sig == OVF_SIG_ERROR))
			ret = mgmt_fail(err, errlen, -EBADMSG, "%s: certificate "
				   "signature check failed: %s", o->package,
				   v.sig_message ? v.sig_message : "");
	}
	ovf_verify_free(&v);
	if (ret < 0)
		return ret;
	ret = ovf_validate(pkg, &findings);
	if (ret > 0) {
		for (size_t i = 0; i < findings.n; i++)
			if (findings.v[i].sev == OVF_SEV_ERROR) {
				mgmt_fail(err, errlen, -EINVAL, "%s is not a valid "
				     "package: %s: %s", o->package,
				     findings.v[i].where, findings.v[i].what);
				break;
			}
		ret = -EINVAL;
	} else if (ret < 0) {
		mgmt_fail(err, errlen, ret, "%s: cannot validate: %s", o->package,
		     ovf_errmsg());
	}
	ovf_findings_free(&findings);
	return ret < 0 ? ret : 0;
}

struct stream_src {
	struct ovf_stream *s;
};

static ssize_t stream_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	return ovf_stream_pread(((struct stream_src *)opaque)->s, buf, len,
				off);
}

static void stream_close(void *opaque)
{
	ovf_stream_close(((struct stream_src *)opaque)->s);
	free(opaque);
}

/* Open the disk image stored as file f of the package, in place. */
static int open_package_disk(struct ovf_pkg *pkg, const struct ovf_file *f,
			     struct bdev **out, char *err, size_t errlen)
{
	static const struct bdev_byte_source ops = { stream_pread,
						     stream_close };
	struct ovf_stream *s;
	struct stream_src *src;
	uint64_t base, size;
	int fd, ret;

	ret = ovf_file_open(pkg, f, &s);
	if (ret < 0)
		return mgmt_fail(err, errlen, ret, "%s: %s", f->href, ovf_errmsg());
	ret = ovf_stream_size(s, &size);
	if (ret < 0) {
		ovf_stream_close(s);
		return mgmt_fail(err, errlen, ret, "%s: %s", f->href, ovf_errmsg());
	}
	if (ovf_stream_region(s, &fd, &base) == 0) {
		ret = bdev_open_region(fd, base, size, f->href, NULL, out);
		ovf_stream_close(s); /* the engine holds its own fd */
	} else {
		src = malloc(sizeof(*src));
		if (!src) {
			ovf_stream_close(s);
			return mgmt_fail(err, errlen, -ENOMEM, "out of memory");
		}
		src->s = s;
		ret = bdev_open_callbacks(&ops, src, size, f->href, NULL, out);
	}
	if (ret < 0)
		return mgmt_fail(err, errlen, ret, "%s: %s", f->href, bdev_errmsg());
	return 0;
}

/* Copy src's whole disk into a new monolithicSparse image at dst,
   skipping what reads as zeros. One worker: a gzip'd member is read
   through one stream. */
struct import_progress {
	const struct deploy_opts *o;
	unsigned disk;
};

static int import_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct import_progress *p = opaque;

	p->o->progress(p->o->opaque, p->disk, done, total);
	return 0;
}

static int import_disk(struct bdev *src, const char *dst,
		       const struct deploy_opts *o, unsigned disk, char *err,
		       size_t errlen)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "monolithicSparse" };
	struct import_progress ip = { .o = o, .disk = disk };
	struct bdev_copy_opts cp = { .threads = 1,
				     .struct_size = sizeof(cp),
				     .progress = o->progress ? import_progress
							     : NULL,
				     .opaque = &ip };
	struct bdev_writer *w;
	struct bdev_info in;
	int ret;

	bdev_get_info(src, &in);
	co.size = (in.size + 511) & ~511ull; /* a raw disk's last partial
						sector, padded */
	ret = bdev_writer_new(dst, &co, &w);
	if (ret < 0)
		return mgmt_fail(err, errlen, ret, "%s: %s", dst, bdev_errmsg());
	ret = bdev_copy(src, w, &cp, NULL);
	if (ret < 0) {
		mgmt_fail(err, errlen, ret, "importing %s into %s: %s",
			  in.filename, dst, bdev_errmsg());
		bdev_writer_abort(w);
		return ret;
	}
	ret = bdev_writer_close(w);
	if (ret < 0)
		return mgmt_fail(err, errlen, ret, "%s: %s", dst, bdev_errmsg());
	return 0;
}

/* "ovf:/disk/ID" or "/disk/ID" -> ID. */
static const char *disk_id_of(const char *host_resource)
{
	const char *p = host_resource ? strstr(host_resource, "disk/") : NULL;

	return p ? p + 5 : NULL;
}

static int import_disks(struct ovf_pkg *pkg, const struct ovf_system *s,
			const char *dir, const struct deploy_opts *o,
			struct vm *vm, char *err, size_t errlen)
{
	const struct ovf_envelope *env = ovf_pkg_envelope(pkg);

	for (size_t i = 0; i < s->nitems; i++) {
		const struct ovf_item *it = &s->items[i];
		const struct ovf_disk *d;
		const struct ovf_file *f;
		struct bdev *b;
		char path[4200];
		int ret;

		if (!it->kind || strcmp(it->kind, "disk"))
			continue;
		d = ovf_find_disk(env, disk_id_of(it->host_resource)
					       ? disk_id_of(it->host_resource)
					       : "");
		if (!d)
			return mgmt_fail(err, errlen, -EINVAL, "%s: disk item %s "
				    "names no Disk (HostResource %s)",
				    ovf_pkg_path(pkg),
				    it->instance_id ? it->instance_id : "?",
				    it->host_resource ? it->host_resource
						      : "missing");
		if (!d->file_ref)
			continue; /* a blank disk: not created yet */
		if (d->parent_ref)
			return mgmt_fail(err, errlen, -ENOTSUP, "%s: disk %s is a "
				    "delta of %s; parent chains in packages "
				    "are not deployed yet", ovf_pkg_path(pkg),
				    d->disk_id, d->parent_ref);
		if (vm->ndisks == VM_MAX_DISKS)
			return mgmt_fail(err, errlen, -E2BIG, "%s: more than %d "
				    "disks", ovf_pkg_path(pkg), VM_MAX_DISKS);
		f = ovf_find_file(env, d->file_ref);
		if (!f)
			return mgmt_fail(err, errlen, -EINVAL, "%s: disk %s names "
				    "file %s, which References does not list",
				    ovf_pkg_path(pkg), d->disk_id, d->file_ref);
		ret = open_package_disk(pkg, f, &b, err, errlen);
		if (ret < 0)
			return ret;
		snprintf(path, sizeof(path), "%s/disk%u.vmdk", dir, vm->ndisks);
		ret = import_disk(b, path, o, vm->ndisks, err, errlen);
		bdev_close(b);
		if (ret < 0)
			return ret;
		vm->disks[vm->ndisks].path = strdup(path);
		vm->disks[vm->ndisks].source = strdup(f->href);
		vm->ndisks++;
	}
	return 0;
}

void deploy_remove_disks(const char *storage_dir, const struct vm *vm)
{
	char dir[4096];

	snprintf(dir, sizeof(dir), "%s/%s", storage_dir, vm->id);
	for (unsigned i = 0; i < vm->ndisks; i++) {
		size_t n = strlen(dir);

		/* only what deploy put there */
		if (!strncmp(vm->disks[i].path, dir, n) &&
		    vm->disks[i].path[n] == '/')
			unlink(vm->disks[i].path);
	}
	rmdir(dir);
}

int deploy_package(struct inventory *inv, const char *storage_dir,
		   const struct deploy_opts *o, struct vm **out, char *err,
		   size_t errlen)
{
	const struct ovf_envelope *env;
	const struct ovf_system *s;
	struct ovf_pkg *pkg;
	struct vm *vm;
	char dir[4096];
	int ret;

	ret = ovf_open(o->package, &pkg);
	if (ret < 0)
		return mgmt_fail(err, errlen, ret, "%s", ovf_errmsg());
	ret = check_package(pkg, o, err, errlen);
	if (ret < 0)
		goto err_close;
	env = ovf_pkg_envelope(pkg);
	s = env->content;
	if (!s || s->collection) {
		ret = mgmt_fail(err, errlen, -ENOTSUP, "%s: %s", o->package,
			   s ? "a VirtualSystemCollection; deploy its members "
			       "one by one (not supported yet)"
			     : "no VirtualSystem");
		goto err_close;
	}
	vm = calloc(1, sizeof(*vm));
	if (!vm) {
		ret = -ENOMEM;
		goto err_close;
	}
	vm->name = strdup(o->name ? o->name : s->name ? s->name
					  : s->id ? s->id : "vm");
	vm->id = inv_new_id(inv, vm->name);
	vm->package = realpath(o->package, NULL);
	vm->os = mgmt_strdup_or_null(s->os_description);
	vm->cpus = s->cpus ? s->cpus : 1;
	vm->memory = s->memory_bytes ? s->memory_bytes : DEFAULT_MEMORY;
	vm->kernel = mgmt_strdup_or_null(o->kernel);
	vm->initrd = mgmt_strdup_or_null(o->initrd);
	vm->cmdline = mgmt_strdup_or_null(o->cmdline);
	if (asprintf(&vm->last_event, "deployed from %s", o->package) < 0)
		vm->last_event = NULL;
	snprintf(dir, sizeof(dir), "%s/%s", storage_dir, vm->id);
	if ((mkdir(storage_dir, 0700) < 0 && errno != EEXIST) ||
	    mkdir(dir, 0700) < 0) {
		ret = mgmt_fail(err, errlen, -errno, "storage folder %s: %s", dir,
			   strerror(errno));
		vm_free(vm);
		goto err_close;
	}
	ret = import_disks(pkg, s, dir, o, vm, err, errlen);
	if (ret == 0)
		ret = inv_add(inv, vm);
	if (ret < 0) {
		if (!err[0])
			mgmt_fail(err, errlen, ret, "%s: %s", o->package,
			     strerror(-ret));
		deploy_remove_disks(storage_dir, vm);
		vm_free(vm);
		goto err_close;
	}
	*out = vm;
err_close:
	ovf_close(pkg);
	return ret;
}

int export_vm(const char *ovf_tool, const struct vm *vm, const char *out,
	      char *err, size_t errlen)
{
	char cpus[16], mem[32], msg[1024];
	char *argv[16 + 2 * VM_MAX_DISKS];
	int argc = 0, pfd[2], status;
	ssize_t n, got = 0;
	pid_t pid;

	if (vm->power != VM_OFF)
		return mgmt_fail(err, errlen, -EBUSY, "%s is running: power it off "
			    "before exporting its disks", vm->id);
	if (!vm->ndisks)
		return mgmt_fail(err, errlen, -EINVAL, "%s has no disk to export",
			    vm->id);
	snprintf(cpus, sizeof(cpus), "%u", vm->cpus ? vm->cpus : 1);
	snprintf(mem, sizeof(mem), "%lluM",
		 (unsigned long long)(vm->memory >> 20));
	argv[argc++] = (char *)ovf_tool;
	argv[argc++] = "create";
	argv[argc++] = "--name";
	argv[argc++] = vm->id; /* a file name, unlike the display name */
	argv[argc++] = "--cpus";
	argv[argc++] = cpus;
	argv[argc++] = "--memory";
	argv[argc++] = mem;
	for (unsigned i = 0; i < vm->ndisks; i++) {
		argv[argc++] = "--disk";
		argv[argc++] = vm->disks[i].path;
	}
	if (vm->os) {
		argv[argc++] = "--os-description";
		argv[argc++] = vm->os;
	}
	argv[argc++] = (char *)out;
	argv[argc] = NULL;
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return mgmt_fail(err, errlen, -errno, "pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return mgmt_fail(err, errlen, -errno, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		dup2(pfd[1], 2);
		dup2(pfd[1], 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	while (got < (ssize_t)sizeof(msg) - 1 &&
	       (n = read(pfd[0], msg + got, sizeof(msg) - 1 - (size_t)got)) > 0)
		got += n;
	msg[got] = '\0';
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		msg[strcspn(msg, "\n")] = '\0';
		return mgmt_fail(err, errlen, -EIO, "exporting %s to %s: %s", vm->id,
			    out, got ? msg : "the ovf tool failed");
	}
	return 0;
}
