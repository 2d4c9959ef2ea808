/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ring_tsan.h - what ThreadSanitizer cannot see of io_uring rings.
 *
 * liburing maps and unmaps a ring's memory with raw syscalls, which TSan
 * does not intercept: when one thread's ring is unmapped and another
 * thread's new ring is mapped at the same address, TSan takes the two
 * threads' accesses to that memory for a race (test_grain_cache's readers,
 * each with its own queue, did so once in a few runs). The kernel orders
 * an unmap before any later map of the same address; ring_unmapping()
 * before io_uring_queue_exit and ring_mapped() after io_uring_queue_init
 * say so, through one sync object for all rings. They are empty outside
 * TSan builds.
 */
#ifndef OVK_BLOCKENGINE_RING_TSAN_H
#define OVK_BLOCKENGINE_RING_TSAN_H

#ifndef __has_feature
#define __has_feature(x) 0
#endif

#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
#include <sanitizer/tsan_interface.h>

extern char ring_tsan_sync; /* queue.c */

static inline void ring_unmapping(void)
{
	__tsan_release(&ring_tsan_sync);
}

static inline void ring_mapped(void)
{
	__tsan_acquire(&ring_tsan_sync);
}
#else
static inline void ring_unmapping(void)
{
}

static inline void ring_mapped(void)
{
}
#endif

#endif /* OVK_BLOCKENGINE_RING_TSAN_H */
