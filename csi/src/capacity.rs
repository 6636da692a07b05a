//! Storage capacity publishing: the external-provisioner's capacity controller, built in.
//!
//! For every StorageClass whose `provisioner` is the driver (and whose binding mode is not
//! `Immediate`, unless asked), it asks the driver `GetCapacity` with the class's parameters
//! and the topology segment it serves, and keeps one `storage.k8s.io/v1` CSIStorageCapacity
//! per (class, segment) up to date in one namespace, so that the scheduler places a pod where
//! its `WaitForFirstConsumer` claims fit:
//!
//! - the object has `generateName: csisc-`, the labels `csi.storage.k8s.io/drivername: DRIVER`
//!   and `csi.storage.k8s.io/managed-by: external-provisioner[-NODE]` (by which a restarted
//!   publisher finds its objects again, instead of making new ones), `storageClassName`,
//!   `nodeTopology` (the segment as `matchLabels`), `capacity` and, when the driver gives it,
//!   `maximumVolumeSize`;
//! - in node deployment the segment is the node's (`NodeGetInfo`) and the object is owned by
//!   the Node (a controller reference), so that the garbage collector removes it with the
//!   node; in central deployment a driver without topology has one segment, every node (an
//!   empty selector), and no owner;
//! - the values are polled every [`Config::poll_interval`], at once when a class changes and
//!   after the provisioner made, failed to make or deleted a volume ([`Refresh`]);
//! - objects of classes that are gone (or no longer qualify), of another segment, duplicates
//!   and objects nobody wants any more are deleted; one a user deleted is made again.
//!
//! One worker does the work, so an object is never made twice by this process; after making
//! one it waits until its own watch has seen it before doing anything else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use skiff_client::backoff::Backoff;
use skiff_client::controller::WorkQueue;
use skiff_client::informer::{Informer, InformerFactory};
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::watcher;
use skiff_client::{Api, Client, DeleteParams, PostParams};
use skiff_proto::csi::v1 as csi;
use tokio_util::sync::CancellationToken;

use crate::provisioner::{bytes_of, quantity_of, Error, Plugin, Result};
use crate::CsiClient;

/// The label naming the driver an object is about.
pub const DRIVER_NAME_LABEL: &str = "csi.storage.k8s.io/drivername";
/// The label naming the publisher that manages an object.
pub const MANAGED_BY_LABEL: &str = "csi.storage.k8s.io/managed-by";
/// The `managed-by` value of a central publisher (and the prefix of a node's).
const MANAGED_BY: &str = "external-provisioner";
/// The longest label value.
const MAX_LABEL_VALUE: usize = 63;
/// How long one `GetCapacity` may take (the external-provisioner's `--timeout`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the watch to show an object just made.
const SEEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the publisher runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The namespace of the objects.
    pub namespace: String,
    /// How often every object is refreshed.
    pub poll_interval: Duration,
    /// Publish for classes with `volumeBindingMode: Immediate` too (the scheduler does not
    /// need them).
    pub immediate_binding: bool,
    /// Node deployment: the node whose segment is published and whose Node owns the
    /// objects.
    pub node: Option<String>,
}

/// The `csi.storage.k8s.io/managed-by` value of a publisher: `external-provisioner`, or in
/// node deployment `external-provisioner-NODE` (as the external-provisioner names it), with
/// the node's name replaced by a hash when the whole would be longer than a label value may
/// be.
pub fn managed_by(node: Option<&str>) -> String {
    let Some(node) = node else {
        return MANAGED_BY.to_string();
    };
    let full = format!("{MANAGED_BY}-{node}");
    if full.len() <= MAX_LABEL_VALUE {
        return full;
    }
    // FNV-1a: short, stable across restarts and builds.
    let hash = node.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{MANAGED_BY}-{hash:08x}")
}

/// Whether the publisher of `driver` keeps capacity for `class`.
pub fn wants(class: &StorageClass, driver: &str, immediate_binding: bool) -> bool {
    class.provisioner == driver
        && class.metadata.deletion_timestamp.is_none()
        && (immediate_binding
            || class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

/// The `nodeTopology` of a segment: its keys and values as `matchLabels`.
pub fn node_topology(segment: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(segment.clone()),
        match_expressions: None,
    }
}

/// Whether an object's `nodeTopology` is exactly the segment's (an absent or empty
/// `matchLabels` being the empty segment's).
fn same_topology(have: Option<&LabelSelector>, segment: &BTreeMap<String, String>) -> bool {
    let Some(have) = have else { return false };
    have.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && have.match_labels.clone().unwrap_or_default() == *segment
}

/// What to do with the objects of one class.
#[derive(Debug, Default)]
struct Plan {
    /// The object to keep up to date, if there is one and the class wants one.
    keep: Option<Arc<CSIStorageCapacity>>,
    /// Objects to delete: another segment's, duplicates, or all when the class wants none.
    delete: Vec<Arc<CSIStorageCapacity>>,
}

/// Sorts a class's objects: the oldest matching the segment is kept (when `wanted`), the
/// rest deleted.
fn plan(
    mut objects: Vec<Arc<CSIStorageCapacity>>,
    segment: &BTreeMap<String, String>,
    wanted: bool,
) -> Plan {
    objects.sort_by(|a, b| {
        let key = |c: &CSIStorageCapacity| {
            (
                c.metadata.creation_timestamp.as_ref().map(|t| t.0),
                c.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut out = Plan::default();
    for o in objects {
        if wanted && out.keep.is_none() && same_topology(o.node_topology.as_ref(), segment) {
            out.keep = Some(o);
        } else {
            out.delete.push(o);
        }
    }
    out
}

/// Whether the Node `node` is the object's controller. (Its uid is not compared: a Node made
/// anew under the same name leaves the object to the garbage collector, after which it is
/// made again with the new owner.)
fn owned_by(c: &CSIStorageCapacity, node: &str) -> bool {
    c.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "Node" && o.name == node)
}

/// Bytes of an optional quantity (`None` when absent or unreadable).
fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<i64> {
    q.and_then(|q| bytes_of(q).ok())
}

/// Whether `have` already says what the driver answered, owned by the Node `owner` when
/// there is one.
fn up_to_date(
    have: &CSIStorageCapacity,
    capacity: i64,
    maximum: Option<i64>,
    owner: Option<&str>,
) -> bool {
    bytes(have.capacity.as_ref()) == Some(capacity)
        && bytes(have.maximum_volume_size.as_ref()) == maximum
        && owner.is_none_or(|o| owned_by(have, o))
}

/// A work item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Ask the driver and bring the class's object up to date.
    Refresh(String),
    /// Look at the class's objects (one changed): delete what is not wanted, make what is
    /// missing, but ask the driver nothing for an object that exists.
    Check(String),
}

/// Asks a running publisher to refresh objects soon (after volumes were made or deleted).
#[derive(Clone)]
pub struct Refresh {
    queue: Arc<WorkQueue<Key>>,
    classes: Store<StorageClass>,
    driver: String,
    immediate_binding: bool,
}

impl Refresh {
    /// Refreshes the object of class `name`.
    pub fn class(&self, name: &str) {
        self.queue.add(Key::Refresh(name.to_string()));
    }

    /// Refreshes every object of this publisher (its segment's free space changed).
    pub fn all(&self) {
        for c in self.classes.state() {
            if wants(&c, &self.driver, self.immediate_binding) {
                self.class(c.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }
}

/// The publisher of one driver's capacity.
pub struct Publisher {
    client: Client,
    csi: CsiClient,
    driver: String,
    segment: BTreeMap<String, String>,
    config: Config,
    managed_by: String,
    classes: Informer<StorageClass>,
    capacities: Informer<CSIStorageCapacity>,
    queue: Arc<WorkQueue<Key>>,
}

impl Publisher {
    /// A publisher for the driver `plugin` describes; informers come from `factory`.
    ///
    /// In central deployment (no [`Config::node`]) a driver with topology cannot be served:
    /// its segments would have to be found from every node's CSINode, which only node
    /// deployment avoids.
    pub fn new(
        client: Client,
        csi: CsiClient,
        plugin: &Plugin,
        config: Config,
        factory: &InformerFactory,
    ) -> Result<Self> {
        let segment = match (&config.node, plugin.topology) {
            (Some(_), _) => plugin.node_topology.clone().unwrap_or_default(),
            (None, false) => BTreeMap::new(),
            (None, true) => {
                return Err(Error::Invalid(format!(
                    "{} has topology: capacity is published in node deployment only",
                    plugin.name
                )))
            }
        };
        let managed_by = managed_by(config.node.as_deref());
        let selector = format!(
            "{DRIVER_NAME_LABEL}={},{MANAGED_BY_LABEL}={managed_by}",
            plugin.name
        );
        let capacities = factory.informer_with::<CSIStorageCapacity>(
            Some(&config.namespace),
            watcher::Config::default()
                .labels(&selector)
                .strip_managed_fields(),
            Default::default(),
        );
        Ok(Publisher {
            client,
            csi,
            driver: plugin.name.clone(),
            segment,
            managed_by,
            classes: factory.informer::<StorageClass>(),
            capacities,
            queue: WorkQueue::new(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(300),
            )),
            config,
        })
    }

    /// A handle that asks this publisher to refresh.
    pub fn refresher(&self) -> Refresh {
        Refresh {
            queue: self.queue.clone(),
            classes: self.classes.store(),
            driver: self.driver.clone(),
            immediate_binding: self.config.immediate_binding,
        }
    }

    /// The owner of the objects: the Node, in node deployment, read when an object is
    /// written (rather than watched: a Node changes every few seconds). `Err` while that Node
    /// does not exist, so the write is tried again later.
    async fn owner(&self) -> Result<Option<OwnerReference>> {
        let Some(node) = &self.config.node else {
            return Ok(None);
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        let Some(n) = nodes.get_opt(node).await? else {
            return Err(Error::Invalid(format!(
                "node {node:?} not found: it owns the CSIStorageCapacity objects"
            )));
        };
        Ok(Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.clone(),
            uid: n.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        }))
    }

    fn wanted_class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.classes
            .store()
            .get(&ObjectKey::new("", name))
            .filter(|c| wants(c, &self.driver, self.config.immediate_binding))
    }

    /// The driver's answer for `class`: available bytes and the largest volume.
    async fn get_capacity(&self, class: &StorageClass) -> Result<(i64, Option<i64>)> {
        let request = csi::GetCapacityRequest {
            volume_capabilities: Vec::new(),
            parameters: class
                .parameters
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            accessible_topology: (!self.segment.is_empty()).then(|| csi::Topology {
                segments: self.segment.clone().into_iter().collect(),
            }),
        };
        let mut controller = self.csi.controller.clone();
        let call = controller.get_capacity(request);
        let answer = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| {
                Error::Csi(tonic::Status::deadline_exceeded(
                    "GetCapacity did not answer in time",
                ))
            })??
            .into_inner();
        Ok((
            answer.available_capacity.max(0),
            answer.maximum_volume_size.map(|m| m.max(0)),
        ))
    }

    async fn sync(&self, key: &Key) -> Result<()> {
        let (class_name, refresh) = match key {
            Key::Refresh(c) => (c.as_str(), true),
            Key::Check(c) => (c.as_str(), false),
        };
        let class = self.wanted_class(class_name);
        let mine: Vec<_> = self
            .capacities
            .store()
            .state()
            .into_iter()
            .filter(|c| c.storage_class_name == class_name)
            .collect();
        let plan = plan(mine, &self.segment, class.is_some());
        let api: Api<CSIStorageCapacity> =
            Api::namespaced(self.client.clone(), &self.config.namespace);
        for o in &plan.delete {
            let name = o.metadata.name.as_deref().unwrap_or_default();
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(capacity = name, class = class_name, "deleted"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(class) = class else { return Ok(()) };
        if plan.keep.is_some() && !refresh {
            return Ok(());
        }
        let (capacity, maximum) = self.get_capacity(&class).await?;
        match plan.keep {
            Some(have) if up_to_date(&have, capacity, maximum, self.config.node.as_deref()) => {
                Ok(())
            }
            Some(have) => {
                let owner = self.owner().await?;
                let mut next = (*have).clone();
                next.capacity = Some(quantity_of(capacity));
                next.maximum_volume_size = maximum.map(quantity_of);
                if let Some(o) = owner {
                    let refs = next.metadata.owner_references.get_or_insert_with(Vec::new);
                    refs.retain(|r| !(r.kind == o.kind && r.name == o.name) && r.uid != o.uid);
                    refs.push(o);
                }
                let name = have.metadata.name.clone().unwrap_or_default();
                api.replace(&name, &PostParams::default(), &next).await?;
                tracing::debug!(capacity = %name, class = class_name, bytes = capacity, "updated");
                Ok(())
            }
            None => {
                let owner = self.owner().await?;
                let obj = CSIStorageCapacity {
                    metadata: ObjectMeta {
                        generate_name: Some("csisc-".into()),
                        namespace: Some(self.config.namespace.clone()),
                        labels: Some(BTreeMap::from([
                            (DRIVER_NAME_LABEL.to_string(), self.driver.clone()),
                            (MANAGED_BY_LABEL.to_string(), self.managed_by.clone()),
                        ])),
                        owner_references: owner.map(|o| vec![o]),
                        ..Default::default()
                    },
                    storage_class_name: class_name.to_string(),
                    node_topology: Some(node_topology(&self.segment)),
                    capacity: Some(quantity_of(capacity)),
                    maximum_volume_size: maximum.map(quantity_of),
                };
                let changes = self.capacities.subscribe();
                let made = api.create(&PostParams::default(), &obj).await?;
                let name = made.metadata.name.clone().unwrap_or_default();
                tracing::info!(capacity = %name, class = class_name, bytes = capacity, "created");
                self.wait_seen(changes, &name).await;
                Ok(())
            }
        }
    }

    /// Waits (a while at most) until the watch shows the object `name`, so that the next
    /// work item does not make it again.
    async fn wait_seen(
        &self,
        changes: impl futures::Stream<Item = Change<CSIStorageCapacity>>,
        name: &str,
    ) {
        let key = ObjectKey::new(&self.config.namespace, name);
        let store = self.capacities.store();
        futures::pin_mut!(changes);
        let seen = async {
            while store.get(&key).is_none() {
                if changes.next().await.is_none() {
                    return;
                }
            }
        };
        if tokio::time::timeout(SEEN_TIMEOUT, seen).await.is_err() {
            tracing::warn!(capacity = name, "the watch has not shown a new object yet");
        }
    }

    fn queue_all(&self, refresh: bool) {
        let mut classes: Vec<String> = self
            .classes
            .store()
            .state()
            .iter()
            .filter(|c| wants(c, &self.driver, self.config.immediate_binding))
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        if !refresh {
            classes.extend(
                self.capacities
                    .store()
                    .state()
                    .iter()
                    .map(|c| c.storage_class_name.clone()),
            );
        }
        for c in classes {
            self.queue.add(if refresh {
                Key::Refresh(c)
            } else {
                Key::Check(c)
            });
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let class_changes = self.classes.subscribe();
        let capacity_changes = self.capacities.subscribe();
        let ready = async {
            self.classes.store().wait_until_ready().await;
            self.capacities.store().wait_until_ready().await;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ready => {}
        }
        tracing::info!(
            driver = %self.driver,
            namespace = %self.config.namespace,
            managed_by = %self.managed_by,
            segment = ?self.segment,
            "publishing storage capacity"
        );
        let this = Arc::new(self);
        this.queue_all(false);
        this.queue_all(true);
        let worker = {
            let this = this.clone();
            tokio::spawn(async move {
                while let Some(key) = this.queue.get().await {
                    match this.sync(&key).await {
                        Ok(()) => this.queue.forget(&key),
                        Err(e) => {
                            tracing::warn!(?key, error = %e, "publishing capacity failed; retrying");
                            this.queue.add_rate_limited(key.clone());
                        }
                    }
                    this.queue.done(&key);
                }
            })
        };
        futures::pin_mut!(class_changes, capacity_changes);
        let mut poll = tokio::time::interval(this.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = poll.tick() => this.queue_all(true),
                c = class_changes.next() => match c {
                    Some(Change::Applied(c)) | Some(Change::Deleted(c)) => {
                        this.queue.add(Key::Refresh(c.metadata.name.clone().unwrap_or_default()));
                    }
                    Some(Change::Resynced) => this.queue_all(false),
                    None => break,
                },
                c = capacity_changes.next() => match c {
                    Some(Change::Applied(c)) | Some(Change::Deleted(c)) => {
                        this.queue.add(Key::Check(c.storage_class_name.clone()));
                    }
                    Some(Change::Resynced) => this.queue_all(false),
                    None => break,
                },
            }
        }
        this.queue.shut_down();
        let _ = worker.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "provisioner": provisioner,
            "volumeBindingMode": mode}),
        )
        .unwrap()
    }

    fn cap(name: &str, created: &str, topology: serde_json::Value) -> Arc<CSIStorageCapacity> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-system", "creationTimestamp": created},
                "storageClassName": "local", "nodeTopology": topology, "capacity": "1Gi"}))
            .unwrap(),
        )
    }

    fn segment(node: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "topology.local.csi.skiff.dev/node".to_string(),
            node.to_string(),
        )])
    }

    #[test]
    fn managed_by_names_the_node_within_a_label_value() {
        assert_eq!(managed_by(None), "external-provisioner");
        assert_eq!(managed_by(Some("node-1")), "external-provisioner-node-1");
        let long = "n".repeat(100);
        let a = managed_by(Some(&long));
        assert!(a.len() <= MAX_LABEL_VALUE, "{a}");
        assert_eq!(a, managed_by(Some(&long)), "stable");
        assert_ne!(a, managed_by(Some(&"m".repeat(100))));
    }

    #[test]
    fn only_the_drivers_late_binding_classes_are_published() {
        let d = "local.csi.skiff.dev";
        assert!(wants(&class("a", d, "WaitForFirstConsumer"), d, false));
        assert!(!wants(&class("b", d, "Immediate"), d, false));
        assert!(wants(&class("b", d, "Immediate"), d, true));
        assert!(!wants(
            &class("c", "other", "WaitForFirstConsumer"),
            d,
            true
        ));
        // No mode is Immediate (the API server's default).
        let mut none = class("d", d, "Immediate");
        none.volume_binding_mode = None;
        assert!(!wants(&none, d, false));
    }

    #[test]
    fn the_oldest_object_of_the_segment_is_kept_and_the_rest_deleted() {
        let here = json!({"matchLabels": {"topology.local.csi.skiff.dev/node": "n1"}});
        let there = json!({"matchLabels": {"topology.local.csi.skiff.dev/node": "n2"}});
        let objects = vec![
            cap("csisc-b", "2025-01-01T00:00:02Z", here.clone()),
            cap("csisc-a", "2025-01-01T00:00:01Z", here.clone()),
            cap("csisc-c", "2025-01-01T00:00:00Z", there),
        ];
        let p = plan(objects.clone(), &segment("n1"), true);
        assert_eq!(p.keep.unwrap().metadata.name.as_deref(), Some("csisc-a"));
        let gone: Vec<_> = p
            .delete
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(gone, ["csisc-c", "csisc-b"]);
        // A class that is gone takes all its objects with it.
        let p = plan(objects, &segment("n1"), false);
        assert!(p.keep.is_none());
        assert_eq!(p.delete.len(), 3);
    }

    #[test]
    fn an_empty_segment_matches_an_empty_or_absent_selector_only() {
        let none = BTreeMap::new();
        assert!(same_topology(Some(&node_topology(&none)), &none));
        assert!(same_topology(Some(&LabelSelector::default()), &none));
        assert!(!same_topology(None, &none));
        assert!(!same_topology(Some(&node_topology(&segment("n1"))), &none));
        let with_expr: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "k", "operator": "Exists"}]}))
        .unwrap();
        assert!(!same_topology(Some(&with_expr), &none));
    }

    #[test]
    fn an_object_is_rewritten_when_its_values_or_owner_differ() {
        let c = cap("csisc-a", "2025-01-01T00:00:00Z", json!({}));
        let owner = |kind: &str, controller: bool| OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: "n1".into(),
            uid: "u1".into(),
            controller: Some(controller),
            block_owner_deletion: None,
        };
        assert!(up_to_date(&c, 1 << 30, None, None));
        assert!(!up_to_date(&c, 1 << 29, None, None));
        assert!(!up_to_date(&c, 1 << 30, Some(1 << 30), None));
        assert!(!up_to_date(&c, 1 << 30, None, Some("n1")));
        let mut owned = (*c).clone();
        owned.metadata.owner_references = Some(vec![owner("Node", true)]);
        assert!(up_to_date(&owned, 1 << 30, None, Some("n1")));
        assert!(!up_to_date(&owned, 1 << 30, None, Some("n2")));
        owned.metadata.owner_references = Some(vec![owner("Node", false)]);
        assert!(!up_to_date(&owned, 1 << 30, None, Some("n1")));
        owned.metadata.owner_references = Some(vec![owner("Pod", true)]);
        assert!(!up_to_date(&owned, 1 << 30, None, Some("n1")));
    }
}
