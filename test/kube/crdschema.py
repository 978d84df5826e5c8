#!/usr/bin/env python3
"""crdschema: what the Kubernetes API server does with a CRD's openAPIV3Schema,
in the Python 3 standard library (the test API server imports it; crd.sh runs it).

Not JSON Schema: the API server treats a CRD schema in its own way, and this
follows it (k8s.io/apiextensions-apiserver, pkg/apiserver/schema and
pkg/apis/apiextensions/validation):
  - structural_errors(schema): why a schema would be refused as not structural
    (a type on every node of the skeleton, properties and additionalProperties
    exclusive, nothing but value checks inside allOf/anyOf/oneOf/not and only on
    fields the skeleton has, metadata limited to name and generateName, list-map
    keys that are required scalar properties, no uniqueItems).
  - prune(schema, obj): drops, in place, the fields the skeleton does not declare
    (the server's pruning) and returns their paths, "spec.foo". A server asked for
    fieldValidation=Strict (kubectl's default) refuses the object for them instead.
  - validate(schema, obj): the value checks of the OpenAPI v3 subset a CRD may
    use: type (and x-kubernetes-int-or-string), enum, pattern, format (int32,
    int64, date-time, cidr, ipv4, ipv6; others are not checked, as on the
    server), minLength/maxLength, minimum/maximum (exclusive too), multipleOf,
    minItems/maxItems, minProperties/maxProperties, required, allOf, anyOf,
    oneOf, not, and unique keys of x-kubernetes-list-type map and set. Returns
    [(path, message)] worded as the server words them.
CEL rules (x-kubernetes-validations) and defaults are not implemented; the
schemas here use neither.

  crdschema.py check CRD.yaml                       is it structural? exit 0 or 1
  crdschema.py validate CRD.yaml [--version v1] [--no-strict] OBJ.yaml|json...
                                                    each object: "ok" or its
                                                    errors; exit 1 if any failed
YAML files need python3-yaml; the module itself takes parsed JSON.
"""
import datetime
import ipaddress
import json
import re
import sys

JUNCTORS = ('allOf', 'anyOf', 'oneOf', 'not')
# Inside a junctor only value validations may appear (structural rule 3).
NOT_IN_JUNCTOR = ('type', 'default', 'additionalProperties', 'nullable', 'description',
                  'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-embedded-resource',
                  'x-kubernetes-list-type', 'x-kubernetes-list-map-keys', 'x-kubernetes-map-type',
                  'x-kubernetes-validations')
TYPES = ('object', 'array', 'string', 'integer', 'number', 'boolean')


def _junctor_subs(s):
    for j in ('allOf', 'anyOf', 'oneOf'):
        for i, sub in enumerate(s.get(j) or []):
            yield '%s[%d]' % (j, i), sub
    if isinstance(s.get('not'), dict):
        yield 'not', s['not']


def _int_or_string_junctor(sub):
    """The two shapes allowed under x-kubernetes-int-or-string."""
    pair = [{'type': 'integer'}, {'type': 'string'}]
    if sub.get('anyOf') == pair and set(sub) == {'anyOf'}:
        return True
    return False


def structural_errors(schema, path='openAPIV3Schema'):
    errs = []
    if not isinstance(schema, dict):
        return ['%s: Required value: a schema is required' % path]
    if schema.get('type') != 'object':
        errs.append('%s.type: Invalid value: %r: must be object at the root' % (path, schema.get('type')))
    _skeleton(schema, path, errs, root=True)
    return errs


def _skeleton(s, path, errs, root=False):
    if not isinstance(s, dict):
        errs.append('%s: Invalid value: a schema must be an object' % path)
        return
    ios = s.get('x-kubernetes-int-or-string') is True
    pu = s.get('x-kubernetes-preserve-unknown-fields')
    if pu is False:
        errs.append('%s.x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true '
                    'or undefined' % path)
    t = s.get('type')
    if t is None and not ios and pu is not True:
        errs.append('%s.type: Required value: must not be empty for specified object fields' % path)
    if t is not None and t not in TYPES:
        errs.append('%s.type: Unsupported value: %r' % (path, t))
    if ios and t is not None:
        errs.append('%s.type: Forbidden: must be empty with x-kubernetes-int-or-string' % path)
    if s.get('uniqueItems') is True:
        errs.append('%s.uniqueItems: Forbidden: uniqueItems cannot be set to true since the '
                    'runtime complexity becomes quadratic' % path)
    if '$ref' in s or 'definitions' in s:
        errs.append('%s: Forbidden: $ref and definitions are not allowed' % path)
    props = s.get('properties') or {}
    ap = s.get('additionalProperties')
    if ap is not None and props and (ap is False or isinstance(ap, dict)):
        errs.append('%s.additionalProperties: Forbidden: additionalProperties and properties are '
                    'mutual exclusive' % path)
    if (props or ap not in (None, True)) and t not in (None, 'object'):
        errs.append('%s.type: Invalid value: %r: properties need type object' % (path, t))
    if 'items' in s and t not in (None, 'array'):
        errs.append('%s.type: Invalid value: %r: items need type array' % (path, t))
    if t == 'array' and 'items' not in s:
        errs.append('%s.items: Required value: must be specified' % path)
    for k, sub in props.items():
        p = '%s.properties[%s]' % (path, k)
        if root and k == 'metadata':
            _metadata(sub, p, errs)
        _skeleton(sub, p, errs)
    if isinstance(ap, dict):
        _skeleton(ap, path + '.additionalProperties', errs)
    if isinstance(s.get('items'), dict):
        _skeleton(s['items'], path + '.items', errs)
    elif 'items' in s:
        errs.append('%s.items: Forbidden: items must be a single schema' % path)
    lt = s.get('x-kubernetes-list-type')
    keys = s.get('x-kubernetes-list-map-keys')
    if lt not in (None, 'atomic', 'set', 'map'):
        errs.append('%s.x-kubernetes-list-type: Unsupported value: %r' % (path, lt))
    if keys and lt != 'map':
        errs.append('%s.x-kubernetes-list-type: Required value: must be map if '
                    'x-kubernetes-list-map-keys is non-empty' % path)
    if lt == 'map':
        it = s.get('items') if isinstance(s.get('items'), dict) else {}
        if not keys:
            errs.append('%s.x-kubernetes-list-map-keys: Required value: must not be empty if '
                        'x-kubernetes-list-type is map' % path)
        if it.get('type') != 'object':
            errs.append('%s.items.type: Invalid value: must be object if parent array\'s '
                        'x-kubernetes-list-type is map' % path)
        for k in keys or []:
            ks = (it.get('properties') or {}).get(k)
            if ks is None:
                errs.append('%s.x-kubernetes-list-map-keys: Invalid value: %r: entries must all '
                            'be names of item properties' % (path, k))
            elif ks.get('type') in ('array', 'object'):
                errs.append('%s.items.properties[%s].type: must be a scalar type' % (path, k))
            elif k not in (it.get('required') or []) and 'default' not in ks:
                errs.append('%s.items.properties[%s]: Required value: this property is in '
                            'x-kubernetes-list-map-keys, so it must have a default or be a '
                            'required property' % (path, k))
    for jp, sub in _junctor_subs(s):
        if ios and jp.startswith(('anyOf', 'allOf')) and (
                _int_or_string_junctor({'anyOf': s.get('anyOf')}) or
                (jp.startswith('allOf') and _int_or_string_junctor(sub))):
            continue
        _junctor(sub, s, '%s.%s' % (path, jp), errs)


def _metadata(s, path, errs):
    if not isinstance(s, dict):
        return
    for k in s.get('properties') or {}:
        if k not in ('name', 'generateName'):
            errs.append('%s.properties[%s]: Forbidden: only name and generateName may be '
                        'restricted in metadata' % (path, k))
    for k in s:
        if k not in ('type', 'properties', 'description'):
            errs.append('%s.%s: Forbidden: only name and generateName may be restricted in '
                        'metadata' % (path, k))


def _junctor(sub, outer, path, errs):
    """sub is inside a junctor of outer: value validations only, on fields outer has."""
    if not isinstance(sub, dict):
        errs.append('%s: Invalid value: a schema must be an object' % path)
        return
    for k in NOT_IN_JUNCTOR:
        if k in sub:
            errs.append('%s.%s: Forbidden: must not be used inside %s' % (
                path, k, 'allOf/anyOf/oneOf/not'))
    oprops = (outer or {}).get('properties') or {}
    for k, ps in (sub.get('properties') or {}).items():
        if k not in oprops:
            errs.append('%s.properties[%s]: Forbidden: must be specified outside the junctor '
                        'too (structural schemas)' % (path, k))
            continue
        _junctor(ps, oprops[k], '%s.properties[%s]' % (path, k), errs)
    if 'items' in sub:
        if not isinstance((outer or {}).get('items'), dict):
            errs.append('%s.items: Forbidden: must be specified outside the junctor too' % path)
        else:
            _junctor(sub['items'], outer['items'], path + '.items', errs)
    if isinstance(sub.get('additionalProperties'), dict):
        pass  # refused above
    for jp, s2 in _junctor_subs(sub):
        _junctor(s2, outer, '%s.%s' % (path, jp), errs)


# ---------------------------------------------------------------------------
# Pruning

def _fmt(path):
    return path or '<root>'


def prune(schema, obj, path='', root=True):
    """Drops what the skeleton does not declare; returns the dropped paths."""
    out = []
    if not isinstance(schema, dict) or schema.get('x-kubernetes-preserve-unknown-fields') is True \
            or schema.get('x-kubernetes-int-or-string') is True:
        return out
    t = schema.get('type')
    if isinstance(obj, dict) and t in (None, 'object'):
        props = schema.get('properties')
        ap = schema.get('additionalProperties')
        for k in list(obj):
            p = '%s.%s' % (path, k) if path else k
            if root and k in ('apiVersion', 'kind', 'metadata'):
                continue  # ObjectMeta is the server's, not the schema's
            if props is not None and k in props:
                out += prune(props[k], obj[k], p, False)
            elif isinstance(ap, dict):
                out += prune(ap, obj[k], p, False)
            elif ap is True:
                continue
            else:
                del obj[k]
                out.append(p)
    elif isinstance(obj, list) and t in (None, 'array') and isinstance(schema.get('items'), dict):
        for i, v in enumerate(obj):
            out += prune(schema['items'], v, '%s[%d]' % (path, i), False)
    return out


# ---------------------------------------------------------------------------
# Validation

def _jtype(v):
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'boolean'
    if isinstance(v, int):
        return 'integer'
    if isinstance(v, float):
        return 'number'
    if isinstance(v, str):
        return 'string'
    if isinstance(v, list):
        return 'array'
    return 'object'


def _show(v):
    if isinstance(v, (dict, list)):
        return '"%s"' % _jtype(v)
    return json.dumps(v)


def _format_ok(fmt, v):
    try:
        if fmt == 'int32':
            return -2 ** 31 <= v < 2 ** 31
        if fmt == 'int64':
            return -2 ** 63 <= v < 2 ** 63
        if not isinstance(v, str):
            return True
        if fmt == 'ipv4':
            ipaddress.IPv4Address(v)
        elif fmt == 'ipv6':
            ipaddress.IPv6Address(v)
        elif fmt == 'cidr':
            if '/' not in v:
                return False
            ipaddress.ip_network(v, strict=False)
        elif fmt == 'date-time':
            datetime.datetime.fromisoformat(v.replace('Z', '+00:00'))
            if not re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$', v):
                return False
        return True
    except ValueError:
        return False


def validate(schema, obj, path=''):
    errs = []
    _value(schema, obj, path, errs, root=True)
    return errs


def _value(s, v, path, errs, root=False):
    if not isinstance(s, dict):
        return
    p = _fmt(path)
    t = s.get('type')
    if s.get('x-kubernetes-int-or-string') is True:
        if _jtype(v) not in ('integer', 'string'):
            errs.append((p, 'Invalid value: %s: %s in body must be of type integer,string: %s' % (
                _show(v), p, _show(v))))
            return
    elif t:
        jt = _jtype(v)
        if v is None and s.get('nullable') is True:
            return
        if not (jt == t or (t == 'number' and jt == 'integer')):
            errs.append((p, 'Invalid value: %s: %s in body must be of type %s: %s' % (
                _show(v), p, t, _show(v))))
            return
    _checks(s, v, path, p, errs)
    if isinstance(v, dict):
        props = s.get('properties') or {}
        ap = s.get('additionalProperties')
        for k, val in v.items():
            sub = '%s.%s' % (path, k) if path else k
            if root and k in ('apiVersion', 'kind', 'metadata') and k not in props:
                continue
            if root and k == 'metadata':
                _value({'type': 'object', 'properties': {
                    kk: vv for kk, vv in (props['metadata'].get('properties') or {}).items()
                    if kk in ('name', 'generateName')}}, val, sub, errs)
                continue
            if k in props:
                _value(props[k], val, sub, errs)
            elif isinstance(ap, dict):
                _value(ap, val, sub, errs)
    elif isinstance(v, list) and isinstance(s.get('items'), dict):
        for i, val in enumerate(v):
            _value(s['items'], val, '%s[%d]' % (path, i), errs)
        _list_unique(s, v, path, errs)


def _list_unique(s, v, path, errs):
    lt = s.get('x-kubernetes-list-type')
    seen = {}
    for i, val in enumerate(v):
        if lt == 'map' and isinstance(val, dict):
            key = tuple(json.dumps(val.get(k), sort_keys=True)
                        for k in s.get('x-kubernetes-list-map-keys') or [])
            shown = {k: val.get(k) for k in s.get('x-kubernetes-list-map-keys') or [] if k in val}
        elif lt == 'set':
            key, shown = json.dumps(val, sort_keys=True), val
        else:
            return
        if key in seen:
            errs.append(('%s[%d]' % (path, i), 'Duplicate value: %s' % json.dumps(shown)))
        seen[key] = i


def _checks(s, v, path, p, errs):
    """The value validations of s on v (the type is checked already)."""
    jt = _jtype(v)
    if 'enum' in s and v not in s['enum'] or ('enum' in s and isinstance(v, bool) != any(
            isinstance(e, bool) for e in s['enum'] if e == v)):
        errs.append((p, 'Unsupported value: %s: supported values: %s' % (
            _show(v), ', '.join(json.dumps(e) for e in s['enum']))))
    if jt == 'string':
        if 'pattern' in s and not re.search(s['pattern'], v):
            errs.append((p, 'Invalid value: %s: %s in body should match \'%s\'' % (
                _show(v), p, s['pattern'])))
        if 'maxLength' in s and len(v) > s['maxLength']:
            errs.append((p, 'Too long: may not be more than %d bytes' % s['maxLength']))
        if 'minLength' in s and len(v) < s['minLength']:
            errs.append((p, 'Invalid value: %s: %s in body should be at least %d chars long' % (
                _show(v), p, s['minLength'])))
    if jt in ('integer', 'number'):
        if 'maximum' in s and (v > s['maximum'] or (s.get('exclusiveMaximum') and v == s['maximum'])):
            errs.append((p, 'Invalid value: %s: %s in body should be less than %s%s' % (
                _show(v), p, '' if s.get('exclusiveMaximum') else 'or equal to ', s['maximum'])))
        if 'minimum' in s and (v < s['minimum'] or (s.get('exclusiveMinimum') and v == s['minimum'])):
            errs.append((p, 'Invalid value: %s: %s in body should be greater than %s%s' % (
                _show(v), p, '' if s.get('exclusiveMinimum') else 'or equal to ', s['minimum'])))
        if 'multipleOf' in s and (v / s['multipleOf']) != int(v / s['multipleOf']):
            errs.append((p, 'Invalid value: %s: %s in body should be a multiple of %s' % (
                _show(v), p, s['multipleOf'])))
    if 'format' in s and not _format_ok(s['format'], v):
        errs.append((p, 'Invalid value: %s: %s in body must be of type %s: %s' % (
            _show(v), p, s['format'], _show(v))))
    if jt == 'array':
        if 'maxItems' in s and len(v) > s['maxItems']:
            errs.append((p, 'Too many: %d: must have at most %d items' % (len(v), s['maxItems'])))
        if 'minItems' in s and len(v) < s['minItems']:
            errs.append((p, 'Invalid value: %d: %s in body should have at least %d items' % (
                len(v), p, s['minItems'])))
    if jt == 'object':
        if 'maxProperties' in s and len(v) > s['maxProperties']:
            errs.append((p, 'Too many: %d: must have at most %d properties' % (
                len(v), s['maxProperties'])))
        if 'minProperties' in s and len(v) < s['minProperties']:
            errs.append((p, 'Invalid value: %d: %s in body should have at least %d properties' % (
                len(v), p, s['minProperties'])))
        for k in s.get('required') or []:
            if k not in v:
                errs.append(('%s.%s' % (path, k) if path else k, 'Required value'))
    # Junctors: their sub-schemas hold value validations (and properties and
    # items, which recurse).
    for sub in s.get('allOf') or []:
        _value(sub, v, path, errs)
    if s.get('anyOf'):
        if not any(not _sub_errs(sub, v, path) for sub in s['anyOf']):
            errs.append((p, 'Invalid value: %s: %s in body must validate at least one schema '
                         '(anyOf)' % (_show(v), p)))
    if s.get('oneOf'):
        ok = [i for i, sub in enumerate(s['oneOf']) if not _sub_errs(sub, v, path)]
        if len(ok) != 1:
            errs.append((p, 'Invalid value: %s: %s in body must validate one and only one schema '
                         '(oneOf). %s' % (_show(v), p, 'Found none valid' if not ok else
                                          'Found %d valid alternatives' % len(ok))))
    if isinstance(s.get('not'), dict) and not _sub_errs(s['not'], v, path):
        errs.append((p, 'Invalid value: %s: %s in body must not validate the schema (not)' % (
            _show(v), p)))


def _sub_errs(sub, v, path):
    e = []
    _value(sub, v, path, e)
    return e


# ---------------------------------------------------------------------------
# The whole request, as the server handles one for a custom resource

def version_schema(crd, version=None):
    """The openAPIV3Schema of version (default: the storage version) of a CRD object."""
    for v in (crd.get('spec') or {}).get('versions') or []:
        if (version is None and v.get('storage')) or v.get('name') == version:
            return ((v.get('schema') or {}).get('openAPIV3Schema'))
    return None


def check_object(schema, obj, strict=True):
    """Prunes obj in place; returns (unknown field paths, [(path, message)]).
    With strict, unknown fields are errors of their own (the caller refuses the
    object for them before it looks at the others, as the server does)."""
    unknown = prune(schema, obj)
    if strict and unknown:
        return unknown, []
    return unknown, validate(schema, obj)


def _load(path):
    with open(path) as f:
        text = f.read()
    try:
        return [json.loads(text)]
    except ValueError:
        import yaml  # python3-yaml
        # Through JSON, as kubectl sends it: YAML 1.1 reads a bare key `on` as
        # true, and kubectl's YAML-to-JSON makes that the key "true".
        return [json.loads(json.dumps(d, default=str)) for d in yaml.safe_load_all(text)
                if d is not None]


def main(argv):
    if len(argv) >= 2 and argv[0] == 'check':
        bad = 0
        for crd in _load(argv[1]):
            for v in (crd.get('spec') or {}).get('versions') or []:
                for e in structural_errors(version_schema(crd, v.get('name')),
                                           'spec.versions[%s].schema.openAPIV3Schema' % v.get('name')):
                    print(e)
                    bad = 1
        print('structural' if not bad else 'not structural')
        return bad
    if len(argv) >= 3 and argv[0] == 'validate':
        args = argv[1:]
        version, strict = None, True
        if '--version' in args:
            i = args.index('--version')
            version = args[i + 1]
            del args[i:i + 2]
        if '--no-strict' in args:
            args.remove('--no-strict')
            strict = False
        crd = _load(args[0])[0]
        schema = version_schema(crd, version)
        rc = 0
        for f in args[1:]:
            for obj in _load(f):
                unknown, errs = check_object(schema, obj, strict)
                msgs = ['unknown field "%s"' % u for u in unknown] if strict else []
                msgs += ['%s: %s' % e for e in errs]
                print('%s: %s' % (f, 'ok' if not msgs else 'invalid'))
                for m in msgs:
                    print('  ' + m)
                rc |= bool(msgs)
        return rc
    sys.stderr.write(__doc__.split('\n\n')[-2] + '\n')
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
