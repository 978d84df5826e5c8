#!/usr/bin/env bash
# Soak: one daemon (explicit mode, 2 workers) under mixed traffic for a long time,
# with the policy reloaded (SIGHUP) every 10 s and a rule changed with faultctl
# every second. Prints a row every minute (every SOAK_SECONDS/6 for runs under
# 10 minutes): elapsed time, RSS, descriptors, active connections, requests so
# far, p50/p99 of 20 probe requests (curl time_total, through a listener no rule
# applies to), and errors so far. At the end the table again and a verdict:
# RSS flat after warm-up (the last reading within 10% of the one at row 3, i.e.
# minute 3, or within 4 MiB, whichever is larger), the daemon still running,
# no probe or control errors. Exits 1 when the verdict fails. Not run by CI.
#
#   bash test/bench/soak.sh [--build DIR]            30 minutes
#   SOAK_SECONDS=120 bash test/bench/soak.sh          a quick check (rows every 20 s)
#   FAULTLINE=/path/to/faultline [FAULTCTL=...] bash test/bench/soak.sh
#
# Traffic: wrk -t1 -c20 (HTTP/1.1, each connection pausing SOAK_WRK_DELAY_MS,
# default 5, between requests) to nginx; h2load (h2c prior knowledge, 4 clients,
# --rps 100 each) to the plain HTTP/2 server of test/grpc/server.js; the grpc-js
# client of test/grpc in a loop to its gRPC server. Faults: delay 5 ms at 10%,
# abort at 5%, reset at 1% (HTTP/1.1 and h2 listeners), gRPC abort (UNAVAILABLE)
# at 5%. Ports SOAK_PORT_BASE (default 19700) .. +9, loopback only.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build"
[ "${1:-}" = "--build" ] && [ $# -ge 2 ] && build=$2
FAULTLINE=${FAULTLINE:-$build/faultline}
FAULTCTL=${FAULTCTL:-$(dirname "$FAULTLINE")/faultctl}
[ -x "$FAULTCTL" ] || FAULTCTL=$build/faultctl
SECS=${SOAK_SECONDS:-1800}
WRK_DELAY=${SOAK_WRK_DELAY_MS:-5}
if [ -n "${SOAK_ROW_SECONDS:-}" ]; then
  ROW=$SOAK_ROW_SECONDS
elif [ "$SECS" -ge 600 ]; then
  ROW=60
else
  ROW=$((SECS / 6))
fi
[ "$ROW" -ge 5 ] || ROW=5
base=${SOAK_PORT_BASE:-19700}
NG=$((base + 1)) G=$((base + 2)) H2=$((base + 3))
PH1=$((base + 5)) PH2=$((base + 6)) PG=$((base + 7)) PP=$((base + 8))
gdir="$root/test/grpc"

for t in wrk h2load nginx node curl jq; do
  command -v "$t" >/dev/null || { echo "soak: $t is missing (see test/deps.sh)" >&2; exit 1; }
done
for b in "$FAULTLINE" "$FAULTCTL"; do
  [ -x "$b" ] || { echo "soak: $b not found (build it, or set FAULTLINE / FAULTCTL)" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || true

# shellcheck source=test/bench/lib.sh
source "$here/lib.sh"
bench_init soak

if [ ! -d "$gdir/node_modules/@grpc/grpc-js" ]; then
  (cd "$gdir" && npm ci --no-audit --no-fund --loglevel=error) >"$tmp/npm.log" 2>&1 ||
    { cat "$tmp/npm.log"; echo "soak: npm ci in test/grpc failed" >&2; exit 1; }
fi

# ---- backends ------------------------------------------------------------------
mkdir -p "$tmp/ng/tmp"
cat >"$tmp/ng/nginx.conf" <<EOC
daemon off;
master_process off;
worker_processes 1;
pid $tmp/ng/nginx.pid;
error_log $tmp/ng/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/ng/tmp/body;
    proxy_temp_path $tmp/ng/tmp/proxy;
    fastcgi_temp_path $tmp/ng/tmp/fastcgi;
    uwsgi_temp_path $tmp/ng/tmp/uwsgi;
    scgi_temp_path $tmp/ng/tmp/scgi;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$NG; location / { return 200 "hello from nginx\n"; } }
}
EOC
nginx -e "$tmp/ng/error.log" -c "$tmp/ng/nginx.conf" -p "$tmp/ng" >"$tmp/ng/out" 2>&1 & pids+=($!)
node "$gdir/server.js" "$G" "$H2" >"$tmp/server.log" 2>&1 & pids+=($!)

cat >"$tmp/policy.yaml" <<EOC
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: soak}
spec:
  ttl: 0s
  listeners:
    - {name: h1, listen: "127.0.0.1:$PH1", upstream: "127.0.0.1:$NG"}
    - {name: h2, listen: "127.0.0.1:$PH2", upstream: "127.0.0.1:$H2"}
    - {name: grpc, listen: "127.0.0.1:$PG", upstream: "127.0.0.1:$G"}
    - {name: probe, listen: "127.0.0.1:$PP", upstream: "127.0.0.1:$NG"}
  rules:
    - name: grpc-abort
      on: [grpc]
      match: {grpc: {}}
      fault:
        abort: {grpc_status: UNAVAILABLE, message: "soak", percent: 5}
    - name: mix
      on: [h1, h2]
      fault:
        delay: {fixed: 5ms, percent: 10}
        abort: {status: 503, body: "soak\n", percent: 5}
        reset: {percent: 1}
EOC
ADM="$tmp/admin/admin.sock"
"$FAULTLINE" run -f "$tmp/policy.yaml" --workers 2 --admin "$ADM" --fault-log "$tmp/faults.log" \
  >>"$tmp/daemon.out" 2>>"$tmp/daemon.err" &
DPID=$!
pids+=("$DPID")
for p in $NG $G $H2 $PH1 $PH2 $PG $PP; do wait_port "$p"; done
ctl() { "$FAULTCTL" --admin "$ADM" "$@" >/dev/null 2>>"$tmp/faultctl.err"; }
status() { curl -s -m 5 --unix-socket "$ADM" http://x/v1/status; }

# ---- traffic ---------------------------------------------------------------------
cat >"$tmp/delay.lua" <<EOC
function delay() return $WRK_DELAY end
EOC
wrk -t1 -c20 -d"${SECS}s" --timeout 5s -s "$tmp/delay.lua" "http://127.0.0.1:$PH1/" >"$tmp/wrk.out" 2>&1 & pids+=($!)
WRK_PID=$!
h2load -c4 -m4 --rps 100 -D "$SECS" "http://127.0.0.1:$PH2/hello" >"$tmp/h2load.out" 2>&1 & pids+=($!)
H2_PID=$!
END=$(($(date +%s) + SECS))
(
  # Bounded: one round per 10 s until the end (and at most SECS/10 + 1 rounds).
  for ((i = 0; i <= SECS / 10 && $(date +%s) < END; i++)); do
    left=$(((END - $(date +%s)) * 1000))
    [ "$left" -gt 10000 ] && left=10000
    [ "$left" -gt 0 ] || break
    timeout 60 node "$gdir/client.js" loop "127.0.0.1:$PG" "$left" 2>&1 | tail -n 1
  done
) >"$tmp/grpc.out" & pids+=($!)
GRPC_PID=$!

# ---- the run -------------------------------------------------------------------
rows=()
errors=0
probe_bad=0
ctl_bad=0

# probe: 20 requests through the rule-free listener; prints "p50 p99" in ms and adds failures.
probe() {
  local i r ok
  : >"$tmp/probe.t"
  for ((i = 0; i < 20; i++)); do
    r=$(curl -s -o /dev/null -m 5 -w '%{http_code} %{time_total}' "http://127.0.0.1:$PP/")
    if [ "${r%% *}" = 200 ]; then echo "${r#* }" >>"$tmp/probe.t"; else probe_bad=$((probe_bad + 1)); fi
  done
  ok=$(wc -l <"$tmp/probe.t")
  if [ "$ok" -eq 0 ]; then echo "- -"; return; fi
  sort -g "$tmp/probe.t" | awk '{ v[NR] = $1 } END {
      i50 = int((NR * 50 + 99) / 100); i99 = int((NR * 99 + 99) / 100);
      printf "%.1f %.1f\n", v[i50] * 1000, v[i99] * 1000 }'
}

row() { # ELAPSED: samples and prints one row
  local el=$1 rss fds st act req lat
  rss=$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$DPID/status" 2>/dev/null)
  fds=$(ls "/proc/$DPID/fd" 2>/dev/null | wc -l)
  st=$(status)
  act=$(jq -r .active_connections <<<"$st" 2>/dev/null)
  req=$(jq -r .requests_total <<<"$st" 2>/dev/null)
  [ -n "$act" ] || ctl_bad=$((ctl_bad + 1))
  lat=$(probe)
  errors=$((probe_bad + ctl_bad))
  rows+=("$(printf '%7s %8s %6s %7s %12s %8s %8s %6s' \
    "$(printf '%d:%02d' $((el / 60)) $((el % 60)))" "${rss:--}" "$fds" "${act:--}" "${req:--}" \
    ${lat} "$errors")") # ${lat} is two fields: p50 p99
  echo "${rows[-1]}"
  # The fault log grows with the traffic; the daemon appends, so it can be truncated.
  : >"$tmp/faults.log"
  [ "$(stat -c %s "$tmp/daemon.err" 2>/dev/null || echo 0)" -gt 50000000 ] && : >"$tmp/daemon.err"
}
HEADER=$(printf '%7s %8s %6s %7s %12s %8s %8s %6s' elapsed rss_MiB fds active requests p50_ms p99_ms errors)

echo "soak: $FAULTLINE, pid $DPID, 2 workers, $SECS s, a row every $ROW s"
echo "$HEADER"
START=$(date +%s)
tick=0
next_row=$((START + ROW))
dead=0
for ((tick = 1; tick <= SECS + 5; tick++)); do
  now=$(date +%s)
  [ "$now" -ge $((START + SECS)) ] && break
  if ! kill -0 "$DPID" 2>/dev/null; then dead=1; echo "soak: the daemon exited"; break; fi
  case $((tick % 4)) in
    0) ctl disable grpc-abort || ctl_bad=$((ctl_bad + 1)) ;;
    1) ctl enable grpc-abort || ctl_bad=$((ctl_bad + 1)) ;;
    2) ctl set mix --fault abort --percent $(((tick / 4) % 10 + 1)) || ctl_bad=$((ctl_bad + 1)) ;;
    3) ctl set mix --fault delay --percent default || ctl_bad=$((ctl_bad + 1)) ;;
  esac
  [ $((tick % 10)) -eq 0 ] && kill -HUP "$DPID" 2>/dev/null
  if [ "$now" -ge "$next_row" ]; then
    row $((now - START))
    next_row=$((next_row + ROW))
  fi
  # one tick a second, whatever the work above took
  sleep "$(awk -v s="$START" -v t="$tick" -v n="$(date +%s.%N)" 'BEGIN { d = s + t - n; print (d > 0) ? d : 0 }')"
done
kill -0 "$DPID" 2>/dev/null || dead=1
[ "$dead" = 0 ] && row $(($(date +%s) - START))

for p in $WRK_PID $H2_PID $GRPC_PID; do
  for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill "$p" 2>/dev/null
  wait "$p" 2>/dev/null
done

# The daemon stops like in production (SIGTERM), so that a sanitizer build reports.
drc=-
if [ "$dead" = 0 ]; then
  kill -TERM "$DPID" 2>/dev/null
  for ((i = 0; i < 150; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$DPID" 2>/dev/null && kill -KILL "$DPID" 2>/dev/null
  wait "$DPID" 2>/dev/null
  drc=$?
fi

# ---- the verdict ---------------------------------------------------------------
echo
echo "soak: traffic"
grep -E 'Requests/sec|requests in|Socket errors|Non-2xx' "$tmp/wrk.out" | sed 's/^/  wrk:    /'
grep -E '^requests:|^status codes:|^finished in' "$tmp/h2load.out" | sed 's/^/  h2load: /'
sed -nE 's/.*"ok":([0-9]+),"fail":([0-9]+).*/\1 \2/p' "$tmp/grpc.out" |
  awk '{ o += $1; f += $2 } END { printf "  grpc:   %d calls ok, %d failed (the rule aborts about 5%%)\n", o, f }'
echo "  fault log: $(wc -l <"$tmp/faults.log") lines since the last row; daemon stderr: $(wc -l <"$tmp/daemon.err") lines"
# The daemon's messages by kind (timestamps, numbers and addresses folded).
sed -E 's/^[0-9T:.-]+Z //; s/[0-9]+/N/g' "$tmp/daemon.err" | sort | uniq -c | sort -rn | head -n 8 |
  sed 's/^/  stderr: /'
[ -s "$tmp/faultctl.err" ] && sed -n '1,5p' "$tmp/faultctl.err" | sed 's/^/  faultctl: /'
echo
echo "soak: summary"
echo "$HEADER"
printf '%s\n' "${rows[@]}"
verdict=0
n=${#rows[@]}
if [ "$n" -ge 2 ]; then
  ref_i=2                       # row 3: minute 3 of a full run
  [ "$n" -ge 4 ] || ref_i=0
  ref=$(awk '{print $2}' <<<"${rows[$ref_i]}")
  last=$(awk '{print $2}' <<<"${rows[$((n - 1))]}")
  if awk -v r="$ref" -v l="$last" 'BEGIN { tol = r * 0.10; if (tol < 4) tol = 4; d = l - r; if (d < 0) d = -d; exit !(d <= tol) }'; then
    echo "RSS: flat: ${last} MiB at the end, ${ref} MiB at row $((ref_i + 1)) (tolerance max(10%, 4 MiB))"
  else
    echo "RSS: NOT flat: ${last} MiB at the end, ${ref} MiB at row $((ref_i + 1)) (tolerance max(10%, 4 MiB))"
    verdict=1
  fi
else
  echo "RSS: too few rows to judge"
  verdict=1
fi
if [ "$dead" = 1 ]; then
  echo "daemon: exited during the run"
  verdict=1
elif [ "$drc" != 0 ]; then
  echo "daemon: ran to the end, but SIGTERM did not stop it cleanly (exit status $drc)"
  verdict=1
else
  echo "daemon: ran to the end, exit 0 on SIGTERM"
fi
if [ "$errors" -gt 0 ]; then
  echo "errors: $probe_bad probe requests failed, $ctl_bad control calls failed"
  verdict=1
else
  echo "errors: none"
fi
if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$tmp/daemon.err"; then
  echo "sanitizer: report in the daemon's stderr:"
  grep -m3 -E 'ERROR:|runtime error:' "$tmp/daemon.err"
  verdict=1
fi
if [ "$verdict" = 0 ]; then echo "soak: PASS"; else echo "soak: FAIL"; fi
exit "$verdict"
