/* daemon: the running faultline process: workers, the current policy, signals,
 * reloads and graceful shutdown. The admin API drives it through these calls;
 * all of them run on the main loop's thread. */
#ifndef FL_DAEMON_H
#define FL_DAEMON_H

#include <stddef.h>
#include <uv.h>

#include "policy.h"

#define FL_DRAIN_MS 10000 /* graceful shutdown waits this long for in-flight requests */

struct fl_daemon_opts {
    const char *policy_path;
    const char *admin_path; /* NULL: default per DESIGN.md 3.2 */
    const char *fault_log;  /* NULL or "-": stdout */
    const char *metrics_listen; /* NULL, or ADDR:PORT serving only /metrics */
    int workers;
    int no_sockmap;
    uint64_t header_timeout_ms; /* 0: the default */
    uint64_t idle_timeout_ms;   /* 0: the default */
};

/* Runs the daemon until SIGTERM/SIGINT. Returns the process exit status:
 * 0 after a clean shutdown, 1 when the policy or a listener cannot be set up,
 * 2 when transparent-mode requirements are missing. */
int fl_daemon_run(const struct fl_daemon_opts *o);

struct fl_conn_handoff;
/* Serves an accepted connection on worker n modulo the number of workers
 * (worker 0: now, on this thread; another: on its thread, soon). Called on
 * the main thread; consumes h. Returns 0 or a negative errno. */
int fl_daemon_handoff(unsigned n, struct fl_conn_handoff *h) __attribute__((warn_unused_result));

/* The main loop (for modules such as admin that attach handles to it). */
uv_loop_t *fl_daemon_loop(void);

/* The policy in force (borrowed; valid until the next apply). */
struct fl_policy *fl_daemon_policy(void);

/* Can this build run p (transparent mode, listeners)? Returns 0, or -ENOTSUP /
 * -EINVAL with err saying why and what to do. Every way in (startup, SIGHUP,
 * the admin API) asks before applying. */
int fl_daemon_check(const struct fl_policy *p, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Makes p the policy in force on every worker, atomically: listeners are
 * opened first and nothing changes when that fails (err says why). Takes a
 * reference of its own. Returns 0 or a negative errno. */
int fl_daemon_apply(struct fl_policy *p, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Worker threads running, and client connections open across all of them. */
int fl_daemon_workers(void);
unsigned long fl_daemon_active_connections(void);
/* The open client connections of worker i (0 <= i < fl_daemon_workers()). */
unsigned long fl_daemon_worker_connections(int i);

/* Halts or resumes all injection; reason is logged. */
void fl_daemon_halt(const char *reason);
void fl_daemon_resume(void);

/* Called with each non-fault event line (reload, halt, expiry, rule change) as
 * JSON; the admin API streams them. */
extern void (*fl_daemon_event_tap)(const char *json, size_t len);
void fl_daemon_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
