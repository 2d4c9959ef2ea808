/* cmd_create.c - `ovf create`: build an OVF package (OVA or folder) around
 * disk images. Each disk (raw or any VMDK) is converted by the engine into a
 * streamOptimized VMDK; the descriptor describes one virtual system with
 * CPUs, memory, the guest OS chosen (--os), one disk controller of the kind
 * chosen (--controller, LSI Logic SCSI by default), the disks and one NIC of
 * the model chosen (--nic-type) per network; a SHA256 manifest covers the
 * descriptor and the disks. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/falloc.h>

#include <openssl/evp.h>

#include "blockengine.h"
#include "cmd_create.h"
#include "ovf.h"

#define CHUNK (4u << 20)   /* bytes a worker takes at a time */
#define COPY_BUF (1u << 20)
#define WORKERS 2
#define MAX_DISKS 15       /* SCSI units 0-15 without 7 */
#define STREAM_URI "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"

struct disk_job {
	const char *src;
	const char *adapter;   /* VMDK ddb.adapterType */
	char *href;            /* name of the VMDK in the package */
	uint64_t capacity;     /* virtual bytes */
	uint64_t populated;    /* bytes of grains written */
	uint64_t file_size;    /* bytes of the VMDK */
};

/* What the workers converting one disk share. */
struct conv {
	struct bdev *b;
	struct bdev_writer *w;
	uint64_t size, grain;
	atomic_uint_fast64_t next;      /* next chunk offset to take */
	atomic_uint_fast64_t populated;
	atomic_int err;                 /* first -errno */
	pthread_mutex_t msg_lock;
	char msg[512];
};

/* Records the first failure of a conversion with its message. */
static void conv_fail(struct conv *c, int err, const char *what)
{
	int zero = 0;

	if (atomic_compare_exchange_strong(&c->err, &zero, err)) {
		pthread_mutex_lock(&c->msg_lock);
		snprintf(c->msg, sizeof(c->msg), "%s", what);
		pthread_mutex_unlock(&c->msg_lock);
	}
}

static bool all_zero(const char *p, size_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* True when [off, off+len) of b reads as zeros without reading it: a zero
   run, or a hole at the bottom of the chain. */
static int skippable(struct bdev *b, uint64_t off, uint64_t len,
		     uint64_t *pnum)
{
	int st = bdev_block_status(b, off, len, pnum);

	if (st < 0)
		return st;
	if (st == BDEV_STATUS_ZERO)
		return 1;
	if (st == BDEV_STATUS_UNALLOCATED && !bdev_backing(b))
		return 1;
	return 0;
}

/* Converts one chunk: reads the grains that may hold data and hands the
   non-zero ones to the writer. */
static int conv_chunk(struct conv *c, char *buf, uint64_t start, uint64_t end)
{
	uint64_t at = start;

	while (at < end) {
		uint64_t pnum, run_end, g0, g1;
		int s = skippable(c->b, at, end - at, &pnum);

		if (s < 0)
			return s;
		run_end = at + pnum;
		if (s) {
			at = run_end;
			continue;
		}
		/* whole grains around the data run (the writer takes grains) */
		g0 = at / c->grain * c->grain;
		g1 = (run_end + c->grain - 1) / c->grain * c->grain;
		if (g1 > end)
			g1 = end;
		if (g0 < start)
			g0 = start;
		{
			size_t len = (size_t)(g1 - g0);
			int r = bdev_pread(c->b, buf, len, g0);

			if (r < 0)
				return r;
			for (size_t o = 0; o < len; o += c->grain) {
				size_t n = len - o < c->grain ? len - o : c->grain;

				if (all_zero(buf + o, n))
					continue;
				r = bdev_writer_write(c->w, g0 + o, buf + o, n);
				if (r < 0)
					return r;
				atomic_fetch_add(&c->populated, n);
			}
		}
		at = g1;
	}
	return 0;
}

static void *conv_worker(void *arg)
{
	struct conv *c = arg;
	char *buf = malloc(CHUNK);

	if (!buf) {
		conv_fail(c, -ENOMEM, "out of memory");
		return NULL;
	}
	while (!atomic_load(&c->err)) {
		uint64_t start = atomic_fetch_add(&c->next, CHUNK), end;
		int r;

		if (start >= c->size)
			break;
		end = c->size - start < CHUNK ? c->size : start + CHUNK;
		r = conv_chunk(c, buf, start, end);
		if (r < 0)
			conv_fail(c, r, bdev_errmsg());
	}
	free(buf);
	return NULL;
}

/* Converts job->src into a streamOptimized VMDK at dst, two workers. */
static int convert_disk(struct disk_job *job, const char *dst)
{
	struct bdev_create_opts co = { .format = "vmdk",
				       .subformat = "streamOptimized",
				       .adapter_type = job->adapter };
	struct bdev_info info;
	struct conv c = { 0 };
	pthread_t th[WORKERS];
	int nth = 0, r;
	struct stat st;

	r = bdev_open(job->src, NULL, &c.b);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s\n", bdev_errmsg());
		return r;
	}
	r = bdev_get_info(c.b, &info);
	if (r < 0)
		goto err_close_src;
	c.size = job->capacity = info.size;
	co.size = info.size;
	r = bdev_writer_new(dst, &co, &c.w);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", dst, bdev_errmsg());
		goto err_close_src;
	}
	c.grain = bdev_writer_grain(c.w);
	if (!c.grain || CHUNK % c.grain) {
		fprintf(stderr, "ovf create: %s: grain of %llu bytes does not divide %u\n",
			dst, (unsigned long long)c.grain, CHUNK);
		r = -EINVAL;
		goto err_abort;
	}
	pthread_mutex_init(&c.msg_lock, NULL);
	for (; nth < WORKERS; nth++)
		if (pthread_create(&th[nth], NULL, conv_worker, &c) != 0)
			break;
	if (!nth)
		conv_worker(&c);
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&c.msg_lock);
	r = atomic_load(&c.err);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", job->src, c.msg);
		goto err_abort;
	}
	r = bdev_writer_close(c.w);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", dst, bdev_errmsg());
		goto err_close_src;
	}
	bdev_close(c.b);
	if (stat(dst, &st) < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", dst, strerror(errno));
		return -errno;
	}
	job->file_size = (uint64_t)st.st_size;
	job->populated = atomic_load(&c.populated);
	return 0;

err_abort:
	bdev_writer_abort(c.w);
err_close_src:
	bdev_close(c.b);
	return r;
}

/* Appends s to f with the five XML specials escaped. */
static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&apos;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* One rasd Item: elements given already in the schema's (alphabetical)
   order as name/value pairs, NULL-terminated. */
static void item(FILE *f, const char *const *kv)
{
	fputs("      <Item>\n", f);
	for (; kv[0]; kv += 2) {
		fprintf(f, "        <rasd:%s>", kv[0]);
		xml_text(f, kv[1]);
		fprintf(f, "</rasd:%s>\n", kv[0]);
	}
	fputs("      </Item>\n", f);
}

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

/* Disk controllers --controller knows: rasd ResourceType and subtype, how
   many disks one takes, the VMDK adapter type of its disks. */
struct ctl_kind {
	const char *name;
	unsigned rt;
	const char *subtype, *label, *adapter;
	int units;   /* disks per controller */
	int ncontrollers;
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

/* Prints the descriptor for the converted disks to f. */
static void print_descriptor(FILE *f, const struct vm_spec *vm,
			     const struct disk_job *d, int nd)
{
	char a[64], b[64], c[64], e[64];

	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/%d\""
		" xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/%d\""
		" xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\""
		" xmlns:vmw=\"http://www.vmware.com/schema/ovf\""
		" xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\""
		" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\""
		" ovf:version=\"%s\">\n  <References>\n",
		vm->version, vm->version, vm->version == 2 ? "2.0" : "1.0");
	for (int i = 0; i < nd; i++) {
		fprintf(f, "    <File ovf:id=\"file%d\" ovf:href=\"", i + 1);
		xml_text(f, d[i].href);
		fprintf(f, "\" ovf:size=\"%llu\"/>\n",
			(unsigned long long)d[i].file_size);
	}
	fputs("  </References>\n  <DiskSection>\n"
	      "    <Info>Virtual disk information</Info>\n", f);
	for (int i = 0; i < nd; i++)
		fprintf(f, "    <Disk ovf:capacity=\"%llu\" ovf:capacityAllocationUnits=\"byte\""
			" ovf:diskId=\"vmdisk%d\" ovf:fileRef=\"file%d\" ovf:format=\"%s\""
			" ovf:populatedSize=\"%llu\"/>\n",
			(unsigned long long)d[i].capacity, i + 1, i + 1, STREAM_URI,
			(unsigned long long)d[i].populated);
	fputs("  </DiskSection>\n", f);
	if (vm->nnetworks) {
		fputs("  <NetworkSection>\n    <Info>The list of logical networks</Info>\n", f);
		for (int i = 0; i < vm->nnetworks; i++) {
			fputs("    <Network ovf:name=\"", f);
			xml_text(f, vm->networks[i]);
			fputs("\">\n      <Description>The ", f);
			xml_text(f, vm->networks[i]);
			fputs(" network</Description>\n    </Network>\n", f);
		}
		fputs("  </NetworkSection>\n", f);
	}
	fputs("  <VirtualSystem ovf:id=\"", f);
	xml_text(f, vm->name);
	fputs("\">\n    <Info>A virtual machine</Info>\n    <Name>", f);
	xml_text(f, vm->name);
	fprintf(f, "</Name>\n    <OperatingSystemSection ovf:id=\"%u\"", vm->os_id);
	if (vm->os_vmw) {
		fputs(" vmw:osType=\"", f);
		xml_text(f, vm->os_vmw);
		fputs("\"", f);
	}
	fputs(">\n      <Info>The kind of installed guest operating system</Info>\n", f);
	if (vm->os_description) {
		fputs("      <Description>", f);
		xml_text(f, vm->os_description);
		fputs("</Description>\n", f);
	}
	fputs("    </OperatingSystemSection>\n"
	      "    <VirtualHardwareSection>\n"
	      "      <Info>Virtual hardware requirements</Info>\n"
	      "      <System>\n"
	      "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n"
	      "        <vssd:InstanceID>0</vssd:InstanceID>\n"
	      "        <vssd:VirtualSystemIdentifier>", f);
	xml_text(f, vm->name);
	fputs("</vssd:VirtualSystemIdentifier>\n"
	      "        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>\n"
	      "      </System>\n", f);
	snprintf(a, sizeof(a), "%u virtual CPU(s)", vm->cpus);
	snprintf(b, sizeof(b), "%u", vm->cpus);
	item(f, (const char *const[]){ "AllocationUnits", "hertz * 10^6",
		"Description", "Number of Virtual CPUs", "ElementName", a,
		"InstanceID", "1", "ResourceType", "3", "VirtualQuantity", b,
		NULL });
	snprintf(a, sizeof(a), "%lluMB of memory", (unsigned long long)vm->memory_mib);
	snprintf(b, sizeof(b), "%llu", (unsigned long long)vm->memory_mib);
	item(f, (const char *const[]){ "AllocationUnits", "byte * 2^20",
		"Description", "Memory Size", "ElementName", a,
		"InstanceID", "2", "ResourceType", "4", "VirtualQuantity", b,
		NULL });
	{
		const struct ctl_kind *k = vm->ctl;
		int nctl = (nd + k->units - 1) / k->units, id = 3;
		char rt[16];

		if (nctl < 1)
			nctl = 1;
		snprintf(rt, sizeof(rt), "%u", k->rt);
		for (int i = 0; i < nctl; i++, id++) {
			char desc[64], name[64], addr[16], iid[16];

			snprintf(desc, sizeof(desc), "%s Controller", k->label);
			snprintf(name, sizeof(name), "%s controller %d", k->label, i);
			snprintf(addr, sizeof(addr), "%d", i);
			snprintf(iid, sizeof(iid), "%d", id);
			if (k->subtype)
				item(f, (const char *const[]){ "Address", addr,
					"Description", desc, "ElementName", name,
					"InstanceID", iid, "ResourceSubType", k->subtype,
					"ResourceType", rt, NULL });
			else
				item(f, (const char *const[]){ "Address", addr,
					"Description", desc, "ElementName", name,
					"InstanceID", iid, "ResourceType", rt, NULL });
		}
		for (int i = 0; i < nd; i++, id++) {
			int unit = i % k->units, ctl = 3 + i / k->units;
			char par[16];

			/* SCSI unit 7 is the controller's own */
			if (k->rt == OVF_RT_SCSI && unit >= 7)
				unit++;
			snprintf(a, sizeof(a), "%d", unit);
			snprintf(b, sizeof(b), "Hard disk %d", i + 1);
			snprintf(c, sizeof(c), "ovf:/disk/vmdisk%d", i + 1);
			snprintf(e, sizeof(e), "%d", id);
			snprintf(par, sizeof(par), "%d", ctl);
			item(f, (const char *const[]){ "AddressOnParent", a,
				"ElementName", b, "HostResource", c, "InstanceID", e,
				"Parent", par, "ResourceType", "17", NULL });
		}
		for (int i = 0; i < vm->nnetworks; i++, id++) {
			snprintf(a, sizeof(a), "%d", 7 + i);
			snprintf(b, sizeof(b), "Network adapter %d", i + 1);
			snprintf(e, sizeof(e), "%d", id);
			item(f, (const char *const[]){ "AddressOnParent", a,
				"AutomaticAllocation", "true", "Connection", vm->networks[i],
				"ElementName", b, "InstanceID", e,
				"ResourceSubType", vm->nic_subtype, "ResourceType", "10",
				NULL });
		}
	}
	fputs("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n", f);
}

/* The descriptor as malloc'd text (*len bytes), or NULL. */
static char *descriptor_text(const struct vm_spec *vm, const struct disk_job *d,
			     int nd, size_t *len)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len);

	if (!f)
		return NULL;
	print_descriptor(f, vm, d, nd);
	if (ferror(f) | fclose(f)) {
		free(text);
		return NULL;
	}
	return text;
}

/* Writes all of buf at off of fd. */
static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
		      const char *name)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			fprintf(stderr, "ovf create: %s: %s\n", name, strerror(e));
			return -e;
		}
		buf = (const char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Writes the descriptor for the converted disks to path (a folder package). */
static int write_descriptor(const char *path, const struct vm_spec *vm,
			    const struct disk_job *d, int nd)
{
	size_t len;
	char *text = descriptor_text(vm, d, nd, &len);
	int fd, r;

	if (!text) {
		fprintf(stderr, "ovf create: out of memory\n");
		return -ENOMEM;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", path, strerror(errno));
	} else {
		r = pwrite_all(fd, text, len, 0, path);
		close(fd);
	}
	free(text);
	return r;
}

/* ---- OVA output -------------------------------------------------------------
 *
 * Every disk's bytes are written by the engine, and disk 1's only by it. The
 * engine's writer makes a file of its own, so disk 1 is converted straight
 * into the archive file (its VMDK at offset 0). Disks 2.. are converted
 * beside it and appended as members, hashed in the same pass as that copy
 * (their one extra write: the engine cannot write into a region of another
 * file, and ext4 cannot move blocks between files). When every size is
 * known the front -- the descriptor, the manifest and disk 1's tar header --
 * is put before disk 1 with FALLOC_FL_INSERT_RANGE, which moves no data on
 * ext4 and XFS; the descriptor gets trailing whitespace (XML allows it after
 * the root element) so that the front is whole 4 KiB blocks, as INSERT_RANGE
 * needs. Where the file system cannot insert, the archive is copied once
 * behind the front. All of it happens in a temporary folder beside OUT and is
 * renamed to OUT (never over an existing file) only when complete, so a
 * failure (ENOSPC, a bad disk) leaves no OVA behind.
 */
#define FRONT_ALIGN 4096u
#define HEX_MAX (EVP_MAX_MD_SIZE * 2 + 1)

static uint64_t pad512(uint64_t n)
{
	return (n + 511) / 512 * 512;
}

/* SHA256 of [0, len) of in into hex; with out >= 0 the bytes are also
   written at out_off of out in the same pass. */
static int hash_copy(int in, const char *inname, uint64_t len, int out,
		     uint64_t out_off, const char *outname, char *hex)
{
	unsigned char dig[EVP_MAX_MD_SIZE], *buf = malloc(COPY_BUF);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned dlen;
	uint64_t pos = 0;
	int r = 0;

	if (!buf || !ctx) {
		fprintf(stderr, "ovf create: out of memory\n");
		r = -ENOMEM;
		goto out_free;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	while (pos < len) {
		size_t want = len - pos < COPY_BUF ? (size_t)(len - pos) : COPY_BUF;
		ssize_t n = pread(in, buf, want, (off_t)pos);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			fprintf(stderr, "ovf create: %s: read at %llu: %s\n", inname,
				(unsigned long long)pos, n < 0 ? strerror(errno) : "file shrank");
			goto out_free;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		if (out >= 0) {
			r = pwrite_all(out, buf, (size_t)n, out_off + pos, outname);
			if (r < 0)
				goto out_free;
		}
		pos += (uint64_t)n;
	}
	EVP_DigestFinal_ex(ctx, dig, &dlen);
	for (unsigned i = 0; i < dlen; i++)
		sprintf(hex + 2 * i, "%02x", dig[i]);
out_free:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

/* Hex SHA256 of a buffer. */
static void hash_buf(const void *p, size_t len, char *hex)
{
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;

	EVP_Digest(p, len, dig, &dlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < dlen; i++)
		sprintf(hex + 2 * i, "%02x", dig[i]);
}

/* Puts front (len bytes, a multiple of FRONT_ALIGN) before the contents of
   *fd (the file arch): inserted in place where the file system can, else a
   copy at arch.new renamed over arch. */
static int put_front(int *fd, const char *arch, const void *front, size_t len,
		     uint64_t body)
{
	char *tmp, hex[HEX_MAX];
	int nfd, r;

	if (fallocate(*fd, FALLOC_FL_INSERT_RANGE, 0, (off_t)len) == 0)
		return pwrite_all(*fd, front, len, 0, arch);
	if (errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		return r;
	}
	tmp = malloc(strlen(arch) + 8);
	if (!tmp)
		return -ENOMEM;
	sprintf(tmp, "%s.new", arch);
	nfd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (nfd < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", tmp, strerror(errno));
		free(tmp);
		return r;
	}
	r = pwrite_all(nfd, front, len, 0, tmp);
	if (r >= 0)
		r = hash_copy(*fd, arch, body, nfd, len, tmp, hex);
	if (r >= 0 && rename(tmp, arch) < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
	}
	if (r < 0) {
		close(nfd);
		unlink(tmp);
	} else {
		close(*fd);
		*fd = nfd;
	}
	free(tmp);
	return r;
}

/* Renames from to to, failing rather than replacing an existing to. */
static int rename_noreplace(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (link(from, to) < 0) /* file systems without RENAME_NOREPLACE */
		return -errno;
	unlink(from);
	return 0;
}

/* Converts the disks into work/archive, puts the front before them and
   renames the archive to out. Leaves nothing in work. */
static int build_ova(const char *work, const char *out, const struct vm_spec *vm,
		     struct disk_job *jobs, int nd)
{
	char (*hex)[HEX_MAX] = calloc((size_t)nd + 1, HEX_MAX);
	char *arch = malloc(strlen(work) + 16), *tmp = NULL;
	char *desc = NULL, *ovfname = NULL, *mfname = NULL, *front = NULL;
	struct { char *p; size_t len; } mf = { 0 };
	unsigned char hd[OVF_TAR_HEADER_MAX], hm[OVF_TAR_HEADER_MAX], h1[OVF_TAR_HEADER_MAX];
	ssize_t nhd, nhm, nh1;
	size_t dlen, dfull, flen, at;
	uint64_t end, front0;
	time_t now = time(NULL);
	int fd = -1, r = -ENOMEM;
	FILE *m;

	if (!hex || !arch)
		goto err_free;
	sprintf(arch, "%s/archive", work);
	r = convert_disk(&jobs[0], arch);
	if (r < 0)
		goto err_free; /* the engine removed what it made */
	fd = open(arch, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_unlink;
	}
	r = hash_copy(fd, arch, jobs[0].file_size, -1, 0, NULL, hex[0]);
	if (r < 0)
		goto err_unlink;
	end = pad512(jobs[0].file_size);
	tmp = malloc(strlen(work) + strlen(vm->name) + 32);
	if (!tmp) {
		r = -ENOMEM;
		goto err_unlink;
	}
	for (int i = 1; i < nd; i++) {
		unsigned char h[OVF_TAR_HEADER_MAX];
		ssize_t nh;
		int in;

		sprintf(tmp, "%s/%s", work, jobs[i].href);
		r = convert_disk(&jobs[i], tmp);
		if (r < 0)
			goto err_unlink;
		in = open(tmp, O_RDONLY | O_CLOEXEC);
		if (in < 0) {
			r = -errno;
			fprintf(stderr, "ovf create: %s: %s\n", tmp, strerror(errno));
			unlink(tmp);
			goto err_unlink;
		}
		nh = ovf_tar_header(h, sizeof(h), jobs[i].href, jobs[i].file_size, now);
		r = nh < 0 ? (int)nh : pwrite_all(fd, h, (size_t)nh, end, arch);
		if (nh < 0)
			fprintf(stderr, "ovf create: %s\n", ovf_errmsg());
		if (r >= 0)
			r = hash_copy(in, tmp, jobs[i].file_size, fd, end + (uint64_t)nh,
				      arch, hex[i]);
		close(in);
		unlink(tmp);
		if (r < 0)
			goto err_unlink;
		end += (uint64_t)nh + pad512(jobs[i].file_size);
	}
	/* the padding of the last member and the two zero blocks that end a tar */
	if (ftruncate(fd, (off_t)(end + 1024)) < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_unlink;
	}

	/* the front: its length decides the descriptor's padding, the padded
	   descriptor its digest; the manifest's length does not depend on it */
	r = -ENOMEM;
	desc = descriptor_text(vm, jobs, nd, &dlen);
	ovfname = malloc(strlen(vm->name) + 8);
	mfname = malloc(strlen(vm->name) + 8);
	if (!desc || !ovfname || !mfname)
		goto err_unlink;
	sprintf(ovfname, "%s.ovf", vm->name);
	sprintf(mfname, "%s.mf", vm->name);
	memset(hex[nd], '0', 64);
	m = open_memstream(&mf.p, &mf.len);
	if (!m)
		goto err_unlink;
	fprintf(m, "SHA256(%s)= %s\n", ovfname, hex[nd]);
	for (int i = 0; i < nd; i++)
		fprintf(m, "SHA256(%s)= %s\n", jobs[i].href, hex[i]);
	if (ferror(m) | fclose(m))
		goto err_unlink;
	nhd = ovf_tar_header(hd, sizeof(hd), ovfname, dlen, now);
	nhm = ovf_tar_header(hm, sizeof(hm), mfname, mf.len, now);
	nh1 = ovf_tar_header(h1, sizeof(h1), jobs[0].href, jobs[0].file_size, now);
	if (nhd < 0 || nhm < 0 || nh1 < 0) {
		fprintf(stderr, "ovf create: %s\n", ovf_errmsg());
		goto err_unlink;
	}
	front0 = (uint64_t)nhd + pad512(dlen) + (uint64_t)nhm + pad512(mf.len) +
		 (uint64_t)nh1;
	flen = (size_t)((front0 + FRONT_ALIGN - 1) / FRONT_ALIGN * FRONT_ALIGN);
	dfull = (size_t)pad512(dlen) + (flen - (size_t)front0);
	{
		char *d2 = realloc(desc, dfull);

		if (!d2)
			goto err_unlink;
		desc = d2;
	}
	if (dfull > dlen) {
		memset(desc + dlen, ' ', dfull - dlen);
		desc[dfull - 1] = '\n';
	}
	hash_buf(desc, dfull, hex[nd]);
	/* the descriptor's digest is the first line's last 64 characters */
	memcpy(mf.p + strlen("SHA256()= ") + strlen(ovfname), hex[nd], 64);
	/* the descriptor's header with its padded size (same length: a pax
	   header here carries only a long name) */
	if (ovf_tar_header(hd, sizeof(hd), ovfname, dfull, now) != nhd) {
		r = -EINVAL;
		fprintf(stderr, "ovf create: descriptor header changed length\n");
		goto err_unlink;
	}
	front = calloc(1, flen);
	if (!front)
		goto err_unlink;
	at = 0;
	memcpy(front + at, hd, (size_t)nhd);
	at += (size_t)nhd;
	memcpy(front + at, desc, dfull);
	at += dfull;
	memcpy(front + at, hm, (size_t)nhm);
	at += (size_t)nhm;
	memcpy(front + at, mf.p, mf.len);
	at += (size_t)pad512(mf.len);
	memcpy(front + at, h1, (size_t)nh1);
	at += (size_t)nh1;
	if (at != flen) {
		r = -EINVAL;
		fprintf(stderr, "ovf create: front is %zu bytes, %zu planned\n", at, flen);
		goto err_unlink;
	}
	r = put_front(&fd, arch, front, flen, end + 1024);
	if (r < 0)
		goto err_unlink;
	if (fdatasync(fd) < 0 || close(fd) < 0) {
		r = -errno;
		fd = -1;
		fprintf(stderr, "ovf create: %s: %s\n", arch, strerror(errno));
		goto err_unlink;
	}
	fd = -1;
	r = rename_noreplace(arch, out);
	if (r < 0) {
		fprintf(stderr, "ovf create: %s: %s\n", out, strerror(-r));
		goto err_unlink;
	}
	goto out_free;

err_unlink:
	if (fd >= 0)
		close(fd);
	unlink(arch);
err_free:
	if (r == -ENOMEM)
		fprintf(stderr, "ovf create: out of memory\n");
out_free:
	free(front);
	free(mf.p);
	free(desc);
	free(ovfname);
	free(mfname);
	free(tmp);
	free(arch);
	free(hex);
	return r;
}

/* Hex SHA256 of a whole file into hex (65 bytes). */
static int sha256_file(const char *path, char *hex)
{
	unsigned char dig[EVP_MAX_MD_SIZE], *buf = malloc(1u << 20);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;
	unsigned dlen;
	ssize_t n;

	if (fd < 0 || !buf || !ctx) {
		r = fd < 0 ? -errno : -ENOMEM;
		fprintf(stderr, "ovf create: %s: %s\n", path, strerror(-r));
		goto out;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	while ((n = read(fd, buf, 1u << 20)) > 0)
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	if (n < 0) {
		r = -errno;
		fprintf(stderr, "ovf create: %s: %s\n", path, strerror(errno));
		goto out;
	}
	EVP_DigestFinal_ex(ctx, dig, &dlen);
	for (unsigned i = 0; i < dlen; i++)
		sprintf(hex + 2 * i, "%02x", dig[i]);
out:
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

/* Writes dir/<name>.mf over the descriptor and the disks. */
static int write_manifest(const char *dir, const char *name,
			  const struct disk_job *d, int nd)
{
	char hex[EVP_MAX_MD_SIZE * 2 + 1], path[4096], mf[4096];
	FILE *f;
	int r;

	snprintf(mf, sizeof(mf), "%s/%s.mf", dir, name);
	f = fopen(mf, "wx");
	if (!f) {
		fprintf(stderr, "ovf create: %s: %s\n", mf, strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof(path), "%s/%s.ovf", dir, name);
	r = sha256_file(path, hex);
	if (r >= 0)
		fprintf(f, "SHA256(%s.ovf)= %s\n", name, hex);
	for (int i = 0; r >= 0 && i < nd; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, d[i].href);
		r = sha256_file(path, hex);
		if (r >= 0)
			fprintf(f, "SHA256(%s)= %s\n", d[i].href, hex);
	}
	if ((ferror(f) | fclose(f)) && r >= 0) {
		fprintf(stderr, "ovf create: %s: write failed\n", mf);
		r = -EIO;
	}
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
	      "next, then the disks. Disk 1 is converted straight into the archive (and\n"
	      "on ext4 or XFS never copied); the others are appended once. Any other OUT\n"
	      "is a folder holding NAME.ovf, NAME.mf and NAME-diskN.vmdk. OUT must not\n"
	      "exist; on failure (a bad image, no space left) nothing is left under OUT.\n"
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
	      "  --controller TYPE    the disks' controller: lsilogic (default),\n"
	      "                       lsilogicsas, pvscsi, buslogic, ide, sata, nvme.\n"
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

int cmd_create(int argc, char **argv)
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
	const char *disks[MAX_DISKS], *nets[16];
	struct vm_spec vm = { .version = 1 };
	struct disk_job jobs[MAX_DISKS] = { { 0 } };
	int nd = 0, done = 0, c, r = 1;
	char *work = NULL, *path = NULL;
	const char *out;
	bool ova;
	struct stat st;

	const char *os_desc = NULL;

	vm.networks = nets;
	parse_os(DEFAULT_OS, &vm);
	vm.nic_subtype = nic_kinds[0].subtype;
	vm.ctl = &ctl_kinds[0];
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end;
		unsigned long v;

		switch (c) {
		case 'n':
			vm.name = optarg;
			break;
		case 'c':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || end == optarg || !v || v > 768 || *optarg == '-') {
				fprintf(stderr, "ovf create: --cpus \"%s\": expected a number from 1 to 768\n", optarg);
				return 2;
			}
			vm.cpus = (unsigned)v;
			break;
		case 'm':
			if (!parse_memory(optarg, &vm.memory_mib)) {
				fprintf(stderr, "ovf create: --memory \"%s\": expected MiB as a positive number, optionally with M or G\n", optarg);
				return 2;
			}
			break;
		case 'd':
			if (nd == MAX_DISKS) {
				fprintf(stderr, "ovf create: at most %d disks\n", MAX_DISKS);
				return 2;
			}
			disks[nd++] = optarg;
			break;
		case 'N':
			if (vm.nnetworks == 16) {
				fprintf(stderr, "ovf create: at most 16 networks\n");
				return 2;
			}
			nets[vm.nnetworks++] = optarg;
			break;
		case 'V':
			if (strcmp(optarg, "1") && strcmp(optarg, "2")) {
				fprintf(stderr, "ovf create: --ovf-version \"%s\": expected 1 or 2\n", optarg);
				return 2;
			}
			vm.version = optarg[0] - '0';
			break;
		case 'o':
			if (!parse_os(optarg, &vm)) {
				fprintf(stderr, "ovf create: --os \"%s\": expected a name from --list-os or a CIM OsType number 0-65535\n", optarg);
				return 2;
			}
			break;
		case 'D':
			os_desc = optarg;
			break;
		case 't': {
			size_t i, n = sizeof(nic_kinds) / sizeof(nic_kinds[0]);

			for (i = 0; i < n && strcasecmp(optarg, nic_kinds[i].name); i++)
				;
			if (i == n) {
				fprintf(stderr, "ovf create: --nic-type \"%s\": expected e1000, e1000e, vmxnet3, virtio or pcnet32\n", optarg);
				return 2;
			}
			vm.nic_subtype = nic_kinds[i].subtype;
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
			vm.ctl = &ctl_kinds[i];
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
	}
	if (optind + 1 != argc || !vm.name || !vm.cpus || !vm.memory_mib || !nd) {
		fprintf(stderr, "ovf create: --name, --cpus, --memory, at least one --disk and OUT are required\n");
		create_usage(stderr);
		return 2;
	}
	if (os_desc)
		vm.os_description = os_desc;
	if (nd > vm.ctl->units * vm.ctl->ncontrollers) {
		fprintf(stderr, "ovf create: --controller %s takes at most %d disks\n",
			vm.ctl->name, vm.ctl->units * vm.ctl->ncontrollers);
		return 2;
	}
	if (!safe_name(vm.name)) {
		fprintf(stderr, "ovf create: --name \"%s\": must be a file name (no '/')\n", vm.name);
		return 2;
	}
	out = argv[optind];
	if (lstat(out, &st) == 0) {
		fprintf(stderr, "ovf create: %s already exists\n", out);
		return 1;
	}
	for (int i = 0; i < nd; i++)
		if (stat(disks[i], &st) < 0) {
			fprintf(stderr, "ovf create: --disk %s: %s\n", disks[i], strerror(errno));
			return 1;
		}
	ova = strlen(out) > 4 && !strcmp(out + strlen(out) - 4, ".ova");
	if (ova) {
		work = malloc(strlen(out) + 16);
		if (!work)
			goto out_free;
		sprintf(work, "%s.tmp-XXXXXX", out);
		if (!mkdtemp(work)) {
			fprintf(stderr, "ovf create: %s: %s\n", work, strerror(errno));
			goto out_free;
		}
	} else {
		work = strdup(out);
		if (!work)
			goto out_free;
		if (mkdir(work, 0755) < 0) {
			fprintf(stderr, "ovf create: %s: %s\n", work, strerror(errno));
			goto out_free;
		}
	}
	for (int i = 0; i < nd; i++) {
		jobs[i].src = disks[i];
		jobs[i].adapter = vm.ctl->adapter;
		jobs[i].href = malloc(strlen(vm.name) + 32);
		if (!jobs[i].href)
			goto err_remove;
		sprintf(jobs[i].href, "%s-disk%d.vmdk", vm.name, i + 1);
	}
	if (ova) {
		if (build_ova(work, out, &vm, jobs, nd) < 0)
			goto err_remove;
		rmdir(work);
		r = 0;
		goto out_free;
	}
	path = malloc(strlen(work) + strlen(vm.name) + 64);
	if (!path)
		goto err_remove;
	for (; done < nd; done++) {
		sprintf(path, "%s/%s", work, jobs[done].href);
		if (convert_disk(&jobs[done], path) < 0)
			goto err_remove;
	}
	sprintf(path, "%s/%s.ovf", work, vm.name);
	if (write_descriptor(path, &vm, jobs, nd) < 0)
		goto err_remove;
	if (write_manifest(work, vm.name, jobs, nd) < 0)
		goto err_remove;
	r = 0;
	goto out_free;

err_remove:
	remove_work(work, vm.name, jobs, done);
out_free:
	for (int i = 0; i < nd; i++)
		free(jobs[i].href);
	free(path);
	free(work);
	return r;
}
