//! `MutatingAdmissionWebhook`: the mutating webhooks, called one after another; each answer's
//! JSONPatch is applied to the object, which then gets its type's defaults again (as decoding
//! a webhook's answer gives them in kube-apiserver). When a webhook changes the object, the
//! chain runs a second round, in which webhooks with `reinvocationPolicy: IfNeeded` that ran
//! before the change are called again.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{json, Value};
use tracing::Instrument;

use super::{internal, is_exempt, CallFailure, Dispatcher};
use crate::admission::{Attributes, Plugin};
use crate::error::Result;
use crate::registry::{convert_between as convert, Objects, ResourceInfo};

const NAME: &str = "MutatingAdmissionWebhook";

/// The plugin.
pub struct MutatingWebhook {
    dispatcher: Dispatcher,
}

impl MutatingWebhook {
    pub(super) fn new(dispatcher: Dispatcher) -> Self {
        MutatingWebhook { dispatcher }
    }
}

/// What the plugin remembers between rounds.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Rounds {
    /// Webhooks with `IfNeeded` called so far whose output a later change made stale.
    previously: BTreeSet<String>,
    /// Webhooks to call in the second round.
    reinvoke: BTreeSet<String>,
    /// The object as the last webhook left it.
    last: Option<Value>,
}

/// Applies a JSONPatch to `obj` and gives it its type's defaults again: the object as kube
/// decodes a webhook's answer. Whether it changed is the answer.
fn apply_patch(
    r: &ResourceInfo,
    subresource: &str,
    obj: &mut Value,
    patch: &[u8],
) -> std::result::Result<bool, String> {
    let ops: json_patch::Patch = serde_json::from_slice(patch)
        .map_err(|e| format!("received undecodable patch in webhook response: {e}"))?;
    if ops.0.is_empty() {
        return Ok(false);
    }
    let mut patched = obj.clone();
    json_patch::patch(&mut patched, &ops).map_err(|e| e.to_string())?;
    // A subresource of another kind (a Scale) has no defaults of the resource's type.
    let own_kind = subresource.is_empty()
        || r.subresource(subresource)
            .is_some_and(|h| h.kind().is_none());
    if own_kind {
        patched = r
            .strategy
            .default(patched)
            .map_err(|e| match e {
                crate::registry::Rejection::Decode(m) => m,
                crate::registry::Rejection::Invalid(c) => {
                    c.iter().map(|c| c.text()).collect::<Vec<_>>().join(", ")
                }
            })?
            .value;
    }
    let changed = patched != *obj;
    *obj = patched;
    Ok(changed)
}

#[async_trait::async_trait]
impl Plugin for MutatingWebhook {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        mut obj: Option<&mut Value>,
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
        let reinvoking = a.reinvocation.is_some_and(|r| r.is_reinvoke());
        let load = || -> Rounds {
            a.reinvocation
                .and_then(|r| r.with(|s| s.values.get(NAME).cloned()))
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default()
        };
        let store = |rounds: &Rounds| {
            if let Some(r) = a.reinvocation {
                let v = serde_json::to_value(rounds).unwrap_or(Value::Null);
                r.with(|s| s.values.insert(NAME, v));
            }
        };
        let mut rounds = load();
        if reinvoking && rounds.last.as_ref() != obj.as_deref() {
            // Another plugin changed the object since the last webhook: every webhook that
            // asked to be called again is.
            let previously = std::mem::take(&mut rounds.previously);
            rounds.reinvoke.extend(previously);
        }
        let round = usize::from(reinvoking);
        let mut result = Ok(());
        for hook in hooks.iter() {
            let current = obj.as_deref();
            let inv = match d.should_call(hook, a, current, objs).await {
                Ok(Some(inv)) => inv,
                Ok(None) => continue,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let uid = hook.uid();
            if reinvoking && !rounds.reinvoke.contains(&uid) {
                continue;
            }
            let key = |prefix: &str| format!("{prefix}round_{round}_index_{}", hook.index);
            let started = Instant::now();
            let span = tracing::debug_span!("mutating webhook", webhook = %hook.name, round);
            let called = d.call(&inv, a, current, objs).instrument(span).await;
            let mut changed = false;
            let called = match (called, obj.as_deref_mut()) {
                (Ok(resp), target) => match (&resp.patch, target) {
                    (None, _) => Ok(resp),
                    (Some(_), None) => Err(CallFailure::Internal(internal(format!(
                        "admission webhook {:?} attempted to modify the object, which is not supported for this operation",
                        hook.name
                    )))),
                    (Some(p), Some(target)) => {
                        let sent_as = inv.resource(a);
                        let converted = !std::ptr::eq(sent_as, a.resource);
                        let versioned = if converted {
                            convert(a.resource, sent_as, target).await
                        } else {
                            Ok(target.clone())
                        };
                        let patched = versioned.map_err(CallFailure::Internal).and_then(
                            |mut versioned| {
                                apply_patch(sent_as, a.subresource, &mut versioned, p)
                                    .map(|c| (c, versioned))
                                    .map_err(|e| {
                                        if e.starts_with("received undecodable patch") {
                                            CallFailure::Calling { reason: e, code: 503 }
                                        } else {
                                            CallFailure::Internal(internal(e))
                                        }
                                    })
                            },
                        );
                        match patched {
                            Ok((true, versioned)) if converted => {
                                match convert(sent_as, a.resource, &versioned).await {
                                    Ok(v) => {
                                        *target = v;
                                        changed = true;
                                        Ok(resp)
                                    }
                                    Err(e) => Err(CallFailure::Internal(e)),
                                }
                            }
                            Ok((c, versioned)) => {
                                if c {
                                    *target = versioned;
                                }
                                changed = c;
                                Ok(resp)
                            }
                            Err(e) => Err(e),
                        }
                    }
                },
                (Err(e), _) => Err(e),
            };
            a.notes().annotate(
                key("mutation.webhook.admission.k8s.io/"),
                json!({"configuration": hook.configuration, "webhook": hook.name, "mutated": changed})
                    .to_string(),
            );
            let settled = d.settle(
                hook,
                a,
                started,
                called,
                &key("failed-open.mutation.webhook.admission.k8s.io/"),
            );
            if changed {
                // Everything called before may want to see the change.
                let previously = std::mem::take(&mut rounds.previously);
                rounds.reinvoke.extend(previously);
                if let Some(r) = a.reinvocation {
                    r.with(|s| s.should_reinvoke = true);
                }
            }
            if hook.reinvoke {
                rounds.previously.insert(uid);
            }
            if let Err(e) = settled {
                result = Err(e);
                break;
            }
        }
        rounds.last = obj.as_deref().cloned();
        store(&rounds);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtin;

    #[test]
    fn patches_apply_with_the_type_defaults() {
        let pods = builtin("", "pods").unwrap();
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
        pod = pods.strategy.default(pod).unwrap().value;
        let patch = br#"[{"op": "add", "path": "/spec/containers/-", "value": {"name": "sidecar", "image": "proxy"}},
                         {"op": "add", "path": "/metadata/labels", "value": {"injected": "yes"}}]"#;
        assert!(apply_patch(&pods, "", &mut pod, patch).unwrap());
        let sidecar = &pod["spec"]["containers"][1];
        assert_eq!(sidecar["name"], "sidecar");
        // The injected container has its defaults, as the first one does.
        assert_eq!(
            sidecar["terminationMessagePath"],
            pod["spec"]["containers"][0]["terminationMessagePath"]
        );
        assert!(sidecar.get("imagePullPolicy").is_some(), "{sidecar}");
        assert_eq!(pod["metadata"]["labels"]["injected"], "yes");
        // A patch that changes nothing is not a change.
        assert!(!apply_patch(&pods, "", &mut pod, b"[]").unwrap());
        let same = br#"[{"op": "replace", "path": "/metadata/name", "value": "p"}]"#;
        assert!(!apply_patch(&pods, "", &mut pod, same).unwrap());
        let bad = apply_patch(&pods, "", &mut pod, b"{").unwrap_err();
        assert!(
            bad.starts_with("received undecodable patch in webhook response: "),
            "{bad}"
        );
        let missing = br#"[{"op": "remove", "path": "/spec/nothing"}]"#;
        assert!(apply_patch(&pods, "", &mut pod, missing).is_err());
    }
}
