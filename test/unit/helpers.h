/* Helpers shared by the unit tests. */
#ifndef FL_UNIT_HELPERS_H
#define FL_UNIT_HELPERS_H

#include "policy.h"

/* The head of a valid policy with one listener "l1" and one target "t1"; a
 * test appends "  rules:\n..." (two-space indent under spec). */
#define UNIT_POLICY_HEAD                                                                           \
    "apiVersion: faultline/v1\n"                                                                   \
    "kind: FaultPolicy\n"                                                                          \
    "metadata: {name: unit}\n"                                                                     \
    "spec:\n"                                                                                      \
    "  listeners:\n"                                                                               \
    "    - {name: l1, listen: \"127.0.0.1:15000\", upstream: \"127.0.0.1:8080\"}\n"              \
    "  targets:\n"                                                                                 \
    "    - name: t1\n"                                                                             \
    "      pods: {cgroup: /sys/fs/cgroup/unit}\n"                                                  \
    "      destination: {cidr: 10.77.0.0/16, port: 8080}\n"

/* Loads yaml (must be valid: on errors prints them and fails the case).
 * The caller drops the returned reference with fl_policy_unref. */
struct fl_policy *unit_load(const char *yaml);

/* Loads yaml that must fail; returns the errors (caller frees) and fails the
 * case if it loaded. */
struct fl_policy_errors unit_load_fail(const char *yaml);

/* 1 if any message in errs contains needle. */
int unit_errors_contain(const struct fl_policy_errors *errs, const char *needle);

#endif
