/* watch: see watch.h.
 *
 * Everything below runs on the watch thread except fl_kube_watch_start,
 * fl_kube_watch_services, fl_kube_watch_stop, async_cb (the loop) and
 * fl_kube_watch_status (any thread). Shared state is behind w->mu: the
 * wanted Services (loop -> thread), the newest view and the status (thread
 * -> loop).
 */
#include "watch.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "log.h"

#define PAGE_LIMIT 500
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define SILENCE_GRACE_MAX_MS 15000 /* beyond timeoutSeconds before a quiet watch is dropped */
#define POLL_MS 250
#define VIEW_MIN_MS 100 /* views of a burst of events are this far apart at least */
#define BODY_MAX (64u << 20)

enum kind { K_PODS, K_SVC, K_EPS, K_HALT, K_FP };
enum state { S_WAIT, S_LIST, S_WATCH };

struct informer {
    struct informer *next;
    enum kind kind;
    char *what;  /* for messages: "Pods on node n1", "Service shop/orders" */
    char *path;  /* /api/v1/pods, /api/v1/namespaces/shop/services, ... */
    char *query; /* the selector part of the query, escaped */
    char *key;   /* "ns/name" of the Service (K_SVC, K_EPS) */
    json_t *store;   /* "ns/name" -> object, as last listed and watched */
    json_t *staging; /* a list in pages */
    char *rv;        /* resourceVersion to watch from; NULL: list first */
    char *cont;      /* continue token of the next page */
    enum state state;
    CURL *easy;
    struct curl_slist *hdrs;
    char *buf; /* body (list) or the partial line (watch) */
    size_t len, cap;
    long retry_after_s;
    uint64_t due_ms;  /* S_WAIT: when to send the next request */
    uint64_t last_io; /* S_WATCH: when the last bytes arrived */
    uint64_t started; /* when the request was sent */
    unsigned fails;
    int synced;
    int gone;    /* a 410 ERROR event: list again */
    int failed;  /* the watch stream had an ERROR event or bad JSON */
    int removed; /* no target names it any more */
    int failing; /* the last request failed with error */
    char error[512];
};

struct fl_kube_watch {
    struct fl_kube_config cfg;
    char *node;
    unsigned timeout_s;
    uv_loop_t *loop;
    uv_async_t async;
    void (*on_view)(struct fl_kube_view *v, void *arg);
    void *arg;
    pthread_t thread;
    CURLM *multi;
    struct informer *list;
    int dirty;
    char logged[512]; /* the failure last logged ("" once all is well) */
    uint64_t last_post; /* when the last view was posted */
    uint64_t seq;
    unsigned rng;

    pthread_mutex_t mu;
    int stop;
    char **want; /* the Services to watch, "ns/name" */
    size_t n_want;
    int want_changed;
    struct fl_kube_view *pending;
    struct fl_kube_watch_status st;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- status ---- */

static void set_error(struct fl_kube_watch *w, struct informer *in, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_error(struct fl_kube_watch *w, struct informer *in, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Once per streak of the same failure, not once per retry nor once per
     * watch that meets it. */
    int again = strcmp(w->logged, msg) == 0;
    snprintf(w->logged, sizeof(w->logged), "%s", msg);
    in->failing = 1;
    snprintf(in->error, sizeof(in->error), "%s", msg);
    pthread_mutex_lock(&w->mu);
    w->st.failing = 1;
    w->st.errors++;
    snprintf(w->st.error, sizeof(w->st.error), "%s", msg);
    pthread_mutex_unlock(&w->mu);
    if (!again)
        fl_warn("kubernetes: %s: %s%s", in->what, msg,
                in->kind == K_HALT ? "; the last known cluster halt state stays in force "
                                     "until the API server answers ('faultctl status' shows it)"
                                   : "");
}

static void set_ok(struct fl_kube_watch *w, struct informer *in)
{
    int was = in->failing, any = 0;
    in->failing = 0;
    for (struct informer *o = w->list; o; o = o->next)
        any |= o->failing && !o->removed;
    pthread_mutex_lock(&w->mu);
    w->st.failing = any;
    if (!any)
        w->st.error[0] = 0;
    pthread_mutex_unlock(&w->mu);
    if (!any)
        w->logged[0] = 0;
    if (was)
        fl_info("kubernetes: %s: the API server %s answers again", in->what, w->cfg.server);
}

/* ---- informers ---- */

static char *esc(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *r = e ? strdup(e) : NULL;
    curl_free(e);
    return r;
}

static struct informer *informer_new(struct fl_kube_watch *w, enum kind kind, const char *ns,
                                     const char *name)
{
    struct informer *in = calloc(1, sizeof(*in));
    char buf[1024], sel[600];
    if (!in)
        return NULL;
    in->kind = kind;
    in->store = json_object();
    switch (kind) {
    case K_PODS:
        snprintf(buf, sizeof(buf), "Pods on node %s", w->node);
        in->what = strdup(buf);
        in->path = strdup("/api/v1/pods");
        snprintf(sel, sizeof(sel), "spec.nodeName=%s", w->node);
        break;
    case K_SVC:
        snprintf(buf, sizeof(buf), "Service %s/%s", ns, name);
        in->what = strdup(buf);
        snprintf(buf, sizeof(buf), "/api/v1/namespaces/%s/services", ns);
        in->path = strdup(buf);
        snprintf(sel, sizeof(sel), "metadata.name=%s", name);
        break;
    case K_HALT:
        snprintf(buf, sizeof(buf), "ConfigMap %s/%s (the cluster halt)", ns, name);
        in->what = strdup(buf);
        snprintf(buf, sizeof(buf), "/api/v1/namespaces/%s/configmaps", ns);
        in->path = strdup(buf);
        snprintf(sel, sizeof(sel), "metadata.name=%s", name);
        break;
    case K_FP:
        in->what = strdup("FaultPolicies");
        in->path = strdup("/apis/" FL_KUBE_FP_GROUP "/" FL_KUBE_FP_VERSION "/faultpolicies");
        sel[0] = 0;
        break;
    case K_EPS:
        snprintf(buf, sizeof(buf), "EndpointSlices of Service %s/%s", ns, name);
        in->what = strdup(buf);
        snprintf(buf, sizeof(buf), "/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices", ns);
        in->path = strdup(buf);
        snprintf(sel, sizeof(sel), "kubernetes.io/service-name=%s", name);
        break;
    }
    char *e = esc(sel);
    if (kind == K_FP)
        buf[0] = 0; /* every FaultPolicy of every namespace */
    else
        snprintf(buf, sizeof(buf), "%s=%s", kind == K_EPS ? "labelSelector" : "fieldSelector",
                 e ? e : "");
    free(e);
    in->query = strdup(buf);
    if (ns) {
        snprintf(buf, sizeof(buf), "%s/%s", ns, name);
        in->key = strdup(buf);
    }
    if (!in->what || !in->path || !in->query || !in->store || (ns && !in->key)) {
        free(in->what);
        free(in->path);
        free(in->query);
        free(in->key);
        json_decref(in->store);
        free(in);
        return NULL;
    }
    in->next = w->list;
    w->list = in;
    return in;
}

static void end_transfer(struct fl_kube_watch *w, struct informer *in)
{
    if (in->easy) {
        curl_multi_remove_handle(w->multi, in->easy);
        curl_easy_cleanup(in->easy);
        in->easy = NULL;
    }
    curl_slist_free_all(in->hdrs);
    in->hdrs = NULL;
    in->len = 0;
}

static void informer_free(struct fl_kube_watch *w, struct informer *in)
{
    end_transfer(w, in);
    free(in->what);
    free(in->path);
    free(in->query);
    free(in->key);
    free(in->rv);
    free(in->cont);
    free(in->buf);
    json_decref(in->store);
    json_decref(in->staging);
    free(in);
}

static unsigned rnd(struct fl_kube_watch *w)
{
    w->rng = w->rng * 1103515245u + 12345u;
    return w->rng >> 8;
}

/* Full jitter over an exponential bound: between half the bound and all of it. */
static void backoff(struct fl_kube_watch *w, struct informer *in)
{
    uint64_t bound = BACKOFF_MIN_MS;
    for (unsigned i = 0; i < in->fails && bound < BACKOFF_MAX_MS; i++)
        bound *= 2;
    if (bound > BACKOFF_MAX_MS)
        bound = BACKOFF_MAX_MS;
    uint64_t d = bound / 2 + rnd(w) % (bound / 2 + 1);
    if (in->retry_after_s > 0 && (uint64_t)in->retry_after_s * 1000u > d)
        d = (uint64_t)in->retry_after_s * 1000u;
    in->fails++;
    in->state = S_WAIT;
    in->due_ms = now_ms() + d;
}

static void again_now(struct informer *in)
{
    in->state = S_WAIT;
    in->due_ms = 0;
}

static char *obj_key(json_t *o)
{
    json_t *md = json_object_get(o, "metadata");
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    const char *name = json_string_value(json_object_get(md, "name"));
    if (!name)
        return NULL;
    size_t n = strlen(ns ? ns : "") + strlen(name) + 2;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s/%s", ns ? ns : "", name);
    return k;
}

static void set_rv(struct informer *in, json_t *o)
{
    const char *rv = json_string_value(json_object_get(json_object_get(o, "metadata"),
                                                       "resourceVersion"));
    if (rv && *rv) {
        free(in->rv);
        in->rv = strdup(rv);
    }
}

/* One watch event line. Returns 0, or -1 to end the stream. */
static int watch_event(struct fl_kube_watch *w, struct informer *in, const char *line, size_t n)
{
    json_error_t je;
    json_t *ev = json_loadb(line, n, 0, &je);
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *o = json_object_get(ev, "object");
    if (!ev || !type || !json_is_object(o)) {
        set_error(w, in, "the watch sent something that is not a watch event: %s", je.text);
        json_decref(ev);
        in->failed = 1;
        return -1;
    }
    pthread_mutex_lock(&w->mu);
    w->st.events++;
    pthread_mutex_unlock(&w->mu);
    if (strcmp(type, "ERROR") == 0) {
        json_int_t code = json_integer_value(json_object_get(o, "code"));
        if (code == 410) {
            in->gone = 1; /* expired resourceVersion: list again */
        } else {
            const char *msg = json_string_value(json_object_get(o, "message"));
            set_error(w, in, "the watch ended with an error %lld: %s", (long long)code,
                      msg ? msg : "(no message)");
            in->failed = 1;
        }
        json_decref(ev);
        return -1;
    }
    set_rv(in, o);
    if (strcmp(type, "BOOKMARK") != 0) {
        char *k = obj_key(o);
        if (k) {
            if (strcmp(type, "DELETED") == 0)
                json_object_del(in->store, k);
            else
                json_object_set(in->store, k, o);
            w->dirty = 1;
            free(k);
        }
    }
    json_decref(ev);
    return 0;
}

static size_t write_cb(char *p, size_t sz, size_t nm, void *arg)
{
    struct informer *in = arg;
    size_t n = sz * nm;
    if (in->len + n > BODY_MAX)
        return 0;
    if (in->len + n + 1 > in->cap) {
        size_t cap = in->cap ? in->cap : 65536;
        while (cap < in->len + n + 1)
            cap *= 2;
        char *b = realloc(in->buf, cap);
        if (!b)
            return 0;
        in->buf = b;
        in->cap = cap;
    }
    memcpy(in->buf + in->len, p, n);
    in->len += n;
    in->last_io = now_ms();
    return n;
}

static size_t header_cb(char *p, size_t sz, size_t nm, void *arg)
{
    struct informer *in = arg;
    size_t n = sz * nm;
    if (n > 12 && strncasecmp(p, "retry-after:", 12) == 0)
        in->retry_after_s = strtol(p + 12, NULL, 10);
    return n;
}

static void start_request(struct fl_kube_watch *w, struct informer *in)
{
    char url[4096], why[512];
    int watching = in->rv && in->synced;
    char *e;

    if (watching) {
        e = esc(in->rv);
        snprintf(url, sizeof(url),
                 "%s%s?%s&watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%u",
                 w->cfg.server, in->path, in->query, e ? e : "", w->timeout_s);
    } else {
        e = in->cont ? esc(in->cont) : NULL;
        snprintf(url, sizeof(url), "%s%s?%s&limit=%d%s%s", w->cfg.server, in->path, in->query,
                 PAGE_LIMIT, e ? "&continue=" : "", e ? e : "");
    }
    free(e);
    in->len = 0;
    in->retry_after_s = 0;
    in->gone = in->failed = 0;
    CURL *c = curl_easy_init();
    if (!c) {
        backoff(w, in);
        return;
    }
    in->hdrs = curl_slist_append(NULL, "Accept: application/json");
    if (fl_kube_easy_setup(c, &w->cfg, &in->hdrs, why, sizeof(why)) < 0) {
        set_error(w, in, "%s", why);
        curl_slist_free_all(in->hdrs);
        in->hdrs = NULL;
        curl_easy_cleanup(c);
        backoff(w, in);
        return;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, in->hdrs);
    if (!watching)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, in);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, in);
    curl_easy_setopt(c, CURLOPT_PRIVATE, in);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    in->easy = c;
    in->state = watching ? S_WATCH : S_LIST;
    in->last_io = in->started = now_ms();
    if (curl_multi_add_handle(w->multi, c) != CURLM_OK) {
        end_transfer(w, in);
        backoff(w, in);
    }
}

/* Complete lines of a watch stream so far. Returns -1 once the stream should end. */
static int watch_lines(struct fl_kube_watch *w, struct informer *in)
{
    size_t start = 0;
    int r = 0;
    for (size_t i = 0; i < in->len && r == 0; i++) {
        if (in->buf[i] != '\n')
            continue;
        if (i > start)
            r = watch_event(w, in, in->buf + start, i - start);
        start = i + 1;
    }
    memmove(in->buf, in->buf + start, in->len - start);
    in->len -= start;
    return r;
}

static void list_done(struct fl_kube_watch *w, struct informer *in)
{
    json_error_t je;
    json_t *o = json_loadb(in->buf ? in->buf : "", in->len, 0, &je);
    json_t *items = json_object_get(o, "items");
    if (!json_is_array(items)) {
        set_error(w, in, "the list answer is not a Kubernetes list: %s", je.text);
        json_decref(o);
        backoff(w, in);
        return;
    }
    if (!in->staging)
        in->staging = json_object();
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        char *k = obj_key(it);
        if (k)
            json_object_set(in->staging, k, it);
        free(k);
    }
    json_t *md = json_object_get(o, "metadata");
    const char *cont = json_string_value(json_object_get(md, "continue"));
    free(in->cont);
    in->cont = cont && *cont ? strdup(cont) : NULL;
    if (in->cont) {
        json_decref(o);
        again_now(in); /* the next page */
        return;
    }
    /* The whole list: it replaces what was known, so what vanished goes. */
    json_decref(in->store);
    in->store = in->staging;
    in->staging = NULL;
    free(in->rv);
    const char *rv = json_string_value(json_object_get(md, "resourceVersion"));
    in->rv = rv && *rv ? strdup(rv) : NULL;
    in->synced = 1;
    in->fails = 0;
    w->dirty = 1;
    set_ok(w, in);
    json_decref(o);
    again_now(in); /* and watch */
}

static const char *status_hint(long status)
{
    switch (status) {
    case 401:
        return "the API server refused the credentials (401 Unauthorized): the token or client "
               "certificate is wrong or expired";
    case 403:
        return "forbidden (403): faultline's account needs get, list and watch on pods, "
               "services and endpointslices (examples/kubernetes/ has the ClusterRole)";
    case 404:
        return "not found (404): is the server a Kubernetes API server?";
    case 429:
        return "the API server asks to slow down (429); backing off";
    default:
        return status >= 500 ? "the API server failed (5xx); backing off" : "unexpected answer";
    }
}

static void transfer_done(struct fl_kube_watch *w, struct informer *in, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(in->easy, CURLINFO_RESPONSE_CODE, &status);
    enum state was = in->state;
    if (was == S_WATCH && status == 200)
        (void)watch_lines(w, in); /* a last line without its newline is dropped below */
    if (in->removed) {
        end_transfer(w, in);
        return;
    }
    if (status == 410 || in->gone) {
        /* Too old a resourceVersion (or continue token): list again. */
        free(in->rv);
        in->rv = NULL;
        free(in->cont);
        in->cont = NULL;
        json_decref(in->staging);
        in->staging = NULL;
        in->synced = 0;
        pthread_mutex_lock(&w->mu);
        w->st.relists++;
        pthread_mutex_unlock(&w->mu);
        fl_info("kubernetes: %s: resourceVersion expired (410 Gone); listing again", in->what);
        end_transfer(w, in);
        again_now(in);
        return;
    }
    if (rc != CURLE_OK && was == S_WATCH && status == 200 && !in->failed) {
        /* The stream was cut (the server restarted, a proxy timed out):
         * watch again from the last resourceVersion, at once unless it keeps
         * happening right away. */
        fl_info("kubernetes: %s: the watch was cut (%s); watching again", in->what,
                curl_easy_strerror(rc));
        end_transfer(w, in);
        if (now_ms() - in->started > 1000) {
            in->fails = 0;
            again_now(in);
        } else {
            backoff(w, in);
        }
        return;
    }
    if (rc != CURLE_OK) {
        char why[CURL_ERROR_SIZE + 128];
        if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE)
            snprintf(why, sizeof(why),
                     "the API server's certificate does not verify against the CA of %s (%s); "
                     "give the cluster's certificate-authority",
                     w->cfg.source, curl_easy_strerror(rc));
        else if (rc == CURLE_OPERATION_TIMEDOUT && was == S_WATCH)
            snprintf(why, sizeof(why), "the watch timed out");
        else
            snprintf(why, sizeof(why), "cannot reach the API server %s: %s; check the server "
                                       "address and that it is running",
                     w->cfg.server, curl_easy_strerror(rc));
        set_error(w, in, "%s", why);
        end_transfer(w, in);
        backoff(w, in);
        return;
    }
    if (status != 200) {
        char msg[300] = "";
        json_t *o = json_loadb(in->buf ? in->buf : "", in->len, 0, NULL);
        const char *m = json_string_value(json_object_get(o, "message"));
        if (m)
            snprintf(msg, sizeof(msg), " (%s)", m);
        set_error(w, in, "HTTP %ld from %s: %s%s", status, w->cfg.server,
                  in->kind == K_FP && status == 404
                      ? "not found (404): the FaultPolicy CRD is not installed; kubectl apply "
                        "-f examples/kubernetes/crd.yaml"
                  : in->kind == K_FP && status == 403
                      ? "forbidden (403): faultline's account needs get, list and watch on "
                        "faultpolicies.faultline.dev (examples/kubernetes/rbac.yaml)"
                      : status_hint(status),
                  msg);
        json_decref(o);
        end_transfer(w, in);
        backoff(w, in);
        return;
    }
    if (was == S_LIST) {
        list_done(w, in);
        end_transfer(w, in);
        return;
    }
    /* A watch that ended: at its timeout (rc OK), or stopped by an event. */
    end_transfer(w, in);
    if (in->failed) {
        backoff(w, in);
        return;
    }
    in->fails = 0;
    set_ok(w, in);
    again_now(in); /* watch again from the last resourceVersion */
}

/* ---- views ---- */

static int cmp_pod(const void *a, const void *b)
{
    const struct fl_kube_pod *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    return c ? c : strcmp(x->name, y->name);
}

/* Oldest first (creationTimestamp, then namespace/name): the order the set
 * composes them in, so the older policy wins an overlap. */
static int cmp_fp(const void *a, const void *b)
{
    const struct fl_kube_fp *x = a, *y = b;
    int c = strcmp(x->created, y->created);
    if (!c)
        c = strcmp(x->ns, y->ns);
    return c ? c : strcmp(x->name, y->name);
}

static struct informer *find(struct fl_kube_watch *w, enum kind kind, const char *key)
{
    for (struct informer *in = w->list; in; in = in->next)
        if (in->kind == kind && !in->removed && (!key || strcmp(in->key, key) == 0))
            return in;
    return NULL;
}

static struct fl_kube_view *build_view(struct fl_kube_watch *w)
{
    struct fl_kube_view *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    atomic_init(&v->refs, 1);
    v->seq = ++w->seq;
    v->node = strdup(w->node);
    struct informer *pods = find(w, K_PODS, NULL);
    size_t n = pods ? json_object_size(pods->store) : 0;
    v->pods = calloc(n + 1, sizeof(*v->pods));
    size_t n_svc = 0;
    for (struct informer *in = w->list; in; in = in->next)
        n_svc += in->kind == K_SVC && !in->removed;
    v->svcs = calloc(n_svc + 1, sizeof(*v->svcs));
    if (!v->node || !v->pods || !v->svcs)
        goto oom;
    v->pods_synced = pods && pods->synced;
    const char *k;
    json_t *o;
    if (pods) {
        json_object_foreach(pods->store, k, o)
        {
            if (fl_kube_pod_from_json(o, &v->pods[v->n_pods]) < 0)
                goto oom;
            v->n_pods++;
        }
    }
    qsort(v->pods, v->n_pods, sizeof(*v->pods), cmp_pod);
    struct informer *halt = find(w, K_HALT, NULL);
    if (halt) {
        v->halt_watched = 1;
        v->halt_synced = halt->synced;
        json_object_foreach(halt->store, k, o)
        {
            json_t *r = json_object_get(json_object_get(o, "data"), "reason");
            v->halted = 1;
            free(v->halt_reason);
            v->halt_reason = strdup(json_is_string(r) ? json_string_value(r) : "");
        }
    }
    struct informer *fps = find(w, K_FP, NULL);
    if (fps) {
        v->fps_watched = 1;
        v->fps_synced = fps->synced;
        v->fps = calloc(json_object_size(fps->store) + 1, sizeof(*v->fps));
        if (!v->fps)
            goto oom;
        json_object_foreach(fps->store, k, o)
        {
            if (fl_kube_fp_from_json(o, &v->fps[v->n_fps]) < 0)
                goto oom;
            v->n_fps++;
        }
        qsort(v->fps, v->n_fps, sizeof(*v->fps), cmp_fp);
    }
    for (struct informer *in = w->list; in; in = in->next) {
        if (in->kind != K_SVC || in->removed)
            continue;
        struct fl_kube_service *s = &v->svcs[v->n_svcs];
        const char *slash = strchr(in->key, '/');
        s->ns = strndup(in->key, (size_t)(slash - in->key));
        s->name = strdup(slash + 1);
        if (!s->ns || !s->name) {
            fl_kube_service_fini(s);
            goto oom;
        }
        v->n_svcs++;
        struct informer *eps = find(w, K_EPS, in->key);
        size_t ns_ = eps ? json_object_size(eps->store) : 0, i = 0;
        json_t **slices = calloc(ns_ + 1, sizeof(*slices));
        json_t *svc = NULL;
        if (!slices)
            goto oom;
        if (eps)
            json_object_foreach(eps->store, k, o) slices[i++] = o;
        json_object_foreach(in->store, k, o) svc = o;
        int e = fl_kube_service_from_json(svc, slices, i, s);
        free(slices);
        if (e < 0)
            goto oom;
    }
    return v;
oom:
    fl_kube_view_unref(v);
    return NULL;
}

static void post_view(struct fl_kube_watch *w)
{
    struct fl_kube_view *v = build_view(w);
    if (!v)
        return; /* out of memory: try with the next change */
    w->dirty = 0;
    pthread_mutex_lock(&w->mu);
    struct fl_kube_view *old = w->pending;
    w->pending = v;
    w->st.pods_synced = v->pods_synced;
    pthread_mutex_unlock(&w->mu);
    fl_kube_view_unref(old);
    uv_async_send(&w->async);
}

/* ---- the thread ---- */

/* Makes the informers match the wanted Services. */
static void apply_wanted(struct fl_kube_watch *w)
{
    pthread_mutex_lock(&w->mu);
    if (!w->want_changed) {
        pthread_mutex_unlock(&w->mu);
        return;
    }
    w->want_changed = 0;
    for (struct informer *in = w->list; in; in = in->next) {
        if (in->kind == K_PODS || in->kind == K_HALT || in->kind == K_FP)
            continue;
        int keep = 0;
        for (size_t i = 0; i < w->n_want && !keep; i++)
            keep = strcmp(w->want[i], in->key) == 0;
        if (!keep) {
            in->removed = 1;
            w->dirty = 1;
        }
    }
    for (size_t i = 0; i < w->n_want; i++) {
        if (find(w, K_SVC, w->want[i]))
            continue;
        char ns[256];
        const char *slash = strchr(w->want[i], '/');
        if (!slash)
            continue;
        snprintf(ns, sizeof(ns), "%.*s", (int)(slash - w->want[i]), w->want[i]);
        informer_new(w, K_SVC, ns, slash + 1);
        informer_new(w, K_EPS, ns, slash + 1);
        w->dirty = 1;
    }
    pthread_mutex_unlock(&w->mu);
    /* Drop the informers no target names any more. */
    for (struct informer **pp = &w->list; *pp;) {
        struct informer *in = *pp;
        if (in->removed) {
            *pp = in->next;
            informer_free(w, in);
        } else {
            pp = &in->next;
        }
    }
}

static void *thread_main(void *arg)
{
    struct fl_kube_watch *w = arg;
    /* The server ends a watch at timeoutSeconds; one still open and silent
     * (no event, no bookmark) well after that is dead: a grace of the timeout
     * itself, 15 s at most. */
    uint64_t t_ms = (uint64_t)w->timeout_s * 1000u;
    uint64_t silence = t_ms + (t_ms < SILENCE_GRACE_MAX_MS ? t_ms : SILENCE_GRACE_MAX_MS);
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (stop)
            break;
        apply_wanted(w);
        uint64_t now = now_ms();
        for (struct informer *in = w->list; in; in = in->next) {
            if (in->state == S_WAIT && now >= in->due_ms)
                start_request(w, in);
            else if (in->state == S_WATCH && now - in->last_io > silence) {
                set_error(w, in, "the watch was silent for %llu s (no event, no bookmark); "
                                 "starting it again",
                          (unsigned long long)(silence / 1000));
                end_transfer(w, in);
                again_now(in);
            }
        }
        int running;
        curl_multi_perform(w->multi, &running);
        /* Watch events as they stream in. */
        for (struct informer *in = w->list; in; in = in->next)
            if (in->state == S_WATCH && in->easy && in->len) {
                long status = 0;
                curl_easy_getinfo(in->easy, CURLINFO_RESPONSE_CODE, &status);
                if (status == 200 && watch_lines(w, in) < 0) {
                    /* An ERROR event (or 410): end the stream now. */
                    transfer_done(w, in, CURLE_OK);
                }
            }
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(w->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct informer *in = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&in);
            if (in && in->easy == m->easy_handle)
                transfer_done(w, in, m->data.result);
        }
        /* A burst of events makes one view, not one each: at most one view
         * per VIEW_MIN_MS (an event after a quiet spell goes at once). */
        int poll_ms = POLL_MS;
        if (w->dirty) {
            uint64_t t = now_ms();
            if (t - w->last_post >= VIEW_MIN_MS) {
                post_view(w);
                w->last_post = t;
            } else {
                poll_ms = (int)(VIEW_MIN_MS - (t - w->last_post));
            }
        }
        curl_multi_poll(w->multi, NULL, 0, poll_ms, NULL);
    }
    while (w->list) {
        struct informer *in = w->list;
        w->list = in->next;
        informer_free(w, in);
    }
    return NULL;
}

static void async_cb(uv_async_t *a)
{
    struct fl_kube_watch *w = a->data;
    pthread_mutex_lock(&w->mu);
    struct fl_kube_view *v = w->pending;
    w->pending = NULL;
    pthread_mutex_unlock(&w->mu);
    if (v)
        w->on_view(v, w->arg);
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int fl_kube_watch_start(struct fl_kube_watch **out, const struct fl_kube_watch_opts *o, char *err,
                        size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct fl_kube_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    pthread_once(&once, global_init);
    const struct fl_kube_config *c = o->cfg;
    if (fl_kube_config_dup(c, &w->cfg) < 0) {
        free(w);
        return -ENOMEM;
    }
    w->node = strdup(o->node);
    w->timeout_s = o->watch_timeout_s ? o->watch_timeout_s : 300;
    w->loop = o->loop;
    w->on_view = o->on_view;
    w->arg = o->arg;
    w->rng = (unsigned)now_ms() ^ (unsigned)getpid();
    pthread_mutex_init(&w->mu, NULL);
    snprintf(w->st.server, sizeof(w->st.server), "%s", c->server);
    snprintf(w->st.source, sizeof(w->st.source), "%s", c->source ? c->source : "");
    w->multi = curl_multi_init();
    if (!w->cfg.server || !w->node || !w->multi || !informer_new(w, K_PODS, NULL, NULL) ||
        (o->halt_namespace && !informer_new(w, K_HALT, o->halt_namespace, FL_KUBE_HALT_NAME)) ||
        (o->faultpolicies && !informer_new(w, K_FP, NULL, NULL))) {
        snprintf(err, errlen, "out of memory starting the Kubernetes watch");
        goto fail;
    }
    uv_async_init(w->loop, &w->async, async_cb);
    w->async.data = w;
    int e = pthread_create(&w->thread, NULL, thread_main, w);
    if (e) {
        snprintf(err, errlen, "cannot start the Kubernetes watch thread: %s", strerror(e));
        uv_close((uv_handle_t *)&w->async, NULL);
        goto fail; /* (leaks w to the async close: startup fails and the daemon exits) */
    }
    *out = w;
    return 0;
fail:
    curl_multi_cleanup(w->multi);
    return -ENOMEM;
}

void fl_kube_watch_services(struct fl_kube_watch *w, const char *const *keys, size_t n)
{
    char **want = calloc(n + 1, sizeof(*want));
    if (!want)
        return;
    for (size_t i = 0; i < n; i++)
        want[i] = strdup(keys[i]);
    pthread_mutex_lock(&w->mu);
    char **old = w->want;
    size_t n_old = w->n_want;
    w->want = want;
    w->n_want = n;
    w->want_changed = 1;
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < n_old; i++)
        free(old[i]);
    free(old);
    curl_multi_wakeup(w->multi);
}

void fl_kube_watch_status(struct fl_kube_watch *w, struct fl_kube_watch_status *st)
{
    pthread_mutex_lock(&w->mu);
    *st = w->st;
    pthread_mutex_unlock(&w->mu);
}

static void closed_cb(uv_handle_t *h)
{
    struct fl_kube_watch *w = h->data;
    fl_kube_view_unref(w->pending);
    for (size_t i = 0; i < w->n_want; i++)
        free(w->want[i]);
    free(w->want);
    free(w->node);
    fl_kube_config_free(&w->cfg);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void fl_kube_watch_stop(struct fl_kube_watch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_mutex_unlock(&w->mu);
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
    curl_multi_cleanup(w->multi);
    uv_close((uv_handle_t *)&w->async, closed_cb);
}
