/* SPDX-License-Identifier: Apache-2.0 */
/*
 * backup.c - `ovkdisk backup`: a point-in-time copy of a running disk, in
 * full or of what changed since the last backup in the folder.
 *
 * A full backup is a streamOptimized VMDK of the view; an incremental one
 * is a delta VMDK (monolithicSparse) whose parent is the previous backup's
 * file, holding only the blocks written since that backup's checkpoint.
 * So each point is an ordinary VMDK chain that ovk, QEMU or VMware tools
 * open as it is, and restore reads only that chain. The manifest is
 * replaced atomically last: a backup that dies midway leaves the folder as
 * it was (its half-written file is not in the manifest and is removed by
 * the next backup of that name).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ovkdisk.h"

struct job {
	const struct ovkdisk_opts *o;
	struct bdev *view;
	struct bdev_writer *w;   /* the new file's writer, or NULL: */
	int fd;                  /* a raw synthetic full, written here */
	uint64_t size, nblocks;
	uint8_t *hashes;         /* 32 bytes per block */
	uint8_t zero_hash[32];   /* of a whole zero block */
	uint8_t *buf, *zeros;
	uint64_t read_bytes, written_bytes, done, total;
	bool halfway;            /* stop_point("copy") was passed */
};

/* Counts n bytes of the copy done: the progress bar, and the crash
   tests' stop point half way through. */
static void advance(struct job *j, uint64_t n)
{
	j->done += n;
	progress(j->o, "backup", j->done, j->total);
	if (!j->halfway && j->done * 2 >= j->total) {
		j->halfway = true;
		stop_point("copy");
	}
}

static const char *engine_msg(int ret)
{
	const char *m = bdev_errmsg();

	return *m ? m : strerror(-ret);
}

static size_t block_len(const struct job *j, uint64_t blk)
{
	uint64_t off = blk * OVKDISK_BLOCK;

	return j->size - off < OVKDISK_BLOCK ? (size_t)(j->size - off)
					     : OVKDISK_BLOCK;
}

/* Read block blk of the view, digest it, write it when keep_zero or it
   holds data. */
static int copy_block(struct job *j, uint64_t blk, bool keep_zero)
{
	size_t n = block_len(j, blk);
	uint64_t off = blk * OVKDISK_BLOCK;
	int ret = bdev_pread(j->view, j->buf, n, off);

	if (ret < 0) {
		fprintf(stderr, "ovkdisk: reading the view at %llu: %s\n",
			(unsigned long long)off, engine_msg(ret));
		return ret;
	}
	j->read_bytes += n;
	sha256(j->buf, n, j->hashes + blk * 32);
	if (!keep_zero && !memcmp(j->buf, j->zeros, n))
		return 0;
	if (j->w) {
		ret = bdev_writer_write(j->w, off, j->buf, n);
	} else {
		ssize_t w = pwrite(j->fd, j->buf, n, (off_t)off);

		ret = w == (ssize_t)n ? 0 : w < 0 ? -errno : -EIO;
	}
	if (ret < 0) {
		fprintf(stderr, "ovkdisk: writing the backup at %llu: %s\n",
			(unsigned long long)off, engine_msg(ret));
		return ret;
	}
	j->written_bytes += n;
	return 0;
}

/* The digest of a block that reads as zeros (the last may be short). */
static void zero_block_hash(struct job *j, uint64_t blk)
{
	size_t n = block_len(j, blk);

	if (n == OVKDISK_BLOCK)
		memcpy(j->hashes + blk * 32, j->zero_hash, 32);
	else
		sha256(j->zeros, n, j->hashes + blk * 32);
}

/* Every block of the view that any layer holds. */
static int copy_full(struct job *j)
{
	j->total = j->size;
	for (uint64_t blk = 0; blk < j->nblocks; blk++) {
		uint64_t off = blk * OVKDISK_BLOCK, pnum;
		size_t n = block_len(j, blk);
		unsigned depth;
		int st = bdev_block_status_depth(j->view, off, n, &pnum,
						 &depth);
		int ret;

		if (st < 0) {
			fprintf(stderr, "ovkdisk: block status at %llu: %s\n",
				(unsigned long long)off, engine_msg(st));
			return st;
		}
		if (st != BDEV_STATUS_DATA && pnum >= n) {
			zero_block_hash(j, blk);
		} else {
			ret = copy_block(j, blk, false);
			if (ret < 0)
				return ret;
		}
		advance(j, n);
	}
	return 0;
}

/* The blocks the daemon says changed since checkpoint since. */
static int copy_changed(struct job *j, const char *sock, const char *since)
{
	uint64_t next = 0;
	char err[1024];

	/* the total is known only as the pages arrive: count the first */
	do {
		json_t *req = json_pack("{s:s,s:s,s:I}", "command", "changed",
					"since", since, "offset",
					(json_int_t)next);
		json_t *r = ctl_call(sock, req, err, sizeof(err)), *ext, *e;
		size_t i;

		json_decref(req);
		if (!r) {
			fprintf(stderr, "ovkdisk: changed since %s: %s\n",
				since, err);
			return -EIO;
		}
		ext = json_object_get(r, "extents");
		json_array_foreach(ext, i, e)
			j->total += (uint64_t)json_integer_value(
				json_array_get(e, 1));
		json_array_foreach(ext, i, e) {
			uint64_t off = (uint64_t)json_integer_value(
				json_array_get(e, 0));
			uint64_t len = (uint64_t)json_integer_value(
				json_array_get(e, 1));
			uint64_t first = off / OVKDISK_BLOCK;
			uint64_t last = (off + len + OVKDISK_BLOCK - 1) /
					OVKDISK_BLOCK;

			for (uint64_t b = first; b < last && b < j->nblocks;
			     b++) {
				int ret = copy_block(j, b, true);

				if (ret < 0) {
					json_decref(r);
					return ret;
				}
				advance(j, block_len(j, b));
			}
		}
		next = json_is_integer(json_object_get(r, "next")) ?
		       (uint64_t)json_integer_value(json_object_get(r, "next"))
		       : 0;
		json_decref(r);
	} while (next);
	if (j->o->progress && j->done < j->total)
		progress(j->o, "backup", j->total, j->total);
	return 0;
}

static json_t *load_manifest(const char *dir)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *m;

	snprintf(path, sizeof(path), "%s/%s", dir, OVKDISK_MANIFEST);
	if (access(path, F_OK) < 0)
		return json_pack("{s:s,s:i,s:I,s:s,s:[]}", "format",
				 "ovkdisk-backup", "version", 1, "block_size",
				 (json_int_t)OVKDISK_BLOCK, "disk_digest",
				 "sha256 over the SHA-256 of each 64 KiB "
				 "block in order", "backups");
	m = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!m || !json_is_array(json_object_get(m, "backups"))) {
		fprintf(stderr, "ovkdisk: %s: not an ovkdisk manifest: %s\n",
			path, m ? "no \"backups\" list" : jerr.text);
		json_decref(m);
		return NULL;
	}
	return m;
}

static bool has_checkpoint(json_t *status, const char *name)
{
	json_t *v;
	size_t i;

	json_array_foreach(json_object_get(status, "checkpoints"), i, v)
		if (!strcmp(json_string_value(v), name))
			return true;
	return false;
}

/* A view left open by a backup that did not finish is released. */
static int release_leftover(const char *sock, json_t *status)
{
	json_t *view = json_object_get(status, "view"), *req, *r;
	const char *cp = json_string_value(json_object_get(view,
							   "checkpoint"));
	char err[1024];

	if (!json_is_object(view))
		return 0;
	if (!cp || strncmp(cp, "ovkdisk-", 8)) {
		fprintf(stderr, "ovkdisk: a view of %s is open (not one of "
			"ovkdisk's backups): release it first\n",
			json_string_value(json_object_get(view, "path")));
		return -EBUSY;
	}
	fprintf(stderr, "ovkdisk: releasing the view %s left by an "
		"interrupted backup\n", cp);
	req = json_pack("{s:s}", "command", "view-release");
	r = ctl_call(sock, req, err, sizeof(err));
	json_decref(req);
	if (!r) {
		fprintf(stderr, "ovkdisk: view-release: %s\n", err);
		return -EBUSY;
	}
	json_decref(r);
	req = json_pack("{s:s,s:s}", "command", "checkpoint-delete", "name",
			cp);
	json_decref(ctl_call(sock, req, err, sizeof(err)));
	json_decref(req);
	return 0;
}

/* Whether the manifest names file as a backup's file or block digests. */
static bool in_manifest(json_t *m, const char *file)
{
	json_t *b;
	size_t i;

	json_array_foreach(json_object_get(m, "backups"), i, b) {
		const char *f = json_string_value(json_object_get(b, "file"));
		const char *h = json_string_value(json_object_get(
							  b, "blockhash_file"));

		if ((f && !strcmp(f, file)) || (h && !strcmp(h, file)))
			return true;
	}
	return false;
}

/* Remove what a backup that died left in the current folder: its files
   are ours by name and the manifest does not name them. */
static void remove_leftovers(json_t *m)
{
	DIR *d = opendir(".");
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		size_t l = strlen(n);

		/* write_atomic's temporary files of a backup killed in it */
		if (l > 4 && n[0] == '.' && !strcmp(n + l - 4, ".tmp") &&
		    (!strncmp(n, ".ovkdisk-", 9) ||
		     !strcmp(n, "." OVKDISK_MANIFEST ".tmp"))) {
			fprintf(stderr, "ovkdisk: removing %s, left by an "
				"interrupted backup\n", n);
			unlink(n);
			continue;
		}
		if (strncmp(n, "ovkdisk-", 8) ||
		    !((l > 5 && !strcmp(n + l - 5, ".vmdk")) ||
		      (l > 4 && !strcmp(n + l - 4, ".raw")) ||
		      (l > 10 && !strcmp(n + l - 10, ".blockhash"))))
			continue;
		if (!in_manifest(m, n)) {
			fprintf(stderr, "ovkdisk: removing %s, left by an "
				"interrupted backup\n", n);
			unlink(n);
		}
	}
	closedir(d);
}

/* Whether the manifest has a backup at checkpoint cp. */
static bool manifest_has_checkpoint(json_t *m, const char *cp)
{
	json_t *b;
	size_t i;

	json_array_foreach(json_object_get(m, "backups"), i, b) {
		const char *c = json_string_value(json_object_get(b,
								  "checkpoint"));

		if (c && !strcmp(c, cp))
			return true;
	}
	return false;
}

static void delete_checkpoint(const char *sock, const char *cp,
			      const char *why)
{
	char err[1024];
	json_t *req = json_pack("{s:s,s:s}", "command", "checkpoint-delete",
				"name", cp), *r;

	r = ctl_call(sock, req, err, sizeof(err));
	json_decref(req);
	if (r)
		fprintf(stderr, "ovkdisk: deleted the checkpoint %s %s\n", cp,
			why);
	else
		fprintf(stderr, "ovkdisk: warning: checkpoint-delete %s: %s\n",
			cp, err);
	json_decref(r);
}

/* Checkpoints on the disk that an interrupted backup into this folder
   left: the one named in OVKDISK_PENDING when the manifest does not have
   it (the backup died before the manifest named it), and those of earlier
   backups than the manifest's last (it died before deleting them). Each
   would otherwise stay until the disk runs out of checkpoints. */
static void delete_stale_checkpoints(const char *sock, json_t *m,
				     json_t *status)
{
	json_t *backups = json_object_get(m, "backups"), *b;
	size_t i, n = json_array_size(backups);
	char pending[128];
	int fd = open(OVKDISK_PENDING, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		ssize_t r = read(fd, pending, sizeof(pending) - 1);

		close(fd);
		pending[r > 0 ? r : 0] = '\0';
		if (r > 0 && !manifest_has_checkpoint(m, pending) &&
		    has_checkpoint(status, pending))
			delete_checkpoint(sock, pending, "of an interrupted "
					  "backup");
		unlink(OVKDISK_PENDING);
	}
	json_array_foreach(backups, i, b) {
		const char *cp = json_string_value(json_object_get(
							   b, "checkpoint"));

		if (i + 1 < n && cp && has_checkpoint(status, cp))
			delete_checkpoint(sock, cp, "of an earlier backup");
	}
}

/* A new raw file dst as a copy of the raw backup src of size bytes, holes
   kept (copy_file_range: shared extents where the filesystem can). Its
   fd, or -errno with a message. */
static int copy_raw(const char *src, const char *dst, uint64_t size)
{
	int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, ret = 0;
	off_t pos = 0, end;

	if (in < 0) {
		ret = -errno;
		fprintf(stderr, "ovkdisk: %s: %s\n", src, strerror(errno));
		return ret;
	}
	out = open(dst, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (out < 0 || ftruncate(out, (off_t)size) < 0) {
		ret = -errno;
		fprintf(stderr, "ovkdisk: creating %s: %s\n", dst,
			strerror(errno));
		goto err;
	}
	while ((pos = lseek(in, pos, SEEK_DATA)) >= 0 &&
	       (uint64_t)pos < size) {
		end = lseek(in, pos, SEEK_HOLE);
		if (end < 0 || (uint64_t)end > size)
			end = (off_t)size;
		while (pos < end) {
			loff_t io = pos, oo = pos;
			ssize_t n = copy_file_range(in, &io, out, &oo,
						    (size_t)(end - pos), 0);

			if (n <= 0) {
				ret = n < 0 ? -errno : -EIO;
				fprintf(stderr, "ovkdisk: copying %s to %s at "
					"%lld: %s\n", src, dst, (long long)pos,
					n < 0 ? strerror(errno) :
					"the file is shorter than the disk");
				goto err;
			}
			pos += n;
		}
	}
	if (pos < 0 && errno != ENXIO) {
		ret = -errno;
		fprintf(stderr, "ovkdisk: %s: seeking data: %s\n", src,
			strerror(errno));
		goto err;
	}
	close(in);
	return out;
err:
	close(in);
	if (out >= 0) {
		close(out);
		unlink(dst);
	}
	return ret;
}

static int load_hashes(struct job *j, const char *file)
{
	size_t want = j->nblocks * 32;
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	ssize_t r = fd < 0 ? -1 : pread(fd, j->hashes, want, 0);

	if (fd >= 0)
		close(fd);
	if (r != (ssize_t)want) {
		fprintf(stderr, "ovkdisk: %s: expected %zu bytes of block "
			"digests\n", file, want);
		return -EINVAL;
	}
	return 0;
}

int cmd_backup(const struct ovkdisk_opts *o, const char *sock_arg,
	       const char *dir)
{
	struct job j = { .o = o, .fd = -1 };
	json_t *m = NULL, *status = NULL, *r, *req, *backups, *prev = NULL;
	const char *prev_cp = NULL, *prev_file = NULL;
	char err[1024], name[128], file[160], hfile[160], stamp[32];
	char *sock = NULL, fhex[65], dhex[65];
	uint8_t dmd[32];
	bool incremental, raw = !strcmp(o->format, "raw");
	struct bdev_create_opts co = { .format = "vmdk" };
	struct bdev_open_opts oo = { 0 };
	uint64_t fsize = 0;
	time_t now = time(NULL);
	struct tm tm;
	int ret = -EIO;

	sock = realpath(sock_arg, NULL);
	if (!sock) {
		fprintf(stderr, "ovkdisk: %s: %s\n", sock_arg, strerror(errno));
		return 1;
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "ovkdisk: %s: %s\n", dir, strerror(errno));
		goto out;
	}
	if (chdir(dir) < 0) {
		fprintf(stderr, "ovkdisk: %s: %s\n", dir, strerror(errno));
		goto out;
	}
	m = load_manifest(".");
	if (!m)
		goto out;
	status = ctl_command(sock, "status");
	if (!status)
		goto out;
	if (release_leftover(sock, status) < 0)
		goto out;
	/* status again: the release may have deleted a checkpoint */
	json_decref(status);
	status = ctl_command(sock, "status");
	if (!status)
		goto out;
	delete_stale_checkpoints(sock, m, status);
	remove_leftovers(m);
	j.size = (uint64_t)json_integer_value(json_object_get(status, "size"));
	backups = json_object_get(m, "backups");
	if (json_array_size(backups)) {
		prev = json_array_get(backups, json_array_size(backups) - 1);
		prev_cp = json_string_value(json_object_get(prev,
							    "checkpoint"));
		prev_file = json_string_value(json_object_get(prev, "file"));
	}
	incremental = prev && prev_cp && has_checkpoint(status, prev_cp) &&
		      (uint64_t)json_integer_value(json_object_get(
			      m, "disk_size")) == j.size &&
		      raw == !strcmp(entry_engine_format(prev), "raw");
	if (o->kind == 2 && !incremental) {
		fprintf(stderr, "ovkdisk: %s: no incremental backup possible: "
			"%s\n", dir, !prev ? "the folder holds no backup yet"
			: raw != !strcmp(entry_engine_format(prev), "raw") ?
			"the last backup is not of a format this one can build "
			"on (raw on raw, VMDK on VMDK); take a --full one"
			: "the disk no longer has the last backup's checkpoint "
			"(or changed size); take a --full one");
		goto out;
	}
	if (o->kind == 1)
		incremental = false;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(name, sizeof(name), "ovkdisk-%s-%zu", stamp,
		 json_array_size(backups) + 1);
	snprintf(file, sizeof(file), "%s.%s", name, raw ? "raw" : "vmdk");
	snprintf(hfile, sizeof(hfile), "%s.blockhash", name);
	unlink(file); /* only a dead backup's: a name is not reused */

	if (o->quiesce && run_quiesce(o->quiesce) < 0)
		goto out;
	ret = write_atomic(".", OVKDISK_PENDING, name, strlen(name));
	if (ret < 0)
		goto out;
	req = json_pack("{s:s,s:s}", "command", "view-create", "checkpoint",
			name);
	r = ctl_call(sock, req, err, sizeof(err));
	json_decref(req);
	if (!r) {
		fprintf(stderr, "ovkdisk: view-create: %s\n", err);
		unlink(OVKDISK_PENDING);
		ret = -EIO;
		goto out;
	}
	stop_point("view");
	ret = bdev_open(json_string_value(json_object_get(r, "path")), &oo,
			&j.view);
	json_decref(r);
	if (ret < 0) {
		fprintf(stderr, "ovkdisk: opening the view: %s\n",
			engine_msg(ret));
		goto out_release;
	}
	j.nblocks = (j.size + OVKDISK_BLOCK - 1) / OVKDISK_BLOCK;
	j.hashes = calloc(j.nblocks ? j.nblocks : 1, 32);
	j.buf = malloc(OVKDISK_BLOCK);
	j.zeros = calloc(1, OVKDISK_BLOCK);
	ret = -ENOMEM;
	if (!j.hashes || !j.buf || !j.zeros)
		goto out_view;
	sha256(j.zeros, OVKDISK_BLOCK, j.zero_hash);
	if (incremental) {
		ret = load_hashes(&j, json_string_value(json_object_get(
					      prev, "blockhash_file")));
		if (ret < 0)
			goto out_view;
		co.subformat = "monolithicSparse";
		co.backing = prev_file;
	} else {
		co.format = raw ? "raw" : "vmdk";
		co.subformat = raw ? NULL : !strcmp(o->format, "vmdk-sparse") ?
			       "monolithicSparse" : "streamOptimized";
		co.size = j.size;
	}
	if (incremental && raw) {
		/* raw has no delta: a synthetic full, the last backup's file
		   with the changed blocks written over it */
		ret = copy_raw(prev_file, file, j.size);
		j.fd = ret;
	} else {
		ret = bdev_writer_new(file, &co, &j.w);
		if (ret < 0)
			fprintf(stderr, "ovkdisk: creating %s/%s: %s\n", dir,
				file, engine_msg(ret));
	}
	if (ret < 0)
		goto out_view;
	ret = incremental ? copy_changed(&j, sock, prev_cp) : copy_full(&j);
	if (ret < 0) {
		if (j.w)
			bdev_writer_abort(j.w);
		goto out_view;
	}
	if (j.w) {
		ret = bdev_writer_finish(j.w, &fsize);
		if (ret < 0)
			fprintf(stderr, "ovkdisk: finishing %s: %s\n", file,
				engine_msg(ret));
	} else {
		ret = fsync(j.fd) < 0 ? -errno : 0;
		if (ret < 0)
			fprintf(stderr, "ovkdisk: finishing %s: %s\n", file,
				strerror(-ret));
		close(j.fd);
		j.fd = -1;
	}
	if (ret < 0)
		goto out_view;
	stop_point("written");
	ret = write_atomic(".", hfile, j.hashes, j.nblocks * 32);
	if (ret < 0)
		goto out_view;
	ret = sha256_file(file, fhex);
	if (ret < 0)
		goto out_view;
	sha256(j.hashes, j.nblocks * 32, dmd);
	to_hex(dmd, 32, dhex);
	bdev_close(j.view);
	j.view = NULL;

	/* the view's job is done: merge it back before the manifest names
	   the backup, so that a failure here is seen (the backup is whole
	   either way) */
	req = json_pack("{s:s}", "command", "view-release");
	r = ctl_call(sock, req, err, sizeof(err));
	json_decref(req);
	if (!r)
		fprintf(stderr, "ovkdisk: warning: view-release: %s (the "
			"backup is complete)\n", err);
	json_decref(r);
	stop_point("released");

	{
		char when[32];
		struct stat st;
		json_t *entry;

		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		if (stat(file, &st) == 0)
			fsize = (uint64_t)st.st_size;
		entry = json_pack(
			"{s:s,s:s,s:s,s:s,s:s,s:s?,s:I,s:s,s:s,s:s,s:I,s:I,s:s}",
			"checkpoint", name, "kind",
			incremental ? "incremental" : "full", "time", when,
			"format", o->format, "file", file, "parent",
			incremental && !raw ? prev_file : NULL,
			"file_size", (json_int_t)fsize, "file_sha256", fhex,
			"blockhash_file", hfile, "disk_sha256", dhex,
			"read_bytes", (json_int_t)j.read_bytes,
			"changed_bytes", (json_int_t)j.total, "consistency",
			o->quiesce ? "quiesced" : "crash-consistent");
		json_array_append_new(backups, entry);
		json_object_set_new(m, "disk_size", json_integer(
					    (json_int_t)j.size));
		char *text = json_dumps(m, JSON_INDENT(2));
		ret = text ? write_atomic(".", OVKDISK_MANIFEST, text,
					  strlen(text)) : -ENOMEM;
		free(text);
		if (ret < 0)
			goto out;
		unlink(OVKDISK_PENDING);
		stop_point("done");
		if (o->json) {
			char *t = json_dumps(entry, JSON_COMPACT);
			puts(t);
			free(t);
		} else {
			printf("%s backup %s: %s/%s (%llu bytes), read %llu "
			       "bytes of the disk, disk sha256 %s\n",
			       incremental ? "incremental" : "full", name, dir,
			       file, (unsigned long long)fsize,
			       (unsigned long long)j.read_bytes, dhex);
		}
	}
	/* the checkpoint before is not needed any more */
	if (prev_cp && has_checkpoint(status, prev_cp)) {
		req = json_pack("{s:s,s:s}", "command", "checkpoint-delete",
				"name", prev_cp);
		json_decref(ctl_call(sock, req, err, sizeof(err)));
		json_decref(req);
	}
	ret = 0;
	goto out;

out_view:
	if (j.view)
		bdev_close(j.view);
	if (j.fd >= 0)
		close(j.fd);
	unlink(file);
out_release:
	req = json_pack("{s:s}", "command", "view-release");
	json_decref(ctl_call(sock, req, err, sizeof(err)));
	json_decref(req);
	req = json_pack("{s:s,s:s}", "command", "checkpoint-delete", "name",
			name);
	json_decref(ctl_call(sock, req, err, sizeof(err)));
	json_decref(req);
	unlink(OVKDISK_PENDING);
out:
	free(j.hashes);
	free(j.buf);
	free(j.zeros);
	json_decref(status);
	json_decref(m);
	free(sock);
	return ret < 0 ? 1 : 0;
}
