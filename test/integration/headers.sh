#!/usr/bin/env bash
# Header-driven faults (from_headers: true): x-faultline-abort, -abort-grpc, -delay
# and -percent ask for a fault on that request only, over HTTP/1.1 (curl), HTTP/2
# (curl --http2-prior-knowledge) and gRPC (grpc-js); bad values are answered 400
# (gRPC: INVALID_ARGUMENT) with what is allowed; a rule without from_headers
# forwards the headers untouched; the fault log names the rule.
source "$(dirname "$0")/lib.sh"
fl_ports 18800
need curl node npm

start_backend || { fail "backend starts"; fl_finish; }
gdir=$FL_ROOT/test/grpc
(cd "$gdir" && npm ci --no-audit --no-fund --loglevel=error >"$FL_TMP/npm.log" 2>&1) ||
    { cat "$FL_TMP/npm.log"; fail "npm ci in test/grpc"; fl_finish; }
next_port G
next_port H
node "$gdir/server.js" "$G" "$H" >"$FL_TMP/grpc-server.log" 2>&1 &
fl_track $!
wait_port 127.0.0.1 "$H" 10 || { fail "grpc-js server starts"; fl_finish; }
next_port P   # HTTP/1.1 -> backend.js, from_headers
next_port PN  # HTTP/1.1 -> backend.js, a rule without from_headers
next_port P2  # HTTP/2 and gRPC -> server.js
next_port PG

policy=$(write_policy headers <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: header-faults}
spec:
  listeners:
    - {name: h1, listen: "127.0.0.1:$P", upstream: "127.0.0.1:$BACKEND_PORT"}
    - {name: plain, listen: "127.0.0.1:$PN", upstream: "127.0.0.1:$BACKEND_PORT"}
    - {name: h2, listen: "127.0.0.1:$P2", upstream: "127.0.0.1:$H"}
    - {name: grpc, listen: "127.0.0.1:$PG", upstream: "127.0.0.1:$G"}
  rules:
    - name: by-header
      "on": [h1, h2, grpc]
      from_headers: true
    - name: not-by-header
      "on": [plain]
      match: {path: {prefix: /never}}
      fault: {abort: {status: 500}}
EOF
)
out=$("$FAULTLINE" validate -f "$policy" 2>&1)
assert_match "a rule with from_headers and no fault of its own is valid" "ok: policy 'header-faults'" "$out"
start_faultline "$policy" "$P" || { fail "faultline starts"; fl_finish; }
wait_port 127.0.0.1 "$PG" 5

# ---- HTTP/1.1 ----
c=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/a")
assert_eq "h1: no x-faultline header: the backend answers" 200 "$c"
c=$(curl -sS -D "$FL_TMP/h" -o /dev/null -w '%{http_code}' -H 'x-faultline-abort: 503' "http://127.0.0.1:$P/a")
assert_eq "h1: x-faultline-abort: 503 -> 503" 503 "$c"
assert_match "h1:   ... with the marker naming the rule" $'x-faultline-injected: by-header\r' "$(cat "$FL_TMP/h")"
c=$(curl -sS -o /dev/null -w '%{http_code}' -H 'x-faultline-abort: 418' "http://127.0.0.1:$P/a")
assert_eq "h1: x-faultline-abort: 418 -> 418 (the header's status, per request)" 418 "$c"
t=$(curl -sS -o /dev/null -w '%{time_total}' -H 'x-faultline-delay: 300ms' "http://127.0.0.1:$P/a")
assert_cmp "h1: x-faultline-delay: 300ms holds it at least 0.3 s" "$t" ">=" 0.295
assert_cmp "h1:   ... and not much longer" "$t" "<" 1.0
t=$(curl -sS -o /dev/null -w '%{time_total}' -H 'x-faultline-delay: 250' "http://127.0.0.1:$P/a")
assert_cmp "h1: x-faultline-delay: 250 (bare milliseconds) holds it 0.25 s" "$t" ">=" 0.245
out=$(curl -sS -w ' %{http_code}' -H 'x-faultline-abort: 503' -H 'x-faultline-delay: 200ms' "http://127.0.0.1:$P/a")
assert_match "h1: delay and abort together: 503 after the delay" ' 503$' "$out"
n=0
for i in $(seq 400); do echo "url = \"http://127.0.0.1:$P/p/$i\""; done >"$FL_TMP/urls"
n=$(curl -sS -K "$FL_TMP/urls" -H 'x-faultline-abort: 503' -H 'x-faultline-percent: 25' \
    -o /dev/null -w '%{http_code}\n' | grep -c 503)
assert_cmp "h1: x-faultline-percent: 25 over 400 requests: at least 60 aborted" "$n" ">=" 60
assert_cmp "h1:   ... and at most 140 (4 sd of 25%)" "$n" "<=" 140
for bad in 'x-faultline-abort: 700' 'x-faultline-abort: x' 'x-faultline-delay: soon' \
    'x-faultline-percent: 150' 'x-faultline-abort-grpc: NOPE'; do
    c=$(curl -sS -o "$FL_TMP/b" -w '%{http_code}' -H "$bad" -H 'x-faultline-abort: 503' "http://127.0.0.1:$P/a")
    [ "${bad%%:*}" = x-faultline-abort ] && c=$(curl -sS -o "$FL_TMP/b" -w '%{http_code}' -H "$bad" "http://127.0.0.1:$P/a")
    assert_eq "h1: '$bad' is answered 400" 400 "$c"
    assert_match "h1:   ... saying what is allowed" "${bad%%:*} must be .*from the request's x-faultline-\* headers" "$(cat "$FL_TMP/b")"
done
c=$(curl -sS -o "$FL_TMP/b" -w '%{http_code}' -H 'x-faultline-abort: 503' "http://127.0.0.1:$PN/a")
assert_eq "h1: a rule without from_headers ignores the header (the backend answers)" 200 "$c"
j=$(curl -sS -H 'x-faultline-abort: 503' -H 'x-faultline-delay: 5s' "http://127.0.0.1:$PN/headers")
assert_eq "h1:   ... and forwards the x-faultline-* headers untouched" '503 5s' \
    "$(jq -r '"\(.["x-faultline-abort"]) \(.["x-faultline-delay"])"' <<<"$j")"

# ---- HTTP/2 ----
c=$(curl -sS --http2-prior-knowledge -D "$FL_TMP/h" -o /dev/null -w '%{http_code}' -H 'x-faultline-abort: 502' "http://127.0.0.1:$P2/x")
assert_eq "h2: x-faultline-abort: 502 -> 502" 502 "$c"
assert_match "h2:   ... with the marker" 'x-faultline-injected: by-header' "$(cat "$FL_TMP/h")"
c=$(curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P2/x")
assert_eq "h2: without the header: the server answers" 200 "$c"
t=$(curl -sS --http2-prior-knowledge -o /dev/null -w '%{time_total}' -H 'x-faultline-delay: 300ms' "http://127.0.0.1:$P2/x")
assert_cmp "h2: x-faultline-delay: 300ms holds the stream at least 0.3 s" "$t" ">=" 0.295
for bad in -1 2h 99999999999999999999999; do
    c=$(curl -sS -m 5 --http2-prior-knowledge -o "$FL_TMP/b" -w '%{http_code}' -H "x-faultline-delay: $bad" "http://127.0.0.1:$P2/x")
    assert_eq "h2: 'x-faultline-delay: $bad' is answered 400" 400 "$c"
    assert_match "h2:   ... saying what is allowed" 'x-faultline-delay must be a duration' "$(cat "$FL_TMP/b")"
done

# ---- gRPC (grpc-js, metadata) ----
client() { timeout 60 node "$gdir/client.js" meta "127.0.0.1:$PG" "$@"; }
j=$(client x-faultline-abort-grpc=UNAVAILABLE)
assert_eq "grpc: x-faultline-abort-grpc: UNAVAILABLE -> code 14, the marker" \
    '14 by-header' "$(jq -r '"\(.code) \(.injected)"' <<<"$j")"
j=$(client x-faultline-abort-grpc=7)
assert_eq "grpc: x-faultline-abort-grpc: 7 -> PERMISSION_DENIED" 7 "$(jq -r .code <<<"$j")"
j=$(client)
assert_eq "grpc: no metadata: the call succeeds" 0 "$(jq -r .code <<<"$j")"
j=$(client x-faultline-delay=300ms)
assert_eq "grpc: x-faultline-delay: 300ms: the call succeeds" 0 "$(jq -r .code <<<"$j")"
assert_cmp "grpc:   ... after at least 300 ms" "$(jq -r .ms <<<"$j")" ">=" 295
j=$(client x-faultline-abort-grpc=BOGUS)
assert_eq "grpc: a bad x-faultline-abort-grpc: INVALID_ARGUMENT saying what is allowed" \
    '3 true' "$(jq -r '"\(.code) \(.details | test("x-faultline-abort-grpc must be a gRPC status"))"' <<<"$j")"

# ---- the fault log ----
sleep 0.3
assert_match "the fault log: an abort by header, with its rule and status" \
    '"rule":"by-header","fault":"abort","status":418' "$(cat "$FL_LOG")"
assert_match "the fault log: a gRPC abort by header" '"rule":"by-header","fault":"abort","grpc_status":7' "$(cat "$FL_LOG")"
assert_match "the fault log: a delay by header" '"rule":"by-header","fault":"delay","delay_ms":300' "$(cat "$FL_LOG")"
n=$(grep -c '"path":"/a"' "$FL_LOG")
assert_cmp "the fault log: no line for the 400s (nothing was injected)" "$n" "<=" 6
fl_check_sanitizers
fl_finish
