/* fault: the per-request decision. Runs on every request of every worker:
 * no allocation, no locks, only relaxed atomics on shared counters. */
#include "fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "rule_index.h"

struct fl_fault_global fl_fault_global;

const char *fl_fault_kind_name(enum fl_fault_kind k)
{
    switch (k) {
    case FL_FAULT_DELAY: return "delay";
    case FL_FAULT_ABORT: return "abort";
    case FL_FAULT_RESET: return "reset";
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


int fl_fault_decide(const struct fl_policy *p, const char *scope, const struct fl_request *req,
                    struct fl_rng *rng, uint64_t now_ms, struct fl_decision *d)
{
    memset(d, 0, sizeof(*d));
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
        /* Each kind rolls its own dice, so percentages are independent. */
        if (r->reset.enabled && roll(rng, effective_ppm(&r->live.reset_ppm, r->reset.ppm)))
            d->reset = 1;
        if (!d->reset && r->abort.enabled &&
            roll(rng, effective_ppm(&r->live.abort_ppm, r->abort.ppm)))
            d->abort = 1;
        if (!d->reset && r->delay.enabled &&
            roll(rng, effective_ppm(&r->live.delay_ppm, r->delay.ppm))) {
            d->delay = 1;
            uint64_t fixed = atomic_load_explicit(&r->live.delay_fixed_ms, memory_order_relaxed);
            d->delay_ms = fixed == UINT64_MAX ? r->delay.fixed_ms : fixed;
            if (r->delay.jitter_ms) {
                uint64_t j = fl_rng_below(rng, r->delay.jitter_ms + 1);
                /* Saturate: absurd durations must not wrap into short ones. */
                d->delay_ms = j > UINT64_MAX - d->delay_ms ? UINT64_MAX : d->delay_ms + j;
            }
        }
        if (!d->reset && !d->abort && !d->delay)
            return 0;
        /* The limit bounds the blast radius, so it holds back every kind, resets
         * included. Load-then-add may let concurrent workers overshoot by a few;
         * a CAS loop would cost more than the bound is worth. */
        unsigned active = atomic_load_explicit(&fl_fault_global.active_faults, memory_order_relaxed);
        if (active >= p->max_active_faults) {
            atomic_fetch_add_explicit(&fl_fault_global.faults_overflow_total, 1, memory_order_relaxed);
            d->abort = d->delay = d->reset = 0;
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
        return 1;
    }
    return 0;
}

void fl_fault_release(void)
{
    atomic_fetch_sub_explicit(&fl_fault_global.active_faults, 1, memory_order_relaxed);
}
