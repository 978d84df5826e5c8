#!/usr/bin/env bash
# HTTP/2 benchmark: h2load against an nginx h2c backend directly, through
# faultline (no rule firing), through HAProxy in HTTP/2 mode (proto h2 on bind
# and server, one thread), and through faultline with a 10% abort rule, in one
# run. Prints req/s, mean and max request time side by side and the ratio to
# HAProxy. Not run by CI.
#
#   bash test/bench/grpc.sh [--duration 10] [--clients 50] [--streams 10] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dur=10 clients=50 streams=10 build="$root/build"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) dur=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "usage: $0 [--duration SECONDS] [--clients N] [--streams N] [--build DIR]" >&2; exit 2 ;;
  esac
done
for t in h2load haproxy nginx; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing: apt-get install -y nghttp2-client haproxy nginx-light" >&2; exit 1; }
done
[ -x "$build/faultline" ] || { echo "bench: $build/faultline not built: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true

BE=19951 FL=19952 HA=19953 FLA=19954
# shellcheck source=test/bench/lib.sh
source "$here/lib.sh"
bench_init bench-h2

# Backend: nginx, one worker, HTTP/2 over cleartext (prior knowledge).
mkdir -p "$tmp/be"
cat > "$tmp/be/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/be/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  http2_max_concurrent_streams 256;
  server { listen 127.0.0.1:$BE http2; location / { return 200 "hello from backend\n"; } } }
EOC
nginx -p "$tmp/be" -c "$tmp/be/nginx.conf" & pids+=($!)

cat > "$tmp/haproxy.cfg" <<EOC
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$HA proto h2
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BE proto h2
EOC
haproxy -f "$tmp/haproxy.cfg" -db & pids+=($!)

bench_policy pass "$FL" "$BE" "$BENCH_NEVER"
bench_policy abort "$FLA" "$BE" "$BENCH_ABORT10"
"$build/faultline" run -f "$tmp/pass.yaml" --admin "$tmp/a1.sock" --fault-log /dev/null 2>"$tmp/fl1.err" & pids+=($!)
"$build/faultline" run -f "$tmp/abort.yaml" --admin "$tmp/a2.sock" --fault-log "$tmp/abort.log" 2>"$tmp/fl2.err" & pids+=($!)
for p in $BE $FL $HA $FLA; do wait_port "$p"; done

# h2load prints "finished in T, R req/s" and "time for request: min max mean sd +/-sd".
run() {
  local name=$1 port=$2
  h2load -t1 -c"$clients" -m"$streams" -D"$dur" --warm-up-time=1 "http://127.0.0.1:$port/" > "$tmp/$name.out" 2>&1
  awk -v n="$name" '
    /^finished in/ {rps=$4}
    /^requests:/ {ok=$8; failed=$10; errored=$12}
    /^time for request:/ {mean=$6; max=$5}
    END {print n, rps, mean, max, ok, failed + errored}' "$tmp/$name.out"
}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0; else if (v ~ /s$/) printf "%.3f", v*1000; else print v }'; }

echo "h2load -t1 -c$clients -m$streams -D$dur, $(nproc) cores, $(uname -r)"
results=()
for spec in "direct:$BE" "faultline:$FL" "haproxy-h2:$HA" "faultline-abort10:$FLA"; do
  results+=("$(run "${spec%%:*}" "${spec##*:}")")
done
ha_rps=$(printf '%s\n' "${results[@]}" | awk '$1=="haproxy-h2" {print $2}')
printf '%-20s %12s %10s %10s %12s %10s\n' target req/s mean_ms max_ms vs_haproxy non2xx
for r in "${results[@]}"; do
  set -- $r
  printf '%-20s %12s %10s %10s %12s %10s\n' "$1" "$2" "$(to_ms "$3")" "$(to_ms "$4")" \
    "$(awk -v a="$2" -v b="$ha_rps" 'BEGIN { if (b > 0) printf "%.2fx", a/b; else print "-" }')" "$6"
done
n503=$(grep -c '"fault":"abort"' "$tmp/abort.log" || true)
echo "faultline-abort10: $n503 aborts logged"
