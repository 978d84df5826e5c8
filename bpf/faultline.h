/* faultline.h: the records shared by the BPF programs (faultline.bpf.c) and the
 * userspace loader (src/bpf_loader.c). Layouts are fixed: explicit padding, no
 * implicit holes, sizes checked with _Static_assert on the user side.
 *
 * Addresses are always 16 bytes in network order. IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d) in the connection and socket keys, so an AF_INET6 socket
 * talking to a mapped address and an AF_INET socket produce the same key.
 */
#ifndef FL_BPF_FAULTLINE_H
#define FL_BPF_FAULTLINE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* SO_MARK carried by every socket the daemon opens (listeners and upstream
 * connections). connect4/6 never redirect a socket with this mark, and a proxy
 * listener only counts as "present" when it carries it. ASCII "FL". */
#define FL_BYPASS_MARK 0x464c

#define FL_DEFAULT_PORT 15001
#define FL_MAX_CGROUP_DEPTH 32 /* ancestor levels walked per connect */

#define FL_MAX_TARGETS 4096 /* LPM entries (cgroup, cidr, port) */
#define FL_MAX_PODS 1024    /* selected pod cgroups */
#define FL_MAX_CONNS 65536  /* redirected connections in flight */

#define FL_AF_INET 2
#define FL_AF_INET6 10

/* Policy key: LPM over (cgroup id, port, family, pad, addr). The first 96 bits
 * are always matched in full; prefixlen = FL_LPM_FIXED_BITS + address prefix.
 * port 0 selects every port (looked up second). */
struct fl_target_key {
    __u32 prefixlen;
    __u32 _pad0; /* not part of the LPM data: keeps cgid 8-aligned */
    __u64 cgid;
    __u16 port;  /* network order; 0 = any */
    __u8 family; /* FL_AF_INET or FL_AF_INET6; mapped IPv6 is looked up as IPv4 */
    __u8 _pad1;
    __u8 addr[16]; /* IPv4 in the first 4 bytes */
    __u32 _pad2;   /* beyond any prefix; makes the size explicit */
};
/* The LPM trie matches the bytes after prefixlen, so the pads take part and
 * must be zero on both sides. */
#define FL_LPM_FIXED_BITS ((4 + 8 + 2 + 1 + 1) * 8)

struct fl_target_val {
    __u32 target_id; /* the daemon's index of the policy target */
    __u32 flags;     /* reserved, 0 */
};

/* Original destination of a redirected connection, as the application gave it. */
#define FL_ORIG_MAPPED 0x1  /* app used an AF_INET6 socket with ::ffff:a.b.c.d */
#define FL_CONN_NOACCEL 0x2 /* sk_msg must not redirect this connection (sticky) */

struct fl_orig {
    __u8 addr[16];   /* network order; IPv4 in the first 4 bytes unless MAPPED */
    __u16 port;      /* network order */
    __u16 family;    /* FL_AF_INET or FL_AF_INET6, as the app's connect() had it */
    __u32 target_id; /* from fl_target_val */
    __u32 flags;     /* FL_ORIG_*, FL_CONN_* */
    __u32 _pad;
    __u64 cookie; /* socket cookie of the application's socket */
};

/* One end of a loopback connection inside a netns: the key of the connection
 * map (client side, for the proxy to find the original destination). */
struct fl_conn_key {
    __u64 netns;   /* netns cookie */
    __u8 addr[16]; /* client address, IPv4-mapped when IPv4 */
    __u16 port;    /* client port, host order */
    __u16 _pad0;
    __u32 _pad1;
};

/* SOCKHASH key: a socket by (netns cookie, local, remote). The peer of a
 * socket is found by swapping local and remote. */
struct fl_sock_key {
    __u64 netns;
    __u8 laddr[16];
    __u8 raddr[16];
    __u16 lport; /* host order */
    __u16 rport; /* host order */
    __u32 _pad;
};

/* Ingress (sk_lookup) policy: LPM over (netns cookie, port, family, pad,
 * caller address), the same layout as fl_target_key. A target without
 * `from` is stored with address prefix 0 (every caller). */
struct fl_ingress_key {
    __u32 prefixlen;
    __u32 _pad0;
    __u64 netns; /* cookie of the selected pod's netns */
    __u16 port;  /* host order: the port the pods serve on */
    __u8 family; /* FL_AF_INET or FL_AF_INET6 */
    __u8 _pad1;
    __u8 addr[16]; /* caller address, IPv4 in the first 4 bytes */
    __u32 _pad2;
};

struct fl_ingress_val {
    __u32 target_id;
    __u32 flags; /* reserved, 0 */
};

/* The proxy's listener in a netns, for sk_lookup to hand connections to
 * (SOCKHASH key). */
struct fl_lsn_key {
    __u64 netns;
    __u32 family; /* FL_AF_INET or FL_AF_INET6 */
    __u32 _pad;
};

#define FL_MAX_INGRESS_NETNS 1024

/* existing: reset. One run of the TCP iterator in one netns destroys the
 * established sockets of the pod cgroup cgid (or below it) that match one of
 * the n selectors: egress on the remote end, ingress on the local port and
 * the remote address. */
#define FL_RESET_EGRESS 1
#define FL_RESET_INGRESS 2
#define FL_RESET_MAX_SEL 64

struct fl_reset_sel {
    __u32 addr[4]; /* network order, masked; IPv4 in addr[0] */
    __u32 mask[4];
    __u16 port;    /* host order; 0 = any */
    __u8 family;   /* FL_AF_INET or FL_AF_INET6 */
    __u8 _pad;
    __u32 _pad1;
};

struct fl_reset_cfg {
    __u64 cgid;  /* the pod's cgroup */
    __u64 netns; /* its netns cookie (for the proxy's own connections) */
    __u32 mode;  /* FL_RESET_EGRESS or FL_RESET_INGRESS */
    __u32 n_sel;
    struct fl_reset_sel sel[FL_RESET_MAX_SEL];
};

/* Indexes into the per-CPU stats array. */
enum fl_stat {
    FL_STAT_REDIRECTED,   /* connect() rewritten to the proxy */
    FL_STAT_FAIL_OPEN,    /* matched a target, but no proxy listener in the netns */
    FL_STAT_MSG_REDIRECT, /* sk_msg messages moved to the peer socket */
    FL_STAT_MSG_PASS,     /* sk_msg messages left to TCP (no peer or no accel) */
    FL_STAT_SOCK_ADDED,   /* sockets inserted into the SOCKHASH */
    FL_STAT_MSG_NO_PEER,  /* sk_msg found no peer: the connection fell back to TCP */
    FL_STAT_INGRESS,      /* sk_lookup handed a connection to the proxy */
    FL_STAT_INGRESS_FAIL_OPEN, /* matched an ingress target, no proxy listener: went direct */
    FL_STAT__COUNT
};

#endif
