//! The REST API's semantics over HTTPS, against a real etcd and a real skiff-apiserver:
//! authentication, concurrency, status subresources, deletion, selectors, pagination, watch,
//! patches and the error shapes of bad input.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::{send, ApiServer, Cluster, Etcd};

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})
}

#[tokio::test]
async fn authentication_client_cert_token_and_none() {
    let etcd = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "t0ken-abc,alice,1001,\"dev\"\n").unwrap();
    let api = ApiServer::start_with(&etcd, &[&format!("--token-auth-file={}", tokens.display())])
        .await
        .unwrap();
    let admin = api.client().unwrap();
    let (code, _) = send(
        &admin,
        reqwest::Method::GET,
        api.url("/api/v1/namespaces"),
        None,
    )
    .await;
    assert_eq!(code, 200);

    let anon = api.anonymous_client().unwrap();
    let (code, body) = send(
        &anon,
        reqwest::Method::GET,
        api.url("/api/v1/namespaces"),
        None,
    )
    .await;
    // No credentials: system:anonymous, whom RBAC grants no namespaces.
    assert_eq!(code, 403);
    assert_eq!(body["reason"], "Forbidden");
    // Health endpoints answer without credentials, as kube-apiserver's public-info role allows.
    let (code, _) = send(&anon, reqwest::Method::GET, api.url("/readyz"), None).await;
    assert_eq!(code, 200);

    let r = anon
        .get(api.url("/api/v1/namespaces"))
        .bearer_auth("t0ken-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    api.kubectl().ok(&[
        "create",
        "clusterrolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
    ]);
    let r = anon
        .get(api.url("/api/v1/namespaces"))
        .bearer_auth("t0ken-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = anon
        .get(api.url("/api/v1/namespaces"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn default_namespaces_and_kubernetes_service_exist() {
    let c = Cluster::start().await.unwrap();
    let client = c.api.client().unwrap();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, body) = send(
            &client,
            reqwest::Method::GET,
            c.api.url(&format!("/api/v1/namespaces/{ns}")),
            None,
        )
        .await;
        assert_eq!(code, 200, "{ns}: {body}");
        assert_eq!(body["status"]["phase"], "Active");
    }
    let (code, svc) = send(
        &client,
        reqwest::Method::GET,
        c.api.url("/api/v1/namespaces/default/services/kubernetes"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
}

#[tokio::test]
async fn create_get_conflicts_and_missing() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let pods = c.api.url("/api/v1/namespaces/default/pods");
    let (code, created) = send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("a"))).await;
    assert_eq!(code, 201, "{created}");
    let rv: i64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv > 0);
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert_eq!(created["status"]["phase"], "Pending");

    // Same name again: 409 AlreadyExists.
    let (code, body) = send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("a"))).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(body["message"], "pods \"a\" already exists");

    // Update with a stale resourceVersion: 409 Conflict; the stored object is untouched.
    let mut stale = created.clone();
    stale["metadata"]["labels"]["v"] = json!("1");
    let (code, _) = send(
        &cl,
        reqwest::Method::PUT,
        format!("{pods}/a"),
        Some(stale.clone()),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = send(&cl, reqwest::Method::PUT, format!("{pods}/a"), Some(stale)).await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));
    let (_, now) = send(&cl, reqwest::Method::GET, format!("{pods}/a"), None).await;
    assert_eq!(now["metadata"]["labels"]["v"], "1");

    // Missing object, missing namespace.
    let (code, body) = send(&cl, reqwest::Method::GET, format!("{pods}/nope"), None).await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        c.api.url("/api/v1/namespaces/ghost/pods"),
        Some(pod("b")),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["message"], "namespaces \"ghost\" not found");

    // generateName.
    let mut g = pod("");
    g["metadata"] = json!({"generateName": "web-"});
    let (code, body) = send(&cl, reqwest::Method::POST, pods.clone(), Some(g)).await;
    assert_eq!(code, 201);
    let name = body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let deploys = c.api.url("/apis/apps/v1/namespaces/default/deployments");
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}},
        "status": {"replicas": 99}});
    let (code, created) = send(&cl, reqwest::Method::POST, deploys.clone(), Some(d)).await;
    assert_eq!(code, 201, "{created}");
    assert!(
        created
            .get("status")
            .is_none_or(|s| s.get("replicas").is_none()),
        "status is cleared on create"
    );
    assert_eq!(created["metadata"]["generation"], 1);

    // Writing status through the main resource is ignored.
    let mut w = created.clone();
    w["status"] = json!({"replicas": 5});
    let (_, after) = send(&cl, reqwest::Method::PUT, format!("{deploys}/web"), Some(w)).await;
    assert!(after["status"].get("replicas").is_none(), "{after}");
    assert_eq!(
        after["metadata"]["generation"], 1,
        "no spec change, no new generation"
    );

    // Writing spec through /status is ignored; status lands.
    let mut s = after.clone();
    s["spec"]["replicas"] = json!(7);
    s["status"] = json!({"replicas": 3});
    let (code, after) = send(
        &cl,
        reqwest::Method::PUT,
        format!("{deploys}/web/status"),
        Some(s),
    )
    .await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["status"]["replicas"], 3);
    assert_eq!(after["spec"]["replicas"], 1);

    // A spec change bumps generation.
    let mut sp = after.clone();
    sp["spec"]["replicas"] = json!(2);
    let (_, after) = send(
        &cl,
        reqwest::Method::PUT,
        format!("{deploys}/web"),
        Some(sp),
    )
    .await;
    assert_eq!(after["metadata"]["generation"], 2);
    assert_eq!(after["status"]["replicas"], 3);
}

#[tokio::test]
async fn bad_input_gets_kubernetes_status_errors() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let pods = c.api.url("/api/v1/namespaces/default/pods");

    // Malformed JSON: 400.
    let r = cl
        .post(&pods)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["reason"].as_str()),
        (Some("Status"), Some("BadRequest"))
    );

    // YAML bodies: a good one creates, a malformed one is 400.
    let r = cl
        .post(&pods)
        .header("content-type", "application/yaml")
        .body("apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-yaml\nspec:\n  containers:\n  - name: c\n    image: x\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = cl
        .post(&pods)
        .header("content-type", "application/yaml")
        .body("metadata: [unclosed\n  - :")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "BadRequest");

    // Wrong content type: 415.
    let r = cl
        .post(&pods)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // Over 3 MiB: 413.
    let big = "x".repeat(3 * 1024 * 1024 + 10);
    let r = cl
        .post(&pods)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Unknown resource and version: 404.
    let (code, _) = send(
        &cl,
        reqwest::Method::GET,
        c.api.url("/api/v1/namespaces/default/widgets"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = send(
        &cl,
        reqwest::Method::GET,
        c.api.url("/apis/apps/v9/deployments"),
        None,
    )
    .await;
    assert_eq!(code, 404);

    // Invalid fields: 422 with causes naming the fields.
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
        "spec": {"containers": [{"name": "c"}]}});
    let (code, body) = send(&cl, reqwest::Method::POST, pods.clone(), Some(bad)).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(fields.contains(&"metadata.name"), "{body}");

    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ok"},
        "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 70000}],
                 "resources": {"requests": {"cpu": "lots"}}}]}});
    let (code, body) = send(&cl, reqwest::Method::POST, pods.clone(), Some(bad)).await;
    assert_eq!(code, 422, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.containers[0].ports[0].containerPort"),
        "{msg}"
    );
    assert!(
        msg.contains("spec.containers[0].resources.requests[cpu]"),
        "{msg}"
    );

    // Deployment selector must match its template.
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        c.api.url("/apis/apps/v1/namespaces/default/deployments"),
        Some(d),
    )
    .await;
    assert_eq!(code, 422);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("`selector` does not match template `labels`"));

    // Unknown fields: a warning by default, 400 under fieldValidation=Strict.
    let mut p = pod("strict");
    p["spec"]["bogus"] = json!(1);
    let r = cl.post(&pods).json(&p).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let warning = r
        .headers()
        .get("warning")
        .map(|w| w.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        warning.contains("unknown field \\\"spec.bogus\\\""),
        "{warning}"
    );
    p["metadata"]["name"] = json!("strict2");
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        format!("{pods}?fieldValidation=Strict"),
        Some(p),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("unknown field \"spec.bogus\""));

    // Immutable pod spec.
    let (_, created) = send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("imm"))).await;
    let mut changed = created.clone();
    changed["spec"]["restartPolicy"] = json!("Never");
    let (code, body) = send(
        &cl,
        reqwest::Method::PUT,
        format!("{pods}/imm"),
        Some(changed),
    )
    .await;
    assert_eq!(code, 422, "{body}");

    // Nothing bad was stored.
    let (_, list) = send(&cl, reqwest::Method::GET, pods.clone(), None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["from-yaml", "imm", "strict"]);
}

#[tokio::test]
async fn services_get_unique_cluster_ips_and_node_ports() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let svcs = c.api.url("/api/v1/namespaces/default/services");
    let mut ips = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    for n in 0..20 {
        let s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{n}")},
            "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}});
        let (code, body) = send(&cl, reqwest::Method::POST, svcs.clone(), Some(s)).await;
        assert_eq!(code, 201, "{body}");
        assert!(ips.insert(body["spec"]["clusterIP"].as_str().unwrap().to_string()));
        let np = body["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&np));
        assert!(ports.insert(np));
    }
    // A requested port that is taken is refused.
    let taken = *ports.iter().next().unwrap();
    let s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dup"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": taken}]}});
    let (code, body) = send(&cl, reqwest::Method::POST, svcs.clone(), Some(s.clone())).await;
    assert_eq!(code, 422, "{body}");
    // Released on delete, then available again.
    let (_, list) = send(&cl, reqwest::Method::GET, svcs.clone(), None).await;
    let holder = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["spec"]["ports"][0]["nodePort"] == taken)
        .unwrap();
    let name = holder["metadata"]["name"].as_str().unwrap();
    let (code, _) = send(&cl, reqwest::Method::DELETE, format!("{svcs}/{name}"), None).await;
    assert_eq!(code, 200);
    let (code, body) = send(&cl, reqwest::Method::POST, svcs.clone(), Some(s)).await;
    assert_eq!(code, 201, "{body}");
    // ClusterIP cannot change.
    let mut changed = body.clone();
    changed["spec"]["clusterIP"] = json!("10.96.0.200");
    changed["spec"]["clusterIPs"] = json!(["10.96.0.200"]);
    let (code, _) = send(
        &cl,
        reqwest::Method::PUT,
        format!("{svcs}/dup"),
        Some(changed),
    )
    .await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn list_selectors_and_pagination() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let pods = c.api.url("/api/v1/namespaces/default/pods");
    for n in 0..12 {
        let mut p = pod(&format!("p{n:02}"));
        p["metadata"]["labels"] =
            json!({"app": if n % 2 == 0 { "even" } else { "odd" }, "n": n.to_string()});
        if n < 3 {
            p["spec"]["nodeName"] = json!("node-a");
        }
        let (code, _) = send(&cl, reqwest::Method::POST, pods.clone(), Some(p)).await;
        assert_eq!(code, 201);
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, l) = send(
        &cl,
        reqwest::Method::GET,
        format!("{pods}?labelSelector=app%3Deven,n%20notin%20(0,2)"),
        None,
    )
    .await;
    assert_eq!(names(&l), vec!["p04", "p06", "p08", "p10"]);
    let (_, l) = send(
        &cl,
        reqwest::Method::GET,
        format!("{pods}?fieldSelector=spec.nodeName%3Dnode-a"),
        None,
    )
    .await;
    assert_eq!(names(&l), vec!["p00", "p01", "p02"]);
    let (code, _) = send(
        &cl,
        reqwest::Method::GET,
        format!("{pods}?fieldSelector=spec.bogus%3Dx"),
        None,
    )
    .await;
    assert_eq!(code, 400);

    // Pages of 5: all 12, in order, at one resourceVersion, with remainingItemCount.
    let (_, p1) = send(&cl, reqwest::Method::GET, format!("{pods}?limit=5"), None).await;
    assert_eq!(names(&p1).len(), 5);
    assert_eq!(p1["metadata"]["remainingItemCount"], 7);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    // A write between pages does not show up in later pages.
    send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("p99"))).await;
    let (_, p2) = send(
        &cl,
        reqwest::Method::GET,
        format!("{pods}?limit=5&continue={token}"),
        None,
    )
    .await;
    let token2 = p2["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, p3) = send(
        &cl,
        reqwest::Method::GET,
        format!("{pods}?limit=5&continue={token2}"),
        None,
    )
    .await;
    assert!(p3["metadata"]
        .get("continue")
        .is_none_or(|c| c.as_str() == Some("")));
    let mut all = names(&p1);
    all.extend(names(&p2));
    all.extend(names(&p3));
    assert_eq!(all, (0..12).map(|n| format!("p{n:02}")).collect::<Vec<_>>());
    assert_eq!(
        p1["metadata"]["resourceVersion"],
        p3["metadata"]["resourceVersion"]
    );

    // resourceVersion=0 is served from the watch cache and includes the later write.
    let (_, cached) = send(
        &cl,
        reqwest::Method::GET,
        format!("{pods}?resourceVersion=0"),
        None,
    )
    .await;
    assert_eq!(names(&cached).len(), 13);
}

#[tokio::test]
async fn watch_resumes_filters_and_expires() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let pods = c.api.url("/api/v1/namespaces/default/pods");
    let (_, a) = send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("a"))).await;
    let rv_a = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("b"))).await;
    send(&cl, reqwest::Method::DELETE, format!("{pods}/a"), None).await;

    // Resume after a: exactly b's ADDED then a's DELETED, in order.
    let resp = cl
        .get(format!(
            "{pods}?watch=1&resourceVersion={rv_a}&timeoutSeconds=5"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events: Vec<(String, String)> = watch_lines(resp, 2, Duration::from_secs(5))
        .await
        .iter()
        .map(|v| {
            let name = v["object"]["metadata"]["name"].as_str().unwrap_or("");
            (
                v["type"].as_str().unwrap_or("").to_string(),
                name.to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![("ADDED".into(), "b".into()), ("DELETED".into(), "a".into())]
    );

    // A resourceVersion older than the cache window: an ERROR event with 410 Expired.
    let etcd_small = Etcd::start().unwrap();
    let small = ApiServer::start_with(&etcd_small, &["--watch-cache-size=2"])
        .await
        .unwrap();
    let scl = small.client().unwrap();
    let spods = small.url("/api/v1/namespaces/default/pods");
    let (_, first) = send(&scl, reqwest::Method::POST, spods.clone(), Some(pod("x0"))).await;
    for n in 1..6 {
        send(
            &scl,
            reqwest::Method::POST,
            spods.clone(),
            Some(pod(&format!("x{n}"))),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = first["metadata"]["resourceVersion"].as_str().unwrap();
    let (code, body) = send(
        &scl,
        reqwest::Method::GET,
        format!("{spods}?watch=1&resourceVersion={old}&timeoutSeconds=2"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let line = body
        .as_str()
        .map(|s| s.to_string())
        .unwrap_or_else(|| body.to_string());
    let ev: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
}

#[tokio::test]
async fn deletion_grace_finalizers_and_namespaces() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let pods = c.api.url("/api/v1/namespaces/default/pods");

    // A pod bound to a node is deleted gracefully: it gets deletionTimestamp and stays.
    let mut p = pod("bound");
    p["spec"]["nodeName"] = json!("node-1");
    send(&cl, reqwest::Method::POST, pods.clone(), Some(p)).await;
    let (code, body) = send(&cl, reqwest::Method::DELETE, format!("{pods}/bound"), None).await;
    assert_eq!(code, 200);
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");
    assert_eq!(body["metadata"]["deletionGracePeriodSeconds"], 30);
    let (code, _) = send(&cl, reqwest::Method::GET, format!("{pods}/bound"), None).await;
    assert_eq!(code, 200);
    // Grace 0 (what the kubelet sends once the containers are gone) removes it.
    let (code, _) = send(
        &cl,
        reqwest::Method::DELETE,
        format!("{pods}/bound"),
        Some(json!({"gracePeriodSeconds": 0})),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = send(&cl, reqwest::Method::GET, format!("{pods}/bound"), None).await;
    assert_eq!(code, 404);

    // Finalizers hold deletion until removed.
    let cms = c.api.url("/api/v1/namespaces/default/configmaps");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    send(&cl, reqwest::Method::POST, cms.clone(), Some(cm)).await;
    let (code, body) = send(&cl, reqwest::Method::DELETE, format!("{cms}/held"), None).await;
    assert_eq!(code, 200);
    assert!(body["metadata"]["deletionTimestamp"].is_string());
    let patch = cl
        .patch(format!("{cms}/held"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata":{"finalizers":null}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    let (code, _) = send(&cl, reqwest::Method::GET, format!("{cms}/held"), None).await;
    assert_eq!(code, 404);

    // Preconditions.
    let (_, p) = send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("pre"))).await;
    let (code, _) = send(
        &cl,
        reqwest::Method::DELETE,
        format!("{pods}/pre"),
        Some(json!({"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})),
    )
    .await;
    assert_eq!(code, 409);
    let (code, _) = send(
        &cl,
        reqwest::Method::DELETE,
        format!("{pods}/pre"),
        Some(json!({"preconditions": {"uid": p["metadata"]["uid"]}})),
    )
    .await;
    assert_eq!(code, 200);

    // A namespace goes Terminating, refuses new content, and disappears once empty.
    let nss = c.api.url("/api/v1/namespaces");
    send(
        &cl,
        reqwest::Method::POST,
        nss.clone(),
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}})),
    )
    .await;
    send(
        &cl,
        reqwest::Method::POST,
        c.api.url("/api/v1/namespaces/tmp/configmaps"),
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})),
    )
    .await;
    let (code, body) = send(&cl, reqwest::Method::DELETE, format!("{nss}/tmp"), None).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"]["phase"], "Terminating");
    let (code, _) = send(
        &cl,
        reqwest::Method::POST,
        c.api.url("/api/v1/namespaces/tmp/configmaps"),
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}})),
    )
    .await;
    assert_eq!(code, 403);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, _) = send(&cl, reqwest::Method::GET, format!("{nss}/tmp"), None).await;
    assert_eq!(code, 200, "still holds a configmap");
    // Other writes to a terminating namespace do not end it early.
    let r = cl
        .patch(format!("{nss}/tmp"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"touched":"yes"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (code, ns) = send(&cl, reqwest::Method::GET, format!("{nss}/tmp"), None).await;
    assert_eq!(
        code, 200,
        "a labelled terminating namespace with content stays"
    );
    assert_eq!(ns["metadata"]["labels"]["touched"], "yes");
    send(
        &cl,
        reqwest::Method::DELETE,
        c.api.url("/api/v1/namespaces/tmp/configmaps/x"),
        None,
    )
    .await;
    let mut gone = false;
    for _ in 0..60 {
        let (code, _) = send(&cl, reqwest::Method::GET, format!("{nss}/tmp"), None).await;
        if code == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "an empty terminating namespace is removed");
}

#[tokio::test]
async fn patches_of_every_type() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let deploys = c.api.url("/apis/apps/v1/namespaces/default/deployments");
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                     {"name": "b", "image": "b:1"}]}}}});
    send(&cl, reqwest::Method::POST, deploys.clone(), Some(d)).await;
    let patch = |ct: &'static str, body: &'static str| {
        let cl = cl.clone();
        let url = format!("{deploys}/web");
        async move {
            let r = cl
                .patch(url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap())
        }
    };
    let (code, v) = patch("application/strategic-merge-patch+json",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"a:2","env":[{"name":"Y","value":"2"}]}]}}}}"#).await;
    assert_eq!(code, 200, "{v}");
    let cs = &v["spec"]["template"]["spec"]["containers"];
    assert_eq!(cs.as_array().unwrap().len(), 2, "merged by name");
    assert_eq!(cs[0]["image"], "a:2");
    assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
    assert_eq!(v["metadata"]["generation"], 2);

    let (code, v) = patch("application/merge-patch+json", r#"{"spec":{"replicas":3}}"#).await;
    assert_eq!((code, v["spec"]["replicas"].as_i64()), (200, Some(3)));
    let (code, v) = patch(
        "application/json-patch+json",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    )
    .await;
    assert_eq!((code, v["spec"]["replicas"].as_i64()), (200, Some(4)));
    let (code, _) = patch(
        "application/json-patch+json",
        r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
    )
    .await;
    assert_eq!(code, 422);
    let (code, _) = patch("application/json-patch+json", r#"{"not":"a list"}"#).await;
    assert_eq!(code, 400);
    // A patch that makes the object invalid is refused and changes nothing.
    let (code, _) = patch(
        "application/merge-patch+json",
        r#"{"spec":{"replicas":-1}}"#,
    )
    .await;
    assert_eq!(code, 422);
    let (_, v) = send(&cl, reqwest::Method::GET, format!("{deploys}/web"), None).await;
    assert_eq!(v["spec"]["replicas"], 4);

    // Server-side apply: conflicts with another manager unless forced.
    let apply = |manager: &'static str, force: bool, replicas: i64| {
        let cl = cl.clone();
        let url = format!("{deploys}/web?fieldManager={manager}&force={force}");
        async move {
            let body = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n");
            let r = cl
                .patch(url)
                .header("content-type", "application/apply-patch+yaml")
                .body(body)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap())
        }
    };
    let (code, v) = apply("ops", false, 6).await;
    assert_eq!(code, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains(".spec.replicas"));
    let (code, v) = apply("ops", true, 6).await;
    assert_eq!((code, v["spec"]["replicas"].as_i64()), (200, Some(6)));
    let managers: Vec<&str> = v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"ops"), "{managers:?}");
}

#[tokio::test]
async fn scale_and_binding_subresources() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "a:1"}]}}}});
    send(
        &cl,
        reqwest::Method::POST,
        c.api.url("/apis/apps/v1/namespaces/default/deployments"),
        Some(d),
    )
    .await;
    let scale = c
        .api
        .url("/apis/apps/v1/namespaces/default/deployments/web/scale");
    let (code, s) = send(&cl, reqwest::Method::GET, scale.clone(), None).await;
    assert_eq!(
        (code, s["kind"].as_str(), s["spec"]["replicas"].as_i64()),
        (200, Some("Scale"), Some(1))
    );
    assert_eq!(s["status"]["selector"], "app=web");
    let mut s2 = s.clone();
    s2["spec"]["replicas"] = json!(4);
    let (code, _) = send(&cl, reqwest::Method::PUT, scale.clone(), Some(s2)).await;
    assert_eq!(code, 200);
    let (_, d) = send(
        &cl,
        reqwest::Method::GET,
        c.api
            .url("/apis/apps/v1/namespaces/default/deployments/web"),
        None,
    )
    .await;
    assert_eq!(d["spec"]["replicas"], 4);

    let pods = c.api.url("/api/v1/namespaces/default/pods");
    send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("p"))).await;
    let b = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        format!("{pods}/p/binding"),
        Some(b.clone()),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (_, p) = send(&cl, reqwest::Method::GET, format!("{pods}/p"), None).await;
    assert_eq!(p["spec"]["nodeName"], "n1");
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        format!("{pods}/p/binding"),
        Some(b),
    )
    .await;
    assert_eq!(code, 409, "{body}");
}

/// Reads up to `n` watch events within the timeout.
async fn watch_lines(resp: reqwest::Response, n: usize, within: Duration) -> Vec<Value> {
    let mut rx = skiff_e2e::watch_events(resp);
    skiff_e2e::collect_events(&mut rx, n, within).await
}

#[tokio::test]
async fn compacted_continue_token_is_gone() {
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(&etcd, &["--etcd-compaction-interval=1s"])
        .await
        .unwrap();
    let cl = api.client().unwrap();
    let pods = api.url("/api/v1/namespaces/default/pods");
    for n in 0..5 {
        send(
            &cl,
            reqwest::Method::POST,
            pods.clone(),
            Some(pod(&format!("p{n}"))),
        )
        .await;
    }
    let (_, page) = send(&cl, reqwest::Method::GET, format!("{pods}?limit=2"), None).await;
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    for n in 5..10 {
        send(
            &cl,
            reqwest::Method::POST,
            pods.clone(),
            Some(pod(&format!("p{n}"))),
        )
        .await;
    }
    let mut gone = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (code, body) = send(
            &cl,
            reqwest::Method::GET,
            format!("{pods}?limit=2&continue={token}"),
            None,
        )
        .await;
        if code == 410 {
            gone = Some(body);
            break;
        }
    }
    let body = gone.expect("the continue token expires once its revision is compacted");
    assert_eq!(body["reason"], "Expired");
    // A fresh list still works.
    let (code, list) = send(&cl, reqwest::Method::GET, pods.clone(), None).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn bookmarks_and_initial_events_end() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let cms = c.api.url("/api/v1/namespaces/default/configmaps");
    send(
        &cl,
        reqwest::Method::POST,
        cms.clone(),
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})),
    )
    .await;

    // The streaming-list form: current state, then a bookmark marking its end.
    let resp = cl
        .get(format!("{cms}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=&allowWatchBookmarks=true"))
        .send()
        .await
        .unwrap();
    let evs = watch_lines(resp, 2, Duration::from_secs(5)).await;
    assert_eq!(evs[0]["type"], "ADDED");
    assert_eq!(evs[1]["type"], "BOOKMARK");
    assert_eq!(
        evs[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // Periodic bookmarks carry a resourceVersion at least as new as the last event.
    let (_, list) = send(&cl, reqwest::Method::GET, cms.clone(), None).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = cl
        .get(format!(
            "{cms}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
        ))
        .send()
        .await
        .unwrap();
    let evs = watch_lines(resp, 1, Duration::from_secs(15)).await;
    assert_eq!(evs.len(), 1, "a bookmark arrives");
    assert_eq!(evs[0]["type"], "BOOKMARK");
    assert_eq!(evs[0]["object"]["kind"], "ConfigMap");
    let brv: i64 = evs[0]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(brv >= rv.parse::<i64>().unwrap());
}

#[tokio::test]
async fn metrics_count_requests_etcd_and_watches() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let pods = c.api.url("/api/v1/namespaces/default/pods");
    send(&cl, reqwest::Method::GET, pods.clone(), None).await;
    let _watch = cl.get(format!("{pods}?watch=1")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = cl
        .get(c.api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("apiserver_request_total{verb=\"LIST\",resource=\"pods\",code=\"200\"}"),
        "{m}"
    );
    assert!(
        m.contains("apiserver_request_duration_seconds_bucket{"),
        "{m}"
    );
    assert!(
        m.contains("operation=\"create\"}") && m.contains("etcd_request_duration_seconds_bucket{"),
        "{m}"
    );
    assert!(
        m.contains("apiserver_registered_watchers{resource=\"pods\"} 1"),
        "{m}"
    );
    // /metrics is not for anonymous callers.
    let anon = c.api.anonymous_client().unwrap();
    assert_eq!(
        anon.get(c.api.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}

#[tokio::test]
async fn watch_from_current_state_lists_every_object_whatever_its_revision() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let cms = c.api.url("/api/v1/namespaces/default/configmaps");
    // "z" is written first, "a" last: key order and revision order disagree.
    for n in ["z", "m", "a"] {
        send(
            &cl,
            reqwest::Method::POST,
            cms.clone(),
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}})),
        )
        .await;
    }
    // Modify "z" so it is the newest.
    send(&cl, reqwest::Method::PUT, format!("{cms}/z"), Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z"}, "data": {"k": "v"}}))).await;
    for rv in ["", "0"] {
        let resp = cl
            .get(format!("{cms}?watch=1&resourceVersion={rv}"))
            .send()
            .await
            .unwrap();
        let evs = watch_lines(resp, 3, Duration::from_secs(5)).await;
        let names: Vec<&str> = evs
            .iter()
            .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "m", "z"], "resourceVersion={rv:?}");
        assert!(evs.iter().all(|e| e["type"] == "ADDED"));
    }
}

/// The `node.kubernetes.io/<key>` NoExecute tolerations of a pod, as `(key, seconds)`.
fn lost_node_tolerations(pod: &Value) -> Vec<(String, i64)> {
    pod["spec"]["tolerations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|t| t["effect"] == "NoExecute")
        .map(|t| {
            (
                t["key"].as_str().unwrap_or("").to_string(),
                t["tolerationSeconds"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test]
async fn default_toleration_seconds_come_from_the_flags() {
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(
        &etcd,
        &[
            "--default-not-ready-toleration-seconds=7",
            "--default-unreachable-toleration-seconds=9",
        ],
    )
    .await
    .unwrap();
    let cl = api.client().unwrap();
    let pods = api.url("/api/v1/namespaces/default/pods");
    let (code, created) = send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("a"))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        lost_node_tolerations(&created),
        [
            ("node.kubernetes.io/not-ready".to_string(), 7),
            ("node.kubernetes.io/unreachable".to_string(), 9)
        ]
    );
    // A pod's own toleration of a key is kept, and only the other one is added.
    let mut own = pod("b");
    own["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable",
        "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]);
    let (code, created) = send(&cl, reqwest::Method::POST, pods.clone(), Some(own)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        lost_node_tolerations(&created),
        [
            ("node.kubernetes.io/unreachable".to_string(), 2),
            ("node.kubernetes.io/not-ready".to_string(), 7)
        ]
    );
    // An update does not add them again (admission on create only).
    let mut updated = created.clone();
    updated["metadata"]["labels"] = json!({"x": "1"});
    let (code, body) = send(
        &cl,
        reqwest::Method::PUT,
        api.url("/api/v1/namespaces/default/pods/b"),
        Some(updated),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(lost_node_tolerations(&body).len(), 2);
    // A value that is not a number is refused by name.
    let out = std::process::Command::new(skiff_e2e::binary("skiff-apiserver").unwrap())
        .arg("--default-unreachable-toleration-seconds=soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--default-unreachable-toleration-seconds"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn pods_tolerate_a_lost_node_for_five_minutes_by_default() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let (code, created) = send(
        &cl,
        reqwest::Method::POST,
        c.api.url("/api/v1/namespaces/default/pods"),
        Some(pod("a")),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        lost_node_tolerations(&created),
        [
            ("node.kubernetes.io/not-ready".to_string(), 300),
            ("node.kubernetes.io/unreachable".to_string(), 300)
        ]
    );
}

#[tokio::test]
async fn flags_from_a_config_file() {
    let etcd = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("apiserver.yaml");
    std::fs::write(
        &cfg,
        "service-cluster-ip-range: 10.100.0.0/16\nservice-node-port-range: 31000-31005\n",
    )
    .unwrap();
    let api = ApiServer::start_with(&etcd, &[&format!("--config={}", cfg.display())])
        .await
        .unwrap();
    let cl = api.client().unwrap();
    let (_, svc) = send(
        &cl,
        reqwest::Method::GET,
        api.url("/api/v1/namespaces/default/services/kubernetes"),
        None,
    )
    .await;
    assert_eq!(svc["spec"]["clusterIP"], "10.100.0.1");
    let s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        api.url("/api/v1/namespaces/default/services"),
        Some(s),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let np = body["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((31000..=31005).contains(&np), "{np}");
}

#[tokio::test]
async fn resource_version_match_exact_timeouts_and_future_versions() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let cms = c.api.url("/api/v1/namespaces/default/configmaps");
    let (_, first) = send(&cl, reqwest::Method::POST, cms.clone(), Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"v": "1"}}))).await;
    let rv1 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    send(&cl, reqwest::Method::PUT, format!("{cms}/a"), Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"v": "2"}}))).await;
    send(
        &cl,
        reqwest::Method::POST,
        cms.clone(),
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}})),
    )
    .await;

    // Exact: the list as it was at that revision.
    let (code, old) = send(
        &cl,
        reqwest::Method::GET,
        format!("{cms}?resourceVersion={rv1}&resourceVersionMatch=Exact"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{old}");
    assert_eq!(old["metadata"]["resourceVersion"], rv1.as_str());
    let items = old["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["data"]["v"], "1");
    // NotOlderThan: at least that new (the current state).
    let (_, now) = send(
        &cl,
        reqwest::Method::GET,
        format!("{cms}?resourceVersion={rv1}&resourceVersionMatch=NotOlderThan"),
        None,
    )
    .await;
    assert_eq!(now["items"].as_array().unwrap().len(), 2);
    // resourceVersionMatch without resourceVersion is a bad request.
    let (code, _) = send(
        &cl,
        reqwest::Method::GET,
        format!("{cms}?resourceVersionMatch=Exact"),
        None,
    )
    .await;
    assert_eq!(code, 400);
    // A resourceVersion from the future: 504 Timeout after waiting for it.
    let (code, body) = send(
        &cl,
        reqwest::Method::GET,
        format!("{cms}?resourceVersion=999999"),
        None,
    )
    .await;
    assert_eq!(code, 504, "{body}");
    assert_eq!(body["reason"], "Timeout");

    // A watch ends by itself at timeoutSeconds.
    let t = std::time::Instant::now();
    let (code, _) = send(
        &cl,
        reqwest::Method::GET,
        format!("{cms}?watch=1&resourceVersion={rv1}&timeoutSeconds=1"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
