/* policy: the fault policy as an immutable, reference-counted snapshot.
 *
 * A policy is parsed from YAML (libyaml) by fl_policy_load(); every error names
 * file:line:col. Once published to the workers a snapshot is never modified,
 * except for the fields of struct fl_rule_live, which are atomics changed by the
 * admin API (enable/disable/percent) and read per request.
 */
#ifndef FL_POLICY_H
#define FL_POLICY_H

#include <regex.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define FL_WUR __attribute__((warn_unused_result))

#define FL_PPM_MAX 1000000u /* percent 100 == 1,000,000 parts per million */
#define FL_DEFAULT_TTL_MS (30ull * 60 * 1000)
#define FL_DEFAULT_MAX_ACTIVE_FAULTS 10000u
#define FL_DEFAULT_PROXY_PORT 15001

/* HTTP methods a rule can name; bit i of fl_match.methods is method i. */
enum fl_method {
    FL_M_GET,
    FL_M_HEAD,
    FL_M_POST,
    FL_M_PUT,
    FL_M_DELETE,
    FL_M_CONNECT,
    FL_M_OPTIONS,
    FL_M_TRACE,
    FL_M_PATCH,
    FL_M_OTHER, /* any method not listed above; never named by a policy */
    FL_M__COUNT
};

/* Returns the enum for a method name (case-sensitive, as on the wire), or FL_M_OTHER. */
enum fl_method fl_method_from_str(const char *s, size_t len);
const char *fl_method_name(enum fl_method m);

enum fl_str_match_kind {
    FL_SM_ANY = 0, /* no condition */
    FL_SM_EXACT,
    FL_SM_PREFIX,
    FL_SM_REGEX, /* POSIX extended regex, unanchored unless the pattern anchors */
    FL_SM_PRESENT, /* headers only */
    FL_SM_ABSENT,  /* headers only */
};

struct fl_str_match {
    enum fl_str_match_kind kind;
    char *value; /* NUL-terminated; NULL for ANY/PRESENT/ABSENT */
    size_t len;
    regex_t re; /* compiled when kind == FL_SM_REGEX */
};

struct fl_header_match {
    char *name; /* lower-cased at load time */
    size_t name_len;
    struct fl_str_match m;
};

struct fl_match {
    uint32_t methods; /* bitmask over enum fl_method; 0 = any method */
    struct fl_str_match path;
    struct fl_header_match *headers;
    size_t n_headers;
    int has_grpc;       /* a grpc: block was given: only gRPC requests match */
    char *grpc_service; /* NULL = any service */
    char *grpc_method;  /* NULL = any method */
};

struct fl_kv {
    char *name;
    char *value;
};

struct fl_delay {
    int enabled;
    uint64_t fixed_ms;
    uint64_t jitter_ms; /* uniform in [0, jitter_ms] added to fixed_ms */
    uint32_t ppm;
};

struct fl_abort {
    int enabled;
    int status;      /* HTTP status 200-599; 0 when only grpc_status was given */
    int grpc_status; /* 0-16, or -1 when not given */
    char *body;      /* may be NULL */
    size_t body_len;
    struct fl_kv *headers;
    size_t n_headers;
    char *message; /* grpc-message; may be NULL */
    uint32_t ppm;
};

struct fl_reset {
    int enabled;
    uint32_t ppm;
};

/* What the admin API may change on a published snapshot. ppm values of
 * UINT32_MAX mean "as in the policy file". */
struct fl_rule_live {
    atomic_int enabled;
    atomic_uint delay_ppm;
    atomic_uint abort_ppm;
    atomic_uint reset_ppm;
    atomic_ullong delay_fixed_ms; /* UINT64_MAX: as in the file */
    atomic_int abort_status;      /* 0: as in the file */
    atomic_ullong matched;   /* requests this rule decided */
    atomic_ullong injected[3]; /* by enum fl_fault_kind */
};

struct fl_rule {
    char *name;
    char **on; /* listener/target names; NULL with n_on == 0 means all */
    size_t n_on;
    struct fl_match match;
    struct fl_delay delay;
    struct fl_abort abort;
    struct fl_reset reset;
    struct fl_rule_live live;
    int line, col; /* where the rule starts, for messages */
};

struct fl_listener_spec {
    char *name;
    char *listen;   /* as written, e.g. "127.0.0.1:15000", "[::1]:15000", "localhost:15000" */
    char *upstream; /* as written, e.g. "127.0.0.1:8080" */
    /* Resolved at load time. "localhost:P" listens on both 127.0.0.1 and ::1;
     * "*:P" or ":P" listens dual-stack on [::]. */
    struct sockaddr_storage listen_addrs[2];
    int n_listen_addrs;
    struct sockaddr_storage upstream_addr;
    int line, col;
};

struct fl_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network byte order; IPv4 in the first 4 bytes */
    int prefix;
};

struct fl_target_spec {
    char *name;
    char **cgroups; /* absolute cgroup v2 paths or glob patterns */
    size_t n_cgroups;
    struct fl_cidr dst; /* ip: is a /32 or /128 */
    uint16_t port;      /* 0 = any port */
    int line, col;
};

struct fl_rule_index;

struct fl_policy {
    atomic_int refs;
    struct fl_rule_index *index; /* built by fl_rule_index_build; see fault.c */
    char *file; /* path it was loaded from, or "<admin>" */
    char *name; /* metadata.name */
    int has_seed;
    uint64_t seed;
    uint64_t ttl_ms;
    uint32_t max_active_faults;
    uint16_t proxy_port; /* transparent mode listener port (spec.proxy_port) */
    struct fl_listener_spec *listeners;
    size_t n_listeners;
    struct fl_target_spec *targets;
    size_t n_targets;
    struct fl_rule *rules;
    size_t n_rules;
};

/* Errors collected while loading; each message is "file:line:col: text". */
struct fl_policy_errors {
    char **msgs;
    size_t n;
};

/* Parses the YAML at path. On success returns 0 and *out holds a policy with one
 * reference. On failure returns a negative errno (-EINVAL for policy errors,
 * others for I/O) and errs lists every error found (caller frees with
 * fl_policy_errors_free). Blocking: call off the event loop. */
int fl_policy_load(const char *path, struct fl_policy **out, struct fl_policy_errors *errs) FL_WUR;

/* Same, from a buffer; name is used as the file name in messages. */
int fl_policy_load_buf(const char *name, const char *buf, size_t len, struct fl_policy **out,
                       struct fl_policy_errors *errs) FL_WUR;

void fl_policy_errors_free(struct fl_policy_errors *errs);

struct fl_policy *fl_policy_ref(struct fl_policy *p);
/* Drops a reference; frees the snapshot with the last one. Accepts NULL. */
void fl_policy_unref(struct fl_policy *p);

/* Builds p->index, which lets a decision look only at the rules that can fit a
 * request's method and first path segment. Returns 0 or -ENOMEM. */
int fl_rule_index_build(struct fl_policy *p) FL_WUR;
void fl_rule_index_free(struct fl_rule_index *ix);

/* The HTTP status an abort answers with: the live override, else the file's,
 * else 503 (a gRPC-only abort seen on plain HTTP). */
int fl_rule_abort_status(const struct fl_rule *r);

/* Returns the rule named name, or NULL. */
struct fl_rule *fl_policy_find_rule(const struct fl_policy *p, const char *name);

/* Does rule r apply to traffic arriving through the listener/target named scope? */
int fl_rule_applies_to(const struct fl_rule *r, const char *scope);

/* Parses "250ms", "2s", "5m", "1h" into milliseconds. Returns 0 or -EINVAL. */
int fl_parse_duration(const char *s, uint64_t *ms) FL_WUR;

/* Parses a percent "12.5" (0-100, at most 4 decimals) into ppm. Returns 0 or -EINVAL. */
int fl_parse_percent(const char *s, uint32_t *ppm) FL_WUR;

/* Parses a gRPC status name ("UNAVAILABLE") or number ("14"). Returns 0-16 or -EINVAL. */
int fl_grpc_status_from_str(const char *s);
const char *fl_grpc_status_name(int code);

/* Parses "host:port" / "[v6]:port" into addrs (up to 2, see fl_listener_spec).
 * for_listen allows "*:P" and ":P". Returns the count (>0) or -EINVAL. */
int fl_parse_hostport(const char *s, int for_listen, struct sockaddr_storage addrs[2]);

#endif
