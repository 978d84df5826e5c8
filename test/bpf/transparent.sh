#!/bin/bash
# Transparent mode end to end: the real daemon (faultline run -f POLICY with
# targets:), real clients (curl, a python client) inside "pods" (cgroup v2 dir
# + netns + veth, addresses in 10.77.0.0/16 and fd77::/16), servers on the host
# side of the veths, ports 18500-18599. Needs root, cgroup v2 and BPF. Removes
# everything it made, also on failure.
#
# usage: test/bpf/transparent.sh [path/to/faultline]
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(readlink -f "${1:-$HERE/../../build/faultline}")
PEER=$HERE/tp_peer.py
ID=$$
T=fltp$ID # name prefix for netns, links, cgroups
TMP=$(mktemp -d /tmp/fl-tp-test.XXXXXX)
PPORT=18510 # the proxy port inside each pod netns
SPORT=18501 # selected destination port
UPORT=18502 # unselected port on the same server
DPORT=18503 # selected, with a delay rule (no sk_msg)
PASS=0 FAIL=0
PIDS=()
DPID=
DPIDS=()

# shellcheck source=test/bpf/lib.sh
source "$HERE/lib.sh"

SAVED_LOG=$(mktemp /tmp/fl-tp-daemon.XXXXXX) # every daemon's log, shown on failure
cleanup() {
    set +e
    cat "$TMP/daemon.log" >>"$SAVED_LOG" 2>/dev/null
    for p in "${DPIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for ns in a b c d; do
        for p in $(ip netns pids "$T$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    done
    wait 2>/dev/null
    for ns in a b c d; do
        ip netns del "$T$ns" 2>/dev/null
        ip link del "${T}v$ns" 2>/dev/null
    done
    if [ -n "${CG:-}" ] && [ -d "$CG" ]; then
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
            [ -d "$CG" ] || break
            sleep 0.2
        done
    fi
    # A daemon killed with -9 leaves its (empty) cgroup; the next one removes
    # stale ones too, but do not leave it to chance.
    for p in "${DPIDS[@]}"; do [ -n "${CG2:-}" ] && rmdir "$CG2/faultline-daemon-$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { say "test/bpf/transparent: needs root"; exit 1; }
[ -x "$BIN" ] || { say "test/bpf/transparent: $BIN not built"; exit 1; }
for t in curl python3 bpftool ip jq; do
    command -v $t >/dev/null || { say "test/bpf/transparent: needs $t"; exit 1; }
done

CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -n "$CG2" ] || { say "test/bpf/transparent: no cgroup2 mount"; exit 1; }
CG=$CG2/$T
mkdir -p "$CG/podA/ctr" "$CG/podC" "$CG/other" || exit 1

# Pod n: netns $T<x>, veth 10.77.n.2 / fd77:n::2, host end 10.77.n.1 / fd77:n::1.
mkpod() { # x n
    local ns=$T$1 v=${T}v$1
    ip netns add "$ns" &&
        ip link add "$v" type veth peer name eth0 netns "$ns" &&
        ip addr add "10.77.$2.1/24" dev "$v" &&
        ip addr add "fd77:$2::1/64" dev "$v" nodad &&
        ip link set "$v" up &&
        ip -n "$ns" link set lo up &&
        ip -n "$ns" addr add "10.77.$2.2/24" dev eth0 &&
        ip -n "$ns" addr add "fd77:$2::2/64" dev eth0 nodad &&
        ip -n "$ns" link set eth0 up
}
# in_pod CGROUP NS CMD...: run CMD in the netns as a member of CGROUP. The
# cgroup is joined first: ip netns exec remounts /sys for the netns.
in_pod() {
    local cg=$1 ns=$2; shift 2
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" ip netns exec "$T$ns" "$@"
}
bg() { "$@" >>"$TMP/bg.log" 2>&1 & PIDS+=($!); disown $!; }
pause_in() { bg in_pod "$1" "$2" sleep 600; } # the pod's "pause container"

mkpod a 1 && mkpod b 2 && mkpod c 3 || { say "pod setup failed"; exit 1; }
pause_in "$CG/podA/ctr" a
pause_in "$CG/other" b
pause_in "$CG/podC" c
# An unrelated, unmarked listener on the proxy port in pod C: faultline cannot
# open its listener there, so pod C has hooks but no proxy.
: >"$TMP/impostor.log"
bg ip netns exec "${T}c" python3 "$PEER" impostor 127.0.0.1 $PPORT "$TMP/impostor.log"
addrs=()
for n in 1 2 3; do
    for p in $SPORT $UPORT $DPORT; do addrs+=("10.77.$n.1:$p"); done
done
for p in $SPORT $UPORT $DPORT; do addrs+=("[fd77:1::1]:$p"); done
bg python3 "$PEER" server "${addrs[@]}"

cat >"$TMP/policy.yaml" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: tp-test}
spec:
  seed: 7
  proxy_port: $PPORT
  targets:
    - name: web4
      pods: {cgroup: "$CG/pod*"}
      destination: {cidr: 10.77.0.0/16, port: $SPORT}
    - name: web6
      pods: {cgroup: ["$CG/podA"]}
      destination: {cidr: "fd77::/16", port: $SPORT}
    - name: slow4
      pods: {cgroup: "$CG/podA"}
      destination: {ip: 10.77.1.1, port: $DPORT}
    - name: slow6
      pods: {cgroup: "$CG/podA"}
      destination: {ip: "fd77:1::1", port: $DPORT}
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
      on: [slow4, slow6]
      match: {path: {prefix: /delay}}
      fault:
        delay: {fixed: 400ms}
    - name: slow-conn
      on: [slow4, slow6]
      match: {path: {prefix: /toxic}}
      fault:
        connection: {latency: {fixed: 300ms}}
EOF

# start_daemon [args...]: the real daemon in the background; waits for "ready".
start_daemon() {
    cat "$TMP/daemon.log" >>"$SAVED_LOG" 2>/dev/null
    : >"$TMP/faults.log"
    local err=${DAEMON_ERR:-$TMP/daemon.log}
    "$BIN" run -f "$TMP/policy.yaml" --fault-log "$TMP/faults.log" --admin "$TMP/admin.sock" "$@" \
        2>"$err" >/dev/null &
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
hooks_on() { bpftool cgroup show "$1" 2>/dev/null | grep -c '^[0-9]'; }
stat_sum() { # index into fl_stats: 0 redirected, 1 no listener, 2 sk_msg redirects
    local v
    for _ in 1 2 3 4 5; do
        v=$(bpftool map dump name fl_stats -j 2>/dev/null |
            jq "[.[] | .formatted | select(.key == $1) | .values[].value] | add" 2>/dev/null | head -1)
        [[ "$v" =~ ^[0-9]+$ ]] && { echo "$v"; return; }
        sleep 0.1
    done
    echo "stat_sum: cannot read fl_stats: $(bpftool map dump name fl_stats -j 2>&1 | head -c 300)" >&2
    echo 0
}
curl_in() { # cg ns args...
    local cg=$1 ns=$2; shift 2
    in_pod "$cg" "$ns" curl -sS -m 10 "$@" 2>&1
}

for _ in $(seq 50); do grep -q READY "$TMP/bg.log" && break; sleep 0.1; done
grep -q READY "$TMP/bg.log" || { say "server did not start: $(cat "$TMP/bg.log")"; exit 1; }
start_daemon || exit 1
say "# $(grep 'transparent mode:' "$TMP/daemon.log" | head -1 | sed 's/.*info: //')"

# --- a missing requirement: one clear message, exit status 2
if command -v setpriv >/dev/null; then
    chmod 755 "$TMP"; chmod 644 "$TMP/policy.yaml"
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" run -f "$TMP/policy.yaml" \
        --admin "$TMP/nobody.sock" 2>&1); rc=$?
    [ $rc = 2 ] && grep -q 'needs root' <<<"$out" && [ "$(wc -l <<<"$out")" = 1 ] &&
        ok "not root: exit 2 with one line: ${out#faultline: }" || bad "not root: rc $rc" "$out"
fi

# --- enrolment
n=$(hooks_on "$CG/podA"); c=$(hooks_on "$CG/podC"); o=$(hooks_on "$CG/other")
[ "$n" = 5 ] && [ "$c" = 5 ] && [ "$o" = 0 ] &&
    ok "glob selects podA and podC (5 hooks each), not 'other'" ||
    bad "hooks: podA $n, podC $c, other $o" "$(cat "$TMP/daemon.log")"

# --- faults over IPv4 and IPv6, from a child cgroup of the selected pod
A="$CG/podA/ctr"
out=$(curl_in "$A" a -i http://10.77.1.1:$SPORT/abort/v4)
check "IPv4: abort injected" "$out" '^HTTP/1.1 503' '^x-faultline-injected: abort-all' '^injected$' '!x-served-by'
out=$(curl_in "$A" a -i "http://[fd77:1::1]:$SPORT/abort/v6")
check "IPv6: abort injected" "$out" '^HTTP/1.1 503' '^x-faultline-injected: abort-all' '!x-served-by'
out=$(curl_in "$A" a -i http://10.77.1.1:$SPORT/plain)
check "IPv4: unmatched request reaches the server" "$out" '^HTTP/1.1 200' '^x-served-by: server' '^server /plain$'

for u in "10.77.1.1" "[fd77:1::1]"; do
    out=$(curl_in "$A" a -o /dev/null -w '%{http_code} %{time_total}\n' "http://$u:$DPORT/delay/x")
    code=${out%% *}; t=${out#* }
    ms=$(awk -v t="$t" 'BEGIN { printf "%d", t * 1000 }')
    [ "$code" = 200 ] && [ "$ms" -ge 390 ] && [ "$ms" -lt 2000 ] &&
        ok "$u: delay 400ms injected (${ms} ms, then the server answered)" ||
        bad "$u: delay: code $code after ${ms} ms" "$out"
done

# A connection fault (latency toxic) on a transparently steered connection:
# it starts at the first matching request and then holds every answer on it.
for u in "10.77.1.1" "[fd77:1::1]"; do
    out=$(curl_in "$A" a -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} %{time_total}\n' \
        "http://$u:$DPORT/plain/before" "http://$u:$DPORT/toxic/x" "http://$u:$DPORT/plain/after")
    ms=$(awk '{ printf "%d ", $2 * 1000 }' <<<"$out")
    read -r m1 m2 m3 <<<"$ms"
    [ "$(awk '{print $1}' <<<"$out" | sort -u)" = 200 ] && [ "$m1" -lt 250 ] && [ "$m2" -ge 290 ] &&
        [ "$m3" -ge 290 ] && [ "$m3" -lt 2000 ] &&
        ok "$u: latency toxic on a steered connection: from its first match on (${ms}ms)" ||
        bad "$u: latency toxic: ${ms}ms" "$out"
done

for u in "10.77.1.1" "[fd77:1::1]"; do
    codes=$(curl_in "$A" a -o /dev/null -w '%{http_code}\n' "http://$u:$SPORT/half/[1-200]")
    n503=$(grep -c '^503$' <<<"$codes"); n200=$(grep -c '^200$' <<<"$codes")
    [ $((n503 + n200)) = 200 ] && [ "$n503" -ge 70 ] && [ "$n503" -le 130 ] &&
        ok "$u: percent 50 over 200 keep-alive requests: $n503 aborted" ||
        bad "$u: percent 50: $n503 x 503, $n200 x 200" "$(head -5 <<<"$codes")"
done

# --- the fault log names the pod's source and the original destination
sleep 0.3
l4=$(grep '"path":"/abort/v4"' "$TMP/faults.log")
check "fault log (IPv4): pod source, original destination, target" "$l4" \
    '"src":"10\.77\.1\.2:[0-9]+"' "\"dst\":\"10\\.77\\.1\\.1:$SPORT\"" '"rule":"abort-all"'
l6=$(grep '"path":"/abort/v6"' "$TMP/faults.log")
check "fault log (IPv6): pod source, original destination" "$l6" \
    '"src":"\[fd77:1::2\]:[0-9]+"' "\"dst\":\"\\[fd77:1::1\\]:$SPORT\""

# --- status and metrics show the transparent-mode counters
CTL=${CTL:-$(dirname "$BIN")/faultctl}
out=$("$CTL" --admin "$TMP/admin.sock" -o table status 2>&1)
check "faultctl status: transparent mode redirecting, counters shown" "$out" \
    '^transparent +redirecting, sk_msg on; [1-9][0-9]* pods' '[1-9][0-9]* redirected'
out=$("$CTL" --admin "$TMP/admin.sock" metrics 2>&1)
check "metrics: redirected, sk_msg and fail-open counters" "$out" \
    '^faultline_transparent_redirected_total [1-9]' '^faultline_transparent_skmsg_redirects_total [0-9]' \
    '^faultline_transparent_fail_open_total\{cause="watchdog"\} 0$'

# --- getpeername in the app, source address at the server
for u in 10.77.1.1 fd77:1::1; do
    out=$(in_pod "$A" a timeout 10 python3 "$PEER" client $u $SPORT /peer /abort/peer 2>&1)
    if [ $u = 10.77.1.1 ]; then pe="^PEER 10\.77\.1\.1:$SPORT$"; src='^BODY peer=10\.77\.1\.2:'
    else pe="^PEER \[fd77:1::1\]:$SPORT$"; src='^BODY peer=\[fd77:1::2\]:'; fi
    check "$u: getpeername shows the original destination; server sees the pod's address; proxied" \
        "$out" "$pe" "$src" '^STATUS 503'
done

# --- not selected: another pod, an unmatched port
out=$(curl_in "$CG/other" b -i http://10.77.2.1:$SPORT/abort/other)
check "unselected pod reaches the server untouched" "$out" '^HTTP/1.1 200' '^x-served-by: server' '!x-faultline'
out=$(curl_in "$A" a -i http://10.77.1.1:$UPORT/abort/port)
check "unmatched port reaches the server untouched" "$out" '^HTTP/1.1 200' '^x-served-by: server' '!x-faultline'
out=$(in_pod "$CG/other" b timeout 10 python3 "$PEER" client 10.77.2.1 $SPORT /peer 2>&1)
check "unselected pod: direct connection from its own address" "$out" "^PEER 10\.77\.2\.1:$SPORT$" '^BODY peer=10\.77\.2\.2:'

# --- hooks attached but no proxy listener in the netns: direct
nl0=$(stat_sum 1)
out=$(curl_in "$CG/podC" c -i http://10.77.3.1:$SPORT/abort/c)
nl1=$(stat_sum 1)
check "pod C (hooks, no listener: port taken by another program) goes direct" "$out" \
    '^HTTP/1.1 200' '^x-served-by: server'
[ ! -s "$TMP/impostor.log" ] && [ "$nl1" -gt "$nl0" ] &&
    ok "pod C: the unmarked listener got nothing; counted as no-listener ($nl0 -> $nl1)" ||
    bad "pod C: impostor log '$(cat "$TMP/impostor.log")', no-listener $nl0 -> $nl1"

# --- the program holding the proxy port in pod C exits: the daemon's next try
# (every 5 s) opens its listener, and pod C's traffic is steered from then on
pkill -f "$PEER impostor" 2>/dev/null
t0=$(date +%s)
steered=
for _ in $(seq 40); do
    out=$(curl_in "$CG/podC" c -i http://10.77.3.1:$SPORT/abort/c-again)
    grep -q '^HTTP/1.1 503' <<<"$out" && { steered=$(($(date +%s) - t0)); break; }
    sleep 0.25
done
[ -n "$steered" ] && [ "$steered" -le 7 ] && grep -q 'listening on 127.0.0.1.*the port is free again' "$TMP/daemon.log" &&
    ok "pod C: once its proxy port is free, steered within ${steered} s (retry every 5 s)" ||
    bad "pod C: port freed, not steered within 10 s" "$(grep -i 'netns' "$TMP/daemon.log" | tail -5)"
[ "$(grep -c 'cannot open the proxy listener' "$TMP/daemon.log")" = 1 ] &&
    ok "pod C: the taken port was warned about once, not at every try" ||
    bad "pod C: warnings: $(grep -c 'cannot open the proxy listener' "$TMP/daemon.log")"

# --- a pod that appears while the daemon runs is enrolled, and released when gone
mkpod d 4 || bad "pod D setup"
mkdir -p "$CG/podD"
bg python3 "$PEER" server 10.77.4.1:$SPORT
pause_in "$CG/podD" d
dpause=${PIDS[-1]}
for _ in $(seq 40); do grep -q "enrolled pod $CG/podD" "$TMP/daemon.log" && break; sleep 0.1; done
sleep 0.2
out=$(curl_in "$CG/podD" d -i http://10.77.4.1:$SPORT/abort/d)
check "new pod D enrolled without restart (listener in its netns, fault injected)" "$out" '^HTTP/1.1 503'
pkill -9 -P "$dpause" 2>/dev/null; kill -9 "$dpause" 2>/dev/null
for p in $(ip netns pids "${T}d"); do kill -9 "$p"; done
for _ in $(seq 20); do rmdir "$CG/podD" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 40); do grep -q "released pod $CG/podD" "$TMP/daemon.log" && break; sleep 0.1; done
out=$(grep -E "released pod $CG/podD|netns [0-9]+: no selected pod left" "$TMP/daemon.log")
check "vanished pod D released, its netns listener closed" "$out" "released pod $CG/podD" 'no selected pod left'

# --- reload (SIGHUP) re-programs targets: select the unmatched port, then not
reload() { # policy-file
    local n0
    n0=$(grep -c 'reloaded ' "$TMP/daemon.log")
    cp "$1" "$TMP/policy.yaml"
    kill -HUP "$DPID"
    for _ in $(seq 40); do [ "$(grep -c 'reloaded ' "$TMP/daemon.log")" -gt "$n0" ] && break; sleep 0.05; done
    sleep 0.2 # the rescan it triggers runs on the thread pool
}
cp "$TMP/policy.yaml" "$TMP/policy.orig"
sed "s|^  rules:|    - name: late4\n      pods: {cgroup: \"$CG/podA\"}\n      destination: {ip: 10.77.1.1, port: $UPORT}\n  rules:|" \
    "$TMP/policy.orig" >"$TMP/policy.late"
reload "$TMP/policy.late"
out=$(curl_in "$A" a -i http://10.77.1.1:$UPORT/abort/reload)
check "SIGHUP: a target added by a reload is steered at once" "$out" '^HTTP/1.1 503'
reload "$TMP/policy.orig"
out=$(curl_in "$A" a -i http://10.77.1.1:$UPORT/abort/reload2)
check "SIGHUP: a target removed by a reload goes direct again" "$out" '^HTTP/1.1 200' '^x-served-by: server'

# --- 64 MiB both ways, byte-exact, through sk_msg
MB64=$((64 * 1024 * 1024))
python3 "$PEER" pattern $MB64 >"$TMP/blob"
want=$(sha256sum <"$TMP/blob" | cut -d' ' -f1)
bulk() { # label host
    local h=$1 got up
    got=$(curl_in "$A" a "http://$h:$SPORT/bytes/$MB64" | sha256sum | cut -d' ' -f1)
    up=$(curl_in "$A" a --data-binary @"$TMP/blob" -H 'content-type: application/octet-stream' \
        "http://$h:$SPORT/sink")
    [ "$got" = "$want" ] && grep -q "len=$MB64 sha256=$want" <<<"$up"
}
for h in 10.77.1.1 "[fd77:1::1]"; do
    m0=$(stat_sum 2)
    t0=$(date +%s%N)
    bulk "$h"; x=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    m1=$(stat_sum 2)
    [ $x = 0 ] && [ $((m1 - m0)) -gt 100 ] &&
        ok "$h: 64 MiB down and up byte-exact via sk_msg ($((m1 - m0)) sk_msg redirects, ${ms} ms)" ||
        bad "$h: 64 MiB via sk_msg: exact=$((1 - x)) redirects $((m1 - m0))"
done
# A delay rule applies to 'slow4': its connections stay off sk_msg.
m0=$(stat_sum 2)
got=$(curl_in "$A" a "http://10.77.1.1:$DPORT/bytes/$MB64" | sha256sum | cut -d' ' -f1)
m1=$(stat_sum 2)
[ "$got" = "$want" ] && [ $((m1 - m0)) -lt 20 ] &&
    ok "target with a delay rule: 64 MiB byte-exact, not accelerated ($((m1 - m0)) sk_msg redirects)" ||
    bad "delay target: exact=$([ "$got" = "$want" ] && echo 1 || echo 0) redirects $((m1 - m0))"

# --- SIGTERM detaches cleanly
stop_daemon; rc=$?
n=$(( $(hooks_on "$CG/podA") + $(hooks_on "$CG/podC") ))
[ $rc = 0 ] && [ "$n" = 0 ] && [ ! -d "$CG2/faultline-daemon-${DPIDS[-1]}" ] &&
    grep -q 'hooks detached, daemon cgroup removed' "$TMP/daemon.log" &&
    ok "SIGTERM: exit 0, hooks detached, daemon cgroup removed" ||
    bad "SIGTERM: rc $rc, $n hooks left" "$(tail -5 "$TMP/daemon.log")"
say "# $(grep 'connections redirected' "$TMP/daemon.log" | sed 's/.*info: //')"
out=$(curl_in "$A" a -i http://10.77.1.1:$SPORT/abort/after-term)
check "after SIGTERM: direct" "$out" '^HTTP/1.1 200' '^x-served-by: server'

# --- --no-sockmap, with 2 workers: byte-exact, no sk_msg at all, and the
# pods' connections spread over both workers (accepted on worker 0, handed off)
start_daemon --no-sockmap --workers 2 || exit 1
in_pod "$A" a bash -c 'for i in 1 2 3 4 5 6 7 8 9 10; do
    exec {fd}<>/dev/tcp/10.77.1.1/'"$SPORT"'; printf "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n" >&$fd; done
    sleep 3' >/dev/null 2>&1 &
hold=$!
per=
for _ in $(seq 40); do
    per=$(curl -s --unix-socket "$TMP/admin.sock" http://x/v1/status | jq -c .worker_connections)
    [ "$per" = "[5,5]" ] && break
    sleep 0.05
done
[ "$per" = "[5,5]" ] && ok "--workers 2: 10 pod connections served 5 and 5 by the two workers" ||
    bad "--workers 2: connections per worker $per, expected [5,5]"
wait "$hold" 2>/dev/null
for h in 10.77.1.1 "[fd77:1::1]"; do
    t0=$(date +%s%N)
    bulk "$h"; x=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    m=$(stat_sum 2)
    [ $x = 0 ] && [ "$m" = 0 ] &&
        ok "$h: 64 MiB down and up byte-exact with --no-sockmap (0 sk_msg redirects, ${ms} ms)" ||
        bad "$h: --no-sockmap: exact=$((1 - x)) sk_msg redirects $m"
done
out=$(curl_in "$A" a -i http://10.77.1.1:$SPORT/abort/nosockmap)
check "--no-sockmap: faults still injected" "$out" '^HTTP/1.1 503'

# --- fail-open: kill -9
t0=$(date +%s%N)
kill -9 "$DPID"; wait "$DPID" 2>/dev/null; DPID=
out=$(curl_in "$A" a -i http://10.77.1.1:$SPORT/abort/after-kill)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "after kill -9: the pod reaches the server directly" "$out" '^HTTP/1.1 200' '^x-served-by: server'
[ "$ms" -lt 1000 ] && ok "after kill -9: answered directly ${ms} ms after the kill" || bad "after kill -9: ${ms} ms"
n=$(( $(hooks_on "$CG/podA") + $(hooks_on "$CG/podC") ))
hl=$(bpftool cgroup show "$CG/podA")
[ "$n" = 0 ] && [ -z "$hl" ] && ok "after kill -9: bpftool cgroup show lists nothing" || bad "after kill -9: $n hooks" "$hl"

# --- watchdog: a stalled event loop fails open, and recovers. The loop is
# stalled for real: its stderr goes to a pipe that stops being read, and
# SIGHUP reloads make it log until the write blocks.
mkfifo "$TMP/err.fifo"
python3 "$PEER" pipe "$TMP/err.fifo" "$TMP/daemon.log" & PIPER=$!; disown $PIPER
PIDS+=($PIPER)
: >"$TMP/daemon.log"
DAEMON_ERR=$TMP/err.fifo start_daemon || exit 1
grep -q "removed $CG2/faultline-daemon-.*killed" "$TMP/daemon.log" &&
    ok "stale cgroup of the killed daemon removed at the next start" ||
    bad "no stale-cgroup removal logged" "$(head -5 "$TMP/daemon.log")"
out=$(curl_in "$A" a -i http://10.77.1.1:$SPORT/abort/before-stall)
check "watchdog: redirecting before the stall" "$out" '^HTTP/1.1 503'
kill -USR1 $PIPER
for _ in $(seq 60); do kill -HUP "$DPID"; sleep 0.03; done
sleep 1.6
out=$(curl_in "$A" a -i -m 3 http://10.77.1.1:$SPORT/abort/during-stall)
check "watchdog: with the loop stalled, a new connection goes direct" "$out" '^HTTP/1.1 200' '^x-served-by: server'
kill -USR2 $PIPER
for _ in $(seq 50); do grep -q 'redirection is back on' "$TMP/daemon.log" && break; sleep 0.1; done
sleep 0.3
out=$(curl_in "$A" a -i http://10.77.1.1:$SPORT/abort/after-stall)
check "watchdog: redirection back on once the loop turns" "$out" '^HTTP/1.1 503'
out=$(grep -E 'has not turned|back on' "$TMP/daemon.log")
check "watchdog: fail-open logged" "$out" 'redirection is off \(fail-open\)' 'back on'
stop_daemon
out=$(grep 'connections redirected' "$TMP/daemon.log")
check "shutdown log counts the fail-open event" "$out" ' [1-9][0-9]* fail-open events'

# --- nothing left behind
for _ in $(seq 30); do
    left=$(bpftool prog show 2>/dev/null | grep -cE 'name fl_(connect|sockops|sk_msg|getpeer)')
    [ "$left" = 0 ] && break
    sleep 0.1
done
[ "$left" = 0 ] && ok "no faultline BPF program left loaded" || bad "$left programs still loaded"
if mountpoint -q /sys/fs/bpf; then
    p=$(find /sys/fs/bpf -name '*fl_*' 2>/dev/null | wc -l)
    [ "$p" = 0 ] && ok "nothing pinned in /sys/fs/bpf" || bad "$p pinned objects"
fi
d=$(ls -d "$CG2"/faultline-daemon-* 2>/dev/null | wc -l)
[ "$d" = 0 ] && ok "no daemon cgroup left" || bad "$d daemon cgroups left" "$(ls -d "$CG2"/faultline-daemon-*)"

cleanup
trap - EXIT
left=$(( $(ip netns list | grep -c "^$T") + $(ip link show | grep -c "$T") + $([ -d "$CG" ] && echo 1 || echo 0) ))
[ "$left" = 0 ] && ok "cleanup: no netns, veth or cgroup left" || bad "cleanup left $left objects"

if [ "$FAIL" != 0 ]; then
    say "# daemon logs (warnings and errors):"
    grep -vE ' (info|debug): ' "$SAVED_LOG" | grep -v '"event":"fault"' | tail -n 30 | sed 's/^/#   /'
fi
rm -f "$SAVED_LOG"
say "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
