//! Endpoints (core/v1) and EndpointSlices (discovery.k8s.io/v1): where a Service's pods are.

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use super::{col, s, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

const AGE: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";

/// The endpoints resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    short_names: &["ep"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &EP,
    schema: super::schema_of::<Endpoints>,
};

/// The endpointslices resource.
pub static SLICES: Builtin = Builtin {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &["addressType"],
    has_generation: true,
    strategy: &SLICE,
    schema: super::schema_of::<EndpointSlice>,
};

static EP: Typed<Endpoints> = Typed {
    defaults: ep_defaults,
    validate: validate_ep,
    create_on_update: true,
    ..Typed::new(ep_columns, ep_cells)
};

static SLICE: Typed<EndpointSlice> = Typed {
    validate: validate_slice,
    create_on_update: true,
    ..Typed::new(slice_columns, slice_cells)
};

fn ep_defaults(ep: &mut Endpoints) {
    for sub in ep.subsets.iter_mut().flatten() {
        for p in sub.ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
        }
    }
}

fn validate_ep(ep: &Endpoints) -> Vec<Cause> {
    let mut out = Vec::new();
    for (n, sub) in ep.subsets.iter().flatten().enumerate() {
        for (m, a) in sub
            .addresses
            .iter()
            .flatten()
            .chain(sub.not_ready_addresses.iter().flatten())
            .enumerate()
        {
            if a.ip.parse::<std::net::IpAddr>().is_err() {
                out.push(Cause::invalid(
                    format!("subsets[{n}].addresses[{m}].ip"),
                    &json!(a.ip),
                    "must be a valid IP address",
                ));
            }
        }
        for (m, p) in sub.ports.iter().flatten().enumerate() {
            v::port(&format!("subsets[{n}].ports[{m}].port"), p.port, &mut out);
            v::protocol(
                &format!("subsets[{n}].ports[{m}].protocol"),
                p.protocol.as_deref(),
                &mut out,
            );
        }
    }
    out
}

fn validate_slice(sl: &EndpointSlice) -> Vec<Cause> {
    let mut out = Vec::new();
    v::one_of(
        "addressType",
        Some(sl.address_type.as_str()),
        &["IPv4", "IPv6", "FQDN"],
        &mut out,
    );
    for (n, e) in sl.endpoints.iter().enumerate() {
        if e.addresses.is_empty() {
            out.push(Cause::required(format!("endpoints[{n}].addresses")));
        }
        if sl.address_type != "FQDN" {
            for (m, a) in e.addresses.iter().enumerate() {
                if a.parse::<std::net::IpAddr>().is_err() {
                    out.push(Cause::invalid(
                        format!("endpoints[{n}].addresses[{m}]"),
                        &json!(a),
                        "must be a valid IP address",
                    ));
                }
            }
        }
    }
    for (n, p) in sl.ports.iter().flatten().enumerate() {
        if let Some(port) = p.port {
            v::port(&format!("ports[{n}].port"), port, &mut out);
        }
        v::protocol(
            &format!("ports[{n}].protocol"),
            p.protocol.as_deref(),
            &mut out,
        );
    }
    out
}

fn ep_columns() -> Vec<Column> {
    vec![
        col(
            "Name",
            "string",
            0,
            "Name must be unique within a namespace.",
        ),
        col("Endpoints", "string", 0, "Endpoints of the service"),
        col("Age", "string", 0, AGE),
    ]
}

/// Up to three `ip:port` pairs, then `+ N more...`, as kubectl prints them.
fn first_three(list: Vec<String>) -> String {
    if list.is_empty() {
        return "<none>".into();
    }
    let shown = list.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if list.len() > 3 {
        format!("{shown} + {} more...", list.len() - 3)
    } else {
        shown
    }
}

fn ep_cells(ep: &Value) -> Vec<Value> {
    let mut list = Vec::new();
    for sub in ep
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = sub
            .get("ports")
            .and_then(Value::as_array)
            .map(|p| p.iter().map(|p| super::i(p, "/port")).collect())
            .unwrap_or_default();
        for a in sub
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if ports.is_empty() {
                list.push(s(a, "/ip"));
            }
            for p in &ports {
                list.push(format!("{}:{p}", s(a, "/ip")));
            }
        }
    }
    vec![super::name(ep), json!(first_three(list)), super::age(ep)]
}

fn slice_columns() -> Vec<Column> {
    vec![
        col(
            "Name",
            "string",
            0,
            "Name must be unique within a namespace.",
        ),
        col(
            "AddressType",
            "string",
            0,
            "The type of addresses in this slice",
        ),
        col("Ports", "string", 0, "The ports of the slice"),
        col("Endpoints", "string", 0, "The addresses of the slice"),
        col("Age", "string", 0, AGE),
    ]
}

fn slice_cells(sl: &Value) -> Vec<Value> {
    let ports: Vec<String> = sl
        .get("ports")
        .and_then(Value::as_array)
        .map(|p| p.iter().map(|p| super::i(p, "/port").to_string()).collect())
        .unwrap_or_default();
    let addrs: Vec<String> = sl
        .get("endpoints")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|a| a.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    vec![
        super::name(sl),
        json!(s(sl, "/addressType")),
        json!(if ports.is_empty() {
            "<unset>".to_string()
        } else {
            ports.join(",")
        }),
        json!(first_three(addrs)),
        super::age(sl),
    ]
}
