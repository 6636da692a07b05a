//! Skiff's client SDK: talk to a Skiff API server over gRPC with Kubernetes' own types.
//!
//! - [`Client`]: the connection (from a kubeconfig, TLS with the cluster CA, client
//!   certificate or bearer token), with client-side rate limits, tracing spans and metrics.
//! - [`Api`]: typed get, list, create, replace, patch, delete, watch and bind for every
//!   k8s-openapi type the server serves, for custom resource types declared with
//!   [`custom_resource!`] ([`crd`]), and for resources named at run time, whose objects are
//!   [`DynamicObject`]s ([`dynamic`]). What `Api` and the rest need of a type is
//!   [`Resource`].
//! - [`watcher()`]: list-then-watch that resumes after disconnects and re-lists on 410 Gone.
//! - [`reflector`]: an indexed cache fed by a watcher; [`informer`]: shared informers.
//! - [`controller`]: a de-duplicating, rate-limited work queue and controller runner.
//! - [`leader`]: leader election on Leases.
//! - [`selector`]: label selectors matched against labels.
//! - [`untyped`]: lists of a resource known only by group and name, as JSON.
//! - [`webhook`]: admission and conversion webhook servers (review types, handler traits,
//!   an HTTPS server with its certificate from a Secret).
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::Pod;
//! use skiff_client::{Api, Client, ListParams};
//!
//! # async fn run() -> skiff_client::Result<()> {
//! let client = Client::try_default()?;
//! let pods: Api<Pod> = Api::namespaced(client, "default");
//! for p in pods.list(&ListParams::default()).await?.items {
//!     println!("{}", p.metadata.name.unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod api;
pub mod backoff;
pub mod client;
pub mod config;
pub mod controller;
pub mod crd;
pub mod dynamic;
pub mod error;
pub mod events;
pub mod informer;
pub mod leader;
pub mod reflector;
pub mod resource;
pub mod selector;
pub mod services;
pub mod time;
pub mod untyped;
pub mod watcher;
pub mod webhook;

pub use api::{
    Api, DeleteParams, Deleted, ListParams, Object, ObjectList, Patch, PatchParams, PostParams,
    PropagationPolicy, WatchEvent, WatchParams,
};
pub use client::Client;
pub use config::Config;
pub use dynamic::{ApiResource, DynamicObject};
pub use error::{ApiError, Error, Result};
pub use resource::Resource;
pub use watcher::watcher;

/// Kubeconfig files, read and built (the types `Config` reads), from `skiff-rules`.
pub use skiff_rules::kubeconfig;

/// The gRPC contract's generated types, for callers who need the raw messages.
pub use skiff_proto::v1 as proto;
