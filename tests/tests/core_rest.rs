//! The rest of core/v1 and its neighbours that clients expect, end to end with the real
//! `kubectl`, plain HTTPS and the official Python client: ReplicationControllers kept at
//! scale by `skiff-controller-manager` (their pods garbage-collected, or orphaned), 400
//! PodTemplates listed in pages of 17, LocalSubjectAccessReviews, ComponentStatuses probing
//! real components, and the leader-election Leases under Kubernetes' names.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{eventually_ok, send, table_row, ApiServer, Cluster, Daemon, Kubectl};

const WAIT: Duration = Duration::from_secs(30);

/// A ReplicationController of `replicas` busybox pods labelled `app=<name>`, its selector
/// left to be defaulted from the template.
fn rc(name: &str, replicas: i32) -> String {
    json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    })
    .to_string()
}

/// The live (not deleting) pods labelled `app=<app>`.
fn live_pods(k: &Kubectl, app: &str) -> Vec<Value> {
    let sel = format!("app={app}");
    k.json(&["get", "pods", "-l", &sel])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

/// Waits until `n` live pods carry `app=<app>`; returns them.
fn wait_pods(k: &Kubectl, app: &str, n: usize, log: impl Fn() -> String) -> Vec<Value> {
    eventually_ok(
        &format!("{n} pods of {app}"),
        WAIT,
        || {
            let pods = live_pods(k, app);
            if pods.len() == n {
                Ok(pods)
            } else {
                Err(format!("{} pods", pods.len()))
            }
        },
        log,
    )
}

/// The health address a daemon started with `--port=0` logged.
fn health_addr(d: &Daemon) -> String {
    eventually_ok(
        &format!("{} serving its health checks", d.name),
        WAIT,
        || {
            d.log()
                .split("health=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(String::from)
                .ok_or_else(|| "not yet".to_string())
        },
        || d.log(),
    )
}

/// The holder of the Lease `kube-system/<name>`, once there is one.
fn lease_holder(k: &Kubectl, name: &str, log: impl Fn() -> String) -> String {
    eventually_ok(
        &format!("the Lease kube-system/{name} held"),
        WAIT,
        || {
            let r = k.run(&["get", "lease", "-n", "kube-system", name, "-o", "json"]);
            let lease: Value = serde_json::from_str(&r.stdout).map_err(|_| r.stderr.clone())?;
            lease
                .pointer("/spec/holderIdentity")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
                .map(String::from)
                .ok_or_else(|| format!("no holder: {lease}"))
        },
        log,
    )
}

#[tokio::test]
async fn replication_controllers_scale_and_their_pods_go_with_them_or_stay_orphaned() {
    let c = Cluster::start().await.unwrap();
    let cm = Daemon::start("skiff-controller-manager", &c.api, &["--port=0"]).unwrap();
    let log = || cm.log();
    let k = c.kubectl();

    // Refused: a selector that does not match the template, a template that may not restart.
    let mut bad: Value = serde_json::from_str(&rc("bad", 1)).unwrap();
    bad["spec"]["selector"] = json!({"app": "other"});
    let e = k
        .run_with_input(&["create", "-f", "-"], &bad.to_string())
        .stderr;
    assert!(
        e.contains("spec.template.metadata.labels: Invalid value")
            && e.contains("`selector` does not match template `labels`"),
        "{e}"
    );
    let mut bad: Value = serde_json::from_str(&rc("bad", 1)).unwrap();
    bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let e = k
        .run_with_input(&["create", "-f", "-"], &bad.to_string())
        .stderr;
    assert!(
        e.contains("spec.template.spec.restartPolicy: Unsupported value: \"Never\""),
        "{e}"
    );

    // The selector and the controller's labels come from the template.
    k.ok_input(&["create", "-f", "-"], &rc("web", 2));
    let web = k.json(&["get", "rc", "web"]);
    assert_eq!(web["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(web["metadata"]["labels"], json!({"app": "web"}));
    let pods = wait_pods(&k, "web", 2, log);
    let uid = web["metadata"]["uid"].clone();
    for p in &pods {
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicationController");
        assert_eq!(owner["apiVersion"], "v1");
        assert_eq!(owner["uid"], uid);
        assert_eq!(owner["controller"], true);
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    }
    k.get_until(WAIT, &["rc", "web"], |rc| {
        rc.pointer("/status/replicas") == Some(&json!(2))
            && rc.pointer("/status/observedGeneration") == Some(&json!(1))
    })
    .await
    .unwrap_or_else(|last| panic!("status: {last}\n{}", cm.log()));

    // kubectl's columns.
    let (header, row) = table_row(&k.ok(&["get", "rc", "web"]), "web");
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
    assert_eq!(row[1..4], ["2", "2", "0"]);
    let (header, row) = table_row(&k.ok(&["get", "rc", "web", "-o", "wide"]), "web");
    assert_eq!(
        header[5..],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
        "{header:?}"
    );
    assert_eq!(row[5..], ["c", "busybox", "app=web"]);

    // Scaled through the scale subresource.
    let out = k.ok(&["scale", "rc", "web", "--replicas=4"]);
    assert!(out.contains("replicationcontroller/web scaled"), "{out}");
    wait_pods(&k, "web", 4, log);
    let scale: Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/replicationcontrollers/web/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=web");
    k.ok(&["scale", "rc", "web", "--replicas=1"]);
    wait_pods(&k, "web", 1, log);
    let e = k.fails(&["scale", "rc", "web", "--replicas=-1"]);
    assert!(e.contains("--replicas=COUNT"), "{e}");

    // Deleted: its pods go too.
    k.ok(&["delete", "rc", "web"]);
    wait_pods(&k, "web", 0, log);

    // Deleted with --cascade=orphan: its pods stay, no longer owned.
    k.ok_input(&["create", "-f", "-"], &rc("keep", 2));
    wait_pods(&k, "keep", 2, log);
    k.ok(&["delete", "rc", "keep", "--cascade=orphan"]);
    eventually_ok(
        "the orphaned pods released",
        WAIT,
        || {
            let pods = live_pods(&k, "keep");
            let owned = pods
                .iter()
                .filter(|p| p.pointer("/metadata/ownerReferences").is_some())
                .count();
            let rc_gone = !k.run(&["get", "rc", "keep"]).status.success();
            if pods.len() == 2 && owned == 0 && rc_gone {
                Ok(())
            } else {
                Err(format!(
                    "{} pods, {owned} owned, rc gone: {rc_gone}",
                    pods.len()
                ))
            }
        },
        log,
    );

    // The controller manager leads on kube-controller-manager's Lease.
    lease_holder(&k, "kube-controller-manager", log);
}

#[tokio::test]
async fn four_hundred_pod_templates_list_in_pages_of_seventeen() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    k.ok(&["create", "namespace", "chunks"]);
    let python = skiff_e2e::kubernetes_venv();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/podtemplates_chunked.py");
    let run = Command::new(&python)
        .arg(script)
        .arg(&c.api.kubeconfig)
        .args(["chunks", "400", "17"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        seen,
        json!({"created": 400, "pages": 24, "seen": 400, "distinct": 400, "all": true,
               "defaulted": "Always"})
    );

    // kubectl pages too, and prints kubectl's columns.
    let out = k.ok(&["get", "podtemplates", "-n", "chunks", "--chunk-size=17"]);
    assert_eq!(out.lines().count(), 401, "a header and 400 rows");
    let (header, row) = table_row(&out, "template-0042");
    assert_eq!(header, ["NAME", "CONTAINERS", "IMAGES", "POD", "LABELS"]);
    assert_eq!(row[1..], ["c", "busybox", "app=chunks"]);

    // A template is validated as a workload's is, naming each field.
    let http = c.api.client().unwrap();
    let url = c.api.url("/api/v1/namespaces/chunks/podtemplates");
    let bad = json!({"apiVersion": "v1", "kind": "PodTemplate",
        "metadata": {"name": "bad"},
        "template": {"metadata": {"labels": {"-no": "x"}},
                     "spec": {"containers": [], "restartPolicy": "Sometimes"}}});
    let (code, body) = send(&http, Method::POST, url.clone(), Some(bad)).await;
    assert_eq!(code, 422, "{body}");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    for f in [
        "template.metadata.labels",
        "template.spec.containers",
        "template.spec.restartPolicy",
    ] {
        assert!(fields.contains(&f), "{f} in {body}");
    }
    let (code, _) = send(&http, Method::GET, format!("{url}/bad"), None).await;
    assert_eq!(code, 404, "nothing stored");

    // `generation` counts changes to the template.
    let t = k.json(&["get", "podtemplate", "-n", "chunks", "template-0001"]);
    assert_eq!(t["metadata"]["generation"], 1);
    k.ok(&[
        "patch",
        "podtemplate",
        "-n",
        "chunks",
        "template-0001",
        "--type=merge",
        "-p",
        r#"{"template":{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}}"#,
    ]);
    let t = k.json(&["get", "podtemplate", "-n", "chunks", "template-0001"]);
    assert_eq!(t["metadata"]["generation"], 2);
}

#[tokio::test]
async fn local_subject_access_reviews_answer_for_their_namespace() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    k.ok(&["create", "namespace", "team"]);
    k.ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "-n",
        "team",
        "--clusterrole=view",
        "--user=alice",
    ]);
    let http = c.api.client().unwrap();
    let url = c
        .api
        .url("/apis/authorization.k8s.io/v1/namespaces/team/localsubjectaccessreviews");
    let review = |user: &str, verb: &str, ns: Option<&str>| {
        let mut attrs = json!({"verb": verb, "resource": "pods"});
        if let Some(ns) = ns {
            attrs["namespace"] = json!(ns);
        }
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
               "spec": {"user": user, "resourceAttributes": attrs}})
    };
    let ask = |body: Value| send(&http, Method::POST, url.clone(), Some(body));

    let (code, body) = ask(review("alice", "list", Some("team"))).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"]["allowed"], true, "{body}");
    assert_eq!(body["metadata"]["namespace"], "team");
    assert_eq!(body["kind"], "LocalSubjectAccessReview");
    for (user, verb) in [("alice", "delete"), ("bob", "list")] {
        let (code, body) = ask(review(user, verb, Some("team"))).await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["status"]["allowed"], false, "{user} {verb}: {body}");
    }

    // A question about another namespace (or none) is refused as kube-apiserver refuses it.
    for ns in [Some("other"), None] {
        let (code, body) = ask(review("alice", "list", ns)).await;
        assert_eq!(code, 422, "{body}");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.starts_with("LocalSubjectAccessReview.authorization.k8s.io \"\" is invalid: ")
                && msg.contains(&format!(
                    "spec.resourceAttributes.namespace: Invalid value: \"{}\": must match metadata.namespace",
                    ns.unwrap_or("")
                )),
            "{msg}"
        );
    }
    // An object naming another namespace than the request's.
    let mut other = review("alice", "list", Some("team"));
    other["metadata"] = json!({"namespace": "other"});
    let (code, body) = ask(other).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    // No non-resource questions, no user or group.
    let (code, body) = ask(json!({"kind": "LocalSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "spec": {"user": "alice", "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}}))
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("spec.nonResourceAttributes: Invalid value: ")
            && body["message"]
                .as_str()
                .unwrap()
                .contains("disallowed on this kind of request"),
        "{body}"
    );
    let (code, body) = ask(review("", "list", Some("team"))).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at least one of user or group must be specified"),
        "{body}"
    );
    // Created only.
    let (code, _) = send(&http, Method::GET, url.clone(), None).await;
    assert_eq!(code, 405);
    let (code, _) = send(
        &http,
        Method::POST,
        url.clone(),
        Some(json!("not an object")),
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn component_statuses_probe_etcd_the_scheduler_and_the_controller_manager() {
    let c = Cluster::start().await.unwrap();
    let mut sched = Daemon::start("skiff-scheduler", &c.api, &["--port=0"]).unwrap();
    let cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &["--port=0", "--controllers=replicaset"],
    )
    .unwrap();
    let (s, m) = (health_addr(&sched), health_addr(&cm));
    // A second API server on the same etcd, told where the components' health checks are.
    let api = ApiServer::start_with(
        &c.etcd,
        &[
            &format!("--scheduler-healthz-url=http://{s}/healthz"),
            &format!("--controller-manager-healthz-url=http://{m}/healthz"),
        ],
    )
    .await
    .unwrap();
    let k = api.kubectl();
    let logs = || format!("{}\n{}\n{}", sched.log(), cm.log(), api.log());

    let r = k.run(&["get", "componentstatuses"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("Warning: v1 ComponentStatus is deprecated in v1.19+"),
        "{}",
        r.stderr
    );
    let lines: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["NAME", "STATUS", "MESSAGE", "ERROR"],
            vec!["controller-manager", "Healthy", "ok"],
            vec!["etcd-0", "Healthy", "ok"],
            vec!["scheduler", "Healthy", "ok"],
        ],
        "{}",
        r.stdout
    );
    let etcd = k.json(&["get", "cs", "etcd-0"]);
    assert_eq!(
        etcd,
        json!({"apiVersion": "v1", "kind": "ComponentStatus", "metadata": {"name": "etcd-0"},
               "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]})
    );
    let e = k.fails(&["get", "cs", "nope"]);
    assert!(e.contains("Component not found: nope"), "{e}");
    // Lists are filtered by selectors, as kube-apiserver filters them.
    let picked = k.json(&["get", "cs", "--field-selector=metadata.name=scheduler"]);
    let names: Vec<&str> = picked["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["scheduler"], "{picked}");
    let none = k.run(&["get", "cs", "-l", "tier=control-plane"]);
    assert!(none.status.success(), "{}", none.stderr);
    assert!(
        none.stderr.contains("No resources found"),
        "{}",
        none.stderr
    );

    // Read-only, never watched.
    let http = api.client().unwrap();
    for (method, path) in [
        (Method::GET, "/api/v1/componentstatuses?watch=1"),
        (Method::POST, "/api/v1/componentstatuses"),
        (Method::DELETE, "/api/v1/componentstatuses/etcd-0"),
    ] {
        let (code, body) = send(&http, method.clone(), api.url(path), Some(json!({}))).await;
        assert_eq!(code, 405, "{method} {path}: {body}");
    }
    let resources = k.ok(&["api-resources", "--api-group=", "-o", "wide"]);
    let cs = resources
        .lines()
        .find(|l| l.starts_with("componentstatuses "))
        .unwrap_or_else(|| panic!("{resources}"));
    assert_eq!(
        cs.split_whitespace().collect::<Vec<_>>(),
        [
            "componentstatuses",
            "cs",
            "v1",
            "false",
            "ComponentStatus",
            "get,list"
        ],
        "{resources}"
    );

    // Both components lead on the Leases Kubernetes' tools look for.
    lease_holder(&k, "kube-scheduler", logs);
    lease_holder(&k, "kube-controller-manager", logs);
    let other = Daemon::start(
        "skiff-scheduler",
        &c.api,
        &["--port=0", "--leader-elect-resource-name=second-scheduler"],
    )
    .unwrap();
    lease_holder(&k, "second-scheduler", || other.log());

    // A component that stopped answers no more.
    sched.stop();
    eventually_ok(
        "the stopped scheduler reported unhealthy",
        WAIT,
        || {
            let out = k.run(&["get", "cs", "scheduler"]).stdout;
            let (_, row) = table_row(&out, "scheduler");
            if row[1] == "Unhealthy" && out.to_lowercase().contains("connection refused") {
                Ok(())
            } else {
                Err(out)
            }
        },
        || api.log(),
    );
}
