//! The kinds the API server serves now, as the garbage collector and the namespace controller
//! need them (what Kubernetes' controllers learn from discovery): the built-in kinds of
//! [`kinds::builtin`], plus one [`Custom`] kind per established CustomResourceDefinition,
//! followed through an informer on `customresourcedefinitions`.
//!
//! A definition's kind is followed at its storage version, or at its first served version
//! when the storage one is not served; owner references name it by group and kind, so the
//! version followed does not matter to them. It is added once the definition is
//! `Established` and goes (its informer stopped) when the definition goes.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use parking_lot::Mutex;
use skiff_client::informer::Informer;
use skiff_client::{ApiResource, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kinds::{self, Custom, GroupKind, Kind, Kinds};

/// The served kinds, kept current.
pub struct Served {
    builtin: Kinds,
    client: Client,
    shutdown: CancellationToken,
    crds: Informer<CustomResourceDefinition>,
    custom: Mutex<HashMap<GroupKind, Arc<Custom>>>,
    /// The custom kinds; `None` until the definitions are listed.
    tx: watch::Sender<Option<Arc<Kinds>>>,
}

impl Served {
    /// Follows the definitions `crds` reports until `shutdown`.
    pub fn start(
        client: Client,
        crds: Informer<CustomResourceDefinition>,
        shutdown: CancellationToken,
    ) -> Arc<Served> {
        let served = Arc::new(Served {
            builtin: kinds::builtin(),
            client,
            shutdown: shutdown.clone(),
            crds,
            custom: Mutex::new(HashMap::new()),
            tx: watch::channel(None).0,
        });
        let me = served.clone();
        tokio::spawn(async move {
            let mut changes = me.crds.subscribe().boxed();
            let store = me.crds.store();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = store.wait_until_ready() => {}
            }
            me.refresh();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    c = changes.next() => match c {
                        Some(_) => me.refresh(),
                        None => return,
                    },
                }
            }
        });
        served
    }

    /// The built-in kinds.
    pub fn builtin(&self) -> &Kinds {
        &self.builtin
    }

    /// The custom kinds now; `None` until the definitions are listed.
    pub fn custom(&self) -> Option<Arc<Kinds>> {
        self.tx.borrow().clone()
    }

    /// The custom kinds now and whenever they change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Kinds>>> {
        self.tx.subscribe()
    }

    /// A served kind by group and kind.
    pub fn get(&self, gk: &GroupKind) -> Option<Arc<dyn Kind>> {
        if let Some(k) = self.builtin.get(gk) {
            return Some(k.clone());
        }
        self.custom
            .lock()
            .get(gk)
            .map(|k| k.clone() as Arc<dyn Kind>)
    }

    /// Brings the custom kinds in line with the definitions in the cache.
    fn refresh(&self) {
        let wanted: HashMap<GroupKind, ApiResource> = self
            .crds
            .store()
            .state()
            .iter()
            .filter_map(|crd| served_resource(crd))
            .map(|r| {
                let gk = GroupKind {
                    group: r.group.clone(),
                    kind: r.kind.clone(),
                };
                (gk, r)
            })
            // A definition cannot take a built-in kind's names; should one claim them all
            // the same, the built-in kind stands.
            .filter(|(gk, _)| !self.builtin.contains_key(gk))
            .collect();
        let mut custom = self.custom.lock();
        let before = custom.len();
        let mut changed = false;
        custom.retain(|gk, k| {
            let keep = wanted.get(gk) == Some(k.resource());
            if !keep {
                tracing::info!(kind = %gk, "no longer following a custom resource");
                k.stop();
            }
            keep
        });
        changed |= custom.len() != before;
        for (gk, r) in wanted {
            if custom.contains_key(&gk) {
                continue;
            }
            tracing::info!(kind = %gk, version = r.version, "following a custom resource");
            custom.insert(
                gk,
                Arc::new(Custom::start(self.client.clone(), r, &self.shutdown)),
            );
            changed = true;
        }
        if changed || self.tx.borrow().is_none() {
            let now: Kinds = custom
                .iter()
                .map(|(gk, k)| (gk.clone(), k.clone() as Arc<dyn Kind>))
                .collect();
            self.tx.send_replace(Some(Arc::new(now)));
        }
    }
}

/// The resource a definition makes the API server serve, at the version followed; `None`
/// while it is not established or serves no version.
pub fn served_resource(crd: &CustomResourceDefinition) -> Option<ApiResource> {
    let status = crd.status.as_ref()?;
    let established = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Established" && c.status == "True");
    if !established {
        return None;
    }
    let versions = &crd.spec.versions;
    let version = versions
        .iter()
        .find(|v| v.storage && v.served)
        .or_else(|| versions.iter().find(|v| v.served))?;
    // Served by the names the API server accepted, which lag behind a change of the spec's
    // that is refused.
    let names = status
        .accepted_names
        .as_ref()
        .filter(|n| !n.plural.is_empty() && !n.kind.is_empty())
        .unwrap_or(&crd.spec.names);
    let (group, v) = (crd.spec.group.as_str(), version.name.as_str());
    Some(if crd.spec.scope == "Cluster" {
        ApiResource::cluster(group, v, &names.kind, &names.plural)
    } else {
        ApiResource::namespaced(group, v, &names.kind, &names.plural)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(versions: serde_json::Value, status: serde_json::Value) -> CustomResourceDefinition {
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.skiff.dev"},
            "spec": {
                "group": "example.skiff.dev",
                "names": {"kind": "Widget", "plural": "widgets"},
                "scope": "Namespaced",
                "versions": versions,
            },
            "status": status,
        }))
        .unwrap()
    }

    fn established() -> serde_json::Value {
        json!({"conditions": [{"type": "Established", "status": "True"}]})
    }

    #[test]
    fn followed_at_the_storage_version_once_established() {
        let two = json!([
            {"name": "v1beta1", "served": true, "storage": false},
            {"name": "v1", "served": true, "storage": true},
        ]);
        let r = served_resource(&crd(two.clone(), established())).unwrap();
        assert_eq!(
            r,
            ApiResource::namespaced("example.skiff.dev", "v1", "Widget", "widgets")
        );
        assert_eq!(served_resource(&crd(two.clone(), json!({}))), None);
        let not_yet = json!({"conditions": [{"type": "Established", "status": "False"}]});
        assert_eq!(served_resource(&crd(two, not_yet)), None);
    }

    #[test]
    fn an_unserved_storage_version_gives_way_to_a_served_one() {
        let v = json!([
            {"name": "v1", "served": false, "storage": true},
            {"name": "v2", "served": true, "storage": false},
        ]);
        assert_eq!(
            served_resource(&crd(v, established())).unwrap().version,
            "v2"
        );
        let none = json!([{"name": "v1", "served": false, "storage": true}]);
        assert_eq!(served_resource(&crd(none, established())), None);
    }

    #[test]
    fn served_by_the_accepted_names_and_scope() {
        let v = json!([{"name": "v1", "served": true, "storage": true}]);
        let mut status = established();
        status["acceptedNames"] = json!({"kind": "Gadget", "plural": "gadgets"});
        let mut c = crd(v, status);
        c.spec.scope = "Cluster".into();
        assert_eq!(
            served_resource(&c).unwrap(),
            ApiResource::cluster("example.skiff.dev", "v1", "Gadget", "gadgets")
        );
    }
}
