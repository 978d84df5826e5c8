#!/bin/bash
# Kubernetes benchmark (not run by CI): 200 pods on this node among 5,000 in the
# test API server (test/kube/apiserver.py). Prints the time from a pod's ADDED to
# "steered" in faultline's status (p50, p99, one pod at a time), from a label change
# to released, the daemon's RSS with 200 pods selected, and the daemon's CPU per
# 1,000 watch events. Root, cgroup v2 and BPF, as test/kube/kube.sh.
#
#   bash test/bench/kube.sh [path/to/faultline]     (BENCH_PODS=200 BENCH_OTHERS=4800)
#
# The 200 pods share 10 network namespaces (a pause process in each pod's
# cgroup), which is what steering needs of them; their cgroups are laid out as
# the kubelet's cgroupfs driver does for BestEffort pods.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(readlink -f "${1:-$HERE/../../build/faultline}")
NPODS=${BENCH_PODS:-200}
NOTHERS=${BENCH_OTHERS:-4800}
T=flkb$$
TMP=$(mktemp -d /tmp/fl-kube-bench.XXXXXX)
PIDS=()
DPID=
# shellcheck source=test/kube/lib.sh
source "$HERE/../kube/lib.sh"

cleanup() {
    set +e
    [ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    kapi_stop
    wait 2>/dev/null
    for i in $(seq 0 9); do ip netns del "$T$i" 2>/dev/null; done
    for d in "$CG2"/kubepods/besteffort/pod*; do [ -d "$d" ] && rmdir "$d/ctr" "$d" 2>/dev/null; done
    rmdir "$CG2/kubepods/besteffort" "$CG2/kubepods" "${HOLD:-/nonexistent}" 2>/dev/null
    [ -n "${DCG:-}" ] && rmdir "$DCG" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "kube bench: needs root"; exit 1; }
CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -e "$CG2/kubepods" ] && { echo "kube bench: $CG2/kubepods exists; not touching it"; exit 1; }

kapi_start "$TMP/api" >/dev/null || exit 1
kapi POST /api/v1/namespaces '{"metadata":{"name":"bench"}}' >/dev/null
# The rest of the cluster: pods on other nodes, which this node must not list.
python3 - "$NOTHERS" >"$TMP/others.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps([{"_plural": "pods", "metadata": {"name": "o-%05d" % i, "namespace": "bench",
                  "labels": {"app": "bench"}}, "spec": {"nodeName": "n%d" % (2 + i % 24)},
                  "status": {"phase": "Running"}} for i in range(n)]))
EOF
curl -sS --cacert "$KAPI_DIR/ca.crt" -X POST --data-binary @"$TMP/others.json" "$KAPI_URL/_test/bulk" >/dev/null

for i in $(seq 0 9); do ip netns add "$T$i" && ip -n "$T$i" link set lo up; done
# The pods' processes wait in a cgroup of their own until the bench gives each
# its pod cgroup, as the kubelet would.
HOLD=$CG2/$T-hold
mkdir -p "$HOLD" "$CG2/kubepods/besteffort" || exit 1
: >"$TMP/pids"
for i in $(seq 0 $((NPODS - 1))); do
    sh -c 'echo $$ > "$0/cgroup.procs" && exec ip netns exec "$1" sleep 900' "$HOLD" "$T$((i % 10))" &
    PIDS+=($!)
    echo $! >>"$TMP/pids"
done

cat >"$TMP/policy.yaml" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: kube-bench}
spec:
  proxy_port: 18910
  targets:
    - name: bench
      pods: {selector: {matchLabels: {app: bench}, namespace: bench}}
      destination: {cidr: 10.77.250.0/24, port: 80}
  rules:
    - {name: r, fault: {abort: {status: 503}}}
EOF
"$BIN" run -f "$TMP/policy.yaml" --admin "$TMP/admin.sock" --fault-log /dev/null --kubernetes \
    --kubeconfig "$KAPI_KUBECONFIG" --node n1 2>"$TMP/daemon.log" &
DPID=$!
DCG=$CG2/faultline-daemon-$DPID
for _ in $(seq 100); do grep -q ' ready ' "$TMP/daemon.log" && break; sleep 0.05; done
sleep 1
rss0=$(awk '/^VmRSS:/ {print $2}' "/proc/$DPID/status")
out=$(python3 "$HERE/kube_bench.py" "$KAPI_URL" "$KAPI_DIR/ca.crt" "$KAPI_TOKEN" "$TMP/admin.sock" \
    "$DPID" "$TMP/pids" "$CG2")
echo "# $out"
kv() { sed -nE "s/.*(^| )$1=([^ ]*).*/\2/p" <<<"$out"; }
listed=$(curl -sS --cacert "$KAPI_DIR/ca.crt" "$KAPI_URL/_test/requests" |
    grep -c '"path": "/api/v1/pods".*"limit"')
printf '\n%-44s %s\n' "faultline --kubernetes ($(nproc) cores, $NPODS pods here, $NOTHERS elsewhere)" ""
printf '%-44s %s\n' "pod ADDED -> steered, p50 / p99 (ms)" "$(kv added_p50_ms) / $(kv added_p99_ms)"
printf '%-44s %s\n' "label change -> released, p50 / p99 (ms)" "$(kv released_p50_ms) / $(kv released_p99_ms)"
printf '%-44s %s\n' "RSS before pods / with $NPODS selected (MiB)" "$(awk -v a="$rss0" -v b="$(kv rss_kb)" 'BEGIN { printf "%.1f / %.1f", a / 1024, b / 1024 }')"
printf '%-44s %s\n' "CPU per 1,000 watch events (ms)" "$(kv cpu_ms_per_1000_events) ($(kv events) events)"
printf '%-44s %s\n' "pod lists sent (fieldSelector spec.nodeName)" "$listed"
kill -TERM "$DPID"
wait "$DPID" 2>/dev/null
DPID=
[ -n "$(kv added_p50_ms)" ]
