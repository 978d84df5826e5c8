#!/usr/bin/env bash
# Fuzzes the policy loader with libFuzzer for SECONDS (default 60), seeded with
# the shipped policies. Needs clang and libclang-rt-14-dev (apt-get install).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
out=$(mktemp -d /tmp/fl-fuzz.XXXXXX)
trap 'rm -rf "$out"' EXIT
srcs=("$root"/src/policy/{policy,values,rule_index,match}.c)
clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I"$root/src/common" -I"$root/src/policy" \
  "$root/test/fuzz/fuzz_policy.c" "${srcs[@]}" -lyaml -o "$out/fuzz_policy"
mkdir -p "$out/corpus"
cp "$root"/policies/*.yaml "$out/corpus/" 2>/dev/null || true
"$out/fuzz_policy" -max_total_time="$secs" -max_len=4096 "$out/corpus"
