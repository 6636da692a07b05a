//! The paths outside the resource API: health checks, `/version`, `/metrics`, the OpenAPI
//! documents, and the list of paths at `/`.

use std::sync::Arc;

use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use serde_json::json;

use crate::error::{Error, Result};
use crate::health::checks;
use crate::state::State;
use crate::version::version;

fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(Body::from(body.into()))
        .expect("valid response")
}

fn health_response(name: &str, checks: &[(&'static str, bool)], verbose: bool) -> Response<Body> {
    let ok = checks.iter().all(|(_, ok)| *ok);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    if !verbose && ok {
        return text(code, "ok");
    }
    let mut body = String::new();
    for (n, ok) in checks {
        if *ok {
            body.push_str(&format!("[+]{n} ok\n"));
        } else {
            body.push_str(&format!("[-]{n} failed: reason withheld\n"));
        }
    }
    if ok {
        body.push_str(&format!("{name} check passed\n"));
    } else {
        body.push_str(&format!("{name} check failed\n"));
    }
    text(code, body)
}

/// An OIDC discovery document, cacheable for an hour as kube-apiserver serves it.
fn oidc(doc: serde_json::Value, content_type: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(Body::from(serde_json::to_vec(&doc).unwrap_or_default()))
        .expect("valid response")
}

/// Serves paths outside the resource API.
pub async fn serve(
    state: &Arc<State>,
    req: &Request<hyper::body::Incoming>,
    path: &str,
) -> Result<Response<Body>> {
    let verbose = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return Err(Error::method_not_allowed(
            "only GET is allowed on this path",
        ));
    }
    match path.trim_end_matches('/') {
        "/livez" => Ok(health_response("livez", &[("ping", true)], verbose)),
        "/healthz" => Ok(health_response("healthz", &checks(state).await, verbose)),
        "/readyz" => Ok(health_response("readyz", &checks(state).await, verbose)),
        p if p.starts_with("/livez/")
            || p.starts_with("/readyz/")
            || p.starts_with("/healthz/") =>
        {
            let name = p.rsplit('/').next().unwrap_or("");
            let all = checks(state).await;
            match all.iter().find(|(n, _)| *n == name) {
                Some((_, true)) => Ok(text(StatusCode::OK, "ok")),
                Some((_, false)) => Ok(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("[-]{name} failed"),
                )),
                None => Err(Error::not_found_message(format!(
                    "no such health check: {name}"
                ))),
            }
        }
        "/version" => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::to_vec(&version()).unwrap_or_default(),
            ))
            .expect("valid response")),
        "/metrics" => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Body::from(state.metrics.render()))
            .expect("valid response")),
        crate::tokens::DISCOVERY_PATH if state.service_account_tokens.discovery_enabled() => {
            let doc = state
                .service_account_tokens
                .openid_configuration(&state.advertise);
            Ok(oidc(doc, "application/json"))
        }
        crate::tokens::JWKS_PATH if state.service_account_tokens.discovery_enabled() => Ok(oidc(
            state.service_account_tokens.jwks(),
            "application/jwk-set+json",
        )),
        p if p == "/openapi/v2" || p.starts_with("/openapi/v3") => {
            state
                .openapi
                .serve(req, p, state.store.generation(), &state.store.resources())
        }
        "" => {
            let paths: Vec<String> = [
                crate::tokens::DISCOVERY_PATH,
                "/api",
                "/api/v1",
                "/apis",
                "/healthz",
                "/livez",
                "/metrics",
                "/openapi/v2",
                "/openapi/v3",
                crate::tokens::JWKS_PATH,
                "/readyz",
                "/version",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(
                state
                    .store
                    .resources()
                    .iter()
                    .filter(|r| !r.group.is_empty())
                    .map(|r| format!("/apis/{}/{}", r.group, r.version)),
            )
            .collect();
            let mut paths = paths;
            paths.sort();
            paths.dedup();
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default(),
                ))
                .expect("valid response"))
        }
        _ => Err(Error::not_found_message(
            "the server could not find the requested resource",
        )),
    }
}
