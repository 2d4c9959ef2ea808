/* SPDX-License-Identifier: Apache-2.0 */
/* restore.c - `ovkdisk restore` rebuilds the disk at a backup's point from
   its VMDK chain; `ovkdisk verify` recomputes every digest the manifest
   holds. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ovkdisk.h"

static const char *engine_msg(int ret)
{
	const char *m = bdev_errmsg();

	return *m ? m : strerror(-ret);
}

int digest_image(const struct ovkdisk_opts *o, const char *path,
		 const char *format, int out_fd, char hex[65], uint64_t *size)
{
	struct bdev_open_opts oo = { .flags = BDEV_O_SHARE, .format = format };
	struct bdev_info in;
	struct bdev *b;
	uint8_t *buf = malloc(OVKDISK_BLOCK), *zeros = calloc(1, OVKDISK_BLOCK);
	uint8_t *hashes = NULL, md[32];
	uint64_t nblocks;
	int ret;

	if (!buf || !zeros) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = bdev_open(path, &oo, &b);
	if (ret < 0) {
		fprintf(stderr, "ovkdisk: %s: %s\n", path, engine_msg(ret));
		goto out_free;
	}
	bdev_get_info(b, &in);
	*size = in.size;
	nblocks = (in.size + OVKDISK_BLOCK - 1) / OVKDISK_BLOCK;
	hashes = malloc(nblocks ? nblocks * 32 : 1);
	if (!hashes) {
		ret = -ENOMEM;
		goto out_close;
	}
	if (out_fd >= 0 && ftruncate(out_fd, (off_t)in.size) < 0) {
		ret = -errno;
		fprintf(stderr, "ovkdisk: sizing the output: %s\n",
			strerror(errno));
		goto out_close;
	}
	for (uint64_t blk = 0; blk < nblocks; blk++) {
		uint64_t off = blk * OVKDISK_BLOCK;
		size_t n = in.size - off < OVKDISK_BLOCK ?
			   (size_t)(in.size - off) : OVKDISK_BLOCK;

		ret = bdev_pread(b, buf, n, off);
		if (ret < 0) {
			fprintf(stderr, "ovkdisk: %s at %llu: %s\n", path,
				(unsigned long long)off, engine_msg(ret));
			goto out_close;
		}
		sha256(buf, n, hashes + blk * 32);
		if (out_fd >= 0 && memcmp(buf, zeros, n) &&
		    pwrite(out_fd, buf, n, (off_t)off) != (ssize_t)n) {
			ret = -errno;
			fprintf(stderr, "ovkdisk: writing the output at "
				"%llu: %s\n", (unsigned long long)off,
				strerror(errno));
			goto out_close;
		}
		progress(o, out_fd >= 0 ? "restore" : "verify", off + n,
			 in.size);
	}
	sha256(hashes, nblocks * 32, md);
	to_hex(md, 32, hex);
	ret = 0;
out_close:
	bdev_close(b);
out_free:
	free(hashes);
	free(buf);
	free(zeros);
	return ret;
}

static json_t *load(const char *dir)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *m;

	snprintf(path, sizeof(path), "%s/%s", dir, OVKDISK_MANIFEST);
	m = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!m || !json_array_size(json_object_get(m, "backups"))) {
		fprintf(stderr, "ovkdisk: %s: %s\n", path,
			m ? "holds no backup" : jerr.text);
		json_decref(m);
		return NULL;
	}
	return m;
}

int cmd_restore(const struct ovkdisk_opts *o, const char *dir,
		const char *output)
{
	json_t *m = load(dir), *b, *pick = NULL;
	char path[PATH_MAX], hex[65];
	uint64_t size;
	size_t i;
	int fd, ret;

	if (!m)
		return 1;
	json_array_foreach(json_object_get(m, "backups"), i, b) {
		if (!o->at || !strcmp(o->at, json_string_value(
				json_object_get(b, "checkpoint"))))
			pick = b;
	}
	if (!pick) {
		fprintf(stderr, "ovkdisk: %s: no backup at checkpoint %s "
			"(see %s/%s)\n", dir, o->at, dir, OVKDISK_MANIFEST);
		json_decref(m);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/%s", dir,
		 json_string_value(json_object_get(pick, "file")));
	fd = open(output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "ovkdisk: %s: %s%s\n", output, strerror(errno),
			errno == EEXIST ? " (never overwritten)" : "");
		json_decref(m);
		return 1;
	}
	ret = digest_image(o, path, entry_engine_format(pick), fd, hex, &size);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret == 0 && strcmp(hex, json_string_value(json_object_get(
					    pick, "disk_sha256")))) {
		fprintf(stderr, "ovkdisk: %s: the restored disk's digest %s "
			"is not the one recorded at backup (%s)\n", output, hex,
			json_string_value(json_object_get(pick,
							  "disk_sha256")));
		ret = -EIO;
	}
	if (ret == 0) {
		if (o->json)
			printf("{\"checkpoint\":\"%s\",\"output\":\"%s\","
			       "\"size\":%llu,\"disk_sha256\":\"%s\"}\n",
			       json_string_value(json_object_get(
				       pick, "checkpoint")),
			       output, (unsigned long long)size, hex);
		else
			printf("restored %s at %s: %llu bytes, digest "
			       "verified\n", output, json_string_value(
				       json_object_get(pick, "checkpoint")),
			       (unsigned long long)size);
	} else {
		unlink(output);
	}
	json_decref(m);
	return ret < 0 ? 1 : 0;
}

int cmd_verify(const struct ovkdisk_opts *o, const char *dir)
{
	json_t *m = load(dir), *b, *out = json_array();
	size_t i;
	int bad = 0;

	if (!m)
		return 1;
	json_array_foreach(json_object_get(m, "backups"), i, b) {
		const char *cp = json_string_value(json_object_get(
							   b, "checkpoint"));
		const char *want_f = json_string_value(json_object_get(
							       b, "file_sha256"));
		const char *want_d = json_string_value(json_object_get(
							       b, "disk_sha256"));
		char path[PATH_MAX], fh[65] = "", dh[65] = "";
		uint64_t size;
		bool ok;

		snprintf(path, sizeof(path), "%s/%s", dir, json_string_value(
				 json_object_get(b, "file")));
		ok = sha256_file(path, fh) == 0 && want_f &&
		     !strcmp(fh, want_f) &&
		     digest_image(o, path, entry_engine_format(b), -1, dh,
				  &size) == 0 && want_d &&
		     !strcmp(dh, want_d);
		if (!ok)
			bad++;
		json_array_append_new(out, json_pack(
			"{s:s,s:s,s:b}", "checkpoint", cp, "file", path, "ok",
			ok));
		if (!o->json)
			printf("%s %s: %s\n", ok ? "ok" : "BAD", cp,
			       ok ? "file and disk digests match" :
			       !fh[0] || strcmp(fh, want_f ? want_f : "") ?
			       "the file's SHA-256 differs from the manifest" :
			       "the disk's digest differs from the manifest");
	}
	if (o->json) {
		char *t = json_dumps(out, JSON_COMPACT);
		puts(t);
		free(t);
	}
	json_decref(out);
	json_decref(m);
	return bad ? 1 : 0;
}
