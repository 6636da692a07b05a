//! The sync loop: watches Services and EndpointSlices, works out the table, and writes it —
//! whole at start and every full-sync period, otherwise only what changed — coalescing
//! changes that arrive together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_client::services::ServiceWatch;
use skiff_client::Client;
use tokio_util::sync::CancellationToken;

use crate::model::{self, ServicePort};
use crate::nft::netlink::{Error, Socket};
use crate::rules::{self, Config, Desired};

/// What one sync did.
#[derive(Debug, Clone)]
pub struct Sync {
    /// A whole-table write (or only the differences).
    pub full: bool,
    /// Messages in the transaction.
    pub messages: usize,
    /// Time spent working out the table and building the transaction.
    pub build: Duration,
    /// Time the kernel took to apply it.
    pub kernel: Duration,
    /// Rules in the table afterwards.
    pub rules: usize,
    /// Elements of its sets and maps afterwards (client-IP affinity entries aside).
    pub elements: usize,
}

/// Programs one node's table.
pub struct Proxier {
    cfg: Config,
    node: String,
    sock: Socket,
    applied: Option<Desired>,
    rules: usize,
}

impl Proxier {
    /// A proxier for node `node`, writing through `sock`.
    pub fn new(cfg: Config, node: &str, sock: Socket) -> Proxier {
        Proxier {
            cfg,
            node: node.to_string(),
            sock,
            applied: None,
            rules: 0,
        }
    }

    /// The service ports of `services` with endpoints from `slices`.
    pub fn ports(
        &self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> Vec<ServicePort> {
        let by_service = skiff_client::services::slices_by_service(slices);
        let mut ports = Vec::new();
        for svc in services {
            let key = (
                svc.metadata.namespace.as_deref().unwrap_or(""),
                svc.metadata.name.as_deref().unwrap_or(""),
            );
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            ports.extend(model::service_ports(svc, slices, &self.node));
        }
        ports
    }

    /// Brings the table to what `ports` need: the whole table when `full` or on the first
    /// sync, else only the differences from the last successful sync.
    pub fn sync(&mut self, ports: &[ServicePort], full: bool) -> Result<Sync, Error> {
        let start = Instant::now();
        let desired = Desired::build(ports);
        let full = full || self.applied.is_none();
        let w = match (&self.applied, full) {
            (Some(old), false) => rules::diff(old, &desired, &self.cfg),
            _ => rules::full(&desired, &self.cfg),
        };
        let messages = w.len();
        let rules = w.rules() + if full { 0 } else { self.rules };
        let build = start.elapsed();
        let t = Instant::now();
        if let Err(e) = w.commit(&self.sock) {
            // What the kernel holds is no longer known: the next sync writes it whole.
            self.applied = None;
            return Err(e);
        }
        let elements = desired.elements();
        self.applied = Some(desired);
        self.rules = rules;
        Ok(Sync {
            full,
            messages,
            build,
            kernel: t.elapsed(),
            rules,
            elements,
        })
    }
}

/// Watches Services and EndpointSlices through `client` and keeps `proxier`'s table in step
/// until `shutdown`; `on_sync` hears of every sync.
pub async fn run(
    client: Client,
    mut proxier: Proxier,
    full_sync_period: Duration,
    shutdown: CancellationToken,
    mut on_sync: impl FnMut(&Result<Sync, Error>),
) {
    let mut watch = ServiceWatch::spawn(client, shutdown.clone());
    watch.ready().await;
    let mut last_full = Instant::now();
    let mut full = true;
    loop {
        let (services, slices) = watch.state();
        let ports = proxier.ports(&services, &slices);
        let result = proxier.sync(&ports, full);
        match &result {
            Ok(s) if s.full => last_full = Instant::now(),
            _ => {}
        }
        full = result.is_err();
        on_sync(&result);
        let until_full = full_sync_period.saturating_sub(last_full.elapsed());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            more = watch.changed() => if !more { return },
            _ = tokio::time::sleep(until_full) => full = true,
            _ = tokio::time::sleep(Duration::from_secs(1)), if result.is_err() => {}
        }
        // Changes that arrive together are written together.
        watch.settle(Duration::from_millis(5)).await;
    }
}
