/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main.c - vmdkfs: options, checks a user can act on, daemonising, and the
 * order in which the image, the two FUSE sessions and the guest
 * filesystems are set up and torn down.
 */
#include "vmdkfs.h"
#include "browse.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#ifndef OVK_VERSION
#define OVK_VERSION "0"
#endif

static const char usage[] =
"Usage: vmdkfs [OPTIONS] IMAGE MOUNTPOINT\n"
"       mount -t fuse.vmdkfs IMAGE MOUNTPOINT -o OPTIONS\n"
"\n"
"Mount a disk image (VMDK of any kind, delta chains, or raw) as a folder:\n"
"  disk          the whole virtual disk as one raw file\n"
"  partitions/   one raw file per MBR or GPT partition (p1-linux, ...)\n"
"  info.json     what `vmdk info --output=json` says about the image\n"
"  fs/           with browse: each guest filesystem, mounted read-only;\n"
"                fs/status.txt says what was mounted and why not\n"
"\n"
"Options (-o NAME[,NAME...] or as shown):\n"
"  -o ro             read-only (default)\n"
"  -o rw             writes to disk and partitions/ go to the image through\n"
"                    the engine, which locks it (a second writer is refused).\n"
"                    Through mount(8) or fstab, which always pass 'rw', say\n"
"                    '-o readwrite' instead\n"
"  -o snapshot[=CHILD]  writes go to a new delta child CHILD (default:\n"
"                    IMAGE-snapshot-DATE.vmdk beside IMAGE); the base stays\n"
"                    untouched. Review, then `vmdk commit CHILD` or delete it\n"
"  -o browse, --browse\n"
"                    mount guest filesystems under fs/: with the kernel (loop\n"
"                    device) as root, else with fuse2fs, ntfs-3g, fusefat\n"
"  -o browse=kernel|fuse|auto   force the kernel or the userspace drivers\n"
"  -o format=vmdk|raw  do not probe the image format\n"
"  -o share          read without taking the image's locks (like qemu-img -U)\n"
"  -o allow_escape   follow extent and parent names that leave the\n"
"                    descriptor's folder (absolute parent paths)\n"
"  -o max_threads=N  FUSE worker threads, one per request in flight\n"
"                    (default 16; started as requests overlap, then kept)\n"
"  -o max_idle_threads=N  accepted for compatibility; idle workers are\n"
"                    always kept\n"
"  -o io_uring[=on|off|auto]  serve requests over io_uring, one pinned\n"
"                    thread per CPU, when the kernel offers FUSE over\n"
"                    io_uring (Linux 6.14+, fuse module parameter\n"
"                    enable_uring=1); else /dev/fuse, with one log line.\n"
"                    auto does the same quietly. Default: off\n"
"  -f                stay in the foreground\n"
"  -d                debug: foreground, log every FUSE request\n"
"  -s                single-threaded\n"
"  -h, --help        this help;  -V, --version  the version\n"
"  Other -o options go to FUSE (allow_other, ...).\n"
"\n"
"Unmount with `fusermount3 -u MOUNTPOINT` or `umount MOUNTPOINT`: guest\n"
"filesystems are unmounted first, then the image is closed cleanly.\n"
"With browse, guest filesystems are mounted in a private staging folder,\n"
"/run/vmdkfs/vmdkfs.PID.XXXXXX as root, else under $XDG_RUNTIME_DIR or\n"
"/tmp. If a daemon is killed outright (SIGKILL), the next browse mount of\n"
"the same user takes down what it left there and says so.\n"
"\n"
"mount(8) and fstab: the type fuse.vmdkfs runs `vmdkfs` found on mount's\n"
"PATH (install it in /usr/bin or /usr/local/bin). mount(8) passes 'rw'\n"
"unless told 'ro', so a bare 'rw' from it keeps the image read-only; write\n"
"with 'readwrite'.\n"
"\n"
"Examples:\n"
"  vmdkfs disk.vmdk /mnt/disk\n"
"  vmdkfs --browse disk.vmdk /mnt/disk && clamscan -r /mnt/disk/fs\n"
"  mount -t fuse.vmdkfs /vm/disk.vmdk /mnt/disk -o browse\n"
"  mount -t fuse.vmdkfs /vm/disk.vmdk /mnt/disk -o readwrite\n"
"  fstab:  /vm/disk.vmdk /mnt/disk fuse.vmdkfs ro,browse,nofail 0 0\n"
"  fstab:  /vm/disk.vmdk /mnt/disk fuse.vmdkfs readwrite,noauto 0 0\n";

struct options {
	const char *image;
	const char *mountpoint;
	int ro, rw, readwrite, snapshot, browse, share, allow_escape;
	char *browse_mode;
	char *format;
	char *snapshot_path;
	char *io_uring_mode;
	int io_uring;
	int foreground, debug, single, help, version;
	unsigned max_threads, max_idle_threads;
};

#define OPT(t, f, v) { t, offsetof(struct options, f), v }
static const struct fuse_opt vmdkfs_opts[] = {
	OPT("ro", ro, 1),
	OPT("rw", rw, 1),
	OPT("readwrite", readwrite, 1),
	OPT("snapshot", snapshot, 1),
	OPT("browse", browse, 1),
	OPT("--browse", browse, 1),
	OPT("browse=%s", browse_mode, 0),
	OPT("--browse=%s", browse_mode, 0),
	OPT("format=%s", format, 0),
	OPT("snapshot=%s", snapshot_path, 0),
	OPT("share", share, 1),
	OPT("allow_escape", allow_escape, 1),
	OPT("max_threads=%u", max_threads, 0),
	OPT("io_uring", io_uring, 1),
	OPT("io_uring=%s", io_uring_mode, 0),
	OPT("max_idle_threads=%u", max_idle_threads, 0),
	OPT("-f", foreground, 1),
	OPT("-d", debug, 1),
	OPT("debug", debug, 1),
	OPT("-s", single, 1),
	OPT("-h", help, 1),
	OPT("--help", help, 1),
	OPT("-V", version, 1),
	OPT("--version", version, 1),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct options *o = data;

	if (key != FUSE_OPT_KEY_NONOPT)
		return 1; /* keep for FUSE */
	if (!o->image) {
		o->image = arg;
		return 0;
	}
	if (!o->mountpoint) {
		o->mountpoint = arg;
		return 0;
	}
	vmdkfs_log("unexpected argument '%s' (one IMAGE and one MOUNTPOINT)",
		   arg);
	return -1;
}

/* True when mount(8) started us (through mount.fuse3): it always adds
 * 'rw' unless told 'ro', so a bare 'rw' then says nothing. */
static bool started_by_mount(void)
{
	pid_t pid = getppid();
	int depth;

	for (depth = 0; depth < 3 && pid > 1; depth++) {
		char path[64], buf[512];
		FILE *f;
		char *p;
		int ppid = 0;

		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		f = fopen(path, "r");
		if (!f)
			return false;
		if (!fgets(buf, sizeof(buf), f)) {
			fclose(f);
			return false;
		}
		fclose(f);
		p = strchr(buf, '(');
		if (p && (!strncmp(p, "(mount)", 7) ||
			  !strncmp(p, "(mount.fuse", 11)))
			return true;
		p = strrchr(buf, ')');
		if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
			return false;
		pid = ppid;
	}
	return false;
}

/* Checks the user can act on before anything is mounted. */
static int check_mountpoint(const char *mp)
{
	struct stat st, parent;
	char up[PATH_MAX + 4];
	DIR *d;
	struct dirent *de;

	if (stat(mp, &st) < 0) {
		if (errno == ENOTCONN)
			vmdkfs_log("mountpoint %s: a dead FUSE mount is still "
				   "there; run `fusermount3 -uz %s`", mp, mp);
		else if (errno == ENOENT)
			vmdkfs_log("mountpoint %s does not exist (mkdir it "
				   "first)", mp);
		else
			vmdkfs_log("mountpoint %s: %s", mp, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		vmdkfs_log("mountpoint %s is not a directory", mp);
		return -1;
	}
	snprintf(up, sizeof(up), "%s/..", mp);
	if (stat(up, &parent) == 0 &&
	    (st.st_dev != parent.st_dev || st.st_ino == parent.st_ino) &&
	    strcmp(mp, "/") != 0) {
		vmdkfs_log("mountpoint %s is busy: something is already "
			   "mounted there (unmount it first)", mp);
		return -1;
	}
	d = opendir(mp);
	if (!d) {
		vmdkfs_log("mountpoint %s: %s", mp, strerror(errno));
		return -1;
	}
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			closedir(d);
			vmdkfs_log("mountpoint %s is busy: it is not empty",
				   mp);
			return -1;
		}
	}
	closedir(d);
	return 0;
}

static bool ends_with_vmdk(const char *s)
{
	size_t n = strlen(s);

	return n >= 5 && !strcasecmp(s + n - 5, ".vmdk");
}

static int open_image(struct vmdkfs *fs, const struct options *o)
{
	struct bdev_open_opts oo = { 0 };
	struct bdev_info in;
	int ret;

	if (strncmp(o->image, "rbd:", 4) && access(o->image, F_OK) < 0) {
		vmdkfs_log("image %s: %s", o->image, strerror(errno));
		return -1;
	}
	oo.format = o->format;
	if (o->allow_escape)
		oo.flags |= BDEV_O_ALLOW_ESCAPE;
	if (fs->snapshot_child) {
		struct bdev_create_opts co = { 0 };
		struct bdev *base;

		/* Check first that the base can be opened as the child will
		   open it (read-only, shared lock: refused while someone
		   writes it), so that a refusal leaves no child behind. */
		ret = bdev_open(o->image, &oo, &base);
		if (ret < 0) {
			const char *msg = bdev_errmsg();

			vmdkfs_log("cannot open %s for a snapshot: %s", o->image,
				   *msg ? msg : strerror(-ret));
			return -1;
		}
		bdev_close(base);
		co.format = "vmdk";
		co.subformat = "monolithicSparse";
		co.backing = o->image;
		ret = bdev_create(fs->snapshot_child, &co);
		if (ret < 0) {
			const char *msg = bdev_errmsg();

			vmdkfs_log("cannot create the snapshot child %s: %s",
				   fs->snapshot_child,
				   *msg ? msg : strerror(-ret));
			return -1;
		}
		fs->snapshot_created = true;
		vmdkfs_log("writes go to the snapshot child %s; %s stays "
			   "untouched", fs->snapshot_child, o->image);
		oo.flags |= BDEV_O_RDWR;
		ret = bdev_open(fs->snapshot_child, &oo, &fs->bdev);
		if (ret < 0) {
			const char *msg = bdev_errmsg();

			vmdkfs_log("cannot open the snapshot child %s: %s",
				   fs->snapshot_child,
				   *msg ? msg : strerror(-ret));
			return -1;
		}
		goto opened;
	}
	if (fs->writable)
		oo.flags |= BDEV_O_RDWR;
	else if (o->share)
		oo.flags |= BDEV_O_SHARE;
	/* a read-only mount's sequential reader arrives as requests spread
	   over the FUSE threads: read compressed grains ahead image-wide */
	if (!fs->writable)
		oo.flags |= BDEV_O_STREAM_READAHEAD;
	ret = bdev_open(o->image, &oo, &fs->bdev);
	if (ret < 0) {
		const char *msg = bdev_errmsg();

		if (ret == -EBUSY || ret == -EAGAIN)
			vmdkfs_log("image in use: %s (another program holds "
				   "it for writing; mount read-only with "
				   "-o ro,share to read it anyway)",
				   *msg ? msg : o->image);
		else
			vmdkfs_log("cannot open %s: %s", o->image,
				   *msg ? msg : strerror(-ret));
		return -1;
	}
opened:
	ret = bdev_get_info(fs->bdev, &in);
	if (ret < 0) {
		vmdkfs_log("%s: %s", o->image, bdev_errmsg());
		goto err_close;
	}
	if (!o->format && !fs->snapshot_child && !strcmp(in.format, "raw") &&
	    ends_with_vmdk(o->image)) {
		vmdkfs_log("%s is not a VMDK: no sparse header or descriptor "
			   "found (use -o format=raw to serve it as raw bytes)",
			   o->image);
		goto err_close;
	}
	fs->size = in.size;
	/* every grain of a compressed image (a stream) without a parent is
	   compressed: no reply of it has a host-file run to splice */
	fs->splice_reads = !(in.compressed && !in.parent_hint);
	return 0;

err_close:
	bdev_close(fs->bdev);
	fs->bdev = NULL;
	return -1;
}

static int pt_read(void *opaque, void *buf, size_t len, uint64_t off)
{
	struct vmdkfs *fs = opaque;

	if (off > fs->size || len > fs->size - off)
		return -EIO;
	return bdev_pread(fs->bdev, buf, len, off);
}

static void pt_warn(const char *msg)
{
	vmdkfs_log("%s", msg);
}

static int load_partitions(struct vmdkfs *fs)
{
	unsigned i;
	int ret;

	fs->pt = calloc(1, sizeof(*fs->pt));
	if (!fs->pt)
		return -ENOMEM;
	ret = ptable_read(pt_read, fs, fs->size, fs->pt, pt_warn);
	if (ret < 0) {
		vmdkfs_log("reading the partition table: %s", bdev_errmsg());
		return ret;
	}
	fs->parts = calloc(fs->pt->count ? fs->pt->count : 1,
			   sizeof(*fs->parts));
	if (!fs->parts)
		return -ENOMEM;
	for (i = 0; i < fs->pt->count; i++) {
		fs->parts[i].name = fs->pt->parts[i].name;
		fs->parts[i].offset = fs->pt->parts[i].offset;
		fs->parts[i].size = fs->pt->parts[i].size;
	}
	fs->disk.name = "disk";
	fs->disk.offset = 0;
	fs->disk.size = fs->size;
	return 0;
}

/* Worker threads per session. Each blocks in the engine for one request,
 * so threads bound the requests served at once; past the CPUs they only
 * help while the image's disk is slow. Every busy worker holds a receive
 * buffer and a reply of up to VMDKFS_IO_MAX, so the bound is also one on
 * memory (64 workers took the daemon past 90 MiB under a depth-8 reader).
 * Workers start as requests overlap and are kept, not respawned: a new
 * thread must also set up its own io_uring. loop.c serves a session. */
#define VMDKFS_MAX_THREADS 16

/* One FUSE session: its struct fuse, where it is mounted, its loop thread. */
struct session {
	struct fuse *fuse;
	struct vmdkfs_view view;
	const char *mountpoint;
	bool mounted;
	pthread_t thread;
	bool threaded;
	bool single;
	unsigned max_threads;
	enum vmdkfs_uring_mode uring;
	sem_t finish; /* posted when the session may have exited */
};

static int session_loop(struct session *s)
{
	unsigned n = s->single ? 1 : s->max_threads ? s->max_threads :
		     VMDKFS_MAX_THREADS;

	return vmdkfs_loop(s->fuse, n, s->uring, &s->finish);
}

static void *session_thread(void *arg)
{
	session_loop(arg);
	return NULL;
}

/* SIGTERM, SIGINT and SIGHUP end the user's session: whichever thread
 * takes the signal, the loop's waiter is woken. */
static struct session *signal_session;

static void on_exit_signal(int sig)
{
	(void)sig;
	if (signal_session) {
		fuse_session_exit(fuse_get_session(signal_session->fuse));
		sem_post(&signal_session->finish);
	}
}

static void set_signal_handlers(struct session *s)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	struct sigaction sa;
	unsigned i;

	signal_session = s;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = s ? on_exit_signal : SIG_DFL;
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	sa.sa_handler = s ? SIG_IGN : SIG_DFL;
	sigaction(SIGPIPE, &sa, NULL);
}

static int session_start(struct session *s, struct fuse_args *args,
			 struct vmdkfs *fs, bool staging, const char *mp)
{
	s->view.fs = fs;
	s->view.staging = staging;
	s->mountpoint = mp;
	sem_init(&s->finish, 0, 0);
	s->fuse = fuse_new(args, &vmdkfs_ops, sizeof(vmdkfs_ops), &s->view);
	if (!s->fuse) {
		vmdkfs_log("bad FUSE options (see --help)");
		return -1;
	}
	if (fuse_mount(s->fuse, mp) != 0) {
		vmdkfs_log("cannot mount on %s (is /dev/fuse usable, and "
			   "fusermount3 installed?)", mp);
		fuse_destroy(s->fuse);
		s->fuse = NULL;
		return -1;
	}
	s->mounted = true;
	vmdkfs_raise_readahead(mp);
	return 0;
}

/* Unmounts a session's mount (retrying while a loop device lets go) and
 * waits for its loop thread. */
static void session_stop(struct session *s)
{
	if (!s->fuse)
		return;
	fuse_exit(s->fuse);
	if (s->mounted && s->threaded) {
		int i;

		for (i = 0; i < 50; i++) {
			if (geteuid() == 0) {
				if (umount2(s->mountpoint, UMOUNT_NOFOLLOW) == 0 ||
				    errno == EINVAL)
					break;
			} else {
				fuse_unmount(s->fuse);
				break;
			}
			usleep(100000);
		}
		if (i == 50) {
			vmdkfs_log("%s stays busy; detaching it", s->mountpoint);
			umount2(s->mountpoint, MNT_DETACH);
		}
		s->mounted = false;
		pthread_join(s->thread, NULL);
		/* Already unmounted: this only frees libfuse's record of it
		 * (the connection is gone, so it unmounts nothing). */
		fuse_unmount(s->fuse);
	} else if (s->mounted) {
		fuse_unmount(s->fuse);
		s->mounted = false;
	}
	fuse_destroy(s->fuse);
	s->fuse = NULL;
	sem_destroy(&s->finish);
}

static void build_fuse_args(struct fuse_args *args, const char *argv0,
			    const struct fuse_args *user, const char *image,
			    bool writable, bool debug)
{
	char opt[PATH_MAX + 64];
	const char *p;
	size_t n = 0;
	int i;

	fuse_opt_add_arg(args, argv0);
	for (i = 1; i < user->argc; i++)
		fuse_opt_add_arg(args, user->argv[i]);
	/* fsname: the image, with commas (the option separator) escaped. */
	n = (size_t)snprintf(opt, sizeof(opt), "fsname=");
	for (p = image; *p && n + 3 < sizeof(opt); p++) {
		if (*p == ',' || *p == '\\')
			opt[n++] = '\\';
		opt[n++] = *p;
	}
	opt[n] = '\0';
	fuse_opt_add_arg(args, "-o");
	fuse_opt_add_arg(args, opt);
	fuse_opt_add_arg(args, "-osubtype=vmdkfs");
	if (!writable) {
		fuse_opt_add_arg(args, "-oro");
		/* op_init asks for the same, as libfuse requires */
		snprintf(opt, sizeof(opt), "-omax_read=%u", VMDKFS_RO_READ_MAX);
		fuse_opt_add_arg(args, opt);
	}
	if (geteuid() == 0)
		fuse_opt_add_arg(args, "-oallow_other,default_permissions");
	if (debug)
		fuse_opt_add_arg(args, "-d");
}

/* Forks; the parent waits for the child's verdict and exits with it. */
static int daemonise(int *report_fd)
{
	int pfd[2];
	pid_t pid;
	char st = 1;

	if (pipe2(pfd, O_CLOEXEC) < 0) {
		vmdkfs_log("pipe: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		vmdkfs_log("fork: %s", strerror(errno));
		return -1;
	}
	if (pid > 0) {
		close(pfd[1]);
		if (read(pfd[0], &st, 1) != 1)
			st = 1;
		_exit(st);
	}
	close(pfd[0]);
	setsid();
	*report_fd = pfd[1];
	return 0;
}

static void report_ready(int *report_fd, char status)
{
	if (*report_fd < 0)
		return;
	if (status == 0) {
		int fd = open("/dev/null", O_RDWR);

		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
		vmdkfs_log_to_syslog();
		if (chdir("/") < 0)
			vmdkfs_log("chdir /: %s", strerror(errno));
	}
	if (write(*report_fd, &status, 1) < 0) {
		/* the parent is gone: nothing to tell */
	}
	close(*report_fd);
	*report_fd = -1;
}

/*
 * The allocator's policy for a daemon whose workers each malloc and free a
 * reply of up to VMDKFS_IO_MAX per read (libfuse frees it after replying,
 * so it cannot be a buffer of ours reused), and whose engine keeps grain
 * cache entries:
 * - one arena: glibc would give each worker thread its own, each keeping
 *   its freed replies and cache entries resident (94 MiB measured);
 * - replies from the heap, reused from one read to the next: a fixed
 *   mmap threshold just above them (which also stops glibc raising it on
 *   its own) keeps them off mmap, whose page faults cost more than the
 *   copy; libfuse's per-worker receive buffers, a page larger, are
 *   mmapped, so their untouched pages never pin the heap;
 * - trimming the heap's top once two replies' worth of it are free.
 */
static void malloc_policy(void)
{
	mallopt(M_ARENA_MAX, 1);
	mallopt(M_MMAP_THRESHOLD, VMDKFS_IO_MAX + 2048);
	mallopt(M_TRIM_THRESHOLD, 2 * VMDKFS_IO_MAX);
}

/* Frees what fuse_opt_parse allocated in o. */
static void options_free(struct options *o)
{
	free(o->browse_mode);
	free(o->format);
	free(o->snapshot_path);
	free(o->io_uring_mode);
}

/* The browse and io_uring modes and the format o asks for; -1 with a
   message when one is not a known word. */
static int parse_modes(const struct options *o, enum vmdkfs_browse_mode *bmode,
		       enum vmdkfs_uring_mode *uring)
{
	*bmode = o->browse ? VMDKFS_BROWSE_AUTO : VMDKFS_BROWSE_OFF;
	if (o->browse_mode) {
		if (!strcmp(o->browse_mode, "auto"))
			*bmode = VMDKFS_BROWSE_AUTO;
		else if (!strcmp(o->browse_mode, "kernel"))
			*bmode = VMDKFS_BROWSE_KERNEL;
		else if (!strcmp(o->browse_mode, "fuse"))
			*bmode = VMDKFS_BROWSE_FUSE;
		else if (!strcmp(o->browse_mode, "off"))
			*bmode = VMDKFS_BROWSE_OFF;
		else {
			vmdkfs_log("browse must be auto, kernel, fuse or off, "
				   "not '%s'", o->browse_mode);
			return -1;
		}
	}
	*uring = o->io_uring ? VMDKFS_URING_ON : VMDKFS_URING_OFF;
	if (o->io_uring_mode) {
		if (!strcmp(o->io_uring_mode, "on"))
			*uring = VMDKFS_URING_ON;
		else if (!strcmp(o->io_uring_mode, "auto"))
			*uring = VMDKFS_URING_AUTO;
		else if (!strcmp(o->io_uring_mode, "off"))
			*uring = VMDKFS_URING_OFF;
		else {
			vmdkfs_log("io_uring must be on, off or auto, not '%s'",
				   o->io_uring_mode);
			return -1;
		}
	}
	if (o->format && strcmp(o->format, "vmdk") && strcmp(o->format, "raw")) {
		vmdkfs_log("format must be vmdk or raw, not '%s'", o->format);
		return -1;
	}
	return 0;
}

/* Where -o snapshot puts the child: -o snapshot=PATH, or
   IMAGE-snapshot-YYYYmmdd-HHMMSS.vmdk next to image (already resolved).
   -1 with a message when that file exists. */
static int snapshot_child_path(const struct options *o, const char *image,
			       char *child, size_t len)
{
	if (o->snapshot_path) {
		snprintf(child, len, "%s", o->snapshot_path);
	} else {
		char stamp[32];
		time_t now = time(NULL);
		struct tm tm;
		size_t n = strlen(image);

		localtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
		if (ends_with_vmdk(image))
			n -= 5;
		snprintf(child, len, "%.*s-snapshot-%s.vmdk", (int)n, image,
			 stamp);
	}
	if (access(child, F_OK) == 0) {
		vmdkfs_log("snapshot child %s already exists", child);
		return -1;
	}
	return 0;
}

/* o's image (an RBD name as it is) and mountpoint as absolute paths into
   image and mp (PATH_MAX bytes each); -1 with a message saying what is
   wrong with them. */
static int resolve_paths(const struct options *o, char *image, char *mp)
{
	if (!strncmp(o->image, "rbd:", 4)) {
		/* a Ceph RBD image: not a path, the engine opens it */
		if (strlen(o->image) >= PATH_MAX) {
			vmdkfs_log("image %s: name too long", o->image);
			return -1;
		}
		strcpy(image, o->image);
	} else if (!realpath(o->image, image)) {
		vmdkfs_log("image %s: %s", o->image,
			   errno == ENOENT ? "no such file" : strerror(errno));
		return -1;
	}
	if (!realpath(o->mountpoint, mp)) {
		if (errno == ENOTCONN)
			vmdkfs_log("mountpoint %s: a dead FUSE mount is still "
				   "there; run `fusermount3 -uz %s`",
				   o->mountpoint, o->mountpoint);
		else
			vmdkfs_log("mountpoint %s does not exist (mkdir it "
				   "first)", o->mountpoint);
		return -1;
	}
	return 0;
}

/* Starts the staging session that serves fs/'s guest file systems and
   mounts them; -1 with a message. */
static int start_browse(struct vmdkfs *fs, enum vmdkfs_browse_mode bmode,
			struct session *stage_s, struct fuse_args *sargs,
			const char *argv0, struct fuse_args *uargs,
			const struct options *o)
{
	if (browse_new(bmode, &fs->browse) < 0)
		return -1;
	build_fuse_args(sargs, argv0, uargs, fs->image, fs->writable, false);
	stage_s->single = o->single;
	stage_s->max_threads = o->max_threads;
	if (session_start(stage_s, sargs, fs, true, fs->browse->devdir) < 0)
		return -1;
	if (pthread_create(&stage_s->thread, NULL, session_thread, stage_s) != 0) {
		vmdkfs_log("cannot start the staging thread");
		return -1;
	}
	stage_s->threaded = true;
	browse_mount_all(fs->browse, fs);
	return 0;
}

int main(int argc, char **argv)
{
	struct fuse_args uargs = FUSE_ARGS_INIT(argc, argv);
	struct fuse_args margs = FUSE_ARGS_INIT(0, NULL);
	struct fuse_args sargs = FUSE_ARGS_INIT(0, NULL);
	struct session main_s = { 0 }, stage_s = { 0 };
	enum vmdkfs_browse_mode bmode;
	enum vmdkfs_uring_mode uring;
	char image[PATH_MAX], mp[PATH_MAX], child[PATH_MAX + 64];
	struct options o = { 0 };
	struct vmdkfs fs = { 0 };
	int report_fd = -1, rc = 1;
	bool mounted = false;
	struct stat ist;

	malloc_policy();
	if (fuse_opt_parse(&uargs, &o, vmdkfs_opts, opt_proc) < 0)
		return 1;
	if (o.help || o.version) {
		if (o.help)
			fputs(usage, stdout);
		else
			printf("vmdkfs (ovk) %s, FUSE %s\n", OVK_VERSION,
			       fuse_pkgversion());
		fuse_opt_free_args(&uargs);
		options_free(&o);
		return 0;
	}
	if (!o.image || !o.mountpoint) {
		fprintf(stderr, "vmdkfs: expected IMAGE and MOUNTPOINT\n"
			"Try 'vmdkfs --help' for more information.\n");
		return 1;
	}
	if (parse_modes(&o, &bmode, &uring) < 0)
		return 1;
	fs.writable = o.readwrite || (o.rw && !o.ro);
	if (o.rw && !o.readwrite && started_by_mount())
		fs.writable = false; /* mount(8)'s implicit 'rw' */
	if (o.rw && o.ro && !started_by_mount()) {
		vmdkfs_log("-o ro and -o rw contradict each other");
		return 1;
	}
	fs.debug = o.debug;
	if (o.debug)
		o.foreground = 1;
	if (resolve_paths(&o, image, mp) < 0)
		return 1;
	o.image = image;
	o.mountpoint = mp;
	if (o.snapshot || o.snapshot_path) {
		if (snapshot_child_path(&o, image, child, sizeof(child)) < 0)
			return 1;
		fs.snapshot_child = child;
		fs.writable = true;
	}
	if (access("/dev/fuse", R_OK | W_OK) < 0) {
		vmdkfs_log("no usable /dev/fuse (%s): load the fuse module "
			   "(modprobe fuse) or, in a container, pass the device "
			   "through", strerror(errno));
		return 1;
	}
	if (check_mountpoint(mp) < 0)
		return 1;

	if (!o.foreground && daemonise(&report_fd) < 0)
		return 1;

	fs.image = image;
	pthread_mutex_init(&fs.info_lock, NULL);
	pthread_mutex_init(&fs.guest_lock, NULL);
	if (stat(image, &ist) == 0)
		fs.mtime = ist.st_mtim;
	if (open_image(&fs, &o) < 0)
		goto out;
	if (load_partitions(&fs) < 0)
		goto err_close_image;
	if (bmode != VMDKFS_BROWSE_OFF &&
	    start_browse(&fs, bmode, &stage_s, &sargs, argv[0], &uargs, &o) < 0)
		goto err_stop_staging;

	build_fuse_args(&margs, argv[0], &uargs, image, fs.writable, o.debug);
	main_s.single = o.single;
	main_s.max_threads = o.max_threads;
	main_s.uring = uring;
	if (session_start(&main_s, &margs, &fs, false, mp) < 0)
		goto err_unmount_guests;
	set_signal_handlers(&main_s);
	report_ready(&report_fd, 0);
	mounted = true;

	rc = session_loop(&main_s) < 0 ? 1 : 0;
	set_signal_handlers(NULL);


	/* Guest filesystems first, so nothing reads the image any more; the
	 * files our fs/ tree still holds open would keep them busy. */
	vmdkfs_close_guest_files(&fs);
	if (fs.browse)
		browse_unmount_all(fs.browse);
	session_stop(&main_s);
err_unmount_guests:
	if (fs.browse)
		browse_unmount_all(fs.browse);
err_stop_staging:
	session_stop(&stage_s);
	vmdkfs_free_guest_handles(&fs);
	browse_free(fs.browse);
err_close_image:
	if (bdev_close(fs.bdev) < 0) {
		vmdkfs_log("closing %s: %s", image, bdev_errmsg());
		rc = 1;
	}
out:
	/* a start that failed leaves no snapshot child behind: nothing was
	   written to it, and a retry would be refused while it exists */
	if (!mounted && fs.snapshot_created && unlink(fs.snapshot_child) < 0)
		vmdkfs_log("cannot remove the snapshot child %s: %s",
			   fs.snapshot_child, strerror(errno));
	report_ready(&report_fd, 1);
	free(fs.info_json);
	free(fs.parts);
	free(fs.pt);
	fuse_opt_free_args(&margs);
	fuse_opt_free_args(&sargs);
	fuse_opt_free_args(&uargs);
	options_free(&o);
	return rc;
}
