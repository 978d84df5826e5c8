#!/bin/bash
# Kubernetes, part 1, end to end: the real daemon (faultline run --kubernetes)
# against the project's test API server (test/kube/apiserver.py, HTTPS, bearer
# token), pods laid out as the kubelet lays them out (pod-level cgroups in the
# cgroupfs, systemd and nested layouts, every QoS class; a netns with a veth and a
# long-lived process standing for the pause container), a Service with cluster
# IPs and an EndpointSlice, and the real kubectl and curl. Needs root, cgroup v2
# and BPF. Ports 18800-18899. Removes everything it made, also on failure.
#
# usage: test/kube/kube.sh [path/to/faultline]
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(readlink -f "${1:-$HERE/../../build/faultline}")
CTL=$(dirname "$BIN")/faultctl
PEER=$HERE/../bpf/tp_peer.py
T=flk$$ # prefix for netns and links
TMP=$(mktemp -d /tmp/fl-kube-test.XXXXXX)
PPORT=18810 # the proxy port in each pod netns
SVCPORT=18880 # the Service port (cluster IPs)
EPPORT=18881  # the endpoints' port (targetPort)
INPORT=18882  # a server inside pod checkout-b: the ingress target's port
PASS=0 FAIL=0
PIDS=()
DPID=
MADE=() # cgroup directories made here, deepest last

# shellcheck source=test/bpf/lib.sh
source "$HERE/../bpf/lib.sh"
# shellcheck source=test/kube/lib.sh
source "$HERE/lib.sh"

cleanup() {
    set +e
    [ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    kapi_stop
    for ns in a b c d e; do
        for p in $(ip netns pids "$T$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    done
    wait 2>/dev/null
    for ns in a b c d e; do
        ip netns del "$T$ns" 2>/dev/null
        ip link del "${T}v$ns" 2>/dev/null
    done
    ip addr del 10.77.200.10/32 dev lo 2>/dev/null
    ip addr del fd77:200::10/128 dev lo 2>/dev/null
    for ((i = ${#MADE[@]} - 1; i >= 0; i--)); do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            rmdir "${MADE[i]}" 2>/dev/null
            [ -d "${MADE[i]}" ] || break
            sleep 0.2
        done
    done
    [ -n "${DPID_CG:-}" ] && rmdir "$DPID_CG" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { say "test/kube: needs root"; exit 1; }
[ -x "$BIN" ] || { say "test/kube: $BIN not built"; exit 1; }
for t in curl python3 bpftool ip jq openssl kubectl; do
    command -v $t >/dev/null || { say "test/kube: needs $t"; exit 1; }
done
CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -n "$CG2" ] || { say "test/kube: no cgroup2 mount"; exit 1; }
for d in kubepods kubepods.slice kubelet.slice; do
    [ -e "$CG2/$d" ] && { say "test/kube: $CG2/$d exists (a real kubelet?); not touching it"; exit 1; }
done

mkcg() { # PATH: makes it and every missing parent, remembered for cleanup
    local p=$1 parts=() d
    while [ ! -d "$p" ]; do parts=("$p" "${parts[@]}"); p=$(dirname "$p"); done
    for d in "${parts[@]}"; do mkdir "$d" && MADE+=("$d") || return 1; done
}
# Pod x with index n: netns $T<x>, eth0 10.77.1n.2 / fd77:1n::2, host end .1.
mknet() { # x n
    local ns=$T$1 v=${T}v$1
    ip netns add "$ns" &&
        ip link add "$v" type veth peer name eth0 netns "$ns" &&
        ip addr add "10.77.1$2.1/24" dev "$v" &&
        ip addr add "fd77:1$2::1/64" dev "$v" nodad &&
        ip link set "$v" up &&
        ip -n "$ns" link set lo up &&
        ip -n "$ns" addr add "10.77.1$2.2/24" dev eth0 &&
        ip -n "$ns" addr add "fd77:1$2::2/64" dev eth0 nodad &&
        ip -n "$ns" link set eth0 up &&
        ip -n "$ns" route add default via "10.77.1$2.1" &&
        ip -n "$ns" -6 route add default via "fd77:1$2::1"
}
in_pod() { # CGROUP NS CMD...
    local cg=$1 ns=$2
    shift 2
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" ip netns exec "$T$ns" "$@"
}
bg() { "$@" >>"$TMP/bg.log" 2>&1 & PIDS+=($!); disown $!; }
pause_in() { bg in_pod "$1" "$2" sleep 900; } # the pod's "pause container"
curl_in() { # cg ns args...
    local cg=$1 ns=$2
    shift 2
    in_pod "$cg" "$ns" curl -sS -m 5 -o /dev/null -w '%{http_code}' "$@" 2>&1
}
# pod_json NS NAME UID LABELS-JSON QOS
pod_json() {
    printf '{"metadata":{"name":"%s","namespace":"%s","uid":"%s","labels":%s},' "$2" "$1" "$3" "$4"
    printf '"spec":{"nodeName":"n1","containers":[{"name":"app","image":"app"}]},'
    printf '"status":{"phase":"Running","qosClass":"%s"}}' "$5"
}
# The apiserver assigns uids; the kubelet's cgroups are named after them.
add_pod() { # NS NAME LABELS QOS -> prints the uid
    kapi POST "/api/v1/namespaces/$1/pods" "$(pod_json "$1" "$2" x "$3" "$4")" | jq -r .metadata.uid
}
status_json() { "$CTL" --admin "$TMP/admin.sock" -o json status 2>/dev/null; }
pod_state() { # NS/NAME: its state in /v1/status, or "none"
    status_json | jq -r --arg p "$1" '[.kubernetes.pods[] | select(.pod == $p) | .state][0] // "none"'
}
# wait_state NS/NAME STATE SECS: prints the milliseconds it took, or "never (LAST)"
wait_state() {
    local t0 s i
    t0=$(date +%s%N)
    for ((i = 0; i < $3 * 20; i++)); do
        s=$(pod_state "$1")
        [ "$s" = "$2" ] && { echo $((($(date +%s%N) - t0) / 1000000)); return 0; }
        sleep 0.05
    done
    echo "never ($s)"
    return 1
}
# wait_code CG NS URL CODE SECS: polls until curl gives CODE; prints ms or "never"
wait_code() {
    local t0 c i
    t0=$(date +%s%N)
    for ((i = 0; i < $5 * 10; i++)); do
        c=$(curl_in "$1" "$2" "$3")
        [ "$c" = "$4" ] && { echo $((($(date +%s%N) - t0) / 1000000)); return 0; }
        sleep 0.1
    done
    echo "never (last $c)"
    return 1
}
ms_ok() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -le "$2" ]; }

# ---- the cluster: API server, namespaces, a Service, pods ----
kapi_start "$TMP/api" || { say "test API server did not start"; exit 1; }
for ns in shop other; do kapi POST /api/v1/namespaces "{\"metadata\":{\"name\":\"$ns\"}}" >/dev/null; done
# The daemon watches FaultPolicies too: their CRD is part of an install.
kapi_kubectl apply -f "$HERE/../../examples/kubernetes/crd.yaml" >/dev/null || { say "the CRD did not install"; exit 1; }
kapi POST /api/v1/namespaces/shop/services \
    "{\"metadata\":{\"name\":\"orders\"},\"spec\":{\"clusterIP\":\"10.77.200.10\",\"clusterIPs\":[\"10.77.200.10\",\"fd77:200::10\"],\"ports\":[{\"name\":\"http\",\"port\":$SVCPORT,\"targetPort\":\"http\"}]}}" >/dev/null
slice() { # ADDRESSES-JSON
    printf '{"metadata":{"name":"orders-abc","namespace":"shop","labels":{"kubernetes.io/service-name":"orders"}},'
    printf '"addressType":"IPv4","endpoints":%s,"ports":[{"name":"http","port":%d,"protocol":"TCP"}]}' "$1" "$EPPORT"
}
kapi POST /apis/discovery.k8s.io/v1/namespaces/shop/endpointslices \
    "$(slice '[{"addresses":["10.77.11.1"],"conditions":{"ready":true}},{"addresses":["10.77.13.1"],"conditions":{"ready":false}}]')" >/dev/null
kapi POST /apis/discovery.k8s.io/v1/namespaces/shop/endpointslices \
    "{\"metadata\":{\"name\":\"orders-v6\",\"namespace\":\"shop\",\"labels\":{\"kubernetes.io/service-name\":\"orders\"}},\"addressType\":\"IPv6\",\"endpoints\":[{\"addresses\":[\"fd77:11::1\"]}],\"ports\":[{\"name\":\"http\",\"port\":$EPPORT}]}" >/dev/null

UA=$(add_pod shop checkout-a '{"app":"checkout"}' Burstable)
UB=$(add_pod shop checkout-b '{"app":"checkout","tier":"web"}' BestEffort)
UC=$(add_pod other checkout-c '{"app":"checkout"}' Guaranteed)
UD=$(add_pod shop web-d '{"app":"web"}' Burstable)
CGA=$CG2/kubepods/burstable/pod$UA                                             # cgroupfs
CGB=$CG2/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UB//-/_}.slice # systemd
CGC=$CG2/kubepods/pod$UC                                                       # Guaranteed
CGD=$CG2/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod${UD//-/_}.slice
for c in "$CGA/ctr1" "$CGB/ctr1" "$CGC/ctr1" "$CGD/ctr1"; do mkcg "$c" || { say "cannot make $c"; exit 1; }; done
mknet a 1 && mknet b 2 && mknet c 3 && mknet d 4 || { say "pod network setup failed"; exit 1; }
pause_in "$CGA/ctr1" a
pause_in "$CGB/ctr1" b
pause_in "$CGC/ctr1" c
pause_in "$CGD/ctr1" d
ip addr add 10.77.200.10/32 dev lo && ip addr add fd77:200::10/128 dev lo nodad || { say "cluster IPs"; exit 1; }
bg python3 "$PEER" server "10.77.200.10:$SVCPORT" "[fd77:200::10]:$SVCPORT" "10.77.11.1:$EPPORT" \
    "[fd77:11::1]:$EPPORT" \
    "10.77.12.1:$EPPORT" "10.77.11.1:$SVCPORT"
for _ in $(seq 50); do grep -q READY "$TMP/bg.log" && break; sleep 0.1; done
bg in_pod "$CGB/ctr1" b python3 "$PEER" server "10.77.12.2:$INPORT" "[fd77:12::2]:$INPORT"

cat >"$TMP/policy.yaml" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: kube-test}
spec:
  proxy_port: $PPORT
  targets:
    - name: orders
      pods:
        selector:
          matchLabels: {app: checkout}
          matchExpressions: [{key: canary, operator: DoesNotExist}]
          namespace: shop
      destination: {service: orders, port: $SVCPORT}
    - name: checkout-in
      direction: ingress
      pods: {selector: {matchLabels: {app: checkout, tier: web}, namespace: shop}}
      port: $INPORT
  rules:
    - name: orders-503
      match: {path: {prefix: /abort}}
      fault: {abort: {status: 503}}
EOF

NDAEMON=0
export POD_NAMESPACE=faultline-system # the cluster halt ConfigMap lives there
start_daemon() { # ARGS...
    : >"$TMP/faults.log"
    NDAEMON=$((NDAEMON + 1))
    [ -f "$TMP/daemon.log" ] && cat "$TMP/daemon.log" >>"$TMP/all-daemons.log"
    "$BIN" run -f "$TMP/policy.yaml" --fault-log "$TMP/faults.log" --admin "$TMP/admin.sock" \
        --kubernetes --node n1 "$@" 2>"$TMP/daemon.log" >/dev/null &
    DPID=$!
    DPID_CG=$CG2/faultline-daemon-$DPID
    for _ in $(seq 100); do
        grep -q ' ready ' "$TMP/daemon.log" 2>/dev/null && return 0
        kill -0 $DPID 2>/dev/null || break
        sleep 0.05
    done
    bad "daemon did not start" "$(cat "$TMP/daemon.log")"
    return 1
}
stop_daemon() {
    kill -TERM "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null
    local rc=$?
    DPID=
    return $rc
}

# ---- without credentials: what is missing, exit 2 ----
out=$("$BIN" run -f "$TMP/policy.yaml" --admin "$TMP/x.sock" --kubernetes --node n1 2>&1); rc=$?
[ $rc = 2 ] && grep -q 'not running in a pod.*give --kubeconfig PATH' <<<"$out" &&
    ok "--kubernetes without credentials: exit 2, says to give --kubeconfig" || bad "no credentials: rc $rc" "$out"
out=$("$BIN" run -f "$TMP/policy.yaml" --admin "$TMP/x.sock" 2>&1); rc=$?
[ $rc = 2 ] && grep -q "target 'orders' selects pods by labels.*--kubernetes" <<<"$out" &&
    ok "a selector target without --kubernetes: exit 2, says to add it" || bad "no --kubernetes: rc $rc" "$out"

start_daemon --kubeconfig "$KAPI_KUBECONFIG" --kube-watch-timeout 5s || exit 1
for _ in $(seq 40); do
    code_r=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$TMP/admin.sock" http://x/readyz)
    [ "$code_r" = 200 ] && break
    sleep 0.05
done
[ "$code_r" = 200 ] && ok "/readyz: 200 once the pods are listed" || bad "/readyz after start: $code_r"

# ---- selection ----
ms=$(wait_state shop/checkout-a steered 5) && ok "shop/checkout-a (Burstable, cgroupfs) steered (${ms} ms after start)" ||
    bad "checkout-a: $ms" "$(status_json | jq .kubernetes; cat "$TMP/daemon.log")"
ms=$(wait_state shop/checkout-b steered 3) && ok "shop/checkout-b (BestEffort, systemd layout) steered" || bad "checkout-b: $ms"
[ "$(pod_state other/checkout-c)" = none ] && ok "other/checkout-c (same labels, other namespace) not selected" ||
    bad "checkout-c: $(pod_state other/checkout-c)"
[ "$(pod_state shop/web-d)" = none ] && ok "shop/web-d (app=web) not selected" || bad "web-d: $(pod_state shop/web-d)"
s=$(status_json | jq -r '.kubernetes.pods[] | select(.pod == "shop/checkout-a") | .cgroup')
[ "$s" = "$CGA" ] && ok "status names the pod-level cgroup" || bad "cgroup in status: $s"
out=$("$CTL" --admin "$TMP/admin.sock" -o table status 2>&1)
check "faultctl status lists the pods" "$out" '^kubernetes +node n1 via https://127\.0\.0\.1:[0-9]+ .*in sync' \
    'shop/checkout-a \(target orders\): steered, ' 'shop/checkout-b \(target orders\): steered'

# ---- faults to the Service: cluster IP (v4, v6) and endpoint address ----
c=$(curl_in "$CGA/ctr1" a "http://10.77.200.10:$SVCPORT/abort/a")
[ "$c" = 503 ] && ok "checkout-a -> cluster IP 10.77.200.10: 503 injected" || bad "cluster IP v4: $c"
c=$(curl_in "$CGA/ctr1" a "http://[fd77:200::10]:$SVCPORT/abort/a6")
[ "$c" = 503 ] && ok "checkout-a -> cluster IP [fd77:200::10]: 503 injected" || bad "cluster IP v6: $c"
c=$(curl_in "$CGA/ctr1" a "http://10.77.11.1:$EPPORT/abort/ep")
[ "$c" = 503 ] && ok "checkout-a -> endpoint 10.77.11.1:$EPPORT (the targetPort): 503 injected" || bad "endpoint: $c"
c=$(curl_in "$CGA/ctr1" a "http://[fd77:11::1]:$EPPORT/abort/ep6")
[ "$c" = 503 ] && ok "checkout-a -> IPv6 endpoint [fd77:11::1]:$EPPORT (an IPv6 EndpointSlice): 503 injected" || bad "endpoint v6: $c"
c=$(curl_in "$CGA/ctr1" a "http://10.77.200.10:$SVCPORT/plain")
[ "$c" = 200 ] && ok "checkout-a -> the Service, a request no rule matches: 200 from the server" || bad "plain: $c"
c=$(curl_in "$CGA/ctr1" a "http://10.77.11.1:$SVCPORT/abort/other-port")
[ "$c" = 200 ] && ok "checkout-a -> the endpoint at another port: untouched (200)" || bad "other port: $c"
c=$(curl_in "$CGB/ctr1" b "http://10.77.200.10:$SVCPORT/abort/b")
[ "$c" = 503 ] && ok "checkout-b (systemd layout) -> cluster IP: 503 injected" || bad "checkout-b: $c"
c=$(curl_in "$CGC/ctr1" c "http://10.77.200.10:$SVCPORT/abort/c")
[ "$c" = 200 ] && ok "other/checkout-c -> cluster IP: untouched (200)" || bad "checkout-c: $c"
c=$(curl_in "$CGD/ctr1" d "http://10.77.200.10:$SVCPORT/abort/d")
[ "$c" = 200 ] && ok "shop/web-d -> cluster IP: untouched (200)" || bad "web-d: $c"
sleep 0.3
l=$(grep '"path":"/abort/a"' "$TMP/faults.log")
check "the fault line names namespace, pod and node" "$l" '"namespace":"shop"' '"pod":"checkout-a"' '"node":"n1"' \
    '"dst":"10\.77\.200\.10:'"$SVCPORT"'"' '"src":"10\.77\.11\.2:'
# An ingress target by labels: the connections arriving at checkout-b's port.
# (The server in the pod binds its address, and Python's HTTPServer looks its
# name up first, which waits for a DNS server the pod cannot reach.)
for _ in $(seq 150); do ip netns exec "${T}b" ss -ltn | grep -q ":$INPORT " && break; sleep 0.1; done
c4=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://10.77.12.2:$INPORT/abort/in4" 2>&1)
c6=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://[fd77:12::2]:$INPORT/abort/in6" 2>&1)
cp=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://10.77.12.2:$INPORT/peer" 2>&1)
[ "$c4" = 503 ] && [ "$c6" = 503 ] && [ "$cp" = 200 ] &&
    ok "ingress target by labels: the host's requests to checkout-b's port are faulted (v4, v6), others pass" ||
    bad "ingress by labels: v4 $c4 v6 $c6 pass $cp" "$(grep -iE "ingress|upstream" "$TMP/daemon.log" | tail -6)"
sleep 0.3
l=$(grep '"path":"/abort/in4"' "$TMP/faults.log")
check "  ... its fault line names the pod served and the real caller" "$l" '"namespace":"shop"' \
    '"pod":"checkout-b"' '"node":"n1"' '"dst":"10\.77\.12\.2:'"$INPORT"'"' '"src":"10\.77\.12\.1:'

# ---- changes followed: labels, a new pod, endpoints ----
kapi PATCH /api/v1/namespaces/shop/pods/web-d '{"metadata":{"labels":{"app":"checkout"}}}' >/dev/null
ms=$(wait_code "$CGD/ctr1" d "http://10.77.200.10:$SVCPORT/abort/d2" 503 5)
ms_ok "$ms" 1500 && ok "web-d relabelled app=checkout: enrolled and faulted in ${ms} ms (nested kubelet.slice layout)" ||
    bad "relabel to enrol: $ms"
kapi PATCH /api/v1/namespaces/shop/pods/checkout-a '{"metadata":{"labels":{"canary":"yes"}}}' >/dev/null
ms=$(wait_code "$CGA/ctr1" a "http://10.77.200.10:$SVCPORT/abort/a2" 200 5)
ms_ok "$ms" 1500 && ok "checkout-a labelled canary=yes (DoesNotExist no longer holds): released in ${ms} ms" ||
    bad "relabel to release: $ms"
[ "$(pod_state shop/checkout-a)" = none ] && ok "  ... and gone from the status" || bad "a still listed: $(pod_state shop/checkout-a)"
n=$(bpftool cgroup show "$CGA" 2>/dev/null | grep -c '^[0-9]')
[ "$n" = 0 ] && ok "  ... its cgroup has no hook left" || bad "hooks left on checkout-a: $n"
kapi PATCH /api/v1/namespaces/shop/pods/checkout-a '{"metadata":{"labels":{"canary":null}}}' >/dev/null
wait_code "$CGA/ctr1" a "http://10.77.200.10:$SVCPORT/abort/a3" 503 5 >/dev/null &&
    ok "checkout-a without the canary label: enrolled again" || bad "checkout-a back"

# A new pod: in the API first (no cgroup yet), then the kubelet makes its cgroup.
UE=$(add_pod shop checkout-e '{"app":"checkout"}' Guaranteed)
ms=$(wait_state shop/checkout-e "waiting for cgroup" 3) && ok "a new pod without its cgroup yet: 'waiting for cgroup'" ||
    bad "checkout-e before its cgroup: $ms"
mknet e 5
CGE=$CG2/kubepods/pod$UE
t0=$(date +%s%N)
mkcg "$CGE/ctr1"
pause_in "$CGE/ctr1" e
ms=$(wait_state shop/checkout-e steered 5)
[[ "$ms" =~ ^[0-9]+$ ]] && tot=$((($(date +%s%N) - t0) / 1000000)) && [ "$tot" -le 1500 ] &&
    ok "its cgroup appears: steered ${tot} ms later" || bad "checkout-e after its cgroup: $ms (${tot:-?} ms)"
c=$(curl_in "$CGE/ctr1" e "http://10.77.200.10:$SVCPORT/abort/e")
[ "$c" = 503 ] && ok "  ... and faulted" || bad "checkout-e: $c"

# Endpoints: 10.77.12.1 becomes ready, 10.77.11.1 goes.
c=$(curl_in "$CGA/ctr1" a "http://10.77.12.1:$EPPORT/abort/new-ep")
[ "$c" = 200 ] && ok "an address not among the endpoints: untouched" || bad "new endpoint before: $c"
kapi PUT /apis/discovery.k8s.io/v1/namespaces/shop/endpointslices/orders-abc \
    "$(slice '[{"addresses":["10.77.12.1"],"conditions":{"ready":true}}]')" >/dev/null
ms=$(wait_code "$CGA/ctr1" a "http://10.77.12.1:$EPPORT/abort/new-ep2" 503 5)
ms_ok "$ms" 1500 && ok "the EndpointSlice changes: the new endpoint is faulted in ${ms} ms" || bad "new endpoint: $ms"
ms=$(wait_code "$CGA/ctr1" a "http://10.77.11.1:$EPPORT/abort/old-ep" 200 5)
ms_ok "$ms" 1500 && ok "  ... and the old one is no longer steered" || bad "old endpoint: $ms"

# ---- the API server misbehaves; faultline keeps its state and recovers ----
probe() { curl_in "$CGB/ctr1" b "http://10.77.200.10:$SVCPORT/abort/probe"; }

# ---- the cluster halt: ConfigMap faultline-halt in the daemon's namespace ----
HALT_CM=/api/v1/namespaces/faultline-system/configmaps
wait_probe() { # CODE SECS: prints the ms until probe() answers CODE, or "never"
    local t0 c i
    t0=$(date +%s%N)
    for ((i = 0; i < $2 * 20; i++)); do
        c=$(probe)
        [ "$c" = "$1" ] && { echo $((($(date +%s%N) - t0) / 1000000)); return 0; }
        sleep 0.05
    done
    echo "never (last $c)"
    return 1
}
[ "$(probe)" = 503 ] || bad "before the cluster halt: probe not faulted"
kapi POST /api/v1/namespaces '{"metadata":{"name":"faultline-system"}}' >/dev/null
out=$(kapi POST "$HALT_CM" '{"metadata":{"name":"faultline-halt"},"data":{"reason":"game day over"}}')
jq -e '.metadata.name == "faultline-halt"' <<<"$out" >/dev/null || bad "creating the ConfigMap" "$out"
ms=$(wait_probe 200 5)
ms_ok "$ms" 1000 && ok "ConfigMap faultline-halt created: every fault stops within ${ms} ms" || bad "cluster halt: $ms"
s=$(status_json)
[ "$(jq -r .halted <<<"$s")" = true ] && jq -r .halt_reason <<<"$s" | grep -q 'ConfigMap faultline-system/faultline-halt.*game day over' &&
    [ "$(jq -r .kubernetes.cluster_halt.halted <<<"$s")" = true ] &&
    ok "  ... status: halted, with the ConfigMap and its data.reason" || bad "halt status" "$(jq '{halted,halt_reason,k:.kubernetes.cluster_halt}' <<<"$s")"
out=$("$CTL" --admin "$TMP/admin.sock" resume 2>&1) && bad "faultctl resume during a cluster halt succeeded" "$out" ||
    { grep -q 'delete ConfigMap faultline-system/faultline-halt' <<<"$out" &&
        ok "  ... faultctl resume is refused and says to delete the ConfigMap" || bad "resume refusal" "$out"; }
kapi DELETE "$HALT_CM/faultline-halt" >/dev/null
ms=$(wait_probe 503 5)
ms_ok "$ms" 1000 && ok "ConfigMap deleted: faults resume within ${ms} ms" || bad "cluster resume: $ms"
# Cut off from the API server while halted: the halt stays, and it says so.
kapi POST "$HALT_CM" '{"metadata":{"name":"faultline-halt"},"data":{"reason":"again"}}' >/dev/null
ms=$(wait_probe 200 5) || bad "second cluster halt: $ms"
kapi_ctl fail "path=$HALT_CM&status=503&count=100000&method=GET"
kapi_ctl cut
sleep 3
kapi DELETE "$HALT_CM/faultline-halt" >/dev/null # unseen: the watch fails
c=$(probe)
s=$(status_json)
[ "$c" = 200 ] && [ "$(jq -r .kubernetes.cluster_halt.current <<<"$s")" = false ] &&
    [ "$(jq -r .kubernetes.cluster_halt.halted <<<"$s")" = true ] &&
    grep -q 'the last known cluster halt state stays in force' "$TMP/daemon.log" &&
    ok "the API server fails: the last known halt stays, status says it is not current, the log says so" ||
    bad "halt while the API fails: probe $c" "$(jq -c .kubernetes.cluster_halt <<<"$s"; grep -i halt "$TMP/daemon.log" | tail -3)"
kapi_ctl unfail
ms=$(wait_probe 503 35)
[[ "$ms" =~ ^[0-9]+$ ]] && ok "  ... it answers again: the deletion is seen, faults resume (${ms} ms)" || bad "after the API returns: $ms"

relabel_check() { # APP [SECS]: relabelling web-d must still be followed
    local v=$1
    kapi PATCH /api/v1/namespaces/shop/pods/web-d "{\"metadata\":{\"labels\":{\"app\":\"$v\"}}}" >/dev/null
    if [ "$v" = checkout ]; then want=503; else want=200; fi
    wait_code "$CGD/ctr1" d "http://10.77.200.10:$SVCPORT/abort/rl-$v" $want "${2:-8}"
}
kapi_restart || { bad "API server restart"; exit 1; }
[ "$(probe)" = 503 ] && ok "API server restarted: requests through the proxy answered as before" || bad "probe after restart"
ms=$(relabel_check web) && ok "  ... and a label change after it is followed (${ms} ms)" || bad "after restart: $ms"
kapi_ctl cut
ms=$(relabel_check checkout) && ok "a watch cut mid-stream: the next change is followed (${ms} ms)" || bad "after cut: $ms"
# The next watch of each resource goes silent: no event, no bookmark, never ends.
kapi_ctl silence count=4
kapi_ctl cut
sleep 1
kapi PATCH /api/v1/namespaces/shop/pods/web-d '{"metadata":{"labels":{"app":"web"}}}' >/dev/null
ms=$(wait_code "$CGD/ctr1" d "http://10.77.200.10:$SVCPORT/abort/silent" 200 20)
[[ "$ms" =~ ^[0-9]+$ ]] && [ "$ms" -ge 5000 ] && [ "$ms" -le 16000 ] &&
    ok "a watch silent past --kube-watch-timeout 5s is dropped and started again: the change is followed after ${ms} ms" ||
    bad "silent watch: $ms" "$(grep -i silent "$TMP/daemon.log")"
grep -q "the watch was silent for 10 s" "$TMP/daemon.log" && ok "  ... and it says so" || bad "no silence message" "$(tail -5 "$TMP/daemon.log")"
kapi_ctl compact
kapi_ctl error410
ms=$(relabel_check web) && ok "410 Gone (ERROR event after a compaction): listed again, changes followed (${ms} ms)" ||
    bad "after 410: $ms"
r=$(status_json | jq .kubernetes.relists)
[ "$r" -ge 1 ] 2>/dev/null && ok "  ... status counts the re-list ($r)" || bad "relists: $r"
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$KAPI_TOKEN.new" && mv "$KAPI_TOKEN.new" "$KAPI_TOKEN"
kapi_ctl cut
ms=$(relabel_check checkout) && ok "the token rotated (tokenFile re-read): changes followed (${ms} ms)" || bad "after rotation: $ms"
kapi_ctl fail "path=/api/v1/pods&status=500&count=100000"
kapi_ctl cut
t_end=$(($(date +%s) + 10))
bad_probes=0 probes=0
while [ "$(date +%s)" -lt "$t_end" ]; do
    probes=$((probes + 1))
    [ "$(probe)" = 503 ] || bad_probes=$((bad_probes + 1))
    sleep 0.5
done
e=$(status_json | jq -r '.kubernetes.error // ""')
[ "$bad_probes" = 0 ] && [ "$probes" -ge 10 ] && ok "the API server answers 500 for 10 s: $probes requests through the proxy all answered as before" ||
    bad "during 500s: $bad_probes of $probes probes wrong"
grep -q "HTTP 500" <<<"$e" && ok "  ... status says what fails: $e" || bad "status error during 500s: $e"
code_h=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$TMP/admin.sock" http://x/healthz)
code_r=$(curl -s -o "$TMP/readyz" -w '%{http_code}' --unix-socket "$TMP/admin.sock" http://x/readyz)
[ "$code_h" = 200 ] && [ "$code_r" = 503 ] && grep -q 'HTTP 500' "$TMP/readyz" &&
    ok "  ... /healthz stays 200 (liveness), /readyz is 503 and says why" ||
    bad "probes during 500s: healthz $code_h readyz $code_r" "$(cat "$TMP/readyz")"
kapi_ctl unfail
# After 10 s of failures the backoff (jittered, doubling to 30 s) may wait up
# to 30 s before the next try.
ms=$(relabel_check web 35) && ok "  ... and once it answers again, changes are followed (${ms} ms, the backoff's wait)" ||
    bad "after 500s: $ms"
n=$(grep -c 'HTTP 500' "$TMP/daemon.log")
[ "$n" = 1 ] && ok "  ... told once on stderr, not once per retry" || bad "500 messages on stderr: $n"
q=$(curl -sS --cacert "$KAPI_DIR/ca.crt" "$KAPI_URL/_test/requests")
check "the client lists in pages and watches from a resourceVersion with bookmarks" "$q" \
    '"limit": "500"' '"allowWatchBookmarks": "true"' '"fieldSelector": "spec.nodeName=n1"' \
    '"labelSelector": "kubernetes.io/service-name=orders"' '"resourceVersion": "[0-9]+"'
stop_daemon
rc=$?
[ $rc = 0 ] && ok "SIGTERM: exit 0" || bad "exit status $rc" "$(tail -5 "$TMP/daemon.log")"

# ---- bad credentials, an unreachable server, a wrong CA: one clear message each ----
try_bad() { # WHAT PATTERN KUBECONFIG
    start_daemon --kubeconfig "$3" || return
    sleep 3
    local n
    n=$(grep -c "$2" "$TMP/daemon.log")
    [ "$n" = 1 ] && ok "$1: one message: $(grep -m1 "$2" "$TMP/daemon.log" | sed 's/.*warn: //' | cut -c1-160)" ||
        bad "$1: $n messages matching '$2'" "$(cat "$TMP/daemon.log")"
    [ "$(probe)" = 200 ] && ok "  ... and the daemon serves (nothing selected)" || bad "$1: probe"
    s=$(status_json)
    [ "$(jq -r .halted <<<"$s")" = true ] && jq -r .halt_reason <<<"$s" | grep -q 'cluster halt state not known yet' &&
        ok "  ... and stays halted: the cluster halt state is not known yet" ||
        bad "$1: not held halted" "$(jq -c '{halted,halt_reason}' <<<"$s")"
    stop_daemon
}
sed "s|tokenFile: .*|token: wrong-token|" "$KAPI_KUBECONFIG" >"$TMP/kc-badtoken"
try_bad "a wrong token" "401 Unauthorized" "$TMP/kc-badtoken"
sed "s|server: .*|server: https://127.0.0.1:18899|" "$KAPI_KUBECONFIG" >"$TMP/kc-down"
try_bad "an unreachable API server" "cannot reach the API server https://127.0.0.1:18899" "$TMP/kc-down"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/o.key" -out "$TMP/other-ca.crt" -days 1 -subj /CN=other >/dev/null 2>&1
sed "s|certificate-authority-data: .*|certificate-authority-data: $(base64 -w0 "$TMP/other-ca.crt")|" "$KAPI_KUBECONFIG" >"$TMP/kc-ca"
try_bad "a CA that did not sign the server's certificate" "does not verify against the CA" "$TMP/kc-ca"

# ---- client certificates; kubectl against the same server ----
start_daemon --kubeconfig "$KAPI_KUBECONFIG_CERT" || exit 1
ms=$(wait_state shop/checkout-b steered 5) && ok "a client-certificate kubeconfig works too" || bad "client cert: $ms"
stop_daemon
out=$(kubectl --kubeconfig "$KAPI_KUBECONFIG" get pods -n shop -l app=checkout 2>&1)
check "kubectl get pods -n shop -l app=checkout against the test API server" "$out" '^NAME ' '^checkout-b ' '!^checkout-c'
out=$(kubectl --kubeconfig "$KAPI_KUBECONFIG" get pods -A --field-selector spec.nodeName=n1 2>&1)
check "kubectl get pods -A --field-selector spec.nodeName=n1" "$out" '^shop +checkout-a ' '^other +checkout-c '

cat "$TMP/daemon.log" >>"$TMP/all-daemons.log"
n=$(grep -cE 'Sanitizer|runtime error:' "$TMP/all-daemons.log")
[ "$n" = 0 ] && ok "no sanitizer report from the $NDAEMON daemons" ||
    bad "sanitizer reports: $n" "$(grep -E -A20 'Sanitizer|runtime error:' "$TMP/all-daemons.log" | head -60)"
cleanup
trap - EXIT
left=$(ip netns list | grep -c "^$T"; ls -d "$CG2"/kubepods "$CG2"/kubepods.slice "$CG2"/kubelet.slice 2>/dev/null | wc -l)
[ "$(echo $left | tr -d ' ')" = 00 ] && ok "cleanup: no netns or kubelet cgroup left" || bad "left behind: $left"
say "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
