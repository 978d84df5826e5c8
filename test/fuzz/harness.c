/* harness: one loop, one worker, one policy; per input a real client, a real
 * connection of the worker and a harness-run upstream. See harness.h. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "conn.h"
#include "fault.h"
#include "faultlog.h"
#include "http1.h"
#include "log.h"
#include "policy.h"
#include "rng.h"
#include "worker.h"

#define FZ_SCOPE "fuzz"
#define FZ_MAX_PIECES 64
#define FZ_SETTLE_MS 50     /* one settle */
#define FZ_DRIVE_MS 1000    /* all settles of one input together */
#define FZ_MAX_FD 4096

/* Rules for every fault kind and match kind; requests that fit none of them
 * meet the catch-all of the fuzz listener, which decides and never fires. */
static const char policy_yaml[] =
    "apiVersion: faultline/v1\n"
    "kind: FaultPolicy\n"
    "metadata: {name: fuzz}\n"
    "spec:\n"
    "  seed: 7\n"
    "  ttl: 0s\n"
    "  listeners:\n"
    "    - {name: fuzz, listen: \"127.0.0.1:1\", upstream: \"127.0.0.1:1\"}\n"
    "    - {name: other, listen: \"127.0.0.1:2\", upstream: \"127.0.0.1:2\"}\n"
    "  rules:\n"
    "    - name: other-listener-only\n"
    "      on: other\n"
    "      fault: {abort: {status: 500}}\n"
    "    - name: abort\n"
    "      on: fuzz\n"
    "      match: {path: {prefix: /abort}}\n"
    "      fault:\n"
    "        abort:\n"
    "          status: 503\n"
    "          body: \"injected by the fuzz policy\\n\"\n"
    "          headers: {retry-after: \"1\", x-fuzz: \"yes\"}\n"
    "    - name: reset\n"
    "      match: {path: {prefix: /reset}}\n"
    "      fault: {reset: {percent: 100}}\n"
    "    - name: delay\n"
    "      match: {path: {prefix: /delay}}\n"
    "      fault: {delay: {fixed: 1ms}}\n"
    "    - name: delay-abort\n"
    "      match: {method: [GET, POST], path: {exact: /slowfail}}\n"
    "      fault:\n"
    "        delay: {fixed: 1ms}\n"
    "        abort: {status: 500, body: \"slow failure\\n\"}\n"
    "    - name: grpc-abort\n"
    "      match: {grpc: {service: fuzz.Svc}}\n"
    "      fault: {abort: {grpc_status: UNAVAILABLE, message: \"injected by the fuzz policy\"}}\n"
    "    - name: grpc-delay\n"
    "      match: {grpc: {service: fuzz.Slow, method: Call}}\n"
    "      fault: {delay: {fixed: 1ms}, abort: {grpc_status: 4, percent: 50}}\n"
    "    - name: header-abort\n"
    "      match:\n"
    "        headers: [{name: x-fault, exact: abort}]\n"
    "      fault: {abort: {status: 429, headers: {x-why: header}}}\n"
    "    - name: header-reset\n"
    "      match:\n"
    "        method: [POST, PUT]\n"
    "        headers: [{name: x-chaos, present: true}, {name: x-tenant, prefix: t-}]\n"
    "      fault: {reset: {percent: 50}, delay: {fixed: 1ms, jitter: 1ms}}\n"
    "    - name: regex\n"
    "      match:\n"
    "        path: {regex: \"^/re/[0-9]+$\"}\n"
    "        headers: [{name: authorization, absent: true}, {name: host, regex: \"^[a-z.]+$\"}]\n"
    "      fault: {abort: {status: 401, body: \"no credentials\\n\"}, delay: {fixed: 1ms, "
    "percent: 50}}\n"
    "    - name: dice\n"
    "      match: {path: {prefix: /dice}}\n"
    "      fault:\n"
    "        abort: {status: 502, percent: 50}\n"
    "        reset: {percent: 10}\n"
    "        delay: {fixed: 1ms, jitter: 1ms, percent: 50}\n"
    "    - name: passthrough\n"
    "      on: fuzz\n"
    "      fault: {delay: {fixed: 1ms, percent: 0}}\n";

/* ---- state ---- */

struct up_conn {
    uv_tcp_t tcp;
    struct up_conn *next;
    size_t rx;
    unsigned scripted : 1;  /* the target writes and closes it */
    unsigned eof : 1;       /* faultline's FIN arrived */
    unsigned shut : 1;      /* our FIN requested */
    unsigned closing : 1;
    unsigned close_on_eof : 1;
    unsigned close_after_shut : 1;
    unsigned raw : 1;       /* HTTP/1: after a 101 or a CONNECT 200, bytes are discarded */
    unsigned refuse : 1;    /* HTTP/1: this request's Upgrade is refused (a 200) */
    unsigned url_seen : 1;
    /* HTTP/1 */
    llhttp_t parser;
    /* HTTP/2: the frame scanner */
    size_t skip;            /* bytes to pass over (preface, payloads) */
    uint8_t fh[9];
    size_t fhl;
    uint32_t max_sid;       /* highest stream answered */
};

static uv_loop_t loop;
static struct fl_worker W;
static uv_tcp_t front;  /* the worker's listener */
static uv_tcp_t up_srv; /* the upstream's */
static struct sockaddr_in front_addr, up_addr;
static int initialized;

static enum fz_upstream_mode up_mode;
static int up_scripted_wanted;
static struct up_conn *ups;
static struct up_conn *scripted;
static unsigned n_up_handles;

static int client_fd = -1;
static int client_shut, client_eof_seen, client_reset_seen;
static size_t client_rx;

static uint64_t drive_deadline;
static unsigned accepted_before;
static unsigned active_faults_before;
static unsigned char fds_before[FZ_MAX_FD / 8];
static int check_fds;
static int stuck_close;
static uint64_t end_ms = FZ_END_MS; /* FL_FUZZ_END_MS */
static unsigned long stuck_count;
static const char *verbose;
static const uint8_t *cur_data; /* the input, for FL_FUZZ_STUCK_DIR */
static size_t cur_size;
static int trace; /* FL_FUZZ_TRACE=1: one line per input */
static unsigned n_up_accepted;
static size_t up_rx_total;
static char client_head[160]; /* the start of what the client got, for the trace */

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* One line on stderr: "faultline-fuzz: " what ": " and the message. */
static void say(const char *what, const char *fmt, va_list ap)
{
    fflush(stdout);
    fprintf(stderr, "faultline-fuzz: %s: ", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

/* faultline did wrong: abort(), so libFuzzer keeps the input. */
static void finding(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void finding(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say("FINDING", fmt, ap);
    va_end(ap);
    abort();
}

/* The harness itself cannot go on: exit 2, no input kept. */
static void harness_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void harness_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say("HARNESS ERROR (not a finding)", fmt, ap);
    va_end(ap);
    _exit(2);
}

/* ---- pieces: how a byte stream is cut into writes ----
 *
 * frag & 7 picks the sizes, frag >> 3 seeds them:
 *   0 one piece          4 1..64 bytes
 *   1 single bytes       5 1..512 bytes
 *   2 1..3 bytes         6 two pieces, cut anywhere
 *   3 1..16 bytes        7 1..4096 bytes
 * At most FZ_MAX_PIECES pieces; the last takes what is left. */
struct fz_pieces {
    uint32_t x;
    unsigned mode, n;
};

static void pieces_init(struct fz_pieces *f, uint8_t frag)
{
    f->mode = frag & 7u;
    f->x = ((uint32_t)(frag >> 3) + 1u) * 2654435761u;
    f->n = 0;
}

static uint32_t pieces_rand(struct fz_pieces *f)
{
    f->x ^= f->x << 13;
    f->x ^= f->x >> 17;
    f->x ^= f->x << 5;
    return f->x;
}

static size_t pieces_next(struct fz_pieces *f, size_t left)
{
    static const size_t max[8] = {0, 1, 3, 16, 64, 512, 0, 4096};
    size_t k = left;
    if (f->n++ >= FZ_MAX_PIECES - 1 || f->mode == 0)
        return left;
    if (f->mode == 6)
        k = f->n == 1 ? 1 + pieces_rand(f) % left : left;
    else
        k = 1 + pieces_rand(f) % max[f->mode];
    return k < left ? k : left;
}

/* ---- the client: a plain non-blocking socket ---- */

static void client_close(void)
{
    if (client_fd < 0)
        return;
    close(client_fd);
    client_fd = -1;
}

/* Reads and discards what faultline sent; closes on its FIN or an error. */
static void client_drain(void)
{
    static char buf[64 * 1024];
    while (client_fd >= 0) {
        ssize_t r = recv(client_fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (r > 0) {
            if (trace && client_rx < sizeof(client_head) - 1) {
                size_t k = sizeof(client_head) - 1 - client_rx;
                memcpy(client_head + client_rx, buf, (size_t)r < k ? (size_t)r : k);
            }
            client_rx += (size_t)r;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r == 0)
            client_eof_seen = 1;
        else
            client_reset_seen = 1;
        client_close();
    }
}

/* ---- the loop ---- */

static void step(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    client_drain();
}

/* libuv hands epoll its watcher changes (a read just started) only at its
 * next poll: until then the backend descriptor cannot show that socket ready.
 * Private fields of libuv's loop, by version. */
static int watchers_pending(void)
{
#if UV_VERSION_HEX >= 0x012d00 /* 1.45: struct uv__queue */
    return loop.watcher_queue.next != &loop.watcher_queue;
#else
    return loop.watcher_queue[0] != (void *)&loop.watcher_queue;
#endif
}

/* Nothing ready on any socket, no delay held, no callback pending. */
static int quiet(void)
{
    if (uv_backend_timeout(&loop) == 0 || W.n_holds || watchers_pending())
        return 0;
    struct pollfd p[2] = {{.fd = uv_backend_fd(&loop), .events = POLLIN},
                          {.fd = client_fd, .events = POLLIN}};
    return poll(p, client_fd >= 0 ? 2 : 1, 0) == 0;
}

/* Sleeps until something may be ready, at most 1 ms. */
static void wait_ready(void)
{
    int t = uv_backend_timeout(&loop);
    if (t < 0 || t > 1)
        t = 1;
    struct pollfd p[2] = {{.fd = uv_backend_fd(&loop), .events = POLLIN},
                          {.fd = client_fd, .events = POLLIN}};
    (void)poll(p, client_fd >= 0 ? 2 : 1, t);
}

/* Steps the loop until done() or the clock reaches end (now_ms). */
static void run_until(uint64_t end, int (*done)(void))
{
    for (;;) {
        step();
        if (done() || now_ms() >= end)
            return;
        wait_ready();
    }
}

/* FZ_SETTLE_MS from now, but not past the input's drive deadline. */
static uint64_t settle_deadline(void)
{
    uint64_t end = now_ms() + FZ_SETTLE_MS;
    return end < drive_deadline ? end : drive_deadline;
}

static void settle(void)
{
    run_until(settle_deadline(), quiet);
}

/* Writes p in pieces as frag cuts it, settling after each; put writes one
 * piece and returns < 0 when nothing more is to be sent. */
static void send_pieces(const void *p, size_t n, uint8_t frag, int (*put)(const char *, size_t))
{
    struct fz_pieces f;
    const char *c = p;
    pieces_init(&f, frag);
    while (n) {
        size_t k = pieces_next(&f, n);
        if (put(c, k) < 0)
            return;
        c += k;
        n -= k;
        settle();
    }
}

/* ---- the upstream ---- */

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char rbuf[64 * 1024];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void up_closed(uv_handle_t *h)
{
    struct up_conn *u = h->data, **pp;
    for (pp = &ups; *pp; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            break;
        }
    }
    if (scripted == u)
        scripted = NULL;
    n_up_handles--;
    free(u);
}

static void up_close(struct up_conn *u)
{
    if (u->closing)
        return;
    u->closing = 1;
    uv_close((uv_handle_t *)&u->tcp, up_closed);
}

static void up_write_cb(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* Writes n bytes (copied when they cannot go out at once). */
static void up_write(struct up_conn *u, const void *p, size_t n)
{
    if (u->closing || u->shut || n == 0)
        return;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int k = uv_try_write((uv_stream_t *)&u->tcp, &b, 1);
    if (k == (int)n)
        return;
    if (k < 0 && k != UV_EAGAIN) {
        up_close(u);
        return;
    }
    if (k < 0)
        k = 0;
    uv_write_t *req = malloc(sizeof(*req) + n - (size_t)k);
    if (!req)
        harness_fail("out of memory");
    char *copy = (char *)(req + 1);
    memcpy(copy, (const char *)p + k, n - (size_t)k);
    b = uv_buf_init(copy, (unsigned)(n - (size_t)k));
    if (uv_write(req, (uv_stream_t *)&u->tcp, &b, 1, up_write_cb) < 0) {
        free(req);
        up_close(u);
    }
}

static void up_shutdown_cb(uv_shutdown_t *req, int status)
{
    struct up_conn *u = req->data;
    (void)status;
    free(req);
    if (u->close_after_shut || u->eof || status < 0)
        up_close(u);
}

/* Sends FIN once queued writes are out; close_now: close right after it,
 * else once faultline's FIN is in. */
static void up_shutdown(struct up_conn *u, int close_now)
{
    if (u->closing)
        return;
    if (u->shut) {
        if (close_now || u->eof)
            up_close(u);
        return;
    }
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (!req)
        harness_fail("out of memory");
    req->data = u;
    u->shut = 1;
    u->close_after_shut = close_now ? 1 : 0;
    u->close_on_eof = 1;
    if (uv_shutdown(req, (uv_stream_t *)&u->tcp, up_shutdown_cb) < 0) {
        free(req);
        up_close(u);
    }
}

/* HTTP/1 upstream: llhttp finds the requests, as faultline's own parser does. */
static const char resp_ok[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
static const char resp_ok_close[] =
    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
static const char resp_head[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
static const char resp_tunnel[] = "HTTP/1.1 200 OK\r\n\r\n";
static const char resp_101[] =
    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
static const char resp_400[] =
    "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

static int up_h1_headers(llhttp_t *p)
{
    struct up_conn *u = p->data;
    if (p->method == HTTP_CONNECT) {
        up_write(u, resp_tunnel, sizeof(resp_tunnel) - 1);
    } else if (p->upgrade && !u->refuse) {
        u->raw = 1;
        up_write(u, resp_101, sizeof(resp_101) - 1);
    } else if (p->method == HTTP_HEAD) {
        up_write(u, resp_head, sizeof(resp_head) - 1);
    } else if (!llhttp_should_keep_alive(p)) {
        up_write(u, resp_ok_close, sizeof(resp_ok_close) - 1);
        up_shutdown(u, 0);
    } else {
        up_write(u, resp_ok, sizeof(resp_ok) - 1);
    }
    return 0;
}

static int up_h1_begin(llhttp_t *p)
{
    struct up_conn *u = p->data;
    u->url_seen = 0;
    u->refuse = 0;
    return 0;
}

static int up_h1_url(llhttp_t *p, const char *at, size_t len)
{
    struct up_conn *u = p->data;
    /* A target starting "/refuse" asks the upstream to refuse an Upgrade. */
    if (!u->url_seen && len >= 7 && memcmp(at, "/refuse", 7) == 0)
        u->refuse = 1;
    u->url_seen = 1;
    return 0;
}

static const llhttp_settings_t up_h1_settings = {
    .on_message_begin = up_h1_begin,
    .on_url = up_h1_url,
    .on_headers_complete = up_h1_headers,
};

static void up_h1_data(struct up_conn *u, const char *p, size_t n)
{
    while (n && !u->raw && !u->closing && !u->shut) {
        llhttp_errno_t e = llhttp_execute(&u->parser, p, n);
        if (e == HPE_OK)
            return;
        if (e == HPE_PAUSED_UPGRADE) {
            size_t used = (size_t)(llhttp_get_error_pos(&u->parser) - p);
            if (u->parser.method == HTTP_CONNECT || u->raw) {
                u->raw = 1; /* a tunnel: what follows is not ours to parse */
                return;
            }
            llhttp_resume_after_upgrade(&u->parser);
            p += used;
            n -= used;
            continue;
        }
        up_write(u, resp_400, sizeof(resp_400) - 1);
        up_shutdown(u, 1);
        return;
    }
}

/* HTTP/2 upstream: walks the frame headers, answers SETTINGS and new streams. */
static const uint8_t h2_settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
static const uint8_t h2_settings_ack[9] = {0, 0, 0, 4, 1, 0, 0, 0, 0};

static void up_h2_frame(struct up_conn *u, const uint8_t *fh)
{
    uint8_t type = fh[3], flags = fh[4];
    if (trace > 1)
        fprintf(stderr, "faultline-fuzz: trace: upstream got frame type %u flags %#x len %zu\n",
                type, flags, u->skip);
    uint32_t sid = ((uint32_t)(fh[5] & 0x7f) << 24) | ((uint32_t)fh[6] << 16) |
                   ((uint32_t)fh[7] << 8) | fh[8];
    if (type == 4 && !(flags & 1)) {
        up_write(u, h2_settings_ack, sizeof(h2_settings_ack));
    } else if (type == 1 && (sid & 1) && sid > u->max_sid) {
        /* HEADERS, END_STREAM | END_HEADERS, ":status: 200" (static index 8) */
        uint8_t r[10] = {0, 0, 1, 1, 5, (uint8_t)(sid >> 24), (uint8_t)(sid >> 16),
                         (uint8_t)(sid >> 8), (uint8_t)sid, 0x88};
        u->max_sid = sid;
        up_write(u, r, sizeof(r));
    }
}

static void up_h2_data(struct up_conn *u, const uint8_t *p, size_t n)
{
    while (n && !u->closing) {
        if (u->skip) {
            size_t k = n < u->skip ? n : u->skip;
            u->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        size_t k = 9 - u->fhl;
        if (k > n)
            k = n;
        memcpy(u->fh + u->fhl, p, k);
        u->fhl += k;
        p += k;
        n -= k;
        if (u->fhl == 9) {
            u->fhl = 0;
            u->skip = ((size_t)u->fh[0] << 16) | ((size_t)u->fh[1] << 8) | u->fh[2];
            up_h2_frame(u, u->fh);
        }
    }
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct up_conn *u = s->data;
    if (u->closing)
        return;
    if (nread > 0) {
        u->rx += (size_t)nread;
        up_rx_total += (size_t)nread;
        if (u->scripted)
            return;
        if (up_mode == FZ_UP_HTTP1)
            up_h1_data(u, buf->base, (size_t)nread);
        else
            up_h2_data(u, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    if (nread == UV_EOF) {
        u->eof = 1;
        if (u->scripted && !u->close_on_eof)
            return; /* the target still writes, then closes */
        if (u->shut)
            up_close(u);
        else
            up_shutdown(u, 1);
        return;
    }
    if (nread < 0)
        up_close(u);
}

static void on_up_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        harness_fail("upstream accept: %s", uv_strerror(status));
    struct up_conn *u = calloc(1, sizeof(*u));
    if (!u)
        harness_fail("out of memory");
    uv_tcp_init(&loop, &u->tcp);
    u->tcp.data = u;
    n_up_handles++;
    n_up_accepted++;
    u->next = ups;
    ups = u;
    if (uv_accept(server, (uv_stream_t *)&u->tcp) < 0) {
        up_close(u);
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1); /* else Nagle holds small answers for a delayed ACK (40 ms) */
    llhttp_init(&u->parser, HTTP_REQUEST, &up_h1_settings);
    u->parser.data = u;
    u->skip = 24; /* HTTP/2: the client preface */
    if (up_scripted_wanted && !scripted) {
        u->scripted = 1;
        scripted = u;
        up_scripted_wanted = 0;
    } else if (up_mode == FZ_UP_H2) {
        up_write(u, h2_settings, sizeof(h2_settings));
    }
    uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read);
}

static size_t up_wait_min; /* what upstream_ready waits for */

static int upstream_ready(void)
{
    return quiet() && scripted && scripted->rx >= up_wait_min;
}

static int upstream_put(const char *p, size_t n)
{
    if (!scripted || scripted->closing)
        return -1;
    up_write(scripted, p, n);
    return 0;
}

static void upstream_close(enum fz_close_style how)
{
    struct up_conn *u = scripted;
    if (!u || u->closing)
        return;
    switch (how) {
    case FZ_CLOSE_GRACEFUL:
        up_shutdown(u, 0);
        break;
    case FZ_CLOSE_FIN:
        up_shutdown(u, 1);
        break;
    case FZ_CLOSE_RESET:
        u->closing = 1;
        if (uv_tcp_close_reset(&u->tcp, up_closed) < 0) {
            u->closing = 0;
            up_close(u);
        }
        break;
    }
}

void fz_upstream_answer(size_t min, const void *p, size_t n, uint8_t frag, enum fz_close_style how)
{
    up_wait_min = min;
    run_until(settle_deadline(), upstream_ready);
    if (scripted && scripted->rx >= min)
        send_pieces(p, n, frag, upstream_put);
    upstream_close(how);
    settle();
}

/* ---- the worker's listener ---- */

static void on_front_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        harness_fail("accept: %s", uv_strerror(status));
    int e = fl_conn_accept(&W, server, &fl_http1_ops, FZ_SCOPE, (const struct sockaddr *)&up_addr);
    if (e < 0 && e != UV_EAGAIN)
        harness_fail("fl_conn_accept: %s", uv_strerror(e));
}

static void listen_on(uv_tcp_t *t, struct sockaddr_in *addr, uv_connection_cb cb)
{
    int alen = sizeof(*addr);
    uv_ip4_addr("127.0.0.1", 0, addr);
    if (uv_tcp_init(&loop, t) < 0 || uv_tcp_bind(t, (const struct sockaddr *)addr, 0) < 0 ||
        uv_listen((uv_stream_t *)t, 128, cb) < 0 ||
        uv_tcp_getsockname(t, (struct sockaddr *)addr, &alen) < 0)
        harness_fail("cannot listen on 127.0.0.1");
}

static int accepted(void)
{
    return W.n_conns != accepted_before;
}

/* Connects the client and lets the worker accept it. */
static void client_open(void)
{
    int one = 1;
    int err = 0;
    socklen_t elen = sizeof(err);
    client_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (client_fd < 0)
        harness_fail("socket: %s", strerror(errno));
    setsockopt(client_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Non-blocking: libFuzzer's SIGALRM would interrupt a blocking connect. */
    if (connect(client_fd, (const struct sockaddr *)&front_addr, sizeof(front_addr)) < 0) {
        if (errno != EINPROGRESS && errno != EINTR)
            harness_fail("connect to the worker's listener: %s", strerror(errno));
        struct pollfd pw = {.fd = client_fd, .events = POLLOUT};
        uint64_t cend = now_ms() + 1000;
        while (poll(&pw, 1, 10) <= 0 || !(pw.revents & (POLLOUT | POLLERR | POLLHUP)))
            if (now_ms() >= cend)
                harness_fail("connect to the worker's listener: no answer within 1 s");
        if (getsockopt(client_fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err)
            harness_fail("connect to the worker's listener: %s", strerror(err ? err : errno));
    }
    run_until(now_ms() + 1000, accepted);
    if (!accepted())
        harness_fail("the worker did not accept the client within 1 s");
}

/* One piece, whole unless faultline stops reading or closes meanwhile. */
static int client_put(const char *p, size_t n)
{
    size_t off = 0;
    if (client_fd < 0 || client_shut)
        return -1;
    while (off < n && client_fd >= 0) {
        ssize_t w = send(client_fd, p + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (now_ms() >= drive_deadline)
                return -1; /* faultline stopped reading: what is sent is sent */
            step();
            wait_ready();
        } else {
            client_reset_seen = 1;
            client_close(); /* faultline closed or reset the connection */
            return -1;
        }
    }
    return 0;
}

void fz_client_send(const void *p, size_t n, uint8_t frag)
{
    send_pieces(p, n, frag, client_put);
}

void fz_client_shutdown(void)
{
    if (client_shut)
        return;
    client_shut = 1;
    if (trace > 1)
        fprintf(stderr, "faultline-fuzz: trace: client FIN (read %zu so far)\n", client_rx);
    if (client_fd >= 0)
        shutdown(client_fd, SHUT_WR);
}

/* ---- checks ---- */

static int fd_snapshot(unsigned char *bits)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;
    if (!d)
        harness_fail("opendir /proc/self/fd: %s", strerror(errno));
    memset(bits, 0, FZ_MAX_FD / 8);
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        int fd = atoi(de->d_name);
        if (fd == dirfd(d) || fd < 0)
            continue;
        if (fd < FZ_MAX_FD)
            bits[fd / 8] |= (unsigned char)(1u << (fd % 8));
        n++;
    }
    closedir(d);
    return n;
}

static const char *side_str(const struct fl_conn *c, int i, char *buf, size_t len)
{
    const struct fl_side *s = &c->s[i];
    snprintf(buf, len, "%s%s%s%s%s%s%s%s queued=%zu", s->open ? "open" : "not-open",
             s->reading ? ",reading" : "", s->want_read ? ",want_read" : "", s->eof ? ",eof" : "",
             s->shut ? ",shut" : "", s->connecting ? ",connecting" : "",
             s->connected ? ",connected" : "", s->failed ? ",failed" : "", fl_conn_queued(c, i));
    return buf;
}

static void describe_conns(FILE *f)
{
    char a[160], b[160], t[48];
    for (const struct fl_conn *c = W.conns; c; c = c->next) {
        if (uv_is_active((const uv_handle_t *)&c->timer))
            snprintf(t, sizeof(t), "due in %llu ms",
                     (unsigned long long)uv_timer_get_due_in(&c->timer));
        else
            snprintf(t, sizeof(t), "not armed");
        fprintf(f,
                "faultline-fuzz:   conn %llu: handler %s, closing=%u, close_when_idle=%u, "
                "held=%s, timer %s; client side [%s]; upstream side [%s]\n",
                (unsigned long long)c->id, c->ops ? c->ops->name : "(none)", c->closing,
                c->close_when_idle, c->hold.idx ? "yes" : "no", t,
                side_str(c, FL_CLIENT, a, sizeof(a)), side_str(c, FL_UPSTREAM, b, sizeof(b)));
    }
    unsigned n_open = 0, n_eof = 0;
    for (const struct up_conn *u = ups; u; u = u->next) {
        n_open++;
        n_eof += u->eof;
    }
    fprintf(f,
            "faultline-fuzz:   harness: client sent FIN, %s; %zu bytes read from faultline; "
            "harness upstream connections still open: %u (%u got faultline's FIN)\n",
            client_fd < 0 ? (client_eof_seen ? "got faultline's FIN and closed"
                                              : client_reset_seen ? "saw a reset and closed"
                                                                  : "closed")
                          : "faultline has not closed toward it",
            client_rx, n_open, n_eof);
}

static int no_conns(void)
{
    return W.n_conns == 0;
}

static int no_up_handles(void)
{
    return n_up_handles == 0;
}

static void report_stuck(void)
{
    if (stuck_close && stuck_count >= 5)
        return; /* counted; the first few are described */
    fprintf(stderr,
            "faultline-fuzz: %s: connection leak: %u connection(s) not freed %d ms after the "
            "client's FIN, with no answer owed by the upstream\n",
            stuck_close ? "FL_FUZZ_STUCK=close, closing it" : "FINDING", W.n_conns, (int)end_ms);
    describe_conns(stderr);
}

/* FL_FUZZ_STUCK=close with FL_FUZZ_STUCK_DIR=D: the inputs that leaked go to D. */
static void save_stuck_input(void)
{
    const char *dir = getenv("FL_FUZZ_STUCK_DIR");
    char path[512];
    uint64_t h = 1469598103934665603ull;
    if (!dir || !*dir || stuck_count > 200)
        return;
    for (size_t i = 0; i < cur_size; i++)
        h = (h ^ cur_data[i]) * 1099511628211ull;
    snprintf(path, sizeof(path), "%s/stuck-%016llx", dir, (unsigned long long)h);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    if (cur_size)
        fwrite(cur_data, 1, cur_size, f);
    fclose(f);
}

static void print_stuck_count(void)
{
    if (stuck_count)
        fprintf(stderr,
                "faultline-fuzz: FL_FUZZ_STUCK=close: %lu input(s) leaked a connection "
                "(closed with fl_conn_close_all)\n",
                stuck_count);
}

static void harness_init(void);

/* Starts an input (data, size: all of it, for FL_FUZZ_STUCK_DIR); with
 * scripted_first the first upstream connection is the target's. */
static void begin(enum fz_upstream_mode mode, int scripted_first, const uint8_t *data, size_t size)
{
    harness_init();
    cur_data = data;
    cur_size = size;
    up_mode = mode;
    up_scripted_wanted = scripted_first;
    client_shut = client_eof_seen = client_reset_seen = 0;
    client_rx = 0;
    memset(client_head, 0, sizeof(client_head));
    n_up_accepted = 0;
    up_rx_total = 0;
    accepted_before = W.n_conns;
    active_faults_before = atomic_load(&fl_fault_global.active_faults);
    /* Same dice for the same input. */
    fl_rng_seed(&W.rng, 0x5eed);
    drive_deadline = now_ms() + FZ_DRIVE_MS;
    if (check_fds)
        fd_snapshot(fds_before);
    client_open();
}

/* Takes the first n bytes of the input as control bytes into ctl (0 for
 * those the input is too short to have); *data and *size keep the rest. */
static void take_control(const uint8_t **data, size_t *size, uint8_t *ctl, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ctl[i] = i < *size ? (*data)[i] : 0;
    size_t k = *size < n ? *size : n;
    *data += k;
    *size -= k;
}

void fz_begin(enum fz_upstream_mode mode, const uint8_t **data, size_t *size, uint8_t *ctl,
              size_t n)
{
    begin(mode, 0, *data, *size);
    take_control(data, size, ctl, n);
}

void fz_begin_scripted(enum fz_upstream_mode others, const uint8_t **data, size_t *size,
                       uint8_t *ctl, size_t n)
{
    begin(others, 1, *data, *size);
    take_control(data, size, ctl, n);
}

void fz_end(void)
{
    uint64_t t0 = uv_hrtime();
    fz_client_shutdown();
    run_until(now_ms() + end_ms, no_conns);
    if (trace) {
        for (char *q = client_head; *q; q++)
            if (*q < 0x20 || *q > 0x7e)
                *q = '.';
        fprintf(stderr,
                "faultline-fuzz: trace: upstream accepted %u, read %zu; client read %zu (%s) "
                "[%.40s]; freed %s after %.1f ms\n",
                n_up_accepted, up_rx_total, client_rx,
                client_eof_seen ? "FIN" : client_reset_seen ? "reset" : "open", client_head,
                W.n_conns ? "NOT" : "", (double)(uv_hrtime() - t0) / 1e6);
    }
    if (W.n_conns) {
        report_stuck();
        if (!stuck_close)
            abort();
        save_stuck_input();
        stuck_count++;
        fl_conn_close_all(&W);
        run_until(now_ms() + FZ_END_MS, no_conns);
        if (W.n_conns) {
            describe_conns(stderr);
            finding("fl_conn_close_all left %u connection(s) on the worker", W.n_conns);
        }
    }
    /* The harness's own side. */
    client_close();
    for (struct up_conn *u = ups; u; u = u->next)
        up_close(u);
    run_until(now_ms() + FZ_END_MS, no_up_handles);
    if (n_up_handles)
        harness_fail("%u upstream handles did not close", n_up_handles);
    scripted = NULL;
    up_scripted_wanted = 0;
    for (int i = 0; i < 4; i++)
        uv_run(&loop, UV_RUN_NOWAIT); /* callbacks still pending (writes cancelled) */

    if (W.n_holds)
        finding("%u held request(s) left on the worker with no connection", W.n_holds);
    if (W.pool.n_live)
        finding("%u chunk(s) still referenced with no connection left (a chunk leak)",
                W.pool.n_live);
    unsigned af = atomic_load(&fl_fault_global.active_faults);
    if (af != active_faults_before)
        finding("active fault units went from %u to %u with no connection left (a missing "
                "fl_fault_release)",
                active_faults_before, af);
    if (check_fds) {
        unsigned char after[FZ_MAX_FD / 8];
        int leaked = 0;
        fd_snapshot(after);
        for (int fd = 0; fd < FZ_MAX_FD; fd++) {
            if ((after[fd / 8] & (1u << (fd % 8))) && !(fds_before[fd / 8] & (1u << (fd % 8)))) {
                char path[64], target[256];
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                ssize_t n = readlink(path, target, sizeof(target) - 1);
                target[n > 0 ? n : 0] = 0;
                fprintf(stderr, "faultline-fuzz:   new descriptor %d -> %s\n", fd, target);
                leaked++;
            }
        }
        if (leaked)
            finding("%d file descriptor(s) leaked by this input", leaked);
    }
    /* Give the pools back so the next input allocates afresh (and ASan sees
     * use after free across inputs). */
    fl_conn_pool_drain(&W);
    fl_chunk_pool_drain(&W.pool);
    fl_slab_drain(&W.slab);
}

/* ---- setup ---- */

static void warm_up(void)
{
    static const char req[] = "GET / HTTP/1.1\r\nhost: warm.up\r\n\r\n"
                              "GET /abort HTTP/1.1\r\nhost: warm.up\r\n\r\n"
                              "GET /delay HTTP/1.1\r\nhost: warm.up\r\n\r\n";
    begin(FZ_UP_HTTP1, 0, NULL, 0);
    fz_client_send(req, sizeof(req) - 1, 0);
    fz_end();
    if (stuck_count || client_rx == 0)
        harness_fail("the warm-up request got no answer");
}

/* Every target's libFuzzer set-up: the harness (linked into each). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    harness_init();
    return 0;
}

enum fz_close_style fz_close_style_of(unsigned bits)
{
    static const enum fz_close_style styles[4] = {FZ_CLOSE_GRACEFUL, FZ_CLOSE_FIN, FZ_CLOSE_RESET,
                                                  FZ_CLOSE_GRACEFUL};
    return styles[bits & 3];
}

/* Sets up the loop, worker, policy, listeners and fault log (once). */
static void harness_init(void)
{
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};

    if (initialized)
        return;
    initialized = 1;
    signal(SIGPIPE, SIG_IGN);
    verbose = getenv("FL_FUZZ_VERBOSE");
    trace = getenv("FL_FUZZ_TRACE") ? atoi(getenv("FL_FUZZ_TRACE")) : 0;
    fl_log_min_level = verbose && *verbose && *verbose != '0' ? FL_LOG_DEBUG : FL_LOG_ERROR;
    const char *st = getenv("FL_FUZZ_STUCK");
    stuck_close = st && strcmp(st, "close") == 0;
    const char *em = getenv("FL_FUZZ_END_MS");
    if (em && atoi(em) > 0)
        end_ms = (uint64_t)atoi(em);
    atexit(print_stuck_count);

    if (fl_policy_load_buf("fuzz-policy.yaml", policy_yaml, sizeof(policy_yaml) - 1, &p, &errs) <
        0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "faultline-fuzz: %s\n", errs.msgs[i]);
        harness_fail("the embedded policy does not load");
    }
    fl_policy_errors_free(&errs);
    const char *log = getenv("FL_FUZZ_FAULT_LOG");
    if (fl_faultlog_open(log && *log ? log : "/dev/null") < 0)
        harness_fail("cannot open the fault log");
    if (uv_loop_init(&loop) < 0)
        harness_fail("uv_loop_init");
    if (fl_worker_init(&W, &loop, 0) < 0)
        harness_fail("fl_worker_init");
    fl_policy_unref(fl_worker_set_policy(&W, p));
    fl_policy_unref(p);
    listen_on(&front, &front_addr, on_front_connection);
    listen_on(&up_srv, &up_addr, on_up_connection);
    warm_up(); /* libuv's thread pool and lazy descriptors come to be here */
    check_fds = 1;
}
