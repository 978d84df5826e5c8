/* match: every kind of condition, on request views whose strings are not
 * NUL-terminated (as the protocol handlers hand them over). */
#include <errno.h>
#include <string.h>

#include "helpers.h"
#include "match.h"
#include "unit.h"

/* Loads a policy whose only rule has the given match block (YAML flow map). */
static struct fl_policy *load_match(const char *match)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             UNIT_POLICY_HEAD "  rules:\n    - name: r\n      match: %s\n      fault: {reset: {}}\n",
             match);
    return unit_load(yaml);
}

/* A request over HTTP/1.1 whose target is the first path_len bytes of buf
 * (the rest, e.g. a query, must not take part in path matching). */
static struct fl_request req_http(const char *method, const char *buf, size_t path_len)
{
    struct fl_request r = {0};
    r.proto = FL_PROTO_HTTP1;
    r.method = fl_values_parse_method(method, strlen(method));
    r.method_str = method;
    r.method_len = strlen(method);
    r.path = buf;
    r.path_len = path_len;
    r.target_len = strlen(buf);
    return r;
}

#define REQ(method, target) req_http(method, target, strcspn(target, "?"))

static int fits(const char *match, const struct fl_request *rq)
{
    struct fl_policy *p = load_match(match);
    int r = fl_match_request(&p->rules[0].match, rq);
    fl_policy_unref(p);
    return r;
}

TEST(match_empty_matches_everything)
{
    struct fl_request rq = REQ("PROPFIND", "/x?y");
    ASSERT_EQ(fits("{}", &rq), 1);
    rq.proto = FL_PROTO_TCP;
    rq.path = NULL;
    rq.path_len = 0;
    ASSERT_EQ(fits("{}", &rq), 1);
}

TEST(match_method)
{
    struct fl_request get = REQ("GET", "/"), post = REQ("POST", "/"), other = REQ("BREW", "/");
    ASSERT_EQ(fits("{method: GET}", &get), 1);
    ASSERT_EQ(fits("{method: GET}", &post), 0);
    ASSERT_EQ(fits("{method: [POST, GET]}", &get), 1);
    ASSERT_EQ(fits("{method: [POST, GET]}", &post), 1);
    ASSERT_EQ(fits("{method: [PUT]}", &post), 0);
    ASSERT_EQ(fits("{method: [GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH]}",
                   &other),
              0);
    ASSERT_EQ(fits("{}", &other), 1);
}

TEST(match_path_exact_ignores_query)
{
    struct fl_request a = REQ("GET", "/orders?id=1"), b = REQ("GET", "/orders/1"),
                      c = REQ("GET", "/order");
    ASSERT_EQ(fits("{path: {exact: /orders}}", &a), 1);
    ASSERT_EQ(fits("{path: {exact: /orders}}", &b), 0);
    ASSERT_EQ(fits("{path: {exact: /orders}}", &c), 0);
    ASSERT_EQ(fits("{path: {exact: \"/orders?id=1\"}}", &a), 0);
}

TEST(match_path_prefix)
{
    struct fl_request a = REQ("GET", "/orders/1"), b = REQ("GET", "/ord?ers"),
                      c = REQ("GET", "/Orders");
    ASSERT_EQ(fits("{path: {prefix: /orders}}", &a), 1);
    ASSERT_EQ(fits("{path: {prefix: /orders}}", &b), 0); /* the query does not count */
    ASSERT_EQ(fits("{path: {prefix: /orders}}", &c), 0); /* paths are case-sensitive */
    ASSERT_EQ(fits("{path: {prefix: /}}", &c), 1);
}

TEST(match_path_regex_on_unterminated_slice)
{
    /* The path is "/orders/42"; the bytes after it must be invisible to the regex. */
    struct fl_request a = REQ("GET", "/orders/42?x=99"), b = REQ("GET", "/orders/42x");
    ASSERT_EQ(fits("{path: {regex: \"^/orders/[0-9]+$\"}}", &a), 1);
    ASSERT_EQ(fits("{path: {regex: \"^/orders/[0-9]+$\"}}", &b), 0);
    ASSERT_EQ(fits("{path: {regex: \"99\"}}", &a), 0);
    ASSERT_EQ(fits("{path: {regex: \"rs/4\"}}", &a), 1); /* unanchored */
    ASSERT_EQ(fits("{path: {regex: \"^/(orders|carts)/\"}}", &b), 1);

    /* A buffer with no NUL at all after the path. */
    char raw[10];
    memcpy(raw, "/orders/42", 10);
    struct fl_request c = req_http("GET", "", 0);
    c.path = raw;
    c.path_len = 10;
    ASSERT_EQ(fits("{path: {regex: \"^/orders/42$\"}}", &c), 1);
    c.path_len = 9;
    ASSERT_EQ(fits("{path: {regex: \"^/orders/42$\"}}", &c), 0);
    ASSERT_EQ(fits("{path: {regex: \"^/orders/4$\"}}", &c), 1);
}

TEST(match_str_match_direct)
{
    struct fl_str_match sm = {.kind = FL_SM_ANY};
    ASSERT_EQ(fl_match_str(&sm, NULL, 0), 1);
    sm.kind = FL_SM_PRESENT;
    ASSERT_EQ(fl_match_str(&sm, "", 0), 1);
    ASSERT_EQ(fl_match_str(&sm, NULL, 0), 0);
    sm.kind = FL_SM_ABSENT;
    ASSERT_EQ(fl_match_str(&sm, NULL, 0), 1);
    ASSERT_EQ(fl_match_str(&sm, "x", 1), 0);
    sm = (struct fl_str_match){.kind = FL_SM_EXACT, .value = "abc", .len = 3};
    ASSERT_EQ(fl_match_str(&sm, "abcd", 3), 1);
    ASSERT_EQ(fl_match_str(&sm, "abcd", 4), 0);
    ASSERT_EQ(fl_match_str(&sm, "ab", 2), 0);
    ASSERT_EQ(fl_match_str(&sm, NULL, 0), 0);
    sm.kind = FL_SM_PREFIX;
    ASSERT_EQ(fl_match_str(&sm, "abcd", 4), 1);
    ASSERT_EQ(fl_match_str(&sm, "abcd", 2), 0);
    sm = (struct fl_str_match){.kind = FL_SM_PREFIX, .value = "", .len = 0};
    ASSERT_EQ(fl_match_str(&sm, "", 0), 1);
}

static struct fl_request with_headers(const struct fl_hdr *h, size_t n)
{
    struct fl_request r = REQ("GET", "/");
    r.headers = h;
    r.n_headers = n;
    return r;
}

#define HDR(n, v) {n, sizeof(n) - 1, v, sizeof(v) - 1}

TEST(match_header_exact_case_insensitive_name)
{
    const struct fl_hdr h[] = {HDR("Host", "a"), HDR("X-CHAOS", "on"), HDR("x-other", "1")};
    struct fl_request rq = with_headers(h, 3);
    ASSERT_EQ(fits("{headers: [{name: x-chaos, exact: \"on\"}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: X-Chaos, exact: \"on\"}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: x-chaos, exact: \"ON\"}]}", &rq), 0); /* values exact */
    ASSERT_EQ(fits("{headers: [{name: x-chaos, exact: \"o\"}]}", &rq), 0);
    ASSERT_EQ(fits("{headers: [{name: x-chao, exact: \"on\"}]}", &rq), 0);
    /* Every listed header condition must hold. */
    ASSERT_EQ(fits("{headers: [{name: x-chaos, exact: \"on\"}, {name: x-other, exact: \"1\"}]}", &rq),
              1);
    ASSERT_EQ(fits("{headers: [{name: x-chaos, exact: \"on\"}, {name: x-other, exact: \"2\"}]}", &rq),
              0);
}

TEST(match_header_prefix_regex)
{
    const struct fl_hdr h[] = {HDR("user-agent", "curl/8.1.2"), HDR("x-tenant", "acme-42")};
    struct fl_request rq = with_headers(h, 2);
    ASSERT_EQ(fits("{headers: [{name: user-agent, prefix: curl/}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: user-agent, prefix: wget/}]}", &rq), 0);
    ASSERT_EQ(fits("{headers: [{name: x-tenant, regex: \"^acme-[0-9]+$\"}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: x-tenant, regex: \"^acme-[0-9]$\"}]}", &rq), 0);
    /* The regex sees the value slice only, not the bytes after it. */
    const struct fl_hdr h2[] = {{"x-tenant", 8, "acme-42trailing", 7}};
    rq = with_headers(h2, 1);
    ASSERT_EQ(fits("{headers: [{name: x-tenant, regex: \"^acme-42$\"}]}", &rq), 1);
}

TEST(match_header_present_absent)
{
    const struct fl_hdr h[] = {HDR("x-debug", ""), HDR("accept", "*/*")};
    struct fl_request rq = with_headers(h, 2), none = with_headers(NULL, 0);
    ASSERT_EQ(fits("{headers: [{name: X-Debug, present: true}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: x-debug, present: true}]}", &none), 0);
    ASSERT_EQ(fits("{headers: [{name: x-debug, absent: true}]}", &rq), 0);
    ASSERT_EQ(fits("{headers: [{name: x-debug, absent: true}]}", &none), 1);
    ASSERT_EQ(fits("{headers: [{name: x-trace, absent: true}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: x-debug, exact: \"\"}]}", &rq), 1);
}

TEST(match_header_repeated)
{
    /* Any one of several same-named headers may satisfy the condition; absent
     * means no header of that name at all. */
    const struct fl_hdr h[] = {HDR("x-v", "one"), HDR("X-V", "two"), HDR("x-v", "three")};
    struct fl_request rq = with_headers(h, 3);
    ASSERT_EQ(fits("{headers: [{name: x-v, exact: two}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: x-v, exact: three}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: x-v, exact: four}]}", &rq), 0);
    ASSERT_EQ(fits("{headers: [{name: x-v, regex: \"^t\"}]}", &rq), 1);
    ASSERT_EQ(fits("{headers: [{name: x-v, absent: true}]}", &rq), 0);
    ASSERT_EQ(fits("{headers: [{name: x-v, present: true}]}", &rq), 1);
}

TEST(match_combined_all_must_hold)
{
    const struct fl_hdr h[] = {HDR("x-chaos", "on")};
    struct fl_request rq = REQ("POST", "/orders/1");
    rq.headers = h;
    rq.n_headers = 1;
    const char *m = "{method: POST, path: {prefix: /orders}, headers: [{name: x-chaos, present: true}]}";
    ASSERT_EQ(fits(m, &rq), 1);
    rq.n_headers = 0;
    ASSERT_EQ(fits(m, &rq), 0);
    rq.n_headers = 1;
    rq.method = FL_M_GET;
    ASSERT_EQ(fits(m, &rq), 0);
}

static struct fl_request req_grpc(const char *path)
{
    struct fl_request r = req_http("POST", path, strlen(path));
    r.proto = FL_PROTO_GRPC;
    ASSERT_EQ(fl_match_set_grpc_path(&r), 0);
    return r;
}

TEST(match_grpc)
{
    struct fl_request a = req_grpc("/helloworld.Greeter/SayHello"),
                      b = req_grpc("/helloworld.Greeter/SayGoodbye"),
                      c = req_grpc("/other.Svc/SayHello");
    const char *both = "{grpc: {service: helloworld.Greeter, method: SayHello}}";
    ASSERT_EQ(fits(both, &a), 1);
    ASSERT_EQ(fits(both, &b), 0);
    ASSERT_EQ(fits(both, &c), 0);
    ASSERT_EQ(fits("{grpc: {service: helloworld.Greeter}}", &b), 1);
    ASSERT_EQ(fits("{grpc: {service: helloworld.Greete}}", &b), 0);
    ASSERT_EQ(fits("{grpc: {method: SayHello}}", &c), 1);
    ASSERT_EQ(fits("{grpc: {method: SayHello}}", &b), 0);
    ASSERT_EQ(fits("{grpc: {}}", &c), 1);
    /* A grpc: block never matches plain HTTP, even with the same path. */
    struct fl_request h1 = REQ("POST", "/helloworld.Greeter/SayHello");
    ASSERT_EQ(fits("{grpc: {}}", &h1), 0);
    h1.proto = FL_PROTO_H2;
    ASSERT_EQ(fits(both, &h1), 0);
    /* gRPC requests are still requests: path rules apply to them too. */
    ASSERT_EQ(fits("{path: {prefix: /helloworld.}}", &a), 1);
}

TEST(match_set_grpc_path)
{
    char buf[] = "/pkg.Svc/Do?junk";
    struct fl_request r = req_http("POST", buf, 11);
    ASSERT_EQ(fl_match_set_grpc_path(&r), 0);
    ASSERT_UEQ(r.grpc_service_len, 7);
    ASSERT(memcmp(r.grpc_service, "pkg.Svc", 7) == 0);
    ASSERT_UEQ(r.grpc_method_len, 2);
    ASSERT(memcmp(r.grpc_method, "Do", 2) == 0);

    static const char *const bad[] = {"", "/", "//", "/a/", "//b", "/ab", "a/b", "/a/b/c", "/a//b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct fl_request q = req_http("POST", bad[i], strlen(bad[i]));
        if (fl_match_set_grpc_path(&q) != -EINVAL)
            UNIT_FAIL("\"%s\" accepted as a gRPC path", bad[i]);
        ASSERT_NULL(q.grpc_service);
    }
}

TEST(match_proto_names)
{
    ASSERT_STR_EQ(fl_match_proto_name(FL_PROTO_HTTP1), "http/1.1");
    ASSERT_STR_EQ(fl_match_proto_name(FL_PROTO_H2), "h2");
    ASSERT_STR_EQ(fl_match_proto_name(FL_PROTO_GRPC), "grpc");
    ASSERT_STR_EQ(fl_match_proto_name(FL_PROTO_TCP), "tcp");
}
