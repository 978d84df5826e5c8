#!/usr/bin/env bash
# Transparent-mode benchmark, one run, one table. Two groups of rows:
#
# wrk inside a "pod" (cgroup v2 dir + netns + veth, 10.77.9.0/24) against
# nginx on the host end of the veth:
#   direct               no daemon
#   transparent sk_msg   faultline run with targets: (default)
#   ... 2 workers        the same with --workers 2 (pod connections handed off)
#   transparent TCP      the same with --no-sockmap
#   explicit             faultline with a listener on the host end of the veth
#
# wrk in a client pod against nginx in a server pod (two cgroups, two netns
# joined by one veth pair, 10.77.71.2 -> 10.77.71.3; no host address, so
# nothing on the host routes to them):
#   pod->pod direct      no daemon
#   pod->pod ingress     a direction: ingress target on the server pod's port
#                        (sk_lookup hands the connections to the proxy in the
#                        server pod's netns)
#   ... 2 workers        the same with --workers 2
#   pod->pod egress      an egress target on the client pod to the server
#                        pod's address:port (connect4 + sk_msg)
#
# Every policy has a rule that never fires, so every request is parsed and
# matched. Columns: req/s, p50 and p99, the ratio to its group's direct row,
# and CPU per request in microseconds of the proxy (the daemon's utime+stime
# from /proc/PID/stat), of wrk (its pod cgroup's cpu.stat) and of the server
# (nginx's cgroup), and of the whole machine (busy time in /proc/stat, so
# ksoftirqd and interrupts too). Softirq work is charged to whichever task was
# running, so the first three split the network cost only roughly. The notes
# column says what was checked: that the proxy counted the requests
# (requests_total), which address the server saw (GET /peer, after the run),
# and, for ingress, that the sk_lookup link sat on the server pod's netns and
# was gone after SIGTERM. Needs root. Not run by CI. About two minutes.
#
#   bash test/bench/transparent.sh [--duration 10s] [--connections 50] [--threads 1]
#        [--build DIR] [--only host|pods] [--ipv6]
#
# --ipv6 adds the four pod->pod rows again over fd77:71::/64. The machine is
# shared by client, proxy and server: the "all us" column beside the other
# three shows how much else was running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dur=10s conns=50 threads=1 build="$root/build" only='' ipv6=0
usage="usage: $0 [--duration 10s] [--connections 50] [--threads 1] [--build DIR] [--only host|pods] [--ipv6]"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) dur=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --only) only=$2; shift 2; case "$only" in host|pods) ;; *) echo "$usage" >&2; exit 2 ;; esac ;;
    --ipv6) ipv6=1; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench: transparent mode needs root" >&2; exit 1; }
for t in wrk nginx ip jq bpftool curl; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing: apt-get install -y wrk nginx-light iproute2 jq bpftool curl" >&2; exit 1; }
done
if ! [ -x "$build/faultline" ] || ! [ -x "$build/faultctl" ]; then
  echo "bench: $build/faultline or faultctl not built: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build" >&2; exit 1
fi

# Host-side backend, explicit listener, proxy port in every pod netns, the
# server pod's port.
BE=18700 EX=18701 PP=18702 SP=18710
T=flbti$$
NS=${T}n VH=${T}v        # the host-group pod and its veth's host end
NSC=${T}c NSS=${T}s      # client and server pods
CIP=10.77.71.2 SIP=10.77.71.3 CIP6=fd77:71::2 SIP6=fd77:71::3
CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -n "$CG2" ] || { echo "bench: no cgroup2 mount" >&2; exit 1; }
CG=$CG2/$T
tmp=$(mktemp -d /tmp/fl-bench-tp.XXXXXX)
pids=() dpid='' dpids=()
cleanup() {
  set +e
  if [ -n "$dpid" ]; then
    kill "$dpid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$dpid" 2>/dev/null
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for n in "$NS" "$NSC" "$NSS"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  # Whatever still runs in the bench's cgroups (nginx workers included).
  # shellcheck disable=SC2013
  for p in $(cat "$CG"/*/cgroup.procs 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  for n in "$NS" "$NSC" "$NSS"; do ip netns del "$n" 2>/dev/null; done
  for l in "$VH" "${T}vc" "${T}vs"; do ip link del "$l" 2>/dev/null; done
  for _ in 1 2 3 4 5; do
    [ -d "$CG" ] || break
    find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
    sleep 0.2
  done
  # A daemon that had to be killed with -9 leaves its own (empty) cgroup.
  for p in "${dpids[@]}"; do rmdir "$CG2/faultline-daemon-$p" 2>/dev/null; done
  rm -rf "$tmp"
  local left
  left=$( { ip netns list | grep "^$T"; ip -o link show | grep -o "${T}[a-z]*"; [ -d "$CG" ] && echo "$CG"; } 2>/dev/null | tr '\n' ' ')
  [ -z "$left" ] || echo "bench: left behind: $left" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# in_pod CGROUP NETNS CMD...: CMD in the netns as a member of CGROUP. The
# cgroup is joined first: ip netns exec remounts /sys for the netns.
# bg_in_pod and bg_in_cg (CGROUP CMD...) start CMD in the background, as the
# process whose pid lands in $pids (sh execs it; a backgrounded function
# would leave a subshell's pid there and the command out of reach of kill).
# shellcheck disable=SC2016
POD_SH='echo $$ > "$0/cgroup.procs" && ns=$1 && shift && exec ip netns exec "$ns" "$@"'
# shellcheck disable=SC2016
CG_SH='echo $$ > "$0/cgroup.procs" && exec "$@"'
in_pod() { sh -c "$POD_SH" "$@"; }
bg_in_pod() { sh -c "$POD_SH" "$@" & pids+=($!); }
bg_in_cg() { sh -c "$CG_SH" "$@" & pids+=($!); }

nginx_conf() { # DIR LISTEN... -> DIR/nginx.conf, one server answering 200 on each LISTEN
  mkdir -p "$1"
  local d=$1 l ls=; shift
  for l in "$@"; do ls="$ls listen $l;"; done
  cat > "$d/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $d/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { $ls location / { return 200 "hello from backend\n"; }
    location = /peer { return 200 "\$remote_addr"; } } }
EOC
}
wait_tcp() { # NETNS|- HOST PORT
  local x=()
  [ "$1" = - ] || x=(ip netns exec "$1")
  for _ in $(seq 100); do "${x[@]}" bash -c "(exec 3<>/dev/tcp/$2/$3)" 2>/dev/null && return 0; sleep 0.05; done
  echo "bench: nothing answers on $2:$3" >&2; exit 1
}

# Both groups' policies carry a rule that never fires.
NEVER='    - {name: never, match: {path: {exact: /never}}, fault: {abort: {status: 503}}}'
policy() { # NAME TARGET-YAML -> $tmp/NAME.yaml
  cat > "$tmp/$1.yaml" <<EOC
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: bench-$1}
spec:
  proxy_port: $PP
  targets:
$2
  rules:
$NEVER
EOC
}

start_daemon() { # POLICY ARGS...: 0 once ready, 1 (log in $tmp/daemon.log) if it exits or stalls
  local pol=$1; shift
  "$build/faultline" run -f "$pol" --fault-log /dev/null --admin "$tmp/admin.sock" "$@" 2>"$tmp/daemon.log" &
  dpid=$!; dpids+=("$dpid")
  for _ in $(seq 100); do
    grep -q ' ready ' "$tmp/daemon.log" && return 0
    kill -0 "$dpid" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$dpid" 2>/dev/null; wait "$dpid" 2>/dev/null || true; dpid=
  return 1
}
stop_daemon() { # SIGTERM; kill -9 after 5 s (and say so in $stop_note)
  stop_note=
  kill "$dpid"
  for _ in $(seq 50); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$dpid" 2>/dev/null; then kill -9 "$dpid"; stop_note="DAEMON IGNORED SIGTERM 5 s; "; fi
  wait "$dpid" 2>/dev/null || true
  dpid=
}
status() { "$build/faultctl" --admin "$tmp/admin.sock" -o json status 2>/dev/null || echo '{}'; }
ms() { # wrk latency ("812.00us", "1.20ms", "2.01s") -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
hz=$(getconf CLK_TCK)
proc_us() { # PID or /proc/PID/task/TID -> its utime+stime so far, microseconds (fields 14 and 15; comm may hold spaces)
  local d=$1; [ "${d#/}" = "$d" ] && d=/proc/$d
  awk -v hz="$hz" '{ sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1000000 / hz }' "$d/stat"
}
worker_us() { # PID -> "main-thread-us fl-worker-1-us", utime+stime of each so far
  local f t0=0 t1=0 v
  for f in /proc/"$1"/task/*; do
    v=$(proc_us "$f")
    if [ "${f##*/}" = "$1" ]; then t0=$v; elif [ "$(cat "$f/comm")" = fl-worker-1 ]; then t1=$v; fi
  done
  echo "$t0 $t1"
}
cg_us() { awk '$1 == "usage_usec" { print $2 }' "$1/cpu.stat"; }
machine_us() { # busy CPU time of the whole machine so far (user nice system irq softirq steal), microseconds
  awk -v hz="$hz" '$1 == "cpu" { printf "%.0f\n", ($2 + $3 + $4 + $7 + $8 + $9) * 1000000 / hz }' /proc/stat
}
per_req() { awk -v a="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.1f", a / n; else print "-" }'; }
netns_ino() { stat -L -c %i "/run/netns/$1"; }
sk_lookup_links() { # NETNS -> how many sk_lookup links are attached to it
  bpftool -j link show 2>/dev/null | jq --argjson ino "$(netns_ino "$1")" \
    '[.[] | select(.attach_type == "sk_lookup" and .netns_ino == $ino)] | length'
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A BASE
rows=()
row() { rows+=("$(IFS='|'; echo "$*")"); }
# run LABEL GROUP URL CLIENT-CG CLIENT-NETNS SERVER-CG: wrk in the client pod;
# one table row. The daemon, if $dpid is set, is the proxy measured.
run() {
  local label=$1 group=$2 url=$3 ccg=$4 cns=$5 scg=$6
  local out rps p50 p99 n notes p0='' p1 w0 w1 s0 s1 m0 m1 r0='' r1 pcpu=- peer
  in_pod "$ccg" "$cns" wrk -t1 -c10 -d2s "$url" >/dev/null 2>&1 || true # warm-up
  if [ -n "$dpid" ]; then r0=$(status | jq '.requests_total // 0'); p0=$(proc_us "$dpid"); fi
  w0=$(cg_us "$ccg"); s0=$(cg_us "$scg"); m0=$(machine_us)
  out=$(in_pod "$ccg" "$cns" wrk -t"$threads" -c"$conns" -d"$dur" --latency "$url")
  w1=$(cg_us "$ccg"); s1=$(cg_us "$scg"); m1=$(machine_us)
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  n=$(awk '/ requests in / { print $1 }' <<<"$out")
  p50=$(ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  notes=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
  if [ -n "$dpid" ]; then
    p1=$(proc_us "$dpid"); pcpu=$(per_req $((p1 - p0)) "$n")
    r1=$(status | jq '.requests_total // 0')
    # wrk counts the answers it read; the proxy also the few in flight at the end.
    if [ $((r1 - r0)) -lt $((n * 9 / 10)) ]; then notes+="NOT PROXIED: the proxy counted $((r1 - r0)) of $n requests; "
    else notes+="proxy counted $((r1 - r0)) req; "; fi
  fi
  # Which address the server sees: the pod's own through transparent mode.
  peer=$(in_pod "$ccg" "$cns" curl -s --max-time 5 "${url}peer" || true)
  notes+="server saw ${peer:-nothing}; "
  [ "$label" = "$group" ] && BASE[$group]=$rps
  row "$label" "$group" "$rps" "$p50" "$p99" "$pcpu" "$(per_req $((w1 - w0)) "$n")" "$(per_req $((s1 - s0)) "$n")" "$(per_req $((m1 - m0)) "$n")" "$notes"
}
nostart() { # LABEL GROUP: a row for a daemon that did not start, with its first error
  row "$1" "$2" - - - - - - - "DAEMON DID NOT START: $(grep -v '^$' "$tmp/daemon.log" | head -3 | tr '\n' ' ')"
  { echo "bench: $1: the daemon did not start:"; sed 's/^/  | /' "$tmp/daemon.log"; } >&2
}
append_note() { local r=${rows[-1]}; rows[-1]="$r$1"; }

# ---- group 1: wrk in a pod, nginx on the host end of its veth
redir=
if [ "$only" != pods ]; then
  ip netns add "$NS"
  ip link add "$VH" type veth peer name eth0 netns "$NS"
  ip addr add 10.77.9.1/24 dev "$VH"; ip link set "$VH" up
  ip -n "$NS" link set lo up
  ip -n "$NS" addr add 10.77.9.2/24 dev eth0; ip -n "$NS" link set eth0 up
  mkdir -p "$CG/pod" "$CG/be"
  # The pod's "pause container", so the daemon finds the pod's netns.
  bg_in_pod "$CG/pod" "$NS" sleep 3600
  nginx_conf "$tmp/be" "10.77.9.1:$BE"
  bg_in_cg "$CG/be" nginx -p "$tmp/be" -c "$tmp/be/nginx.conf"
  policy tp "    - {name: be, pods: {cgroup: \"$CG/pod\"}, destination: {ip: 10.77.9.1, port: $BE}}"
  cat > "$tmp/ex.yaml" <<EOC
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: bench-explicit}
spec:
  listeners:
    - name: be
      listen: 10.77.9.1:$EX
      upstream: 10.77.9.1:$BE
  rules:
$NEVER
EOC
  wait_tcp - 10.77.9.1 $BE
  U="http://10.77.9.1:$BE/"
  H=("$CG/pod" "$NS" "$CG/be")
  run "direct" "direct" "$U" "${H[@]}"
  if start_daemon "$tmp/tp.yaml"; then
    run "transparent sk_msg" "direct" "$U" "${H[@]}"
    stop_daemon
    redir=$(grep -o '[0-9]* connections redirected.*sk_msg redirects' "$tmp/daemon.log" || true)
  else nostart "transparent sk_msg" "direct"; fi
  if start_daemon "$tmp/tp.yaml" --workers 2; then
    run "transparent sk_msg, 2 workers" "direct" "$U" "${H[@]}"; stop_daemon
  else nostart "transparent sk_msg, 2 workers" "direct"; fi
  if start_daemon "$tmp/tp.yaml" --no-sockmap; then
    run "transparent TCP (--no-sockmap)" "direct" "$U" "${H[@]}"; stop_daemon
  else nostart "transparent TCP (--no-sockmap)" "direct"; fi
  if start_daemon "$tmp/ex.yaml"; then
    run "explicit" "direct" "http://10.77.9.1:$EX/" "${H[@]}"; stop_daemon
  else nostart "explicit" "direct"; fi
fi

# ---- group 2: client pod -> server pod
if [ "$only" != host ]; then
  ip netns add "$NSC"; ip netns add "$NSS"
  ip link add "${T}vc" type veth peer name "${T}vs"
  ip link set "${T}vc" netns "$NSC"; ip link set "${T}vs" netns "$NSS"
  for x in "$NSC ${T}vc $CIP $CIP6" "$NSS ${T}vs $SIP $SIP6"; do
    read -r n l a a6 <<<"$x"
    ip -n "$n" link set "$l" name eth0
    ip -n "$n" link set lo up
    ip -n "$n" addr add "$a/24" dev eth0
    ip -n "$n" addr add "$a6/64" dev eth0 nodad
    ip -n "$n" link set eth0 up
  done
  mkdir -p "$CG/client" "$CG/server"
  bg_in_pod "$CG/client" "$NSC" sleep 3600
  bg_in_pod "$CG/server" "$NSS" sleep 3600
  nginx_conf "$tmp/srv" "$SIP:$SP" "[$SIP6]:$SP"
  bg_in_pod "$CG/server" "$NSS" nginx -p "$tmp/srv" -c "$tmp/srv/nginx.conf"
  wait_tcp "$NSC" "$SIP" $SP
  policy in "    - {name: srv-in, direction: ingress, pods: {cgroup: \"$CG/server\"}, port: $SP}"
  policy out "    - {name: srv-out, pods: {cgroup: \"$CG/client\"}, destination: {cidr: 10.77.71.0/24, port: $SP}}
    - {name: srv-out6, pods: {cgroup: \"$CG/client\"}, destination: {cidr: \"fd77:71::/64\", port: $SP}}"
  P=("$CG/client" "$NSC" "$CG/server")
  fams=(4); [ "$ipv6" = 1 ] && fams+=(6)
  for f in "${fams[@]}"; do
    if [ "$f" = 4 ]; then U="http://$SIP:$SP/" sfx=; else U="http://[$SIP6]:$SP/" sfx=" v6"; fi
    g="pod->pod direct$sfx"
    run "$g" "$g" "$U" "${P[@]}"
    l="pod->pod ingress (sk_lookup)$sfx"
    if start_daemon "$tmp/in.yaml"; then
      links=$(sk_lookup_links "$NSS")
      run "$l" "$g" "$U" "${P[@]}"
      acc=$(status | jq '.transparent.ingress_accepted // "missing"')
      stop_daemon
      sleep 0.2
      append_note "${stop_note}ingress_accepted $acc; sk_lookup links on the pod netns: $links while running, $(sk_lookup_links "$NSS") after SIGTERM"
    else nostart "$l" "$g"; fi
    l="pod->pod ingress, 2 workers$sfx"
    if start_daemon "$tmp/in.yaml" --workers 2; then
      read -r t0 t1 <<<"$(worker_us "$dpid")"
      run "$l" "$g" "$U" "${P[@]}"
      read -r t2 t3 <<<"$(worker_us "$dpid")"
      stop_daemon
      append_note "${stop_note}CPU of worker 0 / fl-worker-1 during the run: $(( (t2 - t0) / 1000 )) / $(( (t3 - t1) / 1000 )) ms"
    else nostart "$l" "$g"; fi
    l="pod->pod egress (sk_msg)$sfx"
    if start_daemon "$tmp/out.yaml"; then
      run "$l" "$g" "$U" "${P[@]}"; stop_daemon
      append_note "$stop_note"
    else nostart "$l" "$g"; fi
  done
fi

echo
echo "wrk -t$threads -c$conns -d$dur in a pod; nginx (1 worker) on the host end of the veth (group direct) or in a server pod (group pod->pod); $(nproc) CPUs, $(uname -r)"
echo "load average before / after: $load0 / $(cut -d' ' -f1-3 /proc/loadavg)"
echo "CPU columns: microseconds of CPU per request (proxy: daemon utime+stime; wrk, server: their cgroups' cpu.stat; all: the whole machine's busy time, /proc/stat)"
printf '%-32s %12s %10s %10s %8s %9s %9s %9s %9s  %s\n' "mode" "req/s" "p50 ms" "p99 ms" "vs direct" "proxy us" "wrk us" "server us" "all us" "notes"
for r in "${rows[@]}"; do
  IFS='|' read -r l g rps p50 p99 pc wc sc mc notes <<<"$r"
  ratio=$(awk -v a="$rps" -v b="${BASE[$g]:-0}" 'BEGIN { printf "%.2f", (b > 0 && a > 0 ? a / b : 0) }')
  printf '%-32s %12s %10s %10s %8s %9s %9s %9s %9s  %s\n' "$l" "$rps" "$p50" "$p99" "$ratio" "$pc" "$wc" "$sc" "$mc" "$notes"
done
[ -z "$redir" ] || echo "(sk_msg run: $redir)"
