/* fault: the per-request decision. Runs on every request of every worker:
 * no allocation, no locks, only relaxed atomics on shared counters. */
#include "fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fl_global fl_global;

const char *fl_fault_kind_name(enum fl_fault_kind k)
{
    switch (k) {
    case FL_FAULT_DELAY: return "delay";
    case FL_FAULT_ABORT: return "abort";
    case FL_FAULT_RESET: return "reset";
    }
    return "unknown";
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fl_rng_seed(struct fl_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t fl_rng_next(struct fl_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t fl_rng_below(struct fl_rng *r, uint64_t n)
{
    /* n == 0 stands for 2^64 (what jitter_ms + 1 wraps to): the full range. */
    if (n == 0)
        return fl_rng_next(r);
    /* Rejection sampling keeps every value equally likely (no modulo bias). */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = fl_rng_next(r);
    } while (x >= limit);
    return x % n;
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


/* ---- rule index ----
 *
 * With many rules, trying each in order costs more than the proxying. Rules
 * whose path condition is an exact or prefix literal that spans a whole first
 * segment ("/api/..." or exact "/health") can only fit requests whose path has
 * that first segment, so they sit in a hash bucket for it; every other rule is
 * listed per method it can fit. A request merges its bucket and its method's
 * list, both in rule order, so the first fitting rule still decides. */

struct seg_bucket {
    const char *seg; /* points into the rule's path literal */
    size_t len;
    uint32_t *rules;
    uint32_t n;
};

struct fl_rule_index {
    uint32_t *generic[FL_M__COUNT];
    uint32_t n_generic[FL_M__COUNT];
    struct seg_bucket *buckets;
    size_t n_buckets; /* power of two, or 0 */
};

static uint64_t seg_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Length of the first segment of path ("/api" of "/api/v1"), or 0 if the
 * literal does not pin it (see above). */
static size_t literal_seg(const struct fl_str_match *m)
{
    if ((m->kind != FL_SM_EXACT && m->kind != FL_SM_PREFIX) || m->len < 1 || m->value[0] != '/')
        return 0;
    const char *slash = memchr(m->value + 1, '/', m->len - 1);
    if (slash)
        return (size_t)(slash - m->value);
    return m->kind == FL_SM_EXACT ? m->len : 0;
}

static size_t request_seg(const char *path, size_t len)
{
    if (len == 0 || path[0] != '/')
        return len;
    const char *slash = memchr(path + 1, '/', len - 1);
    return slash ? (size_t)(slash - path) : len;
}

static struct seg_bucket *bucket_find(struct fl_rule_index *ix, const char *seg, size_t len,
                                      int create)
{
    if (!ix->n_buckets)
        return NULL;
    size_t mask = ix->n_buckets - 1;
    for (size_t i = seg_hash(seg, len) & mask;; i = (i + 1) & mask) {
        struct seg_bucket *b = &ix->buckets[i];
        if (!b->seg) {
            if (!create)
                return NULL;
            b->seg = seg;
            b->len = len;
            return b;
        }
        if (b->len == len && memcmp(b->seg, seg, len) == 0)
            return b;
    }
}

void fl_rule_index_free(struct fl_rule_index *ix)
{
    if (!ix)
        return;
    for (int m = 0; m < FL_M__COUNT; m++)
        free(ix->generic[m]);
    for (size_t i = 0; i < ix->n_buckets; i++)
        free(ix->buckets[i].rules);
    free(ix->buckets);
    free(ix);
}

int fl_rule_index_build(struct fl_policy *p)
{
    struct fl_rule_index *ix = calloc(1, sizeof(*ix));
    size_t n_seg = 0;
    if (!ix)
        return -ENOMEM;
    for (size_t i = 0; i < p->n_rules; i++)
        n_seg += literal_seg(&p->rules[i].match.path) != 0;
    if (n_seg) {
        ix->n_buckets = 8;
        while (ix->n_buckets < n_seg * 2)
            ix->n_buckets *= 2;
        ix->buckets = calloc(ix->n_buckets, sizeof(*ix->buckets));
        if (!ix->buckets)
            goto nomem;
    }
    for (int m = 0; m < FL_M__COUNT; m++) {
        ix->generic[m] = calloc(p->n_rules ? p->n_rules : 1, sizeof(uint32_t));
        if (!ix->generic[m])
            goto nomem;
    }
    for (size_t i = 0; i < p->n_rules; i++) {
        const struct fl_match *mt = &p->rules[i].match;
        size_t sl = literal_seg(&mt->path);
        if (sl) {
            struct seg_bucket *b = bucket_find(ix, mt->path.value, sl, 1);
            uint32_t *nr = realloc(b->rules, (b->n + 1) * sizeof(*nr));
            if (!nr)
                goto nomem;
            b->rules = nr;
            b->rules[b->n++] = (uint32_t)i;
            continue;
        }
        for (int m = 0; m < FL_M__COUNT; m++)
            if (!mt->methods || (mt->methods & (1u << m)))
                ix->generic[m][ix->n_generic[m]++] = (uint32_t)i;
    }
    p->index = ix;
    return 0;
nomem:
    fl_rule_index_free(ix);
    return -ENOMEM;
}

static int fits(const struct fl_policy *p, uint32_t i, const char *scope,
                const struct fl_request *req)
{
    const struct fl_rule *r = &p->rules[i];
    return atomic_load_explicit(&r->live.enabled, memory_order_relaxed) &&
           fl_rule_applies_to(r, scope) && fl_match_request(&r->match, req);
}

/* The first rule, in policy order, that fits req; NULL if none. */
static struct fl_rule *first_fit(const struct fl_policy *p, const char *scope,
                                 const struct fl_request *req)
{
    const struct fl_rule_index *ix = p->index;
    /* Rules are immutable but for their live atomics; the casts reach those. */
    if (!ix) {
        for (size_t i = 0; i < p->n_rules; i++)
            if (fits(p, (uint32_t)i, scope, req))
                return (struct fl_rule *)&p->rules[i];
        return NULL;
    }
    const uint32_t *g = ix->generic[req->method < FL_M__COUNT ? req->method : FL_M_OTHER];
    uint32_t ng = ix->n_generic[req->method < FL_M__COUNT ? req->method : FL_M_OTHER];
    const uint32_t *b = NULL;
    uint32_t nb = 0;
    const struct seg_bucket *bk =
        bucket_find((struct fl_rule_index *)ix, req->path, request_seg(req->path, req->path_len), 0);
    if (bk) {
        b = bk->rules;
        nb = bk->n;
    }
    uint32_t gi = 0, bi = 0;
    while (gi < ng || bi < nb) {
        uint32_t i;
        if (bi >= nb || (gi < ng && g[gi] < b[bi]))
            i = g[gi++];
        else
            i = b[bi++];
        if (fits(p, i, scope, req))
            return (struct fl_rule *)&p->rules[i];
    }
    return NULL;
}

int fl_fault_decide(const struct fl_policy *p, const char *scope, const struct fl_request *req,
                    struct fl_rng *rng, uint64_t now_ms, struct fl_decision *d)
{
    memset(d, 0, sizeof(*d));
    atomic_fetch_add_explicit(&fl_global.requests_total, 1, memory_order_relaxed);
    if (!p || p->n_rules == 0 || atomic_load_explicit(&fl_global.halted, memory_order_relaxed))
        return 0;
    uint64_t deadline = atomic_load_explicit(&fl_global.policy_deadline_ms, memory_order_relaxed);
    if (deadline && now_ms >= deadline)
        return 0;

    struct fl_rule *r = first_fit(p, scope, req);
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
        unsigned active = atomic_load_explicit(&fl_global.active_faults, memory_order_relaxed);
        if (active >= p->max_active_faults) {
            atomic_fetch_add_explicit(&fl_global.faults_overflow_total, 1, memory_order_relaxed);
            d->abort = d->delay = d->reset = 0;
            d->overflow = 1;
            return 0;
        }
        /* One unit per held kind: callers release the delay's share when the
         * timer fires and the abort's once the answer is queued. */
        if (d->abort || d->delay)
            atomic_fetch_add_explicit(&fl_global.active_faults, (unsigned)(d->abort + d->delay),
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
    atomic_fetch_sub_explicit(&fl_global.active_faults, 1, memory_order_relaxed);
}
