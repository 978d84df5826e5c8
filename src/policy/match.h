/* match: does a request fit a rule's match block.
 *
 * Protocol handlers describe a request with struct fl_request; nothing here
 * knows whether it came over HTTP/1.1 or HTTP/2.
 */
#ifndef FL_MATCH_H
#define FL_MATCH_H

#include <stddef.h>
#include "policy.h"

enum fl_proto {
    FL_PROTO_HTTP1,
    FL_PROTO_H2,
    FL_PROTO_GRPC,
    FL_PROTO_TCP,
};

/* Name for the fault log's "proto" field: "http/1.1", "h2", "grpc", "tcp". */
const char *fl_match_proto_name(enum fl_proto p);

struct fl_hdr {
    const char *name; /* as received; compared case-insensitively */
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* A request as the rules see it. Strings are not NUL-terminated; they are
 * owned by the protocol handler and live for the duration of the decision. */
struct fl_request {
    enum fl_proto proto;
    enum fl_method method;
    const char *method_str; /* as received, for the log */
    size_t method_len;
    const char *path; /* request target without the query string for matching */
    size_t path_len;  /* length up to (not including) '?' */
    size_t target_len; /* full request-target length, with the query */
    const char *authority; /* Host or :authority; may be NULL */
    size_t authority_len;
    const struct fl_hdr *headers;
    size_t n_headers;
    /* gRPC only: from :path "/pkg.Service/Method" */
    const char *grpc_service;
    size_t grpc_service_len;
    const char *grpc_method;
    size_t grpc_method_len;
};

/* Returns 1 if m fits req, 0 if not. Never allocates. */
int fl_match_request(const struct fl_match *m, const struct fl_request *req);

/* Returns 1 if s fits sm (for FL_SM_PRESENT/ABSENT, s == NULL means absent). */
int fl_match_str(const struct fl_str_match *sm, const char *s, size_t len);

/* Splits a gRPC :path "/pkg.Service/Method" into req's grpc_* fields.
 * Returns 0, or -EINVAL when the path is not of that form. */
int fl_match_set_grpc_path(struct fl_request *req) FL_WUR;

#endif
