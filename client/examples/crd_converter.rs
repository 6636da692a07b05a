//! A conversion webhook for a CustomResourceDefinition with two versions: `Widget` in
//! `conversion.example.skiff.dev`, whose `v1` says `spec.size` and whose `v2` says
//! `spec.dimensions.size` (other fields are the same in both). The API server stores one
//! version and asks the webhook for the other whenever a client reads or writes it.
//!
//! Served over HTTPS at `/convert`, with `/healthz` and `/metrics` (reviews counted by path
//! and result). The certificate comes from `--cert-dir` (a mounted `kubernetes.io/tls`
//! Secret), `--tls-cert-file`/`--tls-private-key-file`, or `--tls-secret` through the API.
//! `--print-crd` prints the CustomResourceDefinition, its conversion pointing at the Service
//! `--service-namespace`/`--service-name` with `--ca-bundle-file` as its CA.
//!
//! ```text
//! cargo run -p skiff-client --example crd_converter -- --print-crd \
//!     --service-namespace webhooks --service-name crd-converter --ca-bundle-file ca.crt \
//!     | kubectl apply -f -
//! cargo run -p skiff-client --example crd_converter -- --cert-dir ./certs
//! ```

#[path = "support/webhook.rs"]
mod support;

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Parser;
use serde_json::{json, Value};
use skiff_client::webhook::conversion::set_api_version;
use skiff_client::webhook::{self, ConversionRequest, ConversionResponse, Convert, Server};

/// The custom resource's group.
const GROUP: &str = "conversion.example.skiff.dev";

/// A conversion webhook for Widgets of conversion.example.skiff.dev, v1 and v2.
#[derive(Parser)]
struct Args {
    /// Print the CustomResourceDefinition as JSON and exit.
    #[arg(long)]
    print_crd: bool,
    /// With `--print-crd`: the namespace of the webhook's Service.
    #[arg(long, default_value = "default")]
    service_namespace: String,
    /// With `--print-crd`: the name of the webhook's Service.
    #[arg(long, default_value = "crd-converter")]
    service_name: String,
    /// With `--print-crd`: the Service's port.
    #[arg(long, default_value_t = 443)]
    service_port: u16,
    /// With `--print-crd`: the CA certificate (PEM) that signed the webhook's serving
    /// certificate, the conversion's `caBundle`.
    #[arg(long)]
    ca_bundle_file: Option<PathBuf>,
    #[command(flatten)]
    serve: support::ServeFlags,
}

/// Converts Widgets between `v1` and `v2`.
struct Widgets;

#[webhook::async_trait]
impl Convert for Widgets {
    async fn convert(&self, req: &ConversionRequest) -> ConversionResponse {
        let resp = ConversionResponse::convert_each(req, convert);
        tracing::info!(desired = %req.desired_api_version, objects = req.objects.len(),
            success = resp.is_success(), "converted");
        resp
    }
}

/// One Widget in `desired` (`GROUP/v1` or `GROUP/v2`).
fn convert(mut obj: Value, desired: &str) -> Result<Value, String> {
    let version = |api_version: &str| match api_version.split_once('/') {
        Some((GROUP, v @ ("v1" | "v2"))) => Ok(v.to_string()),
        _ => Err(format!(
            "unsupported version {api_version:?}: this webhook converts {GROUP}/v1 and {GROUP}/v2"
        )),
    };
    let from = version(obj["apiVersion"].as_str().unwrap_or_default())?;
    let to = version(desired)?;
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        match (from.as_str(), to.as_str()) {
            ("v1", "v2") => {
                if let Some(size) = spec.remove("size") {
                    spec.insert("dimensions".into(), json!({ "size": size }));
                }
            }
            ("v2", "v1") => {
                let size = spec
                    .remove("dimensions")
                    .and_then(|mut d| d.get_mut("size").map(Value::take));
                if let Some(size) = size {
                    spec.insert("size".into(), size);
                }
            }
            _ => {}
        }
    }
    set_api_version(&mut obj, desired);
    Ok(obj)
}

/// The CustomResourceDefinition: `v1` served and stored, `v2` served, converted by the webhook
/// behind the Service `namespace/name`.
fn crd(args: &Args) -> anyhow::Result<Value> {
    let size = json!({"type": "integer", "minimum": 0});
    let color = json!({"type": "string"});
    let schema =
        |spec: Value| json!({"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}});
    let mut client_config = json!({"service": {
        "namespace": args.service_namespace, "name": args.service_name,
        "path": "/convert", "port": args.service_port}});
    if let Some(path) = &args.ca_bundle_file {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        client_config["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    Ok(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": schema(json!({
                    "type": "object", "properties": {"size": size, "color": color}}))},
                {"name": "v2", "served": true, "storage": false, "schema": schema(json!({
                    "type": "object", "properties": {
                        "dimensions": {"type": "object", "properties": {"size": size}},
                        "color": color}}))}
            ],
            "conversion": {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1", "v1beta1"],
                "clientConfig": client_config}}
        }
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_crd {
        println!("{}", serde_json::to_string_pretty(&crd(&args)?)?);
        return Ok(());
    }
    support::serve(args.serve, Server::new().convert("/convert", Widgets)).await
}
