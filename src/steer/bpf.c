/* bpf: see bpf.h. */
#include "bpf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "faultline.h"

#ifdef FL_HAVE_BPF

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/mman.h>

#include <bpf/btf.h>

#include "faultline.skel.h"
#include "ingress.skel.h"
#include "reset.skel.h"

_Static_assert(sizeof(struct fl_target_key) == 40, "fl_target_key layout");
_Static_assert(sizeof(struct fl_target_val) == 8, "fl_target_val layout");
_Static_assert(sizeof(struct fl_orig) == 40, "fl_orig layout");
_Static_assert(sizeof(struct fl_conn_key) == 32, "fl_conn_key layout");
_Static_assert(sizeof(struct fl_sock_key) == 48, "fl_sock_key layout");
_Static_assert(FL_LPM_FIXED_BITS == 128, "LPM fixed part");
_Static_assert(sizeof(struct fl_ingress_key) == 40, "fl_ingress_key layout");
_Static_assert(sizeof(struct fl_ingress_val) == 8, "fl_ingress_val layout");
_Static_assert(sizeof(struct fl_lsn_key) == 16, "fl_lsn_key layout");
_Static_assert(sizeof(struct fl_reset_sel) == 40, "fl_reset_sel layout");
_Static_assert(sizeof(struct fl_reset_cfg) == 24 + 40 * FL_RESET_MAX_SEL, "fl_reset_cfg layout");
_Static_assert(FL_RESET_MAX_SEL == FL_BPF_RESET_MAX, "reset selectors");

/* The programs attached to each pod cgroup. */
enum { FL_CG_CONNECT4, FL_CG_CONNECT6, FL_CG_GETPEER4, FL_CG_GETPEER6, FL_CG_SOCKOPS, FL_CG__N };

struct fl_cg_attach {
    char *path;
    struct bpf_link *links[FL_CG__N];
};

/* One sk_lookup instance, attached to one netns. */
struct fl_ingress_inst {
    uint64_t cookie;
    struct fl_ingress *skel;
    struct bpf_link *link;
};

struct fl_bpf {
    struct faultline *skel;
    struct bpf_link *daemon_sockops;
    int msg_attached;
    struct fl_cg_attach *cgs;
    size_t n_cgs;
    uint16_t port;
    struct fl_ingress_inst *ins;
    size_t n_ins;
    /* existing: reset */
    struct fl_reset *reset;
    struct bpf_link *reset_link;
    pthread_mutex_t reset_mu;
};

/* libbpf's print hook is process-global and has no user pointer. */
static fl_bpf_log_cb g_log;
static void *g_log_arg;
static int g_verbose;

static void logf_(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (g_log)
        g_log(level, buf, g_log_arg);
    else
        fprintf(stderr, "faultline bpf: %s\n", buf);
}

/* Forwards libbpf output one line per call; the verifier log arrives as one
 * large string. */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    int lvl = level == LIBBPF_WARN ? 2 : level == LIBBPF_INFO ? 1 : 0;
    char *text = NULL, *line, *save = NULL;

    if (level == LIBBPF_DEBUG && !g_verbose)
        return 0;
    if (vasprintf(&text, fmt, ap) < 0)
        return 0;
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        logf_(lvl, "%s", line);
    free(text);
    return 0;
}

/* ---- probes ---- */

/* libbpf 1.1's libbpf_probe_bpf_prog_type/_helper load cgroup sock_addr probes
 * without an expected attach type; the kernel refuses those with EINVAL before
 * the verifier runs, which libbpf reads as "supported". So the probes here
 * load a minimal program with the attach type the real one uses.
 *
 * Returns 1 when a program of type/attach calling helper (0: none) is
 * accepted, 0 when the kernel lacks the type or the helper for it, or a
 * negative errno for anything else. */
static int probe_prog(enum bpf_prog_type type, enum bpf_attach_type attach, int helper)
{
    struct bpf_insn insns[3] = {0};
    char log[4096] = "";
    LIBBPF_OPTS(bpf_prog_load_opts, o, .expected_attach_type = attach, .log_buf = log,
                .log_size = sizeof(log), .log_level = 1);
    int n = 0, fd;

    if (helper) {
        insns[n].code = BPF_JMP | BPF_CALL;
        insns[n++].imm = helper;
    }
    insns[n].code = BPF_ALU64 | BPF_MOV | BPF_K;
    insns[n].dst_reg = BPF_REG_0;
    insns[n++].imm = 1;
    insns[n++].code = BPF_JMP | BPF_EXIT;
    fd = bpf_prog_load(type, NULL, "Apache-2.0", insns, (size_t)n, &o);
    if (fd >= 0) {
        close(fd);
        return 1;
    }
    if (!helper)
        return errno == EINVAL || errno == EOPNOTSUPP ? 0 : -errno;
    /* The helper was rejected as such, or the load failed later (on the
     * arguments this probe does not set up), which means it is there. */
    if (strstr(log, "unknown func") || strstr(log, "cannot use helper") ||
        strstr(log, "invalid func") || strstr(log, "GPL-restricted"))
        return 0;
    return errno == EACCES || errno == EINVAL ? 1 : -errno;
}

struct prog_probe {
    enum bpf_prog_type type;
    enum bpf_attach_type attach;
    int helper;
    const char *what;
    const char *since;
};

#define PROG(t, a, what, since)                                                                    \
    {                                                                                              \
        t, a, 0, what, since                                                                       \
    }
#define HELPER(t, a, h, since)                                                                     \
    {                                                                                              \
        t, a, BPF_FUNC_##h, "bpf_" #h, since                                                       \
    }

static const struct prog_probe prog_probes[] = {
    PROG(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, "cgroup/connect4", "4.17"),
    PROG(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_CONNECT, "cgroup/connect6", "4.17"),
    PROG(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_GETPEERNAME, "cgroup/getpeername4",
         "5.8"),
    PROG(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_GETPEERNAME, "cgroup/getpeername6",
         "5.8"),
    PROG(BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS, "sock_ops", "4.13"),
    PROG(BPF_PROG_TYPE_SK_MSG, BPF_SK_MSG_VERDICT, "sk_msg", "4.17"),
    HELPER(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, get_current_cgroup_id, "4.18"),
    HELPER(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, get_current_ancestor_cgroup_id,
           "5.7"),
    HELPER(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, sk_lookup_tcp, "5.2"),
    HELPER(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, sk_release, "5.2"),
    HELPER(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, get_socket_cookie, "5.7"),
    HELPER(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_GETPEERNAME, get_socket_cookie, "5.8"),
    HELPER(BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS, get_socket_cookie, "4.20"),
    HELPER(BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS, get_netns_cookie, "5.15"),
    HELPER(BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS, sock_hash_update, "4.18"),
    HELPER(BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS, sock_ops_cb_flags_set, "4.16"),
    HELPER(BPF_PROG_TYPE_SK_MSG, BPF_SK_MSG_VERDICT, msg_redirect_hash, "4.18"),
    HELPER(BPF_PROG_TYPE_SK_MSG, BPF_SK_MSG_VERDICT, get_netns_cookie, "5.15"),
};

int fl_bpf_probe(char *msg, size_t len)
{
    static const struct {
        enum bpf_map_type type;
        const char *name;
        const char *since;
    } maps[] = {
        {BPF_MAP_TYPE_SOCKHASH, "SOCKHASH", "4.18"},
        {BPF_MAP_TYPE_LPM_TRIE, "LPM_TRIE", "4.11"},
        {BPF_MAP_TYPE_LRU_HASH, "LRU_HASH", "4.10"},
        {BPF_MAP_TYPE_PERCPU_ARRAY, "PERCPU_ARRAY", "4.6"},
    };
    char mnt[PATH_MAX];
    int r;

    if (geteuid() != 0) {
        snprintf(msg, len,
                 "transparent mode needs root (BPF programs, cgroup attach, setns): "
                 "run faultline as root, or use explicit mode (listeners:)");
        return -EPERM;
    }
    if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
        snprintf(msg, len,
                 "/sys/kernel/btf/vmlinux is missing: the kernel was built without "
                 "BTF (CONFIG_DEBUG_INFO_BTF=y; Linux 5.15 or later is needed)");
        return -ENOENT;
    }
    if (fl_cgroup_mountpoint(mnt, sizeof(mnt)) != 0) {
        snprintf(msg, len,
                 "no cgroup v2 mount in /proc/self/mountinfo: transparent mode needs "
                 "cgroup v2 (hybrid hosts mount it at /sys/fs/cgroup/unified: "
                 "mount -t cgroup2 none /sys/fs/cgroup/unified)");
        return -ENOENT;
    }
    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
        r = libbpf_probe_bpf_map_type(maps[i].type, NULL);
        if (r != 1) {
            snprintf(msg, len, "the kernel lacks BPF map type %s (Linux %s or later needed)%s%s",
                     maps[i].name, maps[i].since, r < 0 ? ": " : "", r < 0 ? strerror(-r) : "");
            return r < 0 ? r : -EOPNOTSUPP;
        }
    }
    for (size_t i = 0; i < sizeof(prog_probes) / sizeof(prog_probes[0]); i++) {
        const struct prog_probe *p = &prog_probes[i];
        const char *in = p->helper ? libbpf_bpf_attach_type_str(p->attach) : NULL;

        r = probe_prog(p->type, p->attach, p->helper);
        if (r == 1)
            continue;
        if (p->helper)
            snprintf(msg, len,
                     "the kernel lacks BPF helper %s in %s programs (Linux %s or "
                     "later needed)%s%s",
                     p->what, in ? in : "?", p->since, r < 0 ? ": " : "",
                     r < 0 ? strerror(-r) : "");
        else
            snprintf(msg, len, "the kernel lacks %s BPF programs (Linux %s or later needed)%s%s",
                     p->what, p->since, r < 0 ? ": " : "", r < 0 ? strerror(-r) : "");
        return r < 0 ? r : -EOPNOTSUPP;
    }
    if (len)
        msg[0] = '\0';
    return 0;
}

/* ---- the objects that share the main object's maps ---- */

#define REUSE(dst, src)                                                                            \
    (bpf_map__reuse_fd((dst)->maps.fl_stats, bpf_map__fd((src)->maps.fl_stats)) ||                 \
     bpf_map__reuse_fd((dst)->maps.fl_switch, bpf_map__fd((src)->maps.fl_switch)) ||               \
     bpf_map__reuse_fd((dst)->maps.fl_ingress, bpf_map__fd((src)->maps.fl_ingress)) ||             \
     bpf_map__reuse_fd((dst)->maps.fl_lsn, bpf_map__fd((src)->maps.fl_lsn)) ||                     \
     bpf_map__reuse_fd((dst)->maps.fl_ingress_ns, bpf_map__fd((src)->maps.fl_ingress_ns)) ||       \
     bpf_map__reuse_fd((dst)->maps.fl_own, bpf_map__fd((src)->maps.fl_own)))

int fl_bpf_probe_sock_destroy(char *why, size_t len)
{
    const char *hide = getenv("FL_TEST_HIDE_SOCK_DESTROY");
    struct btf *btf;
    int found;

    if (hide && strcmp(hide, "1") == 0) {
        snprintf(why, len, "this kernel lacks the bpf_sock_destroy kfunc (Linux 6.5 or later "
                           "needed; hidden by FL_TEST_HIDE_SOCK_DESTROY)");
        return 0;
    }
    btf = btf__load_vmlinux_btf();
    if (!btf) {
        snprintf(why, len, "cannot read the kernel's BTF (/sys/kernel/btf/vmlinux): %s",
                 strerror(errno));
        return 0;
    }
    found = btf__find_by_name_kind(btf, "bpf_sock_destroy", BTF_KIND_FUNC) >= 0;
    btf__free(btf);
    if (!found)
        snprintf(why, len, "this kernel lacks the bpf_sock_destroy kfunc (Linux 6.5 or later "
                           "needed), so established connections cannot be taken over");
    else if (len)
        why[0] = '\0';
    return found;
}

/* Loads the TCP iterator of existing: reset when the kernel has the kfunc;
 * without it the daemon runs on and refuses existing: reset. */
static void reset_open(struct fl_bpf *b)
{
    char why[256];
    int e;

    if (!fl_bpf_probe_sock_destroy(why, sizeof(why))) {
        logf_(1, "existing: reset is not available: %s", why);
        return;
    }
    b->reset = fl_reset__open();
    if (!b->reset) {
        logf_(2, "existing: reset is not available: opening its BPF object: %s", strerror(errno));
        return;
    }
    b->reset->rodata->fl_bypass_mark = FL_BYPASS_MARK;
    if (REUSE(b->reset, b->skel) || (e = fl_reset__load(b->reset)) != 0) {
        logf_(2, "existing: reset is not available: loading its TCP iterator failed (log above)");
        goto fail;
    }
    b->reset_link = bpf_program__attach_iter(b->reset->progs.fl_reset_iter, NULL);
    if (!b->reset_link) {
        logf_(2, "existing: reset is not available: attaching its TCP iterator: %s",
              strerror(errno));
        goto fail;
    }
    return;
fail:
    fl_reset__destroy(b->reset);
    b->reset = NULL;
}

int fl_bpf_reset_available(const struct fl_bpf *b)
{
    return b && b->reset_link != NULL;
}

/* ---- open / close ---- */

void fl_bpf_close(struct fl_bpf *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_cgs; i++) {
        for (int k = 0; k < FL_CG__N; k++)
            bpf_link__destroy(b->cgs[i].links[k]);
        free(b->cgs[i].path);
    }
    free(b->cgs);
    for (size_t i = 0; i < b->n_ins; i++) {
        bpf_link__destroy(b->ins[i].link);
        fl_ingress__destroy(b->ins[i].skel);
    }
    free(b->ins);
    bpf_link__destroy(b->reset_link);
    fl_reset__destroy(b->reset);
    pthread_mutex_destroy(&b->reset_mu);
    bpf_link__destroy(b->daemon_sockops);
    if (b->msg_attached)
        (void)bpf_prog_detach2(bpf_program__fd(b->skel->progs.fl_sk_msg),
                               bpf_map__fd(b->skel->maps.fl_socks), BPF_SK_MSG_VERDICT);
    faultline__destroy(b->skel);
    free(b);
}

static struct bpf_link *attach_cgroup_prog(struct bpf_program *p, int cg_fd, const char *path)
{
    struct bpf_link *l = bpf_program__attach_cgroup(p, cg_fd);

    if (!l)
        logf_(2, "attaching %s to cgroup %s: %s", bpf_program__name(p), path, strerror(errno));
    return l;
}

int fl_bpf_open(struct fl_bpf **out, const struct fl_bpf_opts *opts)
{
    char cgpath[PATH_MAX], mnt[PATH_MAX];
    struct fl_bpf *b;
    uint64_t cgid = opts->daemon_cgid;
    const char *dcg = opts->daemon_cgroup;
    int ret, cg_fd = -1;

    g_log = opts->log;
    g_log_arg = opts->log_arg;
    g_verbose = opts->verbose;
    libbpf_set_print(libbpf_print);

    b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->port = opts->proxy_port ? opts->proxy_port : FL_DEFAULT_PORT;
    pthread_mutex_init(&b->reset_mu, NULL);
    if (!dcg) {
        ret = fl_cgroup_of_pid(0, cgpath, sizeof(cgpath));
        if (ret) {
            logf_(2, "finding the daemon's own cgroup v2: %s", strerror(-ret));
            goto fail;
        }
        dcg = cgpath;
        if (fl_cgroup_mountpoint(mnt, sizeof(mnt)) == 0 && strcmp(cgpath, mnt) == 0)
            logf_(1, "the daemon runs in the cgroup v2 root: its sockops program sees every "
                     "TCP connection on the host; run it in a cgroup of its own");
    }
    if (!cgid) {
        ret = fl_cgroup_id(dcg, &cgid);
        if (ret) {
            logf_(2, "cgroup id of %s: %s", dcg, strerror(-ret));
            goto fail;
        }
    }

    b->skel = faultline__open();
    if (!b->skel) {
        ret = -errno;
        logf_(2, "opening the BPF object: %s", strerror(-ret));
        goto fail;
    }
    b->skel->rodata->fl_daemon_cgid = cgid;
    b->skel->rodata->fl_bypass_mark = FL_BYPASS_MARK;
    b->skel->rodata->fl_proxy_port = b->port;
    ret = faultline__load(b->skel);
    if (ret) {
        /* libbpf has already passed the verifier log to libbpf_print. */
        logf_(2, "loading the BPF programs failed: %s (verifier log above)", strerror(-ret));
        goto fail;
    }

    /* sk_msg must be on the SOCKHASH before sockops can insert anything:
     * sockets inserted earlier would never run it. */
    ret = bpf_prog_attach(bpf_program__fd(b->skel->progs.fl_sk_msg),
                          bpf_map__fd(b->skel->maps.fl_socks), BPF_SK_MSG_VERDICT, 0);
    if (ret) {
        ret = -errno;
        logf_(2, "attaching sk_msg to the SOCKHASH: %s", strerror(-ret));
        goto fail;
    }
    b->msg_attached = 1;

    /* The proxy's accepted sockets belong to the daemon's cgroup; sockops there
     * pairs them with the app's socket. */
    cg_fd = open(dcg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cg_fd < 0) {
        ret = -errno;
        logf_(2, "opening the daemon's cgroup %s: %s", dcg, strerror(-ret));
        goto fail;
    }
    b->daemon_sockops = attach_cgroup_prog(b->skel->progs.fl_sockops, cg_fd, dcg);
    if (!b->daemon_sockops) {
        ret = -errno;
        goto fail;
    }
    close(cg_fd);
    cg_fd = -1;

    reset_open(b);
    __atomic_store_n(&b->skel->bss->fl_sockmap, opts->sockmap ? 1 : 0, __ATOMIC_RELAXED);
    fl_bpf_set_enabled(b, 1);
    *out = b;
    return 0;
fail:
    if (cg_fd >= 0)
        close(cg_fd);
    fl_bpf_close(b);
    return ret < 0 ? ret : -EINVAL;
}

/* ---- cgroups ---- */

static struct fl_cg_attach *find_cg(struct fl_bpf *b, const char *path)
{
    for (size_t i = 0; i < b->n_cgs; i++)
        if (strcmp(b->cgs[i].path, path) == 0)
            return &b->cgs[i];
    return NULL;
}

int fl_bpf_attach_cgroup(struct fl_bpf *b, const char *path)
{
    struct bpf_program *progs[FL_CG__N] = {
        [FL_CG_CONNECT4] = b->skel->progs.fl_connect4,
        [FL_CG_CONNECT6] = b->skel->progs.fl_connect6,
        [FL_CG_GETPEER4] = b->skel->progs.fl_getpeername4,
        [FL_CG_GETPEER6] = b->skel->progs.fl_getpeername6,
        [FL_CG_SOCKOPS] = b->skel->progs.fl_sockops,
    };
    struct fl_cg_attach a = {0}, *grown;
    int fd, ret = 0;

    if (find_cg(b, path))
        return 0;
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    a.path = strdup(path);
    if (!a.path) {
        ret = -ENOMEM;
        goto fail;
    }
    grown = realloc(b->cgs, (b->n_cgs + 1) * sizeof(*b->cgs));
    if (!grown) {
        ret = -ENOMEM;
        goto fail;
    }
    b->cgs = grown;
    /* sockops first: a connect redirected before sockops is attached would
     * never be paired or cleaned up. */
    for (int k = FL_CG__N - 1; k >= 0; k--) {
        a.links[k] = attach_cgroup_prog(progs[k], fd, path);
        if (!a.links[k]) {
            ret = -errno;
            goto fail;
        }
    }
    close(fd);
    b->cgs[b->n_cgs++] = a;
    return 0;
fail:
    for (int k = 0; k < FL_CG__N; k++)
        bpf_link__destroy(a.links[k]);
    free(a.path);
    close(fd);
    return ret;
}

int fl_bpf_detach_cgroup(struct fl_bpf *b, const char *path)
{
    struct fl_cg_attach *a = find_cg(b, path);

    if (!a)
        return -ENOENT;
    for (int k = 0; k < FL_CG__N; k++)
        bpf_link__destroy(a->links[k]);
    free(a->path);
    *a = b->cgs[--b->n_cgs];
    return 0;
}

/* ---- targets ---- */

static int target_key(struct fl_target_key *k, uint64_t cgid, int family, const void *addr,
                      int prefix, uint16_t port)
{
    memset(k, 0, sizeof(*k));
    if (family == AF_INET) {
        if (prefix < 0 || prefix > 32)
            return -EINVAL;
        memcpy(k->addr, addr, 4);
        k->family = FL_AF_INET;
    } else if (family == AF_INET6) {
        if (prefix < 0 || prefix > 128)
            return -EINVAL;
        memcpy(k->addr, addr, 16);
        k->family = FL_AF_INET6;
    } else {
        return -EAFNOSUPPORT;
    }
    /* Host bits must be zero or an exact lookup would miss them. */
    for (int bit = prefix; bit < 128; bit++)
        k->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    k->prefixlen = FL_LPM_FIXED_BITS + (uint32_t)prefix;
    k->cgid = cgid;
    k->port = htons(port);
    return 0;
}

int fl_bpf_add_target(struct fl_bpf *b, uint64_t cgid, int family, const void *addr, int prefix,
                      uint16_t port, uint32_t target_id)
{
    struct fl_target_key k;
    struct fl_target_val v = {.target_id = target_id};
    int pods = bpf_map__fd(b->skel->maps.fl_pods);
    int targets = bpf_map__fd(b->skel->maps.fl_targets);
    uint32_t n = 0;
    int ret, existed;

    ret = target_key(&k, cgid, family, addr, prefix, port);
    if (ret)
        return ret;
    {
        struct fl_target_val old;

        existed = bpf_map_lookup_elem(targets, &k, &old) == 0;
    }
    /* Pod first, so the lookup never finds a target whose pod is unknown. */
    if (!existed) {
        (void)bpf_map_lookup_elem(pods, &cgid, &n);
        n++;
        if (bpf_map_update_elem(pods, &cgid, &n, BPF_ANY) != 0)
            return -errno;
    }
    if (bpf_map_update_elem(targets, &k, &v, BPF_ANY) != 0) {
        ret = -errno;
        if (!existed) {
            if (--n == 0)
                (void)bpf_map_delete_elem(pods, &cgid);
            else
                (void)bpf_map_update_elem(pods, &cgid, &n, BPF_ANY);
        }
        return ret;
    }
    return 0;
}

int fl_bpf_remove_target(struct fl_bpf *b, uint64_t cgid, int family, const void *addr, int prefix,
                         uint16_t port)
{
    struct fl_target_key k;
    int pods = bpf_map__fd(b->skel->maps.fl_pods);
    uint32_t n = 0;
    int ret;

    ret = target_key(&k, cgid, family, addr, prefix, port);
    if (ret)
        return ret;
    if (bpf_map_delete_elem(bpf_map__fd(b->skel->maps.fl_targets), &k) != 0)
        return -errno;
    if (bpf_map_lookup_elem(pods, &cgid, &n) == 0) {
        if (n <= 1)
            (void)bpf_map_delete_elem(pods, &cgid);
        else {
            n--;
            (void)bpf_map_update_elem(pods, &cgid, &n, BPF_ANY);
        }
    }
    return 0;
}

/* ---- per-connection records ---- */

static int conn_key(struct fl_conn_key *k, uint64_t netns_cookie, const struct sockaddr *client)
{
    memset(k, 0, sizeof(*k));
    k->netns = netns_cookie;
    if (client->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)client;

        k->addr[10] = 0xff;
        k->addr[11] = 0xff;
        memcpy(&k->addr[12], &sin->sin_addr, 4);
        k->port = ntohs(sin->sin_port);
    } else if (client->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)client;

        memcpy(k->addr, &sin6->sin6_addr, 16);
        k->port = ntohs(sin6->sin6_port);
    } else {
        return -EAFNOSUPPORT;
    }
    return 0;
}

int fl_bpf_lookup_orig_dst(struct fl_bpf *b, uint64_t netns_cookie, const struct sockaddr *client,
                           struct fl_bpf_orig *orig)
{
    struct fl_conn_key k;
    struct fl_orig o;
    int ret = conn_key(&k, netns_cookie, client);

    if (ret)
        return ret;
    if (bpf_map_lookup_elem(bpf_map__fd(b->skel->maps.fl_conns), &k, &o) != 0)
        return errno == ENOENT ? -ENOENT : -errno;
    memset(orig, 0, sizeof(*orig));
    orig->target_id = o.target_id;
    orig->mapped = !!(o.flags & FL_ORIG_MAPPED);
    if (o.family == FL_AF_INET || orig->mapped) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&orig->dst;

        sin->sin_family = AF_INET;
        sin->sin_port = o.port;
        memcpy(&sin->sin_addr, orig->mapped ? &o.addr[12] : o.addr, 4);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&orig->dst;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = o.port;
        memcpy(&sin6->sin6_addr, o.addr, 16);
    }
    return 0;
}

int fl_bpf_conn_no_accel(struct fl_bpf *b, uint64_t netns_cookie, const struct sockaddr *client)
{
    struct fl_conn_key k;
    struct fl_orig o;
    int fd = bpf_map__fd(b->skel->maps.fl_conns);
    int ret = conn_key(&k, netns_cookie, client);

    if (ret)
        return ret;
    if (bpf_map_lookup_elem(fd, &k, &o) != 0)
        return -errno;
    if (o.flags & FL_CONN_NOACCEL)
        return 0;
    o.flags |= FL_CONN_NOACCEL;
    /* BPF_EXIST: never resurrect a record the close hook just removed. The
     * whole value is rewritten, but only flags can differ. */
    if (bpf_map_update_elem(fd, &k, &o, BPF_EXIST) != 0)
        return -errno;
    return 0;
}

/* ---- ingress ---- */

static struct fl_ingress_inst *find_ins(const struct fl_bpf *b, uint64_t cookie)
{
    for (size_t i = 0; i < b->n_ins; i++)
        if (b->ins[i].cookie == cookie)
            return &b->ins[i];
    return NULL;
}

static void lsn_forget(struct fl_bpf *b, uint64_t cookie)
{
    int lsn = bpf_map__fd(b->skel->maps.fl_lsn);
    struct fl_lsn_key k = {.netns = cookie};

    k.family = FL_AF_INET;
    (void)bpf_map_delete_elem(lsn, &k);
    k.family = FL_AF_INET6;
    (void)bpf_map_delete_elem(lsn, &k);
    (void)bpf_map_delete_elem(bpf_map__fd(b->skel->maps.fl_ingress_ns), &cookie);
}

int fl_bpf_ingress_attach(struct fl_bpf *b, uint64_t netns_cookie, int netns_fd, int lfd4,
                          int lfd6)
{
    struct fl_ingress_inst in = {.cookie = netns_cookie}, *grown;
    int lsn = bpf_map__fd(b->skel->maps.fl_lsn);
    uint32_t one = 1;
    int ret;

    if (find_ins(b, netns_cookie))
        return 0;
    grown = realloc(b->ins, (b->n_ins + 1) * sizeof(*b->ins));
    if (!grown)
        return -ENOMEM;
    b->ins = grown;
    /* Listeners and the netns's mark first: once the program runs, a
     * connection it matches finds the proxy, and the proxy's own connections
     * are recorded. */
    for (int i = 0; i < 2; i++) {
        struct fl_lsn_key k = {.netns = netns_cookie, .family = i ? FL_AF_INET6 : FL_AF_INET};
        uint64_t fd = (uint64_t)(i ? lfd6 : lfd4);
        if ((i ? lfd6 : lfd4) < 0)
            continue;
        if (bpf_map_update_elem(lsn, &k, &fd, BPF_ANY) != 0) {
            ret = -errno;
            logf_(2, "ingress: adding the proxy listener of netns %llu to the SOCKHASH: %s",
                  (unsigned long long)netns_cookie, strerror(-ret));
            goto fail;
        }
    }
    if (bpf_map_update_elem(bpf_map__fd(b->skel->maps.fl_ingress_ns), &netns_cookie, &one,
                            BPF_ANY) != 0) {
        ret = -errno;
        goto fail;
    }
    in.skel = fl_ingress__open();
    if (!in.skel) {
        ret = -errno;
        goto fail;
    }
    in.skel->rodata->fl_ns = netns_cookie;
    if (REUSE(in.skel, b->skel)) {
        ret = -errno;
        goto fail;
    }
    if ((ret = fl_ingress__load(in.skel)) != 0) {
        logf_(2, "ingress: loading the sk_lookup program failed: %s (verifier log above)",
              strerror(-ret));
        goto fail;
    }
    in.link = bpf_program__attach_netns(in.skel->progs.fl_ingress_lookup, netns_fd);
    if (!in.link) {
        ret = -errno;
        logf_(2, "ingress: attaching sk_lookup to netns %llu: %s", (unsigned long long)netns_cookie,
              strerror(-ret));
        goto fail;
    }
    b->ins[b->n_ins++] = in;
    return 0;
fail:
    fl_ingress__destroy(in.skel);
    lsn_forget(b, netns_cookie);
    return ret < 0 ? ret : -EINVAL;
}

void fl_bpf_ingress_detach(struct fl_bpf *b, uint64_t netns_cookie)
{
    struct fl_ingress_inst *in = find_ins(b, netns_cookie);

    if (!in)
        return;
    bpf_link__destroy(in->link);
    fl_ingress__destroy(in->skel);
    *in = b->ins[--b->n_ins];
    lsn_forget(b, netns_cookie);
}

unsigned fl_bpf_ingress_netns(const struct fl_bpf *b)
{
    return b ? (unsigned)b->n_ins : 0;
}

static int ingress_key(struct fl_ingress_key *k, uint64_t cookie, uint16_t port, int family,
                       const void *addr, int prefix)
{
    struct fl_target_key t;
    int ret = target_key(&t, 0, family, addr, prefix, 0);

    if (ret)
        return ret;
    memset(k, 0, sizeof(*k));
    k->prefixlen = t.prefixlen;
    k->netns = cookie;
    k->port = port;
    k->family = t.family;
    memcpy(k->addr, t.addr, 16);
    return 0;
}

int fl_bpf_add_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port, int family,
                       const void *addr, int prefix, uint32_t target_id)
{
    struct fl_ingress_key k;
    struct fl_ingress_val v = {.target_id = target_id};
    int ret = ingress_key(&k, netns_cookie, port, family, addr, prefix);

    if (ret)
        return ret;
    if (bpf_map_update_elem(bpf_map__fd(b->skel->maps.fl_ingress), &k, &v, BPF_ANY) != 0)
        return -errno;
    return 0;
}

int fl_bpf_remove_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port, int family,
                          const void *addr, int prefix)
{
    struct fl_ingress_key k;
    int ret = ingress_key(&k, netns_cookie, port, family, addr, prefix);

    if (ret)
        return ret;
    if (bpf_map_delete_elem(bpf_map__fd(b->skel->maps.fl_ingress), &k) != 0)
        return -errno;
    return 0;
}

int fl_bpf_lookup_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port,
                          const struct sockaddr *caller, uint32_t *target_id)
{
    struct fl_ingress_key k;
    struct fl_ingress_val v;
    int ret;

    if (caller->sa_family == AF_INET)
        ret = ingress_key(&k, netns_cookie, port, AF_INET,
                          &((const struct sockaddr_in *)caller)->sin_addr, 32);
    else if (caller->sa_family == AF_INET6)
        ret = ingress_key(&k, netns_cookie, port, AF_INET6,
                          &((const struct sockaddr_in6 *)caller)->sin6_addr, 128);
    else
        return -EAFNOSUPPORT;
    if (ret)
        return ret;
    if (bpf_map_lookup_elem(bpf_map__fd(b->skel->maps.fl_ingress), &k, &v) != 0)
        return -ENOENT;
    *target_id = v.target_id;
    return 0;
}

/* ---- existing: reset ---- */

static void reset_sel(struct fl_reset_sel *o, int family, const uint8_t *addr, int prefix,
                      uint16_t port)
{
    uint8_t mask[16] = {0};

    memset(o, 0, sizeof(*o));
    o->family = family == AF_INET6 ? FL_AF_INET6 : FL_AF_INET;
    o->port = port;
    for (int bit = 0; bit < prefix && bit < 128; bit++)
        mask[bit / 8] |= (uint8_t)(0x80u >> (bit % 8));
    memcpy(o->mask, mask, 16);
    memcpy(o->addr, addr, family == AF_INET6 ? 16 : 4);
    for (int i = 0; i < 4; i++)
        o->addr[i] &= o->mask[i];
}

/* One line of the iterator's output: "family lport rport a0 a1 a2 a3". */
static int reset_line(const char *line, struct sockaddr_storage *peer, uint16_t *lport)
{
    unsigned fam, lp, rp, a[4];

    if (sscanf(line, "%u %u %u %x %x %x %x", &fam, &lp, &rp, &a[0], &a[1], &a[2], &a[3]) != 7)
        return -1;
    memset(peer, 0, sizeof(*peer));
    if (fam == FL_AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)peer;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)rp);
        memcpy(&sin->sin_addr, &a[0], 4);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)peer;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)rp);
        memcpy(&sin6->sin6_addr, a, 16);
    }
    *lport = (uint16_t)lp;
    return 0;
}

int fl_bpf_reset(struct fl_bpf *b, const struct fl_bpf_reset *r, fl_bpf_reset_cb cb, void *arg)
{
    struct fl_reset_cfg *cfg;
    uint32_t zero = 0;
    char buf[8192], line[160];
    size_t ll = 0;
    int self = -1, it = -1, ret = 0, count = 0;
    ssize_t n;

    if (!fl_bpf_reset_available(b))
        return -EOPNOTSUPP;
    if (r->n_sel == 0)
        return 0;
    if (r->n_sel > FL_RESET_MAX_SEL)
        return -E2BIG;
    cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return -ENOMEM;
    cfg->cgid = r->cgid;
    cfg->netns = r->netns_cookie;
    cfg->mode = r->ingress ? FL_RESET_INGRESS : FL_RESET_EGRESS;
    cfg->n_sel = (uint32_t)r->n_sel;
    for (size_t i = 0; i < r->n_sel; i++)
        reset_sel(&cfg->sel[i], r->sel[i].family, r->sel[i].addr, r->sel[i].prefix,
                  r->sel[i].port);
    pthread_mutex_lock(&b->reset_mu);
    if (bpf_map_update_elem(bpf_map__fd(b->reset->maps.fl_reset_cfg), &zero, cfg, BPF_ANY) != 0) {
        ret = -errno;
        goto out;
    }
    /* A TCP iterator walks the netns it is created in. */
    self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) {
        ret = -errno;
        goto out;
    }
    if (setns(r->netns_fd, CLONE_NEWNET) != 0) {
        ret = -errno;
        goto out;
    }
    it = bpf_iter_create(bpf_link__fd(b->reset_link));
    if (it < 0)
        ret = -errno;
    if (setns(self, CLONE_NEWNET) != 0) {
        /* Cannot happen with a descriptor of our own netns; the thread is
         * in the pod's netns now, which must not go unnoticed. */
        logf_(2, "existing: reset: cannot return to the daemon's netns: %s", strerror(errno));
        abort();
    }
    if (it < 0)
        goto out;
    while ((n = read(it, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (ll < sizeof(line) - 1)
                    line[ll++] = buf[i];
                continue;
            }
            line[ll] = '\0';
            ll = 0;
            struct sockaddr_storage peer;
            uint16_t lport;
            if (reset_line(line, &peer, &lport) == 0) {
                count++;
                if (cb)
                    cb(arg, (struct sockaddr *)&peer, lport);
            }
        }
    }
    if (n < 0)
        ret = -errno;
out:
    /* The next run starts from an empty selection whatever happens. */
    memset(cfg, 0, sizeof(*cfg));
    (void)bpf_map_update_elem(bpf_map__fd(b->reset->maps.fl_reset_cfg), &zero, cfg, BPF_ANY);
    pthread_mutex_unlock(&b->reset_mu);
    if (it >= 0)
        close(it);
    if (self >= 0)
        close(self);
    free(cfg);
    return ret < 0 && count == 0 ? ret : count;
}

void fl_bpf_set_enabled(struct fl_bpf *b, int on)
{
    uint32_t zero = 0, v = on ? 1 : 0;

    __atomic_store_n(&b->skel->bss->fl_enabled, v, __ATOMIC_RELAXED);
    /* The ingress programs' switch: a map write, fine from the watchdog. */
    (void)bpf_map_update_elem(bpf_map__fd(b->skel->maps.fl_switch), &zero, &v, BPF_ANY);
}

void fl_bpf_set_sockmap(struct fl_bpf *b, int on)
{
    __atomic_store_n(&b->skel->bss->fl_sockmap, on ? 1 : 0, __ATOMIC_RELAXED);
}

int fl_bpf_stats(struct fl_bpf *b, struct fl_bpf_stats *st)
{
    int ncpu = libbpf_num_possible_cpus();
    int fd = bpf_map__fd(b->skel->maps.fl_stats);
    uint64_t sum[FL_STAT__COUNT] = {0};
    uint64_t *vals;

    if (ncpu <= 0)
        return ncpu < 0 ? ncpu : -EINVAL;
    vals = calloc((size_t)ncpu, sizeof(*vals));
    if (!vals)
        return -ENOMEM;
    for (uint32_t i = 0; i < FL_STAT__COUNT; i++) {
        if (bpf_map_lookup_elem(fd, &i, vals) != 0) {
            int err = -errno;

            free(vals);
            return err;
        }
        for (int c = 0; c < ncpu; c++)
            sum[i] += vals[c];
    }
    free(vals);
    st->redirected = sum[FL_STAT_REDIRECTED];
    st->fail_open = sum[FL_STAT_FAIL_OPEN];
    st->msg_redirects = sum[FL_STAT_MSG_REDIRECT];
    st->msg_pass = sum[FL_STAT_MSG_PASS];
    st->socks_added = sum[FL_STAT_SOCK_ADDED];
    st->msg_no_peer = sum[FL_STAT_MSG_NO_PEER];
    st->ingress = sum[FL_STAT_INGRESS];
    st->ingress_fail_open = sum[FL_STAT_INGRESS_FAIL_OPEN];
    return 0;
}

#else /* !FL_HAVE_BPF: built without transparent mode */

struct fl_bpf {
    int unused;
};

int fl_bpf_probe(char *msg, size_t len)
{
    snprintf(msg, len,
             "this faultline was built without BPF support (FL_BPF=OFF): rebuild with "
             "bpftool and clang installed, or use explicit mode (listeners:)");
    return -EOPNOTSUPP;
}

int fl_bpf_open(struct fl_bpf **out, const struct fl_bpf_opts *opts)
{
    (void)out;
    (void)opts;
    return -EOPNOTSUPP;
}

void fl_bpf_close(struct fl_bpf *b)
{
    (void)b;
}

int fl_bpf_attach_cgroup(struct fl_bpf *b, const char *path)
{
    (void)b;
    (void)path;
    return -EOPNOTSUPP;
}

int fl_bpf_detach_cgroup(struct fl_bpf *b, const char *path)
{
    (void)b;
    (void)path;
    return -EOPNOTSUPP;
}

int fl_bpf_add_target(struct fl_bpf *b, uint64_t cgid, int family, const void *addr, int prefix,
                      uint16_t port, uint32_t target_id)
{
    (void)b, (void)cgid, (void)family, (void)addr, (void)prefix, (void)port, (void)target_id;
    return -EOPNOTSUPP;
}

int fl_bpf_remove_target(struct fl_bpf *b, uint64_t cgid, int family, const void *addr, int prefix,
                         uint16_t port)
{
    (void)b, (void)cgid, (void)family, (void)addr, (void)prefix, (void)port;
    return -EOPNOTSUPP;
}

int fl_bpf_lookup_orig_dst(struct fl_bpf *b, uint64_t netns_cookie, const struct sockaddr *client,
                           struct fl_bpf_orig *orig)
{
    (void)b, (void)netns_cookie, (void)client, (void)orig;
    return -EOPNOTSUPP;
}

int fl_bpf_conn_no_accel(struct fl_bpf *b, uint64_t netns_cookie, const struct sockaddr *client)
{
    (void)b, (void)netns_cookie, (void)client;
    return -EOPNOTSUPP;
}

void fl_bpf_set_enabled(struct fl_bpf *b, int on)
{
    (void)b, (void)on;
}

void fl_bpf_set_sockmap(struct fl_bpf *b, int on)
{
    (void)b, (void)on;
}

int fl_bpf_stats(struct fl_bpf *b, struct fl_bpf_stats *st)
{
    (void)b, (void)st;
    return -EOPNOTSUPP;
}

int fl_bpf_ingress_attach(struct fl_bpf *b, uint64_t netns_cookie, int netns_fd, int lfd4,
                          int lfd6)
{
    (void)b, (void)netns_cookie, (void)netns_fd, (void)lfd4, (void)lfd6;
    return -EOPNOTSUPP;
}

void fl_bpf_ingress_detach(struct fl_bpf *b, uint64_t netns_cookie)
{
    (void)b, (void)netns_cookie;
}

unsigned fl_bpf_ingress_netns(const struct fl_bpf *b)
{
    (void)b;
    return 0;
}

int fl_bpf_add_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port, int family,
                       const void *addr, int prefix, uint32_t target_id)
{
    (void)b, (void)netns_cookie, (void)port, (void)family, (void)addr, (void)prefix,
        (void)target_id;
    return -EOPNOTSUPP;
}

int fl_bpf_remove_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port, int family,
                          const void *addr, int prefix)
{
    (void)b, (void)netns_cookie, (void)port, (void)family, (void)addr, (void)prefix;
    return -EOPNOTSUPP;
}

int fl_bpf_lookup_ingress(struct fl_bpf *b, uint64_t netns_cookie, uint16_t port,
                          const struct sockaddr *caller, uint32_t *target_id)
{
    (void)b, (void)netns_cookie, (void)port, (void)caller, (void)target_id;
    return -EOPNOTSUPP;
}

int fl_bpf_probe_sock_destroy(char *why, size_t len)
{
    snprintf(why, len, "this faultline was built without BPF support (FL_BPF=OFF)");
    return 0;
}

int fl_bpf_reset_available(const struct fl_bpf *b)
{
    (void)b;
    return 0;
}

int fl_bpf_reset(struct fl_bpf *b, const struct fl_bpf_reset *r, fl_bpf_reset_cb cb, void *arg)
{
    (void)b, (void)r, (void)cb, (void)arg;
    return -EOPNOTSUPP;
}

#endif
