//! The audit log, as kube-apiserver keeps it: who did what, when, from where, and with what
//! outcome, for every request through either door.
//!
//! An [`Auditor`] exists only when both a policy (`--audit-policy-file`, [`policy`]) and a
//! backend (`--audit-log-path`, [`backend`]) are configured; without one the doors build no
//! event and encode nothing. For each request the door asks [`Auditor::begin`] once it knows
//! who asks and what (after authentication, before impersonation and authorization, as in
//! kube-apiserver); the policy's level decides whether a [`Recorder`] comes back. The door
//! then tells the recorder what happens: the impersonated user, the authorizer's decision,
//! the request's and response's bodies, the response starting (long-running requests) and
//! completing, or a panic. Each stage becomes one `audit.k8s.io/v1` [`Event`] line.
//!
//! Credentials never reach the log: requests on `secrets` are recorded at `Metadata` at most
//! whatever the policy says, the token of a TokenRequest's response
//! (`serviceaccounts/token`, `status.token`) and of a TokenReview (`spec.token`) are removed
//! from recorded bodies, and no request header but the user agent is recorded.

pub mod backend;
pub mod event;
pub mod policy;
pub mod rotate;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use parking_lot::Mutex;
use serde_json::Value;

pub use backend::{Batch, Destination, Mode};
pub use event::{Event, Format, ObjectRef, ResponseStatus, User};
pub use policy::{Level, Policy, Stage};

use crate::auth::UserInfo;
use crate::error::{ApiError, Error};
use crate::metrics::Metrics;

/// The request header a client may name its audit id with, and the response header the id is
/// sent back in (kube-apiserver's `Audit-ID`).
pub const AUDIT_ID_HEADER: &str = "audit-id";
/// The annotation of the authorizer's decision (`allow` or `forbid`).
pub const DECISION: &str = "authorization.k8s.io/decision";
/// The annotation of the authorizer's reason.
pub const REASON: &str = "authorization.k8s.io/reason";
/// The annotation on an event whose bodies were dropped to fit the size limit.
pub const TRUNCATED: &str = "audit.k8s.io/truncated";

/// The address a connection came from; the server puts it in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// The audit flags (`--audit-policy-file`, `--audit-log-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The policy file.
    pub policy_file: Option<PathBuf>,
    /// The log: a file, or `-` for standard output.
    pub log_path: Option<String>,
    /// Days backups are kept (0: forever).
    pub max_age_days: u64,
    /// Backups kept (0: all).
    pub max_backups: usize,
    /// Megabytes before the file is rotated (0: 100).
    pub max_size_mb: u64,
    /// How events are written.
    pub format: Format,
    /// Whether requests wait for their events to be written.
    pub mode: Mode,
    /// The buffer and batches of batch mode.
    pub batch: Batch,
    /// Whether oversized events are truncated (`--audit-log-truncate-enabled`).
    pub truncate: bool,
    /// The largest event written when truncating (`--audit-log-truncate-max-event-size`).
    pub max_event_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy_file: None,
            log_path: None,
            max_age_days: 0,
            max_backups: 0,
            max_size_mb: 0,
            format: Format::Json,
            mode: Mode::Blocking,
            batch: Batch::default(),
            truncate: false,
            max_event_size: 100 * 1024,
        }
    }
}

/// Why auditing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The policy file could not be read or is not a valid policy.
    #[error("loading audit policy file: {0}")]
    Policy(String),
    /// The log file could not be opened.
    #[error("opening the audit log {path}: {source}")]
    Log {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A flag's value cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// The auditor these flags describe: `None` unless both a policy and a log are given.
    /// A bad policy, an unwritable log or impossible batch sizes are errors.
    pub fn build(&self, metrics: Arc<Metrics>) -> Result<Option<Arc<Auditor>>, ConfigError> {
        let policy = match &self.policy_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Policy(format!(
                        "failed to read file path {:?}: {e}",
                        path.display().to_string()
                    ))
                })?;
                let p = Policy::parse(&text).map_err(|e| {
                    ConfigError::Policy(format!("{e}: from file {}", path.display()))
                })?;
                Some(p)
            }
            None => None,
        };
        let Some(log_path) = self.log_path.as_deref().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        if self.mode == Mode::Batch {
            if self.batch.buffer_size == 0 {
                return Err(ConfigError::Invalid(
                    "invalid audit batch log buffer size 0, must be a positive number".into(),
                ));
            }
            if self.batch.max_size == 0 {
                return Err(ConfigError::Invalid(
                    "invalid audit batch log max batch size 0, must be a positive number".into(),
                ));
            }
        }
        if self.truncate && self.max_event_size == 0 {
            return Err(ConfigError::Invalid(
                "invalid audit truncate log max event size 0, must be a positive number".into(),
            ));
        }
        let Some(policy) = policy else {
            tracing::info!(
                "No audit policy file provided, no events will be recorded for log backend"
            );
            return Ok(None);
        };
        let dest = if log_path == "-" {
            Destination::Stdout
        } else {
            Destination::File(
                PathBuf::from(log_path),
                rotate::Limits {
                    max_size_mb: self.max_size_mb,
                    max_backups: self.max_backups,
                    max_age_days: self.max_age_days,
                },
            )
        };
        let backend = backend::Backend::open(&dest, self.mode, self.batch, metrics.clone())
            .map_err(|source| ConfigError::Log {
                path: log_path.to_string(),
                source,
            })?;
        Ok(Some(Arc::new(Auditor {
            policy,
            backend,
            format: self.format,
            max_event_size: self.truncate.then_some(self.max_event_size),
            metrics,
        })))
    }
}

/// The policy and the backend: begins each request's record.
pub struct Auditor {
    policy: Policy,
    backend: backend::Backend,
    format: Format,
    max_event_size: Option<usize>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("rules", &self.policy.rules.len())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// What a door knows of a request besides its attributes.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The audit id.
    pub audit_id: String,
    /// When the request arrived.
    pub received: DateTime<Utc>,
    /// The path and query (REST) or the gRPC method's path.
    pub request_uri: String,
    /// The user agent.
    pub user_agent: String,
    /// The client's address and those of proxies before it.
    pub source_ips: Vec<String>,
}

impl Origin {
    /// From a request's headers (or gRPC metadata) and its connection.
    pub fn new(
        audit_id: &str,
        received: DateTime<Utc>,
        request_uri: &str,
        headers: &HeaderMap,
        peer: Option<Peer>,
    ) -> Origin {
        Origin {
            audit_id: audit_id.to_string(),
            received,
            request_uri: request_uri.to_string(),
            user_agent: user_agent(headers),
            source_ips: source_ips(headers, peer.map(|p| p.0.ip())),
        }
    }
}

/// A request's id: the client's `Audit-ID` header if it sent one, else a new UUID.
pub fn audit_id(headers: &HeaderMap) -> String {
    headers
        .get(AUDIT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 1024)
        .map(String::from)
        .unwrap_or_else(new_id)
}

fn new_id() -> String {
    uuid::Builder::from_random_bytes(rand::random::<[u8; 16]>())
        .into_uuid()
        .to_string()
}

/// The user agent, cut to 1024 bytes as kube-apiserver cuts it.
fn user_agent(headers: &HeaderMap) -> String {
    let ua = headers
        .get(http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if ua.len() <= 1024 {
        return ua;
    }
    let mut end = 1024;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...TRUNCATED", &ua[..end])
}

/// kube's `SourceIPs`: the addresses of `X-Forwarded-For`, then `X-Real-Ip` if not among
/// them, then the connection's peer unless it is already the last.
pub fn source_ips(headers: &HeaderMap, peer: Option<IpAddr>) -> Vec<String> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(v) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        ips.extend(v.split(',').filter_map(|p| p.trim().parse::<IpAddr>().ok()));
    }
    if let Some(ip) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if let Some(p) = peer {
        if ips.last() != Some(&p) {
            ips.push(p);
        }
    }
    ips.iter().map(IpAddr::to_string).collect()
}

/// kube-apiserver's long-running requests: watches, proxies, and the streaming subresources.
pub fn long_running(verb: &str, subresource: &str) -> bool {
    matches!(verb, "watch" | "proxy")
        || matches!(
            subresource,
            "attach" | "exec" | "proxy" | "log" | "portforward"
        )
}

/// What of a request's bodies may be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sensitive {
    /// Nothing special.
    No,
    /// A Secret: nothing beyond metadata.
    Secret,
    /// A TokenRequest: the response's `status.token` is removed.
    TokenRequest,
    /// A TokenReview: `spec.token` is removed from both bodies.
    TokenReview,
}

impl Sensitive {
    fn of(a: &policy::Attributes<'_>) -> Sensitive {
        if !a.resource_request {
            return Sensitive::No;
        }
        match (a.api_group, a.resource, a.subresource) {
            ("", "secrets", _) => Sensitive::Secret,
            ("", "serviceaccounts", "token") => Sensitive::TokenRequest,
            ("authentication.k8s.io", "tokenreviews", _) => Sensitive::TokenReview,
            _ => Sensitive::No,
        }
    }

    /// The level a request is recorded at: Secrets at `Metadata` at most.
    fn cap(self, level: Level) -> Level {
        match self {
            Sensitive::Secret => level.min(Level::Metadata),
            _ => level,
        }
    }

    /// Removes what must not be recorded from a body.
    fn redact(self, v: &mut Value, response: bool) {
        let field = match self {
            Sensitive::TokenRequest if response => "status",
            Sensitive::TokenReview => "spec",
            _ => return,
        };
        if let Some(m) = v.get_mut(field).and_then(Value::as_object_mut) {
            m.remove("token");
        }
    }
}

/// Removes `metadata.managedFields` from an object, a list's items, or a Table's rows.
fn drop_managed_fields(v: &mut Value) {
    fn one(o: &mut Value) {
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
    }
    one(v);
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(one);
    }
    if let Some(rows) = v.get_mut("rows").and_then(Value::as_array_mut) {
        for r in rows {
            if let Some(o) = r.get_mut("object") {
                one(o);
            }
        }
    }
}

/// A request refused because its first event could not be written (`blocking-strict`).
pub fn failed_to_store() -> Error {
    Error::from(ApiError {
        code: 500,
        reason: "InternalError",
        message: "Internal error occurred: failed to store audit event".into(),
        details: None,
    })
}

impl Auditor {
    /// Starts the record of a request: the policy's level for it (counted in
    /// `apiserver_audit_level_total`) and, unless that is `None`, a recorder whose
    /// `RequestReceived` event is already sent. `Err` when a `blocking-strict` backend could
    /// not write it: the request must then be refused ([`failed_to_store`]).
    pub fn begin(
        self: &Arc<Self>,
        attrs: &policy::Attributes<'_>,
        api_version: &str,
        origin: Origin,
    ) -> Result<Option<Arc<Recorder>>, Error> {
        let decision = self.policy.evaluate(attrs);
        self.metrics.audit_level(decision.level.as_str());
        if decision.level == Level::None {
            return Ok(None);
        }
        let sensitive = Sensitive::of(attrs);
        let level = sensitive.cap(decision.level);
        let event = self.event(attrs, level, api_version, origin);
        let recorder = Recorder {
            auditor: self.clone(),
            level,
            omit: decision.omit_stages,
            omit_managed_fields: decision.omit_managed_fields,
            sensitive,
            event: Mutex::new(event),
            started: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        };
        if !self.emit(
            &mut recorder.event.lock(),
            Stage::RequestReceived,
            decision.omit_stages,
        ) {
            self.metrics.audit_rejected();
            return Err(failed_to_store());
        }
        Ok(Some(Arc::new(recorder)))
    }

    /// Records a request whose credentials were refused (401), as kube's
    /// `WithFailedAuthenticationAudit`: one `ResponseStarted` event with no user, whose
    /// message says which credentials were tried.
    pub fn failed_authentication(
        self: &Arc<Self>,
        attrs: &policy::Attributes<'_>,
        api_version: &str,
        origin: Origin,
        attempted: &[&str],
    ) {
        let attrs = policy::Attributes {
            user: None,
            ..*attrs
        };
        let decision = self.policy.evaluate(&attrs);
        self.metrics.audit_level(decision.level.as_str());
        if decision.level == Level::None {
            return;
        }
        let sensitive = Sensitive::of(&attrs);
        let level = sensitive.cap(decision.level);
        let recorder = Recorder {
            auditor: self.clone(),
            level,
            omit: decision.omit_stages,
            omit_managed_fields: decision.omit_managed_fields,
            sensitive,
            event: Mutex::new(self.event(&attrs, level, api_version, origin)),
            started: AtomicBool::new(false),
            finished: AtomicBool::new(true),
        };
        let message = if attempted.is_empty() {
            "Authentication failed, no credentials provided".to_string()
        } else {
            format!("Authentication failed, attempted: {}", attempted.join(", "))
        };
        recorder.event.lock().response_status = Some(ResponseStatus {
            message,
            ..Default::default()
        });
        recorder.response_started(401);
    }

    /// A request's event before its first stage.
    fn event(
        &self,
        attrs: &policy::Attributes<'_>,
        level: Level,
        api_version: &str,
        origin: Origin,
    ) -> Event {
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level,
            audit_id: origin.audit_id,
            stage: Stage::RequestReceived,
            request_uri: origin.request_uri,
            verb: attrs.verb.to_string(),
            user: attrs.user.map(User::from).unwrap_or_default(),
            impersonated_user: None,
            source_ips: origin.source_ips,
            user_agent: origin.user_agent,
            object_ref: attrs.resource_request.then(|| ObjectRef {
                resource: attrs.resource.to_string(),
                namespace: attrs.namespace.to_string(),
                name: attrs.name.to_string(),
                api_group: attrs.api_group.to_string(),
                api_version: api_version.to_string(),
                subresource: attrs.subresource.to_string(),
                ..Default::default()
            }),
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: origin.received,
            stage_timestamp: origin.received,
            annotations: Default::default(),
        }
    }

    /// Sends one stage of an event unless the policy omits it; false only when a strict
    /// backend could not write it.
    fn emit(&self, ev: &mut Event, stage: Stage, omit: policy::Stages) -> bool {
        if omit.contains(stage) {
            return true;
        }
        ev.stage = stage;
        ev.stage_timestamp = if stage == Stage::RequestReceived {
            ev.request_received_timestamp
        } else {
            Utc::now()
        };
        self.metrics.audit_event();
        let mut line = ev.encode(self.format);
        if let Some(max) = self.max_event_size.filter(|m| line.len() > *m) {
            // kube's truncate plugin: drop the bodies, then the event.
            let mut cut = ev.clone();
            cut.request_object = None;
            cut.response_object = None;
            cut.annotations.insert(TRUNCATED.into(), "true".into());
            line = cut.encode(self.format);
            if line.len() > max {
                self.backend.dropped(
                    backend::TRUNCATE_PLUGIN,
                    &"event is too large even after truncating",
                );
                return true;
            }
        }
        self.backend.process(line)
    }

    /// Writes out buffered events (batch mode) before the server exits.
    pub fn shutdown(&self, within: Duration) {
        self.backend.shutdown(within);
    }
}

/// One request's record, shared by the parts of a door that learn about the request.
#[derive(Debug)]
pub struct Recorder {
    auditor: Arc<Auditor>,
    level: Level,
    omit: policy::Stages,
    omit_managed_fields: bool,
    sensitive: Sensitive,
    event: Mutex<Event>,
    started: AtomicBool,
    finished: AtomicBool,
}

impl Recorder {
    /// The level the request is recorded at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The user the request acts as.
    pub fn impersonated(&self, user: &UserInfo) {
        self.event.lock().impersonated_user = Some(User::from(user));
    }

    /// The authorizer's decision and its reason.
    pub fn authorized(&self, allowed: bool, reason: &str) {
        let mut ev = self.event.lock();
        let decision = if allowed { "allow" } else { "forbid" };
        ev.annotations.insert(DECISION.into(), decision.into());
        ev.annotations.insert(REASON.into(), reason.into());
    }

    /// Adds an annotation, unless the key already has a value.
    pub fn annotate(&self, key: &str, value: &str) {
        self.event
            .lock()
            .annotations
            .entry(key.to_string())
            .or_insert_with(|| value.to_string());
    }

    /// Whether the request's body is recorded (level `Request` or more, and not a Secret).
    pub fn wants_request_object(&self) -> bool {
        self.sensitive != Sensitive::Secret && self.level() >= Level::Request
    }

    /// Whether the response's body is recorded (level `RequestResponse`, not a Secret).
    pub fn wants_response_object(&self) -> bool {
        self.sensitive != Sensitive::Secret && self.level() >= Level::RequestResponse
    }

    /// The request's decoded body: its namespace, name, uid and resourceVersion fill the
    /// event's `objectRef` where the path left them empty, and at level `Request` or more
    /// (Secrets excepted) the body itself is recorded.
    pub fn request_object(&self, body: &Value) {
        let mut ev = self.event.lock();
        if let (Some(r), Some(meta)) = (ev.object_ref.as_mut(), body.get("metadata")) {
            let text = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or("");
            for (field, key) in [
                (&mut r.namespace, "namespace"),
                (&mut r.name, "name"),
                (&mut r.uid, "uid"),
                (&mut r.resource_version, "resourceVersion"),
            ] {
                if field.is_empty() {
                    *field = text(key).to_string();
                }
            }
        }
        drop(ev);
        if self.wants_request_object() {
            let mut v = body.clone();
            self.clean(&mut v, false);
            self.event.lock().request_object = Some(v);
        }
    }

    /// A patch, recorded as the request's body at level `Request` or more.
    pub fn request_patch(&self, patch: &Value) {
        if self.wants_request_object() {
            let mut v = patch.clone();
            self.sensitive.redact(&mut v, false);
            self.event.lock().request_object = Some(v);
        }
    }

    /// The response's body, recorded at level `RequestResponse` (Secrets excepted).
    pub fn response_object(&self, mut body: Value) {
        if self.wants_response_object() {
            self.clean(&mut body, true);
            self.event.lock().response_object = Some(body);
        }
    }

    fn clean(&self, v: &mut Value, response: bool) {
        self.sensitive.redact(v, response);
        if self.omit_managed_fields {
            drop_managed_fields(v);
        }
    }

    /// A long-running request's response has started: the `ResponseStarted` event.
    pub fn response_started(&self, code: u16) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut ev = self.event.lock();
        ev.response_status.get_or_insert_with(Default::default).code = code;
        self.auditor
            .emit(&mut ev, Stage::ResponseStarted, self.omit);
    }

    /// The response is complete: the `ResponseComplete` event with its status (sent once).
    pub fn complete(&self, status: ResponseStatus) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut ev = self.event.lock();
        ev.response_status = Some(status);
        self.auditor
            .emit(&mut ev, Stage::ResponseComplete, self.omit);
    }

    /// Serving the request panicked: the `Panic` event (instead of `ResponseComplete`).
    pub fn panicked(&self, message: &str) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut ev = self.event.lock();
        ev.response_status = Some(ResponseStatus {
            metadata: Default::default(),
            status: "Failure".into(),
            message: format!("APIServer panic'd: {message}"),
            reason: "InternalError".into(),
            details: None,
            code: 500,
        });
        self.auditor.emit(&mut ev, Stage::Panic, self.omit);
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authn::user;
    use serde_json::json;

    fn auditor(dir: &std::path::Path, policy: &str) -> (Arc<Auditor>, PathBuf, Arc<Metrics>) {
        let pf = dir.join("policy.yaml");
        std::fs::write(&pf, policy).unwrap();
        let log = dir.join("audit.log");
        let metrics = Arc::new(Metrics::new());
        let a = Config {
            policy_file: Some(pf),
            log_path: Some(log.display().to_string()),
            ..Config::default()
        }
        .build(metrics.clone())
        .unwrap()
        .unwrap();
        (a, log, metrics)
    }

    fn events(log: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn origin() -> Origin {
        let mut h = HeaderMap::new();
        h.insert("user-agent", "kubectl/v1.32.0".parse().unwrap());
        h.insert(
            "x-forwarded-for",
            "10.0.0.1, bogus, 10.0.0.2".parse().unwrap(),
        );
        Origin::new(
            "id-1",
            Utc::now(),
            "/api/v1/namespaces/default/secrets",
            &h,
            Some(Peer("127.0.0.1:5000".parse().unwrap())),
        )
    }

    fn attrs<'a>(u: &'a UserInfo, verb: &'a str, resource: &'a str) -> policy::Attributes<'a> {
        policy::Attributes {
            user: Some(u),
            verb,
            resource_request: true,
            api_group: "",
            resource,
            subresource: "",
            namespace: "default",
            name: "",
            path: "/api/v1/namespaces/default/x",
        }
    }

    const EVERYTHING: &str =
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n";

    #[test]
    fn secrets_are_never_recorded_beyond_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (a, log, _) = auditor(dir.path(), EVERYTHING);
        let alice = user("alice", &["system:authenticated"]);
        let r = a
            .begin(&attrs(&alice, "create", "secrets"), "v1", origin())
            .unwrap()
            .unwrap();
        assert_eq!(r.level(), Level::Metadata);
        assert!(!r.wants_request_object() && !r.wants_response_object());
        let secret = json!({"metadata": {"name": "s1", "namespace": "default"},
                            "data": {"password": "aHVudGVyMg=="}});
        r.request_object(&secret);
        r.response_object(secret.clone());
        r.authorized(true, "RBAC: allowed by x");
        r.complete(ResponseStatus::code(201));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("aHVudGVyMg=="), "{text}");
        let ev = events(&log);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["stage"], "RequestReceived");
        assert_eq!(ev[0]["level"], "Metadata");
        assert_eq!(
            ev[0]["sourceIPs"],
            json!(["10.0.0.1", "10.0.0.2", "127.0.0.1"])
        );
        assert_eq!(ev[0]["userAgent"], "kubectl/v1.32.0");
        assert!(ev[0].get("annotations").is_none());
        assert!(ev[0]["objectRef"].get("name").is_none());
        assert_eq!(ev[1]["stage"], "ResponseComplete");
        // The name comes from the body even at Metadata, as kube-apiserver fills it.
        assert_eq!(ev[1]["objectRef"]["name"], "s1");
        assert_eq!(ev[1]["annotations"][DECISION], "allow");
        assert_eq!(
            ev[1]["responseStatus"],
            json!({"metadata": {}, "code": 201})
        );
        assert!(ev[1].get("requestObject").is_none());
        assert!(ev[1].get("responseObject").is_none());
    }

    #[test]
    fn tokens_are_cut_from_recorded_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let (a, log, _) = auditor(dir.path(), EVERYTHING);
        let alice = user("alice", &[]);
        let mut at = attrs(&alice, "create", "serviceaccounts");
        at.subresource = "token";
        at.name = "robot";
        let r = a.begin(&at, "v1", origin()).unwrap().unwrap();
        r.request_object(&json!({"kind": "TokenRequest", "spec": {"audiences": ["x"]}}));
        r.response_object(json!({"kind": "TokenRequest", "spec": {"audiences": ["x"]},
                                 "status": {"token": "eyJSECRET", "expirationTimestamp": "t"}}));
        r.complete(ResponseStatus::code(201));
        let mut at = attrs(&alice, "create", "tokenreviews");
        at.api_group = "authentication.k8s.io";
        at.namespace = "";
        let r = a.begin(&at, "v1", origin()).unwrap().unwrap();
        r.request_object(&json!({"kind": "TokenReview", "spec": {"token": "eyJREVIEWED"}}));
        r.response_object(
            json!({"kind": "TokenReview", "spec": {"token": "eyJREVIEWED"},
                                 "status": {"authenticated": true, "user": {"username": "u"}}}),
        );
        r.complete(ResponseStatus::code(201));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("eyJ"), "{text}");
        let ev = events(&log);
        assert_eq!(
            ev[1]["responseObject"]["status"]["expirationTimestamp"],
            "t"
        );
        assert_eq!(ev[1]["requestObject"]["spec"]["audiences"], json!(["x"]));
        assert_eq!(ev[3]["responseObject"]["status"]["user"]["username"], "u");
        assert_eq!(ev[3]["requestObject"]["spec"], json!({}));
    }

    #[test]
    fn stages_levels_and_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let policy = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
  - level: None
    resources: [{group: "", resources: ["events"]}]
  - level: Request
    verbs: ["update"]
    omitStages: ["RequestReceived"]
  - level: RequestResponse
"#;
        let (a, log, metrics) = auditor(dir.path(), policy);
        let alice = user("alice", &["dev"]);
        assert!(a
            .begin(&attrs(&alice, "create", "events"), "v1", origin())
            .unwrap()
            .is_none());
        // A watch: ResponseStarted, then ResponseComplete.
        let r = a
            .begin(&attrs(&alice, "watch", "pods"), "v1", origin())
            .unwrap()
            .unwrap();
        r.response_started(200);
        r.response_started(200);
        r.complete(ResponseStatus::code(200));
        r.complete(ResponseStatus::code(200));
        // Update at Request: the body without managed fields, no response, no first stage.
        let r = a
            .begin(&attrs(&alice, "update", "pods"), "v1", origin())
            .unwrap()
            .unwrap();
        r.impersonated(&user("bob", &["system:authenticated"]));
        r.request_object(&json!({"metadata": {"name": "p", "resourceVersion": "7",
                                              "managedFields": [{"manager": "m"}]}}));
        r.response_object(json!({"metadata": {"name": "p"}}));
        r.complete(ResponseStatus::code(200));
        // A panic.
        let r = a
            .begin(&attrs(&alice, "get", "pods"), "v1", origin())
            .unwrap()
            .unwrap();
        r.panicked("boom");
        r.complete(ResponseStatus::code(200));
        let ev = events(&log);
        let stages: Vec<&str> = ev.iter().map(|e| e["stage"].as_str().unwrap()).collect();
        assert_eq!(
            stages,
            [
                "RequestReceived",
                "ResponseStarted",
                "ResponseComplete",
                "ResponseComplete",
                "RequestReceived",
                "Panic"
            ]
        );
        assert_eq!(ev[1]["responseStatus"]["code"], 200);
        let update = &ev[3];
        assert_eq!(update["level"], "Request");
        assert_eq!(update["impersonatedUser"]["username"], "bob");
        assert_eq!(update["objectRef"]["name"], "p");
        assert_eq!(update["objectRef"]["resourceVersion"], "7");
        assert_eq!(
            update["requestObject"],
            json!({"metadata": {"name": "p", "resourceVersion": "7"}})
        );
        assert!(update.get("responseObject").is_none());
        assert_eq!(
            ev[5]["responseStatus"],
            json!({"metadata": {}, "status": "Failure", "message": "APIServer panic'd: boom",
                   "reason": "InternalError", "code": 500})
        );
        let m = metrics.render();
        assert!(m.contains("apiserver_audit_event_total 6"), "{m}");
        assert!(
            m.contains("apiserver_audit_level_total{level=\"None\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("apiserver_audit_level_total{level=\"RequestResponse\"} 2"),
            "{m}"
        );
    }

    #[test]
    fn failed_authentication_is_one_event_without_a_user() {
        let dir = tempfile::tempdir().unwrap();
        let (a, log, _) = auditor(dir.path(), EVERYTHING);
        let nobody = UserInfo::default();
        a.failed_authentication(&attrs(&nobody, "list", "pods"), "v1", origin(), &["bearer"]);
        let ev = events(&log);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["stage"], "ResponseStarted");
        assert_eq!(ev[0]["user"], json!({}));
        assert_eq!(
            ev[0]["responseStatus"],
            json!({"metadata": {}, "message": "Authentication failed, attempted: bearer", "code": 401})
        );
    }

    #[test]
    fn oversized_events_lose_their_bodies_then_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let pf = dir.path().join("policy.yaml");
        std::fs::write(&pf, EVERYTHING).unwrap();
        let log = dir.path().join("audit.log");
        let metrics = Arc::new(Metrics::new());
        let a = Config {
            policy_file: Some(pf),
            log_path: Some(log.display().to_string()),
            truncate: true,
            max_event_size: 2000,
            ..Config::default()
        }
        .build(metrics.clone())
        .unwrap()
        .unwrap();
        let alice = user("alice", &[]);
        let r = a
            .begin(&attrs(&alice, "create", "configmaps"), "v1", origin())
            .unwrap()
            .unwrap();
        r.request_object(&json!({"data": {"k": "x".repeat(5000)}}));
        r.complete(ResponseStatus::code(201));
        let ev = events(&log);
        assert_eq!(ev.len(), 2);
        assert!(ev[1].get("requestObject").is_none());
        assert_eq!(ev[1]["annotations"][TRUNCATED], "true");
        assert!(ev[0]["annotations"].is_null());
        let mut o = origin();
        o.request_uri = format!("/{}", "y".repeat(3000));
        let r = a
            .begin(&attrs(&alice, "get", "configmaps"), "v1", o)
            .unwrap();
        assert!(r.is_some(), "a dropped event does not refuse the request");
        assert_eq!(events(&log).len(), 2);
        assert!(metrics
            .render()
            .contains("apiserver_audit_error_total{plugin=\"truncate\"} 1"));
    }

    #[test]
    fn configuration_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let m = || Arc::new(Metrics::new());
        let pf = dir.path().join("policy.yaml");
        std::fs::write(
            &pf,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n",
        )
        .unwrap();
        let cfg = Config {
            policy_file: Some(pf.clone()),
            log_path: Some("-".into()),
            ..Config::default()
        };
        assert_eq!(
            cfg.build(m()).unwrap_err().to_string(),
            format!("loading audit policy file: rules[0].level: Unsupported value: \"Loud\": supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\": from file {}", pf.display())
        );
        let missing = Config {
            policy_file: Some(dir.path().join("nope.yaml")),
            ..Config::default()
        };
        assert!(missing
            .build(m())
            .unwrap_err()
            .to_string()
            .starts_with("loading audit policy file: failed to read file path"));
        std::fs::write(&pf, EVERYTHING).unwrap();
        // A policy without a log, or a log without a policy: nothing to audit.
        let no_log = Config {
            policy_file: Some(pf.clone()),
            ..Config::default()
        };
        assert!(no_log.build(m()).unwrap().is_none());
        let no_policy = Config {
            log_path: Some("-".into()),
            ..Config::default()
        };
        assert!(no_policy.build(m()).unwrap().is_none());
        let bad_batch = Config {
            policy_file: Some(pf),
            log_path: Some("-".into()),
            mode: Mode::Batch,
            batch: Batch {
                buffer_size: 0,
                ..Batch::default()
            },
            ..Config::default()
        };
        assert_eq!(
            bad_batch.build(m()).unwrap_err().to_string(),
            "invalid audit batch log buffer size 0, must be a positive number"
        );
    }

    #[test]
    fn ids_and_addresses() {
        let mut h = HeaderMap::new();
        let a = audit_id(&h);
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 4);
        assert_ne!(a, audit_id(&h));
        h.insert(AUDIT_ID_HEADER, "mine".parse().unwrap());
        assert_eq!(audit_id(&h), "mine");
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(source_ips(&HeaderMap::new(), Some(peer)), ["127.0.0.1"]);
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", "10.1.1.1".parse().unwrap());
        h.insert("x-forwarded-for", "127.0.0.1".parse().unwrap());
        assert_eq!(
            source_ips(&h, Some(peer)),
            ["127.0.0.1", "10.1.1.1", "127.0.0.1"]
        );
        let mut h = HeaderMap::new();
        h.insert(
            "user-agent",
            http::HeaderValue::from_bytes("é".repeat(600).as_bytes()).unwrap(),
        );
        let ua = user_agent(&h);
        assert!(ua.ends_with("...TRUNCATED") && ua.len() <= 1024 + 12);
        assert!(long_running("watch", ""));
        assert!(long_running("get", "log"));
        assert!(!long_running("get", "status"));
    }
}
