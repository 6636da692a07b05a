//! Writes a controller made that its cache has not shown yet (client-go's
//! `ControllerExpectations`). Until the informer has seen the pods a ReplicaSet just created
//! or deleted, counting pods in the cache would count too few or too many and create or
//! delete again; so a controller waits until what it expects is visible.
//!
//! Unlike client-go's counters these are checked against the cache itself (is the created
//! object there with its UID; is the deleted one gone or terminating), so a missed or
//! repeated event cannot leave them wrong. Expectations older than [`TTL`] are dropped so a
//! write that never shows (an object deleted before it was seen) cannot stall a controller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::Object;

/// How long expectations are waited for, as Kubernetes does.
pub const TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    /// Created objects (key, UID) not seen yet.
    adds: Vec<(ObjectKey, String)>,
    /// Deleted objects (key, UID) still seen alive.
    dels: Vec<(ObjectKey, String)>,
    since: Option<Instant>,
}

/// Expectations per controller key.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    /// Records that `owner` created these objects.
    pub fn expect_adds(
        &self,
        owner: &ObjectKey,
        objects: impl IntoIterator<Item = (ObjectKey, String)>,
    ) {
        let mut m = self.inner.lock();
        let p = m.entry(owner.clone()).or_default();
        p.adds.extend(objects);
        p.since = Some(Instant::now());
    }

    /// Records that `owner` deleted these objects.
    pub fn expect_dels(
        &self,
        owner: &ObjectKey,
        objects: impl IntoIterator<Item = (ObjectKey, String)>,
    ) {
        let mut m = self.inner.lock();
        let p = m.entry(owner.clone()).or_default();
        p.dels.extend(objects);
        p.since = Some(Instant::now());
    }

    /// Whether the cache shows everything `owner` wrote (or the wait has timed out).
    pub fn satisfied<K: Object>(&self, owner: &ObjectKey, store: &Store<K>) -> bool {
        let mut m = self.inner.lock();
        let Some(p) = m.get_mut(owner) else {
            return true;
        };
        let uid_of = |k: &ObjectKey| {
            store.get(k).map(|o| {
                let meta = o.metadata();
                (
                    meta.uid.clone().unwrap_or_default(),
                    meta.deletion_timestamp.is_some(),
                )
            })
        };
        p.adds
            .retain(|(k, uid)| !matches!(uid_of(k), Some((u, _)) if &u == uid));
        p.dels
            .retain(|(k, uid)| matches!(uid_of(k), Some((u, false)) if &u == uid));
        let expired = p.since.is_some_and(|s| s.elapsed() > TTL);
        if (p.adds.is_empty() && p.dels.is_empty()) || expired {
            m.remove(owner);
            return true;
        }
        false
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &ObjectKey) {
        self.inner.lock().remove(owner);
    }
}
