/* policy_json: JSON views of a policy snapshot for the admin API (jansson):
 * a rule as written and with its live state, the listeners, and what applying
 * one policy in place of another changes. Reads snapshots only. */
#ifndef FL_POLICY_JSON_H
#define FL_POLICY_JSON_H

#include <jansson.h>
#include <stdint.h>

#include "policy.h"

/* A percent for JSON from parts per million. */
double fl_policy_json_percent(uint32_t ppm);
/* A rule's connection faults as the admin API shows them. */
json_t *fl_policy_json_connection(const struct fl_connection_fault *cf);

/* The rule with its live state: enabled, effective percents (and whether
 * they are overridden), the counters. New reference. */
json_t *fl_policy_json_rule(struct fl_rule *r);

/* [{"name", "listen", "upstream"}, ...]. New reference. */
json_t *fl_policy_json_listeners(const struct fl_policy *p);

/* What applying b in place of a changes: policy name, settings, listeners and
 * rules (added, removed, changed with the parts that changed, reordered);
 * *n_changes counts them. New reference. */
json_t *fl_policy_json_diff(const struct fl_policy *a, const struct fl_policy *b, int *n_changes);

#endif
