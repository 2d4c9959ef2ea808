/* SPDX-License-Identifier: Apache-2.0 */
/* ovffs - mount an OVF package (OVA, .ovf, folder) read-only as a tree a
 * person can browse: the descriptor, manifest and certificate as they are,
 * verify.txt, one folder per virtual system, and disks/ with each disk's
 * original file and <disk>.raw, the flattened virtual disk served by the
 * engine straight from the package (through the decompressing stream when
 * the file is gzip'd or chunked, or the OVA is gzip'd). */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockengine.h"
#include "ovf.h"

#define OVFFS_MAX_READ (1u << 20)      /* bytes per FUSE read request */
#define OVFFS_MAX_READAHEAD (4u << 20) /* kernel read-ahead we ask for */
#define OVFFS_RA_GRAINS 32u            /* engine read-ahead of .raw images */
#define OVFFS_GRAIN_CACHE (64u << 20)  /* inflated grains kept per image */

enum node_kind { NODE_DIR, NODE_TEXT, NODE_VERIFY, NODE_STREAM, NODE_BDEV };

struct node {
	char *name;
	enum node_kind kind;
	struct node **kids;
	size_t nkids;
	char *text;                /* TEXT, VERIFY (once made) */
	size_t text_len;
	struct ovf_stream *stream; /* STREAM */
	struct bdev *bdev;         /* BDEV */
	uint64_t size;
	bool size_known;
};

struct ovffs {
	struct ovf_pkg *pkg;
	struct node root;
	pthread_mutex_t lock; /* verify.txt and lazy sizes */
	bool debug;
	struct timespec mtime; /* the package's: every node shows it */
	struct ovf_finding_list disk_findings; /* disks not what they claim */
};

static struct ovffs fs;

/* Prints a message to stderr prefixed with the program name. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fputs("ovffs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Adds a child node named name (made safe for a path component). */
static struct node *add_node(struct node *dir, const char *name,
			     enum node_kind kind)
{
	struct node **v = realloc(dir->kids, (dir->nkids + 1) * sizeof(*v));
	struct node *n = calloc(1, sizeof(*n));

	if (!v || !n) {
		free(n);
		if (v)
			dir->kids = v;
		return NULL;
	}
	dir->kids = v;
	n->name = strdup(name && *name ? name : "_");
	if (!n->name) {
		free(n);
		return NULL;
	}
	for (char *c = n->name; *c; c++)
		if (*c == '/')
			*c = '_';
	if (!strcmp(n->name, ".") || !strcmp(n->name, ".."))
		n->name[0] = '_';
	/* names must be unique in a folder */
	for (size_t i = 0; i < dir->nkids; i++) {
		if (!strcmp(dir->kids[i]->name, n->name)) {
			char *alt = malloc(strlen(n->name) + 24);

			if (alt) {
				sprintf(alt, "%s~%zu", n->name, dir->nkids);
				free(n->name);
				n->name = alt;
			}
			break;
		}
	}
	n->kind = kind;
	dir->kids[dir->nkids++] = n;
	return n;
}

/* Adds a text file (takes text). */
static int add_text(struct node *dir, const char *name, char *text)
{
	struct node *n;

	if (!text)
		return -ENOMEM;
	n = add_node(dir, name, NODE_TEXT);
	if (!n) {
		free(text);
		return -ENOMEM;
	}
	n->text = text;
	n->text_len = strlen(text);
	n->size = n->text_len;
	n->size_known = true;
	return 0;
}

/* Adds a member of the package as it is stored. */
static int add_member(struct node *dir, const char *name)
{
	struct ovf_stream *s;
	struct node *n;

	if (ovf_member_open(fs.pkg, name, &s) < 0) {
		say("%s", ovf_errmsg());
		return -EIO;
	}
	n = add_node(dir, strrchr(name, '/') ? strrchr(name, '/') + 1 : name,
		     NODE_STREAM);
	if (!n) {
		ovf_stream_close(s);
		return -ENOMEM;
	}
	n->stream = s;
	return 0;
}

/* Adds one folder per system (collections included), flattened. */
static int add_systems(const struct ovf_envelope *env,
		       const struct ovf_system *s)
{
	struct node *d = add_node(&fs.root, s->id ? s->id : "system", NODE_DIR);
	int r = d ? 0 : -ENOMEM;

	if (r >= 0 && !s->collection)
		r = add_text(d, "hardware.json", ovf_system_hardware_json(env, s));
	if (r >= 0)
		r = add_text(d, "summary.txt", ovf_system_summary(env, s));
	if (r >= 0)
		r = add_text(d, "product.json", ovf_system_product_json(s));
	if (r >= 0 && s->neulas) {
		struct { char *p; } b = { NULL };
		size_t len = 0;

		for (size_t i = 0; i < s->neulas; i++)
			len += (s->eulas[i] ? strlen(s->eulas[i]) : 0) + 2;
		b.p = calloc(1, len + 1);
		for (size_t i = 0; b.p && i < s->neulas; i++) {
			strcat(b.p, s->eulas[i] ? s->eulas[i] : "");
			strcat(b.p, "\n");
			if (i + 1 < s->neulas)
				strcat(b.p, "\n");
		}
		r = add_text(d, "eula.txt", b.p);
	}
	for (size_t i = 0; r >= 0 && i < s->nchildren; i++)
		r = add_systems(env, &s->children[i]);
	return r;
}

/* Adds disks/<file> and disks/<diskId>.raw for every disk with a file. */
static int add_disks(const struct ovf_envelope *env)
{
	struct node *dir = add_node(&fs.root, "disks", NODE_DIR);

	if (!dir)
		return -ENOMEM;
	for (size_t i = 0; i < env->ndisks; i++) {
		const struct ovf_disk *d = &env->disks[i];
		const struct ovf_file *f = ovf_find_file(env, d->file_ref);
		struct bdev_open_opts oo = { .flags = BDEV_O_SHARE | BDEV_O_NO_BACKING,
					     .readahead_grains = OVFFS_RA_GRAINS,
					     .grain_cache_bytes = OVFFS_GRAIN_CACHE };
		struct bdev_info info;
		struct ovf_stream *s;
		struct node *n;
		char *rawname;
		uint64_t base;
		int fd, r;

		if (!f || !f->href)
			continue;
		if (ovf_file_open(fs.pkg, f, &s) < 0) {
			say("disk %s: %s", d->disk_id ? d->disk_id : "?", ovf_errmsg());
			continue;
		}
		n = add_node(dir, strrchr(f->href, '/') ? strrchr(f->href, '/') + 1
							: f->href, NODE_STREAM);
		if (!n) {
			ovf_stream_close(s);
			return -ENOMEM;
		}
		n->stream = s;
		if (ovf_stream_size(s, &n->size) < 0) {
			say("disk %s: %s", d->disk_id ? d->disk_id : "?", ovf_errmsg());
			continue;
		}
		n->size_known = true;
		rawname = malloc(strlen(d->disk_id ? d->disk_id : "disk") + 5);
		if (!rawname)
			return -ENOMEM;
		sprintf(rawname, "%s.raw", d->disk_id ? d->disk_id : "disk");
		{
			struct bdev *b = NULL;

			/* plain bytes of the package file: the engine's
			   duplicate of this fd shares its file description and
			   so its page-cache read-ahead (a .raw is mostly read
			   front to back); gzip'd or chunked: through the stream
			   (the node keeps it open longer than the image, see
			   free_node) */
			if (ovf_stream_region(s, &fd, &base) == 0)
				posix_fadvise(fd, (off_t)base, (off_t)n->size,
					      POSIX_FADV_SEQUENTIAL);
			/* only a disk that is what the descriptor declares is
			   served as <diskId>.raw; verify.txt says why not */
			r = ovf_disk_open_checked(fs.pkg, d, s, &oo, &b,
						  &fs.disk_findings);
			if (r < 0) {
				say("disk %s: %s", d->disk_id ? d->disk_id : "?",
				    ovf_errmsg());
				free(rawname);
				continue;
			}
			if (bdev_get_info(b, &info) < 0) {
				bdev_close(b);
				free(rawname);
				continue;
			}
			n = add_node(dir, rawname, NODE_BDEV);
			free(rawname);
			if (!n) {
				bdev_close(b);
				return -ENOMEM;
			}
			n->bdev = b;
			n->size = info.size;
			n->size_known = true;
		}
	}
	return 0;
}

/* Builds the whole tree from the opened package. */
static int build_tree(void)
{
	const struct ovf_envelope *env = ovf_pkg_envelope(fs.pkg);
	struct node *v;
	int r;

	fs.root.kind = NODE_DIR;
	fs.root.name = strdup("/");
	r = add_member(&fs.root, ovf_pkg_descriptor_name(fs.pkg));
	if (r >= 0 && ovf_pkg_manifest_name(fs.pkg))
		r = add_member(&fs.root, ovf_pkg_manifest_name(fs.pkg));
	if (r >= 0 && ovf_pkg_cert_name(fs.pkg))
		r = add_member(&fs.root, ovf_pkg_cert_name(fs.pkg));
	if (r < 0)
		return r;
	v = add_node(&fs.root, "verify.txt", NODE_VERIFY);
	if (!v)
		return -ENOMEM;
	if (env->content) {
		r = add_systems(env, env->content);
		if (r < 0)
			return r;
	}
	return add_disks(env);
}

/* True when l holds an error. */
static bool has_errors(const struct ovf_finding_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].sev == OVF_SEV_ERROR)
			return true;
	return false;
}

/* Appends the disk checks made at mount time to verify.txt's text (takes
   and returns it; NULL stays NULL). */
static char *with_disk_findings(char *text)
{
	const struct ovf_finding_list *l = &fs.disk_findings;
	size_t len, add = 64;
	char *t;

	if (!text || !l->n)
		return text;
	for (size_t i = 0; i < l->n; i++)
		add += strlen(l->v[i].where) + strlen(l->v[i].what) + 16;
	len = strlen(text);
	t = realloc(text, len + add);
	if (!t)
		return text;
	len += (size_t)sprintf(t + len, "disks: %s\n", has_errors(l) ?
			       "NOT WHAT THE DESCRIPTOR DECLARES (not served as .raw)" :
			       "not all checked");
	for (size_t i = 0; i < l->n; i++)
		len += (size_t)sprintf(t + len, "  %s: %s: %s\n",
				       l->v[i].sev == OVF_SEV_ERROR ? "error" : "warning",
				       l->v[i].where, l->v[i].what);
	return t;
}

/* Makes verify.txt on first use: it reads every file of the package. */
static void ensure_verify(struct node *n)
{
	pthread_mutex_lock(&fs.lock);
	if (!n->size_known) {
		struct ovf_verify v;

		if (ovf_verify(fs.pkg, &v) < 0) {
			n->text = malloc(strlen(ovf_errmsg()) + 32);
			if (n->text)
				sprintf(n->text, "cannot verify: %s\n", ovf_errmsg());
		} else {
			n->text = ovf_verify_text(&v);
			ovf_verify_free(&v);
		}
		n->text = with_disk_findings(n->text);
		n->text_len = n->text ? strlen(n->text) : 0;
		n->size = n->text_len;
		n->size_known = true;
	}
	pthread_mutex_unlock(&fs.lock);
}

/* Finds the node for a path. */
static struct node *lookup(const char *path)
{
	struct node *n = &fs.root;
	const char *c = path;

	while (*c == '/')
		c++;
	while (*c && n) {
		const char *e = strchr(c, '/');
		size_t len = e ? (size_t)(e - c) : strlen(c);
		struct node *next = NULL;

		for (size_t i = 0; i < n->nkids && !next; i++)
			if (strlen(n->kids[i]->name) == len &&
			    !memcmp(n->kids[i]->name, c, len))
				next = n->kids[i];
		n = next;
		c += len;
		while (*c == '/')
			c++;
	}
	return n;
}

/* The size of a file node, learning it lazily (gzip'd files). */
static int node_size(struct node *n, uint64_t *size)
{
	int r = 0;

	if (n->kind == NODE_VERIFY)
		ensure_verify(n);
	if (!n->size_known) {
		pthread_mutex_lock(&fs.lock);
		if (!n->size_known) {
			r = ovf_stream_size(n->stream, &n->size);
			if (r < 0)
				say("%s: %s", n->name, ovf_errmsg());
			else
				n->size_known = true;
		}
		pthread_mutex_unlock(&fs.lock);
	}
	*size = n->size;
	return r;
}

static int fs_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	struct node *n = lookup(path);
	uint64_t size;

	if (!n)
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_mtim = st->st_ctim = st->st_atim = fs.mtime;
	if (n->kind == NODE_DIR) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	}
	if (node_size(n, &size) < 0)
		return -EIO;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct node *n = lookup(path);

	if (!n)
		return -ENOENT;
	if (n->kind != NODE_DIR)
		return -ENOTDIR;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	for (size_t i = 0; i < n->nkids; i++)
		fill(buf, n->kids[i]->name, NULL, 0, 0);
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct node *n = lookup(path);

	if (!n)
		return -ENOENT;
	if (n->kind == NODE_DIR)
		return -EISDIR;
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	if (n->kind == NODE_VERIFY)
		ensure_verify(n);
	fi->fh = (uint64_t)(uintptr_t)n;
	fi->keep_cache = 1;
	return 0;
}

static int fs_read(const char *path, char *buf, size_t len, off_t off,
		   struct fuse_file_info *fi)
{
	struct node *n = (struct node *)(uintptr_t)fi->fh;
	uint64_t size;
	int r;

	if (off < 0)
		return -EINVAL;
	if (node_size(n, &size) < 0)
		return -EIO;
	if ((uint64_t)off >= size)
		return 0;
	if (len > size - (uint64_t)off)
		len = (size_t)(size - (uint64_t)off);
	switch (n->kind) {
	case NODE_TEXT:
	case NODE_VERIFY:
		memcpy(buf, n->text + off, len);
		return (int)len;
	case NODE_STREAM: {
		ssize_t got = ovf_stream_pread(n->stream, buf, len, (uint64_t)off);

		if (got < 0) {
			say("%s: %s", path, ovf_errmsg());
			return -EIO;
		}
		return (int)got;
	}
	case NODE_BDEV:
		r = bdev_pread(n->bdev, buf, len, (uint64_t)off);
		if (r < 0) {
			say("%s: %s", path, bdev_errmsg());
			return r;
		}
		return (int)len;
	default:
		return -EISDIR;
	}
}

/* Large requests and deep kernel read-ahead: a sequential reader of a .raw
   keeps several 1 MiB requests in flight, served by different threads (each
   inflating its grains on its own engine queue). */
static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	conn->max_read = OVFFS_MAX_READ;
	conn->max_readahead = OVFFS_MAX_READAHEAD;
	if (conn->max_background < 64)
		conn->max_background = 64;
	if (conn->congestion_threshold < 48)
		conn->congestion_threshold = 48;
	cfg->kernel_cache = 1; /* read-only: pages stay valid across opens */
	cfg->entry_timeout = cfg->attr_timeout = 3600;
	return NULL;
}

static const struct fuse_operations ovffs_ops = {
	.init = fs_init,
	.getattr = fs_getattr,
	.readdir = fs_readdir,
	.open = fs_open,
	.read = fs_read,
};

/* Frees a node and what is below it, children in reverse order: a disk's
   .raw image goes before the stream it may read through. */
static void free_node(struct node *n, bool self)
{
	for (size_t i = n->nkids; i-- > 0;)
		free_node(n->kids[i], true);
	free(n->kids);
	free(n->text);
	free(n->name);
	if (n->stream)
		ovf_stream_close(n->stream);
	if (n->bdev)
		bdev_close(n->bdev);
	if (self)
		free(n);
}

/*
 * The kernel caps a FUSE mount's read-ahead at the 128 KiB it offers in
 * INIT; a sequential reader then has one small request in flight and the
 * second core idles. Where we may (root), raise the mount's BDI read-ahead
 * to OVFFS_MAX_READAHEAD. Found through /proc/self/mountinfo: a stat of the
 * mount point would ask ourselves before the loop runs. Best effort.
 */
static void raise_readahead(const char *mp)
{
	char *real = realpath(mp, NULL), line[4096], path[128];
	FILE *f = real ? fopen("/proc/self/mountinfo", "re") : NULL;
	unsigned maj = 0, min = 0;
	bool found = false;

	while (f && fgets(line, sizeof(line), f)) {
		char where[4096];

		/* id parent maj:min root mountpoint ... (last one wins) */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, where) == 3 &&
		    !strcmp(where, real) && strstr(line, " fuse.ovffs "))
			found = true;
	}
	if (f)
		fclose(f);
	free(real);
	if (!found)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
	f = fopen(path, "we");
	if (!f)
		return;
	fprintf(f, "%u\n", OVFFS_MAX_READAHEAD >> 10);
	if (fclose(f) != 0 && fs.debug)
		say("%s: %s", path, strerror(errno));
}

static void usage(FILE *f)
{
	fputs("Usage: ovffs [-f] [-d] [-s] [-o OPTIONS] PACKAGE MOUNTPOINT\n"
	      "\n"
	      "Mount an OVF package (an OVA file, a .ovf file, or a folder holding\n"
	      "one) read-only as a folder:\n"
	      "  NAME.ovf, NAME.mf, NAME.cert  the package's descriptor, manifest\n"
	      "                 and certificate, as stored\n"
	      "  verify.txt     what the manifest digests and the certificate say\n"
	      "  ID/            per virtual system (its ovf:id): hardware.json,\n"
	      "                 summary.txt, product.json, eula.txt\n"
	      "  disks/         each disk file as stored, and DISK.raw: its virtual\n"
	      "                 disk as raw bytes, read in place from the package\n"
	      "\n"
	      "Options:\n"
	      "  -f              stay in the foreground\n"
	      "  -d              debug output (implies -f)\n"
	      "  -s              one FUSE thread\n"
	      "  -o OPTIONS      FUSE mount options (allow_other, ...)\n"
	      "  -h, --help      this text\n"
	      "\n"
	      "Examples:\n"
	      "  ovffs appliance.ova /mnt/ova && cat /mnt/ova/verify.txt\n"
	      "  clamscan -r /mnt/ova/disks\n"
	      "  fusermount3 -u /mnt/ova\n"
	      "\n"
	      "Exit status: 0 once mounted (or after -f ends), 1 when the package\n"
	      "cannot be opened or mounted, 2 on a usage error.\n", f);
}

int main(int argc, char **argv)
{
	const char *pkg_path = NULL, *mp = NULL;
	bool foreground = false, single = false;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *cfg;
	struct fuse *f;
	char *fsname;
	int r, ret = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "-f")) {
			foreground = true;
		} else if (!strcmp(argv[i], "-d")) {
			fs.debug = foreground = true;
		} else if (!strcmp(argv[i], "-s")) {
			single = true;
		} else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			i++; /* passed to FUSE below */
		} else if (!strcmp(argv[i], "-o")) {
			say("-o needs a list of mount options");
			usage(stderr);
			return 2;
		} else if (argv[i][0] == '-') {
			say("unknown option %s", argv[i]);
			usage(stderr);
			return 2;
		} else if (!pkg_path) {
			pkg_path = argv[i];
		} else if (!mp) {
			mp = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!pkg_path || !mp) {
		usage(stderr);
		return 2;
	}
	if (access(mp, F_OK) < 0) {
		say("mount point %s: %s", mp, strerror(errno));
		return 1;
	}
	{
		struct stat st;

		if (stat(pkg_path, &st) == 0)
			fs.mtime = st.st_mtim;
	}
	/* libfuse allocates each 1 MiB read reply and the engine each grain
	   record: keep them in the heap, not fresh mmaps faulted in page by
	   page on every request (~15% of the daemon's CPU on a whole read) */
	mallopt(M_MMAP_THRESHOLD, 8 << 20);
	mallopt(M_TRIM_THRESHOLD, 128 << 20);
	pthread_mutex_init(&fs.lock, NULL);
	if (ovf_open(pkg_path, &fs.pkg) < 0) {
		say("cannot open %s", ovf_errmsg());
		return 1;
	}
	r = build_tree();
	if (r < 0) {
		say("%s: cannot build the tree: %s", pkg_path, strerror(-r));
		goto err_free_tree;
	}
	fsname = malloc(strlen(pkg_path) + 64);
	if (!fsname)
		goto err_free_tree;
	sprintf(fsname, "ro,fsname=ovffs:%s,subtype=ovffs,max_read=%u", pkg_path,
		OVFFS_MAX_READ);
	fuse_opt_add_arg(&args, argv[0]);
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, fsname);
	free(fsname);
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			fuse_opt_add_arg(&args, "-o");
			fuse_opt_add_arg(&args, argv[++i]);
		}
	if (fs.debug)
		fuse_opt_add_arg(&args, "-d");
	f = fuse_new(&args, &ovffs_ops, sizeof(ovffs_ops), NULL);
	if (!f) {
		say("bad FUSE options");
		goto err_free_args;
	}
	if (fuse_mount(f, mp) != 0) {
		say("cannot mount on %s (is /dev/fuse usable, fusermount3 installed?)", mp);
		goto err_destroy;
	}
	raise_readahead(mp);
	if (fuse_set_signal_handlers(fuse_get_session(f)) != 0)
		goto err_unmount;
	if (fuse_daemonize(foreground) != 0)
		goto err_signals;
	if (single) {
		ret = fuse_loop(f) ? 1 : 0;
	} else {
		cfg = fuse_loop_cfg_create();
		if (cfg) {
			fuse_loop_cfg_set_max_threads(cfg, 16);
			ret = fuse_loop_mt(f, cfg) ? 1 : 0;
			fuse_loop_cfg_destroy(cfg);
		}
	}
err_signals:
	fuse_remove_signal_handlers(fuse_get_session(f));
err_unmount:
	fuse_unmount(f);
err_destroy:
	fuse_destroy(f);
err_free_args:
	fuse_opt_free_args(&args);
err_free_tree:
	free_node(&fs.root, false);
	ovf_close(fs.pkg);
	ovf_findings_free(&fs.disk_findings);
	return ret;
}
