#!/usr/bin/env bash
# HTTP/1.1 keep-alive benchmark: wrk against the backend directly, through
# faultline (no rule firing), HAProxy and nginx (one thread/worker each), and
# faultline with a 10% abort rule, in one run. Prints req/s, p50, p99 and the
# ratio to HAProxy. Not run by CI.
#
#   bash test/bench/http1.sh [--duration 10s] [--connections 50] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dur=10s conns=50 build="$root/build"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) dur=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "usage: $0 [--duration 10s] [--connections 50] [--build DIR]" >&2; exit 2 ;;
  esac
done
for t in wrk haproxy nginx; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing: apt-get install -y wrk haproxy nginx-light" >&2; exit 1; }
done
[ -x "$build/faultline" ] || { echo "bench: $build/faultline not built: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build" >&2; exit 1; }

BE=18901 FL=18902 HA=18903 NG=18904 FLA=18905
# shellcheck source=test/bench/lib.sh
source "$here/lib.sh"
bench_init bench

# Backend: nginx, one worker, a small fixed response.
mkdir -p "$tmp/be" "$tmp/ng"
cat > "$tmp/be/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/be/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BE; location / { return 200 "hello from backend\n"; } } }
EOC
nginx -p "$tmp/be" -c "$tmp/be/nginx.conf" & pids+=($!)

cat > "$tmp/ng/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/ng/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$BE; keepalive 64; }
  server { listen 127.0.0.1:$NG;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOC
nginx -p "$tmp/ng" -c "$tmp/ng/nginx.conf" & pids+=($!)

cat > "$tmp/haproxy.cfg" <<EOC
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HA
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BE
EOC
haproxy -f "$tmp/haproxy.cfg" -db & pids+=($!)

bench_policy pass "$FL" "$BE" "$BENCH_NEVER"
bench_policy abort "$FLA" "$BE" "$BENCH_ABORT10"
"$build/faultline" run -f "$tmp/pass.yaml" --admin "$tmp/a1.sock" --fault-log /dev/null 2>"$tmp/fl1.err" & pids+=($!)
"$build/faultline" run -f "$tmp/abort.yaml" --admin "$tmp/a2.sock" --fault-log "$tmp/abort.log" 2>"$tmp/fl2.err" & pids+=($!)
for p in $BE $FL $HA $NG $FLA; do wait_port "$p"; done

# wrk prints latency percentiles with --latency; pick req/s, p50, p99.
run() {
  local name=$1 port=$2 out
  wrk -t1 -c"$conns" -d"$dur" --latency "http://127.0.0.1:$port/" > "$tmp/$name.wrk" 2>&1
  out=$(awk '/Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} END {print rps, p50, p99}' "$tmp/$name.wrk")
  echo "$name $out"
}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0; else if (v ~ /s$/) printf "%.3f", v*1000; else print v }'; }

echo "wrk -t1 -c$conns -d$dur, $(nproc) cores, $(uname -r)"
results=()
for spec in "direct:$BE" "faultline:$FL" "haproxy:$HA" "nginx:$NG" "faultline-abort10:$FLA"; do
  results+=("$(run "${spec%%:*}" "${spec##*:}")")
done
ha_rps=$(printf '%s\n' "${results[@]}" | awk '$1=="haproxy" {print $2}')
printf '%-20s %12s %10s %10s %12s\n' target req/s p50_ms p99_ms vs_haproxy
for r in "${results[@]}"; do
  set -- $r
  printf '%-20s %12s %10s %10s %12s\n' "$1" "$2" "$(to_ms "$3")" "$(to_ms "$4")" \
    "$(awk -v a="$2" -v b="$ha_rps" 'BEGIN { if (b > 0) printf "%.2fx", a/b; else print "-" }')"
done
n503=$(grep -c '"fault":"abort"' "$tmp/abort.log" || true)
echo "faultline-abort10: $n503 aborts logged"
