//! The kinds the API server serves now, as the garbage collector and the namespace controller
//! need them (what Kubernetes' controllers learn from discovery): the built-in kinds of
//! [`kinds::builtin`], plus one [`Custom`] kind per established CustomResourceDefinition,
//! followed through an informer on `customresourcedefinitions`.
//!
//! A definition's kind is followed at its storage version, or at its first served version
//! when the storage one is not served; owner references name it by group and kind, so the
//! version followed does not matter to them. It is added once the definition is
//! `Established` and goes (its informer stopped) when the definition goes.

use std::collections::{HashMap, HashSet};
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
    /// Custom kinds whose definition was deleted (and not made again) while followed.
    deleted: Mutex<HashSet<GroupKind>>,
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
            deleted: Mutex::new(HashSet::new()),
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

    /// Whether `gk` is a custom kind whose definition was deleted while followed. Its
    /// objects are all gone then: the API server deletes them before it lets a definition
    /// go. (Those deletions travel on the kind's own watch, which the definition's deletion
    /// may overtake.)
    pub fn deleted(&self, gk: &GroupKind) -> bool {
        self.deleted.lock().contains(gk)
    }

    /// Brings the custom kinds in line with the definitions in the cache.
    fn refresh(&self) {
        let crds = self.crds.store().state();
        let mut custom = self.custom.lock();
        let followed: HashMap<GroupKind, ApiResource> = custom
            .iter()
            .map(|(gk, k)| (gk.clone(), k.resource().clone()))
            .collect();
        let plan = plan(&crds, &self.builtin, &followed);
        let mut deleted = self.deleted.lock();
        deleted.retain(|gk| !plan.defined.contains(gk));
        for (gk, gone) in &plan.stop {
            tracing::info!(kind = %gk, "no longer following a custom resource");
            if let Some(k) = custom.remove(gk) {
                k.stop();
            }
            if *gone {
                deleted.insert(gk.clone());
            }
        }
        for (gk, r) in &plan.start {
            tracing::info!(kind = %gk, version = r.version, "following a custom resource");
            let k = Custom::start(self.client.clone(), r.clone(), &self.shutdown);
            custom.insert(gk.clone(), Arc::new(k));
        }
        let changed = !plan.stop.is_empty() || !plan.start.is_empty();
        if changed || self.tx.borrow().is_none() {
            let now: Kinds = custom
                .iter()
                .map(|(gk, k)| (gk.clone(), k.clone() as Arc<dyn Kind>))
                .collect();
            self.tx.send_replace(Some(Arc::new(now)));
        }
    }
}

/// What the definitions call for, given the kinds followed now.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Kinds to stop following, each saying whether its definition is gone.
    stop: Vec<(GroupKind, bool)>,
    /// Kinds to follow (again, at another version, when also stopped).
    start: Vec<(GroupKind, ApiResource)>,
    /// Every kind a definition names, served or not.
    defined: HashSet<GroupKind>,
}

fn plan(
    crds: &[Arc<CustomResourceDefinition>],
    builtin: &Kinds,
    followed: &HashMap<GroupKind, ApiResource>,
) -> Plan {
    let defined: HashSet<GroupKind> = crds
        .iter()
        .flat_map(|crd| {
            let group = &crd.spec.group;
            let accepted = crd.status.as_ref().and_then(|s| s.accepted_names.as_ref());
            [Some(&crd.spec.names), accepted]
                .into_iter()
                .flatten()
                .map(|n| GroupKind {
                    group: group.clone(),
                    kind: n.kind.clone(),
                })
        })
        .collect();
    let wanted: HashMap<GroupKind, ApiResource> = crds
        .iter()
        .filter_map(|crd| served_resource(crd))
        .map(|r| {
            let gk = GroupKind {
                group: r.group.clone(),
                kind: r.kind.clone(),
            };
            (gk, r)
        })
        // A definition cannot take a built-in kind's names; should one claim them all the
        // same, the built-in kind stands.
        .filter(|(gk, _)| !builtin.contains_key(gk))
        .collect();
    let mut stop: Vec<(GroupKind, bool)> = followed
        .iter()
        .filter(|(gk, r)| wanted.get(*gk) != Some(*r))
        .map(|(gk, _)| (gk.clone(), !defined.contains(gk)))
        .collect();
    let mut start: Vec<(GroupKind, ApiResource)> = wanted
        .into_iter()
        .filter(|(gk, r)| followed.get(gk) != Some(r))
        .collect();
    stop.sort();
    start.sort_by(|a, b| a.0.cmp(&b.0));
    Plan {
        stop,
        start,
        defined,
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
    fn definitions_coming_and_going_start_and_stop_kinds() {
        let one = json!([{"name": "v1", "served": true, "storage": true}]);
        let widgets = GroupKind {
            group: "example.skiff.dev".into(),
            kind: "Widget".into(),
        };
        let at = |v: &str| ApiResource::namespaced("example.skiff.dev", v, "Widget", "widgets");
        let builtin = crate::kinds::builtin();
        let none = HashMap::new();
        // Established: followed.
        let ready = vec![Arc::new(crd(one.clone(), established()))];
        let p = plan(&ready, &builtin, &none);
        assert_eq!(p.start, vec![(widgets.clone(), at("v1"))]);
        assert!(p.stop.is_empty());
        // Not yet established: defined, but nothing to follow.
        let waiting = vec![Arc::new(crd(one.clone(), json!({})))];
        let p = plan(&waiting, &builtin, &none);
        assert!(p.start.is_empty() && p.defined.contains(&widgets));
        // Followed and unchanged: nothing to do.
        let following: HashMap<_, _> = [(widgets.clone(), at("v1"))].into_iter().collect();
        let p = plan(&ready, &builtin, &following);
        assert_eq!((p.start.len(), p.stop.len()), (0, 0));
        // Another storage version: followed there instead; the definition is still there.
        let moved = json!([
            {"name": "v1", "served": true, "storage": false},
            {"name": "v2", "served": true, "storage": true},
        ]);
        let p = plan(&[Arc::new(crd(moved, established()))], &builtin, &following);
        assert_eq!(p.stop, vec![(widgets.clone(), false)]);
        assert_eq!(p.start, vec![(widgets.clone(), at("v2"))]);
        // No longer served, but defined: its objects may still exist.
        let unserved = json!([{"name": "v1", "served": false, "storage": true}]);
        let p = plan(
            &[Arc::new(crd(unserved, established()))],
            &builtin,
            &following,
        );
        assert_eq!(p.stop, vec![(widgets.clone(), false)]);
        // The definition gone: so are all its objects.
        let p = plan(&[], &builtin, &following);
        assert_eq!(p.stop, vec![(widgets, true)]);
    }

    #[test]
    fn a_definition_never_replaces_a_builtin_kind() {
        let mut c = crd(
            json!([{"name": "v1", "served": true, "storage": true}]),
            established(),
        );
        c.spec.group = "apps".into();
        c.spec.names.kind = "Deployment".into();
        c.spec.names.plural = "deployments".into();
        let p = plan(&[Arc::new(c)], &crate::kinds::builtin(), &HashMap::new());
        assert!(p.start.is_empty(), "{p:?}");
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
