/* h2: HTTP/2 and gRPC proxying with nghttp2. See h2.h for the model.
 *
 * Bytes from a socket go into that side's session with nghttp2_session_mem_recv;
 * frames a session wants to send are collected by send_cb into one pool chunk
 * per side and written once per pump, so many small frames cost one write.
 *
 * A stream (struct h2_stream) lives from the client's HEADERS until both of its
 * halves (client stream, upstream stream) are closed. DATA is copied into the
 * stream's FIFO for the other side and leaves it through a NO_COPY data source,
 * straight into the output chunk; only then is it "consumed" toward the sender,
 * which is what lets a slow reader stop the other side.
 */
#include "h2.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conn.h"
#include "toxic.h"
#include "fault.h"
#include "faultlog.h"
#include "log.h"
#include "match.h"
#include "worker.h"

#define H2_FREE_STREAMS 16

enum st_state {
    ST_HEAD,   /* collecting the request's header block */
    ST_HOLD,   /* held by a delay */
    ST_WAITUP, /* waiting for a dead upstream socket to be replaced */
    ST_UP,     /* forwarded; upstream half exists (or existed) */
    ST_LOCAL,  /* answered or reset here; request bytes are dropped */
};

/* Header fields of one block, kept in a pool chunk while the block is
 * collected and until it has been submitted to the other session (which
 * copies it). */
struct h2_hdrs {
    uint32_t n, used, list_size;
    nghttp2_nv nv[FL_H2_MAX_HEADERS];
    uint8_t str[];
};
#define H2_HDRS_ROOM (FL_CHUNK_CAP - offsetof(struct h2_hdrs, str))
_Static_assert(sizeof(struct h2_hdrs) < FL_CHUNK_CAP / 4, "header table too large for a chunk");

/* Bytes waiting for the other side, in pool chunks linked through ch->next.
 * Never more than the flow-control window granted for them. */
struct h2_fifo {
    struct fl_chunk *head, *tail;
    uint32_t rd; /* read offset in head */
    size_t len;
};

/* The response-side faults decided for one stream (fault.h), applied as its
 * response passes; their fault lines are written when the stream ends, with
 * the status the client was sent. */
#define RF_KINDS 4 /* FL_FAULT_RESPONSE_DELAY .. FL_FAULT_BANDWIDTH */
struct h2_rf {
    const struct fl_rule *rule;
    uint64_t delay_ms;
    unsigned delay : 1, modify : 1, truncate : 1, bw : 1;
    unsigned holding : 1;  /* response_delay: the head waits in head */
    unsigned held_eos : 1; /* ... and it ended the stream (trailers-only) */
    unsigned drain : 1;    /* modify replaced the body: the upstream's is dropped */
    struct fl_chunk *head;
    uint64_t trunc_left;   /* truncate: DATA bytes still to let through */
    uint64_t bw_next[2];   /* bandwidth, by side: the next DATA not before (uv_hrtime) */
    int status;            /* the :status the client was sent; 0: none yet */
    char *line[RF_KINDS];
    size_t line_len[RF_KINDS];
};

struct h2_stream {
    struct h2_stream *prev, *next; /* all streams of the connection */
    struct h2_stream *hnext;       /* held streams, by due time */
    int32_t cid;                   /* stream id toward the client */
    int32_t uid;                   /* toward the upstream; 0 = none */
    uint8_t state;
    unsigned client_open : 1;
    unsigned up_open : 1;
    unsigned req_eos : 1;       /* client finished the request */
    unsigned resp_eos : 1;      /* response complete (upstream or synthetic) */
    unsigned resp_started : 1;  /* final response headers submitted toward the client */
    unsigned grpc : 1;
    unsigned synthetic : 1;     /* response made here: nothing to consume upstream */
    unsigned head_done : 1;     /* request header block complete; later blocks are trailers */
    unsigned too_big : 1;       /* request header block beyond the limits: answered 431 */
    unsigned in_held : 1;       /* on h->held (a delay, a held response, a bandwidth wait) */
    uint32_t over_size;         /* too_big: the block's list size so far, fields dropped */
    struct fl_chunk *hdrs[2];   /* header block being collected, by side it came from */
    struct fl_chunk *trailers[2]; /* trailers waiting for the body before them, by side */
    struct fl_chunk *lent[2];     /* header block a session sends without a copy, by side */
    struct h2_fifo req, resp;
    struct fl_decision d;
    struct fl_policy *policy; /* keeps d.rule alive while held */
    char *dline;              /* a delay's fault line, waiting for the status the client gets */
    size_t dline_len;
    uint64_t due; /* held: fl_worker_deadline() of the delay */
    uint64_t up_since; /* loop time the request went upstream; 0: answered or not sent */
    struct h2_rf *rf;  /* response faults, or NULL */
};

struct h2 {
    nghttp2_session *cs; /* server session, toward the client */
    nghttp2_session *us; /* client session, toward the upstream; NULL until needed */
    struct fl_chunk *out[2];
    struct h2_stream *streams;
    struct h2_stream *held;
    struct h2_stream *free_streams;
    /* The stream whose header block each session is decoding, by side: saves a
     * stream map lookup per header field. Cleared when that stream is freed. */
    struct h2_stream *hdr_st[2];
    unsigned n_free;
    unsigned n_streams;
    uint64_t idle_since; /* loop time the last stream ended (no stream open) */
    uint64_t rst_window_start;
    unsigned rst_count;
    unsigned oversized;       /* request header blocks reset for their size */
    unsigned calm : 1;        /* header blocks too large too often: GOAWAY(ENHANCE_YOUR_CALM) */
    unsigned recycling : 1;   /* the upstream socket is being replaced */
    unsigned up_dead : 1;     /* h->us is being torn down; ignore its callbacks */
    unsigned closing : 1;     /* close once the client queue is empty */
    unsigned lingering : 1;   /* closing: c->timer ends the wait for the last bytes */
    unsigned draining : 1;    /* GOAWAY sent for a graceful shutdown: close when no stream is left */
    unsigned warned : 1;      /* one protocol-error line per connection */
    unsigned pumping : 1;
    unsigned up_err_pending : 1; /* the upstream failed inside a session call */
    int up_err;
    unsigned depth; /* > 0 while inside nghttp2 or our output flush */
};

static void dline_emit(struct fl_conn *c, struct h2_stream *st, int status)
{
    fl_faultlog_release(&c->w->log, &st->dline, st->dline_len, status);
}


static void pump(struct fl_conn *c);
static void arm_hold(struct fl_conn *c);
static void release_head(struct fl_conn *c, struct h2_stream *st);
static void resume(nghttp2_session *s, int32_t id);
static void held_insert(struct fl_conn *c, struct h2_stream *st, uint64_t due);
static void became_idle(struct fl_conn *c);

static struct h2 *H(struct fl_conn *c)
{
    return c->proto;
}

static const char *peer(struct fl_conn *c, char *buf, unsigned len)
{
    return fl_addr_str((struct sockaddr *)&c->src, buf, len);
}

/* ---- FIFO ---- */

static int fifo_put(struct fl_conn *c, struct h2_fifo *f, const uint8_t *p, size_t n)
{
    while (n) {
        struct fl_chunk *t = f->tail;
        if (!t || t->len == FL_CHUNK_CAP) {
            t = fl_chunk_get(&c->w->pool);
            if (!t)
                return -ENOMEM;
            t->len = 0;
            t->next = NULL;
            if (f->tail)
                f->tail->next = t;
            else
                f->head = t;
            f->tail = t;
        }
        size_t k = FL_CHUNK_CAP - t->len;
        if (k > n)
            k = n;
        memcpy(t->data + t->len, p, k);
        t->len += (uint32_t)k;
        f->len += k;
        p += k;
        n -= k;
    }
    return 0;
}

/* Moves n bytes (n <= f->len) from the FIFO to dst, or drops them if dst is NULL. */
static void fifo_take(struct h2_fifo *f, uint8_t *dst, size_t n)
{
    while (n) {
        struct fl_chunk *h = f->head;
        size_t k = h->len - f->rd;
        if (k > n)
            k = n;
        if (dst) {
            memcpy(dst, h->data + f->rd, k);
            dst += k;
        }
        f->rd += (uint32_t)k;
        f->len -= k;
        n -= k;
        if (f->rd == h->len) {
            f->head = h->next;
            if (!f->head)
                f->tail = NULL;
            f->rd = 0;
            h->next = NULL;
            fl_chunk_unref(h);
        }
    }
}

static void fifo_clear(struct h2_fifo *f)
{
    if (f->len)
        fifo_take(f, NULL, f->len);
    while (f->head) { /* an emptied tail chunk */
        struct fl_chunk *h = f->head;
        f->head = h->next;
        h->next = NULL;
        fl_chunk_unref(h);
    }
    f->tail = NULL;
    f->rd = 0;
}

/* ---- output ---- */

/* Copies n bytes toward side into the side's output chunk, from p or (when p is
 * NULL) from the fifo f; a chunk that fills up is written out at once. */
static int out_copy(struct fl_conn *c, int side, const uint8_t *p, struct h2_fifo *f, size_t n)
{
    struct h2 *h = H(c);
    while (n) {
        struct fl_chunk *o = h->out[side];
        if (!o) {
            o = h->out[side] = fl_chunk_get(&c->w->pool);
            if (!o)
                return -ENOMEM;
            o->len = 0;
        }
        size_t k = FL_CHUNK_CAP - o->len;
        if (k > n)
            k = n;
        if (p) {
            memcpy(o->data + o->len, p, k);
            p += k;
        } else {
            fifo_take(f, (uint8_t *)o->data + o->len, k);
        }
        o->len += (uint32_t)k;
        n -= k;
        if (o->len == FL_CHUNK_CAP) {
            h->out[side] = NULL;
            fl_conn_write(c, side, o, o->data, o->len);
            fl_chunk_unref(o);
        }
    }
    return 0;
}

static int out_put(struct fl_conn *c, int side, const uint8_t *p, size_t n)
{
    return out_copy(c, side, p, NULL, n);
}

static int out_fifo(struct fl_conn *c, int side, struct h2_fifo *f, size_t n)
{
    return out_copy(c, side, NULL, f, n);
}

static void out_flush(struct fl_conn *c)
{
    struct h2 *h = H(c);
    for (int side = 0; side < 2; side++) {
        struct fl_chunk *o = h->out[side];
        if (!o || o->len == 0)
            continue;
        h->out[side] = NULL;
        if (!c->closing)
            fl_conn_write(c, side, o, o->data, o->len);
        fl_chunk_unref(o);
    }
}

/* ---- header blocks ---- */

static struct h2_hdrs *hdrs_of(struct fl_chunk *ch)
{
    return (struct h2_hdrs *)ch->data;
}

/* Starts collecting a header block into *slot (a fresh pool chunk). */
static int hdrs_begin(struct fl_conn *c, struct fl_chunk **slot)
{
    fl_chunk_unref(*slot);
    *slot = fl_chunk_get(&c->w->pool);
    if (!*slot)
        return -ENOMEM;
    struct h2_hdrs *hd = hdrs_of(*slot);
    hd->n = hd->used = hd->list_size = 0;
    return 0;
}

/* Where a header block from side goes: the client's request head, else its
 * trailers; the upstream's response heads, else (no :status) its trailers,
 * which are told apart once complete. */
static struct fl_chunk **hdrs_slot(struct h2_stream *st, int side)
{
    if (side == FL_CLIENT && st->head_done)
        return &st->trailers[FL_CLIENT];
    return &st->hdrs[side];
}

static void hdrs_drop(struct h2_stream *st, int side)
{
    fl_chunk_unref(st->hdrs[side]);
    st->hdrs[side] = NULL;
}

/* Returns 0, or -E2BIG when the block exceeds the header list limits. */
static int hdrs_add(struct h2_hdrs *hd, const uint8_t *name, size_t nl, const uint8_t *value,
                    size_t vl)
{
    /* RFC 9113 6.5.2: each field counts its lengths plus 32. */
    size_t ls = (size_t)hd->list_size + nl + vl + 32;
    if (hd->n == FL_H2_MAX_HEADERS || ls > FL_H2_MAX_HEADER_LIST || hd->used + nl + vl > H2_HDRS_ROOM)
        return -E2BIG;
    uint8_t *d = hd->str + hd->used;
    memcpy(d, name, nl);
    memcpy(d + nl, value, vl);
    hd->nv[hd->n++] = (nghttp2_nv){d, d + nl, nl, vl, NGHTTP2_NV_FLAG_NONE};
    hd->used += (uint32_t)(nl + vl);
    hd->list_size = (uint32_t)ls;
    return 0;
}

/* Lends the block in *slot to the session toward side to, to be sent without
 * copies: the fields are marked NO_COPY and the chunk moves to st->lent[to]
 * until that HEADERS frame is sent or dropped (hdrs_returned) or the stream
 * is freed; a session reads no field of a stream it has closed. With a block
 * already lent that way, the fields are copied as before and *slot is left
 * to the caller. Returns the block. */
static struct h2_hdrs *hdrs_lend(struct h2_stream *st, int to, struct fl_chunk **slot)
{
    struct h2_hdrs *hd = hdrs_of(*slot);
    uint8_t flags = NGHTTP2_NV_FLAG_NONE;
    if (!st->lent[to] && hd->n) {
        st->lent[to] = *slot;
        *slot = NULL;
        flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    }
    for (uint32_t i = 0; i < hd->n; i++)
        hd->nv[i].flags = flags;
    return hd;
}

static void hdrs_unlend(struct h2_stream *st, int to)
{
    fl_chunk_unref(st->lent[to]);
    st->lent[to] = NULL;
}

/* The session toward side to is done with HEADERS frame f (sent or dropped):
 * if it carried the lent block (the one frame per stream and side whose
 * fields are NO_COPY), the block goes back. */
static void hdrs_returned(struct h2_stream *st, int to, const nghttp2_frame *f)
{
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.nvlen &&
        (f->headers.nva[0].flags & NGHTTP2_NV_FLAG_NO_COPY_NAME))
        hdrs_unlend(st, to);
}

/* ---- streams ---- */

static struct h2_stream *stream_new(struct fl_conn *c, int32_t cid)
{
    struct h2 *h = H(c);
    struct h2_stream *st = h->free_streams;
    if (st) {
        h->free_streams = st->next;
        h->n_free--;
    } else {
        st = malloc(sizeof(*st));
        if (!st)
            return NULL;
    }
    memset(st, 0, sizeof(*st));
    st->cid = cid;
    st->client_open = 1;
    st->state = ST_HEAD;
    st->next = h->streams;
    if (h->streams)
        h->streams->prev = st;
    h->streams = st;
    h->n_streams++;
    return st;
}

static void held_remove(struct h2 *h, struct h2_stream *st)
{
    if (!st->in_held)
        return;
    for (struct h2_stream **pp = &h->held; *pp; pp = &(*pp)->hnext) {
        if (*pp == st) {
            *pp = st->hnext;
            st->hnext = NULL;
            break;
        }
    }
    st->in_held = 0;
}

/* Puts st on the held list, by due time, to be woken at due (uv_hrtime). */
static void held_insert(struct fl_conn *c, struct h2_stream *st, uint64_t due)
{
    struct h2 *h = H(c);
    held_remove(h, st);
    st->due = due;
    struct h2_stream **pp = &h->held;
    while (*pp && (*pp)->due <= st->due)
        pp = &(*pp)->hnext;
    st->hnext = *pp;
    *pp = st;
    st->in_held = 1;
    arm_hold(c);
}

static void rf_free(struct fl_conn *c, struct h2_stream *st)
{
    struct h2_rf *rf = st->rf;
    if (!rf)
        return;
    for (int k = 0; k < RF_KINDS; k++)
        fl_faultlog_release(&c->w->log, &rf->line[k], rf->line_len[k], rf->status);
    fl_chunk_unref(rf->head);
    free(rf);
    st->rf = NULL;
}

/* Releases the fault accounting a held stream still owns. */
static void held_release(struct fl_conn *c, struct h2_stream *st)
{
    if (st->state != ST_HOLD)
        return;
    held_remove(H(c), st);
    fl_fault_release();
    if (st->d.abort)
        fl_fault_release();
    st->state = ST_LOCAL;
}

/* Frees st once neither session refers to it any more. Bytes still buffered
 * were received and never forwarded: give their window back so the
 * connection-level window does not shrink. */
static void stream_maybe_free(struct fl_conn *c, struct h2_stream *st)
{
    struct h2 *h = H(c);
    if (st->client_open || st->up_open)
        return;
    held_release(c, st);
    held_remove(h, st);
    rf_free(c, st);
    if (st->req.len && h->cs)
        nghttp2_session_consume_connection(h->cs, st->req.len);
    if (st->resp.len && h->us && !h->up_dead && !st->synthetic)
        nghttp2_session_consume_connection(h->us, st->resp.len);
    fifo_clear(&st->req);
    fifo_clear(&st->resp);
    for (int i = 0; i < 2; i++) {
        fl_chunk_unref(st->hdrs[i]);
        fl_chunk_unref(st->trailers[i]);
        fl_chunk_unref(st->lent[i]);
    }
    dline_emit(c, st, 0); /* no answer reached the client */
    fl_policy_unref(st->policy);
    for (int i = 0; i < 2; i++)
        if (h->hdr_st[i] == st)
            h->hdr_st[i] = NULL;
    if (st->prev)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (--h->n_streams == 0)
        became_idle(c);
    if (h->n_free < H2_FREE_STREAMS) {
        st->next = h->free_streams;
        h->free_streams = st;
        h->n_free++;
    } else {
        free(st);
    }
}

/* Drops the request bytes of a stream answered here, giving their window back. */
static void drop_request(struct fl_conn *c, struct h2_stream *st)
{
    struct h2 *h = H(c);
    if (st->req.len)
        nghttp2_session_consume(h->cs, st->cid, st->req.len);
    fifo_clear(&st->req);
    hdrs_drop(st, FL_CLIENT);
    fl_chunk_unref(st->trailers[FL_CLIENT]);
    st->trailers[FL_CLIENT] = NULL;
}

/* ---- data sources ---- */

/* Both directions use this: the FIFO and trailers named by the side the bytes
 * go to. Returns how much to put in the next DATA frame without copying. */
static ssize_t read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    struct h2_stream *st = src->ptr;
    int to = s == h->cs ? FL_CLIENT : FL_UPSTREAM;
    struct h2_fifo *f = to == FL_CLIENT ? &st->resp : &st->req;
    int eos = to == FL_CLIENT ? st->resp_eos : st->req_eos;
    (void)buf;
    (void)id;

    size_t n = f->len < length ? f->len : length;
    struct h2_rf *rf = st->rf;
    if (rf && n) {
        if (to == FL_CLIENT && rf->truncate) {
            /* truncate: the body so far, then RST_STREAM (INTERNAL_ERROR). */
            if (rf->trunc_left == 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            if (n > rf->trunc_left)
                n = (size_t)rf->trunc_left;
            rf->trunc_left -= n;
        }
        unsigned dir = to == FL_CLIENT ? FL_DIR_DOWN : FL_DIR_UP;
        if (rf->bw && (rf->rule->bandwidth.dir & dir)) {
            /* bandwidth: 10 ms worth per frame, no sooner than the rate allows */
            uint64_t rate = rf->rule->bandwidth.rate, now = uv_hrtime();
            if (rf->bw_next[to] > now) {
                held_insert(c, st, rf->bw_next[to]);
                return NGHTTP2_ERR_DEFERRED;
            }
            uint64_t q = rate / 100 ? rate / 100 : 1;
            if (n > q)
                n = (size_t)q;
            /* From when this frame was due, so timer lateness does not add up;
             * after an idle spell, from now (no burst). */
            uint64_t base = rf->bw_next[to] && now - rf->bw_next[to] < 20000000u ? rf->bw_next[to] : now;
            rf->bw_next[to] = base + n * 1000000000ull / rate;
        }
    }
    if (n == 0 && !eos)
        return NGHTTP2_ERR_DEFERRED;
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (eos && n == f->len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        /* The trailers come from the opposite side's block. */
        if (st->trailers[!to]) {
            struct h2_hdrs *hd = hdrs_lend(st, to, &st->trailers[!to]);
            if (nghttp2_submit_trailer(s, id, hd->nv, hd->n) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            else if (!st->trailers[!to])
                hdrs_unlend(st, to);
            fl_chunk_unref(st->trailers[!to]);
            st->trailers[!to] = NULL;
        }
    }
    return (ssize_t)n;
}

static int send_data_cb(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    struct h2_stream *st = src->ptr;
    int to = s == h->cs ? FL_CLIENT : FL_UPSTREAM;
    struct h2_fifo *f = to == FL_CLIENT ? &st->resp : &st->req;
    static const uint8_t zeros[256];

    if (fl_conn_backlog(c, to) >= FL_WQ_HWM)
        return NGHTTP2_ERR_WOULDBLOCK; /* as send_cb */
    if (out_put(c, to, framehd, 9) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (frame->data.padlen > 0) {
        uint8_t pl = (uint8_t)(frame->data.padlen - 1);
        out_put(c, to, &pl, 1);
    }
    if (out_fifo(c, to, f, length) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (frame->data.padlen > 1)
        out_put(c, to, zeros, frame->data.padlen - 1);
    /* The bytes are on their way: let the sender send as many more. */
    if (to == FL_CLIENT) {
        if (!st->synthetic && h->us && !h->up_dead)
            nghttp2_session_consume(h->us, st->uid, length);
    } else {
        nghttp2_session_consume(h->cs, st->cid, length);
    }
    return 0;
}

static int send_cb_common(struct fl_conn *c, int side, const uint8_t *data, size_t len)
{
    return out_put(c, side, data, len) < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/* Above the high-water mark toward a side, frames stay in nghttp2's queue
 * (h2_drained sends them later). That bounds what a peer that does not read
 * makes the proxy hold, and lets nghttp2's own limit on queued ACKs (PING,
 * SETTINGS) end a connection that floods them. */
static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct fl_conn *c = ud;
    int side = s == H(c)->cs ? FL_CLIENT : FL_UPSTREAM;
    (void)flags;
    if (fl_conn_backlog(c, side) >= FL_WQ_HWM)
        return NGHTTP2_ERR_WOULDBLOCK;
    int e = send_cb_common(c, side, data, len);
    return e ? e : (ssize_t)len;
}

/* ---- answers made here ---- */

/* gRPC's grpc-message is percent-encoded (PROTOCOL-HTTP2.md). */
static size_t pct_encode(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len && o + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    return o;
}

#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}

/* Answers st toward the client and stops forwarding its request.
 * grpc_status >= 0 makes a trailers-only gRPC response; otherwise an HTTP
 * response with status, body and extra headers. rule names the injecting
 * rule for the marker header, or NULL for the proxy's own errors.
 * Returns 0 or a negative errno (the stream is then reset). */
static int answer(struct fl_conn *c, struct h2_stream *st, int status, int grpc_status,
                  const char *msg, const struct fl_kv *extra, size_t n_extra, const char *body,
                  size_t body_len, const char *rule)
{
    struct h2 *h = H(c);
    nghttp2_nv nv[8 + 32];
    size_t n = 0;
    char sbuf[12], gbuf[12], clen[24], mbuf[1024];
    char lname[32][64];

    drop_request(c, st);
    fifo_clear(&st->resp);
    st->state = ST_LOCAL;
    st->synthetic = 1;
    st->resp_eos = 1;
    st->resp_started = 1;
    dline_emit(c, st, grpc_status >= 0 ? 200 : status);
    if (grpc_status >= 0) {
        snprintf(gbuf, sizeof(gbuf), "%d", grpc_status);
        nv[n++] = (nghttp2_nv)NV(":status", "200", 3);
        nv[n++] = (nghttp2_nv)NV("content-type", "application/grpc", 16);
        nv[n++] = (nghttp2_nv)NV("grpc-status", gbuf, strlen(gbuf));
        if (msg && *msg) {
            size_t ml = pct_encode(mbuf, sizeof(mbuf), msg, strlen(msg));
            nv[n++] = (nghttp2_nv)NV("grpc-message", mbuf, ml);
        }
        body_len = 0;
    } else {
        int has_ct = 0;
        snprintf(sbuf, sizeof(sbuf), "%d", status);
        nv[n++] = (nghttp2_nv)NV(":status", sbuf, strlen(sbuf));
        for (size_t i = 0; i < n_extra; i++)
            if (strcasecmp(extra[i].name, "content-type") == 0)
                has_ct = 1;
        if (body_len && !has_ct)
            nv[n++] = (nghttp2_nv)NV("content-type", "text/plain", 10);
        snprintf(clen, sizeof(clen), "%zu", body_len);
        nv[n++] = (nghttp2_nv)NV("content-length", clen, strlen(clen));
    }
    if (rule)
        nv[n++] = (nghttp2_nv){(uint8_t *)"x-faultline-injected", (uint8_t *)rule, 20, strlen(rule),
                               NGHTTP2_NV_FLAG_NONE};
    /* HTTP/2 field names are lower case; policies may spell them otherwise. */
    for (size_t i = 0; i < n_extra && i < 32; i++) {
        size_t nl = strlen(extra[i].name);
        if (nl >= sizeof(lname[i]))
            continue;
        for (size_t k = 0; k < nl; k++)
            lname[i][k] = (char)(extra[i].name[k] >= 'A' && extra[i].name[k] <= 'Z'
                                     ? extra[i].name[k] + 32
                                     : extra[i].name[k]);
        nv[n++] = (nghttp2_nv){(uint8_t *)lname[i], (uint8_t *)extra[i].value, nl,
                               strlen(extra[i].value), NGHTTP2_NV_FLAG_NONE};
    }
    int e = 0;
    if (body_len) {
        e = fifo_put(c, &st->resp, (const uint8_t *)body, body_len);
        if (e == 0) {
            nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_cb};
            e = nghttp2_submit_response(h->cs, st->cid, nv, n, &prd);
        }
    } else {
        e = nghttp2_submit_response(h->cs, st->cid, nv, n, NULL);
    }
    if (e != 0) {
        nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid, NGHTTP2_INTERNAL_ERROR);
        return -EIO;
    }
    return 0;
}

/* The upstream could not take the stream: 502 for HTTP/2, UNAVAILABLE for gRPC,
 * as a direct client would see a refused connection. */
static void answer_unreachable(struct fl_conn *c, struct h2_stream *st, const char *why)
{
    char up[64], msg[256];
    fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
    snprintf(msg, sizeof(msg), "faultline: upstream %s (listener '%s'): %s\n", up, c->scope, why);
    if (st->grpc)
        (void)answer(c, st, 0, 14, msg, NULL, 0, NULL, 0, NULL);
    else
        (void)answer(c, st, 502, -1, NULL, NULL, 0, msg, strlen(msg), NULL);
}

/* ---- upstream session ---- */

static nghttp2_session_callbacks *callbacks(void);
static nghttp2_option *options(int server);
static nghttp2_mem *session_mem(struct fl_conn *c, nghttp2_mem *m);
static void upstream_recycled(struct fl_conn *c);

static int upstream_session(struct fl_conn *c)
{
    struct h2 *h = H(c);
    if (h->us)
        return 0;
    nghttp2_mem m;
    int e = nghttp2_session_client_new3(&h->us, callbacks(), c, options(0), session_mem(c, &m));
    if (e != 0)
        return -ENOMEM;
    h->up_dead = 0;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, FL_H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, FL_H2_MAX_HEADER_LIST},
    };
    nghttp2_submit_settings(h->us, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(h->us, NGHTTP2_FLAG_NONE, 0, FL_H2_CONN_WINDOW);
    e = fl_conn_connect_upstream(c);
    if (e < 0) {
        /* Nothing rides on the new session yet: drop it, and the socket with it. */
        nghttp2_session_del(h->us);
        h->us = NULL;
        if (c->s[FL_UPSTREAM].open) {
            h->recycling = 1;
            fl_conn_recycle_upstream(c, upstream_recycled);
        }
        return e;
    }
    return 0;
}

/* Sends st's request upstream (after the rules let it pass). */
static void go_upstream(struct fl_conn *c, struct h2_stream *st)
{
    struct h2 *h = H(c);
    if (h->recycling) {
        st->state = ST_WAITUP;
        return;
    }
    int e = upstream_session(c);
    if (e < 0) {
        answer_unreachable(c, st, uv_strerror(e));
        return;
    }
    struct h2_hdrs *hd = hdrs_lend(st, FL_UPSTREAM, &st->hdrs[FL_CLIENT]);
    int lent = !st->hdrs[FL_CLIENT];
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_cb};
    int body = !st->req_eos || st->req.len || st->trailers[FL_CLIENT];
    int32_t uid = nghttp2_submit_request(h->us, NULL, hd->nv, hd->n, body ? &prd : NULL, st);
    hdrs_drop(st, FL_CLIENT);
    if (uid < 0 && lent)
        hdrs_unlend(st, FL_UPSTREAM);
    if (uid < 0) {
        /* The upstream said GOAWAY: the client may retry elsewhere. */
        st->state = ST_LOCAL;
        drop_request(c, st);
        nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid, NGHTTP2_REFUSED_STREAM);
        return;
    }
    st->uid = uid;
    st->up_open = 1;
    st->state = ST_UP;
    st->up_since = fl_worker_now(c->w);
    if (!c->up_deadline)
        fl_conn_upstream_deadline(c, st->up_since + fl_conn_upstream_timeout_ms);
}

/* --upstream-timeout: every stream whose request went upstream that long ago
 * without the start of an answer is cancelled upstream and answered here (504,
 * or UNAVAILABLE for gRPC); the deadline moves to the next such stream. */
static void h2_upstream_timeout(struct fl_conn *c)
{
    struct h2 *h = H(c);
    uint64_t now = fl_worker_now(c->w), next = 0;
    int n = 0;
    char up[64], msg[256];

    fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
    snprintf(msg, sizeof(msg),
             "faultline: upstream %s (listener '%s') did not answer within %llu ms\n", up,
             c->scope, (unsigned long long)fl_conn_upstream_timeout_ms);
    for (struct h2_stream *st = h->streams; st && !c->closing; st = st->next) {
        if (!st->up_since || st->resp_started || !st->up_open)
            continue;
        if (now - st->up_since < fl_conn_upstream_timeout_ms) {
            uint64_t due = st->up_since + fl_conn_upstream_timeout_ms;
            if (!next || due < next)
                next = due;
            continue;
        }
        st->up_since = 0;
        n++;
        if (h->us && !h->up_dead)
            nghttp2_submit_rst_stream(h->us, NGHTTP2_FLAG_NONE, st->uid, NGHTTP2_CANCEL);
        if (st->client_open) {
            if (st->grpc)
                (void)answer(c, st, 0, 14, msg, NULL, 0, NULL, 0, NULL);
            else
                (void)answer(c, st, 504, -1, NULL, NULL, 0, msg, strlen(msg), NULL);
        }
    }
    if (n)
        fl_warn("conn %llu: upstream %s (listener '%s') did not answer %d stream(s) within %llu "
                "ms (--upstream-timeout); answered 504 (gRPC: UNAVAILABLE)",
                (unsigned long long)c->id, up, c->scope, n,
                (unsigned long long)fl_conn_upstream_timeout_ms);
    if (next && !c->closing)
        fl_conn_upstream_deadline(c, next);
    pump(c);
}

/* The upstream socket failed or closed: streams it carried fail (answered if
 * nothing was sent yet, reset otherwise); the session goes and the next
 * stream dials a new socket. */
static void upstream_recycled(struct fl_conn *c)
{
    struct h2 *h = H(c);
    h->recycling = 0;
    for (struct h2_stream *st = h->streams; st && !c->closing; st = st->next)
        if (st->state == ST_WAITUP)
            go_upstream(c, st);
    pump(c);
}

static void upstream_gone(struct fl_conn *c, int err)
{
    struct h2 *h = H(c);
    char up[64];
    int failed = 0;

    for (struct h2_stream *st = h->streams, *next; st; st = next) {
        next = st->next;
        if (!st->up_open)
            continue;
        st->up_open = 0;
        st->uid = 0;
        failed++;
        if (st->client_open) {
            if (!st->resp_started) {
                answer_unreachable(c, st, err ? uv_strerror(err) : "closed the connection");
            } else if (!st->resp_eos) {
                fifo_clear(&st->resp);
                nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid,
                                          NGHTTP2_INTERNAL_ERROR);
            }
        }
        stream_maybe_free(c, st);
    }
    if (failed) {
        fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
        fl_warn("conn %llu: upstream %s (listener '%s') %s with %d stream(s) open",
                (unsigned long long)c->id, up, c->scope,
                err ? uv_strerror(err) : "closed the connection", failed);
    }
    h->hdr_st[FL_UPSTREAM] = NULL;
    if (h->us) {
        h->up_dead = 1;
        nghttp2_session_del(h->us);
        h->us = NULL;
        h->up_dead = 0;
    }
    fl_chunk_unref(h->out[FL_UPSTREAM]);
    h->out[FL_UPSTREAM] = NULL;
    if (c->s[FL_UPSTREAM].open) {
        h->recycling = 1;
        fl_conn_recycle_upstream(c, upstream_recycled);
    }
    pump(c);
}

/* ---- faults ---- */

static struct fl_fault_event fault_event(struct fl_conn *c, struct h2_stream *st,
                                         enum fl_fault_kind kind, const struct fl_request *rq)
{
    const struct fl_rule *r = st->d.rule;
    struct fl_fault_event ev = {
        .policy = r->policy ? r->policy : st->policy->name,
        .rule = r->name,
        .kind = kind,
        .delay_ms = kind == FL_FAULT_DELAY ? st->d.delay_ms : 0,
        .status = 0,
        .grpc_status = -1,
        .req = rq,
        .src = (const struct sockaddr *)&c->src,
        .dst = (const struct sockaddr *)&c->dst,
        .pod = c->pod,
        .conn = c->id,
    };
    if (kind == FL_FAULT_ABORT) {
        if (st->grpc && fl_decision_grpc_status(&st->d) >= 0)
            ev.grpc_status = fl_decision_grpc_status(&st->d);
        else
            ev.status = fl_decision_abort_status(&st->d);
    }
    return ev;
}

static void log_fault(struct fl_conn *c, struct h2_stream *st, enum fl_fault_kind kind,
                      const struct fl_request *rq)
{
    struct fl_fault_event ev = fault_event(c, st, kind, rq);
    fl_faultlog_emit(&c->w->log, &ev);
}

/* A delay's line waits for the status the client gets (its status field),
 * as HTTP/1.1's does: the upstream's, faultline's own 502/504, or the
 * abort's; 0 when the stream ends without an answer. */
static void dline_defer(struct fl_conn *c, struct h2_stream *st, const struct fl_request *rq)
{
    struct fl_fault_event ev = fault_event(c, st, FL_FAULT_DELAY, rq);
    free(st->dline);
    st->dline = fl_faultlog_hold(&c->w->log, &ev, &st->dline_len);
}

static void do_abort(struct fl_conn *c, struct h2_stream *st)
{
    const struct fl_rule *r = st->d.rule;
    const struct fl_abort *a = &r->abort;
    int g = fl_decision_grpc_status(&st->d);
    if (st->grpc && g >= 0)
        (void)answer(c, st, 0, g,
                     a->message || !st->d.by_header ? a->message : "injected by faultline", a->headers,
                     a->n_headers, NULL, 0, r->name);
    else
        (void)answer(c, st, fl_decision_abort_status(&st->d), -1, NULL, a->headers,
                     a->n_headers, a->body, a->body_len, r->name);
    fl_fault_release();
}

/* Describes the request for the rules. hd must outlive rq; fields points at
 * caller storage for FL_H2_MAX_HEADERS entries. */
static void fill_request(struct h2_stream *st, const struct h2_hdrs *hd, struct fl_request *rq,
                         struct fl_hdr *fields)
{
    memset(rq, 0, sizeof(*rq));
    size_t nf = 0;
    for (uint32_t i = 0; i < hd->n; i++) {
        const nghttp2_nv *nv = &hd->nv[i];
        const char *name = (const char *)nv->name;
        if (nv->namelen && name[0] == ':') {
            if (nv->namelen == 7 && memcmp(name, ":method", 7) == 0) {
                rq->method_str = (const char *)nv->value;
                rq->method_len = nv->valuelen;
            } else if (nv->namelen == 5 && memcmp(name, ":path", 5) == 0) {
                rq->path = (const char *)nv->value;
                rq->target_len = nv->valuelen;
            } else if (nv->namelen == 10 && memcmp(name, ":authority", 10) == 0) {
                rq->authority = (const char *)nv->value;
                rq->authority_len = nv->valuelen;
            }
            continue;
        }
        if (nv->namelen == 4 && memcmp(name, "host", 4) == 0 && !rq->authority) {
            rq->authority = (const char *)nv->value;
            rq->authority_len = nv->valuelen;
        }
        if (nv->namelen == 12 && memcmp(name, "content-type", 12) == 0 && nv->valuelen >= 16 &&
            memcmp(nv->value, "application/grpc", 16) == 0)
            st->grpc = 1;
        fields[nf++] = (struct fl_hdr){name, nv->namelen, (const char *)nv->value, nv->valuelen};
    }
    rq->headers = fields;
    rq->n_headers = nf;
    if (!rq->method_str) {
        rq->method_str = "";
    }
    rq->method = fl_values_parse_method(rq->method_str, rq->method_len);
    if (!rq->path)
        rq->path = "";
    const char *q = memchr(rq->path, '?', rq->target_len);
    rq->path_len = q ? (size_t)(q - rq->path) : rq->target_len;
    rq->proto = st->grpc ? FL_PROTO_GRPC : FL_PROTO_H2;
    if (st->grpc && fl_match_set_grpc_path(rq) < 0) {
        rq->grpc_service = NULL;
        rq->grpc_method = NULL;
    }
}

/* The response faults st->d decided, with their fault lines formatted now
 * (the request's facts are at hand) and written when the stream ends. */
static struct h2_rf *resp_faults(struct fl_conn *c, struct h2_stream *st, const struct fl_request *rq)
{
    const struct fl_decision *d = &st->d;
    if (!d->rule || !(d->resp_delay || d->modify || d->truncate || d->bandwidth))
        return NULL;
    struct h2_rf *rf = calloc(1, sizeof(*rf));
    if (!rf)
        return NULL;
    const struct fl_rule *r = d->rule;
    rf->rule = r;
    rf->delay = d->resp_delay ? 1 : 0;
    rf->delay_ms = d->resp_delay_ms;
    rf->modify = d->modify ? 1 : 0;
    rf->truncate = d->truncate ? 1 : 0;
    rf->bw = d->bandwidth ? 1 : 0;
    const int on[RF_KINDS] = {rf->delay, rf->modify, rf->truncate, rf->bw};
    for (int k = 0; k < RF_KINDS; k++) {
        if (!on[k])
            continue;
        char extra[96];
        enum fl_fault_kind kind = (enum fl_fault_kind)(FL_FAULT_RESPONSE_DELAY + k);
        struct fl_fault_event ev = fault_event(c, st, kind, rq);
        ev.delay_ms = rf->delay_ms;
        ev.extra = fl_faultlog_resp_extra(r, kind, st->grpc, extra, sizeof(extra));
        rf->line[k] = fl_faultlog_hold(&c->w->log, &ev, &rf->line_len[k]);
    }
    return rf;
}

static void hold(struct fl_conn *c, struct h2_stream *st)
{
    st->state = ST_HOLD;
    held_insert(c, st, fl_worker_deadline(st->d.delay_ms));
}

/* The request's header block is complete: decide its fate. */
static void request_ready(struct fl_conn *c, struct h2_stream *st)
{
    struct h2 *h = H(c);
    struct fl_worker *w = c->w;
    struct fl_request rq;
    struct fl_hdr fields[FL_H2_MAX_HEADERS];

    if (c->policy != w->policy) {
        fl_policy_unref(c->policy);
        c->policy = fl_policy_ref(w->policy);
    }
    fill_request(st, hdrs_of(st->hdrs[FL_CLIENT]), &rq, fields);
    int hit = c->policy &&
              fl_fault_decide(c->policy, c->scope, &rq, &w->rng, fl_worker_now(w), &st->d);
    if (c->policy)
        fl_tox_on_request(c, st->d.rule, &rq); /* connection faults start at the first match */
    if (c->closing)
        return;
    if (hit) {
        st->policy = fl_policy_ref(c->policy);
        st->rf = resp_faults(c, st, &rq);
        /* Only response faults: the request itself goes upstream. */
        hit = st->d.bad || st->d.reset || st->d.abort || st->d.delay;
    }
    if (!hit) {
        go_upstream(c, st);
        return;
    }
    if (st->d.bad) {
        /* A from_headers rule and an x-faultline-* header it cannot use. */
        char body[400];
        snprintf(body, sizeof(body), "faultline: %s (rule '%s' takes its faults from the "
                 "request's x-faultline-* headers)\n", st->d.bad_msg, st->d.rule->name);
        if (st->grpc)
            (void)answer(c, st, 0, 3 /* INVALID_ARGUMENT */, st->d.bad_msg, NULL, 0, NULL, 0,
                         NULL);
        else
            (void)answer(c, st, 400, -1, NULL, NULL, 0, body, strlen(body), NULL);
        return;
    }
    if (st->d.reset) {
        log_fault(c, st, FL_FAULT_RESET, &rq);
        st->state = ST_LOCAL;
        drop_request(c, st);
        nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    if (st->d.delay)
        dline_defer(c, st, &rq);
    if (st->d.abort)
        log_fault(c, st, FL_FAULT_ABORT, &rq);
    if (st->d.delay) {
        hold(c, st);
        return;
    }
    do_abort(c, st);
}

static void held_cb(struct fl_hold *hd)
{
    struct fl_conn *c = fl_conn_of_hold(hd);
    struct h2 *h = H(c);
    if (c->closing)
        return;
    uint64_t now_ns = uv_hrtime();
    while (h->held && h->held->due <= now_ns && !c->closing) {
        struct h2_stream *st = h->held;
        h->held = st->hnext;
        st->hnext = NULL;
        st->in_held = 0;
        if (st->state != ST_HOLD) {
            /* A held response head, or a bandwidth wait, is over. */
            if (st->rf && st->rf->holding)
                release_head(c, st);
            else if (st->client_open) {
                resume(h->cs, st->cid);
                if (st->up_open && h->us && !h->up_dead)
                    resume(h->us, st->uid);
            }
            continue;
        }
        fl_fault_release(); /* the delay's share; do_abort releases the abort's */
        if (st->d.abort) {
            do_abort(c, st);
        } else {
            go_upstream(c, st);
        }
    }
    arm_hold(c);
    pump(c);
}

static void linger_cb(uv_timer_t *t)
{
    fl_conn_close(t->data, 0);
}

static void go_away(struct fl_conn *c, uint32_t code);

/* No stream open since h->idle_since: after fl_conn_idle_timeout_ms the client is
 * told GOAWAY and the connection closes. The deadline is lazy, like HTTP/1's:
 * streams coming and going only move idle_since, and a timer that fires early
 * re-arms for the rest. */
static void idle_cb(uv_timer_t *t)
{
    struct fl_conn *c = t->data;
    struct h2 *h = H(c);
    uint64_t now = fl_worker_now(c->w);
    if (c->closing || h->closing || h->n_streams)
        return; /* armed again when the last stream ends */
    if (now - h->idle_since < fl_conn_idle_timeout_ms) {
        uv_timer_start(&c->timer, idle_cb, fl_conn_idle_timeout_ms - (now - h->idle_since), 0);
        return;
    }
    go_away(c, NGHTTP2_NO_ERROR);
    pump(c);
}

static void became_idle(struct fl_conn *c)
{
    struct h2 *h = H(c);
    if (c->closing || h->closing)
        return;
    if (h->draining) { /* the last stream of a graceful shutdown is done */
        go_away(c, NGHTTP2_NO_ERROR);
        return; /* the caller's pump sends it */
    }
    h->idle_since = fl_worker_now(c->w);
    if (!uv_is_active((uv_handle_t *)&c->timer))
        uv_timer_start(&c->timer, idle_cb, fl_conn_idle_timeout_ms, 0);
}

/* Closing: the last bytes get FL_H2_LINGER_MS to leave. */
static void start_linger(struct fl_conn *c)
{
    H(c)->lingering = 1;
    uv_timer_start(&c->timer, linger_cb, FL_H2_LINGER_MS, 0);
}

/* The conn's hold waits for the earliest held stream (none: not held). */
static void arm_hold(struct fl_conn *c)
{
    struct h2 *h = H(c);
    if (c->closing)
        return;
    if (h->held && (!c->hold.idx || c->hold.due_ns != h->held->due)) {
        fl_worker_unhold(c->w, &c->hold);
        if (fl_worker_hold(c->w, &c->hold, h->held->due, held_cb) < 0)
            fl_conn_close(c, 1); /* out of memory: a reset, rather than no delay */
    } else if (!h->held) {
        fl_worker_unhold(c->w, &c->hold);
    }
}

/* ---- session callbacks ---- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    int side = s == h->cs ? FL_CLIENT : FL_UPSTREAM;
    if (side == FL_UPSTREAM && h->up_dead)
        return 0;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (side == FL_CLIENT && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        st = stream_new(c, f->hd.stream_id);
        if (!st)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
    }
    h->hdr_st[side] = st;
    if (!st || hdrs_begin(c, hdrs_slot(st, side)) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    (void)flags;
    if (f->hd.type != NGHTTP2_HEADERS || h->up_dead)
        return 0;
    int side = s == h->cs ? FL_CLIENT : FL_UPSTREAM;
    struct h2_stream *st = h->hdr_st[side];
    if (!st || (side == FL_CLIENT ? st->cid : st->uid) != f->hd.stream_id)
        st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    struct fl_chunk **slot = hdrs_slot(st, side);
    if (side == FL_CLIENT && st->too_big) {
        /* A head somewhat over the limit is answered 431 once complete. One
         * that keeps expanding (an HPACK bomb: a small frame whose indexed
         * fields decode to megabytes) is reset at once, so nghttp2 stops
         * validating and handing over its fields; one connection doing that
         * again and again is told to go away. */
        st->over_size += (uint32_t)(nl + vl + 32 < UINT32_MAX / 2 ? nl + vl + 32 : UINT32_MAX / 2);
        if (st->over_size <= FL_H2_MAX_HEADER_LIST * FL_H2_OVERSIZE_FACTOR)
            return 0;
        if (++h->oversized > FL_H2_OVERSIZE_MAX) {
            h->calm = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE; /* h2_data sends the GOAWAY */
        }
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (!*slot)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (hdrs_add(hdrs_of(*slot), name, nl, value, vl) == 0)
        return 0;
    /* Beyond SETTINGS_MAX_HEADER_LIST_SIZE: that stream only. A request head
     * is answered 431 once complete; anything else resets the stream. */
    if (side == FL_CLIENT && !st->head_done) {
        st->too_big = 1;
        st->over_size = hdrs_of(*slot)->list_size;
        return 0;
    }
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static void resume(nghttp2_session *s, int32_t id)
{
    if (s && id > 0)
        nghttp2_session_resume_data(s, id);
}

/* A header block from the client after the request: trailers, already in
 * trailers[FL_CLIENT]; they follow the body upstream (read_cb). */
static void client_trailers(struct fl_conn *c, struct h2_stream *st)
{
    struct h2 *h = H(c);
    st->req_eos = 1;
    if (st->state == ST_LOCAL) {
        fl_chunk_unref(st->trailers[FL_CLIENT]);
        st->trailers[FL_CLIENT] = NULL;
        return;
    }
    if (st->state == ST_UP)
        resume(h->us, st->uid);
}

/* The upstream session runs without nghttp2's HTTP messaging checks (they
 * cost 6% of a proxied request), so the structure the response path relies on
 * is checked here (RFC 9113 8.1, 8.3.2): a head has one three-digit :status
 * and no other pseudo-header, pseudo-headers come first, and trailers have
 * none and end the stream. Field names and values are forwarded as the
 * upstream sent them; the client's own HTTP/2 stack judges those. Returns
 * the :status field of a valid head, or NULL with *bad set. */
static const nghttp2_nv *response_block(const struct h2_hdrs *hd, int head, int eos, int *bad)
{
    const nghttp2_nv *status = NULL;
    *bad = 0;
    for (uint32_t i = 0; i < hd->n; i++) {
        const nghttp2_nv *nv = &hd->nv[i];
        if (!nv->namelen || nv->name[0] != ':')
            continue;
        if (!head || status || i != 0 || nv->namelen != 7 || memcmp(nv->name, ":status", 7) != 0)
            goto bad;
        status = nv;
    }
    if (head) {
        if (!status || status->valuelen != 3 || (status->value[0] == '1' && eos))
            goto bad;
        for (int k = 0; k < 3; k++)
            if (status->value[k] < '0' || status->value[k] > '9')
                goto bad;
        return status;
    }
    if (!eos)
        goto bad;
    return NULL;
bad:
    *bad = 1;
    return NULL;
}

static int nv_is(const nghttp2_nv *nv, const char *name)
{
    size_t n = strlen(name);
    return nv->namelen == n && memcmp(nv->name, name, n) == 0;
}

static int nv_listed(const nghttp2_nv *nv, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (nv->namelen == strlen(names[i]) && strncasecmp((const char *)nv->name, names[i], nv->namelen) == 0)
            return 1;
    return 0;
}

static int nv_set(const nghttp2_nv *nv, const struct fl_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (nv->namelen == strlen(kv[i].name) && strncasecmp((const char *)nv->name, kv[i].name, nv->namelen) == 0)
            return 1;
    return 0;
}

#define ADD(hd, n, nl, v, vl) (hdrs_add((hd), (const uint8_t *)(n), (nl), (const uint8_t *)(v), (vl)))

/* The block the client gets in place of the upstream's hd, under st's
 * response faults: a head (with :status) carries the marker and modify's
 * status, headers and body framing; gRPC's grpc-status and grpc-message are
 * replaced in a trailers-only head or in the trailers. NULL when out of
 * memory or beyond the limits (the upstream's block is sent). */
static struct fl_chunk *rf_block(struct fl_conn *c, struct h2_stream *st, const struct h2_hdrs *hd,
                                 int head)
{
    struct h2_rf *rf = st->rf;
    const struct fl_rule *r = rf->rule;
    const struct fl_modify *m = rf->modify ? &r->modify : NULL;
    struct fl_chunk *ch = NULL;
    char num[24], msg[1024];
    if (hdrs_begin(c, &ch) < 0)
        return NULL;
    struct h2_hdrs *out = hdrs_of(ch);
    int e = 0, grpc_mod = m && st->grpc && (m->grpc_status >= 0 || m->message);
    int have_gs = 0;
    for (uint32_t i = 0; i < hd->n && !e; i++) {
        const nghttp2_nv *nv = &hd->nv[i];
        if (head && nv_is(nv, ":status")) {
            int code = m && m->status ? m->status
                                      : (nv->value[0] - '0') * 100 + (nv->value[1] - '0') * 10 +
                                            (nv->value[2] - '0');
            rf->status = code;
            snprintf(num, sizeof(num), "%d", code);
            e = ADD(out, ":status", 7, num, 3);
            continue;
        }
        if (m && (nv_listed(nv, m->remove, m->n_remove) || nv_set(nv, m->set, m->n_set)))
            continue;
        if (nv_is(nv, "x-faultline-injected") || (rf->drain && nv_is(nv, "content-length")))
            continue;
        if (grpc_mod && nv_is(nv, "grpc-status")) {
            have_gs = 1;
            if (m->grpc_status >= 0) {
                snprintf(num, sizeof(num), "%d", m->grpc_status);
                e = ADD(out, "grpc-status", 11, num, strlen(num));
                continue;
            }
        }
        if (grpc_mod && nv_is(nv, "grpc-message") && (m->message || m->grpc_status >= 0))
            continue; /* replaced (or, with a new status alone, dropped) below */
        e = ADD(out, nv->name, nv->namelen, nv->value, nv->valuelen);
    }
    if (grpc_mod && have_gs && m->message && !e) {
        size_t ml = pct_encode(msg, sizeof(msg), m->message, strlen(m->message));
        e = ADD(out, "grpc-message", 12, msg, ml);
    }
    for (size_t i = 0; head && m && i < m->n_set && !e; i++)
        e = ADD(out, m->set[i].name, strlen(m->set[i].name), m->set[i].value, strlen(m->set[i].value));
    if (head && rf->drain && !e) {
        snprintf(num, sizeof(num), "%zu", m->body_len);
        e = ADD(out, "content-length", 14, num, strlen(num));
    }
    if ((head || grpc_mod) && !e) /* gRPC clients see the trailers' metadata */
        e = ADD(out, "x-faultline-injected", 20, r->name, strlen(r->name));
    if (e) {
        fl_chunk_unref(ch);
        return NULL;
    }
    return ch;
}

/* Sends the response head in *slot toward the client (eos: it ends the
 * stream), rewritten by the stream's response faults. */
static void submit_head(struct fl_conn *c, struct h2_stream *st, struct fl_chunk **slot, int eos)
{
    struct h2 *h = H(c);
    if (st->rf) {
        struct h2_rf *rf = st->rf;
        if (rf->modify && rf->rule->modify.body && !st->grpc) {
            /* The body is replaced: what the upstream sent of its own is
             * dropped (its window given back), and so is the rest as it comes. */
            rf->drain = 1;
            if (st->resp.len && h->us && !h->up_dead)
                nghttp2_session_consume(h->us, st->uid, st->resp.len);
            fifo_clear(&st->resp);
            if (fifo_put(c, &st->resp, (const uint8_t *)rf->rule->modify.body,
                         rf->rule->modify.body_len) < 0) {
                nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid, NGHTTP2_INTERNAL_ERROR);
                fl_chunk_unref(*slot);
                *slot = NULL;
                return;
            }
            if (eos && rf->rule->modify.body_len)
                eos = 0; /* the new body still has to go */
        }
        if (rf->truncate)
            rf->trunc_left = rf->rule->truncate.after;
        struct fl_chunk *nb = rf_block(c, st, hdrs_of(*slot), 1);
        if (nb) {
            fl_chunk_unref(*slot);
            *slot = nb;
        }
    }
    struct h2_hdrs *hd = hdrs_lend(st, FL_CLIENT, slot);
    int lent = !*slot;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_cb};
    if (nghttp2_submit_response(h->cs, st->cid, hd->nv, hd->n, eos ? NULL : &prd) != 0) {
        if (lent)
            hdrs_unlend(st, FL_CLIENT);
        nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid, NGHTTP2_INTERNAL_ERROR);
    }
    fl_chunk_unref(*slot);
    *slot = NULL;
}

/* response_delay is over: the held head goes, and the body behind it. */
static void release_head(struct fl_conn *c, struct h2_stream *st)
{
    struct h2_rf *rf = st->rf;
    rf->holding = 0;
    if (!st->client_open || !rf->head)
        return;
    submit_head(c, st, &rf->head, rf->held_eos);
}

static void upstream_headers(struct fl_conn *c, struct h2_stream *st, const nghttp2_frame *f)
{
    struct h2 *h = H(c);
    struct h2_hdrs *hd = hdrs_of(st->hdrs[FL_UPSTREAM]);
    int eos = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    int bad;
    const nghttp2_nv *status = response_block(hd, !st->resp_started, eos, &bad);

    if (!st->client_open || st->state != ST_UP || bad) {
        /* A malformed response is a stream error (RFC 9113 8.1.1); closing
         * the upstream stream resets the client's (on_stream_close). */
        if (bad && st->up_open)
            nghttp2_submit_rst_stream(h->us, NGHTTP2_FLAG_NONE, st->uid, NGHTTP2_PROTOCOL_ERROR);
        hdrs_drop(st, FL_UPSTREAM);
        return;
    }
    if (status) {
        if (status->valuelen == 3 && status->value[0] == '1') {
            /* Interim (1xx): forward; the final response follows. */
            nghttp2_submit_headers(h->cs, NGHTTP2_FLAG_NONE, st->cid, NULL, hd->nv, hd->n, NULL);
            hdrs_drop(st, FL_UPSTREAM);
            return;
        }
        st->resp_started = 1;
        st->up_since = 0;
        st->resp_eos = eos;
        if (status->valuelen == 3)
            dline_emit(c, st,
                       (status->value[0] - '0') * 100 + (status->value[1] - '0') * 10 +
                           (status->value[2] - '0'));
        if (st->rf && st->rf->delay) {
            /* response_delay: the head waits; the body queues behind it
             * (within the stream's window: the upstream is held back, not
             * buffered without bound). */
            struct h2_rf *rf = st->rf;
            rf->delay = 0;
            rf->holding = 1;
            rf->held_eos = eos;
            rf->head = st->hdrs[FL_UPSTREAM];
            st->hdrs[FL_UPSTREAM] = NULL;
            held_insert(c, st, fl_worker_deadline(rf->delay_ms));
            return;
        }
        submit_head(c, st, &st->hdrs[FL_UPSTREAM], eos);
        return;
    }
    /* Trailers: sent after the body before them (read_cb). */
    if (st->rf && st->rf->modify && st->grpc) {
        struct fl_chunk *nb = rf_block(c, st, hd, 0);
        if (nb) {
            fl_chunk_unref(st->hdrs[FL_UPSTREAM]);
            st->hdrs[FL_UPSTREAM] = nb;
        }
    }
    st->resp_eos = 1;
    fl_chunk_unref(st->trailers[FL_UPSTREAM]);
    st->trailers[FL_UPSTREAM] = st->hdrs[FL_UPSTREAM];
    st->hdrs[FL_UPSTREAM] = NULL;
    resume(h->cs, st->cid);
}

static void protocol_warn(struct fl_conn *c, const char *what, const char *detail)
{
    struct h2 *h = H(c);
    char p[64];
    if (h->warned)
        return;
    h->warned = 1;
    fl_warn("conn %llu: HTTP/2 client %s: %s%s%s; closing the connection",
            (unsigned long long)c->id, peer(c, p, sizeof(p)), what, detail ? ": " : "",
            detail ? detail : "");
}

/* Ends the connection: GOAWAY with code to the client, then close once it is
 * written (or after FL_H2_LINGER_MS). */
static void go_away(struct fl_conn *c, uint32_t code)
{
    struct h2 *h = H(c);
    if (h->closing)
        return;
    h->closing = 1;
    nghttp2_session_terminate_session(h->cs, code);
    start_linger(c);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    int eos = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    struct h2_stream *st =
        f->hd.stream_id ? nghttp2_session_get_stream_user_data(s, f->hd.stream_id) : NULL;

    if (s == h->cs) {
        switch (f->hd.type) {
        case NGHTTP2_HEADERS:
            if (!st)
                return 0;
            if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
                st->req_eos = eos;
                st->head_done = 1;
                if (st->too_big) {
                    char p[64];
                    hdrs_drop(st, FL_CLIENT);
                    fl_warn("conn %llu: HTTP/2 request from %s: header list exceeds %d bytes or "
                            "%d fields; answered 431",
                            (unsigned long long)c->id, peer(c, p, sizeof(p)),
                            FL_H2_MAX_HEADER_LIST, FL_H2_MAX_HEADERS);
                    (void)answer(c, st, 431, -1, NULL, NULL, 0, NULL, 0, NULL);
                    return 0;
                }
                if (st->hdrs[FL_CLIENT])
                    request_ready(c, st);
            } else {
                client_trailers(c, st);
            }
            return 0;
        case NGHTTP2_DATA:
            if (st && eos) {
                st->req_eos = 1;
                if (st->state == ST_UP)
                    resume(h->us, st->uid);
            }
            return 0;
        case NGHTTP2_RST_STREAM: {
            uint64_t now = fl_worker_now(c->w);
            if (now - h->rst_window_start >= FL_H2_RST_WINDOW_MS) {
                h->rst_window_start = now;
                h->rst_count = 0;
            }
            if (++h->rst_count > FL_H2_RST_MAX && !h->closing) {
                char detail[96];
                snprintf(detail, sizeof(detail), "more than %d stream resets within %d ms",
                         FL_H2_RST_MAX, FL_H2_RST_WINDOW_MS);
                protocol_warn(c, "rapid reset", detail);
                go_away(c, NGHTTP2_ENHANCE_YOUR_CALM);
            }
            return 0;
        }
        case NGHTTP2_GOAWAY:
            /* The client opens no more streams; tell the upstream likewise. */
            if (h->us && !h->up_dead)
                nghttp2_submit_goaway(h->us, NGHTTP2_FLAG_NONE, 0, f->goaway.error_code, NULL, 0);
            return 0;
        default:
            return 0;
        }
    }
    if (h->up_dead)
        return 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (st && st->hdrs[FL_UPSTREAM])
            upstream_headers(c, st, f);
        return 0;
    case NGHTTP2_DATA:
        if (st && eos) {
            st->resp_eos = 1;
            resume(h->cs, st->cid);
        }
        return 0;
    case NGHTTP2_GOAWAY:
        /* Streams above last_stream_id are closed by nghttp2 with
         * REFUSED_STREAM and reset toward the client, which may retry them. */
        nghttp2_submit_goaway(h->cs, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->cs),
                              f->goaway.error_code, NULL, 0);
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    struct h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
    (void)flags;
    if (s == h->cs) {
        if (!st || st->state == ST_LOCAL || (st->state == ST_UP && !st->up_open)) {
            nghttp2_session_consume(s, id, len);
            return 0;
        }
        if (fifo_put(c, &st->req, data, len) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        if (st->state == ST_UP)
            resume(h->us, st->uid);
        return 0;
    }
    if (h->up_dead)
        return 0;
    if (!st || !st->client_open || st->state != ST_UP || (st->rf && st->rf->drain)) {
        nghttp2_session_consume(s, id, len); /* modify replaced the body: dropped */
        return 0;
    }
    if (fifo_put(c, &st->resp, data, len) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    resume(h->cs, st->cid);
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    if (f->hd.type == NGHTTP2_HEADERS) {
        struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (st)
            hdrs_returned(st, s == h->cs ? FL_CLIENT : FL_UPSTREAM, f);
    }
    if (s != h->cs)
        return 0;
    if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR) {
        char detail[64];
        snprintf(detail, sizeof(detail), "sent GOAWAY(%s)",
                 nghttp2_http2_strerror(f->goaway.error_code));
        protocol_warn(c, "protocol error", detail);
        if (!h->closing) {
            h->closing = 1;
            start_linger(c);
        }
        return 0;
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        /* RFC 9113 8.1: a complete response before the complete request: tell
         * the client to stop sending. */
        if (st && !st->req_eos)
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->cid, NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* Without this a dropped frame's lent block would wait for its stream's end. */
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int lib_err, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    struct h2_stream *st;
    (void)lib_err;
    if (f->hd.type == NGHTTP2_HEADERS && !(s == h->us && h->up_dead) &&
        (st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id)))
        hdrs_returned(st, s == h->cs ? FL_CLIENT : FL_UPSTREAM, f);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t err, void *ud)
{
    struct fl_conn *c = ud;
    struct h2 *h = H(c);
    struct h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    if (s == h->cs) {
        st->client_open = 0;
        held_release(c, st);
        if (st->up_open && h->us && !h->up_dead &&
            !(st->resp_eos && st->req_eos && !st->req.len && !st->trailers[FL_CLIENT]))
            nghttp2_submit_rst_stream(h->us, NGHTTP2_FLAG_NONE, st->uid,
                                      err == NGHTTP2_NO_ERROR ? NGHTTP2_CANCEL : err);
        stream_maybe_free(c, st);
        return 0;
    }
    if (h->up_dead)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    st->up_open = 0;
    /* A new upstream session numbers its streams from 1 again. */
    if (h->hdr_st[FL_UPSTREAM] == st)
        h->hdr_st[FL_UPSTREAM] = NULL;
    if (st->synthetic) {
        /* Answered here (e.g. --upstream-timeout): the upstream's end of the
         * stream does not concern the client. */
    } else if (st->client_open && err != NGHTTP2_NO_ERROR) {
        fifo_clear(&st->resp);
        nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid, err);
    } else if (st->client_open && !st->resp_eos) {
        /* Closed without a complete response. */
        fifo_clear(&st->resp);
        nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid, NGHTTP2_INTERNAL_ERROR);
    }
    stream_maybe_free(c, st);
    return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *f, int lib_err, void *ud)
{
    struct fl_conn *c = ud;
    char p[64];
    if (s == H(c)->cs)
        fl_debug("conn %llu: invalid frame type %u on stream %d from %s: %s",
                 (unsigned long long)c->id, f->hd.type, f->hd.stream_id, peer(c, p, sizeof(p)),
                 nghttp2_strerror(lib_err));
    return 0;
}

/* nghttp2 allocates about 15 small objects per proxied request; the worker's
 * slab serves them (see fl_slab). Both sessions of a conn run on its worker. */
static void *mem_malloc(size_t n, void *ud)
{
    return fl_slab_alloc(ud, n);
}

static void mem_free(void *p, void *ud)
{
    fl_slab_free(ud, p);
}

static void *mem_calloc(size_t k, size_t n, void *ud)
{
    if (n && k > SIZE_MAX / n)
        return NULL;
    void *p = fl_slab_alloc(ud, k * n);
    if (p)
        memset(p, 0, k * n);
    return p;
}

static void *mem_realloc(void *p, size_t n, void *ud)
{
    return fl_slab_realloc(ud, p, n);
}

static nghttp2_mem *session_mem(struct fl_conn *c, nghttp2_mem *m)
{
    *m = (nghttp2_mem){&c->w->slab, mem_malloc, mem_free, mem_calloc, mem_realloc};
    return m;
}

static nghttp2_session_callbacks *cbs;
static nghttp2_option *opts[2];

static void init_once(void)
{
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_send_data_callback(cbs, send_data_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    for (int server = 0; server < 2; server++) {
        nghttp2_option_new(&opts[server]);
        /* Window updates only once bytes left toward the other side. */
        nghttp2_option_set_no_auto_window_update(opts[server], 1);
    }
    /* The upstream is the service faultline fronts: upstream_headers checks
     * the little the response path needs, not nghttp2 (see response_block). */
    nghttp2_option_set_no_http_messaging(opts[0], 1);
}

static nghttp2_session_callbacks *callbacks(void)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, init_once);
    return cbs;
}

static nghttp2_option *options(int server)
{
    callbacks();
    return opts[server];
}

/* ---- pump ---- */

/* Lets both sessions write what they have, then decides whether the
 * connection is done. Sending toward one side consumes window on the other,
 * so a few rounds may be needed. */
static void pump(struct fl_conn *c)
{
    struct h2 *h = H(c);
    int e = 0, ue = 0;
    if (c->closing || h->pumping)
        return;
    h->pumping = 1;
    h->depth++;
    for (int round = 0; round < 4 && !c->closing; round++) {
        e = nghttp2_session_send(h->cs);
        if (e != 0)
            break;
        if (h->us && !h->up_err_pending && !c->closing) {
            ue = nghttp2_session_send(h->us);
            if (ue != 0)
                break;
        }
        if (!nghttp2_session_want_write(h->cs) && !(h->us && nghttp2_session_want_write(h->us)))
            break;
    }
    out_flush(c);
    h->depth--;
    h->pumping = 0;
    if (c->closing)
        return;
    if (e != 0) {
        protocol_warn(c, "session error", nghttp2_strerror(e));
        fl_conn_close(c, 0);
        return;
    }
    if (ue != 0 || h->up_err_pending) {
        /* Deferred to here: tearing the upstream session down from inside
         * one of its own callbacks would free it under nghttp2's feet. */
        int err = h->up_err_pending ? h->up_err : -EPROTO;
        h->up_err_pending = 0;
        upstream_gone(c, err);
        return;
    }
    int done = !nghttp2_session_want_read(h->cs) && !nghttp2_session_want_write(h->cs);
    if (done) {
        if (fl_conn_queued(c, FL_CLIENT) == 0) {
            fl_conn_close(c, 0);
            return;
        }
        if (!h->lingering) {
            h->closing = 1;
            start_linger(c);
        }
    }
}

/* ---- ops ---- */

static void h2_data(struct fl_conn *c, int side, struct fl_chunk *ch, size_t off, size_t len)
{
    struct h2 *h = H(c);
    const uint8_t *p = (const uint8_t *)ch->data + off;
    if (side == FL_CLIENT) {
        if (h->closing)
            return; /* going away: what the client says no longer matters */
        h->depth++;
        ssize_t n = nghttp2_session_mem_recv(h->cs, p, len);
        h->depth--;
        if (n < 0 && h->calm) {
            char detail[128];
            snprintf(detail, sizeof(detail),
                     "more than %d request header blocks over %d times the %d-byte limit",
                     FL_H2_OVERSIZE_MAX, FL_H2_OVERSIZE_FACTOR, FL_H2_MAX_HEADER_LIST);
            protocol_warn(c, "header blocks too large (HPACK bomb?)", detail);
            go_away(c, NGHTTP2_ENHANCE_YOUR_CALM);
        } else if (n < 0) {
            protocol_warn(c, n == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? "bad connection preface"
                                                               : "protocol error",
                          nghttp2_strerror((int)n));
            if (n != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
                go_away(c, NGHTTP2_PROTOCOL_ERROR);
            else {
                fl_conn_close(c, 0);
                return;
            }
        }
    } else {
        if (!h->us)
            return;
        h->depth++;
        ssize_t n = nghttp2_session_mem_recv(h->us, p, len);
        h->depth--;
        if (n < 0 && !h->up_err_pending) {
            char up[64];
            fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
            fl_warn("conn %llu: HTTP/2 upstream %s: %s; dropping that upstream connection",
                    (unsigned long long)c->id, up, nghttp2_strerror((int)n));
            upstream_gone(c, -EPROTO);
            return;
        }
    }
    pump(c);
}

static void h2_eof(struct fl_conn *c, int side)
{
    if (side == FL_CLIENT) {
        /* HTTP/2 has no half-close at the connection level: a client that
         * sent FIN is gone, and its streams' responses could only pile up. */
        fl_conn_close(c, 0);
        return;
    }
    upstream_gone(c, 0);
}

/* May be called from inside fl_conn_write (a failed immediate write), that is
 * from inside a session callback: then the teardown waits for pump(). */
static void h2_upstream_error(struct fl_conn *c, int err)
{
    struct h2 *h = H(c);
    if (h->depth) {
        if (!h->up_err_pending) {
            h->up_err_pending = 1;
            h->up_err = err;
        }
        return;
    }
    upstream_gone(c, err);
}

static void h2_drained(struct fl_conn *c, int side)
{
    struct h2 *h = H(c);
    if (side == FL_CLIENT && h->closing) {
        fl_conn_close(c, 0);
        return;
    }
    pump(c); /* frames held back by the backlog (send_cb) go out now */
}

static int h2_idle(struct fl_conn *c)
{
    return H(c)->n_streams == 0;
}

/* Graceful shutdown: GOAWAY now, so the client opens no new stream here, and
 * close once the streams it already opened are done. */
static void h2_drain(struct fl_conn *c)
{
    struct h2 *h = H(c);
    if (!h || h->closing || h->draining)
        return;
    if (h->n_streams == 0) {
        go_away(c, NGHTTP2_NO_ERROR);
    } else {
        h->draining = 1;
        nghttp2_submit_goaway(h->cs, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(h->cs), NGHTTP2_NO_ERROR,
                              NULL, 0);
    }
    pump(c);
}

static int h2_init(struct fl_conn *c)
{
    struct h2 *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    c->proto = h;
    c->timer.data = c;
    nghttp2_mem m;
    if (nghttp2_session_server_new3(&h->cs, callbacks(), c, options(1), session_mem(c, &m)) != 0) {
        free(h);
        c->proto = NULL;
        return -ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, FL_H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, FL_H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, FL_H2_MAX_HEADER_LIST},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(h->cs, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(h->cs, NGHTTP2_FLAG_NONE, 0, FL_H2_CONN_WINDOW);
    c->s[FL_CLIENT].want_read = 1;
    fl_conn_update_reading(c);
    became_idle(c);
    return 0;
}

static void h2_destroy(struct fl_conn *c)
{
    struct h2 *h = c->proto;
    if (!h)
        return;
    h->up_dead = 1;
    while (h->streams) {
        struct h2_stream *st = h->streams;
        st->client_open = st->up_open = 0;
        stream_maybe_free(c, st);
    }
    while (h->free_streams) {
        struct h2_stream *st = h->free_streams;
        h->free_streams = st->next;
        free(st);
    }
    /* Deleting a session runs no callbacks that reach streams. */
    nghttp2_session_del(h->us);
    nghttp2_session_del(h->cs);
    for (int i = 0; i < 2; i++)
        fl_chunk_unref(h->out[i]);
    free(h);
    c->proto = NULL;
}

const struct fl_proto_ops fl_h2_ops = {
    .name = "h2",
    .init = h2_init,
    .data = h2_data,
    .eof = h2_eof,
    .upstream_error = h2_upstream_error,
    .drained = h2_drained,
    .upstream_timeout = h2_upstream_timeout,
    .idle = h2_idle,
    .drain = h2_drain,
    .destroy = h2_destroy,
};
