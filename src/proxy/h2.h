/* h2: HTTP/2 and gRPC proxying with nghttp2 (fl_h2_ops).
 *
 * A connection that opens with the HTTP/2 client preface is served by two
 * nghttp2 sessions: a server session toward the client and a client session
 * toward the upstream (dialled when the first stream goes upstream). Streams
 * map one to one. Each stream is decided by the rules on its own, so a delay,
 * abort or reset touches that stream only.
 *
 * Memory is bounded by flow control: window updates are sent only once bytes
 * have left toward the other side (nghttp2_session_consume), so a stream never
 * buffers more than the window the proxy advertised for it, and a connection
 * never more than its connection window in each direction.
 */
#ifndef FL_H2_H
#define FL_H2_H

#include "conn.h"

extern const struct fl_proto_ops fl_h2_ops;

/* Advertised to both peers. */
#define FL_H2_MAX_STREAMS 128            /* SETTINGS_MAX_CONCURRENT_STREAMS toward the client */
#define FL_H2_STREAM_WINDOW (256 * 1024) /* SETTINGS_INITIAL_WINDOW_SIZE */
#define FL_H2_CONN_WINDOW (1024 * 1024)  /* connection-level receive window */
#define FL_H2_MAX_HEADER_LIST (32 * 1024) /* SETTINGS_MAX_HEADER_LIST_SIZE */
#define FL_H2_MAX_HEADERS 128            /* fields per header block */

/* Rapid reset (CVE-2023-44487): more RST_STREAMs than this from a client within
 * FL_H2_RST_WINDOW_MS ends its connection with GOAWAY(ENHANCE_YOUR_CALM). */
#define FL_H2_RST_MAX 200
#define FL_H2_RST_WINDOW_MS 1000

/* A request header block that decodes to more than FL_H2_OVERSIZE_FACTOR times
 * FL_H2_MAX_HEADER_LIST is reset as soon as it gets there (below that it is
 * answered 431); after FL_H2_OVERSIZE_MAX such blocks the connection gets
 * GOAWAY(ENHANCE_YOUR_CALM). An HPACK bomb then costs the worker a few
 * microseconds per frame instead of milliseconds. */
#define FL_H2_OVERSIZE_FACTOR 4
#define FL_H2_OVERSIZE_MAX 8

/* A connection told to go away is closed after this long even if the peer
 * does not read what is left. */
#define FL_H2_LINGER_MS 2000

#endif
