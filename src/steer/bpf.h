/* bpf: loads faultline's BPF programs (bpf/faultline.bpf.c) and keeps
 * the policy maps in step with the daemon's targets (docs/architecture.md, "The steering path"). The
 * cgroup and netns helpers transparent mode also needs are cgroup.h and
 * netns.h.
 *
 * Lifetime: every hook is a bpf_link owned by struct fl_bpf and never pinned,
 * so when the process exits or dies every hook detaches and traffic goes
 * direct. Nothing is written to bpffs.
 *
 * Threading: the control functions (open, attach, add/remove target, close)
 * are meant for one control thread; fl_bpf_lookup_orig_dst, fl_bpf_set_enabled,
 * fl_bpf_set_sockmap, fl_bpf_conn_no_accel and fl_bpf_stats may be called from
 * any thread. All are plain syscalls that do not block on the network.
 *
 * Sockets the daemon opens (listeners, upstream connections) must carry
 * SO_MARK FL_BYPASS_MARK (0x464c, bpf/faultline.h): connect hooks skip marked
 * sockets, and a listener counts as the proxy only when it is marked.
 * fl_netns_listen(), fl_netns_socket() and fl_netns_socket_here() set it.
 */
#ifndef FL_BPF_H
#define FL_BPF_H

#include "compiler.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>


struct fl_bpf;

/* Receives libbpf and loader diagnostics, the verifier log included (one call
 * per line or chunk, no trailing newline guaranteed). level: 0 debug, 1 info,
 * 2 warning. */
typedef void (*fl_bpf_log_cb)(int level, const char *msg, void *arg);

struct fl_bpf_opts {
    uint16_t proxy_port;       /* listener port inside each pod netns; 0 = 15001 */
    uint64_t daemon_cgid;      /* connects from this cgroup are never redirected; 0 = own cgroup */
    const char *daemon_cgroup; /* path of the daemon's cgroup v2 dir, where sockops is
                                * attached so the proxy's accepted sockets are paired;
                                * NULL = the cgroup of this process */
    int sockmap;               /* 1: accelerate app<->proxy bytes with sk_msg */
    int verbose;               /* forward libbpf debug output too */
    fl_bpf_log_cb log;         /* NULL = stderr */
    void *log_arg;
};

struct fl_bpf_stats {
    uint64_t redirected;    /* connections rewritten to the proxy */
    uint64_t fail_open;     /* matched a target but no proxy listener in the netns */
    uint64_t msg_redirects; /* sk_msg messages moved to the peer socket */
    uint64_t msg_pass;      /* sk_msg messages left to TCP */
    uint64_t socks_added;   /* sockets paired in the SOCKHASH */
    uint64_t msg_no_peer;   /* connections that fell back to TCP: peer not paired in time */
    uint64_t ingress;       /* connections sk_lookup handed to a proxy listener */
    uint64_t ingress_fail_open; /* matched an ingress target, no listener took it: direct */
};

/* Checks everything transparent mode needs, in order: root, kernel BTF, a
 * cgroup2 mount, the SOCKHASH/LPM/LRU map types, the sock_ops, sk_msg and
 * cgroup sock_addr program types and every helper the programs call. On the
 * first failure writes one sentence saying what is missing and what to do into
 * msg and returns a negative errno (the daemon exits 2). Returns 0 when all is
 * there. */
int fl_bpf_probe(char *msg, size_t len) FL_WUR;

/* Loads the programs, attaches sk_msg to the SOCKHASH (before any socket can
 * be inserted) and sockops to the daemon's cgroup. Redirection starts
 * enabled. On a load failure the verifier log goes to opts->log. On success
 * *out owns everything; free with fl_bpf_close(). Returns 0 or a negative
 * errno. */
int fl_bpf_open(struct fl_bpf **out, const struct fl_bpf_opts *opts) FL_WUR;

/* Detaches every hook and frees the maps. Accepts NULL. */
void fl_bpf_close(struct fl_bpf *b);

/* Attaches connect4/6, getpeername4/6 and sockops to the cgroup v2 directory
 * at path (and so to every cgroup below it). Attaching the same path twice is
 * a no-op. Returns 0 or a negative errno. */
int fl_bpf_attach_cgroup(struct fl_bpf *b, const char *path) FL_WUR;

/* Detaches what fl_bpf_attach_cgroup(path) attached. Returns 0 or -ENOENT. */
int fl_bpf_detach_cgroup(struct fl_bpf *b, const char *path) FL_WUR;

/* Selects connections from cgroup cgid (and every cgroup below it) to
 * addr/prefix (family AF_INET or AF_INET6, addr network order: 4 or 16 bytes)
 * and port (host order, 0 = any). target_id is handed back with the original
 * destination. The hooks must also be attached to the cgroup (or an ancestor)
 * for anything to happen. Adding an existing (cgid, cidr, port) replaces its
 * target_id. Returns 0 or a negative errno. */
int fl_bpf_add_target(struct fl_bpf *b, uint64_t cgid, int family, const void *addr, int prefix,
                      uint16_t port, uint32_t target_id) FL_WUR;
int fl_bpf_remove_target(struct fl_bpf *b, uint64_t cgid, int family, const void *addr, int prefix,
                         uint16_t port) FL_WUR;

struct fl_bpf_orig {
    struct sockaddr_storage dst; /* AF_INET for IPv4 and IPv4-mapped destinations */
    uint32_t target_id;
    int mapped; /* the app dialled ::ffff:a.b.c.d from an AF_INET6 socket */
};

/* For the proxy after accept(): client is the accepted socket's peer address
 * (getpeername), netns_cookie that of the netns the listener lives in. Fills
 * *orig with the destination the app asked for. Returns 0, or -ENOENT when the
 * connection was not redirected by faultline (or is already gone). */
int fl_bpf_lookup_orig_dst(struct fl_bpf *b, uint64_t netns_cookie, const struct sockaddr *client,
                           struct fl_bpf_orig *orig) FL_WUR;

/* Stops the sk_msg shortcut for one connection, for good (a rule that stalls
 * or throttles a direction needs TCP's flow control back). Bytes already
 * redirected stay ahead of later ones. Returns 0 or -ENOENT. */
int fl_bpf_conn_no_accel(struct fl_bpf *b, uint64_t netns_cookie,
                         const struct sockaddr *client) FL_WUR;

/* Master switch for redirection of new connections (the watchdog turns it off
 * when the event loop stalls). Turning it off also stops sk_msg acceleration of
 * live connections for good. */
void fl_bpf_set_enabled(struct fl_bpf *b, int on);

/* sk_msg acceleration for connections established from now on (--no-sockmap).
 * Turning it off also stops it on live connections, for good. */
void fl_bpf_set_sockmap(struct fl_bpf *b, int on);

/* ---- ingress (bpf/ingress.bpf.c) ----
 *
 * sk_lookup cannot tell which netns it runs in, so each netns with ingress
 * targets gets an instance of its own (a bpf_link on that netns, never
 * pinned), and the proxy's listeners there go into a SOCKHASH for it to hand
 * connections to. */

/* Attaches an sk_lookup instance to the netns behind netns_fd (cookie
 * netns_cookie) that hands matching connections to the listeners lfd4
 * (127.0.0.1, AF_INET) and lfd6 ([::1], AF_INET6; -1: none). The daemon's
 * own connections from inside that netns are let through. Attaching a netns
 * twice is a no-op. Returns 0 or a negative errno (nothing left attached). */
int fl_bpf_ingress_attach(struct fl_bpf *b, uint64_t netns_cookie, int netns_fd, int lfd4,
                          int lfd6) FL_WUR;

/* Detaches the netns's instance at once and forgets its listeners. No-op
 * when not attached. */
void fl_bpf_ingress_detach(struct fl_bpf *b, uint64_t netns_cookie);

/* Netns with an sk_lookup instance attached. */
unsigned fl_bpf_ingress_netns(const struct fl_bpf *b);

/* Selects the connections arriving in netns netns_cookie at port (host
 * order) from callers in addr/prefix (family AF_INET or AF_INET6; prefix 0
 * for every caller). The longest matching caller prefix decides the target.
 * Returns 0 or a negative errno. */
int fl_bpf_add_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port, int family,
                       const void *addr, int prefix, uint32_t target_id) FL_WUR;
int fl_bpf_remove_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port, int family,
                          const void *addr, int prefix) FL_WUR;

/* The target an ingress connection from caller to port in netns_cookie was
 * steered for (the kernel's own decision, looked up again). Returns 0 or
 * -ENOENT. Any thread. */
int fl_bpf_lookup_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port,
                          const struct sockaddr *caller, uint32_t *target_id) FL_WUR;

/* ---- existing: reset (bpf/reset.bpf.c) ---- */

/* Whether this kernel can destroy established sockets (the bpf_sock_destroy
 * kfunc, Linux 6.5). Needs no root: reads the kernel's BTF. Returns 1, or 0
 * with one sentence in why. FL_TEST_HIDE_SOCK_DESTROY=1 in the environment
 * makes it answer 0 (for tests of the refusal). */
int fl_bpf_probe_sock_destroy(char *why, size_t len);

/* 1 when fl_bpf_reset() can run (the probe passed and the iterator loaded). */
int fl_bpf_reset_available(const struct fl_bpf *b);

#define FL_BPF_RESET_MAX 64 /* selectors one run takes */

struct fl_bpf_reset {
    int ingress;           /* 1: connections to port from sel; 0: connections to sel */
    uint64_t cgid;         /* the pod's cgroup: only its sockets (and below) */
    uint64_t netns_cookie; /* its netns */
    int netns_fd;
    size_t n_sel;
    struct {
        int family; /* AF_INET or AF_INET6 */
        uint8_t addr[16];
        int prefix;
        uint16_t port; /* host order; egress: 0 = any; ingress: the pods' port */
    } sel[FL_BPF_RESET_MAX];
};

/* Called for each destroyed connection with its remote end and local port. */
typedef void (*fl_bpf_reset_cb)(void *arg, const struct sockaddr *peer, uint16_t local_port);

/* Destroys the established connections r selects inside its netns (the
 * calling thread joins the netns for a moment; blocking but short: call
 * off the event loop). Serialised internally; any thread. Returns how many
 * were destroyed, or a negative errno. */
int fl_bpf_reset(struct fl_bpf *b, const struct fl_bpf_reset *r, fl_bpf_reset_cb cb,
                 void *arg) FL_WUR;

/* Sums the per-CPU counters. Returns 0 or a negative errno. */
int fl_bpf_stats(struct fl_bpf *b, struct fl_bpf_stats *st) FL_WUR;

#endif
