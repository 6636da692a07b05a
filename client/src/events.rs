//! Recording Kubernetes Events (`v1` `Event`) from a component, the way client-go's event
//! recorder does it: recording never blocks or fails the caller; events wait in a bounded
//! queue (1,000) and one background task writes them in order; when the queue is full the
//! event is dropped and counted (`skiff_client_events_dropped_total`), so a burst of work is
//! never slowed down by its own reporting. Before writing, events are correlated as client-go
//! does:
//! - the same event for the same object (same type, reason and message) within ten minutes
//!   raises the first one's `count` and `lastTimestamp` instead of creating another;
//! - once an object has had ten events of one type and reason with different messages within
//!   ten minutes, further ones become one event whose message starts with
//!   `(combined from similar events): ` and whose `count` rises;
//! - each object may cause 25 writes at once, then one more every five minutes; the rest are
//!   dropped (a ReplicaSet creating 10,000 pods does not write 10,000 events).
//!
//! ```no_run
//! # async fn demo(client: skiff_client::Client, pod: &k8s_openapi::api::core::v1::Pod) {
//! use skiff_client::events::{reference, Recorder};
//! let recorder = Recorder::new(client, "my-controller", "my-controller-1");
//! recorder.normal(reference(pod), "Started", "Reconciling", "started the work".into());
//! # }
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{Api, Client, Patch, PatchParams, PostParams};

/// Events waiting to be written; more are dropped.
pub const QUEUE: usize = 1000;
/// Repeats within this long update the first event.
pub const CORRELATION_WINDOW: Duration = Duration::from_secs(600);
/// Events remembered for correlation (the oldest half is forgotten beyond this).
const REMEMBERED: usize = 4096;

/// A reference to `obj` for an event's `involvedObject`.
pub fn reference<K: Resource + k8s_openapi::Metadata<Ty = ObjectMeta>>(obj: &K) -> ObjectReference {
    let meta = obj.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

struct Pending {
    object: ObjectReference,
    type_: &'static str,
    reason: String,
    action: String,
    message: String,
}

/// Records events for one component (its `source.component` and `reportingComponent`).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
    dropped: Counter,
}

impl Recorder {
    /// A recorder writing through `client` as `component` (instance `instance`). Spawns the
    /// writer on the current Tokio runtime; it stops when every clone of the recorder is gone
    /// and the queue is drained.
    pub fn new(client: Client, component: &str, instance: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(
            client,
            component.to_string(),
            instance.to_string(),
            rx,
        ));
        Recorder {
            tx,
            dropped: Counter::default(),
        }
    }

    /// Records a `Normal` event.
    pub fn normal(&self, object: ObjectReference, reason: &str, action: &str, message: String) {
        self.record(object, "Normal", reason, action, message);
    }

    /// Records a `Warning` event.
    pub fn warning(&self, object: ObjectReference, reason: &str, action: &str, message: String) {
        self.record(object, "Warning", reason, action, message);
    }

    fn record(
        &self,
        object: ObjectReference,
        type_: &'static str,
        reason: &str,
        action: &str,
        message: String,
    ) {
        let p = Pending {
            object,
            type_,
            reason: reason.to_string(),
            action: action.to_string(),
            message,
        };
        if self.tx.try_send(p).is_err() {
            self.dropped.inc();
        }
    }

    /// How many events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Registers `skiff_client_events_dropped_total`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "skiff_client_events_dropped",
            "Events dropped because the recorder's queue was full",
            self.dropped.clone(),
        );
    }
}

/// Distinct messages for one object, type and reason from which on they are combined (the
/// first nine keep their own events).
pub const AGGREGATE_MAX_EVENTS: usize = 10;
/// Writes one object may cause at once ...
pub const SPAM_BURST: f64 = 25.0;
/// ... and how often it earns another.
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// The message prefix of a combined event.
pub const COMBINED: &str = "(combined from similar events): ";

/// What to do with a recorded event.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Create a new event with this message; remember it under `key`.
    Create { key: DedupKey, message: String },
    /// Raise the count of the event called `name`.
    Patch { name: String, count: i32 },
    /// Drop it (too many for this object).
    Drop,
}

type DedupKey = (String, &'static str, String, String);

/// The first event of a kind: its name, how often it happened, when it was first recorded.
struct Seen {
    name: String,
    count: i32,
    first: Instant,
}

/// Messages seen for one object, type and reason since `first`.
struct Similar {
    first: Instant,
    messages: std::collections::HashSet<String>,
}

/// A token bucket per object.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// client-go's event correlation: aggregation of similar events, de-duplication of repeats,
/// and a per-object spam filter. Pure bookkeeping; the writer does the I/O.
#[derive(Default)]
struct Correlator {
    similar: HashMap<(String, &'static str, String), Similar>,
    seen: HashMap<DedupKey, Seen>,
    spam: HashMap<String, Bucket>,
}

impl Correlator {
    fn decide(
        &mut self,
        object: &str,
        type_: &'static str,
        reason: &str,
        message: &str,
        now: Instant,
    ) -> Decision {
        if self.similar.len() >= REMEMBERED {
            self.similar
                .retain(|_, s| now.duration_since(s.first) < CORRELATION_WINDOW);
        }
        if self.spam.len() >= REMEMBERED {
            // A bucket that has filled up again is the same as none.
            self.spam.retain(|_, b| {
                let earned = now.duration_since(b.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
                b.tokens + earned < SPAM_BURST
            });
        }
        // Aggregation: too many different messages make one combined event.
        let sim = self
            .similar
            .entry((object.to_string(), type_, reason.to_string()))
            .or_insert_with(|| Similar {
                first: now,
                messages: Default::default(),
            });
        if now.duration_since(sim.first) >= CORRELATION_WINDOW {
            sim.first = now;
            sim.messages.clear();
        }
        sim.messages.insert(message.to_string());
        let message = if sim.messages.len() < AGGREGATE_MAX_EVENTS {
            message.to_string()
        } else {
            // The set stays below the bound: the first messages keep their own events.
            sim.messages.remove(message);
            format!("{COMBINED}{message}")
        };
        // The spam filter: every write costs the object a token.
        let bucket = self.spam.entry(object.to_string()).or_insert(Bucket {
            tokens: SPAM_BURST,
            at: now,
        });
        let earned = now.duration_since(bucket.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        bucket.tokens = (bucket.tokens + earned).min(SPAM_BURST);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Decision::Drop;
        }
        bucket.tokens -= 1.0;
        // De-duplication: a repeat raises the count. A combined event is one event whatever
        // the message that joined it.
        let dedup_message = if message.starts_with(COMBINED) {
            COMBINED.to_string()
        } else {
            message.clone()
        };
        let key = (object.to_string(), type_, reason.to_string(), dedup_message);
        if let Some(s) = self
            .seen
            .get_mut(&key)
            .filter(|s| now.duration_since(s.first) < CORRELATION_WINDOW)
        {
            s.count += 1;
            return Decision::Patch {
                name: s.name.clone(),
                count: s.count,
            };
        }
        Decision::Create { key, message }
    }

    /// Remembers a created event (forgetting old ones beyond a bound).
    fn created(&mut self, key: DedupKey, name: String, now: Instant) {
        if self.seen.len() >= REMEMBERED {
            self.seen
                .retain(|_, s| now.duration_since(s.first) < CORRELATION_WINDOW / 2);
            if self.seen.len() >= REMEMBERED {
                self.seen.clear();
            }
        }
        self.seen.insert(
            key,
            Seen {
                name,
                count: 1,
                first: now,
            },
        );
    }
}

async fn write(
    client: Client,
    component: String,
    instance: String,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut correlator = Correlator::default();
    while let Some(p) = rx.recv().await {
        let ns = p
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let object_key = format!(
            "{}/{}/{}/{}",
            p.object.kind.as_deref().unwrap_or(""),
            ns,
            p.object.name.as_deref().unwrap_or(""),
            p.object.uid.as_deref().unwrap_or("")
        );
        let now = now();
        let (key, message) =
            match correlator.decide(&object_key, p.type_, &p.reason, &p.message, Instant::now()) {
                Decision::Drop => continue,
                Decision::Patch { name, count } => {
                    let patch = json!({"count": count, "lastTimestamp": now.0});
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                    {
                        Err(e) if e.is_not_found() => {}
                        Err(e) => tracing::debug!(error = %e, "could not update an event"),
                        Ok(_) => {}
                    }
                    continue;
                }
                Decision::Create { key, message } => (key, message),
            };
        let name = format!(
            "{}.{:x}",
            p.object.name.as_deref().unwrap_or("object"),
            unique()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: p.object,
            reason: Some(p.reason),
            message: Some(message),
            type_: Some(p.type_.into()),
            count: Some(1),
            first_timestamp: Some(now.0.clone()),
            last_timestamp: Some(now.0),
            event_time: Some(now.1),
            reporting_component: Some(component.clone()),
            reporting_instance: Some(instance.clone()),
            action: Some(p.action),
            source: Some(EventSource {
                component: Some(component.clone()),
                host: None,
            }),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => correlator.created(key, name, Instant::now()),
            Err(e) => tracing::debug!(error = %e, "could not record an event"),
        }
    }
}

fn now() -> (
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime,
) {
    (crate::time::now_time(), crate::time::now_micro())
}

/// A name suffix unlikely to repeat: nanoseconds since the epoch mixed with a counter.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(d: Decision) -> (DedupKey, String) {
        match d {
            Decision::Create { key, message } => (key, message),
            other => panic!("expected a create, got {other:?}"),
        }
    }

    #[test]
    fn repeats_raise_the_count_of_the_first_event() {
        let mut c = Correlator::default();
        let t = Instant::now();
        let (key, msg) = create(c.decide("rs/a", "Normal", "Scaled", "to 3", t));
        assert_eq!(msg, "to 3");
        c.created(key, "a.1".into(), t);
        assert_eq!(
            c.decide("rs/a", "Normal", "Scaled", "to 3", t),
            Decision::Patch {
                name: "a.1".into(),
                count: 2
            }
        );
        // Another object, or the window over: a new event.
        create(c.decide("rs/b", "Normal", "Scaled", "to 3", t));
        create(c.decide("rs/a", "Normal", "Scaled", "to 3", t + CORRELATION_WINDOW));
    }

    #[test]
    fn many_different_messages_are_combined() {
        let mut c = Correlator::default();
        let t = Instant::now();
        for i in 0..AGGREGATE_MAX_EVENTS - 1 {
            let (key, msg) =
                create(c.decide("rs/a", "Normal", "SuccessfulCreate", &format!("pod {i}"), t));
            assert_eq!(msg, format!("pod {i}"));
            c.created(key, format!("e{i}"), t);
        }
        let (key, msg) = create(c.decide("rs/a", "Normal", "SuccessfulCreate", "pod 9", t));
        assert_eq!(msg, format!("{COMBINED}pod 9"));
        c.created(key, "combined".into(), t);
        assert_eq!(
            c.decide("rs/a", "Normal", "SuccessfulCreate", "pod 10", t),
            Decision::Patch {
                name: "combined".into(),
                count: 2
            }
        );
        // A message seen before the bound still raises its own event's count.
        assert_eq!(
            c.decide("rs/a", "Normal", "SuccessfulCreate", "pod 3", t),
            Decision::Patch {
                name: "e3".into(),
                count: 2
            }
        );
    }

    #[test]
    fn an_object_gets_a_burst_of_writes_then_one_per_refill() {
        let mut c = Correlator::default();
        let t = Instant::now();
        let mut writes = 0;
        for i in 0..100 {
            match c.decide("rs/a", "Normal", "SuccessfulCreate", &format!("pod {i}"), t) {
                Decision::Drop => {}
                Decision::Create { key, .. } => {
                    writes += 1;
                    c.created(key, format!("e{i}"), t);
                }
                Decision::Patch { .. } => writes += 1,
            }
        }
        assert_eq!(writes, SPAM_BURST as usize);
        assert_eq!(c.decide("rs/a", "Normal", "Other", "x", t), Decision::Drop);
        // Other objects are not held back.
        create(c.decide("rs/b", "Normal", "SuccessfulCreate", "pod 0", t));
        // One token comes back per refill period.
        assert_ne!(
            c.decide("rs/a", "Normal", "Other", "x", t + SPAM_REFILL),
            Decision::Drop
        );
        assert_eq!(
            c.decide("rs/a", "Normal", "Other", "y", t + SPAM_REFILL),
            Decision::Drop
        );
    }
}
