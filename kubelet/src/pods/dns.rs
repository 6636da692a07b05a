//! A pod's name resolution: the `/etc/resolv.conf` the runtime writes from the sandbox's DNS
//! configuration (`dnsPolicy`, `dnsConfig`, `--cluster-dns`), and the `/etc/hosts` the kubelet
//! writes and mounts into every container.

use k8s_openapi::api::core::v1::Pod;
use skiff_proto::cri;

use super::PodConfig;

/// Kubernetes' limits on a resolver configuration.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The parts of a resolv.conf file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolv {
    /// `nameserver` lines.
    pub servers: Vec<String>,
    /// `search` domains.
    pub searches: Vec<String>,
    /// `options`.
    pub options: Vec<String>,
}

/// Parses resolv.conf text.
pub fn parse_resolv(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => r.servers.extend(words.next().map(String::from)),
            Some("search") | Some("domain") => {
                r.searches = words.map(String::from).collect();
            }
            Some("options") => r.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    r
}

/// The DNS configuration of `pod`'s sandbox, or `None` for the node's own (host network
/// pods with `dnsPolicy: ClusterFirst` and `Default` pods get the node's file, as kubelet does).
pub fn sandbox_dns(pod: &Pod, config: &PodConfig) -> cri::DnsConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host = parse_resolv(&std::fs::read_to_string(&config.resolv_conf).unwrap_or_default());
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = &config.cluster_domain;
    let cluster = |r: &Resolv| {
        let mut searches = vec![
            format!("{ns}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ];
        searches.extend(r.searches.iter().cloned());
        Resolv {
            servers: config.cluster_dns.clone(),
            searches,
            options: vec!["ndots:5".into()],
        }
    };
    let mut r = match policy {
        "None" => Resolv::default(),
        "ClusterFirstWithHostNet" if !config.cluster_dns.is_empty() => cluster(&host),
        "ClusterFirst" if !host_network && !config.cluster_dns.is_empty() => cluster(&host),
        _ => host,
    };
    if let Some(c) = spec.and_then(|s| s.dns_config.as_ref()) {
        for s in c.nameservers.iter().flatten() {
            if !r.servers.contains(s) {
                r.servers.push(s.clone());
            }
        }
        for s in c.searches.iter().flatten() {
            if !r.searches.contains(s) {
                r.searches.push(s.clone());
            }
        }
        for o in c.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            r.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            r.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    r.servers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    cri::DnsConfig {
        servers: r.servers,
        searches: r.searches,
        options: r.options,
    }
}

/// The pod's hostname (`spec.hostname`, else its name, at most 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

/// The `/etc/hosts` of a pod with `ips` off the host network, as kubelet writes it.
pub fn hosts_file(pod: &Pod, ips: &[String], domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let spec = pod.spec.as_ref();
    let host = hostname(pod);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let names = match spec.and_then(|s| s.subdomain.as_deref()) {
        Some(sub) if !sub.is_empty() => format!("{host}.{sub}.{ns}.svc.{domain}\t{host}"),
        _ => host,
    };
    for ip in ips {
        out.push_str(&format!("{ip}\t{names}\n"));
    }
    append_aliases(&mut out, pod);
    out
}

/// The node's `/etc/hosts` plus the pod's `hostAliases`, for host-network pods.
pub fn host_network_hosts_file(pod: &Pod) -> String {
    let mut out = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    append_aliases(&mut out, pod);
    out
}

fn append_aliases(out: &mut String, pod: &Pod) {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_ref())
        .filter(|a| !a.is_empty());
    if let Some(aliases) = aliases {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn config(dns: &[&str], resolv: &std::path::Path) -> PodConfig {
        PodConfig {
            node_name: "n".into(),
            node_ip: "10.0.0.1".into(),
            root_dir: "/r".into(),
            pod_logs_dir: "/l".into(),
            cluster_dns: dns.iter().map(|s| s.to_string()).collect(),
            cluster_domain: "cluster.local".into(),
            resolv_conf: resolv.into(),
            cgroup_root: "/".into(),
            node_cpu_millis: 2000,
            node_memory_bytes: 1 << 30,
            sync_frequency: std::time::Duration::from_secs(60),
            sysctls: Default::default(),
        }
    }

    fn pod(policy: Option<&str>, host_network: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(String::from),
                host_network: Some(host_network),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn policies() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "# comment\nnameserver 192.0.2.53\nsearch corp.example\noptions rotate\n",
        )
        .unwrap();
        let c = config(&["10.96.0.10"], &resolv);
        let d = sandbox_dns(&pod(None, false), &c);
        assert_eq!(d.servers, ["10.96.0.10"]);
        assert_eq!(
            d.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(d.options, ["ndots:5"]);
        // Host network pods with ClusterFirst get the node's resolver.
        let d = sandbox_dns(&pod(Some("ClusterFirst"), true), &c);
        assert_eq!(d.servers, ["192.0.2.53"]);
        let d = sandbox_dns(&pod(Some("ClusterFirstWithHostNet"), true), &c);
        assert_eq!(d.servers, ["10.96.0.10"]);
        let d = sandbox_dns(&pod(Some("Default"), false), &c);
        assert_eq!(
            (d.servers, d.options),
            (vec!["192.0.2.53".to_string()], vec!["rotate".to_string()])
        );
        // No cluster DNS configured: ClusterFirst falls back to the node's.
        let d = sandbox_dns(&pod(None, false), &config(&[], &resolv));
        assert_eq!(d.servers, ["192.0.2.53"]);
        // None + dnsConfig.
        let mut p = pod(Some("None"), false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["1.2.3.4".into()]),
            searches: Some(vec!["a.example".into()]),
            options: Some(vec![PodDNSConfigOption {
                name: Some("ndots".into()),
                value: Some("2".into()),
            }]),
        });
        let d = sandbox_dns(&p, &c);
        assert_eq!(d.servers, ["1.2.3.4"]);
        assert_eq!(d.searches, ["a.example"]);
        assert_eq!(d.options, ["ndots:2"]);
    }

    #[test]
    fn hosts() {
        let mut p = pod(None, false);
        p.spec.as_mut().unwrap().hostname = Some("h".into());
        p.spec.as_mut().unwrap().subdomain = Some("sub".into());
        let text = hosts_file(&p, &["10.1.0.5".into()], "cluster.local");
        assert!(
            text.contains("10.1.0.5\th.sub.shop.svc.cluster.local\th\n"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
    }
}
