#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "http1.h"
#include "log.h"
#include "worker.h"

#define FL_BACKLOG 4096

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static int sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return a->ss_family == b->ss_family && memcmp(a, b, sa_len(a)) == 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct fl_listener *l = server->data;
    if (status < 0) {
        fl_warn("listener '%s': accept failed: %s", l->name, uv_strerror(status));
        return;
    }
    int e = fl_conn_accept(l->w, server, &fl_http1_ops, l->name, (const struct sockaddr *)&l->upstream);
    if (e < 0 && e != UV_EAGAIN)
        fl_warn("listener '%s': cannot take a connection: %s%s", l->name, uv_strerror(e),
                e == UV_EMFILE ? " (raise the open-files limit: ulimit -n)" : "");
}

static void on_listener_closed(uv_handle_t *h)
{
    struct fl_listener *l = h->data;
    free(l->name);
    free(l);
}

static void listener_close(struct fl_listener *l)
{
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}

static int listener_open(struct fl_worker *w, const struct fl_listener_spec *spec, int i,
                         int reuseport, struct fl_listener **out, char *err, size_t errlen)
{
    const struct sockaddr_storage *addr = &spec->listen_addrs[i];
    char as[64];
    int one = 1, e, fd;
    struct fl_listener *l = calloc(1, sizeof(*l));

    fl_addr_str((const struct sockaddr *)addr, as, sizeof(as));
    if (!l)
        return -ENOMEM;
    l->w = w;
    l->name = strdup(spec->name);
    memcpy(&l->addr, addr, sizeof(*addr));
    memcpy(&l->upstream, &spec->upstream_addr, sizeof(spec->upstream_addr));
    fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || !l->name) {
        e = fd < 0 ? -errno : -ENOMEM;
        goto fail_fd;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)addr;
        /* Only the wildcard "*:P" form is dual-stack. */
        int v6only = !IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
    }
    if (bind(fd, (const struct sockaddr *)addr, sa_len(addr)) < 0) {
        e = -errno;
        snprintf(err, errlen,
                 "cannot listen on %s (listener '%s'): %s; %s", as, spec->name, strerror(-e),
                 e == -EADDRINUSE ? "another process holds that port: stop it or pick another "
                                    "'listen' port in the policy"
                 : e == -EADDRNOTAVAIL ? "that address is not on this host: use 127.0.0.1, ::1 or "
                                         "an address of a local interface"
                 : e == -EACCES ? "ports below 1024 need root or CAP_NET_BIND_SERVICE"
                                : "check the 'listen' address in the policy");
        close(fd);
        goto fail;
    }
    e = uv_tcp_init(w->loop, &l->tcp);
    if (e < 0) {
        close(fd);
        goto fail_fd;
    }
    l->tcp.data = l;
    e = uv_tcp_open(&l->tcp, fd);
    if (e == 0)
        e = uv_listen((uv_stream_t *)&l->tcp, FL_BACKLOG, on_connection);
    if (e < 0) {
        snprintf(err, errlen, "cannot listen on %s (listener '%s'): %s", as, spec->name,
                 uv_strerror(e));
        listener_close(l);
        return e;
    }
    *out = l;
    return 0;
fail_fd:
    snprintf(err, errlen, "cannot listen on %s (listener '%s'): %s", as, spec->name, strerror(-e));
fail:
    free(l->name);
    free(l);
    return e;
}

int fl_listener_apply(struct fl_worker *w, const struct fl_policy *p, int reuseport, char *err,
                       size_t errlen)
{
    struct fl_listener *added = NULL, *l, **pp;
    int e;

    for (l = w->listeners; l; l = l->next)
        l->seen = 0;
    for (size_t i = 0; i < p->n_listeners; i++) {
        const struct fl_listener_spec *spec = &p->listeners[i];
        for (int a = 0; a < spec->n_listen_addrs; a++) {
            /* A socket already bound to this address is kept, also when the
             * listener was renamed: binding it again would fail against
             * ourselves. */
            for (l = w->listeners; l; l = l->next)
                if (!l->seen && sa_equal(&l->addr, &spec->listen_addrs[a]))
                    break;
            if (l) {
                l->seen = 2; /* kept; name and upstream updated below once all opened */
                l->spec_index = i;
                continue;
            }
            e = listener_open(w, spec, a, reuseport, &l, err, errlen);
            if (e < 0)
                goto rollback;
            l->seen = 1;
            l->next = added;
            added = l;
        }
    }
    /* Commit: update kept ones, close removed ones, add new ones. */
    for (l = w->listeners; l; l = l->next) {
        if (l->seen != 2)
            continue;
        const struct fl_listener_spec *spec = &p->listeners[l->spec_index];
        memcpy(&l->upstream, &spec->upstream_addr, sizeof(l->upstream));
        if (strcmp(l->name, spec->name) != 0) {
            char *name = strdup(spec->name);
            if (name) {
                free(l->name);
                l->name = name;
            }
        }
    }
    pp = &w->listeners;
    while ((l = *pp)) {
        if (!l->seen) {
            *pp = l->next;
            listener_close(l);
        } else {
            pp = &l->next;
        }
    }
    while ((l = added)) {
        added = l->next;
        l->next = w->listeners;
        w->listeners = l;
    }
    return 0;
rollback:
    while ((l = added)) {
        added = l->next;
        listener_close(l);
    }
    return e;
}

void fl_listener_close_all(struct fl_worker *w)
{
    struct fl_listener *l;
    while ((l = w->listeners)) {
        w->listeners = l->next;
        listener_close(l);
    }
}
