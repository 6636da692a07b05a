//! What per-type code may ask of the store: reads, and writes that go through the same path
//! as a client's. Subresources and admission plugins see the store only through this trait,
//! so they sit below it and the store knows none of them by name.

use std::sync::Arc;

use serde_json::Value;

use super::{Resource, ResourceInfo};
use crate::error::Result;
use crate::patch::PatchType;
use crate::request::{DeleteOpts, Deleted, WriteOpts, Written};
use crate::storage::cached::Cached;

/// A change applied by [`Objects::guaranteed_update`].
pub type Change<'a> = &'a (dyn Fn(&mut Value) -> Result<()> + Send + Sync);

/// The store, as per-type code sees it.
#[async_trait::async_trait]
pub trait Objects: Send + Sync {
    /// A served resource.
    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Resource>;
    /// Every served resource.
    fn resources(&self) -> Vec<Resource>;
    /// Whether the watch cache holds any object of a resource in a namespace.
    fn any_cached(&self, r: &ResourceInfo, ns: &str) -> bool;
    /// Whether a resource's watch cache reflects every write up to revision `rev` (waiting a
    /// little for it to get there).
    async fn cache_reaches(&self, r: &ResourceInfo, rev: i64) -> bool;
    /// An object as the watch cache holds it (what informers would see).
    fn cached(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Option<Arc<Cached>>;
    /// Every object of a resource (in a namespace) as the watch cache holds them.
    fn cached_list(&self, r: &ResourceInfo, ns: Option<&str>) -> Vec<Arc<Cached>>;
    /// Reads one object consistently (from etcd).
    async fn get(&self, r: &Resource, ns: Option<&str>, name: &str) -> Result<Value>;
    /// Replaces an object (`sub = Some("status")`: its status only), through admission.
    async fn update(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Written>;
    /// Patches an object (`sub = Some("status")`: its status only), through admission.
    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        body: &Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Written>;
    /// Deletes an object, through admission.
    async fn delete(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted>;
    /// Applies `change` to the stored object and writes it back, retrying when the object
    /// changed meanwhile; no admission or validation runs (the caller's own rules stand for
    /// them, as for a pod's binding). Returns the object written.
    async fn guaranteed_update(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
        change: Change<'_>,
    ) -> Result<Value>;
}
