#!/usr/bin/env bash
# Installs faultline's build and test dependencies from Debian 12 packages when any
# is missing. Sourced by test/run and examples/demo.sh; run directly it installs.
#
#   source test/deps.sh && fl_deps_install
#
# A package counts as present when dpkg has it installed; node and npm also count
# when their commands exist (a NodeSource nodejs ships npm and conflicts with
# Debian's npm package).

FL_DEPS_PACKAGES=(
    build-essential cmake pkg-config libuv1-dev libyaml-dev node-llhttp libnghttp2-dev
    libbpf-dev bpftool clang llvm libelf-dev zlib1g-dev libjansson-dev libcurl4-openssl-dev openssl libclang-rt-14-dev kubernetes-client
    curl wrk nghttp2-client haproxy nginx-light iproute2 nodejs npm netcat-openbsd jq python3 python3-yaml bc
)

fl_deps_missing() {
    local p missing=()
    for p in "${FL_DEPS_PACKAGES[@]}"; do
        case $p in
            nodejs) command -v node >/dev/null 2>&1 && continue ;;
            npm) command -v npm >/dev/null 2>&1 && continue ;;
            # Any kubectl will do (the image's 1.32 conflicts with Debian's package).
            kubernetes-client) command -v kubectl >/dev/null 2>&1 && continue ;;
        esac
        if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
            missing+=("$p")
        fi
    done
    echo "${missing[*]}"
}

# Returns 0 when everything is present afterwards.
fl_deps_install() {
    local missing sudo=()
    missing=$(fl_deps_missing)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "deps: missing packages: $missing" >&2
            echo "deps: run as root: apt-get update && apt-get install -y $missing" >&2
            return 1
        fi
    fi
    echo "deps: installing $missing" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || return 1
    # shellcheck disable=SC2086 # word splitting of the package list is wanted
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends $missing >&2 || return 1
    missing=$(fl_deps_missing)
    if [ -n "$missing" ]; then
        echo "deps: still missing after apt-get: $missing" >&2
        return 1
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    fl_deps_install
fi
