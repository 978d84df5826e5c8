/* file: see file.h. */
#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int fl_file_read(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int e = 0;

    if (!f)
        return -errno;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                e = -ENOMEM;
                break;
            }
            buf = nb;
        }
        errno = 0;
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n > max) {
            e = -EFBIG;
            break;
        }
        if (r == 0) {
            /* A directory opens fine and fails here with EISDIR. */
            if (ferror(f))
                e = errno ? -errno : -EIO;
            break;
        }
    }
    fclose(f);
    if (e < 0) {
        free(buf);
        return e;
    }
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return 0;
}
