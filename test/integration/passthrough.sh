#!/usr/bin/env bash
# Byte-exact passthrough with bounded memory: a 64 MiB random POST body echoed back,
# a 64 MiB response, a chunked response and a chunked upload all arrive with the same
# sha256; a slow reader forces backpressure; and the proxy's peak RSS (VmHWM) stays
# under 32 MiB (not checked on sanitizer builds, whose shadow memory dwarfs it).
source "$(dirname "$0")/lib.sh"
fl_ports 18400
need curl node sha256sum

MIB=$((1024 * 1024))
start_backend || { fail "backend starts"; fl_finish; }
next_port P
policy=$(write_policy pass <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: passthrough
spec:
  listeners:
    - {name: a, listen: "127.0.0.1:$P", upstream: "127.0.0.1:$BACKEND_PORT"}
  rules:
    - name: not-these
      match: {path: {prefix: /never}}
      fault:
        abort: {status: 503}
EOF
)
start_faultline "$policy" "$P" || { fail "faultline starts"; fl_finish; }
URL=http://127.0.0.1:$P

sha() { sha256sum | cut -d' ' -f1; }

# 64 MiB random upload to /echo
head -c $((64 * MIB)) /dev/urandom >"$FL_TMP/up.bin"
want=$(sha <"$FL_TMP/up.bin")
got=$(curl -sS --data-binary @"$FL_TMP/up.bin" -H 'content-type: application/octet-stream' \
    "$URL/echo" | sha)
assert_eq "64 MiB POST body echoed byte-exact (sha256)" "$want" "$got"

# the same body as a chunked upload (curl streams stdin with Transfer-Encoding: chunked)
got=$(curl -sS -T - -X POST -H 'transfer-encoding: chunked' "$URL/echo" <"$FL_TMP/up.bin" | sha)
assert_eq "64 MiB chunked upload echoed byte-exact (sha256)" "$want" "$got"
rm -f "$FL_TMP/up.bin"

# 64 MiB response with content-length
want=$(node "$FL_ROOT/examples/backend.js" --gen $((64 * MIB)) 11 | sha)
got=$(curl -sS "$URL/bytes?n=$((64 * MIB))&seed=11" | sha)
assert_eq "64 MiB response byte-exact (sha256)" "$want" "$got"

# chunked response
want=$(node "$FL_ROOT/examples/backend.js" --gen $((16 * MIB)) 12 | sha)
got=$(curl -sS -D "$FL_TMP/h" "$URL/chunked?n=$((16 * MIB))&seed=12" | sha)
assert_eq "16 MiB chunked response byte-exact (sha256)" "$want" "$got"
assert_match "chunked response keeps transfer-encoding: chunked" '[Tt]ransfer-[Ee]ncoding: chunked' "$(cat "$FL_TMP/h")"

# a slow reader: 24 MiB at 12 MiB/s. Without backpressure the proxy would buffer it.
want=$(node "$FL_ROOT/examples/backend.js" --gen $((24 * MIB)) 13 | sha)
got=$(curl -sS --limit-rate 12M "$URL/bytes?n=$((24 * MIB))&seed=13" | sha)
assert_eq "24 MiB to a slow reader byte-exact (sha256)" "$want" "$got"

# keep-alive after big bodies: the connection state is clean
out=$(curl -sS "$URL/bytes?n=1000&seed=1" -o /dev/null "$URL/" -o /dev/null -w '%{http_code} %{num_connects}\n')
assert_eq "keep-alive reused after a body (second transfer: no new connect)" "200 1
200 0" "$out"

hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$FL_PID/status")
if ldd "$FAULTLINE" 2>/dev/null | grep -q asan || nm "$FAULTLINE" 2>/dev/null | grep -q __asan_init; then
    pass "peak RSS ${hwm} kB (sanitizer build: 32 MiB limit not applied)"
else
    assert_cmp "proxy peak RSS (VmHWM, kB) under 32 MiB" "$hwm" "<" $((32 * 1024))
fi
sleep 0.2
assert_eq "no fault logged" 0 "$(log_count)"
stop_faultline
assert_eq "SIGTERM: exit 0" 0 "$?"
fl_finish
