//! Recording Kubernetes Events (`v1` `Event`) from a component, the way client-go's event
//! recorder does it: recording never blocks or fails the caller; events wait in a bounded
//! queue (1,000) and one background task writes them in order; the same event for the same
//! object (same type, reason and message) within ten minutes raises the first one's `count`
//! and `lastTimestamp` instead of creating another; when the queue is full the event is
//! dropped and counted (`skiff_client_events_dropped_total`), so a burst of work is never slowed
//! down by its own reporting.
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

/// The first event of a kind: its name, how often it happened, when it was first recorded.
struct Seen {
    name: String,
    count: i32,
    first: Instant,
}

async fn write(
    client: Client,
    component: String,
    instance: String,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut seen: HashMap<(String, &'static str, String, String), Seen> = HashMap::new();
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
        let key = (object_key, p.type_, p.reason.clone(), p.message.clone());
        let now = now();
        if let Some(s) = seen
            .get_mut(&key)
            .filter(|s| s.first.elapsed() < CORRELATION_WINDOW)
        {
            s.count += 1;
            let patch = json!({"count": s.count, "lastTimestamp": now.0});
            match api
                .patch(&s.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => continue,
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not update an event");
                    continue;
                }
            }
        }
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
            message: Some(p.message),
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
            Ok(_) => {
                if seen.len() >= REMEMBERED {
                    seen.retain(|_, s| s.first.elapsed() < CORRELATION_WINDOW / 2);
                    if seen.len() >= REMEMBERED {
                        seen.clear();
                    }
                }
                seen.insert(
                    key,
                    Seen {
                        name,
                        count: 1,
                        first: Instant::now(),
                    },
                );
            }
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
