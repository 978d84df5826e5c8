/* faultctl: the command line for a running faultline daemon (docs/reference.md, "Commands").
 * Each verb is one admin API call (see admin.h) and a way to print its answer:
 * a table on a terminal, the API's JSON otherwise (or as -o says).
 *
 * Exit codes: 0 ok, 1 error, 2 usage, 3 daemon unreachable, 4 not found;
 * `run` adds 10-13 (experiment.h). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "experiment.h"
#include "paths.h"
#include "values.h"

#define EX_OK 0
#define EX_ERR 1
#define EX_USAGE 2
#define EX_UNREACHABLE 3
#define EX_NOTFOUND 4

#define CTL_TIMEOUT_MS 30000
#define CTL_MAX_POLICY (1u << 20)

struct ctl {
    char admin[PATH_MAX];
    int json;
};

struct verb {
    const char *name;
    const char *usage;
    const char *help;
    int (*fn)(struct ctl *g, int argc, char **argv);
};

static const struct verb *find_verb(const char *name);

static void usage_all(FILE *f);

static int verb_usage(const char *name, const char *msg)
{
    const struct verb *v = find_verb(name);
    if (msg)
        fprintf(stderr, "faultctl %s: %s\n", name, msg);
    if (v)
        fprintf(stderr, "usage: faultctl [--admin PATH] [-o table|json] %s\n  %s\n", v->usage,
                v->help);
    return EX_USAGE;
}

/* ---- talking to the daemon ---- */

static int unreachable(const struct ctl *g, int e)
{
    if (e == -EACCES || e == -EPERM)
        fprintf(stderr,
                "faultctl: permission denied on %s: the admin socket is mode 0600 and belongs to "
                "the daemon's user; run faultctl as that user (e.g. with sudo)\n",
                g->admin);
    else
        fprintf(stderr,
                "faultctl: no faultline daemon answers on %s (%s).\n"
                "  Start one:   faultline run -f POLICY.yaml --admin %s\n"
                "  or point faultctl at its socket: --admin PATH or FAULTLINE_ADMIN=PATH\n",
                g->admin, strerror(-e), g->admin);
    return EX_UNREACHABLE;
}

/* One request. Returns EX_OK with r filled for any HTTP status, or an exit code. */
static int call(const struct ctl *g, const char *method, const char *target, const char *hdrs,
                const char *body, size_t len, fl_cli_body_cb cb, void *arg, struct fl_cli_resp *r)
{
    int fd = fl_cli_connect_unix(g->admin);
    if (fd < 0)
        return unreachable(g, fd);
    int e = fl_cli_http(fd, method, target, "faultline", hdrs, body, len, cb ? -1 : CTL_TIMEOUT_MS,
                        cb, arg, r);
    if (e == -EINTR)
        return EX_OK;
    if (e < 0) {
        fprintf(stderr, "faultctl: %s %s on %s failed: %s\n", method, target, g->admin,
                e == -ETIMEDOUT ? "no answer within 30 s" : strerror(-e));
        return e == -ECONNRESET || e == -EPIPE ? EX_UNREACHABLE : EX_ERR;
    }
    return EX_OK;
}

/* Maps an HTTP status to an exit code, printing the API's error message(s). */
static int check(const struct fl_cli_resp *r, json_t *o)
{
    if (r->status >= 200 && r->status < 300)
        return EX_OK;
    json_t *errs = json_object_get(o, "errors"), *v;
    const char *msg = json_string_value(json_object_get(o, "error"));
    size_t i;
    if (json_array_size(errs)) {
        json_array_foreach(errs, i, v) fprintf(stderr, "%s\n", json_string_value(v));
        if (msg && r->status == 422)
            fprintf(stderr, "faultctl: %s\n", msg);
    } else {
        fprintf(stderr, "faultctl: %s\n", msg ? msg : r->body ? r->body : "request failed");
    }
    return r->status == 404 ? EX_NOTFOUND : EX_ERR;
}

/* Calls and parses the JSON answer. On EX_OK, *out holds it (caller decrefs). */
static int call_json(const struct ctl *g, const char *method, const char *target, const char *hdrs,
                     const char *body, size_t len, json_t **out)
{
    struct fl_cli_resp r;
    json_error_t je;
    int ex = call(g, method, target, hdrs, body, len, NULL, NULL, &r);
    *out = NULL;
    if (ex != EX_OK)
        return ex;
    json_t *o = json_loadb(r.body ? r.body : "", r.len, 0, &je);
    if (!o && r.status >= 200 && r.status < 300) {
        fprintf(stderr, "faultctl: the daemon's answer is not JSON: %s\n", je.text);
        fl_cli_resp_free(&r);
        return EX_ERR;
    }
    ex = check(&r, o);
    fl_cli_resp_free(&r);
    if (ex != EX_OK) {
        json_decref(o);
        return ex;
    }
    if (g->json) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
        if (s)
            printf("%s\n", s);
        free(s);
    }
    *out = o;
    return EX_OK;
}

static void url_encode(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

/* ---- printing helpers ---- */

static const char *js(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* A rule's name as the daemon says to use it (POLICY/RULE in a set). */
static const char *label(json_t *r)
{
    return *js(r, "label") ? js(r, "label") : js(r, "name");
}

static long long ji(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? json_integer_value(v) : (long long)json_number_value(v);
}

static void fmt_duration(char *buf, size_t len, double s)
{
    long long t = (long long)s;
    if (t >= 3600)
        snprintf(buf, len, "%lldh%02lldm%02llds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60)
        snprintf(buf, len, "%lldm%02llds", t / 60, t % 60);
    else
        snprintf(buf, len, "%.1fs", s);
}

/* "25%" or "25% 200ms" for one fault kind of a rule; "-" when absent. A "*"
 * follows each value changed live (faultctl set). */
static void fmt_fault(char *buf, size_t len, json_t *fault, const char *kind)
{
    json_t *f = json_object_get(fault, kind);
    if (!f) {
        snprintf(buf, len, "-");
        return;
    }
#define STAR(key) (json_is_true(json_object_get(f, key)) ? "*" : "")
    int n = snprintf(buf, len, "%g%%%s", json_number_value(json_object_get(f, "percent")),
                     STAR("percent_overridden"));
    if (n < 0 || (size_t)n >= len)
        return;
    if (strcmp(kind, "delay") == 0)
        snprintf(buf + n, len - (size_t)n, " %lldms%s", ji(f, "fixed_ms"), STAR("fixed_overridden"));
    else if (strcmp(kind, "abort") == 0 && json_object_get(f, "status"))
        snprintf(buf + n, len - (size_t)n, " %lld%s", ji(f, "status"), STAR("status_overridden"));
    else if (strcmp(kind, "abort") == 0 && json_object_get(f, "grpc_status"))
        snprintf(buf + n, len - (size_t)n, " %s", js(f, "grpc_status"));
#undef STAR
}

/* ---- verbs ---- */

static int no_args(int argc, char **argv, const char *verb)
{
    if (argc > 1) {
        char msg[256];
        snprintf(msg, sizeof(msg), "unexpected argument '%s'", argv[1]);
        return verb_usage(verb, msg);
    }
    return EX_OK;
}

static int cmd_status(struct ctl *g, int argc, char **argv)
{
    json_t *o = NULL;
    char up[32], ttl[32];
    int ex = no_args(argc, argv, "status");
    if (ex || (ex = call_json(g, "GET", "/v1/status", NULL, NULL, 0, &o)) != EX_OK || g->json)
        goto out;
    fmt_duration(up, sizeof(up), json_number_value(json_object_get(o, "uptime_s")));
    if (json_is_true(json_object_get(o, "expired")))
        snprintf(ttl, sizeof(ttl), "expired");
    else if (json_is_number(json_object_get(o, "ttl_remaining_s")))
        fmt_duration(ttl, sizeof(ttl), json_number_value(json_object_get(o, "ttl_remaining_s")));
    else
        snprintf(ttl, sizeof(ttl), "none");
    printf("policy        %s (%s, generation %lld)\n", js(o, "policy"), js(o, "file"),
           ji(o, "generation"));
    if (json_is_true(json_object_get(o, "halted"))) {
        const char *why = js(o, "halt_reason");
        if (strncmp(why, "HALT file ", 10) == 0)
            printf("state         HALTED (%s); remove that file to inject again\n", why);
        else
            printf("state         HALTED (%s); 'faultctl resume' to inject again\n", why);
    }
    else
        printf("state         %s\n", json_is_true(json_object_get(o, "expired"))
                                         ? "expired (not injecting)"
                                         : "injecting");
    printf("ttl           %s%s\n", ttl,
           strcmp(ttl, "expired") && strcmp(ttl, "none") ? " left" : "");
    printf("uptime        %s (pid %lld, faultline %s)\n", up, ji(o, "pid"), js(o, "version"));
    printf("workers       %lld\n", ji(o, "workers"));
    printf("connections   %lld active\n", ji(o, "active_connections"));
    printf("requests      %lld\n", ji(o, "requests_total"));
    printf("faults        %lld injected, %lld over max_active_faults, %lld in progress\n",
           ji(o, "faults_injected_total"), ji(o, "faults_overflow_total"), ji(o, "active_faults"));
    printf("rules         %lld\n", ji(o, "rules"));
    json_t *ps = json_object_get(o, "policies"), *pp;
    size_t i;
    /* The set: the file's policy and each FaultPolicy (more than one, or a
     * resource, is worth a line each). */
    if (json_array_size(ps) > 1 || (json_array_size(ps) == 1 &&
                                     strcmp(js(json_array_get(ps, 0), "source"), "file") != 0))
        json_array_foreach(ps, i, pp)
            printf("%s %s (%s): %lld rule%s, %lld target%s, %lld injected\n",
                   i ? "             " : "policies     ", js(pp, "id"), js(pp, "source"),
                   ji(pp, "rules"), ji(pp, "rules") == 1 ? "" : "s", ji(pp, "targets"),
                   ji(pp, "targets") == 1 ? "" : "s", ji(pp, "faults_injected"));
    json_t *ls = json_object_get(o, "listeners"), *l;
    json_array_foreach(ls, i, l) printf("%s %s %s -> %s\n", i ? "             " : "listeners    ",
                                        js(l, "name"), js(l, "listen"), js(l, "upstream"));
    json_t *tp = json_object_get(o, "transparent");
    if (tp) {
        printf("transparent   %s, sk_msg %s; %lld pods in %lld netns\n",
               json_is_true(json_object_get(tp, "redirecting")) ? "redirecting" : "FAILED OPEN",
               json_is_true(json_object_get(tp, "sockmap")) ? "on" : "off", ji(tp, "pods"),
               ji(tp, "netns"));
        printf("              %lld redirected, %lld sk_msg redirects, %lld fail-open events, "
               "%lld went direct (no listener)\n",
               ji(tp, "redirected"), ji(tp, "sk_msg_redirects"), ji(tp, "fail_open_events"),
               ji(tp, "fail_open_no_listener"));
    }
    json_t *k = json_object_get(o, "kubernetes");
    if (k) {
        const char *kerr = js(k, "error");
        printf("kubernetes    node %s via %s (%s); %s\n", js(k, "node"), js(k, "server"),
               js(k, "credentials"),
               *kerr ? kerr : json_is_true(json_object_get(k, "pods_synced")) ? "in sync"
                                                                            : "listing pods");
        json_t *fps = json_object_get(k, "faultpolicies"), *fp;
        json_array_foreach(fps, i, fp)
        {
            const char *why = *js(fp, "invalid") ? js(fp, "invalid") : js(fp, "conflict");
            printf("%s %s/%s: %s (generation %lld)%s%s\n",
                   i ? "             " : "faultpolicy  ", js(fp, "namespace"), js(fp, "name"),
                   js(fp, "state"), ji(fp, "generation"), *why ? ": " : "", why);
        }
        json_t *pods = json_object_get(k, "pods"), *pd;
        json_array_foreach(pods, i, pd)
        {
            const char *cg = js(pd, "cgroup");
            printf("%s %s (target %s): %s%s%s\n", i ? "             " : "pods         ",
                   js(pd, "pod"), js(pd, "target"), js(pd, "state"), *cg ? ", " : "", cg);
        }
    }
    printf("admin         %s (HALT file: %s)\n", g->admin, js(o, "halt_file"));
out:
    json_decref(o);
    return ex;
}

static int cmd_rules(struct ctl *g, int argc, char **argv)
{
    json_t *o = NULL, *r;
    size_t i;
    int ex = no_args(argc, argv, "rules");
    if (ex || (ex = call_json(g, "GET", "/v1/rules", NULL, NULL, 0, &o)) != EX_OK || g->json)
        goto out;
    json_t *rules = json_object_get(o, "rules");
    int w = 4;
    /* "label": POLICY/RULE when several policies are loaded. */
    json_array_foreach(rules, i, r) if ((int)strlen(label(r)) > w) w = (int)strlen(label(r));
    printf("%-*s  %-7s  %-16s  %-12s  %-8s  %9s  %9s  %s\n", w, "RULE", "ENABLED", "DELAY",
           "ABORT", "RESET", "MATCHED", "INJECTED", "OTHER");
    json_array_foreach(rules, i, r)
    {
        char d[48], a[48], rs[48], other[256] = "-";
        json_t *f = json_object_get(r, "fault"), *inj = json_object_get(r, "injected"), *v;
        const char *k;
        long long total = 0;
        size_t pos = 0;
        fmt_fault(d, sizeof(d), f, "delay");
        fmt_fault(a, sizeof(a), f, "abort");
        fmt_fault(rs, sizeof(rs), f, "reset");
        json_object_foreach(inj, k, v) total += json_integer_value(v);
        /* The kinds without a column of their own: "connection 30%". */
        json_object_foreach(f, k, v)
        {
            char one[64];
            if (!strcmp(k, "delay") || !strcmp(k, "abort") || !strcmp(k, "reset") ||
                pos >= sizeof(other) - 1)
                continue;
            fmt_fault(one, sizeof(one), f, k);
            int n = snprintf(other + pos, sizeof(other) - pos, "%s%s %s", pos ? ", " : "", k, one);
            if (n > 0)
                pos += (size_t)n < sizeof(other) - pos ? (size_t)n : sizeof(other) - pos - 1;
        }
        printf("%-*s  %-7s  %-16s  %-12s  %-8s  %9lld  %9lld  %s\n", w, label(r),
               json_is_true(json_object_get(r, "enabled")) ? "yes" : "no", d, a, rs,
               ji(r, "matched"), total, other);
    }
    if (json_array_size(rules) == 0)
        printf("(policy '%s' has no rules)\n", js(o, "policy"));
    else
        printf("(* = changed live; 'faultctl set RULE --percent|--delay|--status default' restores "
               "the file's)\n");
out:
    json_decref(o);
    return ex;
}

static int patch(struct ctl *g, const char *verb, const char *rule, json_t *body, json_t **out)
{
    char target[1024], enc[900];
    url_encode(enc, sizeof(enc), rule);
    snprintf(target, sizeof(target), "/v1/rules/%s", enc);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!s) {
        fprintf(stderr, "faultctl %s: out of memory\n", verb);
        return EX_ERR;
    }
    int ex = call_json(g, "PATCH", target, "Content-Type: application/json\r\n", s, strlen(s), out);
    free(s);
    return ex;
}

static int cmd_enable_disable(struct ctl *g, int argc, char **argv, int enable)
{
    const char *verb = enable ? "enable" : "disable";
    json_t *o;
    if (argc != 2)
        return verb_usage(verb, argc < 2 ? "name the rule" : "one rule at a time");
    int ex = patch(g, verb, argv[1], json_pack("{s:b}", "enabled", enable), &o);
    if (ex == EX_OK && !g->json)
        printf("rule '%s' %s; takes effect from the next request\n", argv[1],
               enable ? "enabled" : "disabled");
    json_decref(o);
    return ex;
}

static int cmd_enable(struct ctl *g, int argc, char **argv)
{
    return cmd_enable_disable(g, argc, argv, 1);
}

static int cmd_disable(struct ctl *g, int argc, char **argv)
{
    return cmd_enable_disable(g, argc, argv, 0);
}

static int cmd_set(struct ctl *g, int argc, char **argv)
{
    static const struct option opts[] = {{"percent", required_argument, NULL, 'p'},
                                         {"fault", required_argument, NULL, 'f'},
                                         {"delay", required_argument, NULL, 'd'},
                                         {"status", required_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *percent = NULL, *fault = NULL, *delay = NULL, *status = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "p:f:d:s:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'p':
            percent = optarg;
            break;
        case 'f':
            fault = optarg;
            break;
        case 'd':
            delay = optarg;
            break;
        case 's':
            status = optarg;
            break;
        default:
            return verb_usage("set", NULL);
        }
    }
    if (optind != argc - 1)
        return verb_usage("set", "name one rule");
    if (!percent && !delay && !status)
        return verb_usage("set", "give --percent P (0-100, or 'default' for the file's value), "
                                 "--delay DURATION or --status CODE");
    if (fault && (!*fault || strspn(fault, "abcdefghijklmnopqrstuvwxyz_") != strlen(fault)))
        return verb_usage("set", "--fault names a fault kind: delay, abort, reset, connection, ...");
    json_t *body = json_object(), *o;
    if (percent && strcmp(percent, "default") == 0) {
        json_object_set_new(body, "percent", json_null());
    } else if (percent) {
        uint32_t ppm;
        if (fl_values_parse_percent(percent, &ppm) < 0) {
            json_decref(body);
            return verb_usage("set", "--percent takes 0-100 with at most 4 decimals");
        }
        json_object_set_new(body, "percent", json_real(ppm / 10000.0));
    }
    if (delay) {
        uint64_t ms;
        if (strcmp(delay, "default") != 0 && fl_values_parse_duration(delay, &ms) < 0) {
            json_decref(body);
            return verb_usage("set", "--delay takes a duration such as 250ms or 2s, or 'default'");
        }
        json_object_set_new(body, "delay",
                            json_pack("{s:o}", "fixed",
                                      strcmp(delay, "default") ? json_string(delay) : json_null()));
    }
    if (status) {
        char *end;
        long code = strtol(status, &end, 10);
        if (strcmp(status, "default") != 0 && (*end || code < 200 || code > 599)) {
            json_decref(body);
            return verb_usage("set", "--status takes an HTTP status 200-599, or 'default'");
        }
        json_object_set_new(body, "abort",
                            json_pack("{s:o}", "status",
                                      strcmp(status, "default") ? json_integer(code) : json_null()));
    }
    if (fault)
        json_object_set_new(body, "fault", json_string(fault));
    const char *rule = argv[optind];
    int ex = patch(g, "set", rule, body, &o);
    if (ex == EX_OK && !g->json) {
        json_t *f = json_object_get(o, "fault");
        static const char *const kinds[] = {"delay", "abort", "reset"};
        printf("rule '%s':", rule);
        for (int k = 0; k < 3; k++) {
            char b[48];
            if (!json_object_get(f, kinds[k]))
                continue;
            fmt_fault(b, sizeof(b), f, kinds[k]);
            printf(" %s %s", kinds[k], b);
        }
        printf("; takes effect from the next request\n");
    }
    json_decref(o);
    return ex;
}

static void print_names(const char *what, json_t *arr, char sign)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) printf("  %c %s %s\n", sign, what, json_string_value(v));
}

static void print_diff(json_t *d)
{
    json_t *v, *x;
    const char *k;
    size_t i;
    if (ji(d, "changes") == 0) {
        printf("  no changes\n");
        return;
    }
    if ((v = json_object_get(d, "policy")))
        printf("  ~ policy name: %s -> %s\n", js(v, "from"), js(v, "to"));
    json_object_foreach(json_object_get(d, "settings"), k, v)
    {
        char from[32] = "none", to[32] = "none"; /* a seed that was or becomes unset */
        if (!json_is_null(json_object_get(v, "from")))
            snprintf(from, sizeof(from), "%lld", ji(v, "from"));
        if (!json_is_null(json_object_get(v, "to")))
            snprintf(to, sizeof(to), "%lld", ji(v, "to"));
        printf("  ~ %s: %s -> %s\n", k, from, to);
    }
    static const char *const named[][2] = {{"listeners", "listener"}, {"targets", "target"}};
    for (size_t n = 0; n < 2; n++) {
        json_t *l = json_object_get(d, named[n][0]);
        print_names(named[n][1], json_object_get(l, "added"), '+');
        print_names(named[n][1], json_object_get(l, "removed"), '-');
        print_names(named[n][1], json_object_get(l, "changed"), '~');
    }
    json_t *r = json_object_get(d, "rules");
    print_names("rule", json_object_get(r, "added"), '+');
    print_names("rule", json_object_get(r, "removed"), '-');
    json_array_foreach(json_object_get(r, "changed"), i, x)
    {
        size_t j;
        json_t *part;
        printf("  ~ rule %s:", js(x, "name"));
        json_array_foreach(json_object_get(x, "parts"), j, part)
        {
            const char *pn = json_string_value(part);
            char *a = json_dumps(json_object_get(json_object_get(x, "from"), pn),
                                 JSON_COMPACT | JSON_ENCODE_ANY);
            char *b = json_dumps(json_object_get(json_object_get(x, "to"), pn),
                                 JSON_COMPACT | JSON_ENCODE_ANY);
            printf("\n      %s: %s -> %s", pn, a ? a : "null", b ? b : "null");
            free(a);
            free(b);
        }
        printf("\n");
    }
    if (json_is_true(json_object_get(r, "reordered")))
        printf("  ~ rule order changed (the first matching rule decides)\n");
}

static int read_policy(const char *path, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "faultctl apply: cannot open %s: %s\n", path, strerror(errno));
        return EX_ERR;
    }
    char *buf = malloc(CTL_MAX_POLICY + 1);
    size_t n = buf ? fread(buf, 1, CTL_MAX_POLICY + 1, f) : 0;
    int bad = !buf || ferror(f) || n > CTL_MAX_POLICY;
    if (f != stdin)
        fclose(f);
    if (bad) {
        fprintf(stderr, "faultctl apply: cannot read %s%s\n", path,
                n > CTL_MAX_POLICY ? ": larger than 1 MiB" : "");
        free(buf);
        return EX_ERR;
    }
    *out = buf;
    *len = n;
    return EX_OK;
}

static int cmd_apply(struct ctl *g, int argc, char **argv)
{
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *file = NULL;
    int dry = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "f:nh", opts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            file = optarg;
            break;
        case 'n':
            dry = 1;
            break;
        default:
            return verb_usage("apply", NULL);
        }
    }
    if (!file || optind != argc)
        return verb_usage("apply", "give the policy file with -f FILE");
    char *yaml, hdr[PATH_MAX + 64];
    size_t len;
    json_t *o;
    int ex = read_policy(file, &yaml, &len);
    if (ex)
        return ex;
    /* The daemon names this file in its file:line:col errors. */
    snprintf(hdr, sizeof(hdr), "X-Faultline-File: %s\r\nContent-Type: application/yaml\r\n",
             strcmp(file, "-") == 0 ? "<stdin>" : file);
    ex = call_json(g, "PUT", dry ? "/v1/policy?dry_run=1" : "/v1/policy", hdr, yaml, len, &o);
    free(yaml);
    if (ex == EX_ERR)
        fprintf(stderr, "faultctl apply: %s: nothing applied; the running policy stays in force\n",
                file);
    if (ex == EX_OK && !g->json) {
        if (dry)
            printf("dry run: applying %s (policy '%s') would change:\n", file, js(o, "policy"));
        else
            printf("applied %s: policy '%s' is in force (generation %lld; the previous one was "
                   "%lld)\n",
                   file, js(o, "policy"), ji(o, "generation"), ji(o, "previous_generation"));
        print_diff(json_object_get(o, "diff"));
    }
    json_decref(o);
    return ex;
}

static int cmd_halt(struct ctl *g, int argc, char **argv)
{
    static const struct option opts[] = {{"reason", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *reason = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "r:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'r':
            reason = optarg;
            break;
        default:
            return verb_usage("halt", NULL);
        }
    }
    if (optind != argc)
        return verb_usage("halt", "unexpected argument (quote a reason: --reason \"TEXT\")");
    json_t *b = json_pack("{s:s}", "reason", reason ? reason : "faultctl halt"), *o;
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    int ex = call_json(g, "POST", "/v1/halt", "Content-Type: application/json\r\n", s,
                       s ? strlen(s) : 0, &o);
    free(s);
    if (ex == EX_OK && !g->json)
        printf("injection halted (%s); no fault is injected until 'faultctl resume'\n",
               js(o, "halt_reason"));
    json_decref(o);
    return ex;
}

static int cmd_resume(struct ctl *g, int argc, char **argv)
{
    json_t *o;
    int ex = no_args(argc, argv, "resume");
    if (ex || (ex = call_json(g, "DELETE", "/v1/halt", NULL, NULL, 0, &o)) != EX_OK)
        return ex;
    if (!g->json)
        printf("injection resumed (policy '%s')\n", js(o, "policy"));
    json_decref(o);
    return ex;
}

/* Event lines arrive in arbitrary pieces; print whole lines. */
struct lines {
    struct ctl *g;
    char buf[16384];
    size_t len;
};

static void print_event(struct ctl *g, const char *line, size_t len)
{
    if (g->json) {
        printf("%.*s\n", (int)len, line);
        fflush(stdout);
        return;
    }
    json_t *o = json_loadb(line, len, 0, NULL), *v;
    const char *k;
    if (!o) {
        printf("%.*s\n", (int)len, line);
        fflush(stdout);
        return;
    }
    const char *ts = js(o, "ts");
    printf("%s  %-8s", strlen(ts) > 11 ? ts + 11 : ts, js(o, "event"));
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "ts") == 0 || strcmp(k, "event") == 0)
            continue;
        if (json_is_string(v))
            printf(" %s=%s", k, json_string_value(v));
        else {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            printf(" %s=%s", k, s ? s : "?");
            free(s);
        }
    }
    printf("\n");
    fflush(stdout);
    json_decref(o);
}

static int on_event_bytes(const char *p, size_t len, void *arg)
{
    struct lines *l = arg;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n') {
            print_event(l->g, l->buf, l->len);
            l->len = 0;
        } else if (l->len < sizeof(l->buf)) {
            l->buf[l->len++] = p[i];
        }
    }
    return 0;
}

static int cmd_events(struct ctl *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"follow", no_argument, NULL, 'f'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int follow = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            follow = 1;
            break;
        default:
            return verb_usage("events", NULL);
        }
    }
    if (optind != argc)
        return verb_usage("events", "unexpected argument");
    struct lines *l = calloc(1, sizeof(*l));
    struct fl_cli_resp r;
    if (!l)
        return EX_ERR;
    l->g = g;
    /* Without -f the recent events; with -f a stream that ends when the
     * daemon stops or on Ctrl-C. */
    int ex = call(g, "GET", follow ? "/v1/events" : "/v1/events?follow=0", NULL, NULL, 0,
                  on_event_bytes, l, &r);
    if (ex == EX_OK && r.status != 200) {
        fprintf(stderr, "faultctl events: the daemon answered %d\n", r.status);
        ex = r.status == 404 ? EX_NOTFOUND : EX_ERR;
    }
    if (l->len)
        print_event(g, l->buf, l->len);
    free(l);
    return ex;
}

static int cmd_metrics(struct ctl *g, int argc, char **argv)
{
    struct fl_cli_resp r;
    int ex = no_args(argc, argv, "metrics");
    if (ex || (ex = call(g, "GET", "/metrics", NULL, NULL, 0, NULL, NULL, &r)) != EX_OK)
        return ex;
    if (r.status == 200)
        fwrite(r.body ? r.body : "", 1, r.len, stdout);
    else
        ex = check(&r, NULL);
    fl_cli_resp_free(&r);
    return ex;
}

static int cmd_run(struct ctl *g, int argc, char **argv)
{
    static const struct option opts[] = {{"junit", required_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *junit = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "j:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'j':
            junit = optarg;
            break;
        default:
            return verb_usage("run", NULL);
        }
    }
    if (optind != argc - 1)
        return verb_usage("run", "name one experiment file");
    fflush(stdout);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines show up as they happen in CI logs */
    return fl_experiment_run(argv[optind], g->admin, junit, g->json);
}

static const struct verb verbs[] = {
    {"status", "status", "policy in force, halt state, ttl, counters, listeners", cmd_status},
    {"rules", "rules", "the policy's rules with live state and counters", cmd_rules},
    {"enable", "enable RULE", "let RULE inject again, from the next request", cmd_enable},
    {"disable", "disable RULE", "stop RULE from injecting, from the next request", cmd_disable},
    {"set", "set RULE [--percent P] [--fault KIND] [--delay DURATION] [--status CODE]",
     "change how often RULE's faults fire (all its kinds, or the one named; P is 0-100), the "
     "delay's fixed time, or the abort's HTTP status; 'default' restores the file's value",
     cmd_set},
    {"apply", "apply -f FILE [--dry-run]",
     "make FILE the policy in force, atomically; --dry-run shows what would change. An invalid "
     "file changes nothing and every error is printed as file:line:col",
     cmd_apply},
    {"halt", "halt [--reason TEXT]",
     "stop all injection at once; latches until 'faultctl resume' (a HALT file beside the admin "
     "socket, or SIGUSR1, does the same)",
     cmd_halt},
    {"resume", "resume", "inject again after a halt", cmd_resume},
    {"events", "events [-f]", "recent fault lines and daemon events; -f follows them live",
     cmd_events},
    {"metrics", "metrics", "the Prometheus metrics", cmd_metrics},
    {"run", "run EXPERIMENT.yaml [--junit FILE]",
     "run a resilience experiment; exit 0 passed, 10 steady state failed before injection, 11 "
     "deviated under the fault, 12 halted, 13 rollback failed",
     cmd_run},
};

static const struct verb *find_verb(const char *name)
{
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (strcmp(verbs[i].name, name) == 0)
            return &verbs[i];
    return NULL;
}

static void usage_all(FILE *f)
{
    fprintf(f, "usage: faultctl [--admin PATH] [-o table|json] VERB [ARGS]\n\n");
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        fprintf(f, "  %s\n      %s\n", verbs[i].usage, verbs[i].help);
    fprintf(f, "\n--admin PATH  the daemon's admin socket (or FAULTLINE_ADMIN; default "
               "/run/faultline/admin.sock as root,\n              else "
               "$XDG_RUNTIME_DIR/faultline/admin.sock)\n"
               "-o FORMAT     table (default on a terminal) or json (default otherwise)\n"
               "'faultctl help VERB' explains a verb. Exit codes: 0 ok, 1 error, 2 usage, "
               "3 daemon unreachable, 4 not found.\n");
}

int main(int argc, char **argv)
{
    struct ctl g = {.json = !isatty(STDOUT_FILENO)};
    const char *admin = getenv("FAULTLINE_ADMIN");
    char **args = calloc((size_t)argc + 1, sizeof(*args));
    int n = 0;
    if (!args)
        return EX_ERR;

    /* Global options may come before or after the verb. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        int is_admin = 0, is_out = 0;
        if (strcmp(a, "--") == 0) {
            while (i < argc)
                args[n++] = argv[i++];
            break;
        }
        if (strcmp(a, "--admin") == 0 || strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            is_admin = a[2] == 'a';
            is_out = !is_admin;
            if (i + 1 >= argc) {
                fprintf(stderr, "faultctl: %s needs a value\n", a);
                free(args);
                return EX_USAGE;
            }
            val = argv[++i];
        } else if (strncmp(a, "--admin=", 8) == 0) {
            is_admin = 1;
            val = a + 8;
        } else if (strncmp(a, "--output=", 9) == 0 || (strncmp(a, "-o", 2) == 0 && a[2])) {
            is_out = 1;
            val = a[1] == 'o' ? a + 2 : a + 9;
        } else {
            args[n++] = argv[i];
            continue;
        }
        if (is_admin)
            admin = val;
        if (is_out) {
            if (strcmp(val, "json") == 0)
                g.json = 1;
            else if (strcmp(val, "table") == 0)
                g.json = 0;
            else {
                fprintf(stderr, "faultctl: -o takes table or json, not '%s'\n", val);
                free(args);
                return EX_USAGE;
            }
        }
    }
    int ex = EX_USAGE;
    if (admin && *admin) {
        snprintf(g.admin, sizeof(g.admin), "%s", admin);
    } else if (fl_paths_admin_socket(g.admin, sizeof(g.admin)) < 0) {
        fprintf(stderr, "faultctl: the default admin socket path is too long; use --admin PATH\n");
        goto out;
    }
    if (n == 0) {
        usage_all(stderr);
        goto out;
    }
    if (strcmp(args[0], "help") == 0 || strcmp(args[0], "-h") == 0 ||
        strcmp(args[0], "--help") == 0) {
        if (n > 1 && find_verb(args[1])) {
            const struct verb *v = find_verb(args[1]);
            printf("usage: faultctl [--admin PATH] [-o table|json] %s\n  %s\n", v->usage, v->help);
        } else {
            usage_all(stdout);
        }
        ex = EX_OK;
        goto out;
    }
    if (strcmp(args[0], "version") == 0 || strcmp(args[0], "--version") == 0) {
        printf("faultctl %s\n", FL_VERSION);
        ex = EX_OK;
        goto out;
    }
    const struct verb *v = find_verb(args[0]);
    if (!v) {
        fprintf(stderr, "faultctl: unknown verb '%s'\n", args[0]);
        usage_all(stderr);
        goto out;
    }
    for (int i = 1; i < n; i++) {
        if (strcmp(args[i], "-h") == 0 || strcmp(args[i], "--help") == 0) {
            printf("usage: faultctl [--admin PATH] [-o table|json] %s\n  %s\n", v->usage, v->help);
            ex = EX_OK;
            goto out;
        }
    }
    ex = v->fn(&g, n, args);
out:
    free(args);
    return ex;
}
