//! The options of each verb, read from the query string and body of a REST request.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::{Error, Result};
use crate::query::Query;
use crate::registry::ResourceInfo;
use crate::request::{DeleteOpts, FieldValidation, ListOpts, Propagation, WatchOpts, WriteOpts};
use crate::selectors::{FieldSelector, LabelSelector};

/// Largest request body accepted, as in kube-apiserver.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Reads a request's body, refusing one over [`MAX_BODY`].
pub async fn read_body<B>(req: Request<B>) -> Result<(http::request::Parts, Bytes)>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY {
            return Err(Error::too_large(MAX_BODY));
        }
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Error::too_large(MAX_BODY))
        }
        Err(e) => return Err(Error::bad_request(format!("reading request body: {e}"))),
    };
    Ok((parts, bytes))
}

/// `dryRun`: absent or `All`.
fn dry_run(q: &Query) -> Result<bool> {
    match q.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(o) => Err(Error::bad_request(format!(
            "Invalid dryRun value: {o}; valid values are: All"
        ))),
    }
}

/// The options of a create, update or patch. Without `fieldManager`, ordinary writes are
/// recorded under the client's user agent (as kube-apiserver does); applies must name one.
pub fn write_opts(q: &Query, user_agent: &str, apply: bool, user: &UserInfo) -> Result<WriteOpts> {
    let mut field_manager = q.get("fieldManager").map(String::from);
    if let Some(m) = &field_manager {
        if m.len() > 128 || m.chars().any(|c| c.is_control()) {
            return Err(Error::bad_request(
                "fieldManager: Invalid value: must be at most 128 printable characters",
            ));
        }
    }
    if field_manager.is_none() && !apply {
        let ua = user_agent.split('/').next().unwrap_or("").trim();
        if !ua.is_empty() {
            field_manager = Some(ua.to_string());
        }
    }
    Ok(WriteOpts {
        dry_run: dry_run(q)?,
        field_validation: FieldValidation::parse(q.get("fieldValidation"))?,
        field_manager,
        force: q.flag("force") && q.get("force").is_some(),
        user: user.clone(),
        notes: Default::default(),
        decoded: Default::default(),
    })
}

fn label_selector(q: &Query) -> Result<LabelSelector> {
    LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
}

/// The options of a list (and a delete of a collection).
pub fn list_opts(q: &Query, r: &ResourceInfo) -> Result<ListOpts> {
    Ok(ListOpts {
        labels: label_selector(q)?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), r)?,
        limit: q.int("limit")?.unwrap_or(0).max(0),
        continue_token: q
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(String::from),
        resource_version: q.get("resourceVersion").map(String::from),
        resource_version_match: q
            .get("resourceVersionMatch")
            .filter(|s| !s.is_empty())
            .map(String::from),
    })
}

/// The options of a watch; `GET .../NAME?watch=1` watches that one object.
pub fn watch_opts(q: &Query, r: &ResourceInfo, name: Option<&str>) -> Result<WatchOpts> {
    let mut fields = q.get("fieldSelector").unwrap_or("").to_string();
    if let Some(name) = name {
        fields = format!("metadata.name={name}");
    }
    Ok(WatchOpts {
        labels: label_selector(q)?,
        fields: FieldSelector::parse(&fields, r)?,
        resource_version: q.get("resourceVersion").map(String::from),
        bookmarks: q.flag("allowWatchBookmarks") && q.get("allowWatchBookmarks").is_some(),
        send_initial_events: q.flag("sendInitialEvents") && q.get("sendInitialEvents").is_some(),
    })
}

/// The options of a delete, from the query and the `DeleteOptions` body (which wins).
pub fn delete_opts(q: &Query, body: &Value, user: &UserInfo) -> Result<DeleteOpts> {
    let mut o = DeleteOpts {
        grace_period: q.int("gracePeriodSeconds")?,
        propagation: q
            .get("propagationPolicy")
            .filter(|s| !s.is_empty())
            .map(Propagation::parse)
            .transpose()?,
        dry_run: dry_run(q)?,
        ignore_store_read_error: q.flag("ignoreStoreReadErrorWithClusterBreakingPotential"),
        user: user.clone(),
        ..Default::default()
    };
    if q.flag("orphanDependents") && q.get("orphanDependents").is_some() && o.propagation.is_none()
    {
        o.propagation = Some(Propagation::Orphan);
    }
    if let Some(b) = body.as_object() {
        if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace_period = Some(g);
        }
        if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(Propagation::parse(p)?);
        }
        if b.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && o.propagation.is_none()
        {
            o.propagation = Some(Propagation::Orphan);
        }
        if let Some(p) = b.get("preconditions") {
            o.uid = p.get("uid").and_then(Value::as_str).map(String::from);
            o.resource_version = p
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
        }
        if let Some(d) = b.get("dryRun").and_then(Value::as_array) {
            o.dry_run = d.iter().any(|x| x == "All");
        }
        if let Some(i) = b
            .get("ignoreStoreReadErrorWithClusterBreakingPotential")
            .and_then(Value::as_bool)
        {
            o.ignore_store_read_error = i;
        }
    }
    Ok(o)
}

/// Adds a `Warning` header per warning.
pub fn with_warnings<B>(mut resp: Response<B>, warnings: &[String]) -> Response<B> {
    for w in warnings {
        // A quoted-string as kube-apiserver writes it: `"` and `\` escaped, UTF-8 as it is;
        // a text with control characters is not sent.
        let v = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = HeaderValue::from_bytes(v.as_bytes()) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delete_options_from_query_and_body() {
        let user = UserInfo::default();
        let q = Query::parse(Some("gracePeriodSeconds=5&propagationPolicy=Foreground"));
        let o = delete_opts(&q, &json!({}), &user).unwrap();
        assert_eq!(o.grace_period, Some(5));
        assert_eq!(o.propagation, Some(Propagation::Foreground));
        let body = json!({"gracePeriodSeconds": 0, "propagationPolicy": "Orphan",
            "preconditions": {"uid": "u"}, "dryRun": ["All"]});
        let o = delete_opts(&q, &body, &user).unwrap();
        assert_eq!(
            (o.grace_period, o.propagation, o.uid.as_deref(), o.dry_run),
            (Some(0), Some(Propagation::Orphan), Some("u"), true)
        );
        let bad = Query::parse(Some("propagationPolicy=Sideways"));
        assert_eq!(
            delete_opts(&bad, &json!({}), &user).unwrap_err().code(),
            422
        );
        let bad = Query::parse(Some("dryRun=Some"));
        assert_eq!(
            delete_opts(&bad, &json!({}), &user).unwrap_err().code(),
            400
        );
    }

    #[test]
    fn writes_default_the_manager_to_the_user_agent() {
        let user = UserInfo::default();
        let q = Query::parse(None);
        let o = write_opts(&q, "kubectl/v1.32.0 (linux)", false, &user).unwrap();
        assert_eq!(o.manager(), "kubectl");
        let o = write_opts(&q, "kubectl/v1.32.0", true, &user).unwrap();
        assert_eq!(o.field_manager, None);
    }
}
