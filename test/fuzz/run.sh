#!/usr/bin/env bash
# Fuzzes faultline with libFuzzer, by hand, for longer than the suite does:
#
#   bash test/fuzz/run.sh [SECONDS] [TARGET...]
#
#   bash test/fuzz/run.sh                        all five targets, 300 s each
#   bash test/fuzz/run.sh 3600 fuzz_h2_server    one target for an hour
#
# Targets: fuzz_http1_request fuzz_http1_response fuzz_h2_server
# fuzz_h2_client fuzz_policy (what each feeds: the comment at the top of
# test/fuzz/TARGET.c). Builds build-fuzz/ (clang, -DFL_FUZZ=ON -DFL_SANITIZE=ON:
# ASan and UBSan), then runs each TARGET for SECONDS, seeded from
# test/fuzz/corpus/TARGET/ (fuzz_policy: policies/*.yaml and the loader's
# fixtures) and test/fuzz/findings/TARGET-*, copied to a temporary directory
# that is removed afterwards (seeds worth keeping go into make_corpus.py).
# Prints per target the executions, the final corpus size and the result; an
# input that crashes, leaks or times out is kept under build-fuzz/crashes/ and
# the script exits non-zero. Needs clang and libclang-rt-14-dev (test/deps.sh).
# The suite's step is test/fuzz/ci.sh, the same runs for FL_FUZZ_SECONDS.
#
#   FL_FUZZ_STUCK=close bash test/fuzz/run.sh 60 fuzz_http1_request
#       counts a connection faultline never frees instead of stopping there
#       (see test/fuzz/harness.h for this and the other FL_FUZZ_* knobs)
#
# Reproduce a kept input, with what each peer saw:
#
#   FL_FUZZ_TRACE=1 build-fuzz/TARGET build-fuzz/crashes/FILE
#
# and once understood, keep it as test/fuzz/findings/TARGET-SYMPTOM (described
# in test/fuzz/findings/README.md): both scripts seed the target with it.
set -uo pipefail
# shellcheck source=test/fuzz/lib.sh
source "$(dirname "$0")/lib.sh"

secs=${1:-300}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS] [TARGET...]   (targets: ${FZ_TARGETS[*]})" >&2
    exit 2
fi
shift $(($# > 0 ? 1 : 0))
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${FZ_TARGETS[@]}")
for t in "${targets[@]}"; do
    if ! fz_is_target "$t"; then
        echo "run.sh: unknown target '$t' (targets: ${FZ_TARGETS[*]})" >&2
        exit 2
    fi
done

dir=$FZ_ROOT/build-fuzz
echo "building the fuzz targets in ${dir#"$FZ_ROOT"/}/ ..."
fz_build "$dir" || exit 1

failed=0
rows=()
for t in "${targets[@]}"; do
    echo "fuzzing $t for ${secs}s (log: ${dir#"$FZ_ROOT"/}/fuzz-logs/$t.log) ..."
    if fz_run "$dir" "$t" "$secs"; then
        status=ok
    else
        status="FAILED: $FZ_RESULT"
        failed=$((failed + 1))
    fi
    line=$(printf '%-20s %10s execs %6s exec/s %6s corpus  %s' "$t" "$FZ_EXECS" "$FZ_RATE" "$FZ_CORPUS" "$status")
    [ -n "$FZ_ARTIFACT" ] && line+=$'\n'"$(printf '%-20s input kept: %s' "" "${FZ_ARTIFACT#"$FZ_ROOT"/}")"
    echo "$line"
    rows+=("$line")
done

echo
echo "fuzzing results (${secs}s per target):"
printf '%s\n' "${rows[@]}"
if [ "$failed" -gt 0 ]; then
    echo "$failed of ${#targets[@]} target(s) failed; inputs under ${dir#"$FZ_ROOT"/}/crashes/, logs under ${dir#"$FZ_ROOT"/}/fuzz-logs/"
    exit 1
fi
echo "all ${#targets[@]} target(s) ran clean"
