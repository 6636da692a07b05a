//! The Kubernetes rules several Skiff components need, written once. Pure functions and
//! types over k8s-openapi's: no I/O, no clocks, no async, so every component (and every test)
//! gets the same answer.
//!
//! - [`quantity`]: exact resource quantities (`100m`, `1.5Gi`), parsed, compared, summed and
//!   printed as Kubernetes does.
//! - [`duration`]: Go durations (`1m30s`, `1.5h`) as flags and config files carry them.
//! - [`toleration`]: whether tolerations tolerate taints.
//! - [`qos`]: a pod's QoS class.
//! - [`quota`]: what objects use of a ResourceQuota, which quotas cover them, and whether a
//!   write fits.
//! - [`selector`]: label selectors, node selector terms, a pod's node constraints.
//! - [`volume`]: which PersistentVolume a claim binds to, and the facts both sides read.
//! - [`attach`]: the names the attach/detach controller, the kubelet and an external attacher
//!   agree on for a CSI volume attached to a node.
//! - [`kubeconfig`]: kubeconfig files, read and built.
//! - [`backoff`]: the back-off policy every retry uses.
//! - [`disruption`]: int-or-percent counts and the disruption budget's condition.
//! - [`sysctl`]: well-formed sysctl names, their kernel namespaces, and the kubelet's
//!   allowlist.

#![deny(missing_docs)]

pub mod attach;
pub mod backoff;
pub mod disruption;
pub mod duration;
pub mod kubeconfig;
pub mod qos;
pub mod quantity;
pub mod quota;
pub mod selector;
pub mod sysctl;
pub mod toleration;
pub mod volume;

pub use backoff::Backoff;
pub use duration::GoDuration;
pub use kubeconfig::Kubeconfig;
pub use qos::QosClass;
pub use quantity::Quantity;
