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
    /* Response side (never with abort or reset): hold the response head
     * resp_delay_ms, rewrite it (rule->modify), cut its body
     * (rule->truncate), throttle the bodies (rule->bandwidth). These hold no
     * max_active_faults share: the limit is checked when they are decided. */
    int resp_delay;
    uint64_t resp_delay_ms;
    int modify;
    int truncate;
    int bandwidth;
    /* A from_headers rule: what the request's x-faultline-* headers asked
     * for. abort_status 0 / grpc_status -1: the rule's own. by_header: the
     * faults set came from the headers. bad: a header with a value that
     * cannot be used; the request is answered 400 (gRPC: INVALID_ARGUMENT)
     * with bad_msg, and nothing is injected. */
    int abort_status;
    int grpc_status;
    int by_header;
    int bad;
    char bad_msg[256];
};

#define FL_HDR_ABORT "x-faultline-abort"
#define FL_HDR_ABORT_GRPC "x-faultline-abort-grpc"
#define FL_HDR_DELAY "x-faultline-delay"
#define FL_HDR_PERCENT "x-faultline-percent"

/* The HTTP status an abort of d answers with (the header's, else the rule's). */
int fl_decision_abort_status(const struct fl_decision *d);
/* The gRPC status an abort of d answers a gRPC request with, or -1 for an
 * HTTP status. */
int fl_decision_grpc_status(const struct fl_decision *d);

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
