/* daemon: the faultline process's lifecycle. Loads the policy, starts the
 * workers (workers.h), the runtime (runtime.h), the admin API (admin.h) and
 * transparent mode (transparent.h), then turns the main loop until SIGTERM or
 * SIGINT: SIGHUP re-reads the policy file, SIGUSR1/SIGUSR2 halt and resume,
 * and shutdown drains in-flight requests for up to FL_DRAIN_MS. */
#ifndef FL_DAEMON_H
#define FL_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#define FL_DRAIN_MS 10000 /* graceful shutdown waits this long for in-flight requests */

struct fl_daemon_opts {
    const char *policy_path;
    const char *admin_path;     /* NULL: default per fl_paths_admin_socket() */
    const char *fault_log;      /* NULL or "-": stdout */
    const char *metrics_listen; /* NULL, or ADDR:PORT serving only /metrics */
    const char *toxiproxy_listen; /* NULL, or ADDR:PORT serving Toxiproxy's API */
    int workers;
    int no_sockmap;
    uint64_t header_timeout_ms; /* 0: the default */
    uint64_t idle_timeout_ms;   /* 0: the default */
    uint64_t upstream_timeout_ms; /* 0: the default */
    uint64_t connect_timeout_ms;  /* 0: the default */
    int kubernetes;               /* --kubernetes */
    const char *kubeconfig;       /* --kubeconfig, or NULL: in-cluster */
    const char *node;             /* --node, or NULL: $NODE_NAME */
    unsigned kube_watch_timeout_s; /* --kube-watch-timeout; 0: 300 s */
};

/* Runs the daemon until SIGTERM/SIGINT. Returns the process exit status:
 * 0 after a clean shutdown, 1 when the policy or a listener cannot be set up,
 * 2 when transparent-mode requirements are missing. */
int fl_daemon_run(const struct fl_daemon_opts *o);

#endif
