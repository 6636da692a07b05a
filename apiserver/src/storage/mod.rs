//! etcd storage: objects as JSON under `/registry/<resource>/<namespace>/<name>`.
//!
//! Every write is one etcd transaction guarded by a compare, so a write lands whole or not at
//! all: create is "key absent → put", update and delete are "mod revision unchanged → put /
//! delete". An object's `metadata.resourceVersion` is the etcd revision that last modified it;
//! it is never stored, only set on the way out, as kube-apiserver does.
//!
//! Values pass through encryption at rest ([`crate::encryption`]) on their way in and out, by
//! the resource their key belongs to: every read sees plaintext, etcd never does. A value
//! that no configured provider can read fails that object alone: a get answers 500 naming its
//! key, a list leaves it out and says so ([`Page::unreadable`]).

pub mod cached;
pub mod watch_cache;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};
use serde_json::Value;

use crate::encryption::{Encryption, TransformError};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// A stored object with the revision that last wrote it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The etcd key.
    pub key: String,
    /// The object, with `metadata.resourceVersion` set.
    pub value: Value,
    /// The etcd mod revision.
    pub rv: i64,
    /// The stored bytes (without resourceVersion), decrypted.
    pub raw: bytes::Bytes,
    /// Whether the value was read with a provider or key other than the one writes use now:
    /// an update rewrites it even when the object did not change.
    pub stale: bool,
}

/// What [`Etcd::delete_unreadable`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadableDelete {
    /// The value could not be read, and is gone (or would be, on a dry run).
    Deleted,
    /// No such key.
    Missing,
    /// The value reads fine: nothing was done.
    Readable,
}

/// A value under a listed prefix that could not be read: not decrypted, or not an object.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The etcd key.
    pub key: String,
    /// Why, with the key.
    pub reason: String,
}

/// A further key written in the same transaction as the object (allocations of IPs and ports).
#[derive(Debug, Clone)]
pub enum SideEffect {
    /// Create this key, failing the whole write if it exists.
    Claim(String),
    /// Delete this key.
    Release(String),
}

/// What a guarded write found.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Written at this revision.
    Done(i64),
    /// The object key was not in the expected state; here is what is there now (if anything).
    Mismatch(Option<Stored>),
    /// A claimed side key was already taken.
    ClaimTaken,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    /// The objects, in key order.
    pub items: Vec<Stored>,
    /// The revision the list was read at.
    pub rev: i64,
    /// The key to continue from, if more remain.
    pub next_key: Option<String>,
    /// How many keys remain after this page, if more remain.
    pub remaining: i64,
    /// Values on this page that could not be read, left out of `items`.
    pub unreadable: Vec<Unreadable>,
}

/// Whether a prefix changed after a revision, as read by [`Etcd::quiet_since`].
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    /// The revision both reads were made at (etcd's current revision).
    pub rev: i64,
    /// Whether a key under the prefix was written after the given revision and still exists.
    pub changed: bool,
    /// How many keys are under the prefix.
    pub count: i64,
}

/// The etcd-backed object store. Cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    kv: KvClient,
    client: etcd_client::Client,
    prefix: Arc<str>,
    metrics: Arc<Metrics>,
    encryption: Arc<Encryption>,
    /// The resource (`secrets`, `deployments.apps`) stored under each `/registry/<plural>/`.
    resources: Arc<parking_lot::RwLock<HashMap<String, Arc<str>>>>,
}

impl Etcd {
    /// Connects to etcd. The connection re-establishes itself if etcd goes away.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://").to_string())
            .collect();
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(15))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = etcd_client::Client::connect(endpoints, Some(opts)).await?;
        let kv = client.kv_client().max_decoding_message_size(512 << 20);
        let prefix: Arc<str> = prefix.trim_end_matches('/').into();
        Ok(Etcd {
            kv,
            client,
            prefix,
            metrics,
            encryption: Encryption::none(Arc::new(crate::encryption::Metrics::new())),
            resources: Arc::default(),
        })
    }

    /// Encrypts values at rest as `encryption` says.
    pub fn with_encryption(mut self, encryption: Arc<Encryption>) -> Self {
        self.encryption = encryption;
        self
    }

    /// Encryption at rest.
    pub fn encryption(&self) -> &Arc<Encryption> {
        &self.encryption
    }

    /// Says which resource (`plural` or `plural.group`) lives under `/registry/<dir>/` (`dir`
    /// is the plural, or `GROUP/PLURAL` for a custom resource), so that its values get that
    /// resource's encryption.
    pub fn serve_resource(&self, dir: &str, group_resource: &str) {
        self.resources
            .write()
            .entry(dir.to_string())
            .or_insert_with(|| group_resource.into());
    }

    /// Forgets a directory [`Etcd::serve_resource`] named (a custom resource no longer
    /// defined).
    pub fn unserve_resource(&self, dir: &str) {
        self.resources.write().remove(dir);
    }

    /// The resource an etcd key belongs to.
    fn resource_of(&self, key: &str) -> Arc<str> {
        let rest = key
            .strip_prefix(&*self.prefix)
            .and_then(|k| k.strip_prefix('/'))
            .unwrap_or(key);
        let mut parts = rest.splitn(3, '/');
        let first = parts.next().unwrap_or("");
        let resources = self.resources.read();
        // A custom resource's directory is two segments, `GROUP/PLURAL`.
        if let Some(second) = parts.next() {
            if let Some(r) = resources.get(&format!("{first}/{second}")) {
                return r.clone();
            }
        }
        resources
            .get(first)
            .cloned()
            .unwrap_or_else(|| first.into())
    }

    /// The bytes to store under `key` for `plaintext`.
    fn seal(&self, key: &str, plaintext: Vec<u8>) -> Result<Vec<u8>> {
        self.encryption
            .write(&self.resource_of(key), key, plaintext)
            .map_err(|e| Error::Unwritable {
                key: key.to_string(),
                source: Box::new(e),
            })
    }

    /// The plaintext of what etcd holds under `key`, and whether it is stale.
    async fn unseal<'a>(
        &self,
        key: &str,
        raw: &'a [u8],
    ) -> Result<(std::borrow::Cow<'a, [u8]>, bool), TransformError> {
        self.encryption.read(&self.resource_of(key), key, raw).await
    }

    /// Decrypts and decodes a stored value.
    async fn decode_stored(&self, key: &str, raw: &[u8], rev: i64) -> Result<Stored> {
        let (plain, stale) = self
            .unseal(key, raw)
            .await
            .map_err(|e| unreadable(key, e))?;
        let mut s = decode(key, &plain, rev)?;
        s.stale = stale;
        Ok(s)
    }

    /// Decrypts and decodes a value etcd sent along in a watch event.
    pub async fn decode_value(&self, key: &str, raw: &[u8], rev: i64) -> Result<Stored> {
        self.decode_stored(key, raw, rev).await
    }

    /// The key prefix all objects live under (`/registry`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A client for watches.
    pub fn watch_client(&self) -> etcd_client::WatchClient {
        self.client.watch_client()
    }

    /// A range read, tried again on another connection when it never reached etcd.
    async fn kv_get(
        &self,
        key: impl Into<Vec<u8>>,
        opts: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        let key = key.into();
        unsent_retry(|| {
            let (mut kv, key, opts) = (self.kv.clone(), key.clone(), opts.clone());
            async move { kv.get(key, opts).await }
        })
        .await
    }

    /// A transaction, tried again on another connection when it never reached etcd.
    async fn kv_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        unsent_retry(|| {
            let (mut kv, txn) = (self.kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    fn time<T>(&self, op: &'static str, start: Instant, r: &Result<T>) {
        self.metrics.observe_etcd(op, start.elapsed(), r.is_ok());
    }

    /// Reads one object.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>> {
        let start = Instant::now();
        let r = self.kv_get(key, None).await.map_err(Error::from);
        self.time("get", start, &r);
        let mut resp = r?;
        match resp.take_kvs().into_iter().next() {
            Some(kv) => Ok(Some(
                self.decode_stored(key, kv.value(), kv.mod_revision())
                    .await?,
            )),
            None => Ok(None),
        }
    }

    /// The stored bytes of `key` (without resourceVersion) and their revision, undecoded.
    pub async fn get_raw(&self, key: &str) -> Result<Option<(bytes::Bytes, i64)>> {
        let start = Instant::now();
        let r = self.kv_get(key, None).await.map_err(Error::from);
        self.time("get", start, &r);
        let mut resp = r?;
        let Some(kv) = resp.take_kvs().into_iter().next() else {
            return Ok(None);
        };
        let (plain, _) = self
            .unseal(key, kv.value())
            .await
            .map_err(|e| unreadable(key, e))?;
        Ok(Some((
            bytes::Bytes::copy_from_slice(&plain),
            kv.mod_revision(),
        )))
    }

    /// Deletes `key` if, and only if, its value cannot be read (decrypted and decoded).
    pub async fn delete_unreadable(&self, key: &str, dry_run: bool) -> Result<UnreadableDelete> {
        loop {
            let start = Instant::now();
            let r = self.kv_get(key, None).await.map_err(Error::from);
            self.time("get", start, &r);
            let Some(kv) = r?.take_kvs().into_iter().next() else {
                return Ok(UnreadableDelete::Missing);
            };
            if self
                .decode_stored(key, kv.value(), kv.mod_revision())
                .await
                .is_ok()
            {
                return Ok(UnreadableDelete::Readable);
            }
            if dry_run {
                return Ok(UnreadableDelete::Deleted);
            }
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key,
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then(vec![TxnOp::delete(key, None)]);
            let start = Instant::now();
            let r = self.kv_txn(txn).await.map_err(Error::from);
            self.time("delete", start, &r);
            if r?.succeeded() {
                return Ok(UnreadableDelete::Deleted);
            }
            // Written meanwhile: look again.
        }
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> Result<i64> {
        let start = Instant::now();
        let opts = GetOptions::new().with_count_only();
        let r = self.kv_get(format!("{}/", self.prefix), Some(opts)).await;
        let r = r.map_err(Error::from);
        self.time("get", start, &r);
        Ok(r?.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// What etcd holds under `prefix` now, compared with revision `rev`: read in one
    /// transaction, so both answers hold at the one revision returned.
    pub async fn quiet_since(&self, prefix: &str, rev: i64) -> Result<Quiet> {
        let start = Instant::now();
        let written = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_min_mod_revision(rev + 1)
            .with_limit(1);
        let count = GetOptions::new().with_prefix().with_count_only();
        let txn = Txn::new().and_then([
            TxnOp::get(prefix, Some(written)),
            TxnOp::get(prefix, Some(count)),
        ]);
        let r = self.kv_txn(txn).await.map_err(Error::from);
        self.time("txn", start, &r);
        let resp = r?;
        let mut quiet = Quiet {
            rev: resp.header().map(|h| h.revision()).unwrap_or(0),
            changed: false,
            count: 0,
        };
        for (i, op) in resp.op_responses().into_iter().enumerate() {
            if let TxnOpResponse::Get(g) = op {
                match i {
                    0 => quiet.changed = !g.kvs().is_empty(),
                    _ => quiet.count = g.count(),
                }
            }
        }
        Ok(quiet)
    }

    /// Creates `key` if absent (its value encoded with [`encode`]), together with the side
    /// effects.
    pub async fn create(
        &self,
        key: &str,
        bytes: Vec<u8>,
        effects: &[SideEffect],
    ) -> Result<WriteOutcome> {
        let bytes = self.seal(key, bytes)?;
        let mut when = vec![Compare::version(key, CompareOp::Equal, 0)];
        let mut ops = vec![TxnOp::put(key, bytes, None)];
        add_effects(effects, &mut when, &mut ops);
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else(vec![TxnOp::get(key, None)]);
        self.run_txn("create", key, None, txn).await
    }

    /// Writes `key` if its mod revision is still `expected`, together with the side effects.
    pub async fn update(
        &self,
        key: &str,
        value: &Value,
        expected: i64,
        effects: &[SideEffect],
    ) -> Result<WriteOutcome> {
        self.update_encoded(key, encode(value), expected, effects)
            .await
    }

    /// Writes `key` with already-encoded bytes if its mod revision is still `expected`.
    pub async fn update_encoded(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expected: i64,
        effects: &[SideEffect],
    ) -> Result<WriteOutcome> {
        let bytes = self.seal(key, bytes)?;
        let mut when = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        let mut ops = vec![TxnOp::put(key, bytes, None)];
        add_effects(effects, &mut when, &mut ops);
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else(vec![TxnOp::get(key, None)]);
        self.run_txn("update", key, Some(expected), txn).await
    }

    /// Deletes `key` if its mod revision is still `expected`, together with the side effects.
    pub async fn delete(
        &self,
        key: &str,
        expected: i64,
        effects: &[SideEffect],
    ) -> Result<WriteOutcome> {
        let mut when = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        let mut ops = vec![TxnOp::delete(key, None)];
        add_effects(effects, &mut when, &mut ops);
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else(vec![TxnOp::get(key, None)]);
        self.run_txn("delete", key, Some(expected), txn).await
    }

    async fn run_txn(
        &self,
        op: &'static str,
        key: &str,
        expected: Option<i64>,
        txn: Txn,
    ) -> Result<WriteOutcome> {
        let start = Instant::now();
        let r = self.kv_txn(txn).await.map_err(Error::from);
        self.time(op, start, &r);
        let resp = r?;
        if resp.succeeded() {
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            return Ok(WriteOutcome::Done(rev));
        }
        // The guard failed: either the object was not as expected or a claim was taken.
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let current = match current {
            Some(kv) => Some(
                self.decode_stored(key, kv.value(), kv.mod_revision())
                    .await?,
            ),
            None => None,
        };
        let object_as_expected = match (expected, &current) {
            (None, None) => true,
            (Some(rv), Some(c)) => c.rv == rv,
            _ => false,
        };
        if object_as_expected {
            Ok(WriteOutcome::ClaimTaken)
        } else {
            Ok(WriteOutcome::Mismatch(current))
        }
    }

    /// Lists keys under `prefix` at `rev` (0 = latest), starting at `start` (inclusive), at
    /// most `limit` (0 = all).
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        rev: i64,
        limit: i64,
    ) -> Result<Page> {
        let end = prefix_end(prefix);
        let from = start.unwrap_or(prefix).to_string();
        let mut opts = GetOptions::new().with_range(end);
        if rev > 0 {
            opts = opts.with_revision(rev);
        }
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        let begin = Instant::now();
        let r = self.kv_get(from, Some(opts)).await.map_err(map_compacted);
        self.time("list", begin, &r);
        let mut resp = r?;
        let read_rev = resp.header().map(|h| h.revision()).unwrap_or(rev);
        let more = resp.more();
        let count = resp.count();
        let kvs = resp.take_kvs();
        let mut items = Vec::with_capacity(kvs.len());
        let mut unreadable = Vec::new();
        let mut last_key = None;
        for kv in &kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            last_key = Some(key.clone());
            match self
                .decode_stored(&key, kv.value(), kv.mod_revision())
                .await
            {
                Ok(s) => items.push(s),
                Err(e) => unreadable.push(Unreadable {
                    key,
                    reason: e.to_string(),
                }),
            }
        }
        let next_key = if more {
            last_key.map(|last| format!("{last}\0"))
        } else {
            None
        };
        let remaining = if more { count - kvs.len() as i64 } else { 0 };
        Ok(Page {
            items,
            rev: if rev > 0 { rev } else { read_rev },
            next_key,
            remaining,
            unreadable,
        })
    }

    /// Every key under `prefix`, without values.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let mut resp = self.kv_get(prefix, Some(opts)).await?;
        Ok(resp
            .take_kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect())
    }

    /// Drops history before `rev`.
    pub async fn compact(&self, rev: i64) -> Result<()> {
        let start = Instant::now();
        let r = self
            .kv
            .clone()
            .compact(rev, None)
            .await
            .map(|_| ())
            .map_err(Error::from);
        self.time("compact", start, &r);
        r
    }
}

fn unreadable(key: &str, e: TransformError) -> Error {
    Error::Unreadable {
        key: key.to_string(),
        source: Box::new(e),
    }
}

fn add_effects(effects: &[SideEffect], when: &mut Vec<Compare>, ops: &mut Vec<TxnOp>) {
    for e in effects {
        match e {
            SideEffect::Claim(k) => {
                when.push(Compare::version(k.as_str(), CompareOp::Equal, 0));
                ops.push(TxnOp::put(k.as_str(), Vec::<u8>::new(), None));
            }
            SideEffect::Release(k) => ops.push(TxnOp::delete(k.as_str(), None)),
        }
    }
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn map_compacted(e: etcd_client::Error) -> Error {
    if is_compacted(&e) {
        Error::gone("The provided continue parameter or resourceVersion is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.")
    } else {
        Error::from(e)
    }
}

/// Whether etcd refused because the revision asked for is compacted.
pub fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision has been compacted")
}

/// The stored form: JSON without `resourceVersion`.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut v = value.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Reads a stored object and stamps its resourceVersion.
pub fn decode(key: &str, bytes: &[u8], rev: i64) -> Result<Stored> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|source| Error::Corrupt {
        key: key.to_string(),
        source,
    })?;
    set_rv(&mut value, rev);
    Ok(Stored {
        key: key.to_string(),
        value,
        rv: rev,
        raw: bytes::Bytes::copy_from_slice(bytes),
        stale: false,
    })
}

/// Sets `metadata.resourceVersion`.
pub fn set_rv(value: &mut Value, rev: i64) {
    if let Some(m) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// Runs `op` again (up to four times, 100 ms apart and more) while it fails without having
/// reached etcd — the connection to a stopped member refused — so a request goes to another
/// member instead of failing while the client notices the member is gone. Anything that may
/// have reached etcd is never repeated.
async fn unsent_retry<T, F, Fut>(mut op: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..4 {
        match op().await {
            Err(e) if never_sent(&e) => {
                tracing::debug!(error = %e, "etcd request not sent; trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            r => return r,
        }
    }
    op().await
}

/// Whether a request failed before it was sent: the connection could not be made.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("tcp connect error")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_requests_that_never_reached_etcd_are_repeated() {
        let refused =
            || etcd_client::Error::GRpcStatus(tonic::Status::unavailable("tcp connect error"));
        assert!(never_sent(&refused()));
        let lost = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("connection reset"));
        assert!(!never_sent(&lost));
        // Refused twice, then answered: the answer.
        let mut calls = 0;
        let r = unsent_retry(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(refused())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        // Any other failure is returned at once.
        let mut calls = 0;
        let r: Result<(), _> = unsent_retry(|| {
            calls += 1;
            async {
                Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                    "reset",
                )))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
    }

    #[test]
    fn stored_form_has_no_resource_version() {
        let v = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "5"}});
        let bytes = encode(&v);
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(back["metadata"].get("resourceVersion").is_none());
        let s = decode("k", &bytes, 9).unwrap();
        assert_eq!(s.value["metadata"]["resourceVersion"], "9");
    }
}
