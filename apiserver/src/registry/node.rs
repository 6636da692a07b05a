//! Nodes: cluster-scoped, status written by the kubelet.

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use super::{col, s, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

/// The nodes resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    categories: &[],
    namespaced: false,
    subresources: &[
        ("status", &super::subresource::STATUS),
        ("proxy", &super::subresource::NODE_PROXY),
    ],
    selectable: &["spec.unschedulable"],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<Node>,
};

static STRATEGY: Typed<Node> = Typed {
    status: true,
    validate,
    validate_update,
    ..Typed::new(columns, cells)
};

fn validate(node: &Node) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Some(spec) = &node.spec {
        for (n, t) in spec.taints.iter().flatten().enumerate() {
            let f = format!("spec.taints[{n}]");
            v::qualified_name(&format!("{f}.key"), &t.key, &mut out);
            v::one_of(
                &format!("{f}.effect"),
                Some(t.effect.as_str()),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                &mut out,
            );
        }
        if let Some(cidr) = &spec.pod_cidr {
            if cidr.parse::<ipnet::IpNet>().is_err() {
                out.push(Cause::invalid(
                    "spec.podCIDR",
                    &json!(cidr),
                    "must be a valid CIDR",
                ));
            }
        }
    }
    if let Some(status) = &node.status {
        v::quantities("status.capacity", status.capacity.as_ref(), &mut out);
        v::quantities("status.allocatable", status.allocatable.as_ref(), &mut out);
    }
    out
}

fn validate_update(new: &Node, old: &Node) -> Vec<Cause> {
    let mut out = Vec::new();
    let old_cidr = old.spec.as_ref().and_then(|s| s.pod_cidr.clone());
    let new_cidr = new.spec.as_ref().and_then(|s| s.pod_cidr.clone());
    if old_cidr.is_some() && new_cidr != old_cidr {
        out.push(Cause::forbidden(
            "spec.podCIDR",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    out
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Status", "string", 0, "The status of the node"),
        col("Roles", "string", 0, "The roles of the node"),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("Version", "string", 0, "Kubelet Version reported by the node."),
        col("Internal-IP", "string", 1, "List of internal IPs."),
        col("External-IP", "string", 1, "List of external IPs."),
        col("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
        col("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        col("Container-Runtime", "string", 1, "Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
    ]
}

/// The node's STATUS column (`Ready`, `NotReady,SchedulingDisabled`, ...).
pub fn node_status(node: &Value) -> String {
    let mut parts = Vec::new();
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| s(c, "/status"));
    parts.push(match ready.as_deref() {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    });
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        parts.push("SchedulingDisabled");
    }
    parts.join(",")
}

fn cells(node: &Value) -> Vec<Value> {
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let addr = |t: &str| {
        let list: Vec<String> = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|x| x["type"] == t)
                    .map(|x| s(x, "/address"))
                    .collect()
            })
            .unwrap_or_default();
        if list.is_empty() {
            "<none>".to_string()
        } else {
            list.join(",")
        }
    };
    let info = |k: &str| {
        let x = s(node, &format!("/status/nodeInfo/{k}"));
        if x.is_empty() {
            "<unknown>".to_string()
        } else {
            x
        }
    };
    vec![
        super::name(node),
        json!(node_status(node)),
        json!(roles),
        super::age(node),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}
