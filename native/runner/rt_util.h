/* Small shared helpers of alignts-run: one error message buffer, checked allocation, whole-file reads. */
#ifndef ALIGNTS_RT_UTIL_H
#define ALIGNTS_RT_UTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define RT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define RT_PRINTF(a, b)
#endif

/* Thread-local storage (the error message is per thread, see rt_util.c). */
#if defined(__GNUC__) || defined(__clang__)
#define RT_TLS __thread
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define RT_TLS _Thread_local
#else
#error "libalignts needs thread-local storage (GCC, Clang or a C11 compiler)"
#endif

/* Status kinds for rt_fail_as (the values of alignts_status in alignts.h). */
#define RT_STATUS_ARG (-1)
#define RT_STATUS_BUNDLE (-2)
#define RT_STATUS_INPUT (-3)
#define RT_STATUS_MEMORY (-4)
#define RT_STATUS_RUNTIME (-5)

/* Record an error message (what was expected, what came, the fix) and return -1. The first error wins
 * until rt_clear_error; later calls change nothing, so the root cause is what the caller reports. The
 * message is per thread. rt_fail_as also records a status kind (RT_STATUS_*; rt_fail: 0 = the caller's
 * default). */
int rt_fail(const char *fmt, ...) RT_PRINTF(1, 2);
int rt_fail_as(int status, const char *fmt, ...) RT_PRINTF(2, 3);
const char *rt_error(void);
int rt_error_status(void);
void rt_clear_error(void);

/* malloc/calloc that record "out of memory" on failure (return NULL). */
void *rt_malloc(size_t n);
void *rt_calloc(size_t count, size_t size);

/* Read a whole file into a NUL-terminated buffer (*len excludes the NUL). 0 or -1 (rt_fail). */
int rt_read_file(const char *path, char **out, size_t *len);

/* path = dir + "/" + rel (malloc'd) or NULL. */
char *rt_join(const char *dir, const char *rel);

/* Shortest "%.{p}g" (p = 1..17) that reads back as exactly x (Python's repr digits). buf >= 32 chars. */
void rt_format_double(double x, char *buf, size_t size);

/* Milliseconds on the monotonic clock (for durations). */
double rt_now_ms(void);

/* Peak resident memory of this process in KiB: Linux's VmHWM (of this program's address space; getrusage's
 * ru_maxrss keeps the parent's peak across fork + exec), else ru_maxrss; -1 if neither is known. */
long rt_peak_rss_kib(void);

#ifdef __cplusplus
}
#endif

#endif
