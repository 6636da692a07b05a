//! NamespaceLifecycle: nothing is created in a namespace that does not exist or is being
//! deleted, and `default`, `kube-system` and `kube-public` cannot be deleted.
//!
//! The namespace is looked up in the watch cache; right after a namespace's deletion the
//! cache may not show it terminating yet, so for a while creates in it look it up in etcd.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::{Error, Result};
use crate::registry::Objects;

/// Namespaces that can never be deleted.
const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

/// How long after a namespace's deletion creates in it check etcd, not the cache.
const FORCE_LIVE_LOOKUP: Duration = Duration::from_secs(30);

/// The plugin.
#[derive(Default)]
pub struct NamespaceLifecycle {
    /// Namespaces deleted through this server lately, with when.
    deleted: Mutex<HashMap<String, Instant>>,
}

impl NamespaceLifecycle {
    fn deleted_lately(&self, ns: &str) -> bool {
        let mut deleted = self.deleted.lock();
        deleted.retain(|_, at| at.elapsed() < FORCE_LIVE_LOOKUP);
        deleted.contains_key(ns)
    }
}

#[async_trait::async_trait]
impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let is_namespace = a.resource.group.is_empty() && a.resource.plural == "namespaces";
        if is_namespace {
            if a.operation == Operation::Delete {
                if IMMORTAL.contains(&a.name) {
                    return Err(forbidden(a, None, "this namespace may not be deleted"));
                }
                if !a.dry_run {
                    self.deleted
                        .lock()
                        .insert(a.name.to_string(), Instant::now());
                }
            }
            return Ok(());
        }
        if a.namespace.is_empty() || matches!(a.operation, Operation::Delete | Operation::Connect) {
            return Ok(());
        }
        let nsr = objs
            .resource("", "v1", "namespaces")
            .ok_or_else(|| Error::internal("namespaces are not served"))?;
        let cached = if self.deleted_lately(a.namespace) {
            None
        } else {
            objs.cached(&nsr, None, a.namespace)
        };
        let terminating = match cached {
            Some(c) => c.deleting,
            // Not in the cache (or possibly stale): ask etcd.
            None => {
                let ns = objs.get(&nsr, None, a.namespace).await?;
                ns.pointer("/metadata/deletionTimestamp").is_some()
                    || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
            }
        };
        if terminating && a.operation == Operation::Create {
            let obj = obj.map(|o| &*o);
            return Err(forbidden(
                a,
                obj,
                &format!(
                    "unable to create new content in namespace {} because it is being terminated",
                    a.namespace
                ),
            )
            .with_cause(
                "NamespaceTerminating",
                &format!("namespace {} is being terminated", a.namespace),
                "metadata.namespace",
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

    fn attrs<'a>(
        op: Operation,
        r: &'a crate::registry::ResourceInfo,
        ns: &'a str,
        name: &'a str,
        user: &'a UserInfo,
    ) -> Attributes<'a> {
        Attributes {
            operation: op,
            resource: r,
            subresource: "",
            namespace: ns,
            name,
            old: None,
            user,
            dry_run: false,
            options: crate::admission::Options::None,
            reinvocation: None,
        }
    }

    #[tokio::test]
    async fn creates_need_a_live_namespace() {
        let objs = Fixed::default()
            .with("namespaces", "", json!({"metadata": {"name": "live"}}))
            .with(
                "namespaces",
                "",
                json!({"metadata": {"name": "going", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                       "status": {"phase": "Terminating"}}),
            );
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let p = NamespaceLifecycle::default();
        let mut pod = json!({"metadata": {"name": "web"}});
        p.admit(
            &attrs(Operation::Create, &pods, "live", "web", &user),
            Some(&mut pod),
            &objs,
        )
        .await
        .unwrap();
        let e = p
            .admit(
                &attrs(Operation::Create, &pods, "gone", "web", &user),
                Some(&mut pod),
                &objs,
            )
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "namespaces \"gone\" not found");
        let e = p
            .admit(
                &attrs(Operation::Create, &pods, "going", "", &user),
                Some(&mut pod),
                &objs,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), 403);
        assert_eq!(
            e.to_string(),
            "pods \"web\" is forbidden: unable to create new content in namespace going because it is being terminated"
        );
        assert_eq!(
            e.status()["details"]["causes"][0]["reason"],
            "NamespaceTerminating"
        );
        // Updates and deletes of what is already there go on.
        p.admit(
            &attrs(Operation::Update, &pods, "going", "web", &user),
            Some(&mut pod),
            &objs,
        )
        .await
        .unwrap();
        p.admit(
            &attrs(Operation::Delete, &pods, "going", "web", &user),
            None,
            &objs,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn system_namespaces_stay() {
        let nsr = builtin("", "namespaces").unwrap();
        let user = UserInfo::default();
        let p = NamespaceLifecycle::default();
        let objs = Fixed::default();
        for name in ["default", "kube-system", "kube-public"] {
            let e = p
                .admit(
                    &attrs(Operation::Delete, &nsr, "", name, &user),
                    None,
                    &objs,
                )
                .await
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
            );
        }
        p.admit(
            &attrs(Operation::Delete, &nsr, "", "scratch", &user),
            None,
            &objs,
        )
        .await
        .unwrap();
        assert!(p.deleted_lately("scratch"));
    }
}
