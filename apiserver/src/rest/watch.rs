//! Watch responses: a stream of `{"type": ..., "object": ...}` lines until the client goes,
//! the timeout passes, or the server shuts down.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde_json::json;

use super::negotiate::Format;
use super::table::{self, Include};
use crate::error::Result;
use crate::query::Query;
use crate::registry::{Resource, ResourceInfo};
use crate::request::WatchOpts;
use crate::state::State;
use crate::storage::watch_cache::EventType;
use crate::store::WatchItem;

fn encode(
    r: &ResourceInfo,
    item: &WatchItem,
    format: Format,
    include: Include,
    first: bool,
) -> Bytes {
    let kind = item.kind.as_str();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    match (format, item.kind) {
        (_, EventType::Bookmark) => out.extend_from_slice(&item.object.json),
        (Format::Table, _) => {
            let v = item.object.value();
            let t = table::table(&*r.strategy, std::iter::once(&v), include, first, json!({}));
            let _ = serde_json::to_writer(&mut out, &t);
        }
        (Format::PartialMeta, _) => {
            let _ = serde_json::to_writer(&mut out, &table::partial(&item.object.value()));
        }
        _ => out.extend_from_slice(&item.object.json),
    }
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// Starts a watch response.
pub async fn respond(
    state: &Arc<State>,
    r: &Resource,
    ns: Option<&str>,
    opts: WatchOpts,
    format: Format,
    timeout: Option<i64>,
    q: &Query,
) -> Result<Response<Body>> {
    let include = Include::parse(q)?;
    let watch = match state.store.watch(r, ns, opts).await {
        Ok(w) => w,
        Err(e) if e.code() == 410 => {
            // As kube-apiserver does: a 200 stream whose one event is the 410 Status.
            let line = format!("{}\n", json!({"type": "ERROR", "object": e.status()}));
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(line))
                .expect("valid response"));
        }
        Err(e) => return Err(e),
    };
    let deadline = tokio::time::Instant::now() + crate::request::watch_duration(timeout);
    let gauge = crate::metrics::WatchGauge::new(&state.metrics, &r.plural);
    let r = r.clone();
    let shutdown = state.shutdown.clone();
    let stream = futures::stream::unfold((watch, true, gauge), move |(mut w, first, gauge)| {
        let shutdown = shutdown.clone();
        let r = r.clone();
        async move {
            let item = w.next_before(&shutdown, deadline).await?;
            let first_row = first && item.kind != EventType::Bookmark;
            let bytes = encode(&r, &item, format, include, first_row);
            Some((
                Ok::<_, std::convert::Infallible>(bytes),
                (w, first && !first_row, gauge),
            ))
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}
