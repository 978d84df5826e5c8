#!/usr/bin/env bash
# Response-side faults, per request, seen from real clients: curl over
# HTTP/1.1 and HTTP/2, grpc-js for gRPC. response_delay (never early),
# modify (status, headers set/removed, body replaced with the framing fixed
# up; gRPC grpc-status and grpc-message), truncate (the body cut after N
# bytes, then a reset: the TCP connection in HTTP/1.1, the stream in
# HTTP/2), bandwidth (4 MiB at 1 MiB/s in 4 s within 5%, RSS bounded; a
# request body throttled upstream); pipelined HTTP/1.1 responses stay in
# order around held and modified ones; modify at 10% over 5,000 requests
# within 4 standard deviations; bad values rejected with file:line:col.
source "$(dirname "$0")/lib.sh"
fl_ports 19400
need curl node npm python3 nghttp

start_backend || { fail "backend starts"; fl_finish; }
gdir=$FL_ROOT/test/grpc
(cd "$gdir" && npm ci --no-audit --no-fund --loglevel=error >"$FL_TMP/npm.log" 2>&1) ||
    { cat "$FL_TMP/npm.log"; fail "npm ci in test/grpc"; fl_finish; }
next_port G
next_port H
node "$gdir/server.js" "$G" "$H" >"$FL_TMP/grpc-server.log" 2>&1 &
fl_track $!
wait_port 127.0.0.1 "$H" 10 || { fail "grpc-js server starts"; fl_finish; }

# ---- bad values: each rejected with file:line:col ----
bad_case() { # WHAT LINE:COL FAULT-BODY (under fault:, 8 spaces in)
    local f="$FL_TMP/bad.yaml"
    {
        printf 'apiVersion: faultline/v1\nkind: FaultPolicy\nmetadata: {name: bad}\nspec:\n'
        printf '  listeners:\n    - {name: l, listen: "127.0.0.1:1", upstream: "127.0.0.1:2"}\n'
        printf '  rules:\n    - name: r\n      fault:\n'
        printf '%s\n' "$3"
    } >"$f"
    local out
    out=$("$FAULTLINE" validate -f "$f" 2>&1)
    assert_match "bad value rejected with file:line:col: $1" "(^|"$'\n'")$f:$2: " "$out"
}
bad_case "response_delay without fixed" "10:25" '        response_delay: {jitter: 1ms}'
bad_case "response_delay fixed: soon" "10:33" '        response_delay: {fixed: soon}'
bad_case "modify status 700" "10:26" '        modify: {status: 700}'
bad_case "modify with nothing to change" "10:17" '        modify: {percent: 5}'
bad_case "modify sets content-length" "10:34" '        modify: {headers: {set: {content-length: "5"}}}'
bad_case "modify removes transfer-encoding" "10:36" '        modify: {headers: {remove: [transfer-encoding]}}'
bad_case "modify grpc_status: BOGUS" "10:31" '        modify: {grpc_status: BOGUS}'
bad_case "modify an unknown key" "10:18" '        modify: {stauts: 500}'
bad_case "truncate after: lots" "10:27" '        truncate: {after: lots}'
bad_case "truncate without after" "10:19" '        truncate: {percent: 1}'
bad_case "bandwidth rate: 0/s" "10:27" '        bandwidth: {rate: 0/s}'
bad_case "bandwidth direction: out" "10:46" '        bandwidth: {rate: 1KiB/s, direction: out}'
bad_case "bandwidth percent 200" "10:61" '        bandwidth: {rate: 1KiB/s, direction: both, percent: 200}'

for n in H1 H2 GRPC PCT; do next_port "P_$n"; done
policy=$(write_policy response <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: response}
spec:
  listeners:
    - {name: h1, listen: "127.0.0.1:$P_H1", upstream: "$BACKEND"}
    - {name: h2, listen: "127.0.0.1:$P_H2", upstream: "127.0.0.1:$H"}
    - {name: grpc, listen: "127.0.0.1:$P_GRPC", upstream: "127.0.0.1:$G"}
    - {name: pct, listen: "127.0.0.1:$P_PCT", upstream: "$BACKEND"}
  rules:
    - name: slow-head
      "on": [h1, h2]
      match: {path: {prefix: /rd}}
      fault: {response_delay: {fixed: 300ms}}
    - name: rewrite
      "on": h1
      match: {path: {prefix: /mod/}}
      fault:
        modify:
          status: 500
          headers: {set: {x-chaos: "yes", retry-after: "3"}, remove: [content-type, keep-alive]}
          body: "oops\n"
    - name: status-only
      "on": h1
      match: {path: {prefix: /mods}}
      fault: {modify: {status: 418}}
    - name: cut
      "on": [h1, h2]
      match: {headers: [{name: x-cut, present: true}]}
      fault: {truncate: {after: 1000}}
    - name: slow-body
      "on": [h1, h2]
      match: {headers: [{name: x-slow, present: true}]}
      fault: {bandwidth: {rate: 1MiB/s}}
    - name: slow-upload
      "on": h1
      match: {path: {prefix: /echo}}
      fault: {bandwidth: {rate: 256KiB/s, direction: upstream}}
    - name: h2-rewrite
      "on": h2
      match: {path: {prefix: /status/}}
      fault: {modify: {status: 503, headers: {set: {x-chaos: "h2"}, remove: [etag]}, body: "h2 oops\n"}}
    - name: h2-etag
      "on": h2
      match: {path: {prefix: /bytes/64}}
      fault: {modify: {headers: {remove: [etag]}}}
    - name: grpc-slow
      "on": grpc
      match: {headers: [{name: x-kind, exact: delay}]}
      fault: {response_delay: {fixed: 300ms}}
    - name: grpc-cut
      "on": grpc
      match: {headers: [{name: x-kind, exact: cut}]}
      fault: {truncate: {after: 3}}
    - name: grpc-narrow
      "on": grpc
      match: {headers: [{name: x-kind, exact: narrow}]}
      fault: {bandwidth: {rate: 50/s}}
    - name: grpc-rewrite
      "on": grpc
      match: {grpc: {method: Unary}}
      fault: {modify: {grpc_status: INTERNAL, message: "modified by faultline"}}
    - name: ten-percent
      "on": pct
      fault: {modify: {status: 500, percent: 10}}
EOF
)
out=$("$FAULTLINE" validate -f "$policy" 2>&1)
assert_match "the policy with every response fault is valid" "ok: policy 'response'" "$out"
start_faultline "$policy" "$P_PCT" || { fail "faultline starts"; fl_finish; }
wait_port 127.0.0.1 "$P_GRPC" 5
U1=http://127.0.0.1:$P_H1
U2=http://127.0.0.1:$P_H2
C2="curl -sS --http2-prior-knowledge"

# ---- response_delay ----
t=$(curl -sS -o "$FL_TMP/b" -w '%{time_total}' "$U1/rd")
assert_cmp "h1 response_delay 300ms: the response takes at least 0.3 s" "$t" ">=" 0.3
assert_cmp "  ... and not much more" "$t" "<" 0.6
assert_eq "  ... the body is the upstream's" "hello from backend" "$(cat "$FL_TMP/b")"
c=$(curl -sS -D - -o /dev/null "$U1/rd" | tr -d '\r' | grep -ci '^x-faultline-injected: slow-head$')
assert_eq "  ... with the marker" 1 "$c"
t=$($C2 -o "$FL_TMP/b" -w '%{time_total}' "$U2/rd")
assert_cmp "h2 response_delay 300ms: at least 0.3 s" "$t" ">=" 0.3
assert_cmp "  ... and not much more" "$t" "<" 0.6

# ---- modify ----
curl -sS -D "$FL_TMP/h" -o "$FL_TMP/b" "$U1/mod/x"
hd=$(tr -d '\r' <"$FL_TMP/h")
assert_match "h1 modify: the status is replaced" '^HTTP/1.1 500 ' "$hd"
assert_eq "  ... the body is replaced" "oops" "$(cat "$FL_TMP/b")"
assert_match "  ... content-length fixed up for it" $'\ncontent-length: 5(\n|$)' "$hd"
assert_no_match "  ... the upstream's own length is gone" $'\n[Cc]ontent-[Ll]ength: 19\n' "$hd"
assert_match "  ... headers set" $'\nx-chaos: yes\n' "$hd"
assert_match "  ... all of them" $'\nretry-after: 3\n' "$hd"
assert_no_match "  ... headers removed (content-type)" $'\n[Cc]ontent-[Tt]ype:' "$hd"
assert_no_match "  ... headers removed, whatever their case (Keep-Alive)" $'\n[Kk]eep-[Aa]live:' "$hd"
assert_match "  ... with the marker" $'\nx-faultline-injected: rewrite\n' "$hd"
curl -sS -D "$FL_TMP/h" -o "$FL_TMP/b" "$U1/mods"
hd=$(tr -d '\r' <"$FL_TMP/h")
assert_match "h1 modify status only: 418" '^HTTP/1.1 418 ' "$hd"
assert_eq "  ... the upstream's body and framing kept" "hello from backend" "$(cat "$FL_TMP/b")"
out=$(curl -sS -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} %{size_download}\n' \
    "$U1/mod/a" "$U1/mods" "$U1/mod/b")
assert_eq "h1 modify on one keep-alive connection: each response framed right" \
    "500 5 418 19 500 5" "$(echo $out)"
$C2 -D "$FL_TMP/h" -o "$FL_TMP/b" "$U2/status/404"
hd=$(tr -d '\r' <"$FL_TMP/h")
assert_match "h2 modify: the status is replaced" '^HTTP/2 503' "$hd"
assert_eq "  ... the body is replaced (DATA frames)" "h2 oops" "$(cat "$FL_TMP/b")"
assert_match "  ... content-length fixed up" $'\ncontent-length: 8\n' "$hd"
assert_match "  ... headers set" $'\nx-chaos: h2\n' "$hd"
assert_match "  ... and the marker" $'\nx-faultline-injected: h2-rewrite(\n|$)' "$hd"
$C2 -D "$FL_TMP/h" -o "$FL_TMP/b" "$U2/bytes/64"
hd=$(tr -d '\r' <"$FL_TMP/h")
assert_no_match "h2 modify remove: the upstream's etag is gone" $'\netag:' "$hd"
assert_eq "  ... the body untouched" 64 "$(stat -c %s "$FL_TMP/b")"
j=$(timeout 30 node "$gdir/client.js" meta "127.0.0.1:$P_GRPC")
assert_eq "gRPC modify: grpc-js sees INTERNAL (13), the new message and the marker" \
    '13 modified by faultline grpc-rewrite' "$(jq -r '"\(.code) \(.details) \(.injected)"' <<<"$j")"

j=$(timeout 30 node "$gdir/client.js" meta "127.0.0.1:$P_GRPC" x-kind=delay)
assert_eq "gRPC response_delay: the call succeeds" 0 "$(jq -r .code <<<"$j")"
assert_cmp "  ... after at least 300 ms" "$(jq -r .ms <<<"$j")" ">=" 300
j=$(timeout 30 node "$gdir/client.js" meta "127.0.0.1:$P_GRPC" x-kind=narrow)
assert_eq "gRPC bandwidth 50 B/s: the call succeeds" 0 "$(jq -r .code <<<"$j")"
assert_cmp "  ... its ~75-byte answer taking over a second" "$(jq -r .ms <<<"$j")" ">=" 1000
j=$(timeout 30 node "$gdir/client.js" meta "127.0.0.1:$P_GRPC" x-kind=cut)
assert_eq "gRPC truncate: grpc-js sees the stream reset as INTERNAL (13)" 13 "$(jq -r .code <<<"$j")"

# ---- truncate ----
curl -sS -H 'x-cut: 1' -o "$FL_TMP/t.bin" "$U1/bytes?n=100000" 2>"$FL_TMP/t.err"
rc=$?
assert_eq "h1 truncate after 1000: exactly 1000 body bytes arrive" 1000 "$(stat -c %s "$FL_TMP/t.bin")"
assert_eq "  ... then the connection is reset (curl: recv failure, 56)" 56 "$rc"
assert_eq "  ... the bytes are the upstream's" "$(node "$FL_ROOT/examples/backend.js" --gen 100000 1 | head -c 1000 | md5sum)" \
    "$(md5sum <"$FL_TMP/t.bin")"
$C2 -H 'x-cut: 1' -o "$FL_TMP/t.bin" "$U2/bytes/100000" 2>"$FL_TMP/t.err"
rc=$?
assert_eq "h2 truncate after 1000: exactly 1000 bytes of DATA" 1000 "$(stat -c %s "$FL_TMP/t.bin")"
assert_eq "  ... then the stream is reset (curl: HTTP/2 stream error, 92)" 92 "$rc"
out=$(nghttp -nv -H 'x-cut: 1' "$U2/bytes/100000" "$U2/hello" 2>&1)
assert_match "  ... only the stream (nghttp: RST_STREAM on one connection)" \
    'recv RST_STREAM frame <length=4, flags=0x00, stream_id=13>' "$out"
assert_eq "  ... and the other stream on it is answered" 2 "$(grep -c 'recv (stream_id=1[35]) :status: 200' <<<"$out")"

# ---- bandwidth ----
rss0=$(awk '/VmRSS/ {print $2}' /proc/"$FL_PID"/status)
( while sleep 0.2; do awk '/VmRSS/ {print $2}' /proc/"$FL_PID"/status; done >"$FL_TMP/rss" ) &
sampler=$!
fl_track $sampler
# The full figure (4 MiB in 4 s) in the plain build; a quarter under ASan.
if fl_sanitized; then q=1; else q=4; fi
n=$((q * 1048576)) lo=$(awk -v q=$q 'BEGIN {print q * 0.95}') hi=$(awk -v q=$q 'BEGIN {print q * 1.05}')
t=$(curl -sS -H 'x-slow: 1' -o "$FL_TMP/bw.bin" -w '%{time_total}' "$U1/bytes?n=$n")
kill $sampler 2>/dev/null
assert_eq "h1 bandwidth: the $q MiB body arrives whole" \
    "$(node "$FL_ROOT/examples/backend.js" --gen $n 1 | md5sum)" "$(md5sum <"$FL_TMP/bw.bin")"
assert_cmp "h1 bandwidth 1MiB/s: $q MiB takes at least $lo s ($q s - 5%)" "$t" ">=" "$lo"
assert_cmp "  ... at most $hi s ($q s + 5%)" "$t" "<=" "$hi"
rss_max=$(sort -n "$FL_TMP/rss" | tail -1)
assert_cmp "  ... and faultline's RSS grew by under 8 MiB (backpressure, not buffering)" \
    "$((rss_max - rss0))" "<" 8192
h=$((n / 2)) lo=$(awk -v q=$q 'BEGIN {print q * 0.475}') hi=$(awk -v q=$q 'BEGIN {print q * 0.525}')
t=$($C2 -H 'x-slow: 1' -o "$FL_TMP/bw.bin" -w '%{time_total}' "$U2/bytes/$h")
assert_eq "h2 bandwidth: $h bytes arrive whole" $h "$(stat -c %s "$FL_TMP/bw.bin")"
assert_cmp "h2 bandwidth 1MiB/s: they take at least $lo s" "$t" ">=" "$lo"
assert_cmp "  ... at most $hi s" "$t" "<=" "$hi"
head -c $((q * 262144)) /dev/urandom >"$FL_TMP/up.bin"
lo=$(awk -v q=$q 'BEGIN {print q * 0.95}') hi=$(awk -v q=$q 'BEGIN {print q * 1.05}')
t=$(curl -sS -o "$FL_TMP/echo.bin" -w '%{time_total}' --data-binary @"$FL_TMP/up.bin" "$U1/echo")
assert_cmp "h1 bandwidth upstream 256KiB/s: a $((q * 256)) KiB request body takes at least $lo s" "$t" ">=" "$lo"
assert_cmp "  ... at most $hi s" "$t" "<=" "$hi"
assert_eq "  ... and reaches the upstream whole (echoed back)" "$(md5sum <"$FL_TMP/up.bin")" \
    "$(md5sum <"$FL_TMP/echo.bin")"

# ---- pipelining: responses in order around held and modified ones ----
out=$(python3 - "$P_H1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
reqs = ["/rd/1", "/mod/2", "/status/201", "/mods/4", "/rd/5"]
s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % r.encode() for r in reqs))
f = s.makefile("rb")
out = []
for _ in reqs:
    status = f.readline().split()[1].decode()
    n, chunked = 0, False
    while True:
        l = f.readline().strip()
        if not l:
            break
        k, v = l.decode().split(":", 1)
        if k.lower() == "content-length":
            n = int(v)
        if k.lower() == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    body = b""
    if chunked:
        while True:
            size = int(f.readline().strip(), 16)
            body += f.read(size)
            f.readline()
            if size == 0:
                break
    else:
        body = f.read(n)
    out.append("%s:%s" % (status, body.decode().strip()))
print(" ".join(out))
PY
)
assert_eq "h1 pipelining: five responses in request order, held and modified ones in place" \
    "200:hello from backend 500:oops 201:status 201 418:hello from backend 200:hello from backend" "$out"

# ---- percent: modify at 10% over 5,000 requests ----
for i in $(seq 5000); do echo "url = \"http://127.0.0.1:$P_PCT/p/$i\""; done >"$FL_TMP/urls"
n=$(curl -sS -K "$FL_TMP/urls" -o /dev/null -w '%{http_code}\n' | grep -c '^500$')
# mean 500, sd sqrt(5000 * 0.1 * 0.9) = 21.2; 4 sd = 85
assert_cmp "modify 10% over 5,000 requests: at least 415 modified" "$n" ">=" 415
assert_cmp "  ... at most 585" "$n" "<=" 585
sleep 0.5
assert_eq "  ... one fault line each" "$n" "$(grep -c '"rule":"ten-percent","fault":"modify"' "$FL_LOG")"

# ---- the fault log, faultctl, metrics ----
log=$(cat "$FL_LOG")
assert_match "log: response_delay with delay_ms and the status" \
    '"rule":"slow-head","fault":"response_delay","delay_ms":300,"proto":"http/1.1".*"status":200' "$log"
assert_match "log: modify with the status the client got" '"rule":"rewrite","fault":"modify".*"status":500' "$log"
assert_match "log: truncate with after" '"rule":"cut","fault":"truncate","after":1000,"proto":"h2"' "$log"
assert_match "log: bandwidth with rate and direction" \
    '"rule":"slow-upload","fault":"bandwidth","rate":262144,"direction":"upstream"' "$log"
assert_match "log: a gRPC modify names the grpc_status" '"rule":"grpc-rewrite","fault":"modify","grpc_status":13,"proto":"grpc"' "$log"
ADM="$FL_TMP/admin-$FL_N.sock"
fctl() { "$(dirname "$FAULTLINE")/faultctl" --admin "$ADM" "$@"; }
out=$(fctl -o table rules)
assert_match "faultctl rules: each kind with its percent" 'ten-percent .* modify 10%' "$out"
fctl set ten-percent --fault modify --percent 0 >/dev/null
n=$(curl -sS -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$P_PCT/a" "http://127.0.0.1:$P_PCT/b" | grep -c 500)
assert_eq "faultctl set --fault modify --percent 0: nothing modified" 0 "$n"
j=$(fctl -o json rules | jq -c '.rules[] | select(.name=="ten-percent") | .fault.modify | [.percent, .percent_file]')
assert_eq "  ... /v1/rules shows the live and the file's percent" "[0,10]" "$j"
m=$(fctl metrics)
assert_match "metrics: faultline_faults_injected_total for truncate" \
    'faultline_faults_injected_total\{policy="response",rule="cut",fault="truncate"\} [1-9]' "$m"
fl_check_sanitizers
fl_finish
