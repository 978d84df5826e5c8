/* faultpolicy: see faultpolicy.h. */
#include "faultpolicy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "client.h"
#include "log.h"
#include "runtime.h"
#include "transparent.h"

#define WRITE_TIMEOUT_MS 10000
#define PODS_MAX 4096

/* One FaultPolicy resource, by uid. */
struct rec {
    struct rec *next;
    char *uid, *ns, *name, *id; /* id: "namespace/name" */
    char *created;              /* creationTimestamp as given */
    uint64_t generation;        /* the newest spec seen */
    struct fl_policy *p;        /* the valid spec in force, or NULL */
    uint64_t p_generation;      /* the generation p came from */
    char *invalid;              /* the loader's message for `generation`, or NULL */
    json_t *obj;                /* the object as last seen (its status) */
    json_t *injected;           /* {rule: n} as last counted here */
    unsigned pods;              /* pods it selects on this node, as last counted */
    char *conflict;             /* an older policy this one overlaps here, or NULL */
    char *written;              /* the status last applied, "updated" aside */
    uint64_t written_ms;
    int busy;                   /* a write in flight */
    int seen;
};

static struct {
    uv_loop_t *loop;
    struct fl_kube_config cfg;
    char node[256];
    uv_timer_t timer;
    int started;
    struct rec *list;
    int halted;
    char halt_reason[512];
    unsigned in_flight;
    int stopping;
    char logged[512];
} fp;

static void rec_free(struct rec *r)
{
    free(r->uid);
    free(r->ns);
    free(r->name);
    free(r->id);
    free(r->created);
    fl_policy_unref(r->p);
    free(r->invalid);
    json_decref(r->obj);
    json_decref(r->injected);
    free(r->conflict);
    free(r->written);
    free(r);
}

static struct rec *rec_find(const char *uid)
{
    for (struct rec *r = fp.list; r; r = r->next)
        if (strcmp(r->uid, uid) == 0)
            return r;
    return NULL;
}

static uint64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* RFC 3339 (the API server's "2026-12-02T10:00:00Z") to ms since the
 * epoch; 0 when it cannot be read. */
static uint64_t parse_ts(const char *s)
{
    struct tm tm = {0};
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!end)
        return 0;
    time_t t = timegm(&tm);
    return t < 0 ? 0 : (uint64_t)t * 1000u;
}

static void now_ts(char *buf, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Wall-clock ms at which r's policy expires; 0: never. */
static uint64_t expiry_wall(const struct rec *r)
{
    uint64_t c = parse_ts(r->created);
    if (!r->p || !r->p->ttl_ms || !c)
        return 0;
    return c + r->p->ttl_ms;
}

static int expired(const struct rec *r)
{
    uint64_t e = expiry_wall(r);
    return e && wall_ms() >= e;
}

/* ---- the set ---- */

static void load_spec(struct rec *r, const struct fl_kube_fp *f)
{
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};
    char err[1024] = "";
    char name[600];
    snprintf(name, sizeof(name), "%s/%s", f->ns, f->name);
    int e = fl_policy_load_resource(name, f->json, strlen(f->json), &p, &errs);
    if (e == 0 && fl_transparent_check(p, err, sizeof(err)) < 0) {
        fl_policy_unref(p);
        p = NULL;
        e = -EINVAL;
    }
    free(r->invalid);
    r->invalid = NULL;
    r->generation = f->generation;
    if (e == 0) {
        p->generation = f->generation;
        fl_policy_unref(r->p);
        r->p = p;
        r->p_generation = f->generation;
        fl_info("FaultPolicy %s: generation %llu applied (%zu target%s, %zu rule%s)", r->id,
                (unsigned long long)f->generation, p->n_targets, p->n_targets == 1 ? "" : "s",
                p->n_rules, p->n_rules == 1 ? "" : "s");
        return;
    }
    /* Every message, joined: the condition's message says them all. */
    size_t cap = 4096, pos = 0;
    char *msg = malloc(cap);
    if (msg) {
        msg[0] = 0;
        for (size_t i = 0; i < errs.n; i++)
            pos += (size_t)snprintf(msg + pos, pos < cap ? cap - pos : 0, "%s%s", i ? "; " : "",
                                    errs.msgs[i]);
        if (!errs.n)
            snprintf(msg, cap, "%s: %s", name, err[0] ? err : strerror(-e));
        if (pos >= cap)
            memcpy(msg + cap - 4, "...", 4);
    }
    r->invalid = msg;
    fl_warn("FaultPolicy %s: generation %llu is invalid, nothing of it applied%s: %s", r->id,
            (unsigned long long)f->generation,
            r->p ? " (the previous generation stays in force)" : "", msg ? msg : "");
    fl_policy_errors_free(&errs);
}

static struct rec *rec_new(const struct fl_kube_fp *f)
{
    struct rec *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->uid = strdup(f->uid);
    r->ns = strdup(f->ns);
    r->name = strdup(f->name);
    r->created = strdup(f->created);
    r->injected = json_object();
    if (r->ns && r->name && asprintf(&r->id, "%s/%s", f->ns, f->name) < 0)
        r->id = NULL;
    if (!r->uid || !r->ns || !r->name || !r->created || !r->id || !r->injected) {
        rec_free(r);
        return NULL;
    }
    return r;
}

/* Hands the valid, unexpired policies (oldest first: the view's order) to
 * the runtime. */
static void publish(const struct fl_kube_view *v)
{
    size_t n = 0;
    struct fl_policy **ps = calloc(v->n_fps + 1, sizeof(*ps));
    uint64_t *dl = calloc(v->n_fps + 1, sizeof(*dl));
    char err[512];
    if (!ps || !dl)
        goto out;
    uint64_t now_w = wall_ms(), now_m = uv_now(fp.loop);
    for (size_t i = 0; i < v->n_fps; i++) {
        struct rec *r = rec_find(v->fps[i].uid);
        if (!r || !r->p)
            continue;
        uint64_t e = expiry_wall(r);
        dl[n] = !e ? 0 : e <= now_w ? 1 : now_m + (e - now_w);
        ps[n++] = r->p;
    }
    if (fl_runtime_set_resources(ps, dl, n, err, sizeof(err)) < 0)
        fl_error("kubernetes: the FaultPolicies could not be applied: %s; the set in force "
                 "stays",
                 err);
out:
    free(ps);
    free(dl);
}

static void evaluate(void);

void fl_faultpolicies_view(const struct fl_kube_view *v)
{
    if (!fp.started || !v->fps_watched || !v->fps_synced)
        return; /* until listed, the set stays as it is */
    int changed = 0;
    for (struct rec *r = fp.list; r; r = r->next)
        r->seen = 0;
    for (size_t i = 0; i < v->n_fps; i++) {
        const struct fl_kube_fp *f = &v->fps[i];
        struct rec *r = rec_find(f->uid);
        if (!r) {
            if (!(r = rec_new(f)))
                continue;
            r->next = fp.list;
            fp.list = r;
            load_spec(r, f);
            changed = 1;
        } else if (f->generation != r->generation) {
            struct fl_policy *was = r->p;
            load_spec(r, f);
            changed |= r->p != was;
        }
        r->seen = 1;
        json_decref(r->obj);
        r->obj = json_loads(f->json, 0, NULL);
    }
    for (struct rec **pp = &fp.list; *pp;) {
        struct rec *r = *pp;
        if (r->seen) {
            pp = &r->next;
            continue;
        }
        fl_info("FaultPolicy %s deleted: its faults stop", r->id);
        changed |= r->p != NULL;
        *pp = r->next;
        if (r->busy)
            r->uid[0] = 0; /* freed when its write completes */
        else
            rec_free(r);
    }
    if (changed)
        publish(v);
    evaluate();
}

void fl_faultpolicies_halt(int halted, const char *reason)
{
    int was = fp.halted;
    fp.halted = halted;
    snprintf(fp.halt_reason, sizeof(fp.halt_reason), "%s", halted && reason ? reason : "");
    if (was != halted && fp.started)
        evaluate();
}

/* ---- status ---- */

/* The policy's pods on this node and its rules' counts, from the set in
 * force; kept as last counted once it has left the set (expired). */
static void count(struct rec *r)
{
    const struct fl_policy *c = fl_runtime_policy();
    if (!r->p || !c)
        return;
    int present = 0;
    json_t *inj = json_object();
    for (size_t i = 0; i < c->n_rules; i++) {
        const struct fl_rule *rl = &c->rules[i];
        if (rl->part != r->p)
            continue;
        present = 1;
        unsigned long long n = 0;
        for (int k = 0; k < FL_FAULT_KINDS; k++)
            n += atomic_load(&((struct fl_rule *)rl)->live.injected[k]);
        json_object_set_new(inj, rl->name, json_integer((json_int_t)n));
    }
    if (!present) {
        json_decref(inj);
        return;
    }
    json_decref(r->injected);
    r->injected = inj;
    static struct fl_transparent_pod tp[PODS_MAX];
    size_t n = fl_transparent_pods(tp, PODS_MAX), len = strlen(r->id);
    unsigned pods = 0;
    if (n > PODS_MAX)
        n = PODS_MAX;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(tp[i].target, r->id, len) != 0 || tp[i].target[len] != '/')
            continue;
        size_t k = 0; /* another target of the policy may select it too */
        while (k < i && !(strncmp(tp[k].target, r->id, len) == 0 && tp[k].target[len] == '/' &&
                          strcmp(tp[k].pod, tp[i].pod) == 0))
            k++;
        pods += k == i;
    }
    r->pods = pods;
    free(r->conflict);
    r->conflict = NULL;
    char who[512];
    if (fl_transparent_conflict(r->p, who, sizeof(who)))
        r->conflict = strdup(who);
}

static const char *json_str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* A condition, with lastTransitionTime kept from the object when its status
 * is the same (so every node writes the same). */
static json_t *condition(const struct rec *r, const char *type, int on, const char *reason,
                         const char *message, const char *ts)
{
    const char *st = on ? "True" : "False", *since = ts;
    json_t *conds = json_object_get(json_object_get(r->obj, "status"), "conditions");
    size_t i;
    json_t *c;
    json_array_foreach(conds, i, c)
    {
        if (strcmp(json_str(c, "type"), type) == 0 && strcmp(json_str(c, "status"), st) == 0 &&
            *json_str(c, "lastTransitionTime"))
            since = json_str(c, "lastTransitionTime");
    }
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "type", type, "status", st, "reason", reason,
                     "message", message, "lastTransitionTime", since, "observedGeneration",
                     (json_int_t)r->generation);
}

/* The status this node applies for r, "updated" aside (added when sent). */
static json_t *desired(struct rec *r)
{
    char ts[40], msg[1200];
    now_ts(ts, sizeof(ts));
    int exp = expired(r), valid = r->invalid == NULL && r->p;
    json_t *conds = json_array();

    /* Applied: is the policy injecting, and if not, why (its reason is the
     * Status column). */
    const char *reason = !r->p ? "Invalid" : exp ? "Expired" : fp.halted ? "Halted"
                         : r->invalid                                  ? "Invalid"
                                                                       : "Applied";
    if (!r->p)
        snprintf(msg, sizeof(msg), "nothing applied: the spec is invalid");
    else if (exp)
        snprintf(msg, sizeof(msg), "its ttl ran out; no node injects its faults");
    else if (fp.halted)
        snprintf(msg, sizeof(msg), "applied, but every node is halted by the cluster halt");
    else if (r->invalid)
        snprintf(msg, sizeof(msg), "generation %llu is invalid; generation %llu stays applied",
                 (unsigned long long)r->generation, (unsigned long long)r->p_generation);
    else
        snprintf(msg, sizeof(msg), "generation %llu applied", (unsigned long long)r->p_generation);
    json_array_append_new(conds, condition(r, "Applied", r->p && !exp && !fp.halted, reason, msg,
                                           ts));
    json_array_append_new(conds, condition(r, "Invalid", !valid, valid ? "Valid" : "Invalid",
                                           valid ? "the spec is valid"
                                                 : r->invalid ? r->invalid : "the spec is invalid",
                                           ts));
    uint64_t e = expiry_wall(r);
    if (e) {
        time_t t = (time_t)(e / 1000);
        struct tm tm;
        char at[40];
        gmtime_r(&t, &tm);
        strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(msg, sizeof(msg), "%s at %s (ttl from creationTimestamp %s)",
                 exp ? "expired" : "expires", at, r->created);
    } else {
        snprintf(msg, sizeof(msg), "no ttl");
    }
    json_array_append_new(conds, condition(r, "Expired", exp, exp ? "Expired" : "Active", msg, ts));
    json_array_append_new(conds, condition(r, "Halted", fp.halted,
                                           fp.halted ? "ClusterHalt" : "NotHalted",
                                           fp.halted ? fp.halt_reason : "no cluster halt", ts));
    /* Conflict is what a node sees among its own pods: only a node that
     * sees one says so (the condition goes when none does). */
    if (r->conflict) {
        snprintf(msg, sizeof(msg), "its targets overlap %s, which is older and wins; the "
                 "overlapping traffic follows that policy", r->conflict);
        json_array_append_new(conds, condition(r, "Conflict", 1, "Overlap", msg, ts));
    }

    /* The totals: this node's fresh figures and the others' as last seen. */
    json_int_t pods = r->pods, injected = 0;
    const char *k;
    json_t *v;
    json_object_foreach(r->injected, k, v) injected += json_integer_value(v);
    json_int_t own = injected;
    json_t *mine = json_pack("{s:s,s:I,s:O}", "node", fp.node, "pods", (json_int_t)r->pods,
                             "injected", r->injected);
    size_t i;
    json_t *nd;
    json_array_foreach(json_object_get(json_object_get(r->obj, "status"), "nodes"), i, nd)
    {
        if (strcmp(json_str(nd, "node"), fp.node) == 0)
            continue;
        pods += json_integer_value(json_object_get(nd, "pods"));
        json_object_foreach(json_object_get(nd, "injected"), k, v) injected +=
            json_integer_value(v);
    }
    json_t *st = json_pack("{s:I,s:I,s:I,s:o}", "observedGeneration", (json_int_t)r->generation,
                           "pods", pods, "injected", injected, "conditions", conds);
    /* An entry only where the policy selects pods or injected faults, or
     * where there is one already (it then shows the zeros). */
    int has_entry = 0;
    json_array_foreach(json_object_get(json_object_get(r->obj, "status"), "nodes"), i, nd)
        has_entry |= strcmp(json_str(nd, "node"), fp.node) == 0;
    if (r->pods || own || has_entry)
        json_object_set_new(st, "nodes", json_pack("[o]", mine));
    else
        json_decref(mine);
    return st;
}

/* What the object's status says of the same fields ("updated" aside), to
 * compare with desired(). */
static json_t *observed(const struct rec *r, const json_t *want)
{
    json_t *st = json_object_get(r->obj, "status");
    json_t *o = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)want, k, v)
    {
        json_t *have = json_object_get(st, k);
        if (strcmp(k, "nodes") == 0) {
            size_t i;
            json_t *nd, *mine = NULL;
            json_array_foreach(have, i, nd) if (strcmp(json_str(nd, "node"), fp.node) == 0) mine =
                json_deep_copy(nd);
            if (mine)
                json_object_del(mine, "updated");
            json_object_set_new(o, k, mine ? json_pack("[o]", mine) : json_array());
        } else if (strcmp(k, "conditions") == 0) {
            /* Only the types we write, in our order. */
            json_t *a = json_array();
            size_t i, j;
            json_t *w, *c;
            json_array_foreach(v, i, w) json_array_foreach(have, j, c) if (
                strcmp(json_str(c, "type"), json_str(w, "type")) == 0)
                json_array_append(a, c);
            json_object_set_new(o, k, a);
        } else if (have) {
            json_object_set(o, k, have);
        }
    }
    return o;
}

struct write_job {
    uv_work_t req;
    struct rec *r;
    struct fl_kube_config cfg;
    char *path, *body;
    long status;
    char *resp;
    char err[512];
    int rc;
};

static void write_work(uv_work_t *req)
{
    struct write_job *j = req->data;
    j->rc = fl_kube_request(&j->cfg, "PATCH", j->path, "application/apply-patch+yaml", j->body,
                            WRITE_TIMEOUT_MS, &j->status, &j->resp, j->err, sizeof(j->err));
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(msg, fp.logged) == 0)
        return; /* once per streak */
    snprintf(fp.logged, sizeof(fp.logged), "%s", msg);
    fl_warn("%s", msg);
}

static void write_done(uv_work_t *req, int status)
{
    struct write_job *j = req->data;
    struct rec *r = j->r;
    (void)status;
    fp.in_flight--;
    r->busy = 0;
    if (!r->uid[0]) {
        rec_free(r); /* deleted meanwhile */
    } else if (j->rc < 0) {
        say("kubernetes: cannot write the status of FaultPolicy %s: %s; trying again in %d s",
            r->id, j->err, FL_FP_STATUS_INTERVAL_MS / 1000);
        free(r->written);
        r->written = NULL;
    } else if (j->status == 404) {
        /* gone: its DELETED event is on the way */
    } else if (j->status / 100 != 2) {
        json_t *e = j->resp ? json_loads(j->resp, 0, NULL) : NULL;
        say("kubernetes: the status of FaultPolicy %s was refused (HTTP %ld: %s); check that "
            "the CRD (examples/kubernetes/crd.yaml) and faultline's ClusterRole "
            "(faultpolicies/status: patch) are installed",
            r->id, j->status, e ? json_str(e, "message") : "");
        json_decref(e);
        free(r->written);
        r->written = NULL;
    } else {
        fp.logged[0] = 0;
    }
    fl_kube_config_free(&j->cfg);
    free(j->path);
    free(j->body);
    free(j->resp);
    free(j);
}

static void write_status(struct rec *r, json_t *st, char *cmp)
{
    char ts[40];
    now_ts(ts, sizeof(ts));
    json_t *nodes = json_object_get(st, "nodes");
    if (nodes)
        json_object_set_new(json_array_get(nodes, 0), "updated", json_string(ts));
    json_t *cfg = json_pack("{s:s,s:s,s:{s:s,s:s},s:O}", "apiVersion",
                            FL_KUBE_FP_GROUP "/" FL_KUBE_FP_VERSION, "kind", "FaultPolicy",
                            "metadata", "name", r->name, "namespace", r->ns, "status", st);
    struct write_job *j = calloc(1, sizeof(*j));
    char *body = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    if (!j || !body || fl_kube_config_dup(&fp.cfg, &j->cfg) < 0) {
        free(j);
        free(body);
        free(cmp);
        return;
    }
    char *mgr = curl_easy_escape(NULL, fp.node, 0);
    if (asprintf(&j->path,
                 "/apis/" FL_KUBE_FP_GROUP "/" FL_KUBE_FP_VERSION
                 "/namespaces/%s/faultpolicies/%s/status?fieldManager=faultline-%s&force=true",
                 r->ns, r->name, mgr ? mgr : "node") < 0)
        j->path = NULL;
    curl_free(mgr);
    j->body = body;
    j->r = r;
    j->req.data = j;
    if (!j->path || uv_queue_work(fp.loop, &j->req, write_work, write_done) < 0) {
        fl_kube_config_free(&j->cfg);
        free(j->path);
        free(j->body);
        free(j);
        free(cmp);
        return;
    }
    fp.in_flight++;
    r->busy = 1;
    free(r->written);
    r->written = cmp;
    r->written_ms = uv_now(fp.loop);
}

static void evaluate(void)
{
    uint64_t now = uv_now(fp.loop);
    if (fp.stopping)
        return;
    for (struct rec *r = fp.list; r; r = r->next) {
        if (r->busy)
            continue;
        count(r);
        json_t *want = desired(r);
        json_t *have = observed(r, want);
        char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
        char *h = json_dumps(have, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(have);
        int same_obj = w && h && strcmp(w, h) == 0;
        int same_written = w && r->written && strcmp(w, r->written) == 0;
        free(h);
        /* Nothing changed: no write. Written already and not seen back
         * yet: wait for the watch, then try again after the interval. */
        int due = !r->written_ms || now - r->written_ms >= FL_FP_STATUS_INTERVAL_MS;
        if (!w || same_obj || !due || (same_written && now - r->written_ms <
                                                            2 * FL_FP_STATUS_INTERVAL_MS)) {
            free(w);
            json_decref(want);
            continue;
        }
        write_status(r, want, w);
        json_decref(want);
    }
}

static void tick(uv_timer_t *t)
{
    (void)t;
    evaluate();
}

int fl_faultpolicies_start(uv_loop_t *loop, const struct fl_kube_config *cfg, const char *node)
{
    memset(&fp, 0, sizeof(fp));
    fp.loop = loop;
    if (fl_kube_config_dup(cfg, &fp.cfg) < 0)
        return -ENOMEM;
    snprintf(fp.node, sizeof(fp.node), "%s", node);
    uv_timer_init(loop, &fp.timer);
    uv_timer_start(&fp.timer, tick, 1000, 1000);
    fp.started = 1;
    return 0;
}

json_t *fl_faultpolicies_json(void)
{
    json_t *a = json_array();
    for (struct rec *r = fp.list; r; r = r->next) {
        const char *state = !r->p ? "invalid" : expired(r) ? "expired" : "applied";
        json_array_append_new(
            a, json_pack("{s:s,s:s,s:I,s:I,s:s,s:s?,s:s?,s:i}", "namespace", r->ns, "name",
                         r->name, "generation", (json_int_t)r->generation, "applied_generation",
                         (json_int_t)r->p_generation, "state", state, "invalid", r->invalid,
                         "conflict", r->conflict, "pods", (int)r->pods));
    }
    return a;
}

void fl_faultpolicies_stop(void)
{
    if (!fp.started)
        return;
    fp.stopping = 1;
    uv_close((uv_handle_t *)&fp.timer, NULL);
    for (struct rec *r = fp.list, *n; r; r = n) {
        n = r->next;
        if (r->busy)
            r->uid[0] = 0; /* freed by its write's completion */
        else
            rec_free(r);
    }
    fp.list = NULL;
    fl_kube_config_free(&fp.cfg);
    fp.started = 0;
}
