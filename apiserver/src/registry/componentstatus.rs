//! core/v1 ComponentStatuses (`kubectl get componentstatuses`, `cs`): deprecated upstream
//! since v1.19 and still served. Nothing is stored: every `get` and `list` probes the
//! components then and there, as kube-apiserver does — `etcd-0` is the API server's own etcd
//! (a read with a deadline), `scheduler` and `controller-manager` are the components'
//! `/healthz` at the addresses the server is given (`--scheduler-healthz-url`,
//! `--controller-manager-healthz-url`; by default the loopback ports the components listen on
//! when started without `--port`).

use std::time::Duration;

use k8s_openapi::api::core::v1::ComponentStatus;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};

use super::{col, ResourceInfo, Shared, Typed};
use crate::error::{Error, Result};
use crate::storage::Etcd;

/// How long one probe may take (kube-apiserver's `probeTimeOut`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// A resource whose objects are worked out when asked for (never stored, never watched):
/// served by `get` and `list` alone.
#[async_trait::async_trait]
pub trait Computed: Send + Sync {
    /// Every object (`name` none), or the one named (`Ok(vec![])` when there is none such).
    async fn objects(&self, name: Option<&str>) -> Result<Vec<Value>>;
    /// The error a `get` of a missing object answers.
    fn not_found(&self, name: &str) -> Error;
}

/// Where the components answer their health checks.
#[derive(Debug, Clone)]
pub struct Components {
    /// The scheduler's `/healthz` URL.
    pub scheduler: String,
    /// The controller manager's `/healthz` URL.
    pub controller_manager: String,
}

impl Default for Components {
    fn default() -> Self {
        Components {
            scheduler: "http://127.0.0.1:10251/healthz".into(),
            controller_manager: "http://127.0.0.1:10252/healthz".into(),
        }
    }
}

/// The probes behind `componentstatuses`.
pub struct Probes {
    etcd: Etcd,
    components: Components,
    http: reqwest::Client,
}

/// A probe's result: kube's `probe.Result` (as the condition's status), its message, and its
/// error.
struct Outcome {
    status: &'static str,
    message: String,
    error: String,
}

impl Probes {
    async fn probe(&self, name: &str) -> Option<Outcome> {
        match name {
            "etcd-0" => Some(self.etcd().await),
            "scheduler" => Some(self.http(&self.components.scheduler).await),
            "controller-manager" => Some(self.http(&self.components.controller_manager).await),
            _ => None,
        }
    }

    async fn etcd(&self) -> Outcome {
        match tokio::time::timeout(PROBE_TIMEOUT, self.etcd.current_revision()).await {
            Ok(Ok(_)) => Outcome {
                status: "True",
                message: "ok".into(),
                error: String::new(),
            },
            Ok(Err(e)) => Outcome {
                status: "False",
                message: String::new(),
                error: e.to_string(),
            },
            Err(_) => Outcome {
                status: "False",
                message: String::new(),
                error: "context deadline exceeded".into(),
            },
        }
    }

    /// Kubernetes' HTTP prober: a 2xx or 3xx answer is healthy and its body the message; any
    /// other answer, or none, is unhealthy with what went wrong as the message.
    async fn http(&self, url: &str) -> Outcome {
        let unhealthy = |message: String| Outcome {
            status: "False",
            message,
            error: String::new(),
        };
        let resp = match self.http.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                // What went wrong down to the socket ("... Connection refused"), as Go's
                // `Get "URL": dial tcp ...: connection refused` says it.
                let mut why = Vec::new();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push(s.to_string());
                    source = s.source();
                }
                if why.is_empty() {
                    why.push(e.to_string());
                }
                return unhealthy(format!("Get \"{url}\": {}", why.join(": ")));
            }
        };
        let code = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if (200..400).contains(&code) {
            Outcome {
                status: "True",
                message: body,
                error: String::new(),
            }
        } else {
            unhealthy(format!("HTTP probe failed with statuscode: {code}"))
        }
    }
}

const NAMES: [&str; 3] = ["controller-manager", "etcd-0", "scheduler"];

fn object(name: &str, o: Outcome) -> Value {
    let mut condition = json!({"type": "Healthy", "status": o.status});
    if !o.message.is_empty() {
        condition["message"] = json!(o.message);
    }
    if !o.error.is_empty() {
        condition["error"] = json!(o.error);
    }
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [condition],
    })
}

#[async_trait::async_trait]
impl Computed for Probes {
    async fn objects(&self, name: Option<&str>) -> Result<Vec<Value>> {
        let names: Vec<&str> = match name {
            None => NAMES.to_vec(),
            Some(n) => NAMES.iter().copied().filter(|x| *x == n).collect(),
        };
        let probed = futures::future::join_all(names.iter().map(|n| self.probe(n))).await;
        Ok(names
            .iter()
            .zip(probed)
            .filter_map(|(n, o)| o.map(|o| object(n, o)))
            .collect())
    }

    fn not_found(&self, name: &str) -> Error {
        // kube-apiserver answers an unknown component with a plain error: a 500.
        Error::internal_error(&format!("Component not found: {name}"))
    }
}

static CS: Typed<ComponentStatus> = Typed::new(columns, cells);

fn columns() -> Vec<super::Column> {
    vec![
        col(
            "Name",
            "string",
            0,
            "Name must be unique within a namespace.",
        ),
        col("Status", "string", 0, "Status of the component conditions"),
        col(
            "Message",
            "string",
            0,
            "Message of the component conditions",
        ),
        col("Error", "string", 0, "Error of the component conditions"),
    ]
}

/// kubectl's `printComponentStatus`: the `Healthy` condition as `Healthy`/`Unhealthy`.
fn cells(o: &Value) -> Vec<Value> {
    let healthy = o
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Healthy"))
        });
    let text = |c: &Value, k: &str| json!(c.get(k).and_then(Value::as_str).unwrap_or(""));
    let (status, message, error) = match healthy {
        None => (json!("Unknown"), json!(""), json!("")),
        Some(c) => (
            json!(if c.get("status").and_then(Value::as_str) == Some("True") {
                "Healthy"
            } else {
                "Unhealthy"
            }),
            text(c, "message"),
            text(c, "error"),
        ),
    };
    vec![super::name(o), status, message, error]
}

/// The componentstatuses resource, probing `etcd` and `components`.
pub fn info(etcd: Etcd, components: Components) -> Result<ResourceInfo> {
    // Skiff's components serve their health checks over plain HTTP; an `https` URL is
    // verified against the system's roots.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let system = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    roots.add_parsable_certificates(
        rustls::pki_types::CertificateDer::pem_slice_iter(&system).filter_map(|c| c.ok()),
    );
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| Error::internal(e.to_string()))?;
    let probes = Probes {
        etcd,
        components,
        http,
    };
    Ok(ResourceInfo::new(
        "",
        "v1",
        "ComponentStatus",
        "componentstatuses",
        "componentstatus",
        false,
        Shared::Static(&CS),
    )
    .with(|r| {
        r.short_names = vec!["cs".into()];
        r.computed = Some(Shared::Owned(std::sync::Arc::new(probes)));
        // Never stored, so discovery names no storage version (as kube-apiserver's).
        r.storage_version_hash = None;
        r.schema = Some(super::schema_of::<ComponentStatus>);
        r.deprecation = Some("v1 ComponentStatus is deprecated in v1.19+".into());
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_print_as_kubectl_prints_them() {
        let ok = object(
            "etcd-0",
            Outcome {
                status: "True",
                message: "ok".into(),
                error: String::new(),
            },
        );
        assert_eq!(
            cells(&ok),
            [json!("etcd-0"), json!("Healthy"), json!("ok"), json!("")]
        );
        let down = object(
            "scheduler",
            Outcome {
                status: "False",
                message: "Get \"http://x\": refused".into(),
                error: String::new(),
            },
        );
        assert_eq!(cells(&down)[1], json!("Unhealthy"));
        assert_eq!(
            cells(&json!({"metadata": {"name": "x"}}))[1],
            json!("Unknown")
        );
    }
}
