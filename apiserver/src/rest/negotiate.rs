//! Content negotiation: what the client sends (JSON, YAML, patches) and what it accepts
//! (JSON, YAML, `Table`, `PartialObjectMetadata`).

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::patch::PatchType;
use crate::registry::ResourceInfo;
use crate::request::{BodyForm, Decoded, FieldValidation};
use crate::strict;

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

/// The media types the discovery documents are rendered in.
const DISCOVERY_MEDIA: [(&str, &str, Format); 2] = [
    ("application", "json", Format::Json),
    ("application", "yaml", Format::Yaml),
];

/// How a request for `/api` or `/apis` is answered, chosen by its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// The aggregated document (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`).
    Aggregated(Format),
    /// The legacy document (`APIVersions`, `APIGroupList`).
    Legacy(Format),
}

/// One `Accept` clause: type, subtype, quality and the parameters the server knows.
struct Clause<'a> {
    ty: &'a str,
    sub: &'a str,
    q: f32,
    /// `as`, `g`, `v`: the conversion asked for.
    convert: Option<(&'a str, &'a str, &'a str)>,
    /// A parameter no discovery answer honours (`stream`, `sv`) is set.
    refused: bool,
}

fn clauses(accept: &str) -> Vec<Clause<'_>> {
    let mut out: Vec<Clause<'_>> = accept
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';');
            let range = parts.next()?.trim();
            let (ty, sub) = if range == "*" {
                ("*", "*")
            } else {
                range.split_once('/')?
            };
            let mut c = Clause {
                ty: ty.trim(),
                sub: sub.trim(),
                q: 1.0,
                convert: None,
                refused: false,
            };
            let (mut as_, mut g, mut v) = (None, None, None);
            for p in parts {
                let Some((k, val)) = p.split_once('=') else {
                    continue;
                };
                let val = val.trim();
                match k.trim() {
                    "q" => c.q = val.parse().unwrap_or(0.0),
                    "as" => as_ = Some(val),
                    "g" => g = Some(val),
                    "v" => v = Some(val),
                    "stream" | "sv" => c.refused |= !val.is_empty(),
                    // Anything else (`pretty`, `profile`, ...) changes nothing here.
                    _ => {}
                }
            }
            if as_.is_some() || g.is_some() || v.is_some() {
                c.convert = Some((g.unwrap_or(""), v.unwrap_or(""), as_.unwrap_or("")));
            }
            Some(c)
        })
        .filter(|c| c.q > 0.0)
        .collect();
    // Most preferred first, exact types before wildcards among equals (a stable sort, so the
    // client's order decides the rest), as Kubernetes' Accept parser orders them.
    out.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then((a.ty == "*").cmp(&(b.ty == "*")))
            .then((a.sub == "*").cmp(&(b.sub == "*")))
    });
    out
}

/// The discovery media type a clause's range names, if it names one served.
fn discovery_media(c: &Clause<'_>) -> Option<Format> {
    DISCOVERY_MEDIA
        .iter()
        .find(|(t, s, _)| {
            (c.ty == "*" && c.sub == "*")
                || (c.ty.eq_ignore_ascii_case(t) && (c.sub == "*" || c.sub.eq_ignore_ascii_case(s)))
        })
        .map(|m| m.2)
}

/// Chooses the discovery answer for an `Accept` header as kube-apiserver v1.33 does: the first
/// clause (most preferred first) that asks for `as=APIGroupDiscoveryList;g=apidiscovery.k8s.io;
/// v=v2` in a served media type gets the aggregated document; failing that, the first clause
/// that asks for no conversion gets the legacy one; failing both, 406. `v2beta1` is no longer
/// served (v1.33 stopped serving it), so a clause asking for it counts for nothing. Protobuf is
/// not served here: such a clause counts for nothing either.
pub fn discovery(headers: &HeaderMap) -> Result<Discovery> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    if accept.is_empty() {
        return Ok(Discovery::Legacy(Format::Json));
    }
    let clauses = clauses(accept);
    let served = |c: &&Clause<'_>| !c.refused && discovery_media(c).is_some();
    if let Some(c) = clauses
        .iter()
        .filter(served)
        .find(|c| c.convert == Some(("apidiscovery.k8s.io", "v2", "APIGroupDiscoveryList")))
    {
        return Ok(Discovery::Aggregated(
            discovery_media(c).unwrap_or(Format::Json),
        ));
    }
    match clauses.iter().filter(served).find(|c| c.convert.is_none()) {
        Some(c) => Ok(Discovery::Legacy(discovery_media(c).unwrap_or(Format::Json))),
        None => Err(Error::not_acceptable(
            "only the following media types are accepted: application/json, application/yaml, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )),
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

/// What strict decoding finds in a create's or update's body meant as `r`'s kind: nothing is
/// looked for when validation is off.
pub fn decoded_body(
    headers: &HeaderMap,
    body: &[u8],
    r: &ResourceInfo,
    fv: FieldValidation,
) -> Decoded {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = media.split(';').next().unwrap_or("").trim();
    let problems = match media {
        _ if fv == FieldValidation::Ignore => Vec::new(),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            strict::yaml_duplicates(body).into_iter().collect()
        }
        "application/json" | "" | "*/*" => r.strategy.strict_json(body),
        _ => Vec::new(),
    };
    Decoded {
        problems,
        form: BodyForm::Object,
    }
}

/// What strict decoding finds in the body of a create through the subresource `h` (a
/// Binding, an Eviction, a TokenRequest), as [`decoded_body`] for objects.
pub fn decoded_subresource(
    headers: &HeaderMap,
    body: &[u8],
    h: &dyn crate::registry::Subresource,
    fv: FieldValidation,
) -> Decoded {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let problems = match media.split(';').next().unwrap_or("").trim() {
        _ if fv == FieldValidation::Ignore => Vec::new(),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            strict::yaml_duplicates(body).into_iter().collect()
        }
        "application/json" | "" | "*/*" => h.strict_json(body),
        _ => Vec::new(),
    };
    Decoded {
        problems,
        form: BodyForm::Object,
    }
}

/// What strict decoding finds in a JSON object meant as `r`'s kind (the gRPC door's
/// envelopes).
pub fn decoded_json(body: &[u8], r: &ResourceInfo, fv: FieldValidation) -> Decoded {
    Decoded {
        problems: match fv {
            FieldValidation::Ignore => Vec::new(),
            _ => r.strategy.strict_json(body),
        },
        form: BodyForm::Object,
    }
}

/// What strict decoding finds in a PATCH body (decoded as `patch`): duplicate fields in
/// the patch itself, or, for a JSON patch, in its operations; an apply configuration's
/// repeated keys.
pub fn decoded_patch(ptype: PatchType, body: &[u8], patch: &Value, fv: FieldValidation) -> Decoded {
    let checked = fv != FieldValidation::Ignore;
    let problems = match ptype {
        _ if !checked => Vec::new(),
        PatchType::Json => strict::json_patch_problems(body),
        PatchType::Merge | PatchType::Strategic => strict::json_duplicates(body),
        PatchType::Apply => strict::yaml_duplicates(body).into_iter().collect(),
    };
    let meta = |f: &str| {
        patch
            .pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let form = match ptype {
        PatchType::Json | PatchType::Merge => BodyForm::Patch,
        PatchType::Strategic => BodyForm::StrategicPatch(match fv {
            FieldValidation::Strict => patch.clone(),
            _ => Value::Null,
        }),
        PatchType::Apply => BodyForm::Apply {
            namespace: meta("namespace"),
            name: meta("name"),
        },
    };
    Decoded { problems, form }
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

    fn discovery_of(accept: &str) -> Result<Discovery> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, accept.parse().unwrap());
        discovery(&h)
    }

    #[test]
    fn discovery_answers_as_kube_apiserver_does() {
        use Discovery::{Aggregated, Legacy};
        const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        const V2BETA1: &str =
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        assert_eq!(discovery(&HeaderMap::new()).unwrap(), Legacy(Format::Json));
        for (accept, want) in [
            (V2.to_string(), Aggregated(Format::Json)),
            // client-go's header: v2, then v2beta1, then legacy.
            (format!("{V2},{V2BETA1},application/json"), Aggregated(Format::Json)),
            (format!("{V2BETA1},application/json"), Legacy(Format::Json)),
            (format!("{V2};profile=nopeer"), Aggregated(Format::Json)),
            (format!("{V2};profile=nopeer,application/json"), Aggregated(Format::Json)),
            ("application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io".into(), Aggregated(Format::Json)),
            ("application/yaml;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList".into(), Aggregated(Format::Yaml)),
            ("*/*;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList".into(), Aggregated(Format::Json)),
            (format!("application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,{V2}"), Aggregated(Format::Json)),
            (format!("application/json;q=0.9,{V2}"), Aggregated(Format::Json)),
            (format!("{V2};q=0.5,application/json"), Aggregated(Format::Json)),
            ("application/json".into(), Legacy(Format::Json)),
            ("application/yaml".into(), Legacy(Format::Yaml)),
            ("*/*".into(), Legacy(Format::Json)),
            ("application/*".into(), Legacy(Format::Json)),
            ("application/vnd.kubernetes.protobuf, application/json".into(), Legacy(Format::Json)),
            ("application/json;g=meta.k8s.io;v=v1;as=Table,application/json".into(), Legacy(Format::Json)),
        ] {
            assert_eq!(discovery_of(&accept).unwrap(), want, "Accept: {accept}");
        }
        for refused in [
            V2BETA1,
            "application/json;g=apidiscovery.k8s.io;v=v1;as=APIGroupDiscoveryList",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscovery",
            "application/json;g=meta.k8s.io;v=v1;as=Table",
            "text/html",
            "application/json;q=0",
            "application/vnd.kubernetes.protobuf",
            "garbage",
        ] {
            assert_eq!(
                discovery_of(refused).unwrap_err().code(),
                406,
                "Accept: {refused}"
            );
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
