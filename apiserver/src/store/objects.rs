//! The store as per-type code sees it ([`Objects`]): subresource handlers and admission plugins
//! call back into the same verbs a client's request goes through.

use std::sync::Arc;

use serde_json::Value;

use super::GenericStore;
use crate::error::Result;
use crate::patch::PatchType;
use crate::registry::objects::Change;
use crate::registry::{Objects, Resource, ResourceInfo};
use crate::request::{DeleteOpts, Deleted, WriteOpts, Written};
use crate::storage::cached::Cached;

#[async_trait::async_trait]
impl Objects for GenericStore {
    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.find(group, version, plural)
    }

    fn resources(&self) -> Vec<Resource> {
        GenericStore::resources(self)
    }

    fn any_cached(&self, r: &ResourceInfo, ns: &str) -> bool {
        self.cache(r)
            .any_under(&r.ns_prefix(self.etcd.prefix(), Some(ns)))
    }

    async fn cache_reaches(&self, r: &ResourceInfo, rev: i64) -> bool {
        self.cache(r)
            .reach(&self.etcd, rev, std::time::Duration::from_millis(200))
            .await
    }

    fn cached(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Option<Arc<Cached>> {
        self.cache(r).get(&self.key(r, ns, name))
    }

    fn cached_list(&self, r: &ResourceInfo, ns: Option<&str>) -> Vec<Arc<Cached>> {
        self.cache(r)
            .list(&r.ns_prefix(self.etcd.prefix(), ns), |_| true)
            .0
    }

    async fn get(&self, r: &Resource, ns: Option<&str>, name: &str) -> Result<Value> {
        GenericStore::get(self, r, ns, name).await
    }

    async fn update(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Written> {
        GenericStore::update(self, r, ns, name, obj, sub, opts).await
    }

    async fn patch(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        body: &Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Written> {
        GenericStore::patch(self, r, ns, name, ptype, body, sub, opts).await
    }

    async fn delete(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted> {
        GenericStore::delete(self, r, ns, name, opts).await
    }

    async fn guaranteed_update(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
        change: Change<'_>,
    ) -> Result<Value> {
        GenericStore::guaranteed_update(self, r, ns, name, dry_run, change).await
    }
}
