/* selector: see selector.h. */
#include "selector.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *label_of(const struct fl_label *labels, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(labels[i].key, key) == 0)
            return labels[i].value ? labels[i].value : "";
    return NULL;
}

static int in_values(const struct fl_sel_req *r, const char *v)
{
    for (size_t i = 0; i < r->n_values; i++)
        if (strcmp(r->values[i], v) == 0)
            return 1;
    return 0;
}

int fl_selector_matches(const struct fl_selector *s, const struct fl_label *labels, size_t n)
{
    for (size_t i = 0; i < s->n_reqs; i++) {
        const struct fl_sel_req *r = &s->reqs[i];
        const char *v = label_of(labels, n, r->key);
        switch (r->op) {
        case FL_SEL_IN:
            if (!v || !in_values(r, v))
                return 0;
            break;
        case FL_SEL_NOT_IN:
            if (v && in_values(r, v))
                return 0;
            break;
        case FL_SEL_EXISTS:
            if (!v)
                return 0;
            break;
        case FL_SEL_DOES_NOT_EXIST:
            if (v)
                return 0;
            break;
        }
    }
    return 1;
}

static const char *const op_names[] = {"In", "NotIn", "Exists", "DoesNotExist"};

int fl_selector_op_parse(const char *s, enum fl_sel_op *op)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, op_names[i]) == 0) {
            *op = (enum fl_sel_op)i;
            return 0;
        }
    return -EINVAL;
}

const char *fl_selector_op_name(enum fl_sel_op op)
{
    return (unsigned)op < 4 ? op_names[op] : "?";
}

/* A name part: 1-63 characters, alphanumeric at both ends, -_. inside. */
static const char *name_error(const char *s, size_t n)
{
    if (n == 0)
        return "the name part is empty";
    if (n > 63)
        return "the name part is longer than 63 characters";
    if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return "it must begin and end with a letter or digit";
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return "only letters, digits, '-', '_' and '.' are allowed";
    return NULL;
}

/* A DNS subdomain: lowercase labels of [a-z0-9-] joined by dots, 253 at most. */
static const char *prefix_error(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return "the prefix before '/' must be a DNS subdomain of 1-253 characters";
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') {
            if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
                return "the prefix before '/' must be a lowercase DNS subdomain (e.g. "
                       "app.kubernetes.io)";
            continue;
        }
        if (i == start || s[start] == '-' || s[i - 1] == '-')
            return "the prefix before '/' must be a lowercase DNS subdomain (e.g. "
                   "app.kubernetes.io)";
        start = i + 1;
    }
    return NULL;
}

const char *fl_selector_key_error(const char *key)
{
    const char *slash = strchr(key, '/');
    if (slash) {
        const char *e = prefix_error(key, (size_t)(slash - key));
        if (e)
            return e;
        key = slash + 1;
    }
    return name_error(key, strlen(key));
}

const char *fl_selector_value_error(const char *value)
{
    size_t n = strlen(value);
    return n == 0 ? NULL : name_error(value, n);
}

static int req_equal(const struct fl_sel_req *a, const struct fl_sel_req *b)
{
    if (a->op != b->op || strcmp(a->key, b->key) != 0 || a->n_values != b->n_values)
        return 0;
    for (size_t i = 0; i < a->n_values; i++)
        if (strcmp(a->values[i], b->values[i]) != 0)
            return 0;
    return 1;
}

int fl_selector_equal(const struct fl_selector *a, const struct fl_selector *b)
{
    if (!a || !b)
        return a == b;
    if (strcmp(a->ns ? a->ns : "", b->ns ? b->ns : "") != 0 || a->n_reqs != b->n_reqs)
        return 0;
    for (size_t i = 0; i < a->n_reqs; i++)
        if (!req_equal(&a->reqs[i], &b->reqs[i]))
            return 0;
    return 1;
}

void fl_selector_free(struct fl_selector *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_reqs; i++) {
        free(s->reqs[i].key);
        for (size_t k = 0; k < s->reqs[i].n_values; k++)
            free(s->reqs[i].values[k]);
        free(s->reqs[i].values);
    }
    free(s->reqs);
    free(s->ns);
    free(s);
}
