//! Skiff in one command: `skiff server` runs a whole cluster on this machine, `skiff agent`
//! joins another machine to it as a node, and `skiff check` says what the machine lacks.

pub mod addons;
pub mod agent;
pub mod images;
pub mod join;
pub mod node;
pub mod preflight;
pub mod secrets;
pub mod server;
pub mod supervisor;

/// Makes ring rustls' process-wide crypto provider (the HTTP clients here are built without a
/// default one); a second call changes nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
