/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_ctlsock.c - common/ctlsock against hostile clients: a line over the
 * limit, more clients than allowed, garbage JSON, a client that hangs up
 * mid-line; the server keeps answering the well-behaved one. Also the
 * socket file: a stale one is replaced, a live one refused, another file
 * left alone, and it is gone after stop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctlsock.h"

#define CHECK(cond)                                                         \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "%s:%d: check failed: %s\n",        \
				__FILE__, __LINE__, #cond);                 \
			exit(1);                                            \
		}                                                           \
	} while (0)

static unsigned handled;

/* {"return": {"echo": REQ}}; {"command": "hangup"} gets no reply. */
static json_t *echo(void *opaque, json_t *req)
{
	unsigned *n = opaque;

	(*n)++;
	if (json_is_object(req) && json_is_string(json_object_get(req,
								   "command")) &&
	    !strcmp(json_string_value(json_object_get(req, "command")),
		    "hangup"))
		return NULL;
	return ctlsock_ok(json_pack("{s:O}", "echo", req));
}

static const struct ctlsock_ops echo_ops = { .handle = echo };

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 10 };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -errno;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);

		CHECK(w > 0);
		buf += w;
		len -= (size_t)w;
	}
}

/* One reply line (without the newline), parsed; NULL when the server hung
   up first. */
static json_t *read_reply(int fd)
{
	char buf[8192];
	size_t len = 0;

	while (len < sizeof(buf) - 1) {
		ssize_t r = recv(fd, buf + len, 1, 0);

		if (r <= 0)
			return NULL;
		if (buf[len] == '\n')
			break;
		len++;
	}
	return json_loadb(buf, len, 0, NULL);
}

static json_t *call(int fd, const char *line)
{
	send_all(fd, line, strlen(line));
	return read_reply(fd);
}

/* The error string of a reply, or "" when it is not an error. */
static const char *error_of(json_t *r)
{
	const char *e = json_string_value(json_object_get(r, "error"));

	return e ? e : "";
}

static void check_echo(int fd, int n)
{
	char line[64];
	json_t *r;

	snprintf(line, sizeof(line), "{\"command\": \"ping\", \"n\": %d}\n",
		 n);
	r = call(fd, line);
	CHECK(r);
	CHECK(json_integer_value(json_object_get(json_object_get(
		json_object_get(r, "return"), "echo"), "n")) == n);
	json_decref(r);
}

/* The server closed fd: recv sees the end (or a reset). */
static void check_hung_up(int fd)
{
	char c;
	ssize_t r = recv(fd, &c, 1, 0);

	CHECK(r == 0 || (r < 0 && errno == ECONNRESET));
}

static void test_hostile_clients(const char *path)
{
	struct ctlsock *s;
	int good, fd, many[20];
	char *big;
	json_t *r;

	CHECK(ctlsock_start(path, "test_ctlsock", &echo_ops, &handled,
			    &s) == 0);
	good = connect_to(path);
	CHECK(good >= 0);
	check_echo(good, 1);

	/* two requests in one write, and one split over two writes */
	{
		static const char two[] = "{\"n\": 2}\n{\"n\": 3}\n{\"n\"";

		send_all(good, two, strlen(two));
	}
	r = read_reply(good);
	CHECK(r && json_integer_value(json_object_get(json_object_get(
		json_object_get(r, "return"), "echo"), "n")) == 2);
	json_decref(r);
	r = read_reply(good);
	CHECK(r && json_integer_value(json_object_get(json_object_get(
		json_object_get(r, "return"), "echo"), "n")) == 3);
	json_decref(r);
	r = call(good, ": 4}\n");
	CHECK(r && json_integer_value(json_object_get(json_object_get(
		json_object_get(r, "return"), "echo"), "n")) == 4);
	json_decref(r);

	/* garbage: an error, the handler never sees it, the line goes on */
	{
		unsigned before = handled;
		static const char *bad[] = { "{\"command\": \n", "\xff\xfe{\n",
			"[1, 2\n", "{\"a\": 1, \"a\": 2}\n", "nul\0l\n" };

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			size_t n = i == 4 ? 6 : strlen(bad[i]);

			send_all(good, bad[i], n);
			r = read_reply(good);
			CHECK(r && strstr(error_of(r), "not JSON"));
			json_decref(r);
		}
		CHECK(handled == before);
		/* empty lines are skipped, not answered */
		send_all(good, "\n\n", 2);
		check_echo(good, 5);
	}

	/* a line of 5000 bytes: an error, then a hang-up */
	fd = connect_to(path);
	CHECK(fd >= 0);
	big = malloc(5000);
	CHECK(big);
	memset(big, '{', 5000);
	send_all(fd, big, 5000);
	free(big);
	r = read_reply(fd);
	CHECK(r && strstr(error_of(r), "longer than 4096 bytes"));
	json_decref(r);
	check_hung_up(fd);
	close(fd);
	check_echo(good, 6);

	/* a client that hangs up in the middle of a line */
	fd = connect_to(path);
	CHECK(fd >= 0);
	send_all(fd, "{\"command\": \"pi", 16);
	close(fd);
	check_echo(good, 7);

	/* a reply the handler refuses (NULL) hangs up on that client only */
	fd = connect_to(path);
	CHECK(fd >= 0);
	send_all(fd, "{\"command\": \"hangup\"}\n", 22);
	check_hung_up(fd);
	close(fd);
	check_echo(good, 8);

	/* 20 clients at once: 7 slots are free besides good's; the others
	   are closed as they come, and good is still answered */
	for (int i = 0; i < 20; i++) {
		many[i] = connect_to(path);
		CHECK(many[i] >= 0);
	}
	check_echo(good, 9);
	{
		int answered = 0;

		for (int i = 0; i < 20; i++) {
			/* a closed one may refuse the bytes (EPIPE) */
			r = send(many[i], "{\"n\": 10}\n", 10, MSG_NOSIGNAL)
				== 10 ? read_reply(many[i]) : NULL;
			answered += r != NULL;
			json_decref(r);
		}
		CHECK(answered == CTLSOCK_MAX_CLIENTS - 1);
	}
	/* once they hang up their slots are free again, even when the new
	   connection arrives in the same poll round as their hang-ups */
	for (int i = 0; i < 20; i++)
		close(many[i]);
	for (int i = 0; i < CTLSOCK_MAX_CLIENTS - 1; i++) {
		many[i] = connect_to(path);
		CHECK(many[i] >= 0);
	}
	for (int i = 0; i < CTLSOCK_MAX_CLIENTS - 1; i++) {
		check_echo(many[i], 11 + i);
		close(many[i]);
	}
	check_echo(good, 30);

	/* a second server on the same, live, socket is refused */
	{
		struct ctlsock *s2 = NULL;

		CHECK(ctlsock_start(path, "test_ctlsock", &echo_ops, &handled,
				    &s2) == -EADDRINUSE);
		check_echo(good, 31);
	}
	close(good);
	ctlsock_stop(s);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
	{
		char tmp[80];

		/* nothing left of the name it was bound under first */
		snprintf(tmp, sizeof(tmp), "%s.new", path);
		CHECK(access(tmp, F_OK) < 0 && errno == ENOENT);
	}
}

/* A socket file nobody serves (a killed program's) is replaced; a file
   that is not a socket is left alone. */
static void test_stale_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ctlsock *s;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), good;
	FILE *f;

	CHECK(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	close(fd); /* bound, never listened: stale */
	CHECK(ctlsock_start(path, "test_ctlsock", &echo_ops, &handled,
			    &s) == 0);
	good = connect_to(path);
	CHECK(good >= 0);
	check_echo(good, 40);
	close(good);
	ctlsock_stop(s);

	f = fopen(path, "w");
	CHECK(f);
	fclose(f);
	CHECK(ctlsock_start(path, "test_ctlsock", &echo_ops, &handled,
			    &s) == -EEXIST);
	{
		struct stat st;

		CHECK(lstat(path, &st) == 0 && S_ISREG(st.st_mode));
	}
	unlink(path);
}

int main(void)
{
	char dir[] = "/tmp/test_ctlsock.XXXXXX", path[64];

	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/api.sock", dir);
	test_hostile_clients(path);
	test_stale_socket(path);
	rmdir(dir);
	printf("test_ctlsock: ok\n");
	return 0;
}
