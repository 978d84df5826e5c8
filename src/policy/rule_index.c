#include "rule_index.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* rule_index: the per-policy index that lets a decision try only the rules
 * that can fit a request.
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
        if (p->rules[i].conn_only)
            continue; /* decided per connection, when it is accepted; never per request */
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
    return !r->conn_only && atomic_load_explicit(&r->live.enabled, memory_order_relaxed) &&
           fl_policy_rule_applies_to(r, scope) && fl_match_request(&r->match, req);
}

struct fl_rule *fl_rule_index_first(const struct fl_policy *p, const char *scope,
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
    const struct seg_bucket *bk = bucket_find((struct fl_rule_index *)ix, req->path,
                                              request_seg(req->path, req->path_len), 0);
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
