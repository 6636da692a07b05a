//! Skiff's service proxy: turns Services and EndpointSlices into kernel rules on every node,
//! so that Service addresses and node ports reach pod endpoints.
//!
//! # The rules, and why they are shaped so
//!
//! One nf_tables table, `ip skiff`, written over netlink ([`nft`]) in single transactions.
//! Measured on the kernel these machines run, for 10,000 services of 10 endpoints each:
//!
//! | shape | kernel time |
//! |---|---|
//! | a chain per service, a chain per endpoint, an anonymous `numgen` verdict map per service (kube-proxy's nftables mode; through `nft`) | 147 s |
//! | a named map of endpoints per service (10,000 sets) | 6.3 s |
//! | one map of all endpoints, looked up from a rule in each service's chain | 15–114 s |
//! | a rule per endpoint (`numgen mod k == 0` cascades) | 1.35 s |
//! | one map of all endpoints, looked up from one rule per endpoint count | 0.28 s |
//!
//! The kernel finds sets by name in a list (so thousands of sets cost quadratic time), and
//! every rule that looks a map up checks all of the map's elements when it is added, and
//! every element added is checked against every rule that looks its map up. So the endpoints
//! of all services live in one map, `backends`, keyed by the packet's own `daddr . l4proto .
//! dport` plus a random index, and only a few rules look it up: one chain per endpoint count
//! `n` (`pick-n`) whose single rule draws `numgen random mod n` and DNATs to what the map
//! holds. A verdict map from `daddr . l4proto . dport` sends each service's traffic to the
//! chain for its endpoint count. Registers do not survive from one rule to the next (the
//! kernel refuses to load a register its rule did not store), which rules out passing a
//! service number between chains.
//!
//! A service change is a few element updates, and a change of its endpoint count moves its
//! verdict-map element to another `pick-n` chain — never a rule rewrite. Only the services
//! that changed are worked out again ([`tracker`] keeps what the watches said, [`proxier`]
//! what was written for each service), so a change does not cost more with more services.
//!
//! # The iptables mode
//!
//! For hosts without nf_tables, [`iptables`] gives the same behaviour with kube-proxy's
//! iptables shapes, through `iptables-restore`.

pub mod iptables;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod proxier;
pub mod routes;
pub mod rules;
pub mod tracker;
