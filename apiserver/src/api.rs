//! The operations behind both front doors: get, list, watch, create, update, patch, delete.
//!
//! Everything a write goes through lives here, once: metadata handling, admission (defaults
//! and validation from the resource's strategy), status-subresource rules, allocation of
//! service addresses, optimistic concurrency and graceful deletion.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::allocator::{self, Ranges};
use crate::error::{Cause, Error, Result};
use crate::metrics::Metrics;
use crate::patch::{self, PatchType};
use crate::registry::{self, Admitted, Rejection, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::storage::cached::{with_rv, Cached};
use crate::storage::watch_cache::{Event, EventType, Subscription, WatchCache};
use crate::storage::{SideEffect, Store, Stored, WriteOutcome};
use crate::validation as v;

/// What to do with fields the type does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn.
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

impl WriteOpts {
    /// The field manager recorded for an ordinary write.
    pub fn manager(&self) -> &str {
        self.field_manager
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
    }
}

impl FieldValidation {
    /// Parses the `fieldValidation` query parameter.
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(o) => Err(Error::bad_request(format!(
                "fieldValidation parameter unsupported: {o} (valid values: Ignore, Warn, Strict)"
            ))),
        }
    }
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: do everything but store.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `force` (server-side apply).
    pub force: bool,
}

/// The result of a write.
#[derive(Debug)]
pub struct Written {
    /// The object as stored.
    pub object: Value,
    /// Warnings for the client (`Warning` headers).
    pub warnings: Vec<String>,
    /// Whether the object was created (201) rather than updated (200).
    pub created: bool,
}

/// Delete options (the body of a DELETE, or its query parameters).
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `propagationPolicy`: Orphan, Background, Foreground.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; here is its last state.
    Gone(Value),
    /// Deletion has started (grace period or finalizers); here is the object now.
    Pending(Value),
}

/// List options.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 = no limit).
    pub limit: i64,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
}

/// A list result.
#[derive(Debug)]
pub struct Listed {
    /// The items.
    pub items: Vec<Arc<Cached>>,
    /// The list's resourceVersion.
    pub rv: i64,
    /// The continue token, if more remain.
    pub continue_token: Option<String>,
    /// How many items remain, when known.
    pub remaining: Option<i64>,
}

/// Watch options.
#[derive(Debug, Clone, Default)]
pub struct WatchOpts {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: bool,
}

/// How long a client watch lasts: what it asked for, else 30 to 60 minutes at random (so
/// watches started together do not all end together), as kube-apiserver does.
pub fn watch_duration(requested_seconds: Option<i64>) -> Duration {
    match requested_seconds {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => Duration::from_secs(1800 + rand::rng().random_range(0..1800)),
    }
}

/// A filtered client watch.
pub struct Watch {
    sub: Subscription,
    initial: std::collections::VecDeque<Arc<Event>>,
    resource: &'static ResourceInfo,
    ns_prefix: Option<String>,
    opts: WatchOpts,
    initial_end_pending: bool,
    last_rv: i64,
    /// The resourceVersion the watch resumes after (None: starts from the current state).
    from: Option<i64>,
    /// Whether the initial events have been delivered.
    caught_up: bool,
}

/// One event for a client.
#[derive(Debug, Clone)]
pub struct WatchItem {
    /// ADDED, MODIFIED, DELETED, BOOKMARK.
    pub kind: EventType,
    /// The object (for bookmarks: only kind, apiVersion and resourceVersion).
    pub object: Arc<Cached>,
    /// The underlying event, whose serialization is shared between watchers.
    pub event: Option<Arc<Event>>,
}

impl Watch {
    fn matches(&self, obj: &Cached) -> bool {
        let key_ok = match &self.ns_prefix {
            Some(ns) => obj.namespace == *ns,
            None => true,
        };
        key_ok && self.opts.labels.matches_cached(obj) && self.opts.fields.matches_cached(obj)
    }

    fn bookmark(&self, rv: i64, initial_end: bool) -> WatchItem {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        WatchItem {
            kind: EventType::Bookmark,
            object: Arc::new(Cached::from_value(
                self.resource,
                &json!({
                    "kind": self.resource.kind,
                    "apiVersion": self.resource.api_version(),
                    "metadata": meta,
                }),
                rv,
            )),
            event: None,
        }
    }

    fn filter(&mut self, ev: Arc<Event>, initial: bool) -> Option<WatchItem> {
        if ev.kind == EventType::Bookmark {
            // A bookmark at the revision the client already has is still progress news.
            if ev.rv < self.last_rv || !self.caught_up {
                return None;
            }
            self.last_rv = ev.rv;
            return self.opts.bookmarks.then(|| self.bookmark(ev.rv, false));
        }
        // Initial events come in key order, not revision order; live ones are deduplicated
        // against what the client has already been brought to.
        if !initial {
            if ev.rv <= self.last_rv {
                return None;
            }
            self.last_rv = ev.rv;
        }
        let now = self.matches(&ev.object);
        let kind = match ev.kind {
            EventType::Modified => {
                let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            k if now => k,
            _ => return None,
        };
        Some(WatchItem {
            kind,
            object: ev.object.clone(),
            event: Some(ev),
        })
    }

    /// The next event before `deadline`, or None when the deadline passes, `shutdown` is
    /// cancelled or the feed closes: the end of a client's watch stream.
    pub async fn next_before(
        &mut self,
        shutdown: &tokio_util::sync::CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Option<WatchItem> {
        tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = tokio::time::sleep_until(deadline) => None,
            item = self.next() => item,
        }
    }

    /// The next event, or None when the cache closed the feed (the client must re-watch).
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            if let Some(ev) = self.initial.pop_front() {
                // The current state comes in key order; replayed history is in revision order
                // and is deduplicated like live events.
                if let Some(item) = self.filter(ev, self.from.is_none()) {
                    return Some(item);
                }
                continue;
            }
            if !self.caught_up {
                self.caught_up = true;
                self.last_rv = self.last_rv.max(self.sub.rev);
            }
            if self.initial_end_pending {
                self.initial_end_pending = false;
                return Some(self.bookmark(self.last_rv, true));
            }
            match self.sub.rx.recv().await {
                Ok(ev) => {
                    if let Some(item) = self.filter(ev, false) {
                        return Some(item);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return None,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The API's state: the store, one watch cache per resource, and the service ranges.
pub struct Api {
    /// The etcd store.
    pub store: Store,
    caches: HashMap<(&'static str, &'static str), Arc<WatchCache>>,
    /// Service IP and port ranges.
    pub ranges: Ranges,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Namespaces deleted through this server lately, with when: the namespace cache may not
    /// show them terminating yet, so creates in them look the namespace up in etcd.
    deleted_namespaces: parking_lot::Mutex<HashMap<String, std::time::Instant>>,
    /// What the DefaultTolerationSeconds admission gives new pods.
    pub default_tolerations: DefaultTolerations,
}

/// The DefaultTolerationSeconds admission plugin's settings: a new pod that does not tolerate
/// the `node.kubernetes.io/not-ready` or `unreachable` `NoExecute` taint gets a toleration of
/// it for this many seconds, so it is evicted that long after its node is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    /// For `node.kubernetes.io/not-ready`.
    pub not_ready_seconds: i64,
    /// For `node.kubernetes.io/unreachable`.
    pub unreachable_seconds: i64,
}

impl Default for DefaultTolerations {
    /// Kubernetes' five minutes for both.
    fn default() -> Self {
        DefaultTolerations {
            not_ready_seconds: 300,
            unreachable_seconds: 300,
        }
    }
}

impl DefaultTolerations {
    /// Adds the tolerations `pod` lacks (a toleration of every key with `Exists` counts).
    fn admit(&self, pod: &mut Value) {
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        let list = spec.entry("tolerations").or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        let list = list.as_array_mut().expect("array");
        for (key, seconds) in [
            ("node.kubernetes.io/not-ready", self.not_ready_seconds),
            ("node.kubernetes.io/unreachable", self.unreachable_seconds),
        ] {
            let has = list.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                (k == key || k.is_empty() && op == "Exists")
                    && (effect.is_empty() || effect == "NoExecute")
            });
            if !has {
                list.push(
                    json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                 "tolerationSeconds": seconds}),
                );
            }
        }
    }
}

/// How long after a namespace's deletion creates in it check it in etcd.
const DELETED_NAMESPACE_LIVE_LOOKUP: Duration = Duration::from_secs(30);

const GENERATE_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a namespace's `spec.finalizers` still hold it in Terminating (until it is empty).
fn spec_finalizers_hold(r: &ResourceInfo, obj: &Value) -> bool {
    r.plural == "namespaces"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.as_object().cloned().unwrap_or_default();
    o.remove("metadata");
    o.remove("status");
    o.remove("apiVersion");
    o.remove("kind");
    Value::Object(o)
}

/// Whether two stored objects are the same write (resourceVersion aside).
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// Validation of metadata shared by every type.
fn validate_meta(r: &ResourceInfo, obj: &Value, out: &mut Vec<Cause>) {
    let name = meta_str(obj, "name");
    let generate = meta_str(obj, "generateName");
    if name.is_empty() {
        if generate.is_empty() {
            out.push(Cause {
                kind: crate::error::CauseKind::Required,
                field: "metadata.name".into(),
                message: "name or generateName is required".into(),
            });
        }
    } else {
        validate_name(r, "metadata.name", name, out);
    }
    let labels: Option<std::collections::BTreeMap<String, String>> = meta(obj)
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    v::labels("metadata.labels", labels.as_ref(), out);
    let ann: Option<std::collections::BTreeMap<String, String>> = meta(obj)
        .and_then(|m| m.get("annotations"))
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    v::annotations("metadata.annotations", ann.as_ref(), out);
    for (n, f) in finalizers(obj).iter().enumerate() {
        let mut c = Vec::new();
        v::qualified_name(&format!("metadata.finalizers[{n}]"), f, &mut c);
        out.extend(c);
    }
    for (n, o) in meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for f in ["apiVersion", "kind", "name", "uid"] {
            if o.get(f).and_then(Value::as_str).unwrap_or("").is_empty() {
                out.push(Cause::required(format!(
                    "metadata.ownerReferences[{n}].{f}"
                )));
            }
        }
    }
}

/// A resource's naming rule.
pub fn validate_name(r: &ResourceInfo, field: &str, name: &str, out: &mut Vec<Cause>) {
    if name == "." || name == ".." || name.contains('/') || name.contains('%') {
        out.push(Cause::invalid(
            field,
            &json!(name),
            "may not contain '/' or '%' and may not be '.' or '..'",
        ));
        return;
    }
    match r.plural {
        "namespaces" => v::label_name(field, name, out),
        "services" => {
            if !v::is_dns1035_label(name) {
                out.push(Cause::invalid(field, &json!(name), v::DNS1035_LABEL_MSG));
            }
        }
        // Events and leases take any path-segment name; kube-apiserver checks nothing more.
        "events" | "leases" => {}
        _ => v::subdomain(field, name, out),
    }
}

fn admit_error(r: &ResourceInfo, name: &str, rej: Rejection) -> Error {
    match rej {
        Rejection::Decode(msg) => Error::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {msg}",
            r.kind, r.version, r.kind
        )),
        Rejection::Invalid(causes) => Error::invalid(r.kind, r.group, name, causes),
    }
}

/// kube-apiserver's continue token: base64 JSON with the revision and the next key.
fn encode_continue(rv: i64, start: &str) -> String {
    let t = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String)> {
    let bad = || Error::bad_request(format!("continue key is not valid: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, start))
}

fn parse_rv(s: &str) -> Result<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::bad_request(format!("invalid resource version \"{s}\"")))
}

/// Resources whose PUT may create a missing object, as in kube-apiserver.
fn create_on_update(r: &ResourceInfo) -> bool {
    matches!(
        r.plural,
        "leases" | "endpoints" | "events" | "endpointslices"
    )
}

impl Api {
    /// Sets up the API over `store`, with a watch cache per resource (not yet running).
    pub fn new(store: Store, ranges: Ranges, metrics: Arc<Metrics>, cache_capacity: usize) -> Self {
        let caches = registry::all()
            .iter()
            .map(|r| {
                (
                    (r.group, r.plural),
                    WatchCache::new(r, r.prefix(store.prefix()), cache_capacity),
                )
            })
            .collect();
        Api {
            store,
            caches,
            ranges,
            metrics,
            deleted_namespaces: Default::default(),
            default_tolerations: DefaultTolerations::default(),
        }
    }

    /// The watch cache of a resource.
    pub fn cache(&self, r: &ResourceInfo) -> &Arc<WatchCache> {
        &self.caches[&(r.group, r.plural)]
    }

    /// Every watch cache.
    pub fn caches(&self) -> impl Iterator<Item = &Arc<WatchCache>> {
        self.caches.values()
    }

    /// Tells the resource's watch cache what was just written, so its watch event needs no
    /// decoding.
    fn hint(&self, r: &ResourceInfo, key: &str, value: &Value, stored: &[u8], rev: i64) {
        let cached = Cached::new(r, value, with_rv(stored, rev), rev);
        self.cache(r).hint(key, Arc::new(cached));
    }

    fn key(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
        r.key(self.store.prefix(), ns, name)
    }

    /// Reads one object (consistently, from etcd).
    pub async fn get(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Value> {
        self.get_stored(r, ns, name).await.map(|s| s.value)
    }

    /// Reads an object as its JSON bytes (with `resourceVersion`), without decoding it.
    pub async fn get_json(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<bytes::Bytes> {
        let (raw, rv) = self
            .store
            .get_raw(&self.key(r, ns, name))
            .await?
            .ok_or_else(|| Error::not_found(&r.group_resource(), name))?;
        Ok(with_rv(&raw, rv))
    }

    async fn get_stored(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Stored> {
        self.store
            .get(&self.key(r, ns, name))
            .await?
            .ok_or_else(|| Error::not_found(&r.group_resource(), name))
    }

    /// Checks that a namespace exists and accepts new objects.
    async fn check_namespace(&self, ns: &str) -> Result<()> {
        let nsr = registry::find("", "v1", "namespaces").expect("namespaces are served");
        let key = self.key(nsr, None, ns);
        let live = {
            let mut deleted = self.deleted_namespaces.lock();
            deleted.retain(|_, at| at.elapsed() < DELETED_NAMESPACE_LIVE_LOOKUP);
            deleted.contains_key(ns)
        };
        let cached = if live {
            None
        } else {
            self.cache(nsr).get(&key)
        };
        let deleting = match cached {
            Some(c) => Some(c.deleting),
            None => self
                .store
                .get(&key)
                .await?
                .map(|s| meta(&s.value).is_some_and(|m| m.contains_key("deletionTimestamp"))),
        };
        match deleting {
            None => Err(Error::not_found("namespaces", ns)),
            Some(true) => Err(Error::namespace_terminating(ns)),
            Some(false) => Ok(()),
        }
    }

    /// Fills in apiVersion and kind, or checks them against the resource.
    fn check_type(&self, r: &ResourceInfo, obj: &mut Value) -> Result<()> {
        let Some(o) = obj.as_object_mut() else {
            return Err(Error::bad_request(format!(
                "the body of the request must be a JSON object describing a {}",
                r.kind
            )));
        };
        let want = r.api_version();
        match o.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                o.insert("apiVersion".into(), json!(want));
            }
            Some(v) if v == want => {}
            Some(v) => {
                return Err(Error::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want})"
                )))
            }
        }
        match o.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                o.insert("kind".into(), json!(r.kind));
            }
            Some(k) if k == r.kind => {}
            Some(k) => {
                return Err(Error::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    r.kind
                )))
            }
        }
        if !o.get("metadata").is_none_or(Value::is_object) {
            return Err(Error::bad_request("metadata must be an object"));
        }
        Ok(())
    }

    fn check_namespace_field(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        obj: &mut Value,
    ) -> Result<()> {
        let m = meta_mut(obj);
        if r.namespaced {
            let ns = ns.unwrap_or("");
            match m.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    m.insert("namespace".into(), json!(ns));
                }
                Some(n) if n == ns => {}
                Some(_) => {
                    return Err(Error::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
            }
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    fn admit(
        &self,
        r: &ResourceInfo,
        obj: Value,
        old: Option<&Value>,
        fv: FieldValidation,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let mut causes = Vec::new();
        validate_meta(r, &obj, &mut causes);
        let name = meta_str(&obj, "name").to_string();
        if !causes.is_empty() {
            return Err(Error::invalid(r.kind, r.group, &name, causes));
        }
        let Admitted { value, unknown } = r
            .strategy
            .admit(obj, old)
            .map_err(|e| admit_error(r, &name, e))?;
        if !unknown.is_empty() {
            match fv {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(Error::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")))
                }
                FieldValidation::Ignore => {}
            }
        }
        Ok(value)
    }

    /// Creates an object.
    pub async fn create(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        self.create_as(r, ns, obj, opts, false).await
    }

    /// Creates an object; `applied` when server-side apply creates it (its managed fields
    /// then belong to the applier, operation `Apply`).
    async fn create_as(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOpts,
        applied: bool,
    ) -> Result<Written> {
        self.check_type(r, &mut obj)?;
        self.check_namespace_field(r, ns, &mut obj)?;
        if r.namespaced {
            self.check_namespace(ns.unwrap_or("")).await?;
        }
        {
            let m = meta_mut(&mut obj);
            if m.get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return Err(Error::bad_request(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "resourceVersion",
                "managedFields",
            ] {
                m.remove(f);
            }
            if m.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                if let Some(base) = m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|b| !b.is_empty())
                {
                    let base = if base.len() > 58 { &base[..58] } else { base };
                    let mut rng = rand::rng();
                    let suffix: String = (0..5)
                        .map(|_| GENERATE_CHARS[rng.random_range(0..GENERATE_CHARS.len())] as char)
                        .collect();
                    m.insert("name".into(), json!(format!("{base}{suffix}")));
                }
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            if r.has_generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        r.strategy.prepare_create(&mut obj);
        let mut warnings = Vec::new();
        let mut obj = self.admit(r, obj, None, opts.field_validation, &mut warnings)?;
        if applied {
            crate::apply::record_apply(&mut obj, opts)?;
        } else {
            crate::apply::record_update(&mut obj, None, opts.manager(), "");
        }
        self.admission_extras(r, &mut obj).await?;
        let name = meta_str(&obj, "name").to_string();
        let key = self.key(r, ns, &name);
        for _ in 0..8 {
            let mut attempt = obj.clone();
            let effects = if r.plural == "services" {
                allocator::plan(&self.store, &self.ranges, &mut attempt, None)
                    .await?
                    .effects
            } else {
                Vec::new()
            };
            if opts.dry_run {
                return Ok(Written {
                    object: attempt,
                    warnings,
                    created: true,
                });
            }
            let bytes = crate::storage::encode(&attempt);
            let hint_bytes = bytes.clone();
            match self.store.create(&key, bytes, &effects).await? {
                WriteOutcome::Done(rev) => {
                    crate::storage::set_rv(&mut attempt, rev);
                    self.hint(r, &key, &attempt, &hint_bytes, rev);
                    return Ok(Written {
                        object: attempt,
                        warnings,
                        created: true,
                    });
                }
                WriteOutcome::Mismatch(_) => {
                    return Err(Error::already_exists(&r.group_resource(), &name))
                }
                // Another writer took the address or port we picked: pick again.
                WriteOutcome::ClaimTaken => continue,
            }
        }
        Err(Error::internal(
            "could not allocate service addresses after several attempts",
        ))
    }

    /// Admission steps that need the store (pod priority from its class).
    async fn admission_extras(&self, r: &ResourceInfo, obj: &mut Value) -> Result<()> {
        if r.plural != "pods" {
            return Ok(());
        }
        self.default_tolerations.admit(obj);
        let class = obj
            .pointer("/spec/priorityClassName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if class.is_empty() {
            return Ok(());
        }
        let value = match class.as_str() {
            "system-node-critical" => 2_000_001_000,
            "system-cluster-critical" => 2_000_000_000,
            _ => {
                let pcr =
                    registry::find("scheduling.k8s.io", "v1", "priorityclasses").expect("served");
                let pc = self.get(pcr, None, &class).await.map_err(|_| {
                    Error::forbidden(format!(
                        "pods \"{}\" is forbidden: no PriorityClass with name {class} was found",
                        meta_str(obj, "name")
                    ))
                })?;
                if let Some(p) = pc.get("preemptionPolicy") {
                    obj["spec"]["preemptionPolicy"] = p.clone();
                }
                pc.get("value").and_then(Value::as_i64).unwrap_or(0)
            }
        };
        obj["spec"]["priority"] = json!(value);
        Ok(())
    }

    /// Replaces an object (PUT), or its status (`sub = Some("status")`).
    pub async fn update(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Written> {
        self.check_type(r, &mut obj)?;
        self.check_namespace_field(r, ns, &mut obj)?;
        let body_name = meta_str(&obj, "name").to_string();
        if body_name.is_empty() {
            meta_mut(&mut obj).insert("name".into(), json!(name));
        } else if body_name != name {
            return Err(Error::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = match meta_str(&obj, "resourceVersion") {
            "" => None,
            s => Some(
                parse_rv(s)
                    .map_err(|_| Error::bad_request(format!("invalid resourceVersion \"{s}\"")))?,
            ),
        };
        let key = self.key(r, ns, name);
        let mut warnings = Vec::new();
        loop {
            let current = match self.store.get(&key).await? {
                Some(c) => c,
                None if sub.is_none() && create_on_update(r) => {
                    return self.create(r, ns, obj, opts).await;
                }
                None => return Err(Error::not_found(&r.group_resource(), name)),
            };
            if let Some(p) = precondition {
                if p != current.rv {
                    return Err(Error::stale(&r.group_resource(), name));
                }
            }
            warnings.clear();
            let next = self.prepare_update(
                r,
                obj.clone(),
                &current.value,
                sub,
                opts,
                false,
                &mut warnings,
            )?;
            match self
                .commit_update(r, &key, name, current, next, opts)
                .await?
            {
                Some(w) => {
                    return Ok(Written {
                        object: w,
                        warnings,
                        created: false,
                    });
                }
                None if precondition.is_some() => {
                    return Err(Error::stale(&r.group_resource(), name))
                }
                None => continue,
            }
        }
    }

    /// Builds the object an update will store, from the request's object and the current one.
    #[allow(clippy::too_many_arguments)]
    fn prepare_update(
        &self,
        r: &ResourceInfo,
        mut obj: Value,
        old: &Value,
        sub: Option<&str>,
        opts: &WriteOpts,
        applied: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        match sub {
            Some("status") => {
                // Only status (and labels/annotations) change through /status.
                let mut next = old.clone();
                next["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
                if next["status"].is_null() {
                    next.as_object_mut().map(|o| o.remove("status"));
                }
                for f in ["labels", "annotations"] {
                    match meta(&obj).and_then(|m| m.get(f)) {
                        Some(v) => {
                            meta_mut(&mut next).insert(f.into(), v.clone());
                        }
                        None => {
                            meta_mut(&mut next).remove(f);
                        }
                    }
                }
                obj = next;
            }
            Some(other) if !other.is_empty() => {
                return Err(Error::not_found_message(format!(
                    "the server could not find the requested resource ({other})"
                )))
            }
            _ => {
                if r.strategy.has_status() {
                    match old.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            obj.as_object_mut().map(|o| o.remove("status"));
                        }
                    }
                }
            }
        }
        // System-owned metadata always comes from the stored object.
        let old_meta = meta(old).cloned().unwrap_or_default();
        let m = meta_mut(&mut obj);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "generateName",
        ] {
            match old_meta.get(f) {
                Some(v) => {
                    m.insert(f.into(), v.clone());
                }
                None => {
                    m.remove(f);
                }
            }
        }
        m.remove("selfLink");
        if !m.contains_key("managedFields") {
            if let Some(mf) = old_meta.get("managedFields") {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        if old_meta.contains_key("deletionTimestamp") {
            // A deleting object may lose finalizers but gain none.
            let old_f = finalizers(old);
            let added: Vec<String> = finalizers(&obj)
                .into_iter()
                .filter(|f| !old_f.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(Error::invalid(
                    r.kind,
                    r.group,
                    meta_str(old, "name"),
                    vec![Cause::forbidden("metadata.finalizers", format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"))],
                ));
            }
        }
        let mut next = self.admit(r, obj, Some(old), opts.field_validation, warnings)?;
        if !applied {
            crate::apply::record_update(&mut next, Some(old), opts.manager(), sub.unwrap_or(""));
        }
        if r.has_generation {
            let gen = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let gen = if spec_part(&next) != spec_part(old) {
                gen + 1
            } else {
                gen
            };
            meta_mut(&mut next).insert("generation".into(), json!(gen));
        }
        Ok(next)
    }

    /// Writes a prepared update: a no-op if nothing changed, a delete if the last finalizer of
    /// a deleting object went. None on a lost race.
    async fn commit_update(
        &self,
        r: &'static ResourceInfo,
        key: &str,
        name: &str,
        current: Stored,
        mut next: Value,
        opts: &WriteOpts,
    ) -> Result<Option<Value>> {
        let mut effects = Vec::new();
        if r.plural == "services" {
            effects = allocator::plan(&self.store, &self.ranges, &mut next, Some(&current.value))
                .await?
                .effects;
        }
        if same_object(&next, &current.value) {
            return Ok(Some(current.value));
        }
        if opts.dry_run {
            return Ok(Some(next));
        }
        let deleting = meta(&next).is_some_and(|m| m.contains_key("deletionTimestamp"));
        let grace = next
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if deleting && finalizers(&next).is_empty() && !spec_finalizers_hold(r, &next) && grace == 0
        {
            if r.plural == "services" {
                effects = allocator::releases(&self.store, &current.value);
            }
            return match self.store.delete(key, current.rv, &effects).await? {
                WriteOutcome::Done(rev) => {
                    crate::storage::set_rv(&mut next, rev);
                    Ok(Some(next))
                }
                _ => Ok(None),
            };
        }
        let bytes = crate::storage::encode(&next);
        let hint_bytes = bytes.clone();
        match self
            .store
            .update_encoded(key, bytes, current.rv, &effects)
            .await?
        {
            WriteOutcome::Done(rev) => {
                crate::storage::set_rv(&mut next, rev);
                self.hint(r, key, &next, &hint_bytes, rev);
                Ok(Some(next))
            }
            WriteOutcome::Mismatch(None) => Err(Error::not_found(&r.group_resource(), name)),
            WriteOutcome::Mismatch(Some(_)) | WriteOutcome::ClaimTaken => Ok(None),
        }
    }

    /// Patches an object or its status.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        body: &Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Written> {
        let key = self.key(r, ns, name);
        let mut warnings = Vec::new();
        loop {
            let current = match self.store.get(&key).await? {
                Some(c) => c,
                None if ptype == PatchType::Apply && sub.is_none() => {
                    return self.create_as(r, ns, body.clone(), opts, true).await;
                }
                None => return Err(Error::not_found(&r.group_resource(), name)),
            };
            let mut doc = current.value.clone();
            match ptype {
                PatchType::Apply => crate::apply::apply(&mut doc, body, opts)?,
                other => patch::apply_patch(&mut doc, other, body)?,
            }
            // A patch that sets resourceVersion makes it a precondition.
            let patched_rv = meta_str(&doc, "resourceVersion").to_string();
            let precondition = if patched_rv != current.rv.to_string() && !patched_rv.is_empty() {
                return Err(Error::stale(&r.group_resource(), name));
            } else {
                body.pointer("/metadata/resourceVersion").is_some()
            };
            if meta_str(&doc, "name") != name {
                return Err(Error::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta_str(&doc, "name")
                )));
            }
            self.check_type(r, &mut doc)?;
            warnings.clear();
            let next = self.prepare_update(
                r,
                doc,
                &current.value,
                sub,
                opts,
                ptype == PatchType::Apply,
                &mut warnings,
            )?;
            match self
                .commit_update(r, &key, name, current, next, opts)
                .await?
            {
                Some(w) => {
                    return Ok(Written {
                        object: w,
                        warnings,
                        created: false,
                    })
                }
                None if precondition => return Err(Error::stale(&r.group_resource(), name)),
                None => continue,
            }
        }
    }

    /// Deletes an object, gracefully where its type and finalizers say so.
    pub async fn delete(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted> {
        let key = self.key(r, ns, name);
        if r.plural == "namespaces" && r.group.is_empty() && !opts.dry_run {
            self.deleted_namespaces
                .lock()
                .insert(name.to_string(), std::time::Instant::now());
        }
        if let Some(p) = opts.propagation.as_deref() {
            if !matches!(p, "Orphan" | "Background" | "Foreground") {
                return Err(Error::invalid(
                    "DeleteOptions",
                    "meta.k8s.io",
                    "",
                    vec![Cause::not_supported(
                        "propagationPolicy",
                        p,
                        &["Foreground", "Background", "Orphan", "nil"],
                    )],
                ));
            }
        }
        if let Some(g) = opts.grace_period {
            if g < 0 {
                return Err(Error::invalid(
                    "DeleteOptions",
                    "meta.k8s.io",
                    "",
                    vec![Cause::invalid(
                        "gracePeriodSeconds",
                        &json!(g),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
        }
        loop {
            let current = self.get_stored(r, ns, name).await?;
            let cur = &current.value;
            if let Some(uid) = &opts.uid {
                if uid != meta_str(cur, "uid") {
                    return Err(Error::conflict(
                        &r.group_resource(),
                        name,
                        &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(cur, "uid")
                    ),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != current.rv.to_string() {
                    return Err(Error::conflict(&r.group_resource(), name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        current.rv
                    )));
                }
            }
            let mut fins = finalizers(cur);
            // Orphaning: the owner is first marked deleting (with the `orphan` finalizer, as
            // Kubernetes does), so no controller adopts a dependent back into it while its
            // references are being removed; then the references go; then the owner.
            if opts.propagation.as_deref() == Some("Orphan")
                && !opts.dry_run
                && !fins.iter().any(|f| f == "orphan")
                && !meta(cur).is_some_and(|m| m.contains_key("deletionTimestamp"))
                && self.has_dependents(cur)
            {
                let grace = self.grace_period(r, cur, opts);
                let mut next = cur.clone();
                let when = Utc::now() + chrono::Duration::seconds(grace);
                let m = meta_mut(&mut next);
                m.insert(
                    "deletionTimestamp".into(),
                    json!(when.to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                let mut with = fins.clone();
                with.push("orphan".into());
                m.insert("finalizers".into(), json!(with));
                match self.store.update(&key, &next, current.rv, &[]).await? {
                    WriteOutcome::Mismatch(None) => {
                        return Err(Error::not_found(&r.group_resource(), name))
                    }
                    _ => continue,
                }
            }
            if fins.iter().any(|f| f == "orphan") && !opts.dry_run {
                self.orphan_dependents(cur).await?;
                fins.retain(|f| f != "orphan");
            }
            match opts.propagation.as_deref() {
                Some("Orphan") if !opts.dry_run => self.orphan_dependents(cur).await?,
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                _ => {}
            }
            let grace = self.grace_period(r, cur, opts);
            let already = meta(cur).is_some_and(|m| m.contains_key("deletionTimestamp"));
            let old_grace = cur
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            if fins.is_empty() && !spec_finalizers_hold(r, cur) && grace == 0 {
                if opts.dry_run {
                    return Ok(Deleted::Gone(cur.clone()));
                }
                let effects: Vec<SideEffect> = if r.plural == "services" {
                    allocator::releases(&self.store, cur)
                } else {
                    Vec::new()
                };
                match self.store.delete(&key, current.rv, &effects).await? {
                    WriteOutcome::Done(rev) => {
                        let mut last = current.value;
                        crate::storage::set_rv(&mut last, rev);
                        return Ok(Deleted::Gone(last));
                    }
                    WriteOutcome::Mismatch(None) => {
                        return Err(Error::not_found(&r.group_resource(), name))
                    }
                    _ => continue,
                }
            }
            if already && old_grace.is_some_and(|g| g <= grace) && fins == finalizers(cur) {
                return Ok(Deleted::Pending(current.value));
            }
            let mut next = current.value.clone();
            let when = Utc::now() + chrono::Duration::seconds(grace);
            {
                let m = meta_mut(&mut next);
                if !already || old_grace.is_some_and(|g| grace < g) {
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(when.to_rfc3339_opts(SecondsFormat::Secs, true)),
                    );
                }
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                if fins.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), json!(fins));
                }
            }
            if r.plural == "namespaces" {
                next["status"]["phase"] = json!("Terminating");
            }
            if opts.dry_run {
                return Ok(Deleted::Pending(next));
            }
            match self.store.update(&key, &next, current.rv, &[]).await? {
                WriteOutcome::Done(rev) => {
                    crate::storage::set_rv(&mut next, rev);
                    return Ok(Deleted::Pending(next));
                }
                WriteOutcome::Mismatch(None) => {
                    return Err(Error::not_found(&r.group_resource(), name))
                }
                _ => continue,
            }
        }
    }

    fn grace_period(&self, r: &ResourceInfo, obj: &Value, opts: &DeleteOpts) -> i64 {
        if r.plural != "pods" {
            return 0;
        }
        // An unscheduled or finished pod has nothing to stop: it goes at once.
        let node = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let phase = obj
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        opts.grace_period
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }

    /// Whether any object names `owner` among its owners.
    fn has_dependents(&self, owner: &Value) -> bool {
        let uid = meta_str(owner, "uid").to_string();
        registry::all().iter().any(|r| {
            let (items, _) = self
                .cache(r)
                .list(&r.prefix(self.store.prefix()), |o| o.owners.contains(&uid));
            !items.is_empty()
        })
    }

    /// Removes the owner reference to `owner` from every object that has it.
    async fn orphan_dependents(&self, owner: &Value) -> Result<()> {
        let uid = meta_str(owner, "uid").to_string();
        for r in registry::all() {
            let (items, _) = self
                .cache(r)
                .list(&r.prefix(self.store.prefix()), |o| o.owners.contains(&uid));
            for item in items {
                let item = item.value();
                let ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(String::from);
                let name = meta_str(&item, "name").to_string();
                let refs: Vec<Value> = item
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter(|x| x.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let body = json!({"metadata": {"ownerReferences": refs}});
                let res = self
                    .patch(
                        r,
                        ns.as_deref(),
                        &name,
                        PatchType::Merge,
                        &body,
                        None,
                        &WriteOpts::default(),
                    )
                    .await;
                match res {
                    Ok(_) => {}
                    Err(e) if e.code() == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Deletes every object matching the selectors in a namespace (or everywhere).
    pub async fn delete_collection(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> Result<Vec<Value>> {
        let items = self
            .list(
                r,
                ns,
                &ListOpts {
                    limit: 0,
                    continue_token: None,
                    ..list.clone()
                },
            )
            .await?
            .items;
        let mut out = Vec::new();
        for item in items {
            let name = item.name.clone();
            let ins = (!item.namespace.is_empty()).then(|| item.namespace.clone());
            match self.delete(r, ins.as_deref().or(ns), &name, opts).await {
                Ok(Deleted::Gone(v)) | Ok(Deleted::Pending(v)) => out.push(v),
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Lists objects.
    pub async fn list(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<Listed> {
        let prefix = r.ns_prefix(self.store.prefix(), ns);
        let keep = |o: &Value| opts.labels.matches(o) && opts.fields.matches(r, o);
        let keep_cached =
            |c: &Cached| opts.labels.matches_cached(c) && opts.fields.matches_cached(c);
        if let Some(token) = &opts.continue_token {
            let (rv, start) = decode_continue(token)?;
            let start_key = format!("{}{start}", r.prefix(self.store.prefix()));
            return self
                .list_from_etcd(r, &prefix, Some(start_key), rv, opts, keep)
                .await;
        }
        let rv = opts
            .resource_version
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(parse_rv)
            .transpose()?;
        let exact = opts.resource_version_match.as_deref() == Some("Exact");
        if let Some(m) = opts.resource_version_match.as_deref() {
            if !matches!(m, "Exact" | "NotOlderThan" | "") {
                return Err(Error::bad_request(format!("resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\"")));
            }
            if rv.is_none() && !m.is_empty() {
                return Err(Error::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
        }
        let cache = self.cache(r);
        match rv {
            Some(rv) if exact => self.list_from_etcd(r, &prefix, None, rv, opts, keep).await,
            Some(rv) => {
                // Any state at least as new as rv: the cache, once it has caught up.
                if !cache.reach(&self.store, rv, Duration::from_secs(3)).await {
                    return Err(Error::timeout(format!(
                        "Too large resource version: {rv}, current: {}",
                        cache.rev()
                    )));
                }
                let (items, rev) = cache.list(&prefix, keep_cached);
                Ok(Listed {
                    items,
                    rv: rev,
                    continue_token: None,
                    remaining: None,
                })
            }
            None if opts.limit > 0 => self.list_from_etcd(r, &prefix, None, 0, opts, keep).await,
            None => {
                // A consistent list: served from the cache once it has seen etcd's current
                // revision, else from etcd.
                let current = self.store.current_revision().await?;
                if cache.is_ready()
                    && cache
                        .reach(&self.store, current, Duration::from_millis(500))
                        .await
                {
                    let (items, rev) = cache.list(&prefix, keep_cached);
                    Ok(Listed {
                        items,
                        rv: rev,
                        continue_token: None,
                        remaining: None,
                    })
                } else {
                    self.list_from_etcd(r, &prefix, None, current, opts, keep)
                        .await
                }
            }
        }
    }

    async fn list_from_etcd(
        &self,
        r: &ResourceInfo,
        prefix: &str,
        start: Option<String>,
        rv: i64,
        opts: &ListOpts,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Listed> {
        let filtered = !opts.labels.is_empty() || !opts.fields.is_empty();
        let mut items = Vec::new();
        let mut next = start;
        let mut read_rev = rv;
        let mut remaining = None;
        loop {
            let want = if opts.limit > 0 {
                (opts.limit - items.len() as i64).max(1)
            } else {
                0
            };
            let batch = if filtered && want > 0 {
                want.max(500)
            } else {
                want
            };
            let page = self
                .store
                .list(prefix, next.as_deref(), read_rev, batch)
                .await?;
            read_rev = page.rev;
            let more = page.next_key.is_some();
            let mut last_key = None;
            for item in page.items {
                last_key = Some(item.key.clone());
                if keep(&item.value) {
                    let json = with_rv(&item.raw, item.rv);
                    items.push(Arc::new(Cached::new(r, &item.value, json, item.rv)));
                    if opts.limit > 0 && items.len() as i64 >= opts.limit {
                        break;
                    }
                }
            }
            let full = opts.limit > 0 && items.len() as i64 >= opts.limit;
            if full {
                // More remain if this page had more, or we stopped before its end.
                let stopped_early = last_key.as_deref()
                    != page.next_key.as_deref().map(|k| k.trim_end_matches('\0'));
                if more || stopped_early {
                    let last = last_key.expect("an item was read");
                    let rel = last
                        .strip_prefix(&r.prefix(self.store.prefix()))
                        .unwrap_or(&last)
                        .to_string();
                    if !filtered {
                        remaining = Some(page.remaining);
                    }
                    return Ok(Listed {
                        items,
                        rv: read_rev,
                        continue_token: Some(encode_continue(read_rev, &format!("{rel}\0"))),
                        remaining: remaining.filter(|n| *n > 0),
                    });
                }
                return Ok(Listed {
                    items,
                    rv: read_rev,
                    continue_token: None,
                    remaining: None,
                });
            }
            match page.next_key {
                Some(k) => next = Some(k),
                None => {
                    return Ok(Listed {
                        items,
                        rv: read_rev,
                        continue_token: None,
                        remaining: None,
                    })
                }
            }
        }
    }

    /// Binds a pod to a node (the `binding` subresource): sets `spec.nodeName` and the
    /// `PodScheduled` condition, once. A pod already bound, being deleted, or whose uid differs
    /// from `uid` is a conflict.
    pub async fn bind(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        uid: Option<&str>,
        annotations: &std::collections::BTreeMap<String, String>,
        dry_run: bool,
    ) -> Result<()> {
        if node.is_empty() {
            return Err(Error::invalid(
                "Binding",
                "",
                name,
                vec![Cause::required("target.name")],
            ));
        }
        let pods = registry::find("", "v1", "pods").expect("pods are served");
        let key = pods.key(self.store.prefix(), Some(ns), name);
        // The first attempt starts from the watch cache (one etcd round trip instead of two,
        // as for every write here: the transaction checks the revision); a stale copy fails
        // that check and the next attempt reads etcd.
        let mut from_cache = self.cache(pods).get(&key);
        loop {
            let (mut pod, rv) = match from_cache.take() {
                Some(c) => {
                    let mut v: Value = serde_json::from_slice(&c.json)
                        .map_err(|e| Error::internal(format!("decoding a cached pod: {e}")))?;
                    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    (v, c.rv)
                }
                None => {
                    let current = self
                        .store
                        .get(&key)
                        .await?
                        .ok_or_else(|| Error::not_found("pods", name))?;
                    (current.value, current.rv)
                }
            };
            if let Some(uid) = uid.filter(|u| !u.is_empty()) {
                if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                    return Err(Error::conflict(
                        "pods",
                        name,
                        "the UID in the precondition does not match the pod",
                    ));
                }
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(Error::conflict(
                    "pods",
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(existing) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(Error::conflict(
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{existing}\""),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            let conds = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conds.push(
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": now()}),
            );
            pod["status"]["conditions"] = json!(conds);
            for (k, v) in annotations {
                pod["metadata"]["annotations"][k] = json!(v);
            }
            if dry_run {
                return Ok(());
            }
            let bytes = crate::storage::encode(&pod);
            let hint_bytes = bytes.clone();
            match self.store.update_encoded(&key, bytes, rv, &[]).await? {
                WriteOutcome::Done(rev) => {
                    crate::storage::set_rv(&mut pod, rev);
                    self.hint(pods, &key, &pod, &hint_bytes, rev);
                    return Ok(());
                }
                WriteOutcome::Mismatch(None) => return Err(Error::not_found("pods", name)),
                _ => continue,
            }
        }
    }

    /// Starts a watch.
    pub async fn watch(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        opts: WatchOpts,
    ) -> Result<Watch> {
        let cache = self.cache(r);
        cache.wait_ready().await;
        let rv = opts
            .resource_version
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(parse_rv)
            .transpose()?;
        let from = match rv {
            // Unset: the current state first, at least as fresh as a read from etcd now
            // (a client that just wrote must see its write among the initial events).
            None => {
                let current = self.store.current_revision().await?;
                cache
                    .reach(&self.store, current, Duration::from_secs(3))
                    .await;
                None
            }
            // "0": the current state first, from whatever the cache holds.
            Some(0) => None,
            Some(n) if opts.send_initial_events => {
                cache.reach(&self.store, n, Duration::from_secs(3)).await;
                None
            }
            Some(n) => {
                if !cache.reach(&self.store, n, Duration::from_secs(3)).await {
                    return Err(Error::timeout(format!(
                        "Too large resource version: {n}, current: {}",
                        cache.rev()
                    )));
                }
                Some(n)
            }
        };
        let sub = cache.subscribe(from)?;
        let mut sub = sub;
        let initial = std::mem::take(&mut sub.initial).into();
        let last_rv = from.unwrap_or(0);
        Ok(Watch {
            initial,
            initial_end_pending: opts.send_initial_events && opts.bookmarks,
            resource: r,
            ns_prefix: if r.namespaced {
                ns.map(String::from)
            } else {
                None
            },
            last_rv,
            from,
            caught_up: false,
            opts,
            sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/web-1\0");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/web-1\0".to_string())
        );
        assert_eq!(decode_continue("!!").unwrap_err().code(), 400);
    }

    #[test]
    fn spec_changes_only_count_outside_metadata_and_status() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let b = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"x": 1}, "status": {"y": 2}});
        assert_eq!(spec_part(&a), spec_part(&b));
    }
}
