/* SPDX-License-Identifier: Apache-2.0 */
/* test_ovf_resolve.c - paths below a package or unpack folder: the
 * openat2 resolver and the O_NOFOLLOW walk used where the kernel lacks
 * openat2 both refuse a symlink at any level and ".." and open what is
 * really inside; the walk creates folders when asked. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ovf_i.h"

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n",        \
				__FILE__, __LINE__, #c);                    \
			exit(1);                                            \
		}                                                           \
	} while (0)

/* A symlink is refused as ELOOP (O_NOFOLLOW) or ENOTDIR (O_DIRECTORY). */
static bool refused(int r)
{
	return r == -ELOOP || r == -ENOTDIR || r == -EXDEV;
}

/* Runs every case through one opener: 0 = openat2 path, 1 = the walk. */
static void check_opener(int dfd, int walk)
{
	int fd;

#define OPEN(rel) (walk ? ovf_openat_walk(dfd, rel, O_RDONLY, 0, false) \
			: ovf_openat_beneath(dfd, rel, O_RDONLY, 0))
	fd = OPEN("a/b/file");
	CHECK(fd >= 0);
	{
		char c = 0;

		CHECK(read(fd, &c, 1) == 1 && c == 'x');
		close(fd);
	}
	fd = OPEN("./a//b/file");
	CHECK(fd >= 0);
	close(fd);
	CHECK(refused(OPEN("up/secret")));      /* symlinked folder */
	CHECK(refused(OPEN("a/b/lnk")));        /* symlinked file */
	CHECK(refused(OPEN("a/uplink/secret"))); /* symlink deeper down */
	CHECK(refused(OPEN("../outside/secret")));
	CHECK(refused(OPEN("a/../../outside/secret")));
	CHECK(OPEN("a/b/missing") == -ENOENT);
#undef OPEN
}

int main(void)
{
	char tmpl[] = "/tmp/ovk-resolve-XXXXXX", path[512];
	const char *root = mkdtemp(tmpl), *leaf = NULL;
	int dfd, pfd, fd;
	struct stat st;

	CHECK(root);
	snprintf(path, sizeof(path), "mkdir -p %s/pkg/a/b %s/outside && "
		 "echo x > %s/pkg/a/b/file && echo s > %s/outside/secret && "
		 "ln -s ../outside %s/pkg/up && ln -s file %s/pkg/a/b/lnk && "
		 "ln -s ../../outside %s/pkg/a/uplink",
		 root, root, root, root, root, root, root);
	CHECK(system(path) == 0);
	snprintf(path, sizeof(path), "%s/pkg", root);
	dfd = open(path, O_RDONLY | O_DIRECTORY);
	CHECK(dfd >= 0);
	check_opener(dfd, 0);
	check_opener(dfd, 1);

	/* the walk creates folders on the way, never through a symlink */
	pfd = ovf_openat_parent(dfd, "new/deeper/f", true, &leaf);
	CHECK(pfd >= 0 && !strcmp(leaf, "f"));
	close(pfd);
	CHECK(fstatat(dfd, "new/deeper", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	      S_ISDIR(st.st_mode));
	CHECK(refused(ovf_openat_parent(dfd, "up/made/f", true, &leaf)));
	snprintf(path, sizeof(path), "%s/outside/made", root);
	CHECK(stat(path, &st) < 0 && errno == ENOENT);
	fd = ovf_openat_walk(dfd, "new/deeper/f", O_WRONLY | O_CREAT | O_EXCL,
			     0644, true);
	CHECK(fd >= 0);
	close(fd);
	close(dfd);

	snprintf(path, sizeof(path), "rm -rf %s", root);
	CHECK(system(path) == 0);
	puts("ok");
	return 0;
}
