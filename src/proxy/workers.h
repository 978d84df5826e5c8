/* workers: the proxy's set of workers and the threads they run on.
 *
 * Worker 0 runs on the main loop, the caller's, beside the admin API and the
 * signal handlers; workers 1..n-1 each run a loop of their own on a thread of
 * their own, sharing the explicit listeners' ports through SO_REUSEPORT. The
 * main thread hands the other workers work (a policy to adopt, a connection
 * to serve, drain, close) through a mutex-guarded mailbox and a uv_async.
 *
 * Every call here runs on the main loop's thread, except the connection
 * counts, which any thread may read.
 */
#ifndef FL_WORKERS_H
#define FL_WORKERS_H

#include <stddef.h>
#include <uv.h>

#include "compiler.h"
#include "conn.h"
#include "policy.h"
#include "worker.h"

#define FL_WORKERS_MAX 64

/* Sets up worker 0 on loop. Returns 0 or a negative errno with err saying
 * what to do. */
int fl_workers_init(uv_loop_t *loop, char *err, size_t errlen) FL_WUR;

/* Worker 0 (the main loop's): transparent mode accepts there. */
struct fl_worker *fl_workers_main(void);

/* Makes p the policy of every worker. Worker 0's listeners are reconciled
 * first, all or nothing: when a socket cannot be opened nothing changes, err
 * says why, and a negative errno is returned. Then the other workers are told
 * to adopt p and reconcile theirs. Takes references of its own. */
int fl_workers_apply(struct fl_policy *p, char *err, size_t errlen) FL_WUR;

/* Every worker looks again at its connections' faults (toxic.h) and ends
 * those whose rule is no longer in force: after a halt or a rule disabled.
 * Main thread. */
void fl_workers_recheck(void);

/* Every worker closes the connections that came in through the listener or
 * target named scope (a Toxiproxy proxy disabled, changed or deleted).
 * Main thread. */
void fl_workers_close_scope(const char *scope);

/* Starts workers 1..n-1 (n at most FL_WORKERS_MAX) with p, the policy in
 * force, after re-opening worker 0's listeners with SO_REUSEPORT so they can
 * share the ports. n <= 1 does nothing. Returns 0 or a negative errno with err
 * set. */
int fl_workers_spawn(int n, struct fl_policy *p, char *err, size_t errlen) FL_WUR;

/* Serves an accepted connection on worker n modulo the number of workers
 * (worker 0: now, on this thread; another: on its thread, soon). Consumes h.
 * Returns 0 or a negative errno. */
int fl_workers_handoff(unsigned n, struct fl_conn_handoff *h) FL_WUR;

/* Workers running, and client connections open on worker i and on all. */
int fl_workers_count(void);
unsigned long fl_workers_connections(int i);
unsigned long fl_workers_active_connections(void);

/* Graceful shutdown: every worker closes its listeners and drains its
 * connections (fl_conn_drain_all). Idempotent. */
void fl_workers_drain(void);

/* 1 once every worker has drained and has no connection left. */
int fl_workers_empty(void);

/* Closes every connection of every worker now (the drain deadline passed). */
void fl_workers_close_all(void);

/* Ends the workers: closes what fl_workers_drain did not, joins the threads
 * and frees them, and closes worker 0's handles. The caller then runs the main
 * loop until its handles are closed and calls fl_workers_fini(). */
void fl_workers_stop(void);

/* Writes out worker 0's fault-log buffer (blocking) and frees worker 0. */
void fl_workers_fini(void);

#endif
