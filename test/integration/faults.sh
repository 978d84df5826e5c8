#!/usr/bin/env bash
# Every fault kind seen from curl: abort (status, body, headers, marker), delay timed
# with curl's time_total, reset as curl's "connection reset"/"empty reply", and the
# fault log's fields; IPv6 listen and upstream addresses.
source "$(dirname "$0")/lib.sh"
fl_ports 18200
need curl node

start_backend || { fail "backend starts"; fl_finish; }
next_port P
next_port P6

policy=$(write_policy faults <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: curl-faults
spec:
  listeners:
    - {name: v4, listen: "127.0.0.1:$P", upstream: "127.0.0.1:$BACKEND_PORT"}
    - {name: v6, listen: "[::1]:$P6", upstream: "[::1]:$BACKEND_PORT"}
  rules:
    - name: slow
      match: {path: {prefix: /slow}}
      fault:
        delay: {fixed: 500ms}
    - name: orders-503
      match: {path: {prefix: /orders}}
      fault:
        abort: {status: 503, body: "injected\n", headers: {retry-after: "7"}}
    - name: flaky
      match: {path: {prefix: /flaky}}
      fault:
        reset: {}
    - name: precise
      match: {path: {prefix: /precise}}
      fault:
        delay: {fixed: 30ms}
EOF
)
start_faultline "$policy" "$P" || { fail "faultline starts"; fl_finish; }

# abort
out=$(curl -sS -D "$FL_TMP/h" -o "$FL_TMP/b" -w '%{http_code}' "http://127.0.0.1:$P/orders/7" 2>&1)
assert_eq "abort: status" 503 "$out"
assert_eq "abort: body" "injected" "$(cat "$FL_TMP/b")"
assert_match "abort: x-faultline-injected header" $'x-faultline-injected: orders-503\r' "$(cat "$FL_TMP/h")"
assert_match "abort: configured header" $'retry-after: 7\r' "$(cat "$FL_TMP/h")"

# no rule matches: the backend answers, no marker
out=$(curl -sS -D "$FL_TMP/h" "http://127.0.0.1:$P/plain" 2>&1)
assert_eq "no match: backend body" "hello from backend" "$out"
assert_no_match "no match: no marker header" "x-faultline-injected" "$(cat "$FL_TMP/h")"

# delay: baseline, then the delayed path
base=$(curl -sS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$P/plain")
t=$(curl -sS -D "$FL_TMP/h" -o "$FL_TMP/b" -w '%{time_total}' "http://127.0.0.1:$P/slow/x")
assert_cmp "delay: time_total at least 0.5 s" "$t" ">=" 0.49
assert_cmp "delay: time_total under 1.5 s" "$t" "<" 1.5
assert_cmp "no delay: baseline under 0.25 s" "$base" "<" 0.25
assert_eq "delay: body from the backend" "hello from backend" "$(cat "$FL_TMP/b")"
assert_match "delay: marker header on the upstream's response" $'x-faultline-injected: slow\r' "$(cat "$FL_TMP/h")"

# reset: curl reports 56 (recv failure: connection reset) or 52 (empty reply)
curl -sS -o /dev/null "http://127.0.0.1:$P/flaky" 2>"$FL_TMP/curl.err"
rc=$?
assert_match "reset: curl exit 56 or 52" '^(56|52)$' "$rc"
assert_match "reset: curl says reset/empty" 'reset|Empty reply' "$(cat "$FL_TMP/curl.err")"

# IPv6 listener and IPv6 upstream
out=$(curl -sS -g -w ' %{http_code}' "http://[::1]:$P6/orders" 2>&1)
assert_eq "IPv6 listener: abort" "injected
 503" "$out"
out=$(curl -sS -g "http://[::1]:$P6/" 2>&1)
assert_eq "IPv6 listener -> IPv6 upstream: passthrough" "hello from backend" "$out"

# the fault log: one JSON line per injected fault with the fault log's fields (docs/reference.md)
sleep 0.3
assert_eq "fault log: 1 abort on v4 with all fields" 1 "$(log_count rule=orders-503 fault=abort status=503 method=GET path=/orders/7 proto=http/1.1 authority=127.0.0.1:$P dst=127.0.0.1:$BACKEND_PORT event=fault policy=curl-faults)"
assert_eq "fault log: 1 delay" 1 "$(log_count rule=slow fault=delay delay_ms=500)"
assert_eq "fault log: 1 reset" 1 "$(log_count rule=flaky fault=reset path=/flaky)"
assert_eq "fault log: 1 abort on v6" 1 "$(log_count rule=orders-503 path=/orders "authority=[::1]:$P6")"
assert_eq "fault log: 4 lines in all" 4 "$(log_count)"
line=$(head -n1 "$FL_LOG")
for f in ts event policy rule fault proto method path authority src dst conn; do
    assert_match "fault log line has \"$f\"" "\"$f\":" "$line"
done
assert_match "fault log: ts is RFC 3339 UTC with ms" '"ts":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z"' "$line"
assert_match "fault log: src is the client's address" '"src":"127\.0\.0\.1:[0-9]+"' "$line"

# Delay precision under open-loop load (test/bench/loadgen.c, built beside the
# daemon): requests due every 5 ms whatever the answers do; each delay must
# last at least its 30 ms and not much more.
loadgen=$(dirname "$FAULTLINE")/fl_loadgen
if [ -x "$loadgen" ]; then
    "$loadgen" -r 200 -d 2 -w 0.2 -c 20 -p /precise "127.0.0.1:$P" > "$FL_TMP/lg.out" 2>&1
    rc=$?
    assert_eq "delay precision: fl_loadgen exit 0, every request answered ($(head -n1 "$FL_TMP/lg.out"))" 0 "$rc"
    lg() { awk -v k="$1" '$1 == "latency_ms" { for (i = 2; i < NF; i += 2) if ($i == k) print $(i + 1) }' "$FL_TMP/lg.out"; }
    lg_min=$(lg min) lg_p50=$(lg p50) lg_p99=$(lg p99)
    assert_cmp "delay precision: no delay shorter than 30 ms (min ms)" "${lg_min:-0}" ">=" 30
    # The loaded round trip itself (client, proxy and backend on the same two
    # cores) is 1-2 ms of the median; a late timer shows as more than 3 ms.
    assert_cmp "delay precision: p50 within 3 ms of 30 ms" "${lg_p50:-99}" "<" 33
    assert_cmp "delay precision: p99 within 10 ms of 30 ms" "${lg_p99:-99}" "<" 40
else
    fail "delay precision: $loadgen is built with the daemon"
fi

stop_faultline
assert_eq "SIGTERM: exit 0" 0 "$?"
fl_finish
