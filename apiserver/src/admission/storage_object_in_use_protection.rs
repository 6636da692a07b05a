//! StorageObjectInUseProtection: every new PersistentVolumeClaim gets the
//! `kubernetes.io/pvc-protection` finalizer and every new PersistentVolume the
//! `kubernetes.io/pv-protection` one, so that neither goes while in use; the `pvc-protection`
//! and `pv-protection` controllers remove them once the object is no longer used.

use serde_json::Value;

use super::{Attributes, Operation, Plugin};
use crate::error::Result;
use crate::registry::Objects;

/// The plugin.
pub struct StorageObjectInUseProtection;

/// The finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while a claim is bound to it.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

#[async_trait::async_trait]
impl Plugin for StorageObjectInUseProtection {
    fn name(&self) -> &'static str {
        "StorageObjectInUseProtection"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        _objs: &dyn Objects,
    ) -> Result<()> {
        let Some(obj) = obj else { return Ok(()) };
        if a.operation != Operation::Create
            || !a.subresource.is_empty()
            || !a.resource.group.is_empty()
        {
            return Ok(());
        }
        let finalizer = match a.resource.plural.as_str() {
            "persistentvolumeclaims" => PVC_PROTECTION,
            "persistentvolumes" => PV_PROTECTION,
            _ => return Ok(()),
        };
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let list = meta
            .entry("finalizers")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = list.as_array_mut() {
            if !list.iter().any(|f| f == finalizer) {
                list.push(Value::String(finalizer.into()));
            }
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

    #[tokio::test]
    async fn claims_and_volumes_get_their_finalizer_once() {
        let user = UserInfo::default();
        for (plural, f) in [
            ("persistentvolumeclaims", PVC_PROTECTION),
            ("persistentvolumes", PV_PROTECTION),
        ] {
            let r = builtin("", plural).unwrap();
            let a = Attributes {
                operation: Operation::Create,
                resource: &r,
                subresource: "",
                namespace: "",
                name: "x",
                old: None,
                user: &user,
                dry_run: false,
                options: crate::admission::Options::None,
                reinvocation: None,
            };
            let mut obj = json!({"metadata": {"name": "x", "finalizers": ["other"]}});
            let plugin = StorageObjectInUseProtection;
            plugin
                .admit(&a, Some(&mut obj), &Fixed::default())
                .await
                .unwrap();
            plugin
                .admit(&a, Some(&mut obj), &Fixed::default())
                .await
                .unwrap();
            assert_eq!(obj["metadata"]["finalizers"], json!(["other", f]));
        }
    }
}
