//! `ValidatingAdmissionWebhook`: the validating webhooks that match a request, called all at
//! once; the first refusal (in configuration order) refuses the request.

use std::time::Instant;

use serde_json::Value;
use tracing::Instrument;

use super::{is_exempt, Dispatcher};
use crate::admission::{Attributes, Plugin};
use crate::error::Result;
use crate::registry::Objects;

/// The plugin.
pub struct ValidatingWebhook {
    dispatcher: Dispatcher,
}

impl ValidatingWebhook {
    pub(super) fn new(dispatcher: Dispatcher) -> Self {
        ValidatingWebhook { dispatcher }
    }
}

#[async_trait::async_trait]
impl Plugin for ValidatingWebhook {
    fn name(&self) -> &'static str {
        "ValidatingAdmissionWebhook"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        if is_exempt(a) {
            return Ok(());
        }
        let d = &self.dispatcher;
        let hooks = d.source.hooks(objs);
        if hooks.is_empty() {
            return Ok(());
        }
        let mut invocations = Vec::new();
        for hook in hooks.iter() {
            if let Some(inv) = d.should_call(hook, a, obj, objs).await? {
                invocations.push(inv);
            }
        }
        let calls = invocations.iter().map(|inv| {
            let span = tracing::debug_span!("validating webhook", webhook = %inv.hook.name);
            async move {
                let started = Instant::now();
                let called = d.call(inv, a, obj, objs).await;
                let key = format!(
                    "failed-open.validating.webhook.admission.k8s.io/round_0_index_{}",
                    inv.hook.index
                );
                d.settle(inv.hook, a, started, called, &key).map(|_| ())
            }
            .instrument(span)
        });
        for r in futures::future::join_all(calls).await {
            r?;
        }
        Ok(())
    }
}
