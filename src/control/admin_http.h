/* admin_http: the admin API's HTTP/1.1 server, on the main loop.
 *
 * Listens on the admin unix socket (mode 0600; only root and the daemon's own
 * user may talk to it) and, optionally, on TCP ports that serve /metrics
 * only. One request per connection (faultctl and curl are fine with it),
 * parsed with llhttp, with bounds on the target, the headers, the body and
 * the time a request may take to arrive. A peer that is not allowed, or one
 * too many, is answered 403 or 503 here. A complete request goes to the
 * handler given to fl_admin_http_start(), which answers it now or later (a
 * policy is parsed on the thread pool), or turns the connection into an event
 * stream (chunked NDJSON) fed by fl_admin_http_broadcast().
 *
 * Knows nothing of the endpoints: that is admin.c.
 */
#ifndef FL_ADMIN_HTTP_H
#define FL_ADMIN_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "compiler.h"

#define FL_ADMIN_HTTP_MAX_CLIENTS 64
#define FL_ADMIN_HTTP_MAX_URL 2048

struct fl_admin_http_req;

/* Called once per complete request. Must answer it (fl_admin_http_respond and
 * friends, now or later) or start a stream. */
typedef void (*fl_admin_http_handler)(struct fl_admin_http_req *rq);

/* Listens on the unix socket at path (creating its directory; removing a
 * stale socket file; refusing with -EADDRINUSE when another daemon answers
 * on it) and, when metrics_listen is not NULL, on that ADDR:PORT for /metrics
 * only. Blocking (a connect probe and a bind): call before the loop runs.
 * Returns 0 or a negative errno with err holding one line saying what to do;
 * nothing is left open then. */
int fl_admin_http_start(uv_loop_t *loop, const char *path, const char *metrics_listen,
                        fl_admin_http_handler handler, char *err, size_t errlen) FL_WUR;

/* Also listens on ADDR:PORT for the Toxiproxy API: its requests go to
 * handler. After fl_admin_http_start. Returns 0 or a negative errno with err
 * saying what to do. */
int fl_admin_http_listen_toxiproxy(const char *addr, fl_admin_http_handler handler, char *err,
                                   size_t errlen) FL_WUR;

/* Ends every stream (a last chunk when the socket takes it now), closes every
 * client and listener, and removes the socket file. Idempotent. */
void fl_admin_http_stop(void);

/* The request. Strings live as long as the request. */
const char *fl_admin_http_method(const struct fl_admin_http_req *rq);
const char *fl_admin_http_path(const struct fl_admin_http_req *rq);  /* as sent, no query */
const char *fl_admin_http_query(const struct fl_admin_http_req *rq); /* after '?', or NULL */
const char *fl_admin_http_body(const struct fl_admin_http_req *rq, size_t *len); /* "" if none */
/* Hands the body (malloc'd, NUL-terminated) to the caller; NULL when out of memory. */
char *fl_admin_http_take_body(struct fl_admin_http_req *rq, size_t *len);
/* The X-Faultline-File header (the name errors are reported against), or "". */
const char *fl_admin_http_file(const struct fl_admin_http_req *rq);
/* 1 when it came in on a /metrics-only TCP port. */
int fl_admin_http_metrics_only(const struct fl_admin_http_req *rq);
/* For an answer that comes later: *slot is set to NULL if the client goes
 * away first, so the late answer knows to drop itself. */
void fl_admin_http_watch(struct fl_admin_http_req *rq, struct fl_admin_http_req **slot);

/* Sends a whole response and closes the connection after it. extra is NULL
 * or "Name: value\r\n" lines. */
void fl_admin_http_respond(struct fl_admin_http_req *rq, int status, const char *ctype,
                           const char *extra, const char *body, size_t len);
/* The same with o as JSON (steals o). */
void fl_admin_http_json(struct fl_admin_http_req *rq, int status, json_t *o);
/* {"error": MESSAGE} */
void fl_admin_http_error(struct fl_admin_http_req *rq, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Turns the connection into a chunked NDJSON stream of what
 * fl_admin_http_broadcast() sends from now on. */
void fl_admin_http_stream(struct fl_admin_http_req *rq);

/* Sends one line (without newline) to every stream as a chunk. A stream more
 * than 1 MiB behind loses lines rather than growing memory. */
void fl_admin_http_broadcast(const char *line, size_t len);

#endif
