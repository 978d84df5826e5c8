#include "faultlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int log_fd = -1;
void (*fl_faultlog_tap)(const char *line, size_t len);
char fl_faultlog_node[256];
atomic_ullong fl_faultlog_dropped;

int fl_faultlog_open(const char *path)
{
    if (!path || strcmp(path, "-") == 0) {
        log_fd = STDOUT_FILENO;
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    log_fd = fd;
    return 0;
}

void fl_faultlog_close(void)
{
    if (log_fd > STDERR_FILENO)
        close(log_fd);
    log_fd = -1;
}

void fl_faultlog_buf_init(struct fl_faultlog_buf *lb, uv_loop_t *loop)
{
    memset(lb, 0, sizeof(*lb));
    lb->loop = loop;
}

void fl_faultlog_buf_fini(struct fl_faultlog_buf *lb)
{
    free(lb->buf);
    free(lb->inflight);
    lb->buf = lb->inflight = NULL;
    lb->inflight_cap = 0;
    lb->len = lb->cap = 0;
}

static void flush_async(struct fl_faultlog_buf *lb);

static void write_cb(uv_fs_t *req)
{
    struct fl_faultlog_buf *lb = req->data;
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    if (r < 0) {
        fl_error("fault log write failed: %s; fault lines are being dropped", uv_strerror((int)r));
    } else if ((size_t)r < lb->inflight_len) {
        /* Short write (a pipe): put the rest back in front of the queue. */
        size_t rest = lb->inflight_len - (size_t)r;
        char *nb = malloc(lb->len + rest + 1);
        if (nb) {
            memcpy(nb, lb->inflight + r, rest);
            if (lb->len)
                memcpy(nb + rest, lb->buf, lb->len);
            free(lb->buf);
            lb->buf = nb;
            lb->len += rest;
            lb->cap = lb->len + 1;
        } else {
            atomic_fetch_add_explicit(&fl_faultlog_dropped, 1, memory_order_relaxed);
        }
    }
    lb->busy = 0;
    lb->inflight_len = 0;
    if (lb->len)
        flush_async(lb);
}

static void flush_async(struct fl_faultlog_buf *lb)
{
    if (lb->busy || lb->len == 0 || log_fd < 0 || !lb->loop)
        return;
    /* Swap buffers: the in-flight one is owned by the write until write_cb. */
    char *tmp = lb->inflight;
    size_t tmp_cap = lb->inflight_cap;
    lb->inflight = lb->buf;
    lb->inflight_cap = lb->cap;
    lb->inflight_len = lb->len;
    lb->buf = tmp; /* the previous write's buffer is reused, not reallocated */
    lb->cap = tmp_cap;
    lb->len = 0;
    uv_buf_t b = uv_buf_init(lb->inflight, (unsigned)lb->inflight_len);
    lb->req.data = lb;
    lb->busy = 1;
    if (uv_fs_write(lb->loop, &lb->req, log_fd, &b, 1, -1, write_cb) < 0) {
        lb->busy = 0;
        fl_error("fault log: cannot queue a write");
    }
}

static void append(struct fl_faultlog_buf *lb, const char *s, size_t n)
{
    if (lb->len + n > FL_LOG_CAP) {
        atomic_fetch_add_explicit(&fl_faultlog_dropped, 1, memory_order_relaxed);
        return;
    }
    if (lb->len + n > lb->cap) {
        size_t ncap = lb->cap ? lb->cap * 2 : 16384;
        while (ncap < lb->len + n)
            ncap *= 2;
        char *nb = realloc(lb->buf, ncap);
        if (!nb) {
            atomic_fetch_add_explicit(&fl_faultlog_dropped, 1, memory_order_relaxed);
            return;
        }
        lb->buf = nb;
        lb->cap = ncap;
    }
    memcpy(lb->buf + lb->len, s, n);
    lb->len += n;
}

/* Appends s as a JSON string body (escaped, no quotes) into out, writing no
 * more than max bytes of it and never past cap. Sets *cut when s did not fit;
 * a cut never splits a UTF-8 sequence. Returns the new length. */
static size_t json_escape(char *out, size_t cap, size_t pos, const char *s, size_t len, size_t max,
                          int *cut)
{
    static const char hex[] = "0123456789abcdef";
    size_t end = pos + max < cap ? pos + max : cap;
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (pos + 7 >= end)
            break;
        if (ch == '"' || ch == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            out[pos++] = '\\';
            out[pos++] = 'u';
            out[pos++] = '0';
            out[pos++] = '0';
            out[pos++] = hex[ch >> 4];
            out[pos++] = hex[ch & 15];
        } else {
            out[pos++] = (char)ch;
        }
    }
    if (i < len) {
        *cut = 1;
        /* s[i] continues a multi-byte sequence: drop its start too. */
        if (((unsigned char)s[i] & 0xc0) == 0x80) {
            while (pos && ((unsigned char)out[pos - 1] & 0xc0) == 0x80)
                pos--;
            if (pos && (unsigned char)out[pos - 1] >= 0xc0)
                pos--;
        }
    }
    return pos;
}

static size_t put(char *out, size_t cap, size_t pos, const char *s)
{
    size_t n = strlen(s);
    if (pos + n >= cap)
        n = cap > pos + 1 ? cap - pos - 1 : 0;
    memcpy(out + pos, s, n);
    return pos + n;
}

static size_t put_str(char *out, size_t cap, size_t pos, const char *key, const char *s,
                      size_t len, size_t max, int *cut)
{
    pos = put(out, cap, pos, key);
    pos = json_escape(out, cap, pos, s ? s : "", s ? len : 0, max, cut);
    return put(out, cap, pos, "\"");
}

/* Longest escaped value of each field: a line stays well under
 * FL_FAULTLOG_LINE_MAX whatever the request carries. */
#define FIELD_NAME_MAX 256
#define FIELD_METHOD_MAX 64
#define FIELD_PATH_MAX 4096
#define FIELD_AUTHORITY_MAX 512

size_t fl_faultlog_format(const struct fl_fault_event *ev, char *line, size_t cap)
{
    char ts[32], num[64], addr[64];
    size_t pos = 0;
    int cut = 0;
    const struct fl_request *rq = ev->req;

    fl_log_timestamp(ts, sizeof(ts));
    pos = put(line, cap, pos, "{\"ts\":\"");
    pos = put(line, cap, pos, ts);
    pos = put(line, cap, pos, "\",\"event\":\"fault\"");
    pos = put_str(line, cap, pos, ",\"policy\":\"", ev->policy, strlen(ev->policy),
                  FIELD_NAME_MAX, &cut);
    pos = put_str(line, cap, pos, ",\"rule\":\"", ev->rule, strlen(ev->rule), FIELD_NAME_MAX,
                  &cut);
    pos = put(line, cap, pos, ",\"fault\":\"");
    pos = put(line, cap, pos, fl_fault_kind_name(ev->kind));
    pos = put(line, cap, pos, "\"");
    if (ev->kind == FL_FAULT_DELAY || ev->kind == FL_FAULT_RESPONSE_DELAY) {
        snprintf(num, sizeof(num), ",\"delay_ms\":%llu", (unsigned long long)ev->delay_ms);
        pos = put(line, cap, pos, num);
    } else if (ev->kind == FL_FAULT_ABORT) {
        if (ev->grpc_status >= 0)
            snprintf(num, sizeof(num), ",\"grpc_status\":%d", ev->grpc_status);
        else
            snprintf(num, sizeof(num), ",\"status\":%d", ev->status);
        pos = put(line, cap, pos, num);
    }
    if (ev->extra)
        pos = put(line, cap, pos, ev->extra);
    if (!rq && ev->proto) {
        pos = put(line, cap, pos, ",\"proto\":\"");
        pos = put(line, cap, pos, ev->proto);
        pos = put(line, cap, pos, "\"");
    }
    if (rq) {
        pos = put(line, cap, pos, ",\"proto\":\"");
        pos = put(line, cap, pos, fl_match_proto_name(rq->proto));
        pos = put(line, cap, pos, "\"");
        pos = put_str(line, cap, pos, ",\"method\":\"", rq->method_str, rq->method_len,
                      FIELD_METHOD_MAX, &cut);
        pos = put_str(line, cap, pos, ",\"path\":\"", rq->path, rq->target_len, FIELD_PATH_MAX,
                      &cut);
        pos = put_str(line, cap, pos, ",\"authority\":\"", rq->authority, rq->authority_len,
                      FIELD_AUTHORITY_MAX, &cut);
    }
    if (ev->src) {
        fl_addr_str(ev->src, addr, sizeof(addr));
        pos = put_str(line, cap, pos, ",\"src\":\"", addr, strlen(addr), sizeof(addr), &cut);
    }
    if (ev->dst) {
        fl_addr_str(ev->dst, addr, sizeof(addr));
        pos = put_str(line, cap, pos, ",\"dst\":\"", addr, strlen(addr), sizeof(addr), &cut);
    }
    if (ev->pod) {
        const char *slash = strchr(ev->pod, '/');
        size_t nsl = slash ? (size_t)(slash - ev->pod) : 0;
        const char *name = slash ? slash + 1 : ev->pod;
        pos = put_str(line, cap, pos, ",\"namespace\":\"", ev->pod, nsl, FIELD_NAME_MAX, &cut);
        pos = put_str(line, cap, pos, ",\"pod\":\"", name, strlen(name), FIELD_NAME_MAX, &cut);
        pos = put_str(line, cap, pos, ",\"node\":\"", fl_faultlog_node, strlen(fl_faultlog_node),
                      FIELD_NAME_MAX, &cut);
    }
    if (cut)
        pos = put(line, cap, pos, ",\"truncated\":true");
    snprintf(num, sizeof(num), ",\"conn\":%llu", (unsigned long long)ev->conn);
    return put(line, cap, pos, num);
}

void fl_faultlog_emit_formatted(struct fl_faultlog_buf *lb, char *line, size_t len, size_t cap,
                                int status)
{
    char num[32];
    if (status > 0) {
        snprintf(num, sizeof(num), ",\"status\":%d", status);
        len = put(line, cap, len, num);
    }
    len = put(line, cap, len, "}");
    fl_faultlog_emit_raw(lb, line, len);
}

#define HELD_TAIL 32 /* room after a held line for ,"status":N} */

char *fl_faultlog_hold(struct fl_faultlog_buf *lb, const struct fl_fault_event *ev, size_t *len)
{
    char line[FL_FAULTLOG_LINE_MAX];
    size_t n = fl_faultlog_format(ev, line, sizeof(line));
    char *held = malloc(n + HELD_TAIL);
    if (!held) {
        fl_faultlog_emit_formatted(lb, line, n, sizeof(line), 0);
        return NULL;
    }
    memcpy(held, line, n);
    *len = n;
    return held;
}

void fl_faultlog_release(struct fl_faultlog_buf *lb, char **line, size_t len, int status)
{
    if (!*line)
        return;
    fl_faultlog_emit_formatted(lb, *line, len, len + HELD_TAIL, status);
    free(*line);
    *line = NULL;
}

void fl_faultlog_emit(struct fl_faultlog_buf *lb, const struct fl_fault_event *ev)
{
    char line[FL_FAULTLOG_LINE_MAX];
    size_t len = fl_faultlog_format(ev, line, sizeof(line));
    fl_faultlog_emit_formatted(lb, line, len, sizeof(line), 0);
}

void fl_faultlog_emit_raw(struct fl_faultlog_buf *lb, const char *json, size_t len)
{
    if (fl_faultlog_tap)
        fl_faultlog_tap(json, len);
    append(lb, json, len);
    append(lb, "\n", 1);
    flush_async(lb);
}

void fl_faultlog_buf_flush_sync(struct fl_faultlog_buf *lb)
{
    if (log_fd < 0)
        return;
    /* An async write may still be in flight; the caller runs this after the loop
     * has stopped, when in-flight requests have completed, so only lb->buf is left. */
    size_t off = 0;
    while (off < lb->len) {
        ssize_t n = write(log_fd, lb->buf + off, lb->len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fl_error("fault log: final flush failed: %s", strerror(errno));
            break;
        }
        off += (size_t)n;
    }
    lb->len = 0;
}

const char *fl_faultlog_resp_extra(const struct fl_rule *r, enum fl_fault_kind kind, int grpc,
                                   char *buf, size_t len)
{
    buf[0] = 0;
    if (kind == FL_FAULT_TRUNCATE)
        snprintf(buf, len, ",\"after\":%llu", (unsigned long long)r->truncate.after);
    else if (kind == FL_FAULT_BANDWIDTH)
        snprintf(buf, len, ",\"rate\":%llu,\"direction\":\"%s\"",
                 (unsigned long long)r->bandwidth.rate,
                 r->bandwidth.dir == (FL_DIR_UP | FL_DIR_DOWN) ? "both"
                 : r->bandwidth.dir == FL_DIR_UP            ? "upstream"
                                                            : "downstream");
    else if (kind == FL_FAULT_MODIFY && grpc && r->modify.grpc_status >= 0)
        snprintf(buf, len, ",\"grpc_status\":%d", r->modify.grpc_status);
    return buf[0] ? buf : NULL;
}
