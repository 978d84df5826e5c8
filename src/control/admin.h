/* admin: the admin API's endpoints (docs/reference.md, "Admin API"),
 * HTTP/1.1 + JSON on a unix socket, served on the daemon's main loop by
 * admin_http.h. faultctl is its client. The endpoints read and drive the
 * runtime (runtime.h); the JSON views of a policy are policy_json.h's and the
 * Prometheus text is metrics.h's.
 *
 * Besides the endpoints it owns two game-day duties: the HALT file beside the
 * socket (injection stays halted while it exists), and the event stream, which
 * carries fault lines from the workers and the runtime's events (halt,
 * resume, rule changes, applies, expiry) to every GET /v1/events subscriber.
 *
 * An endpoint beyond the fixed interface, used by `faultctl run`:
 *   POST /v1/policy/rollback {"generation": G}  re-applies a snapshot the daemon
 *   still holds (the last FL_RUNTIME_HISTORY policies); generations come from
 *   GET /v1/status and PUT /v1/policy.
 */
#ifndef FL_ADMIN_H
#define FL_ADMIN_H

#include <stddef.h>
#include <uv.h>

#include "compiler.h"

/* Opens the admin socket at path (NULL: fl_paths_admin_socket()) and, if
 * metrics_listen is not NULL, a TCP listener at ADDR:PORT serving only
 * /metrics. Creates the socket's directory, removes a stale socket file, and
 * refuses (-EADDRINUSE) when another daemon answers on it. The socket is mode
 * 0600. Blocking (a connect probe and a bind): call before the loop runs.
 * Returns 0 or a negative errno with err holding one line saying what to do. */
int fl_admin_start(uv_loop_t *loop, const char *path, const char *metrics_listen, char *err,
                   size_t errlen) FL_WUR;

/* Closes the listeners and every client (event streams end), removes the
 * socket file, stops following the HALT file and the runtime's events.
 * Idempotent; safe when fl_admin_start failed or never ran. */
void fl_admin_stop(void);

#endif
