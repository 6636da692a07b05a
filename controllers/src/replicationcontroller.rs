//! The ReplicationController controller: the ReplicaSet controller ([`crate::replicaset`])
//! over core/v1 ReplicationControllers, whose selector is a plain label map (equality-based,
//! read as a `matchLabels` selector), as Kubernetes runs it.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::replicaset::{run_over, Replicated};
use crate::Context;

impl Replicated for ReplicationController {
    const LOG_NAME: &'static str = "replicationcontroller";

    fn selector(&self) -> Option<Cow<'_, LabelSelector>> {
        // An empty map would select every pod: validation refuses one, and this controller
        // leaves such an object alone rather than adopt the whole namespace.
        let labels = self.spec.as_ref()?.selector.clone()?;
        if labels.is_empty() {
            return None;
        }
        Some(Cow::Owned(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        }))
    }

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn status_value(&self) -> Value {
        self.status
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .unwrap_or_else(|| json!({}))
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let informer = ctx.owned::<ReplicationController>();
    let concurrency = ctx.config.concurrent_rc_syncs;
    run_over(ctx, informer, concurrency, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_map_is_read_as_match_labels() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "r"},
            "spec": {"selector": {"app": "web"}, "template": {"metadata": {"labels": {"app": "web"}}}}
        }))
        .unwrap();
        let sel = rc.selector().unwrap();
        let labels = |v: Value| serde_json::from_value(v).unwrap();
        assert!(skiff_rules::selector::matches(
            Some(&sel),
            Some(&labels(json!({"app": "web", "x": "y"})))
        ));
        assert!(!skiff_rules::selector::matches(
            Some(&sel),
            Some(&labels(json!({"app": "db"})))
        ));
        assert_eq!(rc.replicas(), 1);
        let empty: ReplicationController =
            serde_json::from_value(json!({"metadata": {"name": "r"}, "spec": {"selector": {}}}))
                .unwrap();
        assert!(empty.selector().is_none(), "an empty map selects nothing");
    }
}
