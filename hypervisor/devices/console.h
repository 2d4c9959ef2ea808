/* SPDX-License-Identifier: Apache-2.0 */
/* The host end of the guest's serial console: stdio (raw mode when stdin is
 * a terminal, restored on close), an output-only file, or a Unix socket
 * that one client at a time may connect to.  Output is written from vCPU
 * threads; input is read by the main loop and handed to a sink (the UART).
 * On a terminal, Ctrl-A x quits and Ctrl-A Ctrl-A sends Ctrl-A. */
#ifndef OVKVM_CONSOLE_H
#define OVKVM_CONSOLE_H

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <termios.h>

enum console_kind { CONSOLE_STDIO, CONSOLE_FILE, CONSOLE_SOCKET };

struct console_sink {
	/* Accept up to `len` bytes of input; returns how many were taken. */
	size_t (*receive)(void *opaque, const uint8_t *buf, size_t len);
	/* The user pressed the quit key. */
	void (*quit)(void *opaque);
	void *opaque;
};

#define CONSOLE_MAX_POLLFDS 3

struct console {
	enum console_kind kind;
	int in_fd, out_fd;   /* -1 when absent */
	int listen_fd;       /* socket: the listening socket */
	char *socket_path;
	bool raw, saw_escape;
	struct termios saved;
	int wake_efd;        /* the sink has room again */
	pthread_mutex_t out_lock;
	uint8_t pending[512];
	size_t pending_len;
	struct console_sink sink;
};

/* Parse "stdio", "file:PATH" or "socket:PATH" and open it; -errno with a
 * message on stderr on failure. */
int console_open(struct console *con, const char *spec);
void console_close(struct console *con);

/* Write one guest output byte (any thread). */
void console_output(struct console *con, uint8_t c);

/* Wake the input side after the sink refused bytes (any thread). */
void console_rx_ready(struct console *con);

/* Fill up to CONSOLE_MAX_POLLFDS entries; returns how many. */
int console_pollfds(struct console *con, struct pollfd *pfd);
/* Handle the events poll() returned for those entries. */
void console_handle(struct console *con, const struct pollfd *pfd, int n);

#endif
