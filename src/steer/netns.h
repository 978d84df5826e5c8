/* netns: sockets inside other network namespaces (docs/architecture.md, "The steering path").
 *
 * Two ways in. The fl_netns_* calls without "here" run their work on a
 * short-lived helper thread that joins the netns, so the caller's own netns
 * never changes: for setup work off the hot path (a pod's listeners, its
 * cookie). The "here" calls switch the calling thread into the netns and back
 * with two setns(2) calls, which is cheap enough for each proxied connection;
 * fl_netns_home_init() must have recorded the daemon's own netns first.
 *
 * Every socket made here carries SO_MARK FL_BYPASS_MARK (bpf/faultline.h), so
 * faultline's own connections are never redirected.
 */
#ifndef FL_NETNS_H
#define FL_NETNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "compiler.h"

/* The cookie of the netns behind netns_fd (-1 = the caller's), as
 * bpf_get_netns_cookie sees it. Returns 0 or a negative errno. */
int fl_netns_cookie(int netns_fd, uint64_t *cookie) FL_WUR;

/* Opens faultline's listeners inside the netns behind netns_fd: fds[0] on
 * 127.0.0.1:port, fds[1] on [::1]:port (IPV6_V6ONLY). Both are non-blocking,
 * close-on-exec, SO_REUSEADDR, SO_REUSEPORT (one per worker) and carry the
 * bypass mark. The calling thread's netns is not touched (a helper thread does
 * the setns). fds[1] is -1 when the netns has no IPv6 loopback. Returns 0 or a
 * negative errno (nothing left open). */
int fl_netns_listen(int netns_fd, uint16_t port, int fds[2]) FL_WUR;

/* Creates a non-blocking, close-on-exec TCP socket of family inside the netns
 * behind netns_fd, carrying the bypass mark: the upstream side of a proxied
 * connection, so servers see the pod's own address. Costs a thread start.
 * Returns 0 or a negative errno. */
int fl_netns_socket(int netns_fd, int family, int *fd) FL_WUR;

/* Records the calling thread's netns as the daemon's own, which the "here"
 * calls return to. Idempotent; the descriptor is kept for the process's life
 * (a connection still closing must never find it reused). Returns 0 or a
 * negative errno. */
int fl_netns_home_init(void) FL_WUR;

/* Creates a non-blocking, close-on-exec TCP socket of family inside the netns
 * behind netns_fd, carrying the bypass mark, by switching the calling thread's
 * netns there and back (cheaper than fl_netns_socket's thread). Any thread;
 * fits fl_conn_socket_fn, so transparent mode hands it to the proxy with each
 * connection. Returns 0 or a negative errno. */
int fl_netns_socket_here(int netns_fd, int family, int *fd) FL_WUR;

/* The source address the kernel of the netns behind netns_fd picks toward dst
 * (port 0), found with a UDP connect that sends nothing, on the calling
 * thread. Returns 0 or a negative errno. */
int fl_netns_route_source(int netns_fd, const struct sockaddr *dst,
                          struct sockaddr_storage *src) FL_WUR;

#endif
