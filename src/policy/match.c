/* match: pure functions over a request view; no allocation, no locks, so the
 * hot path can call them per request. */
#include "match.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

/* ASan's regexec interceptor checks strlen(string) + 1 bytes even with
 * REG_STARTEND (glibc itself stops at rm_eo), which reports a false overflow on
 * our unterminated slices. Sanitizer builds therefore match on a terminated
 * per-thread copy; a request head is at most 64 KiB, so it always fits. */
#if defined(__SANITIZE_ADDRESS__)
#define FL_REGEX_COPY 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FL_REGEX_COPY 1
#endif
#endif
#ifdef FL_REGEX_COPY
static _Thread_local char regex_copy[64 * 1024 + 1];
#endif

const char *fl_match_proto_name(enum fl_proto p)
{
    switch (p) {
    case FL_PROTO_HTTP1: return "http/1.1";
    case FL_PROTO_H2: return "h2";
    case FL_PROTO_GRPC: return "grpc";
    case FL_PROTO_TCP: return "tcp";
    }
    return "unknown";
}

int fl_match_str(const struct fl_str_match *sm, const char *s, size_t len)
{
    switch (sm->kind) {
    case FL_SM_ANY: return 1;
    case FL_SM_PRESENT: return s != NULL;
    case FL_SM_ABSENT: return s == NULL;
    case FL_SM_EXACT: return s && len == sm->len && memcmp(s, sm->value, len) == 0;
    case FL_SM_PREFIX: return s && len >= sm->len && memcmp(s, sm->value, sm->len) == 0;
    case FL_SM_REGEX: {
        if (!s)
            return 0;
#ifdef FL_REGEX_COPY
        if (len < sizeof(regex_copy)) {
            memcpy(regex_copy, s, len);
            regex_copy[len] = 0;
            return regexec(&sm->re, regex_copy, 0, NULL, 0) == 0;
        }
#endif
        /* REG_STARTEND lets the regex run on a slice that is not NUL-terminated. */
        regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)len}};
        return regexec(&sm->re, s, 1, m, REG_STARTEND) == 0;
    }
    }
    return 0;
}

/* A header condition holds if any header of that name fits (requests may
 * repeat a header); absent holds only if no header has that name. */
static int header_fits(const struct fl_header_match *hm, const struct fl_request *req)
{
    int seen = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct fl_hdr *h = &req->headers[i];
        if (h->name_len != hm->name_len || strncasecmp(h->name, hm->name, h->name_len) != 0)
            continue;
        seen = 1;
        if (hm->m.kind == FL_SM_ABSENT)
            return 0;
        if (fl_match_str(&hm->m, h->value ? h->value : "", h->value_len))
            return 1;
    }
    if (!seen)
        return hm->m.kind == FL_SM_ABSENT;
    return 0;
}

int fl_match_request(const struct fl_match *m, const struct fl_request *req)
{
    if (m->methods && !(m->methods & (1u << req->method)))
        return 0;
    if (m->path.kind != FL_SM_ANY && !fl_match_str(&m->path, req->path, req->path_len))
        return 0;
    if (m->has_grpc) {
        if (req->proto != FL_PROTO_GRPC)
            return 0;
        if (m->grpc_service && !(req->grpc_service_len == strlen(m->grpc_service) &&
                                 memcmp(req->grpc_service, m->grpc_service,
                                        req->grpc_service_len) == 0))
            return 0;
        if (m->grpc_method &&
            !(req->grpc_method_len == strlen(m->grpc_method) &&
              memcmp(req->grpc_method, m->grpc_method, req->grpc_method_len) == 0))
            return 0;
    }
    for (size_t i = 0; i < m->n_headers; i++)
        if (!header_fits(&m->headers[i], req))
            return 0;
    return 1;
}

int fl_match_set_grpc_path(struct fl_request *req)
{
    const char *p = req->path;
    size_t n = req->path_len;
    if (n < 4 || p[0] != '/')
        return -EINVAL;
    const char *slash = memchr(p + 1, '/', n - 1);
    if (!slash || slash == p + 1 || slash == p + n - 1)
        return -EINVAL;
    /* "/a/b/c" is not a gRPC method path; do not let it match service "a". */
    if (memchr(slash + 1, '/', (size_t)(p + n - slash - 1)))
        return -EINVAL;
    req->grpc_service = p + 1;
    req->grpc_service_len = (size_t)(slash - p - 1);
    req->grpc_method = slash + 1;
    req->grpc_method_len = (size_t)(p + n - slash - 1);
    return 0;
}
