#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "toxic.h"
#include "worker.h"

#define FL_WREQ_MAX_FREE 256

uint64_t fl_conn_header_timeout_ms = 30000;
uint64_t fl_conn_idle_timeout_ms = 15 * 60 * 1000;
uint64_t fl_conn_connect_timeout_ms = 5000;
uint64_t fl_conn_upstream_timeout_ms = 60000;

/* A write in flight. It holds the chunk whose bytes it sends, or owns a copy. */
struct fl_wreq {
    uv_write_t req;
    struct fl_wreq *next;
    struct fl_conn *c;
    struct fl_chunk *ch;
    int side;
};

static void conn_free(struct fl_conn *c)
{
    struct fl_worker *w = c->w;
    if (c->ops && c->ops->destroy)
        c->ops->destroy(c);
    fl_policy_unref(c->policy);
    fl_tox_free(c->tox);
    free(c->scope);
    free(c->pod);
    if (c->upstream_netns >= 0)
        close(c->upstream_netns);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    free(c);
    if (w->draining && w->n_conns == 0 && w->on_empty)
        w->on_empty(w);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct fl_conn *c = h->data;
    if (--c->pending_closes == 0)
        conn_free(c);
}

void fl_conn_close_reset(struct fl_conn *c, unsigned reset_mask)
{
    if (c->closing)
        return;
    c->closing = 1;
    fl_worker_unhold(c->w, &c->hold);
    for (int i = 0; i < 2; i++) {
        struct fl_side *s = &c->s[i];
        if (!s->open)
            continue;
        c->pending_closes++;
        if ((reset_mask & (1u << i)) && (i == FL_CLIENT || s->connected) &&
            uv_tcp_close_reset(&s->tcp, (uv_close_cb)on_handle_closed) == 0)
            continue;
        uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
    }
    c->pending_closes += fl_tox_close(c, on_handle_closed);
    c->pending_closes += 3;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->io_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->up_timer, on_handle_closed);
}

void fl_conn_close(struct fl_conn *c, int reset)
{
    fl_conn_close_reset(c, reset ? 1u << FL_CLIENT : 0);
}

static void upstream_recycled_cb(uv_handle_t *h)
{
    struct fl_conn *c = h->data;
    if (c->closing) {
        on_handle_closed(h);
        return;
    }
    c->pending_closes--;
    memset(&c->s[FL_UPSTREAM], 0, sizeof(c->s[FL_UPSTREAM]));
    if (c->recycled)
        c->recycled(c);
}

void fl_conn_recycle_upstream(struct fl_conn *c, void (*done)(struct fl_conn *c))
{
    struct fl_side *s = &c->s[FL_UPSTREAM];
    if (c->closing || !s->open)
        return;
    s->open = 0;
    s->reading = 0;
    uv_timer_stop(&c->io_timer);
    c->recycled = done;
    c->pending_closes++;
    uv_close((uv_handle_t *)&s->tcp, upstream_recycled_cb);
}

size_t fl_conn_queued_direct(const struct fl_conn *c, int side)
{
    if (!c->s[side].open)
        return 0;
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->s[side].tcp);
}

size_t fl_conn_queued(const struct fl_conn *c, int side)
{
    return fl_conn_queued_direct(c, side) + fl_tox_queued(c, side);
}

size_t fl_conn_backlog(const struct fl_conn *c, int side)
{
    size_t q = fl_conn_queued(c, side);
    size_t pinned = c->s[side].pinned + fl_tox_pinned(c, side);
    return c->s[side].open && pinned > q ? pinned : q;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fl_conn *c = h->data;
    struct fl_chunk *ch = fl_chunk_get(&c->w->pool);
    (void)suggested;
    if (!ch) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(ch->data, FL_CHUNK_CAP);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct fl_conn *c = stream->data;
    int side = (stream == (uv_stream_t *)&c->s[FL_CLIENT].tcp) ? FL_CLIENT : FL_UPSTREAM;
    struct fl_chunk *ch =
        buf->base ? (struct fl_chunk *)(buf->base - offsetof(struct fl_chunk, data)) : NULL;

    if (nread > 0 && !c->closing) {
        ch->len = (uint32_t)nread;
        c->ops->data(c, side, ch, 0, (size_t)nread);
    } else if (nread == UV_EOF && !c->closing) {
        c->s[side].eof = 1;
        fl_conn_update_reading(c);
        c->ops->eof(c, side);
    } else if (nread < 0 && !c->closing) {
        c->s[side].failed = 1;
        if (side == FL_UPSTREAM) {
            fl_conn_update_reading(c);
            c->ops->upstream_error(c, (int)nread);
        } else {
            fl_conn_close(c, 0);
        }
    }
    fl_chunk_unref(ch);
}

void fl_conn_update_reading(struct fl_conn *c)
{
    if (c->closing)
        return;
    for (int i = 0; i < 2; i++) {
        struct fl_side *s = &c->s[i];
        if (!s->open || (i == FL_UPSTREAM && !s->connected))
            continue;
        /* Backpressure: do not read more from a side while the other side's
         * write queue is above the high-water mark. */
        size_t q = fl_conn_backlog(c, !i);
        int want = s->want_read && !s->eof && !s->failed &&
                   q < (s->reading ? FL_WQ_HWM : FL_WQ_LWM);
        if (want && !s->reading) {
            if (uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb) == 0)
                s->reading = 1;
        } else if (!want && s->reading) {
            uv_read_stop((uv_stream_t *)&s->tcp);
            s->reading = 0;
        }
    }
}

static struct fl_wreq *wreq_get(struct fl_worker *w)
{
    struct fl_wreq *r = w->free_wreqs;
    if (r) {
        w->free_wreqs = r->next;
        w->n_free_wreqs--;
        return r;
    }
    return malloc(sizeof(*r));
}

static void wreq_put(struct fl_worker *w, struct fl_wreq *r)
{
    if (w->n_free_wreqs >= FL_WREQ_MAX_FREE) {
        free(r);
        return;
    }
    r->next = w->free_wreqs;
    w->free_wreqs = r;
    w->n_free_wreqs++;
}

void fl_conn_pool_drain(struct fl_worker *w)
{
    struct fl_wreq *r;
    while ((r = w->free_wreqs)) {
        w->free_wreqs = r->next;
        free(r);
    }
    w->n_free_wreqs = 0;
}

static void write_cb(uv_write_t *req, int status)
{
    struct fl_wreq *r = (struct fl_wreq *)req;
    struct fl_conn *c = r->c;
    int side = r->side;

    fl_chunk_unref(r->ch);
    wreq_put(c->w, r);
    if (c->s[side].pinned >= FL_CHUNK_CAP)
        c->s[side].pinned -= FL_CHUNK_CAP;
    if (c->closing)
        return;
    if (status < 0) {
        c->s[side].failed = 1;
        if (side == FL_UPSTREAM && status != UV_ECANCELED)
            c->ops->upstream_error(c, status);
        else if (side == FL_CLIENT)
            fl_conn_close(c, 0);
        return;
    }
    if (c->tox && fl_conn_queued_direct(c, side) == 0) {
        fl_tox_flushed(c, side);
        if (c->closing)
            return;
    }
    fl_conn_update_reading(c);
    if (!c->closing && fl_conn_queued(c, side) == 0 && c->ops->drained)
        c->ops->drained(c, side);
}

int fl_conn_write(struct fl_conn *c, int side, struct fl_chunk *ch, const char *p, size_t len)
{
    if (c->tox && fl_tox_intercepts(c, side) && !c->closing)
        return fl_tox_write(c, side, ch, p, len);
    return fl_conn_write_direct(c, side, ch, p, len);
}

int fl_conn_write_direct(struct fl_conn *c, int side, struct fl_chunk *ch, const char *p,
                         size_t len)
{
    struct fl_side *s = &c->s[side];
    if (c->closing || !s->open || s->failed || s->shut)
        return -EPIPE;
    if (len == 0)
        return 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) == 0 &&
        !(side == FL_UPSTREAM && !s->connected)) {
        /* Most writes fit in the socket buffer: send now and skip the request,
         * the chunk reference and the deferred callback. */
        uv_buf_t tb = uv_buf_init((char *)p, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&s->tcp, &tb, 1);
        if (n == (int)len)
            return 0;
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n != UV_EAGAIN && n != UV_ENOSYS) {
            s->failed = 1;
            if (side == FL_UPSTREAM)
                c->ops->upstream_error(c, n);
            else
                fl_conn_close(c, 0);
            return n;
        }
    }
    struct fl_wreq *r = wreq_get(c->w);
    if (!r)
        goto nomem;
    if (ch) {
        r->ch = fl_chunk_ref(ch);
    } else {
        /* Bytes the protocol made up (synthetic responses): copy into chunks. */
        while (len > FL_CHUNK_CAP) {
            int e = fl_conn_write_direct(c, side, NULL, p, FL_CHUNK_CAP);
            if (e < 0) {
                wreq_put(c->w, r);
                return e;
            }
            p += FL_CHUNK_CAP;
            len -= FL_CHUNK_CAP;
        }
        r->ch = fl_chunk_get(&c->w->pool);
        if (!r->ch) {
            wreq_put(c->w, r);
            goto nomem;
        }
        memcpy(r->ch->data, p, len);
        r->ch->len = (uint32_t)len;
        p = r->ch->data;
    }
    r->c = c;
    r->side = side;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int e = uv_write(&r->req, (uv_stream_t *)&s->tcp, &b, 1, write_cb);
    if (e < 0) {
        fl_chunk_unref(r->ch);
        wreq_put(c->w, r);
        s->failed = 1;
        fl_conn_close(c, 0);
        return e;
    }
    s->pinned += FL_CHUNK_CAP;
    if (fl_conn_backlog(c, side) >= FL_WQ_HWM)
        fl_conn_update_reading(c);
    return 0;
nomem:
    fl_error("conn %llu: out of memory; closing it", (unsigned long long)c->id);
    fl_conn_close(c, 0);
    return -ENOMEM;
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

void fl_conn_shutdown(struct fl_conn *c, int side)
{
    if (c->tox && fl_tox_intercepts(c, side) && !c->closing) {
        fl_tox_shutdown(c, side);
        return;
    }
    fl_conn_shutdown_direct(c, side);
}

void fl_conn_shutdown_direct(struct fl_conn *c, int side)
{
    struct fl_side *s = &c->s[side];
    if (c->closing || !s->open || s->shut || s->failed)
        return;
    if (side == FL_UPSTREAM && !s->connected && !s->connecting)
        return;
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (!req)
        return;
    s->shut = 1;
    if (uv_shutdown(req, (uv_stream_t *)&s->tcp, shutdown_cb) < 0)
        free(req);
}

static void connect_timeout_cb(uv_timer_t *t)
{
    struct fl_conn *c = t->data;
    if (c->closing || !c->s[FL_UPSTREAM].connecting)
        return;
    c->s[FL_UPSTREAM].failed = 1;
    c->ops->upstream_error(c, UV_ETIMEDOUT);
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct fl_conn *c = req->data;
    struct fl_side *s = &c->s[FL_UPSTREAM];
    if (status == UV_ECANCELED || c->closing)
        return;
    s->connecting = 0;
    uv_timer_stop(&c->io_timer);
    if (status < 0) {
        s->failed = 1;
        c->ops->upstream_error(c, status);
        return;
    }
    s->connected = 1;
    uv_tcp_nodelay(&s->tcp, 1);
    s->want_read = 1;
    fl_conn_update_reading(c);
}

int fl_conn_connect_upstream(struct fl_conn *c)
{
    struct fl_side *s = &c->s[FL_UPSTREAM];
    if (s->open)
        return s->failed ? -EPIPE : 0;
    int e;
    if (c->upstream_socket) {
        /* Made by whoever handed the connection over (transparent mode: inside
         * the pod's netns, so the server sees the pod's own address). */
        int fd;
        e = c->upstream_socket(c->upstream_netns, c->dst.ss_family, &fd);
        if (e < 0)
            return e;
        e = uv_tcp_init(c->w->loop, &s->tcp);
        if (e == 0 && (e = uv_tcp_open(&s->tcp, fd)) < 0)
            uv_close((uv_handle_t *)&s->tcp, NULL);
        if (e < 0) {
            close(fd);
            return e;
        }
    } else {
        e = uv_tcp_init_ex(c->w->loop, &s->tcp, c->dst.ss_family);
        if (e < 0)
            return e;
    }
    s->tcp.data = c;
    s->open = 1;
    e = uv_tcp_connect(&c->connect_req, &s->tcp, (const struct sockaddr *)&c->dst, connect_cb);
    if (e < 0) {
        s->failed = 1;
        return e;
    }
    c->connect_req.data = c;
    s->connecting = 1;
    uv_timer_start(&c->io_timer, connect_timeout_cb, fl_conn_connect_timeout_ms, 0);
    return 0;
}

/* The deadline is lazy like the protocols' client deadlines: moving it later
 * costs no timer operation; a timer that fires early re-arms for the rest. */
static void up_timer_cb(uv_timer_t *t)
{
    struct fl_conn *c = t->data;
    uint64_t now = uv_now(c->w->loop);
    if (c->closing || !c->up_deadline)
        return;
    if (now < c->up_deadline) {
        uv_timer_start(&c->up_timer, up_timer_cb, c->up_deadline - now, 0);
        return;
    }
    c->up_deadline = 0;
    if (c->ops && c->ops->upstream_timeout)
        c->ops->upstream_timeout(c);
}

void fl_conn_upstream_deadline(struct fl_conn *c, uint64_t deadline)
{
    c->up_deadline = deadline;
    if (!deadline || c->closing)
        return;
    uint64_t now = uv_now(c->w->loop);
    uint64_t in = deadline > now ? deadline - now : 0;
    if (!uv_is_active((uv_handle_t *)&c->up_timer) || uv_timer_get_due_in(&c->up_timer) > in)
        uv_timer_start(&c->up_timer, up_timer_cb, in, 0);
}

int fl_conn_switch(struct fl_conn *c, const struct fl_proto_ops *ops)
{
    if (c->ops && c->ops->destroy)
        c->ops->destroy(c);
    uv_timer_stop(&c->timer); /* its callback belonged to the old handler */
    c->up_deadline = 0;
    fl_worker_unhold(c->w, &c->hold);
    c->proto = NULL;
    c->ops = ops;
    return ops->init ? ops->init(c) : 0;
}

uint64_t fl_conn_next_id(void)
{
    static atomic_ullong next = 1;
    return atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
}

/* A new conn on w, served first by ops, with its client handle initialised
 * (not yet open), on the worker's list. NULL when out of memory. */
static struct fl_conn *conn_new(struct fl_worker *w, const struct fl_proto_ops *ops)
{
    struct fl_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->w = w;
    c->id = fl_conn_next_id();
    c->upstream_netns = -1;
    if (uv_tcp_init(w->loop, &c->s[FL_CLIENT].tcp) < 0) {
        free(c);
        return NULL;
    }
    c->s[FL_CLIENT].tcp.data = c;
    c->s[FL_CLIENT].open = 1;
    uv_timer_init(w->loop, &c->timer);
    uv_timer_init(w->loop, &c->io_timer);
    uv_timer_init(w->loop, &c->up_timer);
    c->up_timer.data = c;
    c->timer.data = c;
    c->io_timer.data = c;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    c->ops = ops;
    return c;
}

/* The client socket is open and src, dst and scope are set: start serving. */
static int conn_start(struct fl_conn *c)
{
    uv_tcp_nodelay(&c->s[FL_CLIENT].tcp, 1);
    c->policy = fl_policy_ref(c->w->policy);
    int e = c->ops->init(c);
    if (e < 0)
        return e;
    c->s[FL_CLIENT].want_read = 1;
    fl_conn_update_reading(c);
    fl_tox_accept(c);
    return 0;
}

int fl_conn_accept(struct fl_worker *w, uv_stream_t *server, const struct fl_proto_ops *ops,
                   const char *scope, const struct sockaddr *upstream)
{
    struct fl_conn *c = conn_new(w, ops);
    int e;
    if (!c)
        return -ENOMEM;
    c->scope = strdup(scope);
    if (!c->scope) {
        e = -ENOMEM;
        goto fail;
    }
    memcpy(&c->dst, upstream,
           upstream->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    e = uv_accept(server, (uv_stream_t *)&c->s[FL_CLIENT].tcp);
    if (e < 0)
        goto fail;
    int alen = sizeof(c->src);
    uv_tcp_getpeername(&c->s[FL_CLIENT].tcp, (struct sockaddr *)&c->src, &alen);
    if ((e = conn_start(c)) < 0)
        goto fail;
    return 0;
fail:
    c->ops = NULL;
    fl_conn_close(c, 0);
    return e;
}

static void free_on_close(uv_handle_t *h)
{
    free(h);
}

int fl_conn_handoff_accept(uv_stream_t *server, struct fl_conn_handoff **out)
{
    struct fl_conn_handoff *h = calloc(1, sizeof(*h));
    uv_tcp_t *t = malloc(sizeof(*t));
    uv_os_fd_t fd;
    int e;
    if (!h || !t || uv_tcp_init(server->loop, t) < 0) {
        free(h);
        free(t);
        return -ENOMEM;
    }
    h->upstream_netns = -1;
    h->fd = -1;
    /* libuv accepts into a handle of this loop; the socket leaves it as a
     * duplicate descriptor, and the handle closes its own. */
    e = uv_accept(server, (uv_stream_t *)t);
    if (e == 0 && (e = uv_fileno((uv_handle_t *)t, &fd)) == 0) {
        h->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (h->fd < 0)
            e = -errno;
    }
    if (e == 0) {
        socklen_t alen = sizeof(h->src);
        if (getpeername(h->fd, (struct sockaddr *)&h->src, &alen) != 0)
            e = -errno; /* the client is gone already */
    }
    uv_close((uv_handle_t *)t, free_on_close);
    if (e < 0) {
        fl_conn_handoff_free(h);
        return e;
    }
    *out = h;
    return 0;
}

void fl_conn_handoff_free(struct fl_conn_handoff *h)
{
    if (!h)
        return;
    if (h->fd >= 0)
        close(h->fd);
    if (h->upstream_netns >= 0)
        close(h->upstream_netns);
    free(h->scope);
    free(h->pod);
    free(h);
}

int fl_conn_adopt(struct fl_worker *w, struct fl_conn_handoff *h)
{
    struct fl_conn *c = h->ops ? conn_new(w, h->ops) : NULL;
    int e;
    if (!c) {
        fl_conn_handoff_free(h);
        return -ENOMEM;
    }
    e = uv_tcp_open(&c->s[FL_CLIENT].tcp, h->fd);
    if (e == 0)
        h->fd = -1; /* the handle owns it now */
    c->scope = h->scope;
    h->scope = NULL;
    c->pod = h->pod;
    h->pod = NULL;
    c->upstream_netns = h->upstream_netns;
    h->upstream_netns = -1;
    c->upstream_socket = h->upstream_socket;
    c->src = h->src;
    c->dst = h->dst;
    fl_conn_handoff_free(h);
    if (e == 0 && !c->scope)
        e = -ENOMEM;
    if (e == 0 && (e = conn_start(c)) == 0)
        return 0;
    c->ops = NULL;
    fl_conn_close(c, 0);
    return e;
}

void fl_conn_drain_all(struct fl_worker *w)
{
    struct fl_conn *c, *next;
    w->draining = 1;
    for (c = w->conns; c; c = next) {
        next = c->next;
        if (c->closing)
            continue; /* on its way out already (its close callbacks are pending) */
        c->close_when_idle = 1;
        if (c->ops && c->ops->drain)
            c->ops->drain(c);
        else if (c->ops && c->ops->idle && c->ops->idle(c))
            fl_conn_close(c, 0);
    }
    if (w->n_conns == 0 && w->on_empty)
        w->on_empty(w);
}

void fl_conn_close_all(struct fl_worker *w)
{
    struct fl_conn *c, *next;
    for (c = w->conns; c; c = next) {
        next = c->next;
        fl_conn_close(c, 0);
    }
}

void fl_conn_recheck_all(struct fl_worker *w)
{
    struct fl_conn *c, *next;
    for (c = w->conns; c; c = next) {
        next = c->next;
        if (c->tox && !c->closing)
            fl_tox_check(c);
        if (!c->closing && c->scope)
            fl_tox_reroll(c);
    }
}

void fl_conn_close_scope(struct fl_worker *w, const char *scope)
{
    struct fl_conn *c, *next;
    for (c = w->conns; c; c = next) {
        next = c->next;
        if (!c->closing && c->scope && strcmp(c->scope, scope) == 0)
            fl_conn_close(c, 0);
    }
}
