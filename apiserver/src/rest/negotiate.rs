//! Content negotiation: what the client sends (JSON, YAML, patches) and what it accepts
//! (JSON, YAML, `Table`, `PartialObjectMetadata`).

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::patch::PatchType;

/// How to render a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The object as JSON.
    Json,
    /// The object as YAML.
    Yaml,
    /// A `meta.k8s.io/v1` `Table`.
    Table,
    /// `PartialObjectMetadata` (metadata only).
    PartialMeta,
}

impl Format {
    /// Picks the first acceptable format from an Accept header.
    pub fn from_accept(headers: &HeaderMap, verb: &str) -> Result<Format> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Ok(Format::Json);
        };
        let readable = matches!(verb, "get" | "list" | "watch");
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let mut as_ = "";
            let mut g = "";
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    match k.trim() {
                        "as" => as_ = v.trim(),
                        "g" => g = v.trim(),
                        _ => {}
                    }
                }
            }
            let json_like = matches!(media, "application/json" | "*/*" | "application/*" | "");
            match (json_like, media, as_) {
                (true, _, "Table") if readable && g == "meta.k8s.io" => return Ok(Format::Table),
                (true, _, "PartialObjectMetadata" | "PartialObjectMetadataList")
                    if readable && g == "meta.k8s.io" =>
                {
                    return Ok(Format::PartialMeta)
                }
                (true, _, "") => return Ok(Format::Json),
                (_, "application/yaml", "") => return Ok(Format::Yaml),
                _ => continue,
            }
        }
        Err(Error::not_acceptable(
            "only the following media types are accepted: application/json, application/yaml",
        ))
    }
}

/// Renders a value with a status code.
pub fn respond(code: StatusCode, v: &Value, format: Format) -> Result<Response<Body>> {
    let (ct, body) = match format {
        Format::Yaml => (
            "application/yaml",
            serde_norway::to_string(v)
                .map_err(|e| Error::internal(e.to_string()))?
                .into_bytes(),
        ),
        _ => (
            "application/json",
            serde_json::to_vec(v).map_err(|e| Error::internal(e.to_string()))?,
        ),
    };
    Ok(Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body))
        .expect("valid response"))
}

/// Decodes a create/update body (JSON, YAML or Kubernetes protobuf) meant as a `kind`.
pub fn decode_body(headers: &HeaderMap, body: &Bytes, kind: &str) -> Result<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = ct.split(';').next().unwrap_or("").trim();
    let unrecognized = |why: String| {
        Error::bad_request(format!(
            "the object provided is unrecognized (must be of type {kind}): {why}"
        ))
    };
    if body.is_empty() {
        return Err(unrecognized(
            "couldn't get version/kind; json parse error: unexpected end of JSON input".into(),
        ));
    }
    let v: Value = match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            unrecognized(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_norway::from_slice(body)
                .map_err(|e| Error::bad_request(format!("error converting YAML to JSON: {e}")))?
        }
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode_object(body)?,
        _ => {
            return Err(Error::unsupported_media_type(
                ct,
                crate::error::BODY_MEDIA_TYPES,
            ))
        }
    };
    if !v.is_object() {
        return Err(unrecognized(format!(
            "couldn't get version/kind; json parse error: the body must be a JSON object, got {}",
            match v {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    }
    Ok(v)
}

/// Decodes an optional body (`DeleteOptions`): empty is `{}`.
pub fn decode_optional(headers: &HeaderMap, body: &Bytes, kind: &str) -> Result<Value> {
    if body.is_empty() {
        Ok(Value::Object(Default::default()))
    } else {
        decode_body(headers, body, kind)
    }
}

/// Decodes a PATCH body.
pub fn decode_patch(ptype: PatchType, body: &Bytes) -> Result<Value> {
    if body.is_empty() {
        return Err(Error::bad_request("the patch body is empty"));
    }
    match ptype {
        PatchType::Apply => serde_norway::from_slice(body)
            .map_err(|e| Error::bad_request(format!("error decoding YAML: {e}"))),
        _ => serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("error decoding patch: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Result<Format> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        Format::from_accept(&h, "list")
    }

    #[test]
    fn bodies_decode_or_are_refused_by_name() {
        let mut h = HeaderMap::new();
        let ok = decode_body(&h, &Bytes::from_static(b"{\"a\":1}"), "Pod").unwrap();
        assert_eq!(ok["a"], 1);
        let e = decode_body(&h, &Bytes::from_static(b"{nope"), "Pod").unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.to_string().starts_with(
            "the object provided is unrecognized (must be of type Pod): couldn't get version/kind; json parse error"
        ), "{e}");
        let e = decode_body(&h, &Bytes::from_static(b"[1]"), "Pod").unwrap_err();
        assert_eq!(e.code(), 400);
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let e = decode_body(&h, &Bytes::from_static(b"{}"), "Pod").unwrap_err();
        assert_eq!(e.code(), 415);
        h.insert(header::CONTENT_TYPE, "application/yaml".parse().unwrap());
        let v = decode_body(&h, &Bytes::from_static(b"a: [1, 2]\n"), "Pod").unwrap();
        assert_eq!(v["a"][1], 2);
        assert_eq!(
            decode_body(&h, &Bytes::from_static(b"a: [1, 2\n"), "Pod")
                .unwrap_err()
                .code(),
            400
        );
    }

    proptest::proptest! {
        #[test]
        fn any_body_decodes_or_is_refused(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            media in proptest::sample::select(vec![
                "application/json", "application/yaml", "application/vnd.kubernetes.protobuf",
            ]),
        ) {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, media.parse().unwrap());
            let body = Bytes::from(body);
            if let Err(e) = decode_body(&h, &body, "Pod") {
                proptest::prop_assert!(e.code() < 500, "{}", e);
            }
            for ptype in [PatchType::Json, PatchType::Merge, PatchType::Strategic, PatchType::Apply] {
                if let Err(e) = decode_patch(ptype, &body) {
                    proptest::prop_assert!(e.code() < 500, "{}", e);
                }
            }
        }
    }

    #[test]
    fn kubectl_get_asks_for_tables() {
        let f = accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json").unwrap();
        assert_eq!(f, Format::Table);
        assert_eq!(accept("application/json").unwrap(), Format::Json);
        assert_eq!(
            accept("application/vnd.kubernetes.protobuf, application/json").unwrap(),
            Format::Json
        );
        assert_eq!(
            accept("application/vnd.kubernetes.protobuf")
                .unwrap_err()
                .code(),
            406
        );
    }
}
