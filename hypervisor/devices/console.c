/* SPDX-License-Identifier: Apache-2.0 */
#include "console.h"
#include "unixsock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CTRL_A 0x01

/* The console's listening socket: ready once its path exists; a socket
   file an earlier run left is replaced, one another ovkvm serves is not,
   nor is any other file. */
static int listen_console(const char *path)
{
	char err[400];
	int fd = unixsock_listen(path, SOCK_NONBLOCK, 1, 0, err, sizeof(err));

	if (fd < 0)
		fprintf(stderr, "ovkvm: console socket: %s\n", err);
	return fd;
}

static int open_socket(struct console *con, const char *path)
{
	int fd = listen_console(path);

	if (fd < 0)
		return fd;
	con->listen_fd = fd;
	con->socket_path = strdup(path);
	return 0;
}

int console_open(struct console *con, const char *spec)
{
	int rc;

	memset(con, 0, sizeof(*con));
	con->in_fd = con->out_fd = con->listen_fd = -1;
	pthread_mutex_init(&con->out_lock, NULL);
	con->wake_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (con->wake_efd < 0) {
		rc = -errno;
		goto err;
	}
	if (strcmp(spec, "stdio") == 0) {
		con->kind = CONSOLE_STDIO;
		con->in_fd = STDIN_FILENO;
		con->out_fd = STDOUT_FILENO;
		if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &con->saved) == 0) {
			struct termios t = con->saved;
			cfmakeraw(&t);
			/* Keep output post-processing so stray "\n" from the
			 * VMM's own messages still start a new line. */
			t.c_oflag |= OPOST | ONLCR;
			if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
				con->raw = true;
		}
		return 0;
	}
	if (strncmp(spec, "file:", 5) == 0 && spec[5]) {
		con->kind = CONSOLE_FILE;
		con->out_fd = open(spec + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (con->out_fd < 0) {
			rc = -errno;
			fprintf(stderr, "ovkvm: console file %s: %s\n", spec + 5,
				strerror(errno));
			goto err;
		}
		return 0;
	}
	if (strncmp(spec, "socket:", 7) == 0 && spec[7]) {
		con->kind = CONSOLE_SOCKET;
		rc = open_socket(con, spec + 7);
		if (rc)
			goto err;
		return 0;
	}
	fprintf(stderr, "ovkvm: --console takes stdio, file:PATH or socket:PATH, not '%s'\n",
		spec);
	rc = -EINVAL;
err:
	if (con->wake_efd >= 0)
		close(con->wake_efd);
	pthread_mutex_destroy(&con->out_lock);
	return rc;
}

void console_close(struct console *con)
{
	if (con->raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &con->saved);
	if (con->kind == CONSOLE_FILE && con->out_fd >= 0)
		close(con->out_fd);
	if (con->kind == CONSOLE_SOCKET) {
		if (con->in_fd >= 0)
			close(con->in_fd);
		close(con->listen_fd);
		unlink(con->socket_path);
		free(con->socket_path);
	}
	close(con->wake_efd);
	pthread_mutex_destroy(&con->out_lock);
}

void console_output(struct console *con, uint8_t c)
{
	pthread_mutex_lock(&con->out_lock);
	if (con->out_fd >= 0) {
		ssize_t n;
		if (con->kind == CONSOLE_SOCKET)
			n = send(con->out_fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		else
			do
				n = write(con->out_fd, &c, 1);
			while (n < 0 && errno == EINTR);
		(void)n; /* a console that cannot take output drops it */
	}
	pthread_mutex_unlock(&con->out_lock);
}

void console_rx_ready(struct console *con)
{
	uint64_t one = 1;
	ssize_t n = write(con->wake_efd, &one, sizeof(one));
	(void)n;
}

int console_pollfds(struct console *con, struct pollfd *pfd)
{
	int n = 0;

	pfd[n++] = (struct pollfd){ .fd = con->wake_efd, .events = POLLIN };
	/* While bytes wait for room in the UART, stop reading more. */
	if (con->in_fd >= 0 && !con->pending_len)
		pfd[n++] = (struct pollfd){ .fd = con->in_fd, .events = POLLIN };
	if (con->kind == CONSOLE_SOCKET && con->in_fd < 0)
		pfd[n++] = (struct pollfd){ .fd = con->listen_fd, .events = POLLIN };
	return n;
}

static void drop_client(struct console *con)
{
	pthread_mutex_lock(&con->out_lock);
	close(con->in_fd);
	con->in_fd = con->out_fd = -1;
	pthread_mutex_unlock(&con->out_lock);
	con->pending_len = 0;
}

static void flush_pending(struct console *con)
{
	size_t n;

	if (!con->pending_len || !con->sink.receive)
		return;
	n = con->sink.receive(con->sink.opaque, con->pending, con->pending_len);
	memmove(con->pending, con->pending + n, con->pending_len - n);
	con->pending_len -= n;
}

/* Move input into `pending`, interpreting the escape key on terminals. */
static void take_input(struct console *con, const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = buf[i];
		if (con->raw) {
			if (con->saw_escape) {
				con->saw_escape = false;
				if (c == 'x' || c == 'X') {
					if (con->sink.quit)
						con->sink.quit(con->sink.opaque);
					return;
				}
				if (c != CTRL_A)
					continue;
			} else if (c == CTRL_A) {
				con->saw_escape = true;
				continue;
			}
		}
		if (con->pending_len < sizeof(con->pending))
			con->pending[con->pending_len++] = c;
	}
}

void console_handle(struct console *con, const struct pollfd *pfd, int n)
{
	for (int i = 0; i < n; i++) {
		if (!pfd[i].revents)
			continue;
		if (pfd[i].fd == con->wake_efd) {
			uint64_t v;
			ssize_t r = read(con->wake_efd, &v, sizeof(v));
			(void)r;
		} else if (pfd[i].fd == con->in_fd) {
			uint8_t buf[256];
			ssize_t r = read(con->in_fd, buf,
					 sizeof(con->pending) - con->pending_len < sizeof(buf)
						 ? sizeof(con->pending) - con->pending_len
						 : sizeof(buf));
			if (r > 0) {
				take_input(con, buf, r);
			} else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
				/* End of input: a socket client left; stdin
				 * closed (keep running, output only). */
				if (con->kind == CONSOLE_SOCKET)
					drop_client(con);
				else
					con->in_fd = -1;
			}
		} else if (pfd[i].fd == con->listen_fd) {
			int fd = accept4(con->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0) {
				pthread_mutex_lock(&con->out_lock);
				con->in_fd = con->out_fd = fd;
				pthread_mutex_unlock(&con->out_lock);
			}
		}
	}
	flush_pending(con);
}
