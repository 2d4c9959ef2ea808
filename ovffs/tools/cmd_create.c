/* SPDX-License-Identifier: Apache-2.0 */
/* cmd_create.c - `ovf create`: build an OVF package (OVA or folder) around
 * disk images: the options and their tables of known guest OSes, NIC models
 * and controllers, and the folder output. Each disk (raw or any VMDK) is
 * converted into a streamOptimized VMDK (create_convert.c), the descriptor
 * (create_descriptor.c) describes one virtual system, and a SHA256 manifest
 * covers the descriptor and the disks; an OVA is assembled by
 * create_ova.c. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "blockengine.h"
#include "cmd_create.h"
#include "create_i.h"
#include "ovf.h"

/* Guest kinds --os knows: the CIM OsType (CIM_OperatingSystem.OSType) that
   OperatingSystemSection/@ovf:id carries, its CIM description, and the
   VMware guest id vSphere reads from vmw:osType (NULL: none that fits every
   release of that OS). */
struct os_kind {
	const char *name;
	unsigned cim;
	const char *description, *vmw;
};

static const struct os_kind os_kinds[] = {
	{ "other", 1, "Other", "otherGuest" },
	{ "other-64", 102, "Other 64-Bit", "otherGuest64" },
	{ "linux", 36, "LINUX", "otherLinuxGuest" },
	{ "linux-64", 101, "Linux 64-Bit", "otherLinux64Guest" },
	{ "linux-2.6", 99, "Linux 2.6.x", "other26xLinuxGuest" },
	{ "linux-2.6-64", 100, "Linux 2.6.x 64-Bit", "other26xLinux64Guest" },
	{ "rhel", 79, "RedHat Enterprise Linux", NULL },
	{ "rhel-64", 80, "RedHat Enterprise Linux 64-Bit", NULL },
	{ "centos-64", 107, "CentOS 64-bit", "centos64Guest" },
	{ "oracle-linux-64", 109, "Oracle Linux 64-bit", "oracleLinux64Guest" },
	{ "sles-64", 85, "SLES 64-Bit", NULL },
	{ "ubuntu", 93, "Ubuntu", "ubuntuGuest" },
	{ "ubuntu-64", 94, "Ubuntu 64-Bit", "ubuntu64Guest" },
	{ "debian", 95, "Debian", NULL },
	{ "debian-64", 96, "Debian 64-Bit", NULL },
	{ "freebsd", 42, "FreeBSD", "freebsdGuest" },
	{ "freebsd-64", 78, "FreeBSD 64-Bit", "freebsd64Guest" },
	{ "solaris-64", 81, "Solaris 64-Bit", NULL },
	{ "windows-7", 105, "Microsoft Windows 7", "windows7Guest" },
	{ "windows-8-64", 114, "Microsoft Windows 8 64-bit", "windows8_64Guest" },
	{ "windows-8.1-64", 117, "Microsoft Windows 8.1 64-bit", "windows8_64Guest" },
	{ "windows-10-64", 120, "Microsoft Windows 10 64-bit", "windows9_64Guest" },
	{ "windows-server-2008-r2", 103, "Microsoft Windows Server 2008 R2", "windows7Server64Guest" },
	{ "windows-server-2012", 112, "Microsoft Windows Server 2012", "windows8Server64Guest" },
	{ "windows-server-2012-r2", 115, "Microsoft Windows Server 2012 R2", NULL },
	{ "windows-server-2016", 118, "Microsoft Windows Server 2016", "windows9Server64Guest" },
	{ "esxi", 104, "VMware ESXi", NULL },
};
#define DEFAULT_OS "other-64"

/* NIC models --nic-type knows and the rasd:ResourceSubType producers write. */
static const struct { const char *name, *subtype; } nic_kinds[] = {
	{ "e1000", "E1000" }, { "e1000e", "E1000e" }, { "vmxnet3", "VmxNet3" },
	{ "virtio", "virtio" }, { "pcnet32", "PCNet32" },
};


static const struct ctl_kind ctl_kinds[] = {
	{ "lsilogic", OVF_RT_SCSI, "lsilogic", "SCSI", "lsilogic", 15, 1 },
	{ "lsilogicsas", OVF_RT_SCSI, "lsilogicsas", "SCSI", "lsilogic", 15, 1 },
	{ "pvscsi", OVF_RT_SCSI, "VirtualSCSI", "SCSI", "lsilogic", 15, 1 },
	{ "buslogic", OVF_RT_SCSI, "buslogic", "SCSI", "buslogic", 15, 1 },
	{ "ide", OVF_RT_IDE, NULL, "IDE", "ide", 2, 2 },
	{ "sata", OVF_RT_STORAGE, "vmware.sata.ahci", "SATA", "lsilogic", 15, 1 },
	{ "nvme", OVF_RT_STORAGE, "vmware.nvme.controller", "NVMe", "lsilogic", 15, 1 },
};

/*
 * The controller a disk's VMDK descriptor says it sits on (ddb.adapterType,
 * as VMware and qemu-img write it), or NULL when it says nothing we know or
 * is not a VMDK: what --controller defaults to. A disk that does not open
 * is left for the conversion to report.
 */
static const struct ctl_kind *disk_controller(const char *path)
{
	static const struct { const char *adapter, *ctl; } map[] = {
		{ "ide", "ide" }, { "lsilogic", "lsilogic" },
		{ "buslogic", "buslogic" }, { "legacyESX", "buslogic" },
		{ "lsisas1068", "lsilogicsas" }, { "pvscsi", "pvscsi" },
	};
	const struct ctl_kind *found = NULL;
	const char *k, *v;
	struct bdev *b;

	if (bdev_open(path, NULL, &b) < 0)
		return NULL;
	for (unsigned i = 0; !found && bdev_get_ddb(b, i, &k, &v) == 0; i++) {
		if (strcmp(k, "adapterType"))
			continue;
		for (size_t m = 0; m < sizeof(map) / sizeof(map[0]); m++)
			if (!strcasecmp(v, map[m].adapter))
				for (size_t c = 0; c < sizeof(ctl_kinds) / sizeof(ctl_kinds[0]); c++)
					if (!strcmp(ctl_kinds[c].name, map[m].ctl))
						found = &ctl_kinds[c];
		break; /* the first adapterType is the one that counts */
	}
	bdev_close(b);
	return found;
}

/* Writes the descriptor for the converted disks to path (a folder package)
   and its SHA256 in hex into hex. */
static int write_descriptor(const char *path, const struct vm_spec *vm,
			    const struct disk_job *d, int nd, char *hex)
{
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	size_t len;
	char *text = create_descriptor_text(vm, d, nd, &len);
	int fd, r;

	if (!text) {
		fprintf(stderr, "ovf create: out of memory\n");
		return -ENOMEM;
	}
	EVP_Digest(text, len, dig, &dlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < dlen; i++)
		sprintf(hex + 2 * i, "%02x", dig[i]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", path, strerror(errno));
	} else {
		r = create_pwrite_all(fd, text, len, 0, path);
		close(fd);
	}
	free(text);
	return r;
}

/* Writes dir/<name>.mf over the descriptor (digest desc_hex) and the disks
   (their digests taken as they were written). */
static int write_manifest(const char *dir, const char *name,
			  const char *desc_hex, const struct disk_job *d, int nd)
{
	char mf[4096];
	FILE *f;
	int r = 0;

	snprintf(mf, sizeof(mf), "%s/%s.mf", dir, name);
	f = fopen(mf, "wx");
	if (!f) {
		fprintf(stderr, "ovf create: %s: %s\n", mf, strerror(errno));
		return -errno;
	}
	fprintf(f, "SHA256(%s.ovf)= %s\n", name, desc_hex);
	for (int i = 0; i < nd; i++)
		fprintf(f, "SHA256(%s)= %s\n", d[i].href, d[i].sha256);
	if (ferror(f) | fclose(f)) {
		fprintf(stderr, "ovf create: %s: write failed\n", mf);
		r = -EIO;
	}
	return r;
}

/* Converts job into a new file path (a folder package's disk), synced. */
static int convert_to_file(struct disk_job *job, const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644), r;

	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", path, strerror(errno));
		return r;
	}
	r = create_convert_disk(job, fd, 0);
	if (r >= 0 && fdatasync(fd) < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", path, strerror(errno));
	}
	if (close(fd) < 0 && r >= 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", path, strerror(errno));
	}
	if (r < 0)
		unlink(path);
	return r;
}

/* Memory in MiB: a number, optionally with M/MiB/MB or G/GiB/GB. */
static bool parse_memory(const char *s, uint64_t *mib)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || !v)
		return false;
	if (!*end || !strcmp(end, "M") || !strcmp(end, "MiB") || !strcmp(end, "MB")) {
		*mib = v;
	} else if (!strcmp(end, "G") || !strcmp(end, "GiB") || !strcmp(end, "GB")) {
		if (v > (UINT64_MAX >> 30))
			return false;
		*mib = v << 10;
	} else {
		return false;
	}
	return *mib <= (UINT64_MAX >> 20);
}

/* --name becomes file names in one folder: no '/', no control bytes,
   not "." or ".." (the hrefs made of it are checked by ovf_href_check). */
static bool safe_name(const char *s)
{
	if (!*s || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (; *s; s++)
		if (*s == '/' || (unsigned char)*s < 0x20)
			return false;
	return true;
}

/* Removes a work folder and the files create put in it. */
static void remove_work(const char *dir, const char *name,
			const struct disk_job *d, int nd)
{
	char path[4096];

	for (int i = 0; i < nd; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, d[i].href);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/%s.ovf", dir, name);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s.mf", dir, name);
	unlink(path);
	rmdir(dir);
}

static void create_usage(FILE *f)
{
	fputs("usage: ovf create --name NAME --cpus N --memory SIZE --disk IMAGE [--disk IMAGE...]\n"
	      "                  [--network NAME...] [--nic-type TYPE] [--controller TYPE]\n"
	      "                  [--os NAME|ID] [--os-description TEXT] [--ovf-version 1|2]\n"
	      "                  OUT.ova|OUT_DIR\n"
	      "       ovf create --list-os\n", f);
}

static void create_help(void)
{
	create_usage(stdout);
	fputs("\n"
	      "Build an OVF package holding one virtual machine around existing disk\n"
	      "images. Each IMAGE (raw, or a VMDK of any kind, delta disks read through\n"
	      "their chain) is converted by the block engine into a streamOptimized VMDK;\n"
	      "all-zero grains are left out. The descriptor (OVF 1.x, or 2.x with\n"
	      "--ovf-version 2) describes the CPUs, the memory, one disk controller (two\n"
	      "for IDE), the disks on it in the order given, and one NIC per --network;\n"
	      "a SHA256 manifest covers the descriptor and every disk.\n"
	      "\n"
	      "OUT ending in .ova is written as one archive: descriptor first, manifest\n"
	      "next, then the disks, each converted straight into its place in the\n"
	      "archive and never copied or read back. Any other OUT is a folder holding\n"
	      "NAME.ovf, NAME.mf and NAME-diskN.vmdk. OUT must not exist; on failure (a\n"
	      "bad image, no space left) nothing is left under OUT.\n"
	      "\n"
	      "Options:\n"
	      "  --name NAME          VirtualSystem id and name, and the file names' stem\n"
	      "                       (a file name: no '/').\n"
	      "  --cpus N             virtual CPUs, 1 to 768.\n"
	      "  --memory SIZE        memory in MiB, or with a suffix: 512, 512M, 4G.\n"
	      "  --disk IMAGE         a disk image; repeat for more disks (at most 15,\n"
	      "                       4 with --controller ide).\n"
	      "  --network NAME       a logical network and a NIC connected to it;\n"
	      "                       repeat for more (at most 16). None: no NIC.\n"
	      "  --nic-type TYPE      the NICs' model: e1000 (default), e1000e, vmxnet3,\n"
	      "                       virtio, pcnet32.\n"
	      "  --controller TYPE    the disks' controller: lsilogic, lsilogicsas,\n"
	      "                       pvscsi, buslogic, ide, sata, nvme. Default: the\n"
	      "                       adapter the first disk's VMDK descriptor names\n"
	      "                       (ddb.adapterType ide, lsilogic, buslogic,\n"
	      "                       legacyESX, lsisas1068, pvscsi), else lsilogic.\n"
	      "  --os NAME|ID         the guest OS: a name from --list-os, or a CIM\n"
	      "                       OsType number 0-65535 as OperatingSystemSection\n"
	      "                       ovf:id takes it. Default: " DEFAULT_OS ".\n"
	      "  --os-description TEXT\n"
	      "                       the OperatingSystemSection Description (default:\n"
	      "                       the CIM name of a known --os).\n"
	      "  --ovf-version 1|2    the OVF envelope namespace (default 1; some\n"
	      "                       importers, e.g. virt-v2v, read only 1).\n"
	      "  --list-os            print the names --os knows, with their CIM OsType\n"
	      "                       and VMware guest id, and exit.\n"
	      "  -h, --help           this text.\n"
	      "\n"
	      "Exit status: 0 the package was written, 1 it could not be (the reason on\n"
	      "stderr), 2 bad usage.\n"
	      "\n"
	      "Example:\n"
	      "  ovf create --name web --cpus 2 --memory 4G --os ubuntu-64 \\\n"
	      "      --disk root.raw --disk data.vmdk --network \"VM Network\" \\\n"
	      "      --nic-type vmxnet3 --controller pvscsi web.ova\n", stdout);
}

static void list_os(void)
{
	printf("%-24s %5s  %-34s %s\n", "NAME", "CIM", "DESCRIPTION", "VMWARE GUEST ID");
	for (size_t i = 0; i < sizeof(os_kinds) / sizeof(os_kinds[0]); i++)
		printf("%-24s %5u  %-34s %s\n", os_kinds[i].name, os_kinds[i].cim,
		       os_kinds[i].description, os_kinds[i].vmw ? os_kinds[i].vmw : "-");
}

/* --os: a known name or a CIM OsType number. */
static bool parse_os(const char *s, struct vm_spec *vm)
{
	char *end;
	unsigned long v;

	for (size_t i = 0; i < sizeof(os_kinds) / sizeof(os_kinds[0]); i++)
		if (!strcasecmp(s, os_kinds[i].name)) {
			vm->os_id = os_kinds[i].cim;
			vm->os_description = os_kinds[i].description;
			vm->os_vmw = os_kinds[i].vmw;
			return true;
		}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || *s == '+' || v > 65535)
		return false;
	vm->os_id = (unsigned)v;
	vm->os_description = NULL;
	vm->os_vmw = NULL;
	for (size_t i = 0; i < sizeof(os_kinds) / sizeof(os_kinds[0]); i++)
		if (os_kinds[i].cim == v) {
			vm->os_description = os_kinds[i].description;
			vm->os_vmw = os_kinds[i].vmw;
		}
	return true;
}

/* What the command line asks for. */
struct create_args {
	struct vm_spec vm;
	const char *disks[MAX_DISKS], *nets[16];
	int nd;
	const char *out;
};

/* One option c (with optarg) into a; -1 when it is taken, else the exit
   status to stop with (0 for --list-os and --help, 2 for bad usage). */
static int parse_option(int c, struct create_args *a, const char **os_desc,
			bool *ctl_given)
{
	struct vm_spec *vm = &a->vm;
	char *end;
	unsigned long v;

	switch (c) {
	case 'n':
		vm->name = optarg;
		break;
	case 'c':
		errno = 0;
		v = strtoul(optarg, &end, 10);
		if (errno || *end || end == optarg || !v || v > 768 || *optarg == '-') {
			fprintf(stderr, "ovf create: --cpus \"%s\": expected a number from 1 to 768\n", optarg);
			return 2;
		}
		vm->cpus = (unsigned)v;
		break;
	case 'm':
		if (!parse_memory(optarg, &vm->memory_mib)) {
			fprintf(stderr, "ovf create: --memory \"%s\": expected MiB as a positive number, optionally with M or G\n", optarg);
			return 2;
		}
		break;
	case 'd':
		if (a->nd == MAX_DISKS) {
			fprintf(stderr, "ovf create: at most %d disks\n", MAX_DISKS);
			return 2;
		}
		a->disks[a->nd++] = optarg;
		break;
	case 'N':
		if (vm->nnetworks == 16) {
			fprintf(stderr, "ovf create: at most 16 networks\n");
			return 2;
		}
		a->nets[vm->nnetworks++] = optarg;
		break;
	case 'V':
		if (strcmp(optarg, "1") && strcmp(optarg, "2")) {
			fprintf(stderr, "ovf create: --ovf-version \"%s\": expected 1 or 2\n", optarg);
			return 2;
		}
		vm->version = optarg[0] - '0';
		break;
	case 'o':
		if (!parse_os(optarg, vm)) {
			fprintf(stderr, "ovf create: --os \"%s\": expected a name from --list-os or a CIM OsType number 0-65535\n", optarg);
			return 2;
		}
		break;
	case 'D':
		*os_desc = optarg;
		break;
	case 't': {
		size_t i, n = sizeof(nic_kinds) / sizeof(nic_kinds[0]);

		for (i = 0; i < n && strcasecmp(optarg, nic_kinds[i].name); i++)
			;
		if (i == n) {
			fprintf(stderr, "ovf create: --nic-type \"%s\": expected e1000, e1000e, vmxnet3, virtio or pcnet32\n", optarg);
			return 2;
		}
		vm->nic_subtype = nic_kinds[i].subtype;
		break;
	}
	case 'C': {
		size_t i, n = sizeof(ctl_kinds) / sizeof(ctl_kinds[0]);

		for (i = 0; i < n && strcasecmp(optarg, ctl_kinds[i].name); i++)
			;
		if (i == n) {
			fprintf(stderr, "ovf create: --controller \"%s\": expected lsilogic, lsilogicsas, pvscsi, buslogic, ide, sata or nvme\n", optarg);
			return 2;
		}
		vm->ctl = &ctl_kinds[i];
		*ctl_given = true;
		break;
	}
	case 'L':
		list_os();
		return 0;
	case 'h':
		create_help();
		return 0;
	default:
		create_usage(stderr);
		return 2;
	}
	return -1;
}

/* The command line into a, defaults filled in and checked against each
   other; -1 to go on, else the exit status to stop with. */
static int parse_args(int argc, char **argv, struct create_args *a)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "memory", required_argument, NULL, 'm' },
		{ "disk", required_argument, NULL, 'd' },
		{ "network", required_argument, NULL, 'N' },
		{ "ovf-version", required_argument, NULL, 'V' },
		{ "os", required_argument, NULL, 'o' },
		{ "os-description", required_argument, NULL, 'D' },
		{ "nic-type", required_argument, NULL, 't' },
		{ "controller", required_argument, NULL, 'C' },
		{ "list-os", no_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct vm_spec *vm = &a->vm;
	const char *os_desc = NULL;
	bool ctl_given = false;
	int c, rc;

	vm->version = 1;
	vm->networks = a->nets;
	parse_os(DEFAULT_OS, vm);
	vm->nic_subtype = nic_kinds[0].subtype;
	vm->ctl = &ctl_kinds[0];
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		if ((rc = parse_option(c, a, &os_desc, &ctl_given)) >= 0)
			return rc;
	if (optind + 1 != argc || !vm->name || !vm->cpus || !vm->memory_mib || !a->nd) {
		fprintf(stderr, "ovf create: --name, --cpus, --memory, at least one --disk and OUT are required\n");
		create_usage(stderr);
		return 2;
	}
	if (os_desc)
		vm->os_description = os_desc;
	if (!ctl_given) {
		const struct ctl_kind *k = disk_controller(a->disks[0]);

		if (k)
			vm->ctl = k;
	}
	if (a->nd > vm->ctl->units * vm->ctl->ncontrollers) {
		fprintf(stderr, "ovf create: --controller %s takes at most %d disks\n",
			vm->ctl->name, vm->ctl->units * vm->ctl->ncontrollers);
		return 2;
	}
	if (!safe_name(vm->name)) {
		fprintf(stderr, "ovf create: --name \"%s\": must be a file name (no '/')\n", vm->name);
		return 2;
	}
	a->out = argv[optind];
	return -1;
}

/* The folder the package is built in: OUT itself, or for an OVA a
   temporary one next to it (OUT.tmp-XXXXXX). NULL with a message. */
static char *make_work_dir(const char *out, bool ova)
{
	char *work = malloc(strlen(out) + 16);

	if (!work)
		return NULL;
	if (ova) {
		sprintf(work, "%s.tmp-XXXXXX", out);
		if (mkdtemp(work))
			return work;
	} else {
		strcpy(work, out);
		if (mkdir(work, 0755) == 0)
			return work;
	}
	fprintf(stderr, "ovf create: %s: %s\n", work, strerror(errno));
	free(work);
	return NULL;
}

/* The folder package in work: the disks converted, the descriptor and
   the manifest. *done counts the disks written (for the clean-up). */
static int write_folder(const char *work, const struct vm_spec *vm,
			struct disk_job *jobs, int nd, int *done)
{
	char desc_hex[EVP_MAX_MD_SIZE * 2 + 1];
	char *path = malloc(strlen(work) + strlen(vm->name) + 64);
	int r = -1;

	if (!path)
		return -1;
	for (; *done < nd; (*done)++) {
		sprintf(path, "%s/%s", work, jobs[*done].href);
		if (convert_to_file(&jobs[*done], path) < 0)
			goto out;
	}
	sprintf(path, "%s/%s.ovf", work, vm->name);
	if (write_descriptor(path, vm, jobs, nd, desc_hex) < 0)
		goto out;
	if (write_manifest(work, vm->name, desc_hex, jobs, nd) < 0)
		goto out;
	r = 0;
out:
	free(path);
	return r;
}

int cmd_create(int argc, char **argv)
{
	struct create_args a = { .nd = 0 };
	struct disk_job jobs[MAX_DISKS] = { { 0 } };
	struct vm_spec *vm = &a.vm;
	int done = 0, r = 1;
	char *work = NULL;
	bool ova;
	struct stat st;

	r = parse_args(argc, argv, &a);
	if (r >= 0)
		return r;
	r = 1;
	if (lstat(a.out, &st) == 0) {
		fprintf(stderr, "ovf create: %s already exists\n", a.out);
		return 1;
	}
	for (int i = 0; i < a.nd; i++)
		if (stat(a.disks[i], &st) < 0) {
			fprintf(stderr, "ovf create: --disk %s: %s\n", a.disks[i], strerror(errno));
			return 1;
		}
	ova = strlen(a.out) > 4 && !strcmp(a.out + strlen(a.out) - 4, ".ova");
	work = make_work_dir(a.out, ova);
	if (!work)
		return 1;
	for (int i = 0; i < a.nd; i++) {
		jobs[i].src = a.disks[i];
		jobs[i].adapter = vm->ctl->adapter;
		jobs[i].href = malloc(strlen(vm->name) + 32);
		if (!jobs[i].href)
			goto err_remove;
		sprintf(jobs[i].href, "%s-disk%d.vmdk", vm->name, i + 1);
		/* the rule validate and pack apply to every href */
		if (ovf_href_check(jobs[i].href) < 0) {
			fprintf(stderr, "ovf create: --name \"%s\": %s\n", vm->name,
				ovf_errmsg());
			goto err_remove;
		}
	}
	if (ova) {
		if (create_build_ova(work, a.out, vm, jobs, a.nd) < 0)
			goto err_remove;
		rmdir(work);
	} else if (write_folder(work, vm, jobs, a.nd, &done) < 0) {
		goto err_remove;
	}
	r = 0;
	goto out_free;

err_remove:
	remove_work(work, vm->name, jobs, done);
out_free:
	for (int i = 0; i < a.nd; i++)
		free(jobs[i].href);
	free(work);
	return r;
}
