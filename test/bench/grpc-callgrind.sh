#!/usr/bin/env bash
# Instructions per HTTP/2 request through faultline, from callgrind: stable on
# a busy machine where req/s is not. Runs faultline under callgrind twice in
# front of an nginx h2c backend, once with a small and once with a large
# h2load run (same connections and streams), and divides the difference in
# instructions by the difference in requests, so start-up, connection setup
# and teardown cancel out. Also prints the top functions of the large run.
#
#   bash test/bench/grpc-callgrind.sh [--build DIR] [--small N] [--large N] [--top N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build" small=2000 large=22000 top=25
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --small) small=$2; shift 2 ;;
    --large) large=$2; shift 2 ;;
    --top) top=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--small N] [--large N] [--top N]" >&2; exit 2 ;;
  esac
done
for t in h2load nginx valgrind callgrind_annotate; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing: apt-get install -y nghttp2-client nginx-light valgrind" >&2; exit 1; }
done
[ -x "$build/faultline" ] || { echo "bench: $build/faultline not built" >&2; exit 1; }

BE=${FL_CG_PORT_BASE:-19961} FL=$((BE + 1))
# shellcheck source=test/bench/lib.sh
source "$here/lib.sh"
bench_init cg-h2

mkdir -p "$tmp/be"
cat > "$tmp/be/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/be/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  http2_max_concurrent_streams 256;
  server { listen 127.0.0.1:$BE http2; location / { return 200 "hello from backend\n"; } } }
EOC
nginx -p "$tmp/be" -c "$tmp/be/nginx.conf" & pids+=($!)
bench_policy pass "$FL" "$BE" "$BENCH_NEVER"
wait_port "$BE"

# Prints the total instruction count of one faultline run serving n requests.
measure() {
  local n=$1 out="$tmp/cg.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$build/faultline" run -f "$tmp/pass.yaml" --admin "$tmp/a.sock" --fault-log /dev/null \
    2>"$tmp/vg.$n.err" & local vp=$!
  wait_port "$FL"
  h2load -t1 -c50 -m10 -n"$n" "http://127.0.0.1:$FL/" >"$tmp/h2load.$n" 2>&1
  grep -q "requests: $n total, $n started, $n done, $n succeeded" "$tmp/h2load.$n" ||
    { cat "$tmp/h2load.$n" >&2; exit 1; }
  kill -INT "$vp"
  wait "$vp" || true
  awk '/^summary:/ {print $2}' "$out"
}
a=$(measure "$small")
b=$(measure "$large")
echo "callgrind: $(( (b - a) / (large - small) )) instructions per request" \
  "(runs of $small and $large requests, h2load -c50 -m10)"
if [ -n "${FL_CG_KEEP:-}" ]; then cp "$tmp/cg.$large" "$FL_CG_KEEP"; echo "profile kept in $FL_CG_KEEP"; fi
callgrind_annotate --inclusive=no "$tmp/cg.$large" 2>/dev/null | sed -n '/^Ir/,$p' | head -n $((top + 2)) || true
