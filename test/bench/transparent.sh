#!/usr/bin/env bash
# Transparent-mode benchmark, one run: wrk inside a "pod" (cgroup v2 dir +
# netns + veth, 10.77.9.0/24) against nginx on the host end of the veth,
#   direct               no daemon
#   transparent sk_msg   faultline run with targets: (default)
#   ... 2 workers        the same with --workers 2 (pod connections handed off)
#   transparent TCP      the same with --no-sockmap
#   explicit             faultline with a listener on the host end of the veth
# Prints req/s, p50 and p99, and the ratio to direct. The policy has a rule
# that never fires, so every request is parsed and matched. Needs root. Not
# run by CI.
#
#   bash test/bench/transparent.sh [--duration 10s] [--connections 50] [--threads 1] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dur=10s conns=50 threads=1 build="$root/build"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) dur=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "usage: $0 [--duration 10s] [--connections 50] [--threads 1] [--build DIR]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench: transparent mode needs root" >&2; exit 1; }
for t in wrk nginx ip; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing: apt-get install -y wrk nginx-light iproute2" >&2; exit 1; }
done
[ -x "$build/faultline" ] || { echo "bench: $build/faultline not built: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build" >&2; exit 1; }

BE=18520 EX=18521 PP=18522
T=flbench$$
NS=${T}n VH=${T}v
CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -n "$CG2" ] || { echo "bench: no cgroup2 mount" >&2; exit 1; }
CG=$CG2/$T
tmp=$(mktemp -d /tmp/fl-bench-tp.XXXXXX)
pids=() dpid=
cleanup() {
  set +e
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  ip link del "$VH" 2>/dev/null
  for _ in 1 2 3 4 5; do
    [ -d "$CG" ] || break
    find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
    sleep 0.2
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS"
ip link add "$VH" type veth peer name eth0 netns "$NS"
ip addr add 10.77.9.1/24 dev "$VH"; ip link set "$VH" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add 10.77.9.2/24 dev eth0; ip -n "$NS" link set eth0 up
mkdir -p "$CG/pod"
# The pod's "pause container", so the daemon finds the pod's netns.
sh -c 'echo $$ > "$0/cgroup.procs" && exec ip netns exec "$1" sleep 3600' "$CG/pod" "$NS" & pids+=($!)

mkdir -p "$tmp/be"
cat > "$tmp/be/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/be/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 10.77.9.1:$BE; location / { return 200 "hello from backend\n"; } } }
EOC
nginx -p "$tmp/be" -c "$tmp/be/nginx.conf" & pids+=($!)

# Both policies carry a rule that never fires, so every request is parsed and matched.
NEVER='    - {name: never, match: {path: {exact: /never}}, fault: {abort: {status: 503}}}'
cat > "$tmp/tp.yaml" <<EOC
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: bench-transparent}
spec:
  proxy_port: $PP
  targets:
    - name: be
      pods: {cgroup: "$CG/pod"}
      destination: {ip: 10.77.9.1, port: $BE}
  rules:
$NEVER
EOC
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

start_daemon() { # policy args...
  local pol=$1; shift
  "$build/faultline" run -f "$pol" --fault-log /dev/null --admin "$tmp/admin.sock" "$@" 2>"$tmp/daemon.log" &
  dpid=$!
  for _ in $(seq 100); do grep -q ' ready ' "$tmp/daemon.log" && return 0; sleep 0.05; done
  echo "bench: daemon did not start:" >&2; cat "$tmp/daemon.log" >&2; exit 1
}
stop_daemon() { kill "$dpid"; wait "$dpid" 2>/dev/null || true; dpid=; }

in_pod() { sh -c 'echo $$ > "$0/cgroup.procs" && ns=$1 && shift && exec ip netns exec "$ns" "$@"' "$CG/pod" "$NS" "$@"; }

for _ in $(seq 100); do (exec 3<>/dev/tcp/10.77.9.1/$BE) 2>/dev/null && break; sleep 0.05; done

# run LABEL URL: wrk in the pod; one table row.
ms() { # wrk latency ("812.00us", "1.20ms", "2.01s") -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
declare -A RPS
rows=()
run() {
  local label=$1 url=$2 out rps p50 p99 errs
  in_pod wrk -t1 -c10 -d2s "$url" >/dev/null 2>&1 || true # warm-up
  out=$(in_pod wrk -t"$threads" -c"$conns" -d"$dur" --latency "$url")
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  p50=$(ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  errs=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
  RPS[$label]=$rps
  rows+=("$label|$rps|$p50|$p99|$errs")
}

run "direct" "http://10.77.9.1:$BE/"
start_daemon "$tmp/tp.yaml"
run "transparent sk_msg" "http://10.77.9.1:$BE/"
grep -q 'connections redirected' "$tmp/daemon.log" || true
stop_daemon
redir=$(grep -o '[0-9]* connections redirected.*sk_msg redirects' "$tmp/daemon.log" || true)
start_daemon "$tmp/tp.yaml" --workers 2
run "transparent sk_msg, 2 workers" "http://10.77.9.1:$BE/"
stop_daemon
start_daemon "$tmp/tp.yaml" --no-sockmap
run "transparent TCP (--no-sockmap)" "http://10.77.9.1:$BE/"
stop_daemon
start_daemon "$tmp/ex.yaml"
run "explicit" "http://10.77.9.1:$EX/"
stop_daemon

echo
echo "wrk -t$threads -c$conns -d$dur inside the pod; nginx on the host end of the veth; $(nproc) CPUs, $(uname -r)"
printf '%-32s %12s %10s %10s %8s  %s\n' "mode" "req/s" "p50 ms" "p99 ms" "vs direct" "errors"
for r in "${rows[@]}"; do
  IFS='|' read -r l rps p50 p99 errs <<<"$r"
  ratio=$(awk -v a="$rps" -v b="${RPS[direct]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  printf '%-32s %12s %10s %10s %8s  %s\n' "$l" "$rps" "$p50" "$p99" "$ratio" "$errs"
done
echo "(sk_msg run: $redir)"
