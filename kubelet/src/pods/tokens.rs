//! Service-account tokens for the pods of this node, as the kubelet's token manager keeps
//! them. A `serviceAccountToken` projection asks for a token through TokenRequest
//! (`serviceaccounts/NAME/token`) under the node's own identity, bound to the pod (so the
//! token dies with it), with the projection's audience and lifetime. Tokens are cached per
//! pod, ServiceAccount, audience and lifetime; one is refreshed once 80% of its lifetime has
//! passed, or once it is older than 24 hours, with a few seconds of jitter so that a node's
//! tokens do not all renew at the same instant.
//!
//! A refresh loop sleeps until the next token is due, renews it, and wakes the pod's worker,
//! which rewrites its projected volumes (atomically) with the cached token. A failed renewal
//! keeps the old token while it is still valid and is tried again shortly. A pod's tokens are
//! forgotten when its worker ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use parking_lot::Mutex;
use skiff_client::{Api, Client, PostParams};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The lifetime a projection asks for when it names none (the API server's default too).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// A token older than this is renewed whatever its lifetime.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Renewals are moved earlier by up to this much, at random.
pub const MAX_JITTER: Duration = Duration::from_secs(10);
/// How soon a failed renewal is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// Why a token could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("failed to fetch token: {0}")]
pub struct TokenError(pub String);

/// What a token is for: the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The pod's namespace (the ServiceAccount's).
    pub namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's UID (the token is bound to it).
    pub pod_uid: String,
    /// The ServiceAccount.
    pub service_account: String,
    /// The audience asked for; empty for the API server's own.
    pub audience: String,
    /// The lifetime asked for, in seconds.
    pub expiration_seconds: i64,
}

impl Key {
    /// The key of a projection of `pod`'s token.
    pub fn for_pod(pod: &Pod, audience: &str, expiration_seconds: Option<i64>) -> Key {
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        Key {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            service_account: sa,
            audience: audience.to_string(),
            expiration_seconds: expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
        }
    }

    /// The TokenRequest that asks for this token, bound to the pod.
    pub fn request(&self) -> TokenRequest {
        TokenRequest {
            spec: TokenRequestSpec {
                audiences: if self.audience.is_empty() {
                    Vec::new()
                } else {
                    vec![self.audience.clone()]
                },
                expiration_seconds: Some(self.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod_name.clone()),
                    uid: Some(self.pod_uid.clone()),
                }),
            },
            ..Default::default()
        }
    }
}

/// A token and when to renew it.
#[derive(Debug, Clone)]
struct Entry {
    token: String,
    expires: SystemTime,
    refresh_at: SystemTime,
    /// Set after a failed renewal: not before then again.
    retry_at: Option<SystemTime>,
}

impl Entry {
    fn due_at(&self) -> SystemTime {
        self.retry_at.unwrap_or(self.refresh_at)
    }
}

/// When a token issued for `ttl` and expiring at `expires` is to be renewed: once 80% of its
/// lifetime has passed, or once it is `MAX_TTL` old, whichever comes first, `jitter` earlier.
pub fn refresh_at(expires: SystemTime, ttl: Duration, jitter: Duration) -> SystemTime {
    let issued = expires.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
    let by_age = issued + MAX_TTL;
    let by_lifetime = expires
        .checked_sub(ttl / 5)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let at = by_age.min(by_lifetime);
    at.checked_sub(jitter).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Asks the API server for a token: `(namespace, service account, request) -> response`.
pub type Issuer = Arc<
    dyn Fn(String, String, TokenRequest) -> BoxFuture<'static, Result<TokenRequest, String>>
        + Send
        + Sync,
>;

/// The node's service-account tokens; cheap to clone.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    issue: Issuer,
    max_jitter: Duration,
    tokens: Mutex<HashMap<Key, Entry>>,
    /// Per pod UID: woken when one of its tokens was renewed.
    pods: Mutex<HashMap<String, Arc<Notify>>>,
    /// Wakes the refresh loop when a token was added (its due time may be the soonest).
    added: Notify,
}

impl Manager {
    /// Requests tokens through `client` (the node's identity).
    pub fn new(client: Client) -> Manager {
        let issue: Issuer = Arc::new(move |ns: String, sa: String, tr: TokenRequest| {
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
            Box::pin(async move {
                api.create_subresource::<TokenRequest, TokenRequest>(
                    "token",
                    &sa,
                    &PostParams::default(),
                    &tr,
                )
                .await
                .map_err(|e| match e {
                    // The server's own words, as the kubelet reports them.
                    skiff_client::Error::Api(a) => a.message,
                    e => e.to_string(),
                })
            })
        });
        Manager::with_issuer(issue, MAX_JITTER)
    }

    /// Requests tokens through `issue`, renewing up to `max_jitter` early.
    pub fn with_issuer(issue: Issuer, max_jitter: Duration) -> Manager {
        Manager {
            inner: Arc::new(Inner {
                issue,
                max_jitter,
                tokens: Mutex::new(HashMap::new()),
                pods: Mutex::new(HashMap::new()),
                added: Notify::new(),
            }),
        }
    }

    /// What wakes pod `uid`'s worker when one of its tokens was renewed.
    pub fn renewals(&self, uid: &str) -> Arc<Notify> {
        self.inner
            .pods
            .lock()
            .entry(uid.to_string())
            .or_default()
            .clone()
    }

    /// The token for `key`: the cached one unless it is due for renewal, else a new one. A
    /// failed renewal falls back on the cached token while it is still valid.
    pub async fn get(&self, key: &Key) -> Result<String, TokenError> {
        let now = SystemTime::now();
        let cached = self.inner.tokens.lock().get(key).cloned();
        if let Some(e) = &cached {
            if now < e.refresh_at {
                return Ok(e.token.clone());
            }
        }
        match self.fetch(key).await {
            Ok(e) => {
                let token = e.token.clone();
                self.inner.tokens.lock().insert(key.clone(), e);
                self.inner.added.notify_one();
                Ok(token)
            }
            Err(err) => match cached {
                Some(e) if now < e.expires => {
                    tracing::warn!(pod = %format!("{}/{}", key.namespace, key.pod_name), error = %err, "renewing a service-account token; the current one is still valid");
                    Ok(e.token)
                }
                _ => Err(err),
            },
        }
    }

    /// Forgets every token of pod `uid`.
    pub fn forget(&self, uid: &str) {
        self.inner.tokens.lock().retain(|k, _| k.pod_uid != uid);
        self.inner.pods.lock().remove(uid);
    }

    /// How many tokens are cached (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.tokens.lock().len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn fetch(&self, key: &Key) -> Result<Entry, TokenError> {
        let tr = (self.inner.issue)(
            key.namespace.clone(),
            key.service_account.clone(),
            key.request(),
        )
        .await
        .map_err(TokenError)?;
        let status = tr
            .status
            .ok_or_else(|| TokenError("the TokenRequest came back without a status".into()))?;
        let secs = status.expiration_timestamp.0.as_second();
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        // The lifetime the server granted (it may differ from what was asked).
        let ttl = tr
            .spec
            .expiration_seconds
            .unwrap_or(key.expiration_seconds)
            .max(0) as u64;
        Ok(Entry {
            token: status.token,
            expires,
            refresh_at: refresh_at(expires, Duration::from_secs(ttl), self.jitter()),
            retry_at: None,
        })
    }

    fn jitter(&self) -> Duration {
        if self.inner.max_jitter.is_zero() {
            return Duration::ZERO;
        }
        self.inner.max_jitter.mul_f64(rand::random::<f64>())
    }

    /// The soonest renewal due, if any token is cached.
    fn next_due(&self) -> Option<SystemTime> {
        self.inner.tokens.lock().values().map(Entry::due_at).min()
    }

    /// Renews every token that is due now, waking the workers of the pods whose tokens
    /// changed.
    async fn renew_due(&self) {
        let now = SystemTime::now();
        let due: Vec<Key> = self
            .inner
            .tokens
            .lock()
            .iter()
            .filter(|(_, e)| e.due_at() <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let result = self.fetch(&key).await;
            let mut tokens = self.inner.tokens.lock();
            // Forgotten meanwhile (the pod went away): keep it forgotten.
            let Some(entry) = tokens.get_mut(&key) else {
                continue;
            };
            match result {
                Ok(e) => {
                    *entry = e;
                    drop(tokens);
                    tracing::debug!(pod = %format!("{}/{}", key.namespace, key.pod_name), service_account = %key.service_account, "renewed a service-account token");
                    if let Some(n) = self.inner.pods.lock().get(&key.pod_uid) {
                        n.notify_one();
                    }
                }
                Err(err) => {
                    tracing::warn!(pod = %format!("{}/{}", key.namespace, key.pod_name), error = %err, "renewing a service-account token");
                    if SystemTime::now() >= entry.expires {
                        // Nothing valid to keep: the next volume sync asks afresh.
                        tokens.remove(&key);
                    } else {
                        entry.retry_at = Some(SystemTime::now() + RETRY);
                    }
                }
            }
        }
    }

    /// Renews tokens as they fall due until `shutdown`; sleeps until the next one is due.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            let sleep = match self.next_due() {
                Some(at) => at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
                // Nothing cached: only an added token wakes the loop.
                None => Duration::from_secs(24 * 3600),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.added.notified() => continue,
                _ = tokio::time::sleep(sleep) => {}
            }
            self.renew_due().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::TokenRequestStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renewed_at_80_percent_of_the_lifetime() {
        // An hour-long token issued at t=100_000 is renewed 48 minutes in.
        let exp = at(100_000 + 3600);
        assert_eq!(refresh_at(exp, HOUR, Duration::ZERO), at(100_000 + 2880));
        // The jitter moves it earlier, never later.
        assert_eq!(
            refresh_at(exp, HOUR, Duration::from_secs(7)),
            at(100_000 + 2873)
        );
        // A 10-minute token: after 8 minutes.
        assert_eq!(
            refresh_at(at(1_000 + 600), Duration::from_secs(600), Duration::ZERO),
            at(1_000 + 480)
        );
    }

    #[test]
    fn long_tokens_are_renewed_after_a_day() {
        // A 7-day token (80% would be 5.6 days) is renewed once a day old.
        let ttl = Duration::from_secs(7 * 24 * 3600);
        let issued = 1_000_000;
        assert_eq!(
            refresh_at(at(issued) + ttl, ttl, Duration::ZERO),
            at(issued + 24 * 3600)
        );
        // 30 hours: 80% is 24 h exactly; 25 hours: 80% (20 h) comes first.
        let ttl = Duration::from_secs(25 * 3600);
        assert_eq!(
            refresh_at(at(issued) + ttl, ttl, Duration::ZERO),
            at(issued + 20 * 3600)
        );
    }

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": {"serviceAccountName": "robot", "containers": []}
        }))
        .unwrap()
    }

    /// An issuer that counts calls and grants `ttl`-second tokens named `t<n>`; `fail` makes
    /// it refuse.
    fn issuer(
        ttl: i64,
        calls: Arc<AtomicUsize>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        seen: Arc<Mutex<Vec<(String, String, TokenRequest)>>>,
    ) -> Issuer {
        Arc::new(move |ns, sa, tr: TokenRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let fail = fail.load(Ordering::SeqCst);
            seen.lock().push((ns, sa, tr.clone()));
            Box::pin(async move {
                if fail {
                    return Err("the server is away".to_string());
                }
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let mut out = tr;
                out.spec.expiration_seconds = Some(ttl);
                out.status = Some(TokenRequestStatus {
                    token: format!("t{n}"),
                    expiration_timestamp: Time(Timestamp::from_second(now + ttl).unwrap()),
                });
                Ok(out)
            })
        })
    }

    #[tokio::test]
    async fn tokens_are_cached_per_pod_account_audience_and_lifetime() {
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let m = Manager::with_issuer(
            issuer(3600, calls.clone(), fail.clone(), seen.clone()),
            MAX_JITTER,
        );
        let p = pod("u1");
        let k = Key::for_pod(&p, "vault", Some(7200));
        assert_eq!(m.get(&k).await.unwrap(), "t1");
        assert_eq!(m.get(&k).await.unwrap(), "t1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // The request: the pod's account, bound to the pod, the audience and lifetime.
        let (ns, sa, tr) = seen.lock()[0].clone();
        assert_eq!((ns.as_str(), sa.as_str()), ("ns", "robot"));
        assert_eq!(tr.spec.audiences, vec!["vault".to_string()]);
        assert_eq!(tr.spec.expiration_seconds, Some(7200));
        let b = tr.spec.bound_object_ref.unwrap();
        assert_eq!(
            (b.kind.as_deref(), b.name.as_deref(), b.uid.as_deref()),
            (Some("Pod"), Some("p"), Some("u1"))
        );
        // Another audience, another lifetime, another pod: each its own token.
        assert_eq!(m.get(&Key::for_pod(&p, "", None)).await.unwrap(), "t2");
        let (_, _, tr) = seen.lock()[1].clone();
        assert!(tr.spec.audiences.is_empty());
        assert_eq!(tr.spec.expiration_seconds, Some(3600));
        assert_eq!(
            m.get(&Key::for_pod(&p, "vault", Some(600))).await.unwrap(),
            "t3"
        );
        assert_eq!(
            m.get(&Key::for_pod(&pod("u2"), "vault", Some(7200)))
                .await
                .unwrap(),
            "t4"
        );
        assert_eq!(m.len(), 4);
        m.forget("u1");
        assert_eq!(m.len(), 1);
        // A refusal with nothing cached is an error naming the cause.
        fail.store(true, Ordering::SeqCst);
        let e = m.get(&k).await.unwrap_err();
        assert_eq!(e.to_string(), "failed to fetch token: the server is away");
    }

    #[tokio::test]
    async fn a_due_token_is_renewed_and_the_pod_woken() {
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        // 2-second tokens: due 1.6 s after they are issued.
        let m = Manager::with_issuer(issuer(2, calls.clone(), fail.clone(), seen), Duration::ZERO);
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let m = m.clone();
            let s = shutdown.clone();
            async move { m.run(s).await }
        });
        let k = Key::for_pod(&pod("u1"), "", Some(2));
        let woken = m.renewals("u1");
        assert_eq!(m.get(&k).await.unwrap(), "t1");
        woken.notified().await;
        // The renewed token is what the volume sync now reads, without another request.
        assert_eq!(m.get(&k).await.unwrap(), "t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A failed renewal keeps the valid token.
        fail.store(true, Ordering::SeqCst);
        let cached = m.inner.tokens.lock().get(&k).cloned().unwrap();
        m.inner.tokens.lock().get_mut(&k).unwrap().refresh_at = SystemTime::UNIX_EPOCH;
        assert_eq!(m.get(&k).await.unwrap(), cached.token);
        shutdown.cancel();
        run.await.unwrap();
    }
}
