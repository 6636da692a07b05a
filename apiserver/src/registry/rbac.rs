//! Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (rbac.authorization.k8s.io/v1):
//! defaults, validation as Kubernetes' `pkg/apis/rbac/validation`, and the columns kubectl
//! prints. What they grant is decided in [`crate::rbac`].

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use serde_json::{json, Value};

use super::{col, s, Builtin, Column, NameRule, Typed};
use crate::error::{Cause, CauseKind};
use crate::validation as v;

const GROUP: &str = "rbac.authorization.k8s.io";
const NAME: &str = "Name must be unique within a namespace.";
const CREATED: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";

/// The roles resource.
pub static ROLES: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "Role",
    plural: "roles",
    singular: "role",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &ROLE,
    schema: super::schema_of::<Role>,
};

/// The clusterroles resource.
pub static CLUSTERROLES: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "ClusterRole",
    plural: "clusterroles",
    singular: "clusterrole",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &CLUSTERROLE,
    schema: super::schema_of::<ClusterRole>,
};

/// The rolebindings resource.
pub static ROLEBINDINGS: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "RoleBinding",
    plural: "rolebindings",
    singular: "rolebinding",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &ROLEBINDING,
    schema: super::schema_of::<RoleBinding>,
};

/// The clusterrolebindings resource.
pub static CLUSTERROLEBINDINGS: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &CLUSTERROLEBINDING,
    schema: super::schema_of::<ClusterRoleBinding>,
};

static ROLE: Typed<Role> = Typed {
    validate: |r| rules(r.rules.as_deref(), true),
    name_rule: NameRule::PathSegment,
    ..Typed::new(role_columns, role_cells)
};

static CLUSTERROLE: Typed<ClusterRole> = Typed {
    validate: validate_cluster_role,
    name_rule: NameRule::PathSegment,
    ..Typed::new(role_columns, role_cells)
};

static ROLEBINDING: Typed<RoleBinding> = Typed {
    defaults: |b| default_binding(&mut b.role_ref, b.subjects.as_mut()),
    validate: |b| binding(&b.role_ref, b.subjects.as_deref(), true),
    validate_update: |new, old| role_ref_unchanged(&new.role_ref, &old.role_ref),
    name_rule: NameRule::PathSegment,
    ..Typed::new(binding_columns, binding_cells)
};

static CLUSTERROLEBINDING: Typed<ClusterRoleBinding> = Typed {
    defaults: |b| default_binding(&mut b.role_ref, b.subjects.as_mut()),
    validate: |b| binding(&b.role_ref, b.subjects.as_deref(), false),
    validate_update: |new, old| role_ref_unchanged(&new.role_ref, &old.role_ref),
    name_rule: NameRule::PathSegment,
    ..Typed::new(binding_columns, binding_cells)
};

fn required(field: String, detail: &str) -> Cause {
    Cause {
        kind: CauseKind::Required,
        field,
        message: detail.into(),
    }
}

/// A policy rule's checks (Kubernetes' `ValidatePolicyRule`).
fn rules(rules: Option<&[PolicyRule]>, namespaced: bool) -> Vec<Cause> {
    let mut out = Vec::new();
    for (i, r) in rules.unwrap_or_default().iter().enumerate() {
        let f = |x: &str| format!("rules[{i}].{x}");
        if r.verbs.is_empty() {
            out.push(required(
                f("verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = r.non_resource_urls.as_deref().unwrap_or_default();
        let len = |o: &Option<Vec<String>>| o.as_ref().map_or(0, Vec::len);
        if !urls.is_empty() {
            if namespaced {
                out.push(Cause::invalid(
                    f("nonResourceURLs"),
                    &json!(urls),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if len(&r.api_groups) + len(&r.resources) + len(&r.resource_names) > 0 {
                out.push(Cause::invalid(
                    f("nonResourceURLs"),
                    &json!(urls),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if len(&r.api_groups) == 0 {
            out.push(required(
                f("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if len(&r.resources) == 0 {
            out.push(required(
                f("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    out
}

fn validate_cluster_role(r: &ClusterRole) -> Vec<Cause> {
    let mut out = rules(r.rules.as_deref(), false);
    if let Some(AggregationRule {
        cluster_role_selectors,
    }) = &r.aggregation_rule
    {
        let sels = cluster_role_selectors.as_deref().unwrap_or_default();
        if sels.is_empty() {
            out.push(required(
                "aggregationRule.clusterRoleSelectors".into(),
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, sel) in sels.iter().enumerate() {
            v::label_selector(
                &format!("aggregationRule.clusterRoleSelectors[{i}]"),
                sel,
                &mut out,
            );
        }
    }
    out
}

/// User and Group subjects belong to the RBAC group unless they say otherwise; a binding's
/// roleRef too (Kubernetes' defaults).
fn default_binding(role_ref: &mut RoleRef, subjects: Option<&mut Vec<Subject>>) {
    if role_ref.api_group.is_empty() {
        role_ref.api_group = GROUP.into();
    }
    for s in subjects.into_iter().flatten() {
        if s.api_group.is_none() && matches!(s.kind.as_str(), "User" | "Group") {
            s.api_group = Some(GROUP.into());
        }
    }
}

/// A binding's checks (Kubernetes' `ValidateRoleBinding` / `ValidateClusterRoleBinding`).
fn binding(role_ref: &RoleRef, subjects: Option<&[Subject]>, namespaced: bool) -> Vec<Cause> {
    let mut out = Vec::new();
    if role_ref.api_group != GROUP {
        out.push(Cause::not_supported(
            "roleRef.apiGroup",
            &role_ref.api_group,
            &[GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&role_ref.kind.as_str()) {
        out.push(Cause::not_supported("roleRef.kind", &role_ref.kind, kinds));
    }
    if role_ref.name.is_empty() {
        out.push(Cause::required("roleRef.name"));
    } else if let Some(msg) = path_segment(&role_ref.name) {
        out.push(Cause::invalid("roleRef.name", &json!(role_ref.name), msg));
    }
    for (i, s) in subjects.unwrap_or_default().iter().enumerate() {
        let f = |x: &str| format!("subjects[{i}].{x}");
        let group = s.api_group.as_deref().unwrap_or("");
        if s.name.is_empty() {
            out.push(Cause::required(f("name")));
        }
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.name.is_empty() && !v::is_dns1123_subdomain(&s.name) {
                    out.push(Cause::invalid(
                        f("name"),
                        &json!(s.name),
                        v::DNS1123_SUBDOMAIN_MSG,
                    ));
                }
                if !group.is_empty() {
                    out.push(Cause::not_supported(f("apiGroup"), group, &[""]));
                }
                if !namespaced && s.namespace.as_deref().unwrap_or("").is_empty() {
                    out.push(Cause::required(f("namespace")));
                }
            }
            "User" | "Group" => {
                if group != GROUP {
                    out.push(Cause::not_supported(f("apiGroup"), group, &[GROUP]));
                }
            }
            other => out.push(Cause::not_supported(
                f("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    out
}

/// Why a name is not a valid path segment (Kubernetes' `ValidateRBACName`).
fn path_segment(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("may not be '.' or '..'")
    } else if name.contains('/') {
        Some("may not contain '/'")
    } else if name.contains('%') {
        Some("may not contain '%'")
    } else {
        None
    }
}

fn role_ref_unchanged(new: &RoleRef, old: &RoleRef) -> Vec<Cause> {
    if new == old {
        return Vec::new();
    }
    vec![Cause::invalid(
        "roleRef",
        &v::val(new),
        "cannot change roleRef",
    )]
}

fn role_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Created At", "date", 0, CREATED),
    ]
}

fn role_cells(r: &Value) -> Vec<Value> {
    vec![super::name(r), json!(s(r, "/metadata/creationTimestamp"))]
}

fn binding_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Role", "string", 0, "Role of the binding."),
        col("Age", "string", 0, CREATED),
        col("Users", "string", 1, "Users in the binding."),
        col("Groups", "string", 1, "Groups in the binding."),
        col(
            "ServiceAccounts",
            "string",
            1,
            "ServiceAccounts in the binding.",
        ),
    ]
}

fn binding_cells(b: &Value) -> Vec<Value> {
    let subjects = b
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let of = |kind: &str| {
        subjects
            .iter()
            .filter(|x| x.get("kind").and_then(Value::as_str) == Some(kind))
            .map(|x| match kind {
                "ServiceAccount" => format!("{}/{}", s(x, "/namespace"), s(x, "/name")),
                _ => s(x, "/name"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        super::name(b),
        json!(format!(
            "{}/{}",
            s(b, "/roleRef/kind"),
            s(b, "/roleRef/name")
        )),
        super::age(b),
        json!(of("User")),
        json!(of("Group")),
        json!(of("ServiceAccount")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Rejection, Strategy};

    fn causes(st: &dyn Strategy, obj: Value) -> Vec<String> {
        let a = st.default(obj).unwrap();
        match st.validate(&a.value, None) {
            Ok(()) => Vec::new(),
            Err(Rejection::Invalid(c)) => c.iter().map(Cause::text).collect(),
            Err(Rejection::Decode(d)) => vec![d],
        }
    }

    #[test]
    fn rules_need_verbs_groups_and_resources() {
        let r = json!({"metadata": {"name": "r", "namespace": "d"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
            {"verbs": ["get"]},
        ]});
        assert_eq!(
            causes(&ROLE, r.clone()),
            vec![
                "rules[0].verbs: Required value: verbs must contain at least one value",
                "rules[1].nonResourceURLs: Invalid value: [\"/healthz\"]: namespaced rules cannot apply to non-resource URLs",
                "rules[2].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[2].resources: Required value: resource rules must supply at least one resource",
            ]
        );
        let c = causes(&CLUSTERROLE, r);
        assert_eq!(c.len(), 3, "{c:?}");
        let agg = json!({"metadata": {"name": "a"}, "aggregationRule": {}});
        assert_eq!(
            causes(&CLUSTERROLE, agg),
            vec!["aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"]
        );
    }

    #[test]
    fn bindings_check_role_ref_and_subjects() {
        let b = json!({"metadata": {"name": "b"},
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "ServiceAccount", "name": "sa"},
            {"kind": "Robot", "name": "x"},
        ]});
        let a = CLUSTERROLEBINDING.default(b.clone()).unwrap().value;
        assert_eq!(a["roleRef"]["apiGroup"], GROUP);
        assert_eq!(a["subjects"][0]["apiGroup"], GROUP);
        assert_eq!(
            causes(&CLUSTERROLEBINDING, b.clone()),
            vec![
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[1].namespace: Required value",
                "subjects[2].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
        assert_eq!(causes(&ROLEBINDING, b).len(), 1);
        let missing = json!({"metadata": {"name": "b", "namespace": "d"}});
        let c = causes(&ROLEBINDING, missing);
        assert!(
            c.contains(&"roleRef.name: Required value".to_string()),
            "{c:?}"
        );
    }

    #[test]
    fn role_ref_is_immutable() {
        let old = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"}});
        let mut new = old.clone();
        new["roleRef"]["name"] = json!("edit");
        match ROLEBINDING.validate(&new, Some(&old)) {
            Err(Rejection::Invalid(c)) => assert!(c[0].text().ends_with("cannot change roleRef")),
            other => panic!("{other:?}"),
        }
        assert!(ROLEBINDING.validate(&old, Some(&old)).is_ok());
    }

    #[test]
    fn binding_rows_show_role_and_subjects() {
        let b = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "a"}, {"kind": "User", "name": "b"},
                         {"kind": "ServiceAccount", "name": "s", "namespace": "n"}]});
        let c = binding_cells(&b);
        assert_eq!(c[1], "ClusterRole/view");
        assert_eq!(c[3], "a, b");
        assert_eq!(c[4], "");
        assert_eq!(c[5], "n/s");
    }
}
