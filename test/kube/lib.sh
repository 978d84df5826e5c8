# test/kube/lib.sh: the test API server (apiserver.py) for the Kubernetes tests.
#
#   source test/kube/lib.sh
#   kapi_start DIR      certificates (CA, server, client), a token, kubeconfigs; the
#                       server in the background. Sets KAPI_DIR, KAPI_PORT, KAPI_URL,
#                       KAPI_PID, KAPI_TOKEN (file), KAPI_KUBECONFIG (token user),
#                       KAPI_KUBECONFIG_CERT (client-certificate user)
#   kapi_restart        stops it and starts it again on the same port, state kept
#   kapi_stop           stops it
#   kapi METHOD PATH [JSON]   a request with the token (prints the body)
#   kapi_ctl NAME [QUERY]     a test control (POST /_test/NAME?QUERY)

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

kapi_kubeconfig() { # FILE USER-LINES
    {
        printf 'apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n'
        printf '  cluster:\n    server: %s\n    certificate-authority-data: %s\n' \
            "$KAPI_URL" "$(base64 -w0 "$KAPI_DIR/ca.crt")"
        printf 'users:\n- name: test\n  user:\n%s\n' "$2"
        printf 'contexts:\n- name: test\n  context: {cluster: test, user: test, namespace: default}\n'
    } >"$1"
}

kapi_run() {
    python3 "$(dirname "${BASH_SOURCE[0]}")/apiserver.py" --dir "$KAPI_DIR" --port "${KAPI_PORT:-0}" \
        --state "$KAPI_DIR/state.json" >>"$KAPI_DIR/server.log" 2>&1 &
    KAPI_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [ -s "$KAPI_DIR/port" ] && break
        kill -0 "$KAPI_PID" 2>/dev/null || break
        sleep 0.05
    done
    [ -s "$KAPI_DIR/port" ] || {
        echo "kapi: the test API server did not start: $(tail -5 "$KAPI_DIR/server.log")" >&2
        return 1
    }
    KAPI_PORT=$(cat "$KAPI_DIR/port")
    KAPI_URL=https://127.0.0.1:$KAPI_PORT
}

kapi_start() { # DIR
    KAPI_DIR=$1
    mkdir -p "$KAPI_DIR" && kapi_certs "$KAPI_DIR" || {
        echo "kapi: openssl failed" >&2
        return 1
    }
    KAPI_TOKEN=$KAPI_DIR/token
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$KAPI_TOKEN"
    KAPI_PORT=0
    kapi_run || return 1
    KAPI_KUBECONFIG=$KAPI_DIR/kubeconfig
    KAPI_KUBECONFIG_CERT=$KAPI_DIR/kubeconfig-cert
    kapi_kubeconfig "$KAPI_KUBECONFIG" "    tokenFile: $KAPI_TOKEN"
    kapi_kubeconfig "$KAPI_KUBECONFIG_CERT" "    client-certificate: $KAPI_DIR/client.crt
    client-key: $KAPI_DIR/client.key"
}

kapi_stop() {
    [ -n "${KAPI_PID:-}" ] || return 0
    kill -TERM "$KAPI_PID" 2>/dev/null
    wait "$KAPI_PID" 2>/dev/null
    KAPI_PID=
}

kapi_restart() {
    kapi_stop
    rm -f "$KAPI_DIR/port"
    kapi_run
}

kapi() { # METHOD PATH [JSON]
    local ct=application/json
    [ "$1" = PATCH ] && ct=application/merge-patch+json
    curl -sS --cacert "$KAPI_DIR/ca.crt" -H "Authorization: Bearer $(cat "$KAPI_TOKEN")" \
        -H "Content-Type: $ct" -X "$1" ${3:+--data-binary "$3"} "$KAPI_URL$2"
}

kapi_ctl() { # NAME [QUERY]
    curl -sS --cacert "$KAPI_DIR/ca.crt" -X POST "$KAPI_URL/_test/$1${2:+?$2}" >/dev/null
}
