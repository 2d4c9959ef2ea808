/* SPDX-License-Identifier: Apache-2.0 */
/* console.c - ovkctl console: the terminal on a VM's serial console. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "console.h"

#define DETACH 0x1d /* Ctrl-] */

/* Write all of buf; false when fd is gone. */
static bool write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

int ctl_console(const char *id, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct termios saved, raw;
	bool tty = isatty(STDIN_FILENO), in_open = true;
	char buf[4096];
	int fd, ret = 0;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "ovkctl: console of %s: socket path %s is too "
			"long\n", id, path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		fprintf(stderr, "ovkctl: console of %s: %s: %s (the console "
			"socket is on ovkd's host)\n", id, path,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	if (tty) {
		tcgetattr(STDIN_FILENO, &saved);
		raw = saved;
		cfmakeraw(&raw);
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
		fprintf(stderr, "Connected to the console of %s; detach with "
			"Ctrl-]\r\n", id);
	}
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = fd, .events = POLLIN },
			{ .fd = in_open ? STDIN_FILENO : -1, .events = POLLIN },
		};
		ssize_t n;

		/* once a script's input has ended, what the VM answers is
		   printed until it has been quiet for a second */
		int ready = poll(p, 2, in_open ? -1 : 1000);

		if (ready < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (!ready)
			break;
		if (p[0].revents) {
			n = read(fd, buf, sizeof(buf));
			if (n <= 0)
				break; /* the VM went away */
			if (!write_all(STDOUT_FILENO, buf, (size_t)n))
				break;
		}
		if (p[1].revents) {
			n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n <= 0) {
				if (tty)
					break;
				in_open = false;
				continue;
			}
			char *stop = memchr(buf, DETACH, (size_t)n);

			if (stop)
				n = stop - buf;
			if (n && !write_all(fd, buf, (size_t)n))
				break;
			if (stop)
				break;
		}
	}
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
		fprintf(stderr, "\nDetached from the console of %s\n", id);
	}
	close(fd);
	return ret;
}
