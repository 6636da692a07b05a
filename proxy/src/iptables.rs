//! The iptables mode, for hosts without nf_tables: the same behaviour as the nftables table,
//! in the shape kube-proxy's iptables mode gives it — a chain per service port and kind of
//! traffic that spreads connections with `statistic` matches over a chain per endpoint,
//! which DNATs (and remembers clients with `recent` for `sessionAffinity: ClientIP`).
//!
//! Everything is written with `iptables-restore --noflush` (each call all or nothing), into
//! chains named `SKIFF-…` that the built-in chains jump to: a full write declares (and so
//! empties) every chain and deletes the ones no longer used; a change rewrites the changed
//! services' chains and the dispatch chains that list every service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use skiff_client::reflector::ObjectKey;

use crate::model::{Endpoint, ServicePort, SCTP, TCP, UDP};
use crate::proxier::{Error, Program, Sync};
use crate::rules::{Config, Kind, MASQUERADE_MARK};

/// The commands the mode runs (found on `PATH`).
#[derive(Debug, Clone)]
pub struct Commands {
    /// `iptables`.
    pub iptables: String,
    /// `iptables-save`.
    pub save: String,
    /// `iptables-restore`.
    pub restore: String,
}

impl Default for Commands {
    fn default() -> Self {
        Commands {
            iptables: "iptables".into(),
            save: "iptables-save".into(),
            restore: "iptables-restore".into(),
        }
    }
}

const SERVICES: &str = "SKIFF-SERVICES";
const NODE_PORTS: &str = "SKIFF-NODEPORTS";
const POSTROUTING: &str = "SKIFF-POSTROUTING";
const MARK_MASQ: &str = "SKIFF-MARK-MASQ";
const EXTERNAL_SERVICES: &str = "SKIFF-EXTERNAL-SERVICES";

/// The jumps from the built-in chains: table, chain, rule.
const JUMPS: [(&str, &str, &str); 7] = [
    ("nat", "PREROUTING", "-j SKIFF-SERVICES"),
    ("nat", "OUTPUT", "-j SKIFF-SERVICES"),
    ("nat", "POSTROUTING", "-j SKIFF-POSTROUTING"),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -j SKIFF-SERVICES",
    ),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -j SKIFF-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -j SKIFF-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -j SKIFF-SERVICES",
    ),
];

/// One service's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceRules {
    /// nat `SKIFF-SERVICES` rules (to its pick chains).
    services: Vec<String>,
    /// nat `SKIFF-NODEPORTS` rules.
    node_ports: Vec<String>,
    /// filter `SKIFF-SERVICES` rules (rejecting addresses without endpoints).
    reject: Vec<String>,
    /// filter `SKIFF-EXTERNAL-SERVICES` rules (rejecting node ports without endpoints).
    reject_node_ports: Vec<String>,
    /// Its own nat chains and their rules.
    chains: BTreeMap<String, Vec<String>>,
}

impl ServiceRules {
    fn rules(&self) -> usize {
        self.services.len()
            + self.node_ports.len()
            + self.reject.len()
            + self.reject_node_ports.len()
            + self.chains.values().map(Vec::len).sum::<usize>()
    }
}

/// A short stable hash for chain names (FNV-1a), as 16 hex digits: names stay within
/// iptables' 28 characters.
fn hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016X}")
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        TCP => "tcp",
        UDP => "udp",
        SCTP => "sctp",
        _ => "tcp",
    }
}

fn reject(proto: u8) -> &'static str {
    if proto == TCP {
        "-j REJECT --reject-with tcp-reset"
    } else {
        "-j REJECT --reject-with icmp-port-unreachable"
    }
}

/// The rules of one service's ports.
fn service_rules(ports: &[ServicePort], cfg: &Config) -> ServiceRules {
    let mut r = ServiceRules::default();
    for p in ports {
        let proto = proto_name(p.proto);
        let comment = format!("-m comment --comment \"{}\"", p.name.replace('"', ""));
        let (lb_kind, np_kind) = if p.external_local {
            (Kind::Local, Kind::NodePortLocal)
        } else {
            (Kind::External, Kind::NodePort)
        };
        let mut targets: Vec<(Option<std::net::Ipv4Addr>, u16, Kind, &[Endpoint])> = p
            .cluster_ips
            .iter()
            .map(|ip| (Some(*ip), p.port, Kind::Cluster, &p.cluster_endpoints[..]))
            .collect();
        targets.extend(
            p.load_balancer_ips
                .iter()
                .map(|ip| (Some(*ip), p.port, lb_kind, &p.external_endpoints[..])),
        );
        if let Some(np) = p.node_port {
            targets.push((None, np, np_kind, &p.external_endpoints[..]));
        }
        for (ip, port, kind, eps) in targets {
            let matches = match ip {
                Some(ip) => format!("-d {ip}/32 -p {proto} -m {proto} --dport {port}"),
                None => format!("-p {proto} -m {proto} --dport {port}"),
            };
            if eps.is_empty() {
                match ip {
                    Some(_) => r.reject.push(format!(
                        "-A {SERVICES} {comment} {matches} {}",
                        reject(p.proto)
                    )),
                    None => r.reject_node_ports.push(format!(
                        "-A {EXTERNAL_SERVICES} {comment} -m addrtype --dst-type LOCAL {matches} {}",
                        reject(p.proto)
                    )),
                }
                continue;
            }
            let chain = format!(
                "SKIFF-SVC-{}",
                hash(&[&p.name, proto, kind.prefix(), &eps.len().to_string()])
            );
            let line = match ip {
                Some(_) => format!("-A {SERVICES} {comment} {matches} -j {chain}"),
                None => format!("-A {NODE_PORTS} {comment} {matches} -j {chain}"),
            };
            if kind == Kind::NodePort || kind == Kind::NodePortLocal {
                r.node_ports.push(line);
            } else {
                r.services.push(line);
            }
            if r.chains.contains_key(&chain) {
                continue;
            }
            let mut rules = Vec::new();
            match kind {
                Kind::Cluster => {
                    if let Some((net, len)) = cfg.cluster_cidr {
                        rules.push(format!("-A {chain} ! -s {net}/{len} -j {MARK_MASQ}"));
                    }
                }
                Kind::External | Kind::NodePort => rules.push(format!("-A {chain} -j {MARK_MASQ}")),
                Kind::Local | Kind::NodePortLocal => {}
            }
            let seps: Vec<String> = eps
                .iter()
                .map(|e| {
                    format!(
                        "SKIFF-SEP-{}",
                        hash(&[&p.name, proto, &e.ip.to_string(), &e.port.to_string()])
                    )
                })
                .collect();
            if let Some(t) = p.affinity_timeout {
                for sep in &seps {
                    rules.push(format!(
                        "-A {chain} -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {t} --reap -j {sep}"
                    ));
                }
            }
            let n = seps.len();
            for (i, sep) in seps.iter().enumerate() {
                if i + 1 < n {
                    rules.push(format!(
                        "-A {chain} -m statistic --mode random --probability {:.10} -j {sep}",
                        1.0 / (n - i) as f64
                    ));
                } else {
                    rules.push(format!("-A {chain} -j {sep}"));
                }
            }
            r.chains.insert(chain, rules);
            for (e, sep) in eps.iter().zip(seps) {
                if r.chains.contains_key(&sep) {
                    continue;
                }
                let remember = if p.affinity_timeout.is_some() {
                    format!(" -m recent --name {sep} --mask 255.255.255.255 --rsource --set")
                } else {
                    String::new()
                };
                let rules = vec![
                    // A pod reaching itself through the service.
                    format!("-A {sep} -s {}/32 -j {MARK_MASQ}", e.ip),
                    format!(
                        "-A {sep} -p {proto} -m {proto}{remember} -j DNAT --to-destination {}:{}",
                        e.ip, e.port
                    ),
                ];
                r.chains.insert(sep, rules);
            }
        }
    }
    r
}

/// The iptables mode's writer for one node.
pub struct Iptables {
    cfg: Config,
    node: String,
    cmds: Commands,
    /// Each service's rules as last written; `None` when what the kernel holds is not
    /// known.
    applied: Option<HashMap<ObjectKey, ServiceRules>>,
    rules: usize,
}

impl Iptables {
    /// A writer for node `node`, running `cmds`.
    pub fn new(cfg: Config, node: &str, cmds: Commands) -> Iptables {
        Iptables {
            cfg,
            node: node.to_string(),
            cmds,
            applied: None,
            rules: 0,
        }
    }

    /// The fixed nat chains' rules.
    fn fixed(&self) -> Vec<String> {
        let mut nat = vec![format!(
            "-A {MARK_MASQ} -j MARK --or-mark {MASQUERADE_MARK:#x}"
        )];
        // Pods reaching beyond the cluster's network leave with the node's address.
        if let Some((net, len)) = self.cfg.cluster_cidr {
            nat.push(format!(
                "-A {POSTROUTING} -s {net}/{len} ! -d {net}/{len} -j MASQUERADE --random-fully"
            ));
        }
        nat.push(format!(
            "-A {POSTROUTING} -m mark ! --mark {m:#x}/{m:#x} -j RETURN",
            m = MASQUERADE_MARK
        ));
        nat.push(format!(
            "-A {POSTROUTING} -j MARK --xor-mark {MASQUERADE_MARK:#x}"
        ));
        nat.push(format!("-A {POSTROUTING} -j MASQUERADE --random-fully"));
        nat
    }

    /// The restore input: the dispatch chains for `all`, the chains of the services in
    /// `write`, the fixed chains when `full`, and the deletion of `stale` chains (nat).
    fn restore_input<'a>(
        &self,
        all: impl Iterator<Item = &'a ServiceRules> + Clone,
        write: &[&ServiceRules],
        stale: &BTreeSet<String>,
        full: bool,
    ) -> String {
        let mut s = String::with_capacity(1 << 16);
        s.push_str("*nat\n");
        let mut own: Vec<&String> = write.iter().flat_map(|r| r.chains.keys()).collect();
        own.sort();
        own.dedup();
        let mut fixed_chains = vec![SERVICES, NODE_PORTS];
        if full {
            fixed_chains.extend([POSTROUTING, MARK_MASQ]);
        }
        for c in fixed_chains
            .into_iter()
            .chain(own.into_iter().map(String::as_str))
            .chain(stale.iter().map(String::as_str))
        {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        if full {
            push_lines(&mut s, &self.fixed());
        }
        push_lines(&mut s, all.clone().flat_map(|r| &r.services));
        push_lines(&mut s, all.clone().flat_map(|r| &r.node_ports));
        let _ = writeln!(
            s,
            "-A {SERVICES} -m addrtype --dst-type LOCAL -j {NODE_PORTS}"
        );
        push_lines(
            &mut s,
            write.iter().flat_map(|r| r.chains.values().flatten()),
        );
        for c in stale {
            let _ = writeln!(s, "-X {c}");
        }
        s.push_str("COMMIT\n*filter\n");
        let _ = writeln!(s, ":{SERVICES} - [0:0]\n:{EXTERNAL_SERVICES} - [0:0]");
        push_lines(&mut s, all.clone().flat_map(|r| &r.reject));
        push_lines(&mut s, all.flat_map(|r| &r.reject_node_ports));
        s.push_str("COMMIT\n");
        s
    }

    fn restore(&self, input: &str) -> Result<(), Error> {
        run_restore(&self.cmds, input)
    }

    /// Makes the built-in chains jump to Skiff's (once each).
    fn ensure_jumps(&self) -> Result<(), Error> {
        for (table, chain, rule) in JUMPS {
            let args: Vec<&str> = rule.split(' ').collect();
            let present = Command::new(&self.cmds.iptables)
                .args(["-w", "-t", table, "-C", chain])
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| Error::Iptables(format!("running {}: {e}", self.cmds.iptables)))?;
            if !present.success() {
                run(Command::new(&self.cmds.iptables)
                    .args(["-w", "-t", table, "-I", chain, "1"])
                    .args(&args))?;
            }
        }
        Ok(())
    }
}

fn push_lines<'a>(s: &mut String, lines: impl IntoIterator<Item = &'a String>) {
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
}

fn run(cmd: &mut Command) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(|e| Error::Iptables(format!("running {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(Error::Iptables(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_restore(cmds: &Commands, input: &str) -> Result<(), Error> {
    let mut child = Command::new(&cmds.restore)
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Iptables(format!("running {}: {e}", cmds.restore)))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Iptables(format!("running {}: {e}", cmds.restore)))?;
    if !out.status.success() {
        return Err(Error::Iptables(format!(
            "{} refused the rules: {}",
            cmds.restore,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Skiff's chains in `table` now.
fn existing_chains(cmds: &Commands, table: &str) -> Result<BTreeSet<String>, Error> {
    let out = run(Command::new(&cmds.save).args(["-t", table]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split(' ').next())
        .filter(|c| c.starts_with("SKIFF-"))
        .map(str::to_string)
        .collect())
}

/// Removes Skiff's chains and the jumps to them (nothing if there are none).
pub fn cleanup(cmds: &Commands) -> Result<(), Error> {
    let nat = existing_chains(cmds, "nat")?;
    let filter = existing_chains(cmds, "filter")?;
    if nat.is_empty() && filter.is_empty() {
        return Ok(());
    }
    for (table, chain, rule) in JUMPS {
        let args: Vec<&str> = rule.split(' ').collect();
        // Once per copy of the rule.
        while Command::new(&cmds.iptables)
            .args(["-w", "-t", table, "-D", chain])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {}
    }
    let mut s = String::new();
    for (table, chains) in [("nat", &nat), ("filter", &filter)] {
        let _ = writeln!(s, "*{table}");
        for c in chains {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for c in chains {
            let _ = writeln!(s, "-X {c}");
        }
        s.push_str("COMMIT\n");
    }
    run_restore(cmds, &s)
}

impl Program for Iptables {
    fn node(&self) -> &str {
        &self.node
    }

    fn written(&self) -> bool {
        self.applied.is_some()
    }

    fn full(&mut self, services: Vec<(ObjectKey, Vec<ServicePort>)>) -> Result<Sync, Error> {
        let start = Instant::now();
        self.applied = None;
        let existing = existing_chains(&self.cmds, "nat")?;
        let applied: HashMap<ObjectKey, ServiceRules> = services
            .into_iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(k, p)| (k, service_rules(&p, &self.cfg)))
            .collect();
        let write: Vec<&ServiceRules> = applied.values().collect();
        let wanted: BTreeSet<&String> = write.iter().flat_map(|r| r.chains.keys()).collect();
        let stale: BTreeSet<String> = existing
            .into_iter()
            .filter(|c| c.starts_with("SKIFF-SVC-") || c.starts_with("SKIFF-SEP-"))
            .filter(|c| !wanted.contains(c))
            .collect();
        let input = self.restore_input(applied.values(), &write, &stale, true);
        let messages = input.lines().count();
        let build = start.elapsed();
        let t = Instant::now();
        self.restore(&input)?;
        self.ensure_jumps()?;
        let kernel = t.elapsed();
        self.rules = applied.values().map(ServiceRules::rules).sum::<usize>() + self.fixed().len();
        self.applied = Some(applied);
        Ok(Sync {
            full: true,
            messages,
            build,
            kernel,
            rules: self.rules,
            elements: 0,
        })
    }

    fn update(&mut self, changes: Vec<(ObjectKey, Vec<ServicePort>)>) -> Result<Sync, Error> {
        let start = Instant::now();
        let mut applied = self.applied.take().unwrap_or_default();
        let mut stale = BTreeSet::new();
        let mut changed = Vec::new();
        for (key, ports) in changes {
            let new = service_rules(&ports, &self.cfg);
            let old = applied.remove(&key).unwrap_or_default();
            if old == new {
                if !ports.is_empty() {
                    applied.insert(key, new);
                }
                continue;
            }
            stale.extend(
                old.chains
                    .keys()
                    .filter(|c| !new.chains.contains_key(*c))
                    .cloned(),
            );
            self.rules = (self.rules + new.rules()).saturating_sub(old.rules());
            if !ports.is_empty() {
                changed.push(key.clone());
                applied.insert(key, new);
            }
        }
        let write: Vec<&ServiceRules> = changed.iter().filter_map(|k| applied.get(k)).collect();
        let (messages, build, kernel) = if write.is_empty() && stale.is_empty() {
            (0, start.elapsed(), std::time::Duration::ZERO)
        } else {
            let input = self.restore_input(applied.values(), &write, &stale, false);
            let build = start.elapsed();
            let t = Instant::now();
            self.restore(&input)?;
            (input.lines().count(), build, t.elapsed())
        };
        self.applied = Some(applied);
        Ok(Sync {
            full: false,
            messages,
            build,
            kernel,
            rules: self.rules,
            elements: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn port(eps: &[[u8; 4]], affinity: Option<u32>) -> ServicePort {
        let eps: Vec<Endpoint> = eps
            .iter()
            .map(|ip| Endpoint {
                ip: Ipv4Addr::from(*ip),
                port: 8080,
            })
            .collect();
        ServicePort {
            name: "ns/web:80".into(),
            proto: TCP,
            cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 10)],
            port: 80,
            node_port: Some(30080),
            load_balancer_ips: vec![],
            affinity_timeout: affinity,
            external_local: false,
            cluster_endpoints: eps.clone(),
            external_endpoints: eps,
            local_endpoints: vec![],
        }
    }

    #[test]
    fn a_service_spreads_over_a_chain_per_endpoint() {
        let cfg = Config {
            cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
        };
        let r = service_rules(&[port(&[[10, 1, 0, 2], [10, 1, 0, 3]], None)], &cfg);
        assert_eq!(r.services.len(), 1);
        assert!(r.services[0].contains("-d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j SKIFF-SVC-"));
        assert_eq!(r.node_ports.len(), 1);
        // Cluster and node-port pick chains, and one chain per endpoint shared by both.
        assert_eq!(r.chains.len(), 4);
        let cluster = r
            .chains
            .values()
            .find(|v| v[0].contains("! -s 10.244.0.0/16"))
            .unwrap();
        assert!(cluster[1].contains("--probability 0.5000000000"));
        assert!(!cluster[2].contains("statistic"));
        assert!(r.chains.keys().all(|c| c.len() <= 28));
        // Without endpoints: rejected.
        let r = service_rules(&[port(&[], None)], &cfg);
        assert!(r.services.is_empty() && r.chains.is_empty());
        assert!(r.reject[0].ends_with("-j REJECT --reject-with tcp-reset"));
        assert!(r.reject_node_ports[0].contains("--dport 30080"));
    }

    #[test]
    fn affinity_remembers_clients_per_endpoint() {
        let r = service_rules(&[port(&[[10, 1, 0, 2]], Some(60))], &Config::default());
        let pick = r
            .chains
            .values()
            .find(|v| v.iter().any(|l| l.contains("--rcheck")))
            .unwrap();
        assert!(pick[0].contains("--rcheck --seconds 60 --reap"));
        assert!(r.chains.values().any(|v| v
            .iter()
            .any(|l| l.contains("--set -j DNAT --to-destination 10.1.0.2:8080"))));
    }
}
