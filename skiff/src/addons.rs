//! What `skiff server` puts in the cluster itself: the `cluster-info` agents join by, the
//! bindings that let bootstrap tokens join (as kubeadm makes them), and the cluster DNS under
//! its own ServiceAccount, the storage classes of Skiff's CSI drivers, and a RuntimeClass per
//! container runtime the nodes offer.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
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
    /// The cluster DNS image.
    #[arg(long)]
    pub dns_image: String,
    /// The cluster DNS Service's address (the kubelets' --cluster-dns).
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: String,
    /// Replicas of the cluster DNS.
    #[arg(long, default_value_t = 1)]
    pub dns_replicas: u32,
    /// The nodes share a filesystem for volumes (their `--shared-volume-path`): add the
    /// `shared` StorageClass.
    #[arg(long)]
    pub shared_storage: bool,
    /// The container runtimes the nodes offer (`runc,crun`): a RuntimeClass for each.
    #[arg(long, value_delimiter = ',', default_value = "runc")]
    pub runtime_handlers: Vec<String>,
}

impl AddonArgs {
    /// The objects as a YAML stream.
    pub fn render(&self) -> Result<String> {
        let ca = std::fs::read(&self.ca_file)
            .with_context(|| format!("reading --ca-file {}", self.ca_file.display()))?;
        let mut objects = vec![cluster_info(&self.server, &ca)?];
        objects.extend(join_rbac());
        objects.extend(cluster_dns(
            &self.dns_image,
            &self.cluster_dns,
            &self.server,
        ));
        objects.extend(storage(self.shared_storage));
        objects.extend(runtime_classes(&self.runtime_handlers));
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

/// skiff-dns as the cluster runs it: a Deployment on the host network, under the
/// ServiceAccount `kube-system/skiff-dns` (which the API server's bootstrap policy binds to the
/// ClusterRole `system:skiff-dns`, as CoreDNS's `system:coredns`), reaching the API server
/// with its projected token through the in-cluster configuration, behind the
/// `kube-system/kube-dns` Service at `cluster_ip`, the address the kubelets hand to pods.
/// On the host network it reaches the API server at `server` itself (its
/// `KUBERNETES_SERVICE_HOST` and `_PORT` set to it, as host-network system pods commonly are)
/// rather than through the `kubernetes` Service, so that it does not wait for the node's proxy.
pub fn cluster_dns(image: &str, cluster_ip: &str, server: &str) -> Vec<Value> {
    let (host, port) = host_port(server);
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "skiff-dns", "namespace": "kube-system"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "skiff-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns"}},
        "spec": {
           "replicas": 1,
           "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
           "template": {
               "metadata": {"labels": {"k8s-app": "kube-dns"}},
               "spec": {
                   "serviceAccountName": "skiff-dns",
                   "hostNetwork": true,
                   "dnsPolicy": "Default",
                   "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                    "operator": "Exists", "effect": "NoSchedule"}],
                   "containers": [{
                       "name": "dns", "image": image,
                       "args": ["--metrics-bind-address=0.0.0.0:9153"],
                       "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": host},
                               {"name": "KUBERNETES_SERVICE_PORT", "value": port}],
                       "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                 {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                       "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9153},
                                          "periodSeconds": 1},
                   }],
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

/// The host and port of an `https://HOST:PORT` URL (port 443 when it names none).
fn host_port(server: &str) -> (String, String) {
    let rest = server.trim_start_matches("https://").trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.trim_matches(['[', ']']).to_string(), p.to_string())
        }
        _ => (rest.trim_matches(['[', ']']).to_string(), "443".into()),
    }
}

/// The CSIDriver objects of Skiff's drivers and their StorageClasses: `local` (the default
/// class; node-local directories, bound when the first pod is scheduled, so the volume is
/// made on that pod's node) and, when the nodes share a filesystem, `shared`
/// (`ReadWriteMany`, bound at once). Neither driver needs attaching; both want the pod's
/// identity on mount and let the kubelet apply `fsGroup` ownership. Each node publishes the
/// free space of its local volumes (CSIStorageCapacity), so the local driver says
/// `storageCapacity: true` and the scheduler places claims where they fit; the shared class
/// binds at once, before any scheduling, so its driver publishes none.
pub fn storage(shared: bool) -> Vec<Value> {
    let driver = |name: &str, capacity: bool| {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
               "metadata": {"name": name},
               "spec": {"attachRequired": false, "podInfoOnMount": true,
                        "fsGroupPolicy": "File", "volumeLifecycleModes": ["Persistent"],
                        "storageCapacity": capacity, "requiresRepublish": false}})
    };
    let mut out = vec![
        driver("local.csi.skiff.dev", true),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "local",
                            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
               "provisioner": "local.csi.skiff.dev", "reclaimPolicy": "Delete",
               "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true}),
    ];
    if shared {
        out.push(driver("shared.csi.skiff.dev", false));
        out.push(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": "shared"},
                   "provisioner": "shared.csi.skiff.dev", "reclaimPolicy": "Delete",
                   "volumeBindingMode": "Immediate", "allowVolumeExpansion": true}),
        );
    }
    out
}

/// A RuntimeClass per runtime handler the nodes offer, named after it (`runc`, `crun`), so a
/// pod picks its runtime with `runtimeClassName`.
pub fn runtime_classes<S: AsRef<str>>(handlers: &[S]) -> Vec<Value> {
    handlers
        .iter()
        .map(|h| {
            json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                   "metadata": {"name": h.as_ref()}, "handler": h.as_ref()})
        })
        .collect()
}

/// What lets machines find the cluster, as kubeadm sets it up: anyone (`system:anonymous`,
/// before a joining machine trusts the server enough to send its token) and bootstrap tokens
/// may read `kube-public/cluster-info`. The rest of joining is the API server's bootstrap
/// policy: `system:bootstrappers` may create CSRs (`system:node-bootstrapper`) and have node
/// client ones approved (`...:nodeclient`), `system:nodes` their renewals
/// (`...:selfnodeclient`), and the user `system:kube-proxy` is a `system:node-proxier`.
pub fn join_rbac() -> Vec<Value> {
    let group =
        |g: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g});
    let user =
        |u: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u});
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "skiff:bootstrap-signer-clusterinfo",
                            "namespace": "kube-public"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                          "resourceNames": ["cluster-info"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "skiff:bootstrap-signer-clusterinfo",
                            "namespace": "kube-public"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "skiff:bootstrap-signer-clusterinfo"},
               "subjects": [user("system:anonymous"), group("system:bootstrappers")]}),
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
        "ServiceAccount" => drop(
            Api::<ServiceAccount>::namespaced(client, ns)
                .patch(name, &pp, &patch)
                .await?,
        ),
        "Role" => drop(
            Api::<Role>::namespaced(client, ns)
                .patch(name, &pp, &patch)
                .await?,
        ),
        "RoleBinding" => drop(
            Api::<RoleBinding>::namespaced(client, ns)
                .patch(name, &pp, &patch)
                .await?,
        ),
        "CSIDriver" => drop(
            Api::<CSIDriver>::all(client)
                .patch(name, &pp, &patch)
                .await?,
        ),
        "StorageClass" => drop(
            Api::<StorageClass>::all(client)
                .patch(name, &pp, &patch)
                .await?,
        ),
        "RuntimeClass" => drop(
            Api::<RuntimeClass>::all(client)
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

    #[test]
    fn the_dns_reaches_the_api_server_by_its_address() {
        assert_eq!(
            host_port("https://10.0.0.1:6443"),
            ("10.0.0.1".into(), "6443".into())
        );
        assert_eq!(host_port("https://lb:6443/"), ("lb".into(), "6443".into()));
        assert_eq!(
            host_port("https://[fd00::1]:6443"),
            ("fd00::1".into(), "6443".into())
        );
        assert_eq!(
            host_port("https://api.example"),
            ("api.example".into(), "443".into())
        );
        let objects = cluster_dns("img", "10.96.0.10", "https://10.0.0.1:6443");
        let d = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["serviceAccountName"], "skiff-dns");
        assert_eq!(spec["containers"][0]["env"][0]["value"], "10.0.0.1");
        assert!(spec.get("volumes").is_none(), "no kubeconfig Secret");
        assert!(objects.iter().all(|o| o["kind"] != "Secret"));
        let classes = storage(false);
        assert_eq!(classes.len(), 2, "no shared class without a shared path");
        let local = &classes[1];
        assert_eq!(local["volumeBindingMode"], "WaitForFirstConsumer");
        assert_eq!(
            local["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
        assert_eq!(classes[0]["spec"]["storageCapacity"], true);
        let shared = storage(true);
        assert_eq!(shared[3]["metadata"]["name"], "shared");
        assert_eq!(shared[2]["spec"]["attachRequired"], false);
        assert_eq!(shared[2]["spec"]["storageCapacity"], false);
        let rbac = join_rbac();
        assert_eq!(rbac[1]["metadata"]["namespace"], "kube-public");
        assert_eq!(rbac[1]["subjects"][0]["name"], "system:anonymous");
    }
}
