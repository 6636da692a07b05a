//! Admission and conversion webhook servers in Rust.
//!
//! - [`admission`]: `admission.k8s.io/v1` `AdmissionReview` — the [`AdmissionRequest`] the API
//!   server sends and the [`AdmissionResponse`] a webhook answers: [`AdmissionResponse::allow`],
//!   [`AdmissionResponse::deny`], a JSON patch made from a change to the object
//!   ([`AdmissionResponse::mutate`], [`AdmissionResponse::mutate_as`]), warnings and audit
//!   annotations.
//! - [`conversion`]: `apiextensions.k8s.io/v1` `ConversionReview` for a
//!   CustomResourceDefinition's conversion webhook ([`ConversionResponse::convert_each`]).
//! - [`Admit`] and [`Convert`]: the handlers; [`Server`]: an HTTPS server answering reviews at
//!   the paths handlers are registered at, with `/healthz` and `/metrics`, stopping gracefully
//!   on a cancellation token.
//! - [`CertStore`]: the serving certificate from a mounted `kubernetes.io/tls` Secret (read
//!   again when it changes) or from the Secret through the API.
//!
//! ```no_run
//! use std::sync::Arc;
//! use k8s_openapi::api::core::v1::Pod;
//! use skiff_client::webhook::{AdmissionRequest, AdmissionResponse, Admit, CertStore, Server};
//! use tokio_util::sync::CancellationToken;
//!
//! /// Labels every pod `injected=true`.
//! struct Labeller;
//!
//! #[skiff_client::webhook::async_trait]
//! impl Admit for Labeller {
//!     async fn admit(&self, req: &AdmissionRequest) -> AdmissionResponse {
//!         AdmissionResponse::mutate_as(req, |pod: &mut Pod| {
//!             pod.metadata
//!                 .labels
//!                 .get_or_insert_with(Default::default)
//!                 .insert("injected".into(), "true".into());
//!         })
//!         .unwrap_or_else(|e| AdmissionResponse::deny_with(req, 400, "BadRequest", e.to_string()))
//!     }
//! }
//!
//! # async fn run() -> Result<(), skiff_client::webhook::Error> {
//! let certs = Arc::new(CertStore::from_dir("/etc/webhook/certs")?);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! Server::new()
//!     .admit("/mutate", Labeller)
//!     .serve(listener, Arc::new(certs.server_config()?), CancellationToken::new())
//!     .await
//! # }
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod admission;
pub mod conversion;
pub mod server;
pub mod tls;

pub use admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, GroupVersionKind, GroupVersionResource,
    Operation, PatchError,
};
pub use conversion::{ConversionRequest, ConversionResponse, ConversionReview};
pub use server::{admit_fn, convert_fn, Admit, Convert, Server};
pub use tls::CertStore;

/// The attribute [`Admit`] and [`Convert`] implementations need (`#[webhook::async_trait]`).
pub use async_trait::async_trait;

/// Why a webhook server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key is not valid PEM.
    #[error("reading PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The certificate PEM holds no certificate.
    #[error("no certificate in the certificate PEM")]
    NoCertificate,
    /// rustls refused the certificate or key (a key that does not match the certificate).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The Secret lacks `tls.crt` or `tls.key`.
    #[error("the Secret {secret} has no {key}")]
    SecretField {
        /// The Secret's name.
        secret: String,
        /// The missing key.
        key: String,
    },
    /// The API refused or failed a call (reading the Secret).
    #[error(transparent)]
    Api(#[from] crate::Error),
    /// The listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// A `meta/v1` `Status` as reviews carry it: an admission response's reason for a denial, a
/// conversion response's result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `Success` or `Failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What happened, for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A machine-readable reason: `Forbidden`, `Invalid`, `BadRequest`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// More about the reason (`StatusDetails`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// The HTTP status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

impl Status {
    /// `Success`.
    pub fn success() -> Status {
        Status {
            status: Some("Success".into()),
            ..Default::default()
        }
    }

    /// `Failure` with an HTTP code, a reason and a message.
    pub fn failure(code: u16, reason: impl Into<String>, message: impl Into<String>) -> Status {
        Status {
            status: Some("Failure".into()),
            message: Some(message.into()),
            reason: Some(reason.into()),
            details: None,
            code: Some(code.into()),
        }
    }
}
