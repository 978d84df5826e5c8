/* experiment: `faultctl run EXPERIMENT.yaml`, a resilience experiment for CI.
 *
 * An experiment names a fault policy (a path, relative to the experiment file,
 * or inline), a duration, probes (HTTP or a command) and a tolerance:
 *
 *   name: orders-survive-slow-backend
 *   policy: policies/slow-orders.yaml
 *   duration: 10s
 *   tolerance: 10%        # share of probe checks that may fail under the fault
 *   probes:
 *     - name: orders
 *       http: {url: "http://127.0.0.1:15000/orders", expect_status: 200, max_latency_ms: 500}
 *       interval: 500ms
 *     - name: backend-alive
 *       command: {cmd: "curl -fsS http://127.0.0.1:8080/health", expect_exit: 0}
 *
 * Steady state (every probe passes once) is checked first; then the policy is
 * applied for the duration while the probes run; then the policy in force
 * before is restored (always: after a failure, a halt, SIGINT or SIGTERM too)
 * and steady state is checked again, so the system must also recover.
 */
#ifndef FL_EXPERIMENT_H
#define FL_EXPERIMENT_H

enum {
    FL_EXP_PASSED = 0,
    FL_EXP_ERROR = 1,
    FL_EXP_UNREACHABLE = 3,
    FL_EXP_STEADY_BEFORE = 10, /* steady state failed before injection: nothing injected */
    FL_EXP_DEVIATED = 11,      /* probes failed beyond tolerance under the fault, or after */
    FL_EXP_HALTED = 12,        /* injection was halted during the run */
    FL_EXP_ROLLBACK = 13,      /* the previous policy could not be restored */
};

/* Runs the experiment in file against the daemon at admin_path. Progress goes
 * to stdout (a JSON summary instead when json is set); with junit a JUnit XML
 * report is written there. Blocking; returns one of the codes above. */
int fl_experiment_run(const char *file, const char *admin_path, const char *junit, int json);

#endif
