/* cmd_create.c - `ovf create`: build an OVF package (OVA or folder) around
 * disk images. Each disk (raw or any VMDK) is converted by the engine into a
 * streamOptimized VMDK; the descriptor describes one virtual system with
 * CPUs, memory, an LSI Logic SCSI controller, the disks and one NIC per
 * network; a SHA256 manifest covers the descriptor and the disks. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
				       .adapter_type = "lsilogic" };
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

struct vm_spec {
	const char *name;
	unsigned cpus;
	uint64_t memory_mib;
	const char **networks;
	int nnetworks;
	int version; /* 1 or 2 */
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
	fputs("</Name>\n"
	      "    <OperatingSystemSection ovf:id=\"1\">\n"
	      "      <Info>The kind of installed guest operating system</Info>\n"
	      "      <Description>Other</Description>\n"
	      "    </OperatingSystemSection>\n"
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
	item(f, (const char *const[]){ "Address", "0",
		"Description", "SCSI Controller", "ElementName", "SCSI controller 0",
		"InstanceID", "3", "ResourceSubType", "lsilogic",
		"ResourceType", "6", NULL });
	for (int i = 0; i < nd; i++) {
		snprintf(a, sizeof(a), "%d", i < 7 ? i : i + 1);
		snprintf(b, sizeof(b), "Hard disk %d", i + 1);
		snprintf(c, sizeof(c), "ovf:/disk/vmdisk%d", i + 1);
		snprintf(e, sizeof(e), "%d", 4 + i);
		item(f, (const char *const[]){ "AddressOnParent", a,
			"ElementName", b, "HostResource", c, "InstanceID", e,
			"Parent", "3", "ResourceType", "17", NULL });
	}
	for (int i = 0; i < vm->nnetworks; i++) {
		snprintf(a, sizeof(a), "%d", 7 + i);
		snprintf(b, sizeof(b), "Network adapter %d", i + 1);
		snprintf(e, sizeof(e), "%d", 4 + nd + i);
		item(f, (const char *const[]){ "AddressOnParent", a,
			"AutomaticAllocation", "true", "Connection", vm->networks[i],
			"ElementName", b, "InstanceID", e,
			"ResourceSubType", "E1000", "ResourceType", "10", NULL });
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
	fputs("usage: ovf create --name NAME --cpus N --memory MIB --disk IMAGE [--disk IMAGE...]\n"
	      "                  [--network NAME...] [--ovf-version 1|2] OUT.ova|OUT_DIR\n"
	      "Disks (raw or any VMDK) are converted to streamOptimized VMDK; memory is\n"
	      "in MiB (or with a G suffix). OUT must not exist.\n", f);
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

	vm.networks = nets;
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
		case 'h':
			create_usage(stdout);
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
