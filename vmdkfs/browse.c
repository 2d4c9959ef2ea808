/* SPDX-License-Identifier: Apache-2.0 */
/*
 * browse.c - the sub-mount manager: find each guest filesystem, mount it
 * read-only in the staging folder with the kernel (loop device) or with a
 * userspace driver, and unmount everything again on the way out.
 */
#include "browse.h"

#include <endian.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROBE_BYTES 4096u

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

const char *browse_probe_fstype(const uint8_t *sb, size_t len)
{
	if (len < PROBE_BYTES)
		return NULL;
	if (sb[1024 + 56] == 0x53 && sb[1024 + 57] == 0xef)
		return "ext4"; /* ext2/3/4 share a magic; ext4 reads them all */
	if (!memcmp(sb + 3, "NTFS    ", 8))
		return "ntfs";
	if (sb[510] == 0x55 && sb[511] == 0xaa &&
	    (!memcmp(sb + 54, "FAT12   ", 8) ||
	     !memcmp(sb + 54, "FAT16   ", 8) ||
	     !memcmp(sb + 82, "FAT32   ", 8)))
		return "vfat";
	if (!memcmp(sb + 3, "EXFAT   ", 8))
		return "exfat";
	if (!memcmp(sb + 4086, "SWAPSPACE2", 10) ||
	    !memcmp(sb + 4086, "SWAP-SPACE", 10))
		return "swap";
	return NULL;
}

static bool find_program(const char *name)
{
	const char *path = getenv("PATH");
	char buf[4096];
	const char *p, *e;

	if (!path || !*path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	for (p = path; *p; p = *e ? e + 1 : e) {
		e = strchrnul(p, ':');
		if (snprintf(buf, sizeof(buf), "%.*s/%s", (int)(e - p), p,
			     name) < (int)sizeof(buf) &&
		    access(buf, X_OK) == 0)
			return true;
	}
	return false;
}

/*
 * Runs argv and waits for it; what it printed goes to out (trimmed).
 * Returns its exit status, or -errno when it could not run.
 */
static int run(char *const argv[], char *out, size_t outsz)
{
	int pfd[2], status;
	size_t n = 0;
	ssize_t r;
	pid_t pid;

	if (out && outsz)
		out[0] = '\0';
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int err = -errno;

		close(pfd[0]);
		close(pfd[1]);
		return err;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		/* Our /dev/fuse descriptors must not live on in a driver's
		 * daemon, or our mounts could never end. */
		close_range(3, ~0u, 0);
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run %s: %s", argv[0], strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	/* A daemonising driver may keep the pipe open in its daemon: read
	 * until our child has exited and the pipe has nothing more now. */
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		struct pollfd pf = { .fd = pfd[0], .events = POLLIN };
		bool exited = false;
		char tmp[512];
		pid_t w;

		poll(&pf, 1, 100);
		while ((r = read(pfd[0], tmp, sizeof(tmp))) > 0) {
			if (out && n + 1 < outsz) {
				size_t c = (size_t)r < outsz - 1 - n ?
					   (size_t)r : outsz - 1 - n;

				memcpy(out + n, tmp, c);
				n += c;
				out[n] = '\0';
			}
		}
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			exited = true;
		else if (w < 0 && errno != EINTR) {
			close(pfd[0]);
			return -errno;
		}
		if (exited || r == 0) {
			if (!exited)
				while (waitpid(pid, &status, 0) < 0)
					if (errno != EINTR) {
						close(pfd[0]);
						return -errno;
					}
			if (exited) {
				while ((r = read(pfd[0], tmp, sizeof(tmp))) > 0
				       && out && n + 1 < outsz) {
					size_t c = (size_t)r < outsz - 1 - n ?
						   (size_t)r : outsz - 1 - n;

					memcpy(out + n, tmp, c);
					n += c;
					out[n] = '\0';
				}
			}
			break;
		}
	}
	close(pfd[0]);
	while (out && n && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	for (size_t i = 0; out && i < n; i++)
		if (out[i] == '\n')
			out[i] = ' ';
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Undoes the octal escapes (\040 for a space...) of a mountinfo field. */
static void mountinfo_unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

/* Whether pid is a live vmdkfs (not a process that took the number later). */
static bool vmdkfs_alive(long pid)
{
	char path[64], comm[32] = "";
	FILE *f;

	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
		return false;
	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	f = fopen(path, "re");
	if (!f)
		return true; /* no /proc to ask: leave it alone */
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	return !strncmp(comm, "vmdkfs", 6);
}

/* Detaches the mount on dir now, to go when nothing uses it any more: as
   root with umount2, otherwise with fusermount3 (a user's mounts are all
   FUSE). True when it is detached. */
static bool unmount_lazy(const char *dir)
{
	if (geteuid() == 0)
		return umount2(dir, MNT_DETACH | UMOUNT_NOFOLLOW) == 0;

	char *argv[] = { "fusermount3", "-uz", "-q", (char *)dir, NULL };

	return run(argv, NULL, 0) == 0;
}

/* Lazily unmounts everything mounted under dir, deepest first. Returns
   how many mounts it took down. */
static unsigned unmount_under(const char *dir)
{
	size_t dl = strlen(dir);
	char **points = NULL, line[4096];
	unsigned n = 0, done = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		char *point = NULL, *save = NULL, *tok = strtok_r(line, " ", &save);
		char **grown;

		for (int i = 0; tok && i < 4; i++) /* the 5th field */
			tok = strtok_r(NULL, " ", &save);
		if (!tok)
			continue;
		mountinfo_unescape(tok);
		if (strncmp(tok, dir, dl) || tok[dl] != '/')
			continue;
		point = strdup(tok);
		grown = point ? realloc(points, (n + 1) * sizeof(*points)) : NULL;
		if (!grown) {
			free(point);
			break;
		}
		points = grown;
		points[n++] = point;
	}
	fclose(f);
	/* mountinfo lists a mount after the one it sits on */
	for (unsigned i = n; i-- > 0;) {
		if (unmount_lazy(points[i]))
			done++;
		free(points[i]);
	}
	free(points);
	return done;
}

/*
 * Staging folders are named vmdkfs.<pid>.XXXXXX. A daemon that was killed
 * (SIGKILL, OOM) could not take its guest filesystems and its staging view
 * down: they stay mounted, with fuse2fs helpers or loop devices behind
 * them, reading a disk nobody serves. The next vmdkfs of the same user
 * takes down what such a dead daemon left in base, and says so.
 */
static void sweep_stale_staging(const char *base)
{
	DIR *d = opendir(base);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char dir[512], sub[600];
		struct statfs sfs;
		struct stat st;
		char *end;
		long pid;
		unsigned n;
		DIR *fsd;

		if (strncmp(de->d_name, "vmdkfs.", 7))
			continue;
		pid = strtol(de->d_name + 7, &end, 10);
		if (end == de->d_name + 7 || *end != '.' || pid <= 0 ||
		    vmdkfs_alive(pid))
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", base, de->d_name);
		if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
		    st.st_uid != geteuid())
			continue;
		/* a staging view that still answers statfs (never cached)
		   belongs to a live daemon, one in another PID namespace say;
		   a dead daemon's says ENOTCONN */
		snprintf(sub, sizeof(sub), "%s/dev", dir);
		if (statfs(sub, &sfs) == 0 && sfs.f_type == FUSE_SUPER_MAGIC)
			continue;
		n = unmount_under(dir);
		snprintf(sub, sizeof(sub), "%s/fs", dir);
		fsd = opendir(sub);
		if (fsd) {
			struct dirent *t;

			while ((t = readdir(fsd)))
				if (t->d_name[0] != '.') {
					snprintf(sub, sizeof(sub), "%s/fs/%s", dir,
						 t->d_name);
					rmdir(sub);
				}
			closedir(fsd);
		}
		snprintf(sub, sizeof(sub), "%s/fs", dir);
		rmdir(sub);
		snprintf(sub, sizeof(sub), "%s/dev", dir);
		rmdir(sub);
		if (rmdir(dir) == 0 || n)
			vmdkfs_log("took down %u mount%s left in %s by vmdkfs "
				   "process %ld, which is gone", n,
				   n == 1 ? "" : "s", dir, pid);
	}
	closedir(d);
}

int browse_new(enum vmdkfs_browse_mode mode, struct browse **out)
{
	const char *base = "/tmp";
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	struct browse *br;
	char p[256];
	int ret;

	br = calloc(1, sizeof(*br));
	if (!br)
		return -ENOMEM;
	br->mode = mode;
	if (geteuid() == 0) {
		if (mkdir("/run/vmdkfs", 0700) == 0 || errno == EEXIST)
			base = "/run/vmdkfs";
	} else if (xdg && *xdg && strlen(xdg) < 150) {
		base = xdg;
	}
	sweep_stale_staging(base);
	snprintf(br->staging, sizeof(br->staging), "%s/vmdkfs.%ld.XXXXXX", base,
		 (long)getpid());
	if (!mkdtemp(br->staging)) {
		ret = -errno;
		vmdkfs_log("cannot create a staging folder in %s: %s", base,
			   strerror(errno));
		goto err_free;
	}
	snprintf(br->devdir, sizeof(br->devdir), "%s/dev", br->staging);
	snprintf(p, sizeof(p), "%s/fs", br->staging);
	if (mkdir(br->devdir, 0700) < 0 || mkdir(p, 0700) < 0) {
		ret = -errno;
		vmdkfs_log("cannot create %.200s: %s", p, strerror(errno));
		goto err_rmdir;
	}
	*out = br;
	return 0;

err_rmdir:
	rmdir(br->devdir);
	rmdir(br->staging);
err_free:
	free(br);
	return ret;
}

static bool mount_kernel(struct browse_target *t)
{
	char opts[64];
	char *argv[8];
	int ret;

	snprintf(opts, sizeof(opts), "loop,ro%s",
		 !strcmp(t->fstype, "vfat") ? ",utf8" : "");
	argv[0] = "mount";
	argv[1] = "-o";
	argv[2] = opts;
	argv[3] = t->source;
	argv[4] = t->dir;
	argv[5] = NULL;
	ret = run(argv, t->reason, sizeof(t->reason));
	if (ret != 0 && !strcmp(t->fstype, "ext4")) {
		/* A journal that needs replay cannot be replayed read-only. */
		snprintf(opts, sizeof(opts), "loop,ro,noload");
		ret = run(argv, t->reason, sizeof(t->reason));
	}
	if (ret != 0) {
		if (!t->reason[0])
			snprintf(t->reason, sizeof(t->reason),
				 "mount exited with status %d", ret);
		return false;
	}
	snprintf(t->driver, sizeof(t->driver), "kernel");
	return true;
}

static bool mount_fuse(struct browse_target *t)
{
	const char *prog = NULL;
	char *argv[8];
	int ret;

	if (!strcmp(t->fstype, "ext4"))
		prog = "fuse2fs";
	else if (!strcmp(t->fstype, "ntfs"))
		prog = "ntfs-3g";
	else if (!strcmp(t->fstype, "vfat"))
		prog = "fusefat";
	if (!prog) {
		snprintf(t->reason, sizeof(t->reason),
			 "no userspace driver for %s", t->fstype);
		return false;
	}
	if (!find_program(prog)) {
		snprintf(t->reason, sizeof(t->reason),
			 "%s is not installed (Debian package %s)", prog,
			 !strcmp(prog, "ntfs-3g") ? "ntfs-3g" : prog);
		return false;
	}
	argv[0] = (char *)prog;
	argv[1] = "-o";
	argv[2] = "ro";
	argv[3] = t->source;
	argv[4] = t->dir;
	argv[5] = NULL;
	ret = run(argv, t->reason, sizeof(t->reason));
	if (ret != 0) {
		if (!t->reason[0])
			snprintf(t->reason, sizeof(t->reason),
				 "%s exited with status %d", prog, ret);
		return false;
	}
	/* Userspace drivers daemonise before the mount is visible. */
	for (int i = 0; i < 50; i++) {
		struct stat a, b;
		char parent[600];

		snprintf(parent, sizeof(parent), "%s/..", t->dir);
		if (stat(t->dir, &a) == 0 && stat(parent, &b) == 0 &&
		    a.st_dev != b.st_dev)
			break;
		sleep_ms(20);
	}
	snprintf(t->driver, sizeof(t->driver), "%s", prog);
	t->reason[0] = '\0';
	return true;
}

static void mount_target(struct browse *br, struct browse_target *t)
{
	bool kernel = br->mode == VMDKFS_BROWSE_KERNEL ||
		      (br->mode == VMDKFS_BROWSE_AUTO && geteuid() == 0);

	if (!t->fstype[0]) {
		snprintf(t->reason, sizeof(t->reason),
			 "no filesystem recognised (not ext2/3/4, FAT or NTFS)");
		return;
	}
	if (!strcmp(t->fstype, "swap")) {
		snprintf(t->reason, sizeof(t->reason),
			 "swap space holds no files");
		return;
	}
	if (mkdir(t->dir, 0700) < 0 && errno != EEXIST) {
		snprintf(t->reason, sizeof(t->reason), "cannot create %.200s: %s",
			 t->dir, strerror(errno));
		return;
	}
	if (kernel) {
		t->mounted = mount_kernel(t);
		/* Fall back to a userspace driver when the kernel lacks one
		 * (automatic mode only: a forced mode reports the failure). */
		if (!t->mounted && br->mode == VMDKFS_BROWSE_AUTO) {
			char kreason[sizeof(t->reason)];

			snprintf(kreason, sizeof(kreason), "%s", t->reason);
			t->mounted = mount_fuse(t);
			if (!t->mounted) {
				size_t l = strlen(t->reason);

				snprintf(t->reason + l, sizeof(t->reason) - l,
					 "; kernel: %.200s", kreason);
			}
		}
	} else {
		t->mounted = mount_fuse(t);
	}
	if (!t->mounted)
		rmdir(t->dir);
}

static void build_status(struct browse *br)
{
	FILE *f = open_memstream(&br->status, &br->status_len);
	unsigned i;

	if (!f)
		return;
	for (i = 0; i < br->count; i++) {
		struct browse_target *t = &br->targets[i];

		fprintf(f, "%s\t%s\t", t->name, t->fstype[0] ? t->fstype : "-");
		if (t->mounted)
			fprintf(f, "mounted read-only (%s)\n",
				!strcmp(t->driver, "kernel") ?
				"kernel, loop device" : t->driver);
		else
			fprintf(f, "not mounted: %s\n", t->reason);
	}
	fclose(f);
}

void browse_mount_all(struct browse *br, struct vmdkfs *fs)
{
	unsigned n = fs->pt->count ? fs->pt->count : 1, i;
	uint8_t *sb;

	br->targets = calloc(n, sizeof(*br->targets));
	sb = malloc(PROBE_BYTES);
	if (!br->targets || !sb) {
		free(sb);
		return;
	}
	for (i = 0; i < n; i++) {
		const struct vmdkfs_window *w = fs->pt->count ? &fs->parts[i] :
						&fs->disk;
		struct browse_target *t;
		const char *type = NULL;

		if (fs->pt->count && fs->pt->parts[i].extended)
			continue;
		t = &br->targets[br->count++];
		snprintf(t->name, sizeof(t->name), "%s", w->name);
		if (fs->pt->count)
			snprintf(t->source, sizeof(t->source),
				 "%s/partitions/%s", br->devdir, w->name);
		else
			snprintf(t->source, sizeof(t->source), "%s/disk",
				 br->devdir);
		snprintf(t->dir, sizeof(t->dir), "%s/fs/%s", br->staging,
			 w->name);
		if (w->size >= PROBE_BYTES) {
			int ret = bdev_pread(fs->bdev, sb, PROBE_BYTES,
					     w->offset);

			if (ret < 0) {
				snprintf(t->reason, sizeof(t->reason),
					 "cannot read its first bytes: %s",
					 bdev_errmsg());
				continue;
			}
			type = browse_probe_fstype(sb, PROBE_BYTES);
		}
		snprintf(t->fstype, sizeof(t->fstype), "%s", type ? type : "");
		mount_target(br, t);
		if (t->mounted)
			vmdkfs_log("fs/%s: %s mounted (%s)", t->name, t->fstype,
				   t->driver);
		else
			vmdkfs_log("fs/%s: not mounted: %s", t->name,
				   t->reason);
	}
	free(sb);
	build_status(br);
}

/* Unmounts dir: retries while busy (a driver may still be exiting). */
static void unmount_dir(const char *dir, bool is_fuse)
{
	int i;

	for (i = 0; i < 50; i++) {
		if (geteuid() == 0) {
			if (umount2(dir, UMOUNT_NOFOLLOW) == 0)
				return;
			if (errno == EINVAL || errno == ENOENT)
				return; /* not mounted (any more) */
		} else {
			char *argv[] = { "fusermount3", "-u", "-q", (char *)dir,
					 NULL };

			if (is_fuse && run(argv, NULL, 0) == 0)
				return;
		}
		sleep_ms(100);
	}
	vmdkfs_log("%s stays busy; detaching it lazily", dir);
	unmount_lazy(dir);
}

void browse_unmount_all(struct browse *br)
{
	unsigned i;

	for (i = br->count; i-- > 0;) {
		struct browse_target *t = &br->targets[i];

		if (!t->mounted)
			continue;
		unmount_dir(t->dir, strcmp(t->driver, "kernel") != 0);
		t->mounted = false;
		rmdir(t->dir);
	}
}

void browse_free(struct browse *br)
{
	char p[256];

	if (!br)
		return;
	snprintf(p, sizeof(p), "%s/fs", br->staging);
	rmdir(p);
	rmdir(br->devdir);
	rmdir(br->staging);
	free(br->targets);
	free(br->status);
	free(br);
}

const struct browse_target *browse_find(const struct browse *br,
					const char *name, size_t len)
{
	unsigned i;

	for (i = 0; i < br->count; i++)
		if (strlen(br->targets[i].name) == len &&
		    !memcmp(br->targets[i].name, name, len))
			return &br->targets[i];
	return NULL;
}
