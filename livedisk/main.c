/* SPDX-License-Identifier: Apache-2.0 */
/* main.c - ovkdisk: views, backups and restores of the disks a pvblk
   daemon or ovkvm serves to running VMs, through its control socket. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ovkdisk.h"

static const char usage_text[] =
"Usage: ovkdisk view SOCKET MOUNTPOINT [--disk N|--export NAME]\n"
"                    [--quiesce CMD]\n"
"       ovkdisk release SOCKET MOUNTPOINT [--disk N|--export NAME]\n"
"       ovkdisk backup SOCKET TARGETDIR [--disk N|--export NAME]\n"
"                      [--full|--incremental]\n"
"                      [--format vmdk-stream|vmdk-sparse|raw] [--quiesce CMD]\n"
"       ovkdisk restore TARGETDIR [--at CHECKPOINT] OUTPUT\n"
"       ovkdisk verify TARGETDIR\n"
"       ovkdisk patch IMAGE --copy SRC:/GUEST/PATH... [--partition NAME]\n"
"       ovkdisk patch IMAGE --commit|--discard\n"
"\n"
"Look into and back up the disk of a running virtual machine. SOCKET is\n"
"the control socket of the pvblk daemon serving the disk (pvblk\n"
"--api-socket SOCKET -o rw ...; a pvblk serving several disks with\n"
"--export: name the disk with --export NAME), or of the ovkvm running\n"
"the VM (ovkvm --api-socket SOCKET --disk ...: name the disk with --disk\n"
"N); the disk\n"
"must be a VMDK, or a Ceph RBD image for backup (its view is the backup\n"
"checkpoint's RBD snapshot, and what changed comes from RBD's diff).\n"
"\n"
"Commands:\n"
"  view       freeze a point-in-time view of the disk (the VM goes on\n"
"             writing into a delta child) and mount it read-only with\n"
"             vmdkfs --browse at MOUNTPOINT: the guest's files are under\n"
"             MOUNTPOINT/fs/, the raw disk is MOUNTPOINT/disk\n"
"  release    unmount MOUNTPOINT and release the view: the daemon merges\n"
"             the child back into the disk while the VM runs\n"
"  backup     copy the disk into TARGETDIR at a new checkpoint: the first\n"
"             backup (or --full) holds the whole disk, as a streamOptimized\n"
"             VMDK (--format vmdk-stream, the default), a monolithicSparse\n"
"             one (vmdk-sparse) or a sparse raw file (raw); later ones (or\n"
"             --incremental) read only the 64 KiB blocks written since the\n"
"             last backup's checkpoint, from the view. A VMDK incremental is\n"
"             a delta VMDK holding just those blocks whose parent is the\n"
"             previous backup's file, so each point is a VMDK chain any\n"
"             VMDK reader opens; a raw incremental is a whole raw file (a\n"
"             copy of the previous one, sharing its extents where the\n"
"             filesystem can, with the changed blocks written over it).\n"
"             A change between raw and VMDK makes a full backup.\n"
"             TARGETDIR/manifest.json lists every backup: checkpoint, time,\n"
"             kind, format, file, size, SHA-256 of the file and a digest of\n"
"             the disk's contents at that point (SHA-256 over the SHA-256 of\n"
"             each 64 KiB block); it is replaced atomically after the data\n"
"             is on disk, so an interrupted backup (even kill -9) leaves the\n"
"             earlier ones valid; the next backup removes what it left (its\n"
"             files, its view, its checkpoint on the disk)\n"
"  restore    write the disk as it was at the last backup (or at\n"
"             --at CHECKPOINT) to OUTPUT, a new raw file (sparse), and\n"
"             check its digest against the manifest\n"
"  verify     recompute the digests of every backup in TARGETDIR\n"
"  patch      for the disk of a stopped VM (IMAGE not open elsewhere):\n"
"             copy host files into its ext2/3/4 filesystem (the whole disk,\n"
"             or partitions/NAME as vmdkfs names it) inside a redo child\n"
"             IMAGE-patch.vmdk (through vmdkfs -o snapshot and fuse2fs),\n"
"             then list the files that differ between IMAGE and the child\n"
"             (diff -rq of both mounted with vmdkfs --browse). IMAGE is\n"
"             untouched until --commit merges the child into it; --discard\n"
"             deletes the child\n"
"\n"
"Options:\n"
"  --full            backup: a full backup even when an incremental one\n"
"                    is possible\n"
"  --incremental     backup: fail unless an incremental one is possible\n"
"  --format FMT      backup: vmdk-stream (default), vmdk-sparse or raw;\n"
"                    restore and verify read each backup's from the manifest\n"
"  --quiesce CMD     view, backup: run CMD (through /bin/sh) just before\n"
"                    the view is taken, e.g. a guest agent's freeze; the\n"
"                    backup is recorded as \"quiesced\", else as\n"
"                    \"crash-consistent\"\n"
"  --disk N          view, release, backup: SOCKET is ovkvm's and the disk\n"
"                    is its N-th --disk (0 for the first)\n"
"  --export NAME     view, release, backup: SOCKET is a pvblk's that serves\n"
"                    several exports (pvblk --export IMAGE,name=NAME,...)\n"
"                    and the disk is the export NAME (default: its first)\n"
"  --at CHECKPOINT   restore: the backup to restore (default: the last)\n"
"  --copy SRC:DEST   patch: copy host file or folder SRC to DEST (an\n"
"                    absolute path in the guest); may be repeated\n"
"  --partition NAME  patch: the filesystem is on partitions/NAME\n"
"                    (e.g. p1-linux) instead of the whole disk\n"
"  --commit          patch: merge the pending patch into IMAGE\n"
"  --discard         patch: delete the pending patch\n"
"  --output=json     print the result as one JSON object\n"
"  --progress=json   progress as JSON lines on stderr, one per percent:\n"
"                    {\"progress\":WHAT,\"done\":B,\"total\":B,\"percent\":P}\n"
"  -h, --help        this text\n"
"  -V, --version     the version\n"
"\n"
"Environment: OVK_VMDKFS names the vmdkfs program (default: the one built\n"
"beside ovkdisk, else vmdkfs on PATH). OVKDISK_STOP_AT=PHASE, for crash\n"
"tests, makes backup stop itself (SIGSTOP) at PHASE: view, copy (half\n"
"way), written, released, manifest (written, not yet renamed) or done.\n"
"\n"
"A pvblk killed while a view is open leaves the disk's latest writes in the\n"
"view's delta IMAGE-live-N.vmdk: pvblk -o rw started again on IMAGE merges\n"
"it back first (and says so), keeping the checkpoints.\n"
"\n"
"Examples:\n"
"  pvblk -o rw --vhost-user-blk /run/vm0.sock --api-socket /run/vm0.api disk.vmdk &\n"
"  ovkdisk view /run/vm0.api /mnt/vm0 && clamscan -r /mnt/vm0/fs\n"
"  ovkdisk release /run/vm0.api /mnt/vm0\n"
"  ovkdisk backup /run/vm0.api /backup/vm0      # full, then incremental\n"
"  ovkvm --kernel bzImage --disk vm1.vmdk --api-socket /run/vm1.api &\n"
"  ovkdisk backup /run/vm1.api /backup/vm1 --disk 0\n"
"  pvblk --api-socket /run/d.api \\\n"
"    --export a.vmdk,name=a,rw,vhost-user-blk=/run/a.sock \\\n"
"    --export b.vmdk,name=b,rw,vhost-user-blk=/run/b.sock &\n"
"  ovkdisk backup /run/d.api /backup/b --export b\n"
"  ovkdisk restore /backup/vm0 --at ovkdisk-20261204T200000Z-1 disk.raw\n"
"\n"
"Exit status: 0 on success, 1 on any failure (with a message on stderr).\n"
"A progress bar is drawn on stderr when it is a terminal.\n";

enum { OPT_FULL = 256, OPT_INCR, OPT_QUIESCE, OPT_AT, OPT_OUTPUT, OPT_COPY,
       OPT_PART, OPT_COMMIT, OPT_DISCARD, OPT_DISK, OPT_EXPORT, OPT_FORMAT,
       OPT_PROGRESS };

static const struct option long_opts[] = {
	{ "full", no_argument, NULL, OPT_FULL },
	{ "incremental", no_argument, NULL, OPT_INCR },
	{ "quiesce", required_argument, NULL, OPT_QUIESCE },
	{ "at", required_argument, NULL, OPT_AT },
	{ "output", required_argument, NULL, OPT_OUTPUT },
	{ "copy", required_argument, NULL, OPT_COPY },
	{ "partition", required_argument, NULL, OPT_PART },
	{ "commit", no_argument, NULL, OPT_COMMIT },
	{ "discard", no_argument, NULL, OPT_DISCARD },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "export", required_argument, NULL, OPT_EXPORT },
	{ "format", required_argument, NULL, OPT_FORMAT },
	{ "progress", required_argument, NULL, OPT_PROGRESS },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ 0 },
};

/* vmdkfs: $OVK_VMDKFS, the one in the build tree beside us, or PATH's. */
static const char *vmdkfs_path(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n;

	if (getenv("OVK_VMDKFS"))
		return getenv("OVK_VMDKFS");
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		snprintf(buf, len, "%s/../vmdkfs/vmdkfs", dirname(self));
		if (access(buf, X_OK) == 0)
			return buf;
	}
	return "vmdkfs";
}

static int run(char *const argv[])
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execvp(argv[0], argv);
		fprintf(stderr, "ovkdisk: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static int cmd_view(const struct ovkdisk_opts *o, const char *sock,
		    const char *mnt)
{
	char vb[PATH_MAX];
	const char *path;
	json_t *r;

	if (o->quiesce && run_quiesce(o->quiesce) < 0)
		return 1;
	r = ctl_command(sock, "view-create");
	if (!r)
		return 1;
	path = json_string_value(json_object_get(r, "path"));
	{
		char *argv[] = { (char *)vmdkfs_path(vb, sizeof(vb)),
				 "--browse", (char *)path, (char *)mnt, NULL };

		if (run(argv) < 0) {
			fprintf(stderr, "ovkdisk: %s could not mount the view "
				"%s at %s; releasing it\n", argv[0], path, mnt);
			json_decref(r);
			json_decref(ctl_command(sock, "view-release"));
			return 1;
		}
	}
	if (o->json)
		printf("{\"path\":\"%s\",\"mountpoint\":\"%s\","
		       "\"consistency\":\"%s\"}\n", path, mnt,
		       o->quiesce ? "quiesced" : "crash-consistent");
	else
		printf("view of %s (%s) mounted read-only at %s; guest files "
		       "under %s/fs/\n", path, o->quiesce ? "quiesced" :
		       "crash-consistent", mnt, mnt);
	json_decref(r);
	return 0;
}

static int cmd_release(const struct ovkdisk_opts *o, const char *sock,
		       const char *mnt)
{
	char *argv[] = { "fusermount3", "-u", (char *)mnt, NULL };
	char err[1024];
	json_t *req, *r = NULL;

	if (run(argv) < 0)
		fprintf(stderr, "ovkdisk: %s was not mounted (or could not "
			"be unmounted); releasing the view anyway\n", mnt);
	/* vmdkfs closes the view when its process ends, a moment after the
	   unmount returns: a live commit refused as busy is tried again */
	req = json_pack("{s:s}", "command", "view-release");
	for (int i = 0; i < 100; i++) {
		r = ctl_call(sock, req, err, sizeof(err));
		if (r || !strstr(err, "busy"))
			break;
		nanosleep(&(struct timespec){ .tv_nsec = 100000000 }, NULL);
	}
	json_decref(req);
	if (!r) {
		fprintf(stderr, "ovkdisk: view-release: %s\n", err);
		return 1;
	}
	if (o->json) {
		char *t = json_dumps(r, JSON_COMPACT);
		puts(t);
		free(t);
	} else {
		printf("view released; the disk's top is %s%s\n",
		       json_string_value(json_object_get(r, "top")),
		       json_is_true(json_object_get(r, "committed")) ?
		       " (the child was merged back live)" : "");
	}
	json_decref(r);
	return 0;
}

int main(int argc, char **argv)
{
	struct ovkdisk_opts o = { .format = "vmdk-stream" };
	const char *cmd;
	int opt;

	while ((opt = getopt_long(argc, argv, "hV", long_opts, NULL)) != -1) {
		switch (opt) {
		case OPT_FULL:
			o.kind = 1;
			break;
		case OPT_INCR:
			o.kind = 2;
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "vmdk-stream") &&
			    strcmp(optarg, "vmdk-sparse") &&
			    strcmp(optarg, "raw")) {
				fprintf(stderr, "ovkdisk: --format takes "
					"vmdk-stream, vmdk-sparse or raw, not "
					"'%s'\n", optarg);
				return 1;
			}
			o.format = optarg;
			break;
		case OPT_QUIESCE:
			o.quiesce = optarg;
			break;
		case OPT_AT:
			o.at = optarg;
			break;
		case OPT_OUTPUT:
			if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
				fprintf(stderr, "ovkdisk: --output takes json "
					"or text\n");
				return 1;
			}
			o.json = !strcmp(optarg, "json");
			break;
		case OPT_COPY:
			if (o.ncopies == 64) {
				fprintf(stderr, "ovkdisk: at most 64 --copy\n");
				return 1;
			}
			o.copies[o.ncopies++] = optarg;
			break;
		case OPT_PART:
			o.partition = optarg;
			break;
		case OPT_COMMIT:
			o.patch_action = 'c';
			break;
		case OPT_DISCARD:
			o.patch_action = 'd';
			break;
		case OPT_PROGRESS:
			if (strcmp(optarg, "json")) {
				fprintf(stderr, "ovkdisk: --progress takes "
					"json\n");
				return 1;
			}
			o.progress_json = true;
			break;
		case OPT_DISK: {
			char *end;
			long d = strtol(optarg, &end, 10);

			if (!*optarg || *end || d < 0 || d > 255) {
				fprintf(stderr, "ovkdisk: --disk takes a disk "
					"index (0 for ovkvm's first --disk), "
					"not '%s'\n", optarg);
				return 1;
			}
			ctl_set_disk((int)d);
			break;
		}
		case OPT_EXPORT:
			if (!*optarg || strlen(optarg) > 255) {
				fprintf(stderr, "ovkdisk: --export takes the "
					"name of one of pvblk's exports (1 to "
					"255 bytes)\n");
				return 1;
			}
			ctl_set_export(optarg);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			printf("ovkdisk (ovk) %s\n", OVK_VERSION);
			return 0;
		default:
			fputs("Try 'ovkdisk --help'.\n", stderr);
			return 1;
		}
	}
	o.progress = !o.json && !o.progress_json && isatty(2);
	if (optind >= argc) {
		fputs("ovkdisk: no command given\nTry 'ovkdisk --help'.\n",
		      stderr);
		return 1;
	}
	cmd = argv[optind++];
	argc -= optind;
	argv += optind;
#define NEED(n)                                                           \
	do {                                                              \
		if (argc != (n)) {                                        \
			fprintf(stderr, "ovkdisk %s: expected %d "        \
				"arguments, got %d\nTry 'ovkdisk "        \
				"--help'.\n", cmd, (n), argc);            \
			return 1;                                         \
		}                                                         \
	} while (0)
	if (!strcmp(cmd, "view")) {
		NEED(2);
		return cmd_view(&o, argv[0], argv[1]);
	} else if (!strcmp(cmd, "release")) {
		NEED(2);
		return cmd_release(&o, argv[0], argv[1]);
	} else if (!strcmp(cmd, "backup")) {
		NEED(2);
		return cmd_backup(&o, argv[0], argv[1]);
	} else if (!strcmp(cmd, "restore")) {
		NEED(2);
		return cmd_restore(&o, argv[0], argv[1]);
	} else if (!strcmp(cmd, "verify")) {
		NEED(1);
		return cmd_verify(&o, argv[0]);
	} else if (!strcmp(cmd, "patch")) {
		char vb[PATH_MAX];

		NEED(1);
		return cmd_patch(&o, vmdkfs_path(vb, sizeof(vb)), argv[0]);
	}
	fprintf(stderr, "ovkdisk: unknown command '%s' (view, release, "
		"backup, restore, verify, patch)\nTry 'ovkdisk --help'.\n", cmd);
	return 1;
}
