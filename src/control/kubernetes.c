/* kubernetes: see kubernetes.h. */
#include "kubernetes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "faultpolicy.h"
#include "faultlog.h"
#include "log.h"
#include "runtime.h"
#include "transparent.h"
#include "watch.h"

static struct {
    int enabled;
    struct fl_kube_config cfg;
    char node[256];
    unsigned timeout_s;
    struct fl_kube_watch *watch;
    char ns[256]; /* the daemon's namespace: where the halt ConfigMap lives */
    /* The cluster halt as last known. */
    int halt_known, halted;
    char halt_reason[512];
    int halt_pending; /* held halted until the ConfigMap has been listed once */
} kube;

int fl_kubernetes_prepare(const struct fl_kubernetes_opts *o, char *err, size_t errlen)
{
    const char *node = o->node && *o->node ? o->node : getenv("NODE_NAME");
    char why[768];
    int e;
    if (!node || !*node) {
        snprintf(err, errlen, "--kubernetes needs this node's name: give --node NAME or set "
                              "NODE_NAME (in a DaemonSet, from the downward API's "
                              "spec.nodeName)");
        return -EINVAL;
    }
    if (o->kubeconfig)
        e = fl_kube_config_kubeconfig(o->kubeconfig, &kube.cfg, why, sizeof(why));
    else
        e = fl_kube_config_in_cluster(&kube.cfg, why, sizeof(why));
    if (e < 0) {
        snprintf(err, errlen, "--kubernetes: no credentials for the API server: %s", why);
        return e;
    }
    snprintf(kube.node, sizeof(kube.node), "%s", node);
    const char *ns = getenv("POD_NAMESPACE");
    snprintf(kube.ns, sizeof(kube.ns), "%s", ns && *ns ? ns : "faultline-system");
    snprintf(fl_faultlog_node, sizeof(fl_faultlog_node), "%s", node);
    kube.timeout_s = o->watch_timeout_s;
    kube.enabled = 1;
    return 0;
}

/* The cluster halt follows the ConfigMap: halted while it exists. Until it
 * has been listed, and while the API server cannot be reached, the last
 * known state stays (a view keeps what was last seen). */
static void follow_halt(const struct fl_kube_view *v)
{
    if (!v->halt_synced)
        return;
    /* Compared and shown as kept: at most 200 bytes of the reason. */
    char why[201];
    snprintf(why, sizeof(why), "%s",
             v->halt_reason && *v->halt_reason ? v->halt_reason : "no reason given");
    int changed = !kube.halt_known || kube.halted != v->halted ||
                  (v->halted && strcmp(kube.halt_reason, why) != 0);
    kube.halt_known = 1;
    kube.halted = v->halted;
    snprintf(kube.halt_reason, sizeof(kube.halt_reason), "%s", v->halted ? why : "");
    if (!changed)
        return;
    char reason[700], todo[400];
    snprintf(reason, sizeof(reason), "cluster halt (ConfigMap %s/%s): %s", kube.ns,
             FL_KUBE_HALT_NAME, kube.halt_reason);
    snprintf(todo, sizeof(todo), "delete ConfigMap %s/%s to resume every node (kubectl -n %s "
             "delete configmap %s)", kube.ns, FL_KUBE_HALT_NAME, kube.ns, FL_KUBE_HALT_NAME);
    int was_pending = kube.halt_pending;
    kube.halt_pending = 0;
    if (v->halted) {
        /* Off first: a source held again with a new reason replaces it. */
        if (was_pending)
            fl_runtime_hold_halt(FL_HALT_CLUSTER, 0, "", "");
        fl_runtime_hold_halt(FL_HALT_CLUSTER, 1, reason, todo);
    } else {
        if (was_pending)
            fl_info("kubernetes: no ConfigMap %s/%s: no cluster halt", kube.ns,
                    FL_KUBE_HALT_NAME);
        else
            fl_info("kubernetes: ConfigMap %s/%s is gone: the cluster halt ends", kube.ns,
                    FL_KUBE_HALT_NAME);
        fl_runtime_hold_halt(FL_HALT_CLUSTER, 0, "", "");
    }
}

static void on_view(struct fl_kube_view *v, void *arg)
{
    (void)arg;
    follow_halt(v);
    if (kube.halt_known)
        fl_faultpolicies_halt(kube.halted, kube.halt_reason);
    fl_transparent_set_view(v);
    fl_faultpolicies_view(v);
    fl_kube_view_unref(v);
}

int fl_kubernetes_start(uv_loop_t *loop, char *err, size_t errlen)
{
    if (!kube.enabled)
        return 0;
    struct fl_kube_watch_opts wo = {.cfg = &kube.cfg,
                                    .node = kube.node,
                                    .halt_namespace = kube.ns,
                                    .faultpolicies = 1,
                                    .watch_timeout_s = kube.timeout_s,
                                    .loop = loop,
                                    .on_view = on_view};
    int e = fl_faultpolicies_start(loop, &kube.cfg, kube.node);
    if (e < 0) {
        snprintf(err, errlen, "out of memory");
        return e;
    }
    e = fl_kube_watch_start(&kube.watch, &wo, err, errlen);
    if (e < 0)
        return e;
    /* A node (re)started during a cluster halt must not inject before it
     * knows: halted until the ConfigMap has been listed. */
    char reason[400], todo[400];
    snprintf(reason, sizeof(reason), "cluster halt state not known yet (ConfigMap %s/%s not "
             "listed from the API server)", kube.ns, FL_KUBE_HALT_NAME);
    snprintf(todo, sizeof(todo), "it lifts once the API server answers ('faultctl status' shows "
             "the watch)");
    kube.halt_pending = 1;
    fl_runtime_hold_halt(FL_HALT_CLUSTER, 1, reason, todo);
    fl_info("kubernetes: watching the pods of node %s, the FaultPolicies and the cluster halt "
            "(ConfigMap %s/%s) through %s (%s)",
            kube.node, kube.ns, FL_KUBE_HALT_NAME, kube.cfg.server, kube.cfg.source);
    return 0;
}

int fl_kubernetes_enabled(void)
{
    return kube.enabled;
}

void fl_kubernetes_policy(const struct fl_policy *p)
{
    if (!kube.watch)
        return;
    const char **keys = calloc(p->n_targets + 1, sizeof(*keys));
    char **owned = calloc(p->n_targets + 1, sizeof(*owned));
    size_t n = 0;
    if (!keys || !owned)
        goto out;
    for (size_t i = 0; i < p->n_targets; i++) {
        const struct fl_target_spec *t = &p->targets[i];
        if (!t->svc_name)
            continue;
        size_t len = strlen(t->svc_ns) + strlen(t->svc_name) + 2;
        if (!(owned[n] = malloc(len)))
            goto out;
        snprintf(owned[n], len, "%s/%s", t->svc_ns, t->svc_name);
        keys[n] = owned[n];
        n++;
    }
    fl_kube_watch_services(kube.watch, keys, n);
out:
    for (size_t i = 0; owned && i < n; i++)
        free(owned[i]);
    free(owned);
    free(keys);
}

int fl_kubernetes_check(const struct fl_policy *p, char *err, size_t errlen)
{
    for (size_t i = 0; !kube.enabled && i < p->n_targets; i++) {
        const struct fl_target_spec *t = &p->targets[i];
        if (t->selector || t->svc_name) {
            snprintf(err, errlen, "target '%s' %s; that needs the Kubernetes API: run faultline "
                                  "with --kubernetes (and --kubeconfig PATH outside a cluster)",
                     t->name, t->selector ? "selects pods by labels" : "names a Service");
            return -ENOTSUP;
        }
    }
    return 0;
}

#define STATUS_PODS_MAX 4096

json_t *fl_kubernetes_status_json(void)
{
    if (!kube.enabled)
        return NULL;
    struct fl_kube_watch_status st = {0};
    if (kube.watch)
        fl_kube_watch_status(kube.watch, &st);
    json_t *pods = json_array();
    static struct fl_transparent_pod tp[STATUS_PODS_MAX];
    size_t n = fl_transparent_pods(tp, STATUS_PODS_MAX);
    for (size_t i = 0; i < n && i < STATUS_PODS_MAX; i++)
        json_array_append_new(pods, json_pack("{s:s,s:s?,s:s,s:s}", "pod", tp[i].pod, "cgroup",
                                              tp[i].cgroup, "target", tp[i].target, "state",
                                              tp[i].state));
    /* "current": false while the API server cannot be reached: the state is
     * the last one known, kept until it answers again. */
    json_t *halt = json_pack("{s:s,s:b,s:b,s:s?,s:b}", "configmap", FL_KUBE_HALT_NAME, "known",
                             kube.halt_known, "halted", kube.halt_known && kube.halted, "reason",
                             kube.halt_known && kube.halted ? kube.halt_reason : NULL, "current",
                             kube.halt_known && !st.failing);
    json_object_set_new(halt, "namespace", json_string(kube.ns));
    return json_pack("{s:s,s:s,s:s,s:b,s:s?,s:I,s:I,s:I,s:o,s:o,s:o}", "node", kube.node, "server",
                     kube.cfg.server, "credentials", kube.cfg.source, "pods_synced",
                     st.pods_synced, "error", st.failing ? st.error : NULL, "events",
                     (json_int_t)st.events, "relists", (json_int_t)st.relists, "errors",
                     (json_int_t)st.errors, "pods", pods, "cluster_halt", halt,
                     "faultpolicies", fl_faultpolicies_json());
}

void fl_kubernetes_stop(void)
{
    fl_faultpolicies_stop();
    fl_kube_watch_stop(kube.watch);
    kube.watch = NULL;
    fl_kube_config_free(&kube.cfg);
    kube.enabled = 0;
}
