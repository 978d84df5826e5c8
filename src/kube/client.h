/* client: one request to the Kubernetes API server, and the parts of a
 * libcurl handle every request shares (TLS, credentials).
 *
 * fl_kube_request blocks: call it off the event loop (the thread pool).
 */
#ifndef FL_KUBE_CLIENT_H
#define FL_KUBE_CLIENT_H

#include <curl/curl.h>
#include <stddef.h>

#include "compiler.h"
#include "config.h"

/* Sets the TLS options of c from cfg (CA, client certificate; the server's
 * certificate is always verified) and appends the bearer token's header to
 * *hdrs, the token re-read from its file for every request so a rotated
 * one is used at once. Returns 0, or -1 with err saying why. */
int fl_kube_easy_setup(CURL *c, const struct fl_kube_config *cfg, struct curl_slist **hdrs,
                       char *err, size_t errlen) FL_WUR;

/* method path (with its query) on cfg's server, with body of type ctype
 * (NULL: none). Fills *status (0 when no answer came) and *resp (the body,
 * NUL-terminated, the caller frees; may be NULL). Returns 0 when the server
 * answered, or -1 with err saying what failed. Times out after timeout_ms. */
int fl_kube_request(const struct fl_kube_config *cfg, const char *method, const char *path,
                    const char *ctype, const char *body, long timeout_ms, long *status,
                    char **resp, char *err, size_t errlen) FL_WUR;

#endif
