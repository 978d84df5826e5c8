/* fl_loadgen: an open-loop HTTP/1.1 load generator for the benchmarks.
 *
 * wrk is closed-loop: a connection sends its next request only after the last
 * answer, so a slow answer also delays the requests behind it and the
 * measured latencies hide the queueing (coordinated omission). Here requests
 * are due at a fixed rate, t0 + i / rate, whether or not earlier ones were
 * answered, and each latency runs from the time the request was due to the
 * last byte of its answer. A request that finds no idle connection waits in a
 * queue with its clock running, so a proxy that falls behind shows it.
 *
 *   fl_loadgen -r RATE -d SECONDS [-c CONNS] [-w WARMUP] [-p PATH] HOST:PORT
 *
 * Prints one line of figures (rate, sent, answered, non-2xx, errors,
 * percentiles in ms). Answers are delimited by Content-Length or chunked;
 * keep-alive is assumed, a closed connection is re-dialled. Timer: timerfd
 * with absolute deadlines, so sends are due to the microsecond; late_sends
 * counts those that left more than 1 ms after they were due (the generator
 * was not scheduled in time), whose lateness is in their latency. Exits 1
 * when any request failed or went unanswered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

struct lg_conn {
    int fd;
    int busy;          /* a request is outstanding */
    int connecting;
    uint64_t due_ns;   /* when the outstanding request was due */
    size_t got;        /* bytes of the answer's head in buf so far */
    size_t total;      /* bytes of the answer so far */
    size_t want;       /* total answer size once the head is parsed, else 0 */
    int chunked;       /* body in chunks: the decoder below counts to its end */
    int cstate;        /* chunk decoder: CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER */
    uint64_t cleft;    /* bytes left of the chunk (CH_DATA) */
    size_t lline;      /* digits of the size line, or bytes of the trailer line */
    int in_ext;        /* past the size digits of the size line */
    int status;
    struct lg_conn *next_idle;
    char buf[16384];
};

enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER };

static struct sockaddr_in6 g_addr;
static socklen_t g_addrlen;
static char g_req[1024];
static size_t g_reqlen;
static int g_ep;
static struct lg_conn *g_idle;
static uint64_t *g_lat; /* latencies in ns of answers after the warm-up */
static size_t g_nlat, g_caplat;
static uint64_t g_sent, g_ok, g_non2xx, g_errors, g_late, g_queued_max;
static uint64_t g_warm_ns;
/* requests due but waiting for a connection: their due times, a ring */
static uint64_t *g_q;
static size_t g_qcap, g_qhead, g_qlen;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "fl_loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int conn_dial(struct lg_conn *c)
{
    c->fd = socket(g_addr.sin6_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connecting = 1;
    if (connect(c->fd, (struct sockaddr *)&g_addr, g_addrlen) < 0 && errno != EINPROGRESS)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
    return 0;
}

static void record(struct lg_conn *c, uint64_t t)
{
    if (c->status >= 200 && c->status < 300)
        g_ok++;
    else
        g_non2xx++;
    if (c->due_ns >= g_warm_ns) {
        if (g_nlat == g_caplat) {
            g_caplat = g_caplat ? g_caplat * 2 : 65536;
            g_lat = realloc(g_lat, g_caplat * sizeof *g_lat);
            if (!g_lat)
                die("realloc");
        }
        g_lat[g_nlat++] = t - c->due_ns;
    }
}

static void send_req(struct lg_conn *c, uint64_t due)
{
    c->busy = 1;
    c->due_ns = due;
    c->got = c->total = c->want = 0;
    c->chunked = 0;
    c->status = 0;
    g_sent++;
    if (c->connecting)
        return; /* written once the connection is up */
    ssize_t n = send(c->fd, g_req, g_reqlen, MSG_NOSIGNAL);
    if (n != (ssize_t)g_reqlen) {
        /* A request this small fits any socket buffer; anything else is a failure. */
        g_errors++;
        c->busy = 0;
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        if (conn_dial(c) < 0)
            die("connect");
    }
}

/* The request due at `due` goes out now on an idle connection, or waits. */
static void dispatch(uint64_t due)
{
    if (g_idle) {
        struct lg_conn *c = g_idle;
        g_idle = c->next_idle;
        send_req(c, due);
        return;
    }
    if (g_qlen == g_qcap) {
        size_t ncap = g_qcap ? g_qcap * 2 : 1024;
        uint64_t *nq = malloc(ncap * sizeof *nq);
        if (!nq)
            die("malloc");
        for (size_t i = 0; i < g_qlen; i++)
            nq[i] = g_q[(g_qhead + i) % g_qcap];
        free(g_q);
        g_q = nq, g_qcap = ncap, g_qhead = 0;
    }
    g_q[(g_qhead + g_qlen++) % g_qcap] = due;
    if (g_qlen > g_queued_max)
        g_queued_max = g_qlen;
}

static void conn_idle(struct lg_conn *c)
{
    c->busy = 0;
    if (g_qlen) {
        uint64_t due = g_q[g_qhead];
        g_qhead = (g_qhead + 1) % g_qcap, g_qlen--;
        send_req(c, due);
        return;
    }
    c->next_idle = g_idle;
    g_idle = c;
}

static void conn_fail(struct lg_conn *c)
{
    if (c->busy)
        g_errors++;
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    /* Take it off the idle list if it sits there. */
    for (struct lg_conn **pp = &g_idle; *pp; pp = &(*pp)->next_idle)
        if (*pp == c) {
            *pp = c->next_idle;
            break;
        }
    c->busy = 0;
    if (conn_dial(c) < 0)
        die("connect");
}

/* Counts n body bytes at p of a chunked answer; sets want to total at its end.
 * Chunk extensions and trailers are skipped, not checked. */
static int chunks(struct lg_conn *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        switch (c->cstate) {
        case CH_SIZE: /* hex digits, then an extension or CR up to LF */
            if (ch == '\n') {
                if (!c->lline)
                    return -1;
                c->cstate = c->cleft ? CH_DATA : CH_TRAILER;
                c->lline = 0, c->in_ext = 0;
            } else if (!c->in_ext && isxdigit((unsigned char)ch) && c->lline < 15) {
                c->cleft = c->cleft * 16 + (uint64_t)(ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
                c->lline++;
            } else {
                c->in_ext = 1;
            }
            break;
        case CH_DATA: {
            size_t take = n - i < c->cleft ? n - i : (size_t)c->cleft;
            c->cleft -= take;
            i += take - 1;
            if (!c->cleft)
                c->cstate = CH_DATA_END;
            break;
        }
        case CH_DATA_END:
            if (ch == '\n')
                c->cstate = CH_SIZE, c->cleft = 0;
            break;
        case CH_TRAILER:
            if (ch == '\n') {
                if (!c->lline) { /* the empty line: the end */
                    c->want = c->total - (n - i - 1);
                    return 0;
                }
                c->lline = 0;
            } else if (ch != '\r') {
                c->lline++;
            }
            break;
        }
    }
    return 0;
}

/* Parses the answer's head once it is complete: sets status and want. */
static int parse_head(struct lg_conn *c)
{
    char *end = memmem(c->buf, c->got, "\r\n\r\n", 4);
    if (!end)
        return c->got < sizeof c->buf ? 0 : -1;
    size_t head = (size_t)(end - c->buf) + 4;
    if (c->got < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0)
        return -1;
    c->status = atoi(c->buf + 9);
    long cl = -1;
    for (char *p = c->buf; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        if (*p == '\n')
            p++;
        if (strncasecmp(p, "content-length:", 15) == 0)
            cl = strtol(p + 15, NULL, 10);
        else if (strncasecmp(p, "transfer-encoding:", 18) == 0)
            c->chunked = 1; /* only chunked is valid in a response to a GET */
    }
    if (c->chunked) {
        c->want = SIZE_MAX;
        c->cstate = CH_SIZE, c->cleft = 0, c->lline = 0, c->in_ext = 0;
        return chunks(c, c->buf + head, c->got - head);
    }
    if (cl < 0)
        cl = 0; /* 204, 304 */
    c->want = head + (size_t)cl;
    return 0;
}

static void on_event(struct lg_conn *c, uint32_t ev)
{
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (ev & (EPOLLERR | EPOLLHUP))) {
            fprintf(stderr, "fl_loadgen: connect: %s\n", strerror(err ? err : ECONNRESET));
            exit(2);
        }
        c->connecting = 0;
        struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e);
        if (c->busy) {
            uint64_t due = c->due_ns;
            g_sent--;
            send_req(c, due);
        } else {
            conn_idle(c);
        }
        return;
    }
    for (;;) {
        /* The head is kept for parsing; body bytes are only counted. */
        char *dst = c->want ? c->buf : c->buf + c->got;
        size_t room = c->want ? sizeof c->buf : sizeof c->buf - c->got;
        ssize_t n = recv(c->fd, dst, room, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0 || !c->busy) {
            conn_fail(c);
            return;
        }
        c->total += (size_t)n;
        if (!c->want) {
            c->got += (size_t)n;
            if (parse_head(c) < 0) {
                conn_fail(c);
                return;
            }
        } else if (c->chunked && c->want == SIZE_MAX && chunks(c, dst, (size_t)n) < 0) {
            conn_fail(c);
            return;
        }
        if (c->want && c->total >= c->want) {
            record(c, now_ns());
            conn_idle(c);
            return;
        }
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!g_nlat)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(g_nlat - 1) + 0.5);
    return (double)g_lat[i] / 1e6;
}

static void usage(void)
{
    fprintf(stderr, "usage: fl_loadgen -r RATE -d SECONDS [-c CONNS] [-w WARMUP_S] [-p PATH] HOST:PORT\n"
                    "  open-loop HTTP/1.1 GETs at RATE per second; CONNS keep-alive connections\n"
                    "  (default 1000), latency counted from when each request was due\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double rate = 0, dur = 0, warm = 1;
    int nconn = 1000;
    const char *path = "/";
    int opt;
    while ((opt = getopt(argc, argv, "r:d:c:w:p:")) != -1) {
        switch (opt) {
        case 'r': rate = atof(optarg); break;
        case 'd': dur = atof(optarg); break;
        case 'c': nconn = atoi(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 'p': path = optarg; break;
        default: usage();
        }
    }
    if (optind != argc - 1 || rate <= 0 || dur <= 0 || nconn <= 0)
        usage();
    char host[256];
    snprintf(host, sizeof host, "%s", argv[optind]);
    char *colon = strrchr(host, ':');
    if (!colon)
        usage();
    *colon = 0;
    int port = atoi(colon + 1);
    char *h = host;
    if (*h == '[') {
        h++;
        h[strlen(h) - 1] = 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)&g_addr;
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET, a4->sin_port = htons((uint16_t)port), g_addrlen = sizeof *a4;
    } else if (inet_pton(AF_INET6, h, &g_addr.sin6_addr) == 1) {
        g_addr.sin6_family = AF_INET6, g_addr.sin6_port = htons((uint16_t)port), g_addrlen = sizeof g_addr;
    } else {
        fprintf(stderr, "fl_loadgen: %s is not a numeric address\n", h);
        return 2;
    }
    g_reqlen = (size_t)snprintf(g_req, sizeof g_req, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, argv[optind]);

    g_ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (g_ep < 0 || tfd < 0)
        die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &tev);

    struct lg_conn *conns = calloc((size_t)nconn, sizeof *conns);
    if (!conns)
        die("calloc");
    for (int i = 0; i < nconn; i++)
        if (conn_dial(&conns[i]) < 0)
            die("connect");
    /* Let the connections come up before the clock starts. */
    uint64_t setup_end = now_ns() + 2000000000u;
    struct epoll_event evs[256];
    size_t up = 0;
    while (up < (size_t)nconn && now_ns() < setup_end) {
        int n = epoll_wait(g_ep, evs, 256, 100);
        for (int i = 0; i < n; i++)
            if (evs[i].data.ptr)
                on_event(evs[i].data.ptr, evs[i].events);
        up = 0;
        for (int i = 0; i < nconn; i++)
            up += !conns[i].connecting;
    }
    if (up < (size_t)nconn) {
        fprintf(stderr, "fl_loadgen: only %zu of %d connections came up in 2 s\n", up, nconn);
        return 2;
    }

    const uint64_t t0 = now_ns() + 1000000u;
    const uint64_t total = (uint64_t)(rate * dur);
    g_warm_ns = t0 + (uint64_t)(warm * 1e9);
    const double step = 1e9 / rate;
    uint64_t next = 0; /* index of the next request to send */
    uint64_t last_answer_wait = 0;
    for (;;) {
        uint64_t t = now_ns();
        while (next < total) {
            uint64_t due = t0 + (uint64_t)((double)next * step);
            if (due > t)
                break;
            if (t - due > 1000000u)
                g_late++;
            dispatch(due);
            next++;
        }
        if (next < total) {
            uint64_t due = t0 + (uint64_t)((double)next * step);
            struct itimerspec its = {.it_value = {.tv_sec = (time_t)(due / 1000000000u),
                                                  .tv_nsec = (long)(due % 1000000000u)}};
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        } else {
            /* All sent: wait for the answers, at most 10 s. */
            int outstanding = (int)g_qlen;
            for (int i = 0; i < nconn; i++)
                outstanding += conns[i].busy;
            if (!outstanding)
                break;
            if (!last_answer_wait)
                last_answer_wait = t + 10000000000u;
            else if (t > last_answer_wait) {
                g_errors += (uint64_t)outstanding;
                fprintf(stderr, "fl_loadgen: %d requests unanswered 10 s after the last was sent\n",
                        outstanding);
                break;
            }
        }
        int n = epoll_wait(g_ep, evs, 256, next < total ? -1 : 100);
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr) {
                uint64_t exp;
                if (read(tfd, &exp, sizeof exp) < 0 && errno != EAGAIN)
                    die("timerfd");
                continue;
            }
            on_event(evs[i].data.ptr, evs[i].events);
        }
    }
    double took = (double)(now_ns() - t0) / 1e9;
    qsort(g_lat, g_nlat, sizeof *g_lat, cmp_u64);
    printf("rate %.0f/s for %.1f s (%.1f s with the tail): sent %llu answered %llu non2xx %llu errors %llu "
           "late_sends %llu max_queued %llu\n",
           rate, dur, took, (unsigned long long)g_sent, (unsigned long long)g_ok + g_non2xx,
           (unsigned long long)g_non2xx, (unsigned long long)g_errors, (unsigned long long)g_late,
           (unsigned long long)g_queued_max);
    printf("latency_ms n %zu min %.3f p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f\n", g_nlat, pct(0),
           pct(50), pct(90), pct(99), pct(99.9), g_nlat ? (double)g_lat[g_nlat - 1] / 1e6 : 0.0);
    return g_errors ? 1 : 0;
}
