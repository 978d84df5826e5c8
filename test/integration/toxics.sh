#!/usr/bin/env bash
# Connection faults (Toxiproxy's toxics) under fault.connection, seen from real
# clients: a raw TCP echo (tcpclient.py: plain sockets), curl over HTTP/1.1 and
# openssl s_client through to openssl s_server (TLS). latency per direction,
# bandwidth (4 MiB at 1 MiB/s, RSS bounded), slicer, limit_data (exactly N
# bytes), timeout (stall then close; held until the fault ends), slow_close,
# reset_peer (ECONNRESET after the delay); a halt or disabling the rule ends a
# live toxic at once; percent over 5,000 connections; a rule with match starts
# at its first matching request; bad values rejected with file:line:col.
source "$(dirname "$0")/lib.sh"
fl_ports 19300
need curl openssl python3 node

TC="python3 $FL_IT/tcpclient.py"
start_backend TCP_ECHO || { fail "backend starts"; fl_finish; }
ECHO=127.0.0.1:$TCP_ECHO_PORT

# ---- bad values: each rejected with file:line:col, nothing else loaded ----
bad_case() { # WHAT LINE:COL YAML-FRAGMENT (the connection: block's body, 10 spaces in)
    local f="$FL_TMP/bad.yaml"
    {
        printf 'apiVersion: faultline/v1\nkind: FaultPolicy\nmetadata: {name: bad}\nspec:\n'
        printf '  listeners:\n    - {name: l, listen: "127.0.0.1:1", upstream: "127.0.0.1:2"}\n'
        printf '  rules:\n    - name: r\n      fault:\n        connection:\n'
        printf '%s\n' "$3"
    } >"$f"
    local out
    out=$("$FAULTLINE" validate -f "$f" 2>&1)
    assert_match "bad value rejected with file:line:col: $1" "^$f:$2: " "$out"
}
bad_case "direction: sideways" "11:44" '          latency: {fixed: 1ms, direction: sideways}'
bad_case "latency without fixed" "11:20" '          latency: {jitter: 1ms}'
bad_case "latency fixed: -5ms" "11:28" '          latency: {fixed: -5ms}'
bad_case "rate 0/s" "11:29" '          bandwidth: {rate: 0/s}'
bad_case "rate: fast" "11:29" '          bandwidth: {rate: fast}'
bad_case "rate without /s" "11:29" '          bandwidth: {rate: 1MiB}'
bad_case "slicer average 0" "11:19" '          slicer: {average: 0}'
bad_case "slicer variation >= average" "11:19" '          slicer: {average: 8, variation: 8}'
bad_case "limit_data bytes: 1MB" "11:31" '          limit_data: {bytes: 1MB}'
bad_case "timeout without after" "11:20" '          timeout: {}'
bad_case "an unknown toxic" "11:11" '          jitterbug: {fixed: 1ms}'
bad_case "percent 101" "11:20" '          percent: 101
          latency: {fixed: 1ms}'
bad_case "no toxic at all" "11:11" '          percent: 50'
bad_case "slow_close delay: soon" "11:31" '          slow_close: {delay: soon}'

# ---- the daemon, one listener per case ----
for n in LAT_DOWN LAT_UP LAT_BOTH JIT BW SLICE LIMIT TMO TMO0 SLOW RST PCT MATCH TLS OFF STACK; do
    next_port "P_$n"
done
next_port TLS_UP
policy=$(write_policy toxics <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: toxics}
spec:
  listeners:
    - {name: lat-down, listen: "127.0.0.1:$P_LAT_DOWN", upstream: "$ECHO"}
    - {name: lat-up, listen: "127.0.0.1:$P_LAT_UP", upstream: "$ECHO"}
    - {name: lat-both, listen: "127.0.0.1:$P_LAT_BOTH", upstream: "$ECHO"}
    - {name: jit, listen: "127.0.0.1:$P_JIT", upstream: "$ECHO"}
    - {name: bw, listen: "127.0.0.1:$P_BW", upstream: "$BACKEND"}
    - {name: slice, listen: "127.0.0.1:$P_SLICE", upstream: "$ECHO"}
    - {name: limit, listen: "127.0.0.1:$P_LIMIT", upstream: "$ECHO"}
    - {name: tmo, listen: "127.0.0.1:$P_TMO", upstream: "$ECHO"}
    - {name: tmo0, listen: "127.0.0.1:$P_TMO0", upstream: "$ECHO"}
    - {name: slow, listen: "127.0.0.1:$P_SLOW", upstream: "$ECHO"}
    - {name: rst, listen: "127.0.0.1:$P_RST", upstream: "$ECHO"}
    - {name: pct, listen: "127.0.0.1:$P_PCT", upstream: "$ECHO"}
    - {name: match, listen: "127.0.0.1:$P_MATCH", upstream: "$BACKEND"}
    - {name: tls, listen: "127.0.0.1:$P_TLS", upstream: "127.0.0.1:$TLS_UP"}
    - {name: off, listen: "127.0.0.1:$P_OFF", upstream: "$ECHO"}
    - {name: stack, listen: "127.0.0.1:$P_STACK", upstream: "$ECHO"}
  rules:
    - {name: lat-down, "on": [lat-down, tls], fault: {connection: {latency: {fixed: 200ms}}}}
    - {name: lat-up, "on": lat-up, fault: {connection: {latency: {fixed: 150ms, direction: upstream}}}}
    - {name: lat-both, "on": lat-both, fault: {connection: {latency: {fixed: 100ms, direction: both}}}}
    - {name: jit, "on": jit, fault: {connection: {latency: {fixed: 100ms, jitter: 100ms}}}}
    - {name: bw, "on": bw, fault: {connection: {bandwidth: {rate: 1MiB/s}}}}
    - name: slice
      "on": slice
      fault: {connection: {slicer: {average: 10, variation: 5, delay: 10ms}}}
    - {name: limit, "on": limit, fault: {connection: {limit_data: {bytes: 1000}}}}
    - {name: tmo, "on": tmo, fault: {connection: {timeout: {after: 500ms}}}}
    - {name: tmo0, "on": tmo0, fault: {connection: {timeout: {after: 0s}}}}
    - {name: slow, "on": slow, fault: {connection: {slow_close: {delay: 1s}}}}
    - {name: rst, "on": rst, fault: {connection: {reset_peer: {after: 300ms}}}}
    - {name: pct, "on": pct, fault: {connection: {percent: 30, limit_data: {bytes: 0}}}}
    - {name: stack-down, "on": stack, fault: {connection: {latency: {fixed: 100ms}}}}
    - {name: stack-up, "on": stack, fault: {connection: {latency: {fixed: 150ms, direction: upstream}}}}
    - name: match
      "on": match
      match: {path: {prefix: /slow}}
      fault: {connection: {latency: {fixed: 250ms}}}
EOF
)
out=$("$FAULTLINE" validate -f "$policy" 2>&1)
assert_match "the policy with every toxic is valid" "ok: policy 'toxics'" "$out"
start_faultline "$policy" "$P_OFF" || { fail "faultline starts"; fl_finish; }
ADM="$FL_TMP/admin-$FL_N.sock"
fctl() { "$(dirname "$FAULTLINE")/faultctl" --admin "$ADM" "$@"; }
jqr() { jq -r "$1" <<<"$2"; }

# ---- latency, per direction ----
j=$($TC rtt 127.0.0.1 "$P_OFF" 3)
assert_cmp "no toxic: an echo round trip is fast" "$(jqr '.rtt|max' "$j")" "<" 0.05
j=$($TC rtt 127.0.0.1 "$P_LAT_DOWN" 3)
assert_cmp "latency 200ms downstream: every round trip at least 0.2 s" "$(jqr '.rtt|min' "$j")" ">=" 0.2
assert_cmp "  ... and not much more" "$(jqr '.rtt|max' "$j")" "<" 0.3
j=$($TC rtt 127.0.0.1 "$P_LAT_UP" 3)
assert_cmp "latency 150ms upstream: every round trip at least 0.15 s" "$(jqr '.rtt|min' "$j")" ">=" 0.15
assert_cmp "  ... and not much more" "$(jqr '.rtt|max' "$j")" "<" 0.25
j=$($TC rtt 127.0.0.1 "$P_LAT_BOTH" 3)
assert_cmp "latency 100ms both ways: every round trip at least 0.2 s" "$(jqr '.rtt|min' "$j")" ">=" 0.2
assert_cmp "  ... and not much more" "$(jqr '.rtt|max' "$j")" "<" 0.3
j=$($TC rtt 127.0.0.1 "$P_JIT" 20)
assert_cmp "latency 100ms + jitter 100ms: never under 0.1 s" "$(jqr '.rtt|min' "$j")" ">=" 0.1
assert_cmp "  ... never over 0.2 s and a margin" "$(jqr '.rtt|max' "$j")" "<" 0.25
assert_cmp "  ... and they vary (max - min)" "$(jqr '(.rtt|max) - (.rtt|min)' "$j")" ">" 0.02

# ---- two rules on one listener: their toxics stack; disabling one ends only it ----
$TC rtt 127.0.0.1 "$P_STACK" 2 1.5 >"$FL_TMP/stack.json" &
c=$!
sleep 0.8
fctl disable stack-up >/dev/null
wait $c
j=$(cat "$FL_TMP/stack.json")
assert_cmp "stacked: latency 100ms down + 150ms up: a round trip takes at least 0.25 s" \
    "$(jqr '.rtt[0]' "$j")" ">=" 0.25
assert_cmp "  ... and not much more" "$(jqr '.rtt[0]' "$j")" "<" 0.35
assert_cmp "stack-up disabled on the live connection: the next round trip only has the 100 ms" \
    "$(jqr '.rtt[1]' "$j")" ">=" 0.1
assert_cmp "  ... and not the 150 ms any more" "$(jqr '.rtt[1]' "$j")" "<" 0.2
fctl enable stack-up >/dev/null

# ---- TLS: openssl s_client -> faultline -> openssl s_server, latency 200ms downstream ----
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$FL_TMP/k.pem" -out "$FL_TMP/c.pem" \
    -days 1 -subj /CN=localhost >/dev/null 2>&1
openssl s_server -accept "127.0.0.1:$TLS_UP" -cert "$FL_TMP/c.pem" -key "$FL_TMP/k.pem" -rev \
    -quiet >"$FL_TMP/s_server.log" 2>&1 &
fl_track $!
wait_port 127.0.0.1 "$TLS_UP" 5
tls_time() { # PORT: "SECONDS LINE": a TLS 1.3 handshake and one line reversed by s_server
    local t0 t1
    t0=$(date +%s.%N)
    t1=$( (echo faultline; sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$1" \
        -tls1_3 -quiet 2>/dev/null | { head -c 9 >"$FL_TMP/tls.out"; date +%s.%N; })
    echo "$(echo "$t1 - $t0" | bc) $(cat "$FL_TMP/tls.out")"
}
read -r t_off rev_off <<<"$(tls_time "$TLS_UP")"
read -r t_lat rev_lat <<<"$(tls_time "$P_TLS")"
assert_eq "TLS direct: s_server -rev answers the line reversed" "eniltluaf" "${rev_off:-}"
assert_eq "TLS through the latency toxic: the same bytes" "eniltluaf" "${rev_lat:-}"
d=$(echo "$t_lat - $t_off" | bc)
assert_cmp "TLS: latency 200ms: handshake and reply take at least 0.4 s (the server's flight and the reply wait)" \
    "$t_lat" ">=" 0.4
assert_cmp "  ... and add not much more than 2 x 200ms to the direct run ($t_off s)" "$d" "<" 0.7

# ---- bandwidth: 4 MiB at 1 MiB/s takes 4 s within 5%, memory bounded ----
rss0=$(awk '/VmRSS/ {print $2}' /proc/"$FL_PID"/status)
( while sleep 0.2; do awk '/VmRSS/ {print $2}' /proc/"$FL_PID"/status; done >"$FL_TMP/rss" ) &
sampler=$!
fl_track $sampler
if fl_sanitized; then q=1; else q=4; fi # the full figure in the plain build
n=$((q * 1048576)) lo=$(awk -v q=$q 'BEGIN {print q * 0.95}') hi=$(awk -v q=$q 'BEGIN {print q * 1.05}')
t=$(curl -sS -o "$FL_TMP/bw.bin" -w '%{time_total}' "http://127.0.0.1:$P_BW/bytes?n=$n&seed=3")
kill $sampler 2>/dev/null
assert_eq "bandwidth: the $q MiB body arrives whole" $n "$(stat -c %s "$FL_TMP/bw.bin")"
assert_eq "  ... byte for byte" "$(node "$FL_ROOT/examples/backend.js" --gen $n 3 | md5sum | cut -c1-32)" \
    "$(md5sum <"$FL_TMP/bw.bin" | cut -c1-32)"
assert_cmp "bandwidth 1MiB/s: $q MiB takes at least $lo s" "$t" ">=" "$lo"
assert_cmp "  ... and at most $hi s" "$t" "<=" "$hi"
rss_max=$(sort -n "$FL_TMP/rss" | tail -1)
assert_cmp "  ... while faultline's RSS grew by under 8 MiB (it throttles, never buffers)" \
    "$((rss_max - rss0))" "<" 8192

# ---- slicer ----
j=$($TC send 127.0.0.1 "$P_SLICE" 100 3 100)
assert_eq "slicer: all 100 bytes arrive, intact" "100 true" "$(jqr '"\(.got) \(.intact)"' "$j")"
assert_cmp "  ... in many small reads (5-15 byte slices)" "$(jqr .reads "$j")" ">=" 6
assert_cmp "  ... 10 ms or more apart" "$(jqr .gaps_min "$j")" ">=" 0.009

# ---- limit_data: exactly N bytes, then the close ----
j=$($TC send 127.0.0.1 "$P_LIMIT" 3000 5)
assert_eq "limit_data 1000: exactly 1000 of 3000 bytes, then EOF" "1000 1 true" \
    "$(jqr '"\(.got) \(.eof) \(.intact)"' "$j")"

# ---- timeout ----
j=$($TC send 127.0.0.1 "$P_TMO" 100 5)
assert_eq "timeout after 500ms: nothing relayed, then the close" "0 1" "$(jqr '"\(.got) \(.eof)"' "$j")"
assert_cmp "  ... at 0.5 s" "$(jqr .t "$j")" ">=" 0.5
assert_cmp "  ... not much later" "$(jqr .t "$j")" "<" 0.8
$TC send 127.0.0.1 "$P_TMO0" 100 5 100 >"$FL_TMP/tmo0.json" &
c=$!
sleep 1.5
fctl disable tmo0 >/dev/null
wait $c
j=$(cat "$FL_TMP/tmo0.json")
assert_eq "timeout 0s: the bytes are held, and released whole when the rule is disabled" "100 true" \
    "$(jqr '"\(.got) \(.intact)"' "$j")"
assert_cmp "  ... not before the disable (1.5 s after the connection; python starts in 0.1 s)" \
    "$(jqr .first "$j")" ">=" 1.3
assert_cmp "  ... and at once after it" "$(jqr .first "$j")" "<" 1.9
fctl enable tmo0 >/dev/null

# ---- slow_close ----
j=$($TC fin 127.0.0.1 "$P_SLOW")
assert_eq "slow_close: the echo's bytes arrive" "bye" "$(jqr '.got|rtrimstr("\n")' "$j")"
assert_cmp "  ... and its FIN 1 s late" "$(jqr .t "$j")" ">=" 1.0
assert_cmp "  ... not much later" "$(jqr .t "$j")" "<" 1.4
j=$($TC fin 127.0.0.1 "$P_OFF")
assert_cmp "  (without the toxic the FIN is immediate)" "$(jqr .t "$j")" "<" 0.1

# ---- reset_peer ----
j=$($TC send 127.0.0.1 "$P_RST" 10 5)
assert_eq "reset_peer after 300ms: ECONNRESET" 1 "$(jqr .reset "$j")"
assert_cmp "  ... at 0.3 s" "$(jqr .t "$j")" ">=" 0.3
assert_cmp "  ... not much later" "$(jqr .t "$j")" "<" 0.6

# ---- a halt ends a live toxic at once; new connections go untouched ----
$TC send 127.0.0.1 "$P_TMO0" 100 5 100 >"$FL_TMP/halt.json" &
c=$!
sleep 1
fctl halt --reason toxics-test >/dev/null
wait $c
j=$(cat "$FL_TMP/halt.json")
assert_eq "halt: the held bytes are released whole" "100 true" "$(jqr '"\(.got) \(.intact)"' "$j")"
assert_cmp "  ... at once (under 0.3 s after the halt)" "$(jqr .first "$j")" "<" 1.3
j=$($TC rtt 127.0.0.1 "$P_LAT_DOWN" 2)
assert_cmp "halted: a new connection gets no latency" "$(jqr '.rtt|max' "$j")" "<" 0.05
fctl resume >/dev/null
j=$($TC rtt 127.0.0.1 "$P_LAT_DOWN" 1)
assert_cmp "resumed: latency again" "$(jqr '.rtt|min' "$j")" ">=" 0.2

# ---- percent, rolled once per connection, over 5,000 connections ----
before=$(grep -c '"rule":"pct"' "$FL_LOG")
j=$($TC many 127.0.0.1 "$P_PCT" 5000)
sleep 0.5
hits=$(( $(grep -c '"rule":"pct"' "$FL_LOG") - before ))
failed=$(jqr .failed "$j")
# 30% of 5000: mean 1500, sd 32.4; 4 sd = 130
assert_cmp "percent 30 over 5,000 connections: at least 1370 faulted (fault log)" "$hits" ">=" 1370
assert_cmp "  ... at most 1630" "$hits" "<=" 1630
assert_eq "  ... and exactly those saw the fault (limit_data 0: no echo)" "$hits" "$failed"
inj=$(fctl -o json rules | jq '.rules[] | select(.name=="pct") | .injected.connection')
assert_eq "  ... the rule's injected counter agrees" "$hits" "$inj"

# ---- a rule with match: the toxic starts at the first matching request ----
t1=$(curl -sS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$P_MATCH/fast")
assert_cmp "match: a request the rule does not match is fast" "$t1" "<" 0.1
out=$(curl -sS -o /dev/null -w '%{time_total} ' "http://127.0.0.1:$P_MATCH/fast" \
    "http://127.0.0.1:$P_MATCH/slow" "http://127.0.0.1:$P_MATCH/fast")
read -r a b c <<<"$out"
assert_cmp "match: on one connection, /fast before the match is fast" "$a" "<" 0.1
assert_cmp "  ... the matching /slow gets the latency" "$b" ">=" 0.25
assert_cmp "  ... and so does /fast after it (the connection is faulted)" "$c" ">=" 0.25

# ---- the fault log, faultctl and metrics ----
assert_match "the fault log: a connection fault names its toxics, proto tcp" \
    '"rule":"limit","fault":"connection","toxics":\["limit_data"\],"proto":"tcp"' "$(cat "$FL_LOG")"
assert_match "the fault log: a matched connection fault carries its request" \
    '"rule":"match","fault":"connection","toxics":\["latency"\],"proto":"http/1.1","method":"GET","path":"/slow"' \
    "$(cat "$FL_LOG")"
out=$(fctl -o table rules)
assert_match "faultctl rules: the connection kind and its percent" 'pct  .* connection 30%' "$out"
fctl set pct --fault connection --percent 0 >/dev/null
j=$($TC many 127.0.0.1 "$P_PCT" 50)
assert_eq "faultctl set --fault connection --percent 0: no connection faulted" 0 "$(jqr .failed "$j")"
m=$(fctl metrics)
assert_match "metrics: faults_injected_total with fault=\"connection\"" \
    'faultline_faults_injected_total\{policy="toxics",rule="limit",fault="connection"\} 1' "$m"

# ---- the TTL ends a live toxic: the held bytes go at once ----
next_port P_TTL
ttlp=$(write_policy ttl <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: ttl}
spec:
  ttl: 2s
  listeners: [{name: ttl, listen: "127.0.0.1:$P_TTL", upstream: "$ECHO"}]
  rules: [{name: hold, fault: {connection: {timeout: {after: 0s}}}}]
EOF
)
start_faultline "$ttlp" "$P_TTL" || fail "the ttl daemon starts"
j=$($TC send 127.0.0.1 "$P_TTL" 100 5 100)
assert_eq "ttl 2s: the bytes a timeout toxic held are released whole when the policy expires" \
    "100 true" "$(jqr '"\(.got) \(.intact)"' "$j")"
assert_cmp "  ... not before (2 s after the policy was applied, less the start-up)" "$(jqr .first "$j")" ">=" 1.2
assert_cmp "  ... and at once then" "$(jqr .first "$j")" "<" 2.5
fl_check_sanitizers
fl_finish
