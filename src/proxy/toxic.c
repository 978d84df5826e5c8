#include "toxic.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "fault.h"
#include "faultlog.h"
#include "log.h"
#include "rng.h"
#include "worker.h"

/* Held bytes: a piece of a chunk (referenced) and when it may go. */
struct tox_seg {
    struct tox_seg *next;
    struct fl_chunk *ch;
    const char *p;
    size_t len;
    uint64_t due_ns; /* latency: not before (uv_hrtime clock) */
    uint64_t rate;   /* a request's bandwidth fault, bytes/s (0: none) */
};

/* One direction: the bytes written toward one side. */
struct tox_dir {
    struct tox_seg *head, *tail;
    size_t bytes;      /* held */
    size_t pinned;     /* chunk memory the held pieces keep */
    uint64_t last_due; /* latency keeps order: a piece is never due before the one ahead */
    uint64_t next_ns;  /* bandwidth and slicer: the next piece not before */
    uint64_t sent;     /* let through since the fault began (limit_data) */
    uint64_t shut_due; /* a held FIN's slow_close deadline; 0: not yet counting */
    unsigned shut_pending : 1;
    unsigned limited : 1; /* limit_data reached: the rest is dropped, the connection closes */
};

/* What acts on one direction: the toxics of every live rule, stacked as
 * Toxiproxy chains them (latencies add up; the narrowest bandwidth, the
 * smallest limit, the longest slow_close win; any timeout holds). */
struct tox_params {
    unsigned latency : 1, slicer : 1, limit : 1, timeout : 1, slow_close : 1;
    uint64_t lat_fixed_ms, lat_jitter_ms;
    uint64_t rate; /* 0: none */
    uint64_t sl_average, sl_variation, sl_delay_us;
    uint64_t limit_bytes;
    uint64_t slow_close_ms;
};

/* A rule whose connection faults act on the connection. */
struct tox_rule {
    const struct fl_rule *rule; /* in t->policy */
    uint64_t start_ns;
};

/* A rule the dice were rolled for, hit or not: by its loaded policy and name,
 * which outlive snapshots. */
struct tox_rolled {
    const struct fl_policy *part; /* compared, never followed */
    char *name;                   /* own copy */
};

#define TOX_RULES 16

struct fl_tox {
    struct fl_conn *c;
    uv_timer_t timer;
    uint64_t armed_ns;        /* what the timer is set for; 0: idle */
    struct fl_policy *policy; /* the snapshot the rules are in (a reference) */
    struct tox_rule rules[TOX_RULES];
    int n_rules;
    struct tox_rolled rolled[TOX_RULES];
    int n_rolled;
    struct tox_params p[2]; /* by the side the bytes are written toward */
    int in_pump;            /* re-entrancy guard: a write may call back into the protocol */
    struct tox_dir d[2];    /* by the side the bytes are written toward */
    uint64_t req_rate[2];   /* fl_tox_set_rate: the bytes written now are throttled to it */
};

static void merge(struct fl_tox *t)
{
    memset(t->p, 0, sizeof(t->p));
    for (int i = 0; i < t->n_rules; i++) {
        const struct fl_connection_fault *cf = &t->rules[i].rule->connection;
        for (int side = 0; side < 2; side++) {
            struct tox_params *p = &t->p[side];
            unsigned bit = side == FL_CLIENT ? FL_DIR_DOWN : FL_DIR_UP;
            if (cf->latency.enabled && (cf->latency.dir & bit)) {
                p->latency = 1;
                p->lat_fixed_ms += cf->latency.fixed_ms;
                p->lat_jitter_ms += cf->latency.jitter_ms;
            }
            if (cf->bandwidth.enabled && (cf->bandwidth.dir & bit) &&
                (!p->rate || cf->bandwidth.rate < p->rate))
                p->rate = cf->bandwidth.rate;
            if (cf->slicer.enabled && (cf->slicer.dir & bit)) {
                p->slicer = 1;
                p->sl_average = cf->slicer.average;
                p->sl_variation = cf->slicer.variation;
                p->sl_delay_us = cf->slicer.delay_us;
            }
            if (cf->limit_data.enabled && (cf->limit_data.dir & bit) &&
                (!p->limit || cf->limit_data.bytes < p->limit_bytes)) {
                p->limit = 1;
                p->limit_bytes = cf->limit_data.bytes;
            }
            if (cf->timeout.enabled && (cf->timeout.dir & bit))
                p->timeout = 1;
            if (cf->slow_close.enabled && (cf->slow_close.dir & bit)) {
                p->slow_close = 1;
                if (cf->slow_close.delay_ms > p->slow_close_ms)
                    p->slow_close_ms = cf->slow_close.delay_ms;
            }
        }
    }
}

static void pump(struct fl_conn *c, int side, int from_timer);
static void timer_cb(uv_timer_t *h);

static void arm(struct fl_tox *t, uint64_t due_ns)
{
    if (t->c->closing || (t->armed_ns && t->armed_ns <= due_ns))
        return;
    uint64_t now = uv_hrtime();
    /* libuv's clock is milliseconds: round up, so nothing goes early. */
    uint64_t ms = due_ns > now ? (due_ns - now + 999999) / 1000000 : 0;
    t->armed_ns = due_ns;
    uv_timer_start(&t->timer, timer_cb, ms, 0);
}

static void seg_free(struct tox_dir *d, struct tox_seg *s)
{
    d->bytes -= s->len;
    if (d->pinned >= FL_CHUNK_CAP)
        d->pinned -= FL_CHUNK_CAP;
    fl_chunk_unref(s->ch);
    free(s);
}

static void drop_all(struct tox_dir *d)
{
    struct tox_seg *s;
    while ((s = d->head)) {
        d->head = s->next;
        seg_free(d, s);
    }
    d->tail = NULL;
}

/* Time-driven toxics, counted from when their rule's fault began:
 * timeout's close, reset_peer. Returns 1 when the connection was closed. */
static int conn_events(struct fl_conn *c, uint64_t now)
{
    struct fl_tox *t = c->tox;
    for (int i = 0; i < t->n_rules; i++) {
        const struct fl_connection_fault *cf = &t->rules[i].rule->connection;
        uint64_t start = t->rules[i].start_ns;
        if (cf->reset_peer.enabled) {
            uint64_t at = start + cf->reset_peer.after_ms * 1000000u;
            if (now >= at) {
                unsigned mask = 0;
                if (cf->reset_peer.dir & FL_DIR_DOWN)
                    mask |= 1u << FL_CLIENT;
                if (cf->reset_peer.dir & FL_DIR_UP)
                    mask |= 1u << FL_UPSTREAM;
                fl_conn_close_reset(c, mask);
                return 1;
            }
            arm(t, at);
        }
        if (cf->timeout.enabled && cf->timeout.after_ms) {
            uint64_t at = start + cf->timeout.after_ms * 1000000u;
            if (now >= at) {
                fl_conn_close(c, 0);
                return 1;
            }
            arm(t, at);
        }
    }
    return 0;
}

static void timer_cb(uv_timer_t *h)
{
    struct fl_conn *c = h->data;
    struct fl_tox *t = c->tox;
    t->armed_ns = 0;
    if (c->closing)
        return;
    fl_tox_check(c);
    if (c->closing || conn_events(c, uv_hrtime()))
        return;
    pump(c, FL_CLIENT, 1);
    if (!c->closing)
        pump(c, FL_UPSTREAM, 1);
}

/* Lets through what may go now toward side, and arms the timer for the rest. */
static void pump(struct fl_conn *c, int side, int from_timer)
{
    struct fl_tox *t = c->tox;
    struct tox_dir *d = &t->d[side];
    const struct tox_params *pp = &t->p[side];
    uint64_t now = uv_hrtime();
    if (t->in_pump)
        return;
    t->in_pump = 1;
    struct tox_seg *s;
    while ((s = d->head) && !c->closing) {
        if (pp->timeout)
            break; /* held until the fault ends, or the connection closes */
        if (s->due_ns > now) {
            arm(t, s->due_ns);
            break;
        }
        /* The connection's bandwidth toxic, or the request's, whichever is slower. */
        uint64_t rate = pp->rate;
        if (s->rate && (!rate || s->rate < rate))
            rate = s->rate;
        int bw = rate != 0, sl = pp->slicer;
        if ((bw || sl) && d->next_ns > now) {
            arm(t, d->next_ns);
            break;
        }
        size_t n = s->len;
        if (sl) {
            uint64_t v = pp->sl_variation, sz = pp->sl_average - v;
            if (v)
                sz += fl_rng_below(&c->w->rng, 2 * v + 1);
            if (sz < n)
                n = (size_t)sz;
        }
        if (bw) {
            /* 10 ms worth at a time: smooth, and few timer wakeups. */
            uint64_t q = rate / 100;
            if (q < 1)
                q = 1;
            if (q < n)
                n = (size_t)q;
        }
        if (pp->limit) {
            uint64_t room = pp->limit_bytes > d->sent ? pp->limit_bytes - d->sent : 0;
            if (room < n)
                n = (size_t)room;
        }
        if (n) {
            int e = fl_conn_write_direct(c, side, s->ch, s->p, n);
            if (e < 0 || c->closing)
                break;
        }
        d->sent += n;
        s->p += n;
        s->len -= n;
        d->bytes -= n;
        if (bw) {
            /* From when this piece was due, so timer lateness does not add
             * up; after an idle spell, from now (no burst). */
            uint64_t base = d->next_ns > now || now - d->next_ns < 20000000u ? d->next_ns : now;
            if (!d->next_ns)
                base = now;
            d->next_ns = base + n * 1000000000ull / rate;
        }
        if (sl)
            d->next_ns = (d->next_ns > now ? d->next_ns : now) + pp->sl_delay_us * 1000u;
        if (pp->limit && d->sent >= pp->limit_bytes) {
            /* Exactly the limit went through: the rest is dropped and the
             * connection closes once it is out. */
            d->limited = 1;
            drop_all(d);
            d->shut_pending = 0;
            if (fl_conn_queued_direct(c, side) == 0)
                fl_conn_close(c, 0);
            break;
        }
        if (s->len == 0) {
            d->head = s->next;
            if (!d->head)
                d->tail = NULL;
            seg_free(d, s);
        }
    }
    if (!c->closing && !d->head && d->shut_pending && !d->limited) {
        uint64_t delay = pp->slow_close ? pp->slow_close_ms * 1000000u : 0;
        if (!d->shut_due)
            d->shut_due = now + delay;
        if (d->shut_due > now && pp->slow_close) {
            arm(t, d->shut_due);
        } else {
            d->shut_pending = 0;
            fl_conn_shutdown_direct(c, side);
        }
    }
    t->in_pump = 0;
    if (from_timer && !c->closing) {
        fl_conn_update_reading(c);
        if (!c->closing && fl_conn_queued(c, side) == 0 && c->ops && c->ops->drained)
            c->ops->drained(c, side);
    }
}

int fl_tox_intercepts(const struct fl_conn *c, int side)
{
    const struct fl_tox *t = c->tox;
    if (!t)
        return 0;
    const struct tox_dir *d = &t->d[side];
    if (d->head || d->shut_pending || d->limited || t->req_rate[side])
        return 1;
    const struct tox_params *p = &t->p[side];
    return p->latency || p->rate || p->slicer || p->limit || p->timeout || p->slow_close;
}

static int enqueue(struct fl_conn *c, struct tox_dir *d, struct fl_chunk *ch, const char *p,
                   size_t len, uint64_t due)
{
    struct tox_seg *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (ch) {
        s->ch = fl_chunk_ref(ch);
        s->p = p;
    } else {
        s->ch = fl_chunk_get(&c->w->pool);
        if (!s->ch) {
            free(s);
            return -ENOMEM;
        }
        memcpy(s->ch->data, p, len);
        s->ch->len = (uint32_t)len;
        s->p = s->ch->data;
    }
    s->len = len;
    s->due_ns = due;
    s->rate = c->tox->req_rate[d == &c->tox->d[FL_CLIENT] ? FL_CLIENT : FL_UPSTREAM];
    if (d->tail)
        d->tail->next = s;
    else
        d->head = s;
    d->tail = s;
    d->bytes += len;
    d->pinned += FL_CHUNK_CAP;
    return 0;
}

int fl_tox_write(struct fl_conn *c, int side, struct fl_chunk *ch, const char *p, size_t len)
{
    struct fl_tox *t = c->tox;
    struct tox_dir *d = &t->d[side];
    if (d->limited)
        return 0; /* past limit_data: dropped, the connection is closing */
    if (len == 0)
        return 0;
    uint64_t due = 0;
    if (t->p[side].latency) {
        uint64_t ms = t->p[side].lat_fixed_ms;
        if (t->p[side].lat_jitter_ms)
            ms += fl_rng_below(&c->w->rng, t->p[side].lat_jitter_ms + 1);
        due = uv_hrtime() + ms * 1000000u;
        if (due < d->last_due)
            due = d->last_due;
        d->last_due = due;
    }
    while (len) {
        size_t n = ch || len <= FL_CHUNK_CAP ? len : FL_CHUNK_CAP;
        if (enqueue(c, d, ch, p, n, due) < 0) {
            fl_error("conn %llu: out of memory; closing it", (unsigned long long)c->id);
            fl_conn_close(c, 0);
            return -ENOMEM;
        }
        p += n;
        len -= n;
    }
    pump(c, side, 0);
    if (!c->closing && fl_conn_backlog(c, side) >= FL_WQ_HWM)
        fl_conn_update_reading(c);
    return c->closing ? -EPIPE : 0;
}

void fl_tox_shutdown(struct fl_conn *c, int side)
{
    struct tox_dir *d = &c->tox->d[side];
    if (d->limited)
        return;
    d->shut_pending = 1;
    pump(c, side, 0);
}

size_t fl_tox_queued(const struct fl_conn *c, int side)
{
    const struct fl_tox *t = c->tox;
    return t ? t->d[side].bytes + t->d[side].shut_pending : 0;
}

size_t fl_tox_pinned(const struct fl_conn *c, int side)
{
    return c->tox ? c->tox->d[side].pinned : 0;
}

void fl_tox_flushed(struct fl_conn *c, int side)
{
    struct fl_tox *t = c->tox;
    if (t && t->d[side].limited)
        fl_conn_close(c, 0);
}

/* Some rules' faults ended: the rest stay, and what was held goes out now
 * (a latency that ended releases its bytes at once). */
static void tox_changed(struct fl_conn *c)
{
    struct fl_tox *t = c->tox;
    merge(t);
    for (int i = 0; i < 2; i++) {
        for (struct tox_seg *s = t->d[i].head; s; s = s->next)
            s->due_ns = 0;
        t->d[i].next_ns = 0;
        t->d[i].shut_due = 0;
        t->d[i].last_due = 0;
    }
    if (!t->n_rules) {
        fl_policy_unref(t->policy);
        t->policy = NULL;
    }
    fl_info("conn %llu: connection fault ended%s", (unsigned long long)c->id,
            t->n_rules ? " for some of its rules" : "");
    pump(c, FL_CLIENT, 1);
    if (!c->closing)
        pump(c, FL_UPSTREAM, 1);
}

/* Is rule r's fault still in force? */
static int rule_live(const struct fl_conn *c, const struct fl_rule *r)
{
    if (!atomic_load_explicit(&((struct fl_rule *)r)->live.enabled, memory_order_relaxed))
        return 0;
    uint64_t now = fl_worker_now(c->w);
    uint64_t dl = r->deadline_ms ? r->deadline_ms
                                 : atomic_load_explicit(&fl_fault_global.policy_deadline_ms,
                                                        memory_order_relaxed);
    return !(dl && now >= dl);
}

void fl_tox_check(struct fl_conn *c)
{
    struct fl_tox *t = c->tox;
    if (!t || !t->n_rules || c->closing)
        return;
    int halted = atomic_load_explicit(&fl_fault_global.halted, memory_order_relaxed);
    struct fl_policy *cur = c->w->policy;
    int n = 0, changed = 0;
    for (int i = 0; i < t->n_rules; i++) {
        const struct fl_rule *r = t->rules[i].rule, *nr = r;
        if (!halted && cur != t->policy) {
            /* Another snapshot: a fault goes on while its rule is in it
             * unchanged (the same loaded policy), with the rule's live state
             * there. */
            nr = NULL;
            for (size_t k = 0; cur && k < cur->n_rules && !nr; k++)
                if (cur->rules[k].part == r->part && strcmp(cur->rules[k].name, r->name) == 0)
                    nr = &cur->rules[k];
        }
        if (halted || !nr || !rule_live(c, nr)) {
            changed = 1;
            continue;
        }
        t->rules[n] = t->rules[i];
        t->rules[n++].rule = nr;
    }
    t->n_rules = n;
    if (n && cur != t->policy) {
        fl_policy_unref(t->policy);
        t->policy = fl_policy_ref(cur);
    }
    /* The earliest deadline of the rest, for the timer. */
    uint64_t now = fl_worker_now(c->w), dl = 0;
    for (int i = 0; i < t->n_rules; i++) {
        const struct fl_rule *r = t->rules[i].rule;
        uint64_t d = r->deadline_ms ? r->deadline_ms
                                    : atomic_load_explicit(&fl_fault_global.policy_deadline_ms,
                                                           memory_order_relaxed);
        if (d && (!dl || d < dl))
            dl = d;
    }
    if (dl && dl > now)
        arm(t, uv_hrtime() + (dl - now) * 1000000u);
    if (changed)
        tox_changed(c);
}

/* The toxics' names for the log line: ,"toxics":["latency",...]. */
static void toxics_json(const struct fl_connection_fault *cf, char *buf, size_t len)
{
    size_t pos = (size_t)snprintf(buf, len, ",\"toxics\":[");
    const char *names[7];
    int n = 0;
    if (cf->latency.enabled)
        names[n++] = "latency";
    if (cf->bandwidth.enabled)
        names[n++] = "bandwidth";
    if (cf->slicer.enabled)
        names[n++] = "slicer";
    if (cf->limit_data.enabled)
        names[n++] = "limit_data";
    if (cf->timeout.enabled)
        names[n++] = "timeout";
    if (cf->slow_close.enabled)
        names[n++] = "slow_close";
    if (cf->reset_peer.enabled)
        names[n++] = "reset_peer";
    for (int i = 0; i < n && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s\"%s\"", i ? "," : "", names[i]);
    if (pos < len)
        snprintf(buf + pos, len - pos, "]");
}

static struct fl_tox *tox_get(struct fl_conn *c)
{
    if (c->tox)
        return c->tox;
    c->tox = calloc(1, sizeof(*c->tox));
    if (!c->tox)
        return NULL;
    c->tox->c = c;
    uv_timer_init(c->w->loop, &c->tox->timer);
    c->tox->timer.data = c;
    return c->tox;
}

int fl_tox_set_rate(struct fl_conn *c, int side, uint64_t rate)
{
    if (!rate && !c->tox)
        return 0;
    struct fl_tox *t = tox_get(c);
    if (!t)
        return -ENOMEM;
    t->req_rate[side] = rate;
    return 0;
}

/* Rolls r's connection dice for c, once per rule; starts its toxics on a hit. */
static void roll_and_start(struct fl_conn *c, const struct fl_rule *r, const struct fl_request *rq)
{
    struct fl_worker *w = c->w;
    if (!tox_get(c)) {
        fl_warn("conn %llu: out of memory; no connection fault on it", (unsigned long long)c->id);
        return;
    }
    struct fl_tox *t = c->tox;
    for (int i = 0; i < t->n_rolled; i++)
        if (t->rolled[i].part == r->part && strcmp(t->rolled[i].name, r->name) == 0)
            return;
    struct fl_policy *snap = w->policy;
    if (t->n_rolled == TOX_RULES || !snap || r < snap->rules || r >= snap->rules + snap->n_rules)
        return; /* that many rules on one connection: the rest are not rolled */
    if (!(t->rolled[t->n_rolled].name = strdup(r->name)))
        return;
    t->rolled[t->n_rolled++].part = r->part;
    uint32_t ppm = fl_policy_rule_ppm(r, FL_FAULT_CONNECTION);
    if (ppm < FL_PPM_MAX && fl_rng_below(&w->rng, FL_PPM_MAX) >= ppm)
        return;
    if (atomic_load_explicit(&fl_fault_global.halted, memory_order_relaxed) || !rule_live(c, r))
        return;
    if (t->policy != snap) {
        /* The rules already acting are looked up in this snapshot. */
        if (t->n_rules) {
            fl_tox_check(c);
            if (c->closing)
                return;
        }
        fl_policy_unref(t->policy);
        t->policy = fl_policy_ref(snap);
    }
    t->rules[t->n_rules].rule = r;
    t->rules[t->n_rules++].start_ns = uv_hrtime();
    merge(t);
    atomic_fetch_add_explicit(&((struct fl_rule *)r)->live.injected[FL_FAULT_CONNECTION], 1,
                              memory_order_relaxed);
    char extra[160];
    toxics_json(&r->connection, extra, sizeof(extra));
    struct fl_fault_event ev = {
        .policy = r->policy ? r->policy : c->policy->name,
        .rule = r->name,
        .kind = FL_FAULT_CONNECTION,
        .grpc_status = -1,
        .req = rq,
        .src = (const struct sockaddr *)&c->src,
        .dst = (const struct sockaddr *)&c->dst,
        .pod = c->pod,
        .conn = c->id,
        .proto = "tcp",
        .extra = extra,
    };
    fl_faultlog_emit(&w->log, &ev);
    fl_tox_check(c); /* arms the TTL */
    if (!c->closing)
        conn_events(c, uv_hrtime());
}

void fl_tox_accept(struct fl_conn *c)
{
    const struct fl_policy *p = c->policy;
    if (!p)
        return;
    /* Every rule with connection faults and no match rolls for it: their
     * toxics stack, as Toxiproxy's on one proxy do. */
    for (size_t i = 0; i < p->n_rules && !c->closing; i++) {
        const struct fl_rule *r = &p->rules[i];
        if (r->conn_at_accept && atomic_load_explicit(&((struct fl_rule *)r)->live.enabled,
                                                      memory_order_relaxed) &&
            fl_policy_rule_applies_to(r, c->scope))
            roll_and_start(c, r, NULL);
    }
}

void fl_tox_reroll(struct fl_conn *c)
{
    const struct fl_policy *p = c->w->policy;
    if (!p || c->closing || atomic_load_explicit(&fl_fault_global.halted, memory_order_relaxed))
        return;
    for (size_t i = 0; i < p->n_rules && !c->closing; i++) {
        const struct fl_rule *r = &p->rules[i];
        if (!r->conn_at_accept || !fl_policy_rule_applies_to(r, c->scope) ||
            !atomic_load_explicit(&((struct fl_rule *)r)->live.enabled, memory_order_relaxed))
            continue;
        int seen = 0;
        for (int k = 0; c->tox && k < c->tox->n_rolled && !seen; k++)
            seen = c->tox->rolled[k].part == r->part && strcmp(c->tox->rolled[k].name, r->name) == 0;
        if (!seen)
            roll_and_start(c, r, NULL);
    }
}

void fl_tox_on_request(struct fl_conn *c, const struct fl_rule *r, const struct fl_request *rq)
{
    if (r && r->connection.enabled && !r->conn_at_accept && !c->closing)
        roll_and_start(c, r, rq);
}

int fl_tox_close(struct fl_conn *c, uv_close_cb closed)
{
    if (!c->tox)
        return 0;
    uv_close((uv_handle_t *)&c->tox->timer, closed);
    return 1;
}

void fl_tox_free(struct fl_tox *t)
{
    if (!t)
        return;
    for (int i = 0; i < 2; i++)
        drop_all(&t->d[i]);
    for (int i = 0; i < t->n_rolled; i++)
        free(t->rolled[i].name);
    fl_policy_unref(t->policy);
    free(t);
}
