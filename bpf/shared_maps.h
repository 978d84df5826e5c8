/* shared_maps.h: the maps more than one of faultline's BPF objects use.
 * Each object declares them alike; the loader creates them once (with the
 * main object, faultline.bpf.c) and hands their descriptors to the others
 * before they load (bpf_map__reuse_fd), so all see the same maps. */
#ifndef FL_BPF_SHARED_MAPS_H
#define FL_BPF_SHARED_MAPS_H

#include "faultline.h"

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FL_STAT__COUNT);
    __type(key, __u32);
    __type(value, __u64);
} fl_stats SEC(".maps");

/* Master switch of ingress steering ([0] != 0: on), as fl_enabled is for
 * the main object's hooks (the watchdog turns both off). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} fl_switch SEC(".maps");

/* Ingress targets: (netns, port, caller) -> target. */
struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, FL_MAX_TARGETS);
    __type(key, struct fl_ingress_key);
    __type(value, struct fl_ingress_val);
} fl_ingress SEC(".maps");

/* The proxy's listeners in the netns with ingress targets. */
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 2 * FL_MAX_INGRESS_NETNS);
    __type(key, struct fl_lsn_key);
    __type(value, __u64);
} fl_lsn SEC(".maps");

/* The netns with ingress targets (value: unused). The daemon's connections
 * from inside them are recorded in fl_own. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FL_MAX_INGRESS_NETNS);
    __type(key, __u64);
    __type(value, __u32);
} fl_ingress_ns SEC(".maps");

/* The proxy's own upstream connections inside those netns, by their four
 * ends as the proxy's socket sees them (local: the proxy, remote: the
 * server; value: socket cookie): sk_lookup lets them through to the server,
 * and existing: reset never touches the server's end of them. The whole
 * tuple, because an ephemeral port is reused toward other destinations. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FL_MAX_CONNS);
    __type(key, struct fl_sock_key);
    __type(value, __u64);
} fl_own SEC(".maps");

static __always_inline void fl_stat_inc(__u32 idx)
{
    __u64 *v = bpf_map_lookup_elem(&fl_stats, &idx);

    if (v)
        *v += 1;
}

#endif
