/* policy_json: see policy_json.h. */
#include "policy_json.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "fault.h"

double fl_policy_json_percent(uint32_t ppm)
{
    return ppm / 10000.0;
}

static const char *sm_kind_name(enum fl_str_match_kind k)
{
    switch (k) {
    case FL_SM_EXACT:
        return "exact";
    case FL_SM_PREFIX:
        return "prefix";
    case FL_SM_REGEX:
        return "regex";
    case FL_SM_PRESENT:
        return "present";
    case FL_SM_ABSENT:
        return "absent";
    default:
        return NULL;
    }
}

static json_t *str_match_json(const struct fl_str_match *m)
{
    const char *k = sm_kind_name(m->kind);
    if (!k)
        return json_null();
    if (m->kind == FL_SM_PRESENT || m->kind == FL_SM_ABSENT)
        return json_pack("{s:b}", k, 1);
    return json_pack("{s:s}", k, m->value ? m->value : "");
}

static json_t *match_json(const struct fl_match *m)
{
    json_t *o = json_object();
    if (m->methods) {
        json_t *a = json_array();
        for (int i = 0; i < FL_M__COUNT; i++)
            if (m->methods & (1u << i))
                json_array_append_new(a, json_string(fl_values_method_name((enum fl_method)i)));
        json_object_set_new(o, "method", a);
    }
    if (m->path.kind != FL_SM_ANY)
        json_object_set_new(o, "path", str_match_json(&m->path));
    if (m->n_headers) {
        json_t *a = json_array();
        for (size_t i = 0; i < m->n_headers; i++) {
            json_t *h = str_match_json(&m->headers[i].m);
            if (!json_is_object(h))
                h = json_object();
            json_object_set_new(h, "name", json_string(m->headers[i].name));
            json_array_append_new(a, h);
        }
        json_object_set_new(o, "headers", a);
    }
    if (m->has_grpc)
        json_object_set_new(
            o, "grpc",
            json_pack("{s:s?,s:s?}", "service", m->grpc_service, "method", m->grpc_method));
    return o;
}

static const char *dir_name(unsigned d)
{
    return d == (FL_DIR_DOWN | FL_DIR_UP) ? "both" : d == FL_DIR_UP ? "upstream" : "downstream";
}

json_t *fl_policy_json_connection(const struct fl_connection_fault *cf)
{
    json_t *o = json_pack("{s:f}", "percent", fl_policy_json_percent(cf->ppm));
    if (cf->latency.enabled)
        json_object_set_new(o, "latency",
                            json_pack("{s:I,s:I,s:s}", "fixed_ms", (json_int_t)cf->latency.fixed_ms,
                                      "jitter_ms", (json_int_t)cf->latency.jitter_ms, "direction",
                                      dir_name(cf->latency.dir)));
    if (cf->bandwidth.enabled)
        json_object_set_new(o, "bandwidth",
                            json_pack("{s:I,s:s}", "rate_bytes_per_s",
                                      (json_int_t)cf->bandwidth.rate, "direction",
                                      dir_name(cf->bandwidth.dir)));
    if (cf->slicer.enabled)
        json_object_set_new(
            o, "slicer",
            json_pack("{s:I,s:I,s:I,s:s}", "average", (json_int_t)cf->slicer.average, "variation",
                      (json_int_t)cf->slicer.variation, "delay_us", (json_int_t)cf->slicer.delay_us,
                      "direction", dir_name(cf->slicer.dir)));
    if (cf->limit_data.enabled)
        json_object_set_new(o, "limit_data",
                            json_pack("{s:I,s:s}", "bytes", (json_int_t)cf->limit_data.bytes,
                                      "direction", dir_name(cf->limit_data.dir)));
    if (cf->timeout.enabled)
        json_object_set_new(o, "timeout",
                            json_pack("{s:I,s:s}", "after_ms", (json_int_t)cf->timeout.after_ms,
                                      "direction", dir_name(cf->timeout.dir)));
    if (cf->slow_close.enabled)
        json_object_set_new(o, "slow_close",
                            json_pack("{s:I,s:s}", "delay_ms", (json_int_t)cf->slow_close.delay_ms,
                                      "direction", dir_name(cf->slow_close.dir)));
    if (cf->reset_peer.enabled)
        json_object_set_new(o, "reset_peer",
                            json_pack("{s:I,s:s}", "after_ms", (json_int_t)cf->reset_peer.after_ms,
                                      "direction", dir_name(cf->reset_peer.dir)));
    return o;
}

/* The rule as written in the file (no live state): what a diff compares. */
static json_t *rule_spec_json(const struct fl_rule *r)
{
    json_t *o = json_object(), *f = json_object();
    json_object_set_new(o, "name", json_string(r->name));
    if (r->n_on) {
        json_t *a = json_array();
        for (size_t i = 0; i < r->n_on; i++)
            json_array_append_new(a, json_string(r->on[i]));
        json_object_set_new(o, "on", a);
    }
    json_object_set_new(o, "match", match_json(&r->match));
    if (r->from_headers)
        json_object_set_new(o, "from_headers", json_true());
    if (r->delay.enabled)
        json_object_set_new(f, "delay",
                            json_pack("{s:I,s:I,s:f}", "fixed_ms", (json_int_t)r->delay.fixed_ms,
                                      "jitter_ms", (json_int_t)r->delay.jitter_ms, "percent",
                                      fl_policy_json_percent(r->delay.ppm)));
    if (r->abort.enabled) {
        json_t *a = json_pack("{s:f}", "percent", fl_policy_json_percent(r->abort.ppm));
        if (r->abort.status)
            json_object_set_new(a, "status", json_integer(r->abort.status));
        if (r->abort.grpc_status >= 0)
            json_object_set_new(a, "grpc_status",
                                json_string(fl_values_grpc_status_name(r->abort.grpc_status)));
        if (r->abort.body)
            json_object_set_new(a, "body", json_stringn(r->abort.body, r->abort.body_len));
        if (r->abort.message)
            json_object_set_new(a, "message", json_string(r->abort.message));
        if (r->abort.n_headers) {
            json_t *h = json_object();
            for (size_t i = 0; i < r->abort.n_headers; i++)
                json_object_set_new(h, r->abort.headers[i].name,
                                    json_string(r->abort.headers[i].value));
            json_object_set_new(a, "headers", h);
        }
        json_object_set_new(f, "abort", a);
    }
    if (r->reset.enabled)
        json_object_set_new(f, "reset",
                            json_pack("{s:f}", "percent", fl_policy_json_percent(r->reset.ppm)));
    if (r->response_delay.enabled)
        json_object_set_new(f, "response_delay",
                            json_pack("{s:I,s:I,s:f}", "fixed_ms",
                                      (json_int_t)r->response_delay.fixed_ms, "jitter_ms",
                                      (json_int_t)r->response_delay.jitter_ms, "percent",
                                      fl_policy_json_percent(r->response_delay.ppm)));
    if (r->modify.enabled) {
        const struct fl_modify *m = &r->modify;
        json_t *a = json_pack("{s:f}", "percent", fl_policy_json_percent(m->ppm));
        if (m->status)
            json_object_set_new(a, "status", json_integer(m->status));
        if (m->grpc_status >= 0)
            json_object_set_new(a, "grpc_status",
                                json_string(fl_values_grpc_status_name(m->grpc_status)));
        if (m->message)
            json_object_set_new(a, "message", json_string(m->message));
        if (m->body)
            json_object_set_new(a, "body", json_stringn(m->body, m->body_len));
        if (m->n_set || m->n_remove) {
            json_t *h = json_object(), *set = json_object(), *rm = json_array();
            for (size_t i = 0; i < m->n_set; i++)
                json_object_set_new(set, m->set[i].name, json_string(m->set[i].value));
            for (size_t i = 0; i < m->n_remove; i++)
                json_array_append_new(rm, json_string(m->remove[i]));
            json_object_set_new(h, "set", set);
            json_object_set_new(h, "remove", rm);
            json_object_set_new(a, "headers", h);
        }
        json_object_set_new(f, "modify", a);
    }
    if (r->truncate.enabled)
        json_object_set_new(f, "truncate",
                            json_pack("{s:I,s:f}", "after", (json_int_t)r->truncate.after,
                                      "percent", fl_policy_json_percent(r->truncate.ppm)));
    if (r->bandwidth.enabled)
        json_object_set_new(f, "bandwidth",
                            json_pack("{s:I,s:s,s:f}", "rate_bytes_per_s",
                                      (json_int_t)r->bandwidth.rate, "direction",
                                      dir_name(r->bandwidth.dir), "percent",
                                      fl_policy_json_percent(r->bandwidth.ppm)));
    if (r->connection.enabled)
        json_object_set_new(f, "connection", fl_policy_json_connection(&r->connection));
    json_object_set_new(o, "fault", f);
    return o;
}

/* The rule with its live state: enabled, effective percents, counters. */
json_t *fl_policy_json_rule(struct fl_rule *r)
{
    json_t *o = rule_spec_json(r);
    json_t *f = json_object_get(o, "fault"), *inj = json_object();
    json_object_set_new(o, "enabled", json_boolean(atomic_load(&r->live.enabled)));
    if (r->policy_id)
        json_object_set_new(o, "policy", json_string(r->policy_id));
    for (enum fl_fault_kind k = FL_FAULT_DELAY; k < FL_FAULT_KINDS; k++) {
        json_object_set_new(inj, fl_fault_kind_name(k),
                            json_integer((json_int_t)atomic_load(&r->live.injected[k])));
        json_t *fk = json_object_get(f, fl_fault_kind_name(k));
        if (!fk)
            continue;
        unsigned v = atomic_load(fl_policy_rule_live_ppm(r, k));
        json_object_set_new(fk, "percent_file",
                            json_real(fl_policy_json_percent(fl_policy_rule_file_ppm(r, k))));
        json_object_set_new(fk, "percent",
                            json_real(fl_policy_json_percent(fl_policy_rule_ppm(r, k))));
        /* overridden: anything of this fault changed live; the others say what */
        int over = v != UINT32_MAX;
        json_object_set_new(fk, "percent_overridden", json_boolean(over));
        if (k == FL_FAULT_DELAY) {
            uint64_t fx = atomic_load(&r->live.delay_fixed_ms);
            if (fx != UINT64_MAX) {
                json_object_set_new(fk, "fixed_ms", json_integer((json_int_t)fx));
                over = 1;
            }
            json_object_set_new(fk, "fixed_overridden", json_boolean(fx != UINT64_MAX));
        } else if (k == FL_FAULT_ABORT) {
            int st = atomic_load(&r->live.abort_status) != 0;
            if (st) {
                json_object_set_new(fk, "status", json_integer(fl_policy_rule_abort_status(r)));
                over = 1;
            }
            json_object_set_new(fk, "status_overridden", json_boolean(st));
        }
        json_object_set_new(fk, "overridden", json_boolean(over));
    }
    json_object_set_new(o, "matched", json_integer((json_int_t)atomic_load(&r->live.matched)));
    json_object_set_new(o, "injected", inj);
    return o;
}

json_t *fl_policy_json_listeners(const struct fl_policy *p)
{
    json_t *a = json_array();
    for (size_t i = 0; i < p->n_listeners; i++)
        json_array_append_new(a, json_pack("{s:s,s:s,s:s}", "name", p->listeners[i].name, "listen",
                                           p->listeners[i].listen, "upstream",
                                           p->listeners[i].upstream));
    return a;
}

static const char *listener_name(const void *x)
{
    return ((const struct fl_listener_spec *)x)->name;
}

static int listener_equal(const void *x, const void *y)
{
    const struct fl_listener_spec *a = x, *b = y;
    return strcmp(a->listen, b->listen) == 0 && strcmp(a->upstream, b->upstream) == 0;
}

static const char *target_name(const void *x)
{
    return ((const struct fl_target_spec *)x)->name;
}

static int target_equal(const void *x, const void *y)
{
    return fl_policy_target_equal(x, y);
}

/* Sets d[key] to {added, removed, changed} between two arrays of named
 * things (na and nb items of size sz); returns the number of changes. */
static int diff_named(json_t *d, const char *key, const void *a, size_t na, const void *b,
                      size_t nb, size_t sz, const char *(*name)(const void *),
                      int (*equal)(const void *, const void *))
{
    json_t *added = json_array(), *removed = json_array(), *changed = json_array();
    const char *pa = a, *pb = b;
    for (size_t i = 0; i < nb; i++) {
        const void *old = NULL;
        for (size_t j = 0; j < na && !old; j++)
            if (strcmp(name(pa + j * sz), name(pb + i * sz)) == 0)
                old = pa + j * sz;
        if (!old)
            json_array_append_new(added, json_string(name(pb + i * sz)));
        else if (!equal(old, pb + i * sz))
            json_array_append_new(changed, json_string(name(pb + i * sz)));
    }
    for (size_t j = 0; j < na; j++) {
        int found = 0;
        for (size_t i = 0; i < nb && !found; i++)
            found = strcmp(name(pa + j * sz), name(pb + i * sz)) == 0;
        if (!found)
            json_array_append_new(removed, json_string(name(pa + j * sz)));
    }
    int n = (int)(json_array_size(added) + json_array_size(removed) + json_array_size(changed));
    json_object_set_new(d, key,
                        json_pack("{s:o,s:o,s:o}", "added", added, "removed", removed, "changed",
                                  changed));
    return n;
}

/* What applying b in place of a changes: policy name, settings, listeners,
 * targets and rules (added, removed, changed with the parts that changed,
 * reordered). */
json_t *fl_policy_json_diff(const struct fl_policy *a, const struct fl_policy *b, int *n_changes)
{
    json_t *d = json_object(), *settings = json_object();
    json_t *ra = json_array(), *rr = json_array(), *rc = json_array();
    int n = 0;

    if (strcmp(a->name, b->name) != 0) {
        json_object_set_new(d, "policy", json_pack("{s:s,s:s}", "from", a->name, "to", b->name));
        n++;
    }
#define SETTING(key, fa, fb)                                                                       \
    if ((fa) != (fb)) {                                                                            \
        json_object_set_new(                                                                       \
            settings, key,                                                                         \
            json_pack("{s:I,s:I}", "from", (json_int_t)(fa), "to", (json_int_t)(fb)));             \
        n++;                                                                                       \
    }
    SETTING("ttl_ms", a->ttl_ms, b->ttl_ms);
    SETTING("max_active_faults", a->max_active_faults, b->max_active_faults);
    SETTING("proxy_port", a->proxy_port, b->proxy_port);
#undef SETTING
    /* seed: null when the policy has none (random), else the number */
    if (a->has_seed != b->has_seed || (a->has_seed && a->seed != b->seed)) {
        json_object_set_new(
            settings, "seed",
            json_pack("{s:o,s:o}", "from",
                      a->has_seed ? json_integer((json_int_t)a->seed) : json_null(), "to",
                      b->has_seed ? json_integer((json_int_t)b->seed) : json_null()));
        n++;
    }
    json_object_set_new(d, "settings", settings);

    n += diff_named(d, "listeners", a->listeners, a->n_listeners, b->listeners, b->n_listeners,
                    sizeof(*a->listeners), listener_name, listener_equal);
    n += diff_named(d, "targets", a->targets, a->n_targets, b->targets, b->n_targets,
                    sizeof(*a->targets), target_name, target_equal);

    /* Rules: compare each part of the file's view; order matters (first match wins). */
    size_t common_a = 0, common_b = 0;
    int reordered = 0;
    for (size_t i = 0; i < b->n_rules; i++) {
        const struct fl_rule *old = fl_policy_find_rule(a, b->rules[i].name);
        if (!old) {
            json_array_append_new(ra, json_string(b->rules[i].name));
            continue;
        }
        json_t *x = rule_spec_json(old), *y = rule_spec_json(&b->rules[i]);
        json_t *parts = json_array();
        static const char *const keys[] = {"on", "match", "fault", "from_headers"};
        for (size_t k = 0; k < 4; k++) {
            json_t *vx = json_object_get(x, keys[k]), *vy = json_object_get(y, keys[k]);
            if (!(vx == vy || (vx && vy && json_equal(vx, vy))))
                json_array_append_new(parts, json_string(keys[k]));
        }
        if (json_array_size(parts))
            json_array_append_new(rc, json_pack("{s:s,s:o,s:O,s:O}", "name", b->rules[i].name,
                                                "parts", parts, "from", x, "to", y));
        else
            json_decref(parts);
        json_decref(x);
        json_decref(y);
    }
    for (size_t j = 0; j < a->n_rules; j++)
        if (!fl_policy_find_rule(b, a->rules[j].name))
            json_array_append_new(rr, json_string(a->rules[j].name));
    /* Walk the rules both policies have, in each one's order. */
    while (common_a < a->n_rules && common_b < b->n_rules) {
        if (!fl_policy_find_rule(b, a->rules[common_a].name)) {
            common_a++;
            continue;
        }
        if (!fl_policy_find_rule(a, b->rules[common_b].name)) {
            common_b++;
            continue;
        }
        if (strcmp(a->rules[common_a].name, b->rules[common_b].name) != 0) {
            reordered = 1;
            break;
        }
        common_a++;
        common_b++;
    }
    n += (int)(json_array_size(ra) + json_array_size(rr) + json_array_size(rc)) + reordered;
    json_object_set_new(d, "rules",
                        json_pack("{s:o,s:o,s:o,s:b}", "added", ra, "removed", rr, "changed", rc,
                                  "reordered", reordered));
    json_object_set_new(d, "changes", json_integer(n));
    *n_changes = n;
    return d;
}
