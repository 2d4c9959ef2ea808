/* SPDX-License-Identifier: Apache-2.0 */
/* console.h - attach the terminal to a VM's serial console socket. */
#ifndef OVK_CTL_CONSOLE_H
#define OVK_CTL_CONSOLE_H

/* Copy stdin to the unix socket at path and the socket to stdout until
   Ctrl-] is typed, stdin ends or the VM closes the console. A terminal is
   put in raw mode meanwhile and restored. Returns 0 or -errno (reported on
   stderr, naming id and path). */
int ctl_console(const char *id, const char *path);

#endif /* OVK_CTL_CONSOLE_H */
