#!/usr/bin/env bash
# The demo: bash examples/demo.sh
#
# Installs what is missing (test/deps.sh), builds faultline, starts the sample
# backend on 127.0.0.1:8080 and faultline with policies/demo.yaml (127.0.0.1:15000 ->
# 127.0.0.1:8080), sends about 200 requests with curl, then shows injected faults
# from the fault log and a per-rule summary. Stops everything it started.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BACKEND_PORT=8080
PROXY_PORT=15000
TMP=$(mktemp -d "${TMPDIR:-/tmp}/faultline-demo.XXXXXX")
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # PORT PID
    for _ in $(seq 100); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

say "dependencies"
# shellcheck source=test/deps.sh
source "$ROOT/test/deps.sh"
fl_deps_install || die "could not install the packages above"
echo "all packages present"

say "build"
{ cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$TMP/cmake.log" 2>&1 &&
    cmake --build build -j"$(nproc)" >>"$TMP/cmake.log" 2>&1; } ||
    { tail -n 30 "$TMP/cmake.log"; die "build failed"; }
echo "build/faultline $(build/faultline version 2>/dev/null | awk '{print $2}')"

for p in $BACKEND_PORT $PROXY_PORT; do
    port_open $p && die "port $p is in use; the demo needs 127.0.0.1:$BACKEND_PORT and :$PROXY_PORT free"
done

say "start the backend (examples/backend.js on :$BACKEND_PORT) and faultline (policies/demo.yaml)"
node examples/backend.js --port $BACKEND_PORT --host 127.0.0.1 >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_port $BACKEND_PORT $! || { cat "$TMP/backend.log"; die "the backend did not start"; }
cat "$TMP/backend.log"
build/faultline validate -f policies/demo.yaml || die "policies/demo.yaml does not validate"
build/faultline run -f policies/demo.yaml --fault-log "$TMP/faults.log" --admin "$TMP/admin.sock" \
    2>"$TMP/faultline.err" &
FL=$!
PIDS+=("$FL")
wait_port $PROXY_PORT "$FL" || { cat "$TMP/faultline.err"; die "faultline did not start"; }
sed 's/^/  /' "$TMP/faultline.err"

say "traffic: about 200 requests (3 of them with x-chaos: on) through 127.0.0.1:$PROXY_PORT (20 at a time)"
{
    for i in $(seq 40); do
        printf 'url = "http://127.0.0.1:%d/"\noutput = /dev/null\n' $PROXY_PORT
        printf 'url = "http://127.0.0.1:%d/orders/%d"\noutput = /dev/null\n' $PROXY_PORT "$i"
        printf 'url = "http://127.0.0.1:%d/slow/%d"\noutput = /dev/null\n' $PROXY_PORT "$i"
        printf 'url = "http://127.0.0.1:%d/flaky/%d"\noutput = /dev/null\n' $PROXY_PORT "$i"
        printf 'url = "http://127.0.0.1:%d/checkout/%d"\noutput = /dev/null\n' $PROXY_PORT "$i"
    done
} >"$TMP/urls.cfg"
t0=$(date +%s.%N)
# connection: close, so a reset is seen as one: curl silently retries a request
# whose reused keep-alive connection was reset.
curl -s -Z --parallel-max 20 --parallel-immediate -H 'connection: close' -K "$TMP/urls.cfg" -w '%{http_code} %{time_total} %{url}\n' \
    >"$TMP/responses.txt" 2>/dev/null
# A few requests that ask for the header-gated fault (x-chaos: on).
for i in 1 2 3; do
    curl -s -o /dev/null -H 'x-chaos: on' -w '%{http_code} %{time_total} %{url}\n' \
        "http://127.0.0.1:$PROXY_PORT/checkout/chaos-$i" >>"$TMP/responses.txt" 2>/dev/null
done
echo "$(wc -l <"$TMP/responses.txt") requests in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
echo
echo "what the clients saw (000 = connection reset):"
awk '{ split($3, u, "/"); path = "/" u[4]; n[path " " $1]++ }
     END { for (k in n) printf "  %-10s %s  x %d\n", substr(k, 1, index(k, " ") - 1), substr(k, index(k, " ") + 1), n[k] }' \
    "$TMP/responses.txt" | sort

# Stop faultline first: SIGTERM flushes the fault log.
kill -TERM "$FL"
wait "$FL"
echo "faultline stopped (exit $?)"

say "fault log: first lines (one JSON object per injected fault)"
head -n 5 "$TMP/faults.log"
echo "... $(wc -l <"$TMP/faults.log") lines in all"

say "injected faults by rule"
node -e '
    const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
    const by = new Map();
    for (const l of lines) {
        const o = JSON.parse(l);
        const detail = o.fault === "delay" ? "" : o.fault === "abort" ? String(o.status ?? o.grpc_status) : "";
        const k = `${o.rule}\t${o.fault}`;
        const e = by.get(k) || { n: 0, ms: 0, detail };
        e.n++;
        if (o.fault === "delay") e.ms += o.delay_ms;
        by.set(k, e);
    }
    const rows = [["RULE", "FAULT", "COUNT", "DETAIL"]];
    for (const [k, e] of [...by].sort()) {
        const [rule, fault] = k.split("\t");
        rows.push([rule, fault, String(e.n), fault === "delay" ? `avg ${Math.round(e.ms / e.n)} ms` :
                   fault === "abort" ? `status ${e.detail}` : "TCP RST"]);
    }
    const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const r of rows) console.log("  " + r.map((c, i) => c.padEnd(w[i])).join("   "));
' "$TMP/faults.log"

echo
echo "Try it yourself: node examples/backend.js --port 8080 &"
echo "                 build/faultline run -f policies/demo.yaml"
echo "                 curl -i http://127.0.0.1:15000/orders/1"

# Transparent mode needs root, cgroup v2 and BPF; show it when the host has them.
say "transparent mode"
if [ "$(id -u)" != 0 ]; then
    echo "skipped: transparent mode needs root (BPF, cgroups, network namespaces); the demo above used explicit mode"
elif [ ! -e /sys/kernel/btf/vmlinux ]; then
    echo "skipped: the kernel has no BTF (/sys/kernel/btf/vmlinux), which transparent mode needs; the demo above used explicit mode"
else
    bash "$ROOT/examples/demo-transparent.sh"
    rc=$?
    if [ $rc -eq 2 ]; then
        echo "skipped: this host cannot run transparent mode (reason above); the demo above used explicit mode"
    elif [ $rc -ne 0 ]; then
        die "the transparent-mode demo failed (exit $rc)"
    fi
fi
exit 0
