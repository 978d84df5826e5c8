#!/usr/bin/env bash
# The daemon's life: graceful SIGTERM/SIGINT with a request in flight, the log
# flushed at exit (file and stdout), bounded shutdown, SIGHUP reload (valid and
# invalid), `faultline validate` on every shipped policy and on broken files, and the
# errors people hit at start (port in use, bad address).
source "$(dirname "$0")/lib.sh"
fl_ports 18500
need curl node

start_backend || { fail "backend starts"; fl_finish; }

policy_with() { # NAME PORT STATUS: one listener, /x aborted with STATUS
    write_policy "$1" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: $1
spec:
  listeners:
    - {name: a, listen: "127.0.0.1:$2", upstream: "127.0.0.1:$BACKEND_PORT"}
  rules:
    - name: x-rule
      match: {path: {prefix: /x}}
      fault:
        abort: {status: $3}
EOF
}

# ---- graceful SIGTERM: in-flight request completes, no new connections, log flushed
next_port P
p=$(policy_with graceful "$P" 503)
start_faultline "$p" "$P" || { fail "faultline starts"; fl_finish; }
for i in $(seq 20); do curl -s -o /dev/null "http://127.0.0.1:$P/x/$i"; done
curl -sS -o "$FL_TMP/slow.body" -w '%{http_code}' "http://127.0.0.1:$P/sleep?ms=1500" \
    >"$FL_TMP/slow.code" 2>"$FL_TMP/slow.err" &
cpid=$!
sleep 0.4
kill -TERM "$FL_PID"
sleep 0.3
if port_open 127.0.0.1 "$P"; then
    fail "SIGTERM: listener closed while draining" "connection refused" "accepted"
else
    pass "SIGTERM: listener closed while draining"
fi
wait "$cpid"
assert_eq "SIGTERM: in-flight request completes (status)" 200 "$(cat "$FL_TMP/slow.code")"
assert_eq "SIGTERM: in-flight request completes (body)" "slept 1500ms" "$(cat "$FL_TMP/slow.body")"
stop_faultline
assert_eq "SIGTERM: exit 0" 0 "$?"
assert_eq "SIGTERM: all 20 fault lines flushed to the log file" 20 "$(log_count rule=x-rule)"

# ---- SIGINT, fault log on stdout (the default)
next_port P
p=$(policy_with stdout "$P" 502)
"$FAULTLINE" run -f "$p" --admin "$FL_TMP/int.sock" >"$FL_TMP/int.out" 2>"$FL_TMP/int.err" &
ipid=$!
fl_track "$ipid"
if wait_port 127.0.0.1 "$P" 5 "$ipid"; then
    for i in $(seq 30); do curl -s -o /dev/null "http://127.0.0.1:$P/x/$i"; done
    kill -INT "$ipid"
    for _ in $(seq 100); do kill -0 "$ipid" 2>/dev/null || break; sleep 0.1; done
    wait "$ipid"
    assert_eq "SIGINT: exit 0" 0 "$?"
    fl_untrack "$ipid"
    assert_eq "fault log defaults to stdout: 30 JSON lines, all flushed" 30 \
        "$(FL_LOG=$FL_TMP/int.out log_count rule=x-rule status=502)"
    assert_eq "stdout carries only fault lines" 30 "$(wc -l <"$FL_TMP/int.out")"
else
    fail "faultline with the log on stdout starts"
fi

# ---- bounded shutdown: a request that would take a minute does not hold exit forever
next_port P
p=$(policy_with bounded "$P" 503)
start_faultline "$p" "$P" || { fail "faultline starts"; fl_finish; }
curl -s -o /dev/null "http://127.0.0.1:$P/sleep?ms=60000" 2>/dev/null &
cpid=$!
sleep 0.3
t0=$(date +%s%N)
stop_faultline
rc=$?
t=$((($(date +%s%N) - t0) / 1000000))
assert_eq "SIGTERM with a 60 s request in flight: exit 0" 0 "$rc"
assert_cmp "SIGTERM with a 60 s request in flight: exits within 12 s (ms)" "$t" "<" 12000
kill "$cpid" 2>/dev/null
wait "$cpid" 2>/dev/null

# ---- SIGHUP: a valid file replaces the policy; an invalid one keeps it
next_port P
policy_with reload "$P" 503 >/dev/null
p=$FL_TMP/reload.yaml
start_faultline "$p" "$P" || { fail "faultline starts"; fl_finish; }
assert_eq "before reload: 503" 503 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/x")"
injected() { curl -s --unix-socket "$FL_TMP/admin-$FL_N.sock" http://x/metrics | awk '/^faultline_faults_injected_total\{.*rule="x-rule",fault="abort"\}/ {print $2}'; }
assert_eq "before reload: the rule's injected counter" 1 "$(injected)"
policy_with reload "$P" 418 >/dev/null
kill -HUP "$FL_PID"
code=
for _ in $(seq 30); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/x")
    [ "$code" = 418 ] && break
    sleep 0.1
done
assert_eq "SIGHUP with a valid file: new policy in force" 418 "$code"
assert_eq "SIGHUP: the rule kept its counter (1 before, plus the 418s)" 1 "$(($(injected) - $(log_count status=418)))"
cat >"$p" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: reload
spec:
  bogus: 1
  listeners:
    - {name: a, listen: "127.0.0.1:$P", upstream: "127.0.0.1:$BACKEND_PORT"}
  rules: []
EOF
kill -HUP "$FL_PID"
sleep 0.5
if kill -0 "$FL_PID" 2>/dev/null; then pass "SIGHUP with an invalid file: daemon keeps running"; else fail "SIGHUP with an invalid file: daemon keeps running" running exited; fi
assert_eq "SIGHUP with an invalid file: old policy stays" 418 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/x")"
assert_match "SIGHUP with an invalid file: error with file:line:col on stderr" "reload\.yaml:6:3: " "$(cat "$FL_ERR")"
stop_faultline
assert_eq "after reloads: SIGTERM exit 0" 0 "$?"

# ---- cmake --install: both binaries and the shipped policies, usable from there
bdir=$(dirname "$FAULTLINE")
if [ -f "$bdir/CMakeCache.txt" ] && command -v cmake >/dev/null; then
    DESTDIR="$FL_TMP/inst" cmake --install "$bdir" --prefix /usr/local >"$FL_TMP/install.out" 2>&1
    assert_eq "cmake --install: exit 0" 0 "$?"
    assert_match "installed faultline runs" "^faultline [0-9]" "$("$FL_TMP/inst/usr/local/bin/faultline" version 2>&1)"
    assert_eq "installed faultctl is there" 1 "$([ -x "$FL_TMP/inst/usr/local/bin/faultctl" ] && echo 1)"
    out=$("$FL_TMP/inst/usr/local/bin/faultline" validate -f "$FL_TMP/inst/usr/local/share/faultline/policies/demo.yaml" 2>&1)
    assert_eq "installed policies validate (demo.yaml)" 0 "$?"
fi

# ---- faultline validate
n=0
for f in "$FL_ROOT"/policies/*.yaml "$FL_ROOT"/examples/*.yaml; do
    [ -e "$f" ] || continue
    head -n 20 "$f" | grep -q '^kind: FaultPolicy' || continue # experiments are faultctl's
    n=$((n + 1))
    out=$("$FAULTLINE" validate -f "$f" 2>&1)
    assert_eq "validate ${f#"$FL_ROOT"/}: exit 0" 0 "$?"
done
assert_cmp "validate: shipped policies found" "$n" ">=" 1
assert_match "validate: policies/demo.yaml exists and is valid" "ok" \
    "$("$FAULTLINE" validate -f "$FL_ROOT/policies/demo.yaml" 2>&1)"

cat >"$FL_TMP/bad.yaml" <<'EOF'
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: bad
spec:
  listeners:
    - {name: a, listen: "127.0.0.1:18599", upstream: "127.0.0.1:18598"}
  rules:
    - name: r1
      match: {path: {prefix: /x}}
      fault:
        abort: {status: 999}
    - name: r2
      colour: blue
      fault:
        delay: {fixed: 1s}
EOF
out=$("$FAULTLINE" validate -f "$FL_TMP/bad.yaml" 2>&1)
assert_eq "validate a bad file: exit 1" 1 "$?"
assert_match "validate: bad status reported at 12:24" "bad\.yaml:12:(2[0-9]|1[0-9]): .*(status|999)" "$out"
assert_match "validate: unknown key reported at 14:7" "bad\.yaml:14:7: .*colour" "$out"
assert_eq "validate: one line per error" 2 "$(grep -c 'bad\.yaml:[0-9]*:[0-9]*: ' <<<"$out")"
printf 'spec: [unclosed\n' >"$FL_TMP/syntax.yaml"
out=$("$FAULTLINE" validate -f "$FL_TMP/syntax.yaml" 2>&1)
assert_eq "validate a YAML syntax error: exit 1" 1 "$?"
assert_match "validate: syntax error has file:line:col" "syntax\.yaml:[0-9]+:[0-9]+: " "$out"
out=$("$FAULTLINE" validate -f "$FL_TMP/missing.yaml" 2>&1)
assert_eq "validate a missing file: exit 1" 1 "$?"
assert_match "validate a missing file: names it" "missing\.yaml" "$out"

# ---- port in use, bad address
next_port P
node -e 'require("net").createServer().listen(+process.argv[1], "127.0.0.1")' "$P" &
npid=$!
fl_track "$npid"
wait_port 127.0.0.1 "$P" 5
p=$(policy_with inuse "$P" 503)
timeout 10 "$FAULTLINE" run -f "$p" --fault-log "$FL_TMP/inuse.log" --admin "$FL_TMP/inuse.sock" \
    >/dev/null 2>"$FL_TMP/inuse.err"
assert_eq "port in use: exit 1" 1 "$?"
assert_match "port in use: message names the address" "127\.0\.0\.1:$P" "$(cat "$FL_TMP/inuse.err")"
assert_match "port in use: message says in use" "[Ii]n use" "$(cat "$FL_TMP/inuse.err")"
kill "$npid"
wait "$npid" 2>/dev/null
fl_untrack "$npid"

next_port P
cat >"$FL_TMP/badaddr.yaml" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: badaddr
spec:
  listeners:
    - {name: a, listen: "192.0.2.1:$P", upstream: "127.0.0.1:$BACKEND_PORT"}
  rules: []
EOF
timeout 10 "$FAULTLINE" run -f "$FL_TMP/badaddr.yaml" --fault-log "$FL_TMP/badaddr.log" \
    --admin "$FL_TMP/badaddr.sock" >/dev/null 2>"$FL_TMP/badaddr.err"
assert_eq "address not on this host: exit 1" 1 "$?"
assert_match "address not on this host: message names it" "192\.0\.2\.1:$P" "$(cat "$FL_TMP/badaddr.err")"
sed -i "s/192.0.2.1:$P/127.0.0.1:99999/" "$FL_TMP/badaddr.yaml"
timeout 10 "$FAULTLINE" run -f "$FL_TMP/badaddr.yaml" --fault-log "$FL_TMP/badaddr.log" \
    --admin "$FL_TMP/badaddr.sock" >/dev/null 2>"$FL_TMP/badaddr2.err"
assert_eq "port 99999: exit 1" 1 "$?"
assert_match "port 99999: file:line:col message" "badaddr\.yaml:7:[0-9]+: " "$(cat "$FL_TMP/badaddr2.err")"
fl_finish
