// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
/* reset.bpf.c: existing: reset. A TCP socket iterator that destroys the
 * established connections a newly selecting target would have steered, so
 * their applications reconnect through the proxy (docs/architecture.md,
 * "Taking over established connections").
 *
 * The loader sets fl_reset_cfg, then runs the iterator inside the pod's
 * netns (a TCP iterator walks the sockets of the netns it was created in).
 * Every destroyed socket is printed as one line, which the loader counts.
 * bpf_sock_destroy() is a kfunc of Linux 6.5 and later, callable from TCP
 * and UDP iterators only; on a kernel without it this object does not load,
 * which the loader's probe reports.
 *
 * Kfuncs and the seq_file helpers are for GPL-compatible programs only, so
 * this one file is offered under GPL-2.0 as well as the project's
 * Apache-2.0 (the SPDX line above); the license string says so to the kernel.
 *
 * Never touched: sockets carrying the daemon's mark, the server's end of the
 * proxy's own connections (fl_own), sockets not established, sockets of
 * other cgroups.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "faultline.h"
#include "shared_maps.h"

#define TCP_ESTABLISHED_ 1

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

const volatile __u32 fl_bypass_mark = FL_BYPASS_MARK;

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fl_reset_cfg);
} fl_reset_cfg SEC(".maps");

static __always_inline int sel_match(const struct fl_reset_sel *s, __u8 fam, const __u32 a[4],
                                     __u16 port)
{
    if (s->family != fam || (s->port && s->port != port))
        return 0;
    return (a[0] & s->mask[0]) == s->addr[0] && (a[1] & s->mask[1]) == s->addr[1] &&
           (a[2] & s->mask[2]) == s->addr[2] && (a[3] & s->mask[3]) == s->addr[3];
}

/* Is the socket's cgroup cgid or below it? */
static __always_inline int in_cgroup(struct sock *sk, __u64 cgid)
{
    struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);

    for (int i = 0; i < FL_MAX_CGROUP_DEPTH && cg; i++) {
        if (BPF_CORE_READ(cg, kn, id) == cgid)
            return 1;
        /* self is the first member: the parent's css is the parent cgroup. */
        cg = (struct cgroup *)BPF_CORE_READ(cg, self.parent);
    }
    return 0;
}

SEC("iter/tcp")
int fl_reset_iter(struct bpf_iter__tcp *ctx)
{
    struct sock_common *skc = ctx->sk_common;
    struct fl_reset_cfg *cfg;
    struct fl_sock_key own = {};
    __u32 zero = 0, la[4] = {}, ra[4] = {};
    struct tcp_sock *tp;
    struct sock *sk;
    __u16 lport, rport;
    __u8 fam;
    int hit = 0;

    if (!skc || skc->skc_state != TCP_ESTABLISHED_)
        return 0;
    cfg = bpf_map_lookup_elem(&fl_reset_cfg, &zero);
    if (!cfg || !cfg->n_sel)
        return 0;
    tp = bpf_skc_to_tcp_sock(skc);
    if (!tp)
        return 0;
    sk = (struct sock *)tp;
    if (BPF_CORE_READ(sk, sk_mark) == fl_bypass_mark || !in_cgroup(sk, cfg->cgid))
        return 0;
    lport = skc->skc_num;
    rport = bpf_ntohs(skc->skc_dport);
    if (skc->skc_family == FL_AF_INET) {
        fam = FL_AF_INET;
        la[0] = skc->skc_rcv_saddr;
        ra[0] = skc->skc_daddr;
    } else if (skc->skc_family == FL_AF_INET6) {
        __u32 r2 = skc->skc_v6_daddr.in6_u.u6_addr32[2];

        if (skc->skc_v6_daddr.in6_u.u6_addr32[0] == 0 &&
            skc->skc_v6_daddr.in6_u.u6_addr32[1] == 0 && r2 == bpf_htonl(0xffff)) {
            fam = FL_AF_INET; /* an IPv4 peer of a dual-stack socket */
            la[0] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[3];
            ra[0] = skc->skc_v6_daddr.in6_u.u6_addr32[3];
        } else {
            fam = FL_AF_INET6;
            for (int i = 0; i < 4; i++) {
                la[i] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
                ra[i] = skc->skc_v6_daddr.in6_u.u6_addr32[i];
            }
        }
    } else {
        return 0;
    }
    if (cfg->mode == FL_RESET_INGRESS) {
        /* Loopback inside the pod: ingress never takes it, so a reset would
         * only disrupt it. */
        if (fam == FL_AF_INET ? (bpf_ntohl(la[0]) >> 24) == 127
                              : (la[0] == 0 && la[1] == 0 && la[2] == 0 && la[3] == bpf_htonl(1)))
            return 0;
        /* The server's end of the proxy's own connection: the proxy's
         * socket has this one's ends the other way round. */
        __u32 *o = (__u32 *)own.laddr, *d = (__u32 *)own.raddr;
        own.netns = cfg->netns;
        own.lport = rport;
        own.rport = lport;
        if (fam == FL_AF_INET) {
            o[2] = d[2] = bpf_htonl(0xffff);
            o[3] = ra[0];
            d[3] = la[0];
        } else {
            for (int i = 0; i < 4; i++) {
                o[i] = ra[i];
                d[i] = la[i];
            }
        }
        if (bpf_map_lookup_elem(&fl_own, &own))
            return 0;
    }
    for (__u32 i = 0; i < FL_RESET_MAX_SEL; i++) {
        if (i >= cfg->n_sel)
            break;
        /* egress: the remote end is the destination; ingress: the local
         * port is the pods' and the remote end the caller. */
        hit = sel_match(&cfg->sel[i], fam, ra, cfg->mode == FL_RESET_EGRESS ? rport : lport);
        if (hit)
            break;
    }
    if (!hit)
        return 0;
    /* One line per destroyed connection: family, local port, remote port
     * and address (four words, network order). */
    if (bpf_sock_destroy(skc) == 0)
        BPF_SEQ_PRINTF(ctx->meta->seq, "%u %u %u %x %x %x %x\n", fam, lport, rport, ra[0], ra[1],
                       ra[2], ra[3]);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
