//! ConfigMaps, Secrets and ServiceAccounts: small keyed data objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::ByteString;
use serde_json::{json, Value};

use super::{col, s, Builtin, Column, Typed};
use crate::error::Cause;

const AGE: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";
const NAME: &str = "Name must be unique within a namespace.";

/// The configmaps resource.
pub static CONFIGMAPS: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    short_names: &["cm"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &CM,
    schema: super::schema_of::<ConfigMap>,
};

/// The secrets resource.
pub static SECRETS: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &["type"],
    has_generation: false,
    strategy: &SECRET,
    schema: super::schema_of::<Secret>,
};

/// The serviceaccounts resource.
pub static SERVICEACCOUNTS: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    short_names: &["sa"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &SA,
    schema: super::schema_of::<ServiceAccount>,
};

static CM: Typed<ConfigMap> = Typed {
    validate: validate_cm,
    validate_update: validate_cm_update,
    ..Typed::new(cm_columns, cm_cells)
};

static SECRET: Typed<Secret> = Typed {
    defaults: secret_defaults,
    validate: validate_secret,
    validate_update: validate_secret_update,
    ..Typed::new(secret_columns, secret_cells)
};

static SA: Typed<ServiceAccount> = Typed {
    ..Typed::new(sa_columns, sa_cells)
};

fn data_key(field: &str, key: &str, out: &mut Vec<Cause>) {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && !key.starts_with("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        out.push(Cause::invalid(
            field,
            &json!(key),
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        ));
    }
}

fn validate_cm(cm: &ConfigMap) -> Vec<Cause> {
    let mut out = Vec::new();
    let mut total = 0;
    for (k, v) in cm.data.iter().flatten() {
        data_key("data", k, &mut out);
        total += v.len();
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        data_key("binaryData", k, &mut out);
        if cm.data.as_ref().is_some_and(|d| d.contains_key(k)) {
            out.push(Cause::invalid(
                "data",
                &json!(k),
                "duplicate of key present in binaryData",
            ));
        }
        total += v.0.len();
    }
    if total > 1024 * 1024 {
        out.push(Cause::too_long("", 1024 * 1024));
    }
    out
}

fn validate_cm_update(new: &ConfigMap, old: &ConfigMap) -> Vec<Cause> {
    let mut out = Vec::new();
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            out.push(Cause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        if new.data != old.data || new.binary_data != old.binary_data {
            out.push(Cause::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
    }
    out
}

fn secret_defaults(sec: &mut Secret) {
    sec.type_.get_or_insert_with(|| "Opaque".into());
    // stringData is write-only: it merges into data and is never stored.
    if let Some(sd) = sec.string_data.take() {
        let data = sec.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in sd {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
}

fn validate_secret(sec: &Secret) -> Vec<Cause> {
    let mut out = Vec::new();
    let mut total = 0;
    for (k, v) in sec.data.iter().flatten() {
        data_key(&format!("data[{k}]"), k, &mut out);
        total += v.0.len();
    }
    if total > 1024 * 1024 {
        out.push(Cause::too_long("data", 1024 * 1024));
    }
    if sec.type_.as_deref() == Some("kubernetes.io/tls") {
        for k in ["tls.crt", "tls.key"] {
            if !sec.data.as_ref().is_some_and(|d| d.contains_key(k)) {
                out.push(Cause::required(format!("data[{k}]")));
            }
        }
    }
    out
}

fn validate_secret_update(new: &Secret, old: &Secret) -> Vec<Cause> {
    let mut out = Vec::new();
    if new.type_ != old.type_ {
        out.push(Cause::immutable("type"));
    }
    if old.immutable == Some(true) && (new.data != old.data || new.immutable != Some(true)) {
        out.push(Cause::forbidden(
            "data",
            "field is immutable when `immutable` is set",
        ));
    }
    out
}

fn count(obj: &Value, ptr: &str) -> usize {
    obj.pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| m.len())
        .unwrap_or(0)
}

fn cm_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Data", "integer", 0, "Number of data entries"),
        col("Age", "string", 0, AGE),
    ]
}

fn cm_cells(cm: &Value) -> Vec<Value> {
    vec![
        super::name(cm),
        json!(count(cm, "/data") + count(cm, "/binaryData")),
        super::age(cm),
    ]
}

fn secret_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Type", "string", 0, "The type of the secret"),
        col("Data", "integer", 0, "The number of entries in the secret"),
        col("Age", "string", 0, AGE),
    ]
}

fn secret_cells(sec: &Value) -> Vec<Value> {
    vec![
        super::name(sec),
        json!(s(sec, "/type")),
        json!(count(sec, "/data")),
        super::age(sec),
    ]
}

fn sa_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Secrets", "string", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
        col("Age", "string", 0, AGE),
    ]
}

fn sa_cells(sa: &Value) -> Vec<Value> {
    let n = sa
        .pointer("/secrets")
        .and_then(Value::as_array)
        .map(|a| a.len())
        .unwrap_or(0);
    vec![super::name(sa), json!(n), super::age(sa)]
}
