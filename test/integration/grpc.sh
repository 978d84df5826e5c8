#!/usr/bin/env bash
# HTTP/2 and gRPC through the real daemon with real peers: grpc-js (client and
# server, from test/grpc, installed here with npm ci), nghttp and h2load.
# One daemon, one listener per scenario, rules scoped to it with `on:`.
#
#   bash test/integration/grpc.sh [--build DIR]
#
# Ports: FL_GRPC_PORT_BASE (default 19500) .. +20, loopback only.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build"
[ "${1:-}" = "--build" ] && build=$2
base=${FL_GRPC_PORT_BASE:-19500}
G=$((base + 1)) H=$((base + 2))
L_PASS=$((base + 10)) L_ABORT=$((base + 11)) L_DELAY=$((base + 12))
L_PCT=$((base + 13)) L_RESET=$((base + 14)) L_H2=$((base + 15)) L_DEAD=$((base + 16))
DEAD=$((base + 3)) # nothing listens here
BADUP=$((base + 4)) L_BADUP=$((base + 17))
gdir="$root/test/grpc"
pass=0 failn=0

for t in node npm nghttp h2load; do
  command -v "$t" >/dev/null || { echo "grpc.sh: $t is missing (apt-get install -y nodejs npm nghttp2-client)" >&2; exit 1; }
done
[ -x "$build/faultline" ] || { echo "grpc.sh: $build/faultline is not built" >&2; exit 1; }

tmp=$(mktemp -d /tmp/fl-grpc.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${FL_TEST_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { failn=$((failn + 1)); echo "FAIL $*"; }
check() { # check NAME CMD...: the command's success is the outcome
  local name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/     /' "$tmp/out"; fi
}

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "grpc.sh: nothing listens on port $1" >&2
  return 1
}

(cd "$gdir" && npm ci --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1) ||
  { cat "$tmp/npm.log"; echo "grpc.sh: npm ci failed"; echo "0 passed, 1 failed"; exit 1; }

node "$gdir/server.js" "$G" "$H" >"$tmp/server.log" 2>&1 & pids+=($!)
node "$gdir/badupstream.js" "$BADUP" >"$tmp/badupstream.log" 2>&1 & pids+=($!)

cat >"$tmp/policy.yaml" <<EOC
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: grpc-test
spec:
  listeners:
    - {name: pass,    listen: 127.0.0.1:$L_PASS,  upstream: 127.0.0.1:$G}
    - {name: abort,   listen: 127.0.0.1:$L_ABORT, upstream: 127.0.0.1:$G}
    - {name: delay,   listen: 127.0.0.1:$L_DELAY, upstream: 127.0.0.1:$G}
    - {name: percent, listen: 127.0.0.1:$L_PCT,   upstream: 127.0.0.1:$G}
    - {name: reset,   listen: 127.0.0.1:$L_RESET, upstream: 127.0.0.1:$G}
    - {name: h2,      listen: 127.0.0.1:$L_H2,    upstream: 127.0.0.1:$H}
    - {name: dead,    listen: 127.0.0.1:$L_DEAD,  upstream: 127.0.0.1:$DEAD}
    - {name: badup,   listen: 127.0.0.1:$L_BADUP, upstream: 127.0.0.1:$BADUP}
  rules:
    - name: unary-down
      on: [abort]
      match: {grpc: {service: faultline.test.Echo, method: Unary}}
      fault:
        abort: {grpc_status: RESOURCE_EXHAUSTED, message: "faultline: 100% injected"}
    - name: unary-slow
      on: [delay]
      match: {grpc: {method: Unary}}
      fault:
        delay: {fixed: 300ms}
    - name: unary-flaky
      on: [percent]
      match: {path: {exact: /faultline.test.Echo/Unary}}
      fault:
        abort: {grpc_status: UNAVAILABLE, message: flaky, percent: 30}
    - name: unary-reset
      on: [reset]
      match: {grpc: {method: Unary}}
      fault:
        reset: {}
    - name: h2-503
      on: [h2]
      match: {path: {prefix: /status-abort}, headers: [{name: x-chaos, exact: "on"}]}
      fault:
        abort: {status: 503, body: "injected\n", headers: {Retry-After: "7"}}
EOC
"$build/faultline" run -f "$tmp/policy.yaml" --admin "$tmp/admin.sock" --fault-log "$tmp/faults.log" \
  >"$tmp/daemon.log" 2>&1 & fl_pid=$!
pids+=($fl_pid)
for p in $G $H $BADUP $L_PASS $L_H2; do wait_port "$p" || { cat "$tmp/daemon.log" "$tmp/server.log"; echo "0 passed, 1 failed"; exit 1; }; done

client() { timeout 120 node "$gdir/client.js" "$@"; }

# 1. Every call type passes unchanged, incl. 16 MiB by hash.
check "grpc: unary, 16 MiB unary, server/client streaming and bidi pass unchanged" \
  client calls 127.0.0.1:$L_PASS
sed 's/^/     /' "$tmp/out"

# 2. Abort: exact code and message; Other on the same channel succeeds.
check "grpc abort: RESOURCE_EXHAUSTED with the configured message and marker" \
  client abort 127.0.0.1:$L_ABORT 8 "faultline: 100% injected" unary-down

# 3. Reset: only that stream.
check "grpc reset: the Unary stream is reset, Other on the same channel succeeds" \
  client reset 127.0.0.1:$L_RESET

# 4. Delay: Unary held >= 300 ms, Other not held (client-measured).
delay_ok() {
  local j; j=$(client delay 127.0.0.1:$L_DELAY 10) || { echo "$j"; return 1; }
  echo "$j"
  node -e 'const j=JSON.parse(process.argv[1]); process.exit(j.unary_min>=295 && j.other_median<100 ? 0 : 1)' "$j"
}
check "grpc delay: Unary delayed >= 300 ms, Other not delayed" delay_ok
sed 's/^/     /' "$tmp/out"

check "grpc delay: a held call cancelled by the client's deadline frees its stream only" \
  client deadline 127.0.0.1:$L_DELAY 100

# 5. Percent accuracy: 30% of >= 5000 calls within 4 standard deviations.
pct_ok() {
  local n=6000 j; j=$(client percent 127.0.0.1:$L_PCT $n 50) || { echo "$j"; return 1; }
  echo "$j" | tee "$tmp/pct.json"
  node -e '
    const j = JSON.parse(process.argv[1]), n = j.n, p = 0.3;
    const hit = j.counts["14"] || 0, okc = j.counts["0"] || 0;
    const sd = Math.sqrt(n * p * (1 - p));
    console.log(`aborted ${hit} of ${n}, expected ${n * p} +- ${(4 * sd).toFixed(0)} (4 sd)`);
    process.exit(hit + okc === n && Math.abs(hit - n * p) <= 4 * sd ? 0 : 1);' "$j"
}
check "grpc percent: 30% abort over 6000 calls within 4 sd" pct_ok
sed 's/^/     /' "$tmp/out"

# 6. Plain HTTP/2 with nghttp: pass-through, and an HTTP status abort.
check "h2 nghttp: GET passes through" sh -c "nghttp http://127.0.0.1:$L_H2/hello | grep -qx hello"
check "h2 nghttp: POST body echoed" sh -c "printf 'body-bytes' | nghttp -d - http://127.0.0.1:$L_H2/echo | grep -qx body-bytes"
h2_abort() {
  nghttp -v -H 'x-chaos: on' http://127.0.0.1:$L_H2/status-abort/1 >"$tmp/nghttp.out" 2>&1
  grep -q ':status: 503' "$tmp/nghttp.out" && grep -q 'x-faultline-injected: h2-503' "$tmp/nghttp.out" &&
    grep -q 'retry-after: 7' "$tmp/nghttp.out" && grep -qx 'injected' "$tmp/nghttp.out" || { cat "$tmp/nghttp.out"; return 1; }
  # Without the header the rule does not match: the upstream answers.
  nghttp http://127.0.0.1:$L_H2/status-abort/1 | grep -qx hello &&
    nghttp http://127.0.0.1:$L_H2/status/404 | grep -qx 'status 404'
}
check "h2 abort: 503 with body, headers and x-faultline-injected; unmatched passes" h2_abort

check "h2 upstream down: 502 naming the upstream, connection stays usable" sh -c \
  "nghttp -v http://127.0.0.1:$L_DEAD/a http://127.0.0.1:$L_DEAD/b 2>&1 | grep -c ':status: 502' | grep -qx 2"

# A malformed response (no :status; :status in trailers) resets that stream
# only; valid responses on the same upstream connection pass.
bad_upstream() {
  local u=http://127.0.0.1:$L_BADUP
  timeout 10 nghttp -v $u/a $u/b $u/c $u/d >"$tmp/badup.out" 2>&1 || { cat "$tmp/badup.out"; return 1; }
  [ "$(grep -cx ok "$tmp/badup.out")" = 2 ] && [ "$(grep -c 'recv RST_STREAM' "$tmp/badup.out")" = 2 ] ||
    { cat "$tmp/badup.out"; return 1; }
}
check "h2 malformed upstream responses: those streams reset, the others pass" bad_upstream

# 7. h2load completes every request.
h2load_ok() {
  h2load -n 20000 -c 8 -m 32 http://127.0.0.1:$L_H2/hello >"$tmp/h2load.out" 2>&1
  grep -E '^requests:' "$tmp/h2load.out"
  grep -q 'requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored' "$tmp/h2load.out"
}
check "h2load: 20000 requests over 8 connections x 32 streams all succeed" h2load_ok
sed 's/^/     /' "$tmp/out"

# 8. Misbehaving clients are cut off; a concurrent well-behaved one is not harmed.
abuse_ok() {
  client loop 127.0.0.1:$L_PASS 3000 >"$tmp/loop.out" & local lp=$!
  sleep 0.5
  local g r
  g=$(node "$gdir/misbehave.js" garbage 127.0.0.1 $L_PASS)
  r=$(node "$gdir/misbehave.js" resets 127.0.0.1 $L_PASS)
  wait $lp
  echo "$g"; echo "$r"; cat "$tmp/loop.out"
  node -e '
    const g = JSON.parse(process.argv[1]), r = JSON.parse(process.argv[2]), l = JSON.parse(process.argv[3]);
    const ok = g.closed && g.goaway !== null && g.goaway !== 0 &&
      r.closed && r.goaway === 11 && l.fail === 0 && l.ok > 0;
    process.exit(ok ? 0 : 1);' "$g" "$r" "$(cat "$tmp/loop.out")"
}
check "abuse: garbage after preface and a reset burst are cut off (GOAWAY), another connection unharmed" abuse_ok
sed 's/^/     /' "$tmp/out"
check "abuse: one warning line per offending connection" \
  sh -c "[ \$(grep -c 'HTTP/2 client .*closing the connection' '$tmp/daemon.log') -eq 2 ]"

# 9. Fault log lines: proto, path and grpc_status.
sleep 0.3
flog_ok() {
  grep -q '"rule":"unary-down","fault":"abort","grpc_status":8,"proto":"grpc","method":"POST","path":"/faultline.test.Echo/Unary"' "$tmp/faults.log" &&
    grep -q '"rule":"unary-slow","fault":"delay","delay_ms":300,"proto":"grpc"' "$tmp/faults.log" &&
    grep -q '"rule":"unary-slow","fault":"delay","delay_ms":300,"proto":"grpc".*,"status":200}$' "$tmp/faults.log" &&
    grep -q '"rule":"unary-reset","fault":"reset","proto":"grpc"' "$tmp/faults.log" &&
    grep -q '"rule":"h2-503","fault":"abort","status":503,"proto":"h2","method":"GET","path":"/status-abort/1"' "$tmp/faults.log" || {
    head -5 "$tmp/faults.log"; return 1; }
  # one line per injected fault: the percent run's aborts
  local want; want=$(node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8").split("\n").find(l=>l.startsWith("{\"n\"")) || "{}"); console.log((j.counts||{})["14"]||-1)' "$tmp/pct.json")
  [ "$(grep -c '"rule":"unary-flaky"' "$tmp/faults.log")" = "$want" ]
}
check "fault log: grpc lines with path and grpc_status, h2 lines with status, delays with the status the client got" flog_ok

# 10. The daemon survived all of it.
daemon_ok() {
  kill -0 "$fl_pid" 2>/dev/null && ! grep -q 'Sanitizer' "$tmp/daemon.log" && return 0
  grep -v '^    #[1-9][0-9]' "$tmp/daemon.log" | tail -40
  return 1
}
check "daemon still running, no sanitizer report" daemon_ok

echo "$pass passed, $failn failed"
[ "$failn" -eq 0 ]
