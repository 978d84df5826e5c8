/* toxiproxy: Toxiproxy's HTTP API (faultline run --toxiproxy-listen), so the
 * Toxiproxy clients and CLIs people already use drive faultline unchanged.
 *
 * A proxy is an explicit-mode listener and a toxic a connection fault (or,
 * for the added types http_abort, http_delay and grpc_abort, a per-request
 * fault) of a policy of its own named "toxiproxy", composed with the file's
 * and shown by faultctl like any other. Every change is applied as a whole
 * new policy (parsed on the thread pool, then installed on the loop): a
 * change that cannot be applied (a listen address in use) changes nothing
 * and is answered 500, as Toxiproxy does.
 */
#ifndef FL_TOXIPROXY_H
#define FL_TOXIPROXY_H

#include <uv.h>

#include "compiler.h"

/* The version /version reports: the Toxiproxy API faultline follows. */
#define FL_TOXIPROXY_API_VERSION "2.12.0"

/* Serves the API on addr (ADDR:PORT) through the admin HTTP server, which
 * must be started. Returns 0 or a negative errno with err saying what to do. */
int fl_toxiproxy_start(uv_loop_t *loop, const char *addr, char *err, size_t errlen) FL_WUR;

/* Drops the state (the daemon is stopping; the listeners go with the workers). */
void fl_toxiproxy_stop(void);

#endif
