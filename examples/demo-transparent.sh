#!/usr/bin/env bash
# Transparent-mode demo: a sample "pod" (a cgroup v2 directory plus a network
# namespace joined to the host by a veth, 10.77.50.0/24) calls a sample
# service on the host end of the veth. The client is plain curl pointed at
# the service's own address: nothing in it changes. faultline (run with a
# policy that has `targets:`) steers the pod's connections into its proxy with
# cgroup BPF hooks and injects faults; once it stops, traffic flows direct.
#
#   sudo examples/demo-transparent.sh [path/to/faultline]
#
# Exits 2 (with faultline's one-line reason) when this host cannot run
# transparent mode (not root, no BTF, no cgroup v2, BPF features missing), so
# a caller can fall back to explicit mode.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
FL=$(readlink -f "${1:-$root/build/faultline}")
SVC=18550 PROXY=18551
T=fldemo$$ NS=fldemo$$n VH=fldemo$$v
tmp=$(mktemp -d /tmp/fl-demo-tp.XXXXXX)
pids=() dpid=

[ -x "$FL" ] || { echo "demo: $FL not built: cmake -S . -B build && cmake --build build" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "demo: transparent mode needs root (BPF, cgroups, netns)" >&2; exit 2; }
CG2=$(awk -F' - ' '$2 ~ /^cgroup2 / { split($1, f, " "); print f[5]; exit }' /proc/self/mountinfo)
[ -n "$CG2" ] || { echo "demo: no cgroup v2 mount (hybrid hosts: mount -t cgroup2 none /sys/fs/cgroup/unified)" >&2; exit 2; }
CG=$CG2/$T

cleanup() {
  set +e
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p"; done
  wait 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  ip link del "$VH" 2>/dev/null
  for _ in 1 2 3 4 5; do
    [ -d "$CG" ] || break
    find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
    sleep 0.2
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# in_pod CMD...: run CMD as the pod: join its cgroup, then enter its netns.
in_pod() { sh -c 'echo $$ > "$0/cgroup.procs" && exec ip netns exec "$1" sh -c "$2"' "$CG/app" "$NS" "$*"; }

# The pod.
ip netns add "$NS" &&
  ip link add "$VH" type veth peer name eth0 netns "$NS" &&
  ip addr add 10.77.50.1/24 dev "$VH" && ip link set "$VH" up &&
  ip -n "$NS" link set lo up &&
  ip -n "$NS" addr add 10.77.50.2/24 dev eth0 && ip -n "$NS" link set eth0 up &&
  mkdir -p "$CG/app" || { echo "demo: cannot build the sample pod" >&2; exit 1; }
sh -c 'echo $$ > "$0/cgroup.procs" && exec ip netns exec "$1" sleep 3600' "$CG/app" "$NS" &
pids+=($!)

# The service: examples/backend.js when Node is there, else a tiny Python one.
if command -v node >/dev/null && [ -f "$here/backend.js" ]; then
  node "$here/backend.js" --host 10.77.50.1 --port $SVC >"$tmp/svc.log" 2>&1 &
else
  python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        b = b"hello from backend\n"
        self.send_response(200); self.send_header("content-length", str(len(b))); self.end_headers()
        self.wfile.write(b)
http.server.ThreadingHTTPServer(("10.77.50.1", int(sys.argv[1])), H).serve_forever()' $SVC >"$tmp/svc.log" 2>&1 &
fi
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/10.77.50.1/$SVC) 2>/dev/null && break; sleep 0.05; done

cat >"$tmp/policy.yaml" <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: demo-transparent}
spec:
  seed: 42
  ttl: 5m
  proxy_port: $PROXY
  targets:
    - name: orders-svc
      pods: {cgroup: "$CG/app"}          # a glob such as $CG/* works too
      destination: {ip: 10.77.50.1, port: $SVC}
  rules:
    - name: orders-503
      match: {path: {prefix: /orders}}
      fault:
        abort: {status: 503, body: "injected by faultline\n", percent: 50}
    - name: slow-catalog
      match: {path: {prefix: /catalog}}
      fault:
        delay: {fixed: 300ms}
EOF

CLIENT='for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "GET /orders/$i -> %{http_code}\n" http://10.77.50.1:'$SVC'/orders/$i; done; curl -s -o /dev/null -w "GET /catalog -> %{http_code} in %{time_total}s\n" http://10.77.50.1:'$SVC'/catalog'

step "the pod calls the service directly (no faultline)"
echo "client: curl http://10.77.50.1:$SVC/...   (run inside the pod: cgroup $CG/app, netns $NS)"
in_pod "$CLIENT"

step "start faultline with a policy that targets the pod"
sed 's/^/  /' "$tmp/policy.yaml"
"$FL" run -f "$tmp/policy.yaml" --fault-log "$tmp/faults.log" --admin "$tmp/admin.sock" 2>"$tmp/daemon.log" &
dpid=$!
for _ in $(seq 100); do
  grep -q ' ready ' "$tmp/daemon.log" && break
  if ! kill -0 $dpid 2>/dev/null; then
    wait $dpid; rc=$?; dpid=
    echo "demo: faultline could not start transparent mode:" >&2
    sed 's/^/  /' "$tmp/daemon.log" >&2
    exit $((rc == 2 ? 2 : 1))
  fi
  sleep 0.05
done
grep -E 'transparent mode|enrolled|listening' "$tmp/daemon.log" | sed 's/^.*faultline info: /  faultline: /'

step "the same client, unchanged: faults injected (50% of /orders answer 503, /catalog waits 300 ms)"
in_pod "$CLIENT"

step "the fault log (one JSON line per injected fault: the pod's own source, the original destination)"
sleep 0.2
sed 's/^/  /' "$tmp/faults.log"

step "stop faultline (SIGTERM): hooks detach, the pod talks to the service directly again"
kill -TERM $dpid; wait $dpid; dpid=
grep -E 'connections redirected|hooks detached' "$tmp/daemon.log" | sed 's/^.*faultline info: /  faultline: /'
echo "  bpftool cgroup show $CG/app: $(bpftool cgroup show "$CG/app" 2>/dev/null | grep -c '^[0-9]') programs attached"
in_pod "$CLIENT"
