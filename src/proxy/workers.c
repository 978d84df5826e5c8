#include "workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultlog.h"
#include "listener.h"
#include "log.h"

/* A worker beyond the first runs its own loop on its own thread. The main
 * thread hands it work through the mailbox (under mu) and wakes it with async. */
struct wthread {
    struct fl_worker w; /* first: the worker's on_empty gets back to its thread */
    uv_loop_t loop;
    uv_thread_t tid;
    uv_async_t async;
    uv_mutex_t mu;
    struct fl_policy *pending; /* policy to adopt (reference) */
    int cmd_drain, cmd_close_all, cmd_recheck;
    char **close_scopes; /* listeners whose connections are to be closed (owned) */
    size_t n_close_scopes;
    struct fl_conn_handoff *handoffs; /* connections to serve, oldest first */
    struct fl_conn_handoff **handoffs_tail;
    atomic_int empty; /* drained: no connection left */
    int started;
};

static struct {
    uv_loop_t *loop;
    struct fl_worker w0;
    int w0_ready;
    struct wthread *wt[FL_WORKERS_MAX];
    int n;
    int draining;
} workers;

/* Worker thread: what the main thread posted. */
static void wt_async_cb(uv_async_t *a)
{
    struct wthread *t = a->data;
    struct fl_policy *p;
    struct fl_conn_handoff *hs;
    int drain, close_all, recheck;
    char err[512];
    char **scopes;
    size_t n_scopes;

    uv_mutex_lock(&t->mu);
    p = t->pending;
    t->pending = NULL;
    drain = t->cmd_drain;
    close_all = t->cmd_close_all;
    recheck = t->cmd_recheck;
    t->cmd_drain = t->cmd_close_all = t->cmd_recheck = 0;
    scopes = t->close_scopes;
    n_scopes = t->n_close_scopes;
    t->close_scopes = NULL;
    t->n_close_scopes = 0;
    hs = t->handoffs;
    t->handoffs = NULL;
    t->handoffs_tail = &t->handoffs;
    uv_mutex_unlock(&t->mu);

    while (hs) {
        struct fl_conn_handoff *h = hs;
        hs = h->next;
        if (t->w.draining) {
            fl_conn_handoff_free(h); /* shutting down: the client sees a close */
            continue;
        }
        int e = fl_conn_adopt(&t->w, h);
        if (e < 0)
            fl_warn("worker %d: cannot take a connection: %s", t->w.index, uv_strerror(e));
    }

    if (p) {
        if (!t->w.draining && fl_listener_apply(&t->w, p, 1, err, sizeof(err)) < 0)
            fl_error("worker %d: %s", t->w.index, err);
        fl_policy_unref(fl_worker_set_policy(&t->w, p));
        fl_policy_unref(p);
    }
    if (p || recheck)
        fl_conn_recheck_all(&t->w);
    for (size_t i = 0; i < n_scopes; i++) {
        fl_conn_close_scope(&t->w, scopes[i]);
        free(scopes[i]);
    }
    free(scopes);
    if (drain && !t->w.draining) {
        fl_listener_close_all(&t->w);
        fl_conn_drain_all(&t->w);
    }
    if (close_all)
        fl_conn_close_all(&t->w);
}

/* Worker thread: drained and empty, so its loop may end. */
static void wt_on_empty(struct fl_worker *w)
{
    struct wthread *t = (struct wthread *)w;
    atomic_store(&t->empty, 1);
    uv_close((uv_handle_t *)&t->async, NULL);
    fl_worker_close_handles(w);
}

static void wt_main(void *arg)
{
    struct wthread *t = arg;
    char name[16]; /* shown by top -H and ps -L, and used by the benchmarks */
    snprintf(name, sizeof(name), "fl-worker-%d", t->w.index);
    pthread_setname_np(pthread_self(), name);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    fl_faultlog_buf_flush_sync(&t->w.log);
}

static void wt_post(struct wthread *t, struct fl_policy *p, int drain, int close_all)
{
    uv_mutex_lock(&t->mu);
    if (p) {
        fl_policy_unref(t->pending);
        t->pending = fl_policy_ref(p);
    }
    t->cmd_drain |= drain;
    t->cmd_close_all |= close_all;
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->async);
}

int fl_workers_init(uv_loop_t *loop, char *err, size_t errlen)
{
    memset(&workers, 0, sizeof(workers));
    workers.loop = loop;
    int e = fl_worker_init(&workers.w0, loop, 0);
    if (e < 0) {
        snprintf(err, errlen,
                 "cannot create the timer for delays: %s; raise the open-files limit "
                 "(ulimit -n) if it is exhausted",
                 uv_strerror(e));
        return e;
    }
    workers.w0_ready = 1;
    workers.n = 1;
    return 0;
}

struct fl_worker *fl_workers_main(void)
{
    return &workers.w0;
}

int fl_workers_apply(struct fl_policy *p, char *err, size_t errlen)
{
    int e = fl_listener_apply(&workers.w0, p, workers.n > 1, err, errlen);
    if (e < 0)
        return e;
    fl_policy_unref(fl_worker_set_policy(&workers.w0, p));
    fl_conn_recheck_all(&workers.w0);
    for (int i = 1; i < workers.n; i++)
        wt_post(workers.wt[i], p, 0, 0);
    return 0;
}

void fl_workers_recheck(void)
{
    if (workers.w0_ready)
        fl_conn_recheck_all(&workers.w0);
    for (int i = 1; i < workers.n; i++) {
        struct wthread *t = workers.wt[i];
        uv_mutex_lock(&t->mu);
        t->cmd_recheck = 1;
        uv_mutex_unlock(&t->mu);
        uv_async_send(&t->async);
    }
}

void fl_workers_close_scope(const char *scope)
{
    if (workers.w0_ready)
        fl_conn_close_scope(&workers.w0, scope);
    for (int i = 1; i < workers.n; i++) {
        struct wthread *t = workers.wt[i];
        char *dup = strdup(scope);
        uv_mutex_lock(&t->mu);
        char **n = dup ? realloc(t->close_scopes, (t->n_close_scopes + 1) * sizeof(*n)) : NULL;
        if (n) {
            t->close_scopes = n;
            t->close_scopes[t->n_close_scopes++] = dup;
            dup = NULL;
        }
        uv_mutex_unlock(&t->mu);
        free(dup);
        uv_async_send(&t->async);
    }
}

int fl_workers_spawn(int n, struct fl_policy *p, char *err, size_t errlen)
{
    if (n > FL_WORKERS_MAX)
        n = FL_WORKERS_MAX;
    if (n <= 1)
        return 0;
    /* Re-open worker 0's sockets with SO_REUSEPORT so the others can share them. */
    fl_listener_close_all(&workers.w0);
    uv_run(workers.loop, UV_RUN_NOWAIT);
    int e = fl_listener_apply(&workers.w0, p, 1, err, errlen);
    if (e < 0)
        return e;
    for (int i = 1; i < n; i++) {
        struct wthread *t = calloc(1, sizeof(*t));
        if (!t) {
            snprintf(err, errlen, "worker %d: out of memory", i);
            return -ENOMEM;
        }
        uv_loop_init(&t->loop);
        e = fl_worker_init(&t->w, &t->loop, i);
        if (e < 0) {
            snprintf(err, errlen, "worker %d: cannot create its timer: %s", i, uv_strerror(e));
            uv_loop_close(&t->loop);
            free(t);
            return e;
        }
        workers.wt[i] = t;
        t->w.on_empty = wt_on_empty;
        uv_mutex_init(&t->mu);
        t->handoffs_tail = &t->handoffs;
        uv_async_init(&t->loop, &t->async, wt_async_cb);
        t->async.data = t;
        workers.n = i + 1;
        fl_policy_unref(fl_worker_set_policy(&t->w, p));
        e = fl_listener_apply(&t->w, p, 1, err, errlen);
        if (e < 0)
            return e;
    }
    for (int i = 1; i < n; i++) {
        if (uv_thread_create(&workers.wt[i]->tid, wt_main, workers.wt[i]) != 0) {
            snprintf(err, errlen, "cannot start worker thread %d; lower --workers", i);
            return -EAGAIN;
        }
        workers.wt[i]->started = 1;
    }
    return 0;
}

int fl_workers_handoff(unsigned n, struct fl_conn_handoff *h)
{
    int i = (int)(n % (unsigned)workers.n);
    if (i == 0)
        return fl_conn_adopt(&workers.w0, h);
    struct wthread *t = workers.wt[i];
    h->next = NULL;
    uv_mutex_lock(&t->mu);
    *t->handoffs_tail = h;
    t->handoffs_tail = &h->next;
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->async);
    return 0;
}

int fl_workers_count(void)
{
    return workers.n;
}

unsigned long fl_workers_connections(int i)
{
    /* Each worker owns its count; a relaxed read of another thread's is enough
     * for a gauge. */
    const struct fl_worker *w = i == 0 ? &workers.w0 : &workers.wt[i]->w;
    return __atomic_load_n(&w->n_conns, __ATOMIC_RELAXED);
}

unsigned long fl_workers_active_connections(void)
{
    unsigned long n = 0;
    for (int i = 0; i < workers.n; i++)
        n += fl_workers_connections(i);
    return n;
}

void fl_workers_drain(void)
{
    if (workers.draining)
        return;
    workers.draining = 1;
    fl_listener_close_all(&workers.w0);
    fl_conn_drain_all(&workers.w0);
    for (int i = 1; i < workers.n; i++)
        wt_post(workers.wt[i], NULL, 1, 0);
}

int fl_workers_empty(void)
{
    if (workers.w0.n_conns)
        return 0;
    for (int i = 1; i < workers.n; i++)
        if (!atomic_load(&workers.wt[i]->empty))
            return 0;
    return 1;
}

void fl_workers_close_all(void)
{
    fl_conn_close_all(&workers.w0);
    for (int i = 1; i < workers.n; i++)
        wt_post(workers.wt[i], NULL, 0, 1);
}

void fl_workers_stop(void)
{
    if (!workers.draining) {
        fl_listener_close_all(&workers.w0);
        fl_conn_close_all(&workers.w0);
        for (int i = 1; i < workers.n; i++)
            wt_post(workers.wt[i], NULL, 1, 1);
        workers.draining = 1;
    }
    for (int i = 1; i < workers.n; i++) {
        struct wthread *t = workers.wt[i];
        if (t->started) {
            uv_thread_join(&t->tid);
        } else {
            fl_listener_close_all(&t->w);
            uv_close((uv_handle_t *)&t->async, NULL);
            fl_worker_close_handles(&t->w);
            uv_run(&t->loop, UV_RUN_DEFAULT);
        }
        fl_policy_unref(t->pending);
        for (size_t k = 0; k < t->n_close_scopes; k++)
            free(t->close_scopes[k]);
        free(t->close_scopes);
        while (t->handoffs) { /* handed over after the worker stopped taking them */
            struct fl_conn_handoff *h = t->handoffs;
            t->handoffs = h->next;
            fl_conn_handoff_free(h);
        }
        fl_conn_pool_drain(&t->w);
        fl_worker_fini(&t->w);
        uv_loop_close(&t->loop);
        uv_mutex_destroy(&t->mu);
        free(t);
        workers.wt[i] = NULL;
    }
    workers.n = workers.w0_ready ? 1 : 0;
    if (workers.w0_ready)
        fl_worker_close_handles(&workers.w0);
}

void fl_workers_fini(void)
{
    if (!workers.w0_ready)
        return;
    /* Every write the loop had queued is done or cancelled; what is left in the
     * buffer goes out synchronously so no fault line is lost. */
    fl_faultlog_buf_flush_sync(&workers.w0.log);
    fl_conn_pool_drain(&workers.w0);
    fl_worker_fini(&workers.w0);
    workers.w0_ready = 0;
}
