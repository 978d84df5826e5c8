/* http1: HTTP/1.1 proxying with llhttp.
 *
 * The original bytes go upstream unchanged; llhttp only finds message
 * boundaries, the method, the target and the headers. Each request's head is
 * held (by reference to the read chunks) until the rules have decided: pass it
 * on, hold it (delay), answer it here (abort), or reset the connection.
 *
 * Responses must reach the client in request order, also when some are made
 * here. Every dispatched request takes a slot in a ring: an upstream slot is
 * completed by the upstream's next response, a synthetic slot carries the bytes
 * to send once it reaches the front. The response parser finds where each
 * upstream response ends so the queue can advance.
 *
 * The parser is paused at the end of each request head and message, which gives
 * the exact byte positions to split forwarding at; a held request stops parsing
 * (and, once the chunk in hand is parsed, reading), so pipelined requests behind
 * it wait their turn. A delay counts from when its request was read, so
 * pipelined delayed requests are delayed side by side, not one after another.
 *
 * A delay's fault line is written once the client's answer is known, with the
 * status it got: the upstream's, or 502/504 when the upstream failed it.
 */
#include <errno.h>
#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#include "conn.h"
#include "toxic.h"
#include "h2.h"
#include "raw.h"
#include "fault.h"
#include "faultlog.h"
#include "log.h"
#include "match.h"
#include "worker.h"

#define H1_MAX_SLOTS 16
#define H1_MAX_HEAD_SEGS 8
#define H1_MAX_HEAD FL_CHUNK_CAP /* request head limit (about 64 KiB): 431 above */
#define H1_MAX_HDRS 100
#define H1_LINGER_MS 2000

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

enum rq_state {
    RQ_HEAD, /* reading a request head */
    RQ_PASS, /* forwarding the body of a passed request */
    RQ_DROP, /* discarding the body of an answered request */
    RQ_HOLD, /* request held by a delay; parsing stopped */
    RQ_UPGRADE, /* an Upgrade/CONNECT request went upstream: client bytes wait for its
                 * answer (101 or 2xx: the connection turns raw; else it stays HTTP) */
    RQ_DONE, /* no more requests on this connection */
};

enum slot_kind { SLOT_UPSTREAM, SLOT_SYNTH };

/* The response-side faults decided for one request (fault.h), applied as its
 * response streams through; their fault lines wait for its final status. */
#define RF_KINDS 4 /* FL_FAULT_RESPONSE_DELAY .. FL_FAULT_BANDWIDTH */
struct h1_resp {
    const struct fl_rule *rule;
    uint64_t delay_ms;
    unsigned delay : 1, modify : 1, truncate : 1, bw : 1;
    char *line[RF_KINDS];
    size_t line_len[RF_KINDS];
};

struct h1_slot {
    uint8_t kind;
    uint8_t method; /* llhttp_method_t of the request */
    uint8_t close_after;
    const struct fl_rule *mark; /* upstream slot of a delayed request: add the marker */
    struct fl_chunk *synth;     /* SLOT_SYNTH: the response bytes */
    char *line;                 /* a delay's fault line, written with the status */
    size_t line_len;
    struct h1_resp *rf;         /* SLOT_UPSTREAM: response faults, or NULL */
};

struct h1_seg {
    struct fl_chunk *ch;
    uint32_t off, len;
};

/* Request facts gathered while the head streams in, kept in a pool chunk that
 * is returned once the rules have decided. */
struct h1_scratch {
    struct fl_hdr hdrs[H1_MAX_HDRS];
    size_t n_hdrs;
    char *url;
    size_t url_len;
    int last_was_value;
    int overflow; /* the head did not fit: answered 431 */
    size_t used;
    char buf[];
};

struct h1 {
    llhttp_t req;
    llhttp_t resp;
    enum rq_state rs;
    int ev; /* event that paused a parser */
    /* head of the current request, not yet forwarded */
    struct h1_seg head[H1_MAX_HEAD_SEGS];
    int n_head;
    size_t head_bytes;
    struct fl_chunk *scratch_ch;
    struct h1_scratch *scratch_big; /* a head too big for the chunk: H1_MAX_HEAD, malloc'd */
    /* client input not yet parsed (parsing paused) */
    struct fl_chunk *in;
    size_t in_off, in_len;
    uint64_t in_at; /* when in was read, on uv_hrtime()'s clock */
    /* response ordering */
    struct h1_slot slots[H1_MAX_SLOTS];
    unsigned sl_head, sl_count;
    uint64_t resp_bytes; /* bytes of the front upstream response forwarded */
    /* held request */
    struct fl_decision held;
    uint8_t held_method;
    char *held_line; /* the held delay's fault line, until its slot takes it */
    size_t held_line_len;
    /* response faults: those decided for the request on its way upstream,
     * and the front response's progress through them */
    struct h1_resp *rf_next;
    struct fl_hold resp_hold;  /* response_delay: the worker's queue */
    struct fl_chunk *up_in;    /* upstream bytes held by response_delay */
    size_t up_off, up_len;
    char *mhead;               /* modify: the upstream's response head, captured */
    size_t mhead_len;
    uint64_t trunc_left;       /* truncate: body bytes still to let through */
    const char *cut_at;        /* truncate: where, in the bytes being parsed, to cut */
    unsigned resp_started : 1; /* the front response's first bytes arrived */
    unsigned resp_capture : 1; /* modify: the head is being captured, not forwarded */
    unsigned resp_drain : 1;   /* modify replaced the body: the upstream's is dropped */
    unsigned resp_trunc : 1;   /* truncate counts the body */
    unsigned resp_bw : 1;      /* the front response is throttled */
    unsigned req_bw : 1;       /* the request body going upstream is throttled */
    int resp_status;           /* modify: the status the client was sent; 0: the upstream's */
    /* the client's deadline: header section (T_HEADER) or keep-alive idle
     * (T_IDLE), on the loop's clock; c->timer fires at or before it */
    uint8_t tkind;
    uint64_t tdeadline;
    unsigned seen_request : 1;
    unsigned seen_request_done : 1; /* a request line was parsed on this connection */
    unsigned url_done : 1;
    unsigned close_after_flush : 1;
    unsigned client_eof : 1;
    unsigned finishing : 1;
    unsigned wait_upstream : 1; /* a dead upstream handle is closing; dispatch waits */
    unsigned lingering : 1;
    unsigned resp_until_eof : 1; /* the current response ends with the upstream's FIN */
    unsigned last_upstream : 1;  /* the latest request went upstream (not answered here) */
    unsigned resp_switch : 1;     /* the response being read switches protocols */
    unsigned await_chunk : 1;     /* a passed chunked request waits for its first chunk
                                   * size to parse before its head goes upstream */
    unsigned upgrade_decided : 1; /* an Upgrade/CONNECT message ended; llhttp's
                                   * HPE_PAUSED_UPGRADE for it is still to come */
};

enum { EV_NONE, EV_HEADERS, EV_DONE, EV_STATUS, EV_CHUNK, EV_RHEAD };
enum { T_NONE, T_HEADER, T_IDLE };

static const llhttp_settings_t *req_settings(void);
static const llhttp_settings_t *resp_settings(void);
static void client_pump(struct fl_conn *c);
static void upstream_data(struct fl_conn *c, struct fl_chunk *ch, size_t off, size_t len);
static void release_input(struct h1 *h);
static void flush_front(struct fl_conn *c);

static struct h1_scratch *scratch(struct h1 *h)
{
    if (h->scratch_big)
        return h->scratch_big;
    return h->scratch_ch ? (struct h1_scratch *)h->scratch_ch->data : NULL;
}

static void head_release(struct h1 *h)
{
    for (int i = 0; i < h->n_head; i++)
        fl_chunk_unref(h->head[i].ch);
    h->n_head = 0;
    h->head_bytes = 0;
}

static void scratch_release(struct h1 *h)
{
    fl_chunk_unref(h->scratch_ch);
    h->scratch_ch = NULL;
    free(h->scratch_big);
    h->scratch_big = NULL;
}

/* ---- slots ---- */

static struct h1_slot *slot_front(struct h1 *h)
{
    return h->sl_count ? &h->slots[h->sl_head] : NULL;
}

static struct h1_slot *slot_push(struct h1 *h)
{
    struct h1_slot *s = &h->slots[(h->sl_head + h->sl_count) % H1_MAX_SLOTS];
    h->sl_count++;
    memset(s, 0, sizeof(*s));
    return s;
}

/* Writes a delay's deferred fault line with the status its request got (0:
 * none, the connection ended first). */
static void emit_line(struct fl_conn *c, char **line, size_t len, int status)
{
    fl_faultlog_release(&c->w->log, line, len, status);
}

/* Writes the response faults' held lines with the status the client got. */
static void rf_emit(struct fl_conn *c, struct h1_resp *rf, int status)
{
    for (int k = 0; rf && k < RF_KINDS; k++)
        emit_line(c, &rf->line[k], rf->line_len[k], status);
}

static void rf_free(struct fl_conn *c, struct h1_resp *rf)
{
    rf_emit(c, rf, 0);
    free(rf);
}

/* The front response is done with (answered, failed or cut): its faults end. */
static void resp_reset(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    if (h->resp_bw && fl_tox_set_rate(c, FL_CLIENT, 0) < 0)
        fl_conn_close(c, 0);
    free(h->mhead);
    h->mhead = NULL;
    h->mhead_len = 0;
    h->resp_started = h->resp_capture = h->resp_drain = h->resp_trunc = h->resp_bw = 0;
    h->cut_at = NULL;
    h->resp_status = 0;
}

static void slot_pop(struct h1 *h)
{
    struct h1_slot *s = &h->slots[h->sl_head];
    if (s->kind == SLOT_UPSTREAM && h->resp_started)
        resp_reset(h->req.data);
    rf_free(h->req.data, s->rf);
    s->rf = NULL;
    emit_line(h->req.data, &s->line, s->line_len, 0);
    fl_chunk_unref(s->synth);
    s->synth = NULL;
    h->sl_head = (h->sl_head + 1) % H1_MAX_SLOTS;
    h->sl_count--;
    h->resp_bytes = 0;
}

static int upstream_pending(struct h1 *h)
{
    for (unsigned i = 0; i < h->sl_count; i++)
        if (h->slots[(h->sl_head + i) % H1_MAX_SLOTS].kind == SLOT_UPSTREAM)
            return 1;
    return 0;
}

/* --upstream-timeout: the front request, once sent, must see the start of its
 * answer in time. Armed when an upstream request reaches the front of the
 * queue, cleared by the first bytes of its response. */
static void arm_upstream_deadline(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    struct h1_slot *s = h->sl_count ? &h->slots[h->sl_head] : NULL;
    if (s && s->kind == SLOT_UPSTREAM && h->resp_bytes == 0) {
        if (!c->up_deadline)
            fl_conn_upstream_deadline(c, fl_worker_now(c->w) + fl_conn_upstream_timeout_ms);
    } else if (c->up_deadline) {
        fl_conn_upstream_deadline(c, 0);
    }
}

/* ---- synthetic responses ---- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

/* Builds a complete response into a pool chunk. Returns NULL on overflow/oom. */
static struct fl_chunk *build_response(struct fl_conn *c, int status, const char *rule,
                                       const struct fl_kv *hdrs, size_t n_hdrs, const char *body,
                                       size_t body_len, int head_only, int close)
{
    struct fl_chunk *ch = fl_chunk_get(&c->w->pool);
    if (!ch)
        return NULL;
    int has_ct = 0;
    for (size_t i = 0; i < n_hdrs; i++)
        if (strcasecmp(hdrs[i].name, "content-type") == 0)
            has_ct = 1;
    size_t cap = FL_CHUNK_CAP;
    int n = snprintf(ch->data, cap, "HTTP/1.1 %d %s\r\ncontent-length: %zu\r\n", status,
                     reason(status), body_len);
    if (!has_ct && body_len)
        n += snprintf(ch->data + n, cap - (size_t)n, "content-type: text/plain\r\n");
    if (rule)
        n += snprintf(ch->data + n, cap - (size_t)n, "x-faultline-injected: %s\r\n", rule);
    for (size_t i = 0; i < n_hdrs && (size_t)n < cap; i++)
        n += snprintf(ch->data + n, cap - (size_t)n, "%s: %s\r\n", hdrs[i].name, hdrs[i].value);
    if ((size_t)n < cap)
        n += snprintf(ch->data + n, cap - (size_t)n, "%s\r\n", close ? "connection: close\r\n" : "");
    if ((size_t)n >= cap || (!head_only && (size_t)n + body_len > cap)) {
        fl_chunk_unref(ch);
        return NULL;
    }
    if (!head_only && body_len) {
        memcpy(ch->data + n, body, body_len);
        n += (int)body_len;
    }
    ch->len = (uint32_t)n;
    return ch;
}

/* Queues a response made here; it goes out when it reaches the front. */
static void push_synth(struct fl_conn *c, struct fl_chunk *ch, uint8_t method, int close)
{
    struct h1 *h = c->proto;
    struct h1_slot *s = slot_push(h);
    s->kind = SLOT_SYNTH;
    s->method = method;
    s->synth = ch;
    s->close_after = (uint8_t)close;
    flush_front(c);
}

/* An error response from the proxy itself (400, 431, 502): ends the connection. */
static void push_error(struct fl_conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void push_error(struct fl_conn *c, int status, const char *fmt, ...)
{
    struct h1 *h = c->proto;
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)strlen(body);
    struct fl_chunk *ch = build_response(c, status, NULL, NULL, 0, body, (size_t)n, 0, 1);
    h->rs = RQ_DONE;
    if (!ch) {
        fl_conn_close(c, 0);
        return;
    }
    push_synth(c, ch, HTTP_GET, 1);
}

/* The upstream failed the front request: it is answered STATUS (the caller
 * pushes the error response, which ends the connection), and the requests
 * queued behind it, which nothing can answer now, are dropped with it, so the
 * error goes out at once instead of waiting behind them. */
static void fail_pending(struct fl_conn *c, int status)
{
    struct h1 *h = c->proto;
    struct h1_slot *s = slot_front(h);
    if (s) {
        emit_line(c, &s->line, s->line_len, status);
        rf_emit(c, s->rf, status);
    }
    while (h->sl_count)
        slot_pop(h);
}

static void linger_timeout_cb(uv_timer_t *t)
{
    fl_conn_close(t->data, 0);
}

/* Closes the connection once every response is out. After an error response
 * the client may still be sending; closing with unread input would make the
 * kernel send RST and could destroy the response, so send FIN first and read
 * (and discard) for a short while: a lingering close. */
static void maybe_finish(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    if (c->closing || h->sl_count || h->rs == RQ_HOLD || h->rs == RQ_UPGRADE ||
        fl_conn_queued(c, FL_CLIENT) != 0)
        return;
    if (h->close_after_flush && !h->client_eof) {
        if (!h->lingering) {
            h->lingering = 1;
            fl_conn_shutdown(c, FL_CLIENT);
            c->s[FL_CLIENT].want_read = 1;
            fl_conn_update_reading(c);
            uv_timer_start(&c->timer, linger_timeout_cb, H1_LINGER_MS, 0);
        }
        return;
    }
    if (h->close_after_flush || h->rs == RQ_DONE || h->client_eof ||
        (c->close_when_idle && h->rs == RQ_HEAD && h->head_bytes == 0))
        fl_conn_close(c, 0);
}

/* Writes out the synthetic responses now at the front of the queue. */
static void flush_front(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    struct h1_slot *s;
    while (!c->closing && (s = slot_front(h)) && s->kind == SLOT_SYNTH) {
        int close = s->close_after;
        fl_conn_write(c, FL_CLIENT, s->synth, s->synth->data, s->synth->len);
        slot_pop(h);
        if (close) {
            h->close_after_flush = 1;
            h->rs = RQ_DONE;
            /* Nothing after this response will be answered. */
            while (h->sl_count)
                slot_pop(h);
        }
    }
    if (!c->closing)
        arm_upstream_deadline(c);
    maybe_finish(c);
}

/* ---- request side ---- */

/* The client's deadlines are lazy: a request moves them without touching the
 * timer, which libuv keeps in a heap (a start and a stop per request cost
 * more than the parsing of a small request). The timer only has to fire no
 * later than the deadline; when it fires early it re-arms for the rest. */
static void client_timer_cb(uv_timer_t *t)
{
    struct fl_conn *c = t->data;
    struct h1 *h = c->proto;
    uint64_t now = fl_worker_now(c->w);
    if (c->closing || h->tkind == T_NONE || h->lingering)
        return;
    if (now < h->tdeadline) {
        uv_timer_start(&c->timer, client_timer_cb, h->tdeadline - now, 0);
        return;
    }
    h->tkind = T_NONE;
    if (h->rs != RQ_HEAD)
        return;
    if (h->head_bytes > 0 || h->scratch_ch) {
        char peer[64];
        fl_addr_str((struct sockaddr *)&c->src, peer, sizeof(peer));
        fl_warn("request from %s: header section not complete after %llu ms; answered 408", peer,
                (unsigned long long)fl_conn_header_timeout_ms);
        head_release(h);
        scratch_release(h);
        release_input(h);
        push_error(c, 408, "faultline: request header section not received in time\n");
    } else if (h->sl_count == 0) {
        fl_conn_close(c, 0);
    }
}

/* No request in flight or begun, nothing buffered: the connection is idle. */
static int h1_waiting(const struct h1 *h)
{
    return h->sl_count == 0 && h->rs == RQ_HEAD && h->head_bytes == 0 && !h->in;
}

/* Sets the header or idle deadline for the state the request side is now in;
 * the timer is restarted only when it would fire after the new deadline. */
static void arm_client_timer(struct fl_conn *c, int header)
{
    struct h1 *h = c->proto;
    uint64_t ms = header ? fl_conn_header_timeout_ms : fl_conn_idle_timeout_ms;
    if (h->lingering)
        return;
    h->tkind = header ? T_HEADER : T_IDLE;
    h->tdeadline = fl_worker_now(c->w) + ms;
    if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
        uv_timer_start(&c->timer, client_timer_cb, ms, 0);
}

static int on_message_begin(llhttp_t *p)
{
    struct fl_conn *c = p->data;
    struct h1 *h = c->proto;
    h->seen_request = 1;
    arm_client_timer(c, 1);
    if (!h->scratch_ch && !h->scratch_big) {
        h->scratch_ch = fl_chunk_get(&c->w->pool);
        if (!h->scratch_ch)
            return -1;
    }
    struct h1_scratch *sc = scratch(h);
    sc->n_hdrs = 0;
    sc->url = NULL;
    sc->url_len = 0;
    sc->last_was_value = 1;
    sc->overflow = 0;
    sc->used = 0;
    return 0;
}

/* Moves the request facts out of the pool chunk into a buffer that holds a
 * whole head (H1_MAX_HEAD), so a request target or header section as large as
 * the head limit is still parsed, matched and answered 431 only above it. */
static struct h1_scratch *scratch_grow(struct h1 *h)
{
    struct h1_scratch *old = scratch(h);
    struct h1_scratch *big = malloc(sizeof(*big) + H1_MAX_HEAD);
    if (!big)
        return NULL;
    memcpy(big, old, sizeof(*old) + old->used);
    ptrdiff_t d = big->buf - old->buf;
    if (big->url)
        big->url += d;
    for (size_t i = 0; i < big->n_hdrs; i++) {
        big->hdrs[i].name += d;
        if (big->hdrs[i].value)
            big->hdrs[i].value += d;
    }
    fl_chunk_unref(h->scratch_ch);
    h->scratch_ch = NULL;
    h->scratch_big = big;
    return big;
}

static char *sc_append(struct h1 *h, const char *at, size_t len)
{
    struct h1_scratch *sc = scratch(h);
    size_t cap = h->scratch_big ? H1_MAX_HEAD : FL_CHUNK_CAP - sizeof(*sc);
    if (len > cap - sc->used && !h->scratch_big && len <= H1_MAX_HEAD - sc->used) {
        struct h1_scratch *big = scratch_grow(h);
        if (big) {
            sc = big;
            cap = H1_MAX_HEAD;
        }
    }
    if (len > cap - sc->used) {
        sc->overflow = 1; /* answered 431 */
        return NULL;
    }
    char *d = sc->buf + sc->used;
    memcpy(d, at, len);
    sc->used += len;
    return d;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct fl_conn *c = p->data;
    struct h1_scratch *sc = scratch(c->proto);
    char *d = sc_append(c->proto, at, len);
    if (!d)
        return -1;
    sc = scratch(c->proto); /* it may have moved */
    if (!sc->url)
        sc->url = d;
    sc->url_len += len;
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    struct fl_conn *c = p->data;
    struct h1 *h = c->proto;
    h->url_done = 1;
    h->seen_request_done = 1;
    return 0;
}

/* RFC 9110 5.1: a field name is a token. llhttp's loose mode lets spaces
 * through ("Host : x"), which servers read differently: a smuggling shape. */
static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct fl_conn *c = p->data;
    struct h1_scratch *sc = scratch(c->proto);
    if (!sc)
        return 0; /* a trailer field: the head was decided; its bytes pass as body */
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i])) {
            llhttp_set_error_reason(p, "Invalid character in header field name");
            return -1;
        }
    char *d = sc_append(c->proto, at, len);
    if (!d)
        return -1;
    sc = scratch(c->proto); /* it may have moved */
    if (sc->last_was_value) {
        if (sc->n_hdrs == H1_MAX_HDRS)
            return 0; /* beyond what rules look at; still forwarded */
        struct fl_hdr *hd = &sc->hdrs[sc->n_hdrs++];
        hd->name = d;
        hd->name_len = 0;
        hd->value = NULL;
        hd->value_len = 0;
        sc->last_was_value = 0;
    }
    sc->hdrs[sc->n_hdrs - 1].name_len += len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct fl_conn *c = p->data;
    struct h1_scratch *sc = scratch(c->proto);
    if (!sc)
        return 0; /* trailer value, see on_header_field */
    if (sc->n_hdrs == 0)
        return 0;
    if (memchr(at, '\r', len) || memchr(at, '\n', len)) {
        /* A line folded into the value (obs-fold, RFC 9112 5.2): rejected, as
         * servers that unfold it and servers that do not disagree. */
        llhttp_set_error_reason(p, "Header value folded over lines (obs-fold)");
        return -1;
    }
    char *d = sc_append(c->proto, at, len);
    if (!d)
        return -1;
    sc = scratch(c->proto); /* it may have moved */
    struct fl_hdr *hd = &sc->hdrs[sc->n_hdrs - 1];
    if (!hd->value)
        hd->value = d;
    hd->value_len += len;
    sc->last_was_value = 1;
    return 0;
}

static int on_req_headers_complete(llhttp_t *p)
{
    struct fl_conn *c = p->data;
    ((struct h1 *)c->proto)->ev = EV_HEADERS;
    return HPE_PAUSED;
}

static int on_req_chunk_header(llhttp_t *p)
{
    struct fl_conn *c = p->data;
    struct h1 *h = c->proto;
    if (!h->await_chunk)
        return 0;
    h->ev = EV_CHUNK;
    return HPE_PAUSED;
}

static int on_req_message_complete(llhttp_t *p)
{
    struct fl_conn *c = p->data;
    ((struct h1 *)c->proto)->ev = EV_DONE;
    return HPE_PAUSED;
}

static struct fl_fault_event fault_event(struct fl_conn *c, const struct fl_rule *r,
                                         enum fl_fault_kind kind, uint64_t delay_ms, int status,
                                         const struct fl_request *rq)
{
    return (struct fl_fault_event){
        .policy = r->policy ? r->policy : c->policy->name,
        .rule = r->name,
        .kind = kind,
        .delay_ms = delay_ms,
        .status = status,
        .grpc_status = -1,
        .req = rq,
        .src = (const struct sockaddr *)&c->src,
        .dst = (const struct sockaddr *)&c->dst,
        .pod = c->pod,
        .conn = c->id,
    };
}

static void log_fault(struct fl_conn *c, const struct fl_rule *r, enum fl_fault_kind kind,
                      uint64_t delay_ms, int status, const struct fl_request *rq)
{
    struct fl_fault_event ev = fault_event(c, r, kind, delay_ms, status, rq);
    fl_faultlog_emit(&c->w->log, &ev);
}

/* A delay passed upstream: its line waits for the status the client gets. */
static void defer_delay_line(struct fl_conn *c, const struct fl_rule *r, uint64_t delay_ms,
                             const struct fl_request *rq)
{
    struct h1 *h = c->proto;
    struct fl_fault_event ev = fault_event(c, r, FL_FAULT_DELAY, delay_ms, 0, rq);
    free(h->held_line);
    h->held_line = fl_faultlog_hold(&c->w->log, &ev, &h->held_line_len);
}

/* The response faults d decided for rq, with their fault lines formatted
 * now (the request's facts go with the head) and written once the client's
 * status is known. NULL when there are none, or out of memory (then the
 * request simply goes without them). */
static struct h1_resp *resp_faults(struct fl_conn *c, const struct fl_decision *d,
                                   const struct fl_request *rq)
{
    if (!d->rule || !(d->resp_delay || d->modify || d->truncate || d->bandwidth))
        return NULL;
    struct h1_resp *rf = calloc(1, sizeof(*rf));
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
        struct fl_fault_event ev = fault_event(c, r, kind, rf->delay_ms, 0, rq);
        ev.extra = fl_faultlog_resp_extra(r, kind, 0, extra, sizeof(extra));
        rf->line[k] = fl_faultlog_hold(&c->w->log, &ev, &rf->line_len[k]);
    }
    return rf;
}

/* Sends the held head upstream and starts forwarding the body. */
static void dispatch_upstream(struct fl_conn *c, uint8_t method, const struct fl_rule *mark)
{
    struct h1 *h = c->proto;
    int e = fl_conn_connect_upstream(c);
    struct h1_slot *s = slot_push(h);
    s->kind = SLOT_UPSTREAM;
    s->method = method;
    s->mark = mark;
    if (mark) {
        s->line = h->held_line;
        s->line_len = h->held_line_len;
        h->held_line = NULL;
    }
    s->rf = h->rf_next;
    h->rf_next = NULL;
    if (s->rf && s->rf->modify && (method == HTTP_CONNECT || h->req.upgrade)) {
        /* The answer to an Upgrade or CONNECT may switch protocols: it passes
         * unmodified (its line is dropped with the fault). */
        s->rf->modify = 0;
        free(s->rf->line[FL_FAULT_MODIFY - FL_FAULT_RESPONSE_DELAY]);
        s->rf->line[FL_FAULT_MODIFY - FL_FAULT_RESPONSE_DELAY] = NULL;
    }
    if (s->rf) {
        /* The marker goes after the status line, or into a modified head. */
        s->mark = s->rf->modify ? NULL : s->rf->rule;
        if (s->rf->bw && (s->rf->rule->bandwidth.dir & FL_DIR_UP)) {
            if (fl_tox_set_rate(c, FL_UPSTREAM, s->rf->rule->bandwidth.rate) < 0) {
                fl_conn_close(c, 0);
                return;
            }
            h->req_bw = 1;
        }
    }
    h->last_upstream = 1;
    if (e < 0) {
        c->ops->upstream_error(c, e);
        return;
    }
    for (int i = 0; i < h->n_head && !c->closing; i++)
        fl_conn_write(c, FL_UPSTREAM, h->head[i].ch, h->head[i].ch->data + h->head[i].off,
                      h->head[i].len);
    head_release(h);
    if (!c->closing)
        arm_upstream_deadline(c);
    if (h->rs != RQ_UPGRADE && h->rs != RQ_DONE)
        h->rs = RQ_PASS;
}

static void answer_abort(struct fl_conn *c, const struct fl_decision *d, uint8_t method,
                         int close)
{
    struct h1 *h = c->proto;
    const struct fl_rule *r = d->rule;
    const struct fl_abort *a = &r->abort;
    int status = fl_decision_abort_status(d);
    h->last_upstream = 0; /* an Upgrade answered here never switches */
    struct fl_chunk *ch = build_response(c, status, r->name, a->headers, a->n_headers, a->body,
                                         a->body_len, method == HTTP_HEAD, close);
    head_release(h);
    fl_fault_release();
    if (!ch) {
        fl_conn_close(c, 0);
        return;
    }
    h->rs = close ? RQ_DONE : RQ_DROP;
    push_synth(c, ch, method, close);
}

static void held_cb(struct fl_hold *hd)
{
    struct fl_conn *c = fl_conn_of_hold(hd);
    struct h1 *h = c->proto;
    if (c->closing || h->rs != RQ_HOLD)
        return;
    const struct fl_rule *r = h->held.rule;
    if (h->held.abort) {
        fl_fault_release(); /* the delay's share; answer_abort releases the abort's */
        answer_abort(c, &h->held, h->held_method, !llhttp_should_keep_alive(&h->req));
    } else {
        fl_fault_release();
        dispatch_upstream(c, h->held_method, r);
    }
    if (!c->closing)
        client_pump(c);
}

static void fill_request(struct h1 *h, struct fl_request *rq)
{
    struct h1_scratch *sc = scratch(h);
    const char *m = llhttp_method_name((llhttp_method_t)h->req.method);
    memset(rq, 0, sizeof(*rq));
    rq->proto = FL_PROTO_HTTP1;
    rq->method_str = m;
    rq->method_len = strlen(m);
    rq->method = fl_values_parse_method(m, rq->method_len);
    rq->path = sc->url ? sc->url : "";
    rq->target_len = sc->url_len;
    const char *q = memchr(rq->path, '?', rq->target_len);
    rq->path_len = q ? (size_t)(q - rq->path) : rq->target_len;
    rq->headers = sc->hdrs;
    rq->n_headers = sc->n_hdrs;
    for (size_t i = 0; i < sc->n_hdrs; i++) {
        if (sc->hdrs[i].name_len == 4 && strncasecmp(sc->hdrs[i].name, "host", 4) == 0) {
            rq->authority = sc->hdrs[i].value;
            rq->authority_len = sc->hdrs[i].value_len;
            break;
        }
    }
}

/* RFC 9112 6.1: a request whose last transfer coding is not chunked has no
 * knowable length; faultline forwards only chunked (or no) transfer coding.
 * Returns 1 when the head names another one. */
static int unsupported_te(const struct h1_scratch *sc)
{
    const struct fl_hdr *te = NULL;
    for (size_t i = 0; i < sc->n_hdrs; i++)
        if (sc->hdrs[i].name_len == 17 && strncasecmp(sc->hdrs[i].name, "transfer-encoding", 17) == 0)
            te = &sc->hdrs[i];
    if (!te)
        return 0;
    const char *v = te->value ? te->value : "";
    size_t n = te->value_len;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    size_t b = n;
    while (b && v[b - 1] != ',')
        b--;
    while (b < n && (v[b] == ' ' || v[b] == '\t'))
        b++;
    return !(n - b == 7 && strncasecmp(v + b, "chunked", 7) == 0);
}

/* RFC 9112 5.2: obs-fold, a header line that starts with SP or HTAB and
 * continues the previous one. llhttp 8 unfolds it, so the rules would match a
 * value the upstream may read differently: answered 400, as the RFC allows.
 * Returns 1 when the head (as received) has one. */
static int has_obs_fold(const struct h1 *h)
{
    char prev = 0;
    for (int i = 0; i < h->n_head; i++) {
        const char *p = h->head[i].ch->data + h->head[i].off, *end = p + h->head[i].len;
        if (prev == '\n' && p < end && (*p == ' ' || *p == '\t'))
            return 1;
        for (const char *q = p; (q = memchr(q, '\n', (size_t)(end - q))); q++)
            if (q + 1 < end && (q[1] == ' ' || q[1] == '\t'))
                return 1;
        if (p < end)
            prev = end[-1];
    }
    return 0;
}

/* A complete head that is not forwarded: answered status with body, logged
 * with why; nothing of it went upstream. */
static void reject_head(struct fl_conn *c, int status, const char *why, const char *body)
{
    struct h1 *h = c->proto;
    char peer[64];
    fl_addr_str((struct sockaddr *)&c->src, peer, sizeof(peer));
    fl_warn("request from %s: %s; answered %d", peer, why, status);
    head_release(h);
    scratch_release(h);
    release_input(h);
    push_error(c, status, "%s", body);
}

/* The request head is complete: decide its fate. */
static void on_head(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    struct fl_worker *w = c->w;
    struct fl_request rq;
    struct fl_decision d;
    uint8_t method = (uint8_t)h->req.method;
    int keep_alive = llhttp_should_keep_alive(&h->req);

    h->tkind = T_NONE; /* the head is in: no header deadline until the next request */

    if (unsupported_te(scratch(h))) {
        reject_head(c, 501, "Transfer-Encoding other than chunked",
                    "faultline: only the chunked transfer coding is supported\n");
        return;
    }
    if (has_obs_fold(h)) {
        reject_head(c, 400, "a header line folded onto the next (obs-fold)",
                    "faultline: folded header lines (obs-fold, RFC 9112 5.2) are not accepted; "
                    "send each header field on one line\n");
        return;
    }
    if (c->policy != w->policy) {
        fl_policy_unref(c->policy);
        c->policy = fl_policy_ref(w->policy);
    }
    fill_request(h, &rq);
    int hit = fl_fault_decide(c->policy, c->scope, &rq, &w->rng, fl_worker_now(w), &d);
    fl_tox_on_request(c, d.rule, &rq); /* a rule's connection faults start at its first request */
    if (c->closing) {
        scratch_release(h);
        return;
    }
    if (hit) {
        rf_free(c, h->rf_next);
        h->rf_next = resp_faults(c, &d, &rq);
        /* Only response faults: the request itself passes. */
        hit = d.bad || d.reset || d.abort || d.delay;
    }
    if (!hit) {
        scratch_release(h);
        if (h->req.flags & F_CHUNKED) {
            /* The head goes upstream with the first chunk size, once that
             * parses: a bad one (overflowing, negative) is answered 400 here
             * instead of leaving the upstream with half a request. */
            h->await_chunk = 1;
            arm_client_timer(c, 1);
            return;
        }
        dispatch_upstream(c, method, NULL);
        return;
    }
    if (d.bad) {
        /* A from_headers rule and an x-faultline-* header it cannot use. */
        char body[400];
        snprintf(body, sizeof(body), "faultline: %s (rule '%s' takes its faults from the "
                 "request's x-faultline-* headers)\n", d.bad_msg, d.rule->name);
        reject_head(c, 400, d.bad_msg, body);
        return;
    }
    if (d.reset) {
        log_fault(c, d.rule, FL_FAULT_RESET, 0, 0, &rq);
        scratch_release(h);
        fl_conn_close(c, 1);
        return;
    }
    if (d.delay && d.abort)
        log_fault(c, d.rule, FL_FAULT_DELAY, d.delay_ms, 0, &rq);
    else if (d.delay)
        defer_delay_line(c, d.rule, d.delay_ms, &rq);
    if (d.abort)
        log_fault(c, d.rule, FL_FAULT_ABORT, 0, fl_decision_abort_status(&d), &rq);
    scratch_release(h);
    if (d.delay) {
        h->held = d;
        h->held_method = method;
        h->rs = RQ_HOLD;
        if (fl_worker_hold(c->w, &c->hold, fl_worker_deadline_from(h->in_at, d.delay_ms),
                           held_cb) < 0)
            fl_conn_close(c, 1); /* out of memory: a reset, rather than no delay */
        return;
    }
    answer_abort(c, &d, method, !keep_alive);
}

/* Bytes [p, p+n) of the client stream belong to the current request, in state rs. */
static int consume(struct fl_conn *c, struct fl_chunk *ch, const char *p, size_t n)
{
    struct h1 *h = c->proto;
    if (n == 0)
        return 0;
    switch (h->rs) {
    case RQ_HEAD:
        if (h->head_bytes + n > H1_MAX_HEAD) {
            head_release(h);
            scratch_release(h);
            push_error(c, 431, "faultline: request header section exceeds %d bytes\n",
                       H1_MAX_HEAD);
            return -1;
        }
        if (h->n_head == H1_MAX_HEAD_SEGS) {
            /* A head trickling in many small reads: coalesce it into one chunk. */
            struct fl_chunk *m = fl_chunk_get(&c->w->pool);
            if (!m) {
                fl_conn_close(c, 0);
                return -1;
            }
            size_t o = 0;
            for (int i = 0; i < h->n_head; i++) {
                memcpy(m->data + o, h->head[i].ch->data + h->head[i].off, h->head[i].len);
                o += h->head[i].len;
            }
            size_t total = h->head_bytes;
            head_release(h);
            h->head[0] = (struct h1_seg){m, 0, (uint32_t)o};
            h->n_head = 1;
            h->head_bytes = total;
        }
        h->head[h->n_head++] =
            (struct h1_seg){fl_chunk_ref(ch), (uint32_t)(p - ch->data), (uint32_t)n};
        h->head_bytes += n;
        return 0;
    case RQ_PASS:
        return fl_conn_write(c, FL_UPSTREAM, ch, p, n);
    case RQ_DROP:
    case RQ_DONE:
    case RQ_HOLD:
    case RQ_UPGRADE:
        return 0;
    }
    return 0;
}

/* The client sent something that is not HTTP before any request: pass it through. */
static void switch_to_raw(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    struct h1_seg segs[H1_MAX_HEAD_SEGS];
    int n = h->n_head;
    struct fl_chunk *in = h->in;
    size_t in_off = h->in_off, in_len = h->in_len;

    memcpy(segs, h->head, sizeof(segs));
    h->n_head = 0;
    h->in = NULL;
    if (fl_conn_switch(c, &fl_raw_ops) < 0) {
        fl_conn_close(c, 0);
    }
    for (int i = 0; i < n; i++) {
        if (!c->closing)
            fl_conn_write(c, FL_UPSTREAM, segs[i].ch, segs[i].ch->data + segs[i].off, segs[i].len);
        fl_chunk_unref(segs[i].ch);
    }
    if (in) {
        if (!c->closing && in_len > in_off)
            fl_conn_write(c, FL_UPSTREAM, in, in->data + in_off, in_len - in_off);
        fl_chunk_unref(in);
    }
}

static void release_input(struct h1 *h)
{
    fl_chunk_unref(h->in);
    h->in = NULL;
}

static void parse_error(struct fl_conn *c, llhttp_errno_t err)
{
    struct h1 *h = c->proto;
    char peer[64];
    fl_addr_str((struct sockaddr *)&c->src, peer, sizeof(peer));
    release_input(h);
    if (h->rs == RQ_HEAD && scratch(h) && scratch(h)->overflow) {
        head_release(h);
        scratch_release(h);
        fl_warn("request from %s: header section too large; answered 431", peer);
        push_error(c, 431, "faultline: request header section exceeds %d bytes\n", H1_MAX_HEAD);
        return;
    }
    if (h->rs == RQ_HEAD) {
        head_release(h);
        scratch_release(h);
        fl_warn("malformed request from %s: %s (%s); answered 400", peer, llhttp_errno_name(err),
                llhttp_get_error_reason(&h->req));
        push_error(c, 400, "faultline: malformed HTTP request: %s\n",
                   llhttp_get_error_reason(&h->req));
        return;
    }
    fl_warn("malformed request body from %s: %s; closing the connection", peer,
            llhttp_get_error_reason(&h->req));
    fl_conn_close(c, 0);
}

/* An Upgrade or CONNECT request has been read whole. If it went upstream, the
 * client's next bytes wait for the answer: 101 (or 2xx to CONNECT) makes the
 * connection raw, anything else keeps it HTTP. One answered here (a fault)
 * never switches. */
static void upgrade_sent(struct h1 *h)
{
    h->upgrade_decided = 1;
    if (h->last_upstream && (h->rs == RQ_PASS || h->rs == RQ_HEAD))
        h->rs = RQ_UPGRADE;
}

/* Parses and dispatches buffered client input until it is used up or a
 * request is held. */
static void client_pump(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    while (!c->closing && h->in) {
        if (h->rs == RQ_HOLD || h->rs == RQ_UPGRADE || h->wait_upstream)
            break;
        if (h->rs == RQ_HEAD && h->sl_count >= H1_MAX_SLOTS)
            break; /* deep pipeline: wait for responses */
        if (fl_conn_backlog(c, FL_CLIENT) >= FL_WQ_HWM)
            break; /* the client is not reading what it asked for: read no more
                    * of its requests until it has (h1_drained resumes) */
        if (h->rs == RQ_DONE) {
            release_input(h);
            break;
        }
        const char *start = h->in->data + h->in_off;
        size_t avail = h->in_len - h->in_off;
        h->ev = EV_NONE;
        llhttp_errno_t err = llhttp_execute(&h->req, start, avail);
        size_t used = avail;
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
            used = (size_t)(llhttp_get_error_pos(&h->req) - start);
        else if (err != HPE_OK) {
            if (!h->seen_request_done && !h->url_done && h->sl_count == 0 && h->rs == RQ_HEAD &&
                !(scratch(h) && scratch(h)->overflow)) {
                switch_to_raw(c);
                return;
            }
            parse_error(c, err);
            return;
        }
        if (consume(c, h->in, start, used) < 0) {
            release_input(h);
            return;
        }
        h->in_off += used;
        if (err == HPE_PAUSED) {
            llhttp_resume(&h->req);
            if (h->ev == EV_HEADERS) {
                on_head(c);
            } else if (h->ev == EV_CHUNK) {
                h->await_chunk = 0;
                h->tkind = T_NONE;
                dispatch_upstream(c, (uint8_t)h->req.method, NULL);
            } else if (h->ev == EV_DONE) {
                if (h->req_bw) {
                    /* The throttled body is all written: what follows is not. */
                    h->req_bw = 0;
                    if (fl_tox_set_rate(c, FL_UPSTREAM, 0) < 0) {
                        fl_conn_close(c, 0);
                        return;
                    }
                }
                if (h->rs == RQ_PASS || h->rs == RQ_DROP)
                    h->rs = llhttp_should_keep_alive(&h->req) ? RQ_HEAD : RQ_DONE;
                h->url_done = 0;
                if (h->req.upgrade)
                    upgrade_sent(h);
            }
        } else if (err == HPE_PAUSED_UPGRADE) {
            /* llhttp stops after an Upgrade/CONNECT message (on the next call
             * when the message ended a call): resume at once. Whether the
             * bytes after it are the new protocol is decided by the upstream's
             * answer; the parser only reads them if it refuses. */
            llhttp_resume_after_upgrade(&h->req);
            if (!h->upgrade_decided)
                upgrade_sent(h);
            h->upgrade_decided = 0;
        }
        if (h->in && h->in_off >= h->in_len) {
            /* A message with no body completes without consuming bytes. */
            if (err == HPE_PAUSED && h->ev == EV_HEADERS && h->rs != RQ_HOLD && !c->closing)
                continue;
            release_input(h);
        }
    }
    if (c->closing)
        return;
    c->s[FL_CLIENT].want_read = (h->in == NULL && (h->rs != RQ_DONE || h->lingering) &&
                                 h->rs != RQ_UPGRADE && !h->wait_upstream);
    fl_conn_update_reading(c);
    /* A request answered here (a fault), or whose body ended after its
     * response, leaves the connection idle without response_done() seeing
     * it: the idle deadline starts now. */
    if (h->tkind == T_NONE && h1_waiting(h))
        arm_client_timer(c, 0);
    maybe_finish(c);
}

/* ---- response side ---- */

static int on_status_complete(llhttp_t *p)
{
    struct fl_conn *c = p->data;
    struct h1 *h = c->proto;
    struct h1_slot *s = slot_front(h);
    if (s && s->kind == SLOT_UPSTREAM && s->mark) {
        h->ev = EV_STATUS;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_resp_headers_complete(llhttp_t *p)
{
    struct fl_conn *c = p->data;
    struct h1 *h = c->proto;
    struct h1_slot *s = slot_front(h);
    if (!s || s->kind != SLOT_UPSTREAM)
        return 0;
    if (p->status_code == 101 ||
        (s->method == HTTP_CONNECT && p->status_code >= 200 && p->status_code < 300))
        h->resp_switch = 1;
    if (s->method == HTTP_CONNECT && p->status_code >= 200 && p->status_code < 300)
        return 2; /* tunnel established: no body, the rest is raw */
    if (h->resp_capture || h->resp_trunc) {
        /* modify or truncate: stop here, where the head ends, to rewrite it
         * or count the body from its first byte. */
        if (s->method == HTTP_HEAD)
            p->flags |= F_SKIPBODY; /* what returning 1 would have said */
        else
            h->resp_until_eof = llhttp_message_needs_eof(p);
        h->ev = EV_RHEAD;
        return HPE_PAUSED;
    }
    if (s->method == HTTP_HEAD)
        return 1;
    h->resp_until_eof = llhttp_message_needs_eof(p);
    return 0;
}

/* truncate: counts the body the client gets; marks where to cut. */
static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    struct fl_conn *c = p->data;
    struct h1 *h = c->proto;
    if (!h->resp_trunc || h->cut_at)
        return 0;
    if (len >= h->trunc_left) {
        h->cut_at = at + h->trunc_left;
        h->trunc_left = 0;
    } else {
        h->trunc_left -= len;
    }
    return 0;
}

/* truncate: the body was cut; the client's connection is reset. */
static void truncate_now(struct fl_conn *c, struct h1_slot *s)
{
    struct h1 *h = c->proto;
    rf_emit(c, s->rf, h->resp_status ? h->resp_status : h->resp.status_code);
    fl_conn_close(c, 1);
}

static int header_listed(const char *name, size_t len, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return 1;
    return 0;
}

static int header_set(const char *name, size_t len, const struct fl_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(kv[i].name) == len && strncasecmp(kv[i].name, name, len) == 0)
            return 1;
    return 0;
}

/* modify: writes the response head the client gets, made from the
 * upstream's (h->mhead): the status replaced, headers removed and set, the
 * framing rewritten for a replaced body. Returns the status sent, or -1
 * (out of memory: the connection is closed). */
static int write_modified_head(struct fl_conn *c, struct h1_slot *s)
{
    struct h1 *h = c->proto;
    const struct fl_rule *r = s->rf->rule;
    const struct fl_modify *m = &r->modify;
    int status = m->status ? m->status : h->resp.status_code;
    int new_body = m->body != NULL;
    size_t cap = h->mhead_len + strlen(r->name) + 128;
    for (size_t i = 0; i < m->n_set; i++)
        cap += strlen(m->set[i].name) + strlen(m->set[i].value) + 4;
    char *out = malloc(cap);
    if (!out) {
        fl_conn_close(c, 0);
        return -1;
    }
    size_t n = 0;
    const char *q = h->mhead, *end = h->mhead + h->mhead_len;
    int first = 1;
    while (q < end) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        const char *le = nl ? nl : end;
        size_t ll = (size_t)(le - q);
        if (ll && q[ll - 1] == '\r')
            ll--;
        if (first) {
            first = 0;
            if (m->status)
                n += (size_t)snprintf(out + n, cap - n, "HTTP/1.1 %d %s\r\n", status, reason(status));
            else {
                memcpy(out + n, q, ll);
                n += ll;
                out[n++] = '\r';
                out[n++] = '\n';
            }
        } else if (ll) {
            const char *colon = memchr(q, ':', ll);
            size_t nl_len = colon ? (size_t)(colon - q) : ll;
            int drop = header_listed(q, nl_len, m->remove, m->n_remove) ||
                       header_set(q, nl_len, m->set, m->n_set) ||
                       (nl_len == 20 && strncasecmp(q, "x-faultline-injected", 20) == 0) ||
                       (new_body && ((nl_len == 14 && strncasecmp(q, "content-length", 14) == 0) ||
                                     (nl_len == 17 && strncasecmp(q, "transfer-encoding", 17) == 0)));
            if (!drop) {
                memcpy(out + n, q, ll);
                n += ll;
                out[n++] = '\r';
                out[n++] = '\n';
            }
        }
        q = nl ? nl + 1 : end;
    }
    for (size_t i = 0; i < m->n_set; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s: %s\r\n", m->set[i].name, m->set[i].value);
    n += (size_t)snprintf(out + n, cap - n, "x-faultline-injected: %s\r\n", r->name);
    int bodyless = s->method == HTTP_HEAD || status == 204 || status == 304;
    if (new_body && status != 204 && status != 304)
        n += (size_t)snprintf(out + n, cap - n, "content-length: %zu\r\n", m->body_len);
    n += (size_t)snprintf(out + n, cap - n, "\r\n");
    fl_conn_write(c, FL_CLIENT, NULL, out, n);
    free(out);
    h->resp_status = status;
    if (new_body && !bodyless && !c->closing) {
        size_t bl = m->body_len;
        int cut = h->resp_trunc && h->trunc_left < bl;
        if (cut)
            bl = (size_t)h->trunc_left;
        fl_conn_write(c, FL_CLIENT, NULL, m->body, bl);
        if (cut && !c->closing) {
            truncate_now(c, s);
            return -1;
        }
    }
    if (new_body) {
        h->resp_drain = 1; /* the upstream's body is read and dropped */
        h->resp_trunc = 0;
    }
    return status;
}

/* The front response's head has been parsed, with response faults on it. */
static void on_rhead(struct fl_conn *c, struct h1_slot *s)
{
    struct h1 *h = c->proto;
    int st = h->resp.status_code;
    if (st < 200) {
        /* An interim response (100, 103): passed on as it came. */
        if (h->resp_capture && h->mhead_len)
            fl_conn_write(c, FL_CLIENT, NULL, h->mhead, h->mhead_len);
        h->mhead_len = 0;
        return;
    }
    if (h->resp_capture) {
        h->resp_capture = 0;
        int sent = write_modified_head(c, s);
        if (sent < 0 || c->closing)
            return;
        emit_line(c, &s->line, s->line_len, sent); /* a delay before it */
    }
    if (h->resp_trunc && h->trunc_left == 0 && s->method != HTTP_HEAD && st != 204 && st != 304)
        truncate_now(c, s);
}

/* response_delay: the held response goes on. */
static void resp_held_cb(struct fl_hold *hd)
{
    struct h1 *h = (struct h1 *)(void *)((char *)hd - offsetof(struct h1, resp_hold));
    struct fl_conn *c = h->resp.data;
    struct fl_chunk *ch = h->up_in;
    if (c->closing)
        return;
    h->up_in = NULL;
    c->s[FL_UPSTREAM].want_read = 1;
    fl_conn_update_reading(c);
    if (ch) {
        upstream_data(c, ch, h->up_off, h->up_len);
        fl_chunk_unref(ch);
    }
}

static void response_done(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    int status = h->resp.status_code;
    struct h1_slot *s = slot_front(h);
    if (status >= 100 && status < 200 && status != 101)
        return; /* interim response; the final one follows */
    if (s && s->kind == SLOT_UPSTREAM) {
        rf_emit(c, s->rf, h->resp_status ? h->resp_status : status);
        slot_pop(h);
    }
    if (h->rs == RQ_UPGRADE && h->sl_count == 0) {
        /* The Upgrade/CONNECT request was answered without switching (the
         * upgrade request is always the last slot): the connection stays
         * HTTP, and the bytes that waited are parsed as requests. */
        llhttp_resume_after_upgrade(&h->req);
        h->rs = llhttp_should_keep_alive(&h->req) ? RQ_HEAD : RQ_DONE;
    }
    flush_front(c);
    if (c->closing)
        return;
    if (h1_waiting(h))
        arm_client_timer(c, 0);
    if (h->in && h->rs == RQ_HEAD)
        client_pump(c);
    else if (c->s[FL_CLIENT].want_read == 0 && h->rs == RQ_HEAD && !h->in) {
        c->s[FL_CLIENT].want_read = 1;
        fl_conn_update_reading(c);
    }
    maybe_finish(c);
}

static int on_resp_message_complete(llhttp_t *p)
{
    struct fl_conn *c = p->data;
    struct h1 *h = c->proto;
    if (h->finishing) {
        response_done(c);
        return 0;
    }
    h->ev = EV_DONE;
    return HPE_PAUSED;
}

/* The upstream agreed to switch protocols (101, or 2xx to CONNECT): from here
 * the connection is relayed raw by fl_raw_ops. The bytes that followed the
 * response head (p, left, inside ch) and the client bytes held back since the
 * request go out first, in order. The h1 state is freed. */
static void become_raw(struct fl_conn *c, struct fl_chunk *ch, const char *p, size_t left)
{
    struct h1 *h = c->proto;
    struct fl_chunk *in = h->in;
    size_t in_off = h->in_off, in_len = h->in_len;
    int client_eof = h->client_eof;

    h->in = NULL;
    fl_chunk_ref(ch); /* the caller's reference may not outlive the switch */
    if (fl_conn_switch(c, &fl_raw_ops) < 0) {
        fl_conn_close(c, 0);
    } else {
        if (left)
            fl_conn_write(c, FL_CLIENT, ch, p, left);
        if (in && in_len > in_off && !c->closing)
            fl_conn_write(c, FL_UPSTREAM, in, in->data + in_off, in_len - in_off);
        /* A FIN that came before the switch is passed on now. */
        if (client_eof && !c->closing)
            c->ops->eof(c, FL_CLIENT);
    }
    fl_chunk_unref(in);
    fl_chunk_unref(ch);
}

static void upstream_data(struct fl_conn *c, struct fl_chunk *ch, size_t off, size_t len)
{
    struct h1 *h = c->proto;
    const char *p = ch->data + off;
    size_t left = len;

    while (left && !c->closing) {
        struct h1_slot *fs = slot_front(h);
        struct h1_resp *rf = fs && fs->kind == SLOT_UPSTREAM ? fs->rf : NULL;
        if (rf && !h->resp_started) {
            /* The first bytes of a response with faults on it. */
            const struct fl_rule *r = rf->rule;
            h->resp_started = 1;
            if (c->up_deadline)
                fl_conn_upstream_deadline(c, 0);
            if (rf->bw && (r->bandwidth.dir & FL_DIR_DOWN)) {
                if (fl_tox_set_rate(c, FL_CLIENT, r->bandwidth.rate) < 0) {
                    fl_conn_close(c, 0);
                    return;
                }
                h->resp_bw = 1;
            }
            if (rf->truncate) {
                h->resp_trunc = 1;
                h->trunc_left = r->truncate.after;
            }
            if (rf->modify)
                h->resp_capture = 1;
            if (rf->delay) {
                /* Hold it, and read no more from the upstream meanwhile. */
                rf->delay = 0;
                h->up_in = fl_chunk_ref(ch);
                h->up_off = (size_t)(p - ch->data);
                h->up_len = left;
                c->s[FL_UPSTREAM].want_read = 0;
                fl_conn_update_reading(c);
                if (fl_worker_hold(c->w, &h->resp_hold, fl_worker_deadline(rf->delay_ms),
                                   resp_held_cb) < 0)
                    fl_conn_close(c, 1);
                return;
            }
        }
        h->ev = EV_NONE;
        h->cut_at = NULL;
        llhttp_errno_t err = llhttp_execute(&h->resp, p, left);
        size_t used = left;
        if (c->up_deadline)
            fl_conn_upstream_deadline(c, 0); /* the front response has begun */
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            used = (size_t)(llhttp_get_error_pos(&h->resp) - p);
        } else if (err != HPE_OK) {
            char up[64];
            fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
            fl_warn("conn %llu: invalid HTTP response from upstream %s: %s",
                    (unsigned long long)c->id, up, llhttp_get_error_reason(&h->resp));
            if (h->resp_bytes == 0 && slot_front(h)) {
                fail_pending(c, 502);
                push_error(c, 502, "faultline: upstream %s sent an invalid HTTP response\n", up);
            } else {
                fl_conn_close(c, 0);
            }
            return;
        }
        if (h->cut_at && h->cut_at <= p + used) {
            /* truncate: the client gets the body up to here, then a reset. */
            size_t n = (size_t)(h->cut_at - p);
            if (n && !h->resp_drain && !h->resp_capture)
                fl_conn_write(c, FL_CLIENT, ch, p, n);
            if (!c->closing)
                truncate_now(c, fs);
            return;
        }
        if (err == HPE_PAUSED && h->ev == EV_STATUS) {
            /* A delayed request's response: the marker goes right after the
             * status line, sent together with it in one write. */
            struct h1_slot *s = slot_front(h);
            char mark[1024];
            int n = 0;
            if (used < sizeof(mark) - 100) {
                memcpy(mark, p, used);
                n = (int)used;
            } else {
                fl_conn_write(c, FL_CLIENT, ch, p, used);
            }
            n += snprintf(mark + n, sizeof(mark) - (size_t)n, "x-faultline-injected: %s\r\n",
                          s->mark->name);
            fl_conn_write(c, FL_CLIENT, NULL, mark, (size_t)n);
            if (h->resp.status_code >= 200 || h->resp.status_code == 101)
                emit_line(c, &s->line, s->line_len, h->resp.status_code);
            h->resp_bytes += used;
        } else if (used && h->resp_capture) {
            /* modify: the head is rewritten once it is whole */
            if (h->mhead_len + used > H1_MAX_HEAD) {
                char up[64];
                fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
                fl_warn("conn %llu: a response head from %s is over %d bytes; rule '%s' cannot "
                        "modify it; answered 502", (unsigned long long)c->id, up, H1_MAX_HEAD,
                        rf ? rf->rule->name : "?");
                fail_pending(c, 502);
                push_error(c, 502, "faultline: the upstream's response head is over %d bytes\n",
                           H1_MAX_HEAD);
                return;
            }
            char *nb = realloc(h->mhead, h->mhead_len + used);
            if (!nb) {
                fl_conn_close(c, 0);
                return;
            }
            h->mhead = nb;
            memcpy(h->mhead + h->mhead_len, p, used);
            h->mhead_len += used;
            h->resp_bytes += used;
        } else if (used) {
            if (!h->resp_drain)
                fl_conn_write(c, FL_CLIENT, ch, p, used);
            h->resp_bytes += used;
        }
        p += used;
        left -= used;
        if (err == HPE_PAUSED && h->ev == EV_RHEAD) {
            llhttp_resume(&h->resp);
            on_rhead(c, fs);
            continue;
        }
        if (err == HPE_PAUSED) {
            llhttp_resume(&h->resp);
            if (h->ev == EV_DONE && h->resp_switch) {
                /* 101 Switching Protocols or a CONNECT tunnel: the rest is raw,
                 * if this answers the Upgrade/CONNECT request waiting for it. */
                h->resp_switch = 0;
                if (h->rs != RQ_UPGRADE || h->sl_count != 1) {
                    char up[64];
                    fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
                    fl_warn("conn %llu: upstream %s switched protocols without an Upgrade or "
                            "CONNECT request waiting; closing the connection",
                            (unsigned long long)c->id, up);
                    fl_conn_close(c, 0);
                    return;
                }
                slot_pop(h);
                become_raw(c, ch, p, left);
                return; /* h is gone */
            }
            if (h->ev == EV_DONE)
                response_done(c);
        } else if (err == HPE_PAUSED_UPGRADE) {
            fl_conn_close(c, 0); /* cannot happen: switches are taken at EV_DONE */
            return;
        }
    }
}

/* ---- ops ---- */

static void h1_data(struct fl_conn *c, int side, struct fl_chunk *ch, size_t off, size_t len)
{
    struct h1 *h = c->proto;
    if (side == FL_UPSTREAM) {
        upstream_data(c, ch, off, len);
        return;
    }
    if (h->in) {
        /* Cannot happen: reading stops while input is pending. */
        fl_error("conn %llu: unexpected client input while parsing is paused",
                 (unsigned long long)c->id);
        fl_conn_close(c, 0);
        return;
    }
    if (!h->seen_request && h->head_bytes == 0 && len >= 3 && memcmp(ch->data + off, "PRI", 3) == 0 &&
        memcmp(ch->data + off, H2_PREFACE, len < sizeof(H2_PREFACE) - 1 ? len : sizeof(H2_PREFACE) - 1) == 0) {
        /* HTTP/2 prior knowledge: the h2 handler takes the connection from
         * its first byte (nghttp2 checks the rest of the preface). */
        if (fl_conn_switch(c, &fl_h2_ops) < 0) {
            fl_conn_close(c, 0);
            return;
        }
        c->ops->data(c, side, ch, off, len);
        return;
    }
    h->in = fl_chunk_ref(ch);
    h->in_off = off;
    h->in_len = off + len;
    h->in_at = uv_hrtime();
    client_pump(c);
}

static void upstream_recycled(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    llhttp_init(&h->resp, HTTP_RESPONSE, resp_settings());
    h->resp.data = c;
    h->wait_upstream = 0;
    client_pump(c);
}

/* The upstream went away between requests (keep-alive timeout on its side):
 * drop that socket; the next request dials a new one. */
static void recycle_upstream(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    if (h->wait_upstream)
        return;
    h->wait_upstream = 1;
    fl_conn_recycle_upstream(c, upstream_recycled);
}

static void h1_eof(struct fl_conn *c, int side)
{
    struct h1 *h = c->proto;
    if (side == FL_CLIENT) {
        h->client_eof = 1;
        if (h->lingering) {
            fl_conn_close(c, 0);
            return;
        }
        if (h->rs == RQ_HEAD && h->head_bytes == 0 && h->sl_count == 0) {
            fl_conn_close(c, 0);
            return;
        }
        if (c->s[FL_UPSTREAM].open)
            fl_conn_shutdown(c, FL_UPSTREAM);
        maybe_finish(c);
        return;
    }
    /* upstream EOF */
    h->finishing = 1;
    llhttp_finish(&h->resp);
    h->finishing = 0;
    if (c->closing)
        return;
    if (upstream_pending(h)) {
        if (h->resp_bytes == 0 && slot_front(h)->kind == SLOT_UPSTREAM) {
            char up[64];
            fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
            fl_warn("conn %llu: upstream %s (%s) closed the connection before responding; "
                    "answered 502",
                    (unsigned long long)c->id, up, c->scope);
            fail_pending(c, 502);
            push_error(c, 502, "faultline: upstream %s closed the connection before responding\n",
                       up);
        } else {
            fl_conn_close(c, 0);
        }
        return;
    }
    if (h->rs == RQ_UPGRADE) {
        /* Closed without answering the Upgrade/CONNECT request: nothing more
         * will be said on this connection. */
        h->rs = RQ_DONE;
        h->close_after_flush = 1;
        release_input(h);
        maybe_finish(c);
        return;
    }
    if (h->rs == RQ_DONE || h->client_eof || h->resp_until_eof) {
        /* The client was told (or told us) this is the last response, or the
         * response ended with the upstream's FIN: pass the close on. */
        h->close_after_flush = 1;
        maybe_finish(c);
        return;
    }
    recycle_upstream(c);
}

static void h1_upstream_error(struct fl_conn *c, int err)
{
    struct h1 *h = c->proto;
    char up[64];
    fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
    if (!upstream_pending(h) && h->rs != RQ_UPGRADE) {
        /* Failed while idle: forget this socket, dial again on the next request. */
        if (c->s[FL_UPSTREAM].open)
            recycle_upstream(c);
        return;
    }
    struct h1_slot *s = slot_front(h);
    if (s && s->kind == SLOT_UPSTREAM && h->resp_bytes == 0) {
        fl_warn("upstream %s for listener '%s' is unreachable: %s; answered 502", up, c->scope,
                uv_strerror(err));
        fail_pending(c, 502);
        push_error(c, 502,
                   "faultline: upstream %s (listener '%s') is unreachable: %s. "
                   "Check that the service is running and the policy's upstream is right.\n",
                   up, c->scope, uv_strerror(err));
        return;
    }
    fl_warn("upstream %s failed mid-response: %s; closing the client connection", up,
            uv_strerror(err));
    fl_conn_close(c, 0);
}

static void h1_upstream_timeout(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    struct h1_slot *s = slot_front(h);
    char up[64];
    if (!s || s->kind != SLOT_UPSTREAM || h->resp_bytes)
        return;
    fl_addr_str((struct sockaddr *)&c->dst, up, sizeof(up));
    fl_warn("conn %llu: upstream %s (listener '%s') did not answer within %llu ms "
            "(--upstream-timeout); answered 504",
            (unsigned long long)c->id, up, c->scope,
            (unsigned long long)fl_conn_upstream_timeout_ms);
    fail_pending(c, 504);
    /* A late answer must not reach the client behind the 504. */
    recycle_upstream(c);
    push_error(c, 504,
               "faultline: upstream %s (listener '%s') did not answer within %llu ms; "
               "check the service, or raise --upstream-timeout\n",
               up, c->scope, (unsigned long long)fl_conn_upstream_timeout_ms);
}

static void h1_drained(struct fl_conn *c, int side)
{
    struct h1 *h = c->proto;
    if (side != FL_CLIENT)
        return;
    if (h->in && h->rs != RQ_HOLD)
        client_pump(c); /* parsing waited for the client to read (backlog) */
    else
        maybe_finish(c);
}

static int h1_idle(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    return h->rs == RQ_HEAD && h->head_bytes == 0 && h->sl_count == 0 && !h->in;
}

static int h1_init(struct fl_conn *c)
{
    struct h1 *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    llhttp_init(&h->req, HTTP_REQUEST, req_settings());
    llhttp_init(&h->resp, HTTP_RESPONSE, resp_settings());
    h->req.data = c;
    h->resp.data = c;
    h->rs = RQ_HEAD;
    c->proto = h;
    arm_client_timer(c, 0);
    return 0;
}

static void h1_destroy(struct fl_conn *c)
{
    struct h1 *h = c->proto;
    if (!h)
        return;
    if (h->rs == RQ_HOLD) {
        fl_fault_release();
        if (h->held.abort)
            fl_fault_release();
    }
    head_release(h);
    scratch_release(h);
    release_input(h);
    while (h->sl_count)
        slot_pop(h);
    emit_line(c, &h->held_line, h->held_line_len, 0);
    rf_free(c, h->rf_next);
    fl_worker_unhold(c->w, &h->resp_hold);
    fl_chunk_unref(h->up_in);
    free(h->mhead);
    free(h);
    c->proto = NULL;
}

static const llhttp_settings_t req_cbs = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_req_headers_complete,
    .on_chunk_header = on_req_chunk_header,
    .on_message_complete = on_req_message_complete,
};

static const llhttp_settings_t resp_cbs = {
    .on_status_complete = on_status_complete,
    .on_body = on_resp_body,
    .on_headers_complete = on_resp_headers_complete,
    .on_message_complete = on_resp_message_complete,
};

static const llhttp_settings_t *req_settings(void)
{
    return &req_cbs;
}

static const llhttp_settings_t *resp_settings(void)
{
    return &resp_cbs;
}

const struct fl_proto_ops fl_http1_ops = {
    .name = "http/1.1",
    .init = h1_init,
    .data = h1_data,
    .eof = h1_eof,
    .upstream_error = h1_upstream_error,
    .drained = h1_drained,
    .upstream_timeout = h1_upstream_timeout,
    .idle = h1_idle,
    .destroy = h1_destroy,
};
