/* SPDX-License-Identifier: Apache-2.0 */
/*
 * guard.c - guest memory that a front end may shrink under us.
 *
 * The front end's memory comes as file descriptors we map. A front end that
 * truncates such a file afterwards makes every access past the new end
 * fault with SIGBUS, on whichever thread touches it (a queue thread reading
 * a ring, the engine copying data). Two defences:
 *  - vu_guard_seal adds F_SEAL_SHRINK where the file takes seals (a memfd
 *    made with MFD_ALLOW_SEALING and not yet sealed against sealing), so
 *    the truncation fails in the front end instead;
 *  - every mapping is registered here. A SIGBUS from a page inside a
 *    registered mapping is contained: the handler maps an anonymous zero
 *    page over the faulting page (MAP_FIXED, one mmap system call, no lock
 *    and no allocation) and returns, so the access completes on memory that
 *    is ours, and it records the fault on the device. The queue threads
 *    see the record after their next step and break their queues with a
 *    message that says what happened. Nothing is unwound: no lock held by
 *    the engine is skipped, the interrupted code simply sees zeros where
 *    the guest's bytes were, which it must survive anyway (guest memory is
 *    untrusted), and the core fails each request that was in flight
 *    meanwhile with IOERR (struct vblk_mem's faults), so no zeros are
 *    acknowledged as the guest's data. A SIGBUS anywhere else goes to the handler that was
 *    there before (or the default action: the process dies as it would
 *    have).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "vhost_user.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

/* mappings of every device of this process (regions, inflight records) */
#define GUARD_SLOTS 1024

struct guard_slot {
	atomic_bool used;        /* claimed by vu_guard_add */
	_Atomic uintptr_t start; /* published last (release); 0: empty */
	uintptr_t end;
	uintptr_t page;          /* the mapping's page size */
	struct vu_dev *dev;
};

static struct guard_slot slots[GUARD_SLOTS];
static struct sigaction old_action;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

/* A SIGBUS that is not ours: what would have happened without us. */
static void pass_on(int sig, siginfo_t *si, void *uc)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	if ((old_action.sa_flags & SA_SIGINFO) && old_action.sa_sigaction) {
		old_action.sa_sigaction(sig, si, uc);
		return;
	}
	if (old_action.sa_handler == SIG_IGN)
		return;
	if (old_action.sa_handler != SIG_DFL) {
		old_action.sa_handler(sig);
		return;
	}
	sigaction(SIGBUS, &dfl, NULL);
	/* a fault repeats when we return; a sent signal must be raised */
	if (si->si_code <= 0)
		raise(SIGBUS);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	int saved = errno;

	if (si->si_code > 0) {
		for (unsigned i = 0; i < GUARD_SLOTS; i++) {
			struct guard_slot *s = &slots[i];
			uintptr_t start = atomic_load_explicit(
				&s->start, memory_order_acquire);
			uintptr_t p;

			if (!start || a < start || a >= s->end)
				continue;
			p = a & ~(s->page - 1);
			if (mmap((void *)p, s->page, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
				 0) == MAP_FAILED)
				break;
			atomic_compare_exchange_strong(&s->dev->mem_fault_off,
						       &(uint64_t){ UINT64_MAX },
						       (uint64_t)(p - start));
			atomic_fetch_add(&s->dev->mem_faults, 1);
			errno = saved;
			return;
		}
	}
	errno = saved;
	pass_on(sig, si, uc);
}

static void install(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus,
				.sa_flags = SA_SIGINFO | SA_ONSTACK };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old_action);
}

bool vu_guard_seal(int fd)
{
	int seals = fcntl(fd, F_GET_SEALS);

	if (seals < 0)
		return false; /* not a file that takes seals */
	if (!(seals & F_SEAL_SHRINK) && !(seals & F_SEAL_SEAL) &&
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0)
		seals |= F_SEAL_SHRINK;
	return seals & F_SEAL_SHRINK;
}

int vu_guard_add(struct vu_dev *d, void *map, size_t len, int fd)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	struct statfs fs;
	struct stat st;

	/* huge pages: the fault covers one, and so must the replacement */
	if (fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC &&
	    fstat(fd, &st) == 0 && st.st_blksize > 0 &&
	    ((uintptr_t)st.st_blksize & ((uintptr_t)st.st_blksize - 1)) == 0)
		page = (uintptr_t)st.st_blksize;
	pthread_once(&installed, install);
	for (unsigned i = 0; i < GUARD_SLOTS; i++) {
		struct guard_slot *s = &slots[i];
		bool no = false;

		if (!atomic_compare_exchange_strong(&s->used, &no, true))
			continue;
		s->end = (uintptr_t)map + len;
		s->page = page;
		s->dev = d;
		atomic_store_explicit(&s->start, (uintptr_t)map,
				      memory_order_release);
		return 0;
	}
	return -ENOSPC;
}

void vu_guard_remove(void *map)
{
	for (unsigned i = 0; i < GUARD_SLOTS; i++) {
		struct guard_slot *s = &slots[i];

		if (atomic_load(&s->used) &&
		    atomic_load(&s->start) == (uintptr_t)map) {
			atomic_store(&s->start, 0);
			atomic_store(&s->used, false);
			return;
		}
	}
}
