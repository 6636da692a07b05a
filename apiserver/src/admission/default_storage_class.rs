//! DefaultStorageClass: a new PersistentVolumeClaim that names no class (neither
//! `spec.storageClassName` nor the beta annotation) gets the cluster's default StorageClass,
//! the one annotated `storageclass.kubernetes.io/is-default-class: "true"` (the newest, when
//! several are). A claim that asks for `""` asks for no class and keeps it.

use serde_json::Value;

use super::{Attributes, Operation, Plugin};
use crate::error::Result;
use crate::registry::persistentvolume::BETA_STORAGE_CLASS;
use crate::registry::Objects;

/// The plugin.
pub struct DefaultStorageClass;

const DEFAULT: &str = "storageclass.kubernetes.io/is-default-class";
const BETA_DEFAULT: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// Whether a StorageClass is marked as the default one.
pub fn is_default(class: &Value) -> bool {
    let ann = |k: &str| {
        class
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            == Some("true")
    };
    ann(DEFAULT) || ann(BETA_DEFAULT)
}

/// The default class among `classes`: the newest, then the first by name (kube's rule when an
/// administrator marks several).
pub fn default_class(classes: impl IntoIterator<Item = Value>) -> Option<String> {
    let text = |c: &Value, p: &str| {
        c.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    classes
        .into_iter()
        .filter(is_default)
        .map(|c| {
            (
                text(&c, "/metadata/creationTimestamp"),
                text(&c, "/metadata/name"),
            )
        })
        // RFC 3339 timestamps in UTC order as text.
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, name)| name)
}

#[async_trait::async_trait]
impl Plugin for DefaultStorageClass {
    fn name(&self) -> &'static str {
        "DefaultStorageClass"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let Some(pvc) = obj else { return Ok(()) };
        if a.operation != Operation::Create
            || !a.subresource.is_empty()
            || !a.resource.group.is_empty()
            || a.resource.plural != "persistentvolumeclaims"
        {
            return Ok(());
        }
        let named = pvc
            .pointer("/spec/storageClassName")
            .is_some_and(|c| !c.is_null())
            || pvc
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(BETA_STORAGE_CLASS))
                .is_some();
        if named {
            return Ok(());
        }
        let Some(scr) = objs.resource("storage.k8s.io", "v1", "storageclasses") else {
            return Ok(());
        };
        let classes = objs.cached_list(&scr, None).into_iter().map(|c| c.value());
        if let Some(name) = default_class(classes) {
            if let Some(spec) = pvc.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("storageClassName".into(), Value::String(name));
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

    fn class(name: &str, created: &str, default: bool) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created,
            "annotations": {DEFAULT: default.to_string()}}, "provisioner": "p"})
    }

    #[tokio::test]
    async fn claims_without_a_class_get_the_newest_default() {
        let pvcs = builtin("", "persistentvolumeclaims").unwrap();
        let user = UserInfo::default();
        let a = Attributes {
            operation: Operation::Create,
            resource: &pvcs,
            subresource: "",
            namespace: "default",
            name: "data",
            old: None,
            user: &user,
            dry_run: false,
            options: crate::admission::Options::None,
            reinvocation: None,
        };
        let objs = Fixed::default()
            .with(
                "storageclasses",
                "",
                class("old", "2024-01-01T00:00:00Z", true),
            )
            .with(
                "storageclasses",
                "",
                class("new", "2025-01-01T00:00:00Z", true),
            )
            .with(
                "storageclasses",
                "",
                class("newer-but-not-default", "2026-01-01T00:00:00Z", false),
            );
        let mut pvc = json!({"metadata": {"name": "data"}, "spec": {}});
        DefaultStorageClass
            .admit(&a, Some(&mut pvc), &objs)
            .await
            .unwrap();
        assert_eq!(pvc["spec"]["storageClassName"], "new");
        // `""` asks for no class.
        let mut pvc = json!({"metadata": {"name": "data"}, "spec": {"storageClassName": ""}});
        DefaultStorageClass
            .admit(&a, Some(&mut pvc), &objs)
            .await
            .unwrap();
        assert_eq!(pvc["spec"]["storageClassName"], "");
        // No default: nothing set.
        let mut pvc = json!({"metadata": {"name": "data"}, "spec": {}});
        DefaultStorageClass
            .admit(&a, Some(&mut pvc), &Fixed::default())
            .await
            .unwrap();
        assert!(pvc["spec"].get("storageClassName").is_none());
    }
}
