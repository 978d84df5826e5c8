/* view: see view.h. */
#include "view.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char *dup_str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return strdup(s ? s : "");
}

int fl_kube_pod_from_json(json_t *o, struct fl_kube_pod *p)
{
    json_t *md = json_object_get(o, "metadata"), *st = json_object_get(o, "status");
    const char *qos = json_string_value(json_object_get(st, "qosClass"));
    const char *phase = json_string_value(json_object_get(st, "phase"));
    memset(p, 0, sizeof(*p));
    p->ns = dup_str(md, "namespace");
    p->name = dup_str(md, "name");
    p->uid = dup_str(md, "uid");
    p->qos = !qos                               ? FL_QOS_UNKNOWN
             : strcmp(qos, "Guaranteed") == 0   ? FL_QOS_GUARANTEED
             : strcmp(qos, "Burstable") == 0    ? FL_QOS_BURSTABLE
             : strcmp(qos, "BestEffort") == 0   ? FL_QOS_BESTEFFORT
                                                : FL_QOS_UNKNOWN;
    p->active = !json_object_get(md, "deletionTimestamp") &&
                !(phase && (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0));
    json_t *labels = json_object_get(md, "labels");
    size_t n = json_is_object(labels) ? json_object_size(labels) : 0;
    p->labels = calloc(n + 1, sizeof(*p->labels));
    if (!p->ns || !p->name || !p->uid || !p->labels) {
        fl_kube_pod_fini(p);
        return -ENOMEM;
    }
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v)
    {
        const char *s = json_string_value(v);
        char *kk = strdup(k), *vv = strdup(s ? s : "");
        if (!kk || !vv) {
            free(kk);
            free(vv);
            fl_kube_pod_fini(p);
            return -ENOMEM;
        }
        p->labels[p->n_labels++] = (struct fl_label){kk, vv};
    }
    return 0;
}

void fl_kube_pod_fini(struct fl_kube_pod *p)
{
    free(p->ns);
    free(p->name);
    free(p->uid);
    for (size_t i = 0; i < p->n_labels; i++) {
        free((char *)p->labels[i].key);
        free((char *)p->labels[i].value);
    }
    free(p->labels);
    memset(p, 0, sizeof(*p));
}

static int parse_ip(const char *s, struct fl_cidr *c)
{
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, s, c->addr) == 1) {
        c->family = AF_INET;
        c->prefix = 32;
        return 0;
    }
    if (inet_pton(AF_INET6, s, c->addr) == 1) {
        c->family = AF_INET6;
        c->prefix = 128;
        return 0;
    }
    return -EINVAL;
}

static int is_tcp(json_t *port)
{
    const char *proto = json_string_value(json_object_get(port, "protocol"));
    return !proto || strcmp(proto, "TCP") == 0;
}

static int add_slice(struct fl_kube_service *s, json_t *slice)
{
    json_t *eps = json_object_get(slice, "endpoints"), *ports = json_object_get(slice, "ports");
    size_t i, j, k;
    json_t *ep, *pt, *addr;
    json_array_foreach(eps, i, ep)
    {
        json_t *ready = json_object_get(json_object_get(ep, "conditions"), "ready");
        if (ready && !json_is_true(ready))
            continue; /* absent means ready (the API's rule) */
        json_array_foreach(json_object_get(ep, "addresses"), j, addr)
        {
            struct fl_cidr c;
            if (!json_string_value(addr) || parse_ip(json_string_value(addr), &c) < 0)
                continue;
            json_array_foreach(ports, k, pt)
            {
                json_int_t port = json_integer_value(json_object_get(pt, "port"));
                if (!is_tcp(pt) || port <= 0 || port > 65535)
                    continue;
                struct fl_kube_endpoint *n =
                    realloc(s->eps, (s->n_eps + 1) * sizeof(*s->eps));
                if (!n)
                    return -ENOMEM;
                s->eps = n;
                n[s->n_eps].addr = c;
                n[s->n_eps].port = (uint16_t)port;
                n[s->n_eps].port_name = dup_str(pt, "name");
                if (!n[s->n_eps].port_name)
                    return -ENOMEM;
                s->n_eps++;
            }
        }
    }
    return 0;
}

int fl_kube_service_from_json(json_t *svc, json_t *const *slices, size_t n_slices,
                              struct fl_kube_service *s)
{
    json_t *spec = json_object_get(svc, "spec");
    size_t i;
    json_t *v;
    s->found = svc != NULL;
    if (!svc)
        return 0;
    json_t *ips = json_object_get(spec, "clusterIPs");
    if (!json_is_array(ips)) {
        ips = json_array();
        if (json_string_value(json_object_get(spec, "clusterIP")))
            json_array_append(ips, json_object_get(spec, "clusterIP"));
    } else {
        json_incref(ips);
    }
    json_array_foreach(ips, i, v)
    {
        if (s->n_ips < 2 && json_string_value(v) &&
            parse_ip(json_string_value(v), &s->ips[s->n_ips]) == 0)
            s->n_ips++; /* "None" (headless) parses as nothing */
    }
    json_decref(ips);
    json_t *ports = json_object_get(spec, "ports");
    s->ports = calloc(json_array_size(ports) + 1, sizeof(*s->ports));
    if (!s->ports)
        return -ENOMEM;
    json_array_foreach(ports, i, v)
    {
        json_int_t port = json_integer_value(json_object_get(v, "port"));
        json_t *tp = json_object_get(v, "targetPort");
        if (!is_tcp(v) || port <= 0 || port > 65535)
            continue;
        struct fl_kube_svc_port *sp = &s->ports[s->n_ports];
        sp->port = (uint16_t)port;
        sp->name = dup_str(v, "name");
        if (json_is_integer(tp) && json_integer_value(tp) > 0 && json_integer_value(tp) <= 65535)
            sp->target_port = (uint16_t)json_integer_value(tp);
        else if (json_string_value(tp))
            sp->target_port_name = strdup(json_string_value(tp));
        else
            sp->target_port = (uint16_t)port; /* defaults to port */
        if (!sp->name)
            return -ENOMEM;
        s->n_ports++;
    }
    for (i = 0; i < n_slices; i++)
        if (add_slice(s, slices[i]) < 0)
            return -ENOMEM;
    return 0;
}

void fl_kube_service_fini(struct fl_kube_service *s)
{
    free(s->ns);
    free(s->name);
    for (size_t i = 0; i < s->n_ports; i++) {
        free(s->ports[i].name);
        free(s->ports[i].target_port_name);
    }
    free(s->ports);
    for (size_t i = 0; i < s->n_eps; i++)
        free(s->eps[i].port_name);
    free(s->eps);
    memset(s, 0, sizeof(*s));
}

struct fl_kube_view *fl_kube_view_ref(struct fl_kube_view *v)
{
    if (v)
        atomic_fetch_add(&v->refs, 1);
    return v;
}

void fl_kube_view_unref(struct fl_kube_view *v)
{
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    for (size_t i = 0; i < v->n_pods; i++)
        fl_kube_pod_fini(&v->pods[i]);
    free(v->pods);
    for (size_t i = 0; i < v->n_svcs; i++)
        fl_kube_service_fini(&v->svcs[i]);
    free(v->svcs);
    for (size_t i = 0; i < v->n_fps; i++)
        fl_kube_fp_fini(&v->fps[i]);
    free(v->fps);
    free(v->node);
    free(v->halt_reason);
    free(v);
}

int fl_kube_fp_from_json(json_t *o, struct fl_kube_fp *p)
{
    json_t *md = json_object_get(o, "metadata");
    memset(p, 0, sizeof(*p));
    p->ns = dup_str(md, "namespace");
    p->name = dup_str(md, "name");
    p->uid = dup_str(md, "uid");
    p->rv = dup_str(md, "resourceVersion");
    p->created = dup_str(md, "creationTimestamp");
    json_t *g = json_object_get(md, "generation");
    p->generation = json_is_integer(g) ? (uint64_t)json_integer_value(g) : 0;
    p->json = json_dumps(o, JSON_COMPACT);
    if (!p->ns)
        p->ns = strdup("");
    if (!p->name)
        p->name = strdup("");
    if (!p->uid)
        p->uid = strdup("");
    if (!p->rv)
        p->rv = strdup("");
    if (!p->created)
        p->created = strdup("");
    if (!p->ns || !p->name || !p->uid || !p->rv || !p->created || !p->json) {
        fl_kube_fp_fini(p);
        return -ENOMEM;
    }
    return 0;
}

void fl_kube_fp_fini(struct fl_kube_fp *p)
{
    free(p->ns);
    free(p->name);
    free(p->uid);
    free(p->rv);
    free(p->created);
    free(p->json);
    memset(p, 0, sizeof(*p));
}

const struct fl_kube_service *fl_kube_view_service(const struct fl_kube_view *v, const char *ns,
                                                   const char *name)
{
    for (size_t i = 0; v && i < v->n_svcs; i++)
        if (strcmp(v->svcs[i].ns, ns) == 0 && strcmp(v->svcs[i].name, name) == 0)
            return &v->svcs[i];
    return NULL;
}

static size_t push_dest(struct fl_kube_dest *out, size_t cap, size_t n, const struct fl_cidr *a,
                        uint16_t port)
{
    for (size_t i = 0; i < n && i < cap; i++)
        if (out[i].port == port && out[i].addr.family == a->family &&
            memcmp(out[i].addr.addr, a->addr, 16) == 0)
            return n; /* the same endpoint in two slices */
    if (n < cap)
        out[n] = (struct fl_kube_dest){*a, port};
    return n + 1;
}

size_t fl_kube_service_dests(const struct fl_kube_service *s, uint16_t port,
                             struct fl_kube_dest *out, size_t cap)
{
    size_t n = 0;
    for (size_t p = 0; s && p < s->n_ports; p++) {
        const struct fl_kube_svc_port *sp = &s->ports[p];
        if (port && sp->port != port)
            continue;
        for (size_t i = 0; i < s->n_ips; i++)
            n = push_dest(out, cap, n, &s->ips[i], sp->port);
        /* An EndpointSlice names its ports after the Service's, with the
         * targetPort resolved (a named one differs from pod to pod). */
        for (size_t i = 0; i < s->n_eps; i++) {
            const struct fl_kube_endpoint *e = &s->eps[i];
            if (strcmp(e->port_name, sp->name) == 0)
                n = push_dest(out, cap, n, &e->addr, e->port);
        }
    }
    return n;
}
