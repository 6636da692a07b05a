//! The sync loop: watches Services and EndpointSlices, works out the table, and writes it —
//! whole at start and every full-sync period, otherwise only the services that changed —
//! coalescing changes that arrive together.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_client::reflector::ObjectKey;
use skiff_client::{watcher, Api, Client};
use skiff_rules::Backoff;
use tokio_util::sync::CancellationToken;

use crate::model::ServicePort;
use crate::nft::netlink::{self, Socket};
use crate::rules::{self, Config, Desired, Pick};
use crate::tracker::{Pending, Tracker};

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

/// A sync that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused the nf_tables batch, or netlink failed.
    #[error(transparent)]
    Nft(#[from] netlink::Error),
    /// iptables-restore refused the rules, or could not be run.
    #[error("{0}")]
    Iptables(String),
}

/// What writes the rules: the nftables table ([`Proxier`]) or iptables chains
/// ([`crate::iptables::Iptables`]).
pub trait Program: Send {
    /// The node it programs.
    fn node(&self) -> &str;
    /// Whether what the kernel holds is known (a full write succeeded, and nothing failed
    /// since).
    fn written(&self) -> bool;
    /// Writes everything for `services` (each with its ports).
    fn full(&mut self, services: Vec<(ObjectKey, Vec<ServicePort>)>) -> Result<Sync, Error>;
    /// Writes what changed for `changes` (services with their new ports; none when a
    /// service is gone).
    fn update(&mut self, changes: Vec<(ObjectKey, Vec<ServicePort>)>) -> Result<Sync, Error>;
}

/// Brings `program`'s rules in step with `tracker`: everything when `full`, when the watches
/// listed afresh, or when what the kernel holds is not known; else only the services in
/// `pending`.
pub fn sync(
    program: &mut dyn Program,
    tracker: &Tracker,
    pending: Pending,
    full: bool,
) -> Result<Sync, Error> {
    if full || pending.all || !program.written() {
        program.full(tracker.all().collect())
    } else {
        let changes: Vec<_> = pending
            .services
            .into_iter()
            .map(|k| {
                let ports = tracker.ports(&k);
                (k, ports)
            })
            .collect();
        program.update(changes)
    }
}

/// Programs one node's nftables table.
pub struct Proxier {
    cfg: Config,
    node: String,
    sock: Socket,
    /// The ports of each service as last written; `None` when what the kernel holds is
    /// not known (nothing written yet, or a write failed).
    applied: Option<HashMap<ObjectKey, Vec<ServicePort>>>,
    /// The pick chains in the table.
    chains: BTreeSet<Pick>,
    /// `hairpin` elements, with the number of services that need each.
    hairpin: HashMap<Vec<u8>, u32>,
    rules: usize,
    /// Elements other than `hairpin`'s.
    elements: usize,
}

impl Proxier {
    /// A proxier for node `node`, writing through `sock`.
    pub fn new(cfg: Config, node: &str, sock: Socket) -> Proxier {
        Proxier {
            cfg,
            node: node.to_string(),
            sock,
            applied: None,
            chains: BTreeSet::new(),
            hairpin: HashMap::new(),
            rules: 0,
            elements: 0,
        }
    }

    fn done(&self, full: bool, messages: usize, build: Duration, kernel: Duration) -> Sync {
        Sync {
            full,
            messages,
            build,
            kernel,
            rules: self.rules,
            elements: self.elements + self.hairpin.len(),
        }
    }
}

impl Program for Proxier {
    fn node(&self) -> &str {
        &self.node
    }

    fn written(&self) -> bool {
        self.applied.is_some()
    }

    /// The whole table for `services` (each with its ports), in one transaction.
    fn full(&mut self, services: Vec<(ObjectKey, Vec<ServicePort>)>) -> Result<Sync, Error> {
        let start = Instant::now();
        self.applied = None;
        let mut d = Desired::default();
        let mut applied = HashMap::new();
        let mut hairpin: HashMap<Vec<u8>, u32> = HashMap::new();
        for (key, ports) in services {
            if ports.is_empty() {
                continue;
            }
            for h in rules::hairpin_keys(&ports) {
                *hairpin.entry(h).or_default() += 1;
            }
            d.add(&ports);
            applied.insert(key, ports);
        }
        let w = rules::full(&d, &self.cfg);
        let (messages, rules) = (w.len(), w.rules());
        let build = start.elapsed();
        let t = Instant::now();
        w.commit(&self.sock)?;
        let kernel = t.elapsed();
        self.elements = d.elements() - d.hairpin.len();
        self.chains = std::mem::take(&mut d.chains);
        drop(d);
        self.hairpin = hairpin;
        self.applied = Some(applied);
        self.rules = rules;
        Ok(self.done(true, messages, build, kernel))
    }

    /// The differences for `changes`. What was written before must be known (a successful
    /// full write first); when it is not, the changes are written as if nothing else were
    /// there.
    fn update(&mut self, changes: Vec<(ObjectKey, Vec<ServicePort>)>) -> Result<Sync, Error> {
        let start = Instant::now();
        let mut applied = self.applied.take().unwrap_or_default();
        let (mut old, mut new) = (Desired::default(), Desired::default());
        // Hairpin elements touched, and whether the table held each before.
        let mut touched: HashMap<Vec<u8>, bool> = HashMap::new();
        for (key, ports) in changes {
            let before = applied.remove(&key).unwrap_or_default();
            if before == ports {
                if !ports.is_empty() {
                    applied.insert(key, ports);
                }
                continue;
            }
            for (h, up) in rules::hairpin_keys(&before)
                .into_iter()
                .map(|h| (h, false))
                .chain(rules::hairpin_keys(&ports).into_iter().map(|h| (h, true)))
            {
                let count = self.hairpin.entry(h.clone()).or_default();
                touched.entry(h).or_insert(*count > 0);
                if up {
                    *count += 1;
                } else {
                    *count = count.saturating_sub(1);
                }
            }
            old.add(&before);
            new.add(&ports);
            if !ports.is_empty() {
                applied.insert(key, ports);
            }
        }
        self.elements = (self.elements + new.elements() - new.hairpin.len())
            .saturating_sub(old.elements() - old.hairpin.len());
        // Hairpin elements come and go with the first service that needs them and the last.
        old.hairpin.clear();
        new.hairpin.clear();
        for (h, was) in touched {
            let now = self.hairpin.get(&h).is_some_and(|c| *c > 0);
            if !now {
                self.hairpin.remove(&h);
            }
            if was {
                old.hairpin.insert(h.clone());
            }
            if now {
                new.hairpin.insert(h);
            }
        }
        // Chains stay once written (until the next full write): only new ones are added.
        old.chains = self.chains.clone();
        let w = rules::diff(&old, &new, &self.cfg);
        let (messages, rules) = (w.len(), w.rules());
        let build = start.elapsed();
        let t = Instant::now();
        if !w.is_empty() {
            // On failure what the kernel holds is no longer known: the next sync writes it
            // whole.
            w.commit(&self.sock)?;
        }
        let kernel = t.elapsed();
        self.chains.extend(new.chains);
        self.rules += rules;
        self.applied = Some(applied);
        Ok(self.done(false, messages, build, kernel))
    }
}

/// Watches Services and EndpointSlices through `client` and keeps `program`'s rules in step
/// until `shutdown`; `on_sync` hears of every sync.
pub async fn run(
    client: Client,
    mut program: Box<dyn Program>,
    full_sync_period: Duration,
    shutdown: CancellationToken,
    mut on_sync: impl FnMut(&Result<Sync, Error>),
) {
    let config = watcher::Config::default().strip_managed_fields();
    let services = watcher(Api::<Service>::all(client.clone()), config.clone())
        .map(|e| Ev::Service(Box::new(e)));
    let slices = watcher(Api::<EndpointSlice>::all(client), config).map(|e| Ev::Slice(Box::new(e)));
    let mut events = futures::stream::select(services.boxed(), slices.boxed());
    let mut tracker = Tracker::new(program.node());
    while !tracker.ready() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.next() => match ev {
                Some(ev) => take_in(&mut tracker, ev),
                None => return,
            },
        }
    }
    let mut last_full = Instant::now();
    let mut full = true;
    loop {
        let pending = tracker.take();
        let result = sync(program.as_mut(), &tracker, pending, full);
        match &result {
            Ok(s) if s.full => last_full = Instant::now(),
            _ => {}
        }
        full = result.is_err();
        on_sync(&result);
        let until_full = full_sync_period.saturating_sub(last_full.elapsed());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.next() => match ev {
                Some(ev) => take_in(&mut tracker, ev),
                None => return,
            },
            _ = tokio::time::sleep(until_full) => full = true,
            _ = tokio::time::sleep(RETRY.delay(0)), if result.is_err() => {}
        }
        // Changes that arrive together are written together.
        while let Ok(Some(ev)) = tokio::time::timeout(SETTLE, events.next()).await {
            take_in(&mut tracker, ev);
        }
    }
}

/// A failed write is tried again this long after (unless a change comes first).
const RETRY: Backoff = Backoff::constant(Duration::from_secs(1));

/// How long a sync waits for more changes after one arrives.
const SETTLE: Duration = Duration::from_millis(5);

enum Ev {
    Service(Box<skiff_client::Result<watcher::Event<Service>>>),
    Slice(Box<skiff_client::Result<watcher::Event<EndpointSlice>>>),
}

fn take_in(tracker: &mut Tracker, ev: Ev) {
    match ev {
        Ev::Service(ev) => match *ev {
            Ok(ev) => tracker.service_event(ev),
            Err(e) => tracing::warn!(error = %e, "watching Services failed; retrying"),
        },
        Ev::Slice(ev) => match *ev {
            Ok(ev) => tracker.slice_event(ev),
            Err(e) => tracing::warn!(error = %e, "watching EndpointSlices failed; retrying"),
        },
    }
}
