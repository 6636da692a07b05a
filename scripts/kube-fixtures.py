#!/usr/bin/env python3
"""Regenerates tests/fixtures/kube-v1.33/ from Kubernetes' published API documents.

Usage: scripts/kube-fixtures.py DISCOVERY_DIR OPENAPI_DIR

DISCOVERY_DIR holds kube's `api/discovery/aggregated_v2.json` and `api/discovery/api__v1.json`;
OPENAPI_DIR holds kube's `api/openapi-spec/v3/` (`api__v1_openapi.json`,
`apis__apps__v1_openapi.json`, ...). Both come from the kubernetes/kubernetes repository at the
release the fixtures name (see the README beside them).

What is kept is what tests/tests/discovery.rs compares:
- discovery: every resource of the group/versions in GROUP_VERSIONS (the ones Skiff serves or is
  about to), in the documents' own form;
- OpenAPI v3: for each of those group/versions, only `components.schemas`, and of them only the
  schemas of the group/version's kinds (the kinds its discovery lists) and every schema they
  reference, directly or not. Paths and the other kinds are left out.

It also writes apiserver/src/openapi/annotations.json: what Kubernetes' schemas carry that the
Rust types' schemas (k8s-openapi's) do not, by definition and JSON pointer: `default` values,
the `x-kubernetes-*` extensions (group/version/kind, list types and map keys, patch strategies,
map types, unions) and each definition's `required` fields in Kubernetes' order.
The apiserver adds them to the schemas it publishes.
"""

import json
import os
import sys

# The group/versions compared ("" is the core group).
GROUP_VERSIONS = [
    ("", "v1"),
    ("admissionregistration.k8s.io", "v1"),
    ("apiextensions.k8s.io", "v1"),
    ("apps", "v1"),
    ("authentication.k8s.io", "v1"),
    ("authorization.k8s.io", "v1"),
    ("batch", "v1"),
    ("certificates.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
    ("discovery.k8s.io", "v1"),
    ("events.k8s.io", "v1"),
    ("node.k8s.io", "v1"),
    ("policy", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
    ("scheduling.k8s.io", "v1"),
    ("storage.k8s.io", "v1"),
]


def dump(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")


def trim_discovery(src, out):
    with open(os.path.join(src, "aggregated_v2.json")) as f:
        agg = json.load(f)
    items = []
    for group in agg["items"]:
        name = group["metadata"]["name"]
        versions = [v for v in group["versions"] if (name, v["version"]) in GROUP_VERSIONS]
        if versions:
            items.append(dict(group, versions=versions))
    dump(os.path.join(out, "discovery", "aggregated_v2.json"), dict(agg, items=items))
    with open(os.path.join(src, "api__v1.json")) as f:
        core = json.load(f)
    # The pinned commit predates pods/resize, which a v1.33 kube-apiserver lists.
    if not any(r["name"] == "pods/resize" for r in core["resources"]):
        core["resources"].append({"kind": "Pod", "name": "pods/resize", "namespaced": True,
                                  "singularName": "", "verbs": ["get", "patch", "update"]})
        core["resources"].sort(key=lambda r: r["name"])
    dump(os.path.join(out, "discovery", "api__v1.json"), core)
    kinds = {("", "v1"): sorted({r["kind"] for r in core["resources"] if "/" not in r["name"]})}
    for group in items:
        for v in group["versions"]:
            key = (group["metadata"]["name"], v["version"])
            kinds[key] = sorted({r["responseKind"]["kind"] for r in v["resources"]})
    return kinds


def refs(schema, out):
    if isinstance(schema, dict):
        for k, v in schema.items():
            if k == "$ref" and isinstance(v, str):
                out.add(v.rsplit("/", 1)[-1])
            else:
                refs(v, out)
    elif isinstance(schema, list):
        for v in schema:
            refs(v, out)


def gvk_of(schema):
    return [(g["group"], g["version"], g["kind"]) for g in schema.get("x-kubernetes-group-version-kind", [])]


def annotations_of(schema, at, out):
    """Collects `default` and `x-kubernetes-*` keys under `at`, a JSON pointer, walking
    properties, items and additionalProperties but not references, and a definition's
    `required` list."""
    if not isinstance(schema, dict):
        return
    found = {k: v for k, v in schema.items() if k == "default" or k.startswith("x-kubernetes-")}
    if at == "":
        # The required fields in Kubernetes' order (k8s-openapi sorts them, and takes a few
        # optional fields for required); none is written as an empty list.
        found["required"] = schema.get("required", [])
    if found:
        out[at] = found
    for name, prop in sorted(schema.get("properties", {}).items()):
        annotations_of(prop, f"{at}/properties/{name}", out)
    for key in ("items", "additionalProperties"):
        annotations_of(schema.get(key), f"{at}/{key}", out)


def trim_openapi(src, out, kinds):
    annotations = {}
    for (group, version), names in sorted(kinds.items()):
        base = f"api__{version}" if not group else f"apis__{group}__{version}"
        with open(os.path.join(src, base + "_openapi.json")) as f:
            doc = json.load(f)
        schemas = doc["components"]["schemas"]
        roots = [
            name
            for name, s in schemas.items()
            if any(g == group and v == version and k in names for g, v, k in gvk_of(s))
        ]
        keep, todo = set(), list(roots)
        while todo:
            name = todo.pop()
            if name in keep:
                continue
            keep.add(name)
            found = set()
            refs(schemas[name], found)
            todo.extend(found - keep)
        trimmed = {"components": {"schemas": {k: schemas[k] for k in sorted(keep)}}}
        dump(os.path.join(out, "openapi", base + "_openapi.json"), trimmed)
        for name in keep:
            found = {}
            annotations_of(schemas[name], "", found)
            if found:
                annotations.setdefault(name, {}).update(found)
    return annotations


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = os.path.join(root, "tests", "fixtures", "kube-v1.33")
    kinds = trim_discovery(sys.argv[1], out)
    annotations = trim_openapi(sys.argv[2], out, kinds)
    with open(os.path.join(root, "apiserver", "src", "openapi", "annotations.json"), "w") as f:
        # One definition a line, so that a change reads as one in a diff.
        lines = [
            f"{json.dumps(name)}:{json.dumps(annotations[name], sort_keys=True, separators=(',', ':'))}"
            for name in sorted(annotations)
        ]
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


if __name__ == "__main__":
    main()
