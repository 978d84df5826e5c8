#include "chunk.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Chunks are mapped, not taken from the heap: 64 KiB blocks interleaved with
 * the small per-connection structs fragment the heap, and a burst of reads then
 * pins the heap's high-water mark (with 10,000 idle connections it doubled the
 * RSS). Mapped chunks go back to the kernel when the pool is full. */
static struct fl_chunk *chunk_map(void)
{
    void *m = mmap(NULL, sizeof(struct fl_chunk), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

static void chunk_unmap(struct fl_chunk *c)
{
    munmap(c, sizeof(*c));
}

struct fl_chunk *fl_chunk_get(struct fl_chunk_pool *pool)
{
    struct fl_chunk *c = pool->free;
    if (c) {
        pool->free = c->next;
        pool->n_free--;
    } else {
        c = chunk_map();
        if (!c)
            return NULL;
        c->pool = pool;
    }
    c->next = NULL;
    c->refs = 1;
    c->len = 0;
    pool->n_live++;
    return c;
}

void fl_chunk_unref(struct fl_chunk *c)
{
    if (!c || --c->refs > 0)
        return;
    struct fl_chunk_pool *pool = c->pool;
    pool->n_live--;
    if (pool->n_free >= FL_CHUNK_POOL_MAX_FREE) {
        chunk_unmap(c);
        return;
    }
    c->next = pool->free;
    pool->free = c;
    pool->n_free++;
}

void fl_chunk_pool_drain(struct fl_chunk_pool *pool)
{
    while (pool->free) {
        struct fl_chunk *c = pool->free;
        pool->free = c->next;
        chunk_unmap(c);
    }
    pool->n_free = 0;
}
