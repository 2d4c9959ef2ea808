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
	/* Write the tables, sync, free; on failure also delete the files. */
	int (*finish)(struct bdev_writer *w);
	/* Delete the files created, free. */
	void (*abort)(struct bdev_writer *w);
};

/* Create the VMDK image at path (o already validated) and a writer for it. */
int vmdk_writer_new(const char *path, const struct bdev_create_opts *o,
		    struct bdev_writer **out);

/* Create path with O_EXCL; -errno with a message naming it. */
int create_excl(const char *path, int *fd);
/* pwrite all of buf at off; -errno with a message naming name. */
int write_all_at(int fd, const char *name, const void *buf, size_t len,
		 uint64_t off);

#endif
