#!/usr/bin/env bash
# Hostile clients and misbehaving upstreams against the real daemon, as regression
# tests: upgrade handling (h2c upgrade to a server that ignores it, Upgrade headers
# answered 200, a 101 followed by a close), clients that never read (HTTP/1.1
# pipelining, HTTP/2 PING floods), a 63,000-byte request target, an HPACK bomb,
# upstreams that never answer or never accept (--upstream-timeout,
# --connect-timeout), request smuggling and bad framing, pipelined delays and
# upstreams that fail pipelined requests, slowloris and descriptor churn.
#
#   bash test/integration/hostile.sh [--build DIR]
#   FAULTLINE=/path/to/faultline bash test/integration/hostile.sh
#
# Crafted clients and backends are test/integration/hostile.py (Python 3, standard
# library). nginx (nginx-light) is the well-behaved backend. After each group of
# cases the daemon must still answer a normal request (200 within 1 s), its RSS
# must be under 64 MiB (ASan builds: grown by less than 64 MiB since start-up) and
# its descriptor count must be back to the one measured after start-up.
# Loopback only, ports 18700-18799.
# shellcheck source=test/integration/lib.sh
source "$(dirname "$0")/lib.sh"
fl_ports 18700
need curl jq node python3 nginx

HX="$FL_IT/hostile.py"
T0=$(date +%s)

# ASan/UBSan builds carry their runtime: the RSS bound becomes a bound on growth.
HX_ASAN=0
if nm -D "$FAULTLINE" 2>/dev/null | grep -q '__asan_init' || ldd "$FAULTLINE" 2>/dev/null | grep -q libasan; then
    HX_ASAN=1
fi
RSS_LIMIT_KB=$((64 * 1024))
echo "# $FAULTLINE (asan: $HX_ASAN)"

# ---- helpers -------------------------------------------------------------------

# hx SECS CMD ARGS...: runs a hostile.py command, killed after SECS.
hx() {
    local secs=$1
    shift
    timeout -k 2 "$secs" python3 "$HX" "$@"
}

# hx_bg OUTFILE SECS CMD ARGS...: the same in the background; sets HX_BG (tracked).
hx_bg() {
    local f=$1
    shift
    hx "$@" >"$f" 2>&1 &
    HX_BG=$!
    fl_track "$HX_BG"
}

hx_wait() { # PID: waits for a background client and forgets it
    wait "$1" 2>/dev/null
    fl_untrack "$1"
}

# kv KEY LINE: the value of KEY=VALUE in a hostile.py output line.
kv() { sed -nE "s/(^|.* )$1=([^ ]*).*/\2/p" <<<"$2"; }

# start_py VAR MODE: a hostile.py backend on a fresh port; VAR gets the port.
start_py() {
    local var=$1 mode=$2 port pid f i
    next_port port || return 1
    f="$FL_TMP/py-$mode-$port.out"
    python3 "$HX" backend "$mode" "$port" >"$f" 2>&1 &
    pid=$!
    fl_track "$pid"
    for ((i = 0; i < 100; i++)); do
        grep -q '^ready' "$f" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if ! grep -q '^ready' "$f"; then
        fail "python backend '$mode' starts" "ready" "$(head -c 400 "$f")"
        return 1
    fi
    printf -v "$var" %s "$port"
}

# nginx: 200 "ok\n" everywhere, the path echoed under /d/; keep-alive for long.
start_nginx() {
    local d="$FL_TMP/nginx"
    next_port NG || return 1
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$NG;
        location /d/ { return 200 "\$uri\n"; }
        location / { return 200 "ok\n"; }
    }
}
EOF
    nginx -e "$d/error.log" -c "$d/nginx.conf" -p "$d" >"$d/out" 2>&1 &
    NG_PID=$!
    fl_track "$NG_PID"
    wait_port 127.0.0.1 "$NG" 5 "$NG_PID"
}

d_fds() { ls "/proc/$DPID/fd" 2>/dev/null | wc -l; }
d_rss() { awk '/^VmRSS:/ {print $2}' "/proc/$DPID/status" 2>/dev/null || echo -1; }
d_active() { curl -s -m 2 --unix-socket "$ADM" http://x/v1/status | jq -r .active_connections 2>/dev/null; }

# wait_fds SECS: prints the fd count once it is back at BASE_FD, or the last one.
wait_fds() {
    local n i
    for ((i = 0; i <= $1 * 20; i++)); do
        n=$(d_fds)
        [ "$n" = "$BASE_FD" ] && break
        sleep 0.05
    done
    echo "$n"
}

# wait_active SECS: prints active_connections once 0, or the last value.
wait_active() {
    local n i
    for ((i = 0; i <= $1 * 10; i++)); do
        n=$(d_active)
        [ "$n" = 0 ] && break
        sleep 0.1
    done
    echo "${n:-none}"
}

# up NAME POLICY HEALTH_PORT [ARGS...]: starts a daemon whose listener on HEALTH_PORT
# goes to nginx; one request through it and one status call warm it up, then the
# baseline fd count and RSS are taken (once the count holds still).
up() {
    local name=$1 policy=$2 port=$3 a b i
    shift 3
    DPID=
    if ! start_faultline "$policy" "$port" "$@"; then
        fail "$name: faultline starts (run $*)" "listening" "$(head -n 1 "$FL_ERR")"
        return 1
    fi
    DPID=$FL_PID
    ADM="$FL_TMP/admin-$FL_N.sock"
    HP=$port
    curl -s -m 2 -o /dev/null "http://127.0.0.1:$HP/"
    d_active >/dev/null
    a=$(d_fds)
    for ((i = 0; i < 20; i++)); do
        sleep 0.1
        b=$(d_fds)
        [ "$a" = "$b" ] && break
        a=$b
    done
    BASE_FD=$b
    BASE_RSS=$(d_rss)
    echo "# $name: daemon $DPID up: $BASE_FD fds, RSS $BASE_RSS KiB"
}

# down: SIGTERM, again after 3 s (closes everything at once), SIGKILL after 2 more.
down() {
    local pid=${DPID:-} i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        [ $i = 30 ] && kill -TERM "$pid" 2>/dev/null
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "# daemon $pid did not exit after two SIGTERMs; killed"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    fl_untrack "$pid"
    DPID=
}

# rss_ok WHAT KB: the RSS bound (absolute, or growth since start-up under ASan).
rss_ok() {
    if [ "$HX_ASAN" = 1 ]; then
        assert_cmp "$1: RSS growth since start-up under 64 MiB (KiB, ASan build)" "$(($2 - BASE_RSS))" "<" "$RSS_LIMIT_KB"
    else
        assert_cmp "$1: RSS under 64 MiB (KiB)" "$2" "<" "$RSS_LIMIT_KB"
    fi
}

# The flooding clients stop early when the daemon's RSS passes this.
rss_cap() { echo $((HX_ASAN ? BASE_RSS + RSS_LIMIT_KB + 262144 : RSS_LIMIT_KB + 262144)); }

# group_check NAME: still serving, RSS bound, descriptors back at the baseline.
group_check() {
    local name=$1 code
    if [ -z "${DPID:-}" ] || ! kill -0 "$DPID" 2>/dev/null; then
        fail "$name: the daemon is still running" "running" "gone"
        return
    fi
    code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$HP/")
    assert_eq "$name: the daemon still serves a normal request (200 within 1 s)" 200 "$code"
    rss_ok "$name" "$(d_rss)"
    assert_eq "$name: descriptors back to the baseline (within 3 s)" "$BASE_FD" "$(wait_fds 3)"
}

# probe_while PID INTERVAL MAX: a normal request every INTERVAL s while PID runs.
# Sets PROBES, PROBE_BAD (not 200 within 1 s) and PROBE_MAX (slowest, s).
probe_while() {
    local pid=$1 iv=$2 max=$3 i r
    PROBES=0 PROBE_BAD=0 PROBE_MAX=0
    for ((i = 0; i < max; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        r=$(curl -s -o /dev/null -m 1 -w '%{http_code} %{time_total}' "http://127.0.0.1:$HP/")
        PROBES=$((PROBES + 1))
        [ "${r%% *}" = 200 ] || PROBE_BAD=$((PROBE_BAD + 1))
        PROBE_MAX=$(awk -v a="$PROBE_MAX" -v b="${r#* }" 'BEGIN {print (b > a) ? b : a}')
        sleep "$iv"
    done
}

# poll_log_count SECS WANT FIELD=VALUE...: log_count, polled until it reaches WANT.
poll_log_count() {
    local secs=$1 want=$2 n i
    shift 2
    for ((i = 0; i <= secs * 5; i++)); do
        n=$(log_count "$@")
        [ "$n" = "$want" ] && break
        sleep 0.2
    done
    echo "$n"
}

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# never VALUE: a time that never happened (-1 or empty) as one no bound accepts.
never() { if [ -z "$1" ] || [ "$1" = -1 ]; then echo 999999; else echo "$1"; fi; }

# backend_count PORT: the count of a `hostile.py backend count`.
backend_count() { hx 5 count "$1" | sed -nE 's/^requests=([0-9]+).*/\1/p'; }

start_nginx || { fail "nginx starts" "listening" "$(cat "$FL_TMP/nginx/error.log" "$FL_TMP/nginx/out" 2>/dev/null)"; fl_finish; }
start_py B101 up101 || fl_finish
start_py BCOUNT3 count || fl_finish
start_py BCOUNT6 count || fl_finish
start_py BSILENT silent || fl_finish
start_py BFULL backlog || fl_finish
start_py BFIN2 fin2 || fl_finish
start_py BRST2 rst2 || fl_finish

# ==== 1. upgrade handling ======================================================
echo "== 1. upgrade handling"
next_port P1
next_port P1U
pol=$(write_policy upgrade <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-upgrade}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P1", upstream: "127.0.0.1:$NG"}
    - {name: up101, listen: "127.0.0.1:$P1U", upstream: "127.0.0.1:$B101"}
  rules:
    - {name: x503, match: {path: {prefix: /x}}, fault: {abort: {status: 503}}}
EOF
)

# 1a. curl's h2c upgrade (Upgrade: h2c, HTTP2-Settings) to nginx, which ignores it.
if up "1a" "$pol" "$P1"; then
    out=$(curl -s -m 3 --http2 -w 'code=%{http_code}\n' "http://127.0.0.1:$P1/ok" "http://127.0.0.1:$P1/z/")
    assert_eq "1a: curl --http2 /ok /z/ via an h2c upgrade nginx ignores: both 200" "2" "$(grep -c '^code=200$' <<<"$out")"
    assert_eq "1a: active_connections 0 within 2 s" 0 "$(wait_active 2)"
    assert_eq "1a: descriptors back to the baseline within 2 s" "$BASE_FD" "$(wait_fds 2)"
    down
fi

# 1b. 200 such clients, 10 at a time.
if up "1b" "$pol" "$P1"; then
    seq 200 | timeout -k 2 25 xargs -P 10 -I{} curl -s -m 2 --http2 -o /dev/null -o /dev/null \
        -w '%{http_code}\n' "http://127.0.0.1:$P1/ok" "http://127.0.0.1:$P1/z/" >"$FL_TMP/1b.out" 2>/dev/null
    assert_eq "1b: 200 h2c-upgrade curl clients, 10 at a time: 400 answers 200" 400 "$(grep -c '^200$' "$FL_TMP/1b.out")"
    assert_eq "1b: descriptors back to the baseline (within 3 s)" "$BASE_FD" "$(wait_fds 3)"
    assert_eq "1b: active_connections 0" 0 "$(wait_active 1)"
    down
fi

# 1c. Upgrade: foo answered 200 by nginx, then 300 requests on the same connection.
# 1d. A 101 from an upstream that closes right after it.
if up "1c" "$pol" "$P1"; then
    r=$(hx 30 upgrade-keepalive "$P1" 300)
    assert_eq "1c: GET / with Connection: upgrade, Upgrade: foo answered 200 by nginx" 200 "$(kv first "$r")"
    assert_eq "1c: then 300 requests /x/N on that connection: all answered 503 by the abort rule" \
        "answered=300 n503=300" "answered=$(kv answered "$r") n503=$(kv n503 "$r")"
    assert_eq "1c: 300 fault-log lines for the rule" 300 "$(poll_log_count 2 300 rule=x503 fault=abort)"

    r=$(hx 10 upgrade-101 "$P1U")
    assert_eq "1d: upstream answers 101 and closes at once: the client sees the 101" 101 "$(kv status "$r")"
    assert_eq "1d: then EOF" 1 "$(kv eof "$r")"
    assert_cmp "1d: EOF within 2 s (ms)" "$(never "$(kv eof_ms "$r")")" "<" 2000
    assert_eq "1d: active_connections 0" 0 "$(wait_active 3)"
    assert_eq "1d: descriptors back to the baseline (within 3 s)" "$BASE_FD" "$(wait_fds 3)"
    group_check "1 (upgrade)"
    down
fi

# ==== 2. clients that never read ================================================
echo "== 2. clients that never read"
next_port P2
kbody=$(head -c 1024 /dev/zero | tr '\0' k)
pol=$(write_policy nonreader <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-nonreader}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P2", upstream: "127.0.0.1:$NG"}
  rules:
    - {name: x1k, match: {path: {prefix: /x}}, fault: {abort: {status: 503, body: "$kbody"}}}
EOF
)

# 2a. HTTP/1.1: one connection pipelines GET /x/N (1 KB injected answers) for 10 s.
if up "2a" "$pol" "$P2"; then
    hx_bg "$FL_TMP/2a.out" 20 h1-nonreader "$P2" 10 "$DPID" "$(rss_cap)"
    probe_while "$HX_BG" 1 15
    hx_wait "$HX_BG"
    r=$(cat "$FL_TMP/2a.out")
    echo "# 2a: $r"
    assert_match "2a: the pipelining client ran (sent requests)" '^[1-9]' "$(kv requests_sent "$r")"
    assert_eq "2a: the client was not stopped by the safety valve (RSS far over the bound)" 0 "$(kv early_stop "$r")"
    rss_ok "2a: pipelining for 10 s without reading, sampled every second: the highest" "$(kv rss_max_kb "$r")"
    # (a client stopped by the safety valve ran too briefly to count probes)
    [ "$(kv early_stop "$r")" = 0 ] && assert_cmp "2a: the daemon serves others meanwhile: probes" "$PROBES" ">=" 5
    assert_eq "2a: the daemon serves others meanwhile: probes not answered 200 within 1 s" 0 "$PROBE_BAD"
    group_check "2a (HTTP/1.1 non-reader)"
    down
fi

# 2b. HTTP/2: 20 connections flooding PING (50 every 10 ms) for 10 s, never reading.
if up "2b" "$pol" "$P2"; then
    hx_bg "$FL_TMP/2b.out" 20 h2-nonreader "$P2" 20 10 "$DPID" "$(rss_cap)"
    probe_while "$HX_BG" 1 15
    hx_wait "$HX_BG"
    r=$(cat "$FL_TMP/2b.out")
    echo "# 2b: $r"
    assert_eq "2b: the client was not stopped by the safety valve" 0 "$(kv early_stop "$r")"
    rss_ok "2b: 20 h2c connections flooding PING for 10 s, sampled every second: the highest" "$(kv rss_max_kb "$r")"
    assert_cmp "2b: the daemon serves others meanwhile: probes" "$PROBES" ">=" 5
    assert_eq "2b: the daemon serves others meanwhile: probes not answered 200 within 1 s" 0 "$PROBE_BAD"
    group_check "2b (HTTP/2 non-reader)"
    down
fi

# ==== 3. request targets near and over the head limit ==========================
echo "== 3. request targets near and over the head limit"
next_port P3
next_port P3L
pol=$(write_policy longtarget <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-longtarget}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P3", upstream: "127.0.0.1:$NG"}
    - {name: lt, listen: "127.0.0.1:$P3L", upstream: "127.0.0.1:$BCOUNT3"}
  rules:
    - {name: x503, match: {path: {prefix: /x}}, fault: {abort: {status: 503}}}
EOF
)
if up "3" "$pol" "$P3" --header-timeout 2s; then
    # The upstream here answers 200 to anything, however long its target.
    # Under the head limit (64 KiB): parsed and matched like any request.
    r=$(hx 15 long-target "$P3L" 63000 20 /x)
    echo "# 3a: $r"
    assert_match "3a: a 63,000-byte target under /x is matched: 503" '503' "$(kv status "$r")"
    assert_eq "3a: the 20 pipelined requests behind it are all faulted" "n503=20 n200=0" "n503=$(kv n503 "$r") n200=$(kv n200 "$r")"
    # Over the head limit: 431, and nothing after it is relayed.
    r=$(hx 15 long-target "$P3L" 66000 20)
    echo "# 3b: $r"
    assert_eq "3b: 66,000-byte target + 20 pipelined requests: the answer is 431" 431 "$(kv status "$r")"
    assert_eq "3b: nothing follows the 431 (bytes after it)" 0 "$(kv extra_bytes "$r")"
    assert_eq "3b: no 503s and no backend 200s after it" "n503=0 n200=0" "n503=$(kv n503 "$r") n200=$(kv n200 "$r")"
    assert_eq "3b: the connection is closed after it" 1 "$(kv eof "$r")"

    r=$(hx 15 long-target-partial "$P3L" 63000 6)
    echo "# 3c: $r"
    assert_match "3c: a 63,000-byte target, line never finished, --header-timeout 2s: 408" '^HTTP/1.1_408' "$(kv line "$r")"
    assert_cmp "3c: 408 within 4 s (ms)" "$(never "$(kv ms "$r")")" "<" 4000
    assert_cmp "3c: not before the header timeout (ms)" "$(kv ms "$r")" ">=" 1900
    group_check "3 (long target)"
    down
fi

# ==== 4. HPACK bomb ================================================================
echo "== 4. HPACK bomb"
next_port P4
pol=$(write_policy hpack <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-hpack}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P4", upstream: "127.0.0.1:$NG"}
EOF
)
if up "4" "$pol" "$P4" --workers 1; then
    hx_bg "$FL_TMP/4.out" 20 hpack-bomb "$P4" 8 600000
    bomb=$HX_BG
    sleep 0.3
    : >"$FL_TMP/4.lat"
    for ((i = 0; i < 200; i++)); do
        kill -0 "$bomb" 2>/dev/null || break
        curl -s -o /dev/null -m 3 -w '%{http_code} %{time_total}\n' "http://127.0.0.1:$P4/" >>"$FL_TMP/4.lat"
        sleep 0.05
    done
    hx_wait "$bomb"
    r=$(cat "$FL_TMP/4.out")
    echo "# 4: $r"
    n=$(wc -l <"$FL_TMP/4.lat")
    assert_cmp "4: the bomb ran: header blocks sent" "$(kv blocks "$r")" ">=" 20
    assert_cmp "4: normal requests sent every 50 ms during the bomb" "$n" ">=" 10
    assert_eq "4: every normal request completed with 200" "$n" "$(grep -c '^200 ' "$FL_TMP/4.lat")"
    assert_cmp "4: the slowest normal request (s)" "$(awk '{ if ($2 > m) m = $2 } END { print m + 0 }' "$FL_TMP/4.lat")" "<" 0.3
    assert_cmp "4: the bomb client got RST_STREAM or GOAWAY frames" "$(kv frames_back "$r")" ">=" 1
    group_check "4 (HPACK bomb)"
    down
fi

# ==== 5. upstreams that never answer or never accept =============================
echo "== 5. upstream timeouts"
next_port P5
next_port P5S
next_port P5F
pol=$(write_policy upstreams <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-upstreams}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P5", upstream: "127.0.0.1:$NG"}
    - {name: silent, listen: "127.0.0.1:$P5S", upstream: "127.0.0.1:$BSILENT"}
    - {name: full, listen: "127.0.0.1:$P5F", upstream: "127.0.0.1:$BFULL"}
EOF
)
printf '\0\0\0\0\0' >"$FL_TMP/empty.grpc"
if up "5" "$pol" "$P5" --upstream-timeout 1s --connect-timeout 500ms; then
    r=$(curl -s -o /dev/null -m 8 -w '%{http_code} %{time_total}' "http://127.0.0.1:$P5S/silent-h1")
    assert_eq "5a: HTTP/1.1 to an upstream that never answers, --upstream-timeout 1s: 504" 504 "${r%% *}"
    assert_cmp "5a: in under 3 s (s)" "${r#* }" "<" 3
    assert_match "5a: stderr says the upstream did not answer" 'did not answer' "$(cat "$FL_ERR")"
    assert_eq "5a: no fault-log line for it" 0 "$(grep -c 'silent-h1' "$FL_LOG")"

    r=$(curl -s -o /dev/null -m 8 --http2-prior-knowledge -w '%{http_code} %{time_total}' "http://127.0.0.1:$P5S/silent-h2")
    assert_eq "5b: h2 (prior knowledge) to it: 504" 504 "${r%% *}"
    assert_cmp "5b: in under 3 s (s)" "${r#* }" "<" 3

    t=$(date +%s%N)
    out=$(curl -s -v --raw -m 8 --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
        --data-binary @"$FL_TMP/empty.grpc" -o /dev/null "http://127.0.0.1:$P5S/hostile.Svc/Call" 2>&1)
    assert_match "5c: gRPC call to it: grpc-status 14 (UNAVAILABLE)" 'grpc-status: 14' "$out"
    assert_cmp "5c: in under 3 s (ms)" "$(ms_since "$t")" "<" 3000

    prefilled=$(sed -nE 's/.*prefilled=([0-9]+).*/\1/p' "$FL_TMP"/py-backlog-*.out)
    r=$(curl -s -o /dev/null -m 8 -w '%{http_code} %{time_total}' "http://127.0.0.1:$P5F/full")
    assert_eq "5d: upstream with a full listen backlog ($prefilled queued), --connect-timeout 500ms: 502" 502 "${r%% *}"
    assert_cmp "5d: in under 2 s (s)" "${r#* }" "<" 2
    group_check "5 (upstream timeouts)"
    down
else
    for c in "5a: 504 from a silent upstream" "5b: h2 504" "5c: grpc-status 14" "5d: 502 on connect timeout"; do
        fail "$c (the daemon did not start)"
    done
fi

# ==== 6. request smuggling and bad framing ======================================
echo "== 6. request smuggling and bad framing"
next_port P6
next_port P6C
pol=$(write_policy smuggle <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-smuggle}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P6", upstream: "127.0.0.1:$NG"}
    - {name: cnt, listen: "127.0.0.1:$P6C", upstream: "127.0.0.1:$BCOUNT6"}
EOF
)
if up "6" "$pol" "$P6"; then
    for c in "te-xchunked 501 Transfer-Encoding: xchunked, no Content-Length" \
        "chunk-huge 400 chunk size ffffffffffffffffff" \
        "chunk-negative 400 chunk size -1" \
        "cl-and-te 400 Content-Length: 5 and Transfer-Encoding: chunked" \
        "two-cl 400 two different Content-Length values" \
        "space-colon 400 space between header name and colon" \
        "obs-fold 400 a header folded onto a second line (obs-fold)"; do
        read -r name want what <<<"$c"
        before=$(backend_count "$BCOUNT6")
        r=$(hx 10 smuggle "$P6C" "$name")
        assert_eq "6: $what: $want" "$want" "$(kv status "$r")"
        assert_eq "6: $what: requests the backend saw" 0 "$(($(backend_count "$BCOUNT6") - before))"
    done
    # The counting backend does count: a normal POST reaches it.
    before=$(backend_count "$BCOUNT6")
    r=$(hx 10 smuggle "$P6C" normal-post)
    assert_eq "6: a normal POST after them: 200 from the backend" 200 "$(kv status "$r")"
    assert_eq "6: a normal POST: requests the backend saw" 1 "$(($(backend_count "$BCOUNT6") - before))"
    group_check "6 (smuggling)"
    down
fi

# ==== 7. pipelined delays, and upstreams that fail pipelined requests ===========
echo "== 7. pipelined delays and failed pipelines"
next_port P7
next_port P7F
next_port P7R
next_port P7D
next_port DEAD # nothing listens here
pol=$(write_policy pipeline <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-pipeline}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P7", upstream: "127.0.0.1:$NG"}
    - {name: fin2, listen: "127.0.0.1:$P7F", upstream: "127.0.0.1:$BFIN2"}
    - {name: rst2, listen: "127.0.0.1:$P7R", upstream: "127.0.0.1:$BRST2"}
    - {name: dead, listen: "127.0.0.1:$P7D", upstream: "127.0.0.1:$DEAD"}
  rules:
    - {name: slow, on: [ng], match: {path: {prefix: /d/}}, fault: {delay: {fixed: 50ms}}}
    - {name: slowdead, on: [dead], fault: {delay: {fixed: 100ms}}}
EOF
)
if up "7" "$pol" "$P7"; then
    # Each delay counts from when its request was read: 200 pipelined 50 ms
    # delays take about 50 ms, not 200 x 50 ms.
    r=$(hx 20 pipeline "$P7" 200 /d/ 15)
    echo "# 7a: $r"
    assert_eq "7a: 200 pipelined requests, each delayed 50 ms: all answered, in order" \
        "got=200 inorder=200" "got=$(kv got "$r") inorder=$(kv inorder "$r")"
    assert_cmp "7a: in under 2 s, not one delay after another (10 s) (ms)" "$(never "$(kv ms "$r")")" "<" 2000
    assert_cmp "7a: never early (ms)" "$(kv ms "$r")" ">=" 50
    assert_eq "7a: 200 delay lines, each with the status the client got (200)" 200 \
        "$(poll_log_count 2 200 rule=slow fault=delay status=200)"

    # An upstream that fails with two requests in flight: the 502 goes out at
    # once, not after --upstream-timeout (60 s).
    for c in "fin2 $P7F closes (FIN)" "rst2 $P7R resets (RST)"; do
        read -r name port what <<<"$c"
        r=$(hx 10 pipeline "$port" 2 /p/ 8)
        echo "# 7b $name: $r"
        assert_eq "7b: two pipelined requests, the upstream $what without answering: one 502, then the close" \
            "got=1 codes=502" "got=$(kv got "$r") codes=$(kv codes "$r")"
        assert_cmp "7b: $name: within 2 s (ms)" "$(never "$(kv ms "$r")")" "<" 2000
    done

    # A delayed request whose upstream is unreachable: the delay's line says
    # the client got 502.
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$P7D/gone")
    assert_eq "7c: a delayed request to an unreachable upstream: 502" 502 "$code"
    assert_eq "7c: its delay line says status 502" 1 "$(poll_log_count 2 1 rule=slowdead fault=delay status=502)"

    # A 20,000-byte path: the fault line stays one valid JSON object, cut and marked.
    long=$(head -c 20000 /dev/zero | tr '\0' a)
    curl -s -o /dev/null -m 5 "http://127.0.0.1:$P7/d/$long"
    sleep 0.3
    line=$(grep -m1 '"truncated":true' "$FL_LOG")
    assert_eq "7d: a 20,000-byte path: its fault line parses as JSON" slow "$(jq -r .rule <<<"$line" 2>/dev/null)"
    assert_cmp "7d: the line is under 8 KiB (bytes)" "${#line}" "<" 8192
    assert_eq "7d: every fault line parses as JSON" 0 "$(jq -c . "$FL_LOG" >/dev/null 2>&1; echo $?)"
    group_check "7 (pipelines)"
    down
fi

# ==== 8. slowloris ==================================================================
echo "== 8. slowloris"
next_port P8
pol=$(write_policy slowloris <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-slowloris}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P8", upstream: "127.0.0.1:$NG"}
EOF
)
if up "8" "$pol" "$P8" --header-timeout 3s; then
    hx_bg "$FL_TMP/8.out" 20 slowloris "$P8" 100 8
    probe_while "$HX_BG" 0.5 20
    hx_wait "$HX_BG"
    r=$(cat "$FL_TMP/8.out")
    echo "# 8: $r"
    assert_eq "8: 100 heads trickling a byte a second, --header-timeout 3s: all answered 408" 100 "$(kv n408 "$r")"
    assert_eq "8: all closed" 100 "$(kv closed "$r")"
    assert_cmp "8: the last closed within 6 s (ms)" "$(never "$(kv max_close_ms "$r")")" "<" 6000
    assert_cmp "8: normal requests meanwhile: probes" "$PROBES" ">=" 5
    assert_eq "8: normal requests meanwhile: probes not answered 200 within 1 s" 0 "$PROBE_BAD"
    group_check "8 (slowloris)"
    down
fi

# ==== 9. descriptor churn ===========================================================
echo "== 9. descriptor churn"
next_port P9
pol=$(write_policy churn <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: hostile-churn}
spec:
  listeners:
    - {name: ng, listen: "127.0.0.1:$P9", upstream: "127.0.0.1:$NG"}
EOF
)
if up "9" "$pol" "$P9"; then
    r=$(hx 70 churn "$P9" 2000 50)
    echo "# 9: $r"
    assert_eq "9: 2,000 connections closed at once / after half a request line / with RST, 50 at a time" \
        "connections=2000 errors=0" "connections=$(kv connections "$r") errors=$(kv errors "$r")"
    group_check "9 (descriptor churn)"
    assert_eq "9: active_connections 0" 0 "$(wait_active 2)"
    down
fi

echo "# hostile.sh: $(($(date +%s) - T0)) s"
fl_finish
