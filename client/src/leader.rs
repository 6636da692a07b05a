//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the holder
//! renews the lease every retry period; a candidate takes it over once it has seen the same
//! record unchanged for a whole lease duration (judged by its own clock, so clock skew
//! between machines does not matter); a leader that cannot renew within the renew deadline
//! stops leading; a leader that shuts down releases the lease so another takes over at once.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, PostParams};
use crate::client::Client;
use crate::error::{Error, Result};

/// Where and how to elect a leader.
#[derive(Debug, Clone)]
pub struct Config {
    /// The lease's namespace (components use `kube-system`).
    pub namespace: String,
    /// The lease's name (the component's, e.g. `kube-scheduler`).
    pub name: String,
    /// This candidate's identity, unique among candidates (host name plus a random suffix).
    pub identity: String,
    /// How long a lease holds without renewal (Kubernetes: 15 s).
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it gives up (Kubernetes: 10 s).
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews (Kubernetes: 2 s).
    pub retry_period: Duration,
}

impl Config {
    /// A configuration with Kubernetes' default timings.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Config {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// How a term of leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Shutdown was asked for; the lease was released.
    Shutdown,
    /// Renewal failed for the whole renew deadline (or another candidate took the lease):
    /// the work was stopped. Kubernetes components exit at this point.
    Lost,
}

/// Competes for a lease and runs work while holding it.
pub struct LeaderElector {
    api: Api<Lease>,
    config: Config,
    /// The record last seen and when this candidate first saw it.
    observed: Option<(Option<LeaseSpec>, Option<String>, Instant)>,
}

impl LeaderElector {
    /// An elector on the lease `config.namespace/config.name`.
    pub fn new(client: Client, config: Config) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Waits to become leader, then runs `lead` with a token that is cancelled when
    /// leadership is lost or `shutdown` is asked for, and returns once `lead` has returned
    /// (the lease released on shutdown). Returns early with [`Outcome::Shutdown`] if
    /// shutdown comes before leadership.
    pub async fn run<F, Fut>(mut self, shutdown: CancellationToken, lead: F) -> Outcome
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "acquiring the lease failed")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Outcome::Shutdown,
                _ = tokio::time::sleep(crate::backoff::jitter(self.config.retry_period)) => {}
            }
        }
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
        let token = shutdown.child_token();
        let work = tokio::spawn(lead(token.clone()));
        let mut last_renew = Instant::now();
        let outcome = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Outcome::Shutdown,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
            let attempt = tokio::time::timeout(
                self.config
                    .renew_deadline
                    .saturating_sub(last_renew.elapsed()),
                self.try_acquire_or_renew(),
            )
            .await;
            match attempt {
                Ok(Ok(true)) => last_renew = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.config.name, "another candidate holds the lease");
                    break Outcome::Lost;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "renewing the lease failed")
                }
                Err(_) => {}
            }
            if last_renew.elapsed() >= self.config.renew_deadline {
                tracing::warn!(lease = %self.config.name, "could not renew within the renew deadline");
                break Outcome::Lost;
            }
        };
        token.cancel();
        let _ = work.await;
        if outcome == Outcome::Shutdown {
            if let Err(e) = self.release().await {
                tracing::warn!(lease = %self.config.name, error = %e, "releasing the lease failed");
            } else {
                tracing::info!(lease = %self.config.name, "released the lease");
            }
        } else {
            tracing::warn!(lease = %self.config.name, identity = %self.config.identity, "lost leadership");
        }
        outcome
    }

    fn now() -> MicroTime {
        crate::time::now_micro()
    }

    fn seconds(d: Duration) -> i32 {
        i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
    }

    /// One attempt: true when this candidate holds the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let me = self.config.identity.clone();
        let current = match self.api.get_opt(&self.config.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me),
                        lease_duration_seconds: Some(Self::seconds(self.config.lease_duration)),
                        acquire_time: Some(Self::now()),
                        renew_time: Some(Self::now()),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.is_already_exists() => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        // Track when this record was first seen, by our own clock.
        let rv = current.metadata.resource_version.clone();
        let changed = match &self.observed {
            Some((s, v, _)) => s.as_ref() != Some(&spec) || *v != rv,
            None => true,
        };
        if changed {
            self.observed = Some((Some(spec.clone()), rv, Instant::now()));
        }
        let seen_at = self
            .observed
            .as_ref()
            .map(|o| o.2)
            .unwrap_or_else(Instant::now);
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or(self.config.lease_duration);
        let mine = holder.as_deref() == Some(me.as_str());
        if !mine && holder.is_some() && seen_at.elapsed() < duration {
            return Ok(false);
        }
        let mut next = spec.clone();
        next.holder_identity = Some(me);
        next.lease_duration_seconds = Some(Self::seconds(self.config.lease_duration));
        next.renew_time = Some(Self::now());
        if !mine {
            next.acquire_time = Some(Self::now());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        let mut lease = current;
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = Some((
                    l.spec.clone(),
                    l.metadata.resource_version.clone(),
                    Instant::now(),
                ));
                Ok(true)
            }
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up so another candidate can take it at once.
    async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(Self::now());
        spec.acquire_time = Some(Self::now());
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Err(Error::Invalid(
                "the lease changed while being released".into(),
            )),
            Err(e) => Err(e),
        }
    }
}

/// A unique identity for this process: the host name and a random suffix.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}_{:08x}", rand::random::<u32>())
}
