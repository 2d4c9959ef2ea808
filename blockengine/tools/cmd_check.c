/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_check.c - `vmdk check`: consistency of a VMDK's sparse extents, with
 * qemu-img check's exit codes and output shapes.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char check_help[] =
"Usage: vmdk check [--output=human|json] [-r leaks|all] IMAGE\n"
"\n"
"Check the grain directories and tables of IMAGE's sparse extents: every\n"
"entry inside the file and outside the metadata, primary and redundant\n"
"tables equal, no grain referenced twice, no leaked grains, the\n"
"uncleanShutdown flag, descriptor and header sizes agreeing. Hosted\n"
"sparse (KDMV, also streamOptimized), COWD (vmfsSparse) and seSparse\n"
"extents are checked (seSparse: regions, entries, double references and\n"
"leaks; never repaired); flat extents are not. An image the engine\n"
"refuses to open is still checked, to report why. A raw image has no\n"
"metadata: its check reports that there is nothing to check.\n"
"\n"
"On an image left with uncleanShutdown set, redundant tables that differ\n"
"from the primary ones only in valid entries (the writer was killed\n"
"between writing a table and its copy, so the copy is one flush behind)\n"
"are a warning, not corruption; the primary tables are the image.\n"
"\n"
"Options:\n"
"  --output=FMT  human (default) or json\n"
"  -r leaks      cut leaked grains at the end of a file off\n"
"  -r all        also rewrite redundant grain tables from the primary ones\n"
"                when they differ and the primary ones are sane, and\n"
"                rebuild the tables and footer of a streamOptimized file\n"
"                whose writer was killed between flushes\n"
"  -h, --help    show this help\n"
"\n"
"Repairs open the files read-write with exclusive locks.\n"
"\n"
"Exit status (as qemu-img check): 0 clean, 1 the check could not run,\n"
"2 corruption found, 3 only leaked grains found.\n";

static void print_line(void *opaque, const char *line)
{
	FILE *f = opaque;

	fprintf(f, "%s\n", line);
}

/* The format the engine reads path as, for the JSON report: "vmdk" when it
   refuses to open it (the check then read its extents unopened). */
static void image_format(const char *path, char *out, size_t len)
{
	struct bdev_open_opts o = { .flags = BDEV_O_SHARE | BDEV_O_NO_BACKING };
	struct bdev_info in;
	struct bdev *b;

	snprintf(out, len, "vmdk");
	if (bdev_open(path, &o, &b) < 0)
		return;
	if (bdev_get_info(b, &in) == 0)
		snprintf(out, len, "%s", in.format);
	bdev_close(b);
}

struct lines {
	char **v;
	size_t n;
};

static void keep_line(void *opaque, const char *line)
{
	struct lines *l = opaque;
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

	if (v) {
		l->v = v;
		l->v[l->n++] = strdup(line);
	}
}

int cmd_check(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "output", required_argument, NULL, 'O' },
		{ "repair", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bdev_check_result r;
	struct lines lines = { 0 };
	unsigned repair = 0;
	bool json = false;
	const char *path;
	int c, ret, rc;

	while ((c = getopt_long(argc, argv, "+hr:", lopts, NULL)) != -1) {
		switch (c) {
		case 'O':
			if (tool_parse_output("check", optarg, &json) < 0)
				return 1;
			break;
		case 'r':
			if (!strcmp(optarg, "leaks"))
				repair = BDEV_CHECK_REPAIR_LEAKS;
			else if (!strcmp(optarg, "all"))
				repair = BDEV_CHECK_REPAIR_LEAKS | BDEV_CHECK_REPAIR_ALL;
			else {
				tool_usage_err("check", "-r must be leaks or all");
				return 1;
			}
			break;
		case 'h': fputs(check_help, stdout); return 0;
		default: tool_usage_err("check", "bad option"); return 1;
		}
	}
	if (optind != argc - 1) {
		tool_usage_err("check", "expected IMAGE");
		return 1;
	}
	path = argv[optind];
	ret = bdev_check(path, repair, &r, json ? keep_line : print_line,
			 json ? (void *)&lines : (void *)stdout);
	if (ret < 0) {
		tool_bdev_err(ret, path);
		return 1;
	}
	rc = r.corruptions > r.corruptions_fixed ? 2 :
	     r.leaks > r.leaks_fixed ? 3 : 0;
	if (json) {
		char fmt[32];

		image_format(path, fmt, sizeof(fmt));
		printf("{\n    \"filename\": ");
		json_str(stdout, path);
		printf(",\n    \"format\": ");
		json_str(stdout, fmt);
		printf(",\n    \"check-errors\": 0,\n"
		       "    \"corruptions\": %" PRIu64 ",\n    \"corruptions-fixed\": %" PRIu64
		       ",\n    \"leaks\": %" PRIu64 ",\n    \"leaks-fixed\": %" PRIu64
		       ",\n    \"allocated-clusters\": %" PRIu64
		       ",\n    \"total-clusters\": %" PRIu64 ",\n    \"unclean\": %s"
		       ",\n    \"findings\": [",
		       r.corruptions - r.corruptions_fixed, r.corruptions_fixed,
		       r.leaks - r.leaks_fixed, r.leaks_fixed, r.allocated_clusters,
		       r.total_clusters, r.unclean ? "true" : "false");
		for (size_t i = 0; i < lines.n; i++) {
			printf("%s\n        ", i ? "," : "");
			json_str(stdout, lines.v[i] ? lines.v[i] : "");
			free(lines.v[i]);
		}
		printf("\n    ]\n}\n");
		free(lines.v);
		return rc;
	}
	if (rc == 0)
		printf("No errors were found on the image.\n");
	if (r.corruptions > r.corruptions_fixed)
		printf("\n%" PRIu64 " errors were found on the image.\nData may be "
		       "corrupted, or further writes to the image may corrupt it.\n",
		       r.corruptions - r.corruptions_fixed);
	if (r.leaks > r.leaks_fixed)
		printf("\n%" PRIu64 " leaked grains were found on the image.\nThis "
		       "means waste of disk space, but no harm to data.\n",
		       r.leaks - r.leaks_fixed);
	if (r.total_clusters)
		printf("%" PRIu64 "/%" PRIu64 " = %.2f%% allocated\n",
		       r.allocated_clusters, r.total_clusters,
		       100.0 * (double)r.allocated_clusters / (double)r.total_clusters);
	return rc;
}
