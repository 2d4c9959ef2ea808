/* SPDX-License-Identifier: Apache-2.0 */
/* listen.c - ovkd's listening sockets (see listen.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "listen.h"
#include "unixsock.h"
#include "util.h"

#define PEM_MAX (1u << 20)

int listen_unix(const char *path, char *err, size_t errlen)
{
	char why[400];
	/* the owner and its group may talk to ovkd; the API still asks for
	   the credentials */
	int fd = unixsock_listen(path, 0, 64, 0660, why, sizeof(why));

	if (fd == -EADDRINUSE)
		return mgmt_fail(err, errlen, fd, "socket %s: another ovkd "
				 "answers there", path);
	if (fd < 0)
		return mgmt_fail(err, errlen, fd, "socket %s", why);
	return fd;
}

int listen_parse_tcp(const char *s, struct sockaddr_in *a)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || !port || port > 65535)
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

bool listen_is_loopback(const struct sockaddr_in *a)
{
	return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
}

int listen_read_pem(const char *path, char **out, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	size_t got = 0;
	int ret;

	if (fd < 0)
		return mgmt_fail(err, errlen, -errno, "%s: %s", path,
				 strerror(errno));
	if (fstat(fd, &st) < 0) {
		ret = mgmt_fail(err, errlen, -errno, "%s: %s", path,
				strerror(errno));
		goto err_close;
	}
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (size_t)st.st_size > PEM_MAX) {
		ret = mgmt_fail(err, errlen, -EINVAL, "%s: expected a PEM "
				"file of 1 byte to 1 MiB", path);
		goto err_close;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = mgmt_fail(err, errlen, -ENOMEM, "%s: out of memory",
				path);
		goto err_close;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n <= 0) {
			ret = mgmt_fail(err, errlen, n < 0 ? -errno : -EIO,
					"%s: short read at offset %zu", path,
					got);
			free(buf);
			goto err_close;
		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	if (!strstr(buf, "-----BEGIN ")) {
		free(buf);
		ret = mgmt_fail(err, errlen, -EINVAL, "%s: expected PEM "
				"(a -----BEGIN line)", path);
		goto err_close;
	}
	close(fd);
	*out = buf;
	return 0;

err_close:
	close(fd);
	return ret;
}
