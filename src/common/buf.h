/* buf: reference-counted read chunks from a per-worker pool.
 *
 * Bytes read from a socket land in a chunk; forwarding them means writing a
 * slice of the chunk and holding a reference until the write completes, so the
 * proxy never copies payload. A chunk maps onto uv_buf_t. The pool keeps a
 * bounded number of free chunks so steady traffic does not touch malloc.
 */
#ifndef FL_BUF_H
#define FL_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define FL_CHUNK_CAP (64 * 1024 - 64)
#define FL_POOL_MAX_FREE 64

struct fl_pool;

struct fl_chunk {
    struct fl_chunk *next; /* free list link */
    struct fl_pool *pool;
    uint32_t refs;
    uint32_t len; /* bytes filled */
    char data[FL_CHUNK_CAP];
};

struct fl_pool {
    struct fl_chunk *free;
    unsigned n_free;
    unsigned n_live; /* chunks handed out and not yet returned */
};

/* Returns a chunk with one reference, or NULL when out of memory. */
struct fl_chunk *fl_chunk_get(struct fl_pool *pool);
static inline struct fl_chunk *fl_chunk_ref(struct fl_chunk *c)
{
    c->refs++;
    return c;
}
/* Drops a reference; the last one returns the chunk to its pool. Accepts NULL. */
void fl_chunk_unref(struct fl_chunk *c);
void fl_pool_drain(struct fl_pool *pool);

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
