/* rule_index: which rules of a policy can fit a request, without trying each.
 *
 * Built once per policy snapshot when it is loaded (fl_policy_load builds it)
 * and read by every worker's decisions; immutable once built.
 */
#ifndef FL_RULE_INDEX_H
#define FL_RULE_INDEX_H

#include "compiler.h"
#include "match.h"
#include "policy.h"

/* Builds p->index, which lets a decision look only at the rules that can fit a
 * request's method and first path segment. Returns 0 or -ENOMEM. */
int fl_rule_index_build(struct fl_policy *p) FL_WUR;
/* Accepts NULL. */
void fl_rule_index_free(struct fl_rule_index *ix);

/* The first rule, in policy order, that is enabled, applies to scope and fits
 * req; NULL if none. Works without an index too (tries every rule). The rule
 * is returned non-const because its live counters are atomics the caller
 * updates. */
struct fl_rule *fl_rule_index_first(const struct fl_policy *p, const char *scope,
                                    const struct fl_request *req);

#endif
