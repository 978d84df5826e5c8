/* faultline: the daemon's command line. `run` starts the proxy, `validate`
 * checks a policy file. Everything else lives in the modules. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "log.h"
#include "policy.h"
#include "transparent.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: faultline run -f POLICY.yaml [--admin PATH] [--fault-log PATH|-] [--workers N]\n"
            "                     [--metrics-listen ADDR:PORT] [--toxiproxy-listen ADDR:PORT]\n"
            "                     [--header-timeout DURATION]\n"
            "                     [--idle-timeout DURATION] [--upstream-timeout DURATION]\n"
            "                     [--connect-timeout DURATION] [--no-sockmap] [-v]\n"
            "                     [--kubernetes [--kubeconfig PATH] [--node NAME]\n"
            "                      [--kube-watch-timeout DURATION]]\n"
            "       faultline validate -f POLICY.yaml\n"
            "       faultline version\n"
            "\n"
            "run       start the fault-injection proxy with the policy (SIGHUP reloads it,\n"
            "          SIGTERM/SIGINT stop gracefully, SIGUSR1 halts injection, SIGUSR2 resumes;\n"
            "          a file named HALT beside the admin socket halts while it exists;\n"
            "          faultctl talks to the admin socket; --metrics-listen also serves\n"
            "          /metrics over TCP for Prometheus; --toxiproxy-listen serves Toxiproxy's\n"
            "          HTTP API (its clients drive faultline unchanged); a client that starts\n"
            "          a request head must finish it within --header-timeout (default 30s, else 408), and a\n"
            "          keep-alive connection idle for --idle-timeout (default 15m) is closed; an\n"
            "          upstream must accept within --connect-timeout (default 5s, else 502) and\n"
            "          start answering a request within --upstream-timeout (default 60s, else\n"
            "          504, or UNAVAILABLE for gRPC); --kubernetes selects pods by labels and\n"
            "          destinations by Service through the API server: in a pod with its\n"
            "          service account, else --kubeconfig PATH; the node is --node or\n"
            "          $NODE_NAME; each watch asks the server to end it after\n"
            "          --kube-watch-timeout (default 5m) and is started again)\n"
            "validate  check a policy; prints every error as file:line:col: message\n");
}

static int cmd_validate(int argc, char **argv)
{
    const char *file = NULL;
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'f': file = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!file || optind != argc) {
        fprintf(stderr, "faultline validate: give the policy file with -f FILE\n");
        return 2;
    }
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};
    int e = fl_policy_load(file, &p, &errs);
    for (size_t i = 0; i < errs.n; i++)
        printf("%s\n", errs.msgs[i]);
    fl_policy_errors_free(&errs);
    if (e < 0)
        return 1;
    /* What this host cannot do is refused here too. */
    char herr[512];
    if (fl_transparent_check_reset(p, NULL, herr, sizeof(herr)) < 0) {
        printf("%s\n", herr);
        fl_policy_unref(p);
        return 1;
    }
    printf("%s: ok: policy '%s', %zu listener%s, %zu target%s, %zu rule%s\n", file, p->name,
           p->n_listeners, p->n_listeners == 1 ? "" : "s", p->n_targets,
           p->n_targets == 1 ? "" : "s", p->n_rules, p->n_rules == 1 ? "" : "s");
    fl_policy_unref(p);
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    struct fl_daemon_opts o = {.workers = 1};
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"admin", required_argument, NULL, 'a'},
                                         {"fault-log", required_argument, NULL, 'l'},
                                         {"metrics-listen", required_argument, NULL, 'm'},
                                         {"toxiproxy-listen", required_argument, NULL, 'X'},
                                         {"workers", required_argument, NULL, 'w'},
                                         {"no-sockmap", no_argument, NULL, 'S'},
                                         {"header-timeout", required_argument, NULL, 'T'},
                                         {"idle-timeout", required_argument, NULL, 'I'},
                                         {"upstream-timeout", required_argument, NULL, 'U'},
                                         {"connect-timeout", required_argument, NULL, 'C'},
                                         {"kubernetes", no_argument, NULL, 'K'},
                                         {"kubeconfig", required_argument, NULL, 'k'},
                                         {"node", required_argument, NULL, 'N'},
                                         {"kube-watch-timeout", required_argument, NULL, 'W'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    char *end;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "f:a:l:w:vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'f': o.policy_path = optarg; break;
        case 'a': o.admin_path = optarg; break;
        case 'l': o.fault_log = optarg; break;
        case 'm': o.metrics_listen = optarg; break;
        case 'X': o.toxiproxy_listen = optarg; break;
        case 'w':
            o.workers = (int)strtol(optarg, &end, 10);
            if (*end || o.workers < 1 || o.workers > 64) {
                fprintf(stderr, "faultline run: --workers takes a number from 1 to 64\n");
                return 2;
            }
            break;
        case 'S': o.no_sockmap = 1; break;
        case 'K': o.kubernetes = 1; break;
        case 'k': o.kubeconfig = optarg; break;
        case 'N': o.node = optarg; break;
        case 'W': {
            uint64_t ms;
            if (fl_values_parse_duration(optarg, &ms) < 0 || ms < 1000 || ms > 3600000) {
                fprintf(stderr, "faultline run: --kube-watch-timeout takes a duration from 1s "
                                "to 1h; got '%s'\n",
                        optarg);
                return 2;
            }
            o.kube_watch_timeout_s = (unsigned)(ms / 1000);
            break;
        }
        case 'T':
        case 'I':
        case 'U':
        case 'C': {
            uint64_t ms;
            const char *name = ch == 'T'   ? "header-timeout"
                               : ch == 'I' ? "idle-timeout"
                               : ch == 'U' ? "upstream-timeout"
                                           : "connect-timeout";
            if (fl_values_parse_duration(optarg, &ms) < 0 || ms == 0) {
                fprintf(stderr, "faultline run: --%s takes a duration above zero such as 500ms, 30s "
                                "or 15m; got '%s'\n",
                        name, optarg);
                return 2;
            }
            *(ch == 'T'   ? &o.header_timeout_ms
              : ch == 'I' ? &o.idle_timeout_ms
              : ch == 'U' ? &o.upstream_timeout_ms
                          : &o.connect_timeout_ms) = ms;
            break;
        }
        case 'v': fl_log_min_level = FL_LOG_DEBUG; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if ((o.kubeconfig || o.node || o.kube_watch_timeout_s) && !o.kubernetes) {
        fprintf(stderr, "faultline run: --kubeconfig, --node and --kube-watch-timeout go with "
                        "--kubernetes\n");
        return 2;
    }
    if ((!o.policy_path && !o.kubernetes && !o.toxiproxy_listen) || optind != argc) {
        fprintf(stderr, "faultline run: give the policy file with -f FILE (see policies/ for "
                        "examples), --kubernetes to run the cluster's FaultPolicies, or "
                        "--toxiproxy-listen ADDR:PORT to be driven by Toxiproxy clients\n");
        return 2;
    }
    return fl_daemon_run(&o);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "validate") == 0)
        return cmd_validate(argc - 1, argv + 1);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("faultline %s\n", FL_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "faultline: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
