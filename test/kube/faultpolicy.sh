#!/bin/bash
# Kubernetes, part 2, end to end: FaultPolicy resources run by two daemons
# standing for two nodes (faultline run --kubernetes --node n1|n2, no -f),
# against the project's test API server with the CRD of examples/kubernetes/,
# driven by the real kubectl: create, modify, an invalid spec, delete, two
# namespaces, a policy naming another namespace, overlapping policies, TTL
# expiry, per-node status by server-side apply, the cluster halt. Pods are
# kubelet-shaped cgroups with a netns and a process standing for the pause
# container. Needs root, cgroup v2 and BPF. Ports 18900-18949. Removes
# everything it made, also on failure.
#
# usage: test/kube/faultpolicy.sh [path/to/faultline]
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$(readlink -f "${1:-$HERE/../../build/faultline}")
CTL=$(dirname "$BIN")/faultctl
PEER=$HERE/../bpf/tp_peer.py
T=flf$$
TMP=$(mktemp -d /tmp/fl-fp-test.XXXXXX)
SRV=10.77.210.10 # the destination every policy here names (a host address)
SPORT=18910
PASS=0 FAIL=0
PIDS=()
D1= D2=
MADE=()

# shellcheck source=test/bpf/lib.sh
source "$HERE/../bpf/lib.sh"
# shellcheck source=test/kube/lib.sh
source "$HERE/lib.sh"

cleanup() {
    set +e
    for p in $D1 $D2; do kill -9 "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    kapi_stop
    for ns in a b c; do
        for p in $(ip netns pids "$T$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    done
    wait 2>/dev/null
    for ns in a b c; do
        ip netns del "$T$ns" 2>/dev/null
        ip link del "${T}v$ns" 2>/dev/null
    done
    ip addr del $SRV/32 dev lo 2>/dev/null
    for ((i = ${#MADE[@]} - 1; i >= 0; i--)); do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            rmdir "${MADE[i]}" 2>/dev/null
            [ -d "${MADE[i]}" ] || break
            sleep 0.2
        done
    done
    for p in ${DCGS:-}; do rmdir "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { say "test/kube: needs root"; exit 1; }
[ -x "$BIN" ] || { say "test/kube: $BIN not built"; exit 1; }
for t in curl python3 ip jq openssl kubectl; do
    command -v $t >/dev/null || { say "test/kube: needs $t"; exit 1; }
done
CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -n "$CG2" ] || { say "test/kube: no cgroup2 mount"; exit 1; }
for d in kubepods kubepods.slice; do
    [ -e "$CG2/$d" ] && { say "test/kube: $CG2/$d exists (a real kubelet?); not touching it"; exit 1; }
done

mkcg() {
    local p=$1 parts=() d
    while [ ! -d "$p" ]; do parts=("$p" "${parts[@]}"); p=$(dirname "$p"); done
    for d in "${parts[@]}"; do mkdir "$d" && MADE+=("$d") || return 1; done
}
mknet() { # x n: netns $T<x>, eth0 10.77.2n.2, host end .1
    local ns=$T$1 v=${T}v$1
    ip netns add "$ns" && ip link add "$v" type veth peer name eth0 netns "$ns" &&
        ip addr add "10.77.2$2.1/24" dev "$v" && ip link set "$v" up &&
        ip -n "$ns" link set lo up && ip -n "$ns" addr add "10.77.2$2.2/24" dev eth0 &&
        ip -n "$ns" link set eth0 up && ip -n "$ns" route add default via "10.77.2$2.1"
}
in_pod() {
    local cg=$1 ns=$2
    shift 2
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" ip netns exec "$T$ns" "$@"
}
bg() { "$@" >>"$TMP/bg.log" 2>&1 & PIDS+=($!); disown $!; }
code() { # POD PATH: the status code of one request from the pod to the server
    local cg=${CG[$1]} ns=${NS[$1]}
    in_pod "$cg" "$ns" curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$SRV:$SPORT$2" 2>&1
}
codes() { # POD PATH N: N requests on one connection, one code a line
    local cg=${CG[$1]} ns=${NS[$1]} urls=() i
    for ((i = 0; i < $3; i++)); do urls+=("http://$SRV:$SPORT$2/$i"); done
    in_pod "$cg" "$ns" curl -sS -m 20 -o /dev/null -w '%{http_code}\n' "${urls[@]}" 2>&1
}
wait_code() { # POD PATH CODE SECS: ms until the code is CODE, or "never (LAST)"
    local t0 c i
    t0=$(date +%s%N)
    for ((i = 0; i < $4 * 20; i++)); do
        c=$(code "$1" "$2")
        [ "$c" = "$3" ] && { echo $((($(date +%s%N) - t0) / 1000000)); return 0; }
        sleep 0.05
    done
    echo "never (last $c)"
    return 1
}
ms_ok() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -le "$2" ]; }
k() { kapi_kubectl "$@"; }
fpj() { k get fp -n "$1" "$2" -o json 2>/dev/null; }
cond() { # NS NAME TYPE: "status reason message" of the condition
    fpj "$1" "$2" | jq -r --arg t "$3" '.status.conditions[]? | select(.type == $t) | "\(.status) \(.reason) \(.message)"'
}
wait_cond() { # NS NAME TYPE STATUS SECS
    local i c
    for ((i = 0; i < $5 * 10; i++)); do
        c=$(cond "$1" "$2" "$3")
        [ "${c%% *}" = "$4" ] && return 0
        sleep 0.1
    done
    return 1
}
st() { "$CTL" --admin "$TMP/$1.sock" -o json status 2>/dev/null; }
show() { sed 's/^/    | /' <<<"$1"; } # what a user sees, in the log

# ---- the cluster ----
kapi_start "$TMP/api" || { say "test API server did not start"; exit 1; }
out=$(k apply -f "$ROOT/examples/kubernetes/crd.yaml" 2>&1)
check "the CRD installs with kubectl apply" "$out" 'faultpolicies.faultline.dev (created|configured)'
for n in shop team faultline-system; do k create namespace $n >/dev/null; done
pod_json() { # NS NAME LABELS NODE
    printf '{"metadata":{"name":"%s","namespace":"%s","labels":%s},' "$2" "$1" "$3"
    printf '"spec":{"nodeName":"%s","containers":[{"name":"app","image":"app"}]},' "$4"
    printf '"status":{"phase":"Running","qosClass":"Burstable"}}'
}
add_pod() { kapi POST "/api/v1/namespaces/$1/pods" "$(pod_json "$@")" | jq -r .metadata.uid; }
declare -A CG NS
U1=$(add_pod shop web-1 '{"app":"web"}' n1)
U2=$(add_pod team api-1 '{"app":"api"}' n1)
U3=$(add_pod shop web-2 '{"app":"web"}' n2)
CG[web1]=$CG2/kubepods/burstable/pod$U1/ctr
CG[api1]=$CG2/kubepods/burstable/pod$U2/ctr
CG[web2]=$CG2/kubepods/burstable/pod$U3/ctr
NS[web1]=a NS[api1]=b NS[web2]=c
for p in web1 api1 web2; do mkcg "${CG[$p]}" || { say "cannot make ${CG[$p]}"; exit 1; }; done
mknet a 1 && mknet b 2 && mknet c 3 || { say "pod network setup failed"; exit 1; }
for p in web1 api1 web2; do bg in_pod "${CG[$p]}" "${NS[$p]}" sleep 900; done
ip addr add $SRV/32 dev lo || { say "server address"; exit 1; }
bg python3 "$PEER" server "$SRV:$SPORT"
for _ in $(seq 50); do grep -q READY "$TMP/bg.log" && break; sleep 0.1; done

export POD_NAMESPACE=faultline-system
MPORT=18940 # each daemon's metrics port: n1 on 127.0.0.2, n2 on 127.0.0.3
start() { # NODE IP: a daemon for node NODE, without a policy file
    "$BIN" run --kubernetes --kubeconfig "$KAPI_KUBECONFIG" --node "$1" --kube-watch-timeout 5s \
        --metrics-listen "$2:$MPORT" \
        --admin "$TMP/$1.sock" --fault-log "$TMP/$1.faults" 2>"$TMP/$1.log" >/dev/null &
    local pid=$!
    DCGS="${DCGS:-} $CG2/faultline-daemon-$pid"
    for _ in $(seq 100); do
        grep -q ' ready ' "$TMP/$1.log" 2>/dev/null && { echo $pid; return 0; }
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    echo $pid
    return 1
}
D1=$(start n1 127.0.0.2) || bad "daemon n1 did not start" "$(cat "$TMP/n1.log")"
D2=$(start n2 127.0.0.3) || bad "daemon n2 did not start" "$(cat "$TMP/n2.log")"
[ -n "$D1" ] && [ -n "$D2" ] || exit 1
# The DaemonSet's pods, as the API server would have them (hostNetwork: the node's IP).
for n in 1 2; do
    kapi POST /api/v1/namespaces/faultline-system/pods "{\"metadata\":{\"name\":\"faultline-n$n\",\"labels\":{\"app.kubernetes.io/name\":\"faultline\"}},\"spec\":{\"nodeName\":\"n$n\",\"hostNetwork\":true,\"containers\":[{\"name\":\"faultline\",\"image\":\"faultline\",\"ports\":[{\"name\":\"metrics\",\"containerPort\":$MPORT}]}]},\"status\":{\"phase\":\"Running\",\"podIP\":\"127.0.0.$((n + 1))\"}}" >/dev/null
done
kf() { KUBECONFIG=$KAPI_KUBECONFIG PATH=$ROOT/src/cli:$PATH kubectl faultline "$@"; } # the plugin
for _ in $(seq 60); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$TMP/n1.sock" http://x/readyz)" = 200 ] && break
    sleep 0.05
done
s=$(st n1)
[ "$(jq -r '.policies | length' <<<"$s")" = 0 ] && [ "$(jq -r .kubernetes.error <<<"$s")" = null ] &&
    ok "run --kubernetes without -f: ready, no policy, the FaultPolicy watch is well" ||
    bad "daemon without -f" "$(jq -c '{policies,kubernetes}' <<<"$s")"

# ---- create: faults within 1 s on both nodes ----
fp_web() { # NAME PERCENT [EXTRA-RULE-YAML]
    cat <<EOF
apiVersion: faultline.dev/v1
kind: FaultPolicy
metadata: {name: $1, namespace: shop}
spec:
  targets:
    - name: web-out
      pods: {selector: {matchLabels: {app: web}}}
      destination: {ip: $SRV, port: $SPORT}
  rules:
    - name: abort-x
      match: {path: {prefix: /x}}
      fault: {abort: {status: 503, percent: $2}}
${3:-}
EOF
}
fp_web web-chaos 100 >"$TMP/a.yaml"
t0=$(date +%s%N)
out=$(k create -f "$TMP/a.yaml" 2>&1)
check "kubectl create -f a FaultPolicy" "$out" 'faultpolicy.faultline.dev/web-chaos created'
ms=$(wait_code web1 /x/1 503 3)
ms_ok "$ms" 1000 && ok "node n1: the FaultPolicy's fault is injected ${ms} ms after kubectl create" ||
    bad "n1 after create: $ms" "$(tail -5 "$TMP/n1.log")"
ms=$(wait_code web2 /x/1 503 3)
ms_ok "$ms" 1000 && ok "node n2: injected too (${ms} ms later)" || bad "n2 after create: $ms" "$(tail -5 "$TMP/n2.log")"
[ "$(code api1 /x/1)" = 200 ] && ok "team/api-1 (not selected) is untouched" || bad "api-1 touched"
[ "$(code web1 /y)" = 200 ] && ok "a request the rule does not match passes (200)" || bad "/y"
sleep 0.3
l=$(grep '"path":"/x/1"' "$TMP/n1.faults" | head -1)
check "the fault line names the policy, rule, namespace, pod and node" "$l" '"policy":"web-chaos"' \
    '"rule":"abort-x"' '"namespace":"shop"' '"pod":"web-1"' '"node":"n1"'

# ---- status: each node its own entry ----
for _ in $(seq 80); do
    j=$(fpj shop web-chaos)
    [ "$(jq '[.status.nodes[]?] | length' <<<"$j")" = 2 ] && [ "$(jq .status.pods <<<"$j")" = 2 ] && break
    sleep 0.1
done
check "status.nodes has an entry per node, pods 1 each, totals summed" \
    "$(jq -c '{pods: .status.pods, nodes: [.status.nodes[] | {node, pods}] | sort_by(.node)}' <<<"$j")" \
    '"pods":2' '"node":"n1","pods":1' '"node":"n2","pods":1'
check "  ... the rule's faults counted per node, observedGeneration and Applied" \
    "$(jq -c '{g: .status.observedGeneration, n1: (.status.nodes[] | select(.node == "n1") | .injected), c: [.status.conditions[] | "\(.type)=\(.status)/\(.reason)"]}' <<<"$j")" \
    '"g":1' '"abort-x":[1-9]' 'Applied=True/Applied' 'Invalid=False/Valid' 'Expired=False/Active' 'Halted=False/NotHalted'
m=$(k get fp -n shop web-chaos -o json --show-managed-fields | jq -r '.metadata.managedFields[]? | select(.subresource == "status") | .manager' | sort | tr '\n' ' ')
[ "$m" = "faultline-n1 faultline-n2 " ] && ok "field managers faultline-n1 and faultline-n2 own the status" || bad "managers: $m"
out=$(k get fp -n shop 2>&1)
show "\$ kubectl get fp -n shop"$'\n'"$out"
check "kubectl get fp prints Pods, Injected, Status, Age" "$out" '^NAME +PODS +INJECTED +STATUS +AGE' \
    '^web-chaos +2 +[1-9][0-9]* +Applied +[0-9]+s'
out=$(kf status 2>&1); rc=$?
show "\$ kubectl faultline status"$'\n'"$out"
check "kubectl faultline status: both nodes' daemons, the policy with its pods and faults by node" "$out" \
    '^cluster halt: off' '^n1 +faultline-n1 +injecting +1 ' '^n2 +faultline-n2 +injecting +1 ' \
    '^shop/web-chaos +Applied +2 +[1-9][0-9]* +n1: 1/[1-9][0-9]*, n2: 1/[0-9]+'
j=$(kf status -o json 2>&1)
[ "$(jq -r '[.nodes[] | select(.reachable) | .node] | join(",")' <<<"$j")" = n1,n2 ] &&
    [ "$(jq -r '.policies[0] | "\(.namespace)/\(.name) \(.pods)"' <<<"$j")" = "shop/web-chaos 2" ] &&
    ok "  ... and -o json, with the same figures" || bad "kubectl faultline status -o json" "$j"
w0=$(kapi_get_ctl requests | jq -s '[.[] | select(.method == "PATCH" and (.path | endswith("/status")))] | length')
sleep 6
w1=$(kapi_get_ctl requests | jq -s '[.[] | select(.method == "PATCH" and (.path | endswith("/status")))] | length')
[ $((w1 - w0)) -le 2 ] && ok "nothing changes: at most one status write per node in 6 s ($((w1 - w0)))" ||
    bad "status writes while idle: $((w1 - w0))"

# ---- modify the percent: the new share ----
fp_web web-chaos 30 >"$TMP/a.yaml"
k apply -f "$TMP/a.yaml" >/dev/null 2>&1
for _ in $(seq 40); do
    [ "$(st n1 | jq -r '[.policies[] | select(.id == "shop/web-chaos")][0].generation')" = 2 ] && break
    sleep 0.05
done
n=$(codes web1 /x/p 400 | grep -c 503)
[ "$n" -ge 80 ] && [ "$n" -le 160 ] && ok "percent 100 -> 30 with kubectl apply: $n of 400 aborted" ||
    bad "percent 30: $n of 400"

# ---- an invalid spec: nothing changes, Invalid ----
fp_web web-chaos 30 '    - name: bad
      "on": [no-such-target]
      fault: {abort: {status: 500}}' >"$TMP/bad.yaml"
out=$(k apply -f "$TMP/bad.yaml" 2>&1) || bad "kubectl apply of the spec the loader refuses" "$out"
wait_cond shop web-chaos Invalid True 8 && c=$(cond shop web-chaos Invalid)
check "an invalid spec: condition Invalid with the loader's message and the path in the spec" "${c:-none}" \
    '^True Invalid ' 'spec\.rules\[1\]\.on' 'no-such-target'
show "\$ kubectl get fp -n shop web-chaos -o jsonpath='{.status.conditions[?(@.type==\"Invalid\")].message}'"$'\n'"$(k get fp -n shop web-chaos -o jsonpath='{.status.conditions[?(@.type=="Invalid")].message}')"
check "  ... Applied says the previous generation stays" "$(cond shop web-chaos Applied)" \
    '^True Invalid generation 3 is invalid; generation 2 stays applied'
n=$(codes web1 /x/q 200 | grep -c 503)
[ "$n" -ge 30 ] && [ "$n" -le 90 ] && ok "  ... and the old spec still runs: $n of 200 aborted" || bad "after invalid: $n of 200"
grep -q 'FaultPolicy shop/web-chaos: generation 3 is invalid' "$TMP/n1.log" &&
    ok "  ... the daemon logs it" || bad "no log of the invalid spec" "$(tail -5 "$TMP/n1.log")"
fp_web web-chaos 100 >"$TMP/a.yaml"
k apply -f "$TMP/a.yaml" >/dev/null 2>&1
wait_cond shop web-chaos Invalid False 8 && ok "a valid spec again: Invalid goes False" || bad "Invalid after fix: $(cond shop web-chaos Invalid)"

# ---- two namespaces on the same node; another namespace refused ----
cat >"$TMP/team.yaml" <<EOF
apiVersion: faultline.dev/v1
kind: FaultPolicy
metadata: {name: web-chaos, namespace: team}
spec:
  targets:
    - name: api-out
      pods: {selector: {matchLabels: {app: api}}}
      destination: {ip: $SRV, port: $SPORT}
  rules:
    - name: abort-x
      match: {path: {prefix: /x}}
      fault: {abort: {status: 502}}
EOF
k create -f "$TMP/team.yaml" >/dev/null 2>&1
ms=$(wait_code api1 /x/t 502 3)
ms_ok "$ms" 1000 && [ "$(code web1 /x/s)" = 503 ] &&
    ok "team/web-chaos (same names, other namespace): api-1 gets its 502, web-1 still shop's 503" ||
    bad "two namespaces: api1 $ms web1 $(code web1 /x/s)"
show "\$ kubectl get fp -A"$'\n'"$(k get fp -A 2>&1)"
out=$("$CTL" --admin "$TMP/n1.sock" rules 2>&1)
show "\$ faultctl rules (node n1)"$'\n'"$out"
check "faultctl rules names them POLICY/RULE" "$out" 'shop/web-chaos/abort-x' 'team/web-chaos/abort-x'
out=$("$CTL" --admin "$TMP/n1.sock" disable abort-x 2>&1); rc=$?
[ $rc != 0 ] && grep -q 'more than one rule' <<<"$out" && ok "a bare ambiguous rule name is refused, with the candidates" ||
    bad "ambiguous disable: rc $rc" "$out"
out=$("$CTL" --admin "$TMP/n1.sock" disable team/web-chaos/abort-x 2>&1); rc=$?
[ $rc = 0 ] && [ "$(code api1 /x/u)" = 200 ] && [ "$(code web1 /x/u)" = 503 ] &&
    ok "faultctl disable team/web-chaos/abort-x: that rule only" || bad "disable by POLICY/RULE: rc $rc" "$out"
"$CTL" --admin "$TMP/n1.sock" enable team/web-chaos/abort-x >/dev/null 2>&1
sed 's/pods: {selector: {matchLabels: {app: api}}}/pods: {selector: {matchLabels: {app: web}, namespace: shop}}/; s/name: web-chaos, namespace: team/name: reach-out, namespace: team/' \
    "$TMP/team.yaml" >"$TMP/other-ns.yaml"
out=$(k create -f "$TMP/other-ns.yaml" 2>&1); rc=$?
[ $rc != 0 ] && grep -q 'spec.targets\[0\].pods.selector.namespace' <<<"$out" &&
    ok "a policy whose selector names another namespace: refused by the CRD's schema, the path named" ||
    bad "other-namespace policy: rc $rc" "$out"
[ "$(code web1 /x/v)" = 503 ] && ok "  ... and nothing changes (web-1 still gets shop's 503)" || bad "other-ns applied?"
# The loader refuses it too, where the schema is not in the way (faultline validate).
jq -n --arg s "$SRV" '{apiVersion: "faultline.dev/v1", kind: "FaultPolicy",
    metadata: {name: "reach-out", namespace: "team"},
    spec: {targets: [{name: "t", pods: {selector: {matchLabels: {app: "web"}, namespace: "shop"}},
                      destination: {ip: $s}}], rules: [{name: "r", fault: {abort: {status: 500}}}]}}' >"$TMP/other-ns.json"
out=$("$BIN" validate -f "$TMP/other-ns.json" 2>&1); rc=$?
[ $rc = 1 ] && grep -q 'spec.targets\[0\].pods.selector.namespace' <<<"$out" &&
    ok "  ... and by the loader (faultline validate): exit 1, the path and what to do" || bad "validate other-ns: rc $rc" "$out"

# ---- faultctl apply -f: the file's policy only, beside the resources ----
cat >"$TMP/local.yaml" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: local}
spec:
  listeners: [{name: front, listen: 127.0.0.1:18920, upstream: "$SRV:$SPORT"}]
  rules:
    - name: abort-x
      match: {path: {prefix: /x}}
      fault: {abort: {status: 500}}
EOF
out=$("$CTL" --admin "$TMP/n1.sock" apply -f "$TMP/local.yaml" 2>&1); rc=$?
c=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:18920/x/l 2>&1)
[ $rc = 0 ] && [ "$c" = 500 ] && [ "$(code web1 /x/l)" = 503 ] && [ "$(code api1 /x/l)" = 502 ] &&
    ok "faultctl apply -f a file policy: its listener faults (500), the FaultPolicies go on (503, 502)" ||
    bad "apply beside resources: rc $rc, listener $c, web1 $(code web1 /x/l), api1 $(code api1 /x/l)" "$out"
ids=$(st n1 | jq -r '[.policies[] | "\(.id):\(.source)"] | join(" ")')
[ "$ids" = "local:file shop/web-chaos:kubernetes team/web-chaos:kubernetes" ] &&
    ok "  ... faultctl status lists the set: the file's policy first, then each FaultPolicy" || bad "the set: $ids"
out=$("$CTL" --admin "$TMP/n1.sock" -o table status 2>&1)
check "  ... and says so as a table" "$out" '^policies +local \(file\)' 'shop/web-chaos \(kubernetes\)' \
    '^faultpolicy +[a-z]+/web-chaos: applied' ' shop/web-chaos: applied \(generation'

# ---- overlapping policies: the older wins, the newer gets Conflict ----
sed 's/name: web-chaos, namespace: shop/name: web-late, namespace: shop/; s/status: 503/status: 504/' "$TMP/a.yaml" >"$TMP/late.yaml"
k create -f "$TMP/late.yaml" >/dev/null 2>&1
wait_cond shop web-late Conflict True 8; c=$(cond shop web-late Conflict)
check "a newer policy overlapping an older one: Conflict naming it" "${c:-none}" '^True Overlap .*shop/web-chaos'
[ "$(code web1 /x/w)" = 503 ] && ok "  ... the older policy's fault wins (503, not 504)" || bad "overlap winner: $(code web1 /x/w)"
[ -z "$(cond shop web-chaos Conflict)" ] && ok "  ... the older one has no Conflict" || bad "older has Conflict"
k delete fp -n shop web-late >/dev/null 2>&1

# An ingress overlap too: two policies on web-1's port 18930, the older wins.
bg in_pod "${CG[web1]}" a python3 "$PEER" server "10.77.21.2:18930"
for _ in $(seq 150); do ip netns exec "${T}a" ss -ltn | grep -q ":18930 " && break; sleep 0.1; done
ingress_fp() { # NAME STATUS
    cat <<EOF
apiVersion: faultline.dev/v1
kind: FaultPolicy
metadata: {name: $1, namespace: shop}
spec:
  targets:
    - name: web-in
      direction: ingress
      pods: {selector: {matchLabels: {app: web}}}
      port: 18930
  rules:
    - name: abort-in
      match: {path: {prefix: /x}}
      fault: {abort: {status: $2}}
EOF
}
ingress_fp in-old 421 | k create -f - >/dev/null 2>&1
sleep 1
ingress_fp in-new 422 | k create -f - >/dev/null 2>&1
wait_cond shop in-new Conflict True 8; c=$(cond shop in-new Conflict)
h=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' http://10.77.21.2:18930/x/in 2>&1)
[ "$h" = 421 ] && grep -q '^True Overlap .*shop/in-old' <<<"$c" &&
    ok "two ingress policies on the same pod port: the older answers (421), the newer has Conflict" ||
    bad "ingress overlap: $h, conflict: ${c:-none}"
k delete fp -n shop in-old in-new >/dev/null 2>&1

# ---- the cluster halt: both nodes within 1 s ----
t0=$(date +%s%N)
out=$(kf halt --reason "game day over" 2>&1)
for _ in $(seq 40); do
    [ "$(st n1 | jq .halted)" = true ] && [ "$(st n2 | jq .halted)" = true ] && break
    sleep 0.025
done
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$(st n1 | jq .halted)" = true ] && [ "$(st n2 | jq .halted)" = true ] && [ $ms -le 1000 ] &&
    ok "kubectl faultline halt (the ConfigMap) halts both nodes in ${ms} ms" || bad "halt: n1 $(st n1 | jq .halted) n2 $(st n2 | jq .halted) ${ms} ms"
[ "$(code web1 /x/h)" = 200 ] && [ "$(code web2 /x/h)" = 200 ] && ok "  ... no faults while halted" || bad "faults while halted"
[ "$(k get configmap -n faultline-system faultline-halt -o jsonpath='{.data.reason}')" = "game day over" ] &&
    ok "  ... the ConfigMap faultline-halt holds the reason" || bad "halt ConfigMap" "$out"
check "  ... kubectl faultline status says so on every node" "$(kf status 2>&1)" \
    '^cluster halt: ON .*game day over' '^n1 +faultline-n1 +halted \(cluster halt' '^n2 +faultline-n2 +halted \(cluster halt'

wait_cond shop web-chaos Halted True 8 && c=$(cond shop web-chaos Halted)
check "  ... condition Halted with the reason, Status Halted" "${c:-none} $(cond shop web-chaos Applied)" \
    '^True ClusterHalt game day over' 'False Halted'
t0=$(date +%s%N)
out=$(kf resume 2>&1)
for _ in $(seq 40); do
    [ "$(st n1 | jq .halted)" = false ] && [ "$(st n2 | jq .halted)" = false ] && break
    sleep 0.025
done
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$(st n1 | jq .halted)" = false ] && [ "$(st n2 | jq .halted)" = false ] && [ $ms -le 1000 ] &&
    [ "$(code web1 /x/r)" = 503 ] && ok "kubectl faultline resume (deletes it) resumes both in ${ms} ms; faults again" ||
    bad "resume: ${ms} ms" "$out"
out=$(kf resume 2>&1)
check "  ... resume again: not halted" "$out" '^not halted: there is no ConfigMap faultline-system/faultline-halt'
out=$(kf events 2>&1)
show "\$ kubectl faultline events | grep halt"$'\n'"$(grep '"event":"halt"' <<<"$out")"
check "kubectl faultline events merges the nodes' events, each with its node" "$out" \
    '"event":"halt","reason":"cluster halt.*game day over.*"node":"n1"' \
    '"event":"halt","reason":"cluster halt.*game day over.*"node":"n2"' '"event":"resume".*"node":"n2"'
ts=$(jq -r .ts <<<"$out")
[ "$ts" = "$(sort <<<"$ts")" ] && ok "  ... in time order" || bad "events not in ts order"
kf events -f >"$TMP/follow.out" 2>&1 &
FPID=$!
sleep 1
"$CTL" --admin "$TMP/n2.sock" halt --reason "one node" >/dev/null
for _ in $(seq 40); do grep -q '"reason":"one node".*"node":"n2"' "$TMP/follow.out" && break; sleep 0.05; done
grep -q '"reason":"one node".*"node":"n2"' "$TMP/follow.out" &&
    ok "kubectl faultline events -f: a new event on n2 arrives as it happens" || bad "events -f" "$(cat "$TMP/follow.out")"
"$CTL" --admin "$TMP/n2.sock" resume >/dev/null
pkill -TERM -f 'kubectl-faultline events -f' # what Ctrl-C does to it
wait $FPID 2>/dev/null
sleep 0.2
n=$(pgrep -fc "curl -sfN http://127.0.0.[23]:$MPORT/v1/events")
[ "$n" = 0 ] && ok "  ... stopped, it leaves no stream behind" || bad "streams left: $n"


# ---- TTL from creationTimestamp, on both nodes ----
cat >"$TMP/ttl.yaml" <<EOF
apiVersion: faultline.dev/v1
kind: FaultPolicy
metadata: {name: short, namespace: team}
spec:
  ttl: 4s
  targets:
    - name: api-out
      pods: {selector: {matchLabels: {app: api}}}
      destination: {ip: $SRV, port: $((SPORT + 1))}
  rules:
    - name: abort-all
      fault: {abort: {status: 418}}
EOF
bg python3 "$PEER" server "$SRV:$((SPORT + 1))"
sleep 0.5
k create -f "$TMP/ttl.yaml" >/dev/null 2>&1
in_pod "${CG[api1]}" b true
c1=$(in_pod "${CG[api1]}" b curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$SRV:$((SPORT + 1))/t" 2>&1)
sleep 0.2
for _ in $(seq 40); do
    c1=$(in_pod "${CG[api1]}" b curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$SRV:$((SPORT + 1))/t" 2>&1)
    [ "$c1" = 418 ] && break
    sleep 0.05
done
[ "$c1" = 418 ] && ok "a policy with ttl 4s injects at first" || bad "ttl policy before expiry: $c1"
created=$(k get fp -n team short -o jsonpath='{.metadata.creationTimestamp}')
exp=$(( $(date -d "$created" +%s) + 4 ))
while [ "$(date +%s)" -lt $((exp + 1)) ]; do sleep 0.2; done
c2=$(in_pod "${CG[api1]}" b curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$SRV:$((SPORT + 1))/t" 2>&1)
[ "$c2" = 200 ] && ok "  ... and nothing once the ttl from creationTimestamp has passed" || bad "after ttl: $c2"
wait_cond team short Expired True 8 && c=$(cond team short Expired)
check "  ... condition Expired, Status Expired" "${c:-none} / $(cond team short Applied)" '^True Expired expired at ' 'False Expired'
for n in n1 n2; do
    e=$(st $n | jq -r '[.kubernetes.faultpolicies[] | select(.namespace == "team" and .name == "short")][0].state')
    [ "$e" = expired ] && ok "  ... node $n holds it expired" || bad "node $n: $e"
done

# ---- delete: faults stop at once ----
t0=$(date +%s%N)
k delete fp -n shop web-chaos >/dev/null 2>&1
ms=$(wait_code web1 /x/d 200 3)
ms_ok "$ms" 1000 && ok "kubectl delete fp: faults stop within ${ms} ms" || bad "after delete: $ms"
ms=$(wait_code web2 /x/d 200 3) && ok "  ... on n2 too" || bad "n2 after delete: $ms"
[ "$(st n1 | jq -r '[.policies[].id] | join(",")')" = "local,team/web-chaos" ] &&
    ok "  ... and it is gone from the daemon's set" || bad "set after delete: $(st n1 | jq -c '[.policies[].id]')"

# ---- a node down: status says so ----
kill -TERM $D2; wait $D2 2>/dev/null; D2=
out=$(kf status 2>&1); rc=$?
[ $rc = 0 ] && check "kubectl faultline status with node n2's daemon down: exit 0, n2 unreachable" "$out" \
    '^n1 +faultline-n1 +injecting' '^n2 +faultline-n2 +UNREACHABLE: no answer from http://127.0.0.3' ||
    bad "status with a node down: rc $rc" "$out"

# ---- an unreachable API server: the set stays ----
kapi_stop
sleep 1
[ "$(code api1 /x/z)" = 502 ] && ok "the API server goes away: the policies in force stay" || bad "after API down: $(code api1 /x/z)"

for n in n1 n2; do
    n_=$(grep -cE 'Sanitizer|runtime error:' "$TMP/$n.log")
    [ "$n_" = 0 ] && ok "no sanitizer report from daemon $n" || bad "sanitizer ($n)" "$(grep -A20 -E 'Sanitizer|runtime error:' "$TMP/$n.log" | head -40)"
done
kill -TERM $D1 2>/dev/null
wait $D1 2>/dev/null
D1= D2=
cleanup
trap - EXIT
left=$(ip netns list | grep -c "^$T"; ls -d "$CG2"/kubepods 2>/dev/null | wc -l)
[ "$(echo $left | tr -d ' ')" = 00 ] && ok "cleanup: no netns or kubelet cgroup left" || bad "left behind: $left"
say "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
