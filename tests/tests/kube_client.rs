//! The `kube` crate (kube-rs), a Kubernetes client written against kube-apiserver, works
//! against skiff-apiserver unchanged: typed `Api<Pod>` calls and the `watcher` stream.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use skiff_e2e::Cluster;

async fn client(c: &Cluster) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(&c.api.kubeconfig).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kube-rs"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/skiff/busybox:1"}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn typed_api_crud_and_errors() {
    let c = Cluster::start().await.unwrap();
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("one"))
        .await
        .unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().restart_policy.as_deref(),
        Some("Always")
    );
    let got = pods.get("one").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);

    let list = pods
        .list(&ListParams::default().labels("app=kube-rs"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);

    let patch = serde_json::json!({"metadata": {"labels": {"patched": "yes"}}});
    let p = pods
        .patch("one", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap()["patched"], "yes");

    let err = pods
        .create(&PostParams::default(), &pod("one"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "AlreadyExists");
        }
        other => panic!("unexpected {other:?}"),
    }
    match pods.get("missing").await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!(s.code, 404),
        other => panic!("unexpected {other:?}"),
    }

    // Server-side apply through kube-rs.
    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "w", "image": "registry.local/skiff/httpd:1"}]}}}
    }))
    .unwrap();
    let applied = deploys
        .patch(
            "web",
            &PatchParams::apply("kube-rs-test"),
            &Patch::Apply(&d),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.unwrap().replicas, Some(2));

    pods.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("one").await.unwrap().is_none());
}

#[tokio::test]
async fn watcher_sees_initial_state_and_changes() {
    let c = Cluster::start().await.unwrap();
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod("existing"))
        .await
        .unwrap();

    let stream = watcher(pods.clone(), watcher::Config::default()).boxed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut s = stream;
        while let Ok(Some(ev)) = s.try_next().await {
            let names: Vec<(String, String)> = match ev {
                watcher::Event::InitApply(p) => {
                    vec![("init".into(), p.metadata.name.unwrap_or_default())]
                }
                watcher::Event::Apply(p) => {
                    vec![("apply".into(), p.metadata.name.unwrap_or_default())]
                }
                watcher::Event::Delete(p) => {
                    vec![("delete".into(), p.metadata.name.unwrap_or_default())]
                }
                watcher::Event::InitDone => vec![("done".into(), String::new())],
                watcher::Event::Init => vec![],
            };
            for n in names {
                if tx.send(n).is_err() {
                    return;
                }
            }
        }
    });
    let mut seen = Vec::new();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
    };
    while let Some(e) = next().await {
        let done = e.0 == "done";
        seen.push(e);
        if done {
            break;
        }
    }
    pods.create(&PostParams::default(), &pod("new"))
        .await
        .unwrap();
    pods.delete("existing", &DeleteParams::default())
        .await
        .unwrap();
    while seen.len() < 4 {
        match next().await {
            Some(e) => seen.push(e),
            None => break,
        }
    }
    task.abort();
    let expect: Vec<(String, String)> = vec![
        ("init".into(), "existing".into()),
        ("done".into(), String::new()),
        ("apply".into(), "new".into()),
        ("delete".into(), "existing".into()),
    ];
    assert_eq!(seen, expect);
}
