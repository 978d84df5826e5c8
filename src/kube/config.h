/* config: how faultline reaches the Kubernetes API server, and as whom.
 *
 * In a cluster: the service account's token, CA and namespace under
 * /var/run/secrets/kubernetes.io/serviceaccount, the server from
 * KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT. Outside: a kubeconfig
 * file (--kubeconfig), its current context's cluster (server, CA file or
 * data) and user (token, token file, or client certificate and key, files or
 * data). The server's certificate is always verified. Reads files: call off
 * the event loop (startup).
 */
#ifndef FL_KUBE_CONFIG_H
#define FL_KUBE_CONFIG_H

#include <stddef.h>

#include "compiler.h"

struct fl_kube_config {
    char *server;     /* https://HOST:PORT, no trailing slash */
    char *ca_pem;     /* the CA bundle, PEM (from a file or -data) */
    size_t ca_len;
    char *token;      /* a bearer token given inline, or NULL */
    char *token_file; /* a file holding it, re-read when it changes, or NULL */
    char *cert_pem;   /* client certificate and key, PEM, or NULL */
    size_t cert_len;
    char *key_pem;
    size_t key_len;
    char *ns;     /* the context's (or service account's) namespace, or NULL */
    char *source; /* "kubeconfig PATH (context NAME)" or "in-cluster service account" */
};

/* The service account directory of a pod; FAULTLINE_SERVICEACCOUNT_DIR
 * replaces it (tests). */
#define FL_KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* Loads the current context of the kubeconfig at path. Returns 0, or a
 * negative errno with err saying what is missing or wrong and what to do. */
int fl_kube_config_kubeconfig(const char *path, struct fl_kube_config *c, char *err,
                              size_t errlen) FL_WUR;

/* Loads the in-cluster configuration. Returns 0, or -ENOENT when faultline is
 * not running in a pod (err says what to give instead), or another negative
 * errno with err set. */
int fl_kube_config_in_cluster(struct fl_kube_config *c, char *err, size_t errlen) FL_WUR;

void fl_kube_config_free(struct fl_kube_config *c);

/* A deep copy of in. Returns 0 or -ENOMEM (out is then empty). */
int fl_kube_config_dup(const struct fl_kube_config *in, struct fl_kube_config *out) FL_WUR;

#endif
