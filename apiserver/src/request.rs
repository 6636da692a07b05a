//! What a request asks of the store, whichever door it came through: who asks, the options of
//! each verb, and what each verb returns. The doors fill these in from their own encodings
//! (query parameters and bodies for REST, protobuf fields for gRPC).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::{Error, Result};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::storage::cached::Cached;

/// What admission says about a request besides its verdict: warnings for the client (the
/// `Warning` headers of a REST response, the `warnings` of a gRPC one) and annotations for the
/// request's audit event. The door that made the request's options owns them; clones share them.
#[derive(Clone, Default)]
pub struct Notes(Arc<NotesInner>);

#[derive(Default)]
struct NotesInner {
    warnings: parking_lot::Mutex<Vec<String>>,
    annotations: parking_lot::Mutex<Vec<(String, String)>>,
    audit: Option<Arc<crate::audit::Recorder>>,
    /// Keeps nothing (the notes of requests nobody reads).
    discard: bool,
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notes")
            .field("warnings", &*self.0.warnings.lock())
            .field("annotations", &*self.0.annotations.lock())
            .field("audited", &self.0.audit.is_some())
            .finish()
    }
}

impl Notes {
    /// Notes whose annotations also go to `audit`, the request's audit record (if audited).
    pub fn audited(audit: Option<Arc<crate::audit::Recorder>>) -> Notes {
        Notes(Arc::new(NotesInner {
            audit,
            ..Default::default()
        }))
    }

    /// Notes that keep nothing.
    pub fn discarded() -> Notes {
        Notes(Arc::new(NotesInner {
            discard: true,
            ..Default::default()
        }))
    }

    /// A warning for the client. The same text twice is sent once, as kube-apiserver's
    /// warning recorder does; an empty one is dropped.
    pub fn warn(&self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() || self.0.discard {
            return;
        }
        let mut w = self.0.warnings.lock();
        if !w.contains(&text) {
            w.push(text);
        }
    }

    /// An annotation of the request's audit event. A key keeps its first value.
    pub fn annotate(&self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        if self.0.discard {
            return;
        }
        {
            let mut a = self.0.annotations.lock();
            if a.iter().any(|(k, _)| *k == key) {
                return;
            }
            a.push((key.clone(), value.clone()));
        }
        if let Some(r) = &self.0.audit {
            r.annotate(&key, &value);
        }
    }

    /// The warnings so far.
    pub fn warnings(&self) -> Vec<String> {
        self.0.warnings.lock().clone()
    }

    /// The warnings so far, leaving none.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.warnings.lock())
    }

    /// The annotations so far, in the order they were made.
    pub fn annotations(&self) -> Vec<(String, String)> {
        self.0.annotations.lock().clone()
    }

    /// Adds the warnings to `out` (skipping texts already there), leaving none here.
    pub fn move_warnings_into(&self, out: &mut Vec<String>) {
        for w in self.take_warnings() {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
}

/// What to do with fields the type does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn.
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

impl FieldValidation {
    /// Parses the `fieldValidation` query parameter.
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(o) => Err(Error::bad_request(format!(
                "fieldValidation parameter unsupported: {o} (valid values: Ignore, Warn, Strict)"
            ))),
        }
    }

    /// What to do with the problems strict decoding found in a body meant as `kind` at
    /// `version` that is read as it is (no patch, no apply): refuse it as kube-apiserver's
    /// decoding does (`400`), or the warnings to send, one per problem.
    pub fn judge(
        self,
        problems: &[crate::strict::Problem],
        kind: &str,
        version: &str,
    ) -> Result<Vec<String>> {
        match self {
            _ if problems.is_empty() => Ok(Vec::new()),
            FieldValidation::Ignore => Ok(Vec::new()),
            FieldValidation::Warn => Ok(crate::strict::warnings(problems)),
            FieldValidation::Strict => Err(Error::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {}",
                crate::strict::message(problems)
            ))),
        }
    }
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: do everything but store.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `force` (server-side apply).
    pub force: bool,
    /// Who asks (admission sees it).
    pub user: UserInfo,
    /// Where admission leaves warnings for the client and annotations for the audit record.
    pub notes: Notes,
    /// What strict decoding found in the request's body.
    pub decoded: Decoded,
}

/// What strict decoding found in a write's body, and how a refusal shows it.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Duplicate fields (and, in JSON bodies of built-in kinds, unknown ones), in the order
    /// the body names them. Unknown fields found later, while the object is defaulted, join
    /// them.
    pub problems: Vec<crate::strict::Problem>,
    /// What the body was, which decides how its problems are told.
    pub form: BodyForm,
}

/// What a write's body was, for the way kube-apiserver reports its problems.
#[derive(Debug, Clone, Default)]
pub enum BodyForm {
    /// An object (create, update): refused as the kind's decoding error (400).
    #[default]
    Object,
    /// A JSON patch or JSON merge patch: refused as an invalid patch (422) showing the patched
    /// object.
    Patch,
    /// A strategic merge patch: refused as an invalid patch (422) showing the patch as Go
    /// prints a map.
    StrategicPatch(serde_json::Value),
    /// A server-side apply configuration (its own namespace and name): a field the type lacks
    /// is not declared in its schema, and repeated keys refuse it as YAML (400).
    Apply {
        /// The configuration's `metadata.namespace`.
        namespace: String,
        /// The configuration's `metadata.name`.
        name: String,
    },
}

impl WriteOpts {
    /// Options for a write the server makes itself, recorded under `manager`.
    pub fn internal(manager: &str) -> Self {
        WriteOpts {
            field_manager: Some(manager.to_string()),
            user: UserInfo::apiserver(),
            ..Default::default()
        }
    }

    /// The same options, with what strict decoding found in the body.
    pub fn with_decoded(mut self, decoded: Decoded) -> Self {
        self.decoded = decoded;
        self
    }

    /// The same options, their notes going to `notes`.
    pub fn with_notes(mut self, notes: Notes) -> Self {
        self.notes = notes;
        self
    }

    /// The field manager recorded for an ordinary write.
    pub fn manager(&self) -> &str {
        self.field_manager
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
    }
}

/// How a delete treats the object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents lose their owner reference and stay.
    Orphan,
    /// The object goes now, its dependents after it.
    Background,
    /// The object stays (with the `foregroundDeletion` finalizer) until its dependents are gone.
    Foreground,
}

impl Propagation {
    /// Parses `propagationPolicy`, refusing other values as kube-apiserver words it.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "Orphan" => Ok(Propagation::Orphan),
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            other => Err(Error::invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                vec![crate::error::Cause::not_supported(
                    "propagationPolicy",
                    other,
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            )),
        }
    }
}

/// Delete options (the body of a DELETE, or its query parameters).
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `propagationPolicy`.
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `ignoreStoreReadErrorWithClusterBreakingPotential`: delete an object whose stored value
    /// cannot be read (decrypted or decoded), skipping finalizers and preconditions.
    pub ignore_store_read_error: bool,
    /// Who asks.
    pub user: UserInfo,
    /// Where admission leaves warnings for the client and annotations for the audit record.
    pub notes: Notes,
}

impl DeleteOpts {
    /// The same options, their notes going to `notes`.
    pub fn with_notes(mut self, notes: Notes) -> Self {
        self.notes = notes;
        self
    }
}

/// List options.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 = no limit).
    pub limit: i64,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
}

/// Watch options.
#[derive(Debug, Clone, Default)]
pub struct WatchOpts {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: bool,
}

/// How long a client watch lasts: what it asked for, else 30 to 60 minutes at random (so
/// watches started together do not all end together), as kube-apiserver does.
pub fn watch_duration(requested_seconds: Option<i64>) -> Duration {
    match requested_seconds {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => Duration::from_secs(1800 + rand::rng().random_range(0..1800)),
    }
}

/// The result of a write.
#[derive(Debug)]
pub struct Written {
    /// The object as stored.
    pub object: Value,
    /// Warnings for the client (`Warning` headers).
    pub warnings: Vec<String>,
    /// Whether the object was created (201) rather than updated (200).
    pub created: bool,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; here is its last state.
    Gone(Value),
    /// Deletion has started (grace period or finalizers); here is the object now.
    Pending(Value),
}

/// A list result.
#[derive(Debug)]
pub struct Listed {
    /// The items.
    pub items: Vec<Arc<Cached>>,
    /// The list's resourceVersion.
    pub rv: i64,
    /// The continue token, if more remain.
    pub continue_token: Option<String>,
    /// How many items remain, when known.
    pub remaining: Option<i64>,
    /// What the client should be told besides (objects left out because they could not be
    /// read), sent as `Warning` headers.
    pub warnings: Vec<String>,
}
