/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bsrc_file.c - byte sources backed by a file descriptor: a whole file
 * (readable, maybe writable, locked) or a read-only region of one (a member
 * of an OVA tar). The core moves their bytes with io_uring at base + offset;
 * the ops below serve the synchronous callers (drivers reading metadata).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/*
 * The byte range every ovk process locks. OFD locks may lie beyond EOF, so
 * a range far past any real image never collides with data ranges someone
 * else might lock.
 */
#define BSRC_LOCK_START (1ull << 62)
#define BSRC_LOCK_LEN 1

/* Reads up to len bytes at base + off, stopping only at end of file. */
static ssize_t fd_pread_all(int fd, void *buf, size_t len, uint64_t pos)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done,
				  (off_t)(pos + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Reads from a whole file or a region, clamped to the region's end. */
static ssize_t bsrc_fd_pread(struct bsrc *s, void *buf, size_t len,
			     uint64_t off)
{
	ssize_t n;

	if (!s->whole_file) {
		uint64_t length = bsrc_length(s);

		if (off >= length)
			return 0;
		if (len > length - off)
			len = (size_t)(length - off);
	}
	n = fd_pread_all(s->fd, buf, len, s->base + off);
	if (n < 0)
		return bdev_err((int)n, "%s: read of %zu bytes at offset %" PRIu64
				" failed: %s", s->name, len, off, strerror((int)-n));
	return n;
}

/* Writes all len bytes at off of a whole file, growing it if needed. */
static ssize_t bsrc_file_pwrite(struct bsrc *s, const void *buf, size_t len,
				uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(s->fd, (const uint8_t *)buf + done,
				   len - done, (off_t)(s->base + off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return bdev_err(-errno, "%s: write of %zu bytes at offset %"
					PRIu64 " failed: %s", s->name, len,
					off + done, strerror(errno));
		}
		done += (size_t)n;
	}
	/* writers allocating at the end race here: only ever grow */
	uint64_t end = off + len, cur = __atomic_load_n(&s->length, __ATOMIC_RELAXED);
	while (end > cur && !__atomic_compare_exchange_n(&s->length, &cur, end, true,
							 __ATOMIC_RELEASE,
							 __ATOMIC_RELAXED))
		;
	atomic_fetch_add_explicit(&s->write_gen, 1, memory_order_release);
	return (ssize_t)len;
}

/*
 * Makes written data durable: fdatasync, unless nothing was written since
 * a flush that succeeded began (a write that ends during an fdatasync
 * bumps write_gen past what that flush records, so the next one syncs).
 */
static int bsrc_file_flush(struct bsrc *s)
{
	uint_fast64_t gen = atomic_load_explicit(&s->write_gen,
						 memory_order_acquire);
	uint_fast64_t done = atomic_load_explicit(&s->synced_gen,
						  memory_order_acquire);

	if (gen == done)
		return 0;
	if (fdatasync(s->fd) < 0)
		return bdev_err(-errno, "%s: fdatasync failed: %s", s->name,
				strerror(errno));
	/* gens only grow: keep the newest of concurrent flushes */
	while (done < gen &&
	       !atomic_compare_exchange_weak_explicit(&s->synced_gen, &done, gen,
						      memory_order_release,
						      memory_order_acquire))
		;
	return 0;
}

/* Sets the file's size to len. */
static int bsrc_file_truncate(struct bsrc *s, uint64_t len)
{
	if (ftruncate(s->fd, (off_t)len) < 0)
		return bdev_err(-errno, "%s: cannot resize to %" PRIu64
				" bytes: %s", s->name, len, strerror(errno));
	bsrc_set_length(s, len);
	atomic_fetch_add_explicit(&s->write_gen, 1, memory_order_release);
	return 0;
}

/* Closes the descriptor (dropping its OFD lock) and frees the source. */
static void bsrc_fd_close(struct bsrc *s)
{
	close(s->fd);
	free(s->name);
	free(s);
}

static const struct bsrc_ops bsrc_file_ro_ops = {
	.kind = "file",
	.pread = bsrc_fd_pread,
	.close = bsrc_fd_close,
};

static const struct bsrc_ops bsrc_file_rw_ops = {
	.kind = "file",
	.pread = bsrc_fd_pread,
	.pwrite = bsrc_file_pwrite,
	.flush = bsrc_file_flush,
	.truncate = bsrc_file_truncate,
	.close = bsrc_fd_close,
};

static const struct bsrc_ops bsrc_region_ops = {
	.kind = "region",
	.pread = bsrc_fd_pread,
	.close = bsrc_fd_close,
};

/*
 * QEMU's image locks (block/file-posix.c), so that QEMU and ovk see each
 * other: OFD locks, all shared (F_RDLCK), one byte per block permission.
 * Byte QEMU_LOCK_PERM + i is held while a user has permission bit i,
 * byte QEMU_LOCK_SHARED + i while a user refuses to share it. Whoever
 * wants permission i first checks that nobody holds QEMU_LOCK_SHARED + i,
 * and whoever refuses to share i that nobody holds QEMU_LOCK_PERM + i.
 */
#define QEMU_LOCK_PERM 100
#define QEMU_LOCK_SHARED 200

enum qemu_perm {
	QEMU_PERM_CONSISTENT_READ = 1u << 0,
	QEMU_PERM_WRITE = 1u << 1,
	QEMU_PERM_WRITE_UNCHANGED = 1u << 2,
	QEMU_PERM_RESIZE = 1u << 3,
};
#define QEMU_PERM_BITS 4

/* An ovk writer holds what a writing QEMU holds; a reader reads and, like
   qemu-img without -U, lets nobody write or resize under it. */
#define OVK_WRITER_PERM (QEMU_PERM_CONSISTENT_READ | QEMU_PERM_WRITE | \
			 QEMU_PERM_WRITE_UNCHANGED | QEMU_PERM_RESIZE)
#define OVK_READER_PERM QEMU_PERM_CONSISTENT_READ
#define OVK_UNSHARED (QEMU_PERM_WRITE | QEMU_PERM_RESIZE)

/* Sets (F_RDLCK) or drops (F_UNLCK) fd's OFD lock on byte off. */
static int lock_byte(int fd, off_t off, short type)
{
	struct flock fl = {
		.l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1,
	};

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Does another open file hold a lock on byte off? */
static bool byte_held(int fd, off_t off)
{
	struct flock fl = {
		.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off,
		.l_len = 1,
	};

	return fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

/*
 * Takes QEMU's lock bytes for a writer or a reader of fd, then checks
 * them as QEMU does (taking first, checking after: of two users starting
 * at once, at least one sees the other). -EBUSY with a message on a
 * conflict; the caller closes fd, which drops what was taken.
 */
static int qemu_lock(int fd, const char *path, bool writable)
{
	unsigned perm = writable ? OVK_WRITER_PERM : OVK_READER_PERM;
	int ret;

	for (unsigned i = 0; i < QEMU_PERM_BITS; i++) {
		ret = 0;
		if (perm & (1u << i))
			ret = lock_byte(fd, QEMU_LOCK_PERM + i, F_RDLCK);
		if (ret == 0 && (OVK_UNSHARED & (1u << i)))
			ret = lock_byte(fd, QEMU_LOCK_SHARED + i, F_RDLCK);
		if (ret == -EAGAIN || ret == -EACCES)
			goto err_busy;
		if (ret < 0)
			return bdev_err(ret, "%s: cannot lock image: %s", path,
					strerror(-ret));
	}
	if (byte_held(fd, QEMU_LOCK_PERM + 1) || byte_held(fd, QEMU_LOCK_PERM + 3))
		return bdev_err(-EBUSY, "%s: image is in use by another process "
				"(QEMU or ovk: locked for writing); use -U to "
				"read it anyway", path);
	for (unsigned i = 0; i < QEMU_PERM_BITS; i++)
		if ((perm & (1u << i)) && byte_held(fd, QEMU_LOCK_SHARED + i))
			goto err_busy;
	return 0;

err_busy:
	return bdev_err(-EBUSY, "%s: image is in use by another process (QEMU "
			"or ovk: open for reading and not shared for %s); close "
			"it before opening it for writing", path,
			writable ? "writing" : "reading");
}

/*
 * Takes the ovk lock on fd (exclusive for a writer, shared for a reader)
 * and QEMU's lock bytes. On conflict returns -EBUSY with a message saying
 * who holds it and what to do about it.
 */
static int bsrc_lock(int fd, const char *path, bool writable)
{
	struct flock fl = {
		.l_type = writable ? F_WRLCK : F_RDLCK,
		.l_whence = SEEK_SET,
		.l_start = (off_t)BSRC_LOCK_START,
		.l_len = BSRC_LOCK_LEN,
	};
	struct flock probe;

	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return qemu_lock(fd, path, writable);
	if (errno != EAGAIN && errno != EACCES)
		return bdev_err(-errno, "%s: cannot lock image: %s", path,
				strerror(errno));
	probe = fl;
	probe.l_type = F_WRLCK;
	if (fcntl(fd, F_OFD_GETLK, &probe) == 0 && probe.l_type == F_WRLCK)
		return bdev_err(-EBUSY, "%s: image is in use by another process "
				"(locked for writing); use -U to read it anyway",
				path);
	return bdev_err(-EBUSY, "%s: image is in use by another process (open "
			"for reading); close it before opening it for writing",
			path);
}

/* Turns s's exclusive lock into a shared one and stops writes through it
   (a layer frozen by a snapshot: others may now open it read-only). */
int bsrc_make_read_only(struct bsrc *s)
{
	struct flock fl = {
		.l_type = F_RDLCK,
		.l_whence = SEEK_SET,
		.l_start = (off_t)BSRC_LOCK_START,
		.l_len = BSRC_LOCK_LEN,
	};

	if (!s->writable || s->fd < 0)
		return 0;
	if (fcntl(s->fd, F_OFD_SETLK, &fl) < 0)
		return bdev_err(-errno, "%s: cannot downgrade the image lock: %s",
				s->name, strerror(errno));
	/* QEMU's bytes: keep reading and not sharing writes, stop writing */
	for (unsigned i = 0; i < QEMU_PERM_BITS; i++) {
		int ret;

		if (!(OVK_WRITER_PERM & ~OVK_READER_PERM & (1u << i)))
			continue;
		ret = lock_byte(s->fd, QEMU_LOCK_PERM + i, F_UNLCK);
		if (ret < 0)
			return bdev_err(ret, "%s: cannot downgrade the image "
					"lock: %s", s->name, strerror(-ret));
	}
	s->writable = false;
	return 0;
}

/* Undoes bsrc_make_read_only: takes the exclusive lock back (-EBUSY,
   naming the file, while another opener holds it shared) and QEMU's write
   permission bytes (-EBUSY while a QEMU user refuses to share writes). */
int bsrc_make_writable(struct bsrc *s)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = (off_t)BSRC_LOCK_START,
		.l_len = BSRC_LOCK_LEN,
	};

	if (s->writable || s->fd < 0)
		return 0;
	if (fcntl(s->fd, F_OFD_SETLK, &fl) < 0) {
		int err = errno;
		if (err == EAGAIN || err == EACCES)
			return bdev_err(-EBUSY, "%s: another user holds it open "
					"(a read-only view?); close that first",
					s->name);
		return bdev_err(-err, "%s: cannot take the image lock back: %s",
				s->name, strerror(err));
	}
	for (unsigned i = 0; i < QEMU_PERM_BITS; i++) {
		int ret;

		if (!(OVK_WRITER_PERM & ~OVK_READER_PERM & (1u << i)))
			continue;
		if (byte_held(s->fd, QEMU_LOCK_SHARED + i)) {
			fl.l_type = F_RDLCK; /* back to what it was */
			if (fcntl(s->fd, F_OFD_SETLK, &fl) < 0)
				return bdev_err(-errno, "%s: cannot downgrade "
						"the image lock: %s", s->name,
						strerror(errno));
			return bdev_err(-EBUSY, "%s: a QEMU user refuses to share "
					"writes to it", s->name);
		}
		ret = lock_byte(s->fd, QEMU_LOCK_PERM + i, F_RDLCK);
		if (ret < 0)
			return bdev_err(ret, "%s: cannot take the image lock "
					"back: %s", s->name, strerror(-ret));
	}
	s->writable = true;
	return 0;
}

/* Allocates a source for fd; takes ownership of fd only on success. */
static int bsrc_new_fd(int fd, const char *name, const struct bsrc_ops *ops,
		       struct bsrc **out)
{
	struct bsrc *s = calloc(1, sizeof(*s));

	if (!s)
		return bdev_err(-ENOMEM, "%s: out of memory", name);
	s->name = strdup(name);
	if (!s->name) {
		free(s);
		return bdev_err(-ENOMEM, "%s: out of memory", name);
	}
	s->ops = ops;
	s->fd = fd;
	*out = s;
	return 0;
}

/* What a file of mode m is, for messages. */
static const char *file_kind(mode_t m)
{
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISDIR(m))
		return "a directory";
	return "not a regular file";
}

/* Opens path for I/O if it is a regular file or block device; see
   internal.h. O_NONBLOCK makes the open of a FIFO return at once, and
   is cleared again for the I/O. */
int bsrc_open_image_fd(const char *path, int flags)
{
	struct stat st;
	int fd, fl;

	fd = open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		if (e == ENXIO) { /* a socket (or a FIFO nobody reads) */
			if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) &&
			    !S_ISBLK(st.st_mode))
				return bdev_err(-EINVAL, "%s: is %s, expected an "
						"image file (a regular file or a "
						"block device)", path,
						file_kind(st.st_mode));
		}
		return bdev_err(-e, "%s: cannot open %s: %s", path,
				(flags & O_ACCMODE) == O_RDONLY ? "for reading" :
				"for writing", strerror(e));
	}
	if (fstat(fd, &st) < 0) {
		int e = errno;

		close(fd);
		return bdev_err(-e, "%s: cannot stat: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		return bdev_err(S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL,
				"%s: is %s, expected an image file (a regular "
				"file or a block device)", path,
				file_kind(st.st_mode));
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		int e = errno;

		close(fd);
		return bdev_err(-e, "%s: cannot clear O_NONBLOCK: %s", path,
				strerror(e));
	}
	return fd;
}

/* Opens path as a whole-file source, locked unless nolock (readers only). */
int bsrc_open_file(const char *path, bool writable, bool nolock,
		   struct bsrc **out)
{
	struct stat st;
	struct bsrc *s;
	int fd, ret;

	fd = bsrc_open_image_fd(path, writable ? O_RDWR : O_RDONLY);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0) {
		ret = bdev_err(-errno, "%s: cannot stat: %s", path,
			       strerror(errno));
		goto err_close_fd;
	}
	if (writable || !nolock) {
		ret = bsrc_lock(fd, path, writable);
		if (ret < 0)
			goto err_close_fd;
	}
	ret = bsrc_new_fd(fd, path,
			  writable ? &bsrc_file_rw_ops : &bsrc_file_ro_ops, &s);
	if (ret < 0)
		goto err_close_fd;
	s->writable = writable;
	s->whole_file = true;
	s->length = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(fd, 0, SEEK_END);
		if (end > 0)
			s->length = (uint64_t)end;
	}
	*out = s;
	return 0;

err_close_fd:
	close(fd);
	return ret;
}

/* A read-only view of [offset, offset + length) of a duplicate of fd. */
int bsrc_open_region(int fd, uint64_t offset, uint64_t length,
		     const char *name, struct bsrc **out)
{
	struct bsrc *s;
	int dfd, ret;

	if (offset + length < offset)
		return bdev_err(-EINVAL, "%s: region at offset %" PRIu64
				" with length %" PRIu64 " overflows", name,
				offset, length);
	dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dfd < 0)
		return bdev_err(-errno, "%s: cannot duplicate descriptor %d: %s",
				name, fd, strerror(errno));
	ret = bsrc_new_fd(dfd, name, &bsrc_region_ops, &s);
	if (ret < 0) {
		close(dfd);
		return ret;
	}
	s->base = offset;
	s->length = length;
	*out = s;
	return 0;
}

/* Closes any kind of source. */
void bsrc_close(struct bsrc *s)
{
	if (s)
		s->ops->close(s);
}

/* Reads exactly len bytes at off or fails naming the source and offset. */
int bsrc_read_full(struct bsrc *s, void *buf, size_t len, uint64_t off)
{
	ssize_t n = s->ops->pread(s, buf, len, off);

	if (n < 0)
		return (int)n;
	if ((size_t)n < len)
		return bdev_err(-EIO, "%s: source ends at offset %" PRIu64
				", expected %zu bytes at offset %" PRIu64,
				s->name, off + (uint64_t)n, len, off);
	return 0;
}
