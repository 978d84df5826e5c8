#include "runtime.h"

#include "kubernetes.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "faultlog.h"
#include "log.h"
#include "transparent.h"
#include "workers.h"

#define RT_MAX_SUBSCRIBERS 8
#define RT_REASON_MAX 512

/* A FaultPolicy resource in the set: when it expires, and whether it has. */
struct rt_part {
    struct fl_policy *p; /* reference */
    uint64_t deadline;   /* monotonic ms; 0 = none */
    int expired;
};

static struct {
    uv_loop_t *loop;
    struct fl_policy *policy; /* in force (reference): file and resources composed */
    struct fl_policy *file;   /* the file's (or the admin API's) policy, or NULL */
    uint64_t file_deadline;   /* monotonic ms; 0 = none */
    int file_expired;
    struct rt_part *res;
    size_t n_res;
    struct fl_policy *toxi; /* the Toxiproxy API's proxies and toxics, or NULL */
    uv_timer_t ttl_timer;
    int timer_open;
    struct fl_runtime_snapshot snaps[FL_RUNTIME_HISTORY];
    int n_snaps;
    unsigned long long gen_counter;
    char halt_reason[RT_REASON_MAX];
    struct {
        char reason[RT_REASON_MAX]; /* "" while this source does not hold */
        char todo[RT_REASON_MAX];
    } holds[FL_HALT_SOURCES];
    struct {
        fl_event_cb cb;
        void *arg;
    } subs[RT_MAX_SUBSCRIBERS];
    int n_subs;
} runtime;

int fl_runtime_init(uv_loop_t *loop)
{
    memset(&runtime, 0, sizeof(runtime));
    runtime.loop = loop;
    int e = uv_timer_init(loop, &runtime.ttl_timer);
    if (e < 0)
        return e;
    runtime.timer_open = 1;
    return 0;
}

void fl_runtime_close(void)
{
    if (runtime.timer_open)
        uv_close((uv_handle_t *)&runtime.ttl_timer, NULL);
    runtime.timer_open = 0;
    for (int i = 0; i < runtime.n_snaps; i++)
        fl_policy_unref(runtime.snaps[i].p);
    runtime.n_snaps = 0;
    fl_policy_unref(runtime.policy);
    runtime.policy = NULL;
    fl_policy_unref(runtime.file);
    fl_policy_unref(runtime.toxi);
    runtime.toxi = NULL;
    runtime.file = NULL;
    for (size_t i = 0; i < runtime.n_res; i++)
        fl_policy_unref(runtime.res[i].p);
    free(runtime.res);
    runtime.res = NULL;
    runtime.n_res = 0;
    runtime.n_subs = 0;
}

struct fl_policy *fl_runtime_policy(void)
{
    return runtime.policy;
}

struct fl_policy *fl_runtime_file_policy(void)
{
    return runtime.file;
}

/* The generation of p: its held snapshot's, or a new one (the oldest held
 * snapshot is dropped to make room). */
static unsigned long long record_generation(struct fl_policy *p)
{
    for (int i = 0; i < runtime.n_snaps; i++)
        if (runtime.snaps[i].p == p)
            return runtime.snaps[i].gen;
    if (runtime.n_snaps == FL_RUNTIME_HISTORY) {
        fl_policy_unref(runtime.snaps[0].p);
        memmove(&runtime.snaps[0], &runtime.snaps[1],
                sizeof(runtime.snaps[0]) * (FL_RUNTIME_HISTORY - 1));
        runtime.n_snaps--;
    }
    runtime.snaps[runtime.n_snaps].p = fl_policy_ref(p);
    runtime.snaps[runtime.n_snaps].gen = ++runtime.gen_counter;
    return runtime.snaps[runtime.n_snaps++].gen;
}

unsigned long long fl_runtime_generation(void)
{
    for (int i = 0; runtime.file && i < runtime.n_snaps; i++)
        if (runtime.snaps[i].p == runtime.file)
            return runtime.snaps[i].gen;
    return 0;
}

const struct fl_runtime_snapshot *fl_runtime_history(int *n)
{
    *n = runtime.n_snaps;
    return runtime.snaps;
}

struct fl_policy *fl_runtime_snapshot(unsigned long long gen)
{
    for (int i = 0; i < runtime.n_snaps; i++)
        if (runtime.snaps[i].gen == gen)
            return runtime.snaps[i].p;
    return NULL;
}

static void arm_ttl(void);
static int recompose(char *err, size_t errlen);

static void ttl_cb(uv_timer_t *t)
{
    (void)t;
    uint64_t now = uv_now(runtime.loop);
    int drop = 0;
    if (runtime.file && runtime.file_deadline && !runtime.file_expired &&
        now >= runtime.file_deadline) {
        runtime.file_expired = 1;
        fl_warn("policy '%s' expired after its ttl; no faults are injected until a new policy "
                "is applied (faultctl apply, or edit the file and send SIGHUP)",
                runtime.file->name);
        struct fl_event ev = {.kind = FL_EVENT_EXPIRED, .policy = runtime.file->name};
        fl_runtime_emit(&ev);
    }
    for (size_t i = 0; i < runtime.n_res; i++) {
        struct rt_part *r = &runtime.res[i];
        if (r->expired || !r->deadline || now < r->deadline)
            continue;
        r->expired = drop = 1;
        fl_warn("FaultPolicy %s expired after its ttl (counted from its creationTimestamp); "
                "it injects nothing more: delete it, or create it anew to run it again",
                r->p->id);
        struct fl_event ev = {.kind = FL_EVENT_EXPIRED, .policy = r->p->id};
        fl_runtime_emit(&ev);
    }
    if (drop) {
        char err[512];
        if (recompose(err, sizeof(err)) < 0)
            fl_error("dropping the expired FaultPolicies failed: %s; their rules stay off by "
                     "their deadline", err);
    }
    fl_workers_recheck();
    arm_ttl();
}

/* The TTL timer fires at the next deadline of the set. */
static void arm_ttl(void)
{
    uint64_t next = 0, now = uv_now(runtime.loop);
    if (runtime.file && runtime.file_deadline && !runtime.file_expired)
        next = runtime.file_deadline;
    for (size_t i = 0; i < runtime.n_res; i++)
        if (!runtime.res[i].expired && runtime.res[i].deadline &&
            (!next || runtime.res[i].deadline < next))
            next = runtime.res[i].deadline;
    uv_timer_stop(&runtime.ttl_timer);
    if (next)
        uv_timer_start(&runtime.ttl_timer, ttl_cb, next > now ? next - now : 0, 0);
}

/* Counters follow a rule by its policy and name, so the Prometheus series
 * stay monotonic; live changes (faultctl set/disable) follow it while its
 * policy is the same loaded one. */
static void carry(struct fl_policy *to, const struct fl_policy *from,
                  const struct fl_policy *newfile)
{
    if (!from || to == from)
        return;
    for (size_t i = 0; i < to->n_rules; i++) {
        struct fl_rule *r = &to->rules[i];
        const struct fl_rule *o = NULL;
        for (size_t k = 0; k < from->n_rules && !o; k++) {
            const struct fl_rule *c = &from->rules[k];
            if (strcmp(c->name, r->name) == 0 &&
                (c->part == r->part ||
                 (c->part == runtime.file && r->part == newfile && newfile) ||
                 (c->policy_id && r->policy_id && strcmp(c->policy_id, r->policy_id) == 0)))
                o = c;
        }
        if (!o)
            continue;
        struct fl_rule_live *l = &r->live;
        struct fl_rule_live *ol = (struct fl_rule_live *)&o->live;
        atomic_store(&l->matched, atomic_load(&ol->matched));
        for (int k = 0; k < FL_FAULT_KINDS; k++)
            atomic_store(&l->injected[k], atomic_load(&ol->injected[k]));
        if (o->part != r->part)
            continue;
        atomic_store(&l->enabled, atomic_load(&ol->enabled));
        for (int k = 0; k < FL_FAULT_KINDS; k++)
            atomic_store(&l->ppm[k], atomic_load(&ol->ppm[k]));
        atomic_store(&l->delay_fixed_ms, atomic_load(&ol->delay_fixed_ms));
        atomic_store(&l->abort_status, atomic_load(&ol->abort_status));
    }
}

/* Composes file (the candidate file policy, or NULL) with the live
 * resources, oldest first. */
static int compose(struct fl_policy *file, uint64_t file_deadline, struct fl_policy **out)
{
    struct fl_policy **parts = calloc(runtime.n_res + 2, sizeof(*parts));
    uint64_t *dl = calloc(runtime.n_res + 2, sizeof(*dl));
    size_t n = 0;
    int e = -ENOMEM;
    if (!parts || !dl)
        goto out;
    if (file) {
        dl[n] = file_deadline;
        parts[n++] = file;
    }
    if (runtime.toxi)
        parts[n++] = runtime.toxi; /* no TTL: Toxiproxy's toxics last until removed */
    for (size_t i = 0; i < runtime.n_res; i++)
        if (!runtime.res[i].expired) {
            dl[n] = runtime.res[i].deadline;
            parts[n++] = runtime.res[i].p;
        }
    if (n == 0) {
        *out = fl_policy_empty("(none)");
        e = *out ? 0 : -ENOMEM;
    } else {
        e = fl_policy_compose(parts, dl, n, file != NULL, out);
    }
out:
    free(parts);
    free(dl);
    return e;
}

/* Makes c (composed) the policy in force: transparent mode and worker 0's
 * listeners take it first, and nothing changes when either refuses. */
static int install(struct fl_policy *c, const struct fl_policy *newfile, uint64_t file_deadline,
                   char *err, size_t errlen)
{
    carry(c, runtime.policy, newfile);
    int e = fl_transparent_apply(c, err, errlen);
    if (e < 0)
        return e;
    e = fl_workers_apply(c, err, errlen);
    if (e < 0) {
        char ignored[256];
        if (runtime.policy)
            (void)!fl_transparent_apply(runtime.policy, ignored, sizeof(ignored));
        return e;
    }
    fl_policy_unref(runtime.policy);
    runtime.policy = fl_policy_ref(c);
    fl_kubernetes_policy(c);
    /* A single file policy expires by the global deadline; in a set each
     * rule carries its own policy's. */
    atomic_store(&fl_fault_global.policy_deadline_ms, c->parts ? 0 : file_deadline);
    return 0;
}

static int recompose(char *err, size_t errlen)
{
    struct fl_policy *c = NULL;
    if (compose(runtime.file, runtime.file_expired ? 1 : runtime.file_deadline, &c) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int e = install(c, runtime.file, runtime.file_expired ? 1 : runtime.file_deadline, err,
                    errlen);
    fl_policy_unref(c);
    return e;
}

int fl_runtime_set_resources(struct fl_policy *const *ps, const uint64_t *deadlines, size_t n,
                             char *err, size_t errlen)
{
    struct rt_part *old = runtime.res;
    size_t n_old = runtime.n_res;
    struct rt_part *nw = calloc(n + 1, sizeof(*nw));
    if (!nw) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    uint64_t now = uv_now(runtime.loop);
    for (size_t i = 0; i < n; i++) {
        nw[i].p = fl_policy_ref(ps[i]);
        nw[i].deadline = deadlines[i];
        nw[i].expired = deadlines[i] && now >= deadlines[i];
    }
    runtime.res = nw;
    runtime.n_res = n;
    int e = recompose(err, errlen);
    if (e < 0) {
        for (size_t i = 0; i < n; i++)
            fl_policy_unref(nw[i].p);
        free(nw);
        runtime.res = old;
        runtime.n_res = n_old;
        return e;
    }
    for (size_t i = 0; i < n_old; i++)
        fl_policy_unref(old[i].p);
    free(old);
    arm_ttl();
    return 0;
}

int fl_runtime_set_toxiproxy(struct fl_policy *p, char *err, size_t errlen)
{
    struct fl_policy *old = runtime.toxi;
    runtime.toxi = p ? fl_policy_ref(p) : NULL;
    int e = recompose(err, errlen);
    if (e < 0) {
        fl_policy_unref(runtime.toxi);
        runtime.toxi = old;
        return e;
    }
    fl_policy_unref(old);
    return 0;
}

int fl_runtime_resource_expired(const struct fl_policy *p)
{
    for (size_t i = 0; i < runtime.n_res; i++)
        if (runtime.res[i].p == p)
            return runtime.res[i].expired;
    return 0;
}

int fl_runtime_check(const struct fl_policy *p, char *err, size_t errlen)
{
    if (p->n_listeners == 0 && p->n_targets == 0) {
        snprintf(err, errlen,
                 "the policy has no 'listeners' and no 'targets'; add a listener "
                 "(listen: 127.0.0.1:15000, upstream: HOST:PORT) or a target");
        return -EINVAL;
    }
    int e = fl_kubernetes_check(p, err, errlen);
    if (e < 0)
        return e;
    /* At startup transparent mode is started from the policy itself; once
     * running, a new policy must fit the mode the daemon runs in. */
    if (runtime.policy)
        return fl_transparent_check(p, err, errlen);
    if (p->n_targets)
        return fl_transparent_probe(err, errlen); /* before anything starts: exit 2 */
    return 0;
}

int fl_runtime_apply(struct fl_policy *p, char *err, size_t errlen)
{
    uint64_t now = uv_now(runtime.loop);
    uint64_t deadline = p->ttl_ms ? now + p->ttl_ms : 0;
    struct fl_policy *c = NULL;
    if (compose(p, deadline, &c) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int e = install(c, p, deadline, err, errlen);
    fl_policy_unref(c);
    if (e < 0)
        return e;
    fl_policy_unref(runtime.file);
    runtime.file = fl_policy_ref(p);
    runtime.file_deadline = deadline;
    runtime.file_expired = 0;
    record_generation(p);
    arm_ttl();
    return 0;
}

void fl_runtime_carry_counters(struct fl_policy *to)
{
    carry(to, runtime.policy, to);
}

static void halt_as(const char *reason, const char *what_to_do)
{
    snprintf(runtime.halt_reason, sizeof(runtime.halt_reason), "%s", reason ? reason : "");
    atomic_store(&fl_fault_global.halted, 1);
    fl_workers_recheck(); /* live connection faults end now */
    fl_warn("injection halted%s%s; %s", reason ? ": " : "", reason ? reason : "", what_to_do);
    struct fl_event ev = {.kind = FL_EVENT_HALT, .reason = runtime.halt_reason};
    fl_runtime_emit(&ev);
}

/* The first source that holds, or NULL. */
static const char *holding(const char **todo)
{
    for (int i = 0; i < FL_HALT_SOURCES; i++)
        if (runtime.holds[i].reason[0]) {
            if (todo)
                *todo = runtime.holds[i].todo;
            return runtime.holds[i].reason;
        }
    return NULL;
}

void fl_runtime_halt(const char *reason)
{
    const char *todo = NULL;
    halt_as(reason, holding(&todo) ? todo : "resume with 'faultctl resume'");
}

static void resume_now(void)
{
    atomic_store(&fl_fault_global.halted, 0);
    fl_info("injection resumed");
    struct fl_event ev = {.kind = FL_EVENT_RESUME};
    fl_runtime_emit(&ev);
}

int fl_runtime_resume(char *err, size_t errlen)
{
    const char *todo = NULL, *by = holding(&todo);
    if (by) {
        snprintf(err, errlen, "halted by %s; %s", by, todo);
        return -EBUSY;
    }
    if (fl_runtime_halted())
        resume_now();
    return 0;
}

void fl_runtime_hold_halt(enum fl_halt_source src, int on, const char *reason,
                          const char *what_to_do)
{
    if ((int)src < 0 || src >= FL_HALT_SOURCES)
        return;
    if (on) {
        /* Held already for the same reason: nothing new to say. */
        if (fl_runtime_halted() && strcmp(runtime.holds[src].reason, reason) == 0)
            return;
        snprintf(runtime.holds[src].reason, sizeof(runtime.holds[src].reason), "%s", reason);
        snprintf(runtime.holds[src].todo, sizeof(runtime.holds[src].todo), "%s", what_to_do);
        halt_as(reason, what_to_do);
        return;
    }
    if (!runtime.holds[src].reason[0])
        return;
    int mine = fl_runtime_halted() && strcmp(runtime.halt_reason, runtime.holds[src].reason) == 0;
    runtime.holds[src].reason[0] = 0;
    if (!mine)
        return;
    /* Another source still holds: the halt stays, with its reason. */
    const char *todo = NULL, *other = holding(&todo);
    if (other)
        halt_as(other, todo);
    else
        resume_now();
}

int fl_runtime_halted(void)
{
    return atomic_load(&fl_fault_global.halted);
}

const char *fl_runtime_halt_reason(void)
{
    return fl_runtime_halted() ? runtime.halt_reason : "";
}

long long fl_runtime_ttl_remaining_ms(void)
{
    uint64_t deadline = runtime.file_expired ? 1 : runtime.file_deadline;
    uint64_t now = uv_now(runtime.loop);
    if (!deadline)
        return -1;
    return now >= deadline ? 0 : (long long)(deadline - now);
}

int fl_runtime_subscribe(fl_event_cb cb, void *arg)
{
    if (runtime.n_subs == RT_MAX_SUBSCRIBERS)
        return -ENOSPC;
    runtime.subs[runtime.n_subs].cb = cb;
    runtime.subs[runtime.n_subs].arg = arg;
    runtime.n_subs++;
    return 0;
}

void fl_runtime_unsubscribe(fl_event_cb cb, void *arg)
{
    for (int i = 0; i < runtime.n_subs; i++)
        if (runtime.subs[i].cb == cb && runtime.subs[i].arg == arg) {
            memmove(&runtime.subs[i], &runtime.subs[i + 1],
                    sizeof(runtime.subs[0]) * (size_t)(runtime.n_subs - i - 1));
            runtime.n_subs--;
            return;
        }
}

void fl_runtime_emit(struct fl_event *ev)
{
    fl_log_timestamp(ev->ts, sizeof(ev->ts));
    for (int i = 0; i < runtime.n_subs; i++)
        runtime.subs[i].cb(ev, runtime.subs[i].arg);
}

void fl_runtime_counters(struct fl_runtime_counters *c)
{
    memset(c, 0, sizeof(*c));
    c->workers = fl_workers_count();
    for (int i = 0; i < c->workers && i < FL_WORKERS_MAX; i++) {
        c->worker_connections[i] = fl_workers_connections(i);
        c->active_connections += c->worker_connections[i];
    }
    c->active_faults = atomic_load(&fl_fault_global.active_faults);
    c->requests_total = atomic_load(&fl_fault_global.requests_total);
    c->faults_overflow_total = atomic_load(&fl_fault_global.faults_overflow_total);
    c->fault_log_dropped = atomic_load(&fl_faultlog_dropped);
    c->halted = atomic_load(&fl_fault_global.halted);
}
