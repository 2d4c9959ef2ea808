/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_convert.c - `vmdk convert`: flatten an image (its whole chain) into a
 * raw file, or write it as a new VMDK of any subformat (-O vmdk) through the
 * engine's image writer. Zero and unallocated ranges are skipped (the output is
 * truncated to size first, so they read as holes), and so are all-zero
 * blocks inside data. Raw output copies data the engine says is stored as
 * is in a host file (bdev_map_host) from file to file: copy_file_range(2),
 * or across file systems pwrite(2) from a mapping of the source pages,
 * never through a buffer of this process. Everything else is read through the
 * engine: reads are large and several are in flight on each worker's own
 * queue. The grains of a compressed image are inflated by the engine's pool
 * of inflate threads while the worker writes, so one worker serves them;
 * streamOptimized output gets two, because the image writer compresses on
 * the thread that writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static const char convert_help[] =
"Usage: vmdk convert [-p] [-U] [-f FMT] [-m N] [-S SIZE] [--threads N]\n"
"                    [-O raw|vmdk] [-o OPTIONS] SRC DST\n"
"\n"
"Read SRC through the ovk engine (following its delta chain down to the\n"
"base disk) and write the disk's bytes to DST as a raw image. DST is\n"
"created or truncated, sized to SRC's virtual size, and only ranges holding\n"
"non-zero data are written: zeroed grains, unallocated ranges and all-zero\n"
"blocks stay holes in DST.\n"
"DST may not be SRC, one of its extent files or a file of its backing\n"
"chain (under any name: compared by device and inode).\n"
"\n"
"Options:\n"
"  -O FMT        output format: raw (the default) or vmdk. With vmdk, DST\n"
"                is created (never overwritten) with the -o options of\n"
"                'vmdk create' (subformat=..., adapter_type=..., ...);\n"
"                without adapter_type, DST keeps SRC's ddb.adapterType (a\n"
"                raw SRC gets lsilogic, as VMware writes). Only\n"
"                grains holding non-zero data are stored. streamOptimized\n"
"                grains are compressed on every worker thread and appended\n"
"                in the order they finish (the grain tables say where each\n"
"                one is), so the grains are in LBA order only per worker.\n"
"  -o OPTIONS    VMDK creation options, see 'vmdk create --help'\n"
"  -f FMT        force SRC's format: 'vmdk' or 'raw' (default: probe)\n"
"  -p, --progress  show a progress bar (percent, rate, ETA) on stderr when\n"
"                stderr is a terminal\n"
"  -U, --force-share  open SRC without taking locks\n"
"  -m N          requests in flight per worker thread (default 8, 1..64)\n"
"  -S SIZE       smallest run of zero bytes left as a hole (default 4k;\n"
"                0 writes every data byte); like qemu-img's -S\n"
"  --fsync       fdatasync(2) DST before exiting (qemu-img does not sync)\n"
"  --threads N   worker threads, each with its own queue (default: 2 for\n"
"                streamOptimized output and for raw output of an image\n"
"                without compressed grains; else 1, as the engine's own\n"
"                inflate threads inflate compressed grains; max 16)\n"
"  -h, --help    show this help\n"
"\n"
"Requests are 1 MiB. With raw output, data stored uncompressed in SRC's\n"
"files is copied by the kernel with copy_file_range(2) (between file\n"
"systems: pwrite(2) from a mapping of SRC's pages); other data is read\n"
"through the engine and written with pwrite(2).\n"
"\n"
"Examples:\n"
"  vmdk convert -O raw disk.vmdk disk.raw\n"
"  vmdk convert -p -O raw appliance-disk1.vmdk /var/tmp/disk1.raw\n"
"\n"
"Exit status: 0 on success, 1 on error ('vmdk: MESSAGE' on stderr).\n";

#define CHUNK (1u << 20)

struct conv {
	struct bdev *b;
	uint64_t size;
	int dst_fd;
	struct bdev_writer *w;	/* -O vmdk: the image writer, else NULL */
	uint64_t align;		/* -O vmdk: the writer's grain */
	bool write_all;		/* DST cannot be truncated: write zeros too */
	bool direct;		/* raw output: copy FILE runs file to file */
	_Atomic int copy_how;	/* enum copy_how: the best that works */
	size_t sparse;		/* zero runs at least this long become holes */
	unsigned depth;

	pthread_mutex_t lock;	/* guards next, run_end, run_kind, error */
	uint64_t next;
	uint64_t run_end;
	int run_kind;
	int error;
	char errmsg[1024];

	_Atomic uint64_t done;
	_Atomic unsigned workers_left;
};

/* How FILE runs move from SRC's files to DST, best first; a worker that
   finds one unsupported moves everyone down to the next. COPY_MMAP writes
   from a mapping of SRC's pages: one copy, as copy_file_range makes. */
enum copy_how { COPY_RANGE, COPY_MMAP, COPY_NONE };

/* A worker's window of one of SRC's files, mapped read-only on first use
   to find zero blocks in (and for COPY_MMAP, to write from). A window
   spares an mmap and munmap per run (measured on 1 GiB: 0.52 -> 0.41 s of
   CPU). */
#define MAP_WINDOW (64u << 20)

struct srcmap {
	int fd;
	uint64_t off;
	size_t len;
	void *p;
};

struct slot {
	struct conv *cv;
	uint64_t off;
	size_t len;
	void *buf;
	struct iovec iov;
	bool busy;
};

/* Remember the first error (with the engine's message when there is one). */
static void conv_fail(struct conv *cv, int err, const char *msg)
{
	pthread_mutex_lock(&cv->lock);
	if (!cv->error) {
		cv->error = err;
		snprintf(cv->errmsg, sizeof(cv->errmsg), "%s", msg);
	}
	pthread_mutex_unlock(&cv->lock);
}

static void conv_fail_bdev(struct conv *cv, int err, const char *what)
{
	const char *m = bdev_errmsg();
	char buf[1024];

	if (!m || !*m) {
		snprintf(buf, sizeof(buf), "%s: %s", what, strerror(-err));
		m = buf;
	}
	conv_fail(cv, err, m);
}

/*
 * Hand out the next range of data to read, at most one chunk, never
 * crossing a status run. Zero runs are skipped here (counted as done).
 * Returns false when the disk is covered or an error happened.
 */
static bool conv_next(struct conv *cv, uint64_t *off, size_t *len)
{
	bool ok = false;

	pthread_mutex_lock(&cv->lock);
	while (!cv->error && cv->next < cv->size) {
		if (cv->next >= cv->run_end) {
			uint64_t n = 0;
			unsigned d;
			bool p;
			int k = chain_status(cv->b, cv->next,
					     cv->size - cv->next, &n, &d, &p);

			if (k < 0) {
				pthread_mutex_unlock(&cv->lock);
				conv_fail_bdev(cv, k, "block status");
				return false;
			}
			cv->run_kind = cv->write_all ? CHAIN_DATA : k;
			cv->run_end = cv->next + n;
		}
		if (cv->run_kind == CHAIN_ZERO) {
			uint64_t end = cv->run_end;

			/* a writer takes whole grains: skip only whole
			   zero grains, read the rest (zeros) with the data */
			if (cv->align && end < cv->size)
				end -= end % cv->align;
			if (end > cv->next) {
				cv->done += end - cv->next;
				cv->next = end;
				continue;
			}
			cv->run_kind = CHAIN_DATA;
		}
		*off = cv->next;
		*len = CHUNK;
		/* keep requests chunk-aligned so they match grain runs */
		if (*len > CHUNK - cv->next % CHUNK)
			*len = CHUNK - cv->next % CHUNK;
		if (*len > cv->run_end - cv->next) {
			uint64_t end = cv->run_end;

			if (cv->align && end % cv->align && end < cv->size) {
				end += cv->align - end % cv->align;
				if (end > cv->size)
					end = cv->size;
			}
			if (end - cv->next < *len)
				*len = (size_t)(end - cv->next);
		}
		cv->next += *len;
		ok = true;
		break;
	}
	pthread_mutex_unlock(&cv->lock);
	return ok;
}

static int write_full(int fd, const char *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Write the non-zero parts of a slot's buffer to DST. */
static int write_data(struct conv *cv, const char *buf, size_t len,
		      uint64_t off)
{
	size_t blk = cv->sparse, pos = 0;

	if (cv->write_all || blk == 0)
		return write_full(cv->dst_fd, buf, len, off);
	while (pos < len) {
		size_t start, n;

		/* skip zero blocks */
		while (pos < len) {
			n = len - pos < blk ? len - pos : blk;
			if (!bdev_all_zero(buf + pos, n))
				break;
			pos += n;
		}
		start = pos;
		while (pos < len) {
			n = len - pos < blk ? len - pos : blk;
			if (bdev_all_zero(buf + pos, n))
				break;
			pos += n;
		}
		if (pos > start) {
			int ret = write_full(cv->dst_fd, buf + start,
					     pos - start, off + start);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* -O vmdk: hand the non-zero grains of a buffer to the writer. */
static int write_grains(struct conv *cv, const char *buf, size_t len,
			uint64_t off)
{
	size_t g = (size_t)cv->align, pos = 0;

	while (pos < len) {
		size_t start, n;

		while (pos < len) {
			n = len - pos < g ? len - pos : g;
			if (!bdev_all_zero(buf + pos, n))
				break;
			pos += n;
		}
		start = pos;
		while (pos < len) {
			n = len - pos < g ? len - pos : g;
			if (bdev_all_zero(buf + pos, n))
				break;
			pos += n;
		}
		if (pos > start) {
			int ret = bdev_writer_write(cv->w, off + start, buf + start,
						    pos - start);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* True for the errors that mean "this kind of copy is not possible
   between these files", as opposed to an I/O error. */
static bool copy_unsupported(int err)
{
	return err == EXDEV || err == EINVAL || err == ENOSYS ||
	       err == EOPNOTSUPP || err == ENOTSUP || err == EBADF ||
	       err == EPERM || err == ETXTBSY;
}

/* Moves down to how (never up) after a copy kind failed as unsupported. */
static void copy_demote(struct conv *cv, int how)
{
	int cur = atomic_load(&cv->copy_how);

	while (cur < how && !atomic_compare_exchange_weak(&cv->copy_how, &cur,
							    how))
		;
}

static void srcmap_close(struct srcmap *m)
{
	if (m->p)
		munmap(m->p, m->len);
	m->p = NULL;
}

/* len bytes at in of fd, mapped read-only through m's window, or NULL. */
static const char *window_at(struct srcmap *m, int fd, uint64_t in,
			     size_t len)
{
	uint64_t start = in - in % MAP_WINDOW;
	size_t wlen = MAP_WINDOW;

	if (m->p && m->fd == fd && in >= m->off && in + len <= m->off + m->len)
		return (const char *)m->p + (in - m->off);
	srcmap_close(m);
	if (in + len > start + wlen) { /* across windows: just this run */
		start = in - in % 4096;
		wlen = (size_t)(in + len - start);
	}
	/* pages past the end of fd are never touched: runs lie inside it */
	m->p = mmap(NULL, wlen, PROT_READ, MAP_SHARED, fd, (off_t)start);
	if (m->p == MAP_FAILED) {
		m->p = NULL;
		return NULL;
	}
	m->fd = fd;
	m->off = start;
	m->len = wlen;
	return (const char *)m->p + (in - start);
}

/*
 * Copies len bytes at in of fd (mapped at src when not NULL) to out of DST
 * without a buffer of ours. Returns the bytes copied: fewer than len when
 * SRC's file ends early or neither way works between these files (the
 * caller reads the rest through the engine), or -errno on an I/O error.
 */
static ssize_t copy_bytes(struct conv *cv, struct srcmap *m, int fd,
			  const char *src, uint64_t in, uint64_t out,
			  size_t len)
{
	size_t done = 0;

	while (done < len) {
		int how = atomic_load(&cv->copy_how);
		ssize_t r;

		if (how == COPY_RANGE) {
			loff_t i = (loff_t)(in + done), o = (loff_t)(out + done);

			r = copy_file_range(fd, &i, cv->dst_fd, &o, len - done, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && copy_unsupported(errno)) {
				copy_demote(cv, COPY_MMAP);
				continue;
			}
			if (r < 0)
				return -errno;
			if (r == 0)
				return (ssize_t)done; /* SRC's file ends early */
			done += (size_t)r;
		} else if (how == COPY_MMAP) {
			int ret;

			if (!src)
				src = window_at(m, fd, in, len);
			if (!src)
				return (ssize_t)done;
			ret = write_full(cv->dst_fd, src + done, len - done,
					 out + done);
			return ret < 0 ? ret : (ssize_t)len;
		} else {
			return (ssize_t)done;
		}
	}
	return (ssize_t)done;
}

/*
 * Copies len bytes stored at in of fd (virtual offset voff) to DST,
 * leaving all-zero blocks of -S bytes as holes: the run is mapped (no copy,
 * the page cache's own pages) to find them. Returns the bytes handled from
 * the start (fewer than len: the caller reads the rest through the engine)
 * or -errno.
 */
static ssize_t copy_run(struct conv *cv, struct srcmap *m, int fd,
			uint64_t in, uint64_t voff, size_t len)
{
	size_t blk = cv->sparse, pos = 0;
	const char *map;

	if (blk == 0)
		return copy_bytes(cv, m, fd, NULL, in, voff, len);
	map = window_at(m, fd, in, len);
	if (!map)
		return 0;
	while (pos < len) {
		size_t start, n;
		ssize_t r;

		while (pos < len) {
			n = len - pos < blk ? len - pos : blk;
			if (!bdev_all_zero(map + pos, n))
				break;
			pos += n;
		}
		start = pos;
		while (pos < len) {
			n = len - pos < blk ? len - pos : blk;
			if (bdev_all_zero(map + pos, n))
				break;
			pos += n;
		}
		if (pos == start)
			continue;
		r = copy_bytes(cv, m, fd, map + start, in + start, voff + start,
			       pos - start);
		if (r < (ssize_t)(pos - start))
			return r < 0 ? r : (ssize_t)start + r;
	}
	return (ssize_t)len;
}

/*
 * Handles [off, off + len) without the engine's reads where it can: FILE
 * runs copied file to file, ZERO runs left as holes. Returns the bytes
 * handled from off; the rest (from the first run that must be read, or
 * that could not be copied) is for the engine. -errno after conv_fail.
 */
static int64_t copy_direct(struct conv *cv, struct srcmap *m, uint64_t off,
			   uint64_t len)
{
	uint64_t pos = 0;
	char msg[512];

	while (pos < len && atomic_load(&cv->copy_how) != COPY_NONE) {
		struct bdev_host_run run;
		int k = bdev_map_host(cv->b, off + pos, len - pos, &run);
		ssize_t n;

		if (k < 0) {
			conv_fail_bdev(cv, k, "host mapping");
			return k;
		}
		if (k == BDEV_HOST_OTHER)
			break;
		if (k == BDEV_HOST_FILE) {
			n = copy_run(cv, m, run.fd, run.file_offset, off + pos,
				     (size_t)run.length);
			if (n < 0) {
				snprintf(msg, sizeof(msg), "copying to output at "
					 "offset %" PRIu64 ": %s", off + pos,
					 strerror((int)-n));
				conv_fail(cv, (int)n, msg);
				return n;
			}
			if ((uint64_t)n < run.length) {
				pos += (uint64_t)n;
				break;
			}
		}
		pos += run.length;
	}
	cv->done += pos;
	return (int64_t)pos;
}

static void read_done(void *opaque, int ret)
{
	struct slot *s = opaque;
	struct conv *cv = s->cv;
	char msg[512];

	s->busy = false;
	if (ret < 0) {
		conv_fail_bdev(cv, ret, "read");
		return;
	}
	if (cv->w) {
		ret = write_grains(cv, s->buf, s->len, s->off);
		if (ret < 0) {
			conv_fail_bdev(cv, ret, "writing the output image");
			return;
		}
		cv->done += s->len;
		return;
	}
	ret = write_data(cv, s->buf, s->len, s->off);
	if (ret < 0) {
		snprintf(msg, sizeof(msg), "writing output at offset %" PRIu64
			 ": %s", s->off, strerror(-ret));
		conv_fail(cv, ret, msg);
		return;
	}
	cv->done += s->len;
}

/* The next range the engine must read into s (ranges the kernel copies
   whole are done on the way). False when there is none left. */
static bool next_for_engine(struct conv *cv, struct srcmap *m,
			    struct slot *s)
{
	uint64_t off;
	size_t len;

	while (conv_next(cv, &off, &len)) {
		int64_t n = cv->direct ? copy_direct(cv, m, off, len) : 0;

		if (n < 0)
			return false;
		if ((uint64_t)n < len) {
			s->off = off + (uint64_t)n;
			s->len = len - (size_t)n;
			return true;
		}
	}
	return false;
}

static void *worker(void *arg)
{
	struct conv *cv = arg;
	struct bdev_queue *q = NULL;
	struct srcmap map = { .fd = -1 };
	struct slot *slots;
	unsigned i, inflight = 0;
	bool more = true;
	int ret;

	slots = calloc(cv->depth, sizeof(*slots));
	if (!slots) {
		conv_fail(cv, -ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < cv->depth; i++) {
		slots[i].cv = cv;
		if (posix_memalign(&slots[i].buf, 4096, CHUNK)) {
			conv_fail(cv, -ENOMEM, "out of memory");
			goto out_free;
		}
	}
	ret = bdev_queue_new(cv->depth * 2, &q);
	if (ret < 0) {
		conv_fail_bdev(cv, ret, "creating an I/O queue");
		goto out_free;
	}
	for (;;) {
		for (i = 0; more && i < cv->depth; i++) {
			struct slot *s = &slots[i];

			if (s->busy)
				continue;
			if (!next_for_engine(cv, &map, s)) {
				more = false;
				break;
			}
			s->iov.iov_base = s->buf;
			s->iov.iov_len = s->len;
			s->busy = true;
			ret = bdev_aio_readv(q, cv->b, s->off, &s->iov, 1,
					     read_done, s);
			if (ret < 0) {
				s->busy = false;
				conv_fail_bdev(cv, ret, "queueing a read");
				more = false;
				break;
			}
		}
		inflight = 0;
		for (i = 0; i < cv->depth; i++)
			inflight += slots[i].busy;
		if (!inflight)
			break;
		ret = bdev_queue_run(q, 1);
		if (ret < 0) {
			conv_fail_bdev(cv, ret, "running the I/O queue");
			more = false;
			/* waiting again would spin; the queue frees on exit */
			break;
		}
		pthread_mutex_lock(&cv->lock);
		if (cv->error)
			more = false;
		pthread_mutex_unlock(&cv->lock);
	}
	bdev_queue_free(q);
	srcmap_close(&map);
out_free:
	for (i = 0; i < cv->depth; i++)
		free(slots[i].buf);
	free(slots);
out:
	cv->workers_left--;
	return NULL;
}

static void show_progress(struct conv *cv, double t0, bool final)
{
	double el = now_sec() - t0;
	uint64_t done = cv->done;
	double pct = cv->size ? 100.0 * (double)done / (double)cv->size : 100.0;
	double rate = el > 0 ? (double)done / el : 0;
	char r[32];
	int width = 30, fill = (int)(pct * width / 100.0), i;
	char bar[40];

	for (i = 0; i < width; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[width] = '\0';
	human_size((uint64_t)rate, r, sizeof(r));
	if (final) {
		fprintf(stderr, "\r[%s] %5.1f%%  %s/s  done in %.1f s   \n",
			bar, pct, r, el);
	} else {
		double eta = rate > 0 ? (double)(cv->size - done) / rate : 0;
		unsigned e = (unsigned)eta;

		fprintf(stderr, "\r[%s] %5.1f%%  %s/s  ETA %u:%02u:%02u   ",
			bar, pct, r, e / 3600, e / 60 % 60, e % 60);
	}
	fflush(stderr);
}

/* Does st name the file at path (same inode, or the same block device)? */
static bool same_file(const struct stat *st, const char *path)
{
	struct stat o;

	if (!path || stat(path, &o) < 0)
		return false;
	if (S_ISBLK(st->st_mode) && S_ISBLK(o.st_mode))
		return st->st_rdev == o.st_rdev;
	return st->st_dev == o.st_dev && st->st_ino == o.st_ino;
}

/*
 * The file of b's chain (a descriptor or an extent of any layer) that dst
 * names under whatever name, or NULL: writing dst would destroy what is
 * being read. Compares device and inode, so links and other spellings of
 * the path are caught too.
 */
static const char *dst_in_source(struct bdev *b, const char *dst)
{
	struct stat st;

	if (stat(dst, &st) < 0)
		return NULL; /* not there: it cannot be one of SRC's files */
	for (; b; b = bdev_backing(b)) {
		struct bdev_info in;

		if (bdev_get_info(b, &in) < 0)
			continue;
		if (same_file(&st, in.filename))
			return in.filename;
		for (unsigned i = 0; i < in.extent_count; i++) {
			struct bdev_extent_info ei;

			if (bdev_get_extent(b, i, &ei) == 0 &&
			    same_file(&st, ei.filename))
				return ei.filename;
		}
	}
	return NULL;
}

/* SRC's ddb.adapterType when it is one a new VMDK may carry, else NULL
   (the writer's default). */
static const char *source_adapter(struct bdev *b)
{
	static const char *const known[] = { "ide", "lsilogic", "buslogic",
					     "legacyESX", "pvscsi" };
	const char *k, *v;

	for (unsigned i = 0; bdev_get_ddb(b, i, &k, &v) == 0; i++) {
		if (strcmp(k, "adapterType"))
			continue;
		for (size_t j = 0; j < sizeof(known) / sizeof(known[0]); j++)
			if (!strcmp(v, known[j]))
				return known[j];
		return NULL;
	}
	return NULL;
}

static bool chain_compressed(struct bdev *b)
{
	for (; b; b = bdev_backing(b)) {
		struct bdev_info in;

		if (bdev_get_info(b, &in) == 0 && in.compressed)
			return true;
	}
	return false;
}

/* An engine writer of cv's size for dst as co says, into cv->w; -1 with
   the message printed. */
static int open_writer(struct conv *cv, struct bdev_create_opts *co,
		       const char *dst)
{
	int ret;

	co->size = cv->size;
	ret = bdev_writer_new(dst, co, &cv->w);
	if (ret < 0) {
		tool_bdev_err(ret, dst);
		return -1;
	}
	cv->align = bdev_writer_grain(cv->w);
	return 0;
}

/*
 * Sets up cv's output dst: an engine writer for -O vmdk and for a new RBD
 * image (co says how), else dst opened, emptied and sized as a raw file
 * (cv->dst_fd; cv->write_all for a device or pipe, cv->direct when zero
 * blocks of the source's files may be found by mapping them). -1 with
 * the message printed.
 */
static int open_output(struct conv *cv, const char *ofmt,
		       struct bdev_create_opts *co, const char *dst, bool share)
{
	struct stat st;

	if (!strncmp(dst, "rbd:", 4)) {
		/* a new RBD image: created by the engine, raw contents, only
		   the grains that hold data are written */
		if (strcmp(ofmt, "raw")) {
			tool_err("output '%s' is an RBD image, which holds raw "
				 "contents: use -O raw (the default)", dst);
			return -1;
		}
		co->format = "raw";
		return open_writer(cv, co, dst);
	}
	if (!strcmp(ofmt, "vmdk")) {
		co->format = "vmdk";
		if (!co->adapter_type)
			co->adapter_type = source_adapter(cv->b);
		return open_writer(cv, co, dst);
	}
	cv->dst_fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (cv->dst_fd < 0) {
		tool_err("cannot open output '%s': %s", dst, strerror(errno));
		return -1;
	}
	if (fstat(cv->dst_fd, &st) == 0 && S_ISREG(st.st_mode)) {
		int fd;

		/* Truncate to 0 only a file that has data (qemu-img creates a
		   new file without truncating it). */
		if ((st.st_size && ftruncate(cv->dst_fd, 0) < 0) ||
		    ftruncate(cv->dst_fd, (off_t)cv->size) < 0) {
			tool_err("cannot size output '%s' to %" PRIu64 " bytes: %s",
				 dst, cv->size, strerror(errno));
			return -1;
		}
		/* Write through a fresh open, as qemu-img does: ext4 flushes
		   a file truncated to 0 when that descriptor closes (its
		   auto_da_alloc), which on 1 GiB blocked close(2) for 0.5 s. */
		fd = open(dst, O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			tool_err("cannot open output '%s': %s", dst,
				 strerror(errno));
			return -1;
		}
		close(cv->dst_fd);
		cv->dst_fd = fd;
	} else {
		cv->write_all = true;
	}
	/* Zero blocks of FILE runs are found by mapping SRC's files; with -U
	   a writer might shrink one under the mapping (SIGBUS), so -U reads
	   everything through the engine. */
	cv->direct = !cv->write_all && !share;
	return 0;
}

int cmd_convert(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "progress", no_argument, NULL, 'p' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "threads", required_argument, NULL, 'T' },
		{ "fsync", no_argument, NULL, 'Y' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *format = NULL, *ofmt = "raw", *src, *dst;
	struct bdev_create_opts co = { 0 };
	bool have_o = false;
	bool progress = false, share = false, sync = false;
	uint64_t depth = 8, threads = 0, sparse = 4096;
	struct conv cv;
	struct bdev_info in;
	pthread_t tids[16];
	unsigned nthreads, i;
	double t0;
	int c, ret, rc = 1;

	while ((c = getopt_long(argc, argv, "+hpUf:O:o:m:S:", lopts, NULL)) != -1) {
		switch (c) {
		case 'p': progress = true; break;
		case 'U': share = true; break;
		case 'f': format = optarg; break;
		case 'O': ofmt = optarg; break;
		case 'o':
			if (parse_create_opts("convert", optarg, &co))
				return 1;
			have_o = true;
			break;
		case 'm':
			if (parse_uint(optarg, 1, 64, &depth)) {
				tool_usage_err("convert", "-m must be 1..64, not '%s'", optarg);
				return 1;
			}
			break;
		case 'S':
			if (parse_size(optarg, &sparse) || sparse > CHUNK) {
				tool_usage_err("convert", "bad -S size '%s' (0..1M)", optarg);
				return 1;
			}
			break;
		case 'T':
			if (parse_uint(optarg, 1, 16, &threads)) {
				tool_usage_err("convert", "--threads must be 1..16, not '%s'", optarg);
				return 1;
			}
			break;
		case 'Y': sync = true; break;
		case 'h': fputs(convert_help, stdout); return 0;
		default: tool_usage_err("convert", "bad option"); return 1;
		}
	}
	if (strcmp(ofmt, "raw") && strcmp(ofmt, "vmdk")) {
		tool_usage_err("convert", "output format '%s' is not supported "
			       "(only 'raw' or 'vmdk')", ofmt);
		return 1;
	}
	if (have_o && strcmp(ofmt, "vmdk")) {
		tool_usage_err("convert", "-o options need -O vmdk");
		return 1;
	}
	if (optind != argc - 2) {
		tool_usage_err("convert", "expected SRC and DST");
		return 1;
	}
	src = argv[optind];
	dst = argv[optind + 1];

	memset(&cv, 0, sizeof(cv));
	if (tool_open(src, format, share, false, &cv.b) < 0)
		return 1;
	ret = bdev_get_info(cv.b, &in);
	if (ret < 0) {
		tool_bdev_err(ret, src);
		goto out_close;
	}
	/* -O vmdk never overwrites (its files are created O_EXCL), but say
	   why instead of "file exists" */
	{
		const char *hit = dst_in_source(cv.b, dst);

		if (hit) {
			tool_err("output '%s' is %s, a file that '%s' reads; "
				 "refusing to overwrite the source with itself "
				 "(choose another output file)", dst, hit, src);
			goto out_close;
		}
	}
	cv.size = in.size;
	cv.depth = (unsigned)depth;
	cv.sparse = (size_t)sparse;
	cv.dst_fd = -1;
	if (open_output(&cv, ofmt, &co, dst, share) < 0)
		goto out_fd;
	/* Raw output: two workers overlap one's pwrite(2) with the other's
	   reads (measured: 1 GiB sparse, 0.6-1.5 s -> 0.46-1.0 s). Compressed
	   grains: the engine's inflate pool already keeps every CPU busy
	   while one worker writes; a second worker only contends for the
	   output file's lock (1 GiB stream image: 2.0 -> 1.3 CPU-s). */
	nthreads = threads ? (unsigned)threads :
		   co.subformat && !strcmp(co.subformat, "streamOptimized") ?
		   2 : !cv.w && !chain_compressed(cv.b) ? 2 : 1;
	pthread_mutex_init(&cv.lock, NULL);
	cv.workers_left = nthreads;
	progress = progress && isatty(STDERR_FILENO);
	t0 = now_sec();
	for (i = 0; i < nthreads; i++) {
		ret = pthread_create(&tids[i], NULL, worker, &cv);
		if (ret) {
			conv_fail(&cv, -ret, "cannot start a worker thread");
			cv.workers_left -= nthreads - i;
			nthreads = i;
			break;
		}
	}
	while (progress && cv.workers_left) {
		show_progress(&cv, t0, false);
		usleep(200000);
	}
	for (i = 0; i < nthreads; i++)
		pthread_join(tids[i], NULL);
	if (cv.w) {
		if (cv.error) {
			bdev_writer_abort(cv.w);
		} else {
			ret = bdev_writer_close(cv.w);
			if (ret < 0)
				conv_fail_bdev(&cv, ret, dst);
		}
	} else if (sync && !cv.error && fdatasync(cv.dst_fd) < 0 && errno != EINVAL)
		conv_fail(&cv, -errno, "syncing the output failed");
	if (progress && !cv.error)
		show_progress(&cv, t0, true);
	if (cv.error) {
		if (progress)
			fputc('\n', stderr);
		tool_err("%s", cv.errmsg);
	} else {
		rc = 0;
	}
	pthread_mutex_destroy(&cv.lock);
out_fd:
	if (cv.dst_fd >= 0 && close(cv.dst_fd) < 0 && rc == 0) {
		tool_err("closing output '%s': %s", dst, strerror(errno));
		rc = 1;
	}
out_close:
	bdev_close(cv.b);
	return rc;
}
