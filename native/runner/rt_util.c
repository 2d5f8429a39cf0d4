#define _POSIX_C_SOURCE 200809L
#include "rt_util.h"

#include <errno.h>
#include <math.h>
#include <sys/resource.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One message per thread: a libalignts call clears it on entry and copies it into its handle on failure, so
   handles used from different threads never share it. */
static RT_TLS char g_error[2048];
static RT_TLS int g_has_error = 0;
static RT_TLS int g_status = 0;

static void record(int status, const char *fmt, va_list ap) {
    if (!g_has_error) {
        vsnprintf(g_error, sizeof g_error, fmt, ap);
        g_has_error = 1;
        g_status = status;
    }
}

int rt_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    record(0, fmt, ap);
    va_end(ap);
    return -1;
}

int rt_fail_as(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    record(status, fmt, ap);
    va_end(ap);
    return -1;
}

const char *rt_error(void) { return g_has_error ? g_error : "unknown error"; }
int rt_error_status(void) { return g_has_error ? g_status : 0; }

void rt_clear_error(void) {
    g_has_error = 0;
    g_status = 0;
    g_error[0] = '\0';
}

void *rt_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) rt_fail_as(RT_STATUS_MEMORY, "out of memory (asked for %zu bytes)", n);
    return p;
}

void *rt_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) rt_fail_as(RT_STATUS_MEMORY, "out of memory (asked for %zu x %zu bytes)", count, size);
    return p;
}

int rt_read_file(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    *out = NULL;
    *len = 0;
    if (!f) return rt_fail("cannot open %s: %s", path, strerror(errno));
    for (;;) {
        if (n + 65536 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 131072;
            char *nb = (char *)realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return rt_fail("out of memory reading %s", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return rt_fail("error reading %s", path);
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

char *rt_join(const char *dir, const char *rel) {
    size_t a = strlen(dir), b = strlen(rel);
    char *p = (char *)rt_malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, rel, b + 1);
    return p;
}

void rt_format_double(double x, char *buf, size_t size) {
    int p;
    if (isnan(x)) {
        snprintf(buf, size, "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(buf, size, x > 0 ? "inf" : "-inf");
        return;
    }
    for (p = 1; p <= 17; p++) {
        snprintf(buf, size, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return;
    }
}

double rt_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

long rt_peak_rss_kib(void) {
    struct rusage ru;
    char line[128];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmHWM:", 6)) kib = strtol(line + 6, NULL, 10);
        fclose(f);
    }
    if (kib < 0 && getrusage(RUSAGE_SELF, &ru) == 0) kib = ru.ru_maxrss;
    return kib;
}
