/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_checkpoint.c - `vmdk checkpoint create|delete|list|changed`: the
 * engine's changed-block tracking (named checkpoints kept in IMAGE-ctk.ovk)
 * for an image that is not open elsewhere.
 */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "common.h"
#include "info_json.h"

static const char checkpoint_help[] =
"Usage: vmdk checkpoint create IMAGE NAME\n"
"       vmdk checkpoint delete IMAGE NAME\n"
"       vmdk checkpoint list [--output=human|json] IMAGE\n"
"       vmdk checkpoint changed [--output=human|json] IMAGE NAME\n"
"\n"
"Changed-block tracking for incremental backup. A checkpoint marks a point\n"
"in the life of the disk; from then on the engine records, at 64 KiB\n"
"granularity, every range that is written, discarded or zeroed, in\n"
"IMAGE-ctk.ovk beside the image (it follows the disk across snapshots and\n"
"commits). The record may over-report after a crash, never under-report.\n"
"Tracking starts with the first checkpoint; at most 30 exist at once.\n"
"\n"
"  create   start checkpoint NAME now\n"
"  delete   drop checkpoint NAME (what changed since it counts for the one\n"
"           before)\n"
"  list     the checkpoints, oldest first\n"
"  changed  the ranges changed since checkpoint NAME, as 'OFFSET LENGTH'\n"
"           lines in bytes (or a JSON array of {\"offset\", \"length\"})\n"
"\n"
"The image must not be open for writing elsewhere: these open it\n"
"read-write and take its lock. Served disks (pvblk) show the same\n"
"checkpoints to NBD clients as qemu:dirty-bitmap:NAME.\n"
"\n"
"On a Ceph RBD image (rbd:POOL/IMAGE...) RBD keeps the record: checkpoint\n"
"NAME is the image's snapshot ovk-ckpt-NAME (readable as\n"
"rbd:POOL/IMAGE@ovk-ckpt-NAME), and changed ranges come from RBD's diff,\n"
"exact to the byte where the object (4 MiB) existed at the checkpoint,\n"
"the object from its start where it is new; writes by any client count.\n"
"NAME may not hold '/', '@' or ':'. list and changed open the image\n"
"read-only, so they work while another program writes it.\n"
"\n"
"Options:\n"
"  --output=FMT  'human' (default) or 'json'\n"
"  -h, --help    show this help\n"
"\n"
"Examples:\n"
"  vmdk checkpoint create disk.vmdk monday\n"
"  vmdk checkpoint changed disk.vmdk monday\n"
"  vmdk checkpoint create rbd:rbd/vm1:conf=/etc/ceph/ceph.conf monday\n"
"  nbdinfo --map=qemu:dirty-bitmap:monday 'nbd+unix:///?socket=disk.nbd'\n"
"\n"
"Exit status: 0 on success, 1 on error.\n";

static int do_list(struct bdev *b, bool json)
{
	const char *name;
	unsigned i;

	if (json)
		fputs("[", stdout);
	for (i = 0; bdev_checkpoint_get(b, i, &name) == 0; i++) {
		if (json) {
			fputs(i ? ", " : "", stdout);
			json_str(stdout, name);
		} else
			printf("%s\n", name);
	}
	if (json)
		fputs("]\n", stdout);
	return 0;
}

static int do_changed(struct bdev *b, const char *name, bool json)
{
	struct bdev_info in;
	uint64_t off = 0, n;
	bool first = true;
	int ret;

	bdev_get_info(b, &in);
	if (json)
		fputs("[", stdout);
	while (off < in.size) {
		ret = bdev_changed_status(b, name, off, in.size - off, &n);
		if (ret < 0)
			return ret;
		if (ret == 1) {
			/* runs end on granularity boundaries: join them */
			uint64_t start = off;

			for (;;) {
				uint64_t next;

				off += n;
				if (off >= in.size ||
				    bdev_changed_status(b, name, off,
							in.size - off, &next) != 1)
					break;
				n = next;
			}
			if (json)
				printf("%s{\"offset\": %" PRIu64 ", \"length\": %"
				       PRIu64 "}", first ? "" : ", ", start,
				       off - start);
			else
				printf("%" PRIu64 " %" PRIu64 "\n", start,
				       off - start);
			first = false;
			continue;
		}
		off += n;
	}
	if (json)
		fputs("]\n", stdout);
	return 0;
}

int cmd_checkpoint(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bdev_open_opts oo = { .flags = BDEV_O_RDWR };
	const char *verb;
	bool json = false;
	struct bdev *b;
	int c, ret, want;

	/* getopt permutes: options may stand before or after the verb */
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'O':
			if (tool_parse_output("checkpoint", optarg, &json) < 0)
				return 1;
			break;
		case 'h':
			fputs(checkpoint_help, stdout);
			return 0;
		default:
			tool_usage_err("checkpoint", "bad option");
			return 1;
		}
	}
	if (optind >= argc) {
		tool_usage_err("checkpoint", "expected create, delete, list or "
			       "changed");
		return 1;
	}
	verb = argv[optind++];
	want = !strcmp(verb, "list") ? 1 : 2;
	if (strcmp(verb, "create") && strcmp(verb, "delete") &&
	    strcmp(verb, "list") && strcmp(verb, "changed")) {
		tool_usage_err("checkpoint", "unknown verb '%s' (expected "
			       "create, delete, list or changed)", verb);
		return 1;
	}
	if (argc - optind != want) {
		tool_usage_err("checkpoint", want == 1 ? "expected IMAGE"
						       : "expected IMAGE NAME");
		return 1;
	}
	/* RBD keeps the checkpoints (snapshots): reading them needs no
	   lock, so they can be asked while another program writes */
	if (!strncmp(argv[optind], "rbd:", 4) &&
	    (!strcmp(verb, "list") || !strcmp(verb, "changed")))
		oo.flags = 0;
	ret = bdev_open(argv[optind], &oo, &b);
	if (ret < 0) {
		tool_bdev_err(ret, "checkpoint");
		return 1;
	}
	if (!strcmp(verb, "create"))
		ret = bdev_checkpoint_create(b, argv[optind + 1]);
	else if (!strcmp(verb, "delete"))
		ret = bdev_checkpoint_delete(b, argv[optind + 1]);
	else if (!strcmp(verb, "list"))
		ret = do_list(b, json);
	else
		ret = do_changed(b, argv[optind + 1], json);
	if (ret < 0) {
		tool_bdev_err(ret, "checkpoint");
		bdev_close(b);
		return 1;
	}
	ret = bdev_close(b);
	if (ret < 0) {
		tool_bdev_err(ret, "checkpoint");
		return 1;
	}
	return 0;
}
