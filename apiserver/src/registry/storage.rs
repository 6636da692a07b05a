//! The storage.k8s.io/v1 types: StorageClasses, CSIDrivers, CSINodes, VolumeAttachments and
//! CSIStorageCapacities. Defaults and validation follow Kubernetes' `pkg/apis/storage` (v1
//! defaults, `validation.go`), with its messages and field paths; the table columns follow
//! kube-apiserver's printers.
//!
//! These are the types alone: nothing here provisions, binds or attaches volumes.

use std::collections::BTreeSet;

use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment,
};
use serde_json::{json, Value};
use skiff_rules::Quantity;

use super::webhook_configuration::AGE;
use super::{col, s, Builtin, Column, Typed};
use crate::error::{Cause, CauseKind};
use crate::validation as v;

/// The API group of the storage types.
pub const GROUP: &str = "storage.k8s.io";
const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// The annotation that marks a StorageClass as the default one.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta annotation that marks a StorageClass as the default one.
pub const BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// The storageclasses resource.
pub static STORAGECLASSES: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "StorageClass",
    plural: "storageclasses",
    singular: "storageclass",
    short_names: &["sc"],
    categories: &[],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &CLASS_STRATEGY,
    schema: super::schema_of::<StorageClass>,
};

/// The csidrivers resource.
pub static CSIDRIVERS: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "CSIDriver",
    plural: "csidrivers",
    singular: "csidriver",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &DRIVER_STRATEGY,
    schema: super::schema_of::<CSIDriver>,
};

/// The csinodes resource.
pub static CSINODES: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "CSINode",
    plural: "csinodes",
    singular: "csinode",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &NODE_STRATEGY,
    schema: super::schema_of::<CSINode>,
};

/// The volumeattachments resource.
pub static VOLUMEATTACHMENTS: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "VolumeAttachment",
    plural: "volumeattachments",
    singular: "volumeattachment",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: false,
    strategy: &ATTACHMENT_STRATEGY,
    schema: super::schema_of::<VolumeAttachment>,
};

/// The csistoragecapacities resource.
pub static CSISTORAGECAPACITIES: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "CSIStorageCapacity",
    plural: "csistoragecapacities",
    singular: "csistoragecapacity",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &CAPACITY_STRATEGY,
    schema: super::schema_of::<CSIStorageCapacity>,
};

static CLASS_STRATEGY: Typed<StorageClass> = Typed {
    defaults: class_defaults,
    validate: validate_class,
    validate_update: class_update,
    ..Typed::new(class_columns, class_cells)
};

static DRIVER_STRATEGY: Typed<CSIDriver> = Typed {
    defaults: driver_defaults,
    validate: validate_driver,
    validate_update: driver_update,
    ..Typed::new(driver_columns, driver_cells)
};

static NODE_STRATEGY: Typed<CSINode> = Typed {
    validate: validate_node,
    validate_update: node_update,
    ..Typed::new(node_columns, node_cells)
};

static ATTACHMENT_STRATEGY: Typed<VolumeAttachment> = Typed {
    status: true,
    validate: validate_attachment,
    validate_update: attachment_update,
    prepare_create: super::clear_status,
    ..Typed::new(attachment_columns, attachment_cells)
};

static CAPACITY_STRATEGY: Typed<CSIStorageCapacity> = Typed {
    validate: validate_capacity,
    validate_update: capacity_update,
    ..Typed::new(capacity_columns, capacity_cells)
};

// ---- StorageClass --------------------------------------------------------------------------

const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
const MAX_PARAMETERS: usize = 512;
const MAX_PARAMETER_BYTES: usize = 256 * 1024;

/// A class reclaims its volumes on delete and binds them at once unless it says otherwise.
fn class_defaults(sc: &mut StorageClass) {
    sc.reclaim_policy.get_or_insert_with(|| "Delete".into());
    sc.volume_binding_mode
        .get_or_insert_with(|| "Immediate".into());
}

fn validate_class(sc: &StorageClass) -> Vec<Cause> {
    let mut out = Vec::new();
    if sc.provisioner.is_empty() {
        out.push(Cause::required("provisioner"));
    } else {
        let lower = sc.provisioner.to_lowercase();
        let mut tmp = Vec::new();
        v::qualified_name("provisioner", &lower, &mut tmp);
        relabel(tmp, &lower, &sc.provisioner, &mut out);
    }
    if let Some(params) = &sc.parameters {
        if params.len() > MAX_PARAMETERS {
            out.push(Cause::too_long("parameters", MAX_PARAMETERS));
        } else {
            let mut size = 0;
            for (k, val) in params {
                if k.is_empty() {
                    out.push(Cause::invalid(
                        "parameters",
                        &json!(k),
                        "field can not be empty.",
                    ));
                }
                size += k.len() + val.len();
            }
            if size > MAX_PARAMETER_BYTES {
                out.push(Cause::too_long("parameters", MAX_PARAMETER_BYTES));
            }
        }
    }
    match sc.reclaim_policy.as_deref() {
        Some(p) if !RECLAIM_POLICIES.contains(&p) => {
            out.push(Cause::not_supported("reclaimPolicy", p, RECLAIM_POLICIES))
        }
        _ => {}
    }
    match sc.volume_binding_mode.as_deref() {
        None => out.push(Cause::required("volumeBindingMode")),
        Some(m) if !BINDING_MODES.contains(&m) => {
            out.push(Cause::not_supported("volumeBindingMode", m, BINDING_MODES))
        }
        _ => {}
    }
    for (n, term) in sc.allowed_topologies.iter().flatten().enumerate() {
        for (i, req) in term.match_label_expressions.iter().flatten().enumerate() {
            let f = format!("allowedTopologies[{n}].matchLabelExpressions[{i}]");
            v::qualified_name(&format!("{f}.key"), &req.key, &mut out);
            if req.values.is_empty() {
                out.push(Cause::required_because(
                    format!("{f}.values"),
                    "must specify as least one value",
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, value) in req.values.iter().enumerate() {
                if !seen.insert(value) {
                    out.push(Cause::duplicate(format!("{f}.values[{j}]"), &json!(value)));
                }
            }
        }
    }
    out
}

fn class_update(new: &StorageClass, old: &StorageClass) -> Vec<Cause> {
    let mut out = Vec::new();
    if new.parameters.clone().unwrap_or_default() != old.parameters.clone().unwrap_or_default() {
        out.push(Cause::forbidden(
            "parameters",
            "updates to parameters are forbidden.",
        ));
    }
    if new.provisioner != old.provisioner {
        out.push(Cause::forbidden(
            "provisioner",
            "updates to provisioner are forbidden.",
        ));
    }
    if new.reclaim_policy != old.reclaim_policy {
        out.push(Cause::forbidden(
            "reclaimPolicy",
            "updates to reclaimPolicy are forbidden.",
        ));
    }
    if new.volume_binding_mode != old.volume_binding_mode {
        let mode = new.volume_binding_mode.as_deref().unwrap_or("");
        out.push(immutable("volumeBindingMode", json!(mode).to_string()));
    }
    out
}

fn is_default_class(obj: &Value) -> bool {
    let ann = |k: &str| {
        obj.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            == Some("true")
    };
    ann(DEFAULT_CLASS) || ann(BETA_DEFAULT_CLASS)
}

fn class_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Provisioner", "string", 0, "provisioner indicates the type of the provisioner."),
        col("ReclaimPolicy", "string", 0, "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete."),
        col("VolumeBindingMode", "string", 0, "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature."),
        col("AllowVolumeExpansion", "string", 0, "allowVolumeExpansion shows whether the storage class allow volume expand."),
        col("Age", "string", 0, AGE),
    ]
}

fn class_cells(obj: &Value) -> Vec<Value> {
    let mut name = s(obj, "/metadata/name");
    if is_default_class(obj) {
        name.push_str(" (default)");
    }
    let or = |ptr: &str, d: &str| {
        let v = s(obj, ptr);
        if v.is_empty() {
            d.to_string()
        } else {
            v
        }
    };
    let expand = obj
        .get("allowVolumeExpansion")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        json!(name),
        json!(s(obj, "/provisioner")),
        json!(or("/reclaimPolicy", "Delete")),
        json!(or("/volumeBindingMode", "Immediate")),
        json!(expand.to_string()),
        super::age(obj),
    ]
}

/// A changed immutable field with its new value as Kubernetes renders it.
fn immutable(field: &str, rendered: String) -> Cause {
    Cause {
        kind: CauseKind::Invalid,
        field: field.into(),
        message: format!("{rendered}: field is immutable"),
    }
}

// ---- CSIDriver -----------------------------------------------------------------------------

const FS_GROUP_POLICIES: &[&str] = &["File", "None", "ReadWriteOnceWithFSType"];
const LIFECYCLE_MODES: &[&str] = &["Ephemeral", "Persistent"];

/// kube-apiserver's v1 defaults for a driver's spec.
fn driver_defaults(d: &mut CSIDriver) {
    let s = &mut d.spec;
    s.attach_required.get_or_insert(true);
    s.pod_info_on_mount.get_or_insert(false);
    s.storage_capacity.get_or_insert(false);
    s.fs_group_policy
        .get_or_insert_with(|| "ReadWriteOnceWithFSType".into());
    if s.volume_lifecycle_modes.as_ref().is_none_or(Vec::is_empty) {
        s.volume_lifecycle_modes = Some(vec!["Persistent".into()]);
    }
    s.requires_republish.get_or_insert(false);
    s.se_linux_mount.get_or_insert(false);
}

/// A CSI driver's name: a DNS-1123 subdomain of at most 63 characters.
fn driver_name(field: &str, name: &str, out: &mut Vec<Cause>) {
    if name.is_empty() {
        out.push(Cause::required(field));
    }
    if name.len() > 63 {
        out.push(Cause::too_long(field, 63));
    }
    let lower = name.to_lowercase();
    let mut tmp = Vec::new();
    v::subdomain(field, &lower, &mut tmp);
    relabel(tmp, &lower, name, out);
}

/// Causes found for a lowercased value, reported with the value as given (kube checks some
/// names in lower case).
fn relabel(found: Vec<Cause>, lower: &str, given: &str, out: &mut Vec<Cause>) {
    let prefix = format!("{}: ", json!(lower));
    for c in found {
        let detail = c.message.strip_prefix(&prefix).unwrap_or(&c.message);
        out.push(Cause::invalid(c.field.clone(), &json!(given), detail));
    }
}

fn validate_driver(d: &CSIDriver) -> Vec<Cause> {
    let mut out = Vec::new();
    driver_name("name", d.metadata.name.as_deref().unwrap_or(""), &mut out);
    let s = &d.spec;
    let required = |v: Option<bool>, f: &str, out: &mut Vec<Cause>| {
        if v.is_none() {
            out.push(Cause::required(format!("spec.{f}")));
        }
    };
    required(s.attach_required, "attachedRequired", &mut out);
    required(s.pod_info_on_mount, "podInfoOnMount", &mut out);
    required(s.storage_capacity, "storageCapacity", &mut out);
    match s.fs_group_policy.as_deref() {
        None => out.push(Cause::required("spec.fsGroupPolicy")),
        Some(p) if !FS_GROUP_POLICIES.contains(&p) => out.push(Cause::not_supported(
            "spec.fsGroupPolicy",
            p,
            FS_GROUP_POLICIES,
        )),
        _ => {}
    }
    let mut audiences = BTreeSet::new();
    for (n, t) in s.token_requests.iter().flatten().enumerate() {
        let f = format!("spec.tokenRequests[{n}]");
        if !audiences.insert(t.audience.as_str()) {
            out.push(Cause::duplicate(
                format!("{f}.audience"),
                &json!(t.audience),
            ));
        }
        if let Some(e) = t.expiration_seconds {
            if e < 600 {
                out.push(Cause::invalid(
                    format!("{f}.expirationSeconds"),
                    &json!(e),
                    "may not specify a duration less than 10 minutes",
                ));
            }
            if e > 1 << 32 {
                out.push(Cause::invalid(
                    format!("{f}.expirationSeconds"),
                    &json!(e),
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
        }
    }
    let modes = s.volume_lifecycle_modes.as_deref().unwrap_or_default();
    if modes.is_empty() {
        out.push(Cause::required_because(
            "spec.volumeLifecycleModes",
            "at least one volume lifecycle mode is required",
        ));
    }
    for m in modes {
        if !LIFECYCLE_MODES.contains(&m.as_str()) {
            out.push(Cause::not_supported(
                "spec.volumeLifecycleModes",
                m,
                LIFECYCLE_MODES,
            ));
        }
    }
    required(s.se_linux_mount, "seLinuxMount", &mut out);
    if let Some(p) = s.node_allocatable_update_period_seconds {
        if p < 10 {
            out.push(Cause::invalid(
                "spec.nodeAllocatableUpdatePeriodSeconds",
                &json!(p),
                "must be greater than or equal to 10 seconds",
            ));
        }
    }
    out
}

/// Whether a driver needs attaching and which lifecycle modes it has are fixed once created.
fn driver_update(new: &CSIDriver, old: &CSIDriver) -> Vec<Cause> {
    let mut out = Vec::new();
    if new.spec.attach_required != old.spec.attach_required {
        let v = new
            .spec
            .attach_required
            .map_or("null".into(), |b| b.to_string());
        out.push(immutable("spec.attachedRequired", v));
    }
    if new.spec.volume_lifecycle_modes != old.spec.volume_lifecycle_modes {
        let modes: Vec<String> = new
            .spec
            .volume_lifecycle_modes
            .iter()
            .flatten()
            .map(|m| json!(m).to_string())
            .collect();
        out.push(immutable(
            "spec.volumeLifecycleModes",
            format!("[]storage.VolumeLifecycleMode{{{}}}", modes.join(", ")),
        ));
    }
    out
}

fn driver_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("AttachRequired", "boolean", 0, "attachRequired indicates this CSI volume driver requires an attach operation (because it implements the CSI ControllerPublishVolume() method), and that the Kubernetes attach detach controller should call the attach volume interface which checks the volumeattachment status and waits until the volume is attached before proceeding to mounting."),
        col("PodInfoOnMount", "boolean", 0, "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations, if set to true."),
        col("StorageCapacity", "boolean", 0, "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information, if set to true."),
        col("TokenRequests", "string", 0, "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication."),
        col("RequiresRepublish", "boolean", 0, "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume."),
        col("Modes", "string", 0, "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports."),
        col("Age", "string", 0, AGE),
    ]
}

fn driver_cells(obj: &Value) -> Vec<Value> {
    let b = |ptr: &str, d: bool| obj.pointer(ptr).and_then(Value::as_bool).unwrap_or(d);
    let tokens = match obj.pointer("/spec/tokenRequests").and_then(Value::as_array) {
        None => "<unset>".to_string(),
        Some(list) => list
            .iter()
            .map(|t| t.get("audience").and_then(Value::as_str).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(","),
    };
    let modes: Vec<&str> = obj
        .pointer("/spec/volumeLifecycleModes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let modes = if modes.is_empty() {
        "<none>".to_string()
    } else {
        modes.join(",")
    };
    vec![
        super::name(obj),
        json!(b("/spec/attachRequired", true)),
        json!(b("/spec/podInfoOnMount", false)),
        json!(b("/spec/storageCapacity", false)),
        json!(tokens),
        json!(b("/spec/requiresRepublish", false)),
        json!(modes),
        super::age(obj),
    ]
}

// ---- CSINode -------------------------------------------------------------------------------

const MAX_NODE_ID: usize = 192;

fn validate_node(n: &CSINode) -> Vec<Cause> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, d) in n.spec.drivers.iter().enumerate() {
        let f = format!("spec.drivers[{i}]");
        driver_name(&format!("{f}.name"), &d.name, &mut out);
        if d.node_id.is_empty() {
            out.push(Cause::required(format!("{f}.nodeID")));
        } else if d.node_id.len() > MAX_NODE_ID {
            out.push(Cause::invalid(
                format!("{f}.nodeID"),
                &json!(d.node_id),
                format!("must be {MAX_NODE_ID} characters or less"),
            ));
        }
        v::non_negative(
            &format!("{f}.allocatable.count"),
            d.allocatable.as_ref().and_then(|a| a.count).map(i64::from),
            &mut out,
        );
        if !names.insert(d.name.as_str()) {
            out.push(Cause::duplicate(format!("{f}.name"), &json!(d.name)));
        }
        let mut keys = BTreeSet::new();
        for k in d.topology_keys.iter().flatten() {
            if k.is_empty() {
                out.push(Cause::required(f.clone()));
            }
            if !keys.insert(k.as_str()) {
                out.push(Cause::duplicate(f.clone(), &json!(k)));
            }
            v::qualified_name(&f, k, &mut out);
        }
    }
    out
}

/// A driver already registered on a node may not change; drivers may come and go.
fn node_update(new: &CSINode, old: &CSINode) -> Vec<Cause> {
    let mut out = Vec::new();
    for o in &old.spec.drivers {
        for d in new.spec.drivers.iter().filter(|d| d.name == o.name) {
            if d != o {
                out.push(Cause::immutable("CSINodeDriver"));
            }
        }
    }
    out
}

fn node_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Drivers", "integer", 0, "drivers is a list of information of all CSI Drivers existing on a node. If all drivers in the list are uninstalled, this can become empty."),
        col("Age", "string", 0, AGE),
    ]
}

fn node_cells(obj: &Value) -> Vec<Value> {
    let drivers = obj
        .pointer("/spec/drivers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![super::name(obj), json!(drivers), super::age(obj)]
}

// ---- VolumeAttachment ----------------------------------------------------------------------

const MAX_ATTACHMENT_METADATA: usize = 256 * 1024;
const MAX_VOLUME_ERROR_MESSAGE: usize = 1024;

fn validate_attachment(a: &VolumeAttachment) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = &a.spec;
    if spec.attacher.is_empty() {
        out.push(Cause::required("spec.attacher"));
    }
    let src = &spec.source;
    const ONE: &str = "must specify exactly one of inlineVolumeSpec and persistentVolumeName";
    match (&src.inline_volume_spec, &src.persistent_volume_name) {
        (None, None) => out.push(Cause::required_because("spec.source", ONE)),
        (Some(_), Some(_)) => out.push(Cause::forbidden("spec.source", ONE)),
        (None, Some(pv)) if pv.is_empty() => out.push(Cause::required_because(
            "spec.source.persistentVolumeName",
            "must specify non empty persistentVolumeName",
        )),
        _ => {}
    }
    v::subdomain("spec.nodeName", &spec.node_name, &mut out);
    if let Some(st) = &a.status {
        let size: usize = st
            .attachment_metadata
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if size > MAX_ATTACHMENT_METADATA {
            out.push(Cause::too_long(
                "status.attachmentMetadata",
                MAX_ATTACHMENT_METADATA,
            ));
        }
        for (f, e) in [
            ("attachError", &st.attach_error),
            ("detachError", &st.detach_error),
        ] {
            if e.as_ref()
                .and_then(|e| e.message.as_ref())
                .is_some_and(|m| m.len() > MAX_VOLUME_ERROR_MESSAGE)
            {
                out.push(Cause::too_long(
                    format!("status.{f}.message"),
                    MAX_VOLUME_ERROR_MESSAGE,
                ));
            }
        }
    }
    // The v1 extras: the attacher is a CSI driver's name, the volume a PersistentVolume's.
    if !spec.attacher.is_empty() {
        driver_name("spec.attacher", &spec.attacher, &mut out);
    }
    if let Some(pv) = src
        .persistent_volume_name
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        v::subdomain("spec.source.persistentVolumeName", pv, &mut out);
    }
    out
}

/// An attachment's spec is read-only.
fn attachment_update(new: &VolumeAttachment, old: &VolumeAttachment) -> Vec<Cause> {
    if new.spec != old.spec {
        return vec![Cause::immutable("spec")];
    }
    Vec::new()
}

fn attachment_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Attacher", "string", 0, "attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName()."),
        col("PV", "string", 0, "persistentVolumeName represents the name of the persistent volume to attach."),
        col("Node", "string", 0, "nodeName represents the node that the volume should be attached to."),
        col("Attached", "boolean", 0, "attached indicates the volume is successfully attached. This field must only be set by the entity completing the attach operation, i.e. the external-attacher."),
        col("Age", "string", 0, AGE),
    ]
}

fn attachment_cells(obj: &Value) -> Vec<Value> {
    let attached = obj
        .pointer("/status/attached")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        super::name(obj),
        json!(s(obj, "/spec/attacher")),
        json!(s(obj, "/spec/source/persistentVolumeName")),
        json!(s(obj, "/spec/nodeName")),
        json!(attached),
        super::age(obj),
    ]
}

// ---- CSIStorageCapacity --------------------------------------------------------------------

fn validate_capacity(c: &CSIStorageCapacity) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Some(sel) = &c.node_topology {
        v::label_selector("nodeTopology", sel, &mut out);
    }
    v::subdomain("storageClassName", &c.storage_class_name, &mut out);
    for (f, q) in [
        ("capacity", &c.capacity),
        ("maximumVolumeSize", &c.maximum_volume_size),
    ] {
        let Some(q) = q else { continue };
        match Quantity::try_from(q) {
            Err(e) => out.push(Cause::invalid(f, &json!(q.0), e.to_string())),
            Ok(n) if n.signum() < 0 => out.push(Cause::invalid(
                f,
                &json!(q.0),
                "must be greater than or equal to 0",
            )),
            Ok(_) => {}
        }
    }
    out
}

/// The inputs of a capacity query (topology and class) are fixed once created.
fn capacity_update(new: &CSIStorageCapacity, old: &CSIStorageCapacity) -> Vec<Cause> {
    let mut out = Vec::new();
    if new.node_topology != old.node_topology {
        out.push(Cause::immutable("nodeTopology"));
    }
    if new.storage_class_name != old.storage_class_name {
        out.push(immutable(
            "storageClassName",
            json!(new.storage_class_name).to_string(),
        ));
    }
    out
}

fn capacity_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("StorageClassName", "string", 0, "storageClassName represents the name of the StorageClass that the reported capacity applies to."),
        col("Capacity", "string", 0, "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest with topology and parameters that match the previous fields."),
        col("Age", "string", 0, AGE),
    ]
}

fn capacity_cells(obj: &Value) -> Vec<Value> {
    let cap = obj
        .get("capacity")
        .and_then(Value::as_str)
        .unwrap_or("<unset>");
    vec![
        super::name(obj),
        json!(s(obj, "/storageClassName")),
        json!(cap),
        super::age(obj),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(c: Vec<Cause>) -> Vec<String> {
        c.iter().map(Cause::text).collect()
    }

    fn class(v: Value) -> StorageClass {
        let mut sc: StorageClass = serde_json::from_value(v).unwrap();
        class_defaults(&mut sc);
        sc
    }

    #[test]
    fn storage_classes_default_and_validate() {
        let sc = class(json!({"metadata": {"name": "fast"}, "provisioner": "csi.example.com"}));
        assert_eq!(sc.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(sc.volume_binding_mode.as_deref(), Some("Immediate"));
        assert!(validate_class(&sc).is_empty());

        let sc = class(
            json!({"metadata": {"name": "x"}, "reclaimPolicy": "Recycle",
            "volumeBindingMode": "Later", "parameters": {"": "v"},
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": []}]}]}),
        );
        assert_eq!(
            texts(validate_class(&sc)),
            vec![
                "provisioner: Required value",
                "parameters: Invalid value: \"\": field can not be empty.",
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
                "volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\"",
                "allowedTopologies[0].matchLabelExpressions[0].values: Required value: must specify as least one value",
            ]
        );
        let sc = class(json!({"metadata": {"name": "x"}, "provisioner": "Bad Name!"}));
        let e = texts(validate_class(&sc));
        assert!(
            e[0].starts_with(
                "provisioner: Invalid value: \"Bad Name!\": name part must consist of"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn storage_class_updates_keep_the_provisioning_fields() {
        let old = class(json!({"metadata": {"name": "x"}, "provisioner": "a.example.com"}));
        let mut new = old.clone();
        new.allow_volume_expansion = Some(true);
        assert!(class_update(&new, &old).is_empty());
        new.provisioner = "b.example.com".into();
        new.parameters = Some([("type".to_string(), "ssd".to_string())].into());
        new.reclaim_policy = Some("Retain".into());
        new.volume_binding_mode = Some("WaitForFirstConsumer".into());
        assert_eq!(
            texts(class_update(&new, &old)),
            vec![
                "parameters: Forbidden: updates to parameters are forbidden.",
                "provisioner: Forbidden: updates to provisioner are forbidden.",
                "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.",
                "volumeBindingMode: Invalid value: \"WaitForFirstConsumer\": field is immutable",
            ]
        );
    }

    #[test]
    fn storage_class_cells_mark_the_default() {
        let c = class_cells(&json!({"metadata": {"name": "fast",
            "annotations": {DEFAULT_CLASS: "true"}}, "provisioner": "p"}));
        assert_eq!(
            c[..5],
            [
                json!("fast (default)"),
                json!("p"),
                json!("Delete"),
                json!("Immediate"),
                json!("false")
            ]
        );
        let c = class_cells(&json!({"metadata": {"name": "slow",
            "annotations": {BETA_DEFAULT_CLASS: "false"}}, "provisioner": "p",
            "reclaimPolicy": "Retain", "allowVolumeExpansion": true}));
        assert_eq!(c[0], json!("slow"));
        assert_eq!(c[2], json!("Retain"));
        assert_eq!(c[4], json!("true"));
    }

    fn driver(spec: Value) -> CSIDriver {
        let mut d: CSIDriver =
            serde_json::from_value(json!({"metadata": {"name": "csi.example.com"}, "spec": spec}))
                .unwrap();
        driver_defaults(&mut d);
        d
    }

    #[test]
    fn csi_drivers_default_and_validate() {
        let d = driver(json!({}));
        let s = &d.spec;
        assert_eq!(s.attach_required, Some(true));
        assert_eq!(s.pod_info_on_mount, Some(false));
        assert_eq!(s.storage_capacity, Some(false));
        assert_eq!(
            s.fs_group_policy.as_deref(),
            Some("ReadWriteOnceWithFSType")
        );
        assert_eq!(
            s.volume_lifecycle_modes,
            Some(vec!["Persistent".to_string()])
        );
        assert_eq!(s.requires_republish, Some(false));
        assert_eq!(s.se_linux_mount, Some(false));
        assert!(validate_driver(&d).is_empty());
        assert_eq!(
            driver_cells(&serde_json::to_value(&d).unwrap())[1..7],
            [
                json!(true),
                json!(false),
                json!(false),
                json!("<unset>"),
                json!(false),
                json!("Persistent")
            ]
        );

        let d = driver(
            json!({"fsGroupPolicy": "Always", "volumeLifecycleModes": ["Ephemeral", "Forever"],
            "tokenRequests": [{"audience": "a", "expirationSeconds": 60}, {"audience": "a"}]}),
        );
        assert_eq!(
            texts(validate_driver(&d)),
            vec![
                "spec.fsGroupPolicy: Unsupported value: \"Always\": supported values: \"File\", \"None\", \"ReadWriteOnceWithFSType\"",
                "spec.tokenRequests[0].expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
                "spec.tokenRequests[1].audience: Duplicate value: \"a\"",
                "spec.volumeLifecycleModes: Unsupported value: \"Forever\": supported values: \"Ephemeral\", \"Persistent\"",
            ]
        );
    }

    #[test]
    fn csi_driver_updates_keep_attach_and_modes() {
        let old = driver(json!({}));
        let mut new = driver(json!({"podInfoOnMount": true, "attachRequired": false,
            "volumeLifecycleModes": ["Persistent", "Ephemeral"]}));
        assert_eq!(
            texts(driver_update(&new, &old)),
            vec![
                "spec.attachedRequired: Invalid value: false: field is immutable",
                "spec.volumeLifecycleModes: Invalid value: []storage.VolumeLifecycleMode{\"Persistent\", \"Ephemeral\"}: field is immutable",
            ]
        );
        new.spec.attach_required = Some(true);
        new.spec.volume_lifecycle_modes = old.spec.volume_lifecycle_modes.clone();
        assert!(driver_update(&new, &old).is_empty());
    }

    #[test]
    fn csi_nodes_attachments_and_capacities_validate() {
        let n: CSINode =
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"drivers": [
            {"name": "csi.example.com", "nodeID": "n1", "topologyKeys": ["zone", "zone"]},
            {"name": "csi.example.com", "nodeID": "", "allocatable": {"count": -1}}]}}))
            .unwrap();
        assert_eq!(
            texts(validate_node(&n)),
            vec![
                "spec.drivers[0]: Duplicate value: \"zone\"",
                "spec.drivers[1].nodeID: Required value",
                "spec.drivers[1].allocatable.count: Invalid value: -1: must be greater than or equal to 0",
                "spec.drivers[1].name: Duplicate value: \"csi.example.com\"",
            ]
        );

        let a: VolumeAttachment = serde_json::from_value(json!({"metadata": {"name": "a"},
            "spec": {"attacher": "", "nodeName": "n1", "source": {}}}))
        .unwrap();
        assert_eq!(
            texts(validate_attachment(&a)),
            vec![
                "spec.attacher: Required value",
                "spec.source: Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName",
            ]
        );
        let a: VolumeAttachment = serde_json::from_value(json!({"metadata": {"name": "a"},
            "spec": {"attacher": "csi.example.com", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}}}))
        .unwrap();
        assert!(validate_attachment(&a).is_empty());
        let mut b = a.clone();
        b.spec.node_name = "n2".into();
        assert_eq!(
            texts(attachment_update(&b, &a)),
            vec!["spec: field is immutable"]
        );
        let cells = attachment_cells(&serde_json::to_value(&a).unwrap());
        assert_eq!(
            cells[1..5],
            [
                json!("csi.example.com"),
                json!("pv1"),
                json!("n1"),
                json!(false)
            ]
        );

        let c: CSIStorageCapacity = serde_json::from_value(json!({"metadata": {"name": "c"},
            "storageClassName": "Fast", "capacity": "-1Gi"}))
        .unwrap();
        let e = texts(validate_capacity(&c));
        assert!(
            e[0].starts_with(
                "storageClassName: Invalid value: \"Fast\": a lowercase RFC 1123 subdomain"
            ),
            "{e:?}"
        );
        assert_eq!(
            e[1],
            "capacity: Invalid value: \"-1Gi\": must be greater than or equal to 0"
        );
        let mut d = c.clone();
        d.storage_class_name = "slow".into();
        assert_eq!(
            texts(capacity_update(&d, &c)),
            vec!["storageClassName: Invalid value: \"slow\": field is immutable"]
        );
        assert_eq!(
            capacity_cells(&json!({"metadata": {"name": "c"}, "storageClassName": "s"}))[2],
            json!("<unset>")
        );
    }
}
