#!/usr/bin/env bash
# The fuzzing step of the test suite:
#
#   bash test/fuzz/ci.sh BUILD_DIR SECONDS
#
# Builds the libFuzzer targets in BUILD_DIR (a tree of its own: clang,
# -DFL_FUZZ=ON -DFL_SANITIZE=ON) and runs every target for SECONDS, one count
# each. The last line is "fuzz: N passed, M failed"; the exit status is
# non-zero when any failed. Inputs that crashed, leaked or timed out are kept
# under BUILD_DIR/crashes/, logs under BUILD_DIR/fuzz-logs/. Without clang and
# libFuzzer every target counts as failed, with a message saying so.
set -uo pipefail
# shellcheck source=test/fuzz/lib.sh
source "$(dirname "$0")/lib.sh"

if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -eq 0 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
dir=$1
secs=$2
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
n=${#FZ_TARGETS[@]}

if ! fz_build "$dir" 2>&1; then
    echo "fuzz: the fuzz targets could not be built; counting all $n as failed"
    echo "fuzz: 0 passed, $n failed"
    exit 1
fi

passed=0
failed=0
for t in "${FZ_TARGETS[@]}"; do
    if fz_run "$dir" "$t" "$secs"; then
        passed=$((passed + 1))
        printf 'fuzz: %-20s ok      %s execs, %s exec/s, corpus %s\n' "$t" "$FZ_EXECS" "$FZ_RATE" "$FZ_CORPUS"
    else
        failed=$((failed + 1))
        printf 'fuzz: %-20s FAILED  %s (after %s execs)\n' "$t" "$FZ_RESULT" "$FZ_EXECS"
        [ -n "$FZ_ARTIFACT" ] && echo "fuzz:   input: $FZ_ARTIFACT (reproduce: $dir/$t $FZ_ARTIFACT)"
        echo "fuzz:   log: $FZ_LOG"
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
