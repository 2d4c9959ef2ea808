/* SPDX-License-Identifier: Apache-2.0 */
/*
 * unixsock.c - listening unix sockets renamed into place once they listen
 * (see unixsock.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "unixsock.h"

/* Whether a program accepts connections on the socket at sa. */
static bool is_live(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return false;
	live = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
	close(fd);
	return live;
}

/* Removes a socket file at sa's path that nobody serves; 0 when the path
   is free now, else -errno with err set. */
static int clear_stale(const struct sockaddr_un *sa, char *err,
		       size_t errlen)
{
	struct stat st;

	if (lstat(sa->sun_path, &st) < 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket",
			 sa->sun_path);
		return -EEXIST;
	}
	if (is_live(sa)) {
		snprintf(err, errlen, "%s exists and a server listens on it",
			 sa->sun_path);
		return -EADDRINUSE;
	}
	if (unlink(sa->sun_path) < 0 && errno != ENOENT) {
		int ret = -errno;
		snprintf(err, errlen, "%s: cannot remove the stale socket: %s",
			 sa->sun_path, strerror(-ret));
		return ret;
	}
	return 0;
}

int unixsock_listen(const char *path, int type_flags, int backlog,
		    unsigned mode, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX }, tmp;
	bool in_place;
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: socket path longer than %zu bytes",
			 path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	ret = clear_stale(&sa, err, errlen);
	if (ret < 0)
		return ret;
	tmp = sa;
	in_place = snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.new",
			    path) >= (int)sizeof(tmp.sun_path);
	if (in_place)
		tmp = sa;
	else if ((ret = clear_stale(&tmp, err, errlen)) < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: socket: %s", path, strerror(-ret));
		return ret;
	}
	if (bind(fd, (struct sockaddr *)&tmp, sizeof(tmp)) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: cannot bind: %s", tmp.sun_path,
			 strerror(-ret));
		goto err_close;
	}
	if ((mode && chmod(tmp.sun_path, mode) < 0) ||
	    listen(fd, backlog) < 0 ||
	    (!in_place && rename(tmp.sun_path, path) < 0)) {
		ret = -errno;
		snprintf(err, errlen, "%s: cannot listen: %s", tmp.sun_path,
			 strerror(-ret));
		unlink(tmp.sun_path);
		goto err_close;
	}
	return fd;

err_close:
	close(fd);
	return ret;
}
