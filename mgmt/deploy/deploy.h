/* SPDX-License-Identifier: Apache-2.0 */
/*
 * deploy.h - an OVF folder or OVA archive becomes a VM of the inventory,
 * through the OVF library (ovffs/include/ovf.h) and the engine.
 */
#ifndef OVK_MGMT_DEPLOY_H
#define OVK_MGMT_DEPLOY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inventory.h"

struct deploy_opts {
	const char *package;  /* OVA file, .ovf file or folder */
	const char *name;     /* VM name; NULL = the VirtualSystem's */
	bool allow_unverified; /* deploy although digests or signature fail */
	const char *kernel, *initrd, *cmdline; /* direct Linux boot */
	/* Called as disk number disk is imported, with its bytes done and
	   its size (from the copy's workers, one call at a time); NULL for
	   none. */
	void (*progress)(void *opaque, unsigned disk, uint64_t done,
			 uint64_t total);
	void *opaque;
};

/*
 * Read the package's first VirtualSystem (CPUs, memory, disks, OS),
 * verify its manifest and certificate, import every disk into
 * STORAGE/ID/diskN.vmdk (monolithicSparse, writable, the package left as
 * it is) and add the VM to inv, powered off. On failure nothing is left
 * behind and err names the package, the part and the cause.
 */
int deploy_package(struct inventory *inv, const char *storage_dir,
		   const struct deploy_opts *o, struct vm **out, char *err,
		   size_t errlen);

/* Delete the disks deploy_package imported for vm (STORAGE/ID/). */
void deploy_remove_disks(const char *storage_dir, const struct vm *vm);

/*
 * Write vm (powered off) as an OVF package at out (OVA when it ends in
 * .ova, else a folder) with the ovf tool at ovf_tool: its CPUs, memory,
 * OS description and disks (converted to streamOptimized, with a SHA256
 * manifest). out must not exist; on failure nothing is left there.
 */
int export_vm(const char *ovf_tool, const struct vm *vm, const char *out,
	      char *err, size_t errlen);

#endif /* OVK_MGMT_DEPLOY_H */
