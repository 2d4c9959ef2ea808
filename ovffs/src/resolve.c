/* SPDX-License-Identifier: Apache-2.0 */
/* resolve.c - the one rule for which files of a package may be touched, and
 * opening them: an href is a relative name inside the package, and a path
 * below a package or unpack folder is resolved with no symlink at any level
 * and without leaving that folder. pack, unpack, validate, create and every
 * reader go through here. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ovf_i.h"

/* An href names a file of the package: relative, no "..", no URL. */
int ovf_href_check(const char *href)
{
	if (!href || !ovf_name_is_safe(href) || strstr(href, "://"))
		return ovf_err(-EINVAL, "ovf:href \"%s\" is not a relative name inside the package",
			       href ? href : "(null)");
	return 0;
}

/* Opens the folder comp below dirfd; with make, creates it first. A
   symlink there fails with ELOOP (O_NOFOLLOW) or ENOTDIR. */
static int open_subdir(int dirfd, const char *comp, bool make)
{
	int fd;

	if (make && mkdirat(dirfd, comp, 0755) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(dirfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Opens the folder that holds rel's last component, walking from dirfd
   one component at a time, each opened with O_NOFOLLOW from the one
   before (created first with make). *leaf points at the last component in
   rel. Returns a new fd or -errno: ELOOP or ENOTDIR for a symlink on the
   way, EXDEV for "..", EISDIR when rel ends in a folder. */
int ovf_openat_parent(int dirfd, const char *rel, bool make, const char **leaf)
{
	const char *comp = rel, *slash;
	int cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);

	if (cur < 0)
		return -errno;
	while ((slash = strchr(comp, '/'))) {
		size_t n = (size_t)(slash - comp);
		char name[256];
		int next;

		if (n >= sizeof(name)) {
			close(cur);
			return -ENAMETOOLONG;
		}
		memcpy(name, comp, n);
		name[n] = '\0';
		comp = slash + 1;
		if (!n || !strcmp(name, "."))
			continue;
		if (!strcmp(name, "..")) {
			close(cur);
			return -EXDEV;
		}
		next = open_subdir(cur, name, make);
		close(cur);
		if (next < 0)
			return next;
		cur = next;
	}
	if (!strcmp(comp, "..") || !*comp || !strcmp(comp, ".")) {
		close(cur);
		return !strcmp(comp, "..") ? -EXDEV : -EISDIR;
	}
	*leaf = comp;
	return cur;
}

/* Walks rel from dirfd (ovf_openat_parent) and opens the last component
   with flags | O_NOFOLLOW. Returns the fd or -errno. */
int ovf_openat_walk(int dirfd, const char *rel, int flags, mode_t mode,
		    bool make)
{
	const char *leaf;
	int pfd = ovf_openat_parent(dirfd, rel, make, &leaf), fd;

	if (pfd < 0)
		return pfd;
	fd = openat(pfd, leaf, flags | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		fd = -errno;
	close(pfd);
	return fd;
}

/* Opens rel below dirfd with no symlink at any level and without leaving
   dirfd: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel
   has it, else the component walk. Returns the fd or -errno (ELOOP for a
   symlink, EXDEV for a path leaving the folder). */
int ovf_openat_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	long fd;

	if (!ovf_name_is_safe(rel))
		return -EXDEV;
	fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	/* no openat2 (before Linux 5.6) or a filter refusing it */
	if (errno != ENOSYS && errno != EPERM && errno != E2BIG)
		return -errno;
	return ovf_openat_walk(dirfd, rel, flags, mode, false);
}

/* Why a path below a package folder could not be opened, as a phrase. */
const char *ovf_beneath_strerror(int err)
{
	switch (err) {
	case -ELOOP:
		return "refused: a symlink on the way (package files are never reached through symlinks)";
	case -EXDEV:
		return "refused: the path leaves the folder";
	case -ENOTDIR:
		return "refused: a part of the path is not a folder (or is a symlink)";
	default:
		return strerror(-err);
	}
}
