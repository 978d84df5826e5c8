/* fault: the dice (precision, reproducibility, no bias) and the decision's
 * rules: first fit decides, reset wins, halt, expiry, max_active_faults. Each
 * case runs in its own process, so fl_fault_global starts at zero. */
#include <math.h>
#include <string.h>

#include "fault.h"
#include "helpers.h"
#include "unit.h"

static struct fl_policy *load_rules(const char *rules)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml), UNIT_POLICY_HEAD "  rules:\n%s", rules);
    return unit_load(yaml);
}

static struct fl_request any_req(void)
{
    struct fl_request r = {0};
    r.proto = FL_PROTO_HTTP1;
    r.method = FL_M_GET;
    r.path = "/x";
    r.path_len = 2;
    return r;
}

/* Releases what a decision holds, as the protocol handlers do. */
static void release(const struct fl_decision *d)
{
    if (d->delay)
        fl_fault_release();
    if (d->abort)
        fl_fault_release();
}

TEST(fault_kind_names)
{
    ASSERT_STR_EQ(fl_fault_kind_name(FL_FAULT_DELAY), "delay");
    ASSERT_STR_EQ(fl_fault_kind_name(FL_FAULT_ABORT), "abort");
    ASSERT_STR_EQ(fl_fault_kind_name(FL_FAULT_RESET), "reset");
}

TEST(fault_rng_reproducible)
{
    struct fl_rng a, b, c;
    fl_rng_seed(&a, 42);
    fl_rng_seed(&b, 42);
    fl_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = fl_rng_next(&a);
        ASSERT_UEQ(x, fl_rng_next(&b));
        differ += x != fl_rng_next(&c);
    }
    ASSERT_GT(differ, 990);
    /* Seed 0 must not give xoshiro's all-zero (stuck) state. */
    fl_rng_seed(&a, 0);
    ASSERT(a.s[0] | a.s[1] | a.s[2] | a.s[3]);
    ASSERT_NE(fl_rng_next(&a), fl_rng_next(&a));
}

TEST(fault_rng_below_bounds_and_uniform)
{
    struct fl_rng r;
    fl_rng_seed(&r, 7);
    ASSERT_UEQ(fl_rng_below(&r, 1), 0);
    /* Chi-square over 10 buckets, 9 degrees of freedom: 27.9 is p = 0.001. */
    unsigned cnt[10] = {0};
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        uint64_t v = fl_rng_below(&r, 10);
        ASSERT_ULT(v, 10);
        cnt[v]++;
    }
    double chi = 0;
    for (int i = 0; i < 10; i++)
        chi += (cnt[i] - n / 10.0) * (cnt[i] - n / 10.0) / (n / 10.0);
    if (chi > 27.9)
        UNIT_FAIL("chi-square %.1f over 27.9", chi);
    /* A bound just above 2^63: modulo would put ~2/3 of values below 2^62. */
    uint64_t big = (1ull << 63) + (1ull << 62), low = 0;
    for (int i = 0; i < 30000; i++) {
        uint64_t v = fl_rng_below(&r, big);
        ASSERT_ULT(v, big);
        low += v < (1ull << 62);
    }
    /* Uniform: P(v < 2^62) = 1/3, sigma ~ 82. */
    ASSERT_GT(low, 10000 - 400);
    ASSERT_LT(low, 10000 + 400);
    (void)fl_rng_below(&r, 0); /* full range; must not divide by zero */
}

/* 1,000,000 decisions at 12.3456% land within 4 sigma of the expectation. */
TEST(fault_percent_accuracy)
{
    struct fl_policy *p = load_rules("    - name: r\n"
                                     "      fault: {abort: {status: 503, percent: 12.3456}}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    const uint64_t n = 1000000;
    uint64_t hits = 0;
    fl_rng_seed(&rng, 12345);
    for (uint64_t i = 0; i < n; i++) {
        int r = fl_fault_decide(p, "l1", &rq, &rng, 0, &d);
        ASSERT_EQ(r, d.abort);
        hits += (uint64_t)r;
        release(&d);
    }
    double pr = 0.123456, sigma = sqrt((double)n * pr * (1 - pr));
    double dev = fabs((double)hits - (double)n * pr);
    if (dev > 4 * sigma)
        UNIT_FAIL("%ju hits in %ju: %.1f off, 4 sigma is %.1f", (uintmax_t)hits, (uintmax_t)n,
                  dev, 4 * sigma);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.matched), n);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.injected[FL_FAULT_ABORT]), hits);
    ASSERT_UEQ(atomic_load(&fl_fault_global.requests_total), n);
    ASSERT_UEQ(atomic_load(&fl_fault_global.active_faults), 0);
    fl_policy_unref(p);
}

TEST(fault_percent_edges)
{
    struct fl_policy *p = load_rules("    - name: never\n"
                                     "      match: {method: POST}\n"
                                     "      fault: {abort: {status: 503, percent: 0}}\n"
                                     "    - name: always\n"
                                     "      fault: {abort: {status: 503, percent: 100}}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    for (int i = 0; i < 20000; i++) {
        ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
        ASSERT(d.rule == &p->rules[1]);
        release(&d);
    }
    rq.method = FL_M_POST;
    for (int i = 0; i < 20000; i++) {
        ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 0);
        ASSERT(d.rule == &p->rules[0]); /* it fitted and decided: no fault */
    }
    ASSERT_UEQ(atomic_load(&p->rules[0].live.matched), 20000);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.injected[FL_FAULT_ABORT]), 0);
    fl_policy_unref(p);
}

/* The same seed gives the same decisions, delays included. */
TEST(fault_seed_reproducible)
{
    struct fl_policy *p = load_rules(
        "    - name: r\n"
        "      fault:\n"
        "        delay: {fixed: 10ms, jitter: 90ms, percent: 30}\n"
        "        abort: {status: 500, percent: 20}\n"
        "        reset: {percent: 10}\n");
    struct fl_rng a, b;
    struct fl_request rq = any_req();
    struct fl_decision da, db;
    int faults = 0;
    fl_rng_seed(&a, 99);
    fl_rng_seed(&b, 99);
    for (int i = 0; i < 5000; i++) {
        int ra = fl_fault_decide(p, "l1", &rq, &a, 0, &da);
        int rb = fl_fault_decide(p, "l1", &rq, &b, 0, &db);
        ASSERT_EQ(ra, rb);
        ASSERT_EQ(da.delay, db.delay);
        ASSERT_UEQ(da.delay_ms, db.delay_ms);
        ASSERT_EQ(da.abort, db.abort);
        ASSERT_EQ(da.reset, db.reset);
        faults += ra;
        release(&da);
        release(&db);
    }
    ASSERT_GT(faults, 1000);
    ASSERT_UEQ(atomic_load(&fl_fault_global.active_faults), 0);
    fl_policy_unref(p);
}

TEST(fault_delay_jitter_bounds)
{
    struct fl_policy *p = load_rules("    - name: r\n"
                                     "      fault: {delay: {fixed: 100ms, jitter: 20ms}}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    uint64_t lo = UINT64_MAX, hi = 0;
    unsigned seen[21] = {0};
    fl_rng_seed(&rng, 5);
    for (int i = 0; i < 100000; i++) {
        ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
        ASSERT_EQ(d.delay, 1);
        ASSERT_EQ(d.abort, 0);
        ASSERT_EQ(d.reset, 0);
        ASSERT_UGE(d.delay_ms, 100);
        ASSERT_ULE(d.delay_ms, 120);
        seen[d.delay_ms - 100]++;
        lo = d.delay_ms < lo ? d.delay_ms : lo;
        hi = d.delay_ms > hi ? d.delay_ms : hi;
        release(&d);
    }
    /* Both ends are reachable ("uniform [0, jitter]", inclusive). */
    ASSERT_UEQ(lo, 100);
    ASSERT_UEQ(hi, 120);
    for (int i = 0; i <= 20; i++)
        ASSERT_GT(seen[i], 4000); /* ~4762 each */

    /* No jitter: exactly fixed. */
    struct fl_policy *q = load_rules("    - name: r\n"
                                     "      fault: {delay: {fixed: 1.5s}}\n");
    ASSERT_EQ(fl_fault_decide(q, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_UEQ(d.delay_ms, 1500);
    release(&d);
    fl_policy_unref(q);
    fl_policy_unref(p);
}

TEST(fault_reset_wins)
{
    struct fl_policy *p = load_rules("    - name: r\n"
                                     "      fault:\n"
                                     "        delay: {fixed: 1s}\n"
                                     "        abort: {status: 503}\n"
                                     "        reset: {}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_EQ(d.reset, 1);
    ASSERT_EQ(d.abort, 0);
    ASSERT_EQ(d.delay, 0);
    ASSERT(d.rule == &p->rules[0]);
    ASSERT_UEQ(atomic_load(&fl_fault_global.active_faults), 0); /* a reset holds nothing */
    ASSERT_UEQ(atomic_load(&p->rules[0].live.injected[FL_FAULT_RESET]), 1);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.injected[FL_FAULT_ABORT]), 0);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.injected[FL_FAULT_DELAY]), 0);
    fl_policy_unref(p);
}

TEST(fault_delay_then_abort)
{
    struct fl_policy *p = load_rules("    - name: r\n"
                                     "      fault:\n"
                                     "        delay: {fixed: 250ms}\n"
                                     "        abort: {status: 503}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_EQ(d.delay, 1);
    ASSERT_UEQ(d.delay_ms, 250);
    ASSERT_EQ(d.abort, 1);
    ASSERT_EQ(d.reset, 0);
    ASSERT_EQ(d.overflow, 0);
    /* One unit per held kind; each is released separately. */
    ASSERT_UEQ(atomic_load(&fl_fault_global.active_faults), 2);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.injected[FL_FAULT_DELAY]), 1);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.injected[FL_FAULT_ABORT]), 1);
    fl_fault_release();
    fl_fault_release();
    ASSERT_UEQ(atomic_load(&fl_fault_global.active_faults), 0);
    fl_policy_unref(p);
}

TEST(fault_halted_injects_nothing)
{
    struct fl_policy *p = load_rules("    - name: r\n"
                                     "      fault: {reset: {}}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    atomic_store(&fl_fault_global.halted, 1);
    for (int i = 0; i < 100; i++) {
        ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 0);
        ASSERT_NULL(d.rule);
        ASSERT_EQ(d.reset, 0);
    }
    ASSERT_UEQ(atomic_load(&fl_fault_global.requests_total), 100);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.matched), 0);
    atomic_store(&fl_fault_global.halted, 0);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_EQ(d.reset, 1);
    fl_policy_unref(p);
}

TEST(fault_policy_expiry)
{
    struct fl_policy *p = load_rules("    - name: r\n"
                                     "      fault: {reset: {}}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    atomic_store(&fl_fault_global.policy_deadline_ms, 5000);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 4999, &d), 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 5000, &d), 0);
    ASSERT_NULL(d.rule);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 99999, &d), 0);
    atomic_store(&fl_fault_global.policy_deadline_ms, 0); /* 0: no deadline */
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, UINT64_MAX, &d), 1);
    ASSERT_UEQ(atomic_load(&fl_fault_global.requests_total), 4);
    fl_policy_unref(p);
}

TEST(fault_max_active_overflow)
{
    struct fl_policy *p = load_rules("    - name: r\n"
                                     "      fault: {abort: {status: 503}}\n");
    p->max_active_faults = 2;
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_UEQ(atomic_load(&fl_fault_global.active_faults), 2);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 0);
    ASSERT_EQ(d.overflow, 1);
    ASSERT_EQ(d.abort, 0);
    ASSERT(d.rule == &p->rules[0]);
    ASSERT_UEQ(atomic_load(&fl_fault_global.faults_overflow_total), 1);
    ASSERT_UEQ(atomic_load(&fl_fault_global.active_faults), 2);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.injected[FL_FAULT_ABORT]), 2);
    fl_fault_release();
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_EQ(d.overflow, 0);
    ASSERT_EQ(d.abort, 1);
    ASSERT_UEQ(atomic_load(&fl_fault_global.active_faults), 2);
    fl_policy_unref(p);
}

TEST(fault_max_active_holds_back_resets)
{
    /* From the file: limits.yaml-style max_active_faults. */
    struct fl_policy *p = unit_load(UNIT_POLICY_HEAD "  max_active_faults: 1\n"
                                                     "  rules:\n"
                                                     "    - name: slow\n"
                                                     "      match: {path: {exact: /slow}}\n"
                                                     "      fault: {delay: {fixed: 1s}}\n"
                                                     "    - name: reset\n"
                                                     "      fault: {reset: {}}\n");
    ASSERT_UEQ(p->max_active_faults, 1);
    struct fl_rng rng;
    struct fl_request slow = any_req(), other = any_req();
    struct fl_decision d;
    slow.path = "/slow";
    slow.path_len = 5;
    fl_rng_seed(&rng, 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &slow, &rng, 0, &d), 1);
    ASSERT_EQ(d.delay, 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &other, &rng, 0, &d), 0);
    ASSERT_EQ(d.overflow, 1);
    ASSERT_EQ(d.reset, 0);
    fl_fault_release();
    ASSERT_EQ(fl_fault_decide(p, "l1", &other, &rng, 0, &d), 1);
    ASSERT_EQ(d.reset, 1);
    ASSERT_UEQ(atomic_load(&fl_fault_global.faults_overflow_total), 1);
    fl_policy_unref(p);
}

TEST(fault_first_fitting_rule_decides)
{
    struct fl_policy *p = load_rules("    - name: orders-only\n"
                                     "      match: {path: {prefix: /orders}}\n"
                                     "      fault: {abort: {status: 500}}\n"
                                     "    - name: catch-all\n"
                                     "      fault: {abort: {status: 503}}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_STR_EQ(d.rule->name, "catch-all");
    release(&d);
    rq.path = "/orders/7";
    rq.path_len = 9;
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_STR_EQ(d.rule->name, "orders-only");
    ASSERT_EQ(d.rule->abort.status, 500);
    release(&d);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.matched), 1);
    ASSERT_UEQ(atomic_load(&p->rules[1].live.matched), 1);
    fl_policy_unref(p);
}

TEST(fault_live_overrides)
{
    struct fl_policy *p = load_rules("    - name: first\n"
                                     "      fault: {abort: {status: 500}}\n"
                                     "    - name: second\n"
                                     "      fault: {abort: {status: 503, percent: 0}}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    /* A disabled rule does not fit at all: the next one decides. */
    atomic_store(&p->rules[0].live.enabled, 0);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 0);
    ASSERT(d.rule == &p->rules[1]);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.matched), 0);
    /* A live percent overrides the file's; UINT32_MAX restores it. */
    atomic_store(&p->rules[1].live.ppm[FL_FAULT_ABORT], FL_PPM_MAX);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 1);
    ASSERT_EQ(d.rule->abort.status, 503);
    release(&d);
    atomic_store(&p->rules[1].live.ppm[FL_FAULT_ABORT], UINT32_MAX);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 0);
    atomic_store(&p->rules[0].live.enabled, 1);
    atomic_store(&p->rules[0].live.ppm[FL_FAULT_ABORT], 0);
    for (int i = 0; i < 1000; i++)
        ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 0);
    ASSERT_UEQ(atomic_load(&p->rules[0].live.matched), 1000);
    fl_policy_unref(p);
}

TEST(fault_scope_on)
{
    struct fl_policy *p = load_rules("    - name: target-only\n"
                                     "      on: [t1]\n"
                                     "      fault: {reset: {}}\n");
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    ASSERT_EQ(fl_fault_decide(p, "l1", &rq, &rng, 0, &d), 0);
    ASSERT_NULL(d.rule);
    ASSERT_EQ(fl_fault_decide(p, "t1", &rq, &rng, 0, &d), 1);
    ASSERT_EQ(d.reset, 1);
    fl_policy_unref(p);
}

TEST(fault_no_policy)
{
    struct fl_rng rng;
    struct fl_request rq = any_req();
    struct fl_decision d;
    fl_rng_seed(&rng, 1);
    ASSERT_EQ(fl_fault_decide(NULL, "l1", &rq, &rng, 0, &d), 0);
    ASSERT_NULL(d.rule);
    ASSERT_UEQ(atomic_load(&fl_fault_global.requests_total), 1);
}
