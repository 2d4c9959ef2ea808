/* SPDX-License-Identifier: Apache-2.0 */
/* service.c - telling a service manager how the daemon is doing: the
   sd_notify datagram protocol (a "KEY=VALUE" line to the unix datagram
   socket named by $NOTIFY_SOCKET), so pvblk runs as a Type=notify
   systemd service without linking libsystemd. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "pvblk.h"

int pvblk_service_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	socklen_t salen;
	int fd, ret = 0;

	if (!path || !*path)
		return 0;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path)) {
		pvblk_log("NOTIFY_SOCKET=%s: expected an absolute path or an "
			  "@abstract name shorter than %zu bytes; not telling "
			  "the service manager '%s'", path,
			  sizeof(sa.sun_path), state);
		return -EINVAL;
	}
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* the abstract namespace */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
			    (path[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL,
		   (const struct sockaddr *)&sa, salen) < 0) {
		ret = -errno;
		pvblk_log("NOTIFY_SOCKET=%s: cannot tell the service manager "
			  "'%s': %s", path, state, strerror(errno));
	}
	close(fd);
	return ret;
}
