/* fl_bpf_test: the pieces test/bpf/run.sh assembles to exercise the kernel
 * side of transparent mode without the proxy engine.
 *
 *   fl_bpf_test probe
 *   fl_bpf_test proxy --port P --netns PATH --cgroup DIR... --target CIDR:PORT...
 *                     [--no-sockmap] [--no-accel] [--ready FILE]
 *       loads the BPF programs, selects the cgroups, listens inside the netns
 *       and relays each redirected connection to its original destination
 *       (upstream socket opened in the same netns, bypass mark set). Writes
 *       "PROXY orig=ADDR target=N mapped=0|1\n" to the client before relaying,
 *       logs ACCEPT and STATS lines on stdout.
 *   fl_bpf_test server ADDR PORT [TAG]
 *       per connection: writes "HELLO tag=TAG peer=ADDR\n", then echoes.
 *   fl_bpf_test client ADDR PORT [BYTES]
 *       connects, prints "PEER ADDR" (getpeername), the PROXY/HELLO lines it
 *       receives, and with BYTES sends a pseudo-random stream while checking
 *       that the echo comes back byte for byte: "XFER ok bytes=N ms=T".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bpf.h"
#include "cgroup.h"
#include "netns.h"

#define MAX_LIST 8

static void die(const char *what, int err)
{
    fprintf(stderr, "fl_bpf_test: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static char *addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(s->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(s->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
    return buf;
}

/* "10.0.0.1" or "fd77::1" (no brackets) plus a port into ss. */
static socklen_t parse_addr(const char *ip, unsigned port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;

        s->sin6_family = AF_INET6;
        s->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, ip, &s->sin6_addr) != 1)
            die(ip, EINVAL);
        return sizeof(*s);
    } else {
        struct sockaddr_in *s = (struct sockaddr_in *)ss;

        s->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, ip, &s->sin_addr) != 1)
            die(ip, EINVAL);
        return sizeof(*s);
    }
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int set_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/* Blocking read that survives a kernel quirk: tcp_bpf_recvmsg (sockets in a
 * SOCKHASH) returns -EAGAIN from a blocking read when the socket is woken
 * without data, e.g. by write-space wakeups from a concurrent writer. Such
 * reads are counted and retried after poll(). */
static _Atomic unsigned long g_spurious_eagain;

static ssize_t read_retry(int fd, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(fd, buf, len);
        struct pollfd p = {.fd = fd, .events = POLLIN};

        if (n >= 0 || (errno != EAGAIN && errno != EINTR))
            return n;
        if (errno == EAGAIN)
            g_spurious_eagain++;
        if (poll(&p, 1, 20000) == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
    }
}

/* ---- relay ---- */

struct pipe_dir {
    int from, to;
};

static void *pump(void *p)
{
    struct pipe_dir *d = p;
    char buf[65536];
    ssize_t n;

    while ((n = read_retry(d->from, buf, sizeof(buf))) > 0) {
        int err = write_all(d->to, buf, (size_t)n);

        if (err) {
            fprintf(stderr, "relay: write fd %d: %s\n", d->to, strerror(-err));
            break;
        }
    }
    if (n < 0)
        fprintf(stderr, "relay: read fd %d: %s\n", d->from, strerror(errno));
    if (g_spurious_eagain)
        fprintf(stderr, "relay: %lu spurious EAGAIN so far\n", (unsigned long)g_spurious_eagain);
    shutdown(d->to, SHUT_WR);
    return NULL;
}

static void relay(int a, int b)
{
    struct pipe_dir ab = {a, b}, ba = {b, a};
    pthread_t t;

    if (pthread_create(&t, NULL, pump, &ab) != 0) {
        pump(&ab);
        pump(&ba);
        return;
    }
    pump(&ba);
    pthread_join(t, NULL);
}

/* ---- proxy ---- */

static struct fl_bpf *g_bpf;
static uint64_t g_cookie;
static int g_netns = -1;
static int g_no_accel;
static pthread_mutex_t g_out = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&g_out);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    pthread_mutex_unlock(&g_out);
}

static void *proxy_conn(void *p)
{
    int cfd = (int)(intptr_t)p, ufd = -1, ret;
    struct sockaddr_storage peer;
    socklen_t sl = sizeof(peer);
    struct fl_bpf_orig orig;
    char a[80], o[80], line[200];

    if (getpeername(cfd, (struct sockaddr *)&peer, &sl) != 0)
        goto out;
    ret = fl_bpf_lookup_orig_dst(g_bpf, g_cookie, (struct sockaddr *)&peer, &orig);
    if (ret) {
        say("ACCEPT client=%s orig=none err=%d\n", addr_str((struct sockaddr *)&peer, a, sizeof(a)),
            ret);
        goto out;
    }
    if (g_no_accel && fl_bpf_conn_no_accel(g_bpf, g_cookie, (struct sockaddr *)&peer) != 0)
        say("no_accel failed\n");
    addr_str((struct sockaddr *)&orig.dst, o, sizeof(o));
    say("ACCEPT client=%s orig=%s target=%u mapped=%d\n",
        addr_str((struct sockaddr *)&peer, a, sizeof(a)), o, orig.target_id, orig.mapped);
    snprintf(line, sizeof(line), "PROXY orig=%s target=%u mapped=%d\n", o, orig.target_id,
             orig.mapped);
    if (write_all(cfd, line, strlen(line)))
        goto out;
    ret = fl_netns_socket(g_netns, orig.dst.ss_family, &ufd);
    if (ret || set_blocking(ufd))
        goto out;
    if (connect(ufd, (struct sockaddr *)&orig.dst,
                orig.dst.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                              : sizeof(struct sockaddr_in6)) != 0) {
        say("UPSTREAM %s: %s\n", o, strerror(errno));
        goto out;
    }
    relay(cfd, ufd);
out:
    if (ufd >= 0)
        close(ufd);
    close(cfd);
    return NULL;
}

static void *accept_loop(void *p)
{
    int lfd = (int)(intptr_t)p;

    if (set_blocking(lfd))
        return NULL;
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        pthread_t t;

        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept", errno);
        }
        if (pthread_create(&t, NULL, proxy_conn, (void *)(intptr_t)cfd) != 0)
            close(cfd);
        else
            pthread_detach(t);
    }
    return NULL;
}

static void *stats_loop(void *p)
{
    struct fl_bpf_stats last = {0}, st;

    (void)p;
    for (;;) {
        if (fl_bpf_stats(g_bpf, &st) == 0 && memcmp(&st, &last, sizeof(st)) != 0) {
            say("STATS redirected=%" PRIu64 " fail_open=%" PRIu64 " msg_redirects=%" PRIu64
                " msg_pass=%" PRIu64 " socks_added=%" PRIu64 " msg_no_peer=%" PRIu64 "\n",
                st.redirected, st.fail_open, st.msg_redirects, st.msg_pass, st.socks_added,
                st.msg_no_peer);
            last = st;
        }
        usleep(50 * 1000);
    }
    return NULL;
}

static volatile sig_atomic_t g_stop;

static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void log_cb(int level, const char *msg, void *arg)
{
    (void)arg;
    fprintf(stderr, "bpf[%d]: %s\n", level, msg);
}

/* "10.77.0.0/16:8080" or "fd77::/16:8080" */
static void parse_target(const char *s, int *family, unsigned char addr[16], int *prefix,
                         unsigned *port)
{
    char buf[128], *slash, *colon;

    snprintf(buf, sizeof(buf), "%s", s);
    colon = strrchr(buf, ':');
    slash = strchr(buf, '/');
    if (!colon || !slash || colon < slash)
        die(s, EINVAL);
    *colon = '\0';
    *slash = '\0';
    *port = (unsigned)atoi(colon + 1);
    *prefix = atoi(slash + 1);
    *family = strchr(buf, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(*family, buf, addr) != 1)
        die(s, EINVAL);
}

static int cmd_proxy(int argc, char **argv)
{
    const char *cgroups[MAX_LIST], *targets[MAX_LIST], *netns = NULL, *ready = NULL;
    int n_cg = 0, n_t = 0, sockmap = 1, fds[2], ret;
    struct fl_bpf_opts opts = {0};
    unsigned port = 15001;
    pthread_t t;
    struct sigaction sa = {0};

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--netns") && i + 1 < argc)
            netns = argv[++i];
        else if (!strcmp(argv[i], "--cgroup") && i + 1 < argc && n_cg < MAX_LIST)
            cgroups[n_cg++] = argv[++i];
        else if (!strcmp(argv[i], "--target") && i + 1 < argc && n_t < MAX_LIST)
            targets[n_t++] = argv[++i];
        else if (!strcmp(argv[i], "--ready") && i + 1 < argc)
            ready = argv[++i];
        else if (!strcmp(argv[i], "--no-sockmap"))
            sockmap = 0;
        else if (!strcmp(argv[i], "--no-accel"))
            g_no_accel = 1;
        else
            die(argv[i], EINVAL);
    }
    if (!netns)
        die("--netns missing", EINVAL);

    opts.proxy_port = (uint16_t)port;
    opts.sockmap = sockmap;
    opts.log = log_cb;
    ret = fl_bpf_open(&g_bpf, &opts);
    if (ret)
        die("fl_bpf_open", ret);
    for (int i = 0; i < n_cg; i++) {
        uint64_t cgid;

        ret = fl_cgroup_id(cgroups[i], &cgid);
        if (ret)
            die(cgroups[i], ret);
        ret = fl_bpf_attach_cgroup(g_bpf, cgroups[i]);
        if (ret)
            die("fl_bpf_attach_cgroup", ret);
        for (int k = 0; k < n_t; k++) {
            unsigned char addr[16];
            int family, prefix;
            unsigned tport;

            parse_target(targets[k], &family, addr, &prefix, &tport);
            ret = fl_bpf_add_target(g_bpf, cgid, family, addr, prefix, (uint16_t)tport,
                                    (uint32_t)(k + 1));
            if (ret)
                die("fl_bpf_add_target", ret);
        }
    }
    g_netns = open(netns, O_RDONLY | O_CLOEXEC);
    if (g_netns < 0)
        die(netns, errno);
    ret = fl_netns_cookie(g_netns, &g_cookie);
    if (ret)
        die("fl_netns_cookie", ret);
    ret = fl_netns_listen(g_netns, (uint16_t)port, fds);
    if (ret)
        die("fl_netns_listen", ret);
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0 && pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)fds[i]) == 0)
            pthread_detach(t);
    if (pthread_create(&t, NULL, stats_loop, NULL) == 0)
        pthread_detach(t);

    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    say("READY port=%u netns_cookie=%" PRIu64 " sockmap=%d\n", port, g_cookie, sockmap);
    if (ready) {
        FILE *f = fopen(ready, "w");

        if (f)
            fclose(f);
    }
    while (!g_stop)
        pause();
    /* SIGTERM: detach everything and leave. */
    fl_bpf_close(g_bpf);
    say("DETACHED\n");
    _exit(0);
}

/* ---- server ---- */

static const char *g_tag = "server";

static void *server_conn(void *p)
{
    int fd = (int)(intptr_t)p;
    struct sockaddr_storage peer;
    socklen_t sl = sizeof(peer);
    char a[80], line[160];
    struct pipe_dir echo = {fd, fd};

    if (getpeername(fd, (struct sockaddr *)&peer, &sl) == 0) {
        snprintf(line, sizeof(line), "HELLO tag=%s peer=%s\n", g_tag,
                 addr_str((struct sockaddr *)&peer, a, sizeof(a)));
        if (write_all(fd, line, strlen(line)) == 0)
            pump(&echo);
    }
    close(fd);
    return NULL;
}

static int cmd_server(int argc, char **argv) __attribute__((noreturn));
static int cmd_server(int argc, char **argv)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, one = 1;

    if (argc < 2)
        die("server ADDR PORT [TAG]", EINVAL);
    if (argc > 2)
        g_tag = argv[2];
    sl = parse_addr(argv[0], (unsigned)atoi(argv[1]), &ss);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket", errno);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 128) != 0)
        die("bind/listen", errno);
    printf("LISTENING %s %s\n", argv[0], argv[1]);
    fflush(stdout);
    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        pthread_t t;

        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept", errno);
        }
        if (pthread_create(&t, NULL, server_conn, (void *)(intptr_t)c) != 0)
            close(c);
        else
            pthread_detach(t);
    }
}

/* ---- client ---- */

static uint8_t pattern_byte(uint64_t i)
{
    uint64_t x = (i >> 3) * 0x9E3779B97F4A7C15ull;

    x ^= x >> 29;
    return (uint8_t)(x >> (8 * (i & 7)));
}

struct sender {
    int fd;
    uint64_t total;
    int err;
};

static void *send_stream(void *p)
{
    struct sender *s = p;
    uint8_t buf[65536];
    uint64_t off = 0;

    while (off < s->total) {
        size_t n = sizeof(buf);

        if (s->total - off < n)
            n = (size_t)(s->total - off);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_byte(off + i);
        s->err = write_all(s->fd, buf, n);
        if (s->err)
            break;
        off += n;
    }
    shutdown(s->fd, SHUT_WR);
    return NULL;
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmd_client(int argc, char **argv)
{
    struct sockaddr_storage ss, peer;
    socklen_t sl, pl = sizeof(peer);
    struct timeval tv = {.tv_sec = 20};
    uint64_t total = 0, got = 0;
    char a[80], line[256];
    size_t ll = 0;
    int fd;
    double t0;

    if (argc < 2)
        die("client ADDR PORT [BYTES]", EINVAL);
    if (argc > 2)
        total = strtoull(argv[2], NULL, 10);
    sl = parse_addr(argv[0], (unsigned)atoi(argv[1]), &ss);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket", errno);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0)
        die("connect", errno);
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) != 0)
        die("getpeername", errno);
    printf("PEER %s\n", addr_str((struct sockaddr *)&peer, a, sizeof(a)));
    /* Lines up to and including HELLO, one byte at a time so nothing of the
     * echoed stream is consumed. */
    for (;;) {
        char c;
        ssize_t n = read_retry(fd, &c, 1);

        if (n <= 0)
            die("reading the greeting", n < 0 ? errno : ECONNRESET);
        if (c != '\n') {
            if (ll < sizeof(line) - 1)
                line[ll++] = c;
            continue;
        }
        line[ll] = '\0';
        printf("%s\n", line);
        if (!strncmp(line, "HELLO", 5))
            break;
        ll = 0;
    }
    fflush(stdout);
    if (total) {
        struct sender s = {.fd = fd, .total = total};
        uint8_t buf[65536];
        pthread_t t;
        ssize_t n;

        t0 = now_ms();
        if (pthread_create(&t, NULL, send_stream, &s) != 0)
            die("pthread_create", errno);
        while ((n = read_retry(fd, buf, sizeof(buf))) > 0) {
            for (ssize_t i = 0; i < n; i++) {
                if (got + (uint64_t)i >= total || buf[i] != pattern_byte(got + (uint64_t)i)) {
                    printf("XFER fail at offset %" PRIu64 "\n", got + (uint64_t)i);
                    exit(1);
                }
            }
            got += (uint64_t)n;
        }
        pthread_join(t, NULL);
        if (n < 0 || s.err || got != total) {
            printf("XFER fail got=%" PRIu64 " want=%" PRIu64 " read=%s send=%s\n", got, total,
                   n < 0 ? strerror(errno) : "eof", s.err ? strerror(-s.err) : "ok");
            exit(1);
        }
        printf("XFER ok bytes=%" PRIu64 " ms=%.0f spurious_eagain=%lu\n", got, now_ms() - t0,
               (unsigned long)g_spurious_eagain);
    }
    close(fd);
    return 0;
}

static int cmd_probe(void)
{
    char msg[512];
    int ret = fl_bpf_probe(msg, sizeof(msg));

    if (ret) {
        fprintf(stderr, "faultline: %s\n", msg);
        return 2;
    }
    printf("PROBE ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && !strcmp(argv[1], "probe"))
        return cmd_probe();
    if (argc >= 2 && !strcmp(argv[1], "proxy"))
        return cmd_proxy(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "server"))
        return cmd_server(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "client"))
        return cmd_client(argc - 2, argv + 2);
    fprintf(stderr, "usage: fl_bpf_test probe|proxy|server|client ...\n");
    return 2;
}
