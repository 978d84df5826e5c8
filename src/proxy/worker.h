/* worker: one libuv loop's per-thread state: buffer pools, random state, the
 * fault-log buffer, the policy snapshot it decides with, and the queue of held
 * requests. A leaf of the proxy layer: it calls no other proxy module. The
 * connection module (conn.h) and the listener module (listener.h) keep their
 * lists here and own what is on them; workers.h runs the threads. */
#ifndef FL_WORKER_H
#define FL_WORKER_H

#include "compiler.h"

#include <stdint.h>
#include <uv.h>

#include "chunk.h"
#include "slab.h"
#include "fault.h"
#include "faultlog.h"
#include "policy.h"

struct fl_conn;
struct fl_listener;

struct fl_wreq;

/* A held request (delay fault) waiting for its deadline. Embedded in the
 * connection that owns it; the worker keeps the waiting ones in a min-heap
 * behind one timerfd, so a delay ends within microseconds of its deadline
 * instead of on libuv's millisecond clock, which lags by up to a millisecond
 * and would also end some delays early. */
struct fl_hold {
    uint64_t due_ns; /* uv_hrtime() clock */
    unsigned idx;    /* position in the worker's heap plus one; 0: not waiting */
    void (*cb)(struct fl_hold *hd);
};

struct fl_worker {
    uv_loop_t *loop;
    int index;
    struct fl_chunk_pool pool;
    struct fl_slab slab; /* nghttp2's small objects */
    struct fl_wreq *free_wreqs;
    unsigned n_free_wreqs;
    struct fl_rng rng;
    struct fl_policy *policy; /* current snapshot (one reference) */
    struct fl_faultlog_buf log;
    struct fl_conn *conns; /* conn.c's list */
    unsigned n_conns;
    struct fl_listener *listeners; /* listener.c's list */
    int draining;                  /* fl_conn_drain_all ran: no new work */
    /* held requests: min-heap by due_ns, and the timerfd armed at its top */
    struct fl_hold **holds;
    unsigned n_holds, cap_holds;
    int hold_fd;
    uint64_t hold_armed_ns; /* the deadline the timerfd is armed for; 0: none */
    uv_poll_t hold_poll;
    void (*on_empty)(struct fl_worker *w); /* called when draining and the last conn closed */
};

/* Monotonic milliseconds of the worker's loop (cached per iteration). */
static inline uint64_t fl_worker_now(const struct fl_worker *w)
{
    return uv_now(w->loop);
}

/* A delay's deadline: delay_ms after start_ns, in ns on uv_hrtime()'s clock. */
static inline uint64_t fl_worker_deadline_from(uint64_t start_ns, uint64_t delay_ms)
{
    if (delay_ms > (UINT64_MAX - start_ns) / 1000000u)
        return UINT64_MAX; /* absurdly long: never, rather than wrapping to now */
    return start_ns + delay_ms * 1000000u;
}

/* A delay's deadline: delay_ms from now. */
static inline uint64_t fl_worker_deadline(uint64_t delay_ms)
{
    return fl_worker_deadline_from(uv_hrtime(), delay_ms);
}

/* Queues hd to have cb called once due_ns has passed (not before). hd must
 * not be waiting already. Returns 0, or -ENOMEM when the queue cannot grow. */
int fl_worker_hold(struct fl_worker *w, struct fl_hold *hd, uint64_t due_ns,
                   void (*cb)(struct fl_hold *hd)) FL_WUR;
/* Takes hd out of the queue if it waits there; cb is not called. */
void fl_worker_unhold(struct fl_worker *w, struct fl_hold *hd);

/* Adopts p (takes a new reference), reseeding the random state when the policy
 * has a seed. Returns the previous snapshot's reference to the caller. */
struct fl_policy *fl_worker_set_policy(struct fl_worker *w, struct fl_policy *p);

/* Returns 0, or a negative errno when the timer for delays cannot be made. */
int fl_worker_init(struct fl_worker *w, uv_loop_t *loop, int index) FL_WUR;
/* Closes the worker's own handles; the last step before its loop may end. */
void fl_worker_close_handles(struct fl_worker *w);
/* Frees pools and drops the policy; connections, listeners and the worker's
 * handles must be closed, and the connection module's cached write requests
 * freed (fl_conn_pool_drain). */
void fl_worker_fini(struct fl_worker *w);


#endif
