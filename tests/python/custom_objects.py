"""Drives namespaced custom objects with the official Kubernetes Python client
(kubernetes.client.CustomObjectsApi), written against kube-apiserver and used unchanged.

usage: custom_objects.py KUBECONFIG

Expects the Widget definition of tests/tests/crd.rs (example.com/v1, namespaced, with the
status and scale subresources) to be established. Prints one JSON line of what it saw;
exits non-zero on the first surprise.
"""

import json
import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
api = client.CustomObjectsApi()
G, V, NS, P = "example.com", "v1", "default", "widgets"
seen = {}


def widget(name, **spec):
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Widget",
        "metadata": {"name": name, "labels": {"made-by": "python"}},
        "spec": spec,
    }


def expect(cond, what):
    if not cond:
        raise SystemExit(f"unexpected: {what}")


made = api.create_namespaced_custom_object(G, V, NS, P, widget("py-one", replicas=2, selector="made-by=python"))
expect(made["spec"]["size"] == "small", f"defaulted size: {made}")
expect(made["metadata"]["generation"] == 1, f"generation: {made}")
seen["created"] = made["metadata"]["name"]

got = api.get_namespaced_custom_object(G, V, NS, P, "py-one")
expect(got["metadata"]["uid"] == made["metadata"]["uid"], "get returns the object made")

api.create_namespaced_custom_object(G, V, NS, P, widget("py-two"))
listed = api.list_namespaced_custom_object(G, V, NS, P, label_selector="made-by=python")
seen["listed"] = sorted(i["metadata"]["name"] for i in listed["items"])
expect(listed["kind"] == "WidgetList", f"list kind: {listed['kind']}")

# The client sends application/merge-patch+json for a dict body.
patched = api.patch_namespaced_custom_object(G, V, NS, P, "py-one", {"spec": {"color": "teal"}})
expect(patched["spec"]["color"] == "teal" and patched["spec"]["replicas"] == 2, f"merged: {patched}")
expect(patched["metadata"]["generation"] == 2, f"generation after a spec change: {patched}")

current = api.get_namespaced_custom_object(G, V, NS, P, "py-two")
current["spec"]["size"] = "large"
replaced = api.replace_namespaced_custom_object(G, V, NS, P, "py-two", current)
expect(replaced["spec"]["size"] == "large", f"replaced: {replaced}")

# A stale resourceVersion is a conflict, as the client's users expect.
try:
    api.replace_namespaced_custom_object(G, V, NS, P, "py-two", current)
    raise SystemExit("a stale replace succeeded")
except ApiException as e:
    expect(e.status == 409, f"stale replace: {e.status} {e.body}")
    seen["stale_replace"] = json.loads(e.body)["reason"]

# Status and scale subresources.
api.patch_namespaced_custom_object_status(G, V, NS, P, "py-one", {"status": {"replicas": 2, "phase": "Ready"}})
status = api.get_namespaced_custom_object_status(G, V, NS, P, "py-one")
expect(status["status"] == {"replicas": 2, "phase": "Ready"}, f"status: {status}")
scale = api.patch_namespaced_custom_object_scale(G, V, NS, P, "py-one", {"spec": {"replicas": 5}})
expect(scale["kind"] == "Scale" and scale["spec"]["replicas"] == 5, f"scale: {scale}")
seen["scale"] = api.get_namespaced_custom_object_scale(G, V, NS, P, "py-one")["status"]
expect(api.get_namespaced_custom_object(G, V, NS, P, "py-one")["spec"]["replicas"] == 5, "scaled spec")

# A CEL rule's refusal arrives as a 422 with the rule's message.
try:
    api.patch_namespaced_custom_object(G, V, NS, P, "py-one", {"spec": {"replicas": 50}})
    raise SystemExit("a patch breaking the rule succeeded")
except ApiException as e:
    expect(e.status == 422, f"rule: {e.status} {e.body}")
    seen["rule"] = json.loads(e.body)["details"]["causes"][0]["message"]

deleted = api.delete_namespaced_custom_object(G, V, NS, P, "py-two")
# As kube-apiserver answers for custom resources: a Status naming what went.
expect(
    deleted["status"] == "Success" and deleted["details"]["name"] == "py-two",
    f"delete answers a Status: {deleted}",
)
try:
    api.get_namespaced_custom_object(G, V, NS, P, "py-two")
    raise SystemExit("deleted object still there")
except ApiException as e:
    expect(e.status == 404, f"after delete: {e.status}")
    seen["gone"] = json.loads(e.body)["message"]

print(json.dumps(seen))
