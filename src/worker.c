#include "worker.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "listener.h"

void fl_worker_init(struct fl_worker *w, uv_loop_t *loop, int index)
{
    memset(w, 0, sizeof(*w));
    w->loop = loop;
    w->index = index;
    fl_logbuf_init(&w->log, loop);
    fl_rng_seed(&w->rng, ((uint64_t)uv_hrtime() << 8) ^ (uint64_t)index);
}

struct fl_policy *fl_worker_set_policy(struct fl_worker *w, struct fl_policy *p)
{
    struct fl_policy *old = w->policy;
    w->policy = fl_policy_ref(p);
    if (p->has_seed)
        fl_rng_seed(&w->rng, p->seed + (uint64_t)w->index * 0x9e3779b97f4a7c15ull);
    return old;
}

void fl_worker_drain(struct fl_worker *w)
{
    struct fl_conn *c, *next;
    w->draining = 1;
    fl_listeners_close_all(w);
    for (c = w->conns; c; c = next) {
        next = c->next;
        c->close_when_idle = 1;
        if (c->ops && c->ops->idle && c->ops->idle(c))
            fl_conn_close(c, 0);
    }
    if (w->n_conns == 0 && w->on_empty)
        w->on_empty(w);
}

void fl_worker_close_all(struct fl_worker *w)
{
    struct fl_conn *c, *next;
    for (c = w->conns; c; c = next) {
        next = c->next;
        fl_conn_close(c, 0);
    }
}

void fl_worker_fini(struct fl_worker *w)
{
    fl_pool_drain(&w->pool);
    fl_slab_drain(&w->slab);
    fl_conn_pool_drain(w);
    fl_logbuf_fini(&w->log);
    fl_policy_unref(w->policy);
    w->policy = NULL;
}
