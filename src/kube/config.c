/* config: see config.h. */
#include "config.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "file.h"
#include "jsonfile.h"

/* Kubeconfigs, certificates and tokens are small. */
#define MAX_FILE_BYTES (16u << 20)

static int read_file(const char *path, char **out, size_t *len)
{
    return fl_file_read(path, MAX_FILE_BYTES, out, len);
}

static int b64val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

/* Decodes base64 (whitespace ignored). Returns 0 or -EINVAL. */
static int b64decode(const char *in, char **out, size_t *len)
{
    size_t n = strlen(in);
    char *o = malloc(n / 4 * 3 + 4);
    if (!o)
        return -ENOMEM;
    unsigned acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '=' || ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
            continue;
        int v = b64val(ch);
        if (v < 0) {
            free(o);
            return -EINVAL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (char)((acc >> bits) & 0xff);
        }
    }
    o[k] = 0;
    *out = o;
    *len = k;
    return 0;
}

/* A path in a kubeconfig: relative ones are relative to the file's directory. */
static void resolve(const char *dir, const char *file, char *buf, size_t len)
{
    if (file[0] == '/')
        snprintf(buf, len, "%s", file);
    else
        snprintf(buf, len, "%s/%s", dir, file);
}

/* A field that is a file path (relative to the kubeconfig's directory) or
 * base64 data. Returns 0 (nothing given: *out NULL), or a negative errno with
 * err set. */
static int file_or_data(json_t *o, const char *file_key, const char *data_key, const char *dir,
                        const char *what, char **out, size_t *len, char *err, size_t errlen)
{
    const char *data = json_string_value(json_object_get(o, data_key));
    const char *file = json_string_value(json_object_get(o, file_key));
    *out = NULL;
    if (data) {
        if (b64decode(data, out, len) < 0) {
            snprintf(err, errlen, "%s: '%s' is not base64", what, data_key);
            return -EINVAL;
        }
        return 0;
    }
    if (!file)
        return 0;
    char path[PATH_MAX];
    resolve(dir, file, path, sizeof(path));
    int e = read_file(path, out, len);
    if (e < 0) {
        snprintf(err, errlen, "%s: cannot read %s %s: %s", what, file_key, path, strerror(-e));
        return e;
    }
    return 0;
}

static json_t *named(json_t *list, const char *name, const char *inner)
{
    size_t i;
    json_t *it;
    json_array_foreach(list, i, it)
    {
        const char *n = json_string_value(json_object_get(it, "name"));
        if (n && strcmp(n, name) == 0)
            return json_object_get(it, inner);
    }
    return NULL;
}

static char *dup_server(const char *s)
{
    size_t n = strlen(s);
    while (n && s[n - 1] == '/')
        n--;
    return strndup(s, n);
}

int fl_kube_config_kubeconfig(const char *path, struct fl_kube_config *c, char *err,
                              size_t errlen)
{
    char *buf;
    size_t len;
    memset(c, 0, sizeof(*c));
    int e = read_file(path, &buf, &len);
    if (e < 0) {
        snprintf(err, errlen, "cannot read the kubeconfig %s: %s", path, strerror(-e));
        return e;
    }
    char perr[256];
    json_t *kc = fl_yaml_to_json(buf, len, perr, sizeof(perr));
    free(buf);
    if (!kc || !json_is_object(kc)) {
        snprintf(err, errlen, "the kubeconfig %s is not valid YAML: %s", path,
                 kc ? "not a mapping" : perr);
        json_decref(kc);
        return -EINVAL;
    }
    char dirbuf[PATH_MAX];
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    const char *dir = dirname(dirbuf);
    const char *ctx_name = json_string_value(json_object_get(kc, "current-context"));
    json_t *ctx = ctx_name ? named(json_object_get(kc, "contexts"), ctx_name, "context") : NULL;
    e = -EINVAL;
    if (!ctx_name || !*ctx_name) {
        snprintf(err, errlen, "the kubeconfig %s has no current-context; set one with "
                              "'kubectl config use-context NAME'", path);
        goto out;
    }
    if (!ctx) {
        snprintf(err, errlen, "the kubeconfig %s: current-context '%s' is not among its contexts",
                 path, ctx_name);
        goto out;
    }
    const char *cl_name = json_string_value(json_object_get(ctx, "cluster"));
    const char *us_name = json_string_value(json_object_get(ctx, "user"));
    json_t *cl = cl_name ? named(json_object_get(kc, "clusters"), cl_name, "cluster") : NULL;
    json_t *us = us_name ? named(json_object_get(kc, "users"), us_name, "user") : NULL;
    char what[PATH_MAX + 128];
    snprintf(what, sizeof(what), "kubeconfig %s (context %s)", path, ctx_name);
    c->source = strdup(what);
    if (!cl) {
        snprintf(err, errlen, "%s: cluster '%s' is not among its clusters", what,
                 cl_name ? cl_name : "");
        goto out;
    }
    const char *server = json_string_value(json_object_get(cl, "server"));
    if (!server || strncmp(server, "https://", 8) != 0) {
        snprintf(err, errlen, "%s: the cluster's server must be an https:// URL (it is '%s')",
                 what, server ? server : "");
        goto out;
    }
    c->server = dup_server(server);
    const char *insecure = json_string_value(json_object_get(cl, "insecure-skip-tls-verify"));
    if (insecure && strcmp(insecure, "true") == 0) {
        snprintf(err, errlen, "%s: insecure-skip-tls-verify is set; faultline always verifies "
                              "the API server's certificate: give certificate-authority(-data)",
                 what);
        goto out;
    }
    if ((e = file_or_data(cl, "certificate-authority", "certificate-authority-data", dir, what,
                          &c->ca_pem, &c->ca_len, err, errlen)) < 0)
        goto out;
    e = -EINVAL;
    if (us) {
        const char *tok = json_string_value(json_object_get(us, "token"));
        const char *tf = json_string_value(json_object_get(us, "tokenFile"));
        if (tok)
            c->token = strdup(tok);
        if (tf) {
            char p2[PATH_MAX];
            resolve(dir, tf, p2, sizeof(p2));
            c->token_file = strdup(p2);
        }
        if ((e = file_or_data(us, "client-certificate", "client-certificate-data", dir, what,
                              &c->cert_pem, &c->cert_len, err, errlen)) < 0 ||
            (e = file_or_data(us, "client-key", "client-key-data", dir, what, &c->key_pem,
                              &c->key_len, err, errlen)) < 0)
            goto out;
        e = -EINVAL;
        if (json_object_get(us, "exec") || json_object_get(us, "auth-provider")) {
            if (!c->token && !c->token_file && !c->cert_pem) {
                snprintf(err, errlen, "%s: user '%s' gets credentials from an exec or "
                                      "auth-provider plugin, which faultline does not run; give "
                                      "a token, tokenFile or client certificate",
                         what, us_name);
                goto out;
            }
        }
    }
    if (!c->token && !c->token_file && !c->cert_pem) {
        snprintf(err, errlen, "%s: user '%s' has no credentials; give token, tokenFile, or "
                              "client-certificate and client-key",
                 what, us_name ? us_name : "");
        goto out;
    }
    if (!!c->cert_pem != !!c->key_pem) {
        snprintf(err, errlen, "%s: a client certificate needs its key and the other way round",
                 what);
        goto out;
    }
    const char *ns = json_string_value(json_object_get(ctx, "namespace"));
    if (ns)
        c->ns = strdup(ns);
    e = 0;
out:
    json_decref(kc);
    if (e < 0)
        fl_kube_config_free(c);
    return e;
}

int fl_kube_config_in_cluster(struct fl_kube_config *c, char *err, size_t errlen)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    const char *dir = getenv("FAULTLINE_SERVICEACCOUNT_DIR");
    char path[PATH_MAX];
    int e;

    memset(c, 0, sizeof(*c));
    if (!dir || !*dir)
        dir = FL_KUBE_SA_DIR;
    if (!host || !*host || !port || !*port) {
        snprintf(err, errlen, "not running in a pod (KUBERNETES_SERVICE_HOST and "
                              "KUBERNETES_SERVICE_PORT are not set); outside a cluster give "
                              "--kubeconfig PATH");
        return -ENOENT;
    }
    char server[300];
    if (strchr(host, ':'))
        snprintf(server, sizeof(server), "https://[%s]:%s", host, port);
    else
        snprintf(server, sizeof(server), "https://%s:%s", host, port);
    c->server = strdup(server);
    c->source = strdup("in-cluster service account");
    snprintf(path, sizeof(path), "%s/ca.crt", dir);
    if ((e = read_file(path, &c->ca_pem, &c->ca_len)) < 0) {
        snprintf(err, errlen, "in a pod, but cannot read the service account CA %s: %s; mount "
                              "the service account token (automountServiceAccountToken)",
                 path, strerror(-e));
        fl_kube_config_free(c);
        return e;
    }
    snprintf(path, sizeof(path), "%s/token", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        e = -errno;
        snprintf(err, errlen, "in a pod, but cannot read the service account token %s: %s",
                 path, strerror(-e));
        fl_kube_config_free(c);
        return e;
    }
    fclose(f);
    c->token_file = strdup(path);
    snprintf(path, sizeof(path), "%s/namespace", dir);
    char *ns;
    if (read_file(path, &ns, NULL) == 0) {
        ns[strcspn(ns, "\r\n")] = 0;
        c->ns = ns;
    }
    return 0;
}

void fl_kube_config_free(struct fl_kube_config *c)
{
    free(c->server);
    free(c->ca_pem);
    free(c->token);
    free(c->token_file);
    free(c->cert_pem);
    free(c->key_pem);
    free(c->ns);
    free(c->source);
    memset(c, 0, sizeof(*c));
}

static char *blob_dup(const char *p, size_t n)
{
    if (!p)
        return NULL;
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = 0;
    }
    return d;
}

int fl_kube_config_dup(const struct fl_kube_config *in, struct fl_kube_config *out)
{
    memset(out, 0, sizeof(*out));
    out->server = blob_dup(in->server, in->server ? strlen(in->server) : 0);
    out->ca_pem = blob_dup(in->ca_pem, in->ca_len);
    out->ca_len = in->ca_len;
    out->token = blob_dup(in->token, in->token ? strlen(in->token) : 0);
    out->token_file = blob_dup(in->token_file, in->token_file ? strlen(in->token_file) : 0);
    out->cert_pem = blob_dup(in->cert_pem, in->cert_len);
    out->cert_len = in->cert_len;
    out->key_pem = blob_dup(in->key_pem, in->key_len);
    out->key_len = in->key_len;
    out->ns = blob_dup(in->ns, in->ns ? strlen(in->ns) : 0);
    out->source = blob_dup(in->source ? in->source : "", in->source ? strlen(in->source) : 0);
    if (!out->server || !out->source || (in->ca_pem && !out->ca_pem) ||
        (in->token && !out->token) || (in->token_file && !out->token_file) ||
        (in->cert_pem && !out->cert_pem) || (in->key_pem && !out->key_pem) ||
        (in->ns && !out->ns)) {
        fl_kube_config_free(out);
        return -ENOMEM;
    }
    return 0;
}
