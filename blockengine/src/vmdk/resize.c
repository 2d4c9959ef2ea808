/*
 * resize.c - bdev_resize: change the virtual size of a VMDK in place.
 *
 * What is supported:
 *  - flat kinds (monolithicFlat, vmfs, twoGbMaxExtentFlat): the last
 *    extent file grows (twoGbMaxExtentFlat: up to 2047 MiB, then new
 *    NAME-fNNN.vmdk files are added), or shrinks within the last extent;
 *  - monolithicSparse: grows while its grain directory (and the redundant
 *    one) have room for the new tables in their last sector; shrinks when
 *    nothing past the new end is allocated.
 * Refused with a reason: streamOptimized, COWD, seSparse, delta disks,
 * twoGbMaxExtentSparse, and shrinking over data without BDEV_RESIZE_SHRINK
 * (flat kinds only; sparse kinds never drop grains).
 *
 * Crash-safe order for sparse growth: new zeroed grain tables appended and
 * synced, then their directory entries (past the old count, unread by
 * every reader), then the descriptor, then the header's capacity. A crash
 * leaves the old size and at worst leaked tables; a rerun finishes.
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
 * text with the sector count of its last extent line set to sectors and
 * extra (may be NULL) inserted after that line: a malloc'd string.
 */
static int desc_resize(const char *text, size_t len, uint64_t sectors,
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
		if (ret < 0)
			return ret;
	} else {
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return bdev_err(-errno, "%s: cannot open: %s", path,
					strerror(errno));
	}
	if (ftruncate(fd, (off_t)len) < 0 || fsync(fd) < 0)
		ret = bdev_err(-errno, "%s: cannot size to %" PRIu64 " bytes: %s",
			       path, len, strerror(errno));
	close(fd);
	return ret;
}

static int resize_flat(struct bdev *b, const char *path, uint64_t new_size,
		       unsigned flags)
{
	struct bdev_extent_info last;
	bool split = !strcmp(b->info.subformat, "twoGbMaxExtentFlat");
	unsigned n = b->info.extent_count;
	uint64_t keep, extra_bytes = 0;
	char *text = NULL, *nt = NULL, *extra = NULL;
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
		/* new extent files next to the last one: NAME-fNNN.vmdk */
		size_t cap = (size_t)(extra_bytes / TWOGB_EXTENT_BYTES + 1) * 300;
		const char *base = strrchr(last.filename, '/');
		char stem[256];
		size_t sl;

		base = base ? base + 1 : last.filename;
		sl = strlen(base);
		if (sl < 8 || sl - 8 >= sizeof(stem) || strcmp(base + sl - 5, ".vmdk")) {
			ret = bdev_err(-ENOTSUP, "%s: extent file %s is not named "
				       "NAME-fNNN.vmdk; cannot add extents", path, base);
			goto out;
		}
		memcpy(stem, base, sl - 8);
		stem[sl - 8] = '\0';
		extra = calloc(1, cap);
		if (!extra) {
			ret = -ENOMEM;
			goto out;
		}
		for (unsigned i = n + 1; extra_bytes; i++) {
			uint64_t eb = extra_bytes < TWOGB_EXTENT_BYTES ? extra_bytes :
				      TWOGB_EXTENT_BYTES;
			char fpath[4096], *dir = strdup(last.filename), *sl2;
			if (!dir) {
				ret = -ENOMEM;
				goto out;
			}
			sl2 = strrchr(dir, '/');
			if (sl2)
				sl2[1] = '\0';
			else
				dir[0] = '\0';
			snprintf(fpath, sizeof(fpath), "%s%s%03u.vmdk", dir, stem, i);
			free(dir);
			ret = size_file(fpath, eb, true);
			if (ret < 0)
				goto out;
			snprintf(extra + strlen(extra), cap - strlen(extra),
				 "RW %" PRIu64 " FLAT \"%s%03u.vmdk\" 0\n", eb / 512,
				 stem, i);
			extra_bytes -= eb;
		}
	}
	if (keep > last.size) {
		ret = size_file(last.filename, last.file_offset + keep, false);
		if (ret < 0)
			goto out;
	}
	ret = desc_resize(text, len, keep / 512, extra, &nt);
	if (ret == -ENOENT)
		ret = bdev_err(-EINVAL, "%s: no extent line found to resize", path);
	if (ret == 0)
		ret = vmdk_replace_file(path, nt);
	/* the descriptor says the new size: only now drop the bytes */
	if (ret == 0 && keep < last.size)
		ret = size_file(last.filename, last.file_offset + keep, false);
out:
	free(text);
	free(nt);
	free(extra);
	return ret;
}

static int resize_sparse(struct bdev *b, const char *path, uint64_t new_size)
{
	struct bdev_extent_info ei;
	struct vmdk_sparse_hdr h;
	uint8_t hb[512];
	uint64_t new_sec = new_size / 512, span, gd_room, at = 0, gt_bytes;
	uint32_t new_entries, old_entries;
	char *text = NULL, *nt = NULL;
	uint8_t *zero = NULL, *dir = NULL;
	int fd, ret;

	ret = bdev_get_extent(b, 0, &ei);
	if (ret < 0)
		return ret;
	if (ei.compressed || strcmp(ei.type, "SPARSE") || strcmp(ei.filename, path))
		return bdev_err(-ENOTSUP, "%s: only a monolithicSparse file can be "
				"resized", path);
	if (new_size < b->info.size) {
		/* never drop grains: everything past the new end must be
		   unallocated */
		uint64_t off = new_size, pnum;
		while (off < b->info.size) {
			int st = bdev_block_status(b, off, b->info.size - off, &pnum);
			if (st < 0)
				return st;
			if (st != BDEV_STATUS_UNALLOCATED)
				return bdev_err(-ENOTSUP, "%s: offset %" PRIu64 " past the "
						"new end holds grains; a sparse image is "
						"only shrunk over unallocated space", path, off);
			off += pnum;
		}
	}
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return bdev_err(-errno, "%s: cannot open: %s", path, strerror(errno));
	if (pread(fd, hb, 512, 0) != 512) {
		ret = bdev_err(-EIO, "%s: cannot read the header", path);
		goto out;
	}
	ret = vmdk_sparse_header_parse(hb, 0, UINT64_MAX / 2, path, &h);
	if (ret < 0)
		goto out;
	span = h.gtes_per_gt * h.grain_sectors;
	old_entries = h.gd_entries;
	new_entries = (uint32_t)((new_sec + span - 1) / span);
	gd_room = (((uint64_t)old_entries * 4 + 511) / 512) * 512 / 4;
	if (new_entries > gd_room) {
		ret = bdev_err(-ENOTSUP, "%s: the grain directory has room for %" PRIu64
			       " tables (%" PRIu64 " bytes of disk); growing past that "
			       "needs the directory moved, which is not supported", path,
			       gd_room, gd_room * span * 512);
		goto out;
	}
	gt_bytes = (uint64_t)h.gtes_per_gt * 4;
	if (new_entries > old_entries) {
		/* zeroed tables for the new span, appended as whole grains */
		uint32_t add = new_entries - old_entries;
		bool rgd = (h.flags & VMDK4_FLAG_RGD) && h.rgd_offset;
		uint64_t bytes = add * gt_bytes * (rgd ? 2 : 1), gb = h.grain_sectors * 512;
		struct stat st;
		bytes = (bytes + gb - 1) / gb * gb;
		if (fstat(fd, &st) < 0) {
			ret = -errno;
			goto out;
		}
		at = ((uint64_t)st.st_size + gb - 1) / gb * gb;
		zero = calloc(1, bytes);
		dir = malloc((size_t)add * 4);
		if (!zero || !dir) {
			ret = -ENOMEM;
			goto out;
		}
		ret = write_all_at(fd, path, zero, bytes, at);
		if (ret == 0 && fdatasync(fd) < 0)
			ret = -errno;
		for (uint32_t i = 0; ret == 0 && i < add; i++)
			vmdk_put32(dir + i * 4, (uint32_t)((at + i * gt_bytes) / 512));
		if (ret == 0)
			ret = write_all_at(fd, path, dir, (size_t)add * 4,
					   h.gd_offset * 512 + old_entries * 4);
		for (uint32_t i = 0; ret == 0 && rgd && i < add; i++)
			vmdk_put32(dir + i * 4, (uint32_t)((at + (add + i) * gt_bytes) / 512));
		if (ret == 0 && rgd)
			ret = write_all_at(fd, path, dir, (size_t)add * 4,
					   h.rgd_offset * 512 + old_entries * 4);
		if (ret == 0 && fdatasync(fd) < 0)
			ret = -errno;
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
		ret = desc_resize(text, dlen, new_sec, NULL, &nt);
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
	}
	vmdk_put64(hb + 12, new_sec);
	ret = write_all_at(fd, path, hb, 512, 0);
	if (ret == 0 && fdatasync(fd) < 0)
		ret = -errno;
out:
	free(text);
	free(nt);
	free(zero);
	free(dir);
	close(fd);
	return ret;
}

/* Change the virtual size of the VMDK at path; see blockengine.h. */
int bdev_resize(const char *path, uint64_t new_size, unsigned flags)
{
	struct bdev_open_opts o = { .flags = BDEV_O_RDWR | BDEV_O_NO_BACKING };
	struct bdev *b;
	const char *sf;
	int ret, r;

	bdev_err_clear();
	if (!path)
		return bdev_err(-EINVAL, "bdev_resize: no path");
	if (!new_size || new_size % 512)
		return bdev_err(-EINVAL, "%s: new size %" PRIu64 " is not a positive "
				"multiple of 512 bytes", path, new_size);
	if (new_size / 512 > VMDK_MAX_CAPACITY_SECTORS)
		return bdev_err(-EFBIG, "%s: size %" PRIu64 " exceeds the VMDK limit",
				path, new_size);
	/* the exclusive locks keep every other writer and reader out */
	ret = bdev_open(path, &o, &b);
	if (ret < 0)
		return ret;
	sf = b->info.subformat ? b->info.subformat : "";
	if (strcmp(b->info.format, "vmdk"))
		ret = bdev_err(-ENOTSUP, "%s: only VMDK images are resized here "
			       "(format %s)", path, b->info.format);
	else if (b->info.parent_hint)
		ret = bdev_err(-ENOTSUP, "%s: a delta disk has its parent's size; "
			       "resize the parent and make a new delta", path);
	else if (new_size == b->info.size)
		ret = 0;
	else if (new_size < b->info.size && !(flags & BDEV_RESIZE_SHRINK))
		ret = bdev_err(-EINVAL, "%s: %" PRIu64 " bytes is smaller than the "
			       "disk (%" PRIu64 " bytes); shrinking needs --shrink",
			       path, new_size, b->info.size);
	else if (!strcmp(sf, "monolithicFlat") || !strcmp(sf, "vmfs") ||
		 !strcmp(sf, "twoGbMaxExtentFlat"))
		ret = resize_flat(b, path, new_size, flags);
	else if (!strcmp(sf, "monolithicSparse"))
		ret = resize_sparse(b, path, new_size);
	else
		ret = bdev_err(-ENOTSUP, "%s: resizing %s images is not supported "
			       "(monolithicFlat, vmfs, twoGbMaxExtentFlat and "
			       "monolithicSparse are)", path, sf);
	if (ret < 0) {
		char why[1024];
		snprintf(why, sizeof(why), "%s", bdev_errmsg());
		bdev_close(b);
		return bdev_err(ret, "%s", why);
	}
	r = bdev_close(b);
	return r;
}
