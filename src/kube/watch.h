/* watch: the Kubernetes API client's list-then-watch loop, on a thread of its
 * own (docs/architecture.md, "Kubernetes").
 *
 * One thread runs every watch on a libcurl multi handle: the Pods on this
 * node (fieldSelector spec.nodeName), and for each Service a target names,
 * the cluster halt ConfigMap in the daemon's namespace (fieldSelector
 * metadata.name), that Service (fieldSelector metadata.name) and its EndpointSlices
 * (labelSelector kubernetes.io/service-name). Each is listed in pages
 * (limit, continue), then watched from the list's resourceVersion with
 * bookmarks and a server-side timeout, and watched again from the last
 * resourceVersion seen when the watch ends. 410 Gone (as a status or an
 * ERROR event) re-lists and drops what vanished. Connection errors, 429 and
 * 5xx back off exponentially with jitter (Retry-After when given). A watch
 * silent for longer than its timeout is dropped and restarted.
 *
 * After each batch of changes the thread builds a new immutable view
 * (view.h) and hands it to the loop (uv_async), which gets it through
 * on_view: no call on the loop waits for the network.
 */
#ifndef FL_KUBE_WATCH_H
#define FL_KUBE_WATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "compiler.h"
#include "config.h"
#include "view.h"

struct fl_kube_watch;

struct fl_kube_watch_opts {
    const struct fl_kube_config *cfg; /* copied */
    const char *node;                 /* this node's name */
    const char *halt_namespace;       /* watch the ConfigMap FL_KUBE_HALT_NAME there; NULL: no */
    int faultpolicies;                /* watch the FaultPolicies of every namespace */
    unsigned watch_timeout_s;         /* the watches' timeoutSeconds; 0: 300 */
    uv_loop_t *loop;
    /* On the loop's thread: the newest view (a reference the callee owns). */
    void (*on_view)(struct fl_kube_view *v, void *arg);
    void *arg;
};

struct fl_kube_watch_status {
    char server[256];
    char source[512];
    int pods_synced;     /* the node's Pods have been listed */
    int failing;         /* the last request failed */
    char error[512];     /* what failed, and what to do ("" when fine) */
    uint64_t events;     /* watch events received */
    uint64_t relists;    /* lists after 410 Gone */
    uint64_t errors;     /* failed requests */
};

/* Starts the thread. Returns 0 or a negative errno with err set. */
int fl_kube_watch_start(struct fl_kube_watch **out, const struct fl_kube_watch_opts *o, char *err,
                        size_t errlen) FL_WUR;

/* The Services to watch from now on ("namespace/name" strings; n may be 0).
 * Loop thread. */
void fl_kube_watch_services(struct fl_kube_watch *w, const char *const *keys, size_t n);

/* Fills *st. Any thread. */
void fl_kube_watch_status(struct fl_kube_watch *w, struct fl_kube_watch_status *st);

/* Stops and joins the thread, closes the async handle (the loop must run once
 * more to finish closing it) and frees w after that. Accepts NULL. */
void fl_kube_watch_stop(struct fl_kube_watch *w);

#endif
