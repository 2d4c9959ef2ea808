/* SPDX-License-Identifier: Apache-2.0 */
/* fsops.c - the FUSE operations: the raw windows, info.json and fs/. */
#include "vmdkfs.h"
#include "browse.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#define VMDKFS_MAX_BACKGROUND 64

/* Inode numbers: small ones for our own nodes, guest inodes shifted into
 * a per-filesystem range so hard links stay recognisable under fs/. */
enum {
	INO_ROOT = 1, INO_DISK, INO_INFO, INO_PARTDIR, INO_FSDIR, INO_STATUS,
	INO_PART0 = 16,
};
#define INO_GUEST_SHIFT 48
#define INO_GUEST_MASK ((UINT64_C(1) << INO_GUEST_SHIFT) - 1)

enum node_kind {
	NODE_NONE, NODE_ROOT, NODE_DISK, NODE_INFO, NODE_PARTDIR, NODE_PART,
	NODE_FSDIR, NODE_STATUS, NODE_GUEST,
};

struct node {
	enum node_kind kind;
	const struct vmdkfs_window *win; /* NODE_DISK, NODE_PART */
	unsigned index;                  /* partition or target index */
	const struct browse_target *target;
	char real[PATH_MAX];             /* NODE_GUEST: path in staging */
};

/* An open file: a window, an in-memory document or a guest file. */
struct handle {
	enum node_kind kind;
	const struct vmdkfs_window *win;
	unsigned index; /* partition or target index */
	int fd;         /* NODE_GUEST */
	struct handle *prev, *next; /* NODE_GUEST: in fs->guest_files */
};

static struct vmdkfs_view *view(void)
{
	return fuse_get_context()->private_data;
}

/* Resolves path in the calling session's view; 0 or -ENOENT. */
static int resolve(const char *path, struct node *n)
{
	struct vmdkfs_view *v = view();
	struct vmdkfs *fs = v->fs;
	const char *rest;
	size_t len;
	unsigned i;

	memset(n, 0, sizeof(*n));
	if (!strcmp(path, "/")) {
		n->kind = NODE_ROOT;
		return 0;
	}
	if (!strcmp(path, "/disk")) {
		n->kind = NODE_DISK;
		n->win = &fs->disk;
		return 0;
	}
	if (!strcmp(path, "/info.json") && !v->staging) {
		n->kind = NODE_INFO;
		return 0;
	}
	if (!strncmp(path, "/partitions", 11)) {
		rest = path + 11;
		if (!*rest) {
			n->kind = NODE_PARTDIR;
			return 0;
		}
		if (*rest++ != '/')
			return -ENOENT;
		for (i = 0; i < fs->pt->count; i++) {
			if (!strcmp(rest, fs->parts[i].name)) {
				n->kind = NODE_PART;
				n->win = &fs->parts[i];
				n->index = i;
				return 0;
			}
		}
		return -ENOENT;
	}
	if (!strncmp(path, "/fs", 3) && fs->browse && !v->staging) {
		const struct browse_target *t;

		rest = path + 3;
		if (!*rest) {
			n->kind = NODE_FSDIR;
			return 0;
		}
		if (*rest++ != '/')
			return -ENOENT;
		if (!strcmp(rest, "status.txt")) {
			n->kind = NODE_STATUS;
			return 0;
		}
		len = strcspn(rest, "/");
		t = browse_find(fs->browse, rest, len);
		if (!t || !t->mounted)
			return -ENOENT;
		if (snprintf(n->real, sizeof(n->real), "%s%s", t->dir,
			     rest + len) >= (int)sizeof(n->real))
			return -ENAMETOOLONG;
		n->kind = NODE_GUEST;
		n->target = t;
		n->index = (unsigned)(t - fs->browse->targets);
		return 0;
	}
	return -ENOENT;
}

static uint64_t guest_ino(unsigned target, ino_t ino)
{
	return ((uint64_t)(target + 1) << INO_GUEST_SHIFT) |
	       ((uint64_t)ino & INO_GUEST_MASK);
}

static int doc_get(struct vmdkfs *fs, enum node_kind k, const char **data,
		   size_t *len)
{
	int ret;

	if (k == NODE_STATUS) {
		*data = fs->browse->status ? fs->browse->status : "";
		*len = fs->browse->status_len;
		return 0;
	}
	pthread_mutex_lock(&fs->info_lock);
	if (!fs->info_json) {
		ret = vmdkfs_info_json(fs, &fs->info_json, &fs->info_len);
		if (ret < 0) {
			pthread_mutex_unlock(&fs->info_lock);
			return ret;
		}
	}
	pthread_mutex_unlock(&fs->info_lock);
	*data = fs->info_json;
	*len = fs->info_len;
	return 0;
}

static void fill_stat(struct vmdkfs *fs, const struct node *n,
		      struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_atim = st->st_mtim = st->st_ctim = fs->mtime;
	st->st_blksize = 4096;
	switch (n->kind) {
	case NODE_ROOT:
	case NODE_PARTDIR:
	case NODE_FSDIR:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		st->st_ino = n->kind == NODE_ROOT ? INO_ROOT :
			     n->kind == NODE_PARTDIR ? INO_PARTDIR : INO_FSDIR;
		break;
	case NODE_DISK:
	case NODE_PART:
		st->st_mode = S_IFREG | (fs->writable ? 0644 : 0444);
		st->st_nlink = 1;
		st->st_size = (off_t)n->win->size;
		st->st_blocks = (blkcnt_t)(n->win->size / 512);
		st->st_ino = n->kind == NODE_DISK ? INO_DISK :
			     INO_PART0 + n->index;
		break;
	case NODE_INFO:
	case NODE_STATUS: {
		const char *d;
		size_t len = 0;

		doc_get(fs, n->kind, &d, &len);
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)len;
		st->st_ino = n->kind == NODE_INFO ? INO_INFO : INO_STATUS;
		break;
	}
	default:
		break;
	}
}

/* With nullpath_ok, calls on an open file get no path: use its handle. */
static int handle_getattr(struct vmdkfs *fs, const struct handle *h,
			  struct stat *st)
{
	struct node n;

	if (!h)
		return -EBADF;
	if (h->kind == NODE_GUEST) {
		if (fstat(h->fd, st) < 0)
			return -errno;
		st->st_ino = guest_ino(h->index, st->st_ino);
		return 0;
	}
	memset(&n, 0, sizeof(n));
	n.kind = h->kind;
	n.win = h->win;
	n.index = h->index;
	fill_stat(fs, &n, st);
	return 0;
}

static int op_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	struct vmdkfs *fs = view()->fs;
	struct node n;
	int ret;

	if (!path && fi)
		return handle_getattr(fs, (struct handle *)(uintptr_t)fi->fh,
				      st);
	ret = resolve(path, &n);
	if (ret < 0)
		return ret;
	if (n.kind == NODE_GUEST) {
		if (lstat(n.real, st) < 0)
			return -errno;
		st->st_ino = guest_ino(n.index, st->st_ino);
		return 0;
	}
	fill_stat(fs, &n, st);
	return 0;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
	struct node n;
	ssize_t r;
	int ret = resolve(path, &n);

	if (ret < 0)
		return ret;
	if (n.kind != NODE_GUEST)
		return -EINVAL;
	r = readlink(n.real, buf, size - 1);
	if (r < 0)
		return -errno;
	buf[r] = '\0';
	return 0;
}

static int fill_dir_entry(void *buf, fuse_fill_dir_t filler, const char *name,
			  uint64_t ino, mode_t mode)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_ino = ino;
	st.st_mode = mode;
	return filler(buf, name, &st, 0, 0);
}

/* With nullpath_ok, readdir gets no path: opendir resolves it once and
 * keeps the node. */
static int op_opendir(const char *path, struct fuse_file_info *fi)
{
	struct node *n = malloc(sizeof(*n));
	int ret;

	if (!n)
		return -ENOMEM;
	ret = resolve(path, n);
	if (ret == 0 && n->kind != NODE_ROOT && n->kind != NODE_PARTDIR &&
	    n->kind != NODE_FSDIR && n->kind != NODE_GUEST)
		ret = -ENOTDIR;
	if (ret < 0) {
		free(n);
		return ret;
	}
	fi->fh = (uint64_t)(uintptr_t)n;
	return 0;
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
	free((struct node *)(uintptr_t)fi->fh);
	return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct vmdkfs_view *v = view();
	struct vmdkfs *fs = v->fs;
	const struct node *np = (const struct node *)(uintptr_t)fi->fh;
	const struct node n = *np;
	unsigned i;

	switch (n.kind) {
	case NODE_ROOT:
		fill_dir_entry(buf, filler, ".", INO_ROOT, S_IFDIR);
		fill_dir_entry(buf, filler, "..", INO_ROOT, S_IFDIR);
		fill_dir_entry(buf, filler, "disk", INO_DISK, S_IFREG);
		fill_dir_entry(buf, filler, "partitions", INO_PARTDIR, S_IFDIR);
		if (!v->staging) {
			fill_dir_entry(buf, filler, "info.json", INO_INFO,
				       S_IFREG);
			if (fs->browse)
				fill_dir_entry(buf, filler, "fs", INO_FSDIR,
					       S_IFDIR);
		}
		return 0;
	case NODE_PARTDIR:
		fill_dir_entry(buf, filler, ".", INO_PARTDIR, S_IFDIR);
		fill_dir_entry(buf, filler, "..", INO_ROOT, S_IFDIR);
		for (i = 0; i < fs->pt->count; i++)
			fill_dir_entry(buf, filler, fs->parts[i].name,
				       INO_PART0 + i, S_IFREG);
		return 0;
	case NODE_FSDIR:
		fill_dir_entry(buf, filler, ".", INO_FSDIR, S_IFDIR);
		fill_dir_entry(buf, filler, "..", INO_ROOT, S_IFDIR);
		fill_dir_entry(buf, filler, "status.txt", INO_STATUS, S_IFREG);
		for (i = 0; i < fs->browse->count; i++) {
			const struct browse_target *t = &fs->browse->targets[i];
			struct stat st;

			if (!t->mounted || lstat(t->dir, &st) < 0)
				continue;
			fill_dir_entry(buf, filler, t->name,
				       guest_ino(i, st.st_ino), S_IFDIR);
		}
		return 0;
	case NODE_GUEST: {
		DIR *d = opendir(n.real);
		struct dirent *de;

		if (!d)
			return -errno;
		while ((de = readdir(d))) {
			uint64_t ino = guest_ino(n.index, de->d_ino);

			if (fill_dir_entry(buf, filler, de->d_name, ino,
					   (mode_t)DTTOIF(de->d_type)))
				break;
		}
		closedir(d);
		return 0;
	}
	default:
		return -ENOTDIR;
	}
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct vmdkfs *fs = view()->fs;
	bool wants_write = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct handle *h;
	struct node n;
	int ret = resolve(path, &n);

	if (ret < 0)
		return ret;
	switch (n.kind) {
	case NODE_DISK:
	case NODE_PART:
		if (wants_write && !fs->writable)
			return -EROFS;
		break;
	case NODE_INFO:
	case NODE_STATUS:
	case NODE_GUEST:
		if (wants_write)
			return -EROFS;
		break;
	default:
		return -EISDIR;
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->kind = n.kind;
	h->win = n.win;
	h->index = n.index;
	h->fd = -1;
	if (n.kind == NODE_GUEST) {
		h->fd = open(n.real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (h->fd < 0) {
			ret = -errno;
			free(h);
			return ret;
		}
		pthread_mutex_lock(&fs->guest_lock);
		h->next = fs->guest_files;
		if (h->next)
			h->next->prev = h;
		fs->guest_files = h;
		pthread_mutex_unlock(&fs->guest_lock);
		fi->keep_cache = 1;
	} else if (n.kind == NODE_DISK || n.kind == NODE_PART) {
		/* Read-write: every read goes to the engine so that readers
		 * of other windows (and of the image) see fresh data. */
		if (fs->writable)
			fi->direct_io = 1;
		else
			fi->keep_cache = 1;
	} else {
		fi->keep_cache = 1;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}

/* Takes h off fs->guest_files and closes its file; the lock is held. */
/* Unlink guest handle h from fs->guest_files (guest_lock held). */
static void guest_file_unlink(struct vmdkfs *fs, struct handle *h)
{
	if (h->prev)
		h->prev->next = h->next;
	else
		fs->guest_files = h->next;
	if (h->next)
		h->next->prev = h->prev;
	h->prev = h->next = NULL;
}

/*
 * A guest handle stays on fs->guest_files from open to release, even once
 * vmdkfs_close_guest_files has closed its fd, so one whose release the
 * kernel never sends is still freed by vmdkfs_free_guest_handles.
 */
static int op_release(const char *path, struct fuse_file_info *fi)
{
	struct vmdkfs *fs = view()->fs;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	if (h->kind == NODE_GUEST) {
		pthread_mutex_lock(&fs->guest_lock);
		guest_file_unlink(fs, h);
		if (h->fd >= 0)
			close(h->fd);
		pthread_mutex_unlock(&fs->guest_lock);
	}
	free(h);
	return 0;
}

void vmdkfs_close_guest_files(struct vmdkfs *fs)
{
	pthread_mutex_lock(&fs->guest_lock);
	for (struct handle *h = fs->guest_files; h; h = h->next) {
		if (h->fd >= 0)
			close(h->fd);
		h->fd = -1;
	}
	pthread_mutex_unlock(&fs->guest_lock);
}

void vmdkfs_free_guest_handles(struct vmdkfs *fs)
{
	pthread_mutex_lock(&fs->guest_lock);
	while (fs->guest_files) {
		struct handle *h = fs->guest_files;

		guest_file_unlink(fs, h);
		if (h->fd >= 0)
			close(h->fd);
		free(h);
	}
	pthread_mutex_unlock(&fs->guest_lock);
}

/* Reads up to size bytes of window w at off into buf; bytes or -errno. */
static int window_read(struct vmdkfs *fs, const struct vmdkfs_window *w,
		       char *buf, size_t size, off_t off)
{
	uint64_t o = (uint64_t)off;
	int ret;

	if (off < 0)
		return -EINVAL;
	if (o >= w->size)
		return 0;
	if (size > w->size - o)
		size = (size_t)(w->size - o);
	ret = bdev_pread(fs->bdev, buf, size, w->offset + o);
	if (ret < 0) {
		vmdkfs_log("read %s at %llu+%zu: %s", w->name,
			   (unsigned long long)o, size, bdev_errmsg());
		return ret;
	}
	return (int)size;
}

/* Does run's file still hold all of its bytes? A host file cut short
   after the image was opened would make a splice from it end early. */
static bool run_in_file(const struct bdev_host_run *run)
{
	struct stat st;

	if (fstat(run->fd, &st) < 0)
		return false;
	if (S_ISBLK(st.st_mode))
		return true; /* its size does not change under us */
	return run->file_offset + run->length <= (uint64_t)st.st_size;
}

/* Pieces a window read may be answered with; a request that maps to more
   is read whole through the engine. */
#define READ_PIECES_MAX 8

/*
 * Read-only mounts: [off, off + size) of window w (inside it) as pieces
 * libfuse can splice to the kernel straight from the image's files where
 * the engine stores them as is (bdev_map_host), and memory read through
 * the engine elsewhere (compressed grains, zeros). Nothing writes the
 * image, so the files' bytes stay the image's until libfuse has read them.
 * Returns 1 with *bufp set, 0 when no piece is in a file (the caller reads
 * the request through the engine as before), or -errno.
 */
static int window_read_fd(struct vmdkfs *fs, const struct vmdkfs_window *w,
			  struct fuse_bufvec **bufp, size_t size, uint64_t off)
{
	struct fuse_buf piece[READ_PIECES_MAX];
	struct fuse_bufvec *bv;
	bool any_fd = false;
	unsigned n = 0, i;
	uint64_t pos = 0;
	int ret;

	while (pos < size) {
		struct bdev_host_run run;
		struct fuse_buf *last = n ? &piece[n - 1] : NULL;
		int k = bdev_map_host(fs->bdev, w->offset + off + pos, size - pos,
				      &run);

		if (k < 0) {
			vmdkfs_log("map %s at %llu+%zu: %s", w->name,
				   (unsigned long long)(off + pos), size,
				   bdev_errmsg());
			return k;
		}
		if (k == BDEV_HOST_FILE && !run_in_file(&run))
			/* the file ends early (cut under the mount): libfuse
			   would send a short reply; the engine's read says EIO */
			return 0;
		if (k == BDEV_HOST_FILE && last && (last->flags & FUSE_BUF_IS_FD) &&
		    last->fd == run.fd &&
		    (uint64_t)last->pos + last->size == run.file_offset) {
			last->size += (size_t)run.length;
		} else if (k != BDEV_HOST_FILE && last &&
			   !(last->flags & FUSE_BUF_IS_FD)) {
			last->size += (size_t)run.length;
		} else if (n == READ_PIECES_MAX) {
			return 0;
		} else if (k == BDEV_HOST_FILE) {
			piece[n++] = (struct fuse_buf){
				.size = (size_t)run.length,
				.flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK,
				.fd = run.fd, .pos = (off_t)run.file_offset };
			any_fd = true;
		} else {
			/* pos until filled: where the piece starts in w */
			piece[n++] = (struct fuse_buf){
				.size = (size_t)run.length, .fd = -1,
				.pos = (off_t)(off + pos) };
		}
		pos += run.length;
	}
	if (!any_fd)
		return 0;
	bv = calloc(1, sizeof(*bv) + (n - 1) * sizeof(bv->buf[0]));
	if (!bv)
		return -ENOMEM;
	bv->count = n;
	for (i = 0; i < n; i++) {
		bv->buf[i] = piece[i];
		if (piece[i].flags & FUSE_BUF_IS_FD)
			continue;
		bv->buf[i].pos = 0;
		bv->buf[i].mem = malloc(piece[i].size);
		ret = bv->buf[i].mem ? window_read(fs, w, bv->buf[i].mem,
						   piece[i].size,
						   piece[i].pos) : -ENOMEM;
		if (ret >= 0 && (size_t)ret != piece[i].size)
			ret = -EIO;
		if (ret < 0) {
			for (unsigned j = 0; j <= i; j++)
				if (!(bv->buf[j].flags & FUSE_BUF_IS_FD))
					free(bv->buf[j].mem);
			free(bv);
			return ret;
		}
	}
	*bufp = bv;
	return 1;
}

/*
 * A worker's reply buffer on read-only mounts: the pages of a memfd, mapped
 * here. The engine reads into it (copying cached grains out, inflating
 * whole grains straight in) and libfuse splices it to the kernel, which
 * takes the pages into the pipe by reference: the one copy left is the
 * kernel's into the reader's buffer. A malloc'd reply is instead pinned
 * page by page for writev (about 7% of all CPU of a streamOptimized
 * reader at depth 1). libfuse has sent a reply before its worker takes the
 * next request, so one buffer per worker thread is enough.
 */
struct reply_buf {
	int fd;
	uint8_t *map;
};

static pthread_key_t reply_key;
static pthread_once_t reply_once = PTHREAD_ONCE_INIT;
static bool reply_key_ok;

static void reply_buf_free(void *p)
{
	struct reply_buf *rb = p;

	munmap(rb->map, VMDKFS_RO_READ_MAX);
	close(rb->fd);
	free(rb);
}

static void reply_key_make(void)
{
	reply_key_ok = pthread_key_create(&reply_key, reply_buf_free) == 0;
}

/* This thread's reply buffer of VMDKFS_RO_READ_MAX bytes, or NULL (the
   caller replies from malloc'd memory then). */
static struct reply_buf *reply_buf_get(void)
{
	struct reply_buf *rb;

	pthread_once(&reply_once, reply_key_make);
	if (!reply_key_ok)
		return NULL;
	rb = pthread_getspecific(reply_key);
	if (rb)
		return rb;
	rb = malloc(sizeof(*rb));
	if (!rb)
		return NULL;
	rb->fd = memfd_create("vmdkfs-reply", MFD_CLOEXEC);
	if (rb->fd < 0)
		goto err_free;
	if (ftruncate(rb->fd, VMDKFS_RO_READ_MAX) < 0)
		goto err_close_fd;
	rb->map = mmap(NULL, VMDKFS_RO_READ_MAX, PROT_READ | PROT_WRITE,
		       MAP_SHARED, rb->fd, 0);
	if (rb->map == MAP_FAILED)
		goto err_close_fd;
	if (pthread_setspecific(reply_key, rb) != 0)
		goto err_unmap;
	return rb;

err_unmap:
	munmap(rb->map, VMDKFS_RO_READ_MAX);
err_close_fd:
	close(rb->fd);
err_free:
	free(rb);
	return NULL;
}

/* A read-only window read of at least two pages that maps to no host-file
   run: read into this thread's reply buffer and hand libfuse its fd.
   Returns 1 with *bufp set, 0 to reply from memory instead, or -errno. */
static int window_read_memfd(struct vmdkfs *fs, const struct vmdkfs_window *w,
			     struct fuse_bufvec **bufp, size_t size, uint64_t off)
{
	struct reply_buf *rb;
	struct fuse_bufvec *bv;
	int ret;

	if (size > VMDKFS_RO_READ_MAX || !(rb = reply_buf_get()))
		return 0;
	bv = malloc(sizeof(*bv));
	if (!bv)
		return -ENOMEM;
	ret = window_read(fs, w, (char *)rb->map, size, (off_t)off);
	if (ret < 0) {
		free(bv);
		return ret;
	}
	*bv = FUSE_BUFVEC_INIT((size_t)ret);
	bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv->buf[0].fd = rb->fd;
	bv->buf[0].pos = 0;
	*bufp = bv;
	return 1;
}

static int op_read_buf(const char *path, struct fuse_bufvec **bufp,
		       size_t size, off_t off, struct fuse_file_info *fi)
{
	struct vmdkfs_view *v = view();
	struct vmdkfs *fs = v->fs;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct fuse_bufvec *bv;
	char *mem;
	int ret;

	/* libfuse splices only replies of two pages or more; it would copy
	   a smaller one from the file into a buffer of its own anyway */
	if ((h->kind == NODE_DISK || h->kind == NODE_PART) && !fs->writable &&
	    v->splice_write && off >= 0 && (uint64_t)off < h->win->size && size >= 8192) {
		size_t n = (uint64_t)size > h->win->size - (uint64_t)off ?
			   (size_t)(h->win->size - (uint64_t)off) : size;

		ret = fs->splice_reads ? window_read_fd(fs, h->win, bufp, n, (uint64_t)off) : 0;
		if (ret == 0)
			ret = window_read_memfd(fs, h->win, bufp, n, (uint64_t)off);
		if (ret != 0)
			return ret < 0 ? ret : 0;
	}
	bv = malloc(sizeof(*bv));
	if (!bv)
		return -ENOMEM;
	*bv = FUSE_BUFVEC_INIT(size);
	if (h->kind == NODE_GUEST) {
		/* Let libfuse splice straight from the guest file. */
		bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv->buf[0].fd = h->fd;
		bv->buf[0].pos = off;
		*bufp = bv;
		return 0;
	}
	mem = malloc(size ? size : 1);
	if (!mem) {
		free(bv);
		return -ENOMEM;
	}
	if (h->kind == NODE_INFO || h->kind == NODE_STATUS) {
		const char *d;
		size_t len;

		ret = doc_get(fs, h->kind, &d, &len);
		if (ret == 0) {
			if (off < 0 || (size_t)off >= len)
				ret = 0;
			else {
				ret = (int)(len - (size_t)off < size ?
					    len - (size_t)off : size);
				memcpy(mem, d + off, (size_t)ret);
			}
		}
	} else {
		ret = window_read(fs, h->win, mem, size, off);
	}
	if (ret < 0) {
		free(mem);
		free(bv);
		return ret;
	}
	bv->buf[0].mem = mem;
	bv->buf[0].size = (size_t)ret;
	*bufp = bv;
	return 0;
}

static int op_write(const char *path, const char *buf, size_t size,
		    off_t off, struct fuse_file_info *fi)
{
	struct vmdkfs *fs = view()->fs;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	const struct vmdkfs_window *w = h->win;
	uint64_t o = (uint64_t)off;
	int ret;

	if (!w || !fs->writable)
		return -EROFS;
	if (off < 0)
		return -EINVAL;
	if (o >= w->size)
		return size ? -ENOSPC : 0;
	if (size > w->size - o)
		size = (size_t)(w->size - o);
	ret = bdev_pwrite(fs->bdev, buf, size, w->offset + o);
	if (ret < 0) {
		vmdkfs_log("write %s at %llu+%zu: %s", w->name,
			   (unsigned long long)o, size, bdev_errmsg());
		return ret;
	}
	return (int)size;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct vmdkfs *fs = view()->fs;
	int ret;

	if (!fs->writable)
		return 0;
	ret = bdev_flush(fs->bdev);
	if (ret < 0)
		vmdkfs_log("flush: %s", bdev_errmsg());
	return ret;
}

static int op_truncate(const char *path, off_t size,
		       struct fuse_file_info *fi)
{
	struct node n;
	int ret;

	if (!path && fi) {
		const struct handle *h = (struct handle *)(uintptr_t)fi->fh;

		n.kind = h->kind;
		n.win = h->win;
	} else {
		ret = resolve(path, &n);
		if (ret < 0)
			return ret;
	}
	if (n.kind != NODE_DISK && n.kind != NODE_PART)
		return -EROFS;
	if (!view()->fs->writable)
		return -EROFS;
	/* A window is as large as the disk or partition, never more. */
	return (uint64_t)size == n.win->size ? 0 : -EPERM;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
	struct vmdkfs *fs = view()->fs;
	struct node n;
	int ret = resolve(path, &n);

	if (ret == 0 && n.kind == NODE_GUEST)
		return statvfs(n.real, sv) < 0 ? -errno : 0;
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = sv->f_frsize = 4096;
	sv->f_blocks = fs->size / 4096;
	sv->f_namemax = 255;
	return 0;
}

static int op_getxattr(const char *path, const char *name, char *value,
		       size_t size)
{
	struct node n;
	ssize_t r;
	int ret = resolve(path, &n);

	if (ret < 0)
		return ret;
	if (n.kind != NODE_GUEST)
		return -ENODATA;
	r = lgetxattr(n.real, name, value, size);
	return r < 0 ? -errno : (int)r;
}

static int op_listxattr(const char *path, char *list, size_t size)
{
	struct node n;
	ssize_t r;
	int ret = resolve(path, &n);

	if (ret < 0)
		return ret;
	if (n.kind != NODE_GUEST)
		return 0;
	r = llistxattr(n.real, list, size);
	return r < 0 ? -errno : (int)r;
}

static int op_access(const char *path, int mask)
{
	struct node n;
	int ret = resolve(path, &n);

	if (ret < 0)
		return ret;
	if ((mask & W_OK) && !((n.kind == NODE_DISK || n.kind == NODE_PART) &&
			       view()->fs->writable))
		return -EROFS;
	if (n.kind == NODE_GUEST)
		return access(n.real, mask & ~W_OK) < 0 ? -errno : 0;
	return 0;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct vmdkfs_view *v = view();

	cfg->use_ino = 1;
	/* read, write, fsync and release work from the handle: spare libfuse
	 * building (and locking) the path of every request. */
	cfg->nullpath_ok = 1;
	if (!v->fs->writable) {
		/* Nothing changes under a read-only mount. */
		cfg->entry_timeout = 3600;
		cfg->attr_timeout = 3600;
		cfg->negative_timeout = 60;
	}
	conn->max_write = VMDKFS_IO_MAX;
	conn->max_readahead = VMDKFS_READAHEAD; /* see vmdkfs_raise_readahead */
	if (!v->fs->writable)
		conn->max_read = VMDKFS_RO_READ_MAX; /* as build_fuse_args */
	/* Asynchronous direct I/O counts as background requests: the kernel's
	 * default of 12 in flight would cap a depth-32 reader. */
	conn->max_background = VMDKFS_MAX_BACKGROUND;
	conn->congestion_threshold = VMDKFS_MAX_BACKGROUND * 3 / 4;
	/* Read-only mounts reply to large reads by splice: from the image's
	 * files where the engine stores data as is, else from a worker's
	 * memfd reply buffer (window_read_memfd). */
	if ((conn->capable & FUSE_CAP_SPLICE_WRITE) &&
	    (v->fs->splice_reads || !v->fs->writable)) {
		conn->want |= FUSE_CAP_SPLICE_WRITE;
		v->splice_write = true;
	}
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	return v;
}

const struct fuse_operations vmdkfs_ops = {
	.init = op_init,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.open = op_open,
	.release = op_release,
	.read_buf = op_read_buf,
	.write = op_write,
	.fsync = op_fsync,
	.truncate = op_truncate,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.access = op_access,
};
