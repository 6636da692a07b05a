//! The external attacher: Kubernetes' `external-attacher` sidecar, built in.
//!
//! The attach/detach controller asks for a volume on a node by creating a `VolumeAttachment`
//! whose `spec.attacher` is the driver. The attacher of that driver then, talking to the driver
//! only through CSI gRPC on its socket:
//!
//! - for a driver with the `PUBLISH_UNPUBLISH_VOLUME` controller capability, adds its finalizer
//!   `external-attacher/<driver, other characters than letters, digits and '-' as '-'>`, calls
//!   `ControllerPublishVolume` with the PersistentVolume's handle, capability, read-only flag and
//!   attributes and the node's CSI node id (from the node's `CSINode`, else its
//!   `csi.volume.kubernetes.io/nodeid` annotation), and sets `status.attached: true` with the
//!   driver's publish context as `status.attachmentMetadata` — or `status.attachError` with the
//!   driver's error, retried with back-off;
//! - when the attachment is deleted, calls `ControllerUnpublishVolume` (`status.detachError`
//!   on failure) and then drops its finalizer;
//! - for a driver without that capability, which has nothing to attach, just sets
//!   `status.attached: true` and keeps no finalizer (the external-attacher's trivial handler).
//!
//! In node deployment ([`Config::node`]) only the attachments of this node are handled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use k8s_openapi::api::storage::v1::{CSINode, VolumeAttachment};
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::informer::InformerFactory;
use skiff_client::{Api, Client, Patch, PatchParams};
use skiff_proto::csi::v1 as csi;
use tokio_util::sync::CancellationToken;

use crate::provisioner::{capabilities, Config, Error, Plugin, Result};
use crate::CsiClient;

/// The Node annotation mapping drivers to the node's CSI node id.
const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";

/// The finalizer the attacher of `driver` keeps on attachments it attached.
pub fn finalizer(driver: &str) -> String {
    let mut name: String = driver
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.ends_with('-') {
        name.push('X');
    }
    format!("external-attacher/{name}")
}

/// Whether the driver's Controller service attaches (`PUBLISH_UNPUBLISH_VOLUME`).
pub async fn publishes(csi: &CsiClient) -> Result<bool> {
    use csi::controller_service_capability::{rpc::Type, Type as Cap};
    let caps = csi
        .controller
        .clone()
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await?
        .into_inner()
        .capabilities;
    Ok(caps.iter().any(|c| {
        matches!(&c.r#type, Some(Cap::Rpc(r)) if r.r#type == Type::PublishUnpublishVolume as i32)
    }))
}

struct Attacher {
    driver: String,
    node: Option<String>,
    publishes: bool,
    csi: CsiClient,
    client: Client,
}

fn now() -> String {
    skiff_client::time::now_rfc3339()
}

impl Attacher {
    async fn reconcile(&self, va: Arc<VolumeAttachment>) -> Result<Action> {
        if va.spec.attacher != self.driver
            || self.node.as_ref().is_some_and(|n| *n != va.spec.node_name)
        {
            return Ok(Action::Done);
        }
        let fin = finalizer(&self.driver);
        let has_finalizer = va.metadata.finalizers.iter().flatten().any(|f| *f == fin);
        if va.metadata.deletion_timestamp.is_some() {
            if has_finalizer {
                self.detach(&va, &fin).await?;
            }
            return Ok(Action::Done);
        }
        if va.status.as_ref().is_some_and(|s| s.attached) {
            return Ok(Action::Done);
        }
        if !self.publishes {
            self.set_status(&va, json!({"attached": true})).await?;
            return Ok(Action::Done);
        }
        if !has_finalizer {
            let mut list: Vec<String> = va.metadata.finalizers.clone().unwrap_or_default();
            list.push(fin);
            self.patch_meta(&va, json!({"finalizers": list})).await?;
            // The change comes back through the watch and is attached then.
            return Ok(Action::Done);
        }
        match self.attach(&va).await {
            Ok(context) => {
                let meta: BTreeMap<String, String> = context.into_iter().collect();
                self.set_status(
                    &va,
                    json!({"attached": true, "attachmentMetadata": meta, "attachError": null}),
                )
                .await?;
                tracing::info!(attachment = ?va.metadata.name, node = %va.spec.node_name, "attached");
                Ok(Action::Done)
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(attachment = ?va.metadata.name, error = %message, "attaching failed");
                // The same error again is not written again: a status change would come back
                // through the watch and retry at once instead of after the back-off.
                let known = va
                    .status
                    .as_ref()
                    .and_then(|s| s.attach_error.as_ref())
                    .and_then(|e| e.message.as_deref());
                if known != Some(message.as_str()) {
                    self.set_status(
                        &va,
                        json!({"attached": false,
                            "attachError": {"time": now(), "message": message}}),
                    )
                    .await?;
                }
                Err(e)
            }
        }
    }

    /// `ControllerPublishVolume`; the publish context.
    async fn attach(&self, va: &VolumeAttachment) -> Result<HashMap<String, String>> {
        let (pv, source) = self.volume(va).await?;
        let node_id = self.node_id(&va.spec.node_name).await?;
        let spec = pv.spec.clone().unwrap_or_default();
        let modes = spec.access_modes.clone().unwrap_or_default();
        let block = spec.volume_mode.as_deref() == Some("Block");
        let capability = capabilities(
            &modes,
            block,
            source.fs_type.as_deref().unwrap_or(""),
            &spec.mount_options.clone().unwrap_or_default(),
        )
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "PersistentVolume {:?} has no access modes",
                pv.metadata.name.as_deref().unwrap_or("")
            ))
        })?;
        let r = self
            .csi
            .controller
            .clone()
            .controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id: source.volume_handle.clone(),
                node_id,
                volume_capability: Some(capability),
                readonly: source.read_only.unwrap_or(false),
                secrets: HashMap::new(),
                volume_context: source
                    .volume_attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })
            .await?;
        Ok(r.into_inner().publish_context)
    }

    /// `ControllerUnpublishVolume`, then the finalizer goes.
    async fn detach(&self, va: &VolumeAttachment, fin: &str) -> Result<()> {
        let r = async {
            let (_, source) = self.volume(va).await?;
            let node_id = self.node_id(&va.spec.node_name).await?;
            self.csi
                .controller
                .clone()
                .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                    volume_id: source.volume_handle.clone(),
                    node_id,
                    secrets: HashMap::new(),
                })
                .await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = r {
            let message = e.to_string();
            tracing::warn!(attachment = ?va.metadata.name, error = %message, "detaching failed");
            let known = va
                .status
                .as_ref()
                .and_then(|s| s.detach_error.as_ref())
                .and_then(|e| e.message.as_deref());
            if known != Some(message.as_str()) {
                self.set_status(
                    va,
                    json!({"detachError": {"time": now(), "message": message}}),
                )
                .await?;
            }
            return Err(e);
        }
        let rest: Vec<&String> = va
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != fin)
            .collect();
        self.patch_meta(va, json!({"finalizers": rest})).await?;
        tracing::info!(attachment = ?va.metadata.name, node = %va.spec.node_name, "detached");
        Ok(())
    }

    /// The attachment's PersistentVolume and its CSI source.
    async fn volume(
        &self,
        va: &VolumeAttachment,
    ) -> Result<(
        PersistentVolume,
        k8s_openapi::api::core::v1::CSIPersistentVolumeSource,
    )> {
        let Some(name) = va.spec.source.persistent_volume_name.as_deref() else {
            return Err(Error::Invalid(
                "the VolumeAttachment names no PersistentVolume (inline volumes are not supported)"
                    .into(),
            ));
        };
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get(name)
            .await?;
        let source = pv
            .spec
            .as_ref()
            .and_then(|s| s.csi.clone())
            .ok_or_else(|| {
                Error::Invalid(format!("PersistentVolume {name:?} is not a CSI volume"))
            })?;
        if source.driver != self.driver {
            return Err(Error::Invalid(format!(
                "PersistentVolume {name:?} is of driver {:?}, not {:?}",
                source.driver, self.driver
            )));
        }
        Ok((pv, source))
    }

    /// The driver's id for `node`: its CSINode entry, else the Node's annotation.
    async fn node_id(&self, node: &str) -> Result<String> {
        let csinode = Api::<CSINode>::all(self.client.clone())
            .get_opt(node)
            .await?;
        if let Some(d) = csinode
            .iter()
            .flat_map(|c| c.spec.drivers.iter())
            .find(|d| d.name == self.driver)
        {
            return Ok(d.node_id.clone());
        }
        let annotated = Api::<Node>::all(self.client.clone())
            .get_opt(node)
            .await?
            .and_then(|n| n.metadata.annotations?.get(NODE_ID_ANNOTATION).cloned())
            .and_then(|a| serde_json::from_str::<BTreeMap<String, String>>(&a).ok())
            .and_then(|ids| ids.get(&self.driver).cloned());
        annotated.ok_or_else(|| {
            Error::Invalid(format!(
                "CSINode {node} does not contain driver {}",
                self.driver
            ))
        })
    }

    async fn set_status(&self, va: &VolumeAttachment, status: serde_json::Value) -> Result<()> {
        let name = va.metadata.name.clone().unwrap_or_default();
        match Api::<VolumeAttachment>::all(self.client.clone())
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn patch_meta(&self, va: &VolumeAttachment, meta: serde_json::Value) -> Result<()> {
        let name = va.metadata.name.clone().unwrap_or_default();
        let mut meta = meta;
        meta["resourceVersion"] = json!(va.metadata.resource_version);
        match Api::<VolumeAttachment>::all(self.client.clone())
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": meta })),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs the attacher for the driver at `csi` until `shutdown`.
pub async fn run(
    client: Client,
    csi: CsiClient,
    plugin: Plugin,
    config: Config,
    shutdown: CancellationToken,
) {
    let backoff = skiff_rules::Backoff::exponential(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(30),
    );
    let mut delay = None;
    let publishes = loop {
        match publishes(&csi).await {
            Ok(p) => break p,
            Err(e) => {
                let d = backoff.after(delay);
                delay = Some(d);
                tracing::warn!(error = %e, "asking the driver's controller capabilities; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    };
    tracing::info!(
        driver = %plugin.name,
        publishes,
        "attaching volumes{}",
        if publishes { " with ControllerPublishVolume" } else { " (nothing to publish)" }
    );
    let factory = InformerFactory::new(client.clone(), shutdown.clone());
    let attachments = factory.informer::<VolumeAttachment>();
    let a = Arc::new(Attacher {
        driver: plugin.name,
        node: config.node,
        publishes,
        csi,
        client,
    });
    Controller::new(attachments, RunConfig::default())
        .run_present(
            move |va: Arc<VolumeAttachment>| {
                let a = a.clone();
                async move { a.reconcile(va).await }
            },
            shutdown,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizers_are_the_external_attachers() {
        assert_eq!(
            finalizer("ebs.csi.aws.com"),
            "external-attacher/ebs-csi-aws-com"
        );
        assert_eq!(
            finalizer("local.csi.skiff.dev"),
            "external-attacher/local-csi-skiff-dev"
        );
        assert_eq!(finalizer("odd/driver."), "external-attacher/odd-driver-X");
    }
}
