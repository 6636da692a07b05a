//! Services: defaults, validation, and their ClusterIPs and NodePorts, allocated in the same
//! etcd transaction as the service (see [`allocator`]).

pub mod allocator;

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::{
    clear_status, col, map_text, s, Builtin, Column, ResourceInfo, Shared, Typed, WithAllocator,
};
use crate::error::Cause;
use crate::validation as v;

/// The services resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    short_names: &["svc"],
    categories: &["all"],
    namespaced: true,
    subresources: &[
        ("status", &super::subresource::STATUS),
        ("proxy", &super::subresource::SERVICE_PROXY),
    ],
    selectable: &["spec.clusterIP", "spec.type"],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<Service>,
};

static STRATEGY: Typed<Service> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    prepare_create: clear_status,
    prepare_update: drop_type_dependent_fields,
    name_rule: super::NameRule::Dns1035,
    ..Typed::new(columns, cells)
};

/// The services resource, allocating ClusterIPs and NodePorts from `ranges`.
pub fn info(ranges: allocator::Ranges) -> ResourceInfo {
    let mut info = ResourceInfo::from(&INFO);
    info.strategy = Shared::Owned(std::sync::Arc::new(WithAllocator {
        base: Shared::Static(&STRATEGY),
        allocator: std::sync::Arc::new(allocator::ServiceAllocator(ranges)),
    }));
    info
}

fn needs_node_ports(ty: Option<&str>) -> bool {
    matches!(ty, Some("NodePort" | "LoadBalancer"))
}

/// As Kubernetes does on update: a Service changed to a type that has no node ports (or no
/// load balancer) loses the node ports (health-check node port, load-balancer fields) it
/// kept unchanged from the old type, so that `type: ClusterIP` alone is a valid change.
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let old_ty = old.pointer("/spec/type").and_then(Value::as_str);
    let new_ty = new
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let new_ty = new_ty.as_deref().or(Some("ClusterIP"));
    if needs_node_ports(old_ty) && !needs_node_ports(new_ty) {
        let old_ports: Vec<Value> = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports {
                let np = p.get("nodePort").cloned();
                let unchanged = old_ports.iter().any(|o| {
                    o.get("port") == p.get("port")
                        && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            == p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                        && o.get("nodePort") == np.as_ref()
                });
                if unchanged {
                    if let Some(m) = p.as_object_mut() {
                        m.remove("nodePort");
                    }
                }
            }
        }
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            for f in ["healthCheckNodePort", "externalTrafficPolicy"] {
                let kept = old.pointer(&format!("/spec/{f}"));
                if kept.is_some() && spec.get(f) == kept {
                    spec.remove(f);
                }
            }
        }
    }
    if old_ty == Some("LoadBalancer") && new_ty != Some("LoadBalancer") {
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            for f in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
                if old.pointer(&format!("/spec/{f}")) == spec.get(f) {
                    spec.remove(f);
                }
            }
        }
    }
}

fn defaults(svc: &mut Service) {
    let Some(spec) = svc.spec.as_mut() else {
        return;
    };
    let ty = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        // As Kubernetes: 0 and "" (what typed clients send for an unset field) mean unset.
        let unset = match &p.target_port {
            None | Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(t)) => t.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if ty == "ExternalName" {
        return;
    }
    spec.session_affinity.get_or_insert_with(|| "None".into());
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let cfg = spec
            .session_affinity_config
            .get_or_insert_with(Default::default);
        let cip = cfg.client_ip.get_or_insert_with(Default::default);
        cip.timeout_seconds.get_or_insert(10800);
    }
    spec.internal_traffic_policy
        .get_or_insert_with(|| "Cluster".into());
    if ty == "NodePort" || ty == "LoadBalancer" {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
    spec.ip_family_policy
        .get_or_insert_with(|| "SingleStack".into());
}

fn validate(svc: &Service) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(spec) = &svc.spec else {
        out.push(Cause::required("spec"));
        return out;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    v::one_of(
        "spec.type",
        Some(ty),
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        &mut out,
    );
    v::one_of(
        "spec.sessionAffinity",
        spec.session_affinity.as_deref(),
        &["ClientIP", "None"],
        &mut out,
    );
    v::one_of(
        "spec.externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
        &["Cluster", "Local"],
        &mut out,
    );
    v::one_of(
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
        &["Cluster", "Local"],
        &mut out,
    );
    if ty == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => out.push(Cause::required("spec.externalName")),
            Some(n) => v::subdomain("spec.externalName", n.trim_end_matches('.'), &mut out),
        }
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() && ty != "ExternalName" && !headless {
        out.push(Cause::required("spec.ports"));
    }
    if headless && (ty == "NodePort" || ty == "LoadBalancer") {
        out.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &json!("None"),
            format!("may not be set to 'None' for {ty} services"),
        ));
    }
    if let Some(ip) = spec.cluster_ip.as_deref() {
        if !ip.is_empty() && ip != "None" && ip.parse::<std::net::IpAddr>().is_err() {
            out.push(Cause::invalid(
                "spec.clusterIPs[0]",
                &json!(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (n, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{n}]");
        match p.name.as_deref() {
            None | Some("") if ports.len() > 1 => out.push(Cause::required(format!("{f}.name"))),
            None | Some("") => {}
            Some(name) => {
                v::label_name(&format!("{f}.name"), name, &mut out);
                if !names.insert(name.to_string()) {
                    out.push(Cause::duplicate(format!("{f}.name"), &json!(name)));
                }
            }
        }
        v::port(&format!("{f}.port"), p.port, &mut out);
        v::protocol(&format!("{f}.protocol"), p.protocol.as_deref(), &mut out);
        if !seen.insert((p.port, p.protocol.clone())) {
            out.push(Cause::duplicate(
                f.clone(),
                &json!({"port": p.port, "protocol": p.protocol}),
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) => v::port(&format!("{f}.targetPort"), *t, &mut out),
            Some(IntOrString::String(t))
                if t.is_empty() || t.len() > 15 || !v::is_dns1123_label(t) =>
            {
                out.push(Cause::invalid(
                    format!("{f}.targetPort"),
                    &json!(t),
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                ));
            }
            Some(IntOrString::String(_)) => {}
            None => {}
        }
        if let Some(np) = p.node_port {
            if np != 0 && ty != "NodePort" && ty != "LoadBalancer" {
                out.push(Cause::forbidden(
                    format!("{f}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    if let Some(sel) = &spec.selector {
        v::labels("spec.selector", Some(sel), &mut out);
    }
    out
}

fn validate_update(new: &Service, old: &Service) -> Vec<Cause> {
    let mut out = Vec::new();
    let (Some(ns), Some(os)) = (&new.spec, &old.spec) else {
        return out;
    };
    let old_ip = os.cluster_ip.clone().unwrap_or_default();
    let new_ip = ns.cluster_ip.clone().unwrap_or_default();
    let to_external = ns.type_.as_deref() == Some("ExternalName");
    if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip && !to_external {
        out.push(Cause::immutable("spec.clusterIPs[0]"));
    }
    out
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Type", "string", 0, "type determines how the Service is exposed."),
        col("Cluster-IP", "string", 0, "clusterIP is the IP address of the service."),
        col("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
        col("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
    ]
}

fn cells(svc: &Value) -> Vec<Value> {
    let ty = s(svc, "/spec/type");
    let mut ext: Vec<String> = svc
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|i| {
                    let ip = s(i, "/ip");
                    if ip.is_empty() {
                        s(i, "/hostname")
                    } else {
                        ip
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(ips) = svc.pointer("/spec/externalIPs").and_then(Value::as_array) {
        ext.extend(ips.iter().filter_map(|x| x.as_str().map(String::from)));
    }
    let external = match ty.as_str() {
        "ExternalName" => s(svc, "/spec/externalName"),
        "LoadBalancer" if ext.is_empty() => "<pending>".into(),
        _ if ext.is_empty() => "<none>".into(),
        _ => ext.join(","),
    };
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let np = super::i(p, "/nodePort");
                    let proto = s(p, "/protocol");
                    if np > 0 {
                        format!("{}:{np}/{proto}", super::i(p, "/port"))
                    } else {
                        format!("{}/{proto}", super::i(p, "/port"))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let cip = s(svc, "/spec/clusterIP");
    vec![
        super::name(svc),
        json!(ty),
        json!(if cip.is_empty() {
            "<none>".to_string()
        } else {
            cip
        }),
        json!(external),
        json!(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }),
        super::age(svc),
        json!(map_text(svc.pointer("/spec/selector"))),
    ]
}
