#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "conn.h"
#include "faultlog.h"
#include "log.h"
#include "runtime.h"
#include "toxiproxy.h"
#include "kubernetes.h"
#include "transparent.h"
#include "workers.h"

static struct {
    const struct fl_daemon_opts *o;
    uv_loop_t *loop;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    uv_timer_t drain_timer;
    uint64_t drain_deadline;
    int draining;
    int exit_code;
    int reloading;
} lifecycle;

/* ---- SIGHUP: re-read the policy file ---- */

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

/* Rules kept across a reload keep their counters, as with faultctl apply. */
static int reload_apply(struct fl_policy *p, char *err, size_t errlen)
{
    fl_runtime_carry_counters(p);
    return fl_runtime_apply(p, err, errlen);
}

static void reload_after_cb(uv_work_t *req, int status)
{
    struct reload_work *rw = req->data;
    char err[512];
    (void)status;
    lifecycle.reloading = 0;
    if (lifecycle.draining) {
        /* too late */
    } else if (rw->rc < 0) {
        for (size_t i = 0; i < rw->errs.n; i++)
            fl_error("%s", rw->errs.msgs[i]);
        fl_error("reload of %s rejected (%zu error%s); the running policy '%s' stays in force",
                 rw->path, rw->errs.n, rw->errs.n == 1 ? "" : "s",
                 fl_runtime_file_policy() ? fl_runtime_file_policy()->name : "(none)");
    } else if (fl_runtime_check(rw->p, err, sizeof(err)) < 0 ||
               reload_apply(rw->p, err, sizeof(err)) < 0) {
        fl_error("reload of %s rejected: %s; the running policy stays in force", rw->path, err);
    } else {
        fl_info("reloaded %s: policy '%s', %zu rule%s", rw->path, rw->p->name, rw->p->n_rules,
                rw->p->n_rules == 1 ? "" : "s");
        struct fl_event ev = {.kind = FL_EVENT_RELOAD, .policy = rw->p->name};
        fl_runtime_emit(&ev);
    }
    fl_policy_unref(rw->p);
    fl_policy_errors_free(&rw->errs);
    free(rw->path);
    free(rw);
}

static void reload(void)
{
    if (lifecycle.reloading || lifecycle.draining)
        return;
    if (!lifecycle.o->policy_path) {
        fl_info("SIGHUP: no policy file to re-read (started without -f); FaultPolicies follow "
                "the API server");
        return;
    }
    struct reload_work *rw = calloc(1, sizeof(*rw));
    if (!rw)
        return;
    rw->path = strdup(lifecycle.o->policy_path);
    rw->req.data = rw;
    lifecycle.reloading = 1;
    /* Parsing reads a file: do it on the thread pool, never on the loop. */
    if (uv_queue_work(lifecycle.loop, &rw->req, reload_work_cb, reload_after_cb) < 0) {
        lifecycle.reloading = 0;
        free(rw->path);
        free(rw);
    }
}

/* ---- shutdown ---- */

static void close_main_handles(void)
{
    uv_close((uv_handle_t *)&lifecycle.sig_term, NULL);
    uv_close((uv_handle_t *)&lifecycle.sig_int, NULL);
    uv_close((uv_handle_t *)&lifecycle.sig_hup, NULL);
    uv_close((uv_handle_t *)&lifecycle.sig_usr1, NULL);
    uv_close((uv_handle_t *)&lifecycle.sig_usr2, NULL);
    uv_close((uv_handle_t *)&lifecycle.drain_timer, NULL);
    /* Closing a uv_signal_t restores the default action, which for SIGTERM
     * would end the process before the fault log is flushed. The daemon is
     * on its way out: a repeated stop request is already being carried out. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
}

static void drain_tick(uv_timer_t *t)
{
    (void)t;
    if (fl_workers_empty()) {
        uv_timer_stop(&lifecycle.drain_timer);
        uv_stop(lifecycle.loop);
        return;
    }
    if (uv_now(lifecycle.loop) >= lifecycle.drain_deadline) {
        fl_warn("graceful shutdown: %u connection(s) still busy after %d ms; closing them",
                fl_workers_main()->n_conns, FL_DRAIN_MS);
        fl_workers_close_all();
        lifecycle.drain_deadline = UINT64_MAX;
    }
}

static void begin_drain(const char *why)
{
    if (lifecycle.draining) {
        fl_warn("second %s: closing all connections now", why);
        lifecycle.drain_deadline = 0;
        return;
    }
    lifecycle.draining = 1;
    fl_transparent_drain(); /* new connections go direct at once */
    fl_admin_stop();        /* event streams end; a second daemon may now take the socket */
    fl_toxiproxy_stop();
    fl_info("%s: no longer accepting; finishing in-flight requests (up to %d ms)", why,
            FL_DRAIN_MS);
    fl_workers_drain();
    lifecycle.drain_deadline = uv_now(lifecycle.loop) + FL_DRAIN_MS;
    uv_timer_start(&lifecycle.drain_timer, drain_tick, 0, 50);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    (void)s;
    switch (signum) {
    case SIGTERM:
        begin_drain("SIGTERM");
        break;
    case SIGINT:
        begin_drain("SIGINT");
        break;
    case SIGHUP:
        reload();
        break;
    case SIGUSR1:
        fl_runtime_halt("SIGUSR1");
        break;
    case SIGUSR2: {
        char err[512];
        if (fl_runtime_resume(err, sizeof(err)) < 0)
            fl_warn("SIGUSR2: not resumed: %s", err);
        break;
    }
    }
}

/* ---- run ---- */

/* existing: reset destroyed connections: one event on the stream. */
static void on_existing_reset(const char *target, const char *pod, unsigned n, void *arg)
{
    struct fl_event ev = {.kind = FL_EVENT_EXISTING_RESET, .target = target, .pod = pod,
                          .count = n};
    (void)arg;
    fl_runtime_emit(&ev);
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

    memset(&lifecycle, 0, sizeof(lifecycle));
    lifecycle.o = o;
    lifecycle.loop = uv_default_loop();
    lifecycle.exit_code = 1;
    signal(SIGPIPE, SIG_IGN);

    /* --kubernetes without -f: the set starts empty, FaultPolicies fill it. */
    e = o->policy_path ? fl_policy_load(o->policy_path, &p, &errs)
                       : (p = fl_policy_empty("(none)")) ? 0 : -ENOMEM;
    if (e < 0 && !o->policy_path) {
        fprintf(stderr, "faultline: out of memory\n");
        return 1;
    }
    if (e < 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        fprintf(stderr, "faultline: %s is not a valid policy; nothing started\n", o->policy_path);
        fl_policy_errors_free(&errs);
        return 1;
    }
    fl_policy_errors_free(&errs);
    if (o->kubernetes) {
        struct fl_kubernetes_opts ko = {.kubeconfig = o->kubeconfig,
                                        .node = o->node,
                                        .watch_timeout_s = o->kube_watch_timeout_s};
        if (fl_kubernetes_prepare(&ko, err, sizeof(err)) < 0) {
            fprintf(stderr, "faultline: %s\n", err);
            fl_policy_unref(p);
            return 2;
        }
    }
    if ((e = fl_runtime_init(lifecycle.loop)) < 0) {
        fprintf(stderr, "faultline: cannot start the event loop's timers: %s\n", uv_strerror(e));
        fl_policy_unref(p);
        return 1;
    }
    if (o->policy_path && (e = fl_runtime_check(p, err, sizeof(err))) < 0) {
        fprintf(stderr, "faultline: %s: %s\n", o->policy_path, err);
        fl_policy_unref(p);
        fl_runtime_close();
        uv_run(lifecycle.loop, UV_RUN_DEFAULT);
        uv_loop_close(lifecycle.loop);
        return e == -ENOTSUP ? 2 : 1;
    }
    e = fl_faultlog_open(o->fault_log);
    if (e < 0) {
        fprintf(stderr,
                "faultline: cannot open fault log %s: %s; check the directory exists and "
                "is writable\n",
                o->fault_log, strerror(-e));
        fl_policy_unref(p);
        fl_runtime_close();
        uv_run(lifecycle.loop, UV_RUN_DEFAULT);
        uv_loop_close(lifecycle.loop);
        return 1;
    }

    if (o->header_timeout_ms)
        fl_conn_header_timeout_ms = o->header_timeout_ms;
    if (o->idle_timeout_ms)
        fl_conn_idle_timeout_ms = o->idle_timeout_ms;
    if (o->upstream_timeout_ms)
        fl_conn_upstream_timeout_ms = o->upstream_timeout_ms;
    if (o->connect_timeout_ms)
        fl_conn_connect_timeout_ms = o->connect_timeout_ms;
    if (fl_workers_init(lifecycle.loop, err, sizeof(err)) < 0) {
        fprintf(stderr, "faultline: %s\n", err);
        fl_policy_unref(p);
        fl_faultlog_close();
        fl_runtime_close();
        uv_run(lifecycle.loop, UV_RUN_DEFAULT);
        uv_loop_close(lifecycle.loop);
        return 1;
    }
    /* Before the policy's listeners: a second daemon on the same socket is
     * refused with a message about the socket, not about a busy port. */
    int admin_up = 0;
    if ((e = fl_admin_start(lifecycle.loop, o->admin_path, o->metrics_listen, err, sizeof(err))) == 0)
        admin_up = 1;
    if (e == 0 && o->toxiproxy_listen)
        e = fl_toxiproxy_start(lifecycle.loop, o->toxiproxy_listen, err, sizeof(err));
    if (e < 0) {
        fprintf(stderr, "faultline: %s\n", err);
        if (admin_up)
            fl_admin_stop();
        fl_workers_stop();
        fl_runtime_close();
        fl_policy_unref(p);
        fl_faultlog_close();
        uv_run(lifecycle.loop, UV_RUN_DEFAULT);
        fl_workers_fini();
        uv_loop_close(lifecycle.loop);
        return 1;
    }
    uv_timer_init(lifecycle.loop, &lifecycle.drain_timer);
    uv_signal_init(lifecycle.loop, &lifecycle.sig_term);
    uv_signal_init(lifecycle.loop, &lifecycle.sig_int);
    uv_signal_init(lifecycle.loop, &lifecycle.sig_hup);
    uv_signal_init(lifecycle.loop, &lifecycle.sig_usr1);
    uv_signal_init(lifecycle.loop, &lifecycle.sig_usr2);
    if (!o->policy_path && o->kubernetes && (e = fl_transparent_probe(err, sizeof(err))) < 0) {
        fprintf(stderr, "faultline: --kubernetes: %s\n", err);
        lifecycle.exit_code = 2;
        goto out;
    }
    if (p->n_targets || o->kubernetes) {
        struct fl_transparent_opts to = {.no_sockmap = o->no_sockmap,
                                         .verbose = fl_log_min_level == FL_LOG_DEBUG,
                                         .on_reset = on_existing_reset};
        int requirement;
        if (fl_transparent_start(fl_workers_main(), p, &to, err, sizeof(err), &requirement) < 0) {
            fprintf(stderr, "faultline: %s\n", err);
            lifecycle.exit_code = requirement ? 2 : 1;
            goto out;
        }
    }
    if ((o->policy_path ? fl_runtime_apply(p, err, sizeof(err))
                        : fl_runtime_set_resources(NULL, NULL, 0, err, sizeof(err))) < 0) {
        fprintf(stderr, "faultline: %s\n", err);
        goto out;
    }
    if (fl_kubernetes_start(lifecycle.loop, err, sizeof(err)) < 0) {
        fprintf(stderr, "faultline: %s\n", err);
        goto out;
    }
    fl_kubernetes_policy(fl_runtime_policy());
    int n = o->workers > 0 ? o->workers : 1;
    if (n > FL_WORKERS_MAX)
        n = FL_WORKERS_MAX;
    if (fl_workers_spawn(n, fl_runtime_policy(), err, sizeof(err)) < 0) {
        fprintf(stderr, "faultline: %s\n", err);
        goto out;
    }
    if (o->policy_path)
        describe(p);
    else if (o->kubernetes)
        fl_info("no policy file: running the FaultPolicies of the cluster that select pods of "
                "this node");
    else
        fl_info("no policy file: running what the Toxiproxy API on %s is given",
                o->toxiproxy_listen);

    uv_signal_start(&lifecycle.sig_term, signal_cb, SIGTERM);
    uv_signal_start(&lifecycle.sig_int, signal_cb, SIGINT);
    uv_signal_start(&lifecycle.sig_hup, signal_cb, SIGHUP);
    uv_signal_start(&lifecycle.sig_usr1, signal_cb, SIGUSR1);
    uv_signal_start(&lifecycle.sig_usr2, signal_cb, SIGUSR2);
    fl_info("ready (%d worker%s, pid %d)", n, n == 1 ? "" : "s", (int)getpid());

    uv_run(lifecycle.loop, UV_RUN_DEFAULT);
    lifecycle.exit_code = 0;
    fl_info("stopped");
out:
    fl_workers_stop();
    fl_kubernetes_stop();
    fl_transparent_stop();
    fl_admin_stop();
    fl_toxiproxy_stop();
    fl_runtime_close();
    close_main_handles();
    /* Let pending closes and fault-log writes complete. */
    uv_run(lifecycle.loop, UV_RUN_DEFAULT);
    fl_workers_fini();
    fl_policy_unref(p);
    fl_faultlog_close();
    uv_loop_close(lifecycle.loop);
    return lifecycle.exit_code;
}
