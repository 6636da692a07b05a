//! What kube-apiserver's apiextensions controllers do, in every API server: for each
//! CustomResourceDefinition, accept its names (or say which are taken, with the naming
//! controller's reasons), serve its versions, report `NamesAccepted` and `Established`; look
//! again at the definitions waiting for names whenever another in their group changes or
//! goes; and when one is deleted, delete every object of its type, then let it go (the
//! `customresourcecleanup.apiextensions.k8s.io` finalizer) and stop serving it. Several API
//! servers may do this at once: every write is idempotent.

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
use crate::registry::custom::conversion::{Caller, Hook};
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
        webhooks: conversion_webhooks(&state),
        state: state.clone(),
        crds,
        served: BTreeMap::new(),
        written: BTreeMap::new(),
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
                    Ok(e) if e.kind == EventType::Bookmark => {}
                    Ok(e) => {
                        let name = e.object.name.clone();
                        if e.kind == EventType::Deleted {
                            c.stop_serving(&name);
                            c.written.remove(&name);
                        } else {
                            c.reconcile(&name, &retry_tx).await;
                        }
                        // A name released or taken may decide another definition's names.
                        let group = serde_json::from_value::<CustomResourceDefinition>(
                            e.object.value(),
                        )
                        .map(|d| d.spec.group)
                        .unwrap_or_default();
                        c.reconcile_waiting(&name, &group, &retry_tx).await;
                    }
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => break,
                }
            }
        }
    }
}

/// How long a conversion webhook has to answer, as kube-apiserver gives it.
const CONVERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// What calls the conversion webhooks of the definitions served.
fn conversion_webhooks(state: &Arc<State>) -> Arc<dyn Caller> {
    Arc::new(ConversionWebhooks {
        clients: Default::default(),
        // The served resources hold this: a strong reference would keep the server alive.
        state: Arc::downgrade(state),
    })
}

/// The server's webhook client, reaching a Service through the store's EndpointSlices.
struct ConversionWebhooks {
    clients: crate::webhook::Clients,
    state: std::sync::Weak<State>,
}

#[async_trait::async_trait]
impl Caller for ConversionWebhooks {
    async fn call(&self, hook: &Hook, review: &Value) -> Result<Value, String> {
        let state = self
            .state
            .upgrade()
            .ok_or_else(|| "the server is shutting down".to_string())?;
        let config =
            crate::webhook::ClientConfig::from_json(&crate::validation::val(&hook.client_config))?;
        let span = tracing::debug_span!("conversion webhook", crd = %hook.definition);
        tracing::Instrument::instrument(
            self.clients
                .post(&config, &state.store, review, CONVERSION_TIMEOUT),
            span,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

struct Controller {
    state: Arc<State>,
    /// What sends conversion reviews to the definitions' webhooks.
    webhooks: Arc<dyn Caller>,
    crds: Resource,
    /// What each definition serves: its `plural.group`, and what it was served from (the
    /// generation and the accepted names).
    served: BTreeMap<String, (String, String)>,
    /// The names this controller accepted for each definition, with the resourceVersion of
    /// that write: the cache may not show a write just made, and a name must not be given
    /// twice meanwhile.
    written: BTreeMap<String, (i64, CustomResourceDefinitionNames)>,
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

/// The names held in a group: resource names (plurals, singulars, short names) and kinds
/// (kinds and list kinds), as kube-apiserver's naming controller counts them.
#[derive(Default)]
struct Taken {
    resources: HashSet<String>,
    kinds: HashSet<String>,
}

impl Taken {
    fn hold(&mut self, n: &CustomResourceDefinitionNames) {
        self.resources.insert(n.plural.clone());
        self.resources.extend(n.singular.clone());
        self.resources
            .extend(n.short_names.iter().flatten().cloned());
        self.kinds.insert(n.kind.clone());
        self.kinds.extend(n.list_kind.clone());
    }
}

/// Why some requested names cannot be accepted: the condition's reason and message.
type Conflict = (&'static str, String);

/// A requested name is fine when the definition holds it already or nobody does.
fn fresh(requested: &str, accepted: &str, used: &HashSet<String>) -> Result<(), String> {
    if requested == accepted || !used.contains(requested) {
        Ok(())
    } else {
        Err(format!("{requested:?} is already in use"))
    }
}

/// Several errors as Kubernetes' aggregate error prints them (each message once).
fn aggregate(errs: &[String]) -> String {
    let mut unique: Vec<&str> = Vec::new();
    for e in errs {
        if !unique.contains(&e.as_str()) {
            unique.push(e);
        }
    }
    match unique.as_slice() {
        [one] => one.to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The names a definition gets: each requested name that is its own already or free; the
/// others stay as accepted before, and the last conflict found is reported (the order and
/// reasons of kube-apiserver's naming controller).
fn accept_names(
    requested: &CustomResourceDefinitionNames,
    accepted: &CustomResourceDefinitionNames,
    taken: &Taken,
) -> (CustomResourceDefinitionNames, Option<Conflict>) {
    let mut names = accepted.clone();
    let mut conflict = None;
    match fresh(&requested.plural, &accepted.plural, &taken.resources) {
        Ok(()) => names.plural = requested.plural.clone(),
        Err(e) => conflict = Some(("PluralConflict", e)),
    }
    let singular = |n: &CustomResourceDefinitionNames| n.singular.clone().unwrap_or_default();
    match fresh(&singular(requested), &singular(accepted), &taken.resources) {
        Ok(()) => names.singular = requested.singular.clone(),
        Err(e) => conflict = Some(("SingularConflict", e)),
    }
    let short = |n: &CustomResourceDefinitionNames| n.short_names.clone().unwrap_or_default();
    if short(requested) != short(accepted) {
        let held = short(accepted);
        let errs: Vec<String> = short(requested)
            .iter()
            .filter(|s| !held.contains(s))
            .filter_map(|s| fresh(s, "", &taken.resources).err())
            .collect();
        if errs.is_empty() {
            names.short_names = requested.short_names.clone();
        } else {
            conflict = Some(("ShortNamesConflict", aggregate(&errs)));
        }
    }
    match fresh(&requested.kind, &accepted.kind, &taken.kinds) {
        Ok(()) => names.kind = requested.kind.clone(),
        Err(e) => conflict = Some(("KindConflict", e)),
    }
    let list_kind = |n: &CustomResourceDefinitionNames| n.list_kind.clone().unwrap_or_default();
    match fresh(&list_kind(requested), &list_kind(accepted), &taken.kinds) {
        Ok(()) => names.list_kind = requested.list_kind.clone(),
        Err(e) => conflict = Some(("ListKindConflict", e)),
    }
    names.categories = requested.categories.clone();
    (names, conflict)
}

impl Controller {
    fn crd(&self, name: &str) -> Option<(Value, CustomResourceDefinition)> {
        let cached = self.state.store.cached(&self.crds, None, name)?;
        let value = cached.value();
        let crd = serde_json::from_value(value.clone()).ok()?;
        Some((value, crd))
    }

    /// The names other definitions (and built-in types) hold in `group`.
    fn taken(&self, me: &str, group: &str) -> Taken {
        let mut out = Taken::default();
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
            match self.written.get(&c.name) {
                Some((rv, names)) if *rv > c.rv => out.hold(names),
                _ => {
                    if let Some(n) = other.status.and_then(|s| s.accepted_names) {
                        out.hold(&n);
                    }
                }
            }
        }
        for r in self.state.store.resources() {
            if r.group == group && r.json_schema.is_none() {
                out.resources.insert(r.plural.clone());
                out.resources.insert(r.singular.clone());
                out.resources.extend(r.short_names.iter().cloned());
                out.kinds.insert(r.kind.clone());
                out.kinds.insert(format!("{}List", r.kind));
            }
        }
        out
    }

    /// Reconciles the other definitions of `group` that do not have all the names they ask
    /// for.
    async fn reconcile_waiting(
        &mut self,
        me: &str,
        group: &str,
        retry: &tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        let waiting: Vec<String> = self
            .state
            .store
            .cached_list(&self.crds, None)
            .iter()
            .filter(|c| c.name != me && !c.deleting)
            .filter_map(|c| serde_json::from_value::<CustomResourceDefinition>(c.value()).ok())
            .filter(|d| d.spec.group == group)
            .filter(|d| {
                d.status.as_ref().and_then(|s| s.accepted_names.as_ref()) != Some(&d.spec.names)
            })
            .filter_map(|d| d.metadata.name)
            .collect();
        for name in waiting {
            self.reconcile(&name, retry).await;
        }
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
        let previous = crd
            .status
            .as_ref()
            .and_then(|s| s.accepted_names.clone())
            .unwrap_or_default();
        let taken = self.taken(name, &crd.spec.group);
        let (names, conflict) = accept_names(&crd.spec.names, &previous, &taken);
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
        next["acceptedNames"] = crate::validation::val(&names);
        let was_established = conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        match &conflict {
            Some((reason, why)) => {
                set_condition(
                    &mut conditions,
                    condition("NamesAccepted", false, reason, why),
                );
                if !was_established {
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
                set_condition(
                    &mut conditions,
                    condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
                );
                if !was_established {
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
        }
        next["conditions"] = json!(conditions);
        // Served, as kube-apiserver serves it, once its names are all accepted or it was
        // established before: by the names accepted.
        let serving = conflict.is_none() || was_established;
        let from = format!(
            "{generation}/{}",
            serde_json::to_string(&names).unwrap_or_default()
        );
        if serving && self.served.get(name).map(|s| &s.1) != Some(&from) {
            let mut accepted = crd.clone();
            accepted
                .status
                .get_or_insert_with(Default::default)
                .accepted_names = Some(names.clone());
            let versions = crate::registry::custom::served(&accepted, &self.webhooks);
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
            self.served.insert(name.to_string(), (gr, from));
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
            match write {
                Ok(obj) => {
                    let rv = obj
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    self.written.insert(name.to_string(), (rv, names));
                }
                Err(e) => {
                    tracing::warn!(crd = name, error = %e, "writing the definition's status")
                }
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
        // No new objects while the old ones go (served again, creates refused).
        const TERMINATING: &str = "terminating";
        if let Some((gr, from)) = self.served.get_mut(name) {
            if from != TERMINATING {
                *from = TERMINATING.into();
                let gr = gr.clone();
                let versions: Vec<_> = crate::registry::custom::served(crd, &self.webhooks)
                    .into_iter()
                    .map(|r| {
                        r.with(|r| {
                            r.refuse_create = Some(
                                "create not allowed while custom resource definition is terminating"
                                    .into(),
                            )
                        })
                    })
                    .collect();
                if versions.first().is_some_and(|r| r.group_resource() == gr) {
                    self.state.store.serve_dynamic(versions, &self.shutdown);
                }
            }
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
        // Through the storage version where it is served: its objects need no conversion, so
        // a conversion webhook that is down does not hold the clean-up.
        let storage = crd
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .map(|v| &v.name);
        let mut of_kind: Vec<Resource> = self
            .state
            .store
            .resources()
            .into_iter()
            .filter(|r| r.group == crd.spec.group && r.plural == names.plural)
            .collect();
        of_kind.sort_by_key(|r| Some(&r.version) != storage);
        let Some(r) = of_kind.into_iter().next() else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(plural: &str, kind: &str, short: &[&str]) -> CustomResourceDefinitionNames {
        CustomResourceDefinitionNames {
            plural: plural.into(),
            singular: Some(kind.to_lowercase()),
            kind: kind.into(),
            list_kind: Some(format!("{kind}List")),
            short_names: Some(short.iter().map(|s| s.to_string()).collect()),
            categories: Some(vec!["all".into()]),
        }
    }

    fn held(by: &[CustomResourceDefinitionNames]) -> Taken {
        let mut t = Taken::default();
        for n in by {
            t.hold(n);
        }
        t
    }

    #[test]
    fn free_names_are_all_accepted() {
        let want = names("widgets", "Widget", &["wd"]);
        let taken = held(&[names("gadgets", "Gadget", &["gd"])]);
        let (got, conflict) = accept_names(&want, &Default::default(), &taken);
        assert_eq!(got, want);
        assert_eq!(conflict, None);
    }

    #[test]
    fn a_taken_short_name_is_refused_and_the_rest_accepted() {
        let want = names("gadgets", "Gadget", &["wd", "gd"]);
        let taken = held(&[names("widgets", "Widget", &["wd"])]);
        let (got, conflict) = accept_names(&want, &Default::default(), &taken);
        assert_eq!(
            conflict,
            Some(("ShortNamesConflict", "\"wd\" is already in use".to_string()))
        );
        assert_eq!(got.plural, "gadgets");
        assert_eq!(got.kind, "Gadget");
        assert_eq!(
            got.short_names, None,
            "none of the short names until all are free"
        );
    }

    #[test]
    fn conflicts_are_named_as_kubernetes_names_them() {
        let taken = held(&[names("widgets", "Widget", &["wd", "w"])]);
        let cases = [
            (
                names("widgets", "Thing", &[]),
                "PluralConflict",
                "\"widgets\"",
            ),
            (names("things", "Widget", &[]), "KindConflict", "\"Widget\""),
        ];
        for (mut want, reason, what) in cases {
            // One name at a time: the last conflict found is the one reported.
            want.singular = Some("thing".into());
            want.list_kind = Some("ThingList".into());
            let (_, conflict) = accept_names(&want, &Default::default(), &taken);
            assert_eq!(
                conflict,
                Some((reason, format!("{what} is already in use"))),
                "{want:?}"
            );
        }
        let mut singular = names("things", "Thing", &[]);
        singular.singular = Some("widget".into());
        let (_, conflict) = accept_names(&singular, &Default::default(), &taken);
        assert_eq!(conflict.map(|c| c.0), Some("SingularConflict"));
        let mut list = names("things", "Thing", &[]);
        list.list_kind = Some("WidgetList".into());
        let (_, conflict) = accept_names(&list, &Default::default(), &taken);
        assert_eq!(conflict.map(|c| c.0), Some("ListKindConflict"));
        let (_, conflict) = accept_names(
            &names("things", "Thing", &["wd", "w"]),
            &Default::default(),
            &taken,
        );
        assert_eq!(
            conflict,
            Some((
                "ShortNamesConflict",
                "[\"wd\" is already in use, \"w\" is already in use]".to_string()
            ))
        );
    }

    #[test]
    fn names_already_held_stay_held() {
        let mine = names("widgets", "Widget", &["wd"]);
        // Another definition claims the same names later (a race between servers): what
        // this one holds is still its own.
        let taken = held(std::slice::from_ref(&mine));
        let (got, conflict) = accept_names(&mine, &mine, &taken);
        assert_eq!((got, conflict), (mine, None));
    }
}
