//! ValidatingAdmissionPolicy: CEL validations of `admissionregistration.k8s.io/v1`
//! ValidatingAdmissionPolicies, applied to the requests their bindings select, as
//! kube-apiserver's `ValidatingAdmissionPolicy` admission plugin applies them
//! (k8s.io/apiserver/pkg/admission/plugin/policy/validating).
//!
//! - [`compile`]: a policy compiled once per resourceVersion, in the environment Kubernetes
//!   gives policy expressions;
//! - [`params`]: the param objects a binding's `paramRef` selects;
//! - [`validator`]: one policy evaluated for one request, binding and param;
//! - [`dispatch`]: the plugin: which policies and bindings match a request, what their
//!   decisions do (refusal, warning, audit annotation), and the failure policy;
//! - [`typecheck`] and [`status`]: `status.typeChecking`, written by a loop in the server;
//! - [`metrics`]: the `apiserver_validating_admission_policy_check_*` metrics.

pub mod compile;
pub mod dispatch;
pub mod metrics;
pub mod params;
pub mod status;
pub mod typecheck;
pub mod validator;

/// The API group of the policy types.
pub const GROUP: &str = "admissionregistration.k8s.io";
/// The policies' resource.
pub const POLICIES: &str = "validatingadmissionpolicies";
/// The bindings' resource.
pub const BINDINGS: &str = "validatingadmissionpolicybindings";

pub use dispatch::ValidatingAdmissionPolicy;
