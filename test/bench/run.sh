#!/usr/bin/env bash
# The performance targets of issue 6, measured in one run on this machine:
# faultline (one worker) against HAProxy (one thread) and nginx (one worker),
# all in front of the same nginx backend, driven by wrk and h2load. Prints one
# table: faultline's figure, the peers', the ratio, the target and whether it
# is met. Not part of CI; takes about two and a half minutes.
#
#   bash test/bench/run.sh [--duration SECONDS] [--rounds N] [--build DIR]
#
# Build faultline for it with:
#   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel -j
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dur=4 rounds=3 build="$root/build-rel"
[ -x "$build/faultline" ] || build="$root/build"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) dur=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "usage: $0 [--duration SECONDS] [--rounds N] [--build DIR]" >&2; exit 2 ;;
  esac
done
for t in wrk h2load haproxy nginx node; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing: apt-get install -y wrk nghttp2-client haproxy nginx-light nodejs" >&2; exit 1; }
done
[ -x "$build/faultline" ] && [ -x "$build/fl_loadgen" ] || { echo "bench: no faultline or fl_loadgen binary in $build; build it first (see the top of this script)" >&2; exit 1; }
# Each proxied connection holds two descriptors (client and upstream), so the
# idle-connection figure needs about 2 x N + a few; take what the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
idle_n=$(( ($(ulimit -n) - 100) / 2 ))
[ "$idle_n" -gt 10000 ] && idle_n=10000

B1=18911 B2=18912 HA=18913 NG=18914 HAA=18915 HA2=18916 HAM=18917
FP=18921 FA=18922 FR=18923 FD=18924 FW=18925 FH=18926 FI=18927 FM=18928 FQ=18929 FB=18930 FT=18931
# shellcheck source=test/bench/lib.sh
source "$here/lib.sh"
bench_init bench-all

# ---- backend and peers ----
mkdir -p "$tmp/be/files" "$tmp/ng"
head -c 4194304 /dev/urandom > "$tmp/be/files/4m.bin"
chmod 755 "$tmp" "$tmp/be" "$tmp/be/files"; chmod 644 "$tmp/be/files/4m.bin" # nginx's workers read it
cat > "$tmp/be/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/be/pid; error_log stderr error;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  http2_max_concurrent_streams 256;
  server { listen 127.0.0.1:$B1; location / { return 200 "hello from backend\n"; }
    location /files/ { alias $tmp/be/files/; } }
  server { listen 127.0.0.1:$B2 http2; location / { return 200 "hello from backend\n"; } } }
EOC
nginx -p "$tmp/be" -c "$tmp/be/nginx.conf" 2>"$tmp/be.err" & pids+=($!)

cat > "$tmp/ng/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/ng/pid; error_log stderr error;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 10000000;
  upstream be { server 127.0.0.1:$B1; keepalive 64; }
  server { listen 127.0.0.1:$NG;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOC
nginx -p "$tmp/ng" -c "$tmp/ng/nginx.conf" 2>"$tmp/ng.err" & pids+=($!); pid_nginx=$!

cat > "$tmp/haproxy.cfg" <<EOC
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend pass
  bind 127.0.0.1:$HA
  default_backend be
frontend abort
  bind 127.0.0.1:$HAA
  http-request return status 503 if { rand(100) lt 10 }
  default_backend be
frontend modify
  bind 127.0.0.1:$HAM
  http-response set-status 500 if { rand(100) lt 10 }
  default_backend be
frontend h2
  bind 127.0.0.1:$HA2 proto h2
  default_backend be2
backend be
  http-reuse always
  server s1 127.0.0.1:$B1
backend be2
  http-reuse always
  server s1 127.0.0.1:$B2 proto h2
EOC
haproxy -f "$tmp/haproxy.cfg" -db 2>"$tmp/ha.err" & pids+=($!); pid_haproxy=$!

# ---- faultline policies ----
bench_policy pass $FP $B1 "$BENCH_NEVER"
bench_policy abort $FA $B1 "$BENCH_ABORT10"
bench_policy delay $FD $B1 '    - {name: delay100, fault: {delay: {fixed: 100ms}}}'
bench_policy workers $FW $B1 "$BENCH_NEVER"
bench_policy h2 $FH $B2 "$BENCH_NEVER"
bench_policy idle $FI $B1 "$BENCH_NEVER"
bench_policy modify $FM $B1 '    - {name: modify10, fault: {modify: {status: 500, percent: 10}}}'
# Every request decided by a rule with response faults whose dice never hit.
bench_policy resp0 $FQ $B1 '    - {name: resp0, fault: {modify: {status: 500, percent: 0}, response_delay: {fixed: 1s, percent: 0}, truncate: {after: 1, percent: 0}}}'
bench_policy bandwidth $FB $B1 '    - {name: bw, fault: {bandwidth: {rate: 1MiB/s}}}'
bench_policy toxic $FT $B1 '    - {name: tox, fault: {connection: {bandwidth: {rate: 1MiB/s}}}}'
{
  for i in $(seq 1 1000); do
    echo "    - {name: r$i, match: {method: [POST], path: {prefix: /api/v$i/}, headers: [{name: x-tenant, exact: t$i}]}, fault: {abort: {status: 503}}}"
  done
} > "$tmp/rules.txt"
bench_policy rules $FR $B1 "$(cat "$tmp/rules.txt")"

start_fl() { # name port [args]
  local name=$1 port=$2; shift 2
  "$build/faultline" run -f "$tmp/$name.yaml" --admin "$tmp/$name.sock" --fault-log /dev/null "$@" \
    2>"$tmp/$name.err" & pids+=($!)
  eval "pid_$name=$!"
  wait_port "$port"
}
for p in $B1 $B2 $HA $NG $HAA $HA2 $HAM; do wait_port "$p"; done
start_fl pass $FP
start_fl abort $FA
start_fl rules $FR
start_fl delay $FD
start_fl workers $FW --workers 2
start_fl h2 $FH
start_fl idle $FI
start_fl modify $FM
start_fl resp0 $FQ
start_fl bandwidth $FB
start_fl toxic $FT
ng_pids="$pid_nginx $(pgrep -P "$pid_nginx" | tr '\n' ' ')"

# ---- measurements ----
# CPU time (ns) the processes' threads have used so far: user plus system.
cpu_ns() {
  local t=0 p f a
  for p in "$@"; do
    for f in /proc/"$p"/task/*/schedstat; do read -r a _ < "$f" && t=$((t + a)); done
  done
  echo "$t"
}
# The whole machine's idle share (%) since "$1" (a /proc/stat cpu line's
# idle and total jiffies, as printed by cpu_idle_total).
cpu_idle_total() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t}' /proc/stat; }
wrk_run() { # port conns [proxy pids] -> "rps p50ms p99ms cpu_us_per_request machine_idle_%"
  local port=$1 conns=$2 c0 i0 t0 i1 t1; shift 2
  c0=$(cpu_ns "$@"); read -r i0 t0 <<<"$(cpu_idle_total)"
  wrk -t1 -c"$conns" -d"${dur}s" --latency "http://127.0.0.1:$port/" > "$tmp/wrk.out" 2>&1
  read -r i1 t1 <<<"$(cpu_idle_total)"
  awk -v cpu=$(( $(cpu_ns "$@") - c0 )) -v idle=$(( (i1 - i0) * 100 / (t1 - t0 + 1) )) '
       function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
       /Requests\/sec/ {rps=$2} / requests in / {n=$1} $1=="50%" {p50=ms($2)} $1=="99%" {p99=ms($2)}
       END {printf "%.0f %.3f %.3f %.2f %d\n", rps, p50, p99, (n > 0 ? cpu / n / 1000 : 0), idle}' "$tmp/wrk.out"
}
h2_run() { # port [proxy pids] -> "rps cpu_us_per_request" (h2load's 1 s warm-up counted at the same rate)
  local port=$1 c0; shift
  c0=$(cpu_ns "$@")
  h2load -t1 -c50 -m10 -D"$dur" --warm-up-time=1 -H 'content-type: application/grpc' \
    -d "$tmp/grpc.body" "http://127.0.0.1:$port/bench.Echo/Unary" > "$tmp/h2.out" 2>&1
  awk -v cpu=$(( $(cpu_ns "$@") - c0 )) -v secs=$((dur + 1)) \
    '/^finished in/ {rps=$4} END {printf "%.0f %.2f\n", rps, (rps > 0 ? cpu / (rps * secs) / 1000 : 0)}' "$tmp/h2.out"
}
printf '\x00\x00\x00\x00\x05hello' > "$tmp/grpc.body"

rows=()
row() { rows+=("$(printf '%-46s|%22s|%-46s|%-38s|%s' "$@")"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "0" }'; }
meets() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? (v >= t) : (v <= t); print ok ? "met" : "MISSED" }'; }

echo "measuring ($dur s per figure) on $(nproc) cores, $(uname -r)..." >&2
# Targets 1 and 2 compare close figures, so each proxy is measured $rounds
# times, the proxies taking turns (no one always first after a quiet spell),
# and each column's median is reported.
median_cols() { # FILE -> the median of each of its columns
  local c n out=()
  n=$(wc -l < "$1")
  for c in 1 2 3 4 5; do out+=("$(cut -d' ' -f"$c" "$1" | sort -g | sed -n "$(((n + 1) / 2))p")"); done
  echo "${out[*]}"
}
wrk_rounds() { # "LABEL PORT CONNS PIDS..." ... -> $tmp/med.LABEL
  local r spec label
  for ((r = 0; r < rounds; r++)); do
    for spec in "$@"; do
      label=${spec%% *}
      # shellcheck disable=SC2086
      wrk_run ${spec#* } >> "$tmp/rounds.$label"
    done
  done
  for spec in "$@"; do label=${spec%% *}; median_cols "$tmp/rounds.$label" > "$tmp/med.$label"; done
}
wrk_rounds "f $FP 50 $pid_pass" "h $HA 50 $pid_haproxy" "n $NG 50 $ng_pids"
read -r f_rps f_p50 f_p99 f_cpu f_idle < "$tmp/med.f"
read -r h_rps h_p50 h_p99 h_cpu h_idle < "$tmp/med.h"
read -r n_rps n_p50 n_p99 n_cpu n_idle < "$tmp/med.n"
r_ha=$(ratio "$f_rps" "$h_rps"); r_ng=$(ratio "$f_rps" "$n_rps")
row "1. keep-alive passthrough, 50 conns (median)" "$f_rps req/s" "haproxy $h_rps, nginx $n_rps" "x$r_ha / x$r_ng >= 1.2" \
  "$( [ "$(meets "$r_ha" 1.2 '>=')" = met ] && [ "$(meets "$r_ng" 1.2 '>=')" = met ] && echo met || echo MISSED)"
row "1b. p99 latency, same run" "$f_p99 ms" "haproxy $h_p99 ms" "<= haproxy" "$(meets "$f_p99" "$h_p99" '<=')"
row "1c. proxy CPU per request, same runs" "$f_cpu us" "haproxy $h_cpu us, nginx $n_cpu us" "(reported: the cost)" "x$(ratio "$h_cpu" "$f_cpu") less than haproxy"
row "1d. machine idle, same runs" "$f_idle %" "haproxy $h_idle %, nginx $n_idle %" "(reported)" "reported"

wrk_rounds "fa $FA 50 $pid_abort" "ha $HAA 50 $pid_haproxy"
read -r fa_rps _ _ fa_cpu _ < "$tmp/med.fa"
read -r ha_rps _ _ ha_cpu _ < "$tmp/med.ha"
row "2. 10% abort (median)" "$fa_rps req/s" "haproxy $ha_rps" "x$(ratio "$fa_rps" "$ha_rps") >= 1.0" "$(meets "$(ratio "$fa_rps" "$ha_rps")" 1.0 '>=')"
row "2c. proxy CPU per request, same runs" "$fa_cpu us" "haproxy $ha_cpu us" "(reported: the cost)" "x$(ratio "$ha_cpu" "$fa_cpu") less than haproxy"

read -r fr_rps _ _ _ _ <<<"$(wrk_run $FR 50)"
row "3. 1,000 non-matching rules" "$fr_rps req/s" "no rules: $f_rps" "x$(ratio "$fr_rps" "$f_rps") >= 0.9" "$(meets "$(ratio "$fr_rps" "$f_rps")" 0.9 '>=')"

# Response side (issue 15): a rule whose response faults never fire costs next
# to nothing; modify at 10% against HAProxy's http-response set-status at 10%.
wrk_rounds "fq $FQ 50 $pid_resp0" "fp $FP 50 $pid_pass"
read -r fq_rps _ _ fq_cpu _ < "$tmp/med.fq"
read -r fp_rps _ _ fp_cpu _ < "$tmp/med.fp"
row "9. response-side rule that never fires (median)" "$fq_rps req/s" "no such rule: $fp_rps" "x$(ratio "$fq_rps" "$fp_rps") >= 0.95" "$(meets "$(ratio "$fq_rps" "$fp_rps")" 0.95 '>=')"
row "9c. proxy CPU per request, same runs" "$fq_cpu us" "no such rule: $fp_cpu us" "(reported: the cost)" "reported"
wrk_rounds "fm $FM 50 $pid_modify" "hm $HAM 50 $pid_haproxy"
read -r fm_rps _ _ fm_cpu _ < "$tmp/med.fm"
read -r hm_rps _ _ hm_cpu _ < "$tmp/med.hm"
row "10. modify status 500 at 10% (median)" "$fm_rps req/s" "haproxy set-status $hm_rps" "x$(ratio "$fm_rps" "$hm_rps") >= 1.0" "$(meets "$(ratio "$fm_rps" "$hm_rps")" 1.0 '>=')"
row "10c. proxy CPU per request, same runs" "$fm_cpu us" "haproxy $hm_cpu us" "(reported: the cost)" "x$(ratio "$hm_cpu" "$fm_cpu") less than haproxy"
# Bandwidth: a 4 MiB body at 1 MiB/s should take 4 s (1 MiB less one 10 ms
# slice is in flight at the start); the error against that, and the RSS.
bw_run() { # port pid -> "seconds error% rss_growth_kib"
  local rss0 rss1 t
  rss0=$(awk '/VmRSS/ {print $2}' "/proc/$2/status")
  t=$(curl -s -o "$tmp/bw.out" -w '%{time_total}' "http://127.0.0.1:$1/files/4m.bin")
  [ "$(stat -c %s "$tmp/bw.out")" = 4194304 ] || { echo "0 100 0"; return; }
  rss1=$(awk '/VmHWM/ {print $2}' "/proc/$2/status")
  awk -v t="$t" -v a="$rss0" -v b="$rss1" 'BEGIN { e = (t - 4) / 4 * 100; if (e < 0) e = -e; printf "%.3f %.1f %d", t, e, b - a }'
}
read -r bw_t bw_e bw_rss <<<"$(bw_run $FB "$pid_bandwidth")"
read -r tx_t tx_e tx_rss <<<"$(bw_run $FT "$pid_toxic")"
row "11. bandwidth 1MiB/s, 4 MiB response" "$bw_t s (err $bw_e %)" "toxic 1MiB/s: $tx_t s (err $tx_e %)" "within 5% of 4 s" "$( [ "$(meets "$bw_e" 5 '<=')" = met ] && [ "$(meets "$tx_e" 5 '<=')" = met ] && echo met || echo MISSED)"
row "11b. peak RSS growth, same runs" "$bw_rss KiB" "toxic: $tx_rss KiB" "bounded (< 8 MiB)" "$( [ "$bw_rss" -lt 8192 ] && [ "$tx_rss" -lt 8192 ] && echo met || echo MISSED)"

# 10,000 idle keep-alive connections: each sends one request, then stays open.
cat > "$tmp/idle.js" <<'EOJ'
const net = require('net');
const [port, n] = [+process.argv[2], +process.argv[3]];
let done = 0, failed = 0; const socks = [];
function one() {
  const s = net.connect(port, '127.0.0.1');
  socks.push(s);
  s.on('error', () => { failed++; check(); });
  s.once('data', () => { done++; check(); });
  s.write('GET / HTTP/1.1\r\nHost: bench\r\n\r\n');
}
function check() { if (done + failed === n) console.log(`${done} ${failed}`); }
let i = 0; (function batch() { for (let k = 0; k < 500 && i < n; k++, i++) one(); if (i < n) setTimeout(batch, 20); })();
setInterval(() => {}, 1000);
EOJ
node "$tmp/idle.js" $FI "$idle_n" > "$tmp/idle.out" 2>&1 & idle_pid=$!; pids+=($idle_pid)
for _ in $(seq 1 300); do [ -s "$tmp/idle.out" ] && break; sleep 0.1; done
sleep 1
read -r idle_ok idle_failed < "$tmp/idle.out" || true
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid_idle/status")
kill "$idle_pid" 2>/dev/null || true
row "4. $idle_n idle keep-alive conns" "$((rss_kb / 1024)) MiB RSS" "$idle_ok answered, ${idle_failed:-?} failed" "< 64 MiB" "$(meets "$rss_kb" 65536 '<=')"

# Open loop (test/bench/loadgen.c): 5,000 requests a second are due whatever
# the answers do, latency counted from when each was due. wrk's closed loop
# would let one slow answer hold back the requests behind it.
"$build/fl_loadgen" -r 5000 -d "$((dur + 1))" -c 1000 "127.0.0.1:$FD" > "$tmp/lg.out" 2>&1 || true
lg() { awk -v k="$1" '$1 == "latency_ms" { for (i = 2; i < NF; i += 2) if ($i == k) print $(i + 1) }' "$tmp/lg.out"; }
fd_sent=$(awk '/^rate/ {for (i = 1; i < NF; i++) if ($i == "answered") print $(i + 1)}' "$tmp/lg.out")
row "5. 100 ms delay, 5,000 req/s open loop" "p99 $(lg p99) ms" "min $(lg min), p50 $(lg p50), ${fd_sent:-0} answered" "p99 <= 102 ms" "$(meets "$(lg p99)" 102 '<=')"

read -r fh_rps fh_cpu <<<"$(h2_run $FH "$pid_h2")"
read -r hh_rps hh_cpu <<<"$(h2_run $HA2 "$pid_haproxy")"
row "6. gRPC-shaped unary over h2 (h2load)" "$fh_rps req/s" "haproxy h2 $hh_rps" "x$(ratio "$fh_rps" "$hh_rps") >= 1.0" "$(meets "$(ratio "$fh_rps" "$hh_rps")" 1.0 '>=')"
row "6c. proxy CPU per call, same run" "$fh_cpu us" "haproxy h2 $hh_cpu us" "(reported: the cost)" "x$(ratio "$hh_cpu" "$fh_cpu") less than haproxy"

if [ "$(id -u)" = 0 ] && [ -x "$here/transparent.sh" ] && [ -e /sys/kernel/btf/vmlinux ]; then
  echo "measuring transparent mode (test/bench/transparent.sh, about a minute)..." >&2
  bash "$here/transparent.sh" --build "$build" > "$tmp/tp.out" 2>&1 || echo "transparent benchmark failed" >> "$tmp/tp.out"
  read -r tk_rps tk_p50 <<<"$(awk '/^transparent sk_msg  / {print $3, $4}' "$tmp/tp.out")"
  read -r tk2_rps <<<"$(awk '/^transparent sk_msg, 2 workers/ {print $5}' "$tmp/tp.out")"
  read -r tt_rps <<<"$(awk '/^transparent TCP/ {print $4}' "$tmp/tp.out")"
  read -r te_rps te_p50 <<<"$(awk '/^explicit / {print $2, $3}' "$tmp/tp.out")"
  tp_ok=$( [ "$(meets "${tk_p50:-9}" "${te_p50:-0}" '<=')" = met ] && [ "$(meets "${tk_rps:-0}" "${tt_rps:-0}" '>=')" = met ] && echo met || echo MISSED)
  row "7. transparent, sk_msg (wrk in a pod)" "p50 ${tk_p50:-?} ms, ${tk_rps:-?} req/s" "explicit p50 ${te_p50:-?} ms; no-sockmap ${tt_rps:-?} req/s" "p50 <= explicit; sk_msg > no-sockmap" "$tp_ok (x$(ratio "${tk_rps:-0}" "${tt_rps:-0}") no-sockmap)"
  row "7b. transparent, sk_msg, 2 workers" "${tk2_rps:-?} req/s" "1 worker: ${tk_rps:-?}" "x$(ratio "${tk2_rps:-0}" "${tk_rps:-0}") (report)" "reported"
  run_tp=1
else
  row "7. transparent mode (sk_msg)" "not run" "needs root, BTF and test/bench/transparent.sh" "p50 <= explicit" "not run"
  run_tp=0
fi

# Each worker's share: CPU time of the main thread (worker 0) and of
# fl-worker-1 over the run, as cores in use.
worker_ns() { # pid -> "ns0 ns1"
  local t0=0 t1=0 f a comm
  for f in /proc/"$1"/task/*; do
    read -r a _ < "$f/schedstat"; comm=$(cat "$f/comm")
    if [ "${f##*/}" = "$1" ]; then t0=$a; elif [ "$comm" = fl-worker-1 ]; then t1=$a; fi
  done
  echo "$t0 $t1"
}
read -r w0a w1a <<<"$(worker_ns "$pid_workers")"
read -r fw_rps _ _ _ _ <<<"$(wrk_run $FW 100)"
read -r w0b w1b <<<"$(worker_ns "$pid_workers")"
wrk2_pass=$(wrk_run $FP 100 "$pid_pass")
read -r wrk2_rps _ _ wrk2_cpu _ <<<"$wrk2_pass"
shares=$(awk -v a=$((w0b - w0a)) -v b=$((w1b - w1a)) -v d="$dur" 'BEGIN {printf "%.2f + %.2f cores", a / d / 1e9, b / d / 1e9}')
row "8. workers: 2 (SO_REUSEPORT), 100 conns" "$fw_rps req/s" "1 worker: $wrk2_rps" "x$(ratio "$fw_rps" "$wrk2_rps") (report)" "reported"
row "8b. the two workers' CPU, same run" "$shares" "1 worker: $(awk -v c="$wrk2_cpu" -v r="$wrk2_rps" 'BEGIN {printf "%.2f cores", c * r / 1e6}')" "both cores used" "reported"

echo
printf '%-46s|%22s|%-46s|%-38s|%s\n' "scenario" "faultline" "peers / reference" "target" "result"
printf '%s\n' "$(printf '%46s|%22s|%46s|%38s|%7s' | tr ' ' -)"
printf '%s\n' "${rows[@]}"
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r); wrk -t1, h2load -t1 -c50 -m10; ${dur}s per figure"
echo "note: client, backend and proxy share the same cores, so figures vary by several percent between runs"
if [ "$run_tp" = 1 ]; then
  echo
  echo "7. transparent mode, in full:"
  cat "$tmp/tp.out"
fi
