# Shared plumbing for the benchmarks in test/bench/: a temp dir removed on exit,
# background processes killed on exit, and waiting for a port.
#
#   source "$(dirname "$0")/lib.sh"; bench_init NAME
#   some-server & pids+=($!); wait_port 18901

pids=()
tmp=

bench_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$tmp" ] && rm -rf "$tmp"
}

# bench_init NAME: makes $tmp and arms the cleanup.
bench_init() {
  tmp=$(mktemp -d "/tmp/fl-bench-$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

# wait_port PORT [TRIES]: returns once something accepts on 127.0.0.1:PORT.
wait_port() {
  local i
  for ((i = 0; i < ${2:-200}; i++)); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listens on port $1 (logs in $tmp)" >&2
  exit 1
}
