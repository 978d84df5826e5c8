/* faultline.bpf.c: steers selected pods' outbound TCP connections into the
 * faultline proxy listening inside the pod's own netns (docs/architecture.md, "The steering path").
 *
 *   cgroup/connect4, connect6  rewrite a matching connect() to the proxy
 *   sockops                    pair app and proxy sockets in a SOCKHASH,
 *                              publish the original destination to the proxy
 *   sk_msg                     move app<->proxy bytes between the pair
 *   cgroup/getpeername4, 6     the app sees its original destination
 *
 * The ingress side (sk_lookup) is ingress.bpf.c, taking over established
 * connections (existing: reset) reset.bpf.c; the maps they share with this
 * object are in shared_maps.h.
 *
 * Everything fails open: any missing state or failed map update leaves the
 * connection (or message) on its normal path.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "faultline.h"
#include "shared_maps.h"

/* Set by the loader before load (rodata). */
const volatile __u64 fl_daemon_cgid = 0;
const volatile __u32 fl_bypass_mark = FL_BYPASS_MARK;
const volatile __u16 fl_proxy_port = FL_DEFAULT_PORT;

/* Switched at run time through the mmapped .bss. Zero (off) until the loader
 * turns them on, so a half-initialised daemon redirects nothing. */
volatile __u32 fl_enabled;
volatile __u32 fl_sockmap;

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, FL_MAX_TARGETS);
    __type(key, struct fl_target_key);
    __type(value, struct fl_target_val);
} fl_targets SEC(".maps");

/* Selected pod cgroups (value: number of targets naming it). Checked before
 * the LPM trie so unselected ancestors cost one hash lookup. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FL_MAX_PODS);
    __type(key, __u64);
    __type(value, __u32);
} fl_pods SEC(".maps");

/* Original destination by the app socket's cookie: written at connect, read by
 * sockops and getpeername. LRU because a connect that never completes leaves
 * no close event to clean up after. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FL_MAX_CONNS);
    __type(key, __u64);
    __type(value, struct fl_orig);
} fl_orig_by_cookie SEC(".maps");

/* Original destination by (netns, client addr, client port): what the proxy
 * sees with getpeername() on the accepted socket. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FL_MAX_CONNS);
    __type(key, struct fl_conn_key);
    __type(value, struct fl_orig);
} fl_conns SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 2 * FL_MAX_CONNS);
    __type(key, struct fl_sock_key);
    __type(value, __u32);
} fl_socks SEC(".maps");

#define stat_inc fl_stat_inc

/* sock_ops and sk_msg expose remote_port as the network-order port shifted
 * into the upper 16 bits (little-endian kernels); accept either placement. */
static __always_inline __u16 remote_port_host(__u32 raw)
{
    __u16 be = (raw >> 16) ? (__u16)(raw >> 16) : (__u16)raw;

    return bpf_ntohs(be);
}

static __always_inline void set_mapped4(__u8 out[16], __u32 ip4)
{
    __u32 *w = (__u32 *)out;

    w[0] = 0;
    w[1] = 0;
    w[2] = bpf_htonl(0xffff);
    w[3] = ip4;
}

static __always_inline void set_addr6(__u8 out[16], __u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
    __u32 *w = (__u32 *)out;

    w[0] = a0;
    w[1] = a1;
    w[2] = a2;
    w[3] = a3;
}

static __always_inline int is_loopback4(__u32 ip4)
{
    return ip4 == 0 || (bpf_ntohl(ip4) >> 24) == 127;
}

/* Common skip conditions of connect4/6. Returns 1 when the connect must be
 * left alone. */
static __always_inline int connect_skip(struct bpf_sock_addr *ctx)
{
    struct bpf_sock *sk;

    if (!fl_enabled)
        return 1;
    if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
        return 1;
    sk = ctx->sk;
    if (!sk || sk->mark == fl_bypass_mark)
        return 1;
    if (fl_daemon_cgid && bpf_get_current_cgroup_id() == fl_daemon_cgid)
        return 1;
    return 0;
}

/* Looks (caller's cgroup or an ancestor, addr, port) up in the policy. A pod
 * selects every cgroup below it; when pods nest, the deepest one that matches
 * wins. addr is network order, IPv4 in the first word. */
static __always_inline int match_target(__u8 family, const __u32 addr[4], __u16 port_be,
                                        struct fl_target_val *out)
{
    struct fl_target_key k = {};
    struct fl_target_val *v;
    __u32 *w = (__u32 *)k.addr;
    int found = 0;

    k.family = family;
    w[0] = addr[0];
    w[1] = addr[1];
    w[2] = addr[2];
    w[3] = addr[3];
    for (int lvl = 0; lvl < FL_MAX_CGROUP_DEPTH; lvl++) {
        __u64 id = bpf_get_current_ancestor_cgroup_id(lvl);

        if (!id)
            break;
        if (!bpf_map_lookup_elem(&fl_pods, &id))
            continue;
        k.cgid = id;
        k.prefixlen = FL_LPM_FIXED_BITS + 128;
        k.port = port_be;
        v = bpf_map_lookup_elem(&fl_targets, &k);
        if (!v) {
            k.port = 0;
            v = bpf_map_lookup_elem(&fl_targets, &k);
        }
        if (v) {
            *out = *v;
            found = 1;
        }
    }
    return found;
}

/* Is faultline's listener present in the caller's netns right now? Checked on
 * every connect: a connection is never sent to a port where no proxy listens.
 * The listener must carry the bypass mark, so an unrelated program that
 * happens to listen on the proxy port is not mistaken for the proxy. */
static __always_inline int proxy_listening(struct bpf_sock_addr *ctx, int v6)
{
    struct bpf_sock_tuple t = {};
    struct bpf_sock *sk;
    int ok;

    if (v6) {
        t.ipv6.daddr[3] = bpf_htonl(1);
        t.ipv6.dport = bpf_htons(fl_proxy_port);
        sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
    } else {
        t.ipv4.daddr = bpf_htonl(0x7f000001);
        t.ipv4.dport = bpf_htons(fl_proxy_port);
        sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
    }
    if (!sk)
        return 0;
    ok = sk->state == BPF_TCP_LISTEN && sk->mark == fl_bypass_mark;
    bpf_sk_release(sk);
    return ok;
}

/* Saves the original destination under the socket cookie. Returns 0 or -1
 * (then the connect goes direct). */
static __always_inline int save_orig(struct bpf_sock_addr *ctx, struct fl_orig *o)
{
    __u64 cookie = bpf_get_socket_cookie(ctx);

    o->cookie = cookie;
    return bpf_map_update_elem(&fl_orig_by_cookie, &cookie, o, BPF_ANY) ? -1 : 0;
}

SEC("cgroup/connect4")
int fl_connect4(struct bpf_sock_addr *ctx)
{
    struct fl_target_val tv;
    struct fl_orig o = {};
    __u32 addr[4] = {};
    __u32 ip4;
    __u16 port;

    if (connect_skip(ctx))
        return 1;
    ip4 = ctx->user_ip4;
    port = (__u16)ctx->user_port;
    if (is_loopback4(ip4))
        return 1;
    addr[0] = ip4;
    if (!match_target(FL_AF_INET, addr, port, &tv))
        return 1;
    if (!proxy_listening(ctx, 0)) {
        stat_inc(FL_STAT_FAIL_OPEN);
        return 1;
    }
    *(__u32 *)o.addr = ip4;
    o.port = port;
    o.family = FL_AF_INET;
    o.target_id = tv.target_id;
    if (save_orig(ctx, &o))
        return 1;
    ctx->user_ip4 = bpf_htonl(0x7f000001);
    ctx->user_port = bpf_htons(fl_proxy_port);
    stat_inc(FL_STAT_REDIRECTED);
    return 1;
}

SEC("cgroup/connect6")
int fl_connect6(struct bpf_sock_addr *ctx)
{
    struct fl_target_val tv;
    struct fl_orig o = {};
    __u32 addr[4] = {};
    __u32 a0, a1, a2, a3;
    __u16 port;
    int mapped;

    if (connect_skip(ctx))
        return 1;
    a0 = ctx->user_ip6[0];
    a1 = ctx->user_ip6[1];
    a2 = ctx->user_ip6[2];
    a3 = ctx->user_ip6[3];
    port = (__u16)ctx->user_port;
    mapped = a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff);
    if (mapped) {
        if (is_loopback4(a3))
            return 1;
        addr[0] = a3;
    } else {
        if (a0 == 0 && a1 == 0 && a2 == 0 && (a3 == 0 || a3 == bpf_htonl(1)))
            return 1;
        addr[0] = a0;
        addr[1] = a1;
        addr[2] = a2;
        addr[3] = a3;
    }
    if (!match_target(mapped ? FL_AF_INET : FL_AF_INET6, addr, port, &tv))
        return 1;
    /* A mapped destination travels as IPv4, so it needs the 127.0.0.1 listener. */
    if (!proxy_listening(ctx, !mapped)) {
        stat_inc(FL_STAT_FAIL_OPEN);
        return 1;
    }
    set_addr6(o.addr, a0, a1, a2, a3);
    o.port = port;
    o.family = FL_AF_INET6;
    o.flags = mapped ? FL_ORIG_MAPPED : 0;
    o.target_id = tv.target_id;
    if (save_orig(ctx, &o))
        return 1;
    if (mapped) {
        ctx->user_ip6[0] = 0;
        ctx->user_ip6[1] = 0;
        ctx->user_ip6[2] = bpf_htonl(0xffff);
        ctx->user_ip6[3] = bpf_htonl(0x7f000001);
    } else {
        ctx->user_ip6[0] = 0;
        ctx->user_ip6[1] = 0;
        ctx->user_ip6[2] = 0;
        ctx->user_ip6[3] = bpf_htonl(1);
    }
    ctx->user_port = bpf_htons(fl_proxy_port);
    stat_inc(FL_STAT_REDIRECTED);
    return 1;
}

/* Loads a ctx field right here, into a register: the optimizer must not sink
 * the load into a branch as (ctx + offset), which the verifier rejects. */
#define CTX_LOAD(x)                                                                                \
    ({                                                                                             \
        __u32 __v = (x);                                                                           \
        asm volatile("" : "+r"(__v));                                                              \
        __v;                                                                                       \
    })

/* The addresses of a socket as sock_ops and sk_msg show them. Every field is
 * loaded unconditionally with a constant offset: the verifier rejects loads
 * through a ctx pointer the compiler has moved (base + offset reuse). */
struct ends {
    __u32 family, l4, r4, l6[4], r6[4], lport, rport;
};

static __always_inline void ends_to_key(const struct ends *e, struct fl_sock_key *k)
{
    if (e->family == FL_AF_INET) {
        set_mapped4(k->laddr, e->l4);
        set_mapped4(k->raddr, e->r4);
    } else {
        set_addr6(k->laddr, e->l6[0], e->l6[1], e->l6[2], e->l6[3]);
        set_addr6(k->raddr, e->r6[0], e->r6[1], e->r6[2], e->r6[3]);
    }
    k->lport = (__u16)e->lport;
    k->rport = remote_port_host(e->rport);
}

/* Fills the SOCKHASH key of the socket behind skops (local, remote). */
static __always_inline void sockops_key(struct bpf_sock_ops *skops, struct fl_sock_key *k)
{
    struct ends e;

    e.family = CTX_LOAD(skops->family);
    e.l4 = CTX_LOAD(skops->local_ip4);
    e.r4 = CTX_LOAD(skops->remote_ip4);
    e.l6[0] = CTX_LOAD(skops->local_ip6[0]);
    e.l6[1] = CTX_LOAD(skops->local_ip6[1]);
    e.l6[2] = CTX_LOAD(skops->local_ip6[2]);
    e.l6[3] = CTX_LOAD(skops->local_ip6[3]);
    e.r6[0] = CTX_LOAD(skops->remote_ip6[0]);
    e.r6[1] = CTX_LOAD(skops->remote_ip6[1]);
    e.r6[2] = CTX_LOAD(skops->remote_ip6[2]);
    e.r6[3] = CTX_LOAD(skops->remote_ip6[3]);
    e.lport = CTX_LOAD(skops->local_port);
    e.rport = CTX_LOAD(skops->remote_port);
    ends_to_key(&e, k);
    k->netns = bpf_get_netns_cookie(skops);
}

static __always_inline void conn_key_local(const struct fl_sock_key *s, struct fl_conn_key *c)
{
    c->netns = s->netns;
    __builtin_memcpy(c->addr, s->laddr, 16);
    c->port = s->lport;
}

static __always_inline void conn_key_remote(const struct fl_sock_key *s, struct fl_conn_key *c)
{
    c->netns = s->netns;
    __builtin_memcpy(c->addr, s->raddr, 16);
    c->port = s->rport;
}

/* The app's redirected socket is connected to the proxy. */
static __always_inline void on_active_established(struct bpf_sock_ops *skops)
{
    struct fl_sock_key sk = {};
    struct fl_conn_key ck = {};
    struct fl_orig rec;
    struct fl_orig *o;
    __u64 cookie = bpf_get_socket_cookie(skops);

    o = bpf_map_lookup_elem(&fl_orig_by_cookie, &cookie);
    if (!o)
        return;
    rec = *o;
    sockops_key(skops, &sk);
    conn_key_local(&sk, &ck);
    /* Whether a connection is accelerated is decided once, here: switching a
     * live connection from TCP to sk_msg could reorder its bytes. */
    if (!fl_sockmap)
        rec.flags |= FL_CONN_NOACCEL;
    if (bpf_map_update_elem(&fl_conns, &ck, &rec, BPF_ANY))
        return;
    /* Close events clean up both records. */
    bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
    if (!(rec.flags & FL_CONN_NOACCEL) &&
        bpf_sock_hash_update(skops, &fl_socks, &sk, BPF_NOEXIST) == 0)
        stat_inc(FL_STAT_SOCK_ADDED);
}

/* The proxy accepted a connection: pair it only if it is one we redirected. */
static __always_inline void on_passive_established(struct bpf_sock_ops *skops)
{
    struct fl_sock_key sk = {};
    struct fl_conn_key ck = {};
    struct fl_orig *o;

    if (skops->local_port != fl_proxy_port)
        return;
    sockops_key(skops, &sk);
    conn_key_remote(&sk, &ck);
    o = bpf_map_lookup_elem(&fl_conns, &ck);
    if (!o || (o->flags & FL_CONN_NOACCEL))
        return;
    if (bpf_sock_hash_update(skops, &fl_socks, &sk, BPF_NOEXIST) == 0)
        stat_inc(FL_STAT_SOCK_ADDED);
}

/* The daemon connects from inside a netns with ingress targets (an upstream
 * connection to the pod's server): recorded, so that sk_lookup lets it
 * through rather than hand it back to the proxy. The local port is chosen by
 * now; the SYN is not sent yet. */
static __always_inline void on_connect(struct bpf_sock_ops *skops)
{
    struct fl_sock_key sk = {};
    struct bpf_sock *s = skops->sk;
    __u64 cookie;

    if (!s || s->mark != fl_bypass_mark)
        return;
    sockops_key(skops, &sk);
    if (!bpf_map_lookup_elem(&fl_ingress_ns, &sk.netns))
        return;
    cookie = bpf_get_socket_cookie(skops);
    if (bpf_map_update_elem(&fl_own, &sk, &cookie, BPF_ANY) == 0)
        bpf_sock_ops_cb_flags_set(skops,
                                  skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* A socket that asked for state events reached TCP_CLOSE: an app's
 * redirected socket, or one of the daemon's recorded by on_connect. SOCKHASH
 * entries go away with their sockets; the records are ours. */
static __always_inline void on_close(struct bpf_sock_ops *skops)
{
    struct fl_sock_key sk = {};
    struct fl_conn_key ck = {};
    struct fl_orig *o;
    __u64 cookie = bpf_get_socket_cookie(skops);

    sockops_key(skops, &sk);
    conn_key_local(&sk, &ck);
    o = bpf_map_lookup_elem(&fl_conns, &ck);
    /* Only our own record: the tuple may already belong to a newer socket. */
    if (o && o->cookie == cookie)
        bpf_map_delete_elem(&fl_conns, &ck);
    bpf_map_delete_elem(&fl_orig_by_cookie, &cookie);
    __u64 *own = bpf_map_lookup_elem(&fl_own, &sk);
    if (own && *own == cookie)
        bpf_map_delete_elem(&fl_own, &sk);
}

SEC("sockops")
int fl_sockops(struct bpf_sock_ops *skops)
{
    switch (skops->op) {
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
        on_active_established(skops);
        break;
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
        on_passive_established(skops);
        break;
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
        on_connect(skops);
        break;
    case BPF_SOCK_OPS_STATE_CB:
        if (skops->args[1] == BPF_TCP_CLOSE)
            on_close(skops);
        break;
    default:
        break;
    }
    return 1;
}

/* Runs on sendmsg of every socket in fl_socks. Always SK_PASS: when the peer is
 * found the kernel redirects, otherwise the bytes take the normal TCP path. */
SEC("sk_msg")
int fl_sk_msg(struct sk_msg_md *msg)
{
    struct fl_sock_key peer = {};
    struct fl_sock_key me = {};
    struct fl_conn_key ck = {};
    struct fl_orig *o;
    struct ends e;

    e.family = CTX_LOAD(msg->family);
    e.l4 = CTX_LOAD(msg->local_ip4);
    e.r4 = CTX_LOAD(msg->remote_ip4);
    e.l6[0] = CTX_LOAD(msg->local_ip6[0]);
    e.l6[1] = CTX_LOAD(msg->local_ip6[1]);
    e.l6[2] = CTX_LOAD(msg->local_ip6[2]);
    e.l6[3] = CTX_LOAD(msg->local_ip6[3]);
    e.r6[0] = CTX_LOAD(msg->remote_ip6[0]);
    e.r6[1] = CTX_LOAD(msg->remote_ip6[1]);
    e.r6[2] = CTX_LOAD(msg->remote_ip6[2]);
    e.r6[3] = CTX_LOAD(msg->remote_ip6[3]);
    e.lport = CTX_LOAD(msg->local_port);
    e.rport = CTX_LOAD(msg->remote_port);
    ends_to_key(&e, &me);
    ck.netns = bpf_get_netns_cookie(msg);
    /* The app's socket talks to the proxy port; the proxy's socket is the
     * other end. The connection record is keyed by the app (client) side. */
    if (me.rport == fl_proxy_port) {
        __builtin_memcpy(ck.addr, me.laddr, 16);
        ck.port = me.lport;
    } else {
        __builtin_memcpy(ck.addr, me.raddr, 16);
        ck.port = me.rport;
    }
    o = bpf_map_lookup_elem(&fl_conns, &ck);
    if (!o)
        goto pass;
    if (o->flags & FL_CONN_NOACCEL)
        goto pass;
    if (!fl_enabled || !fl_sockmap)
        goto noaccel;
    peer.netns = ck.netns;
    __builtin_memcpy(peer.laddr, me.raddr, 16);
    __builtin_memcpy(peer.raddr, me.laddr, 16);
    peer.lport = me.rport;
    peer.rport = me.lport;
    if (bpf_msg_redirect_hash(msg, &fl_socks, &peer, BPF_F_INGRESS) != SK_PASS) {
        stat_inc(FL_STAT_MSG_NO_PEER);
        goto noaccel;
    }
    stat_inc(FL_STAT_MSG_REDIRECT);
    return SK_PASS;
noaccel:
    /* Sticky: once bytes went over TCP, later redirected bytes could overtake
     * them in the peer's receive path. */
    o->flags |= FL_CONN_NOACCEL;
pass:
    stat_inc(FL_STAT_MSG_PASS);
    return SK_PASS;
}

static __always_inline int restore_peer(struct bpf_sock_addr *ctx, struct fl_orig **out)
{
    __u64 cookie;

    if ((__u16)ctx->user_port != bpf_htons(fl_proxy_port))
        return 0;
    cookie = bpf_get_socket_cookie(ctx);
    *out = bpf_map_lookup_elem(&fl_orig_by_cookie, &cookie);
    return *out != 0;
}

SEC("cgroup/getpeername4")
int fl_getpeername4(struct bpf_sock_addr *ctx)
{
    struct fl_orig *o;

    if (!restore_peer(ctx, &o) || o->family != FL_AF_INET)
        return 1;
    ctx->user_ip4 = *(__u32 *)o->addr;
    ctx->user_port = o->port;
    return 1;
}

SEC("cgroup/getpeername6")
int fl_getpeername6(struct bpf_sock_addr *ctx)
{
    struct fl_orig *o;
    __u32 *w;

    if (!restore_peer(ctx, &o) || o->family != FL_AF_INET6)
        return 1;
    w = (__u32 *)o->addr;
    ctx->user_ip6[0] = w[0];
    ctx->user_ip6[1] = w[1];
    ctx->user_ip6[2] = w[2];
    ctx->user_ip6[3] = w[3];
    ctx->user_port = o->port;
    return 1;
}

char LICENSE[] SEC("license") = "Apache-2.0";
