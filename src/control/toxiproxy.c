#include "toxiproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin_http.h"
#include "log.h"
#include "policy.h"
#include "runtime.h"
#include "values.h"
#include "workers.h"

/* A request waiting its turn: changes are applied one at a time, in order. */
struct tp_req {
    struct tp_req *next;
    struct fl_admin_http_req *rq; /* NULL once the client went away */
};

/* A change on its way: the new state, the policy made from it (thread pool),
 * and what to answer once it is in force. */
struct tp_work {
    uv_work_t w;
    json_t *state;  /* the proxies as they will be: [{name, listen, upstream, enabled, toxics}] */
    char *json;     /* the policy made from it */
    struct fl_policy *p;
    struct fl_policy_errors errs;
    int rc;
    char err[512];
    int status;     /* the answer on success */
    json_t *answer; /* its body (NULL: none) */
};

static struct {
    uv_loop_t *loop;
    json_t *state; /* the proxies in force, in creation order */
    struct tp_req *queue, **tail;
    struct fl_admin_http_req *current; /* the request being applied; cleared if it goes away */
    int busy;
    int started;
} tp;

static void next_request(void);

/* ---- answers ---- */

static void answer_json(struct fl_admin_http_req *rq, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(7)) : NULL;
    json_decref(o);
    fl_admin_http_respond(rq, status, "application/json", NULL, s ? s : "", s ? strlen(s) : 0);
    free(s);
}

/* Toxiproxy's error body: {"error": MESSAGE, "status": CODE} and a newline
 * (written with Go's http.Error, so served as text/plain). */
static void answer_error(struct fl_admin_http_req *rq, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void answer_error(struct fl_admin_http_req *rq, int status, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s,s:i}", "error", msg, "status", status);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    size_t n = s ? strlen(s) : 0;
    char *b = malloc(n + 2);
    if (b) {
        memcpy(b, s ? s : "", n);
        b[n++] = '\n';
    }
    fl_admin_http_respond(rq, status, "text/plain; charset=utf-8", "X-Content-Type-Options: nosniff\r\n",
                          b ? b : "", b ? n : 0);
    free(b);
    free(s);
}

/* ---- state ---- */

static json_t *find_proxy(json_t *state, const char *name, size_t *index)
{
    size_t i;
    json_t *p;
    json_array_foreach(state, i, p) if (strcmp(json_string_value(json_object_get(p, "name")), name) == 0)
    {
        if (index)
            *index = i;
        return p;
    }
    return NULL;
}

static json_t *find_toxic(json_t *proxy, const char *name, size_t *index)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(proxy, "toxics"), i, t) if (
        strcmp(json_string_value(json_object_get(t, "name")), name) == 0)
    {
        if (index)
            *index = i;
        return t;
    }
    return NULL;
}

/* A proxy as Toxiproxy shows it: name, listen, upstream, enabled, toxics
 * (upstream toxics first, then downstream, each in the order added). */
static json_t *proxy_view(json_t *p)
{
    json_t *o = json_pack("{s:O,s:O,s:O,s:O}", "name", json_object_get(p, "name"), "listen",
                          json_object_get(p, "listen"), "upstream", json_object_get(p, "upstream"),
                          "enabled", json_object_get(p, "enabled"));
    json_t *ts = json_array();
    for (int pass = 0; pass < 2; pass++) {
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(p, "toxics"), i, t)
        {
            int up = strcasecmp(json_string_value(json_object_get(t, "stream")), "upstream") == 0;
            if (up == (pass == 0))
                json_array_append(ts, t);
        }
    }
    json_object_set_new(o, "toxics", ts);
    return o;
}

/* A name faultline can give a listener and a rule: Toxiproxy takes any
 * string, faultline names are 1-63 letters, digits, '-', '_' and '.'. */
static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return 0;
    return 1;
}

/* ---- toxics ---- */

struct tox_type {
    const char *name;
    const char *attrs[4]; /* in Toxiproxy's order; numbers unless listed in strs */
    const char *strs[2];
    json_int_t dflt[4];
};

static const struct tox_type tox_types[] = {
    {"latency", {"latency", "jitter"}, {NULL}, {0, 0}},
    {"bandwidth", {"rate"}, {NULL}, {0}},
    {"slicer", {"average_size", "size_variation", "delay"}, {NULL}, {0, 0, 0}},
    {"limit_data", {"bytes"}, {NULL}, {0}},
    {"timeout", {"timeout"}, {NULL}, {0}},
    {"slow_close", {"delay"}, {NULL}, {0}},
    {"reset_peer", {"timeout"}, {NULL}, {0}},
    {"noop", {NULL}, {NULL}, {0}},
    /* faultline's, per request */
    {"http_abort", {"status", "body"}, {"body"}, {503}},
    {"http_delay", {"latency", "jitter"}, {NULL}, {0, 0}},
    {"grpc_abort", {"code", "message"}, {"message"}, {14}},
};

static const struct tox_type *tox_type(const char *name)
{
    for (size_t i = 0; i < sizeof(tox_types) / sizeof(tox_types[0]); i++)
        if (strcmp(tox_types[i].name, name) == 0)
            return &tox_types[i];
    return NULL;
}

static int is_str_attr(const struct tox_type *ty, const char *a)
{
    for (int i = 0; i < 2 && ty->strs[i]; i++)
        if (strcmp(ty->strs[i], a) == 0)
            return 1;
    return 0;
}

/* Merges the attributes in `in` (an object, or NULL) into `attrs`, which has
 * every attribute of the type. Unknown keys are ignored, as Go's JSON
 * decoding does. Returns 0, or -1 with msg set. */
static int merge_attrs(const struct tox_type *ty, json_t *attrs, json_t *in, char *msg, size_t len)
{
    if (in && !json_is_object(in) && !json_is_null(in)) {
        snprintf(msg, len, "bad request body: attributes must be an object");
        return -1;
    }
    for (int i = 0; i < 4 && ty->attrs[i]; i++) {
        json_t *v = in ? json_object_get(in, ty->attrs[i]) : NULL;
        if (!v)
            continue;
        if (is_str_attr(ty, ty->attrs[i])) {
            if (!json_is_string(v)) {
                snprintf(msg, len, "bad request body: attribute %s of %s must be a string",
                         ty->attrs[i], ty->name);
                return -1;
            }
            json_object_set(attrs, ty->attrs[i], v);
            continue;
        }
        if (!json_is_integer(v) && !(json_is_real(v) && json_real_value(v) == floor(json_real_value(v)))) {
            snprintf(msg, len, "bad request body: attribute %s of %s must be a whole number",
                     ty->attrs[i], ty->name);
            return -1;
        }
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : (json_int_t)json_real_value(v);
        if (n < 0) {
            snprintf(msg, len, "bad request body: attribute %s of %s must not be negative",
                     ty->attrs[i], ty->name);
            return -1;
        }
        json_object_set_new(attrs, ty->attrs[i], json_integer(n));
    }
    /* What faultline cannot do, refused now rather than applied wrong. */
    json_int_t a = json_integer_value(json_object_get(attrs, "average_size"));
    if (strcmp(ty->name, "slicer") == 0 && a <= 0) {
        snprintf(msg, len, "bad request body: slicer average_size must be at least 1 byte");
        return -1;
    }
    json_int_t st = json_integer_value(json_object_get(attrs, "status"));
    if (strcmp(ty->name, "http_abort") == 0 && (st < 200 || st > 599)) {
        snprintf(msg, len, "bad request body: http_abort status must be an HTTP status 200-599");
        return -1;
    }
    json_int_t code = json_integer_value(json_object_get(attrs, "code"));
    if (strcmp(ty->name, "grpc_abort") == 0 && code > 16) {
        snprintf(msg, len, "bad request body: grpc_abort code must be a gRPC status 0-16");
        return -1;
    }
    const char *sv = json_string_value(json_object_get(attrs, "message"));
    if (sv && strpbrk(sv, "\r\n")) {
        snprintf(msg, len, "bad request body: grpc_abort message must be a single line");
        return -1;
    }
    return 0;
}

static json_t *new_attrs(const struct tox_type *ty)
{
    json_t *o = json_object();
    for (int i = 0; i < 4 && ty->attrs[i]; i++)
        json_object_set_new(o, ty->attrs[i],
                            is_str_attr(ty, ty->attrs[i]) ? json_string("")
                                                          : json_integer(ty->dflt[i]));
    return o;
}

/* As Go prints a float32: 1, 0.5 (not 1.0). */
static json_t *toxicity_json(double x)
{
    return x == floor(x) && fabs(x) < 1e15 ? json_integer((json_int_t)x) : json_real(x);
}

static int stream_ok(const char *s)
{
    return strcasecmp(s, "upstream") == 0 || strcasecmp(s, "downstream") == 0;
}

/* ---- the policy made from the state ---- */

static char *dur(char *buf, size_t len, json_int_t n, const char *unit)
{
    snprintf(buf, len, "%lld%s", (long long)n, unit);
    return buf;
}

static double percent(json_t *t)
{
    double x = json_number_value(json_object_get(t, "toxicity")) * 100.0;
    if (x < 0)
        x = 0;
    if (x > 100)
        x = 100;
    return round(x * 10000.0) / 10000.0;
}

/* The connection-fault body of toxic t, or NULL for noop and the L7 types. */
static json_t *toxic_fault(json_t *t)
{
    const char *type = json_string_value(json_object_get(t, "type"));
    json_t *a = json_object_get(t, "attributes");
    const char *dir = strcasecmp(json_string_value(json_object_get(t, "stream")), "upstream") == 0
                          ? "upstream"
                          : "downstream";
    char b1[32], b2[32];
#define A(k) json_integer_value(json_object_get(a, k))
    json_t *c = json_pack("{s:f}", "percent", percent(t));
    if (strcmp(type, "latency") == 0) {
        /* Toxiproxy's latency +- jitter, uniform: faultline's fixed + [0, 2 x jitter]. */
        json_int_t l = A("latency"), j = A("jitter");
        json_int_t lo = l > j ? l - j : 0;
        json_object_set_new(c, "latency", json_pack("{s:s,s:s,s:s}", "fixed", dur(b1, 32, lo, "ms"),
                                                     "jitter", dur(b2, 32, l + j - lo, "ms"),
                                                     "direction", dir));
    } else if (strcmp(type, "bandwidth") == 0) {
        /* KB/s of 1,000 bytes; 0 stalls the stream, as in Toxiproxy. */
        if (A("rate") == 0)
            json_object_set_new(c, "timeout", json_pack("{s:s,s:s}", "after", "0s", "direction", dir));
        else
            json_object_set_new(c, "bandwidth",
                                json_pack("{s:s,s:s}", "rate", dur(b1, 32, A("rate") * 1000, "/s"),
                                          "direction", dir));
    } else if (strcmp(type, "slicer") == 0) {
        json_int_t avg = A("average_size"), var = A("size_variation");
        if (var >= avg)
            var = avg - 1;
        json_object_set_new(c, "slicer",
                            json_pack("{s:I,s:I,s:s,s:s}", "average", avg, "variation", var,
                                      "delay", dur(b1, 32, A("delay"), "us"), "direction", dir));
    } else if (strcmp(type, "limit_data") == 0) {
        json_object_set_new(c, "limit_data",
                            json_pack("{s:s,s:s}", "bytes", dur(b1, 32, A("bytes"), ""), "direction", dir));
    } else if (strcmp(type, "timeout") == 0) {
        json_object_set_new(c, "timeout", json_pack("{s:s,s:s}", "after", dur(b1, 32, A("timeout"), "ms"),
                                                    "direction", dir));
    } else if (strcmp(type, "slow_close") == 0) {
        json_object_set_new(c, "slow_close", json_pack("{s:s,s:s}", "delay", dur(b1, 32, A("delay"), "ms"),
                                                       "direction", dir));
    } else if (strcmp(type, "reset_peer") == 0) {
        /* Toxiproxy closes both sockets with SO_LINGER 0: both peers see the RST. */
        json_object_set_new(c, "reset_peer", json_pack("{s:s,s:s}", "after", dur(b1, 32, A("timeout"), "ms"),
                                                       "direction", "both"));
    } else {
        json_decref(c);
        return NULL;
    }
#undef A
    return c;
}

/* The policy for state: a listener per enabled proxy, its connection toxics
 * as rules of their own (their toxics stack), its per-request toxics as one
 * rule (delay and abort, each with its toxicity). */
static json_t *policy_of(json_t *state)
{
    json_t *ls = json_array(), *rules = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(state, i, p)
    {
        if (!json_is_true(json_object_get(p, "enabled")))
            continue;
        const char *pn = json_string_value(json_object_get(p, "name"));
        json_array_append_new(ls, json_pack("{s:s,s:O,s:O}", "name", pn, "listen",
                                            json_object_get(p, "listen"), "upstream",
                                            json_object_get(p, "upstream")));
        json_t *l7 = json_object(), *l7rule = NULL;
        size_t k;
        json_t *t;
        char rn[160];
        json_array_foreach(json_object_get(p, "toxics"), k, t)
        {
            const char *tn = json_string_value(json_object_get(t, "name"));
            const char *type = json_string_value(json_object_get(t, "type"));
            json_t *a = json_object_get(t, "attributes");
            snprintf(rn, sizeof(rn), "%s.%s", pn, tn);
            json_t *cf = toxic_fault(t);
            if (cf) {
                json_array_append_new(rules, json_pack("{s:s,s:[s],s:{s:o}}", "name", rn, "on", pn,
                                                       "fault", "connection", cf));
                continue;
            }
            if (strcmp(type, "noop") == 0)
                continue;
            if (!l7rule)
                l7rule = json_pack("{s:s,s:[s]}", "name", rn, "on", pn);
            double pc = percent(t);
            if (strcmp(type, "http_delay") == 0) {
                json_int_t lt = json_integer_value(json_object_get(a, "latency"));
                json_int_t j = json_integer_value(json_object_get(a, "jitter"));
                json_int_t lo = lt > j ? lt - j : 0;
                char b1[32], b2[32];
                json_object_set_new(l7, "delay", json_pack("{s:s,s:s,s:f}", "fixed", dur(b1, 32, lo, "ms"),
                                                           "jitter", dur(b2, 32, lt + j - lo, "ms"),
                                                           "percent", pc));
            } else {
                json_t *ab = json_object_get(l7, "abort");
                if (!ab) {
                    ab = json_pack("{s:f}", "percent", pc);
                    json_object_set_new(l7, "abort", ab);
                } else if (pc > json_real_value(json_object_get(ab, "percent"))) {
                    json_object_set_new(ab, "percent", json_real(pc));
                }
                if (strcmp(type, "http_abort") == 0) {
                    json_object_set(ab, "status", json_object_get(a, "status"));
                    const char *body = json_string_value(json_object_get(a, "body"));
                    if (body && *body)
                        json_object_set_new(ab, "body", json_string(body));
                } else {
                    json_object_set(ab, "grpc_status", json_object_get(a, "code"));
                    const char *m = json_string_value(json_object_get(a, "message"));
                    if (m && *m)
                        json_object_set_new(ab, "message", json_string(m));
                }
            }
        }
        if (l7rule) {
            json_object_set_new(l7rule, "fault", l7);
            json_array_insert_new(rules, 0, l7rule); /* before the connection rules it never shadows */
        } else {
            json_decref(l7);
        }
    }
    return json_pack("{s:s,s:s,s:{s:s},s:{s:s,s:o,s:o}}", "apiVersion", "faultline/v1", "kind",
                     "FaultPolicy", "metadata", "name", "toxiproxy", "spec", "ttl", "8760h",
                     "listeners", ls, "rules", rules);
}

/* ---- applying a change ---- */

/* "localhost:0" and "127.0.0.1:0": a free port now, reported back as
 * Toxiproxy reports the resolved address. Runs on the thread pool. */
static int resolve_listen(json_t *p, char *err, size_t len)
{
    const char *l = json_string_value(json_object_get(p, "listen"));
    char host[256];
    const char *colon = strrchr(l, ':');
    if (!colon || (size_t)(colon - l) >= sizeof(host)) {
        snprintf(err, len, "listen %s: give HOST:PORT", l);
        return -1;
    }
    memcpy(host, l, (size_t)(colon - l));
    host[colon - l] = 0;
    const char *port = colon + 1;
    if (strcmp(host, "localhost") == 0 || host[0] == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (strcmp(port, "0") != 0) {
        char buf[300];
        snprintf(buf, sizeof(buf), "%s:%s", host, port);
        json_object_set_new(p, "listen", json_string(buf));
        return 0;
    }
    struct sockaddr_storage ss;
    char buf[300], bare[256];
    memset(&ss, 0, sizeof(ss));
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']')
        snprintf(bare, sizeof(bare), "%.*s", (int)(hl - 2), host + 1);
    else
        snprintf(bare, sizeof(bare), "%s", host);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, bare, &a4->sin_addr) == 1)
        a4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, bare, &a6->sin6_addr) == 1)
        a6->sin6_family = AF_INET6;
    else {
        snprintf(err, len, "listen %s: give an IP address (or localhost) and a port", l);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(err, len, "listen %s: no free port", l);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    int pn = ntohs(ss.ss_family == AF_INET6 ? a6->sin6_port : a4->sin_port);
    snprintf(buf, sizeof(buf), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", bare, pn);
    json_object_set_new(p, "listen", json_string(buf));
    return 0;
}

static void work_cb(uv_work_t *w)
{
    struct tp_work *tw = w->data;
    size_t i;
    json_t *p;
    json_array_foreach(tw->state, i, p) if (json_is_true(json_object_get(p, "enabled")) &&
                                            resolve_listen(p, tw->err, sizeof(tw->err)) < 0)
    {
        tw->rc = -EINVAL;
        return;
    }
    int any = 0;
    json_array_foreach(tw->state, i, p) any |= json_is_true(json_object_get(p, "enabled"));
    if (!any)
        return; /* no proxy listens: no policy (a policy without listeners is refused) */
    json_t *pol = policy_of(tw->state);
    tw->json = json_dumps(pol, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(pol);
    if (!tw->json) {
        tw->rc = -ENOMEM;
        snprintf(tw->err, sizeof(tw->err), "out of memory");
        return;
    }
    tw->rc = fl_policy_load_buf("toxiproxy", tw->json, strlen(tw->json), &tw->p, &tw->errs);
    if (tw->rc < 0) {
        /* The state was checked: what is left is an address (or a name clash). */
        snprintf(tw->err, sizeof(tw->err), "%s",
                 tw->errs.n ? tw->errs.msgs[0] : "the proxies cannot be made a policy");
    }
}

static void done(struct fl_admin_http_req *rq)
{
    if (rq == tp.current)
        tp.current = NULL;
    tp.busy = 0;
    next_request();
}

/* The answer's body, made from the state as applied (listen addresses
 * resolved): {"proxy": NAME} is that proxy, {"names": [...]} the populate
 * answer; anything else is sent as it is. */
static json_t *final_answer(json_t *state, json_t *a)
{
    const char *pn = json_string_value(json_object_get(a, "proxy"));
    json_t *names = json_object_get(a, "names");
    if (pn) {
        json_t *p = find_proxy(state, pn, NULL);
        return p ? proxy_view(p) : json_object();
    }
    if (names) {
        json_t *ps = json_array();
        size_t i;
        json_t *n;
        json_array_foreach(names, i, n)
        {
            json_t *p = find_proxy(state, json_string_value(n), NULL);
            if (p)
                json_array_append_new(ps, proxy_view(p));
        }
        return json_pack("{s:o}", "proxies", ps);
    }
    return json_incref(a);
}

static void after_cb(uv_work_t *w, int status)
{
    struct tp_work *tw = w->data;
    struct fl_admin_http_req *rq = tp.current;
    char err[512];
    (void)status;
    if (!tp.started) { /* the daemon is stopping */
        json_decref(tw->state);
        json_decref(tw->answer);
        free(tw->json);
        fl_policy_unref(tw->p);
        fl_policy_errors_free(&tw->errs);
        free(tw);
        return;
    }
    if (tw->rc == 0 && fl_runtime_set_toxiproxy(tw->p, err, sizeof(err)) < 0) {
        tw->rc = -EIO;
        snprintf(tw->err, sizeof(tw->err), "%s", err);
    }
    if (tw->rc == 0) {
        /* As Toxiproxy: a proxy stopped, deleted or moved drops its connections. */
        size_t i;
        json_t *op;
        json_array_foreach(tp.state, i, op)
        {
            const char *nm = json_string_value(json_object_get(op, "name"));
            json_t *np = find_proxy(tw->state, nm, NULL);
            if (json_is_true(json_object_get(op, "enabled")) &&
                (!np || !json_is_true(json_object_get(np, "enabled")) ||
                 !json_equal(json_object_get(op, "listen"), json_object_get(np, "listen")) ||
                 !json_equal(json_object_get(op, "upstream"), json_object_get(np, "upstream"))))
                fl_workers_close_scope(nm);
        }
        json_decref(tp.state);
        tp.state = json_incref(tw->state);
        if (rq) {
            if (tw->status == 204 || !tw->answer)
                fl_admin_http_respond(rq, tw->status, "application/json", NULL, "", 0);
            else
                answer_json(rq, tw->status, final_answer(tw->state, tw->answer));
        }
    } else if (rq) {
        fl_warn("toxiproxy API: %s", tw->err);
        answer_error(rq, 500, "%s", tw->err);
    }
    if (rq)
        fl_admin_http_watch(rq, NULL);
    json_decref(tw->state);
    json_decref(tw->answer);
    free(tw->json);
    fl_policy_unref(tw->p);
    fl_policy_errors_free(&tw->errs);
    free(tw);
    done(rq);
}

/* Applies state (a new reference, owned here); answers status with answer
 * (owned; it may point into state, whose listen addresses are then the
 * resolved ones) once it is in force. */
static void apply(struct fl_admin_http_req *rq, json_t *state, int status, json_t *answer)
{
    struct tp_work *tw = calloc(1, sizeof(*tw));
    if (!tw) {
        json_decref(state);
        json_decref(answer);
        answer_error(rq, 500, "out of memory");
        done(rq);
        return;
    }
    tw->w.data = tw;
    tw->state = state;
    tw->status = status;
    tw->answer = answer;
    fl_admin_http_watch(rq, &tp.current);
    if (uv_queue_work(tp.loop, &tw->w, work_cb, after_cb) < 0) {
        fl_admin_http_watch(rq, NULL);
        json_decref(state);
        json_decref(answer);
        free(tw);
        answer_error(rq, 500, "cannot queue the change");
        done(rq);
    }
}

/* ---- the endpoints ---- */

static json_t *body_json(struct fl_admin_http_req *rq, char *msg, size_t len)
{
    size_t n;
    const char *b = fl_admin_http_body(rq, &n);
    json_error_t je;
    json_t *o = json_loadb(b, n, JSON_DISABLE_EOF_CHECK, &je);
    if (!o)
        snprintf(msg, len, "bad request body: %s", je.text);
    return o;
}

/* A proxy object from a request body, checked as Toxiproxy checks it. */
static json_t *proxy_from(json_t *in, const char *ctx, char *msg, size_t len, int *status)
{
    json_t *name = json_object_get(in, "name"), *up = json_object_get(in, "upstream"),
           *ls = json_object_get(in, "listen"), *en = json_object_get(in, "enabled");
    *status = 400;
    if (!json_is_object(in)) {
        snprintf(msg, len, "bad request body: a proxy is a JSON object");
        return NULL;
    }
    if (!json_is_string(name) || !*json_string_value(name)) {
        snprintf(msg, len, "missing required field: name%s", ctx);
        return NULL;
    }
    if (!json_is_string(up) || !*json_string_value(up)) {
        snprintf(msg, len, "missing required field: upstream%s", ctx);
        return NULL;
    }
    if (!name_ok(json_string_value(name))) {
        snprintf(msg, len, "bad request body: proxy name '%s': faultline takes 1-63 letters, "
                 "digits, '-', '_' and '.'%s", json_string_value(name), ctx);
        return NULL;
    }
    if ((ls && !json_is_string(ls)) || (en && !json_is_boolean(en) && !json_is_null(en))) {
        snprintf(msg, len, "bad request body: listen is a string and enabled a boolean%s", ctx);
        return NULL;
    }
    return json_pack("{s:O,s:s,s:O,s:b,s:[]}", "name", name, "listen",
                     ls && *json_string_value(ls) ? json_string_value(ls) : "127.0.0.1:0",
                     "upstream", up, "enabled", !en || json_is_null(en) || json_is_true(en),
                     "toxics");
}

/* A listener of the policy file already has the name. */
static int clashes_with_file(const char *name)
{
    struct fl_policy *f = fl_runtime_file_policy();
    for (size_t i = 0; f && i < f->n_listeners; i++)
        if (strcmp(f->listeners[i].name, name) == 0)
            return 1;
    return 0;
}

static json_t *all_view(json_t *state)
{
    json_t *o = json_object();
    /* Keyed by name, in name order (Go's maps marshal sorted). */
    size_t n = json_array_size(state);
    const char **names = calloc(n + 1, sizeof(*names));
    for (size_t i = 0; names && i < n; i++)
        names[i] = json_string_value(json_object_get(json_array_get(state, i), "name"));
    for (size_t i = 0; names && i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                const char *x = names[i];
                names[i] = names[j];
                names[j] = x;
            }
    for (size_t i = 0; names && i < n; i++)
        json_object_set_new(o, names[i], proxy_view(find_proxy(state, names[i], NULL)));
    free(names);
    return o;
}

static void handle(struct fl_admin_http_req *rq)
{
    const char *m = fl_admin_http_method(rq), *path = fl_admin_http_path(rq);
    char msg[600], pname[256] = "", tname[256] = "";
    int get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0 || strcmp(m, "PATCH") == 0,
        del = strcmp(m, "DELETE") == 0;
    int status;

    /* /proxies/{proxy}[/toxics[/{toxic}]] */
    const char *rest = NULL;
    int depth = -1; /* 0 /proxies, 1 /proxies/P, 2 /proxies/P/toxics, 3 /proxies/P/toxics/T */
    if (strcmp(path, "/proxies") == 0) {
        depth = 0;
    } else if (strncmp(path, "/proxies/", 9) == 0) {
        rest = path + 9;
        const char *sl = strchr(rest, '/');
        size_t pl = sl ? (size_t)(sl - rest) : strlen(rest);
        if (pl && pl < sizeof(pname)) {
            memcpy(pname, rest, pl);
            pname[pl] = 0;
            if (!sl)
                depth = 1;
            else if (strcmp(sl, "/toxics") == 0)
                depth = 2;
            else if (strncmp(sl, "/toxics/", 8) == 0 && sl[8] && !strchr(sl + 8, '/') &&
                     strlen(sl + 8) < sizeof(tname)) {
                snprintf(tname, sizeof(tname), "%s", sl + 8);
                depth = 3;
            }
        }
    }

    if (strcmp(path, "/version") == 0 && get) {
        static const char v[] = "{\"version\": \"" FL_TOXIPROXY_API_VERSION "\"}\n";
        fl_admin_http_respond(rq, 200, "application/json;charset=utf-8",
                              "X-Faultline-Version: " FL_VERSION "\r\n", v, sizeof(v) - 1);
        goto next;
    }
    if (strcmp(path, "/reset") == 0 && post) {
        json_t *st = json_deep_copy(tp.state);
        size_t i;
        json_t *p;
        json_array_foreach(st, i, p)
        {
            json_object_set_new(p, "enabled", json_true());
            json_object_set_new(p, "toxics", json_array());
        }
        apply(rq, st, 204, NULL);
        return;
    }
    if (strcmp(path, "/populate") == 0 && post) {
        json_t *in = body_json(rq, msg, sizeof(msg));
        if (!in)
            goto bad;
        if (!json_is_array(in)) {
            json_decref(in);
            snprintf(msg, sizeof(msg), "bad request body: populate takes a JSON array of proxies");
            goto bad;
        }
        json_t *st = json_deep_copy(tp.state), *names = json_array();
        size_t i;
        json_t *e;
        /* Every proxy is checked before anything changes. */
        json_t *made = json_array();
        json_array_foreach(in, i, e)
        {
            char ctx[32];
            snprintf(ctx, sizeof(ctx), " at proxy %zu", i + 1);
            json_t *np = proxy_from(e, ctx, msg, sizeof(msg), &status);
            if (!np || clashes_with_file(json_string_value(json_object_get(np, "name")))) {
                if (np)
                    snprintf(msg, sizeof(msg), "proxy already exists: the policy file has a listener "
                             "named %s", json_string_value(json_object_get(np, "name")));
                json_decref(np);
                json_decref(in);
                json_decref(st);
                json_decref(names);
                json_decref(made);
                answer_error(rq, np ? 409 : status, "%s", msg);
                goto next;
            }
            json_array_append_new(made, np);
        }
        json_array_foreach(made, i, e)
        {
            const char *nm = json_string_value(json_object_get(e, "name"));
            size_t at = 0;
            json_t *old = find_proxy(st, nm, &at);
            json_array_append_new(names, json_string(nm));
            if (old && strcmp(json_string_value(json_object_get(old, "upstream")),
                              json_string_value(json_object_get(e, "upstream"))) == 0 &&
                (strcmp(json_string_value(json_object_get(old, "listen")),
                        json_string_value(json_object_get(e, "listen"))) == 0 ||
                 (strncmp(json_string_value(json_object_get(e, "listen")), "localhost:", 10) == 0 &&
                  strncmp(json_string_value(json_object_get(old, "listen")), "127.0.0.1:", 10) == 0 &&
                  strcmp(json_string_value(json_object_get(e, "listen")) + 10,
                         json_string_value(json_object_get(old, "listen")) + 10) == 0)))
                continue; /* unchanged: kept as it is, toxics and all */
            if (old)
                json_array_set(st, at, e); /* replaced: a new proxy, no toxics */
            else
                json_array_append(st, e);
        }
        json_decref(made);
        json_decref(in);
        /* The answer lists the proxies as they are once applied. */
        json_t *ans = json_pack("{s:o}", "names", names);
        apply(rq, st, 201, ans);
        return;
    }
    if (depth == 0 && get) {
        answer_json(rq, 200, all_view(tp.state));
        goto next;
    }
    if (depth == 0 && post) {
        json_t *in = body_json(rq, msg, sizeof(msg));
        if (!in)
            goto bad;
        json_t *np = proxy_from(in, "", msg, sizeof(msg), &status);
        json_decref(in);
        if (!np) {
            answer_error(rq, status, "%s", msg);
            goto next;
        }
        const char *nm = json_string_value(json_object_get(np, "name"));
        if (find_proxy(tp.state, nm, NULL) || clashes_with_file(nm)) {
            json_decref(np);
            answer_error(rq, 409, "proxy already exists");
            goto next;
        }
        json_t *st = json_deep_copy(tp.state);
        json_array_append_new(st, np);
        apply(rq, st, 201, json_pack("{s:s}", "proxy", nm));
        return;
    }
    if (depth < 0) {
        fl_admin_http_respond(rq, 404, "text/plain; charset=utf-8", NULL, "404 page not found\n", 19);
        goto next;
    }
    json_t *cur = find_proxy(tp.state, pname, NULL);
    if (!cur) {
        if (get || post || del)
            answer_error(rq, 404, "proxy not found");
        else
            fl_admin_http_respond(rq, 405, "text/plain", NULL, "", 0);
        goto next;
    }
    if (depth == 1 && get) {
        answer_json(rq, 200, proxy_view(cur));
        goto next;
    }
    if (depth == 1 && del) {
        json_t *st = json_deep_copy(tp.state);
        size_t at = 0;
        find_proxy(st, pname, &at);
        json_array_remove(st, at);
        apply(rq, st, 204, NULL);
        return;
    }
    if (depth == 1 && post) {
        json_t *in = body_json(rq, msg, sizeof(msg));
        if (!in)
            goto bad;
        json_t *ls = json_object_get(in, "listen"), *up = json_object_get(in, "upstream"),
               *en = json_object_get(in, "enabled");
        if (!json_is_object(in) || (ls && !json_is_string(ls)) || (up && !json_is_string(up)) ||
            (en && !json_is_boolean(en))) {
            json_decref(in);
            snprintf(msg, sizeof(msg), "bad request body: listen and upstream are strings, enabled a boolean");
            goto bad;
        }
        json_t *st = json_deep_copy(tp.state);
        json_t *p = find_proxy(st, pname, NULL);
        if (ls && *json_string_value(ls))
            json_object_set(p, "listen", ls);
        if (up && *json_string_value(up))
            json_object_set(p, "upstream", up);
        if (en)
            json_object_set(p, "enabled", en);
        json_decref(in);
        apply(rq, st, 200, json_pack("{s:s}", "proxy", pname));
        return;
    }
    if (depth == 2 && get) {
        json_t *v = proxy_view(cur);
        answer_json(rq, 200, json_incref(json_object_get(v, "toxics")));
        json_decref(v);
        goto next;
    }
    if (depth == 2 && post) {
        json_t *in = body_json(rq, msg, sizeof(msg));
        if (!in)
            goto bad;
        if (!json_is_object(in)) {
            json_decref(in);
            snprintf(msg, sizeof(msg), "bad request body: a toxic is a JSON object");
            goto bad;
        }
        json_t *jst = json_object_get(in, "stream"), *jty = json_object_get(in, "type"),
               *jn = json_object_get(in, "name"), *jtx = json_object_get(in, "toxicity");
        const char *stream = jst ? json_string_value(jst) : "downstream";
        if (!stream || !stream_ok(stream)) {
            json_decref(in);
            answer_error(rq, 400, "stream was invalid, can be either upstream or downstream");
            goto next;
        }
        const struct tox_type *ty = json_is_string(jty) ? tox_type(json_string_value(jty)) : NULL;
        if (!ty) {
            json_decref(in);
            answer_error(rq, 400, "invalid toxic type");
            goto next;
        }
        char nm[256];
        if (json_is_string(jn) && *json_string_value(jn))
            snprintf(nm, sizeof(nm), "%s", json_string_value(jn));
        else
            snprintf(nm, sizeof(nm), "%s_%s", ty->name, stream);
        if (find_toxic(cur, nm, NULL)) {
            json_decref(in);
            answer_error(rq, 409, "toxic already exists");
            goto next;
        }
        char rn[200];
        snprintf(rn, sizeof(rn), "%s.%s", pname, nm);
        if (!name_ok(nm) || !name_ok(rn)) {
            json_decref(in);
            snprintf(msg, sizeof(msg), "bad request body: toxic name '%s': faultline takes letters, "
                     "digits, '-', '_' and '.', at most 63 with the proxy's name and a dot", nm);
            goto bad;
        }
        if (jtx && !json_is_number(jtx)) {
            json_decref(in);
            snprintf(msg, sizeof(msg), "bad request body: toxicity is a number from 0 to 1");
            goto bad;
        }
        json_t *attrs = new_attrs(ty);
        if (merge_attrs(ty, attrs, json_object_get(in, "attributes"), msg, sizeof(msg)) < 0) {
            json_decref(attrs);
            json_decref(in);
            goto bad;
        }
        json_t *t = json_pack("{s:o,s:s,s:s,s:s,s:o}", "attributes", attrs, "name", nm, "type",
                              ty->name, "stream", stream, "toxicity",
                              toxicity_json(jtx ? json_number_value(jtx) : 1.0));
        json_decref(in);
        json_t *st = json_deep_copy(tp.state);
        json_array_append_new(json_object_get(find_proxy(st, pname, NULL), "toxics"), t);
        apply(rq, st, 200, json_incref(t));
        return;
    }
    if (depth == 3) {
        json_t *t = find_toxic(cur, tname, NULL);
        if (!t && (get || post || del)) {
            answer_error(rq, 404, "toxic not found");
            goto next;
        }
        if (get) {
            answer_json(rq, 200, json_incref(t));
            goto next;
        }
        if (del) {
            json_t *st = json_deep_copy(tp.state);
            size_t at = 0;
            json_t *sp = find_proxy(st, pname, NULL);
            find_toxic(sp, tname, &at);
            json_array_remove(json_object_get(sp, "toxics"), at);
            apply(rq, st, 204, NULL);
            return;
        }
        if (post) {
            json_t *in = body_json(rq, msg, sizeof(msg));
            if (!in)
                goto bad;
            json_t *jtx = json_object_get(in, "toxicity");
            if (!json_is_object(in) || (jtx && !json_is_number(jtx))) {
                json_decref(in);
                snprintf(msg, sizeof(msg), "bad request body: a toxic update is {\"attributes\": {...}, \"toxicity\": N}");
                goto bad;
            }
            json_t *st = json_deep_copy(tp.state);
            json_t *sp = find_proxy(st, pname, NULL);
            json_t *nt = find_toxic(sp, tname, NULL);
            const struct tox_type *ty = tox_type(json_string_value(json_object_get(nt, "type")));
            if (merge_attrs(ty, json_object_get(nt, "attributes"), json_object_get(in, "attributes"),
                            msg, sizeof(msg)) < 0) {
                json_decref(in);
                json_decref(st);
                goto bad;
            }
            if (jtx)
                json_object_set_new(nt, "toxicity", toxicity_json(json_number_value(jtx)));
            json_decref(in);
            apply(rq, st, 200, json_incref(nt));
            return;
        }
    }
    fl_admin_http_respond(rq, 405, "text/plain", NULL, "", 0);
    goto next;
bad:
    answer_error(rq, 400, "%s", msg);
next:
    done(rq);
}

static void on_request(struct fl_admin_http_req *rq)
{
    struct tp_req *r = calloc(1, sizeof(*r));
    if (!r) {
        answer_error(rq, 500, "out of memory");
        return;
    }
    r->rq = rq;
    fl_admin_http_watch(rq, &r->rq); /* cleared if the client leaves while it waits */
    *tp.tail = r;
    tp.tail = &r->next;
    if (!tp.busy)
        next_request();
}

static void next_request(void)
{
    while (!tp.busy && tp.queue) {
        struct tp_req *r = tp.queue;
        tp.queue = r->next;
        if (!tp.queue)
            tp.tail = &tp.queue;
        struct fl_admin_http_req *rq = r->rq;
        free(r);
        if (!rq)
            continue;
        tp.busy = 1;
        tp.current = rq;
        fl_admin_http_watch(rq, &tp.current);
        handle(rq);
    }
}

int fl_toxiproxy_start(uv_loop_t *loop, const char *addr, char *err, size_t errlen)
{
    memset(&tp, 0, sizeof(tp));
    tp.loop = loop;
    tp.state = json_array();
    tp.tail = &tp.queue;
    tp.started = 1;
    int e = fl_admin_http_listen_toxiproxy(addr, on_request, err, errlen);
    if (e == 0)
        fl_info("Toxiproxy API on %s (proxies become listeners of the policy 'toxiproxy')", addr);
    return e;
}

void fl_toxiproxy_stop(void)
{
    if (!tp.started)
        return;
    json_decref(tp.state);
    tp.state = NULL;
    tp.started = 0;
}
