/* runtime: the state the daemon runs with and the admin API drives.
 *
 * The policy in force and the last FL_RUNTIME_HISTORY snapshots applied (by
 * generation, for rollback), the halt switch and its reason, the policy's TTL,
 * the process's counters, and the event bus: typed events (struct fl_event)
 * that any module emits and subscribers (the admin API's event stream) turn
 * into what they need. Applying a policy goes through here, so transparent
 * mode (steer) and the workers (proxy) always follow the same snapshot.
 *
 * The process's lifecycle (start, signals, reload, drain) is daemon.h's; it
 * starts this module and the admin API. Everything here runs on the main
 * loop's thread, except fl_runtime_counters (any thread).
 */
#ifndef FL_RUNTIME_H
#define FL_RUNTIME_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "compiler.h"
#include "policy.h"
#include "workers.h"

#define FL_RUNTIME_HISTORY 8 /* snapshots held for rollback */

enum fl_event_kind {
    FL_EVENT_RELOAD,   /* policy: the file was re-read (SIGHUP) and applied */
    FL_EVENT_APPLY,    /* policy, file, generation, changes: applied through the admin API */
    FL_EVENT_ROLLBACK, /* policy, generation: a held snapshot was re-applied */
    FL_EVENT_EXPIRED,  /* policy: its TTL ran out */
    FL_EVENT_HALT,     /* reason */
    FL_EVENT_RESUME,
    FL_EVENT_RULE, /* rule, changed: a rule was changed live */
    FL_EVENT_EXISTING_RESET, /* target, pod, count: existing: reset destroyed connections */
};

/* What a FL_EVENT_RULE changed (bits of fl_event.changed). */
#define FL_EVENT_RULE_ENABLED (1u << 0)
#define FL_EVENT_RULE_PERCENT(kind) (1u << (1 + (kind))) /* kind: enum fl_fault_kind */
#define FL_EVENT_RULE_DELAY_FIXED (1u << 4)
#define FL_EVENT_RULE_ABORT_STATUS (1u << 5)

/* One event. Pointers are borrowed for the duration of the delivery only. */
struct fl_event {
    enum fl_event_kind kind;
    char ts[32]; /* ISO 8601 UTC with milliseconds, set by fl_runtime_emit */
    const char *policy;
    const char *file;
    unsigned long long generation;
    int changes;
    const char *reason;
    const struct fl_rule *rule; /* as it is after the change */
    unsigned changed;
    const char *target, *pod; /* FL_EVENT_EXISTING_RESET */
    unsigned count;
};

typedef void (*fl_event_cb)(const struct fl_event *ev, void *arg);

/* The process's counters, read together. */
struct fl_runtime_counters {
    int workers;
    unsigned long active_connections;
    unsigned long worker_connections[FL_WORKERS_MAX]; /* the first `workers` entries */
    unsigned active_faults;
    unsigned long long requests_total;
    unsigned long long faults_overflow_total;
    unsigned long long fault_log_dropped;
    int halted;
};

/* Sets up the TTL timer on loop. Returns 0 or a negative errno. */
int fl_runtime_init(uv_loop_t *loop) FL_WUR;

/* Closes the timer and drops the policy and the history; the caller runs the
 * loop to finish the close. */
void fl_runtime_close(void);

/* The policy in force (borrowed; valid until the next apply), or NULL before
 * the first apply. */
struct fl_policy *fl_runtime_policy(void);

/* The file's policy (-f, SIGHUP, faultctl apply; borrowed), or NULL when
 * only FaultPolicy resources run. fl_runtime_policy() is it composed with
 * the resources (fl_policy_compose), or it itself when there are none. */
struct fl_policy *fl_runtime_file_policy(void);

/* Replaces the FaultPolicy resources in the set: ps[i] (oldest first)
 * expires at deadlines[i] (monotonic ms, 0 = never; one in the past is held
 * as expired and not applied). Composes them with the file's policy and
 * applies the result as fl_runtime_apply does; nothing changes when that
 * fails. At a deadline the policy is dropped from the set and
 * FL_EVENT_EXPIRED names its id. Returns 0 or a negative errno. */
/* Replaces the Toxiproxy API's policy (its proxies as listeners, its toxics
 * as rules; NULL: none) in the set, composed after the file's. It has no
 * TTL. Nothing changes when applying fails (a listen address in use). */
int fl_runtime_set_toxiproxy(struct fl_policy *p, char *err, size_t errlen) FL_WUR;

int fl_runtime_set_resources(struct fl_policy *const *ps, const uint64_t *deadlines, size_t n,
                             char *err, size_t errlen) FL_WUR;

/* 1 when the resource p of the set has expired. */
int fl_runtime_resource_expired(const struct fl_policy *p);

/* The generation of the file's policy in force (1 for the first), 0 before any. */
unsigned long long fl_runtime_generation(void);

/* The held snapshots, oldest first: *n of them, valid until the next apply. */
struct fl_runtime_snapshot {
    struct fl_policy *p;
    unsigned long long gen;
};
const struct fl_runtime_snapshot *fl_runtime_history(int *n);

/* The held snapshot of generation gen, or NULL. */
struct fl_policy *fl_runtime_snapshot(unsigned long long gen);

/* Can this daemon run p (transparent mode, listeners)? Before the first
 * apply, a p with targets is checked against the host (exit 2 when it cannot
 * run it); afterwards against the mode the daemon runs in. Returns 0, or
 * -ENOTSUP / -EINVAL with err saying why and what to do. Every way in
 * (startup, SIGHUP, the admin API) asks before applying. */
int fl_runtime_check(const struct fl_policy *p, char *err, size_t errlen) FL_WUR;

/* Makes p the file's policy, composed with the resources, atomically: transparent mode and worker 0's
 * listeners take it first and nothing changes when either refuses (err says
 * why); then every worker adopts it, the TTL restarts and p becomes the
 * newest generation (a held snapshot keeps its own). Takes a reference of its
 * own. Returns 0 or a negative errno. */
int fl_runtime_apply(struct fl_policy *p, char *err, size_t errlen) FL_WUR;

/* Copies the counters of the rules of the policy in force into the rules of
 * the same name in p, so the Prometheus series stay monotonic across an
 * apply. The fields are atomics: safe on a snapshot workers may read. */
void fl_runtime_carry_counters(struct fl_policy *p);

/* Halts or resumes all injection; logged and emitted as events. Resuming when
 * not halted does nothing (returns 0, no event). While a halt source holds
 * (fl_runtime_hold_halt) resuming is refused: -EBUSY, err says what to do. */
void fl_runtime_halt(const char *reason);
int fl_runtime_resume(char *err, size_t errlen) FL_WUR;
/* Halt sources: states, not commands. */
enum fl_halt_source {
    FL_HALT_FILE,    /* the HALT file, while it exists */
    FL_HALT_CLUSTER, /* the faultline-halt ConfigMap, while it exists */
    FL_HALT_SOURCES
};
/* A halt source is on or off. On: halts with reason, and resuming is refused
 * until it is off. Off: resumes if the halt in force is the one it made and
 * no other source holds (else the halt stays, with that source's reason).
 * what_to_do ends refusals of resume. Turning a source on again with the same
 * reason does nothing. */
void fl_runtime_hold_halt(enum fl_halt_source src, int on, const char *reason,
                          const char *what_to_do);
int fl_runtime_halted(void);
/* The reason of the halt in force ("" when not halted). */
const char *fl_runtime_halt_reason(void);

/* Milliseconds until the policy's TTL runs out: 0 when expired, -1 without
 * a TTL. */
long long fl_runtime_ttl_remaining_ms(void);

/* Subscribes cb to every event from now on (at most 8 subscribers). Returns
 * 0 or -ENOSPC. */
int fl_runtime_subscribe(fl_event_cb cb, void *arg) FL_WUR;
void fl_runtime_unsubscribe(fl_event_cb cb, void *arg);

/* Stamps ev->ts and delivers ev to every subscriber, synchronously. */
void fl_runtime_emit(struct fl_event *ev);

/* Fills *c. Any thread. */
void fl_runtime_counters(struct fl_runtime_counters *c);

#endif
