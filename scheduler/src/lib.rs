//! Skiff's scheduler: binds pods that have no node to a node that can run them, choosing by
//! resources, constraints and locality, with kube-scheduler's plugins and their names.
//!
//! - [`resources`]: what pods ask for and nodes offer, as Kubernetes counts (quantities read
//!   exactly by `skiff-rules`).
//! - [`snapshot`]: the cluster as the scheduler sees it (nodes with their pods).
//! - [`config`]: the `KubeSchedulerConfiguration` file, turned into profiles.
//! - [`framework`]: a profile's filters and weighted scores choose a node, or explain why none.
//! - [`queue`]: active, back-off and unschedulable pods, by priority then age.
//! - [`plugins`]: one filter or score per file (`NodeResourcesFit`, `TaintToleration`, ...).
//! - [`volumes`]: the storage objects volume plugins read, with the bindings being assumed.

pub mod config;
pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod prebind;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod scheduler;
pub use skiff_rules::selector;
pub mod snapshot;
pub mod volumes;
