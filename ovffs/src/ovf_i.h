/* SPDX-License-Identifier: Apache-2.0 */
/* ovf_i.h - libovf internals shared by its source files. */
#ifndef OVK_OVF_I_H
#define OVK_OVF_I_H

#include <pthread.h>
#include <stdarg.h>

#include "ovf.h"

/* ---- Errors and findings -------------------------------------------------- */

/* Records this thread's message and returns err unchanged. */
int ovf_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ovf_err_clear(void);

/* Appends a finding; out of memory drops it silently (best effort). */
void ovf_finding_add(struct ovf_finding_list *l, enum ovf_severity sev,
		     const char *where, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
size_t ovf_findings_errors(const struct ovf_finding_list *l);

/* ---- Small helpers --------------------------------------------------------- */

char *ovf_strdup(const char *s); /* NULL stays NULL */
char *ovf_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable text buffer; on allocation failure it keeps failing and
   ovf_buf_take returns NULL. */
struct ovf_buf {
	char *p;
	size_t len, cap;
	bool oom;
};
void ovf_buf_add(struct ovf_buf *b, const char *s, size_t n);
void ovf_buf_printf(struct ovf_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void ovf_buf_json_str(struct ovf_buf *b, const char *s); /* quoted or null */
char *ovf_buf_take(struct ovf_buf *b);

/* Parses a decimal uint64 filling the whole string (spaces trimmed). */
bool ovf_parse_u64(const char *s, uint64_t *out);

/* A member name is safe: relative, no "..", no empty name. */
bool ovf_name_is_safe(const char *name);

/* ---- Resolving paths below a folder (resolve.c) ----------------------------- */

/* Opens rel below dirfd with no symlink at any level and never leaving it
   (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or the walk below where
   the kernel lacks it). Returns the fd or -errno; never sets a message. */
int ovf_openat_beneath(int dirfd, const char *rel, int flags, mode_t mode);
/* The folder holding rel's last component (*leaf, inside rel): each
   folder on the way opened with O_NOFOLLOW from the one before, created
   first when make is set. Returns a new fd or -errno. */
int ovf_openat_parent(int dirfd, const char *rel, bool make, const char **leaf);
/* The fallback: ovf_openat_parent, then the last component opened with
   O_NOFOLLOW. */
int ovf_openat_walk(int dirfd, const char *rel, int flags, mode_t mode,
		    bool make);
/* A phrase for an error of the two above. */
const char *ovf_beneath_strerror(int err);

/* ---- Streams: random-access byte sources ----------------------------------- */

struct ovf_stream_ops {
	ssize_t (*pread)(struct ovf_stream *s, void *buf, size_t len,
			 uint64_t off);
	int (*size)(struct ovf_stream *s, uint64_t *size); /* NULL: s->size */
	void (*close)(struct ovf_stream *s);
};

struct ovf_stream {
	const struct ovf_stream_ops *ops;
	int refs;
	char *name;     /* for messages */
	uint64_t size;  /* valid when size_known */
	bool size_known;
	int fd;         /* plain region of fd: else -1 */
	uint64_t base;
	void *priv;
};

struct ovf_stream *ovf_stream_ref(struct ovf_stream *s);
/* A read-only view of [off, off+len) of fd (duplicated). */
int ovf_stream_fd(int fd, uint64_t off, uint64_t len, const char *name,
		  struct ovf_stream **out);
/* [off, off+len) of another stream (taken by reference). */
int ovf_stream_sub(struct ovf_stream *parent, uint64_t off, uint64_t len,
		   const char *name, struct ovf_stream **out);
/* The decompressed content of gzip data in src (taken by reference). */
int ovf_stream_gzip(struct ovf_stream *src, const char *name,
		    struct ovf_stream **out);
/* Several streams one after the other (references taken). */
int ovf_stream_concat(struct ovf_stream **parts, size_t n, const char *name,
		      struct ovf_stream **out);
/* Reads exactly len bytes or fails with -EIO naming the stream/offset. */
int ovf_stream_read_full(struct ovf_stream *s, void *buf, size_t len,
			 uint64_t off);
/* Loads a whole stream of at most max bytes into malloc'd memory. */
int ovf_stream_load(struct ovf_stream *s, size_t max, char **buf,
		    size_t *len);

/* ---- Tar ---------------------------------------------------------------------- */

struct ovf_tar_member {
	char *name;
	uint64_t size, offset;
};

/* Lists the regular-file members of a tar in src. Unsafe names, bad
   checksums and truncation are errors; skipped entries are warnings. */
int ovf_tar_list(struct ovf_stream *src, const char *name,
		 struct ovf_tar_member **out, size_t *n,
		 struct ovf_finding_list *warn);

/* ---- Package ------------------------------------------------------------------ */

struct ovf_pkg {
	char *path;
	bool ova, gzipped;
	char *dir;                 /* folder packages: where files are */
	struct ovf_stream *archive;/* OVA: the (decompressed) tar */
	struct ovf_member *members;
	size_t nmembers;
	char *descriptor, *manifest, *cert;
	struct ovf_envelope *env;
	struct ovf_finding_list warnings;
};

/* Names of the files a File is stored as: its href, or its chunks, that
   are listed members (none: *n = 0). An href failing ovf_href_check is
   -EINVAL with its message: one rule for validate, pack and readers. */
int ovf_pkg_file_parts(const struct ovf_pkg *p, const struct ovf_file *f,
		       char ***names, size_t *n);
void ovf_strv_free(char **v, size_t n);
/* Opens a listed file of a folder package for reading: below the folder,
   no symlink at any level, a regular file. Returns the fd or -errno. */
int ovf_pkg_open_fd(const struct ovf_pkg *p, const char *name);

/* ---- Disk contents (disk.c) ------------------------------------------------- */

/* Opens every Disk's file through the engine and appends a finding where
   it is not what ovf:format and ovf:capacity declare. */
void ovf_check_disk_contents(struct ovf_pkg *p, struct ovf_finding_list *out);

#endif /* OVK_OVF_I_H */
