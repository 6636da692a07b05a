//! The webhook HTTPS server: handlers registered by path, each answering the reviews POSTed to
//! it; `/healthz` (and `/livez`, `/readyz`) for probes; `/metrics` in Prometheus' text format.
//!
//! Reviews are answered in the `apiVersion` they came in (`admission.k8s.io/v1` or `v1beta1`,
//! `apiextensions.k8s.io/v1` or `v1beta1`). A body that is not a review is a `400` with a
//! Kubernetes `Status`, as is a review of a version not spoken here; a handler that panics is a
//! `500` (the API server then applies the webhook's failure policy) and the server goes on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, ADMISSION_REVIEW, ADMISSION_V1,
    ADMISSION_V1BETA1,
};
use super::conversion::{
    ConversionRequest, ConversionResponse, ConversionReview, CONVERSION_REVIEW, CONVERSION_V1,
    CONVERSION_V1BETA1,
};

/// An admission webhook: a validating one answers allowed or not, a mutating one may also
/// return a patch ([`AdmissionResponse::mutate`]).
#[async_trait::async_trait]
pub trait Admit: Send + Sync {
    /// The verdict on `req`.
    async fn admit(&self, req: &AdmissionRequest) -> AdmissionResponse;
}

/// A conversion webhook for a CustomResourceDefinition's versions.
#[async_trait::async_trait]
pub trait Convert: Send + Sync {
    /// `req`'s objects in `req.desired_api_version` ([`ConversionResponse::convert_each`]).
    async fn convert(&self, req: &ConversionRequest) -> ConversionResponse;
}

/// An [`Admit`] from an async function of the request.
pub fn admit_fn<F, Fut>(f: F) -> impl Admit
where
    F: Fn(AdmissionRequest) -> Fut + Send + Sync,
    Fut: Future<Output = AdmissionResponse> + Send,
{
    AdmitFn(f)
}

struct AdmitFn<F>(F);

#[async_trait::async_trait]
impl<F, Fut> Admit for AdmitFn<F>
where
    F: Fn(AdmissionRequest) -> Fut + Send + Sync,
    Fut: Future<Output = AdmissionResponse> + Send,
{
    async fn admit(&self, req: &AdmissionRequest) -> AdmissionResponse {
        (self.0)(req.clone()).await
    }
}

/// A [`Convert`] from an async function of the request.
pub fn convert_fn<F, Fut>(f: F) -> impl Convert
where
    F: Fn(ConversionRequest) -> Fut + Send + Sync,
    Fut: Future<Output = ConversionResponse> + Send,
{
    ConvertFn(f)
}

struct ConvertFn<F>(F);

#[async_trait::async_trait]
impl<F, Fut> Convert for ConvertFn<F>
where
    F: Fn(ConversionRequest) -> Fut + Send + Sync,
    Fut: Future<Output = ConversionResponse> + Send,
{
    async fn convert(&self, req: &ConversionRequest) -> ConversionResponse {
        (self.0)(req.clone()).await
    }
}

#[derive(Clone)]
enum Route {
    Admit(Arc<dyn Admit>),
    Convert(Arc<dyn Convert>),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    path: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
}

/// What a review came to, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Denied,
    Success,
    Failure,
    /// Not a review, or the handler panicked.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Error => "error",
        }
    }
}

/// A webhook server: register handlers by path, then [`Server::serve`].
///
/// ```no_run
/// use std::sync::Arc;
/// use skiff_client::webhook::{admit_fn, AdmissionResponse, CertStore, Server};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn run() -> Result<(), skiff_client::webhook::Error> {
/// let certs = Arc::new(CertStore::from_dir("/etc/webhook/certs")?);
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
/// Server::new()
///     .admit("/validate", admit_fn(|req| async move {
///         if req.labels().contains_key("app") {
///             AdmissionResponse::allow(&req)
///         } else {
///             AdmissionResponse::deny(&req, "the label app is required")
///         }
///     }))
///     .serve(listener, Arc::new(certs.server_config()?), CancellationToken::new())
///     .await
/// # }
/// ```
pub struct Server {
    routes: BTreeMap<String, Route>,
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    latency: Family<PathLabels, Histogram>,
    max_body: usize,
    grace: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with no handlers. Its metrics, `skiff_webhook_reviews_total{path,result}`
    /// (`result`: `allowed`, `denied`, `success`, `failure` or `error`) and
    /// `skiff_webhook_review_duration_seconds{path}`, are in [`Server::registry`].
    pub fn new() -> Server {
        let reviews = Family::<ReviewLabels, Counter>::default();
        let latency = Family::<PathLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let mut registry = Registry::default();
        registry.register(
            "skiff_webhook_reviews",
            "Reviews answered, by path and result",
            reviews.clone(),
        );
        registry.register(
            "skiff_webhook_review_duration_seconds",
            "Time to answer a review, by path",
            latency.clone(),
        );
        Server {
            routes: BTreeMap::new(),
            registry,
            reviews,
            latency,
            max_body: 32 << 20,
            grace: Duration::from_secs(10),
        }
    }

    /// Answers `AdmissionReview`s POSTed to `path` (`/validate`, `/mutate`) with `handler`.
    pub fn admit(mut self, path: impl Into<String>, handler: impl Admit + 'static) -> Self {
        self.routes
            .insert(path.into(), Route::Admit(Arc::new(handler)));
        self
    }

    /// Answers `ConversionReview`s POSTed to `path` (`/convert`) with `handler`.
    pub fn convert(mut self, path: impl Into<String>, handler: impl Convert + 'static) -> Self {
        self.routes
            .insert(path.into(), Route::Convert(Arc::new(handler)));
        self
    }

    /// The registry served at `/metrics`: register the webhook's own metrics here.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// How long [`Server::serve`] lets open requests finish after shutdown (10 s by default).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The largest request body accepted (32 MiB by default; a review carries the object and
    /// the old object); a larger one is a `413`.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Serves HTTPS (HTTP/2 and HTTP/1.1) on `listener` with `tls` until `shutdown` is
    /// cancelled, then lets open requests finish for the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> Result<(), super::Error> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let this = Arc::new(self);
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tracing::info!(address = ?listener.local_addr().ok(), "serving webhooks");
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, most likely: give connections time to close.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (acceptor, this, builder) = (acceptor.clone(), this.clone(), builder.clone());
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.handle(req).await) }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(tls), svc)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
        tracing::info!("stopped accepting; letting open requests finish");
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(this.grace) => {
                tracing::warn!(grace = ?this.grace, "requests still open after the grace period");
            }
        }
        Ok(())
    }

    /// Answers one HTTP request (what [`Server::serve`] does for each).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        let route = match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => {
                return match *req.method() {
                    Method::GET | Method::HEAD => text(StatusCode::OK, "ok"),
                    _ => not_allowed("GET"),
                }
            }
            "/metrics" => {
                let mut out = String::new();
                if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry)
                {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
                }
                let mut resp = text(StatusCode::OK, &out);
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                return resp;
            }
            p => match self.routes.get(p) {
                Some(r) => r.clone(),
                None => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
            },
        };
        let start = Instant::now();
        let (outcome, resp) = self.review(route, req).await;
        self.reviews
            .get_or_create(&ReviewLabels {
                path: path.clone(),
                result: outcome.as_str().into(),
            })
            .inc();
        self.latency
            .get_or_create(&PathLabels { path })
            .observe(start.elapsed().as_secs_f64());
        resp
    }

    async fn review<B>(&self, route: Route, req: Request<B>) -> (Outcome, Response<Full<Bytes>>)
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if req.method() != Method::POST {
            return (Outcome::Error, not_allowed("POST"));
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            let msg =
                format!("unsupported media type {content_type:?}: reviews are application/json");
            return (
                Outcome::Error,
                status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &msg,
                ),
            );
        }
        let body = match Limited::new(req.into_body(), self.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let msg = format!("the request body is larger than {} bytes", self.max_body);
                return (
                    Outcome::Error,
                    status(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", &msg),
                );
            }
            Err(e) => {
                let msg = format!("reading the request body: {e}");
                return (
                    Outcome::Error,
                    status(StatusCode::BAD_REQUEST, "BadRequest", &msg),
                );
            }
        };
        match route {
            Route::Admit(h) => self.admission(h, &body).await,
            Route::Convert(h) => self.conversion(h, &body).await,
        }
    }

    async fn admission(&self, h: Arc<dyn Admit>, body: &[u8]) -> (Outcome, Response<Full<Bytes>>) {
        if let Err(e) = type_meta(body, &[ADMISSION_V1, ADMISSION_V1BETA1], ADMISSION_REVIEW) {
            return bad_request(&e);
        }
        let review: AdmissionReview = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return bad_request(&format!("decoding the AdmissionReview: {e}")),
        };
        let Some(req) = review.request.as_ref() else {
            return bad_request("the AdmissionReview has no request");
        };
        let mut resp = match AssertUnwindSafe(h.admit(req)).catch_unwind().await {
            Ok(r) => r,
            Err(_) => return handler_panicked(&req.uid),
        };
        if resp.uid.is_empty() {
            resp.uid = req.uid.clone();
        }
        tracing::debug!(uid = %req.uid, operation = ?req.operation, namespace = %req.namespace,
            name = %req.name, allowed = resp.allowed, patched = resp.patch.is_some(), "admission review");
        let outcome = if resp.allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        };
        (outcome, json_response(&review.answer(resp)))
    }

    async fn conversion(
        &self,
        h: Arc<dyn Convert>,
        body: &[u8],
    ) -> (Outcome, Response<Full<Bytes>>) {
        if let Err(e) = type_meta(
            body,
            &[CONVERSION_V1, CONVERSION_V1BETA1],
            CONVERSION_REVIEW,
        ) {
            return bad_request(&e);
        }
        let review: ConversionReview = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return bad_request(&format!("decoding the ConversionReview: {e}")),
        };
        let Some(req) = review.request.as_ref() else {
            return bad_request("the ConversionReview has no request");
        };
        let mut resp = match AssertUnwindSafe(h.convert(req)).catch_unwind().await {
            Ok(r) => r,
            Err(_) => return handler_panicked(&req.uid),
        };
        if resp.uid.is_empty() {
            resp.uid = req.uid.clone();
        }
        tracing::debug!(uid = %req.uid, desired = %req.desired_api_version, objects = req.objects.len(),
            success = resp.is_success(), "conversion review");
        let outcome = if resp.is_success() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        (outcome, json_response(&review.answer(resp)))
    }
}

/// Checks a body's `apiVersion` and `kind` before the rest is decoded, so that a review of
/// another version or kind is refused as such.
fn type_meta(body: &[u8], versions: &[&str], kind: &str) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TypeMeta {
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        kind: String,
    }
    let tm: TypeMeta =
        serde_json::from_slice(body).map_err(|e| format!("decoding the {kind}: {e}"))?;
    if !versions.contains(&tm.api_version.as_str()) {
        return Err(format!(
            "unsupported apiVersion {:?}: expected {}",
            tm.api_version,
            versions.join(" or ")
        ));
    }
    if tm.kind != kind {
        return Err(format!("unsupported kind {:?}: expected {kind}", tm.kind));
    }
    Ok(())
}

fn text(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("only {allow} is allowed here"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn bad_request(message: &str) -> (Outcome, Response<Full<Bytes>>) {
    (
        Outcome::Error,
        status(StatusCode::BAD_REQUEST, "BadRequest", message),
    )
}

fn handler_panicked(uid: &str) -> (Outcome, Response<Full<Bytes>>) {
    tracing::error!(uid, "the webhook's handler panicked");
    (
        Outcome::Error,
        status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the webhook's handler failed",
        ),
    )
}

/// A Kubernetes `Status` for an HTTP error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let mut r = json_response(&json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    }));
    *r.status_mut() = code;
    r
}

fn json_response(v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding the answer: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn server() -> Server {
        Server::new()
            .admit(
                "/validate",
                admit_fn(|req| async move {
                    if req.labels().contains_key("app") {
                        AdmissionResponse::allow(&req)
                    } else {
                        AdmissionResponse::deny(&req, "the label app is required")
                    }
                }),
            )
            .admit(
                "/panic",
                admit_fn(|_req| async move { panic!("a bug in the handler") }),
            )
            .convert(
                "/convert",
                convert_fn(|req| async move {
                    ConversionResponse::convert_each(&req, |mut o, v| {
                        super::super::conversion::set_api_version(&mut o, v);
                        Ok(o)
                    })
                }),
            )
    }

    fn review(version: &str, labels: Value) -> Value {
        json!({"apiVersion": version, "kind": "AdmissionReview", "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default", "name": "p", "operation": "CREATE", "userInfo": {"username": "me"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels}}}})
    }

    async fn call(s: &Server, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, ctype)
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let resp = s.handle(req).await;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, v)
    }

    async fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
        call(
            s,
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
        .await
    }

    #[tokio::test]
    async fn answers_reviews_in_the_version_asked() {
        let s = server();
        let (code, v) = post(
            &s,
            "/validate",
            &review("admission.k8s.io/v1", json!({"app": "x"})),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(
            v,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": "u-1", "allowed": true}})
        );
        let (code, v) = post(
            &s,
            "/validate",
            &review("admission.k8s.io/v1beta1", json!({})),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(
            v["response"]["status"]["message"],
            "the label app is required"
        );
        assert_eq!(v["response"]["status"]["code"], 403);

        let conv = json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview",
            "request": {"uid": "c-1", "desiredAPIVersion": "example.skiff.dev/v2",
                        "objects": [{"apiVersion": "example.skiff.dev/v1", "kind": "Widget"}]}});
        let (code, v) = post(&s, "/convert", &conv).await;
        assert_eq!(code, 200);
        assert_eq!(v["apiVersion"], "apiextensions.k8s.io/v1beta1");
        assert_eq!(v["response"]["uid"], "c-1");
        assert_eq!(
            v["response"]["convertedObjects"][0]["apiVersion"],
            "example.skiff.dev/v2"
        );
        assert_eq!(v["response"]["result"]["status"], "Success");
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_review_with_a_status() {
        let s = server();
        let good = review("admission.k8s.io/v1", json!({}));
        // (method, path, content type, body, code, part of the message)
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            Vec<u8>,
            u16,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("POST", "/validate", "application/json", b"{not json".to_vec(), 400, "decoding the AdmissionReview"),
            ("POST", "/validate", "application/json", b"".to_vec(), 400, "decoding the AdmissionReview"),
            ("POST", "/validate", "application/json", json!({"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview"}).to_string().into_bytes(), 400, "unsupported apiVersion \"admission.k8s.io/v2\""),
            ("POST", "/validate", "application/json", json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}).to_string().into_bytes(), 400, "unsupported kind \"Pod\""),
            ("POST", "/validate", "application/json", json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string().into_bytes(), 400, "has no request"),
            ("POST", "/validate", "application/json", json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 5}}).to_string().into_bytes(), 400, "decoding"),
            // A conversion review at an admission path is not an admission review.
            ("POST", "/validate", "application/json", json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "request": {}}).to_string().into_bytes(), 400, "unsupported apiVersion"),
            ("POST", "/convert", "application/json", good.to_string().into_bytes(), 400, "unsupported apiVersion \"admission.k8s.io/v1\""),
            ("POST", "/validate", "application/yaml", good.to_string().into_bytes(), 415, "unsupported media type"),
            ("GET", "/validate", "application/json", vec![], 405, "only POST"),
            ("POST", "/panic", "application/json", good.to_string().into_bytes(), 500, "the webhook's handler failed"),
        ];
        for (method, path, ctype, body, want, msg) in cases {
            let (code, v) = call(&s, method, path, ctype, &body).await;
            assert_eq!(
                code,
                want,
                "{method} {path} {}: {v}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(v["kind"], "Status");
            assert_eq!(v["code"], want);
            assert!(v["message"].as_str().unwrap().contains(msg), "{v}");
        }
        let (code, v) = post(&s, "/nowhere", &good).await;
        assert_eq!((code, v), (404, json!("404 page not found\n")));

        // Larger than the limit: 413.
        let small = Server::new().max_body(64).admit(
            "/validate",
            admit_fn(|r| async move { AdmissionResponse::allow(&r) }),
        );
        let (code, v) = post(&small, "/validate", &good).await;
        assert_eq!(code, 413);
        assert_eq!(v["reason"], "RequestEntityTooLarge");

        // The server still answers after the panic.
        let (code, _) = post(&s, "/validate", &good).await;
        assert_eq!(code, 200);
    }

    #[tokio::test]
    async fn counts_reviews_by_path_and_result() {
        let s = server();
        post(
            &s,
            "/validate",
            &review("admission.k8s.io/v1", json!({"app": "x"})),
        )
        .await;
        post(&s, "/validate", &review("admission.k8s.io/v1", json!({}))).await;
        post(&s, "/validate", &review("admission.k8s.io/v1", json!({}))).await;
        call(&s, "POST", "/validate", "application/json", b"nope").await;
        let (code, metrics) = call(&s, "GET", "/metrics", "", b"").await;
        assert_eq!(code, 200);
        let text = metrics.as_str().unwrap();
        for line in [
            r#"skiff_webhook_reviews_total{path="/validate",result="allowed"} 1"#,
            r#"skiff_webhook_reviews_total{path="/validate",result="denied"} 2"#,
            r#"skiff_webhook_reviews_total{path="/validate",result="error"} 1"#,
            r#"skiff_webhook_review_duration_seconds_count{path="/validate"} 4"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let (code, body) = call(&s, "GET", "/healthz", "", b"").await;
        assert_eq!((code, body), (200, json!("ok")));
        let (code, _) = call(&s, "POST", "/healthz", "", b"").await;
        assert_eq!(code, 405);
    }
}
