/* pods: finding the pods a policy's targets select, and keeping the kernel's
 * view of them in step (docs/architecture.md, "The steering path").
 *
 * A scan expands every target's cgroup patterns (globs over cgroupfs) and
 * finds each pod's netns on libuv's thread pool, opening the proxy's
 * listeners inside each netns seen for the first time. Reconciling, on the
 * loop's thread, attaches the BPF hooks to newly selected pod cgroups,
 * programs the (pod, destination, port) -> target entries, and releases the
 * pods and entries no longer selected. Ingress targets attach no cgroup
 * hooks: their selections go to the owner (ops.ingress), which programs the
 * pods' netns. The netns records (listeners and what
 * is accepted on them) belong to the caller, which the scan consults and
 * tells through struct fl_pods_ops. One scan is in flight at a time.
 *
 * Every call runs on the loop's thread except fl_pods_count (any thread).
 */
#ifndef FL_PODS_H
#define FL_PODS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bpf.h"
#include "compiler.h"
#include "policy.h"
#include "view.h"

struct fl_pods;

/* A netns the scan saw for the first time (or is trying again), with the
 * proxy's listeners opened inside it when err is 0. */
struct fl_pods_netns {
    uint64_t ino;    /* nsfs inode: its identity while fd is held */
    int fd;          /* the netns (owned by whoever takes it over) */
    uint64_t cookie; /* as bpf_get_netns_cookie sees it */
    int lfds[2];     /* listeners on 127.0.0.1 and [::1], or -1 */
    int err;         /* the listeners could not be opened: negative errno */
};

/* An ingress target's selection of one pod: connections arriving in its
 * netns at port from callers in from (family 0: every caller). */
struct fl_pods_ingress {
    uint64_t ns_ino;
    uint64_t cgid;
    uint16_t port;
    struct fl_cidr from;
    uint32_t target_id; /* index + 1 in the policy */
    int reset;          /* existing: reset */
    const char *pod;    /* "namespace/name" or the cgroup path (valid during the call) */
};

/* An egress target with existing: reset began selecting a pod (or its
 * destinations changed): its established connections to dests are to go. */
struct fl_pods_reset {
    uint64_t cgid;
    uint64_t ns_ino;
    uint32_t target_id;
    const char *pod;
    const struct fl_kube_dest *dests;
    size_t n_dests;
};

struct fl_pods_ops {
    /* Fills inos (room for cap) with the netns that already have a record and
     * need no listeners opened; returns how many. */
    size_t (*known_netns)(void *arg, uint64_t *inos, size_t cap);
    /* A netns counted by known_netns() on no scan before, or one left out of
     * it to be tried again: takes over n's descriptors. */
    void (*netns_found)(void *arg, struct fl_pods_netns *n);
    /* After a reconcile: the netns of the enrolled pods (one entry per pod,
     * repeats allowed); a record not among them has no selected pod left. */
    void (*netns_in_use)(void *arg, const uint64_t *inos, size_t n);
    /* After a reconcile: every ingress selection (the whole set). */
    void (*ingress)(void *arg, const struct fl_pods_ingress *v, size_t n);
    /* During a reconcile, after the pod's redirect entries are in place. */
    void (*egress_reset)(void *arg, const struct fl_pods_reset *r);
    void *arg;
};

/* A pod set on loop, programming bpf, skipping daemon_cgroup (and every cgroup
 * below it), opening listeners on port. Returns 0 or -ENOMEM. */
int fl_pods_new(struct fl_pods **out, uv_loop_t *loop, struct fl_bpf *bpf,
                const char *daemon_cgroup, uint16_t port, const struct fl_pods_ops *ops) FL_WUR;

/* Frees the set without touching the kernel: the hooks and entries go with
 * the BPF object (fl_bpf_close). A scan in flight is abandoned and freed when
 * it completes. Accepts NULL. */
void fl_pods_free(struct fl_pods *pods);

/* The policy whose targets select from now on (takes a reference). */
void fl_pods_set_policy(struct fl_pods *pods, const struct fl_policy *p);

/* Scans and reconciles now, blocking the calling thread (startup only, so the
 * pods found are enrolled before the daemon says it is ready). */
void fl_pods_scan_sync(struct fl_pods *pods);

/* Starts a scan on the thread pool, or asks for another once the one in
 * flight is done. Reconciles when it completes. */
void fl_pods_scan(struct fl_pods *pods);

/* Graceful shutdown: no reconcile from now on; a scan in flight is
 * discarded when it completes. Pods stay enrolled until fl_pods_free. */
void fl_pods_pause(struct fl_pods *pods);

/* Pod cgroups enrolled. Any thread. */
unsigned fl_pods_count(const struct fl_pods *pods);

/* The Kubernetes view label selectors and Services are resolved against from
 * now on (takes a reference; NULL: none). Also starts watching the kubelet's
 * pod cgroup parents (inotify), so a new pod's cgroup is seen at once.
 * Returns 1 when the view changes what the targets select (the caller asks
 * for a scan), 0 when it does not (a pod no selector picks changed). */
int fl_pods_set_view(struct fl_pods *pods, struct fl_kube_view *v);

enum fl_pod_state {
    FL_POD_STEERED,        /* hooks attached, netns known */
    FL_POD_WAITING_CGROUP, /* the API has it; its cgroup is not there yet */
    FL_POD_WAITING_NETNS,  /* its cgroup has no process yet */
    FL_POD_FAILED,         /* the hooks could not be attached (see the log) */
};

/* A pod a label selector picked, as of the last reconcile. */
struct fl_pods_pod {
    char *pod;          /* "namespace/name" */
    char *cgroup;       /* its pod-level cgroup, or NULL while waiting for it */
    char *target;       /* the target's name (its own copy: the listing outlives a
                         * policy replaced before the next reconcile) */
    enum fl_pod_state state;
    uint64_t ns_ino;
};

/* The pods label selectors picked (loop thread; valid until the next
 * reconcile). */
const struct fl_pods_pod *fl_pods_selected(const struct fl_pods *pods, size_t *n);

/* 1 when a target of part lost to an older policy's overlapping target on
 * some pod at the last reconcile (that policy is not steered there); who
 * names the older policy. Loop thread. */
int fl_pods_conflict(const struct fl_pods *pods, const struct fl_policy *part, char *who,
                     size_t len);

/* "namespace/name" of the enrolled Kubernetes pod in the netns with inode
 * ino, or NULL. Loop thread. */
const char *fl_pods_name_of_netns(const struct fl_pods *pods, uint64_t ino);

#endif
