/* conn: one proxied connection, owning both sockets, timers and protocol state.
 *
 * A connection has two sides, the client (accepted) and the upstream (dialled
 * lazily, when the protocol first has bytes to send, so an aborted request never
 * touches the upstream). Bytes move through the protocol handler named by ops;
 * conn.c knows nothing about HTTP. The struct is freed once, after the last
 * handle's close callback.
 */
#ifndef FL_CONN_H
#define FL_CONN_H

#include "compiler.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "chunk.h"
#include "policy.h"
#include "worker.h"

#define FL_CLIENT 0
#define FL_UPSTREAM 1

/* Backlog sizes for backpressure: above HWM the opposite side stops reading,
 * below LWM it resumes. A side's backlog is what its queued writes hold: the
 * bytes, or the read chunks they pin (FL_CHUNK_CAP each), whichever is more,
 * so a queue of many small writes counts the memory it really keeps. Together
 * with FL_CHUNK_CAP they bound a connection's buffered payload to about
 * 2 x (HWM + one chunk). */
#define FL_WQ_HWM (256 * 1024)
#define FL_WQ_LWM (64 * 1024)


struct fl_conn;
struct fl_tox;
struct fl_worker;
struct fl_listener;

/* One table per protocol (raw TCP, HTTP/1.1, HTTP/2). Every callback may close
 * the connection; after fl_conn_close() the conn must not be touched again
 * except through the closing flag. */
struct fl_proto_ops {
    const char *name;
    /* Sets up c->proto. Returns 0 or a negative errno. */
    int (*init)(struct fl_conn *c);
    /* Bytes arrived on side. ch is referenced by the caller for the duration of
     * the call; take a reference (fl_chunk_ref) to keep it. */
    void (*data)(struct fl_conn *c, int side, struct fl_chunk *ch, size_t off, size_t len);
    /* side sent FIN. */
    void (*eof)(struct fl_conn *c, int side);
    /* The upstream could not be reached or failed (negative errno). */
    void (*upstream_error)(struct fl_conn *c, int err);
    /* The write queue toward side fell to zero. */
    void (*drained)(struct fl_conn *c, int side);
    /* Returns 1 when no request is in flight, so a graceful shutdown may close it. */
    int (*idle)(struct fl_conn *c);
    /* Optional: the deadline set with fl_conn_upstream_deadline() passed. */
    void (*upstream_timeout)(struct fl_conn *c);
    /* Optional: graceful shutdown has begun (c->close_when_idle is set). The
     * handler tells the client (HTTP/2 GOAWAY) and closes c once what is in
     * flight is done. Without it, c is closed when idle() says so. */
    void (*drain)(struct fl_conn *c);
    /* Frees c->proto. */
    void (*destroy)(struct fl_conn *c);
};

/* Makes a non-blocking, close-on-exec TCP socket of family for an upstream
 * connection inside the network namespace behind netns_fd (transparent mode:
 * the server then sees the pod's own address). Called on the serving worker's
 * thread; must not block. Returns 0 with *fd set, or a negative errno. */
typedef int (*fl_conn_socket_fn)(int netns_fd, int family, int *fd);

/* Client timeouts, set once before the workers start (faultline run
 * --header-timeout / --idle-timeout): a request head must arrive within the
 * first once it has begun (slowloris; answered 408), and a keep-alive
 * connection with nothing in flight is closed after the second. */
extern uint64_t fl_conn_header_timeout_ms;
extern uint64_t fl_conn_idle_timeout_ms;

/* Upstream timeouts, set the same way (--connect-timeout, default 5 s;
 * --upstream-timeout, default 60 s): dialling the upstream must succeed
 * within the first, and a request sent upstream must get the start of its
 * answer within the second (HTTP/1.1: 504; HTTP/2: 504, gRPC: UNAVAILABLE). */
extern uint64_t fl_conn_connect_timeout_ms;
extern uint64_t fl_conn_upstream_timeout_ms;

struct fl_side {
    uv_tcp_t tcp;
    unsigned open : 1;       /* handle initialised, close pending or not */
    unsigned reading : 1;    /* uv_read_start active */
    unsigned want_read : 1;  /* the protocol wants bytes from this side */
    unsigned eof : 1;        /* FIN received */
    unsigned shut : 1;       /* our FIN sent (uv_shutdown requested) */
    unsigned connecting : 1; /* upstream only */
    unsigned connected : 1;
    unsigned failed : 1; /* a write or read failed */
    size_t pinned;       /* chunk memory held by the queued writes toward this side */
};

struct fl_conn {
    struct fl_worker *w;
    struct fl_conn *prev, *next; /* worker's list */
    struct fl_side s[2];
    uv_timer_t timer;    /* protocol's: timeouts */
    struct fl_hold hold; /* protocol's: the held delay (the worker's queue) */
    uv_timer_t io_timer; /* conn's: upstream connect timeout */
    uv_timer_t up_timer; /* conn's: the protocol's upstream answer deadline */
    uint64_t up_deadline; /* loop time up_timer is for; 0: none (lazy, see conn.c) */
    uv_connect_t connect_req;
    const struct fl_proto_ops *ops;
    void (*recycled)(struct fl_conn *c);
    fl_conn_socket_fn upstream_socket; /* NULL: a plain socket of the daemon's netns */
    void *proto;
    struct fl_policy *policy; /* snapshot in use by this conn's current request (ref) */
    struct fl_tox *tox;       /* connection faults (toxic.h), or NULL */
    char *scope;              /* listener/target name (own copy) */
    char *pod;                /* "namespace/name" of the Kubernetes pod it is for, or NULL */
    uint64_t id;
    struct sockaddr_storage src; /* client address */
    struct sockaddr_storage dst; /* upstream (original destination) */
    int upstream_netns;          /* owned netns fd the upstream socket is made in; -1: ours */
    unsigned pending_closes;
    unsigned closing : 1;
    unsigned close_when_idle : 1; /* graceful shutdown: close once idle */
};

/* The connection whose hold hd is. */
static inline struct fl_conn *fl_conn_of_hold(struct fl_hold *hd)
{
    return (struct fl_conn *)(void *)((char *)hd - offsetof(struct fl_conn, hold));
}

/* Accepts a pending connection on server into a new conn served first by ops
 * (the handler that sniffs the first bytes: fl_http1_ops) and bound to the
 * listener's settings (scope name, upstream address). Returns 0 or a negative
 * errno. */
int fl_conn_accept(struct fl_worker *w, uv_stream_t *server, const struct fl_proto_ops *ops,
                   const char *scope, const struct sockaddr *upstream) FL_WUR;

/* A connection accepted and resolved on one worker, to be served by another
 * (transparent mode accepts on worker 0 and spreads the connections). */
struct fl_conn_handoff {
    struct fl_conn_handoff *next;
    int fd;                      /* the accepted client socket (owned) */
    const struct fl_proto_ops *ops; /* the first handler (fl_http1_ops) */
    int upstream_netns;          /* owned; -1: the daemon's own */
    fl_conn_socket_fn upstream_socket; /* makes the upstream socket in upstream_netns */
    char *scope;                 /* target name (owned) */
    char *pod;                   /* "namespace/name" of the selected pod, or NULL (owned) */
    struct sockaddr_storage src; /* client address */
    struct sockaddr_storage dst; /* original destination */
};

/* Accepts the pending connection on server into a new handoff with fd and
 * src set (everything else empty: the caller sets ops, dst, scope and, for
 * another netns, upstream_netns with upstream_socket). Returns 0 or a
 * negative errno. */
int fl_conn_handoff_accept(uv_stream_t *server, struct fl_conn_handoff **out) FL_WUR;

/* Closes and frees h (NULL is fine). */
void fl_conn_handoff_free(struct fl_conn_handoff *h);

/* Serves h's connection on w (w's thread only). Consumes h whatever happens.
 * Returns 0 or a negative errno (the socket is then closed). */
int fl_conn_adopt(struct fl_worker *w, struct fl_conn_handoff *h) FL_WUR;

/* Starts dialling the upstream if not yet done. Writes issued meanwhile are
 * queued by libuv and go out once connected. Returns 0 or a negative errno. */
int fl_conn_connect_upstream(struct fl_conn *c) FL_WUR;

/* Writes len bytes at p toward side. If ch is not NULL, p points into it and a
 * reference is held until the write completes; otherwise the bytes are copied.
 * Returns 0 or a negative errno (the conn is then closing). */
int fl_conn_write(struct fl_conn *c, int side, struct fl_chunk *ch, const char *p, size_t len);

/* The same, below the connection's toxics (toxic.c only): straight to the socket. */
int fl_conn_write_direct(struct fl_conn *c, int side, struct fl_chunk *ch, const char *p,
                         size_t len);

/* Sets the time (loop clock, ms) by which the upstream must have answered,
 * or 0 for none; ops->upstream_timeout runs when it passes. Cheap enough to
 * call per request: the timer is only restarted when it would fire too late.
 * A protocol switch clears it. */
void fl_conn_upstream_deadline(struct fl_conn *c, uint64_t deadline);

/* Half-closes toward side once queued writes are out. */
void fl_conn_shutdown(struct fl_conn *c, int side);
void fl_conn_shutdown_direct(struct fl_conn *c, int side); /* below the toxics */

/* Re-evaluates which sides read, from want_read, eof and backpressure. */
void fl_conn_update_reading(struct fl_conn *c);

/* Closes the upstream socket (it failed or closed while idle) and calls done
 * once its handle is gone, so the next fl_conn_connect_upstream() dials anew. */
void fl_conn_recycle_upstream(struct fl_conn *c, void (*done)(struct fl_conn *c));

/* Closes everything; with reset the client gets a TCP RST. Idempotent. */
void fl_conn_close(struct fl_conn *c, int reset);
/* The same; the sides whose bit (1 << FL_CLIENT, 1 << FL_UPSTREAM) is set get an RST. */
void fl_conn_close_reset(struct fl_conn *c, unsigned reset_mask);

/* Bytes queued toward side and not yet written (a toxic's held bytes too). */
size_t fl_conn_queued(const struct fl_conn *c, int side);
/* Only what the socket's write queue holds. */
size_t fl_conn_queued_direct(const struct fl_conn *c, int side);

/* What the queued writes toward side hold in memory: the larger of their bytes
 * and the chunks they pin. Protocols that make bytes up (answers, frames)
 * stop producing toward a side whose backlog is at FL_WQ_HWM or above. */
size_t fl_conn_backlog(const struct fl_conn *c, int side);

/* Frees the worker's cached write requests (before fl_worker_fini). */
void fl_conn_pool_drain(struct fl_worker *w);

/* Graceful shutdown of w's connections: each is closed now if idle, else told
 * to finish what is in flight (HTTP/2: GOAWAY) and closed once idle. Marks w
 * draining; w->on_empty runs once the last one is freed (at once if none).
 * Listeners are not touched: whoever opened them closes them. */
void fl_conn_drain_all(struct fl_worker *w);

/* Ends the connection faults of w's connections whose rule is no longer in
 * force (halt, disabled, expired, a policy without it): after every change. */
void fl_conn_recheck_all(struct fl_worker *w);

/* Closes w's connections that came in through scope (a listener's name). */
void fl_conn_close_scope(struct fl_worker *w, const char *scope);

/* Closes every connection of w at once (the drain deadline passed). */
void fl_conn_close_all(struct fl_worker *w);

/* A process-wide connection id for the fault log, from 1. Any thread. */
uint64_t fl_conn_next_id(void);

/* Switches the protocol handler (e.g. HTTP/1.1 -> raw after an Upgrade). The old
 * handler's state is destroyed; the new one is initialised. */
int fl_conn_switch(struct fl_conn *c, const struct fl_proto_ops *ops);

#endif
