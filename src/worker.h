/* worker: one libuv loop with its listeners, connections, pools and random state. */
#ifndef FL_WORKER_H
#define FL_WORKER_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "fault.h"
#include "faultlog.h"
#include "policy.h"

struct fl_conn;
struct fl_listener;

struct fl_wreq;

struct fl_worker {
    uv_loop_t *loop;
    int index;
    struct fl_pool pool;
    struct fl_slab slab; /* nghttp2's small objects */
    struct fl_wreq *free_wreqs;
    unsigned n_free_wreqs;
    struct fl_rng rng;
    struct fl_policy *policy; /* current snapshot (one reference) */
    struct fl_logbuf log;
    struct fl_conn *conns;
    unsigned n_conns;
    struct fl_listener *listeners;
    int draining;
    void (*on_empty)(struct fl_worker *w); /* called when draining and the last conn closed */
};

/* Monotonic milliseconds of the worker's loop (cached per iteration). */
static inline uint64_t fl_worker_now(const struct fl_worker *w)
{
    return uv_now(w->loop);
}

/* Adopts p (takes a new reference), reseeding the random state when the policy
 * has a seed. Returns the previous snapshot's reference to the caller. */
struct fl_policy *fl_worker_set_policy(struct fl_worker *w, struct fl_policy *p);

void fl_worker_init(struct fl_worker *w, uv_loop_t *loop, int index);
/* Frees pools and drops the policy; connections and listeners must be closed. */
void fl_worker_fini(struct fl_worker *w);

/* Stops accepting; closes idle connections now and the others once idle. */
void fl_worker_drain(struct fl_worker *w);
/* Closes every connection at once (drain deadline passed). */
void fl_worker_close_all(struct fl_worker *w);

uint64_t fl_next_conn_id(void);

#endif
