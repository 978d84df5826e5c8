#!/bin/bash
# The deployment manifests of examples/kubernetes/ through the real kubectl
# against the test API server (test/kube/apiserver.py): each is created, read
# back and deleted; the DaemonSet's fields that DESIGN.md 2.3/3.5 require are
# checked with kubectl get -o json and jq (host PID, capabilities and not
# privileged, the cgroup2 and bpffs host mounts, the downward API, probes on
# the metrics port, resources, tolerations, the rolling update), the RBAC
# rules are exactly the least privileges, the CRD takes each example
# FaultPolicy (kubectl create/get/delete, the printer columns of kubectl get
# fp) and refuses wrong ones as a real server does, and the whole folder
# installs with one kubectl apply -f. With the faultline binary given, the
# DaemonSet's arguments are checked against its --help. No root needed.
#
# usage: bash test/kube/manifests.sh [build/faultline]
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
EX=$ROOT/examples/kubernetes
FL=${1:-}
TMP=$(mktemp -d /tmp/fl-manifests-test.XXXXXX)
PASS=0 FAIL=0

# shellcheck source=test/bpf/lib.sh
source "$HERE/../bpf/lib.sh"
# shellcheck source=test/kube/lib.sh
source "$HERE/lib.sh"

cleanup() {
    set +e
    kapi_stop
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for t in curl python3 openssl kubectl jq; do
    command -v $t >/dev/null || { say "test/kube/manifests: needs $t"; exit 1; }
done

K() { kapi_kubectl "$@" 2>&1; }
NS=faultline-system
# jcheck NAME JSON JQ-EXPR: the expression must be true of the JSON
jcheck() {
    local r
    r=$(jq -r "$3" <<<"$2" 2>&1)
    [ "$r" = true ] && ok "$1" || bad "$1 ($3 -> $r)" "$(jq -c "${4:-.}" <<<"$2" 2>/dev/null | head -c 2000)"
}

kapi_start "$TMP/api" || { say "the test API server did not start"; exit 1; }
say "# test API server at $KAPI_URL (pid $KAPI_PID)"

# ---- each manifest: create, get ----
out=$(K create -f "$EX/00-namespace.yaml")
check "kubectl create -f 00-namespace.yaml" "$out" "^namespace/$NS created"
out=$(K get ns $NS)
check "  ... kubectl get ns $NS: Active" "$out" "^$NS +Active "

out=$(K create -f "$EX/crd.yaml")
check "kubectl create -f crd.yaml (the server checks that its schema is structural)" "$out" \
    '^customresourcedefinition.apiextensions.k8s.io/faultpolicies.faultline.dev created'
out=$(K get crd faultpolicies.faultline.dev -o json)
jcheck "  ... kubectl get crd: Established, names accepted (fp)" "$out" \
    '([.status.conditions[] | select(.status == "True") | .type] | index("Established") != null) and .status.acceptedNames.shortNames == ["fp"]'
out=$(K api-resources --api-group=faultline.dev)
check "  ... kubectl api-resources: faultpolicies, short name fp, namespaced" "$out" \
    '^faultpolicies +fp +faultline\.dev/v1 +true +FaultPolicy'

out=$(K create -f "$EX/rbac.yaml")
check "kubectl create -f rbac.yaml" "$out" "^serviceaccount/faultline created" \
    '^clusterrole.rbac.authorization.k8s.io/faultline created' \
    '^clusterrolebinding.rbac.authorization.k8s.io/faultline created' \
    '^role.rbac.authorization.k8s.io/faultline created' '^rolebinding.rbac.authorization.k8s.io/faultline created'
out=$(K get -n $NS sa,role,rolebinding faultline)
check "  ... kubectl get sa,role,rolebinding" "$out" '^serviceaccount/faultline +0 ' \
    '^role.rbac.authorization.k8s.io/faultline +[0-9]' '^rolebinding.rbac.authorization.k8s.io/faultline +Role/faultline '
out=$(K get clusterrole,clusterrolebinding faultline)
check "  ... kubectl get clusterrole,clusterrolebinding" "$out" '^clusterrole.rbac.authorization.k8s.io/faultline ' \
    '^clusterrolebinding.rbac.authorization.k8s.io/faultline +ClusterRole/faultline '

cr=$(K get clusterrole faultline -o json)
jcheck "ClusterRole: exactly get/list/watch on pods, services, endpointslices and faultpolicies, patch on faultpolicies/status" "$cr" \
    '[.rules[] | .apiGroups[] as $g | .resources[] as $r | .verbs[] as $v | "\($g)/\($r):\($v)"] | sort ==
     (["/pods", "/services", "discovery.k8s.io/endpointslices", "faultline.dev/faultpolicies"] |
      [.[] + (":get", ":list", ":watch")] + ["faultline.dev/faultpolicies/status:patch"] | sort)' .rules
jcheck "  ... no wildcard, no resourceNames, no nonResourceURLs" "$cr" \
    '[.rules[] | (.apiGroups + .resources + .verbs)[] | select(. == "*")] == [] and
     ([.rules[] | select(has("resourceNames") or has("nonResourceURLs"))] == [])' .rules
role=$(K get -n $NS role faultline -o json)
jcheck "Role in $NS: get/list/watch on the ConfigMap faultline-halt only" "$role" \
    '.rules == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["faultline-halt"], "verbs": ["get", "list", "watch"]}]' .rules
b=$(K get clusterrolebinding faultline -o json)
jcheck "ClusterRoleBinding: ClusterRole faultline to the ServiceAccount $NS/faultline" "$b" \
    '.roleRef == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "faultline"} and
     .subjects == [{"kind": "ServiceAccount", "name": "faultline", "namespace": "faultline-system"}]'
b=$(K get -n $NS rolebinding faultline -o json)
jcheck "RoleBinding: Role faultline to the same ServiceAccount" "$b" \
    '.roleRef.kind == "Role" and .roleRef.name == "faultline" and
     .subjects == [{"kind": "ServiceAccount", "name": "faultline", "namespace": "faultline-system"}]'

out=$(K create -f "$EX/daemonset.yaml")
check "kubectl create -f daemonset.yaml" "$out" '^daemonset.apps/faultline created'
out=$(K get -n $NS ds)
check "  ... kubectl get ds: the DaemonSet's columns" "$out" \
    '^NAME +DESIRED +CURRENT +READY +UP-TO-DATE +AVAILABLE +NODE SELECTOR +AGE' '^faultline +0 +0 +0 '

# ---- the DaemonSet's fields ----
ds=$(K get -n $NS ds faultline -o json)
P='.spec.template.spec'
C="$P.containers[0]"
jcheck "DaemonSet: one container, the service account faultline" "$ds" \
    "($P.containers | length) == 1 and $P.serviceAccountName == \"faultline\""
jcheck "  ... host PID" "$ds" "$P.hostPID == true" "$P"
jcheck "  ... not privileged, no host network" "$ds" \
    "($C.securityContext.privileged // false) == false and ($P.hostNetwork // false) == false" "$C.securityContext"
jcheck "  ... capabilities: drop ALL, add exactly BPF PERFMON NET_ADMIN SYS_ADMIN SYS_PTRACE SYS_RESOURCE" "$ds" \
    "$C.securityContext.capabilities == {\"drop\": [\"ALL\"], \"add\": [\"BPF\", \"PERFMON\", \"NET_ADMIN\", \"SYS_ADMIN\", \"SYS_PTRACE\", \"SYS_RESOURCE\"]}" \
    "$C.securityContext"
jcheck "  ... read-only root file system, the default seccomp profile" "$ds" \
    "$C.securityContext.readOnlyRootFilesystem == true and $C.securityContext.seccompProfile.type == \"RuntimeDefault\""
for m in /sys/fs/cgroup /sys/fs/bpf; do
    jcheck "  ... the host's $m mounted at $m, writable" "$ds" \
        "[$C.volumeMounts[] | select(.mountPath == \"$m\") | .name] as \$n | (\$n | length) == 1 and
         ([$P.volumes[] | select(.name == \$n[0]) | .hostPath.path] == [\"$m\"]) and
         ([$C.volumeMounts[] | select(.mountPath == \"$m\") | .readOnly // false] == [false])" "$P.volumes"
done
jcheck "  ... NODE_NAME from spec.nodeName, POD_NAMESPACE from metadata.namespace (the downward API)" "$ds" \
    "([$C.env[] | select(.name == \"NODE_NAME\") | .valueFrom.fieldRef.fieldPath] == [\"spec.nodeName\"]) and
     ([$C.env[] | select(.name == \"POD_NAMESPACE\") | .valueFrom.fieldRef.fieldPath] == [\"metadata.namespace\"])" "$C.env"
jcheck "  ... args: run --kubernetes --node \$(NODE_NAME) --metrics-listen 0.0.0.0:9464" "$ds" \
    "$C.args == [\"run\", \"--kubernetes\", \"--node\", \"\$(NODE_NAME)\", \"--metrics-listen\", \"0.0.0.0:9464\"] and ($C.command == null)" \
    "$C.args"
jcheck "  ... the metrics port 9464/TCP, named metrics" "$ds" \
    "$C.ports == [{\"name\": \"metrics\", \"containerPort\": 9464, \"protocol\": \"TCP\"}]" "$C.ports"
for pr in livenessProbe:/healthz readinessProbe:/readyz; do
    jcheck "  ... ${pr%%:*}: HTTP GET ${pr#*:} on the metrics port" "$ds" \
        "$C.${pr%%:*}.httpGet.path == \"${pr#*:}\" and ([$C.${pr%%:*}.httpGet.port] | inside([\"metrics\", 9464])) and
         $C.${pr%%:*}.httpGet.scheme == \"HTTP\" and $C.${pr%%:*}.periodSeconds > 0" "$C.${pr%%:*}"
done
jcheck "  ... resource requests and limits of cpu and memory, requests below limits" "$ds" \
    "($C.resources.requests | has(\"cpu\") and has(\"memory\")) and ($C.resources.limits | has(\"cpu\") and has(\"memory\"))" \
    "$C.resources"
jcheck "  ... tolerates every taint (operator Exists, no key, no effect)" "$ds" \
    "[$P.tolerations[] | select(.operator == \"Exists\" and (has(\"key\") | not) and (has(\"effect\") | not))] | length == 1" \
    "$P.tolerations"
jcheck "  ... rolling update with maxUnavailable" "$ds" \
    '.spec.updateStrategy.type == "RollingUpdate" and (.spec.updateStrategy.rollingUpdate.maxUnavailable != null)' .spec.updateStrategy
jcheck "  ... the selector matches the template's labels" "$ds" \
    '.spec.selector.matchLabels as $s | .spec.template.metadata.labels | contains($s)'
jcheck "  ... in $NS, the namespace of the Role that lets it read the halt ConfigMap" "$ds" \
    ".metadata.namespace == \"$NS\""
if [ -n "$FL" ]; then
    help=$("$FL" --help 2>&1)
    miss=
    for f in $(jq -r "$C.args[] | select(startswith(\"-\"))" <<<"$ds"); do
        grep -qe "$f\b" <<<"$help" || miss="$miss $f"
    done
    [ -z "$miss" ] && ok "  ... each flag of its args is one that $FL --help lists" || bad "flags not in --help:$miss" "$help"
fi

# ---- the Dockerfile: Debian 12, Debian packages only ----
df=$EX/Dockerfile
froms=$(grep -E '^FROM ' "$df" | awk '{print $2}' | sort -u | tr '\n' ' ')
[ "$froms" = "debian:12 debian:12-slim " ] && ok "Dockerfile: built from debian:12, run on debian:12-slim" || bad "Dockerfile FROM: $froms"
fetch='(^RUN|&&|;|\|) *(curl|wget|git|pip3?|npm|npx|go) |^ADD +https?:'
if grep -Eq "$fetch" "$df"; then
    bad "Dockerfile: fetches something other than Debian packages" "$(grep -E "$fetch" "$df")"
else
    ok "Dockerfile: nothing fetched but Debian packages (apt-get)"
fi
pkgs=$(sed -n '/apt-get install/,/rm -rf/p' "$df" | tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' |
    grep -vxE 'apt-get|install|rm|rf|update|y|no|&&' | sort -u)
if command -v apt-cache >/dev/null && [ -n "$(apt-cache policy libuv1 2>/dev/null | grep Candidate)" ]; then
    missing=
    for p in $pkgs; do apt-cache show "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    [ -z "$missing" ] && ok "Dockerfile: every package it installs is a Debian package ($(wc -w <<<"$pkgs") of them)" ||
        bad "Dockerfile: not Debian packages here:$missing"
fi

# ---- FaultPolicies: the CRD at work ----
K create namespace shop >/dev/null
for f in "$EX"/faultpolicies/*.yaml; do
    n=$(python3 -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' "$f")
    out=$(K create -f "$f")
    check "kubectl create -f faultpolicies/$(basename "$f")" "$out" "^faultpolicy.faultline.dev/$n created" '!Warning'
    out=$(K get fp -n shop "$n" -o json)
    a=$(python3 -c 'import sys,yaml,json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))["spec"], sort_keys=True))' "$f")
    [ "$(jq -cS .spec <<<"$out")" = "$(jq -cS . <<<"$a")" ] && ok "  ... kubectl get fp $n -o json: the spec as written (nothing pruned)" ||
        bad "  ... $n: the spec came back changed" "$(diff <(jq -S .spec <<<"$out") <(jq -S . <<<"$a"))"
done
# Status as the daemons write it: server-side apply, one manager per node.
st() { # NAME MANAGER STATUS-JSON
    curl -sS --cacert "$KAPI_CA" -H "Authorization: Bearer $(cat "$KAPI_TOKEN_FILE")" \
        -H 'Content-Type: application/apply-patch+yaml' -X PATCH \
        "$KAPI_URL/apis/faultline.dev/v1/namespaces/shop/faultpolicies/$1/status?fieldManager=$2&force=true" \
        --data-binary "{\"apiVersion\":\"faultline.dev/v1\",\"kind\":\"FaultPolicy\",\"metadata\":{\"name\":\"$1\",\"namespace\":\"shop\"},\"status\":$3}"
}
TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
st orders-slow faultline-n1 "{\"observedGeneration\":1,\"pods\":3,\"injected\":17,\"nodes\":[{\"node\":\"n1\",\"pods\":2,\"injected\":{\"slow-orders\":12},\"updated\":\"$TS\"}],\"conditions\":[{\"type\":\"Applied\",\"status\":\"True\",\"reason\":\"Applied\",\"message\":\"selects 3 pods on 2 nodes\",\"lastTransitionTime\":\"$TS\"}]}" >/dev/null
r2=$(st orders-slow faultline-n2 "{\"nodes\":[{\"node\":\"n2\",\"pods\":1,\"injected\":{\"slow-orders\":5},\"updated\":\"$TS\"}]}")
jcheck "status by server-side apply from faultline-n1 and faultline-n2: both nodes' entries kept" "$r2" \
    '[.status.nodes[] | [.node, .pods, .injected["slow-orders"]]] == [["n1", 2, 12], ["n2", 1, 5]]' .status
r=$(st checkout-503 faultline-n1 "{\"pods\":0,\"injected\":0,\"conditions\":[{\"type\":\"Applied\",\"status\":\"False\",\"reason\":\"Invalid\",\"message\":\"spec.rules[0]: ...\",\"lastTransitionTime\":\"$TS\"},{\"type\":\"Invalid\",\"status\":\"True\",\"reason\":\"LoaderError\",\"lastTransitionTime\":\"$TS\"}]}")
out=$(K get fp -n shop)
check "kubectl get fp: the printer columns Pods, Injected, Status, Age" "$out" \
    '^NAME +PODS +INJECTED +STATUS +AGE$' '^orders-slow +3 +17 +Applied +[0-9]+s$' \
    '^checkout-503 +0 +0 +Invalid +[0-9]+s$' '^greeter-down +[0-9]+s$'
r=$(st orders-slow faultline-n1 '{"nodes":[{"node":"n1","pods":"two"}]}')
check "  ... a status the schema refuses (pods a string): 422" "$r" '"code": ?422' 'must be of type integer'
r=$(st orders-slow faultline-n1 '{"pods":3,"lastSeen":"x"}')
jcheck "  ... a status field the schema lacks is dropped (the daemon sends no fieldValidation)" "$r" \
    '(.status | has("lastSeen") | not) and .status.pods == 3'

# Wrong ones, refused as a real server refuses them.
out=$(K create -f "$HERE/crd/bad-listeners.yaml")
check "kubectl create -f a FaultPolicy with listeners: refused (strict field validation)" "$out" \
    'BadRequest.*strict decoding error: unknown field "spec\.listeners"'
out=$(K create -f "$HERE/crd/bad-enum-direction.yaml")
check "kubectl create -f a FaultPolicy with direction: sideways: refused (422)" "$out" \
    'is invalid: spec\.targets\[0\]\.direction: Unsupported value: "sideways"'
out=$(K create -f "$HERE/crd/bad-type-ttl.yaml")
check "kubectl create -f a FaultPolicy with ttl: 30: refused" "$out" 'spec\.ttl in body must be of type string'
out=$(K create -f "$HERE/crd/bad-on-unquoted.yaml")
check "kubectl create -f a FaultPolicy with a bare on: key: refused (YAML 1.1 makes it \"true\")" "$out" \
    'unknown field "spec\.rules\[0\]\.true"'
out=$(K create --validate=false -f "$HERE/crd/bad-listeners.yaml")
l=$(K get fp -n shop bad-listeners -o json | jq -c '[(.spec | has("listeners")), (.spec.targets | length)]')
[ "$l" = '[false,1]' ] && ok "kubectl create --validate=false: listeners dropped by pruning, the rest kept" || bad "validate=false: $l" "$out"
K delete fp -n shop bad-listeners >/dev/null

for f in "$EX"/faultpolicies/*.yaml; do
    out=$(K delete -f "$f")
    check "kubectl delete -f faultpolicies/$(basename "$f")" "$out" '^faultpolicy.faultline.dev "[a-z0-9-]+" deleted'
done
out=$(K get fp -n shop)
check "  ... none left" "$out" '^No resources found in shop namespace'

# ---- delete each manifest ----
out=$(K delete -f "$EX/daemonset.yaml")
check "kubectl delete -f daemonset.yaml" "$out" '^daemonset.apps "faultline" deleted'
out=$(K delete -f "$EX/rbac.yaml")
check "kubectl delete -f rbac.yaml" "$out" '^serviceaccount "faultline" deleted' \
    '^clusterrole.rbac.authorization.k8s.io "faultline" deleted' '^rolebinding.rbac.authorization.k8s.io "faultline" deleted'
out=$(K delete -f "$EX/crd.yaml")
check "kubectl delete -f crd.yaml" "$out" '^customresourcedefinition.apiextensions.k8s.io "faultpolicies.faultline.dev" deleted'
out=$(K delete -f "$EX/00-namespace.yaml")
check "kubectl delete -f 00-namespace.yaml" "$out" "^namespace \"$NS\" deleted"
out=$(K get ns,clusterrole,clusterrolebinding,crd -o name)
check "  ... nothing of it left" "$out" '!faultline'

# ---- the install of the README: one kubectl apply -f of the folder ----
out=$(K apply -f "$EX/")
check "kubectl apply -f examples/kubernetes/ (the install): every object created at the first go" "$out" \
    "^namespace/$NS created" '^customresourcedefinition.apiextensions.k8s.io/faultpolicies.faultline.dev created' \
    '^daemonset.apps/faultline created' '^serviceaccount/faultline created' '^rolebinding.rbac.authorization.k8s.io/faultline created' \
    '!Error' '!error'
out=$(K apply -f "$EX/")
check "  ... again: unchanged" "$out" "^namespace/$NS unchanged" '^daemonset.apps/faultline unchanged' '!configured' '!created'
out=$(K apply -f "$EX/faultpolicies/" -n shop)
check "kubectl apply -f examples/kubernetes/faultpolicies/" "$out" '^faultpolicy.faultline.dev/orders-slow created' \
    '^faultpolicy.faultline.dev/orders-flaky created'
out=$(K delete -f "$EX/faultpolicies/"; K delete --ignore-not-found -f "$EX/")
check "kubectl delete [--ignore-not-found] -f of both folders (the namespace takes what is in it)" "$out" \
    "^namespace \"$NS\" deleted" '^customresourcedefinition.apiextensions.k8s.io "faultpolicies.faultline.dev" deleted' \
    '^clusterrole.rbac.authorization.k8s.io "faultline" deleted' '!Error'
out=$(K get ns,clusterrole,clusterrolebinding,crd -o name)
check "  ... nothing of it left" "$out" '!faultline'

cleanup
trap - EXIT
say "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
