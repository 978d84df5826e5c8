#include "daemon.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "conn.h"
#include "fault.h"
#include "faultlog.h"
#include "listener.h"
#include "log.h"
#include "transparent.h"
#include "worker.h"

#define FL_MAX_WORKERS 64

/* A worker beyond the first runs its own loop on its own thread. The main
 * thread hands it work through cmd (under mu) and wakes it with async. */
struct wthread {
    struct fl_worker w;
    uv_loop_t loop;
    uv_thread_t tid;
    uv_async_t async;
    uv_mutex_t mu;
    struct fl_policy *pending; /* policy to adopt (reference) */
    int cmd_drain, cmd_close_all;
    struct fl_conn_handoff *handoffs; /* connections to serve, oldest first */
    struct fl_conn_handoff **handoffs_tail;
    atomic_int empty; /* drained: no connection left */
    int started;
};

static struct {
    const struct fl_daemon_opts *o;
    uv_loop_t *loop;
    struct fl_worker w0;
    struct wthread *wt[FL_MAX_WORKERS];
    int n_workers;
    struct fl_policy *policy;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    uv_timer_t ttl_timer, drain_timer;
    uint64_t drain_deadline;
    int draining;
    int exit_code;
    int reloading;
} D;

void (*fl_daemon_event_tap)(const char *json, size_t len);

uv_loop_t *fl_daemon_loop(void)
{
    return D.loop;
}

struct fl_policy *fl_daemon_policy(void)
{
    return D.policy;
}

void fl_daemon_event(const char *fmt, ...)
{
    char body[1024], line[1200], ts[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    fl_log_timestamp(ts, sizeof(ts));
    int n = snprintf(line, sizeof(line), "{\"ts\":\"%s\",%s}", ts, body);
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    if (fl_daemon_event_tap)
        fl_daemon_event_tap(line, (size_t)n);
}

/* ---- worker threads ---- */

static void wt_async_cb(uv_async_t *a)
{
    struct wthread *t = a->data;
    struct fl_policy *p;
    int drain, close_all;
    char err[512];

    struct fl_conn_handoff *hs;

    uv_mutex_lock(&t->mu);
    p = t->pending;
    t->pending = NULL;
    drain = t->cmd_drain;
    close_all = t->cmd_close_all;
    t->cmd_drain = t->cmd_close_all = 0;
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
        if (!t->w.draining && fl_listeners_apply(&t->w, p, 1, err, sizeof(err)) < 0)
            fl_error("worker %d: %s", t->w.index, err);
        fl_policy_unref(fl_worker_set_policy(&t->w, p));
        fl_policy_unref(p);
    }
    if (drain && !t->w.draining)
        fl_worker_drain(&t->w);
    if (close_all)
        fl_worker_close_all(&t->w);
}

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
    fl_logbuf_flush_sync(&t->w.log);
}

int fl_daemon_handoff(unsigned n, struct fl_conn_handoff *h)
{
    int i = (int)(n % (unsigned)D.n_workers);
    if (i == 0)
        return fl_conn_adopt(&D.w0, h);
    struct wthread *t = D.wt[i];
    h->next = NULL;
    uv_mutex_lock(&t->mu);
    *t->handoffs_tail = h;
    t->handoffs_tail = &h->next;
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->async);
    return 0;
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

/* ---- policy ---- */

static void ttl_cb(uv_timer_t *t)
{
    (void)t;
    if (!D.policy)
        return;
    fl_warn("policy '%s' expired after its ttl; no faults are injected until a new policy is "
            "applied (faultctl apply, or edit the file and send SIGHUP)",
            D.policy->name);
    fl_daemon_event("\"event\":\"expired\",\"policy\":\"%s\"", D.policy->name);
}

int fl_daemon_check(const struct fl_policy *p, char *err, size_t errlen)
{
    if (p->n_listeners == 0 && p->n_targets == 0) {
        snprintf(err, errlen, "the policy has no 'listeners' and no 'targets'; add a listener "
                              "(listen: 127.0.0.1:15000, upstream: HOST:PORT) or a target");
        return -EINVAL;
    }
    /* At startup transparent mode is started from the policy itself; once
     * running, a new policy must fit the mode the daemon runs in. */
    if (D.policy)
        return fl_tp_check(p, err, errlen);
    if (p->n_targets)
        return fl_tp_probe(err, errlen); /* before anything starts: exit 2 */
    return 0;
}

int fl_daemon_apply(struct fl_policy *p, char *err, size_t errlen)
{
    int e = fl_tp_apply(p, err, errlen);
    if (e < 0)
        return e;
    e = fl_listeners_apply(&D.w0, p, D.n_workers > 1, err, errlen);
    if (e < 0) {
        char ignored[256];
        if (D.policy)
            (void)!fl_tp_apply(D.policy, ignored, sizeof(ignored));
        return e;
    }
    fl_policy_unref(fl_worker_set_policy(&D.w0, p));
    for (int i = 1; i < D.n_workers; i++)
        wt_post(D.wt[i], p, 0, 0);
    fl_policy_unref(D.policy);
    D.policy = fl_policy_ref(p);
    uint64_t now = uv_now(D.loop);
    atomic_store(&fl_global.policy_deadline_ms, p->ttl_ms ? now + p->ttl_ms : 0);
    uv_timer_stop(&D.ttl_timer);
    if (p->ttl_ms)
        uv_timer_start(&D.ttl_timer, ttl_cb, p->ttl_ms, 0);
    return 0;
}

int fl_daemon_workers(void)
{
    return D.n_workers;
}

unsigned long fl_daemon_worker_connections(int i)
{
    /* Each worker owns its count; a relaxed read of another thread's is enough
     * for a gauge. */
    const struct fl_worker *w = i == 0 ? &D.w0 : &D.wt[i]->w;
    return __atomic_load_n(&w->n_conns, __ATOMIC_RELAXED);
}

unsigned long fl_daemon_active_connections(void)
{
    unsigned long n = 0;
    for (int i = 0; i < D.n_workers; i++)
        n += fl_daemon_worker_connections(i);
    return n;
}

void fl_daemon_halt(const char *reason)
{
    char esc[512];
    /* The reason may come from an API client: escape it for the JSON event. */
    size_t n = reason ? fl_json_escape(esc, sizeof(esc), 0, reason, strlen(reason)) : 0;
    esc[n] = '\0';
    atomic_store(&fl_global.halted, 1);
    fl_warn("injection halted%s%s; %s", reason ? ": " : "", reason ? reason : "",
            reason && strncmp(reason, "HALT file ", 10) == 0
                ? "remove that file to resume"
                : "resume with 'faultctl resume'");
    fl_daemon_event("\"event\":\"halt\",\"reason\":\"%s\"", esc);
}

void fl_daemon_resume(void)
{
    atomic_store(&fl_global.halted, 0);
    fl_info("injection resumed");
    fl_daemon_event("\"event\":\"resume\"");
}

struct reload_work {
    uv_work_t req;
    char *path;
    struct fl_policy *p;
    struct fl_policy_errors errs;
    int rc;
};

static void reload_work_cb(uv_work_t *req)
{
    struct reload_work *rw = req->data;
    rw->rc = fl_policy_load(rw->path, &rw->p, &rw->errs);
}

static void reload_after_cb(uv_work_t *req, int status)
{
    struct reload_work *rw = req->data;
    char err[512];
    (void)status;
    D.reloading = 0;
    if (D.draining) {
        /* too late */
    } else if (rw->rc < 0) {
        for (size_t i = 0; i < rw->errs.n; i++)
            fl_error("%s", rw->errs.msgs[i]);
        fl_error("reload of %s rejected (%zu error%s); the running policy '%s' stays in force",
                 rw->path, rw->errs.n, rw->errs.n == 1 ? "" : "s", D.policy->name);
    } else if (fl_daemon_check(rw->p, err, sizeof(err)) < 0 ||
               fl_daemon_apply(rw->p, err, sizeof(err)) < 0) {
        fl_error("reload of %s rejected: %s; the running policy stays in force", rw->path, err);
    } else {
        fl_info("reloaded %s: policy '%s', %zu rule%s", rw->path, rw->p->name, rw->p->n_rules,
                rw->p->n_rules == 1 ? "" : "s");
        fl_daemon_event("\"event\":\"reload\",\"policy\":\"%s\"", rw->p->name);
    }
    fl_policy_unref(rw->p);
    fl_policy_errors_free(&rw->errs);
    free(rw->path);
    free(rw);
}

static void reload(void)
{
    if (D.reloading || D.draining)
        return;
    struct reload_work *rw = calloc(1, sizeof(*rw));
    if (!rw)
        return;
    rw->path = strdup(D.o->policy_path);
    rw->req.data = rw;
    D.reloading = 1;
    /* Parsing reads a file: do it on the thread pool, never on the loop. */
    if (uv_queue_work(D.loop, &rw->req, reload_work_cb, reload_after_cb) < 0) {
        D.reloading = 0;
        free(rw->path);
        free(rw);
    }
}

/* ---- shutdown ---- */

static int all_empty(void)
{
    if (D.w0.n_conns)
        return 0;
    for (int i = 1; i < D.n_workers; i++)
        if (!atomic_load(&D.wt[i]->empty))
            return 0;
    return 1;
}

static void close_main_handles(void)
{
    uv_close((uv_handle_t *)&D.sig_term, NULL);
    uv_close((uv_handle_t *)&D.sig_int, NULL);
    uv_close((uv_handle_t *)&D.sig_hup, NULL);
    uv_close((uv_handle_t *)&D.sig_usr1, NULL);
    uv_close((uv_handle_t *)&D.sig_usr2, NULL);
    uv_close((uv_handle_t *)&D.ttl_timer, NULL);
    uv_close((uv_handle_t *)&D.drain_timer, NULL);
    fl_worker_close_handles(&D.w0);
}

static void drain_tick(uv_timer_t *t)
{
    (void)t;
    if (all_empty()) {
        uv_timer_stop(&D.drain_timer);
        uv_stop(D.loop);
        return;
    }
    if (uv_now(D.loop) >= D.drain_deadline) {
        fl_warn("graceful shutdown: %u connection(s) still busy after %d ms; closing them",
                D.w0.n_conns, FL_DRAIN_MS);
        fl_worker_close_all(&D.w0);
        for (int i = 1; i < D.n_workers; i++)
            wt_post(D.wt[i], NULL, 0, 1);
        D.drain_deadline = UINT64_MAX;
    }
}

static void begin_drain(const char *why)
{
    if (D.draining) {
        fl_warn("second %s: closing all connections now", why);
        D.drain_deadline = 0;
        return;
    }
    D.draining = 1;
    fl_tp_drain(); /* new connections go direct at once */
    fl_admin_stop(); /* event streams end; a second daemon may now take the socket */
    fl_info("%s: no longer accepting; finishing in-flight requests (up to %d ms)", why,
            FL_DRAIN_MS);
    fl_worker_drain(&D.w0);
    for (int i = 1; i < D.n_workers; i++)
        wt_post(D.wt[i], NULL, 1, 0);
    D.drain_deadline = uv_now(D.loop) + FL_DRAIN_MS;
    uv_timer_start(&D.drain_timer, drain_tick, 0, 50);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    (void)s;
    switch (signum) {
    case SIGTERM: begin_drain("SIGTERM"); break;
    case SIGINT: begin_drain("SIGINT"); break;
    case SIGHUP: reload(); break;
    case SIGUSR1: fl_daemon_halt("SIGUSR1"); break;
    case SIGUSR2: fl_daemon_resume(); break;
    }
}

/* ---- run ---- */

static int start_workers(int n, char *err, size_t errlen)
{
    for (int i = 1; i < n; i++) {
        struct wthread *t = calloc(1, sizeof(*t));
        if (!t)
            return -ENOMEM;
        uv_loop_init(&t->loop);
        int e = fl_worker_init(&t->w, &t->loop, i);
        if (e < 0) {
            snprintf(err, errlen, "worker %d: cannot create its timer: %s", i, uv_strerror(e));
            uv_loop_close(&t->loop);
            free(t);
            return e;
        }
        D.wt[i] = t;
        t->w.on_empty = wt_on_empty;
        uv_mutex_init(&t->mu);
        t->handoffs_tail = &t->handoffs;
        uv_async_init(&t->loop, &t->async, wt_async_cb);
        t->async.data = t;
        D.n_workers = i + 1;
        fl_policy_unref(fl_worker_set_policy(&t->w, D.policy));
        e = fl_listeners_apply(&t->w, D.policy, 1, err, errlen);
        if (e < 0)
            return e;
    }
    for (int i = 1; i < n; i++) {
        if (uv_thread_create(&D.wt[i]->tid, wt_main, D.wt[i]) != 0)
            return -EAGAIN;
        D.wt[i]->started = 1;
    }
    return 0;
}

static void stop_workers(void)
{
    for (int i = 1; i < D.n_workers; i++) {
        struct wthread *t = D.wt[i];
        if (t->started) {
            uv_thread_join(&t->tid);
        } else {
            fl_listeners_close_all(&t->w);
            uv_close((uv_handle_t *)&t->async, NULL);
            fl_worker_close_handles(&t->w);
            uv_run(&t->loop, UV_RUN_DEFAULT);
        }
        fl_policy_unref(t->pending);
        while (t->handoffs) { /* handed over after the worker stopped taking them */
            struct fl_conn_handoff *h = t->handoffs;
            t->handoffs = h->next;
            fl_conn_handoff_free(h);
        }
        fl_worker_fini(&t->w);
        uv_loop_close(&t->loop);
        uv_mutex_destroy(&t->mu);
        free(t);
    }
}

static void describe(const struct fl_policy *p)
{
    char a[64], u[64];
    fl_info("policy '%s' from %s: %zu rule%s, ttl %llus", p->name, p->file, p->n_rules,
            p->n_rules == 1 ? "" : "s", (unsigned long long)(p->ttl_ms / 1000));
    for (size_t i = 0; i < p->n_listeners; i++) {
        const struct fl_listener_spec *l = &p->listeners[i];
        for (int k = 0; k < l->n_listen_addrs; k++)
            fl_info("listener '%s': %s -> %s", l->name,
                    fl_addr_str((const struct sockaddr *)&l->listen_addrs[k], a, sizeof(a)),
                    fl_addr_str((const struct sockaddr *)&l->upstream_addr, u, sizeof(u)));
    }
}

int fl_daemon_run(const struct fl_daemon_opts *o)
{
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};
    char err[512];
    int e;

    memset(&D, 0, sizeof(D));
    D.o = o;
    D.loop = uv_default_loop();
    D.exit_code = 1;
    signal(SIGPIPE, SIG_IGN);

    e = fl_policy_load(o->policy_path, &p, &errs);
    if (e < 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        fprintf(stderr, "faultline: %s is not a valid policy; nothing started\n", o->policy_path);
        fl_policy_errors_free(&errs);
        return 1;
    }
    fl_policy_errors_free(&errs);
    if ((e = fl_daemon_check(p, err, sizeof(err))) < 0) {
        fprintf(stderr, "faultline: %s: %s\n", o->policy_path, err);
        fl_policy_unref(p);
        return e == -ENOTSUP ? 2 : 1;
    }
    e = fl_faultlog_open(o->fault_log);
    if (e < 0) {
        fprintf(stderr, "faultline: cannot open fault log %s: %s; check the directory exists and "
                        "is writable\n",
                o->fault_log, strerror(-e));
        fl_policy_unref(p);
        return 1;
    }

    if (o->header_timeout_ms)
        fl_header_timeout_ms = o->header_timeout_ms;
    if (o->idle_timeout_ms)
        fl_idle_timeout_ms = o->idle_timeout_ms;
    e = fl_worker_init(&D.w0, D.loop, 0);
    if (e < 0) {
        fprintf(stderr, "faultline: cannot create the timer for delays: %s; raise the open-files "
                        "limit (ulimit -n) if it is exhausted\n",
                uv_strerror(e));
        fl_policy_unref(p);
        fl_faultlog_close();
        return 1;
    }
    D.n_workers = 1;
    /* Before the policy's listeners: a second daemon on the same socket is
     * refused with a message about the socket, not about a busy port. */
    if (fl_admin_start(D.loop, o->admin_path, o->metrics_listen, err, sizeof(err)) < 0) {
        fprintf(stderr, "faultline: %s\n", err);
        fl_worker_close_handles(&D.w0);
        fl_policy_unref(p);
        fl_faultlog_close();
        uv_run(D.loop, UV_RUN_DEFAULT);
        fl_worker_fini(&D.w0);
        uv_loop_close(D.loop);
        return 1;
    }
    uv_timer_init(D.loop, &D.ttl_timer);
    uv_timer_init(D.loop, &D.drain_timer);
    uv_signal_init(D.loop, &D.sig_term);
    uv_signal_init(D.loop, &D.sig_int);
    uv_signal_init(D.loop, &D.sig_hup);
    uv_signal_init(D.loop, &D.sig_usr1);
    uv_signal_init(D.loop, &D.sig_usr2);
    if (p->n_targets) {
        struct fl_tp_opts to = {.no_sockmap = o->no_sockmap,
                                .verbose = fl_log_min_level == FL_LOG_DEBUG};
        int requirement;
        if (fl_tp_start(&D.w0, p, &to, err, sizeof(err), &requirement) < 0) {
            fprintf(stderr, "faultline: %s\n", err);
            D.exit_code = requirement ? 2 : 1;
            goto out;
        }
    }
    if (fl_daemon_apply(p, err, sizeof(err)) < 0) {
        fprintf(stderr, "faultline: %s\n", err);
        goto out;
    }
    int n = o->workers > 0 ? o->workers : 1;
    if (n > FL_MAX_WORKERS)
        n = FL_MAX_WORKERS;
    if (n > 1) {
        /* Re-open worker 0's sockets with SO_REUSEPORT so the others can share them. */
        fl_listeners_close_all(&D.w0);
        uv_run(D.loop, UV_RUN_NOWAIT);
        if (fl_listeners_apply(&D.w0, p, 1, err, sizeof(err)) < 0 ||
            start_workers(n, err, sizeof(err)) < 0) {
            fprintf(stderr, "faultline: %s\n", err);
            goto out;
        }
    }
    describe(p);

    uv_signal_start(&D.sig_term, signal_cb, SIGTERM);
    uv_signal_start(&D.sig_int, signal_cb, SIGINT);
    uv_signal_start(&D.sig_hup, signal_cb, SIGHUP);
    uv_signal_start(&D.sig_usr1, signal_cb, SIGUSR1);
    uv_signal_start(&D.sig_usr2, signal_cb, SIGUSR2);
    fl_info("ready (%d worker%s, pid %d)", n, n == 1 ? "" : "s", (int)getpid());

    uv_run(D.loop, UV_RUN_DEFAULT);
    D.exit_code = 0;
    fl_info("stopped");
out:
    if (!D.draining) {
        fl_listeners_close_all(&D.w0);
        fl_worker_close_all(&D.w0);
        for (int i = 1; i < D.n_workers; i++)
            wt_post(D.wt[i], NULL, 1, 1);
    }
    stop_workers();
    fl_tp_stop();
    fl_admin_stop();
    close_main_handles();
    /* Let pending closes and fault-log writes complete. */
    uv_run(D.loop, UV_RUN_DEFAULT);
    /* Every write the loop had queued is done or cancelled; what is left in the
     * buffer goes out synchronously so no fault line is lost. */
    fl_logbuf_flush_sync(&D.w0.log);
    fl_worker_fini(&D.w0);
    fl_policy_unref(D.policy);
    fl_policy_unref(p);
    fl_faultlog_close();
    uv_loop_close(D.loop);
    return D.exit_code;
}
