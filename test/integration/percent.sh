#!/usr/bin/env bash
# percent accuracy: over >= 10,000 requests the injected share stays within 4
# standard deviations of the configured percent, and the fault log holds exactly one
# line per injected fault. Exact counts come from curl (-K config, keep-alive, one
# status per transfer); wrk adds the same check under concurrency. `seed:` makes the
# sequence of decisions reproducible.
source "$(dirname "$0")/lib.sh"
fl_ports 18300
need curl wrk node

start_backend || { fail "backend starts"; fl_finish; }
next_port P

# within_4sd WHAT COUNT N PERCENT
within_4sd() {
    local r
    r=$(awk -v k="$2" -v n="$3" -v pct="$4" 'BEGIN {
        p = pct / 100; mu = n * p; sd = sqrt(n * p * (1 - p));
        printf "%d %.1f %.1f %s", k, mu - 4 * sd, mu + 4 * sd, (k >= mu - 4 * sd && k <= mu + 4 * sd) ? "ok" : "out" }')
    set -- "$1" $r
    if [ "$5" = ok ]; then pass "$1: $2 in [$3, $4]"; else fail "$1" "within 4 sd: [$3, $4]" "$2"; fi
}

policy=$(write_policy percent <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: percent
spec:
  listeners:
    - {name: a, listen: "127.0.0.1:$P", upstream: "127.0.0.1:$BACKEND_PORT"}
  rules:
    - name: ten
      match: {path: {prefix: /ten}}
      fault:
        abort: {status: 503, percent: 10}
    - name: fine
      match: {path: {prefix: /fine}}
      fault:
        abort: {status: 500, percent: 0.5}
    - name: quarter
      match: {path: {prefix: /quarter}}
      fault:
        abort: {status: 502, percent: 25}
EOF
)
start_faultline "$policy" "$P" || { fail "faultline starts"; fl_finish; }

# curl: N requests per process over one keep-alive connection, 3 processes.
curl_run() { # PATH PER_PROCESS OUTFILE
    local i j pids=()
    for ((j = 0; j < 3; j++)); do
        {
            for ((i = 0; i < $2; i++)); do
                echo "url = \"http://127.0.0.1:$P$1?i=$j-$i\""
                echo "output = /dev/null"
            done
        } >"$FL_TMP/k$j.cfg"
        curl -s -K "$FL_TMP/k$j.cfg" -w '%{http_code}\n' >"$3.$j" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    cat "$3".0 "$3".1 "$3".2 >"$3"
}

curl_run /ten 4000 "$FL_TMP/ten"
n=$(wc -l <"$FL_TMP/ten")
k=$(grep -c '^503$' "$FL_TMP/ten")
other=$(grep -vcE '^(200|503)$' "$FL_TMP/ten")
assert_eq "curl: 12000 responses" 12000 "$n"
assert_eq "curl: only 200 and 503" 0 "$other"
within_4sd "curl: 10% abort share" "$k" "$n" 10
sleep 0.5
assert_eq "fault log: one line per injected 503 (rule ten)" "$k" "$(log_count rule=ten fault=abort status=503)"

curl_run /fine 4000 "$FL_TMP/fine"
n=$(wc -l <"$FL_TMP/fine")
k=$(grep -c '^500$' "$FL_TMP/fine")
within_4sd "curl: 0.5% abort share (sub-percent resolution)" "$k" "$n" 0.5
sleep 0.5
assert_eq "fault log: one line per injected 500 (rule fine)" "$k" "$(log_count rule=fine)"

# wrk: 16 connections for 5 s. Responses still in flight when wrk stops may be
# logged without being counted: at most one per connection.
before=$(log_count rule=quarter)
wrk -t2 -c16 -d5s -s "$FL_IT/wrk/count-status.lua" "http://127.0.0.1:$P/quarter" \
    >"$FL_TMP/wrk.out" 2>&1
ok=$(awk '$1 == "status" && $2 == 200 { print $3 }' "$FL_TMP/wrk.out")
k=$(awk '$1 == "status" && $2 == 502 { print $3 }' "$FL_TMP/wrk.out")
ok=${ok:-0} k=${k:-0}
n=$((ok + k))
assert_cmp "wrk: responses counted" "$n" ">=" 10000
within_4sd "wrk: 25% abort share" "$k" "$n" 25
sleep 0.5
logged=$(( $(log_count rule=quarter) - before ))
assert_cmp "wrk: fault log lines >= 502s counted" "$logged" ">=" "$k"
assert_cmp "wrk: fault log lines <= 502s counted + in flight" "$logged" "<=" $((k + 16))
assert_eq "fault log: every line parses as JSON" "$(wc -l <"$FL_LOG")" "$(log_count)"
stop_faultline
assert_eq "SIGTERM: exit 0" 0 "$?"

# seed: the same sequential requests give the same decisions in two runs.
next_port S
seeded=$(write_policy seeded <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata:
  name: seeded
spec:
  seed: 42
  listeners:
    - {name: a, listen: "127.0.0.1:$S", upstream: "127.0.0.1:$BACKEND_PORT"}
  rules:
    - name: half
      fault:
        abort: {status: 503, percent: 50}
EOF
)
for run in 1 2; do
    start_faultline "$seeded" "$S" || { fail "seeded faultline starts"; break; }
    for ((i = 0; i < 300; i++)); do
        echo "url = \"http://127.0.0.1:$S/s$i\""
        echo "output = /dev/null"
    done >"$FL_TMP/seed.cfg"
    curl -s -K "$FL_TMP/seed.cfg" -w '%{http_code}\n' >"$FL_TMP/seed$run" 2>&1
    stop_faultline
done
assert_eq "seed: 300 responses" 300 "$(wc -l <"$FL_TMP/seed1")"
if cmp -s "$FL_TMP/seed1" "$FL_TMP/seed2"; then
    pass "seed 42: two runs inject into the same requests"
else
    fail "seed 42: two runs inject into the same requests" "identical status sequences" \
        "$(diff <(tr '\n' ' ' <"$FL_TMP/seed1") <(tr '\n' ' ' <"$FL_TMP/seed2") | head -c 300)"
fi
within_4sd "seed: 50% share" "$(grep -c 503 "$FL_TMP/seed1")" 300 50
fl_finish
