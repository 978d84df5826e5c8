#!/usr/bin/env bash
# Helpers for faultline's integration tests. Source it from a test script:
#
#   source "$(dirname "$0")/lib.sh"
#   fl_ports 18200                      # this script's port range (100 ports)
#   next_port PORT                      # sets PORT to a free port of that range
#   start_backend                       # sets BACKEND_PORT, BACKEND
#   p=$(write_policy name <<EOF ... EOF)
#   start_faultline "$p" "$PORT"        # sets FL_PID, FL_LOG, FL_ERR
#   assert_eq "what" expected actual
#   fl_finish                           # prints the counts, exits 1 on any failure
#
# The binary under test is $FAULTLINE (default build/faultline, see --build below). Everything a test
# starts is killed by an EXIT trap, also when the test fails or is interrupted.
# FL_RESULTS, when set, names a file that receives "passed failed" for test/run.

set -u
FL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FL_IT="$FL_ROOT/test/integration"
# `--build DIR` as the test's first arguments (as test/run passes them) or $BUILD
# picks the build tree; $FAULTLINE overrides the binary itself.
if [ "${1:-}" = --build ] && [ $# -ge 2 ]; then
    BUILD=$2
    shift 2
fi
FAULTLINE=${FAULTLINE:-${BUILD:-$FL_ROOT/build}/faultline}
FL_TEST=$(basename "$0" .sh)
FL_TMP=$(mktemp -d "${TMPDIR:-/tmp}/faultline-$FL_TEST.XXXXXX")
FL_PIDS=()
FL_PASSED=0
FL_FAILED=0
FL_NEXT_PORT=18000
FL_PORT_END=18099

if [ -t 1 ]; then FL_RED=$'\e[31m' FL_GREEN=$'\e[32m' FL_OFF=$'\e[0m'; else FL_RED='' FL_GREEN='' FL_OFF=''; fi

fl_cleanup() {
    local pid
    for pid in "${FL_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${FL_PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    FL_PIDS=()
    [ -n "${FL_KEEP_TMP:-}" ] || rm -rf "$FL_TMP"
}
trap fl_cleanup EXIT
trap 'echo "$FL_TEST: interrupted" >&2; exit 130' INT TERM

# ---- results -----------------------------------------------------------------

pass() {
    FL_PASSED=$((FL_PASSED + 1))
    echo "  ${FL_GREEN}ok${FL_OFF}   $*"
}

# fail WHAT [EXPECTED GOT]
fail() {
    FL_FAILED=$((FL_FAILED + 1))
    echo "  ${FL_RED}FAIL${FL_OFF} $1"
    if [ $# -ge 3 ]; then
        echo "       expected: $2"
        echo "       got:      $3"
    fi
}

assert_eq() { # WHAT EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "$2" "$3"; fi
}

assert_match() { # WHAT ERE ACTUAL
    if [[ $3 =~ $2 ]]; then pass "$1"; else fail "$1" "matching /$2/" "$3"; fi
}

assert_no_match() { # WHAT ERE ACTUAL
    if [[ $3 =~ $2 ]]; then fail "$1" "not matching /$2/" "$3"; else pass "$1"; fi
}

# Numeric comparisons; values may be decimals.
assert_cmp() { # WHAT ACTUAL OP LIMIT   (OP: < <= > >= ==)
    if awk -v a="$2" -v b="$4" -v op="$3" 'BEGIN {
            r = (op == "<") ? a < b : (op == "<=") ? a <= b : (op == ">") ? a > b : \
                (op == ">=") ? a >= b : (op == "==") ? a == b : 0; exit !r }'; then
        pass "$1 ($2 $3 $4)"
    else
        fail "$1" "$3 $4" "$2"
    fi
}

# 1 when $FAULTLINE is the ASan+UBSan build: tests that measure a rate over
# seconds measure it there over less (the plain build takes the full figure).
fl_sanitized() { grep -q __asan_init "$FAULTLINE" 2>/dev/null; }

# Sanitizer reports in any daemon stderr of this test count as failures.
fl_check_sanitizers() {
    local f
    for f in "$FL_TMP"/*.err; do
        [ -e "$f" ] || continue
        if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$f"; then
            fail "sanitizer report in $(basename "$f")" "none" "$(grep -m3 -E 'ERROR:|runtime error:' "$f")"
            sed -n '1,60p' "$f" | sed 's/^/       | /'
        fi
    done
}

fl_finish() {
    fl_cleanup_daemons
    fl_check_sanitizers
    echo "$FL_TEST: $FL_PASSED passed, $FL_FAILED failed"
    if [ -n "${FL_RESULTS:-}" ]; then echo "$FL_PASSED $FL_FAILED $FL_TEST" >>"$FL_RESULTS"; fi
    [ "$FL_FAILED" -eq 0 ]
    exit
}

# ---- ports and processes -------------------------------------------------------

fl_ports() { # BASE: this script owns BASE..BASE+99
    FL_NEXT_PORT=$1
    FL_PORT_END=$(($1 + 99))
}

# next_port VAR: sets VAR to a port of this script's range that nothing listens on
# (not in a subshell: the counter must advance). Wraps around at the range's end.
next_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$FL_NEXT_PORT
        FL_NEXT_PORT=$((FL_NEXT_PORT + 1))
        [ "$FL_NEXT_PORT" -gt "$FL_PORT_END" ] && FL_NEXT_PORT=$((FL_PORT_END - 99))
        if [ "$p" != "${BACKEND_PORT:-}" ] && [ "$p" != "${TCP_ECHO_PORT:-}" ] &&
            ! port_open 127.0.0.1 "$p"; then
            printf -v "$1" %s "$p"
            return 0
        fi
    done
    echo "next_port: port range exhausted" >&2
    return 1
}

port_open() { # HOST PORT: true when something accepts connections there
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_port() { # HOST PORT [SECONDS] [PID]: waits until it accepts; fails if PID dies
    local host=$1 port=$2 secs=${3:-5} pid=${4:-} i
    for ((i = 0; i < secs * 20; i++)); do
        port_open "$host" "$port" && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.05
    done
    return 1
}

# Records a background process so the EXIT trap ends it.
fl_track() { FL_PIDS+=("$1"); }

fl_untrack() {
    local keep=() p
    for p in "${FL_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    FL_PIDS=("${keep[@]}")
}

# start_backend [TCP_ECHO]: sets BACKEND_PORT, BACKEND (127.0.0.1:port), BACKEND_PID,
# and TCP_ECHO_PORT when asked for an echo server.
start_backend() {
    next_port BACKEND_PORT || return 1
    local args=(--port "$BACKEND_PORT")
    if [ "${1:-}" = TCP_ECHO ]; then
        next_port TCP_ECHO_PORT || return 1
        args+=(--tcp-echo "$TCP_ECHO_PORT")
    fi
    node "$FL_ROOT/examples/backend.js" "${args[@]}" >"$FL_TMP/backend.out" 2>&1 &
    BACKEND_PID=$!
    fl_track "$BACKEND_PID"
    BACKEND=127.0.0.1:$BACKEND_PORT
    if ! wait_port 127.0.0.1 "$BACKEND_PORT" 10 "$BACKEND_PID"; then
        echo "start_backend: backend did not come up:" >&2
        cat "$FL_TMP/backend.out" >&2
        return 1
    fi
    if [ -n "${TCP_ECHO_PORT:-}" ]; then wait_port 127.0.0.1 "$TCP_ECHO_PORT" 5 || return 1; fi
}

# write_policy NAME < YAML: writes the policy into the test's temp dir, prints its path.
write_policy() {
    local f="$FL_TMP/$1.yaml"
    cat >"$f"
    echo "$f"
}

# start_faultline POLICY PORT [EXTRA ARGS...]: runs the daemon with its fault log in
# $FL_TMP, waits until PORT accepts. Sets FL_PID, FL_LOG (fault log), FL_ERR (stderr),
# FL_OUT (stdout). Returns 1 (and shows stderr) when it does not come up in 5 s.
FL_N=0
start_faultline() {
    local policy=$1 port=$2
    shift 2
    FL_N=$((FL_N + 1))
    FL_LOG="$FL_TMP/fault-$FL_N.log"
    FL_ERR="$FL_TMP/faultline-$FL_N.err"
    FL_OUT="$FL_TMP/faultline-$FL_N.out"
    : >"$FL_LOG"
    "$FAULTLINE" run -f "$policy" --fault-log "$FL_LOG" --admin "$FL_TMP/admin-$FL_N.sock" "$@" \
        >"$FL_OUT" 2>"$FL_ERR" &
    FL_PID=$!
    fl_track "$FL_PID"
    if ! wait_port 127.0.0.1 "$port" 5 "$FL_PID"; then
        echo "start_faultline: not listening on 127.0.0.1:$port after 5 s; stderr:" >&2
        sed 's/^/    /' "$FL_ERR" >&2
        return 1
    fi
}

# stop_faultline [PID]: SIGTERM, waits up to 10 s; returns the exit status (124 if it
# had to be killed).
stop_faultline() {
    local pid=${1:-$FL_PID} i rc
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        fl_untrack "$pid"
        return 124
    fi
    wait "$pid"
    rc=$?
    fl_untrack "$pid"
    return $rc
}

# Stops every daemon still running (used at the end of a test).
fl_cleanup_daemons() {
    local p
    for p in "${FL_PIDS[@]}"; do
        [ "$p" = "${BACKEND_PID:-}" ] && continue
        stop_faultline "$p" >/dev/null 2>&1
    done
}

# log_count [FIELD=VALUE]...: fault-log lines (of $FL_LOG) carrying all these fields.
log_count() {
    node -e '
        const fs = require("fs");
        const want = process.argv.slice(1).map((kv) => kv.split(/=(.*)/s).slice(0, 2));
        let n = 0, bad = 0;
        for (const l of fs.readFileSync(process.env.FL_LOG, "utf8").split("\n")) {
            if (!l.trim()) continue;
            let o;
            try { o = JSON.parse(l); } catch (e) { bad++; continue; }
            if (want.every(([k, v]) => String(o[k]) === v)) n++;
        }
        console.log(bad ? `${n} (+${bad} unparsable)` : n);
    ' "$@"
}

export FL_LOG
need() { # CMD...: fails the test early when a client is missing
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || { fail "required command '$c' not found" "installed" "missing"; fl_finish; }
    done
}

if [ ! -x "$FAULTLINE" ]; then
    echo "$FL_TEST: faultline binary $FAULTLINE not found (build it, or set FAULTLINE)" >&2
    FL_FAILED=1
    fl_finish
fi
