#define _POSIX_C_SOURCE 200809L
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt_util.h"

static int bad(const char *path, const char *what) {
    return rt_fail("%s: %s; expected a float32 [vocab, d] .npy table written by np.save ('<f4', C order). Re-export "
                   "the backbone bundle.", path, what);
}

int npy_table_open(const char *path, npy_table *t) {
    struct stat st;
    const unsigned char *p;
    const char *h, *s;
    size_t hlen, off, n;
    unsigned long long rows, cols;
    char hdr[512];
    int fd;
    memset(t, 0, sizeof *t);
    if ((fd = open(path, O_RDONLY)) < 0) return rt_fail("cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || st.st_size < 16) {
        close(fd);
        return bad(path, "too short for a .npy file");
    }
    t->map_len = (size_t)st.st_size;
    t->map = mmap(NULL, t->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (t->map == MAP_FAILED) {
        t->map = NULL;
        return rt_fail("cannot map %s: %s", path, strerror(errno));
    }
    p = (const unsigned char *)t->map;
    if (memcmp(p, "\x93NUMPY", 6) != 0) {
        npy_table_close(t);
        return bad(path, "no .npy magic");
    }
    if (p[6] == 1) {
        hlen = (size_t)p[8] | ((size_t)p[9] << 8);
        off = 10;
    } else if (p[6] == 2 || p[6] == 3) {
        hlen = (size_t)p[8] | ((size_t)p[9] << 8) | ((size_t)p[10] << 16) | ((size_t)p[11] << 24);
        off = 12;
    } else {
        npy_table_close(t);
        return bad(path, "an unknown .npy version");
    }
    if (hlen >= sizeof hdr || off + hlen > t->map_len) {
        npy_table_close(t);
        return bad(path, "a header longer than the file or than 511 bytes");
    }
    memcpy(hdr, p + off, hlen);
    hdr[hlen] = '\0';
    h = hdr;
    if (!strstr(h, "'descr': '<f4'") || !strstr(h, "'fortran_order': False") || !(s = strstr(h, "'shape': ("))) {
        npy_table_close(t);
        return bad(path, "another dtype, Fortran order or no shape");
    }
    if (sscanf(s, "'shape': (%llu, %llu)", &rows, &cols) != 2 || rows == 0 || cols == 0) {
        npy_table_close(t);
        return bad(path, "a shape that is not 2-D");
    }
    n = (size_t)rows * (size_t)cols;
    if ((unsigned long long)n / cols != rows || n > (SIZE_MAX - off - hlen) / 4 || off + hlen + n * 4 != t->map_len ||
        (off + hlen) % 4 != 0) {
        npy_table_close(t);
        return bad(path, "a data size that does not match its shape (truncated?)");
    }
    t->data = (const float *)(p + off + hlen);
    t->rows = (size_t)rows;
    t->cols = (size_t)cols;
    return 0;
}

void npy_table_close(npy_table *t) {
    if (t->map) munmap(t->map, t->map_len);
    memset(t, 0, sizeof *t);
}
