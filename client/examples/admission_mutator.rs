//! A mutating admission webhook: labels every object it is sent and injects a sidecar
//! container into pods. Both changes are made once: a pod that already has the label and the
//! sidecar is admitted unchanged, so the webhook can be reinvoked (`reinvocationPolicy:
//! IfNeeded`) after other webhooks' changes.
//!
//! Served over HTTPS at `/mutate`, with `/healthz` and `/metrics` (reviews counted by path and
//! result). The certificate comes from `--cert-dir` (a mounted `kubernetes.io/tls` Secret),
//! `--tls-cert-file`/`--tls-private-key-file`, or `--tls-secret` through the API. SIGTERM or
//! Ctrl-C stops it once open requests are answered.
//!
//! ```text
//! cargo run -p skiff-client --example admission_mutator -- \
//!     --label sidecar.example.skiff.dev/injected=true \
//!     --sidecar-name proxy --sidecar-image registry.local/proxy:1 --cert-dir ./certs
//! ```

#[path = "support/webhook.rs"]
mod support;

use clap::Parser;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;
use skiff_client::webhook::{self, AdmissionRequest, AdmissionResponse, Admit, Operation, Server};

/// A mutating admission webhook labelling objects and injecting a sidecar into pods.
#[derive(Parser)]
struct Args {
    /// The label to add, `KEY=VALUE` (repeat for several).
    #[arg(long = "label", value_parser = parse_label, default_value = "sidecar.example.skiff.dev/injected=true")]
    labels: Vec<(String, String)>,
    /// The name of the container to inject into pods.
    #[arg(long, default_value = "sidecar")]
    sidecar_name: String,
    /// The image of the injected container; none is injected without one.
    #[arg(long)]
    sidecar_image: Option<String>,
    /// The injected container's command, comma-separated (`sleep,3600`).
    #[arg(long, value_delimiter = ',')]
    sidecar_command: Vec<String>,
    #[command(flatten)]
    serve: support::ServeFlags,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// Labels objects and injects the sidecar into pods.
struct Inject {
    labels: Vec<(String, String)>,
    sidecar: Option<Container>,
}

impl Inject {
    fn mutate(&self, req: &AdmissionRequest) -> Result<AdmissionResponse, webhook::PatchError> {
        let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
        match (&self.sidecar, is_pod) {
            (Some(sidecar), true) => AdmissionResponse::mutate_as(req, |pod: &mut Pod| {
                let labels = pod.metadata.labels.get_or_insert_with(Default::default);
                for (k, v) in &self.labels {
                    labels.insert(k.clone(), v.clone());
                }
                let spec = pod.spec.get_or_insert_with(Default::default);
                if !spec.containers.iter().any(|c| c.name == sidecar.name) {
                    spec.containers.push(sidecar.clone());
                }
            }),
            // Any other kind: only the labels, on the object as it is.
            _ => AdmissionResponse::mutate(req, |obj: &mut Value| {
                let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
                    return;
                };
                let labels = meta
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(labels) = labels.as_object_mut() {
                    for (k, v) in &self.labels {
                        labels.insert(k.clone(), Value::String(v.clone()));
                    }
                }
            }),
        }
    }
}

#[webhook::async_trait]
impl Admit for Inject {
    async fn admit(&self, req: &AdmissionRequest) -> AdmissionResponse {
        if !matches!(req.operation, Operation::Create | Operation::Update) {
            return AdmissionResponse::allow(req);
        }
        match self.mutate(req) {
            Ok(resp) => {
                tracing::info!(what = %req.resource.resource, namespace = %req.namespace,
                    name = %req.name, changed = resp.patch.is_some(), "admitted");
                resp
            }
            Err(e) => AdmissionResponse::deny_with(req, 400, "BadRequest", e.to_string()),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sidecar = args.sidecar_image.map(|image| Container {
        name: args.sidecar_name.clone(),
        image: Some(image),
        command: (!args.sidecar_command.is_empty()).then_some(args.sidecar_command),
        ..Default::default()
    });
    let server = Server::new().admit(
        "/mutate",
        Inject {
            labels: args.labels,
            sidecar,
        },
    );
    support::serve(args.serve, server).await
}
