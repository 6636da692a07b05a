//! What `skiff server` puts in the cluster itself: the cluster DNS, and the `cluster-info`
//! agents join by.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use serde_json::{json, Value};
use skiff_client::{Api, Patch, PatchParams};
use skiff_rules::{Backoff, Kubeconfig};

/// What `skiff addons` prints.
#[derive(Debug, Clone, clap::Args)]
pub struct AddonArgs {
    /// The API server's URL as nodes and the cluster DNS reach it.
    #[arg(long)]
    pub server: String,
    /// The cluster CA (PEM).
    #[arg(long)]
    pub ca_file: std::path::PathBuf,
    /// The cluster DNS's bearer token (a line of the API server's --token-auth-file).
    #[arg(long)]
    pub dns_token: String,
    /// The cluster DNS image.
    #[arg(long)]
    pub dns_image: String,
    /// The cluster DNS Service's address (the kubelets' --cluster-dns).
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: String,
    /// Replicas of the cluster DNS.
    #[arg(long, default_value_t = 1)]
    pub dns_replicas: u32,
}

impl AddonArgs {
    /// The objects as a YAML stream.
    pub fn render(&self) -> Result<String> {
        let ca = std::fs::read(&self.ca_file)
            .with_context(|| format!("reading --ca-file {}", self.ca_file.display()))?;
        let kubeconfig = crate::server::token_kubeconfig(&self.server, &ca, &self.dns_token)?;
        let mut objects = vec![cluster_info(&self.server, &ca)?];
        objects.extend(cluster_dns(&self.dns_image, &kubeconfig, &self.cluster_dns));
        for o in objects.iter_mut().filter(|o| o["kind"] == "Deployment") {
            o["spec"]["replicas"] = json!(self.dns_replicas);
        }
        let mut out = String::new();
        for o in &objects {
            out.push_str("---\n");
            out.push_str(&serde_norway::to_string(o)?);
        }
        Ok(out)
    }
}

/// skiff-dns as the cluster runs it: a Deployment on the host network (it reaches the API
/// server as the node's own components do), its kubeconfig from a Secret, behind the
/// `kube-system/kube-dns` Service at `cluster_ip`, the address the kubelets hand to pods.
pub fn cluster_dns(image: &str, kubeconfig: &str, cluster_ip: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "skiff-dns", "namespace": "kube-system"},
         "stringData": {"kubeconfig": kubeconfig}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "skiff-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns"}},
        "spec": {
           "replicas": 1,
           "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
           "template": {
               "metadata": {"labels": {"k8s-app": "kube-dns"}},
               "spec": {
                   "hostNetwork": true,
                   "dnsPolicy": "Default",
                   "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                    "operator": "Exists", "effect": "NoSchedule"}],
                   "containers": [{
                       "name": "dns", "image": image,
                       "args": ["--kubeconfig=/etc/skiff/kubeconfig",
                                "--metrics-bind-address=0.0.0.0:9153"],
                       "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                 {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                       "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9153},
                                          "periodSeconds": 1},
                       "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/skiff",
                                         "readOnly": true}],
                   }],
                   "volumes": [{"name": "kubeconfig", "secret": {"secretName": "skiff-dns"}}],
               },
           },
        }}),
        json!({"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system",
                      "labels": {"k8s-app": "kube-dns"}},
         "spec": {"clusterIP": cluster_ip, "selector": {"k8s-app": "kube-dns"},
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}),
    ]
}

/// `kube-public/cluster-info`, as kubeadm publishes it: a kubeconfig with the server's URL and
/// CA and no credentials. `skiff agent` reads it and trusts the CA only if its hash is the
/// one in the join token.
pub fn cluster_info(server: &str, ca_pem: &[u8]) -> Result<Value> {
    let kubeconfig = Kubeconfig::cluster_only(server)
        .with_certificate_authority(ca_pem)
        .to_yaml()?;
    Ok(json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cluster-info", "namespace": "kube-public"},
               "data": {"kubeconfig": kubeconfig}}))
}

/// While the API server starts, a failed apply is tried again this often.
const APPLY_RETRY: Backoff = Backoff::constant(Duration::from_millis(500));

/// Applies `objects` (server-side apply, as the `skiff` field manager) with the credentials of
/// `kubeconfig`, retrying while the API server is still starting.
pub async fn apply(kubeconfig: &Path, objects: &[Value]) -> Result<()> {
    let client = skiff_client::Client::from_kubeconfig(kubeconfig)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for obj in objects {
        loop {
            match apply_one(&client, obj).await {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "applying an add-on; retrying");
                    tokio::time::sleep(APPLY_RETRY.delay(0)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

async fn apply_one(client: &skiff_client::Client, obj: &Value) -> Result<()> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = obj["metadata"]["name"]
        .as_str()
        .context("an add-on without a name")?;
    let pp = PatchParams::apply("skiff").force();
    let patch = Patch::Apply(obj);
    let kind = obj["kind"].as_str().unwrap_or_default();
    let client = client.clone();
    match kind {
        "ConfigMap" => drop(
            Api::<ConfigMap>::namespaced(client, ns)
                .patch(name, &pp, &patch)
                .await?,
        ),
        "Secret" => drop(
            Api::<Secret>::namespaced(client, ns)
                .patch(name, &pp, &patch)
                .await?,
        ),
        "Service" => drop(
            Api::<Service>::namespaced(client, ns)
                .patch(name, &pp, &patch)
                .await?,
        ),
        "Deployment" => drop(
            Api::<Deployment>::namespaced(client, ns)
                .patch(name, &pp, &patch)
                .await?,
        ),
        other => anyhow::bail!("no add-on of kind {other:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_carries_the_server_and_ca_only() {
        let cm = cluster_info("https://10.0.0.1:6443", b"CA PEM").unwrap();
        let k = Kubeconfig::from_yaml(cm["data"]["kubeconfig"].as_str().unwrap()).unwrap();
        assert_eq!(k.clusters.len(), 1);
        assert_eq!(k.clusters[0].cluster.server, "https://10.0.0.1:6443");
        assert_eq!(
            k.clusters[0].cluster.certificate_authority_data.as_deref(),
            Some("Q0EgUEVN")
        );
        assert!(k.users.is_empty() && k.contexts.is_empty());
    }
}
