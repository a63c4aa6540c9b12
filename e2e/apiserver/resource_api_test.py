#!/usr/bin/env python3
"""resource.k8s.io/v1 (Dynamic Resource Allocation) on the API-server emulator, against the real
kubectl and a raw HTTP client (what the node agent's REST client does).

    resource_api_test.py [--kubectl PATH] [--kube-version 1.33.0] [--keep]

Starts apiserver_emulator.py in a temporary directory and checks: discovery (legacy and
aggregated: the four kinds, scopes, the claims' status subresource) and kubectl api-resources and
explain; kubectl apply/get/delete of a DeviceClass, ResourceSlices, a ResourceClaim and a
ResourceClaimTemplate (printer columns NAME NODE DRIVER POOL AGE and NAME STATE AGE, generation,
defaults, "status": {}); field selectors spec.nodeName and spec.driver on lists, kubectl
--field-selector and a watch (the selected slices' events only), spec.pool.name refused
as kube-apiserver refuses it; the claim's status subresource (allocation.devices.results written
through /status, the spec ignored there and the status ignored on the main resource, the state
column, immutable allocation, results that must name a request); invalid slices refused with 422
naming the field (a bad device name, 129 devices, a 65-byte string attribute, an unknown field, 33
attributes and capacities, a bad attribute name or domain, two node selections, a changed driver)
or 400 (a mistyped value, an unknown field under fieldValidation=Strict), the limits themselves
accepted; DELETE of the collection by field selector, as the kubelet does at its start (the answer:
the List of what went, the watch sees each go); deploy/dra/*.yaml (the DeviceClasses and the
examples, KubeVirt's VirtualMachine CRD applied first): every document the emulator serves applied
with --validate=strict, got back as written and re-applied without change, the Pod (no kind the
emulator serves) checked by its references only; the examples' references (classes, templates,
claims, requests, constraints) resolve within deploy/dra/, and each CEL selector reads the attributes
by names and values projection/resource_slices.cc publishes, through `.?name.orValue(...)` (a
missing attribute aborts the allocation). Prints each check and 'N passed, N failed'; exit 0 when
all pass.

--kube-version picks the kubectl the machine's dispatcher runs (1.33 is the newest it has; the
emulator serves resource.k8s.io/v1 whatever version it reports).
"""

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from kubectl_test import Emulator, Results, cells, read_events  # noqa: E402

GV = "resource.k8s.io/v1"
BASE = "/apis/" + GV
DRIVER = "pcidevices.io"
ROOT = os.path.dirname(os.path.dirname(HERE))
DRA_MANIFESTS = os.path.join(ROOT, "deploy", "dra")
VM_CRD = os.path.join(HERE, "virtualmachine-crd.yaml")
SLICES_SOURCE = os.path.join(ROOT, "projection", "resource_slices.cc")


class Client:
    """HTTPS to the emulator with the generated CA; answers (status, JSON or None, headers)."""

    def __init__(self, emu):
        self.emu, self.ctx = emu, ssl.create_default_context(cafile=emu.ca)

    def conn(self, timeout=10):
        return http.client.HTTPSConnection("127.0.0.1", self.emu.https, context=self.ctx, timeout=timeout)

    def req(self, method, path, body=None, ctype="application/json", headers=None):
        c = self.conn()
        h = dict(headers or {}, Authorization="Bearer " + self.emu.token)
        if body is not None:
            h["Content-Type"] = ctype
            body = json.dumps(body).encode()
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
        finally:
            c.close()
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            obj = None
        return r.status, obj, r.headers

    def watch(self, path, timeout=10):
        c = self.conn(timeout)
        c.request("GET", path, headers={"Authorization": "Bearer " + self.emu.token})
        return c, c.getresponse()


def causes(obj):
    return [(c.get("field"), c.get("reason")) for c in ((obj or {}).get("details") or {}).get("causes") or []]


def device(name, **attrs):
    """A device as the node agent publishes a PCI function (KEP-4381's standard attributes, the rest
    in the driver's domain, unqualified)."""
    return {"name": name, "attributes": dict({
        "resource.kubernetes.io/pciBusID": {"string": "0000:3f:06.3"},
        "resource.kubernetes.io/pcieRoot": {"string": "pci0000:3a"}, "resource.kubernetes.io/numaNode": {"int": 0},
        "bus": {"string": "pci"}, "vendorID": {"string": "8086"}, "deviceID": {"string": "0d4c"},
        "iommuGroup": {"int": 12}, "resourceName": {"string": "intel.com/ETHERNET_CONNECTION_11_I219LM"},
        DRIVER + "/driver": {"string": "e1000e"}}, **attrs), "capacity": {"memory": {"value": "16Gi"}}}


def a_slice(name, node, devices=None, driver=DRIVER, **spec):
    """A node-local slice of one pool named after the node (two devices unless told)."""
    if devices is None:
        devices = [device("pci-0000-3f-06-3"), device("pci-0000-3f-06-4")]
    return {"apiVersion": GV, "kind": "ResourceSlice", "metadata": {"name": name}, "spec": dict(
        {"driver": driver, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
         "devices": devices}, **spec)}


def dig(o, *path):
    """o[path[0]][path[1]]..., None where a step is missing."""
    for k in path:
        try:
            o = o[k]
        except (KeyError, IndexError, TypeError):
            return None
    return o


def names_of(obj):
    return sorted(i["metadata"]["name"] for i in (obj or {}).get("items", []))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", default=shutil.which("kubectl") or "/usr/bin/kubectl")
    ap.add_argument("--kube-version", default="1.33.0", help="what the emulator's /version says")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    t = Results()
    work = tempfile.mkdtemp(prefix="apiserver-dra-test-")
    home = os.path.join(work, "home")
    os.makedirs(home)
    emu = Emulator(work, args.kube_version)
    env = dict(os.environ, HOME=home, KUBECONFIG=emu.kubeconfig)
    env.pop("KUBECACHEDIR", None)

    def kubectl(*a, input=None, timeout=60):
        p = subprocess.run([args.kubectl, *a], input=input, capture_output=True, text=True, env=env, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    http_ = Client(emu)
    try:
        discovery(t, kubectl, http_)
        device_classes(t, kubectl, http_)
        slices(t, kubectl, http_)
        invalid_slices(t, kubectl, http_)
        claims(t, kubectl, http_)
        claim_templates(t, kubectl, http_)
        delete_collection(t, kubectl, http_)
        deploy_manifests(t, kubectl, http_)
    except Exception as e:  # noqa: BLE001 - a crash is one more failure, reported
        import traceback
        traceback.print_exc()
        t.check("test ran to the end", False, repr(e))
    finally:
        emu.stop()
        if args.keep:
            print("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (t.passed, t.failed))
    return 0 if t.failed == 0 and t.passed > 0 else 1


def discovery(t, kubectl, http_):
    rc, out, err = kubectl("api-resources", "--api-group=resource.k8s.io")
    rows = {c[0]: c for c in (cells(x) for x in out.splitlines()[1:]) if c}
    want = {"deviceclasses": ["deviceclasses", GV, "false", "DeviceClass"],
            "resourceclaims": ["resourceclaims", GV, "true", "ResourceClaim"],
            "resourceclaimtemplates": ["resourceclaimtemplates", GV, "true", "ResourceClaimTemplate"],
            "resourceslices": ["resourceslices", GV, "false", "ResourceSlice"]}
    t.check("kubectl api-resources --api-group=resource.k8s.io: the four kinds, their scope, no short names",
            rc == 0 and rows == want, out + err)
    st, obj, _ = http_.req("GET", BASE)
    res = {r["name"]: r for r in (obj or {}).get("resources", [])}
    t.check("legacy discovery: resourceclaims/status (get, patch, update), all verbs on the kinds",
            st == 200 and sorted(res) == ["deviceclasses", "resourceclaims", "resourceclaims/status",
                                          "resourceclaimtemplates", "resourceslices"] and
            res["resourceclaims/status"]["verbs"] == ["get", "patch", "update"] and
            "deletecollection" in res["resourceslices"]["verbs"] and "watch" in res["resourceslices"]["verbs"], obj)
    st, obj, _ = http_.req("GET", "/apis", headers={
        "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"})
    group = next((g for g in (obj or {}).get("items", []) if g["metadata"].get("name") == "resource.k8s.io"), {})
    res = {r["resource"]: r for v in group.get("versions", []) for r in v["resources"]}
    t.check("aggregated discovery: resource.k8s.io v1, scopes, the claims' status subresource",
            st == 200 and [v["version"] for v in group.get("versions", [])] == ["v1"] and
            res.get("resourceslices", {}).get("scope") == "Cluster" and
            res.get("resourceclaims", {}).get("scope") == "Namespaced" and
            [s["subresource"] for s in res.get("resourceclaims", {}).get("subresources", [])] == ["status"] and
            "subresources" not in res.get("resourceslices", {}), group)
    rc, out, err = kubectl("explain", "resourceslices.spec.devices")
    t.check("kubectl explain resourceslices.spec.devices (the published schema)", rc == 0 and
            "attributes" in out and "capacity" in out and "consumesCounters" in out, out + err)


DEVICE_CLASS = """apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata:
  name: pcidevices.io
spec:
  selectors:
  - cel:
      expression: device.driver == "pcidevices.io"
  config:
  - opaque:
      driver: pcidevices.io
      parameters:
        apiVersion: pcidevices.io/v1alpha1
        kind: PCIConfig
        vfio: %s
"""


def device_classes(t, kubectl, http_):
    rc, out, err = kubectl("apply", "-f", "-", input=DEVICE_CLASS % "true")
    rc2, out2, err2 = kubectl("get", "deviceclass", DRIVER, "-o", "json")
    obj = json.loads(out2) if rc2 == 0 else {}
    t.check("kubectl apply creates a DeviceClass; generation 1, the spec kept", rc == 0 and
            "deviceclass.resource.k8s.io/pcidevices.io created" in out and obj.get("kind") == "DeviceClass" and
            dig(obj, "metadata", "generation") == 1 and
            dig(obj, "spec", "config", 0, "opaque", "parameters", "vfio") is True and
            dig(obj, "spec", "selectors", 0, "cel", "expression") == 'device.driver == "pcidevices.io"',
            out + err + out2 + err2)
    rc, out, err = kubectl("apply", "-f", "-", input=DEVICE_CLASS % "true")
    t.check("re-applying the DeviceClass changes nothing", rc == 0 and "unchanged" in out, out + err)
    rc, out, err = kubectl("apply", "-f", "-", input=DEVICE_CLASS % "false")
    rc2, out2, _ = kubectl("get", "deviceclass", DRIVER, "-o", "jsonpath={.metadata.generation}")
    t.check("a spec change through apply: configured, generation 2", rc == 0 and "configured" in out and
            out2 == "2", out + err + out2)
    rc, out, err = kubectl("get", "deviceclasses")
    lines = out.splitlines()
    t.check("kubectl get deviceclasses: NAME AGE", rc == 0 and len(lines) == 2 and
            cells(lines[0]) == ["NAME", "AGE"] and cells(lines[1])[0] == DRIVER, out + err)
    bad = {"apiVersion": GV, "kind": "DeviceClass", "metadata": {"name": "broken"},
           "spec": {"config": [{"opaque": {"driver": "Not A Driver", "parameters": [1]}}], "selectors": [{}]}}
    st, obj, _ = http_.req("POST", BASE + "/deviceclasses", bad)
    t.check("an invalid DeviceClass is 422 naming the driver, the parameters and the selector",
            st == 422 and obj["reason"] == "Invalid" and
            {("spec.config[0].opaque.driver", "FieldValueInvalid"), ("spec.config[0].opaque.parameters",
                                                                     "FieldValueInvalid"),
             ("spec.selectors[0].cel", "FieldValueRequired")} <= set(causes(obj)), obj)
    rc, out, err = kubectl("delete", "deviceclass", "broken")
    t.check("the invalid DeviceClass was not stored", rc != 0 and "NotFound" in err, out + err)
    rc, out, err = kubectl("delete", "deviceclass", DRIVER)
    rc2, out2, err2 = kubectl("get", "deviceclasses")
    t.check("kubectl delete deviceclass", rc == 0 and "deviceclass.resource.k8s.io \"pcidevices.io\" deleted" in out
            and "No resources found" in err2, out + err + out2 + err2)


def slices(t, kubectl, http_):
    s1, s2 = a_slice("n1-pcidevices.io-a", "n1"), a_slice("n2-pcidevices.io-a", "n2")
    other = a_slice("n1-other.example.com", "n1", driver="other.example.com", devices=[device("gpu-0")])
    rc, out, err = kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                 "items": [s1, s2, other]}))
    t.check("kubectl apply creates three ResourceSlices", rc == 0 and out.count(" created") == 3, out + err)
    rc, out, err = kubectl("get", "resourceslice", s1["metadata"]["name"], "-o", "json")
    obj = json.loads(out) if rc == 0 else {}
    t.check("a slice as stored: generation 1, the devices, attributes and capacity as sent",
            dig(obj, "metadata", "generation") == 1 and dig(obj, "spec", "devices") == s1["spec"]["devices"] and
            dig(obj, "spec", "pool") == s1["spec"]["pool"] and dig(obj, "spec", "nodeName") == "n1", out + err)
    rc, out, err = kubectl("apply", "-f", "-", input=json.dumps(s1))
    t.check("re-applying a slice changes nothing", rc == 0 and "unchanged" in out, out + err)
    rc, out, err = kubectl("get", "resourceslices")
    lines = out.splitlines()
    rows = {c[0]: c[1:4] for c in (cells(x) for x in lines[1:])}
    t.check("kubectl get resourceslices: NAME NODE DRIVER POOL AGE and the rows", rc == 0 and lines and
            cells(lines[0]) == ["NAME", "NODE", "DRIVER", "POOL", "AGE"] and rows == {
                "n1-pcidevices.io-a": ["n1", DRIVER, "n1"], "n2-pcidevices.io-a": ["n2", DRIVER, "n2"],
                "n1-other.example.com": ["n1", "other.example.com", "n1"]}, out + err)
    rc, out, err = kubectl("get", "resourceslices", "--field-selector", "spec.nodeName=n1", "-o", "name")
    t.check("kubectl get resourceslices --field-selector spec.nodeName=n1", rc == 0 and sorted(out.split()) == [
        "resourceslice.resource.k8s.io/n1-other.example.com", "resourceslice.resource.k8s.io/n1-pcidevices.io-a"],
        out + err)
    cases = [("spec.nodeName=n1", ["n1-other.example.com", "n1-pcidevices.io-a"]),
             ("spec.driver=" + DRIVER, ["n1-pcidevices.io-a", "n2-pcidevices.io-a"]),
             ("spec.nodeName=n1,spec.driver=" + DRIVER, ["n1-pcidevices.io-a"]),
             ("spec.nodeName!=n1", ["n2-pcidevices.io-a"]), ("spec.nodeName=n3", []),
             ("metadata.name=n2-pcidevices.io-a", ["n2-pcidevices.io-a"])]
    got = {}
    for sel, _ in cases:
        st, obj, _ = http_.req("GET", BASE + "/resourceslices?fieldSelector=" + quote(sel))
        got[sel] = names_of(obj) if st == 200 else (st, obj)
    t.check("list with fieldSelector spec.nodeName, spec.driver, both, !=, metadata.name",
            all(got[s] == want for s, want in cases), got)
    st, obj, _ = http_.req("GET", BASE + "/resourceslices?fieldSelector=" + quote("spec.pool.name=n1"))
    t.check("fieldSelector spec.pool.name is 400, as kube-apiserver's field label conversion says", st == 400 and
            obj["message"] == "field label not supported for resource.k8s.io/v1, Kind=ResourceSlice: spec.pool.name",
            obj)

    # A watch with the agent's selector: only its node's slices, an object leaving the selection is DELETED.
    st, listed, _ = http_.req("GET", BASE + "/resourceslices?fieldSelector=" + quote("spec.nodeName=n1,spec.driver=" +
                                                                                      DRIVER))
    rv = listed["metadata"]["resourceVersion"]
    conn, resp = http_.watch(BASE + "/resourceslices?watch=1&allowWatchBookmarks=false&resourceVersion=%s"
                                    "&fieldSelector=%s" % (rv, quote("spec.nodeName=n1,spec.driver=" + DRIVER)))
    s2["metadata"]["labels"] = {"touched": "yes"}
    http_.req("PUT", BASE + "/resourceslices/" + s2["metadata"]["name"], s2)  # another node: not seen
    upd = a_slice("n1-pcidevices.io-a", "n1", devices=[device("pci-0000-3f-06-3", model={"string": "I219-LM"})])
    upd["spec"]["pool"]["generation"] = 2
    st_u, obj_u, _ = http_.req("PUT", BASE + "/resourceslices/n1-pcidevices.io-a", upd)
    st_c, _, _ = http_.req("POST", BASE + "/resourceslices", a_slice("n1-pcidevices.io-b", "n1",
                                                                     devices=[device("pci-0000-00-02-0")]))
    http_.req("DELETE", BASE + "/resourceslices/n1-pcidevices.io-b")
    events, _ = read_events(resp, lambda evs: len(evs) >= 3, 10)
    conn.close()
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    t.check("watch with fieldSelector spec.nodeName=n1,spec.driver: MODIFIED, ADDED, DELETED of n1's slices only",
            st_u == 200 and st_c == 201 and seen == [("MODIFIED", "n1-pcidevices.io-a"),
                                                     ("ADDED", "n1-pcidevices.io-b"),
                                                     ("DELETED", "n1-pcidevices.io-b")] and
            dig(events, 0, "object", "spec", "pool", "generation") == 2, [seen, obj_u])
    t.check("a spec update bumps metadata.generation; a label change does not",
            (obj_u or {}).get("metadata", {}).get("generation") == 2 and
            (http_.req("GET", BASE + "/resourceslices/n2-pcidevices.io-a")[1] or {}).get("metadata", {}).get(
                "generation") == 1, obj_u)
    st, obj, _ = http_.req("GET", BASE + "/resourceslices?watch=1&fieldSelector=" + quote("spec.pool.name=x"))
    t.check("a watch with an unsupported field label is 400 too", st == 400, obj)


def invalid_slices(t, kubectl, http_):
    def post(s, query=""):
        return http_.req("POST", BASE + "/resourceslices" + query, s)

    bad = a_slice("bad-name", "n1", devices=[device("PCI_0000:3f:06.3")])
    st, obj, _ = post(bad)
    t.check("a device name that is no DNS label: 422 Invalid, spec.devices[0].name", st == 422 and
            obj["reason"] == "Invalid" and causes(obj) == [("spec.devices[0].name", "FieldValueInvalid")] and
            "a lowercase RFC 1123 label" in obj["message"], obj)
    st, obj, _ = post(a_slice("too-many", "n1", devices=[device("dev-%d" % i) for i in range(129)]))
    t.check("129 devices: 422, spec.devices: Too many: 129: must have at most 128 items", st == 422 and
            causes(obj) == [("spec.devices", "FieldValueTooMany")] and
            "spec.devices: Too many: 129: must have at most 128 items" in obj["message"], obj)
    st, obj, _ = post(a_slice("just-enough", "n9", devices=[device("dev-%d" % i) for i in range(128)]))
    t.check("128 devices are fine", st == 201, (st, (obj or {}).get("message")))
    st, obj, _ = post(a_slice("long-string", "n1", devices=[device("dev-0", model={"string": "x" * 65})]))
    t.check("a 65-byte string attribute: 422, spec.devices[0].attributes[model].string Too long", st == 422 and
            causes(obj) == [("spec.devices[0].attributes[model].string", "FieldValueTooLong")] and
            "may not be more than 64 bytes" in obj["message"], obj)
    st, obj, _ = post(a_slice("long-string-ok", "n9", devices=[device("dev-0", model={"string": "x" * 64})]))
    t.check("a 64-byte string attribute is fine", st == 201, (st, (obj or {}).get("message")))
    many = {"attr%d" % i: {"int": i} for i in range(23)}  # + the device's 9 attributes and 1 capacity
    st, obj, _ = post(a_slice("many-attributes", "n1", devices=[device("dev-0", **many)]))
    many.pop("attr22")
    st2, obj2, _ = post(a_slice("just-enough-attributes", "n9", devices=[device("dev-0", **many)]))
    t.check("33 attributes and capacities: 422 on spec.devices[0]; 32 are fine", st == 422 and
            causes(obj) == [("spec.devices[0]", "FieldValueInvalid")] and
            "the total number of attributes and capacities must not exceed 32" in obj["message"] and st2 == 201,
            [obj, obj2])
    long_domain = "a" * 60 + ".example.com/model"
    st, obj, _ = post(a_slice("long-domain", "n1", devices=[device("dev-0", **{long_domain: {"string": "x"}})]))
    t.check("an attribute domain over 63 bytes: 422 Too long on spec.devices[0].attributes", st == 422 and
            causes(obj) == [("spec.devices[0].attributes", "FieldValueTooLong")] and
            "may not be more than 63 bytes" in obj["message"], obj)
    unknown = a_slice("unknown-field", "n1")
    unknown["spec"]["devices"][1]["basic"] = {"attributes": {}}
    st, obj, _ = post(unknown)
    t.check("an unknown field without fieldValidation: 422 naming spec.devices[1].basic", st == 422 and
            causes(obj) == [("spec.devices[1].basic", "FieldValueForbidden")], obj)
    st, obj, _ = post(unknown, "?fieldValidation=Strict")
    t.check("an unknown field with fieldValidation=Strict: 400 strict decoding error naming it", st == 400 and
            obj["message"] == 'ResourceSlice in version "v1" cannot be handled as a ResourceSlice: strict decoding '
                              'error: unknown field "spec.devices[1].basic"', obj)
    st, obj, headers = post(unknown, "?fieldValidation=Warn")
    t.check("fieldValidation=Warn: created without the field, a Warning names it", st == 201 and
            "basic" not in dig(obj, "spec", "devices", 1) and 'unknown field \\"spec.devices[1].basic\\"' in
            (headers.get("Warning") or ""), (st, obj, headers.get("Warning")))
    rc, out, err = kubectl("apply", "-f", "-", input=json.dumps(dict(unknown, metadata={"name": "unknown-kubectl"})))
    t.check("kubectl apply of a slice with an unknown field: the server's strict decoding error", rc != 0 and
            'unknown field "spec.devices[1].basic"' in err, out + err)
    typed = a_slice("mistyped", "n1")
    typed["spec"]["pool"]["resourceSliceCount"] = "1"
    st, obj, _ = post(typed)
    t.check("a mistyped value is 400, as the Go decoder says", st == 400 and "json: cannot unmarshal string into Go "
            "struct field ResourcePool.spec.pool.resourceSliceCount of type int64" in obj["message"], obj)
    rules = a_slice("rules", "n1", devices=[
        device("dev-0", **{"vendor-id": {"string": "8086"}}),
        device("dev-1", model={"string": "a", "int": 1}),
        device("dev-1", version={"version": "1.2"}),
        device("dev-3", **{"a" * 33: {"bool": True}})], allNodes=True)
    rules["spec"]["pool"].update(resourceSliceCount=0, generation=-1)
    rules["spec"]["driver"] = "PCIDevices_io"
    st, obj, _ = post(rules)
    want = [("spec.driver", "FieldValueInvalid"), ("spec.pool.resourceSliceCount", "FieldValueInvalid"),
            ("spec.pool.generation", "FieldValueInvalid"), ("spec", "FieldValueInvalid"),
            ("spec.devices[0].attributes", "FieldValueInvalid"),
            ("spec.devices[1].attributes[model]", "FieldValueInvalid"),
            ("spec.devices[2].attributes[version].version", "FieldValueInvalid"),
            ("spec.devices[3].attributes", "FieldValueTooLong"), ("spec.devices[2]", "FieldValueDuplicate")]
    t.check("the server-side rules: driver, pool counts, one node selection, C-identifier names <= 32, one value "
            "per attribute, semver, unique device names", st == 422 and causes(obj) == want, [causes(obj), obj])
    none = a_slice("no-node", "n1")
    del none["spec"]["nodeName"]
    st, obj, _ = post(none)
    t.check("no node selection at all: 422 Required on spec", st == 422 and causes(obj) == [("spec",
                                                                                            "FieldValueRequired")], obj)
    moved = a_slice("n2-pcidevices.io-a", "n2", driver="other.example.com")
    st, obj, _ = http_.req("PUT", BASE + "/resourceslices/n2-pcidevices.io-a", moved)
    t.check("the driver of a slice is immutable: 422 on spec.driver", st == 422 and
            causes(obj) == [("spec.driver", "FieldValueInvalid")] and "field is immutable" in obj["message"], obj)
    for name in ("just-enough", "long-string-ok", "unknown-field", "just-enough-attributes"):
        http_.req("DELETE", BASE + "/resourceslices/" + name)


CLAIM = {"apiVersion": GV, "kind": "ResourceClaim", "metadata": {"name": "vm-gpu", "namespace": "default"},
         "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": DRIVER}}]}},
         "status": {"allocation": {"devices": {"results": [{"request": "nic", "driver": DRIVER, "pool": "n1",
                                                            "device": "pci-0000-3f-06-3"}]}}}}


def claims(t, kubectl, http_):
    path = BASE + "/namespaces/default/resourceclaims/vm-gpu"
    rc, out, err = kubectl("apply", "-f", "-", input=json.dumps(CLAIM))
    rc2, out2, err2 = kubectl("get", "resourceclaim", "vm-gpu", "-o", "json")
    obj = json.loads(out2) if rc2 == 0 else {}
    t.check("kubectl apply creates a ResourceClaim: status dropped ({}), allocationMode and count defaulted",
            rc == 0 and "resourceclaim.resource.k8s.io/vm-gpu created" in out and obj.get("status") == {} and
            dig(obj, "spec", "devices", "requests", 0, "exactly") == {"deviceClassName": DRIVER,
                                                                      "allocationMode": "ExactCount", "count": 1} and
            "generation" not in obj["metadata"], out + err + out2 + err2)
    rc, out, err = kubectl("get", "resourceclaims")
    lines = out.splitlines()
    t.check("kubectl get resourceclaims: NAME STATE AGE, pending", rc == 0 and len(lines) == 2 and
            cells(lines[0]) == ["NAME", "STATE", "AGE"] and cells(lines[1])[:2] == ["vm-gpu", "pending"], out + err)

    # The allocation is written through /status; a spec in that body is ignored.
    st, cur, _ = http_.req("GET", path)
    body = json.loads(json.dumps(cur))
    body["status"] = CLAIM["status"]
    body["spec"]["devices"]["requests"][0]["exactly"]["count"] = 5
    st, obj, _ = http_.req("PUT", path + "/status", body)
    t.check("PUT /status with allocation.devices.results (driver, pool, device, request): 200, spec untouched",
            st == 200 and dig(obj, "status", "allocation", "devices", "results") ==
            CLAIM["status"]["allocation"]["devices"]["results"] and obj["spec"] == cur["spec"] and
            int(obj["metadata"]["resourceVersion"]) > int(cur["metadata"]["resourceVersion"]), obj)
    body = json.loads(json.dumps(obj))
    body["status"] = {}
    body["metadata"]["labels"] = {"vm": "vm1"}
    st, obj, _ = http_.req("PUT", path, body)
    t.check("an update of the main resource ignores the status", st == 200 and obj["metadata"].get("labels") ==
            {"vm": "vm1"} and dig(obj, "status", "allocation") == CLAIM["status"]["allocation"], obj)
    rc, out, err = kubectl("patch", "resourceclaim", "vm-gpu", "--subresource=status", "--type=merge", "-p",
                           json.dumps({"status": {"reservedFor": [{"resource": "pods", "name": "virt-launcher",
                                                                   "uid": "5d1b0a2c-3c7e-4c1e-9f3a-2b8c1d0e4f6a"}]}}))
    rc2, out2, _ = kubectl("get", "resourceclaims", "--no-headers")
    t.check("kubectl patch --subresource=status adds reservedFor; STATE allocated,reserved", rc == 0 and
            cells(out2)[:2] == ["vm-gpu", "allocated,reserved"], out + err + out2)
    st, cur, _ = http_.req("GET", path)
    body = json.loads(json.dumps(cur))
    moved = json.loads(json.dumps(CLAIM["status"]["allocation"]))
    moved["devices"]["results"][0]["device"] = "pci-0000-3f-06-4"
    body.setdefault("status", {})["allocation"] = moved
    st, obj, _ = http_.req("PUT", path + "/status", body)
    t.check("an allocation is immutable once set: 422 on status.allocation", st == 422 and
            causes(obj) == [("status.allocation", "FieldValueInvalid")] and "field is immutable" in obj["message"],
            obj)
    body = json.loads(json.dumps(cur))
    body.setdefault("status", {})["devices"] = [{"driver": DRIVER, "pool": "n1", "device": "pci-0000-3f-06-4"}]
    st, obj, _ = http_.req("PUT", path + "/status", body)
    t.check("status.devices must name an allocated device: 422 on status.devices[0]", st == 422 and
            causes(obj) == [("status.devices[0]", "FieldValueInvalid")] and
            "pcidevices.io/n1/pci-0000-3f-06-4: must be an allocated device in the claim" in obj["message"], obj)
    body["status"]["devices"][0]["device"] = "pci-0000-3f-06-3"
    body["status"]["devices"][0]["conditions"] = [{"type": "Ready", "status": "True", "reason": "Prepared",
                                                   "message": "", "lastTransitionTime": "2025-01-02T03:04:05Z"}]
    st, obj, _ = http_.req("PUT", path + "/status", body)
    t.check("the driver's status.devices entry for the allocated device is stored", st == 200 and
            dig(obj, "status", "devices", 0, "conditions", 0, "reason") == "Prepared", obj)
    st, body, _ = http_.req("GET", path)
    body["spec"]["devices"]["requests"][0]["name"] = "other"
    st, obj, _ = http_.req("PUT", path, body)
    t.check("the spec of a claim is immutable: 422 on spec", st == 422 and
            causes(obj) == [("spec", "FieldValueInvalid")], obj)

    fresh = json.loads(json.dumps(CLAIM))
    fresh["metadata"]["name"] = "vm-nic"
    del fresh["status"]
    st, made, _ = http_.req("POST", BASE + "/namespaces/default/resourceclaims", fresh)
    made["status"] = {"allocation": {"devices": {"results": [{"request": "gpu", "driver": DRIVER, "pool": "n1",
                                                              "device": "Bad.Device"}]}},
                      "reservedFor": [{"resource": "pods", "name": "p"}]}
    st2, obj, _ = http_.req("PUT", BASE + "/namespaces/default/resourceclaims/vm-nic/status", made)
    t.check("results must name a request of the claim and a DNS-label device; reservedFor needs a uid",
            st == 201 and st2 == 422 and causes(obj) == [
                ("status.reservedFor[0].uid", "FieldValueRequired"),
                ("status.allocation.devices.results[0].request", "FieldValueInvalid"),
                ("status.allocation.devices.results[0].device", "FieldValueInvalid")], obj)
    no_req = json.loads(json.dumps(fresh))
    no_req["metadata"]["name"] = "broken"
    no_req["spec"]["devices"]["requests"][0] = {"name": "nic", "exactly": {"deviceClassName": DRIVER,
                                                                             "allocationMode": "Some"}}
    st, obj, _ = http_.req("POST", BASE + "/namespaces/default/resourceclaims", no_req)
    t.check("an unknown allocationMode: 422 Unsupported value", st == 422 and causes(obj) == [
        ("spec.devices.requests[0].exactly.allocationMode", "FieldValueNotSupported")], obj)
    st, obj, _ = http_.req("GET", BASE + "/namespaces/default/resourceclaims?fieldSelector=" +
                           quote("metadata.name=vm-nic"))
    st2, obj2, _ = http_.req("GET", BASE + "/resourceclaims?fieldSelector=" + quote("spec.devices=x"))
    t.check("claims take metadata.* field selectors (across namespaces too), nothing else", st == 200 and
            names_of(obj) == ["vm-nic"] and st2 == 400 and
            obj2["message"] == '"spec.devices" is not a known field selector: only "metadata.name", '
                               '"metadata.namespace"', [obj, obj2])
    rc, out, err = kubectl("delete", "resourceclaim", "vm-gpu", "vm-nic")
    rc2, out2, err2 = kubectl("get", "resourceclaim", "vm-gpu")
    t.check("kubectl delete resourceclaim", rc == 0 and out.count("deleted") == 2 and rc2 != 0 and
            "NotFound" in err2, out + err + err2)


TEMPLATE = """apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata:
  name: one-nic
  namespace: default
spec:
  metadata:
    labels:
      app: vm
  spec:
    devices:
      requests:
      - name: nic
        firstAvailable:
        - name: fast
          deviceClassName: pcidevices.io
          selectors:
          - cel:
              expression: device.attributes["pcidevices.io"].iommuGroup > 0
        - name: any
          deviceClassName: pcidevices.io
          allocationMode: All
"""


def claim_templates(t, kubectl, http_):
    rc, out, err = kubectl("apply", "-f", "-", input=TEMPLATE)
    rc2, out2, err2 = kubectl("get", "resourceclaimtemplate", "one-nic", "-o", "json")
    obj = json.loads(out2) if rc2 == 0 else {}
    subs = obj.get("spec", {}).get("spec", {}).get("devices", {}).get("requests", [{}])[0].get("firstAvailable", [])
    t.check("kubectl apply creates a ResourceClaimTemplate; subrequests defaulted (ExactCount/1, All)",
            rc == 0 and "resourceclaimtemplate.resource.k8s.io/one-nic created" in out and len(subs) == 2 and
            subs[0].get("allocationMode") == "ExactCount" and subs[0].get("count") == 1 and
            subs[1].get("allocationMode") == "All" and "count" not in subs[1], out + err + out2 + err2)
    rc, out, err = kubectl("get", "resourceclaimtemplates")
    lines = out.splitlines()
    t.check("kubectl get resourceclaimtemplates: NAME AGE", rc == 0 and len(lines) == 2 and
            cells(lines[0]) == ["NAME", "AGE"] and cells(lines[1])[0] == "one-nic", out + err)
    rc, out, err = kubectl("apply", "-f", "-", input=TEMPLATE.replace("name: any", "name: other"))
    t.check("the template's spec is immutable (kubectl apply: 422 on spec)", rc != 0 and
            "spec: Invalid value" in err and "field is immutable" in err, out + err)
    rc, out, err = kubectl("delete", "-f", "-", input=TEMPLATE)
    t.check("kubectl delete -f the template", rc == 0 and "deleted" in out, out + err)


def delete_collection(t, kubectl, http_):
    for s in (a_slice("n7-pcidevices.io-a", "n7"), a_slice("n7-pcidevices.io-b", "n7", devices=[device("x")]),
              a_slice("n8-pcidevices.io-a", "n8")):
        http_.req("POST", BASE + "/resourceslices", s)
    st, before, _ = http_.req("GET", BASE + "/resourceslices")
    conn, resp = http_.watch(BASE + "/resourceslices?watch=1&resourceVersion=%s&fieldSelector=%s" % (
        before["metadata"]["resourceVersion"], quote("spec.nodeName=n7")))
    # The kubelet's start: DELETE /apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3Dn7
    st, obj, _ = http_.req("DELETE", BASE + "/resourceslices?fieldSelector=spec.nodeName%3Dn7")
    events, _ = read_events(resp, lambda evs: len(evs) >= 2, 10)
    conn.close()
    st2, after, _ = http_.req("GET", BASE + "/resourceslices")
    gone = {"n7-pcidevices.io-a", "n7-pcidevices.io-b"}
    t.check("DELETE collection with fieldSelector=spec.nodeName=n7: 200, a ResourceSliceList of the two",
            st == 200 and obj.get("kind") == "ResourceSliceList" and set(names_of(obj)) == gone, obj)
    t.check("only n7's slices are gone; the watch saw both DELETED", st2 == 200 and
            set(names_of(before)) - set(names_of(after)) == gone and "n8-pcidevices.io-a" in names_of(after) and
            sorted((e["type"], e["object"]["metadata"]["name"]) for e in events) ==
            [("DELETED", n) for n in sorted(gone)], [names_of(after), events])
    st, obj, _ = http_.req("DELETE", BASE + "/resourceslices?fieldSelector=" + quote("spec.driver=" + DRIVER) +
                           "&dryRun=All")
    st2, still, _ = http_.req("GET", BASE + "/resourceslices?fieldSelector=" + quote("spec.driver=" + DRIVER))
    t.check("a dry-run DELETE collection lists what it would delete and deletes nothing", st == 200 and
            names_of(obj) == names_of(still) and len(names_of(still)) >= 2, [obj, still])
    rc, out, err = kubectl("delete", "resourceslice", "n8-pcidevices.io-a")
    rc2, out2, err2 = kubectl("get", "resourceslice", "n8-pcidevices.io-a")
    t.check("kubectl delete resourceslice NAME", rc == 0 and 'resourceslice.resource.k8s.io "n8-pcidevices.io-a" '
            'deleted' in out and rc2 != 0 and "NotFound" in err2, out + err + err2)
    rc, out, err = kubectl("delete", "resourceslices", "--all")
    rc2, out2, err2 = kubectl("get", "resourceslices")
    t.check("kubectl delete resourceslices --all; none left", rc == 0 and "deleted" in out and rc2 == 0 and
            "No resources found" in err2, out + err + out2 + err2)


def manifest_documents(kubectl, path):
    """The documents of a manifest file as kubectl reads them (its local mode turns YAML into JSON
    without asking the server for the kinds: the emulator does not serve Pods)."""
    rc, out, err = kubectl("annotate", "--local", "-f", path, "pcidevices.io/none-", "-o", "json")
    if rc != 0:
        raise RuntimeError("kubectl cannot read %s: %s" % (path, err))
    docs, dec, i = [], json.JSONDecoder(), 0
    while True:
        while i < len(out) and out[i].isspace():
            i += 1
        if i >= len(out):
            return docs
        o, i = dec.raw_decode(out, i)
        docs.extend(o["items"] if o.get("kind") == "List" else [o])


def published_attributes():
    """What projection/resource_slices.cc writes into a device's attributes: {domain: {name}} and the
    literal values of `bus`."""
    src = open(SLICES_SOURCE).read()
    names = {DRIVER: set(), "resource.kubernetes.io": set()}
    for name in re.findall(r'\ba\.(?:String|Int)\("([^"]+)"', src):
        domain, _, attr = name.rpartition("/")
        names.setdefault(domain or DRIVER, set()).add(attr)
    return names, set(re.findall(r'\ba\.String\("bus", "([^"]+)"\)', src))


def cel_problems(expr, names, buses):
    """What is wrong with a selector, as the attributes are published: a bare attribute access (an
    error, which aborts the allocation, on a device without it), an attribute or a bus no device has."""
    problems = []
    for domain, rest in re.findall(r'device\.attributes\["([^"]+)"\]((?:\.\??[A-Za-z_][A-Za-z0-9_]*)?)', expr):
        if not rest.startswith(".?"):
            problems.append('device.attributes["%s"]%s: not through .?name.orValue(...)' % (domain, rest))
            continue
        if rest[2:] not in names.get(domain, set()):
            problems.append("%s/%s: no device carries it" % (domain, rest[2:]))
    for value in re.findall(r'\.\?bus\.orValue\(""\) == "([^"]*)"', expr):
        if value not in buses:
            problems.append('bus "%s": devices have %s' % (value, sorted(buses)))
    return problems


def deploy_manifests(t, kubectl, http_):
    rc, out, err = kubectl("apply", "-f", VM_CRD)
    t.check("kubectl apply the VirtualMachine CRD (for deploy/dra's VM example)", rc == 0, out + err)
    files = sorted(glob.glob(os.path.join(DRA_MANIFESTS, "*.yaml")))
    docs = [(os.path.relpath(f, ROOT), d) for f in files for d in manifest_documents(kubectl, f)]
    kinds = {(d["apiVersion"], d["kind"]) for _, d in docs}
    t.check("deploy/dra/*.yaml: DeviceClasses, ResourceClaimTemplates, a Pod and a VirtualMachine", kinds == {
        (GV, "DeviceClass"), (GV, "ResourceClaimTemplate"), ("v1", "Pod"), ("kubevirt.io/v1", "VirtualMachine")},
        [files, sorted(kinds)])
    classes = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "DeviceClass"}
    t.check("the four DeviceClasses", sorted(classes) == ["gpu.pcidevices.io", "nic.pcidevices.io",
                                                          "pci.pcidevices.io", "usb.pcidevices.io"], sorted(classes))
    served = [d for _, d in docs if d["kind"] != "Pod"]
    # The emulator serves the VirtualMachine kind once the CRD is in; kubectl's discovery may lag.
    for _ in range(20):
        rc, out, err = kubectl("get", "virtualmachines")
        if rc == 0:
            break
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": served})
    rc, out, err = kubectl("apply", "--validate=strict", "-f", "-", input=listing)
    t.check("kubectl apply --validate=strict of deploy/dra/*.yaml (all but the Pod): %d created" % len(served),
            rc == 0 and out.count(" created") == len(served), out + err)

    def stored():
        out = {}
        for d in served:
            kind = {"DeviceClass": "deviceclass", "ResourceClaimTemplate": "resourceclaimtemplate",
                    "VirtualMachine": "virtualmachine"}[d["kind"]]
            rc, got, err = kubectl("get", kind, d["metadata"]["name"], "-o", "json")
            out[(d["kind"], d["metadata"]["name"])] = json.loads(got).get("spec") if rc == 0 else err
        return out

    first, differ = stored(), []
    for d in served:
        want = json.loads(json.dumps(d["spec"]))
        if d["kind"] == "ResourceClaimTemplate":  # the server defaults allocationMode and count
            for r in want["spec"]["devices"]["requests"]:
                r.get("exactly", {}).setdefault("allocationMode", "ExactCount")
                r.get("exactly", {}).setdefault("count", 1)
            want.setdefault("metadata", {})
        if first[(d["kind"], d["metadata"]["name"])] != want:
            differ.append([d["kind"], d["metadata"]["name"], first[(d["kind"], d["metadata"]["name"])], want])
    t.check("each one got back as written (server defaults aside)", not differ, differ)
    # kubectl sends the templates a JSON merge patch without the defaults (their spec is immutable):
    # accepted, and nothing changes.
    rc, out, err = kubectl("apply", "--validate=strict", "-f", "-", input=listing)
    t.check("re-applied: accepted, nothing changed", rc == 0 and stored() == first, [out + err, stored(), first])

    names, buses = published_attributes()
    t.check("projection/resource_slices.cc publishes bus, vendorID and classID (pci, usb)",
            {"bus", "vendorID", "classID"} <= names[DRIVER] and buses == {"pci", "usb"}, [names, buses])
    templates = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ResourceClaimTemplate"}
    exprs = [("DeviceClass " + n, s["cel"]["expression"]) for n, c in classes.items() for s in c["spec"]["selectors"]]
    exprs += [("ResourceClaimTemplate %s request %s" % (n, r["name"]), s["cel"]["expression"])
              for n, c in templates.items() for r in c["spec"]["spec"]["devices"]["requests"]
              for s in r.get("exactly", {}).get("selectors", [])]
    bad = [(w, e, cel_problems(e, names, buses)) for w, e in exprs if cel_problems(e, names, buses)]
    t.check("%d CEL selectors read published attributes through .?name.orValue(...)" % len(exprs),
            len(exprs) >= 6 and not bad, bad)
    t.check("each DeviceClass selects the driver first", all(
        s["cel"]["expression"].startswith('device.driver == "%s" &&' % DRIVER)
        for c in classes.values() for s in c["spec"]["selectors"]), classes)
    control = cel_problems('device.attributes["pcidevices.io"].classID == "0300" && '
                           'device.attributes["pcidevices.io"].?model.orValue("") == "x"', names, buses)
    t.check("(the CEL check itself: a bare access and an unpublished attribute are found)", len(control) == 2, control)

    problems = []
    requests = {n: {r["name"]: r for r in c["spec"]["spec"]["devices"]["requests"]} for n, c in templates.items()}
    for n, reqs in requests.items():
        for r in reqs.values():
            if r.get("exactly", {}).get("deviceClassName") not in classes:
                problems.append("template %s request %s: no DeviceClass %s" % (n, r["name"], r.get("exactly")))
        for c in templates[n]["spec"]["spec"]["devices"].get("constraints", []):
            problems += ["template %s constraint: no request %s" % (n, r)
                         for r in c.get("requests", []) if r not in reqs]
            domain, _, attr = c.get("matchAttribute", "").rpartition("/")
            if attr not in names.get(domain, set()):
                problems.append("template %s constraint: no device carries %s" % (n, c.get("matchAttribute")))

    def claim_refs(where, claims, uses):
        """claims: name -> template; uses: (claim name, request name or None)."""
        for name, tmpl in claims.items():
            if tmpl not in templates:
                problems.append("%s: claim %s: no ResourceClaimTemplate %s in deploy/dra" % (where, name, tmpl))
        for claim, request in uses:
            if claim not in claims:
                problems.append("%s: claim %s not in its resourceClaims" % (where, claim))
            elif request is not None and request not in requests.get(claims[claim], {}):
                problems.append("%s: claim %s has no request %s" % (where, claim, request))
        if not uses:
            problems.append("%s: uses no claim" % where)

    for path, d in docs:
        if d["kind"] == "Pod":
            spec = d["spec"]
            claim_refs("%s Pod %s" % (path, d["metadata"]["name"]),
                       {c["name"]: c.get("resourceClaimTemplateName") for c in spec.get("resourceClaims", [])},
                       [(c["name"], c.get("request")) for k in spec["containers"]
                        for c in k.get("resources", {}).get("claims", [])])
        elif d["kind"] == "VirtualMachine":
            spec = d["spec"]["template"]["spec"]
            devices = spec["domain"]["devices"]
            dra = [h for h in devices.get("hostDevices", []) + devices.get("gpus", []) if "claimName" in h]
            problems += ["%s VM: %s has a deviceName too" % (path, h["name"]) for h in dra if h.get("deviceName")]
            claim_refs("%s VirtualMachine %s" % (path, d["metadata"]["name"]),
                       {c["name"]: c.get("resourceClaimTemplateName") for c in spec.get("resourceClaims", [])},
                       [(h["claimName"], h.get("requestName", "")) for h in dra])
    t.check("the examples' references resolve in deploy/dra: classes, templates, claims, requests, constraints "
            "(the Pod, not served by the emulator, is checked so)", not problems, problems)

    rc, out, err = kubectl("delete", "-f", "-", input=listing)
    t.check("kubectl delete of the deploy/dra objects", rc == 0 and out.count(" deleted") == len(served), out + err)


if __name__ == "__main__":
    sys.exit(main())
