/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ovf.h - libovf: read OVF descriptors and OVF/OVA packages in place.
 *
 * The only public header of libovf (used by the ovf tool, ovffs and mgmt).
 *
 * Conventions
 *  - Functions return 0 (or a non-negative count) on success and -errno on
 *    failure; they never set errno. After a failure, ovf_errmsg() on the same
 *    thread returns a sentence naming the file, the element or offset and
 *    what was expected.
 *  - The model (struct ovf_envelope and what it points to) is read-only and
 *    lives as long as the package or envelope that owns it. Absent optional
 *    strings are NULL; absent numbers are flagged by a has_ field.
 *  - A package may be read from several threads at once; one struct
 *    ovf_stream may be too (it serialises where it must).
 */
#ifndef OVK_OVF_H
#define OVK_OVF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- The descriptor model ------------------------------------------------ */

struct ovf_file {
	char *id, *href;
	bool has_size;
	uint64_t size;        /* ovf:size: stored (compressed) bytes */
	char *compression;    /* "gzip", "identity" or NULL */
	uint64_t chunk_size;  /* ovf:chunkSize, 0 when not chunked */
};

struct ovf_disk {
	char *disk_id, *file_ref, *format, *parent_ref;
	char *capacity_text;   /* ovf:capacity as written ("8", "${size}") */
	char *capacity_units;  /* ovf:capacityAllocationUnits as written */
	bool has_capacity;     /* capacity resolved to bytes */
	uint64_t capacity;     /* bytes */
	bool has_populated_size;
	uint64_t populated_size;
};

struct ovf_network {
	char *name, *description;
};

/* rasd ResourceType values seen in packages. */
enum ovf_resource_type {
	OVF_RT_OTHER = 1, OVF_RT_CPU = 3, OVF_RT_MEMORY = 4, OVF_RT_IDE = 5,
	OVF_RT_SCSI = 6, OVF_RT_ETHERNET = 10, OVF_RT_FLOPPY = 14,
	OVF_RT_CDROM = 15, OVF_RT_DVD = 16, OVF_RT_DISK = 17,
	OVF_RT_STORAGE = 20, OVF_RT_SERIAL = 21, OVF_RT_USB = 23,
	OVF_RT_GRAPHICS = 24, OVF_RT_SOUND = 35,
};

/* One Item, StorageItem or EthernetPortItem of a VirtualHardwareSection. */
struct ovf_item {
	char *element;          /* "Item", "StorageItem", "EthernetPortItem" */
	bool has_resource_type;
	uint32_t resource_type; /* enum ovf_resource_type */
	char *kind;             /* "cpu", "memory", "ide", "scsi", "sata",
				   "nvme", "nic", "disk", "cdrom", "floppy",
				   "serial", "usb", "video", "sound", "other" */
	char *instance_id, *element_name, *description, *resource_subtype;
	char *parent, *address, *address_on_parent, *connection;
	char *host_resource;    /* first rasd:HostResource */
	char *allocation_units; /* as written */
	char *config_name;      /* ovf:configuration */
	bool has_quantity;
	uint64_t virtual_quantity;
	bool has_bytes;         /* memory: VirtualQuantity in bytes */
	uint64_t bytes;
	bool required;          /* ovf:required, default true */
	bool automatic_allocation;
};

struct ovf_property {
	char *key, *type, *value, *label, *description, *qualifiers;
	bool user_configurable;
};

struct ovf_product {
	char *class_id, *instance_id;
	char *product, *vendor, *version, *full_version;
	char *product_url, *vendor_url, *app_url;
	struct ovf_property *props;
	size_t nprops;
};

/* An unknown (usually vendor) section, kept by name. */
struct ovf_other_section {
	char *ns, *name; /* namespace URI and local name */
	bool required;   /* ovf:required, default true */
	char *info;
};

struct ovf_system {
	bool collection;        /* VirtualSystemCollection */
	char *id, *name, *info;
	struct ovf_item *items; /* of the first VirtualHardwareSection */
	size_t nitems;
	char *hw_system_type;   /* vssd:VirtualSystemType */
	bool has_hardware;
	unsigned cpus;          /* 0 if no CPU item */
	uint64_t memory_bytes;  /* 0 if no memory item */
	struct ovf_product *products;
	size_t nproducts;
	char **eulas;           /* EulaSection/License texts */
	size_t neulas;
	bool has_os;
	uint32_t os_id;         /* OperatingSystemSection ovf:id (CIM OsType) */
	char *os_description, *os_version;
	char *annotation;
	struct ovf_other_section *others;
	size_t nothers;
	struct ovf_system *children; /* collection members */
	size_t nchildren;
};

struct ovf_envelope {
	char *version;        /* "0.9", "1.x", "2.x" from the namespace */
	char *version_attr;   /* ovf:version if present */
	char *ns;             /* envelope namespace URI */
	struct ovf_file *files;
	size_t nfiles;
	struct ovf_disk *disks;
	size_t ndisks;
	char *disk_section_info;
	struct ovf_network *networks;
	size_t nnetworks;
	bool has_references, has_disk_section, has_network_section;
	struct ovf_system *content; /* NULL if the envelope has none */
	struct ovf_other_section *others; /* envelope-level unknown sections */
	size_t nothers;
	struct ovf_finding_list *parse_findings; /* problems found parsing */
};

/* ---- Findings (validation and parse problems) ----------------------------- */

enum ovf_severity { OVF_SEV_WARN = 1, OVF_SEV_ERROR = 2 };

struct ovf_finding {
	enum ovf_severity sev;
	char *where; /* the element, file or member: "Disk[@diskId=vmdisk1]" */
	char *what;  /* what is wrong and what was expected */
};

struct ovf_finding_list {
	struct ovf_finding *v;
	size_t n, cap;
};

void ovf_findings_free(struct ovf_finding_list *l);

/*
 * Parse a descriptor held in memory (len bytes); name is used in messages.
 * Refuses DTDs, entities and network access, and documents over 32 MiB.
 */
int ovf_parse_descriptor(const void *buf, size_t len, const char *name,
			 struct ovf_envelope **out);
void ovf_envelope_free(struct ovf_envelope *env);

/* Looks up a File by ovf:id, a Disk by ovf:diskId; NULL when absent. */
const struct ovf_file *ovf_find_file(const struct ovf_envelope *env,
				     const char *id);
const struct ovf_disk *ovf_find_disk(const struct ovf_envelope *env,
				     const char *disk_id);

/*
 * The rule every command applies to a File's ovf:href before touching the
 * file: a relative name inside the package (no leading "/", no "..", no
 * URL). Returns 0, or -EINVAL with ovf_errmsg() saying why.
 */
int ovf_href_check(const char *href);

/* Bytes per unit of an allocation-units string ("byte * 2^30", "MegaBytes",
   NULL = bytes), or 0 if it is not understood. */
uint64_t ovf_units_multiplier(const char *units);

/* ---- Packages: an OVA file, a .ovf file, or a folder ----------------------- */

struct ovf_pkg;
struct ovf_stream;

/* A file of the package: a tar member, or a file beside the descriptor. */
struct ovf_member {
	char *name;
	uint64_t size;
	uint64_t offset; /* OVA: data offset in the (decompressed) archive */
};

int ovf_open(const char *path, struct ovf_pkg **out);
void ovf_close(struct ovf_pkg *p);

const struct ovf_envelope *ovf_pkg_envelope(const struct ovf_pkg *p);
const char *ovf_pkg_path(const struct ovf_pkg *p);
bool ovf_pkg_is_ova(const struct ovf_pkg *p);
bool ovf_pkg_is_gzipped(const struct ovf_pkg *p); /* a gzip'd OVA */
const char *ovf_pkg_descriptor_name(const struct ovf_pkg *p);
const char *ovf_pkg_manifest_name(const struct ovf_pkg *p); /* or NULL */
const char *ovf_pkg_cert_name(const struct ovf_pkg *p);     /* or NULL */
size_t ovf_pkg_member_count(const struct ovf_pkg *p);
const struct ovf_member *ovf_pkg_member(const struct ovf_pkg *p, size_t i);
const struct ovf_member *ovf_pkg_find_member(const struct ovf_pkg *p,
					     const char *name);
/* Warnings found opening the package (tar ordering, skipped members). */
const struct ovf_finding_list *ovf_pkg_warnings(const struct ovf_pkg *p);

/* A member's bytes as stored. */
int ovf_member_open(struct ovf_pkg *p, const char *name,
		    struct ovf_stream **out);
/* A referenced File as the whole, decompressed file (gzip and chunks
   undone), with random access. */
int ovf_file_open(struct ovf_pkg *p, const struct ovf_file *f,
		  struct ovf_stream **out);

/* Read up to len bytes at off: bytes read (short only at the end), -errno. */
ssize_t ovf_stream_pread(struct ovf_stream *s, void *buf, size_t len,
			 uint64_t off);
/* The stream's length; for gzip data this may decode it once. */
int ovf_stream_size(struct ovf_stream *s, uint64_t *size);
/* When the stream is plain bytes of one file: that fd (owned by the stream)
   and the offset of byte 0 in it. -ENOTSUP otherwise. */
int ovf_stream_region(const struct ovf_stream *s, int *fd, uint64_t *base);
void ovf_stream_close(struct ovf_stream *s);

/* ---- Manifest and certificate ---------------------------------------------- */

enum ovf_digest_status {
	OVF_DIGEST_OK,
	OVF_DIGEST_MISMATCH,
	OVF_DIGEST_MISSING,    /* listed in the manifest, not in the package */
	OVF_DIGEST_UNLISTED,   /* in the package, not in the manifest */
	OVF_DIGEST_UNREADABLE, /* could not be read or bad manifest line */
};

struct ovf_digest_entry {
	char *name, *algo, *expected, *actual;
	enum ovf_digest_status status;
};

enum ovf_sig_status { OVF_SIG_NONE, OVF_SIG_OK, OVF_SIG_BAD, OVF_SIG_ERROR };

struct ovf_verify {
	bool has_manifest;
	struct ovf_digest_entry *entries;
	size_t nentries;
	bool digests_ok;          /* every entry OK and none unlisted */
	enum ovf_sig_status sig;
	char *sig_message;        /* why BAD/ERROR, or the algorithm */
	char *cert_subject, *cert_issuer, *cert_not_before, *cert_not_after;
	bool cert_time_valid;     /* now is inside notBefore..notAfter */
	bool cert_self_signed;
};

/* Checks the manifest's digests and the certificate's signature. */
int ovf_verify(struct ovf_pkg *p, struct ovf_verify *out);
void ovf_verify_free(struct ovf_verify *v);

enum ovf_digest_algo { OVF_SHA1, OVF_SHA256, OVF_SHA512 };

/* Parse a digest name ("sha256", "SHA1"); -EINVAL if unknown. */
int ovf_digest_algo_parse(const char *name, enum ovf_digest_algo *out);

/* ---- Validation ----------------------------------------------------------- */

/* Appends every problem of the package to out (warnings and errors):
   the descriptor, that every href is a file inside the package
   (ovf_href_check; never through symlinks), sizes, digests, the signature,
   and each disk's content against ovf:format and ovf:capacity
   (ovf_disk_open_checked). Returns the number of errors, or -errno if
   checking could not run. */
int ovf_validate(struct ovf_pkg *p, struct ovf_finding_list *out);

/*
 * Opens the disk of Disk d through the block engine (blockengine.h) from s,
 * its File opened with ovf_file_open (s must stay open while the image
 * is), and checks it is what the descriptor declares: a VMDK ovf:format
 * against the image's format and createType, ovf:capacity (with its
 * allocation units) against its virtual size. On a mismatch nothing is
 * opened: errors go to findings and -EINVAL is returned. A format that is
 * not a VMDK one cannot be checked: a warning, and the image is opened.
 * ovf_validate makes the same check for every Disk.
 */
struct bdev;
struct bdev_open_opts;
int ovf_disk_open_checked(struct ovf_pkg *p, const struct ovf_disk *d,
			  struct ovf_stream *s, const struct bdev_open_opts *opts,
			  struct bdev **out, struct ovf_finding_list *findings);

/* ---- Rendering (shared by the ovf tool and ovffs) ------------------------- */

/* Malloc'd text; NULL on out of memory. v may be NULL (not verified). */
char *ovf_info_json(struct ovf_pkg *p, const struct ovf_verify *v);
char *ovf_info_text(struct ovf_pkg *p, const struct ovf_verify *v);
char *ovf_verify_text(const struct ovf_verify *v);
char *ovf_system_hardware_json(const struct ovf_envelope *env,
			       const struct ovf_system *s);
char *ovf_system_product_json(const struct ovf_system *s);
char *ovf_system_summary(const struct ovf_envelope *env,
			 const struct ovf_system *s);

/* ---- Pack and unpack ------------------------------------------------------ */

/*
 * Write an OVA at out_path from a folder or a .ovf file: descriptor first,
 * then a fresh manifest with algo, then the referenced files in References
 * order. An existing .mf/.cert beside the descriptor is not copied. The
 * archive is built at out_path.tmp-XXXXXXXX and renamed to out_path when
 * complete; an existing out_path is never replaced (-EEXIST), and on
 * failure nothing is left.
 */
int ovf_pack(const char *src, const char *out_path, enum ovf_digest_algo algo,
	     struct ovf_finding_list *warnings);
/*
 * The tar header block(s) of a regular-file member named name holding size
 * bytes, written to buf (cap bytes): one ustar block, preceded by a pax
 * extended header when the name is over 100 bytes or the size over 11
 * octal digits. Returns their length (a multiple of 512) or -errno
 * (-ENOSPC when cap is too small; OVF_TAR_HEADER_MAX always suffices for
 * names up to 4096 bytes). The data follows, padded with zeros to 512.
 */
#define OVF_TAR_HEADER_MAX (512 + 5120 + 512)
ssize_t ovf_tar_header(void *buf, size_t cap, const char *name, uint64_t size,
		       int64_t mtime);
/*
 * As ovf_tar_header, but a size over 11 octal digits goes only into the
 * ustar block's GNU base-256 size field (no pax record), so the length
 * depends on the name alone: for a member whose header's place is kept
 * before its size is known.
 */
ssize_t ovf_tar_header_fixed(void *buf, size_t cap, const char *name,
			     uint64_t size, int64_t mtime);

/*
 * Rename from to to without ever replacing an existing to (-EEXIST then):
 * how ovf_pack and `ovf create` publish an archive built under a
 * temporary name. Falls back to link + unlink where the file system lacks
 * RENAME_NOREPLACE. Returns 0 or -errno.
 */
int ovf_rename_noreplace(const char *from, const char *to);

/*
 * Extract every member of the package into dir, a new folder (-EEXIST if
 * it exists) unless flags has OVF_UNPACK_OVERWRITE: then an existing
 * folder is used and files in it replaced (unlinked and created anew).
 * Member paths are resolved below dir with no symlink at any level.
 * OVF_UNPACK_NO_DISKS leaves out the files (and chunks) that Disks
 * reference, for a caller that puts the disks elsewhere.
 */
enum ovf_unpack_flag {
	OVF_UNPACK_OVERWRITE = 1u << 0,
	OVF_UNPACK_NO_DISKS = 1u << 1,
};
int ovf_unpack(struct ovf_pkg *p, const char *dir, unsigned flags);

const char *ovf_errmsg(void);

#ifdef __cplusplus
}
#endif
#endif /* OVK_OVF_H */
