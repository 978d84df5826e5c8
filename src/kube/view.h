/* view: what faultline knows of the cluster at one moment, as an immutable,
 * reference-counted snapshot: the Pods on this node, and the Services and
 * EndpointSlices some target names. The watch thread (watch.h) builds a new
 * view after each batch of changes; readers on any thread hold a reference
 * and never see it change.
 */
#ifndef FL_KUBE_VIEW_H
#define FL_KUBE_VIEW_H

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "selector.h"

enum fl_kube_qos { FL_QOS_UNKNOWN, FL_QOS_GUARANTEED, FL_QOS_BURSTABLE, FL_QOS_BESTEFFORT };

struct fl_kube_pod {
    char *ns, *name, *uid;
    enum fl_kube_qos qos;
    int active; /* not Succeeded or Failed, and not being deleted */
    struct fl_label *labels;
    size_t n_labels;
};

struct fl_kube_svc_port {
    char *name;                /* "" when the Service has one unnamed port */
    uint16_t port;             /* the Service port */
    uint16_t target_port;      /* a number, or 0 when named */
    char *target_port_name;    /* a named targetPort, or NULL */
};

/* One address of a ready endpoint, with the port it serves each Service port
 * name on. */
struct fl_kube_endpoint {
    struct fl_cidr addr; /* a /32 or /128 */
    char *port_name; /* the EndpointSlice port's name ("" unnamed) */
    uint16_t port;
};

struct fl_kube_service {
    char *ns, *name;
    int found;                /* the Service exists */
    struct fl_cidr ips[2];    /* cluster IPs (none when headless) */
    size_t n_ips;
    struct fl_kube_svc_port *ports;
    size_t n_ports;
    struct fl_kube_endpoint *eps; /* ready endpoints of all its EndpointSlices */
    size_t n_eps;
};

struct fl_kube_view {
    atomic_int refs;
    uint64_t seq; /* increases with every view built */
    char *node;
    struct fl_kube_pod *pods; /* sorted by namespace, name */
    size_t n_pods;
    struct fl_kube_service *svcs;
    size_t n_svcs;
    int pods_synced; /* the Pods of the node have been listed at least once */
    /* The cluster halt: the ConfigMap FL_KUBE_HALT_NAME in the daemon's namespace. */
    int halt_watched; /* it is watched */
    int halt_synced;  /* listed at least once: halted is known */
    int halted;       /* it exists (as last seen) */
    char *halt_reason; /* its data.reason ("" without one), or NULL */
    /* The FaultPolicies of every namespace, oldest first. */
    int fps_watched, fps_synced;
    struct fl_kube_fp *fps;
    size_t n_fps;
};

#define FL_KUBE_HALT_NAME "faultline-halt"
#define FL_KUBE_FP_GROUP "faultline.dev"
#define FL_KUBE_FP_VERSION "v1"

/* A FaultPolicy resource as last seen: what identifies it, and the whole
 * object (compact JSON) for the loader and for its status. */
struct fl_kube_fp {
    char *ns, *name, *uid;
    char *created; /* metadata.creationTimestamp ("" when absent) */
    uint64_t generation;
    char *rv;   /* metadata.resourceVersion */
    char *json; /* the object */
};

/* A destination a Service target resolves to: an address (cluster IP or
 * endpoint) and the port connections to it use. */
struct fl_kube_dest {
    struct fl_cidr addr;
    uint16_t port;
};

struct fl_kube_view *fl_kube_view_ref(struct fl_kube_view *v);
void fl_kube_view_unref(struct fl_kube_view *v);

/* The Service ns/name in v, or NULL when it is not watched (yet). */
const struct fl_kube_service *fl_kube_view_service(const struct fl_kube_view *v, const char *ns,
                                                   const char *name);

/* The destinations of Service s at Service port `port` (0: every port): its
 * cluster IPs at that port and its ready endpoints at the matching target
 * port. Fills up to cap into out; returns how many there are. */
size_t fl_kube_service_dests(const struct fl_kube_service *s, uint16_t port,
                             struct fl_kube_dest *out, size_t cap);

/* Building (the watch thread). Each takes the API object as JSON. */
int fl_kube_pod_from_json(json_t *o, struct fl_kube_pod *p);
void fl_kube_pod_fini(struct fl_kube_pod *p);
/* Fills s from the Service object (NULL: not found) and its EndpointSlices. */
int fl_kube_service_from_json(json_t *svc, json_t *const *slices, size_t n_slices,
                              struct fl_kube_service *s);
void fl_kube_service_fini(struct fl_kube_service *s);
int fl_kube_fp_from_json(json_t *o, struct fl_kube_fp *p);
void fl_kube_fp_fini(struct fl_kube_fp *p);

#endif
