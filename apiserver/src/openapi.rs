//! OpenAPI v2 and v3 documents for `kubectl explain` and client-side tooling.

use axum::body::Body;
use http::{Request, Response};

use crate::error::{Error, Result};

/// The OpenAPI documents.
#[derive(Default)]
pub struct Docs {}

impl Docs {
    /// Serves `/openapi/v2` and `/openapi/v3[/...]`.
    pub fn serve(
        &self,
        _req: &Request<hyper::body::Incoming>,
        _path: &str,
    ) -> Result<Response<Body>> {
        Err(Error::not_found_message(
            "the server could not find the requested resource",
        ))
    }
}
