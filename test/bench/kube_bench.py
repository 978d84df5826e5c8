#!/usr/bin/env python3
"""The measuring side of test/bench/kube.sh (standard library only).

  kube_bench.py API_URL CA TOKEN_FILE ADMIN_SOCK DAEMON_PID PIDS_FILE CGROUP2

PIDS_FILE holds one process id per line, each a pod's future "pause"
process already in its network namespace. For each, as the API server and the
kubelet would: the pod is created in the API (which gives it its UID), its
pod-level cgroup made (cgroupfs, BestEffort) and the process moved in; the time
from the create to "steered" in faultline's /v1/status is taken. Then relabels them
out of the selector and times label change -> gone from the status; then
patches them N times and takes the daemon's CPU time per 1,000 watch events.
Prints KEY=VALUE lines.
"""
import json
import os
import socket
import ssl
import sys
import time
import urllib.request

API, CA, TOKEN_FILE, ADMIN, PID, PIDS, CG2 = sys.argv[1:8]
CTX = ssl.create_default_context(cafile=CA)
pids = [l.strip() for l in open(PIDS) if l.strip()]
uids = []


def api(method, path, body=None, ctype='application/json'):
    tok = open(TOKEN_FILE).read().strip()
    req = urllib.request.Request(API + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={'Authorization': 'Bearer ' + tok, 'Content-Type': ctype})
    with urllib.request.urlopen(req, context=CTX) as r:
        return json.loads(r.read())


def status():
    s = socket.socket(socket.AF_UNIX)
    s.connect(ADMIN)
    s.sendall(b'GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    buf = b''
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    return json.loads(buf.split(b'\r\n\r\n', 1)[1])


def states():
    return {p['pod']: p['state'] for p in status()['kubernetes']['pods']}


def cpu_s():
    f = open('/proc/%s/stat' % PID).read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')


def rss_kb():
    for l in open('/proc/%s/status' % PID):
        if l.startswith('VmRSS:'):
            return int(l.split()[1])
    return -1


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else -1


def pod(i, app):
    return {'metadata': {'name': 'bench-%03d' % i, 'namespace': 'bench', 'labels': {'app': app}},
            'spec': {'nodeName': 'n1', 'containers': [{'name': 'c', 'image': 'c'}]},
            'status': {'phase': 'Running', 'qosClass': 'BestEffort'}}


# ADDED -> steered, one pod at a time, polling the status every 5 ms.
added = []
for i, pid in enumerate(pids):
    t0 = time.monotonic()
    uid = api('POST', '/api/v1/namespaces/bench/pods', pod(i, 'bench'))['metadata']['uid']
    d = '%s/kubepods/besteffort/pod%s' % (CG2, uid)
    os.makedirs(d + '/ctr')
    with open(d + '/ctr/cgroup.procs', 'w') as f:
        f.write(pid)
    uids.append(uid)
    name = 'bench/bench-%03d' % i
    while states().get(name) != 'steered':
        if time.monotonic() - t0 > 10:
            print('error=pod %s not steered after 10 s' % name, flush=True)
            sys.exit(1)
        time.sleep(0.005)
    added.append((time.monotonic() - t0) * 1000)
rss = rss_kb()

# Label change -> released.
released = []
for i in range(len(uids)):
    t0 = time.monotonic()
    api('PATCH', '/api/v1/namespaces/bench/pods/bench-%03d' % i,
        {'metadata': {'labels': {'app': 'gone'}}}, 'application/merge-patch+json')
    name = 'bench/bench-%03d' % i
    while name in states():
        if time.monotonic() - t0 > 10:
            print('error=pod %s not released after 10 s' % name, flush=True)
            sys.exit(1)
        time.sleep(0.005)
    released.append((time.monotonic() - t0) * 1000)

# Watch CPU: N MODIFIED events for pods of this node, as fast as they come.
n = 2000
before_events = status()['kubernetes']['events']
c0 = cpu_s()
t0 = time.monotonic()
for k in range(n):
    api('PATCH', '/api/v1/namespaces/bench/pods/bench-%03d' % (k % len(uids)),
        {'metadata': {'annotations': {'bench': str(k)}}}, 'application/merge-patch+json')
while status()['kubernetes']['events'] - before_events < n and time.monotonic() - t0 < 60:
    time.sleep(0.05)
got = status()['kubernetes']['events'] - before_events
c1 = cpu_s()
print('pods=%d added_p50_ms=%.1f added_p99_ms=%.1f released_p50_ms=%.1f released_p99_ms=%.1f '
      'rss_kb=%d events=%d cpu_ms_per_1000_events=%.1f' % (
          len(uids), pct(added, 0.5), pct(added, 0.99), pct(released, 0.5), pct(released, 0.99),
          rss, got, (c1 - c0) * 1000 / (got / 1000) if got else -1), flush=True)
