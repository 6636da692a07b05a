//! What kube-apiserver's apiextensions controllers do, in every API server: for each
//! CustomResourceDefinition, accept its names (or say which are taken), serve its versions,
//! report `NamesAccepted` and `Established`; and when one is deleted, delete every object of
//! its type, then let it go (the `customresourcecleanup.apiextensions.k8s.io` finalizer) and
//! stop serving it. Several API servers may do this at once: every write is idempotent.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames,
};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::registry::crd::CLEANUP_FINALIZER;
use crate::registry::{now, Objects, Resource};
use crate::request::{DeleteOpts, Deleted};
use crate::state::State;
use crate::storage::watch_cache::EventType;

/// How long before a definition whose objects are not all gone yet (finalizers) is looked at
/// again.
const CLEANUP_RETRY: Duration = Duration::from_secs(2);

/// Runs until `shutdown`; `synced` is told once every definition there was at the start is
/// served (the server is ready only then, as kube-apiserver's `crd-informer-synced`).
pub async fn run(
    state: Arc<State>,
    shutdown: CancellationToken,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let mut synced = Some(synced);
    let Some(crds) = state
        .store
        .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    else {
        return;
    };
    let mut c = Controller {
        state: state.clone(),
        crds,
        served: BTreeMap::new(),
        shutdown: shutdown.clone(),
    };
    let cache = c.state.store.cache(&c.crds);
    cache.wait_ready().await;
    let (retry_tx, mut retry_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    loop {
        let Ok(sub) = cache.subscribe(None) else {
            tokio::time::sleep(CLEANUP_RETRY).await;
            continue;
        };
        // A fresh start: everything there is, and nothing served that is not.
        let present: HashSet<String> = sub.initial.iter().map(|e| e.object.name.clone()).collect();
        let gone: Vec<String> = c
            .served
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            c.stop_serving(&name);
        }
        for e in &sub.initial {
            c.reconcile(&e.object.name, &retry_tx).await;
        }
        if let Some(s) = synced.take() {
            let _ = s.send(());
        }
        let mut rx = sub.rx;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                name = retry_rx.recv() => {
                    if let Some(name) = name {
                        c.reconcile(&name, &retry_tx).await;
                    }
                }
                event = rx.recv() => match event {
                    Ok(e) if e.kind == EventType::Deleted => c.stop_serving(&e.object.name),
                    Ok(e) if e.kind == EventType::Bookmark => {}
                    Ok(e) => c.reconcile(&e.object.name, &retry_tx).await,
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => break,
                }
            }
        }
    }
}

struct Controller {
    state: Arc<State>,
    crds: Resource,
    /// What each definition serves: its `plural.group`, and the generation served.
    served: BTreeMap<String, (String, i64)>,
    shutdown: CancellationToken,
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": if status { "True" } else { "False" },
        "lastTransitionTime": now(),
        "reason": reason,
        "message": message,
    })
}

/// Sets a condition, keeping its transition time when the status is unchanged.
fn set_condition(conditions: &mut Vec<Value>, mut c: Value) {
    match conditions.iter_mut().find(|o| o["type"] == c["type"]) {
        Some(old) => {
            if old["status"] == c["status"] {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => conditions.push(c),
    }
}

/// Every name a definition's names claim.
fn all_names(n: &CustomResourceDefinitionNames) -> Vec<String> {
    let mut out = vec![n.plural.clone(), n.kind.to_lowercase()];
    out.extend(n.singular.clone().filter(|s| !s.is_empty()));
    out.extend(n.short_names.iter().flatten().cloned());
    out
}

impl Controller {
    fn crd(&self, name: &str) -> Option<(Value, CustomResourceDefinition)> {
        let cached = self.state.store.cached(&self.crds, None, name)?;
        let value = cached.value();
        let crd = serde_json::from_value(value.clone()).ok()?;
        Some((value, crd))
    }

    /// The names another definition (or a built-in type) holds in `group`.
    fn taken(&self, me: &str, group: &str) -> HashSet<String> {
        let mut out = HashSet::new();
        for c in self.state.store.cached_list(&self.crds, None) {
            if c.name == me {
                continue;
            }
            let Ok(other) = serde_json::from_value::<CustomResourceDefinition>(c.value()) else {
                continue;
            };
            if other.spec.group != group {
                continue;
            }
            if let Some(n) = other.status.and_then(|s| s.accepted_names) {
                out.extend(all_names(&n));
            }
        }
        for r in self.state.store.resources() {
            if r.group == group && r.json_schema.is_none() {
                out.insert(r.plural.clone());
                out.insert(r.singular.clone());
                out.insert(r.kind.to_lowercase());
                out.extend(r.short_names.iter().cloned());
            }
        }
        out
    }

    async fn reconcile(&mut self, name: &str, retry: &tokio::sync::mpsc::UnboundedSender<String>) {
        let Some((value, crd)) = self.crd(name) else {
            self.stop_serving(name);
            return;
        };
        if value.pointer("/metadata/deletionTimestamp").is_some() {
            self.clean_up(name, &crd, retry).await;
            return;
        }
        let names = &crd.spec.names;
        let taken = self.taken(name, &crd.spec.group);
        let mut conflict = None;
        if taken.contains(&names.plural) {
            conflict = Some(format!("\"{}\" is already in use", names.plural));
        } else if names.singular.as_ref().is_some_and(|s| taken.contains(s)) {
            conflict = Some(format!(
                "\"{}\" is already in use",
                names.singular.as_deref().unwrap_or("")
            ));
        } else if let Some(s) = names
            .short_names
            .iter()
            .flatten()
            .find(|s| taken.contains(*s))
        {
            conflict = Some(format!("\"{s}\" is already in use"));
        } else if taken.contains(&names.kind.to_lowercase()) {
            conflict = Some(format!("\"{}\" is already in use", names.kind));
        }
        let generation = value
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let status = value.get("status").cloned().unwrap_or(json!({}));
        let mut conditions: Vec<Value> = status
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut next = status.clone();
        match &conflict {
            Some(why) => {
                set_condition(
                    &mut conditions,
                    condition("NamesAccepted", false, "NameConflict", why),
                );
                if !conditions
                    .iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
                {
                    set_condition(
                        &mut conditions,
                        condition(
                            "Established",
                            false,
                            "NotAccepted",
                            "not all names are accepted",
                        ),
                    );
                }
            }
            None => {
                next["acceptedNames"] = crate::validation::val(names);
                set_condition(
                    &mut conditions,
                    condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
                );
                set_condition(
                    &mut conditions,
                    condition(
                        "Established",
                        true,
                        "InitialNamesAccepted",
                        "the initial names have been accepted",
                    ),
                );
            }
        }
        next["conditions"] = json!(conditions);
        let mut accepted = crd.clone();
        if conflict.is_none() {
            accepted
                .status
                .get_or_insert_with(Default::default)
                .accepted_names = Some(names.clone());
        }
        let established = conflict.is_none()
            || crd
                .status
                .as_ref()
                .and_then(|s| s.accepted_names.as_ref())
                .is_some_and(|n| !n.plural.is_empty());
        if established && self.served.get(name).map(|s| s.1) != Some(generation) {
            let versions = crate::registry::custom::served(&accepted);
            let gr = versions
                .first()
                .map(|r| r.group_resource().to_string())
                .unwrap_or_default();
            if let Some((old, _)) = self.served.get(name) {
                if *old != gr {
                    self.state.store.unserve(old);
                }
            }
            self.state.store.serve_dynamic(versions, &self.shutdown);
            self.served.insert(name.to_string(), (gr, generation));
            tracing::info!(crd = name, generation, "serving custom resource");
        }
        if next != status {
            let next = next.clone();
            let write = self
                .state
                .store
                .guaranteed_update(&self.crds, None, name, false, &move |obj| {
                    obj["status"]["acceptedNames"] = next["acceptedNames"].clone();
                    obj["status"]["conditions"] = next["conditions"].clone();
                    Ok(())
                })
                .await;
            if let Err(e) = write {
                tracing::warn!(crd = name, error = %e, "writing the definition's status");
            }
        }
    }

    fn stop_serving(&mut self, name: &str) {
        if let Some((gr, _)) = self.served.remove(name) {
            self.state.store.unserve(&gr);
            tracing::info!(crd = name, "no longer serving custom resource");
        }
    }

    /// Deletes every object of a deleted definition's type, then removes the finalizer.
    async fn clean_up(
        &mut self,
        name: &str,
        crd: &CustomResourceDefinition,
        retry: &tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        let holds = crd
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == CLEANUP_FINALIZER);
        if !holds {
            return;
        }
        let _ = self
            .state
            .store
            .guaranteed_update(&self.crds, None, name, false, &|obj| {
                let mut conditions: Vec<Value> = obj
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                set_condition(
                    &mut conditions,
                    condition(
                        "Terminating",
                        true,
                        "InstanceDeletionInProgress",
                        "CustomResource deletion is in progress",
                    ),
                );
                obj["status"]["conditions"] = json!(conditions);
                Ok(())
            })
            .await;
        let remaining = match self.delete_all(crd).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(crd = name, error = %e, "deleting the custom resources");
                usize::MAX
            }
        };
        if remaining > 0 {
            let retry = retry.clone();
            let name = name.to_string();
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(CLEANUP_RETRY) => { let _ = retry.send(name); }
                }
            });
            return;
        }
        self.stop_serving(name);
        // Through the store's own update, which deletes the definition once its last
        // finalizer goes.
        let rest: Vec<String> = crd
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != CLEANUP_FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {
            "finalizers": rest,
            "resourceVersion": crd.metadata.resource_version,
        }});
        let opts = crate::request::WriteOpts::internal(crate::server::MANAGER);
        let done = Objects::patch(
            &self.state.store,
            &self.crds,
            None,
            name,
            crate::patch::PatchType::Merge,
            &patch,
            None,
            &opts,
        )
        .await;
        if let Err(e) = done {
            tracing::warn!(crd = name, error = %e, "removing the clean-up finalizer");
        }
    }

    /// Deletes every stored object of the definition's type; returns how many remain (held
    /// by their finalizers).
    async fn delete_all(&self, crd: &CustomResourceDefinition) -> crate::Result<usize> {
        let names = crd
            .status
            .as_ref()
            .and_then(|s| s.accepted_names.clone())
            .filter(|n: &CustomResourceDefinitionNames| !n.plural.is_empty());
        let Some(names) = names else {
            return Ok(0);
        };
        let Some(r) = self
            .state
            .store
            .resources()
            .into_iter()
            .find(|r| r.group == crd.spec.group && r.plural == names.plural)
        else {
            return Ok(0);
        };
        let prefix = r.prefix(self.state.store.etcd.prefix());
        let keys = self.state.store.etcd.keys(&prefix).await?;
        let opts = DeleteOpts {
            user: crate::auth::UserInfo::apiserver(),
            ..Default::default()
        };
        let mut remaining = 0;
        for key in &keys {
            let rest = key.strip_prefix(&prefix).unwrap_or(key);
            let (ns, name) = match rest.split_once('/') {
                Some((ns, name)) if r.namespaced => (Some(ns), name),
                _ => (None, rest),
            };
            match Objects::delete(&self.state.store, &r, ns, name, &opts).await {
                Ok(Deleted::Gone(_)) => {}
                Ok(_) => remaining += 1,
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(remaining)
    }
}
