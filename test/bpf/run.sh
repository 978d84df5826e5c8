#!/bin/bash
# Transparent-mode kernel side, end to end, without the proxy engine.
# Needs root, cgroup v2, BPF. Builds two "pods" (cgroup + netns + veth, in
# 10.77.0.0/16 and fd77::/16), servers on the host side of the veths and
# fl_bpf_test's relay proxy, then checks what the kernel does with each
# connection. Removes everything it made, also on failure.
#
# usage: test/bpf/run.sh [path/to/fl_bpf_test]
set -u

BIN=${1:-$(dirname "$0")/../../build/fl_bpf_test}
BIN=$(readlink -f "$BIN")
PORT=15001
ID=$$
T=fl$ID                     # name prefix for netns, links, cgroups
NSA=${T}a NSB=${T}b
VA=${T}va VB=${T}vb         # host ends of the veths
TMP=$(mktemp -d /tmp/fl-bpf-test.XXXXXX)
PASS=0 FAIL=0
PIDS=()
PROXY_PID=

# shellcheck source=test/bpf/lib.sh
source "$(dirname "$0")/lib.sh"

cleanup() {
    set +e
    [ -n "$PROXY_PID" ] && kill -9 "$PROXY_PID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    ip netns del "$NSA" 2>/dev/null
    ip netns del "$NSB" 2>/dev/null
    ip link del "$VA" 2>/dev/null
    ip link del "$VB" 2>/dev/null
    if [ -n "${CG:-}" ] && [ -d "$CG" ]; then
        # deepest first; a cgroup only goes once its processes are gone
        for i in 1 2 3 4 5; do
            find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
            [ -d "$CG" ] || break
            sleep 0.2
        done
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { say "test/bpf: needs root"; exit 1; }
[ -x "$BIN" ] || { say "test/bpf: $BIN not built"; exit 1; }
if ! "$BIN" probe; then say "test/bpf: kernel lacks what transparent mode needs"; exit 1; fi

CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -n "$CG2" ] || { say "test/bpf: no cgroup2 mount"; exit 1; }
CG=$CG2/$T
mkdir -p "$CG/daemon" "$CG/pod/ctr" "$CG/other" "$CG/pod2" || exit 1

# Pod A: netns with veth 10.77.1.2 / fd77:1::2, host end 10.77.1.1 / fd77:1::1.
# Pod B: the same on 10.77.2.x / fd77:2::x, and no proxy listener in it.
mkpod() { # ns veth n
    ip netns add "$1" &&
    ip link add "$2" type veth peer name eth0 netns "$1" &&
    ip addr add "10.77.$3.1/24" dev "$2" &&
    ip addr add "fd77:$3::1/64" dev "$2" nodad &&
    ip link set "$2" up &&
    ip -n "$1" link set lo up &&
    ip -n "$1" addr add "10.77.$3.2/24" dev eth0 &&
    ip -n "$1" addr add "fd77:$3::2/64" dev eth0 nodad &&
    ip -n "$1" link set eth0 up
}
mkpod "$NSA" "$VA" 1 || { say "setup of pod A failed"; exit 1; }
mkpod "$NSB" "$VB" 2 || { say "setup of pod B failed"; exit 1; }

bg() { "$@" >"$TMP/bg.$#.$RANDOM" 2>&1 & PIDS+=($!); }
bg "$BIN" server 10.77.1.1 8080 real
bg "$BIN" server fd77:1::1 8080 real
bg "$BIN" server 10.77.1.1 8081 real
bg "$BIN" server 10.77.2.1 8080 real
# An unrelated, unmarked program on the proxy port in pod B: not the proxy.
bg ip netns exec "$NSB" "$BIN" server 127.0.0.1 $PORT impostor

# in_cg CGROUP NETNS CMD...: run CMD inside the netns as a member of CGROUP.
# The cgroup is joined first: ip netns exec remounts /sys for the netns.
in_cg() {
    local cg=$1 ns=$2; shift 2
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" ip netns exec "$ns" "$@"
}
client() { in_cg "$1" "$2" timeout 30 "$BIN" client "${@:3}" 2>&1; }

start_proxy() { # extra args...
    rm -f "$TMP/ready"
    : >"$TMP/proxy.log"
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG/daemon" \
        "$BIN" proxy --port $PORT --netns "/var/run/netns/$NSA" \
        --cgroup "$CG/pod" --cgroup "$CG/pod2" \
        --target 10.77.0.0/16:8080 --target fd77::/16:8080 \
        --ready "$TMP/ready" "$@" >>"$TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    for _ in $(seq 100); do [ -e "$TMP/ready" ] && return 0; sleep 0.05; done
    bad "proxy did not start" "$(cat "$TMP/proxy.log")"
    return 1
}
stat_of() { # NAME: latest value of a proxy counter
    sleep 0.15 # the proxy polls the counters every 50 ms
    grep '^STATS' "$TMP/proxy.log" | tail -1 | sed -n "s/.* $1=\([0-9]*\).*/\1/p" | grep . || echo 0
}
hooks_on() { bpftool cgroup show "$1" 2>/dev/null | grep -v '^ID' | grep -c .; }

sleep 0.3 # servers up
start_proxy || exit 1
n=$(hooks_on "$CG/pod"); d=$(hooks_on "$CG/daemon")
[ "$n" = 5 ] && [ "$d" = 1 ] && ok "hooks attached: 5 on the pod cgroup, sockops on the daemon's" \
    || bad "hooks attached: pod $n, daemon $d" "$(bpftool cgroup show "$CG/pod")"

# (a)+(b) IPv4, IPv6 and IPv4-mapped land in the proxy with the right original
# destination; getpeername in the app shows that destination; the server sees
# the pod's own address (upstream opened in the pod netns).
out=$(client "$CG/pod" "$NSA" 10.77.1.1 8080)
check "ipv4: redirected, orig dst, getpeername, pod source" "$out" \
    '^PEER 10\.77\.1\.1:8080$' '^PROXY orig=10\.77\.1\.1:8080 target=1 mapped=0$' \
    '^HELLO tag=real peer=10\.77\.1\.2:'
out=$(client "$CG/pod" "$NSA" fd77:1::1 8080)
check "ipv6: redirected, orig dst, getpeername, pod source" "$out" \
    '^PEER \[fd77:1::1\]:8080$' '^PROXY orig=\[fd77:1::1\]:8080 target=2 mapped=0$' \
    '^HELLO tag=real peer=\[fd77:1::2\]:'
out=$(client "$CG/pod" "$NSA" ::ffff:10.77.1.1 8080)
check "ipv4-mapped: redirected, orig dst, getpeername" "$out" \
    '^PEER \[::ffff:10\.77\.1\.1\]:8080$' '^PROXY orig=10\.77\.1\.1:8080 target=1 mapped=1$' \
    '^HELLO tag=real peer=10\.77\.1\.2:'
out=$(client "$CG/pod/ctr" "$NSA" 10.77.1.1 8080)
check "child cgroup of a selected pod is selected" "$out" \
    '^PEER 10\.77\.1\.1:8080$' '^PROXY orig=10\.77\.1\.1:8080' '^HELLO tag=real'
grep -q 'orig=none' "$TMP/proxy.log" && bad "proxy found no orig dst for some connection" "$(cat "$TMP/proxy.log")"

# (c) unselected cgroup, unmatched port: direct.
out=$(client "$CG/other" "$NSA" 10.77.1.1 8080)
check "unselected cgroup goes direct" "$out" '^PEER 10\.77\.1\.1:8080$' '!^PROXY' \
    '^HELLO tag=real peer=10\.77\.1\.2:'
out=$(client "$CG/pod" "$NSA" 10.77.1.1 8081)
check "unmatched port goes direct" "$out" '^PEER 10\.77\.1\.1:8081$' '!^PROXY' '^HELLO tag=real'
red=$(stat_of redirected)
[ "$red" = 4 ] && ok "redirected counter is 4" || bad "redirected counter is $red, want 4"

# (d) selected pod whose netns has no proxy listener (only an unmarked
# impostor on the proxy port): direct, and counted as fail-open.
fo0=$(stat_of fail_open)
out=$(client "$CG/pod2" "$NSB" 10.77.2.1 8080)
check "no proxy listener in the netns: direct (fail-open)" "$out" \
    '^PEER 10\.77\.2\.1:8080$' '!^PROXY' '^HELLO tag=real peer=10\.77\.2\.2:'
fo1=$(stat_of fail_open)
[ "$fo1" -gt "$fo0" ] && ok "fail-open counted ($fo0 -> $fo1)" || bad "fail_open counter stayed $fo1"

# (f) 64 MiB both ways, byte-exact, through the sk_msg path.
MB64=$((64 * 1024 * 1024))
m0=$(stat_of msg_redirects)
out=$(client "$CG/pod" "$NSA" 10.77.1.1 8080 $MB64)
check "64 MiB echo via sk_msg, IPv4" "$out" '^PROXY orig=' "^XFER ok bytes=$MB64 "
m1=$(stat_of msg_redirects)
[ $((m1 - m0)) -gt 100 ] && ok "sk_msg redirected $((m1 - m0)) messages" \
    || bad "sk_msg redirected only $((m1 - m0)) messages" "$(tail -3 "$TMP/proxy.log")"
out=$(client "$CG/pod" "$NSA" fd77:1::1 8080 $MB64)
check "64 MiB echo via sk_msg, IPv6" "$out" '^PROXY orig=' "^XFER ok bytes=$MB64 "
say "     $(grep '^XFER' <<<"$out") (sk_msg)"
say "     $(grep '^STATS' "$TMP/proxy.log" | tail -1)"

# SIGTERM detaches cleanly.
kill -TERM "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null; PROXY_PID=
n=$(( $(hooks_on "$CG/pod") + $(hooks_on "$CG/daemon") ))
[ "$n" = 0 ] && grep -q DETACHED "$TMP/proxy.log" && ok "SIGTERM: hooks detached" \
    || bad "SIGTERM left $n hooks" "$(bpftool cgroup show "$CG/pod")"

# (f) again without the sockmap, and with the per-connection no-accel flag.
start_proxy --no-sockmap || exit 1
out=$(client "$CG/pod" "$NSA" 10.77.1.1 8080 $MB64)
check "64 MiB echo with --no-sockmap" "$out" '^PROXY orig=' "^XFER ok bytes=$MB64 "; x=$?
say "     $(grep '^XFER' <<<"$out") (no sockmap)"
m=$(stat_of msg_redirects); s=$(stat_of socks_added)
[ $x = 0 ] && [ "$m" = 0 ] && [ "$s" = 0 ] && ok "--no-sockmap: no socket paired, no sk_msg redirect" \
    || bad "--no-sockmap: socks_added=$s msg_redirects=$m"
kill -TERM "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null; PROXY_PID=

start_proxy --no-accel || exit 1
out=$(client "$CG/pod" "$NSA" 10.77.1.1 8080 $MB64)
check "64 MiB echo with the connection's no-accel flag" "$out" '^PROXY orig=' "^XFER ok bytes=$MB64 "; x=$?
m=$(stat_of msg_redirects)
[ $x = 0 ] && [ "$m" -lt 50 ] && ok "no-accel: sk_msg stopped redirecting ($m messages before the flag)" \
    || bad "no-accel: $m messages redirected"

# (e) kill -9: hooks gone, the next connection goes direct within 1 s.
kill -9 "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null; PROXY_PID=
t0=$(date +%s%N)
out=$(client "$CG/pod" "$NSA" 10.77.1.1 8080)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "after kill -9: direct" "$out" '^PEER 10\.77\.1\.1:8080$' '!^PROXY' '^HELLO tag=real'; x=$?
[ $x = 0 ] && [ "$ms" -lt 1000 ] && ok "after kill -9: connected in ${ms} ms" || bad "after kill -9: ${ms} ms"
n=$(( $(hooks_on "$CG/pod") + $(hooks_on "$CG/pod2") + $(hooks_on "$CG/daemon") ))
[ "$n" = 0 ] && ok "after kill -9: bpftool cgroup show lists nothing" \
    || bad "after kill -9: $n hooks left" "$(bpftool cgroup show "$CG/pod")"

# (g) nothing of ours left in the kernel once the loader is gone.
for _ in $(seq 20); do
    left=$(bpftool prog show 2>/dev/null | grep -cE 'name fl_(connect|sockops|sk_msg|getpeer)')
    [ "$left" = 0 ] && break
    sleep 0.1
done
[ "$left" = 0 ] && ok "no faultline BPF program left loaded" || bad "$left programs still loaded"
if mountpoint -q /sys/fs/bpf; then
    p=$(find /sys/fs/bpf -name '*fl_*' 2>/dev/null | wc -l)
    [ "$p" = 0 ] && ok "nothing pinned" || bad "$p pinned objects"
fi

cleanup
trap - EXIT
left=$(( $(ip netns list | grep -c "^$T") + $(ip link show | grep -c "$T") + $([ -d "$CG" ] && echo 1 || echo 0) ))
[ "$left" = 0 ] && ok "cleanup: no netns, veth or cgroup left" || bad "cleanup left $left objects"

say "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
