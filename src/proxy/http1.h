/* http1: the HTTP/1.1 protocol handler (llhttp), and the first handler of every
 * connection: it sniffs the first bytes and stays for an HTTP/1.x request
 * line, switches to h2 (h2.h) on the HTTP/2 client preface, and to raw
 * (raw.h) for anything else.
 *
 * Original bytes are forwarded unchanged; requests are decided one by one
 * (fault.h) as their heads complete; keep-alive, pipelining, chunked bodies of
 * any size with backpressure; Upgrade and CONNECT switch to raw. */
#ifndef FL_HTTP1_H
#define FL_HTTP1_H

#include "conn.h"

extern const struct fl_proto_ops fl_http1_ops;

#endif
