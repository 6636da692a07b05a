//! Node lifecycle: a node whose kubelet stops renewing its Lease (and posting status) for
//! `--node-monitor-grace-period` becomes `Ready=Unknown` (`NodeStatusUnknown`), its pods not
//! ready, and gets the `node.kubernetes.io/unreachable` taints (`NoSchedule` and
//! `NoExecute`); a node reporting `Ready=False` gets the `not-ready` ones. Pods on a node with
//! `NoExecute` taints are evicted once their tolerations run out (at once when they tolerate
//! none, after `tolerationSeconds` — 300 s by default — when they do). A node that reports
//! again is cleared.
//!
//! Heartbeats are timed by this controller's own clock when it sees them change, so clock
//! skew between nodes and the control plane does not matter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use serde_json::json;
use skiff_client::events::reference;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, DeleteParams, Patch, PatchParams};
use skiff_rules::toleration;
use tokio_util::sync::CancellationToken;

use crate::Context;

/// The taint of a node that stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node that reports it is not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a node may go without a heartbeat (`--node-monitor-grace-period`).
    pub grace: Duration,
    /// How often nodes are checked (`--node-monitor-period`).
    pub period: Duration,
}

struct Seen {
    heartbeat: String,
    at: Instant,
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, config: Config, shutdown: CancellationToken) {
    let nodes = ctx.informers.informer::<Node>().store();
    let leases = ctx.owned::<Lease>().store();
    let pods = ctx.pods().store();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async {
            nodes.wait_until_ready().await;
            leases.wait_until_ready().await;
            pods.wait_until_ready().await;
        } => {}
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(config.period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = pass(&ctx, &config, &nodes, &leases, &pods, &mut seen).await {
            tracing::warn!(error = %e, "node lifecycle pass failed; next period retries");
        }
    }
}

fn heartbeat(node: &Node, leases: &Store<Lease>) -> String {
    let name = node.metadata.name.clone().unwrap_or_default();
    let lease = leases
        .get(&ObjectKey::new("kube-node-lease", &name))
        .and_then(|l| {
            l.spec
                .as_ref()?
                .renew_time
                .as_ref()
                .map(|t| t.0.to_string())
        });
    let status = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0.to_string()));
    format!(
        "{}|{}",
        lease.unwrap_or_default(),
        status.unwrap_or_default()
    )
}

fn ready_status(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".into())
}

async fn pass(
    ctx: &Context,
    config: &Config,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    pods: &Store<Pod>,
    seen: &mut HashMap<String, Seen>,
) -> Result<(), skiff_client::Error> {
    let now = Instant::now();
    let all = nodes.state();
    seen.retain(|n, _| {
        all.iter()
            .any(|x| x.metadata.name.as_deref() == Some(n.as_str()))
    });
    let api: Api<Node> = Api::all(ctx.client.clone());
    for node in &all {
        let name = node.metadata.name.clone().unwrap_or_default();
        let hb = heartbeat(node, leases);
        let s = seen.entry(name.clone()).or_insert_with(|| Seen {
            heartbeat: hb.clone(),
            at: now,
        });
        if s.heartbeat != hb {
            s.heartbeat = hb;
            s.at = now;
        }
        let stale = now.duration_since(s.at) > config.grace;
        let mut ready = ready_status(node);
        if stale && ready != "Unknown" {
            mark_unknown(ctx, &api, node).await?;
            ready = "Unknown".into();
            mark_pods_not_ready(ctx, pods, &name).await;
        }
        let wanted: Option<&str> = match ready.as_str() {
            "True" => None,
            "False" => Some(NOT_READY),
            _ => Some(UNREACHABLE),
        };
        set_taints(ctx, &api, node, wanted).await?;
    }
    evict(ctx, &all, pods).await;
    Ok(())
}

async fn mark_unknown(
    ctx: &Context,
    api: &Api<Node>,
    node: &Node,
) -> Result<(), skiff_client::Error> {
    let now = skiff_client::time::now_rfc3339();
    let conds: Vec<serde_json::Value> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let mut v = serde_json::to_value(&c).unwrap_or_default();
            if matches!(
                c.type_.as_str(),
                "Ready" | "MemoryPressure" | "DiskPressure" | "PIDPressure"
            ) {
                v["status"] = json!("Unknown");
                v["reason"] = json!("NodeStatusUnknown");
                v["message"] = json!("Kubelet stopped posting node status.");
                v["lastTransitionTime"] = json!(now);
            }
            v
        })
        .collect();
    let name = node.metadata.name.clone().unwrap_or_default();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": conds}})),
    )
    .await?;
    ctx.events.normal(
        reference(node),
        "NodeNotReady",
        "Monitor",
        format!("Node {name} status is now: NodeNotReady"),
    );
    Ok(())
}

async fn mark_pods_not_ready(ctx: &Context, pods: &Store<Pod>, node: &str) {
    for p in pods.state().iter().filter(|p| on_node(p, node)) {
        let Some(conds) = p.status.as_ref().and_then(|s| s.conditions.clone()) else {
            continue;
        };
        if !conds
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
        {
            continue;
        }
        let now = skiff_client::time::now_rfc3339();
        let conds: Vec<serde_json::Value> = conds
            .into_iter()
            .map(|c| {
                let mut v = serde_json::to_value(&c).unwrap_or_default();
                if c.type_ == "Ready" {
                    v["status"] = json!("False");
                    v["lastTransitionTime"] = json!(now);
                }
                v
            })
            .collect();
        let api: Api<Pod> = Api::namespaced(
            ctx.client.clone(),
            p.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let _ = api
            .patch_status(
                p.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conds}})),
            )
            .await;
    }
}

fn on_node(p: &Pod, node: &str) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// Makes the node carry `wanted`'s NoSchedule and NoExecute taints and no other of ours.
async fn set_taints(
    ctx: &Context,
    api: &Api<Node>,
    node: &Node,
    wanted: Option<&str>,
) -> Result<(), skiff_client::Error> {
    let cur = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ours = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
    let mut next: Vec<Taint> = cur.iter().filter(|t| !ours(t)).cloned().collect();
    if let Some(key) = wanted {
        for effect in ["NoSchedule", "NoExecute"] {
            let existing = cur
                .iter()
                .find(|t| t.key == key && t.effect == effect)
                .cloned();
            next.push(existing.unwrap_or_else(|| Taint {
                key: key.into(),
                effect: effect.into(),
                time_added: (effect == "NoExecute").then(skiff_client::time::now_time),
                value: None,
            }));
        }
    }
    let same = next.len() == cur.len() && next.iter().all(|t| cur.contains(t));
    if same {
        return Ok(());
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"taints": next}})),
    )
    .await?;
    if wanted.is_none() {
        ctx.events.normal(
            reference(node),
            "NodeReady",
            "Monitor",
            format!("Node {name} status is now: NodeReady"),
        );
    }
    Ok(())
}

/// How long `pod` may stay on a node with `taints` (NoExecute ones): `None` forever,
/// `Some(0)` not at all, else the shortest matching `tolerationSeconds`, counted from when
/// each taint was added.
fn allowed(pod: &Pod, taints: &[Taint], now: i64) -> Option<i64> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut left: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = toleration::matching(&tolerations, taint).collect();
        if matching.is_empty() {
            return Some(0);
        }
        if let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() {
            let added = taint
                .time_added
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(now);
            let l = (added + secs.max(0) - now).max(0);
            left = Some(left.map_or(l, |x| x.min(l)));
        }
    }
    left
}

async fn evict(ctx: &Context, nodes: &[Arc<Node>], pods: &Store<Pod>) {
    let now = skiff_client::time::now().as_second();
    let tainted: HashMap<String, Vec<Taint>> = nodes
        .iter()
        .filter_map(|n| {
            let t: Vec<Taint> = n
                .spec
                .as_ref()?
                .taints
                .clone()?
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .collect();
            (!t.is_empty()).then(|| (n.metadata.name.clone().unwrap_or_default(), t))
        })
        .collect();
    if tainted.is_empty() {
        return;
    }
    for p in pods.state() {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let Some(taints) = tainted.get(node) else {
            continue;
        };
        if allowed(&p, taints, now) != Some(0) {
            continue;
        }
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let dp = DeleteParams {
            precondition_uid: p.metadata.uid.clone(),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => ctx.events.normal(
                reference(p.as_ref()),
                "TaintManagerEviction",
                "Evict",
                format!("Marking for deletion Pod {ns}/{name}"),
            ),
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "evicting"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
            .unwrap()
    }

    fn taint(key: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(added).unwrap(),
            )),
            value: None,
        }
    }

    #[test]
    fn tolerations_decide_how_long_a_pod_stays() {
        let t = [taint(UNREACHABLE, 1000)];
        assert_eq!(allowed(&pod(json!([])), &t, 1000), Some(0));
        let default = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(allowed(&default, &t, 1100), Some(200));
        assert_eq!(allowed(&default, &t, 1400), Some(0));
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(allowed(&forever, &t, 5000), None);
        let other = pod(json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(allowed(&other, &t, 1000), Some(0));
        // An operator Kubernetes does not know tolerates nothing.
        let unknown =
            pod(json!([{"key": UNREACHABLE, "operator": "Bogus", "effect": "NoExecute"}]));
        assert_eq!(allowed(&unknown, &t, 1000), Some(0));
    }
}
