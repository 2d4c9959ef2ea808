/* SPDX-License-Identifier: Apache-2.0 */
/*
 * create.h - private to image creation: the writer every created image is
 * filled through (bdev_create is a writer closed without writes).
 */
#ifndef OVK_BLOCKENGINE_CREATE_H
#define OVK_BLOCKENGINE_CREATE_H

#include "internal.h"

struct bdev_writer {
	uint64_t size;  /* virtual bytes */
	uint64_t grain; /* writes are aligned to this */
	int (*write)(struct bdev_writer *w, uint64_t off, const void *buf,
		     size_t len);
	/* Write the tables, sync the files it made, free; set *length (never
	   NULL) to the bytes of its (first) file; on failure also delete the
	   files it made. */
	int (*finish)(struct bdev_writer *w, uint64_t *length);
	/* Delete the files created, free. */
	void (*abort)(struct bdev_writer *w);
};

/* Where a single-file image goes instead of a file of its own. */
struct writer_target {
	int fd;                      /* the caller's; duplicated */
	uint64_t offset;             /* the image's first byte in fd */
	bdev_write_observer observe; /* may be NULL */
	void *opaque;
};

/*
 * A writer for a new VMDK image (o already checked): with t NULL its files
 * are created from path; with t the one file of a monolithic image is
 * t's region and path only names it in messages and the descriptor.
 */
/* A new RBD image of size bytes named by an rbd: name (bsrc_rbd.c): raw
   contents, written grain by grain. */
int rbd_writer_new(const char *path, uint64_t size, struct bdev_writer **out);
int vmdk_writer_new(const char *path, const struct bdev_create_opts *o,
		    const struct writer_target *t, struct bdev_writer **out);
/* What a VMDK written into a file region may be (vmdk/create.c): fills in
   the default subformat of o, refuses the others with a message. */
int vmdk_region_opts(const char *name, struct bdev_create_opts *o,
		     bool observe);

/*
 * bdev_create, except that path appears whole or not at all, so that a
 * kill -9 in the middle leaves no half-made image to trip over: a
 * single-file image is written into an unnamed file (O_TMPFILE) in path's
 * folder, synced, then linked at path (-EEXIST if something is there).
 * Other images, and filesystems without O_TMPFILE, get bdev_create.
 * The caller syncs the folder.
 */
int create_whole(const char *path, const struct bdev_create_opts *o);

/* Create path with O_EXCL; -errno with a message naming it. */
int create_excl(const char *path, int *fd);
/* pwrite all of buf at off; -errno with a message naming name. */
int write_all_at(int fd, const char *name, const void *buf, size_t len,
		 uint64_t off);

#endif
