//! What every request handler of either door shares: the store, who may do what, and the
//! server's own identity towards kubelets.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Authorizer};
use crate::metrics::Metrics;
use crate::store::GenericStore;

/// Everything a request handler needs.
pub struct State {
    /// The generic store.
    pub store: GenericStore,
    /// Authentication.
    pub authn: Authenticator,
    /// Authorization.
    pub authz: Arc<dyn Authorizer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down (ends watches).
    pub shutdown: CancellationToken,
    /// `host:port` clients should use.
    pub advertise: String,
    /// The OpenAPI documents, built on first use.
    pub openapi: crate::openapi::Docs,
    /// How the server reaches kubelets.
    pub kubelets: crate::node_proxy::Kubelets,
    /// The ServiceAccount token signer and verifier (its keys serve OIDC discovery).
    pub service_account_tokens: Arc<crate::tokens::Tokens>,
    /// The audit policy and log, when both are configured.
    pub audit: Option<Arc<crate::audit::Auditor>>,
}
