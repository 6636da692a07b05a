//! Sysctls in a pod's security context, as Kubernetes judges them: which names are well
//! formed (the API server's validation), which kernel namespace a sysctl lives in, and the
//! kubelet's allowlist — the safe sysctls plus what `--allowed-unsafe-sysctls` adds — with
//! its admission verdict.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// The longest sysctl name.
pub const MAX_LENGTH: usize = 253;

/// The form of a sysctl name, as Kubernetes' messages print it.
pub const NAME_FMT: &str = r"([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?";

/// Why the kubelet refuses a pod's sysctls (the pod's `status.reason` and the event's).
pub const FORBIDDEN_REASON: &str = "SysctlForbidden";

/// The sysctls Kubernetes calls safe: namespaced in the pod, and without effect on other pods
/// of the node (v1.33's list, for a kernel new enough to namespace them all).
pub const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

fn is_segment(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            edge(f) && edge(l) && b.iter().all(|c| edge(c) || *c == b'-' || *c == b'_')
        }
        _ => false,
    }
}

/// Whether `name` is a well-formed sysctl name: at most [`MAX_LENGTH`] characters matching
/// [`NAME_FMT`] (segments joined by `.` or `/`).
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= MAX_LENGTH && name.split(['.', '/']).all(is_segment)
}

/// A name in its dotted form: `net/ipv4/conf/eth0.100/rp_filter` (slashes first) becomes
/// `net.ipv4.conf.eth0/100.rp_filter`.
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The kernel namespace a sysctl lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// The network namespace (`net.*`).
    Net,
    /// The IPC namespace (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`).
    Ipc,
}

impl Namespace {
    /// How Kubernetes names it in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::Net => "Net",
            Namespace::Ipc => "IPC",
        }
    }
}

/// The IPC sysctls by name (`kernel.shm` and `kernel.msg` stand for the patterns
/// `kernel.shm*` and `kernel.msg*`).
const IPC_NAMES: &[&str] = &[
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.shm",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.msg",
];

/// The namespace of a sysctl (or of a pattern's part before its `*`); `None` when it is not
/// known to be namespaced.
pub fn namespace(name: &str) -> Option<Namespace> {
    let n = normalize(name);
    let n = n.split('*').next().unwrap_or_default();
    if IPC_NAMES.contains(&n) || n.starts_with("fs.mqueue.") {
        Some(Namespace::Ipc)
    } else if n.starts_with("net.") {
        Some(Namespace::Net)
    } else {
        None
    }
}

/// What `--allowed-unsafe-sysctls` may not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// A malformed pattern.
    #[error("sysctl {0:?} must have at most {MAX_LENGTH} characters and match regex {NAME_FMT}")]
    Malformed(String),
    /// A sysctl no pod has its own copy of.
    #[error("the sysctls {0:?} are not known to be namespaced")]
    NotNamespaced(String),
}

/// The sysctls a kubelet lets pods set: whole names, and prefixes from patterns ending in `*`.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    names: BTreeMap<String, Namespace>,
    prefixes: BTreeMap<String, Namespace>,
}

impl Allowlist {
    /// The safe sysctls plus `unsafe_patterns` (names, or prefixes ending in `*`).
    pub fn new(unsafe_patterns: &[String]) -> Result<Allowlist, AllowlistError> {
        let mut w = Allowlist::default();
        for p in SAFE
            .iter()
            .map(|s| s.to_string())
            .chain(unsafe_patterns.iter().cloned())
        {
            let (body, prefixed) = match p.strip_suffix('*') {
                Some(b) => (b, true),
                None => (p.as_str(), false),
            };
            let body_ok = if prefixed {
                body.is_empty()
                    || is_valid_name(body.trim_end_matches(['.', '/'])) && body.len() < MAX_LENGTH
            } else {
                is_valid_name(body)
            };
            if !body_ok {
                return Err(AllowlistError::Malformed(p.clone()));
            }
            let key = normalize(body);
            let ns = namespace(&p).ok_or_else(|| AllowlistError::NotNamespaced(key.clone()))?;
            if prefixed {
                w.prefixes.insert(key, ns);
            } else {
                w.names.insert(key, ns);
            }
        }
        Ok(w)
    }

    fn check(&self, name: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
        let name = normalize(name);
        let ns = self.names.get(&name).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| name.starts_with(p.as_str()))
                .map(|(_, ns)| *ns)
        });
        match ns {
            None => Err(format!("{name:?} not allowlisted")),
            Some(ns @ Namespace::Net) if host_net => Err(format!(
                "{name:?} not allowed with host {} enabled",
                ns.as_str()
            )),
            Some(ns @ Namespace::Ipc) if host_ipc => Err(format!(
                "{name:?} not allowed with host {} enabled",
                ns.as_str()
            )),
            Some(_) => Ok(()),
        }
    }

    /// The kubelet's admission of a pod: `Err` with the rejection's message
    /// (`forbidden sysctl: "kernel.msgmax" not allowlisted`) for the first sysctl it may not
    /// set.
    pub fn admit(&self, pod: &Pod) -> Result<(), String> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let sysctls = spec
            .security_context
            .as_ref()
            .and_then(|s| s.sysctls.as_ref());
        for s in sysctls.into_iter().flatten() {
            self.check(
                &s.name,
                spec.host_network.unwrap_or(false),
                spec.host_ipc.unwrap_or(false),
            )
            .map_err(|e| format!("forbidden sysctl: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "kernel.shm_rmid_forced",
            "net.ipv4.conf.eth0/100.rp_filter",
            "net/ipv4/ip_forward",
            "a",
        ] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Kernel.x",
            "net..ipv4",
            "net.ipv4.",
            "-a.b",
            "a_.b",
            "a b",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert!(!is_valid_name(&"a".repeat(254)));
        assert_eq!(
            normalize("net/ipv4/conf/eth0.100/rp_filter"),
            "net.ipv4.conf.eth0/100.rp_filter"
        );
        assert_eq!(normalize("net.ipv4.ip_forward"), "net.ipv4.ip_forward");
    }

    fn pod(sysctls: &[&str], host_net: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "spec": {"hostNetwork": host_net, "containers": [],
                "securityContext": {"sysctls": sysctls.iter()
                    .map(|n| serde_json::json!({"name": n, "value": "1"})).collect::<Vec<_>>()}}
        }))
        .unwrap()
    }

    #[test]
    fn admission() {
        let safe = Allowlist::new(&[]).unwrap();
        assert_eq!(
            safe.admit(&pod(
                &["net.ipv4.tcp_syncookies", "kernel.shm_rmid_forced"],
                false
            )),
            Ok(())
        );
        assert_eq!(
            safe.admit(&pod(&["kernel.msgmax"], false)),
            Err("forbidden sysctl: \"kernel.msgmax\" not allowlisted".into())
        );
        assert_eq!(
            safe.admit(&pod(&["net.ipv4.tcp_syncookies"], true)),
            Err(
                "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host Net enabled"
                    .into()
            )
        );
        let more = Allowlist::new(&["kernel.msg*".into(), "net.core.somaxconn".into()]).unwrap();
        assert_eq!(
            more.admit(&pod(&["kernel.msgmax", "net/core/somaxconn"], false)),
            Ok(())
        );
        assert_eq!(
            Allowlist::new(&["kernel.hostname".into()]).unwrap_err(),
            AllowlistError::NotNamespaced("kernel.hostname".into())
        );
        assert!(matches!(
            Allowlist::new(&["Net.x".into()]),
            Err(AllowlistError::Malformed(_))
        ));
    }
}
