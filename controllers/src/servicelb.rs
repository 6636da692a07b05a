//! The built-in service load balancer: a `type: LoadBalancer` Service without a
//! `loadBalancerClass` gets addresses in `status.loadBalancer.ingress` — the addresses of the
//! Ready nodes (ExternalIP where a node has one, else InternalIP), or, with
//! `--service-lb-pool`, one address of that pool for itself (`spec.loadBalancerIP` if asked
//! for and free). Every node's proxy accepts the service's port on those addresses. A Service
//! that stops being a LoadBalancer has its ingress cleared.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::nodeipam::Cidr;
use crate::Context;

/// Where load-balancer addresses come from.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// A pool to hand each service an address of its own from; `None`: the nodes' addresses.
    pub pool: Option<Cidr>,
}

fn is_ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

fn ingress(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

/// The addresses of the Ready nodes, sorted.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for n in nodes {
        let Some(status) = &n.status else { continue };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let addrs = status.addresses.as_deref().unwrap_or(&[]);
        let pick = |t: &str| {
            addrs
                .iter()
                .find(|a| a.type_ == t && a.address.parse::<Ipv4Addr>().is_ok())
        };
        if let Some(a) = pick("ExternalIP").or_else(|| pick("InternalIP")) {
            out.insert(a.address.clone());
        }
    }
    out.into_iter().collect()
}

/// An address of `pool` for `svc`: the one it has, else the one it asks for, else the first
/// free one; `Err` with the reason when there is none.
pub fn pool_address(
    pool: Cidr,
    svc: &Service,
    others: &BTreeSet<String>,
) -> Result<String, String> {
    let in_pool = |ip: &str| ip.parse().is_ok_and(|a| pool.contains(a));
    if let Some(have) = ingress(svc)
        .into_iter()
        .find(|ip| in_pool(ip) && !others.contains(ip))
    {
        return Ok(have);
    }
    if let Some(want) = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
    {
        if !want.is_empty() {
            if !in_pool(want) {
                return Err(format!(
                    "spec.loadBalancerIP {want} is not in the pool {pool}"
                ));
            }
            if others.contains(want) {
                return Err(format!("spec.loadBalancerIP {want} is already in use"));
            }
            return Ok(want.to_string());
        }
    }
    // A network's first and last addresses are left out, as MetalLB does, where it has more
    // than two.
    let all: Vec<Ipv4Addr> = (0u32..).map_while(|i| pool.address(i)).collect();
    let usable = if all.len() > 2 {
        &all[1..all.len() - 1]
    } else {
        &all[..]
    };
    usable
        .iter()
        .map(|a| a.to_string())
        .find(|ip| !others.contains(ip))
        .ok_or_else(|| format!("no address of the pool {pool} is free"))
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, config: Config, shutdown: CancellationToken) {
    let services = ctx.informers.informer::<Service>();
    let nodes = ctx.informers.informer::<Node>();
    // One worker: two services must never be handed the same pool address.
    let ctrl = Controller::new(
        services.clone(),
        RunConfig {
            concurrency: 1,
            ..RunConfig::default()
        },
    );
    // The nodes' addresses changed: every load balancer on them is looked at again.
    let queue = ctrl.queue();
    let (svc_store, node_store) = (services.store(), nodes.store());
    let watched = node_store.clone();
    let all = svc_store.clone();
    let mut last = Vec::new();
    crate::spawn_each(
        nodes.subscribe(),
        shutdown.clone(),
        move |_: Change<Node>| {
            let now = node_addresses(&watched.state());
            if now != last {
                last = now;
                for s in all.state() {
                    if is_ours(&s) {
                        queue.add(ObjectKey::of(s.as_ref()));
                    }
                }
            }
        },
    );
    ctrl.run(
        move |key, svc| {
            let (ctx, config, svc_store, node_store) = (
                ctx.clone(),
                config.clone(),
                svc_store.clone(),
                node_store.clone(),
            );
            async move { reconcile(&ctx, &config, &svc_store, &node_store, key, svc).await }
        },
        shutdown,
    )
    .await;
}

async fn reconcile(
    ctx: &Context,
    config: &Config,
    services: &Store<Service>,
    nodes: &Store<Node>,
    key: ObjectKey,
    svc: Option<Arc<Service>>,
) -> Result<Action, skiff_client::Error> {
    let Some(svc) = svc else {
        return Ok(Action::Done);
    };
    let have = ingress(&svc);
    let lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let want = if !lb {
        // No longer a load balancer: nothing to publish.
        Vec::new()
    } else if !is_ours(&svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    } else if let Some(pool) = config.pool {
        nodes.wait_until_ready().await;
        services.wait_until_ready().await;
        let others: BTreeSet<String> = services
            .state()
            .iter()
            .filter(|s| s.metadata.uid != svc.metadata.uid && is_ours(s))
            .flat_map(|s| ingress(s))
            .collect();
        match pool_address(pool, &svc, &others) {
            Ok(ip) => vec![ip],
            Err(why) => {
                ctx.events.warning(
                    reference(svc.as_ref()),
                    "AllocationFailed",
                    "EnsureLoadBalancer",
                    why,
                );
                return Ok(Action::RequeueAfter(std::time::Duration::from_secs(30)));
            }
        }
    } else {
        nodes.wait_until_ready().await;
        node_addresses(&nodes.state())
    };
    if have == want {
        return Ok(Action::Done);
    }
    let ingress: Vec<serde_json::Value> = want
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    api.patch_status(
        &key.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
    )
    .await?;
    if lb {
        ctx.events.normal(
            reference(svc.as_ref()),
            "EnsuredLoadBalancer",
            "EnsureLoadBalancer",
            format!("Ensured load balancer at {}", want.join(", ")),
        );
    }
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(lb_ip: Option<&str>, have: Option<&str>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": lb_ip},
            "status": {"loadBalancer": {"ingress": have.map(|ip| vec![json!({"ip": ip})]).unwrap_or_default()}},
        }))
        .unwrap()
    }

    #[test]
    fn pool_addresses_are_kept_requested_or_the_first_free() {
        let pool: Cidr = "192.0.2.0/30".parse().unwrap();
        let none = BTreeSet::new();
        assert_eq!(
            pool_address(pool, &svc(None, None), &none).unwrap(),
            "192.0.2.1"
        );
        let used: BTreeSet<String> = ["192.0.2.1".to_string()].into();
        assert_eq!(
            pool_address(pool, &svc(None, None), &used).unwrap(),
            "192.0.2.2"
        );
        assert_eq!(
            pool_address(pool, &svc(None, Some("192.0.2.3")), &used).unwrap(),
            "192.0.2.3",
            "a service keeps its address"
        );
        assert_eq!(
            pool_address(pool, &svc(Some("192.0.2.3"), None), &used).unwrap(),
            "192.0.2.3"
        );
        let err = pool_address(pool, &svc(Some("192.0.2.1"), None), &used).unwrap_err();
        assert!(err.contains("already in use"), "{err}");
        let err = pool_address(pool, &svc(Some("10.0.0.1"), None), &used).unwrap_err();
        assert!(err.contains("not in the pool"), "{err}");
        let full: BTreeSet<String> = (1..3).map(|i| format!("192.0.2.{i}")).collect();
        let err = pool_address(pool, &svc(None, None), &full).unwrap_err();
        assert!(err.contains("no address"), "{err}");
    }
}
