//! PersistentVolumeClaimResize: a claim may ask for more storage only once bound, and only
//! when its StorageClass allows expansion (`allowVolumeExpansion: true`); otherwise the update
//! is refused with kube's words.

use serde_json::Value;
use skiff_rules::Quantity;

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::Result;
use crate::registry::persistentvolume::class_of;
use crate::registry::Objects;

/// The plugin.
pub struct PersistentVolumeClaimResize;

fn storage(pvc: &Value) -> Option<Quantity> {
    let q = pvc.pointer("/spec/resources/requests/storage")?.as_str()?;
    Quantity::try_from(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        q.to_string(),
    ))
    .ok()
}

#[async_trait::async_trait]
impl Plugin for PersistentVolumeClaimResize {
    fn name(&self) -> &'static str {
        "PersistentVolumeClaimResize"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let (Some(pvc), Some(old)) = (obj, a.old) else {
            return Ok(());
        };
        if a.operation != Operation::Update
            || !a.subresource.is_empty()
            || !a.resource.group.is_empty()
            || a.resource.plural != "persistentvolumeclaims"
        {
            return Ok(());
        }
        let (Some(new_size), Some(old_size)) = (storage(pvc), storage(old)) else {
            return Ok(());
        };
        if new_size <= old_size {
            return Ok(());
        }
        if old.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
            return Err(forbidden(
                a,
                Some(pvc),
                "Only bound persistent volume claims can be expanded",
            ));
        }
        let class = class_of(pvc);
        let allowed = match objs.resource("storage.k8s.io", "v1", "storageclasses") {
            Some(scr) if !class.is_empty() => {
                let found = match objs.cached(&scr, None, &class) {
                    Some(c) => Some(c.value()),
                    None => objs.get(&scr, None, &class).await.ok(),
                };
                found
                    .and_then(|c| c.get("allowVolumeExpansion").and_then(Value::as_bool))
                    .unwrap_or(false)
            }
            _ => false,
        };
        if !allowed {
            return Err(forbidden(
                a,
                Some(pvc),
                "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use crate::auth::UserInfo;
    use crate::registry::builtin;
    use serde_json::json;

    fn claim(class: &str, size: &str, phase: &str) -> Value {
        json!({"metadata": {"name": "data"}, "spec": {"storageClassName": class,
            "resources": {"requests": {"storage": size}}}, "status": {"phase": phase}})
    }

    #[tokio::test]
    async fn growth_needs_a_bound_claim_of_an_expandable_class() {
        let pvcs = builtin("", "persistentvolumeclaims").unwrap();
        let user = UserInfo::default();
        let objs = Fixed::default()
            .with(
                "storageclasses",
                "",
                json!({"metadata": {"name": "grow"}, "provisioner": "p",
                "allowVolumeExpansion": true}),
            )
            .with(
                "storageclasses",
                "",
                json!({"metadata": {"name": "fixed"}, "provisioner": "p"}),
            );
        let check = |old: Value, new: Value| {
            let pvcs = pvcs.clone();
            let user = user.clone();
            let objs = &objs;
            async move {
                let a = Attributes {
                    operation: Operation::Update,
                    resource: &pvcs,
                    subresource: "",
                    namespace: "default",
                    name: "data",
                    old: Some(&old),
                    user: &user,
                    dry_run: false,
                    options: crate::admission::Options::None,
                    reinvocation: None,
                };
                PersistentVolumeClaimResize
                    .validate(&a, Some(&new), objs)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        assert!(
            check(claim("grow", "1Gi", "Bound"), claim("grow", "2Gi", "Bound"))
                .await
                .is_ok()
        );
        assert!(check(
            claim("fixed", "1Gi", "Bound"),
            claim("fixed", "1Gi", "Bound")
        )
        .await
        .is_ok());
        assert_eq!(
            check(claim("fixed", "1Gi", "Bound"), claim("fixed", "2Gi", "Bound")).await.unwrap_err(),
            "persistentvolumeclaims \"data\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
        );
        assert_eq!(
            check(claim("grow", "1Gi", "Pending"), claim("grow", "2Gi", "Pending")).await.unwrap_err(),
            "persistentvolumeclaims \"data\" is forbidden: Only bound persistent volume claims can be expanded"
        );
        assert!(
            check(claim("gone", "1Gi", "Bound"), claim("gone", "2Gi", "Bound"))
                .await
                .is_err()
        );
    }
}
