/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rbd_i.h - what the RBD source (bsrc_rbd.c) and its change tracking
 * (rbd_track.c) share: librbd's entry points, loaded on first use, and
 * the source's state.
 */
#ifndef OVK_BLOCKENGINE_RBD_I_H
#define OVK_BLOCKENGINE_RBD_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "internal.h"

/*
 * librbd and librados are loaded on first use of an rbd: name, not linked:
 * they pull in some 30 libraries and their static constructors, which
 * every other user of the engine would pay for in start-up time and
 * memory. p_NAME points to NAME once rbd_loaded() returned 0.
 */
#define RBD_FUNCS(X)                                                          \
	X(rados, rados_create) X(rados, rados_conf_read_file)                 \
	X(rados, rados_conf_set) X(rados, rados_connect)                      \
	X(rados, rados_ioctx_create) X(rados, rados_ioctx_destroy)            \
	X(rados, rados_shutdown) X(rbd, rbd_open) X(rbd, rbd_open_read_only)  \
	X(rbd, rbd_close) X(rbd, rbd_lock_acquire) X(rbd, rbd_get_size)       \
	X(rbd, rbd_read) X(rbd, rbd_write) X(rbd, rbd_flush)                  \
	X(rbd, rbd_diff_iterate2) X(rbd, rbd_aio_create_completion)           \
	X(rbd, rbd_aio_readv) X(rbd, rbd_aio_writev) X(rbd, rbd_aio_write)    \
	X(rbd, rbd_aio_get_return_value) X(rbd, rbd_aio_release)              \
	X(rbd, rbd_aio_wait_for_complete) X(rbd, rbd_create)                  \
	X(rbd, rbd_remove) X(rbd, rbd_snap_list) X(rbd, rbd_snap_list_end)    \
	X(rbd, rbd_snap_create) X(rbd, rbd_snap_remove)                       \
	X(rbd, rbd_get_features) X(rbd, rbd_get_flags)

#define RBD_EXTERN(lib, f) extern __typeof__(f) *p_##f;
RBD_FUNCS(RBD_EXTERN)
#undef RBD_EXTERN

/* 0 once librbd is loaded, or -ENOTSUP with a message naming name. */
int rbd_loaded(const char *name);

struct rbd_conn {
	rados_t cluster;
	rados_ioctx_t io;
	rbd_image_t img;
	bool have_cluster, have_io, have_img;
};

/* What changed since one checkpoint within a window of the image, as
   rbd_diff_iterate2 said while the source's write_gen was gen. */
struct rbd_diff_window {
	char *since;        /* NULL: nothing cached */
	uint64_t start, end; /* the window */
	uint64_t gen;
	uint64_t (*ext)[2]; /* changed extents: offset, length; sorted,
			       adjacent ones joined */
	size_t n, cap;
};

/* The checkpoints (snapshots named RBD_CKPT_PREFIX NAME) of the image. */
#define RBD_CKPT_PREFIX "ovk-ckpt-"

struct rbd_src {
	struct rbd_conn c;
	pthread_mutex_t mu;  /* what is below */
	bool listed;         /* names read from the image */
	char **names;        /* checkpoint names without the prefix, oldest
				first */
	unsigned n, cap;
	struct rbd_diff_window win;
};

/* Checkpoints as RBD snapshots (rbd_track.c). */
extern const struct bsrc_track_ops rbd_track_ops;
/* Frees the checkpoint state of r. */
void rbd_track_free(struct rbd_src *r);

#endif /* OVK_BLOCKENGINE_RBD_I_H */
