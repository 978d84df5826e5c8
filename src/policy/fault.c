/* fault: the per-request decision. Runs on every request of every worker:
 * no allocation, no locks, only relaxed atomics on shared counters. */
#include "fault.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rng.h"
#include "rule_index.h"

struct fl_fault_global fl_fault_global;

const char *fl_fault_kind_name(enum fl_fault_kind k)
{
    switch (k) {
    case FL_FAULT_DELAY: return "delay";
    case FL_FAULT_ABORT: return "abort";
    case FL_FAULT_RESET: return "reset";
    case FL_FAULT_RESPONSE_DELAY: return "response_delay";
    case FL_FAULT_MODIFY: return "modify";
    case FL_FAULT_TRUNCATE: return "truncate";
    case FL_FAULT_BANDWIDTH: return "bandwidth";
    case FL_FAULT_CONNECTION: return "connection";
    }
    return "unknown";
}

static uint32_t effective_ppm(const atomic_uint *live, uint32_t file)
{
    uint32_t v = atomic_load_explicit(live, memory_order_relaxed);
    return v == UINT32_MAX ? file : v;
}

/* One roll of the dice: ppm in 1,000,000. */
static int roll(struct fl_rng *rng, uint32_t ppm)
{
    if (ppm == 0)
        return 0;
    if (ppm >= FL_PPM_MAX)
        return 1;
    return fl_rng_below(rng, FL_PPM_MAX) < ppm;
}


int fl_decision_abort_status(const struct fl_decision *d)
{
    return d->abort_status ? d->abort_status : fl_policy_rule_abort_status(d->rule);
}

int fl_decision_grpc_status(const struct fl_decision *d)
{
    if (d->abort_status)
        return -1; /* x-faultline-abort asked for an HTTP status */
    return d->grpc_status >= 0 ? d->grpc_status : d->rule->abort.grpc_status;
}

static const struct fl_hdr *find_hdr(const struct fl_request *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++)
        if (req->headers[i].name_len == n && strncasecmp(req->headers[i].name, name, n) == 0)
            return &req->headers[i];
    return NULL;
}

/* A header value as a C string (at most cap - 1 bytes), or 0 when longer. */
static int hdr_value(const struct fl_hdr *h, char *buf, size_t cap)
{
    size_t n = h->value_len;
    while (n && (h->value[n - 1] == ' ' || h->value[n - 1] == '\t'))
        n--;
    size_t i = 0;
    while (i < n && (h->value[i] == ' ' || h->value[i] == '\t'))
        i++;
    if (n - i >= cap)
        return 0;
    memcpy(buf, h->value + i, n - i);
    buf[n - i] = 0;
    return 1;
}

/* The faults a from_headers rule's request asks for, rolled against its
 * x-faultline-percent (100 without one). Returns 1 when a header was there
 * (d says what it asked, or d->bad), 0 when none was. */
static int from_headers(const struct fl_request *req, struct fl_rng *rng, struct fl_decision *d)
{
    const struct fl_hdr *ha = find_hdr(req, FL_HDR_ABORT), *hg = find_hdr(req, FL_HDR_ABORT_GRPC),
                        *hd = find_hdr(req, FL_HDR_DELAY), *hp = find_hdr(req, FL_HDR_PERCENT);
    char v[64];
    uint32_t ppm = FL_PPM_MAX;
    uint64_t n;
    if (!ha && !hg && !hd)
        return 0;
    d->by_header = 1;
    if (hp && (!hdr_value(hp, v, sizeof(v)) || fl_values_parse_percent(v, &ppm) < 0)) {
        snprintf(d->bad_msg, sizeof(d->bad_msg), "%s must be a percent 0-100 (at most 4 "
                 "decimals, e.g. 50 or 12.5)", FL_HDR_PERCENT);
        d->bad = 1;
        return 1;
    }
    if (ha) {
        char *end;
        if (!hdr_value(ha, v, sizeof(v)) || *v < '0' || *v > '9' || (n = strtoull(v, &end, 10), *end) || n < 200 ||
            n > 599) {
            snprintf(d->bad_msg, sizeof(d->bad_msg), "%s must be an HTTP status 200-599 (e.g. "
                     "503)", FL_HDR_ABORT);
            d->bad = 1;
            return 1;
        }
        d->abort_status = (int)n;
    }
    if (hg) {
        int g = hdr_value(hg, v, sizeof(v)) ? fl_values_parse_grpc_status(v) : -1;
        if (g < 0) {
            snprintf(d->bad_msg, sizeof(d->bad_msg), "%s must be a gRPC status, by name "
                     "(UNAVAILABLE) or number (0-16)", FL_HDR_ABORT_GRPC);
            d->bad = 1;
            return 1;
        }
        if (!ha)
            d->grpc_status = g;
    }
    if (hd) {
        char *end;
        int ok = hdr_value(hd, v, sizeof(v)) && *v >= '0' && *v <= '9';
        /* A bare number is milliseconds, as Envoy's x-envoy-fault-delay-request. */
        if (ok && (n = strtoull(v, &end, 10), !*end))
            d->delay_ms = n;
        else if (ok && fl_values_parse_duration(v, &d->delay_ms) < 0)
            ok = 0;
        if (!ok || d->delay_ms > 3600000) {
            snprintf(d->bad_msg, sizeof(d->bad_msg), "%s must be a duration (200ms, 1.5s, 2m) "
                     "or milliseconds (200), at most 1h", FL_HDR_DELAY);
            d->bad = 1;
            return 1;
        }
    }
    if ((ha || hg) && roll(rng, ppm))
        d->abort = 1;
    if (hd && roll(rng, ppm))
        d->delay = 1;
    return 1;
}

int fl_fault_decide(const struct fl_policy *p, const char *scope, const struct fl_request *req,
                    struct fl_rng *rng, uint64_t now_ms, struct fl_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->grpc_status = -1;
    atomic_fetch_add_explicit(&fl_fault_global.requests_total, 1, memory_order_relaxed);
    if (!p || p->n_rules == 0 || atomic_load_explicit(&fl_fault_global.halted, memory_order_relaxed))
        return 0;
    uint64_t deadline = atomic_load_explicit(&fl_fault_global.policy_deadline_ms, memory_order_relaxed);
    if (deadline && now_ms >= deadline)
        return 0;

    struct fl_rule *r = fl_rule_index_first(p, scope, req);
    if (r && r->deadline_ms && now_ms >= r->deadline_ms)
        return 0; /* its policy expired (a composed set); the next apply drops it */
    if (r) {
        atomic_fetch_add_explicit(&r->live.matched, 1, memory_order_relaxed);
        d->rule = r;
        if (r->from_headers && from_headers(req, rng, d)) {
            if (d->bad)
                return 1; /* answered 400 by the caller; nothing injected */
            if (!d->abort && !d->delay)
                return 0;
            goto limit;
        }
        /* Each kind rolls its own dice, so percentages are independent. */
        if (r->reset.enabled && roll(rng, effective_ppm(&r->live.ppm[FL_FAULT_RESET], r->reset.ppm)))
            d->reset = 1;
        if (!d->reset && r->abort.enabled &&
            roll(rng, effective_ppm(&r->live.ppm[FL_FAULT_ABORT], r->abort.ppm)))
            d->abort = 1;
        if (!d->reset && r->delay.enabled &&
            roll(rng, effective_ppm(&r->live.ppm[FL_FAULT_DELAY], r->delay.ppm))) {
            d->delay = 1;
            uint64_t fixed = atomic_load_explicit(&r->live.delay_fixed_ms, memory_order_relaxed);
            d->delay_ms = fixed == UINT64_MAX ? r->delay.fixed_ms : fixed;
            if (r->delay.jitter_ms) {
                uint64_t j = fl_rng_below(rng, r->delay.jitter_ms + 1);
                /* Saturate: absurd durations must not wrap into short ones. */
                d->delay_ms = j > UINT64_MAX - d->delay_ms ? UINT64_MAX : d->delay_ms + j;
            }
        }
        if (!d->reset && !d->abort) {
            if (r->response_delay.enabled &&
                roll(rng, effective_ppm(&r->live.ppm[FL_FAULT_RESPONSE_DELAY],
                                        r->response_delay.ppm))) {
                d->resp_delay = 1;
                d->resp_delay_ms = r->response_delay.fixed_ms;
                if (r->response_delay.jitter_ms)
                    d->resp_delay_ms += fl_rng_below(rng, r->response_delay.jitter_ms + 1);
            }
            if (r->modify.enabled &&
                roll(rng, effective_ppm(&r->live.ppm[FL_FAULT_MODIFY], r->modify.ppm)))
                d->modify = 1;
            if (r->truncate.enabled &&
                roll(rng, effective_ppm(&r->live.ppm[FL_FAULT_TRUNCATE], r->truncate.ppm)))
                d->truncate = 1;
            if (r->bandwidth.enabled &&
                roll(rng, effective_ppm(&r->live.ppm[FL_FAULT_BANDWIDTH], r->bandwidth.ppm)))
                d->bandwidth = 1;
        }
        if (!d->reset && !d->abort && !d->delay && !d->resp_delay && !d->modify &&
            !d->truncate && !d->bandwidth)
            return 0;
    limit:;
        /* The limit bounds the blast radius, so it holds back every kind, resets
         * included. Load-then-add may let concurrent workers overshoot by a few;
         * a CAS loop would cost more than the bound is worth. */
        unsigned active = atomic_load_explicit(&fl_fault_global.active_faults, memory_order_relaxed);
        if (active >= p->max_active_faults) {
            atomic_fetch_add_explicit(&fl_fault_global.faults_overflow_total, 1, memory_order_relaxed);
            d->abort = d->delay = d->reset = 0;
            d->resp_delay = d->modify = d->truncate = d->bandwidth = 0;
            d->overflow = 1;
            return 0;
        }
        /* One unit per held kind: callers release the delay's share when the
         * timer fires and the abort's once the answer is queued. */
        if (d->abort || d->delay)
            atomic_fetch_add_explicit(&fl_fault_global.active_faults, (unsigned)(d->abort + d->delay),
                                      memory_order_relaxed);
        if (d->reset)
            atomic_fetch_add_explicit(&r->live.injected[FL_FAULT_RESET], 1, memory_order_relaxed);
        if (d->abort)
            atomic_fetch_add_explicit(&r->live.injected[FL_FAULT_ABORT], 1, memory_order_relaxed);
        if (d->delay)
            atomic_fetch_add_explicit(&r->live.injected[FL_FAULT_DELAY], 1, memory_order_relaxed);
        const int resp[][2] = {{d->resp_delay, FL_FAULT_RESPONSE_DELAY},
                               {d->modify, FL_FAULT_MODIFY},
                               {d->truncate, FL_FAULT_TRUNCATE},
                               {d->bandwidth, FL_FAULT_BANDWIDTH}};
        for (size_t i = 0; i < 4; i++)
            if (resp[i][0])
                atomic_fetch_add_explicit(&r->live.injected[resp[i][1]], 1, memory_order_relaxed);
        return 1;
    }
    return 0;
}

void fl_fault_release(void)
{
    atomic_fetch_sub_explicit(&fl_fault_global.active_faults, 1, memory_order_relaxed);
}
