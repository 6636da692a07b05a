"""Creates PodTemplates in parallel with the official Kubernetes Python client
(kubernetes.client.CoreV1Api), then lists them in pages with `limit` and `continue`, as
Kubernetes' own chunking conformance test does.

usage: podtemplates_chunked.py KUBECONFIG NAMESPACE COUNT PAGE

Prints one JSON line of what it saw; exits non-zero on the first surprise.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
NS, COUNT, PAGE = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
api = client.CoreV1Api()


def template(i):
    return client.V1PodTemplate(
        metadata=client.V1ObjectMeta(name=f"template-{i:04d}", labels={"batch": "chunks"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "chunks"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    )


with ThreadPoolExecutor(max_workers=16) as pool:
    made = list(pool.map(lambda i: api.create_namespaced_pod_template(NS, template(i)), range(COUNT)))
if len(made) != COUNT:
    raise SystemExit(f"created {len(made)} of {COUNT}")

seen, pages, token = [], 0, None
while True:
    page = api.list_namespaced_pod_template(
        NS, limit=PAGE, _continue=token, label_selector="batch=chunks"
    )
    pages += 1
    if len(page.items) > PAGE:
        raise SystemExit(f"page {pages} has {len(page.items)} items, more than {PAGE}")
    seen.extend(t.metadata.name for t in page.items)
    token = page.metadata._continue
    if not token:
        break
    if len(page.items) != PAGE:
        raise SystemExit(f"page {pages} has {len(page.items)} items and a continue token")

print(
    json.dumps(
        {
            "created": len(made),
            "pages": pages,
            "seen": len(seen),
            "distinct": len(set(seen)),
            "all": sorted(seen) == sorted(f"template-{i:04d}" for i in range(COUNT)),
            "defaulted": made[0].template.spec.restart_policy,
        }
    )
)
