# Shared by test/bpf/run.sh and test/bpf/transparent.sh: the TAP-like output
# and the outcome checks. The caller sets PASS=0 FAIL=0.

say() { printf '%s\n' "$*"; }
ok() { PASS=$((PASS + 1)); say "ok   - $1"; }
bad() { FAIL=$((FAIL + 1)); say "FAIL - $1"; [ -n "${2:-}" ] && sed 's/^/       | /' <<<"$2" | head -40; }
check() { # check NAME OUTPUT pattern... ("!pattern": must not match)
    local name=$1 out=$2 pat; shift 2
    for pat in "$@"; do
        if [ "${pat:0:1}" = "!" ]; then
            grep -qE -- "${pat:1}" <<<"$out" && { bad "$name (unexpected /${pat:1}/)" "$out"; return 1; }
        else
            grep -qE -- "$pat" <<<"$out" || { bad "$name (missing /$pat/)" "$out"; return 1; }
        fi
    done
    ok "$name"
}
