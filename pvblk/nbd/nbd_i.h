/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nbd_i.h - the NBD server's parts: the server (one per --nbd and export;
 * exports sharing a socket hang off its listener), its
 * connections (one thread each), the byte transport under a connection
 * (plain socket, TLS, or a memory buffer for the fuzzers), the option
 * negotiation, the request parser and the meta contexts.
 */
#ifndef OVK_NBD_I_H
#define OVK_NBD_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "nbd_proto.h"
#include "pvblk.h"

#define NBD_MAX_BLOCK (32u << 20)      /* largest READ/WRITE payload */
#define NBD_MAX_OPTION (64u << 10)     /* largest option data we read */
#define NBD_MAX_NAME 4096              /* export and context names */
#define NBD_MAX_CONNS 1024             /* connections served at once */
#define NBD_MAX_INFLIGHT 64            /* requests per connection */
#define NBD_MAX_INFLIGHT_BYTES (64u << 20) /* their buffers, per connection */
#define NBD_POOL_PER_CLASS NBD_MAX_INFLIGHT
#define NBD_MAX_IOV 64                 /* iovecs per reply */
#define NBD_WORKERS 2                  /* threads for offloaded jobs */

struct nbd_conn;

/* What connections answered (struct pvblk_io_stats' counters). A
   connection's own are written by its thread only, with relaxed atomics;
   the control thread reads them under the server's lock. */
struct nbd_counters {
	uint64_t requests, read_bytes, written_bytes, errors;
};

/* Work a connection's thread must not wait for (offload.c): run() on a
   worker, then done() on the connection's thread. */
struct nbd_job {
	struct nbd_job *next;
	struct nbd_conn *c;
	void (*run)(struct nbd_job *j);
	void (*done)(struct nbd_job *j);
};

/* One --nbd listener: what every connection to it negotiates against. */
struct nbd_server {
	struct pvblk_export *export; /* NULL in the fuzzers */
	const char *export_name;     /* "" by default */
	const char *description;     /* NBD_INFO_DESCRIPTION: the image */
	uint64_t size;               /* atomic: grows (nbd_resized) */
	uint32_t min_block, pref_block, max_block;
	uint16_t tx_flags;           /* transmission flags */
	void *tls_creds;             /* tls.c's credentials; NULL: no TLS */

	/* the listener, its accept thread and the connections */
	int listen_fd;
	char *unix_path;             /* to unlink at stop, or NULL */
	int stop_fd;                 /* eventfd: readable once stopping */
	pthread_t accept_thread;
	pthread_mutex_t lock;
	pthread_cond_t conn_gone;
	unsigned nconns;
	struct nbd_conn *conns;      /* the live ones (under lock) */
	struct nbd_counters ended;   /* summed from those that ended */

	/* Several exports on one socket (pvblk --export ...,nbd): each is a
	   server of its own (own connections, counters, workers, stop_fd)
	   without a listener, on the list of the server that listens. A
	   connection negotiates on the listener and moves to the export it
	   picks by name (nbd_conn_switch). NULL group: this export alone. */
	struct nbd_server *group;    /* the listener; itself when listening */
	struct nbd_server *group_next; /* next export on it, under group->lock */
	bool gone;                   /* stopped: offered no more (group->lock);
					freed by the listener's stop */

	/* offload.c: jobs waiting for a worker, and the workers */
	pthread_mutex_t jobs_lock;
	pthread_cond_t jobs_cond;
	struct nbd_job *jobs_head, **jobs_tail;
	pthread_t workers[NBD_WORKERS];
	unsigned nworkers;
	bool jobs_stop;
};

/*
 * How a connection moves bytes. recv and sendv never block: they return a
 * count (recv: 0 at end of stream), -EAGAIN, or -errno. wait blocks until
 * the last call that returned -EAGAIN may make progress, or returns
 * -ESHUTDOWN once the server stops.
 */
struct nbd_io_ops {
	ssize_t (*recv)(struct nbd_conn *c, void *buf, size_t len);
	ssize_t (*sendv)(struct nbd_conn *c, const struct iovec *iov,
			 int iovcnt);
	int (*wait)(struct nbd_conn *c, bool for_write);
	/* replace the transport with TLS (after NBD_OPT_STARTTLS's ACK) */
	int (*starttls)(struct nbd_conn *c);
	/* bytes already decrypted and waiting (TLS), else 0 */
	size_t (*pending)(struct nbd_conn *c);
};

/* meta contexts a connection may select: bit i of meta_selected is context
   i, the fixed ones of nbd_meta_contexts[] first, then one
   qemu:dirty-bitmap:NAME per checkpoint of the image (meta.c) */
#define NBD_META_MAX 32

struct nbd_conn {
	struct nbd_server *srv;
	struct nbd_conn *next, *prev; /* srv->conns, under srv->lock */
	struct nbd_counters st;   /* what this connection answered */
	const struct nbd_io_ops *io;
	void *io_opaque;          /* the transport's own (TLS session, ...) */
	int fd;
	char peer[64];
	struct nbd_server *chosen; /* the export GO/EXPORT_NAME picked, where
				     the connection moves for transmission */
	struct nbd_server *meta_export; /* the export SET_META_CONTEXT named:
				     its selection is dropped at a GO to
				     another */

	/* negotiated */
	bool no_zeroes;
	bool tls;                 /* STARTTLS done */
	bool structured;          /* chunked replies: structured or extended */
	bool extended;            /* NBD_OPT_EXTENDED_HEADERS: 32-byte request
				     and reply headers, 64-bit lengths */
	uint32_t meta_selected;   /* bitmask over the contexts (meta.c) */
	char *meta_bitmap[NBD_META_MAX]; /* selected dirty bitmaps: the
				     checkpoint each names, fixed at SET */

	/* read buffer ahead of the parser */
	uint8_t rbuf[16384];
	size_t rpos, rend;

	/* transmission */
	struct bdev_queue *q;
	unsigned inflight;
	uint64_t inflight_bytes;  /* READ/WRITE buffers held */
	/* freed buffers kept for reuse, per power-of-two size class
	   (4 KiB .. 32 MiB): large mallocs are mmap/munmap each time */
	void *pool[14][NBD_POOL_PER_CLASS];
	unsigned npool[14];
	uint64_t pool_bytes;      /* at most NBD_MAX_INFLIGHT_BYTES */
	bool dead;                /* the transport failed: drop everything */
	bool disc;                /* NBD_CMD_DISC seen */

	/* offload.c: jobs of this connection finished by a worker */
	int done_fd;              /* eventfd: readable when some are */
	pthread_mutex_t done_lock;
	struct nbd_job *done_head;
	unsigned jobs;            /* handed to the workers, not yet done */
};

/* conn.c: whole reads and writes over c->io; 0 or -errno (-ECONNRESET at
   end of stream, -ESHUTDOWN when the server stops). */
int nbd_read_full(struct nbd_conn *c, void *buf, size_t len);
int nbd_write_full(struct nbd_conn *c, const struct iovec *iov, int iovcnt);
/* Reads and drops len bytes. */
int nbd_skip(struct nbd_conn *c, uint64_t len);
/* Bytes readable without waiting (buffered, or pending in TLS). */
size_t nbd_buffered(struct nbd_conn *c);
/* Non-blocking: pull what the transport has into c->rbuf. 0 or -errno. */
int nbd_fill(struct nbd_conn *c);
extern const struct nbd_io_ops nbd_plain_io;
/* Waits until c->fd is ready in one direction; -ESHUTDOWN once the server
   stops (its stop_fd turns readable). */
int nbd_wait_fd(struct nbd_conn *c, bool for_write);

/* handshake.c: fixed newstyle negotiation. Returns 1 when the client
   entered transmission, 0 when it ended the negotiation cleanly, -errno
   when the connection is to be dropped. */
int nbd_negotiate(struct nbd_conn *c);
/* handshake.c: the export of c's listener named name (len bytes, not
   NUL-terminated; "" is the listener's first export), or NULL. The server
   stays valid until the listener stops, which waits for c. */
struct nbd_server *nbd_export_find(struct nbd_conn *c, const uint8_t *name,
				   uint32_t len);

/* request.c: the request header (28 bytes compact, 32 extended), and what
   the server thinks of it before any payload is read. */
struct nbd_request {
	uint16_t flags, type;
	uint64_t cookie, offset;
	uint64_t length;          /* 32 bits unless extended headers */
};
/* The header size c's requests have: NBD_REQUEST_SIZE, or
   NBD_EXTENDED_REQUEST_SIZE once extended headers are negotiated. */
size_t nbd_request_size(const struct nbd_conn *c);
/* Decodes a header of nbd_request_size(c) bytes at buf; -EPROTO when the
   magic is not the one negotiated (drop the connection: the stream cannot
   be resynchronised). */
int nbd_parse_request(const struct nbd_conn *c, const uint8_t *buf,
		      struct nbd_request *r);
/* 0 when r may run on c, else the NBD error to reply with. */
uint32_t nbd_check_request(const struct nbd_conn *c,
			   const struct nbd_request *r);
/* True when r carries a payload of r->length bytes: NBD_CMD_WRITE on a
   compact connection, NBD_CMD_FLAG_PAYLOAD_LEN on an extended one. */
bool nbd_request_has_payload(const struct nbd_conn *c,
			     const struct nbd_request *r);

/* transmission.c: serve requests until the client leaves or the server
   stops; waits for every request in flight. */
int nbd_transmission(struct nbd_conn *c);
/* Frees the buffers c keeps for reuse. */
void nbd_pool_free(struct nbd_conn *c);
uint32_t nbd_errno(int err);

/* meta.c: the meta contexts this server offers. */
struct nbd_meta_context {
	const char *name;
	/* The first run of [off, off + len) of b with one state: its length
	   (1 to len) in *pnum and its descriptor flags in *flags. */
	int (*extent)(struct bdev *b, uint64_t off, uint64_t len,
		      uint64_t *pnum, uint32_t *flags);
};
extern const struct nbd_meta_context nbd_meta_contexts[];
extern const unsigned nbd_meta_count;
/* How many contexts b offers now (the fixed ones, then a dirty bitmap per
   checkpoint), and the name of context i into buf; -ENOENT past the last. */
unsigned nbd_meta_total(struct bdev *b);
int nbd_meta_name(struct bdev *b, unsigned i, char *buf, size_t len);
/* Select the contexts of mask on c (SET_META_CONTEXT): the checkpoint
   names of selected dirty bitmaps are copied, so a later delete of the
   checkpoint fails BLOCK_STATUS rather than answer for another one. */
int nbd_meta_select(struct nbd_conn *c, struct bdev *b, uint32_t mask);
void nbd_meta_clear(struct nbd_conn *c);
/* The first run of [off, off + len) for context i of c (see the table). */
int nbd_meta_extent(struct nbd_conn *c, struct bdev *b, unsigned i,
		    uint64_t off, uint64_t len, uint64_t *pnum,
		    uint32_t *flags);

/* offload.c: the server's workers (started with the first job), and a
   connection's side: nbd_offload hands j to a worker; nbd_offload_reap
   (when done_fd is readable) runs done() of every finished job. */
void nbd_offload_init(struct nbd_server *s);
void nbd_offload_stop(struct nbd_server *s);
int nbd_offload_conn_init(struct nbd_conn *c);
void nbd_offload_conn_fini(struct nbd_conn *c);
void nbd_offload(struct nbd_conn *c, struct nbd_job *j);
void nbd_offload_reap(struct nbd_conn *c);

/* server.c: the ops table protocols.c names */
extern const struct pvblk_protocol pvblk_nbd;

/* tls.c */
/* The server's credentials from an X.509 directory (--tls-creds) or a
   PSK file (--tls-psk): exactly one of them. 0, or -errno with a sentence
   in err naming the file. */
int nbd_tls_load(const char *x509_dir, const char *psk_file, void **creds,
		 char *err, size_t errlen);
void nbd_tls_free(void *creds);
/* NBD_OPT_STARTTLS after its ACK: the TLS handshake on c->fd, then c's
   transport is TLS. */
int nbd_tls_start(struct nbd_conn *c);
/* Ends c's TLS session (best effort close_notify), if any. */
void nbd_tls_end(struct nbd_conn *c);

#endif /* OVK_NBD_I_H */
