/* SPDX-License-Identifier: Apache-2.0 */
/* cmd_create.h - `ovf create` (cmd_create.c), called from ovf.c. */
#ifndef OVK_OVF_CMD_CREATE_H
#define OVK_OVF_CMD_CREATE_H

/* argv[0] is "create"; returns the process exit code. */
int cmd_create(int argc, char **argv);

#endif /* OVK_OVF_CMD_CREATE_H */
