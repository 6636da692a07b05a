//! Failures the API server must survive without losing or corrupting data: etcd stopping and
//! coming back under it, its own restart, and SIGTERM with requests in flight.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::{ApiServer, Etcd};

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}})
}

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> Result<u16, reqwest::Error> {
    Ok(c.post(url)
        .json(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await?
        .status()
        .as_u16())
}

/// Watch events as (type, name, resourceVersion).
fn watch_events(
    resp: reqwest::Response,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, String, String)> {
    let mut raw = skiff_e2e::watch_events(resp);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(v) = raw.recv().await {
            let f = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let ev = (
                f("/type"),
                f("/object/metadata/name"),
                f("/object/metadata/resourceVersion"),
            );
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn etcd_outage_fails_cleanly_then_recovers_and_watches_resume() {
    let mut etcd = Etcd::start().unwrap();
    let api = ApiServer::start(&etcd).await.unwrap();
    let c = api.client().unwrap();
    let cms = api.url("/api/v1/namespaces/default/configmaps");
    assert_eq!(post(&c, &cms, &cm("before")).await.unwrap(), 201);

    let resp = c
        .get(format!("{cms}?watch=1&resourceVersion=0"))
        .send()
        .await
        .unwrap();
    let mut events = watch_events(resp);
    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.0.as_str(), first.1.as_str()), ("ADDED", "before"));

    etcd.stop();
    // Requests fail with a Status, not a hang or a dropped connection; readiness says so.
    let r = c
        .post(&cms)
        .json(&cm("during"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    let ready = c.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 500);
    let live = c.get(api.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);

    etcd.restart().unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(201) = post(&c, &cms, &cm("after")).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "writes work again after etcd returns");
    post(&c, &cms, &cm("after2")).await.unwrap();

    // The open watch saw each later change exactly once, in order, and nothing that failed.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(e)) => seen.push(e),
            _ => break,
        }
    }
    let names: Vec<&str> = seen.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names, vec!["after", "after2"], "{seen:?}");
    assert!(seen.iter().all(|e| e.0 == "ADDED"));
    let list: Value = c.get(&cms).send().await.unwrap().json().await.unwrap();
    let stored: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(stored, vec!["after", "after2", "before"]);
}

#[tokio::test]
async fn restart_keeps_objects_and_certificates() {
    let etcd = Etcd::start().unwrap();
    let mut api = ApiServer::start(&etcd).await.unwrap();
    let ca_before = std::fs::read_to_string(api.data_dir.join("ca.crt")).unwrap();
    let c = api.client().unwrap();
    let cms = api.url("/api/v1/namespaces/default/configmaps");
    post(&c, &cms, &cm("kept")).await.unwrap();
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
    let created: Value = c
        .post(api.url("/api/v1/namespaces/default/services"))
        .json(&svc)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    api.restart().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(api.data_dir.join("ca.crt")).unwrap(),
        ca_before
    );
    // The old kubeconfig (same CA, same admin certificate) still works.
    let got: Value = c
        .get(format!("{cms}/kept"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"]["k"], "kept");
    let again: Value = c
        .get(api.url("/api/v1/namespaces/default/services/s"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["spec"]["clusterIP"], created["spec"]["clusterIP"]);
    let kubectl = api.kubectl();
    assert!(kubectl
        .ok(&["get", "cm", "kept", "-o", "name"])
        .contains("configmap/kept"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let etcd = Etcd::start().unwrap();
    let mut api = ApiServer::start(&etcd).await.unwrap();
    let c = api.client().unwrap();
    let cms = api.url("/api/v1/namespaces/default/configmaps");
    // An open watch must not hold shutdown up: it ends with the server.
    let watch = c.get(format!("{cms}?watch=1")).send().await.unwrap();
    let mut events = watch_events(watch);
    // A burst of writes in flight when SIGTERM arrives.
    let mut writes = Vec::new();
    for n in 0..50 {
        let c = c.clone();
        let url = cms.clone();
        writes.push(tokio::spawn(async move {
            post(&c, &url, &cm(&format!("w{n}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = api.terminate();
        (s, api)
    })
    .await
    .unwrap();
    let (status, _api) = status;
    assert!(status.unwrap().success(), "exit status 0 after SIGTERM");
    // Every write either landed (201) or was never accepted (connection refused/reset):
    // none is half-done. Check the store agrees with what clients were told.
    let mut told_created = Vec::new();
    for (n, w) in writes.into_iter().enumerate() {
        if let Ok(Ok(201)) = w.await {
            told_created.push(format!("w{n}"));
        }
    }
    assert!(!told_created.is_empty());
    // The watch stream ended.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while events.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "watch ended on shutdown");
    let api2 = ApiServer::start(&etcd).await.unwrap();
    let list: Value = api2
        .client()
        .unwrap()
        .get(api2.url("/api/v1/namespaces/default/configmaps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for name in &told_created {
        assert!(
            stored.contains(name),
            "{name} was acknowledged but is not stored"
        );
    }
}

/// Under a burst of writes long enough to span the watch cache's periodic progress checks, with
/// several watchers loading the server, every watch sees every pod created — none skipped when
/// etcd's own watch runs behind.
#[tokio::test]
async fn watches_miss_nothing_under_a_write_burst() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use skiff_client::{watcher, Api, Client, PostParams};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start(&etcd).await.unwrap();
    let mut cfg = skiff_client::Config::from_kubeconfig(&api.kubeconfig).unwrap();
    cfg.qps = 0.0;
    let client = Client::new(cfg).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "burst"}},
            "spec": {"containers": [{"name": "c", "image": "registry.local/app:1",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        }))
        .unwrap()
    };

    const WATCHERS: usize = 4;
    let seen: Vec<Arc<parking_lot::Mutex<HashSet<String>>>> =
        (0..WATCHERS).map(|_| Default::default()).collect();
    let mut watching = Vec::new();
    for s in &seen {
        let (s, w) = (s.clone(), pods.clone());
        watching.push(tokio::spawn(async move {
            let mut events = watcher::watcher(w, watcher::Config::default()).boxed();
            while let Some(e) = events.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = e {
                    s.lock().insert(p.metadata.name.unwrap_or_default());
                }
            }
        }));
    }
    // Wait for the watches to be open.
    pods.create(&PostParams::default(), &pod("first"))
        .await
        .unwrap();
    for _ in 0..100 {
        if seen.iter().all(|s| s.lock().contains("first")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().all(|s| s.lock().contains("first")),
        "the watches opened"
    );

    // 64 writers for 12 s (or 40,000 pods, whichever comes first).
    let next = Arc::new(AtomicUsize::new(0));
    let stop = std::time::Instant::now() + Duration::from_secs(12);
    let mut writers = Vec::new();
    for _ in 0..64 {
        let (pods, next) = (pods.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            while std::time::Instant::now() < stop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 40_000 {
                    break;
                }
                let name = format!("p-{i}");
                pods.create(&PostParams::default(), &pod(&name))
                    .await
                    .unwrap();
                made.push(name);
            }
            made
        }));
    }
    let mut made = Vec::new();
    for w in writers {
        made.extend(w.await.unwrap());
    }
    assert!(made.len() > 1000, "only {} writes", made.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (n, s) in seen.iter().enumerate() {
        loop {
            let missing: Vec<String> = {
                let s = s.lock();
                made.iter().filter(|m| !s.contains(*m)).cloned().collect()
            };
            if missing.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "watch {n}: {} of {} created pods never arrived, e.g. {:?}",
                missing.len(),
                made.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for w in watching {
        w.abort();
    }
}
