//! The loop that writes each ValidatingAdmissionPolicy's `status.typeChecking` and
//! `status.observedGeneration`, as kube-apiserver's `validatingadmissionpolicy-status`
//! controller does: once per generation, from the policy's watch cache. Several API servers
//! may run it at once: each writes the same status.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::typecheck::{self, Served};
use super::{GROUP, POLICIES};
use crate::registry::Objects;
use crate::request::WriteOpts;
use crate::storage::watch_cache::{EventType, WatchCache};

/// The field manager of the status writes (Kubernetes' controller name).
pub const MANAGER: &str = "validatingadmissionpolicy-status";

/// How long before the loop subscribes again after losing the cache's events.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: `objs(owner)` is the store, `policies` the policies' watch cache.
pub async fn run<T: Send + Sync + 'static>(
    owner: Arc<T>,
    objs: fn(&T) -> &dyn Objects,
    policies: Arc<WatchCache>,
    shutdown: CancellationToken,
) {
    policies.wait_ready().await;
    loop {
        let Ok(sub) = policies.subscribe(None) else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE) => continue,
            }
        };
        for e in &sub.initial {
            reconcile(objs(&owner), &e.object.value()).await;
        }
        let mut rx = sub.rx;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = rx.recv() => match event {
                    Ok(e) if matches!(e.kind, EventType::Added | EventType::Modified) => {
                        reconcile(objs(&owner), &e.object.value()).await;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
                }
            }
        }
    }
}

/// The status a policy should have, when its generation has not been checked yet.
pub fn wanted_status(policy: &Value, objs: &dyn Objects) -> Option<Value> {
    let generation = policy
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)?;
    let observed = policy
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if generation <= observed {
        return None;
    }
    let warnings = typecheck::check(&policy["spec"], &Served(objs));
    let mut type_checking = json!({});
    if !warnings.is_empty() {
        type_checking["expressionWarnings"] = warnings
            .iter()
            .map(|w| json!({"fieldRef": w.field_ref, "warning": w.warning}))
            .collect();
    }
    let mut status = policy
        .get("status")
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    status["observedGeneration"] = json!(generation);
    status["typeChecking"] = type_checking;
    Some(status)
}

/// Writes the status of `policy` if its generation is new; a write that lost a race is
/// retried from a fresh read.
async fn reconcile(objs: &dyn Objects, policy: &Value) {
    let Some(r) = objs.resource(GROUP, "v1", POLICIES) else {
        return;
    };
    let name = policy
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut current = policy.clone();
    for _ in 0..5 {
        let Some(status) = wanted_status(&current, objs) else {
            return;
        };
        let mut obj = current.clone();
        obj["status"] = status;
        let opts = WriteOpts::internal(MANAGER);
        match objs
            .update(&r, None, &name, obj, Some("status"), &opts)
            .await
        {
            Ok(_) => return,
            Err(e) if e.code() == 409 => match objs.get(&r, None, &name).await {
                Ok(fresh) => current = fresh,
                Err(_) => return,
            },
            Err(e) => {
                tracing::warn!(policy = %name, error = %e, "writing the type checking of a policy");
                return;
            }
        }
    }
}
