/* selector: Kubernetes label selectors (matchLabels, matchExpressions) with
 * the API's semantics, for `pods.selector` in a target.
 *
 * A selector is the AND of its requirements; one without requirements
 * selects everything in its namespace. matchLabels {k: v} is the requirement
 * k In [v]. In: the label is present with one of the values; NotIn: the label
 * is absent or has none of them; Exists: present; DoesNotExist: absent.
 * Pure functions, any thread.
 */
#ifndef FL_SELECTOR_H
#define FL_SELECTOR_H

#include <stddef.h>

#include "compiler.h"

enum fl_sel_op { FL_SEL_IN, FL_SEL_NOT_IN, FL_SEL_EXISTS, FL_SEL_DOES_NOT_EXIST };

struct fl_sel_req {
    char *key;
    enum fl_sel_op op;
    char **values; /* In and NotIn: one or more; Exists and DoesNotExist: none */
    size_t n_values;
};

struct fl_selector {
    char *ns; /* the namespace the pods are in */
    struct fl_sel_req *reqs;
    size_t n_reqs;
};

/* One label of an object. */
struct fl_label {
    const char *key;
    const char *value;
};

/* 1 when the labels satisfy every requirement of s (the namespace is the
 * caller's to compare). */
int fl_selector_matches(const struct fl_selector *s, const struct fl_label *labels, size_t n);

/* "In", "NotIn", "Exists", "DoesNotExist" (as the API spells them) into *op.
 * Returns 0 or -EINVAL. */
int fl_selector_op_parse(const char *s, enum fl_sel_op *op) FL_WUR;
const char *fl_selector_op_name(enum fl_sel_op op);

/* NULL when key is a valid label key ([prefix/]name: a DNS subdomain of at
 * most 253 characters, a name of 1-63 alphanumerics with -_. inside), else
 * what is wrong with it. */
const char *fl_selector_key_error(const char *key);
/* The same for a label value (empty, or 1-63 alphanumerics with -_. inside). */
const char *fl_selector_value_error(const char *value);

/* 1 when a and b select the same pods. */
int fl_selector_equal(const struct fl_selector *a, const struct fl_selector *b);

/* Frees what s holds and s itself. Accepts NULL. */
void fl_selector_free(struct fl_selector *s);

#endif
