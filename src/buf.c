#include "buf.h"

#include <stdlib.h>

struct fl_chunk *fl_chunk_get(struct fl_pool *pool)
{
    struct fl_chunk *c = pool->free;
    if (c) {
        pool->free = c->next;
        pool->n_free--;
    } else {
        c = malloc(sizeof(*c));
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
    struct fl_pool *pool = c->pool;
    pool->n_live--;
    if (pool->n_free >= FL_POOL_MAX_FREE) {
        free(c);
        return;
    }
    c->next = pool->free;
    pool->free = c;
    pool->n_free++;
}

void fl_pool_drain(struct fl_pool *pool)
{
    while (pool->free) {
        struct fl_chunk *c = pool->free;
        pool->free = c->next;
        free(c);
    }
    pool->n_free = 0;
}
