/* listener: explicit-mode listening sockets (listen -> upstream). */
#ifndef FL_LISTENER_H
#define FL_LISTENER_H

#include "compiler.h"

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "policy.h"

struct fl_worker;

struct fl_listener {
    struct fl_listener *next;
    struct fl_worker *w;
    uv_tcp_t tcp;
    char *name;
    struct sockaddr_storage addr;
    struct sockaddr_storage upstream;
    int seen; /* reconcile mark */
    size_t spec_index; /* its entry in the policy being applied */
};

/* Makes w's listeners match p's listeners: opens new ones, updates the upstream
 * of kept ones, closes removed ones. All or nothing: when a socket cannot be
 * opened, the ones opened by this call are closed again, the old set stays, err
 * holds one line saying what failed and what to do, and a negative errno is
 * returned. reuseport is set when several workers share the ports. */
int fl_listener_apply(struct fl_worker *w, const struct fl_policy *p, int reuseport, char *err,
                       size_t errlen) FL_WUR;

/* Closes every listener of w (graceful shutdown). */
void fl_listener_close_all(struct fl_worker *w);

#endif
