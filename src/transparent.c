/* transparent: see transparent.h.
 *
 * State lives in one static struct: there is one daemon per process. The
 * filesystem walk that finds pods (glob over cgroupfs, /proc/PID/ns/net) and
 * the setns work of opening listeners in a newly seen netns run on libuv's
 * thread pool; everything that touches the BPF maps, the links and libuv
 * handles runs on the main loop's thread, in scan_done(). One scan is in
 * flight at a time.
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

#include "bpf_loader.h"
#include "conn.h"
#include "daemon.h"
#include "faultline.h"
#include "log.h"
#include "worker.h"

#define TP_ROUTES 16 /* per-netns cache: destination -> pod source address */
#define TP_CG_PREFIX "faultline-daemon-"

struct tp_ns;

struct tp_lsn {
    uv_tcp_t tcp;
    struct tp_ns *ns;
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
    unsigned users; /* enrolled pods in it (recounted on each reconcile) */
    uint64_t retry_at; /* no listener (port taken): loop time to try again; 0: listening */
    unsigned failures; /* attempts that found the port taken, in a row */
    struct tp_route routes[TP_ROUTES];
    unsigned n_routes, next_route;
};

struct tp_pod {
    struct tp_pod *next;
    char *path;
    uint64_t cgid;
    uint64_t ns_ino; /* 0: no process in it yet, so no netns known */
    int seen;
};

/* One (pod, destination, port) -> target record in the kernel's policy map. */
struct tp_entry {
    uint64_t cgid;
    struct fl_cidr dst;
    uint16_t port;
    uint32_t id;
    int seen;
};

/* ---- scan: the part that runs on the thread pool ---- */

struct scan_hit {
    size_t target;
    char *path;
    uint64_t cgid;
    uint64_t ns_ino;
};

struct scan_ns {
    uint64_t ino;
    int fd;
    uint64_t cookie;
    int lfds[2];
    int err; /* listeners could not be opened: negative errno */
};

struct scan {
    uv_work_t req;
    struct fl_policy *p; /* reference */
    char daemon_cg[PATH_MAX];
    uint16_t port;
    uint64_t *known; /* inos of netns already handled */
    size_t n_known;
    struct scan_hit *hits;
    size_t n_hits, cap_hits;
    struct scan_ns *ns;
    size_t n_ns, cap_ns;
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
    int host_ns;            /* the daemon's own netns, to come back to after setns */
    char cg[PATH_MAX];      /* <cgroup2>/faultline-daemon-PID */
    char orig_cg[PATH_MAX]; /* where the daemon was before */
    int joined;
    struct tp_pod *pods;
    struct tp_ns *nss;
    struct tp_entry *entries;
    size_t n_entries, cap_entries;
    uv_timer_t scan_timer, hb_timer;
    struct scan *inflight;
    int rescan;
    /* watchdog */
    uv_thread_t wd_tid;
    uv_mutex_t wd_mu;
    uv_cond_t wd_cond;
    int wd_started, wd_stop;
    int failed_open; /* under wd_mu */
    atomic_ullong heartbeat_ns;
    /* counters */
    atomic_ullong accepted, no_orig, fail_open_events;
    atomic_uint n_pods, n_netns;
    atomic_int enabled, sockmap;
} T = {.host_ns = -1};

static socklen_t sa_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* ---- netns switching on the calling thread ---- */

/* Runs fn(arg) with the calling thread inside the netns behind nsfd, then
 * puts the thread back in the daemon's netns. setns(CLONE_NEWNET) changes only
 * the calling thread. A thread that cannot get back would open every later
 * socket in a pod's netns: that is not survivable, so it aborts. */
static int in_netns(int nsfd, int (*fn)(void *arg), void *arg)
{
    int ret;

    if (T.host_ns < 0)
        return -EBADF;
    if (setns(nsfd, CLONE_NEWNET) != 0)
        return -errno;
    ret = fn(arg);
    if (setns(T.host_ns, CLONE_NEWNET) != 0) {
        fl_error("cannot return to the daemon's network namespace: %s; aborting", strerror(errno));
        abort();
    }
    return ret;
}

struct sock_job {
    int family;
    int fd;
};

static int sock_job(void *arg)
{
    struct sock_job *j = arg;
    int mark = FL_BYPASS_MARK;
    int fd = socket(j->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);

    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    j->fd = fd;
    return 0;
}

int fl_tp_socket_in(int netns_fd, int family, int *fd)
{
    struct sock_job j = {.family = family, .fd = -1};
    int e = in_netns(netns_fd, sock_job, &j);

    if (e < 0)
        return e;
    *fd = j.fd;
    return 0;
}

struct route_job {
    const struct sockaddr *dst;
    struct sockaddr_storage src;
};

/* The address the pod's kernel picks as source toward dst (a UDP connect
 * sends nothing). */
static int route_job(void *arg)
{
    struct route_job *j = arg;
    socklen_t sl = sizeof(j->src);
    int ret = 0, fd = socket(j->dst->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    if (connect(fd, j->dst, sa_len(j->dst)) != 0 ||
        getsockname(fd, (struct sockaddr *)&j->src, &sl) != 0)
        ret = -errno;
    close(fd);
    return ret;
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
        struct route_job j = {.dst = dst};
        if (in_netns(ns->fd, route_job, &j) < 0)
            return;
        r = &ns->routes[ns->n_routes < TP_ROUTES ? ns->n_routes++ : ns->next_route++ % TP_ROUTES];
        r->family = dst->sa_family;
        memcpy(r->dst, a, n);
        r->src = j.src;
    }
    *src = r->src;
    if (src->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)src)->sin6_port = port;
    else
        ((struct sockaddr_in *)src)->sin_port = port;
}

/* ---- accepting ---- */

/* Fills h's destination, scope and netns from the connect hook's record of
 * the client's original destination. Runs on worker 0, which owns T. */
static int tp_resolve(struct fl_conn_handoff *h, struct tp_ns *ns)
{
    struct fl_bpf_orig o;
    char a[64];
    int e = fl_bpf_lookup_orig_dst(T.bpf, ns->cookie, (struct sockaddr *)&h->src, &o);

    if (e < 0) {
        unsigned long long n = atomic_fetch_add(&T.no_orig, 1) + 1;
        if (n <= 10 || n % 1000 == 0)
            fl_warn("connection from %s to the proxy port in netns %llu has no original "
                    "destination (its client closed before the proxy took it, or it did not "
                    "come through faultline's connect hook): closed (%llu so far)",
                    fl_addr_str((struct sockaddr *)&h->src, a, sizeof(a)),
                    (unsigned long long)ns->cookie, n);
        return e;
    }
    uint32_t id = o.target_id;
    int known = T.policy && id >= 1 && id <= T.policy->n_targets;
    h->scope = strdup(known ? T.policy->targets[id - 1].name : "");
    if (!h->scope)
        return -ENOMEM;
    memcpy(&h->dst, &o.dst, sa_len((struct sockaddr *)&o.dst));
    /* A held request stops the proxy reading; an sk_msg ingress redirect has
     * no TCP window to stop the app, so such connections stay on TCP. */
    if (known && T.noaccel && T.noaccel[id - 1] &&
        (e = fl_bpf_conn_no_accel(T.bpf, ns->cookie, (struct sockaddr *)&h->src)) < 0 &&
        e != -ENOENT)
        fl_debug("connection from %s: cannot turn sk_msg off: %s",
                 fl_addr_str((struct sockaddr *)&h->src, a, sizeof(a)), strerror(-e));
    h->upstream_netns = fcntl(ns->fd, F_DUPFD_CLOEXEC, 0);
    if (h->upstream_netns < 0)
        return -errno;
    pod_source(ns, (struct sockaddr *)&h->dst, &h->src);
    atomic_fetch_add_explicit(&T.accepted, 1, memory_order_relaxed);
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
        e = fl_daemon_handoff(T.rr++, h);
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

/* Unlinks ns and closes its listeners; the record goes with the last one. */
static void ns_close(struct tp_ns *ns, const char *why)
{
    struct tp_ns **pp;

    for (pp = &T.nss; *pp; pp = &(*pp)->next)
        if (*pp == ns) {
            *pp = ns->next;
            break;
        }
    if (ns->n_l) {
        atomic_fetch_sub(&T.n_netns, 1);
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
    for (struct tp_ns *ns = T.nss; ns; ns = ns->next)
        if (ns->ino == ino)
            return ns;
    return NULL;
}

/* How long a netns whose proxy port was taken waits before the next try. */
#define TP_RETRY_MS 5000

/* Takes over sn's fds (listener fds are consumed even on failure). failures:
 * the earlier attempts in this netns that found the port taken. */
static void ns_add(struct scan_ns *sn, unsigned failures)
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
        if (e < 0 || (e = uv_tcp_init(T.w->loop, &l->tcp)) < 0) {
            close(fd);
            continue;
        }
        l->ns = ns;
        l->tcp.data = l;
        ns->n_l++;
        if ((e = uv_tcp_open(&l->tcp, fd)) < 0) {
            close(fd);
            continue;
        }
        e = uv_listen((uv_stream_t *)&l->tcp, SOMAXCONN, on_tp_connection);
    }
    ns->next = T.nss;
    T.nss = ns;
    if (sn->err < 0 || e < 0) {
        /* Kept without listeners, and tried again every TP_RETRY_MS (not at
         * every scan): with nothing listening, the kernel sends that netns's
         * traffic direct. One warning, not one per try. */
        ns->failures = failures + 1;
        ns->retry_at = uv_now(T.w->loop) + TP_RETRY_MS;
        if (failures == 0)
            fl_warn("netns %llu: cannot open the proxy listener on port %u: %s; its pods' "
                    "traffic goes direct until it can (tried again every %d s; free that port "
                    "in the pod, or set spec.proxy_port)",
                    (unsigned long long)ns->cookie, T.port,
                    sn->err < 0 ? strerror(-sn->err) : uv_strerror(e), TP_RETRY_MS / 1000);
        ns_close_listeners(ns);
        return;
    }
    atomic_fetch_add(&T.n_netns, 1);
    fl_info("netns %llu: proxy listening on 127.0.0.1:%u%s%s", (unsigned long long)ns->cookie,
            T.port, ns->n_l == 2 ? " and [::1]" : " (no IPv6 loopback)",
            failures ? " (the port is free again)" : "");
}

/* ---- scan ---- */

static int scan_push_hit(struct scan *s, size_t target, const char *path, uint64_t cgid,
                         uint64_t ino)
{
    if (s->n_hits == s->cap_hits) {
        size_t cap = s->cap_hits ? s->cap_hits * 2 : 16;
        struct scan_hit *h = realloc(s->hits, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        s->hits = h;
        s->cap_hits = cap;
    }
    struct scan_hit *h = &s->hits[s->n_hits];
    h->path = strdup(path);
    if (!h->path)
        return -ENOMEM;
    h->target = target;
    h->cgid = cgid;
    h->ns_ino = ino;
    s->n_hits++;
    return 0;
}

static int ino_known(const struct scan *s, uint64_t ino)
{
    for (size_t i = 0; i < s->n_known; i++)
        if (s->known[i] == ino)
            return 1;
    for (size_t i = 0; i < s->n_ns; i++)
        if (s->ns[i].ino == ino)
            return 1;
    return 0;
}

/* The netns of the pod at path: its inode, and for one not seen before the
 * listeners opened inside it. Returns the inode or 0 (no process yet). */
static uint64_t scan_netns(struct scan *s, const char *path)
{
    struct stat st;
    int fd;

    if (fl_cgroup_netns(path, &fd) < 0)
        return 0;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return 0;
    }
    if (ino_known(s, (uint64_t)st.st_ino)) {
        close(fd);
        return (uint64_t)st.st_ino;
    }
    if (s->n_ns == s->cap_ns) {
        size_t cap = s->cap_ns ? s->cap_ns * 2 : 8;
        struct scan_ns *n = realloc(s->ns, cap * sizeof(*n));
        if (!n) {
            close(fd);
            return 0;
        }
        s->ns = n;
        s->cap_ns = cap;
    }
    struct scan_ns *sn = &s->ns[s->n_ns++];
    sn->ino = (uint64_t)st.st_ino;
    sn->fd = fd;
    sn->lfds[0] = sn->lfds[1] = -1;
    sn->cookie = 0;
    sn->err = fl_netns_cookie(fd, &sn->cookie);
    if (sn->err == 0)
        sn->err = fl_netns_listen(fd, s->port, sn->lfds);
    return sn->ino;
}

static int is_daemon_cgroup(const struct scan *s, const char *path)
{
    size_t n = strlen(s->daemon_cg);
    return n && strncmp(path, s->daemon_cg, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Thread pool: glob every target's pod patterns. Reads the policy snapshot
 * (immutable) and its own struct only. */
static void scan_work(uv_work_t *req)
{
    struct scan *s = req->data;
    const struct fl_policy *p = s->p;

    for (size_t t = 0; t < p->n_targets; t++) {
        const struct fl_target_spec *ts = &p->targets[t];
        for (size_t k = 0; k < ts->n_cgroups; k++) {
            glob_t g;
            int r = glob(ts->cgroups[k], GLOB_ONLYDIR, NULL, &g);
            if (r != 0) {
                if (r != GLOB_NOMATCH)
                    fl_debug("target '%s': cannot expand %s", ts->name, ts->cgroups[k]);
                globfree(&g);
                continue;
            }
            for (size_t i = 0; i < g.gl_pathc; i++) {
                const char *path = g.gl_pathv[i];
                uint64_t cgid = 0, ino = 0;
                size_t j;
                struct stat st;

                if (is_daemon_cgroup(s, path) || stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
                    continue;
                /* Another target may have looked this pod up already. */
                for (j = 0; j < s->n_hits; j++)
                    if (strcmp(s->hits[j].path, path) == 0)
                        break;
                if (j < s->n_hits) {
                    if (s->hits[j].target == t)
                        continue;
                    cgid = s->hits[j].cgid;
                    ino = s->hits[j].ns_ino;
                } else {
                    if (fl_cgroup_id(path, &cgid) < 0)
                        continue;
                    ino = scan_netns(s, path);
                }
                if (scan_push_hit(s, t, path, cgid, ino) < 0)
                    break;
            }
            globfree(&g);
        }
    }
}

static void scan_free(struct scan *s, int close_fds)
{
    for (size_t i = 0; i < s->n_hits; i++)
        free(s->hits[i].path);
    free(s->hits);
    if (close_fds)
        for (size_t i = 0; i < s->n_ns; i++) {
            for (int k = 0; k < 2; k++)
                if (s->ns[i].lfds[k] >= 0)
                    close(s->ns[i].lfds[k]);
            close(s->ns[i].fd);
        }
    free(s->ns);
    free(s->known);
    fl_policy_unref(s->p);
    free(s);
}

static struct scan *scan_new(void)
{
    struct scan *s = calloc(1, sizeof(*s));
    size_t n = 0;

    if (!s)
        return NULL;
    s->req.data = s;
    s->p = fl_policy_ref(T.policy);
    s->port = T.port;
    snprintf(s->daemon_cg, sizeof(s->daemon_cg), "%s", T.cg);
    for (struct tp_ns *ns = T.nss; ns; ns = ns->next)
        n++;
    s->known = calloc(n + 1, sizeof(*s->known));
    if (!s->known) {
        scan_free(s, 0);
        return NULL;
    }
    uint64_t now = uv_now(T.w->loop);
    for (struct tp_ns *ns = T.nss; ns; ns = ns->next)
        if (!ns->retry_at || now < ns->retry_at) /* else: the scan tries its port again */
            s->known[s->n_known++] = ns->ino;
    return s;
}

/* ---- reconcile: the part on the loop thread ---- */

static struct tp_pod *pod_find(const char *path)
{
    for (struct tp_pod *pd = T.pods; pd; pd = pd->next)
        if (strcmp(pd->path, path) == 0)
            return pd;
    return NULL;
}

static void pod_release(struct tp_pod *pd, const char *why)
{
    struct tp_pod **pp;

    for (pp = &T.pods; *pp; pp = &(*pp)->next)
        if (*pp == pd) {
            *pp = pd->next;
            break;
        }
    if (fl_bpf_detach_cgroup(T.bpf, pd->path) == 0)
        fl_info("released pod %s (%s): hooks detached", pd->path, why);
    atomic_fetch_sub(&T.n_pods, 1);
    free(pd->path);
    free(pd);
}

static int entry_same(const struct tp_entry *e, uint64_t cgid, const struct fl_target_spec *ts)
{
    return e->cgid == cgid && e->port == ts->port && e->dst.family == ts->dst.family &&
           e->dst.prefix == ts->dst.prefix && memcmp(e->dst.addr, ts->dst.addr, 16) == 0;
}

static void entry_remove(size_t i)
{
    struct tp_entry *e = &T.entries[i];

    if (fl_bpf_remove_target(T.bpf, e->cgid, e->dst.family, e->dst.addr, e->dst.prefix, e->port) <
        0)
        fl_debug("removing target entry for cgroup %llu: already gone",
                 (unsigned long long)e->cgid);
    T.entries[i] = T.entries[--T.n_entries];
}

static void entry_program(uint64_t cgid, const struct fl_target_spec *ts, uint32_t id,
                          const char *path)
{
    struct tp_entry *e = NULL;
    int r;

    for (size_t i = 0; i < T.n_entries; i++)
        if (entry_same(&T.entries[i], cgid, ts)) {
            e = &T.entries[i];
            break;
        }
    if (e && e->seen)
        return; /* an earlier target of the policy owns the same selection */
    if (e && e->id == id) {
        e->seen = 1;
        return;
    }
    if (!e && T.n_entries == T.cap_entries) {
        size_t cap = T.cap_entries ? T.cap_entries * 2 : 16;
        struct tp_entry *n = realloc(T.entries, cap * sizeof(*n));
        if (!n)
            return;
        T.entries = n;
        T.cap_entries = cap;
    }
    r = fl_bpf_add_target(T.bpf, cgid, ts->dst.family, ts->dst.addr, ts->dst.prefix, ts->port, id);
    if (r < 0) {
        fl_warn("target '%s': cannot select pod %s: %s", ts->name, path, strerror(-r));
        return;
    }
    if (!e) {
        e = &T.entries[T.n_entries++];
        e->cgid = cgid;
        e->dst = ts->dst;
        e->port = ts->port;
    }
    e->id = id;
    e->seen = 1;
}

static void reconcile(struct scan *s)
{
    const struct fl_policy *p = s->p;
    struct tp_pod *pd, *next;
    struct tp_ns *ns, *nsn;

    for (size_t i = 0; i < s->n_ns; i++) {
        struct tp_ns *old = ns_find(s->ns[i].ino);
        unsigned failures = 0;
        if (old && old->retry_at) { /* a retry: the new attempt replaces the record */
            failures = old->failures;
            ns_close(old, NULL);
        } else if (old) { /* cannot happen with one scan in flight */
            for (int k = 0; k < 2; k++)
                if (s->ns[i].lfds[k] >= 0)
                    close(s->ns[i].lfds[k]);
            close(s->ns[i].fd);
            continue;
        }
        ns_add(&s->ns[i], failures);
    }
    s->n_ns = 0; /* taken over */

    for (pd = T.pods; pd; pd = pd->next)
        pd->seen = 0;
    for (size_t i = 0; i < T.n_entries; i++)
        T.entries[i].seen = 0;
    for (size_t i = 0; i < s->n_hits; i++) {
        struct scan_hit *h = &s->hits[i];
        const struct fl_target_spec *ts = &p->targets[h->target];

        pd = pod_find(h->path);
        if (pd && pd->cgid != h->cgid) {
            pod_release(pd, "its cgroup was re-created");
            pd = NULL;
        }
        if (!pd) {
            int e = fl_bpf_attach_cgroup(T.bpf, h->path);
            if (e < 0) {
                fl_warn("target '%s': cannot attach to pod cgroup %s: %s", ts->name, h->path,
                        strerror(-e));
                continue;
            }
            pd = calloc(1, sizeof(*pd));
            if (!pd || !(pd->path = strdup(h->path))) {
                free(pd);
                (void)!fl_bpf_detach_cgroup(T.bpf, h->path);
                continue;
            }
            pd->cgid = h->cgid;
            pd->next = T.pods;
            T.pods = pd;
            atomic_fetch_add(&T.n_pods, 1);
            fl_info("enrolled pod %s for target '%s'%s", h->path, ts->name,
                    h->ns_ino ? "" : " (no process yet; its netns is looked for every second)");
        }
        pd->seen = 1;
        pd->ns_ino = h->ns_ino;
        entry_program(h->cgid, ts, (uint32_t)h->target + 1, h->path);
    }
    for (size_t i = 0; i < T.n_entries;) {
        if (!T.entries[i].seen)
            entry_remove(i);
        else
            i++;
    }
    for (pd = T.pods; pd; pd = next) {
        next = pd->next;
        if (!pd->seen)
            pod_release(pd, "no longer selected or gone");
    }
    for (ns = T.nss; ns; ns = ns->next)
        ns->users = 0;
    for (pd = T.pods; pd; pd = pd->next)
        if (pd->ns_ino && (ns = ns_find(pd->ns_ino)))
            ns->users++;
    for (ns = T.nss; ns; ns = nsn) {
        nsn = ns->next;
        if (!ns->users)
            ns_close(ns, "no selected pod left in it");
    }
}

static void scan_start(void);

static void scan_done(uv_work_t *req, int status)
{
    struct scan *s = req->data;

    T.inflight = NULL;
    if (status < 0 || !T.started || T.draining) {
        scan_free(s, 1);
        return;
    }
    reconcile(s);
    scan_free(s, 1);
    if (T.rescan)
        scan_start();
}

static void scan_start(void)
{
    struct scan *s;

    if (T.inflight) {
        T.rescan = 1;
        return;
    }
    T.rescan = 0;
    s = scan_new();
    if (!s)
        return;
    if (uv_queue_work(T.w->loop, &s->req, scan_work, scan_done) < 0) {
        scan_free(s, 1);
        return;
    }
    T.inflight = s;
}

static void scan_timer_cb(uv_timer_t *t)
{
    (void)t;
    scan_start();
}

/* ---- watchdog ---- */

static void hb_cb(uv_timer_t *t)
{
    (void)t;
    atomic_store(&T.heartbeat_ns, uv_hrtime());
}

static void watchdog(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "fl-watchdog");
    uv_mutex_lock(&T.wd_mu);
    while (!T.wd_stop) {
        (void)uv_cond_timedwait(&T.wd_cond, &T.wd_mu, FL_TP_HEARTBEAT_MS * 1000000ull);
        if (T.wd_stop)
            break;
        uint64_t age_ms = (uv_hrtime() - atomic_load(&T.heartbeat_ns)) / 1000000;
        if (age_ms > FL_TP_STALL_MS && !T.failed_open) {
            T.failed_open = 1;
            fl_bpf_set_enabled(T.bpf, 0);
            atomic_store(&T.enabled, 0);
            atomic_fetch_add(&T.fail_open_events, 1);
            fl_warn("the event loop has not turned for %llu ms: redirection is off (fail-open), "
                    "new connections go direct until it turns again",
                    (unsigned long long)age_ms);
        } else if (age_ms <= FL_TP_STALL_MS && T.failed_open) {
            T.failed_open = 0;
            if (!T.draining) {
                fl_bpf_set_enabled(T.bpf, 1);
                atomic_store(&T.enabled, 1);
                fl_info("the event loop turns again: redirection is back on");
            }
        }
    }
    uv_mutex_unlock(&T.wd_mu);
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

    if ((e = fl_cgroup2_mount(mnt, sizeof(mnt))) < 0 ||
        (e = fl_cgroup_of_pid(0, T.orig_cg, sizeof(T.orig_cg))) < 0) {
        snprintf(err, errlen, "cannot find the daemon's cgroup v2: %s", strerror(-e));
        return e;
    }
    remove_stale_cgroups(mnt);
    snprintf(T.cg, sizeof(T.cg), "%s/" TP_CG_PREFIX "%d", mnt, (int)getpid());
    if (mkdir(T.cg, 0755) != 0 && errno != EEXIST) {
        e = -errno;
        snprintf(err, errlen, "cannot create the daemon's cgroup %s: %s", T.cg, strerror(-e));
        T.cg[0] = '\0';
        return e;
    }
    /* Connections from this cgroup are never redirected, and sockops here
     * pairs the proxy's accepted sockets with the apps'. */
    if ((e = write_pid(T.cg, (int)getpid())) < 0) {
        snprintf(err, errlen, "cannot move the daemon into its cgroup %s: %s", T.cg, strerror(-e));
        rmdir(T.cg);
        T.cg[0] = '\0';
        return e;
    }
    T.joined = 1;
    return 0;
}

static void leave_own_cgroup(void)
{
    char mnt[PATH_MAX];

    if (T.joined && write_pid(T.orig_cg, (int)getpid()) < 0 &&
        fl_cgroup2_mount(mnt, sizeof(mnt)) == 0)
        (void)write_pid(mnt, (int)getpid());
    T.joined = 0;
    if (T.cg[0] && rmdir(T.cg) != 0)
        fl_warn("cannot remove the daemon's cgroup %s: %s", T.cg, strerror(errno));
    T.cg[0] = '\0';
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
            if (p->rules[r].delay.enabled && fl_rule_applies_to(&p->rules[r], p->targets[t].name))
                na[t] = 1;
    free(T.noaccel);
    T.noaccel = na;
    fl_policy_unref(T.policy);
    T.policy = fl_policy_ref((struct fl_policy *)p);
    return 0;
}

int fl_tp_probe(char *err, size_t errlen)
{
    char msg[512];

    if (fl_bpf_probe(msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "transparent mode is not available: %s", msg);
        return -ENOTSUP;
    }
    return 0;
}

int fl_tp_start(struct fl_worker *w, const struct fl_policy *p, const struct fl_tp_opts *o,
                char *err, size_t errlen, int *requirement)
{
    struct fl_bpf_opts bo = {0};
    int e;

    *requirement = 0;
    if (T.started)
        return -EALREADY;
    if ((e = fl_tp_probe(err, errlen)) < 0) {
        *requirement = 1;
        return e;
    }
    T.w = w;
    T.port = p->proxy_port ? p->proxy_port : FL_DEFAULT_PORT;
    T.host_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (T.host_ns < 0) {
        e = -errno;
        snprintf(err, errlen, "cannot open the daemon's network namespace: %s", strerror(-e));
        return e;
    }
    if ((e = join_own_cgroup(err, errlen)) < 0)
        goto fail_ns;
    bo.proxy_port = T.port;
    bo.daemon_cgroup = T.cg;
    bo.sockmap = !o->no_sockmap;
    bo.verbose = o->verbose;
    bo.log = bpf_log;
    if ((e = fl_bpf_open(&T.bpf, &bo)) < 0) {
        snprintf(err, errlen,
                 "cannot load faultline's BPF programs: %s (the log above has the details; "
                 "a verifier failure usually means the kernel is too old: Linux 5.15 or later)",
                 strerror(-e));
        *requirement = 1;
        goto fail_cg;
    }
    if ((e = set_policy(p)) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail_bpf;
    }
    atomic_store(&T.enabled, 1);
    atomic_store(&T.sockmap, !o->no_sockmap);
    T.started = 1;

    /* The first scan runs here, so the pods found now are enrolled before the
     * daemon says it is ready. */
    struct scan *s = scan_new();
    if (!s) {
        e = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail_started;
    }
    scan_work(&s->req);
    reconcile(s);
    scan_free(s, 1);

    uv_timer_init(w->loop, &T.scan_timer);
    uv_timer_init(w->loop, &T.hb_timer);
    uv_timer_start(&T.scan_timer, scan_timer_cb, FL_TP_RESCAN_MS, FL_TP_RESCAN_MS);
    atomic_store(&T.heartbeat_ns, uv_hrtime());
    uv_timer_start(&T.hb_timer, hb_cb, FL_TP_HEARTBEAT_MS, FL_TP_HEARTBEAT_MS);
    uv_mutex_init(&T.wd_mu);
    uv_cond_init(&T.wd_cond);
    T.wd_stop = 0;
    if (uv_thread_create(&T.wd_tid, watchdog, NULL) == 0)
        T.wd_started = 1;
    else
        fl_warn("cannot start the watchdog thread: a stalled event loop will not fail open");
    fl_info("transparent mode: proxy port %u, sk_msg acceleration %s, %u pod%s, %u netns, "
            "daemon cgroup %s",
            T.port, o->no_sockmap ? "off (--no-sockmap)" : "on", atomic_load(&T.n_pods),
            atomic_load(&T.n_pods) == 1 ? "" : "s", atomic_load(&T.n_netns), T.cg);
    return 0;

fail_started:
    T.started = 0;
fail_bpf:
    fl_bpf_close(T.bpf);
    T.bpf = NULL;
fail_cg:
    leave_own_cgroup();
fail_ns:
    close(T.host_ns);
    T.host_ns = -1;
    return e;
}

int fl_tp_check(const struct fl_policy *p, char *err, size_t errlen)
{
    uint16_t port = p->proxy_port ? p->proxy_port : FL_DEFAULT_PORT;

    if (!T.started) {
        if (!p->n_targets)
            return 0;
        snprintf(err, errlen,
                 "the policy has 'targets' but the daemon was started without "
                 "transparent mode: restart faultline with this policy");
        return -ENOTSUP;
    }
    if (p->n_targets && port != T.port) {
        snprintf(err, errlen, "spec.proxy_port changes from %u to %u, which needs a restart",
                 T.port, port);
        return -EINVAL;
    }
    return 0;
}

int fl_tp_apply(const struct fl_policy *p, char *err, size_t errlen)
{
    int e = fl_tp_check(p, err, errlen);

    if (e < 0 || !T.started)
        return e;
    if ((e = set_policy(p)) < 0) {
        snprintf(err, errlen, "out of memory");
        return e;
    }
    if (!T.draining)
        scan_start();
    return 0;
}

void fl_tp_drain(void)
{
    if (!T.started || T.draining)
        return;
    uv_mutex_lock(&T.wd_mu);
    T.draining = 1;
    fl_bpf_set_enabled(T.bpf, 0);
    atomic_store(&T.enabled, 0);
    uv_mutex_unlock(&T.wd_mu);
    uv_timer_stop(&T.scan_timer);
    while (T.nss)
        ns_close(T.nss, NULL);
}

void fl_tp_stats(struct fl_tp_stats *st)
{
    struct fl_bpf_stats bs = {0};

    memset(st, 0, sizeof(*st));
    if (!T.started)
        return;
    st->active = 1;
    if (fl_bpf_stats(T.bpf, &bs) < 0)
        memset(&bs, 0, sizeof(bs));
    st->enabled = atomic_load(&T.enabled);
    st->sockmap = atomic_load(&T.sockmap);
    st->redirected = bs.redirected;
    st->accepted = atomic_load(&T.accepted);
    st->no_orig = atomic_load(&T.no_orig);
    st->no_listener = bs.fail_open;
    st->msg_redirects = bs.msg_redirects;
    st->msg_fallbacks = bs.msg_no_peer;
    st->fail_open_events = atomic_load(&T.fail_open_events);
    st->pods = atomic_load(&T.n_pods);
    st->netns = atomic_load(&T.n_netns);
}

void fl_tp_stop(void)
{
    struct fl_tp_stats st;

    if (!T.started)
        return;
    if (T.wd_started) {
        uv_mutex_lock(&T.wd_mu);
        T.wd_stop = 1;
        uv_cond_signal(&T.wd_cond);
        uv_mutex_unlock(&T.wd_mu);
        uv_thread_join(&T.wd_tid);
        T.wd_started = 0;
    }
    fl_tp_stats(&st);
    fl_info("transparent mode: %llu connections redirected, %llu proxied, %llu without an "
            "original destination, %llu sent direct for want of a listener, %llu sk_msg "
            "redirects, %llu fail-open events",
            (unsigned long long)st.redirected, (unsigned long long)st.accepted,
            (unsigned long long)st.no_orig, (unsigned long long)st.no_listener,
            (unsigned long long)st.msg_redirects, (unsigned long long)st.fail_open_events);
    fl_bpf_set_enabled(T.bpf, 0);
    T.draining = 1;
    uv_close((uv_handle_t *)&T.scan_timer, NULL);
    uv_close((uv_handle_t *)&T.hb_timer, NULL);
    while (T.nss)
        ns_close(T.nss, NULL);
    /* The links go with the object: every hook detaches here. */
    fl_bpf_close(T.bpf);
    T.bpf = NULL;
    while (T.pods) {
        struct tp_pod *pd = T.pods;
        T.pods = pd->next;
        free(pd->path);
        free(pd);
    }
    free(T.entries);
    T.entries = NULL;
    T.n_entries = T.cap_entries = 0;
    leave_own_cgroup();
    fl_info("transparent mode: hooks detached, daemon cgroup removed");
    free(T.noaccel);
    T.noaccel = NULL;
    fl_policy_unref(T.policy);
    T.policy = NULL;
    T.started = 0;
    /* The host netns fd stays: connections still closing may dial no more,
     * but fl_tp_socket_in must never find it reused. */
    uv_mutex_destroy(&T.wd_mu);
    uv_cond_destroy(&T.wd_cond);
}
