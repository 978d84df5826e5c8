#include "admin.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <llhttp.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "daemon.h"
#include "transparent.h"
#include "fault.h"
#include "faultlog.h"
#include "log.h"
#include "policy.h"

#define ADM_MAX_CLIENTS 64
#define ADM_MAX_URL 2048
#define ADM_MAX_HDR_BYTES (32 * 1024)
#define ADM_MAX_BODY (1u << 20)      /* a policy file larger than 1 MiB is refused (413) */
#define ADM_REQ_TIMEOUT_MS 10000     /* a request must arrive whole within this */
#define ADM_SUB_QUEUE_CAP (1u << 20) /* bytes queued to one event subscriber before drops */
#define ADM_RING_CAP (1u << 20)      /* fault lines in flight from the workers */
#define ADM_EVENT_HISTORY 256        /* lines kept for GET /v1/events?follow=0 */
#define ADM_HALT_POLL_MS 500
#define ADM_REASON_MAX 256

struct adm_work;

/* One admin connection. The union's stream is the first member so a handle
 * pointer and the client pointer coincide; freed after both handles closed. */
struct adm_client {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } u;
    uv_timer_t timer;
    struct adm_client *prev, *next;
    llhttp_t parser;
    char url[ADM_MAX_URL];
    size_t url_len;
    char field[32]; /* current header name, truncated; only X-Faultline-File matters */
    size_t field_len;
    char file[256]; /* X-Faultline-File: the name policy errors are reported against */
    size_t file_len;
    size_t hdr_bytes;
    char *body;
    size_t body_len, body_cap;
    struct adm_work *work;      /* PUT /v1/policy parsing on the thread pool */
    unsigned long long dropped; /* event lines this subscriber was too slow for */
    int reject; /* 403 or 503: answered once the request is read, so the peer sees it */
    int pending_closes;
    unsigned metrics_only : 1;
    unsigned complete : 1;
    unsigned url_overflow : 1;
    unsigned body_overflow : 1;
    unsigned streaming : 1;
    unsigned closing : 1;
};

struct adm_work {
    uv_work_t req;
    struct adm_client *c; /* NULL once the client went away */
    char *yaml;
    size_t len;
    char name[256];
    int dry_run;
    int rc;
    struct fl_policy *p;
    struct fl_policy_errors errs;
};

struct adm_snapshot {
    struct fl_policy *p; /* reference */
    unsigned long long gen;
};

static struct {
    uv_loop_t *loop;
    int started, stopped;
    char path[PATH_MAX];
    char halt_path[PATH_MAX];
    uv_pipe_t pipe;
    uv_tcp_t mtcp[2];
    int n_mtcp;
    uv_timer_t halt_timer;
    uv_fs_t halt_req;
    int halt_busy;
    int halt_file_on;
    char halt_reason[PATH_MAX + 16]; /* of the halt in force, from its event */
    int pipe_open;
    uv_async_t async;
    struct adm_client *clients;
    unsigned n_clients;
    uint64_t start_ms;
    struct adm_snapshot snaps[FL_ADMIN_HISTORY];
    int n_snaps;
    unsigned long long gen_counter;
    char *history[ADM_EVENT_HISTORY];
    unsigned hist_head, hist_n;
} A;

/* Fault lines cross from worker threads to the main loop through this byte
 * ring (4-byte length + line), so the hot path neither allocates nor waits for
 * the loop; a full ring drops lines and counts them. */
static struct {
    uv_mutex_t mu;
    int open;
    size_t rd, used;
    unsigned long long dropped;
    char buf[ADM_RING_CAP];
} Q;

/* ---- small helpers ---- */

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 4096;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(tmp))
        n = sizeof(tmp) - 1;
    sb_add(b, tmp, (size_t)n);
}

static double ppm_percent(uint32_t ppm)
{
    return ppm / 10000.0;
}

static uint32_t effective_ppm(uint32_t file_ppm, atomic_uint *live)
{
    unsigned v = atomic_load_explicit(live, memory_order_relaxed);
    return v == UINT32_MAX ? file_ppm : v;
}

/* ---- policy snapshots and generations ---- */

/* Returns the generation of the policy in force, recording it if the daemon
 * switched policies since we last looked (SIGHUP reloads happen behind our
 * back). Keeps references to the last FL_ADMIN_HISTORY snapshots so a
 * rollback can re-apply one. */
static unsigned long long current_generation(void)
{
    struct fl_policy *cur = fl_daemon_policy();
    if (!cur)
        return 0;
    for (int i = 0; i < A.n_snaps; i++)
        if (A.snaps[i].p == cur)
            return A.snaps[i].gen;
    if (A.n_snaps == FL_ADMIN_HISTORY) {
        fl_policy_unref(A.snaps[0].p);
        memmove(&A.snaps[0], &A.snaps[1], sizeof(A.snaps[0]) * (FL_ADMIN_HISTORY - 1));
        A.n_snaps--;
    }
    A.snaps[A.n_snaps].p = fl_policy_ref(cur);
    A.snaps[A.n_snaps].gen = ++A.gen_counter;
    return A.snaps[A.n_snaps++].gen;
}

static struct fl_policy *snapshot_by_gen(unsigned long long gen)
{
    for (int i = 0; i < A.n_snaps; i++)
        if (A.snaps[i].gen == gen)
            return A.snaps[i].p;
    return NULL;
}

/* Counters follow rule names across policy changes so the Prometheus series
 * faultline_faults_injected_total{rule=...} stays monotonic. The fields are
 * atomics, so storing into a snapshot some worker may still read is safe. */
static void carry_counters(struct fl_policy *to, const struct fl_policy *from)
{
    if (!from || to == from)
        return;
    for (size_t i = 0; i < to->n_rules; i++) {
        struct fl_rule *r = &to->rules[i];
        struct fl_rule *o = fl_policy_find_rule(from, r->name);
        if (!o)
            continue;
        atomic_store(&r->live.matched, atomic_load(&o->live.matched));
        for (int k = 0; k < 3; k++)
            atomic_store(&r->live.injected[k], atomic_load(&o->live.injected[k]));
    }
}

/* ---- JSON views of the policy ---- */

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
                json_array_append_new(a, json_string(fl_method_name((enum fl_method)i)));
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
    if (r->delay.enabled)
        json_object_set_new(f, "delay",
                            json_pack("{s:I,s:I,s:f}", "fixed_ms", (json_int_t)r->delay.fixed_ms,
                                      "jitter_ms", (json_int_t)r->delay.jitter_ms, "percent",
                                      ppm_percent(r->delay.ppm)));
    if (r->abort.enabled) {
        json_t *a = json_pack("{s:f}", "percent", ppm_percent(r->abort.ppm));
        if (r->abort.status)
            json_object_set_new(a, "status", json_integer(r->abort.status));
        if (r->abort.grpc_status >= 0)
            json_object_set_new(a, "grpc_status",
                                json_string(fl_grpc_status_name(r->abort.grpc_status)));
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
        json_object_set_new(f, "reset", json_pack("{s:f}", "percent", ppm_percent(r->reset.ppm)));
    json_object_set_new(o, "fault", f);
    return o;
}

static const char *const kind_names[3] = {"delay", "abort", "reset"};

static int rule_has_kind(const struct fl_rule *r, int k)
{
    return k == FL_FAULT_DELAY   ? r->delay.enabled
           : k == FL_FAULT_ABORT ? r->abort.enabled
                                 : r->reset.enabled;
}

static uint32_t rule_file_ppm(const struct fl_rule *r, int k)
{
    return k == FL_FAULT_DELAY ? r->delay.ppm : k == FL_FAULT_ABORT ? r->abort.ppm : r->reset.ppm;
}

static atomic_uint *rule_live_ppm(struct fl_rule *r, int k)
{
    return k == FL_FAULT_DELAY   ? &r->live.delay_ppm
           : k == FL_FAULT_ABORT ? &r->live.abort_ppm
                                 : &r->live.reset_ppm;
}

/* The rule with its live state: enabled, effective percents, counters. */
static json_t *rule_json(struct fl_rule *r)
{
    json_t *o = rule_spec_json(r);
    json_t *f = json_object_get(o, "fault"), *inj = json_object();
    json_object_set_new(o, "enabled", json_boolean(atomic_load(&r->live.enabled)));
    for (int k = 0; k < 3; k++) {
        json_object_set_new(inj, kind_names[k],
                            json_integer((json_int_t)atomic_load(&r->live.injected[k])));
        json_t *fk = json_object_get(f, kind_names[k]);
        if (!fk)
            continue;
        unsigned v = atomic_load(rule_live_ppm(r, k));
        json_object_set_new(fk, "percent_file", json_real(ppm_percent(rule_file_ppm(r, k))));
        json_object_set_new(
            fk, "percent",
            json_real(ppm_percent(effective_ppm(rule_file_ppm(r, k), rule_live_ppm(r, k)))));
        /* overridden: anything of this fault changed live; the others say what */
        int over = v != UINT32_MAX;
        json_object_set_new(fk, "percent_overridden", json_boolean(over));
        if (k == 0) {
            uint64_t fx = atomic_load(&r->live.delay_fixed_ms);
            if (fx != UINT64_MAX) {
                json_object_set_new(fk, "fixed_ms", json_integer((json_int_t)fx));
                over = 1;
            }
            json_object_set_new(fk, "fixed_overridden", json_boolean(fx != UINT64_MAX));
        } else if (k == 1) {
            int st = atomic_load(&r->live.abort_status) != 0;
            if (st) {
                json_object_set_new(fk, "status", json_integer(fl_rule_abort_status(r)));
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

static json_t *listeners_json(const struct fl_policy *p)
{
    json_t *a = json_array();
    for (size_t i = 0; i < p->n_listeners; i++)
        json_array_append_new(a, json_pack("{s:s,s:s,s:s}", "name", p->listeners[i].name, "listen",
                                           p->listeners[i].listen, "upstream",
                                           p->listeners[i].upstream));
    return a;
}

/* What applying b in place of a changes: policy name, settings, listeners and
 * rules (added, removed, changed with the parts that changed, reordered). */
static json_t *policy_diff(const struct fl_policy *a, const struct fl_policy *b, int *n_changes)
{
    json_t *d = json_object(), *settings = json_object();
    json_t *la = json_array(), *lr = json_array(), *lc = json_array();
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
#undef SETTING
    /* seed: null when the policy has none (random), else the number */
    if (a->has_seed != b->has_seed || (a->has_seed && a->seed != b->seed)) {
        json_object_set_new(settings, "seed",
                            json_pack("{s:o,s:o}", "from",
                                      a->has_seed ? json_integer((json_int_t)a->seed) : json_null(),
                                      "to",
                                      b->has_seed ? json_integer((json_int_t)b->seed) : json_null()));
        n++;
    }
    json_object_set_new(d, "settings", settings);

    for (size_t i = 0; i < b->n_listeners; i++) {
        const struct fl_listener_spec *lb = &b->listeners[i], *old = NULL;
        for (size_t j = 0; j < a->n_listeners && !old; j++)
            if (strcmp(a->listeners[j].name, lb->name) == 0)
                old = &a->listeners[j];
        if (!old)
            json_array_append_new(la, json_string(lb->name));
        else if (strcmp(old->listen, lb->listen) || strcmp(old->upstream, lb->upstream))
            json_array_append_new(lc, json_string(lb->name));
    }
    for (size_t j = 0; j < a->n_listeners; j++) {
        int found = 0;
        for (size_t i = 0; i < b->n_listeners && !found; i++)
            found = strcmp(a->listeners[j].name, b->listeners[i].name) == 0;
        if (!found)
            json_array_append_new(lr, json_string(a->listeners[j].name));
    }
    n += (int)(json_array_size(la) + json_array_size(lr) + json_array_size(lc));
    json_object_set_new(d, "listeners",
                        json_pack("{s:o,s:o,s:o}", "added", la, "removed", lr, "changed", lc));

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
        static const char *const keys[] = {"on", "match", "fault"};
        for (size_t k = 0; k < 3; k++) {
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

/* ---- events ---- */

static void client_write(struct adm_client *c, char *buf, size_t len, int close_after);
static void client_close(struct adm_client *c);

static void history_add(const char *line, size_t len)
{
    char *copy = strndup(line, len);
    if (!copy)
        return;
    unsigned idx = (A.hist_head + A.hist_n) % ADM_EVENT_HISTORY;
    if (A.hist_n == ADM_EVENT_HISTORY) {
        free(A.history[A.hist_head]);
        A.hist_head = (A.hist_head + 1) % ADM_EVENT_HISTORY;
        idx = (A.hist_head + A.hist_n - 1) % ADM_EVENT_HISTORY;
    } else {
        A.hist_n++;
    }
    A.history[idx] = copy;
}

/* Sends one line to every subscriber as an HTTP chunk. A subscriber that is
 * more than ADM_SUB_QUEUE_CAP behind loses lines rather than growing memory. */
static void broadcast(const char *line, size_t len)
{
    history_add(line, len);
    for (struct adm_client *c = A.clients; c; c = c->next) {
        if (!c->streaming || c->closing)
            continue;
        if (uv_stream_get_write_queue_size(&c->u.s) > ADM_SUB_QUEUE_CAP) {
            c->dropped++;
            continue;
        }
        char *buf = malloc(len + 32);
        if (!buf) {
            c->dropped++;
            continue;
        }
        int n = sprintf(buf, "%zx\r\n", len + 1);
        memcpy(buf + n, line, len);
        memcpy(buf + n + len, "\n\r\n", 3);
        client_write(c, buf, (size_t)n + len + 3, 0);
    }
}

/* Worker threads: queue a fault line for the main loop. */
static void fault_tap(const char *line, size_t len)
{
    uint32_t l = (uint32_t)len;
    uv_mutex_lock(&Q.mu);
    if (!Q.open) {
        uv_mutex_unlock(&Q.mu);
        return;
    }
    if (Q.used + sizeof(l) + len > ADM_RING_CAP) {
        Q.dropped++;
        uv_mutex_unlock(&Q.mu);
        return;
    }
    const char *parts[2] = {(const char *)&l, line};
    size_t lens[2] = {sizeof(l), len};
    for (int i = 0; i < 2; i++) {
        size_t wr = (Q.rd + Q.used) % ADM_RING_CAP;
        size_t first = lens[i] < ADM_RING_CAP - wr ? lens[i] : ADM_RING_CAP - wr;
        memcpy(Q.buf + wr, parts[i], first);
        memcpy(Q.buf, parts[i] + first, lens[i] - first);
        Q.used += lens[i];
    }
    uv_async_send(&A.async);
    uv_mutex_unlock(&Q.mu);
}

static void ring_read(size_t *rd, void *dst, size_t n)
{
    size_t first = n < ADM_RING_CAP - *rd ? n : ADM_RING_CAP - *rd;
    memcpy(dst, Q.buf + *rd, first);
    memcpy((char *)dst + first, Q.buf, n - first);
    *rd = (*rd + n) % ADM_RING_CAP;
}

static void async_cb(uv_async_t *a)
{
    (void)a;
    char line[8192];
    /* Take lines one at a time so the lock is never held across a broadcast. */
    for (;;) {
        uint32_t l;
        uv_mutex_lock(&Q.mu);
        if (Q.used == 0) {
            uv_mutex_unlock(&Q.mu);
            return;
        }
        ring_read(&Q.rd, &l, sizeof(l));
        size_t keep = l < sizeof(line) ? l : sizeof(line);
        ring_read(&Q.rd, line, keep);
        Q.rd = (Q.rd + (l - keep)) % ADM_RING_CAP;
        Q.used -= sizeof(l) + l;
        uv_mutex_unlock(&Q.mu);
        broadcast(line, keep);
    }
}

/* Main thread (fl_daemon_event): daemon events such as halt, reload, expiry. */
static void daemon_tap(const char *json, size_t len)
{
    json_t *o = json_loadb(json, len, 0, NULL);
    const char *ev = o ? json_string_value(json_object_get(o, "event")) : NULL;
    if (ev && strcmp(ev, "halt") == 0) {
        const char *r = json_string_value(json_object_get(o, "reason"));
        snprintf(A.halt_reason, sizeof(A.halt_reason), "%s", r ? r : "");
    } else if (ev && strcmp(ev, "reload") == 0) {
        current_generation();
    }
    json_decref(o);
    broadcast(json, len);
}

/* Emits an admin event; o's members become the event's fields. Steals o. */
static void emit_event(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return;
    size_t n = strlen(s);
    if (n >= 2) {
        s[n - 1] = '\0';
        fl_daemon_event("%s", s + 1); /* without the braces: the daemon adds "ts" */
    }
    free(s);
}

/* ---- HALT file ---- */

static void halt_file_seen(int exists)
{
    char reason[PATH_MAX + 16];
    snprintf(reason, sizeof(reason), "HALT file %s", A.halt_path);
    if (exists && !A.halt_file_on) {
        A.halt_file_on = 1;
        fl_daemon_halt(reason);
    } else if (!exists && A.halt_file_on) {
        A.halt_file_on = 0;
        /* Resume only the halt the file caused; a later halt by other means latches. */
        if (atomic_load(&fl_global.halted) && strcmp(A.halt_reason, reason) == 0)
            fl_daemon_resume();
    }
}

static void halt_stat_cb(uv_fs_t *req)
{
    int exists = req->result == 0;
    uv_fs_req_cleanup(req);
    A.halt_busy = 0;
    if (!A.stopped)
        halt_file_seen(exists);
}

static void halt_timer_cb(uv_timer_t *t)
{
    (void)t;
    if (A.halt_busy)
        return;
    /* stat runs on the thread pool: the loop never waits on the filesystem. */
    if (uv_fs_stat(A.loop, &A.halt_req, A.halt_path, halt_stat_cb) == 0)
        A.halt_busy = 1;
}

/* ---- clients: I/O ---- */

struct adm_wreq {
    uv_write_t req;
    char *buf;
    int close_after;
};

static void on_client_closed(uv_handle_t *h)
{
    struct adm_client *c = h->data;
    if (--c->pending_closes > 0)
        return;
    free(c->body);
    free(c);
}

static void client_close(struct adm_client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->work)
        c->work->c = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        A.clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    A.n_clients--;
    c->pending_closes = 2;
    uv_close(&c->u.h, on_client_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void write_cb(uv_write_t *req, int status)
{
    struct adm_wreq *w = (struct adm_wreq *)req;
    struct adm_client *c = req->handle->data;
    free(w->buf);
    if ((status < 0 || w->close_after) && !c->closing)
        client_close(c);
    free(w);
}

/* Queues buf (malloc'd; ownership passes here) toward c. */
static void client_write(struct adm_client *c, char *buf, size_t len, int close_after)
{
    struct adm_wreq *w = malloc(sizeof(*w));
    if (!w || c->closing) {
        free(w);
        free(buf);
        if (!c->closing)
            client_close(c);
        return;
    }
    w->buf = buf;
    w->close_after = close_after;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&w->req, &c->u.s, &b, 1, write_cb) < 0) {
        free(buf);
        free(w);
        client_close(c);
    }
}

static const char *status_text(int s)
{
    switch (s) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 422:
        return "Unprocessable Entity";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

/* Sends a whole response and closes the connection after it (one request per
 * connection keeps the server simple; faultctl and curl are fine with it). */
static void respond(struct adm_client *c, int status, const char *ctype, const char *extra,
                    const char *body, size_t len)
{
    if (c->closing)
        return;
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                     status, status_text(status), ctype, len, extra ? extra : "");
    char *buf = malloc((size_t)n + len);
    if (!buf) {
        client_close(c);
        return;
    }
    memcpy(buf, head, (size_t)n);
    memcpy(buf + n, body, len);
    uv_timer_stop(&c->timer);
    client_write(c, buf, (size_t)n + len, 1);
}

/* Steals o. */
static void respond_json(struct adm_client *c, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(o);
    if (!s) {
        respond(c, 500, "application/json", NULL, "{\"error\":\"out of memory\"}\n", 26);
        return;
    }
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (t) {
        s = t;
        s[n++] = '\n';
        s[n] = '\0';
    }
    respond(c, status, "application/json", NULL, s, n);
    free(s);
}

static void respond_error(struct adm_client *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void respond_error(struct adm_client *c, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    respond_json(c, status, json_pack("{s:s}", "error", msg));
}

/* ---- endpoints ---- */

static json_t *status_json(void)
{
    struct fl_policy *p = fl_daemon_policy();
    uint64_t now = uv_now(A.loop);
    uint64_t deadline = atomic_load(&fl_global.policy_deadline_ms);
    unsigned long long injected = 0;
    json_t *o = json_object();

    json_object_set_new(o, "version", json_string(FL_VERSION));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "uptime_s", json_real((double)(now - A.start_ms) / 1000.0));
    json_object_set_new(o, "halted", json_boolean(atomic_load(&fl_global.halted)));
    if (atomic_load(&fl_global.halted))
        json_object_set_new(o, "halt_reason", json_string(A.halt_reason));
    json_object_set_new(o, "halt_file", json_string(A.halt_path));
    json_object_set_new(o, "workers", json_integer(fl_daemon_workers()));
    json_object_set_new(o, "active_connections",
                        json_integer((json_int_t)fl_daemon_active_connections()));
    json_t *per = json_array(); /* how SO_REUSEPORT and the hand-off spread them */
    for (int i = 0; i < fl_daemon_workers(); i++)
        json_array_append_new(per, json_integer((json_int_t)fl_daemon_worker_connections(i)));
    json_object_set_new(o, "worker_connections", per);
    json_object_set_new(o, "active_faults", json_integer(atomic_load(&fl_global.active_faults)));
    json_object_set_new(o, "requests_total",
                        json_integer((json_int_t)atomic_load(&fl_global.requests_total)));
    json_object_set_new(o, "faults_overflow_total",
                        json_integer((json_int_t)atomic_load(&fl_global.faults_overflow_total)));
    if (p) {
        for (size_t i = 0; i < p->n_rules; i++)
            for (int k = 0; k < 3; k++)
                injected += atomic_load(&p->rules[i].live.injected[k]);
        json_object_set_new(o, "policy", json_string(p->name));
        json_object_set_new(o, "file", json_string(p->file));
        json_object_set_new(o, "generation", json_integer((json_int_t)current_generation()));
        json_object_set_new(o, "rules", json_integer((json_int_t)p->n_rules));
        json_object_set_new(o, "listeners", listeners_json(p));
    }
    json_object_set_new(o, "faults_injected_total", json_integer((json_int_t)injected));
    if (deadline) {
        json_object_set_new(o, "expired", json_boolean(now >= deadline));
        json_object_set_new(o, "ttl_remaining_s",
                            json_real(now >= deadline ? 0.0 : (double)(deadline - now) / 1000.0));
    } else {
        json_object_set_new(o, "expired", json_false());
        json_object_set_new(o, "ttl_remaining_s", json_null());
    }
    json_object_set_new(o, "events_dropped", json_integer((json_int_t)Q.dropped));
    struct fl_tp_stats tp;
    fl_tp_stats(&tp);
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
    }
    return o;
}

static void get_rules(struct adm_client *c)
{
    struct fl_policy *p = fl_daemon_policy();
    json_t *a = json_array();
    for (size_t i = 0; p && i < p->n_rules; i++)
        json_array_append_new(a, rule_json(&p->rules[i]));
    respond_json(c, 200, json_pack("{s:s?,s:o}", "policy", p ? p->name : NULL, "rules", a));
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

/* PATCH /v1/rules/NAME: {"enabled": bool, "percent": P|null, "fault": "delay|abort|reset",
 * "delay": {"percent": P}, "abort": {...}, "reset": {...}}. A bare "percent"
 * sets every fault kind the rule has, or the one named by "fault". Everything
 * is validated before anything changes. */
static void patch_rule(struct adm_client *c, const char *name)
{
    struct fl_policy *p = fl_daemon_policy();
    struct fl_rule *r = p ? fl_policy_find_rule(p, name) : NULL;
    json_error_t jerr;
    json_t *in, *v;
    const char *key;
    uint32_t set[3] = {0, 0, 0};
    int has_set[3] = {0, 0, 0}, enabled = -1, only = -1;
    uint64_t new_fixed = UINT64_MAX;
    int new_status = 0, has_fixed = 0, has_status = 0;

    if (!r) {
        respond_error(c, 404, "no rule named '%s' in policy '%s'; 'faultctl rules' lists them",
                      name, p ? p->name : "");
        return;
    }
    in = json_loadb(c->body ? c->body : "", c->body_len, 0, &jerr);
    if (!json_is_object(in)) {
        respond_error(c, 400, "body must be a JSON object: %s",
                      in ? "got another JSON value" : jerr.text);
        json_decref(in);
        return;
    }
    v = json_object_get(in, "fault");
    if (v) {
        for (int k = 0; k < 3; k++)
            if (json_is_string(v) && strcmp(json_string_value(v), kind_names[k]) == 0)
                only = k;
        if (only < 0) {
            respond_error(c, 400, "\"fault\" must be \"delay\", \"abort\" or \"reset\"");
            goto out;
        }
    }
    json_object_foreach(in, key, v)
    {
        if (strcmp(key, "enabled") == 0) {
            if (!json_is_boolean(v)) {
                respond_error(c, 400, "\"enabled\" must be true or false");
                goto out;
            }
            enabled = json_is_true(v);
        } else if (strcmp(key, "percent") == 0) {
            uint32_t ppm;
            if (percent_value(v, &ppm) < 0) {
                respond_error(c, 400, "\"percent\" must be a number from 0 to 100, or null");
                goto out;
            }
            int any = 0;
            for (int k = 0; k < 3; k++) {
                if ((only >= 0 && k != only) || !rule_has_kind(r, k))
                    continue;
                set[k] = ppm;
                has_set[k] = any = 1;
            }
            if (!any) {
                respond_error(c, 422, "rule '%s' has no %s fault to set a percent for", name,
                              only >= 0 ? kind_names[only] : "delay, abort or reset");
                goto out;
            }
        } else if (strcmp(key, "fault") == 0) {
            continue;
        } else {
            int k;
            for (k = 0; k < 3 && strcmp(key, kind_names[k]) != 0; k++)
                ;
            if (k == 3) {
                respond_error(c, 400,
                              "unknown key \"%s\"; known: enabled, percent, fault, delay, abort, "
                              "reset",
                              key);
                goto out;
            }
            if (!json_is_object(v)) {
                respond_error(c, 400, "\"%s\" must be an object such as {\"percent\": 10}", key);
                goto out;
            }
            if (!rule_has_kind(r, k)) {
                respond_error(c, 422, "rule '%s' has no %s fault", name, key);
                goto out;
            }
            const char *fk;
            json_t *fv;
            json_object_foreach(v, fk, fv)
            {
                if (strcmp(fk, "percent") == 0) {
                    if (percent_value(fv, &set[k]) < 0) {
                        respond_error(c, 400, "\"%s.percent\" must be 0-100 or null", key);
                        goto out;
                    }
                    has_set[k] = 1;
                } else if (k == 0 && strcmp(fk, "fixed") == 0) {
                    /* "250ms" like the policy file, or null for the file's value */
                    if (json_is_null(fv)) {
                        new_fixed = UINT64_MAX;
                    } else if (!json_is_string(fv) ||
                               fl_parse_duration(json_string_value(fv), &new_fixed) < 0) {
                        respond_error(c, 400, "\"delay.fixed\" must be a duration such as "
                                              "\"250ms\", or null for the policy's value");
                        goto out;
                    }
                    has_fixed = 1;
                } else if (k == 1 && strcmp(fk, "status") == 0) {
                    if (json_is_null(fv)) {
                        new_status = 0;
                    } else if (!json_is_integer(fv) || json_integer_value(fv) < 200 ||
                               json_integer_value(fv) > 599) {
                        respond_error(c, 400, "\"abort.status\" must be an HTTP status 200-599, "
                                              "or null for the policy's value");
                        goto out;
                    } else {
                        new_status = (int)json_integer_value(fv);
                    }
                    has_status = 1;
                } else {
                    respond_error(c, 400, "unknown key \"%s.%s\"; known: percent%s", key, fk,
                                  k == 0 ? ", fixed" : k == 1 ? ", status" : "");
                    goto out;
                }
            }
        }
    }

    json_t *ev = json_pack("{s:s,s:s}", "event", "rule", "rule", r->name);
    if (enabled >= 0) {
        atomic_store(&r->live.enabled, enabled);
        json_object_set_new(ev, "enabled", json_boolean(enabled));
    }
    for (int k = 0; k < 3; k++) {
        if (!has_set[k])
            continue;
        atomic_store(rule_live_ppm(r, k), set[k]);
        json_object_set_new(
            ev, kind_names[k],
            json_pack("{s:f}", "percent",
                      ppm_percent(effective_ppm(rule_file_ppm(r, k), rule_live_ppm(r, k)))));
    }
    if (has_fixed) {
        atomic_store(&r->live.delay_fixed_ms, new_fixed);
        json_object_set_new(ev, "delay_fixed_ms",
                            json_integer((json_int_t)(new_fixed == UINT64_MAX ? r->delay.fixed_ms
                                                                              : new_fixed)));
    }
    if (has_status) {
        atomic_store(&r->live.abort_status, new_status);
        json_object_set_new(ev, "abort_status", json_integer(fl_rule_abort_status(r)));
    }
    fl_info("rule '%s' changed through the admin API", r->name);
    emit_event(ev);
    respond_json(c, 200, rule_json(r));
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
    struct adm_client *c = w->c;
    struct fl_policy *cur = fl_daemon_policy();
    char err[512];
    (void)status;

    if (!c || A.stopped)
        goto out;
    c->work = NULL;
    if (w->rc < 0) {
        json_t *a = json_array();
        for (size_t i = 0; i < w->errs.n; i++)
            json_array_append_new(a, json_string(w->errs.msgs[i]));
        if (w->errs.n == 0)
            json_array_append_new(a, json_pack("s+", w->name, ": cannot be loaded"));
        respond_json(c, 422,
                     json_pack("{s:s,s:o}", "error",
                               "invalid policy; nothing changed, the running policy stays in force",
                               "errors", a));
        goto out;
    }
    if (fl_daemon_check(w->p, err, sizeof(err)) < 0) {
        respond_json(c, 422, json_pack("{s:s,s:[s]}", "error", err, "errors", err));
        goto out;
    }
    int n_changes = 0;
    unsigned long long prev = current_generation();
    json_t *diff = cur ? policy_diff(cur, w->p, &n_changes) : json_object();
    if (w->dry_run) {
        respond_json(c, 200,
                     json_pack("{s:b,s:s,s:o}", "dry_run", 1, "policy", w->p->name, "diff", diff));
        goto out;
    }
    carry_counters(w->p, cur);
    if (fl_daemon_apply(w->p, err, sizeof(err)) < 0) {
        json_decref(diff);
        respond_json(c, 409, json_pack("{s:s,s:[s]}", "error", err, "errors", err));
        goto out;
    }
    unsigned long long gen = current_generation();
    fl_info("applied policy '%s' from %s through the admin API (%d change%s)", w->p->name, w->name,
            n_changes, n_changes == 1 ? "" : "s");
    emit_event(json_pack("{s:s,s:s,s:s,s:I,s:I}", "event", "apply", "policy", w->p->name, "file",
                         w->name, "generation", (json_int_t)gen, "changes", (json_int_t)n_changes));
    respond_json(c, 200,
                 json_pack("{s:b,s:s,s:I,s:I,s:o}", "applied", 1, "policy", w->p->name,
                           "generation", (json_int_t)gen, "previous_generation", (json_int_t)prev,
                           "diff", diff));
out:
    fl_policy_unref(w->p);
    fl_policy_errors_free(&w->errs);
    free(w->yaml);
    free(w);
}

static void put_policy(struct adm_client *c, int dry_run)
{
    struct adm_work *w = calloc(1, sizeof(*w));
    if (!w) {
        respond_error(c, 500, "out of memory");
        return;
    }
    w->c = c;
    w->dry_run = dry_run;
    w->yaml = c->body ? c->body : strdup("");
    w->len = c->body_len;
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    snprintf(w->name, sizeof(w->name), "%s", c->file_len ? c->file : "<admin>");
    w->req.data = w;
    if (!w->yaml || uv_queue_work(A.loop, &w->req, policy_work_cb, policy_after_cb) < 0) {
        free(w->yaml);
        free(w);
        respond_error(c, 500, "cannot queue the policy for parsing");
        return;
    }
    c->work = w;
}

static void get_policy(struct adm_client *c)
{
    struct fl_policy *p = fl_daemon_policy();
    unsigned long long gen = current_generation();
    json_t *h = json_array();
    for (int i = A.n_snaps - 1; i >= 0; i--)
        json_array_append_new(h,
                              json_pack("{s:I,s:s,s:s}", "generation", (json_int_t)A.snaps[i].gen,
                                        "policy", A.snaps[i].p->name, "file", A.snaps[i].p->file));
    respond_json(c, 200,
                 json_pack("{s:s?,s:s?,s:I,s:o}", "policy", p ? p->name : NULL, "file",
                           p ? p->file : NULL, "generation", (json_int_t)gen, "history", h));
}

/* POST /v1/policy/rollback {"generation": G}: re-applies a held snapshot
 * (with the live changes it had), e.g. the one in force before an experiment. */
static void rollback_policy(struct adm_client *c)
{
    json_t *in = json_loadb(c->body ? c->body : "", c->body_len, 0, NULL);
    json_t *g = json_object_get(in, "generation");
    char err[512];
    unsigned long long prev = current_generation();

    if (!json_is_integer(g)) {
        json_decref(in);
        respond_error(c, 400, "body must be {\"generation\": N} (see GET /v1/policy)");
        return;
    }
    unsigned long long gen = (unsigned long long)json_integer_value(g);
    json_decref(in);
    struct fl_policy *p = snapshot_by_gen(gen);
    if (!p) {
        respond_error(c, 404,
                      "policy generation %llu is no longer held (the daemon keeps the last %d); "
                      "apply the policy file again with 'faultctl apply -f FILE'",
                      gen, FL_ADMIN_HISTORY);
        return;
    }
    if (gen != prev) {
        carry_counters(p, fl_daemon_policy());
        if (fl_daemon_apply(p, err, sizeof(err)) < 0) {
            respond_error(c, 409, "%s", err);
            return;
        }
        fl_info("rolled back to policy '%s' (generation %llu) through the admin API", p->name, gen);
        emit_event(json_pack("{s:s,s:s,s:I}", "event", "rollback", "policy", p->name, "generation",
                             (json_int_t)gen));
    }
    respond_json(c, 200,
                 json_pack("{s:b,s:s,s:I,s:I}", "applied", 1, "policy", p->name, "generation",
                           (json_int_t)gen, "previous_generation", (json_int_t)prev));
}

static void post_halt(struct adm_client *c)
{
    char reason[ADM_REASON_MAX + 1] = "faultctl halt";
    if (c->body_len) {
        json_t *in = json_loadb(c->body, c->body_len, 0, NULL);
        json_t *r = json_object_get(in, "reason");
        if (!json_is_object(in) || (r && !json_is_string(r))) {
            json_decref(in);
            respond_error(c, 400, "body must be {\"reason\": \"TEXT\"} or empty");
            return;
        }
        if (r && json_string_length(r))
            snprintf(reason, sizeof(reason), "%s", json_string_value(r));
        json_decref(in);
    }
    fl_daemon_halt(reason);
    json_t *o = status_json();
    respond_json(c, 200, o);
}

static void delete_halt(struct adm_client *c)
{
    if (A.halt_file_on) {
        respond_error(c, 409, "the HALT file %s exists; remove it to resume", A.halt_path);
        return;
    }
    fl_daemon_resume();
    respond_json(c, 200, status_json());
}

static void get_events(struct adm_client *c, int follow)
{
    struct sbuf b = {0};
    if (!follow) {
        for (unsigned i = 0; i < A.hist_n; i++) {
            const char *l = A.history[(A.hist_head + i) % ADM_EVENT_HISTORY];
            sb_add(&b, l, strlen(l));
            sb_add(&b, "\n", 1);
        }
        respond(c, b.oom ? 500 : 200, "application/x-ndjson", NULL, b.p ? b.p : "", b.len);
        free(b.p);
        return;
    }
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                               "Transfer-Encoding: chunked\r\nCache-Control: no-store\r\n\r\n";
    char *buf = strdup(head);
    if (!buf) {
        client_close(c);
        return;
    }
    uv_timer_stop(&c->timer);
    c->streaming = 1;
    client_write(c, buf, sizeof(head) - 1, 0);
}

static void metric_label(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            sb_printf(b, "\\%c", *s);
        else if (*s == '\n')
            sb_add(b, "\\n", 2);
        else
            sb_add(b, s, 1);
    }
}

static void get_metrics(struct adm_client *c)
{
    struct fl_policy *p = fl_daemon_policy();
    struct sbuf b = {0};

    sb_printf(&b,
              "# HELP faultline_requests_total Requests the proxy decided on.\n"
              "# TYPE faultline_requests_total counter\nfaultline_requests_total %llu\n",
              (unsigned long long)atomic_load(&fl_global.requests_total));
    /* Label values are rule names of the policy in force and the three fault
     * kinds: bounded by the policy, never by traffic. */
    sb_printf(&b, "# HELP faultline_faults_injected_total Faults injected, by rule and kind.\n"
                  "# TYPE faultline_faults_injected_total counter\n");
    for (size_t i = 0; p && i < p->n_rules; i++) {
        struct fl_rule *r = &p->rules[i];
        for (int k = 0; k < 3; k++) {
            unsigned long long v = atomic_load(&r->live.injected[k]);
            if (!rule_has_kind(r, k) && v == 0)
                continue;
            sb_printf(&b, "faultline_faults_injected_total{rule=\"");
            metric_label(&b, r->name);
            sb_printf(&b, "\",fault=\"%s\"} %llu\n", kind_names[k], v);
        }
    }
    sb_printf(&b,
              "# HELP faultline_faults_overflow_total Faults not injected because "
              "max_active_faults was reached.\n"
              "# TYPE faultline_faults_overflow_total counter\nfaultline_faults_overflow_total "
              "%llu\n",
              (unsigned long long)atomic_load(&fl_global.faults_overflow_total));
    sb_printf(&b,
              "# HELP faultline_active_connections Client connections open through the proxy.\n"
              "# TYPE faultline_active_connections gauge\nfaultline_active_connections %llu\n",
              (unsigned long long)fl_daemon_active_connections());
    sb_printf(&b,
              "# HELP faultline_active_faults Faults in progress (held delays, pending "
              "aborts).\n# TYPE faultline_active_faults gauge\nfaultline_active_faults %u\n",
              atomic_load(&fl_global.active_faults));
    sb_printf(&b,
              "# HELP faultline_halted 1 while injection is halted.\n"
              "# TYPE faultline_halted gauge\nfaultline_halted %d\n",
              atomic_load(&fl_global.halted) ? 1 : 0);
    sb_printf(&b,
              "# HELP faultline_fault_log_dropped_total Fault lines dropped by a stalled log.\n"
              "# TYPE faultline_fault_log_dropped_total counter\n"
              "faultline_fault_log_dropped_total %llu\n",
              (unsigned long long)atomic_load(&fl_faultlog_dropped));
    struct fl_tp_stats tp;
    fl_tp_stats(&tp);
    if (tp.active) {
        sb_printf(&b,
                  "# HELP faultline_transparent_redirected_total Connections the kernel steered "
                  "to the proxy.\n# TYPE faultline_transparent_redirected_total counter\n"
                  "faultline_transparent_redirected_total %llu\n"
                  "# HELP faultline_transparent_skmsg_redirects_total Messages moved by sk_msg "
                  "between app and proxy.\n# TYPE faultline_transparent_skmsg_redirects_total "
                  "counter\nfaultline_transparent_skmsg_redirects_total %llu\n"
                  "# HELP faultline_transparent_fail_open_total Fail-open events (watchdog, or "
                  "no listener in the pod netns).\n# TYPE faultline_transparent_fail_open_total "
                  "counter\nfaultline_transparent_fail_open_total{cause=\"watchdog\"} %llu\n"
                  "faultline_transparent_fail_open_total{cause=\"no_listener\"} %llu\n"
                  "# HELP faultline_transparent_pods Pod cgroups enrolled.\n"
                  "# TYPE faultline_transparent_pods gauge\nfaultline_transparent_pods %u\n",
                  (unsigned long long)tp.redirected, (unsigned long long)tp.msg_redirects,
                  (unsigned long long)tp.fail_open_events, (unsigned long long)tp.no_listener,
                  tp.pods);
    }
    sb_printf(&b, "# HELP faultline_build_info Build information.\n"
                  "# TYPE faultline_build_info gauge\nfaultline_build_info{version=\"" FL_VERSION
                  "\"} 1\n");
    if (b.oom)
        respond_error(c, 500, "out of memory");
    else
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.p, b.len);
    free(b.p);
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

static void method_not_allowed(struct adm_client *c, const char *allow)
{
    char extra[128];
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    static const char body[] = "{\"error\":\"method not allowed\"}\n";
    respond(c, 405, "application/json", extra, body, sizeof(body) - 1);
}

static void dispatch(struct adm_client *c)
{
    if (c->reject == 403) {
        respond_error(c, 403, "only root and the daemon's user may use the admin API");
        return;
    }
    if (c->reject) {
        respond_error(c, 503, "too many admin connections (%d); try again", ADM_MAX_CLIENTS);
        return;
    }
    const char *m = llhttp_method_name((llhttp_method_t)c->parser.method);
    char *q = strchr(c->url, '?');
    if (q)
        *q++ = '\0';
    const char *path = c->url;
    int get = strcmp(m, "GET") == 0;

    if (strcmp(path, "/metrics") == 0) {
        if (!get)
            method_not_allowed(c, "GET");
        else
            get_metrics(c);
        return;
    }
    if (c->metrics_only) {
        respond_error(c, 404, "only /metrics is served on this port");
        return;
    }
    if (strcmp(path, "/v1/status") == 0) {
        if (!get)
            method_not_allowed(c, "GET");
        else
            respond_json(c, 200, status_json());
    } else if (strcmp(path, "/v1/rules") == 0) {
        if (!get)
            method_not_allowed(c, "GET");
        else
            get_rules(c);
    } else if (strncmp(path, "/v1/rules/", 10) == 0) {
        char name[ADM_MAX_URL];
        snprintf(name, sizeof(name), "%s", path + 10);
        if (url_decode(name) < 0 || !*name) {
            respond_error(c, 400, "bad rule name in the path");
        } else if (strcmp(m, "PATCH") == 0) {
            patch_rule(c, name);
        } else if (get) {
            struct fl_policy *p = fl_daemon_policy();
            struct fl_rule *r = p ? fl_policy_find_rule(p, name) : NULL;
            if (r)
                respond_json(c, 200, rule_json(r));
            else
                respond_error(c, 404, "no rule named '%s'; 'faultctl rules' lists them", name);
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
        respond_error(c, 404,
                      "no such endpoint %s %s; see DESIGN.md 3.4 (GET /v1/status, /v1/rules, "
                      "/v1/events, /metrics; PATCH /v1/rules/NAME; PUT /v1/policy; POST and "
                      "DELETE /v1/halt)",
                      m, path);
    }
}

/* ---- clients: parsing ---- */

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct adm_client *c = p->data;
    if (c->url_len + len >= sizeof(c->url)) {
        c->url_overflow = 1;
        return HPE_USER;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int hdr_bytes(struct adm_client *c, size_t len)
{
    c->hdr_bytes += len;
    return c->hdr_bytes > ADM_MAX_HDR_BYTES ? HPE_USER : 0;
}

/* Appends len bytes at `at` to the NUL-terminated buf of cap bytes holding
 * *used, cutting what does not fit (llhttp may deliver a field in pieces). */
static void append_cut(char *buf, size_t cap, size_t *used, const char *at, size_t len)
{
    size_t room = cap - 1 - *used;
    size_t n = len < room ? len : room;
    memcpy(buf + *used, at, n);
    *used += n;
    buf[*used] = '\0';
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct adm_client *c = p->data;
    append_cut(c->field, sizeof(c->field), &c->field_len, at, len);
    return hdr_bytes(c, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct adm_client *c = p->data;
    if (strcasecmp(c->field, "x-faultline-file") == 0)
        append_cut(c->file, sizeof(c->file), &c->file_len, at, len);
    return hdr_bytes(c, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct adm_client *c = p->data;
    c->field_len = 0;
    c->field[0] = '\0';
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct adm_client *c = p->data;
    if (c->body_len + len > ADM_MAX_BODY) {
        c->body_overflow = 1;
        return HPE_USER;
    }
    if (c->body_len + len + 1 > c->body_cap) {
        size_t ncap = c->body_cap ? c->body_cap * 2 : 8192;
        while (ncap < c->body_len + len + 1)
            ncap *= 2;
        char *nb = realloc(c->body, ncap);
        if (!nb)
            return HPE_USER;
        c->body = nb;
        c->body_cap = ncap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    c->body[c->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    ((struct adm_client *)p->data)->complete = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t *settings(void)
{
    static llhttp_settings_t s;
    static int init;
    if (!init) {
        llhttp_settings_init(&s);
        s.on_url = on_url;
        s.on_header_field = on_header_field;
        s.on_header_value = on_header_value;
        s.on_header_value_complete = on_header_value_complete;
        s.on_body = on_body;
        s.on_message_complete = on_message_complete;
        init = 1;
    }
    return &s;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    /* One loop thread, and each read is parsed before the next: one buffer serves all. */
    static char rbuf[65536];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct adm_client *c = s->data;
    if (c->closing)
        return;
    if (nread < 0) {
        /* A client may half-close after its request; let a pending answer go out. */
        if (c->complete && !c->streaming && nread == UV_EOF)
            uv_read_stop(s);
        else
            client_close(c);
        return;
    }
    if (nread == 0 || c->complete)
        return;
    llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (e == HPE_PAUSED && c->complete) {
        dispatch(c);
        return;
    }
    if (e != HPE_OK) {
        c->complete = 1;
        if (c->url_overflow)
            respond_error(c, 414, "request target longer than %d bytes", ADM_MAX_URL - 1);
        else if (c->hdr_bytes > ADM_MAX_HDR_BYTES)
            respond_error(c, 431, "request headers larger than %d bytes", ADM_MAX_HDR_BYTES);
        else if (c->body_overflow)
            respond_error(c, 413, "request body larger than %u bytes", ADM_MAX_BODY);
        else
            respond_error(c, 400, "malformed HTTP request: %s",
                          llhttp_get_error_reason(&c->parser));
    }
}

static void client_timeout_cb(uv_timer_t *t)
{
    struct adm_client *c = t->data;
    if (!c->complete) {
        c->complete = 1;
        respond_error(c, 408, "request not received within %d ms", ADM_REQ_TIMEOUT_MS);
    }
}

/* Rejects peers other than root and the daemon's own user, in case the socket's
 * mode was widened by hand. Returns 1 when the peer may talk to us. */
static int peer_allowed(struct adm_client *c)
{
    uv_os_fd_t fd;
    struct ucred cr;
    socklen_t sl = sizeof(cr);
    if (uv_fileno(&c->u.h, &fd) < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &sl) < 0)
        return 0;
    return cr.uid == 0 || cr.uid == geteuid();
}

static void on_connection(uv_stream_t *server, int status)
{
    int metrics_only = server != (uv_stream_t *)&A.pipe;
    if (status < 0 || A.stopped)
        return;
    struct adm_client *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    if (metrics_only)
        uv_tcp_init(A.loop, &c->u.tcp);
    else
        uv_pipe_init(A.loop, &c->u.pipe, 0);
    uv_timer_init(A.loop, &c->timer);
    c->u.h.data = c;
    c->timer.data = c;
    c->metrics_only = metrics_only;
    c->next = A.clients;
    if (A.clients)
        A.clients->prev = c;
    A.clients = c;
    A.n_clients++;
    if (uv_accept(server, &c->u.s) < 0) {
        client_close(c);
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, settings());
    c->parser.data = c;
    if (!metrics_only && !peer_allowed(c))
        c->reject = 403;
    else if (A.n_clients > ADM_MAX_CLIENTS)
        c->reject = 503;
    uv_timer_start(&c->timer, client_timeout_cb, ADM_REQ_TIMEOUT_MS, 0);
    if (uv_read_start(&c->u.s, alloc_cb, read_cb) < 0)
        client_close(c);
}

/* ---- start / stop ---- */

static int mkdir_p(char *dir)
{
    for (char *s = dir + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        int r = mkdir(dir, 0755);
        *s = '/';
        if (r < 0 && errno != EEXIST)
            return -errno;
    }
    /* The socket's own directory is private to the daemon's user. */
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int open_socket(const char *path, char *err, size_t errlen)
{
    struct stat st;
    char dir[PATH_MAX];
    int e;

    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if ((e = mkdir_p(dir)) < 0) {
            snprintf(err, errlen, "cannot create %s for the admin socket: %s; use --admin PATH",
                     dir, strerror(-e));
            return e;
        }
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket; remove it or use --admin PATH",
                     path);
            return -EEXIST;
        }
        int fd = fl_cli_connect_unix(path);
        if (fd >= 0) {
            close(fd);
            snprintf(err, errlen,
                     "another faultline daemon answers on %s; stop it first (faultctl --admin %s "
                     "status shows it) or give this one another --admin PATH",
                     path, path);
            return -EADDRINUSE;
        }
        unlink(path); /* stale: left behind by a daemon that died */
    }
    uv_pipe_init(A.loop, &A.pipe, 0);
    A.pipe_open = 1;
    /* Create the socket 0600 from the start: no window where others may connect. */
    mode_t old = umask(0177);
    e = uv_pipe_bind(&A.pipe, path);
    umask(old);
    if (e == 0)
        e = chmod(path, 0600) < 0 ? -errno : 0;
    if (e == 0)
        e = uv_listen((uv_stream_t *)&A.pipe, 64, on_connection);
    if (e < 0) {
        snprintf(err, errlen, "cannot listen on the admin socket %s: %s", path, uv_strerror(e));
        uv_close((uv_handle_t *)&A.pipe, NULL);
        A.pipe_open = 0;
        return e;
    }
    return 0;
}

static int open_metrics(const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss[2];
    int n = fl_parse_hostport(addr, 1, ss);
    if (n <= 0) {
        snprintf(err, errlen, "--metrics-listen %s: give ADDR:PORT, e.g. 127.0.0.1:9464", addr);
        return -EINVAL;
    }
    for (int i = 0; i < n; i++) {
        uv_tcp_init(A.loop, &A.mtcp[i]);
        A.n_mtcp++;
        int e = uv_tcp_bind(&A.mtcp[i], (const struct sockaddr *)&ss[i], 0);
        if (e == 0)
            e = uv_listen((uv_stream_t *)&A.mtcp[i], 64, on_connection);
        if (e < 0) {
            snprintf(err, errlen, "--metrics-listen %s: %s%s", addr, uv_strerror(e),
                     e == UV_EADDRINUSE ? " (another process has the port; pick another)" : "");
            return e;
        }
    }
    return 0;
}

int fl_admin_start(uv_loop_t *loop, const char *path, const char *metrics_listen, char *err,
                   size_t errlen)
{
    struct stat st;
    int e;

    memset(&A, 0, sizeof(A));
    A.loop = loop;
    A.start_ms = uv_now(loop);
    if (path)
        snprintf(A.path, sizeof(A.path), "%s", path);
    else if (fl_cli_default_admin_path(A.path, sizeof(A.path)) < 0) {
        snprintf(err, errlen, "the default admin socket path is too long; use --admin PATH");
        return -ENAMETOOLONG;
    }
    snprintf(A.halt_path, sizeof(A.halt_path), "%s", A.path);
    char *slash = strrchr(A.halt_path, '/');
    snprintf(slash ? slash + 1 : A.halt_path,
             sizeof(A.halt_path) - (size_t)(slash ? slash + 1 - A.halt_path : 0), "HALT");

    A.started = 1;
    uv_timer_init(loop, &A.halt_timer);
    uv_async_init(loop, &A.async, async_cb);
    if ((e = open_socket(A.path, err, errlen)) < 0) {
        A.path[0] = '\0'; /* not ours: stop must not remove it */
        goto fail;
    }
    if (metrics_listen && (e = open_metrics(metrics_listen, err, errlen)) < 0)
        goto fail;

    uv_mutex_init(&Q.mu);
    uv_mutex_lock(&Q.mu);
    Q.open = 1;
    Q.rd = Q.used = 0;
    uv_mutex_unlock(&Q.mu);
    fl_faultlog_tap = fault_tap;
    fl_daemon_event_tap = daemon_tap;

    /* A HALT file present at startup halts before the first request. */
    if (stat(A.halt_path, &st) == 0)
        halt_file_seen(1);
    uv_timer_start(&A.halt_timer, halt_timer_cb, ADM_HALT_POLL_MS, ADM_HALT_POLL_MS);
    fl_info("admin API on %s (HALT file: %s)%s%s", A.path, A.halt_path,
            metrics_listen ? ", metrics on " : "", metrics_listen ? metrics_listen : "");
    return 0;
fail:
    fl_admin_stop();
    return e;
}

void fl_admin_stop(void)
{
    if (!A.started || A.stopped)
        return;
    A.stopped = 1;
    if (Q.open) {
        uv_mutex_lock(&Q.mu);
        Q.open = 0; /* workers may still log; their lines now stop here */
        uv_mutex_unlock(&Q.mu);
    }
    fl_daemon_event_tap = NULL;
    while (A.clients) {
        struct adm_client *c = A.clients;
        if (c->streaming) {
            /* End the chunked stream if the socket takes it now; never wait. */
            uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
            (void)uv_try_write(&c->u.s, &b, 1);
        }
        client_close(c);
    }
    if (A.pipe_open)
        uv_close((uv_handle_t *)&A.pipe, NULL);
    for (int i = 0; i < A.n_mtcp; i++)
        uv_close((uv_handle_t *)&A.mtcp[i], NULL);
    uv_close((uv_handle_t *)&A.halt_timer, NULL);
    uv_close((uv_handle_t *)&A.async, NULL);
    if (A.path[0])
        unlink(A.path);
    for (int i = 0; i < A.n_snaps; i++)
        fl_policy_unref(A.snaps[i].p);
    A.n_snaps = 0;
    for (unsigned i = 0; i < A.hist_n; i++)
        free(A.history[(A.hist_head + i) % ADM_EVENT_HISTORY]);
    A.hist_n = 0;
}
