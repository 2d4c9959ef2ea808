/* SPDX-License-Identifier: Apache-2.0 */
/* ovf - inspect, validate, create, pack and unpack OVF packages (OVA files, .ovf
 * files, folders). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd_create.h"
#include "ovf.h"
#include "unpack_disks.h"

static void usage(FILE *f)
{
	fputs("usage: ovf info [--output=json|text] [--no-verify] PACKAGE\n"
	      "       ovf validate PACKAGE\n"
	      "       ovf pack [--digest sha1|sha256|sha512] DIR|FILE.ovf OUT.ova\n"
	      "       ovf unpack [--overwrite] [--disks-to rbd:POOL/PREFIX[:conf=PATH]...]\n"
	      "                  PACKAGE DIR\n"
	      "       ovf create --name N --cpus C --memory MIB --disk IMAGE [--disk IMAGE...]\n"
	      "                  [--network NAME...] [--nic-type TYPE] [--controller TYPE]\n"
	      "                  [--os NAME|ID] [--os-description TEXT] [--ovf-version 1|2]\n"
	      "                  OUT.ova|OUT_DIR   (ovf create --help: every option)\n"
	      "PACKAGE is an OVA file, a .ovf file or a folder holding one.\n"
	      "validate exits 0 when valid, 1 when not (one line per finding).\n"
	      "pack and create never replace an existing OUT, and leave none on failure.\n"
	      "unpack makes DIR; --overwrite unpacks into an existing DIR, replacing its files.\n"
	      "--disks-to writes each disk into a new Ceph RBD image PREFIX-DISKID (raw\n"
	      "contents, zeros skipped, any VMDK kind read through the engine) instead of\n"
	      "DIR, printing 'DISKID IMAGE' lines; a failure leaves no image behind.\n",
	      f);
}

/* `ovf info`: systems, hardware, disks, networks, properties, EULA,
   manifest and certificate status. */
static int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "no-verify", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false, verify = true;
	struct ovf_verify v;
	struct ovf_pkg *p;
	char *text;
	int c, r;

	while ((c = getopt_long(argc, argv, "o:nh", opts, NULL)) != -1) {
		if (c == 'o' && !strcmp(optarg, "json"))
			json = true;
		else if (c == 'o' && !strcmp(optarg, "text"))
			json = false;
		else if (c == 'n')
			verify = false;
		else {
			usage(c == 'h' ? stdout : stderr);
			return c == 'h' ? 0 : 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	r = ovf_open(argv[optind], &p);
	if (r < 0) {
		fprintf(stderr, "ovf info: %s\n", ovf_errmsg());
		return 1;
	}
	if (verify && ovf_verify(p, &v) < 0) {
		fprintf(stderr, "ovf info: %s\n", ovf_errmsg());
		verify = false;
	}
	text = json ? ovf_info_json(p, verify ? &v : NULL)
		    : ovf_info_text(p, verify ? &v : NULL);
	if (text)
		fputs(text, stdout);
	free(text);
	if (verify)
		ovf_verify_free(&v);
	ovf_close(p);
	return text ? 0 : 1;
}

/* `ovf validate`: one line per finding; exit 1 if any error. */
static int cmd_validate(int argc, char **argv)
{
	struct ovf_finding_list l = { 0 };
	struct ovf_pkg *p;
	int errors;

	if (argc != 2) {
		usage(stderr);
		return 2;
	}
	if (ovf_open(argv[1], &p) < 0) {
		printf("error: %s\n", ovf_errmsg());
		printf("%s: invalid (cannot be read)\n", argv[1]);
		return 1;
	}
	errors = ovf_validate(p, &l);
	if (errors < 0) {
		printf("error: %s\n", ovf_errmsg());
		ovf_close(p);
		return 1;
	}
	for (size_t i = 0; i < l.n; i++)
		printf("%s: %s: %s\n", l.v[i].sev == OVF_SEV_ERROR ? "error" : "warning",
		       l.v[i].where, l.v[i].what);
	printf("%s: %s (%d error%s, %zu warning%s)\n", argv[1],
	       errors ? "invalid" : "valid", errors, errors == 1 ? "" : "s",
	       l.n - (size_t)errors, l.n - (size_t)errors == 1 ? "" : "s");
	ovf_findings_free(&l);
	ovf_close(p);
	return errors ? 1 : 0;
}

/* `ovf pack`. */
static int cmd_pack(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "digest", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	enum ovf_digest_algo algo = OVF_SHA256;
	struct ovf_finding_list w = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, "d:", opts, NULL)) != -1) {
		if (c != 'd' || ovf_digest_algo_parse(optarg, &algo) < 0) {
			if (c == 'd')
				fprintf(stderr, "ovf pack: %s\n", ovf_errmsg());
			usage(stderr);
			return 2;
		}
	}
	if (optind + 2 != argc) {
		usage(stderr);
		return 2;
	}
	if (ovf_pack(argv[optind], argv[optind + 1], algo, &w) < 0) {
		fprintf(stderr, "ovf pack: %s\n", ovf_errmsg());
		ovf_findings_free(&w);
		return 1;
	}
	for (size_t i = 0; i < w.n; i++)
		fprintf(stderr, "warning: %s: %s\n", w.v[i].where, w.v[i].what);
	ovf_findings_free(&w);
	return 0;
}

/* `ovf unpack`. */
static int cmd_unpack(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "overwrite", no_argument, NULL, 'f' },
		{ "disks-to", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	const char *disks_to = NULL;
	unsigned flags = 0;
	struct ovf_pkg *p;
	struct stat st;
	int c, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'f') {
			flags |= OVF_UNPACK_OVERWRITE;
		} else if (c == 'd') {
			if (!unpack_disks_target_ok(optarg))
				return 2;
			disks_to = optarg;
			flags |= OVF_UNPACK_NO_DISKS;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (optind + 2 != argc) {
		usage(stderr);
		return 2;
	}
	/* before the disks are written, not after */
	if (!(flags & OVF_UNPACK_OVERWRITE) && stat(argv[optind + 1], &st) == 0) {
		fprintf(stderr, "ovf unpack: %s already exists; unpack makes a "
			"new folder (--overwrite unpacks into an existing one)\n",
			argv[optind + 1]);
		return 1;
	}
	if (ovf_open(argv[optind], &p) < 0) {
		fprintf(stderr, "ovf unpack: %s\n", ovf_errmsg());
		return 1;
	}
	if (disks_to && unpack_disks(p, disks_to) < 0) {
		ovf_close(p);
		return 1;
	}
	r = ovf_unpack(p, argv[optind + 1], flags);
	if (r < 0)
		fprintf(stderr, "ovf unpack: %s\n", ovf_errmsg());
	ovf_close(p);
	return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "info"))
		return cmd_info(argc - 1, argv + 1);
	if (!strcmp(argv[1], "validate"))
		return cmd_validate(argc - 1, argv + 1);
	if (!strcmp(argv[1], "pack"))
		return cmd_pack(argc - 1, argv + 1);
	if (!strcmp(argv[1], "unpack"))
		return cmd_unpack(argc - 1, argv + 1);
	if (!strcmp(argv[1], "create"))
		return cmd_create(argc - 1, argv + 1);
	fprintf(stderr, "ovf: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
