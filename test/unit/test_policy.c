/* policy: the loader against fixtures (data, so a new case needs no code), the
 * shipped policies/, and the small parsers it is built from. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "policy.h"
#include "unit.h"

#define GOOD_DIR "test/unit/fixtures/policy/good"
#define BAD_DIR "test/unit/fixtures/policy/bad"
#define SHIPPED_DIR "policies"

static int is_yaml(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".yaml") == 0;
}

/* Lists dir's *.yaml files, sorted; returns the count. Fails the case if the
 * directory cannot be read or holds fewer than min files, so a moved fixture
 * directory cannot make the test pass vacuously. */
static size_t list_yaml(const char *dir, char ***out, size_t min)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    if (n < 0)
        UNIT_FAIL("cannot read %s: %s (run from the repository root)", dir, strerror(errno));
    char **names = calloc((size_t)n + 1, sizeof(*names));
    size_t k = 0;
    ASSERT_NOT_NULL(names);
    for (int i = 0; i < n; i++) {
        if (is_yaml(ents[i]->d_name)) {
            size_t len = strlen(dir) + strlen(ents[i]->d_name) + 2;
            names[k] = malloc(len);
            ASSERT_NOT_NULL(names[k]);
            snprintf(names[k], len, "%s/%s", dir, ents[i]->d_name);
            k++;
        }
        free(ents[i]);
    }
    free(ents);
    if (k < min)
        UNIT_FAIL("%s holds %zu policies, expected at least %zu", dir, k, min);
    *out = names;
    return k;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Every file in dir loads without a single error. */
static void load_all_good(const char *dir, size_t min)
{
    char **files;
    size_t n = list_yaml(dir, &files, min);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct fl_policy *p = NULL;
        struct fl_policy_errors errs = {0};
        int rc = fl_policy_load(files[i], &p, &errs);
        if (rc != 0 || errs.n != 0) {
            bad++;
            fprintf(stderr, "# %s: rc %d\n", files[i], rc);
            for (size_t e = 0; e < errs.n; e++)
                fprintf(stderr, "#   %s\n", errs.msgs[e]);
        } else if (!p || !p->name || (p->n_listeners == 0 && p->n_targets == 0)) {
            bad++;
            fprintf(stderr, "# %s: loaded without name, listeners or targets\n", files[i]);
        }
        fl_policy_unref(p);
        fl_policy_errors_free(&errs);
    }
    free_list(files, n);
    ASSERT_EQ(bad, 0);
}

TEST(policy_good_fixtures_load)
{
    load_all_good(GOOD_DIR, 5);
}

TEST(policy_shipped_policies_load)
{
    load_all_good(SHIPPED_DIR, 10);
}

struct expect {
    int line, col;
    char text[256];
};

/* Reads the "# expect: LINE:COL substring" lines at the top of a bad fixture. */
static size_t read_expects(const char *file, struct expect *ex, size_t max)
{
    FILE *f = fopen(file, "r");
    char line[512];
    size_t n = 0;
    if (!f)
        UNIT_FAIL("cannot open %s: %s", file, strerror(errno));
    while (fgets(line, sizeof(line), f) && strncmp(line, "# expect:", 9) == 0 && n < max) {
        int used = 0;
        if (sscanf(line + 9, " %d:%d %n", &ex[n].line, &ex[n].col, &used) != 2 || !used)
            UNIT_FAIL("%s: malformed expect line: %s", file, line);
        snprintf(ex[n].text, sizeof(ex[n].text), "%s", line + 9 + used);
        ex[n].text[strcspn(ex[n].text, "\n")] = 0;
        n++;
    }
    fclose(f);
    if (n == 0)
        UNIT_FAIL("%s: starts with no '# expect: LINE:COL text' line", file);
    return n;
}

/* Each bad fixture fails with -EINVAL, and for each of its expect lines some
 * error is "file:LINE:COL: ...substring...". */
TEST(policy_bad_fixtures_fail_where_expected)
{
    char **files;
    size_t n = list_yaml(BAD_DIR, &files, 15);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct expect ex[16];
        size_t nex = read_expects(files[i], ex, 16);
        struct fl_policy *p = NULL;
        struct fl_policy_errors errs = {0};
        int rc = fl_policy_load(files[i], &p, &errs);
        int ok = rc == -EINVAL && p == NULL && errs.n >= nex;
        for (size_t k = 0; k < nex && ok; k++) {
            char prefix[600];
            int found = 0;
            snprintf(prefix, sizeof(prefix), "%s:%d:%d: ", files[i], ex[k].line, ex[k].col);
            for (size_t e = 0; e < errs.n && !found; e++)
                found = strncmp(errs.msgs[e], prefix, strlen(prefix)) == 0 &&
                        strstr(errs.msgs[e] + strlen(prefix), ex[k].text);
            if (!found) {
                fprintf(stderr, "# %s: no error %s...%s\n", files[i], prefix, ex[k].text);
                ok = 0;
            }
        }
        if (!ok) {
            bad++;
            fprintf(stderr, "# %s: rc %d, %zu errors:\n", files[i], rc, errs.n);
            for (size_t e = 0; e < errs.n; e++)
                fprintf(stderr, "#   %s\n", errs.msgs[e]);
        }
        fl_policy_unref(p);
        fl_policy_errors_free(&errs);
    }
    free_list(files, n);
    ASSERT_EQ(bad, 0);
}

TEST(policy_unreadable_file)
{
    struct fl_policy *p = (struct fl_policy *)1;
    struct fl_policy_errors errs = {0};
    ASSERT_EQ(fl_policy_load("test/unit/fixtures/no-such-file.yaml", &p, &errs), -ENOENT);
    ASSERT_NULL(p);
    ASSERT_UEQ(errs.n, 1);
    ASSERT_STR_EQ(errs.msgs[0], "test/unit/fixtures/no-such-file.yaml: cannot read: No such file "
                                "or directory; check the path");
    fl_policy_errors_free(&errs);
    ASSERT_UEQ(errs.n, 0);
    ASSERT_NULL(errs.msgs);

    ASSERT_EQ(fl_policy_load(GOOD_DIR, &p, &errs), -EISDIR);
    ASSERT_UEQ(errs.n, 1);
    ASSERT_CONTAINS(errs.msgs[0], "cannot read: Is a directory");
    fl_policy_errors_free(&errs);
    fl_policy_errors_free(NULL);
}

TEST(policy_defaults)
{
    struct fl_policy *p = unit_load(UNIT_POLICY_HEAD "  rules:\n"
                                                     "    - name: r\n"
                                                     "      fault: {abort: {status: 503}}\n");
    ASSERT_STR_EQ(p->name, "unit");
    ASSERT_STR_EQ(p->file, "unit.yaml");
    ASSERT_EQ(p->has_seed, 0);
    ASSERT_UEQ(p->ttl_ms, FL_DEFAULT_TTL_MS);
    ASSERT_UEQ(p->ttl_ms, 30 * 60 * 1000);
    ASSERT_UEQ(p->max_active_faults, FL_DEFAULT_MAX_ACTIVE_FAULTS);
    ASSERT_UEQ(p->proxy_port, FL_DEFAULT_PROXY_PORT);
    ASSERT_EQ(atomic_load(&p->refs), 1);
    ASSERT_UEQ(p->n_rules, 1);
    struct fl_rule *r = &p->rules[0];
    ASSERT_STR_EQ(r->name, "r");
    ASSERT_UEQ(r->n_on, 0);
    ASSERT_NULL(r->on);
    ASSERT_UEQ(r->match.methods, 0);
    ASSERT_EQ(r->match.path.kind, FL_SM_ANY);
    ASSERT_UEQ(r->match.n_headers, 0);
    ASSERT_EQ(r->match.has_grpc, 0);
    ASSERT_EQ(r->abort.enabled, 1);
    ASSERT_EQ(r->abort.status, 503);
    ASSERT_EQ(r->abort.grpc_status, -1);
    ASSERT_NULL(r->abort.body);
    ASSERT_UEQ(r->abort.ppm, FL_PPM_MAX);
    ASSERT_EQ(r->delay.enabled, 0);
    ASSERT_EQ(r->reset.enabled, 0);
    ASSERT_EQ(atomic_load(&r->live.enabled), 1);
    ASSERT_UEQ(atomic_load(&r->live.ppm[FL_FAULT_DELAY]), UINT32_MAX);
    ASSERT_UEQ(atomic_load(&r->live.ppm[FL_FAULT_ABORT]), UINT32_MAX);
    ASSERT_UEQ(atomic_load(&r->live.ppm[FL_FAULT_RESET]), UINT32_MAX);
    ASSERT_UEQ(atomic_load(&r->live.matched), 0);
    ASSERT_EQ(r->line, 12);
    ASSERT_EQ(r->col, 7);
    fl_policy_unref(p);
}

TEST(policy_full_fields)
{
    struct fl_policy *p = unit_load(
        "apiVersion: faultline/v1\n"
        "kind: FaultPolicy\n"
        "metadata:\n"
        "  name: checkout-chaos\n"
        "spec:\n"
        "  seed: 18446744073709551615\n"
        "  ttl: 1.5h\n"
        "  max_active_faults: 7\n"
        "  proxy_port: 15009\n"
        "  listeners:\n"
        "    - name: orders\n"
        "      listen: localhost:15000\n"
        "      upstream: localhost:8080\n"
        "    - {name: any, listen: \":15002\", upstream: \"[::1]:8080\"}\n"
        "  targets:\n"
        "    - name: orders-svc\n"
        "      pods:\n"
        "        cgroup: [/sys/fs/cgroup/a, /sys/fs/cgroup/b]\n"
        "      destination: {ip: \"fd77::7\"}\n"
        "  rules:\n"
        "    - name: slow\n"
        "      on: [orders, orders-svc]\n"
        "      match:\n"
        "        method: [GET, PATCH]\n"
        "        path: {regex: \"^/orders/[0-9]+$\"}\n"
        "        headers:\n"
        "          - {name: X-Chaos, exact: \"on\"}\n"
        "          - {name: X-Trace, absent: true}\n"
        "      fault:\n"
        "        delay: {fixed: 200ms, jitter: 0.5s, percent: 12.3456}\n"
        "        abort:\n"
        "          status: 503\n"
        "          body: \"injected\\n\"\n"
        "          headers: {Retry-After: \"1\", x-a: b}\n"
        "          percent: 0.0001\n"
        "        reset: {percent: 0}\n"
        "    - name: greeter-down\n"
        "      on: any\n"
        "      match: {grpc: {service: helloworld.Greeter}}\n"
        "      fault:\n"
        "        abort: {grpc_status: UNAVAILABLE, message: injected}\n");
    ASSERT_STR_EQ(p->name, "checkout-chaos");
    ASSERT_EQ(p->has_seed, 1);
    ASSERT_UEQ(p->seed, UINT64_MAX);
    ASSERT_UEQ(p->ttl_ms, 90 * 60 * 1000);
    ASSERT_UEQ(p->max_active_faults, 7);
    ASSERT_UEQ(p->proxy_port, 15009);

    ASSERT_UEQ(p->n_listeners, 2);
    struct fl_listener_spec *l = &p->listeners[0];
    ASSERT_STR_EQ(l->name, "orders");
    ASSERT_STR_EQ(l->listen, "localhost:15000");
    ASSERT_STR_EQ(l->upstream, "localhost:8080");
    ASSERT_EQ(l->n_listen_addrs, 2);
    ASSERT_EQ(l->listen_addrs[0].ss_family, AF_INET);
    ASSERT_EQ(l->listen_addrs[1].ss_family, AF_INET6);
    ASSERT_EQ(l->upstream_addr.ss_family, AF_INET);
    ASSERT_EQ(ntohs(((struct sockaddr_in *)&l->upstream_addr)->sin_port), 8080);
    ASSERT_EQ(l->line, 11);
    ASSERT_EQ(l->col, 7);
    l = &p->listeners[1];
    ASSERT_EQ(l->n_listen_addrs, 1);
    ASSERT_EQ(l->listen_addrs[0].ss_family, AF_INET6);
    ASSERT_EQ(l->upstream_addr.ss_family, AF_INET6);

    ASSERT_UEQ(p->n_targets, 1);
    struct fl_target_spec *t = &p->targets[0];
    ASSERT_UEQ(t->n_cgroups, 2);
    ASSERT_STR_EQ(t->cgroups[1], "/sys/fs/cgroup/b");
    ASSERT_EQ(t->dst.family, AF_INET6);
    ASSERT_EQ(t->dst.prefix, 128);
    ASSERT_EQ(t->dst.addr[0], 0xfd);
    ASSERT_EQ(t->dst.addr[15], 7);
    ASSERT_UEQ(t->port, 0);

    ASSERT_UEQ(p->n_rules, 2);
    struct fl_rule *r = &p->rules[0];
    ASSERT_UEQ(r->n_on, 2);
    ASSERT_STR_EQ(r->on[1], "orders-svc");
    ASSERT_UEQ(r->match.methods, (1u << FL_M_GET) | (1u << FL_M_PATCH));
    ASSERT_EQ(r->match.path.kind, FL_SM_REGEX);
    ASSERT_UEQ(r->match.n_headers, 2);
    ASSERT_STR_EQ(r->match.headers[0].name, "x-chaos"); /* lower-cased at load */
    ASSERT_UEQ(r->match.headers[0].name_len, 7);
    ASSERT_EQ(r->match.headers[0].m.kind, FL_SM_EXACT);
    ASSERT_STR_EQ(r->match.headers[0].m.value, "on");
    ASSERT_EQ(r->match.headers[1].m.kind, FL_SM_ABSENT);
    ASSERT_EQ(r->delay.enabled, 1);
    ASSERT_UEQ(r->delay.fixed_ms, 200);
    ASSERT_UEQ(r->delay.jitter_ms, 500);
    ASSERT_UEQ(r->delay.ppm, 123456);
    ASSERT_EQ(r->abort.status, 503);
    ASSERT_STR_EQ(r->abort.body, "injected\n");
    ASSERT_UEQ(r->abort.body_len, 9);
    ASSERT_UEQ(r->abort.n_headers, 2);
    ASSERT_STR_EQ(r->abort.headers[0].name, "retry-after");
    ASSERT_STR_EQ(r->abort.headers[0].value, "1");
    ASSERT_UEQ(r->abort.ppm, 1);
    ASSERT_EQ(r->reset.enabled, 1);
    ASSERT_UEQ(r->reset.ppm, 0);

    r = &p->rules[1];
    ASSERT_UEQ(r->n_on, 1);
    ASSERT_STR_EQ(r->on[0], "any");
    ASSERT_EQ(r->match.has_grpc, 1);
    ASSERT_STR_EQ(r->match.grpc_service, "helloworld.Greeter");
    ASSERT_NULL(r->match.grpc_method);
    ASSERT_EQ(r->abort.status, 0);
    ASSERT_EQ(r->abort.grpc_status, 14);
    ASSERT_STR_EQ(r->abort.message, "injected");
    fl_policy_unref(p);
}

/* All errors of a file come back in one round, in document order. */
TEST(policy_collects_every_error)
{
    struct fl_policy_errors errs = unit_load_fail(
        UNIT_POLICY_HEAD "  rules:\n"
                         "    - name: a\n"
                         "      fault: {delay: {fixed: 20x}}\n"
                         "    - name: b\n"
                         "      fault: {abort: {status: 700, percent: 101}}\n"
                         "    - name: c\n"
                         "      match: {path: {regex: \"(\"}}\n"
                         "      fault: {reset: {}}\n");
    ASSERT_UEQ(errs.n, 4);
    ASSERT_STR_EQ(errs.msgs[0],
                  "unit.yaml:13:30: spec.rules[0].fault.delay.fixed: \"20x\" is not a duration; "
                  "use a number with ms, s, m or h (e.g. 250ms)");
    ASSERT_CONTAINS(errs.msgs[1], "unit.yaml:15:31: spec.rules[1].fault.abort.status:");
    ASSERT_CONTAINS(errs.msgs[2], "unit.yaml:15:45: spec.rules[1].fault.abort.percent:");
    ASSERT_CONTAINS(errs.msgs[3], "unit.yaml:17:29: spec.rules[2].match.path.regex: invalid");
    fl_policy_errors_free(&errs);
}

/* Errors found by checks across the policy (a duplicate name, an `on:` that
 * names nothing) come back in file order with those of the walk. */
TEST(policy_errors_in_file_order)
{
    struct fl_policy_errors errs = unit_load_fail(
        UNIT_POLICY_HEAD "  rules:\n"
                         "    - {name: a, on: [nothing], fault: {reset: {}}}\n"
                         "    - {name: a, fault: {abort: {status: 999}}}\n");
    ASSERT_UEQ(errs.n, 3);
    ASSERT_CONTAINS(errs.msgs[0], "unit.yaml:12:22: spec.rules[0].on:");
    ASSERT_CONTAINS(errs.msgs[1], "unit.yaml:13:7: spec.rules[1].name:");
    ASSERT_CONTAINS(errs.msgs[2], "unit.yaml:13:41: spec.rules[1].fault.abort.status:");
    fl_policy_errors_free(&errs);
}

TEST(policy_refcount)
{
    struct fl_policy *p = unit_load(UNIT_POLICY_HEAD "  rules:\n"
                                                     "    - name: r\n"
                                                     "      match: {path: {regex: \"^/a\"}}\n"
                                                     "      fault: {reset: {}}\n");
    ASSERT(fl_policy_ref(p) == p);
    ASSERT_EQ(atomic_load(&p->refs), 2);
    fl_policy_unref(p);
    ASSERT_EQ(atomic_load(&p->refs), 1);
    ASSERT_STR_EQ(p->rules[0].name, "r"); /* still alive */
    fl_policy_unref(p); /* frees, regfree included: ASan/LSan check the rest */
    fl_policy_unref(NULL);
    ASSERT_NULL(fl_policy_ref(NULL));
}

TEST(policy_find_rule_and_scope)
{
    struct fl_policy *p = unit_load(UNIT_POLICY_HEAD "  rules:\n"
                                                     "    - name: one\n"
                                                     "      on: [l1]\n"
                                                     "      fault: {reset: {}}\n"
                                                     "    - name: two\n"
                                                     "      fault: {reset: {}}\n");
    ASSERT(fl_policy_find_rule(p, "one") == &p->rules[0]);
    ASSERT(fl_policy_find_rule(p, "two") == &p->rules[1]);
    ASSERT_NULL(fl_policy_find_rule(p, "three"));
    ASSERT_NULL(fl_policy_find_rule(p, "on"));
    ASSERT_EQ(fl_policy_rule_applies_to(&p->rules[0], "l1"), 1);
    ASSERT_EQ(fl_policy_rule_applies_to(&p->rules[0], "t1"), 0);
    ASSERT_EQ(fl_policy_rule_applies_to(&p->rules[0], "l"), 0);
    ASSERT_EQ(fl_policy_rule_applies_to(&p->rules[1], "l1"), 1);
    ASSERT_EQ(fl_policy_rule_applies_to(&p->rules[1], "t1"), 1);
    fl_policy_unref(p);
}

TEST(policy_parse_duration)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } ok[] = {{"0ms", 0},        {"250ms", 250},     {"2s", 2000},     {"1.5s", 1500},
              {"0.001s", 1},     {".5s", 500},       {"5m", 300000},   {"1h", 3600000},
              {"0.25h", 900000}, {"30m", 1800000},   {"1.5ms", 1},     {"007s", 7000}};
    static const char *const bad[] = {"",    "5",   "ms",   "20x",  "1.2.3s", "-1s",  " 1s", "1s ",
                                      "1 s", "1S",  "1d",   ".s",   "1e3ms",  "0.0001s", "s5",
                                      "99999999999999999999h"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t ms = 12345;
        if (fl_values_parse_duration(ok[i].s, &ms) != 0)
            UNIT_FAIL("\"%s\" rejected", ok[i].s);
        if (ms != ok[i].ms)
            UNIT_FAIL("\"%s\": %ju ms, expected %ju", ok[i].s, (uintmax_t)ms, (uintmax_t)ok[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms = 12345;
        if (fl_values_parse_duration(bad[i], &ms) != -EINVAL)
            UNIT_FAIL("\"%s\" accepted as %ju ms", bad[i], (uintmax_t)ms);
        ASSERT_UEQ(ms, 12345);
    }
}

TEST(policy_parse_sizes_rates_microseconds)
{
    static const struct {
        const char *s;
        uint64_t v;
    } sizes[] = {{"0", 0},          {"64", 64},         {"512B", 512},     {"1KiB", 1024},
                 {"1.5KiB", 1536},  {"4MiB", 4194304},  {"1GiB", 1073741824}, {".5KiB", 512}};
    static const char *const bad_sizes[] = {"", "KiB", "1KB", "1 KiB", "-1", "1kib", "1.2.3B",
                                            "99999999999999999999GiB", "2000000GiB"};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t v = 7;
        if (fl_values_parse_size(sizes[i].s, &v) != 0)
            UNIT_FAIL("size \"%s\" rejected", sizes[i].s);
        ASSERT_UEQ(v, sizes[i].v);
    }
    for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
        uint64_t v = 7;
        if (fl_values_parse_size(bad_sizes[i], &v) == 0)
            UNIT_FAIL("size \"%s\" accepted as %ju", bad_sizes[i], (uintmax_t)v);
    }
    uint64_t r = 0;
    ASSERT_EQ(fl_values_parse_rate("64KiB/s", &r), 0);
    ASSERT_UEQ(r, 65536);
    ASSERT_EQ(fl_values_parse_rate("1MiB/s", &r), 0);
    ASSERT_UEQ(r, 1048576);
    ASSERT_EQ(fl_values_parse_rate("100/s", &r), 0);
    ASSERT_UEQ(r, 100);
    static const char *const bad_rates[] = {"0/s", "1MiB", "/s", "1MiB/m", "fast", "1MiB/s ", ""};
    for (size_t i = 0; i < sizeof(bad_rates) / sizeof(bad_rates[0]); i++)
        if (fl_values_parse_rate(bad_rates[i], &r) == 0)
            UNIT_FAIL("rate \"%s\" accepted", bad_rates[i]);
    uint64_t us = 0;
    ASSERT_EQ(fl_values_parse_duration_us("500us", &us), 0);
    ASSERT_UEQ(us, 500);
    ASSERT_EQ(fl_values_parse_duration_us("1.5ms", &us), 0);
    ASSERT_UEQ(us, 1500);
    ASSERT_EQ(fl_values_parse_duration_us("2s", &us), 0);
    ASSERT_UEQ(us, 2000000);
    uint64_t ms = 9;
    ASSERT_EQ(fl_values_parse_duration("500us", &ms), 0);
    ASSERT_UEQ(ms, 0); /* fractions of a millisecond are dropped */
}

TEST(policy_response_and_connection_faults)
{
    static const char y[] =
        "apiVersion: faultline/v1\nkind: FaultPolicy\nmetadata: {name: p}\nspec:\n"
        "  listeners: [{name: l, listen: \"127.0.0.1:1\", upstream: \"127.0.0.1:2\"}]\n"
        "  rules:\n"
        "    - name: resp\n"
        "      fault:\n"
        "        response_delay: {fixed: 300ms, jitter: 10ms, percent: 20}\n"
        "        modify: {status: 500, headers: {set: {X-A: b}, remove: [ETag]}, body: \"oops\", percent: 5}\n"
        "        truncate: {after: 1KiB, percent: 2}\n"
        "        bandwidth: {rate: 64KiB/s, direction: both}\n"
        "    - name: conn\n"
        "      fault:\n"
        "        connection:\n"
        "          percent: 30\n"
        "          latency: {fixed: 100ms, jitter: 10ms, direction: upstream}\n"
        "          slicer: {average: 64, variation: 16, delay: 500us}\n"
        "          limit_data: {bytes: 1MiB}\n"
        "          reset_peer: {after: 500ms, direction: both}\n"
        "    - name: conn-match\n"
        "      match: {path: {prefix: /x}}\n"
        "      fault: {connection: {timeout: {after: 0s}}}\n";
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};
    ASSERT_EQ(fl_policy_load_buf("r.yaml", y, strlen(y), &p, &errs), 0);
    const struct fl_rule *r = &p->rules[0];
    ASSERT_EQ(r->response_delay.enabled, 1);
    ASSERT_UEQ(r->response_delay.fixed_ms, 300);
    ASSERT_UEQ(r->response_delay.ppm, 200000);
    ASSERT_EQ(r->modify.status, 500);
    ASSERT_EQ(r->modify.grpc_status, -1);
    ASSERT_STR_EQ(r->modify.set[0].name, "x-a"); /* lower case, as HTTP/2 needs */
    ASSERT_STR_EQ(r->modify.remove[0], "etag");
    ASSERT_UEQ(r->modify.body_len, 4);
    ASSERT_UEQ(r->truncate.after, 1024);
    ASSERT_UEQ(r->bandwidth.rate, 65536);
    ASSERT_UEQ(r->bandwidth.dir, FL_DIR_UP | FL_DIR_DOWN);
    ASSERT_EQ(r->conn_only, 0);
    const struct fl_rule *c = &p->rules[1];
    ASSERT_UEQ(c->connection.ppm, 300000);
    ASSERT_UEQ(c->connection.latency.dir, FL_DIR_UP);
    ASSERT_UEQ(c->connection.slicer.delay_us, 500);
    ASSERT_UEQ(c->connection.limit_data.bytes, 1048576);
    ASSERT_UEQ(c->connection.limit_data.dir, FL_DIR_DOWN); /* the default */
    ASSERT_EQ(c->conn_at_accept, 1);
    ASSERT_EQ(c->conn_only, 1); /* never seen by requests */
    ASSERT_EQ(p->rules[2].conn_at_accept, 0);
    ASSERT_EQ(fl_policy_rule_has_kind(c, FL_FAULT_CONNECTION), 1);
    ASSERT_EQ(fl_policy_rule_has_kind(r, FL_FAULT_TRUNCATE), 1);
    ASSERT_UEQ(fl_policy_rule_file_ppm(r, FL_FAULT_MODIFY), 50000);
    fl_policy_unref(p);
}

TEST(policy_parse_percent)
{
    static const struct {
        const char *s;
        uint32_t ppm;
    } ok[] = {{"0", 0},           {"100", 1000000},   {"100.0000", 1000000}, {"12.5", 125000},
              {"12.3456", 123456}, {"0.0001", 1},     {"5", 50000},          {"99.9999", 999999},
              {"1.", 10000},      {".5", 5000},       {"050", 500000}};
    static const char *const bad[] = {"",      "100.0001", "101",  "12.34567", "0.00001", "-1",
                                      "1e1",   "50%",      "1.2.3", ".",       " 5",      "5 ",
                                      "abc",   "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint32_t ppm = 7;
        if (fl_values_parse_percent(ok[i].s, &ppm) != 0)
            UNIT_FAIL("\"%s\" rejected", ok[i].s);
        if (ppm != ok[i].ppm)
            UNIT_FAIL("\"%s\": %u ppm, expected %u", ok[i].s, ppm, ok[i].ppm);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint32_t ppm = 7;
        if (fl_values_parse_percent(bad[i], &ppm) != -EINVAL)
            UNIT_FAIL("\"%s\" accepted as %u ppm", bad[i], ppm);
        ASSERT_UEQ(ppm, 7);
    }
}

TEST(policy_grpc_status_names)
{
    static const char *const names[17] = {
        "OK",           "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",   "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",  "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",      "DATA_LOSS",
        "UNAUTHENTICATED"};
    for (int i = 0; i < 17; i++) {
        char num[8];
        snprintf(num, sizeof(num), "%d", i);
        ASSERT_EQ(fl_values_parse_grpc_status(names[i]), i);
        ASSERT_EQ(fl_values_parse_grpc_status(num), i);
        ASSERT_STR_EQ(fl_values_grpc_status_name(i), names[i]);
    }
    ASSERT_EQ(fl_values_parse_grpc_status("unavailable"), 14);
    ASSERT_EQ(fl_values_parse_grpc_status("17"), -EINVAL);
    ASSERT_EQ(fl_values_parse_grpc_status("-1"), -EINVAL);
    ASSERT_EQ(fl_values_parse_grpc_status("14x"), -EINVAL);
    ASSERT_EQ(fl_values_parse_grpc_status("UNAVALIABLE"), -EINVAL);
    ASSERT_EQ(fl_values_parse_grpc_status(""), -EINVAL);
    ASSERT_STR_EQ(fl_values_grpc_status_name(17), "UNKNOWN");
    ASSERT_STR_EQ(fl_values_grpc_status_name(-1), "UNKNOWN");
}

TEST(policy_method_names)
{
    static const char *const names[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                        "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    for (int i = 0; i < FL_M_OTHER; i++) {
        ASSERT_EQ(fl_values_parse_method(names[i], strlen(names[i])), i);
        ASSERT_STR_EQ(fl_values_method_name((enum fl_method)i), names[i]);
    }
    /* Not NUL-terminated: only len bytes count. */
    ASSERT_EQ(fl_values_parse_method("GETX", 3), FL_M_GET);
    ASSERT_EQ(fl_values_parse_method("get", 3), FL_M_OTHER);
    ASSERT_EQ(fl_values_parse_method("PROPFIND", 8), FL_M_OTHER);
    ASSERT_EQ(fl_values_parse_method("GE", 2), FL_M_OTHER);
    ASSERT_EQ(fl_values_parse_method("", 0), FL_M_OTHER);
    ASSERT_STR_EQ(fl_values_method_name(FL_M_OTHER), "OTHER");
}

static int port_of(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)a)->sin_port)
                                   : ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

static void assert_addr(const struct sockaddr_storage *a, int family, const char *ip, int port)
{
    char buf[INET6_ADDRSTRLEN];
    const void *src = family == AF_INET ? (const void *)&((const struct sockaddr_in *)a)->sin_addr
                                        : (const void *)&((const struct sockaddr_in6 *)a)->sin6_addr;
    ASSERT_EQ(a->ss_family, family);
    ASSERT_NOT_NULL(inet_ntop(family, src, buf, sizeof(buf)));
    ASSERT_STR_EQ(buf, ip);
    ASSERT_EQ(port_of(a), port);
}

TEST(policy_parse_hostport)
{
    struct sockaddr_storage a[2];
    ASSERT_EQ(fl_values_parse_hostport("127.0.0.1:15000", 1, a), 1);
    assert_addr(&a[0], AF_INET, "127.0.0.1", 15000);
    ASSERT_EQ(fl_values_parse_hostport("[::1]:15000", 1, a), 1);
    assert_addr(&a[0], AF_INET6, "::1", 15000);
    ASSERT_EQ(fl_values_parse_hostport("localhost:15000", 1, a), 2);
    assert_addr(&a[0], AF_INET, "127.0.0.1", 15000);
    assert_addr(&a[1], AF_INET6, "::1", 15000);
    ASSERT_EQ(fl_values_parse_hostport("*:15000", 1, a), 1);
    assert_addr(&a[0], AF_INET6, "::", 15000);
    ASSERT_EQ(fl_values_parse_hostport(":15000", 1, a), 1);
    assert_addr(&a[0], AF_INET6, "::", 15000);
    ASSERT_EQ(fl_values_parse_hostport("10.77.0.1:65535", 0, a), 1);
    assert_addr(&a[0], AF_INET, "10.77.0.1", 65535);
    ASSERT_EQ(fl_values_parse_hostport("[fd77::1]:1", 0, a), 1);
    assert_addr(&a[0], AF_INET6, "fd77::1", 1);
    /* Upstreams connect to one address: localhost is 127.0.0.1. */
    ASSERT_EQ(fl_values_parse_hostport("localhost:8080", 0, a), 1);
    assert_addr(&a[0], AF_INET, "127.0.0.1", 8080);

    static const char *const bad_listen[] = {
        "127.0.0.1",       "127.0.0.1:",   "127.0.0.1:0",  "127.0.0.1:65536", "127.0.0.1:+80",
        "127.0.0.1: 80",   "127.0.0.1:8x", "::1:15000",    "[::1]15000",      "[::1",
        "999.0.0.1:80",    "",             ":",            "example.invalid:80"};
    for (size_t i = 0; i < sizeof(bad_listen) / sizeof(bad_listen[0]); i++)
        if (fl_values_parse_hostport(bad_listen[i], 1, a) >= 0)
            UNIT_FAIL("listen address \"%s\" accepted", bad_listen[i]);
    /* A wildcard is something to listen on, not to connect to. */
    ASSERT_LT(fl_values_parse_hostport("*:8080", 0, a), 0);
    ASSERT_LT(fl_values_parse_hostport(":8080", 0, a), 0);
}

/* ---- Kubernetes targets: pods.selector, destination.service ---- */

#define UNIT_K8S_HEAD                                                                              \
    "apiVersion: faultline/v1\n"                                                                   \
    "kind: FaultPolicy\n"                                                                          \
    "metadata: {name: unit}\n"                                                                     \
    "spec:\n"                                                                                      \
    "  targets:\n"

static void assert_req(const struct fl_sel_req *r, const char *key, enum fl_sel_op op,
                       size_t n_values, const char *v0, const char *v1)
{
    ASSERT_STR_EQ(r->key, key);
    ASSERT_EQ(r->op, op);
    ASSERT_UEQ(r->n_values, n_values);
    if (n_values == 0)
        return;
    ASSERT_NOT_NULL(r->values);
    ASSERT_STR_EQ(r->values[0], v0);
    if (n_values > 1)
        ASSERT_STR_EQ(r->values[1], v1);
}

TEST(policy_selector_and_service)
{
    struct fl_policy *p = unit_load(
        UNIT_K8S_HEAD "    - name: orders\n"
                      "      pods:\n"
                      "        selector:\n"
                      "          matchLabels: {app: checkout, app.kubernetes.io/part-of: shop}\n"
                      "          matchExpressions:\n"
                      "            - {key: tier, operator: In, values: [web, api]}\n"
                      "            - {key: track, operator: NotIn, values: [canary]}\n"
                      "            - {key: team, operator: Exists}\n"
                      "            - {key: canary, operator: DoesNotExist}\n"
                      "          namespace: shop\n"
                      "      destination: {service: orders, port: 8080}\n"
                      "    - name: ledger\n"
                      "      pods: {cgroup: /sys/fs/cgroup/agent}\n"
                      "      destination: {service: billing/ledger}\n");
    ASSERT_UEQ(p->n_targets, 2);
    const struct fl_target_spec *t = &p->targets[0];
    ASSERT_STR_EQ(t->name, "orders");
    ASSERT_EQ(t->line, 6);
    ASSERT_EQ(t->col, 7);
    ASSERT_UEQ(t->n_cgroups, 0);
    ASSERT_NULL(t->cgroups);
    ASSERT_NOT_NULL(t->selector);
    ASSERT_STR_EQ(t->selector->ns, "shop");
    ASSERT_UEQ(t->selector->n_reqs, 6);
    assert_req(&t->selector->reqs[0], "app", FL_SEL_IN, 1, "checkout", NULL);
    assert_req(&t->selector->reqs[1], "app.kubernetes.io/part-of", FL_SEL_IN, 1, "shop", NULL);
    assert_req(&t->selector->reqs[2], "tier", FL_SEL_IN, 2, "web", "api");
    assert_req(&t->selector->reqs[3], "track", FL_SEL_NOT_IN, 1, "canary", NULL);
    assert_req(&t->selector->reqs[4], "team", FL_SEL_EXISTS, 0, NULL, NULL);
    assert_req(&t->selector->reqs[5], "canary", FL_SEL_DOES_NOT_EXIST, 0, NULL, NULL);
    ASSERT_STR_EQ(t->svc_ns, "shop"); /* a bare name: the pods' namespace */
    ASSERT_STR_EQ(t->svc_name, "orders");
    ASSERT_EQ(t->svc_line, 16);
    ASSERT_EQ(t->svc_col, 30);
    ASSERT_EQ(t->port, 8080);
    ASSERT_EQ(t->dst.family, 0);

    t = &p->targets[1]; /* cgroup pods, a Service named with its namespace */
    ASSERT_STR_EQ(t->name, "ledger");
    ASSERT_NULL(t->selector);
    ASSERT_UEQ(t->n_cgroups, 1);
    ASSERT_STR_EQ(t->cgroups[0], "/sys/fs/cgroup/agent");
    ASSERT_STR_EQ(t->svc_ns, "billing");
    ASSERT_STR_EQ(t->svc_name, "ledger");
    ASSERT_EQ(t->port, 0); /* every port of the Service */
    ASSERT_EQ(t->dst.family, 0);
    ASSERT_EQ(fl_policy_needs_kubernetes(p), 1);
    fl_policy_unref(p);
}

/* matchLabels' requirements come first, in file order, wherever the key is. */
TEST(policy_selector_labels_before_expressions)
{
    struct fl_policy *p =
        unit_load(UNIT_K8S_HEAD "    - name: t\n"
                                "      destination: {service: orders}\n"
                                "      pods:\n"
                                "        selector:\n"
                                "          namespace: shop\n"
                                "          matchExpressions:\n"
                                "            - {key: z, operator: Exists}\n"
                                "            - {key: a, operator: NotIn, values: [x]}\n"
                                "          matchLabels: {b: \"2\", a: \"\", c: v.1}\n");
    const struct fl_selector *s = p->targets[0].selector;
    ASSERT_NOT_NULL(s);
    ASSERT_UEQ(s->n_reqs, 5);
    assert_req(&s->reqs[0], "b", FL_SEL_IN, 1, "2", NULL);
    assert_req(&s->reqs[1], "a", FL_SEL_IN, 1, "", NULL);
    assert_req(&s->reqs[2], "c", FL_SEL_IN, 1, "v.1", NULL);
    assert_req(&s->reqs[3], "z", FL_SEL_EXISTS, 0, NULL, NULL);
    assert_req(&s->reqs[4], "a", FL_SEL_NOT_IN, 1, "x", NULL);
    /* destination came before pods: the bare name still takes the namespace */
    ASSERT_STR_EQ(p->targets[0].svc_ns, "shop");
    fl_policy_unref(p);
}

/* No requirement at all selects every pod of the namespace, as in the API. */
TEST(policy_selector_empty_selects_the_namespace)
{
    struct fl_policy *p =
        unit_load(UNIT_K8S_HEAD "    - name: t\n"
                                "      pods: {selector: {namespace: shop}}\n"
                                "      destination: {cidr: 10.0.0.0/8}\n"
                                "    - name: u\n"
                                "      pods:\n"
                                "        selector: {matchLabels: {}, matchExpressions: [], "
                                "namespace: shop}\n"
                                "      destination: {ip: 10.0.0.1}\n");
    const struct fl_selector *s = p->targets[0].selector;
    ASSERT_NOT_NULL(s);
    ASSERT_STR_EQ(s->ns, "shop");
    ASSERT_UEQ(s->n_reqs, 0);
    struct fl_label some[] = {{"app", "x"}};
    ASSERT_EQ(fl_selector_matches(s, some, 1), 1);
    ASSERT_EQ(fl_selector_matches(s, NULL, 0), 1);
    ASSERT_UEQ(p->targets[1].selector->n_reqs, 0);
    ASSERT_NULL(p->targets[0].svc_name);
    ASSERT_EQ(p->targets[0].dst.family, AF_INET);
    ASSERT_EQ(fl_policy_target_equal(&p->targets[0], &p->targets[0]), 1);
    fl_policy_unref(p);
}

/* Each error of the selector and service syntax, whole and where it is
 * (test/unit/fixtures/policy/bad/selector.yaml and service.yaml have more). */
TEST(policy_selector_errors)
{
    struct fl_policy_errors errs = unit_load_fail(
        UNIT_K8S_HEAD "    - name: a\n"
                      "      pods:\n"
                      "        selector:\n"
                      "          matchExpressions:\n"
                      "            - {key: t, operator: Has}\n"
                      "            - {key: t, operator: Exists, values: [a]}\n"
                      "            - {key: t, operator: In}\n"
                      "          matchLabels: {\"-x\": ok, y: \"no way\"}\n"
                      "      destination: {service: orders}\n"
                      "    - name: b\n"
                      "      pods: {cgroup: /sys/fs/cgroup/x, selector: {namespace: shop}}\n"
                      "      destination: {service: orders, cidr: 10.0.0.0/8}\n"
                      "    - name: c\n"
                      "      pods: {cgroup: /sys/fs/cgroup/x}\n"
                      "      destination: {service: orders}\n"
                      "    - name: d\n"
                      "      pods: {selector: {namespace: shop}}\n"
                      "      destination: {service: shop/Orders}\n");
    static const char *const want[] = {
        "unit.yaml:9:11: spec.targets[0].pods.selector: give 'namespace' (in a file the pods' "
        "namespace must be named; a FaultPolicy resource uses its own)",
        "unit.yaml:10:34: spec.targets[0].pods.selector.matchExpressions[0].operator: unknown "
        "operator 'Has'; use In, NotIn, Exists or DoesNotExist",
        "unit.yaml:11:42: spec.targets[0].pods.selector.matchExpressions[1]: values must not be "
        "given with Exists; remove 'values'",
        "unit.yaml:12:15: spec.targets[0].pods.selector.matchExpressions[2]: operator In needs a "
        "non-empty 'values' list (e.g. values: [web])",
        "unit.yaml:13:25: spec.targets[0].pods.selector.matchLabels: '-x' is not a label key: it "
        "must begin and end with a letter or digit; a key is NAME or PREFIX/NAME, NAME being 1-63 "
        "letters, digits, '-', '_' and '.' that begin and end with a letter or digit",
        "unit.yaml:13:38: spec.targets[0].pods.selector.matchLabels.y: 'no way' is not a label "
        "value: only letters, digits, '-', '_' and '.' are allowed; a value is empty, or 1-63 "
        "letters, digits, '-', '_' and '.' that begin and end with a letter or digit",
        "unit.yaml:16:13: spec.targets[1].pods: give one of 'cgroup' (cgroup v2 paths) or "
        "'selector' (Kubernetes labels)",
        "unit.yaml:17:20: spec.targets[1].destination: give only one of 'cidr', 'ip' or 'service'",
        "unit.yaml:20:30: spec.targets[2].destination.service: 'orders' names no namespace, and "
        "the target has no pods.selector to take it from; write NAMESPACE/orders",
        "unit.yaml:23:30: spec.targets[3].destination.service: 'shop/Orders' is not a Service: the "
        "name 'Orders' must be 1-63 lowercase letters, digits and '-', beginning with a letter "
        "and ending with a letter or digit; use NAME or NAMESPACE/NAME",
    };
    size_t n = sizeof(want) / sizeof(want[0]);
    if (errs.n != n)
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "# %s\n", errs.msgs[i]);
    ASSERT_UEQ(errs.n, n);
    for (size_t i = 0; i < n; i++)
        ASSERT_STR_EQ(errs.msgs[i], want[i]);
    fl_policy_errors_free(&errs);
}

/* A label key or value as long as the API allows, and one character more. */
TEST(policy_selector_lengths)
{
    char yaml[1024], name63[64], name64[65];
    memset(name63, 'a', 63);
    name63[63] = 0;
    memset(name64, 'a', 64);
    name64[64] = 0;
    snprintf(yaml, sizeof(yaml),
             UNIT_K8S_HEAD "    - name: t\n"
                           "      pods: {selector: {matchLabels: {%s: %s}, namespace: %s}}\n"
                           "      destination: {service: %s}\n",
             name63, name63, name63, name63);
    struct fl_policy *p = unit_load(yaml);
    ASSERT_STR_EQ(p->targets[0].svc_ns, name63);
    fl_policy_unref(p);
    snprintf(yaml, sizeof(yaml),
             UNIT_K8S_HEAD "    - name: t\n"
                           "      pods: {selector: {matchLabels: {%s: %s}, namespace: %s}}\n"
                           "      destination: {service: %s}\n",
             name64, name64, name64, name64);
    struct fl_policy_errors errs = unit_load_fail(yaml);
    ASSERT_UEQ(errs.n, 4);
    ASSERT_CONTAINS(errs.msgs[0], "is not a label key: the name part is longer than 63");
    ASSERT_CONTAINS(errs.msgs[1], "is not a label value: it is longer than 63 characters");
    ASSERT_CONTAINS(errs.msgs[2], "is not a namespace name");
    ASSERT_CONTAINS(errs.msgs[3], "is not a Service");
    fl_policy_errors_free(&errs);
}

/* Kubernetes' semantics, one row per case: In needs the label with one of
 * the values; NotIn holds when it is absent or has none of them; Exists and
 * DoesNotExist look at the key alone; requirements are ANDed. */
TEST(selector_semantics)
{
    char *web_api[] = {"web", "api"}, *empty[] = {""};
    struct fl_label web[] = {{"tier", "web"}}, db[] = {{"tier", "db"}}, other[] = {{"x", "y"}};
    struct fl_label blank[] = {{"tier", ""}}, unset[] = {{"tier", NULL}};
    struct fl_label web_canary[] = {{"app", "a"}, {"tier", "web"}, {"canary", "true"}};
    static const struct {
        enum fl_sel_op op;
        int values; /* 0: none, 1: web_api, 2: {""} */
        int labels; /* 0: none, 1: web, 2: db, 3: other, 4: blank, 5: unset (NULL value) */
        int want;
    } rows[] = {
        {FL_SEL_IN, 1, 1, 1},
        {FL_SEL_IN, 1, 2, 0},
        {FL_SEL_IN, 1, 3, 0},
        {FL_SEL_IN, 1, 0, 0},
        {FL_SEL_IN, 2, 4, 1},
        {FL_SEL_IN, 2, 5, 1},
        {FL_SEL_IN, 2, 3, 0},
        {FL_SEL_NOT_IN, 1, 1, 0},
        {FL_SEL_NOT_IN, 1, 2, 1},
        {FL_SEL_NOT_IN, 1, 3, 1},
        {FL_SEL_NOT_IN, 1, 0, 1},
        {FL_SEL_NOT_IN, 2, 4, 0},
        {FL_SEL_EXISTS, 0, 1, 1},
        {FL_SEL_EXISTS, 0, 4, 1},
        {FL_SEL_EXISTS, 0, 3, 0},
        {FL_SEL_EXISTS, 0, 0, 0},
        {FL_SEL_DOES_NOT_EXIST, 0, 1, 0},
        {FL_SEL_DOES_NOT_EXIST, 0, 4, 0},
        {FL_SEL_DOES_NOT_EXIST, 0, 3, 1},
        {FL_SEL_DOES_NOT_EXIST, 0, 0, 1},
    };
    const struct fl_label *sets[] = {NULL, web, db, other, blank, unset};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct fl_sel_req r = {"tier", rows[i].op, NULL, 0};
        if (rows[i].values == 1) {
            r.values = web_api;
            r.n_values = 2;
        } else if (rows[i].values == 2) {
            r.values = empty;
            r.n_values = 1;
        }
        struct fl_selector s = {"shop", &r, 1};
        int got = fl_selector_matches(&s, sets[rows[i].labels], rows[i].labels ? 1 : 0);
        if (got != rows[i].want)
            UNIT_FAIL("row %zu: %s over label set %d: got %d, want %d", i,
                      fl_selector_op_name(rows[i].op), rows[i].labels, got, rows[i].want);
    }

    /* AND: every requirement must hold. */
    char *a_v[] = {"a"};
    struct fl_sel_req reqs[] = {{"app", FL_SEL_IN, a_v, 1},
                                {"tier", FL_SEL_IN, web_api, 2},
                                {"canary", FL_SEL_DOES_NOT_EXIST, NULL, 0}};
    struct fl_selector s = {"shop", reqs, 3};
    ASSERT_EQ(fl_selector_matches(&s, web_canary, 3), 0);
    ASSERT_EQ(fl_selector_matches(&s, web_canary, 2), 1); /* without canary=true */
    s.n_reqs = 0;                                         /* empty: everything */
    ASSERT_EQ(fl_selector_matches(&s, web_canary, 3), 1);
    ASSERT_EQ(fl_selector_matches(&s, NULL, 0), 1);

    ASSERT_EQ(fl_selector_key_error("app.kubernetes.io/name"), NULL);
    ASSERT_NOT_NULL(fl_selector_key_error("Bad.Prefix/name"));
    ASSERT_NOT_NULL(fl_selector_key_error("name-"));
    ASSERT_NOT_NULL(fl_selector_key_error(""));
    ASSERT_EQ(fl_selector_value_error(""), NULL);
    ASSERT_NOT_NULL(fl_selector_value_error("a b"));
}

/* Two targets are the same when they select the same pods and destination:
 * what a policy diff (control/policy_json.c) relies on. */
TEST(policy_target_equal_selectors)
{
    struct fl_policy *p = unit_load(
        UNIT_K8S_HEAD
        "    - {name: t0, pods: {selector: {matchLabels: {app: a}, namespace: shop}}, "
        "destination: {service: orders, port: 80}}\n"
        /* the same, written out: a bare name takes the pods' namespace */
        "    - {name: t1, pods: {selector: {matchExpressions: [{key: app, operator: In, values: "
        "[a]}], namespace: shop}}, destination: {service: shop/orders, port: 80}}\n"
        /* another namespace for the pods */
        "    - {name: t2, pods: {selector: {matchLabels: {app: a}, namespace: shop2}}, "
        "destination: {service: shop/orders, port: 80}}\n"
        /* another value */
        "    - {name: t3, pods: {selector: {matchLabels: {app: b}, namespace: shop}}, "
        "destination: {service: orders, port: 80}}\n"
        /* another operator */
        "    - {name: t4, pods: {selector: {matchExpressions: [{key: app, operator: NotIn, "
        "values: [a]}], namespace: shop}}, destination: {service: orders, port: 80}}\n"
        /* another Service */
        "    - {name: t5, pods: {selector: {matchLabels: {app: a}, namespace: shop}}, "
        "destination: {service: shop/payments, port: 80}}\n"
        /* the same Service name in another namespace */
        "    - {name: t6, pods: {selector: {matchLabels: {app: a}, namespace: shop}}, "
        "destination: {service: other/orders, port: 80}}\n"
        /* no requirement */
        "    - {name: t7, pods: {selector: {namespace: shop}}, destination: {service: orders, "
        "port: 80}}\n"
        /* a CIDR instead of the Service */
        "    - {name: t8, pods: {selector: {matchLabels: {app: a}, namespace: shop}}, "
        "destination: {cidr: 10.0.0.0/8, port: 80}}\n"
        /* cgroup pods, same Service */
        "    - {name: t9, pods: {cgroup: /sys/fs/cgroup/a}, destination: {service: shop/orders, "
        "port: 80}}\n"
        /* another port */
        "    - {name: t10, pods: {selector: {matchLabels: {app: a}, namespace: shop}}, "
        "destination: {service: orders}}\n");
    const struct fl_target_spec *t = p->targets;
    ASSERT_UEQ(p->n_targets, 11);
    ASSERT_EQ(fl_policy_target_equal(&t[0], &t[1]), 1);
    ASSERT_EQ(fl_policy_target_equal(&t[1], &t[0]), 1);
    for (size_t i = 2; i < p->n_targets; i++) {
        if (fl_policy_target_equal(&t[0], &t[i]) || fl_policy_target_equal(&t[i], &t[0]))
            UNIT_FAIL("targets t0 and %s compare equal", t[i].name);
        ASSERT_EQ(fl_policy_target_equal(&t[i], &t[i]), 1);
    }
    fl_policy_unref(p);
}

TEST(policy_needs_kubernetes)
{
    struct fl_policy *p = unit_load(UNIT_POLICY_HEAD); /* cgroup pods, a CIDR */
    ASSERT_EQ(fl_policy_needs_kubernetes(p), 0);
    fl_policy_unref(p);
    p = unit_load(UNIT_K8S_HEAD "    - {name: t, pods: {selector: {namespace: shop}}, "
                                "destination: {cidr: 10.0.0.0/8}}\n");
    ASSERT_EQ(fl_policy_needs_kubernetes(p), 1);
    fl_policy_unref(p);
    p = unit_load(UNIT_K8S_HEAD "    - {name: t, pods: {cgroup: /sys/fs/cgroup/a}, "
                                "destination: {cidr: 10.0.0.0/8}}\n"
                                "    - {name: u, pods: {cgroup: /sys/fs/cgroup/a}, "
                                "destination: {service: shop/orders}}\n");
    ASSERT_EQ(fl_policy_needs_kubernetes(p), 1);
    fl_policy_unref(p);
    p = unit_load("apiVersion: faultline/v1\nkind: FaultPolicy\nmetadata: {name: unit}\n"
                  "spec:\n  listeners:\n"
                  "    - {name: l1, listen: \"127.0.0.1:15000\", upstream: \"127.0.0.1:8080\"}\n");
    ASSERT_EQ(fl_policy_needs_kubernetes(p), 0);
    fl_policy_unref(p);
}

/* A regex whose repetitions multiply (glibc copies the tree per bound and per
 * '+') is refused before regcomp can take gigabytes (found by fuzz_policy). */
TEST(policy_regex_cost_bounded)
{
    struct fl_policy_errors errs = unit_load_fail(
        UNIT_POLICY_HEAD "  rules:\n"
                         "    - {name: a, match: {path: {regex: \"^cu++++++++++++++++++++++rl\"}}, "
                         "fault: {reset: {}}}\n"
                         "    - {name: b, match: {path: {regex: \"((a{99}){99}){99}\"}}, "
                         "fault: {reset: {}}}\n");
    ASSERT_UEQ(errs.n, 2);
    ASSERT_CONTAINS(errs.msgs[0], "repeats too much");
    ASSERT_CONTAINS(errs.msgs[1], "spec.rules[1].match.path.regex: the regular expression");
    fl_policy_errors_free(&errs);
    struct fl_policy *p = unit_load(UNIT_POLICY_HEAD "  rules:\n"
                                                     "    - {name: a, match: {path: {regex: "
                                                     "\"^/(a|b)+/x{2,5}[0-9]+$\"}}, fault: "
                                                     "{reset: {}}}\n");
    fl_policy_unref(p);
}

/* ---- ingress targets, existing ---- */

TEST(policy_ingress_targets)
{
    struct fl_policy *p = unit_load(
        UNIT_K8S_HEAD "    - name: in\n"
                      "      direction: ingress\n"
                      "      pods: {selector: {matchLabels: {app: orders}, namespace: shop}}\n"
                      "      port: 8080\n"
                      "      from: {cidr: 10.0.0.0/8}\n"
                      "      existing: reset\n"
                      "    - name: in6\n"
                      "      direction: ingress\n"
                      "      pods: {cgroup: /sys/fs/cgroup/orders}\n"
                      "      port: 9090\n"
                      "      from: {ip: \"fd77::5\"}\n"
                      "    - name: mapped\n"
                      "      direction: ingress\n"
                      "      pods: {cgroup: /sys/fs/cgroup/orders}\n"
                      "      port: 9091\n"
                      "      from: {cidr: \"::ffff:10.1.0.0/112\"}\n"
                      "    - name: out\n"
                      "      direction: egress\n"
                      "      pods: {cgroup: /sys/fs/cgroup/web}\n"
                      "      destination: {cidr: 10.0.0.0/24, port: 80}\n"
                      "      existing: keep\n");
    ASSERT_UEQ(p->n_targets, 4);
    const struct fl_target_spec *t = p->targets;
    /* an IPv4-mapped range is the IPv4 range (IPv4 callers arrive as IPv4) */
    ASSERT_EQ(t[2].from.family, AF_INET);
    ASSERT_EQ(t[2].from.prefix, 16);
    ASSERT_EQ(t[2].from.addr[0], 10);
    ASSERT_EQ(t[2].from.addr[1], 1);
    ASSERT_EQ(t[2].from.addr[4], 0);

    ASSERT_EQ(t[0].ingress, 1);
    ASSERT_EQ(t[0].port, 8080);
    ASSERT_EQ(t[0].from.family, AF_INET);
    ASSERT_EQ(t[0].from.prefix, 8);
    ASSERT_EQ(t[0].from.addr[0], 10);
    ASSERT_EQ(t[0].existing_reset, 1);
    ASSERT_EQ(t[0].dst.family, 0);
    ASSERT_EQ(t[1].ingress, 1);
    ASSERT_EQ(t[1].from.family, AF_INET6);
    ASSERT_EQ(t[1].from.prefix, 128);
    ASSERT_EQ(t[1].existing_reset, 0);
    ASSERT_EQ(t[3].ingress, 0);
    ASSERT_EQ(t[3].existing_reset, 0);
    ASSERT_EQ(t[3].port, 80);
    /* direction, from and existing take part in equality */
    ASSERT_EQ(fl_policy_target_equal(&t[0], &t[0]), 1);
    struct fl_target_spec c = t[1];
    c.existing_reset = 1;
    ASSERT_EQ(fl_policy_target_equal(&t[1], &c), 0);
    c = t[1];
    c.from.prefix = 64;
    ASSERT_EQ(fl_policy_target_equal(&t[1], &c), 0);
    c = t[3];
    c.ingress = 1;
    ASSERT_EQ(fl_policy_target_equal(&t[3], &c), 0);
    fl_policy_unref(p);
}

/* ---- a FaultPolicy resource, as the API server returns it ---- */

TEST(policy_resource_from_the_api)
{
    static const char ok_json[] =
        "{\"apiVersion\":\"faultline.dev/v1\",\"kind\":\"FaultPolicy\",\"metadata\":{\"name\":"
        "\"chaos\",\"namespace\":\"shop\",\"uid\":\"u-1\",\"resourceVersion\":\"42\","
        "\"generation\":3,\"creationTimestamp\":\"2026-12-02T10:00:00Z\",\"managedFields\":[]},"
        "\"spec\":{\"targets\":[{\"name\":\"t\",\"pods\":{\"selector\":{\"matchLabels\":{\"app\":"
        "\"web\"}}},\"destination\":{\"service\":\"orders\",\"port\":80}}],\"rules\":[{\"name\":"
        "\"r\",\"fault\":{\"abort\":{\"status\":503,\"percent\":12.5}}}]},\"status\":{}}";
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};
    ASSERT_EQ(fl_policy_load_resource("shop/chaos", ok_json, strlen(ok_json), &p, &errs), 0);
    ASSERT_STR_EQ(p->ns, "shop");
    ASSERT_UEQ(p->generation, 3);
    ASSERT_STR_EQ(p->created, "2026-12-02T10:00:00Z");
    ASSERT_STR_EQ(p->targets[0].selector->ns, "shop"); /* its own namespace */
    ASSERT_STR_EQ(p->targets[0].svc_ns, "shop");
    fl_policy_unref(p);

    static const char bad_json[] =
        "{\"apiVersion\":\"faultline.dev/v1\",\"kind\":\"FaultPolicy\",\"metadata\":{\"name\":"
        "\"chaos\",\"namespace\":\"shop\"},\"spec\":{\"listeners\":[],\"targets\":[{\"name\":"
        "\"t\",\"pods\":{\"selector\":{\"namespace\":\"other\"}},\"destination\":{\"cidr\":"
        "\"10.0.0.0/8\"}}],\"rules\":[{\"name\":\"r\",\"fault\":{\"abort\":{\"status\":700}}}]}}";
    ASSERT_EQ(fl_policy_load_resource("shop/chaos", bad_json, strlen(bad_json), &p, &errs),
              -EINVAL);
    ASSERT_NULL(p);
    static const char *const want[] = {
        "shop/chaos: spec.listeners: not allowed in a FaultPolicy resource; explicit listeners "
        "belong in a policy file given to the daemon with -f",
        "shop/chaos: spec.targets[0].pods.selector.namespace: not allowed in a FaultPolicy "
        "resource: it selects pods in its own namespace (shop); create the resource there",
    };
    if (errs.n < 3)
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "# %s\n", errs.msgs[i]);
    ASSERT_UEQ(errs.n, 3);
    ASSERT_STR_EQ(errs.msgs[0], want[0]);
    ASSERT_STR_EQ(errs.msgs[1], want[1]);
    ASSERT_NOT_NULL(strstr(errs.msgs[2], "shop/chaos: spec.rules[0].fault.abort.status: "));
    fl_policy_errors_free(&errs);

    /* From the API a resource without a namespace is refused. */
    static const char no_ns[] = "{\"apiVersion\":\"faultline.dev/v1\",\"kind\":\"FaultPolicy\","
                                "\"metadata\":{\"name\":\"x\"},\"spec\":{\"targets\":[]}}";
    ASSERT_EQ(fl_policy_load_resource("x", no_ns, strlen(no_ns), &p, &errs), -EINVAL);
    ASSERT_NOT_NULL(strstr(errs.msgs[0], "x: metadata.namespace: missing"));
    fl_policy_errors_free(&errs);
}

/* A file policy and two resources composed: each rule acts on its own
 * policy's targets only, names resolve as POLICY/RULE, deadlines go to the
 * rules, and the parts' counters are not the set's. */
TEST(policy_compose_a_set)
{
    static const char file[] = "apiVersion: faultline/v1\nkind: FaultPolicy\nmetadata: {name: local}\n"
                               "spec:\n  seed: 7\n  listeners: [{name: l, listen: 127.0.0.1:15000, "
                               "upstream: 127.0.0.1:8080}]\n  rules: [{name: r, fault: {reset: {}}}]\n";
    static const char res[] =
        "{\"apiVersion\":\"faultline.dev/v1\",\"kind\":\"FaultPolicy\",\"metadata\":{\"name\":"
        "\"chaos\",\"namespace\":\"%s\"},\"spec\":{\"max_active_faults\":%d,\"targets\":[{\"name\":\"t\","
        "\"pods\":{\"selector\":{\"matchLabels\":{\"app\":\"web\"}}},\"destination\":{\"ip\":"
        "\"10.0.0.1\"}}],\"rules\":[{\"name\":\"r\",\"fault\":{\"abort\":{\"status\":503}}}]}}";
    struct fl_policy *parts[3] = {0}, *set = NULL;
    struct fl_policy_errors errs = {0};
    char buf[1024];
    ASSERT_EQ(fl_policy_load_buf("f.yaml", file, strlen(file), &parts[0], &errs), 0);
    snprintf(buf, sizeof(buf), res, "shop", 50);
    ASSERT_EQ(fl_policy_load_resource("shop/chaos", buf, strlen(buf), &parts[1], &errs), 0);
    snprintf(buf, sizeof(buf), res, "team", 20);
    ASSERT_EQ(fl_policy_load_resource("team/chaos", buf, strlen(buf), &parts[2], &errs), 0);

    /* The file's policy alone is itself. */
    ASSERT_EQ(fl_policy_compose(parts, NULL, 1, 1, &set), 0);
    ASSERT(set == parts[0]);
    fl_policy_unref(set);

    uint64_t dl[3] = {0, 5000, 0};
    ASSERT_EQ(fl_policy_compose(parts, dl, 3, 1, &set), 0);
    ASSERT_UEQ(set->n_parts, 3);
    ASSERT_UEQ(set->n_listeners, 1);
    ASSERT_UEQ(set->n_targets, 2);
    ASSERT_STR_EQ(set->targets[0].name, "shop/chaos/t");
    ASSERT_STR_EQ(set->targets[1].name, "team/chaos/t");
    ASSERT(set->has_seed && set->seed == 7);
    ASSERT_UEQ(set->max_active_faults, parts[0]->max_active_faults); /* the file's */
    ASSERT_UEQ(set->n_rules, 3);
    /* A rule without `on` acts on its own policy's listeners and targets. */
    ASSERT(fl_policy_rule_applies_to(&set->rules[0], "l"));
    ASSERT(!(fl_policy_rule_applies_to(&set->rules[0], "shop/chaos/t")));
    ASSERT(fl_policy_rule_applies_to(&set->rules[1], "shop/chaos/t"));
    ASSERT(!(fl_policy_rule_applies_to(&set->rules[1], "team/chaos/t")));
    ASSERT(!(fl_policy_rule_applies_to(&set->rules[1], "l")));
    ASSERT_UEQ(set->rules[1].deadline_ms, 5000);
    ASSERT_UEQ(set->rules[2].deadline_ms, 0);
    ASSERT_STR_EQ(set->rules[2].policy, "chaos");
    ASSERT_STR_EQ(set->rules[2].policy_id, "team/chaos");

    int amb = 0;
    ASSERT_NULL(fl_policy_find_rule2(set, "r", &amb));
    ASSERT(amb);
    ASSERT_NULL(fl_policy_find_rule2(set, "chaos/r", &amb)); /* two namespaces have a chaos */
    ASSERT(amb);
    ASSERT(fl_policy_find_rule2(set, "team/chaos/r", &amb) == &set->rules[2]);
    ASSERT(fl_policy_find_rule2(set, "local/r", &amb) == &set->rules[0]);
    ASSERT_NULL(fl_policy_find_rule2(set, "nope/r", &amb));
    ASSERT(!(amb));
    ASSERT_STR_EQ(fl_policy_rule_label(set, &set->rules[1], buf, sizeof(buf)), "shop/chaos/r");

    /* The set's counters are its own. */
    atomic_store(&set->rules[1].live.injected[FL_FAULT_ABORT], 9);
    ASSERT_UEQ(atomic_load(&parts[1]->rules[0].live.injected[FL_FAULT_ABORT]), 0);
    fl_policy_unref(set);

    /* Resources only: the smallest limit, the default proxy port. */
    ASSERT_EQ(fl_policy_compose(parts + 1, NULL, 2, 0, &set), 0);
    ASSERT_UEQ(set->max_active_faults, 20);
    ASSERT_UEQ(set->n_listeners, 0);
    fl_policy_unref(set);
    for (int i = 0; i < 3; i++)
        fl_policy_unref(parts[i]);
}
