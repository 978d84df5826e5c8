#!/bin/bash
# Ingress interception (sk_lookup) and "existing: reset" (bpf_sock_destroy) end
# to end: the real daemon, real servers in a server pod S (cgroup v2 dir + netns),
# real callers (curl, nghttp, grpc-js, python) in another pod C, in the host's
# netns and in a netns that belongs to no pod. Addresses in 10.77.60.0/22 and
# fd77:60::/16-style /64s, ports 18600-18699, names fling<pid>. Needs root,
# cgroup v2, BPF, Linux 6.5+ (bpf_sock_destroy). Removes everything it made,
# also on failure.
#
#   host ------- 10.77.61.1 | fd77:61::1   <->  10.77.61.2 | fd77:61::2   pod S
#   host ------- 10.77.62.1 | fd77:62::1   <->  10.77.62.2 | fd77:62::2   pod C
#   pod C ------ 10.77.63.2 | fd77:63::2   <->  10.77.63.1 | fd77:63::1   pod S
#   netns N ---- 10.77.64.2 | fd77:64::2   <->  10.77.64.1 | fd77:64::1   pod S
#
# usage: test/bpf/ingress.sh [path/to/faultline]
#   FL_INGRESS_PHASES=direct,ingress,existing,failopen,nokfunc,watchdog   the phases to run (default: all)
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(readlink -f "${1:-$HERE/../../build/faultline}")
CTL=${CTL:-$(dirname "$BIN")/faultctl}
TP=$HERE/tp_peer.py          # HTTP/1.1 server (/peer, /bytes/N, /sink)
KA=$HERE/ingress_peer.py     # keep-alive client
GC=$HERE/ingress_grpc.js     # gRPC clients
GDIR=$HERE/../grpc           # grpc-js Echo server (with ingress_bind.js: any address)
ID=$$
T=fling$ID # name prefix for netns, links, cgroups
TMP=$(mktemp -d /tmp/fl-ingress-test.XXXXXX)
PPORT=18610 # the proxy port inside each pod netns
P=18601     # pod S: HTTP, ingress target
Q=18602     # pod S: HTTP, never targeted
K=18603     # pod S: HTTP, the keep-alive (existing connections) target
G=18604     # pod S: gRPC
H=18605     # pod S: h2c
EP=18606    # host (10.77.62.1): HTTP, egress target of pod C
EG=18607    # host: gRPC, egress target of pod C
EH=18608    # host: the h2c port server.js also opens
NOPE=18699  # nothing listens: the placeholder egress target
PASS=0 FAIL=0
PIDS=()
DPID=
DPIDS=()

# shellcheck source=test/bpf/lib.sh
source "$HERE/lib.sh"

SAVED_LOG=$(mktemp /tmp/fl-ingress-daemon.XXXXXX) # every daemon's log, shown on failure
cleanup() {
    set +e
    cat "$TMP/daemon.log" >>"$SAVED_LOG" 2>/dev/null
    for p in "${DPIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for ns in s c n; do
        for p in $(ip netns pids "$T$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    done
    wait 2>/dev/null
    for ns in s c n; do ip netns del "$T$ns" 2>/dev/null; done
    for v in hs hc; do ip link del "$T$v" 2>/dev/null; done
    if [ -n "${CG:-}" ] && [ -d "$CG" ]; then
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
            [ -d "$CG" ] || break
            sleep 0.2
        done
    fi
    for p in "${DPIDS[@]}"; do [ -n "${CG2:-}" ] && rmdir "$CG2/faultline-daemon-$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'rm -f "$SAVED_LOG"; exit 130' INT TERM

[ "$(id -u)" = 0 ] || { say "test/bpf/ingress: needs root"; exit 1; }
[ -x "$BIN" ] || { say "test/bpf/ingress: $BIN not built"; exit 1; }
[ -x "$CTL" ] || { say "test/bpf/ingress: $CTL not built"; exit 1; }
for t in curl python3 bpftool ip jq node npm nghttp; do
    command -v $t >/dev/null || { say "test/bpf/ingress: needs $t"; exit 1; }
done
if [ ! -d "$GDIR/node_modules/@grpc/grpc-js" ]; then
    (cd "$GDIR" && npm ci --no-audit --no-fund --loglevel=error) >"$TMP/npm.log" 2>&1 ||
        { say "test/bpf/ingress: npm ci in test/grpc failed: $(tail -5 "$TMP/npm.log")"; exit 1; }
fi

CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -n "$CG2" ] || { say "test/bpf/ingress: no cgroup2 mount"; exit 1; }
CG=$CG2/$T
mkdir -p "$CG/podS" "$CG/podC" "$CG/nobody" || exit 1

# --- topology (see the top of the file)
addr() { # ns|"" dev cidr4 cidr6
    local nsarg=()
    [ -n "$1" ] && nsarg=(-n "$1")
    ip "${nsarg[@]}" addr add "$3" dev "$2" && ip "${nsarg[@]}" addr add "$4" dev "$2" nodad &&
        ip "${nsarg[@]}" link set "$2" up
}
setup() {
    local s=${T}s c=${T}c nn=${T}n
    ip netns add "$s" && ip netns add "$c" && ip netns add "$nn" || return 1
    for ns in "$s" "$c" "$nn"; do ip -n "$ns" link set lo up || return 1; done
    ip link add "${T}hs" type veth peer name eth0 netns "$s" &&
        addr "" "${T}hs" 10.77.61.1/24 fd77:61::1/64 && addr "$s" eth0 10.77.61.2/24 fd77:61::2/64 &&
        ip link add "${T}hc" type veth peer name eth0 netns "$c" &&
        addr "" "${T}hc" 10.77.62.1/24 fd77:62::1/64 && addr "$c" eth0 10.77.62.2/24 fd77:62::2/64 &&
        ip -n "$c" link add tos type veth peer name toc netns "$s" &&
        addr "$c" tos 10.77.63.2/24 fd77:63::2/64 && addr "$s" toc 10.77.63.1/24 fd77:63::1/64 &&
        ip -n "$nn" link add tos type veth peer name ton netns "$s" &&
        addr "$nn" tos 10.77.64.2/24 fd77:64::2/64 && addr "$s" ton 10.77.64.1/24 fd77:64::1/64
}
# in_pod CGROUP NS CMD...: run CMD in netns $T<NS> as a member of CGROUP. The
# cgroup is joined first: ip netns exec remounts /sys for the netns.
in_pod() {
    local cg=$1 ns=$2; shift 2
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" ip netns exec "$T$ns" "$@"
}
# at WHERE CMD...: pod S (s), pod C (c), the pod-less netns N (n) or the host (host)
at() {
    local w=$1; shift
    case $w in
    s) in_pod "$CG/podS" s "$@" ;;
    c) in_pod "$CG/podC" c "$@" ;;
    n) ip netns exec "${T}n" "$@" ;;
    host) "$@" ;;
    esac
}
bg() { # LOG CMD...: in the background, killed by cleanup
    local log=$1; shift
    "$@" >>"$log" 2>&1 &
    PIDS+=($!)
    disown $!
}
wait_for() { # FILE PATTERN [tenths]
    for _ in $(seq "${3:-100}"); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
ino() { stat -L -c %i "/run/netns/$T$1"; }
# sk_lookup links, all or those of one netns (inode)
sklookup_links() {
    bpftool link show -j 2>/dev/null | jq --arg ino "${1:-}" '[.[] |
        select(((.attach_type // "") | tostring) == "sk_lookup" or ((.type // "") | tostring) == "sk_lookup") |
        select($ino == "" or ((.netns_ino // 0) | tostring) == $ino)] | length' 2>/dev/null || echo 0
}
# owned prog|link: the ids of the BPF programs or links the daemon holds (its fdinfo)
owned() {
    cat /proc/"$DPID"/fdinfo/* 2>/dev/null | awk -v k="$1_id:" '$1 == k { print $2 }' | sort -un | xargs
}
still() { # prog|link IDS...: those of IDS that still exist
    local kind=$1 ids; shift
    ids=$(bpftool "$kind" show -j 2>/dev/null | jq -r '.[].id' | xargs)
    for i in "$@"; do [[ " $ids " == *" $i "* ]] && printf '%s ' "$i"; done
}

setup || { say "topology setup failed"; exit 1; }
bg "$TMP/pause.log" in_pod "$CG/podS" s sleep 3600 # the pods' "pause containers"
bg "$TMP/pause.log" in_pod "$CG/podC" c sleep 3600
addrs=()
for a in 10.77.61.2 10.77.63.1 10.77.64.1 127.0.0.1 "[fd77:61::2]" "[fd77:63::1]" "[fd77:64::1]"; do
    for p in $P $Q $K; do addrs+=("$a:$p"); done
done
bg "$TMP/server-s.log" in_pod "$CG/podS" s python3 "$TP" server "${addrs[@]}"
bg "$TMP/grpc-s.log" in_pod "$CG/podS" s node -r "$HERE/ingress_bind.js" "$GDIR/server.js" $G $H
bg "$TMP/server-h.log" python3 "$TP" server 10.77.62.1:$EP
bg "$TMP/grpc-h.log" env FL_BIND_HOST=10.77.62.1 node -r "$HERE/ingress_bind.js" "$GDIR/server.js" $EG $EH
for f in server-s server-h; do
    wait_for "$TMP/$f.log" READY || { say "$f did not start: $(cat "$TMP/$f.log")"; exit 1; }
done
for f in grpc-s grpc-h; do
    wait_for "$TMP/$f.log" ready || { say "$f did not start: $(cat "$TMP/$f.log")"; exit 1; }
done
INO_S=$(ino s) INO_C=$(ino c) INO_N=$(ino n)

# Callers of pod S's servers: name, where it runs, the address of S it dials
CALLERS=(c4 c6 host4 host6 n4)
declare -A WHERE=([c4]=c [c6]=c [host4]=host [host6]=host [n4]=n)
declare -A DIAL=([c4]=10.77.63.1 [c6]="[fd77:63::1]" [host4]=10.77.61.2 [host6]="[fd77:61::2]"
    [n4]=10.77.64.1)
declare -A SRC=([c4]='10\.77\.63\.2' [c6]='\[fd77:63::2\]' [host4]='10\.77\.61\.1'
    [host6]='\[fd77:61::1\]' [n4]='10\.77\.64\.2')
declare -A SDST=([c4]='10\.77\.63\.1' [c6]='\[fd77:63::1\]' [host4]='10\.77\.61\.2'
    [host6]='\[fd77:61::2\]' [n4]='10\.77\.64\.1')
cget() { # CALLER curl-args...: curl from the caller
    local w=${WHERE[$1]:-$1}; shift # a caller, or a place (s, c, n, host)
    at "$w" curl -sS -m 30 "$@" 2>&1
}
codes() { # CALLER URL: one %{http_code} line per globbed URL, over keep-alive
    cget "$1" -o /dev/null -w '%{http_code}\n' "$2"
}
binom() { # LABEL CODES N: 503s of N at 50% within 4 sigma, the rest 200
    local n503 n200 lo hi
    n503=$(grep -c '^503$' <<<"$2"); n200=$(grep -c '^200$' <<<"$2")
    lo=$(awk -v n="$3" 'BEGIN { printf "%d", n / 2 - 4 * sqrt(n) / 2 }')
    hi=$(awk -v n="$3" 'BEGIN { printf "%d", n / 2 + 4 * sqrt(n) / 2 + 0.999 }')
    [ $((n503 + n200)) = "$3" ] && [ "$n503" -ge "$lo" ] && [ "$n503" -le "$hi" ] &&
        ok "$1: $n503 of $3 aborted with 503 (50%: $lo..$hi), the rest 200" ||
        bad "$1: $n503 x 503, $n200 x 200 of $3 (want $lo..$hi x 503)" "$(sort <<<"$2" | uniq -c)"
}
none() { # LABEL CODES N: every one of N answered 200 by the server
    local n200
    n200=$(grep -c '^200$' <<<"$2")
    [ "$n200" = "$3" ] && ok "$1: $3 of $3 answered 200, none faulted" ||
        bad "$1: $n200 of $3 answered 200" "$(sort <<<"$2" | uniq -c)"
}
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# --- policies
policy_head() { # NAME
    cat <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: $1}
spec:
  seed: 11
  proxy_port: $PPORT
  targets:
    - name: placeholder
      pods: {cgroup: "$CG/nobody"}
      destination: {ip: 10.77.62.1, port: $NOPE}
EOF
}
ingress_target() { # NAME PORT [EXTRA-LINE]
    printf '    - name: %s\n      direction: ingress\n      pods: {cgroup: "%s"}\n      port: %s\n' \
        "$1" "$CG/podS" "$2"
    [ -n "${3:-}" ] && printf '      %s\n' "$3"
    return 0
}
main_rules() {
    cat <<EOF
  rules:
    - name: abort-all
      match: {path: {prefix: /abort}}
      fault:
        abort: {status: 503, body: "injected\n"}
    - name: half
      match: {path: {prefix: /half}}
      fault:
        abort: {status: 503, percent: 50}
    - name: slow
      on: [s-http]
      match: {path: {prefix: /delay}}
      fault:
        delay: {fixed: 400ms}
    - name: grpc-other
      on: [s-grpc]
      match: {grpc: {service: faultline.test.Echo, method: Other}}
      fault:
        abort: {grpc_status: RESOURCE_EXHAUSTED, message: "ingress injected"}
EOF
}
main_policy() { # [FROM-LINE for s-http]
    policy_head ingress-test
    ingress_target s-http $P "${1:-}"
    ingress_target s-grpc $G
    ingress_target s-h2 $H
    main_rules
}
main_policy >"$TMP/main.yaml"
main_policy "from: {cidr: 10.77.63.0/24}" >"$TMP/from4.yaml"
main_policy 'from: {ip: "fd77:61::1"}' >"$TMP/from6.yaml"
{ policy_head base; printf '  rules: []\n'; } >"$TMP/base.yaml"
existing_policy() { # keep|reset
    policy_head "existing-$1"
    ingress_target ka-in $K "existing: $1"
    ingress_target g-in $G "existing: $1"
    cat <<EOF
    - name: ka-out
      pods: {cgroup: "$CG/podC"}
      destination: {ip: 10.77.62.1, port: $EP}
      existing: $1
    - name: g-out
      pods: {cgroup: "$CG/podC"}
      destination: {ip: 10.77.62.1, port: $EG}
      existing: $1
  rules:
    - name: ka-abort
      match: {path: {prefix: /ka}}
      fault:
        abort: {status: 503, body: "injected\n"}
    - name: g-abort
      on: [g-in, g-out]
      match: {grpc: {method: Other}}
      fault:
        abort: {grpc_status: RESOURCE_EXHAUSTED, message: "existing injected"}
EOF
}
existing_policy keep >"$TMP/keep.yaml"
existing_policy reset >"$TMP/reset.yaml"

# start_daemon POLICY: the real daemon in the background; waits for "ready".
start_daemon() {
    cat "$TMP/daemon.log" >>"$SAVED_LOG" 2>/dev/null
    : >"$TMP/faults.log"
    : >"$TMP/daemon.log"
    "$BIN" run -f "$1" --fault-log "$TMP/faults.log" --admin "$TMP/admin.sock" \
        2>"$TMP/daemon.log" >/dev/null &
    DPID=$!
    DPIDS+=($DPID)
    for _ in $(seq 100); do
        grep -q ' ready ' "$TMP/daemon.log" 2>/dev/null && return 0
        kill -0 $DPID 2>/dev/null || break
        sleep 0.05
    done
    bad "daemon did not start" "$(cat "$TMP/daemon.log")"
    return 1
}
stop_daemon() { # SIGTERM; returns the exit status
    kill -TERM "$DPID" 2>/dev/null
    wait "$DPID"
    local rc=$?
    DPID=
    return $rc
}
apply() { # FILE: faultctl apply -f, reported on failure
    local out
    out=$("$CTL" --admin "$TMP/admin.sock" apply -f "$1" 2>&1) ||
        { bad "faultctl apply -f $(basename "$1") failed" "$out"; return 1; }
}
# until_code CALLER URL CODE [tenths]: retry a request until it is answered CODE;
# prints the milliseconds it took, returns 1 if it never was
until_code() {
    local t0 c
    t0=$(date +%s%N)
    for _ in $(seq "${4:-30}"); do
        c=$(cget "$1" -m 2 -o /dev/null -w '%{http_code}' "$2")
        [ "$c" = "$3" ] && { ms_since "$t0"; return 0; }
        sleep 0.1
    done
    ms_since "$t0"
    return 1
}

# =====================================================================
# 0. The direct path, before any daemon: every caller reaches every server
# =====================================================================
phase_direct() {
for c in "${CALLERS[@]}"; do
    out=$(cget "$c" -i "http://${DIAL[$c]}:$P/abort/direct")
    check "no daemon: $c reaches pod S:$P directly" "$out" '^HTTP/1.1 200' '^x-served-by: server' '!x-faultline'
done
out=$(cget c "http://10.77.63.1:$P/peer")
check "no daemon: the server sees pod C's own address" "$out" '^peer=10\.77\.63\.2:'
out=$(at c timeout 60 node "$GDIR/client.js" calls "10.77.63.1:$G" 2>&1)
check "no daemon: grpc-js calls from pod C to the server in pod S" "$out" '^ok unary-16MiB' '^ok bidi' '!FAIL'
out=$(cget c --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version}\n' "http://10.77.63.1:$H/hello")
check "no daemon: h2c from pod C to pod S" "$out" '^200 2$'
out=$(cget c "http://10.77.62.1:$EP/peer")
check "no daemon: pod C reaches the host's server (egress side)" "$out" '^peer=10\.77\.62\.2:'
out=$(at c timeout 20 node "$GC" count "10.77.62.1:$EG" Other 3 2>&1)
check "no daemon: grpc from pod C to the host's server" "$out" '"codes":\{"0":3\}'
}

# =====================================================================
# 1. Ingress: faults for every caller of pod S's port P, IPv4 and IPv6
# =====================================================================
phase_ingress() {
start_daemon "$TMP/main.yaml" || exit 1
say "# $(grep -m1 'transparent mode' "$TMP/daemon.log" | sed 's/.*info: //')"
if ms=$(until_code host4 "http://10.77.61.2:$P/abort/warmup" 503 30); then
    ok "ingress: pod S:$P faulted ${ms} ms after the daemon said ready"
else
    bad "ingress: pod S:$P not faulted within 3 s of ready" "$(tail -20 "$TMP/daemon.log")"
fi
n=$(sklookup_links "$INO_S"); nc=$(sklookup_links "$INO_C"); nn=$(sklookup_links "$INO_N")
[ "$n" -ge 1 ] && [ "$nc" = 0 ] && [ "$nn" = 0 ] &&
    ok "sk_lookup attached to pod S's netns ($n link), not to pod C's or netns N" ||
    bad "sk_lookup links: pod S $n, pod C $nc, netns N $nn" "$(bpftool link show 2>&1)"

for c in "${CALLERS[@]}"; do
    out=$(cget "$c" -i "http://${DIAL[$c]}:$P/abort/src-$c")
    check "$c: ingress abort injected" "$out" '^HTTP/1.1 503' '^x-faultline-injected: abort-all' \
        '^injected$' '!x-served-by'
done
# (all callers at once: the python server takes ~20 ms a request)
w=()
for c in "${CALLERS[@]}"; do codes "$c" "http://${DIAL[$c]}:$P/half/[1-400]" >"$TMP/half-$c" & w+=($!); done
for c in c4 host6; do codes "$c" "http://${DIAL[$c]}:$Q/half/[1-200]" >"$TMP/q-$c" & w+=($!); done
wait "${w[@]}"
for c in "${CALLERS[@]}"; do binom "$c -> pod S:$P /half" "$(cat "$TMP/half-$c")" 400; done
for c in c4 host6; do none "$c -> pod S:$Q (not targeted)" "$(cat "$TMP/q-$c")" 200; done
out=$(at s curl -sS -m 5 -i "http://127.0.0.1:$P/abort/loopback" 2>&1)
check "pod S to itself on 127.0.0.1:$P: not intercepted" "$out" '^HTTP/1.1 200' '^x-served-by: server'

# The proxy dials the server from inside pod S: the server sees the address the
# caller dialled; on port Q it sees the caller.
for c in c4 host6 n4; do
    out=$(cget "$c" "http://${DIAL[$c]}:$P/peer")
    check "$c via ingress: the server sees pod S's own address (proxied)" "$out" "^peer=${SDST[$c]}:[0-9]+$"
    out=$(cget "$c" "http://${DIAL[$c]}:$Q/peer")
    check "$c on port Q: the server sees the caller (direct)" "$out" "^peer=${SRC[$c]}:[0-9]+$"
done

out=$(cget host4 -o /dev/null -w '%{http_code} %{time_total}\n' "http://10.77.61.2:$P/delay/x")
code=${out%% *}; ms=$(awk -v t="${out#* }" 'BEGIN { printf "%d", t * 1000 }')
[ "$code" = 200 ] && [ "$ms" -ge 390 ] && [ "$ms" -lt 2000 ] &&
    ok "ingress delay 400ms injected (${ms} ms, then the server answered)" || bad "ingress delay: $out"
out=$(cget host4 -o /dev/null -w '%{http_code} %{time_total}\n' "http://10.77.61.2:$Q/delay/x")
code=${out%% *}; ms=$(awk -v t="${out#* }" 'BEGIN { printf "%d", t * 1000 }')
[ "$code" = 200 ] && [ "$ms" -lt 300 ] && ok "port Q: no delay (${ms} ms)" || bad "port Q delay: $out"

# 64 MiB both ways, byte-exact, through the ingress proxy
MB64=$((64 * 1024 * 1024))
python3 "$TP" pattern $MB64 >"$TMP/blob"
want=$(sha256sum <"$TMP/blob" | cut -d' ' -f1)
for c in c4 host6; do
    t0=$(date +%s%N)
    got=$(at "${WHERE[$c]}" curl -sS -m 120 "http://${DIAL[$c]}:$P/bytes/$MB64" | sha256sum | cut -d' ' -f1)
    up=$(cget "$c" -m 120 --data-binary @"$TMP/blob" -H 'content-type: application/octet-stream' \
        "http://${DIAL[$c]}:$P/sink")
    ms=$(ms_since "$t0")
    [ "$got" = "$want" ] && grep -q "len=$MB64 sha256=$want" <<<"$up" &&
        ok "$c: 64 MiB down and up byte-exact through the ingress proxy (${ms} ms)" ||
        bad "$c: 64 MiB: down $([ "$got" = "$want" ] && echo exact || echo "sha256 $got"), up: $up"
done

# h2c (nghttp, curl) and gRPC (grpc-js) through the ingress proxy
out=$(at c timeout 20 nghttp -v "http://10.77.63.1:$H/hello" "http://10.77.63.1:$H/abort/h2" 2>&1)
check "h2c (nghttp, one connection): /hello answered by the server, /abort injected" "$out" \
    ':status: 200' 'x-faultline-injected: abort-all' ':status: 503' '^hello$'
# 200 streams on one h2c connection (curl 7.88 cannot reuse an h2c connection
# for globbed URLs, even without faultline: nghttp sends them all at once)
urls=(); for i in $(seq 200); do urls+=("http://[fd77:61::2]:$H/half/$i"); done
out=$(timeout 30 nghttp -nv "${urls[@]}" 2>&1)
nc=$(grep -c 'recv SETTINGS frame <length=[0-9]*, flags=0x00' <<<"$out")
st=$(grep -oE 'recv \(stream_id=[0-9]+\) :status: [0-9]+' <<<"$out" | awk '{ print $NF }')
if [ "$nc" = 1 ]; then
    binom "h2c (nghttp, IPv6 from the host, 200 streams on one connection)" "$st" 200
else
    bad "h2c (nghttp, IPv6): $nc connections (server SETTINGS frames), want 1" "$(tail -20 <<<"$out")"
fi
out=$(at c timeout 90 node "$GDIR/client.js" calls "10.77.63.1:$G" 2>&1)
check "gRPC through ingress: unary, 16 MiB, streams, bidi unchanged" "$out" \
    '^ok unary$' '^ok unary-16MiB' '^ok server-stream' '^ok client-stream' '^ok bidi' '!FAIL'
out=$(at c timeout 30 node "$GC" count "10.77.63.1:$G" Other 20 2>&1)
check "gRPC through ingress (pod C): Other aborted RESOURCE_EXHAUSTED with the message, marked" "$out" \
    '"codes":\{"8":20\}' '"marked":20' '"ingress injected":20'
out=$(timeout 30 node "$GC" count "[fd77:61::2]:$G" Other 10 2>&1)
check "gRPC through ingress (host, IPv6): Other aborted" "$out" '"codes":\{"8":10\}' '"marked":10'
out=$(timeout 30 node "$GC" count "10.77.61.2:$G" Unary 10 2>&1)
check "gRPC through ingress (host): Unary unaffected" "$out" '"codes":\{"0":10\}' '"marked":0'

# The fault log names the real caller
sleep 0.3
for c in "${CALLERS[@]}"; do
    l=$(grep "\"path\":\"/abort/src-$c\"" "$TMP/faults.log")
    check "fault log ($c): src is the caller, dst the address it dialled" "$l" \
        "\"src\":\"${SRC[$c]}:[0-9]+\"" "\"dst\":\"${SDST[$c]}:$P\"" '"rule":"abort-all"'
done
l=$(grep '"grpc_status":8' "$TMP/faults.log" | head -1)
check "fault log (gRPC): src is pod C" "$l" '"src":"10\.77\.63\.2:[0-9]+"' "\"dst\":\"10\\.77\\.63\\.1:$G\""

# Status and metrics
out=$("$CTL" --admin "$TMP/admin.sock" -o json status 2>&1)
tj=$(jq -c '.transparent | {ingress_accepted, ingress_netns, existing_reset, sock_destroy}' <<<"$out" 2>&1)
jq -e '.transparent.ingress_accepted > 0 and .transparent.ingress_netns >= 1 and
       (.transparent.sock_destroy | type) == "boolean"' <<<"$out" >/dev/null 2>&1 &&
    ok "status: ingress counters shown and counting: $tj" || bad "status JSON: $tj" "$out"
out=$("$CTL" --admin "$TMP/admin.sock" metrics 2>&1)
check "metrics: ingress and existing-reset counters" "$out" \
    '^faultline_transparent_ingress_total [1-9]' '^faultline_transparent_existing_reset_total [0-9]'

# =====================================================================
# 1b. from: only callers from there; apply -f re-programs; removal detaches
# =====================================================================
apply "$TMP/from4.yaml"
if ms=$(until_code c4 "http://10.77.63.1:$P/abort/from4" 503 30); then
    ok "from cidr 10.77.63.0/24: pod C (10.77.63.2) faulted (${ms} ms after apply)"
else
    bad "from cidr 10.77.63.0/24: pod C not faulted"
fi
none "from cidr 10.77.63.0/24: host (10.77.61.1) outside it" "$(codes host4 "http://10.77.61.2:$P/half/[1-100]")" 100
none "from cidr 10.77.63.0/24: netns N (10.77.64.2) outside it" "$(codes n4 "http://10.77.64.1:$P/half/[1-100]")" 100
out=$(cget host4 "http://10.77.61.2:$P/peer")
check "from cidr: a caller outside it reaches the server directly" "$out" '^peer=10\.77\.61\.1:'
apply "$TMP/from6.yaml"
if ms=$(until_code host6 "http://[fd77:61::2]:$P/abort/from6" 503 30); then
    ok "from ip fd77:61::1: the host over IPv6 faulted (${ms} ms after apply)"
else
    bad "from ip fd77:61::1: the host over IPv6 not faulted"
fi
none "from ip fd77:61::1: pod C over IPv6 (fd77:63::2) outside it" "$(codes c6 "http://[fd77:63::1]:$P/half/[1-100]")" 100
apply "$TMP/base.yaml"
t0=$(date +%s%N)
out=$(cget host4 -i "http://10.77.61.2:$P/abort/removed")
ms=$(ms_since "$t0")
check "target removed by apply: direct at once (${ms} ms)" "$out" '^HTTP/1.1 200' '^x-served-by: server'
n=$(sklookup_links "$INO_S")
[ "$n" = 0 ] && ok "target removed by apply: no sk_lookup link left on pod S's netns" ||
    bad "target removed: $n sk_lookup links on pod S's netns" "$(bpftool link show 2>&1)"
}

# =====================================================================
# 2. Connections opened before the target: existing: keep, then reset
# =====================================================================
# start_clients TAG: keep-alive clients in pod C, connected before the policy:
# ingress (pod S:K, pod S:G) and egress (host:EP, host:EG); python, curl, grpc-js
start_clients() {
    local tag=$1
    rm -f "$TMP/stop"
    bg "$TMP/$tag-py-in.log" at c python3 "$KA" keepalive 10.77.63.1 $K /ka/py 100 "$TMP/stop"
    bg "$TMP/$tag-py-out.log" at c python3 "$KA" keepalive 10.77.62.1 $EP /ka/py 100 "$TMP/stop"
    # and one that no target selects (pod S's port Q): never reset, never faulted
    bg "$TMP/$tag-py-q.log" at c python3 "$KA" keepalive 10.77.63.1 $Q /ka/q 100 "$TMP/stop"
    bg "$TMP/$tag-g-in.log" at c node "$GC" loop "10.77.63.1:$G" Other 100 "$TMP/stop"
    bg "$TMP/$tag-g-out.log" at c node "$GC" loop "10.77.62.1:$EG" Other 100 "$TMP/stop"
    # curl: 40 transfers at 5 a second on one connection (8 s)
    for d in in:10.77.63.1:$K out:10.77.62.1:$EP; do
        bg "$TMP/$tag-curl-${d%%:*}.log" at c curl -s -m 30 --rate 5/s -o /dev/null \
            -w '%{http_code} %{num_connects} %{local_port}\n' "http://${d#*:}/ka/curl/[1-40]"
        CURLS+=(${PIDS[-1]})
    done
    for f in py-in py-out py-q; do wait_for "$TMP/$tag-$f.log" '^RESP 5 ' 50 || say "# $tag-$f: slow start"; done
    for f in g-in g-out; do wait_for "$TMP/$tag-$f.log" '^CALL 5 ' 50 || say "# $tag-$f: slow start"; done
}
stop_clients() {
    touch "$TMP/stop"
    for _ in $(seq 100); do
        [ "$(cat "$TMP"/"$1"-{py,g}-{in,out}.log "$TMP/$1-py-q.log" 2>/dev/null | grep -c '^END')" = 5 ] && break
        sleep 0.1
    done
    for p in "${CURLS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    CURLS=()
}
mark() { for f in "$TMP/$1"-*.log; do wc -l <"$f" >"$f.mark"; done; } # lines before the apply
before() { head -n "$(cat "$1.mark")" "$1"; }
after() { tail -n +"$(( $(cat "$1.mark") + 1 ))" "$1"; }
CURLS=()
q_untouched() { # TAG: the client of port Q kept its one connection, all 200
    check "existing $1: a connection no target selects (pod S:$Q) untouched" "$(cat "$TMP/$1-py-q.log")" \
        '^END responses=[0-9]+ connections=1 errors=0$' '!^ERR' '!status=503' '!injected=1'
}

phase_existing() {
[ -n "$DPID" ] || start_daemon "$TMP/base.yaml" || exit 1
# keep: the old connections stay direct and untouched; new ones are faulted
start_clients keep
mark keep
apply "$TMP/keep.yaml"
sleep 1.5
out=$(cget c -i "http://10.77.63.1:$K/ka/new")
check "existing keep: a new connection to pod S:$K is faulted" "$out" '^HTTP/1.1 503'
out=$(cget c -i "http://10.77.62.1:$EP/ka/new")
check "existing keep: a new egress connection to host:$EP is faulted" "$out" '^HTTP/1.1 503'
out=$(at c timeout 20 node "$GC" count "10.77.63.1:$G" Other 2 2>&1)
check "existing keep: a new gRPC channel to pod S:$G is faulted" "$out" '"codes":\{"8":2\}'
out=$(at c timeout 20 node "$GC" count "10.77.62.1:$EG" Other 2 2>&1)
check "existing keep: a new egress gRPC channel to host:$EG is faulted" "$out" '"codes":\{"8":2\}'
sleep 1
stop_clients keep
for d in in out; do
    f=$TMP/keep-py-$d.log
    na=$(after "$f" | grep -c '^RESP .* status=200 injected=0$')
    check "existing keep ($d, python): one connection throughout, every response from the server, $na after apply" \
        "$(cat "$f")" '^END responses=[0-9]+ connections=1 errors=0$' '!^ERR' '!status=503' '!injected=1' '!^CONNECT 2'
    [ "$na" -ge 10 ] || bad "existing keep ($d, python): only $na responses after apply"
    f=$TMP/keep-g-$d.log
    na=$(after "$f" | grep -c '^CALL .* code=0 ')
    check "existing keep ($d, gRPC): one connection (READY once), every call OK, $na after apply" \
        "$(cat "$f")" '^END calls=[0-9]+ ready=1$' '!code=[1-9]'
    [ "$na" -ge 10 ] || bad "existing keep ($d, gRPC): only $na calls after apply"
    f=$TMP/keep-curl-$d.log
    out=$(cat "$f")
    np=$(cut -d' ' -f3 <<<"$out" | sort -u | wc -l)
    [ "$(grep -c '^200 ' <<<"$out")" = 40 ] && [ "$np" = 1 ] &&
        ok "existing keep ($d, curl --rate): 40 of 40 answered 200 on one connection" ||
        bad "existing keep ($d, curl): $(grep -c '^200 ' <<<"$out") x 200, $np local ports" "$(sort <<<"$out" | uniq -c)"
done
q_untouched keep
apply "$TMP/base.yaml"
sleep 0.5

# reset: the old connections are destroyed at apply, the clients reconnect,
# and from then on everything is faulted
out=$("$CTL" --admin "$TMP/admin.sock" -o json status 2>&1)
R0=$(jq '.transparent.existing_reset // 0' <<<"$out" 2>/dev/null || echo 0)
start_clients reset
for f in "$TMP"/reset-{py,g}-{in,out}.log; do
    out=$(cat "$f")
    check "existing reset: before the apply, $(basename "$f" .log) is direct and unfaulted" "$out" \
        '^(RESP|CALL) 5 ' '!injected=1' '!marked=1' '!status=503' '!code=[1-9]'
done
mark reset
t0=$(date +%s%N)
apply "$TMP/reset.yaml"
sleep 3
stop_clients reset
for d in in out; do
    f=$TMP/reset-py-$d.log
    b=$(before "$f"); a=$(after "$f")
    # after the first error (or new connection), every response must be the fault
    post=$(awk '/^(ERR|CONNECT [2-9])/ { x = 1 } x && /^RESP/' <<<"$a")
    npost=$(grep -c . <<<"$post"); nf=$(grep -c 'status=503 injected=1$' <<<"$post")
    if grep -q '^ERR' <<<"$b"; then
        bad "existing reset ($d, python): errors before the apply" "$b"
    elif ! grep -qE '^CONNECT [2-9]' <<<"$a"; then
        bad "existing reset ($d, python): the connection was not reset (no reconnect)" "$(cat "$f")"
    elif [ "$npost" -ge 5 ] && [ "$nf" = "$npost" ]; then
        ok "existing reset ($d, python): reset ($(grep -m1 '^ERR' <<<"$a" | cut -d' ' -f4-)), reconnected, then $nf of $npost faulted"
    else
        bad "existing reset ($d, python): $nf of $npost responses after the reconnect faulted" "$(cat "$f")"
    fi
    f=$TMP/reset-g-$d.log
    a=$(after "$f")
    post=$(awk '/^CALL/ && !/code=0 / { x = 1 } x && /^CALL/' <<<"$a")
    npost=$(grep -c . <<<"$post"); nf=$(grep -c 'code=8 marked=1' <<<"$post")
    last=$(tail -n 5 <<<"$post" | grep -c 'code=8 marked=1')
    if ! grep -qE '^END calls=[0-9]+ ready=([2-9]|[1-9][0-9])$' "$f"; then
        bad "existing reset ($d, gRPC): the channel did not reconnect" "$(grep -vE '^CALL' "$f"; tail -5 "$f")"
    elif [ "$npost" -ge 5 ] && [ "$last" = 5 ] && ! grep -q 'code=0 ' <<<"$post"; then
        ok "existing reset ($d, gRPC): reconnected ($(grep -c '^STATE READY' "$f") x READY), then $nf of $npost calls RESOURCE_EXHAUSTED (the rest: $(grep -v 'code=8 ' <<<"$post" | grep -oE 'code=[0-9]+' | sort | uniq -c | xargs))"
    else
        bad "existing reset ($d, gRPC): $nf of $npost calls after the first failure faulted" "$(grep -vE '^CALL' "$f"; tail -8 <<<"$a")"
    fi
    f=$TMP/reset-curl-$d.log
    out=$(cat "$f")
    np=$(cut -d' ' -f3 <<<"$out" | sort -u | wc -l)
    post=$(awk '$2 > 0 && NR > 1 { x = 1 } x' <<<"$out")
    if [ "$(grep -c . <<<"$out")" != 40 ]; then
        bad "existing reset ($d, curl): $(grep -c . <<<"$out") of 40 transfers" "$out"
    elif [ "$np" -lt 2 ]; then
        bad "existing reset ($d, curl): one connection throughout, not reset" "$(sort <<<"$out" | uniq -c)"
    elif [ "$(grep -c . <<<"$post")" -ge 3 ] && ! grep -qv '^503 ' <<<"$post"; then
        ok "existing reset ($d, curl --rate): reconnected, then $(grep -c . <<<"$post") of 40 transfers 503"
    else
        bad "existing reset ($d, curl): after the reconnect not all 503" "$(uniq -c <<<"$out")"
    fi
done
out=$("$CTL" --admin "$TMP/admin.sock" -o json status 2>&1)
R1=$(jq '.transparent.existing_reset // 0' <<<"$out" 2>/dev/null || echo 0)
[ $((R1 - R0)) -ge 6 ] && jq -e '.transparent.sock_destroy == true' <<<"$out" >/dev/null &&
    ok "status: existing_reset counted $((R1 - R0)) connections (6 clients), sock_destroy true" ||
    bad "status: existing_reset $R0 -> $R1 (want +6), sock_destroy $(jq .transparent.sock_destroy <<<"$out")"
out=$("$CTL" --admin "$TMP/admin.sock" metrics 2>&1)
check "metrics: existing-reset counted" "$out" '^faultline_transparent_existing_reset_total ([6-9]|[1-9][0-9])'
q_untouched reset
ev=$(timeout 5 "$CTL" --admin "$TMP/admin.sock" -o json events 2>&1)
for t in ka-in g-in ka-out g-out; do
    n=$(jq -R --arg t "$t" 'fromjson? | objects | select(.event == "existing_reset" and .target == $t) |
        .connections' <<<"$ev" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    [ "$n" -ge 1 ] && ok "event existing_reset for target $t: $n connections" ||
        bad "no existing_reset event for target $t with connections > 0" "$(grep existing_reset <<<"$ev")"
done

}

# =====================================================================
# 3. Fail-open: SIGTERM and kill -9 detach
# =====================================================================
phase_failopen() {
if [ -n "$DPID" ]; then
stop_daemon; rc=$?
n=$(sklookup_links "$INO_S")
out=$(cget host4 -i "http://10.77.61.2:$P/abort/after-term")
[ $rc = 0 ] && [ "$n" = 0 ] && grep -q '^HTTP/1.1 200' <<<"$out" &&
    ok "SIGTERM: exit 0, no sk_lookup link on pod S's netns, direct" ||
    bad "SIGTERM: rc $rc, $n sk_lookup links" "$(head -3 <<<"$out"; tail -5 "$TMP/daemon.log")"
fi
start_daemon "$TMP/main.yaml" || exit 1
until_code host4 "http://10.77.61.2:$P/abort/term2" 503 30 >/dev/null &&
    ok "new daemon: ingress faults again" || bad "new daemon: not faulted within 3 s"
stop_daemon; rc=$?
n=$(sklookup_links "$INO_S")
out=$(cget c4 -i "http://10.77.63.1:$P/abort/after-term2")
[ $rc = 0 ] && [ "$n" = 0 ] && grep -q '^HTTP/1.1 200' <<<"$out" &&
    ok "SIGTERM (a daemon that started with the ingress target): detached, direct" ||
    bad "SIGTERM 2: rc $rc, $n sk_lookup links" "$(head -3 <<<"$out")"

start_daemon "$TMP/main.yaml" || exit 1
until_code host4 "http://10.77.61.2:$P/abort/kill" 503 30 >/dev/null &&
    ok "before kill -9: ingress faults" || bad "before kill -9: not faulted within 3 s"
PROGS=$(owned prog) LINKS=$(owned link)
[ -n "$PROGS" ] && [ -n "$LINKS" ] || bad "the daemon holds no BPF programs or links? progs '$PROGS' links '$LINKS'"
t0=$(date +%s%N)
kill -9 "$DPID"; wait "$DPID" 2>/dev/null; DPID=
until_code host4 "http://10.77.61.2:$P/abort/after-kill" 200 30 >/dev/null; x=$?
ms=$(ms_since "$t0")
[ $x = 0 ] && [ "$ms" -lt 1000 ] && ok "kill -9: the server answers directly ${ms} ms after the kill" ||
    bad "kill -9: not direct within 1 s (${ms} ms)"
all=
for c in "${CALLERS[@]}"; do
    all+=$(codes "$c" "http://${DIAL[$c]}:$P/abort/k[1-20]")$'\n'
    for i in 1 2 3 4 5; do all+=$(cget "$c" -o /dev/null -w '%{http_code}' "http://${DIAL[$c]}:$P/half/$i")$'\n'; done
done
none "after kill -9: every caller, 125 requests (25 new connections), no 503" "$(grep . <<<"$all")" 125
n=$(( $(sklookup_links "$INO_S") + $(sklookup_links "$INO_C") + $(sklookup_links "$INO_N") ))
[ "$n" = 0 ] && ok "after kill -9: bpftool link show lists no sk_lookup link on our netns" ||
    bad "after kill -9: $n sk_lookup links on our netns" "$(bpftool link show 2>&1)"
out=$(ip netns exec "${T}s" bpftool net show 2>&1)
check "after kill -9: bpftool net in pod S's netns shows nothing of faultline" "$out" '!fl_' '!sk_lookup'

# --- nothing left behind
for _ in $(seq 30); do [ -z "$(still prog $PROGS)$(still link $LINKS)" ] && break; sleep 0.1; done
lp=$(still prog $PROGS) ll=$(still link $LINKS)
[ -z "$lp$ll" ] && ok "after kill -9: none of the daemon's BPF programs ($PROGS) or links ($LINKS) is left" ||
    bad "after kill -9: programs '$lp' and links '$ll' of the daemon are still there" \
        "$(bpftool prog show 2>&1 | grep -A1 -E "^(${lp// /|}):" )"
if mountpoint -q /sys/fs/bpf; then
    p=$(find /sys/fs/bpf -name '*fl_*' 2>/dev/null | wc -l)
    [ "$p" = 0 ] && ok "nothing pinned in /sys/fs/bpf" || bad "$p pinned objects"
fi
for p in "${DPIDS[@]}"; do rmdir "$CG2/faultline-daemon-$p" 2>/dev/null; done # the killed one's
}

# =====================================================================
# 4. A kernel without bpf_sock_destroy (FL_TEST_HIDE_SOCK_DESTROY=1 makes
#    the probe answer so): existing: reset is refused with the reason, at
#    validation, at start and at apply, and the running policy stays
# =====================================================================
phase_nokfunc() {
local out rc
[ -n "$DPID" ] && stop_daemon # an earlier phase's
out=$(FL_TEST_HIDE_SOCK_DESTROY=1 "$BIN" validate -f "$TMP/reset.yaml" 2>&1); rc=$?
[ $rc = 1 ] && grep -qE "reset\.yaml:[0-9]+:[0-9]+: spec\.targets\[[0-9]+\]\.existing: reset is not available on this host: this kernel lacks the bpf_sock_destroy kfunc" <<<"$out" &&
    ok "no kfunc: faultline validate refuses existing: reset with file:line:col and the reason" ||
    bad "no kfunc: validate rc $rc" "$out"
out=$("$BIN" validate -f "$TMP/reset.yaml" 2>&1) &&
    ok "  ... and with the kfunc the same file is valid" || bad "validate with kfunc" "$out"
out=$(FL_TEST_HIDE_SOCK_DESTROY=1 timeout 20 "$BIN" run -f "$TMP/reset.yaml" --admin "$TMP/nk.sock" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "existing: reset is not available on this host" <<<"$out" &&
    ok "no kfunc: a daemon started with existing: reset exits 1 and says why" ||
    bad "no kfunc: run rc $rc" "$out"
FL_TEST_HIDE_SOCK_DESTROY=1 start_daemon "$TMP/main.yaml" || return
n=$(grep -c "existing: reset is not available" "$TMP/daemon.log")
[ "$n" = 1 ] && ok "no kfunc: the daemon says once at start that existing: reset is not available" ||
    bad "no kfunc: said $n times" "$(cat "$TMP/daemon.log")"
[ "$("$CTL" --admin "$TMP/admin.sock" -o json status | jq -r .transparent.sock_destroy)" = false ] &&
    ok "  ... status: sock_destroy false" || bad "status sock_destroy not false"
until_code host4 "http://10.77.61.2:$P/abort/nk1" 503 30 >/dev/null || bad "no kfunc: ingress not faulting"
out=$("$CTL" --admin "$TMP/admin.sock" apply -f "$TMP/reset.yaml" 2>&1); rc=$?
[ $rc != 0 ] && grep -q "existing: reset is not available on this host" <<<"$out" &&
    ok "no kfunc: faultctl apply of existing: reset is refused with the reason" ||
    bad "no kfunc: apply rc $rc" "$out"
c=$(cget host4 -o /dev/null -w '%{http_code}' "http://10.77.61.2:$P/abort/nk2")
[ "$c" = 503 ] && ok "  ... and the running policy stays (ingress still faults)" || bad "after refused apply: $c"
stop_daemon
}

# =====================================================================
# 5. The watchdog covers ingress: a stalled event loop (its stderr a pipe
#    that stops being read while SIGHUP reloads make it log) sends new
#    connections to the server directly, and steering comes back after
# =====================================================================
phase_watchdog() {
local out piper
[ -n "$DPID" ] && stop_daemon # an earlier phase's
mkfifo "$TMP/err.fifo"
: >"$TMP/wd.log"
python3 "$TP" pipe "$TMP/err.fifo" "$TMP/wd.log" & piper=$!; disown $piper
PIDS+=($piper)
"$BIN" run -f "$TMP/main.yaml" --fault-log "$TMP/faults.log" --admin "$TMP/admin.sock" \
    2>"$TMP/err.fifo" >/dev/null &
DPID=$!
DPIDS+=($DPID)
for _ in $(seq 100); do grep -q ' ready ' "$TMP/wd.log" && break; sleep 0.05; done
c=$(cget host4 -o /dev/null -w '%{http_code}' "http://10.77.61.2:$P/abort/before-stall")
[ "$c" = 503 ] && ok "watchdog: ingress faults before the stall" || bad "before the stall: $c"
kill -USR1 $piper
for _ in $(seq 60); do kill -HUP "$DPID"; sleep 0.03; done
sleep 1.6
out=$(cget host4 -i -m 3 "http://10.77.61.2:$P/abort/during-stall")
grep -q '^HTTP/1.[01] 200' <<<"$out" &&
    ok "watchdog: with the loop stalled, a new ingress connection reaches the server directly" ||
    bad "during the stall" "$(head -3 <<<"$out")"
kill -USR2 $piper
for _ in $(seq 50); do grep -q 'redirection is back on' "$TMP/wd.log" && break; sleep 0.1; done
sleep 0.3
c=$(cget host4 -o /dev/null -w '%{http_code}' "http://10.77.61.2:$P/abort/after-stall")
[ "$c" = 503 ] && ok "watchdog: ingress steered again once the loop turns" || bad "after the stall: $c"
stop_daemon
cat "$TMP/wd.log" >>"$SAVED_LOG"
}

# FL_INGRESS_PHASES=direct,ingress,existing,failopen,nokfunc,watchdog (default: all, in this order)
for ph in direct ingress existing failopen nokfunc watchdog; do
    [[ ",${FL_INGRESS_PHASES:-direct,ingress,existing,failopen,nokfunc,watchdog}," == *",$ph,"* ]] && "phase_$ph"
done

# Sanitizer reports in any daemon's log (the ASan tree)
cat "$TMP/daemon.log" >>"$SAVED_LOG" 2>/dev/null; : >"$TMP/daemon.log"
san=$(grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$SAVED_LOG")
[ -z "$san" ] && ok "no sanitizer report in the daemons' logs" || bad "sanitizer reports" "$san"

cleanup
trap - EXIT
left=$(( $(ip netns list | grep -c "^$T") + $(ip link show | grep -c "$T") + $([ -d "$CG" ] && echo 1 || echo 0) ))
left=$((left + $(pgrep -f "$T" | grep -vc "^$$\$")))
[ "$left" = 0 ] && ok "cleanup: no process, netns, veth or cgroup left" || bad "cleanup left $left objects"

if [ "$FAIL" != 0 ]; then
    say "# daemon logs (warnings and errors):"
    grep -vE ' (info|debug): ' "$SAVED_LOG" | grep -v '"event":"fault"' | tail -n 30 | sed 's/^/#   /'
fi
rm -f "$SAVED_LOG"
say "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
