#!/usr/bin/env bash
# The Toxiproxy API (faultline run --toxiproxy-listen): the real
# toxiproxy-node-client from npm drives it (test/toxiproxy/client.js: every
# proxy and toxic call, each toxic's effect seen from a socket or fetch,
# populate, reset, the error statuses); curl replays the transcript of
# Toxiproxy's README and checks the error bodies; grpc-js sees grpc_abort;
# faultctl shows the policy 'toxiproxy' like any other.
source "$(dirname "$0")/lib.sh"
fl_ports 19600
need curl node npm jq

start_backend TCP_ECHO || { fail "backend starts"; fl_finish; }
tdir=$FL_ROOT/test/toxiproxy
(cd "$tdir" && npm ci --no-audit --no-fund --loglevel=error >"$FL_TMP/npm.log" 2>&1) ||
    { cat "$FL_TMP/npm.log"; fail "npm ci in test/toxiproxy"; fl_finish; }
gdir=$FL_ROOT/test/grpc
(cd "$gdir" && npm ci --no-audit --no-fund --loglevel=error >"$FL_TMP/npm2.log" 2>&1) ||
    { cat "$FL_TMP/npm2.log"; fail "npm ci in test/grpc"; fl_finish; }
next_port G
next_port H
node "$gdir/server.js" "$G" "$H" >"$FL_TMP/grpc-server.log" 2>&1 &
fl_track $!
wait_port 127.0.0.1 "$G" 10 || { fail "grpc-js server starts"; fl_finish; }

next_port API
FL_N=1
FL_LOG="$FL_TMP/fault-1.log"
ADM="$FL_TMP/admin-1.sock"
"$FAULTLINE" run --toxiproxy-listen "127.0.0.1:$API" --fault-log "$FL_LOG" --admin "$ADM" \
    >"$FL_TMP/faultline.out" 2>"$FL_TMP/faultline.err" &
FL_PID=$!
fl_track $FL_PID
wait_port 127.0.0.1 "$API" 5 "$FL_PID" || { cat "$FL_TMP/faultline.err"; fail "faultline starts"; fl_finish; }
assert_match "run without -f: the Toxiproxy API alone" "Toxiproxy API on 127.0.0.1:$API" "$(cat "$FL_TMP/faultline.err")"
fctl() { "$(dirname "$FAULTLINE")/faultctl" --admin "$ADM" "$@"; }
T=http://127.0.0.1:$API

# ---- the transcript of Toxiproxy's README (curl), unchanged but for ports ----
# (the upstream is a Redis there; here the TCP echo server stands in for it)
next_port RP
o=$(curl -si -d "{\"name\": \"redis\", \"upstream\": \"localhost:$TCP_ECHO_PORT\", \"listen\": \"localhost:$RP\"}" "$T/proxies" | tr -d '\r')
assert_match "README: create -> 201 Created" '^HTTP/1.1 201 Created' "$o"
assert_match "  ... application/json" $'\nContent-Type: application/json\n' "$o"
assert_match "  ... the body Toxiproxy shows" \
    "\{\"name\":\"redis\",\"listen\":\"127.0.0.1:$RP\",\"upstream\":\"localhost:$TCP_ECHO_PORT\",\"enabled\":true,\"toxics\":\[\]\}$" "$o"
o=$(curl -si "$T/proxies" | tr -d '\r')
assert_match "README: list -> 200, keyed by name" \
    "^HTTP/1.1 200 OK.*\{\"redis\":\{\"name\":\"redis\",\"listen\":\"127.0.0.1:$RP\",\"upstream\":\"localhost:$TCP_ECHO_PORT\",\"enabled\":true,\"toxics\":\[\]\}\}$" "$o"
o=$(curl -si -d '{"type":"latency", "attributes":{"latency":1000}}' "$T/proxies/redis/toxics" | tr -d '\r')
assert_match "README: add a latency toxic -> 200 and its body" \
    '^HTTP/1.1 200 OK.*\{"attributes":\{"latency":1000,"jitter":0\},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1\}$' "$o"
t=$(python3 "$FL_IT/tcpclient.py" rtt 127.0.0.1 "$RP" 1 | jq '.rtt[0]')
assert_cmp "  ... (redis-cli's GET takes 1 s: the round trip does)" "$t" ">=" 1.0
o=$(curl -si -X DELETE "$T/proxies/redis/toxics/latency_downstream" | tr -d '\r')
assert_match "README: delete the toxic -> 204 No Content" '^HTTP/1.1 204 No Content' "$o"
o=$(curl -si -X DELETE "$T/proxies/redis" | tr -d '\r')
assert_match "README: delete the proxy -> 204 No Content" '^HTTP/1.1 204 No Content' "$o"
python3 "$FL_IT/tcpclient.py" rtt 127.0.0.1 "$RP" 1 >/dev/null 2>&1
assert_eq "  ... and its port refuses connections (Could not connect)" 1 "$?"

# ---- toxiproxy-node-client ----
out=$(cd "$tdir" && timeout 120 node client.js "$API" "$TCP_ECHO_PORT" "$BACKEND_PORT" 2>&1)
while IFS= read -r line; do
    case "$line" in
    "ok   - "*) pass "node client: ${line#ok   - }" ;;
    "FAIL - "*) fail "node client: ${line#FAIL - }" ;;
    *) [ -n "$line" ] && echo "     $line" ;;
    esac
done <<<"$out"
assert_eq "node client: every check ran and passed" "$(grep -c "check('" "$tdir/client.js")" \
    "$(grep -c '^ok   - ' <<<"$out")"

# ---- error bodies, as Toxiproxy's ----
curl -s -d '{"name":"e","upstream":"127.0.0.1:1","listen":"localhost:0"}' "$T/proxies" >/dev/null
err() { curl -s -o "$FL_TMP/e" -w '%{http_code} ' "$@"; cat "$FL_TMP/e"; }
assert_eq "duplicate proxy: 409 and the error body" '409 {"error":"proxy already exists","status":409}' \
    "$(err -d '{"name":"e","upstream":"127.0.0.1:1"}' "$T/proxies")"
assert_eq "missing proxy: 404" '404 {"error":"proxy not found","status":404}' "$(err "$T/proxies/zz")"
assert_eq "missing toxic: 404" '404 {"error":"toxic not found","status":404}' "$(err "$T/proxies/e/toxics/zz")"
assert_eq "missing name: 400" '400 {"error":"missing required field: name","status":400}' \
    "$(err -d '{"upstream":"127.0.0.1:1"}' "$T/proxies")"
assert_eq "missing upstream: 400" '400 {"error":"missing required field: upstream","status":400}' \
    "$(err -d '{"name":"q"}' "$T/proxies")"
assert_match "bad JSON: 400 bad request body" '^400 \{"error":"bad request body: .*","status":400\}$' \
    "$(err -d '{"name":' "$T/proxies")"
assert_eq "bad stream: 400" '400 {"error":"stream was invalid, can be either upstream or downstream","status":400}' \
    "$(err -d '{"type":"latency","stream":"up"}' "$T/proxies/e/toxics")"
assert_eq "bad toxic type: 400" '400 {"error":"invalid toxic type","status":400}' \
    "$(err -d '{"type":"down"}' "$T/proxies/e/toxics")"
assert_eq "populate: the proxy at fault is named, nothing is made" \
    '400 {"error":"missing required field: name at proxy 2","status":400}' \
    "$(err -d '[{"name":"p1","upstream":"127.0.0.1:1"},{"upstream":"127.0.0.1:1"}]' "$T/populate")"
assert_eq "  ... (p1 was not made)" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$T/proxies/p1")"
next_port BUSY
python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',$BUSY)); s.listen(); time.sleep(30)" &
busy=$!
fl_track $busy
wait_port 127.0.0.1 "$BUSY" 5
assert_match "a listen address in use: 500 saying so, nothing made" '^500 \{"error":".*in use.*","status":500\}$' \
    "$(err -d "{\"name\":\"b\",\"upstream\":\"127.0.0.1:1\",\"listen\":\"127.0.0.1:$BUSY\"}" "$T/proxies")"
assert_eq "  ... (b was not made)" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$T/proxies/b")"
kill $busy 2>/dev/null

# ---- grpc_abort, per request, seen by grpc-js ----
o=$(curl -s -d "{\"name\":\"grpc\",\"upstream\":\"127.0.0.1:$G\",\"listen\":\"localhost:0\"}" "$T/proxies")
GL=$(jq -r .listen <<<"$o")
curl -s -d '{"type":"grpc_abort","attributes":{"code":14,"message":"from toxiproxy api"}}' "$T/proxies/grpc/toxics" >/dev/null
j=$(timeout 30 node "$gdir/client.js" meta "$GL")
assert_eq "grpc_abort: grpc-js gets UNAVAILABLE (14) with the message and the marker" \
    '14 from toxiproxy api grpc.grpc_abort_downstream' "$(jq -r '"\(.code) \(.details) \(.injected)"' <<<"$j")"

# ---- faultctl and the fault log see the policy 'toxiproxy' ----
o=$(fctl -o json status)
assert_match "faultctl status: the policy 'toxiproxy' and its listeners" '"name":"grpc"' "$o"
assert_eq "  ... named toxiproxy" toxiproxy "$(jq -r '.policies[0].name' <<<"$o")"
o=$(fctl -o table rules)
assert_match "faultctl rules: the toxic as a rule" 'grpc\.grpc_abort_downstream' "$o"
sleep 0.3
assert_match "fault log: toxics are logged as usual (policy toxiproxy)" \
    '"policy":"toxiproxy","rule":"echo.latency_downstream","fault":"connection","toxics":\["latency"\]' "$(cat "$FL_LOG")"
assert_match "fault log: the per-request ones too" \
    '"policy":"toxiproxy","rule":"grpc.grpc_abort_downstream","fault":"abort","grpc_status":14' "$(cat "$FL_LOG")"
fl_check_sanitizers
fl_finish
