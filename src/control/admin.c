/* admin: see admin.h. */
#include "admin.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin_http.h"
#include "fault.h"
#include "faultlog.h"
#include "log.h"
#include "metrics.h"
#include "paths.h"
#include "policy.h"
#include "policy_json.h"
#include "kubernetes.h"
#include "runtime.h"
#include "workers.h"
#include "sbuf.h"
#include "transparent.h"

#define ADM_RING_CAP (1u << 20) /* fault lines in flight from the workers */
#define ADM_EVENT_HISTORY 256   /* lines kept for GET /v1/events?follow=0 */
#define ADM_HALT_POLL_MS 500
#define ADM_REASON_MAX 256

/* PUT /v1/policy: the policy is parsed on the thread pool. */
struct adm_work {
    uv_work_t req;
    struct fl_admin_http_req *c; /* NULL once the client went away */
    char *yaml;
    size_t len;
    char name[256];
    int dry_run;
    int rc;
    struct fl_policy *p;
    struct fl_policy_errors errs;
};

static struct {
    uv_loop_t *loop;
    int started, stopped, subscribed;
    char path[PATH_MAX];
    char halt_path[PATH_MAX];
    uv_timer_t halt_timer;
    uv_fs_t halt_req;
    int halt_busy;
    int halt_file_on;
    uv_async_t async;
    uint64_t start_ms;
    char *history[ADM_EVENT_HISTORY];
    unsigned hist_head, hist_n;
} admin;

/* Fault lines cross from worker threads to the main loop through this byte
 * ring (4-byte length + line), so the hot path neither allocates nor waits for
 * the loop; a full ring drops lines and counts them. */
static struct {
    uv_mutex_t mu;
    int open;
    size_t rd, used;
    unsigned long long dropped;
    char buf[ADM_RING_CAP];
} ring;

/* ---- events ---- */

static void history_add(const char *line, size_t len)
{
    char *copy = strndup(line, len);
    if (!copy)
        return;
    unsigned idx = (admin.hist_head + admin.hist_n) % ADM_EVENT_HISTORY;
    if (admin.hist_n == ADM_EVENT_HISTORY) {
        free(admin.history[admin.hist_head]);
        admin.hist_head = (admin.hist_head + 1) % ADM_EVENT_HISTORY;
        idx = (admin.hist_head + admin.hist_n - 1) % ADM_EVENT_HISTORY;
    } else {
        admin.hist_n++;
    }
    admin.history[idx] = copy;
}

/* Sends one line to every event stream and keeps it for GET /v1/events. */
static void broadcast(const char *line, size_t len)
{
    history_add(line, len);
    fl_admin_http_broadcast(line, len);
}

/* Worker threads: queue a fault line for the main loop. */
static void fault_tap(const char *line, size_t len)
{
    uint32_t l = (uint32_t)len;
    uv_mutex_lock(&ring.mu);
    if (!ring.open) {
        uv_mutex_unlock(&ring.mu);
        return;
    }
    if (ring.used + sizeof(l) + len > ADM_RING_CAP) {
        ring.dropped++;
        uv_mutex_unlock(&ring.mu);
        return;
    }
    const char *parts[2] = {(const char *)&l, line};
    size_t lens[2] = {sizeof(l), len};
    for (int i = 0; i < 2; i++) {
        size_t wr = (ring.rd + ring.used) % ADM_RING_CAP;
        size_t first = lens[i] < ADM_RING_CAP - wr ? lens[i] : ADM_RING_CAP - wr;
        memcpy(ring.buf + wr, parts[i], first);
        memcpy(ring.buf, parts[i] + first, lens[i] - first);
        ring.used += lens[i];
    }
    uv_async_send(&admin.async);
    uv_mutex_unlock(&ring.mu);
}

static void ring_read(size_t *rd, void *dst, size_t n)
{
    size_t first = n < ADM_RING_CAP - *rd ? n : ADM_RING_CAP - *rd;
    memcpy(dst, ring.buf + *rd, first);
    memcpy((char *)dst + first, ring.buf, n - first);
    *rd = (*rd + n) % ADM_RING_CAP;
}

static void async_cb(uv_async_t *a)
{
    (void)a;
    char line[8192];
    /* Take lines one at a time so the lock is never held across a broadcast. */
    for (;;) {
        uint32_t l;
        uv_mutex_lock(&ring.mu);
        if (ring.used == 0) {
            uv_mutex_unlock(&ring.mu);
            return;
        }
        ring_read(&ring.rd, &l, sizeof(l));
        size_t keep = l < sizeof(line) ? l : sizeof(line);
        ring_read(&ring.rd, line, keep);
        ring.rd = (ring.rd + (l - keep)) % ADM_RING_CAP;
        ring.used -= sizeof(l) + l;
        uv_mutex_unlock(&ring.mu);
        broadcast(line, keep);
    }
}

static const char *event_name(enum fl_event_kind k)
{
    switch (k) {
    case FL_EVENT_RELOAD:
        return "reload";
    case FL_EVENT_APPLY:
        return "apply";
    case FL_EVENT_ROLLBACK:
        return "rollback";
    case FL_EVENT_EXPIRED:
        return "expired";
    case FL_EVENT_HALT:
        return "halt";
    case FL_EVENT_RESUME:
        return "resume";
    case FL_EVENT_RULE:
        return "rule";
    case FL_EVENT_EXISTING_RESET:
        return "existing_reset";
    }
    return "unknown";
}

/* Main thread (the runtime's event bus): an event becomes one JSON line on
 * the event stream, "ts" and "event" first, then the kind's own fields. */
static void on_event(const struct fl_event *ev, void *arg)
{
    json_t *o = json_pack("{s:s,s:s}", "ts", ev->ts, "event", event_name(ev->kind));
    (void)arg;
    if (!o)
        return;
    switch (ev->kind) {
    case FL_EVENT_RELOAD:
    case FL_EVENT_EXPIRED:
        json_object_set_new(o, "policy", json_string(ev->policy ? ev->policy : ""));
        break;
    case FL_EVENT_APPLY:
        json_object_set_new(o, "policy", json_string(ev->policy ? ev->policy : ""));
        json_object_set_new(o, "file", json_string(ev->file ? ev->file : ""));
        json_object_set_new(o, "generation", json_integer((json_int_t)ev->generation));
        json_object_set_new(o, "changes", json_integer(ev->changes));
        break;
    case FL_EVENT_ROLLBACK:
        json_object_set_new(o, "policy", json_string(ev->policy ? ev->policy : ""));
        json_object_set_new(o, "generation", json_integer((json_int_t)ev->generation));
        break;
    case FL_EVENT_HALT:
        json_object_set_new(o, "reason", json_string(ev->reason ? ev->reason : ""));
        break;
    case FL_EVENT_RESUME:
        break;
    case FL_EVENT_EXISTING_RESET:
        json_object_set_new(o, "target", json_string(ev->target ? ev->target : ""));
        json_object_set_new(o, "pod", json_string(ev->pod ? ev->pod : ""));
        json_object_set_new(o, "connections", json_integer((json_int_t)ev->count));
        break;
    case FL_EVENT_RULE: {
        const struct fl_rule *r = ev->rule;
        json_object_set_new(o, "rule", json_string(r->name));
        if (ev->changed & FL_EVENT_RULE_ENABLED)
            json_object_set_new(o, "enabled", json_boolean(atomic_load(&r->live.enabled)));
        for (enum fl_fault_kind k = FL_FAULT_DELAY; k < FL_FAULT_KINDS; k++)
            if (ev->changed & FL_EVENT_RULE_PERCENT(k))
                json_object_set_new(o, fl_fault_kind_name(k),
                                    json_pack("{s:f}", "percent",
                                              fl_policy_json_percent(fl_policy_rule_ppm(r, k))));
        if (ev->changed & FL_EVENT_RULE_DELAY_FIXED) {
            uint64_t fx = atomic_load(&r->live.delay_fixed_ms);
            json_object_set_new(
                o, "delay_fixed_ms",
                json_integer((json_int_t)(fx == UINT64_MAX ? r->delay.fixed_ms : fx)));
        }
        if (ev->changed & FL_EVENT_RULE_ABORT_STATUS)
            json_object_set_new(o, "abort_status", json_integer(fl_policy_rule_abort_status(r)));
        break;
    }
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    if (!s)
        return;
    broadcast(s, strlen(s));
    free(s);
}

/* ---- HALT file ---- */

static void halt_file_seen(int exists)
{
    char reason[PATH_MAX + 16];
    snprintf(reason, sizeof(reason), "HALT file %s", admin.halt_path);
    if (exists != admin.halt_file_on) {
        admin.halt_file_on = exists;
        /* Resumes only the halt the file caused; a later halt by other means latches. */
        fl_runtime_hold_halt(FL_HALT_FILE, exists, reason, "remove that file to resume");
    }
}

static void halt_stat_cb(uv_fs_t *req)
{
    int exists = req->result == 0;
    uv_fs_req_cleanup(req);
    admin.halt_busy = 0;
    if (!admin.stopped)
        halt_file_seen(exists);
}

static void halt_timer_cb(uv_timer_t *t)
{
    (void)t;
    if (admin.halt_busy)
        return;
    /* stat runs on the thread pool: the loop never waits on the filesystem. */
    if (uv_fs_stat(admin.loop, &admin.halt_req, admin.halt_path, halt_stat_cb) == 0)
        admin.halt_busy = 1;
}

/* ---- endpoints ---- */

/* The policies of the set in force: the file's and each FaultPolicy. */
static json_t *policies_json(const struct fl_policy *p)
{
    json_t *a = json_array();
    if (!p || (!p->parts && !p->n_rules && !p->n_targets && !p->n_listeners))
        return a; /* none: a Kubernetes daemon before any FaultPolicy */
    struct fl_policy *const *parts = p->parts ? p->parts : (struct fl_policy *const *)&p;
    size_t n = p->parts ? p->n_parts : 1;
    for (size_t i = 0; i < n; i++) {
        const struct fl_policy *q = parts[i];
        unsigned long long inj = 0;
        size_t nr = 0;
        uint64_t deadline = 0;
        for (size_t k = 0; k < p->n_rules; k++) {
            const struct fl_rule *r = &p->rules[k];
            if (r->part != q && !(p == q))
                continue;
            nr++;
            deadline = r->deadline_ms;
            for (int f = 0; f < FL_FAULT_KINDS; f++)
                inj += atomic_load(&((struct fl_rule *)r)->live.injected[f]);
        }
        json_t *o = json_pack("{s:s,s:s,s:s?,s:s,s:I,s:I,s:I}", "id", q->id ? q->id : q->name,
                              "name", q->name, "namespace", q->ns, "source",
                              q->ns ? "kubernetes" : "file", "rules", (json_int_t)nr, "targets",
                              (json_int_t)q->n_targets, "faults_injected", (json_int_t)inj);
        if (q->ns) {
            long long left = deadline ? (long long)deadline - (long long)uv_now(admin.loop) : -1;
            json_object_set_new(o, "generation", json_integer((json_int_t)q->generation));
            json_object_set_new(o, "ttl_remaining_s",
                                left < 0 && deadline ? json_real(0)
                                : deadline           ? json_real((double)left / 1000.0)
                                                     : json_null());
        }
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *status_json(void)
{
    struct fl_policy *p = fl_runtime_policy();
    struct fl_runtime_counters rc;
    uint64_t now = uv_now(admin.loop);
    long long ttl = fl_runtime_ttl_remaining_ms();
    unsigned long long injected = 0;
    json_t *o = json_object();

    fl_runtime_counters(&rc);

    json_object_set_new(o, "version", json_string(FL_VERSION));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "uptime_s", json_real((double)(now - admin.start_ms) / 1000.0));
    json_object_set_new(o, "halted", json_boolean(rc.halted));
    if (rc.halted)
        json_object_set_new(o, "halt_reason", json_string(fl_runtime_halt_reason()));
    json_object_set_new(o, "halt_file", json_string(admin.halt_path));
    json_object_set_new(o, "workers", json_integer(rc.workers));
    json_object_set_new(o, "active_connections", json_integer((json_int_t)rc.active_connections));
    json_t *per = json_array(); /* how SO_REUSEPORT and the hand-off spread them */
    for (int i = 0; i < rc.workers; i++)
        json_array_append_new(per, json_integer((json_int_t)rc.worker_connections[i]));
    json_object_set_new(o, "worker_connections", per);
    json_object_set_new(o, "active_faults", json_integer(rc.active_faults));
    json_object_set_new(o, "requests_total", json_integer((json_int_t)rc.requests_total));
    json_object_set_new(o, "faults_overflow_total",
                        json_integer((json_int_t)rc.faults_overflow_total));
    if (p) {
        for (size_t i = 0; i < p->n_rules; i++)
            for (int k = 0; k < FL_FAULT_KINDS; k++)
                injected += atomic_load(&p->rules[i].live.injected[k]);
        json_object_set_new(o, "policy", json_string(p->name));
        json_object_set_new(o, "file", json_string(p->file));
        json_object_set_new(o, "generation", json_integer((json_int_t)fl_runtime_generation()));
        json_object_set_new(o, "rules", json_integer((json_int_t)p->n_rules));
        json_object_set_new(o, "listeners", fl_policy_json_listeners(p));
        json_object_set_new(o, "policies", policies_json(p));
    }
    json_object_set_new(o, "faults_injected_total", json_integer((json_int_t)injected));
    if (ttl >= 0) {
        json_object_set_new(o, "expired", json_boolean(ttl == 0));
        json_object_set_new(o, "ttl_remaining_s", json_real((double)ttl / 1000.0));
    } else {
        json_object_set_new(o, "expired", json_false());
        json_object_set_new(o, "ttl_remaining_s", json_null());
    }
    json_object_set_new(o, "events_dropped", json_integer((json_int_t)ring.dropped));
    struct fl_transparent_stats tp;
    fl_transparent_stats(&tp);
    if (tp.active) {
        json_object_set_new(
            o, "transparent",
            json_pack("{s:b,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:i}", "redirecting", tp.enabled,
                      "sockmap", tp.sockmap, "redirected", (json_int_t)tp.redirected, "accepted",
                      (json_int_t)tp.accepted, "no_orig_dst", (json_int_t)tp.no_orig,
                      "fail_open_no_listener", (json_int_t)tp.no_listener, "sk_msg_redirects",
                      (json_int_t)tp.msg_redirects, "sk_msg_fallbacks",
                      (json_int_t)tp.msg_fallbacks, "fail_open_events",
                      (json_int_t)tp.fail_open_events, "pods", (int)tp.pods, "netns",
                      (int)tp.netns));
        json_t *t = json_object_get(o, "transparent");
        json_object_set_new(t, "ingress_handed_over", json_integer((json_int_t)tp.ingress));
        json_object_set_new(t, "ingress_accepted", json_integer((json_int_t)tp.ingress_accepted));
        json_object_set_new(t, "ingress_fail_open_no_listener",
                            json_integer((json_int_t)tp.ingress_no_listener));
        json_object_set_new(t, "ingress_netns", json_integer((json_int_t)tp.ingress_netns));
        json_object_set_new(t, "existing_reset", json_integer((json_int_t)tp.existing_reset));
        json_object_set_new(t, "sock_destroy", json_boolean(tp.sock_destroy));
    }
    json_t *k = fl_kubernetes_status_json();
    if (k)
        json_object_set_new(o, "kubernetes", k);
    return o;
}

static void get_rules(struct fl_admin_http_req *c)
{
    struct fl_policy *p = fl_runtime_policy();
    json_t *a = json_array();
    char label[512];
    for (size_t i = 0; p && i < p->n_rules; i++) {
        json_t *r = fl_policy_json_rule(&p->rules[i]);
        /* "label": how faultctl names it: POLICY/RULE with several policies. */
        json_object_set_new(r, "label",
                            json_string(fl_policy_rule_label(p, &p->rules[i], label, sizeof(label))));
        json_array_append_new(a, r);
    }
    fl_admin_http_json(c, 200, json_pack("{s:s?,s:o,s:o}", "policy", p ? p->name : NULL,
                                         "policies", policies_json(p), "rules", a));
}

/* A rule by name for the admin API: 404 when none, 409 when the name is
 * ambiguous in the set. NULL when it answered. */
static struct fl_rule *rule_or_answer(struct fl_admin_http_req *c, const char *name)
{
    struct fl_policy *p = fl_runtime_policy();
    int amb = 0;
    struct fl_rule *r = p ? fl_policy_find_rule2(p, name, &amb) : NULL;
    if (r)
        return r;
    if (amb) {
        char which[1024] = "";
        size_t pos = 0;
        const char *slash = strrchr(name, '/');
        const char *rule = slash ? slash + 1 : name;
        char label[512];
        for (size_t i = 0; i < p->n_rules && pos < sizeof(which) - 1; i++)
            if (strcmp(p->rules[i].name, rule) == 0)
                pos += (size_t)snprintf(which + pos, sizeof(which) - pos, "%s%s", pos ? ", " : "",
                                        fl_policy_rule_label(p, &p->rules[i], label,
                                                             sizeof(label)));
        fl_admin_http_error(c, 409,
                            "'%s' names more than one rule (%s); name one as POLICY/RULE", name,
                            which);
        return NULL;
    }
    fl_admin_http_error(c, 404, "no rule named '%s'%s%s%s; 'faultctl rules' lists them", name,
                        p && !p->parts ? " in policy '" : "", p && !p->parts ? p->name : "",
                        p && !p->parts ? "'" : "");
    return NULL;
}

/* Parses a percent (number 0-100, at most 4 decimals like the policy file) or
 * null (back to the file's value). Returns 0 or -EINVAL. */
static int percent_value(json_t *v, uint32_t *ppm)
{
    if (json_is_null(v)) {
        *ppm = UINT32_MAX;
        return 0;
    }
    if (!json_is_number(v))
        return -EINVAL;
    double d = json_number_value(v);
    if (!(d >= 0 && d <= 100))
        return -EINVAL;
    *ppm = (uint32_t)llround(d * 10000.0);
    return 0;
}

/* The fault kinds ("delay, abort, ..."), or those rule r has. */
static const char *kind_list(char *buf, size_t len, const struct fl_rule *r)
{
    size_t pos = 0;
    buf[0] = 0;
    for (int k = 0; k < FL_FAULT_KINDS; k++) {
        if (r && !fl_policy_rule_has_kind(r, (enum fl_fault_kind)k))
            continue;
        int n = snprintf(buf + pos, len - pos, "%s%s", pos ? ", " : "",
                         fl_fault_kind_name((enum fl_fault_kind)k));
        if (n < 0 || (size_t)n >= len - pos)
            break;
        pos += (size_t)n;
    }
    return buf;
}

/* PATCH /v1/rules/NAME: {"enabled": bool, "percent": P|null, "fault": "delay|abort|reset",
 * "delay": {"percent": P}, "abort": {...}, "reset": {...}}. A bare "percent"
 * sets every fault kind the rule has, or the one named by "fault". Everything
 * is validated before anything changes. */
static void patch_rule(struct fl_admin_http_req *c, const char *name)
{
    struct fl_rule *r = rule_or_answer(c, name);
    json_error_t jerr;
    json_t *in, *v;
    const char *key;
    uint32_t set[FL_FAULT_KINDS] = {0};
    int has_set[FL_FAULT_KINDS] = {0}, enabled = -1, only = -1;
    char kinds[160];
    kind_list(kinds, sizeof(kinds), NULL);
    uint64_t new_fixed = UINT64_MAX;
    int new_status = 0, has_fixed = 0, has_status = 0;

    if (!r)
        return;
    size_t blen;
    const char *body = fl_admin_http_body(c, &blen);
    in = json_loadb(body, blen, 0, &jerr);
    if (!json_is_object(in)) {
        fl_admin_http_error(c, 400, "body must be a JSON object: %s",
                            in ? "got another JSON value" : jerr.text);
        json_decref(in);
        return;
    }
    v = json_object_get(in, "fault");
    if (v) {
        for (int k = 0; k < FL_FAULT_KINDS; k++)
            if (json_is_string(v) &&
                strcmp(json_string_value(v), fl_fault_kind_name((enum fl_fault_kind)k)) == 0)
                only = k;
        if (only < 0) {
            fl_admin_http_error(c, 400, "\"fault\" must be one of %s", kinds);
            goto out;
        }
    }
    json_object_foreach(in, key, v)
    {
        if (strcmp(key, "enabled") == 0) {
            if (!json_is_boolean(v)) {
                fl_admin_http_error(c, 400, "\"enabled\" must be true or false");
                goto out;
            }
            enabled = json_is_true(v);
        } else if (strcmp(key, "percent") == 0) {
            uint32_t ppm;
            if (percent_value(v, &ppm) < 0) {
                fl_admin_http_error(c, 400, "\"percent\" must be a number from 0 to 100, or null");
                goto out;
            }
            int any = 0;
            for (int k = 0; k < FL_FAULT_KINDS; k++) {
                if ((only >= 0 && k != only) || !fl_policy_rule_has_kind(r, (enum fl_fault_kind)k))
                    continue;
                set[k] = ppm;
                has_set[k] = any = 1;
            }
            if (!any) {
                fl_admin_http_error(c, 422, "rule '%s' has no %s%sfault to set a percent for",
                                    name,
                                    only >= 0 ? fl_fault_kind_name((enum fl_fault_kind)only) : "",
                                    only >= 0 ? " " : "");
                goto out;
            }
        } else if (strcmp(key, "fault") == 0) {
            continue;
        } else {
            int k;
            for (k = 0; k < FL_FAULT_KINDS &&
                        strcmp(key, fl_fault_kind_name((enum fl_fault_kind)k)) != 0;
                 k++)
                ;
            if (k == FL_FAULT_KINDS) {
                fl_admin_http_error(c, 400, "unknown key \"%s\"; known: enabled, percent, fault, %s",
                                    key, kinds);
                goto out;
            }
            if (!json_is_object(v)) {
                fl_admin_http_error(c, 400, "\"%s\" must be an object such as {\"percent\": 10}",
                                    key);
                goto out;
            }
            if (!fl_policy_rule_has_kind(r, (enum fl_fault_kind)k)) {
                fl_admin_http_error(c, 422, "rule '%s' has no %s fault", name, key);
                goto out;
            }
            const char *fk;
            json_t *fv;
            json_object_foreach(v, fk, fv)
            {
                if (strcmp(fk, "percent") == 0) {
                    if (percent_value(fv, &set[k]) < 0) {
                        fl_admin_http_error(c, 400, "\"%s.percent\" must be 0-100 or null", key);
                        goto out;
                    }
                    has_set[k] = 1;
                } else if (k == 0 && strcmp(fk, "fixed") == 0) {
                    /* "250ms" like the policy file, or null for the file's value */
                    if (json_is_null(fv)) {
                        new_fixed = UINT64_MAX;
                    } else if (!json_is_string(fv) ||
                               fl_values_parse_duration(json_string_value(fv), &new_fixed) < 0) {
                        fl_admin_http_error(c, 400,
                                            "\"delay.fixed\" must be a duration such as "
                                            "\"250ms\", or null for the policy's value");
                        goto out;
                    }
                    has_fixed = 1;
                } else if (k == 1 && strcmp(fk, "status") == 0) {
                    if (json_is_null(fv)) {
                        new_status = 0;
                    } else if (!json_is_integer(fv) || json_integer_value(fv) < 200 ||
                               json_integer_value(fv) > 599) {
                        fl_admin_http_error(c, 400,
                                            "\"abort.status\" must be an HTTP status 200-599, "
                                            "or null for the policy's value");
                        goto out;
                    } else {
                        new_status = (int)json_integer_value(fv);
                    }
                    has_status = 1;
                } else {
                    fl_admin_http_error(c, 400, "unknown key \"%s.%s\"; known: percent%s", key, fk,
                                        k == 0   ? ", fixed"
                                        : k == 1 ? ", status"
                                                 : "");
                    goto out;
                }
            }
        }
    }

    struct fl_event ev = {.kind = FL_EVENT_RULE, .rule = r};
    if (enabled >= 0) {
        atomic_store(&r->live.enabled, enabled);
        ev.changed |= FL_EVENT_RULE_ENABLED;
        if (!enabled)
            fl_workers_recheck(); /* its live connection faults end now */
    }
    for (enum fl_fault_kind k = FL_FAULT_DELAY; k < FL_FAULT_KINDS; k++) {
        if (!has_set[k])
            continue;
        atomic_store(fl_policy_rule_live_ppm(r, k), set[k]);
        ev.changed |= FL_EVENT_RULE_PERCENT(k);
    }
    if (has_fixed) {
        atomic_store(&r->live.delay_fixed_ms, new_fixed);
        ev.changed |= FL_EVENT_RULE_DELAY_FIXED;
    }
    if (has_status) {
        atomic_store(&r->live.abort_status, new_status);
        ev.changed |= FL_EVENT_RULE_ABORT_STATUS;
    }
    fl_info("rule '%s' changed through the admin API", r->name);
    fl_runtime_emit(&ev);
    fl_admin_http_json(c, 200, fl_policy_json_rule(r));
out:
    json_decref(in);
}

static void policy_work_cb(uv_work_t *req)
{
    struct adm_work *w = req->data;
    /* Parsing may resolve host names: off the loop. */
    w->rc = fl_policy_load_buf(w->name, w->yaml, w->len, &w->p, &w->errs);
}

static void policy_after_cb(uv_work_t *req, int status)
{
    struct adm_work *w = req->data;
    struct fl_admin_http_req *c = w->c;
    struct fl_policy *cur = fl_runtime_policy();
    char err[512];
    (void)status;

    if (!c || admin.stopped)
        goto out; /* the client went away, or the daemon is stopping */
    fl_admin_http_watch(c, NULL);
    if (w->rc < 0) {
        json_t *a = json_array();
        for (size_t i = 0; i < w->errs.n; i++)
            json_array_append_new(a, json_string(w->errs.msgs[i]));
        if (w->errs.n == 0)
            json_array_append_new(a, json_pack("s+", w->name, ": cannot be loaded"));
        fl_admin_http_json(
            c, 422,
            json_pack("{s:s,s:o}", "error",
                      "invalid policy; nothing changed, the running policy stays in force",
                      "errors", a));
        goto out;
    }
    if (fl_runtime_check(w->p, err, sizeof(err)) < 0) {
        fl_admin_http_json(c, 422, json_pack("{s:s,s:[s]}", "error", err, "errors", err));
        goto out;
    }
    int n_changes = 0;
    unsigned long long prev = fl_runtime_generation();
    json_t *diff = cur ? fl_policy_json_diff(cur, w->p, &n_changes) : json_object();
    if (w->dry_run) {
        fl_admin_http_json(
            c, 200, json_pack("{s:b,s:s,s:o}", "dry_run", 1, "policy", w->p->name, "diff", diff));
        goto out;
    }
    fl_runtime_carry_counters(w->p);
    if (fl_runtime_apply(w->p, err, sizeof(err)) < 0) {
        json_decref(diff);
        fl_admin_http_json(c, 409, json_pack("{s:s,s:[s]}", "error", err, "errors", err));
        goto out;
    }
    unsigned long long gen = fl_runtime_generation();
    fl_info("applied policy '%s' from %s through the admin API (%d change%s)", w->p->name, w->name,
            n_changes, n_changes == 1 ? "" : "s");
    struct fl_event ev = {.kind = FL_EVENT_APPLY,
                          .policy = w->p->name,
                          .file = w->name,
                          .generation = gen,
                          .changes = n_changes};
    fl_runtime_emit(&ev);
    fl_admin_http_json(c, 200,
                       json_pack("{s:b,s:s,s:I,s:I,s:o}", "applied", 1, "policy", w->p->name,
                                 "generation", (json_int_t)gen, "previous_generation",
                                 (json_int_t)prev, "diff", diff));
out:
    fl_policy_unref(w->p);
    fl_policy_errors_free(&w->errs);
    free(w->yaml);
    free(w);
}

static void put_policy(struct fl_admin_http_req *c, int dry_run)
{
    struct adm_work *w = calloc(1, sizeof(*w));
    if (!w) {
        fl_admin_http_error(c, 500, "out of memory");
        return;
    }
    w->c = c;
    w->dry_run = dry_run;
    w->yaml = fl_admin_http_take_body(c, &w->len);
    snprintf(w->name, sizeof(w->name), "%s",
             *fl_admin_http_file(c) ? fl_admin_http_file(c) : "<admin>");
    w->req.data = w;
    if (!w->yaml || uv_queue_work(admin.loop, &w->req, policy_work_cb, policy_after_cb) < 0) {
        free(w->yaml);
        free(w);
        fl_admin_http_error(c, 500, "cannot queue the policy for parsing");
        return;
    }
    fl_admin_http_watch(c, &w->c);
}

static void get_policy(struct fl_admin_http_req *c)
{
    struct fl_policy *p = fl_runtime_policy();
    unsigned long long gen = fl_runtime_generation();
    int n;
    const struct fl_runtime_snapshot *snaps = fl_runtime_history(&n);
    json_t *h = json_array();
    for (int i = n - 1; i >= 0; i--)
        json_array_append_new(h, json_pack("{s:I,s:s,s:s}", "generation", (json_int_t)snaps[i].gen,
                                           "policy", snaps[i].p->name, "file", snaps[i].p->file));
    fl_admin_http_json(c, 200,
                       json_pack("{s:s?,s:s?,s:I,s:o}", "policy", p ? p->name : NULL, "file",
                                 p ? p->file : NULL, "generation", (json_int_t)gen, "history", h));
}

/* POST /v1/policy/rollback {"generation": G}: re-applies a held snapshot
 * (with the live changes it had), e.g. the one in force before an experiment. */
static void rollback_policy(struct fl_admin_http_req *c)
{
    size_t blen;
    const char *body = fl_admin_http_body(c, &blen);
    json_t *in = json_loadb(body, blen, 0, NULL);
    json_t *g = json_object_get(in, "generation");
    char err[512];
    unsigned long long prev = fl_runtime_generation();

    if (!json_is_integer(g)) {
        json_decref(in);
        fl_admin_http_error(c, 400, "body must be {\"generation\": N} (see GET /v1/policy)");
        return;
    }
    unsigned long long gen = (unsigned long long)json_integer_value(g);
    json_decref(in);
    struct fl_policy *p = fl_runtime_snapshot(gen);
    if (!p) {
        fl_admin_http_error(
            c, 404,
            "policy generation %llu is no longer held (the daemon keeps the last %d); "
            "apply the policy file again with 'faultctl apply -f FILE'",
            gen, FL_RUNTIME_HISTORY);
        return;
    }
    if (gen != prev) {
        fl_runtime_carry_counters(p);
        if (fl_runtime_apply(p, err, sizeof(err)) < 0) {
            fl_admin_http_error(c, 409, "%s", err);
            return;
        }
        fl_info("rolled back to policy '%s' (generation %llu) through the admin API", p->name, gen);
        struct fl_event ev = {.kind = FL_EVENT_ROLLBACK, .policy = p->name, .generation = gen};
        fl_runtime_emit(&ev);
    }
    fl_admin_http_json(c, 200,
                       json_pack("{s:b,s:s,s:I,s:I}", "applied", 1, "policy", p->name, "generation",
                                 (json_int_t)gen, "previous_generation", (json_int_t)prev));
}

static void post_halt(struct fl_admin_http_req *c)
{
    char reason[ADM_REASON_MAX + 1] = "faultctl halt";
    size_t blen;
    const char *body = fl_admin_http_body(c, &blen);
    if (blen) {
        json_t *in = json_loadb(body, blen, 0, NULL);
        json_t *r = json_object_get(in, "reason");
        if (!json_is_object(in) || (r && !json_is_string(r))) {
            json_decref(in);
            fl_admin_http_error(c, 400, "body must be {\"reason\": \"TEXT\"} or empty");
            return;
        }
        if (r && json_string_length(r))
            snprintf(reason, sizeof(reason), "%s", json_string_value(r));
        json_decref(in);
    }
    fl_runtime_halt(reason);
    json_t *o = status_json();
    fl_admin_http_json(c, 200, o);
}

static void delete_halt(struct fl_admin_http_req *c)
{
    char err[512];
    if (fl_runtime_resume(err, sizeof(err)) < 0) {
        fl_admin_http_error(c, 409, "%s", err);
        return;
    }
    fl_admin_http_json(c, 200, status_json());
}

static void get_events(struct fl_admin_http_req *c, int follow)
{
    struct fl_sbuf b = {0};
    if (!follow) {
        for (unsigned i = 0; i < admin.hist_n; i++) {
            const char *l = admin.history[(admin.hist_head + i) % ADM_EVENT_HISTORY];
            fl_sbuf_add(&b, l, strlen(l));
            fl_sbuf_add(&b, "\n", 1);
        }
        fl_admin_http_respond(c, b.oom ? 500 : 200, "application/x-ndjson", NULL, b.p ? b.p : "",
                              b.len);
        fl_sbuf_free(&b);
        return;
    }
    fl_admin_http_stream(c);
}

static void get_metrics(struct fl_admin_http_req *c)
{
    struct fl_sbuf b;
    fl_metrics_render(&b);
    if (b.oom)
        fl_admin_http_error(c, 500, "out of memory");
    else
        fl_admin_http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.p, b.len);
    fl_sbuf_free(&b);
}

/* Decodes %XX in place; returns -1 on a malformed escape. */
static int url_decode(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '%') {
            unsigned v;
            if (!s[1] || !s[2] || sscanf(s + 1, "%2x", &v) != 1 || v == 0)
                return -1;
            *o++ = (char)v;
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return 0;
}

/* Returns 1 if the query string q has name=1|true|yes, 0 if name=0|false|no,
 * dflt when absent. */
static int query_flag(const char *q, const char *name, int dflt)
{
    size_t n = strlen(name);
    while (q && *q) {
        if (strncmp(q, name, n) == 0 && (q[n] == '=' || q[n] == '&' || !q[n])) {
            const char *v = q[n] == '=' ? q + n + 1 : "1";
            return !(strncmp(v, "0", 1) == 0 || strncmp(v, "false", 5) == 0 ||
                     strncmp(v, "no", 2) == 0);
        }
        q = strchr(q, '&');
        if (q)
            q++;
    }
    return dflt;
}

static void method_not_allowed(struct fl_admin_http_req *c, const char *allow)
{
    char extra[128];
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    static const char body[] = "{\"error\":\"method not allowed\"}\n";
    fl_admin_http_respond(c, 405, "application/json", extra, body, sizeof(body) - 1);
}

/* The admin_http handler: one complete request, by endpoint. */
/* Probes for a DaemonSet, on the admin socket and the metrics port. The
 * admin API runs on the main loop, which is also the proxy's first loop and
 * the one that accepts transparent connections: an answer at all is its
 * heartbeat. /healthz (liveness) is 200 whenever it answers; its body says
 * how the API watch fares, which never fails liveness (a node cut off from
 * the API server must keep running). /readyz (readiness) is 503 until the
 * watch has listed the pods, and while it is failing. */
static void get_health(struct fl_admin_http_req *c, int ready)
{
    struct fl_transparent_stats tp;
    fl_transparent_stats(&tp);
    json_t *k = fl_kubernetes_status_json();
    json_t *kerr = k ? json_object_get(k, "error") : NULL;
    int synced = !k || json_is_true(json_object_get(k, "pods_synced"));
    int failing = kerr && !json_is_null(kerr);
    int ok = !ready || (synced && !failing);
    json_t *o = json_pack("{s:s,s:b}", "status", ok ? "ok" : "unavailable", "loop", 1);
    if (tp.active)
        json_object_set_new(o, "redirecting", json_boolean(tp.enabled));
    if (k) {
        json_object_set_new(o, "kubernetes", json_pack("{s:b,s:O}", "pods_synced", synced, "error",
                                                       kerr ? kerr : json_null()));
        json_decref(k);
    }
    fl_admin_http_json(c, ok ? 200 : 503, o);
}

static void dispatch(struct fl_admin_http_req *c)
{
    const char *m = fl_admin_http_method(c);
    const char *q = fl_admin_http_query(c);
    const char *path = fl_admin_http_path(c);
    int get = strcmp(m, "GET") == 0;

    if (strcmp(path, "/metrics") == 0) {
        if (!get)
            method_not_allowed(c, "GET");
        else
            get_metrics(c);
        return;
    }
    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        if (!get)
            method_not_allowed(c, "GET");
        else
            get_health(c, path[1] == 'r');
        return;
    }
    /* The metrics port also serves the read-only views `kubectl faultline`
     * gathers from every node: status and the event stream. */
    if (fl_admin_http_metrics_only(c) &&
        !(get && (strcmp(path, "/v1/status") == 0 || strcmp(path, "/v1/events") == 0))) {
        fl_admin_http_error(c, 404, "only /metrics, /healthz, /readyz and GET /v1/status, "
                                    "/v1/events are served on this port; the rest is on the "
                                    "admin socket");
        return;
    }
    if (strcmp(path, "/v1/status") == 0) {
        if (!get)
            method_not_allowed(c, "GET");
        else
            fl_admin_http_json(c, 200, status_json());
    } else if (strcmp(path, "/v1/rules") == 0) {
        if (!get)
            method_not_allowed(c, "GET");
        else
            get_rules(c);
    } else if (strncmp(path, "/v1/rules/", 10) == 0) {
        char name[FL_ADMIN_HTTP_MAX_URL];
        snprintf(name, sizeof(name), "%s", path + 10);
        if (url_decode(name) < 0 || !*name) {
            fl_admin_http_error(c, 400, "bad rule name in the path");
        } else if (strcmp(m, "PATCH") == 0) {
            patch_rule(c, name);
        } else if (get) {
            struct fl_rule *r = rule_or_answer(c, name);
            if (r)
                fl_admin_http_json(c, 200, fl_policy_json_rule(r));
        } else {
            method_not_allowed(c, "GET, PATCH");
        }
    } else if (strcmp(path, "/v1/policy") == 0) {
        if (strcmp(m, "PUT") == 0)
            put_policy(c, query_flag(q, "dry_run", 0));
        else if (get)
            get_policy(c);
        else
            method_not_allowed(c, "GET, PUT");
    } else if (strcmp(path, "/v1/policy/rollback") == 0) {
        if (strcmp(m, "POST") == 0)
            rollback_policy(c);
        else
            method_not_allowed(c, "POST");
    } else if (strcmp(path, "/v1/halt") == 0) {
        if (strcmp(m, "POST") == 0)
            post_halt(c);
        else if (strcmp(m, "DELETE") == 0)
            delete_halt(c);
        else
            method_not_allowed(c, "POST, DELETE");
    } else if (strcmp(path, "/v1/events") == 0) {
        if (!get)
            method_not_allowed(c, "GET");
        else
            get_events(c, query_flag(q, "follow", 1));
    } else {
        fl_admin_http_error(
            c, 404,
            "no such endpoint %s %s; the endpoints are GET /v1/status, /v1/rules, "
            "/v1/rules/NAME, /v1/policy, /v1/events, /metrics; PATCH /v1/rules/NAME; "
            "PUT /v1/policy; POST /v1/policy/rollback; POST and DELETE /v1/halt "
            "(docs/reference.md, 'Admin API')",
            m, path);
    }
}

int fl_admin_start(uv_loop_t *loop, const char *path, const char *metrics_listen, char *err,
                   size_t errlen)
{
    struct stat st;
    int e;

    memset(&admin, 0, sizeof(admin));
    admin.loop = loop;
    admin.start_ms = uv_now(loop);
    if (path)
        snprintf(admin.path, sizeof(admin.path), "%s", path);
    else if (fl_paths_admin_socket(admin.path, sizeof(admin.path)) < 0) {
        snprintf(err, errlen, "the default admin socket path is too long; use --admin PATH");
        return -ENAMETOOLONG;
    }
    snprintf(admin.halt_path, sizeof(admin.halt_path), "%s", admin.path);
    char *slash = strrchr(admin.halt_path, '/');
    snprintf(slash ? slash + 1 : admin.halt_path,
             sizeof(admin.halt_path) - (size_t)(slash ? slash + 1 - admin.halt_path : 0), "HALT");

    admin.started = 1;
    uv_timer_init(loop, &admin.halt_timer);
    uv_async_init(loop, &admin.async, async_cb);
    if ((e = fl_admin_http_start(loop, admin.path, metrics_listen, dispatch, err, errlen)) < 0)
        goto fail;
    if ((e = fl_runtime_subscribe(on_event, NULL)) < 0) {
        snprintf(err, errlen, "cannot subscribe to the daemon's events");
        goto fail;
    }
    admin.subscribed = 1;

    uv_mutex_init(&ring.mu);
    uv_mutex_lock(&ring.mu);
    ring.open = 1;
    ring.rd = ring.used = 0;
    uv_mutex_unlock(&ring.mu);
    fl_faultlog_tap = fault_tap;

    /* A HALT file present at startup halts before the first request. */
    if (stat(admin.halt_path, &st) == 0)
        halt_file_seen(1);
    uv_timer_start(&admin.halt_timer, halt_timer_cb, ADM_HALT_POLL_MS, ADM_HALT_POLL_MS);
    fl_info("admin API on %s (HALT file: %s)%s%s", admin.path, admin.halt_path,
            metrics_listen ? ", metrics on " : "", metrics_listen ? metrics_listen : "");
    return 0;
fail:
    fl_admin_stop();
    return e;
}

void fl_admin_stop(void)
{
    if (!admin.started || admin.stopped)
        return;
    admin.stopped = 1;
    if (ring.open) {
        uv_mutex_lock(&ring.mu);
        ring.open = 0; /* workers may still log; their lines now stop here */
        uv_mutex_unlock(&ring.mu);
    }
    if (admin.subscribed)
        fl_runtime_unsubscribe(on_event, NULL);
    admin.subscribed = 0;
    fl_admin_http_stop();
    uv_close((uv_handle_t *)&admin.halt_timer, NULL);
    uv_close((uv_handle_t *)&admin.async, NULL);
    for (unsigned i = 0; i < admin.hist_n; i++)
        free(admin.history[(admin.hist_head + i) % ADM_EVENT_HISTORY]);
    admin.hist_n = 0;
}
