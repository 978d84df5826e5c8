/* policy: YAML -> immutable snapshot, with every error at file:line:col.
 *
 * The document is loaded whole with libyaml's document API (policies are
 * small), then walked against the schema of docs/reference.md, "Policy". The walk never stops
 * at the first error: it records each one and goes on, so a user fixes a file
 * in one round.
 */
#include "policy.h"

#include "file.h"

#include "rule_index.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MAX_ERRORS 100

#define SEQ_ITEMS(v) ((size_t)((v)->data.sequence.items.top - (v)->data.sequence.items.start))

struct ctx {
    const char *file;
    /* A FaultPolicy resource (metadata.namespace given): no listeners, its
     * selectors' namespace is its own. */
    int resource;
    const char *res_ns;
    int no_positions; /* from the API: errors name the path in the spec, not line:col */
    yaml_document_t *doc;
    struct fl_policy_errors *errs;
    size_t n_errors; /* counted even past MAX_ERRORS or when a message cannot be stored */
};

static void add_error(struct fl_policy_errors *errs, const char *msg)
{
    if (errs->n >= MAX_ERRORS)
        return;
    char **m = realloc(errs->msgs, (errs->n + 1) * sizeof(*m));
    if (!m)
        return;
    errs->msgs = m;
    errs->msgs[errs->n] = strdup(msg);
    if (errs->msgs[errs->n])
        errs->n++;
}

static void verr_pos(struct ctx *x, size_t line, size_t col, const char *fmt, va_list ap)
{
    char msg[1024];
    int k = x->no_positions ? snprintf(msg, sizeof(msg), "%s: ", x->file)
                            : snprintf(msg, sizeof(msg), "%s:%zu:%zu: ", x->file, line, col);
    if (k < 0 || (size_t)k >= sizeof(msg))
        k = 0;
    vsnprintf(msg + k, sizeof(msg) - (size_t)k, fmt, ap);
    x->n_errors++;
    add_error(x->errs, msg);
}

/* Records an error at 1-based line:col. */
static void err_pos(struct ctx *x, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_pos(struct ctx *x, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr_pos(x, (size_t)line, (size_t)col, fmt, ap);
    va_end(ap);
}

/* Records an error at node n (libyaml marks are 0-based). */
static void err_at(struct ctx *x, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err_at(struct ctx *x, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr_pos(x, n ? n->start_mark.line + 1 : 1, n ? n->start_mark.column + 1 : 1, fmt, ap);
    va_end(ap);
}

/* The line and column of a "file:line:col: text" message (file being name). */
static void msg_pos(const char *msg, size_t name_len, unsigned long *line, unsigned long *col)
{
    char *end;
    *line = strtoul(msg + name_len + 1, &end, 10);
    *col = *end == ':' ? strtoul(end + 1, NULL, 10) : 0;
}

/* Errors are found by the walk and then by checks across the whole policy
 * (names, references): they are reported in file order, ties in the order
 * found. */
static void sort_errors(struct fl_policy_errors *errs, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 1; i < errs->n; i++) {
        char *m = errs->msgs[i];
        unsigned long l, c, pl, pc;
        msg_pos(m, nl, &l, &c);
        size_t j = i;
        for (; j > 0; j--) {
            msg_pos(errs->msgs[j - 1], nl, &pl, &pc);
            if (pl < l || (pl == l && pc <= c))
                break;
            errs->msgs[j] = errs->msgs[j - 1];
        }
        errs->msgs[j] = m;
    }
}

void fl_policy_errors_free(struct fl_policy_errors *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->n = 0;
}

/* ---- schema walk ---- */

static yaml_node_t *node(struct ctx *x, int id)
{
    return yaml_document_get_node(x->doc, id);
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static const char *type_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

static int expect_map(struct ctx *x, yaml_node_t *n, const char *path)
{
    if (n->type == YAML_MAPPING_NODE)
        return 1;
    err_at(x, n, "%s: expected a mapping (key: value), got %s", path, type_name(n));
    return 0;
}

static int expect_seq(struct ctx *x, yaml_node_t *n, const char *path)
{
    if (n->type == YAML_SEQUENCE_NODE)
        return 1;
    err_at(x, n, "%s: expected a list, got %s", path, type_name(n));
    return 0;
}

static const char *expect_str(struct ctx *x, yaml_node_t *n, const char *path)
{
    const char *s = scalar(n);
    if (!s) {
        err_at(x, n, "%s: expected a single value (a number or a string), got %s", path, type_name(n));
        return NULL;
    }
    /* A "\0" escape would make the C string shorter than the YAML value
     * (and a body's length disagree with its bytes): refuse it. */
    if (strlen(s) != n->data.scalar.length) {
        err_at(x, n, "%s: the value contains a NUL character (\\0); remove it", path);
        return NULL;
    }
    return s;
}

/* Iterates a mapping's pairs, reporting unknown and duplicate keys.
 * keys is a NULL-terminated list; fn is called with the index of the key. */
typedef void (*pair_fn)(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                        const char *path);

static void walk_map(struct ctx *x, yaml_node_t *m, const char *path, const char *const *keys,
                     pair_fn fn, void *obj)
{
    unsigned seen = 0;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(x, p->key), *v = node(x, p->value);
        const char *ks = scalar(k);
        int i;
        if (!ks) {
            err_at(x, k, "%s: keys must be plain strings", path);
            continue;
        }
        for (i = 0; keys[i]; i++)
            if (strcmp(keys[i], ks) == 0)
                break;
        if (!keys[i]) {
            char allowed[512];
            size_t o = 0;
            for (int j = 0; keys[j] && o < sizeof(allowed) - 64; j++)
                o += (size_t)snprintf(allowed + o, sizeof(allowed) - o, "%s%s", j ? ", " : "",
                                      keys[j]);
            err_at(x, k, "%s: unknown key '%s'; expected one of: %s", path, ks, allowed);
            continue;
        }
        if (seen & (1u << i)) {
            err_at(x, k, "%s: key '%s' appears twice", path, ks);
            continue;
        }
        seen |= 1u << i;
        char sub[256];
        snprintf(sub, sizeof(sub), "%s.%s", path, ks);
        fn(x, obj, i, k, v, sub);
    }
}

/* The key node named key in mapping m, or NULL: for errors about a key
 * rather than its value. */
static yaml_node_t *map_key(struct ctx *x, yaml_node_t *m, const char *key)
{
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(x, p->key);
        const char *ks = scalar(k);
        if (ks && strcmp(ks, key) == 0)
            return k;
    }
    return NULL;
}

static int has_key(struct ctx *x, yaml_node_t *m, const char *key)
{
    return map_key(x, m, key) != NULL;
}

/* Returns the value of key in mapping m, or NULL. */
static yaml_node_t *map_get(struct ctx *x, yaml_node_t *m, const char *key)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *ks = scalar(node(x, p->key));
        if (ks && strcmp(ks, key) == 0)
            return node(x, p->value);
    }
    return NULL;
}

static int require_keys(struct ctx *x, yaml_node_t *m, const char *path, const char *const *req)
{
    int ok = 1;
    for (int i = 0; req[i]; i++) {
        if (!has_key(x, m, req[i])) {
            err_at(x, m, "%s: missing required key '%s'", path, req[i]);
            ok = 0;
        }
    }
    return ok;
}

/* Names show up in headers, metrics labels and JSON: keep them to a safe set. */
static int valid_name(const char *s)
{
    if (!*s || strlen(s) > 63)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
            return 0;
    return 1;
}

static char *name_of(struct ctx *x, yaml_node_t *v, const char *path)
{
    const char *s = expect_str(x, v, path);
    if (!s)
        return NULL;
    if (!valid_name(s)) {
        err_at(x, v, "%s: '%s' is not a valid name; use 1-63 letters, digits, '-', '_' or '.'",
               path, s);
        return NULL;
    }
    return strdup(s);
}

static int get_duration(struct ctx *x, yaml_node_t *v, const char *path, uint64_t *ms)
{
    const char *s = expect_str(x, v, path);
    if (!s)
        return -1;
    if (fl_values_parse_duration(s, ms) < 0) {
        err_at(x, v, "%s: \"%s\" is not a duration; use a number with ms, s, m or h (e.g. 250ms)",
               path, s);
        return -1;
    }
    return 0;
}

static int get_percent(struct ctx *x, yaml_node_t *v, const char *path, uint32_t *ppm)
{
    const char *s = expect_str(x, v, path);
    if (!s)
        return -1;
    if (fl_values_parse_percent(s, ppm) < 0) {
        err_at(x, v, "%s: \"%s\" is not a percentage; use a number from 0 to 100 with at most 4 "
                     "decimals (e.g. 12.5)",
               path, s);
        return -1;
    }
    return 0;
}

static int get_uint(struct ctx *x, yaml_node_t *v, const char *path, uint64_t max, uint64_t *out)
{
    const char *s = expect_str(x, v, path);
    char *end;
    if (!s)
        return -1;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (!isdigit((unsigned char)s[0]) || *end || errno || n > max) {
        err_at(x, v, "%s: \"%s\" is not a whole number from 0 to %llu", path, s,
               (unsigned long long)max);
        return -1;
    }
    *out = n;
    return 0;
}

static int safe_header_text(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n' || *s == 0)
            return 0;
    return 1;
}

static int header_name_ok(const char *s)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr(tchar, *s))
            return 0;
    return 1;
}

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

/* string or list of strings */
static char **str_list(struct ctx *x, yaml_node_t *v, const char *path, size_t *n)
{
    char **out;
    *n = 0;
    if (v->type == YAML_SCALAR_NODE) {
        const char *s = expect_str(x, v, path);
        if (!s)
            return NULL;
        out = calloc(1, sizeof(*out));
        if (out && (out[0] = strdup(s)))
            *n = 1;
        return out;
    }
    if (v->type != YAML_SEQUENCE_NODE) {
        err_at(x, v, "%s: expected a string or a list of strings, got %s", path, type_name(v));
        return NULL;
    }
    size_t cnt = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    out = calloc(cnt ? cnt : 1, sizeof(*out));
    if (!out)
        return NULL;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *it = node(x, v->data.sequence.items.start[i]);
        char sub[256];
        snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
        const char *s = expect_str(x, it, sub);
        if (s && (out[*n] = strdup(s)))
            (*n)++;
    }
    if (cnt == 0)
        err_at(x, v, "%s: the list is empty; give at least one entry", path);
    return out;
}

/* --- str match {exact|prefix|regex} --- */

#define REGEX_MAX_LEN 1024
#define REGEX_MAX_COST 20000
#define REGEX_MAX_DEPTH 32

/* An upper bound on the size of the tree glibc's regcomp builds for an ERE:
 * it copies an atom once per repetition of a bound ({n,m}: max(n,m) + 1) and
 * twice for '+', and the copies of a nested repetition multiply. Without a
 * bound, "u++++..." or "((a{99}){99}){99}" takes gigabytes and seconds to
 * compile (found by the policy fuzzer). Returns the cost, saturated. */
static uint64_t regex_cost(const char *re)
{
    uint64_t sum[REGEX_MAX_DEPTH + 1] = {0}, last = 0;
    int depth = 0;
    for (const char *p = re; *p; p++) {
        uint64_t mult = 1;
        switch (*p) {
        case '\\':
            if (p[1])
                p++;
            last = 1;
            sum[depth] += 1;
            continue;
        case '[':
            /* a bracket expression: one atom ([]...] and [^]...] start with a ']') */
            p++;
            if (*p == '^')
                p++;
            if (*p == ']')
                p++;
            while (*p && *p != ']')
                p++;
            if (!*p)
                return UINT64_MAX; /* regcomp refuses it anyway */
            last = 1;
            sum[depth] += 1;
            continue;
        case '(':
            if (depth == REGEX_MAX_DEPTH)
                return UINT64_MAX;
            sum[++depth] = 0;
            last = 0;
            continue;
        case ')':
            if (depth == 0)
                return UINT64_MAX;
            last = sum[depth--] + 1;
            sum[depth] += last;
            continue;
        case '+':
            mult = 2;
            break;
        case '{': {
            char *end;
            unsigned long n = strtoul(p + 1, &end, 10), m = n;
            if (*end == ',')
                m = end[1] == '}' ? n : strtoul(end + 1, &end, 10);
            while (*end && *end != '}')
                end++;
            if (!*end)
                return UINT64_MAX;
            p = end;
            mult = (m > n ? m : n) + 1;
            break;
        }
        case '*':
        case '?':
        case '|':
        case '^':
        case '$':
            continue;
        default:
            last = 1;
            sum[depth] += 1;
            continue;
        }
        /* A repetition of the last atom or group: its copies. */
        if (last > REGEX_MAX_COST || mult > REGEX_MAX_COST)
            return UINT64_MAX;
        sum[depth] += last * (mult - 1);
        last *= mult;
        if (sum[depth] > REGEX_MAX_COST)
            return UINT64_MAX;
    }
    return sum[0];
}

static int compile_regex(struct ctx *x, yaml_node_t *v, const char *path, struct fl_str_match *sm)
{
    if (strlen(sm->value) > REGEX_MAX_LEN || regex_cost(sm->value) > REGEX_MAX_COST) {
        err_at(x, v, "%s: the regular expression is too large or repeats too much (more than %d "
                     "characters, or bounds and '+' that multiply past %d copies); simplify it",
               path, REGEX_MAX_LEN, REGEX_MAX_COST);
        free(sm->value);
        sm->value = NULL;
        sm->kind = FL_SM_ANY;
        return -1;
    }
    int rc = regcomp(&sm->re, sm->value, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char eb[256];
        regerror(rc, &sm->re, eb, sizeof(eb));
        err_at(x, v, "%s: invalid regular expression \"%s\": %s (POSIX extended syntax)", path,
               sm->value, eb);
        free(sm->value);
        sm->value = NULL;
        sm->kind = FL_SM_ANY;
        return -1;
    }
    return 0;
}

static void set_str_match(struct ctx *x, struct fl_str_match *sm, int kind, yaml_node_t *v,
                          const char *path)
{
    if (sm->kind != FL_SM_ANY) {
        err_at(x, v, "%s: give only one of exact, prefix, regex, present, absent", path);
        return;
    }
    if (kind == FL_SM_PRESENT || kind == FL_SM_ABSENT) {
        const char *s = expect_str(x, v, path);
        if (!s)
            return;
        if (strcmp(s, "true") != 0) {
            err_at(x, v, "%s: only 'true' is allowed here", path);
            return;
        }
        sm->kind = (enum fl_str_match_kind)kind;
        return;
    }
    const char *s = expect_str(x, v, path);
    if (!s)
        return;
    sm->kind = (enum fl_str_match_kind)kind;
    sm->value = strdup(s);
    sm->len = strlen(s);
    if (kind == FL_SM_REGEX)
        compile_regex(x, v, path, sm);
}

static const char *const path_keys[] = {"exact", "prefix", "regex", NULL};
static const int path_kinds[] = {FL_SM_EXACT, FL_SM_PREFIX, FL_SM_REGEX};

static void path_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    (void)k;
    set_str_match(x, obj, path_kinds[key], v, path);
}

static const char *const hdr_keys[] = {"name", "exact", "prefix", "regex", "present", "absent",
                                       NULL};
static const int hdr_kinds[] = {0, FL_SM_EXACT, FL_SM_PREFIX, FL_SM_REGEX, FL_SM_PRESENT,
                                FL_SM_ABSENT};

static void hdr_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                     const char *path)
{
    struct fl_header_match *hm = obj;
    (void)k;
    if (key == 0) {
        const char *s = expect_str(x, v, path);
        if (s && !header_name_ok(s))
            err_at(x, v, "%s: \"%s\" is not a valid header name", path, s);
        else if (s) {
            hm->name = lower_dup(s);
            hm->name_len = strlen(s);
        }
        return;
    }
    set_str_match(x, &hm->m, hdr_kinds[key], v, path);
}

static const char *const grpc_keys[] = {"service", "method", NULL};

static void grpc_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    struct fl_match *m = obj;
    (void)k;
    const char *s = expect_str(x, v, path);
    if (!s)
        return;
    if (key == 0)
        m->grpc_service = strdup(s);
    else
        m->grpc_method = strdup(s);
}

static const char *const match_keys[] = {"method", "path", "headers", "grpc", NULL};

static void match_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                       const char *path)
{
    struct fl_match *m = obj;
    (void)k;
    switch (key) {
    case 0: {
        size_t n;
        char **l = str_list(x, v, path, &n);
        for (size_t i = 0; i < n; i++) {
            enum fl_method me = fl_values_parse_method(l[i], strlen(l[i]));
            if (me == FL_M_OTHER)
                err_at(x, v, "%s: unknown method \"%s\"; use GET, HEAD, POST, PUT, DELETE, "
                             "CONNECT, OPTIONS, TRACE or PATCH (upper case)",
                       path, l[i]);
            else
                m->methods |= 1u << me;
            free(l[i]);
        }
        free(l);
        break;
    }
    case 1:
        if (expect_map(x, v, path)) {
            walk_map(x, v, path, path_keys, path_pair, &m->path);
            if (m->path.kind == FL_SM_ANY && v->data.mapping.pairs.top == v->data.mapping.pairs.start)
                err_at(x, v, "%s: give one of exact, prefix or regex", path);
        }
        break;
    case 2: {
        if (!expect_seq(x, v, path))
            break;
        size_t cnt = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        m->headers = calloc(cnt ? cnt : 1, sizeof(*m->headers));
        for (size_t i = 0; i < cnt && m->headers; i++) {
            yaml_node_t *it = node(x, v->data.sequence.items.start[i]);
            char sub[256];
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (!expect_map(x, it, sub))
                continue;
            struct fl_header_match *hm = &m->headers[m->n_headers++];
            walk_map(x, it, sub, hdr_keys, hdr_pair, hm);
            if (!hm->name && !has_key(x, it, "name"))
                err_at(x, it, "%s: missing required key 'name'", sub);
            /* Only when no condition was written: a bad one was reported already. */
            if (hm->m.kind == FL_SM_ANY && hm->name && !has_key(x, it, "exact") &&
                !has_key(x, it, "prefix") && !has_key(x, it, "regex") &&
                !has_key(x, it, "present") && !has_key(x, it, "absent"))
                err_at(x, it, "%s: give one of exact, prefix, regex, present: true or absent: true",
                       sub);
        }
        break;
    }
    case 3:
        m->has_grpc = 1;
        if (expect_map(x, v, path))
            walk_map(x, v, path, grpc_keys, grpc_pair, m);
        break;
    }
}

/* --- faults --- */

static const char *const delay_keys[] = {"fixed", "jitter", "percent", NULL};

static void delay_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                       const char *path)
{
    struct fl_delay *d = obj;
    (void)k;
    if (key == 0)
        get_duration(x, v, path, &d->fixed_ms);
    else if (key == 1)
        get_duration(x, v, path, &d->jitter_ms);
    else
        get_percent(x, v, path, &d->ppm);
}

static const char *const abort_keys[] = {"status", "body",    "headers", "grpc_status",
                                         "message", "percent", NULL};

static void abort_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                       const char *path)
{
    struct fl_abort *a = obj;
    uint64_t n;
    const char *s;
    (void)k;
    switch (key) {
    case 0:
        if (get_uint(x, v, path, UINT32_MAX, &n) == 0) {
            if (n < 200 || n > 599)
                err_at(x, v, "%s: HTTP status %llu is out of range; use 200-599", path,
                       (unsigned long long)n);
            else
                a->status = (int)n;
        }
        break;
    case 1:
        if ((s = expect_str(x, v, path))) {
            a->body = strdup(s);
            a->body_len = v->data.scalar.length;
        }
        break;
    case 2: {
        if (!expect_map(x, v, path))
            break;
        size_t cnt = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
        a->headers = calloc(cnt ? cnt : 1, sizeof(*a->headers));
        for (size_t i = 0; i < cnt && a->headers; i++) {
            yaml_node_pair_t *p = &v->data.mapping.pairs.start[i];
            yaml_node_t *hk = node(x, p->key), *hv = node(x, p->value);
            const char *name = scalar(hk), *val = scalar(hv);
            if (!name || !header_name_ok(name)) {
                err_at(x, hk, "%s: \"%s\" is not a header name; use letters, digits and '-'",
                       path, name ? name : "");
                continue;
            }
            if (!val || !safe_header_text(val)) {
                err_at(x, hv, "%s.%s: header value must be a single-line string", path, name);
                continue;
            }
            if (strcasecmp(name, "content-length") == 0 || strcasecmp(name, "connection") == 0 ||
                strcasecmp(name, "transfer-encoding") == 0) {
                err_at(x, hk, "%s: '%s' is set by faultline; remove it", path, name);
                continue;
            }
            a->headers[a->n_headers].name = lower_dup(name);
            a->headers[a->n_headers].value = strdup(val);
            a->n_headers++;
        }
        break;
    }
    case 3:
        if ((s = expect_str(x, v, path))) {
            int g = fl_values_parse_grpc_status(s);
            if (g < 0)
                err_at(x, v, "%s: \"%s\" is not a gRPC status; use a name such as UNAVAILABLE or "
                             "a number 0-16",
                       path, s);
            else
                a->grpc_status = g;
        }
        break;
    case 4:
        if ((s = expect_str(x, v, path))) {
            if (!safe_header_text(s))
                err_at(x, v, "%s: the message must be a single line", path);
            else
                a->message = strdup(s);
        }
        break;
    case 5: get_percent(x, v, path, &a->ppm); break;
    }
}

static const char *const reset_keys[] = {"percent", NULL};

static void reset_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                       const char *path)
{
    struct fl_reset *r = obj;
    (void)k;
    (void)key;
    get_percent(x, v, path, &r->ppm);
}

/* Connection faults. Every toxic takes `direction`: downstream (toward the
 * client, the default), upstream (toward the server) or both. */
static int get_direction(struct ctx *x, yaml_node_t *v, const char *path, unsigned *dir)
{
    const char *s = expect_str(x, v, path);
    if (!s)
        return -1;
    if (strcmp(s, "downstream") == 0)
        *dir = FL_DIR_DOWN;
    else if (strcmp(s, "upstream") == 0)
        *dir = FL_DIR_UP;
    else if (strcmp(s, "both") == 0)
        *dir = FL_DIR_DOWN | FL_DIR_UP;
    else {
        err_at(x, v, "%s: \"%s\" is not a direction; use downstream (server to client), "
                     "upstream (client to server) or both",
               path, s);
        return -1;
    }
    return 0;
}

static int get_size(struct ctx *x, yaml_node_t *v, const char *path, uint64_t *bytes)
{
    const char *s = expect_str(x, v, path);
    if (!s)
        return -1;
    if (fl_values_parse_size(s, bytes) < 0) {
        err_at(x, v, "%s: \"%s\" is not a size; use bytes or a number with B, KiB, MiB or GiB "
                     "(e.g. 64KiB)",
               path, s);
        return -1;
    }
    return 0;
}

static int get_rate(struct ctx *x, yaml_node_t *v, const char *path, uint64_t *rate)
{
    const char *s = expect_str(x, v, path);
    if (!s)
        return -1;
    if (fl_values_parse_rate(s, rate) < 0) {
        err_at(x, v, "%s: \"%s\" is not a rate; use a size per second above 0 (e.g. 64KiB/s, "
                     "1MiB/s)",
               path, s);
        return -1;
    }
    return 0;
}

static int get_duration_us(struct ctx *x, yaml_node_t *v, const char *path, uint64_t *us)
{
    const char *s = expect_str(x, v, path);
    if (!s)
        return -1;
    if (fl_values_parse_duration_us(s, us) < 0) {
        err_at(x, v, "%s: \"%s\" is not a duration; use a number with us, ms, s, m or h (e.g. "
                     "500us)",
               path, s);
        return -1;
    }
    return 0;
}

static const char *const latency_keys[] = {"fixed", "jitter", "direction", NULL};
static const char *const cbw_keys[] = {"rate", "direction", NULL};
static const char *const slicer_keys[] = {"average", "variation", "delay", "direction", NULL};
static const char *const limit_keys[] = {"bytes", "direction", NULL};
static const char *const after_keys[] = {"after", "direction", NULL};
static const char *const slow_close_keys[] = {"delay", "direction", NULL};

static void latency_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                         const char *path)
{
    struct fl_connection_fault *cf = obj;
    (void)k;
    if (key == 0)
        get_duration(x, v, path, &cf->latency.fixed_ms);
    else if (key == 1)
        get_duration(x, v, path, &cf->latency.jitter_ms);
    else
        get_direction(x, v, path, &cf->latency.dir);
}

static void cbw_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                     const char *path)
{
    struct fl_connection_fault *cf = obj;
    (void)k;
    if (key == 0)
        get_rate(x, v, path, &cf->bandwidth.rate);
    else
        get_direction(x, v, path, &cf->bandwidth.dir);
}

static void slicer_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                        const char *path)
{
    struct fl_connection_fault *cf = obj;
    (void)k;
    if (key == 0)
        get_size(x, v, path, &cf->slicer.average);
    else if (key == 1)
        get_size(x, v, path, &cf->slicer.variation);
    else if (key == 2)
        get_duration_us(x, v, path, &cf->slicer.delay_us);
    else
        get_direction(x, v, path, &cf->slicer.dir);
}

static void limit_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                       const char *path)
{
    struct fl_connection_fault *cf = obj;
    (void)k;
    if (key == 0)
        get_size(x, v, path, &cf->limit_data.bytes);
    else
        get_direction(x, v, path, &cf->limit_data.dir);
}

static void timeout_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                         const char *path)
{
    struct fl_connection_fault *cf = obj;
    (void)k;
    if (key == 0)
        get_duration(x, v, path, &cf->timeout.after_ms);
    else
        get_direction(x, v, path, &cf->timeout.dir);
}

static void slow_close_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                            const char *path)
{
    struct fl_connection_fault *cf = obj;
    (void)k;
    if (key == 0)
        get_duration(x, v, path, &cf->slow_close.delay_ms);
    else
        get_direction(x, v, path, &cf->slow_close.dir);
}

static void reset_peer_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                            const char *path)
{
    struct fl_connection_fault *cf = obj;
    (void)k;
    if (key == 0)
        get_duration(x, v, path, &cf->reset_peer.after_ms);
    else
        get_direction(x, v, path, &cf->reset_peer.dir);
}

static const char *const connection_keys[] = {"percent",  "latency", "bandwidth",  "slicer",
                                              "limit_data", "timeout", "slow_close", "reset_peer",
                                              NULL};

static void connection_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                            const char *path)
{
    struct fl_connection_fault *cf = obj;
    (void)k;
    if (key == 0) {
        get_percent(x, v, path, &cf->ppm);
        return;
    }
    if (!expect_map(x, v, path))
        return;
    switch (key) {
    case 1:
        cf->latency.enabled = 1;
        cf->latency.dir = FL_DIR_DOWN;
        walk_map(x, v, path, latency_keys, latency_pair, cf);
        if (!has_key(x, v, "fixed"))
            err_at(x, v, "%s: missing required key 'fixed' (e.g. fixed: 100ms)", path);
        break;
    case 2:
        cf->bandwidth.enabled = 1;
        cf->bandwidth.dir = FL_DIR_DOWN;
        walk_map(x, v, path, cbw_keys, cbw_pair, cf);
        if (!has_key(x, v, "rate"))
            err_at(x, v, "%s: missing required key 'rate' (e.g. rate: 1MiB/s)", path);
        break;
    case 3:
        cf->slicer.enabled = 1;
        cf->slicer.dir = FL_DIR_DOWN;
        walk_map(x, v, path, slicer_keys, slicer_pair, cf);
        if (!has_key(x, v, "average"))
            err_at(x, v, "%s: missing required key 'average' (e.g. average: 64)", path);
        else if (cf->slicer.average == 0)
            err_at(x, v, "%s: average must be at least 1 byte", path);
        else if (cf->slicer.variation >= cf->slicer.average)
            err_at(x, v, "%s: variation must be smaller than average", path);
        break;
    case 4:
        cf->limit_data.enabled = 1;
        cf->limit_data.dir = FL_DIR_DOWN;
        walk_map(x, v, path, limit_keys, limit_pair, cf);
        if (!has_key(x, v, "bytes"))
            err_at(x, v, "%s: missing required key 'bytes' (e.g. bytes: 1MiB)", path);
        break;
    case 5:
        cf->timeout.enabled = 1;
        cf->timeout.dir = FL_DIR_DOWN;
        walk_map(x, v, path, after_keys, timeout_pair, cf);
        if (!has_key(x, v, "after"))
            err_at(x, v, "%s: missing required key 'after' (0s: hold until the fault ends)", path);
        break;
    case 6:
        cf->slow_close.enabled = 1;
        cf->slow_close.dir = FL_DIR_DOWN;
        walk_map(x, v, path, slow_close_keys, slow_close_pair, cf);
        if (!has_key(x, v, "delay"))
            err_at(x, v, "%s: missing required key 'delay' (e.g. delay: 2s)", path);
        break;
    case 7:
        cf->reset_peer.enabled = 1;
        cf->reset_peer.dir = FL_DIR_DOWN;
        walk_map(x, v, path, after_keys, reset_peer_pair, cf);
        if (!has_key(x, v, "after"))
            err_at(x, v, "%s: missing required key 'after' (e.g. after: 500ms)", path);
        break;
    }
}

/* Response side. */
static const char *const modify_keys[] = {"status",  "grpc_status", "message", "headers",
                                          "body",    "percent",     NULL};
static const char *const modify_hdr_keys[] = {"set", "remove", NULL};

/* A header a fault may set: a token name, a single-line value, and not one
 * of the framing headers faultline itself writes. */
static int settable_header(struct ctx *x, yaml_node_t *hk, yaml_node_t *hv, const char *path,
                           const char *name, const char *val)
{
    if (!name || !header_name_ok(name)) {
        err_at(x, hk, "%s: \"%s\" is not a header name; use letters, digits and '-'", path,
               name ? name : "");
        return 0;
    }
    if (hv && (!val || !safe_header_text(val))) {
        err_at(x, hv, "%s.%s: header value must be a single-line string", path, name);
        return 0;
    }
    if (strcasecmp(name, "content-length") == 0 || strcasecmp(name, "connection") == 0 ||
        strcasecmp(name, "transfer-encoding") == 0) {
        err_at(x, hk, "%s: '%s' is set by faultline (it frames the body); remove it", path, name);
        return 0;
    }
    return 1;
}

static void modify_hdr_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                            const char *path)
{
    struct fl_modify *m = obj;
    (void)k;
    if (key == 0) {
        if (!expect_map(x, v, path))
            return;
        size_t cnt = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
        m->set = calloc(cnt ? cnt : 1, sizeof(*m->set));
        for (size_t i = 0; i < cnt && m->set; i++) {
            yaml_node_pair_t *p = &v->data.mapping.pairs.start[i];
            yaml_node_t *hk = node(x, p->key), *hv = node(x, p->value);
            const char *name = scalar(hk), *val = scalar(hv);
            if (!settable_header(x, hk, hv, path, name, val))
                continue;
            m->set[m->n_set].name = lower_dup(name);
            m->set[m->n_set].value = strdup(val);
            m->n_set++;
        }
        return;
    }
    size_t n = 0;
    char **names = str_list(x, v, path, &n);
    if (!names)
        return;
    for (size_t i = 0; i < n; i++) {
        if (!settable_header(x, v, NULL, path, names[i], NULL)) {
            free(names[i]);
            names[i] = NULL;
            continue;
        }
        char *l = lower_dup(names[i]);
        free(names[i]);
        names[i] = l;
    }
    /* Drop the refused ones, keep the order. */
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (names[i])
            names[w++] = names[i];
    m->remove = names;
    m->n_remove = w;
}

static void modify_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                        const char *path)
{
    struct fl_modify *m = obj;
    uint64_t n;
    const char *s;
    (void)k;
    switch (key) {
    case 0:
        if (get_uint(x, v, path, UINT32_MAX, &n) == 0) {
            if (n < 200 || n > 599)
                err_at(x, v, "%s: HTTP status %llu is out of range; use 200-599", path,
                       (unsigned long long)n);
            else
                m->status = (int)n;
        }
        break;
    case 1:
        if ((s = expect_str(x, v, path))) {
            int g = fl_values_parse_grpc_status(s);
            if (g < 0)
                err_at(x, v, "%s: \"%s\" is not a gRPC status; use a name such as INTERNAL or a "
                             "number 0-16",
                       path, s);
            else
                m->grpc_status = g;
        }
        break;
    case 2:
        if ((s = expect_str(x, v, path))) {
            if (!safe_header_text(s))
                err_at(x, v, "%s: the message must be a single line", path);
            else
                m->message = strdup(s);
        }
        break;
    case 3:
        if (expect_map(x, v, path))
            walk_map(x, v, path, modify_hdr_keys, modify_hdr_pair, m);
        break;
    case 4:
        if ((s = expect_str(x, v, path))) {
            m->body = strdup(s);
            m->body_len = v->data.scalar.length;
        }
        break;
    case 5: get_percent(x, v, path, &m->ppm); break;
    }
}

static const char *const truncate_keys[] = {"after", "percent", NULL};

static void truncate_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                          const char *path)
{
    struct fl_truncate *t = obj;
    (void)k;
    if (key == 0)
        get_size(x, v, path, &t->after);
    else
        get_percent(x, v, path, &t->ppm);
}

static const char *const bandwidth_keys[] = {"rate", "direction", "percent", NULL};

static void bandwidth_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                           const char *path)
{
    struct fl_bandwidth *b = obj;
    (void)k;
    if (key == 0)
        get_rate(x, v, path, &b->rate);
    else if (key == 1)
        get_direction(x, v, path, &b->dir);
    else
        get_percent(x, v, path, &b->ppm);
}

static const char *const fault_keys[] = {"delay",    "abort",    "reset",     "response_delay",
                                         "modify",   "truncate", "bandwidth", "connection",
                                         NULL};

static void fault_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                       const char *path)
{
    struct fl_rule *r = obj;
    (void)k;
    if (!expect_map(x, v, path))
        return;
    switch (key) {
    case 0:
        r->delay.enabled = 1;
        r->delay.ppm = FL_PPM_MAX;
        walk_map(x, v, path, delay_keys, delay_pair, &r->delay);
        if (!has_key(x, v, "fixed"))
            err_at(x, v, "%s: missing required key 'fixed' (e.g. fixed: 200ms)", path);
        break;
    case 1:
        r->abort.enabled = 1;
        r->abort.ppm = FL_PPM_MAX;
        r->abort.grpc_status = -1;
        walk_map(x, v, path, abort_keys, abort_pair, &r->abort);
        if (!has_key(x, v, "status") && !has_key(x, v, "grpc_status"))
            err_at(x, v, "%s: give 'status' (HTTP, 200-599) or 'grpc_status' (e.g. UNAVAILABLE)",
                   path);
        break;
    case 2:
        r->reset.enabled = 1;
        r->reset.ppm = FL_PPM_MAX;
        walk_map(x, v, path, reset_keys, reset_pair, &r->reset);
        break;
    case 3:
        r->response_delay.enabled = 1;
        r->response_delay.ppm = FL_PPM_MAX;
        walk_map(x, v, path, delay_keys, delay_pair, &r->response_delay);
        if (!has_key(x, v, "fixed"))
            err_at(x, v, "%s: missing required key 'fixed' (e.g. fixed: 300ms)", path);
        break;
    case 4: {
        struct fl_modify *m = &r->modify;
        m->enabled = 1;
        m->ppm = FL_PPM_MAX;
        m->grpc_status = -1;
        walk_map(x, v, path, modify_keys, modify_pair, m);
        if (!has_key(x, v, "status") && !has_key(x, v, "grpc_status") &&
            !has_key(x, v, "message") && !has_key(x, v, "headers") && !has_key(x, v, "body"))
            err_at(x, v, "%s: give what to change: status, headers (set, remove), body, or "
                         "grpc_status and message",
                   path);
        break;
    }
    case 5:
        r->truncate.enabled = 1;
        r->truncate.ppm = FL_PPM_MAX;
        walk_map(x, v, path, truncate_keys, truncate_pair, &r->truncate);
        if (!has_key(x, v, "after"))
            err_at(x, v, "%s: missing required key 'after' (e.g. after: 1KiB)", path);
        break;
    case 6:
        r->bandwidth.enabled = 1;
        r->bandwidth.ppm = FL_PPM_MAX;
        r->bandwidth.dir = FL_DIR_DOWN;
        walk_map(x, v, path, bandwidth_keys, bandwidth_pair, &r->bandwidth);
        if (!has_key(x, v, "rate"))
            err_at(x, v, "%s: missing required key 'rate' (e.g. rate: 64KiB/s)", path);
        break;
    case 7: {
        struct fl_connection_fault *cf = &r->connection;
        cf->enabled = 1;
        cf->ppm = FL_PPM_MAX;
        walk_map(x, v, path, connection_keys, connection_pair, cf);
        if (!cf->latency.enabled && !cf->bandwidth.enabled && !cf->slicer.enabled &&
            !cf->limit_data.enabled && !cf->timeout.enabled && !cf->slow_close.enabled &&
            !cf->reset_peer.enabled)
            err_at(x, v, "%s: give at least one toxic: latency, bandwidth, slicer, limit_data, "
                         "timeout, slow_close, reset_peer",
                   path);
        break;
    }
    }
}

static const char *const rule_keys[] = {"name", "on", "match", "fault", "from_headers", NULL};

static void rule_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    struct fl_rule *r = obj;
    (void)k;
    switch (key) {
    case 0: r->name = name_of(x, v, path); break;
    case 1: r->on = str_list(x, v, path, &r->n_on); break;
    case 2:
        if (expect_map(x, v, path))
            walk_map(x, v, path, match_keys, match_pair, &r->match);
        break;
    case 3:
        if (expect_map(x, v, path)) {
            walk_map(x, v, path, fault_keys, fault_pair, r);
            if (v->data.mapping.pairs.top == v->data.mapping.pairs.start)
                err_at(x, v, "%s: give at least one of delay, abort, reset, response_delay, "
                             "modify, truncate, bandwidth, connection",
                       path);
        }
        break;
    case 4: {
        const char *b = expect_str(x, v, path);
        if (b && strcmp(b, "true") == 0)
            r->from_headers = 1;
        else if (b && strcmp(b, "false") != 0)
            err_at(x, v, "%s: \"%s\" is not a boolean; use true or false", path, b);
        break;
    }
    }
}

/* --- listeners, targets --- */

static const char *const listener_keys[] = {"name", "listen", "upstream", NULL};

static void listener_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                          const char *path)
{
    struct fl_listener_spec *l = obj;
    const char *s;
    (void)k;
    if (key == 0) {
        l->name = name_of(x, v, path);
        return;
    }
    if (!(s = expect_str(x, v, path)))
        return;
    if (key == 1) {
        int n = fl_values_parse_hostport(s, 1, l->listen_addrs);
        if (n < 0)
            err_at(x, v, "%s: \"%s\" is not a listen address; use IP:PORT, [IPv6]:PORT, "
                         "localhost:PORT or *:PORT",
                   path, s);
        else {
            l->n_listen_addrs = n;
            l->listen = strdup(s);
        }
    } else {
        struct sockaddr_storage a[2];
        int n = fl_values_parse_hostport(s, 0, a);
        if (n < 0)
            err_at(x, v, "%s: \"%s\" is not a reachable upstream; use HOST:PORT or [IPv6]:PORT%s",
                   path, s, n == -ENOENT ? " (the host name does not resolve)" : "");
        else {
            l->upstream_addr = a[0];
            l->upstream = strdup(s);
        }
    }
}

static int parse_cidr(const char *s, int is_ip, struct fl_cidr *c)
{
    char buf[128];
    long prefix = -1;
    snprintf(buf, sizeof(buf), "%s", s);
    char *slash = strchr(buf, '/');
    if (slash) {
        if (is_ip)
            return -EINVAL;
        char *end;
        *slash = 0;
        prefix = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end)
            return -EINVAL;
    } else if (!is_ip) {
        return -EINVAL;
    }
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, buf, c->addr) == 1) {
        c->family = AF_INET;
        if (prefix < 0)
            prefix = 32;
        if (prefix > 32)
            return -EINVAL;
    } else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
        c->family = AF_INET6;
        if (prefix < 0)
            prefix = 128;
        if (prefix > 128)
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    c->prefix = (int)prefix;
    /* An IPv4-mapped IPv6 range is the IPv4 range: that is how IPv4 peers
     * arrive, whatever the socket's family. */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (c->family == AF_INET6 && c->prefix >= 96 && memcmp(c->addr, mapped, 12) == 0) {
        memmove(c->addr, c->addr + 12, 4);
        memset(c->addr + 4, 0, 12);
        c->family = AF_INET;
        c->prefix -= 96;
    }
    return 0;
}

static const char *const pods_keys[] = {"cgroup", "selector", NULL};
static const char *const selector_keys[] = {"matchLabels", "matchExpressions", "namespace", NULL};
static const char *const expr_keys[] = {"key", "operator", "values", NULL};
static const char *const dest_keys[] = {"cidr", "ip", "service", "port", NULL};
static const char *const target_keys[] = {"name", "pods",     "destination", "direction",
                                          "port", "from",     "existing",    NULL};
static const char *const from_keys[] = {"cidr", "ip", NULL};

/* A Kubernetes namespace (RFC 1123 label): 1-63 lowercase letters, digits
 * and '-', alphanumeric at both ends. A Service name (RFC 1035 label) must
 * also begin with a letter: pass letter_first. */
static int dns_label(const char *s, size_t n, int letter_first)
{
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return 0;
    if (letter_first && !islower((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-')
            return 0;
    return 1;
}

/* A selector as it is walked: matchLabels' requirements come first whatever
 * the order of the keys, so n_labels counts them. */
struct sel_walk {
    struct fl_selector *sel;
    size_t n_labels;
};

/* Inserts a zeroed requirement at index at; NULL when out of memory. */
static struct fl_sel_req *sel_insert(struct fl_selector *sel, size_t at)
{
    struct fl_sel_req *r = realloc(sel->reqs, (sel->n_reqs + 1) * sizeof(*r));
    if (!r)
        return NULL;
    sel->reqs = r;
    memmove(&r[at + 1], &r[at], (sel->n_reqs - at) * sizeof(*r));
    memset(&r[at], 0, sizeof(*r));
    sel->n_reqs++;
    return &r[at];
}

static void label_key(struct ctx *x, yaml_node_t *n, const char *path, const char *key)
{
    const char *e = fl_selector_key_error(key);
    if (e)
        err_at(x, n, "%s: '%s' is not a label key: %s; a key is NAME or PREFIX/NAME, NAME being "
                     "1-63 letters, digits, '-', '_' and '.' that begin and end with a letter or "
                     "digit",
               path, key, e);
}

static void label_value(struct ctx *x, yaml_node_t *n, const char *path, const char *v)
{
    /* The selector's message speaks of a "name part"; a value has no parts. */
    const char *e = strlen(v) > 63 ? "it is longer than 63 characters" : fl_selector_value_error(v);
    if (e)
        err_at(x, n, "%s: '%s' is not a label value: %s; a value is empty, or 1-63 letters, "
                     "digits, '-', '_' and '.' that begin and end with a letter or digit",
               path, v, e);
}

/* matchLabels {k: v}: each pair is the requirement k In [v]. Not walked with
 * walk_map (the keys are the user's), so duplicates are caught here. */
static void match_labels(struct ctx *x, yaml_node_t *m, const char *path, struct sel_walk *w)
{
    if (!expect_map(x, m, path))
        return;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(x, p->key), *v = node(x, p->value);
        const char *ks = scalar(k), *vs;
        char sub[300];
        int dup = 0;
        if (!ks) {
            err_at(x, k, "%s: keys must be plain strings", path);
            continue;
        }
        for (size_t i = 0; i < w->n_labels && !dup; i++)
            dup = w->sel->reqs[i].key && strcmp(w->sel->reqs[i].key, ks) == 0;
        if (dup) {
            err_at(x, k, "%s: key '%s' appears twice", path, ks);
            continue;
        }
        snprintf(sub, sizeof(sub), "%s.%s", path, ks);
        label_key(x, k, path, ks);
        if (!(vs = expect_str(x, v, sub)))
            continue;
        label_value(x, v, sub, vs);
        struct fl_sel_req *r = sel_insert(w->sel, w->n_labels);
        if (!r)
            return;
        w->n_labels++;
        r->op = FL_SEL_IN;
        if (!(r->key = strdup(ks)) || !(r->values = calloc(1, sizeof(char *))) ||
            !(r->values[0] = strdup(vs)))
            continue;
        r->n_values = 1;
    }
}

/* values: a list, as the API has it (a structural schema cannot say
 * "a string or a list"). */
static void expr_values(struct ctx *x, yaml_node_t *v, const char *path, struct fl_sel_req *r)
{
    if (v->type != YAML_SEQUENCE_NODE) {
        err_at(x, v, "%s: expected a list (e.g. values: [web, api]), got %s", path, type_name(v));
        return;
    }
    size_t cnt = SEQ_ITEMS(v);
    r->values = calloc(cnt ? cnt : 1, sizeof(*r->values));
    for (size_t i = 0; i < cnt && r->values; i++) {
        yaml_node_t *it = node(x, v->data.sequence.items.start[i]);
        char sub[300];
        const char *s;
        snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
        if (!(s = expect_str(x, it, sub)))
            continue;
        label_value(x, it, sub, s);
        if ((r->values[r->n_values] = strdup(s)))
            r->n_values++;
    }
}

static void expr_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    struct fl_sel_req *r = obj;
    const char *s;
    (void)k;
    if (key == 2) {
        expr_values(x, v, path, r);
        return;
    }
    if (!(s = expect_str(x, v, path)))
        return;
    if (key == 0) {
        label_key(x, v, path, s);
        r->key = strdup(s);
    } else if (fl_selector_op_parse(s, &r->op) < 0) {
        err_at(x, v, "%s: unknown operator '%s'; use In, NotIn, Exists or DoesNotExist", path, s);
        r->op = (enum fl_sel_op)-1;
    }
}

/* Each entry {key, operator, values} is one requirement, after matchLabels'.
 * As in the API: In and NotIn need at least one value, Exists and
 * DoesNotExist take none (an empty list is accepted). */
static void match_expressions(struct ctx *x, yaml_node_t *v, const char *path, struct sel_walk *w)
{
    if (!expect_seq(x, v, path))
        return;
    for (size_t i = 0; i < SEQ_ITEMS(v); i++) {
        yaml_node_t *e = node(x, v->data.sequence.items.start[i]);
        char sub[300];
        snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
        if (!expect_map(x, e, sub))
            continue;
        struct fl_sel_req *r = sel_insert(w->sel, w->sel->n_reqs);
        if (!r)
            return;
        r->op = FL_SEL_IN;
        walk_map(x, e, sub, expr_keys, expr_pair, r);
        static const char *const req[] = {"key", "operator", NULL};
        if (!require_keys(x, e, sub, req) || (int)r->op < 0)
            continue;
        /* Counted in the YAML, not in r->n_values: an entry that is not a
         * string has been reported already. */
        yaml_node_t *vk = map_key(x, e, "values"), *vv = map_get(x, e, "values");
        int listed = vv && vv->type == YAML_SEQUENCE_NODE && SEQ_ITEMS(vv) > 0;
        if ((r->op == FL_SEL_IN || r->op == FL_SEL_NOT_IN) && !listed &&
            (!vv || vv->type == YAML_SEQUENCE_NODE))
            err_at(x, vk ? vk : e, "%s: operator %s needs a non-empty 'values' list (e.g. "
                                   "values: [web])",
                   sub, fl_selector_op_name(r->op));
        else if ((r->op == FL_SEL_EXISTS || r->op == FL_SEL_DOES_NOT_EXIST) && listed)
            err_at(x, vk, "%s: values must not be given with %s; remove 'values'", sub,
                   fl_selector_op_name(r->op));
    }
}

static void selector_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                          const char *path)
{
    struct sel_walk *w = obj;
    const char *s;
    (void)k;
    switch (key) {
    case 0: match_labels(x, v, path, w); break;
    case 1: match_expressions(x, v, path, w); break;
    case 2:
        if (!(s = expect_str(x, v, path)))
            return;
        if (!dns_label(s, strlen(s), 0))
            err_at(x, v, "%s: '%s' is not a namespace name; use 1-63 lowercase letters, digits "
                         "and '-', beginning and ending with a letter or digit",
                   path, s);
        else
            w->sel->ns = strdup(s);
        break;
    }
}

static void pods_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    struct fl_target_spec *t = obj;
    (void)k;
    if (key == 1) {
        /* Allocated even when the value is not a mapping: t->selector then
         * still says the pods were meant to be chosen by labels. */
        t->selector = calloc(1, sizeof(*t->selector));
        if (!t->selector || !expect_map(x, v, path))
            return;
        struct sel_walk w = {t->selector, 0};
        walk_map(x, v, path, selector_keys, selector_pair, &w);
        if (x->resource) {
            yaml_node_t *nk = map_key(x, v, "namespace");
            if (nk)
                err_at(x, nk, "%s.namespace: not allowed in a FaultPolicy resource: it selects "
                              "pods in its own namespace (%s); create the resource there",
                       path, x->res_ns);
            else
                t->selector->ns = strdup(x->res_ns);
        } else if (!has_key(x, v, "namespace"))
            err_at(x, v, "%s: give 'namespace' (in a file the pods' namespace must be named; a "
                         "FaultPolicy resource uses its own)",
                   path);
        return;
    }
    t->cgroups = str_list(x, v, path, &t->n_cgroups);
    for (size_t i = 0; i < t->n_cgroups; i++)
        if (t->cgroups[i][0] != '/')
            err_at(x, v, "%s: \"%s\" must be an absolute cgroup v2 path (e.g. "
                         "/sys/fs/cgroup/shop/frontend)",
                   path, t->cgroups[i]);
}

/* service: NAME or NAMESPACE/NAME. A bare name is given its namespace by
 * target_done, once the whole target (pods may come after) has been read. */
static void dest_service(struct ctx *x, yaml_node_t *v, const char *path, const char *s,
                         struct fl_target_spec *t)
{
    const char *slash = strchr(s, '/');
    const char *name = slash ? slash + 1 : s;
    size_t ns_len = slash ? (size_t)(slash - s) : 0;
    if (slash && !dns_label(s, ns_len, 0)) {
        err_at(x, v, "%s: '%s' is not a Service: the namespace '%.*s' must be 1-63 lowercase "
                     "letters, digits and '-', beginning and ending with a letter or digit; use "
                     "NAME or NAMESPACE/NAME",
               path, s, (int)ns_len, s);
        return;
    }
    if (!dns_label(name, strlen(name), 1)) {
        err_at(x, v, "%s: '%s' is not a Service: the name '%s' must be 1-63 lowercase letters, "
                     "digits and '-', beginning with a letter and ending with a letter or digit; "
                     "use NAME or NAMESPACE/NAME",
               path, s, name);
        return;
    }
    t->svc_name = strdup(name);
    t->svc_ns = slash ? strndup(s, ns_len) : NULL;
    t->svc_line = (int)v->start_mark.line + 1;
    t->svc_col = (int)v->start_mark.column + 1;
}

static void dest_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    struct fl_target_spec *t = obj;
    const char *s;
    uint64_t n;
    (void)k;
    if (key == 3) {
        if (get_uint(x, v, path, 65535, &n) == 0)
            t->port = (uint16_t)n;
        return;
    }
    if (!(s = expect_str(x, v, path)))
        return;
    if (key == 2)
        dest_service(x, v, path, s, t);
    else if (parse_cidr(s, key == 1, &t->dst) < 0)
        err_at(x, v, "%s: \"%s\" is not %s", path, s,
               key == 1 ? "an IPv4 or IPv6 address" : "a CIDR such as 10.0.0.0/24 or fd00::/64");
}

static void from_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    struct fl_target_spec *t = obj;
    const char *s;
    (void)k;
    if (!(s = expect_str(x, v, path)))
        return;
    if (parse_cidr(s, key == 1, &t->from) < 0) {
        t->from.family = 0;
        err_at(x, v, "%s: \"%s\" is not %s", path, s,
               key == 1 ? "an IPv4 or IPv6 address" : "a CIDR such as 10.0.0.0/8 or fd00::/64");
    }
}

/* direction: egress | ingress; existing: keep | reset. */
static int one_of2(struct ctx *x, yaml_node_t *v, const char *path, const char *a, const char *b)
{
    const char *s = expect_str(x, v, path);
    if (!s)
        return -1;
    if (strcmp(s, a) == 0)
        return 0;
    if (strcmp(s, b) == 0)
        return 1;
    err_at(x, v, "%s: \"%s\" is not allowed; use %s or %s", path, s, a, b);
    return -1;
}

static void target_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                        const char *path)
{
    struct fl_target_spec *t = obj;
    uint64_t n;
    int r;
    (void)k;
    switch (key) {
    case 3:
        if ((r = one_of2(x, v, path, "egress", "ingress")) >= 0)
            t->ingress = r;
        break;
    case 4:
        if (get_uint(x, v, path, 65535, &n) == 0) {
            if (n == 0)
                err_at(x, v, "%s: port 0 is not usable; give the port the pods serve on "
                             "(1-65535)",
                       path);
            t->port = (uint16_t)n;
        }
        break;
    case 5:
        if (expect_map(x, v, path)) {
            int c = has_key(x, v, "cidr") + has_key(x, v, "ip");
            if (c != 1)
                err_at(x, v, "%s: give one of 'cidr' or 'ip'", path);
            walk_map(x, v, path, from_keys, from_pair, t);
        }
        break;
    case 6:
        if ((r = one_of2(x, v, path, "keep", "reset")) >= 0)
            t->existing_reset = r;
        break;
    case 0: t->name = name_of(x, v, path); break;
    case 1:
        if (expect_map(x, v, path)) {
            int c = has_key(x, v, "cgroup"), sl = has_key(x, v, "selector");
            if (c == sl)
                err_at(x, v, "%s: give one of 'cgroup' (cgroup v2 paths) or 'selector' "
                             "(Kubernetes labels)",
                       path);
            walk_map(x, v, path, pods_keys, pods_pair, t);
        }
        break;
    case 2:
        if (expect_map(x, v, path)) {
            int c = has_key(x, v, "cidr") + has_key(x, v, "ip") + has_key(x, v, "service");
            if (c == 0)
                err_at(x, v, "%s: give 'cidr', 'ip' or 'service'", path);
            else if (c > 1)
                err_at(x, v, "%s: give only one of 'cidr', 'ip' or 'service'", path);
            walk_map(x, v, path, dest_keys, dest_pair, t);
        }
        break;
    }
}

/* After a target's keys: what each direction needs and allows; a bare
 * Service name is in the namespace of the target's pods.selector; cgroup
 * pods have none to lend. */
static void target_done(struct ctx *x, yaml_node_t *it, struct fl_target_spec *t, const char *path)
{
    static const char *const req[] = {"name", "pods", NULL};
    require_keys(x, it, path, req);
    if (t->ingress) {
        yaml_node_t *d = map_key(x, it, "destination");
        if (d)
            err_at(x, d, "%s.destination: an ingress target has no destination (it takes the "
                         "connections arriving at its pods); give 'port', the port they serve on",
                   path);
        else if (!has_key(x, it, "port"))
            err_at(x, it, "%s: missing required key 'port' (direction: ingress needs the port "
                          "the pods serve on)",
                   path);
    } else {
        static const char *const only_in[] = {"port", "from", NULL};
        for (int i = 0; only_in[i]; i++) {
            yaml_node_t *k = map_key(x, it, only_in[i]);
            if (k)
                err_at(x, k, "%s.%s: only for direction: ingress; an egress target gives "
                             "destination (cidr or ip or service, and port)",
                       path, only_in[i]);
        }
        if (!has_key(x, it, "destination"))
            err_at(x, it, "%s: missing required key 'destination' (or say direction: ingress "
                          "with the pods' port)",
                   path);
    }
    if (!t->svc_name || t->svc_ns)
        return;
    if (x->resource) { /* a bare Service is in the resource's namespace */
        t->svc_ns = strdup(x->res_ns);
        return;
    }
    if (t->selector) {
        /* Without a namespace the selector has been reported already. */
        if (t->selector->ns)
            t->svc_ns = strdup(t->selector->ns);
        return;
    }
    err_pos(x, t->svc_line, t->svc_col,
            "%s.destination.service: '%s' names no namespace, and the target has no "
            "pods.selector to take it from; write NAMESPACE/%s",
            path, t->svc_name, t->svc_name);
}

/* --- top level --- */

static const char *const spec_keys[] = {"seed",      "ttl",     "max_active_faults",
                                        "proxy_port", "listeners", "targets",
                                        "rules",     NULL};

static void spec_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    struct fl_policy *p = obj;
    uint64_t n;
    (void)k;
    switch (key) {
    case 0:
        if (get_uint(x, v, path, UINT64_MAX, &n) == 0) {
            p->has_seed = 1;
            p->seed = n;
        }
        break;
    case 1: get_duration(x, v, path, &p->ttl_ms); break;
    case 2:
        if (get_uint(x, v, path, UINT32_MAX, &n) == 0) {
            /* 0 would silently turn every fault into an overflow. */
            if (n == 0)
                err_at(x, v, "%s: must be at least 1; to stop all injection use 'faultctl halt'",
                       path);
            p->max_active_faults = (uint32_t)n;
        }
        break;
    case 3:
        if (get_uint(x, v, path, 65535, &n) == 0) {
            if (n == 0)
                err_at(x, v, "%s: port 0 is not usable", path);
            p->proxy_port = (uint16_t)n;
        }
        break;
    case 4:
        if (x->resource) {
            err_at(x, k, "%s: not allowed in a FaultPolicy resource; explicit listeners belong "
                         "in a policy file given to the daemon with -f",
                   path);
            break;
        }
        if (!expect_seq(x, v, path))
            break;
        p->listeners = calloc(SEQ_ITEMS(v) + 1, sizeof(*p->listeners));
        for (size_t i = 0; i < SEQ_ITEMS(v) && p->listeners; i++) {
            yaml_node_t *it = node(x, v->data.sequence.items.start[i]);
            char sub[256];
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (!expect_map(x, it, sub))
                continue;
            struct fl_listener_spec *l = &p->listeners[p->n_listeners++];
            l->line = (int)it->start_mark.line + 1;
            l->col = (int)it->start_mark.column + 1;
            walk_map(x, it, sub, listener_keys, listener_pair, l);
            require_keys(x, it, sub, listener_keys);
        }
        break;
    case 5:
        if (!expect_seq(x, v, path))
            break;
        p->targets = calloc(SEQ_ITEMS(v) + 1, sizeof(*p->targets));
        for (size_t i = 0; i < SEQ_ITEMS(v) && p->targets; i++) {
            yaml_node_t *it = node(x, v->data.sequence.items.start[i]);
            char sub[256];
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (!expect_map(x, it, sub))
                continue;
            struct fl_target_spec *t = &p->targets[p->n_targets++];
            t->line = (int)it->start_mark.line + 1;
            t->col = (int)it->start_mark.column + 1;
            walk_map(x, it, sub, target_keys, target_pair, t);
            target_done(x, it, t, sub);
        }
        break;
    case 6:
        if (!expect_seq(x, v, path))
            break;
        p->rules = calloc(SEQ_ITEMS(v) + 1, sizeof(*p->rules));
        for (size_t i = 0; i < SEQ_ITEMS(v) && p->rules; i++) {
            yaml_node_t *it = node(x, v->data.sequence.items.start[i]);
            char sub[256];
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (!expect_map(x, it, sub))
                continue;
            struct fl_rule *r = &p->rules[p->n_rules++];
            r->line = (int)it->start_mark.line + 1;
            r->col = (int)it->start_mark.column + 1;
            r->abort.grpc_status = -1;
            atomic_init(&r->live.enabled, 1);
            for (int f = 0; f < FL_FAULT_KINDS; f++)
                atomic_init(&r->live.ppm[f], UINT32_MAX);
            atomic_init(&r->live.delay_fixed_ms, UINT64_MAX);
            atomic_init(&r->live.abort_status, 0);
            walk_map(x, it, sub, rule_keys, rule_pair, r);
            /* A rule the request headers drive needs no fault of its own. */
            static const char *const req[] = {"name", "fault", NULL};
            static const char *const req_hdr[] = {"name", NULL};
            require_keys(x, it, sub, r->from_headers ? req_hdr : req);
            const struct fl_match *m = &r->match;
            r->conn_at_accept = r->connection.enabled && !m->methods &&
                                m->path.kind == FL_SM_ANY && !m->n_headers && !m->has_grpc;
            r->conn_only = r->conn_at_accept && !r->from_headers && !r->delay.enabled &&
                           !r->abort.enabled && !r->reset.enabled &&
                           !r->response_delay.enabled && !r->modify.enabled &&
                           !r->truncate.enabled && !r->bandwidth.enabled;
        }
        break;
    }
}

static const char *const meta_keys[] = {"name", "labels", "annotations", NULL};
/* A resource as the API server returns it; what faultline does not use is
 * taken as it comes. */
static const char *const meta_keys_resource[] = {
    "name",          "labels",           "annotations",       "namespace",
    "generation",    "creationTimestamp", "uid",              "resourceVersion",
    "managedFields", "finalizers",        "ownerReferences",  "deletionTimestamp",
    "generateName",  "selfLink",          "deletionGracePeriodSeconds", NULL};

static void meta_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                      const char *path)
{
    struct fl_policy *p = obj;
    const char *s;
    uint64_t n;
    (void)k;
    switch (key) {
    case 0: p->name = name_of(x, v, path); break;
    case 1:
    case 2: expect_map(x, v, path); break; /* kept for Kubernetes-style files; not used */
    case 3:
        if ((s = expect_str(x, v, path))) {
            if (!dns_label(s, strlen(s), 0))
                err_at(x, v, "%s: '%s' is not a namespace name", path, s);
            else
                p->ns = strdup(s);
        }
        break;
    case 4:
        if (get_uint(x, v, path, UINT64_MAX, &n) == 0)
            p->generation = n;
        break;
    case 5:
        if ((s = expect_str(x, v, path)))
            p->created = strdup(s);
        break;
    default: break; /* the API server's own bookkeeping */
    }
}

static const char *const top_keys[] = {"apiVersion", "kind", "metadata", "spec", "status", NULL};

static void top_pair(struct ctx *x, void *obj, int key, yaml_node_t *k, yaml_node_t *v,
                     const char *path)
{
    struct fl_policy *p = obj;
    const char *s;
    (void)k;
    (void)path;
    switch (key) {
    case 0:
        if ((s = expect_str(x, v, "apiVersion")) && strcmp(s, "faultline.dev/v1") != 0 &&
            strcmp(s, "faultline/v1") != 0)
            err_at(x, v, "apiVersion: \"%s\" is not supported; use faultline.dev/v1 (files may "
                         "also say faultline/v1)",
                   s);
        break;
    case 1:
        if ((s = expect_str(x, v, "kind")) && strcmp(s, "FaultPolicy") != 0)
            err_at(x, v, "kind: \"%s\" is not supported; use FaultPolicy", s);
        break;
    case 2:
        if (expect_map(x, v, "metadata")) {
            walk_map(x, v, "metadata", x->resource ? meta_keys_resource : meta_keys, meta_pair, p);
            static const char *const req[] = {"name", NULL};
            require_keys(x, v, "metadata", req);
        }
        break;
    case 3:
        if (expect_map(x, v, "spec"))
            walk_map(x, v, "spec", spec_keys, spec_pair, p);
        break;
    case 4:
        if (!x->resource)
            err_at(x, k, "status: only a FaultPolicy resource (with metadata.namespace) has one");
        break; /* the daemons write it; nothing to load */
    }
}

static int scope_exists(const struct fl_policy *p, const char *name)
{
    for (size_t j = 0; j < p->n_listeners; j++)
        if (p->listeners[j].name && strcmp(p->listeners[j].name, name) == 0)
            return 1;
    for (size_t j = 0; j < p->n_targets; j++)
        if (p->targets[j].name && strcmp(p->targets[j].name, name) == 0)
            return 1;
    return 0;
}

static void check_on_name(struct ctx *x, const struct fl_policy *p, yaml_node_t *n, size_t rule)
{
    const char *s = scalar(n);
    if (s && !scope_exists(p, s))
        err_at(x, n, "spec.rules[%zu].on: '%s' names no listener or target of this policy; "
                     "define it under spec.listeners or spec.targets, or omit 'on' to apply "
                     "everywhere",
               rule, s);
}

/* `on:` may name listeners and targets defined later in the file, so it is
 * checked after the walk, against the YAML nodes so each error points at the
 * name itself. */
static void check_on(struct ctx *x, struct fl_policy *p)
{
    yaml_node_t *rules = map_get(x, map_get(x, yaml_document_get_root_node(x->doc), "spec"),
                                 "rules");
    if (!rules || rules->type != YAML_SEQUENCE_NODE)
        return;
    for (size_t i = 0; i < SEQ_ITEMS(rules); i++) {
        yaml_node_t *on = map_get(x, node(x, rules->data.sequence.items.start[i]), "on");
        if (on && on->type == YAML_SCALAR_NODE)
            check_on_name(x, p, on, i);
        else if (on && on->type == YAML_SEQUENCE_NODE)
            for (size_t k = 0; k < SEQ_ITEMS(on); k++)
                check_on_name(x, p, node(x, on->data.sequence.items.start[k]), i);
    }
}

/* Checks that need the whole document: unique names, `on:` references. */
static void check_names(struct ctx *x, struct fl_policy *p)
{
    /* Rules name listeners and targets in one namespace (`on:`), so a name may
     * be used once across both. */
    for (size_t i = 0; i < p->n_listeners; i++) {
        const struct fl_listener_spec *l = &p->listeners[i];
        for (size_t j = 0; j < i; j++)
            if (l->name && p->listeners[j].name && strcmp(l->name, p->listeners[j].name) == 0)
                err_pos(x, l->line, l->col,
                        "spec.listeners[%zu].name: '%s' is already used by spec.listeners[%zu]; "
                        "names must be unique",
                        i, l->name, j);
    }
    for (size_t i = 0; i < p->n_targets; i++) {
        const struct fl_target_spec *t = &p->targets[i];
        for (size_t j = 0; j < p->n_listeners; j++)
            if (t->name && p->listeners[j].name && strcmp(t->name, p->listeners[j].name) == 0)
                err_pos(x, t->line, t->col,
                        "spec.targets[%zu].name: '%s' is already used by spec.listeners[%zu]; "
                        "names must be unique",
                        i, t->name, j);
        for (size_t j = 0; j < i; j++)
            if (t->name && p->targets[j].name && strcmp(t->name, p->targets[j].name) == 0)
                err_pos(x, t->line, t->col,
                        "spec.targets[%zu].name: '%s' is already used by spec.targets[%zu]; "
                        "names must be unique",
                        i, t->name, j);
    }
    /* An ingress port that is the proxy's own would hand the proxy's
     * listener its own connections. */
    for (size_t i = 0; i < p->n_targets; i++) {
        const struct fl_target_spec *t = &p->targets[i];
        unsigned pp = p->proxy_port ? p->proxy_port : 15001;
        if (t->ingress && t->port == pp)
            err_pos(x, t->line, t->col,
                    "spec.targets[%zu].port: %u is the proxy's own port in the pods "
                    "(spec.proxy_port); set spec.proxy_port to a port the pods do not use",
                    i, pp);
    }
    for (size_t i = 0; i < p->n_rules; i++) {
        const struct fl_rule *r = &p->rules[i];
        for (size_t j = 0; j < i; j++)
            if (r->name && p->rules[j].name && strcmp(r->name, p->rules[j].name) == 0)
                err_pos(x, r->line, r->col,
                        "spec.rules[%zu].name: '%s' is already used by spec.rules[%zu]; names "
                        "must be unique",
                        i, r->name, j);
    }
    check_on(x, p);
}

static void composed_free(struct fl_policy *p)
{
    fl_rule_index_free(p->index);
    for (size_t i = 0; i < p->n_rules; i++) {
        for (size_t k = 0; k < p->rules[i].n_on; k++)
            free(p->rules[i].on[k]);
        free(p->rules[i].on);
    }
    free(p->rules);
    for (size_t i = 0; i < p->n_targets; i++)
        if (p->targets[i].part)
            free(p->targets[i].name); /* a name of our own */
    free(p->targets);
    free(p->listeners);
    for (size_t i = 0; i < p->n_parts; i++)
        fl_policy_unref(p->parts[i]);
    free(p->parts);
    free(p->name);
    free(p->id);
    free(p->file);
    free(p);
}

static void policy_free(struct fl_policy *p)
{
    if (!p)
        return;
    if (p->parts) {
        composed_free(p);
        return;
    }
    free(p->id);
    free(p->ns);
    free(p->created);
    fl_rule_index_free(p->index);
    for (size_t i = 0; i < p->n_rules; i++) {
        struct fl_rule *r = &p->rules[i];
        free(r->name);
        for (size_t k = 0; k < r->n_on; k++)
            free(r->on[k]);
        free(r->on);
        struct fl_match *m = &r->match;
        if (m->path.kind == FL_SM_REGEX)
            regfree(&m->path.re);
        free(m->path.value);
        for (size_t k = 0; k < m->n_headers; k++) {
            free(m->headers[k].name);
            if (m->headers[k].m.kind == FL_SM_REGEX)
                regfree(&m->headers[k].m.re);
            free(m->headers[k].m.value);
        }
        free(m->headers);
        free(m->grpc_service);
        free(m->grpc_method);
        free(r->abort.body);
        free(r->abort.message);
        for (size_t k = 0; k < r->abort.n_headers; k++) {
            free(r->abort.headers[k].name);
            free(r->abort.headers[k].value);
        }
        free(r->abort.headers);
        free(r->modify.body);
        free(r->modify.message);
        for (size_t k = 0; k < r->modify.n_set; k++) {
            free(r->modify.set[k].name);
            free(r->modify.set[k].value);
        }
        free(r->modify.set);
        for (size_t k = 0; k < r->modify.n_remove; k++)
            free(r->modify.remove[k]);
        free(r->modify.remove);
    }
    free(p->rules);
    for (size_t i = 0; i < p->n_listeners; i++) {
        free(p->listeners[i].name);
        free(p->listeners[i].listen);
        free(p->listeners[i].upstream);
    }
    free(p->listeners);
    for (size_t i = 0; i < p->n_targets; i++) {
        free(p->targets[i].name);
        for (size_t k = 0; k < p->targets[i].n_cgroups; k++)
            free(p->targets[i].cgroups[k]);
        free(p->targets[i].cgroups);
        fl_selector_free(p->targets[i].selector);
        free(p->targets[i].svc_ns);
        free(p->targets[i].svc_name);
    }
    free(p->targets);
    free(p->name);
    free(p->file);
    free(p);
}

/* A second document ("---") would be silently ignored by yaml_parser_load;
 * the user most likely meant it to count. */
static void check_single_document(struct ctx *x, yaml_parser_t *parser)
{
    yaml_document_t next;
    if (!yaml_parser_load(parser, &next)) {
        err_pos(x, (int)parser->problem_mark.line + 1, (int)parser->problem_mark.column + 1,
                "YAML syntax error: %s%s%s", parser->problem ? parser->problem : "unknown problem",
                parser->context ? " " : "", parser->context ? parser->context : "");
        return;
    }
    yaml_node_t *root = yaml_document_get_root_node(&next);
    if (root)
        err_at(x, root, "a policy file holds one YAML document; remove the '---' and what "
                        "follows, or put it in its own file");
    yaml_document_delete(&next);
}

/* Names the policy's id and tells its rules and targets whose they are. */
static int set_owner(struct fl_policy *p)
{
    size_t n = strlen(p->name) + (p->ns ? strlen(p->ns) + 1 : 0) + 1;
    if (!(p->id = malloc(n)))
        return -ENOMEM;
    if (p->ns)
        snprintf(p->id, n, "%s/%s", p->ns, p->name);
    else
        snprintf(p->id, n, "%s", p->name);
    for (size_t i = 0; i < p->n_rules; i++) {
        p->rules[i].part = p;
        p->rules[i].policy = p->name;
        p->rules[i].policy_id = p->id;
    }
    for (size_t i = 0; i < p->n_targets; i++)
        p->targets[i].part = p;
    return 0;
}

static int load(const char *name, const char *buf, size_t len, struct fl_policy **out,
                struct fl_policy_errors *errs, int from_api)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    struct ctx x = {.file = name, .doc = &doc, .errs = errs, .no_positions = from_api};
    struct fl_policy *p;
    char msg[1024];

    *out = NULL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    atomic_init(&p->refs, 1);
    p->file = strdup(name);
    p->ttl_ms = FL_DEFAULT_TTL_MS;
    p->max_active_faults = FL_DEFAULT_MAX_ACTIVE_FAULTS;
    p->proxy_port = FL_DEFAULT_PROXY_PORT;

    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(msg, sizeof(msg), "%s:%zu:%zu: YAML syntax error: %s%s%s", name,
                 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                 parser.problem ? parser.problem : "unknown problem",
                 parser.context ? " " : "", parser.context ? parser.context : "");
        add_error(errs, msg);
        yaml_parser_delete(&parser);
        policy_free(p);
        return -EINVAL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        err_pos(&x, 1, 1, "the file is empty; a policy starts with 'apiVersion: faultline/v1'");
    } else if (expect_map(&x, root, "policy")) {
        /* metadata.namespace makes it a resource, whatever the order of keys. */
        yaml_node_t *nsn = map_get(&x, map_get(&x, root, "metadata"), "namespace");
        x.res_ns = nsn ? scalar(nsn) : NULL;
        x.resource = x.res_ns != NULL;
        if (from_api && !x.resource)
            err_pos(&x, 1, 1, "metadata.namespace: missing; a FaultPolicy resource lives in a "
                              "namespace");
        walk_map(&x, root, "policy", top_keys, top_pair, p);
        static const char *const req[] = {"apiVersion", "kind", "metadata", "spec", NULL};
        require_keys(&x, root, "policy", req);
        check_names(&x, p);
        yaml_node_t *spec = map_get(&x, root, "spec");
        /* Reported once, also for `listeners: []`: either way nothing would be proxied. */
        if (spec && spec->type == YAML_MAPPING_NODE && p->n_listeners == 0 &&
            p->n_targets == 0 && x.n_errors == 0) {
            err_at(&x, spec, "spec: give 'listeners' (explicit mode) or 'targets' (transparent "
                             "mode); without either nothing is proxied");
        }
    }
    if (root)
        check_single_document(&x, &parser);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (x.n_errors) {
        if (!from_api)
            sort_errors(errs, name);
        policy_free(p);
        return -EINVAL;
    }
    if (set_owner(p) < 0 || fl_rule_index_build(p) < 0) {
        policy_free(p);
        return -ENOMEM;
    }
    *out = p;
    return 0;
}

#define MAX_POLICY_BYTES (16u << 20)

int fl_policy_load_buf(const char *name, const char *buf, size_t len, struct fl_policy **out,
                       struct fl_policy_errors *errs)
{
    return load(name, buf, len, out, errs, 0);
}

int fl_policy_load_resource(const char *name, const char *json, size_t len,
                            struct fl_policy **out, struct fl_policy_errors *errs)
{
    return load(name, json, len, out, errs, 1);
}

int fl_policy_load(const char *path, struct fl_policy **out, struct fl_policy_errors *errs)
{
    char msg[1024];
    char *buf;
    size_t len;

    *out = NULL;
    int e = fl_file_read(path, MAX_POLICY_BYTES, &buf, &len);
    if (e == -EFBIG) {
        snprintf(msg, sizeof(msg), "%s: the file is larger than 16 MiB; is it a policy?", path);
        add_error(errs, msg);
        return e;
    }
    if (e == -ENOMEM)
        return e;
    if (e < 0) {
        snprintf(msg, sizeof(msg), "%s: cannot read: %s; check the path", path, strerror(-e));
        add_error(errs, msg);
        return e;
    }
    e = fl_policy_load_buf(path, buf, len, out, errs);
    free(buf);
    return e;
}

struct fl_policy *fl_policy_ref(struct fl_policy *p)
{
    if (p)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void fl_policy_unref(struct fl_policy *p)
{
    if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        policy_free(p);
}

static int str_equal(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

int fl_policy_needs_kubernetes(const struct fl_policy *p)
{
    for (size_t i = 0; i < p->n_targets; i++)
        if (p->targets[i].selector || p->targets[i].svc_name)
            return 1;
    return 0;
}

int fl_policy_target_equal(const struct fl_target_spec *a, const struct fl_target_spec *b)
{
    if (!fl_selector_equal(a->selector, b->selector) || !str_equal(a->svc_ns, b->svc_ns) ||
        !str_equal(a->svc_name, b->svc_name))
        return 0;
    if (a->ingress != b->ingress || a->existing_reset != b->existing_reset ||
        a->from.family != b->from.family || a->from.prefix != b->from.prefix ||
        memcmp(a->from.addr, b->from.addr, sizeof(a->from.addr)))
        return 0;
    if (a->port != b->port || a->n_cgroups != b->n_cgroups || a->dst.family != b->dst.family ||
        a->dst.prefix != b->dst.prefix || memcmp(a->dst.addr, b->dst.addr, sizeof(a->dst.addr)))
        return 0;
    for (size_t i = 0; i < a->n_cgroups; i++)
        if (strcmp(a->cgroups[i], b->cgroups[i]) != 0)
            return 0;
    return 1;
}

struct fl_rule *fl_policy_find_rule(const struct fl_policy *p, const char *name)
{
    return fl_policy_find_rule2(p, name, NULL);
}

/* Does rule r's policy answer to pol (its id, or its name)? */
static int policy_is(const struct fl_rule *r, const char *pol, size_t n)
{
    if (r->policy_id && strlen(r->policy_id) == n && memcmp(r->policy_id, pol, n) == 0)
        return 1;
    return r->policy && strlen(r->policy) == n && memcmp(r->policy, pol, n) == 0;
}

struct fl_rule *fl_policy_find_rule2(const struct fl_policy *p, const char *name, int *ambiguous)
{
    const char *slash = strrchr(name, '/');
    const char *rule = slash ? slash + 1 : name;
    struct fl_rule *found = NULL;
    int n = 0;

    if (ambiguous)
        *ambiguous = 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        struct fl_rule *r = &p->rules[i];
        if (!r->name || strcmp(r->name, rule) != 0)
            continue;
        if (slash && !policy_is(r, name, (size_t)(slash - name)))
            continue;
        if (found && found->part == r->part)
            continue; /* one policy holds a name once */
        if (!found)
            found = r;
        n++;
    }
    if (n > 1) {
        if (ambiguous)
            *ambiguous = 1;
        return NULL;
    }
    return found;
}

const char *fl_policy_rule_label(const struct fl_policy *p, const struct fl_rule *r, char *buf,
                                 size_t len)
{
    if (p->n_parts <= 1 || !r->policy_id)
        snprintf(buf, len, "%s", r->name);
    else
        snprintf(buf, len, "%s/%s", r->policy_id, r->name);
    return buf;
}

struct fl_policy *fl_policy_empty(const char *name)
{
    struct fl_policy *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    p->file = strdup("<none>");
    p->name = strdup(name);
    p->ttl_ms = 0;
    p->max_active_faults = FL_DEFAULT_MAX_ACTIVE_FAULTS;
    p->proxy_port = FL_DEFAULT_PROXY_PORT;
    if (!p->file || !p->name || set_owner(p) < 0 || fl_rule_index_build(p) < 0) {
        policy_free(p);
        return NULL;
    }
    return p;
}

/* The name rule on-name nm of part q has in the composed set: the file's
 * keep theirs. */
static char *qualified(const struct fl_policy *q, const struct fl_policy *file, const char *nm)
{
    if (q == file || !q->id)
        return strdup(nm);
    size_t n = strlen(q->id) + strlen(nm) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", q->id, nm);
    return s;
}

static int compose_rule(struct fl_rule *r, const struct fl_rule *src, const struct fl_policy *q,
                        const struct fl_policy *file, uint64_t deadline)
{
    memcpy(r, src, sizeof(*r));
    r->deadline_ms = deadline;
    atomic_init(&r->live.enabled, atomic_load(&src->live.enabled));
    for (int k = 0; k < FL_FAULT_KINDS; k++)
        atomic_init(&r->live.ppm[k], atomic_load(&src->live.ppm[k]));
    atomic_init(&r->live.delay_fixed_ms, atomic_load(&src->live.delay_fixed_ms));
    atomic_init(&r->live.abort_status, atomic_load(&src->live.abort_status));
    atomic_init(&r->live.matched, atomic_load(&src->live.matched));
    for (int k = 0; k < FL_FAULT_KINDS; k++)
        atomic_init(&r->live.injected[k], atomic_load(&src->live.injected[k]));
    /* `on` made explicit: everything of its own policy when it named nothing. */
    size_t n = src->n_on ? src->n_on : q->n_listeners + q->n_targets;
    r->on = calloc(n + 1, sizeof(*r->on));
    r->n_on = 0;
    if (!r->on)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *nm = src->n_on                 ? src->on[i]
                         : i < q->n_listeners      ? q->listeners[i].name
                                                   : q->targets[i - q->n_listeners].name;
        int is_listener = 0;
        for (size_t k = 0; k < q->n_listeners; k++)
            is_listener |= strcmp(q->listeners[k].name, nm) == 0;
        if (!(r->on[r->n_on] = is_listener ? strdup(nm) : qualified(q, file, nm)))
            return -ENOMEM;
        r->n_on++;
    }
    if (r->n_on == 0) {
        /* A policy of nothing: a name no scope has, so the rule never acts. */
        if (!(r->on[0] = strdup("\x01none")))
            return -ENOMEM;
        r->n_on = 1;
    }
    return 0;
}

int fl_policy_compose(struct fl_policy *const *parts, const uint64_t *deadlines, size_t n,
                      int has_file, struct fl_policy **out)
{
    const struct fl_policy *file = has_file && n ? parts[0] : NULL;
    size_t nr = 0, nt = 0, nl = 0;

    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        nr += parts[i]->n_rules;
        nt += parts[i]->n_targets;
        nl += parts[i]->n_listeners; /* the file's, and the Toxiproxy API's */
    }
    if (n == 1 && file) {
        *out = fl_policy_ref(parts[0]);
        return 0;
    }
    struct fl_policy *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    atomic_init(&p->refs, 1);
    p->parts = calloc(n + 1, sizeof(*p->parts));
    p->rules = calloc(nr + 1, sizeof(*p->rules));
    p->targets = calloc(nt + 1, sizeof(*p->targets));
    p->listeners = calloc(nl + 1, sizeof(*p->listeners));
    p->name = strdup(file ? file->name : n == 1 ? parts[0]->name : "(set)");
    p->id = strdup(file ? file->id : n == 1 ? parts[0]->id : "(set)");
    p->file = strdup(file ? file->file : n == 1 ? parts[0]->file : "<kubernetes>");
    if (!p->parts || !p->rules || !p->targets || !p->listeners || !p->name || !p->id || !p->file)
        goto nomem;
    p->max_active_faults = file ? file->max_active_faults : FL_DEFAULT_MAX_ACTIVE_FAULTS;
    p->proxy_port = FL_DEFAULT_PROXY_PORT;
    if (file) {
        p->has_seed = file->has_seed;
        p->seed = file->seed;
        p->proxy_port = file->proxy_port;
    }
    int port_set = file && file->n_targets;
    for (size_t i = 0; i < n; i++) {
        struct fl_policy *q = parts[i];
        p->parts[p->n_parts++] = fl_policy_ref(q);
        if (!file && q->max_active_faults < p->max_active_faults)
            p->max_active_faults = q->max_active_faults;
        if (!port_set && q->n_targets) {
            p->proxy_port = q->proxy_port;
            port_set = 1;
        }
        for (size_t k = 0; k < q->n_listeners; k++)
            p->listeners[p->n_listeners++] = q->listeners[k];
        for (size_t k = 0; k < q->n_targets; k++) {
            struct fl_target_spec *t = &p->targets[p->n_targets];
            *t = q->targets[k];
            if (!(t->name = qualified(q, file, q->targets[k].name))) {
                t->part = NULL; /* nothing of ours to free */
                goto nomem;
            }
            p->n_targets++;
        }
        for (size_t k = 0; k < q->n_rules; k++)
            if (compose_rule(&p->rules[p->n_rules++], &q->rules[k], q, file,
                             deadlines ? deadlines[i] : 0) < 0)
                goto nomem;
    }
    if (fl_rule_index_build(p) < 0)
        goto nomem;
    *out = p;
    return 0;
nomem:
    if (!p->parts) {
        free(p->rules);
        free(p->targets);
        free(p->listeners);
        free(p->name);
        free(p->id);
        free(p->file);
        free(p);
    } else {
        composed_free(p);
    }
    return -ENOMEM;
}

int fl_policy_rule_abort_status(const struct fl_rule *r)
{
    int live = atomic_load_explicit(&((struct fl_rule *)r)->live.abort_status, memory_order_relaxed);
    if (live)
        return live;
    return r->abort.status ? r->abort.status : 503;
}

int fl_policy_rule_applies_to(const struct fl_rule *r, const char *scope)
{
    if (r->n_on == 0)
        return 1;
    for (size_t i = 0; i < r->n_on; i++)
        if (strcmp(r->on[i], scope) == 0)
            return 1;
    return 0;
}

int fl_policy_rule_has_kind(const struct fl_rule *r, enum fl_fault_kind k)
{
    switch (k) {
    case FL_FAULT_DELAY: return r->delay.enabled;
    case FL_FAULT_ABORT: return r->abort.enabled;
    case FL_FAULT_RESET: return r->reset.enabled;
    case FL_FAULT_RESPONSE_DELAY: return r->response_delay.enabled;
    case FL_FAULT_MODIFY: return r->modify.enabled;
    case FL_FAULT_TRUNCATE: return r->truncate.enabled;
    case FL_FAULT_BANDWIDTH: return r->bandwidth.enabled;
    case FL_FAULT_CONNECTION: return r->connection.enabled;
    }
    return 0;
}

uint32_t fl_policy_rule_file_ppm(const struct fl_rule *r, enum fl_fault_kind k)
{
    switch (k) {
    case FL_FAULT_DELAY: return r->delay.ppm;
    case FL_FAULT_ABORT: return r->abort.ppm;
    case FL_FAULT_RESET: return r->reset.ppm;
    case FL_FAULT_RESPONSE_DELAY: return r->response_delay.ppm;
    case FL_FAULT_MODIFY: return r->modify.ppm;
    case FL_FAULT_TRUNCATE: return r->truncate.ppm;
    case FL_FAULT_BANDWIDTH: return r->bandwidth.ppm;
    case FL_FAULT_CONNECTION: return r->connection.ppm;
    }
    return 0;
}

atomic_uint *fl_policy_rule_live_ppm(struct fl_rule *r, enum fl_fault_kind k)
{
    return &r->live.ppm[k];
}

uint32_t fl_policy_rule_ppm(const struct fl_rule *r, enum fl_fault_kind k)
{
    uint32_t v = atomic_load_explicit(fl_policy_rule_live_ppm((struct fl_rule *)r, k),
                                      memory_order_relaxed);
    return v == UINT32_MAX ? fl_policy_rule_file_ppm(r, k) : v;
}
