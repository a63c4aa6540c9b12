#!/usr/bin/env python3
"""A Kubernetes API-server emulator for pcidevices' end-to-end tests.

It is the peer the projection's REST client and the real `kubectl` (1.27-1.33) talk to: HTTPS
with a generated CA, bearer-token auth, discovery (legacy and aggregated), CustomResourceDefinitions
that become served resources at once, CRUD with the server's own semantics (one global
resourceVersion counter, preconditions, generation, finalizers, status subresource, pruning and
schema validation, merge/JSON patches), Table output built from additionalPrinterColumns, and
watches with bookmarks, history replay and 410 Gone. Python 3 stdlib only; `openssl` makes the
certificates.

    apiserver_emulator.py --dir DIR [--port 0] [--http-port 0] [--token TOKEN]
        [--bookmark-interval 5] [--watch-timeout 1800] [--history 10000] [--kube-version 1.32.0]
        [--no-aggregated-discovery] [--verbose]

--kube-version is what /version says; the kubectl dispatcher on these machines runs the matching
kubectl.1.XX, so it also picks the client version under test.

When ready it prints one JSON line: {"https": PORT, "http": PORT|null, "kubeconfig": PATH, "pid": PID}
and writes DIR/kubeconfig, DIR/ca.crt, DIR/token and DIR/namespace (so DIR can also stand in for a
service-account directory). SIGTERM/SIGINT stop it.

Test control, under /emulator/ on every port (token required):
  POST /emulator/down?seconds=N[&mode=503|refuse]  outage: 503 Status answers, or the HTTPS port
                                                   closed (connection refused); watches are cut
  POST /emulator/up                                end an outage early
  POST /emulator/cut-watches                       close every open watch stream mid-flight
  POST /emulator/compact                           drop the event history: older RVs get 410
  POST /emulator/fail?verb=PUT&count=N&code=409    next N matching requests fail with `code`
       [&resource=pcidevices][&subresource=status]  (verb: HTTP method, k8s verb or *)
  DELETE /emulator/fail                            clear injected failures
  POST /emulator/garbage?count=N[&verb=..][&resource=..]  next N (matching) API responses carry
                                                   broken JSON (a watch: its first event line)
  DELETE /emulator/garbage                         clear
  POST /emulator/rotate-token[?keep-old=1]         new token, written to DIR/token and DIR/kubeconfig;
                                                   the old one is refused unless kept
  POST /emulator/config?bookmarkInterval=S         change settings at run time
  GET  /emulator/stats, POST /emulator/reset-stats request counters, open watches, current RV

As the real server (and unlike a lenient fake): strategic-merge patches on custom resources are
415, status on create/update of a status-subresource kind is dropped, unknown fields are pruned
(400 with fieldValidation=Strict), no-op writes keep their resourceVersion, a CRD with
additionalPrinterColumns gets Name + those columns only (Age only when it lists none).
Not emulated: managedFields and field ownership (server-side apply is a merge patch), admission,
RBAC, CEL/format/pattern validation, defaulting, conversion webhooks (versions share storage),
protobuf answers (built-in kinds are decoded from protobuf requests, answered in JSON), the
namespace controller (deleting a namespace deletes its objects at once, finalizers or not), and
garbage collection by ownerReferences.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 3 * 1024 * 1024  # the real server refuses larger JSON bodies with 413
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]
JSON = "application/json"


def jcopy(o):
    # Objects are plain JSON trees: a JSON round trip is the cheapest deep copy.
    return json.loads(json.dumps(o))


def now_ts():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_ts(s):
    try:
        return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except (TypeError, ValueError):
        return None


def human_duration(seconds):
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl shows AGE."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm" % m if s % 60 == 0 else "%dm%ds" % (m, s % 60)
    if m < 180:
        return "%dm" % m
    h = s // 3600
    if h < 8:
        return "%dh" % h if m % 60 == 0 else "%dh%dm" % (h, m % 60)
    if h < 48:
        return "%dh" % h
    if h < 24 * 8:
        return "%dd" % (h // 24) if h % 24 == 0 else "%dd%dh" % (h // 24, h % 24)
    if h < 24 * 365 * 2:
        return "%dd" % (h // 24)
    if h < 24 * 365 * 8:
        dy = (h // 24) % 365
        return "%dy" % (h // 24 // 365) if dy == 0 else "%dy%dd" % (h // 24 // 365, dy)
    return "%dy" % (h // 24 // 365)


# ----------------------------------------------------------------------------------------------
# Errors: every failure leaves as a metav1.Status, as the real server sends them.

class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details, self.headers = details, headers or {}

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            s["details"] = self.details
        return s


REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
           413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


def not_found(res, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (res.qualified, name),
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res, name, why):
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s'
                    % (res.qualified, name, why), {"name": name, "group": res.group, "kind": res.plural})


def invalid(res, name, causes):
    """422 with field causes; causes = [(field, reason, message)]."""
    msgs = ["%s: %s" % (f, m) if f else m for f, _, m in causes]
    text = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    return ApiError(422, "Invalid", '%s.%s "%s" is invalid: %s' % (res.kind, res.group, name, text)
                    if res.group else '%s "%s" is invalid: %s' % (res.kind, name, text),
                    {"name": name, "group": res.group, "kind": res.kind,
                     "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes]})


# ----------------------------------------------------------------------------------------------
# Patches (RFC 7386 merge patch, RFC 6902 JSON patch).

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return jcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", "invalid JSON pointer %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc, parts, path):
    cur = doc
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise ApiError(422, "Invalid", "the server rejected our request due to an error in our "
                           "request: doc is missing path: %s" % path)
    return cur


def json_patch(doc, ops):
    if not isinstance(ops, list):
        raise bad_request("json patch must be a JSON array of operations")
    doc = jcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request("invalid json patch operation: %s" % json.dumps(op))
        kind, path = op["op"], op["path"]
        parts = _pointer(path)

        def put(value, replace):
            nonlocal doc
            if not parts:
                doc = value
                return
            parent = _resolve(doc, parts[:-1], path)
            key = parts[-1]
            if isinstance(parent, dict):
                if replace and key not in parent:
                    raise ApiError(422, "Invalid", "replace operation does not apply: doc is missing key: %s" % path)
                parent[key] = value
            elif isinstance(parent, list):
                if key == "-" and not replace:
                    parent.append(value)
                elif key.isdigit() and int(key) <= len(parent) - (1 if replace else 0):
                    if replace:
                        parent[int(key)] = value
                    else:
                        parent.insert(int(key), value)
                else:
                    raise ApiError(422, "Invalid", "index out of range in json patch path %s" % path)
            else:
                raise ApiError(422, "Invalid", "doc is missing path: %s" % path)

        def take():
            if not parts:
                raise ApiError(422, "Invalid", "cannot remove the document root")
            parent = _resolve(doc, parts[:-1], path)
            key = parts[-1]
            if isinstance(parent, dict) and key in parent:
                return parent.pop(key)
            if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
                return parent.pop(int(key))
            raise ApiError(422, "Invalid", "remove operation does not apply: doc is missing path: %s" % path)

        if kind == "add":
            put(jcopy(op.get("value")), False)
        elif kind == "replace":
            put(jcopy(op.get("value")), True)
        elif kind == "remove":
            take()
        elif kind in ("move", "copy"):
            src = op.get("from", "")
            value = _resolve(doc, _pointer(src), src)
            if kind == "move":
                saved, parts = parts, _pointer(src)
                take()
                parts = saved
            put(jcopy(value), False)
        elif kind == "test":
            if _resolve(doc, parts, path) != op.get("value"):
                raise ApiError(422, "Invalid", "testing value %s failed" % path)
        else:
            raise bad_request("unknown json patch operation %r" % kind)
    return doc


# ----------------------------------------------------------------------------------------------
# Label and field selectors (the subset of k8s.io/apimachinery/pkg/labels kubectl and clients use).

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"


def parse_label_selector(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    reqs = []
    for p in (x.strip() for x in parts):
        if not p:
            continue
        m = re.fullmatch(r"(%s)\s+(in|notin)\s+\(([^)]*)\)" % _KEY, p)
        if m:
            vals = {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = re.fullmatch(r"(%s)\s*(==|!=|=|>|<)\s*([-A-Za-z0-9_.]*)" % _KEY, p)
        if m:
            reqs.append((m.group(1), {"==": "="}.get(m.group(2), m.group(2)), m.group(3)))
            continue
        m = re.fullmatch(r"(!?)\s*(%s)" % _KEY, p)
        if m:
            reqs.append((m.group(2), "!exists" if m.group(1) else "exists", None))
            continue
        raise bad_request("unable to parse requirement: %r" % p)
    return reqs


def labels_match(reqs, labels):
    for key, op, val in reqs:
        have = key in labels
        v = labels.get(key)
        if op == "=" and not (have and v == val):
            return False
        if op == "!=" and have and v == val:
            return False
        if op == "in" and not (have and v in val):
            return False
        if op == "notin" and have and v in val:
            return False
        if op == "exists" and not have:
            return False
        if op == "!exists" and have:
            return False
        if op in (">", "<"):
            try:
                a, b = int(v), int(val)
            except (TypeError, ValueError):
                return False
            if (op == ">" and not a > b) or (op == "<" and not a < b):
                return False
    return True


def parse_field_selector(text):
    reqs = []
    for p in (x.strip() for x in text.split(",")):
        if not p:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)", p)
        if not m:
            raise bad_request("invalid selector: %r; can't understand %r" % (text, p))
        if m.group(1) not in ("metadata.name", "metadata.namespace"):
            raise bad_request('field label not supported: %s' % m.group(1))
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def fields_match(reqs, obj):
    meta = obj.get("metadata", {})
    for field, op, val in reqs:
        v = meta.get(field.split(".", 1)[1], "") or ""
        if (op == "=") != (v == val):
            return False
    return True


# ----------------------------------------------------------------------------------------------
# Protobuf request bodies. kubectl's typed commands (`kubectl create namespace`, `create configmap`)
# send built-in objects as application/vnd.kubernetes.protobuf and do not fall back on 415; answers
# may be JSON (they accept it). Decoded here: the "k8s\0" envelope (runtime.Unknown) and the
# fields of Namespace and ConfigMap, by their field numbers in k8s.io/api.

def _varint(b, i):
    shift = result = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            return result, i
        shift += 7


def _pb_fields(b):
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        yield f, v


def _pb_decode(b, schema):
    out = {}
    for f, v in _pb_fields(b):
        if f not in schema:
            continue
        name, t = schema[f]
        if isinstance(t, dict):
            out[name] = _pb_decode(v, t)
        elif t == "s":
            if v:  # proto3 writes empty strings; JSON omits them
                out[name] = v.decode()
        elif t == "i":
            out[name] = v - (1 << 64) if v >= 1 << 63 else v
        elif t == "b":
            out[name] = bool(v)
        elif t == "ls":
            out.setdefault(name, []).append(v.decode())
        elif t in ("m", "mb"):
            kv = dict(_pb_fields(v))
            val = kv.get(2, b"")
            out.setdefault(name, {})[kv.get(1, b"").decode()] = \
                val.decode() if t == "m" else base64.b64encode(val).decode()
        elif t == "t":
            secs = dict(_pb_fields(v)).get(1, 0)
            out[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))
    return out


PB_META = {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"), 5: ("uid", "s"),
           6: ("resourceVersion", "s"), 7: ("generation", "i"), 8: ("creationTimestamp", "t"),
           10: ("deletionGracePeriodSeconds", "i"), 11: ("labels", "m"), 12: ("annotations", "m"),
           14: ("finalizers", "ls")}
PB_KINDS = {
    "Namespace": {1: ("metadata", PB_META), 2: ("spec", {1: ("finalizers", "ls")}), 3: ("status", {1: ("phase", "s")})},
    "ConfigMap": {1: ("metadata", PB_META), 2: ("data", "m"), 3: ("binaryData", "mb"), 4: ("immutable", "b")},
}


def decode_k8s_protobuf(body):
    if not body.startswith(b"k8s\x00"):
        raise ValueError("no k8s protobuf envelope")
    env = dict(_pb_fields(body[4:]))
    tm = dict(_pb_fields(env.get(1, b"")))
    api_version, kind = tm.get(1, b"").decode(), tm.get(2, b"").decode()
    if kind not in PB_KINDS:
        return None
    obj = _pb_decode(env.get(2, b""), PB_KINDS[kind])
    return dict(obj, apiVersion=api_version, kind=kind)


# ----------------------------------------------------------------------------------------------
# Structural-schema pruning and validation (what the apiextensions server does on every write).

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
               dict: "object", type(None): "null"}


def _type_ok(t, v):
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return True


def check_schema(schema, value, path, causes, unknown):
    """Validate `value` against `schema` in place, pruning unknown fields (collected in
    `unknown`) and nulls of non-nullable fields, appending (field, reason, message) to causes."""
    if not isinstance(schema, dict):
        return value
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _type_ok("integer", value)):
            causes.append((path, "FieldValueTypeInvalid", 'Invalid value: "%s": %s in body must be of type '
                           'int-or-string: "%s"' % (_TYPE_NAMES.get(type(value)), path, _TYPE_NAMES.get(type(value)))))
        return value
    if t and not _type_ok(t, value):
        tn = _TYPE_NAMES.get(type(value), "unknown")
        causes.append((path, "FieldValueTypeInvalid", 'Invalid value: "%s": %s in body must be of type %s: "%s"'
                       % (tn, path, t, tn)))
        return value
    if "enum" in schema and value not in schema["enum"]:
        causes.append((path, "FieldValueNotSupported", "Unsupported value: %s: supported values: %s"
                       % (json.dumps(value), ", ".join(json.dumps(e) for e in schema["enum"]))))
    if isinstance(value, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        keep = schema.get("x-kubernetes-preserve-unknown-fields")
        for k in list(value):
            sub = "%s.%s" % (path, k) if path else k
            v = value[k]
            sch = props.get(k) if props and k in props else (addl if isinstance(addl, dict) else None)
            if v is None and not (sch or {}).get("nullable"):
                if sch is not None or keep or addl is True:
                    del value[k]  # nulls are pruned, as the server does before defaulting
                    continue
            if sch is not None:
                value[k] = check_schema(sch, v, sub, causes, unknown)
            elif not keep and addl is not True and (props is not None or addl is False or t == "object"):
                unknown.append(sub)
                del value[k]
        for r in schema.get("required", []):
            if r not in value:
                causes.append(("%s.%s" % (path, r) if path else r, "FieldValueRequired", "Required value"))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            value[i] = check_schema(schema["items"], item, "%s[%d]" % (path, i), causes, unknown)
    return value


# ----------------------------------------------------------------------------------------------
# JSONPath subset for additionalPrinterColumns: .a.b, ['a'], [0], [*], [?(@.k=="v")].

_JP = re.compile(r"""\.([A-Za-z0-9_\-$]+)|\['([^']*)'\]|\["([^"]*)"\]|\[(\*|-?\d+)\]"""
                 r"""|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*["']([^"']*)["']\)\]""")


def jsonpath(obj, path):
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    vals, pos = [obj], 0
    while pos < len(path):
        m = _JP.match(path, pos)
        if not m:
            return []
        pos, nxt = m.end(), []
        key = m.group(1) or m.group(2) or m.group(3)
        for v in vals:
            if key is not None:
                if isinstance(v, dict) and key in v:
                    nxt.append(v[key])
            elif m.group(4) is not None:
                if m.group(4) == "*":
                    nxt.extend(v if isinstance(v, list) else list(v.values()) if isinstance(v, dict) else [])
                elif isinstance(v, list):
                    i = int(m.group(4))
                    if -len(v) <= i < len(v):
                        nxt.append(v[i])
            elif isinstance(v, list):
                for item in v:
                    cur = item
                    for k in m.group(5).split("."):
                        cur = cur.get(k) if isinstance(cur, dict) else None
                    if cur is not None and str(cur) == m.group(6):
                        nxt.append(item)
        vals = nxt
    return vals


class Column:
    def __init__(self, name, typ, getter, fmt="", desc="", priority=0):
        self.name, self.type, self.getter, self.format = name, typ, getter, fmt
        self.desc, self.priority = desc, priority

    def definition(self):
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.desc, "priority": self.priority}


def crd_column(c):
    """A cell as the apiextensions table convertor makes it: strings printed as jsonpath prints
    them, other types converted, a missing value None (kubectl shows <none>)."""
    typ, path = c.get("type", "string"), c.get("jsonPath", "")

    def get(obj):
        vals = jsonpath(obj, path)
        if not vals:
            return None
        v = vals[0]
        if typ == "string":
            return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        if typ == "integer":
            return int(v) if _type_ok("integer", v) else None
        if typ == "number":
            return v if _type_ok("number", v) else None
        if typ == "boolean":
            return v if isinstance(v, bool) else None
        if typ == "date":
            t = parse_ts(v) if isinstance(v, str) else None
            return human_duration(time.time() - t) if t is not None else None
        return v
    return Column(c.get("name", ""), typ, get, c.get("format", ""), c.get("description", ""), c.get("priority", 0))


def _age(obj):
    t = parse_ts(obj.get("metadata", {}).get("creationTimestamp"))
    return human_duration(time.time() - t) if t is not None else "<unknown>"


NAME_COLUMN = Column("Name", "string", lambda o: o["metadata"]["name"], "name",
                     "Name must be unique within a namespace.")
AGE_COLUMN = Column("Age", "date", _age, "", "CreationTimestamp is a timestamp representing the server "
                    "time when this object was created.")


# ----------------------------------------------------------------------------------------------
# Resources and the store.

class Resource:
    def __init__(self, group, version, plural, kind, namespaced, singular=None, short_names=(),
                 categories=(), status=False, schema=None, columns=None, builtin=True, crd=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.singular = namespaced, singular or kind.lower()
        self.short_names, self.categories = list(short_names), list(categories)
        self.status, self.schema, self.builtin, self.crd = status, schema, builtin, crd
        self.columns = [NAME_COLUMN] + (columns if columns is not None else [AGE_COLUMN])
        self.api_version = "%s/%s" % (group, version) if group else version
        self.qualified = "%s.%s" % (plural, group) if group else plural
        self.skey = (group, plural)  # storage key: all versions of a CRD share one collection


def _version_rank(v):
    """Kube-aware version order: GA > beta > alpha, higher numbers first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, 0, 0, v)
    return ({"alpha": 2, "beta": 1}.get(m.group(2), 0), -int(m.group(1)), -int(m.group(3) or 0), v)


class Event:
    __slots__ = ("rv", "type", "skey", "key", "obj", "prev")

    def __init__(self, rv, typ, skey, key, obj, prev):
        self.rv, self.type, self.skey, self.key, self.obj, self.prev = rv, typ, skey, key, obj, prev


class Watcher:
    def __init__(self, skey):
        self.skey, self.cond, self.queue, self.cut = skey, threading.Condition(), deque(), False

    def push(self, ev):
        with self.cond:
            self.queue.append(ev)
            self.cond.notify()

    def stop(self):
        with self.cond:
            self.cut = True
            self.cond.notify()


DNS1123_SUB = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class Store:
    """All objects, the event history and the watchers, behind one lock: every write takes the
    next value of the global resourceVersion counter, as etcd's revision does."""

    def __init__(self, history_max):
        self.lock = threading.RLock()
        self.rv = 0
        self.floor = 0  # a watch or list from an RV below this gets 410 Gone
        self.history = deque()
        self.history_max = history_max
        self.objects = {}  # skey -> {(ns, name): obj}
        self.resources = {}  # (group, version, plural) -> Resource
        self.watchers = set()
        core = [Resource("", "v1", "namespaces", "Namespace", False, short_names=["ns"], status=True,
                         columns=[Column("Status", "string", lambda o: o.get("status", {}).get("phase", "")),
                                  AGE_COLUMN]),
                Resource("", "v1", "nodes", "Node", False, short_names=["no"], status=True),
                Resource("", "v1", "configmaps", "ConfigMap", True, short_names=["cm"],
                         columns=[Column("Data", "integer", lambda o: len(o.get("data") or {}) +
                                         len(o.get("binaryData") or {})), AGE_COLUMN]),
                Resource("", "v1", "events", "Event", True, short_names=["ev"]),
                Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                         "CustomResourceDefinition", False, short_names=["crd", "crds"],
                         categories=["api-extensions"], status=True,
                         columns=[Column("Created At", "date", lambda o: o["metadata"].get("creationTimestamp"))])]
        for r in core:
            self.resources[(r.group, r.version, r.plural)] = r
        ns = self.resources[("", "v1", "namespaces")]
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(ns, None, {"metadata": {"name": name}})

    # -- lookups
    def lookup(self, group, version, plural):
        return self.resources.get((group, version, plural))

    def groups(self):
        """{group: [versions, preferred first]}"""
        out = {}
        for (g, v, _p) in self.resources:
            out.setdefault(g, set()).add(v)
        return {g: sorted(vs, key=_version_rank) for g, vs in out.items()}

    def version_resources(self, group, version):
        return [r for (g, v, _p), r in sorted(self.resources.items()) if g == group and v == version]

    def out(self, obj, res):
        """An object as the requested version shows it (CRD conversion strategy None)."""
        o = jcopy(obj)
        o["apiVersion"] = res.api_version
        return o

    def _coll(self, res):
        return self.objects.setdefault(res.skey, {})

    # -- commits
    def _commit(self, res, typ, key, obj, prev):
        coll = self._coll(res)
        if typ == "DELETED":
            coll.pop(key, None)
        else:
            coll[key] = obj
        ev = Event(self.rv, typ, res.skey, key, obj, prev)
        self.history.append(ev)
        while len(self.history) > self.history_max:
            self.floor = self.history.popleft().rv
        for w in list(self.watchers):
            if w.skey == res.skey:
                w.push(ev)

    def compact(self):
        with self.lock:
            self.history.clear()
            self.floor = self.rv
            return self.rv

    # -- validation shared by create and update
    def _check_meta(self, res, obj):
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        for f in ("labels", "annotations"):
            v = meta.get(f)
            if v is not None and (not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values())):
                raise bad_request("json: cannot unmarshal into Go struct field ObjectMeta.metadata.%s of "
                                  "type map[string]string" % f)
        fz = meta.get("finalizers")
        if fz is not None and (not isinstance(fz, list) or not all(isinstance(x, str) for x in fz)):
            raise bad_request("json: cannot unmarshal into Go struct field ObjectMeta.metadata.finalizers "
                              "of type []string")

    def _check_type(self, res, obj):
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if kind and kind != res.kind:
            raise bad_request("the kind in the data (%s) does not match the expected kind (%s)" % (kind, res.kind))
        if av and av != res.api_version:
            other = av.split("/", 1)
            if not (res.crd and len(other) == 2 and other[0] == res.group and
                    self.lookup(res.group, other[1], res.plural)):
                raise bad_request("the API version in the data (%s) does not match the expected API "
                                  "version (%s)" % (av, res.api_version))
        obj["apiVersion"], obj["kind"] = self._storage_version(res), res.kind

    def _storage_version(self, res):
        if res.crd:
            return "%s/%s" % (res.group, res.crd["storage"])
        return res.api_version

    def _validate(self, res, obj, strict):
        """Schema validation and pruning for custom resources; returns the warnings."""
        name = obj["metadata"].get("name", "")
        if res.plural == "customresourcedefinitions":
            self._crd_validate(res, obj)
        if not res.schema:
            return []
        causes, unknown = [], []
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        check_schema(dict(res.schema, properties={k: v for k, v in res.schema.get("properties", {}).items()
                                                  if k not in ("apiVersion", "kind", "metadata")}),
                     body, "", causes, unknown)
        if causes:
            raise invalid(res, name, causes)
        for k in list(obj):
            if k not in ("apiVersion", "kind", "metadata"):
                del obj[k]
        obj.update(body)
        msgs = ['unknown field "%s"' % u for u in unknown]
        if unknown and strict == "Strict":
            raise bad_request("%s in body: strict decoding error: %s" % (res.kind, ", ".join(msgs)))
        return msgs if strict == "Warn" else []

    def _check_name(self, res, name):
        rx, lim = (DNS1123_LABEL, 63) if res.plural == "namespaces" else (DNS1123_SUB, 253)
        if not rx.fullmatch(name) or len(name) > lim:
            raise invalid(res, name, [("metadata.name", "FieldValueInvalid",
                                       'Invalid value: "%s": a lowercase RFC 1123 %s must consist of lower case '
                                       "alphanumeric characters, '-' or '.', and must start and end with an "
                                       "alphanumeric character" % (name, "label" if lim == 63 else "subdomain"))])

    # -- verbs
    def get(self, res, ns, name):
        with self.lock:
            obj = self._coll(res).get((ns or "", name))
            if obj is None:
                raise not_found(res, name)
            return self.out(obj, res)

    def create(self, res, ns, body, dry=False, strict=None):
        with self.lock:
            if not isinstance(body, dict):
                raise bad_request("the object provided is unrecognized (must be a JSON object)")
            obj = jcopy(body)
            meta = obj.setdefault("metadata", {})
            self._check_meta(res, obj)
            self._check_type(res, obj)
            if res.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match the namespace "
                                      "sent on the request")
                if ("", ns) not in self.objects.get(("", "namespaces"), {}):
                    raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ns,
                                   {"name": ns, "kind": "namespaces"})
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            coll = self._coll(res)
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                while True:
                    name = meta["generateName"] + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789")
                                                          for _ in range(5))
                    if (ns or "", name) not in coll:
                        break
            if not name:
                raise invalid(res, "", [("metadata.name", "FieldValueRequired",
                                         "Required value: name or generateName is required")])
            self._check_name(res, name)
            meta["name"] = name
            if meta.get("resourceVersion"):
                raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created")
            if (ns or "", name) in coll:
                raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (res.qualified, name),
                               {"name": name, "group": res.group, "kind": res.plural})
            if res.status:
                obj.pop("status", None)  # the status subresource owns .status: a create resets it
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "uid", "managedFields"):
                meta.pop(k, None)
            warnings = self._validate(res, obj, strict)
            if res.plural == "namespaces":
                obj["status"] = {"phase": "Active"}
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_ts()
            if not res.builtin or res.plural == "customresourcedefinitions":
                meta["generation"] = 1  # core kinds here have no spec generation
            if res.plural == "customresourcedefinitions":
                obj["status"] = self._crd_status(obj)
            if dry:
                return self.out(obj, res), warnings
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
            self._commit(res, "ADDED", (ns or "", name), obj, None)
            if res.plural == "customresourcedefinitions":
                self._crd_register(obj)
            return self.out(obj, res), warnings

    def update(self, res, ns, name, body, sub=None, dry=False, strict=None):
        with self.lock:
            if not isinstance(body, dict):
                raise bad_request("the object provided is unrecognized (must be a JSON object)")
            key = (ns or "", name)
            old = self._coll(res).get(key)
            if old is None:
                raise not_found(res, name)
            new = jcopy(body)
            meta = new.setdefault("metadata", {})
            self._check_meta(res, new)
            self._check_type(res, new)
            if meta.get("name") not in (None, name):
                raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                  % (meta.get("name"), name))
            if res.namespaced and meta.get("namespace") not in (None, "", ns):
                raise bad_request("the namespace of the provided object does not match the namespace sent "
                                  "on the request")
            want = meta.get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                raise conflict(res, name, "the object has been modified; please apply your changes to the "
                               "latest version and try again")
            if sub == "status":
                # A status write changes .status only; everything else stays as stored.
                result = jcopy(old)
                if "status" in new:
                    result["status"] = new["status"]
                else:
                    result.pop("status", None)
            else:
                result = new
                if res.status:
                    if "status" in old:
                        result["status"] = jcopy(old["status"])
                    else:
                        result.pop("status", None)
            rmeta = result["metadata"]
            rmeta["name"] = name
            if res.namespaced:
                rmeta["namespace"] = ns
            else:
                rmeta.pop("namespace", None)
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                if k in old["metadata"]:
                    rmeta[k] = old["metadata"][k]
                else:
                    rmeta.pop(k, None)
            rmeta.pop("managedFields", None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(rmeta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise invalid(res, name, [("metadata.finalizers", "FieldValueForbidden",
                                               "Forbidden: no new finalizers can be added if the object is "
                                               "being deleted, found new finalizers %s" % json.dumps(sorted(added)))])
            if res.plural == "customresourcedefinitions" and sub != "status":
                if result.get("spec", {}).get("group") != old["spec"]["group"]:
                    raise invalid(res, name, [("spec.group", "FieldValueInvalid", "Invalid value: field is immutable")])
            warnings = self._validate(res, result, strict)
            if res.plural == "customresourcedefinitions" and sub != "status":
                result["status"] = self._crd_status(result)
            # generation counts spec changes: everything but metadata (and status with the subresource).
            ignore = {"metadata", "status"} if res.status else {"metadata"}
            if {k: v for k, v in result.items() if k not in ignore} != \
                    {k: v for k, v in old.items() if k not in ignore}:
                if "generation" in old["metadata"]:
                    rmeta["generation"] = old["metadata"]["generation"] + 1
            rmeta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if result == old:
                return self.out(old, res), warnings  # a no-op write takes no new resourceVersion
            gone = rmeta.get("deletionTimestamp") and not rmeta.get("finalizers")
            if dry:
                return self.out(result, res), warnings
            self.rv += 1
            rmeta["resourceVersion"] = str(self.rv)
            if gone:  # the last finalizer went away: the object is deleted by this very write
                self._commit(res, "DELETED", key, result, old)
                self._after_delete(res, result)
            else:
                self._commit(res, "MODIFIED", key, result, old)
                if res.plural == "customresourcedefinitions":
                    self._crd_register(result)
            return self.out(result, res), warnings

    def patch(self, res, ns, name, ptype, body, sub=None, dry=False, strict=None):
        with self.lock:
            old = self._coll(res).get((ns or "", name))
            if ptype == "application/apply-patch+yaml":
                if not isinstance(body, dict):
                    raise bad_request("apply patch must be an object")
                if old is None:  # server-side apply creates what is missing
                    if sub:
                        raise not_found(res, name)
                    body = dict(body, metadata=dict(body.get("metadata") or {}, name=name))
                    obj, w = self.create(res, ns, body, dry, strict)
                    return obj, w, 201
                patched = merge_patch(jcopy(old), body)
            elif old is None:
                raise not_found(res, name)
            elif ptype == "application/json-patch+json":
                patched = json_patch(old, body)
            elif ptype == "application/merge-patch+json" or (
                    ptype == "application/strategic-merge-patch+json" and res.builtin):
                if not isinstance(body, dict):
                    raise bad_request("merge patch must be a JSON object")
                patched = merge_patch(jcopy(old), body)
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               "the body of the request was in an unknown format - accepted media types "
                               "include: application/json-patch+json, application/merge-patch+json, "
                               "application/apply-patch+yaml" +
                               (", application/strategic-merge-patch+json" if res.builtin else ""))
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            patched.setdefault("metadata", {})
            if not isinstance(patched["metadata"], dict):
                raise bad_request("metadata must be an object")
            # A resourceVersion in the patch is a precondition, as on the real server.
            patched["metadata"].setdefault("resourceVersion", old["metadata"]["resourceVersion"])
            obj, w = self.update(res, ns, name, patched, sub, dry, strict)
            return obj, w, 200

    def delete(self, res, ns, name, opts, dry=False):
        with self.lock:
            key = (ns or "", name)
            old = self._coll(res).get(key)
            if old is None:
                raise not_found(res, name)
            pre = (opts or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise conflict(res, name, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                               % (pre["uid"], old["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise conflict(res, name, "Precondition failed: ResourceVersion in precondition: %s, "
                               "ResourceVersion in object meta: %s" % (pre["resourceVersion"],
                                                                      old["metadata"]["resourceVersion"]))
            if old["metadata"].get("finalizers"):
                # Finalizers hold the object: mark it and let an update remove the last one.
                if old["metadata"].get("deletionTimestamp"):
                    return self.out(old, res)
                new = jcopy(old)
                new["metadata"]["deletionTimestamp"] = now_ts()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                if dry:
                    return self.out(new, res)
                self.rv += 1
                new["metadata"]["resourceVersion"] = str(self.rv)
                self._commit(res, "MODIFIED", key, new, old)
                return self.out(new, res)
            if dry:
                return self.out(old, res)
            self.rv += 1
            gone = jcopy(old)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self._commit(res, "DELETED", key, gone, old)
            self._after_delete(res, gone)
            return self.out(gone, res)

    def _after_delete(self, res, obj):
        """Deleting a CRD removes its objects and stops serving it; deleting a namespace removes
        what it holds (at once: there is no namespace controller and no Terminating phase)."""
        doomed = []
        if res.plural == "customresourcedefinitions":
            group, plural = obj["spec"]["group"], obj["spec"]["names"]["plural"]
            doomed = [(self._any_version(group, plural), k) for k in self.objects.get((group, plural), {})]
        elif res.plural == "namespaces":
            name = obj["metadata"]["name"]
            for (g, plural), coll in self.objects.items():
                r = next((r for r in self.resources.values() if r.skey == (g, plural)), None)
                if r and r.namespaced:
                    doomed += [(r, k) for k in coll if k[0] == name]
        for r, k in doomed:
            o = self._coll(r)[k]
            self.rv += 1
            gone = jcopy(o)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self._commit(r, "DELETED", k, gone, o)
        if res.plural == "customresourcedefinitions":
            self._crd_unregister(obj["metadata"]["name"])
            for w in list(self.watchers):  # the resource is no longer served: its watches end
                if w.skey == (obj["spec"]["group"], obj["spec"]["names"]["plural"]):
                    w.stop()

    def _any_version(self, group, plural):
        return next(r for r in self.resources.values() if r.skey == (group, plural))

    def list(self, res, ns, q):
        """(items, list RV, continue token, remaining) honouring resourceVersion/Match, limit and
        continue; selectors apply to the snapshot."""
        lsel = parse_label_selector(q.get("labelSelector", ""))
        fsel = parse_field_selector(q.get("fieldSelector", ""))
        with self.lock:
            rv_param, match = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
            cont = q.get("continue", "")
            start = None
            if cont:
                try:
                    tok = json.loads(base64.urlsafe_b64decode(cont + "=" * (-len(cont) % 4)))
                    at, start = int(tok["rv"]), tuple(tok["start"])
                except (ValueError, KeyError, TypeError):
                    raise bad_request("continue key is not valid")
                if at < self.floor:
                    raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without the continue "
                                   "parameter.")
            elif match == "Exact" or (rv_param not in ("", "0") and match == ""):
                at = self._rv_param(rv_param)
                if at > self.rv:
                    raise ApiError(504, "Timeout", "Too large resource version: %d, current: %d" % (at, self.rv),
                                   {"causes": [{"reason": "ResourceVersionTooLarge",
                                                "message": "Too large resource version"}], "retryAfterSeconds": 1})
                if match == "Exact" and at < self.floor:
                    raise ApiError(410, "Expired", "The resourceVersion for the provided list is too old.")
                if match != "Exact":
                    at = self.rv  # NotOlderThan semantics: the current state is never older
            else:
                if rv_param not in ("", "0"):
                    at = self._rv_param(rv_param)
                    if at > self.rv:
                        raise ApiError(504, "Timeout", "Too large resource version: %d, current: %d"
                                       % (at, self.rv), {"causes": [{"reason": "ResourceVersionTooLarge",
                                                                     "message": "Too large resource version"}],
                                                         "retryAfterSeconds": 1})
                at = self.rv
            objs = self._snapshot(res, at)
            items = [o for k, o in sorted(objs.items())
                     if (ns is None or k[0] == ns) and (start is None or k > start)
                     and labels_match(lsel, o["metadata"].get("labels") or {}) and fields_match(fsel, o)]
            limit = int(q.get("limit") or 0) if str(q.get("limit") or "0").isdigit() else 0
            token, remaining = "", None
            if limit and len(items) > limit:
                last = items[limit - 1]["metadata"]
                token = base64.urlsafe_b64encode(json.dumps(
                    {"rv": at, "start": [last.get("namespace", ""), last["name"]]}).encode()).decode().rstrip("=")
                remaining = len(items) - limit
                items = items[:limit]
            return [self.out(o, res) for o in items], at, token, remaining

    def _rv_param(self, v):
        try:
            return int(v)
        except ValueError:
            raise bad_request("resourceVersion: Invalid value: %r: must be a non-negative integer" % v)

    def _snapshot(self, res, at):
        """The collection as it was at resourceVersion `at`, rebuilt by undoing later events."""
        objs = dict(self.objects.get(res.skey, {}))
        if at >= self.rv:
            return objs
        for ev in reversed(self.history):
            if ev.rv <= at:
                break
            if ev.skey != res.skey:
                continue
            if ev.type == "ADDED":
                objs.pop(ev.key, None)
            else:
                objs[ev.key] = ev.prev
        return objs

    # -- CustomResourceDefinitions
    def _crd_validate(self, res, obj):
        name = obj["metadata"].get("name", "")
        spec = obj.get("spec")
        causes = []
        if not isinstance(spec, dict):
            raise invalid(res, name, [("spec", "FieldValueRequired", "Required value")])
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
        if not group or "." not in group:
            causes.append(("spec.group", "FieldValueInvalid", 'Invalid value: "%s": should be a domain with at '
                           "least one dot" % group))
        if not plural or not kind:
            causes.append(("spec.names", "FieldValueRequired", "Required value: plural and kind are required"))
        if name != "%s.%s" % (plural, group):
            causes.append(("metadata.name", "FieldValueInvalid", 'Invalid value: "%s": must be spec.names.plural'
                           '+"."+spec.group' % name))
        if spec.get("scope") not in ("Cluster", "Namespaced"):
            causes.append(("spec.scope", "FieldValueNotSupported", 'Unsupported value: "%s": supported values: '
                           '"Cluster", "Namespaced"' % spec.get("scope")))
        versions = spec.get("versions") or []
        if not isinstance(versions, list) or not versions:
            causes.append(("spec.versions", "FieldValueRequired", "Required value"))
            versions = []
        if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
            causes.append(("spec.versions", "FieldValueInvalid", "Invalid value: must have exactly one version "
                           "marked as storage version"))
        for i, v in enumerate(versions):
            if not isinstance(v, dict) or not isinstance((v.get("schema") or {}).get("openAPIV3Schema"), dict):
                causes.append(("spec.versions[%d].schema.openAPIV3Schema" % i, "FieldValueRequired",
                               "Required value: schemas are required"))
        if causes:
            raise invalid(res, name, causes)
        # The server's defaults.
        names.setdefault("singular", kind.lower())
        names.setdefault("listKind", kind + "List")
        spec.setdefault("conversion", {"strategy": "None"})

    def _crd_status(self, crd):
        ts = now_ts()
        names = crd["spec"]["names"]
        storage = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
        return {"conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": ts, "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": ts, "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"}],
            "acceptedNames": {k: names[k] for k in ("plural", "singular", "kind", "listKind", "shortNames",
                                                    "categories") if k in names},
            "storedVersions": [storage]}

    def _crd_unregister(self, crd_name):
        for k in [k for k, r in self.resources.items() if r.crd and r.crd["name"] == crd_name]:
            del self.resources[k]

    def _crd_register(self, crd):
        spec, names = crd["spec"], crd["spec"]["names"]
        self._crd_unregister(crd["metadata"]["name"])
        storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
        for v in spec["versions"]:
            if not v.get("served", True):
                continue
            cols = v.get("additionalPrinterColumns")
            # As the apiextensions server does: the CRD's columns, or Age when it lists none.
            columns = [crd_column(c) for c in cols] if cols else [AGE_COLUMN]
            r = Resource(spec["group"], v["name"], names["plural"], names["kind"], spec["scope"] == "Namespaced",
                         names.get("singular"), names.get("shortNames", []), names.get("categories", []),
                         status="status" in (v.get("subresources") or {}),
                         schema=v["schema"]["openAPIV3Schema"], columns=columns, builtin=False,
                         crd={"name": crd["metadata"]["name"], "storage": storage})
            self.resources[(r.group, r.version, r.plural)] = r


# ----------------------------------------------------------------------------------------------
# Discovery documents.

def _gv(group, version):
    return "%s/%s" % (group, version) if group else version


def api_resource_list(store, group, version):
    rs = []
    for r in store.version_resources(group, version):
        e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
             "verbs": ALL_VERBS}
        if r.short_names:
            e["shortNames"] = r.short_names
        if r.categories:
            e["categories"] = r.categories
        rs.append(e)
        if r.status:
            rs.append({"name": r.plural + "/status", "singularName": "", "namespaced": r.namespaced,
                       "kind": r.kind, "verbs": STATUS_VERBS})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": _gv(group, version), "resources": rs}


def api_group(group, versions):
    vs = [{"groupVersion": _gv(group, v), "version": v} for v in versions]
    return {"name": group, "versions": vs, "preferredVersion": vs[0]}


def aggregated_discovery(store, core, api_version):
    items = []
    for group, versions in sorted(store.groups().items(), key=lambda kv: (kv[0] != "apiextensions.k8s.io", kv[0])):
        if (group == "") != core:
            continue
        vitems = []
        for v in versions:
            res = []
            for r in store.version_resources(group, v):
                kind = {"group": r.group, "version": r.version, "kind": r.kind}
                e = {"resource": r.plural, "responseKind": kind, "scope": "Namespaced" if r.namespaced else "Cluster",
                     "singularResource": r.singular, "verbs": ALL_VERBS}
                if r.short_names:
                    e["shortNames"] = r.short_names
                if r.categories:
                    e["categories"] = r.categories
                if r.status:
                    e["subresources"] = [{"subresource": "status", "responseKind": kind, "verbs": STATUS_VERBS}]
                res.append(e)
            vitems.append({"version": v, "resources": res, "freshness": "Current"})
        meta = {"creationTimestamp": None}
        if group:
            meta["name"] = group
        items.append({"metadata": meta, "versions": vitems})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}


# ----------------------------------------------------------------------------------------------
# OpenAPI v3, per group-version. kubectl apply/create (1.27+) read it to learn that the server
# validates fields itself (a `fieldValidation` parameter on the kind's PATCH operation) and
# whether a kind takes strategic merge patches; without it kubectl falls back to /openapi/v2
# (protobuf) and refuses to apply. `kubectl explain` reads the schemas.

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
OPENAPI_COMMON = {
    META + "ObjectMeta": {"type": "object", "description": "ObjectMeta is metadata that all persisted "
                          "resources must have.", "properties": {
                              "name": {"type": "string"}, "generateName": {"type": "string"},
                              "namespace": {"type": "string"}, "uid": {"type": "string"},
                              "resourceVersion": {"type": "string"}, "generation": {"type": "integer",
                                                                                    "format": "int64"},
                              "creationTimestamp": {"type": "string", "format": "date-time"},
                              "deletionTimestamp": {"type": "string", "format": "date-time"},
                              "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
                              "labels": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
                              "annotations": {"type": "object", "additionalProperties": {"type": "string",
                                                                                         "default": ""}},
                              "finalizers": {"type": "array", "items": {"type": "string", "default": ""},
                                             "x-kubernetes-list-type": "set"},
                              "ownerReferences": {"type": "array", "items": {"type": "object"}},
                              "managedFields": {"type": "array", "items": {"type": "object"}}}},
    META + "Patch": {"type": "object", "description": "Patch is provided to give a concrete name and type "
                     "to the Kubernetes PATCH request body."},
    META + "Status": {"type": "object", "description": "Status is a return value for calls that don't "
                      "return other objects."},
    META + "DeleteOptions": {"type": "object", "description": "DeleteOptions may be provided when deleting "
                             "an API object."},
}


def _schema_name(r):
    g = ".".join(reversed(r.group.split("."))) if r.group else "io.k8s.api.core"
    return "%s.%s.%s" % (g, r.version, r.kind)


def openapi_v3(store, group, version, kube_version):
    ref = lambda n: {"$ref": "#/components/schemas/" + n}  # noqa: E731
    schemas, paths = dict(OPENAPI_COMMON), {}
    qp = lambda n, t="string": {"name": n, "in": "query", "schema": {"type": t, "uniqueItems": True}}  # noqa
    for r in store.version_resources(group, version):
        name = _schema_name(r)
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        body = jcopy(r.schema) if r.schema else {"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
        body.setdefault("properties", {})["metadata"] = {"allOf": [ref(META + "ObjectMeta")], "default": {}}
        body["x-kubernetes-group-version-kind"] = [gvk]
        schemas[name] = body
        schemas[name + "List"] = {"type": "object", "required": ["items"], "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "items": {"type": "array", "items": ref(name)}, "metadata": {"type": "object"}},
            "x-kubernetes-group-version-kind": [dict(gvk, kind=r.kind + "List")]}
        ok = lambda n: {"200": {"description": "OK", "content": {"application/json": {"schema": ref(n)}}}}  # noqa
        patch_types = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        if r.builtin:
            patch_types.insert(2, "application/strategic-merge-patch+json")
        base = "/" + ("apis/%s/%s" % (group, version) if group else "api/" + version)
        coll = base + ("/namespaces/{namespace}/" if r.namespaced else "/") + r.plural
        pparams = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        if r.namespaced:
            pparams.append({"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}})

        def op(action, resp, extra=None, reqbody=None, sub=""):
            o = {"operationId": action + r.kind + sub, "responses": ok(resp), "x-kubernetes-action": action,
                 "x-kubernetes-group-version-kind": gvk, "parameters": extra or []}
            if reqbody:
                o["requestBody"] = {"content": {t: {"schema": ref(reqbody)} for t in
                                                (patch_types if reqbody == META + "Patch" else ["*/*"])},
                                    "required": True}
            return o
        write = [qp("dryRun"), qp("fieldManager"), qp("fieldValidation")]
        paths[coll] = {"get": op("list", name + "List", [qp("labelSelector"), qp("fieldSelector"), qp("limit", "integer"),
                                                         qp("continue"), qp("resourceVersion"), qp("watch", "boolean")]),
                       "post": op("post", name, write, name),
                       "parameters": pparams[1:]}
        paths[coll + "/{name}"] = {"get": op("get", name), "put": op("put", name, write, name),
                                   "patch": op("patch", name, write + [qp("force", "boolean")], META + "Patch"),
                                   "delete": op("delete", META + "Status", [qp("dryRun")], META + "DeleteOptions"),
                                   "parameters": pparams}
        if r.status:
            paths[coll + "/{name}/status"] = {
                "get": op("get", name, sub="Status"), "put": op("put", name, write, name, "Status"),
                "patch": op("patch", name, write + [qp("force", "boolean")], META + "Patch", "Status"),
                "parameters": pparams}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v" + kube_version},
            "paths": paths, "components": {"schemas": schemas}}


# ----------------------------------------------------------------------------------------------
# Statistics and fault injection.

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.watches_open = 0
        self.reset()

    def reset(self):
        with self.lock:
            self.total = self.writes = self.discovery = self.unauthorized = self.watches_started = 0
            self.by_method, self.by_verb, self.by_resource, self.writes_by_resource = {}, {}, {}, {}

    def count(self, method, verb, resource):
        with self.lock:
            self.total += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1
            if verb == "discovery":
                self.discovery += 1
                return
            self.by_verb[verb] = self.by_verb.get(verb, 0) + 1
            per = self.by_resource.setdefault(resource, {})
            per[verb] = per.get(verb, 0) + 1
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                self.writes += 1
                self.writes_by_resource[resource] = self.writes_by_resource.get(resource, 0) + 1
            if verb == "watch":
                self.watches_started += 1

    def snapshot(self):
        with self.lock:
            return {"total": self.total, "writes": self.writes, "discovery": self.discovery,
                    "unauthorized": self.unauthorized, "by_method": dict(self.by_method),
                    "by_verb": dict(self.by_verb), "by_resource": jcopy(self.by_resource),
                    "writes_by_resource": dict(self.writes_by_resource), "watches_open": self.watches_open,
                    "watches_started": self.watches_started}


# ----------------------------------------------------------------------------------------------
# HTTP.

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a length or is chunked
    server_version = "kube-apiserver-emulator"
    sys_version = ""
    timeout = 300  # idle keep-alive connections end after this

    def log_message(self, fmt, *args):
        if self.server.emu.verbose:
            sys.stderr.write("emulator: %s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    # -- plumbing
    def _send(self, code, body, ctype=JSON, headers=None):
        if self.garbage and ctype.startswith(JSON):
            body = body[: max(1, len(body) // 2)] + b"\x00}{"  # broken on purpose
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code, obj, headers=None, ctype=JSON):
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), ctype, headers)

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                total += size
                if total > 16 * MAX_BODY:
                    self.close_connection = True
                    break
                chunk = self.rfile.read(size)
                if total <= MAX_BODY:
                    data.append(chunk)  # past the limit: read on, keep nothing, answer 413
                self.rfile.readline()
            if total > MAX_BODY:
                raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
            return b"".join(data)
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            # Read the body away (up to a cap) so the client is not cut off mid-send and sees the 413.
            if n <= 16 * MAX_BODY:
                while n > 0:
                    got = self.rfile.read(min(n, 1 << 16))
                    if not got:
                        break
                    n -= len(got)
            else:
                self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
        return self.rfile.read(n) if n else b""

    def _parse_body(self):
        ctype = (self.headers.get("Content-Type") or JSON).split(";")[0].strip().lower()
        if "protobuf" in ctype:
            try:
                obj = decode_k8s_protobuf(self.body)
            except (ValueError, UnicodeDecodeError) as e:
                raise bad_request("failed to decode protobuf body: %s" % e)
            if obj is None:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                               "accepted media types include: application/json, application/yaml")
            return obj
        if not self.body:
            raise bad_request("the request body is empty")
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml") and not self.body.lstrip()[:1] in (b"{", b"["):
                import yaml  # python3-yaml, only for YAML bodies
                return yaml.safe_load(self.body.decode())
            return json.loads(self.body)
        except Exception as e:  # noqa: BLE001 - any decoding failure is the client's 400
            raise bad_request("couldn't get version/kind; json parse error: %s" % e)

    def _authorized(self):
        got = (self.headers.get("Authorization") or "").encode()
        return any(hmac.compare_digest(got, ("Bearer " + t).encode()) for t in self.server.emu.tokens())

    # -- routing
    def _dispatch(self):
        emu = self.server.emu
        self.garbage = False
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            try:
                self.body = self._read_body()
            except ValueError:
                self.close_connection = True
                raise bad_request("malformed request body framing")
            if path in ("/healthz", "/livez", "/readyz"):
                try:
                    emu.check_down()
                except ApiError:
                    return self._send(503, b"emulated outage", "text/plain; charset=utf-8")
                return self._send(200, b"ok", "text/plain; charset=utf-8")
            if not self._authorized():
                with emu.stats.lock:
                    emu.stats.unauthorized += 1
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if path.startswith("/emulator/"):
                return self._control(path[len("/emulator/"):], q)
            emu.check_down()
            self._route(path, q)
        except ApiError as e:
            try:
                self._json(e.code, e.status(), e.headers)
            except OSError:
                self.close_connection = True
        except (OSError, ssl.SSLError):
            self.close_connection = True

    def _accepts(self, what):
        return what in (self.headers.get("Accept") or "")

    def _route(self, path, q):
        emu, store, m = self.server.emu, self.server.emu.store, self.command
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            emu.stats.count(m, "discovery", "")
            return self._json(200, emu.version_info())
        if parts[:2] == ["openapi", "v3"]:
            emu.stats.count(m, "discovery", "")
            return self._openapi(parts[2:])
        if parts == ["openapi", "v2"]:
            emu.stats.count(m, "discovery", "")
            return self._openapi_v2()
        if not parts or parts[0] not in ("api", "apis"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        core = parts[0] == "api"
        if core:
            group, rest = "", parts[1:]
        else:
            if len(parts) == 1:
                return self._discovery_root(False)
            group, rest = parts[1], parts[2:]
        if not rest:
            if core:
                return self._discovery_root(True)
            with store.lock:
                versions = store.groups().get(group)
            if not versions:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            emu.stats.count(m, "discovery", "")
            return self._json(200, dict(api_group(group, versions), kind="APIGroup", apiVersion="v1"))
        version, rest = rest[0], rest[1:]
        with store.lock:
            if not rest:
                if version not in store.groups().get(group, []):
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                emu.stats.count(m, "discovery", "")
                return self._json(200, api_resource_list(store, group, version))
            ns = None
            if rest[0] == "namespaces" and len(rest) >= 3:
                r = store.lookup(group, version, rest[2])
                if r and r.namespaced:
                    ns, rest = rest[1], rest[2:]
            res = store.lookup(group, version, rest[0])
        if res is None or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (not res.namespaced and ns) or (res.namespaced and name and ns is None) or \
                (sub and (sub != "status" or not res.status)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        watch = q.get("watch") in ("1", "true", "True")
        verb = {"GET": "watch" if watch else ("get" if name else "list"), "HEAD": "get",
                "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(m, "unknown")
        if (m == "POST" and name) or (m in ("PUT", "PATCH") and not name):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        label = res.plural + ("/" + sub if sub else "")
        emu.stats.count(m, verb, label)
        fault = emu.take_fault(m, verb, res.plural, sub)
        if fault:
            raise fault
        self.garbage = emu.take_garbage(m, verb, res.plural, sub)
        dry = q.get("dryRun") == "All"
        strict = q.get("fieldValidation")
        if verb == "watch":
            return self._watch(res, ns, q)
        if verb == "list":
            return self._list(res, ns, q)
        if verb == "get":
            return self._object(200, store.get(res, ns, name), res, q)
        if verb == "create":
            obj, w = store.create(res, ns, self._parse_body(), dry, strict)
            return self._object(201, obj, res, q, w)
        if verb == "update":
            obj, w = store.update(res, ns, name, self._parse_body(), sub, dry, strict)
            return self._object(200, obj, res, q, w)
        if verb == "patch":
            ptype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            obj, w, code = store.patch(res, ns, name, ptype, self._parse_body(), sub, dry, strict)
            return self._object(code, obj, res, q, w)
        if verb == "delete":
            try:
                opts = self._parse_body() if self.body.strip() else {}
            except ApiError:
                opts = {}  # e.g. protobuf DeleteOptions from a typed client: defaults will do
            obj = store.delete(res, ns, name, opts if isinstance(opts, dict) else {}, dry)
            return self._object(200, obj, res, q)
        if verb == "deletecollection":
            items, _, _, _ = store.list(res, ns, q)
            for o in items:
                try:
                    store.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], {}, dry)
                except ApiError:
                    pass  # gone meanwhile
            return self._json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _openapi_v2(self):
        """kubectl 1.27/1.28 `apply` fetch /openapi/v2 (protobuf) unconditionally and fail on 404.
        An empty but valid document is enough: kubectl then uses its compiled-in types for
        strategic merge patches, and v3 for the field-validation check."""
        version = "v" + self.server.emu.kube_version
        if "protobuf" in (self.headers.get("Accept") or ""):
            def field(no, payload):  # a length-delimited protobuf field
                return bytes([no << 3 | 2, len(payload)]) + payload
            # gnostic openapi_v2.Document: swagger=1, info=2 (Info: title=1, version=2), paths=8.
            info = field(1, b"Kubernetes") + field(2, version.encode())
            doc = field(1, b"2.0") + field(2, info) + field(8, b"")
            return self._send(200, doc, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        return self._json(200, {"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": {}})

    def _openapi(self, gvparts):
        emu, store = self.server.emu, self.server.emu.store
        with store.lock:
            gvs = sorted({(g, v) for (g, v, _p) in store.resources})
            if not gvparts:
                out = {}
                for g, v in gvs:
                    key = "apis/%s/%s" % (g, v) if g else "api/" + v
                    doc = json.dumps(openapi_v3(store, g, v, emu.kube_version), sort_keys=True).encode()
                    out[key] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (
                        key, hashlib.sha512(doc).hexdigest().upper())}
                return self._json(200, {"paths": out})
            if gvparts[0] == "api" and len(gvparts) == 2:
                g, v = "", gvparts[1]
            elif gvparts[0] == "apis" and len(gvparts) == 3:
                g, v = gvparts[1], gvparts[2]
            else:
                g = v = None
            if (g, v) not in gvs:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            doc = openapi_v3(store, g, v, emu.kube_version)
        return self._json(200, doc)

    def _discovery_root(self, core):
        emu, store = self.server.emu, self.server.emu.store
        emu.stats.count(self.command, "discovery", "")
        accept = self.headers.get("Accept") or ""
        if not emu.no_aggregated and "as=APIGroupDiscoveryList" in accept:
            # Aggregated discovery (kubectl 1.26+): answer in the first version the client lists.
            for media in accept.split(","):
                mv = re.search(r"g=apidiscovery\.k8s\.io;\s*v=(v2beta1|v2)\b", media)
                if mv and "as=APIGroupDiscoveryList" in media:
                    v = mv.group(1)
                    with store.lock:
                        doc = aggregated_discovery(store, core, "apidiscovery.k8s.io/" + v)
                    return self._json(200, doc, ctype="application/json;g=apidiscovery.k8s.io;v=%s;"
                                      "as=APIGroupDiscoveryList" % v)
        if core:
            return self._json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:%d" % emu.https_port}]})
        with store.lock:
            groups = [api_group(g, vs) for g, vs in sorted(store.groups().items(),
                                                           key=lambda kv: (kv[0] != "apiextensions.k8s.io", kv[0]))
                      if g]
        return self._json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    # -- output shapes
    def _warn(self, warnings):
        return {"Warning": ", ".join('299 - "%s"' % w.replace('"', "'") for w in warnings)} if warnings else None

    def _object(self, code, obj, res, q, warnings=None):
        if self._accepts("as=Table"):
            return self._json(code, self._table(res, [obj], obj["metadata"].get("resourceVersion", ""), q),
                              self._warn(warnings))
        if self._accepts("as=PartialObjectMetadata"):
            obj = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
        return self._json(code, obj, self._warn(warnings))

    def _table(self, res, objs, rv, q, cont=""):
        include = q.get("includeObject", "Metadata")
        rows = []
        for o in objs:
            row = {"cells": [c.getter(o) for c in res.columns]}
            if include == "Object":
                row["object"] = o
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": o["metadata"]}
            rows.append(row)
        meta = {"resourceVersion": str(rv)}
        if cont:
            meta["continue"] = cont
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                "columnDefinitions": [c.definition() for c in res.columns], "rows": rows}

    def _list(self, res, ns, q):
        store = self.server.emu.store
        items, rv, cont, remaining = store.list(res, ns, q)
        if self._accepts("as=Table"):
            return self._json(200, self._table(res, items, rv, q, cont))
        meta = {"resourceVersion": str(rv)}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = remaining
        if self._accepts("as=PartialObjectMetadataList"):
            return self._json(200, {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                    "metadata": meta, "items": [
                                        {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                         "metadata": o["metadata"]} for o in items]})
        self._json(200, {"kind": res.kind + "List", "apiVersion": res.api_version, "metadata": meta, "items": items})

    # -- watch
    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _client_gone(self):
        """A watch only writes; a readable socket means the client closed (or broke protocol)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            self.connection.settimeout(0.01)
            try:
                data = self.connection.recv(1)
            finally:
                self.connection.settimeout(self.timeout)
            return data == b"" or bool(data)
        except (ssl.SSLWantReadError, socket.timeout, BlockingIOError):
            return False
        except (OSError, ValueError):
            return True

    def _watch(self, res, ns, q):
        emu, store = self.server.emu, self.server.emu.store
        lsel = parse_label_selector(q.get("labelSelector", ""))
        fsel = parse_field_selector(q.get("fieldSelector", ""))
        table = self._accepts("as=Table")
        try:
            timeout = float(q.get("timeoutSeconds") or emu.watch_timeout)
        except ValueError:
            raise bad_request("invalid timeoutSeconds")
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true", "True")
        initial_flag = q.get("sendInitialEvents") in ("1", "true", "True")
        if initial_flag and not bookmarks:
            raise invalid(res, "", [("sendInitialEvents", "FieldValueForbidden",
                                     "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true")])
        rv_param = q.get("resourceVersion", "")

        def match(o):
            return o is not None and (ns is None or o["metadata"].get("namespace") == ns) and \
                labels_match(lsel, o["metadata"].get("labels") or {}) and fields_match(fsel, o)

        w = Watcher(res.skey)
        gone_msg, initial = None, []
        with store.lock:
            if initial_flag or rv_param in ("", "0"):
                initial = [("ADDED", o) for _k, o in sorted(store.objects.get(res.skey, {}).items()) if match(o)]
                if initial_flag and rv_param not in ("", "0") and store._rv_param(rv_param) > store.rv:
                    raise ApiError(504, "Timeout", "Too large resource version")
            else:
                at = store._rv_param(rv_param)
                if at < store.floor:
                    gone_msg = "too old resource version: %d (%d)" % (at, store.floor + 1)
                else:
                    w.queue.extend(ev for ev in store.history if ev.rv > at and ev.skey == res.skey)
            start_rv = store.rv
            store.watchers.add(w)
        with emu.stats.lock:
            emu.stats.watches_open += 1
        try:
            self.send_response(200)
            self.send_header("Content-Type", JSON)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()

            def send(typ, obj):
                if table and typ != "BOOKMARK" and typ != "ERROR":
                    obj = self._table(res, [obj], obj["metadata"].get("resourceVersion", ""), q)
                data = json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n"
                if self.garbage:
                    data, self.garbage = data[: len(data) // 2] + b"\x00}{\n", False
                self._chunk(data)

            if gone_msg:  # as the real server: HTTP 200, then one ERROR event with a 410 Status
                send("ERROR", ApiError(410, "Expired", gone_msg).status())
                self.wfile.write(b"0\r\n\r\n")
                return
            for typ, o in initial:
                send(typ, store.out(o, res))
            if initial_flag:
                send("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version, "metadata": {
                    "resourceVersion": str(start_rv), "annotations": {"k8s.io/initial-events-end": "true"}}})
            deadline = time.monotonic() + timeout
            last_mark = time.monotonic()
            while True:
                with w.cond:
                    if not w.queue and not w.cut:
                        w.cond.wait(0.5)
                    batch = list(w.queue)
                    w.queue.clear()
                    cut = w.cut
                if cut:
                    # Mid-flight close, no terminating chunk: the client sees the stream break.
                    self.close_connection = True
                    try:
                        socket.socket.shutdown(self.connection, socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                for ev in batch:
                    cur, old = match(ev.obj), match(ev.prev)
                    if ev.type == "ADDED" and cur:
                        send("ADDED", store.out(ev.obj, res))
                    elif ev.type == "MODIFIED" and (cur or old):
                        send("MODIFIED" if cur and old else "ADDED" if cur else "DELETED", store.out(ev.obj, res))
                    elif ev.type == "DELETED" and (old or cur):
                        send("DELETED", store.out(ev.obj, res))
                now = time.monotonic()
                if now >= deadline:
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if bookmarks and now - last_mark >= emu.bookmark_interval:
                    with store.lock:
                        with w.cond:
                            mark = None if w.queue else store.rv  # every event up to rv went out
                    if mark is not None:
                        send("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                          "metadata": {"resourceVersion": str(mark)}})
                        last_mark = now
                if not batch and self._client_gone():
                    self.close_connection = True
                    return
        except (OSError, ssl.SSLError):
            self.close_connection = True
        finally:
            with store.lock:
                store.watchers.discard(w)
            with emu.stats.lock:
                emu.stats.watches_open -= 1

    # -- test control
    def _control(self, what, q):
        emu = self.server.emu
        m = self.command

        def num(name, default, conv=int):
            try:
                return conv(q.get(name, default))
            except (TypeError, ValueError):
                raise bad_request("bad %s" % name)
        if what == "stats" and m == "GET":
            s = emu.stats.snapshot()
            with emu.store.lock:
                s.update(resourceVersion=emu.store.rv, floor=emu.store.floor, history=len(emu.store.history))
            return self._json(200, s)
        if m not in ("POST", "DELETE"):
            raise ApiError(405, "MethodNotAllowed", "use POST")
        if what == "reset-stats":
            emu.stats.reset()
        elif what == "down":
            mode = q.get("mode", "503")
            if mode not in ("503", "refuse"):
                raise bad_request("mode is 503 or refuse")
            emu.go_down(num("seconds", 5, float), mode)
        elif what == "up":
            emu.come_up()
        elif what == "cut-watches":
            return self._json(200, {"cut": emu.cut_watches()})
        elif what == "compact":
            return self._json(200, {"floor": emu.store.compact()})
        elif what in ("fail", "garbage"):
            rules = emu.faults if what == "fail" else emu.garbage
            with emu.fault_lock:
                if m == "DELETE" or q.get("clear"):
                    rules.clear()
                else:
                    rules.append({"verb": q.get("verb", "*"), "count": num("count", 1), "code": num("code", 500),
                                  "resource": q.get("resource"), "subresource": q.get("subresource")})
        elif what == "rotate-token":
            return self._json(200, {"token": emu.rotate_token(q.get("keep-old") in ("1", "true"))})
        elif what == "config":
            if "bookmarkInterval" in q:
                emu.bookmark_interval = num("bookmarkInterval", 5, float)
        else:
            raise ApiError(404, "NotFound", "no such control endpoint: %s" % what)
        return self._json(200, {"ok": True})


class Server(ThreadingHTTPServer):
    """One thread per connection; TLS is done in that thread so a stalled handshake never blocks
    the accept loop."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, emu, tls):
        self.emu, self.tls, self.conns, self.conns_lock = emu, tls, set(), threading.Lock()
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        # As Go's net/http (the real API server) does: without it, an answer written in two
        # pieces (headers, then body) waits for the client's delayed ACK, ~40 ms a request.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            try:
                request.settimeout(10)
                request = self.tls.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError):
                request.close()
                return
        with self.conns_lock:
            self.conns.add(request)
        try:
            Handler(request, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self.conns_lock:
                self.conns.discard(request)
            if self.tls:
                try:
                    request.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        if self.emu.verbose:
            super().handle_error(request, client_address)

    def kill_connections(self):
        with self.conns_lock:
            for s in list(self.conns):
                try:
                    socket.socket.shutdown(s, socket.SHUT_RDWR)
                except OSError:
                    pass


class Emulator:
    def __init__(self, args, tls):
        self.store = Store(args.history)
        self.stats = Stats()
        self.token, self.old_tokens, self.verbose, self.tls = args.token, [], args.verbose, tls
        self.dir = args.dir
        self.bookmark_interval, self.watch_timeout = args.bookmark_interval, args.watch_timeout
        self.no_aggregated, self.kube_version = args.no_aggregated_discovery, args.kube_version
        self.fault_lock = threading.Lock()
        self.faults, self.garbage = [], []  # rules: {verb, resource, subresource, count[, code]}
        self.down_lock = threading.Lock()
        self.down_until, self.down_mode, self.up_timer = 0.0, None, None
        self.https = self._serve(args.port, tls)
        self.https_port = self.https.server_address[1]
        self.http = self._serve(args.http_port, None) if args.http_port is not None else None

    def _serve(self, port, tls):
        srv = Server(("127.0.0.1", port), self, tls)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        return srv

    def tokens(self):
        return [self.token] + self.old_tokens

    def write_credentials(self):
        with open(os.path.join(self.dir, "ca.crt"), "rb") as f:
            ca_pem = f.read()
        write_kubeconfig(os.path.join(self.dir, "kubeconfig"), self.https_port, ca_pem, self.token)
        for name, text in (("token", self.token), ("namespace", "default")):
            tmp = os.path.join(self.dir, name + ".tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.dir, name))  # readers never see a half-written file

    def rotate_token(self, keep_old):
        self.old_tokens = ([self.token] + self.old_tokens) if keep_old else []
        self.token = secrets.token_hex(16)
        self.write_credentials()
        return self.token

    def version_info(self):
        major, minor, *_ = self.kube_version.split(".")
        return {"major": major, "minor": minor, "gitVersion": "v%s" % self.kube_version,
                "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"}

    @staticmethod
    def _take(rules, method, verb, resource, sub):
        """The first rule matching this request, its count spent; None when none matches."""
        for f in rules:
            if f["verb"] not in ("*", method, verb, verb.upper()):
                continue
            if f["resource"] and f["resource"] != resource:
                continue
            if f["subresource"] is not None and f["subresource"] != (sub or ""):
                continue
            f["count"] -= 1
            if f["count"] <= 0:
                rules.remove(f)
            return f
        return None

    def take_fault(self, method, verb, resource, sub):
        with self.fault_lock:
            f = self._take(self.faults, method, verb, resource, sub)
            if f:
                code = f["code"]
                hdr = {"Retry-After": "1"} if code in (429, 503) else None
                return ApiError(code, REASONS.get(code, "InternalError"),
                                "injected failure (emulator): %s %s" % (method, resource), None, hdr)
        return None

    def take_garbage(self, method, verb, resource, sub):
        with self.fault_lock:
            return self._take(self.garbage, method, verb, resource, sub) is not None

    def cut_watches(self):
        with self.store.lock:
            ws = list(self.store.watchers)
        for w in ws:
            w.stop()
        return len(ws)

    def check_down(self):
        with self.down_lock:
            if self.down_mode == "503" and time.monotonic() < self.down_until:
                raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request "
                               "(emulated outage)", None, {"Retry-After": "1"})

    def go_down(self, seconds, mode):
        with self.down_lock:
            self.down_until, self.down_mode = time.monotonic() + seconds, mode
            if self.up_timer:
                self.up_timer.cancel()
            self.up_timer = threading.Timer(seconds, self.come_up)
            self.up_timer.daemon = True
            self.up_timer.start()
        self.cut_watches()
        if mode == "refuse":
            # Close the HTTPS port after this control answer has gone out.
            threading.Timer(0.1, self._close_https).start()

    def _close_https(self):
        with self.down_lock:
            srv, self.https = self.https, None
        if srv:
            srv.shutdown()
            srv.server_close()
            srv.kill_connections()

    def come_up(self):
        with self.down_lock:
            self.down_mode, self.down_until = None, 0.0
            if self.up_timer:
                self.up_timer.cancel()
                self.up_timer = None
            need = self.https is None
        if need:
            time.sleep(0.15)  # let a pending _close_https finish first
            for _ in range(50):
                try:
                    srv = self._serve(self.https_port, self.tls)
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                sys.stderr.write("emulator: could not re-open port %d\n" % self.https_port)
                return
            with self.down_lock:
                self.https = srv

    def stop(self):
        for srv in (self.https, self.http):
            if srv:
                srv.shutdown()
                srv.server_close()


# ----------------------------------------------------------------------------------------------
# Certificates, kubeconfig, main.

def make_certs(d, extra_sans=()):
    """A CA and a server certificate for 127.0.0.1/localhost (and `extra_sans`, e.g.
    "IP:10.0.2.100"), made with the openssl CLI."""
    def run(*cmd):
        subprocess.run(["openssl", *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "3650",
        "-subj", "/CN=pcidevices-e2e-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", p("server.key"), "-out", p("server.csr"), "-subj", "/CN=kube-apiserver-emulator")
    with open(p("server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n"
                % ",".join(["IP:127.0.0.1", "DNS:localhost", *extra_sans]))
    run("x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
        "-out", p("server.crt"), "-days", "3650", "-extfile", p("server.ext"))
    return p("ca.crt"), p("server.crt"), p("server.key")


def write_kubeconfig(path, port, ca_pem, token):
    text = ("apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n"
            "    server: https://127.0.0.1:%d\n    certificate-authority-data: %s\n"
            "contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n"
            "    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user:\n"
            "    token: %s\npreferences: {}\n" % (port, base64.b64encode(ca_pem).decode(), token))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="where certificates and the kubeconfig go")
    ap.add_argument("--port", type=int, default=0, help="HTTPS port (0: any free one)")
    ap.add_argument("--http-port", type=int, default=None, help="also serve plain HTTP (0: any free port)")
    ap.add_argument("--token", default=None, help="bearer token (default: random)")
    ap.add_argument("--bookmark-interval", type=float, default=5.0, help="seconds between BOOKMARK events")
    ap.add_argument("--watch-timeout", type=float, default=1800.0, help="watch length without timeoutSeconds")
    ap.add_argument("--history", type=int, default=10000, help="events kept for watch replay")
    ap.add_argument("--kube-version", default="1.32.0", help="what /version reports")
    ap.add_argument("--no-aggregated-discovery", action="store_true", help="serve legacy discovery only")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    ap.add_argument("--san", action="append", default=[],
                    help="another subjectAltName of the server certificate (IP:10.0.2.100); repeatable")
    args = ap.parse_args()
    args.token = args.token or secrets.token_hex(16)
    os.makedirs(args.dir, exist_ok=True)
    _ca, crt, key = make_certs(args.dir, args.san)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(crt, key)
    tls.set_alpn_protocols(["http/1.1"])  # no HTTP/2: clients fall back to HTTP/1.1
    emu = Emulator(args, tls)
    emu.write_credentials()
    kubeconfig = os.path.join(args.dir, "kubeconfig")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"https": emu.https_port, "http": emu.http.server_address[1] if emu.http else None,
                      "kubeconfig": kubeconfig, "pid": os.getpid()}), flush=True)
    while not stop.wait(1):
        pass
    emu.stop()


if __name__ == "__main__":
    main()
