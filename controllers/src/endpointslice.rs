//! The EndpointSlice and Endpoints controllers, as one: for every Service with a selector,
//! the pods it selects become endpoints — ready, serving and terminating conditions, node
//! names and zones, named target ports resolved per pod — in EndpointSlices (owned by the
//! Service, at most 100 endpoints each, one group per distinct port set) and in the legacy
//! `Endpoints` object of the same name. A pod change reaches them as soon as the informer
//! delivers it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Node, ObjectReference,
    Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::{owners, pods, Context};

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's name in [`MANAGED_BY`], Kubernetes' own.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice at most.
pub const MAX_PER_SLICE: usize = 100;

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let services = ctx.informers.informer::<Service>();
    let slices = ctx.owned::<EndpointSlice>();
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.pods();
    let ctrl = Controller::new(
        services.clone(),
        RunConfig {
            concurrency: ctx.config.concurrent_service_endpoint_syncs,
            ..RunConfig::default()
        },
    );
    // A pod concerns the services whose selectors match it now or matched it before.
    let queue = ctrl.queue();
    let svc_store = services.store();
    let last: Mutex<HashMap<ObjectKey, Vec<ObjectKey>>> = Mutex::new(HashMap::new());
    crate::spawn_each(pods.subscribe(), shutdown.clone(), move |c| {
        let (pod, gone) = match c {
            Change::Applied(p) => (p, false),
            Change::Deleted(p) => (p, true),
            Change::Resynced => {
                for k in svc_store.keys() {
                    queue.add(k);
                }
                return;
            }
        };
        let key = ObjectKey::of(pod.as_ref());
        let now: Vec<ObjectKey> = if gone {
            Vec::new()
        } else {
            svc_store
                .in_namespace(&key.namespace)
                .iter()
                .filter(|s| selects(s, &pod))
                .map(|s| ObjectKey::of(s.as_ref()))
                .collect()
        };
        let mut last = last.lock();
        let before = if gone {
            last.remove(&key).unwrap_or_default()
        } else {
            last.insert(key, now.clone()).unwrap_or_default()
        };
        for k in before.into_iter().chain(now) {
            queue.add(k);
        }
    });
    // A slice someone else changed or deleted is put right.
    let queue = ctrl.queue();
    crate::spawn_each(slices.subscribe(), shutdown.clone(), move |c| {
        if let Change::Applied(s) | Change::Deleted(s) = c {
            let l = s.metadata.labels.clone().unwrap_or_default();
            if l.get(MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME) {
                if let Some(svc) = l.get(SERVICE_NAME) {
                    let ns = s.metadata.namespace.clone().unwrap_or_default();
                    queue.add(ObjectKey::new(&ns, svc));
                }
            }
        }
    });
    let stores = Stores {
        pods: pods.store(),
        slices: slices.store(),
        nodes: nodes.store(),
    };
    ctrl.run(
        move |key, svc| {
            let (ctx, stores) = (ctx.clone(), stores.clone());
            async move { reconcile(&ctx, &stores, key, svc).await }
        },
        shutdown,
    )
    .await;
}

#[derive(Clone)]
struct Stores {
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
}

fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .filter(|s| s.type_.as_deref() != Some("ExternalName"))
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = selector(svc) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The port a service port reaches on `pod`: its number, or the container port named so.
fn target_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.iter().flatten().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

/// One endpoint of `pod`, or none when it has no address yet or has finished.
fn endpoint(svc: &Service, pod: &Pod, nodes: &Store<Node>) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    let ip = status
        .pod_ips
        .iter()
        .flatten()
        .map(|i| i.ip.clone())
        .find(|ip| !ip.contains(':'))
        .or_else(|| status.pod_ip.clone().filter(|ip| !ip.contains(':')))?;
    if matches!(pods::phase(pod), "Succeeded" | "Failed") {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.clone().filter(|n| !n.is_empty())?;
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = pods::is_ready(pod);
    let zone = nodes
        .get(&ObjectKey::new("", &node))
        .and_then(|n| n.metadata.labels.clone())
        .and_then(|l| l.get("topology.kubernetes.io/zone").cloned());
    let svc_name = svc.metadata.name.as_deref();
    let hostname = spec
        .hostname
        .clone()
        .filter(|_| spec.subdomain.as_deref() == svc_name && svc_name.is_some());
    Some(Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(publish || (ready && !terminating)),
            serving: Some(publish || ready),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: Some(node),
        zone,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The endpoints of a service, grouped by the ports they resolve to.
fn groups(
    svc: &Service,
    pods: &[Arc<Pod>],
    nodes: &Store<Node>,
) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let service_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut by_ports: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    let mut sorted: Vec<&Arc<Pod>> = pods.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in sorted {
        let Some(ep) = endpoint(svc, pod, nodes) else {
            continue;
        };
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    port: Some(target_port(sp, pod)?),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let key = serde_json::to_string(&ports).unwrap_or_default();
        by_ports
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(ep);
    }
    by_ports.into_values().collect()
}

async fn reconcile(
    ctx: &Context,
    stores: &Stores,
    key: ObjectKey,
    svc: Option<Arc<Service>>,
) -> Result<Action, skiff_client::Error> {
    let endpoints_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let Some(svc) = svc.filter(|s| selector(s).is_some()) else {
        // Slices go with their Service (owner references); the legacy object is removed here
        // for a Service that is gone (one without a selector has user-managed endpoints).
        if service_gone(ctx, &key).await? {
            match endpoints_api
                .delete(&key.name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(Action::Done);
    };
    stores.pods.wait_until_ready().await;
    stores.slices.wait_until_ready().await;
    stores.nodes.wait_until_ready().await;
    let selected: Vec<Arc<Pod>> = stores
        .pods
        .in_namespace(&key.namespace)
        .into_iter()
        .filter(|p| selects(&svc, p))
        .collect();
    let groups = groups(&svc, &selected, &stores.nodes);
    write_slices(ctx, stores, &key, &svc, &groups).await?;
    write_endpoints(&endpoints_api, &key, &svc, &groups).await?;
    Ok(Action::Done)
}

async fn service_gone(ctx: &Context, key: &ObjectKey) -> Result<bool, skiff_client::Error> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    Ok(api.get_opt(&key.name).await?.is_none())
}

async fn write_slices(
    ctx: &Context,
    stores: &Stores,
    key: &ObjectKey,
    svc: &Service,
    groups: &[(Vec<EndpointPort>, Vec<Endpoint>)],
) -> Result<(), skiff_client::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut existing: Vec<Arc<EndpointSlice>> = stores
        .slices
        .in_namespace(&key.namespace)
        .into_iter()
        .filter(|s| {
            let l = s.metadata.labels.as_ref();
            l.and_then(|l| l.get(SERVICE_NAME)) == Some(&key.name)
                && l.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(CONTROLLER_NAME)
                && !owners::deleting(&s.metadata)
        })
        .collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut labels: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), key.name.clone());
    labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    let mut wanted: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    for (ports, eps) in groups {
        for chunk in eps.chunks(MAX_PER_SLICE) {
            wanted.push((ports.clone(), chunk.to_vec()));
        }
    }
    // A service with no endpoints still has one (empty) slice, as Kubernetes keeps it.
    if wanted.is_empty() {
        wanted.push((Vec::new(), Vec::new()));
    }
    let owner = owners::controller_ref(svc);
    let mut used = HashSet::new();
    for (i, (ports, eps)) in wanted.into_iter().enumerate() {
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", key.name)),
                namespace: Some(key.namespace.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps,
            ports: Some(ports),
        };
        match existing.get(i) {
            Some(old) => {
                used.insert(old.metadata.name.clone());
                let same = old.endpoints == slice.endpoints
                    && old.ports.clone().unwrap_or_default()
                        == slice.ports.clone().unwrap_or_default()
                    && old.metadata.labels == slice.metadata.labels;
                if !same {
                    let mut next = slice;
                    next.metadata.generate_name = None;
                    next.metadata.name = old.metadata.name.clone();
                    next.metadata.resource_version = old.metadata.resource_version.clone();
                    let name = old.metadata.name.clone().unwrap_or_default();
                    match api.replace(&name, &PostParams::default(), &next).await {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            None => match api.create(&PostParams::default(), &slice).await {
                Ok(_) => {}
                // The namespace is going away: nothing to keep up to date.
                Err(e) if e.api().is_some_and(|a| a.code == 403) => return Ok(()),
                Err(e) => return Err(e),
            },
        }
    }
    for old in existing.iter().filter(|s| !used.contains(&s.metadata.name)) {
        let name = old.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_endpoints(
    api: &Api<Endpoints>,
    key: &ObjectKey,
    svc: &Service,
    groups: &[(Vec<EndpointPort>, Vec<Endpoint>)],
) -> Result<(), skiff_client::Error> {
    let mut subsets = Vec::new();
    for (ports, eps) in groups {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for e in eps {
            let c = e.conditions.clone().unwrap_or_default();
            // Terminating pods are not in the legacy object.
            if c.terminating == Some(true) && c.ready != Some(true) {
                continue;
            }
            let a = EndpointAddress {
                ip: e.addresses[0].clone(),
                hostname: e.hostname.clone(),
                node_name: e.node_name.clone(),
                target_ref: e.target_ref.clone(),
            };
            if c.ready == Some(true) {
                ready.push(a);
            } else {
                not_ready.push(a);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                ports
                    .iter()
                    .map(|p| CorePort {
                        name: p.name.clone().filter(|n| !n.is_empty()),
                        port: p.port.unwrap_or(0),
                        protocol: p.protocol.clone(),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect(),
            ),
        });
    }
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    let want = Endpoints {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: (!labels.is_empty()).then_some(labels),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    match api.get_opt(&key.name).await? {
        None => match api.create(&PostParams::default(), &want).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() || e.api().is_some_and(|a| a.code == 403) => Ok(()),
            Err(e) => Err(e),
        },
        Some(cur) => {
            let same = cur.subsets.clone().unwrap_or_default()
                == want.subsets.clone().unwrap_or_default()
                && cur.metadata.labels.clone().unwrap_or_default()
                    == want.metadata.labels.clone().unwrap_or_default();
            if same {
                return Ok(());
            }
            let mut next = want;
            next.metadata.resource_version = cur.metadata.resource_version.clone();
            match api.replace(&key.name, &PostParams::default(), &next).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let sp: ServicePort = serde_json::from_value(
            json!({"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}),
        )
        .unwrap();
        let pod = |port: i32| -> Pod {
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c",
                "ports": [{"name": "http", "containerPort": port}]}]}}))
            .unwrap()
        };
        assert_eq!(target_port(&sp, &pod(8080)), Some(8080));
        assert_eq!(target_port(&sp, &pod(9090)), Some(9090));
        let none: Pod =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c"}]}})).unwrap();
        assert_eq!(target_port(&sp, &none), None);
        let numeric: ServicePort =
            serde_json::from_value(json!({"port": 80, "targetPort": 8081})).unwrap();
        assert_eq!(target_port(&numeric, &none), Some(8081));
    }
}
