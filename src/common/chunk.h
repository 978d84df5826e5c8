/* chunk: reference-counted read chunks from a per-worker pool.
 *
 * Bytes read from a socket land in a chunk; forwarding them means writing a
 * slice of the chunk and holding a reference until the write completes, so the
 * proxy never copies payload. A chunk maps onto uv_buf_t. The pool keeps a
 * bounded number of free chunks so steady traffic does not touch malloc.
 */
#ifndef FL_CHUNK_H
#define FL_CHUNK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define FL_CHUNK_CAP (64 * 1024 - 64)
#define FL_CHUNK_POOL_MAX_FREE 64

struct fl_chunk_pool;

struct fl_chunk {
    struct fl_chunk *next; /* free list link */
    struct fl_chunk_pool *pool;
    uint32_t refs;
    uint32_t len; /* bytes filled */
    char data[FL_CHUNK_CAP];
};

struct fl_chunk_pool {
    struct fl_chunk *free;
    unsigned n_free;
    unsigned n_live; /* chunks handed out and not yet returned */
};

/* Returns a chunk with one reference, or NULL when out of memory. */
struct fl_chunk *fl_chunk_get(struct fl_chunk_pool *pool);
static inline struct fl_chunk *fl_chunk_ref(struct fl_chunk *c)
{
    c->refs++;
    return c;
}
/* Drops a reference; the last one returns the chunk to its pool. Accepts NULL. */
void fl_chunk_unref(struct fl_chunk *c);
void fl_chunk_pool_drain(struct fl_chunk_pool *pool);

#endif
