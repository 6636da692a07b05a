//! Host-gateway pod routes: every other node's `spec.podCIDR` is routed to that node's
//! InternalIP, so pods on different nodes reach each other directly, by their own addresses.
//! The routes carry their own protocol number, so the proxy finds and removes those it made
//! when a node goes or changes, and never touches anyone else's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use skiff_client::informer::Informer;
use skiff_client::{watcher, Api, Client};
use skiff_rules::Backoff;
use tokio_util::sync::CancellationToken;

/// The routing protocol number Skiff's routes carry (`ip route show proto 83`).
pub const ROUTE_PROTO: u8 = 83;

/// Routes that could not be written are tried again this long after (unless nodes change).
const RETRY: Backoff = Backoff::constant(std::time::Duration::from_secs(10));

/// The routes node `me` needs: pod CIDR → the node that holds it.
pub fn wanted(nodes: &[Arc<Node>], me: &str) -> BTreeMap<String, Ipv4Addr> {
    let mut routes = BTreeMap::new();
    for n in nodes {
        if n.metadata.name.as_deref() == Some(me) {
            continue;
        }
        let Some(cidr) = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) else {
            continue;
        };
        if !cidr.contains('.') {
            continue; // IPv4 only
        }
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .and_then(|a| a.address.parse::<Ipv4Addr>().ok());
        if let Some(ip) = ip {
            routes.insert(cidr.to_string(), ip);
        }
    }
    routes
}

/// Skiff's routes in the current network namespace.
pub fn current() -> std::io::Result<BTreeMap<String, Ipv4Addr>> {
    let out = ip(&["-j", "route", "show", "proto", &ROUTE_PROTO.to_string()])?;
    let list: Vec<serde_json::Value> =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
            .map_err(std::io::Error::other)?;
    Ok(list
        .iter()
        .filter_map(|r| {
            let dst = r.get("dst")?.as_str()?;
            let via = r.get("gateway")?.as_str()?.parse().ok()?;
            Some((dst.to_string(), via))
        })
        .collect())
}

fn ip(args: &[&str]) -> std::io::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes Skiff's routes exactly `wanted`; the first error is returned after trying every
/// route.
pub fn apply(wanted: &BTreeMap<String, Ipv4Addr>) -> std::io::Result<()> {
    let have = current()?;
    let proto = ROUTE_PROTO.to_string();
    let mut first = None;
    for (dst, via) in &have {
        if wanted.get(dst) != Some(via) {
            if let Err(e) = ip(&["route", "del", dst, "proto", &proto]) {
                first.get_or_insert(e);
            }
        }
    }
    for (dst, via) in wanted {
        if have.get(dst) != Some(via) {
            let via = via.to_string();
            if let Err(e) = ip(&["route", "replace", dst, "via", &via, "proto", &proto]) {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Keeps the routes in step with the Nodes until `shutdown`.
pub async fn run(client: Client, me: String, shutdown: CancellationToken) {
    let nodes = Informer::spawn(
        Api::<Node>::all(client),
        watcher::Config::default().strip_managed_fields(),
        Default::default(),
        shutdown.clone(),
    );
    let mut changes = nodes.subscribe().boxed();
    nodes.store().wait_until_ready().await;
    let mut applied = None;
    loop {
        let want = wanted(&nodes.store().state(), &me);
        if applied.as_ref() != Some(&want) {
            match tokio::task::block_in_place(|| apply(&want)) {
                Ok(()) => {
                    tracing::info!(routes = want.len(), "pod routes in place");
                    applied = Some(want);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pod routes");
                    applied = None;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            c = changes.next() => if c.is_none() { return },
            _ = tokio::time::sleep(RETRY.delay(0)), if applied.is_none() => {}
        }
    }
}
