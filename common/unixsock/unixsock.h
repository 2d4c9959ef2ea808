/* SPDX-License-Identifier: Apache-2.0 */
/*
 * unixsock.h - listening unix sockets that are ready the moment their path
 * appears: bound and listening under PATH.new, then renamed into place, so
 * a client (a test, a supervisor, QEMU) that waits for the path to exist
 * is never refused between bind(2) and listen(2).
 */
#ifndef OVK_UNIXSOCK_H
#define OVK_UNIXSOCK_H

#include <stddef.h>

/*
 * A stream socket listening at path, with backlog and the extra socket(2)
 * type flags given (SOCK_NONBLOCK, say; SOCK_CLOEXEC is always set), its
 * file mode set to mode unless mode is 0. A socket file left by a program
 * that is gone is replaced; a socket someone serves, or any other file, is
 * left alone (-EADDRINUSE, -EEXIST). A path too long for PATH.new is bound
 * in place. Returns the fd, or -errno with a sentence naming the path in
 * err.
 */
int unixsock_listen(const char *path, int type_flags, int backlog,
		    unsigned mode, char *err, size_t errlen);

#endif /* OVK_UNIXSOCK_H */
