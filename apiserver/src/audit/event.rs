//! The `audit.k8s.io/v1` `Event`, and its two encodings: a JSON line (`--audit-log-format=json`)
//! and kube-apiserver's one-line text (`legacy`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::policy::{Level, Stage};
use crate::auth::UserInfo;

/// One audit event, field for field as kube-apiserver writes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Always `Event`.
    pub kind: &'static str,
    /// Always `audit.k8s.io/v1`.
    pub api_version: &'static str,
    /// The level the request is recorded at.
    pub level: Level,
    /// The request's id (also its `Audit-Id` response header).
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// The stage this event records.
    pub stage: Stage,
    /// The path and query (REST), or the gRPC method's path.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// The Kubernetes verb (or the lowercase HTTP method for a path).
    pub verb: String,
    /// The authenticated user.
    pub user: User,
    /// Who the user acted as, when impersonating.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<User>,
    /// The client's address, after those of proxies it came through.
    #[serde(rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// The client's user agent.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// The object addressed, for resource requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRef>,
    /// The outcome (from `ResponseStarted` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    /// The request's body (levels `Request` and `RequestResponse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_object: Option<Value>,
    /// The response's body (level `RequestResponse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_object: Option<Value>,
    /// When the request arrived.
    #[serde(serialize_with = "micro_time")]
    pub request_received_timestamp: DateTime<Utc>,
    /// When this stage was reached.
    #[serde(serialize_with = "micro_time")]
    pub stage_timestamp: DateTime<Utc>,
    /// The authorizer's decision and reason, and other notes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A user, as `authentication.k8s.io/v1` `UserInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct User {
    /// The name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// The uid.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<&UserInfo> for User {
    fn from(u: &UserInfo) -> Self {
        User {
            username: u.name.clone(),
            uid: u.uid.clone(),
            groups: u.groups.clone(),
            extra: u.extra.clone(),
        }
    }
}

/// The object a resource request addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Resource plural.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The object's uid, when the request's body names it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// API version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The resourceVersion the request's body names.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Subresource.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The outcome, as the `metav1.Status` kube-apiserver records: the code always, and for a
/// response that is a `Status` (failures) its status, message, reason and details.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResponseStatus {
    /// Always `{}`.
    pub metadata: BTreeMap<String, Value>,
    /// `Success` or `Failure`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// The message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The reason word.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// The HTTP code.
    #[serde(skip_serializing_if = "is_zero")]
    pub code: u16,
}

fn is_zero(c: &u16) -> bool {
    *c == 0
}

impl ResponseStatus {
    /// Only a code.
    pub fn code(code: u16) -> Self {
        ResponseStatus {
            code,
            ..Default::default()
        }
    }

    /// The fields kube copies from a `Status` object.
    pub fn from_status(s: &Value) -> Self {
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        ResponseStatus {
            metadata: BTreeMap::new(),
            status: text("status"),
            message: text("message"),
            reason: text("reason"),
            details: s.get("details").filter(|d| !d.is_null()).cloned(),
            code: s
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
        }
    }
}

/// `metav1.MicroTime`: RFC 3339 in UTC with six fractional digits.
fn micro_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// kube-apiserver's one-line text.
    Legacy,
}

impl Format {
    /// Parses `--audit-log-format`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "json" => Ok(Format::Json),
            "legacy" => Ok(Format::Legacy),
            other => Err(format!(
                "invalid audit log format {other}, allowed formats are \"legacy,json\""
            )),
        }
    }
}

impl Event {
    /// The event as one line (newline included) in `format`.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => {
                let mut out = Vec::with_capacity(768);
                // An event of plain strings and JSON values always serializes.
                let _ = serde_json::to_writer(&mut out, self);
                out.push(b'\n');
                out
            }
            Format::Legacy => {
                let mut s = self.legacy();
                s.push('\n');
                s.into_bytes()
            }
        }
    }

    /// kube-apiserver's `EventString`.
    pub fn legacy(&self) -> String {
        let (user, groups) = if self.user.username.is_empty() {
            ("<none>".to_string(), "<none>".to_string())
        } else if self.user.groups.is_empty() {
            (self.user.username.clone(), "<none>".to_string())
        } else {
            (self.user.username.clone(), quoted_list(&self.user.groups))
        };
        let (as_user, as_groups) = match &self.impersonated_user {
            Some(u) => (u.username.clone(), quoted_list(&u.groups)),
            None => ("<self>".to_string(), "<lookup>".to_string()),
        };
        let namespace = self
            .object_ref
            .as_ref()
            .map(|o| o.namespace.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("<none>");
        let response = self
            .response_status
            .as_ref()
            .map_or("<deferred>".to_string(), |s| s.code.to_string());
        let ip = self.source_ips.first().map_or("<unknown>", String::as_str);
        let ts = self
            .request_received_timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        format!(
            "{ts} AUDIT: id={} stage={} ip={} method={} user={} groups={} as={} asgroups={} user-agent={} namespace={} uri={} response=\"{response}\"",
            go_quote(&self.audit_id),
            go_quote(self.stage.as_str()),
            go_quote(ip),
            go_quote(&self.verb),
            go_quote(&user),
            go_quote(&groups),
            go_quote(&as_user),
            go_quote(&as_groups),
            go_quote(&self.user_agent),
            go_quote(namespace),
            go_quote(&self.request_uri),
        )
    }
}

fn quoted_list(v: &[String]) -> String {
    v.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(",")
}

/// Go's `%q`: a double-quoted string with Go escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn event() -> Event {
        let t = Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap()
            + chrono::Duration::microseconds(123_456);
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: Level::Metadata,
            audit_id: "5f2b1c3a-0000-4000-8000-000000000001".into(),
            stage: Stage::ResponseComplete,
            request_uri: "/api/v1/namespaces/default/pods?limit=500".into(),
            verb: "list".into(),
            user: User {
                username: "alice".into(),
                uid: "1001".into(),
                groups: vec!["dev".into(), "system:authenticated".into()],
                extra: BTreeMap::new(),
            },
            impersonated_user: None,
            source_ips: vec!["127.0.0.1".into()],
            user_agent: "kubectl/v1.32.0".into(),
            object_ref: Some(ObjectRef {
                resource: "pods".into(),
                namespace: "default".into(),
                api_version: "v1".into(),
                ..Default::default()
            }),
            response_status: Some(ResponseStatus::code(200)),
            request_object: None,
            response_object: None,
            request_received_timestamp: t,
            stage_timestamp: t + chrono::Duration::milliseconds(2),
            annotations: [
                (
                    "authorization.k8s.io/decision".to_string(),
                    "allow".to_string(),
                ),
                ("authorization.k8s.io/reason".to_string(), String::new()),
            ]
            .into(),
        }
    }

    #[test]
    fn json_lines_read_as_kube_apiservers() {
        let line = event().encode(Format::Json);
        assert_eq!(line.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(
            text.trim_end(),
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"5f2b1c3a-0000-4000-8000-000000000001","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods?limit=500","verb":"list","user":{"username":"alice","uid":"1001","groups":["dev","system:authenticated"]},"sourceIPs":["127.0.0.1"],"userAgent":"kubectl/v1.32.0","objectRef":{"resource":"pods","namespace":"default","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2025-03-04T05:06:07.123456Z","stageTimestamp":"2025-03-04T05:06:07.125456Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#
        );
    }

    #[test]
    fn failures_carry_the_status_fields() {
        let s = ResponseStatus::from_status(&json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods is forbidden: no", "reason": "Forbidden",
            "details": {"kind": "pods"}, "code": 403,
        }));
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"metadata": {}, "status": "Failure", "message": "pods is forbidden: no",
                   "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403})
        );
        // A 401 before any user is known: a message and no code yet is still an object.
        let s = ResponseStatus {
            message: "Authentication failed, attempted: bearer".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"metadata": {}, "message": "Authentication failed, attempted: bearer"})
        );
    }

    #[test]
    fn legacy_lines_read_as_kube_apiservers() {
        let mut e = event();
        assert_eq!(
            e.legacy(),
            r#"2025-03-04T05:06:07.123456Z AUDIT: id="5f2b1c3a-0000-4000-8000-000000000001" stage="ResponseComplete" ip="127.0.0.1" method="list" user="alice" groups="\"dev\",\"system:authenticated\"" as="<self>" asgroups="<lookup>" user-agent="kubectl/v1.32.0" namespace="default" uri="/api/v1/namespaces/default/pods?limit=500" response="200""#
        );
        e.user = User::default();
        e.impersonated_user = Some(User {
            username: "bob".into(),
            groups: vec!["g".into()],
            ..Default::default()
        });
        e.object_ref = None;
        e.response_status = None;
        e.source_ips.clear();
        let l = e.legacy();
        assert!(l.contains(r#"ip="<unknown>""#), "{l}");
        assert!(
            l.contains(r#"user="<none>" groups="<none>" as="bob" asgroups="\"g\"""#),
            "{l}"
        );
        assert!(l.contains(r#"namespace="<none>""#), "{l}");
        assert!(l.ends_with(r#"response="<deferred>""#), "{l}");
        assert_eq!(e.encode(Format::Legacy).last(), Some(&b'\n'));
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert_eq!(Format::parse("legacy"), Ok(Format::Legacy));
        assert_eq!(
            Format::parse("xml").unwrap_err(),
            "invalid audit log format xml, allowed formats are \"legacy,json\""
        );
    }
}
