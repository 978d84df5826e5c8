#include "slab.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Each block starts with a 16-byte header naming its class (FL_SLAB_CLASSES
 * for a malloc'd block); the header keeps the caller's bytes 16-aligned. */
struct slab_hdr {
    union {
        struct slab_hdr *next; /* on a free list */
        size_t cls;            /* handed out */
    };
    size_t size; /* usable bytes */
};
_Static_assert(sizeof(struct slab_hdr) == 16, "slab header must keep 16-byte alignment");

static unsigned slab_class(size_t n)
{
    unsigned k = 0;
    size_t sz = 32;
    while (sz < n && k < FL_SLAB_CLASSES) {
        sz <<= 1;
        k++;
    }
    return k;
}

void *fl_slab_alloc(struct fl_slab *s, size_t n)
{
    unsigned k = slab_class(n);
    struct slab_hdr *h;
    if (k < FL_SLAB_CLASSES && s->free[k]) {
        h = s->free[k];
        s->free[k] = h->next;
        s->n_free[k]--;
    } else {
        size_t usable = k < FL_SLAB_CLASSES ? (size_t)32 << k : n;
        h = malloc(sizeof(*h) + usable);
        if (!h)
            return NULL;
        h->size = usable;
    }
    h->cls = k;
    return h + 1;
}

void fl_slab_free(struct fl_slab *s, void *p)
{
    if (!p)
        return;
    struct slab_hdr *h = (struct slab_hdr *)p - 1;
    size_t k = h->cls;
    if (k >= FL_SLAB_CLASSES || s->n_free[k] >= (unsigned)(FL_SLAB_CLASS_BYTES >> (5 + k))) {
        free(h);
        return;
    }
    h->next = s->free[k];
    s->free[k] = h;
    s->n_free[k]++;
}

void *fl_slab_realloc(struct fl_slab *s, void *p, size_t n)
{
    if (!p)
        return fl_slab_alloc(s, n);
    struct slab_hdr *h = (struct slab_hdr *)p - 1;
    if (n <= h->size)
        return p;
    void *q = fl_slab_alloc(s, n);
    if (!q)
        return NULL;
    memcpy(q, p, h->size);
    fl_slab_free(s, p);
    return q;
}

void fl_slab_drain(struct fl_slab *s)
{
    for (unsigned k = 0; k < FL_SLAB_CLASSES; k++) {
        while (s->free[k]) {
            struct slab_hdr *h = s->free[k];
            s->free[k] = h->next;
            free(h);
        }
        s->n_free[k] = 0;
    }
}
