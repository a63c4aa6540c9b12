#!/usr/bin/env python3
"""A Kubernetes API-server emulator for pcidevices' end-to-end tests.

It is the peer the projection's REST client and the real `kubectl` (1.27-1.33) talk to: HTTPS
with a generated CA, bearer-token auth, discovery (legacy and aggregated), CustomResourceDefinitions
that become served resources at once, CRUD with the server's own semantics (one global
resourceVersion counter, preconditions, generation, finalizers, status subresource, pruning and
schema validation, merge/JSON patches), Table output built from additionalPrinterColumns, watches
(bookmarks, history replay, 410 Gone) and admission webhooks. Python 3 stdlib only; `openssl`
makes the certificates.

    apiserver_emulator.py --dir DIR [--port 0] [--http-port 0] [--token TOKEN]
        [--bookmark-interval 5] [--watch-timeout 1800] [--history 10000] [--kube-version 1.32.0]
        [--no-aggregated-discovery] [--san IP:10.0.2.100]... [--service-endpoint NS/NAME=HOST:PORT]...
        [--verbose]

Built-in kinds: namespaces, nodes, configmaps, events, coordination.k8s.io/v1 leases,
apiextensions.k8s.io/v1 CRDs, admissionregistration.k8s.io/v1 Validating/MutatingWebhookConfigurations
and resource.k8s.io/v1 resourceslices, deviceclasses, resourceclaims (status subresource) and
resourceclaimtemplates. DELETE of a collection (label/field selectors) answers the List of what it
deleted, as the generic registry does.

resource.k8s.io/v1 (DRA), as kube-apiserver 1.34+ serves it (whatever --kube-version says): writes
are decoded against the published OpenAPI v3 schemas kept in openapi/ (types: 400 "json: cannot
unmarshal"; unknown fields: 400 with fieldValidation=Strict, a warning with Warn, dropped with Ignore,
and 422 naming the field when the request sets no fieldValidation -- stricter than the real server,
which drops them), defaulted (allocationMode ExactCount, count 1, ...), marshalled as the Go types are
(a claim's "status": {}, spec.pool.generation always present), and validated as
pkg/apis/resource/validation does (422 Invalid with its field paths: DNS-label device names, at most
128 devices (64 with taints or counters), 32 attributes+capacities per device named by C identifiers
of <= 32 bytes after an optional "<domain>/", one value per attribute, strings and versions <= 64
bytes, exactly one of nodeName/nodeSelector/allNodes/perDeviceNodeSelection, pool generation >= 0 and
resourceSliceCount > 0, immutable driver, pool name and node name; a claim's spec and a template's
are immutable, a claim's /status must name its requests and allocated devices, its allocation is
immutable once set). ResourceSlice and DeviceClass count spec changes in metadata.generation. Tables:
NAME NODE DRIVER POOL AGE for slices, NAME STATE AGE for claims, NAME AGE for the others. CEL
expressions are not compiled (only present and <= 10Ki).

Events, as kube-apiserver keeps them: one storage, two views. An Event written through either v1 or
events.k8s.io/v1 (create, update -- which creates a missing event --, merge/JSON/strategic patch,
delete) is one object, with one name, uid and resourceVersion; get, list, watch and Table answers
show each group's shape, converted field by field as pkg/apis/events/v1/conversion.go does
(regarding/involvedObject, note/message, reportingController/reportingComponent, deprecatedSource/
source, deprecatedFirstTimestamp, deprecatedLastTimestamp and deprecatedCount/firstTimestamp,
lastTimestamp and count; eventTime, series, related, reportingInstance, action, reason and type
as they are), and marshalled as the Go types are (`"eventTime": null`, `"reportingComponent": ""`;
MicroTimes need six fractional digits; unknown fields dropped). Patches apply to the request's view.
Validation is pkg/apis/core/validation/events.go: the legacy checks for every write, and through
events.k8s.io/v1 the strict ones (eventTime, type, series.count >= 2, deprecated* unset on create;
everything but series immutable on update). Field selectors as the event registry: on v1
involvedObject.{kind,namespace,name,uid,apiVersion,resourceVersion,fieldPath}, reason,
reportingComponent, source (source.component, else reportingComponent), type, metadata.name and
metadata.namespace; on events.k8s.io/v1 regarding.*, reason, reportingController, source, type and
metadata.*; other labels are 400. So `kubectl describe` of any object (for a cluster-scoped one:
GET /api/v1/events?fieldSelector=involvedObject.name=N,involvedObject.namespace=,
involvedObject.kind=K,involvedObject.uid=U&limit=500, across namespaces) lists events posted
through either group, a series as "AGE (xN over AGE)"; `kubectl get events` prints LAST SEEN, TYPE,
REASON, OBJECT, MESSAGE (-o wide: SUBOBJECT, SOURCE, FIRST SEEN, COUNT, NAME). Field selectors on
resourceslices, as its registry: spec.nodeName ("" when unset), spec.driver and metadata.name (another
label, spec.pool.name included, is 400 "field label not supported for resource.k8s.io/v1,
Kind=ResourceSlice"); on other kinds: metadata.name and metadata.namespace.

Admission webhooks, as kube-apiserver 1.32's webhook plugins: on create, update, patch and delete
(subresources only when a rule names them, e.g. pcidevices/status) of any kind but the webhook
configurations, the mutating webhooks run first (configurations by name, webhooks in order; JSON
patches applied; reinvocationPolicy IfNeeded honoured), then the server's own validation, then the
validating webhooks (in parallel). Rules, namespaceSelector, objectSelector, matchPolicy (Equivalent
also matches the other served versions of a CRD), failurePolicy, sideEffects on dry runs and
timeoutSeconds work as upstream; configurations are validated and defaulted on write (422 Invalid).
Calls are HTTPS only: clientConfig.url, or clientConfig.service resolved through
--service-endpoint / POST /emulator/service, the certificate verified against caBundle (the system
roots without one) for NAME.NS.svc (the URL's host). The user the webhooks are told of is
"kubernetes-admin" unless the request carries an X-Emulator-User header. A denial answers with the
webhook's status (code < 400 becomes 400) and 'admission webhook "NAME" denied the request: MSG'; a
call failure under failurePolicy Fail is 500 'Internal error occurred: failed calling webhook
"NAME": REASON'; a webhook's warnings come back as Warning headers. The store's lock is not held
during a call: a write is re-checked (an update retried) when the object changed meanwhile.

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
  POST /emulator/service?namespace=NS&name=NAME&address=HOST:PORT  where a webhook service is
                                                   served (DELETE ...?namespace=NS&name=NAME: unset)
  GET  /emulator/stats, POST /emulator/reset-stats request counters, open watches, current RV,
                                                   webhookCalls {name: {calls, failures, denials}}

As the real server (and unlike a lenient fake): strategic-merge patches on custom resources are
415, status on create/update of a status-subresource kind is dropped, unknown fields are pruned
(400 with fieldValidation=Strict), no-op writes keep their resourceVersion, a CRD with
additionalPrinterColumns gets Name + those columns only (Age only when it lists none); strategic
merge patches on built-in kinds merge the lists their Go types key (webhooks by name, finalizers).
Not emulated: managedFields and field ownership (server-side apply is a merge patch), admission
plugins other than the webhooks (and webhooks' matchConditions, auditAnnotations, client auth),
RBAC, CEL/format/pattern validation, defaulting (but resource.k8s.io's), conversion webhooks (versions share storage),
protobuf answers (built-in kinds are decoded from protobuf requests, answered in JSON), the
namespace controller (deleting a namespace deletes its objects at once, finalizers or not), and
garbage collection by ownerReferences.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import http.client
import ipaddress
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
ADMREG = "admissionregistration.k8s.io"


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
        self.details, self.headers, self.state = details, headers or {}, "Failure"

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": self.state,
             "message": self.message, "reason": self.reason, "code": self.code}
        if not self.reason:
            del s["reason"]  # omitempty, as a webhook's denial without a reason has it
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


# Strategic merge patches of the built-in kinds (kubectl's client-side apply sends them): a merge
# patch, except that the lists the Go types tag with patchStrategy=merge merge by their key (a
# primitive list by value), and the $setElementOrder/$deleteFromPrimitiveList/$retainKeys/$patch
# directives are honoured, never stored.
SMP_COMMON = {"metadata.finalizers": None, "metadata.ownerReferences": "uid"}
SMP_KEYS = {  # (group, plural) -> {field path: merge key (None: a primitive list)}
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): {"webhooks": "name"},
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): {"webhooks": "name"},
    ("", "nodes"): {"status.conditions": "type", "status.addresses": "type", "spec.podCIDRs": None},
    ("resource.k8s.io", "resourceclaims"): {"status.reservedFor": "uid"},
}


def _smp_strip(v):
    if isinstance(v, dict):
        return {k: _smp_strip(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [_smp_strip(x) for x in v]
    return v


def _smp_list(cur, items, key, keys, path):
    cur = list(cur) if isinstance(cur, list) else []
    if key is None:
        return cur + [x for x in items if x not in cur]
    if not all(isinstance(x, dict) for x in items):
        return _smp_strip(items)
    for item in items:
        at = next((i for i, c in enumerate(cur) if isinstance(c, dict) and c.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del cur[at]
        elif at is None:
            cur.append(_smp_strip(item))
        else:
            cur[at] = strategic_merge_patch(cur[at], item, keys, path)
    return cur


def strategic_merge_patch(target, patch, keys, path=""):
    if not isinstance(patch, dict):
        return _smp_strip(patch)
    if patch.get("$patch") == "replace":
        return _smp_strip(patch)
    out = jcopy(target) if isinstance(target, dict) else {}
    orders = {}
    for k, v in patch.items():
        p = path + "." + k if path else k
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
        elif k.startswith("$deleteFromPrimitiveList/"):
            f = k.split("/", 1)[1]
            if isinstance(out.get(f), list) and isinstance(v, list):
                out[f] = [x for x in out[f] if x not in v]
        elif k.startswith("$"):
            continue
        elif v is None:
            out.pop(k, None)
        elif isinstance(v, list) and p in keys:
            out[k] = _smp_list(out.get(k), v, keys[p], keys, p)
        elif isinstance(v, dict):
            out[k] = strategic_merge_patch(out.get(k), v, keys, p)
        else:
            out[k] = _smp_strip(v)
    for f, order in orders.items():
        p, cur = path + "." + f if path else f, out.get(f)
        if p not in keys or not isinstance(cur, list) or not isinstance(order, list):
            continue
        key = keys[p]
        ident = (lambda x: x) if key is None else (lambda x: x.get(key) if isinstance(x, dict) else x)
        want = [ident(x) for x in order]
        out[f] = sorted(cur, key=lambda x: (want.index(ident(x)) if ident(x) in want else len(want)))
    if isinstance(patch.get("$retainKeys"), list):
        out = {k: v for k, v in out.items() if k in patch["$retainKeys"]}
    return out


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


def _split_terms(text):
    """fields.splitTerms: split at the commas a backslash does not escape (escapes kept)."""
    terms, cur, esc = [], "", False
    for ch in text:
        if esc:
            cur, esc = cur + ch, False
        elif ch == "\\":
            cur, esc = cur + ch, True
        elif ch == ",":
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return terms


def _unescape_field_value(v):
    r"""fields.UnescapeValue: \\, \, and \= are escapes; a bare , or = and any other escape are errors."""
    out, esc = "", False
    for ch in v:
        if esc:
            if ch not in "\\,=":
                raise bad_request("invalid field selector: invalid escape sequence: \\%s" % ch)
            out, esc = out + ch, False
        elif ch == "\\":
            esc = True
        elif ch in ",=":
            raise bad_request("invalid field selector: unescaped character %s" % json.dumps(ch))
        else:
            out += ch
    if esc:
        raise bad_request("invalid field selector: invalid escape sequence: \\")
    return out


def field_labels(res):
    """({field label a client may select on: the field it names in the stored object's field set},
    the message for another label): the scheme's field label conversion for the request's
    group-version (FIELD_LABELS; metadata.name and metadata.namespace for the kinds it lacks)."""
    default = ({"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace"},
               "field label not supported: %s")
    return FIELD_LABELS.get((res.group, res.plural), default) if res is not None else default


def parse_field_selector(text, res=None):
    """fields.ParseSelector, then the field label conversion of `res`: [(stored field, op, value)]."""
    (labels, unsupported), reqs = field_labels(res), []
    for p in _split_terms(text) if text else []:
        if not p.strip():
            continue
        m = re.match(r"(.*?)(!=|==|=)(.*)\Z", p, re.S)
        if not m:
            raise bad_request("invalid selector: '%s'; can't understand '%s'" % (text, p))
        label, value = m.group(1).strip(), _unescape_field_value(m.group(3))
        if label not in labels:
            raise bad_request(unsupported % label)
        reqs.append((labels[label], "!=" if m.group(2) == "!=" else "=", value))
    return reqs


def selectable_fields(obj):
    """The field set a stored object offers to field selectors (the registry's GetAttrs: metadata,
    and the SELECTABLE_FIELDS of its kind)."""
    meta = obj.get("metadata", {})
    fields = {"metadata.name": meta.get("name", "") or "", "metadata.namespace": meta.get("namespace", "") or ""}
    extra = SELECTABLE_FIELDS.get((obj.get("apiVersion"), obj.get("kind")))
    if extra:
        fields.update(extra(obj))
    return fields


def fields_match(reqs, obj):
    if not reqs:
        return True
    have = selectable_fields(obj)
    for field, op, val in reqs:
        if (op == "=") != (have.get(field, "") == val):
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
# Events: one storage, two views. As in kube-apiserver (events.k8s.io events cohabit with core
# events in etcd), an Event is stored once, in its core/v1 form; events.k8s.io/v1 is a view of the
# same object converted field by field, as k8s.io/kubernetes pkg/apis/events/v1/conversion.go does
# (Convert_v1_Event_To_core_Event / Convert_core_Event_To_v1_Event): regarding<->involvedObject,
# note<->message, reportingController<->reportingComponent, deprecatedSource<->source,
# deprecatedFirstTimestamp/deprecatedLastTimestamp/deprecatedCount<->firstTimestamp/lastTimestamp/
# count; eventTime, series {count, lastObservedTime}, related, reportingInstance, action, reason
# and type keep their names. Nothing else moves (source.component is not filled from
# reportingController: only the `source` field selector and the printers fall back on it).
# Bodies are decoded as the Go types decode them (unknown fields dropped, types checked, times
# parsed: a MicroTime needs exactly six fractional digits) and every answer is marshalled as Go
# marshals the type (`"eventTime": null`, `"reportingComponent": ""`, `"deprecatedSource": {}`...).

EVENTS_SKEY = ("", "events")
EVENTS_GROUP = "events.k8s.io"
EVENTS_V1_TO_CORE = {"regarding": "involvedObject", "note": "message", "reportingController": "reportingComponent",
                     "deprecatedSource": "source", "deprecatedFirstTimestamp": "firstTimestamp",
                     "deprecatedLastTimestamp": "lastTimestamp", "deprecatedCount": "count"}
# The Go type of each field, by its core/v1 name ("ref*": a pointer, nil when absent).
_EV_TYPES = {"involvedObject": "ref", "reason": "string", "message": "string", "source": "source",
             "firstTimestamp": "time", "lastTimestamp": "time", "count": "int32", "type": "string",
             "eventTime": "microtime", "series": "series", "action": "string", "related": "ref*",
             "reportingComponent": "string", "reportingInstance": "string"}
_EV_ZERO = {"ref": {}, "source": {}, "string": "", "int32": 0, "time": None, "microtime": None, "series": None,
            "ref*": None}
# Each view's fields in Go struct order: (JSON name, marshalled even when zero: no omitempty, or a struct).
_EV_CORE_OUT = [("involvedObject", True), ("reason", False), ("message", False), ("source", True),
                ("firstTimestamp", True), ("lastTimestamp", True), ("count", False), ("type", False),
                ("eventTime", True), ("series", False), ("action", False), ("related", False),
                ("reportingComponent", True), ("reportingInstance", True)]
_EV_V1_OUT = [("eventTime", True), ("series", False), ("reportingController", False), ("reportingInstance", False),
              ("action", False), ("reason", False), ("regarding", True), ("related", False), ("note", False),
              ("type", False), ("deprecatedSource", True), ("deprecatedFirstTimestamp", True),
              ("deprecatedLastTimestamp", True), ("deprecatedCount", False)]
_REF_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_SOURCE_FIELDS = ("component", "host")
_INVOLVED = _REF_FIELDS
# Field selectors: core/v1 AddFieldLabelConversionsForEvent (labels as they are) and events/v1's
# mapping onto the same field set (pkg/registry/core/event/strategy.go ToSelectableFields).
CORE_EVENT_FIELD_LABELS = {f: f for f in ["involvedObject." + x for x in _INVOLVED] + [
    "reason", "reportingComponent", "source", "type", "metadata.namespace", "metadata.name"]}
EVENTS_V1_FIELD_LABELS = dict({"regarding." + x: "involvedObject." + x for x in _INVOLVED}, **{
    "reason": "reason", "reportingController": "reportingComponent", "source": "source", "type": "type",
    "metadata.namespace": "metadata.namespace", "metadata.name": "metadata.name"})

_GO_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _json_kind(v):
    return ("null" if v is None else "bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float))
            else "string" if isinstance(v, str) else "array" if isinstance(v, list) else "object")


class _EvDecodeError(Exception):
    pass


def go_time(v, micro):
    """metav1.Time / MicroTime: parsed as their UnmarshalJSON parses (RFC 3339; MicroTime's layout
    wants exactly six fractional digits), written as MarshalJSON writes (UTC, to the second or the
    microsecond). None is the zero time, marshalled as null."""
    layout = "2006-01-02T15:04:05.000000Z07:00" if micro else "2006-01-02T15:04:05Z07:00"
    if v is None:
        return None
    if not isinstance(v, str):
        raise _EvDecodeError("json: cannot unmarshal %s into Go value of type string" % _json_kind(v))
    m = _GO_TIME.fullmatch(v)
    frac = m.group(7) if m else None
    if not m or (micro and (frac is None or len(frac) != 7)):
        head = re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", v)
        rest, elem = (v[19:], ".000000" if micro else "Z07:00") if head else (v, layout)
        raise _EvDecodeError('parsing time "%s" as "%s": cannot parse "%s" as "%s"' % (v, layout, rest, elem))
    off = m.group(8)
    tz = datetime.timezone.utc if off == "Z" else datetime.timezone(
        (1 if off[0] == "+" else -1) * datetime.timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
    try:
        t = datetime.datetime(*[int(x) for x in m.groups()[:6]], int((frac or ".0")[1:7].ljust(6, "0")), tzinfo=tz)
        t = t.astimezone(datetime.timezone.utc)
    except (ValueError, OverflowError) as e:
        raise _EvDecodeError('parsing time "%s": %s' % (v, e))
    if t.replace(tzinfo=None) == datetime.datetime(1, 1, 1):
        return None  # the zero time
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _go_since(ts):
    """printers' translate(Micro)TimestampSince: HumanDuration since a marshalled time, or <unknown>."""
    m = _GO_TIME.fullmatch(ts) if isinstance(ts, str) else None
    if not m:
        return "<unknown>"
    t = datetime.datetime(*[int(x) for x in m.groups()[:6]], tzinfo=datetime.timezone.utc).timestamp()
    return human_duration(time.time() - t)


def _ev_struct(v, fields, path, unknown, gotype):
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _EvDecodeError("json: cannot unmarshal %s into Go struct field Event.%s of type %s"
                             % (_json_kind(v), path, gotype))
    out = {}
    for k, x in v.items():
        if k not in fields:
            unknown.append("%s.%s" % (path, k))
        elif x is not None and not isinstance(x, str):
            raise _EvDecodeError("json: cannot unmarshal %s into Go struct field %s.%s of type string"
                                 % (_json_kind(x), gotype.split(".")[-1], k))
    for k in fields:  # Go struct order, empty strings omitted
        if isinstance(v.get(k), str) and v[k]:
            out[k] = v[k]
    return out


def _ev_field(typ, v, path, unknown):
    if typ == "string":
        if v is not None and not isinstance(v, str):
            raise _EvDecodeError("json: cannot unmarshal %s into Go struct field Event.%s of type string"
                                 % (_json_kind(v), path))
        return v or ""
    if typ == "int32":
        if v is None:
            return 0
        if isinstance(v, bool) or not isinstance(v, int) or not -2 ** 31 <= v < 2 ** 31:
            raise _EvDecodeError("json: cannot unmarshal %s into Go struct field Event.%s of type int32"
                                 % ("number " + json.dumps(v) if isinstance(v, (int, float)) and
                                    not isinstance(v, bool) else _json_kind(v), path))
        return v
    if typ in ("time", "microtime"):
        return go_time(v, typ == "microtime")
    if typ == "ref" or (typ == "ref*" and v is not None):
        return _ev_struct(v, _REF_FIELDS, path, unknown, "v1.ObjectReference")
    if typ == "source":
        return _ev_struct(v, _SOURCE_FIELDS, path, unknown, "v1.EventSource")
    if typ == "series" and v is not None:
        if not isinstance(v, dict):
            raise _EvDecodeError("json: cannot unmarshal %s into Go struct field Event.%s of type v1.EventSeries"
                                 % (_json_kind(v), path))
        unknown.extend("%s.%s" % (path, k) for k in v if k not in ("count", "lastObservedTime"))
        return {"count": _ev_field("int32", v.get("count"), path + ".count", unknown),
                "lastObservedTime": go_time(v.get("lastObservedTime"), True)}
    return None


def ev_decode(body, group):
    """An Event in `group`'s JSON shape -> (internal form {core/v1 name: value}, unknown fields).
    Raises _EvDecodeError where the Go decoder fails."""
    out_fields = _EV_V1_OUT if group == EVENTS_GROUP else _EV_CORE_OUT
    known = {n for n, _ in out_fields}
    internal, unknown = {}, []
    for k, v in body.items():
        if k in ("apiVersion", "kind", "metadata"):
            continue
        if k not in known:
            unknown.append(k)
            continue
        core = EVENTS_V1_TO_CORE.get(k, k) if group == EVENTS_GROUP else k
        internal[core] = _ev_field(_EV_TYPES[core], v, k, unknown)
    return internal, unknown


def ev_encode(internal, meta, group):
    """The internal form marshalled as `group`'s Go type (field order, omitempty, null times)."""
    v1 = group == EVENTS_GROUP
    o = {"kind": "Event", "apiVersion": "events.k8s.io/v1" if v1 else "v1", "metadata": meta}
    for name, always in _EV_V1_OUT if v1 else _EV_CORE_OUT:
        core = EVENTS_V1_TO_CORE.get(name, name) if v1 else name
        typ = _EV_TYPES[core]
        v = internal.get(core, _EV_ZERO[typ])
        if typ == "series":
            if v is not None:  # core/v1 EventSeries.count is omitempty, events/v1's is not
                o[name] = dict({"count": v["count"]} if v1 or v["count"] else {},
                               lastObservedTime=v["lastObservedTime"])
        elif typ == "ref*":
            if v is not None:
                o[name] = dict(v)
        elif typ in ("ref", "source"):
            o[name] = dict(v)
        elif always or v not in ("", 0):
            o[name] = v
    return o


def event_internal(obj):
    """The internal form of a (valid) Event in either shape, told apart by its apiVersion."""
    return ev_decode(obj, EVENTS_GROUP if obj.get("apiVersion") == EVENTS_GROUP + "/v1" else "")[0]


def event_view(obj, group):
    """An Event (either shape) as `group` shows it: "" for core/v1, events.k8s.io."""
    return ev_encode(event_internal(obj), jcopy(obj.get("metadata") or {}), group)


def event_selectable_fields(ev):
    """ToSelectableFields on a stored (core/v1) Event; `source` falls back on reportingComponent."""
    io, src = ev.get("involvedObject") or {}, ev.get("source") or {}
    fields = {"involvedObject." + k: io.get(k, "") for k in _INVOLVED}
    fields.update({"reason": ev.get("reason", ""), "reportingComponent": ev.get("reportingComponent", ""),
                   "source": src.get("component") or ev.get("reportingComponent", ""), "type": ev.get("type", "")})
    return fields


def _qualified_name_errors(v):
    """k8s.io/apimachinery validation.IsQualifiedName."""
    fmt = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
    msg = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
           "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '%s')" % fmt)
    parts, errs = v.split("/"), []
    if len(parts) > 2:
        return ["a qualified name " + msg + " with an optional DNS subdomain prefix and '/' (e.g. "
                "'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        if not parts[0]:
            errs.append("prefix part must be non-empty")
        elif not DNS1123_SUB.fullmatch(parts[0]) or len(parts[0]) > 253:
            errs.append("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                        "characters, '-' or '.', and must start and end with an alphanumeric character")
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not re.fullmatch(fmt, name):
        errs.append("name part " + msg)
    return errs


def validate_event(res, ev, old):
    """pkg/apis/core/validation/events.go on the stored form: ValidateEventCreate (old None) or
    ValidateEventUpdate; the strict part only for requests through events.k8s.io/v1. Returns the
    causes [(field, reason, message)]."""
    c = []

    def inv(f, v, msg):
        c.append((f, "FieldValueInvalid", "Invalid value: %s: %s" % (_go_value(v), msg)))

    def req(f):
        c.append((f, "FieldValueRequired", "Required value"))
    ns = ev["metadata"].get("namespace") or ""
    ion = (ev.get("involvedObject") or {}).get("namespace", "")
    # legacyValidateEvent
    if ev.get("eventTime") is None:
        if (not ion and ns not in ("", "default")) or (ion and ns != ion):
            inv("involvedObject.namespace", ion, "does not match event.namespace")
    else:
        if not ion and ns not in ("default", "kube-system"):
            inv("involvedObject.namespace", ion, "does not match event.namespace")
        rc = ev.get("reportingComponent", "")
        if not rc:
            req("reportingController")
        for m in _qualified_name_errors(rc):
            inv("reportingController", rc, m)
        for f, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
            if not ev.get(f):
                req(f)
            if len(ev.get(f, "").encode()) > limit:  # Go's len: bytes
                inv(f, "", "can have at most %d characters" % limit)
        if len(ev.get("message", "").encode()) > 1024:
            inv("message", "", "can have at most 1024 characters")
    if res.group != EVENTS_GROUP:
        return c  # core/v1 (and events.k8s.io/v1beta1): no further validation, for compatibility

    def series():
        s = ev.get("series")
        if s is not None:
            if s["count"] < 2:
                inv("series.count", "", "should be at least 2")
            if s["lastObservedTime"] is None:
                req("series.lastObservedTime")
    if old is None:
        series()
        if ev.get("eventTime") is None:
            req("eventTime")
        if ev.get("type", "") not in ("Normal", "Warning"):
            inv("type", "", "has invalid value: %s" % ev.get("type", ""))
        for f in ("firstTimestamp", "lastTimestamp"):
            if ev.get(f) is not None:
                inv(f, "", "needs to be unset")
        if ev.get("count"):
            inv("count", "", "needs to be unset")
        if ev.get("source"):
            inv("source", "", "needs to be unset")
    else:
        if ev.get("series") != old.get("series"):
            series()
        for f in ("involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count",
                  "type", "eventTime", "action", "related", "reportingComponent", "reportingInstance"):
            if ev.get(f) != old.get(f):
                inv("reportingController" if f == "reportingComponent" else f, ev.get(f), "field is immutable")
    return c


def _ev_row(o):
    """printEvent (pkg/printers/internalversion), wide as the server builds it: Last Seen, Type,
    Reason, Object, Subobject, Source, Message, First Seen, Count, Name."""
    e = event_view(o, "") if o.get("apiVersion") == EVENTS_GROUP + "/v1" else o
    first = _go_since(e.get("firstTimestamp")) if e.get("firstTimestamp") else _go_since(e.get("eventTime"))
    last = _go_since(e.get("lastTimestamp")) if e.get("lastTimestamp") else first
    count = e.get("count", 0)
    if e.get("series") is not None:
        last, count = _go_since(e["series"].get("lastObservedTime")), e["series"].get("count", 0)
    elif count == 0:
        count = 1  # singleton events have no count in the new API
    io, src = e.get("involvedObject") or {}, e.get("source") or {}
    kind = io.get("kind", "").lower()
    component = src.get("component") or e.get("reportingComponent", "")
    instance = src.get("host") or e.get("reportingInstance", "")
    return [last, e.get("type", ""), e.get("reason", ""), "%s/%s" % (kind, io["name"]) if io.get("name") else kind,
            io.get("fieldPath", ""), component + (", " + instance if instance else ""),
            e.get("message", "").strip(), first, count, e["metadata"]["name"]]


def _ev_column(i, name, desc, priority=0, fmt=""):
    return Column(name, "string", lambda o: _ev_row(o)[i], fmt, desc, priority)


EVENT_COLUMNS = [
    _ev_column(0, "Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    _ev_column(1, "Type", "Type of this event (Normal, Warning), new types could be added in the future"),
    _ev_column(2, "Reason", "This should be a short, machine understandable string that gives the reason for the "
               "transition into the object's current status."),
    _ev_column(3, "Object", "The object that this event is about."),
    _ev_column(4, "Subobject", "If referring to a piece of an object instead of an entire object, this string "
               "should contain a valid JSON/Go field access statement.", 1),
    _ev_column(5, "Source", "The component reporting this event. Should be a short machine understandable "
               "string.", 1),
    _ev_column(6, "Message", "A human-readable description of the status of this operation."),
    _ev_column(7, "First Seen", "The time at which the event was first recorded. (Time of server receipt is in "
               "TypeMeta.)", 1),
    _ev_column(8, "Count", "The number of times this event has occurred.", 1),
    _ev_column(9, "Name", "Name must be unique within a namespace.", 1, "name")]


# ----------------------------------------------------------------------------------------------
# resource.k8s.io/v1 (Dynamic Resource Allocation), built in as kube-apiserver 1.34+ serves it:
# ResourceSlice and DeviceClass (cluster-scoped; metadata.generation counts spec changes),
# ResourceClaim (status subresource) and ResourceClaimTemplate. A write is
#  1. decoded against the published OpenAPI v3 schemas (openapi/apis__resource.k8s.io__v1_openapi.json,
#     its README says whence) as the Go types decode JSON: a wrongly typed value is 400 ("json: cannot
#     unmarshal ..."), a null field keeps its zero value, times are re-marshalled in UTC. An unknown
#     field is 400 with fieldValidation=Strict (kubectl's default), a Warning with Warn, dropped with
#     Ignore, and -- stricter than kube-apiserver, which drops it with a warning -- 422 naming its path
#     when the request says nothing (a driver's misspelt field must not pass its tests);
#  2. defaulted (pkg/apis/resource/v1/defaults.go: allocationMode ExactCount and count 1, a taint's
#     timeAdded; the schema's operator "Equal") and completed as Go marshals the types: non-pointer
#     structs (a claim's "status": {}) and non-omitempty fields (spec.pool.generation) are always
#     there. The schema's "default" tells which: {} (a struct), or any default of a required field;
#     a required field without one is "Required value";
#  3. validated as pkg/apis/resource/validation/validation.go does (422 Invalid, its field paths and
#     messages): names (DNS labels and subdomains, C identifiers, qualified names), the size limits
#     (128 devices, 64 with taints or counters; 32 attributes and capacities; 64-byte strings...),
#     the unions (exactly one of nodeName/nodeSelector/allNodes/perDeviceNodeSelection, one value per
#     attribute, exactly or firstAvailable), references to requests, immutable fields and the status
#     rules (results name a request of the claim, status.devices name allocated devices, an
#     allocation is immutable, reservedFor needs one).
# Not checked: CEL expressions (only present and at most 10Ki), quantity arithmetic (request policy
# ranges) and canonical form (stored as sent), the admin-access namespace label, feature gates (all
# that the schema has is on).

RESOURCE_GROUP = "resource.k8s.io"
RESOURCE_OPENAPI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi",
                                "apis__resource.k8s.io__v1_openapi.json")
_SCHEMA_REF = "#/components/schemas/"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_META_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
_RAW_JSON = ("io.k8s.apimachinery.pkg.runtime.RawExtension", "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1")
_QUANTITY_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?")


class _GoDecodeError(Exception):
    pass


class ResourceSchemas:
    """The published schemas of resource.k8s.io/v1 and the Go JSON semantics behind them."""

    def __init__(self, path=RESOURCE_OPENAPI):
        with open(path, encoding="utf-8") as f:
            self.doc = json.load(f)
        self.schemas = self.doc["components"]["schemas"]

    def deref(self, s):
        """(component name or None, schema) behind $ref and one-element allOf."""
        name = None
        while isinstance(s, dict):
            if "$ref" in s:
                name = s["$ref"][len(_SCHEMA_REF):]
                s = self.schemas[name]
            elif len(s.get("allOf") or []) == 1:
                s = s["allOf"][0]
            else:
                break
        return name, s if isinstance(s, dict) else {}

    def go_type(self, s):
        name, r = self.deref(s)
        if name:
            short = name.rsplit(".", 1)[1]
            return "resource.Quantity" if name == _QUANTITY else ("runtime." if ".runtime." in name else "v1.") + short
        t = r.get("type")
        if t == "array":
            return "[]" + self.go_type(r.get("items") or {})
        if t == "object" and isinstance(r.get("additionalProperties"), dict):
            return "map[string]" + self.go_type(r["additionalProperties"])
        if t == "integer":
            return r.get("format", "int64")
        return {"string": "string", "boolean": "bool", "number": "float64"}.get(t, "interface {}")

    def zero(self, schema):
        """What Go leaves in a list item or map value sent as null."""
        if "default" in schema:
            return jcopy(schema["default"])
        name, s = self.deref(schema)
        if name == _QUANTITY:
            return "0"
        return {"string": "", "integer": 0, "boolean": False, "object": {}}.get(s.get("type"))

    def decode(self, schema, v, fpath, gpath, struct, unknown):
        """`v` as the Go type behind `schema` decodes it (sigs.k8s.io/json: case-sensitive names):
        the value to store. Unknown fields go to `unknown` (paths with indices, as the strict decoder
        names them); a type mismatch raises _GoDecodeError. gpath: Go's dotted path of the field,
        struct: the Go struct holding it (both for the error text)."""
        name, s = self.deref(schema)

        def mismatch(what=None):
            raise _GoDecodeError("json: cannot unmarshal %s into Go struct field %s.%s of type %s"
                                 % (what or _json_kind(v), struct, gpath, self.go_type(schema)))
        if name == _QUANTITY:
            text = v if isinstance(v, str) else json.dumps(v) if _type_ok("number", v) else None
            if text is None or not _QUANTITY_RE.fullmatch(text.strip()):
                raise _GoDecodeError("quantities must match the regular expression "
                                     "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
            return v
        if name == _META_TIME:
            try:
                return go_time(v, False)
            except _EvDecodeError as e:
                raise _GoDecodeError(str(e))
        if name in _RAW_JSON:
            return v
        t = s.get("type")
        if t == "string":
            return v if isinstance(v, str) else mismatch()
        if t == "boolean":
            return v if isinstance(v, bool) else mismatch()
        if t == "integer":
            bits = 32 if s.get("format") == "int32" else 64
            if not _type_ok("number", v):
                mismatch()
            if not isinstance(v, int) or not -2 ** (bits - 1) <= v < 2 ** (bits - 1):
                mismatch("number " + json.dumps(v))
            return v
        if t == "array":
            if not isinstance(v, list):
                mismatch()
            items = s.get("items") or {}
            return [self.zero(items) if x is None else
                    self.decode(items, x, "%s[%d]" % (fpath, i), gpath, struct, unknown) for i, x in enumerate(v)]
        if t != "object":
            return v
        if not isinstance(v, dict):
            mismatch()
        props, addl = s.get("properties"), s.get("additionalProperties")
        if props is not None:
            out, inner = {}, name.rsplit(".", 1)[1] if name else struct
            for k, x in v.items():
                p = "%s.%s" % (fpath, k) if fpath else k
                if k not in props:
                    unknown.append(p)
                elif x is not None:  # null leaves the Go field at its zero value
                    out[k] = self.decode(props[k], x, p, "%s.%s" % (gpath, k) if gpath else k, inner, unknown)
            return out
        if isinstance(addl, dict):
            return {k: self.zero(addl) if x is None else self.decode(addl, x, "%s.%s" % (fpath, k), gpath, struct,
                                                                   unknown) for k, x in v.items()}
        return v

    def complete(self, schema, v, fpath, causes):
        """A decoded value as Go marshals it: the properties whose schema has a default of {} (a
        non-pointer struct) or that are required with a default (no omitempty) are present, other
        non-zero defaults applied; a required property without a default is Required."""
        name, s = self.deref(schema)
        if name == _QUANTITY or name == _META_TIME or name in _RAW_JSON:
            return v
        if isinstance(v, dict) and isinstance(s.get("properties"), dict):
            required = set(s.get("required") or [])
            for k, ps in s["properties"].items():
                p = "%s.%s" % (fpath, k) if fpath else k
                if k not in v:
                    if "default" in ps:
                        d = ps["default"]
                        if d == {} or k in required or d not in ("", 0, False):
                            v[k] = jcopy(d)
                    elif k in required:
                        causes.append(_e_required(p))
                if k in v:
                    v[k] = self.complete(ps, v[k], p, causes)
        elif isinstance(v, dict) and isinstance(s.get("additionalProperties"), dict):
            for k in v:
                v[k] = self.complete(s["additionalProperties"], v[k], "%s[%s]" % (fpath, k), causes)
        elif isinstance(v, list) and isinstance(s.get("items"), dict):
            for i, x in enumerate(v):
                v[i] = self.complete(s["items"], x, "%s[%d]" % (fpath, i), causes)
        return v


# -- field errors, as k8s.io/apimachinery/pkg/util/validation/field prints them: (field, reason, message)

class _Verbatim(str):
    """A bad value field.Error prints with %s (a fmt.Stringer, or a Go struct named by its type)."""


def _show(v):
    return str(v) if isinstance(v, _Verbatim) else _go_value(v)


def _e_required(f, detail=""):
    return (f, "FieldValueRequired", "Required value" + (": " + detail if detail else ""))


def _e_invalid(f, v, detail=""):
    return (f, "FieldValueInvalid", "Invalid value: %s%s" % (_show(v), ": " + detail if detail else ""))


def _e_too_long(f, most):
    return (f, "FieldValueTooLong", "Too long: may not be more than %d bytes" % most)


def _e_too_many(f, have, most):
    return (f, "FieldValueTooMany", "Too many: %d: must have at most %d items" % (have, most))


def _e_duplicate(f, v):
    return (f, "FieldValueDuplicate", "Duplicate value: %s" % _show(v))


def _e_not_supported(f, v, allowed):
    return (f, "FieldValueNotSupported", "Unsupported value: %s: supported values: %s"
            % (_show(v), ", ".join(json.dumps(a) for a in allowed)))


def _e_forbidden(f, detail):
    return (f, "FieldValueForbidden", "Forbidden: " + detail)


def _blen(s):
    return len(s.encode("utf-8")) if isinstance(s, str) else 0


def _regex_error(msg, fmt, *examples):
    """validation.RegexError."""
    if examples:
        msg += " (e.g. " + " or ".join("'%s', " % e for e in examples) + "regex used for validation is '%s')" % fmt
        return msg
    return msg + " (regex used for validation is '%s')" % fmt


_DNS_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_MSG = _regex_error("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                              "'-', and must start and end with an alphanumeric character", _DNS_LABEL_FMT,
                              "my-name", "123-abc")
_DNS_SUB_MSG = _regex_error("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
                            "or '.', and must start and end with an alphanumeric character",
                            _DNS_LABEL_FMT + "(\\." + _DNS_LABEL_FMT + ")*", "example.com")
_C_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_C_ID_MSG = _regex_error("a valid C identifier must start with alphabetic character or '_', followed by a string of "
                         "alphanumeric characters or '_'", "[A-Za-z_][A-Za-z0-9_]*", "my_name", "MY_NAME", "MyName")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_VALUE_MSG = _regex_error("a valid label must be an empty string or consist of alphanumeric characters, '-', "
                                "'_' or '.', and must start and end with an alphanumeric character",
                                "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", "MyValue", "my_value", "12345")
_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")
_REASON_MSG = _regex_error("a condition reason must start with alphabetic character, optionally followed by a string "
                           "of alphanumeric characters or '_,:', and must end with an alphanumeric character or '_'",
                           "[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?", "my_name", "MY_NAME", "MyName",
                           "ReasonA,ReasonB", "ReasonA:ReasonB")
_SEMVER_ID = r"(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
_SEMVER = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-%s(\.%s)*)?"
                     r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?" % (_SEMVER_ID, _SEMVER_ID))
_TAINT_EFFECTS = ["NoExecute", "NoSchedule", "None"]


def _dns_label_errors(v):
    errs = ["must be no more than 63 characters"] if len(v) > 63 else []
    if not DNS1123_LABEL.fullmatch(v):
        errs.append("must not contain dots" if DNS1123_SUB.fullmatch(v) else _DNS_LABEL_MSG)
    return errs


def _dns_subdomain_errors(v):
    errs = ["must be no more than 253 characters"] if len(v) > 253 else []
    if not DNS1123_SUB.fullmatch(v):
        errs.append(_DNS_SUB_MSG)
    return errs


def _v_dns_label(v, f):
    return [_e_invalid(f, v, m) for m in _dns_label_errors(v)]


def _v_dns_subdomain(v, f):
    return [_e_invalid(f, v, m) for m in _dns_subdomain_errors(v)]


def _v_driver_name(v, f):
    """corevalidation.ValidateCSIDriverName: a DNS subdomain once lowercased, at most 63 bytes."""
    errs = [_e_required(f)] if not v else []
    if _blen(v) > 63:
        errs.append(_e_too_long(f, 63))
    return errs + [_e_invalid(f, v, m) for m in _dns_subdomain_errors(v.lower())]


def _v_pool_name(v, f):
    if not v:
        return [_e_required(f)]
    errs = [_e_too_long(f, 253)] if _blen(v) > 253 else []
    for part in v.split("/"):
        errs += _v_dns_subdomain(part, f)
    return errs


def _v_c_identifier(v, f):
    errs = [_e_too_long(f, 32)] if _blen(v) > 32 else []
    return errs + ([] if _C_ID.fullmatch(v) else [_e_invalid(f, v, _C_ID_MSG)])


def _v_qualified_name(name, f):
    """An attribute's or a capacity's name: a C identifier (<= 32), after an optional "<domain>/"."""
    parts = name.split("/")
    if len(parts) == 1:
        return _v_c_identifier(name, f)
    if len(parts) > 2:
        return [_e_invalid(f, name, "must not contain more than one slash")]
    errs = _v_driver_name(parts[0], f) if parts[0] else [_e_invalid(f, "", "the domain must not be empty")]
    return errs + (_v_c_identifier(parts[1], f) if parts[1] else [_e_invalid(f, "", "the name must not be empty")])


def _v_fully_qualified_name(name, f):
    errs = _v_qualified_name(name, f)
    if "/" not in name:
        errs.append(_e_invalid(f, name, "a fully qualified name must be a domain and a name separated by a slash"))
    return errs


def _v_label_name(v, f):
    return [_e_invalid(f, v, m) for m in _qualified_name_errors(v)]


def _v_label_value(v, f):
    errs = [_e_invalid(f, v, "must be no more than 63 characters")] if len(v) > 63 else []
    return errs + ([] if _LABEL_VALUE.fullmatch(v) else [_e_invalid(f, v, _LABEL_VALUE_MSG)])


def _v_uid(v, f):
    if len(v) not in (32, 36, 38, 41):
        return [_e_invalid(f, v, "error validating uid: invalid UUID length: %d" % len(v))]
    try:
        uuid.UUID(v)
    except ValueError:
        return [_e_invalid(f, v, "error validating uid: invalid UUID format")]
    if len(v) != 36 or v != v.lower():
        return [_e_invalid(f, v, "uid must be in RFC 4122 normalized form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` "
                                 "with lowercase hexadecimal characters")]
    return []


def _truncate_key(k, most):
    most = max(most, 16)
    if len(k) <= most:
        return k
    rest = most - 3
    return k[:(rest + 1) // 2] + "..." + k[len(k) - rest // 2:]


def _v_set(items, most, check, key, f):
    """validateSet (validateSlice when key is None): more than `most` items is one Too many error;
    else each item's errors, then the duplicates of key(item)."""
    items = items or []
    if 0 <= most < len(items):
        return [_e_too_many(f, len(items), most)]
    errs, seen = [], set()
    for i, it in enumerate(items):
        errs += check(it, "%s[%d]" % (f, i))
    for i, it in enumerate(items if key else []):
        k = key(it)
        if json.dumps(k, sort_keys=True) in seen:
            errs.append(_e_duplicate("%s[%d]" % (f, i), k))
        seen.add(json.dumps(k, sort_keys=True))
    return errs


def _v_map(m, most, trunc, check_key, check_item, f):
    """validateMap: keys are checked at the map's path, items at map[key]."""
    m = m or {}
    if 0 <= most < len(m):
        return [_e_too_many(f, len(m), most)]
    errs = []
    for k in sorted(m):
        errs += check_key(k, f) + check_item(m[k], "%s[%s]" % (f, _truncate_key(k, trunc)))
    return errs


def _v_node_selector(ns, f):
    """corevalidation.ValidateNodeSelector (empty terms allowed)."""
    terms = ns.get("nodeSelectorTerms") or []
    if not terms:
        return [_e_required(f + ".nodeSelectorTerms", "must have at least one node selector term")]
    errs = []
    for i, t in enumerate(terms):
        tf = "%s.nodeSelectorTerms[%d]" % (f, i)
        for j, r in enumerate(t.get("matchExpressions") or []):
            rf, op, vals = "%s.matchExpressions[%d]" % (tf, j), r.get("operator", ""), r.get("values") or []
            if op in ("In", "NotIn") and not vals:
                errs.append(_e_required(rf + ".values", "must be specified when `operator` is 'In' or 'NotIn'"))
            elif op in ("Exists", "DoesNotExist") and vals:
                errs.append(_e_forbidden(rf + ".values", "may not be specified when `operator` is 'Exists' or "
                                                         "'DoesNotExist'"))
            elif op in ("Gt", "Lt") and len(vals) != 1:
                errs.append(_e_required(rf + ".values", "must be specified single value when `operator` is 'Lt' "
                                                        "or 'Gt'"))
            elif op not in ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"):
                errs.append(_e_invalid(rf + ".operator", op, "not a valid selector operator"))
            errs += _v_label_name(r.get("key", ""), rf + ".key")
        for j, r in enumerate(t.get("matchFields") or []):
            rf, op, vals = "%s.matchFields[%d]" % (tf, j), r.get("operator", ""), r.get("values") or []
            if op in ("In", "NotIn") and len(vals) != 1:
                errs.append(_e_required(rf + ".values", "must be only one value when `operator` is 'In' or 'NotIn' "
                                                        "for node field selector"))
            elif op not in ("In", "NotIn"):
                errs.append(_e_invalid(rf + ".operator", op, "not a valid selector operator"))
            if r.get("key", "") != "metadata.name":
                errs.append(_e_not_supported(rf + ".key", r.get("key", ""), ["metadata.name"]))
    return errs


def _v_raw_extension(v, f, most):
    if v is None:
        return [_e_required(f)]
    if _blen(json.dumps(v, separators=(",", ":"))) > most:
        return [_e_too_long(f, most)]
    return [] if isinstance(v, dict) else [_e_invalid(f, "<value omitted>", "must be a valid JSON object")]


def _v_conditions(conds, f):
    """metav1validation.ValidateConditions."""
    errs, seen = [], set()
    for i, c in enumerate(conds or []):
        cf, typ = "%s[%d]" % (f, i), c.get("type", "")
        if typ in seen:
            errs.append(_e_duplicate(cf + ".type", typ))
        seen.add(typ)
        errs += _v_label_name(typ, cf + ".type")
        if c.get("status", "") not in ("True", "False", "Unknown"):
            errs.append(_e_not_supported(cf + ".status", c.get("status", ""), ["False", "True", "Unknown"]))
        if c.get("observedGeneration", 0) < 0:
            errs.append(_e_invalid(cf + ".observedGeneration", c["observedGeneration"],
                                   "must be greater than or equal to zero"))
        if not c.get("lastTransitionTime"):
            errs.append(_e_required(cf + ".lastTransitionTime", "must be set"))
        reason = c.get("reason", "")
        if not reason:
            errs.append(_e_required(cf + ".reason", "must be set"))
        else:
            if not _REASON.fullmatch(reason):
                errs.append(_e_invalid(cf + ".reason", reason, _REASON_MSG))
            if _blen(reason) > 1024:
                errs.append(_e_too_long(cf + ".reason", 1024))
        if _blen(c.get("message", "")) > 32768:
            errs.append(_e_too_long(cf + ".message", 32768))
    return errs


# -- ResourceSlice

def _v_device_attribute(a, f):
    errs = []
    if "string" in a and _blen(a["string"]) > 64:
        errs.append(_e_too_long(f + ".string", 64))
    if "version" in a:
        if not _SEMVER.fullmatch(a["version"]):
            errs.append(_e_invalid(f + ".version", a["version"],
                                   "must be a string compatible with semver.org spec 2.0.0"))
        if _blen(a["version"]) > 64:
            errs.append(_e_too_long(f + ".version", 64))
    n = sum(1 for k in ("bool", "int", "string", "version") if k in a)
    if n != 1:
        errs.append(_e_invalid(f, "" if n == 0 else a, "exactly one value must be specified"))
    return errs


def _v_device_capacity(c, f, multi):
    p = c.get("requestPolicy")
    if p is None:
        return []
    if not multi:
        return [_e_forbidden(f + ".requestPolicy", "allowMultipleAllocations must be true")]
    if p.get("validValues") and p.get("validRange") is not None:
        return [_e_forbidden(f + ".requestPolicy", 'exactly one policy can be specified, cannot specify "validValues" '
                                                   'and "validRange" at the same time')]
    for k in ("validValues", "validRange"):
        if p.get(k) and p.get("default") is None:
            return [_e_required(f + ".requestPolicy.default", "required when %s is defined" % k)]
    return []


def _v_device_taint(t, f):
    errs = _v_label_name(t.get("key", ""), f + ".key")
    if t.get("value"):
        errs += _v_label_value(t["value"], f + ".value")
    effect = t.get("effect", "")
    if not effect:
        errs.append(_e_required(f + ".effect"))
    elif effect not in _TAINT_EFFECTS:
        errs.append(_e_not_supported(f + ".effect", effect, _TAINT_EFFECTS))
    return errs


def _v_counters(counters, f):
    if not counters:
        return [_e_required(f)]
    return _v_map(counters, 32, 63, _v_dns_label, lambda _c, _f: [], f)


def _v_counter_consumption(c, f):
    cs = c.get("counterSet", "")
    errs = _v_dns_label(cs, f + ".counterSet") if cs else [_e_required(f + ".counterSet")]
    return errs + _v_counters(c.get("counters"), f + ".counters")


def _v_counter_set(c, f):
    name = c.get("name", "")
    errs = _v_dns_label(name, f + ".name") if name else [_e_required(f + ".name")]
    return errs + _v_counters(c.get("counters"), f + ".counters")


def _v_binding_conditions(conds, fails, f):
    conds, fails = conds or [], fails or []
    errs = _v_set(conds, 4, _v_label_name, None, f + ".bindingConditions")
    errs += _v_set(fails, 4, _v_label_name, None, f + ".bindingFailureConditions")
    for name, items in (("bindingConditions", conds), ("bindingFailureConditions", fails)):
        seen = set()
        for i, c in enumerate(items):
            if c in seen:
                errs.append(_e_duplicate("%s.%s[%d]" % (f, name, i), c))
            seen.add(c)
            if name == "bindingFailureConditions" and c in conds:
                errs.append(_e_invalid("%s.%s[%d]" % (f, name, i), c,
                                       "bindingFailureConditions must not overlap with bindingConditions"))
    if fails and not conds:
        errs.append(_e_invalid(f + ".bindingConditions", conds, "bindingConditions are required to use "
                                                                "bindingFailureConditions"))
    if conds and not fails:
        errs.append(_e_invalid(f + ".bindingFailureConditions", fails, "bindingFailureConditions are required to "
                                                                       "use bindingConditions"))
    return errs


def _v_device(d, f, per_device):
    errs = _v_dns_label(d.get("name", ""), f + ".name")
    attrs, caps = d.get("attributes") or {}, d.get("capacity") or {}
    if len(attrs) + len(caps) > 32:
        errs.append(_e_invalid(f, len(attrs) + len(caps), "the total number of attributes and capacities must not "
                                                          "exceed 32"))
    errs += _v_map(attrs, -1, 96, _v_qualified_name, _v_device_attribute, f + ".attributes")
    multi = d.get("allowMultipleAllocations") is True
    errs += _v_map(caps, -1, 96, _v_qualified_name, lambda c, cf: _v_device_capacity(c, cf, multi), f + ".capacity")
    errs += _v_set(d.get("taints"), 16, _v_device_taint, None, f + ".taints")
    errs += _v_set(d.get("consumesCounters"), 2, _v_counter_consumption, lambda c: c.get("counterSet", ""),
                   f + ".consumesCounters")
    if per_device:
        chosen = []
        if "nodeName" in d:
            if d["nodeName"]:
                chosen.append("`nodeName`")
                errs += _v_dns_subdomain(d["nodeName"], f + ".nodeName")
            else:
                errs.append(_e_invalid(f + ".nodeName", "", "must not be empty"))
        if "nodeSelector" in d:
            chosen.append("`nodeSelector`")
            errs += _v_node_selector(d["nodeSelector"], f + ".nodeSelector")
        if "allNodes" in d:
            if d["allNodes"]:
                chosen.append("`allNodes`")
            else:
                errs.append(_e_invalid(f + ".allNodes", False, "must be either unset or set to true"))
        msg = ("exactly one of `nodeName`, `nodeSelector`, or `allNodes` is required when `perDeviceNodeSelection` "
               "is set to true in the ResourceSlice spec")
        if not chosen:
            errs.append(_e_required(f, msg))
        elif len(chosen) > 1:
            errs.append(_e_invalid(f, "{%s}" % ", ".join(chosen), msg))
    elif any(k in d for k in ("nodeName", "nodeSelector", "allNodes")):
        errs.append(_e_invalid(f, None, "`nodeName`, `nodeSelector` and `allNodes` can only be set if "
                                        "`perDeviceNodeSelection` is set to true in the ResourceSlice spec"))
    return errs + _v_binding_conditions(d.get("bindingConditions"), d.get("bindingFailureConditions"), f)


def validate_resource_slice(obj, old):
    """ValidateResourceSlice / ValidateResourceSliceUpdate (validateResourceSliceSpec)."""
    spec, f = obj.get("spec") or {}, "spec"
    pool = spec.get("pool") or {}
    errs = _v_driver_name(spec.get("driver", ""), f + ".driver")
    errs += _v_pool_name(pool.get("name", ""), f + ".pool.name")
    if pool.get("resourceSliceCount", 0) <= 0:
        errs.append(_e_invalid(f + ".pool.resourceSliceCount", pool.get("resourceSliceCount", 0),
                               "must be greater than zero"))
    if pool.get("generation", 0) < 0:
        errs.append(_e_invalid(f + ".pool.generation", pool["generation"], "must be greater than or equal to zero"))
    if old is not None:
        ospec = old.get("spec") or {}
        for path, new, was in (("pool.name", pool.get("name", ""), (ospec.get("pool") or {}).get("name", "")),
                               ("driver", spec.get("driver", ""), ospec.get("driver", "")),
                               ("nodeName", spec.get("nodeName"), ospec.get("nodeName"))):
            if new != was:
                errs.append(_e_invalid(f + "." + path, new, "field is immutable"))
    chosen = []
    if "nodeName" in spec:
        if spec["nodeName"]:
            chosen.append("`nodeName`")
            errs += _v_dns_subdomain(spec["nodeName"], f + ".nodeName")
        else:
            errs.append(_e_invalid(f + ".nodeName", "", "must be either unset or set to a non-empty string"))
    if "nodeSelector" in spec:
        chosen.append("`nodeSelector`")
        errs += _v_node_selector(spec["nodeSelector"], f + ".nodeSelector")
        terms = spec["nodeSelector"].get("nodeSelectorTerms") or []
        if len(terms) != 1:
            errs.append(_e_invalid(f + ".nodeSelector.nodeSelectorTerms", terms,
                                   "must have exactly one node selector term"))
    for k in ("allNodes", "perDeviceNodeSelection"):
        if k in spec:
            if spec[k]:
                chosen.append("`%s`" % k)
            else:
                errs.append(_e_invalid("%s.%s" % (f, k), False, "must be either unset or set to true"))
    one = "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required"
    if not chosen:
        errs.append(_e_required(f, one))
    elif len(chosen) > 1:
        errs.append(_e_invalid(f, "{%s}" % ", ".join(chosen), one + ", but multiple fields are set"))
    if "sharedCounters" in spec and "devices" in spec:
        errs.append(_e_invalid(f, "", "only one of `sharedCounters` or `devices` is allowed"))
    devices = spec.get("devices") or []
    advanced = any(d.get("taints") or d.get("consumesCounters") for d in devices)
    per_device = spec.get("perDeviceNodeSelection") is True
    errs += _v_set(devices, 64 if advanced else 128, lambda d, df: _v_device(d, df, per_device),
                   lambda d: d.get("name", ""), f + ".devices")
    errs += _v_set(spec.get("sharedCounters"), 8, _v_counter_set, lambda c: c.get("name", ""), f + ".sharedCounters")
    return errs


# -- DeviceClass, ResourceClaim, ResourceClaimTemplate

def _v_selector(s, f):
    cel = s.get("cel")
    if cel is None:
        return [_e_required(f + ".cel")]
    expr = cel.get("expression", "")
    if _blen(expr) > 10 * 1024:
        return [_e_too_long(f + ".cel.expression", 10 * 1024)]
    return [] if expr.strip() else [_e_required(f + ".cel.expression")]  # not compiled: no CEL here


def _v_device_config(c, f):
    """validateDeviceConfiguration: an opaque configuration for one driver."""
    op = c.get("opaque")
    if op is None:
        return [_e_required(f + ".opaque")]
    return (_v_driver_name(op.get("driver", ""), f + ".opaque.driver") +
            _v_raw_extension(op.get("parameters"), f + ".opaque.parameters", 10 * 1024))


def _v_toleration(t, f):
    errs = _v_label_name(t["key"], f + ".key") if t.get("key") else []
    op = t.get("operator", "")
    if op == "Exists":
        if t.get("value"):
            errs.append(_e_invalid(f + ".value", t["value"], "must be empty for operator `Exists`"))
    elif op == "Equal":
        errs += _v_label_value(t.get("value", ""), f + ".value")
    elif not op:
        errs.append(_e_required(f + ".operator"))
    else:
        errs.append(_e_not_supported(f + ".operator", op, ["Equal", "Exists"]))
    if t.get("effect") and t["effect"] not in _TAINT_EFFECTS:
        errs.append(_e_not_supported(f + ".effect", t["effect"], _TAINT_EFFECTS))
    return errs


def _request_names(dc):
    """{request name: None, or the set of its firstAvailable subrequests' names}"""
    out = {}
    for r in (dc or {}).get("requests") or []:
        subs = r.get("firstAvailable") or []
        out[r.get("name", "")] = {s.get("name", "") for s in subs} if subs else None
    return out


def _v_request_ref(name, f, names):
    msg = "must be the name of a request in the claim or the name of a request and a subrequest separated by '/'"
    seg = name.split("/")
    if len(seg) > 2:
        return [_e_invalid(f, name, msg)]
    errs = [e for s in seg for e in _v_dns_label(s, f)]
    known = seg[0] in names and (len(seg) == 1 or seg[1] in (names[seg[0]] or ()))
    return errs + ([] if known else [_e_invalid(f, name, msg)])


def _v_request_details(r, f):
    """What ExactDeviceRequest and DeviceSubRequest share: class, selectors, mode and count, tolerations."""
    cls = r.get("deviceClassName", "")
    errs = _v_dns_subdomain(cls, f + ".deviceClassName") if cls else [_e_required(f + ".deviceClassName")]
    errs += _v_set(r.get("selectors"), 32, _v_selector, None, f + ".selectors")
    mode, count = r.get("allocationMode", ""), r.get("count", 0)
    if mode == "All":
        if count != 0:
            errs.append(_e_invalid(f + ".count", count, "must not be specified when allocationMode is 'All'"))
    elif mode == "ExactCount":
        if count <= 0:
            errs.append(_e_invalid(f + ".count", count, "must be greater than zero"))
    else:
        errs.append(_e_not_supported(f + ".allocationMode", mode, ["All", "ExactCount"]))
    for i, t in enumerate(r.get("tolerations") or []):
        errs += _v_toleration(t, "%s.tolerations[%d]" % (f, i))
    return errs


def _v_device_request(r, f):
    errs = _v_dns_label(r.get("name", ""), f + ".name")
    subs, exactly = r.get("firstAvailable") or [], r.get("exactly")
    if not subs and exactly is None:
        errs.append(_e_required(f, "exactly one of `exactly` or `firstAvailable` is required"))
    elif subs and exactly is not None:
        errs.append(_e_invalid(f, None, "exactly one of `exactly` or `firstAvailable` is required, but multiple "
                                        "fields are set"))
    elif subs:
        errs += _v_set(subs, 8, lambda s, sf: _v_dns_label(s.get("name", ""), sf + ".name") + _v_request_details(s, sf),
                       lambda s: s.get("name", ""), f + ".firstAvailable")
    else:
        errs += _v_request_details(exactly, f + ".exactly")
    return errs


def _v_device_claim(dc, f):
    names = _request_names(dc)
    refs = lambda c, cf: _v_set(c.get("requests"), 32, lambda n, nf: _v_request_ref(n, nf, names),  # noqa: E731
                                lambda n: n, cf + ".requests")

    def constraint(c, cf):
        errs = refs(c, cf)
        for k in ("matchAttribute", "distinctAttribute"):
            if k in c:
                return errs + _v_fully_qualified_name(c[k], "%s.%s" % (cf, k))
        return errs + [_e_required(cf + ".matchAttribute")]
    errs = _v_set(dc.get("requests"), 32, _v_device_request, lambda r: r.get("name", ""), f + ".requests")
    errs += _v_set(dc.get("constraints"), 32, constraint, None, f + ".constraints")
    errs += _v_set(dc.get("config"), 32, lambda c, cf: refs(c, cf) + _v_device_config(c, cf), None, f + ".config")
    return errs


def _shared_device_id(d):
    sid = "%s/%s/%s" % (d.get("driver", ""), d.get("pool", ""), d.get("device", ""))
    return _Verbatim(sid + "/" + d["shareID"] if d.get("shareID") else sid)


def _v_claim_status(obj, old):
    """ValidateResourceClaimStatusUpdate."""
    st, ost, f = obj.get("status") or {}, old.get("status") or {}, "status"
    names = _request_names((obj.get("spec") or {}).get("devices"))

    def consumer(r, rf):
        return [_e_required("%s.%s" % (rf, k)) for k in ("resource", "name", "uid") if not r.get(k)]
    errs = _v_set(st.get("reservedFor"), 256, consumer, lambda r: r.get("uid", ""), f + ".reservedFor")
    alloc = st.get("allocation")
    allocated = {str(_shared_device_id(r)) for r in ((alloc or {}).get("devices") or {}).get("results") or []}

    def device_status(d, df):
        errs = _v_driver_name(d.get("driver", ""), df + ".driver") + _v_pool_name(d.get("pool", ""), df + ".pool")
        errs += _v_dns_label(d.get("device", ""), df + ".device")
        if "shareID" in d:
            errs += _v_uid(d["shareID"], df + ".shareID")
        if str(_shared_device_id(d)) not in allocated:
            errs.append(_e_invalid(df, _shared_device_id(d), "must be an allocated device in the claim"))
        conds = d.get("conditions") or []
        if len(conds) > 8:
            errs.append(_e_too_many(df + ".conditions", len(conds), 8))
        errs += _v_conditions(conds, df + ".conditions")
        if d.get("data") is not None:
            errs += _v_raw_extension(d["data"], df + ".data", 10 * 1024)
        nd = d.get("networkData") or {}
        if _blen(nd.get("interfaceName", "")) > 256:
            errs.append(_e_too_long(df + ".networkData.interfaceName", 256))
        if _blen(nd.get("hardwareAddress", "")) > 128:
            errs.append(_e_too_long(df + ".networkData.hardwareAddress", 128))
        return errs + _v_set(nd.get("ips"), 16, _v_interface_address, lambda a: a, df + ".networkData.ips")
    errs += _v_set(st.get("devices"), -1, device_status, _shared_device_id, f + ".devices")
    if st.get("reservedFor"):
        if alloc is None:
            errs.append(_e_forbidden(f + ".reservedFor", "may not be specified when `allocated` is not set"))
        elif obj["metadata"].get("deletionTimestamp"):
            was = {json.dumps(r, sort_keys=True) for r in ost.get("reservedFor") or []}
            if any(json.dumps(r, sort_keys=True) not in was for r in st["reservedFor"]):
                errs.append(_e_forbidden(f + ".reservedFor", "new entries may not be added while "
                                                             "`deallocationRequested` or `deletionTimestamp` are set"))
    if alloc is not None and ost.get("allocation") is not None:
        if alloc != ost["allocation"]:
            errs.append(_e_invalid(f + ".allocation", _Verbatim("resource.AllocationResult{...}"),
                                   "field is immutable"))
    elif alloc is not None:
        af = f + ".allocation"
        devs = alloc.get("devices") or {}

        def result(r, rf):
            errs = _v_request_ref(r.get("request", ""), rf + ".request", names)
            errs += _v_driver_name(r.get("driver", ""), rf + ".driver") + _v_pool_name(r.get("pool", ""), rf + ".pool")
            errs += _v_dns_label(r.get("device", ""), rf + ".device")
            errs += _v_binding_conditions(r.get("bindingConditions"), r.get("bindingFailureConditions"), rf)
            for i, t in enumerate(r.get("tolerations") or []):
                errs += _v_toleration(t, "%s.tolerations[%d]" % (rf, i))
            return errs + (_v_uid(r["shareID"], rf + ".shareID") if "shareID" in r else [])

        def config(c, cf):
            src = c.get("source", "")
            errs = [_e_required(cf + ".source")] if not src else [] if src in ("FromClaim", "FromClass") else [
                _e_not_supported(cf + ".source", src, ["FromClaim", "FromClass"])]
            errs += _v_set(c.get("requests"), 32, lambda n, nf: _v_request_ref(n, nf, names), lambda n: n,
                           cf + ".requests")
            return errs + _v_device_config(c, cf)
        errs += _v_set(devs.get("results"), 32, result, None, af + ".devices.results")
        errs += _v_set(devs.get("config"), 64, config, None, af + ".devices.config")
        if alloc.get("nodeSelector") is not None:
            errs += _v_node_selector(alloc["nodeSelector"], af + ".nodeSelector")
    return errs


def _v_interface_address(a, f):
    """validation.IsValidInterfaceAddress: an address in CIDR form, canonical."""
    try:
        iface = ipaddress.ip_interface(a)
        if "/" not in a:
            raise ValueError(a)
    except ValueError:
        return [_e_invalid(f, a, "must be a valid address in CIDR form, (e.g. 10.9.8.7/24 or 2001:db8::1/64)")]
    return [] if str(iface) == a else [_e_invalid(f, a, 'must be in canonical form ("%s")' % iface)]


def validate_device_class(obj, old):
    spec = obj.get("spec") or {}
    errs = _v_set(spec.get("selectors"), 32, _v_selector, None, "spec.selectors")
    errs += _v_set(spec.get("config"), 32, _v_device_config, None, "spec.config")
    name = spec.get("extendedResourceName")
    if name is not None and ("/" not in name or "kubernetes.io/" in name or name.startswith("requests.") or
                             _qualified_name_errors("requests." + name)):
        errs.append(_e_invalid("spec.extendedResourceName", name, "must be a valid extended resource name"))
    return errs


def validate_resource_claim(obj, old, sub):
    if sub == "status":
        return _v_claim_status(obj, old)
    errs = _v_device_claim((obj.get("spec") or {}).get("devices") or {}, "spec.devices")
    if old is not None and obj.get("spec") != old.get("spec"):
        errs.append(_e_invalid("spec", _Verbatim("resource.ResourceClaimSpec{...}"), "field is immutable"))
    return errs


def validate_resource_claim_template(obj, old):
    spec = obj.get("spec") or {}
    if old is not None:  # only the immutability of the spec is checked on update
        return [] if spec == old.get("spec") else [
            _e_invalid("spec", _Verbatim("resource.ResourceClaimTemplateSpec{...}"), "field is immutable")]
    meta = spec.get("metadata") or {}
    errs = [_e_forbidden("spec.metadata." + k, "cannot be set for a template") for k in sorted(meta)
            if k not in ("labels", "annotations") and meta[k] not in ("", 0, [], {})]
    return errs + _v_device_claim((spec.get("spec") or {}).get("devices") or {}, "spec.spec.devices")


def resource_defaults(res, obj):
    """pkg/apis/resource/v1/defaults.go."""
    def request(r):
        if isinstance(r, dict):
            r["allocationMode"] = r.get("allocationMode") or "ExactCount"
            if r["allocationMode"] == "ExactCount" and not r.get("count"):
                r["count"] = 1

    def claim_spec(spec):
        for rq in (((spec or {}).get("devices") or {}).get("requests") or []):
            request(rq.get("exactly"))
            for s in rq.get("firstAvailable") or []:
                request(s)
    if res.plural == "resourceclaims":
        claim_spec(obj.get("spec"))
    elif res.plural == "resourceclaimtemplates":
        claim_spec((obj.get("spec") or {}).get("spec"))
    elif res.plural == "resourceslices":
        for d in (obj.get("spec") or {}).get("devices") or []:
            for t in d.get("taints") or []:
                t.setdefault("timeAdded", now_ts())


def validate_resource_object(res, obj, old, sub):
    """The registry's Validate/ValidateUpdate for a resource.k8s.io/v1 kind: 422 causes."""
    if res.plural == "resourceslices":
        return validate_resource_slice(obj, old)
    if res.plural == "deviceclasses":
        return validate_device_class(obj, old)
    if res.plural == "resourceclaims":
        return validate_resource_claim(obj, old, sub)
    return validate_resource_claim_template(obj, old)


def resource_slice_fields(obj):
    """The resourceslice registry's toSelectableFields (spec.nodeName "" when unset)."""
    spec = obj.get("spec") or {}
    return {"spec.nodeName": spec.get("nodeName") or "", "spec.driver": spec.get("driver", "")}


def resource_claim_state(obj):
    """printers' resourceClaimState."""
    states = ["deleted"] if obj["metadata"].get("deletionTimestamp") else []
    st = obj.get("status") or {}
    if st.get("allocation") is None:
        states += [] if states else ["pending"]
    else:
        states += ["allocated"] + (["reserved"] if st.get("reservedFor") else [])
    return ",".join(states)


_RESOURCE_AGE = Column("Age", "string", _age, "", AGE_COLUMN.desc)


def resource_kinds():
    """The four kinds, as Resources (printer columns as pkg/printers/internalversion has them)."""
    spec = lambda o: o.get("spec") or {}  # noqa: E731
    kinds = [
        Resource(RESOURCE_GROUP, "v1", "resourceslices", "ResourceSlice", False, generation=True, columns=[
            Column("Node", "string", lambda o: spec(o).get("nodeName") or "",
                   desc="NodeName identifies the node which provides the resources in this pool."),
            Column("Driver", "string", lambda o: spec(o).get("driver", ""),
                   desc="Driver identifies the DRA driver providing the capacity information."),
            Column("Pool", "string", lambda o: (spec(o).get("pool") or {}).get("name", ""),
                   desc="Name is used to identify the pool."),
            _RESOURCE_AGE]),
        Resource(RESOURCE_GROUP, "v1", "deviceclasses", "DeviceClass", False, generation=True,
                 columns=[_RESOURCE_AGE]),
        Resource(RESOURCE_GROUP, "v1", "resourceclaims", "ResourceClaim", True, status=True, columns=[
            Column("State", "string", resource_claim_state,
                   desc="A summary of the current state (allocated, pending, reserved, etc.)."), _RESOURCE_AGE]),
        Resource(RESOURCE_GROUP, "v1", "resourceclaimtemplates", "ResourceClaimTemplate", True,
                 columns=[_RESOURCE_AGE])]
    for r in kinds:
        r.openapi = "io.k8s.api.resource.v1." + r.kind  # its schema in ResourceSchemas
    return kinds


_DEFAULT_FIELD_LABEL_ERROR = '"%s" is not a known field selector: only "metadata.name", "metadata.namespace"'
# The field selectors of the built-in kinds that have a conversion of their own, or are new enough to
# use the default one's message: (group, plural) -> ({label: the field it names in the registry's
# field set}, the message for another label). Other kinds: metadata.name and metadata.namespace.
FIELD_LABELS = {
    ("", "events"): (CORE_EVENT_FIELD_LABELS, "field label not supported: %s"),
    (EVENTS_GROUP, "events"): (EVENTS_V1_FIELD_LABELS, "field label not supported: %s"),
    (RESOURCE_GROUP, "resourceslices"): ({"metadata.name": "metadata.name", "spec.nodeName": "spec.nodeName",
                                          "spec.driver": "spec.driver"},
                                         "field label not supported for resource.k8s.io/v1, Kind=ResourceSlice: %s"),
}
for _p in ("deviceclasses", "resourceclaims", "resourceclaimtemplates"):
    FIELD_LABELS[(RESOURCE_GROUP, _p)] = ({"metadata.name": "metadata.name",
                                           "metadata.namespace": "metadata.namespace"}, _DEFAULT_FIELD_LABEL_ERROR)
# The registries' extra selectable fields (GetAttrs), by the stored object's apiVersion and kind.
SELECTABLE_FIELDS = {("v1", "Event"): event_selectable_fields,
                     (RESOURCE_GROUP + "/v1", "ResourceSlice"): resource_slice_fields}


# ----------------------------------------------------------------------------------------------
# Resources and the store.

class Resource:
    def __init__(self, group, version, plural, kind, namespaced, singular=None, short_names=(),
                 categories=(), status=False, schema=None, columns=None, builtin=True, crd=None,
                 generation=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        # metadata.generation counts spec changes: custom resources, CRDs, webhook configurations
        self.generation = (not builtin) if generation is None else generation
        self.namespaced, self.singular = namespaced, singular or kind.lower()
        self.short_names, self.categories = list(short_names), list(categories)
        self.status, self.schema, self.builtin, self.crd = status, schema, builtin, crd
        self.columns = [NAME_COLUMN] + (columns if columns is not None else [AGE_COLUMN])
        self.api_version = "%s/%s" % (group, version) if group else version
        self.qualified = "%s.%s" % (plural, group) if group else plural
        self.skey = (group, plural)  # storage key: all versions of a CRD share one collection
        self.openapi = None  # a built-in kind's component name in its published OpenAPI schemas


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
        self.resource_schemas = ResourceSchemas()  # resource.k8s.io/v1's published OpenAPI schemas
        core = [Resource("", "v1", "namespaces", "Namespace", False, short_names=["ns"], status=True,
                         columns=[Column("Status", "string", lambda o: o.get("status", {}).get("phase", "")),
                                  AGE_COLUMN]),
                Resource("", "v1", "nodes", "Node", False, short_names=["no"], status=True),
                Resource("", "v1", "configmaps", "ConfigMap", True, short_names=["cm"],
                         columns=[Column("Data", "integer", lambda o: len(o.get("data") or {}) +
                                         len(o.get("binaryData") or {})), AGE_COLUMN]),
                Resource("", "v1", "events", "Event", True, short_names=["ev"]),
                Resource(EVENTS_GROUP, "v1", "events", "Event", True, short_names=["ev"]),
                Resource("coordination.k8s.io", "v1", "leases", "Lease", True, columns=[
                    Column("Holder", "string", lambda o: (o.get("spec") or {}).get("holderIdentity") or "",
                           desc="holderIdentity contains the identity of the holder of a current lease."),
                    AGE_COLUMN]),
                *resource_kinds(),
                Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                         "CustomResourceDefinition", False, short_names=["crd", "crds"],
                         categories=["api-extensions"], status=True, generation=True,
                         columns=[Column("Created At", "date", lambda o: o["metadata"].get("creationTimestamp"))])]
        for kind in ("Validating", "Mutating"):
            core.append(Resource(ADMREG, "v1", kind.lower() + "webhookconfigurations", kind + "WebhookConfiguration",
                                 False, categories=["api-extensions"], generation=True, columns=[
                                     Column("Webhooks", "integer", lambda o: len(o.get("webhooks") or []),
                                            desc="Webhooks is a list of webhooks and the affected resources "
                                            "and operations."), AGE_COLUMN]))
        for r in core:
            if r.plural == "events":  # one storage, two views (see ev_decode)
                r.skey, r.columns = EVENTS_SKEY, EVENT_COLUMNS
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
        """An object as the requested version shows it (CRD conversion strategy None; an Event
        converted to the group's shape)."""
        if res.skey == EVENTS_SKEY:
            return event_view(obj, res.group)
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

    def _validate(self, res, obj, strict, old=None, sub=None):
        """Schema validation and pruning for custom resources, decoding and validation of Events,
        validation of resource.k8s.io kinds (`old`: the stored object an update replaces, `sub`: its
        subresource); returns the warnings."""
        name = obj["metadata"].get("name", "")
        if res.skey == EVENTS_SKEY:
            return self._event_validate(res, obj, strict, old)
        if res.openapi:
            return self._resource_validate(res, obj, old, sub)
        if res.plural == "customresourcedefinitions":
            self._crd_validate(res, obj)
        if res.group == ADMREG:
            validate_webhook_configuration(res, obj)
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

    def _event_validate(self, res, obj, strict, old):
        """An Event in the request's shape becomes its stored core/v1 form, in place (the same dict
        and metadata), decoded as the Go type decodes it; then the group's validation."""
        try:
            internal, unknown = ev_decode(obj, res.group)
        except _EvDecodeError as e:
            raise bad_request('Event in version "v1" cannot be handled as a Event: %s' % e)
        msgs = ['unknown field "%s"' % u for u in unknown]
        if unknown and strict == "Strict":
            raise bad_request('Event in version "v1" cannot be handled as a Event: strict decoding error: %s'
                              % ", ".join(msgs))
        stored = ev_encode(internal, obj["metadata"], "")
        obj.clear()
        obj.update(stored)
        causes = validate_event(res, obj, old)
        if causes:
            raise invalid(res, obj["metadata"].get("name", ""), causes)
        return msgs if strict == "Warn" else []

    def _resource_decode(self, res, obj, strict):
        """A resource.k8s.io/v1 body decoded in place as its Go type decodes it (ResourceSchemas.decode):
        400 for a mistyped value; unknown fields as fieldValidation (`strict`) says, 422 when it says
        nothing. Returns the warnings."""
        unknown, what = [], '%s in version "%s" cannot be handled as a %s: ' % (res.kind, res.version, res.kind)
        try:
            decoded = self.resource_schemas.decode({"$ref": _SCHEMA_REF + res.openapi}, obj, "", "", res.kind,
                                                   unknown)
        except _GoDecodeError as e:
            raise bad_request(what + str(e))
        msgs = ['unknown field "%s"' % u for u in unknown]
        if unknown and strict == "Strict":
            raise bad_request(what + "strict decoding error: " + ", ".join(msgs))
        if unknown and strict not in ("Warn", "Ignore"):
            raise invalid(res, (obj.get("metadata") or {}).get("name", ""), [
                (u, "FieldValueForbidden", "Forbidden: unknown field (kube-apiserver drops it, with a warning "
                                           "unless fieldValidation=Ignore)") for u in unknown])
        obj.clear()
        obj.update(decoded)
        return msgs if strict == "Warn" else []

    def _resource_validate(self, res, obj, old, sub):
        """A decoded resource.k8s.io/v1 object defaulted and completed as Go marshals it, then the
        registry's validation (422). Returns the warnings."""
        resource_defaults(res, obj)
        required = []
        self.resource_schemas.complete({"$ref": _SCHEMA_REF + res.openapi}, obj, "", required)
        causes = []
        for c in validate_resource_object(res, obj, old, sub) + required:
            if c not in causes and not (c in required and any(x[0] == c[0] for x in causes)):
                causes.append(c)
        if causes:
            raise invalid(res, obj["metadata"].get("name", ""), causes)
        driver = (obj.get("spec") or {}).get("driver", "") if res.plural == "resourceslices" else ""
        if driver != driver.lower():
            return ["spec.driver: driver names should be lowercase; %s contains uppercase characters"
                    % json.dumps(driver)]
        return []

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
            obj, warnings = self.create_prepare(res, ns, body, strict)
            if dry:
                return self.out(obj, res), warnings
            return self.create_commit(res, ns, obj), warnings

    def _namespace_exists(self, ns):
        if ("", ns) not in self.objects.get(("", "namespaces"), {}):
            raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ns, {"name": ns, "kind": "namespaces"})

    def _already_exists(self, res, name):
        return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (res.qualified, name),
                        {"name": name, "group": res.group, "kind": res.plural})

    def create_prepare(self, res, ns, body, strict=None):
        """Every check and default of a create, nothing stored: (object, warnings)."""
        with self.lock:
            if not isinstance(body, dict):
                raise bad_request("the object provided is unrecognized (must be a JSON object)")
            obj = jcopy(body)
            meta = obj.setdefault("metadata", {})
            self._check_meta(res, obj)
            self._check_type(res, obj)
            decode_warnings = self._resource_decode(res, obj, strict) if res.openapi else []
            meta = obj.setdefault("metadata", {})
            if res.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match the namespace "
                                      "sent on the request")
                self._namespace_exists(ns)
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
                raise self._already_exists(res, name)
            if res.status:
                obj.pop("status", None)  # the status subresource owns .status: a create resets it
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "uid", "managedFields"):
                meta.pop(k, None)
            warnings = decode_warnings + self._validate(res, obj, strict)
            if res.plural == "namespaces":
                obj["status"] = {"phase": "Active"}
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_ts()
            if res.generation:
                meta["generation"] = 1  # most core kinds have no spec generation
            if res.plural == "customresourcedefinitions":
                obj["status"] = self._crd_status(obj)
            return obj, warnings

    def create_commit(self, res, ns, obj):
        """Store what create_prepare made (re-checking what may have changed since)."""
        with self.lock:
            key = (ns or "", obj["metadata"]["name"])
            if key in self._coll(res):
                raise self._already_exists(res, key[1])
            if res.namespaced:
                self._namespace_exists(ns)
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._commit(res, "ADDED", key, obj, None)
            if res.plural == "customresourcedefinitions":
                self._crd_register(obj)
            return self.out(obj, res)

    def update(self, res, ns, name, body, sub=None, dry=False, strict=None):
        with self.lock:
            plan = self.update_prepare(res, ns, name, body, sub, strict)
            return self.update_commit(res, plan, dry), plan["warnings"]

    def update_prepare(self, res, ns, name, body, sub=None, strict=None):
        """Every check of an update against the stored object, nothing stored: a plan for
        update_commit {key, old, result, warnings}."""
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
            decode_warnings = self._resource_decode(res, new, strict) if res.openapi else []
            meta = new.setdefault("metadata", {})
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
            warnings = decode_warnings + self._validate(res, result, strict, old, sub)
            if res.plural == "customresourcedefinitions" and sub != "status":
                result["status"] = self._crd_status(result)
            # generation counts spec changes: everything but metadata (and status with the subresource).
            ignore = {"metadata", "status"} if res.status else {"metadata"}
            if {k: v for k, v in result.items() if k not in ignore} != \
                    {k: v for k, v in old.items() if k not in ignore}:
                if "generation" in old["metadata"]:
                    rmeta["generation"] = old["metadata"]["generation"] + 1
            rmeta["resourceVersion"] = old["metadata"]["resourceVersion"]
            return {"key": key, "old": old, "result": result, "warnings": warnings}

    def update_commit(self, res, plan, dry=False):
        with self.lock:
            key, old, result = plan["key"], plan["old"], plan["result"]
            rmeta = result["metadata"]
            if result == old:
                return self.out(old, res)  # a no-op write takes no new resourceVersion
            gone = rmeta.get("deletionTimestamp") and not rmeta.get("finalizers")
            if dry:
                return self.out(result, res)
            if self._coll(res).get(key) is not old:
                raise conflict(res, key[1], "the object has been modified; please apply your changes to the "
                               "latest version and try again")
            self.rv += 1
            rmeta["resourceVersion"] = str(self.rv)
            if gone:  # the last finalizer went away: the object is deleted by this very write
                self._commit(res, "DELETED", key, result, old)
                self._after_delete(res, result)
            else:
                self._commit(res, "MODIFIED", key, result, old)
                if res.plural == "customresourcedefinitions":
                    self._crd_register(result)
            return self.out(result, res)

    def patch(self, res, ns, name, ptype, body, sub=None, dry=False, strict=None):
        with self.lock:
            old, patched = self.patch_target(res, ns, name, ptype, body, sub)
            if old is None:  # server-side apply creates what is missing
                obj, w = self.create(res, ns, patched, dry, strict)
                return obj, w, 201
            obj, w = self.update(res, ns, name, patched, sub, dry, strict)
            return obj, w, 200

    def patch_target(self, res, ns, name, ptype, body, sub=None):
        """(stored object, what the patch makes of it); (None, object to create) when an apply
        patch names a missing object."""
        with self.lock:
            old = self._coll(res).get((ns or "", name))
            base = old
            if old is not None and res.skey == EVENTS_SKEY:
                base = self.out(old, res)  # a patch applies to the object as the request's group shows it
            if ptype == "application/apply-patch+yaml":
                if not isinstance(body, dict):
                    raise bad_request("apply patch must be an object")
                if old is None:
                    if sub:
                        raise not_found(res, name)
                    return None, dict(body, metadata=dict(body.get("metadata") or {}, name=name))
                patched = merge_patch(jcopy(base), body)
            elif old is None:
                raise not_found(res, name)
            elif ptype == "application/json-patch+json":
                patched = json_patch(base, body)
            elif ptype == "application/merge-patch+json":
                if not isinstance(body, dict):
                    raise bad_request("merge patch must be a JSON object")
                patched = merge_patch(jcopy(base), body)
            elif ptype == "application/strategic-merge-patch+json" and res.builtin:
                if not isinstance(body, dict):
                    raise bad_request("strategic merge patch must be a JSON object")
                patched = strategic_merge_patch(base, body, dict(SMP_COMMON, **SMP_KEYS.get(res.skey, {})))
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
            return old, patched

    def delete_preconditions(self, res, name, old, opts):
        pre = (opts or {}).get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise conflict(res, name, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                           % (pre["uid"], old["metadata"]["uid"]))
        if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(res, name, "Precondition failed: ResourceVersion in precondition: %s, "
                           "ResourceVersion in object meta: %s" % (pre["resourceVersion"],
                                                                  old["metadata"]["resourceVersion"]))

    def delete(self, res, ns, name, opts, dry=False):
        with self.lock:
            key = (ns or "", name)
            old = self._coll(res).get(key)
            if old is None:
                raise not_found(res, name)
            self.delete_preconditions(res, name, old, opts)
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
        fsel = parse_field_selector(q.get("fieldSelector", ""), res)
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
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        if r.openapi:  # a built-in kind with published schemas: those, List kinds and all they use
            name = r.openapi
            schemas.update(jcopy(store.resource_schemas.schemas))
        else:
            name = _schema_name(r)
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
        # Built-in kinds take strategic merge patches but do not say so here: their schemas are not
        # described, so kubectl apply would fail to compute a patch from them ("warning: error
        # calculating patch from openapi v3 spec") and fall back to its compiled-in types anyway.
        patch_types = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
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
            self.webhooks = {}  # webhook name -> {calls, failures, denials}

    def webhook(self, name, what):
        with self.lock:
            per = self.webhooks.setdefault(name, {"calls": 0, "failures": 0, "denials": 0})
            per[what] += 1

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
                    "watches_started": self.watches_started, "webhookCalls": jcopy(self.webhooks)}


# ----------------------------------------------------------------------------------------------
# Admission webhooks: what k8s.io/apiserver's MutatingAdmissionWebhook and ValidatingAdmissionWebhook
# plugins (v0.32, kube-apiserver 1.32) do with the stored configurations.

def _go_value(v):
    """A value as field.Invalid prints it (Go's %q for strings, %v for numbers, %#v for lists)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return "[]string{%s}" % ", ".join(json.dumps(x) for x in v)
    return json.dumps(v)


def _validate_selector(sel, f, causes):
    if sel is None:
        return
    if not isinstance(sel, dict):
        raise bad_request("json: cannot unmarshal %s into Go struct field of type v1.LabelSelector"
                          % type(sel).__name__)
    for i, e in enumerate(sel.get("matchExpressions") or []):
        ef = "%s.matchExpressions[%d]" % (f, i)
        op, vals = (e or {}).get("operator"), (e or {}).get("values") or []
        if op in ("In", "NotIn") and not vals:
            causes.append((ef + ".values", "FieldValueRequired",
                           "Required value: must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist") and vals:
            causes.append((ef + ".values", "FieldValueForbidden",
                           "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        elif op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            causes.append((ef + ".operator", "FieldValueInvalid",
                           "Invalid value: %s: not a valid selector operator" % _go_value(op)))


def validate_webhook_configuration(res, obj):
    """pkg/apis/admissionregistration/validation for v1 objects (the checks a test meets; not CEL
    matchConditions), then the v1 defaults: failurePolicy Fail, matchPolicy Equivalent, selectors
    {}, timeoutSeconds 10, rule scope "*", service port 443, reinvocationPolicy Never."""
    mutating = res.kind.startswith("Mutating")
    causes = []

    def required(f, detail=""):
        causes.append((f, "FieldValueRequired", "Required value" + (": " + detail if detail else "")))

    def invalid_value(f, v, detail):
        causes.append((f, "FieldValueInvalid", "Invalid value: %s: %s" % (_go_value(v), detail)))

    def unsupported(f, v, allowed):
        causes.append((f, "FieldValueNotSupported", "Unsupported value: %s: supported values: %s"
                       % (_go_value(v), ", ".join('"%s"' % a for a in allowed))))

    hooks = obj.get("webhooks")
    if hooks is not None and not isinstance(hooks, list):
        raise bad_request("json: cannot unmarshal %s into Go struct field %s.webhooks of type []v1.%s"
                          % (type(hooks).__name__, res.kind, res.kind.replace("Configuration", "")))
    names = set()
    for i, h in enumerate(hooks or []):
        f = "webhooks[%d]" % i
        if not isinstance(h, dict):
            raise bad_request("json: cannot unmarshal %s into Go struct field %s.webhooks of type v1.%s"
                              % (type(h).__name__, res.kind, res.kind.replace("Configuration", "")))
        name = h.get("name") or ""
        short = name[:-1] if name.endswith(".") else name
        if not name:
            required(f + ".name")
        elif not DNS1123_SUB.fullmatch(short) or len(short) > 253:
            invalid_value(f + ".name", short, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                          "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
                          "'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]"
                          "([-a-z0-9]*[a-z0-9])?)*')")
        elif len(short.split(".")) < 3:
            invalid_value(f + ".name", short, "should be a domain with at least three segments separated by dots")
        for j, r in enumerate(h.get("rules") or []):
            rf = "%s.rules[%d]" % (f, j)
            r = r if isinstance(r, dict) else {}
            ops = r.get("operations") or []
            if not ops:
                required(rf + ".operations")
            if len(ops) > 1 and "*" in ops:
                invalid_value(rf + ".operations", ops, "if '*' is present, must not specify other operations")
            for k, op in enumerate(ops):
                if op not in ("*", "CONNECT", "CREATE", "DELETE", "UPDATE"):
                    unsupported("%s.operations[%d]" % (rf, k), op, ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"])
            for fld, what in (("apiGroups", "API groups"), ("apiVersions", "API versions")):
                vals = r.get(fld) or []
                if not vals:
                    required("%s.%s" % (rf, fld))
                if len(vals) > 1 and "*" in vals:
                    invalid_value("%s.%s" % (rf, fld), vals, "if '*' is present, must not specify other %s" % what)
            for k, v in enumerate(r.get("apiVersions") or []):
                if v == "":
                    required("%s.apiVersions[%d]" % (rf, k))
            rs = r.get("resources") or []
            if not rs:
                required(rf + ".resources")
            for k, v in enumerate(rs):
                if v == "":
                    required("%s.resources[%d]" % (rf, k))
            if "*/*" in rs and len(rs) > 1:
                invalid_value(rf + ".resources", rs, "if '*/*' is present, must not specify other resources")
            if "*" in rs and any("/" not in v and v != "*" for v in rs):
                invalid_value(rf + ".resources", rs, "if '*' is present, must not specify other resources "
                              "without subresources")
            if r.get("scope") is not None and r["scope"] not in ("*", "Cluster", "Namespaced"):
                unsupported(rf + ".scope", r["scope"], ["*", "Cluster", "Namespaced"])
        for fld, allowed in (("failurePolicy", ["Fail", "Ignore"]), ("matchPolicy", ["Equivalent", "Exact"])):
            if h.get(fld) is not None and h[fld] not in allowed:
                unsupported("%s.%s" % (f, fld), h[fld], allowed)
        if h.get("sideEffects") is None:
            required(f + ".sideEffects", "must specify one of None, NoneOnDryRun")
        elif h["sideEffects"] not in ("None", "NoneOnDryRun"):
            unsupported(f + ".sideEffects", h["sideEffects"], ["None", "NoneOnDryRun"])
        t = h.get("timeoutSeconds")
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= 30):
            invalid_value(f + ".timeoutSeconds", t, "the timeout value must be between 1 and 30 seconds")
        _validate_selector(h.get("namespaceSelector"), f + ".namespaceSelector", causes)
        _validate_selector(h.get("objectSelector"), f + ".objectSelector", causes)
        if mutating and h.get("reinvocationPolicy") is not None and \
                h["reinvocationPolicy"] not in ("IfNeeded", "Never"):
            unsupported(f + ".reinvocationPolicy", h["reinvocationPolicy"], ["IfNeeded", "Never"])
        cc = h.get("clientConfig") if isinstance(h.get("clientConfig"), dict) else {}
        url, svc = cc.get("url"), cc.get("service")
        if (url is None) == (svc is None):
            required(f + ".clientConfig", "exactly one of url or service is required")
        elif url is not None:
            uf, form = f + ".clientConfig.url", "; desired format: https://host[/path]"
            u = urlsplit(str(url))
            if u.scheme != "https":
                invalid_value(uf, u.scheme, "'https' is the only allowed URL scheme" + form)
            if not u.netloc:
                invalid_value(uf, u.netloc, "host must be specified" + form)
            if "@" in u.netloc:
                invalid_value(uf, u.netloc.rsplit("@", 1)[0], "user information is not permitted in the URL")
            if u.fragment:
                invalid_value(uf, u.fragment, "fragments are not permitted in the URL")
            if u.query:
                invalid_value(uf, u.query, "query parameters are not permitted in the URL")
        else:
            sf = f + ".clientConfig.service"
            svc = svc if isinstance(svc, dict) else {}
            if not svc.get("name"):
                required(sf + ".name", "service name is required")
            if not svc.get("namespace"):
                required(sf + ".namespace", "service namespace is required")
            port = svc.get("port")
            if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
                invalid_value(sf + ".port", port, "port is not valid: must be between 1 and 65535, inclusive")
            path = svc.get("path")
            if path not in (None, "", "/"):
                if path == "//":
                    invalid_value(sf + ".path", path, "segment[0] may not be empty")
                else:
                    if not path.startswith("/"):
                        invalid_value(sf + ".path", path, "must start with a '/'")
                    steps = path[1:]
                    steps = steps[:-1] if steps.endswith("/") else steps
                    for k, step in enumerate(steps.split("/")):
                        if not step:
                            invalid_value(sf + ".path", path, "segment[%d] may not be empty" % k)
                        elif not DNS1123_SUB.fullmatch(step):
                            invalid_value(sf + ".path", path, "segment[%d]: a lowercase RFC 1123 subdomain must "
                                          "consist of lower case alphanumeric characters, '-' or '.', and must "
                                          "start and end with an alphanumeric character" % k)
        ca = cc.get("caBundle")
        if ca is not None:
            try:
                base64.b64decode(ca, validate=True)
            except (ValueError, TypeError):
                raise bad_request("%s in version \"v1\" cannot be handled as a %s: illegal base64 data in "
                                  "webhooks[%d].clientConfig.caBundle" % (res.kind, res.kind, i))
        versions = h.get("admissionReviewVersions") or []
        af = f + ".admissionReviewVersions"
        if not versions:
            required(af, "must specify one of v1, v1beta1")
        else:
            seen = set()
            for k, v in enumerate(versions):
                if v in seen:
                    invalid_value("%s[%d]" % (af, k), v, "duplicate version")
                seen.add(v)
            if not seen & {"v1", "v1beta1"}:
                invalid_value(af, versions, "must include at least one of v1, v1beta1")
        if name and name in names:
            causes.append((f + ".name", "FieldValueDuplicate", "Duplicate value: %s" % json.dumps(name)))
        names.add(name)
    if causes:
        raise invalid(res, obj["metadata"].get("name", ""), causes)
    for h in hooks or []:
        defaults = {"failurePolicy": "Fail", "matchPolicy": "Equivalent", "namespaceSelector": {},
                    "objectSelector": {}, "timeoutSeconds": 10}
        if mutating:
            defaults["reinvocationPolicy"] = "Never"
        for k, v in defaults.items():
            if h.get(k) is None:
                h[k] = v
        for r in h.get("rules") or []:
            if r.get("scope") is None:
                r["scope"] = "*"
        svc = h["clientConfig"].get("service")
        if isinstance(svc, dict) and svc.get("port") is None:
            svc["port"] = 443


def label_selector_reqs(sel):
    """A metav1.LabelSelector as the requirements labels_match takes; [] (everything) when empty."""
    if not isinstance(sel, dict):
        return []
    reqs = [(k, "=", v) for k, v in sorted((sel.get("matchLabels") or {}).items())]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for e in sel.get("matchExpressions") or []:
        reqs.append((e.get("key"), ops.get(e.get("operator"), "exists"), set(e.get("values") or [])))
    return reqs


def _internal(msg):
    """apierrors.NewInternalError."""
    return ApiError(500, "InternalError", "Internal error occurred: %s" % msg, {"causes": [{"message": msg}]})


def _gvk_string(api_version, kind):
    group, _, version = (api_version or "").rpartition("/")
    return "%s/%s, Kind=%s" % (group, version, kind or "")


class CallFailure(Exception):
    """A webhook that could not be called or answered nonsense (webhookutil.ErrCallingWebhook):
    failurePolicy decides."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Review:
    """What one API request brings to admission: the user, dry run, query options, and the warnings
    the webhooks return (sent back as Warning headers, deduplicated as the server's recorder does)."""

    def __init__(self, user, dry, query):
        self.user, self.dry, self.query = user, dry, query
        self.warnings, self.lock = [], threading.Lock()

    def warn(self, text):
        with self.lock:
            if text not in self.warnings:
                self.warnings.append(text)

    def options(self, kind, base=None):
        o = {k: v for k, v in (base or {}).items() if k not in ("kind", "apiVersion")}
        o.update(kind=kind, apiVersion="meta.k8s.io/v1")
        if self.dry:
            o["dryRun"] = ["All"]
        if kind != "DeleteOptions":
            for k in ("fieldManager", "fieldValidation"):
                if self.query.get(k):
                    o[k] = self.query[k]
        return o


class Attrs:
    """admission.Attributes: one operation on one object, as the webhooks are told of it."""

    def __init__(self, op, res, ns, name, sub, obj, old, review, options):
        self.op, self.res, self.ns, self.name, self.sub = op, res, ns, name, sub
        self.obj, self.old, self.review, self.options = obj, old, review, options


def _x509_reason(e):
    code = getattr(e, "verify_code", 0)
    if code in (9, 10):
        return "x509: certificate has expired or is not yet valid: %s" % getattr(e, "verify_message", "")
    return "x509: certificate signed by unknown authority"


def _hostname_mismatch(cert, host):
    """Go's x509 HostnameError text when `cert` does not name `host`, else None."""
    sans = (cert or {}).get("subjectAltName", ())
    dns = [v for k, v in sans if k == "DNS"]
    ips = [v.strip() for k, v in sans if k == "IP Address"]
    try:
        want = ipaddress.ip_address(host)
    except ValueError:
        want = None
    if want is not None:
        if any(ipaddress.ip_address(v) == want for v in ips):
            return None
        if not ips:
            return "x509: cannot validate certificate for %s because it doesn't contain any IP SANs" % host
        return "x509: certificate is valid for %s, not %s" % (", ".join(ips), host)
    h = host.lower().rstrip(".")
    for name in dns:
        n = name.lower().rstrip(".")
        if n == h or (n.startswith("*.") and "." in h and h.split(".", 1)[1] == n[2:]):
            return None
    if dns:
        return "x509: certificate is valid for %s, not %s" % (", ".join(dns), host)
    if not sans:
        return "x509: certificate relies on legacy Common Name field, use SANs instead"
    return "x509: certificate is not valid for any names, but wanted to match %s" % host


_GENERIC = {400: "the server rejected our request for an unknown reason", 401: "the server has asked for the client "
            "to provide credentials", 404: "the server could not find the requested resource", 405: "the server "
            "does not allow this method on the requested resource", 409: "the server reported a conflict",
            422: "the server rejected our request due to an error in our request", 429: "the server has received "
            "too many requests and has asked us to try again later", 503: "the server is currently unable to "
            "handle the request", 504: "the server was unable to return a response in the time allotted, but may "
            "still be processing the request"}


def _http_error(code, ctype, data):
    """client-go's error for a non-2xx answer: the Status it carries, else a generic text."""
    try:
        st = json.loads(data)
    except ValueError:
        st = None
    if isinstance(st, dict) and st.get("kind") == "Status" and st.get("status") == "Failure":
        return st.get("message") or ""
    text = data[:2048].decode("utf-8", "replace").strip() if ctype.startswith("text/") else "unknown"
    if code == 403:
        return text
    if code in _GENERIC:
        return _GENERIC[code]
    if code >= 500:
        return 'an error on the server (%s) has prevented the request from succeeding' % json.dumps(text)
    return "the server responded with the status code %d but did not return more information" % code


class Admission:
    """Calls the webhooks of the stored Mutating/ValidatingWebhookConfigurations for a write.

    The store's lock is never held across a call: a write is prepared under it, the webhooks are
    called, and the result is committed under it only if the stored object is still the one the
    webhooks saw (else, like GuaranteedUpdate, the update is tried again from the top)."""
    RETRIES = 5

    def __init__(self, emu, services):
        self.emu, self.store = emu, emu.store
        self.svc_lock = threading.Lock()
        self.services = dict(services)  # (namespace, name) -> (host, port)

    # -- services
    @staticmethod
    def parse_address(text):
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\s]+):(\d+)", text or "")
        if not m or not 0 < int(m.group(2) or m.group(4)) < 65536:
            raise ValueError("address must be HOST:PORT, got %r" % text)
        return (m.group(1) or m.group(3), int(m.group(2) or m.group(4)))

    def set_service(self, ns, name, address):
        with self.svc_lock:
            if address is None:
                self.services.pop((ns, name), None)
            else:
                self.services[(ns, name)] = address

    def _resolve(self, ns, name):
        with self.svc_lock:
            return self.services.get((ns, name))

    # -- matching
    def _hooks(self, mutating):
        """[(configuration name, webhook)], configurations by name, webhooks in order."""
        if mutating is None:
            return self._hooks(True) + self._hooks(False)
        r = self.store.lookup(ADMREG, "v1", ("mutating" if mutating else "validating") + "webhookconfigurations")
        with self.store.lock:
            cfgs = sorted(self.store.objects.get(r.skey, {}).items())
        return [(c["metadata"]["name"], h) for _k, c in cfgs for h in c.get("webhooks") or [] if isinstance(h, dict)]

    def _equivalents(self, res):
        with self.store.lock:
            return sorted((r for r in self.store.resources.values() if r.skey == res.skey and r is not res),
                          key=lambda r: _version_rank(r.version))

    @staticmethod
    def _rule_matches(rule, op, res, sub, ns, scoped=True):
        """predicates/rules.Matcher."""
        ops = rule.get("operations") or []
        if "*" not in ops and op not in ops:
            return False
        if scoped:
            scope, cluster = rule.get("scope") or "*", ns == "" or res.plural == "namespaces"
            if scope not in ("*", "Cluster", "Namespaced") or (scope == "Cluster" and not cluster) or \
                    (scope == "Namespaced" and cluster):
                return False
        groups, versions = rule.get("apiGroups") or [], rule.get("apiVersions") or []
        if not ("*" in groups or res.group in groups) or not ("*" in versions or res.version in versions):
            return False
        for rs in rule.get("resources") or []:
            r, _, s = str(rs).partition("/")
            if r in ("*", res.plural) and s in ("*", sub or ""):
                return True
        return False

    def active(self, res, ops, sub):
        """Whether some webhook's rules could name this request (selectors and scope aside). When
        none does the store is called straight away, exactly as before webhooks existed."""
        if res.group == ADMREG:
            return False
        cands = None
        for _c, h in self._hooks(None):
            for rule in h.get("rules") or []:
                if not isinstance(rule, dict):
                    continue
                if cands is None:
                    cands = [res] + self._equivalents(res)
                if any(self._rule_matches(rule, op, r, sub, "", False) for op in ops for r in cands):
                    return True
        return False

    def _namespace_match(self, h, a):
        """predicates/namespace.Matcher: (matches, error)."""
        if a.ns == "" and a.res.plural != "namespaces":
            return True, None  # cluster-scoped objects are never exempted
        reqs = label_selector_reqs(h.get("namespaceSelector"))
        if not reqs:
            return True, None
        if a.res.plural == "namespaces" and not a.sub and a.op in ("CREATE", "UPDATE"):
            labels = ((a.obj or {}).get("metadata") or {}).get("labels") or {}
        else:
            with self.store.lock:
                nso = self.store.objects.get(("", "namespaces"), {}).get(("", a.ns))
            if nso is None:
                return False, ApiError(404, "NotFound", 'namespaces "%s" not found' % a.ns,
                                       {"name": a.ns, "kind": "namespaces"})
            labels = nso["metadata"].get("labels") or {}
        return labels_match(reqs, labels), None

    @staticmethod
    def _object_match(h, a):
        reqs = label_selector_reqs(h.get("objectSelector"))

        def match(o):
            return isinstance(o, dict) and labels_match(reqs, (o.get("metadata") or {}).get("labels") or {})
        return not reqs or match(a.obj) or match(a.old)

    def _match(self, h, a):
        """generic.Webhook.ShouldCallHook: the resource (version) to call the webhook for, or None."""
        ns_ok, ns_err = self._namespace_match(h, a)
        if not ns_ok and ns_err is None:
            return None
        if not self._object_match(h, a):
            return None
        rules = [r for r in h.get("rules") or [] if isinstance(r, dict)]
        inv = next((a.res for r in rules if self._rule_matches(r, a.op, a.res, a.sub, a.ns)), None)
        if inv is None and (h.get("matchPolicy") or "Equivalent") == "Equivalent":
            eqs = self._equivalents(a.res)
            inv = next((e for r in rules for e in eqs if self._rule_matches(r, a.op, e, a.sub, a.ns)), None)
        if inv is not None and ns_err is not None:
            raise ns_err
        return inv

    # -- calling
    @staticmethod
    def _versioned(obj, res):
        if obj is None:
            return None
        if res.skey == EVENTS_SKEY:
            try:
                return event_view(obj, res.group)  # either shape, told apart by apiVersion
            except _EvDecodeError as e:
                raise bad_request('Event in version "v1" cannot be handled as a Event: %s' % e)
        o = jcopy(obj)
        o["apiVersion"], o["kind"] = res.api_version, res.kind
        return o

    def _post(self, h, body):
        """POST `body` to the webhook over HTTPS within timeoutSeconds: (status, content type, data)."""
        cc = h.get("clientConfig") or {}
        timeout = h.get("timeoutSeconds") or 10
        svc = cc.get("service")
        if svc:
            port = int(svc.get("port") or 443)
            server = "%s.%s.svc" % (svc.get("name"), svc.get("namespace"))
            hostport, path = "%s:%d" % (server, port), svc.get("path") or "/"
        else:
            u = urlsplit(cc.get("url") or "")
            server, port = u.hostname or "", u.port or 443
            hostport, path = u.netloc, u.path or "/"
        target = "%s?timeout=%ds" % (path, timeout)
        url = "https://%s%s" % (hostport, target)

        def fail(why):
            return CallFailure('failed to call webhook: Post "%s": %s' % (url, why))
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False  # checked below, reported in Go's words
            if cc.get("caBundle"):
                ctx.load_verify_locations(cadata=base64.b64decode(cc["caBundle"]).decode("ascii", "replace"))
            else:
                ctx.load_default_certs()  # no caBundle: the system's roots, as client-go
            ctx.set_alpn_protocols(["http/1.1"])
        except (ValueError, ssl.SSLError, binascii.Error):
            raise CallFailure("could not get REST client: unable to load root certificates: unable to parse "
                              "bytes as PEM block")
        addr = self._resolve(svc.get("namespace"), svc.get("name")) if svc else (server, port)
        if addr is None:
            raise fail('service "%s" not found' % svc.get("name"))
        deadline = time.monotonic() + timeout
        holder, fired = [None], threading.Event()

        def expire():
            fired.set()
            s = holder[0]
            if s is not None:
                try:
                    socket.socket.shutdown(s, socket.SHUT_RDWR)
                except OSError:
                    pass
        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            try:
                holder[0] = socket.create_connection(addr, timeout=timeout)
            except ConnectionRefusedError:
                raise fail("dial tcp %s:%d: connect: connection refused" % addr)
            except socket.timeout:
                raise fail("context deadline exceeded")
            except OSError as e:
                raise fail("dial tcp %s:%d: %s" % (addr[0], addr[1], e.strerror or e))
            if fired.is_set():
                raise fail("context deadline exceeded")
            holder[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            holder[0].settimeout(max(0.01, deadline - time.monotonic()))
            try:
                tls = ctx.wrap_socket(holder[0], server_hostname=server)
            except ssl.SSLCertVerificationError as e:
                raise fail("tls: failed to verify certificate: " + _x509_reason(e))
            except ssl.SSLError as e:
                if fired.is_set() or time.monotonic() >= deadline:
                    raise fail("context deadline exceeded")
                if "WRONG_VERSION_NUMBER" in str(e) or "record layer failure" in str(e):
                    raise fail("http: server gave HTTP response to HTTPS client")
                raise fail("remote error: tls: %s" % (e.reason or e).lower().replace("_", " "))
            holder[0] = tls
            why = _hostname_mismatch(tls.getpeercert(), server)
            if why:
                raise fail("tls: failed to verify certificate: " + why)
            tls.settimeout(max(0.01, deadline - time.monotonic()))
            conn = http.client.HTTPConnection(server, port)
            conn.sock = tls
            conn.request("POST", target, body=json.dumps(body).encode(),
                         headers={"Content-Type": JSON, "Accept": "application/json, */*",
                                  "User-Agent": "kube-apiserver-admission"})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, (resp.getheader("Content-Type") or "").lower(), data
        except (OSError, http.client.HTTPException) as e:
            if fired.is_set() or time.monotonic() >= deadline:
                raise fail("context deadline exceeded")
            if isinstance(e, (http.client.RemoteDisconnected, ssl.SSLEOFError, http.client.IncompleteRead)):
                raise fail("EOF")
            if isinstance(e, ConnectionResetError):
                raise fail("read tcp %s:%d: read: connection reset by peer" % addr)
            raise fail(str(e))
        finally:
            timer.cancel()
            if holder[0] is not None:
                try:
                    holder[0].close()
                except OSError:
                    pass

    def _call(self, h, inv, a, mutating):
        """One AdmissionReview round trip: the verified response (patch decoded to `_patch`)."""
        name = h.get("name") or ""
        if a.review.dry:
            if h.get("sideEffects") is None:
                raise CallFailure("Webhook SideEffects is nil")
            if h["sideEffects"] not in ("None", "NoneOnDryRun"):
                raise ApiError(400, "BadRequest", 'admission webhook "%s" does not support dry run' % name)
        version = next((v for v in h.get("admissionReviewVersions") or [] if v in ("v1", "v1beta1")), None)
        if version is None:
            raise CallFailure("could not create admission objects: webhook does not accept known AdmissionReview "
                              "versions (v1, v1beta1)")
        uid = str(uuid.uuid4())
        request = {"uid": uid, "kind": {"group": inv.group, "version": inv.version, "kind": inv.kind},
                   "resource": {"group": inv.group, "version": inv.version, "resource": inv.plural},
                   "requestKind": {"group": a.res.group, "version": a.res.version, "kind": a.res.kind},
                   "requestResource": {"group": a.res.group, "version": a.res.version, "resource": a.res.plural},
                   "operation": a.op, "userInfo": {"username": a.review.user, "groups": ["system:authenticated"]},
                   "object": self._versioned(a.obj, inv), "oldObject": self._versioned(a.old, inv),
                   "dryRun": bool(a.review.dry), "options": a.options}
        if a.sub:
            request["subResource"] = request["requestSubResource"] = a.sub
        if a.name:
            request["name"] = a.name
        if a.ns:
            request["namespace"] = a.ns
        self.emu.stats.webhook(name, "calls")
        if self.emu.verbose:
            sys.stderr.write("emulator: calling webhook %s: %s %s %s/%s\n" % (name, a.op, a.res.qualified, a.ns,
                                                                          a.name))
        code, ctype, data = self._post(h, {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/" + version,
                                            "request": request})
        if not 200 <= code <= 206:
            raise CallFailure("failed to call webhook: " + _http_error(code, ctype, data))
        try:
            review = json.loads(data)
            if not isinstance(review, dict):
                raise ValueError("json: cannot unmarshal %s into Go value of type v1.AdmissionReview"
                                 % type(review).__name__)
        except ValueError as e:
            raise CallFailure("failed to call webhook: couldn't get version/kind; json parse error: %s" % e)
        resp = review.get("response")
        bad = "received invalid webhook response: "
        if not isinstance(resp, dict):
            raise CallFailure(bad + "webhook response was absent")
        if version == "v1":
            if resp.get("uid") != uid:
                raise CallFailure(bad + 'expected response.uid="%s", got "%s"' % (uid, resp.get("uid") or ""))
            if (review.get("apiVersion"), review.get("kind")) != ("admission.k8s.io/v1", "AdmissionReview"):
                raise CallFailure(bad + "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, "
                                  "got " + _gvk_string(review.get("apiVersion"), review.get("kind")))
        if not isinstance(resp.get("allowed", False), bool):
            raise CallFailure("failed to call webhook: json: cannot unmarshal %s into Go struct field "
                              "AdmissionResponse.response.allowed of type bool" % type(resp["allowed"]).__name__)
        patch, ptype = resp.get("patch"), resp.get("patchType")
        if version == "v1beta1" and patch:
            ptype = "JSONPatch"
        try:
            resp["_patch"] = base64.b64decode(patch or "", validate=True)
        except (ValueError, TypeError):
            raise CallFailure("failed to call webhook: illegal base64 data in response.patch")
        if mutating:
            if resp["_patch"] and ptype is None:
                raise CallFailure(bad + "webhook returned response.patch but not response.patchType")
            if not resp["_patch"] and ptype is not None:
                raise CallFailure(bad + "webhook returned response.patchType but not response.patch")
            if ptype == "":
                raise CallFailure(bad + 'webhook returned invalid response.patchType of ""')
        elif version == "v1":
            if resp["_patch"]:
                raise CallFailure(bad + "validating webhook may not return response.patch")
            if ptype is not None:
                raise CallFailure(bad + "validating webhook may not return response.patchType")
        for w in resp.get("warnings") or []:
            if isinstance(w, str) and w.strip():
                a.review.warn(w)
        return resp

    def _failed(self, h, failure):
        name = h.get("name") or ""
        self.emu.stats.webhook(name, "failures")
        if (h.get("failurePolicy") or "Fail") == "Ignore":
            if self.emu.verbose:
                sys.stderr.write("emulator: failed calling webhook, failing open %s: %s\n" % (name, failure.reason))
            return None
        return _internal('failed calling webhook "%s": %s' % (name, failure.reason))

    def _invoke(self, h, inv, a, mutating):
        """Call one webhook: its response when it allows (None when a failure is ignored); a denial,
        or a failure under failurePolicy Fail, raises."""
        name = h.get("name") or ""
        try:
            resp = self._call(h, inv, a, mutating)
        except CallFailure as f:
            err = self._failed(h, f)
            if err is None:
                return None
            raise err
        if resp.get("allowed"):
            return resp
        # errors.ToStatusErr (1.32): the webhook's Status, code < 400 made 400, message prefixed.
        self.emu.stats.webhook(name, "denials")
        st = resp.get("status") if isinstance(resp.get("status"), dict) else {}
        code = st.get("code") if isinstance(st.get("code"), int) else 0
        denied = 'admission webhook "%s" denied the request' % name
        if st.get("message"):
            msg = "%s: %s" % (denied, st["message"])
        elif st.get("reason"):
            msg = "%s: %s" % (denied, st["reason"])
        else:
            msg = denied + " without explanation"
        err = ApiError(code if code >= 400 else 400, st.get("reason") or "", msg, st.get("details"))
        err.state = st.get("status") if st.get("status") not in (None, "", "Success") else "Failure"
        raise err

    def mutate(self, a):
        """The mutating webhooks in order, each JSON patch applied to a.obj; IfNeeded webhooks once
        more if a later one changed the object."""
        hooks = [] if a.res.group == ADMREG else self._hooks(True)
        invoked, again = [], set()
        for rnd in (0, 1):
            for i, (_cfg, h) in enumerate(hooks):
                if rnd and i not in again:
                    continue
                inv = self._match(h, a)
                if inv is None:
                    continue
                changed = self._mutate_one(h, inv, a)
                if not rnd:
                    if changed:
                        again.update(invoked)
                    if h.get("reinvocationPolicy") == "IfNeeded":
                        invoked.append(i)
            if not again:
                break
        return a.obj

    def _mutate_one(self, h, inv, a):
        resp = self._invoke(h, inv, a, True)
        if resp is None or not resp["_patch"]:
            return False
        try:
            ops = json.loads(resp["_patch"])
        except ValueError as e:
            raise _internal(str(e))
        if not isinstance(ops, list):
            raise _internal("json: cannot unmarshal %s into Go value of type jsonpatch.Patch" % type(ops).__name__)
        if not ops:
            return False
        if a.obj is None:
            raise _internal('admission webhook "%s" attempted to modify the object, which is not supported for '
                            'this operation' % h.get("name"))
        if resp.get("patchType") not in ("JSONPatch", None):
            err = self._failed(h, CallFailure('unsupported patch type "%s"' % resp.get("patchType")))
            if err is None:
                return False
            raise err
        cur = self._versioned(a.obj, inv)
        try:
            new = json_patch(cur, ops)
        except ApiError as e:
            raise _internal(e.message)
        if not isinstance(new, dict):
            raise _internal("the patched object is not a JSON object")
        changed = new != cur
        if a.res.skey == EVENTS_SKEY and new.get("apiVersion") == inv.api_version:
            new = self._versioned(new, a.res)  # back to the request's shape
        new["apiVersion"] = a.res.api_version if new.get("apiVersion") == inv.api_version else new.get("apiVersion")
        a.obj = new
        return changed

    def validate(self, a):
        """The validating webhooks that match, called in parallel; the first error to come back wins."""
        if a.res.group == ADMREG:
            return
        calls = [(h, inv) for _cfg, h in self._hooks(False) for inv in [self._match(h, a)] if inv is not None]
        errors, lock = [], threading.Lock()

        def run(h, inv):
            try:
                self._invoke(h, inv, a, False)
            except ApiError as e:
                with lock:
                    errors.append(e)
            except Exception as e:  # noqa: BLE001 - a crash in one call fails the request, as a panic does
                with lock:
                    errors.append(_internal("ValidatingAdmissionWebhook/%s has panicked: %r" % (h.get("name"), e)))
        if len(calls) == 1:
            run(*calls[0])
        else:
            threads = [threading.Thread(target=run, args=c, daemon=True) for c in calls]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]

    # -- the write verbs, webhooks included
    @staticmethod
    def _ns_attr(res, ns, name):
        """The request namespace admission sees: the namespace's own name for a namespace."""
        if res.group == "" and res.plural == "namespaces":
            return name or ""
        return (ns or "") if res.namespaced else ""

    def create(self, res, ns, body, dry, strict, review, sub=None, options=None):
        store = self.store
        if not self.active(res, ["CREATE"], sub):
            return store.create(res, ns, body, dry, strict)
        if not isinstance(body, dict):
            raise bad_request("the object provided is unrecognized (must be a JSON object)")
        obj = jcopy(body)
        meta = obj.setdefault("metadata", {})
        with store.lock:  # what the handler and NamespaceLifecycle refuse before any webhook
            store._check_meta(res, obj)
            if res.skey == EVENTS_SKEY:
                store._check_type(res, obj)  # decoded before admission: its shape is the request's
            kind = obj.get("kind")
            if kind and kind != res.kind:
                raise bad_request("the kind in the data (%s) does not match the expected kind (%s)" % (kind, res.kind))
            if res.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match the namespace sent on "
                                      "the request")
                meta["namespace"] = ns
                store._namespace_exists(ns)
        name = meta.get("name") or ""
        a = Attrs("CREATE", res, self._ns_attr(res, ns, name), name, sub, obj, None, review,
                  options or review.options("CreateOptions"))
        obj = self.mutate(a)
        with store.lock:
            final, warnings = store.create_prepare(res, ns, obj, strict)
        a.obj = final
        self.validate(a)
        with store.lock:
            if dry:
                return store.out(final, res), warnings
            return store.create_commit(res, ns, final), warnings

    def _update_once(self, res, ns, name, body, old, sub, dry, strict, review):
        store, key = self.store, (ns or "", name)
        obj = jcopy(body)
        if res.skey == EVENTS_SKEY:
            with store.lock:
                store._check_type(res, obj)
        if isinstance(obj.get("metadata"), dict) and res.namespaced and not obj["metadata"].get("namespace"):
            obj["metadata"]["namespace"] = ns
        a = Attrs("UPDATE", res, self._ns_attr(res, ns, name), name, sub, obj, old, review,
                  review.options("UpdateOptions"))
        obj = self.mutate(a)
        with store.lock:
            if store._coll(res).get(key) is not old:
                return None
            plan = store.update_prepare(res, ns, name, obj, sub, strict)
        a.obj = plan["result"]
        self.validate(a)
        with store.lock:
            if store._coll(res).get(key) is not old:
                return None
            return store.update_commit(res, plan, dry), plan["warnings"]

    def _current(self, res, ns, name):
        with self.store.lock:
            old = self.store._coll(res).get((ns or "", name))
        if old is None:
            raise not_found(res, name)
        return old

    def update(self, res, ns, name, body, sub, dry, strict, review):
        if not self.active(res, ["UPDATE"], sub):
            return self.store.update(res, ns, name, body, sub, dry, strict)
        if not isinstance(body, dict):
            raise bad_request("the object provided is unrecognized (must be a JSON object)")
        for _ in range(self.RETRIES):
            done = self._update_once(res, ns, name, body, self._current(res, ns, name), sub, dry, strict, review)
            if done is not None:
                return done
        raise conflict(res, name, "the object has been modified; please apply your changes to the latest version "
                       "and try again")

    def patch(self, res, ns, name, ptype, body, sub, dry, strict, review):
        if not self.active(res, ["UPDATE", "CREATE"], sub):
            return self.store.patch(res, ns, name, ptype, body, sub, dry, strict)
        for _ in range(self.RETRIES):
            old, patched = self.store.patch_target(res, ns, name, ptype, body, sub)
            if old is None:
                obj, w = self.create(res, ns, patched, dry, strict, review, sub, review.options("CreateOptions"))
                return obj, w, 201
            done = self._update_once(res, ns, name, patched, old, sub, dry, strict, review)
            if done is not None:
                return done + (200,)
        raise conflict(res, name, "the object has been modified; please apply your changes to the latest version "
                       "and try again")

    def delete(self, res, ns, name, opts, dry, review, collection=None):
        """collection: for each object of a deletecollection, the request's namespace ("" for all):
        the webhooks are told that namespace and no name, as kube-apiserver's static attributes."""
        store = self.store
        if not self.active(res, ["DELETE"], None):
            return store.delete(res, ns, name, opts, dry)
        for _ in range(self.RETRIES):
            old = self._current(res, ns, name)
            with store.lock:
                store.delete_preconditions(res, name, old, opts)
            if collection is None:
                a_ns, a_name = self._ns_attr(res, ns, name), name
            else:
                a_ns, a_name = collection if res.namespaced else "", ""
            a = Attrs("DELETE", res, a_ns, a_name, None, None, old, review, review.options("DeleteOptions", opts))
            self.mutate(a)
            self.validate(a)
            with store.lock:
                if store._coll(res).get((ns or "", name)) is old:
                    return store.delete(res, ns, name, opts, dry)
        raise conflict(res, name, "the object has been modified; please apply your changes to the latest version "
                       "and try again")


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
            for one in (v if isinstance(v, list) else [v]):
                self.send_header(k, one)
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
        self.garbage, self.review = False, None
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
            headers = dict(e.headers)
            if self.review and self.review.warnings:
                headers.update(self._warn(self.review.warnings))
            try:
                self._json(e.code, e.status(), headers)
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
        adm = emu.admission
        if verb in ("create", "update", "patch", "delete", "deletecollection"):
            self.review = Review(self.headers.get("X-Emulator-User") or "kubernetes-admin", dry, q)
        if verb == "watch":
            return self._watch(res, ns, q)
        if verb == "list":
            return self._list(res, ns, q)
        if verb == "get":
            return self._object(200, store.get(res, ns, name), res, q)
        if verb == "create":
            obj, w = adm.create(res, ns, self._parse_body(), dry, strict, self.review)
            return self._object(201, obj, res, q, w)
        if verb == "update":
            body = self._parse_body()
            if res.skey == EVENTS_SKEY and isinstance(body, dict) and isinstance(body.setdefault("metadata", {}), dict):
                with store.lock:
                    missing = (ns or "", name) not in store._coll(res)
                if missing:  # the event strategy allows create on update
                    if body["metadata"].get("name") not in (None, name):
                        raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                          % (body["metadata"].get("name"), name))
                    body["metadata"]["name"] = name
                    obj, w = adm.create(res, ns, body, dry, strict, self.review)
                    return self._object(201, obj, res, q, w)
            obj, w = adm.update(res, ns, name, body, sub, dry, strict, self.review)
            return self._object(200, obj, res, q, w)
        if verb == "patch":
            ptype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            obj, w, code = adm.patch(res, ns, name, ptype, self._parse_body(), sub, dry, strict, self.review)
            return self._object(code, obj, res, q, w)
        if verb == "delete":
            try:
                opts = self._parse_body() if self.body.strip() else {}
            except ApiError:
                opts = {}  # e.g. protobuf DeleteOptions from a typed client: defaults will do
            obj = adm.delete(res, ns, name, opts if isinstance(opts, dict) else {}, dry, self.review)
            return self._object(200, obj, res, q)
        if verb == "deletecollection":
            items, rv, _, _ = store.list(res, ns, q)
            deleted = []
            for o in items:
                try:
                    deleted.append(adm.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], {}, dry,
                                              self.review, collection=ns or ""))
                except ApiError as e:
                    if e.code != 404:  # gone meanwhile is fine; a webhook's denial is not
                        raise
            # As the generic registry's DeleteCollection: the list of what was deleted (or marked).
            return self._json(200, {"kind": res.kind + "List", "apiVersion": res.api_version,
                                    "metadata": {"resourceVersion": str(rv)}, "items": deleted})
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
        texts = list(warnings or []) + [w for w in (self.review.warnings if self.review else [])
                                        if w not in (warnings or [])]
        return {"Warning": ['299 - "%s"' % "".join("\\" + c if c in '"\\' else c for c in w) for w in texts]} \
            if texts else None

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
        fsel = parse_field_selector(q.get("fieldSelector", ""), res)
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
        elif what == "service":
            if not q.get("namespace") or not q.get("name"):
                raise bad_request("namespace and name are required")
            if m == "DELETE":
                emu.admission.set_service(q["namespace"], q["name"], None)
            else:
                try:
                    addr = Admission.parse_address(q.get("address"))
                except ValueError as e:
                    raise bad_request(str(e))
                emu.admission.set_service(q["namespace"], q["name"], addr)
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
        self.admission = Admission(self, args.service_endpoints)
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
    ap.add_argument("--service-endpoint", action="append", default=[], metavar="NS/NAME=HOST:PORT",
                    help="where a webhook's clientConfig.service NS/NAME is served; repeatable")
    args = ap.parse_args()
    args.service_endpoints = {}
    for spec in args.service_endpoint:
        m = re.fullmatch(r"([^/=]+)/([^/=]+)=(.+)", spec)
        try:
            if not m:
                raise ValueError("expected NS/NAME=HOST:PORT")
            args.service_endpoints[(m.group(1), m.group(2))] = Admission.parse_address(m.group(3))
        except ValueError as e:
            ap.error("--service-endpoint %s: %s" % (spec, e))
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
