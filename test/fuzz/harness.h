/* harness: what the protocol fuzzers share. One libuv loop and one worker made
 * once, the policy of harness.c loaded once, and per input a real TCP client
 * toward a real connection of that worker (fl_conn_accept with fl_http1_ops,
 * as a listener does) whose upstream is a harness-run server on 127.0.0.1,
 * polled by the same loop.
 *
 * Per input a target calls fz_begin (or fz_begin_scripted), drives the two
 * peers (fz_client_*, fz_upstream_answer), and ends with fz_end, which waits
 * for faultline to free the connection and checks that nothing is left: no
 * connection, no held request, no chunk, no active-fault unit and no
 * descriptor. What fails is reported on stderr on one line starting
 * "faultline-fuzz: FINDING:" and ends the process with abort(), so libFuzzer
 * keeps the input.
 *
 * Environment:
 *   FL_FUZZ_STUCK=close  a connection still open FZ_END_MS after both peers
 *                        closed is counted and closed (fl_conn_close_all)
 *                        instead of being a finding; for exploring past a
 *                        known leak. Default: a finding.
 *   FL_FUZZ_STUCK_DIR=D  with FL_FUZZ_STUCK=close, the inputs that leaked are
 *                        written to D (stuck-HASH), for triage
 *   FL_FUZZ_END_MS=N     wait N ms instead of FZ_END_MS for faultline to free the
 *                        connection (to check that a leak outlives a timer)
 *   FL_FUZZ_VERBOSE=1    faultline's own warnings on stderr (default: errors only)
 *   FL_FUZZ_TRACE=1      one line per input: what each peer read, how it ended
 *   FL_FUZZ_FAULT_LOG=F  the fault log goes to F (default /dev/null)
 */
#ifndef FZ_HARNESS_H
#define FZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds faultline gets to free the connection once the client has sent
 * FIN (and the upstream has closed, or closes on the FIN passed on); the
 * harness's upstream answers every request, so nothing legitimate is pending
 * by then but timers of seconds (lingering, idle) that a FIN already ends. */
#define FZ_END_MS 200

enum fz_upstream_mode {
    /* Answers every HTTP/1.x request line it reads with a small 200 (HEAD: no
     * body; CONNECT: no body, a tunnel). Closes after FIN. */
    FZ_UP_HTTP1,
    /* HTTP/2: SETTINGS at once, SETTINGS ACK to each SETTINGS, and a
     * HEADERS ":status 200" with END_STREAM to each new stream. Closes after
     * FIN. */
    FZ_UP_H2,
};

/* How fz_upstream_answer ends the scripted connection. */
enum fz_close_style {
    FZ_CLOSE_GRACEFUL, /* FIN, then close once faultline's FIN arrives */
    FZ_CLOSE_FIN,      /* FIN, then close at once (unread input: RST) */
    FZ_CLOSE_RESET,    /* RST */
};

/* Every protocol target defines it; the harness defines LLVMFuzzerInitialize,
 * which sets up the loop, worker, policy, listeners and fault log once. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The close style two bits of a control byte choose. */
enum fz_close_style fz_close_style_of(unsigned bits);

/* Starts an input whose upstream answers as mode says. The first n bytes of
 * the input become control bytes in ctl (0 for those the input is too short
 * to have); *data and *size are left with the rest, the bytes to fuzz with.
 * The whole input is kept for FL_FUZZ_STUCK_DIR. Then the client connects and
 * the worker accepts it. */
void fz_begin(enum fz_upstream_mode mode, const uint8_t **data, size_t *size, uint8_t *ctl,
              size_t n);

/* As fz_begin, but the first upstream connection is scripted: it only reads,
 * and the target answers on it with fz_upstream_answer. Later upstream
 * connections (faultline dials again after a close) answer as others says,
 * so no request waits forever for an answer. */
void fz_begin_scripted(enum fz_upstream_mode others, const uint8_t **data, size_t *size,
                       uint8_t *ctl, size_t n);

/* Sends p in pieces whose sizes follow frag (see fz_pieces in harness.c: 0 one
 * write, 1 single bytes, ...), letting the loop run until quiet after each
 * piece. Stops early if the connection is gone. */
void fz_client_send(const void *p, size_t n, uint8_t frag);

/* Half-closes the client (FIN); it keeps reading until faultline closes. */
void fz_client_shutdown(void);

/* Waits (bounded) until the scripted upstream connection has read at least min
 * bytes and the loop is quiet; if it has, writes p on it in pieces as
 * fz_client_send does. Then ends that connection as how says and lets the
 * loop settle. */
void fz_upstream_answer(size_t min, const void *p, size_t n, uint8_t frag, enum fz_close_style how);

/* Ends the input: the client half-closes if it has not, faultline gets
 * FZ_END_MS to free the connection, then everything is checked. */
void fz_end(void);

#endif
