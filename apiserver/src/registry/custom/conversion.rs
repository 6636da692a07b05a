//! Webhook conversion of custom resources (`spec.conversion.strategy: Webhook`): objects go
//! to the definition's webhook in an `apiextensions.k8s.io/v1` (or `v1beta1`)
//! `ConversionReview`, many at once, and what comes back is checked as kube-apiserver checks
//! it before anyone sees it: the same number of objects, the request's uid, the asked-for
//! `apiVersion`, the same kind, name, namespace and uid, and no metadata changed but labels
//! and annotations. A failure fails the request with kube-apiserver's words
//! (`conversion webhook for GROUP/VERSION, Kind=KIND failed: ...`, a 500).
//!
//! The HTTP call itself is behind [`Caller`]: the server's webhook client.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::WebhookClientConfig;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Error, Result};
use crate::registry::{calling, Convert, Converting};

/// The `ConversionReview` versions this server speaks, in the order it prefers them.
pub const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// What sends a `ConversionReview` to a definition's webhook.
#[async_trait::async_trait]
pub trait Caller: Send + Sync {
    /// Posts `review` to the webhook `hook` names and returns the JSON it answered, or why
    /// there is none, in the words of a failed call (`Post "URL": ...`).
    async fn call(&self, hook: &Hook, review: &Value) -> Result<Value, String>;
}

/// A definition's conversion webhook, as the caller needs it.
pub struct Hook {
    /// The definition's name (`widgets.example.com`), for logs and metrics.
    pub definition: String,
    /// Where the webhook is, and the CA bundle that verifies it.
    pub client_config: WebhookClientConfig,
}

/// The conversion of one served version through a definition's webhook.
pub struct Webhook {
    caller: Arc<dyn Caller>,
    hook: Arc<Hook>,
    /// The `ConversionReview` version to send (`v1` or `v1beta1`).
    review_version: &'static str,
    kind: String,
    /// The `apiVersion` objects are stored in.
    stored: String,
    /// This version's `apiVersion`.
    served: String,
    /// How JSON already in this version begins: `{"apiVersion":"<served>"`.
    current: Vec<u8>,
}

impl Webhook {
    /// Objects of `kind` stored as `stored`, served as `served` (both `group/version`),
    /// converted by `hook`, which speaks the first of `review_versions` this server knows.
    pub fn new(
        caller: Arc<dyn Caller>,
        hook: Arc<Hook>,
        review_versions: &[String],
        kind: String,
        stored: String,
        served: String,
    ) -> Self {
        let review_version = review_versions
            .iter()
            .find_map(|v| REVIEW_VERSIONS.iter().find(|k| **k == v.as_str()))
            .copied()
            .unwrap_or("v1");
        let current = format!("{{\"apiVersion\":\"{served}\"").into_bytes();
        Webhook {
            caller,
            hook,
            review_version,
            kind,
            stored,
            served,
            current,
        }
    }

    /// Converts the objects of `objs` not in `desired` already, in one review.
    async fn convert(&self, objs: &mut [Value], desired: &str) -> Result<()> {
        let at: Vec<usize> = objs
            .iter()
            .enumerate()
            .filter(|(_, o)| api_version(o) != desired)
            .map(|(i, _)| i)
            .collect();
        let Some(first) = at.first() else {
            return Ok(());
        };
        // Kubernetes names the objects' own version and kind in every failure.
        let gvk = format!("{}, Kind={}", api_version(&objs[*first]), self.kind);
        let fail = |why: String| conversion_failed(format!("conversion webhook for {gvk} {why}"));
        let uid = uuid::Uuid::new_v4().to_string();
        // The objects travel in the review and come back out of it: no copies.
        let objects: Vec<Value> = at.iter().map(|i| objs[*i].take()).collect();
        let mut review = json!({
            "apiVersion": format!("apiextensions.k8s.io/{}", self.review_version),
            "kind": "ConversionReview",
            "request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects},
        });
        let answer = self.caller.call(&self.hook, &review).await;
        let originals = match review["request"]["objects"].take() {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        for (i, o) in at.iter().zip(originals.iter()) {
            objs[*i] = o.clone();
        }
        let answer = answer.map_err(|e| fail(format!("failed: {e}")))?;
        let converted = self
            .converted_objects(&uid, answer)
            .map_err(|e| fail(format!("failed: {e}")))?;
        if converted.len() != originals.len() {
            return Err(fail(format!(
                "returned {} objects, expected {}",
                converted.len(),
                originals.len()
            )));
        }
        let single = objs.len() == 1;
        let mut out = Vec::with_capacity(converted.len());
        for (n, (original, mut c)) in originals.iter().zip(converted).enumerate() {
            let (what, index) = if single {
                ("invalid object", format!(" at index {n}"))
            } else {
                ("invalid converted object", format!(" at index {n}"))
            };
            if !c.is_object() {
                return Err(fail(format!(
                    "returned {what}{index}: the object is not a JSON object"
                )));
            }
            if api_version(&c) != desired {
                return Err(fail(format!(
                    "returned {what}{index}: invalid groupVersion (expected {desired}, received {})",
                    api_version(&c)
                )));
            }
            let kind = |o: &Value| {
                o.get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            if kind(&c) != kind(original) {
                return Err(fail(format!(
                    "returned {what}{index}: invalid kind (expected {}, received {})",
                    kind(original),
                    kind(&c)
                )));
            }
            // The single object's messages say no index past the kind checks, as Kubernetes'.
            let index = if single { String::new() } else { index };
            if let Err(e) = same_identity(original, &c) {
                return Err(fail(format!("returned {what}{index}: {e}")));
            }
            if let Err(e) = restore_metadata(original, &mut c) {
                let what = if single {
                    "invalid metadata".to_string()
                } else {
                    "invalid metadata in object".to_string()
                };
                return Err(fail(format!("returned {what}{index}: {e}")));
            }
            out.push(c);
        }
        for (i, c) in at.into_iter().zip(out) {
            objs[i] = c;
        }
        Ok(())
    }

    /// The converted objects of a webhook's answer, checked as Kubernetes checks them.
    fn converted_objects(&self, uid: &str, mut answer: Value) -> Result<Vec<Value>, String> {
        if self.review_version == "v1" {
            // Only v1 answers are held to their kind and uid (v1beta1 never was).
            let (av, kind) = (
                answer
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                answer.get("kind").and_then(Value::as_str).unwrap_or(""),
            );
            if av != "apiextensions.k8s.io/v1" || kind != "ConversionReview" {
                return Err(format!(
                    "expected webhook response of apiextensions.k8s.io/v1, Kind=ConversionReview, got {}, Kind={kind}",
                    if av.is_empty() { "/" } else { av }
                ));
            }
        }
        let Some(response) = answer.get_mut("response").filter(|r| r.is_object()) else {
            return Err("no response provided".into());
        };
        if self.review_version == "v1" {
            let got = response.get("uid").and_then(Value::as_str).unwrap_or("");
            if got != uid {
                return Err(format!("expected response.uid={uid:?}, got {got:?}"));
            }
        }
        let result = response.get("result");
        let status = result
            .and_then(|r| r.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if status != "Success" {
            let message = result
                .and_then(|r| r.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(if message.is_empty() {
                format!("response.result.status was '{status}', not 'Success'")
            } else {
                message.to_string()
            });
        }
        match response["convertedObjects"].take() {
            Value::Array(a) => Ok(a),
            _ => Ok(Vec::new()),
        }
    }
}

impl Convert for Webhook {
    fn to_stored<'a>(&'a self, objs: &'a mut [Value]) -> Converting<'a> {
        calling(self.convert(objs, &self.stored))
    }

    fn to_served<'a>(&'a self, stored: &'a mut [Value]) -> Converting<'a> {
        calling(self.convert(stored, &self.served))
    }

    fn is_current(&self, stored: &[u8]) -> bool {
        stored.starts_with(&self.current)
    }

    fn round_trips(&self) -> bool {
        false
    }
}

fn api_version(o: &Value) -> &str {
    o.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

/// The 500 a failed conversion answers with: Kubernetes passes the converter's error on as it
/// is, with no reason of its own.
fn conversion_failed(message: String) -> Error {
    ApiError {
        code: 500,
        reason: "",
        message,
        details: None,
    }
    .into()
}

/// The name of a JSON value's type as Go prints the type of a decoded one (`%T`).
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// A converted object is the same object: kind, name, namespace and uid unchanged.
fn same_identity(original: &Value, converted: &Value) -> Result<(), String> {
    let text = |o: &Value, p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for (what, p) in [
        ("kind", "/kind"),
        ("name", "/metadata/name"),
        ("namespace", "/metadata/namespace"),
        ("UID", "/metadata/uid"),
    ] {
        let (e, a) = (text(original, p), text(converted, p));
        if e != a {
            return Err(format!("must have the same {what}: {e} != {a}"));
        }
    }
    Ok(())
}

/// Gives the converted object the original's metadata, keeping only the labels and
/// annotations the webhook answered (checked as any object's are, when it changed them).
fn restore_metadata(original: &Value, converted: &mut Value) -> Result<(), String> {
    let answered = match converted.get_mut("metadata").map(Value::take) {
        None => return Err("missing metadata in converted object".into()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "invalid metadata of type {} in converted object",
                go_type(&other)
            ))
        }
    };
    let mut meta = match original.get("metadata") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for field in ["labels", "annotations"] {
        let theirs = match answered.get(field) {
            None | Some(Value::Null) => {
                meta.remove(field);
                continue;
            }
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(format!(
                    "invalid metadata.{field} of type {} in converted object",
                    go_type(other)
                ))
            }
        };
        let ours = meta.get(field).and_then(Value::as_object);
        let mut changed = ours.map_or(0, Map::len) != theirs.len();
        let mut strings = std::collections::BTreeMap::new();
        for (k, v) in theirs {
            let Some(s) = v.as_str() else {
                return Err(format!(
                    "metadata.{field}[{k}] must be a string, but is {} in converted object",
                    go_type(v)
                ));
            };
            if ours.and_then(|o| o.get(k)) != Some(v) {
                changed = true;
            }
            strings.insert(k.clone(), s.to_string());
        }
        if changed {
            let mut errs = Vec::new();
            if field == "labels" {
                crate::validation::labels("metadata.labels", Some(&strings), &mut errs);
            } else {
                // Kubernetes' own path for these, singular.
                crate::validation::annotations("metadata.annotation", Some(&strings), &mut errs);
            }
            if !errs.is_empty() {
                let texts: Vec<String> = errs.iter().map(|c| c.text()).collect();
                return Err(match texts.as_slice() {
                    [one] => one.clone(),
                    many => format!("[{}]", many.join(", ")),
                });
            }
        }
        meta.insert(field.into(), Value::Object(theirs.clone()));
    }
    converted["metadata"] = Value::Object(meta);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// A webhook that renames `spec.size` (v1) to `spec.replicas` (v2) and back, unless told
    /// to answer something else; it records every review it gets.
    struct Renamer {
        reviews: Mutex<Vec<Value>>,
        spoil: fn(&mut Value),
    }

    fn rename(obj: &mut Value, desired: &str) {
        let (from, to) = if desired.ends_with("/v2") {
            ("size", "replicas")
        } else {
            ("replicas", "size")
        };
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            if let Some(v) = spec.remove(from) {
                spec.insert(to.into(), v);
            }
        }
        obj["apiVersion"] = json!(desired);
    }

    #[async_trait::async_trait]
    impl Caller for Renamer {
        async fn call(&self, _hook: &Hook, review: &Value) -> Result<Value, String> {
            self.reviews.lock().push(review.clone());
            let req = &review["request"];
            let desired = req["desiredAPIVersion"].as_str().unwrap();
            let mut objects = req["objects"].as_array().unwrap().clone();
            for o in &mut objects {
                rename(o, desired);
            }
            let mut answer = json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "ConversionReview",
                "response": {"uid": req["uid"], "result": {"status": "Success"}, "convertedObjects": objects},
            });
            (self.spoil)(&mut answer);
            Ok(answer)
        }
    }

    struct Down;

    #[async_trait::async_trait]
    impl Caller for Down {
        async fn call(&self, _hook: &Hook, _review: &Value) -> Result<Value, String> {
            Err(r#"Post "https://127.0.0.1:1/convert?timeout=30s": connection refused"#.into())
        }
    }

    fn webhook(caller: Arc<dyn Caller>, versions: &[&str]) -> Webhook {
        Webhook::new(
            caller,
            Arc::new(Hook {
                definition: "widgets.example.com".into(),
                client_config: Default::default(),
            }),
            &versions.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            "Widget".into(),
            "example.com/v1".into(),
            "example.com/v2".into(),
        )
    }

    fn renamer(spoil: fn(&mut Value)) -> Arc<Renamer> {
        Arc::new(Renamer {
            reviews: Mutex::new(Vec::new()),
            spoil,
        })
    }

    fn stored(name: &str, size: i64) -> Value {
        json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "7", "labels": {"a": "1"}},
            "spec": {"size": size},
        })
    }

    #[tokio::test]
    async fn a_page_goes_in_one_review_and_comes_back_converted() {
        let hook = renamer(|_| {});
        let w = webhook(hook.clone(), &["v1"]);
        let mut objs = vec![stored("a", 1), stored("b", 2), stored("c", 3)];
        // One already in the desired version is not sent.
        objs[1]["apiVersion"] = json!("example.com/v2");
        w.to_served(&mut objs).await.unwrap();
        let reviews = hook.reviews.lock();
        assert_eq!(reviews.len(), 1, "one review for the page");
        let req = &reviews[0]["request"];
        assert_eq!(reviews[0]["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(req["desiredAPIVersion"], "example.com/v2");
        assert_eq!(req["objects"].as_array().unwrap().len(), 2);
        assert!(!req["uid"].as_str().unwrap().is_empty());
        assert_eq!(objs[0]["spec"], json!({"replicas": 1}));
        assert_eq!(objs[0]["apiVersion"], "example.com/v2");
        assert_eq!(objs[0]["metadata"]["resourceVersion"], "7");
        assert_eq!(objs[1]["spec"], json!({"size": 2}), "not sent, not changed");
        assert_eq!(objs[2]["spec"], json!({"replicas": 3}));
    }

    #[tokio::test]
    async fn nothing_to_convert_calls_nobody() {
        let hook = renamer(|_| {});
        let w = webhook(hook.clone(), &["v1"]);
        let mut objs = vec![stored("a", 1)];
        objs[0]["apiVersion"] = json!("example.com/v2");
        w.to_served(&mut objs).await.unwrap();
        w.to_served(&mut []).await.unwrap();
        assert!(hook.reviews.lock().is_empty());
        assert!(w.is_current(br#"{"apiVersion":"example.com/v2","kind":"Widget"}"#));
        assert!(!w.is_current(br#"{"apiVersion":"example.com/v1","kind":"Widget"}"#));
    }

    #[tokio::test]
    async fn writes_go_to_the_storage_version() {
        let hook = renamer(|_| {});
        let w = webhook(hook.clone(), &["v1beta1", "v1"]);
        let mut obj = [
            json!({"apiVersion": "example.com/v2", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"replicas": 4}}),
        ];
        w.to_stored(&mut obj).await.unwrap();
        assert_eq!(obj[0]["apiVersion"], "example.com/v1");
        assert_eq!(obj[0]["spec"], json!({"size": 4}));
        assert_eq!(
            hook.reviews.lock()[0]["apiVersion"],
            "apiextensions.k8s.io/v1beta1",
            "the first review version the definition lists"
        );
        assert!(!w.round_trips());
    }

    async fn refusal(spoil: fn(&mut Value), n: usize) -> (u16, String) {
        let w = webhook(renamer(spoil), &["v1"]);
        let mut objs: Vec<Value> = (0..n).map(|i| stored(&format!("o{i}"), 1)).collect();
        let before = objs.clone();
        let e = w.to_served(&mut objs).await.unwrap_err();
        assert_eq!(
            objs, before,
            "a failed conversion leaves the objects as they were"
        );
        (
            e.code(),
            e.status()["message"].as_str().unwrap().to_string(),
        )
    }

    #[tokio::test]
    async fn bad_answers_are_refused_in_kubernetes_words() {
        let prefix = "conversion webhook for example.com/v1, Kind=Widget";
        /// How the answer is spoiled, how many objects are sent, what the error says.
        type Case = (fn(&mut Value), usize, String);
        let cases: Vec<Case> = vec![
            (
                |a| a["response"]["uid"] = json!("other"),
                1,
                "failed: expected response.uid=".into(),
            ),
            (
                |a| {
                    a["response"]["convertedObjects"].as_array_mut().unwrap().pop();
                },
                2,
                "returned 1 objects, expected 2".into(),
            ),
            (
                |a| a["kind"] = json!("AdmissionReview"),
                1,
                "failed: expected webhook response of apiextensions.k8s.io/v1, Kind=ConversionReview, got apiextensions.k8s.io/v1, Kind=AdmissionReview".into(),
            ),
            (
                |a| {
                    a.as_object_mut().unwrap().remove("response");
                },
                1,
                "failed: no response provided".into(),
            ),
            (
                |a| a["response"]["result"] = json!({"status": "Failure", "message": "cannot convert o0"}),
                1,
                "failed: cannot convert o0".into(),
            ),
            (
                |a| a["response"]["result"] = json!({"status": "Failure"}),
                1,
                "failed: response.result.status was 'Failure', not 'Success'".into(),
            ),
            (
                |a| a["response"]["convertedObjects"][0]["apiVersion"] = json!("example.com/v3"),
                2,
                "returned invalid converted object at index 0: invalid groupVersion (expected example.com/v2, received example.com/v3)".into(),
            ),
            (
                |a| a["response"]["convertedObjects"][0]["kind"] = json!("Gadget"),
                1,
                "returned invalid object at index 0: invalid kind (expected Widget, received Gadget)".into(),
            ),
            (
                |a| a["response"]["convertedObjects"][1]["metadata"]["name"] = json!("x"),
                2,
                "returned invalid converted object at index 1: must have the same name: o1 != x".into(),
            ),
            (
                |a| a["response"]["convertedObjects"][0]["metadata"]["uid"] = json!("x"),
                1,
                "returned invalid object: must have the same UID: uid-o0 != x".into(),
            ),
            (
                |a| a["response"]["convertedObjects"][0]["metadata"]["labels"] = json!({"a": 1}),
                1,
                "returned invalid metadata: metadata.labels[a] must be a string, but is int64 in converted object".into(),
            ),
            (
                |a| a["response"]["convertedObjects"][0]["metadata"]["labels"] = json!({"a b": "1"}),
                1,
                "returned invalid metadata: metadata.labels: Invalid value: \"a b\"".into(),
            ),
            (
                |a| {
                    a["response"]["convertedObjects"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("metadata");
                },
                1,
                // Its identity is checked first, as Kubernetes does.
                "returned invalid object: must have the same name: o0 != ".into(),
            ),
        ];
        for (spoil, n, want) in cases {
            let (code, message) = refusal(spoil, n).await;
            assert_eq!(code, 500, "{message}");
            assert!(
                message.starts_with(&format!("{prefix} {want}")),
                "{message}\n  wanted: {prefix} {want}"
            );
        }
    }

    #[tokio::test]
    async fn metadata_changes_other_than_labels_and_annotations_are_undone() {
        let w = webhook(
            renamer(|a| {
                let o = &mut a["response"]["convertedObjects"][0]["metadata"];
                o["labels"] = json!({"a": "2", "added": "yes"});
                o["annotations"] = json!({"note": "converted"});
                o["finalizers"] = json!(["sneaky"]);
                o["resourceVersion"] = json!("999");
            }),
            &["v1"],
        );
        let mut objs = [stored("a", 1)];
        w.to_served(&mut objs).await.unwrap();
        let m = &objs[0]["metadata"];
        assert_eq!(m["labels"], json!({"a": "2", "added": "yes"}));
        assert_eq!(m["annotations"], json!({"note": "converted"}));
        assert!(m.get("finalizers").is_none());
        assert_eq!(m["resourceVersion"], "7");
    }

    #[tokio::test]
    async fn a_webhook_that_cannot_be_reached_fails_the_conversion() {
        let w = webhook(Arc::new(Down), &["v1"]);
        let mut objs = [stored("a", 1)];
        let e = w.to_served(&mut objs).await.unwrap_err();
        assert_eq!(e.code(), 500);
        let status = e.status();
        assert_eq!(
            status["message"],
            r#"conversion webhook for example.com/v1, Kind=Widget failed: Post "https://127.0.0.1:1/convert?timeout=30s": connection refused"#
        );
        assert!(
            status.get("reason").is_none(),
            "no reason, as Kubernetes: {status}"
        );
    }
}
