/* slab: small objects by size class, per worker. */
#ifndef FL_SLAB_H
#define FL_SLAB_H

#include <stddef.h>

/* Small objects by size class, for libraries that allocate and free a handful
 * of objects per request (nghttp2: streams, queued frames, header copies,
 * HPACK entries). glibc's per-thread cache holds only 7 blocks per size, so a
 * burst of streams goes down its slow path; these free lists are per worker
 * and hold up to FL_SLAB_CLASS_BYTES of free blocks per class. Larger requests
 * go to malloc. Not thread-safe: one slab per worker loop. */
#define FL_SLAB_CLASSES 7 /* 32, 64, ... 2048 bytes */
#define FL_SLAB_CLASS_BYTES (128 * 1024)

struct fl_slab {
    void *free[FL_SLAB_CLASSES];
    unsigned n_free[FL_SLAB_CLASSES];
};

/* Returns a block of at least n bytes aligned to 16, or NULL. */
void *fl_slab_alloc(struct fl_slab *s, size_t n);
/* Returns p (from fl_slab_alloc or fl_slab_realloc on s) to s. Accepts NULL. */
void fl_slab_free(struct fl_slab *s, void *p);
/* realloc(3) for blocks of s. */
void *fl_slab_realloc(struct fl_slab *s, void *p, size_t n);
/* Frees the cached blocks; live blocks stay valid. */
void fl_slab_drain(struct fl_slab *s);

#endif
