//! What the proxy knows of the cluster's Services and EndpointSlices: only the fields its
//! rules need ([`ServiceInfo`], [`SliceInfo`]), kept from the watch events, and which
//! services changed since the last sync.
//!
//! The proxy keeps no informer cache of whole objects: at 10,000 services those would be
//! most of its memory, and it would have to work every service out again to find the few
//! that changed.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_client::reflector::ObjectKey;
use skiff_client::services::SERVICE_NAME_LABEL;
use skiff_client::watcher::Event;

use crate::model::{self, ServiceInfo, ServicePort, SliceInfo};

/// A slice as kept: its service and what the proxy needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slice {
    service: ObjectKey,
    info: SliceInfo,
}

/// The services to write since the last [`Tracker::take`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Everything was listed afresh: write it all.
    pub all: bool,
    /// The services whose ports changed.
    pub services: BTreeSet<ObjectKey>,
}

impl Pending {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.all && self.services.is_empty()
    }
}

/// Services and slices from the two watches.
#[derive(Debug)]
pub struct Tracker {
    node: String,
    services: HashMap<ObjectKey, ServiceInfo>,
    slices: HashMap<ObjectKey, Slice>,
    /// Slice names by service.
    by_service: HashMap<ObjectKey, BTreeSet<String>>,
    /// A list in progress, replacing the maps when done.
    listing_services: Option<HashMap<ObjectKey, ServiceInfo>>,
    listing_slices: Option<HashMap<ObjectKey, Slice>>,
    listed: (bool, bool),
    pending: Pending,
}

fn key_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or(""),
    )
}

fn slice_of(s: &EndpointSlice, node: &str) -> Option<Slice> {
    let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(Slice {
        service: ObjectKey::new(s.metadata.namespace.as_deref().unwrap_or(""), service),
        info: SliceInfo::new(s, node)?,
    })
}

impl Tracker {
    /// Nothing known yet, for node `node`.
    pub fn new(node: &str) -> Tracker {
        Tracker {
            node: node.to_string(),
            services: HashMap::new(),
            slices: HashMap::new(),
            by_service: HashMap::new(),
            listing_services: None,
            listing_slices: None,
            listed: (false, false),
            pending: Pending::default(),
        }
    }

    /// Both watches have listed once.
    pub fn ready(&self) -> bool {
        self.listed == (true, true)
    }

    /// Takes in a Service watch event.
    pub fn service_event(&mut self, ev: Event<Service>) {
        match ev {
            Event::Init => self.listing_services = Some(HashMap::new()),
            Event::InitApply(s) => {
                if let (Some(l), Some(info)) =
                    (self.listing_services.as_mut(), ServiceInfo::new(&s))
                {
                    l.insert(key_of(&s.metadata), info);
                }
            }
            Event::InitDone => {
                self.services = self.listing_services.take().unwrap_or_default();
                self.listed.0 = true;
                self.pending.all = true;
            }
            Event::Apply(s) => {
                let key = key_of(&s.metadata);
                let changed = match ServiceInfo::new(&s) {
                    Some(info) => self.services.insert(key.clone(), info.clone()) != Some(info),
                    None => self.services.remove(&key).is_some(),
                };
                if changed {
                    self.pending.services.insert(key);
                }
            }
            Event::Delete(s) => {
                let key = key_of(&s.metadata);
                if self.services.remove(&key).is_some() {
                    self.pending.services.insert(key);
                }
            }
        }
    }

    /// Takes in an EndpointSlice watch event.
    pub fn slice_event(&mut self, ev: Event<EndpointSlice>) {
        match ev {
            Event::Init => self.listing_slices = Some(HashMap::new()),
            Event::InitApply(s) => {
                if let (Some(l), Some(slice)) =
                    (self.listing_slices.as_mut(), slice_of(&s, &self.node))
                {
                    l.insert(key_of(&s.metadata), slice);
                }
            }
            Event::InitDone => {
                self.slices = self.listing_slices.take().unwrap_or_default();
                self.by_service.clear();
                for (k, s) in &self.slices {
                    self.by_service
                        .entry(s.service.clone())
                        .or_default()
                        .insert(k.name.clone());
                }
                self.listed.1 = true;
                self.pending.all = true;
            }
            Event::Apply(s) => {
                let key = key_of(&s.metadata);
                match slice_of(&s, &self.node) {
                    Some(slice) => {
                        if self.slices.get(&key) != Some(&slice) {
                            self.remove_slice(&key);
                            self.by_service
                                .entry(slice.service.clone())
                                .or_default()
                                .insert(key.name.clone());
                            self.pending.services.insert(slice.service.clone());
                            self.slices.insert(key, slice);
                        }
                    }
                    None => self.remove_slice(&key),
                }
            }
            Event::Delete(s) => self.remove_slice(&key_of(&s.metadata)),
        }
    }

    fn remove_slice(&mut self, key: &ObjectKey) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        if let Some(names) = self.by_service.get_mut(&old.service) {
            names.remove(&key.name);
            if names.is_empty() {
                self.by_service.remove(&old.service);
            }
        }
        self.pending.services.insert(old.service);
    }

    /// What changed since the last call.
    pub fn take(&mut self) -> Pending {
        std::mem::take(&mut self.pending)
    }

    /// The ports of service `key` as they are now (none when it is gone).
    pub fn ports(&self, key: &ObjectKey) -> Vec<ServicePort> {
        let Some(svc) = self.services.get(key) else {
            return Vec::new();
        };
        let slices: Vec<&SliceInfo> = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| {
                self.slices
                    .get(&ObjectKey::new(&key.namespace, name))
                    .map(|s| &s.info)
            })
            .collect();
        model::ports(&key.namespace, &key.name, svc, &slices)
    }

    /// Every service with its ports.
    pub fn all(&self) -> impl Iterator<Item = (ObjectKey, Vec<ServicePort>)> + '_ {
        self.services.keys().map(|k| (k.clone(), self.ports(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}))
        .unwrap()
    }

    fn slice(name: &str, service: &str, ip: &str) -> EndpointSlice {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
                "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [{"addresses": [ip]}]}))
        .unwrap()
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    fn listed() -> Tracker {
        let mut t = Tracker::new("n1");
        t.service_event(Event::Init);
        t.service_event(Event::InitApply(svc("web", "10.96.0.10")));
        t.service_event(Event::InitDone);
        assert!(!t.ready());
        t.slice_event(Event::Init);
        t.slice_event(Event::InitApply(slice("web-1", "web", "10.1.0.2")));
        t.slice_event(Event::InitDone);
        assert!(t.ready());
        assert!(t.take().all);
        t
    }

    #[test]
    fn only_services_whose_ports_changed_are_pending() {
        let mut t = listed();
        assert_eq!(t.ports(&key("web"))[0].cluster_endpoints.len(), 1);
        // The same content again (a resourceVersion bump): nothing to write.
        t.service_event(Event::Apply(svc("web", "10.96.0.10")));
        t.slice_event(Event::Apply(slice("web-1", "web", "10.1.0.2")));
        assert!(t.take().is_empty());
        // A second slice, then a new service.
        t.slice_event(Event::Apply(slice("web-2", "web", "10.1.0.3")));
        t.service_event(Event::Apply(svc("api", "10.96.0.11")));
        let p = t.take();
        assert!(!p.all);
        assert_eq!(p.services, [key("api"), key("web")].into_iter().collect());
        assert_eq!(t.ports(&key("web"))[0].cluster_endpoints.len(), 2);
        assert!(t.ports(&key("api"))[0].cluster_endpoints.is_empty());
        // A slice moving to another service touches both.
        t.slice_event(Event::Apply(slice("web-2", "api", "10.1.0.3")));
        let p = t.take();
        assert_eq!(p.services, [key("api"), key("web")].into_iter().collect());
        assert_eq!(t.ports(&key("api"))[0].cluster_endpoints.len(), 1);
        // Deleting the service leaves its slice, but no ports.
        t.service_event(Event::Delete(svc("web", "10.96.0.10")));
        assert_eq!(t.take().services, [key("web")].into_iter().collect());
        assert!(t.ports(&key("web")).is_empty());
        assert_eq!(t.all().count(), 1);
    }

    #[test]
    fn a_relist_replaces_everything_and_asks_for_a_full_write() {
        let mut t = listed();
        t.slice_event(Event::Init);
        t.slice_event(Event::InitApply(slice("web-9", "web", "10.1.0.9")));
        t.slice_event(Event::InitDone);
        assert!(t.take().all);
        let eps = &t.ports(&key("web"))[0].cluster_endpoints;
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].ip.to_string(), "10.1.0.9");
        // A headless service has nothing to program.
        t.service_event(Event::Apply(svc("web", "None")));
        assert_eq!(t.take().services.len(), 1);
        assert!(t.ports(&key("web")).is_empty());
    }
}
