# shellcheck shell=bash
# test/kube/lib.sh: the test API server (apiserver.py) for the Kubernetes tests.
#
#   source test/kube/lib.sh
#   kapi_start DIR [SERVER-ARGS...]
#                       certificates (CA, server, client; kapi_certs), a token, then the
#                       server in the background (it writes the kubeconfigs). Sets:
#                         KAPI_DIR    the directory             KAPI_PID  the server's pid
#                         KAPI_PORT   its port                  KAPI_URL  https://127.0.0.1:PORT
#                         KAPI_CA     DIR/ca.crt
#                         KAPI_TOKEN_FILE (= KAPI_TOKEN)        the token, read on every request
#                         KAPI_KUBECONFIG_TOKEN (= KAPI_KUBECONFIG)  user with tokenFile
#                         KAPI_KUBECONFIG_CERT                  user with a client certificate
#                         KAPI_KUBECONFIG_INLINE                user with the token inline
#                         KAPI_CLIENT_CERT, KAPI_CLIENT_KEY     the client certificate and key
#                       State is kept in DIR/state.json (kapi_restart keeps it).
#   kapi_restart [--fresh]   stops it and starts it again on the same port; the objects
#                       and the resourceVersion counter are kept unless --fresh
#   kapi_stop           stops it (SIGTERM; it exits at once)
#   kapi METHOD PATH [JSON [CONTENT-TYPE]]
#                       a request with the token; prints the body. PATCH defaults to
#                       application/merge-patch+json, others to application/json
#   kapi_code METHOD PATH [JSON [CONTENT-TYPE]]   the same, prints the HTTP status only
#   kapi_ctl NAME [QUERY]     a test control: POST /_test/NAME?QUERY (see apiserver.py)
#   kapi_get_ctl NAME         GET /_test/NAME (requests, watches, state); prints the body
#   kapi_wait_watches N [PATH-PREFIX [SECS]]
#                       waits until N watches (under PATH-PREFIX) are open; 1 if not
#   kapi_kubectl ARGS...      kubectl with the token kubeconfig and a cache of its own

kapi_certs() { # DIR
    local d=$1
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" -days 2 \
        -subj /CN=faultline-test-ca >/dev/null 2>&1 || return 1
    openssl req -newkey rsa:2048 -nodes -keyout "$d/server.key" -out "$d/server.csr" \
        -subj /CN=localhost >/dev/null 2>&1 || return 1
    printf 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n' >"$d/san.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -out "$d/server.crt" -days 2 -extfile "$d/san.ext" >/dev/null 2>&1 || return 1
    openssl req -newkey rsa:2048 -nodes -keyout "$d/client.key" -out "$d/client.csr" \
        -subj "/CN=system:serviceaccount:faultline:faultline" >/dev/null 2>&1 || return 1
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -out "$d/client.crt" -days 2 >/dev/null 2>&1
}

kapi_run() {
    rm -f "$KAPI_DIR/port"
    python3 "$(dirname "${BASH_SOURCE[0]}")/apiserver.py" --dir "$KAPI_DIR" --port "${KAPI_PORT:-0}" \
        --state "$KAPI_DIR/state.json" "${KAPI_ARGS[@]}" >>"$KAPI_DIR/server.log" 2>&1 &
    KAPI_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        [ -s "$KAPI_DIR/port" ] && break
        kill -0 "$KAPI_PID" 2>/dev/null || break
        sleep 0.05
    done
    [ -s "$KAPI_DIR/port" ] || {
        echo "kapi: the test API server did not start: $(tail -5 "$KAPI_DIR/server.log")" >&2
        kill -TERM "$KAPI_PID" 2>/dev/null
        KAPI_PID=
        return 1
    }
    KAPI_PORT=$(cat "$KAPI_DIR/port")
    KAPI_URL=https://127.0.0.1:$KAPI_PORT
}

kapi_start() { # DIR [SERVER-ARGS...]
    KAPI_DIR=$(mkdir -p "$1" && cd "$1" && pwd) || return 1
    shift
    KAPI_ARGS=("$@")
    kapi_certs "$KAPI_DIR" || {
        echo "kapi: openssl failed" >&2
        return 1
    }
    KAPI_TOKEN=$KAPI_DIR/token
    KAPI_TOKEN_FILE=$KAPI_TOKEN
    KAPI_CA=$KAPI_DIR/ca.crt
    KAPI_CLIENT_CERT=$KAPI_DIR/client.crt
    KAPI_CLIENT_KEY=$KAPI_DIR/client.key
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$KAPI_TOKEN"
    rm -f "$KAPI_DIR/state.json"
    KAPI_PORT=0
    kapi_run || return 1
    KAPI_KUBECONFIG=$KAPI_DIR/kubeconfig
    KAPI_KUBECONFIG_TOKEN=$KAPI_KUBECONFIG
    KAPI_KUBECONFIG_CERT=$KAPI_DIR/kubeconfig-cert
    KAPI_KUBECONFIG_INLINE=$KAPI_DIR/kubeconfig-inline
    export KAPI_DIR KAPI_PORT KAPI_URL KAPI_PID KAPI_CA KAPI_TOKEN KAPI_TOKEN_FILE KAPI_KUBECONFIG \
        KAPI_KUBECONFIG_TOKEN KAPI_KUBECONFIG_CERT KAPI_KUBECONFIG_INLINE KAPI_CLIENT_CERT KAPI_CLIENT_KEY
}

kapi_stop() {
    [ -n "${KAPI_PID:-}" ] || return 0
    kill -TERM "$KAPI_PID" 2>/dev/null
    wait "$KAPI_PID" 2>/dev/null
    KAPI_PID=
}

kapi_restart() { # [--fresh]
    kapi_stop
    [ "${1:-}" = --fresh ] && rm -f "$KAPI_DIR/state.json"
    kapi_run
}

kapi() { # METHOD PATH [JSON [CONTENT-TYPE]]
    local ct=${4:-application/json}
    [ "$1" = PATCH ] && [ -z "${4:-}" ] && ct=application/merge-patch+json
    curl -sS --cacert "$KAPI_DIR/ca.crt" -H "Authorization: Bearer $(cat "$KAPI_TOKEN")" \
        -H "Content-Type: $ct" -X "$1" ${3:+--data-binary "$3"} "$KAPI_URL$2"
}

kapi_code() { # METHOD PATH [JSON [CONTENT-TYPE]]
    local ct=${4:-application/json}
    [ "$1" = PATCH ] && [ -z "${4:-}" ] && ct=application/merge-patch+json
    curl -sS -o /dev/null -w '%{http_code}' --cacert "$KAPI_DIR/ca.crt" \
        -H "Authorization: Bearer $(cat "$KAPI_TOKEN")" \
        -H "Content-Type: $ct" -X "$1" ${3:+--data-binary "$3"} "$KAPI_URL$2"
}

kapi_ctl() { # NAME [QUERY]
    curl -sS --cacert "$KAPI_DIR/ca.crt" -X POST "$KAPI_URL/_test/$1${2:+?$2}" >/dev/null
}

kapi_get_ctl() { # NAME
    curl -sS --cacert "$KAPI_DIR/ca.crt" "$KAPI_URL/_test/$1"
}

kapi_wait_watches() { # N [PATH-PREFIX [SECS]]
    local n=$1 prefix=${2:-/} secs=${3:-5} i got
    for ((i = 0; i < secs * 20; i++)); do
        got=$(kapi_get_ctl watches | python3 -c 'import json,sys
print(sum(1 for w in json.load(sys.stdin) if w["path"].startswith(sys.argv[1])))' "$prefix")
        [ "${got:-0}" -ge "$n" ] && return 0
        sleep 0.05
    done
    return 1
}

kapi_kubectl() { # ARGS...
    kubectl --kubeconfig "$KAPI_KUBECONFIG" --cache-dir "$KAPI_DIR/kubectl-cache" "$@"
}
