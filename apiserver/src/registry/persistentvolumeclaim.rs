//! PersistentVolumeClaims: a namespace's requests for storage, with a `status` subresource the
//! volume controllers write. Defaults, validation and messages follow Kubernetes'
//! `pkg/apis/core` (v1 defaults, `ValidatePersistentVolumeClaim` and its update rules), the
//! columns kube-apiserver's printers.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{json, Value};
use skiff_rules::Quantity;

use super::persistentvolume::{
    access_modes, access_modes_text, class_name, class_of, or_unset, phase_text, positive_quantity,
    quantity_text, volume_mode, BETA_STORAGE_CLASS,
};
use super::{col, s, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

/// The persistentvolumeclaims resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "PersistentVolumeClaim",
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    short_names: &["pvc"],
    categories: &[],
    namespaced: true,
    subresources: &[("status", &super::subresource::STATUS)],
    // kube's claims answer the legacy `name` field besides the object meta ones.
    selectable: &["name"],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<PersistentVolumeClaim>,
};

static STRATEGY: Typed<PersistentVolumeClaim> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    prepare_create: super::clear_status,
    field,
    ..Typed::new(columns, cells)
};

/// kube's v1 defaults: a claim asks for a filesystem, and starts Pending.
pub(super) fn defaults(pvc: &mut PersistentVolumeClaim) {
    let spec = pvc.spec.get_or_insert_with(Default::default);
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    let status = pvc.status.get_or_insert_with(Default::default);
    if status.phase.as_deref().unwrap_or("").is_empty() {
        status.phase = Some("Pending".into());
    }
}

fn field(obj: &Value, f: &str) -> Option<String> {
    (f == "name").then(|| s(obj, "/metadata/name"))
}

/// The storage a claim requests, if it parses.
fn requested(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    let q = pvc
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Quantity::try_from(q).ok()
}

pub(super) fn validate(pvc: &PersistentVolumeClaim) -> Vec<Cause> {
    let mut out = Vec::new();
    let empty = Default::default();
    let spec = pvc.spec.as_ref().unwrap_or(&empty);
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    if modes.is_empty() {
        out.push(Cause::required_because(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    if let Some(sel) = &spec.selector {
        v::label_selector("spec.selector", sel, &mut out);
    }
    access_modes("spec.accessModes", modes, &mut out);
    match spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    {
        None => out.push(Cause::required("spec.resources[storage]")),
        Some(q) => positive_quantity("spec.resources[storage]", q, &mut out),
    }
    if let Some(c) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        class_name("spec.storageClassName", c, &mut out);
    }
    volume_mode("spec.volumeMode", spec.volume_mode.as_deref(), &mut out);
    for (f, kind, name, group) in [
        spec.data_source
            .as_ref()
            .map(|d| ("spec.dataSource", &d.kind, &d.name, &d.api_group)),
        spec.data_source_ref
            .as_ref()
            .map(|d| ("spec.dataSourceRef", &d.kind, &d.name, &d.api_group)),
    ]
    .into_iter()
    .flatten()
    {
        if name.is_empty() {
            out.push(Cause::required(format!("{f}.name")));
        }
        if kind.is_empty() {
            out.push(Cause::required(format!("{f}.kind")));
        }
        let group = group.as_deref().unwrap_or("");
        if group.is_empty() && kind != "PersistentVolumeClaim" {
            out.push(Cause::invalid(
                f,
                &json!(kind),
                "must be 'PersistentVolumeClaim' when referencing the default apiGroup",
            ));
        }
    }
    if let Some(vac) = spec
        .volume_attributes_class_name
        .as_deref()
        .filter(|c| !c.is_empty())
    {
        class_name("spec.volumeAttributesClassName", vac, &mut out);
    }
    out
}

/// A claim's spec is fixed once created, but for the volume it binds to (set once), a class
/// given to a claim that had none, its volume attributes class and, once bound, a bigger
/// storage request.
fn validate_update(new: &PersistentVolumeClaim, old: &PersistentVolumeClaim) -> Vec<Cause> {
    let mut out = Vec::new();
    let mut n = new.spec.clone().unwrap_or_default();
    let mut o = old.spec.clone().unwrap_or_default();
    if o.volume_name.as_deref().unwrap_or("").is_empty() {
        o.volume_name = n.volume_name.clone();
    }
    let old_beta = old
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BETA_STORAGE_CLASS));
    let new_beta = new
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BETA_STORAGE_CLASS));
    if old_beta != new_beta {
        let new_value = new_beta.map(String::as_str).unwrap_or("");
        out.push(Cause::invalid(
            format!("metadata.annotations[{BETA_STORAGE_CLASS}]"),
            &json!(new_value),
            "field is immutable",
        ));
    }
    // A claim that has no class may be given one (the default class, retroactively).
    if o.storage_class_name.is_none() && old_beta.is_none() {
        o.storage_class_name = n.storage_class_name.clone();
    }
    let bound = new.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if bound {
        let old_storage = o
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned();
        if let Some(reqs) = n.resources.as_mut().and_then(|r| r.requests.as_mut()) {
            match old_storage {
                Some(q) => reqs.insert("storage".into(), q),
                None => reqs.remove("storage"),
            };
        }
    }
    n.volume_attributes_class_name = o.volume_attributes_class_name.clone();
    if n != o {
        out.push(Cause::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    if let (Some(nq), Some(oq)) = (requested(new), requested(old)) {
        if nq < oq {
            out.push(Cause::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            ));
        }
    }
    let nm = new.spec.as_ref().and_then(|s| s.volume_mode.as_ref());
    let om = old.spec.as_ref().and_then(|s| s.volume_mode.as_ref());
    if nm != om {
        out.push(Cause::immutable("volumeMode"));
    }
    out
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"),
        col("Status", "string", 0, "phase represents the current phase of PersistentVolumeClaim."),
        col("Volume", "string", 0, "volumeName is the binding reference to the PersistentVolume backing this claim."),
        col("Capacity", "string", 0, "capacity represents the actual resources of the underlying volume."),
        col("Access Modes", "string", 0, "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1"),
        col("StorageClass", "string", 0, "StorageClass of the pvc"),
        col("VolumeAttributesClass", "string", 0, "VolumeAttributesClass of the pvc"),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"),
        col("VolumeMode", "string", 1, "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec."),
    ]
}

fn cells(obj: &Value) -> Vec<Value> {
    let volume = s(obj, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity_text(obj.pointer("/status/capacity/storage")),
            access_modes_text(obj.pointer("/status/accessModes")),
        )
    };
    vec![
        super::name(obj),
        json!(phase_text(obj)),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(class_of(obj)),
        json!(or_unset(obj, "/spec/volumeAttributesClassName")),
        super::age(obj),
        json!(or_unset(obj, "/spec/volumeMode")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(c: Vec<Cause>) -> Vec<String> {
        c.iter().map(Cause::text).collect()
    }

    fn pvc(v: Value) -> PersistentVolumeClaim {
        let mut p: PersistentVolumeClaim = serde_json::from_value(v).unwrap();
        defaults(&mut p);
        p
    }

    fn claim(size: &str) -> PersistentVolumeClaim {
        pvc(
            json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}}}}),
        )
    }

    #[test]
    fn claims_default_and_validate() {
        let c = claim("1Gi");
        assert_eq!(
            c.spec.as_ref().unwrap().volume_mode.as_deref(),
            Some("Filesystem")
        );
        assert_eq!(c.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
        assert!(validate(&c).is_empty());
        let c = pvc(
            json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "Fast",
            "volumeMode": "Raw"}}),
        );
        let e = texts(validate(&c));
        assert_eq!(
            e[..2],
            [
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value",
            ]
        );
        assert!(e[2].starts_with("spec.storageClassName: Invalid value: \"Fast\""));
        assert_eq!(
            e[3],
            "spec.volumeMode: Unsupported value: \"Raw\": supported values: \"Block\", \"Filesystem\""
        );
        assert_eq!(
            texts(validate(&claim("-1Gi"))),
            vec!["spec.resources[storage]: Invalid value: \"-1Gi\": must be greater than zero"]
        );
    }

    #[test]
    fn claims_grow_only_once_bound() {
        let old = claim("1Gi");
        let new = claim("2Gi");
        assert_eq!(
            texts(validate_update(&new, &old)),
            vec!["spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"]
        );
        let mut old = old;
        old.status.as_mut().unwrap().phase = Some("Bound".into());
        let mut new = new;
        new.status = old.status.clone();
        assert!(validate_update(&new, &old).is_empty());
        let mut small = claim("512Mi");
        small.status = old.status.clone();
        assert_eq!(
            texts(validate_update(&small, &old)),
            vec!["spec.resources.requests.storage: Forbidden: field can not be less than previous value"]
        );
        // The binder sets the volume once, and a class on a claim that had none.
        let mut bound = claim("1Gi");
        bound.spec.as_mut().unwrap().volume_name = Some("pv1".into());
        bound.spec.as_mut().unwrap().storage_class_name = Some("fast".into());
        assert!(validate_update(&bound, &claim("1Gi")).is_empty());
        let mut again = bound.clone();
        again.spec.as_mut().unwrap().volume_name = Some("pv2".into());
        assert_eq!(validate_update(&again, &bound).len(), 1);
    }

    #[test]
    fn claim_cells_show_the_bound_volume() {
        let c = cells(
            &json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv1",
            "storageClassName": "fast"}, "status": {"phase": "Bound",
            "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOncePod"]}}),
        );
        assert_eq!(
            c[1..7],
            [
                json!("Bound"),
                json!("pv1"),
                json!("2Gi"),
                json!("RWOP"),
                json!("fast"),
                json!("<unset>")
            ]
        );
        let c = cells(&json!({"metadata": {"name": "data",
            "deletionTimestamp": "2025-01-01T00:00:00Z"}, "spec": {}, "status": {"phase": "Pending"}}));
        assert_eq!(
            c[1..5],
            [json!("Terminating"), json!(""), json!(""), json!("")]
        );
    }
}
