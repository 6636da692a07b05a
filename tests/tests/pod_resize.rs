//! In-place pod resize on a real node: `kubectl patch --subresource resize` changes a running
//! container's CPU and memory, the kubelet applies them to the container's cgroup (no restart,
//! or a restart where `resizePolicy` asks for one), and the pod's status reports them; what
//! Kubernetes refuses is refused with its words, and a resize the node cannot hold waits as
//! `PodResizePending`.

use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{Cluster, Kubectl};

fn status_of(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn condition<'a>(pod: &'a Value, type_: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Reads a cgroup file of the pod's container from inside it.
async fn cgroup(node: &Node, pod: &Value, file: &str) -> String {
    let (code, out) = node.exec_in(pod, &["cat", file]).await;
    assert_eq!(code, 0, "{file}: {out}");
    out.trim().to_string()
}

fn resize(k: &Kubectl, patch: Value) -> skiff_e2e::Run {
    k.run(&[
        "patch",
        "pod",
        "web",
        "--subresource",
        "resize",
        "-p",
        &patch.to_string(),
    ])
}

#[tokio::test]
async fn cpu_and_memory_are_resized_in_place() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {
            "nodeName": "node-a",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c", "image": node.images.busybox, "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"},
                              "limits": {"cpu": "200m", "memory": "64Mi"}},
                "resizePolicy": [
                    {"resourceName": "cpu", "restartPolicy": "NotRequired"},
                    {"resourceName": "memory", "restartPolicy": "RestartContainer"}]
            }]
        }
    });
    k.ok_input(&["apply", "-f", "-"], &pod.to_string());
    let running = node
        .wait_for(&k, "pod web running", || {
            let p = k.get_opt(&["pod", "web"])?;
            status_of(&p)["state"]["running"].is_object().then_some(p)
        })
        .await;
    // The container status carries what is allocated and applied.
    let st = status_of(&running);
    assert_eq!(
        st["resources"],
        json!({"requests": {"cpu": "100m", "memory": "32Mi"},
               "limits": {"cpu": "200m", "memory": "64Mi"}}),
        "{st}"
    );
    assert_eq!(
        st["allocatedResources"],
        json!({"cpu": "100m", "memory": "32Mi"})
    );
    assert_eq!(running["metadata"]["generation"], 1);
    assert_eq!(
        cgroup(&node, &running, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").await,
        "20000"
    );
    assert_eq!(
        cgroup(&node, &running, "/sys/fs/cgroup/cpu/cpu.shares").await,
        "102"
    );

    // A plain update may not touch resources: only the subresource may.
    let plain = k.run(&[
        "patch",
        "pod",
        "web",
        "-p",
        r#"{"spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":"300m"}}}]}}"#,
    ]);
    assert!(!plain.status.success());
    assert!(
        plain
            .stderr
            .contains("pod updates may not change fields other than"),
        "{}",
        plain.stderr
    );

    // CPU up, in place: same container, new quota and shares.
    let r = resize(
        &k,
        json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": "300m"}, "limits": {"cpu": "400m"}}}]}}),
    );
    assert!(r.status.success(), "{}", r.stderr);
    let resized = node
        .wait_for(&k, "the CPU resize applied", || {
            let p = k.get_opt(&["pod", "web"])?;
            let done = status_of(&p)["resources"]["limits"]["cpu"] == "400m"
                && condition(&p, "PodResizeInProgress").is_none();
            done.then_some(p)
        })
        .await;
    assert_eq!(resized["metadata"]["generation"], 2);
    assert_eq!(status_of(&resized)["restartCount"], 0);
    assert_eq!(
        status_of(&resized)["containerID"],
        status_of(&running)["containerID"]
    );
    assert_eq!(status_of(&resized)["allocatedResources"]["cpu"], "300m");
    assert_eq!(
        cgroup(&node, &resized, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").await,
        "40000"
    );
    assert_eq!(
        cgroup(&node, &resized, "/sys/fs/cgroup/cpu/cpu.shares").await,
        "307"
    );
    assert_eq!(
        cgroup(
            &node,
            &resized,
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        )
        .await,
        (64u64 << 20).to_string()
    );

    // Memory up with `RestartContainer`: the container restarts with the new limit.
    let r = resize(
        &k,
        json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"memory": "48Mi"}, "limits": {"memory": "128Mi"}}}]}}),
    );
    assert!(r.status.success(), "{}", r.stderr);
    let restarted = node
        .wait_for(&k, "the memory resize applied by a restart", || {
            let p = k.get_opt(&["pod", "web"])?;
            let st = status_of(&p);
            let done = st["resources"]["limits"]["memory"] == "128Mi"
                && st["restartCount"] == 1
                && st["state"]["running"].is_object();
            done.then_some(p)
        })
        .await;
    assert_eq!(
        cgroup(
            &node,
            &restarted,
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        )
        .await,
        (128u64 << 20).to_string()
    );
    // The CPU resize stays.
    assert_eq!(
        cgroup(&node, &restarted, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").await,
        "40000"
    );

    // Refused as Kubernetes refuses them.
    let qos = resize(
        &k,
        json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": "400m", "memory": "128Mi"}}}]}}),
    );
    assert!(!qos.status.success());
    assert!(
        qos.stderr.contains(
            "spec: Invalid value: \"Burstable\": Pod QOS Class may not change as a result of resizing"
        ),
        "{}",
        qos.stderr
    );
    let removed = resize(
        &k,
        json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": null}}}]}}),
    );
    assert!(
        removed.stderr.contains(
            "spec.containers[0].resources.limits: Forbidden: resource limits cannot be removed"
        ),
        "{}",
        removed.stderr
    );
    let storage = resize(
        &k,
        json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"ephemeral-storage": "1Gi"}}}]}}),
    );
    assert!(
        storage
            .stderr
            .contains("spec: Forbidden: only cpu and memory resources are mutable"),
        "{}",
        storage.stderr
    );
    // Other fields in a resize are dropped, not applied.
    let r = resize(
        &k,
        json!({"metadata": {"labels": {"sneaky": "yes"}},
               "spec": {"activeDeadlineSeconds": 5}}),
    );
    assert!(r.status.success(), "{}", r.stderr);
    let p = k.json(&["get", "pod", "web"]);
    assert!(p["metadata"]["labels"]["sneaky"].is_null(), "{p}");
    assert!(p["spec"]["activeDeadlineSeconds"].is_null(), "{p}");

    // More CPU than the node has: pending as Infeasible, the container unchanged.
    let r = resize(
        &k,
        json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": "1000"}, "limits": {"cpu": "1000"}}}]}}),
    );
    assert!(r.status.success(), "{}", r.stderr);
    let pending = node
        .wait_for(&k, "the infeasible resize pending", || {
            let p = k.get_opt(&["pod", "web"])?;
            condition(&p, "PodResizePending")
                .is_some_and(|c| c["reason"] == "Infeasible")
                .then_some(p)
        })
        .await;
    let cond = condition(&pending, "PodResizePending").unwrap();
    assert_eq!(cond["status"], "True");
    let message = cond["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("Node didn't have enough capacity: cpu, requested: 1000000, capacity: "),
        "{message}"
    );
    assert_eq!(status_of(&pending)["resources"]["limits"]["cpu"], "400m");
    assert_eq!(
        cgroup(&node, &pending, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").await,
        "40000"
    );

    // Asking for what fits again clears the condition and applies it.
    let r = resize(
        &k,
        json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": "150m"}, "limits": {"cpu": "250m"}}}]}}),
    );
    assert!(r.status.success(), "{}", r.stderr);
    let settled = node
        .wait_for(&k, "the pending resize replaced", || {
            let p = k.get_opt(&["pod", "web"])?;
            let done = status_of(&p)["resources"]["limits"]["cpu"] == "250m"
                && condition(&p, "PodResizePending").is_none()
                && condition(&p, "PodResizeInProgress").is_none();
            done.then_some(p)
        })
        .await;
    assert_eq!(
        cgroup(&node, &settled, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").await,
        "25000"
    );
    assert_eq!(
        cgroup(&node, &settled, "/sys/fs/cgroup/cpu/cpu.shares").await,
        "153"
    );
    assert_eq!(status_of(&settled)["restartCount"], 1);
}
