#!/usr/bin/env bash
# Runs every HTTP transcript in test/integration/cases/*.case: each gets its own
# daemon with the case's policy (listeners a and b -> the sample backend), then
# casecheck.js sends the transcript and checks the outcomes. A new case is a new file.
#   bash test/integration/cases.sh [NAME-GLOB]
source "$(dirname "$0")/lib.sh"
fl_ports 18100
need node

start_backend TCP_ECHO || { fail "backend starts"; fl_finish; }
next_port dead_port
DEAD=127.0.0.1:$dead_port # nothing listens here (it is never handed out again below)
FL_NEXT_PORT=$((dead_port + 1))
export BACKEND BACKEND_PORT TCP_ECHO="127.0.0.1:$TCP_ECHO_PORT" DEAD

for case in "$FL_IT"/cases/${1:-*}.case; do
    name=$(basename "$case" .case)
    next_port pa && next_port pb || { fail "$name: no free ports"; continue; }
    [ "$pa" = "$dead_port" ] && next_port pa
    [ "$pb" = "$dead_port" ] && next_port pb
    export LISTEN_A=127.0.0.1:$pa LISTEN_B=127.0.0.1:$pb
    policy="$FL_TMP/$name.yaml"
    if ! node "$FL_IT/casecheck.js" policy "$case" >"$policy"; then
        fail "$name: case file is readable"
        continue
    fi
    if ! start_faultline "$policy" "$pa"; then
        fail "$name: faultline starts with the case's policy"
        continue
    fi
    export FAULT_LOG=$FL_LOG
    out=$(node "$FL_IT/casecheck.js" run "$case" 2>&1)
    rc=$?
    stop_faultline
    src=$?
    if [ $rc -eq 0 ] && [ $src -eq 0 ]; then
        pass "$name"
    else
        fail "$name"
        [ -n "$out" ] && echo "$out"
        [ $src -eq 0 ] || echo "       daemon exit status on SIGTERM: $src (expected 0)"
        echo "       policy: $policy; daemon stderr (last lines):"
        tail -n 5 "$FL_ERR" | sed 's/^/       | /'
    fi
done
fl_finish
