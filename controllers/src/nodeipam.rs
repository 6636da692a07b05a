//! Node IPAM: with `--allocate-node-cidrs`, every node without a pod CIDR gets the first free
//! `/--node-cidr-mask-size` subnet of `--cluster-cidr` in `spec.podCIDR`/`podCIDRs` (the
//! kubelet then writes its CNI configuration for it). Subnets of deleted nodes are free again.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use parking_lot::Mutex;
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid IPv4 CIDR {s:?} (e.g. 10.244.0.0/16)");
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in it.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == self.base
    }

    /// Its `n`th address, if it has that many.
    pub fn address(&self, n: u32) -> Option<Ipv4Addr> {
        self.subnet(32, n).map(|c| Ipv4Addr::from(c.base))
    }

    /// The `n`th subnet of length `len`, if there is one.
    pub fn subnet(&self, len: u8, n: u32) -> Option<Cidr> {
        if len < self.prefix || len > 32 {
            return None;
        }
        let bits = u32::from(len - self.prefix);
        if bits < 32 && n >= 1u32 << bits {
            return None;
        }
        let step = if len == 32 { 1 } else { 1u32 << (32 - len) };
        Some(Cidr {
            base: self.base.checked_add(n.checked_mul(step)?)?,
            prefix: len,
        })
    }
}

/// The allocator's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster's pod network.
    pub cluster_cidr: Cidr,
    /// The size of each node's share.
    pub mask: u8,
}

/// Runs the allocator until `shutdown`.
pub async fn run(ctx: Arc<Context>, config: Config, shutdown: CancellationToken) {
    let nodes = ctx.informers.informer::<Node>();
    // One worker: two nodes must never be handed the same subnet.
    let ctrl = Controller::new(
        nodes.clone(),
        RunConfig {
            concurrency: 1,
            ..RunConfig::default()
        },
    );
    let store = nodes.store();
    let given = Arc::new(Mutex::new(HashSet::new()));
    ctrl.run(
        move |key, node| {
            let (ctx, store, config, given) =
                (ctx.clone(), store.clone(), config.clone(), given.clone());
            async move { allocate(&ctx, &store, &config, &given, key, node).await }
        },
        shutdown,
    )
    .await;
}

async fn allocate(
    ctx: &Context,
    store: &Store<Node>,
    config: &Config,
    given: &Mutex<HashSet<(String, Cidr)>>,
    key: ObjectKey,
    node: Option<Arc<Node>>,
) -> Result<Action, skiff_client::Error> {
    let Some(node) = node else {
        given.lock().retain(|(n, _)| *n != key.name);
        return Ok(Action::Done);
    };
    let has = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty());
    if has || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let mut used: HashSet<Cidr> = store
        .state()
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok())
        .collect();
    {
        let names: HashSet<String> = store
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let mut g = given.lock();
        g.retain(|(n, _)| names.contains(n));
        used.extend(g.iter().map(|(_, c)| *c));
    }
    let free = (0u32..)
        .map_while(|i| config.cluster_cidr.subnet(config.mask, i))
        .find(|c| !used.contains(c));
    let Some(cidr) = free else {
        ctx.events.warning(
            reference(node.as_ref()),
            "CIDRNotAvailable",
            "Allocate",
            format!("Node {} status is now: CIDRNotAvailable", key.name),
        );
        return Ok(Action::RequeueAfter(std::time::Duration::from_secs(30)));
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let c = cidr.to_string();
    api.patch(
        &key.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"podCIDR": c, "podCIDRs": [c]}})),
    )
    .await?;
    given.lock().insert((key.name.clone(), cidr));
    ctx.events.normal(
        reference(node.as_ref()),
        "CIDRAssignmentSucceeded",
        "Allocate",
        format!("Node {} was assigned pod CIDR {c}", key.name),
    );
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_of_the_cluster_cidr() {
        let c: Cidr = "10.244.0.0/16".parse().unwrap();
        assert_eq!(c.subnet(24, 0).unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(c.subnet(24, 255).unwrap().to_string(), "10.244.255.0/24");
        assert_eq!(c.subnet(24, 256), None);
        assert_eq!(c.subnet(8, 0), None);
        assert_eq!(
            "10.244.7.9/16".parse::<Cidr>().unwrap().to_string(),
            "10.244.0.0/16"
        );
        assert!("10.244.0.0"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("10.244.0.0"));
        assert!("10.244.0.0/40".parse::<Cidr>().is_err());
    }
}
