#!/usr/bin/env python3
"""A test Kubernetes API server for faultline's tests (standard library only).

It follows the API conventions closely enough for faultline's client and for
the real kubectl: HTTPS with a CA the test makes, bearer tokens (read from a
file on every request, so a test can rotate it) or client certificates,
discovery (/api, /apis, /api/v1, /apis/discovery.k8s.io/v1, /version), and for
namespaces, pods, services, configmaps and endpointslices: get, list (limit and
continue, labelSelector, fieldSelector), watch (from a resourceVersion, with
bookmarks and timeoutSeconds, 410 Gone before the compaction point), create,
replace, merge patch and delete, with resourceVersion, uid, generation and
creationTimestamp kept as the API server keeps them.

  python3 apiserver.py --dir DIR [--port N] [--state FILE]

writes DIR/port once it listens. Test controls (no authentication, under /_test/):
  POST /_test/compact               older resourceVersions get 410 Gone
  POST /_test/fail?path=P&status=S&count=N[&retry_after=T]
                                    the next N requests whose path starts with P
                                    are answered S (a Status body)
  POST /_test/bulk                  creates the objects of a JSON list at once (each
                                    with "_plural" and, outside core, "_group")
  POST /_test/unfail                forgets every /_test/fail
  POST /_test/cut                   ends every open watch stream mid-stream
  POST /_test/silence?count=N       the next N watches send headers, then nothing
  POST /_test/error410              every open watch gets an ERROR event (410)
  POST /_test/bookmarks?seconds=S   bookmark interval (default 1 s)
  GET  /_test/requests              the requests seen, one JSON object per line
"""
import argparse
import copy
import datetime
import json
import os
import signal
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CORE = {  # plural -> (kind, namespaced)
    'namespaces': ('Namespace', False),
    'pods': ('Pod', True),
    'services': ('Service', True),
    'configmaps': ('ConfigMap', True),
    'nodes': ('Node', False),
}
DISCOVERY = {'endpointslices': ('EndpointSlice', True)}
GROUPS = {'': ('v1', CORE), 'discovery.k8s.io': ('v1', DISCOVERY)}


class Store:
    def __init__(self, state=None):
        self.mu = threading.Condition()
        self.rv = 100
        self.objs = {}     # (group, plural, ns, name) -> object
        self.history = []  # (rv, group, plural, type, object)
        self.compacted = 0
        self.state = state
        if state and os.path.exists(state):
            with open(state) as f:
                d = json.load(f)
            self.rv = d['rv']
            self.compacted = self.rv
            for k, o in d['objs']:
                self.objs[tuple(k)] = o

    def save(self):
        if self.state:
            with open(self.state + '.tmp', 'w') as f:
                json.dump({'rv': self.rv, 'objs': [[list(k), o] for k, o in self.objs.items()]}, f)
            os.replace(self.state + '.tmp', self.state)

    def bump(self, group, plural, typ, obj):
        self.rv += 1
        obj['metadata']['resourceVersion'] = str(self.rv)
        self.history.append((self.rv, group, plural, typ, copy.deepcopy(obj)))
        if len(self.history) > 20000:
            self.compacted = self.history[10000][0]
            self.history = self.history[10000:]
        self.mu.notify_all()


STORE = None
TOKEN_FILE = None
CTL = {'fail': [], 'silence': 0, 'bookmark_s': 1.0, 'cut': 0, 'err410': 0}
REQUESTS = []


def now_ts():
    return datetime.datetime.utcnow().replace(microsecond=0).isoformat() + 'Z'


def status(code, reason, message):
    return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': message, 'reason': reason, 'code': code}


def parse_selector(s):
    """Label selector: a list of (key, op, values)."""
    reqs = []
    if not s:
        return reqs
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch == ',' and depth == 0:
            parts.append(cur)
            cur = ''
            continue
        depth += ch == '('
        depth -= ch == ')'
        cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        if ' notin ' in p:
            k, v = p.split(' notin ', 1)
            reqs.append((k.strip(), 'notin', [x.strip() for x in v.strip()[1:-1].split(',')]))
        elif ' in ' in p:
            k, v = p.split(' in ', 1)
            reqs.append((k.strip(), 'in', [x.strip() for x in v.strip()[1:-1].split(',')]))
        elif '!=' in p:
            k, v = p.split('!=', 1)
            reqs.append((k.strip(), 'notin', [v.strip()]))
        elif '==' in p or '=' in p:
            k, v = p.split('==' if '==' in p else '=', 1)
            reqs.append((k.strip(), 'in', [v.strip()]))
        elif p.startswith('!'):
            reqs.append((p[1:].strip(), 'dne', []))
        elif p:
            reqs.append((p, 'exists', []))
    return reqs


def labels_match(reqs, labels):
    for k, op, vals in reqs:
        v = labels.get(k)
        if op == 'in' and v not in vals:
            return False
        if op == 'notin' and v in vals:
            return False
        if op == 'exists' and v is None:
            return False
        if op == 'dne' and v is not None:
            return False
    return True


FIELDS = {
    'metadata.name': lambda o: o['metadata'].get('name'),
    'metadata.namespace': lambda o: o['metadata'].get('namespace'),
    'spec.nodeName': lambda o: (o.get('spec') or {}).get('nodeName', ''),
}


def parse_fields(s):
    out = []
    for p in (s or '').split(','):
        if not p:
            continue
        neg = '!=' in p
        k, v = p.split('!=' if neg else ('==' if '==' in p else '='), 1)
        if k not in FIELDS:
            raise ValueError('field label not supported: ' + k)
        out.append((FIELDS[k], v, neg))
    return out


def fields_match(fs, o):
    return all((f(o) != v) if neg else (f(o) == v) for f, v, neg in fs)


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'faultline-test-apiserver'

    def log_message(self, *a):
        pass

    def send_json(self, code, obj, extra=None):
        b = (json.dumps(obj) + '\n').encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(b)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)

    def authed(self):
        h = self.headers.get('Authorization', '')
        if h.startswith('Bearer '):
            try:
                with open(TOKEN_FILE) as f:
                    want = f.read().strip()
            except OSError:
                want = None
            return want is not None and h[7:].strip() == want
        try:
            return bool(self.connection.getpeercert())
        except (AttributeError, ValueError):
            return False

    def body(self):
        n = int(self.headers.get('Content-Length') or 0)
        return json.loads(self.rfile.read(n) or b'{}') if n else {}

    def route(self, method):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        path = u.path.rstrip('/') or '/'
        if path.startswith('/_test/'):
            return self.control(method, path, q)
        REQUESTS.append({'method': method, 'path': path, 'query': q, 't': time.time()})
        if not self.authed():
            return self.send_json(401, status(401, 'Unauthorized', 'Unauthorized'))
        for f in CTL['fail']:
            if f['count'] > 0 and path.startswith(f['path']):
                f['count'] -= 1
                extra = {'Retry-After': str(f['retry_after'])} if f.get('retry_after') else None
                return self.send_json(f['status'], status(f['status'], 'Injected',
                                                          'injected by the test'), extra)
        if path == '/version':
            return self.send_json(200, {'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0',
                                        'platform': 'linux/amd64'})
        if path == '/api':
            return self.send_json(200, {'kind': 'APIVersions', 'versions': ['v1'],
                                        'serverAddressByClientCIDRs': [
                                            {'clientCIDR': '0.0.0.0/0',
                                             'serverAddress': '127.0.0.1'}]})
        if path == '/apis':
            groups = [{'name': g, 'versions': [{'groupVersion': g + '/' + v, 'version': v}],
                       'preferredVersion': {'groupVersion': g + '/' + v, 'version': v}}
                      for g, (v, _) in GROUPS.items() if g]
            return self.send_json(200, {'kind': 'APIGroupList', 'apiVersion': 'v1',
                                        'groups': groups})
        parts = path.strip('/').split('/')
        if parts[0] == 'api' and len(parts) >= 2:
            group, version, rest = '', parts[1], parts[2:]
        elif parts[0] == 'apis' and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return self.send_json(404, status(404, 'NotFound', 'the server could not find the '
                                              'requested resource'))
        if group not in GROUPS or GROUPS[group][0] != version:
            return self.send_json(404, status(404, 'NotFound', 'no such API group/version'))
        kinds = GROUPS[group][1]
        gv = (group + '/' if group else '') + version
        if not rest:
            res = [{'name': p, 'singularName': k.lower(), 'namespaced': nsd, 'kind': k,
                    'verbs': ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
                    'shortNames': {'pods': ['po'], 'services': ['svc'], 'namespaces': ['ns'],
                                   'configmaps': ['cm'], 'nodes': ['no']}.get(p, [])}
                   for p, (k, nsd) in kinds.items()]
            return self.send_json(200, {'kind': 'APIResourceList', 'apiVersion': 'v1',
                                        'groupVersion': gv, 'resources': res})
        ns = None
        if rest[0] == 'namespaces' and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        if plural not in kinds:
            return self.send_json(404, status(404, 'NotFound', 'no resource ' + plural))
        kind, namespaced = kinds[plural]
        return self.resource(method, group, gv, plural, kind, namespaced, ns, name, q)

    def control(self, method, path, q):
        if path == '/_test/requests':
            b = ''.join(json.dumps(r) + '\n' for r in REQUESTS).encode()
            self.send_response(200)
            self.send_header('Content-Length', str(len(b)))
            self.end_headers()
            self.wfile.write(b)
            return
        with STORE.mu:
            if path == '/_test/compact':
                STORE.compacted = STORE.rv
                STORE.history = []
            elif path == '/_test/fail':
                CTL['fail'].append({'path': q['path'], 'status': int(q['status']),
                                    'count': int(q.get('count', 1)),
                                    'retry_after': q.get('retry_after')})
            elif path == '/_test/bulk':
                n = int(self.headers.get('Content-Length') or 0)
                for o in json.loads(self.rfile.read(n)):
                    md = o['metadata']
                    grp, plural = o.pop('_group', ''), o.pop('_plural')
                    md.setdefault('uid', str(uuid.uuid4()))
                    md['creationTimestamp'] = now_ts()
                    md['generation'] = 1
                    STORE.objs[(grp, plural, md.get('namespace', ''), md['name'])] = o
                    STORE.bump(grp, plural, 'ADDED', o)
            elif path == '/_test/unfail':
                CTL['fail'] = []
            elif path == '/_test/cut':
                CTL['cut'] += 1
            elif path == '/_test/silence':
                CTL['silence'] = int(q.get('count', 1))
            elif path == '/_test/error410':
                CTL['err410'] += 1
            elif path == '/_test/bookmarks':
                CTL['bookmark_s'] = float(q['seconds'])
            else:
                return self.send_json(404, {'error': 'no such control'})
            STORE.mu.notify_all()
        self.send_json(200, {'ok': True, 'resourceVersion': str(STORE.rv)})

    def visible(self, group, plural, ns):
        return [o for (g, p, n, _), o in sorted(STORE.objs.items())
                if g == group and p == plural and (ns is None or n == ns)]

    def resource(self, method, group, gv, plural, kind, namespaced, ns, name, q):
        key = (group, plural, ns or '', name)
        if method == 'GET' and name is None:
            try:
                fs = parse_fields(q.get('fieldSelector'))
            except ValueError as e:
                return self.send_json(400, status(400, 'BadRequest', str(e)))
            ls = parse_selector(q.get('labelSelector'))
            if q.get('watch') in ('1', 'true'):
                return self.watch(group, plural, ns, fs, ls, q)
            with STORE.mu:
                items = [copy.deepcopy(o) for o in self.visible(group, plural, ns)
                         if fields_match(fs, o) and labels_match(ls, o['metadata'].get('labels') or {})]
                rv = STORE.rv
            start = 0
            if q.get('continue'):
                c = json.loads(urllib.parse.unquote(q['continue']))
                if c['rv'] < STORE.compacted:
                    return self.send_json(410, status(410, 'Expired', 'The provided continue '
                                                      'parameter is too old'))
                start, rv = c['start'], c['rv']
            limit = int(q.get('limit') or 0)
            page = items[start:start + limit] if limit else items[start:]
            md = {'resourceVersion': str(rv)}
            if limit and start + limit < len(items):
                md['continue'] = json.dumps({'start': start + limit, 'rv': rv})
                md['remainingItemCount'] = len(items) - start - limit
            for o in page:
                o.setdefault('kind', kind)
                o.setdefault('apiVersion', gv)
            return self.send_json(200, {'kind': kind + 'List', 'apiVersion': gv, 'metadata': md,
                                        'items': page})
        if method == 'GET':
            with STORE.mu:
                o = STORE.objs.get(key)
            if not o:
                return self.send_json(404, status(404, 'NotFound', '%s "%s" not found' % (plural, name)))
            return self.send_json(200, o)
        if method == 'POST':
            o = self.body()
            md = o.setdefault('metadata', {})
            md.setdefault('namespace', ns) if namespaced else None
            key = (group, plural, (ns or '') if namespaced else '', md.get('name'))
            with STORE.mu:
                if key in STORE.objs:
                    return self.send_json(409, status(409, 'AlreadyExists', '%s "%s" already '
                                                      'exists' % (plural, md.get('name'))))
                md['uid'] = str(uuid.uuid4())
                md['creationTimestamp'] = now_ts()
                md['generation'] = 1
                o['kind'], o['apiVersion'] = kind, gv
                STORE.objs[key] = o
                STORE.bump(group, plural, 'ADDED', o)
                STORE.save()
                return self.send_json(201, o)
        if method in ('PUT', 'PATCH'):
            patch = self.body()
            with STORE.mu:
                cur = STORE.objs.get(key)
                if not cur:
                    return self.send_json(404, status(404, 'NotFound', '%s "%s" not found' % (plural, name)))
                if method == 'PUT':
                    want = patch.get('metadata', {}).get('resourceVersion')
                    if want and want != cur['metadata']['resourceVersion']:
                        return self.send_json(409, status(409, 'Conflict', 'the object has been '
                                                          'modified'))
                    new = patch
                    for k in ('uid', 'creationTimestamp', 'generation'):
                        new['metadata'][k] = cur['metadata'][k]
                else:
                    new = merge(copy.deepcopy(cur), patch)
                new['kind'], new['apiVersion'] = kind, gv
                if new.get('spec') != cur.get('spec'):
                    new['metadata']['generation'] = cur['metadata'].get('generation', 1) + 1
                STORE.objs[key] = new
                STORE.bump(group, plural, 'MODIFIED', new)
                STORE.save()
                return self.send_json(200, new)
        if method == 'DELETE':
            with STORE.mu:
                cur = STORE.objs.pop(key, None)
                if not cur:
                    return self.send_json(404, status(404, 'NotFound', '%s "%s" not found' % (plural, name)))
                STORE.bump(group, plural, 'DELETED', cur)
                STORE.save()
                return self.send_json(200, cur)
        return self.send_json(405, status(405, 'MethodNotAllowed', method))

    def watch(self, group, plural, ns, fs, ls, q):
        rv = int(q.get('resourceVersion') or 0)
        timeout = float(q.get('timeoutSeconds') or 1800)
        bookmarks = q.get('allowWatchBookmarks') in ('1', 'true')
        with STORE.mu:
            if rv and rv < STORE.compacted:
                gone = True
            else:
                gone = False
            silent = CTL['silence'] > 0
            if silent:
                CTL['silence'] -= 1
            cut0, e0 = CTL['cut'], CTL['err410']
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()

        def chunk(o):
            d = (json.dumps(o) + '\n').encode()
            self.wfile.write(b'%x\r\n%s\r\n' % (len(d), d))
            self.wfile.flush()
        end = time.time() + timeout
        try:
            if gone:
                chunk({'type': 'ERROR', 'object': status(410, 'Expired', 'too old resource '
                                                         'version: %d (%d)' % (rv, STORE.compacted))})
                self.wfile.write(b'0\r\n\r\n')
                return
            if silent:
                while time.time() < end:
                    time.sleep(0.2)
                return
            last_bm = time.time()
            seen = {}  # name -> matched last time (for objects leaving a selector)
            while time.time() < end:
                out = []
                with STORE.mu:
                    if CTL['cut'] != cut0:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if CTL['err410'] != e0:
                        out.append({'type': 'ERROR', 'object': status(410, 'Expired', 'compacted')})
                    else:
                        for (erv, g, p, typ, o) in STORE.history:
                            if erv <= rv or g != group or p != plural:
                                continue
                            if ns and o['metadata'].get('namespace') != ns:
                                continue
                            rv = erv
                            m = fields_match(fs, o) and labels_match(ls, o['metadata'].get('labels') or {})
                            k = (o['metadata'].get('namespace'), o['metadata']['name'])
                            if m:
                                out.append({'type': typ, 'object': o})
                            elif typ == 'MODIFIED' and seen.get(k):
                                out.append({'type': 'DELETED', 'object': o})
                            seen[k] = m and typ != 'DELETED'
                        if not out:
                            STORE.mu.wait(0.2)
                for ev in out:
                    chunk(ev)
                    if ev['type'] == 'ERROR':
                        self.wfile.write(b'0\r\n\r\n')
                        return
                if bookmarks and time.time() - last_bm >= CTL['bookmark_s']:
                    with STORE.mu:
                        brv = max(rv, STORE.rv if not fs and not ls else rv)
                    chunk({'type': 'BOOKMARK', 'object': {'kind': 'Pod', 'apiVersion': 'v1',
                                                          'metadata': {'resourceVersion': str(brv)}}})
                    last_bm = time.time()
            self.wfile.write(b'0\r\n\r\n')
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def do_GET(self):
        self.route('GET')

    def do_POST(self):
        self.route('POST')

    def do_PUT(self):
        self.route('PUT')

    def do_PATCH(self):
        self.route('PATCH')

    def do_DELETE(self):
        self.route('DELETE')


def merge(cur, patch):
    """JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(cur, dict):
        cur = {}
    for k, v in patch.items():
        if v is None:
            cur.pop(k, None)
        else:
            cur[k] = merge(cur.get(k), v)
    return cur


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)


def main():
    global STORE, TOKEN_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument('--dir', required=True)
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--state')
    a = ap.parse_args()
    STORE = Store(a.state)
    TOKEN_FILE = os.path.join(a.dir, 'token')
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(a.dir, 'server.crt'), os.path.join(a.dir, 'server.key'))
    ctx.load_verify_locations(os.path.join(a.dir, 'ca.crt'))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    srv = Server((a.host, a.port), Handler)
    srv.ctx = ctx
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with open(os.path.join(a.dir, 'port.tmp'), 'w') as f:
        f.write(str(srv.server_address[1]))
    os.replace(os.path.join(a.dir, 'port.tmp'), os.path.join(a.dir, 'port'))
    srv.serve_forever()


if __name__ == '__main__':
    main()
