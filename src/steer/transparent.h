/* transparent: the daemon side of transparent mode (docs/architecture.md,
 * "The steering path").
 *
 * Turns a policy's `targets:` into kernel state and proxy listeners: moves the
 * daemon into a cgroup of its own, loads the BPF programs (bpf.h), has
 * pods.c find the pods (cgroup v2 directories, glob patterns allowed) every
 * second, attach the hooks to each pod cgroup and program (pod, destination,
 * port) -> target, opens one listener pair (127.0.0.1 and ::1 at the proxy port) inside
 * each distinct pod netns, and hands accepted connections to the proxy engine
 * with the original destination as the upstream and the target name as the
 * scope. A watchdog thread turns redirection off while the event loop stalls.
 *
 * Ingress targets attach an sk_lookup program to each selected pod's netns
 * that hands the connections arriving at the target's port to the same
 * listeners; the proxy connects to the address the caller dialled from inside
 * the netns, so the server sees the pod's own address as the client. With
 * existing: reset, the connections a target finds established when it starts
 * selecting are destroyed (bpf_sock_destroy), so they come back through the
 * proxy.
 *
 * sk_msg acceleration of the app<->proxy hop is on by default (--no-sockmap
 * turns it off). Caveat: with a SOCKHASH ingress redirect, a blocking read()
 * in an application that writes the same socket from another thread can
 * return EAGAIN spuriously (kernel sockmap behaviour); apps that treat that
 * as fatal should run with --no-sockmap. Targets with a delay rule are never
 * accelerated: a held request stops the proxy reading, and an ingress
 * redirect has no TCP window to stop the app.
 *
 * All fl_transparent_ calls except fl_transparent_stats run on the main loop's thread.
 * Transparent connections are accepted and resolved on worker 0, which owns
 * the netns listeners and the maps, then served by the workers in turn
 * (fl_workers_handoff). Each handoff carries fl_netns_socket_here, which the
 * serving worker calls to open the upstream socket inside the pod's netns.
 */
#ifndef FL_TRANSPARENT_H
#define FL_TRANSPARENT_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "view.h"

struct fl_worker;

#define FL_TRANSPARENT_RESCAN_MS 1000   /* pods are looked for this often */
#define FL_TRANSPARENT_HEARTBEAT_MS 100 /* the loop proves it turns this often */
#define FL_TRANSPARENT_STALL_MS 1000    /* heartbeat older than this: fail open */

/* existing: reset destroyed n established connections of pod (its name, or
 * its cgroup path) for target. Main loop's thread. */
typedef void (*fl_transparent_reset_cb)(const char *target, const char *pod, unsigned n,
                                        void *arg);

struct fl_transparent_opts {
    int no_sockmap; /* 1: never accelerate app<->proxy bytes with sk_msg */
    int verbose;    /* forward libbpf debug output */
    fl_transparent_reset_cb on_reset; /* NULL: none */
    void *on_reset_arg;
};

struct fl_transparent_stats {
    int active;                /* transparent mode is running */
    int enabled;               /* redirection on (off while failed open or draining) */
    int sockmap;               /* sk_msg acceleration on for new connections */
    uint64_t redirected;       /* connect()s the kernel rewrote to a proxy listener */
    uint64_t accepted;         /* of those, taken by the proxy with an original destination */
    uint64_t no_orig;          /* connections on a proxy port with no record: closed */
    uint64_t no_listener;      /* matched a target, no listener in the netns: went direct */
    uint64_t msg_redirects;    /* sk_msg messages moved between app and proxy */
    uint64_t msg_fallbacks;    /* connections that fell back from sk_msg to TCP */
    uint64_t fail_open_events; /* times the watchdog turned redirection off */
    unsigned pods;             /* pod cgroups enrolled */
    unsigned netns;            /* distinct pod netns with a listener */
    uint64_t ingress;          /* connections sk_lookup handed to a proxy listener */
    uint64_t ingress_accepted; /* of those, taken by the proxy */
    uint64_t ingress_no_listener; /* matched an ingress target, no listener took it: direct */
    unsigned ingress_netns;    /* netns with the sk_lookup program attached */
    uint64_t existing_reset;   /* established connections destroyed (existing: reset) */
    int sock_destroy;          /* existing: reset is available on this kernel */
};

/* Checks that this host can run transparent mode (root, BTF, cgroup v2, the
 * BPF features; fl_bpf_probe). Returns 0, or -ENOTSUP with one sentence in
 * err saying what is missing and what to do (the daemon exits 2). */
int fl_transparent_probe(char *err, size_t errlen) FL_WUR;

/* Starts transparent mode for p (which has targets) on worker w's loop: probes
 * the kernel, creates and joins <cgroup2>/faultline-daemon-PID, loads and
 * attaches the BPF programs, enrolls the pods found now, opens their
 * listeners, starts the rescan timer, the heartbeat and the watchdog. On
 * failure err holds one sentence saying what is missing and what to do,
 * nothing is left behind, and *requirement is 1 when the host lacks something
 * transparent mode needs (the daemon exits 2), else 0. Returns 0 or a negative
 * errno. */
int fl_transparent_start(struct fl_worker *w, const struct fl_policy *p, const struct fl_transparent_opts *o,
                char *err, size_t errlen, int *requirement) FL_WUR;

/* Makes p the policy transparent mode follows (after a reload or an admin
 * apply): target names, destinations and ports are reprogrammed and the pods
 * are looked for again at once. Refused (nothing changes) when p has targets
 * but transparent mode was not started, or when p changes the proxy port;
 * err says so. A p without targets releases every pod. Returns 0 or a
 * negative errno. */
int fl_transparent_apply(const struct fl_policy *p, char *err, size_t errlen) FL_WUR;

/* What fl_transparent_apply(p) would refuse, without changing anything (for a dry
 * run or a check before committing a new policy). Meant for a daemon that is
 * running: before fl_transparent_start() every policy with targets is refused. Returns
 * 0 or a negative errno with err set. */
int fl_transparent_check(const struct fl_policy *p, char *err, size_t errlen) FL_WUR;

/* Refuses (-ENOTSUP, err as "file:line:col: ...") a policy with a target
 * saying existing: reset when this host cannot destroy sockets: the kernel
 * lacks the bpf_sock_destroy kfunc, or (with b, a loaded BPF object) its
 * iterator did not load. b may be NULL (faultline validate). */
struct fl_bpf;
int fl_transparent_check_reset(const struct fl_policy *p, struct fl_bpf *b, char *err,
                               size_t errlen) FL_WUR;

/* The Kubernetes view from now on (label selectors, Services): the pods are
 * looked for again at once. No-op when not started. */
void fl_transparent_set_view(struct fl_kube_view *v);

/* A pod a label selector picked, and its state: "steered", "waiting for
 * cgroup", "waiting for netns", "port busy" (the proxy port is taken in its
 * netns), "failed". */
struct fl_transparent_pod {
    const char *pod, *cgroup, *target, *state; /* valid until the loop turns */
};

/* 1 when a target of part (a policy of the set) lost an overlap to an
 * older policy on some pod; who names that policy. Main loop's thread. */
int fl_transparent_conflict(const struct fl_policy *part, char *who, size_t len);

/* Fills up to cap; returns how many there are. Main loop's thread. */
size_t fl_transparent_pods(struct fl_transparent_pod *out, size_t cap);

/* Graceful shutdown begins: stop redirecting new connections and close the
 * listeners; connections in flight go on. No-op when not started. */
void fl_transparent_drain(void);

/* Detaches every hook, closes listeners, logs the counters, leaves and removes
 * the daemon's cgroup. Handles are closed; the caller runs the loop once more
 * to finish their close callbacks. No-op when not started. */
void fl_transparent_stop(void);

/* Fills *st (zeros when not started). Any thread. */
void fl_transparent_stats(struct fl_transparent_stats *st);


#endif
