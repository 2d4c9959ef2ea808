/* SPDX-License-Identifier: Apache-2.0 */
/* create_i.h - what the parts of `ovf create` share: cmd_create.c (options,
 * folder output), create_convert.c (disk conversion through the engine),
 * create_descriptor.c (the OVF descriptor) and create_ova.c (OVA output). */
#ifndef OVK_OVF_CREATE_I_H
#define OVK_OVF_CREATE_I_H

#include <stddef.h>
#include <stdint.h>

#define MAX_DISKS 15       /* SCSI units 0-15 without 7 */
#define STREAM_URI "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"

struct disk_job {
	const char *src;
	const char *adapter;   /* VMDK ddb.adapterType */
	char *href;            /* name of the VMDK in the package */
	uint64_t capacity;     /* virtual bytes */
	uint64_t populated;    /* bytes of grains written */
	uint64_t file_size;    /* bytes of the VMDK */
	char sha256[65];       /* its SHA256 in hex, taken as it was written */
};

/* Disk controllers --controller knows: rasd ResourceType and subtype, how
   many disks one takes, the VMDK adapter type of its disks. */
struct ctl_kind {
	const char *name;
	unsigned rt;
	const char *subtype, *label, *adapter;
	int units;   /* disks per controller */
	int ncontrollers;
};

/* What the package describes: the options of one `ovf create`. */
struct vm_spec {
	const char *name;
	unsigned cpus;
	uint64_t memory_mib;
	const char **networks;
	int nnetworks;
	int version; /* 1 or 2 */
	unsigned os_id;
	const char *os_description, *os_vmw;
	const char *nic_subtype;
	const struct ctl_kind *ctl;
};

/* Converts job->src into a streamOptimized VMDK (named job->href) written
   into fd from off on, each byte once, with two workers; fills job's
   capacity, populated and file sizes and its SHA256, digested as the engine
   wrote it. Messages go to stderr; on failure what was written stays (the
   caller removes its file). */
int create_convert_disk(struct disk_job *job, int fd, uint64_t off);

/* The descriptor for the converted disks as malloc'd text (*len bytes), or
   NULL when out of memory. */
char *create_descriptor_text(const struct vm_spec *vm, const struct disk_job *d,
			     int nd, size_t *len);

/* Writes all of buf at off of fd; -errno with a message naming name. */
int create_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
		      const char *name);

/* Converts the disks into an OVA at out, built inside the empty folder
   work and renamed to out when complete; leaves nothing in work. */
int create_build_ova(const char *work, const char *out, const struct vm_spec *vm,
		     struct disk_job *jobs, int nd);

#endif /* OVK_OVF_CREATE_I_H */
