/* netns: see netns.h. */
#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faultline.h"
#include "log.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

/* Runs fn(arg) on a short-lived thread that first joins the netns behind
 * netns_fd (-1: stays in ours), so the caller's own netns never changes. */
struct netns_job {
    int netns_fd;
    int (*fn)(void *arg);
    void *arg;
    int ret;
};

static void *netns_thread(void *p)
{
    struct netns_job *j = p;

    if (j->netns_fd >= 0 && setns(j->netns_fd, CLONE_NEWNET) != 0) {
        j->ret = -errno;
        return NULL;
    }
    j->ret = j->fn(j->arg);
    return NULL;
}

static int run_in_netns(int netns_fd, int (*fn)(void *), void *arg)
{
    struct netns_job j = {.netns_fd = netns_fd, .fn = fn, .arg = arg, .ret = 0};
    pthread_t t;
    int err;

    err = pthread_create(&t, NULL, netns_thread, &j);
    if (err)
        return -err;
    pthread_join(t, NULL);
    return j.ret;
}

static int cookie_job(void *arg)
{
    uint64_t *cookie = arg;
    socklen_t sl = sizeof(*cookie);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int ret = 0;

    if (fd < 0)
        return -errno;
    if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &sl) != 0)
        ret = -errno;
    close(fd);
    return ret;
}

int fl_netns_cookie(int netns_fd, uint64_t *cookie)
{
    if (netns_fd < 0)
        return cookie_job(cookie);
    return run_in_netns(netns_fd, cookie_job, cookie);
}

static int marked_socket(int family, int *out)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    int mark = FL_BYPASS_MARK;

    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
        int err = -errno;

        close(fd);
        return err;
    }
    *out = fd;
    return 0;
}

struct listen_job {
    uint16_t port;
    int fds[2];
};

static int listen_one(int family, uint16_t port, int *out)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    int one = 1, fd = -1, ret;

    ret = marked_socket(family, &fd);
    if (ret)
        return ret;
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        sin6->sin6_addr = in6addr_loopback;
        sl = sizeof(*sin6);
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
            goto fail;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, SOMAXCONN) != 0)
        goto fail;
    *out = fd;
    return 0;
fail:
    ret = -errno;
    close(fd);
    return ret;
}

static int listen_job_fn(void *arg)
{
    struct listen_job *j = arg;
    int ret;

    ret = listen_one(AF_INET, j->port, &j->fds[0]);
    if (ret)
        return ret;
    ret = listen_one(AF_INET6, j->port, &j->fds[1]);
    if (ret == -EADDRNOTAVAIL || ret == -EAFNOSUPPORT) {
        j->fds[1] = -1; /* IPv6 disabled in this netns: IPv4 only */
        ret = 0;
    }
    if (ret) {
        close(j->fds[0]);
        j->fds[0] = -1;
    }
    return ret;
}

int fl_netns_listen(int netns_fd, uint16_t port, int fds[2])
{
    struct listen_job j = {.port = port, .fds = {-1, -1}};
    int ret = run_in_netns(netns_fd, listen_job_fn, &j);

    if (ret)
        return ret;
    fds[0] = j.fds[0];
    fds[1] = j.fds[1];
    return 0;
}

struct socket_job {
    int family;
    int fd;
};

static int socket_job_fn(void *arg)
{
    struct socket_job *j = arg;

    return marked_socket(j->family, &j->fd);
}

int fl_netns_socket(int netns_fd, int family, int *fd)
{
    struct socket_job j = {.family = family, .fd = -1};
    int ret;

    if (family != AF_INET && family != AF_INET6)
        return -EAFNOSUPPORT;
    ret = run_in_netns(netns_fd, socket_job_fn, &j);
    if (ret)
        return ret;
    *fd = j.fd;
    return 0;
}

/* ---- switching the calling thread ---- */

static int home_fd = -1; /* the daemon's own netns; set once, never closed */

int fl_netns_home_init(void)
{
    if (home_fd >= 0)
        return 0;
    int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    home_fd = fd;
    return 0;
}

/* Runs fn(arg) with the calling thread inside the netns behind nsfd, then
 * puts the thread back in the daemon's netns. setns(CLONE_NEWNET) changes only
 * the calling thread. A thread that cannot get back would open every later
 * socket in a pod's netns: that is not survivable, so it aborts. */
static int run_here(int nsfd, int (*fn)(void *arg), void *arg)
{
    int ret;

    if (home_fd < 0)
        return -EBADF;
    if (setns(nsfd, CLONE_NEWNET) != 0)
        return -errno;
    ret = fn(arg);
    if (setns(home_fd, CLONE_NEWNET) != 0) {
        fl_error("cannot return to the daemon's network namespace: %s; aborting", strerror(errno));
        abort();
    }
    return ret;
}

int fl_netns_socket_here(int netns_fd, int family, int *fd)
{
    struct socket_job j = {.family = family, .fd = -1};
    int e;

    if (family != AF_INET && family != AF_INET6)
        return -EAFNOSUPPORT;
    e = run_here(netns_fd, socket_job_fn, &j);
    if (e < 0)
        return e;
    *fd = j.fd;
    return 0;
}

struct route_job {
    const struct sockaddr *dst;
    struct sockaddr_storage src;
};

static int route_job_fn(void *arg)
{
    struct route_job *j = arg;
    socklen_t sl = sizeof(j->src);
    socklen_t dl =
        j->dst->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int ret = 0, fd = socket(j->dst->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    if (connect(fd, j->dst, dl) != 0 || getsockname(fd, (struct sockaddr *)&j->src, &sl) != 0)
        ret = -errno;
    close(fd);
    return ret;
}

int fl_netns_route_source(int netns_fd, const struct sockaddr *dst, struct sockaddr_storage *src)
{
    struct route_job j = {.dst = dst};
    int e = run_here(netns_fd, route_job_fn, &j);

    if (e < 0)
        return e;
    *src = j.src;
    return 0;
}
