//! What every write does, whatever its verb: the checks of the object's envelope, the
//! metadata rules every type shares, and the pipeline an object goes through before it is
//! stored — the type's defaults, mutating admission, validation (metadata and the type's own),
//! validating admission.

use serde_json::{json, Map, Value};

use super::GenericStore;
use crate::admission::Attributes;
use crate::error::{Cause, CauseKind, Error, Result};
use crate::registry::{Admitted, Rejection, ResourceInfo};
use crate::request::{BodyForm, FieldValidation, WriteOpts};
use crate::strict::{self, Problem};
use crate::validation as v;

pub(super) fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub(super) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything but metadata and status: what `generation` tracks.
pub(super) fn spec_part(obj: &Value) -> Value {
    let mut o = obj.as_object().cloned().unwrap_or_default();
    o.remove("metadata");
    o.remove("status");
    o.remove("apiVersion");
    o.remove("kind");
    Value::Object(o)
}

/// Whether two stored objects are the same write (resourceVersion aside).
pub(super) fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// Fills in apiVersion and kind, or checks them against the resource.
pub(super) fn check_type(r: &ResourceInfo, obj: &mut Value) -> Result<()> {
    let Some(o) = obj.as_object_mut() else {
        return Err(Error::bad_request(format!(
            "the body of the request must be a JSON object describing a {}",
            r.kind
        )));
    };
    let want = r.api_version();
    match o.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("apiVersion".into(), json!(want));
        }
        Some(v) if v == want => {}
        Some(v) => {
            return Err(Error::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )))
        }
    }
    match o.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("kind".into(), json!(r.kind));
        }
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(Error::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )))
        }
    }
    if !o.get("metadata").is_none_or(Value::is_object) {
        return Err(Error::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: metadata must be an object",
            r.kind, r.version, r.kind
        )));
    }
    Ok(())
}

/// Fills in the namespace from the request, or checks it; cluster-scoped objects have none.
pub(super) fn check_namespace_field(
    r: &ResourceInfo,
    ns: Option<&str>,
    obj: &mut Value,
) -> Result<()> {
    let m = meta_mut(obj);
    if r.namespaced {
        let ns = ns.unwrap_or("");
        match m.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                m.insert("namespace".into(), json!(ns));
            }
            Some(n) if n == ns => {}
            Some(_) => {
                return Err(Error::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
        }
    } else {
        m.remove("namespace");
    }
    Ok(())
}

/// Validation of metadata shared by every type.
fn validate_meta(r: &ResourceInfo, obj: &Value, out: &mut Vec<Cause>) {
    let name = meta_str(obj, "name");
    let generate = meta_str(obj, "generateName");
    if name.is_empty() {
        if generate.is_empty() {
            out.push(Cause {
                kind: crate::error::CauseKind::Required,
                field: "metadata.name".into(),
                message: "name or generateName is required".into(),
            });
        }
    } else {
        r.validate_name("metadata.name", name, out);
    }
    let map = |f: &str| -> Option<std::collections::BTreeMap<String, String>> {
        meta(obj)
            .and_then(|m| m.get(f))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
    };
    v::labels("metadata.labels", map("labels").as_ref(), out);
    v::annotations("metadata.annotations", map("annotations").as_ref(), out);
    for (n, f) in finalizers(obj).iter().enumerate() {
        v::qualified_name(&format!("metadata.finalizers[{n}]"), f, out);
    }
    for (n, o) in meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for f in ["apiVersion", "kind", "name", "uid"] {
            if o.get(f).and_then(Value::as_str).unwrap_or("").is_empty() {
                out.push(Cause::required(format!(
                    "metadata.ownerReferences[{n}].{f}"
                )));
            }
        }
    }
}

/// The error for an object the type refused.
pub(super) fn rejected(r: &ResourceInfo, name: &str, rej: Rejection) -> Error {
    match rej {
        Rejection::Decode(msg) => Error::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {msg}",
            r.kind, r.version, r.kind
        )),
        Rejection::Invalid(causes) => Error::invalid(&r.kind, &r.group, name, causes),
    }
}

/// Refuses, warns of or ignores (as `fieldValidation` says) the unknown and duplicate fields
/// of a write's body: those strict decoding found in the body itself and `unknown`, the fields
/// defaulting dropped. `shown` is a patched object as a refused patch shows it.
fn field_problems(
    r: &ResourceInfo,
    obj: &Value,
    shown: Option<&Value>,
    unknown: Vec<String>,
    opts: &WriteOpts,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let fv = opts.field_validation;
    let decoded = &opts.decoded;
    if let BodyForm::Apply { namespace, name } = &decoded.form {
        // Structured merge diff takes the configuration apart by the type's schema first,
        // whatever the validation asked for.
        if !unknown.is_empty() {
            return Err(crate::apply::undeclared(
                (&r.group, &r.version, &r.kind),
                obj,
                &unknown,
                namespace,
                name,
                r.strategy.list_types(),
            ));
        }
        if decoded.problems.is_empty() {
            return Ok(());
        }
        return match fv {
            FieldValidation::Strict => Err(Error::bad_request(format!(
                "error strict decoding YAML: error converting YAML to JSON: {}",
                decoded
                    .problems
                    .iter()
                    .map(Problem::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            FieldValidation::Warn => {
                warnings.extend(strict::warnings(&decoded.problems));
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        };
    }
    let mut problems = decoded.problems.clone();
    strict::merge(&mut problems, unknown.into_iter().map(Problem::Unknown));
    if problems.is_empty() {
        return Ok(());
    }
    match fv {
        FieldValidation::Ignore => Ok(()),
        FieldValidation::Warn => {
            warnings.extend(strict::warnings(&problems));
            Ok(())
        }
        FieldValidation::Strict => {
            let why = strict::message(&problems);
            let patch = |shown: String| {
                // kube-apiserver's field error on "patch", under no kind and no name.
                Error::invalid(
                    "",
                    "",
                    "",
                    vec![Cause {
                        kind: CauseKind::Invalid,
                        field: "patch".into(),
                        message: format!("{}: {why}", strict::go_quote(&shown)),
                    }],
                )
            };
            Err(match &decoded.form {
                BodyForm::Patch => patch(strict::go_json(shown.unwrap_or(obj))),
                BodyForm::StrategicPatch(p) => patch(strict::go_value(p)),
                _ => Error::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}",
                    kind = r.kind,
                    version = r.version,
                )),
            })
        }
    }
}

impl GenericStore {
    /// Takes an object through defaults, admission and validation: what it becomes is what
    /// will be stored (after the verb's own metadata steps).
    pub(super) async fn admit(
        &self,
        r: &ResourceInfo,
        obj: Value,
        attrs: &Attributes<'_>,
        opts: &WriteOpts,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let name = meta_str(&obj, "name").to_string();
        // A refused JSON or merge patch shows the object as patched, before its defaults.
        let shown = (opts.field_validation == FieldValidation::Strict
            && matches!(opts.decoded.form, BodyForm::Patch))
        .then(|| obj.clone());
        let Admitted { mut value, unknown } =
            r.strategy.default(obj).map_err(|e| rejected(r, &name, e))?;
        field_problems(r, &value, shown.as_ref(), unknown, opts, warnings)?;
        self.admission.admit(attrs, Some(&mut value), self).await?;
        let mut causes = Vec::new();
        validate_meta(r, &value, &mut causes);
        if !causes.is_empty() {
            return Err(Error::invalid(&r.kind, &r.group, &name, causes));
        }
        let own = match (attrs.old, r.subresource(attrs.subresource)) {
            (Some(old), Some(h)) if !attrs.subresource.is_empty() => h.validate_update(&value, old),
            _ => None,
        };
        match own {
            Some(causes) if !causes.is_empty() => {
                return Err(Error::invalid(&r.kind, &r.group, &name, causes))
            }
            Some(_) => {}
            None => r
                .strategy
                .validate(&value, attrs.old)
                .map_err(|e| rejected(r, &name, e))?,
        }
        self.admission.validate(attrs, Some(&value), self).await?;
        Ok(value)
    }
}
