//! ResourceQuotas and LimitRanges end to end: a real etcd and API server, the controller
//! manager's `resourcequota` controller, and the real kubectl. Quotas made with `kubectl
//! create quota` enforce what they limit with Kubernetes' messages and `403`s, through both
//! kubectl and plain REST; sixteen clients creating ConfigMaps at once never get past a
//! `count/configmaps` limit; deletions give usage back; pods must state what a compute quota
//! limits; scopes select pods; LimitRanges default pods' requests and limits and refuse pods
//! out of bounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::{eventually, send, Cluster, Daemon, Kubectl};

/// An API server, and a controller manager running only the resource quota controller.
struct Env {
    cm: Option<Daemon>,
    c: Cluster,
}

impl Env {
    async fn start() -> Env {
        let mut e = Env::without_controller().await;
        e.start_controller();
        e
    }

    async fn without_controller() -> Env {
        Env {
            cm: None,
            c: Cluster::start().await.unwrap(),
        }
    }

    fn start_controller(&mut self) {
        self.cm = Some(
            Daemon::start(
                "skiff-controller-manager",
                &self.c.api,
                &[
                    "--port=0",
                    "--leader-elect=false",
                    "--kube-api-qps=0",
                    "--controllers=resourcequota",
                    // Short, so that the periodic recount (which gives back what resources
                    // without an informer held) shows within the test.
                    "--resource-quota-sync-period=2s",
                ],
            )
            .unwrap(),
        );
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    fn log(&self) -> String {
        self.cm.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// Waits until the quota's `status.used` holds `want` (name → canonical quantity).
    async fn used(&self, ns: &str, quota: &str, want: &[(&str, &str)]) -> Value {
        let k = self.kubectl();
        let mut last = Value::Null;
        let got = eventually(Duration::from_secs(20), || {
            let r = k.run(&["get", "quota", quota, "-n", ns, "-o", "json"]);
            if !r.status.success() {
                return None;
            }
            last = serde_json::from_str(&r.stdout).ok()?;
            want.iter()
                .all(|(n, v)| last["status"]["used"][*n] == json!(v))
                .then(|| last.clone())
        })
        .await;
        got.unwrap_or_else(|| {
            panic!(
                "quota {ns}/{quota} never used {want:?}; last:\n{last:#}\ncontroller manager log:\n{}",
                self.log()
            )
        })
    }
}

fn pod(name: &str, resources: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "web", "image": "busybox", "resources": resources}]}})
    .to_string()
}

#[tokio::test]
async fn kubectl_quotas_refuse_past_their_limits_and_give_back_on_delete() {
    let mut env = Env::without_controller().await;
    let k = env.kubectl();
    k.ok(&["create", "namespace", "q1"]);
    k.ok(&[
        "create",
        "quota",
        "objects",
        "-n",
        "q1",
        "--hard=count/configmaps=3,pods=2",
    ]);
    // Until the controller has counted, the quota's status is empty and, as in Kubernetes,
    // it limits nothing yet.
    let q = k.json(&["get", "quota", "objects", "-n", "q1"]);
    assert!(
        q["status"].as_object().is_none_or(|s| s.is_empty()),
        "{q:#}"
    );
    k.ok(&["create", "configmap", "early", "-n", "q1"]);
    // A status that names a limit without its usage refuses, as Kubernetes does.
    k.ok(&[
        "patch",
        "quota",
        "objects",
        "-n",
        "q1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"hard":{"pods":"2"}}}"#,
    ]);
    let r = k.run_with_input(&["create", "-n", "q1", "-f", "-"], &pod("p0", json!({})));
    assert!(!r.status.success());
    assert!(
        r.stderr.contains(
            "pods \"p0\" is forbidden: status unknown for quota: objects, resources: pods"
        ),
        "{}",
        r.stderr
    );

    env.start_controller();
    // The controller counts what is there already.
    env.used("q1", "objects", &[("count/configmaps", "1"), ("pods", "0")])
        .await;
    let resources = k.ok(&["api-resources"]);
    for (name, short) in [("resourcequotas", "quota"), ("limitranges", "limits")] {
        assert!(
            resources
                .lines()
                .any(|l| l.starts_with(name) && l.split_whitespace().nth(1) == Some(short)),
            "{name} missing:\n{resources}"
        );
    }
    let explained = k.ok(&["explain", "resourcequota.spec"]);
    assert!(explained.contains("scopeSelector"), "{explained}");
    let table = k.ok(&["get", "quota", "-n", "q1"]);
    assert!(
        table.contains("REQUEST") && table.contains("LIMIT"),
        "{table}"
    );
    assert!(
        table.contains("count/configmaps: 1/3, pods: 0/2"),
        "{table}"
    );
    let described = k.ok(&["describe", "quota", "objects", "-n", "q1"]);
    let rows: Vec<Vec<&str>> = described
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["Resource", "Used", "Hard"]),
        "{described}"
    );
    assert!(
        rows.contains(&vec!["count/configmaps", "1", "3"]),
        "{described}"
    );
    assert!(rows.contains(&vec!["pods", "0", "2"]), "{described}");

    k.ok(&["create", "configmap", "a", "-n", "q1"]);
    k.ok(&["create", "configmap", "b", "-n", "q1"]);
    let err = k.fails(&["create", "configmap", "c", "-n", "q1"]);
    assert!(
        err.contains("configmaps \"c\" is forbidden: exceeded quota: objects, requested: count/configmaps=1, used: count/configmaps=3, limited: count/configmaps=3"),
        "{err}"
    );
    // The same refusal over plain REST: a 403 Status.
    let http = env.c.api.client().unwrap();
    let (code, status) = send(
        &http,
        reqwest::Method::POST,
        env.c.api.url("/api/v1/namespaces/q1/configmaps"),
        Some(json!({"metadata": {"name": "c"}})),
    )
    .await;
    assert_eq!(code, 403, "{status:#}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "configmaps \"c\" is forbidden: exceeded quota: objects, requested: count/configmaps=1, used: count/configmaps=3, limited: count/configmaps=3"
    );
    assert_eq!(status["details"]["name"], "c");
    // A dry run is checked but charges nothing.
    let err = k.fails(&["create", "configmap", "c", "-n", "q1", "--dry-run=server"]);
    assert!(err.contains("exceeded quota: objects"), "{err}");

    // Pods: the plain `pods` count.
    for p in ["p1", "p2"] {
        k.ok_input(&["create", "-n", "q1", "-f", "-"], &pod(p, json!({})));
    }
    let r = k.run_with_input(&["create", "-n", "q1", "-f", "-"], &pod("p3", json!({})));
    assert!(
        r.stderr.contains("pods \"p3\" is forbidden: exceeded quota: objects, requested: pods=1, used: pods=2, limited: pods=2"),
        "{}",
        r.stderr
    );

    // Deleting gives usage back, through the controller.
    k.ok(&["delete", "configmap", "a", "b", "-n", "q1"]);
    k.ok(&[
        "delete",
        "pod",
        "p1",
        "-n",
        "q1",
        "--grace-period=0",
        "--force",
    ]);
    env.used("q1", "objects", &[("count/configmaps", "1"), ("pods", "1")])
        .await;
    k.ok(&["create", "configmap", "c", "-n", "q1"]);
    k.ok_input(&["create", "-n", "q1", "-f", "-"], &pod("p3", json!({})));
    env.used("q1", "objects", &[("count/configmaps", "2"), ("pods", "2")])
        .await;

    // Any resource can be counted, here one the controller has no informer for: it lists
    // it, so a deletion shows at the next periodic recount.
    k.ok(&[
        "create",
        "quota",
        "roles",
        "-n",
        "q1",
        "--hard=count/roles.rbac.authorization.k8s.io=1",
    ]);
    env.used(
        "q1",
        "roles",
        &[("count/roles.rbac.authorization.k8s.io", "0")],
    )
    .await;
    k.ok(&[
        "create",
        "role",
        "r1",
        "-n",
        "q1",
        "--verb=get",
        "--resource=pods",
    ]);
    let err = k.fails(&[
        "create",
        "role",
        "r2",
        "-n",
        "q1",
        "--verb=get",
        "--resource=pods",
    ]);
    assert!(
        err.contains("roles.rbac.authorization.k8s.io \"r2\" is forbidden: exceeded quota: roles, requested: count/roles.rbac.authorization.k8s.io=1, used: count/roles.rbac.authorization.k8s.io=1, limited: count/roles.rbac.authorization.k8s.io=1"),
        "{err}"
    );
    k.ok(&["delete", "role", "r1", "-n", "q1"]);
    env.used(
        "q1",
        "roles",
        &[("count/roles.rbac.authorization.k8s.io", "0")],
    )
    .await;
    k.ok(&[
        "create",
        "role",
        "r2",
        "-n",
        "q1",
        "--verb=get",
        "--resource=pods",
    ]);

    // Raising the limit is picked up at once.
    k.ok(&[
        "patch",
        "quota",
        "objects",
        "-n",
        "q1",
        "--type=merge",
        "-p",
        r#"{"spec":{"hard":{"count/configmaps":"5","pods":"2"}}}"#,
    ]);
    let q = env
        .used("q1", "objects", &[("count/configmaps", "2")])
        .await;
    let limit_in_force = eventually(Duration::from_secs(20), || {
        let q = k.json(&["get", "quota", "objects", "-n", "q1"]);
        (q["status"]["hard"]["count/configmaps"] == "5").then_some(())
    })
    .await;
    assert!(limit_in_force.is_some(), "{q:#}\n{}", env.log());
    k.ok(&["create", "configmap", "d", "-n", "q1"]);
}

#[tokio::test]
async fn sixteen_concurrent_clients_never_overshoot_a_count_quota() {
    let env = Env::start().await;
    let k = env.kubectl();
    k.ok(&["create", "namespace", "burst"]);
    k.ok(&[
        "create",
        "quota",
        "cms",
        "-n",
        "burst",
        "--hard=count/configmaps=10",
    ]);
    env.used("burst", "cms", &[("count/configmaps", "0")]).await;

    let created = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in 0..16 {
        // A client (and connection) of its own for each.
        let http = env.c.api.client().unwrap();
        let url = env.c.api.url("/api/v1/namespaces/burst/configmaps");
        let (created, refused) = (created.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..3 {
                let body = json!({"metadata": {"name": format!("cm-{client}-{n}")}});
                let (code, status) = send(&http, reqwest::Method::POST, url.clone(), Some(body)).await;
                match code {
                    201 => {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    403 => {
                        assert!(
                            status["message"]
                                .as_str()
                                .unwrap_or("")
                                .contains("exceeded quota: cms, requested: count/configmaps=1, used: count/configmaps=10, limited: count/configmaps=10"),
                            "{status:#}"
                        );
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!("unexpected {other}: {status:#}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(created.load(Ordering::SeqCst), 10);
    assert_eq!(refused.load(Ordering::SeqCst), 48 - 10);
    let stored = k.json(&["get", "configmaps", "-n", "burst"]);
    assert_eq!(stored["items"].as_array().map(Vec::len), Some(10));
    let q = k.json(&["get", "quota", "cms", "-n", "burst"]);
    assert_eq!(q["status"]["used"]["count/configmaps"], "10", "{q:#}");
    // The SDK counts them too, naming the resource without a version.
    let client = skiff_client::Client::new(
        skiff_client::Config::from_kubeconfig(&env.c.api.kubeconfig).unwrap(),
    )
    .unwrap();
    let configmaps = skiff_client::untyped::ResourceRef::any_version("", "configmaps");
    assert_eq!(
        skiff_client::untyped::count(&client, &configmaps, Some("burst"))
            .await
            .unwrap(),
        10
    );
    // And the controller's own recount agrees.
    k.ok(&[
        "delete",
        "configmap",
        "cm-0-0",
        "-n",
        "burst",
        "--ignore-not-found",
    ]);
    let remaining = k.json(&["get", "configmaps", "-n", "burst"])["items"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    env.used(
        "burst",
        "cms",
        &[("count/configmaps", &remaining.to_string())],
    )
    .await;
}

#[tokio::test]
async fn compute_quotas_scopes_and_limit_ranges() {
    let env = Env::start().await;
    let k = env.kubectl();
    for ns in ["compute", "scoped", "ranged"] {
        k.ok(&["create", "namespace", ns]);
    }

    // A compute quota: pods must state what it limits.
    k.ok(&[
        "create",
        "quota",
        "compute",
        "-n",
        "compute",
        "--hard=requests.cpu=1,limits.cpu=2,requests.memory=1Gi",
    ]);
    env.used("compute", "compute", &[("requests.cpu", "0")])
        .await;
    let r = k.run_with_input(
        &["create", "-n", "compute", "-f", "-"],
        &pod("web", json!({})),
    );
    assert!(!r.status.success());
    assert!(
        r.stderr.contains("pods \"web\" is forbidden: failed quota: compute: must specify limits.cpu for: web; requests.cpu for: web; requests.memory for: web"),
        "{}",
        r.stderr
    );
    let sized = json!({"requests": {"cpu": "600m", "memory": "256Mi"}, "limits": {"cpu": "1"}});
    k.ok_input(
        &["create", "-n", "compute", "-f", "-"],
        &pod("a", sized.clone()),
    );
    let r = k.run_with_input(&["create", "-n", "compute", "-f", "-"], &pod("b", sized));
    assert!(
        r.stderr.contains("pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"),
        "{}",
        r.stderr
    );
    let q = env
        .used(
            "compute",
            "compute",
            &[
                ("requests.cpu", "600m"),
                ("limits.cpu", "1"),
                ("requests.memory", "256Mi"),
            ],
        )
        .await;
    assert_eq!(q["status"]["hard"]["requests.memory"], "1Gi");

    // A BestEffort-scoped quota counts only pods without requests or limits.
    k.ok(&[
        "create",
        "quota",
        "besteffort",
        "-n",
        "scoped",
        "--hard=pods=1",
        "--scopes=BestEffort",
    ]);
    env.used("scoped", "besteffort", &[("pods", "0")]).await;
    k.ok_input(
        &["create", "-n", "scoped", "-f", "-"],
        &pod("be1", json!({})),
    );
    let r = k.run_with_input(
        &["create", "-n", "scoped", "-f", "-"],
        &pod("be2", json!({})),
    );
    assert!(
        r.stderr.contains("pods \"be2\" is forbidden: exceeded quota: besteffort, requested: pods=1, used: pods=1, limited: pods=1"),
        "{}",
        r.stderr
    );
    k.ok_input(
        &["create", "-n", "scoped", "-f", "-"],
        &pod("burstable", json!({"requests": {"cpu": "100m"}})),
    );
    let q = k.json(&["get", "quota", "besteffort", "-n", "scoped"]);
    assert_eq!(q["status"]["used"]["pods"], "1", "{q:#}");
    // A scope that cannot limit what the quota names is refused.
    let err = k.fails(&[
        "create",
        "quota",
        "bad",
        "-n",
        "scoped",
        "--hard=requests.cpu=1",
        "--scopes=BestEffort",
    ]);
    assert!(
        err.contains("spec.scopes: Invalid value: []core.ResourceQuotaScope{\"BestEffort\"}: unsupported scope applied to resource"),
        "{err}"
    );

    // A LimitRange fills in defaults and refuses pods out of bounds.
    let range = json!({"apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": "bounds"},
        "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "200m", "memory": "128Mi"},
            "min": {"cpu": "100m"}, "max": {"cpu": "2"}}]}});
    k.ok_input(&["create", "-n", "ranged", "-f", "-"], &range.to_string());
    let listed = k.ok(&["get", "limits", "-n", "ranged"]);
    assert!(
        listed.contains("CREATED AT") && listed.contains("bounds"),
        "{listed}"
    );
    k.ok(&[
        "run",
        "web",
        "--image=busybox",
        "--restart=Never",
        "-n",
        "ranged",
    ]);
    let p = k.json(&["get", "pod", "web", "-n", "ranged"]);
    let res = &p["spec"]["containers"][0]["resources"];
    assert_eq!(
        res["requests"],
        json!({"cpu": "200m", "memory": "128Mi"}),
        "{p:#}"
    );
    assert_eq!(
        res["limits"],
        json!({"cpu": "500m", "memory": "256Mi"}),
        "{p:#}"
    );
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container web; cpu, memory limit for container web"
    );
    let r = k.run_with_input(
        &["create", "-n", "ranged", "-f", "-"],
        &pod("tiny", json!({"requests": {"cpu": "50m"}})),
    );
    assert!(
        r.stderr.contains("pods \"tiny\" is forbidden: minimum cpu usage per Container is 100m, but request is 50m"),
        "{}",
        r.stderr
    );
    // Defaults apply before quota: a defaulted pod is charged what it was given.
    k.ok(&[
        "create",
        "quota",
        "compute",
        "-n",
        "ranged",
        "--hard=requests.cpu=500m,limits.cpu=1",
    ]);
    env.used(
        "ranged",
        "compute",
        &[("requests.cpu", "200m"), ("limits.cpu", "500m")],
    )
    .await;
    k.ok(&[
        "run",
        "second",
        "--image=busybox",
        "--restart=Never",
        "-n",
        "ranged",
    ]);
    let err = k.fails(&[
        "run",
        "third",
        "--image=busybox",
        "--restart=Never",
        "-n",
        "ranged",
    ]);
    assert!(
        err.contains("pods \"third\" is forbidden: exceeded quota: compute, requested: limits.cpu=500m,requests.cpu=200m, used: limits.cpu=1,requests.cpu=400m, limited: limits.cpu=1,requests.cpu=500m"),
        "{err}"
    );
}
