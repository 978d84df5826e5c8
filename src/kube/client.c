/* client: see client.h. */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define RESP_MAX (8u << 20)

int fl_kube_easy_setup(CURL *c, const struct fl_kube_config *cfg, struct curl_slist **hdrs,
                       char *err, size_t errlen)
{
    char auth[8300];
    if (cfg->token_file) {
        FILE *f = fopen(cfg->token_file, "r");
        char tok[8192];
        if (!f) {
            snprintf(err, errlen, "cannot read the token file %s: %s", cfg->token_file,
                     strerror(errno));
            return -1;
        }
        size_t n = fread(tok, 1, sizeof(tok) - 1, f);
        fclose(f);
        tok[n] = 0;
        tok[strcspn(tok, "\r\n")] = 0;
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
        *hdrs = curl_slist_append(*hdrs, auth);
    } else if (cfg->token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", cfg->token);
        *hdrs = curl_slist_append(*hdrs, auth);
    }
    curl_easy_setopt(c, CURLOPT_USERAGENT, "faultline/" FL_VERSION);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cfg->ca_pem) {
        struct curl_blob ca = {cfg->ca_pem, cfg->ca_len, CURL_BLOB_COPY};
        curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
    }
    if (cfg->cert_pem) {
        struct curl_blob cert = {cfg->cert_pem, cfg->cert_len, CURL_BLOB_COPY};
        struct curl_blob key = {cfg->key_pem, cfg->key_len, CURL_BLOB_COPY};
        curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
        curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
        curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    }
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    return 0;
}

struct resp_buf {
    char *p;
    size_t len;
};

static size_t write_cb(char *p, size_t sz, size_t nm, void *arg)
{
    struct resp_buf *b = arg;
    size_t n = sz * nm;
    if (b->len + n > RESP_MAX)
        return 0;
    char *q = realloc(b->p, b->len + n + 1);
    if (!q)
        return 0;
    memcpy(q + b->len, p, n);
    b->p = q;
    b->len += n;
    b->p[b->len] = 0;
    return n;
}

int fl_kube_request(const struct fl_kube_config *cfg, const char *method, const char *path,
                    const char *ctype, const char *body, long timeout_ms, long *status,
                    char **resp, char *err, size_t errlen)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
    struct resp_buf b = {0};
    char url[4096], ct[256];
    int rc = -1;

    *status = 0;
    *resp = NULL;
    CURL *c = curl_easy_init();
    if (!c || !hdrs) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (fl_kube_easy_setup(c, cfg, &hdrs, err, errlen) < 0)
        goto out;
    if (ctype) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
        hdrs = curl_slist_append(hdrs, ct);
    }
    snprintf(url, sizeof(url), "%s%s", cfg->server, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode e = curl_easy_perform(c);
    if (e != CURLE_OK) {
        snprintf(err, errlen, "%s %s: %s", method, cfg->server, curl_easy_strerror(e));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    *resp = b.p;
    b.p = NULL;
    rc = 0;
out:
    free(b.p);
    curl_slist_free_all(hdrs);
    if (c)
        curl_easy_cleanup(c);
    return rc;
}
