//! A validating admission webhook: refuses objects (pods, typically) that lack a required
//! label, with a message naming it.
//!
//! Served over HTTPS at `/validate`, with `/healthz` and `/metrics` (reviews counted by path
//! and result). The certificate comes from `--cert-dir` (a mounted `kubernetes.io/tls`
//! Secret), `--tls-cert-file`/`--tls-private-key-file`, or `--tls-secret` through the API.
//! SIGTERM or Ctrl-C stops it once open requests are answered.
//!
//! ```text
//! cargo run -p skiff-client --example admission_validator -- \
//!     --required-label app --cert-dir ./certs --secure-port 8443
//! ```
//!
//! With a `ValidatingWebhookConfiguration` calling it for pods:
//!
//! ```text
//! $ kubectl run nolabel --image=busybox
//! Error from server (Forbidden): admission webhook "require-label.example.skiff.dev" denied
//! the request: pods must have the label "app"
//! ```

#[path = "support/webhook.rs"]
mod support;

use clap::Parser;
use skiff_client::webhook::{self, AdmissionRequest, AdmissionResponse, Admit, Operation, Server};

/// A validating admission webhook refusing objects that lack a label.
#[derive(Parser)]
struct Args {
    /// The label every object must have (repeat for several).
    #[arg(long = "required-label", default_value = "app")]
    required_labels: Vec<String>,
    #[command(flatten)]
    serve: support::ServeFlags,
}

/// Refuses objects without the required labels.
struct RequireLabels {
    keys: Vec<String>,
}

#[webhook::async_trait]
impl Admit for RequireLabels {
    async fn admit(&self, req: &AdmissionRequest) -> AdmissionResponse {
        // Only what is being created or changed needs its labels; deletions go through.
        if !matches!(req.operation, Operation::Create | Operation::Update) {
            return AdmissionResponse::allow(req);
        }
        let labels = req.labels();
        let missing: Vec<&str> = self
            .keys
            .iter()
            .filter(|k| !labels.contains_key(*k))
            .map(String::as_str)
            .collect();
        let what = &req.resource.resource;
        let name = if req.name.is_empty() {
            "(generated)"
        } else {
            &req.name
        };
        match missing.as_slice() {
            [] => {
                tracing::info!(%what, namespace = %req.namespace, %name, "allowed");
                AdmissionResponse::allow(req)
            }
            missing => {
                tracing::info!(%what, namespace = %req.namespace, %name, ?missing, "denied");
                let list = missing
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let noun = if missing.len() == 1 {
                    "label"
                } else {
                    "labels"
                };
                AdmissionResponse::deny(req, format!("{what} must have the {noun} {list}"))
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = Server::new().admit(
        "/validate",
        RequireLabels {
            keys: args.required_labels,
        },
    );
    support::serve(args.serve, server).await
}
