#!/usr/bin/env bash
# Admin API and faultctl against the real daemon, with real clients (curl, wrk,
# faultctl itself). Every verb and exit code; halt, percent, apply under load,
# invalid apply, the event stream, the socket's permissions, the HALT file,
# signals, metrics, and `faultctl run` reaching each of its exit codes.
#
#   test/integration/admin.sh            (after cmake --build build)
#   BUILD=/path/to/build test/integration/admin.sh
#
# Loopback only, ports 19200-19299. Prints "N passed, N failed" last and exits
# non-zero when anything failed.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
FAULTLINE=$BUILD/faultline
FAULTCTL=$BUILD/faultctl
for b in "$FAULTLINE" "$FAULTCTL"; do
    [ -x "$b" ] || { echo "missing $b: build first (cmake -S . -B build && cmake --build build)"; echo "0 passed, 1 failed"; exit 1; }
done
for c in curl wrk jq node setpriv; do
    command -v $c >/dev/null || { echo "missing $c (see test/deps.sh)"; echo "0 passed, 1 failed"; exit 1; }
done

T=$(mktemp -d /tmp/fl-admin.XXXXXX)
chmod 755 "$T"
SOCK=$T/run/admin.sock
BACK=19210      # backend
PROXY=19211     # faultline listener
METRICS=19212   # --metrics-listen
PROXY2=19221    # second daemon (workers 2)
DEAD=19299      # nothing listens here
PIDS=()
DAEMON=

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$FAIL" -gt 0 ] && [ -f "$T/daemon.log" ]; then
        echo "--- daemon log (last 30 lines) ---"
        tail -30 "$T/daemon.log"
    fi
    [ -n "${KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
nok() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { # check DESC CMD...: passes when CMD succeeds
    local d=$1; shift
    if "$@"; then ok "$d"; else nok "$d"; fi
}
# rc WANT DESC CMD...: runs CMD (stdout in $T/out, stderr in $T/err) and wants exit WANT
rc() {
    local want=$1 d=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then
        ok "$d (exit $got)"
    else
        nok "$d: exit $got, wanted $want"
        sed 's/^/     | /' "$T/out" "$T/err" | head -20
    fi
}
ctl() { "$FAULTCTL" --admin "$SOCK" "$@"; }
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PROXY$1"; }
# hits PATH N: status codes of N requests on one keep-alive connection, "CODE COUNT" lines
hits() {
    local urls=() i
    for ((i = 0; i < $2; i++)); do urls+=("http://127.0.0.1:$PROXY$1"); done
    curl -s --max-time 30 -o /dev/null -w '%{http_code}\n' "${urls[@]}" | sort | uniq -c | awk '{print $2, $1}'
}
count() { hits "$1" "$2" | awk -v c="$3" '$1 == c {print $2}' | grep . || echo 0; }
wait_for() { # wait_for SECONDS CMD...
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge "$end" ] && return 1
        sleep 0.1
    done
}
json() { ctl -o json "$1" | jq -r "$2"; }

# ---- fixtures ----
policy() { # policy NAME FILE RULES-YAML [PORT]
    cat >"$2" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: $1
spec:
  seed: 7
  listeners:
    - name: web
      listen: 127.0.0.1:${4:-$PROXY}
      upstream: 127.0.0.1:$BACK
  rules:
$3
EOF
}
RULES_A='    - name: aborts
      match: {path: {prefix: /fail}}
      fault:
        abort: {status: 503, percent: 100}
    - name: rate
      match: {path: {prefix: /rate}}
      fault:
        abort: {status: 500, percent: 0}
    - name: slow
      match: {path: {prefix: /slow}}
      fault:
        delay: {fixed: 300ms, percent: 100}'
policy pol-a "$T/a.yaml" "$RULES_A"
policy pol-b "$T/b.yaml" "$(echo "$RULES_A" | sed 's/fixed: 300ms/fixed: 1ms/')"
cat >"$T/bad.yaml" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: broken
spec:
  listeners:
    - name: web
      listen: 127.0.0.1:$PROXY
      upstream: 127.0.0.1:$BACK
  rules:
    - name: x
      fault:
        abort: {status: 999, percentage: 5}
EOF

start_backend() {
    if [ -f "$ROOT/examples/backend.js" ]; then
        node "$ROOT/examples/backend.js" --port $BACK --host 127.0.0.1 >"$T/backend.log" 2>&1 &
    else
        node -e "require('http').createServer((q, s) => s.end('ok\n')).listen($BACK, '127.0.0.1')" \
            >"$T/backend.log" 2>&1 &
    fi
    PIDS+=($!)
    wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$BACK/"
}

start_daemon() { # start_daemon POLICY [ARGS...]: sets $DAEMON
    "$FAULTLINE" run -f "$1" --admin "$SOCK" --fault-log "$T/faults.log" "${@:2}" >>"$T/daemon.log" 2>&1 &
    DAEMON=$!
    PIDS+=($DAEMON)
    wait_for 10 ctl -o json status
}

stop_daemon() {
    kill -TERM "$DAEMON" 2>/dev/null
    wait "$DAEMON" 2>/dev/null
}

check "backend answers" start_backend
check "daemon starts with --metrics-listen" start_daemon "$T/a.yaml" --metrics-listen 127.0.0.1:$METRICS

# ---- the socket ----
check "admin socket is mode 0600" test "$(stat -c %a "$SOCK")" = 600
check "admin socket's directory is private (0700)" test "$(stat -c %a "$T/run")" = 700
rc 0 "curl speaks to the API on the unix socket" curl -sf --unix-socket "$SOCK" http://faultline/v1/status
check "status over curl names the policy" grep -q '"policy":"pol-a"' "$T/out"
chmod 755 "$T/run"
rc 3 "faultctl as user nobody is refused by the socket's mode" \
    setpriv --reuid=nobody --regid=nogroup --clear-groups "$FAULTCTL" --admin "$SOCK" status
check "the refusal says permission denied and what to do" grep -q "permission denied.*0600" "$T/err"
rc 7 "curl as user nobody cannot connect either" \
    setpriv --reuid=nobody --regid=nogroup --clear-groups curl -s --unix-socket "$SOCK" http://x/v1/status
chmod 666 "$SOCK"
rc 1 "with the mode widened by hand, the daemon still refuses nobody (peer credentials)" \
    setpriv --reuid=nobody --regid=nogroup --clear-groups "$FAULTCTL" --admin "$SOCK" status
check "  ... with 403 and a reason" grep -q "only root and the daemon's user" "$T/err"
chmod 600 "$SOCK"
chmod 700 "$T/run"
rc 1 "a second daemon on the same admin socket is refused" \
    "$FAULTLINE" run -f "$T/a.yaml" --admin "$SOCK" --fault-log "$T/faults2.log"
check "  ... saying another daemon answers there" grep -q "another faultline daemon answers on $SOCK" "$T/err"
check "  ... and the first one still answers" ctl -o json status

# ---- usage, unreachable, not found ----
rc 2 "no verb is a usage error" "$FAULTCTL"
rc 2 "unknown verb is a usage error" "$FAULTCTL" frobnicate
rc 2 "set without --percent is a usage error" ctl set aborts
check "  ... and prints the verb's usage" grep -q "usage: faultctl .*set RULE \\[--percent P\\]" "$T/err"
rc 2 "set --percent 150 is a usage error" ctl set aborts --percent 150
rc 2 "apply without -f is a usage error" ctl apply
rc 2 "-o xml is a usage error" ctl -o xml status
rc 0 "help for a verb" ctl help apply
rc 0 "status --help" ctl status --help
rc 3 "a socket nobody listens on: exit 3" "$FAULTCTL" --admin "$T/nothing.sock" status
check "  ... naming the socket and how to start the daemon" grep -q "$T/nothing.sock.*" "$T/err"
check "  ... (faultline run)" grep -q "faultline run -f" "$T/err"
rc 3 "FAULTLINE_ADMIN is honoured" env FAULTLINE_ADMIN="$T/nothing.sock" "$FAULTCTL" status
rc 0 "FAULTLINE_ADMIN reaches the daemon" env FAULTLINE_ADMIN="$SOCK" "$FAULTCTL" status
rc 4 "enable an unknown rule: exit 4" ctl enable no-such-rule
rc 4 "disable an unknown rule: exit 4" ctl disable no-such-rule
rc 4 "set an unknown rule: exit 4" ctl set no-such-rule --percent 5
rc 1 "set a fault kind the rule does not have: exit 1" ctl set aborts --percent 5 --fault reset

# ---- status, rules, output formats ----
rc 0 "status" ctl -o table status
check "  ... table shows the policy and listener" grep -q "pol-a .*$T/a.yaml" "$T/out"
rc 0 "status -o json" ctl -o json status
check "  ... JSON has policy, halted, ttl, workers, listeners" \
    jq -e '.policy == "pol-a" and .halted == false and .ttl_remaining_s > 1700 and .workers == 1 and .listeners[0].listen == "127.0.0.1:'$PROXY'"' "$T/out"
rc 0 "rules" ctl -o table rules
check "  ... table lists the three rules" test "$(grep -cE '^(aborts|rate|slow) ' "$T/out")" = 3
rc 0 "rules -o json" ctl rules
check "  ... JSON (default when not a terminal) has percents" jq -e '.rules[0].fault.abort.percent == 100' "$T/out"

# ---- halt stops injection for the very next request ----
check "abort rule injects: 503" test "$(code /fail)" = 503
rc 0 "halt --reason" ctl halt --reason "game day: checkout on fire"
check "the very next request passes untouched (200)" test "$(code /fail)" = 200
check "status shows halted with the reason" test "$(json status .halt_reason)" = "game day: checkout on fire"
check "halt latches: still 200 a moment later" test "$(code /fail)" = 200
rc 0 "resume" ctl resume
check "the very next request is aborted again (503)" test "$(code /fail)" = 503
# On one keep-alive connection: request, halt, request.
python3 - "$PROXY" "$FAULTCTL" "$SOCK" >"$T/ka" 2>&1 <<'EOF'
import http.client, subprocess, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
def get():
    c.request("GET", "/fail"); r = c.getresponse(); r.read(); return r.status
a = get()
subprocess.run([sys.argv[2], "--admin", sys.argv[3], "halt"], check=True, capture_output=True)
b = get()
subprocess.run([sys.argv[2], "--admin", sys.argv[3], "resume"], check=True, capture_output=True)
d = get()
print(a, b, d)
EOF
check "on one keep-alive connection: 503, halt, 200, resume, 503" test "$(cat "$T/ka")" = "503 200 503"

# ---- signals and the HALT file ----
kill -USR1 "$DAEMON"
check "SIGUSR1 halts" wait_for 3 sh -c "'$FAULTCTL' --admin '$SOCK' -o json status | jq -e '.halted == true'"
kill -USR2 "$DAEMON"
check "SIGUSR2 resumes" wait_for 3 sh -c "'$FAULTCTL' --admin '$SOCK' -o json status | jq -e '.halted == false'"
touch "$T/run/HALT"
check "a HALT file beside the socket halts within a second" wait_for 2 sh -c "'$FAULTCTL' --admin '$SOCK' -o json status | jq -e '.halted == true'"
check "  ... and nothing is injected" test "$(code /fail)" = 200
rc 1 "resume is refused while the HALT file exists" ctl resume
check "  ... saying to remove it" grep -q "HALT file .* exists; remove it\|halted by HALT file .*; remove that file to resume" "$T/err"
kill -USR2 "$DAEMON"
sleep 0.5
check "SIGUSR2 does not resume while the HALT file exists" sh -c "'$FAULTCTL' --admin '$SOCK' -o json status | jq -e '.halted == true'"
rm -f "$T/run/HALT"
check "removing the HALT file resumes" wait_for 2 sh -c "'$FAULTCTL' --admin '$SOCK' -o json status | jq -e '.halted == false'"
check "  ... and injection is back" test "$(code /fail)" = 503

# ---- enable, disable, set percent ----
rc 0 "disable aborts" ctl disable aborts
check "a disabled rule injects nothing (0 of 20)" test "$(count /fail 20 503)" = 0
rc 0 "enable aborts" ctl enable aborts
check "an enabled rule injects again (20 of 20)" test "$(count /fail 20 503)" = 20
check "percent 0 from the file: 0 of 100 aborted" test "$(count /rate 100 500)" = 0
rc 0 "set rate --percent 50" ctl set rate --percent 50
n=$(count /rate 400 500)
check "set percent changes the observed rate: $n of 400 aborted (150-250)" test "$n" -ge 150 -a "$n" -le 250
rc 0 "set rate --percent 100 --fault abort" ctl set rate --percent 100 --fault abort
check "percent 100: 50 of 50 aborted" test "$(count /rate 50 500)" = 50
rc 0 "set rate --percent default (back to the file's 0)" ctl set rate --percent default
check "  ... 0 of 50 aborted" test "$(count /rate 50 500)" = 0
rc 0 "PATCH with curl on the unix socket" curl -sf --unix-socket "$SOCK" -X PATCH -d '{"abort":{"percent":100}}' http://x/v1/rules/rate
check "  ... takes effect (10 of 10)" test "$(count /rate 10 500)" = 10
rc 0 "PATCH percent null restores the file's value" curl -sf --unix-socket "$SOCK" -X PATCH -d '{"percent":null}' http://x/v1/rules/rate
rc 22 "PATCH with an unknown key is a 400" curl -sf --unix-socket "$SOCK" -X PATCH -d '{"bogus":1}' http://x/v1/rules/rate
rc 0 "set aborts --status 429 (live status change)" ctl set aborts --status 429
check "  ... the next request is answered 429" test "$(code /fail)" = 429
check "  ... rules shows the live status, the status marked changed, the percent not" sh -c "'$FAULTCTL' --admin '$SOCK' -o table rules | grep -E '^aborts .*100% 429[*]'"
rc 0 "set aborts --status default" ctl set aborts --status default
check "  ... back to the file's 503" test "$(code /fail)" = 503
ms() { curl -s -o /dev/null -w '%{time_total}' --max-time 5 "http://127.0.0.1:$PROXY$1" | awk '{printf "%d", $1 * 1000}'; }
rc 0 "set slow --delay 20ms (live delay change)" ctl set slow --delay 20ms
t=$(ms /slow)
check "  ... the next request is held about 20 ms, not 300 ($t ms)" test "$t" -ge 15 -a "$t" -lt 200
rc 0 "set slow --delay default" ctl set slow --delay default
t=$(ms /slow)
check "  ... back to the file's 300 ms ($t ms)" test "$t" -ge 290
rc 2 "set --status 700 is a usage error" ctl set aborts --status 700
rc 1 "set --delay on a rule without a delay fault: exit 1" ctl set aborts --delay 5ms

# ---- apply ----
inj_before=$(ctl metrics | awk '/^faultline_faults_injected_total\{policy="pol-[ab]",rule="aborts",fault="abort"\}/ {print $2}')
gen_a=$(json status .generation)
rc 1 "apply an invalid policy: exit 1" ctl apply -f "$T/bad.yaml"
check "  ... every error as file:line:col (status)" grep -q "^$T/bad.yaml:13:[0-9]*: .*status" "$T/err"
check "  ... every error as file:line:col (unknown key)" grep -q "^$T/bad.yaml:13:[0-9]*: .*percentage" "$T/err"
check "  ... says nothing changed" grep -q "nothing applied" "$T/err"
check "  ... the old policy stays in force" test "$(json status .policy)/$(json status .generation)" = "pol-a/$gen_a"
check "  ... and still injects" test "$(code /fail)" = 503
rc 0 "apply --dry-run" ctl -o table apply -f "$T/b.yaml" --dry-run
check "  ... shows the policy and the rule that would change" grep -q "policy name: pol-a -> pol-b" "$T/out"
check "  ... (rule slow, fault part)" grep -q "rule slow" "$T/out"
check "  ... and changes nothing" test "$(json status .policy)" = pol-a
sed '/seed: 7/d' "$T/b.yaml" >"$T/noseed.yaml"
rc 0 "apply --dry-run of a policy without a seed" ctl -o table apply -f "$T/noseed.yaml" --dry-run
check "  ... shows the seed going from 7 to none" grep -q "seed: 7 -> none" "$T/out"
sed 's/^  seed: 7$/  seed: 7\n  proxy_port: 15999/' "$T/b.yaml" >"$T/port.yaml"
rc 0 "apply --dry-run of a policy with another proxy_port" curl -sf --unix-socket "$SOCK" -X PUT --data-binary @"$T/port.yaml" "http://x/v1/policy?dry_run=1"
check "  ... the diff shows proxy_port" jq -e '.diff.settings.proxy_port.to == 15999' "$T/out"
rc 0 "PUT ?dry_run=1 with curl returns the diff" curl -sf --unix-socket "$SOCK" -X PUT --data-binary @"$T/b.yaml" "http://x/v1/policy?dry_run=1"
check "  ... as JSON" jq -e '.dry_run == true and .diff.rules.changed[0].name == "slow"' "$T/out"
rc 0 "apply" ctl -o table apply -f "$T/b.yaml"
check "  ... the new policy is in force" test "$(json status .policy)" = pol-b
check "  ... its delay is the new one (1 ms, not 300 ms)" \
    test "$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PROXY/slow" | cut -d. -f1)" = 0

# A renamed listener on the same address keeps its socket (no "address in use"
# against ourselves) and serves under the new name.
sed 's/- name: web/- name: web2/' "$T/b.yaml" >"$T/b2.yaml"
rc 0 "apply a policy whose listener was renamed (same address)" ctl apply -f "$T/b2.yaml"
check "  ... status lists the new name" sh -c "'$FAULTCTL' --admin '$SOCK' -o json status | jq -e '.listeners[0].name == \"web2\"'"
check "  ... and traffic still flows" test "$(code /steady)" = 200
rc 0 "apply the original name back" ctl apply -f "$T/b.yaml"

# Apply during continuous traffic: wrk keeps 16 connections busy while the
# policy flips 20 times; no request may fail and none may get a non-2xx.
wrk -t2 -c16 -d4s "http://127.0.0.1:$PROXY/steady" >"$T/wrk" 2>&1 &
WRK=$!
sleep 0.5
flips=0
for i in $(seq 1 10); do
    ctl apply -f "$T/a.yaml" >/dev/null && flips=$((flips + 1))
    sleep 0.1
    ctl apply -f "$T/b.yaml" >/dev/null && flips=$((flips + 1))
    sleep 0.1
done
wait $WRK
reqs=$(awk '/requests in/ {print $1}' "$T/wrk")
check "20 applies during wrk traffic all succeeded" test "$flips" = 20
check "wrk made requests throughout ($reqs)" test "${reqs:-0}" -gt 500
check "no request lost: no socket errors" sh -c "! grep -q 'Socket errors' '$T/wrk'"
check "no request lost: no non-2xx responses" sh -c "! grep -q 'Non-2xx' '$T/wrk'"
[ "$FAIL" -gt 0 ] && sed 's/^/     | /' "$T/wrk"

# ---- events ----
ctl -o json events -f >"$T/events" 2>&1 &
EV=$!
PIDS+=($EV)
sleep 0.3
for i in 1 2 3; do code /fail >/dev/null; done
ctl halt --reason "events test" >/dev/null
ctl resume >/dev/null
ctl resume >/dev/null # not halted: no second resume event
ctl disable slow >/dev/null
ctl enable slow >/dev/null
check "events -f receives every fault line" wait_for 3 sh -c "test \$(grep -c '\"event\":\"fault\"' '$T/events') -ge 3"
check "  ... the fault lines carry rule and status" grep -q '"rule":"aborts","fault":"abort","status":503' "$T/events"
check "  ... and halt, resume and rule changes" sh -c "grep -q '\"event\":\"halt\",\"reason\":\"events test\"' '$T/events' && grep -q '\"event\":\"resume\"' '$T/events' && grep -q '\"event\":\"rule\",\"rule\":\"slow\",\"enabled\":false' '$T/events'"
check "  ... one resume event for a resume when halted and one when not" test "$(grep -c '"event":"resume"' "$T/events")" = 1
kill $EV 2>/dev/null
rc 0 "events (recent, without -f)" ctl -o table events
check "  ... as a table with the apply events" grep -q "apply .*policy=pol-" "$T/out"
rc 0 "curl streams /v1/events (chunked)" sh -c "curl -s -N --max-time 1 --unix-socket '$SOCK' http://x/v1/events -D '$T/evhead' >/dev/null; test \$? = 28"
check "  ... with Transfer-Encoding: chunked" grep -qi "transfer-encoding: chunked" "$T/evhead"

# ---- metrics ----
rc 0 "metrics" ctl metrics
for m in faultline_requests_total ',rule="aborts",fault="abort"}' \
    faultline_faults_overflow_total faultline_active_connections 'faultline_halted 0' \
    'faultline_build_info{version='; do
    check "  ... has $m" grep -qF "$m" "$T/out"
done
inj=$(awk '/^faultline_faults_injected_total\{policy="pol-[ab]",rule="aborts",fault="abort"\}/ {print $2}' "$T/out")
check "  ... counters survive applies (aborts injected: $inj_before before them, $inj now)" test "${inj:-0}" -gt "${inj_before:-0}" -a "${inj_before:-0}" -gt 0
rc 0 "--metrics-listen serves /metrics over TCP" curl -sf "http://127.0.0.1:$METRICS/metrics"
check "  ... with the same metrics" grep -q "^faultline_requests_total [0-9]" "$T/out"
rc 22 "--metrics-listen serves nothing else (404)" curl -sf "http://127.0.0.1:$METRICS/v1/rules"
rc 22 "  ... nor changes (PUT /v1/policy: 404)" curl -sf -X PUT --data-binary @/dev/null "http://127.0.0.1:$METRICS/v1/policy"
rc 0 "  ... but the read-only status, for kubectl faultline" curl -sf "http://127.0.0.1:$METRICS/v1/status"
check "  ... which is the daemon's" grep -q '"policy":"pol-' "$T/out"
rc 0 "--metrics-listen serves /healthz (liveness)" curl -sf "http://127.0.0.1:$METRICS/healthz"
check "  ... which says the loop answers" grep -q '"status":"ok","loop":true' "$T/out"
rc 0 "  ... and /readyz (ready: no API watch to wait for)" curl -sf "http://127.0.0.1:$METRICS/readyz"
rc 0 "the HTTP API answers unknown paths with 404 JSON" sh -c "curl -s --unix-socket '$SOCK' -w '%{http_code}' http://x/v2/nope | grep -q '404$'"

# ---- several workers: fault lines from worker threads reach the stream ----
policy multi "$T/m.yaml" "$RULES_A" $PROXY2
"$FAULTLINE" run -f "$T/m.yaml" --admin "$T/run2/admin.sock" --workers 2 --fault-log "$T/faults-m.log" >"$T/daemon2.log" 2>&1 &
D2=$!
PIDS+=($D2)
wait_for 10 "$FAULTCTL" --admin "$T/run2/admin.sock" status
"$FAULTCTL" --admin "$T/run2/admin.sock" -o json events -f >"$T/events2" 2>&1 &
EV2=$!
PIDS+=($EV2)
sleep 0.3
for i in $(seq 1 8); do curl -s -o /dev/null "http://127.0.0.1:$PROXY2/fail" & done
wait_for 5 sh -c "test \$(grep -c '\"event\":\"fault\"' '$T/events2') -ge 8"
check "with --workers 2, events -f gets all 8 fault lines" test "$(grep -c '"event":"fault"' "$T/events2")" = 8
check "  ... and status counts 2 workers" test "$("$FAULTCTL" --admin "$T/run2/admin.sock" -o json status | jq .workers)" = 2
kill -TERM $D2
wait $D2
check "SIGTERM ends the daemon cleanly (exit 0)" test $? = 0
wait $EV2
check "  ... ends the event stream (faultctl events -f exits 0)" test $? = 0
check "  ... and removes its socket" test ! -e "$T/run2/admin.sock"

# ---- faultctl run ----
ctl apply -f "$T/a.yaml" >/dev/null
gen0=$(json status .generation)
experiment() { # experiment FILE NAME POLICY-BLOCK PROBES-BLOCK [DURATION]
    cat >"$1" <<EOF
name: $2
$3
duration: ${5:-2s}
tolerance: 0%
probes:
$4
EOF
}
PROBE_OK="  - name: steady
    http: {url: \"http://127.0.0.1:$PROXY/steady\", expect_status: 200, max_latency_ms: 1000}
    interval: 100ms
  - name: backend
    command: {cmd: \"curl -fsS -o /dev/null http://127.0.0.1:$BACK/\", expect_exit: 0}
    interval: 500ms"
policy exp-delay "$T/exp-delay.yaml" '    - name: steady-slow
      match: {path: {prefix: /steady}}
      fault:
        delay: {fixed: 50ms, percent: 50}'
policy exp-abort "$T/exp-abort.yaml" '    - name: steady-down
      match: {path: {prefix: /steady}}
      fault:
        abort: {status: 503, percent: 100}'

experiment "$T/e0.yaml" pass "policy: exp-delay.yaml" "$PROBE_OK"
rc 0 "run: an experiment that holds exits 0" ctl -o table run "$T/e0.yaml" --junit "$T/junit0.xml"
check "  ... prints PASSED" grep -q "PASSED" "$T/out"
check "  ... the policy was in force during the run (delays injected)" grep -q '"rule":"steady-slow"' "$T/faults.log"
check "  ... the previous policy is restored" test "$(json status .policy)/$(json status .generation)" = "pol-a/$gen0"
check "  ... JUnit report with no failures" grep -q '<testsuite name="pass" tests="[0-9]*" failures="0"' "$T/junit0.xml"
check "  ... JUnit report is well-formed XML" python3 -c "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])" "$T/junit0.xml"

experiment "$T/e10.yaml" before "policy: exp-abort.yaml" "  - name: dead
    http: {url: \"http://127.0.0.1:$DEAD/\", expect_status: 200}"
rc 10 "run: steady state failing before injection exits 10" ctl -o table run "$T/e10.yaml" --junit "$T/junit10.xml"
check "  ... nothing was injected (same generation)" test "$(json status .generation)" = "$gen0"
check "  ... the JUnit report has the failure" grep -q '<failure message=".*cannot connect' "$T/junit10.xml"

experiment "$T/e11.yaml" deviate "policy: exp-abort.yaml" "$PROBE_OK"
rc 11 "run: probes deviating under the fault exit 11" ctl -o table run "$T/e11.yaml" --junit "$T/junit11.xml"
check "  ... says which probe and why" grep -q "probe steady: .* failed.*status 503, expected 200" "$T/out"
check "  ... the previous policy is restored" test "$(json status .policy)/$(json status .generation)" = "pol-a/$gen0"
check "  ... JUnit counts the failure" grep -q 'failures="1"' "$T/junit11.xml"

experiment "$T/e12.yaml" halted "policy: exp-delay.yaml" "$PROBE_OK" 6s
(sleep 1; ctl halt --reason "stop the experiment" >/dev/null) &
rc 12 "run: a halt during the run exits 12" ctl -o table run "$T/e12.yaml"
check "  ... and still restores the previous policy" test "$(json status .policy)/$(json status .generation)" = "pol-a/$gen0"
check "  ... the halt latches after the run" test "$(json status .halted)" = true
ctl resume >/dev/null

# Inline policy: errors point into the experiment file.
cat >"$T/einline.yaml" <<EOF
name: inline-bad
duration: 1s
policy:
  apiVersion: faultline/v1
  kind: FaultPolicy
  metadata: {name: inline}
  spec:
    listeners:
      - {name: web, listen: "127.0.0.1:$PROXY", upstream: "127.0.0.1:$BACK"}
    rules:
      - name: r
        fault: {abort: {status: 700}}
probes:
  - http: {url: "http://127.0.0.1:$PROXY/steady"}
EOF
rc 1 "run: an invalid inline policy exits 1 before anything is injected" ctl run "$T/einline.yaml"
check "  ... with the error at the experiment file's line:col" grep -q "^$T/einline.yaml:12:[0-9]*: .*status" "$T/err"
sed -i 's/status: 700/status: 503, percent: 0/' "$T/einline.yaml"
rc 0 "run: a valid inline policy works" ctl run "$T/einline.yaml"
cat >"$T/ebad.yaml" <<EOF
name: bad
duration: often
probes: [{name: x, ftp: {}}]
EOF
rc 1 "run: an invalid experiment exits 1 with file:line:col" ctl run "$T/ebad.yaml"
check "  ... errors name the line" grep -q "^$T/ebad.yaml:2:[0-9]*: 'duration'" "$T/err"
rc 2 "run without a file is a usage error" ctl run

# Ctrl-C: the policy is restored before faultctl exits.
experiment "$T/eint.yaml" interrupted "policy: exp-delay.yaml" "$PROBE_OK" 20s
"$FAULTCTL" --admin "$SOCK" -o table run "$T/eint.yaml" >"$T/out" 2>"$T/err" &
RUN=$!
sleep 1.5
check "  (the experiment's policy is in force mid-run)" test "$(json status .policy)" = exp-delay
kill -INT $RUN
wait $RUN
r=$?
check "run: SIGINT restores the previous policy and exits 1 (got $r)" test "$r" = 1 -a "$(json status .policy)/$(json status .generation)" = "pol-a/$gen0"
check "  ... saying so" grep -q "interrupted by signal 2; the previous policy was restored" "$T/err"

# The shipped example, moved to this test's ports.
mkdir -p "$T/ex"
# (listeners are matched by name: the test daemon's is "web")
sed -e "s/127.0.0.1:15000/127.0.0.1:$PROXY/; s/127.0.0.1:8080/127.0.0.1:$BACK/; s/- name: orders/- name: web/" \
    "$ROOT/examples/experiment-policy.yaml" >"$T/ex/experiment-policy.yaml"
sed -e "s/127.0.0.1:15000/127.0.0.1:$PROXY/; s/127.0.0.1:8080/127.0.0.1:$BACK/; s/duration: 10s/duration: 3s/" "$ROOT/examples/experiment.yaml" >"$T/ex/experiment.yaml"
rc 0 "run: examples/experiment.yaml passes" ctl -o table run "$T/ex/experiment.yaml" --junit "$T/ex/junit.xml"
check "  ... and injected its delays" grep -q '"rule":"slow-orders","fault":"delay"' "$T/faults.log"
rc 0 "run -o json prints a JSON summary" sh -c "'$FAULTCTL' --admin '$SOCK' -o json run '$T/e0.yaml' | jq -e '.exit == 0 and .rolled_back == true'"

# Rollback failure: the daemon dies mid-run, so nothing can restore the policy.
experiment "$T/e13.yaml" rollback "policy: exp-delay.yaml" "$PROBE_OK" 6s
(sleep 1; kill -9 "$DAEMON") &
rc 13 "run: a rollback that cannot happen exits 13" ctl -o table run "$T/e13.yaml" --junit "$T/junit13.xml"
check "  ... says ROLLBACK FAILED and what to do" grep -q "ROLLBACK FAILED.*faultctl apply" "$T/err"
check "  ... and the JUnit report says so" grep -q 'name="previous policy restored">' "$T/junit13.xml"
check "the dead daemon left its socket behind (stale)" test -S "$SOCK"
rc 3 "  ... faultctl against the stale socket: exit 3" ctl status
check "a new daemon replaces the stale socket" start_daemon "$T/a.yaml"
check "  ... and answers" test "$(json status .policy)" = pol-a
stop_daemon
check "  ... and removes the socket on SIGTERM" test ! -e "$SOCK"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
