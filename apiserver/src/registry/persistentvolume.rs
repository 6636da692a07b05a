//! PersistentVolumes: cluster-scoped pieces of storage, with a `status` subresource the
//! volume controllers write. Defaults, validation and messages follow Kubernetes'
//! `pkg/apis/core` (v1 defaults, `ValidatePersistentVolume`), the columns kube-apiserver's
//! printers. The rules PersistentVolumeClaims share (access modes, classes, quantities) live
//! here too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, VolumeNodeAffinity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use serde_json::{json, Value};
use skiff_rules::Quantity;

use super::{col, s, Builtin, Column, Typed};
use crate::error::{Cause, CauseKind};
use crate::validation as v;

/// The annotation naming the class before `storageClassName` existed.
pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// The persistentvolumes resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "PersistentVolume",
    plural: "persistentvolumes",
    singular: "persistentvolume",
    short_names: &["pv"],
    categories: &[],
    namespaced: false,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<PersistentVolume>,
};

static STRATEGY: Typed<PersistentVolume> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    prepare_create,
    ..Typed::new(columns, cells)
};

/// The access modes Kubernetes knows, in the order its messages list them.
pub const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
/// The volume modes Kubernetes knows.
pub const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// kube's v1 defaults: volumes are retained and hold a filesystem; a new volume is Pending.
fn defaults(pv: &mut PersistentVolume) {
    let spec = pv.spec.get_or_insert_with(Default::default);
    spec.persistent_volume_reclaim_policy
        .get_or_insert_with(|| "Retain".into());
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    let status = pv.status.get_or_insert_with(Default::default);
    if status.phase.as_deref().unwrap_or("").is_empty() {
        status.phase = Some("Pending".into());
    }
}

/// A new volume starts with no status but its phase and when it entered it.
fn prepare_create(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert(
            "status".into(),
            json!({"phase": "Pending", "lastPhaseTransitionTime": super::now()}),
        );
    }
}

/// Access modes: known ones, and `ReadWriteOncePod` alone.
pub fn access_modes(field: &str, modes: &[String], out: &mut Vec<Cause>) {
    let (mut pod, mut other) = (false, false);
    for m in modes {
        if !ACCESS_MODES.contains(&m.as_str()) {
            out.push(Cause::not_supported(field, m, ACCESS_MODES));
        } else if m == "ReadWriteOncePod" {
            pod = true;
        } else {
            other = true;
        }
    }
    if pod && other {
        out.push(Cause::forbidden(
            field,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// A storage class name (or volume attributes class name): a DNS-1123 subdomain.
pub fn class_name(field: &str, name: &str, out: &mut Vec<Cause>) {
    v::subdomain(field, name, out);
}

/// A volume mode, when given.
pub fn volume_mode(field: &str, mode: Option<&str>, out: &mut Vec<Cause>) {
    if let Some(m) = mode {
        if !VOLUME_MODES.contains(&m) {
            out.push(Cause::not_supported(field, m, VOLUME_MODES));
        }
    }
}

/// A quantity that must be well-formed and greater than zero.
pub fn positive_quantity(field: &str, q: &KubeQuantity, out: &mut Vec<Cause>) {
    match Quantity::try_from(q) {
        Err(e) => out.push(Cause::invalid(field, &json!(q.0), e.to_string())),
        Ok(n) if n.signum() <= 0 => out.push(Cause::invalid(
            field,
            &json!(q.0),
            "must be greater than zero",
        )),
        Ok(_) => {}
    }
}

/// A path with no `..` element.
fn no_backsteps(field: &str, path: &str, out: &mut Vec<Cause>) {
    if path.split('/').any(|p| p == "..") {
        out.push(Cause::invalid(field, &json!(path), "must not contain '..'"));
    }
}

fn node_affinity(field: &str, a: &VolumeNodeAffinity, out: &mut Vec<Cause>) -> bool {
    let Some(req) = &a.required else {
        return false;
    };
    if req.node_selector_terms.is_empty() {
        out.push(Cause::required_because(
            format!("{field}.required.nodeSelectorTerms"),
            "must have at least one node selector term",
        ));
    }
    for (n, term) in req.node_selector_terms.iter().enumerate() {
        for (i, e) in term.match_expressions.iter().flatten().enumerate() {
            let f = format!("{field}.required.nodeSelectorTerms[{n}].matchExpressions[{i}]");
            v::qualified_name(&format!("{f}.key"), &e.key, out);
            let vals = e.values.as_ref().map_or(0, Vec::len);
            match e.operator.as_str() {
                "In" | "NotIn" if vals == 0 => out.push(Cause::required_because(
                    format!("{f}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )),
                "Exists" | "DoesNotExist" if vals > 0 => out.push(Cause::forbidden(
                    format!("{f}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
                other => out.push(Cause::not_supported(
                    format!("{f}.operator"),
                    other,
                    &["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"],
                )),
            }
        }
    }
    true
}

fn validate(pv: &PersistentVolume) -> Vec<Cause> {
    let mut out = Vec::new();
    let empty = Default::default();
    let spec = pv.spec.as_ref().unwrap_or(&empty);
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    if modes.is_empty() {
        out.push(Cause::required("spec.accessModes"));
    }
    access_modes("spec.accessModes", modes, &mut out);
    let capacity = spec.capacity.clone().unwrap_or_default();
    if capacity.is_empty() {
        out.push(Cause::required("spec.capacity"));
    }
    if !capacity.contains_key("storage") || capacity.len() > 1 {
        out.push(Cause {
            kind: CauseKind::NotSupported,
            field: "spec.capacity".into(),
            message: format!(
                "{}: supported values: \"storage\"",
                render_resources(&capacity)
            ),
        });
    }
    for (k, q) in &capacity {
        positive_quantity(&format!("spec.capacity[{k}]"), q, &mut out);
    }
    if let Some(p) = spec.persistent_volume_reclaim_policy.as_deref() {
        if !p.is_empty() && !RECLAIM_POLICIES.contains(&p) {
            out.push(Cause::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                RECLAIM_POLICIES,
            ));
        }
    }
    let affinity = spec
        .node_affinity
        .as_ref()
        .is_some_and(|a| node_affinity("spec.nodeAffinity", a, &mut out));

    // Exactly one source, checked in kube's order for the sources Skiff knows.
    let mut sources = 0;
    let mut one = |name: &str, present: bool, out: &mut Vec<Cause>| -> bool {
        if !present {
            return false;
        }
        if sources > 0 {
            out.push(Cause::forbidden(
                format!("spec.{name}"),
                "may not specify more than 1 volume type",
            ));
            return false;
        }
        sources += 1;
        true
    };
    if one("hostPath", spec.host_path.is_some(), &mut out) {
        let hp = spec.host_path.as_ref().expect("checked");
        if hp.path.is_empty() {
            out.push(Cause::required("spec.hostPath.path"));
        } else {
            no_backsteps("spec.hostPath.path", &hp.path, &mut out);
        }
        if let Some(t) = hp.type_.as_deref() {
            if !HOST_PATH_TYPES.contains(&t) {
                out.push(Cause::not_supported(
                    "spec.hostPath.type",
                    t,
                    HOST_PATH_TYPES,
                ));
            }
        }
    }
    if one("nfs", spec.nfs.is_some(), &mut out) {
        let nfs = spec.nfs.as_ref().expect("checked");
        if nfs.server.is_empty() {
            out.push(Cause::required("spec.nfs.server"));
        }
        if nfs.path.is_empty() {
            out.push(Cause::required("spec.nfs.path"));
        } else if !nfs.path.starts_with('/') {
            out.push(Cause::invalid(
                "spec.nfs.path",
                &json!(nfs.path),
                "must be an absolute path",
            ));
        }
    }
    if one("local", spec.local.is_some(), &mut out) {
        let local = spec.local.as_ref().expect("checked");
        if local.path.is_empty() {
            out.push(Cause::required("spec.local.path"));
        } else {
            no_backsteps("spec.local.path", &local.path, &mut out);
        }
        if !affinity {
            out.push(Cause::required_because(
                "spec.nodeAffinity",
                "Local volume requires node affinity",
            ));
        }
    }
    if one("csi", spec.csi.is_some(), &mut out) {
        let csi = spec.csi.as_ref().expect("checked");
        if csi.driver.is_empty() {
            out.push(Cause::required("spec.csi.driver"));
        } else {
            if csi.driver.len() > 63 {
                out.push(Cause::too_long("spec.csi.driver", 63));
            }
            v::subdomain("spec.csi.driver", &csi.driver.to_lowercase(), &mut out);
        }
        if csi.volume_handle.is_empty() {
            out.push(Cause::required("spec.csi.volumeHandle"));
        }
    }
    let others = [
        (
            "awsElasticBlockStore",
            spec.aws_elastic_block_store.is_some(),
        ),
        ("azureDisk", spec.azure_disk.is_some()),
        ("azureFile", spec.azure_file.is_some()),
        ("cephfs", spec.cephfs.is_some()),
        ("cinder", spec.cinder.is_some()),
        ("fc", spec.fc.is_some()),
        ("flexVolume", spec.flex_volume.is_some()),
        ("gcePersistentDisk", spec.gce_persistent_disk.is_some()),
        ("glusterfs", spec.glusterfs.is_some()),
        ("iscsi", spec.iscsi.is_some()),
        ("rbd", spec.rbd.is_some()),
    ];
    for (name, present) in others {
        one(name, present, &mut out);
    }
    if sources == 0 {
        out.push(Cause::required_because(
            "spec",
            "must specify a volume type",
        ));
    }
    if spec
        .host_path
        .as_ref()
        .is_some_and(|h| h.path.trim_end_matches('/').is_empty() && !h.path.is_empty())
        && spec.persistent_volume_reclaim_policy.as_deref() == Some("Recycle")
    {
        out.push(Cause::forbidden(
            "spec.persistentVolumeReclaimPolicy",
            "may not be 'recycle' for a hostPath mount of '/'",
        ));
    }
    if let Some(c) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        class_name("spec.storageClassName", c, &mut out);
    }
    volume_mode("spec.volumeMode", spec.volume_mode.as_deref(), &mut out);
    if let Some(vac) = spec.volume_attributes_class_name.as_deref() {
        if vac.is_empty() {
            out.push(Cause::required_because(
                "spec.volumeAttributesClassName",
                "an empty string is disallowed",
            ));
        } else {
            class_name("spec.volumeAttributesClassName", vac, &mut out);
        }
        if spec.csi.is_none() {
            out.push(Cause::required_because(
                "spec.csi",
                "has to be specified when using volumeAttributesClassName",
            ));
        }
    }
    out
}

/// A resource list as Go's `%v` of a map shows it, near enough: `map[cpu:1 storage:1Gi]`.
fn render_resources(r: &BTreeMap<String, KubeQuantity>) -> String {
    let items: Vec<String> = r.iter().map(|(k, q)| format!("{k}:{}", q.0)).collect();
    format!("map[{}]", items.join(" "))
}

/// The source of a volume is fixed once created, and so is its mode; node affinity may be set
/// once.
fn validate_update(new: &PersistentVolume, old: &PersistentVolume) -> Vec<Cause> {
    let mut out = Vec::new();
    let (Some(n), Some(o)) = (&new.spec, &old.spec) else {
        return out;
    };
    let mut n_src = source_of(n);
    let o_src = source_of(o);
    // A CSI volume may gain the secret that expanding it needs.
    if let (Some(nc), Some(oc)) = (n_src.get_mut("csi"), o_src.get("csi")) {
        if oc.get("controllerExpandSecretRef").is_none() {
            if let Some(m) = nc.as_object_mut() {
                m.remove("controllerExpandSecretRef");
            }
        }
    }
    if n_src != o_src {
        out.push(Cause::forbidden(
            "spec.persistentvolumesource",
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    if n.volume_mode != o.volume_mode {
        out.push(Cause::immutable("volumeMode"));
    }
    if o.node_affinity.is_some() && n.node_affinity != o.node_affinity {
        out.push(Cause::immutable("nodeAffinity"));
    }
    if o.volume_attributes_class_name.is_some() && n.volume_attributes_class_name.is_none() {
        out.push(Cause::forbidden(
            "spec.volumeAttributesClassName",
            "update from non-nil value to nil is forbidden",
        ));
    }
    out
}

/// The fields of a spec that name where the volume is (kube's `PersistentVolumeSource`).
fn source_of(
    spec: &k8s_openapi::api::core::v1::PersistentVolumeSpec,
) -> serde_json::Map<String, Value> {
    const NOT_SOURCE: &[&str] = &[
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeAttributesClassName",
        "volumeMode",
    ];
    match serde_json::to_value(spec) {
        Ok(Value::Object(m)) => m
            .into_iter()
            .filter(|(k, _)| !NOT_SOURCE.contains(&k.as_str()))
            .collect(),
        _ => Default::default(),
    }
}

/// Access modes as kubectl abbreviates them (`RWO,RWX`), in kube's order.
pub fn access_modes_text(modes: Option<&Value>) -> String {
    let has = |m: &str| {
        modes
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == m))
    };
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, a)| *a)
    .collect::<Vec<_>>()
    .join(",")
}

/// A quantity as Kubernetes prints it (canonical form), or as given if it does not parse.
pub fn quantity_text(q: Option<&Value>) -> String {
    let Some(text) = q.and_then(Value::as_str) else {
        return "0".into();
    };
    match Quantity::try_from(&KubeQuantity(text.to_string())) {
        Ok(n) => n.to_string(),
        Err(_) => text.to_string(),
    }
}

/// The class of a volume or claim: the beta annotation first, else `spec.storageClassName`.
pub fn class_of(obj: &Value) -> String {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(BETA_STORAGE_CLASS))
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| s(obj, "/spec/storageClassName"))
}

/// The phase column: `Terminating` once deletion started.
pub fn phase_text(obj: &Value) -> String {
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".into()
    } else {
        s(obj, "/status/phase")
    }
}

/// A column's text for an optional class name.
pub fn or_unset(obj: &Value, ptr: &str) -> String {
    match s(obj, ptr) {
        v if v.is_empty() => "<unset>".into(),
        v => v,
    }
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"),
        col("Capacity", "string", 0, "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity"),
        col("Access Modes", "string", 0, "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes"),
        col("Reclaim Policy", "string", 0, "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming"),
        col("Status", "string", 0, "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase"),
        col("Claim", "string", 0, "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding"),
        col("StorageClass", "string", 0, "StorageClass of the pv"),
        col("VolumeAttributesClass", "string", 0, "VolumeAttributesClass of the pv"),
        col("Reason", "string", 0, "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"),
        col("VolumeMode", "string", 1, "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec."),
    ]
}

fn cells(obj: &Value) -> Vec<Value> {
    let claim = match obj.pointer("/spec/claimRef") {
        Some(c) if c.is_object() => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
        _ => String::new(),
    };
    vec![
        super::name(obj),
        json!(quantity_text(obj.pointer("/spec/capacity/storage"))),
        json!(access_modes_text(obj.pointer("/spec/accessModes"))),
        json!(s(obj, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase_text(obj)),
        json!(claim),
        json!(class_of(obj)),
        json!(or_unset(obj, "/spec/volumeAttributesClassName")),
        json!(s(obj, "/status/reason")),
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

    fn pv(v: Value) -> PersistentVolume {
        let mut pv: PersistentVolume = serde_json::from_value(v).unwrap();
        defaults(&mut pv);
        pv
    }

    #[test]
    fn volumes_default_and_validate() {
        let p = pv(
            json!({"metadata": {"name": "a"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data"}}}),
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
        assert!(validate(&p).is_empty(), "{:?}", validate(&p));

        let p = pv(
            json!({"metadata": {"name": "a"}, "spec": {"accessModes": ["Sometimes"],
            "capacity": {"storage": "0"}, "local": {"path": "/x"}, "csi": {"driver": "", "volumeHandle": "h"},
            "persistentVolumeReclaimPolicy": "Keep"}}),
        );
        assert_eq!(
            texts(validate(&p)),
            vec![
                "spec.accessModes: Unsupported value: \"Sometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.capacity[storage]: Invalid value: \"0\": must be greater than zero",
                "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Keep\": supported values: \"Delete\", \"Recycle\", \"Retain\"",
                "spec.nodeAffinity: Required value: Local volume requires node affinity",
                "spec.csi: Forbidden: may not specify more than 1 volume type",
            ]
        );
        let p = pv(json!({"metadata": {"name": "a"}, "spec": {}}));
        assert_eq!(
            texts(validate(&p)),
            vec![
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                "spec.capacity: Unsupported value: map[]: supported values: \"storage\"",
                "spec: Required value: must specify a volume type",
            ]
        );
    }

    #[test]
    fn volume_sources_are_fixed() {
        let old = pv(
            json!({"metadata": {"name": "a"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"}, "csi": {"driver": "d.example.com", "volumeHandle": "h"}}}),
        );
        let mut new = old.clone();
        new.spec.as_mut().unwrap().capacity =
            Some([("storage".to_string(), KubeQuantity("2Gi".into()))].into());
        assert!(validate_update(&new, &old).is_empty());
        new.spec
            .as_mut()
            .unwrap()
            .csi
            .as_mut()
            .unwrap()
            .volume_handle = "other".into();
        assert_eq!(
            texts(validate_update(&new, &old)),
            vec!["spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"]
        );
    }

    #[test]
    fn volume_cells_print_as_kubectl() {
        let c = cells(
            &json!({"metadata": {"name": "a"}, "spec": {"accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "capacity": {"storage": "1536Mi"}, "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "ns", "name": "data"}, "storageClassName": "fast",
            "volumeMode": "Filesystem"}, "status": {"phase": "Bound"}}),
        );
        assert_eq!(
            c[1..9],
            [
                json!("1536Mi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("ns/data"),
                json!("fast"),
                json!("<unset>"),
                json!("")
            ]
        );
        assert_eq!(c[10], json!("Filesystem"));
    }
}
