#!/usr/bin/env bash
# The layer order of src/ holds in the built tree: every fl_ symbol a library
# needs is defined in that library or in one of the layers below it, the unit
# tests link the engine only, and faultctl links no policy loader.
#
#   bash test/layers.sh BUILD_DIR
#
# Layers (docs/architecture.md): common <- policy values <- policy <- proxy
# <- steer <- control, with kube (the Kubernetes API client) beside proxy:
# on policy, under steer and control; cli uses common and the policy values only.
set -u
build=${1:?usage: test/layers.sh BUILD_DIR}
cd "$build" || exit 2
pass=0
fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

declare -A below=(
    [fl_common]=""
    [fl_policy_values]="fl_common"
    [fl_policy]="fl_policy_values fl_common"
    [fl_proxy]="fl_policy fl_policy_values fl_common"
    [fl_kube]="fl_policy fl_policy_values fl_common"
    [fl_steer]="fl_kube fl_proxy fl_policy fl_policy_values fl_common"
    [fl_control]="fl_steer fl_kube fl_proxy fl_policy fl_policy_values fl_common"
    [fl_cli]="fl_policy_values fl_common"
)

# defined LIB: the fl_ symbols the archive defines (text, data, bss, rodata)
defined() { nm -g --defined-only "lib$1.a" 2>/dev/null | awk '$3 ~ /^fl_/ {print $3}' | sort -u; }
# needed LIB: the fl_ symbols the archive uses and does not define itself
needed() {
    comm -23 <(nm -u "lib$1.a" 2>/dev/null | awk '$2 ~ /^fl_/ {print $2}' | sort -u) <(defined "$1")
}

for lib in fl_common fl_policy_values fl_policy fl_proxy fl_kube fl_steer fl_control fl_cli; do
    if [ ! -f "lib$lib.a" ]; then
        bad "$lib: lib$lib.a was not built"
        continue
    fi
    allowed=$(for l in ${below[$lib]}; do defined "$l"; done | sort -u)
    stray=$(comm -23 <(needed "$lib") <(echo "$allowed"))
    if [ -z "$stray" ]; then
        ok "$lib uses only itself and the layers below it (${below[$lib]:-none})"
    else
        # Name the library that defines each stray symbol: that is the back-edge.
        for s in $stray; do
            owner=$(for l in "${!below[@]}"; do defined "$l" | grep -qx "$s" && echo "$l"; done)
            bad "$lib needs $s from ${owner:-nowhere}: a call up the layers"
        done
    fi
done

# The unit tests link common, policy and proxy: nothing of steering or control.
if [ -x fl_unit ]; then
    up=$(nm fl_unit | awk '{print $NF}' |
        grep -E '^fl_(admin|daemon|runtime|metrics|policy_json|bpf|tp|pods|netns|cgroup)_' | sort -u)
    if [ -z "$up" ]; then
        ok "fl_unit has no admin, daemon, runtime, BPF-loader or transparent-mode symbol"
    else
        bad "fl_unit links symbols of the upper layers:" $up
    fi
else
    bad "fl_unit was not built"
fi

# faultctl: the admin client and the value parsers, no policy loader.
if [ -x faultctl ]; then
    up=$(nm faultctl | awk '{print $NF}' |
        grep -E '^fl_(policy_load|policy_unref|rule_index|fault_decide|match_request|workers|conn|admin|runtime)' |
        sort -u)
    if [ -z "$up" ]; then
        ok "faultctl links no policy loader, engine or daemon symbol"
    else
        bad "faultctl links:" $up
    fi
    if nm faultctl | grep -q ' T fl_values_parse_duration$'; then
        ok "faultctl links the policy value parsers"
    else
        bad "faultctl lacks fl_values_parse_duration: has the value library moved?"
    fi
else
    bad "faultctl was not built"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
