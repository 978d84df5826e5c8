#include "admin_http.h"

#include <errno.h>
#include <limits.h>
#include <llhttp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "values.h"

#define ADM_MAX_HDR_BYTES (32 * 1024)
#define ADM_MAX_BODY (1u << 20)      /* a policy file larger than 1 MiB is refused (413) */
#define ADM_REQ_TIMEOUT_MS 10000     /* a request must arrive whole within this */
#define ADM_SUB_QUEUE_CAP (1u << 20) /* bytes queued to one event subscriber before drops */

/* One admin connection and its request. The union's stream is the first
 * member so a handle pointer and the client pointer coincide; freed after
 * both handles closed. */
struct fl_admin_http_req {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } u;
    uv_timer_t timer;
    struct fl_admin_http_req *prev, *next;
    llhttp_t parser;
    char url[FL_ADMIN_HTTP_MAX_URL];
    size_t url_len;
    const char *query; /* into url, after the '?', or NULL */
    char field[32];    /* current header name, truncated; only X-Faultline-File matters */
    size_t field_len;
    char file[256]; /* X-Faultline-File: the name policy errors are reported against */
    size_t file_len;
    size_t hdr_bytes;
    char *body;
    size_t body_len, body_cap;
    struct fl_admin_http_req **watch; /* cleared when the client goes away */
    int reject; /* 403 or 503: answered once the request is read, so the peer sees it */
    int pending_closes;
    unsigned metrics_only : 1;
    unsigned toxiproxy : 1; /* came in on the Toxiproxy API's port */
    unsigned complete : 1;
    unsigned url_overflow : 1;
    unsigned body_overflow : 1;
    unsigned streaming : 1;
    unsigned closing : 1;
};

static struct {
    uv_loop_t *loop;
    fl_admin_http_handler handler;
    int started, stopped;
    char path[PATH_MAX];
    uv_pipe_t pipe;
    int pipe_open;
    uv_tcp_t mtcp[2];
    int n_mtcp;
    uv_tcp_t ttcp[2]; /* --toxiproxy-listen */
    int n_ttcp;
    fl_admin_http_handler thandler;
    struct fl_admin_http_req *clients;
    unsigned n_clients;
} server;

/* ---- clients: I/O ---- */

static void client_close(struct fl_admin_http_req *c);

struct adm_wreq {
    uv_write_t req;
    char *buf;
    int close_after;
};

static void on_client_closed(uv_handle_t *h)
{
    struct fl_admin_http_req *c = h->data;
    if (--c->pending_closes > 0)
        return;
    free(c->body);
    free(c);
}

static void client_close(struct fl_admin_http_req *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->watch)
        *c->watch = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        server.clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    server.n_clients--;
    c->pending_closes = 2;
    uv_close(&c->u.h, on_client_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void write_cb(uv_write_t *req, int status)
{
    struct adm_wreq *w = (struct adm_wreq *)req;
    struct fl_admin_http_req *c = req->handle->data;
    free(w->buf);
    if ((status < 0 || w->close_after) && !c->closing)
        client_close(c);
    free(w);
}

/* Queues buf (malloc'd; ownership passes here) toward c. */
static void client_write(struct fl_admin_http_req *c, char *buf, size_t len, int close_after)
{
    struct adm_wreq *w = malloc(sizeof(*w));
    if (!w || c->closing) {
        free(w);
        free(buf);
        if (!c->closing)
            client_close(c);
        return;
    }
    w->buf = buf;
    w->close_after = close_after;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&w->req, &c->u.s, &b, 1, write_cb) < 0) {
        free(buf);
        free(w);
        client_close(c);
    }
}

static const char *status_text(int s)
{
    switch (s) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 422:
        return "Unprocessable Entity";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

void fl_admin_http_respond(struct fl_admin_http_req *c, int status, const char *ctype,
                           const char *extra, const char *body, size_t len)
{
    if (c->closing)
        return;
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                     status, status_text(status), ctype, len, extra ? extra : "");
    char *buf = malloc((size_t)n + len);
    if (!buf) {
        client_close(c);
        return;
    }
    memcpy(buf, head, (size_t)n);
    memcpy(buf + n, body, len);
    uv_timer_stop(&c->timer);
    client_write(c, buf, (size_t)n + len, 1);
}

void fl_admin_http_json(struct fl_admin_http_req *c, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(o);
    if (!s) {
        fl_admin_http_respond(c, 500, "application/json", NULL, "{\"error\":\"out of memory\"}\n",
                              26);
        return;
    }
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (t) {
        s = t;
        s[n++] = '\n';
        s[n] = '\0';
    }
    fl_admin_http_respond(c, status, "application/json", NULL, s, n);
    free(s);
}

void fl_admin_http_error(struct fl_admin_http_req *c, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fl_admin_http_json(c, status, json_pack("{s:s}", "error", msg));
}

/* ---- clients: parsing ---- */

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct fl_admin_http_req *c = p->data;
    if (c->url_len + len >= sizeof(c->url)) {
        c->url_overflow = 1;
        return HPE_USER;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int hdr_bytes(struct fl_admin_http_req *c, size_t len)
{
    c->hdr_bytes += len;
    return c->hdr_bytes > ADM_MAX_HDR_BYTES ? HPE_USER : 0;
}

/* Appends len bytes at `at` to the NUL-terminated buf of cap bytes holding
 * *used, cutting what does not fit (llhttp may deliver a field in pieces). */
static void append_cut(char *buf, size_t cap, size_t *used, const char *at, size_t len)
{
    size_t room = cap - 1 - *used;
    size_t n = len < room ? len : room;
    memcpy(buf + *used, at, n);
    *used += n;
    buf[*used] = '\0';
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct fl_admin_http_req *c = p->data;
    append_cut(c->field, sizeof(c->field), &c->field_len, at, len);
    return hdr_bytes(c, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct fl_admin_http_req *c = p->data;
    if (strcasecmp(c->field, "x-faultline-file") == 0)
        append_cut(c->file, sizeof(c->file), &c->file_len, at, len);
    return hdr_bytes(c, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct fl_admin_http_req *c = p->data;
    c->field_len = 0;
    c->field[0] = '\0';
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct fl_admin_http_req *c = p->data;
    if (c->body_len + len > ADM_MAX_BODY) {
        c->body_overflow = 1;
        return HPE_USER;
    }
    if (c->body_len + len + 1 > c->body_cap) {
        size_t ncap = c->body_cap ? c->body_cap * 2 : 8192;
        while (ncap < c->body_len + len + 1)
            ncap *= 2;
        char *nb = realloc(c->body, ncap);
        if (!nb)
            return HPE_USER;
        c->body = nb;
        c->body_cap = ncap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    c->body[c->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    ((struct fl_admin_http_req *)p->data)->complete = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t *settings(void)
{
    static llhttp_settings_t s;
    static int init;
    if (!init) {
        llhttp_settings_init(&s);
        s.on_url = on_url;
        s.on_header_field = on_header_field;
        s.on_header_value = on_header_value;
        s.on_header_value_complete = on_header_value_complete;
        s.on_body = on_body;
        s.on_message_complete = on_message_complete;
        init = 1;
    }
    return &s;
}

/* A complete request: refused here, or handed to the endpoints. */
static void dispatch(struct fl_admin_http_req *c)
{
    if (c->reject == 403) {
        fl_admin_http_error(c, 403, "only root and the daemon's user may use the admin API");
        return;
    }
    if (c->reject) {
        fl_admin_http_error(c, 503, "too many admin connections (%d); try again",
                            FL_ADMIN_HTTP_MAX_CLIENTS);
        return;
    }
    char *q = strchr(c->url, '?');
    if (q)
        *q++ = '\0';
    c->query = q;
    if (c->toxiproxy)
        server.thandler(c);
    else
        server.handler(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    /* One loop thread, and each read is parsed before the next: one buffer serves all. */
    static char rbuf[65536];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fl_admin_http_req *c = s->data;
    if (c->closing)
        return;
    if (nread < 0) {
        /* A client may half-close after its request; let a pending answer go out. */
        if (c->complete && !c->streaming && nread == UV_EOF)
            uv_read_stop(s);
        else
            client_close(c);
        return;
    }
    if (nread == 0 || c->complete)
        return;
    llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (e == HPE_PAUSED && c->complete) {
        dispatch(c);
        return;
    }
    if (e != HPE_OK) {
        c->complete = 1;
        if (c->url_overflow)
            fl_admin_http_error(c, 414, "request target longer than %d bytes",
                                FL_ADMIN_HTTP_MAX_URL - 1);
        else if (c->hdr_bytes > ADM_MAX_HDR_BYTES)
            fl_admin_http_error(c, 431, "request headers larger than %d bytes", ADM_MAX_HDR_BYTES);
        else if (c->body_overflow)
            fl_admin_http_error(c, 413, "request body larger than %u bytes", ADM_MAX_BODY);
        else
            fl_admin_http_error(c, 400, "malformed HTTP request: %s",
                                llhttp_get_error_reason(&c->parser));
    }
}

static void client_timeout_cb(uv_timer_t *t)
{
    struct fl_admin_http_req *c = t->data;
    if (!c->complete) {
        c->complete = 1;
        fl_admin_http_error(c, 408, "request not received within %d ms", ADM_REQ_TIMEOUT_MS);
    }
}

/* Rejects peers other than root and the daemon's own user, in case the socket's
 * mode was widened by hand. Returns 1 when the peer may talk to us. */
static int peer_allowed(struct fl_admin_http_req *c)
{
    uv_os_fd_t fd;
    struct ucred cr;
    socklen_t sl = sizeof(cr);
    if (uv_fileno(&c->u.h, &fd) < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &sl) < 0)
        return 0;
    return cr.uid == 0 || cr.uid == geteuid();
}

static void on_connection(uv_stream_t *listener, int status)
{
    int metrics_only = listener != (uv_stream_t *)&server.pipe;
    int toxiproxy = listener == (uv_stream_t *)&server.ttcp[0] ||
                    listener == (uv_stream_t *)&server.ttcp[1];
    if (status < 0 || server.stopped)
        return;
    struct fl_admin_http_req *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    if (metrics_only)
        uv_tcp_init(server.loop, &c->u.tcp);
    else
        uv_pipe_init(server.loop, &c->u.pipe, 0);
    uv_timer_init(server.loop, &c->timer);
    c->u.h.data = c;
    c->timer.data = c;
    c->metrics_only = metrics_only && !toxiproxy;
    c->toxiproxy = toxiproxy;
    c->next = server.clients;
    if (server.clients)
        server.clients->prev = c;
    server.clients = c;
    server.n_clients++;
    if (uv_accept(listener, &c->u.s) < 0) {
        client_close(c);
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, settings());
    c->parser.data = c;
    if (!metrics_only && !peer_allowed(c))
        c->reject = 403;
    else if (server.n_clients > FL_ADMIN_HTTP_MAX_CLIENTS)
        c->reject = 503;
    uv_timer_start(&c->timer, client_timeout_cb, ADM_REQ_TIMEOUT_MS, 0);
    if (uv_read_start(&c->u.s, alloc_cb, read_cb) < 0)
        client_close(c);
}

/* ---- start / stop ---- */

static int mkdir_p(char *dir)
{
    for (char *s = dir + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        int r = mkdir(dir, 0755);
        *s = '/';
        if (r < 0 && errno != EEXIST)
            return -errno;
    }
    /* The socket's own directory is private to the daemon's user. */
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Does a process accept connections on the unix socket at path? A blocking
 * connect, fine before the loop runs: a unix connect never waits on a
 * network. */
static int someone_listens(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, ok;

    if (strlen(path) >= sizeof(sa.sun_path))
        return 0;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static int open_socket(const char *path, char *err, size_t errlen)
{
    struct stat st;
    char dir[PATH_MAX];
    int e;

    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if ((e = mkdir_p(dir)) < 0) {
            snprintf(err, errlen, "cannot create %s for the admin socket: %s; use --admin PATH",
                     dir, strerror(-e));
            return e;
        }
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket; remove it or use --admin PATH",
                     path);
            return -EEXIST;
        }
        if (someone_listens(path)) {
            snprintf(err, errlen,
                     "another faultline daemon answers on %s; stop it first (faultctl --admin %s "
                     "status shows it) or give this one another --admin PATH",
                     path, path);
            return -EADDRINUSE;
        }
        unlink(path); /* stale: left behind by a daemon that died */
    }
    uv_pipe_init(server.loop, &server.pipe, 0);
    server.pipe_open = 1;
    /* Create the socket 0600 from the start: no window where others may connect. */
    mode_t old = umask(0177);
    e = uv_pipe_bind(&server.pipe, path);
    umask(old);
    if (e == 0)
        e = chmod(path, 0600) < 0 ? -errno : 0;
    if (e == 0)
        e = uv_listen((uv_stream_t *)&server.pipe, 64, on_connection);
    if (e < 0) {
        snprintf(err, errlen, "cannot listen on the admin socket %s: %s", path, uv_strerror(e));
        uv_close((uv_handle_t *)&server.pipe, NULL);
        server.pipe_open = 0;
        return e;
    }
    return 0;
}

static int open_metrics(const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss[2];
    int n = fl_values_parse_hostport(addr, 1, ss);
    if (n <= 0) {
        snprintf(err, errlen, "--metrics-listen %s: give ADDR:PORT, e.g. 127.0.0.1:9464", addr);
        return -EINVAL;
    }
    for (int i = 0; i < n; i++) {
        uv_tcp_init(server.loop, &server.mtcp[i]);
        server.n_mtcp++;
        int e = uv_tcp_bind(&server.mtcp[i], (const struct sockaddr *)&ss[i], 0);
        if (e == 0)
            e = uv_listen((uv_stream_t *)&server.mtcp[i], 64, on_connection);
        if (e < 0) {
            snprintf(err, errlen, "--metrics-listen %s: %s%s", addr, uv_strerror(e),
                     e == UV_EADDRINUSE ? " (another process has the port; pick another)" : "");
            return e;
        }
    }
    return 0;
}

int fl_admin_http_listen_toxiproxy(const char *addr, fl_admin_http_handler handler, char *err,
                                   size_t errlen)
{
    struct sockaddr_storage ss[2];
    int n = fl_values_parse_hostport(addr, 1, ss);
    if (n <= 0) {
        snprintf(err, errlen, "--toxiproxy-listen %s: give ADDR:PORT, e.g. 127.0.0.1:8474", addr);
        return -EINVAL;
    }
    server.thandler = handler;
    for (int i = 0; i < n; i++) {
        uv_tcp_init(server.loop, &server.ttcp[i]);
        server.n_ttcp++;
        int e = uv_tcp_bind(&server.ttcp[i], (const struct sockaddr *)&ss[i], 0);
        if (e == 0)
            e = uv_listen((uv_stream_t *)&server.ttcp[i], 64, on_connection);
        if (e < 0) {
            snprintf(err, errlen, "--toxiproxy-listen %s: %s%s", addr, uv_strerror(e),
                     e == UV_EADDRINUSE ? " (a Toxiproxy server may be running there; stop it or "
                                          "pick another port)"
                                        : "");
            return e;
        }
    }
    return 0;
}

int fl_admin_http_start(uv_loop_t *loop, const char *path, const char *metrics_listen,
                        fl_admin_http_handler handler, char *err, size_t errlen)
{
    int e;

    memset(&server, 0, sizeof(server));
    server.loop = loop;
    server.handler = handler;
    server.started = 1;
    if ((e = open_socket(path, err, errlen)) < 0)
        goto fail; /* server.path stays empty: not ours, stop must not remove it */
    snprintf(server.path, sizeof(server.path), "%s", path);
    if (metrics_listen && (e = open_metrics(metrics_listen, err, errlen)) < 0)
        goto fail;
    return 0;
fail:
    fl_admin_http_stop();
    return e;
}

void fl_admin_http_stop(void)
{
    if (!server.started || server.stopped)
        return;
    server.stopped = 1;
    while (server.clients) {
        struct fl_admin_http_req *c = server.clients;
        if (c->streaming) {
            /* End the chunked stream if the socket takes it now; never wait. */
            uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
            (void)uv_try_write(&c->u.s, &b, 1);
        }
        client_close(c);
    }
    if (server.pipe_open)
        uv_close((uv_handle_t *)&server.pipe, NULL);
    server.pipe_open = 0;
    for (int i = 0; i < server.n_mtcp; i++)
        uv_close((uv_handle_t *)&server.mtcp[i], NULL);
    server.n_mtcp = 0;
    for (int i = 0; i < server.n_ttcp; i++)
        uv_close((uv_handle_t *)&server.ttcp[i], NULL);
    server.n_ttcp = 0;
    if (server.path[0])
        unlink(server.path);
    server.path[0] = '\0';
}

/* ---- the request, for the handler ---- */

const char *fl_admin_http_method(const struct fl_admin_http_req *rq)
{
    return llhttp_method_name((llhttp_method_t)rq->parser.method);
}

const char *fl_admin_http_path(const struct fl_admin_http_req *rq)
{
    return rq->url;
}

const char *fl_admin_http_query(const struct fl_admin_http_req *rq)
{
    return rq->query;
}

const char *fl_admin_http_body(const struct fl_admin_http_req *rq, size_t *len)
{
    *len = rq->body_len;
    return rq->body ? rq->body : "";
}

char *fl_admin_http_take_body(struct fl_admin_http_req *rq, size_t *len)
{
    char *b = rq->body ? rq->body : strdup("");
    *len = rq->body_len;
    rq->body = NULL;
    rq->body_len = rq->body_cap = 0;
    return b;
}

const char *fl_admin_http_file(const struct fl_admin_http_req *rq)
{
    return rq->file;
}

int fl_admin_http_metrics_only(const struct fl_admin_http_req *rq)
{
    return rq->metrics_only;
}

void fl_admin_http_watch(struct fl_admin_http_req *rq, struct fl_admin_http_req **slot)
{
    rq->watch = slot;
}

/* ---- streams ---- */

void fl_admin_http_stream(struct fl_admin_http_req *c)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                               "Transfer-Encoding: chunked\r\nCache-Control: no-store\r\n\r\n";
    char *buf = strdup(head);
    if (!buf) {
        client_close(c);
        return;
    }
    uv_timer_stop(&c->timer);
    c->streaming = 1;
    client_write(c, buf, sizeof(head) - 1, 0);
}

void fl_admin_http_broadcast(const char *line, size_t len)
{
    for (struct fl_admin_http_req *c = server.clients; c; c = c->next) {
        if (!c->streaming || c->closing)
            continue;
        if (uv_stream_get_write_queue_size(&c->u.s) > ADM_SUB_QUEUE_CAP)
            continue;
        char *buf = malloc(len + 32);
        if (!buf)
            continue;
        int n = sprintf(buf, "%zx\r\n", len + 1);
        memcpy(buf + n, line, len);
        memcpy(buf + n + len, "\n\r\n", 3);
        client_write(c, buf, (size_t)n + len + 3, 0);
    }
}
