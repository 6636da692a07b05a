//! Admission: what every write goes through after authorization and the type's defaults, and
//! before its validation and storage, whichever door it came through. Each built-in plugin is
//! one file; the chain runs them in kube-apiserver's order, first every mutating step, then
//! (after the type's own validation) every validating one.
//!
//! Plugins are switched as kube-apiserver's are: `--enable-admission-plugins` adds to the
//! default set, `--disable-admission-plugins` removes from it.

mod certificate_signing;
mod default_storage_class;
mod default_toleration_seconds;
mod limit_ranger;
pub mod matching;
mod namespace_lifecycle;
mod node_restriction;
mod persistent_volume_claim_resize;
pub mod policy;
mod priority;
mod resource_quota;
pub mod review;
mod runtimeclass;
mod service_account;
mod storage_object_in_use_protection;
pub mod webhook;

use serde_json::{json, Value};

pub use crate::request::Notes;
pub use certificate_signing::AuthorizerCell;
pub use default_toleration_seconds::DefaultTolerations;

use crate::auth::UserInfo;
use crate::error::{Error, Result};
use crate::registry::{Objects, ResourceInfo};
use crate::request::{DeleteOpts, WriteOpts};

/// What a request does, as admission names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A create (including subresources created by POST, such as a pod's binding).
    Create,
    /// An update or patch.
    Update,
    /// A delete.
    Delete,
    /// A connection through the API server (exec, attach, port-forward, logs).
    Connect,
}

impl Operation {
    /// The word Kubernetes uses (`CREATE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// One request, as plugins see it.
#[derive(Clone, Copy)]
pub struct Attributes<'a> {
    /// What it does.
    pub operation: Operation,
    /// The resource.
    pub resource: &'a ResourceInfo,
    /// The subresource, or "".
    pub subresource: &'a str,
    /// The namespace, or "".
    pub namespace: &'a str,
    /// The object's name ("" for a create whose name is generated).
    pub name: &'a str,
    /// The stored object, for updates and deletes.
    pub old: Option<&'a Value>,
    /// Who asks.
    pub user: &'a UserInfo,
    /// Whether nothing will be stored.
    pub dry_run: bool,
    /// The request's options, and where its warnings and audit annotations go.
    pub options: Options<'a>,
    /// The mutating rounds of this admission (set by [`Chain::admit`]; `None` elsewhere).
    pub reinvocation: Option<&'a Reinvocation>,
}

/// What one admission remembers across its mutating rounds, as kube-apiserver's reinvocation
/// context does: when a webhook changes the object, every mutating plugin runs once more, and
/// webhooks with `reinvocationPolicy: IfNeeded` that ran before the change are called again.
#[derive(Debug, Default)]
pub struct Reinvocation {
    state: parking_lot::Mutex<ReinvocationState>,
}

/// The state of [`Reinvocation`], by plugin.
#[derive(Debug, Default)]
pub struct ReinvocationState {
    /// Whether this is the second round.
    pub is_reinvoke: bool,
    /// Whether a second round is wanted.
    pub should_reinvoke: bool,
    /// Plugin-specific state (the webhook plugin's set of webhooks to call again), by plugin.
    pub values: std::collections::BTreeMap<&'static str, Value>,
}

impl Reinvocation {
    /// Runs `f` on the state.
    pub fn with<R>(&self, f: impl FnOnce(&mut ReinvocationState) -> R) -> R {
        f(&mut self.state.lock())
    }

    /// Whether this is the second round.
    pub fn is_reinvoke(&self) -> bool {
        self.state.lock().is_reinvoke
    }
}

/// A request's options as admission sees them: what an AdmissionReview sends as `options`
/// (kube's CreateOptions, UpdateOptions, PatchOptions or DeleteOptions), and the request's
/// [`Notes`].
#[derive(Clone, Copy, Debug)]
pub enum Options<'a> {
    /// A create (`CreateOptions`), including one made by a PUT or an apply.
    Create(&'a WriteOpts),
    /// A replace (`UpdateOptions`).
    Update(&'a WriteOpts),
    /// A patch or an apply (`PatchOptions`).
    Patch(&'a WriteOpts),
    /// A delete (`DeleteOptions`).
    Delete(&'a DeleteOpts),
    /// A connection (no options are sent).
    Connect(&'a WriteOpts),
    /// None: the server's own checks and tests; warnings and annotations are dropped.
    None,
}

impl<'a> Options<'a> {
    /// Where the request's warnings and audit annotations go.
    pub fn notes(&self) -> &'a Notes {
        static NOWHERE: std::sync::LazyLock<Notes> = std::sync::LazyLock::new(Notes::discarded);
        match *self {
            Options::Create(o) | Options::Update(o) | Options::Patch(o) | Options::Connect(o) => {
                &o.notes
            }
            Options::Delete(o) => &o.notes,
            Options::None => &NOWHERE,
        }
    }

    /// The `fieldManager` asked for, if any.
    pub fn field_manager(&self) -> Option<&'a str> {
        match *self {
            Options::Create(o) | Options::Update(o) | Options::Patch(o) => {
                o.field_manager.as_deref().filter(|m| !m.is_empty())
            }
            _ => None,
        }
    }

    /// The options as the AdmissionReview's `request.options` carries them (`null` for
    /// connections).
    pub fn to_json(&self) -> Value {
        let write = |kind: &str, o: &WriteOpts, patch: bool| {
            let mut m = serde_json::Map::new();
            m.insert("kind".into(), json!(kind));
            m.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
            if o.dry_run {
                m.insert("dryRun".into(), json!(["All"]));
            }
            if let Some(f) = o.field_manager.as_deref().filter(|f| !f.is_empty()) {
                m.insert("fieldManager".into(), json!(f));
            }
            if patch && o.force {
                m.insert("force".into(), json!(true));
            }
            match o.field_validation {
                crate::request::FieldValidation::Warn => {}
                crate::request::FieldValidation::Ignore => {
                    m.insert("fieldValidation".into(), json!("Ignore"));
                }
                crate::request::FieldValidation::Strict => {
                    m.insert("fieldValidation".into(), json!("Strict"));
                }
            }
            Value::Object(m)
        };
        match *self {
            Options::Create(o) => write("CreateOptions", o, false),
            Options::Update(o) => write("UpdateOptions", o, false),
            Options::Patch(o) => write("PatchOptions", o, true),
            Options::Delete(o) => {
                let mut m = serde_json::Map::new();
                m.insert("kind".into(), json!("DeleteOptions"));
                m.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
                if let Some(g) = o.grace_period {
                    m.insert("gracePeriodSeconds".into(), json!(g));
                }
                if o.uid.is_some() || o.resource_version.is_some() {
                    let mut p = serde_json::Map::new();
                    if let Some(u) = &o.uid {
                        p.insert("uid".into(), json!(u));
                    }
                    if let Some(rv) = &o.resource_version {
                        p.insert("resourceVersion".into(), json!(rv));
                    }
                    m.insert("preconditions".into(), Value::Object(p));
                }
                if let Some(p) = o.propagation {
                    let p = match p {
                        crate::request::Propagation::Orphan => "Orphan",
                        crate::request::Propagation::Background => "Background",
                        crate::request::Propagation::Foreground => "Foreground",
                    };
                    m.insert("propagationPolicy".into(), json!(p));
                }
                if o.dry_run {
                    m.insert("dryRun".into(), json!(["All"]));
                }
                Value::Object(m)
            }
            Options::Connect(_) | Options::None => Value::Null,
        }
    }
}

impl Attributes<'_> {
    /// Where the request's warnings and audit annotations go.
    pub fn notes(&self) -> &Notes {
        self.options.notes()
    }
}

/// The 403 a plugin refuses with, worded as kube-apiserver's admission words it:
/// `pods "web" is forbidden: WHY`.
pub fn forbidden(a: &Attributes<'_>, obj: Option<&Value>, why: &str) -> Error {
    let name = if a.name.is_empty() {
        obj.and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or("")
    } else {
        a.name
    };
    Error::forbidden_object(a.resource.group_resource(), name, why)
}

/// One admission plugin. A plugin that only validates leaves `admit` alone, and the other way
/// round.
#[async_trait::async_trait]
pub trait Plugin: Send + Sync {
    /// Its name, as the flags spell it.
    fn name(&self) -> &'static str;

    /// Changes `obj` (the new object; `None` for deletes and connects), or refuses.
    async fn admit(
        &self,
        _a: &Attributes<'_>,
        _obj: Option<&mut Value>,
        _objs: &dyn Objects,
    ) -> Result<()> {
        Ok(())
    }

    /// Accepts or refuses the final object.
    async fn validate(
        &self,
        _a: &Attributes<'_>,
        _obj: Option<&Value>,
        _objs: &dyn Objects,
    ) -> Result<()> {
        Ok(())
    }
}

/// kube-apiserver's plugins in the order it runs them (its `AllOrderedPlugins`); Skiff's run
/// in the same places.
const KUBERNETES_ORDER: &[&str] = &[
    "AlwaysAdmit",
    "NamespaceAutoProvision",
    "NamespaceLifecycle",
    "NamespaceExists",
    "LimitPodHardAntiAffinityTopology",
    "LimitRanger",
    "ServiceAccount",
    "NodeRestriction",
    "TaintNodesByCondition",
    "AlwaysPullImages",
    "ImagePolicyWebhook",
    "PodSecurity",
    "PodNodeSelector",
    "Priority",
    "DefaultTolerationSeconds",
    "PodTolerationRestriction",
    "EventRateLimit",
    "ExtendedResourceToleration",
    "DefaultStorageClass",
    "StorageObjectInUseProtection",
    "OwnerReferencesPermissionEnforcement",
    "PersistentVolumeClaimResize",
    "RuntimeClass",
    "CertificateApproval",
    "CertificateSigning",
    "ClusterTrustBundleAttest",
    "CertificateSubjectRestriction",
    "DefaultIngressClass",
    "DenyServiceExternalIPs",
    "DisableServiceLinks",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
    "AlwaysDeny",
];

/// How the chain is configured.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `--enable-admission-plugins`: plugins to run besides the default ones.
    pub enable: Vec<String>,
    /// `--disable-admission-plugins`: default plugins not to run.
    pub disable: Vec<String>,
    /// The DefaultTolerationSeconds plugin's settings.
    pub default_tolerations: DefaultTolerations,
}

/// Why the admission flags were refused.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(Vec<String>);

/// The plugins Skiff has, by name, and whether kube-apiserver runs each by default.
fn implemented(
    cfg: &Config,
    authz: &AuthorizerCell,
    hooks: &webhook::Webhooks,
) -> Vec<(Box<dyn Plugin>, bool)> {
    vec![
        (
            Box::new(namespace_lifecycle::NamespaceLifecycle::default()) as Box<dyn Plugin>,
            true,
        ),
        (Box::new(limit_ranger::LimitRanger), true),
        (Box::new(priority::Priority), true),
        (
            Box::new(default_toleration_seconds::DefaultTolerationSeconds(
                cfg.default_tolerations,
            )),
            true,
        ),
        (Box::new(service_account::ServiceAccount), true),
        (Box::new(node_restriction::NodeRestriction), true),
        (
            Box::new(certificate_signing::CertificateApproval(authz.clone())),
            true,
        ),
        (
            Box::new(certificate_signing::CertificateSigning(authz.clone())),
            true,
        ),
        (Box::new(default_storage_class::DefaultStorageClass), true),
        (
            Box::new(storage_object_in_use_protection::StorageObjectInUseProtection),
            true,
        ),
        (
            Box::new(persistent_volume_claim_resize::PersistentVolumeClaimResize),
            true,
        ),
        (Box::new(runtimeclass::RuntimeClass), true),
        (Box::new(resource_quota::ResourceQuota::default()), true),
        (Box::new(hooks.mutating()), true),
        (Box::new(policy::ValidatingAdmissionPolicy::default()), true),
        (Box::new(hooks.validating()), true),
    ]
}

/// The names of the plugins Skiff implements, in order.
fn implemented_names() -> Vec<&'static str> {
    let hooks = webhook::Webhooks::default();
    let mut names: Vec<&'static str> =
        implemented(&Config::default(), &AuthorizerCell::default(), &hooks)
            .iter()
            .map(|(p, _)| p.name())
            .collect();
    names.sort_by_key(|n| KUBERNETES_ORDER.iter().position(|k| k == n));
    names
}

/// The plugins a request goes through, in order.
pub struct Chain {
    plugins: Vec<Box<dyn Plugin>>,
    /// Steps no flag switches off, run after the plugins (RBAC's escalation check, which
    /// Kubernetes builds into the RBAC types' storage).
    internal: Vec<std::sync::Arc<dyn Plugin>>,
    authz: AuthorizerCell,
    webhook_metrics: std::sync::Arc<webhook::Metrics>,
}

impl Chain {
    /// The chain the flags ask for. A plugin Kubernetes has but Skiff does not may be
    /// disabled (it is off anyway) but not enabled; names Kubernetes does not know are refused.
    pub fn new(cfg: &Config) -> Result<Chain, ConfigError> {
        let mut errors = Vec::new();
        let have = implemented_names();
        for name in &cfg.enable {
            if !KUBERNETES_ORDER.contains(&name.as_str()) {
                errors.push(format!(
                    "enable-admission-plugins plugin {name:?} is unknown"
                ));
            } else if !have.contains(&name.as_str()) {
                errors.push(format!(
                    "enable-admission-plugins plugin {name:?} is not implemented by skiff-apiserver (it has {})",
                    have.join(", ")
                ));
            }
        }
        for name in &cfg.disable {
            if !KUBERNETES_ORDER.contains(&name.as_str()) {
                errors.push(format!(
                    "disable-admission-plugins plugin {name:?} is unknown"
                ));
            }
        }
        let mut both: Vec<&String> = cfg
            .enable
            .iter()
            .filter(|n| cfg.disable.contains(n))
            .collect();
        both.dedup();
        if !both.is_empty() {
            errors.push(format!(
                "{both:?} in enable-admission-plugins and disable-admission-plugins overlapped"
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        let authz = AuthorizerCell::default();
        let hooks = webhook::Webhooks::default();
        let mut plugins: Vec<Box<dyn Plugin>> = implemented(cfg, &authz, &hooks)
            .into_iter()
            .filter(|(p, on_by_default)| {
                let name = p.name().to_string();
                (*on_by_default || cfg.enable.contains(&name)) && !cfg.disable.contains(&name)
            })
            .map(|(p, _)| p)
            .collect();
        plugins.sort_by_key(|p| KUBERNETES_ORDER.iter().position(|k| *k == p.name()));
        Ok(Chain {
            plugins,
            internal: Vec::new(),
            authz,
            webhook_metrics: hooks.metrics(),
        })
    }

    /// The chain with one more step that always runs, whatever the flags.
    pub fn with_internal(mut self, step: std::sync::Arc<dyn Plugin>) -> Self {
        self.internal.push(step);
        self
    }

    /// Where the plugins that ask who may do what (CertificateApproval, CertificateSigning,
    /// and internal steps such as RBAC's escalation check) find the server's authorizer.
    pub fn authorizer(&self) -> AuthorizerCell {
        self.authz.clone()
    }

    /// Gives the plugins that ask who may do what the server's authorizer, once it exists.
    pub fn set_authorizer(&self, authz: std::sync::Arc<dyn crate::auth::Authorizer>) {
        let _ = self.authz.set(authz);
    }

    /// Adds the admission metrics (`apiserver_admission_webhook_*`,
    /// `apiserver_validating_admission_policy_*`) to a registry.
    pub fn register_metrics(&self, r: &mut prometheus_client::registry::Registry) {
        self.webhook_metrics.register(r);
        policy::metrics::global().register(r);
    }

    /// The names of the plugins that run, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    /// Runs every plugin's mutating step, in order; and once more, every plugin again, when a
    /// webhook changed the object (as kube-apiserver reinvokes its chain).
    pub async fn admit(
        &self,
        a: &Attributes<'_>,
        mut obj: Option<&mut Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let rounds = Reinvocation::default();
        let a = Attributes {
            reinvocation: Some(&rounds),
            ..*a
        };
        for p in &self.plugins {
            p.admit(&a, obj.as_deref_mut(), objs).await?;
        }
        if rounds.with(|s| std::mem::take(&mut s.should_reinvoke)) {
            rounds.with(|s| s.is_reinvoke = true);
            for p in &self.plugins {
                p.admit(&a, obj.as_deref_mut(), objs).await?;
            }
        }
        for p in &self.internal {
            p.admit(&a, obj.as_deref_mut(), objs).await?;
        }
        Ok(())
    }

    /// Runs every plugin's validating step, in order.
    pub async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        for p in &self.plugins {
            p.validate(a, obj, objs).await?;
        }
        for p in &self.internal {
            p.validate(a, obj, objs).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A store of cached objects for plugin tests: pure, no etcd. Only
    //! `guaranteed_update` writes (what plugins that keep counts use).

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::Value;

    use crate::error::{Error, Result};
    use crate::patch::PatchType;
    use crate::registry::objects::Change;
    use crate::registry::{builtin, Objects, Resource, ResourceInfo};
    use crate::request::{DeleteOpts, Deleted, WriteOpts, Written};
    use crate::storage::cached::Cached;

    type Key = (String, String, String);

    /// Objects by (plural, namespace, name), served as both the cache and the store.
    #[derive(Default)]
    pub struct Fixed(pub parking_lot::Mutex<BTreeMap<Key, Value>>);

    impl Fixed {
        pub fn with(self, plural: &str, ns: &str, obj: Value) -> Self {
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            self.0.lock().insert((plural.into(), ns.into(), name), obj);
            self
        }

        /// The object stored under a key.
        pub fn stored(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
            self.0
                .lock()
                .get(&(plural.into(), ns.into(), name.into()))
                .cloned()
        }
    }

    #[async_trait::async_trait]
    impl Objects for Fixed {
        fn resource(&self, group: &str, _version: &str, plural: &str) -> Option<Resource> {
            builtin(group, plural)
        }
        fn resources(&self) -> Vec<Resource> {
            Vec::new()
        }
        fn any_cached(&self, r: &ResourceInfo, ns: &str) -> bool {
            self.0
                .lock()
                .keys()
                .any(|(p, n, _)| *p == r.plural && n == ns)
        }
        async fn cache_reaches(&self, _r: &ResourceInfo, _rev: i64) -> bool {
            true
        }
        fn cached(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Option<Arc<Cached>> {
            let key = (
                r.plural.clone(),
                ns.unwrap_or("").to_string(),
                name.to_string(),
            );
            self.0
                .lock()
                .get(&key)
                .map(|v| Arc::new(Cached::from_value(r, v, 1)))
        }
        fn cached_list(&self, r: &ResourceInfo, _ns: Option<&str>) -> Vec<Arc<Cached>> {
            self.0
                .lock()
                .iter()
                .filter(|((p, _, _), _)| *p == r.plural)
                .map(|(_, v)| Arc::new(Cached::from_value(r, v, 1)))
                .collect()
        }
        async fn get(&self, r: &Resource, ns: Option<&str>, name: &str) -> Result<Value> {
            self.cached(r, ns, name)
                .map(|c| c.value())
                .ok_or_else(|| Error::not_found(r.group_resource(), name))
        }
        async fn update(
            &self,
            _: &Resource,
            _: Option<&str>,
            _: &str,
            _: Value,
            _: Option<&str>,
            _: &WriteOpts,
        ) -> Result<Written> {
            Err(Error::internal("read-only"))
        }
        async fn patch(
            &self,
            _: &Resource,
            _: Option<&str>,
            _: &str,
            _: PatchType,
            _: &Value,
            _: Option<&str>,
            _: &WriteOpts,
        ) -> Result<Written> {
            Err(Error::internal("read-only"))
        }
        async fn delete(
            &self,
            _: &Resource,
            _: Option<&str>,
            _: &str,
            _: &DeleteOpts,
        ) -> Result<Deleted> {
            Err(Error::internal("read-only"))
        }
        async fn guaranteed_update(
            &self,
            r: &Resource,
            ns: Option<&str>,
            name: &str,
            _: bool,
            change: Change<'_>,
        ) -> Result<Value> {
            let key = (
                r.plural.clone(),
                ns.unwrap_or("").to_string(),
                name.to_string(),
            );
            let mut obj = self
                .stored(&key.0, &key.1, &key.2)
                .ok_or_else(|| Error::not_found(r.group_resource(), name))?;
            change(&mut obj)?;
            self.0.lock().insert(key, obj.clone());
            Ok(obj)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_in_kubernetes_order() {
        let c = Chain::new(&Config::default()).unwrap();
        assert_eq!(
            c.names(),
            vec![
                "NamespaceLifecycle",
                "LimitRanger",
                "ServiceAccount",
                "NodeRestriction",
                "Priority",
                "DefaultTolerationSeconds",
                "DefaultStorageClass",
                "StorageObjectInUseProtection",
                "PersistentVolumeClaimResize",
                "RuntimeClass",
                "CertificateApproval",
                "CertificateSigning",
                "MutatingAdmissionWebhook",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionWebhook",
                "ResourceQuota"
            ]
        );
    }

    #[test]
    fn flags_switch_plugins() {
        let cfg = Config {
            disable: vec!["Priority".into(), "PodSecurity".into()],
            ..Default::default()
        };
        assert_eq!(
            Chain::new(&cfg).unwrap().names(),
            vec![
                "NamespaceLifecycle",
                "LimitRanger",
                "ServiceAccount",
                "NodeRestriction",
                "DefaultTolerationSeconds",
                "DefaultStorageClass",
                "StorageObjectInUseProtection",
                "PersistentVolumeClaimResize",
                "RuntimeClass",
                "CertificateApproval",
                "CertificateSigning",
                "MutatingAdmissionWebhook",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionWebhook",
                "ResourceQuota"
            ]
        );
        let bad = Config {
            enable: vec!["Bogus".into()],
            disable: vec!["AlsoBogus".into()],
            ..Default::default()
        };
        let e = Chain::new(&bad).err().unwrap().to_string();
        assert!(
            e.contains("enable-admission-plugins plugin \"Bogus\" is unknown"),
            "{e}"
        );
        assert!(
            e.contains("disable-admission-plugins plugin \"AlsoBogus\" is unknown"),
            "{e}"
        );
        let missing = Config {
            enable: vec!["PodSecurity".into()],
            ..Default::default()
        };
        let e = Chain::new(&missing).err().unwrap().to_string();
        assert!(e.contains("not implemented"), "{e}");
        let both = Config {
            enable: vec!["Priority".into()],
            disable: vec!["Priority".into()],
            ..Default::default()
        };
        let e = Chain::new(&both).err().unwrap().to_string();
        assert!(e.contains("overlapped"), "{e}");
    }
}
