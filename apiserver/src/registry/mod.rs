//! The resources the server serves, and each one's behaviour: its strategy (defaults,
//! validation, name rule, allocations, graceful deletion, table columns, selectable fields)
//! and its subresources. One file per resource; nothing here knows how objects are stored.
//!
//! Built-in types are described by a static [`Builtin`]; the server serves them as
//! [`ResourceInfo`]s, which could as well be built at run time (a type that exists only once
//! someone defines it).

mod admission_policy;
mod apps;
mod batch;
pub mod cells;
pub mod certificates;
mod cluster;
pub mod componentstatus;
mod configmap;
mod controllerrevision;
pub mod crd;
pub mod custom;
mod endpoints;
mod event;
mod lease;
mod limitrange;
pub mod namespace;
mod node;
pub mod objects;
pub mod persistentvolume;
mod persistentvolumeclaim;
pub mod pod;
mod podtemplate;
pub mod policy;
mod rbac;
mod replicationcontroller;
mod resourcequota;
pub mod review;
mod runtimeclass;
pub mod service;
pub mod serviceaccount_token;
mod statefulset;
mod storage;
pub mod subresource;
mod webhook_configuration;

use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use cells::*;
pub use objects::Objects;
pub use subresource::Subresource;

use crate::auth::UserInfo;
use crate::error::{Cause, Result};
use crate::storage::cached::Indexer;
use crate::storage::{Etcd, SideEffect};
use crate::validation as v;

/// One column of a `Table` response.
#[derive(Debug, Clone)]
pub struct Column {
    /// Header text.
    pub name: Cow<'static, str>,
    /// OpenAPI type: `string`, `integer`, `date`.
    pub kind: Cow<'static, str>,
    /// `name` for the name column, else empty (or the format a custom column declares).
    pub format: Cow<'static, str>,
    /// 0 = always shown; 1 = only with `-o wide`.
    pub priority: u8,
    /// What the column means.
    pub description: Cow<'static, str>,
}

/// Shorthand for a column.
pub const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    let format = if matches!(name.as_bytes(), b"Name") {
        "name"
    } else {
        ""
    };
    Column {
        name: Cow::Borrowed(name),
        kind: Cow::Borrowed(kind),
        format: Cow::Borrowed(format),
        priority,
        description: Cow::Borrowed(description),
    }
}

/// Why an object was refused by its type.
#[derive(Debug)]
pub enum Rejection {
    /// It does not decode as the type (400).
    Decode(String),
    /// Fields are invalid (422).
    Invalid(Vec<Cause>),
}

/// What defaulting made of an object.
#[derive(Debug)]
pub struct Admitted {
    /// The decoded, defaulted object.
    pub value: Value,
    /// Paths of fields the type does not know (dropped).
    pub unknown: Vec<String>,
}

/// The rule a type's names follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most types).
    Subdomain,
    /// A DNS-1123 label (namespaces).
    Label,
    /// A DNS-1035 label (services).
    Dns1035,
    /// Any path segment (events, leases): kube-apiserver checks nothing more.
    PathSegment,
}

/// How objects print as `Table` rows (what `kubectl get` shows).
pub trait Printer: Send + Sync {
    /// The `Table` columns.
    fn columns(&self) -> Vec<Column>;
    /// One `Table` row's cells, in column order.
    fn cells(&self, obj: &Value) -> Vec<Value>;
}

/// Per-type behaviour. The generic store calls these at fixed points of every write: a type
/// changes what its objects go through only here.
#[async_trait::async_trait]
pub trait Strategy: Printer {
    /// Decodes `obj` as the type and fills in its defaults (before admission).
    fn default(&self, obj: Value) -> Result<Admitted, Rejection>;
    /// Validates an object (after admission), against `old` on update.
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Result<(), Rejection>;
    /// Whether the type has a `status` subresource (main writes then keep the old status).
    fn has_status(&self) -> bool;
    /// Changes made on create before defaulting (clearing status, setting phase, ...), knowing
    /// who creates it (a CertificateSigningRequest records its requester).
    fn prepare_create(&self, _obj: &mut Value, _user: &UserInfo) {}
    /// Changes made on update before defaulting, knowing the old object.
    fn prepare_update(&self, _new: &mut Value, _old: &Value) {}
    /// The rule the type's names follow.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }
    /// Whether a PUT of a missing object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }
    /// Assigns what the type allocates (addresses, ports) to a new or changed object, and the
    /// keys to claim and release in the same etcd transaction as the write.
    async fn allocate(
        &self,
        _etcd: &Etcd,
        _obj: &mut Value,
        _old: Option<&Value>,
    ) -> Result<Vec<SideEffect>> {
        Ok(Vec::new())
    }
    /// What a deleted object releases, in the same transaction as the delete.
    fn release(&self, _etcd: &Etcd, _obj: &Value) -> Vec<SideEffect> {
        Vec::new()
    }
    /// The grace period a delete gives the object (0: it goes at once).
    fn grace_period(&self, _obj: &Value, _requested: Option<i64>) -> i64 {
        0
    }
    /// Whether something besides `metadata.finalizers` still holds a deleting object.
    fn deletion_held(&self, _obj: &Value) -> bool {
        false
    }
    /// Changes made to an object when its deletion starts.
    fn prepare_delete(&self, _obj: &mut Value) {}
    /// Whether a finished delete answers with the object rather than a `Status`.
    fn return_deleted_object(&self) -> bool {
        false
    }
    /// The value of a selectable field the type computes rather than reads at its path.
    fn field(&self, _obj: &Value, _field: &str) -> Option<String> {
        None
    }
    /// How the type's lists merge under server-side apply, when not as the built-in types'
    /// strategic-merge keys say (a custom resource's schema).
    fn list_types(&self) -> Option<&Arc<dyn crate::apply::ListTypes>> {
        None
    }
    /// What strict decoding finds in a JSON body meant as this type, in the order the body
    /// names it: duplicate fields, and the unknown ones where the type knows its fields as
    /// the body is read (a custom resource's pruning finds its unknown fields later).
    fn strict_json(&self, body: &[u8]) -> Vec<crate::strict::Problem> {
        crate::strict::json_duplicates(body)
    }
}

/// A conversion under way: done at once (nothing to call), or waiting on a call out (a
/// conversion webhook). Either way one future, so that a conversion which needs nothing
/// outside the server costs no allocation.
pub type Converting<'a> = futures::future::Either<
    std::future::Ready<Result<()>>,
    futures::future::BoxFuture<'a, Result<()>>,
>;

/// A conversion finished without waiting.
pub fn converted(result: Result<()>) -> Converting<'static> {
    futures::future::Either::Left(std::future::ready(result))
}

/// A conversion that waits on `call`.
pub fn calling<'a>(
    call: impl std::future::Future<Output = Result<()>> + Send + 'a,
) -> Converting<'a> {
    futures::future::Either::Right(Box::pin(call))
}

/// The conversion between a served version's objects and their stored form. It works on
/// many objects at once (a list page, a watch's initial events), so a conversion that calls
/// out makes one call for them all; it may fail (the request then fails with its error).
pub trait Convert: Send + Sync {
    /// Turns objects of this version into their stored form, in place.
    fn to_stored<'a>(&'a self, objs: &'a mut [Value]) -> Converting<'a>;
    /// Turns stored objects into this version, in place.
    fn to_served<'a>(&'a self, stored: &'a mut [Value]) -> Converting<'a>;
    /// Whether stored JSON already reads as this version (no conversion needed).
    fn is_current(&self, _stored: &[u8]) -> bool {
        false
    }
    /// Whether an object converted to its stored form and back is the object again, so a
    /// write can answer with the object it wrote instead of reading the stored form back.
    fn round_trips(&self) -> bool {
        true
    }
}

/// An object of `from`'s version as `to`'s version of the same resource shows it, through
/// the stored form (a conversion webhook's failure fails it). Admission uses it to show an
/// object in the version a webhook or policy matched.
pub async fn convert_between(from: &ResourceInfo, to: &ResourceInfo, obj: &Value) -> Result<Value> {
    let mut v = [obj.clone()];
    if let Some(c) = &from.convert {
        c.to_stored(&mut v).await?;
    }
    if let Some(c) = &to.convert {
        c.to_served(&mut v).await?;
    }
    let [v] = v;
    Ok(v)
}

/// The conversion of versions whose objects differ in `apiVersion` alone (Kubernetes' `None`
/// conversion strategy of custom resources).
pub struct ApiVersionOnly {
    /// The `apiVersion` objects are stored in.
    stored: Value,
    /// This version's `apiVersion`.
    served: Value,
    /// How JSON already in this version begins: `{"apiVersion":"<served>"`.
    current: Vec<u8>,
}

impl ApiVersionOnly {
    /// Objects stored as `stored`, served as `served` (both `group/version`).
    pub fn new(stored: String, served: String) -> Self {
        let current = format!("{{\"apiVersion\":\"{served}\"").into_bytes();
        ApiVersionOnly {
            stored: Value::String(stored),
            served: Value::String(served),
            current,
        }
    }
}

/// Sets the `apiVersion` of every object in `objs`.
fn set_api_version(objs: &mut [Value], api_version: &Value) {
    for o in objs {
        if let Some(m) = o.as_object_mut() {
            m.insert("apiVersion".into(), api_version.clone());
        }
    }
}

impl Convert for ApiVersionOnly {
    fn to_stored<'a>(&'a self, objs: &'a mut [Value]) -> Converting<'a> {
        set_api_version(objs, &self.stored);
        converted(Ok(()))
    }

    fn to_served<'a>(&'a self, stored: &'a mut [Value]) -> Converting<'a> {
        set_api_version(stored, &self.served);
        converted(Ok(()))
    }

    fn is_current(&self, stored: &[u8]) -> bool {
        // Only where `apiVersion` leads, as it does in what clients send: the same words may
        // stand deeper in (`managedFields`), so anywhere else needs a real look.
        stored.starts_with(&self.current)
    }
}

/// What a type allocates from shared ranges (a Service's ClusterIP and NodePorts): claimed and
/// released in the same etcd transaction as the object's write.
#[async_trait::async_trait]
pub trait Allocator: Send + Sync {
    /// Assigns what `obj` needs and lacks, checks what it asks for, and returns the keys to
    /// claim and release (given `old`, what it no longer holds).
    async fn allocate(
        &self,
        etcd: &Etcd,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<Vec<SideEffect>>;
    /// The keys a deleted object releases.
    fn release(&self, etcd: &Etcd, obj: &Value) -> Vec<SideEffect>;
}

/// A strategy built from typed hooks over a k8s-openapi type.
pub struct Typed<T> {
    /// Whether the type has a status subresource.
    pub status: bool,
    /// Fills in defaults.
    pub defaults: fn(&mut T),
    /// Validates a new object.
    pub validate: fn(&T) -> Vec<Cause>,
    /// Validates an update (the new object was validated already).
    pub validate_update: fn(&T, &T) -> Vec<Cause>,
    /// What only a create may not carry (the new object was validated already).
    pub validate_create: fn(&T) -> Vec<Cause>,
    /// Create-time preparation on the raw object.
    pub prepare_create: fn(&mut Value),
    /// Update-time preparation on the raw object, knowing the old one.
    pub prepare_update: fn(&mut Value, &Value),
    /// The name rule.
    pub name_rule: NameRule,
    /// Whether a PUT may create.
    pub create_on_update: bool,
    /// The grace period a delete gives an object (given the requested one).
    pub grace_period: fn(&Value, Option<i64>) -> i64,
    /// Whether something besides `metadata.finalizers` holds a deleting object.
    pub deletion_held: fn(&Value) -> bool,
    /// Changes made when an object's deletion starts.
    pub prepare_delete: fn(&mut Value),
    /// Whether a finished delete answers with the object.
    pub return_deleted_object: bool,
    /// Table columns.
    pub columns: fn() -> Vec<Column>,
    /// Table cells.
    pub cells: fn(&Value) -> Vec<Value>,
    /// Computed selectable field values.
    pub field: fn(&Value, &str) -> Option<String>,
}

impl<T> Typed<T> {
    /// No defaults, validation, preparation, allocation or grace; subdomain names; no status.
    /// Columns and cells must be given.
    pub const fn new(columns: fn() -> Vec<Column>, cells: fn(&Value) -> Vec<Value>) -> Self {
        Typed {
            status: false,
            defaults: no_defaults::<T>,
            validate: no_validate::<T>,
            validate_update: no_validate_update::<T>,
            validate_create: no_validate::<T>,
            prepare_create: no_prepare,
            prepare_update: |_, _| {},
            name_rule: NameRule::Subdomain,
            create_on_update: false,
            grace_period: |_, _| 0,
            deletion_held: |_| false,
            prepare_delete: no_prepare,
            return_deleted_object: false,
            columns,
            cells,
            field: no_field,
        }
    }
}

/// No validation.
pub fn no_validate<T>(_: &T) -> Vec<Cause> {
    Vec::new()
}
/// No update validation.
pub fn no_validate_update<T>(_: &T, _: &T) -> Vec<Cause> {
    Vec::new()
}
/// No defaults.
pub fn no_defaults<T>(_: &mut T) {}
/// Nothing to prepare.
pub fn no_prepare(_: &mut Value) {}
/// No computed fields.
pub fn no_field(_: &Value, _: &str) -> Option<String> {
    None
}
/// Clears `status` on create.
pub fn clear_status(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
}

fn decode<T: DeserializeOwned>(obj: &Value) -> Result<T, Rejection> {
    T::deserialize(obj).map_err(|e| Rejection::Decode(e.to_string()))
}

#[async_trait::async_trait]
impl<T> Strategy for Typed<T>
where
    T: DeserializeOwned + Serialize + Send + Sync,
{
    fn default(&self, obj: Value) -> Result<Admitted, Rejection> {
        let mut typed: T = decode(&obj)?;
        (self.defaults)(&mut typed);
        let value = serde_json::to_value(&typed).map_err(|e| Rejection::Decode(e.to_string()))?;
        let mut unknown = Vec::new();
        unknown_fields(&obj, &value, "", &mut unknown);
        if !unknown.is_empty() {
            // Defaulting may consume write-only fields (a Secret's `stringData`): only what
            // decoding itself dropped is unknown.
            if let Ok(Ok(decoded)) = T::deserialize(&obj).map(|t| serde_json::to_value(&t)) {
                unknown.clear();
                unknown_fields(&obj, &decoded, "", &mut unknown);
            }
        }
        Ok(Admitted { value, unknown })
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Result<(), Rejection> {
        let typed: T = decode(obj)?;
        let mut causes = (self.validate)(&typed);
        match old {
            Some(old) => {
                if let Ok(old) = T::deserialize(old) {
                    causes.extend((self.validate_update)(&typed, &old));
                }
            }
            None => causes.extend((self.validate_create)(&typed)),
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(Rejection::Invalid(causes))
        }
    }

    fn has_status(&self) -> bool {
        self.status
    }

    fn strict_json(&self, body: &[u8]) -> Vec<crate::strict::Problem> {
        crate::strict::json_typed::<T>(body).unwrap_or_else(|| crate::strict::json_duplicates(body))
    }

    fn prepare_create(&self, obj: &mut Value, _user: &UserInfo) {
        (self.prepare_create)(obj)
    }

    fn prepare_update(&self, new: &mut Value, old: &Value) {
        (self.prepare_update)(new, old)
    }

    fn name_rule(&self) -> NameRule {
        self.name_rule
    }

    fn allow_create_on_update(&self) -> bool {
        self.create_on_update
    }

    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> i64 {
        (self.grace_period)(obj, requested)
    }

    fn deletion_held(&self, obj: &Value) -> bool {
        (self.deletion_held)(obj)
    }

    fn prepare_delete(&self, obj: &mut Value) {
        (self.prepare_delete)(obj)
    }

    fn return_deleted_object(&self) -> bool {
        self.return_deleted_object
    }

    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        (self.field)(obj, field)
    }
}

impl<T: Send + Sync> Printer for Typed<T> {
    fn columns(&self) -> Vec<Column> {
        (self.columns)()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        (self.cells)(obj)
    }
}

/// Collects the paths present in `input` that decoding dropped, keys in sorted order (as
/// kube-apiserver finds them in a YAML body or a patched object, which Go writes out sorted).
fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            let mut keys: Vec<&String> = i.keys().collect();
            keys.sort();
            for k in keys {
                let v = &i[k];
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    Some(ov) => unknown_fields(v, ov, &p, out),
                    None if v.is_null() => {}
                    // Empty objects and lists of optional fields serialize away; not unknown.
                    None if is_empty_value(v) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o.iter()).enumerate() {
                unknown_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.values().all(is_empty_value),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// A strategy that also allocates: every hook is the base strategy's, but for allocation and
/// release, which are the allocator's (a Service's strategy with the configured ranges).
pub struct WithAllocator {
    /// The type's own strategy.
    pub base: Shared<dyn Strategy>,
    /// What it allocates.
    pub allocator: Arc<dyn Allocator>,
}

#[async_trait::async_trait]
impl Strategy for WithAllocator {
    fn default(&self, obj: Value) -> Result<Admitted, Rejection> {
        self.base.default(obj)
    }
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Result<(), Rejection> {
        self.base.validate(obj, old)
    }
    fn has_status(&self) -> bool {
        self.base.has_status()
    }
    fn prepare_create(&self, obj: &mut Value, user: &UserInfo) {
        self.base.prepare_create(obj, user)
    }
    fn prepare_update(&self, new: &mut Value, old: &Value) {
        self.base.prepare_update(new, old)
    }
    fn name_rule(&self) -> NameRule {
        self.base.name_rule()
    }
    fn allow_create_on_update(&self) -> bool {
        self.base.allow_create_on_update()
    }
    async fn allocate(
        &self,
        etcd: &Etcd,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<Vec<SideEffect>> {
        self.allocator.allocate(etcd, obj, old).await
    }
    fn release(&self, etcd: &Etcd, obj: &Value) -> Vec<SideEffect> {
        self.allocator.release(etcd, obj)
    }
    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> i64 {
        self.base.grace_period(obj, requested)
    }
    fn deletion_held(&self, obj: &Value) -> bool {
        self.base.deletion_held(obj)
    }
    fn prepare_delete(&self, obj: &mut Value) {
        self.base.prepare_delete(obj)
    }
    fn return_deleted_object(&self) -> bool {
        self.base.return_deleted_object()
    }
    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        self.base.field(obj, field)
    }
    fn list_types(&self) -> Option<&Arc<dyn crate::apply::ListTypes>> {
        self.base.list_types()
    }
    fn strict_json(&self, body: &[u8]) -> Vec<crate::strict::Problem> {
        self.base.strict_json(body)
    }
}

impl Printer for WithAllocator {
    fn columns(&self) -> Vec<Column> {
        self.base.columns()
    }
    fn cells(&self, obj: &Value) -> Vec<Value> {
        self.base.cells(obj)
    }
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A behaviour object that is either compiled in (`'static`) or built at run time.
pub enum Shared<T: ?Sized + 'static> {
    /// A built-in one.
    Static(&'static T),
    /// One built at run time.
    Owned(Arc<T>),
}

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        match self {
            Shared::Static(s) => Shared::Static(s),
            Shared::Owned(a) => Shared::Owned(a.clone()),
        }
    }
}

impl<T: ?Sized> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Shared::Static(s) => s,
            Shared::Owned(a) => a,
        }
    }
}

/// The OpenAPI schema of a type, added to a generator (returns a reference to it).
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// The OpenAPI schema of a k8s-openapi type.
pub fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// A compiled-in resource.
pub struct Builtin {
    /// API group ("" for core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name (URL segment).
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether a spec change bumps `metadata.generation`.
    pub has_generation: bool,
    /// Fields field selectors may name beyond `metadata.name` and `metadata.namespace`.
    pub selectable: &'static [&'static str],
    /// The subresources served, by name.
    pub subresources: &'static [(&'static str, &'static dyn Subresource)],
    /// The type's strategy.
    pub strategy: &'static dyn Strategy,
    /// The type's OpenAPI schema.
    pub schema: SchemaFn,
}

/// A served resource.
pub struct ResourceInfo {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name (URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether a spec change bumps `metadata.generation`.
    pub has_generation: bool,
    /// Fields field selectors may name beyond `metadata.name` and `metadata.namespace`.
    pub selectable: Vec<String>,
    /// The subresources served, by name.
    pub subresources: Vec<(String, Shared<dyn Subresource>)>,
    /// The verbs served (and listed by discovery); others answer 405.
    pub verbs: &'static [&'static str],
    /// What discovery gives as `storageVersionHash`: a digest of the group, version and kind
    /// objects are stored as, by which storage migrators see a change of it. `None` for what
    /// is never stored.
    pub storage_version_hash: Option<String>,
    /// The type's strategy.
    pub strategy: Shared<dyn Strategy>,
    /// The type's OpenAPI schema, for types compiled in.
    pub schema: Option<SchemaFn>,
    /// The OpenAPI v3 schema of a type defined at run time (a custom resource's), as JSON.
    pub json_schema: Option<Value>,
    /// For a resource served only by `create` and never stored (an access review), what
    /// answers it.
    pub create_only: Option<Shared<dyn review::CreateOnly>>,
    /// For a resource whose objects are worked out when read and never stored (component
    /// statuses), what works them out: it is served by `get` and `list` alone.
    pub computed: Option<Shared<dyn componentstatus::Computed>>,
    /// Why creates are refused (403) for now, when they are (a custom resource whose
    /// definition is being deleted).
    pub refuse_create: Option<String>,
    /// How objects of this version differ from what is stored for them, when they do (a
    /// custom resource served in several versions, events.k8s.io's view of core events):
    /// writes store the stored form, reads answer in this version.
    pub convert: Option<Shared<dyn Convert>>,
    /// The warning every request of a deprecated version gets (`Warning: 299 - "..."`).
    pub deprecation: Option<String>,
    /// The directory under the etcd prefix that holds the objects: the plural for built-in
    /// types (`/registry/pods/...`), `GROUP/PLURAL` for custom ones, as kube-apiserver keeps
    /// them.
    pub storage: String,
    api_version: String,
    group_resource: String,
}

/// A served resource, shared.
pub type Resource = Arc<ResourceInfo>;

/// kube-apiserver's `storageVersionHash` of objects stored as `group/version/kind`: the first
/// eight bytes of the SHA-256 of that string, in base64.
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{group}/{version}/{kind}"));
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

/// The verbs of a resource stored as most are.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl From<&Builtin> for ResourceInfo {
    fn from(b: &Builtin) -> Self {
        let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        ResourceInfo::new(
            b.group,
            b.version,
            b.kind,
            b.plural,
            b.singular,
            b.namespaced,
            Shared::Static(b.strategy),
        )
        .with(|r| {
            r.short_names = strings(b.short_names);
            r.categories = strings(b.categories);
            r.has_generation = b.has_generation;
            r.selectable = strings(b.selectable);
            r.subresources = b
                .subresources
                .iter()
                .map(|(n, s)| (n.to_string(), Shared::Static(*s)))
                .collect();
            r.schema = Some(b.schema);
        })
    }
}

impl ResourceInfo {
    /// A resource with no short names, categories, generation, selectable fields or
    /// subresources.
    pub fn new(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        singular: &str,
        namespaced: bool,
        strategy: Shared<dyn Strategy>,
    ) -> Self {
        ResourceInfo {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: singular.into(),
            short_names: Vec::new(),
            categories: Vec::new(),
            namespaced,
            has_generation: false,
            selectable: Vec::new(),
            subresources: Vec::new(),
            verbs: ALL_VERBS,
            storage_version_hash: Some(storage_version_hash(group, version, kind)),
            strategy,
            schema: None,
            json_schema: None,
            create_only: None,
            computed: None,
            deprecation: None,
            refuse_create: None,
            convert: None,
            storage: plural.into(),
            api_version: if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            },
            group_resource: if group.is_empty() {
                plural.to_string()
            } else {
                format!("{plural}.{group}")
            },
        }
    }

    /// The resource changed by `f`.
    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// `pods` or `deployments.apps`, as error messages name a resource.
    pub fn group_resource(&self) -> &str {
        &self.group_resource
    }

    /// The etcd key prefix for the resource (ends in `/`).
    pub fn prefix(&self, root: &str) -> String {
        format!("{root}/{}/", self.storage)
    }

    /// The etcd key prefix for a namespace's objects, or for all if `ns` is None.
    pub fn ns_prefix(&self, root: &str, ns: Option<&str>) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{root}/{}/{ns}/", self.storage),
            _ => self.prefix(root),
        }
    }

    /// The etcd key of one object.
    pub fn key(&self, root: &str, ns: Option<&str>, name: &str) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{root}/{}/{ns}/{name}", self.storage),
            _ => format!("{root}/{}/{name}", self.storage),
        }
    }

    /// The handler of a subresource the resource serves.
    pub fn subresource(&self, name: &str) -> Option<&dyn Subresource> {
        self.subresources
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| &**s)
    }

    /// The verbs served, as discovery lists them.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.create_only.is_some() {
            return &["create"];
        }
        if self.computed.is_some() {
            return &["get", "list"];
        }
        self.verbs
    }

    /// The value of selectable field `field` of `obj`, as field selectors compare it.
    pub fn field_value(&self, obj: &Value, field: &str) -> String {
        match field {
            "metadata.name" => s(obj, "/metadata/name"),
            "metadata.namespace" => s(obj, "/metadata/namespace"),
            f => self.strategy.field(obj, f).unwrap_or_else(|| {
                let ptr = format!("/{}", f.replace('.', "/"));
                match obj.pointer(&ptr) {
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(Value::String(x)) => x.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(_) => String::new(),
                    // A boolean field left out is false, as Go's zero value reads.
                    None if is_bool_field(f) => "false".into(),
                    None => String::new(),
                }
            }),
        }
    }

    /// Validates a name by the type's rule.
    pub fn validate_name(&self, field: &str, name: &str, out: &mut Vec<Cause>) {
        if name == "." || name == ".." || name.contains('/') || name.contains('%') {
            out.push(Cause::invalid(
                field,
                &serde_json::json!(name),
                "may not contain '/' or '%' and may not be '.' or '..'",
            ));
            return;
        }
        match self.strategy.name_rule() {
            NameRule::Label => v::label_name(field, name, out),
            NameRule::Dns1035 => {
                if !v::is_dns1035_label(name) {
                    out.push(Cause::invalid(
                        field,
                        &serde_json::json!(name),
                        v::DNS1035_LABEL_MSG,
                    ));
                }
            }
            NameRule::PathSegment => {}
            NameRule::Subdomain => v::subdomain(field, name, out),
        }
    }
}

fn is_bool_field(f: &str) -> bool {
    matches!(f, "spec.unschedulable" | "spec.hostNetwork")
}

impl crate::selectors::SelectableFields for ResourceInfo {
    fn selectable(&self) -> &[String] {
        &self.selectable
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        ResourceInfo::field_value(self, obj, field)
    }
}

impl Indexer for ResourceInfo {
    fn fields(&self, obj: &Value) -> Vec<String> {
        self.selectable
            .iter()
            .map(|f| self.field_value(obj, f))
            .collect()
    }
}

/// Every compiled-in resource, in discovery order.
pub fn builtins() -> &'static [&'static Builtin] {
    BUILTINS
}

static BUILTINS: &[&Builtin] = &[
    &namespace::INFO,
    &pod::INFO,
    &node::INFO,
    &service::INFO,
    &endpoints::INFO,
    &configmap::CONFIGMAPS,
    &configmap::SECRETS,
    &configmap::SERVICEACCOUNTS,
    &event::INFO,
    &resourcequota::INFO,
    &limitrange::INFO,
    &persistentvolume::INFO,
    &persistentvolumeclaim::INFO,
    &podtemplate::INFO,
    &replicationcontroller::INFO,
    &apps::DEPLOYMENTS,
    &apps::REPLICASETS,
    &apps::DAEMONSETS,
    &statefulset::STATEFULSETS,
    &controllerrevision::CONTROLLERREVISIONS,
    &event::EVENTS_V1,
    &batch::JOBS,
    &batch::CRONJOBS,
    &lease::INFO,
    &endpoints::SLICES,
    &cluster::PRIORITYCLASSES,
    &rbac::ROLES,
    &rbac::CLUSTERROLES,
    &rbac::ROLEBINDINGS,
    &rbac::CLUSTERROLEBINDINGS,
    &certificates::INFO,
    &crd::INFO,
    &webhook_configuration::MUTATING,
    &webhook_configuration::VALIDATING,
    &admission_policy::POLICIES,
    &admission_policy::BINDINGS,
    &storage::STORAGECLASSES,
    &storage::CSIDRIVERS,
    &storage::CSINODES,
    &storage::VOLUMEATTACHMENTS,
    &storage::CSISTORAGECAPACITIES,
    &policy::PODDISRUPTIONBUDGETS,
    &runtimeclass::RUNTIMECLASSES,
];

/// Every compiled-in resource as the server serves it, Services allocating from `ranges`.
pub fn served(ranges: &service::allocator::Ranges) -> Vec<ResourceInfo> {
    BUILTINS
        .iter()
        .map(|b| match (b.group, b.plural) {
            ("", "services") => service::info(ranges.clone()),
            ("", "namespaces") => namespace::info(),
            ("events.k8s.io", "events") => event::events_v1(),
            ("apiextensions.k8s.io", "customresourcedefinitions") => crd::info(),
            _ => ResourceInfo::from(*b),
        })
        .collect()
}

/// A compiled-in resource by group and plural, as a [`ResourceInfo`] of its own (tests and
/// tools; the server looks resources up in what it serves).
pub fn builtin(group: &str, plural: &str) -> Option<Resource> {
    BUILTINS
        .iter()
        .find(|b| b.group == group && b.plural == plural)
        .map(|b| Arc::new(ResourceInfo::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_reported_by_path() {
        let input =
            json!({"spec": {"containers": [{"name": "a", "imagee": "x"}], "nope": 1}, "x": null});
        let output = json!({"spec": {"containers": [{"name": "a"}]}});
        let mut out = Vec::new();
        unknown_fields(&input, &output, "", &mut out);
        assert_eq!(out, vec!["spec.containers[0].imagee", "spec.nope"]);
    }

    #[test]
    fn every_builtin_subresource_is_served_by_a_handler() {
        for b in builtins() {
            let r = ResourceInfo::from(*b);
            for (name, _) in b.subresources {
                assert!(r.subresource(name).is_some(), "{}/{name}", b.plural);
            }
        }
    }

    #[test]
    fn names_follow_the_type_rule() {
        let check = |plural: &str, group: &str, name: &str| {
            let r = builtin(group, plural).unwrap();
            let mut out = Vec::new();
            r.validate_name("metadata.name", name, &mut out);
            out.is_empty()
        };
        assert!(check("pods", "", "web.1"));
        assert!(!check("namespaces", "", "web.1"));
        assert!(!check("services", "", "1web"));
        assert!(check("events", "", "Any_Thing"));
        assert!(!check("events", "", "a/b"));
    }
}
