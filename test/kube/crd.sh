#!/bin/bash
# The FaultPolicy CRD (examples/kubernetes/crd.yaml) against faultline's loader:
# the schema is structural (as the API server requires of a v1 CRD), every
# example policy without listeners: converted to a FaultPolicy resource passes
# both the schema and the loader, and the cases of test/kube/crd/CASES reach
# their verdict in both. The schema is checked by test/kube/crdschema.py, the
# API server's handling of a CRD schema (pruning, strict field validation as
# kubectl asks for it, the OpenAPI v3 subset; standard library only), which
# the test API server uses too. No root, no network.
#
# usage: bash test/kube/crd.sh build/faultline
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
FL=$(cd "$(dirname "${1:?usage: crd.sh path/to/faultline}")" && pwd)/$(basename "$1")
CRD=$ROOT/examples/kubernetes/crd.yaml
SCHEMA="python3 $HERE/crdschema.py"
TMP=$(mktemp -d /tmp/fl-crd-test.XXXXXX)
PASS=0 FAIL=0 SKIP=0
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=test/bpf/lib.sh
source "$HERE/../bpf/lib.sh"
python3 -c 'import yaml' 2>/dev/null || { say "test/kube/crd: needs python3-yaml"; exit 1; }
[ -x "$FL" ] || { say "test/kube/crd: $FL is not executable"; exit 1; }

# convert policy|resource IN OUT: a policy file to the FaultPolicy resource it
# becomes in a cluster, or a resource back to the file form the file loader
# takes. In a resource the selector's namespace is the resource's own, and
# on, match.method and pods.cgroup are lists (a file may give one string).
convert() {
    python3 - "$@" <<'PY'
import sys, yaml
mode, src, dst = sys.argv[1:]
d = yaml.safe_load(open(src))
# PyYAML reads YAML 1.1, where a bare `on` key is the boolean true; libyaml's
# loader in faultline reads it as the string it is in a file.
for r in ((d.get('spec') or {}).get('rules') or []) if mode == 'policy' else []:
    if isinstance(r, dict) and True in r:
        r['on'] = r.pop(True)
spec = d.get('spec') if isinstance(d.get('spec'), dict) else {}
targets = spec.get('targets') if isinstance(spec.get('targets'), list) else []
rules = spec.get('rules') if isinstance(spec.get('rules'), list) else []
md = d.setdefault('metadata', {})
if mode == 'policy':        # policy file -> resource
    d['apiVersion'] = 'faultline.dev/v1'
    nss = set()
    for t in targets:
        pods = t.get('pods') or {}
        if isinstance(pods.get('selector'), dict) and 'namespace' in pods['selector']:
            nss.add(pods['selector'].pop('namespace'))
        if isinstance(pods.get('cgroup'), str):
            pods['cgroup'] = [pods['cgroup']]
    if len(nss) > 1:
        sys.exit('%s: its selectors name several namespaces; a resource has one' % src)
    md['namespace'] = nss.pop() if nss else 'default'
    for r in rules:
        if isinstance(r.get('on'), str):
            r['on'] = [r['on']]
        m = r.get('match') or {}
        if isinstance(m.get('method'), str):
            m['method'] = [m['method']]
else:                       # resource -> policy file
    d['apiVersion'] = 'faultline/v1'
    ns = md.pop('namespace', 'default')
    for t in targets:
        sel = (t.get('pods') or {}).get('selector') if isinstance(t, dict) else None
        if isinstance(sel, dict):
            sel.setdefault('namespace', ns)
yaml.safe_dump(d, open(dst, 'w'), sort_keys=False)
PY
}

# ---------------------------------------------------------------------------
# loader_check RESOURCE: the loader's half of a case, on the resource as the
# API server would store it: read the way kubectl reads YAML (1.1: a bare
# `on` is true), sent as JSON, then `faultline validate -f` on that JSON
# (metadata.namespace makes the loader take it as a resource: no listeners,
# selectors in its own namespace). Prints the loader's errors; 0 if it takes
# the resource, 1 if it refuses it.
LOADER_FORM='resource'
loader_check() {
    local js=$TMP/loader-$(basename "$1" .yaml).json
    python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), open(sys.argv[2], "w"), default=str)' \
        "$1" "$js" || return 2
    "$FL" validate -f "$js" 2>&1
}
# ---------------------------------------------------------------------------

# run_case FILE VERDICT [PATTERN [NAME]]
run_case() {
    local f=$1 verdict=$2 pat=${3:-} name=${4:-${1#"$ROOT"/}} out rc want
    out=$($SCHEMA validate "$CRD" "$f" 2>&1)
    rc=$?
    case $verdict in accept | loader) want=0 ;; *) want=1 ;; esac
    if [ "$rc" != "$want" ]; then
        bad "schema: $name: $([ "$want" = 0 ] && echo refused || echo accepted), want $verdict" "$out"
    elif [ -n "$pat" ] && ! grep -qE -- "$pat" <<<"$out"; then
        bad "schema: $name: refused, but not for /$pat/" "$out"
    else
        ok "schema: $name: $([ "$rc" = 0 ] && echo accepted || echo "refused: $(sed -n 2p <<<"$out" | sed 's/^ *//' | cut -c1-110)")"
    fi
    if [ "$verdict" = resource ] && [ "$LOADER_FORM" = file ]; then
        SKIP=$((SKIP + 1))
        say "skip - loader: $name: its file form is a valid policy; needs the resource loader"
        return
    fi
    out=$(loader_check "$f")
    rc=$?
    case $verdict in accept) want=0 ;; *) want=1 ;; esac
    if [ "$rc" != "$want" ]; then
        bad "loader: $name: $([ "$want" = 0 ] && echo refused || echo "accepted (rc $rc)"), want $verdict" "$out"
    else
        ok "loader: $name: $([ "$rc" = 0 ] && echo accepted || echo "refused: $(head -1 <<<"$out" | sed 's/^[^ ]*: //' | cut -c1-110)")"
    fi
}

out=$($SCHEMA check "$CRD" 2>&1)
check "the CRD's schema is structural (what a v1 CRD must be)" "$out" '^structural$'
out=$(python3 - "$CRD" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
s = d['spec']; v = s['versions'][0]
print(d['metadata']['name'], s['group'], s['scope'], s['names']['kind'], s['names']['plural'],
      ','.join(s['names']['shortNames']), v['name'], v['served'], v['storage'],
      'status' in v.get('subresources', {}),
      ','.join(c['name'] + '=' + c['jsonPath'] for c in v['additionalPrinterColumns']))
st = v['schema']['openAPIV3Schema']['properties']['status']['properties']
print('nodes', st['nodes']['x-kubernetes-list-type'], st['nodes']['x-kubernetes-list-map-keys'],
      'conditions', st['conditions']['x-kubernetes-list-type'], st['conditions']['x-kubernetes-list-map-keys'])
PY
)
check "the CRD: names, version, status subresource, printer columns, keyed status lists" "$out" \
    '^faultpolicies\.faultline\.dev faultline\.dev Namespaced FaultPolicy faultpolicies fp v1 True True True Pods=\.status\.pods,Injected=\.status\.injected,Status=\.status\.conditions\[\?\(@\.type=="Applied"\)\]\.reason,Age=\.metadata\.creationTimestamp$' \
    "^nodes map \['node'\] conditions map \['type'\]$"

# The example policies, converted; those with listeners: have no resource form.
n=0
for p in "$ROOT"/policies/*.yaml; do
    grep -q '^ *listeners:' "$p" && continue
    r=$TMP/resource-$(basename "$p")
    if ! convert policy "$p" "$r"; then
        bad "convert ${p#"$ROOT"/} to a resource"
        continue
    fi
    run_case "$r" accept '' "${p#"$ROOT"/} as a resource"
    n=$((n + 1))
done
[ "$n" -ge 3 ] && ok "$n policies/*.yaml without listeners: converted and checked" || bad "only $n policies converted"
for f in "$ROOT"/examples/kubernetes/faultpolicies/*.yaml; do
    run_case "$f" accept
done

# The cases, each with its verdict from test/kube/crd/CASES.
listed=()
while read -r f verdict pat; do
    case $f in '' | '#'*) continue ;; esac
    listed+=("$f")
    case $verdict in accept | reject | loader | resource) ;; *)
        bad "CASES: $f: unknown verdict '$verdict'"
        continue ;;
    esac
    [ -f "$HERE/crd/$f" ] || { bad "CASES: $f: no such file"; continue; }
    run_case "$HERE/crd/$f" "$verdict" "$pat"
done <"$HERE/crd/CASES"
for f in "$HERE"/crd/*.yaml; do
    printf '%s\n' "${listed[@]}" | grep -qxF "$(basename "$f")" || bad "test/kube/crd/$(basename "$f") has no verdict in CASES"
done

# Strict field validation is the client's choice: without it the server drops
# unknown fields (listeners too) and takes the rest, so a daemon never sees them.
out=$($SCHEMA validate --no-strict "$CRD" "$HERE/crd/bad-listeners.yaml" 2>&1)
check "without strict field validation listeners: is dropped, not refused" "$out" ': ok$'

say "$PASS passed, $FAIL failed, $SKIP skipped"
[ "$FAIL" = 0 ]
