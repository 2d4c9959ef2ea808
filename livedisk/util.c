/* SPDX-License-Identifier: Apache-2.0 */
/* util.c - ovkdisk's helpers: the control-socket client, digests, atomic
   files, the progress bar. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ovkdisk.h"

/* The longest reply line taken from the daemon (a changed-extent list). */
#define MAX_REPLY (64u << 20)

/* --disk N: the disk of an ovkvm socket every request names (-1: none,
   as pvblk, which serves one disk, wants it). */
static int ctl_disk = -1;
static const char *ctl_export;

void ctl_set_disk(int disk)
{
	ctl_disk = disk;
}

void ctl_set_export(const char *name)
{
	ctl_export = name;
}

json_t *ctl_call(const char *path, json_t *req, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *text = NULL, *buf = NULL;
	size_t len = 0, cap = 0, tl, off = 0;
	json_t *rep = NULL, *ret = NULL;
	json_error_t jerr;
	int fd = -1;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long", path);
		goto out;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(err, errlen, "%s: cannot connect: %s (is pvblk "
			 "or ovkvm running with --api-socket %s?)", path,
			 strerror(errno), path);
		goto out;
	}
	if (ctl_disk >= 0)
		json_object_set_new(req, "disk", json_integer(ctl_disk));
	if (ctl_export)
		json_object_set_new(req, "export", json_string(ctl_export));
	text = json_dumps(req, JSON_COMPACT);
	if (!text) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	tl = strlen(text);
	text[tl++] = '\n';
	while (off < tl) {
		ssize_t w = send(fd, text + off, tl - off, MSG_NOSIGNAL);

		if (w <= 0) {
			snprintf(err, errlen, "%s: send: %s", path,
				 strerror(errno));
			goto out;
		}
		off += (size_t)w;
	}
	for (;;) {
		ssize_t r;

		if (len + 65536 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 131072;
			if (cap > MAX_REPLY ||
			    !(nb = realloc(buf, cap))) {
				snprintf(err, errlen, "%s: reply too long",
					 path);
				goto out;
			}
			buf = nb;
		}
		r = recv(fd, buf + len, cap - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "%s: the daemon hung up without "
				 "a reply", path);
			goto out;
		}
		len += (size_t)r;
		if (memchr(buf + len - r, '\n', (size_t)r))
			break;
	}
	rep = json_loadb(buf, (size_t)((char *)memchr(buf, '\n', len) - buf),
			 0, &jerr);
	if (!rep) {
		snprintf(err, errlen, "%s: reply is not JSON: %s", path,
			 jerr.text);
		goto out;
	}
	ret = json_object_get(rep, "return");
	if (ret) {
		json_incref(ret);
	} else {
		const char *e = json_string_value(json_object_get(rep,
								  "error"));
		snprintf(err, errlen, "%s", e ? e : "reply without return");
	}
out:
	json_decref(rep);
	free(buf);
	free(text);
	if (fd >= 0)
		close(fd);
	return ret;
}

const char *entry_engine_format(json_t *entry)
{
	const char *f = json_string_value(json_object_get(entry, "format"));

	return f && !strcmp(f, "raw") ? "raw" : "vmdk";
}

int run_quiesce(const char *cmd)
{
	int st = system(cmd);

	if (st == -1)
		return -errno;
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "ovkdisk: --quiesce '%s' failed (status %d)\n",
			cmd, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		return -ECHILD;
	}
	return 0;
}

void progress(const struct ovkdisk_opts *o, const char *what, uint64_t done,
	      uint64_t total)
{
	static int last_pct = -1; /* what progress_json said last */
	int pct, bars;

	if ((!o->progress && !o->progress_json) || !total)
		return;
	pct = (int)(done * 100 / total);
	if (o->progress_json) {
		if (pct > last_pct) {
			last_pct = pct;
			fprintf(stderr, "{\"progress\":\"%s\",\"done\":%llu,"
				"\"total\":%llu,\"percent\":%d}\n", what,
				(unsigned long long)done,
				(unsigned long long)total, pct);
			fflush(stderr);
		}
		return;
	}
	bars = pct * 30 / 100;
	fprintf(stderr, "\r%-10s [%.*s%*s] %3d%% %llu/%llu MiB", what, bars,
		"##############################", 30 - bars, "", pct,
		(unsigned long long)(done >> 20),
		(unsigned long long)(total >> 20));
	if (done >= total)
		fputc('\n', stderr);
}

void sha256(const void *buf, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL);
}

void to_hex(const uint8_t *md, size_t n, char *hex)
{
	for (size_t i = 0; i < n; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
}

int sha256_file(const char *path, char hex[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t md[32];
	unsigned int n = 32;
	char *buf = malloc(1 << 20);
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;
	ssize_t r;

	if (fd < 0 || !ctx || !buf) {
		ret = fd < 0 ? -errno : -ENOMEM;
		fprintf(stderr, "ovkdisk: %s: %s\n", path, strerror(-ret));
		goto out;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	while ((r = read(fd, buf, 1 << 20)) > 0)
		EVP_DigestUpdate(ctx, buf, (size_t)r);
	if (r < 0) {
		ret = -errno;
		fprintf(stderr, "ovkdisk: %s: read: %s\n", path,
			strerror(errno));
		goto out;
	}
	EVP_DigestFinal_ex(ctx, md, &n);
	to_hex(md, 32, hex);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	EVP_MD_CTX_free(ctx);
	return ret;
}

void stop_point(const char *phase)
{
	const char *at = getenv("OVKDISK_STOP_AT");

	if (at && !strcmp(at, phase))
		raise(SIGSTOP);
}

int write_atomic(const char *dir, const char *name, const void *data,
		 size_t len)
{
	char tmp[4096], dst[4096];
	int fd, dfd, ret = 0;
	size_t off = 0;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	snprintf(dst, sizeof(dst), "%s/%s", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto err;
	while (off < len) {
		ssize_t w = write(fd, (const char *)data + off, len - off);

		if (w < 0) {
			close(fd);
			goto err;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0) {
		close(fd);
		goto err;
	}
	close(fd);
	if (!strcmp(name, OVKDISK_MANIFEST))
		stop_point("manifest");
	if (rename(tmp, dst) < 0)
		goto err;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
err:
	ret = -errno;
	fprintf(stderr, "ovkdisk: writing %s: %s\n", dst, strerror(errno));
	unlink(tmp);
	return ret;
}

json_t *ctl_command(const char *path, const char *cmd)
{
	json_t *req = json_pack("{s:s}", "command", cmd), *r;
	char err[1024];

	r = ctl_call(path, req, err, sizeof(err));
	json_decref(req);
	if (!r)
		fprintf(stderr, "ovkdisk: %s: %s\n", cmd, err);
	return r;
}
