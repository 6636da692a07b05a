//! The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule` holds the
//! union of the rules of every ClusterRole its selectors match (how `admin`, `edit` and `view`
//! gain the rules of `system:aggregate-to-*` and of any role a user labels to join them).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let roles = ctx.informers.informer::<ClusterRole>();
    let ctrl = Controller::new(roles.clone(), RunConfig::default());
    let queue = ctrl.queue();
    let store = roles.store();
    // Any role's change may change what an aggregated role selects: look at them all.
    {
        let store = store.clone();
        crate::spawn_each(roles.subscribe(), shutdown.clone(), move |_| {
            for r in store.state() {
                if r.aggregation_rule.is_some() {
                    queue.add(ObjectKey::new(
                        "",
                        r.metadata.name.as_deref().unwrap_or_default(),
                    ));
                }
            }
        });
    }
    ctrl.run(
        move |_key, role| {
            let (ctx, store) = (ctx.clone(), store.clone());
            async move { reconcile(&ctx, &store, role).await }
        },
        shutdown,
    )
    .await;
}

/// The rules `role` aggregates from `all`, in a stable order, each once.
pub fn aggregated(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_ref()?;
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            selectors
                .iter()
                .any(|s| skiff_rules::selector::matches(Some(s), r.metadata.labels.as_ref()))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for r in sources {
        for rule in r.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

async fn reconcile(
    ctx: &Context,
    store: &Store<ClusterRole>,
    role: Option<Arc<ClusterRole>>,
) -> Result<Action, skiff_client::Error> {
    let Some(role) = role else {
        return Ok(Action::Done);
    };
    store.wait_until_ready().await;
    let Some(rules) = aggregated(&role, &store.state()) else {
        return Ok(Action::Done);
    };
    if role.rules.as_deref().unwrap_or_default() == rules.as_slice() {
        return Ok(Action::Done);
    }
    let name = role.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({"rules": rules});
    match Api::<ClusterRole>::all(ctx.client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Action::Done),
        Err(e) if e.is_not_found() => Ok(Action::Done),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, labels: &[(&str, &str)], verbs: &[&str]) -> Arc<ClusterRole> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
                "rules": [{"verbs": verbs, "apiGroups": [""], "resources": ["pods"]}],
            }))
            .unwrap(),
        )
    }

    #[test]
    fn union_of_the_selected_roles() {
        let agg: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-view": "true"}}]},
        }))
        .unwrap();
        let all = vec![
            role("b", &[("to-view", "true")], &["list"]),
            role("a", &[("to-view", "true")], &["get"]),
            role("c", &[], &["delete"]),
            role("d", &[("to-view", "true")], &["get"]),
        ];
        let rules = aggregated(&agg, &all).unwrap();
        let verbs: Vec<_> = rules.iter().map(|r| r.verbs.join(",")).collect();
        assert_eq!(verbs, vec!["get", "list"]);
        assert!(aggregated(&all[0], &all).is_none());
    }
}
