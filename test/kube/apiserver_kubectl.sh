#!/bin/bash
# The test API server (test/kube/apiserver.py) against the real kubectl and curl:
# discovery (aggregated v2), get/list/watch through server-side printing, create
# (kubectl's protobuf bodies too), client- and server-side apply, label, delete,
# credentials (token, client certificate, a wrong token), and with curl the API
# conventions faultline's client relies on: pagination with limit/continue, label
# and field selectors, watch from a resourceVersion, bookmarks, timeoutSeconds,
# 410 Gone after a compaction (ERROR event or HTTP 410), objects leaving a
# selector seen as DELETED, conflicts, the test controls (fail, silence, cut,
# compact, request log), a restart with the state kept, 5,000 pods paged, and
# the FaultPolicy CRD: discovery, printer columns, the status subresource with
# server-side apply from two node managers. No root needed; loopback only, a
# port the kernel picks. Removes everything it made, also on failure.
#
# usage: test/kube/apiserver_kubectl.sh
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d /tmp/fl-kapi-test.XXXXXX)
PASS=0 FAIL=0
BGPIDS=()

# shellcheck source=test/bpf/lib.sh
source "$HERE/../bpf/lib.sh"
# shellcheck source=test/kube/lib.sh
source "$HERE/lib.sh"

cleanup() {
    set +e
    for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
    kapi_stop
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for t in curl python3 openssl kubectl jq; do
    command -v $t >/dev/null || { say "test/kube/apiserver_kubectl: needs $t"; exit 1; }
done

K() { kapi_kubectl "$@" 2>&1; }
# raw METHOD PATH [JSON [CONTENT-TYPE]]: the body, then the HTTP status on a line of its own
raw() {
    local ct=${4:-application/json}
    [ "$1" = PATCH ] && [ -z "${4:-}" ] && ct=application/merge-patch+json
    curl -sS --cacert "$KAPI_CA" -H "Authorization: Bearer $(cat "$KAPI_TOKEN_FILE")" \
        -H "Content-Type: $ct" -X "$1" ${3:+--data-binary "$3"} -w '\n%{http_code}' "$KAPI_URL$2"
}
code_of() { tail -1 <<<"$1"; }
body_of() { sed '$d' <<<"$1"; }
# kwatch SECS PATH: a watch with curl for at most SECS; prints its lines, then "rc=N"
kwatch() {
    curl -sS -N --cacert "$KAPI_CA" -H "Authorization: Bearer $(cat "$KAPI_TOKEN_FILE")" \
        --max-time "$1" "$KAPI_URL$2" 2>&1
    echo "rc=$?"
}
pod() { # NS NAME LABELS-JSON NODE
    printf '{"metadata":{"name":"%s","namespace":"%s","labels":%s},' "$2" "$1" "$3"
    printf '"spec":{"nodeName":"%s","containers":[{"name":"app","image":"app"}]},' "$4"
    printf '"status":{"phase":"Running","qosClass":"BestEffort"}}'
}
names() { jq -r '[.items[].metadata.name] | join(" ")'; }
# check_code WANT GOT NAME OUTPUT PATTERN...: check, if the status was WANT
check_code() {
    local want=$1 got=$2
    shift 2
    if [ "$got" = "$want" ]; then check "$@"; else bad "$1: HTTP $got, not $want" "$2"; fi
}

kapi_start "$TMP/api" || { say "the test API server did not start"; exit 1; }
say "# test API server at $KAPI_URL (pid $KAPI_PID)"

# ---- kubectl: discovery, create, apply, get, label, watch, delete ----
out=$(K get --raw /version)
check "kubectl get --raw /version" "$out" '"gitVersion": ?"v1\.32\.0"'
out=$(K get pods -A)
check "kubectl get pods -A on an empty cluster" "$out" '^No resources found'
q=$(kapi_get_ctl requests)
check "  ... discovery is the aggregated kind (only /api and /apis, no /api/v1)" "$q" \
    '"path": "/apis".*as=APIGroupDiscoveryList' '!"path": "/api/v1", '
out=$(K create namespace shop)
check "kubectl create namespace shop (a protobuf body)" "$out" '^namespace/shop created'
out=$(K get ns)
check "kubectl get ns: the seeded namespaces and the new one, Active" "$out" '^default +Active ' \
    '^kube-system +Active ' '^shop +Active '

cat >"$TMP/shop.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: checkout-a, namespace: shop, labels: {app: checkout}}
spec: {nodeName: n1, containers: [{name: app, image: "app:1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web}}
spec: {nodeName: n2, containers: [{name: app, image: "app:1"}]}
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  clusterIP: 10.77.200.10
  selector: {app: checkout}
  ports: [{name: http, port: 8080, targetPort: 18881}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orders-abc, namespace: shop, labels: {kubernetes.io/service-name: orders}}
addressType: IPv4
endpoints: [{addresses: [10.77.11.1], conditions: {ready: true}}]
ports: [{name: http, port: 18881, protocol: TCP}]
EOF
out=$(K apply -f "$TMP/shop.yaml")
check "kubectl apply -f (Pods, a Service, an EndpointSlice)" "$out" '^pod/checkout-a created' \
    '^pod/web-b created' '^service/orders created' '^endpointslice.discovery.k8s.io/orders-abc created'
sed -i 's/app:1/app:2/' "$TMP/shop.yaml"
kapi_ctl clear
out=$(K apply -f "$TMP/shop.yaml")
check "kubectl apply -f again, images changed: configured, the rest unchanged" "$out" \
    '^pod/checkout-a configured' '^pod/web-b configured' '^service/orders unchanged'
q=$(kapi_get_ctl requests)
check "  ... as strategic merge patches with server-side field validation" "$q" \
    '"method": "PATCH", "path": "/api/v1/namespaces/shop/pods/checkout-a", "query": \{"fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict"\}.*"ctype": "application/strategic-merge-patch\+json"'
img=$(kapi GET /api/v1/namespaces/shop/pods/checkout-a | jq -r '.spec.containers[0].image + " " + (.spec.containers | length | tostring)')
[ "$img" = "app:2 1" ] && ok "  ... the container list merged by name (image app:2, one container)" || bad "containers: $img"

out=$(K get pods -A)
check "kubectl get pods -A" "$out" '^NAMESPACE +NAME +READY +STATUS +RESTARTS +AGE' \
    '^shop +checkout-a +0/1 +Pending +0 ' '^shop +web-b '
out=$(K get pods -n shop -l app=checkout)
check "kubectl get pods -n shop -l app=checkout" "$out" '^checkout-a ' '!^web-b'
out=$(K get pods -A --field-selector spec.nodeName=n2 -o wide)
check "kubectl get pods -A --field-selector spec.nodeName=n2 -o wide" "$out" \
    '^shop +web-b .* n2' '!checkout-a'
out=$(K get svc -n shop)
check "kubectl get svc" "$out" '^NAME +TYPE +CLUSTER-IP +EXTERNAL-IP +PORT\(S\) +AGE' \
    '^orders +ClusterIP +10\.77\.200\.10 +<none> +8080/TCP '
out=$(K get endpointslices -n shop)
check "kubectl get endpointslices" "$out" '^NAME +ADDRESSTYPE +PORTS +ENDPOINTS +AGE' \
    '^orders-abc +IPv4 +18881 +10\.77\.11\.1 '
out=$(K label pod -n shop checkout-a app=x --overwrite)
check "kubectl label pod checkout-a app=x --overwrite" "$out" '^pod/checkout-a labeled'
out=$(K get pods -n shop -l 'app in (x,web)' --show-labels)
check "  ... kubectl get -l 'app in (x,web)' sees it" "$out" '^checkout-a .*app=x' '^web-b .*app=web'

kubectl --kubeconfig "$KAPI_KUBECONFIG" --cache-dir "$KAPI_DIR/kubectl-cache" get pods -n shop -w \
    >"$TMP/watch.out" 2>&1 &
WPID=$!
BGPIDS+=("$WPID")
if kapi_wait_watches 1 /api/v1/namespaces/shop/pods 10; then
    kapi POST /api/v1/namespaces/shop/pods "$(pod shop late-c '{"app":"checkout"}' n1)" >/dev/null
    for _ in $(seq 50); do grep -q '^late-c ' "$TMP/watch.out" && break; sleep 0.1; done
fi
kill "$WPID" 2>/dev/null
wait "$WPID" 2>/dev/null
check "kubectl get pods -w: the listed pods, then a new one from the watch" "$(cat "$TMP/watch.out")" \
    '^NAME +READY' '^checkout-a ' '^late-c +0/1 +Running '
out=$(K delete pod -n shop late-c)
check "kubectl delete pod late-c" "$out" '^pod "late-c" deleted'
out=$(K get pod -n shop late-c)
check "  ... and it is gone" "$out" 'Error from server \(NotFound\): pods "late-c" not found'

out=$(K create configmap halt -n shop --from-literal=reason=gameday)
check "kubectl create configmap (a protobuf body with data)" "$out" '^configmap/halt created'
r=$(kapi GET /api/v1/namespaces/shop/configmaps/halt | jq -r .data.reason)
[ "$r" = gameday ] && ok "  ... its data arrived: reason=gameday" || bad "configmap data: $r"
cat >"$TMP/cm.yaml" <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {a: "1"}
EOF
out=$(K apply --server-side -f "$TMP/cm.yaml")
check "kubectl apply --server-side" "$out" '^configmap/settings serverside-applied'
m=$(kapi GET /api/v1/namespaces/shop/configmaps/settings | jq -c '[.metadata.managedFields[] | .manager, .operation, .fieldsV1]')
check "  ... managedFields name kubectl's Apply and its fields" "$m" '"kubectl","Apply",\{"f:data":\{"f:a":\{\}\}\}'
out=$(K api-resources)
check "kubectl api-resources" "$out" '^endpointslices +discovery\.k8s\.io/v1 +true +EndpointSlice' \
    '^pods +po +v1 +true +Pod'

sed "s|tokenFile: .*|token: wrong-token|" "$KAPI_KUBECONFIG" >"$TMP/kc-bad"
out=$(kubectl --kubeconfig "$TMP/kc-bad" --cache-dir "$TMP/kc-bad-cache" get pods -A 2>&1)
rc=$?
if [ $rc != 0 ]; then
    check "a wrong token: kubectl fails, Unauthorized" "$out" 'You must be logged in to the server'
else
    bad "wrong token: rc $rc" "$out"
fi
out=$(kubectl --kubeconfig "$KAPI_KUBECONFIG_CERT" --cache-dir "$TMP/kc-cert-cache" get pods -n shop 2>&1)
check "the client-certificate kubeconfig works" "$out" '^checkout-a '
out=$(kubectl --kubeconfig "$KAPI_KUBECONFIG_INLINE" --cache-dir "$TMP/kc-inline-cache" get pods -n shop 2>&1)
check "the inline-token kubeconfig works" "$out" '^checkout-a '

# ---- the conventions, with curl ----
r=$(curl -sS --cacert "$KAPI_CA" -H "Authorization: Bearer nope" -w '\n%{http_code}' "$KAPI_URL/api/v1/pods")
check_code 401 "$(code_of "$r")" "a wrong token: 401 with a Status body" "$(body_of "$r")" \
    '"kind": "Status"' '"reason": "Unauthorized"' '"code": 401'
r=$(raw GET /api/v1/namespaces/shop/pods/nope)
[ "$(code_of "$r")" = 404 ] && [ "$(body_of "$r" | jq -c '[.kind, .apiVersion, .status, .message, .reason, .code]')" = \
    '["Status","v1","Failure","pods \"nope\" not found","NotFound",404]' ] &&
    ok "GET a missing pod: 404 NotFound Status" || bad "404: $r"
r=$(raw POST /api/v1/namespaces/shop/pods "$(pod shop web-b '{}' n1)")
[ "$(code_of "$r")" = 409 ] && [ "$(body_of "$r" | jq -r .reason)" = AlreadyExists ] &&
    ok "POST an existing name: 409 AlreadyExists" || bad "409: $r"
r=$(raw POST /api/v1/namespaces/nowhere/pods "$(pod nowhere p '{}' n1)")
[ "$(code_of "$r")" = 404 ] && ok "POST into a missing namespace: 404" || bad "missing ns: $r"
o=$(kapi GET /api/v1/namespaces/shop/pods/web-b)
rv=$(jq -r .metadata.resourceVersion <<<"$o")
r=$(raw PUT /api/v1/namespaces/shop/pods/web-b "$(jq -c '.metadata.labels.v="1"' <<<"$o")")
[ "$(code_of "$r")" = 200 ] && rv2=$(body_of "$r" | jq -r .metadata.resourceVersion) && [ "$rv2" -gt "$rv" ] &&
    ok "PUT with the current resourceVersion: 200, resourceVersion $rv -> $rv2" || bad "PUT: $r"
r=$(raw PUT /api/v1/namespaces/shop/pods/web-b "$(jq -c '.metadata.labels.v="2"' <<<"$o")")
[ "$(code_of "$r")" = 409 ] && [ "$(body_of "$r" | jq -r .reason)" = Conflict ] &&
    ok "PUT with a stale resourceVersion: 409 Conflict" || bad "stale PUT: $r"
r=$(raw PATCH /api/v1/namespaces/shop/pods/web-b '[{"op":"add","path":"/metadata/labels/jp","value":"y"}]' application/json-patch+json)
[ "$(code_of "$r")" = 200 ] && [ "$(body_of "$r" | jq -r .metadata.labels.jp)" = y ] &&
    ok "PATCH application/json-patch+json" || bad "json patch: $r"
g=$(kapi GET /api/v1/namespaces/shop/pods/web-b | jq -r '.metadata.generation')
r=$(raw PATCH /api/v1/namespaces/shop/pods/web-b '{"status":{"phase":"Failed"}}')
[ "$(body_of "$r" | jq -r .status.phase)" = Pending ] && ok "status through the main resource is ignored (status subresource)" ||
    bad "status via main: $r"
r=$(raw PATCH /api/v1/namespaces/shop/pods/web-b/status '{"status":{"phase":"Succeeded"},"spec":{"nodeName":"zz"}}')
[ "$(body_of "$r" | jq -r '.status.phase + " " + .spec.nodeName + " " + (.metadata.generation|tostring)')" = "Succeeded n2 $g" ] &&
    ok "PATCH pods/status changes status only; generation stays $g" || bad "status patch: $r"
r=$(raw DELETE /api/v1/namespaces/shop/pods/nope)
[ "$(code_of "$r")" = 404 ] && ok "DELETE a missing pod: 404" || bad "delete 404: $r"

# 12 more pods: the odd ones on n2, the even ones on n1; labels for the selectors
for i in $(seq -w 1 12); do
    node=n$((10#$i % 2 + 1))
    kapi POST /api/v1/namespaces/shop/pods "$(pod shop "p$i" "{\"app\":\"batch\",\"idx\":\"$i\",\"tier\":\"t$((10#$i % 3))\"}" "$node")" >/dev/null
done
kapi_ctl clear
all=$(kapi GET /api/v1/namespaces/shop/pods | names)
page=$(kapi GET '/api/v1/namespaces/shop/pods?limit=2')
got=$(names <<<"$page")
c=$(jq -r .metadata.continue <<<"$page")
lrv=$(jq -r .metadata.resourceVersion <<<"$page")
rem=$(jq -r .metadata.remainingItemCount <<<"$page")
n=1
kapi POST /api/v1/namespaces/shop/pods "$(pod shop zz-during '{}' n1)" >/dev/null # after the first page
while [ "$c" != null ] && [ -n "$c" ] && [ $n -lt 20 ]; do
    page=$(kapi GET "/api/v1/namespaces/shop/pods?limit=2&continue=$c")
    [ "$(jq -r .metadata.resourceVersion <<<"$page")" = "$lrv" ] || lrv=changed
    got="$got $(names <<<"$page")"
    c=$(jq -r '.metadata.continue // empty' <<<"$page")
    n=$((n + 1))
done
[ "$got" = "$all" ] && [ "$lrv" != changed ] && [ "$rem" -gt 0 ] &&
    ok "limit=2 + continue: $n pages, every pod once, in order, one list resourceVersion, remainingItemCount $rem" ||
    bad "pagination" "$got / $all / rv $lrv"
[[ "$got" != *zz-during* ]] && ok "  ... a consistent snapshot: a pod created after page 1 is not in the list" ||
    bad "pagination saw a later pod"
q=$(kapi_get_ctl requests)
check "  ... the request log has limit and continue" "$q" '"limit": "2"}' '"limit": "2", "continue": "'
r=$(kapi GET '/api/v1/pods?labelSelector=app%3Dbatch,tier%20in%20(t0,t1),idx!%3D03,!nolabel,idx' | names)
[ "$r" = "p01 p04 p06 p07 p09 p10 p12" ] && ok "labelSelector =, in (...), !=, !key, key (comma AND)" || bad "labelSelector: $r"
r=$(kapi GET '/api/v1/pods?labelSelector=tier%20notin%20(t0,t1),app%3D%3Dbatch' | names)
[ "$r" = "p02 p05 p08 p11" ] && ok "labelSelector notin (...), ==" || bad "notin: $r"
r=$(kapi GET '/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&labelSelector=app%3Dbatch' | names)
[ "$r" = "p02 p04 p06 p08 p10 p12" ] && ok "fieldSelector spec.nodeName=n1" || bad "fieldSelector: $r"
r=$(kapi GET '/api/v1/pods?fieldSelector=metadata.namespace%3Dshop,metadata.name!%3Dp01,spec.nodeName%3D%3Dn2&labelSelector=app%3Dbatch' | names)
[ "$r" = "p03 p05 p07 p09 p11" ] && ok "fieldSelector metadata.namespace, metadata.name!= (AND)" || bad "fieldSelector 2: $r"
r=$(raw GET '/api/v1/pods?fieldSelector=spec.image%3Dx')
check_code 400 "$(code_of "$r")" "fieldSelector on an unsupported field: 400" "$(body_of "$r")" \
    '"reason": "BadRequest"' 'field label not supported: spec.image'
r=$(raw GET '/api/v1/pods?labelSelector=app%20in%20(')
[ "$(code_of "$r")" = 400 ] && ok "a malformed labelSelector: 400" || bad "bad selector: $r"

# watch: replay from a resourceVersion, a selector left, bookmarks, timeout
rv0=$(kapi GET /api/v1/namespaces/shop/pods | jq -r .metadata.resourceVersion)
kapi PATCH /api/v1/namespaces/shop/pods/p01 '{"metadata":{"labels":{"app":"moved"}}}' >/dev/null
kapi PATCH /api/v1/namespaces/shop/pods/p03 '{"metadata":{"annotations":{"a":"b"}}}' >/dev/null
kapi DELETE /api/v1/namespaces/shop/pods/p05 >/dev/null
kapi POST /api/v1/namespaces/shop/pods "$(pod shop p13 '{"app":"batch"}' n2)" >/dev/null
kapi PATCH /api/v1/namespaces/shop/pods/p02 '{"metadata":{"annotations":{"n1":"only"}}}' >/dev/null
out=$(kwatch 5 "/api/v1/namespaces/shop/pods?watch=1&resourceVersion=$rv0&labelSelector=app%3Dbatch&fieldSelector=spec.nodeName%3Dn2&timeoutSeconds=1")
ev=$(grep '^{' <<<"$out" | jq -r '.type + ":" + .object.metadata.name' | tr '\n' ' ')
[ "$ev" = "DELETED:p01 MODIFIED:p03 DELETED:p05 ADDED:p13 " ] &&
    ok "watch from a resourceVersion with selectors: the events after it, in order; a pod leaving the selector is DELETED" ||
    bad "watch replay: $ev" "$out"
grep -q '^rc=0$' <<<"$out" && ok "  ... timeoutSeconds=1 ends the stream cleanly (curl exit 0)" || bad "timeout end: $out"
r=$(grep '"DELETED"' <<<"$out" | head -1 | jq -r '.object.metadata.labels.app + " " + .object.metadata.resourceVersion')
[ "${r%% *}" = batch ] && [ "${r##* }" -gt "$rv0" ] && ok "  ... the DELETED object is the one that matched, at the event's resourceVersion" ||
    bad "left-selector object: $r"
kapi_ctl bookmarks seconds=0.3
t0=$(date +%s%N)
out=$(kwatch 5 "/api/v1/pods?watch=true&allowWatchBookmarks=true&resourceVersion=$rv0&fieldSelector=spec.nodeName%3Dnone&timeoutSeconds=2")
ms=$((($(date +%s%N) - t0) / 1000000))
nb=$(grep -c '"BOOKMARK"' <<<"$out")
brv=$(grep '"BOOKMARK"' <<<"$out" | tail -1 | jq -r '.object.metadata.resourceVersion')
bobj=$(grep '"BOOKMARK"' <<<"$out" | tail -1 | jq -c '.object | keys')
cur=$(kapi_get_ctl state | jq -r .resourceVersion)
[ "$nb" -ge 4 ] && [ "$brv" = "$cur" ] && [ "$bobj" = '["apiVersion","kind","metadata"]' ] && [ $ms -ge 1900 ] && [ $ms -le 3500 ] &&
    ok "allowWatchBookmarks: $nb BOOKMARKs in 2 s (interval 0.3 s), at the current resourceVersion $cur, only kind/apiVersion/metadata" ||
    bad "bookmarks: $nb, rv $brv vs $cur, $bobj, $ms ms" "$out"
out=$(kwatch 5 "/api/v1/namespaces/shop/pods?watch=1&timeoutSeconds=1&labelSelector=app%3Dbatch")
n=$(grep -c '"ADDED"' <<<"$out")
[ "$n" = 11 ] && ok "watch without a resourceVersion: the current state as ADDED events first ($n)" || bad "initial events: $n" "$out"
out=$(kwatch 5 "/api/v1/namespaces/shop/pods?watch=1&timeoutSeconds=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=app%3Dbatch")
check "sendInitialEvents=true: the state, then a BOOKMARK marking its end" "$(grep '^{' <<<"$out" | sed -n '12p')" \
    '"BOOKMARK"' '"k8s.io/initial-events-end": "true"'
kapi_ctl bookmarks seconds=1

# 410 Gone
page=$(kapi GET '/api/v1/namespaces/shop/pods?limit=3')
c=$(jq -r .metadata.continue <<<"$page")
old=$(jq -r .metadata.resourceVersion <<<"$page")
kapi PATCH /api/v1/namespaces/shop/pods/p04 '{"metadata":{"labels":{"after":"compact"}}}' >/dev/null
kapi_ctl compact
r=$(raw GET "/api/v1/namespaces/shop/pods?limit=3&continue=$c")
check_code 410 "$(code_of "$r")" "a continue token from before a compaction: 410 Expired" "$(body_of "$r")" \
    '"reason": "Expired"' '"code": 410' '"continue": "'
out=$(kwatch 5 "/api/v1/namespaces/shop/pods?watch=1&resourceVersion=$old")
ev=$(grep '^{' <<<"$out" | jq -c '[.type, .object.kind, .object.code, .object.reason]')
[ "$ev" = '["ERROR","Status",410,"Expired"]' ] && grep -q '^rc=0$' <<<"$out" &&
    ok "a watch from before the compaction: 200, one ERROR event (Status 410 Expired), then the end" || bad "watch 410" "$out"
kapi_ctl config watch410=status
r=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$KAPI_CA" -H "Authorization: Bearer $(cat "$KAPI_TOKEN_FILE")" \
    "$KAPI_URL/api/v1/namespaces/shop/pods?watch=1&resourceVersion=$old")
[ "$r" = 410 ] && ok "  ... or, with /_test/config?watch410=status, HTTP 410" || bad "watch 410 status: $r"
kapi_ctl config watch410=event
now=$(kapi_get_ctl state | jq -r .resourceVersion)
out=$(kwatch 3 "/api/v1/namespaces/shop/pods?watch=1&resourceVersion=$now&timeoutSeconds=1")
grep -q '"ERROR"' <<<"$out" && bad "watch from the compaction point: $out" || ok "  ... a watch from the compaction point itself is fine"

# fault injection controls
kapi_ctl fail "path=/api/v1/namespaces/shop/pods&status=429&count=1&retry_after=2"
h=$(curl -sS -D - -o "$TMP/b" --cacert "$KAPI_CA" -H "Authorization: Bearer $(cat "$KAPI_TOKEN_FILE")" "$KAPI_URL/api/v1/namespaces/shop/pods")
r2=$(kapi_code GET /api/v1/namespaces/shop/pods)
grep -q '^HTTP/1.1 429' <<<"$h" && grep -qi '^Retry-After: 2' <<<"$h" && [ "$(jq -r .reason "$TMP/b")" = TooManyRequests ] && [ "$r2" = 200 ] &&
    ok "/_test/fail status=429 retry_after=2 count=1: one 429 TooManyRequests with Retry-After, then 200" || bad "fail 429: $h $r2"
kapi_ctl fail "path=/api/v1/pods&status=500&count=2"
a=$(kapi_code GET /api/v1/pods) b=$(kapi_code GET /api/v1/pods) c=$(kapi_code GET /api/v1/pods)
[ "$a$b$c" = 500500200 ] && ok "/_test/fail status=500 count=2: 500, 500, 200" || bad "fail 500: $a $b $c"
kapi_ctl silence count=1
out=$(kwatch 2 "/api/v1/namespaces/shop/pods?watch=1&allowWatchBookmarks=true&resourceVersion=$now")
[ "$(grep -c '^{' <<<"$out")" = 0 ] && grep -q '^rc=28$' <<<"$out" &&
    ok "/_test/silence: the watch sends its headers, then nothing (no bookmark in 2 s)" || bad "silence" "$out"
curl -sS -N --cacert "$KAPI_CA" -H "Authorization: Bearer $(cat "$KAPI_TOKEN_FILE")" --max-time 10 \
    "$KAPI_URL/api/v1/namespaces/shop/pods?watch=1&resourceVersion=$now" >"$TMP/cut.out" 2>&1 &
CPID=$!
BGPIDS+=("$CPID")
kapi_wait_watches 1 /api/v1/namespaces/shop/pods 5
w=$(kapi_get_ctl watches | jq -r '.[] | .query.resourceVersion' | tr '\n' ' ')
kapi PATCH /api/v1/namespaces/shop/pods/p06 '{"metadata":{"labels":{"cut":"before"}}}' >/dev/null
sleep 0.3
kapi_ctl cut
wait $CPID
echo "rc=$?" >>"$TMP/cut.out"
out=$(cat "$TMP/cut.out")
[ "$w" = "$now " ] && grep -q '"MODIFIED"' <<<"$out" && grep -qE '^rc=(18|56)$' <<<"$out" &&
    ok "/_test/watches lists the open watch; /_test/cut drops it mid-stream (an event, then the connection ends: $(tail -1 <<<"$out"))" ||
    bad "cut: $w" "$out"

# a restart with the state kept
before=$(kapi_get_ctl state | jq -r .resourceVersion)
uid=$(kapi GET /api/v1/namespaces/shop/pods/p06 | jq -r .metadata.uid)
t0=$(date +%s%N)
kapi_restart || { bad "restart"; exit 1; }
ms=$((($(date +%s%N) - t0) / 1000000))
after=$(kapi_get_ctl state | jq -r .resourceVersion)
uid2=$(kapi GET /api/v1/namespaces/shop/pods/p06 | jq -r .metadata.uid)
rv3=$(kapi PATCH /api/v1/namespaces/shop/pods/p06 '{"metadata":{"labels":{"after":"restart"}}}' | jq -r .metadata.resourceVersion)
[ "$after" = "$before" ] && [ "$uid2" = "$uid" ] && [ "$rv3" -gt "$before" ] &&
    ok "restart (SIGTERM, $ms ms to serving again): objects kept, resourceVersions go on ($before -> $rv3)" ||
    bad "restart: $before/$after $uid/$uid2 $rv3"
out=$(kwatch 3 "/api/v1/namespaces/shop/pods?watch=1&resourceVersion=$now")
grep -q '"code": 410' <<<"$out" && ok "  ... and a watch from before it gets 410, as after a real restart" || bad "watch after restart" "$out"
out=$(K get pods -n shop -l app=x)
check "  ... kubectl finds checkout-a (app=x) as before" "$out" '^NAME ' '^checkout-a '


# 5,000 pods, listed in pages of 500
python3 - "$KAPI_DIR" <<'EOF' >"$TMP/bulk.json"
import json
print(json.dumps([{"_plural": "pods", "metadata": {"name": "bulk-%05d" % i, "namespace": "shop",
                   "labels": {"app": "bulk"}}, "spec": {"nodeName": "n%d" % (i % 20),
                   "containers": [{"name": "c", "image": "c"}]}, "status": {"phase": "Running"}}
                  for i in range(5000)]))
EOF
curl -sS --cacert "$KAPI_CA" -X POST --data-binary @"$TMP/bulk.json" "$KAPI_URL/_test/bulk" >/dev/null
out=$(python3 - "$KAPI_URL" "$KAPI_CA" "$KAPI_TOKEN_FILE" <<'EOF'
import http.client, json, ssl, sys, time, urllib.parse
url, ca, tokf = sys.argv[1:4]
u = urllib.parse.urlsplit(url)
c = http.client.HTTPSConnection(u.hostname, u.port, context=ssl.create_default_context(cafile=ca))
tok = open(tokf).read().strip()
t0, cont, n, pages = time.monotonic(), '', 0, 0
while True:
    c.request('GET', '/api/v1/pods?limit=500&labelSelector=app%3Dbulk' + ('&continue=' + cont if cont else ''),
              headers={'Authorization': 'Bearer ' + tok})
    d = json.loads(c.getresponse().read())
    n, pages = n + len(d['items']), pages + 1
    cont = d['metadata'].get('continue')
    if not cont:
        break
print('%d %d %d' % (n, pages, (time.monotonic() - t0) * 1000))
EOF
)
read -r n pages ms <<<"$out"
[ "$n" = 5000 ] && [ "$pages" = 10 ] && [ "$ms" -lt 2000 ] &&
    ok "5,000 pods listed in 10 pages of 500 in $ms ms" || bad "5,000 pods: $out"
kapi DELETE '/api/v1/namespaces/shop/pods?labelSelector=app%3Dbulk' >/dev/null
n=$(kapi GET '/api/v1/pods?labelSelector=app%3Dbulk' | jq '.items | length')
[ "$n" = 0 ] && ok "  ... and deleted as a collection (DELETE with labelSelector)" || bad "deletecollection: $n"

# ---- the FaultPolicy CRD ----
cat >"$TMP/crd.yaml" <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: faultpolicies.faultline.dev
spec:
  group: faultline.dev
  scope: Namespaced
  names: {plural: faultpolicies, singular: faultpolicy, kind: FaultPolicy, shortNames: [fp]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      additionalPrinterColumns:
        - {name: Pods, type: integer, jsonPath: '.status.nodes[0].pods'}
        - {name: Injected, type: integer, jsonPath: '.status.injectedTotal'}
        - {name: Status, type: string, jsonPath: '.status.conditions[?(@.type=="Applied")].reason'}
        - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
            status:
              type: object
              properties:
                observedGeneration: {type: integer}
                injectedTotal: {type: integer}
                conditions:
                  type: array
                  x-kubernetes-list-type: map
                  x-kubernetes-list-map-keys: [type]
                  items:
                    type: object
                    x-kubernetes-preserve-unknown-fields: true
                    required: [type]
                    properties: {type: {type: string}}
                nodes:
                  type: array
                  x-kubernetes-list-type: map
                  x-kubernetes-list-map-keys: [node]
                  items:
                    type: object
                    required: [node]
                    properties:
                      node: {type: string}
                      pods: {type: integer}
                      injected: {type: object, additionalProperties: {type: integer}}
EOF
cat >"$TMP/fp.yaml" <<'EOF'
apiVersion: faultline.dev/v1
kind: FaultPolicy
metadata: {name: orders-503, namespace: shop}
spec:
  targets: [{name: orders, pods: {selector: {matchLabels: {app: checkout}}}}]
  rules: [{name: r, fault: {abort: {status: 503}}}]
EOF
out=$(K apply -f "$TMP/crd.yaml")
check "kubectl apply -f the FaultPolicy CRD" "$out" '^customresourcedefinition.apiextensions.k8s.io/faultpolicies.faultline.dev created'
e=$(kapi GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/faultpolicies.faultline.dev |
    jq -r '[.status.conditions[] | select(.status == "True") | .type] | join(",")')
[ "$e" = NamesAccepted,Established ] && ok "  ... its status: NamesAccepted, Established" || bad "CRD status: $e"
out=$(K get fp -n shop)
check "kubectl get fp (the short name, discovered after the CRD)" "$out" '^No resources found in shop namespace'
out=$(K create -f "$TMP/fp.yaml")
check "kubectl create -f a FaultPolicy" "$out" '^faultpolicy.faultline.dev/orders-503 created'
FP=/apis/faultline.dev/v1/namespaces/shop/faultpolicies/orders-503
st() { # MANAGER STATUS-JSON [QUERY]: server-side apply of status
    raw PATCH "$FP/status?fieldManager=$1${3:+&$3}" \
        "{\"apiVersion\":\"faultline.dev/v1\",\"kind\":\"FaultPolicy\",\"metadata\":{\"name\":\"orders-503\",\"namespace\":\"shop\"},\"status\":$2}" \
        application/apply-patch+yaml
}
r1=$(st faultline-n1 '{"observedGeneration":1,"nodes":[{"node":"n1","pods":2,"injected":{"r":5}}],"conditions":[{"type":"Applied","status":"True","reason":"Applied"}]}')
r2=$(st faultline-n2 '{"observedGeneration":1,"nodes":[{"node":"n2","pods":1,"injected":{"r":1}}]}')
s=$(body_of "$r2" | jq -c '[.status.nodes[] | [.node, .pods]]')
[ "$(code_of "$r1")$(code_of "$r2")" = 200200 ] && [ "$s" = '[["n1",2],["n2",1]]' ] &&
    ok "server-side apply of status by faultline-n1 and faultline-n2: each node's entry kept ($s)" || bad "SSA two nodes: $r1 $r2"
r=$(st faultline-n1 '{"observedGeneration":1,"nodes":[{"node":"n1","pods":3,"injected":{"r":9}}],"conditions":[{"type":"Applied","status":"True","reason":"Applied"}]}')
s=$(body_of "$r" | jq -c '[.status.nodes[] | [.node, .pods, .injected.r]]')
[ "$s" = '[["n1",3,9],["n2",1,1]]' ] && ok "  ... n1 applies again: its entry replaced, n2's untouched" || bad "SSA again: $r"
r=$(st faultline-n2 '{"observedGeneration":2,"nodes":[{"node":"n2","pods":1}]}')
check_code 409 "$(code_of "$r")" "  ... n2 applies observedGeneration 2, which n1 owns as 1: 409 Conflict" \
    "$(body_of "$r")" 'conflict with \\"faultline-n1\\": \.status\.observedGeneration'
r=$(st faultline-n2 '{"observedGeneration":2,"nodes":[{"node":"n2","pods":1}]}' force=true)
s=$(body_of "$r" | jq -c '[.status.observedGeneration, [.status.nodes[] | [.node, .injected]]]')
[ "$(code_of "$r")" = 200 ] && [ "$s" = '[2,[["n1",{"r":9}],["n2",null]]]' ] &&
    ok "  ... with force=true: taken over; n2's injected map, no longer applied, removed" || bad "SSA force: $s $r"
r=$(st faultline-n1 '{"nodes":[]}')
s=$(body_of "$r" | jq -c '[.status.observedGeneration, [.status.nodes[] | .node], [.status.conditions[]?.type]]')
[ "$s" = '[2,["n2"],[]]' ] && ok "  ... n1 applies no entry: its entry and condition go, n2's stay" || bad "SSA remove: $s"
N1='{"nodes":[{"node":"n1","pods":2}],"injectedTotal":7,"conditions":[{"type":"Applied","status":"True","reason":"Applied"}]}'
rva=$(body_of "$(st faultline-n1 "$N1")" | jq -r .metadata.resourceVersion)
rvb=$(body_of "$(st faultline-n1 "$N1")" | jq -r .metadata.resourceVersion)
[ "$rva" = "$rvb" ] && [ "$(kapi_get_ctl state | jq -r .resourceVersion)" = "$rva" ] &&
    ok "  ... the same apply again changes nothing: no new resourceVersion ($rva), so no watch event" ||
    bad "no-op apply: $rva -> $rvb"
r=$(raw PATCH "$FP/status" '{"apiVersion":"faultline.dev/v1","kind":"FaultPolicy","status":{}}' application/apply-patch+yaml)
[ "$(code_of "$r")" = 422 ] && ok "  ... apply without fieldManager: 422" || bad "no fieldManager: $r"
m=$(kapi GET "$FP" | jq -c '[.metadata.managedFields[] | [.manager, .operation, .subresource]]')
[ "$m" = '[["faultline-n2","Apply","status"],["faultline-n1","Apply","status"]]' ] &&
    ok "  ... managedFields: one Apply entry per manager, subresource status" || bad "managedFields: $m"
out=$(K get fp -n shop)
check "kubectl get fp: the printer columns" "$out" '^NAME +PODS +INJECTED +STATUS +AGE' \
    '^orders-503 +1 +7 +Applied +[0-9]+s'
gen=$(kapi GET "$FP" | jq -r .metadata.generation)
sed -i 's/status: 503/status: 502/' "$TMP/fp.yaml"
out=$(K apply -f "$TMP/fp.yaml")
o=$(kapi GET "$FP")
[ "$gen" = 1 ] && [ "$(jq -r .metadata.generation <<<"$o")" = 2 ] && [ "$(jq -r '.spec.rules[0].fault.abort.status' <<<"$o")" = 502 ] &&
    [ "$(jq -c '[.status.nodes[].node]' <<<"$o")" = '["n2","n1"]' ] &&
    ok "kubectl apply -f a changed spec: generation 1 -> 2 (status changes left it at 1), status kept" ||
    bad "spec change: $gen -> $(jq -r .metadata.generation <<<"$o")" "$out"
r=$(raw PATCH "$FP" '{"metadata":{"labels":{"x":"y"}}}' application/strategic-merge-patch+json)
[ "$(code_of "$r")" = 415 ] && ok "a strategic merge patch of a custom resource: 415, as on a real server" || bad "SMP CR: $r"
out=$(kwatch 3 "/apis/faultline.dev/v1/namespaces/shop/faultpolicies?watch=1&timeoutSeconds=1")
check "a watch of faultpolicies" "$(grep '^{' <<<"$out")" '"type": "ADDED".*"name": "orders-503"'
out=$(K delete crd faultpolicies.faultline.dev)
r=$(kapi_code GET "$FP")
check_code 404 "$r" "kubectl delete crd: its resources go with it" "$out" 'deleted'

# ---- the end: SIGTERM, nothing left ----
pid=$KAPI_PID
t0=$(date +%s%N)
kapi_stop
ms=$((($(date +%s%N) - t0) / 1000000))
kill -0 "$pid" 2>/dev/null && bad "the server still runs after SIGTERM" || ok "SIGTERM: the server exits at once ($ms ms)"
cleanup
trap - EXIT
left=$(pgrep -f "$TMP" | wc -l)
[ "$left" = 0 ] && [ ! -e "$TMP" ] && ok "cleanup: no process, no files left" || bad "left behind: $left processes"
say "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
