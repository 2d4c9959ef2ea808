/* SPDX-License-Identifier: Apache-2.0 */
/*
 * resize.c - the VMDK driver's resize op (bdev_resize): change the virtual
 * size of a VMDK in place.
 *
 * What is supported:
 *  - flat kinds (monolithicFlat, vmfs, twoGbMaxExtentFlat): the last
 *    extent file grows (twoGbMaxExtentFlat: up to 2047 MiB, then new
 *    NAME-fNNN.vmdk files are added), or shrinks within the last extent;
 *  - monolithicSparse: new zeroed grain tables are appended; while the
 *    directory's last sector has room their entries go in place, else a
 *    new directory (and redundant one) is appended with them; shrinks when
 *    nothing past the new end is allocated;
 *  - twoGbMaxExtentSparse: the last extent grows likewise up to 2047 MiB,
 *    then new NAME-sNNN.vmdk sparse extents are added.
 * Refused with a reason: streamOptimized, COWD, seSparse, delta disks, and
 * shrinking over data without BDEV_RESIZE_SHRINK (flat kinds only; sparse
 * kinds never drop grains).
 *
 * Crash-safe order: new tables (or directory) appended and synced, then
 * the header that names them or the larger capacity (one sector), and new
 * extent files written and synced before the descriptor that names them
 * (replaced atomically). A crash leaves the old size and at worst leaked
 * sectors at the end of a file; a rerun finishes (empty extent files left
 * behind are reused). A monolithicSparse that grows writes its header
 * before its embedded descriptor (one that shrinks, after it): the state
 * between is a descriptor smaller than the header's capacity, which opens
 * at the header's size and which bdev_check only warns about.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "create.h"
#include "vmdk.h"

#define TWOGB_EXTENT_BYTES (UINT64_C(4192256) * 512)

/*
 * Tests only: with OVK_TEST_RESIZE_CRASH=N in the environment the process
 * dies (exit status 86, no cleanup) at the Nth durable step, as a crash
 * there would leave the files.
 */
static void crash_point(void)
{
	static unsigned count;
	const char *v = getenv("OVK_TEST_RESIZE_CRASH");

	if (v && strtoul(v, NULL, 10) == ++count)
		_exit(86);
}

/* See vmdk.h. */
int vmdk_desc_resize(const char *text, size_t len, uint64_t sectors,
		       const char *extra, char **out)
{
	size_t tl = strnlen(text, len), pos = 0, num_at = 0, num_end = 0, eol_last = 0;
	bool found = false;
	char val[32], *s;

	while (pos < tl) {
		size_t eol = pos, p = pos;
		while (eol < tl && text[eol] != '\n')
			eol++;
		while (p < eol && (text[p] == ' ' || text[p] == '\t'))
			p++;
		if ((!strncmp(text + p, "RW", 2) || !strncmp(text + p, "RDONLY", 6) ||
		     !strncmp(text + p, "NOACCESS", 8))) {
			size_t q = p;
			while (q < eol && text[q] != ' ' && text[q] != '\t')
				q++;
			while (q < eol && (text[q] == ' ' || text[q] == '\t'))
				q++;
			if (q < eol && text[q] >= '0' && text[q] <= '9') {
				num_at = q;
				while (q < eol && text[q] >= '0' && text[q] <= '9')
					q++;
				num_end = q;
				eol_last = eol < tl ? eol + 1 : eol;
				found = true;
			}
		}
		pos = eol + 1;
	}
	if (!found)
		return -ENOENT;
	snprintf(val, sizeof(val), "%" PRIu64, sectors);
	s = malloc(tl + strlen(val) + (extra ? strlen(extra) : 0) + 2);
	if (!s)
		return -ENOMEM;
	memcpy(s, text, num_at);
	strcpy(s + num_at, val);
	memcpy(s + num_at + strlen(val), text + num_end, eol_last - num_end);
	s[num_at + strlen(val) + eol_last - num_end] = '\0';
	if (extra) {
		if (eol_last == tl && tl && text[tl - 1] != '\n')
			strcat(s, "\n");
		strcat(s, extra);
	}
	strcat(s, text + eol_last);
	*out = s;
	return 0;
}

/* Replace the descriptor file path (text, len bytes) by one whose last
   extent line says sectors, with extra lines (may be NULL) after it. */
static int desc_file_resize(const char *path, const char *text, size_t len,
			    uint64_t sectors, const char *extra)
{
	char *nt = NULL;
	int ret = vmdk_desc_resize(text, len, sectors, extra, &nt);

	if (ret == -ENOENT)
		return bdev_err(-EINVAL, "%s: no extent line found to resize", path);
	if (ret < 0)
		return ret;
	ret = vmdk_replace_file(path, nt);
	free(nt);
	return ret;
}

/* True when path holds data (not a hole) at or after off. */
static bool data_after(const char *path, uint64_t off)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t d;

	if (fd < 0)
		return true;
	d = lseek(fd, (off_t)off, SEEK_DATA);
	close(fd);
	return d >= 0;
}

/* Sizes path to len bytes (growing leaves a hole). */
static int size_file(const char *path, uint64_t len, bool create)
{
	int fd, ret = 0;

	if (create) {
		ret = create_excl(path, &fd);
		if (ret == -EEXIST && !data_after(path, 0)) {
			/* left by an interrupted resize: no data, reuse it */
			bdev_err_clear();
			create = false;
			ret = 0;
		} else if (ret == -EEXIST) {
			return bdev_err(-EEXIST, "%s: exists and holds data; it is not "
					"an extent left by an interrupted resize; move "
					"it away", path);
		} else if (ret < 0) {
			return ret;
		}
	}
	if (!create) {
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return bdev_err(-errno, "%s: cannot open: %s", path,
					strerror(errno));
	}
	if (ftruncate(fd, (off_t)len) < 0 || fsync(fd) < 0)
		ret = bdev_err(-errno, "%s: cannot size to %" PRIu64 " bytes: %s",
			       path, len, strerror(errno));
	close(fd);
	if (ret == 0)
		crash_point();
	return ret;
}

/*
 * Write a new, empty hosted sparse extent of sectors at path shaped like
 * the extent whose header is tmpl (version, flags, grain, table size):
 * header, RGD, RGTs, GD, GTs, synced. A file left by an interrupted resize
 * (a KDMV header and no grains) is overwritten; anything else is refused.
 */
static int sparse_extent_new(const char *path, const uint8_t *tmpl,
			     const struct vmdk_sparse_hdr *th, uint64_t sectors)
{
	uint64_t span = (uint64_t)th->gtes_per_gt * th->grain_sectors;
	uint64_t n = (sectors + span - 1) / span, gt_sec = th->gtes_per_gt * 4ull / 512;
	uint64_t dir_sec = (n * 4 + 511) / 512, rgd = 1, rgt0 = rgd + dir_sec;
	uint64_t gd = rgt0 + n * gt_sec, gt0 = gd + dir_sec;
	uint64_t overhead = (gt0 + n * gt_sec + th->grain_sectors - 1) /
			    th->grain_sectors * th->grain_sectors;
	uint8_t *buf;
	int fd, ret;

	ret = create_excl(path, &fd);
	if (ret == -EEXIST) {
		struct stat st;
		uint8_t m[4] = { 0 };

		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0 || pread(fd, m, 4, 0) != 4 ||
		    memcmp(m, VMDK4_MAGIC, 4) || (uint64_t)st.st_size > overhead * 512) {
			if (fd >= 0)
				close(fd);
			return bdev_err(-EEXIST, "%s: exists and is not an empty extent "
					"left by an interrupted resize; move it away",
					path);
		}
		bdev_err_clear();
		ret = 0;
	}
	if (ret < 0)
		return ret;
	buf = calloc(1, overhead * 512);
	if (!buf) {
		close(fd);
		return bdev_err(-ENOMEM, "%s: out of memory", path);
	}
	memcpy(buf, tmpl, 512);
	vmdk_put64(buf + 12, sectors);
	vmdk_put64(buf + 28, 0);
	vmdk_put64(buf + 36, 0);
	vmdk_put64(buf + 64, overhead);
	buf[72] = 0;
	vmdk_put32(buf + 8, th->flags | VMDK4_FLAG_RGD);
	vmdk_put64(buf + 48, rgd);
	vmdk_put64(buf + 56, gd);
	for (uint64_t i = 0; i < n; i++) {
		vmdk_put32(buf + rgd * 512 + i * 4, (uint32_t)(rgt0 + i * gt_sec));
		vmdk_put32(buf + gd * 512 + i * 4, (uint32_t)(gt0 + i * gt_sec));
	}
	ret = ftruncate(fd, 0) < 0 ? bdev_err(-errno, "%s: cannot truncate: %s", path,
					      strerror(errno)) : 0;
	if (ret == 0)
		ret = write_all_at(fd, path, buf, overhead * 512, 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = bdev_err(-errno, "%s: fsync failed: %s", path, strerror(errno));
	free(buf);
	close(fd);
	if (ret == 0)
		crash_point();
	return ret;
}

/*
 * Extent files after the last one (path last, the nth), holding
 * extra_bytes in pieces of at most 2047 MiB, named like it (NAME-fNNN.vmdk
 * or NAME-sNNN.vmdk, numbered on): flat files sized with holes, or (tmpl
 * given) empty sparse extents shaped like tmpl; each synced. *lines gets
 * their descriptor lines (malloc'd).
 */
static int add_extents(const char *path, const char *last, unsigned n,
		       uint64_t extra_bytes, const uint8_t *tmpl,
		       const struct vmdk_sparse_hdr *th, char **lines)
{
	size_t cap = (size_t)(extra_bytes / TWOGB_EXTENT_BYTES + 1) * 300, sl, dl;
	const char *base = strrchr(last, '/');
	char stem[256], *extra;
	int ret = 0;

	base = base ? base + 1 : last;
	dl = (size_t)(base - last);
	sl = strlen(base);
	if (sl < 8 || sl - 8 >= sizeof(stem) || strcmp(base + sl - 5, ".vmdk") ||
	    dl >= 3800)
		return bdev_err(-ENOTSUP, "%s: extent file %s is not named "
				"NAME-%cNNN.vmdk; cannot add extents", path, base,
				tmpl ? 's' : 'f');
	memcpy(stem, base, sl - 8);
	stem[sl - 8] = '\0';
	extra = calloc(1, cap);
	if (!extra)
		return bdev_err(-ENOMEM, "%s: out of memory", path);
	for (unsigned i = n + 1; extra_bytes; i++) {
		uint64_t eb = extra_bytes < TWOGB_EXTENT_BYTES ? extra_bytes :
			      TWOGB_EXTENT_BYTES;
		char fpath[4096];

		snprintf(fpath, sizeof(fpath), "%.*s%s%03u.vmdk", (int)dl, last,
			 stem, i);
		ret = tmpl ? sparse_extent_new(fpath, tmpl, th, eb / 512) :
		      size_file(fpath, eb, true);
		if (ret < 0)
			break;
		snprintf(extra + strlen(extra), cap - strlen(extra),
			 tmpl ? "RW %" PRIu64 " SPARSE \"%s%03u.vmdk\"\n" :
				"RW %" PRIu64 " FLAT \"%s%03u.vmdk\" 0\n",
			 eb / 512, stem, i);
		extra_bytes -= eb;
	}
	if (ret < 0) {
		free(extra);
		return ret;
	}
	*lines = extra;
	return 0;
}

static int resize_flat(struct bdev *b, const char *path, uint64_t new_size,
		       unsigned flags)
{
	struct bdev_extent_info last;
	bool split = !strcmp(b->info.subformat, "twoGbMaxExtentFlat");
	unsigned n = b->info.extent_count;
	uint64_t keep, extra_bytes = 0;
	char *text = NULL, *extra = NULL;
	size_t len = 0;
	int ret;

	ret = bdev_get_extent(b, n - 1, &last);
	if (ret < 0)
		return ret;
	if (strcmp(last.type, "FLAT") && strcmp(last.type, "VMFS"))
		return bdev_err(-ENOTSUP, "%s: the last extent is %s, expected FLAT "
				"or VMFS", path, last.type);
	if (new_size <= last.offset)
		return bdev_err(-ENOTSUP, "%s: shrinking below the last extent "
				"(offset %" PRIu64 ") would drop extent files; not "
				"supported", path, last.offset);
	keep = new_size - last.offset;
	if (split && keep > TWOGB_EXTENT_BYTES) {
		extra_bytes = keep - TWOGB_EXTENT_BYTES;
		keep = TWOGB_EXTENT_BYTES;
	}
	if (keep < last.size && !(flags & BDEV_RESIZE_SHRINK) &&
	    data_after(last.filename, last.file_offset + keep))
		return bdev_err(-ENOTSUP, "%s: %s holds data past the new end (%"
				PRIu64 " bytes); shrink anyway to drop it", path,
				last.filename, new_size);
	ret = vmdk_desc_read_file(path, &text, &len);
	if (ret < 0)
		return ret;
	if (extra_bytes) {
		ret = add_extents(path, last.filename, n, extra_bytes, NULL, NULL,
				  &extra);
		if (ret < 0)
			goto out;
	}
	if (keep > last.size) {
		ret = size_file(last.filename, last.file_offset + keep, false);
		if (ret < 0)
			goto out;
	}
	ret = desc_file_resize(path, text, len, keep / 512, extra);
	/* the descriptor says the new size: only now drop the bytes */
	if (ret == 0 && keep < last.size)
		ret = size_file(last.filename, last.file_offset + keep, false);
out:
	free(text);
	free(extra);
	return ret;
}

/*
 * Make the tables of the hosted sparse extent in fd (header h) cover
 * new_sec sectors, durably, without touching the header: new zeroed grain
 * tables are appended at the grain-aligned end of the file. While the
 * directory's last sector has room, their entries go into the spare slots
 * of the directory in place (slots past the header's capacity, read by no
 * one). Otherwise a new directory (and redundant one) holding the old
 * entries and the new ones is appended with the tables, and *gd, *rgd say
 * where: the header that names them is written by the caller, last, so a
 * crash before it leaves the old image (and leaked sectors at the end).
 */
static int grow_tables(int fd, const char *path, const struct vmdk_sparse_hdr *h,
		       uint64_t new_sec, uint64_t *gd, uint64_t *rgd)
{
	uint64_t span = (uint64_t)h->gtes_per_gt * h->grain_sectors;
	uint64_t gt_bytes = (uint64_t)h->gtes_per_gt * 4, gb = h->grain_sectors * 512;
	uint32_t old_n = h->gd_entries, new_n = (uint32_t)((new_sec + span - 1) / span);
	uint64_t room = (((uint64_t)old_n * 4 + 511) / 512) * 512 / 4;
	bool has_rgd = (h->flags & VMDK4_FLAG_RGD) && h->rgd_offset;
	bool move = new_n > room;
	uint64_t dir_bytes = move ? ((uint64_t)new_n * 4 + 511) / 512 * 512 : 0;
	uint64_t copies = has_rgd ? 2 : 1, add = new_n - old_n, bytes, at, gt0;
	uint8_t *buf = NULL, *old = NULL;
	struct stat st;
	int ret = 0;

	*gd = h->gd_offset;
	*rgd = h->rgd_offset;
	if (new_n <= old_n)
		return 0;
	if ((uint64_t)new_n * 4 > VMDK_MAX_GD_ENTRIES * 4ull)
		return bdev_err(-EFBIG, "%s: %" PRIu32 " grain tables exceed the limit",
				path, new_n);
	if (fstat(fd, &st) < 0)
		return bdev_err(-errno, "%s: cannot stat: %s", path, strerror(errno));
	at = ((uint64_t)st.st_size + gb - 1) / gb * gb;
	bytes = (copies * (dir_bytes + add * gt_bytes) + gb - 1) / gb * gb;
	if ((at + bytes) / 512 > UINT32_MAX)
		return bdev_err(-EFBIG, "%s: the new tables would lie past sector 2^32, "
				"the limit of a sparse extent", path);
	buf = calloc(1, bytes);
	if (!buf)
		return bdev_err(-ENOMEM, "%s: out of memory", path);
	/* layout at `at`: [GD][RGD] (when moved), GTs, RGTs */
	gt0 = at + copies * dir_bytes;
	if (move) {
		old = malloc((size_t)old_n * 4 + 4);
		if (!old) {
			ret = bdev_err(-ENOMEM, "%s: out of memory", path);
			goto out;
		}
		for (uint64_t c = 0; c < copies; c++) {
			uint64_t from = c ? h->rgd_offset : h->gd_offset;
			uint8_t *dir = buf + c * dir_bytes;

			if (pread(fd, old, (size_t)old_n * 4, (off_t)(from * 512)) !=
			    (ssize_t)old_n * 4) {
				ret = bdev_err(-EIO, "%s: cannot read the grain directory "
					       "at sector %" PRIu64, path, from);
				goto out;
			}
			memcpy(dir, old, (size_t)old_n * 4);
			for (uint64_t i = 0; i < add; i++)
				vmdk_put32(dir + (old_n + i) * 4, (uint32_t)((gt0 +
					   (c * add + i) * gt_bytes) / 512));
		}
		*gd = at / 512;
		*rgd = has_rgd ? (at + dir_bytes) / 512 : h->rgd_offset;
	}
	ret = write_all_at(fd, path, buf, bytes, at);
	if (ret == 0 && fdatasync(fd) < 0)
		ret = bdev_err(-errno, "%s: fdatasync failed: %s", path, strerror(errno));
	if (ret == 0)
		crash_point();
	if (ret < 0 || move)
		goto out;
	for (uint64_t c = 0; c < copies; c++) {
		uint64_t dir_at = c ? h->rgd_offset : h->gd_offset;

		for (uint64_t i = 0; i < add; i++)
			vmdk_put32(buf + i * 4, (uint32_t)((gt0 + (c * add + i) * gt_bytes) / 512));
		ret = write_all_at(fd, path, buf, (size_t)add * 4, dir_at * 512 + old_n * 4);
		if (ret < 0)
			goto out;
	}
	if (fdatasync(fd) < 0)
		ret = bdev_err(-errno, "%s: fdatasync failed: %s", path, strerror(errno));
	if (ret == 0)
		crash_point();
out:
	free(buf);
	free(old);
	return ret;
}

/* Write the header hb with capacity new_sec and the directories at gd and
   rgd: one sector, synced, the step that makes a grown extent take
   effect. */
static int put_header(int fd, const char *path, uint8_t *hb, uint64_t new_sec,
		      uint64_t gd, uint64_t rgd)
{
	int ret;

	vmdk_put64(hb + 12, new_sec);
	vmdk_put64(hb + 48, rgd);
	vmdk_put64(hb + 56, gd);
	ret = write_all_at(fd, path, hb, 512, 0);
	if (ret == 0 && fdatasync(fd) < 0)
		ret = bdev_err(-errno, "%s: fdatasync failed: %s", path, strerror(errno));
	if (ret == 0)
		crash_point();
	return ret;
}

/* Open the hosted sparse extent path read-write and parse its header. */
static int open_hosted(const char *path, uint8_t *hb, struct vmdk_sparse_hdr *h,
		       int *fdp)
{
	struct stat st;
	int fd = open(path, O_RDWR | O_CLOEXEC), ret;

	if (fd < 0)
		return bdev_err(-errno, "%s: cannot open: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || pread(fd, hb, 512, 0) != 512) {
		close(fd);
		return bdev_err(-EIO, "%s: cannot read the header", path);
	}
	ret = vmdk_sparse_header_parse(hb, 0, (uint64_t)st.st_size, path, h);
	if (ret == 0 && (h->compressed || h->gd_offset == VMDK4_GD_AT_END))
		ret = bdev_err(-ENOTSUP, "%s: a compressed extent cannot be resized",
			       path);
	if (ret == 0 && (!h->gd_ok || !h->gtes_per_gt))
		ret = bdev_err(-EINVAL, "%s: the grain directory lies outside the file",
			       path);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	*fdp = fd;
	return 0;
}

/* Refuse to shrink over grains: everything past new_size must be
   unallocated. */
static int only_unallocated_after(struct bdev *b, const char *path,
				  uint64_t new_size)
{
	uint64_t off = new_size, pnum;

	while (off < b->info.size) {
		int st = bdev_block_status(b, off, b->info.size - off, &pnum);
		if (st < 0)
			return st;
		if (st != BDEV_STATUS_UNALLOCATED)
			return bdev_err(-ENOTSUP, "%s: offset %" PRIu64 " past the new "
					"end holds grains; a sparse image is only shrunk "
					"over unallocated space", path, off);
		off += pnum;
	}
	return 0;
}

static int resize_sparse(struct bdev *b, const char *path, uint64_t new_size)
{
	struct bdev_extent_info ei;
	struct vmdk_sparse_hdr h;
	uint8_t hb[512];
	uint64_t new_sec = new_size / 512, gd, rgd;
	char *text = NULL, *nt = NULL;
	int fd, ret;

	ret = bdev_get_extent(b, 0, &ei);
	if (ret < 0)
		return ret;
	if (ei.compressed || strcmp(ei.type, "SPARSE") || strcmp(ei.filename, path))
		return bdev_err(-ENOTSUP, "%s: only a monolithicSparse file can be "
				"resized", path);
	if (new_size < b->info.size) {
		ret = only_unallocated_after(b, path, new_size);
		if (ret < 0)
			return ret;
	}
	ret = open_hosted(path, hb, &h, &fd);
	if (ret < 0)
		return ret;
	ret = grow_tables(fd, path, &h, new_sec, &gd, &rgd);
	if (ret < 0)
		goto out;
	/* Growing, the header (the size this engine and QEMU read) comes
	   before the embedded descriptor; shrinking, after it: a crash in
	   between leaves a descriptor smaller than the capacity, which both
	   open at the header's size and bdev_check only warns about. */
	if (new_sec > h.capacity) {
		ret = put_header(fd, path, hb, new_sec, gd, rgd);
		if (ret < 0)
			goto out;
	}
	if (h.desc_offset && h.desc_size) {
		size_t dlen = h.desc_size * 512;
		text = calloc(1, dlen + 1);
		if (!text) {
			ret = -ENOMEM;
			goto out;
		}
		if (pread(fd, text, dlen, (off_t)(h.desc_offset * 512)) != (ssize_t)dlen) {
			ret = bdev_err(-EIO, "%s: cannot read the embedded descriptor", path);
			goto out;
		}
		ret = vmdk_desc_resize(text, dlen, new_sec, NULL, &nt);
		if (ret == 0 && strlen(nt) >= dlen)
			ret = bdev_err(-ENOSPC, "%s: the resized descriptor does not fit "
				       "in %zu bytes", path, dlen);
		if (ret == 0) {
			memset(text, 0, dlen);
			memcpy(text, nt, strlen(nt));
			ret = write_all_at(fd, path, text, dlen, h.desc_offset * 512);
		}
		if (ret == -ENOENT)
			ret = 0;
		if (ret == 0 && fdatasync(fd) < 0)
			ret = -errno;
		if (ret < 0)
			goto out;
		crash_point();
	}
	if (new_sec <= h.capacity)
		ret = put_header(fd, path, hb, new_sec, gd, rgd);
out:
	free(text);
	free(nt);
	close(fd);
	return ret;
}

/*
 * twoGbMaxExtentSparse: the last extent's tables and header grow to at
 * most 2047 MiB (header last: a larger capacity than the descriptor says
 * is harmless), new NAME-sNNN.vmdk extents are written and synced, then
 * the descriptor names them (replaced atomically). A crash leaves the old
 * size; a rerun finds the same state or reuses the empty new files.
 * Shrinking stays within the last extent and over unallocated space.
 */
static int resize_split_sparse(struct bdev *b, const char *path, uint64_t new_size)
{
	struct bdev_extent_info last;
	struct vmdk_sparse_hdr h;
	unsigned n = b->info.extent_count;
	uint64_t keep, extra_bytes = 0, gd, rgd;
	char *text = NULL, *extra = NULL;
	uint8_t hb[512];
	size_t len = 0;
	int fd = -1, ret;

	ret = bdev_get_extent(b, n - 1, &last);
	if (ret < 0)
		return ret;
	if (strcmp(last.type, "SPARSE") || last.compressed || !last.filename)
		return bdev_err(-ENOTSUP, "%s: the last extent is %s, expected an "
				"uncompressed SPARSE extent", path, last.type);
	if (new_size <= last.offset)
		return bdev_err(-ENOTSUP, "%s: shrinking below the last extent "
				"(offset %" PRIu64 ") would drop extent files; not "
				"supported", path, last.offset);
	if (new_size < b->info.size) {
		ret = only_unallocated_after(b, path, new_size);
		if (ret < 0)
			return ret;
	}
	keep = new_size - last.offset;
	if (keep > TWOGB_EXTENT_BYTES) {
		extra_bytes = keep - TWOGB_EXTENT_BYTES;
		keep = TWOGB_EXTENT_BYTES;
	}
	ret = open_hosted(last.filename, hb, &h, &fd);
	if (ret < 0)
		return ret;
	if (keep / 512 > h.capacity) {
		ret = grow_tables(fd, last.filename, &h, keep / 512, &gd, &rgd);
		if (ret == 0)
			ret = put_header(fd, last.filename, hb, keep / 512, gd, rgd);
		if (ret < 0)
			goto out;
	}
	ret = vmdk_desc_read_file(path, &text, &len);
	if (ret < 0)
		goto out;
	if (extra_bytes) {
		ret = add_extents(path, last.filename, n, extra_bytes, hb, &h, &extra);
		if (ret < 0)
			goto out;
	}
	ret = desc_file_resize(path, text, len, keep / 512, extra);
	/* the descriptor says the smaller size: only now the header */
	if (ret == 0 && keep / 512 < h.capacity)
		ret = put_header(fd, last.filename, hb, keep / 512, h.gd_offset,
				 h.rgd_offset);
out:
	if (fd >= 0)
		close(fd);
	free(text);
	free(extra);
	return ret;
}

/* The resize op of the VMDK driver: b is open read-write without its
   parents, new_size a positive multiple of 512; see blockengine.h. */
int vmdk_resize(struct bdev *b, uint64_t new_size, unsigned flags)
{
	const char *path = b->filename;
	const char *sf = b->info.subformat ? b->info.subformat : "";

	if (new_size / 512 > VMDK_MAX_CAPACITY_SECTORS)
		return bdev_err(-EFBIG, "%s: size %" PRIu64 " exceeds the VMDK limit",
				path, new_size);
	if (b->info.parent_hint)
		return bdev_err(-ENOTSUP, "%s: a delta disk has its parent's size; "
				"resize the parent and make a new delta", path);
	if (new_size == b->info.size && strcmp(sf, "monolithicSparse"))
		return 0; /* (a monolithicSparse one rewrites its descriptor: a
			     grow cut short after the header left it behind) */
	if (new_size < b->info.size && !(flags & BDEV_RESIZE_SHRINK))
		return bdev_err(-EINVAL, "%s: %" PRIu64 " bytes is smaller than the "
				"disk (%" PRIu64 " bytes); shrinking needs --shrink",
				path, new_size, b->info.size);
	if (!strcmp(sf, "monolithicFlat") || !strcmp(sf, "vmfs") ||
	    !strcmp(sf, "twoGbMaxExtentFlat"))
		return resize_flat(b, path, new_size, flags);
	if (!strcmp(sf, "monolithicSparse"))
		return resize_sparse(b, path, new_size);
	if (!strcmp(sf, "twoGbMaxExtentSparse"))
		return resize_split_sparse(b, path, new_size);
	if (!strcmp(sf, "streamOptimized"))
		return bdev_err(-ENOTSUP, "%s: resizing streamOptimized images is not "
				"supported: the stream is append-only and its tables "
				"are written once at the end; convert to "
				"monolithicSparse, resize, convert back", path);
	if (!strcmp(sf, "vmfsSparse") || !strcmp(sf, "seSparse"))
		return bdev_err(-ENOTSUP, "%s: resizing %s images is not supported: "
				"they are ESXi delta disks, sized by their parent",
				path, sf);
	return bdev_err(-ENOTSUP, "%s: resizing %s images is not supported "
			"(monolithicFlat, vmfs, twoGbMaxExtentFlat, "
			"monolithicSparse and twoGbMaxExtentSparse are)", path, sf);
}
