/* fault: the per-request decision. Finds the first rule that fits, rolls each of
 * its fault kinds' dice, and applies the global limits (halt, TTL, max active). */
#ifndef FL_FAULT_H
#define FL_FAULT_H

#include <stdint.h>
#include "match.h"
#include "rng.h"
#include "policy.h"

const char *fl_fault_kind_name(enum fl_fault_kind k);


struct fl_decision {
    const struct fl_rule *rule; /* the rule that fit, or NULL */
    int delay;                  /* hold the request delay_ms first */
    uint64_t delay_ms;
    int abort; /* answer with rule->abort */
    int reset; /* reset the connection/stream */
    int overflow; /* a fault was due but max_active_faults was reached */
};

/* Process-wide switches, shared by all workers. */
struct fl_fault_global {
    atomic_int halted;
    atomic_uint active_faults; /* faults in progress (held delays, pending aborts) */
    atomic_ullong requests_total;
    atomic_ullong faults_overflow_total;
    atomic_ullong policy_deadline_ms; /* CLOCK_MONOTONIC ms at which the policy expires; 0 = none */
};

extern struct fl_fault_global fl_fault_global;

/* Decides what happens to req, arriving through scope (listener or target name).
 * now_ms is the loop's monotonic time. Fills *d; returns 1 if any fault is to be
 * injected, else 0. When it returns 1, active_faults was raised by one for each
 * of delay and abort that is set (reset holds nothing): the caller calls
 * fl_fault_release() once per such kind when that part has completed. When
 * max_active_faults is reached it returns 0 with d->overflow set and d->rule
 * naming the rule. */
int fl_fault_decide(const struct fl_policy *p, const char *scope, const struct fl_request *req,
                    struct fl_rng *rng, uint64_t now_ms, struct fl_decision *d);

void fl_fault_release(void);

#endif
