/* ingress.bpf.c: hands the connections arriving at a selected pod's port to
 * faultline's proxy listener in the pod's netns (docs/architecture.md,
 * "Ingress").
 *
 * sk_lookup runs when a SYN (or a packet no established socket owns) looks
 * for a listener in the netns the program is attached to. sk_lookup programs
 * cannot ask which netns they run in, so the loader loads one instance of
 * this object per netns, with that netns's cookie in fl_ns; the maps are
 * shared with the main object (shared_maps.h).
 *
 * Fails open: anything missing (switch off, no target, no listener, a
 * refused assign) leaves the connection to the kernel's own lookup, so it
 * reaches the pod's server directly.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "faultline.h"
#include "shared_maps.h"

const volatile __u64 fl_ns = 0;

SEC("sk_lookup")
int fl_ingress_lookup(struct bpf_sk_lookup *ctx)
{
    struct fl_ingress_key k = {};
    struct fl_sock_key own = {}; /* as the proxy's upstream socket would see it */
    struct fl_lsn_key lk = {};
    __u32 zero = 0, *on;
    __u32 *a = (__u32 *)k.addr, *o = (__u32 *)own.laddr, *d = (__u32 *)own.raddr;
    struct bpf_sock *sk;
    long err;

    on = bpf_map_lookup_elem(&fl_switch, &zero);
    if (!on || !*on || ctx->protocol != IPPROTO_TCP)
        return SK_PASS;
    if (ctx->family == FL_AF_INET) {
        __u32 l4 = ctx->local_ip4;

        if ((bpf_ntohl(l4) >> 24) == 127) /* loopback inside the pod: left alone */
            return SK_PASS;
        k.family = FL_AF_INET;
        a[0] = ctx->remote_ip4;
        o[2] = bpf_htonl(0xffff);
        o[3] = ctx->remote_ip4;
        d[2] = bpf_htonl(0xffff);
        d[3] = l4;
        lk.family = FL_AF_INET;
    } else if (ctx->family == FL_AF_INET6) {
        if (ctx->local_ip6[0] == 0 && ctx->local_ip6[1] == 0 && ctx->local_ip6[2] == 0 &&
            ctx->local_ip6[3] == bpf_htonl(1))
            return SK_PASS;
        k.family = FL_AF_INET6;
        a[0] = o[0] = ctx->remote_ip6[0];
        a[1] = o[1] = ctx->remote_ip6[1];
        a[2] = o[2] = ctx->remote_ip6[2];
        a[3] = o[3] = ctx->remote_ip6[3];
        d[0] = ctx->local_ip6[0];
        d[1] = ctx->local_ip6[1];
        d[2] = ctx->local_ip6[2];
        d[3] = ctx->local_ip6[3];
        lk.family = FL_AF_INET6;
    } else {
        return SK_PASS;
    }
    k.prefixlen = FL_LPM_FIXED_BITS + 128;
    k.netns = fl_ns;
    k.port = (__u16)ctx->local_port;
    if (!bpf_map_lookup_elem(&fl_ingress, &k))
        return SK_PASS;
    /* The proxy's own connection to the server. */
    own.netns = fl_ns;
    own.lport = bpf_ntohs(ctx->remote_port);
    own.rport = (__u16)ctx->local_port;
    if (bpf_map_lookup_elem(&fl_own, &own))
        return SK_PASS;
    lk.netns = fl_ns;
    sk = bpf_map_lookup_elem(&fl_lsn, &lk);
    if (!sk) {
        fl_stat_inc(FL_STAT_INGRESS_FAIL_OPEN);
        return SK_PASS;
    }
    /* Never a reuseport sibling: only the proxy's own listener. */
    err = bpf_sk_assign(ctx, sk, BPF_SK_LOOKUP_F_NO_REUSEPORT);
    bpf_sk_release(sk);
    fl_stat_inc(err ? FL_STAT_INGRESS_FAIL_OPEN : FL_STAT_INGRESS);
    return SK_PASS;
}

char LICENSE[] SEC("license") = "Apache-2.0";
