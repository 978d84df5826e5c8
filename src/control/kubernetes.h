/* kubernetes: the daemon's side of `faultline run --kubernetes`: credentials
 * at startup, the watch thread (kube/watch.h), each new view handed to
 * transparent mode, the Services the policy's targets name kept watched, and
 * what /v1/status says of it all. Main loop's thread.
 */
#ifndef FL_KUBERNETES_H
#define FL_KUBERNETES_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "compiler.h"
#include "policy.h"

struct fl_kubernetes_opts {
    const char *kubeconfig; /* NULL: in-cluster */
    const char *node;       /* NULL: $NODE_NAME */
    unsigned watch_timeout_s;
};

/* Loads the credentials and the node name; nothing runs yet. Returns 0, or a
 * negative errno with err saying what is missing and what to do (exit 2). */
int fl_kubernetes_prepare(const struct fl_kubernetes_opts *o, char *err, size_t errlen) FL_WUR;

/* Starts watching (after fl_kubernetes_prepare). Returns 0 or a negative
 * errno with err set. */
int fl_kubernetes_start(uv_loop_t *loop, char *err, size_t errlen) FL_WUR;

/* 1 when the daemon runs with --kubernetes. */
int fl_kubernetes_enabled(void);

/* The policy in force changed: watch the Services its targets name. */
void fl_kubernetes_policy(const struct fl_policy *p);

/* Refuses a policy that needs Kubernetes (label selectors, Services) when
 * the daemon runs without it. Returns 0 or -ENOTSUP with err set. */
int fl_kubernetes_check(const struct fl_policy *p, char *err, size_t errlen) FL_WUR;

/* {"node", "server", "credentials", "pods_synced", "error", "events",
 * "relists", "errors"} and the selected pods, for /v1/status; NULL when off. */
json_t *fl_kubernetes_status_json(void);

void fl_kubernetes_stop(void);

#endif
