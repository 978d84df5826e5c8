/* policy: the fault policy as an immutable, reference-counted snapshot.
 *
 * A policy is parsed from YAML (libyaml) by fl_policy_load(); every error names
 * file:line:col. Once published to the workers a snapshot is never modified,
 * except for the fields of struct fl_rule_live, which are atomics changed by the
 * admin API (enable/disable/percent) and read per request.
 */
#ifndef FL_POLICY_H
#define FL_POLICY_H

#include "compiler.h"
#include "selector.h"
#include "values.h"

#include <regex.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>


#define FL_DEFAULT_TTL_MS (30ull * 60 * 1000)
#define FL_DEFAULT_MAX_ACTIVE_FAULTS 10000u
#define FL_DEFAULT_PROXY_PORT 15001


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

/* The fault kinds a rule can have; also the index of the per-kind percents
 * and counters in struct fl_rule_live. */
enum fl_fault_kind {
    FL_FAULT_DELAY,
    FL_FAULT_ABORT,
    FL_FAULT_RESET,
    FL_FAULT_RESPONSE_DELAY, /* response side, per request */
    FL_FAULT_MODIFY,
    FL_FAULT_TRUNCATE,
    FL_FAULT_BANDWIDTH,
    FL_FAULT_CONNECTION, /* per connection: the toxics of struct fl_connection_fault */
};
#define FL_FAULT_KINDS 8

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

/* Which bytes a fault acts on: FL_DIR_DOWN toward the client ("downstream",
 * the default: responses), FL_DIR_UP toward the upstream (requests). */
#define FL_DIR_DOWN 1u
#define FL_DIR_UP 2u

/* Response side, per request. */
struct fl_modify {
    int enabled;
    int status;          /* HTTP status 200-599 to answer with; 0: the upstream's */
    int grpc_status;     /* 0-16 for grpc-status; -1: the upstream's */
    char *message;       /* grpc-message; NULL: the upstream's (with grpc_status: none) */
    struct fl_kv *set;   /* response headers set (replacing any of that name) */
    size_t n_set;
    char **remove;       /* response header names removed (lower case) */
    size_t n_remove;
    char *body;          /* the body replacing the upstream's; NULL: the upstream's */
    size_t body_len;
    uint32_t ppm;
};

struct fl_truncate {
    int enabled;
    uint64_t after; /* body bytes the client gets before the reset */
    uint32_t ppm;
};

struct fl_bandwidth {
    int enabled;
    uint64_t rate; /* bytes per second */
    unsigned dir;  /* FL_DIR_UP: the request body; FL_DIR_DOWN: the response body */
    uint32_t ppm;
};

/* Which bytes a toxic acts on: bit FL_CLIENT (0): toward the client
 * ("downstream", the default), bit FL_UPSTREAM (1): toward the upstream. */

/* Connection faults (Toxiproxy's toxics), per connection: the dice roll once,
 * when the connection is accepted (a rule without match) or at its first
 * request the rule decides (a rule with match). */
struct fl_connection_fault {
    int enabled;
    uint32_t ppm;
    struct {
        int enabled;
        uint64_t fixed_ms, jitter_ms; /* per chunk: fixed + uniform [0, jitter] */
        unsigned dir;
    } latency;
    struct {
        int enabled;
        uint64_t rate; /* bytes per second */
        unsigned dir;
    } bandwidth;
    struct {
        int enabled;
        uint64_t average, variation; /* slice size: average +- variation bytes */
        uint64_t delay_us;           /* between slices */
        unsigned dir;
    } slicer;
    struct {
        int enabled;
        uint64_t bytes; /* the connection closes once this many have gone through */
        unsigned dir;
    } limit_data;
    struct {
        int enabled;
        uint64_t after_ms; /* 0: hold the bytes until the fault ends; else close then */
        unsigned dir;
    } timeout;
    struct {
        int enabled;
        uint64_t delay_ms; /* a FIN toward dir waits this long */
        unsigned dir;
    } slow_close;
    struct {
        int enabled;
        uint64_t after_ms; /* RST toward dir this long after the fault began */
        unsigned dir;
    } reset_peer;
};

/* What the admin API may change on a published snapshot. ppm values of
 * UINT32_MAX mean "as in the policy file". */
struct fl_rule_live {
    atomic_int enabled;
    atomic_uint ppm[FL_FAULT_KINDS]; /* by enum fl_fault_kind */
    atomic_ullong delay_fixed_ms; /* UINT64_MAX: as in the file */
    atomic_int abort_status;      /* 0: as in the file */
    atomic_ullong matched;   /* requests this rule decided */
    atomic_ullong injected[FL_FAULT_KINDS]; /* by enum fl_fault_kind */
};

struct fl_rule {
    char *name;
    char **on; /* listener/target names; NULL with n_on == 0 means all */
    size_t n_on;
    int from_headers; /* x-faultline-* request headers may ask for faults (fault.h) */
    struct fl_match match;
    struct fl_delay delay;
    struct fl_abort abort;
    struct fl_reset reset;
    struct fl_delay response_delay; /* holds the upstream's response head */
    struct fl_modify modify;
    struct fl_truncate truncate;
    struct fl_bandwidth bandwidth;
    struct fl_connection_fault connection;
    /* connection without match: decided when a connection is accepted; and
     * nothing else, so requests never see the rule (it cannot shadow the
     * rules after it). */
    int conn_at_accept;
    int conn_only;
    struct fl_rule_live live;
    int line, col; /* where the rule starts, for messages */
    /* The loaded policy the rule belongs to (not a reference: the policy, or
     * a composed set holding it, outlives the rule), and its names. */
    const struct fl_policy *part;
    const char *policy;    /* its metadata.name: the fault log's "policy" */
    const char *policy_id; /* "namespace/name" for a resource, else the name */
    /* Monotonic ms at which the rule's policy expires, in a composed set;
     * 0: the global deadline (fl_fault_global) governs. */
    uint64_t deadline_ms;
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
    /* pods: cgroup paths (host), or a label selector (Kubernetes) */
    char **cgroups; /* absolute cgroup v2 paths or glob patterns */
    size_t n_cgroups;
    struct fl_selector *selector; /* pods.selector, or NULL */
    /* destination: a CIDR (or ip), or a Service */
    struct fl_cidr dst; /* ip: is a /32 or /128; family 0 with a service */
    char *svc_ns;       /* destination.service: its namespace and name, or NULL */
    char *svc_name;
    int svc_line, svc_col;
    uint16_t port; /* egress: destination.port (0 = any; with a service: the Service
                    * port); ingress: the port the pods serve on */
    int ingress;        /* direction: ingress (else egress) */
    struct fl_cidr from; /* ingress: callers from here only; family 0 = any caller */
    int existing_reset; /* existing: reset (else keep) */
    int line, col;
    const struct fl_policy *part; /* the loaded policy it belongs to (as for rules) */
};

struct fl_rule_index;

struct fl_policy {
    atomic_int refs;
    struct fl_rule_index *index; /* built by fl_rule_index_build (rule_index.h) */
    char *file; /* path it was loaded from, or "<admin>" */
    char *name; /* metadata.name */
    /* A FaultPolicy resource: its namespace (NULL for a file policy), its
     * metadata.generation and creationTimestamp (as given, or NULL). */
    char *ns;
    uint64_t generation;
    char *created;
    char *id; /* "namespace/name" for a resource, else the name */
    /* A composed set (fl_policy_compose): the policies it was made of, each
     * with a reference. Its rules, targets and listeners are shallow copies
     * of theirs; NULL/0 for a loaded policy. */
    struct fl_policy **parts;
    size_t n_parts;
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

/* A FaultPolicy resource as the API server returns it (JSON, which is YAML),
 * with metadata.namespace: listeners are refused, label selectors pick pods
 * in that namespace (naming another is an error), a bare Service is in it.
 * Messages are "name: path.in.spec: text" (no line:col: the API's JSON has
 * no lines worth naming). A file with metadata.namespace is loaded by
 * fl_policy_load() with the same rules, and line:col. */
int fl_policy_load_resource(const char *name, const char *json, size_t len,
                            struct fl_policy **out, struct fl_policy_errors *errs) FL_WUR;

void fl_policy_errors_free(struct fl_policy_errors *errs);

struct fl_policy *fl_policy_ref(struct fl_policy *p);
/* Drops a reference; frees the snapshot with the last one. Accepts NULL. */
void fl_policy_unref(struct fl_policy *p);

/* The HTTP status an abort answers with: the live override, else the file's,
 * else 503 (a gRPC-only abort seen on plain HTTP). */
int fl_policy_rule_abort_status(const struct fl_rule *r);

/* Does r have a fault of kind k? */
int fl_policy_rule_has_kind(const struct fl_rule *r, enum fl_fault_kind k);
/* Kind k's percent (ppm) as in the file. */
uint32_t fl_policy_rule_file_ppm(const struct fl_rule *r, enum fl_fault_kind k);
/* Kind k's live override (UINT32_MAX: none), for the admin API to set. */
atomic_uint *fl_policy_rule_live_ppm(struct fl_rule *r, enum fl_fault_kind k);
/* Kind k's percent (ppm) in force: the live override, else the file's. */
uint32_t fl_policy_rule_ppm(const struct fl_rule *r, enum fl_fault_kind k);

/* Returns the rule named name, or NULL. In a composed set name is RULE,
 * POLICY/RULE or NAMESPACE/POLICY/RULE (POLICY is a policy's name or id);
 * a bare RULE that more than one policy has, or a POLICY name two
 * namespaces share, is ambiguous: NULL with *ambiguous set (ambiguous may
 * be NULL). */
struct fl_rule *fl_policy_find_rule(const struct fl_policy *p, const char *name);
struct fl_rule *fl_policy_find_rule2(const struct fl_policy *p, const char *name, int *ambiguous);

/* "POLICY/RULE" of r when p holds more than one policy, else its name:
 * how faultctl, /v1/rules and events name it. Writes into buf. */
const char *fl_policy_rule_label(const struct fl_policy *p, const struct fl_rule *r, char *buf,
                                 size_t len);

/* Composes one snapshot from n loaded policies, oldest first (an earlier
 * policy's targets win where two select the same traffic). Each rule acts
 * only on its own policy's listeners and targets: the others' targets are
 * renamed "ID/target" (ID: namespace/name) and the rules' `on` lists say
 * so explicitly. deadlines[i] (monotonic ms, 0 = none) is when parts[i]
 * expires; it becomes its rules' deadline_ms. With has_file, parts[0] is
 * the file's policy: it keeps its names and gives seed, proxy_port and
 * max_active_faults (otherwise the defaults and the smallest limit).
 * Listeners come from every part that has them (the file's and the
 * Toxiproxy API's; a resource has none); their names must not clash. A file policy alone is returned as it is (a new
 * reference). Returns 0 or -ENOMEM. */
int fl_policy_compose(struct fl_policy *const *parts, const uint64_t *deadlines, size_t n,
                      int has_file, struct fl_policy **out) FL_WUR;

/* A policy with nothing in it, named name: what a Kubernetes daemon without
 * -f runs until FaultPolicies arrive. */
struct fl_policy *fl_policy_empty(const char *name);

/* 1 when a target selects pods by labels or names a Service: the daemon
 * needs --kubernetes. */
int fl_policy_needs_kubernetes(const struct fl_policy *p);

/* 1 when two targets select the same pods and destination (their names aside). */
int fl_policy_target_equal(const struct fl_target_spec *a, const struct fl_target_spec *b);

/* Does rule r apply to traffic arriving through the listener/target named scope? */
int fl_policy_rule_applies_to(const struct fl_rule *r, const char *scope);


#endif
