/* transparent: see transparent.h.
 *
 * State lives in one static struct: there is one daemon per process. Finding
 * the pods and programming the kernel for them is pods.c's; this file owns
 * what steering needs around it: the daemon's cgroup, the BPF object, one
 * record per pod netns with the proxy's listeners in it, accepting and
 * resolving the connections that arrive there, and the watchdog.
 */
#include "transparent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "bpf.h"
#include "cgroup.h"
#include "conn.h"
#include "faultline.h"
#include "http1.h"
#include "log.h"
#include "netns.h"
#include "pods.h"
#include "worker.h"
#include "workers.h"

#define TP_ROUTES 16 /* per-netns cache: destination -> pod source address */
#define TP_CG_PREFIX "faultline-daemon-"

struct tp_ns;

struct tp_lsn {
    uv_tcp_t tcp;
    struct tp_ns *ns;
    int family; /* AF_INET (127.0.0.1) or AF_INET6 ([::1]) */
};

/* One ingress entry as programmed in the kernel: (netns, port, callers) ->
 * target. */
struct tp_ing {
    uint64_t ns_ino, cookie, cgid;
    uint16_t port;
    struct fl_cidr from; /* family set: a target without `from` is two entries */
    uint32_t id;
    int seen;
};

struct tp_route {
    int family;
    uint8_t dst[16];
    struct sockaddr_storage src; /* port 0 */
};

/* A pod network namespace with a proxy listener pair. Freed after the last
 * listener's close callback. */
struct tp_ns {
    struct tp_ns *next;
    uint64_t ino; /* nsfs inode: the identity, stable while fd is held */
    int fd;
    uint64_t cookie;
    struct tp_lsn l[2];
    int n_l;
    int closing;
    int pending_closes;
    int ingress; /* the sk_lookup program is attached to it */
    int warned_home;
    unsigned users; /* enrolled pods in it (recounted after each reconcile) */
    uint64_t retry_at; /* no listener (port taken): loop time to try again; 0: listening */
    unsigned failures; /* attempts that found the port taken, in a row */
    struct tp_route routes[TP_ROUTES];
    unsigned n_routes, next_route;
};

static struct {
    int started;
    int draining;
    struct fl_worker *w;
    unsigned rr; /* the worker the next connection goes to, round robin */
    struct fl_bpf *bpf;
    struct fl_policy *policy; /* what the pods and targets follow (reference) */
    uint8_t *noaccel;         /* per target: a rule delays its requests */
    uint16_t port;
    char cg[PATH_MAX];      /* <cgroup2>/faultline-daemon-PID */
    char orig_cg[PATH_MAX]; /* where the daemon was before */
    int joined;
    struct fl_pods *pods;
    struct tp_ns *nss;
    uv_timer_t scan_timer, hb_timer;
    /* watchdog */
    uv_thread_t wd_tid;
    uv_mutex_t wd_mu;
    uv_cond_t wd_cond;
    int wd_started, wd_stop;
    int failed_open; /* under wd_mu */
    atomic_ullong heartbeat_ns;
    /* counters */
    atomic_ullong accepted, no_orig, fail_open_events;
    atomic_uint n_netns;
    atomic_int enabled, sockmap;
    /* ingress and existing: reset */
    struct tp_ing *ing;
    size_t n_ing, cap_ing;
    atomic_ullong ingress_accepted, existing_reset;
    atomic_uint ingress_netns;
    atomic_int resets_running; /* reset jobs on the thread pool, not yet done */
    struct reset_job *jobs;    /* queued or running; unlinked in reset_done */
    unsigned generation;       /* start count: a reset job of an earlier start is dropped */
    fl_transparent_reset_cb on_reset;
    void *on_reset_arg;
} tp;

static socklen_t sa_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static const uint8_t *sa_addr(const struct sockaddr *sa, size_t *n)
{
    if (sa->sa_family == AF_INET6) {
        *n = 16;
        return (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    }
    *n = 4;
    return (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
}

/* Rewrites *src (the app's loopback address toward the proxy) to the pod's
 * own address toward dst, keeping the app's port, so logs name the pod. Left
 * alone when the route cannot be found. */
static void pod_source(struct tp_ns *ns, const struct sockaddr *dst, struct sockaddr_storage *src)
{
    size_t n;
    const uint8_t *a = sa_addr(dst, &n);
    struct tp_route *r = NULL;
    uint16_t port = src->ss_family == AF_INET6 ? ((struct sockaddr_in6 *)src)->sin6_port
                                               : ((struct sockaddr_in *)src)->sin_port;

    for (unsigned i = 0; i < ns->n_routes; i++)
        if (ns->routes[i].family == dst->sa_family && memcmp(ns->routes[i].dst, a, n) == 0) {
            r = &ns->routes[i];
            break;
        }
    if (!r) {
        struct sockaddr_storage rs;
        if (fl_netns_route_source(ns->fd, dst, &rs) < 0)
            return;
        r = &ns->routes[ns->n_routes < TP_ROUTES ? ns->n_routes++ : ns->next_route++ % TP_ROUTES];
        r->family = dst->sa_family;
        memcpy(r->dst, a, n);
        r->src = rs;
    }
    *src = r->src;
    if (src->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)src)->sin6_port = port;
    else
        ((struct sockaddr_in *)src)->sin_port = port;
}

/* ---- accepting ---- */

/* Fills h's destination, scope and netns from the connect hook's record of
 * the client's original destination. Runs on worker 0, which owns tp. */
/* Both ends in place: the proxy's upstream goes from inside the pod's netns. */
static int tp_finish(struct fl_conn_handoff *h, struct tp_ns *ns)
{
    h->upstream_netns = fcntl(ns->fd, F_DUPFD_CLOEXEC, 0);
    if (h->upstream_netns < 0)
        return -errno;
    h->upstream_socket = fl_netns_socket_here;
    h->ops = &fl_http1_ops;
    const char *pod = fl_pods_name_of_netns(tp.pods, ns->ino);
    if (pod && !(h->pod = strdup(pod)))
        return -ENOMEM;
    return 0;
}

/* An sk_lookup hand-over: the accepted socket's local end is what the caller
 * dialled (the pod's address and served port), its peer the real caller. */
static int tp_resolve_ingress(struct fl_conn_handoff *h, struct tp_ns *ns,
                              const struct sockaddr_storage *local)
{
    uint32_t id = 0;
    uint16_t port = ntohs(local->ss_family == AF_INET6
                              ? ((const struct sockaddr_in6 *)local)->sin6_port
                              : ((const struct sockaddr_in *)local)->sin_port);
    int e;

    /* The kernel's decision, looked up again. A target removed meanwhile
     * leaves the connection to the rules without `on:`. */
    if (fl_bpf_lookup_ingress(tp.bpf, ns->cookie, port, (struct sockaddr *)&h->src, &id) < 0)
        id = 0;
    int known = tp.policy && id >= 1 && id <= tp.policy->n_targets;
    h->scope = strdup(known ? tp.policy->targets[id - 1].name : "");
    if (!h->scope)
        return -ENOMEM;
    memcpy(&h->dst, local, sa_len((const struct sockaddr *)local));
    if ((e = tp_finish(h, ns)) < 0)
        return e;
    atomic_fetch_add_explicit(&tp.ingress_accepted, 1, memory_order_relaxed);
    return 0;
}

static int tp_resolve(struct fl_conn_handoff *h, struct tp_ns *ns)
{
    struct fl_bpf_orig o;
    struct sockaddr_storage local;
    socklen_t llen = sizeof(local);
    char a[64];

    if (getsockname(h->fd, (struct sockaddr *)&local, &llen) == 0 &&
        ntohs(local.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&local)->sin6_port
                                          : ((struct sockaddr_in *)&local)->sin_port) != tp.port)
        return tp_resolve_ingress(h, ns, &local);
    int e = fl_bpf_lookup_orig_dst(tp.bpf, ns->cookie, (struct sockaddr *)&h->src, &o);

    if (e < 0) {
        unsigned long long n = atomic_fetch_add(&tp.no_orig, 1) + 1;
        if (n <= 10 || n % 1000 == 0)
            fl_warn("connection from %s to the proxy port in netns %llu has no original "
                    "destination (its client closed before the proxy took it, or it did not "
                    "come through faultline's connect hook): closed (%llu so far)",
                    fl_addr_str((struct sockaddr *)&h->src, a, sizeof(a)),
                    (unsigned long long)ns->cookie, n);
        return e;
    }
    uint32_t id = o.target_id;
    int known = tp.policy && id >= 1 && id <= tp.policy->n_targets;
    h->scope = strdup(known ? tp.policy->targets[id - 1].name : "");
    if (!h->scope)
        return -ENOMEM;
    memcpy(&h->dst, &o.dst, sa_len((struct sockaddr *)&o.dst));
    /* A held request stops the proxy reading; an sk_msg ingress redirect has
     * no TCP window to stop the app, so such connections stay on TCP. */
    if (known && tp.noaccel && tp.noaccel[id - 1] &&
        (e = fl_bpf_conn_no_accel(tp.bpf, ns->cookie, (struct sockaddr *)&h->src)) < 0 &&
        e != -ENOENT)
        fl_debug("connection from %s: cannot turn sk_msg off: %s",
                 fl_addr_str((struct sockaddr *)&h->src, a, sizeof(a)), strerror(-e));
    if ((e = tp_finish(h, ns)) < 0)
        return e;
    pod_source(ns, (struct sockaddr *)&h->dst, &h->src);
    atomic_fetch_add_explicit(&tp.accepted, 1, memory_order_relaxed);
    return 0;
}

/* Accepted here on worker 0 (the netns listeners and the BPF maps are its),
 * then served by the workers in turn. */
static void on_tp_connection(uv_stream_t *server, int status)
{
    struct tp_lsn *l = server->data;
    struct fl_conn_handoff *h = NULL;
    int e;

    if (status < 0) {
        fl_warn("proxy listener in netns %llu: accept failed: %s",
                (unsigned long long)l->ns->cookie, uv_strerror(status));
        return;
    }
    e = fl_conn_handoff_accept(server, &h);
    if (e == 0 && (e = tp_resolve(h, l->ns)) < 0) {
        fl_conn_handoff_free(h);
        h = NULL;
    }
    if (e == 0)
        e = fl_workers_handoff(tp.rr++, h);
    if (e < 0 && e != UV_EAGAIN && e != -ENOENT && e != -ENOTCONN)
        fl_warn("proxy listener in netns %llu: cannot take a connection: %s%s",
                (unsigned long long)l->ns->cookie, uv_strerror(e),
                e == UV_EMFILE ? " (raise the open-files limit: ulimit -n)" : "");
}

/* ---- netns records ---- */

static void ns_free(struct tp_ns *ns)
{
    if (ns->fd >= 0)
        close(ns->fd);
    free(ns);
}

static void on_lsn_closed(uv_handle_t *h)
{
    struct tp_lsn *l = h->data;
    struct tp_ns *ns = l->ns;

    if (--ns->pending_closes == 0 && ns->closing)
        ns_free(ns);
}

static void ns_close_listeners(struct tp_ns *ns)
{
    ns->pending_closes += ns->n_l;
    for (int i = 0; i < ns->n_l; i++)
        uv_close((uv_handle_t *)&ns->l[i].tcp, on_lsn_closed);
    ns->n_l = 0;
}

static void ing_remove(size_t i)
{
    struct tp_ing *g = &tp.ing[i];
    if (fl_bpf_remove_ingress(tp.bpf, g->cookie, g->port, g->from.family, g->from.addr,
                              g->from.prefix) < 0)
        fl_debug("removing an ingress entry of netns %llu: already gone",
                 (unsigned long long)g->cookie);
    tp.ing[i] = tp.ing[--tp.n_ing];
}

/* Takes the netns's ingress away at once: entries, then the program. */
static void ns_ingress_off(struct tp_ns *ns, const char *why)
{
    for (size_t i = 0; i < tp.n_ing;)
        if (tp.ing[i].ns_ino == ns->ino)
            ing_remove(i);
        else
            i++;
    if (!ns->ingress)
        return;
    fl_bpf_ingress_detach(tp.bpf, ns->cookie);
    ns->ingress = 0;
    atomic_fetch_sub(&tp.ingress_netns, 1);
    fl_info("netns %llu: ingress detached (%s)", (unsigned long long)ns->cookie, why);
}

/* Unlinks ns and closes its listeners; the record goes with the last one. */
static void ns_close(struct tp_ns *ns, const char *why)
{
    struct tp_ns **pp;

    ns_ingress_off(ns, why ? why : "its listeners close");
    for (pp = &tp.nss; *pp; pp = &(*pp)->next)
        if (*pp == ns) {
            *pp = ns->next;
            break;
        }
    if (ns->n_l) {
        atomic_fetch_sub(&tp.n_netns, 1);
        if (why)
            fl_info("netns %llu: %s; its proxy listener is closed", (unsigned long long)ns->cookie,
                    why);
    }
    ns->closing = 1;
    ns_close_listeners(ns);
    if (ns->pending_closes == 0)
        ns_free(ns);
}

static struct tp_ns *ns_find(uint64_t ino)
{
    for (struct tp_ns *ns = tp.nss; ns; ns = ns->next)
        if (ns->ino == ino)
            return ns;
    return NULL;
}

/* How long a netns whose proxy port was taken waits before the next try. */
#define TP_RETRY_MS 5000

/* Takes over sn's fds (listener fds are consumed even on failure). failures:
 * the earlier attempts in this netns that found the port taken. */
static void ns_add(struct fl_pods_netns *sn, unsigned failures)
{
    struct tp_ns *ns = calloc(1, sizeof(*ns));
    int e = 0;

    if (!ns) {
        for (int i = 0; i < 2; i++)
            if (sn->lfds[i] >= 0)
                close(sn->lfds[i]);
        close(sn->fd);
        return;
    }
    ns->ino = sn->ino;
    ns->fd = sn->fd;
    ns->cookie = sn->cookie;
    for (int i = 0; i < 2; i++) {
        struct tp_lsn *l = &ns->l[ns->n_l];
        int fd = sn->lfds[i];
        if (fd < 0)
            continue;
        if (e < 0 || (e = uv_tcp_init(tp.w->loop, &l->tcp)) < 0) {
            close(fd);
            continue;
        }
        l->ns = ns;
        l->tcp.data = l;
        l->family = i ? AF_INET6 : AF_INET;
        ns->n_l++;
        if ((e = uv_tcp_open(&l->tcp, fd)) < 0) {
            close(fd);
            continue;
        }
        e = uv_listen((uv_stream_t *)&l->tcp, SOMAXCONN, on_tp_connection);
    }
    ns->next = tp.nss;
    tp.nss = ns;
    if (sn->err < 0 || e < 0) {
        /* Kept without listeners, and tried again every TP_RETRY_MS (not at
         * every scan): with nothing listening, the kernel sends that netns's
         * traffic direct. One warning, not one per try. */
        ns->failures = failures + 1;
        ns->retry_at = uv_now(tp.w->loop) + TP_RETRY_MS;
        if (failures == 0)
            fl_warn("netns %llu: cannot open the proxy listener on port %u: %s; its pods' "
                    "traffic goes direct until it can (tried again every %d s; free that port "
                    "in the pod, or set spec.proxy_port)",
                    (unsigned long long)ns->cookie, tp.port,
                    sn->err < 0 ? strerror(-sn->err) : uv_strerror(e), TP_RETRY_MS / 1000);
        ns_close_listeners(ns);
        return;
    }
    atomic_fetch_add(&tp.n_netns, 1);
    fl_info("netns %llu: proxy listening on 127.0.0.1:%u%s%s", (unsigned long long)ns->cookie,
            tp.port, ns->n_l == 2 ? " and [::1]" : " (no IPv6 loopback)",
            failures ? " (the port is free again)" : "");
}

/* ---- what the pod scan asks of the netns records ---- */

static size_t pods_known_netns(void *arg, uint64_t *inos, size_t cap)
{
    size_t n = 0;
    uint64_t now = uv_now(tp.w->loop);
    (void)arg;
    for (struct tp_ns *ns = tp.nss; ns && n < cap; ns = ns->next)
        if (!ns->retry_at || now < ns->retry_at) /* else: the scan tries its port again */
            inos[n++] = ns->ino;
    return n;
}

static void pods_netns_found(void *arg, struct fl_pods_netns *sn)
{
    struct tp_ns *old = ns_find(sn->ino);
    unsigned failures = 0;
    (void)arg;
    if (old && old->retry_at) { /* a retry: the new attempt replaces the record */
        failures = old->failures;
        ns_close(old, NULL);
    } else if (old) { /* cannot happen with one scan in flight */
        for (int k = 0; k < 2; k++)
            if (sn->lfds[k] >= 0)
                close(sn->lfds[k]);
        close(sn->fd);
        return;
    }
    ns_add(sn, failures);
}

static void pods_netns_in_use(void *arg, const uint64_t *inos, size_t n)
{
    struct tp_ns *ns, *nsn;
    (void)arg;
    for (ns = tp.nss; ns; ns = ns->next)
        ns->users = 0;
    for (size_t i = 0; i < n; i++)
        if ((ns = ns_find(inos[i])))
            ns->users++;
    for (ns = tp.nss; ns; ns = nsn) {
        nsn = ns->next;
        if (!ns->users)
            ns_close(ns, "no selected pod left in it");
    }
}

/* ---- existing: reset ---- */

#define RESET_SHOWN 8 /* connections named in the log per job */

struct reset_job {
    uv_work_t req;
    struct reset_job *prev, *next; /* queued or running jobs (tp.jobs) */
    struct fl_bpf *bpf;
    unsigned generation;
    struct fl_bpf_reset r;
    char *target, *pod;
    int count;
    char shown[RESET_SHOWN][64];
};

static void reset_each(void *arg, const struct sockaddr *peer, uint16_t lport)
{
    struct reset_job *j = arg;
    (void)lport;
    if (j->count < RESET_SHOWN)
        fl_addr_str(peer, j->shown[j->count], sizeof(j->shown[0]));
    j->count++;
}

static void reset_work(uv_work_t *req)
{
    struct reset_job *j = req->data;
    int n = fl_bpf_reset(j->bpf, &j->r, reset_each, j);
    if (n < 0)
        j->count = n;
    atomic_fetch_sub(&tp.resets_running, 1);
}

static void reset_done(uv_work_t *req, int status)
{
    struct reset_job *j = req->data;
    if (j->prev)
        j->prev->next = j->next;
    else if (tp.jobs == j)
        tp.jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    if (status != UV_ECANCELED && j->generation == tp.generation && tp.started) {
        if (j->count < 0) {
            fl_warn("target '%s': existing: reset of pod %s failed: %s; its established "
                    "connections stay direct until they reconnect",
                    j->target, j->pod, strerror(-j->count));
        } else if (j->count == 0) {
            fl_debug("target '%s': existing: reset found no established connection of pod %s",
                     j->target, j->pod);
        } else {
            char list[RESET_SHOWN * 66] = "";
            size_t o = 0;
            for (int i = 0; i < j->count && i < RESET_SHOWN; i++)
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "",
                                      j->shown[i]);
            atomic_fetch_add(&tp.existing_reset, (unsigned long long)j->count);
            fl_info("target '%s': existing: reset destroyed %d established connection%s of pod "
                    "%s (peers %s%s); they reconnect through the proxy",
                    j->target, j->count, j->count == 1 ? "" : "s", j->pod, list,
                    j->count > RESET_SHOWN ? ", ..." : "");
            if (tp.on_reset)
                tp.on_reset(j->target, j->pod, (unsigned)j->count, tp.on_reset_arg);
        }
    }
    close(j->r.netns_fd);
    free(j->target);
    free(j->pod);
    free(j);
}

/* Queues a reset in the netns with inode ino; r's selectors are set. */
static void reset_queue(uint64_t ino, uint32_t target_id, const char *pod, struct reset_job *j)
{
    struct tp_ns *ns = ns_find(ino);
    const char *tn = tp.policy && target_id >= 1 && target_id <= tp.policy->n_targets
                         ? tp.policy->targets[target_id - 1].name
                         : "";
    if (!ns || !ns->n_l || !fl_bpf_reset_available(tp.bpf)) {
        /* No listener there: a reset would only reconnect them direct. */
        if (ns && !ns->n_l)
            fl_warn("target '%s': existing: reset of pod %s skipped: no proxy listener in its "
                    "netns yet",
                    tn, pod);
        free(j);
        return;
    }
    j->req.data = j;
    j->generation = tp.generation;
    j->r.netns_cookie = ns->cookie;
    j->r.netns_fd = fcntl(ns->fd, F_DUPFD_CLOEXEC, 0);
    j->target = strdup(tn);
    j->pod = strdup(pod);
    if (j->r.netns_fd < 0 || !j->target || !j->pod) {
        if (j->r.netns_fd >= 0)
            close(j->r.netns_fd);
        free(j->target);
        free(j->pod);
        free(j);
        return;
    }
    j->bpf = tp.bpf;
    atomic_fetch_add(&tp.resets_running, 1);
    if (uv_queue_work(tp.w->loop, &j->req, reset_work, reset_done) == 0) {
        j->next = tp.jobs;
        if (tp.jobs)
            tp.jobs->prev = j;
        tp.jobs = j;
    } else {
        atomic_fetch_sub(&tp.resets_running, 1);
        close(j->r.netns_fd);
        free(j->target);
        free(j->pod);
        free(j);
    }
}

static void pods_egress_reset(void *arg, const struct fl_pods_reset *pr)
{
    (void)arg;
    /* In chunks of FL_BPF_RESET_MAX destinations (a Service can have more). */
    for (size_t off = 0; off < pr->n_dests; off += FL_BPF_RESET_MAX) {
        struct reset_job *j = calloc(1, sizeof(*j));
        if (!j)
            return;
        j->r.cgid = pr->cgid;
        for (size_t k = off; k < pr->n_dests && j->r.n_sel < FL_BPF_RESET_MAX; k++) {
            const struct fl_kube_dest *d = &pr->dests[k];
            size_t i = j->r.n_sel++;
            j->r.sel[i].family = d->addr.family;
            memcpy(j->r.sel[i].addr, d->addr.addr, 16);
            j->r.sel[i].prefix = d->addr.prefix;
            j->r.sel[i].port = d->port;
        }
        reset_queue(pr->ns_ino, pr->target_id, pr->pod, j);
    }
}

/* ---- ingress ---- */

static int ing_same(const struct tp_ing *g, uint64_t ino, uint16_t port, const struct fl_cidr *c)
{
    return g->ns_ino == ino && g->port == port && g->from.family == c->family &&
           g->from.prefix == c->prefix && memcmp(g->from.addr, c->addr, 16) == 0;
}

static void ing_reset(const struct fl_pods_ingress *v, const struct fl_cidr *from)
{
    struct reset_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->r.ingress = 1;
    j->r.cgid = v->cgid;
    j->r.n_sel = 1;
    j->r.sel[0].family = from->family;
    memcpy(j->r.sel[0].addr, from->addr, 16);
    j->r.sel[0].prefix = from->prefix;
    j->r.sel[0].port = v->port;
    reset_queue(v->ns_ino, v->target_id, v->pod, j);
}

/* Programs one (netns, port, callers) entry; returns 1 when it is new or
 * changed hands. */
static int ing_program(struct tp_ns *ns, const struct fl_pods_ingress *v, const struct fl_cidr *c)
{
    struct tp_ing *g = NULL;
    for (size_t i = 0; i < tp.n_ing; i++)
        if (ing_same(&tp.ing[i], ns->ino, v->port, c)) {
            g = &tp.ing[i];
            break;
        }
    if (g && g->seen)
        return 0; /* an earlier target owns the same selection */
    if (g && g->id == v->target_id) {
        g->seen = 1;
        return 0;
    }
    if (!g && tp.n_ing == tp.cap_ing) {
        size_t cap = tp.cap_ing ? tp.cap_ing * 2 : 16;
        struct tp_ing *n = realloc(tp.ing, cap * sizeof(*n));
        if (!n)
            return 0;
        tp.ing = n;
        tp.cap_ing = cap;
    }
    int e = fl_bpf_add_ingress(tp.bpf, ns->cookie, v->port, c->family, c->addr, c->prefix,
                               v->target_id);
    if (e < 0) {
        fl_warn("ingress: cannot select port %u of pod %s: %s", v->port, v->pod, strerror(-e));
        return 0;
    }
    if (!g) {
        g = &tp.ing[tp.n_ing++];
        *g = (struct tp_ing){.ns_ino = ns->ino, .cookie = ns->cookie, .port = v->port, .from = *c};
    }
    g->id = v->target_id;
    g->cgid = v->cgid;
    g->seen = 1;
    return 1;
}

/* The daemon's own netns (a hostNetwork pod): ingress there would take the
 * port on every address of the node, whoever serves it. */
static int is_home_netns(uint64_t ino)
{
    struct stat st;
    return stat("/proc/self/ns/net", &st) == 0 && (uint64_t)st.st_ino == ino;
}

static int ns_ingress_on(struct tp_ns *ns)
{
    int fds[2] = {-1, -1};
    if (ns->ingress)
        return 0;
    if (is_home_netns(ns->ino)) {
        if (!ns->warned_home)
            fl_warn("netns %llu is the node's own (a hostNetwork pod): ingress targets are not "
                    "applied there, they would take the port for the whole node; select pods "
                    "with a network namespace of their own",
                    (unsigned long long)ns->cookie);
        ns->warned_home = 1;
        return -EPERM;
    }
    if (!ns->n_l)
        return -ENOTCONN; /* no listener (port taken): its connections go direct */
    for (int i = 0; i < ns->n_l; i++) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&ns->l[i].tcp, &fd) == 0)
            fds[ns->l[i].family == AF_INET6] = fd;
    }
    int e = fl_bpf_ingress_attach(tp.bpf, ns->cookie, ns->fd, fds[0], fds[1]);
    if (e < 0) {
        fl_warn("netns %llu: cannot attach the ingress program: %s; connections to its pods "
                "go direct",
                (unsigned long long)ns->cookie, strerror(-e));
        return e;
    }
    ns->ingress = 1;
    atomic_fetch_add(&tp.ingress_netns, 1);
    fl_info("netns %llu: ingress attached (sk_lookup to the proxy on port %u)",
            (unsigned long long)ns->cookie, tp.port);
    return 0;
}

static void pods_ingress(void *arg, const struct fl_pods_ingress *v, size_t n)
{
    (void)arg;
    for (size_t i = 0; i < tp.n_ing; i++)
        tp.ing[i].seen = 0;
    for (size_t i = 0; i < n; i++) {
        struct tp_ns *ns = ns_find(v[i].ns_ino);
        if (!ns || ns_ingress_on(ns) < 0)
            continue;
        struct fl_cidr any4 = {.family = AF_INET}, any6 = {.family = AF_INET6};
        const struct fl_cidr *cs[2] = {&v[i].from, NULL};
        if (!v[i].from.family) {
            cs[0] = &any4;
            cs[1] = &any6;
        }
        for (int k = 0; k < 2 && cs[k]; k++)
            if (ing_program(ns, &v[i], cs[k]) && v[i].reset)
                ing_reset(&v[i], cs[k]);
    }
    for (size_t i = 0; i < tp.n_ing;)
        if (!tp.ing[i].seen)
            ing_remove(i);
        else
            i++;
    for (struct tp_ns *ns = tp.nss; ns; ns = ns->next) {
        int used = 0;
        for (size_t i = 0; i < tp.n_ing && !used; i++)
            used = tp.ing[i].ns_ino == ns->ino;
        if (ns->ingress && !used)
            ns_ingress_off(ns, "no ingress target selects its pods");
    }
}

static const struct fl_pods_ops pods_ops = {
    .known_netns = pods_known_netns,
    .netns_found = pods_netns_found,
    .netns_in_use = pods_netns_in_use,
    .ingress = pods_ingress,
    .egress_reset = pods_egress_reset,
};

static void scan_timer_cb(uv_timer_t *t)
{
    (void)t;
    fl_pods_scan(tp.pods);
}

/* ---- watchdog ---- */

static void hb_cb(uv_timer_t *t)
{
    (void)t;
    atomic_store(&tp.heartbeat_ns, uv_hrtime());
}

static void watchdog(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "fl-watchdog");
    uv_mutex_lock(&tp.wd_mu);
    while (!tp.wd_stop) {
        (void)uv_cond_timedwait(&tp.wd_cond, &tp.wd_mu, FL_TRANSPARENT_HEARTBEAT_MS * 1000000ull);
        if (tp.wd_stop)
            break;
        uint64_t age_ms = (uv_hrtime() - atomic_load(&tp.heartbeat_ns)) / 1000000;
        if (age_ms > FL_TRANSPARENT_STALL_MS && !tp.failed_open) {
            tp.failed_open = 1;
            fl_bpf_set_enabled(tp.bpf, 0);
            atomic_store(&tp.enabled, 0);
            atomic_fetch_add(&tp.fail_open_events, 1);
            fl_warn("the event loop has not turned for %llu ms: redirection is off (fail-open), "
                    "new connections go direct until it turns again",
                    (unsigned long long)age_ms);
        } else if (age_ms <= FL_TRANSPARENT_STALL_MS && tp.failed_open) {
            tp.failed_open = 0;
            if (!tp.draining) {
                fl_bpf_set_enabled(tp.bpf, 1);
                atomic_store(&tp.enabled, 1);
                fl_info("the event loop turns again: redirection is back on");
            }
        }
    }
    uv_mutex_unlock(&tp.wd_mu);
}

/* ---- the daemon's cgroup ---- */

static int write_pid(const char *cg, int pid)
{
    char path[PATH_MAX + 16], buf[24];
    int n, fd, ret = 0;

    snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = snprintf(buf, sizeof(buf), "%d\n", pid);
    if (write(fd, buf, (size_t)n) != n)
        ret = -errno;
    close(fd);
    return ret;
}

/* Cgroups of daemons that were killed (-9 leaves the empty directory). */
static void remove_stale_cgroups(const char *mnt)
{
    DIR *d = opendir(mnt);
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d))) {
        char path[PATH_MAX];
        char *end;
        long pid;

        if (strncmp(de->d_name, TP_CG_PREFIX, strlen(TP_CG_PREFIX)) != 0)
            continue;
        pid = strtol(de->d_name + strlen(TP_CG_PREFIX), &end, 10);
        if (*end || pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        snprintf(path, sizeof(path), "%s/%s", mnt, de->d_name);
        if (rmdir(path) == 0)
            fl_info("removed %s, left by a faultline daemon that was killed", path);
    }
    closedir(d);
}

static int join_own_cgroup(char *err, size_t errlen)
{
    char mnt[PATH_MAX];
    int e;

    if ((e = fl_cgroup_mountpoint(mnt, sizeof(mnt))) < 0 ||
        (e = fl_cgroup_of_pid(0, tp.orig_cg, sizeof(tp.orig_cg))) < 0) {
        snprintf(err, errlen, "cannot find the daemon's cgroup v2: %s", strerror(-e));
        return e;
    }
    remove_stale_cgroups(mnt);
    snprintf(tp.cg, sizeof(tp.cg), "%s/" TP_CG_PREFIX "%d", mnt, (int)getpid());
    if (mkdir(tp.cg, 0755) != 0 && errno != EEXIST) {
        e = -errno;
        snprintf(err, errlen, "cannot create the daemon's cgroup %s: %s", tp.cg, strerror(-e));
        tp.cg[0] = '\0';
        return e;
    }
    /* Connections from this cgroup are never redirected, and sockops here
     * pairs the proxy's accepted sockets with the apps'. */
    if ((e = write_pid(tp.cg, (int)getpid())) < 0) {
        snprintf(err, errlen, "cannot move the daemon into its cgroup %s: %s", tp.cg, strerror(-e));
        rmdir(tp.cg);
        tp.cg[0] = '\0';
        return e;
    }
    tp.joined = 1;
    return 0;
}

static void leave_own_cgroup(void)
{
    char mnt[PATH_MAX];

    if (tp.joined && write_pid(tp.orig_cg, (int)getpid()) < 0 &&
        fl_cgroup_mountpoint(mnt, sizeof(mnt)) == 0)
        (void)write_pid(mnt, (int)getpid());
    tp.joined = 0;
    if (tp.cg[0] && rmdir(tp.cg) != 0)
        fl_warn("cannot remove the daemon's cgroup %s: %s", tp.cg, strerror(errno));
    tp.cg[0] = '\0';
}

/* ---- public ---- */

static void bpf_log(int level, const char *msg, void *arg)
{
    (void)arg;
    fl_log(level >= 2 ? FL_LOG_WARN : level == 1 ? FL_LOG_INFO : FL_LOG_DEBUG, "bpf: %s", msg);
}

static int set_policy(const struct fl_policy *p)
{
    uint8_t *na = calloc(p->n_targets + 1, 1);

    if (!na)
        return -ENOMEM;
    for (size_t t = 0; t < p->n_targets; t++)
        for (size_t r = 0; r < p->n_rules; r++)
            if (p->rules[r].delay.enabled && fl_policy_rule_applies_to(&p->rules[r], p->targets[t].name))
                na[t] = 1;
    free(tp.noaccel);
    tp.noaccel = na;
    fl_policy_unref(tp.policy);
    tp.policy = fl_policy_ref((struct fl_policy *)p);
    fl_pods_set_policy(tp.pods, p);
    return 0;
}

int fl_transparent_probe(char *err, size_t errlen)
{
    char msg[512];

    if (fl_bpf_probe(msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "transparent mode is not available: %s", msg);
        return -ENOTSUP;
    }
    return 0;
}

int fl_transparent_start(struct fl_worker *w, const struct fl_policy *p, const struct fl_transparent_opts *o,
                char *err, size_t errlen, int *requirement)
{
    struct fl_bpf_opts bo = {0};
    int e;

    *requirement = 0;
    if (tp.started)
        return -EALREADY;
    if ((e = fl_transparent_probe(err, errlen)) < 0) {
        *requirement = 1;
        return e;
    }
    tp.w = w;
    tp.port = p->proxy_port ? p->proxy_port : FL_DEFAULT_PORT;
    if ((e = fl_netns_home_init()) < 0) {
        snprintf(err, errlen, "cannot open the daemon's network namespace: %s", strerror(-e));
        return e;
    }
    if ((e = join_own_cgroup(err, errlen)) < 0)
        return e;
    bo.proxy_port = tp.port;
    bo.daemon_cgroup = tp.cg;
    bo.sockmap = !o->no_sockmap;
    bo.verbose = o->verbose;
    bo.log = bpf_log;
    if ((e = fl_bpf_open(&tp.bpf, &bo)) < 0) {
        snprintf(err, errlen,
                 "cannot load faultline's BPF programs: %s (the log above has the details; "
                 "a verifier failure usually means the kernel is too old: Linux 5.15 or later)",
                 strerror(-e));
        *requirement = 1;
        goto fail_cg;
    }
    if ((e = fl_transparent_check_reset(p, tp.bpf, err, errlen)) < 0)
        goto fail_bpf;
    tp.on_reset = o->on_reset;
    tp.on_reset_arg = o->on_reset_arg;
    tp.generation++;
    if ((e = fl_pods_new(&tp.pods, w->loop, tp.bpf, tp.cg, tp.port, &pods_ops)) < 0 ||
        (e = set_policy(p)) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail_bpf;
    }
    {
        char why[256];
        if (!fl_bpf_reset_available(tp.bpf) && fl_bpf_probe_sock_destroy(why, sizeof(why)))
            fl_warn("existing: reset is not available: the kernel has bpf_sock_destroy but the "
                    "TCP iterator did not load (see above)");
    }
    atomic_store(&tp.enabled, 1);
    atomic_store(&tp.sockmap, !o->no_sockmap);
    tp.started = 1;

    /* The first scan runs here, so the pods found now are enrolled before the
     * daemon says it is ready. */
    fl_pods_scan_sync(tp.pods);

    uv_timer_init(w->loop, &tp.scan_timer);
    uv_timer_init(w->loop, &tp.hb_timer);
    uv_timer_start(&tp.scan_timer, scan_timer_cb, FL_TRANSPARENT_RESCAN_MS, FL_TRANSPARENT_RESCAN_MS);
    atomic_store(&tp.heartbeat_ns, uv_hrtime());
    uv_timer_start(&tp.hb_timer, hb_cb, FL_TRANSPARENT_HEARTBEAT_MS, FL_TRANSPARENT_HEARTBEAT_MS);
    uv_mutex_init(&tp.wd_mu);
    uv_cond_init(&tp.wd_cond);
    tp.wd_stop = 0;
    if (uv_thread_create(&tp.wd_tid, watchdog, NULL) == 0)
        tp.wd_started = 1;
    else
        fl_warn("cannot start the watchdog thread: a stalled event loop will not fail open");
    fl_info("transparent mode: proxy port %u, sk_msg acceleration %s, %u pod%s, %u netns, "
            "daemon cgroup %s",
            tp.port, o->no_sockmap ? "off (--no-sockmap)" : "on", fl_pods_count(tp.pods),
            fl_pods_count(tp.pods) == 1 ? "" : "s", atomic_load(&tp.n_netns), tp.cg);
    return 0;

fail_bpf:
    if (tp.pods)
        fl_pods_free(tp.pods);
    tp.pods = NULL;
    fl_bpf_close(tp.bpf);
    tp.bpf = NULL;
fail_cg:
    leave_own_cgroup();
    return e;
}

int fl_transparent_check_reset(const struct fl_policy *p, struct fl_bpf *b, char *err,
                               size_t errlen)
{
    char why[256] = "";
    int ok = -1; /* not asked yet */

    for (size_t i = 0; i < p->n_targets; i++) {
        const struct fl_target_spec *t = &p->targets[i];
        if (!t->existing_reset)
            continue;
        if (ok < 0) {
            ok = fl_bpf_probe_sock_destroy(why, sizeof(why));
            if (ok && b && !fl_bpf_reset_available(b)) {
                ok = 0;
                snprintf(why, sizeof(why), "its TCP iterator could not be loaded (the daemon's "
                                           "log at startup says why)");
            }
        }
        if (ok)
            return 0;
        snprintf(err, errlen,
                 "%s:%d:%d: spec.targets[%zu].existing: reset is not available on this host: %s; "
                 "use existing: keep (the default)",
                 p->file ? p->file : "policy", t->line, t->col, i, why);
        return -ENOTSUP;
    }
    return 0;
}

int fl_transparent_check(const struct fl_policy *p, char *err, size_t errlen)
{
    uint16_t port = p->proxy_port ? p->proxy_port : FL_DEFAULT_PORT;

    if (!tp.started) {
        if (!p->n_targets)
            return 0;
        snprintf(err, errlen,
                 "the policy has 'targets' but the daemon was started without "
                 "transparent mode: restart faultline with this policy");
        return -ENOTSUP;
    }
    if (p->n_targets && port != tp.port) {
        snprintf(err, errlen, "spec.proxy_port changes from %u to %u, which needs a restart",
                 tp.port, port);
        return -EINVAL;
    }
    return fl_transparent_check_reset(p, tp.bpf, err, errlen);
}

int fl_transparent_apply(const struct fl_policy *p, char *err, size_t errlen)
{
    int e = fl_transparent_check(p, err, errlen);

    if (e < 0 || !tp.started)
        return e;
    if ((e = set_policy(p)) < 0) {
        snprintf(err, errlen, "out of memory");
        return e;
    }
    if (!tp.draining)
        fl_pods_scan(tp.pods);
    return 0;
}

void fl_transparent_set_view(struct fl_kube_view *v)
{
    if (!tp.started)
        return;
    if (fl_pods_set_view(tp.pods, v) && !tp.draining)
        fl_pods_scan(tp.pods);
}

static const char *pod_state(const struct fl_pods_pod *pp)
{
    struct tp_ns *ns;
    switch (pp->state) {
    case FL_POD_WAITING_CGROUP: return "waiting for cgroup";
    case FL_POD_WAITING_NETNS: return "waiting for netns";
    case FL_POD_FAILED: return "failed";
    case FL_POD_STEERED:
        ns = ns_find(pp->ns_ino);
        return ns && ns->n_l == 0 ? "port busy" : "steered";
    }
    return "?";
}

size_t fl_transparent_pods(struct fl_transparent_pod *out, size_t cap)
{
    size_t n = 0;
    const struct fl_pods_pod *pp = tp.started ? fl_pods_selected(tp.pods, &n) : NULL;
    for (size_t i = 0; pp && i < n && i < cap; i++)
        out[i] = (struct fl_transparent_pod){pp[i].pod, pp[i].cgroup, pp[i].target,
                                             pod_state(&pp[i])};
    return pp ? n : 0;
}

void fl_transparent_drain(void)
{
    if (!tp.started || tp.draining)
        return;
    uv_mutex_lock(&tp.wd_mu);
    tp.draining = 1;
    fl_bpf_set_enabled(tp.bpf, 0);
    atomic_store(&tp.enabled, 0);
    uv_mutex_unlock(&tp.wd_mu);
    uv_timer_stop(&tp.scan_timer);
    fl_pods_pause(tp.pods);
    while (tp.nss)
        ns_close(tp.nss, NULL);
}

void fl_transparent_stats(struct fl_transparent_stats *st)
{
    struct fl_bpf_stats bs = {0};

    memset(st, 0, sizeof(*st));
    if (!tp.started)
        return;
    st->active = 1;
    if (fl_bpf_stats(tp.bpf, &bs) < 0)
        memset(&bs, 0, sizeof(bs));
    st->enabled = atomic_load(&tp.enabled);
    st->sockmap = atomic_load(&tp.sockmap);
    st->redirected = bs.redirected;
    st->accepted = atomic_load(&tp.accepted);
    st->no_orig = atomic_load(&tp.no_orig);
    st->no_listener = bs.fail_open;
    st->msg_redirects = bs.msg_redirects;
    st->msg_fallbacks = bs.msg_no_peer;
    st->fail_open_events = atomic_load(&tp.fail_open_events);
    st->pods = fl_pods_count(tp.pods);
    st->netns = atomic_load(&tp.n_netns);
    st->ingress = bs.ingress;
    st->ingress_no_listener = bs.ingress_fail_open;
    st->ingress_accepted = atomic_load(&tp.ingress_accepted);
    st->ingress_netns = atomic_load(&tp.ingress_netns);
    st->existing_reset = atomic_load(&tp.existing_reset);
    st->sock_destroy = fl_bpf_reset_available(tp.bpf);
}

void fl_transparent_stop(void)
{
    struct fl_transparent_stats st;

    if (!tp.started)
        return;
    if (tp.wd_started) {
        uv_mutex_lock(&tp.wd_mu);
        tp.wd_stop = 1;
        uv_cond_signal(&tp.wd_cond);
        uv_mutex_unlock(&tp.wd_mu);
        uv_thread_join(&tp.wd_tid);
        tp.wd_started = 0;
    }
    fl_transparent_stats(&st);
    fl_info("transparent mode: %llu connections redirected, %llu proxied, %llu without an "
            "original destination, %llu sent direct for want of a listener, %llu sk_msg "
            "redirects, %llu fail-open events; ingress: %llu handed over, %llu proxied; "
            "existing: reset destroyed %llu",
            (unsigned long long)st.redirected, (unsigned long long)st.accepted,
            (unsigned long long)st.no_orig, (unsigned long long)st.no_listener,
            (unsigned long long)st.msg_redirects, (unsigned long long)st.fail_open_events,
            (unsigned long long)st.ingress, (unsigned long long)st.ingress_accepted,
            (unsigned long long)st.existing_reset);
    fl_bpf_set_enabled(tp.bpf, 0);
    tp.draining = 1;
    uv_close((uv_handle_t *)&tp.scan_timer, NULL);
    uv_close((uv_handle_t *)&tp.hb_timer, NULL);
    while (tp.nss)
        ns_close(tp.nss, NULL);
    /* Reset jobs use the BPF object from the thread pool: the queued ones are
     * cancelled, the running ones (short: one iterator walk) waited for. */
    for (struct reset_job *j = tp.jobs; j; j = j->next)
        if (uv_cancel((uv_req_t *)&j->req) == 0) /* never runs; reset_done frees it */
            atomic_fetch_sub(&tp.resets_running, 1);
    while (atomic_load(&tp.resets_running) > 0)
        usleep(1000);
    free(tp.ing);
    tp.ing = NULL;
    tp.n_ing = tp.cap_ing = 0;
    /* The links go with the object: every hook detaches here. */
    fl_bpf_close(tp.bpf);
    tp.bpf = NULL;
    fl_pods_free(tp.pods);
    tp.pods = NULL;
    leave_own_cgroup();
    fl_info("transparent mode: hooks detached, daemon cgroup removed");
    free(tp.noaccel);
    tp.noaccel = NULL;
    fl_policy_unref(tp.policy);
    tp.policy = NULL;
    tp.started = 0;
    uv_mutex_destroy(&tp.wd_mu);
    uv_cond_destroy(&tp.wd_cond);
}

int fl_transparent_conflict(const struct fl_policy *part, char *who, size_t len)
{
    return tp.started && fl_pods_conflict(tp.pods, part, who, len);
}
