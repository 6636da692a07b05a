//! The API server's watch cache against a real etcd: it moves to etcd's current revision only
//! when etcd shows nothing under its prefix changed since the revision it reflects, so a
//! watch never jumps over changes it has not delivered.

use std::sync::Arc;

use etcd_client::{Client, DeleteOptions};
use skiff_apiserver::metrics::Metrics;
use skiff_apiserver::registry;
use skiff_apiserver::storage::watch_cache::WatchCache;
use skiff_apiserver::storage::Etcd as Store;
use skiff_e2e::Etcd;

const PREFIX: &str = "/registry/configmaps/";

fn cm(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","namespace":"default"}}}}"#
    )
}

#[tokio::test]
async fn catches_up_only_when_nothing_under_its_prefix_changed() {
    let etcd = Etcd::start().unwrap();
    let mut kv = Client::connect([etcd.endpoint.clone()], None)
        .await
        .unwrap();
    for n in ["a", "b"] {
        kv.put(format!("{PREFIX}default/{n}"), cm(n), None)
            .await
            .unwrap();
    }
    let store = Store::connect(
        std::slice::from_ref(&etcd.endpoint),
        "/registry",
        Arc::new(Metrics::new()),
    )
    .await
    .unwrap();
    let r = registry::builtin("", "configmaps").unwrap();
    // Filled from a list and not following etcd: nothing can reach it but `catch_up`.
    let cache = WatchCache::new(r, PREFIX.into(), 100);
    cache.list_all(&store).await.unwrap();
    let listed = cache.rev();

    // Writes elsewhere: the cache can move to the new revision.
    kv.put("/registry/secrets/default/s", "{}", None)
        .await
        .unwrap();
    assert!(cache.catch_up(&store).await.unwrap());
    assert!(cache.rev() > listed, "moved past {listed}");

    // A key under its prefix written after its revision, deleted, or replaced: it stays put.
    let at = cache.rev();
    kv.put(format!("{PREFIX}default/c"), cm("c"), None)
        .await
        .unwrap();
    assert!(!cache.catch_up(&store).await.unwrap(), "a new key");
    assert_eq!(cache.rev(), at);
    kv.delete(format!("{PREFIX}default/c"), None).await.unwrap();
    // (c came and went: etcd's state equals the cache's again, so catching up is right.)
    assert!(cache.catch_up(&store).await.unwrap());
    let at = cache.rev();
    kv.delete(format!("{PREFIX}default/a"), None).await.unwrap();
    assert!(!cache.catch_up(&store).await.unwrap(), "a deleted key");
    assert_eq!(cache.rev(), at);
    kv.put(format!("{PREFIX}default/a"), cm("a"), None)
        .await
        .unwrap();
    assert!(
        !cache.catch_up(&store).await.unwrap(),
        "a key deleted and written again"
    );
    assert_eq!(cache.rev(), at);
    kv.delete(
        format!("{PREFIX}default/"),
        Some(DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    assert!(!cache.catch_up(&store).await.unwrap(), "all keys deleted");
    assert_eq!(cache.rev(), at);
    assert_eq!(
        cache.list(PREFIX, |_| true).0.len(),
        2,
        "still the listed state"
    );
}
