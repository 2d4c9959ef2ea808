/* SPDX-License-Identifier: Apache-2.0 */
/*
 * patch.c - `ovkdisk patch`: change files inside the disk of a stopped VM
 * without touching the disk until the change is reviewed.
 *
 * The files are copied into a redo child (IMAGE-patch.vmdk, a delta disk
 * made by `vmdkfs -o snapshot=CHILD`) through fuse2fs on the child's raw
 * disk or partition; then the base and the child are both mounted with
 * `vmdkfs --browse` and `diff -rq` lists every file that differs. The child
 * stays until `--commit` merges it into the image (the engine's
 * crash-safe bdev_commit) or `--discard` deletes it.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ovkdisk.h"

/* IMAGE without .vmdk, then -patch.vmdk (malloc'd). */
static char *child_of(const char *image)
{
	size_t n = strlen(image);
	char *out;

	if (n > 5 && !strcmp(image + n - 5, ".vmdk"))
		n -= 5;
	if (asprintf(&out, "%.*s-patch.vmdk", (int)n, image) < 0)
		return NULL;
	return out;
}

static pid_t spawn(char *const argv[])
{
	pid_t pid = fork();

	if (pid == 0) {
		execvp(argv[0], argv);
		fprintf(stderr, "ovkdisk: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

static int run_wait(char *const argv[], bool quiet)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (quiet && !freopen("/dev/null", "w", stdout))
			_exit(127);
		execvp(argv[0], argv);
		fprintf(stderr, "ovkdisk: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -EINTR;
}

/* Whether dir is a mount point now (its device differs from its
   parent's). */
static bool mounted(const char *dir)
{
	char parent[PATH_MAX];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s/..", dir);
	return stat(dir, &a) == 0 && stat(parent, &b) == 0 &&
	       a.st_dev != b.st_dev;
}

/* Start a FUSE program in the foreground (argv) and wait until mnt is
   mounted. Returns its pid, or -1 when it exited first or took 60 s. */
static pid_t mount_fg(char *const argv[], const char *mnt)
{
	pid_t pid = spawn(argv);
	int st;

	if (pid < 0)
		return -1;
	for (int i = 0; i < 600; i++) {
		if (mounted(mnt))
			return pid;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			fprintf(stderr, "ovkdisk: %s could not mount %s\n",
				argv[0], mnt);
			return -1;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 100000000 }, NULL);
	}
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
	fprintf(stderr, "ovkdisk: %s did not mount %s within 60 s\n", argv[0],
		mnt);
	return -1;
}

/* Unmount mnt and wait for the program serving it to end (so that its
   files are closed and unlocked). */
static int umount_wait(const char *mnt, pid_t pid)
{
	char *argv[] = { "fusermount3", "-u", (char *)mnt, NULL };
	int st, ret = run_wait(argv, false);

	if (ret != 0)
		kill(pid, SIGTERM);
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return ret == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

/* Mount base and child with --browse and print what differs. */
static int review(const char *vmdkfs, const char *image, const char *child,
		  const char *tmp)
{
	char b[256], c[256], bf[300], cf[300];
	pid_t pb, pc;
	int ret;

	snprintf(b, sizeof(b), "%.200s/base", tmp);
	snprintf(c, sizeof(c), "%.200s/patched", tmp);
	snprintf(bf, sizeof(bf), "%s/fs", b);
	snprintf(cf, sizeof(cf), "%s/fs", c);
	mkdir(b, 0700);
	mkdir(c, 0700);
	{
		char *av[] = { (char *)vmdkfs, "-f", "--browse",
			       (char *)image, b, NULL };
		pb = mount_fg(av, b);
	}
	if (pb < 0)
		return -EIO;
	{
		char *av[] = { (char *)vmdkfs, "-f", "--browse",
			       (char *)child, c, NULL };
		pc = mount_fg(av, c);
	}
	if (pc < 0) {
		umount_wait(b, pb);
		return -EIO;
	}
	printf("review: files that differ between %s and %s:\n", image,
	       child);
	fflush(stdout);
	{
		char *av[] = { "diff", "-rq", bf, cf, NULL };
		ret = run_wait(av, false);
	}
	umount_wait(c, pc);
	umount_wait(b, pb);
	return ret == 0 || ret == 1 ? 0 : -EIO;
}

int cmd_patch(const struct ovkdisk_opts *o, const char *vmdkfs,
	      const char *image_arg)
{
	char *image = realpath(image_arg, NULL), *child = NULL;
	char tmp[] = "/tmp/ovkdisk-patch-XXXXXX", d[64], f[64];
	char target[PATH_MAX], opt[PATH_MAX + 16];
	pid_t pd, pf;
	int ret = 1;

	if (!image || !(child = child_of(image))) {
		fprintf(stderr, "ovkdisk: %s: %s\n", image_arg,
			strerror(errno));
		goto out;
	}
	if (o->patch_action) {
		if (access(child, F_OK) < 0) {
			fprintf(stderr, "ovkdisk: no patch of %s is pending "
				"(%s does not exist)\n", image, child);
			goto out;
		}
		if (o->patch_action == 'd') {
			if (unlink(child) < 0) {
				fprintf(stderr, "ovkdisk: %s: %s\n", child,
					strerror(errno));
				goto out;
			}
			printf("patch discarded: %s deleted, %s unchanged\n",
			       child, image);
			ret = 0;
			goto out;
		}
		int r = bdev_commit(child);
		if (r < 0) {
			fprintf(stderr, "ovkdisk: committing %s: %s\n", child,
				*bdev_errmsg() ? bdev_errmsg() : strerror(-r));
			goto out;
		}
		printf("patch committed into %s\n", image);
		ret = 0;
		goto out;
	}
	if (!o->ncopies) {
		fprintf(stderr, "ovkdisk patch: give --copy SRC:DEST, or "
			"--commit or --discard\n");
		goto out;
	}
	if (access(child, F_OK) == 0) {
		fprintf(stderr, "ovkdisk: a patch of %s is pending in %s: "
			"--commit or --discard it first\n", image, child);
		goto out;
	}
	if (!mkdtemp(tmp)) {
		fprintf(stderr, "ovkdisk: %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	snprintf(d, sizeof(d), "%s/disk", tmp);
	snprintf(f, sizeof(f), "%s/fs", tmp);
	mkdir(d, 0700);
	mkdir(f, 0700);
	snprintf(opt, sizeof(opt), "snapshot=%s", child);
	{
		char *av[] = { (char *)vmdkfs, "-f", "-o", opt, image, d,
			       NULL };
		pd = mount_fg(av, d);
	}
	if (pd < 0)
		goto out_rm;
	if (o->partition)
		snprintf(target, sizeof(target), "%s/partitions/%.200s", d,
			 o->partition);
	else
		snprintf(target, sizeof(target), "%s/disk", d);
	{
		char *av[] = { "fuse2fs", "-f", target, f, "-o",
			       "rw,fakeroot", NULL };
		pf = mount_fg(av, f);
	}
	if (pf < 0) {
		umount_wait(d, pd);
		unlink(child);
		goto out_rm;
	}
	ret = 0;
	for (unsigned i = 0; i < o->ncopies && ret == 0; i++) {
		const char *src = o->copies[i];
		const char *colon = strrchr(src, ':');
		char s[PATH_MAX], dst[PATH_MAX], dir[PATH_MAX];

		if (!colon || colon[1] != '/') {
			fprintf(stderr, "ovkdisk: --copy %s: expected "
				"SRC:/PATH/IN/GUEST\n", src);
			ret = 1;
			break;
		}
		snprintf(s, sizeof(s), "%.*s", (int)(colon - src), src);
		snprintf(dst, sizeof(dst), "%s%s", f, colon + 1);
		snprintf(dir, sizeof(dir), "%s", dst);
		{
			char *av1[] = { "mkdir", "-p", dirname(dir), NULL };
			char *av2[] = { "cp", "-r", s, dst, NULL };

			if (run_wait(av1, false) || run_wait(av2, false)) {
				fprintf(stderr, "ovkdisk: copying %s to %s in "
					"the guest failed\n", s, colon + 1);
				ret = 1;
			}
		}
	}
	if (umount_wait(f, pf) < 0) {
		fprintf(stderr, "ovkdisk: fuse2fs failed on %s\n", target);
		ret = 1;
	}
	if (umount_wait(d, pd) < 0) {
		fprintf(stderr, "ovkdisk: vmdkfs failed on %s\n", child);
		ret = 1;
	}
	if (ret) {
		unlink(child);
		fprintf(stderr, "ovkdisk: nothing was changed (%s removed)\n",
			child);
		goto out_rm;
	}
	if (review(vmdkfs, image, child, tmp) < 0)
		fprintf(stderr, "ovkdisk: warning: the review mounts failed; "
			"the patch is in %s all the same\n", child);
	printf("patch pending in %s: `ovkdisk patch --commit %s` merges it, "
	       "`ovkdisk patch --discard %s` drops it\n", child, image_arg,
	       image_arg);
out_rm: {
		char *av[] = { "rm", "-rf", tmp, NULL };
		run_wait(av, false);
	}
out:
	free(child);
	free(image);
	return ret ? 1 : 0;
}
