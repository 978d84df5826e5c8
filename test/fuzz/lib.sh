# shellcheck shell=bash disable=SC2034  # FZ_* are read by the scripts that source this
# Shared by test/fuzz/run.sh and test/fuzz/ci.sh (sourced): build the libFuzzer
# targets in a tree of their own and run one for a while.
#
#   fz_build DIR            configure and build DIR (clang, FL_FUZZ, FL_SANITIZE)
#   fz_run DIR TARGET SECS  fuzz TARGET for SECS seconds; sets FZ_RESULT,
#                           FZ_EXECS, FZ_RATE, FZ_CORPUS, FZ_ARTIFACT, FZ_LOG
#
# Logs go to DIR/fuzz-logs/, inputs that crash, leak or time out to DIR/crashes/.

FZ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FZ_TARGETS=(fuzz_http1_request fuzz_http1_response fuzz_h2_server fuzz_h2_client fuzz_policy)

fz_max_len() {
    case $1 in
        fuzz_http1_*) echo 8192 ;;
        fuzz_h2_*) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

fz_dict() {
    case $1 in
        fuzz_http1_*) echo "$FZ_ROOT/test/fuzz/dict/http1.dict" ;;
        fuzz_h2_*) echo "$FZ_ROOT/test/fuzz/dict/h2.dict" ;;
        fuzz_policy) echo "$FZ_ROOT/test/fuzz/dict/policy.dict" ;;
    esac
}

fz_is_target() {
    local t
    for t in "${FZ_TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
    return 1
}

# Is there a clang that can build and link a libFuzzer target?
fz_check_clang() {
    if ! command -v clang >/dev/null 2>&1; then
        echo "fuzz: clang not found: the fuzz targets need clang and libFuzzer" \
            "(apt-get install clang libclang-rt-14-dev)" >&2
        return 1
    fi
    local t
    t=$(mktemp -d /tmp/fl-fuzz-probe.XXXXXX) || return 1
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$t/probe.c"
    if ! clang -fsanitize=fuzzer,address,undefined "$t/probe.c" -o "$t/probe" >"$t/log" 2>&1; then
        echo "fuzz: clang cannot link a libFuzzer target (is libclang-rt-14-dev installed?):" >&2
        sed 's/^/  /' "$t/log" | head -n 5 >&2
        rm -rf "$t"
        return 1
    fi
    rm -rf "$t"
    return 0
}

fz_build() {
    local dir=$1 jobs
    jobs=$(nproc 2>/dev/null || echo 2)
    fz_check_clang || return 1
    mkdir -p "$dir/fuzz-logs" || return 1
    if ! CC=clang cmake -S "$FZ_ROOT" -B "$dir" -DFL_FUZZ=ON -DFL_SANITIZE=ON \
        -DCMAKE_BUILD_TYPE=Debug -DFL_BPF=OFF >"$dir/fuzz-logs/configure.log" 2>&1; then
        echo "fuzz: configuring $dir failed:" >&2
        tail -n 30 "$dir/fuzz-logs/configure.log" >&2
        return 1
    fi
    if ! cmake --build "$dir" --target fuzz -j"$jobs" >"$dir/fuzz-logs/build.log" 2>&1; then
        echo "fuzz: building the fuzz targets in $dir failed:" >&2
        grep -E 'error|Error' "$dir/fuzz-logs/build.log" | head -n 30 >&2
        return 1
    fi
    return 0
}

# The seeds of TARGET into the (empty) directory $2.
fz_seed() {
    local t=$1 out=$2
    if [ "$t" = fuzz_policy ]; then
        cp "$FZ_ROOT"/policies/*.yaml "$out/" 2>/dev/null
        local f
        # The loader's own fixtures, valid and not, under names of their own.
        for f in "$FZ_ROOT"/test/unit/fixtures/policy/*/*.yaml; do
            [ -e "$f" ] && cp "$f" "$out/fixture-$(basename "$(dirname "$f")")-$(basename "$f")"
        done
    fi
    if [ -d "$FZ_ROOT/test/fuzz/corpus/$t" ]; then
        cp "$FZ_ROOT/test/fuzz/corpus/$t"/* "$out/" 2>/dev/null
    fi
    # Reproducers of what was found (test/fuzz/findings/README.md) stay seeds:
    # a regression is seen at once, not when the fuzzer happens on it again.
    for f in "$FZ_ROOT/test/fuzz/findings/$t"-*; do
        [ -e "$f" ] && cp "$f" "$out/"
    done
    return 0
}

fz_run() {
    local dir=$1 t=$2 secs=$3
    local bin="$dir/$t" crashes="$dir/crashes" work rc dict
    FZ_RESULT="" FZ_EXECS="?" FZ_RATE="?" FZ_CORPUS="?" FZ_ARTIFACT="" FZ_LOG="$dir/fuzz-logs/$t.log"
    mkdir -p "$crashes" "$dir/fuzz-logs"
    if [ ! -x "$bin" ]; then
        FZ_RESULT="not built"
        return 1
    fi
    work=$(mktemp -d /tmp/fl-fuzz-"$t".XXXXXX) || return 1
    mkdir -p "$work/corpus"
    fz_seed "$t" "$work/corpus"
    local args=(-max_total_time="$secs" -max_len="$(fz_max_len "$t")" -timeout=10
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/")
    dict=$(fz_dict "$t")
    [ -n "$dict" ] && [ -f "$dict" ] && args+=(-dict="$dict")
    # Bounded twice: libFuzzer's own clock, and a hard stop for a hang it
    # cannot see (the initial corpus run counts toward neither otherwise).
    (cd "$work" && UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
        timeout -k 10 $((secs + 120)) "$bin" "${args[@]}" corpus) >"$FZ_LOG" 2>&1
    rc=$?
    FZ_EXECS=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$FZ_LOG" | tail -n 1)
    FZ_RATE=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$FZ_LOG" | tail -n 1)
    if [ -z "$FZ_EXECS" ]; then # no final stats: take the last status line
        FZ_EXECS=$(sed -nE 's/^#([0-9]+)[[:space:]].*/\1/p' "$FZ_LOG" | tail -n 1)
        FZ_RATE=$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' "$FZ_LOG" | tail -n 1)
    fi
    FZ_EXECS=${FZ_EXECS:-?} FZ_RATE=${FZ_RATE:-?}
    FZ_CORPUS=$(find "$work/corpus" -type f | wc -l)
    local a
    for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work"/slow-unit-*; do
        [ -e "$a" ] || continue
        case $(basename "$a") in slow-unit-*) continue ;; esac
        cp "$a" "$crashes/$t-$(basename "$a")"
        FZ_ARTIFACT="$crashes/$t-$(basename "$a")"
    done
    rm -rf "$work"
    local why
    why=$(grep -m1 -oE 'faultline-fuzz: (FINDING|HARNESS ERROR)[^:]*: .*' "$FZ_LOG" | cut -c17-)
    [ -z "$why" ] && why=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): [^ ]+( [^ ]+)?' "$FZ_LOG")
    [ -z "$why" ] && why=$(grep -m1 -oE 'runtime error: .*' "$FZ_LOG" | cut -c1-120)
    local counted
    counted=$(sed -nE 's/^faultline-fuzz: FL_FUZZ_STUCK=close: ([0-9]+) input.*/\1/p' "$FZ_LOG" | tail -n 1)
    if [ $rc -eq 0 ] && grep -q '^Done [0-9]* runs' "$FZ_LOG"; then
        if [ -n "$counted" ]; then
            FZ_RESULT="$counted input(s) leaked a connection (counted: FL_FUZZ_STUCK=close)"
            return 1
        fi
        FZ_RESULT=ok
        return 0
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        FZ_RESULT="hung: killed after $((secs + 120)) s${why:+ ($why)}"
    elif [ -n "$why" ]; then
        FZ_RESULT=$why
    else
        FZ_RESULT="failed (exit $rc)"
    fi
    return 1
}
