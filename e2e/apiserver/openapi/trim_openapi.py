#!/usr/bin/env python3
"""Cut Kubernetes' published OpenAPI v3 document of a group-version down to what the emulator needs.

    trim_openapi.py UPSTREAM.json KIND... > TRIMMED.json
    trim_openapi.py --check UPSTREAM.json TRIMMED.json KIND...   (exit 1 when they differ)

The rule, applied mechanically:
  1. keep components.schemas reachable through "$ref" from the schemas whose
     x-kubernetes-group-version-kind names one of KIND... or KIND + "List";
  2. drop every "description" keyword (schema keywords only: a property that happens to be named
     "description" stays);
  3. drop "paths" and "components.securitySchemes"; keep "info" and "openapi";
  4. print as the upstream file is printed: two-space indent, sorted keys, a final newline.

The file in this directory was made with:
  trim_openapi.py apis__resource.k8s.io__v1_openapi.json \
      ResourceSlice DeviceClass ResourceClaim ResourceClaimTemplate
(see README.md for the source commit). Python 3 stdlib only.
"""

import json
import sys

REF = "#/components/schemas/"


def strip_descriptions(schema):
    if isinstance(schema, list):
        return [strip_descriptions(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k == "description":
            continue
        if k == "properties" and isinstance(v, dict):
            out[k] = {name: strip_descriptions(s) for name, s in v.items()}
        elif k in ("x-kubernetes-group-version-kind", "x-kubernetes-list-map-keys", "required", "enum", "default"):
            out[k] = v  # values, not schemas
        else:
            out[k] = strip_descriptions(v)
    return out


def refs(node, found):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith(REF):
            found.add(r[len(REF):])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def trim(doc, kinds):
    schemas = doc["components"]["schemas"]
    want = set(kinds) | {k + "List" for k in kinds}
    todo = [name for name, s in schemas.items()
            if any(g.get("kind") in want for g in s.get("x-kubernetes-group-version-kind", []))]
    missing = want - {g.get("kind") for name in todo for g in schemas[name]["x-kubernetes-group-version-kind"]}
    if missing:
        raise SystemExit("no schema for: %s" % ", ".join(sorted(missing)))
    keep = set()
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        if name not in schemas:
            raise SystemExit("dangling $ref: %s" % name)
        keep.add(name)
        found = set()
        refs(schemas[name], found)
        todo.extend(found - keep)
    out = {"components": {"schemas": {n: strip_descriptions(schemas[n]) for n in sorted(keep)}}}
    for k in ("info", "openapi"):
        if k in doc:
            out[k] = doc[k]
    return out


def render(doc):
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv):
    check = argv[:1] == ["--check"]
    if check:
        argv = argv[1:]
    if len(argv) < (3 if check else 2):
        raise SystemExit(__doc__)
    with open(argv[0], encoding="utf-8") as f:
        doc = json.load(f)
    if not check:
        sys.stdout.write(render(trim(doc, argv[1:])))
        return 0
    with open(argv[1], encoding="utf-8") as f:
        have = f.read()
    want = render(trim(doc, argv[2:]))
    if have != want:
        print("%s differs from the trim of %s" % (argv[1], argv[0]))
        return 1
    print("%s is the trim of %s" % (argv[1], argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
