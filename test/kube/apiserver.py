#!/usr/bin/env python3
"""The project's test Kubernetes API server (Python 3 standard library only).

It follows the Kubernetes API conventions closely enough for faultline's C
client and for the real kubectl (1.32): HTTPS only, bearer token or client
certificate, discovery (legacy and aggregated v2), a minimal OpenAPI v3 so that
kubectl's server-side field validation is used, server-side printing (Table),
and for every resource: get, list (limit/continue, labelSelector,
fieldSelector), watch (from a resourceVersion, bookmarks, timeoutSeconds,
410 Gone), create, replace, patch (merge, strategic merge, JSON patch, apply),
delete and deletecollection, with uid, resourceVersion, generation,
creationTimestamp and managedFields kept as the API server keeps them.

  python3 apiserver.py --dir DIR [--port 0] [--host 127.0.0.1] [--state FILE]
                       [--bookmark-seconds 1] [--history 100000]

DIR holds, or gets (openssl is run for what is missing): ca.crt/ca.key,
server.crt/server.key (SAN 127.0.0.1, ::1, localhost), client.crt/client.key
(signed by the CA), token. The server writes DIR/kubeconfig (user with
tokenFile: DIR/token), DIR/kubeconfig-cert (client certificate),
DIR/kubeconfig-inline (the token inline), DIR/serviceaccount/{token,ca.crt,
namespace} (as mounted in a pod), DIR/pid, and DIR/port last, once it listens.
The token file is read on every request, so a test rotates it by replacing it.
SIGTERM saves the state (--state) and exits at once. With --state the objects,
CRDs and the resourceVersion counter survive a restart; the watch history does
not (as after a real restart, older resourceVersions then get 410 Gone).

Resources: v1 namespaces, pods, services, configmaps, nodes, serviceaccounts;
apps/v1 daemonsets; rbac.authorization.k8s.io/v1 clusterroles,
clusterrolebindings, roles, rolebindings; discovery.k8s.io/v1 endpointslices;
apiextensions.k8s.io/v1 customresourcedefinitions, and the resources each CRD
defines (served at once, with its status subresource, printer columns and
list-map keys from its schema). A CRD's schemas must be structural, and a
custom resource is pruned and validated against its schema as the real server
does it (crdschema.py beside this file): fieldValidation=Strict (kubectl's
default) refuses unknown fields with 400, Warn (the default without the
parameter) and Ignore drop them, Warn with a Warning header; a value the schema
refuses is 422. A DaemonSet's selector must match its template's labels.

Test controls: plain JSON over the same HTTPS port, under /_test/, no
authentication. Requests to /_test/ are not logged and never fail.
  POST /_test/compact                  forget the history up to now: older
                                       resourceVersions (watch, continue) get 410
  POST /_test/fail?path=P&status=S[&count=N][&method=M][&retry_after=T]
                                       the next N (1) requests whose path starts
                                       with P (and method is M) are answered S with
                                       a Status body (Retry-After: T if given)
  POST /_test/unfail                   forget every /_test/fail and /_test/delay
  POST /_test/delay?ms=D[&path=P][&count=N]
                                       the next N (all) requests under P wait D ms
  POST /_test/silence[?count=N][&path=P]
                                       the next N (1) watches (under P) send their
                                       headers, then nothing: no event, no bookmark,
                                       no end at timeoutSeconds (a hung server) until
                                       a cut or the client leaves
  POST /_test/cut[?path=P][&mode=abort|clean]
                                       end every open watch (under P): abort (the
                                       default) drops the connection mid-stream,
                                       clean ends the chunked body as a timeout does
  POST /_test/error410[?path=P]        every open watch gets an ERROR event (410)
  POST /_test/bookmarks?seconds=S      bookmark interval (default 1 s)
  POST /_test/config?[bookmark_seconds=S][&watch410=event|status][&aggregated=0|1]
                                       watch410: a watch from a compacted
                                       resourceVersion gets a 200 stream with one
                                       ERROR event (event, the default, as the real
                                       server does) or HTTP 410 (status);
                                       aggregated=0 turns aggregated discovery off
  POST /_test/bulk                     create the objects of a JSON list at once,
                                       each with "_plural" and, outside core,
                                       "_group" (no validation, no namespace check)
  POST /_test/clear                    empty the request log
  GET  /_test/requests                 the requests seen, one JSON object a line:
                                       method, path, query (a dict), t, code,
                                       ctype, accept, ua, auth (token|cert|none|bad)
  GET  /_test/watches                  the open watches: JSON list of {path, query,
                                       since, silent}
  GET  /_test/state                    {resourceVersion, compacted, objects,
                                       watches, config}

A new cluster has the namespaces default, kube-system, kube-public and
kube-node-lease; a namespaced object needs its namespace (404 otherwise), as on
a real server. Request bodies are JSON; protobuf bodies (which kubectl's typed
clients send, e.g. kubectl create namespace) are read for Namespace, ConfigMap,
Secret and Service. Responses are JSON.

Known simplifications (each documented where it is done): no admission, no
RBAC, no garbage collection and no finalizers waited for (deleting a namespace
or a CRD deletes what is in it at once, pods go at once: there is no kubelet),
a create may set status (so a test seeds a running pod in one request), CR
schemas have no CEL rules or defaults, built-in kinds are not checked against
their schemas (a typo in a DaemonSet is kept, not refused), RBAC objects are
stored but not enforced, no controller runs (a DaemonSet schedules no pod), field ownership is tracked for apply only, and apply bodies must be
JSON (YAML's JSON subset, which is what kubectl and the C client send).
"""
import argparse
import base64
import bisect
import collections
import copy
import datetime
import json
import os
import random
import re
import select
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crdschema  # noqa: E402 (beside this file: the API server's handling of CRD schemas)

VERSION = {'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0', 'gitCommit': 'faultline-test',
           'gitTreeState': 'clean', 'buildDate': '2026-01-01T00:00:00Z', 'goVersion': 'go1.23',
           'compiler': 'gc', 'platform': 'linux/amd64'}
VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']
AGG_CT = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList'

# ---------------------------------------------------------------------------
# Resource types


class Kind:
    """One served resource (group, version, plural)."""

    def __init__(self, group, version, plural, kind, namespaced, short=(), categories=(),
                 status=False, columns=None, crd=None, singular=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.short, self.categories = namespaced, list(short), list(categories)
        self.status = status      # has a status subresource
        self.columns = columns    # [(name, type, priority, description, cell(obj))]
        self.crd = crd            # the CRD version object (dict) for custom resources
        self.singular = singular or kind.lower()
        self.gv = (group + '/' if group else '') + version
        self.fields = dict(COMMON_FIELDS)
        self.fields.update(KIND_FIELDS.get((group, plural), {}))


def age(o):
    ts = o.get('metadata', {}).get('creationTimestamp')
    if not ts:
        return '<unknown>'
    try:
        t = datetime.datetime.strptime(ts, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return '<invalid>'
    return human_duration((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())


def human_duration(s):
    """As kubectl shows ages: 5s, 3m20s, 45m, 2h10m, 5h, 3d4h, 20d, 2y."""
    s = int(max(s, 0))
    if s < 120:
        return '%ds' % s
    m = s // 60
    if m < 10:
        return '%dm%ds' % (m, s % 60) if s % 60 else '%dm' % m
    if m < 180:
        return '%dm' % m
    h = m // 60
    if h < 8:
        return '%dh%dm' % (h, m % 60) if m % 60 else '%dh' % h
    if h < 48:
        return '%dh' % h
    d = h // 24
    if d < 8:
        return '%dd%dh' % (d, h % 24) if h % 24 else '%dd' % d
    if d < 730:
        return '%dd' % d
    return '%dy' % (d // 365)


def col(name, cell, typ='string', priority=0, desc=''):
    return (name, typ, priority, desc, cell)


def pod_ready(o):
    st = o.get('status') or {}
    cs = st.get('containerStatuses') or []
    n = len((o.get('spec') or {}).get('containers') or [])
    return '%d/%d' % (sum(1 for c in cs if c.get('ready')), n)


def pod_restarts(o):
    return sum(int(c.get('restartCount') or 0) for c in (o.get('status') or {}).get('containerStatuses') or [])


def svc_ports(o):
    out = []
    for p in (o.get('spec') or {}).get('ports') or []:
        s = '%s' % p.get('port')
        if p.get('nodePort'):
            s += ':%s' % p['nodePort']
        out.append('%s/%s' % (s, p.get('protocol', 'TCP')))
    return ','.join(out) or '<none>'


def eps_endpoints(o):
    addrs = [a for e in o.get('endpoints') or [] for a in e.get('addresses') or []]
    if not addrs:
        return '<unset>'
    s = ','.join(addrs[:3])
    return s + (' + %d more...' % (len(addrs) - 3) if len(addrs) > 3 else '')


NAME_COL = col('Name', lambda o: o['metadata'].get('name'), desc='Name must be unique within a '
               'namespace.')
AGE_COL = col('Age', age, desc='CreationTimestamp is a timestamp representing the server time '
              'when this object was created.')
BUILTIN_COLUMNS = {
    'pods': [NAME_COL, col('Ready', pod_ready), col('Status', lambda o: (o.get('status') or {}).get(
        'reason') or (o.get('status') or {}).get('phase') or 'Unknown'),
        col('Restarts', pod_restarts, 'integer'), AGE_COL,
        col('IP', lambda o: (o.get('status') or {}).get('podIP') or '<none>', priority=1),
        col('Node', lambda o: (o.get('spec') or {}).get('nodeName') or '<none>', priority=1)],
    'services': [NAME_COL, col('Type', lambda o: (o.get('spec') or {}).get('type', 'ClusterIP')),
                 col('Cluster-IP', lambda o: (o.get('spec') or {}).get('clusterIP') or '<none>'),
                 col('External-IP', lambda o: ','.join((o.get('spec') or {}).get('externalIPs') or
                                                       []) or '<none>'),
                 col('Port(s)', svc_ports), AGE_COL,
                 col('Selector', lambda o: ','.join('%s=%s' % kv for kv in sorted(
                     ((o.get('spec') or {}).get('selector') or {}).items())) or '<none>', priority=1)],
    'namespaces': [NAME_COL, col('Status', lambda o: (o.get('status') or {}).get('phase', '')),
                   AGE_COL],
    'configmaps': [NAME_COL, col('Data', lambda o: len(o.get('data') or {}) +
                                 len(o.get('binaryData') or {}), 'integer'), AGE_COL],
    'nodes': [NAME_COL, col('Status', lambda o: 'Ready' if any(
        c.get('type') == 'Ready' and c.get('status') == 'True'
        for c in (o.get('status') or {}).get('conditions') or []) else 'NotReady'),
        col('Roles', lambda o: ','.join(sorted(k.split('/', 1)[1] for k in
                                               (o['metadata'].get('labels') or {})
                                               if k.startswith('node-role.kubernetes.io/'))) or
            '<none>'), AGE_COL,
        col('Version', lambda o: ((o.get('status') or {}).get('nodeInfo') or {}).get(
            'kubeletVersion', ''))],
    'endpointslices': [NAME_COL, col('AddressType', lambda o: o.get('addressType', '')),
                       col('Ports', lambda o: ','.join(str(p.get('port')) for p in
                                                       o.get('ports') or []) or '<unset>'),
                       col('Endpoints', eps_endpoints), AGE_COL],
    'customresourcedefinitions': [NAME_COL, col('Created At', lambda o: o['metadata'].get(
        'creationTimestamp'), 'date')],
    'serviceaccounts': [NAME_COL, col('Secrets', lambda o: len(o.get('secrets') or []), 'integer'),
                        AGE_COL],
    'daemonsets': [NAME_COL] + [col(n, lambda o, f=f: int((o.get('status') or {}).get(f) or 0),
                                    'integer') for n, f in (
        ('Desired', 'desiredNumberScheduled'), ('Current', 'currentNumberScheduled'),
        ('Ready', 'numberReady'), ('Up-to-date', 'updatedNumberScheduled'),
        ('Available', 'numberAvailable'))] + [
        col('Node Selector', lambda o: ','.join('%s=%s' % kv for kv in sorted((
            ((o.get('spec') or {}).get('template') or {}).get('spec') or {}).get(
            'nodeSelector', {}).items())) or '<none>'), AGE_COL,
        col('Containers', lambda o: ','.join(c.get('name', '') for c in (((o.get('spec') or {}).get(
            'template') or {}).get('spec') or {}).get('containers') or []), priority=1),
        col('Images', lambda o: ','.join(c.get('image', '') for c in (((o.get('spec') or {}).get(
            'template') or {}).get('spec') or {}).get('containers') or []), priority=1)],
    'clusterroles': [NAME_COL, col('Created At', lambda o: o['metadata'].get('creationTimestamp'),
                                   'date')],
    'roles': [NAME_COL, col('Created At', lambda o: o['metadata'].get('creationTimestamp'), 'date')],
    'clusterrolebindings': [NAME_COL, col('Role', lambda o: '%s/%s' % (
        (o.get('roleRef') or {}).get('kind', ''), (o.get('roleRef') or {}).get('name', ''))),
        AGE_COL],
    'rolebindings': [NAME_COL, col('Role', lambda o: '%s/%s' % (
        (o.get('roleRef') or {}).get('kind', ''), (o.get('roleRef') or {}).get('name', ''))),
        AGE_COL],
}

# fieldSelector: every kind has metadata.name and metadata.namespace; these
# are the extra fields the real server supports for each kind.
COMMON_FIELDS = {
    'metadata.name': lambda o: o['metadata'].get('name', ''),
    'metadata.namespace': lambda o: o['metadata'].get('namespace', ''),
}


def dig(*path):
    def f(o):
        for p in path:
            o = o.get(p) if isinstance(o, dict) else None
        if isinstance(o, bool):
            return 'true' if o else 'false'
        return '' if o is None else str(o)
    return f


KIND_FIELDS = {
    ('', 'pods'): {'spec.nodeName': dig('spec', 'nodeName'),
                   'spec.restartPolicy': dig('spec', 'restartPolicy'),
                   'spec.schedulerName': dig('spec', 'schedulerName'),
                   'spec.serviceAccountName': dig('spec', 'serviceAccountName'),
                   'spec.hostNetwork': lambda o: 'true' if (o.get('spec') or {}).get(
                       'hostNetwork') else 'false',
                   'status.phase': dig('status', 'phase'),
                   'status.podIP': dig('status', 'podIP'),
                   'status.nominatedNodeName': dig('status', 'nominatedNodeName')},
    ('', 'namespaces'): {'status.phase': dig('status', 'phase')},
    ('', 'nodes'): {'spec.unschedulable': lambda o: 'true' if (o.get('spec') or {}).get(
        'unschedulable') else 'false'},
    ('', 'services'): {'spec.clusterIP': dig('spec', 'clusterIP'), 'spec.type': dig('spec', 'type')},
    ('', 'configmaps'): {},
    ('discovery.k8s.io', 'endpointslices'): {'addressType': dig('addressType')},
}

# List-map keys of the built-in types (their Go types' listType=map or
# patchMergeKey), by field name; 'ports' depends on what the items carry.
LIST_KEYS = {
    'containers': ('name',), 'initContainers': ('name',), 'ephemeralContainers': ('name',),
    'env': ('name',), 'volumes': ('name',), 'volumeMounts': ('mountPath',),
    'imagePullSecrets': ('name',), 'conditions': ('type',), 'containerStatuses': ('name',),
    'initContainerStatuses': ('name',), 'ownerReferences': ('uid',), 'hostAliases': ('ip',),
    'podIPs': ('ip',), 'topologySpreadConstraints': ('topologyKey', 'whenUnsatisfiable'),
    'resourceClaims': ('name',), 'readinessGates': None, 'taints': ('key', 'effect'),
}

BUILTINS = [
    Kind('', 'v1', 'namespaces', 'Namespace', False, ['ns'], status=True),
    Kind('', 'v1', 'pods', 'Pod', True, ['po'], ['all'], status=True),
    Kind('', 'v1', 'services', 'Service', True, ['svc'], ['all'], status=True),
    Kind('', 'v1', 'configmaps', 'ConfigMap', True, ['cm']),
    Kind('', 'v1', 'nodes', 'Node', False, ['no'], status=True),
    Kind('', 'v1', 'serviceaccounts', 'ServiceAccount', True, ['sa']),
    Kind('apps', 'v1', 'daemonsets', 'DaemonSet', True, ['ds'], ['all'], status=True),
    Kind('rbac.authorization.k8s.io', 'v1', 'clusterroles', 'ClusterRole', False),
    Kind('rbac.authorization.k8s.io', 'v1', 'clusterrolebindings', 'ClusterRoleBinding', False),
    Kind('rbac.authorization.k8s.io', 'v1', 'roles', 'Role', True),
    Kind('rbac.authorization.k8s.io', 'v1', 'rolebindings', 'RoleBinding', True),
    Kind('discovery.k8s.io', 'v1', 'endpointslices', 'EndpointSlice', True),
    Kind('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition',
         False, ['crd', 'crds'], ['api-extensions'], status=True),
]
for _k in BUILTINS:
    _k.columns = BUILTIN_COLUMNS.get(_k.plural)


class Registry:
    """group -> version -> plural -> Kind; CRDs add and remove entries."""

    def __init__(self):
        self.groups = collections.OrderedDict()
        for k in BUILTINS:
            self.add(k)

    def add(self, k):
        self.groups.setdefault(k.group, collections.OrderedDict()).setdefault(
            k.version, collections.OrderedDict())[k.plural] = k

    def remove_group_plural(self, group, plural):
        vs = self.groups.get(group, {})
        for v in list(vs):
            vs[v].pop(plural, None)
            if not vs[v]:
                del vs[v]
        if group in self.groups and not self.groups[group]:
            del self.groups[group]

    def get(self, group, version, plural):
        return self.groups.get(group, {}).get(version, {}).get(plural)

    def versions(self, group):
        """Served versions, preferred first (GA over beta over alpha, higher first)."""
        return sorted(self.groups.get(group, {}), key=version_priority)

    def any_version(self, group, plural):
        for v in self.versions(group):
            k = self.groups[group][v].get(plural)
            if k:
                return k
        return None


def version_priority(v):
    m = re.match(r'^v(\d+)(?:(alpha|beta)(\d+))?$', v)
    if not m:
        return (3, v)
    stage = {None: 0, 'beta': 1, 'alpha': 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0))


# ---------------------------------------------------------------------------
# Selectors

class SelectorError(ValueError):
    pass


LABEL_TOKEN = re.compile(r'\s*(\(|\)|,|!=|==|=|!|>|<|[A-Za-z0-9_./-]+)')


def parse_label_selector(s):
    """labelSelector -> [(key, op, values)]; op in in notin exists dne gt lt."""
    reqs = []
    if not s or not s.strip():
        return reqs
    toks, pos = [], 0
    while pos < len(s):
        m = LABEL_TOKEN.match(s, pos)
        if not m:
            if s[pos:].strip() == '':
                break
            raise SelectorError('unable to parse requirement: found %r' % s[pos:])
        toks.append(m.group(1))
        pos = m.end()
    i = 0

    def need(cond, what):
        if not cond:
            raise SelectorError('unable to parse requirement: %s in %r' % (what, s))
    while i < len(toks):
        if toks[i] == '!':
            need(i + 1 < len(toks) and is_word(toks[i + 1]), 'expected a key after !')
            reqs.append((toks[i + 1], 'dne', []))
            i += 2
        else:
            need(is_word(toks[i]), 'expected a key, found %r' % toks[i])
            key = toks[i]
            i += 1
            if i >= len(toks) or toks[i] == ',':
                reqs.append((key, 'exists', []))
            elif toks[i] in ('=', '==', '!='):
                op = 'notin' if toks[i] == '!=' else 'in'
                i += 1
                if i < len(toks) and is_word(toks[i]):
                    reqs.append((key, op, [toks[i]]))
                    i += 1
                else:
                    reqs.append((key, op, ['']))
            elif toks[i] in ('in', 'notin'):
                op = toks[i]
                i += 1
                need(i < len(toks) and toks[i] == '(', 'expected ( after %s' % op)
                i += 1
                vals = []
                while i < len(toks) and toks[i] != ')':
                    if toks[i] == ',':
                        i += 1
                        continue
                    need(is_word(toks[i]), 'bad value %r' % toks[i])
                    vals.append(toks[i])
                    i += 1
                need(i < len(toks), 'expected )')
                need(op == 'notin' or vals, 'for \'in\' operator, values set can\'t be empty')
                i += 1
                reqs.append((key, op, vals))
            elif toks[i] in ('>', '<'):
                op = 'gt' if toks[i] == '>' else 'lt'
                i += 1
                need(i < len(toks) and re.match(r'^-?\d+$', toks[i]), 'expected an integer')
                reqs.append((key, op, [int(toks[i])]))
                i += 1
            else:
                need(False, 'unexpected %r' % toks[i])
        if i < len(toks):
            need(toks[i] == ',', 'expected , found %r' % toks[i])
            i += 1
            need(i < len(toks), 'trailing ,')
    for k, _, vals in reqs:
        if not LABEL_KEY.match(k):
            raise SelectorError('invalid label key %r' % k)
    return reqs


LABEL_KEY = re.compile(r'^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')


def is_word(t):
    return t not in ('(', ')', ',', '!=', '==', '=', '!', '>', '<')


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
        if op in ('gt', 'lt'):
            try:
                n = int(v)
            except (TypeError, ValueError):
                return False
            if (op == 'gt' and not n > vals[0]) or (op == 'lt' and not n < vals[0]):
                return False
    return True


def parse_field_selector(s, kind):
    out = []
    for p in (s or '').split(','):
        p = p.strip()
        if not p:
            continue
        m = re.match(r'^([^=!]+)(==|!=|=)(.*)$', p)
        if not m:
            raise SelectorError('invalid selector: %r; can\'t understand %r' % (s, p))
        k, op, v = m.group(1).strip(), m.group(2), m.group(3).strip()
        if k not in kind.fields:
            raise SelectorError('field label not supported: ' + k)
        out.append((kind.fields[k], v, op == '!='))
    return out


def fields_match(fs, o):
    return all((f(o) != v) if neg else (f(o) == v) for f, v, neg in fs)


# ---------------------------------------------------------------------------
# JSONPath (the subset printer columns use: .a.b, [0], [*], ['k'], [?(@.k=="v")])

def jsonpath(path, o):
    path = path.strip()
    if path.startswith('{') and path.endswith('}'):
        path = path[1:-1]
    cur = [o]
    i = 0
    while i < len(path):
        c = path[i]
        if c == '$' and i == 0:
            i += 1
        elif c == '.':
            m = re.match(r'\.([A-Za-z0-9_\-]+)', path[i:])
            if not m:
                i += 1
                continue
            name = m.group(1)
            cur = [x[name] for x in cur if isinstance(x, dict) and name in x]
            i += m.end()
        elif c == '[':
            j = path.index(']', i)
            inner = path[i + 1:j]
            if inner.startswith('?('):
                j = path.index(')]', i) + 1
                inner = path[i + 1:j]
                m = re.match(r'\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*["\']?([^"\']*)["\']?\)', inner)
                nxt = []
                for x in cur:
                    for e in x if isinstance(x, list) else []:
                        if m and str(jsonpath('.' + m.group(1), e)[:1] and
                                     jsonpath('.' + m.group(1), e)[0]) == m.group(2):
                            nxt.append(e)
                cur = nxt
            elif inner == '*':
                cur = [e for x in cur for e in (x if isinstance(x, list) else
                                                 list(x.values()) if isinstance(x, dict) else [])]
            elif re.match(r'^-?\d+$', inner):
                n = int(inner)
                cur = [x[n] for x in cur if isinstance(x, list) and -len(x) <= n < len(x)]
            else:
                name = inner.strip('\'"')
                cur = [x[name] for x in cur if isinstance(x, dict) and name in x]
            i = j + 1
        else:
            i += 1
    return cur


# ---------------------------------------------------------------------------
# Patches

def merge_patch(cur, patch):
    """JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(cur) if isinstance(cur, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def builtin_list_keys(name, items):
    """The merge key of a built-in list field, from its name and its items."""
    if name == 'ports':
        if any(isinstance(x, dict) and 'containerPort' in x for x in items):
            return ('containerPort',)
        if any(isinstance(x, dict) and 'port' in x for x in items):
            return ('port',)
        return None
    if name == 'conditions' and not all(isinstance(x, dict) and 'type' in x for x in items):
        return None
    return LIST_KEYS.get(name)


def strategic_merge(cur, patch):
    """Strategic merge patch for the built-in types: a merge patch whose lists
    of objects with a known merge key merge item by item, with the $patch,
    $retainKeys, $setElementOrder and $deleteFromPrimitiveList directives."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get('$patch') == 'replace':
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != '$patch'}
    if patch.get('$patch') == 'delete':
        return None
    out = dict(cur) if isinstance(cur, dict) else {}
    retain = patch.get('$retainKeys')
    orders = {}
    for k, v in patch.items():
        if k in ('$patch', '$retainKeys'):
            continue
        if k.startswith('$setElementOrder/'):
            orders[k.split('/', 1)[1]] = v
            continue
        if k.startswith('$deleteFromPrimitiveList/'):
            f = k.split('/', 1)[1]
            if isinstance(out.get(f), list):
                out[f] = [x for x in out[f] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            keys = builtin_list_keys(k, v + out[k])
            if keys and all(isinstance(x, dict) for x in v + out[k]):
                out[k] = merge_keyed_list(out[k], v, keys, strategic_merge)
            else:
                out[k] = copy.deepcopy([x for x in v if not (isinstance(x, dict) and
                                                             x.get('$patch') == 'delete')])
        else:
            out[k] = strategic_merge(out.get(k), v)
    for f, order in orders.items():
        if isinstance(out.get(f), list):
            keys = builtin_list_keys(f, out[f] + order) or ()

            def rank(x, order=order, keys=keys):
                for n, o in enumerate(order):
                    if x == o or (keys and isinstance(x, dict) and isinstance(o, dict) and
                                  all(x.get(kk) == o.get(kk) for kk in keys)):
                        return n
                return len(order)
            out[f] = sorted(out[f], key=rank)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def merge_keyed_list(cur, patch, keys, merge_item):
    out = [dict(x) for x in cur]
    for p in patch:
        kv = tuple(p.get(k) for k in keys)
        idx = next((n for n, x in enumerate(out) if tuple(x.get(k) for k in keys) == kv), None)
        if p.get('$patch') == 'delete':
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(merge_item({}, p))
        else:
            out[idx] = merge_item(out[idx], p)
    return out


class PatchError(Exception):
    def __init__(self, code, reason, msg):
        super().__init__(msg)
        self.code, self.reason, self.msg = code, reason, msg


def json_pointer(p):
    if p == '':
        return []
    if not p.startswith('/'):
        raise PatchError(422, 'Invalid', 'invalid JSON pointer %r' % p)
    return [x.replace('~1', '/').replace('~0', '~') for x in p[1:].split('/')]


def json_patch(doc, ops):
    """JSON patch (RFC 6902)."""
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise PatchError(400, 'BadRequest', 'a JSON patch is a list of operations')

    def walk(parts):
        d = doc
        for x in parts[:-1]:
            d = d[int(x)] if isinstance(d, list) else d[x]
        return d

    def get(parts):
        d = doc
        for x in parts:
            d = d[int(x)] if isinstance(d, list) else d[x]
        return d

    def add(parts, v):
        nonlocal doc
        if not parts:
            doc = v
            return
        d = walk(parts)
        k = parts[-1]
        if isinstance(d, list):
            d.insert(len(d) if k == '-' else int(k), v)
        else:
            d[k] = v

    def remove(parts):
        d = walk(parts)
        k = parts[-1]
        if isinstance(d, list):
            return d.pop(int(k))
        return d.pop(k)
    try:
        for op in ops:
            o, path = op.get('op'), json_pointer(op.get('path', ''))
            if o == 'add':
                add(path, copy.deepcopy(op['value']))
            elif o == 'remove':
                remove(path)
            elif o == 'replace':
                remove(path)
                add(path, copy.deepcopy(op['value']))
            elif o == 'move':
                v = remove(json_pointer(op['from']))
                add(path, v)
            elif o == 'copy':
                add(path, copy.deepcopy(get(json_pointer(op['from']))))
            elif o == 'test':
                if get(path) != op.get('value'):
                    raise PatchError(422, 'Invalid', 'the server rejected our request due to an '
                                     'error in our request: test failed at %s' % op.get('path'))
            else:
                raise PatchError(400, 'BadRequest', 'unknown JSON patch op %r' % o)
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise PatchError(422, 'Invalid', 'the server rejected our request due to an error in our '
                         'request: JSON patch failed: %s' % e)
    return doc


# ---------------------------------------------------------------------------
# Protobuf bodies. kubectl's typed clients (create namespace, create configmap,
# create service ...) send application/vnd.kubernetes.protobuf and, in 1.32, do
# not fall back to JSON on 415. These are the field numbers of the messages
# they send (k8s.io/api core/v1 and apimachinery's generated.proto).

PB_TIME = {1: ('seconds', 'int'), 2: ('nanos', 'int')}
PB_OWNER = {1: ('kind', 'string'), 3: ('name', 'string'), 4: ('uid', 'string'),
            5: ('apiVersion', 'string'), 6: ('controller', 'bool'),
            7: ('blockOwnerDeletion', 'bool')}
PB_META = {1: ('name', 'string'), 2: ('generateName', 'string'), 3: ('namespace', 'string'),
           5: ('uid', 'string'), 6: ('resourceVersion', 'string'), 7: ('generation', 'int'),
           11: ('labels', 'map:string'), 12: ('annotations', 'map:string'),
           13: ('ownerReferences', [PB_OWNER]), 14: ('finalizers', ['string'])}
PB_INTSTR = {1: ('type', 'int'), 2: ('intVal', 'int'), 3: ('strVal', 'string')}
PB_SVC_PORT = {1: ('name', 'string'), 2: ('protocol', 'string'), 3: ('port', 'int'),
               4: ('targetPort', 'intstr'), 5: ('nodePort', 'int'), 6: ('appProtocol', 'string')}
PB_KINDS = {
    ('v1', 'Namespace'): {1: ('metadata', PB_META), 2: ('spec', {1: ('finalizers', ['string'])})},
    ('v1', 'ConfigMap'): {1: ('metadata', PB_META), 2: ('data', 'map:string'),
                          3: ('binaryData', 'map:bytes'), 4: ('immutable', 'bool')},
    ('v1', 'Secret'): {1: ('metadata', PB_META), 2: ('data', 'map:bytes'), 3: ('type', 'string'),
                       4: ('stringData', 'map:string'), 5: ('immutable', 'bool')},
    ('v1', 'Service'): {1: ('metadata', PB_META), 2: ('spec', {
        1: ('ports', [PB_SVC_PORT]), 2: ('selector', 'map:string'), 3: ('clusterIP', 'string'),
        4: ('type', 'string'), 5: ('externalIPs', ['string']), 7: ('sessionAffinity', 'string'),
        10: ('externalName', 'string'), 11: ('externalTrafficPolicy', 'string'),
        17: ('ipFamilyPolicy', 'string'), 18: ('clusterIPs', ['string']),
        19: ('ipFamilies', ['string']), 22: ('internalTrafficPolicy', 'string')})},
}


def pb_fields(b):
    """Yields (field number, wire type, value) of one protobuf message."""
    i = 0

    def varint():
        nonlocal i
        v = shift = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7f) << shift
            shift += 7
            if c < 0x80:
                return v
    while i < len(b):
        key = varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            v = varint()
            yield num, wt, v - (1 << 64) if v >= 1 << 63 else v
        elif wt == 2:
            n = varint()
            yield num, wt, b[i:i + n]
            i += n
        elif wt == 1:
            yield num, wt, b[i:i + 8]
            i += 8
        elif wt == 5:
            yield num, wt, b[i:i + 4]
            i += 4
        else:
            raise ValueError('protobuf wire type %d' % wt)


def pb_value(typ, v):
    if typ == 'string':
        return v.decode()
    if typ == 'bytes':
        return base64.b64encode(v).decode()
    if typ == 'int':
        return v
    if typ == 'bool':
        return bool(v)
    if typ == 'intstr':
        d = pb_message(PB_INTSTR, v)
        return d.get('strVal', '') if d.get('type') == 1 else d.get('intVal', 0)
    return pb_message(typ, v)


def pb_message(schema, b):
    """Decodes a message by its schema; zero values are left out, as JSON's omitempty does."""
    out = {}
    for num, _, v in pb_fields(b):
        if num not in schema:
            continue
        name, typ = schema[num]
        if isinstance(typ, list):
            out.setdefault(name, []).append(pb_value(typ[0], v))
        elif isinstance(typ, str) and typ.startswith('map:'):
            e = {n: val for n, _, val in pb_fields(v)}
            out.setdefault(name, {})[e.get(1, b'').decode()] = pb_value(typ[4:], e.get(2, b''))
        else:
            out[name] = pb_value(typ, v)
    return {k: v for k, v in out.items() if v not in ('', 0, False, {}, []) or
            (k in ('port', 'targetPort') and v == 0)}


def pb_object(b):
    """A Kubernetes protobuf body (magic, runtime.Unknown envelope) as a JSON object."""
    if b[:4] != b'k8s\x00':
        raise ValueError('no k8s protobuf magic')
    env = {n: v for n, _, v in pb_fields(b[4:])}
    tm = {n: v.decode() for n, _, v in pb_fields(env.get(1, b''))}
    api, kind = tm.get(1, ''), tm.get(2, '')
    schema = PB_KINDS.get((api, kind))
    if schema is None:
        raise KeyError('%s %s' % (api, kind))
    o = pb_message(schema, env.get(2, b''))
    o['apiVersion'], o['kind'] = api, kind
    return o


# ---------------------------------------------------------------------------
# Server-side apply: field sets, conflicts, merge

def schema_at(schema, names):
    """The OpenAPI v3 schema node of a CRD at a path of field names, or None."""
    s = schema
    for n in names:
        if not isinstance(s, dict):
            return None
        if s.get('type') == 'array' or 'items' in s:
            s = s.get('items')
            if not isinstance(s, dict):
                return None
        props = s.get('properties') or {}
        if n in props:
            s = props[n]
        elif isinstance(s.get('additionalProperties'), dict):
            s = s['additionalProperties']
        else:
            return None
    return s


class Fields:
    """How a kind's lists merge: keyed (list-map keys) or atomic."""

    def __init__(self, kind):
        self.kind = kind
        self.schema = None
        if kind.crd is not None:
            self.schema = ((kind.crd.get('schema') or {}).get('openAPIV3Schema')) or {}

    def keys(self, names, items):
        if self.schema is not None:
            s = schema_at(self.schema, names)
            if s and s.get('x-kubernetes-list-type') == 'map':
                return tuple(s.get('x-kubernetes-list-map-keys') or ())
            return None  # a CR's list without listType=map is atomic, as on a real server
        if names[:1] == ['metadata']:
            return ('uid',) if names[-1] == 'ownerReferences' else None
        return builtin_list_keys(names[-1], items) if names else None


def field_set(obj, fields, names=(), path=()):
    """The set of paths obj sets: leaves (scalars, atomic lists, empty maps) and
    the items of keyed lists. A path is a tuple of ('f', name) and ('k', keys)."""
    out = {}
    if isinstance(obj, dict):
        if not obj and path:
            out[path] = obj
        for k, v in obj.items():
            out.update(field_set(v, fields, names + (k,), path + (('f', k),)))
        return out
    if isinstance(obj, list):
        keys = fields.keys(list(names), obj) if names else None
        if keys and all(isinstance(x, dict) and all(kk in x for kk in keys) for x in obj):
            for x in obj:
                kp = path + (('k', tuple((kk, x[kk]) for kk in keys)),)
                out[kp] = None  # the item itself
                for kk, vv in x.items():
                    out.update(field_set(vv, fields, names + (kk,), kp + (('f', kk),)))
            return out
    out[path] = obj
    return out


def path_get(o, path):
    for kind, v in path:
        if kind == 'f':
            if not isinstance(o, dict) or v not in o:
                return KeyError
            o = o[v]
        else:
            if not isinstance(o, list):
                return KeyError
            o = next((x for x in o if isinstance(x, dict) and
                      all(x.get(a) == b for a, b in v)), KeyError)
            if o is KeyError:
                return KeyError
    return o


def path_delete(o, path):
    """Removes path from o (in place; o is a private copy)."""
    for n, (kind, v) in enumerate(path):
        last = n == len(path) - 1
        if kind == 'f':
            if not isinstance(o, dict) or v not in o:
                return
            if last:
                del o[v]
                return
            o = o[v]
        else:
            if not isinstance(o, list):
                return
            idx = next((i for i, x in enumerate(o) if isinstance(x, dict) and
                        all(x.get(a) == b for a, b in v)), None)
            if idx is None:
                return
            if last:
                o.pop(idx)
                return
            o = o[idx]


def remove_unowned(o, paths, owned):
    """Removes the fields a manager no longer applies and no one else owns:
    whole list items first (an item goes when no one owns anything in it),
    then the other fields, never an item's key field, then the maps this
    emptied."""
    def owned_under(prefix):
        return any(len(q) > len(prefix) and q[:len(prefix)] == prefix for q in owned)
    items = sorted((p for p in paths if p[-1][0] == 'k' and not owned_under(p)), key=len)
    for p in items:
        path_delete(o, p)
    for p in sorted(paths, key=len, reverse=True):
        if p[-1][0] == 'k' or any(p[:len(i)] == i for i in items):
            continue
        if len(p) >= 2 and p[-2][0] == 'k' and p[-1][1] in dict(p[-2][1]):
            continue  # an item's key
        path_delete(o, p)
        for n in range(len(p) - 1, 0, -1):  # the maps left empty
            pre = p[:n]
            if pre[-1][0] != 'f' or pre in owned or owned_under(pre):
                break
            v = path_get(o, pre)
            if v != {}:
                break
            path_delete(o, pre)


def apply_merge(cur, cfg, fields, names=()):
    """Merges an applied configuration into the object: maps recurse, keyed
    lists merge item by item, everything else is replaced."""
    if isinstance(cfg, dict):
        out = dict(cur) if isinstance(cur, dict) else {}
        for k, v in cfg.items():
            out[k] = apply_merge(out.get(k), v, fields, names + (k,))
        return out
    if isinstance(cfg, list) and isinstance(cur, list):
        keys = fields.keys(list(names), cfg + cur) if names else None
        if keys and all(isinstance(x, dict) for x in cfg + cur):
            return merge_keyed_list(cur, cfg, keys,
                                    lambda a, b: apply_merge(a, b, fields, names))
    return copy.deepcopy(cfg)


def strip_managed(o):
    return dict(o, metadata={k: v for k, v in o['metadata'].items() if k != 'managedFields'})


def fields_v1(paths):
    """A field set rendered as managedFields' FieldsV1."""
    root = {}
    for p in sorted(paths, key=lambda x: (len(x), json.dumps(x, default=str))):
        d = root
        for kind, v in p:
            k = 'f:' + v if kind == 'f' else 'k:' + json.dumps(dict(v), separators=(',', ':'),
                                                                 sort_keys=True)
            d = d.setdefault(k, {})
        if p and p[-1][0] == 'k':
            d.setdefault('.', {})
    return root


def path_str(p):
    s = ''
    for kind, v in p:
        s += '.' + v if kind == 'f' else '[%s]' % ','.join('%s=%s' % (a, json.dumps(b)) for a, b in v)
    return s


def path_to_json(p):
    return [[k, [list(x) for x in v] if k == 'k' else v] for k, v in p]


def path_from_json(p):
    return tuple((k, tuple(tuple(x) for x in v) if k == 'k' else v) for k, v in p)


# ---------------------------------------------------------------------------
# The store

class Entry:
    __slots__ = ('rv', 'group', 'plural', 'ns', 'typ', 'obj', 'prev', 'cache')

    def __init__(self, rv, group, plural, ns, typ, obj, prev):
        self.rv, self.group, self.plural, self.ns = rv, group, plural, ns
        self.typ, self.obj, self.prev, self.cache = typ, obj, prev, {}


class Store:
    """Objects are never changed once stored: every write stores a new dict,
    so lists, snapshots and the watch history share them without copying."""

    def __init__(self, state, history_max):
        self.mu = threading.Condition()
        self.rv = 1000
        self.objs = {}        # (group, plural) -> {(ns, name): obj}
        self.history = []     # Entry, in resourceVersion order
        self.hist_rvs = []    # their resourceVersions, for bisect
        self.base = 0         # sequence number of history[0]
        self.compacted = 0    # the oldest resourceVersion a watch or continue may use
        self.history_max = history_max
        self.managers = {}    # (group, plural, ns, name) -> {manager: {...}}
        self.snapshots = collections.OrderedDict()
        self.state = state
        self.dirty = False
        self.save_mu = threading.Lock()  # one writer of the state file at a time
        if state and os.path.exists(state):
            with open(state) as f:
                d = json.load(f)
            self.rv = d['rv']
            self.compacted = self.rv
            for k, o in d['objs']:
                self.objs.setdefault((k[0], k[1]), {})[(k[2], k[3])] = o
            for k, ms in d.get('managers', []):
                self.managers[tuple(k)] = {m: dict(v, paths={path_from_json(p): None
                                                              for p in v['paths']})
                                           for m, v in ms.items()}

    def bucket(self, group, plural):
        return self.objs.setdefault((group, plural), {})

    def get(self, group, plural, ns, name):
        return self.objs.get((group, plural), {}).get((ns, name))

    def commit(self, group, plural, ns, name, typ, obj, prev):
        """Stores obj (or deletes, for DELETED) at the next resourceVersion.
        Caller holds mu. Returns the stored object."""
        self.rv += 1
        md = dict(obj['metadata'])
        md['resourceVersion'] = str(self.rv)
        obj = dict(obj)
        obj['metadata'] = md
        b = self.bucket(group, plural)
        if typ == 'DELETED':
            b.pop((ns, name), None)
            self.managers.pop((group, plural, ns, name), None)
        else:
            b[(ns, name)] = obj
        self.history.append(Entry(self.rv, group, plural, ns, typ, obj, prev))
        self.hist_rvs.append(self.rv)
        if len(self.history) > self.history_max:
            drop = len(self.history) - self.history_max // 2
            self.compacted = self.history[drop - 1].rv
            del self.history[:drop]
            del self.hist_rvs[:drop]
            self.base += drop
        self.dirty = True
        self.mu.notify_all()
        return obj

    def compact(self):
        self.compacted = self.rv
        self.base += len(self.history)
        self.history = []
        self.hist_rvs = []
        self.snapshots.clear()
        self.mu.notify_all()

    def save(self):
        """Writes the state file if anything changed. The lock is held only to
        take references: stored objects and manager entries never change."""
        with self.mu:
            if not self.state or not self.dirty:
                return
            rv = self.rv
            objs = [[[g, p, ns, n], o] for (g, p), b in self.objs.items() for (ns, n), o in b.items()]
            mans = list(self.managers.items())
            self.dirty = False
        d = {'rv': rv, 'objs': objs,
             'managers': [[list(k), {m: dict(v, paths=[path_to_json(p) for p in v['paths']])
                                     for m, v in ms.items()}] for k, ms in mans]}
        with self.save_mu:
            with open(self.state + '.tmp', 'w') as f:
                json.dump(d, f)
            os.replace(self.state + '.tmp', self.state)

    def saver(self):
        """Saves once a second while there are writes (a thread); SIGTERM saves too."""
        while True:
            time.sleep(1)
            self.save()


STORE = None
REG = None
TOKEN_FILE = None
CFG = {'bookmark_s': 1.0, 'watch410': 'event', 'aggregated': True}
CTL = {'fail': [], 'delay': [], 'silence': []}
WATCHES = {}
REQUESTS = collections.deque(maxlen=200000)
WATCH_IDS = iter(range(1, 1 << 62))


def now_ts():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


REASONS = {400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound',
           405: 'MethodNotAllowed', 406: 'NotAcceptable', 409: 'Conflict', 410: 'Expired',
           415: 'UnsupportedMediaType', 422: 'Invalid', 429: 'TooManyRequests',
           500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout'}


def status(code, reason, message, details=None, **md):
    s = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': md, 'status': 'Failure',
         'message': message, 'reason': reason, 'code': code}
    if details:
        s['details'] = details
    return s


class ApiError(Exception):
    def __init__(self, code, message, reason=None, details=None, headers=None, **md):
        super().__init__(message)
        self.body = status(code, reason or REASONS.get(code, 'Unknown'), message, details, **md)
        self.code = code
        self.headers = headers


def not_found(kind, name):
    d = {'name': name, 'kind': kind.plural}
    if kind.group:
        d['group'] = kind.group
    return ApiError(404, '%s "%s" not found' % (res_name(kind), name), 'NotFound', d)


def res_name(kind):
    return kind.plural + ('.' + kind.group if kind.group else '')


NAME_RE = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
LABEL_RE = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')


def invalid(kind, name, causes):
    return ApiError(422, '%s "%s" is invalid: %s' % (kind.kind + ('.' + kind.group if kind.group
                                                                  else ''), name, ', '.join(
        '%s: %s' % (c['field'], c['message']) for c in causes)), 'Invalid',
        {'name': name, 'group': kind.group, 'kind': kind.kind,
         'causes': [dict(c, reason='FieldValueInvalid') for c in causes]})


# ---------------------------------------------------------------------------
# Kind-specific behaviour: defaults on create, CRDs


def qos_class(spec):
    cs = (spec or {}).get('containers') or []
    req = [(c.get('resources') or {}).get('requests') or {} for c in cs]
    lim = [(c.get('resources') or {}).get('limits') or {} for c in cs]
    if not any(req) and not any(lim):
        return 'BestEffort'
    if all(l.get('cpu') and l.get('memory') and (r.get('cpu', l['cpu']) == l['cpu']) and
           (r.get('memory', l['memory']) == l['memory']) for r, l in zip(req, lim)):
        return 'Guaranteed'
    return 'Burstable'


SVC_IPS = iter(range(1, 1 << 20))


def defaults(kind, o):
    """Defaults a real API server (or its controllers, at once) would set."""
    md = o['metadata']
    k = (kind.group, kind.plural)
    if k == ('', 'namespaces'):
        md.setdefault('labels', {})['kubernetes.io/metadata.name'] = md['name']
        o.setdefault('spec', {}).setdefault('finalizers', ['kubernetes'])
        o['status'] = {'phase': 'Active'}
    elif k == ('', 'pods'):
        spec = o.setdefault('spec', {})
        spec.setdefault('restartPolicy', 'Always')
        spec.setdefault('schedulerName', 'default-scheduler')
        spec.setdefault('serviceAccountName', 'default')
        spec.setdefault('terminationGracePeriodSeconds', 30)
        st = o.setdefault('status', {})
        st.setdefault('phase', 'Pending')
        st.setdefault('qosClass', qos_class(spec))
    elif k == ('', 'services'):
        spec = o.setdefault('spec', {})
        spec.setdefault('type', 'ClusterIP')
        spec.setdefault('sessionAffinity', 'None')
        if not spec.get('clusterIP'):
            n = next(SVC_IPS)
            spec['clusterIP'] = '10.96.%d.%d' % (n // 254 % 256, n % 254 + 1)
        spec.setdefault('clusterIPs', [spec['clusterIP']] if spec['clusterIP'] != 'None' else
                        ['None'])
        for p in spec.get('ports') or []:
            p.setdefault('protocol', 'TCP')
            p.setdefault('targetPort', p.get('port'))
        o.setdefault('status', {}).setdefault('loadBalancer', {})
    elif k == ('apps', 'daemonsets'):
        spec = o.setdefault('spec', {})
        spec.setdefault('revisionHistoryLimit', 10)
        us = spec.setdefault('updateStrategy', {})
        us.setdefault('type', 'RollingUpdate')
        if us['type'] == 'RollingUpdate':
            us.setdefault('rollingUpdate', {}).setdefault('maxUnavailable', 1)
            us['rollingUpdate'].setdefault('maxSurge', 0)
        ps = (spec.get('template') or {}).get('spec')
        if isinstance(ps, dict):
            ps.setdefault('restartPolicy', 'Always')
            ps.setdefault('dnsPolicy', 'ClusterFirst')
            ps.setdefault('schedulerName', 'default-scheduler')
            ps.setdefault('terminationGracePeriodSeconds', 30)
            ps.setdefault('securityContext', {})
            for c in ps.get('containers') or []:
                c.setdefault('imagePullPolicy', 'Always' if str(c.get('image', '')).endswith(
                    ':latest') or ':' not in str(c.get('image', '')) else 'IfNotPresent')
                c.setdefault('terminationMessagePath', '/dev/termination-log')
                c.setdefault('terminationMessagePolicy', 'File')
                for pr in ('livenessProbe', 'readinessProbe', 'startupProbe'):
                    if isinstance(c.get(pr), dict):
                        for f, d in (('timeoutSeconds', 1), ('periodSeconds', 10),
                                     ('successThreshold', 1), ('failureThreshold', 3)):
                            c[pr].setdefault(f, d)
                        if isinstance(c[pr].get('httpGet'), dict):
                            c[pr]['httpGet'].setdefault('scheme', 'HTTP')
        # no DaemonSet controller and no nodes to run on: nothing is scheduled
        o['status'] = {'currentNumberScheduled': 0, 'desiredNumberScheduled': 0,
                       'numberMisscheduled': 0, 'numberReady': 0, 'observedGeneration': 1}
    elif k == ('apiextensions.k8s.io', 'customresourcedefinitions'):
        crd_status(o)


def builtin_validate(kind, o):
    """The few checks of the built-in kinds a manifest's mistakes would meet
    first on a real server."""
    causes = []
    k = (kind.group, kind.plural)
    if k == ('apps', 'daemonsets'):
        spec = o.get('spec') or {}
        sel = (spec.get('selector') or {})
        labels = ((spec.get('template') or {}).get('metadata') or {}).get('labels') or {}
        ps = (spec.get('template') or {}).get('spec') or {}
        if not sel.get('matchLabels') and not sel.get('matchExpressions'):
            causes.append({'field': 'spec.selector', 'message': 'Required value'})
        elif any(labels.get(a) != b for a, b in (sel.get('matchLabels') or {}).items()):
            causes.append({'field': 'spec.template.metadata.labels', 'message': 'Invalid value: '
                           '%s: `selector` does not match template `labels`' % json.dumps(labels)})
        if not ps.get('containers'):
            causes.append({'field': 'spec.template.spec.containers', 'message': 'Required value'})
        for i, c in enumerate(ps.get('containers') or []):
            if not c.get('name') or not c.get('image'):
                causes.append({'field': 'spec.template.spec.containers[%d]' % i,
                               'message': 'Required value: name and image'})
            sc = c.get('securityContext') or {}
            if sc.get('allowPrivilegeEscalation') is False and (sc.get('privileged') or 'SYS_ADMIN' in (
                    (sc.get('capabilities') or {}).get('add') or [])):
                causes.append({'field': 'spec.template.spec.containers[%d].securityContext' % i,
                               'message': 'Invalid value: cannot set `allowPrivilegeEscalation` to '
                               'false and `privileged` to true or `capabilities.Add` CAP_SYS_ADMIN'})
        us = spec.get('updateStrategy') or {}
        if us.get('type') not in (None, 'RollingUpdate', 'OnDelete'):
            causes.append({'field': 'spec.updateStrategy.type', 'message': 'Unsupported value: %r'
                           % us.get('type')})
    elif k in (('rbac.authorization.k8s.io', 'clusterrolebindings'),
               ('rbac.authorization.k8s.io', 'rolebindings')):
        rr = o.get('roleRef') or {}
        if not rr.get('name') or rr.get('kind') not in ('Role', 'ClusterRole') or rr.get(
                'apiGroup') != 'rbac.authorization.k8s.io':
            causes.append({'field': 'roleRef', 'message': 'Invalid value: %s' % json.dumps(rr)})
    return causes


def crd_validate(o):
    spec = o.get('spec') or {}
    names = spec.get('names') or {}
    causes = []
    for i, v in enumerate(spec.get('versions') or []):
        sch = (v.get('schema') or {}).get('openAPIV3Schema')
        if sch is None:
            causes.append({'field': 'spec.versions[%d].schema.openAPIV3Schema' % i,
                           'message': 'Required value: schemas are required'})
            continue
        for e in crdschema.structural_errors(sch, 'spec.versions[%d].schema.openAPIV3Schema' % i):
            f, _, m = e.partition(': ')
            causes.append({'field': f, 'message': m})
    for f in ('plural', 'kind'):
        if not names.get(f):
            causes.append({'field': 'spec.names.' + f, 'message': 'Required value'})
    if not spec.get('group'):
        causes.append({'field': 'spec.group', 'message': 'Required value'})
    if spec.get('scope') not in ('Namespaced', 'Cluster'):
        causes.append({'field': 'spec.scope', 'message': 'Unsupported value: %r: supported values: '
                       '"Cluster", "Namespaced"' % spec.get('scope')})
    vs = spec.get('versions') or []
    if not vs:
        causes.append({'field': 'spec.versions', 'message': 'Invalid value: must have exactly one '
                       'version marked as storage version'})
    elif sum(1 for v in vs if v.get('storage')) != 1:
        causes.append({'field': 'spec.versions', 'message': 'Invalid value: must have exactly one '
                       'version marked as storage version'})
    want = '%s.%s' % (names.get('plural'), spec.get('group'))
    if o['metadata'].get('name') != want:
        causes.append({'field': 'metadata.name', 'message': 'Invalid value: %r: must be '
                       'spec.names.plural+"."+spec.group' % o['metadata'].get('name')})
    return causes


def crd_status(o):
    spec = o.get('spec') or {}
    names = dict(spec.get('names') or {})
    names.setdefault('singular', (names.get('kind') or '').lower())
    names.setdefault('listKind', (names.get('kind') or '') + 'List')
    ts = now_ts()
    o['status'] = {
        'acceptedNames': names,
        'conditions': [
            {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts',
             'message': 'no conflicts found', 'lastTransitionTime': ts},
            {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
             'message': 'the initial names have been accepted', 'lastTransitionTime': ts}],
        'storedVersions': [v['name'] for v in spec.get('versions') or [] if v.get('storage')]}


def crd_columns(ver):
    cols = [NAME_COL]
    pcs = ver.get('additionalPrinterColumns')
    if pcs is None:
        pcs = [{'name': 'Age', 'type': 'date', 'jsonPath': '.metadata.creationTimestamp'}]
    for pc in pcs:
        def cell(o, jp=pc.get('jsonPath', ''), typ=pc.get('type', 'string')):
            r = jsonpath(jp, o)
            if not r:
                return None
            v = r[0]  # as the real server: the first result only
            if typ == 'date' and isinstance(v, str):
                return age({'metadata': {'creationTimestamp': v}})  # shown as an age, e.g. 5m
            if typ == 'string' and not isinstance(v, str):
                return json.dumps(v) if isinstance(v, (dict, list)) else (
                    ('true' if v else 'false') if isinstance(v, bool) else str(v))
            return v
        cols.append(col(pc.get('name', ''), cell, pc.get('type', 'string'),
                        int(pc.get('priority') or 0), pc.get('description', '')))
    return cols


def crd_register(o):
    spec = o['spec']
    names = spec['names']
    group = spec['group']
    REG.remove_group_plural(group, names['plural'])
    for v in spec.get('versions') or []:
        if not v.get('served', True):
            continue
        REG.add(Kind(group, v['name'], names['plural'], names['kind'],
                     spec.get('scope') == 'Namespaced', names.get('shortNames') or [],
                     names.get('categories') or [],
                     status='status' in (v.get('subresources') or {}),
                     columns=crd_columns(v), crd=v, singular=names.get('singular')))


def crd_unregister(o):
    spec = o.get('spec') or {}
    REG.remove_group_plural(spec.get('group'), (spec.get('names') or {}).get('plural'))


# ---------------------------------------------------------------------------
# HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'faultline-test-apiserver'

    def log_message(self, *a):
        pass

    # -- responses

    def send_bytes(self, code, body, ctype='application/json', extra=None):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-cache, private')
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        for w in getattr(self, 'warnings', None) or []:
            self.send_header('Warning', '299 - %s' % json.dumps(w))
        # headers and body in one write: two small ones meet Nagle and delayed ACKs
        self._headers_buffer.append(b'\r\n' + body)
        self.flush_headers()
        if self.log:
            self.log['code'] = code

    def send_json(self, code, obj, extra=None, ctype='application/json'):
        self.send_bytes(code, (json.dumps(obj) + '\n').encode(), ctype, extra)

    def send_error_obj(self, e):
        self.send_json(e.code, e.body, e.headers)

    # -- requests

    def body_bytes(self):
        """The request body (read once; later calls return it again)."""
        if self._body is None:
            self._body = self.read_body()
        return self._body

    def read_body(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            out = b''
            while True:
                n = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
                if n == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''

    def body_json(self):
        ct = (self.headers.get('Content-Type') or '').split(';')[0].strip()
        if ct == 'application/vnd.kubernetes.protobuf':
            try:
                return pb_object(self.body_bytes())
            except KeyError as e:
                raise ApiError(415, 'this test API server reads protobuf bodies of Namespace, '
                               'ConfigMap, Secret and Service only, not %s; send JSON' % e.args[0],
                               'UnsupportedMediaType')
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                raise ApiError(400, 'protobuf body: %s' % e)
        b = self.body_bytes()
        if not b.strip():
            raise ApiError(400, 'the request body is empty')
        try:
            return json.loads(b)
        except ValueError as e:
            if 'yaml' in (self.headers.get('Content-Type') or ''):
                raise ApiError(415, 'this test API server reads YAML bodies only in their JSON '
                               'form (%s)' % e)
            raise ApiError(400, 'couldn\'t get version/kind; json parse error: %s' % e)

    def auth(self):
        """'token', 'cert', 'bad' (a wrong token) or 'none'."""
        h = self.headers.get('Authorization', '')
        if h.lower().startswith('bearer '):
            try:
                with open(TOKEN_FILE) as f:
                    want = f.read().strip()
            except OSError:
                want = None
            if want and h[7:].strip() == want:
                return 'token'
        try:
            if self.connection.getpeercert():
                return 'cert'
        except (AttributeError, ValueError):
            pass
        return 'bad' if h else 'none'

    def route(self, method):
        self.log = None
        self._body = None
        self.warnings = []
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        path = u.path.rstrip('/') or '/'
        try:
            if path.startswith('/_test/'):
                return self.control(method, path, q)
            who = self.auth()
            self.log = {'method': method, 'path': path, 'query': q, 't': time.time(), 'code': None,
                        'ctype': self.headers.get('Content-Type'),
                        'accept': self.headers.get('Accept'),
                        'ua': self.headers.get('User-Agent'), 'auth': who}
            REQUESTS.append(self.log)
            self.injected(method, path)
            if path in ('/healthz', '/livez', '/readyz'):
                return self.send_bytes(200, b'ok', 'text/plain; charset=utf-8')
            if who not in ('token', 'cert'):
                self.body_bytes()
                return self.send_json(401, status(401, 'Unauthorized', 'Unauthorized'))
            return self.api(method, path, q)
        except ApiError as e:
            self.body_bytes()  # unread, it would be taken for the next request
            return self.send_error_obj(e)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:  # a bug here: say so to the client and in server.log
            traceback.print_exc()
            self.close_connection = True
            try:
                self.send_json(500, status(500, 'InternalError', 'test API server: %s: %s' % (
                    type(e).__name__, e)))
            except OSError:
                pass

    def injected(self, method, path):
        """Applies /_test/delay and /_test/fail to a request."""
        delay = 0
        with STORE.mu:
            for d in CTL['delay']:
                if d['count'] != 0 and path.startswith(d['path']):
                    d['count'] -= 1
                    delay = d['ms']
                    break
            fail = None
            for f in CTL['fail']:
                if f['count'] > 0 and path.startswith(f['path']) and f['method'] in (None, method):
                    f['count'] -= 1
                    fail = f
                    break
        if delay:
            time.sleep(delay / 1000)
        if fail:
            self.body_bytes()
            code = fail['status']
            hdr = {}
            det = None
            if fail.get('retry_after'):
                hdr['Retry-After'] = str(fail['retry_after'])
                det = {'retryAfterSeconds': int(float(fail['retry_after']))}
            raise ApiError(code, 'injected by the test (/_test/fail)',
                           REASONS.get(code, 'Unknown'), det, hdr)

    # -- discovery

    def api(self, method, path, q):
        accept = self.headers.get('Accept') or ''
        if path == '/version':
            return self.send_json(200, VERSION)
        if path in ('/api', '/apis'):
            if method != 'GET':
                raise ApiError(405, 'the server does not allow this method on the requested '
                               'resource')
            if CFG['aggregated'] and 'as=APIGroupDiscoveryList' in accept and 'v=v2' in accept:
                return self.send_json(200, self.aggregated(path == '/api'), {'Vary': 'Accept'},
                                      AGG_CT)
            if path == '/api':
                return self.send_json(200, {'kind': 'APIVersions', 'versions': ['v1'],
                                            'serverAddressByClientCIDRs': [
                                                {'clientCIDR': '0.0.0.0/0',
                                                 'serverAddress': self.server.addr}]})
            return self.send_json(200, {'kind': 'APIGroupList', 'apiVersion': 'v1',
                                        'groups': [self.group_doc(g) for g in REG.groups if g]})
        if path == '/openapi/v3' or path.startswith('/openapi/v3/'):
            return self.openapi(path)
        parts = path.strip('/').split('/')
        if parts[0] == 'api' and len(parts) >= 2:
            group, version, rest = '', parts[1], parts[2:]
        elif parts[0] == 'apis' and len(parts) >= 2:
            if len(parts) == 2:
                if parts[1] not in REG.groups or not parts[1]:
                    raise ApiError(404, 'the server could not find the requested resource')
                return self.send_json(200, dict(self.group_doc(parts[1]), kind='APIGroup',
                                                apiVersion='v1'))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, 'the server could not find the requested resource', 'NotFound',
                           {'causes': [{'reason': 'UnexpectedServerResponse',
                                        'message': '404 page not found'}]})
        if version not in REG.groups.get(group, {}):
            raise ApiError(404, 'the server could not find the requested resource')
        kinds = REG.groups[group][version]
        gv = (group + '/' if group else '') + version
        if not rest:
            res = []
            for k in kinds.values():
                res.append({'name': k.plural, 'singularName': k.singular,
                            'namespaced': k.namespaced, 'kind': k.kind, 'verbs': VERBS,
                            'shortNames': k.short, 'categories': k.categories})
                if k.status:
                    res.append({'name': k.plural + '/status', 'singularName': '',
                                'namespaced': k.namespaced, 'kind': k.kind,
                                'verbs': ['get', 'patch', 'update']})
            return self.send_json(200, {'kind': 'APIResourceList', 'apiVersion': 'v1',
                                        'groupVersion': gv, 'resources': res})
        watch = False
        if rest[0] == 'watch':  # the deprecated /watch/ paths
            watch, rest = True, rest[1:]
            if not rest:
                raise ApiError(404, 'the server could not find the requested resource')
        ns = None
        if rest[0] == 'namespaces' and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in (
                'status', 'finalize')):
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        kind = kinds.get(plural)
        if kind is None or len(rest) > 3:
            raise ApiError(404, 'the server could not find the requested resource')
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and (sub != 'status' or not kind.status):
            raise ApiError(404, 'the server could not find the requested resource')
        if ns is not None and not kind.namespaced:
            raise ApiError(404, 'the server could not find the requested resource')
        if kind.namespaced and ns is None and name is not None:
            raise ApiError(404, 'the server could not find the requested resource')
        if watch:
            q['watch'] = 'true'
        return self.resource(method, kind, ns, name, sub, q)

    def group_doc(self, g):
        vs = [{'groupVersion': g + '/' + v, 'version': v} for v in REG.versions(g)]
        return {'name': g, 'versions': vs, 'preferredVersion': vs[0]}

    def aggregated(self, core):
        items = []
        for g in ([''] if core else [g for g in REG.groups if g]):
            versions = []
            for v in REG.versions(g):
                rs = []
                for k in REG.groups[g][v].values():
                    r = {'resource': k.plural,
                         'responseKind': {'group': g, 'version': v, 'kind': k.kind},
                         'scope': 'Namespaced' if k.namespaced else 'Cluster',
                         'singularResource': k.singular, 'verbs': VERBS}
                    if k.short:
                        r['shortNames'] = k.short
                    if k.categories:
                        r['categories'] = k.categories
                    if k.status:
                        r['subresources'] = [{'subresource': 'status', 'responseKind': {
                            'group': g, 'version': v, 'kind': k.kind},
                            'verbs': ['get', 'patch', 'update']}]
                    rs.append(r)
                versions.append({'version': v, 'resources': rs, 'freshness': 'Current'})
            items.append({'metadata': {'name': g, 'creationTimestamp': None},
                          'versions': versions})
        return {'kind': 'APIGroupDiscoveryList', 'apiVersion': 'apidiscovery.k8s.io/v2',
                'metadata': {}, 'items': items}

    def openapi(self, path):
        """Just enough OpenAPI v3 for kubectl: each PATCH operation names its
        kind and the fieldValidation parameter, so kubectl leaves validation to
        the server (which accepts what it gets) instead of wanting schemas."""
        gvs = {}
        for g, vs in REG.groups.items():
            for v in vs:
                gvs[('api/' if not g else 'apis/%s/' % g) + v] = (g, v)
        if path == '/openapi/v3':
            return self.send_json(200, {'paths': {p: {'serverRelativeURL': '/openapi/v3/%s?hash=%s'
                                                      % (p, STORE.rv)} for p in gvs}})
        p = path[len('/openapi/v3/'):]
        if p not in gvs:
            raise ApiError(404, 'the server could not find the requested resource')
        g, v = gvs[p]
        params = [{'name': n, 'in': 'query', 'schema': {'type': 'string', 'uniqueItems': True}}
                  for n in ('dryRun', 'fieldManager', 'fieldValidation', 'force')]
        paths = {}
        for k in REG.groups[g][v].values():
            pre = '/' + p + ('/namespaces/{namespace}' if k.namespaced else '')
            gvk = {'group': g, 'version': v, 'kind': k.kind}
            for suffix in ('', '/status') if k.status else ('',):
                paths['%s/%s/{name}%s' % (pre, k.plural, suffix)] = {
                    'patch': {'operationId': 'patch' + k.kind + suffix.replace('/', '_'),
                              'x-kubernetes-action': 'patch',
                              'x-kubernetes-group-version-kind': gvk, 'parameters': params,
                              'responses': {'200': {'description': 'OK'}}}}
        return self.send_json(200, {'openapi': '3.0.0', 'info': {'title': 'Kubernetes',
                                                                  'version': VERSION['gitVersion']},
                                    'paths': paths, 'components': {'schemas': {}}})

    # -- resources

    def resource(self, method, kind, ns, name, sub, q):
        if method == 'GET' and (name is None or q.get('watch') in ('1', 'true')):
            if name is not None:
                q['fieldSelector'] = ','.join(x for x in (q.get('fieldSelector'),
                                                          'metadata.name=' + name) if x)
            try:
                fs = parse_field_selector(q.get('fieldSelector'), kind)
                ls = parse_label_selector(q.get('labelSelector'))
            except SelectorError as e:
                raise ApiError(400, str(e))
            if q.get('watch') in ('1', 'true'):
                return self.watch(kind, ns, fs, ls, q)
            return self.list_objects(kind, ns, fs, ls, q)
        if method == 'GET':
            o = STORE.get(kind.group, kind.plural, ns or '', name)
            if o is None:
                raise not_found(kind, name)
            return self.send_obj(200, kind, o)
        if method == 'POST' and name is None:
            return self.create(kind, ns, q)
        if method == 'PUT' and name is not None:
            return self.replace(kind, ns, name, sub, q)
        if method == 'PATCH' and name is not None:
            return self.patch(kind, ns, name, sub, q)
        if method == 'DELETE' and name is not None and sub is None:
            return self.delete(kind, ns, name, q)
        if method == 'DELETE' and name is None:
            return self.delete_collection(kind, ns, q)
        raise ApiError(405, 'the server does not allow this method on the requested resource')

    def out(self, kind, o):
        """o as served at kind's version (custom resources may be served at several)."""
        if o.get('apiVersion') != kind.gv:
            o = dict(o, apiVersion=kind.gv)
        return o

    def table_mode(self):
        a = self.headers.get('Accept') or ''
        for part in a.split(','):
            if 'as=Table' in part and 'g=meta.k8s.io' in part:
                return 'v1beta1' if 'v=v1beta1' in part else 'v1'
        return None

    def partial_mode(self):
        a = self.headers.get('Accept') or ''
        for part in a.split(','):
            if 'as=PartialObjectMetadata' in part and 'g=meta.k8s.io' in part:
                return 'v1beta1' if 'v=v1beta1' in part else 'v1'
        return None

    def table(self, kind, objs, md, q, headers=True):
        tv = self.table_mode()
        cols = kind.columns or [NAME_COL, AGE_COL]
        inc = q.get('includeObject', 'Metadata')
        rows = []
        for o in objs:
            if inc == 'Object':
                obj = self.out(kind, o)
            elif inc == 'None':
                obj = None
            else:
                obj = {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/' + tv,
                       'metadata': o['metadata']}
            cells = []
            for c in cols:
                try:
                    cells.append(c[4](o))
                except Exception:  # a cell a test's object cannot fill stays empty
                    cells.append(None)
            row = {'cells': cells}
            if obj is not None:
                row['object'] = obj
            rows.append(row)
        t = {'kind': 'Table', 'apiVersion': 'meta.k8s.io/' + tv, 'metadata': md,
             'columnDefinitions': [{'name': c[0], 'type': c[1], 'format': 'name' if c is NAME_COL
                                    else '', 'description': c[3], 'priority': c[2]}
                                   for c in cols] if headers else [],
             'rows': rows}
        return t

    def send_obj(self, code, kind, o, q=None):
        if self.table_mode():
            return self.send_json(code, self.table(kind, [o], {'resourceVersion': o['metadata'].get(
                'resourceVersion')}, q or {}))
        pm = self.partial_mode()
        if pm:
            return self.send_json(code, {'kind': 'PartialObjectMetadata',
                                         'apiVersion': 'meta.k8s.io/' + pm, 'metadata': o['metadata']})
        return self.send_json(code, self.out(kind, o))

    def matching(self, kind, ns, fs, ls):
        b = STORE.objs.get((kind.group, kind.plural), {})
        keys = sorted(k for k in b if ns is None or k[0] == ns)
        out = []
        for k in keys:
            o = b[k]
            if (not fs or fields_match(fs, o)) and (not ls or labels_match(
                    ls, o['metadata'].get('labels') or {})):
                out.append(o)
        return out

    def wait_rv(self, rv):
        """A resourceVersion newer than the server's: wait up to 3 s, as the
        watch cache does, then 504 Too large resource version."""
        if rv > STORE.rv and not STORE.mu.wait_for(lambda: STORE.rv >= rv, 3):
            raise ApiError(504, 'Too large resource version: %d, current: %d' % (rv, STORE.rv),
                           'Timeout', {'causes': [{'reason': 'ResourceVersionTooLarge',
                                                   'message': 'Too large resource version'}],
                                       'retryAfterSeconds': 1})

    def list_objects(self, kind, ns, fs, ls, q):
        try:
            limit = max(int(q.get('limit') or 0), 0)
        except ValueError:
            raise ApiError(400, 'limit: invalid value %r' % q.get('limit'))
        cont = q.get('continue')
        with STORE.mu:
            if cont:
                try:
                    tok = json.loads(base64.urlsafe_b64decode(cont + '=' * (-len(cont) % 4)))
                    trv, tid, off, last = tok['rv'], tok['id'], tok['off'], tok['last']
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, 'continue key is not valid: malformed token')
                if trv < STORE.compacted:
                    again = self.token(STORE.rv, None, 0, last)
                    raise ApiError(410, 'The provided continue parameter is too old to display a '
                                   'consistent list result. You can start a new list without the '
                                   'continue parameter, or use the continue token in this response '
                                   'to retrieve the remainder of the results. Continuing with the '
                                   'provided token results in an inconsistent list - objects that '
                                   'were created, modified, or deleted between the time the first '
                                   'chunk was returned and now may show up in the list.',
                                   'Expired', **{'continue': again})
                snap = STORE.snapshots.get(tid)
                if snap is not None:
                    STORE.snapshots.move_to_end(tid)
                    items = snap
                else:  # evicted: go on from the current state, after the last key
                    items = [o for o in self.matching(kind, ns, fs, ls)
                             if (o['metadata'].get('namespace', ''), o['metadata']['name']) >
                             tuple(last)]
                    tid, off = None, 0
                rv = trv
            else:
                rvq = q.get('resourceVersion', '')
                if rvq not in ('', '0'):
                    try:
                        want = int(rvq)
                    except ValueError:
                        raise ApiError(400, 'resourceVersion: invalid value %r' % rvq)
                    self.wait_rv(want)
                    if q.get('resourceVersionMatch') == 'Exact' and want < STORE.compacted:
                        raise ApiError(410, 'too old resource version: %d (%d)' % (
                            want, STORE.compacted), 'Expired')
                items = self.matching(kind, ns, fs, ls)
                rv, tid, off = STORE.rv, None, 0
            page = items[off:off + limit] if limit else items[off:]
            md = {'resourceVersion': str(rv)}
            if limit and off + limit < len(items):
                if tid is None:
                    tid = uuid.uuid4().hex[:12]
                    STORE.snapshots[tid] = items
                    off = 0
                    while len(STORE.snapshots) > 64:
                        STORE.snapshots.popitem(last=False)
                lo = page[-1]['metadata']
                md['continue'] = self.token(rv, tid, off + limit, [lo.get('namespace', ''),
                                                                   lo['name']])
                if not fs and not ls:
                    md['remainingItemCount'] = len(items) - off - limit
        if self.table_mode():
            return self.send_json(200, self.table(kind, page, md, q))
        pm = self.partial_mode()
        if pm:
            return self.send_json(200, {'kind': 'PartialObjectMetadataList',
                                        'apiVersion': 'meta.k8s.io/' + pm, 'metadata': md,
                                        'items': [{'kind': 'PartialObjectMetadata',
                                                   'apiVersion': 'meta.k8s.io/' + pm,
                                                   'metadata': o['metadata']} for o in page]})
        body = ('{"kind": %s, "apiVersion": %s, "metadata": %s, "items": [%s]}\n' % (
            json.dumps(kind.kind + 'List'), json.dumps(kind.gv), json.dumps(md),
            ', '.join(json.dumps(self.out(kind, o)) for o in page))).encode()
        return self.send_bytes(200, body)

    @staticmethod
    def token(rv, tid, off, last):
        return base64.urlsafe_b64encode(json.dumps({'rv': rv, 'id': tid, 'off': off, 'last': last},
                                                   separators=(',', ':')).encode()).decode().rstrip('=')

    # -- writes

    def dry(self, q):
        return q.get('dryRun') == 'All'

    def check_ns(self, kind, ns, o):
        if not kind.namespaced:
            o['metadata'].pop('namespace', None)
            return
        have = o['metadata'].get('namespace')
        if have and have != ns:
            raise ApiError(400, 'the namespace of the provided object does not match the namespace '
                           'sent on the request')
        o['metadata']['namespace'] = ns
        if STORE.get('', 'namespaces', '', ns) is None:
            raise ApiError(404, 'namespaces "%s" not found' % ns, 'NotFound',
                           {'name': ns, 'kind': 'namespaces'})

    def check_object(self, kind, o, q, name):
        """Refuses what the API server would refuse: builtin_validate's checks,
        and for a custom resource its CRD's schema as the server applies it
        (crdschema): unknown fields are dropped (fieldValidation Ignore, or
        Warn, the default, with a Warning header each) or refused (Strict, which
        kubectl asks for: 400), then the value checks (422). Prunes o in place."""
        causes = builtin_validate(kind, o)
        if causes:
            raise invalid(kind, name, causes)
        sch = ((kind.crd or {}).get('schema') or {}).get('openAPIV3Schema')
        if sch is None:
            return
        fv = q.get('fieldValidation') or 'Warn'
        unknown, errs = crdschema.check_object(sch, o, strict=fv == 'Strict')
        if unknown and fv == 'Strict':
            raise ApiError(400, '%s in version "%s" cannot be handled as a %s: strict decoding '
                           'error: %s' % (kind.kind, kind.version, kind.kind, ', '.join(
                               'unknown field "%s"' % u for u in unknown)))
        if fv == 'Warn':
            self.warnings += ['unknown field "%s"' % u for u in unknown]
        if errs:
            raise invalid(kind, name, [{'field': f, 'message': m} for f, m in errs])

    def validate_name(self, kind, name):
        if not name:
            raise invalid(kind, '', [{'field': 'metadata.name', 'message': 'Required value: name '
                                      'or generateName is required'}])
        ok = LABEL_RE.match(name) if kind.plural == 'namespaces' else NAME_RE.match(name)
        if not ok or len(name) > (63 if kind.plural == 'namespaces' else 253):
            raise invalid(kind, name, [{'field': 'metadata.name', 'message': 'Invalid value: %r: '
                                        'a lowercase RFC 1123 subdomain must consist of lower case '
                                        'alphanumeric characters, \'-\' or \'.\', and must start and '
                                        'end with an alphanumeric character' % name}])

    def create(self, kind, ns, q, o=None, manager_op=None):
        if o is None:
            o = self.body_json()
        if not isinstance(o, dict):
            raise ApiError(400, 'the body is not an object')
        o = copy.deepcopy(o)
        md = o.get('metadata')
        if not isinstance(md, dict):
            md = o['metadata'] = {}
        if not md.get('name') and md.get('generateName'):
            md['name'] = md['generateName'] + ''.join(random.choice(string.ascii_lowercase +
                                                                    string.digits) for _ in range(5))
        self.validate_name(kind, md.get('name'))
        name = md['name']
        for k in ('uid', 'resourceVersion', 'creationTimestamp', 'deletionTimestamp', 'generation',
                  'managedFields', 'selfLink'):
            md.pop(k, None)
        o['kind'], o['apiVersion'] = kind.kind, kind.gv
        if kind.crd is not None and kind.status:
            o.pop('status', None)  # a CR's status comes through its status subresource only
        if kind.plural == 'customresourcedefinitions':
            causes = crd_validate(o)
            if causes:
                raise invalid(kind, name, causes)
        with STORE.mu:
            self.check_ns(kind, ns, o)
            if STORE.get(kind.group, kind.plural, ns or '', name) is not None:
                raise ApiError(409, '%s "%s" already exists' % (res_name(kind), name),
                               'AlreadyExists', {'name': name, 'group': kind.group,
                                                 'kind': kind.plural})
            if kind.plural == 'customresourcedefinitions':
                sp = o['spec']
                other = REG.any_version(sp['group'], sp['names']['plural'])
                if other is not None and other.crd is None:
                    raise invalid(kind, name, [{'field': 'spec.group', 'message': 'Invalid value: '
                                                'a built-in resource has that name'}])
            md['uid'] = str(uuid.uuid4())
            md['creationTimestamp'] = now_ts()
            md['generation'] = 1
            defaults(kind, o)
            self.check_object(kind, o, q, name)
            if manager_op:
                manager_op(o)
            if self.dry(q):
                md['resourceVersion'] = str(STORE.rv)
                return self.send_obj(201, kind, o, q)
            stored = STORE.commit(kind.group, kind.plural, ns or '', name, 'ADDED', o, None)
            if kind.plural == 'customresourcedefinitions':
                crd_register(stored)
        return self.send_obj(201, kind, stored, q)

    def finish_update(self, kind, cur, new, sub):
        """The parts of new an update may change (caller holds mu)."""
        new = dict(new)
        new['kind'], new['apiVersion'] = kind.kind, kind.gv
        md = dict(new.get('metadata') or {})
        for k in ('uid', 'creationTimestamp', 'generation', 'managedFields', 'deletionTimestamp'):
            if k in cur['metadata']:
                md[k] = cur['metadata'][k]
            else:
                md.pop(k, None)
        md['name'] = cur['metadata']['name']
        if kind.namespaced:
            md['namespace'] = cur['metadata']['namespace']
        new['metadata'] = md
        if sub == 'status':
            # the status subresource changes status only
            out = {k: v for k, v in cur.items() if k != 'status'}
            if 'status' in new:
                out['status'] = new['status']
            out['metadata'] = dict(cur['metadata'])
            return out
        if kind.status:
            # the main resource leaves status alone where there is a subresource
            if 'status' in cur:
                new['status'] = cur['status']
            else:
                new.pop('status', None)
        changed = {k: v for k, v in new.items() if k not in ('metadata', 'status', 'kind',
                                                              'apiVersion')} != {
            k: v for k, v in cur.items() if k not in ('metadata', 'status', 'kind', 'apiVersion')}
        if changed:
            md['generation'] = int(cur['metadata'].get('generation') or 1) + 1
        return new

    def store_update(self, kind, ns, name, cur, new, q):
        """Commits an update (caller holds mu) and answers it."""
        if kind.plural == 'customresourcedefinitions':
            causes = crd_validate(new)
            if causes:
                raise invalid(kind, name, causes)
            if new.get('spec') != cur.get('spec'):
                crd_status(new)
        if kind.crd is not None:
            new = copy.deepcopy(new)  # pruned in place; parts of it may be cur's
        self.check_object(kind, new, q, name)
        if self.dry(q):
            return self.send_obj(200, kind, new, q)
        if new == cur:  # a no-op update keeps its resourceVersion and sends no event
            return self.send_obj(200, kind, cur, q)
        stored = STORE.commit(kind.group, kind.plural, ns or '', name, 'MODIFIED', new, cur)
        if kind.plural == 'customresourcedefinitions':
            crd_unregister(cur)
            crd_register(stored)
        return self.send_obj(200, kind, stored, q)

    def conflict(self, kind, name):
        return ApiError(409, 'Operation cannot be fulfilled on %s "%s": the object has been '
                        'modified; please apply your changes to the latest version and try again'
                        % (res_name(kind), name), 'Conflict', {'name': name, 'group': kind.group,
                                                               'kind': kind.plural})

    def replace(self, kind, ns, name, sub, q):
        o = self.body_json()
        if not isinstance(o, dict):
            raise ApiError(400, 'the body is not an object')
        md = o.get('metadata') or {}
        if md.get('name') and md['name'] != name:
            raise ApiError(400, 'the name of the object (%s) does not match the name on the URL '
                           '(%s)' % (md['name'], name))
        if kind.namespaced and md.get('namespace') and md['namespace'] != ns:
            raise ApiError(400, 'the namespace of the provided object does not match the namespace '
                           'sent on the request')
        with STORE.mu:
            cur = STORE.get(kind.group, kind.plural, ns or '', name)
            if cur is None:
                raise not_found(kind, name)
            want = md.get('resourceVersion')
            if want and want != cur['metadata']['resourceVersion']:
                raise self.conflict(kind, name)
            new = self.finish_update(kind, cur, o, sub)
            return self.store_update(kind, ns, name, cur, new, q)

    def patch(self, kind, ns, name, sub, q):
        ct = (self.headers.get('Content-Type') or '').split(';')[0].strip()
        if ct == 'application/apply-patch+yaml':
            return self.apply(kind, ns, name, sub, q)
        p = self.body_json()
        with STORE.mu:
            cur = STORE.get(kind.group, kind.plural, ns or '', name)
            if cur is None:
                raise not_found(kind, name)
            try:
                if ct == 'application/merge-patch+json':
                    if not isinstance(p, dict):
                        raise PatchError(400, 'BadRequest', 'a merge patch is an object')
                    new = merge_patch(cur, p)
                elif ct == 'application/strategic-merge-patch+json':
                    if kind.crd is not None:
                        raise PatchError(415, 'UnsupportedMediaType', 'the body of the request '
                                         'was in an unknown format - accepted media types include: '
                                         'application/json-patch+json, application/merge-patch+json, '
                                         'application/apply-patch+yaml')
                    if not isinstance(p, dict):
                        raise PatchError(400, 'BadRequest', 'a strategic merge patch is an object')
                    new = strategic_merge(cur, p)
                elif ct == 'application/json-patch+json':
                    new = json_patch(cur, p)
                else:
                    raise PatchError(415, 'UnsupportedMediaType', 'the body of the request was in '
                                     'an unknown format - accepted media types include: '
                                     'application/json-patch+json, application/merge-patch+json, '
                                     'application/apply-patch+yaml, '
                                     'application/strategic-merge-patch+json')
            except PatchError as e:
                raise ApiError(e.code, e.msg, e.reason)
            if not isinstance(new, dict) or not isinstance(new.get('metadata'), dict):
                raise ApiError(422, 'the patch leaves no object')
            want = (p.get('metadata') or {}).get('resourceVersion') if isinstance(p, dict) else None
            if want and want != cur['metadata']['resourceVersion']:
                raise self.conflict(kind, name)
            new = self.finish_update(kind, cur, new, sub)
            return self.store_update(kind, ns, name, cur, new, q)

    def apply(self, kind, ns, name, sub, q):
        """Server-side apply. Each manager owns the fields it applied; applying
        again without a field it applied before removes it (unless another
        manager applied it too); a field another manager applied with another
        value is a conflict unless force=true. List items merge by their
        list-map keys (a CRD's x-kubernetes-list-map-keys), other lists are
        atomic. Only fields set by apply are tracked, not those of updates."""
        fm = q.get('fieldManager')
        if not fm:
            raise ApiError(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                           'value: is required for apply patch', 'Invalid')
        force = q.get('force') == 'true'
        cfg = self.body_json()
        if not isinstance(cfg, dict):
            raise ApiError(400, 'an apply configuration is an object')
        md = cfg.get('metadata') or {}
        if md.get('name') and md['name'] != name:
            raise ApiError(400, 'the name of the object (%s) does not match the name on the URL '
                           '(%s)' % (md['name'], name))
        if kind.namespaced and md.get('namespace') and md['namespace'] != ns:
            raise ApiError(400, 'the namespace of the provided object does not match the namespace '
                           'sent on the request')
        for f, want in (('kind', kind.kind), ('apiVersion', kind.gv)):
            if cfg.get(f) != want:
                raise ApiError(400, '%s: %s must be %r in an apply configuration' % (
                    f, cfg.get(f), want))
        # The part of the configuration this endpoint owns.
        applied = {}
        if sub == 'status':
            if 'status' in cfg:
                applied['status'] = cfg['status']
        else:
            applied = {k: v for k, v in cfg.items() if k not in ('kind', 'apiVersion', 'metadata')}
            if kind.status:
                applied.pop('status', None)
            amd = {k: v for k, v in md.items() if k in ('labels', 'annotations', 'finalizers',
                                                          'ownerReferences')}
            if amd:
                applied['metadata'] = amd
        fields = Fields(kind)
        new_set = field_set(applied, fields)
        key = (kind.group, kind.plural, ns or '', name)
        with STORE.mu:
            cur = STORE.get(kind.group, kind.plural, ns or '', name)
            if cur is None and sub == 'status':
                raise not_found(kind, name)
            mans = copy.deepcopy(STORE.managers.get(key, {})) if cur is not None else {}
            mine = mans.get(fm, {}).get('paths', {})
            base = copy.deepcopy(cur) if cur is not None else {'metadata': {}}
            conflicts = []
            for m, info in mans.items():
                if m == fm:
                    continue
                for p in list(info['paths']):
                    if p not in new_set or p[-1][0] == 'k':
                        continue  # not applied here, or a list item (its fields may conflict)
                    if path_get(base, p) != new_set[p]:
                        if force:
                            del info['paths'][p]  # the field changes hands
                        else:
                            conflicts.append((m, p))
            if conflicts:
                raise ApiError(409, 'Apply failed with %d conflict%s: %s' % (
                    len(conflicts), '' if len(conflicts) == 1 else 's', '; '.join(
                        'conflict with "%s": %s' % (m, path_str(p)) for m, p in conflicts)),
                    'Conflict', {'causes': [{'reason': 'FieldManagerConflict', 'message':
                                             'conflict with "%s"' % m, 'field': path_str(p)}
                                            for m, p in conflicts]})
            others = set()
            for m, info in mans.items():
                if m != fm:
                    others.update(info['paths'])
            remove_unowned(base, [p for p in mine if p not in new_set and p not in others],
                           set(new_set) | others)
            merged = apply_merge(base, applied, fields)
            entry = {'manager': fm, 'operation': 'Apply', 'apiVersion': kind.gv, 'time': now_ts(),
                     'fieldsType': 'FieldsV1', 'paths': {p: None for p in new_set}}
            if sub:
                entry['subresource'] = sub
            mans[fm] = entry
            mans = {m: v for m, v in mans.items() if v['paths']}

            def managed(o):
                o['metadata']['managedFields'] = [
                    {k: v for k, v in dict(e, fieldsV1=fields_v1(e['paths'])).items()
                     if k != 'paths'} for e in mans.values()]

            if cur is None:
                merged.update({'apiVersion': kind.gv, 'kind': kind.kind})
                merged['metadata'] = dict(merged.get('metadata') or {}, name=name)
                if kind.namespaced:
                    merged['metadata']['namespace'] = ns
                res = self.create(kind, ns, q, merged, managed)
                if not self.dry(q):
                    STORE.managers[key] = mans
                return res
            new = self.finish_update(kind, cur, merged, sub)
            new['metadata'] = dict(new['metadata'])
            before = {m: set(v['paths']) for m, v in STORE.managers.get(key, {}).items()}
            if strip_managed(new) == strip_managed(cur) and before == {
                    m: set(v['paths']) for m, v in mans.items()}:
                # nothing changes, not even who owns what: no new resourceVersion, no event
                return self.send_obj(200, kind, cur, q)
            managed(new)
            if not self.dry(q):
                STORE.managers[key] = mans
            return self.store_update(kind, ns, name, cur, new, q)

    def delete_options(self):
        b = self.body_bytes()
        if not b.strip():
            return {}
        try:
            d = json.loads(b)
        except ValueError as e:
            raise ApiError(400, 'DeleteOptions: %s' % e)
        return d if isinstance(d, dict) else {}

    def remove(self, kind, ns, name, cur):
        """Deletes one object and what it holds (caller holds mu); returns it."""
        if kind.plural == 'namespaces':
            # no namespace controller: what is in the namespace goes at once
            for (g, p), b in list(STORE.objs.items()):
                k = REG.any_version(g, p)
                if k is None or not k.namespaced:
                    continue
                for (n2, nm), o in sorted(b.items()):
                    if n2 == name:
                        STORE.commit(g, p, n2, nm, 'DELETED', o, o)
        if kind.plural == 'customresourcedefinitions':
            sp = cur.get('spec') or {}
            g, p = sp.get('group'), (sp.get('names') or {}).get('plural')
            for (n2, nm), o in sorted(STORE.objs.get((g, p), {}).items()):
                STORE.commit(g, p, n2, nm, 'DELETED', o, o)
            STORE.objs.pop((g, p), None)
            crd_unregister(cur)
        return STORE.commit(kind.group, kind.plural, ns or '', name, 'DELETED', cur, cur)

    def delete(self, kind, ns, name, q):
        opts = self.delete_options()
        with STORE.mu:
            cur = STORE.get(kind.group, kind.plural, ns or '', name)
            if cur is None:
                raise not_found(kind, name)
            pre = opts.get('preconditions') or {}
            if (pre.get('uid') and pre['uid'] != cur['metadata'].get('uid')) or (
                    pre.get('resourceVersion') and pre['resourceVersion'] !=
                    cur['metadata'].get('resourceVersion')):
                raise ApiError(409, 'Operation cannot be fulfilled on %s "%s": the precondition '
                               'is not met' % (res_name(kind), name), 'Conflict',
                               {'name': name, 'group': kind.group, 'kind': kind.plural})
            if self.dry(q) or 'dryRun' in opts:
                return self.send_obj(200, kind, cur, q)
            gone = self.remove(kind, ns, name, cur)
        return self.send_obj(200, kind, gone, q)

    def delete_collection(self, kind, ns, q):
        if kind.namespaced and ns is None:
            raise ApiError(405, 'the server does not allow this method on the requested resource')
        self.delete_options()
        try:
            fs = parse_field_selector(q.get('fieldSelector'), kind)
            ls = parse_label_selector(q.get('labelSelector'))
        except SelectorError as e:
            raise ApiError(400, str(e))
        with STORE.mu:
            gone = [self.remove(kind, ns, o['metadata']['name'], o)
                    for o in self.matching(kind, ns, fs, ls)] if not self.dry(q) else []
            rv = STORE.rv
        return self.send_json(200, {'kind': kind.kind + 'List', 'apiVersion': kind.gv,
                                    'metadata': {'resourceVersion': str(rv)},
                                    'items': [self.out(kind, o) for o in gone]})

    # -- watch

    def chunk(self, data):
        self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))

    def client_gone(self):
        """True once the client has closed its side of a watch."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            self.connection.settimeout(0.05)
            try:
                return self.connection.recv(1) == b''
            finally:
                self.connection.settimeout(None)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (OSError, ValueError):
            return True

    def event_bytes(self, kind, e, typ, obj, table, first):
        if table:
            t = self.table(kind, [obj], {'resourceVersion': obj['metadata']['resourceVersion']},
                           self.q, headers=first)
            return (json.dumps({'type': typ, 'object': t}) + '\n').encode()
        plain = typ == e.typ and obj is e.obj
        if plain and kind.gv in e.cache:
            return e.cache[kind.gv]
        b = (json.dumps({'type': typ, 'object': self.out(kind, obj)}) + '\n').encode()
        if plain:
            e.cache[kind.gv] = b
        return b

    def watch(self, kind, ns, fs, ls, q):
        self.q = q
        rvq = q.get('resourceVersion', '')
        timeout = q.get('timeoutSeconds')
        try:
            timeout = float(timeout) if timeout else 1800.0
        except ValueError:
            raise ApiError(400, 'timeoutSeconds: invalid value %r' % q.get('timeoutSeconds'))
        bookmarks = q.get('allowWatchBookmarks') in ('1', 'true')
        send_initial = q.get('sendInitialEvents') == 'true'
        table = bool(self.table_mode())
        path = self.log['path'] if self.log else ''

        def match(o):
            return o is not None and (not ns or o['metadata'].get('namespace') == ns) and (
                not fs or fields_match(fs, o)) and (
                not ls or labels_match(ls, o['metadata'].get('labels') or {}))

        with STORE.mu:
            gone = None
            initial = []
            if rvq not in ('', '0'):
                try:
                    rv = int(rvq)
                except ValueError:
                    raise ApiError(400, 'resourceVersion: invalid value %r' % rvq)
                if rv < STORE.compacted:
                    gone = 'too old resource version: %d (%d)' % (rv, STORE.compacted)
                else:
                    self.wait_rv(rv)
                    pos = STORE.base + bisect.bisect_right(STORE.hist_rvs, rv)
            if gone is None and (rvq in ('', '0') or send_initial):
                initial = self.matching(kind, ns, fs, ls)
                pos = STORE.base + len(STORE.history)
                init_rv = STORE.rv
            silent = False
            for s in CTL['silence'] if gone is None else ():
                if s['count'] > 0 and path.startswith(s['path']):
                    s['count'] -= 1
                    silent = True
                    break
            w = {'id': next(WATCH_IDS), 'path': path, 'query': q, 'since': time.time(),
                 'silent': silent, 'cut': None, 'err410': False}
            if gone is None:
                WATCHES[w['id']] = w
        if gone is not None and CFG['watch410'] == 'status':
            raise ApiError(410, gone, 'Expired')
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Transfer-Encoding', 'chunked')
        self.send_header('Cache-Control', 'no-cache, private')
        self.end_headers()
        if self.log:
            self.log['code'] = 200
        end = time.time() + timeout
        try:
            if gone is not None:
                self.chunk((json.dumps({'type': 'ERROR', 'object': status(
                    410, 'Expired', gone)}) + '\n').encode())
                self.wfile.write(b'0\r\n\r\n')
                return
            self.wfile.flush()
            if silent:
                # a hung server: timeoutSeconds is not honoured either
                while w['cut'] is None and not self.client_gone():
                    with STORE.mu:
                        STORE.mu.wait(0.5)
                if w['cut'] == 'abort':
                    return self.abort()
                self.wfile.write(b'0\r\n\r\n')
                return
            first = True
            buf = []
            for o in initial:
                buf.append(self.event_bytes(kind, None, 'ADDED', o, table, first) if table else
                           (json.dumps({'type': 'ADDED', 'object': self.out(kind, o)}) +
                            '\n').encode())
                first = False
            if send_initial:
                buf.append(self.bookmark(kind, init_rv, {'k8s.io/initial-events-end': 'true'}))
            for i in range(0, len(buf), 200):
                self.chunk(b''.join(buf[i:i + 200]))
            self.wfile.flush()
            last_bm = time.time()
            caught = None
            while True:
                out = []
                with STORE.mu:
                    while True:
                        if w['cut'] is not None or w['err410']:
                            break
                        if pos < STORE.base:
                            w['err410'] = True
                            break
                        n = STORE.base + len(STORE.history)
                        if pos < n:
                            for e in STORE.history[pos - STORE.base:pos - STORE.base + 1000]:
                                pos += 1
                                if e.group != kind.group or e.plural != kind.plural:
                                    continue
                                if e.typ == 'ADDED':
                                    if match(e.obj):
                                        out.append(('ADDED', e.obj, e))
                                elif e.typ == 'DELETED':
                                    if match(e.prev):
                                        out.append(('DELETED', e.obj, e))
                                else:
                                    now, before = match(e.obj), match(e.prev)
                                    if now and before:
                                        out.append(('MODIFIED', e.obj, e))
                                    elif now:
                                        out.append(('ADDED', e.obj, e))
                                    elif before:
                                        # it left the selector: DELETED, as it was, at this RV
                                        o = dict(e.prev)
                                        o['metadata'] = dict(o['metadata'],
                                                             resourceVersion=str(e.rv))
                                        out.append(('DELETED', o, e))
                            caught = STORE.rv if pos == STORE.base + len(STORE.history) else None
                            if out or caught is None:
                                break
                        left = end - time.time()
                        if bookmarks:
                            left = min(left, last_bm + CFG['bookmark_s'] - time.time())
                        if left <= 0:
                            caught = STORE.rv
                            break
                        STORE.mu.wait(min(left, 0.5))
                        if pos == STORE.base + len(STORE.history):
                            caught = STORE.rv
                            break
                    cut, err = w['cut'], w['err410']
                if cut == 'abort':
                    return self.abort()
                if cut == 'clean':
                    break
                if err:
                    self.chunk((json.dumps({'type': 'ERROR', 'object': status(
                        410, 'Expired', 'The resourceVersion for the provided watch is too old.')}) +
                        '\n').encode())
                    break
                if out:
                    data = b''.join(self.event_bytes(kind, e, t, o, table, first) for t, o, e in out)
                    first = False
                    self.chunk(data)
                    self.wfile.flush()
                elif self.client_gone():
                    return
                if bookmarks and caught is not None and time.time() - last_bm >= CFG['bookmark_s']:
                    self.chunk(self.bookmark(kind, caught))
                    self.wfile.flush()
                    last_bm = time.time()
                if time.time() >= end:
                    break
            self.wfile.write(b'0\r\n\r\n')
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            with STORE.mu:
                WATCHES.pop(w['id'], None)

    def bookmark(self, kind, rv, annotations=None):
        md = {'resourceVersion': str(rv)}
        if annotations:
            md['annotations'] = annotations
        return (json.dumps({'type': 'BOOKMARK', 'object': {'kind': kind.kind, 'apiVersion': kind.gv,
                                                           'metadata': md}}) + '\n').encode()

    def abort(self):
        """Drops the connection mid-stream (no terminating chunk)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- test controls

    def control(self, method, path, q):
        if path == '/_test/requests' and method == 'GET':
            b = ''.join(json.dumps(r) + '\n' for r in list(REQUESTS)).encode()
            return self.send_bytes(200, b, 'application/x-ndjson')
        if path == '/_test/watches' and method == 'GET':
            with STORE.mu:
                ws = [{'path': w['path'], 'query': w['query'], 'since': w['since'],
                       'silent': w['silent']} for w in WATCHES.values()]
            return self.send_json(200, ws)
        if path == '/_test/state' and method == 'GET':
            with STORE.mu:
                st = {'resourceVersion': str(STORE.rv), 'compacted': str(STORE.compacted),
                      'objects': sum(len(b) for b in STORE.objs.values()), 'watches': len(WATCHES),
                      'config': CFG}
            return self.send_json(200, st)
        if method != 'POST':
            return self.send_json(405, {'error': 'POST ' + path})
        body = self.body_bytes()
        try:
            with STORE.mu:
                if path == '/_test/compact':
                    STORE.compact()
                elif path == '/_test/fail':
                    CTL['fail'].append({'path': q['path'], 'status': int(q['status']),
                                        'count': int(q.get('count', 1)), 'method': q.get('method'),
                                        'retry_after': q.get('retry_after')})
                elif path == '/_test/delay':
                    CTL['delay'].append({'path': q.get('path', '/'), 'ms': float(q['ms']),
                                         'count': int(q.get('count', -1))})
                elif path == '/_test/unfail':
                    CTL['fail'] = []
                    CTL['delay'] = []
                elif path == '/_test/cut':
                    for w in WATCHES.values():
                        if w['path'].startswith(q.get('path', '/')):
                            w['cut'] = q.get('mode', 'abort')
                elif path == '/_test/silence':
                    CTL['silence'].append({'path': q.get('path', '/'),
                                           'count': int(q.get('count', 1))})
                elif path == '/_test/error410':
                    for w in WATCHES.values():
                        if w['path'].startswith(q.get('path', '/')):
                            w['err410'] = True
                elif path == '/_test/bookmarks':
                    CFG['bookmark_s'] = float(q['seconds'])
                elif path == '/_test/config':
                    if 'bookmark_seconds' in q:
                        CFG['bookmark_s'] = float(q['bookmark_seconds'])
                    if 'watch410' in q:
                        if q['watch410'] not in ('event', 'status'):
                            raise ValueError('watch410 is event or status')
                        CFG['watch410'] = q['watch410']
                    if 'aggregated' in q:
                        CFG['aggregated'] = q['aggregated'] not in ('0', 'false')
                elif path == '/_test/bulk':
                    self.bulk(json.loads(body))
                elif path == '/_test/clear':
                    REQUESTS.clear()
                else:
                    return self.send_json(404, {'error': 'no such control: ' + path})
                STORE.mu.notify_all()
                rv = STORE.rv
        except (KeyError, ValueError, TypeError) as e:
            return self.send_json(400, {'error': '%s: %s' % (path, e)})
        self.send_json(200, {'ok': True, 'resourceVersion': str(rv)})

    def bulk(self, objs):
        """Creates objects without validation (caller holds mu)."""
        for o in objs:
            o = dict(o)
            grp, plural = o.pop('_group', ''), o.pop('_plural')
            kind = REG.any_version(grp, plural)
            if kind is None:
                raise ValueError('no resource %s in group %r' % (plural, grp))
            md = o['metadata'] = dict(o['metadata'])
            md.setdefault('uid', str(uuid.uuid4()))
            md.setdefault('creationTimestamp', now_ts())
            md.setdefault('generation', 1)
            o['kind'], o['apiVersion'] = kind.kind, kind.gv
            ns = md.get('namespace', '') if kind.namespaced else ''
            prev = STORE.get(grp, plural, ns, md['name'])
            STORE.commit(grp, plural, ns, md['name'], 'MODIFIED' if prev else 'ADDED', o, prev)

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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        try:
            request.settimeout(10)
            request.do_handshake()
            request.settimeout(None)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        if isinstance(e, (ConnectionError, ssl.SSLError, socket.timeout)):
            return
        super().handle_error(request, client_address)


class Server6(Server):
    address_family = socket.AF_INET6


# ---------------------------------------------------------------------------
# Files: certificates, token, kubeconfigs

def openssl(*args):
    subprocess.run(('openssl',) + args, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_files(d):
    """Makes what DIR lacks: a CA, a server and a client certificate, a token."""
    p = lambda n: os.path.join(d, n)  # noqa: E731
    if not os.path.exists(p('ca.crt')):
        openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('ca.key'), '-out',
                p('ca.crt'), '-days', '2', '-subj', '/CN=faultline-test-ca')
    if not os.path.exists(p('server.crt')):
        openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('server.key'), '-out',
                p('server.csr'), '-subj', '/CN=localhost')
        with open(p('san.ext'), 'w') as f:
            f.write('subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n')
        openssl('x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'),
                '-CAcreateserial', '-out', p('server.crt'), '-days', '2', '-extfile', p('san.ext'))
    if not os.path.exists(p('client.crt')):
        openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('client.key'), '-out',
                p('client.csr'), '-subj', '/CN=system:serviceaccount:faultline:faultline')
        openssl('x509', '-req', '-in', p('client.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'),
                '-CAcreateserial', '-out', p('client.crt'), '-days', '2')
    if not os.path.exists(p('token')):
        with open(p('token'), 'w') as f:
            f.write(base64.b64encode(os.urandom(24)).decode().strip('=').replace('/', 'x')
                    .replace('+', 'y') + '\n')


def write_kubeconfigs(d, url):
    with open(os.path.join(d, 'ca.crt'), 'rb') as f:
        ca = base64.b64encode(f.read()).decode()
    with open(os.path.join(d, 'token')) as f:
        tok = f.read().strip()
    users = {'kubeconfig': '    tokenFile: %s\n' % os.path.join(d, 'token'),
             'kubeconfig-cert': '    client-certificate: %s\n    client-key: %s\n' % (
                 os.path.join(d, 'client.crt'), os.path.join(d, 'client.key')),
             'kubeconfig-inline': '    token: %s\n' % tok}
    for fn, user in users.items():
        text = ('apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n'
                '  cluster:\n    server: %s\n    certificate-authority-data: %s\n'
                'users:\n- name: test\n  user:\n%s'
                'contexts:\n- name: test\n  context: {cluster: test, user: test, namespace: default}\n'
                % (url, ca, user))
        with open(os.path.join(d, fn + '.tmp'), 'w') as f:
            f.write(text)
        os.replace(os.path.join(d, fn + '.tmp'), os.path.join(d, fn))
    sa = os.path.join(d, 'serviceaccount')
    os.makedirs(sa, exist_ok=True)
    if not os.path.lexists(os.path.join(sa, 'token')):
        os.symlink('../token', os.path.join(sa, 'token'))
    with open(os.path.join(d, 'ca.crt'), 'rb') as f, open(os.path.join(sa, 'ca.crt'), 'wb') as g:
        g.write(f.read())
    with open(os.path.join(sa, 'namespace'), 'w') as f:
        f.write('default')


def seed(store):
    """A new cluster has these namespaces."""
    kind = REG.get('', 'v1', 'namespaces')
    for n in ('default', 'kube-system', 'kube-public', 'kube-node-lease'):
        o = {'apiVersion': 'v1', 'kind': 'Namespace',
             'metadata': {'name': n, 'uid': str(uuid.uuid4()), 'creationTimestamp': now_ts(),
                          'generation': 1}}
        defaults(kind, o)
        with store.mu:
            store.commit('', 'namespaces', '', n, 'ADDED', o, None)


def main():
    global STORE, REG, TOKEN_FILE
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--dir', required=True)
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--state', help='keep objects and the resourceVersion counter in FILE')
    ap.add_argument('--bookmark-seconds', type=float, default=1.0)
    ap.add_argument('--history', type=int, default=100000, help='watch events kept (then the '
                    'oldest half is compacted)')
    a = ap.parse_args()
    d = os.path.abspath(a.dir)
    os.makedirs(d, exist_ok=True)
    make_files(d)
    CFG['bookmark_s'] = a.bookmark_seconds
    REG = Registry()
    fresh = not (a.state and os.path.exists(a.state))
    STORE = Store(a.state, max(a.history, 2))
    for o in STORE.objs.get(('apiextensions.k8s.io', 'customresourcedefinitions'), {}).values():
        crd_register(o)
    if fresh:
        seed(STORE)
        STORE.compacted = 0
    TOKEN_FILE = os.path.join(d, 'token')
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, 'server.crt'), os.path.join(d, 'server.key'))
    ctx.load_verify_locations(os.path.join(d, 'ca.crt'))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(['http/1.1'])
    srv = (Server6 if ':' in a.host else Server)((a.host, a.port), Handler)
    srv.ctx = ctx
    port = srv.server_address[1]
    srv.addr = '%s:%d' % ('[%s]' % a.host if ':' in a.host else a.host, port)

    # Every thread blocks SIGTERM and SIGINT; the main thread waits for them,
    # so they are taken at once, whatever the other threads are doing.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    threading.Thread(target=STORE.saver, daemon=True).start()
    threading.Thread(target=srv.serve_forever, kwargs={'poll_interval': 0.5}, daemon=True).start()
    write_kubeconfigs(d, 'https://' + srv.addr)
    with open(os.path.join(d, 'pid'), 'w') as f:
        f.write('%d\n' % os.getpid())
    with open(os.path.join(d, 'port.tmp'), 'w') as f:
        f.write(str(port))
    os.replace(os.path.join(d, 'port.tmp'), os.path.join(d, 'port'))
    signal.sigwait(stop)
    STORE.save()
    os._exit(0)


if __name__ == '__main__':
    main()
