//! Pods on a real node: etcd, the API server, a kubelet driving a private containerd that
//! pulls from a local registry, CNI on a bridge of the test's own — and what `kubectl` shows.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{Cluster, Kubectl};
use skiff_proto::cri;

fn wait_ready(node: &Node, k: &Kubectl, name: &str) -> Value {
    node.wait_blocking(
        &format!("pod {name} Ready"),
        Duration::from_secs(60),
        || {
            let p = k.get_opt(&["pod", name]).unwrap_or(Value::Null);
            let ready = p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(p)
        },
    )
}

fn apply(k: &Kubectl, obj: &Value) {
    k.ok_input(&["apply", "-f", "-"], &obj.to_string());
}

/// Applies several objects as one multi-document stream.
fn apply_all(k: &Kubectl, objs: &Value) {
    let docs: Vec<String> = objs
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.to_string())
        .collect();
    k.ok_input(&["apply", "-f", "-"], &docs.join("\n---\n"));
}

/// Runs `cmd` in the pod's container through the runtime (what `kubectl exec` reaches).
async fn exec_in(node: &Node, pod: &Value, container: &str, cmd: &[&str]) -> (i32, String) {
    let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
    let id = statuses
        .iter()
        .find(|s| s["name"] == container)
        .and_then(|s| s["containerID"].as_str())
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let mut rt = node.ctrd.cri().unwrap();
    let r = rt
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id,
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out)
}

fn http_get(ip: &str, port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test]
async fn runs_a_pod_reachable_at_its_ip_with_env_volumes_and_status() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &["--cluster-dns=10.96.0.10"]).unwrap();
    let k = c.kubectl();
    k.ok(&[
        "create",
        "configmap",
        "site",
        "--from-literal=index.html=hello from a configmap",
        "--from-literal=color=blue",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    let image = node.images.busybox.clone();
    apply(
        &k,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "nodeName": "node-a",
                // httpd runs as the container's PID 1 and so ignores SIGTERM: deletion ends
                // with SIGKILL once this grace period is over.
                "terminationGracePeriodSeconds": 2,
                "hostAliases": [{"ip": "192.0.2.7", "hostnames": ["db.example"]}],
                "containers": [{
                    "name": "httpd",
                    "image": image,
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                    "workingDir": "/www",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "env": [
                        {"name": "GREETING", "value": "hi"},
                        {"name": "MESSAGE", "value": "$(GREETING) there"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "MEM_LIMIT_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "site", "key": "color"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
                    ],
                    "envFrom": [{"configMapRef": {"name": "site"}, "prefix": "CM_"}],
                    "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                    "volumeMounts": [
                        {"name": "site", "mountPath": "/www"},
                        {"name": "creds", "mountPath": "/creds"},
                        {"name": "scratch", "mountPath": "/scratch"},
                        {"name": "ram", "mountPath": "/ram"},
                        {"name": "info", "mountPath": "/info"},
                        {"name": "all", "mountPath": "/all"}
                    ]
                }],
                "volumes": [
                    {"name": "site", "configMap": {"name": "site"}},
                    {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400,
                        "items": [{"key": "password", "path": "pw/file"}]}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "cpu", "resourceFieldRef": {"containerName": "httpd", "resource": "limits.cpu", "divisor": "1m"}}
                    ]}},
                    {"name": "all", "projected": {"sources": [
                        {"configMap": {"name": "site", "items": [{"key": "color", "path": "color"}]}},
                        {"secret": {"name": "creds"}},
                        {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}
                    ]}}
                ]
            }
        }),
    );
    let pod = wait_ready(&node, &k, "web");
    let status = &pod["status"];
    assert_eq!(status["phase"], "Running");
    let ip = status["podIP"].as_str().unwrap().to_string();
    assert!(
        node.net.contains(&ip),
        "pod IP {ip} not in {}",
        node.net.subnet
    );
    assert_eq!(status["podIPs"][0]["ip"], ip.as_str());
    assert!(status["hostIP"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(status["startTime"].is_string());
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "True")
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert!(types.contains(&t), "{t} not True in {types:?}");
    }
    let cs = &status["containerStatuses"][0];
    assert_eq!(cs["name"], "httpd");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["image"], image.as_str());
    assert!(
        cs["imageID"]
            .as_str()
            .unwrap()
            .contains("test/busybox@sha256:"),
        "{cs}"
    );
    assert!(cs["containerID"]
        .as_str()
        .unwrap()
        .starts_with("containerd://"));
    assert!(cs["state"]["running"]["startedAt"].is_string());

    // Reachable at its IP, serving the configMap's file.
    let body = node.wait_blocking("HTTP at the pod IP", Duration::from_secs(10), || {
        http_get(&ip, 8080).filter(|b| b.contains("200"))
    });
    assert!(body.contains("hello from a configmap"), "{body}");

    // The environment, as the container sees it.
    let (code, env) = exec_in(&node, &pod, "httpd", &["env"]).await;
    assert_eq!(code, 0);
    for want in [
        "GREETING=hi",
        "MESSAGE=hi there",
        "POD_NAME=web",
        &format!("POD_IP={ip}"),
        "NODE=node-a",
        "MEM_LIMIT_MI=64",
        "COLOR=blue",
        "PASSWORD=s3cret",
        "CM_color=blue",
        "CM_index.html=hello from a configmap",
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "{want} missing from:\n{env}"
        );
    }
    let (_, pwd) = exec_in(&node, &pod, "httpd", &["pwd"]).await;
    assert_eq!(pwd.trim(), "/www");

    // Volumes.
    let cat = |path: &'static str| {
        let pod = pod.clone();
        let node = &node;
        async move { exec_in(node, &pod, "httpd", &["cat", path]).await }
    };
    assert_eq!(cat("/creds/pw/file").await, (0, "s3cret".into()));
    let (_, mode) = exec_in(
        &node,
        &pod,
        "httpd",
        &["stat", "-L", "-c", "%a", "/creds/pw/file"],
    )
    .await;
    assert_eq!(mode.trim(), "400");
    assert_eq!(cat("/info/labels").await, (0, "app=\"web\"".into()));
    assert_eq!(cat("/info/cpu").await, (0, "500".into()));
    assert_eq!(cat("/all/color").await, (0, "blue".into()));
    assert_eq!(cat("/all/password").await, (0, "s3cret".into()));
    assert_eq!(cat("/all/name").await, (0, "web".into()));
    let (code, out) = exec_in(
        &node,
        &pod,
        "httpd",
        &[
            "sh",
            "-c",
            "echo x > /scratch/f && cat /scratch/f && grep ' /ram ' /proc/mounts",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("x\n") && out.contains("tmpfs"), "{out}");
    // configMap volumes are read-only.
    let (code, _) = exec_in(&node, &pod, "httpd", &["sh", "-c", "echo y > /www/new"]).await;
    assert_ne!(code, 0);
    // /etc/hosts and /etc/resolv.conf.
    let (_, hosts) = cat("/etc/hosts").await;
    assert!(hosts.contains(&format!("{ip}\tweb")), "{hosts}");
    assert!(hosts.contains("192.0.2.7\tdb.example"), "{hosts}");
    let (_, resolv) = cat("/etc/resolv.conf").await;
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("ndots:5"), "{resolv}");
    // The memory limit reached the container's cgroup.
    let (_, limit) = cat("/sys/fs/cgroup/memory/memory.limit_in_bytes").await;
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    // And the CPU limit (500m: half of each 100 ms period); the request (= limit) as shares.
    let (_, quota) = cat("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").await;
    assert_eq!(quota.trim(), "50000");
    let (_, shares) = cat("/sys/fs/cgroup/cpu/cpu.shares").await;
    assert_eq!(shares.trim(), "512");

    // A configMap change reaches the mounted volume (within the sync period).
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site"},
                "data": {"index.html": "updated", "color": "green"}})
        .to_string(),
    );
    node.wait_blocking(
        "the configMap update in the volume",
        Duration::from_secs(20),
        || http_get(&ip, 8080).filter(|b| b.contains("updated")),
    );

    // So does a Secret change.
    // ("cm90YXRlZA==" is "rotated".)
    k.ok(&[
        "patch",
        "secret",
        "creds",
        "-p",
        r#"{"data":{"password":"cm90YXRlZA=="}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, pw) = exec_in(&node, &pod, "httpd", &["cat", "/creds/pw/file"]).await;
        if pw == "rotated" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the secret update did not reach the volume: {pw:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Events a user reads in `kubectl describe`.
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    for r in ["Pulled", "Created", "Started"] {
        assert!(events.contains(r), "{r} not in {events}");
    }

    // Deletion: graceful, the sandbox gone, then the object gone.
    let start = Instant::now();
    k.ok(&["delete", "pod", "web", "--wait=true", "--timeout=120s"]);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(30),
        "stopped by SIGKILL after its 2 s grace period, then cleaned up: {took:?}"
    );
    let mut rt = node.ctrd.cri().unwrap();
    let left = rt
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(left.is_empty(), "sandboxes left: {left:?}");
    assert!(!node
        .kubelet
        .root_dir
        .join("pods")
        .join(pod["metadata"]["uid"].as_str().unwrap())
        .exists());
}

fn container_status<'a>(pod: &'a Value, field: &str, name: &str) -> Option<&'a Value> {
    pod["status"][field]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

/// The `state.terminated` of a container's status.
fn terminated<'a>(pod: &'a Value, name: &str) -> &'a Value {
    &container_status(pod, "containerStatuses", name).unwrap()["state"]["terminated"]
}

/// Waits for the pod to reach `phase`.
fn wait_phase(node: &Node, k: &Kubectl, name: &str, phase: &str) -> Value {
    wait_pod(node, k, name, phase, |p| p["status"]["phase"] == phase)
}

fn wait_pod(node: &Node, k: &Kubectl, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    node.wait_blocking(
        &format!("pod {name}: {what}"),
        Duration::from_secs(90),
        || {
            let p = k.get_opt(&["pod", name]).unwrap_or(Value::Null);
            f(&p).then_some(p)
        },
    )
}

#[tokio::test]
async fn runs_init_containers_sidecars_and_restart_policies() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    let pod = |name: &str, spec: Value| {
        let mut spec = spec;
        spec["nodeName"] = json!("node-a");
        spec["terminationGracePeriodSeconds"] = json!(2);
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    };
    let sh = |script: &str| json!(["sh", "-c", script]);
    let items = json!([
        // Init containers in order, a sidecar started before the main container; each writes
        // the time it started into a shared volume.
        pod(
            "ordered",
            json!({
                "volumes": [{"name": "log", "emptyDir": {}}],
                "initContainers": [
                    {"name": "first", "image": image, "command": sh("echo first >> /log/order; sleep 1"),
                     "volumeMounts": [{"name": "log", "mountPath": "/log"}]},
                    {"name": "second", "image": image, "command": sh("echo second >> /log/order"),
                     "volumeMounts": [{"name": "log", "mountPath": "/log"}]},
                    {"name": "sidecar", "image": image, "restartPolicy": "Always",
                     "command": sh("echo sidecar >> /log/order; exec sleep 1000"),
                     "volumeMounts": [{"name": "log", "mountPath": "/log"}]}
                ],
                "containers": [{"name": "main", "image": image,
                    "command": sh("echo main >> /log/order; exec sleep 1000"),
                    "volumeMounts": [{"name": "log", "mountPath": "/log"}]}]
            })
        ),
        pod(
            "succeeds",
            json!({"restartPolicy": "Never", "containers": [
            {"name": "job", "image": image, "command": sh("echo all done > /dev/termination-log; exit 0")}]})
        ),
        pod(
            "fails",
            json!({"restartPolicy": "Never", "containers": [
            {"name": "job", "image": image, "terminationMessagePolicy": "FallbackToLogsOnError",
             "command": sh("echo something broke; exit 3")}]})
        ),
        pod(
            "crashes",
            json!({"restartPolicy": "Always", "containers": [
            {"name": "app", "image": image, "command": sh("exit 1")}]})
        ),
        pod(
            "onfailure",
            json!({"restartPolicy": "OnFailure", "volumes": [{"name": "d", "emptyDir": {}}],
            "containers": [{"name": "app", "image": image,
                "volumeMounts": [{"name": "d", "mountPath": "/d"}],
                "command": sh("if [ -f /d/ran ]; then exit 0; fi; touch /d/ran; exit 7")}]})
        ),
        pod(
            "init-fails",
            json!({"restartPolicy": "Never",
            "initContainers": [{"name": "setup", "image": image, "command": sh("exit 2")}],
            "containers": [{"name": "app", "image": image, "command": sh("sleep 1000")}]})
        ),
        pod(
            "oom",
            json!({"restartPolicy": "Never", "containers": [
            {"name": "hog", "image": image, "resources": {"limits": {"memory": "16Mi"}},
             "command": sh("x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done")}]})
        ),
        pod(
            "missing-image",
            json!({"containers": [
            {"name": "app", "image": format!("{}/test/nothing:1", node.images.registry.host)}]})
        ),
        pod(
            "never-pull",
            json!({"containers": [
            {"name": "app", "image": format!("{}/test/absent:1", node.images.registry.host),
             "imagePullPolicy": "Never"}]})
        ),
        pod(
            "needs-config",
            json!({"containers": [
            {"name": "app", "image": image, "command": sh("sleep 1000"),
             "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}]}]})
        ),
        pod(
            "deadline",
            json!({"activeDeadlineSeconds": 3, "containers": [
            {"name": "app", "image": image, "command": sh("sleep 1000")}]})
        ),
        pod(
            "secure",
            json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 2000},
            "containers": [{"name": "app", "image": image,
                "command": sh("id -u > /dev/termination-log; id -g >> /dev/termination-log; touch /x 2>/dev/null && echo writable >> /dev/termination-log; exit 0"),
                "securityContext": {"readOnlyRootFilesystem": true}}],
            "restartPolicy": "Never"})
        ),
        pod(
            "no-caps",
            json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": image,
            "securityContext": {"capabilities": {"drop": ["ALL"]}},
            "command": sh("grep CapEff /proc/self/status > /dev/termination-log")}]})
        ),
        pod(
            "privileged",
            json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": image,
            "securityContext": {"privileged": true},
            "command": sh("grep CapEff /proc/self/status > /dev/termination-log; ls /dev | grep -c . >> /dev/termination-log")}]})
        )
    ]);
    apply_all(&k, &items);

    // Init order and the sidecar before the main container.
    let p = wait_ready(&node, &k, "ordered");
    let (code, order) = exec_in(&node, &p, "main", &["cat", "/log/order"]).await;
    assert_eq!(
        (code, order.as_str()),
        (0, "first\nsecond\nsidecar\nmain\n")
    );
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits[0]["state"]["terminated"]["reason"], "Completed");
    assert_eq!(inits[1]["state"]["terminated"]["exitCode"], 0);
    assert!(inits[2]["state"]["running"].is_object(), "{inits:?}");
    assert_eq!(inits[2]["ready"], true);

    // Never: Succeeded with the termination message; Failed with the log's tail.
    let p = wait_phase(&node, &k, "succeeds", "Succeeded");
    let t = terminated(&p, "job");
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(0), Some("Completed"))
    );
    assert_eq!(t["message"], "all done\n");
    let p = wait_phase(&node, &k, "fails", "Failed");
    let t = terminated(&p, "job");
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error"))
    );
    assert_eq!(t["message"], "something broke");
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("PodCompleted"))
    );

    // Always: restarted at once, then held back: CrashLoopBackOff with the last exit.
    let p = wait_pod(&node, &k, "crashes", "CrashLoopBackOff", |p| {
        container_status(p, "containerStatuses", "app")
            .is_some_and(|s| s["state"]["waiting"]["reason"] == "CrashLoopBackOff")
    });
    let s = container_status(&p, "containerStatuses", "app").unwrap();
    assert!(s["restartCount"].as_i64().unwrap() >= 1, "{s}");
    assert!(
        s["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=app pod=crashes_default("),
        "{s}"
    );
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(p["status"]["phase"], "Running");

    // OnFailure: the failed run is restarted; the successful one ends the pod.
    let p = wait_phase(&node, &k, "onfailure", "Succeeded");
    let s = container_status(&p, "containerStatuses", "app").unwrap();
    assert_eq!(s["restartCount"], 1);
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 7);

    // A failed init container with restartPolicy Never fails the pod; app never starts.
    let p = wait_phase(&node, &k, "init-fails", "Failed");
    let s = container_status(&p, "containerStatuses", "app").unwrap();
    assert!(
        s["state"]["waiting"].is_object() || s["state"]["terminated"].is_object(),
        "{s}"
    );
    assert!(s["containerID"].is_null(), "{s}");

    // A memory limit is enforced: OOMKilled.
    let p = wait_phase(&node, &k, "oom", "Failed");
    let t = terminated(&p, "hog");
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137);

    // Image errors.
    wait_pod(
        &node,
        &k,
        "missing-image",
        "ErrImagePull then ImagePullBackOff",
        |p| {
            container_status(p, "containerStatuses", "app")
                .is_some_and(|s| s["state"]["waiting"]["reason"] == "ImagePullBackOff")
        },
    );
    let p = wait_pod(&node, &k, "never-pull", "ErrImageNeverPull", |p| {
        container_status(p, "containerStatuses", "app")
            .is_some_and(|s| s["state"]["waiting"]["reason"] == "ErrImageNeverPull")
    });
    assert_eq!(p["status"]["phase"], "Pending");
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=missing-image",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("Error: ErrImagePull"), "{events}");

    // A missing configMap holds the container back until it exists.
    let p = wait_pod(
        &node,
        &k,
        "needs-config",
        "CreateContainerConfigError",
        |p| {
            container_status(p, "containerStatuses", "app")
                .is_some_and(|s| s["state"]["waiting"]["reason"] == "CreateContainerConfigError")
        },
    );
    let msg = container_status(&p, "containerStatuses", "app").unwrap()["state"]["waiting"]
        ["message"]
        .clone();
    assert_eq!(msg, "configmap \"later\" not found");
    k.ok(&["create", "configmap", "later", "--from-literal=x=1"]);
    wait_ready(&node, &k, "needs-config");

    // activeDeadlineSeconds: killed and Failed with DeadlineExceeded.
    let p = wait_phase(&node, &k, "deadline", "Failed");
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");

    // securityContext: user and group, a read-only root filesystem.
    let p = wait_phase(&node, &k, "secure", "Succeeded");
    let t = terminated(&p, "app");
    assert_eq!(t["message"], "1000\n2000\n");

    // Capabilities: none at all, or every one for a privileged container (which also sees
    // the node's devices).
    let p = wait_phase(&node, &k, "no-caps", "Succeeded");
    let t = terminated(&p, "app");
    assert_eq!(t["message"], "CapEff:\t0000000000000000\n");
    let p = wait_phase(&node, &k, "privileged", "Succeeded");
    let msg = container_status(&p, "containerStatuses", "app").unwrap()["state"]["terminated"]
        ["message"]
        .as_str()
        .unwrap()
        .to_string();
    let (caps, devices) = msg.split_once('\n').unwrap();
    assert!(
        caps.starts_with("CapEff:\t000001ff") || caps.starts_with("CapEff:\t000003ff"),
        "{caps}"
    );
    assert!(devices.trim().parse::<u32>().unwrap() > 20, "{msg}");

    // Deleting a finished pod removes it.
    k.ok(&[
        "delete",
        "pod",
        "succeeds",
        "fails",
        "--wait=true",
        "--timeout=30s",
    ]);
    assert!(k
        .run(&["get", "pod", "succeeds"])
        .stderr
        .contains("NotFound"));
}

#[tokio::test]
async fn probes_hooks_and_graceful_termination() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    let sh = |script: &str| json!(["sh", "-c", script]);
    let items = json!([
        // Liveness: fails once /tmp/healthy is gone; the container is restarted.
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "live"}, "spec": {
            "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": image,
                "command": sh("touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 1000"),
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                    "periodSeconds": 1, "failureThreshold": 2}}]}},
        // Readiness through HTTP, flipped by a file; startup through TCP.
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ready"}, "spec": {
            "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": image,
                "command": sh("mkdir -p /www && touch /www/ok && exec httpd -f -p 8080 -h /www"),
                "ports": [{"name": "http", "containerPort": 8080}],
                "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "readinessProbe": {"httpGet": {"path": "/ok", "port": "http"},
                    "periodSeconds": 1, "failureThreshold": 1}}]}},
        // Readiness held back by initialDelaySeconds.
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "delayed"}, "spec": {
            "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": image, "command": ["sleep", "1000"],
                "readinessProbe": {"exec": {"command": ["true"]},
                    "initialDelaySeconds": 4, "periodSeconds": 1}}]}},
        // Hooks and a grace period: postStart writes a file; preStop records that it ran; the
        // container ignores SIGTERM, so it is killed when the grace period ends.
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stubborn"}, "spec": {
            "nodeName": "node-a", "terminationGracePeriodSeconds": 4,
            "volumes": [{"name": "out", "hostPath": {"path": node.kubelet.root_dir.join("hook-out").to_str().unwrap(), "type": "DirectoryOrCreate"}}],
            "containers": [{"name": "app", "image": image,
                "command": sh("trap '' TERM; while true; do sleep 1; done"),
                "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo started > /out/post-start"]}},
                    "preStop": {"exec": {"command": ["sh", "-c", "echo stopping > /out/pre-stop"]}}}}]}}
    ]);
    apply_all(&k, &items);

    let p = wait_pod(&node, &k, "live", "restarted by its liveness probe", |p| {
        container_status(p, "containerStatuses", "app")
            .is_some_and(|s| s["restartCount"].as_i64() >= Some(1))
    });
    let s = container_status(&p, "containerStatuses", "app").unwrap();
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 137, "{s}");
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=live",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("Liveness probe failed"), "{events}");
    assert!(
        events.contains("Container app failed liveness probe, will be restarted"),
        "{events}"
    );

    let p = wait_ready(&node, &k, "ready");
    assert_eq!(
        container_status(&p, "containerStatuses", "web").unwrap()["started"],
        true
    );
    exec_in(&node, &p, "web", &["rm", "/www/ok"]).await;
    wait_pod(&node, &k, "ready", "not Ready", |p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "False")
        }) && container_status(p, "containerStatuses", "web")
            .is_some_and(|s| s["ready"] == false && s["state"]["running"].is_object())
    });
    exec_in(&node, &p, "web", &["touch", "/www/ok"]).await;
    wait_ready(&node, &k, "ready");

    let p = wait_ready(&node, &k, "delayed");
    let started = container_status(&p, "containerStatuses", "app").unwrap()["state"]["running"]
        ["startedAt"]
        .as_str()
        .unwrap()
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap();
    let ready_at = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["lastTransitionTime"]
        .as_str()
        .unwrap()
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap();
    let gap = ready_at.as_second() - started.as_second();
    assert!(
        gap >= 3,
        "Ready {gap}s after start despite initialDelaySeconds: 4"
    );

    wait_ready(&node, &k, "stubborn");
    let out = node.kubelet.root_dir.join("hook-out");
    assert_eq!(
        std::fs::read_to_string(out.join("post-start")).unwrap(),
        "started\n"
    );
    let start = Instant::now();
    k.ok(&["delete", "pod", "stubborn", "--wait=true", "--timeout=60s"]);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "the grace period was not honoured: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "killed too late: {took:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("pre-stop")).unwrap(),
        "stopping\n"
    );
}

#[tokio::test]
async fn a_restarted_kubelet_adopts_its_pods_and_cleans_up_what_it_missed() {
    let c = Cluster::start().await.unwrap();
    let mut node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    let sleeper = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
            "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": image, "command": ["sleep", "1000"]}]}})
    };
    apply_all(
        &k,
        &json!([sleeper("keep"), sleeper("doomed"), sleeper("forced")]),
    );
    let before = wait_ready(&node, &k, "keep");
    wait_ready(&node, &k, "doomed");
    let forced = wait_ready(&node, &k, "forced");
    let id_of =
        |p: &Value| container_status(p, "containerStatuses", "app").unwrap()["containerID"].clone();

    node.kubelet.stop();
    // While it is away: one pod deleted gracefully (it waits for the kubelet), one removed
    // from the API for good, and a sandbox that belongs to no pod at all.
    k.ok(&["delete", "pod", "doomed", "--wait=false"]);
    k.ok(&["delete", "pod", "forced", "--force", "--grace-period=0"]);
    let mut rt = node.ctrd.cri().unwrap();
    let stray = rt
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "stray".into(),
                    uid: "no-such-pod".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                labels: [(
                    "io.kubernetes.pod.uid".to_string(),
                    "no-such-pod".to_string(),
                )]
                .into(),
                linux: Some(Default::default()),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    node.kubelet.restart().unwrap();

    // The doomed pod is stopped and its object removed.
    node.wait_blocking("the doomed pod removed", Duration::from_secs(30), || {
        k.run(&["get", "pod", "doomed"])
            .stderr
            .contains("NotFound")
            .then_some(())
    });
    // The sandboxes of the forced pod and of no pod are removed.
    let forced_uid = forced["metadata"]["uid"].as_str().unwrap().to_string();
    let mut sandboxes = Vec::new();
    for _ in 0..100 {
        sandboxes = rt
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        if sandboxes.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sandboxes.len(),
        1,
        "left: {sandboxes:?}\n{}",
        node.kubelet.log()
    );
    assert!(sandboxes.iter().all(|s| s.id != stray));
    assert!(sandboxes
        .iter()
        .all(|s| s.metadata.as_ref().unwrap().uid != forced_uid));
    // The running pod was adopted: same container, never restarted.
    let after = wait_ready(&node, &k, "keep");
    assert_eq!(id_of(&after), id_of(&before));
    assert_eq!(
        container_status(&after, "containerStatuses", "app").unwrap()["restartCount"],
        0
    );

    // containerd restarts; the pod keeps running and new pods still start.
    node.ctrd.restart().unwrap();
    apply(&k, &sleeper("later"));
    wait_ready(&node, &k, "later");
    let again = wait_ready(&node, &k, "keep");
    assert_eq!(id_of(&again), id_of(&before));
    assert_eq!(
        container_status(&again, "containerStatuses", "app").unwrap()["restartCount"],
        0
    );
}

#[tokio::test]
async fn kubectl_logs_reads_container_logs_through_the_kubelet() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    apply_all(
        &k,
        &json!([
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker"}, "spec": {
                "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "main", "image": image, "command": ["sh", "-c",
                        "for i in 1 2 3; do echo line $i; done; sleep 1; echo oops >&2; sleep 8; echo late; exec sleep 1000"]},
                    {"name": "other", "image": image, "command": ["sh", "-c", "echo from other; exec sleep 1000"]}
                ]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"}, "spec": {
                "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": image, "command": ["sh", "-c",
                    "echo run $(cat /proc/uptime); exit 1"]}]}}
        ]),
    );
    wait_ready(&node, &k, "talker");
    // (The container sleeps between its stdout lines and its stderr line: the two streams
    // reach the log through separate pipes, so nothing orders lines written at once.)
    // Follow from the start: the late line arrives while kubectl waits.
    let mut follow = k.spawn(&["logs", "-f", "talker", "-c", "main"]);
    let out = node.wait_blocking("the first lines", Duration::from_secs(20), || {
        let r = k.run(&["logs", "talker", "-c", "main"]);
        r.stdout.contains("oops").then_some(r.stdout)
    });
    assert!(out.starts_with("line 1\nline 2\nline 3\noops\n"), "{out:?}");
    assert_eq!(
        k.ok(&["logs", "talker", "-c", "main", "--tail=2"]),
        "line 3\noops\n"
    );
    let stamped = k.ok(&["logs", "talker", "-c", "main", "--timestamps", "--tail=1"]);
    let (time, rest) = stamped.split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{stamped}");
    assert_eq!(rest, "oops\n");
    assert_eq!(k.ok(&["logs", "talker", "-c", "other"]), "from other\n");
    assert_eq!(
        k.ok(&[
            "logs",
            "talker",
            "-c",
            "main",
            "--since=1h",
            "--limit-bytes=6"
        ]),
        "line 1"
    );
    node.wait_blocking("the late line", Duration::from_secs(20), || {
        k.ok(&["logs", "talker", "-c", "main"])
            .contains("late")
            .then_some(())
    });
    // The follower printed it too, then keeps following until stopped.
    std::thread::sleep(Duration::from_millis(500));
    skiff_e2e::stop_child(&mut follow, Duration::from_secs(2));
    let mut followed = String::new();
    use std::io::Read;
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(
        followed.contains("line 1\n") && followed.contains("late\n"),
        "{followed:?}"
    );

    // Bad requests name the problem.
    let err = k.fails(&["logs", "talker", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod talker"),
        "{err}"
    );
    let err = k.fails(&["logs", "talker", "-c", "main", "--previous"]);
    assert!(
        err.contains("previous terminated container \"main\" in pod \"talker\" not found"),
        "{err}"
    );

    // --previous: the run before the current one.
    wait_pod(&node, &k, "crasher", "restarted", |p| {
        container_status(p, "containerStatuses", "app")
            .is_some_and(|s| s["restartCount"].as_i64() >= Some(1))
    });
    // (A restart just made may not have printed yet: wait for both runs' lines.)
    let (prev, cur) = node.wait_blocking("two runs' logs", Duration::from_secs(30), || {
        let prev = k.ok(&["logs", "crasher", "--previous"]);
        let cur = k.ok(&["logs", "crasher"]);
        (!prev.is_empty() && !cur.is_empty()).then_some((prev, cur))
    });
    assert!(
        prev.starts_with("run ") && cur.starts_with("run "),
        "{prev:?} {cur:?}"
    );
    assert_ne!(prev, cur);
}

#[tokio::test]
async fn kubectl_exec_attach_and_port_forward_reach_the_container() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    apply(
        &k,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"}, "spec": {
        "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
        "containers": [
            {"name": "main", "image": image, "command": ["sh", "-c",
                "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www"]},
            {"name": "ticker", "image": image, "stdin": true, "command": ["sh", "-c",
                "while read line; do echo got $line; done"]}
        ]}}),
    );
    wait_ready(&node, &k, "shell");

    // A command, its output and its exit code.
    assert_eq!(
        k.ok(&["exec", "shell", "-c", "main", "--", "echo", "hello"]),
        "hello\n"
    );
    let r = k.run(&[
        "exec",
        "shell",
        "-c",
        "main",
        "--",
        "sh",
        "-c",
        "echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("to-stderr"), "{}", r.stderr);
    // Standard input.
    let out = k.ok_input(
        &["exec", "-i", "shell", "-c", "main", "--", "sh"],
        "echo from-stdin; hostname\n",
    );
    assert_eq!(out, "from-stdin\nshell\n");
    // Bad requests name the problem.
    let err = k.fails(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(
        err.contains("container nope is not valid for pod shell"),
        "{err}"
    );

    // Attach to a container's own stdin and stdout, interactively: a line typed, its answer
    // read back while the session is open.
    let mut attach = k.spawn_interactive(&["attach", "-i", "shell", "-c", "ticker"]);
    let mut stdin = attach.stdin.take().unwrap();
    let stdout = attach.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while !got.iter().any(|l: &String| l == "got one") && Instant::now() < deadline {
        use std::io::Write;
        let _ = stdin.write_all(b"one\n");
        let _ = stdin.flush();
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            got.push(l);
        }
    }
    skiff_e2e::stop_child(&mut attach, Duration::from_secs(2));
    assert!(got.iter().any(|l| l == "got one"), "{got:?}");

    // Port-forward to the pod's port.
    let port = skiff_e2e::free_port();
    let mut pf = k.spawn(&["port-forward", "pod/shell", &format!("{port}:8080")]);
    let body = node.wait_blocking("HTTP through port-forward", Duration::from_secs(20), || {
        http_get("127.0.0.1", port).filter(|b| b.contains("served"))
    });
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    skiff_e2e::stop_child(&mut pf, Duration::from_secs(2));
}

#[tokio::test]
async fn host_network_and_host_ports() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    let (host_net_port, host_port) = (skiff_e2e::free_port(), skiff_e2e::free_port());
    apply_all(
        &k,
        &json!([
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-host"}, "spec": {
                "nodeName": "node-a", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": image, "command": ["sh", "-c",
                    format!("mkdir -p /www && echo host-net > /www/index.html && exec httpd -f -p 127.0.0.1:{host_net_port} -h /www")]}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mapped"}, "spec": {
                "nodeName": "node-a", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": image,
                    "ports": [{"containerPort": 8080, "hostPort": host_port}],
                    "command": ["sh", "-c",
                    "mkdir -p /www && echo mapped > /www/index.html && exec httpd -f -p 8080 -h /www"]}]}}
        ]),
    );
    // The host network pod has the node's IP and listens on the node itself.
    let p = wait_ready(&node, &k, "on-host");
    assert_eq!(p["status"]["podIP"], "127.0.0.1");
    assert_eq!(p["status"]["podIP"], p["status"]["hostIP"]);
    let body = node.wait_blocking("the host network pod", Duration::from_secs(10), || {
        http_get("127.0.0.1", host_net_port).filter(|b| b.contains("host-net"))
    });
    assert!(body.contains("200"), "{body}");
    // The host port reaches the pod: from the node to one of its own addresses (the bridge's).
    let p = wait_ready(&node, &k, "mapped");
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let gateway = format!("{}.1", ip.rsplit_once('.').unwrap().0);
    let body = node.wait_blocking("the host port", Duration::from_secs(10), || {
        http_get(&gateway, host_port).filter(|b| b.contains("mapped"))
    });
    assert!(body.contains("200"), "{body}");
}

/// Waits until the runtime runs exactly `n` containers; returns them.
async fn wait_running_containers(node: &Node, n: usize) -> Vec<cri::Container> {
    let mut rt = node.ctrd.cri().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = rt
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    state: Some(cri::ContainerStateValue {
                        state: cri::ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        if running.len() == n {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "{n} containers running; the runtime runs {running:?}\nkubelet log:\n{}",
            node.kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn controllers_run_deployments_and_jobs_on_a_real_kubelet() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let _scheduler = skiff_e2e::Daemon::start(
        "skiff-scheduler",
        &c.api,
        &["--port=0", "--leader-elect=false"],
    )
    .unwrap();
    let _cm = skiff_e2e::Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &["--port=0", "--leader-elect=false"],
    )
    .unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    let web = |version: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "httpd", "image": image, "command": ["sh", "-c",
                        format!("mkdir -p /www && echo {version} > /www/index.html && exec httpd -f -p 8080 -h /www")],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}}}})
    };
    let serving = |version: &str| {
        let version = version.to_string();
        let k = &k;
        move || {
            let pods = k.json(&["get", "pods", "-l", "app=web", "-o", "json"]);
            let pods = pods["items"].as_array()?.clone();
            let ips: Vec<String> = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
                .collect();
            let all = ips.len() == 2
                && pods.len() == 2
                && ips
                    .iter()
                    .all(|ip| http_get(ip, 8080).is_some_and(|b| b.contains(&version)));
            all.then_some(ips)
        }
    };

    // A Deployment: two pods scheduled onto the node, started by the kubelet, serving.
    apply(&k, &web("v1"));
    let mut first = node.wait_blocking(
        "two v1 pods serving",
        Duration::from_secs(120),
        serving("v1"),
    );
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // A rolling update replaces both with pods of the new template; the old containers stop.
    apply(&k, &web("v2"));
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let mut second = node.wait_blocking(
        "two v2 pods serving",
        Duration::from_secs(60),
        serving("v2"),
    );
    first.sort();
    second.sort();
    assert_ne!(first, second, "new pods, new addresses");
    let running = wait_running_containers(&node, 2).await;
    assert!(running
        .iter()
        .all(|c| c.metadata.as_ref().unwrap().name == "httpd"));

    // A Job that runs `script` in a real process, until `condition` (Complete or Failed).
    let run_job = |name: &str, spec: Value, script: &str, condition: &str| {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never",
            "containers": [{"name": "work", "image": image, "command": ["sh", "-c", script]}]}});
        apply(
            &k,
            &json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}),
        );
        let out = k.ok(&[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("job/{name}"),
            "--timeout=120s",
        ]);
        assert!(out.contains("condition met"), "{out}");
    };

    // Three completions, two at a time, each a real process exiting 0.
    run_job(
        "count",
        json!({"completions": 3, "parallelism": 2}),
        "echo done",
        "Complete",
    );
    let job = k.json(&["get", "job", "count", "-o", "json"]);
    assert_eq!(job["status"]["succeeded"], 3, "{job:#}");
    let pods = k.json(&["get", "pods", "-l", "job-name=count", "-o", "json"]);
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 3, "{pods:#?}");
    for p in pods {
        assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}");
        assert_eq!(terminated(p, "work")["exitCode"], 0, "{p:#}");
    }
    let name = pods[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(k.ok(&["logs", name]).trim(), "done");

    // A process that fails, with no retries allowed: Failed, with Kubernetes' reason.
    run_job("broken", json!({"backoffLimit": 0}), "exit 3", "Failed");
    let job = k.json(&["get", "job", "broken", "-o", "json"]);
    let failed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{job:#}");
    let pod = &k.json(&["get", "pods", "-l", "job-name=broken", "-o", "json"])["items"][0];
    assert_eq!(terminated(pod, "work")["exitCode"], 3, "{pod:#}");

    // Deleting the Deployment takes its ReplicaSets and pods with it, down to the runtime.
    k.ok(&[
        "delete",
        "deployment",
        "web",
        "--wait=true",
        "--timeout=60s",
    ]);
    node.wait_blocking("the web pods gone", Duration::from_secs(60), || {
        let pods = k.json(&["get", "pods", "-l", "app=web", "-o", "json"]);
        let rs = k.json(&["get", "replicasets", "-o", "json"]);
        (pods["items"].as_array()?.is_empty() && rs["items"].as_array()?.is_empty()).then_some(())
    });
    wait_running_containers(&node, 0).await;
}
