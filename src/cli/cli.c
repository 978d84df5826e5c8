#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CLI_MAX_BODY (64u << 20) /* a buffered response larger than this is refused */

long long fl_cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fl_cli_resp_free(struct fl_cli_resp *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

int fl_cli_connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* Waits for ev on fd until deadline (ms, < 0: none). Returns 0 or a negative errno. */
static int wait_fd(int fd, short ev, long long deadline)
{
    for (;;) {
        int tmo = -1;
        if (deadline >= 0) {
            long long left = deadline - fl_cli_now_ms();
            if (left <= 0)
                return -ETIMEDOUT;
            tmo = (int)left;
        }
        struct pollfd pfd = {.fd = fd, .events = ev};
        int n = poll(&pfd, 1, tmo);
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        return -errno; /* EINTR included: the caller decides whether to go on */
    }
}

int fl_cli_connect_tcp(const char *host, const char *port, int timeout_ms)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    long long deadline = fl_cli_now_ms() + timeout_ms;
    int e = -EHOSTUNREACH;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -EHOSTUNREACH;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            e = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            freeaddrinfo(res);
            return fd;
        }
        if (errno == EINPROGRESS) {
            e = wait_fd(fd, POLLOUT, deadline);
            if (e == 0) {
                int soerr = 0;
                socklen_t sl = sizeof(soerr);
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                if (soerr == 0) {
                    freeaddrinfo(res);
                    return fd;
                }
                e = -soerr;
            }
        } else {
            e = -errno;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return e;
}

struct rd {
    fl_cli_body_cb cb;
    void *arg;
    struct fl_cli_resp *resp;
    size_t cap;
    int done, stop, oom;
};

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct rd *r = p->data;
    if (r->cb) {
        if (r->cb(at, len, r->arg)) {
            r->stop = 1;
            return HPE_PAUSED;
        }
        return 0;
    }
    struct fl_cli_resp *o = r->resp;
    if (o->len + len + 1 > r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 4096;
        while (ncap < o->len + len + 1)
            ncap *= 2;
        char *nb = ncap <= CLI_MAX_BODY ? realloc(o->body, ncap) : NULL;
        if (!nb) {
            r->oom = 1;
            return HPE_USER;
        }
        o->body = nb;
        r->cap = ncap;
    }
    memcpy(o->body + o->len, at, len);
    o->len += len;
    o->body[o->len] = '\0';
    return 0;
}

static int on_complete(llhttp_t *p)
{
    ((struct rd *)p->data)->done = 1;
    return HPE_PAUSED;
}

static int send_all(int fd, const char *p, size_t n, long long deadline)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN) {
                int e = wait_fd(fd, POLLOUT, deadline);
                if (e < 0)
                    return e;
                continue;
            }
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int fl_cli_http(int fd, const char *method, const char *target, const char *host,
                const char *extra_hdrs, const char *body, size_t body_len, int timeout_ms,
                fl_cli_body_cb cb, void *arg, struct fl_cli_resp *resp)
{
    long long deadline = timeout_ms < 0 ? -1 : fl_cli_now_ms() + timeout_ms;
    char head[4096], buf[16384];
    llhttp_settings_t st;
    llhttp_t parser;
    struct rd r = {.cb = cb, .arg = arg, .resp = resp};
    int e, n;

    memset(resp, 0, sizeof(*resp));
    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: faultctl/" FL_VERSION
                 "\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
                 method, target, host, extra_hdrs ? extra_hdrs : "", body_len);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        e = -ENAMETOOLONG;
        goto out;
    }
    e = send_all(fd, head, (size_t)n, deadline);
    if (e == 0 && body_len)
        e = send_all(fd, body, body_len, deadline);
    /* A server may answer and close before reading everything (an error such
     * as 403 or 413): its answer is still worth reading. */
    if (e < 0 && e != -EPIPE && e != -ECONNRESET)
        goto out;
    int send_err = e;

    llhttp_settings_init(&st);
    st.on_body = on_body;
    st.on_message_complete = on_complete;
    llhttp_init(&parser, HTTP_RESPONSE, &st);
    parser.data = &r;
    while (!r.done && !r.stop) {
        e = wait_fd(fd, POLLIN, deadline);
        if (e < 0)
            goto out;
        ssize_t got = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (got < 0) {
            if (errno == EAGAIN)
                continue;
            e = -errno;
            goto out;
        }
        llhttp_errno_t pe =
            got == 0 ? llhttp_finish(&parser) : llhttp_execute(&parser, buf, (size_t)got);
        if (pe != HPE_OK && pe != HPE_PAUSED) {
            e = r.oom ? -ENOMEM : -EPROTO;
            goto out;
        }
        if (got == 0) {
            /* A close before the response ended is an error; a response
             * delimited by the close is complete. */
            if (!r.done && parser.status_code == 0)
                e = -EPROTO;
            break;
        }
    }
    resp->status = parser.status_code;
    if (!resp->status)
        e = send_err < 0 ? send_err : -EPROTO;
    else if (e == -EPIPE || e == -ECONNRESET)
        e = 0;
out:
    close(fd);
    if (e < 0)
        fl_cli_resp_free(resp);
    return e;
}
