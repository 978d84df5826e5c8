#include "experiment.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#include "cli.h"
#include "values.h"

#define EXP_MAX_FILE (1u << 20)
#define EXP_MAX_PROBES 32
#define EXP_STATUS_EVERY_MS 250 /* how often the run looks for a halt */
#define EXP_ROLLBACK_TRIES 3
#define EXP_ADMIN_TIMEOUT_MS 30000

enum probe_kind { PROBE_HTTP, PROBE_CMD };

struct probe {
    char *name;
    enum probe_kind kind;
    /* http */
    char *url, *host, *port, *target, *method;
    int expect_status;
    uint64_t max_latency_ms; /* 0: no bound */
    /* command */
    char *cmd;
    int expect_exit;
    uint64_t timeout_ms;
    uint64_t interval_ms;
    /* results */
    long long next_due;
    unsigned checks, failures;
    char last_error[256];
    int before_ok, after_ok; /* -1 not run */
    char before_err[256], after_err[256];
};

struct experiment {
    const char *file;
    char *name;
    char *policy_yaml; /* text sent to the daemon */
    size_t policy_len;
    char *policy_name; /* file name policy errors are reported against */
    uint64_t duration_ms;
    uint32_t tolerance_ppm;
    struct probe probes[EXP_MAX_PROBES];
    int n_probes;
    int n_errors;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* ---- parsing ---- */

static void perr(struct experiment *x, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void perr(struct experiment *x, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%zu:%zu: ", x->file, n ? n->start_mark.line + 1 : 1,
            n ? n->start_mark.column + 1 : 1);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    x->n_errors++;
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static char *dup_scalar(struct experiment *x, const yaml_node_t *n, const char *key)
{
    const char *s = scalar(n);
    if (!s) {
        perr(x, n, "'%s' must be a string", key);
        return NULL;
    }
    return strdup(s);
}

static int get_duration(struct experiment *x, const yaml_node_t *n, const char *key, uint64_t *ms)
{
    const char *s = scalar(n);
    if (!s || fl_values_parse_duration(s, ms) < 0) {
        perr(x, n, "'%s' must be a duration such as 500ms, 10s, 2m", key);
        return -EINVAL;
    }
    return 0;
}

static int get_int(struct experiment *x, const yaml_node_t *n, const char *key, long lo, long hi,
                   long *out)
{
    const char *s = scalar(n);
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || v < lo || v > hi) {
        perr(x, n, "'%s' must be a whole number from %ld to %ld", key, lo, hi);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* Splits http://host[:port]/path. */
static int parse_url(struct probe *p)
{
    const char *u = p->url;
    if (strncmp(u, "http://", 7) != 0)
        return -EINVAL;
    u += 7;
    const char *slash = strchr(u, '/');
    size_t hl = slash ? (size_t)(slash - u) : strlen(u);
    char *hp = strndup(u, hl);
    if (!hp || !*hp) {
        free(hp);
        return -EINVAL;
    }
    char *colon = hp[0] == '[' ? strstr(hp, "]:") : strrchr(hp, ':');
    if (colon && hp[0] == '[')
        colon++;
    if (colon) {
        *colon = '\0';
        p->port = strdup(colon + 1);
    } else {
        p->port = strdup("80");
    }
    if (hp[0] == '[') {
        size_t n = strlen(hp);
        memmove(hp, hp + 1, n);
        if (n >= 2 && hp[n - 2] == ']')
            hp[n - 2] = '\0';
    }
    p->host = hp;
    p->target = strdup(slash ? slash : "/");
    return p->port && p->target ? 0 : -ENOMEM;
}

static void parse_http(struct experiment *x, yaml_document_t *d, yaml_node_t *n, struct probe *p)
{
    long v;
    p->kind = PROBE_HTTP;
    p->expect_status = 200;
    if (n->type != YAML_MAPPING_NODE) {
        perr(x, n, "'http' must be a mapping with url, expect_status, max_latency_ms");
        return;
    }
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(d, pr->key),
                    *val = yaml_document_get_node(d, pr->value);
        const char *key = scalar(k) ? scalar(k) : "";
        if (strcmp(key, "url") == 0) {
            p->url = dup_scalar(x, val, key);
            if (p->url && parse_url(p) < 0)
                perr(x, val, "'url' must look like http://HOST:PORT/PATH (https is not supported)");
        } else if (strcmp(key, "method") == 0) {
            p->method = dup_scalar(x, val, key);
        } else if (strcmp(key, "expect_status") == 0) {
            if (get_int(x, val, key, 100, 599, &v) == 0)
                p->expect_status = (int)v;
        } else if (strcmp(key, "max_latency_ms") == 0) {
            if (get_int(x, val, key, 1, 3600000, &v) == 0)
                p->max_latency_ms = (uint64_t)v;
        } else if (strcmp(key, "timeout") == 0) {
            (void)get_duration(x, val, key, &p->timeout_ms);
        } else {
            perr(x, k,
                 "unknown key '%s' in 'http' (known: url, method, expect_status, "
                 "max_latency_ms, timeout)",
                 key);
        }
    }
    if (!p->url)
        perr(x, n, "'http' needs a 'url'");
}

static void parse_command(struct experiment *x, yaml_document_t *d, yaml_node_t *n, struct probe *p)
{
    long v;
    p->kind = PROBE_CMD;
    if (n->type == YAML_SCALAR_NODE) {
        p->cmd = strdup(scalar(n));
        return;
    }
    if (n->type != YAML_MAPPING_NODE) {
        perr(x, n, "'command' must be a string or a mapping with cmd and expect_exit");
        return;
    }
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(d, pr->key),
                    *val = yaml_document_get_node(d, pr->value);
        const char *key = scalar(k) ? scalar(k) : "";
        if (strcmp(key, "cmd") == 0)
            p->cmd = dup_scalar(x, val, key);
        else if (strcmp(key, "expect_exit") == 0) {
            if (get_int(x, val, key, 0, 255, &v) == 0)
                p->expect_exit = (int)v;
        } else if (strcmp(key, "timeout") == 0)
            (void)get_duration(x, val, key, &p->timeout_ms);
        else
            perr(x, k, "unknown key '%s' in 'command' (known: cmd, expect_exit, timeout)", key);
    }
    if (!p->cmd)
        perr(x, n, "'command' needs a 'cmd'");
}

static void parse_probe(struct experiment *x, yaml_document_t *d, yaml_node_t *n)
{
    if (x->n_probes == EXP_MAX_PROBES) {
        perr(x, n, "at most %d probes", EXP_MAX_PROBES);
        return;
    }
    struct probe *p = &x->probes[x->n_probes++];
    int kinds = 0;
    p->interval_ms = 1000;
    p->timeout_ms = 5000;
    if (n->type != YAML_MAPPING_NODE) {
        perr(x, n, "a probe must be a mapping with name and http or command");
        return;
    }
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(d, pr->key),
                    *val = yaml_document_get_node(d, pr->value);
        const char *key = scalar(k) ? scalar(k) : "";
        if (strcmp(key, "name") == 0) {
            p->name = dup_scalar(x, val, key);
        } else if (strcmp(key, "http") == 0) {
            parse_http(x, d, val, p);
            kinds++;
        } else if (strcmp(key, "command") == 0) {
            parse_command(x, d, val, p);
            kinds++;
        } else if (strcmp(key, "interval") == 0) {
            (void)get_duration(x, val, key, &p->interval_ms);
        } else {
            perr(x, k, "unknown key '%s' in a probe (known: name, http, command, interval)", key);
        }
    }
    if (kinds != 1)
        perr(x, n, "a probe needs exactly one of 'http' or 'command'");
    if (p->interval_ms == 0)
        p->interval_ms = 1;
    if (!p->name) {
        char buf[32];
        snprintf(buf, sizeof(buf), "probe-%d", x->n_probes);
        p->name = strdup(buf);
    }
}

static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    char *buf = malloc(EXP_MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, EXP_MAX_FILE + 1, f) : 0;
    int e = ferror(f) ? -EIO : 0;
    fclose(f);
    if (!buf)
        return -ENOMEM;
    if (e == 0 && n > EXP_MAX_FILE)
        e = -EFBIG;
    if (e < 0) {
        free(buf);
        return e;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* An inline policy is sent as the experiment's own text for that mapping,
 * padded with the lines and columns before it, so the daemon's file:line:col
 * errors point into the experiment file. */
static void inline_policy(struct experiment *x, const char *text, yaml_node_t *n)
{
    size_t a = n->start_mark.index, b = n->end_mark.index;
    size_t pad = n->start_mark.line + n->start_mark.column;
    char *s = malloc(pad + (b - a) + 2);
    if (!s) {
        x->n_errors++;
        return;
    }
    memset(s, '\n', n->start_mark.line);
    memset(s + n->start_mark.line, ' ', n->start_mark.column);
    memcpy(s + pad, text + a, b - a);
    s[pad + (b - a)] = '\n';
    s[pad + (b - a) + 1] = '\0';
    x->policy_yaml = s;
    x->policy_len = pad + (b - a) + 1;
    x->policy_name = strdup(x->file);
}

static void policy_from_path(struct experiment *x, yaml_node_t *n)
{
    const char *rel = scalar(n);
    char path[PATH_MAX];
    const char *slash = strrchr(x->file, '/');
    if (rel[0] == '/' || !slash)
        snprintf(path, sizeof(path), "%s", rel);
    else
        snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - x->file), x->file, rel);
    int e = read_file(path, &x->policy_yaml, &x->policy_len);
    if (e < 0) {
        perr(x, n,
             "cannot read the policy %s: %s (a relative path is taken from the "
             "experiment file's directory)",
             path, strerror(-e));
        return;
    }
    x->policy_name = strdup(path);
}

static int parse_experiment(struct experiment *x, const char *text, size_t len)
{
    yaml_parser_t ps;
    yaml_document_t d;
    int have_duration = 0;

    yaml_parser_initialize(&ps);
    yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
    if (!yaml_parser_load(&ps, &d)) {
        fprintf(stderr, "%s:%zu:%zu: %s\n", x->file, ps.problem_mark.line + 1,
                ps.problem_mark.column + 1, ps.problem ? ps.problem : "YAML syntax error");
        yaml_parser_delete(&ps);
        return -EINVAL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&d);
    if (!root || root->type != YAML_MAPPING_NODE) {
        perr(x, root, "an experiment is a mapping with name, policy, duration, probes");
        goto out;
    }
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = yaml_document_get_node(&d, pr->key),
                    *val = yaml_document_get_node(&d, pr->value);
        const char *key = scalar(k) ? scalar(k) : "";
        if (strcmp(key, "name") == 0) {
            x->name = dup_scalar(x, val, key);
        } else if (strcmp(key, "policy") == 0) {
            if (val->type == YAML_MAPPING_NODE)
                inline_policy(x, text, val);
            else if (scalar(val) && *scalar(val))
                policy_from_path(x, val);
            else
                perr(x, val, "'policy' must be a path to a policy file or an inline policy");
        } else if (strcmp(key, "duration") == 0) {
            have_duration = get_duration(x, val, key, &x->duration_ms) == 0;
        } else if (strcmp(key, "tolerance") == 0) {
            char buf[32];
            const char *s = scalar(val);
            snprintf(buf, sizeof(buf), "%s", s ? s : "");
            size_t bl = strlen(buf);
            if (bl && buf[bl - 1] == '%')
                buf[bl - 1] = '\0';
            if (!s || fl_values_parse_percent(buf, &x->tolerance_ppm) < 0)
                perr(x, val, "'tolerance' must be a percent from 0 to 100, e.g. 5%%");
        } else if (strcmp(key, "probes") == 0) {
            if (val->type != YAML_SEQUENCE_NODE) {
                perr(x, val, "'probes' must be a list");
                continue;
            }
            for (yaml_node_item_t *it = val->data.sequence.items.start;
                 it < val->data.sequence.items.top; it++)
                parse_probe(x, &d, yaml_document_get_node(&d, *it));
        } else {
            perr(x, k, "unknown key '%s' (known: name, policy, duration, tolerance, probes)", key);
        }
    }
    if (!x->policy_yaml && !x->n_errors)
        perr(x, root, "the experiment needs a 'policy'");
    if (!have_duration && !x->n_errors)
        perr(x, root, "the experiment needs a 'duration', e.g. 30s");
    if (x->n_probes == 0 && !x->n_errors)
        perr(x, root, "the experiment needs at least one probe under 'probes'");
    if (!x->name) {
        const char *b = strrchr(x->file, '/');
        x->name = strdup(b ? b + 1 : x->file);
    }
out:
    yaml_document_delete(&d);
    yaml_parser_delete(&ps);
    return x->n_errors ? -EINVAL : 0;
}

static void experiment_free(struct experiment *x)
{
    for (int i = 0; i < x->n_probes; i++) {
        struct probe *p = &x->probes[i];
        free(p->name);
        free(p->url);
        free(p->host);
        free(p->port);
        free(p->target);
        free(p->method);
        free(p->cmd);
    }
    free(x->name);
    free(x->policy_yaml);
    free(x->policy_name);
}

/* ---- probes ---- */

/* Runs p once. Returns 1 if it passed, 0 if not (err says why). */
static int probe_http(struct probe *p, char *err, size_t errlen)
{
    struct fl_cli_resp r;
    char host[300];
    long long t0 = fl_cli_now_ms();
    int fd = fl_cli_connect_tcp(p->host, p->port, (int)p->timeout_ms);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot connect: %s", p->url, strerror(-fd));
        return 0;
    }
    snprintf(host, sizeof(host), strchr(p->host, ':') ? "[%s]:%s" : "%s:%s", p->host, p->port);
    int e = fl_cli_http(fd, p->method ? p->method : "GET", p->target, host, NULL, NULL, 0,
                        (int)p->timeout_ms, NULL, NULL, &r);
    long long ms = fl_cli_now_ms() - t0;
    if (e < 0) {
        snprintf(err, errlen, "%s: %s after %lld ms", p->url,
                 e == -ETIMEDOUT ? "no answer" : strerror(-e), ms);
        return 0;
    }
    fl_cli_resp_free(&r);
    if (r.status != p->expect_status) {
        snprintf(err, errlen, "%s: status %d, expected %d (%lld ms)", p->url, r.status,
                 p->expect_status, ms);
        return 0;
    }
    if (p->max_latency_ms && (uint64_t)ms > p->max_latency_ms) {
        snprintf(err, errlen, "%s: %lld ms, above max_latency_ms %llu", p->url, ms,
                 (unsigned long long)p->max_latency_ms);
        return 0;
    }
    return 1;
}

static int probe_cmd(struct probe *p, char *err, size_t errlen)
{
    long long deadline = fl_cli_now_ms() + (long long)p->timeout_ms;
    pid_t pid = fork();
    int st;
    if (pid < 0) {
        snprintf(err, errlen, "cannot fork: %s", strerror(errno));
        return 0;
    }
    if (pid == 0) {
        /* Own process group: a timeout kills the whole pipeline, and the
         * terminal's Ctrl-C reaches faultctl, which restores the policy first. */
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (!freopen("/dev/null", "r", stdin) || !freopen("/dev/null", "w", stdout))
            _exit(127);
        execl("/bin/sh", "sh", "-c", p->cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            snprintf(err, errlen, "waitpid: %s", strerror(errno));
            return 0;
        }
        if (fl_cli_now_ms() >= deadline || stop_signal) {
            kill(-pid, SIGKILL);
            waitpid(pid, &st, 0);
            snprintf(err, errlen, "'%s' %s", p->cmd, stop_signal ? "interrupted" : "timed out");
            return 0;
        }
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (code != p->expect_exit) {
        snprintf(err, errlen, "'%s' exited %d, expected %d", p->cmd, code, p->expect_exit);
        return 0;
    }
    return 1;
}

static int probe_run(struct probe *p, char *err, size_t errlen)
{
    err[0] = '\0';
    return p->kind == PROBE_HTTP ? probe_http(p, err, errlen) : probe_cmd(p, err, errlen);
}

/* Every probe once. Returns 1 when all passed. */
static int steady_state(struct experiment *x, int after, int json)
{
    int ok = 1;
    for (int i = 0; i < x->n_probes; i++) {
        struct probe *p = &x->probes[i];
        char *err = after ? p->after_err : p->before_err;
        int pass = probe_run(p, err, sizeof(p->before_err));
        if (after)
            p->after_ok = pass;
        else
            p->before_ok = pass;
        if (!pass) {
            ok = 0;
            if (!json)
                printf("  probe %s failed: %s\n", p->name, err);
        }
    }
    return ok;
}

/* ---- admin calls ---- */

struct admin {
    const char *path;
};

/* Returns 0 with r filled (any status), or a negative errno when unreachable. */
static int admin_call(struct admin *a, const char *method, const char *target, const char *hdrs,
                      const char *body, size_t len, struct fl_cli_resp *r)
{
    int fd = fl_cli_connect_unix(a->path);
    if (fd < 0)
        return fd;
    return fl_cli_http(fd, method, target, "faultline", hdrs, body, len, EXP_ADMIN_TIMEOUT_MS, NULL,
                       NULL, r);
}

static json_t *admin_json(struct admin *a, const char *method, const char *target, const char *hdrs,
                          const char *body, size_t len, int *status)
{
    struct fl_cli_resp r;
    *status = 0;
    if (admin_call(a, method, target, hdrs, body, len, &r) < 0)
        return NULL;
    *status = r.status;
    json_t *o = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
    fl_cli_resp_free(&r);
    return o;
}

static void print_errors(json_t *o)
{
    json_t *errs = json_object_get(o, "errors"), *v;
    size_t i;
    if (json_array_size(errs)) {
        json_array_foreach(errs, i, v) fprintf(stderr, "%s\n", json_string_value(v));
    } else if (json_string_value(json_object_get(o, "error"))) {
        fprintf(stderr, "%s\n", json_string_value(json_object_get(o, "error")));
    }
}

/* ---- report ---- */

static void xml_esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\n' || *s == '\t')
                fputc(*s, f);
        }
    }
}

struct outcome {
    int code;
    int injected;    /* the policy was applied */
    int rolled_back; /* restore succeeded (or nothing to restore) */
    char rollback_err[256];
    char halted_reason[256];
    int halted;
    int interrupted;
    double seconds;
};

static void junit_case(FILE *f, const char *suite, const char *name, int state, const char *msg)
{
    /* state: 1 passed, 0 failed, -1 skipped */
    fprintf(f, "    <testcase classname=\"");
    xml_esc(f, suite);
    fprintf(f, "\" name=\"");
    xml_esc(f, name);
    if (state == 1) {
        fprintf(f, "\"/>\n");
        return;
    }
    fprintf(f, "\">\n      <%s message=\"", state == 0 ? "failure" : "skipped");
    xml_esc(f, msg);
    fprintf(f, "\"/>\n    </testcase>\n");
}

static int write_junit(const char *path, struct experiment *x, struct outcome *o)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    int tests = 0, failures = 0, skipped = 0;
    char name[512], msg[512];
    /* Count first: JUnit puts the totals on the suite element. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite "
                       "name=\"");
            xml_esc(f, x->name);
            fprintf(f, "\" tests=\"%d\" failures=\"%d\" skipped=\"%d\" time=\"%.3f\">\n", tests,
                    failures, skipped, o->seconds);
        }
#define CASE(nm, st, m)                                                                            \
    do {                                                                                           \
        int s_ = (st);                                                                             \
        if (pass == 0) {                                                                           \
            tests++;                                                                               \
            failures += s_ == 0;                                                                   \
            skipped += s_ < 0;                                                                     \
        } else {                                                                                   \
            junit_case(f, x->name, nm, s_, m);                                                     \
        }                                                                                          \
    } while (0)
        for (int i = 0; i < x->n_probes; i++) {
            struct probe *p = &x->probes[i];
            snprintf(name, sizeof(name), "steady state before: %s", p->name);
            CASE(name, p->before_ok, p->before_ok < 0 ? "not run" : p->before_err);
        }
        for (int i = 0; i < x->n_probes; i++) {
            struct probe *p = &x->probes[i];
            snprintf(name, sizeof(name), "under fault: %s", p->name);
            int st = !o->injected ? -1
                     : (uint64_t)p->failures * 1000000u >
                             (uint64_t)x->tolerance_ppm * (p->checks ? p->checks : 1)
                         ? 0
                         : 1;
            snprintf(msg, sizeof(msg), "%u of %u checks failed, tolerance %.4g%%; last: %s",
                     p->failures, p->checks, x->tolerance_ppm / 10000.0, p->last_error);
            CASE(name, st, o->injected ? msg : "policy not applied");
        }
        CASE("injection not halted", !o->injected ? -1 : !o->halted,
             o->injected ? o->halted_reason : "policy not applied");
        CASE("previous policy restored", !o->injected ? -1 : o->rolled_back,
             o->injected ? o->rollback_err : "policy not applied");
        for (int i = 0; i < x->n_probes; i++) {
            struct probe *p = &x->probes[i];
            snprintf(name, sizeof(name), "steady state after: %s", p->name);
            CASE(name, p->after_ok, p->after_ok < 0 ? "not run" : p->after_err);
        }
#undef CASE
    }
    fprintf(f, "  </testsuite>\n</testsuites>\n");
    int e = ferror(f) ? -EIO : 0;
    if (fclose(f) != 0 && e == 0)
        e = -errno;
    return e;
}

/* ---- the run ---- */

static int probe_deviates(const struct experiment *x, const struct probe *p)
{
    return (uint64_t)p->failures * 1000000u > (uint64_t)x->tolerance_ppm * p->checks;
}

/* Watches the daemon: returns 1 halted, 0 fine, -1 unreachable. */
static int check_halted(struct admin *a, struct outcome *o)
{
    int st;
    json_t *s = admin_json(a, "GET", "/v1/status", NULL, NULL, 0, &st);
    if (!s)
        return -1;
    int h = json_is_true(json_object_get(s, "halted"));
    if (h)
        snprintf(o->halted_reason, sizeof(o->halted_reason), "halted: %s",
                 json_string_value(json_object_get(s, "halt_reason"))
                     ? json_string_value(json_object_get(s, "halt_reason"))
                     : "");
    json_decref(s);
    return h;
}

static void run_probes(struct experiment *x, struct admin *a, struct outcome *o, int json)
{
    long long start = fl_cli_now_ms(), end = start + (long long)x->duration_ms;
    long long next_status = start;
    for (int i = 0; i < x->n_probes; i++)
        x->probes[i].next_due = start;
    while (!stop_signal) {
        long long now = fl_cli_now_ms();
        if (now >= end)
            break;
        if (now >= next_status) {
            int h = check_halted(a, o);
            if (h != 0) {
                if (h < 0)
                    snprintf(o->halted_reason, sizeof(o->halted_reason),
                             "the daemon stopped answering on %s", a->path);
                o->halted = h > 0;
                if (!json)
                    printf("  %s; stopping the run\n", o->halted_reason);
                return;
            }
            next_status = now + EXP_STATUS_EVERY_MS;
        }
        long long wake = next_status < end ? next_status : end;
        for (int i = 0; i < x->n_probes && !stop_signal; i++) {
            struct probe *p = &x->probes[i];
            if (fl_cli_now_ms() >= p->next_due) {
                char err[256];
                int pass = probe_run(p, err, sizeof(err));
                if (stop_signal)
                    break; /* a check cut short by Ctrl-C says nothing about the system */
                p->checks++;
                if (!pass) {
                    p->failures++;
                    snprintf(p->last_error, sizeof(p->last_error), "%s", err);
                }
                p->next_due += (long long)p->interval_ms;
                if (p->next_due < fl_cli_now_ms())
                    p->next_due = fl_cli_now_ms(); /* a slow probe does not pile up */
            }
            if (p->next_due < wake)
                wake = p->next_due;
        }
        long long left = wake - fl_cli_now_ms();
        if (left > 0)
            nanosleep(&(struct timespec){left / 1000, (left % 1000) * 1000000}, NULL);
    }
}

static int rollback(struct admin *a, unsigned long long gen, struct outcome *o)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"generation\":%llu}", gen), ret = -1;
    sigset_t block, old;
    /* A second Ctrl-C must not cut the rollback short: hold signals until done. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    for (int t = 0; t < EXP_ROLLBACK_TRIES && ret < 0; t++) {
        int st;
        json_t *r = admin_json(a, "POST", "/v1/policy/rollback", NULL, body, (size_t)n, &st);
        if (r && st == 200) {
            json_decref(r);
            ret = 0;
            break;
        }
        const char *msg = r ? json_string_value(json_object_get(r, "error")) : NULL;
        snprintf(o->rollback_err, sizeof(o->rollback_err), "%s",
                 msg  ? msg
                 : st ? "unexpected answer"
                      : "the daemon does not answer");
        json_decref(r);
        if (st == 404)
            break; /* the snapshot is gone: retrying cannot help */
        nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return ret;
}

int fl_experiment_run(const char *file, const char *admin_path, const char *junit, int json)
{
    struct experiment x = {.file = file};
    struct admin a = {.path = admin_path};
    struct outcome o = {.code = FL_EXP_PASSED, .rolled_back = 1};
    char *text = NULL, hdr[PATH_MAX + 64];
    size_t len;
    int st, e;
    json_t *r = NULL;
    unsigned long long gen0 = 0;
    long long t0 = fl_cli_now_ms();
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;

    for (int i = 0; i < EXP_MAX_PROBES; i++)
        x.probes[i].before_ok = x.probes[i].after_ok = -1;
    if ((e = read_file(file, &text, &len)) < 0) {
        fprintf(stderr, "faultctl run: cannot read %s: %s\n", file, strerror(-e));
        return FL_EXP_ERROR;
    }
    if (parse_experiment(&x, text, len) < 0) {
        fprintf(stderr, "faultctl run: %s is not a valid experiment\n", file);
        o.code = FL_EXP_ERROR;
        goto out_free;
    }
    /* Ctrl-C and SIGTERM must not skip the rollback: no SA_RESTART, so
     * blocking calls return and the loop notices. */
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    r = admin_json(&a, "GET", "/v1/status", NULL, NULL, 0, &st);
    if (!r) {
        fprintf(stderr,
                "faultctl run: no faultline daemon answers on %s; start one with "
                "'faultline run -f POLICY.yaml' or give --admin PATH\n",
                a.path);
        o.code = FL_EXP_UNREACHABLE;
        goto out;
    }
    gen0 = (unsigned long long)json_integer_value(json_object_get(r, "generation"));
    if (json_is_true(json_object_get(r, "halted"))) {
        snprintf(o.halted_reason, sizeof(o.halted_reason), "halted before the run: %s",
                 json_string_value(json_object_get(r, "halt_reason")));
        fprintf(stderr, "faultctl run: injection is halted (%s); 'faultctl resume' first\n",
                json_string_value(json_object_get(r, "halt_reason")));
        o.halted = 1;
        o.code = FL_EXP_HALTED;
        goto out;
    }
    json_decref(r);

    /* Validate the policy before touching anything. */
    snprintf(hdr, sizeof(hdr), "X-Faultline-File: %s\r\n", x.policy_name);
    r = admin_json(&a, "PUT", "/v1/policy?dry_run=1", hdr, x.policy_yaml, x.policy_len, &st);
    if (st != 200) {
        print_errors(r);
        fprintf(stderr, "faultctl run: the experiment's policy is not valid; nothing injected\n");
        o.code = st ? FL_EXP_ERROR : FL_EXP_UNREACHABLE;
        goto out;
    }
    json_decref(r);
    r = NULL;

    if (!json)
        printf("experiment '%s': checking steady state\n", x.name);
    if (!steady_state(&x, 0, json)) {
        if (!json)
            printf("experiment '%s': steady state does not hold before injection; nothing "
                   "injected\n",
                   x.name);
        o.code = FL_EXP_STEADY_BEFORE;
        goto out;
    }
    if (stop_signal)
        goto out;

    r = admin_json(&a, "PUT", "/v1/policy", hdr, x.policy_yaml, x.policy_len, &st);
    if (st != 200) {
        print_errors(r);
        fprintf(stderr, "faultctl run: cannot apply the experiment's policy; nothing injected\n");
        o.code = st ? FL_EXP_ERROR : FL_EXP_UNREACHABLE;
        goto out;
    }
    o.injected = 1;
    o.rolled_back = 0;
    if (!json)
        printf("experiment '%s': policy '%s' applied for %llu ms (previous policy: generation "
               "%llu)\n",
               x.name, json_string_value(json_object_get(r, "policy")),
               (unsigned long long)x.duration_ms, gen0);
    json_decref(r);
    r = NULL;

    run_probes(&x, &a, &o, json);

    if (rollback(&a, gen0, &o) == 0) {
        o.rolled_back = 1;
        if (!json)
            printf("experiment '%s': previous policy restored\n", x.name);
    } else {
        fprintf(stderr,
                "faultctl run: ROLLBACK FAILED: %s; restore the policy by hand "
                "(faultctl apply -f FILE) or halt injection (faultctl halt)\n",
                o.rollback_err);
    }
    for (int i = 0; i < x.n_probes; i++) {
        struct probe *p = &x.probes[i];
        if (!json)
            printf("  probe %s: %u checks, %u failed (tolerance %.4g%%)%s%s\n", p->name, p->checks,
                   p->failures, x.tolerance_ppm / 10000.0, p->failures ? "; last: " : "",
                   p->failures ? p->last_error : "");
        if (probe_deviates(&x, p) && o.code == FL_EXP_PASSED)
            o.code = FL_EXP_DEVIATED;
    }
    if (o.rolled_back && !o.halted && !stop_signal && !o.halted_reason[0]) {
        if (!json)
            printf("experiment '%s': checking steady state after the fault\n", x.name);
        if (!steady_state(&x, 1, json) && o.code == FL_EXP_PASSED)
            o.code = FL_EXP_DEVIATED;
    }
    if (o.halted)
        o.code = FL_EXP_HALTED;
out:
    json_decref(r);
    /* An interrupted run has no verdict; only a failed rollback outranks it. */
    if (stop_signal && o.code != FL_EXP_UNREACHABLE) {
        o.interrupted = 1;
        o.code = FL_EXP_ERROR;
        fprintf(stderr, "faultctl run: interrupted by signal %d%s\n", (int)stop_signal,
                o.injected && o.rolled_back ? "; the previous policy was restored" : "");
    }
    if (!o.rolled_back)
        o.code = FL_EXP_ROLLBACK;
    o.seconds = (double)(fl_cli_now_ms() - t0) / 1000.0;
    {
        static const char *const verdict[] = {[0] = "PASSED",
                                              [1] = "ERROR",
                                              [3] = "ERROR",
                                              [10] = "FAILED: steady state before injection",
                                              [11] = "FAILED: deviated under the fault",
                                              [12] = "HALTED",
                                              [13] = "ROLLBACK FAILED"};
        const char *v = o.code >= 0 && o.code <= 13 && verdict[o.code] ? verdict[o.code] : "";
        if (json) {
            json_t *pa = json_array();
            for (int i = 0; i < x.n_probes; i++) {
                struct probe *p = &x.probes[i];
                json_array_append_new(pa, json_pack("{s:s,s:i,s:i,s:i,s:i,s:s}", "name", p->name,
                                                    "before", p->before_ok, "checks", p->checks,
                                                    "failures", p->failures, "after", p->after_ok,
                                                    "last_error", p->last_error));
            }
            json_t *sum =
                json_pack("{s:s,s:i,s:s,s:b,s:b,s:b,s:f,s:o}", "experiment", x.name, "exit", o.code,
                          "verdict", v, "injected", o.injected, "rolled_back", o.rolled_back,
                          "halted", o.halted, "seconds", o.seconds, "probes", pa);
            char *s = json_dumps(sum, JSON_COMPACT);
            if (s)
                printf("%s\n", s);
            free(s);
            json_decref(sum);
        } else {
            printf("experiment '%s': %s (exit %d, %.1f s)\n", x.name, v, o.code, o.seconds);
        }
    }
    if (junit && (e = write_junit(junit, &x, &o)) < 0) {
        fprintf(stderr, "faultctl run: cannot write the JUnit report %s: %s\n", junit,
                strerror(-e));
        if (o.code == FL_EXP_PASSED)
            o.code = FL_EXP_ERROR;
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
out_free:
    experiment_free(&x);
    free(text);
    return o.code;
}
