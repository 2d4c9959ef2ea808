/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ctk.c - changed-block tracking: named checkpoints of a disk and the map
 * of what changed since each, kept in a sidecar file next to the top
 * layer (IMAGE-ctk.ovk). The map follows the handle, not a layer: a
 * snapshot renames the file next to its child.
 *
 * Each checkpoint owns a bitmap (one bit per granularity bytes) of what
 * changed from its creation until the next checkpoint's; the newest one's
 * is the active map that writes mark. "Changed since X" is the OR of X's
 * map and every later one. Deleting a checkpoint ORs its map into the
 * one before.
 *
 * Crash safety (never under-report): the maps are a shared mapping of the
 * file, and a write's bits are set in the active map before the write is
 * queued, so a process killed at any point leaves them in the page cache,
 * hence in the file.
 * The header says "in use" with the boot id while the disk is open for
 * writing; an open that finds "in use" from another boot (power loss,
 * kernel crash: the page cache was lost) sets every bit of the active map,
 * so every checkpoint reports everything changed. A clean close syncs the
 * maps and marks the file clean. The file format is in
 * docs/ARCHITECTURE.md.
 *
 * A raw disk on a source that tracks changes itself (bsrc_ops.track: an
 * RBD image, whose checkpoints are snapshots) has no sidecar: the public
 * calls below check their arguments and hand it to the source.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define CTK_SUFFIX "-ctk.ovk"
#define CTK_MAGIC "OVKCTK1\n"
#define CTK_VERSION 1u
#define CTK_HDR_BYTES 4096u
#define CTK_MAPS_AT (2u * CTK_HDR_BYTES)   /* two header copies first */
#define CTK_MAX 30u                         /* checkpoints (map slots) */
#define CTK_NAME_MAX 104u                   /* with the NUL */
#define CTK_GRANULARITY (64u << 10)
#define CTK_STATE_CLEAN 0u
#define CTK_STATE_IN_USE 1u

/* One checkpoint in the header: all fields little-endian. */
struct ctk_disk_cp {
	char name[CTK_NAME_MAX]; /* NUL-terminated, NUL-padded */
	uint64_t created;        /* Unix seconds */
	uint64_t seq;            /* creation order */
	uint32_t slot;           /* its map: CTK_MAPS_AT + slot * map_bytes */
	uint32_t reserved;
};
_Static_assert(sizeof(struct ctk_disk_cp) == 128, "checkpoint entry size");
_Static_assert(offsetof(struct ctk_disk_cp, created) == 104, "created");
_Static_assert(offsetof(struct ctk_disk_cp, seq) == 112, "seq");
_Static_assert(offsetof(struct ctk_disk_cp, slot) == 120, "slot");

/* A header copy (at 0 and at 4096; the valid one with the higher
   generation counts). */
struct ctk_disk_header {
	uint8_t magic[8];       /* CTK_MAGIC */
	uint32_t version;       /* 1 */
	uint32_t header_bytes;  /* 4096 */
	uint64_t generation;    /* bumped by every header write */
	uint64_t disk_size;     /* bytes of virtual disk the maps cover */
	uint32_t granularity;   /* bytes per bit, a power of two >= 512 */
	uint32_t state;         /* CTK_STATE_CLEAN or CTK_STATE_IN_USE */
	uint8_t boot_id[16];    /* the boot in which it was marked in use */
	uint64_t map_bytes;     /* bytes per map slot, a multiple of 4096 */
	uint32_t n_checkpoints; /* entries used in cp[], oldest first */
	uint32_t n_slots;       /* CTK_MAX */
	uint64_t next_seq;
	uint8_t reserved[48];
	struct ctk_disk_cp cp[CTK_MAX];
	uint8_t pad[124];
	uint32_t crc;           /* CRC-32 of the 4096 bytes with crc = 0 */
};
_Static_assert(sizeof(struct ctk_disk_header) == CTK_HDR_BYTES, "header");
_Static_assert(offsetof(struct ctk_disk_header, version) == 8, "version");
_Static_assert(offsetof(struct ctk_disk_header, generation) == 16, "gen");
_Static_assert(offsetof(struct ctk_disk_header, disk_size) == 24, "size");
_Static_assert(offsetof(struct ctk_disk_header, granularity) == 32, "gran");
_Static_assert(offsetof(struct ctk_disk_header, state) == 36, "state");
_Static_assert(offsetof(struct ctk_disk_header, boot_id) == 40, "boot");
_Static_assert(offsetof(struct ctk_disk_header, map_bytes) == 56, "map");
_Static_assert(offsetof(struct ctk_disk_header, n_checkpoints) == 64, "n");
_Static_assert(offsetof(struct ctk_disk_header, n_slots) == 68, "slots");
_Static_assert(offsetof(struct ctk_disk_header, next_seq) == 72, "seq");
_Static_assert(offsetof(struct ctk_disk_header, cp) == 128, "cp");
_Static_assert(offsetof(struct ctk_disk_header, crc) == 4092, "crc");

/* The maps are used in place in the shared mapping of the file, whose
   words are little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "the change map is used in place as little-endian words");

struct ctk_cp {
	char *name;
	uint64_t created, seq;
	uint32_t slot;
	uint64_t *map; /* its slot in the mapping */
};

struct ctk {
	pthread_mutex_t mu;  /* everything below */
	int fd;
	uint64_t *mem;       /* the map slots, mapped shared (or NULL) */
	size_t mem_len;
	uint64_t *lost_copy; /* read-only open after a machine crash: the
				active map, all ones, in memory */
	char *path;
	bool writable;
	uint64_t disk_size;
	uint32_t gran;
	unsigned shift;
	uint64_t words, map_bytes;
	uint64_t hgen, next_seq;
	uint8_t boot_id[16];
	unsigned n;
	struct ctk_cp cp[CTK_MAX];
	atomic_uint_fast64_t gen; /* bumped by checkpoint create/delete */
};

/* The sidecar's path for an image path (malloc'd). */
static char *ctk_path_for(const char *image)
{
	size_t n = strlen(image);
	char *p = malloc(n + sizeof(CTK_SUFFIX));

	if (p) {
		memcpy(p, image, n);
		memcpy(p + n, CTK_SUFFIX, sizeof(CTK_SUFFIX));
	}
	return p;
}

/* This boot's id (/proc/sys/kernel/random/boot_id), or zeros. */
static void ctk_boot_id(uint8_t out[16])
{
	char s[64] = { 0 };
	unsigned k = 0;
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);

	memset(out, 0, 16);
	if (fd < 0)
		return;
	if (read(fd, s, sizeof(s) - 1) > 0) {
		for (char *c = s; *c && k < 32; c++) {
			int v = *c >= '0' && *c <= '9' ? *c - '0' :
				*c >= 'a' && *c <= 'f' ? *c - 'a' + 10 : -1;
			if (v < 0)
				continue;
			out[k / 2] |= (uint8_t)(k % 2 ? v : v << 4);
			k++;
		}
	}
	close(fd);
}

static int ctk_pwrite(struct ctk *c, const void *buf, size_t len,
		      uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(c->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return bdev_err(n < 0 ? -errno : -EIO, "%s: write at "
					"offset %" PRIu64 " failed: %s", c->path,
					off, n < 0 ? strerror(errno) : "short");
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int ctk_sync(struct ctk *c)
{
	if (fdatasync(c->fd) < 0)
		return bdev_err(-errno, "%s: fdatasync failed: %s", c->path,
				strerror(errno));
	return 0;
}

static uint64_t ctk_slot_off(const struct ctk *c, uint32_t slot)
{
	return CTK_MAPS_AT + (uint64_t)slot * c->map_bytes;
}

/* Writes the next header copy (the other place), state as given; not
   synced. Caller holds mu (or owns c alone). */
static int ctk_write_header(struct ctk *c, uint32_t state)
{
	struct ctk_disk_header *h = calloc(1, sizeof(*h));
	int ret;

	if (!h)
		return bdev_err(-ENOMEM, "%s: out of memory", c->path);
	memcpy(h->magic, CTK_MAGIC, 8);
	h->version = htole32(CTK_VERSION);
	h->header_bytes = htole32(CTK_HDR_BYTES);
	h->generation = htole64(++c->hgen);
	h->disk_size = htole64(c->disk_size);
	h->granularity = htole32(c->gran);
	h->state = htole32(state);
	memcpy(h->boot_id, c->boot_id, 16);
	h->map_bytes = htole64(c->map_bytes);
	h->n_checkpoints = htole32(c->n);
	h->n_slots = htole32(CTK_MAX);
	h->next_seq = htole64(c->next_seq);
	for (unsigned i = 0; i < c->n; i++) {
		snprintf(h->cp[i].name, CTK_NAME_MAX, "%s", c->cp[i].name);
		h->cp[i].created = htole64(c->cp[i].created);
		h->cp[i].seq = htole64(c->cp[i].seq);
		h->cp[i].slot = htole32(c->cp[i].slot);
	}
	h->crc = htole32(libdeflate_crc32(0, h, CTK_HDR_BYTES));
	ret = ctk_pwrite(c, h, CTK_HDR_BYTES, (c->hgen % 2) * CTK_HDR_BYTES);
	free(h);
	return ret;
}

/* Checks one header copy; 0 when it can be used. */
static int ctk_header_valid(struct ctk_disk_header *h, uint64_t disk_size)
{
	uint32_t crc = le32toh(h->crc);

	h->crc = 0;
	if (memcmp(h->magic, CTK_MAGIC, 8) != 0 ||
	    libdeflate_crc32(0, h, CTK_HDR_BYTES) != crc ||
	    le32toh(h->version) != CTK_VERSION ||
	    le32toh(h->header_bytes) != CTK_HDR_BYTES ||
	    le32toh(h->n_slots) != CTK_MAX ||
	    le32toh(h->n_checkpoints) > CTK_MAX)
		return -1;
	uint32_t g = le32toh(h->granularity);
	if (g < 512 || (g & (g - 1)) || le64toh(h->disk_size) != disk_size)
		return -1;
	uint64_t words = ((disk_size + g - 1) / g + 63) / 64;
	if (le64toh(h->map_bytes) < words * 8 ||
	    le64toh(h->map_bytes) % 4096 || le64toh(h->map_bytes) > (1ull << 36))
		return -1;
	return 0;
}

static void ctk_free(struct ctk *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->n; i++)
		free(c->cp[i].name);
	if (c->mem)
		munmap(c->mem, c->mem_len);
	free(c->lost_copy);
	if (c->fd >= 0)
		close(c->fd);
	free(c->path);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static struct ctk *ctk_alloc(const char *path, uint64_t disk_size,
			     uint32_t gran)
{
	struct ctk *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = -1;
	pthread_mutex_init(&c->mu, NULL);
	c->path = strdup(path);
	c->disk_size = disk_size;
	c->gran = gran;
	c->shift = (unsigned)__builtin_ctz(gran);
	c->words = ((disk_size + gran - 1) / gran + 63) / 64;
	if (!c->words)
		c->words = 1;
	c->map_bytes = (c->words * 8 + 4095) / 4096 * 4096;
	atomic_store(&c->gen, 1);
	ctk_boot_id(c->boot_id);
	if (!c->path) {
		ctk_free(c);
		return NULL;
	}
	return c;
}

/* Maps the slots of c's file shared (growing a writable file to hold all
   of them; sparse until a checkpoint reserves its slot). */
static int ctk_map(struct ctk *c)
{
	uint64_t need = CTK_MAPS_AT + CTK_MAX * c->map_bytes;
	struct stat st;
	void *m;

	if (fstat(c->fd, &st) < 0)
		return bdev_err(-errno, "%s: %s", c->path, strerror(errno));
	if ((uint64_t)st.st_size < need) {
		if (!c->writable)
			return bdev_err(-EIO, "%s: %" PRIu64 " bytes, the maps need "
					"%" PRIu64, c->path, (uint64_t)st.st_size,
					need);
		if (ftruncate(c->fd, (off_t)need) < 0)
			return bdev_err(-errno, "%s: cannot grow to %" PRIu64
					" bytes: %s", c->path, need,
					strerror(errno));
	}
	c->mem_len = (size_t)(need - CTK_MAPS_AT);
	m = mmap(NULL, c->mem_len, PROT_READ | (c->writable ? PROT_WRITE : 0),
		 MAP_SHARED, c->fd, CTK_MAPS_AT);
	if (m == MAP_FAILED)
		return bdev_err(-errno, "%s: cannot map the change maps: %s",
				c->path, strerror(errno));
	c->mem = m;
	return 0;
}

/* The map of slot (in the mapping). */
static uint64_t *ctk_slot_map(const struct ctk *c, uint32_t slot)
{
	return c->mem + (uint64_t)slot * c->map_bytes / 8;
}

/* See internal.h. A raw disk has one layer and no snapshots, so its
   source does not change while b is open. */
struct bsrc *ctk_track_source(const struct bdev *b)
{
	struct bsrc *s;

	if (!b || b->fmt != &bdev_format_raw)
		return NULL;
	s = raw_source(b);
	return s && s->ops->track ? s : NULL;
}

/* Loads the sidecar of b's top layer, if there is one; see internal.h. */
int ctk_open(struct bdev *b)
{
	struct ctk_disk_header *h[2] = { NULL, NULL }, *use = NULL;
	char *path = ctk_path_for(b->filename);
	struct ctk *c = NULL;
	bool writable = !b->info.read_only, lost;
	int fd, ret = 0;

	if (!path)
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	if (ctk_track_source(b)) {
		free(path);
		return 0;
	}
	fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0) {
		ret = errno == ENOENT ? 0 : bdev_err(-errno, "%s: cannot open "
						     "the change map: %s", path,
						     strerror(errno));
		free(path);
		return ret;
	}
	for (int i = 0; i < 2; i++) {
		h[i] = malloc(CTK_HDR_BYTES);
		if (!h[i] || pread(fd, h[i], CTK_HDR_BYTES,
				   (off_t)i * CTK_HDR_BYTES) != CTK_HDR_BYTES ||
		    ctk_header_valid(h[i], b->info.size) < 0)
			continue;
		if (!use || le64toh(h[i]->generation) > le64toh(use->generation))
			use = h[i];
	}
	if (!use) {
		ret = bdev_err(-EINVAL, "%s: no valid header (bad magic, CRC, "
			       "or a disk size other than %" PRIu64 "): the "
			       "change map cannot be trusted; delete it to "
			       "start tracking anew", path, b->info.size);
		goto out;
	}
	c = ctk_alloc(path, b->info.size, le32toh(use->granularity));
	if (!c) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", path);
		goto out;
	}
	c->fd = fd;
	fd = -1;
	c->writable = writable;
	c->map_bytes = le64toh(use->map_bytes);
	c->hgen = le64toh(use->generation);
	c->next_seq = le64toh(use->next_seq);
	ret = ctk_map(c);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < le32toh(use->n_checkpoints); i++) {
		struct ctk_disk_cp *d = &use->cp[i];
		struct ctk_cp *p = &c->cp[c->n];
		p->slot = le32toh(d->slot);
		p->created = le64toh(d->created);
		p->seq = le64toh(d->seq);
		p->name = strndup(d->name, CTK_NAME_MAX - 1);
		if (!p->name || p->slot >= CTK_MAX) {
			free(p->name);
			ret = p->slot >= CTK_MAX ?
			      bdev_err(-EINVAL, "%s: checkpoint %u names map "
				       "slot %u, expected below %u", path, i,
				       p->slot, CTK_MAX) :
			      bdev_err(-ENOMEM, "%s: out of memory", path);
			goto out;
		}
		p->map = ctk_slot_map(c, p->slot);
		c->n++;
	}
	/* in use by a process of another boot: writes it acknowledged may be
	   on disk while their bits were only in a lost page cache */
	lost = le32toh(use->state) == CTK_STATE_IN_USE &&
	       memcmp(use->boot_id, c->boot_id, 16) != 0;
	if (lost && c->n) {
		struct ctk_cp *a = &c->cp[c->n - 1];
		if (writable) {
			memset(a->map, 0xff, c->words * 8);
		} else {
			/* read-only: a private copy that says the same */
			a->map = malloc(c->words * 8);
			if (!a->map) {
				ret = bdev_err(-ENOMEM, "%s: out of memory", path);
				goto out;
			}
			memset(a->map, 0xff, c->words * 8);
			c->lost_copy = a->map;
		}
	}
	if (writable) {
		ret = ctk_write_header(c, CTK_STATE_IN_USE);
		if (ret == 0)
			ret = ctk_sync(c);
		if (ret < 0)
			goto out;
	}
	b->ctk = c;
	c = NULL;
out:
	ctk_free(c);
	if (fd >= 0)
		close(fd);
	free(h[0]);
	free(h[1]);
	free(path);
	return ret;
}

/* Syncs the maps and marks the file clean; frees it. */
int ctk_close(struct bdev *b)
{
	struct ctk *c = b->ctk;
	int ret = 0;

	b->ctk = NULL;
	if (c && c->writable) {
		ret = ctk_sync(c);
		if (ret == 0)
			ret = ctk_write_header(c, CTK_STATE_CLEAN);
		if (ret == 0)
			ret = ctk_sync(c);
	}
	ctk_free(c);
	return ret;
}

/* Sets bits [first, last] of the active map, in the shared mapping: in
   the page cache the moment they are set. Caller holds mu. */
static int ctk_mark(struct ctk *c, uint64_t first, uint64_t last)
{
	uint64_t *map = c->cp[c->n - 1].map, w0 = first / 64, w1 = last / 64;

	for (uint64_t w = w0; w <= w1; w++) {
		uint64_t m = UINT64_MAX;
		if (w == w0)
			m &= UINT64_MAX << (first % 64);
		if (w == w1)
			m &= UINT64_MAX >> (63 - last % 64);
		if ((map[w] & m) != m)
			map[w] |= m;
	}
	return 0;
}

/* Notes that [off, off + len) is about to change; see internal.h. */
int64_t ctk_note_write(struct bdev *b, uint64_t off, uint64_t len)
{
	struct ctk *c = b->ctk;
	int64_t gen;
	int ret = 0;

	if (!len)
		return 0;
	pthread_mutex_lock(&c->mu);
	gen = (int64_t)atomic_load(&c->gen);
	if (c->n)
		ret = ctk_mark(c, off >> c->shift, (off + len - 1) >> c->shift);
	pthread_mutex_unlock(&c->mu);
	if (ret < 0)
		return bdev_err(ret, "%s: cannot record the change at offset %"
				PRIu64 " in the change map: %s", b->filename,
				off, bdev_errmsg());
	return c->n ? gen : 0;
}

/* A noted write ended: counted after checkpoints created meanwhile. */
int ctk_note_done(struct bdev *b, uint64_t gen, uint64_t off, uint64_t len)
{
	struct ctk *c = b->ctk;

	if (!c || atomic_load(&c->gen) == gen)
		return 0;
	return ctk_note_write(b, off, len) < 0 ? -EIO : 0;
}

/* Moves the file next to image_path (a snapshot's child). */
int ctk_follow(struct bdev *b, const char *image_path)
{
	struct ctk *c = b->ctk;
	char *np = ctk_path_for(image_path);
	int ret = 0;

	if (!np)
		return bdev_err(-ENOMEM, "%s: out of memory", image_path);
	pthread_mutex_lock(&c->mu);
	if (rename(c->path, np) < 0) {
		ret = bdev_err(-errno, "%s: cannot move the change map to %s: %s",
			       c->path, np, strerror(errno));
		free(np);
	} else {
		free(c->path);
		c->path = np;
	}
	pthread_mutex_unlock(&c->mu);
	return ret;
}

/* Moves child_path's change map next to parent_path after a commit. */
void ctk_commit_follow(const char *child_path, const char *parent_path)
{
	char *from = ctk_path_for(child_path), *to = ctk_path_for(parent_path);

	if (from && to)
		(void)rename(from, to); /* none: nothing to move */
	free(from);
	free(to);
}

static int ctk_find(const struct ctk *c, const char *name)
{
	for (unsigned i = 0; c && i < c->n; i++)
		if (strcmp(c->cp[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Creates the sidecar for b (no checkpoints yet). */
static int ctk_create_file(struct bdev *b)
{
	char *path = ctk_path_for(b->filename);
	struct ctk *c;
	int ret;

	if (!path)
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	c = ctk_alloc(path, b->info.size, CTK_GRANULARITY);
	free(path);
	if (!c)
		return bdev_err(-ENOMEM, "%s: out of memory", b->filename);
	c->writable = true;
	c->fd = open(c->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (c->fd < 0) {
		ret = bdev_err(-errno, "%s: cannot create the change map: %s",
			       c->path, strerror(errno));
		ctk_free(c);
		return ret;
	}
	ret = ctk_write_header(c, CTK_STATE_IN_USE);
	if (ret == 0)
		ret = ctk_write_header(c, CTK_STATE_IN_USE);
	if (ret == 0)
		ret = ctk_map(c);
	if (ret == 0)
		ret = ctk_sync(c);
	if (ret < 0) {
		unlink(c->path);
		ctk_free(c);
		return ret;
	}
	b->ctk = c;
	return 0;
}

/* Starts a new checkpoint of b; see blockengine.h. */
int bdev_checkpoint_create(struct bdev *b, const char *name)
{
	struct bsrc *ts;
	struct ctk *c;
	struct ctk_cp *p;
	uint32_t slot;
	int ret;

	bdev_err_clear();
	if (!b || !name)
		return bdev_err(-EINVAL, "bdev_checkpoint_create: no image or "
				"name");
	if (!name[0] || strlen(name) >= CTK_NAME_MAX)
		return bdev_err(-EINVAL, "%s: checkpoint name of %zu bytes, "
				"expected 1 to %u", b->filename, strlen(name),
				CTK_NAME_MAX - 1);
	if (b->info.read_only)
		return bdev_err(-EROFS, "%s: image is open read-only; a "
				"checkpoint needs it open for writing",
				b->filename);
	if ((ts = ctk_track_source(b)))
		return ts->ops->track->create(ts, name);
	pthread_rwlock_wrlock(&b->top_lock);
	if (!b->ctk && (ret = ctk_create_file(b)) < 0) {
		pthread_rwlock_unlock(&b->top_lock);
		return ret;
	}
	pthread_rwlock_unlock(&b->top_lock);
	c = b->ctk;
	pthread_mutex_lock(&c->mu);
	if (ctk_find(c, name) >= 0) {
		ret = bdev_err(-EEXIST, "%s: checkpoint %s exists already",
			       c->path, name);
		goto out;
	}
	if (c->n == CTK_MAX) {
		ret = bdev_err(-ENOSPC, "%s: %u checkpoints already, the most "
			       "a change map holds; delete one first", c->path,
			       CTK_MAX);
		goto out;
	}
	for (slot = 0; slot < CTK_MAX; slot++) {
		bool used = false;
		for (unsigned i = 0; i < c->n; i++)
			used |= c->cp[i].slot == slot;
		if (!used)
			break;
	}
	p = &c->cp[c->n];
	p->name = strdup(name);
	if (!p->name) {
		ret = bdev_err(-ENOMEM, "%s: out of memory", c->path);
		goto out;
	}
	/* the slot's blocks reserved, so that setting a bit never needs
	   an allocation the file system could refuse (SIGBUS) */
	if (fallocate(c->fd, 0, (off_t)ctk_slot_off(c, slot),
		      (off_t)c->map_bytes) < 0 && errno != EOPNOTSUPP) {
		ret = bdev_err(-errno, "%s: cannot reserve %" PRIu64 " bytes for "
			       "a map: %s", c->path, c->map_bytes,
			       strerror(errno));
		free(p->name);
		goto out;
	}
	/* zeros before the header names it (stale bits would only
	   over-report) */
	p->map = ctk_slot_map(c, slot);
	memset(p->map, 0, c->words * 8);
	p->slot = slot;
	p->created = (uint64_t)time(NULL);
	p->seq = c->next_seq++;
	c->n++;
	atomic_fetch_add(&c->gen, 1);
	ret = ctk_write_header(c, CTK_STATE_IN_USE);
	if (ret < 0) {
		c->n--;
		free(p->name);
	}
out:
	pthread_mutex_unlock(&c->mu);
	/* durable before it is reported (outside the lock: writers go on) */
	return ret < 0 ? ret : ctk_sync(c);
}

/* Deletes a checkpoint; its changes count for the one before. */
int bdev_checkpoint_delete(struct bdev *b, const char *name)
{
	struct bsrc *ts;
	struct ctk *c;
	int i, ret = 0;

	bdev_err_clear();
	if (!b || !name)
		return bdev_err(-EINVAL, "bdev_checkpoint_delete: no image or "
				"name");
	if ((ts = ctk_track_source(b))) {
		if (b->info.read_only)
			return bdev_err(-EROFS, "%s: image is open read-only",
					b->filename);
		return ts->ops->track->remove(ts, name);
	}
	c = b->ctk;
	if (!c || (i = ctk_find(c, name)) < 0)
		return bdev_err(-ENOENT, "%s: no checkpoint %s", b->filename,
				name);
	if (!c->writable)
		return bdev_err(-EROFS, "%s: image is open read-only", c->path);
	pthread_mutex_lock(&c->mu);
	i = ctk_find(c, name);
	if (i < 0) {
		ret = bdev_err(-ENOENT, "%s: no checkpoint %s", b->filename, name);
		goto out;
	}
	if (i > 0) {
		struct ctk_cp *prev = &c->cp[i - 1], *p = &c->cp[i];
		for (uint64_t w = 0; w < c->words; w++)
			prev->map[w] |= p->map[w];
		ret = ctk_sync(c); /* the merge before the header */
		if (ret < 0)
			goto out;
	}
	free(c->cp[i].name);
	memmove(&c->cp[i], &c->cp[i + 1], (c->n - (unsigned)i - 1) *
		sizeof(c->cp[0]));
	c->n--;
	atomic_fetch_add(&c->gen, 1);
	ret = ctk_write_header(c, CTK_STATE_IN_USE);
out:
	pthread_mutex_unlock(&c->mu);
	return ret < 0 ? ret : ctk_sync(c);
}

/* The index-th checkpoint, oldest first; see blockengine.h. */
int bdev_checkpoint_get(struct bdev *b, unsigned index, const char **name)
{
	struct bsrc *ts;
	struct ctk *c;
	int ret = 0;

	bdev_err_clear();
	if (!b || !name)
		return bdev_err(-EINVAL, "bdev_checkpoint_get: no image or "
				"result");
	if ((ts = ctk_track_source(b)))
		return ts->ops->track->get(ts, index, name);
	c = b->ctk;
	if (!c)
		return -ENOENT;
	pthread_mutex_lock(&c->mu);
	if (index >= c->n)
		ret = -ENOENT;
	else
		*name = c->cp[index].name;
	pthread_mutex_unlock(&c->mu);
	return ret;
}

/* The name that opens a checkpoint as the disk was; see blockengine.h. */
int bdev_checkpoint_view(struct bdev *b, const char *name, char *buf,
			 size_t len)
{
	struct bsrc *ts;

	bdev_err_clear();
	if (!b || !name || !buf)
		return bdev_err(-EINVAL, "bdev_checkpoint_view: no image, name "
				"or buffer");
	ts = ctk_track_source(b);
	if (!ts || !ts->ops->track->view_name)
		return bdev_err(-ENOTSUP, "%s: its checkpoints keep only what "
				"changed (a change map), not the disk as it was",
				b->filename);
	return ts->ops->track->view_name(ts, name, buf, len);
}

/* Whether chunk k changed since checkpoint i (OR of maps i..n-1). */
static int ctk_bit(const struct ctk *c, unsigned i, uint64_t k)
{
	for (unsigned j = i; j < c->n; j++)
		if (c->cp[j].map[k / 64] >> (k % 64) & 1)
			return 1;
	return 0;
}

/* The word of chunks 64*w.. changed since checkpoint i. */
static uint64_t ctk_word(const struct ctk *c, unsigned i, uint64_t w)
{
	uint64_t v = 0;

	for (unsigned j = i; j < c->n; j++)
		v |= c->cp[j].map[w];
	return v;
}

/* Whether the first run of a range changed since a checkpoint; see
   blockengine.h. */
int bdev_changed_status(struct bdev *b, const char *since, uint64_t offset,
			uint64_t length, uint64_t *pnum)
{
	struct bsrc *ts;
	struct ctk *c;
	uint64_t end, k, kend;
	int i, v;

	bdev_err_clear();
	if (!b || !since || !pnum)
		return bdev_err(-EINVAL, "bdev_changed_status: no image, "
				"checkpoint or result");
	if (!length || offset + length < offset ||
	    offset + length > b->info.size)
		return bdev_err(-EINVAL, "%s: changed status of %" PRIu64
				" bytes at offset %" PRIu64 ", past the end (%"
				PRIu64 " bytes) or empty", b->filename, length,
				offset, b->info.size);
	if ((ts = ctk_track_source(b))) {
		int st = ts->ops->track->changed(ts, since, offset, length,
						 pnum);

		if (st >= 0 && (*pnum == 0 || *pnum > length))
			return bdev_err(-EIO, "%s: change tracking answered a "
					"run of %" PRIu64 " bytes at offset %"
					PRIu64 ", expected 1 to %" PRIu64,
					b->filename, *pnum, offset, length);
		return st;
	}
	c = b->ctk;
	if (!c)
		return bdev_err(-ENOENT, "%s: no checkpoint %s (the disk has "
				"no change map)", b->filename, since);
	pthread_mutex_lock(&c->mu);
	i = ctk_find(c, since);
	if (i < 0) {
		pthread_mutex_unlock(&c->mu);
		return bdev_err(-ENOENT, "%s: no checkpoint %s", c->path, since);
	}
	end = offset + length;
	k = offset >> c->shift;
	kend = (end - 1) >> c->shift; /* last chunk touched */
	v = ctk_bit(c, (unsigned)i, k);
	for (k++; k <= kend;) {
		if (k % 64 == 0 && k + 63 <= kend) {
			uint64_t w = ctk_word(c, (unsigned)i, k / 64);
			if (w == (v ? UINT64_MAX : 0)) {
				k += 64;
				continue;
			}
		}
		if (ctk_bit(c, (unsigned)i, k) != v)
			break;
		k++;
	}
	pthread_mutex_unlock(&c->mu);
	*pnum = (k << c->shift) < end ? (k << c->shift) - offset :
		end - offset;
	return v;
}
