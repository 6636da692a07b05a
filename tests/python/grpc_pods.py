"""Creates, lists and watches pods through Skiff's gRPC API with stubs generated from
proto/ by grpcio-tools: proof that the contract stands on its own.

usage: grpc_pods.py GENERATED_DIR HOST:PORT CA_PEM CERT_PEM KEY_PEM
"""

import json
import sys
import threading

import grpc
from grpc_status import rpc_status

sys.path.insert(0, sys.argv[1])
from skiff.v1 import api_pb2, api_pb2_grpc  # noqa: E402

target, ca, cert, key = sys.argv[2:6]
read = lambda p: open(p, "rb").read()
creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
channel = grpc.secure_channel(target, creds)
resources = api_pb2_grpc.ResourcesStub(channel)
server = api_pb2_grpc.ServerStub(channel)

# Server reflection lets generic tools find the services without the .proto.
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)

services = ProtoReflectionDescriptorDatabase(channel).get_services()
for wanted in ("skiff.v1.Resources", "skiff.v1.Server", "grpc.health.v1.Health"):
    assert wanted in services, services

version = server.Version(api_pb2.VersionRequest(), timeout=10)
assert version.major == "1", version

pods = api_pb2.ResourceRef(group="", version="v1", resource="pods", namespace="default")
listed = resources.List(api_pb2.ListRequest(resource=pods), timeout=10)
assert listed.kind == "PodList", listed.kind

events = []
done = threading.Event()


def watch():
    stream = resources.Watch(
        api_pb2.WatchRequest(resource=pods, resource_version=listed.resource_version, timeout_seconds=20)
    )
    for ev in stream:
        obj = json.loads(ev.object.json)
        events.append((api_pb2.EventType.Name(ev.type), obj["metadata"]["name"]))
        if ("DELETED", "py-temp") in events:
            done.set()
            stream.cancel()
            return


watcher = threading.Thread(target=watch)
watcher.start()


def pod(name):
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"made-by": "python"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    return api_pb2.Object(api_version="v1", kind="Pod", json=json.dumps(body).encode())


created = resources.Create(api_pb2.CreateRequest(resource=pods, object=pod("py-temp")), timeout=10)
assert created.created
uid = json.loads(created.object.json)["metadata"]["uid"]
resources.Create(api_pb2.CreateRequest(resource=pods, object=pod("py-keep")), timeout=10)

page = resources.List(api_pb2.ListRequest(resource=pods, label_selector="made-by=python"), timeout=10)
names = sorted(json.loads(o.json)["metadata"]["name"] for o in page.items)
assert names == ["py-keep", "py-temp"], names

# Errors: a gRPC code, with the Kubernetes Status in the details.
try:
    resources.Create(api_pb2.CreateRequest(resource=pods, object=pod("py-temp")), timeout=10)
    raise SystemExit("a duplicate create succeeded")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e.code()
    detail = rpc_status.from_call(e).details[0]
    assert detail.type_url == "type.googleapis.com/skiff.v1.Status", detail.type_url
    status = api_pb2.Status.FromString(detail.value)
    assert (status.code, status.reason) == (409, "AlreadyExists"), status
try:
    resources.Get(api_pb2.GetRequest(resource=pods, name="nope"), timeout=10)
    raise SystemExit("a get of a missing pod succeeded")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()

deleted = resources.Delete(
    api_pb2.DeleteRequest(
        resource=pods,
        name="py-temp",
        grace_period_seconds=0,
        preconditions=api_pb2.Preconditions(uid=uid),
    ),
    timeout=10,
)
assert deleted.finished

assert done.wait(20), f"the watch saw {events}"
watcher.join()
assert events[0] == ("ADDED", "py-temp"), events
assert ("ADDED", "py-keep") in events, events
print(json.dumps({"ok": True, "events": events}))
