//! Privilege-escalation prevention, as Kubernetes' RBAC storage does it: a Role or
//! ClusterRole may only hold rules its author holds, unless the author may `escalate` it; a
//! binding may only grant a role whose rules its author holds, unless the author may `bind`
//! it. Members of `system:masters` may do either.
//!
//! Kubernetes builds this into the RBAC types' storage, so no flag turns it off; here it is a
//! step the admission chain always runs ([`crate::admission::Chain::with_internal`]).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::Value;

use super::{Rbac, GROUP, MASTERS};
use crate::admission::{Attributes, AuthorizerCell, Operation, Plugin};
use crate::auth::rules::{compact, describe, uncovered, Rule};
use crate::auth::{self, Authorizer, Decision};
use crate::error::{Error, Result};
use crate::registry::Objects;

/// The escalation check.
pub struct Escalation {
    rbac: Arc<Rbac>,
    /// The server's authorizer, which decides `escalate` and `bind` (the admission chain's,
    /// set once the server has built it).
    authz: AuthorizerCell,
}

impl Escalation {
    /// A check reading the rules authors hold from `rbac`.
    pub fn new(rbac: Arc<Rbac>, authz: AuthorizerCell) -> Arc<Self> {
        Arc::new(Escalation { rbac, authz })
    }

    fn may(&self, a: &Attributes<'_>, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
        let attrs = auth::Attributes::resource(a.user, verb, GROUP, resource, ns, name);
        match self.authz.get() {
            Some(z) => z.authorize(&attrs) == Decision::Allow,
            None => self.rbac.authorize(&attrs) == Decision::Allow,
        }
    }

    /// Refuses `wanted` unless the author's own RBAC rules in the namespace cover it.
    fn confirm_no_escalation(&self, a: &Attributes<'_>, name: &str, wanted: &[Rule]) -> Result<()> {
        let owner = self.rbac.snapshot().rules(a.user, a.namespace);
        let missing = uncovered(&owner, wanted);
        if missing.is_empty() {
            return Ok(());
        }
        let mut lines: Vec<String> = compact(missing).iter().map(describe).collect();
        lines.sort();
        lines.dedup();
        let groups = a
            .user
            .groups
            .iter()
            .map(|g| format!("{g:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        let why = format!(
            "user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{}",
            a.user.name,
            lines.join("\n")
        );
        Err(Error::forbidden_object(
            a.resource.group_resource(),
            name,
            &why,
        ))
    }
}

fn rules_of(obj: &Value) -> Vec<Rule> {
    obj.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value::<Vec<PolicyRule>>(r).ok())
        .unwrap_or_default()
        .iter()
        .map(Rule::from)
        .collect()
}

#[async_trait::async_trait]
impl Plugin for Escalation {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        _objs: &dyn Objects,
    ) -> Result<()> {
        if a.resource.group != GROUP
            || !a.subresource.is_empty()
            || !matches!(a.operation, Operation::Create | Operation::Update)
            || a.user.groups.iter().any(|g| g == MASTERS)
        {
            return Ok(());
        }
        let Some(obj) = obj else { return Ok(()) };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(a.name);
        match a.resource.plural.as_str() {
            "roles" | "clusterroles" => {
                let wanted = rules_of(obj);
                // Only a change of rules can escalate.
                if a.old.is_some_and(|old| rules_of(old) == wanted) {
                    return Ok(());
                }
                if self.may(a, "escalate", &a.resource.plural, a.namespace, name) {
                    return Ok(());
                }
                self.confirm_no_escalation(a, name, &wanted)
            }
            "rolebindings" | "clusterrolebindings" => {
                let Some(role_ref) = obj
                    .get("roleRef")
                    .cloned()
                    .and_then(|r| serde_json::from_value::<RoleRef>(r).ok())
                else {
                    return Ok(());
                };
                // Changing only metadata (finalizers, owners, labels) grants nothing new.
                if let Some(old) = a.old {
                    if old.get("subjects") == obj.get("subjects")
                        && old.get("roleRef") == obj.get("roleRef")
                    {
                        return Ok(());
                    }
                }
                let resource = if role_ref.kind == "ClusterRole" {
                    "clusterroles"
                } else {
                    "roles"
                };
                if self.may(a, "bind", resource, a.namespace, &role_ref.name) {
                    return Ok(());
                }
                let Some(rules) =
                    self.rbac
                        .snapshot()
                        .role_rules(a.namespace, &role_ref.kind, &role_ref.name)
                else {
                    let what = if role_ref.kind == "ClusterRole" {
                        "clusterrole"
                    } else {
                        "role"
                    };
                    return Err(Error::forbidden_object(
                        a.resource.group_resource(),
                        name,
                        &format!("{what}.{GROUP} {:?} not found", role_ref.name),
                    ));
                };
                self.confirm_no_escalation(a, name, &rules)
            }
            _ => Ok(()),
        }
    }
}
