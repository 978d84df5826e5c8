/* faultlog: one JSON line per injected fault (docs/reference.md, "Fault log").
 *
 * Each worker appends to its own buffer and flushes it with an asynchronous
 * uv_fs_write, so the event loop never waits on the log's disk or pipe. Lines
 * are written whole; several workers share one O_APPEND descriptor. A clean
 * shutdown flushes synchronously, so nothing logged is lost. If a buffer grows
 * past FL_LOG_CAP (a stalled reader), further lines are counted as dropped.
 */
#ifndef FL_FAULTLOG_H
#define FL_FAULTLOG_H

#include "compiler.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "fault.h"
#include "match.h"

#define FL_LOG_CAP (8u << 20)
/* A fault line is never longer: long paths and authorities are cut (at a
 * UTF-8 boundary) and the line says "truncated":true. */
#define FL_FAULTLOG_LINE_MAX 8192

struct fl_faultlog_buf {
    char *buf; /* lines not yet handed to the kernel */
    size_t len, cap;
    char *inflight; /* buffer of the write in progress */
    size_t inflight_len, inflight_cap;
    uv_fs_t req;
    int busy;
    uv_loop_t *loop;
};

struct fl_fault_event {
    const char *policy;
    const char *rule;
    enum fl_fault_kind kind;
    uint64_t delay_ms;
    int status;      /* HTTP status for abort, or 0 */
    int grpc_status; /* for gRPC aborts, or -1 */
    const struct fl_request *req;
    const struct sockaddr *src;
    const struct sockaddr *dst;
    const char *pod; /* "namespace/name" of the Kubernetes pod, or NULL */
    uint64_t conn;
    const char *proto; /* without req: the connection's protocol ("tcp"), or NULL */
    const char *extra; /* a JSON fragment added as it is (",\"toxics\":[...]"), or NULL */
};

/* This node's name, added to every line that names a pod (Kubernetes), or
 * "". Set before the workers start. */
extern char fl_faultlog_node[256];

/* Opens the log destination: a path (created 0640, appended) or "-" for
 * stdout. Returns 0 or a negative errno. */
int fl_faultlog_open(const char *path) FL_WUR;
void fl_faultlog_close(void);

/* Called with every line (without newline) as it is logged; used by the
 * admin API to stream events. May be NULL. Runs on the logging worker's thread. */
extern void (*fl_faultlog_tap)(const char *line, size_t len);

extern atomic_ullong fl_faultlog_dropped;

void fl_faultlog_buf_init(struct fl_faultlog_buf *lb, uv_loop_t *loop);
void fl_faultlog_buf_fini(struct fl_faultlog_buf *lb);

/* Formats and queues one fault line. Never blocks. */
void fl_faultlog_emit(struct fl_faultlog_buf *lb, const struct fl_fault_event *ev);

/* The same line in two steps, for a fault whose outcome is known later (a
 * delay: the status its request got): fl_faultlog_format writes the line
 * without its closing brace into line (cap bytes, FL_FAULTLOG_LINE_MAX is
 * enough) and returns its length; fl_faultlog_emit_formatted adds
 * "status":STATUS when status > 0, closes and queues it. */
size_t fl_faultlog_format(const struct fl_fault_event *ev, char *line, size_t cap);
void fl_faultlog_emit_formatted(struct fl_faultlog_buf *lb, char *line, size_t len, size_t cap,
                                int status);

/* A fault line held until its status is known: the line formatted into a
 * heap copy with room for the status, *len set. Out of memory, ev is
 * written at once (without a status) and NULL returned. */
char *fl_faultlog_hold(struct fl_faultlog_buf *lb, const struct fl_fault_event *ev, size_t *len);
/* Writes a held line with status (0: none) and frees it; *line becomes NULL.
 * No-op when *line is NULL. */
void fl_faultlog_release(struct fl_faultlog_buf *lb, char **line, size_t len, int status);

/* Queues an arbitrary pre-formatted JSON object line (events such as reloads). */
void fl_faultlog_emit_raw(struct fl_faultlog_buf *lb, const char *json, size_t len);

/* The fields a response fault's line adds for kind (truncate's after,
 * bandwidth's rate and direction, a gRPC modify's grpc_status), written into
 * buf; NULL when there are none. */
const char *fl_faultlog_resp_extra(const struct fl_rule *r, enum fl_fault_kind kind, int grpc,
                                   char *buf, size_t len);

/* Writes out everything queued, blocking; for shutdown. */
void fl_faultlog_buf_flush_sync(struct fl_faultlog_buf *lb);


#endif
