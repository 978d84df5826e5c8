/* sbuf: a growable text buffer for building responses (admin API bodies,
 * Prometheus text). Never used on a proxy hot path. */
#ifndef FL_SBUF_H
#define FL_SBUF_H

#include <stddef.h>

/* Zero-initialise to start. p is NUL-terminated once anything was added. On
 * allocation failure oom is set and further additions are ignored. */
struct fl_sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

void fl_sbuf_add(struct fl_sbuf *b, const char *s, size_t n);
/* Appends the formatted text, whatever its length (a failed allocation sets oom). */
void fl_sbuf_printf(struct fl_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees the text. Accepts a zeroed buffer. */
void fl_sbuf_free(struct fl_sbuf *b);

#endif
