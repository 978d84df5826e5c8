/* pods: see pods.h.
 *
 * The scan reads the policy snapshot (immutable) and its own struct only, so
 * it can run on the thread pool; everything that touches the BPF maps and
 * links runs on the loop's thread, in reconcile().
 */
#include "pods.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "log.h"
#include "netns.h"

struct pod {
    struct pod *next;
    char *path;
    char *name; /* "namespace/name" of a Kubernetes pod, or NULL */
    uint64_t cgid;
    uint64_t ns_ino; /* 0: no process in it yet, so no netns known */
    int attached;    /* the egress hooks are on its cgroup */
    int failed;      /* attaching them failed */
    int seen;
};

#define MAX_DESTS 256 /* addresses and ports one Service target resolves to */
#define MAX_PARENTS 12 /* the kubelet's QoS parent directories, all layouts */

/* One (pod, destination, port) -> target record in the kernel's policy map. */
#define MAX_CONFLICTS 64

struct entry {
    uint64_t cgid;
    struct fl_cidr dst;
    uint16_t port;
    uint32_t id;
    int seen;
    const struct fl_policy *part; /* the policy of the target that owns it (this reconcile) */
};

/* A newer policy's target that overlaps an older one's on some pod. */
struct conflict {
    const struct fl_policy *newer; /* compared, never followed */
    char older[320];               /* who wins, by name: the policy may go first */
};

/* ---- scan: the part that runs on the thread pool ---- */

struct scan_hit {
    size_t target;
    char *path;
    char *pod; /* "namespace/name" (selector targets), or NULL */
    uint64_t cgid;
    uint64_t ns_ino;
};

/* A pod a selector picked whose cgroup is not there (yet). */
struct scan_wait {
    size_t target;
    char *pod;
};

struct scan {
    uv_work_t req;
    struct fl_pods *pods; /* NULL once the set was freed: discard */
    struct fl_policy *p;  /* reference */
    struct fl_kube_view *view; /* reference, or NULL */
    char mount[PATH_MAX];      /* the cgroup2 mount, for the kubelet's layouts */
    char daemon_cg[PATH_MAX];
    uint16_t port;
    uint64_t *known; /* inos of netns already handled */
    size_t n_known;
    struct scan_hit *hits;
    size_t n_hits, cap_hits;
    struct fl_pods_netns *ns;
    size_t n_ns, cap_ns;
    struct scan_wait *waits;
    size_t n_waits;
};

struct fl_pods {
    uv_loop_t *loop;
    struct fl_bpf *bpf;
    struct fl_pods_ops ops;
    char daemon_cg[PATH_MAX];
    uint16_t port;
    struct fl_policy *policy; /* reference */
    struct fl_kube_view *view; /* reference, or NULL */
    char mount[PATH_MAX];
    uv_fs_event_t parents[MAX_PARENTS]; /* inotify on the kubelet's pod parents */
    char parent_path[MAX_PARENTS][PATH_MAX];
    size_t n_parents;
    struct fl_pods_pod *listed; /* the selected pods, for status */
    size_t n_listed;
    struct pod *list;
    struct entry *entries;
    size_t n_entries, cap_entries;
    struct conflict conflicts[MAX_CONFLICTS];
    size_t n_conflicts;
    size_t closing; /* handles still closing */
    uv_timer_t quick; /* a pod cgroup without a process yet: look again soon */
    unsigned quick_tries;
    uint64_t digest; /* selection_digest of the view last set */
    int have_digest;
    struct scan *inflight;
    int rescan;
    int paused;
    atomic_uint n_pods;
};

static int scan_push_hit(struct scan *s, size_t target, const char *path, const char *pod,
                         uint64_t cgid, uint64_t ino)
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
    h->pod = pod ? strdup(pod) : NULL;
    if (!h->path || (pod && !h->pod)) {
        free(h->path);
        free(h->pod);
        return -ENOMEM;
    }
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
        struct fl_pods_netns *n = realloc(s->ns, cap * sizeof(*n));
        if (!n) {
            close(fd);
            return 0;
        }
        s->ns = n;
        s->cap_ns = cap;
    }
    struct fl_pods_netns *sn = &s->ns[s->n_ns++];
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

/* One pod cgroup a target selects: looked up (once per scan) and recorded. */
static int scan_path(struct scan *s, size_t t, const char *path, const char *pod)
{
    uint64_t cgid = 0, ino = 0;
    size_t j;
    struct stat st;

    if (is_daemon_cgroup(s, path) || stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return 0;
    /* Another target may have looked this pod up already. */
    for (j = 0; j < s->n_hits; j++)
        if (strcmp(s->hits[j].path, path) == 0)
            break;
    if (j < s->n_hits) {
        if (s->hits[j].target == t)
            return 0;
        cgid = s->hits[j].cgid;
        ino = s->hits[j].ns_ino;
    } else {
        if (fl_cgroup_id(path, &cgid) < 0)
            return 0;
        ino = scan_netns(s, path);
    }
    return scan_push_hit(s, t, path, pod, cgid, ino);
}

static enum fl_cgroup_qos cg_qos(enum fl_kube_qos q)
{
    switch (q) {
    case FL_QOS_GUARANTEED: return FL_CGQ_GUARANTEED;
    case FL_QOS_BURSTABLE: return FL_CGQ_BURSTABLE;
    case FL_QOS_BESTEFFORT: return FL_CGQ_BESTEFFORT;
    default: return FL_CGQ_ANY;
    }
}

/* The pods of this node a label selector picks, at their pod-level cgroup. */
static int scan_selector(struct scan *s, size_t t, const struct fl_selector *sel)
{
    char path[PATH_MAX], name[600];
    const struct fl_kube_view *v = s->view;
    for (size_t i = 0; v && i < v->n_pods; i++) {
        const struct fl_kube_pod *pd = &v->pods[i];
        if (!pd->active || strcmp(pd->ns, sel->ns) != 0 ||
            !fl_selector_matches(sel, pd->labels, pd->n_labels))
            continue;
        snprintf(name, sizeof(name), "%s/%s", pd->ns, pd->name);
        if (fl_cgroup_pod_dir(s->mount, pd->uid, cg_qos(pd->qos), path, sizeof(path)) < 0 &&
            fl_cgroup_pod_dir(s->mount, pd->uid, FL_CGQ_ANY, path, sizeof(path)) < 0) {
            struct scan_wait *wt = realloc(s->waits, (s->n_waits + 1) * sizeof(*wt));
            if (!wt)
                return -ENOMEM;
            s->waits = wt;
            wt[s->n_waits].target = t;
            if (!(wt[s->n_waits].pod = strdup(name)))
                return -ENOMEM;
            s->n_waits++;
            continue;
        }
        if (scan_path(s, t, path, name) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* Thread pool: glob every target's pod patterns; pick the pods of every
 * label selector. */
static void scan_work(uv_work_t *req)
{
    struct scan *s = req->data;
    const struct fl_policy *p = s->p;

    for (size_t t = 0; p && t < p->n_targets; t++) {
        const struct fl_target_spec *ts = &p->targets[t];
        if (ts->selector && scan_selector(s, t, ts->selector) < 0)
            return;
        for (size_t k = 0; k < ts->n_cgroups; k++) {
            glob_t g;
            int r = glob(ts->cgroups[k], GLOB_ONLYDIR, NULL, &g);
            if (r != 0) {
                if (r != GLOB_NOMATCH)
                    fl_debug("target '%s': cannot expand %s", ts->name, ts->cgroups[k]);
                globfree(&g);
                continue;
            }
            for (size_t i = 0; i < g.gl_pathc; i++)
                if (scan_path(s, t, g.gl_pathv[i], NULL) < 0)
                    break;
            globfree(&g);
        }
    }
}

static void close_netns(struct fl_pods_netns *n)
{
    for (int k = 0; k < 2; k++)
        if (n->lfds[k] >= 0)
            close(n->lfds[k]);
    close(n->fd);
}

/* Frees s; with close_fds, the descriptors no one took over too. */
static void scan_free(struct scan *s, int close_fds)
{
    for (size_t i = 0; i < s->n_hits; i++) {
        free(s->hits[i].path);
        free(s->hits[i].pod);
    }
    free(s->hits);
    for (size_t i = 0; i < s->n_waits; i++)
        free(s->waits[i].pod);
    free(s->waits);
    fl_kube_view_unref(s->view);
    if (close_fds)
        for (size_t i = 0; i < s->n_ns; i++)
            close_netns(&s->ns[i]);
    free(s->ns);
    free(s->known);
    fl_policy_unref(s->p);
    free(s);
}

#define KNOWN_MAX 4096 /* netns records one scan skips; beyond, listeners are re-tried */

static struct scan *scan_new(struct fl_pods *pods)
{
    struct scan *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->req.data = s;
    s->pods = pods;
    s->p = pods->policy ? fl_policy_ref(pods->policy) : NULL;
    s->view = fl_kube_view_ref(pods->view);
    snprintf(s->mount, sizeof(s->mount), "%s", pods->mount);
    s->port = pods->port;
    snprintf(s->daemon_cg, sizeof(s->daemon_cg), "%s", pods->daemon_cg);
    s->known = calloc(KNOWN_MAX, sizeof(*s->known));
    if (!s->known) {
        scan_free(s, 0);
        return NULL;
    }
    s->n_known = pods->ops.known_netns(pods->ops.arg, s->known, KNOWN_MAX);
    return s;
}

/* ---- reconcile: the part on the loop thread ---- */

static struct pod *pod_find(struct fl_pods *pods, const char *path)
{
    for (struct pod *pd = pods->list; pd; pd = pd->next)
        if (strcmp(pd->path, path) == 0)
            return pd;
    return NULL;
}

static void pod_release(struct fl_pods *pods, struct pod *pd, const char *why)
{
    struct pod **pp;

    for (pp = &pods->list; *pp; pp = &(*pp)->next)
        if (*pp == pd) {
            *pp = pd->next;
            break;
        }
    if (fl_bpf_detach_cgroup(pods->bpf, pd->path) == 0)
        fl_info("released pod %s (%s): hooks detached", pd->path, why);
    else
        fl_info("released pod %s (%s)", pd->path, why);
    atomic_fetch_sub(&pods->n_pods, 1);
    free(pd->path);
    free(pd->name);
    free(pd);
}

static int entry_same(const struct entry *e, uint64_t cgid, const struct fl_kube_dest *d)
{
    return e->cgid == cgid && e->port == d->port && e->dst.family == d->addr.family &&
           e->dst.prefix == d->addr.prefix && memcmp(e->dst.addr, d->addr.addr, 16) == 0;
}

static void entry_remove(struct fl_pods *pods, size_t i)
{
    struct entry *e = &pods->entries[i];

    if (fl_bpf_remove_target(pods->bpf, e->cgid, e->dst.family, e->dst.addr, e->dst.prefix,
                             e->port) < 0)
        fl_debug("removing target entry for cgroup %llu: already gone",
                 (unsigned long long)e->cgid);
    pods->entries[i] = pods->entries[--pods->n_entries];
}

/* Do e and d select some of the same connections (ports, addresses)? */
static int entry_overlaps(const struct entry *e, const struct fl_kube_dest *d)
{
    if (e->port && d->port && e->port != d->port)
        return 0;
    if (e->dst.family != d->addr.family)
        return 0;
    int bits = e->dst.prefix < d->addr.prefix ? e->dst.prefix : d->addr.prefix;
    for (int b = 0; b < bits; b++) {
        int m = 0x80 >> (b % 8);
        if ((e->dst.addr[b / 8] & m) != (d->addr.addr[b / 8] & m))
            return 0;
    }
    return 1;
}

static void conflict_note(struct fl_pods *pods, const struct fl_policy *newer,
                          const struct fl_policy *older)
{
    char who[320];
    snprintf(who, sizeof(who), "%s %s", older->ns ? "FaultPolicy" : "the file policy",
             older->id ? older->id : older->name);
    for (size_t i = 0; i < pods->n_conflicts; i++)
        if (pods->conflicts[i].newer == newer && strcmp(pods->conflicts[i].older, who) == 0)
            return;
    if (pods->n_conflicts < MAX_CONFLICTS) {
        struct conflict *c = &pods->conflicts[pods->n_conflicts++];
        c->newer = newer;
        snprintf(c->older, sizeof(c->older), "%s", who);
    }
}

/* Does an ingress selection of an older policy already take the
 * connections h's target would (same netns and port, overlapping callers)?
 * Then the older wins and the conflict is noted. */
static int ingress_lost(struct fl_pods *pods, const struct fl_policy *p,
                        const struct fl_pods_ingress *ing, size_t n, const struct scan_hit *h,
                        const struct fl_target_spec *ts)
{
    for (size_t i = 0; i < n; i++) {
        const struct fl_target_spec *o = &p->targets[ing[i].target_id - 1];
        if (ing[i].ns_ino != h->ns_ino || ing[i].port != ts->port || o->part == ts->part)
            continue;
        const struct fl_cidr *a = &ing[i].from, *b = &ts->from;
        int overlap = !a->family || !b->family;
        if (!overlap && a->family == b->family) {
            struct entry e = {.dst = *a};
            struct fl_kube_dest d = {.addr = *b};
            overlap = entry_overlaps(&e, &d);
        }
        if (overlap) {
            conflict_note(pods, ts->part, o->part);
            return 1;
        }
    }
    return 0;
}

/* Returns 1 when the entry is new or now belongs to target id, else 0. */
static int entry_program(struct fl_pods *pods, uint64_t cgid, const struct fl_target_spec *ts,
                         const struct fl_kube_dest *d, uint32_t id, const char *path)
{
    struct entry *e = NULL;
    int r;

    for (size_t i = 0; i < pods->n_entries; i++) {
        struct entry *o = &pods->entries[i];
        if (o->seen && o->cgid == cgid && o->part != ts->part && entry_overlaps(o, d)) {
            /* An older policy steers this already: it wins. */
            conflict_note(pods, ts->part, o->part);
            return 0;
        }
    }
    for (size_t i = 0; i < pods->n_entries; i++)
        if (entry_same(&pods->entries[i], cgid, d)) {
            e = &pods->entries[i];
            break;
        }
    if (e && e->seen)
        return 0; /* an earlier target of the policy owns the same selection */
    if (e && e->id == id) {
        e->seen = 1;
        e->part = ts->part;
        return 0;
    }
    if (!e && pods->n_entries == pods->cap_entries) {
        size_t cap = pods->cap_entries ? pods->cap_entries * 2 : 16;
        struct entry *n = realloc(pods->entries, cap * sizeof(*n));
        if (!n)
            return 0;
        pods->entries = n;
        pods->cap_entries = cap;
    }
    r = fl_bpf_add_target(pods->bpf, cgid, d->addr.family, d->addr.addr, d->addr.prefix, d->port,
                          id);
    if (r < 0) {
        fl_warn("target '%s': cannot select pod %s: %s", ts->name, path, strerror(-r));
        return 0;
    }
    if (!e) {
        e = &pods->entries[pods->n_entries++];
        e->cgid = cgid;
        e->dst = d->addr;
        e->port = d->port;
    }
    e->id = id;
    e->seen = 1;
    e->part = ts->part;
    return 1;
}

/* Tells the owner of the netns records which netns the enrolled pods are in. */
static void report_netns(struct fl_pods *pods)
{
    size_t n = 0, i = 0;
    for (struct pod *pd = pods->list; pd; pd = pd->next)
        n++;
    uint64_t *inos = calloc(n + 1, sizeof(*inos));
    if (!inos)
        return; /* keep every record: a listener too many is harmless */
    for (struct pod *pd = pods->list; pd; pd = pd->next)
        if (pd->ns_ino)
            inos[i++] = pd->ns_ino;
    pods->ops.netns_in_use(pods->ops.arg, inos, i);
    free(inos);
}

/* Where a target's pods are steered for: its CIDR and port, or the
 * addresses and ports of its Service in the view. Returns how many (up to
 * MAX_DESTS). */
static size_t target_dests(const struct fl_target_spec *ts, const struct fl_kube_view *v,
                           struct fl_kube_dest *out)
{
    if (!ts->svc_name) {
        out[0] = (struct fl_kube_dest){ts->dst, ts->port};
        return 1;
    }
    const struct fl_kube_service *svc = fl_kube_view_service(v, ts->svc_ns, ts->svc_name);
    size_t n = fl_kube_service_dests(svc, ts->port, out, MAX_DESTS);
    return n > MAX_DESTS ? MAX_DESTS : n;
}

static void listed_free(struct fl_pods *pods)
{
    for (size_t i = 0; i < pods->n_listed; i++) {
        free(pods->listed[i].pod);
        free(pods->listed[i].cgroup);
        free(pods->listed[i].target);
    }
    free(pods->listed);
    pods->listed = NULL;
    pods->n_listed = 0;
}

/* The pods the selectors picked and what became of each, for status. */
static void list_selected(struct fl_pods *pods, struct scan *s)
{
    const struct fl_policy *p = s->p;
    size_t n = 0;
    listed_free(pods);
    pods->listed = calloc(s->n_hits + s->n_waits + 1, sizeof(*pods->listed));
    if (!pods->listed)
        return;
    for (size_t i = 0; i < s->n_waits; i++) {
        struct fl_pods_pod *l = &pods->listed[n++];
        l->pod = strdup(s->waits[i].pod);
        l->target = strdup(p->targets[s->waits[i].target].name);
        l->state = FL_POD_WAITING_CGROUP;
    }
    for (size_t i = 0; i < s->n_hits; i++) {
        struct scan_hit *h = &s->hits[i];
        struct pod *pd = pod_find(pods, h->path);
        if (!h->pod)
            continue;
        struct fl_pods_pod *l = &pods->listed[n++];
        l->pod = strdup(h->pod);
        l->cgroup = strdup(h->path);
        l->target = strdup(p->targets[h->target].name);
        l->state = !pd || pd->failed ? FL_POD_FAILED
                   : h->ns_ino      ? FL_POD_STEERED
                                    : FL_POD_WAITING_NETNS;
        l->ns_ino = h->ns_ino;
    }
    pods->n_listed = n;
}

static void quick_cb(uv_timer_t *t)
{
    fl_pods_scan(t->data);
}

#define QUICK_MS 100
#define QUICK_TRIES 10

/* The kubelet makes a pod's cgroup, then moves its first process in: a scan
 * woken by the cgroup's creation may find it empty. Look again every
 * QUICK_MS for a while, rather than at the next periodic scan. */
static void quick_retry(struct fl_pods *pods, const struct scan *s)
{
    int waiting = 0;
    for (size_t i = 0; i < s->n_hits && !waiting; i++)
        waiting = s->hits[i].ns_ino == 0;
    if (!waiting) {
        pods->quick_tries = 0;
        return;
    }
    if (pods->quick_tries++ < QUICK_TRIES && !uv_is_active((uv_handle_t *)&pods->quick))
        uv_timer_start(&pods->quick, quick_cb, QUICK_MS, 0);
}

static void reconcile(struct fl_pods *pods, struct scan *s)
{
    const struct fl_policy *p = s->p;
    struct pod *pd, *next;
    struct fl_kube_dest *dests = calloc(MAX_DESTS, sizeof(*dests));
    size_t cap_ing = s->n_hits, n_ing = 0;
    struct fl_pods_ingress *ing = calloc(cap_ing + 1, sizeof(*ing));

    if (!dests || !ing) {
        free(dests);
        free(ing);
        return;
    }

    for (size_t i = 0; i < s->n_ns; i++)
        pods->ops.netns_found(pods->ops.arg, &s->ns[i]);
    s->n_ns = 0; /* taken over */

    for (pd = pods->list; pd; pd = pd->next)
        pd->seen = 0;
    for (size_t i = 0; i < pods->n_entries; i++)
        pods->entries[i].seen = 0;
    pods->n_conflicts = 0;
    for (size_t i = 0; p && i < s->n_hits; i++) {
        struct scan_hit *h = &s->hits[i];
        const struct fl_target_spec *ts = &p->targets[h->target];

        pd = pod_find(pods, h->path);
        if (pd && pd->cgid != h->cgid) {
            pod_release(pods, pd, "its cgroup was re-created");
            pd = NULL;
        }
        if (!pd) {
            pd = calloc(1, sizeof(*pd));
            if (!pd || !(pd->path = strdup(h->path))) {
                free(pd);
                continue;
            }
            pd->cgid = h->cgid;
            pd->next = pods->list;
            pods->list = pd;
            atomic_fetch_add(&pods->n_pods, 1);
            fl_info("enrolled pod %s%s%s for target '%s'%s", h->pod ? h->pod : h->path,
                    h->pod ? " at " : "", h->pod ? h->path : "", ts->name,
                    h->ns_ino ? "" : " (no process yet; its netns is looked for every second)");
        }
        /* Egress needs the connect hooks on the pod's cgroup; ingress works
         * on its netns (ops.ingress). */
        if (!ts->ingress && !pd->attached) {
            int e = fl_bpf_attach_cgroup(pods->bpf, h->path);
            if (e < 0) {
                if (!pd->failed)
                    fl_warn("target '%s': cannot attach to pod cgroup %s: %s", ts->name, h->path,
                            strerror(-e));
                pd->failed = 1;
            } else {
                pd->attached = 1;
                pd->failed = 0;
            }
        }
        pd->seen = 1;
        pd->ns_ino = h->ns_ino;
        if (h->pod && (!pd->name || strcmp(pd->name, h->pod) != 0)) {
            free(pd->name);
            pd->name = strdup(h->pod);
        }
        if (ts->ingress) {
            if (ingress_lost(pods, p, ing, n_ing, h, ts))
                continue;
            if (h->ns_ino && n_ing < cap_ing) /* a netns to work on */
                ing[n_ing++] = (struct fl_pods_ingress){h->ns_ino, h->cgid, ts->port, ts->from,
                                                       (uint32_t)h->target + 1, ts->existing_reset,
                                                       h->pod ? h->pod : h->path};
            continue;
        }
        if (!pd->attached)
            continue;
        size_t nd = target_dests(ts, s->view, dests);
        int fresh = 0;
        for (size_t k = 0; k < nd; k++)
            fresh |= entry_program(pods, h->cgid, ts, &dests[k], (uint32_t)h->target + 1, h->path);
        if (fresh && ts->existing_reset && h->ns_ino && pods->ops.egress_reset) {
            struct fl_pods_reset r = {h->cgid, h->ns_ino, (uint32_t)h->target + 1,
                                      h->pod ? h->pod : h->path, dests, nd};
            pods->ops.egress_reset(pods->ops.arg, &r);
        }
    }
    free(dests);
    for (size_t i = 0; i < pods->n_entries;) {
        if (!pods->entries[i].seen)
            entry_remove(pods, i);
        else
            i++;
    }
    for (pd = pods->list; pd; pd = next) {
        next = pd->next;
        if (!pd->seen)
            pod_release(pods, pd, "no longer selected or gone");
    }
    report_netns(pods);
    if (pods->ops.ingress)
        pods->ops.ingress(pods->ops.arg, ing, n_ing);
    free(ing);
    if (p)
        list_selected(pods, s);
    quick_retry(pods, s);
}

static void scan_done(uv_work_t *req, int status)
{
    struct scan *s = req->data;
    struct fl_pods *pods = s->pods;

    if (!pods) { /* the set was freed meanwhile */
        scan_free(s, 1);
        return;
    }
    pods->inflight = NULL;
    if (status < 0 || pods->paused) {
        scan_free(s, 1);
        return;
    }
    reconcile(pods, s);
    scan_free(s, 1);
    if (pods->rescan)
        fl_pods_scan(pods);
}

/* ---- public ---- */

int fl_pods_new(struct fl_pods **out, uv_loop_t *loop, struct fl_bpf *bpf,
                const char *daemon_cgroup, uint16_t port, const struct fl_pods_ops *ops)
{
    struct fl_pods *pods = calloc(1, sizeof(*pods));
    if (!pods)
        return -ENOMEM;
    pods->loop = loop;
    pods->bpf = bpf;
    pods->ops = *ops;
    pods->port = port;
    snprintf(pods->daemon_cg, sizeof(pods->daemon_cg), "%s", daemon_cgroup ? daemon_cgroup : "");
    uv_timer_init(loop, &pods->quick);
    pods->quick.data = pods;
    *out = pods;
    return 0;
}

static void parent_closed(uv_handle_t *h)
{
    struct fl_pods *pods = h->data;
    if (--pods->closing == 0)
        free(pods);
}

void fl_pods_free(struct fl_pods *pods)
{
    if (!pods)
        return;
    if (pods->inflight)
        pods->inflight->pods = NULL;
    /* No detaching one by one: the links go with the BPF object. */
    while (pods->list) {
        struct pod *pd = pods->list;
        pods->list = pd->next;
        free(pd->path);
        free(pd->name);
        free(pd);
    }
    free(pods->entries);
    listed_free(pods);
    fl_policy_unref(pods->policy);
    fl_kube_view_unref(pods->view);
    /* The timer and the inotify handles close first; the set goes with the last. */
    pods->closing = pods->n_parents + 1;
    for (size_t i = 0; i < pods->n_parents; i++)
        uv_close((uv_handle_t *)&pods->parents[i], parent_closed);
    uv_close((uv_handle_t *)&pods->quick, parent_closed);
}

void fl_pods_set_policy(struct fl_pods *pods, const struct fl_policy *p)
{
    fl_policy_unref(pods->policy);
    pods->policy = fl_policy_ref((struct fl_policy *)p);
    pods->have_digest = 0; /* the next view is compared afresh */
}

void fl_pods_scan_sync(struct fl_pods *pods)
{
    struct scan *s = scan_new(pods);
    if (!s)
        return;
    scan_work(&s->req);
    reconcile(pods, s);
    scan_free(s, 1);
}

void fl_pods_scan(struct fl_pods *pods)
{
    struct scan *s;

    if (pods->paused)
        return;
    if (pods->inflight) {
        pods->rescan = 1;
        return;
    }
    pods->rescan = 0;
    s = scan_new(pods);
    if (!s)
        return;
    if (uv_queue_work(pods->loop, &s->req, scan_work, scan_done) < 0) {
        scan_free(s, 1);
        return;
    }
    pods->inflight = s;
}

void fl_pods_pause(struct fl_pods *pods)
{
    if (pods)
        pods->paused = 1;
}

unsigned fl_pods_count(const struct fl_pods *pods)
{
    return pods ? atomic_load(&((struct fl_pods *)pods)->n_pods) : 0;
}

/* A kubelet QoS parent changed (a pod cgroup came or went): look again now,
 * rather than at the next periodic scan. */
static void parent_event(uv_fs_event_t *h, const char *name, int events, int status)
{
    struct fl_pods *pods = h->data;
    (void)name;
    (void)events;
    if (status == 0 && !pods->paused)
        fl_pods_scan(pods);
}

/* Watches the kubelet's pod parent directories that exist and are not
 * watched yet (they appear with the first pod of their class). */
static void watch_parents(struct fl_pods *pods)
{
    static char dirs[MAX_PARENTS][4096];
    size_t n = fl_cgroup_pod_parents(pods->mount, dirs, MAX_PARENTS);
    for (size_t i = 0; i < n && pods->n_parents < MAX_PARENTS; i++) {
        size_t k;
        for (k = 0; k < pods->n_parents; k++)
            if (strcmp(pods->parent_path[k], dirs[i]) == 0)
                break;
        if (k < pods->n_parents)
            continue;
        uv_fs_event_t *h = &pods->parents[pods->n_parents];
        if (uv_fs_event_init(pods->loop, h) < 0)
            continue;
        h->data = pods;
        if (uv_fs_event_start(h, parent_event, dirs[i], 0) < 0) {
            uv_close((uv_handle_t *)h, NULL);
            continue;
        }
        snprintf(pods->parent_path[pods->n_parents], PATH_MAX, "%s", dirs[i]);
        pods->n_parents++;
        fl_debug("watching %s for pod cgroups", dirs[i]);
    }
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv(h, s, strlen(s) + 1);
}

/* What the policy's targets make of view v: the pods each selector picks
 * (identity, QoS) and the destinations of each Service. A view that leaves
 * it unchanged (a change to a pod no target selects, a bookmark) needs no
 * scan. */
static uint64_t selection_digest(const struct fl_policy *p, const struct fl_kube_view *v)
{
    uint64_t h = 14695981039346656037ull;
    struct fl_kube_dest d[64];
    for (size_t t = 0; p && t < p->n_targets; t++) {
        const struct fl_target_spec *ts = &p->targets[t];
        h = fnv(h, &t, sizeof(t));
        for (size_t i = 0; ts->selector && v && i < v->n_pods; i++) {
            const struct fl_kube_pod *pd = &v->pods[i];
            if (!pd->active || strcmp(pd->ns, ts->selector->ns) != 0 ||
                !fl_selector_matches(ts->selector, pd->labels, pd->n_labels))
                continue;
            h = fnv_str(fnv_str(fnv_str(h, pd->ns), pd->name), pd->uid);
            h = fnv(h, &pd->qos, sizeof(pd->qos));
        }
        if (ts->svc_name) {
            const struct fl_kube_service *svc = fl_kube_view_service(v, ts->svc_ns, ts->svc_name);
            size_t n = fl_kube_service_dests(svc, ts->port, d, 64);
            h = fnv(h, &n, sizeof(n));
            h = fnv(h, d, (n < 64 ? n : 64) * sizeof(d[0]));
        }
    }
    return h;
}

int fl_pods_set_view(struct fl_pods *pods, struct fl_kube_view *v)
{
    fl_kube_view_unref(pods->view);
    pods->view = fl_kube_view_ref(v);
    if (pods->mount[0] == 0 && fl_cgroup_mountpoint(pods->mount, sizeof(pods->mount)) < 0)
        pods->mount[0] = 0;
    watch_parents(pods);
    uint64_t h = selection_digest(pods->policy, v);
    int changed = !pods->have_digest || h != pods->digest;
    pods->digest = h;
    pods->have_digest = 1;
    return changed;
}

const struct fl_pods_pod *fl_pods_selected(const struct fl_pods *pods, size_t *n)
{
    *n = pods ? pods->n_listed : 0;
    return pods ? pods->listed : NULL;
}

const char *fl_pods_name_of_netns(const struct fl_pods *pods, uint64_t ino)
{
    for (const struct pod *pd = pods ? pods->list : NULL; pd; pd = pd->next)
        if (pd->ns_ino == ino && pd->name)
            return pd->name;
    return NULL;
}

int fl_pods_conflict(const struct fl_pods *pods, const struct fl_policy *part, char *who,
                     size_t len)
{
    for (size_t i = 0; pods && i < pods->n_conflicts; i++)
        if (pods->conflicts[i].newer == part) {
            snprintf(who, len, "%s", pods->conflicts[i].older);
            return 1;
        }
    return 0;
}
