/* The Kubernetes client's pure parts: API objects into the view, a Service's
 * destinations, kubeconfig credentials. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"
#include "view.h"

static json_t *js(const char *text)
{
    json_error_t e;
    json_t *o = json_loads(text, 0, &e);
    if (!o)
        UNIT_FAIL("bad test JSON: %s", e.text);
    return o;
}

TEST(kube_pod_from_json)
{
    json_t *o = js("{\"metadata\":{\"namespace\":\"shop\",\"name\":\"checkout-1\",\"uid\":\"u-1\","
                   "\"labels\":{\"app\":\"checkout\",\"tier\":\"web\"}},"
                   "\"spec\":{\"nodeName\":\"n1\"},"
                   "\"status\":{\"phase\":\"Running\",\"qosClass\":\"Burstable\"}}");
    struct fl_kube_pod p;
    ASSERT_EQ(fl_kube_pod_from_json(o, &p), 0);
    ASSERT_STR_EQ(p.ns, "shop");
    ASSERT_STR_EQ(p.name, "checkout-1");
    ASSERT_STR_EQ(p.uid, "u-1");
    ASSERT_EQ(p.qos, FL_QOS_BURSTABLE);
    ASSERT_EQ(p.active, 1);
    ASSERT_UEQ(p.n_labels, 2);
    fl_kube_pod_fini(&p);
    json_decref(o);

    /* Terminated or being deleted: no longer steered. */
    o = js("{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"uid\":\"c\"},"
           "\"status\":{\"phase\":\"Succeeded\"}}");
    ASSERT_EQ(fl_kube_pod_from_json(o, &p), 0);
    ASSERT_EQ(p.active, 0);
    ASSERT_EQ(p.qos, FL_QOS_UNKNOWN);
    fl_kube_pod_fini(&p);
    json_decref(o);
    o = js("{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"uid\":\"c\","
           "\"deletionTimestamp\":\"2026-12-02T10:00:00Z\"},\"status\":{\"phase\":\"Running\"}}");
    ASSERT_EQ(fl_kube_pod_from_json(o, &p), 0);
    ASSERT_EQ(p.active, 0);
    fl_kube_pod_fini(&p);
    json_decref(o);
}

static int has_dest(const struct fl_kube_dest *d, size_t n, const char *ip, uint16_t port)
{
    uint8_t a[16] = {0};
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    inet_pton(fam, ip, a);
    for (size_t i = 0; i < n; i++)
        if (d[i].addr.family == fam && d[i].port == port && memcmp(d[i].addr.addr, a, 16) == 0)
            return 1;
    return 0;
}

/* Cluster IPs at the Service port, ready endpoints at the slice's port of the
 * same name; unready endpoints, UDP ports and other ports are left out. */
TEST(kube_service_dests)
{
    json_t *svc = js("{\"metadata\":{\"namespace\":\"shop\",\"name\":\"orders\"},"
                     "\"spec\":{\"clusterIP\":\"10.96.0.10\",\"clusterIPs\":[\"10.96.0.10\","
                     "\"fd00::10\"],\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":"
                     "\"web\"},{\"name\":\"grpc\",\"port\":9090,\"targetPort\":9091},"
                     "{\"name\":\"dns\",\"port\":53,\"protocol\":\"UDP\"}]}}");
    json_t *s4 = js("{\"addressType\":\"IPv4\",\"endpoints\":["
                    "{\"addresses\":[\"10.77.5.2\"],\"conditions\":{\"ready\":true}},"
                    "{\"addresses\":[\"10.77.5.3\"],\"conditions\":{\"ready\":false}},"
                    "{\"addresses\":[\"10.77.5.4\"]}],"
                    "\"ports\":[{\"name\":\"http\",\"port\":8080,\"protocol\":\"TCP\"},"
                    "{\"name\":\"grpc\",\"port\":9091}]}");
    json_t *s6 = js("{\"addressType\":\"IPv6\",\"endpoints\":[{\"addresses\":[\"fd77:5::2\"]}],"
                    "\"ports\":[{\"name\":\"http\",\"port\":8080}]}");
    json_t *slices[] = {s4, s6};
    struct fl_kube_service s = {0};
    ASSERT_EQ(fl_kube_service_from_json(svc, slices, 2, &s), 0);
    ASSERT_EQ(s.found, 1);
    ASSERT_UEQ(s.n_ips, 2);
    ASSERT_UEQ(s.n_ports, 2); /* the UDP port is not TCP's business */

    struct fl_kube_dest d[32];
    size_t n = fl_kube_service_dests(&s, 80, d, 32);
    ASSERT_UEQ(n, 5);
    ASSERT(has_dest(d, n, "10.96.0.10", 80));
    ASSERT(has_dest(d, n, "fd00::10", 80));
    ASSERT(has_dest(d, n, "10.77.5.2", 8080));
    ASSERT(has_dest(d, n, "10.77.5.4", 8080)); /* no conditions: ready */
    ASSERT(has_dest(d, n, "fd77:5::2", 8080));
    ASSERT(!has_dest(d, n, "10.77.5.3", 8080)); /* not ready */

    n = fl_kube_service_dests(&s, 0, d, 32); /* every port */
    ASSERT_UEQ(n, 9);
    ASSERT(has_dest(d, n, "10.96.0.10", 9090));
    ASSERT(has_dest(d, n, "10.77.5.2", 9091));
    ASSERT_UEQ(fl_kube_service_dests(&s, 443, d, 32), 0);
    fl_kube_service_fini(&s);

    /* Headless (clusterIP None): endpoints only. A Service not found: nothing. */
    json_t *hl = js("{\"spec\":{\"clusterIP\":\"None\",\"ports\":[{\"name\":\"http\",\"port\":80}]}}");
    struct fl_kube_service h = {0};
    ASSERT_EQ(fl_kube_service_from_json(hl, slices, 1, &h), 0);
    ASSERT_UEQ(h.n_ips, 0);
    ASSERT_UEQ(fl_kube_service_dests(&h, 80, d, 32), 2);
    fl_kube_service_fini(&h);
    struct fl_kube_service none = {0};
    ASSERT_EQ(fl_kube_service_from_json(NULL, NULL, 0, &none), 0);
    ASSERT_EQ(none.found, 0);
    ASSERT_UEQ(fl_kube_service_dests(&none, 80, d, 32), 0);
    fl_kube_service_fini(&none);
    json_decref(hl);
    json_decref(svc);
    json_decref(s4);
    json_decref(s6);
}

static char *write_tmp(const char *dir, const char *name, const char *text)
{
    static char path[4][512];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f)
        UNIT_FAIL("cannot write %s", p);
    fputs(text, f);
    fclose(f);
    return p;
}

TEST(kube_kubeconfig)
{
    char dir[] = "/tmp/fl-unit-kc.XXXXXX";
    ASSERT_NOT_NULL(mkdtemp(dir));
    write_tmp(dir, "ca.crt", "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n");
    const char *kc = write_tmp(dir, "config",
                               "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
                               "clusters:\n- name: c1\n  cluster:\n    server: https://127.0.0.1:6443/\n"
                               "    certificate-authority: ca.crt\n"
                               "users:\n- name: u1\n  user:\n    token: abc123\n"
                               "- name: u2\n  user:\n    client-certificate-data: Q0VSVA==\n"
                               "    client-key-data: S0VZ\n"
                               "contexts:\n- name: test\n  context: {cluster: c1, user: u1, "
                               "namespace: shop}\n"
                               "- name: cert\n  context: {cluster: c1, user: u2}\n");
    struct fl_kube_config c;
    char err[512];
    ASSERT_EQ(fl_kube_config_kubeconfig(kc, &c, err, sizeof(err)), 0);
    ASSERT_STR_EQ(c.server, "https://127.0.0.1:6443");
    ASSERT_STR_EQ(c.token, "abc123");
    ASSERT_STR_EQ(c.ns, "shop");
    ASSERT_CONTAINS(c.ca_pem, "BEGIN CERTIFICATE");
    ASSERT_NULL(c.cert_pem);
    fl_kube_config_free(&c);

    /* The client-certificate user, inline data (base64). */
    kc = write_tmp(dir, "config2",
                   "current-context: cert\nclusters:\n- name: c1\n  cluster:\n"
                   "    server: https://k:6443\n    certificate-authority-data: Q0E=\n"
                   "users:\n- name: u2\n  user:\n    client-certificate-data: Q0VSVA==\n"
                   "    client-key-data: S0VZ\n"
                   "contexts:\n- name: cert\n  context: {cluster: c1, user: u2}\n");
    ASSERT_EQ(fl_kube_config_kubeconfig(kc, &c, err, sizeof(err)), 0);
    ASSERT_STR_EQ(c.ca_pem, "CA");
    ASSERT_STR_EQ(c.cert_pem, "CERT");
    ASSERT_STR_EQ(c.key_pem, "KEY");
    ASSERT_NULL(c.token);
    fl_kube_config_free(&c);

    /* What is missing is said. */
    kc = write_tmp(dir, "bad1", "clusters: []\n");
    ASSERT_EQ(fl_kube_config_kubeconfig(kc, &c, err, sizeof(err)), -EINVAL);
    ASSERT_CONTAINS(err, "has no current-context");
    kc = write_tmp(dir, "bad2",
                   "current-context: x\nclusters:\n- name: c\n  cluster: {server: "
                   "\"http://k:80\"}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
                   "users:\n- name: u\n  user: {token: t}\n");
    ASSERT_EQ(fl_kube_config_kubeconfig(kc, &c, err, sizeof(err)), -EINVAL);
    ASSERT_CONTAINS(err, "must be an https:// URL");
    kc = write_tmp(dir, "bad3",
                   "current-context: x\nclusters:\n- name: c\n  cluster: {server: "
                   "\"https://k\", insecure-skip-tls-verify: true}\ncontexts:\n- name: x\n"
                   "  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {token: t}\n");
    ASSERT_EQ(fl_kube_config_kubeconfig(kc, &c, err, sizeof(err)), -EINVAL);
    ASSERT_CONTAINS(err, "always verifies");
    kc = write_tmp(dir, "bad4",
                   "current-context: x\nclusters:\n- name: c\n  cluster: {server: "
                   "\"https://k\"}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
                   "users:\n- name: u\n  user: {}\n");
    ASSERT_EQ(fl_kube_config_kubeconfig(kc, &c, err, sizeof(err)), -EINVAL);
    ASSERT_CONTAINS(err, "has no credentials");
    ASSERT_EQ(fl_kube_config_kubeconfig("/nonexistent/kubeconfig", &c, err, sizeof(err)), -ENOENT);
    ASSERT_CONTAINS(err, "cannot read the kubeconfig");

    /* Not in a pod: says to give --kubeconfig. */
    unsetenv("KUBERNETES_SERVICE_HOST");
    ASSERT_EQ(fl_kube_config_in_cluster(&c, err, sizeof(err)), -ENOENT);
    ASSERT_CONTAINS(err, "--kubeconfig");
    /* In a pod (a service account directory of our own). */
    write_tmp(dir, "ca.crt", "PEM");
    write_tmp(dir, "token", "tok\n");
    write_tmp(dir, "namespace", "faultline\n");
    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    setenv("FAULTLINE_SERVICEACCOUNT_DIR", dir, 1);
    ASSERT_EQ(fl_kube_config_in_cluster(&c, err, sizeof(err)), 0);
    ASSERT_STR_EQ(c.server, "https://10.96.0.1:443");
    ASSERT_STR_EQ(c.ns, "faultline");
    ASSERT_CONTAINS(c.token_file, "/token");
    fl_kube_config_free(&c);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ASSERT_EQ(system(cmd), 0);
}
