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

# The rules most benchmarks use: one that never matches (the proxy's cost with
# rule evaluation but no fault) and a 10% abort.
BENCH_NEVER='    - {name: never, match: {path: {prefix: /never-matches}}, fault: {abort: {status: 503}}}'
BENCH_ABORT10='    - {name: abort10, fault: {abort: {status: 503, percent: 10}}}'

# bench_policy NAME PORT UPSTREAM_PORT RULES-YAML: writes $tmp/NAME.yaml, one
# listener 127.0.0.1:PORT -> 127.0.0.1:UPSTREAM_PORT.
bench_policy() {
  cat > "$tmp/$1.yaml" <<EOC
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: bench-$1}
spec:
  ttl: 1h
  max_active_faults: 100000
  listeners:
    - {name: bench, listen: 127.0.0.1:$2, upstream: 127.0.0.1:$3}
  rules:
$4
EOC
}
