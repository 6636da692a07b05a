//! A container's environment: `env` (values with `$(VAR)` references, `valueFrom` fieldRef,
//! resourceFieldRef, configMapKeyRef, secretKeyRef) over `envFrom`, and the same `$(VAR)`
//! expansion for `command` and `args`. Downward API field paths are shared with the
//! downwardAPI volume. Every container also gets the API server's Service (`default/
//! kubernetes`) as `KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`, ... as the kubelet
//! gives them, which is where in-cluster clients look for the API server, and, unless the pod
//! says `enableServiceLinks: false`, the same variables for every Service of its namespace.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_client::{Api, Client};

use super::PodConfig;

/// Why a container's configuration cannot be made (its `CreateContainerConfigError`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// ConfigMaps and Secrets of one namespace, each read at most once per sync.
pub struct Sources {
    client: Client,
    namespace: String,
    configmaps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
    master: Option<Option<Service>>,
    services: Option<Vec<Service>>,
}

impl Sources {
    /// Reads from `namespace` through `client`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Sources {
            client,
            namespace: namespace.to_string(),
            configmaps: HashMap::new(),
            secrets: HashMap::new(),
            master: None,
            services: None,
        }
    }

    /// The Services of the pod's namespace (read once per sync).
    pub async fn services(&mut self) -> Result<Vec<Service>, ConfigError> {
        if let Some(s) = &self.services {
            return Ok(s.clone());
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api.list(&Default::default()).await.map_err(|e| {
            tracing::warn!(error = %e, "listing services for containers' environment");
            // The kubelet's words.
            ConfigError("failed to list services when setting up env vars".into())
        })?;
        self.services = Some(list.items.clone());
        Ok(list.items)
    }

    /// The API server's Service, `default/kubernetes` (`None` when it cannot be read: the
    /// containers then start without its variables, as they would before it exists).
    pub async fn master_service(&mut self) -> Option<Service> {
        if let Some(s) = &self.master {
            return s.clone();
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let s = match api.get_opt("kubernetes").await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading the kubernetes Service for containers' environment");
                None
            }
        };
        self.master = Some(s.clone());
        s
    }

    /// A ConfigMap, `None` when it does not exist.
    pub async fn configmap(&mut self, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
        if let Some(c) = self.configmaps.get(name) {
            return Ok(c.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let c = api
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("reading configmap {name:?}: {e}")))?;
        self.configmaps.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// A Secret, `None` when it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<Secret>, ConfigError> {
        if let Some(s) = self.secrets.get(name) {
            return Ok(s.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let s = api
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("reading secret {name:?}: {e}")))?;
        self.secrets.insert(name.to_string(), s.clone());
        Ok(s)
    }

    /// A ConfigMap's keys and values (text and binary data).
    pub fn configmap_data(c: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = c
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        out.extend(
            c.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone())),
        );
        out
    }

    /// A Secret's keys and values (`stringData` is folded into `data` by the API server).
    pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        out.extend(
            s.string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
        );
        out
    }
}

/// What the Downward API knows of a pod once it runs.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// The pod's IPs (empty on the host network until known).
    pub pod_ips: Vec<String>,
    /// The node's IP.
    pub host_ip: String,
}

/// The value of a Downward API `fieldRef` path.
pub fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, ConfigError> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let map_text = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(String::from)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&m.labels),
        "metadata.annotations" => map_text(&m.annotations),
        "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" => facts.host_ip.clone(),
        "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => facts.pod_ips.join(","),
        p => {
            if let Some(k) = subscript("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(ConfigError(format!("unsupported fieldPath: {p}")));
            }
        }
    })
}

/// The value of a `resourceFieldRef` of container `c`: its limit (the node's capacity when
/// unset) or request, divided by `divisor` and rounded up, as Kubernetes does.
pub fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    config: &PodConfig,
) -> Result<String, ConfigError> {
    let r = c.resources.clone().unwrap_or_default();
    let get = |m: &Option<BTreeMap<String, Quantity>>, n: &str| {
        m.as_ref().and_then(|m| m.get(n)).and_then(milli_value)
    };
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| ConfigError(format!("unsupported container resource: {resource}")))?;
    let milli = match (kind, name) {
        ("limits", "cpu") => get(&r.limits, "cpu").unwrap_or(config.node_cpu_millis),
        ("limits", "memory") => get(&r.limits, "memory").unwrap_or(config.node_memory_bytes * 1000),
        ("requests", "cpu") => get(&r.requests, "cpu").unwrap_or(0),
        ("requests", "memory") => get(&r.requests, "memory").unwrap_or(0),
        ("limits", "ephemeral-storage") | ("requests", "ephemeral-storage") => {
            let m = if kind == "limits" {
                &r.limits
            } else {
                &r.requests
            };
            get(m, "ephemeral-storage").unwrap_or(0)
        }
        _ => {
            return Err(ConfigError(format!(
                "unsupported container resource: {resource}"
            )))
        }
    };
    let div = divisor
        .and_then(milli_value)
        .filter(|d| *d > 0)
        .unwrap_or(1000);
    // CPU requests round up to at least 1 of the divisor, as Kubernetes does.
    let v = (milli + div - 1) / div;
    let v = if name == "cpu" && milli > 0 {
        v.max(1)
    } else {
        v
    };
    Ok(v.to_string())
}

/// A quantity in thousandths, rounded up; `None` when unparsable.
fn milli_value(q: &Quantity) -> Option<i64> {
    skiff_rules::Quantity::try_from(q)
        .ok()
        .map(|q| q.milli_value())
}

/// The variables Kubernetes derives from a Service (`NAME_SERVICE_HOST`, `NAME_SERVICE_PORT`,
/// `NAME_SERVICE_PORT_<PORTNAME>`, `NAME_PORT`, `NAME_PORT_<P>_<PROTO>[_PROTO|_PORT|_ADDR]`);
/// none for a Service without a cluster IP.
pub fn service_env(svc: &Service) -> Vec<(String, String)> {
    let spec = svc.spec.clone().unwrap_or_default();
    let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") else {
        return Vec::new();
    };
    let ports = spec.ports.unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let name = svc
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .to_uppercase()
        .replace('-', "_");
    let url_ip = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    let mut out = vec![
        (format!("{name}_SERVICE_HOST"), ip.clone()),
        (format!("{name}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in &ports {
        if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!(
                    "{name}_SERVICE_PORT_{}",
                    pn.to_uppercase().replace('-', "_")
                ),
                p.port.to_string(),
            ));
        }
    }
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".into())
    };
    out.push((
        format!("{name}_PORT"),
        format!("{}://{url_ip}:{}", proto(first).to_lowercase(), first.port),
    ));
    for p in &ports {
        let pr = proto(p);
        let prefix = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
        out.push((
            prefix.clone(),
            format!("{}://{url_ip}:{}", pr.to_lowercase(), p.port),
        ));
        out.push((format!("{prefix}_PROTO"), pr.to_lowercase()));
        out.push((format!("{prefix}_PORT"), p.port.to_string()));
        out.push((format!("{prefix}_ADDR"), ip.clone()));
    }
    out
}

/// Expands `$(NAME)` references from `vars`; `$$` escapes a `$`; unknown references stay.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = s[i + 2..].find(')') {
                        let name = &s[i + 2..i + 2 + end];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&s[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// An environment variable name as Kubernetes accepts it since relaxed validation (on by
/// default from v1.32): any printable ASCII character other than `=`, so `1-foo` and `$_-x`
/// are names too.
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// The variables of a container, and the warnings for the pod's events on the way.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Names and values, in order.
    pub vars: Vec<(String, String)>,
    /// `(reason, message)` of each warning: keys of an `envFrom` source that are no valid
    /// names, skipped.
    pub warnings: Vec<(String, String)>,
}

/// Skipped `envFrom` keys, as the kubelet reports them.
fn invalid_keys_warning(
    kind: &str,
    ns: &str,
    name: &str,
    mut keys: Vec<String>,
) -> (String, String) {
    keys.sort();
    (
        "InvalidEnvironmentVariableNames".into(),
        format!(
            "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
            keys.join(", ")
        ),
    )
}

/// The Services whose variables a pod gets, as the kubelet picks them: the API server's
/// (`default/kubernetes`) always, and those of the pod's namespace with `enableServiceLinks`
/// (one of the namespace named `kubernetes` replacing the API server's); none without a
/// cluster IP (headless, `ExternalName`).
pub fn linked_services(
    master: Option<Service>,
    namespace: &[Service],
    enable_links: bool,
) -> Vec<Service> {
    let mut by_name: BTreeMap<String, Service> = BTreeMap::new();
    if let Some(m) = master {
        by_name.insert("kubernetes".into(), m);
    }
    if enable_links {
        for s in namespace {
            by_name.insert(s.metadata.name.clone().unwrap_or_default(), s.clone());
        }
    }
    by_name.into_values().collect()
}

/// A container's environment, in order (the Services' variables, then `envFrom`, then `env`,
/// later names winning).
pub async fn resolve(
    pod: &Pod,
    c: &Container,
    facts: &PodFacts,
    config: &PodConfig,
    sources: &mut Sources,
) -> Result<Resolved, ConfigError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    // The Services first, so that the container's own variables win.
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let master = sources.master_service().await;
    let own = if links {
        sources.services().await?
    } else {
        Vec::new()
    };
    for svc in linked_services(master, &own, links) {
        for (k, v) in service_env(&svc) {
            set(&mut vars, k, v);
        }
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match sources.configmap(&r.name).await? {
                Some(cm) => {
                    let mut invalid = Vec::new();
                    for (k, v) in Sources::configmap_data(&cm) {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut vars, name, String::from_utf8_lossy(&v).into_owned());
                        } else {
                            invalid.push(name);
                        }
                    }
                    if !invalid.is_empty() {
                        warnings.push(invalid_keys_warning("configMap", &ns, &r.name, invalid));
                    }
                }
                None if optional => {}
                None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match sources.secret(&r.name).await? {
                Some(s) => {
                    let mut invalid = Vec::new();
                    for (k, v) in Sources::secret_data(&s) {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut vars, name, String::from_utf8_lossy(&v).into_owned());
                        } else {
                            invalid.push(name);
                        }
                    }
                    if !invalid.is_empty() {
                        warnings.push(invalid_keys_warning("secret", &ns, &r.name, invalid));
                    }
                }
                None if optional => {}
                None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or(""), &vars),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, facts)?
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        Some(name) if !name.is_empty() => super::all_containers(pod)
                            .find(|x| x.name == name)
                            .ok_or_else(|| {
                                ConfigError(format!("container {name:?} not found in the pod"))
                            })?,
                        _ => c,
                    };
                    resource_value(target, &r.resource, r.divisor.as_ref(), config)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match sources.configmap(&r.name).await? {
                        Some(cm) => match Sources::configmap_data(&cm).get(&r.key) {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None if optional => continue,
                            None => {
                                return Err(ConfigError(format!(
                                    "couldn't find key {} in ConfigMap {ns}/{}",
                                    r.key, r.name
                                )))
                            }
                        },
                        None if optional => continue,
                        None => {
                            return Err(ConfigError(format!("configmap {:?} not found", r.name)))
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match sources.secret(&r.name).await? {
                        Some(s) => match Sources::secret_data(&s).get(&r.key) {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None if optional => continue,
                            None => {
                                return Err(ConfigError(format!(
                                    "couldn't find key {} in Secret {ns}/{}",
                                    r.key, r.name
                                )))
                            }
                        },
                        None if optional => continue,
                        None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
                    }
                } else {
                    String::new()
                }
            }
        };
        set(&mut vars, e.name.clone(), value);
    }
    let vars = order
        .into_iter()
        .map(|k| {
            let v = vars.get(&k).cloned().unwrap_or_default();
            (k, v)
        })
        .collect();
    Ok(Resolved { vars, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let vars = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "two".to_string()),
        ]);
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(C) $A", &vars), "$(C) $A");
        assert_eq!(expand("é$(A", &vars), "é$(A");
    }

    #[test]
    fn env_names() {
        for ok in ["A_B.c-d", "1-foo", "$_-x", "a:b", "A B", "~"] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in ["", "a=b", "tab\there", "é", "nul\0"] {
            assert!(!valid_env_name(bad), "{bad:?}");
        }
        let (reason, msg) =
            invalid_keys_warning("configMap", "ns", "cm", vec!["b=".into(), "a=".into()]);
        assert_eq!(reason, "InvalidEnvironmentVariableNames");
        assert_eq!(
            msg,
            "Keys [a=, b=] from the EnvFrom configMap ns/cm were skipped since they are considered invalid environment variable names."
        );
    }

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    #[test]
    fn services_linked_into_a_pod() {
        let master = svc("default", "kubernetes", "10.96.0.1");
        let own = [svc("app", "web", "10.96.0.20"), svc("app", "db", "None")];
        let names = |v: Vec<Service>| -> Vec<String> {
            v.iter()
                .flat_map(service_env)
                .map(|(k, _)| k)
                .filter(|k| k.ends_with("_SERVICE_HOST"))
                .collect()
        };
        assert_eq!(
            names(linked_services(Some(master.clone()), &own, true)),
            ["KUBERNETES_SERVICE_HOST", "WEB_SERVICE_HOST"]
        );
        assert_eq!(
            names(linked_services(Some(master.clone()), &own, false)),
            ["KUBERNETES_SERVICE_HOST"]
        );
        // A `kubernetes` Service of the pod's own namespace wins over the API server's.
        let shadow = [svc("app", "kubernetes", "10.96.0.99")];
        let got = linked_services(Some(master), &shadow, true);
        assert_eq!(got.len(), 1);
        assert_eq!(service_env(&got[0])[0].1, "10.96.0.99");
    }

    #[test]
    fn the_api_servers_service_as_variables() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
        }))
        .unwrap();
        let got: BTreeMap<String, String> = service_env(&svc).into_iter().collect();
        let want: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }))
        .unwrap();
        assert!(service_env(&headless).is_empty());
    }
}
