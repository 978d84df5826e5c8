/* toxic: connection faults (Toxiproxy's toxics) on one connection's bytes.
 *
 * A toxic sits below the protocol handlers: every write toward a side goes
 * through fl_conn_write(), which hands it here while a toxic acts on that
 * direction (or bytes it held are still queued, so order is kept). Bytes are
 * held as chunk references, counted in the connection's backlog so that
 * backpressure stops reading the other side instead of buffering: a slow
 * toxic slows the sender, it never grows memory past the high-water mark.
 *
 * The fault lasts while its rule does: fl_tox_check() ends it (everything
 * held is released at once, in order) when the daemon is halted, the rule
 * is disabled, its TTL passes or a policy without it is applied.
 */
#ifndef FL_TOXIC_H
#define FL_TOXIC_H

#include "compiler.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "chunk.h"
#include "policy.h"

struct fl_conn;
struct fl_tox;

/* Rolls the dice of the first rule of c's policy that applies to c's scope
 * and has connection faults without a match, and starts them when they hit
 * (logging the fault). Called once, as the connection is accepted. */
void fl_tox_accept(struct fl_conn *c);

/* A request decided by rule r (which may be NULL): when r has connection
 * faults and this connection has not rolled for them yet, rolls and maybe
 * starts them. rq is the request, for the log line. */
struct fl_request;
void fl_tox_on_request(struct fl_conn *c, const struct fl_rule *r, const struct fl_request *rq);

/* A request's bandwidth fault: the bytes written toward side from now on
 * are throttled to rate bytes/s (0: those written from now on are not).
 * Returns 0 or -ENOMEM. */
int fl_tox_set_rate(struct fl_conn *c, int side, uint64_t rate) FL_WUR;

/* Does a write toward side go through the toxic? */
int fl_tox_intercepts(const struct fl_conn *c, int side);
/* Takes a write toward side (as fl_conn_write). Returns 0 or a negative errno. */
int fl_tox_write(struct fl_conn *c, int side, struct fl_chunk *ch, const char *p, size_t len);
/* A FIN toward side: sent once what is held has gone (and slow_close). */
void fl_tox_shutdown(struct fl_conn *c, int side);
/* What the toxic holds toward side: bytes (plus one for a held FIN), and the
 * chunk memory it pins. */
size_t fl_tox_queued(const struct fl_conn *c, int side);
size_t fl_tox_pinned(const struct fl_conn *c, int side);
/* The connection's writes toward side completed down to an empty queue. */
void fl_tox_flushed(struct fl_conn *c, int side);

/* A new snapshot: connection-fault rules without match that c has not rolled
 * for yet (added or changed since it was accepted) roll for it now, so a
 * toxic added to a Toxiproxy proxy reaches its open connections. */
void fl_tox_reroll(struct fl_conn *c);

/* Ends the fault on c when its rule is no longer in force. */
void fl_tox_check(struct fl_conn *c);

/* conn.c: the toxic's timer is closed with the connection, then freed. */
/* Returns 1 when a handle close was started (closed runs for it), else 0. */
int fl_tox_close(struct fl_conn *c, uv_close_cb closed);
void fl_tox_free(struct fl_tox *t);

#endif
